//! NodeResourcesFit and NodeResourcesBalancedAllocation.
//!
//! Fit compares the pod's effective requests with the node's allocatable minus what placed
//! (and assumed, and higher-priority nominated) pods request. A request larger than the whole
//! node is UnschedulableAndUnresolvable, as upstream, so preemption does not try it.
//! LeastAllocated favours emptier nodes using best-effort defaults (100m / 200Mi) for
//! containers without requests; BalancedAllocation favours nodes whose cpu and memory usage
//! fractions stay close.

use super::{Code, MAX_NODE_SCORE, Nominated, Plugin, Status};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;

pub fn filter(pod: &PodInfo, node: &NodeInfo, nominated: Option<&Nominated>) -> Option<Status> {
    let mut reasons: Vec<std::borrow::Cow<'static, str>> = Vec::new();
    let mut unresolvable = false;
    let (extra, extra_pods) = match nominated {
        Some(n) => (Some(&n.requests), n.pods),
        None => (None, 0),
    };
    let alloc = &node.allocatable;
    if (node.pods.len() + extra_pods + 1) as i64 > alloc.allowed_pods {
        reasons.push("Too many pods".into());
    }
    let r = &pod.requests;
    if r.is_zero() {
        return (!reasons.is_empty()).then_some(Status {
            code: Code::Unschedulable,
            plugin: Plugin::NodeResourcesFit,
            reasons,
        });
    }
    let used = |f: fn(&crate::resources::Resource) -> i64| f(&node.requested) + extra.map_or(0, f);
    let mut check =
        |want: i64, allocatable: i64, in_use: i64, reason: std::borrow::Cow<'static, str>| {
            if want > 0 && want > allocatable - in_use {
                unresolvable |= want > allocatable;
                reasons.push(reason);
            }
        };
    check(
        r.milli_cpu,
        alloc.milli_cpu,
        used(|x| x.milli_cpu),
        "Insufficient cpu".into(),
    );
    check(
        r.memory,
        alloc.memory,
        used(|x| x.memory),
        "Insufficient memory".into(),
    );
    check(
        r.ephemeral_storage,
        alloc.ephemeral_storage,
        used(|x| x.ephemeral_storage),
        "Insufficient ephemeral-storage".into(),
    );
    for (name, want) in &r.scalar {
        let in_use = node.requested.scalar(name) + extra.map_or(0, |e| e.scalar(name));
        check(
            *want,
            alloc.scalar(name),
            in_use,
            format!("Insufficient {name}").into(),
        );
    }
    if reasons.is_empty() {
        return None;
    }
    let code = if unresolvable {
        Code::UnschedulableAndUnresolvable
    } else {
        Code::Unschedulable
    };
    Some(Status {
        code,
        plugin: Plugin::NodeResourcesFit,
        reasons,
    })
}

/// `(capacity - requested) * 100 / capacity`, 0 when over capacity or nothing allocatable.
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// LeastAllocated over cpu and memory, weight 1 each.
pub fn least_allocated_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let cpu = least_requested(
        node.non_zero_cpu + pod.non_zero_cpu,
        node.allocatable.milli_cpu,
    );
    let mem = least_requested(
        node.non_zero_memory + pod.non_zero_memory,
        node.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// Best-effort pods skip BalancedAllocation (upstream issue 129138: otherwise they pile onto
/// one node).
pub fn balanced_applies(pod: &PodInfo) -> bool {
    pod.requests.milli_cpu != 0 || pod.requests.memory != 0
}

/// `(1 - std(cpu fraction, memory fraction)) * 100`, using actual requests.
pub fn balanced_allocation_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let fraction = |req: i64, cap: i64| -> f64 {
        if cap <= 0 {
            return 1.0;
        }
        (req as f64 / cap as f64).min(1.0)
    };
    let cpu = fraction(
        node.requested.milli_cpu + pod.requests.milli_cpu,
        node.allocatable.milli_cpu,
    );
    let mem = fraction(
        node.requested.memory + pod.requests.memory,
        node.allocatable.memory,
    );
    // For two resources the standard deviation is half the difference.
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resource;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(cpu: &str, mem: &str) -> PodInfo {
        PodInfo::new(
            Arc::new(
                serde_json::from_value(
                    json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [
                        {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}
                    ]}}),
                )
                .expect("pod"),
            ),
            0,
        )
    }

    fn node(cpu_m: i64, mem: i64, pods: i64) -> NodeInfo {
        NodeInfo {
            name: "n".into(),
            allocatable: Resource {
                milli_cpu: cpu_m,
                memory: mem,
                allowed_pods: pods,
                ..Resource::default()
            },
            ..NodeInfo::default()
        }
    }

    #[test]
    fn insufficient_cpu_is_unresolvable_only_beyond_the_node() {
        let mut n = node(2000, 1 << 30, 110);
        let s = filter(&pod("3", "1Mi"), &n, None).expect("too big");
        assert_eq!(s.reasons, vec!["Insufficient cpu"]);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        n.add_pod(Arc::new(pod("1500m", "1Mi")));
        let s = filter(&pod("1", "1Mi"), &n, None).expect("full");
        assert_eq!(s.code, Code::Unschedulable);
        assert!(filter(&pod("500m", "1Mi"), &n, None).is_none());
        let s = filter(&pod("1", "2Gi"), &n, None).expect("both");
        assert_eq!(s.reasons, vec!["Insufficient cpu", "Insufficient memory"]);
    }

    #[test]
    fn too_many_pods_and_nominated_load() {
        let mut n = node(2000, 1 << 30, 1);
        n.add_pod(Arc::new(pod("1m", "1Mi")));
        assert_eq!(
            filter(&pod("1m", "1Mi"), &n, None).expect("full").reasons,
            vec!["Too many pods"]
        );
        let n = node(2000, 1 << 30, 10);
        let nominated = Nominated {
            requests: Resource {
                milli_cpu: 1800,
                ..Resource::default()
            },
            pods: 1,
            ports: vec![],
        };
        assert!(filter(&pod("500m", "1Mi"), &n, Some(&nominated)).is_some());
    }

    #[test]
    fn scores_match_upstream_arithmetic() {
        let n = node(4000, 10_000, 110);
        // cpu (4000-1000)*100/4000 = 75; memory (10000-5000)*100/10000 = 50 → 62.
        let p = pod("1", "5000");
        assert_eq!(least_allocated_score(&p, &n), 62);
        // fractions 0.25 and 0.5 → std 0.125 → 87.
        assert_eq!(balanced_allocation_score(&p, &n), 87);
    }
}
