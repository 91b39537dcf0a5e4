//! InterPodAffinity: required pod affinity and anti-affinity of the incoming pod, and the
//! required anti-affinity of pods already placed (symmetry: an existing pod that refuses to
//! share a topology domain with pods like this one keeps it out). Preferred terms of both sides
//! score topology domains.
//!
//! Counts are per topology pair (`key`, node's value for `key`), computed once per cycle from
//! every placed pod, as upstream's PreFilter does; preemption adjusts them as it removes
//! victims.

use std::collections::HashMap;

use super::{Code, MAX_NODE_SCORE, Plugin, Status};
use crate::cache::{Cache, NodeInfo};
use crate::pod_info::{AffinityTerm, PodInfo};

type TopologyPair = (String, String);

/// PreFilter state.
#[derive(Clone, Debug, Default)]
pub struct FilterState {
    required_affinity: Vec<AffinityTerm>,
    has_required_anti: bool,
    /// Whether the incoming pod matches all its own affinity terms (the first of a group).
    self_matches_all: bool,
    affinity_counts: HashMap<TopologyPair, i64>,
    anti_counts: HashMap<TopologyPair, i64>,
    existing_anti_counts: HashMap<TopologyPair, i64>,
}

pub fn pre_filter(pod: &PodInfo, cache: &Cache) -> Option<FilterState> {
    if pod.required_affinity.is_empty()
        && pod.required_anti_affinity.is_empty()
        && cache.pods_with_required_anti_affinity == 0
    {
        return None;
    }
    let ns = |name: &str| cache.namespace_labels(name);
    let mut state = FilterState {
        required_affinity: pod.required_affinity.clone(),
        has_required_anti: !pod.required_anti_affinity.is_empty(),
        self_matches_all: pod.required_affinity.iter().all(|t| t.matches(pod, &ns)),
        ..FilterState::default()
    };
    if cache.pods_with_required_anti_affinity > 0 {
        for node in cache.nodes_with_affinity_pods() {
            if node.pods_with_required_anti_affinity == 0 {
                continue;
            }
            for existing in &node.pods {
                state.add_existing_anti(pod, existing, node, 1, &ns);
            }
        }
    }
    if !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty() {
        for node in cache.nodes() {
            for existing in &node.pods {
                state.add_incoming(pod, existing, node, 1, &ns);
            }
        }
    }
    Some(state)
}

fn bump(map: &mut HashMap<TopologyPair, i64>, key: &str, node: &NodeInfo, by: i64) {
    if let Some(value) = node.labels.get(key) {
        let e = map.entry((key.to_string(), value.clone())).or_default();
        *e += by;
        if *e == 0 {
            map.remove(&(key.to_string(), value.clone()));
        }
    }
}

impl FilterState {
    fn add_existing_anti(
        &mut self,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        by: i64,
        ns: &dyn Fn(&str) -> Option<std::collections::BTreeMap<String, String>>,
    ) {
        for term in &existing.required_anti_affinity {
            if term.matches(pod, ns) {
                bump(&mut self.existing_anti_counts, &term.topology_key, node, by);
            }
        }
    }

    fn add_incoming(
        &mut self,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        by: i64,
        ns: &dyn Fn(&str) -> Option<std::collections::BTreeMap<String, String>>,
    ) {
        if !pod.required_affinity.is_empty()
            && pod
                .required_affinity
                .iter()
                .all(|t| t.matches(existing, ns))
        {
            for term in &pod.required_affinity {
                bump(&mut self.affinity_counts, &term.topology_key, node, by);
            }
        }
        for term in &pod.required_anti_affinity {
            if term.matches(existing, ns) {
                bump(&mut self.anti_counts, &term.topology_key, node, by);
            }
        }
    }

    /// Preemption's `RemovePod` extension: forget what `existing` on `node` contributed.
    pub fn remove_pod(
        &mut self,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        cache: &Cache,
    ) {
        let ns = |name: &str| cache.namespace_labels(name);
        self.add_existing_anti(pod, existing, node, -1, &ns);
        self.add_incoming(pod, existing, node, -1, &ns);
    }

    /// Preemption's `AddPod` extension (a victim reprieved).
    pub fn add_pod(&mut self, pod: &PodInfo, existing: &PodInfo, node: &NodeInfo, cache: &Cache) {
        let ns = |name: &str| cache.namespace_labels(name);
        self.add_existing_anti(pod, existing, node, 1, &ns);
        self.add_incoming(pod, existing, node, 1, &ns);
    }

    pub fn filter(&self, node: &NodeInfo) -> Option<Status> {
        if !self.satisfies_affinity(node) {
            return Some(Status::new(
                Code::UnschedulableAndUnresolvable,
                Plugin::InterPodAffinity,
                "node(s) didn't match pod affinity rules",
            ));
        }
        if self.has_required_anti
            && self
                .anti_counts
                .iter()
                .any(|((k, v), n)| *n > 0 && node.labels.get(k) == Some(v))
        {
            return Some(Status::new(
                Code::Unschedulable,
                Plugin::InterPodAffinity,
                "node(s) didn't match pod anti-affinity rules",
            ));
        }
        if self
            .existing_anti_counts
            .iter()
            .any(|((k, v), n)| *n > 0 && node.labels.get(k) == Some(v))
        {
            return Some(Status::new(
                Code::Unschedulable,
                Plugin::InterPodAffinity,
                "node(s) didn't satisfy existing pods anti-affinity rules",
            ));
        }
        None
    }

    fn satisfies_affinity(&self, node: &NodeInfo) -> bool {
        let mut pods_exist = true;
        for term in &self.required_affinity {
            let Some(value) = node.labels.get(&term.topology_key) else {
                // Every topology key must exist on the node.
                return false;
            };
            if self
                .affinity_counts
                .get(&(term.topology_key.clone(), value.clone()))
                .copied()
                .unwrap_or(0)
                <= 0
            {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself may go anywhere with the labels.
        pods_exist || (self.affinity_counts.is_empty() && self.self_matches_all)
    }
}

/// PreScore state: a score per topology pair.
pub struct ScoreState {
    topology_score: HashMap<String, HashMap<String, i64>>,
}

/// Upstream's `hardPodAffinityWeight` default: an existing pod's required affinity to the
/// incoming pod counts like a preferred term of weight 1.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

pub fn pre_score(pod: &PodInfo, cache: &Cache) -> Option<ScoreState> {
    let has_preferred =
        !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    if !has_preferred && cache.pods_with_affinity == 0 {
        return None;
    }
    let ns = |name: &str| cache.namespace_labels(name);
    let mut topology_score: HashMap<String, HashMap<String, i64>> = HashMap::new();
    let mut add = |key: &str, node: &NodeInfo, w: i64| {
        if let Some(v) = node.labels.get(key) {
            *topology_score
                .entry(key.to_string())
                .or_default()
                .entry(v.clone())
                .or_default() += w;
        }
    };
    let nodes: Box<dyn Iterator<Item = &NodeInfo>> = if has_preferred {
        Box::new(cache.nodes())
    } else {
        Box::new(cache.nodes_with_affinity_pods())
    };
    for node in nodes {
        for existing in &node.pods {
            for t in &pod.preferred_affinity {
                if t.matches(existing, &ns) {
                    add(&t.topology_key, node, t.weight);
                }
            }
            for t in &pod.preferred_anti_affinity {
                if t.matches(existing, &ns) {
                    add(&t.topology_key, node, -t.weight);
                }
            }
            if existing.has_pod_affinity() {
                for t in &existing.required_affinity {
                    if t.matches(pod, &ns) {
                        add(&t.topology_key, node, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for t in &existing.preferred_affinity {
                    if t.matches(pod, &ns) {
                        add(&t.topology_key, node, t.weight);
                    }
                }
                for t in &existing.preferred_anti_affinity {
                    if t.matches(pod, &ns) {
                        add(&t.topology_key, node, -t.weight);
                    }
                }
            }
        }
    }
    (!topology_score.is_empty()).then_some(ScoreState { topology_score })
}

impl ScoreState {
    /// Normalised scores: min–max scaled to 0–100.
    pub fn scores(&self, nodes: &[&NodeInfo]) -> Vec<i64> {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|node| {
                self.topology_score
                    .iter()
                    .filter_map(|(key, values)| node.labels.get(key).and_then(|v| values.get(v)))
                    .sum()
            })
            .collect();
        let min = raw.iter().copied().min().unwrap_or(0);
        let max = raw.iter().copied().max().unwrap_or(0);
        let diff = max - min;
        raw.iter()
            .map(|s| {
                if diff > 0 {
                    (MAX_NODE_SCORE as f64 * ((s - min) as f64 / diff as f64)) as i64
                } else {
                    0
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn node(name: &str, zone: &str) -> Arc<k8s_openapi::api::core::v1::Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"zone": zone, "kubernetes.io/hostname": name}},
                "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"}}}))
            .expect("node"),
        )
    }

    fn pod(
        name: &str,
        node: Option<&str>,
        labels: serde_json::Value,
        affinity: serde_json::Value,
    ) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(
            Arc::new(
                serde_json::from_value(
                    json!({"metadata": {"name": name, "namespace": "d", "labels": labels},
                    "spec": {"nodeName": node, "affinity": affinity, "containers": []}}),
                )
                .expect("pod"),
            ),
            0,
        ))
    }

    fn term(app: &str) -> serde_json::Value {
        json!([{"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "zone"}])
    }

    #[test]
    fn required_affinity_anti_affinity_and_symmetry() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a", "z1"));
        cache.upsert_node(node("b", "z2"));
        cache.add_pod(pod("db", Some("a"), json!({"app": "db"}), json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("web")}})));

        // Affinity to db: only zone z1.
        let p = pod(
            "cache",
            None,
            json!({}),
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db")}}),
        );
        let s = pre_filter(&p, &cache).expect("state");
        assert!(s.filter(cache.node("a").expect("a")).is_none());
        assert_eq!(
            s.filter(cache.node("b").expect("b"))
                .expect("rejected")
                .reasons,
            vec!["node(s) didn't match pod affinity rules"]
        );

        // Anti-affinity to db: only zone z2.
        let p = pod(
            "other",
            None,
            json!({}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db")}}),
        );
        let s = pre_filter(&p, &cache).expect("state");
        assert_eq!(
            s.filter(cache.node("a").expect("a"))
                .expect("rejected")
                .reasons,
            vec!["node(s) didn't match pod anti-affinity rules"]
        );
        assert!(s.filter(cache.node("b").expect("b")).is_none());

        // The existing db pod refuses web pods in its zone.
        let web = pod("web", None, json!({"app": "web"}), json!(null));
        let s = pre_filter(&web, &cache).expect("state");
        assert_eq!(
            s.filter(cache.node("a").expect("a"))
                .expect("rejected")
                .reasons,
            vec!["node(s) didn't satisfy existing pods anti-affinity rules"]
        );
        assert!(s.filter(cache.node("b").expect("b")).is_none());

        // The first pod of a self-affine group may go anywhere.
        let first = pod(
            "first",
            None,
            json!({"app": "grp"}),
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("grp")}}),
        );
        let s = pre_filter(&first, &cache).expect("state");
        assert!(s.filter(cache.node("b").expect("b")).is_none());
    }

    #[test]
    fn preferred_terms_score_domains() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a", "z1"));
        cache.upsert_node(node("b", "z2"));
        cache.add_pod(pod("db", Some("a"), json!({"app": "db"}), json!(null)));
        let p = pod(
            "p",
            None,
            json!({}),
            json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}
            ]}}),
        );
        let state = pre_score(&p, &cache).expect("scores");
        let nodes = [cache.node("a").expect("a"), cache.node("b").expect("b")];
        assert_eq!(state.scores(&nodes), vec![100, 0]);
    }
}
