//! core/v1 kinds other than Pod: `SetDefaults_Service`, `_Namespace`, `_Secret`,
//! `_PersistentVolume(Claim)`, `_Endpoints`, `_NodeStatus`, `_ReplicationController`,
//! `_LimitRangeItem`.

use serde_json::{Map, Value, json};

use super::{
    child_object, default_field, default_string, each_object, existing_object, is_empty, pod,
};

/// `SetDefaults_ReplicationController`: selector and labels come from the template labels,
/// replicas 1.
pub(super) fn default_replication_controller(rc: &mut Map<String, Value>) {
    let template_labels = rc
        .get("spec")
        .and_then(|spec| spec.get("template"))
        .and_then(|template| template.get("metadata"))
        .and_then(|metadata| metadata.get("labels"))
        .filter(|labels| labels.is_object())
        .cloned();
    if let Some(labels) = template_labels {
        if let Some(spec) = existing_object(rc, "spec")
            && is_empty(spec, "selector")
        {
            spec.insert("selector".to_owned(), labels.clone());
        }
        if let Some(metadata) = child_object(rc, "metadata")
            && is_empty(metadata, "labels")
        {
            metadata.insert("labels".to_owned(), labels);
        }
    }
    let Some(spec) = child_object(rc, "spec") else {
        return;
    };
    default_field(spec, "replicas", 1);
    if let Some(template) = existing_object(spec, "template") {
        pod::default_pod_template(template);
    }
}

/// `SetDefaults_Service`. ClusterIP, nodePort and ipFamilies allocation is the API server's.
pub(super) fn default_service(service: &mut Map<String, Value>) {
    let Some(spec) = child_object(service, "spec") else {
        return;
    };
    default_string(spec, "sessionAffinity", "None");
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        // Upstream drops a config that cannot apply.
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|config| config.get("clientIP"))
                .and_then(|client_ip| client_ip.get("timeoutSeconds"))
                .is_some_and(|timeout| !timeout.is_null());
            if !has_timeout {
                // DefaultClientIPServiceAffinitySeconds: three hours.
                spec.insert(
                    "sessionAffinityConfig".to_owned(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    default_string(spec, "type", "ClusterIP");
    // clusterIPs[0] mirrors clusterIP for clients that only set the singular field.
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !cluster_ip.is_empty() && is_empty(spec, "clusterIPs") {
        spec.insert("clusterIPs".to_owned(), json!([cluster_ip]));
    }
    each_object(spec, "ports", |port| {
        default_string(port, "protocol", "TCP");
        let target_unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(_) => false,
        };
        if target_unset && let Some(number) = port.get("port").filter(|p| p.is_number()).cloned() {
            port.insert("targetPort".to_owned(), number);
        }
    });
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    // service.ExternallyAccessible: LoadBalancer, NodePort, or ClusterIP with external IPs.
    let externally_accessible = matches!(service_type.as_str(), "LoadBalancer" | "NodePort")
        || (service_type == "ClusterIP" && !is_empty(spec, "externalIPs"));
    if externally_accessible {
        default_string(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(
        service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        default_field(spec, "internalTrafficPolicy", "Cluster");
    }
    if service_type == "LoadBalancer" {
        default_field(spec, "allocateLoadBalancerNodePorts", true);
        if let Some(status) = existing_object(service, "status")
            && let Some(load_balancer) = existing_object(status, "loadBalancer")
        {
            each_object(load_balancer, "ingress", |ingress| {
                if !is_empty(ingress, "ip") {
                    default_field(ingress, "ipMode", "VIP");
                }
            });
        }
    }
}

/// `SetDefaults_Namespace` and `_NamespaceStatus`, plus the namespace strategy's
/// PrepareForCreate finalizer.
pub(super) fn default_namespace(namespace: &mut Map<String, Value>) {
    let name = namespace
        .get("metadata")
        .and_then(|metadata| metadata.get("name"))
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    if let Some(name) = name {
        // Upstream overwrites this label unconditionally: it is the immutable name label
        // that namespace selectors rely on (KEP-2161).
        if let Some(labels) =
            child_object(namespace, "metadata").and_then(|m| child_object(m, "labels"))
        {
            labels.insert(
                "kubernetes.io/metadata.name".to_owned(),
                Value::String(name),
            );
        }
    }
    if let Some(status) = child_object(namespace, "status") {
        default_string(status, "phase", "Active");
    }
}

/// The namespace strategy's `PrepareForCreate`: every new namespace carries the `kubernetes`
/// finalizer, which only the namespace controller removes (through `/finalize`) once the
/// namespace is empty. Not a default: an update emptying the list must stay empty.
pub(super) fn add_namespace_finalizer(namespace: &mut Map<String, Value>) {
    if let Some(spec) = child_object(namespace, "spec") {
        let has = spec
            .get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|v| v == "kubernetes"));
        if !has {
            match spec.get_mut("finalizers").and_then(Value::as_array_mut) {
                Some(list) => list.push(json!("kubernetes")),
                None => {
                    spec.insert("finalizers".to_owned(), json!(["kubernetes"]));
                }
            }
        }
    }
}

/// `SetDefaults_Secret`.
pub(super) fn default_secret(secret: &mut Map<String, Value>) {
    default_string(secret, "type", "Opaque");
}

/// `SetDefaults_PersistentVolume`.
pub(super) fn default_persistent_volume(pv: &mut Map<String, Value>) {
    if let Some(spec) = child_object(pv, "spec") {
        default_string(spec, "persistentVolumeReclaimPolicy", "Retain");
        default_field(spec, "volumeMode", "Filesystem");
    }
    if let Some(status) = child_object(pv, "status") {
        default_string(status, "phase", "Pending");
    }
}

/// `SetDefaults_PersistentVolumeClaim` and `_PersistentVolumeClaimSpec`; also used for the
/// claim templates StatefulSets embed.
pub(super) fn default_persistent_volume_claim(pvc: &mut Map<String, Value>) {
    if let Some(spec) = child_object(pvc, "spec") {
        default_field(spec, "volumeMode", "Filesystem");
    }
    if let Some(status) = child_object(pvc, "status") {
        default_string(status, "phase", "Pending");
    }
}

/// `SetDefaults_Endpoints`: port protocol TCP.
pub(super) fn default_endpoints(endpoints: &mut Map<String, Value>) {
    each_object(endpoints, "subsets", |subset| {
        each_object(subset, "ports", |port| {
            default_string(port, "protocol", "TCP")
        });
    });
}

/// `SetDefaults_NodeStatus`: allocatable defaults to capacity.
pub(super) fn default_node(node: &mut Map<String, Value>) {
    let Some(status) = existing_object(node, "status") else {
        return;
    };
    let capacity = status.get("capacity").filter(|c| c.is_object()).cloned();
    if let Some(capacity) = capacity {
        default_field(status, "allocatable", capacity);
    }
}

/// `SetDefaults_LimitRangeItem`: for Container limits, default ← max, defaultRequest ←
/// default, then defaultRequest ← min.
pub(super) fn default_limit_range(limit_range: &mut Map<String, Value>) {
    let Some(spec) = existing_object(limit_range, "spec") else {
        return;
    };
    each_object(spec, "limits", |item| {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            return;
        }
        let max = item
            .get("max")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let min = item
            .get("min")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let Some(default) = child_object(item, "default") else {
            return;
        };
        for (name, quantity) in max {
            default.entry(name).or_insert(quantity);
        }
        let default = default.clone();
        let Some(default_request) = child_object(item, "defaultRequest") else {
            return;
        };
        for (name, quantity) in default.into_iter().chain(min) {
            default_request.entry(name).or_insert(quantity);
        }
    });
}

#[cfg(test)]
mod tests {
    use crate::defaults::apply_defaults;
    use serde_json::json;

    #[test]
    fn service_matches_kubectl_expose_output() {
        let mut svc = json!({"metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
        apply_defaults("", "v1", "Service", &mut svc);
        assert_eq!(
            svc["spec"],
            json!({"selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                "sessionAffinity": "None", "type": "ClusterIP", "internalTrafficPolicy": "Cluster"})
        );
        let mut lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 443, "targetPort": 0}],
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}});
        apply_defaults("", "v1", "Service", &mut lb);
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(lb["spec"]["ports"][0]["targetPort"], 443);
        assert!(lb["spec"].get("sessionAffinityConfig").is_none());
    }

    #[test]
    fn service_cluster_ips_mirror_cluster_ip() {
        let mut svc = json!({"spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53}]}});
        apply_defaults("", "v1", "Service", &mut svc);
        assert_eq!(svc["spec"]["clusterIPs"], json!(["10.43.0.10"]));
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        apply_defaults("", "v1", "Service", &mut headless);
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        let mut both = json!({"spec": {"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.11"]}});
        apply_defaults("", "v1", "Service", &mut both);
        assert_eq!(
            both["spec"]["clusterIPs"],
            json!(["10.43.0.11"]),
            "validation reports the mismatch"
        );
    }

    #[test]
    fn namespace_and_secret_and_claims() {
        let mut ns = json!({"metadata": {"name": "team"}});
        apply_defaults("", "v1", "Namespace", &mut ns);
        crate::defaults::prepare_for_create("", "v1", "Namespace", &mut ns, "uid");
        assert_eq!(
            ns,
            json!({"metadata": {"name": "team", "labels": {"kubernetes.io/metadata.name": "team"}},
                "status": {"phase": "Active"}, "spec": {"finalizers": ["kubernetes"]}})
        );
        // Emptied by the namespace controller's finalize: defaulting must not add it back.
        let mut finalized = json!({"metadata": {"name": "team"}, "spec": {"finalizers": []}});
        apply_defaults("", "v1", "Namespace", &mut finalized);
        assert_eq!(finalized["spec"]["finalizers"], json!([]));
        let mut secret = json!({"data": {}});
        apply_defaults("", "v1", "Secret", &mut secret);
        assert_eq!(secret["type"], "Opaque");
        let mut pv = json!({"spec": {}});
        apply_defaults("", "v1", "PersistentVolume", &mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        let mut pvc = json!({"spec": {"volumeMode": "Block"}});
        apply_defaults("", "v1", "PersistentVolumeClaim", &mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Block");
        assert_eq!(pvc["status"]["phase"], "Pending");
    }

    #[test]
    fn replication_controller_takes_template_labels() {
        let mut rc = json!({"metadata": {"name": "rc"}, "spec": {"template": {
            "metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}}}});
        apply_defaults("", "v1", "ReplicationController", &mut rc);
        assert_eq!(rc["spec"]["selector"], json!({"app": "x"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "x"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        assert_eq!(rc["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn limit_range_and_node() {
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"},
            "min": {"memory": "1Mi"}}]}});
        apply_defaults("", "v1", "LimitRange", &mut lr);
        assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
        assert_eq!(
            lr["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "2", "memory": "1Mi"})
        );
        let mut node = json!({"status": {"capacity": {"cpu": "4"}}});
        apply_defaults("", "v1", "Node", &mut node);
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));
    }
}
