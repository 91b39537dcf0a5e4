//! TaintToleration: NoSchedule and NoExecute taints keep out pods that do not tolerate them;
//! PreferNoSchedule taints count against a node when scoring. Node readiness reaches the
//! scheduler this way too, as upstream: the node lifecycle controller taints NotReady nodes
//! `node.kubernetes.io/not-ready` / `unreachable`.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::{Code, Plugin, Status};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;

/// Upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    let taint = node.taints.iter().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !pod.tolerations.iter().any(|t| tolerates(t, taint))
    })?;
    Some(Status::new(
        Code::UnschedulableAndUnresolvable,
        Plugin::TaintToleration,
        format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.as_deref().unwrap_or("")
        ),
    ))
}

/// The number of PreferNoSchedule taints the pod does not tolerate (normalised in reverse).
pub fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    node.taints
        .iter()
        .filter(|taint| taint.effect == "PreferNoSchedule")
        .filter(|taint| {
            !pod.tolerations
                .iter()
                .filter(|t| {
                    t.effect
                        .as_deref()
                        .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
                })
                .any(|t| tolerates(t, taint))
        })
        .count() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: Some(key.into()).filter(|k: &String| !k.is_empty()),
            operator: Some(op.into()),
            value: Some(value.into()).filter(|v: &String| !v.is_empty()),
            effect: Some(effect.into()).filter(|e: &String| !e.is_empty()),
            ..Toleration::default()
        }
    }

    #[test]
    fn toleration_matching_follows_upstream() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &tol("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(tolerates(&tol("dedicated", "Exists", "", ""), &t));
        assert!(tolerates(&tol("", "Exists", "", ""), &t));
        assert!(!tolerates(
            &tol("dedicated", "Equal", "cpu", "NoSchedule"),
            &t
        ));
        assert!(!tolerates(
            &tol("dedicated", "Equal", "gpu", "NoExecute"),
            &t
        ));
        assert!(!tolerates(&tol("other", "Exists", "", ""), &t));
    }

    #[test]
    fn filter_names_the_first_untolerated_taint() {
        let node = NodeInfo {
            taints: vec![
                taint("soft", "x", "PreferNoSchedule"),
                taint("dedicated", "gpu", "NoSchedule"),
            ],
            ..NodeInfo::default()
        };
        let pod = PodInfo::new(std::sync::Arc::new(Default::default()), 0);
        let status = filter(&pod, &node).expect("rejected");
        assert_eq!(
            status.reasons,
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
        assert_eq!(status.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(score(&pod, &node), 1);
    }
}
