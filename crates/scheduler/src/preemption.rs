//! DefaultPreemption (the PostFilter): when nothing fits, find a node where evicting
//! lower-priority pods lets the pod fit, choosing the node and victims as upstream does —
//! dry-run every candidate node that preemption might help (status Unschedulable, not
//! Unresolvable), remove all lower-priority pods, then reprieve the most important ones while
//! the pod still fits; among candidates prefer the lowest highest-victim priority, then the
//! lowest priority sum, then the fewest victims, then the most recently started victims.
//!
//! This module decides; `lib.rs` executes (nominate, mark victims, delete them gracefully).

use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng;

use crate::cache::{Cache, NodeInfo};
use crate::plugins::{self, Code, CycleState, Nominated, Plugin, Status};
use crate::pod_info::PodInfo;
use crate::schedule_one::FitError;

/// Upstream's DefaultPreemptionArgs defaults.
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// Where to preempt and whom.
#[derive(Debug)]
pub struct Candidate {
    pub node: String,
    /// Most important first.
    pub victims: Vec<Arc<PodInfo>>,
}

/// Upstream's `MoreImportantPod`: higher priority, then the one that started earlier.
fn more_important(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| a.start_time.cmp(&b.start_time))
}

/// Runs preemption for `pod` after `fit`; on failure returns the PostFilter message
/// ("preemption: …") for the FitError.
pub fn preempt(pod: &PodInfo, cache: &Cache, fit: &FitError) -> Result<Candidate, String> {
    if pod.preemption_never {
        return Err("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    if let Some(nominated) = cache
        .nominated_node_of(&pod.key)
        .or(pod.nominated_node.as_deref())
    {
        let unresolvable = fit
            .statuses
            .get(nominated)
            .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable);
        if !unresolvable && let Some(node) = cache.node(nominated) {
            // Victims of an earlier preemption are still terminating: wait for them.
            if node
                .pods
                .iter()
                .any(|p| p.priority < pod.priority && p.terminating)
            {
                return Err(
                    "preemption: not eligible due to a terminating pod on the nominated node."
                        .into(),
                );
            }
        }
    }
    let not_helpful = |statuses: HashMap<String, Status>| {
        let e = FitError {
            num_all_nodes: fit.num_all_nodes,
            statuses,
            absent_reason: Some("Preemption is not helpful for scheduling"),
            post_filter_msg: None,
        };
        // Upstream nests the whole FitError text, final period included, so the pod's message
        // ends in "..": kept for fidelity with what users search for.
        format!("preemption: {e}")
    };
    let potential: Vec<&str> = cache
        .order()
        .iter()
        .filter(|n| {
            fit.statuses
                .get(n.as_str())
                .is_some_and(|s| s.code == Code::Unschedulable)
        })
        .map(String::as_str)
        .collect();
    if potential.is_empty() {
        return Err(not_helpful(HashMap::new()));
    }
    let want = (potential.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
        .max(MIN_CANDIDATE_NODES_ABSOLUTE)
        .min(potential.len());
    let offset = rand::rng().random_range(0..potential.len());
    let state = CycleState::pre_filter(pod, cache);
    let mut candidates = Vec::new();
    let mut statuses = HashMap::new();
    for i in 0..potential.len() {
        let name = potential[(offset + i) % potential.len()];
        let Some(node) = cache.node(name) else {
            continue;
        };
        match select_victims_on_node(pod, node, state.clone(), cache) {
            Ok(victims) => {
                candidates.push(Candidate {
                    node: name.to_string(),
                    victims,
                });
                if candidates.len() >= want {
                    break;
                }
            }
            Err(status) => {
                statuses.insert(name.to_string(), status);
            }
        }
    }
    pick_one_node(candidates).ok_or_else(|| not_helpful(statuses))
}

/// The fewest, least important pods on `node` whose removal lets `pod` fit.
fn select_victims_on_node(
    pod: &PodInfo,
    node: &NodeInfo,
    mut state: CycleState,
    cache: &Cache,
) -> Result<Vec<Arc<PodInfo>>, Status> {
    let mut node = node.clone();
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::new(
            Code::UnschedulableAndUnresolvable,
            Plugin::DefaultPreemption,
            "No preemption victims found for incoming pod",
        ));
    }
    for v in &potential {
        remove(pod, &mut node, &mut state, v, cache);
    }
    let nominated = Nominated::on(cache, &node.name, pod);
    if let Some(status) = plugins::run_filters(pod, &node, &state, nominated.as_ref()) {
        return Err(status);
    }
    potential.sort_by(|a, b| more_important(a, b));
    let mut victims = Vec::new();
    for v in potential {
        add(pod, &mut node, &mut state, &v, cache);
        if plugins::run_filters(pod, &node, &state, nominated.as_ref()).is_some() {
            remove(pod, &mut node, &mut state, &v, cache);
            victims.push(v);
        }
    }
    if victims.is_empty() {
        return Err(Status::new(
            Code::UnschedulableAndUnresolvable,
            Plugin::DefaultPreemption,
            format!("expected at least one victim pod on node {:?}", node.name),
        ));
    }
    Ok(victims)
}

fn remove(
    pod: &PodInfo,
    node: &mut NodeInfo,
    state: &mut CycleState,
    victim: &Arc<PodInfo>,
    cache: &Cache,
) {
    node.remove_pod(&victim.key);
    if let Some(a) = state.affinity.as_mut() {
        a.remove_pod(pod, victim, node, cache);
    }
    if let Some(s) = state.spread.as_mut() {
        s.adjust(pod, victim, node, -1);
    }
}

fn add(
    pod: &PodInfo,
    node: &mut NodeInfo,
    state: &mut CycleState,
    victim: &Arc<PodInfo>,
    cache: &Cache,
) {
    node.add_pod(victim.clone());
    if let Some(a) = state.affinity.as_mut() {
        a.add_pod(pod, victim, node, cache);
    }
    if let Some(s) = state.spread.as_mut() {
        s.adjust(pod, victim, node, 1);
    }
}

/// Upstream's `pickOneNodeForPreemption` criteria, in order (PDB violations are not counted:
/// every victim is treated as non-violating).
fn pick_one_node(mut candidates: Vec<Candidate>) -> Option<Candidate> {
    if candidates.is_empty() {
        return None;
    }
    let highest = |c: &Candidate| c.victims.first().map_or(i32::MIN, |v| v.priority);
    let sum = |c: &Candidate| -> i64 {
        c.victims
            .iter()
            .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
            .sum()
    };
    // The earliest start among the highest-priority victims; later is better.
    let earliest_top_start = |c: &Candidate| {
        let top = highest(c);
        c.victims
            .iter()
            .filter(|v| v.priority == top)
            .map(|v| v.start_time)
            .min()
            .unwrap_or(i128::MIN)
    };
    let mut best = 0;
    for i in 1..candidates.len() {
        let (a, b) = (&candidates[i], &candidates[best]);
        let better = (
            highest(a),
            sum(a),
            a.victims.len(),
            std::cmp::Reverse(earliest_top_start(a)),
        ) < (
            highest(b),
            sum(b),
            b.victims.len(),
            std::cmp::Reverse(earliest_top_start(b)),
        );
        if better {
            best = i;
        }
    }
    Some(candidates.swap_remove(best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule_one::{Algorithm, ScheduleError};
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Arc<k8s_openapi::api::core::v1::Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
            }))
            .expect("node"),
        )
    }

    fn pod(
        name: &str,
        node: Option<&str>,
        cpu: &str,
        priority: i32,
        extra: serde_json::Value,
    ) -> Arc<PodInfo> {
        let mut spec = json!({"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        Arc::new(PodInfo::new(
            Arc::new(
                serde_json::from_value(
                    json!({"metadata": {"name": name, "namespace": "d"}, "spec": spec}),
                )
                .expect("pod"),
            ),
            priority,
        ))
    }

    fn fit_error(p: &PodInfo, cache: &mut Cache) -> FitError {
        match Algorithm::default().schedule(p, cache) {
            Err(ScheduleError::Fit(e)) => e,
            other => panic!("expected a fit error, got {other:?}"),
        }
    }

    #[test]
    fn evicts_the_fewest_lowest_priority_pods() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a", "2"));
        cache.upsert_node(node("b", "2"));
        // a: two low pods; b: one mid pod using everything.
        cache.add_pod(pod("low1", Some("a"), "1", 1, json!({})));
        cache.add_pod(pod("low2", Some("a"), "1", 1, json!({})));
        cache.add_pod(pod("mid", Some("b"), "2", 5, json!({})));
        let high = pod("high", None, "1", 10, json!({}));
        let e = fit_error(&high, &mut cache);
        let c = preempt(&high, &cache, &e).expect("candidate");
        // On a one low victim suffices (priority 1) — better than b's priority-5 victim.
        assert_eq!(c.node, "a");
        assert_eq!(c.victims.len(), 1);
        assert_eq!(c.victims[0].priority, 1);
    }

    #[test]
    fn messages_when_preemption_cannot_help() {
        let mut cache = Cache::default();
        cache.upsert_node(node("a", "1"));
        let never = pod("n", None, "1", 10, json!({"preemptionPolicy": "Never"}));
        cache.add_pod(pod("low", Some("a"), "1", 1, json!({})));
        let e = fit_error(&never, &mut cache);
        assert_eq!(
            preempt(&never, &cache, &e).expect_err("never"),
            "preemption: not eligible due to preemptionPolicy=Never."
        );

        let huge = pod("h", None, "4", 10, json!({}));
        let e = fit_error(&huge, &mut cache);
        assert_eq!(
            preempt(&huge, &cache, &e).expect_err("too big"),
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );

        let equal = pod("e", None, "1", 1, json!({}));
        let e = fit_error(&equal, &mut cache);
        assert_eq!(
            preempt(&equal, &cache, &e).expect_err("no lower priority"),
            "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
    }
}
