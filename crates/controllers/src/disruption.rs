//! The disruption controller (upstream `pkg/controller/disruption`): keeps each
//! PodDisruptionBudget's status current — how many of its pods are healthy, how many must be,
//! and so how many may be disrupted now. The eviction API (`kubectl drain`) spends
//! `disruptionsAllowed` and notes the pods it deleted in `disruptedPods`; this controller
//! counts those pods as gone until they really are (or two minutes pass, as upstream).
//!
//! Keyed by budget: a budget changing enqueues itself, a pod changing enqueues every budget.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Context, error_chain};

/// How long a pod the eviction API deleted counts as disrupted without being seen to go
/// (upstream `DeletionTimeout`).
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a budget's status could not be computed or written. Retryable.
#[derive(Debug, thiserror::Error)]
pub enum DisruptionError {
    #[error("updating the status of PodDisruptionBudget {namespace}/{name}")]
    Patch {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading the scale of {kind} {namespace}/{name}")]
    Scale {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    client: kube::Client,
    pods: Store<Pod>,
}

/// Runs until `cancel` or `ctx.shutdown`.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), DisruptionError> {
    let budgets: Api<PodDisruptionBudget> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let (pod_store, pod_writer) = kube::runtime::reflector::store();
    let pod_events =
        kube::runtime::reflector(pod_writer, watcher(pods, watcher::Config::default()).modify(crate::without_managed_fields));
    let controller = Controller::new(budgets, watcher::Config::default());
    let state = Arc::new(State {
        client: ctx.client.clone(),
        pods: pod_store,
    });
    let stop = {
        let (cancel, shutdown) = (cancel.clone(), ctx.shutdown.clone());
        async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
        }
    };
    // A pod change may matter to any budget of its namespace; budgets are few, so every
    // one is looked at again (the queue folds repeats). Polling this stream also keeps the
    // pod store current.
    let pod_triggers = kube::runtime::WatchStreamExt::touched_objects(pod_events)
        .filter_map(|pod| async move { pod.ok().map(|_| ()) });
    info!("disruption controller started");
    controller
        .reconcile_all_on(pod_triggers)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                Err(controller::Error::ReconcilerFailed(e, object)) => {
                    warn!(budget = %object, error = %error_chain(&e), "could not update a disruption budget; will retry")
                }
                Err(e) => debug!(error = %error_chain(&e), "disruption controller"),
            }
        })
        .await;
    info!("disruption controller stopped");
    Ok(())
}

fn selects(budget: &PodDisruptionBudget, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = budget.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let Ok(json) = serde_json::to_value(selector) else {
        return false;
    };
    // policy/v1: an empty selector selects every pod of the namespace.
    api::selectors::from_label_selector_json(&json).is_ok_and(|s| s.matches(labels))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `value` of `total`: an integer, or a percentage rounded up (upstream
/// `GetScaledValueFromIntOrPercent(…, true)`).
fn scaled(value: &IntOrString, total: i32) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some(((i64::from(total) * pct + 99) / 100) as i32)
        }
    }
}

/// The replicas the pods' controllers want, each controller once (upstream `getExpectedScale`);
/// `None` if a pod has no controller whose scale is known.
async fn expected_scale(
    client: &kube::Client,
    namespace: &str,
    pods: &[Arc<Pod>],
) -> Result<Option<i32>, DisruptionError> {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for pod in pods {
        let Some(owner) = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
        else {
            return Ok(None);
        };
        if !seen.insert(owner.uid.clone()) {
            continue;
        }
        let scale_err = |kind: &'static str, name: &str| {
            let (namespace, name) = (namespace.to_string(), name.to_string());
            move |source| DisruptionError::Scale {
                kind,
                namespace,
                name,
                source,
            }
        };
        let replicas = match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                    .get_opt(&owner.name)
                    .await
                    .map_err(scale_err("ReplicaSet", &owner.name))?;
                let Some(rs) = rs else { return Ok(None) };
                // A Deployment's ReplicaSets count at the Deployment's scale.
                match rs
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                {
                    Some(d) => {
                        if !seen.insert(d.uid.clone()) {
                            continue;
                        }
                        let dep = Api::<Deployment>::namespaced(client.clone(), namespace)
                            .get_opt(&d.name)
                            .await
                            .map_err(scale_err("Deployment", &d.name))?;
                        dep.and_then(|d| d.spec.and_then(|s| s.replicas))
                            .unwrap_or(1)
                    }
                    None => rs.spec.and_then(|s| s.replicas).unwrap_or(1),
                }
            }
            "ReplicationController" => {
                Api::<ReplicationController>::namespaced(client.clone(), namespace)
                    .get_opt(&owner.name)
                    .await
                    .map_err(scale_err("ReplicationController", &owner.name))?
                    .and_then(|r| r.spec.and_then(|s| s.replicas))
                    .unwrap_or(1)
            }
            "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .get_opt(&owner.name)
                .await
                .map_err(scale_err("StatefulSet", &owner.name))?
                .and_then(|s| s.spec.and_then(|s| s.replicas))
                .unwrap_or(1),
            _ => return Ok(None),
        };
        total += replicas;
    }
    Ok(Some(total))
}

async fn reconcile(
    budget: Arc<PodDisruptionBudget>,
    state: Arc<State>,
) -> Result<Action, DisruptionError> {
    let (Some(namespace), Some(name)) = (
        budget.metadata.namespace.clone(),
        budget.metadata.name.clone(),
    ) else {
        return Ok(Action::await_change());
    };
    let spec = budget.spec.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|p| selects(&budget, &p.metadata.labels.clone().unwrap_or_default()))
        .collect();
    let now = jiff::Timestamp::now();
    // Pods the eviction API deleted: disrupted until seen gone or the timeout passes.
    let mut disrupted = BTreeMap::new();
    let mut next_expiry: Option<Duration> = None;
    for (pod, at) in budget
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
    {
        let Some(p) = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(pod.as_str()))
        else {
            continue;
        };
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let age = now.duration_since(at.0);
        let left = jiff::SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or_default() - age;
        if left.is_positive() {
            let left = Duration::try_from(left).unwrap_or_default();
            next_expiry = Some(next_expiry.map_or(left, |n| n.min(left)));
            disrupted.insert(pod, at);
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
        .count() as i32;
    let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(min)), _) => (Some(pods.len() as i32), Some(*min)),
        (Some(min), _) => match expected_scale(&state.client, &namespace, &pods).await? {
            Some(expected) => (Some(expected), scaled(min, expected)),
            None => (None, None),
        },
        (None, Some(max)) => match expected_scale(&state.client, &namespace, &pods).await? {
            Some(expected) => (
                Some(expected),
                scaled(max, expected).map(|m| (expected - m).max(0)),
            ),
            None => (None, None),
        },
        (None, None) => (Some(pods.len() as i32), Some(pods.len() as i32)),
    };
    // Unknown scale: upstream fails safe and allows no disruption.
    let (expected, desired) = (expected.unwrap_or(0), desired.unwrap_or(healthy + 1));
    let allowed = (healthy - desired).max(0);
    let old = budget.status.clone().unwrap_or_default();
    let condition_status = if allowed > 0 { "True" } else { "False" };
    let reason = if allowed > 0 {
        "SufficientPods"
    } else {
        "InsufficientPods"
    };
    let old_condition = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed")
        .cloned();
    let transition = match &old_condition {
        Some(c) if c.status == condition_status => {
            serde_json::to_value(&c.last_transition_time).unwrap_or(Value::Null)
        }
        _ => json!(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    };
    let generation = budget.metadata.generation.unwrap_or(0);
    let unchanged = old.current_healthy == healthy
        && old.desired_healthy == desired
        && old.expected_pods == expected
        && old.disruptions_allowed == allowed
        && old.observed_generation == Some(generation)
        && old.disrupted_pods.clone().unwrap_or_default() == disrupted
        && old_condition
            .as_ref()
            .is_some_and(|c| c.status == condition_status && c.reason == reason);
    if !unchanged {
        let status = json!({
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "disruptionsAllowed": allowed,
            "observedGeneration": generation,
            "disruptedPods": disrupted,
            "conditions": [{
                "type": "DisruptionAllowed",
                "status": condition_status,
                "reason": reason,
                "message": "",
                "observedGeneration": generation,
                "lastTransitionTime": transition,
            }],
        });
        // Merge patch replaces `disruptedPods` keys only; null out the ones that expired.
        let mut patch_status = status.clone();
        for pod in old.disrupted_pods.unwrap_or_default().keys() {
            if !disrupted.contains_key(pod) {
                patch_status["disruptedPods"][pod] = Value::Null;
            }
        }
        let api: Api<PodDisruptionBudget> = Api::namespaced(state.client.clone(), &namespace);
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": patch_status})),
            )
            .await
        {
            Ok(_) => {
                debug!(budget = %format!("{namespace}/{name}"), healthy, desired, allowed, "disruption budget updated")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(source) => {
                return Err(DisruptionError::Patch {
                    namespace,
                    name,
                    source,
                });
            }
        }
    }
    // Pods leaving selection by relabeling are not seen by the pod trigger: look again now and then.
    let recheck = next_expiry.map_or(Duration::from_secs(30), |e| e.min(Duration::from_secs(30)));
    Ok(Action::requeue(recheck))
}

fn error_policy(_: Arc<PodDisruptionBudget>, _: &DisruptionError, _: Arc<State>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Some(2));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 10), Some(1));
        assert_eq!(scaled(&IntOrString::Int(2), 10), Some(2));
        assert_eq!(scaled(&IntOrString::String("x".into()), 10), None);
    }
}
