//! `PodInfo`: what the scheduler needs from a Pod, computed once when the Pod is seen (upstream's
//! `framework.PodInfo` pre-parses affinity terms the same way), so filters and scores never
//! re-parse selectors or quantities in the hot loop.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use api::selectors::LabelSelector;
use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Toleration,
};

use crate::resources::{Resource, pod_requests};

/// `namespace/name`, the key pods are known by.
pub type PodKey = String;

/// The name a pod must carry (or leave empty) for this scheduler to take it.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Which namespaces an affinity term applies to.
#[derive(Clone, Debug)]
pub enum TermNamespaces {
    /// `namespaces` listed (or the pod's own when both fields are empty).
    Listed(HashSet<String>),
    /// `namespaceSelector: {}` (plus any listed): every namespace.
    All,
    /// A non-empty `namespaceSelector`, matched against namespace labels, plus any listed.
    Selector(LabelSelector, HashSet<String>),
}

/// A pod (anti-)affinity term, parsed.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub namespaces: TermNamespaces,
    pub selector: LabelSelector,
    pub topology_key: String,
    pub weight: i64,
}

impl AffinityTerm {
    fn parse(
        term: &PodAffinityTerm,
        pod_ns: &str,
        pod_labels: &BTreeMap<String, String>,
        weight: i32,
    ) -> AffinityTerm {
        let mut selector = term
            .label_selector
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| api::selectors::from_label_selector_json(&v).ok())
            .unwrap_or_else(LabelSelector::nothing);
        // matchLabelKeys / mismatchLabelKeys (KEP-3633): the incoming pod's values join the
        // selector as `key in (v)` / `key notin (v)`.
        let mut extra = String::new();
        for key in term.match_label_keys.iter().flatten() {
            if let Some(v) = pod_labels.get(key) {
                extra.push_str(&format!(",{key}={v}"));
            }
        }
        for key in term.mismatch_label_keys.iter().flatten() {
            if let Some(v) = pod_labels.get(key) {
                extra.push_str(&format!(",{key}!={v}"));
            }
        }
        if !extra.is_empty() && !selector.matches_nothing() {
            let text = format!("{selector}{extra}");
            if let Ok(s) = api::selectors::parse_label_selector(text.trim_start_matches(',')) {
                selector = s;
            }
        }
        let listed: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let namespaces = match term.namespace_selector.as_ref() {
            None if listed.is_empty() => {
                TermNamespaces::Listed(HashSet::from([pod_ns.to_string()]))
            }
            None => TermNamespaces::Listed(listed),
            Some(ns_sel) => {
                let parsed = serde_json::to_value(ns_sel)
                    .ok()
                    .and_then(|v| api::selectors::from_label_selector_json(&v).ok())
                    .unwrap_or_else(LabelSelector::nothing);
                if parsed.is_empty() && !parsed.matches_nothing() {
                    TermNamespaces::All
                } else {
                    TermNamespaces::Selector(parsed, listed)
                }
            }
        };
        AffinityTerm {
            namespaces,
            selector,
            topology_key: term.topology_key.clone(),
            weight: i64::from(weight),
        }
    }

    /// Whether `pod` is one this term selects (its namespace and labels).
    pub fn matches(
        &self,
        pod: &PodInfo,
        namespace_labels: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
    ) -> bool {
        let ns_ok = match &self.namespaces {
            TermNamespaces::Listed(set) => set.contains(&pod.namespace),
            TermNamespaces::All => true,
            TermNamespaces::Selector(sel, listed) => {
                listed.contains(&pod.namespace)
                    || namespace_labels(&pod.namespace).is_some_and(|labels| sel.matches(&labels))
            }
        };
        ns_ok && self.selector.matches(&pod.labels)
    }
}

/// A topology spread constraint, parsed.
#[derive(Clone, Debug)]
pub struct SpreadConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub hard: bool,
    pub selector: LabelSelector,
    pub min_domains: i64,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's node
    /// selector/affinity count as domains.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default Ignore): only nodes whose taints the pod tolerates.
    pub honor_node_taints: bool,
    /// Only pods with this controller (owner UID) count: the cluster-level default
    /// constraints select the pod's siblings, as upstream's `DefaultSelector` does through the
    /// owning ReplicaSet, ReplicationController or StatefulSet.
    pub owner: Option<String>,
    /// One of the cluster-level defaults, not the pod's own: nodes missing its topology key
    /// still score (upstream's `systemDefaulted` skips `requireAllTopologies`).
    pub system_default: bool,
}

/// Upstream's system default spreading (`PodTopologySpreadArgs.defaultingType: System`):
/// ScheduleAnyway, at most 3 apart per node and 5 per zone, for pods with no constraints of
/// their own whose controller is a ReplicaSet, ReplicationController or StatefulSet.
fn system_default_spread(pod: &Pod) -> Vec<SpreadConstraint> {
    let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .filter(|o| {
            matches!(
                o.kind.as_str(),
                "ReplicaSet" | "ReplicationController" | "StatefulSet"
            )
        })
    else {
        return Vec::new();
    };
    [
        ("kubernetes.io/hostname", 3),
        ("topology.kubernetes.io/zone", 5),
    ]
    .into_iter()
    .map(|(key, max_skew)| SpreadConstraint {
        max_skew,
        topology_key: key.to_string(),
        hard: false,
        selector: LabelSelector::everything(),
        min_domains: 1,
        honor_node_affinity: true,
        honor_node_taints: false,
        owner: Some(owner.uid.clone()),
        system_default: true,
    })
    .collect()
}

/// A host port the pod asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream's `HostPortInfo` rule: the same protocol and port conflict when either side binds
    /// every address (0.0.0.0) or both bind the same one.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// Required node affinity: `nodeSelector` AND any of the required terms.
#[derive(Clone, Debug, Default)]
pub struct RequiredNodeAffinity {
    pub node_selector: BTreeMap<String, String>,
    pub terms: Option<Vec<NodeSelectorTerm>>,
}

impl RequiredNodeAffinity {
    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        if !self
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            return false;
        }
        match &self.terms {
            None => true,
            Some(terms) => terms
                .iter()
                .any(|t| node_selector_term_matches(t, node_name, labels)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.terms.is_none()
    }
}

/// A node selector term matches when it has at least one requirement and all of them hold (an
/// empty term matches nothing, as upstream).
pub fn node_selector_term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| node_requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && node_requirement_matches(r, Some(node_name)))
}

fn node_requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Everything the scheduler reads from a pod.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: PodKey,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub node_name: Option<String>,
    pub scheduler_name: String,
    pub priority: i32,
    pub preemption_never: bool,
    pub gated: bool,
    pub terminating: bool,
    pub nominated_node: Option<String>,
    /// `status.startTime` (or creation) in nanoseconds, for victim ordering.
    pub start_time: i128,
    /// Effective requests for fit.
    pub requests: Resource,
    /// cpu/memory with the best-effort defaults, for least-allocated scoring.
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub host_ports: Vec<HostPort>,
    pub tolerations: Vec<Toleration>,
    pub required_node_affinity: RequiredNodeAffinity,
    pub preferred_node_affinity: Vec<(i64, NodeSelectorTerm)>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti_affinity: Vec<AffinityTerm>,
    pub spread: Vec<SpreadConstraint>,
    /// The UID of the pod's controller (the ownerReference with `controller: true`).
    pub controller_uid: Option<String>,
    /// Container images, normalised with `:latest` as upstream's ImageLocality does.
    pub images: Vec<String>,
}

impl PodInfo {
    /// Parses `pod`; `priority` is the resolved priority (spec.priority or its class).
    pub fn new(pod: Arc<Pod>, priority: i32) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let requests = pod_requests(&pod, false);
        let non_zero = pod_requests(&pod, true);
        let mut host_ports = Vec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                let Some(port) = p.host_port.filter(|p| *p > 0) else {
                    continue;
                };
                host_ports.push(HostPort {
                    ip: p
                        .host_ip
                        .clone()
                        .filter(|ip| !ip.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".into()),
                    protocol: p
                        .protocol
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "TCP".into()),
                    port,
                });
            }
        }
        let affinity = spec.affinity.clone().unwrap_or_default();
        let node_aff = affinity.node_affinity.unwrap_or_default();
        let required_node_affinity = RequiredNodeAffinity {
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            terms: node_aff
                .required_during_scheduling_ignored_during_execution
                .map(|s| s.node_selector_terms),
        };
        let preferred_node_affinity = node_aff
            .preferred_during_scheduling_ignored_during_execution
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.weight != 0)
            .map(|p| (i64::from(p.weight), p.preference))
            .collect();
        let parse_required = |terms: Option<Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .unwrap_or_default()
                .iter()
                .map(|t| AffinityTerm::parse(t, &namespace, &labels, 1))
                .collect()
        };
        let parse_preferred = |terms: Option<
            Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>,
        >|
         -> Vec<AffinityTerm> {
            terms
                .unwrap_or_default()
                .iter()
                .map(|t| AffinityTerm::parse(&t.pod_affinity_term, &namespace, &labels, t.weight))
                .collect()
        };
        let pod_aff = affinity.pod_affinity.unwrap_or_default();
        let pod_anti = affinity.pod_anti_affinity.unwrap_or_default();
        let spread: Vec<SpreadConstraint> = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| {
                let mut selector = c
                    .label_selector
                    .as_ref()
                    .and_then(|s| serde_json::to_value(s).ok())
                    .and_then(|v| api::selectors::from_label_selector_json(&v).ok())
                    .unwrap_or_else(LabelSelector::nothing);
                let extra: Vec<String> = c
                    .match_label_keys
                    .iter()
                    .flatten()
                    .filter_map(|k| labels.get(k).map(|v| format!("{k}={v}")))
                    .collect();
                if !extra.is_empty() && !selector.matches_nothing() {
                    let text = if selector.is_empty() {
                        extra.join(",")
                    } else {
                        format!("{selector},{}", extra.join(","))
                    };
                    if let Ok(s) = api::selectors::parse_label_selector(&text) {
                        selector = s;
                    }
                }
                SpreadConstraint {
                    max_skew: i64::from(c.max_skew.max(1)),
                    topology_key: c.topology_key.clone(),
                    hard: c.when_unsatisfiable == "DoNotSchedule",
                    selector,
                    min_domains: i64::from(c.min_domains.unwrap_or(1).max(1)),
                    honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                    owner: None,
                    system_default: false,
                }
            })
            .collect();
        let images = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .filter_map(|c| c.image.as_deref())
            .map(normalized_image_name)
            .collect();
        let status = pod.status.as_ref();
        let start_time = status
            .and_then(|s| s.start_time.as_ref())
            .or(meta.creation_timestamp.as_ref())
            .map(|t| t.0.as_nanosecond())
            .unwrap_or(0);
        PodInfo {
            key: format!("{namespace}/{name}"),
            uid: meta.uid.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.into()),
            priority,
            preemption_never: spec.preemption_policy.as_deref() == Some("Never"),
            gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            terminating: meta.deletion_timestamp.is_some(),
            nominated_node: status
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty()),
            start_time,
            non_zero_cpu: non_zero.milli_cpu,
            non_zero_memory: non_zero.memory,
            requests,
            host_ports,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            required_node_affinity,
            preferred_node_affinity,
            required_affinity: parse_required(
                pod_aff.required_during_scheduling_ignored_during_execution,
            ),
            required_anti_affinity: parse_required(
                pod_anti.required_during_scheduling_ignored_during_execution,
            ),
            preferred_affinity: parse_preferred(
                pod_aff.preferred_during_scheduling_ignored_during_execution,
            ),
            preferred_anti_affinity: parse_preferred(
                pod_anti.preferred_during_scheduling_ignored_during_execution,
            ),
            spread: if spread.is_empty() {
                system_default_spread(&pod)
            } else {
                spread
            },
            controller_uid: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            images,
            namespace,
            name,
            labels,
            pod,
        }
    }

    /// Whether any pod (anti-)affinity is declared, so InterPodAffinity has work to do.
    pub fn has_pod_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// Whether the pod has finished (Succeeded/Failed): it no longer holds resources.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    }
}

/// Upstream's `normalizedImageName`: an image without a tag or digest means `:latest`.
pub fn normalized_image_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(v: serde_json::Value) -> PodInfo {
        PodInfo::new(Arc::new(serde_json::from_value(v).expect("pod")), 0)
    }

    #[test]
    fn parses_ports_affinity_and_images() {
        let p = info(json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
                ]}}
            }
        }));
        assert_eq!(p.key, "default/web");
        assert_eq!(
            p.host_ports,
            vec![HostPort {
                ip: "0.0.0.0".into(),
                protocol: "TCP".into(),
                port: 8080
            }]
        );
        assert_eq!(p.images, vec!["nginx:latest".to_string()]);
        assert_eq!(p.required_anti_affinity.len(), 1);
        assert!(p.required_anti_affinity[0].matches(&p, &|_| None));
        assert_eq!(p.scheduler_name, DEFAULT_SCHEDULER_NAME);
    }

    #[test]
    fn node_selector_terms_follow_upstream_operators() {
        let labels = BTreeMap::from([
            ("zone".to_string(), "a".to_string()),
            ("cores".to_string(), "8".to_string()),
        ]);
        let term: NodeSelectorTerm = serde_json::from_value(json!({"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
            {"key": "cores", "operator": "Gt", "values": ["4"]},
            {"key": "gpu", "operator": "DoesNotExist"}
        ]}))
        .expect("term");
        assert!(node_selector_term_matches(&term, "n1", &labels));
        let empty = NodeSelectorTerm::default();
        assert!(!node_selector_term_matches(&empty, "n1", &labels));
        let by_name: NodeSelectorTerm = serde_json::from_value(json!({"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n2"]}
        ]}))
        .expect("term");
        assert!(!node_selector_term_matches(&by_name, "n1", &labels));
        assert!(node_selector_term_matches(&by_name, "n2", &labels));
    }

    #[test]
    fn host_ports_conflict_on_wildcard_ip() {
        let a = HostPort {
            ip: "0.0.0.0".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let b = HostPort {
            ip: "10.0.0.1".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let c = HostPort {
            ip: "10.0.0.2".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        let d = HostPort {
            ip: "10.0.0.1".into(),
            protocol: "UDP".into(),
            port: 80,
        };
        assert!(a.conflicts(&b));
        assert!(!b.conflicts(&c));
        assert!(!b.conflicts(&d));
    }

    #[test]
    fn image_names_get_latest() {
        assert_eq!(
            normalized_image_name("registry:5000/app"),
            "registry:5000/app:latest"
        );
        assert_eq!(normalized_image_name("nginx:1.25"), "nginx:1.25");
        assert_eq!(
            normalized_image_name("nginx@sha256:abc"),
            "nginx@sha256:abc"
        );
    }
}
