//! Pod predicates and the scale-down order, as upstream pkg/controller (`FilterActivePods`,
//! `podutil.IsPodReady`/`IsPodAvailable`, `ActivePodsWithRanks`) and the ReplicaSet
//! controller's `getPodsToDelete`.
//!
//! The order decides which pods a scale-down removes first — the ones whose loss hurts least:
//! 1. not yet scheduled before scheduled;
//! 2. Pending before Unknown before Running;
//! 3. not ready before ready;
//! 4. lower `controller.kubernetes.io/pod-deletion-cost` first;
//! 5. more pods of the same owner family on the pod's node first (spreads what remains);
//! 6. ready for less time first, comparing ages on a log2 scale (upstream's
//!    LogarithmicScaleDown, on by default since v1.22) so that pods of similar age fall back
//!    to a random-but-stable choice by UID instead of always hitting the very newest;
//! 7. higher container restart count first;
//! 8. newer first (same log2 scale, ties by UID).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The annotation users set to steer scale-down (upstream `core.PodDeletionCost`).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Upstream `IsPodActive`: not terminal and not being deleted.
pub(crate) fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase != Some("Succeeded")
        && phase != Some("Failed")
        && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's `Ready` condition when it is `True` (upstream `podutil.IsPodReady`).
fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .filter(|c| c.status == "True")
}

pub(crate) fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some()
}

/// When a ready pod became ready (its Ready condition's lastTransitionTime).
pub(crate) fn pod_ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    ready_condition(pod)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// Upstream `podutil.IsPodAvailable`: ready, and ready for longer than `min_ready_seconds`
/// (strictly: exactly `min_ready_seconds` ago is not yet available).
pub(crate) fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    available_at(pod, min_ready_seconds).is_some_and(|at| at < now)
}

/// The instant after which a ready pod counts as available.
pub(crate) fn available_at(pod: &Pod, min_ready_seconds: i32) -> Option<jiff::Timestamp> {
    let since = pod_ready_since(pod)?;
    since
        .checked_add(jiff::SignedDuration::from_secs(i64::from(
            min_ready_seconds,
        )))
        .ok()
}

/// Upstream `GetDeletionCostFromPodAnnotations`: an int32 without a plus sign or leading
/// zeros; anything else (or no annotation) costs 0.
pub(crate) fn deletion_cost(pod: &Pod) -> i32 {
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
    else {
        return 0;
    };
    let valid_first_digit = match value.as_bytes() {
        [] => false,
        [b'-', ..] => true,
        [b'0'] => true,
        [b'1'..=b'9', ..] => true,
        _ => false,
    };
    if !valid_first_digit {
        return 0;
    }
    value.parse::<i32>().unwrap_or(0)
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Pending 0, Unknown 1, Running 2; any other (or no) phase ranks with Pending.
fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn max_container_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
        .max(0)
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// Upstream `logarithmicRankDiff`: compares the ages of two instants as floor(log2(ns)).
fn logarithmic_rank_diff(t1: jiff::Timestamp, t2: jiff::Timestamp, now: jiff::Timestamp) -> i64 {
    let rank = |t: jiff::Timestamp| -> i64 {
        let age = now.as_nanosecond() - t.as_nanosecond();
        if age > 0 {
            (age as f64).log2().floor() as i64
        } else {
            -1
        }
    };
    rank(t1) - rank(t2)
}

/// Compares two instants where "less" means "delete first": missing (zero) before present,
/// then younger before older on the log2 scale, ties broken by UID. `None` when the instants
/// are equal and the next criterion must decide.
fn younger_first(
    a: (Option<jiff::Timestamp>, &str),
    b: (Option<jiff::Timestamp>, &str),
    now: jiff::Timestamp,
) -> Option<bool> {
    match (a.0, b.0) {
        (None, None) => None,
        (None, Some(_)) => Some(true),
        (Some(_), None) => Some(false),
        (Some(ta), Some(tb)) if ta == tb => None,
        (Some(ta), Some(tb)) => match logarithmic_rank_diff(ta, tb, now) {
            0 => Some(a.1 < b.1),
            d => Some(d < 0),
        },
    }
}

/// Upstream `ActivePodsWithRanks.Less`: should `a` (with `rank_a` related pods on its node)
/// be deleted before `b`?
fn delete_before(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize, now: jiff::Timestamp) -> bool {
    let (node_a, node_b) = (node_name(a), node_name(b));
    if node_a != node_b && (node_a.is_empty() || node_b.is_empty()) {
        return node_a.is_empty();
    }
    let (phase_a, phase_b) = (phase_ordinal(a), phase_ordinal(b));
    if phase_a != phase_b {
        return phase_a < phase_b;
    }
    let (ready_a, ready_b) = (is_pod_ready(a), is_pod_ready(b));
    if ready_a != ready_b {
        return !ready_a;
    }
    let (cost_a, cost_b) = (deletion_cost(a), deletion_cost(b));
    if cost_a != cost_b {
        return cost_a < cost_b;
    }
    if rank_a != rank_b {
        return rank_a > rank_b;
    }
    if ready_a
        && let Some(first) = younger_first(
            (pod_ready_since(a), uid(a)),
            (pod_ready_since(b), uid(b)),
            now,
        )
    {
        return first;
    }
    let (restarts_a, restarts_b) = (max_container_restarts(a), max_container_restarts(b));
    if restarts_a != restarts_b {
        return restarts_a > restarts_b;
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t: &Time| t.0);
    younger_first((created(a), uid(a)), (created(b), uid(b)), now).unwrap_or(false)
}

/// Upstream `getPodsToDelete`: the `diff` pods of `filtered` (the owner's active pods) to
/// delete first. `related` are the active and inactive pods of the owner and of its sibling
/// ReplicaSets (same controlling Deployment), used to prefer nodes they crowd.
pub(crate) fn pods_to_delete(
    filtered: &[Arc<Pod>],
    related: &[Arc<Pod>],
    diff: usize,
    now: jiff::Timestamp,
) -> Vec<Arc<Pod>> {
    if diff >= filtered.len() {
        return filtered.to_vec();
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for pod in related.iter().filter(|p| is_pod_active(p)) {
        *on_node.entry(node_name(pod)).or_default() += 1;
    }
    let ranked: Vec<(Arc<Pod>, usize)> = filtered
        .iter()
        .map(|p| {
            let rank = on_node.get(node_name(p)).copied().unwrap_or(0);
            (p.clone(), rank)
        })
        .collect();
    let sorted = merge_sort(ranked, &|a: &(Arc<Pod>, usize), b: &(Arc<Pod>, usize)| {
        delete_before(&a.0, a.1, &b.0, b.1, now)
    });
    sorted.into_iter().take(diff).map(|(p, _)| p).collect()
}

/// A stable merge sort by a `less` that need not be a total order (the log2 age comparison
/// with UID ties is not transitive in every corner, which Go's sort tolerates and
/// `slice::sort_by` may panic on).
fn merge_sort<T>(mut items: Vec<T>, less: &impl Fn(&T, &T) -> bool) -> Vec<T> {
    if items.len() <= 1 {
        return items;
    }
    let right = items.split_off(items.len() / 2);
    let left = merge_sort(items, less);
    let right = merge_sort(right, less);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_right = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => less(r, l),
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        let next = if take_right {
            right.next()
        } else {
            left.next()
        };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    struct P {
        name: &'static str,
        node: Option<&'static str>,
        phase: &'static str,
        ready_since: Option<&'static str>,
        created: &'static str,
        restarts: i32,
        cost: Option<&'static str>,
    }

    impl Default for P {
        fn default() -> Self {
            P {
                name: "p",
                node: None,
                phase: "Pending",
                ready_since: None,
                created: "2024-01-01T00:00:00Z",
                restarts: 0,
                cost: None,
            }
        }
    }

    fn pod(p: P) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(p.name.into()),
                uid: Some(format!("uid-{}", p.name)),
                creation_timestamp: Some(Time(ts(p.created))),
                annotations: p
                    .cost
                    .map(|c| BTreeMap::from([(POD_DELETION_COST.to_string(), c.to_string())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: p.node.map(str::to_string),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(p.phase.into()),
                conditions: p.ready_since.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(t))),
                        ..PodCondition::default()
                    }]
                }),
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    restart_count: p.restarts,
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or(""))
            .collect()
    }

    const NOW: &str = "2024-01-02T00:00:00Z";

    #[test]
    fn active_excludes_terminal_and_deleting_pods() {
        assert!(is_pod_active(&pod(P::default())));
        assert!(!is_pod_active(&pod(P {
            phase: "Succeeded",
            ..P::default()
        })));
        assert!(!is_pod_active(&pod(P {
            phase: "Failed",
            ..P::default()
        })));
        let mut deleting = (*pod(P::default())).clone();
        deleting.metadata.deletion_timestamp = Some(Time(ts(NOW)));
        assert!(!is_pod_active(&deleting));
    }

    #[test]
    fn availability_needs_min_ready_seconds_strictly_elapsed() {
        let p = pod(P {
            phase: "Running",
            ready_since: Some("2024-01-01T23:59:50Z"),
            ..P::default()
        });
        assert!(is_pod_available(&p, 0, ts(NOW)));
        assert!(is_pod_available(&p, 9, ts(NOW)));
        assert!(!is_pod_available(&p, 10, ts(NOW)));
        assert!(!is_pod_available(&pod(P::default()), 0, ts(NOW)));
    }

    #[test]
    fn deletion_cost_parses_like_upstream() {
        let cost = |c: &'static str| {
            deletion_cost(&pod(P {
                cost: Some(c),
                ..P::default()
            }))
        };
        assert_eq!(cost("10"), 10);
        assert_eq!(cost("-5"), -5);
        assert_eq!(cost("0"), 0);
        assert_eq!(cost("+10"), 0);
        assert_eq!(cost("008"), 0);
        assert_eq!(cost("abc"), 0);
        assert_eq!(cost("99999999999"), 0);
        assert_eq!(deletion_cost(&pod(P::default())), 0);
    }

    #[test]
    fn scale_down_prefers_unscheduled_then_pending_then_not_ready() {
        let pods = vec![
            pod(P {
                name: "running-ready",
                node: Some("n1"),
                phase: "Running",
                ready_since: Some("2024-01-01T00:00:00Z"),
                ..P::default()
            }),
            pod(P {
                name: "running-unready",
                node: Some("n1"),
                phase: "Running",
                ..P::default()
            }),
            pod(P {
                name: "unknown",
                node: Some("n1"),
                phase: "Unknown",
                ..P::default()
            }),
            pod(P {
                name: "pending-scheduled",
                node: Some("n1"),
                ..P::default()
            }),
            pod(P {
                name: "unscheduled",
                ..P::default()
            }),
        ];
        let order = pods_to_delete(&pods, &pods, 4, ts(NOW));
        assert_eq!(
            names(&order),
            [
                "unscheduled",
                "pending-scheduled",
                "unknown",
                "running-unready"
            ]
        );
    }

    #[test]
    fn deletion_cost_then_crowded_nodes_then_ready_time() {
        let ready = |name, node, since, cost| {
            pod(P {
                name,
                node: Some(node),
                phase: "Running",
                ready_since: Some(since),
                cost,
                ..P::default()
            })
        };
        let pods = vec![
            ready("cheap", "n1", "2024-01-01T00:00:00Z", Some("-1")),
            ready("alone-old", "n2", "2023-01-01T00:00:00Z", None),
            ready("crowded", "n3", "2023-01-01T00:00:00Z", None),
            ready("expensive", "n3", "2024-01-01T23:59:59Z", Some("100")),
            ready("young", "n4", "2024-01-01T23:59:00Z", None),
        ];
        // A sibling ReplicaSet's pod makes n3 the most crowded node.
        let mut related = pods.clone();
        related.push(ready("sibling", "n3", "2023-01-01T00:00:00Z", None));
        let order = pods_to_delete(&pods, &related, 4, ts(NOW));
        assert_eq!(names(&order), ["cheap", "crowded", "young", "alone-old"]);
    }

    #[test]
    fn restarts_then_newer_first() {
        let pods = vec![
            pod(P {
                name: "old",
                created: "2023-01-01T00:00:00Z",
                ..P::default()
            }),
            pod(P {
                name: "new",
                created: "2024-01-01T23:00:00Z",
                ..P::default()
            }),
            pod(P {
                name: "restarting",
                created: "2023-01-01T00:00:00Z",
                restarts: 3,
                ..P::default()
            }),
        ];
        let order = pods_to_delete(&pods, &pods, 3 - 1, ts(NOW));
        assert_eq!(names(&order), ["restarting", "new"]);
    }

    #[test]
    fn similar_ages_tie_break_by_uid() {
        // Three and four seconds old are both in the 2^31 ns rank: the UID decides, not the
        // (slightly) younger age.
        let pods = vec![
            pod(P {
                name: "b",
                created: "2024-01-01T23:59:57Z",
                ..P::default()
            }),
            pod(P {
                name: "a",
                created: "2024-01-01T23:59:56Z",
                ..P::default()
            }),
        ];
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1, ts(NOW))), ["a"]);
        let reversed: Vec<_> = pods.iter().rev().cloned().collect();
        assert_eq!(
            names(&pods_to_delete(&reversed, &reversed, 1, ts(NOW))),
            ["a"]
        );
    }

    #[test]
    fn deleting_everything_keeps_the_given_order() {
        let pods = vec![pod(P::default()), pod(P::default())];
        assert_eq!(pods_to_delete(&pods, &pods, 5, ts(NOW)).len(), 2);
    }

    #[test]
    fn merge_sort_survives_an_inconsistent_order() {
        let sorted = merge_sort((0..50).collect::<Vec<i32>>(), &|a, b| (a + b) % 3 == 0);
        assert_eq!(sorted.len(), 50);
        assert_eq!(merge_sort(vec![3, 1, 2], &|a, b| a < b), [1, 2, 3]);
    }
}
