//! The resource catalogue: every kind the API server serves, as data.
//!
//! The API server has one generic handler; what differs between kinds (group, version, scope,
//! short names, categories, subresources) lives here, so a new built-in kind is one entry.
//! Names, short names and categories follow upstream v1.33 discovery (`kubectl api-resources`).

/// A subresource served under a resource, e.g. `deployments/scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `status`: spec and status updated separately.
    Status,
    /// `scale`: an `autoscaling/v1` Scale view of `spec.replicas`.
    Scale,
    /// `pods/binding`: assigns a pod to a node.
    Binding,
    /// `pods/eviction`: a policy/v1 Eviction deletes the pod.
    Eviction,
    /// `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward`: proxied to the node.
    Log,
    Exec,
    Attach,
    PortForward,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "status" => Subresource::Status,
            "scale" => Subresource::Scale,
            "binding" => Subresource::Binding,
            "eviction" => Subresource::Eviction,
            "log" => Subresource::Log,
            "exec" => Subresource::Exec,
            "attach" => Subresource::Attach,
            "portforward" => Subresource::PortForward,
            _ => return None,
        })
    }

    /// The kind a client gets back from the subresource, as (group, version, kind).
    pub fn response_kind(self, resource: &Resource) -> (&'static str, &'static str, &'static str) {
        match self {
            Subresource::Scale => ("autoscaling", "v1", "Scale"),
            Subresource::Binding => ("", "v1", "Binding"),
            Subresource::Eviction => ("policy", "v1", "Eviction"),
            Subresource::Log | Subresource::Exec | Subresource::Attach | Subresource::PortForward => {
                ("", "v1", match self {
                    Subresource::Exec => "PodExecOptions",
                    Subresource::Attach => "PodAttachOptions",
                    Subresource::PortForward => "PodPortForwardOptions",
                    _ => "Pod",
                })
            }
            Subresource::Status => (resource.group, resource.version, resource.kind),
        }
    }

    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status | Subresource::Scale => &["get", "patch", "update"],
            Subresource::Binding | Subresource::Eviction => &["create"],
            Subresource::Log => &["get"],
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => &["create", "get"],
        }
    }
}

/// One served resource.
#[derive(Clone, Debug)]
pub struct Resource {
    /// API group; "" is the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The URL segment and the storage prefix: `/registry/<plural>/…`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// Virtual resources (reviews) only accept `create` and are never stored.
    pub create_only: bool,
}

impl Resource {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `deployments.apps`, or `pods` for the core group — the name used in error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `Deployment.apps`, or `Pod` — the qualified kind used in "is invalid" messages.
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() { self.kind.to_string() } else { format!("{}.{}", self.kind, self.group) }
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        if self.create_only {
            &["create"]
        } else {
            &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        }
    }

    pub fn has_subresource(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The storage key prefix for every object of this resource.
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.plural)
    }

    /// The storage key of one object (`namespace` ignored for cluster-scoped resources).
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/{}", self.plural, ns, name),
            _ => format!("/registry/{}/{}", self.plural, name),
        }
    }

    /// The storage prefix of a namespace's objects (or of all objects).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/", self.plural, ns),
            _ => self.key_prefix(),
        }
    }
}

use Subresource::*;

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];
const NO_SUB: &[Subresource] = &[];
const STATUS: &[Subresource] = &[Status];
const SCALE_STATUS: &[Subresource] = &[Scale, Status];

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            create_only: false,
        }
    };
}

/// Every resource served, in discovery order (core group first, then groups by upstream's
/// priority order).
pub static RESOURCES: &[Resource] = &[
    // core/v1
    // Binding is create-only upstream (POST pods/<name>/binding is the usual form).
    Resource { create_only: true, ..res!("", "v1", "Binding", "bindings", "binding", true, NONE, NONE, NO_SUB) },
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, &["cm"], NONE, NO_SUB),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, &["ep"], NONE, NO_SUB),
    res!("", "v1", "Event", "events", "event", true, &["ev"], NONE, NO_SUB),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", true, &["limits"], NONE, NO_SUB),
    res!("", "v1", "Namespace", "namespaces", "namespace", false, &["ns"], NONE, STATUS),
    res!("", "v1", "Node", "nodes", "node", false, &["no"], NONE, STATUS),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, &["pvc"], NONE, STATUS),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, &["pv"], NONE, STATUS),
    res!("", "v1", "Pod", "pods", "pod", true, &["po"], ALL, &[Attach, Binding, Eviction, Exec, Log, PortForward, Status]),
    res!("", "v1", "PodTemplate", "podtemplates", "podtemplate", true, NONE, NONE, NO_SUB),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", true, &["rc"], ALL, SCALE_STATUS),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, &["quota"], NONE, STATUS),
    res!("", "v1", "Secret", "secrets", "secret", true, NONE, NONE, NO_SUB),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, &["sa"], NONE, NO_SUB),
    res!("", "v1", "Service", "services", "service", true, &["svc"], ALL, STATUS),
    // apps/v1
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, NONE, NONE, NO_SUB),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, &["ds"], ALL, STATUS),
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, &["deploy"], ALL, SCALE_STATUS),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, &["rs"], ALL, SCALE_STATUS),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, &["sts"], ALL, SCALE_STATUS),
    // events.k8s.io/v1 shares storage with core events upstream; kept apart here (see the
    // apiserver's conversion notes).
    res!("events.k8s.io", "v1", "Event", "events", "event", true, &["ev"], NONE, NO_SUB),
    // authorization.k8s.io/v1: reviews are create-only and never stored.
    Resource {
        create_only: true,
        ..res!("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", "selfsubjectaccessreview", false, NONE, NONE, NO_SUB)
    },
    Resource {
        create_only: true,
        ..res!("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", "selfsubjectrulesreview", false, NONE, NONE, NO_SUB)
    },
    // autoscaling: v2 is stored and preferred; v1 is converted (see `conversion`).
    res!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, &["hpa"], ALL, STATUS),
    res!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, &["hpa"], ALL, STATUS),
    // batch/v1
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, &["cj"], ALL, STATUS),
    res!("batch", "v1", "Job", "jobs", "job", true, NONE, ALL, STATUS),
    // coordination.k8s.io/v1
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, NONE, NONE, NO_SUB),
    // discovery.k8s.io/v1
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, NONE, NONE, NO_SUB),
    // networking.k8s.io/v1
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, NONE, NONE, NO_SUB),
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, &["ing"], NONE, STATUS),
    // One object per allocated Service ClusterIP, named after the IP (MultiCIDRServiceAllocator,
    // GA in v1.33); written by the API server's allocator.
    res!("networking.k8s.io", "v1", "IPAddress", "ipaddresses", "ipaddress", false, &["ip"], NONE, NO_SUB),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true, &["netpol"], NONE, NO_SUB),
    res!("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", "servicecidr", false, NONE, NONE, STATUS),
    // policy/v1
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, &["pdb"], NONE, STATUS),
    // rbac.authorization.k8s.io/v1
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, NONE, NONE, NO_SUB),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, NONE, NONE, NO_SUB),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, NONE, NONE, NO_SUB),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, NONE, NONE, NO_SUB),
    // scheduling.k8s.io/v1
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, &["pc"], NONE, NO_SUB),
    // storage.k8s.io/v1
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, &["sc"], NONE, NO_SUB),
];

/// Looks a resource up by its URL coordinates.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by kind (for bodies and owner references).
pub fn find_kind(group: &str, version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Splits an `apiVersion` into (group, version).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// The served group-versions, in discovery order, with the core group first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// The resources of one group-version.
pub fn resources_of(group: &str, version: &str) -> impl Iterator<Item = &'static Resource> {
    let (group, version) = (group.to_string(), version.to_string());
    RESOURCES.iter().filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plural_and_kind_are_unique_per_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                if a.group == b.group && a.version == b.version {
                    assert_ne!(a.plural, b.plural);
                    assert_ne!(a.kind, b.kind);
                }
            }
        }
    }

    #[test]
    fn keys_follow_the_registry_layout() {
        let pods = find("", "v1", "pods").expect("pods");
        assert_eq!(pods.key(Some("default"), "web"), "/registry/pods/default/web");
        let nodes = find("", "v1", "nodes").expect("nodes");
        assert_eq!(nodes.key(None, "n1"), "/registry/nodes/n1");
        assert_eq!(find("apps", "v1", "deployments").map(|r| r.group_kind()), Some("Deployment.apps".into()));
    }
}
