//! The NoExecute taint manager (upstream `pkg/controller/tainteviction`, run by the node
//! lifecycle controller): a pod bound to a node with NoExecute taints it does not tolerate
//! is deleted at once; one that tolerates them for `tolerationSeconds` is deleted once that
//! time has passed; one that tolerates them without a limit stays.
//!
//! Upstream starts each pod's clock when its worker first sees the taint; here the clock
//! starts at the taint's `timeAdded` (the controller sets it when it taints), so a restart
//! or a new leader does not give every pod a fresh allowance. A taint without `timeAdded`
//! counts from when this process first saw it on the node.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::events::EventRecorder;

/// Upstream's `Toleration.ToleratesTaint`: an empty effect or key is a wildcard; `Exists`
/// ignores the value; `Equal` (the default) compares it.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// What the taint manager does with one pod on a NoExecute-tainted node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every taint is tolerated without a time limit.
    Stays,
    /// Some taint is not tolerated at all.
    EvictNow,
    /// Every taint is tolerated, the shortest allowance running out at this time.
    EvictAt(jiff::Timestamp),
}

/// Judges a pod's `tolerations` against a node's NoExecute `taints`; `started` gives when
/// each taint's clock started (its `timeAdded`, or when it was first seen). A non-positive
/// `tolerationSeconds` means at once, as upstream treats it.
pub fn verdict(
    taints: &[Taint],
    tolerations: &[Toleration],
    mut started: impl FnMut(&Taint) -> jiff::Timestamp,
) -> Verdict {
    let mut deadline: Option<jiff::Timestamp> = None;
    for taint in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Verdict::EvictNow;
        }
        // The strictest matching toleration decides, as upstream's getMinTolerationTime.
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let at = started(taint)
            .checked_add(jiff::SignedDuration::from_secs(seconds.max(0)))
            .unwrap_or(jiff::Timestamp::MAX);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    match deadline {
        None => Verdict::Stays,
        Some(at) => Verdict::EvictAt(at),
    }
}

/// Errors of one eviction. Retryable: the next pass tries again.
#[derive(Debug, thiserror::Error)]
pub enum EvictionError {
    #[error("deleting pod {namespace}/{name} for NoExecute taints of node {node}")]
    Delete {
        namespace: String,
        name: String,
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// The taint manager's memory between passes.
#[derive(Default)]
pub struct TaintManager {
    /// (node, taint key, value, effect) → when this process first saw a taint that carries
    /// no `timeAdded`.
    first_seen: HashMap<(String, String, String, String), jiff::Timestamp>,
    /// Pod uids with an eviction pending (for the "Cancelling deletion" event).
    scheduled: HashSet<String>,
    /// Pod uids already deleted, until the watch shows them gone or terminating.
    evicted: HashSet<String>,
}

/// Pods whose verdict this pass is to evict now, and the earliest future deadline.
pub struct Plan {
    pub evict: Vec<(Pod, String)>,
    pub cancelled: Vec<Pod>,
    pub next_deadline: Option<jiff::Timestamp>,
}

impl TaintManager {
    /// Judges every bound, live pod against its node's NoExecute taints at `now`.
    pub fn plan(
        &mut self,
        pods: &[std::sync::Arc<Pod>],
        node_taints: &HashMap<String, Vec<Taint>>,
        now: jiff::Timestamp,
    ) -> Plan {
        let mut seen_taints = HashSet::new();
        let mut live_uids = HashSet::new();
        let mut still_scheduled = HashSet::new();
        let mut plan = Plan {
            evict: Vec::new(),
            cancelled: Vec::new(),
            next_deadline: None,
        };
        for pod in pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            live_uids.insert(uid.clone());
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                continue;
            };
            let taints = node_taints.get(node).map(Vec::as_slice).unwrap_or_default();
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default();
            let started = |taint: &Taint| match &taint.time_added {
                Some(t) => t.0,
                None => {
                    let key = (
                        node.to_string(),
                        taint.key.clone(),
                        taint.value.clone().unwrap_or_default(),
                        taint.effect.clone(),
                    );
                    seen_taints.insert(key.clone());
                    *self.first_seen.entry(key).or_insert(now)
                }
            };
            let verdict = if taints.is_empty() {
                Verdict::Stays
            } else {
                verdict(taints, tolerations, started)
            };
            match verdict {
                Verdict::Stays => {
                    if self.scheduled.contains(&uid) {
                        plan.cancelled.push((**pod).clone());
                    }
                }
                Verdict::EvictAt(at) if at > now => {
                    still_scheduled.insert(uid.clone());
                    plan.next_deadline = Some(plan.next_deadline.map_or(at, |d| d.min(at)));
                }
                Verdict::EvictNow | Verdict::EvictAt(_) => {
                    if !self.evicted.contains(&uid) {
                        plan.evict.push(((**pod).clone(), node.to_string()));
                    }
                }
            }
        }
        self.first_seen.retain(|k, _| seen_taints.contains(k));
        self.evicted.retain(|uid| live_uids.contains(uid));
        self.scheduled = still_scheduled;
        plan
    }

    /// Remembers a pod as deleted so later passes do not delete it again before the watch
    /// catches up.
    pub fn mark_evicted(&mut self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.evicted.insert(uid.clone());
        }
    }

    /// Nothing pending and nothing remembered: with no NoExecute taint anywhere a pass has
    /// nothing to do.
    pub fn is_idle(&self) -> bool {
        self.scheduled.is_empty() && self.evicted.is_empty() && self.first_seen.is_empty()
    }

    pub fn is_evicted(&self, pod: &Pod) -> bool {
        pod.metadata
            .uid
            .as_ref()
            .is_some_and(|uid| self.evicted.contains(uid))
    }
}

/// Deletes one pod as upstream's taint manager does: the Event first, then the
/// `DisruptionTarget` condition (best-effort), then a delete with the pod's own grace period.
pub async fn evict(
    client: &kube::Client,
    recorder: &EventRecorder,
    pod: &Pod,
    node: &str,
) -> Result<(), EvictionError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    recorder
        .normal(
            &EventRecorder::reference(pod),
            "TaintManagerEviction",
            format!("Marking for deletion Pod {namespace}/{name}"),
        )
        .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let condition = json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    }]}});
    if let Err(e) = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(&condition),
        )
        .await
    {
        tracing::debug!(pod = %format!("{namespace}/{name}"), error = %e, "could not set the DisruptionTarget condition");
    }
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{namespace}/{name}"), %node, "evicted pod for NoExecute taints");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(EvictionError::Delete {
            namespace,
            name,
            node: node.to_string(),
            source,
        }),
    }
}

/// The wait until `at`, for the controller's timer.
pub fn until(at: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn taint(key: &str, value: Option<&str>, added: Option<jiff::Timestamp>) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(String::from),
            effect: "NoExecute".into(),
            time_added: added.map(Time),
        }
    }

    fn toleration(
        key: &str,
        op: &str,
        value: Option<&str>,
        effect: &str,
        seconds: Option<i64>,
    ) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: (!op.is_empty()).then(|| op.into()),
            value: value.map(String::from),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: seconds,
        }
    }

    #[test]
    fn toleration_matching_follows_upstream() {
        let t = taint("k", Some("v"), None);
        assert!(tolerates(
            &toleration("k", "Equal", Some("v"), "NoExecute", None),
            &t
        ));
        assert!(tolerates(&toleration("k", "", Some("v"), "", None), &t));
        assert!(!tolerates(
            &toleration("k", "Equal", Some("w"), "NoExecute", None),
            &t
        ));
        assert!(tolerates(&toleration("k", "Exists", None, "", None), &t));
        assert!(tolerates(&toleration("", "Exists", None, "", None), &t));
        assert!(!tolerates(
            &toleration("k", "Exists", None, "NoSchedule", None),
            &t
        ));
        assert!(!tolerates(
            &toleration("other", "Exists", None, "", None),
            &t
        ));
        assert!(!tolerates(
            &toleration("k", "Bogus", Some("v"), "", None),
            &t
        ));
    }

    #[test]
    fn verdicts() {
        let t0 = jiff::Timestamp::from_second(1_000_000).expect("ts");
        let unreachable = taint("node.kubernetes.io/unreachable", None, Some(t0));
        let start = |t: &Taint| t.time_added.as_ref().map(|t| t.0).unwrap_or(t0);
        assert_eq!(
            verdict(std::slice::from_ref(&unreachable), &[], start),
            Verdict::EvictNow
        );
        let forever = toleration(
            "node.kubernetes.io/unreachable",
            "Exists",
            None,
            "NoExecute",
            None,
        );
        assert_eq!(
            verdict(
                std::slice::from_ref(&unreachable),
                std::slice::from_ref(&forever),
                start
            ),
            Verdict::Stays
        );
        let five = toleration(
            "node.kubernetes.io/unreachable",
            "Exists",
            None,
            "NoExecute",
            Some(5),
        );
        assert_eq!(
            verdict(
                std::slice::from_ref(&unreachable),
                &[forever.clone(), five.clone()],
                start
            ),
            Verdict::EvictAt(t0 + jiff::SignedDuration::from_secs(5)),
            "the strictest matching toleration decides"
        );
        let negative = toleration("", "Exists", None, "", Some(-3));
        assert_eq!(
            verdict(std::slice::from_ref(&unreachable), &[negative], start),
            Verdict::EvictAt(t0)
        );
        // A second taint nobody tolerates evicts at once.
        let other = taint("dedicated", Some("x"), Some(t0));
        assert_eq!(
            verdict(&[unreachable, other], &[five], start),
            Verdict::EvictNow
        );
    }

    fn pod(uid: &str, node: &str, tolerations: Vec<Toleration>) -> std::sync::Arc<Pod> {
        std::sync::Arc::new(Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(uid.into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some(node.into()),
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn plan_schedules_evicts_once_and_cancels() {
        let now = jiff::Timestamp::from_second(2_000_000).expect("ts");
        let mut manager = TaintManager::default();
        let seconds = toleration(
            "node.kubernetes.io/unreachable",
            "Exists",
            None,
            "NoExecute",
            Some(10),
        );
        let pods = vec![
            pod("a", "n1", vec![]),
            pod("b", "n1", vec![seconds]),
            pod("c", "n2", vec![]),
        ];
        let taints = HashMap::from([(
            "n1".to_string(),
            vec![taint("node.kubernetes.io/unreachable", None, None)],
        )]);
        let plan = manager.plan(&pods, &taints, now);
        assert_eq!(
            plan.evict
                .iter()
                .map(|(p, _)| p.metadata.name.clone().unwrap_or_default())
                .collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(
            plan.next_deadline,
            Some(now + jiff::SignedDuration::from_secs(10))
        );
        manager.mark_evicted(&plan.evict[0].0);
        // The taint had no timeAdded: the clock keeps running from when it was first seen.
        let later = now + jiff::SignedDuration::from_secs(10);
        let plan = manager.plan(&pods, &taints, later);
        assert_eq!(
            plan.evict
                .iter()
                .map(|(p, _)| p.metadata.name.clone().unwrap_or_default())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
        // The taint goes away before the deadline: the pending eviction is cancelled.
        let mut manager = TaintManager::default();
        manager.plan(&pods, &taints, now);
        let plan = manager.plan(&pods, &HashMap::new(), now);
        assert_eq!(plan.cancelled.len(), 1);
        assert!(plan.evict.is_empty());
    }
}
