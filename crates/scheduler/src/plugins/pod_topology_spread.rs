//! PodTopologySpread: `DoNotSchedule` constraints reject a node when placing the pod there
//! would make its domain exceed `maxSkew` over the least-loaded domain; `ScheduleAnyway`
//! constraints score domains with fewer matching pods higher (upstream weights each constraint
//! by `ln(domains + 2)`).
//!
//! Only nodes that pass the constraint's node inclusion policies (nodeAffinityPolicy Honor by
//! default, nodeTaintsPolicy Ignore by default) and carry every constraint's topology key form
//! domains.

use std::collections::{HashMap, HashSet};

use super::{Code, MAX_NODE_SCORE, Plugin, Status};
use crate::cache::{Cache, NodeInfo};
use crate::pod_info::{PodInfo, SpreadConstraint};

const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Matching pods on one node (same namespace, not terminating, selected).
fn count_on_node(c: &SpreadConstraint, pod: &PodInfo, node: &NodeInfo) -> i64 {
    node.pods
        .iter()
        .filter(|p| {
            p.namespace == pod.namespace
                && !p.terminating
                && c.selector.matches(&p.labels)
                && c.owner
                    .as_ref()
                    .is_none_or(|o| p.controller_uid.as_ref() == Some(o))
        })
        .count() as i64
}

fn included(c: &SpreadConstraint, pod: &PodInfo, node: &NodeInfo) -> bool {
    if c.honor_node_affinity && !pod.required_node_affinity.matches(&node.name, &node.labels) {
        return false;
    }
    if c.honor_node_taints && super::taint_toleration::filter(pod, node).is_some() {
        return false;
    }
    true
}

fn has_all_keys(constraints: &[&SpreadConstraint], node: &NodeInfo) -> bool {
    constraints
        .iter()
        .all(|c| node.labels.contains_key(&c.topology_key))
}

/// PreFilter state for the hard constraints.
#[derive(Clone, Debug)]
pub struct FilterState {
    constraints: Vec<SpreadConstraint>,
    counts: Vec<HashMap<String, i64>>,
}

pub fn pre_filter(pod: &PodInfo, cache: &Cache) -> Option<FilterState> {
    let hard: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| c.hard).collect();
    if hard.is_empty() {
        return None;
    }
    let mut counts = vec![HashMap::new(); hard.len()];
    for node in cache.nodes() {
        if !has_all_keys(&hard, node) {
            continue;
        }
        for (i, c) in hard.iter().enumerate() {
            if !included(c, pod, node) {
                continue;
            }
            let value = node
                .labels
                .get(&c.topology_key)
                .cloned()
                .unwrap_or_default();
            *counts[i].entry(value).or_insert(0) += count_on_node(c, pod, node);
        }
    }
    Some(FilterState {
        constraints: hard.into_iter().cloned().collect(),
        counts,
    })
}

impl FilterState {
    fn min_match(&self, i: usize) -> i64 {
        let counts = &self.counts[i];
        if (counts.len() as i64) < self.constraints[i].min_domains {
            return 0;
        }
        counts.values().copied().min().unwrap_or(0)
    }

    pub fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(value) = node.labels.get(&c.topology_key) else {
                return Some(Status::new(
                    Code::UnschedulableAndUnresolvable,
                    Plugin::PodTopologySpread,
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                ));
            };
            let self_match = i64::from(c.selector.matches(&pod.labels));
            let matched = self.counts[i].get(value).copied().unwrap_or(0);
            if matched + self_match - self.min_match(i) > c.max_skew {
                return Some(Status::new(
                    Code::Unschedulable,
                    Plugin::PodTopologySpread,
                    "node(s) didn't match pod topology spread constraints",
                ));
            }
        }
        None
    }

    /// Preemption's RemovePod/AddPod extensions.
    pub fn adjust(&mut self, pod: &PodInfo, existing: &PodInfo, node: &NodeInfo, by: i64) {
        if existing.namespace != pod.namespace || existing.terminating {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if !c.selector.matches(&existing.labels) {
                continue;
            }
            if let Some(v) = node.labels.get(&c.topology_key)
                && let Some(n) = self.counts[i].get_mut(v)
            {
                *n += by;
            }
        }
    }
}

/// PreScore state for the soft constraints.
pub struct ScoreState<'a> {
    constraints: Vec<&'a SpreadConstraint>,
    /// Every node must carry every key (false when all constraints are system defaults).
    require_all: bool,
    weights: Vec<f64>,
    counts: Vec<HashMap<String, i64>>,
}

pub fn pre_score<'a>(
    pod: &'a PodInfo,
    nodes: &[&NodeInfo],
    cache: &Cache,
) -> Option<ScoreState<'a>> {
    let soft: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).collect();
    if soft.is_empty() {
        return None;
    }
    let require_all = soft.iter().any(|c| !c.system_default);
    let mut domains: Vec<HashSet<&str>> = vec![HashSet::new(); soft.len()];
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); soft.len()];
    for node in nodes
        .iter()
        .filter(|n| !require_all || has_all_keys(&soft, n))
    {
        for (i, c) in soft.iter().enumerate() {
            if let Some(v) = node.labels.get(&c.topology_key) {
                domains[i].insert(v);
                if c.topology_key != HOSTNAME_LABEL {
                    counts[i].entry(v.clone()).or_insert(0);
                }
            }
        }
    }
    for node in cache.nodes() {
        if require_all && !has_all_keys(&soft, node) {
            continue;
        }
        for (i, c) in soft.iter().enumerate() {
            if c.topology_key == HOSTNAME_LABEL || !included(c, pod, node) {
                continue;
            }
            let Some(v) = node.labels.get(&c.topology_key) else {
                continue;
            };
            if let Some(n) = counts[i].get_mut(v) {
                *n += count_on_node(c, pod, node);
            }
        }
    }
    let weights = soft
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size = if c.topology_key == HOSTNAME_LABEL {
                nodes.len()
            } else {
                domains[i].len()
            };
            ((size + 2) as f64).ln()
        })
        .collect();
    Some(ScoreState {
        constraints: soft,
        require_all,
        weights,
        counts,
    })
}

impl ScoreState<'_> {
    pub fn scores(&self, pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
        let raw: Vec<Option<i64>> = nodes
            .iter()
            .map(|node| {
                if self.require_all && !has_all_keys(&self.constraints, node) {
                    return None;
                }
                let mut score = 0.0;
                for (i, c) in self.constraints.iter().enumerate() {
                    let Some(value) = node.labels.get(&c.topology_key) else {
                        continue;
                    };
                    let cnt = if c.topology_key == HOSTNAME_LABEL {
                        count_on_node(c, pod, node)
                    } else {
                        self.counts[i].get(value).copied().unwrap_or(0)
                    };
                    score += cnt as f64 * self.weights[i] + (c.max_skew - 1) as f64;
                }
                Some(score.round() as i64)
            })
            .collect();
        let present = raw.iter().flatten();
        let min = present.clone().copied().min().unwrap_or(0);
        let max = present.copied().max().unwrap_or(0);
        raw.iter()
            .map(|s| match s {
                None => 0,
                Some(_) if max == 0 => MAX_NODE_SCORE,
                Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn node(name: &str, zone: Option<&str>) -> Arc<k8s_openapi::api::core::v1::Node> {
        let labels = match zone {
            Some(z) => json!({"zone": z}),
            None => json!({}),
        };
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"}}}))
            .expect("node"),
        )
    }

    fn pod(name: &str, node: Option<&str>, when: &str) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(
            Arc::new(
                serde_json::from_value(
                    json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}},
                    "spec": {"nodeName": node, "containers": [], "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
                        "labelSelector": {"matchLabels": {"app": "web"}}
                    }]}}),
                )
                .expect("pod"),
            ),
            0,
        ))
    }

    #[test]
    fn do_not_schedule_enforces_max_skew_and_labels() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a", Some("z1")));
        cache.upsert_node(node("b", Some("z2")));
        cache.upsert_node(node("bare", None));
        cache.add_pod(pod("w0", Some("a"), "DoNotSchedule"));
        let p = pod("w1", None, "DoNotSchedule");
        let s = pre_filter(&p, &cache).expect("state");
        // z1 has 1, z2 has 0: another in z1 makes skew 2.
        assert_eq!(
            s.filter(&p, cache.node("a").expect("a"))
                .expect("skew")
                .reasons,
            vec!["node(s) didn't match pod topology spread constraints"]
        );
        assert!(s.filter(&p, cache.node("b").expect("b")).is_none());
        assert_eq!(
            s.filter(&p, cache.node("bare").expect("bare"))
                .expect("label")
                .code,
            Code::UnschedulableAndUnresolvable
        );
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_domain() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a", Some("z1")));
        cache.upsert_node(node("b", Some("z2")));
        cache.add_pod(pod("w0", Some("a"), "ScheduleAnyway"));
        cache.add_pod(pod("w1", Some("a"), "ScheduleAnyway"));
        let p = pod("w2", None, "ScheduleAnyway");
        let nodes = [cache.node("a").expect("a"), cache.node("b").expect("b")];
        let scores = pre_score(&p, &nodes, &cache)
            .expect("soft")
            .scores(&p, &nodes);
        assert!(scores[1] > scores[0], "{scores:?}");
        assert_eq!(scores[1], MAX_NODE_SCORE);
    }

    fn owned(name: &str, node: Option<&str>, kind: &str, owner: &str) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d",
                    "labels": {"app": "web"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner,
                        "uid": format!("uid-{owner}"), "controller": true}]},
                    "spec": {"nodeName": node, "containers": []}}))
                .expect("pod"),
            ),
            0,
        ))
    }

    fn host(name: &str) -> Arc<k8s_openapi::api::core::v1::Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name}},
                "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"}}}))
            .expect("node"),
        )
    }

    #[test]
    fn replicas_spread_over_nodes_by_default_counting_only_their_siblings() {
        let mut cache = Cache::default();
        for n in ["a", "b", "c"] {
            cache.upsert_node(host(n));
        }
        cache.add_pod(owned("x0", Some("a"), "ReplicaSet", "x"));
        cache.add_pod(owned("x1", Some("a"), "ReplicaSet", "x"));
        // Same labels, another controller: not a sibling.
        cache.add_pod(owned("y0", Some("b"), "ReplicaSet", "y"));
        cache.add_pod(owned("y1", Some("b"), "ReplicaSet", "y"));
        let p = owned("x2", None, "ReplicaSet", "x");
        assert_eq!(p.spread.len(), 2, "hostname and zone defaults");
        let nodes = [
            cache.node("a").expect("a"),
            cache.node("b").expect("b"),
            cache.node("c").expect("c"),
        ];
        // No node has a zone label: the zone default skips rather than zeroing every node.
        let scores = pre_score(&p, &nodes, &cache)
            .expect("defaults")
            .scores(&p, &nodes);
        assert!(scores[1] > scores[0], "{scores:?}");
        assert_eq!(scores[1], scores[2], "{scores:?}");
        assert_eq!(scores[1], MAX_NODE_SCORE);
    }

    #[test]
    fn only_replica_controllers_get_default_spreading() {
        assert!(owned("j", None, "Job", "j").spread.is_empty());
        assert!(owned("d", None, "DaemonSet", "d").spread.is_empty());
        assert_eq!(owned("s", None, "StatefulSet", "s").spread.len(), 2);
        // A pod's own constraints replace the defaults.
        assert_eq!(pod("w", None, "ScheduleAnyway").spread.len(), 1);
    }
}
