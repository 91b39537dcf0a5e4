//! One scheduling cycle for one pod (upstream's `schedulePod`): filter a sample of nodes
//! starting where the previous cycle stopped, score the feasible ones, pick the best (random
//! among ties). When no node fits, a [`FitError`] carries every node's status, formatted
//! exactly like upstream's `FitError.Error()`.

use std::collections::HashMap;
use std::fmt;

use rand::Rng;

use crate::cache::Cache;
use crate::plugins::{self, CycleState, Nominated, PluginSet, Status};
use crate::pod_info::PodInfo;

/// Upstream's `minFeasibleNodesToFind`.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Upstream's `minFeasibleNodesPercentageToFind`.
const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Why no node was chosen.
#[derive(Debug)]
pub enum ScheduleError {
    /// The cluster has no nodes (upstream `ErrNoNodesAvailable`, a plain error, not a FitError).
    NoNodes,
    Fit(FitError),
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::NoNodes => f.write_str("no nodes available to schedule pods"),
            ScheduleError::Fit(e) => e.fmt(f),
        }
    }
}

/// No node fits: each node's status, plus what preemption said.
#[derive(Clone, Debug)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// Node name → why it was rejected.
    pub statuses: HashMap<String, Status>,
    /// Reason given for nodes missing from `statuses` (preemption's "not helpful").
    pub absent_reason: Option<&'static str>,
    pub post_filter_msg: Option<String>,
}

impl FitError {
    /// The plugins that rejected some node (which cluster events can help).
    pub fn plugins(&self) -> PluginSet {
        let mut set = PluginSet::default();
        for s in self.statuses.values() {
            set.insert(s.plugin);
        }
        set
    }
}

impl fmt::Display for FitError {
    /// "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node
    /// affinity/selector. preemption: …" — reasons counted over nodes, sorted as strings
    /// (upstream sorts the formatted "count reason" strings).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        let mut histogram: HashMap<&str, usize> = HashMap::new();
        for s in self.statuses.values() {
            for r in &s.reasons {
                *histogram.entry(r.as_ref()).or_default() += 1;
            }
        }
        if let Some(reason) = self.absent_reason {
            let absent = self.num_all_nodes.saturating_sub(self.statuses.len());
            if absent > 0 {
                *histogram.entry(reason).or_default() += absent;
            }
        }
        let mut reasons: Vec<String> = histogram.iter().map(|(r, n)| format!("{n} {r}")).collect();
        reasons.sort();
        if !reasons.is_empty() {
            write!(f, " {}.", reasons.join(", "))?;
        }
        if let Some(msg) = &self.post_filter_msg {
            write!(f, " {msg}.")?;
        }
        Ok(())
    }
}

/// Upstream's adaptive `numFeasibleNodesToFind` with `percentageOfNodesToScore` unset (0):
/// all nodes below 100; otherwise `50 - nodes/125` percent, at least 5 %, at least 100 nodes.
pub fn num_feasible_nodes_to_find(
    num_all_nodes: usize,
    percentage_of_nodes_to_score: u32,
) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let mut percentage = percentage_of_nodes_to_score as usize;
    if percentage == 0 {
        percentage = 50usize
            .saturating_sub(num_all_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND);
    }
    let n = num_all_nodes * percentage.min(100) / 100;
    n.max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// The scheduling algorithm and its state across cycles.
#[derive(Default)]
pub struct Algorithm {
    /// Where the next cycle starts filtering, so sampling rotates over all nodes.
    next_start_node_index: usize,
    /// 0 means adaptive (upstream's default).
    pub percentage_of_nodes_to_score: u32,
}

/// A successful cycle.
#[derive(Debug)]
pub struct Placement {
    pub node: String,
    pub evaluated: usize,
    pub feasible: usize,
}

impl Algorithm {
    /// Picks a node for `pod` from `cache` (which must hold the pod's own placement removed).
    pub fn schedule(
        &mut self,
        pod: &PodInfo,
        cache: &mut Cache,
    ) -> Result<Placement, ScheduleError> {
        cache.refresh_order();
        let cache: &Cache = cache;
        let order = cache.order();
        let n = order.len();
        if n == 0 {
            return Err(ScheduleError::NoNodes);
        }
        let state = CycleState::pre_filter(pod, cache);

        // A pod nominated by an earlier preemption tries its node first.
        if let Some(nominated) = cache
            .nominated_node_of(&pod.key)
            .or(pod.nominated_node.as_deref())
            && let Some(node) = cache.node(nominated)
        {
            let extra = Nominated::on(cache, &node.name, pod);
            if plugins::run_filters(pod, node, &state, extra.as_ref()).is_none() {
                return Ok(Placement {
                    node: node.name.clone(),
                    evaluated: 1,
                    feasible: 1,
                });
            }
        }

        let want = num_feasible_nodes_to_find(n, self.percentage_of_nodes_to_score);
        let mut feasible = Vec::with_capacity(want.min(n));
        let mut statuses: Vec<(usize, Status)> = Vec::new();
        let start = self.next_start_node_index % n;
        let mut processed = 0;
        for i in 0..n {
            let idx = (start + i) % n;
            processed += 1;
            let Some(node) = cache.node(&order[idx]) else {
                continue;
            };
            let extra = Nominated::on(cache, &node.name, pod);
            match plugins::run_filters(pod, node, &state, extra.as_ref()) {
                None => {
                    feasible.push(node);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Some(status) => statuses.push((idx, status)),
            }
        }
        self.next_start_node_index = (start + processed) % n;

        if feasible.is_empty() {
            return Err(ScheduleError::Fit(FitError {
                num_all_nodes: n,
                statuses: statuses
                    .into_iter()
                    .map(|(i, s)| (order[i].clone(), s))
                    .collect(),
                absent_reason: None,
                post_filter_msg: None,
            }));
        }
        let evaluated = processed;
        let count = feasible.len();
        if count == 1 {
            return Ok(Placement {
                node: feasible[0].name.clone(),
                evaluated,
                feasible: 1,
            });
        }
        let scores = plugins::score_nodes(pod, &feasible, cache);
        Ok(Placement {
            node: feasible[select_host(&scores)].name.clone(),
            evaluated,
            feasible: count,
        })
    }
}

/// The index of the highest score, uniformly random among ties (reservoir sampling, as
/// upstream's `selectHost`).
pub fn select_host(scores: &[i64]) -> usize {
    let mut rng = rand::rng();
    let mut best = 0;
    let mut ties = 0u32;
    for (i, s) in scores.iter().enumerate() {
        if i == 0 || *s > scores[best] {
            best = i;
            ties = 1;
        } else if *s == scores[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{Code, Plugin};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn adaptive_sampling_follows_upstream() {
        assert_eq!(num_feasible_nodes_to_find(50, 0), 50);
        assert_eq!(num_feasible_nodes_to_find(100, 0), 100);
        // 5000 nodes: 50 - 40 = 10 % → 500.
        assert_eq!(num_feasible_nodes_to_find(5000, 0), 500);
        // 6000 nodes: 50 - 48 = 2 % → clamped to 5 % → 300.
        assert_eq!(num_feasible_nodes_to_find(6000, 0), 300);
        assert_eq!(num_feasible_nodes_to_find(500, 0), 230);
        assert_eq!(num_feasible_nodes_to_find(1000, 10), 100);
    }

    #[test]
    fn fit_error_message_matches_upstream() {
        let s = |code, plugin, r: &'static str| Status::new(code, plugin, r);
        let mut statuses = HashMap::new();
        statuses.insert(
            "a".to_string(),
            s(
                Code::Unschedulable,
                Plugin::NodeResourcesFit,
                "Insufficient cpu",
            ),
        );
        statuses.insert(
            "b".to_string(),
            s(
                Code::UnschedulableAndUnresolvable,
                Plugin::NodeAffinity,
                crate::plugins::node_affinity::REASON,
            ),
        );
        statuses.insert(
            "c".to_string(),
            s(
                Code::UnschedulableAndUnresolvable,
                Plugin::NodeAffinity,
                crate::plugins::node_affinity::REASON,
            ),
        );
        let mut e = FitError {
            num_all_nodes: 3,
            statuses,
            absent_reason: None,
            post_filter_msg: None,
        };
        let preemption = FitError {
            num_all_nodes: 3,
            statuses: HashMap::new(),
            absent_reason: Some("Preemption is not helpful for scheduling"),
            post_filter_msg: None,
        };
        e.post_filter_msg = Some(format!("preemption: {preemption}"));
        // Upstream's text really ends in ".." (the nested FitError keeps its period).
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
        );
    }

    #[test]
    fn reasons_sort_as_strings() {
        let mut statuses = HashMap::new();
        for i in 0..10 {
            statuses.insert(
                format!("n{i}"),
                Status::new(Code::Unschedulable, Plugin::NodePorts, "b"),
            );
        }
        for i in 10..12 {
            statuses.insert(
                format!("n{i}"),
                Status::new(Code::Unschedulable, Plugin::NodePorts, "a"),
            );
        }
        let e = FitError {
            num_all_nodes: 12,
            statuses,
            absent_reason: None,
            post_filter_msg: None,
        };
        assert_eq!(e.to_string(), "0/12 nodes are available: 10 b, 2 a.");
    }

    fn node(
        name: &str,
        cpu: &str,
        labels: serde_json::Value,
    ) -> Arc<k8s_openapi::api::core::v1::Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
            }))
            .expect("node"),
        )
    }

    fn pod(v: serde_json::Value) -> PodInfo {
        PodInfo::new(Arc::new(serde_json::from_value(v).expect("pod")), 0)
    }

    #[test]
    fn picks_the_only_fitting_node_and_reports_the_rest() {
        let mut cache = Cache::default();
        cache.upsert_node(node("small", "1", json!({"disk": "ssd"})));
        cache.upsert_node(node("big", "8", json!({"disk": "ssd"})));
        cache.upsert_node(node("other", "8", json!({"disk": "hdd"})));
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {
                "nodeSelector": {"disk": "ssd"},
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]
            }}),
        );
        let mut alg = Algorithm::default();
        assert_eq!(alg.schedule(&p, &mut cache).expect("fits").node, "big");
        let huge = pod(
            json!({"metadata": {"name": "h", "namespace": "d"}, "spec": {
                "nodeSelector": {"disk": "ssd"},
                "containers": [{"name": "c", "resources": {"requests": {"cpu": "100"}}}]
            }}),
        );
        let Err(ScheduleError::Fit(e)) = alg.schedule(&huge, &mut cache) else {
            panic!("must not fit")
        };
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."
        );
    }

    #[test]
    fn spreads_by_least_allocated() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a", "4", json!({})));
        cache.upsert_node(node("b", "4", json!({})));
        let mut alg = Algorithm::default();
        let mut placed = HashMap::<String, usize>::new();
        for i in 0..8 {
            let p = Arc::new(pod(
                json!({"metadata": {"name": format!("p{i}"), "namespace": "d"}, "spec": {
                    "containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}}]
                }}),
            ));
            let n = alg.schedule(&p, &mut cache).expect("fits").node;
            cache.assume(p, &n);
            *placed.entry(n).or_default() += 1;
        }
        assert_eq!(placed.get("a"), Some(&4));
        assert_eq!(placed.get("b"), Some(&4));
    }

    #[test]
    fn select_host_takes_the_maximum() {
        assert_eq!(select_host(&[1, 5, 3]), 1);
        for _ in 0..20 {
            assert!([1, 2].contains(&select_host(&[0, 7, 7])));
        }
    }
}
