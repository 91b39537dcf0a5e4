//! The Deployment controller (upstream pkg/controller/deployment): rolls each Deployment out
//! through ReplicaSets named `<deployment>-<pod-template-hash>`, one per pod template.
//!
//! * `mod.rs` (here): [`run`] wires three watches into one queue of Deployment keys and runs
//!   at most [`CONCURRENT_SYNCS`] syncs at a time, one per Deployment (kube-runtime's applier).
//!   The watch callbacks only enqueue: a Deployment when it changes, the owner of a ReplicaSet
//!   that changes (or, for an orphan, every Deployment whose selector matches it), and a
//!   Recreate Deployment when one of its pods is deleted.
//! * `sync`: one sync from current state (upstream `syncDeployment`): claim ReplicaSets, then
//!   either only scale (paused, or `spec.replicas` changed mid-rollout: proportional scaling)
//!   or roll out; also finding/creating the new ReplicaSet with its revision, cleaning up old
//!   ReplicaSets beyond `revisionHistoryLimit`, and writing the status.
//! * `rolling`, `recreate`: the two strategies.
//! * `claim`: adopting matching orphan ReplicaSets and releasing ones that stopped matching
//!   (upstream `ClaimReplicaSets`).
//! * `progress`: the status and its Available/Progressing conditions, the progress deadline.
//! * `replica_sets`, `annotations`, `fenceposts`, `pod_template_hash`: the pure rules — counts
//!   and orderings, revision and replicas annotations, maxSurge/maxUnavailable, the hash.
//!
//! A sync that finds the rollout stuck asks to be run again when its progress deadline
//! passes, so ProgressDeadlineExceeded appears on time without any event.

mod annotations;
mod claim;
mod fenceposts;
mod pod_template_hash;
mod progress;
mod recreate;
mod replica_sets;
mod rolling;
mod sync;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::Api;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Context;
use crate::error_chain;
use crate::events::EventRecorder;

pub use fenceposts::FencepostError;

/// The component upstream records events and conditions as.
pub const COMPONENT: &str = "deployment-controller";

/// Deployments synced at once (upstream `--concurrent-deployment-syncs`, 5).
pub const CONCURRENT_SYNCS: u16 = 5;

/// client-go's per-item exponential failure backoff: 5 ms doubling up to 1000 s.
const BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1000);

/// Errors of one sync. All are retryable: the Deployment is requeued with backoff and the next
/// sync starts again from current state (a 409 Conflict, the usual one, just means the cache
/// was behind). [`DeploymentError::InvalidSelector`], [`DeploymentError::UnknownStrategy`] and
/// [`DeploymentError::InvalidFencepost`] only go away when the spec is fixed.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("deployment {deployment} has an invalid label selector (fix spec.selector)")]
    InvalidSelector {
        deployment: String,
        #[source]
        source: api::selectors::SelectorError,
    },
    #[error(
        "deployment {deployment}: strategy type {strategy:?} isn't supported (use RollingUpdate or Recreate)"
    )]
    UnknownStrategy {
        deployment: String,
        strategy: String,
    },
    #[error("deployment {deployment}: invalid spec.strategy.rollingUpdate")]
    InvalidFencepost {
        deployment: String,
        #[source]
        source: FencepostError,
    },
    #[error("re-reading deployment {deployment} before adopting ReplicaSets")]
    RecheckDeployment {
        deployment: String,
        #[source]
        source: kube::Error,
    },
    /// Upstream's `RecheckDeletionTimestamp` wording.
    #[error("original Deployment {deployment} is gone: got uid {got}, wanted {wanted}")]
    DeploymentReplaced {
        deployment: String,
        got: String,
        wanted: String,
    },
    #[error("{deployment} has just been deleted at {at}")]
    DeploymentDeleted { deployment: String, at: String },
    #[error("adopting ReplicaSet {replica_set} into deployment {deployment}")]
    AdoptReplicaSet {
        deployment: String,
        replica_set: String,
        #[source]
        source: kube::Error,
    },
    #[error("releasing ReplicaSet {replica_set} from deployment {deployment}")]
    ReleaseReplicaSet {
        deployment: String,
        replica_set: String,
        #[source]
        source: kube::Error,
    },
    #[error("deployment {deployment}: creating new ReplicaSet {replica_set}")]
    CreateReplicaSet {
        deployment: String,
        replica_set: String,
        #[source]
        source: kube::Error,
    },
    /// A ReplicaSet of the new name exists with another template or owner: the next sync tries
    /// the name `collisionCount` now gives.
    #[error(
        "deployment {deployment}: ReplicaSet {replica_set} exists but is not this Deployment's; collisionCount raised to {collision_count}"
    )]
    HashCollision {
        deployment: String,
        replica_set: String,
        collision_count: i32,
    },
    #[error("deployment {deployment}: reading ReplicaSet {replica_set} after a name clash")]
    GetReplicaSet {
        deployment: String,
        replica_set: String,
        #[source]
        source: kube::Error,
    },
    #[error("deployment {deployment}: updating ReplicaSet {replica_set}")]
    UpdateReplicaSet {
        deployment: String,
        replica_set: String,
        #[source]
        source: kube::Error,
    },
    /// Upstream's guard when a stale ReplicaSet status would make a scale-down grow it.
    #[error(
        "deployment {deployment}: invalid request to scale down ReplicaSet {replica_set} {from} -> {to}"
    )]
    InvalidScaleDown {
        deployment: String,
        replica_set: String,
        from: i32,
        to: i32,
    },
    #[error("deployment {deployment}: deleting old ReplicaSet {replica_set}")]
    DeleteReplicaSet {
        deployment: String,
        replica_set: String,
        #[source]
        source: kube::Error,
    },
    #[error("deployment {deployment}: listing pods for the Recreate strategy")]
    ListPods {
        deployment: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the revision annotation of deployment {deployment}")]
    UpdateDeployment {
        deployment: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of deployment {deployment}")]
    UpdateStatus {
        deployment: String,
        #[source]
        source: kube::Error,
    },
}

impl DeploymentError {
    /// The Deployment itself vanished while the sync wrote it: nothing is left to do.
    fn deployment_gone(&self) -> bool {
        match self {
            DeploymentError::UpdateDeployment { source, .. }
            | DeploymentError::UpdateStatus { source, .. }
            | DeploymentError::RecheckDeployment { source, .. } => is_not_found(source),
            _ => false,
        }
    }
}

pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.is_not_found())
}

/// The message of an API error as the server wrote it (what upstream's `err.Error()` shows).
pub(crate) fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// `namespace/name`, upstream's cache key.
pub(crate) fn object_key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The owner reference with `controller: true`, if any (upstream `GetControllerOf`).
pub(crate) fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Runs the Deployment controller until `cancel` (or `ctx.shutdown`) is cancelled; syncs in
/// flight finish first. Failed syncs are retried with backoff and watches restart by
/// themselves, so the result is `Ok(())` once stopped.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), DeploymentError> {
    let stop = ctx.shutdown.child_token();
    let forward_cancel = {
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = cancel.cancelled() => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        }
    };
    let deployment_writer: Writer<Deployment> = Writer::new(());
    let rs_writer: Writer<ReplicaSet> = Writer::new(());
    let (queue, queued) = unbounded();
    let controller = Arc::new(DeploymentController {
        client: ctx.client.clone(),
        recorder: EventRecorder::new(ctx.client.clone(), COMPONENT, ctx.config.identity.clone()),
        deployments: deployment_writer.as_reader(),
        replica_sets: rs_writer.as_reader(),
        queue,
        failures: Mutex::default(),
    });
    info!("deployment controller started");

    let deployment_informer = {
        let c = controller.clone();
        run_informer(
            Api::<Deployment>::all(ctx.client.clone()),
            deployment_writer,
            stop.clone(),
            move |change| c.deployment_changed(change),
        )
    };
    let rs_informer = {
        let c = controller.clone();
        run_informer(
            Api::<ReplicaSet>::all(ctx.client.clone()),
            rs_writer,
            stop.clone(),
            move |change| c.replica_set_changed(change),
        )
    };
    let pod_informer = {
        let c = controller.clone();
        run_pod_watch(
            Api::<Pod>::all(ctx.client.clone()),
            stop.clone(),
            move |change| c.pod_changed(change),
        )
    };

    let syncs = {
        let controller = controller.clone();
        let stop = stop.clone();
        async move {
            // Upstream `WaitForNamedCacheSync`: no sync works from a partial cache.
            tokio::select! {
                _ = stop.cancelled() => return,
                ready = async {
                    futures::try_join!(
                        controller.deployments.wait_until_ready(),
                        controller.replica_sets.wait_until_ready(),
                    )
                } => if ready.is_err() { return },
            }
            let queue = queued
                .map(Ok::<_, Infallible>)
                .take_until(stop.clone().cancelled_owned());
            controller::applier(
                |deployment, c: Arc<DeploymentController>| {
                    Box::pin(async move { c.reconcile(&deployment).await })
                },
                |deployment, error, c: Arc<DeploymentController>| {
                    c.error_policy(&deployment, error)
                },
                controller.clone(),
                controller.deployments.clone(),
                queue,
                controller::Config::default().concurrency(CONCURRENT_SYNCS),
            )
            .for_each(|result| async move {
                match result {
                    Ok((deployment, action)) => debug!(%deployment, ?action, "synced"),
                    Err(controller::Error::ReconcilerFailed(e, deployment)) => {
                        warn!(%deployment, error = %error_chain(&e), "sync failed; will retry")
                    }
                    Err(controller::Error::ObjectNotFound(deployment)) => {
                        debug!(%deployment, "deployment gone before its sync")
                    }
                    Err(e) => warn!(error = %error_chain(&e), "deployment controller"),
                }
            })
            .await;
        }
    };
    futures::join!(
        forward_cancel,
        deployment_informer,
        rs_informer,
        pod_informer,
        syncs
    );
    info!("deployment controller stopped");
    Ok(())
}

/// What a watch saw, for the callbacks.
enum Change<'a, K> {
    /// Added or modified; `old` is what the cache held before.
    Applied {
        old: Option<Arc<K>>,
        cur: &'a K,
    },
    Deleted(&'a K),
    /// A (re)list finished: deletions during a watch gap are not reported one by one.
    Relisted,
}

/// Watches `api` into `writer` until `cancel`, calling `on_change` after each change is in
/// the cache. Watch errors are retried with kube-runtime's default backoff.
async fn run_informer<K>(
    api: Api<K>,
    mut writer: Writer<K>,
    cancel: CancellationToken,
    on_change: impl Fn(Change<'_, K>),
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let reader: Store<K> = writer.as_reader();
    let stream = watcher(api, watcher::Config::default()).modify(crate::without_managed_fields).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = stream.next() => event,
        };
        let event = match event {
            None => return,
            Some(Err(e)) => {
                warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                continue;
            }
            Some(Ok(event)) => event,
        };
        let old = match &event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                reader.get(&ObjectRef::from_obj(o))
            }
            _ => None,
        };
        writer.apply_watcher_event(&event);
        match &event {
            watcher::Event::Apply(cur) | watcher::Event::InitApply(cur) => {
                on_change(Change::Applied { old, cur })
            }
            watcher::Event::Delete(gone) => on_change(Change::Deleted(gone)),
            watcher::Event::InitDone => on_change(Change::Relisted),
            watcher::Event::Init => {}
        }
    }
}

/// Watches pods without caching them: only deletions matter (a Recreate rollout waits for the
/// old pods to be gone and then lists them afresh).
async fn run_pod_watch(
    api: Api<Pod>,
    cancel: CancellationToken,
    on_change: impl Fn(Change<'_, Pod>),
) {
    let stream = watcher(api, watcher::Config::default()).modify(crate::without_managed_fields).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = stream.next() => event,
        };
        match event {
            None => return,
            Some(Err(e)) => warn!(error = %e, "pod watch failed; retrying"),
            Some(Ok(watcher::Event::Delete(pod))) => on_change(Change::Deleted(&pod)),
            Some(Ok(watcher::Event::InitDone)) => on_change(Change::Relisted),
            Some(Ok(_)) => {}
        }
    }
}

/// The controller's shared state; see the module documentation.
pub(crate) struct DeploymentController {
    client: kube::Client,
    recorder: EventRecorder,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    queue: UnboundedSender<ObjectRef<Deployment>>,
    /// Consecutive failures per Deployment key, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl DeploymentController {
    fn enqueue(&self, deployment: &Deployment) {
        // Only fails once the applier has stopped, when nothing needs syncing any more.
        let _ = self.queue.unbounded_send(ObjectRef::from_obj(deployment));
    }

    fn enqueue_all(&self) {
        for d in self.deployments.state() {
            self.enqueue(&d);
        }
    }

    /// Upstream `resolveControllerRef`: the Deployment a controllerRef names, if it is one
    /// and still the same object (same UID).
    fn resolve_controller_ref(
        &self,
        namespace: &str,
        reference: &OwnerReference,
    ) -> Option<Arc<Deployment>> {
        if reference.kind != "Deployment" {
            return None;
        }
        let d = self
            .deployments
            .get(&ObjectRef::new(&reference.name).within(namespace))?;
        (d.metadata.uid.as_deref() == Some(reference.uid.as_str())).then_some(d)
    }

    /// Upstream `getDeploymentsForReplicaSet`: the Deployments in the ReplicaSet's namespace
    /// whose (non-empty) selector matches its labels.
    fn deployments_selecting(&self, rs: &ReplicaSet) -> Vec<Arc<Deployment>> {
        let Some(labels) = rs.metadata.labels.as_ref().filter(|l| !l.is_empty()) else {
            return Vec::new();
        };
        let namespace = rs.metadata.namespace.as_deref();
        self.deployments
            .state()
            .into_iter()
            .filter(|d| d.metadata.namespace.as_deref() == namespace)
            .filter(|d| sync::selector_of(d).is_ok_and(|s| !s.is_empty() && s.matches(labels)))
            .collect()
    }

    fn deployment_changed(&self, change: Change<'_, Deployment>) {
        match change {
            Change::Applied { cur, .. } => self.enqueue(cur),
            // The sync would only find it gone; its ReplicaSets are the garbage collector's.
            Change::Deleted(_) => {}
            Change::Relisted => self.enqueue_all(),
        }
    }

    /// Upstream `addReplicaSet`/`updateReplicaSet`/`deleteReplicaSet`.
    fn replica_set_changed(&self, change: Change<'_, ReplicaSet>) {
        match change {
            Change::Applied { old, cur } => {
                let namespace = cur.metadata.namespace.as_deref().unwrap_or_default();
                let cur_ref = controller_ref(&cur.metadata);
                let old_ref = old.as_deref().and_then(|o| controller_ref(&o.metadata));
                let ref_changed = cur_ref.map(|r| &r.uid) != old_ref.map(|r| &r.uid);
                if ref_changed && let Some(old_ref) = old_ref {
                    // The old owner lost it.
                    if let Some(d) = self.resolve_controller_ref(namespace, old_ref) {
                        self.enqueue(&d);
                    }
                }
                if let Some(cur_ref) = cur_ref {
                    if let Some(d) = self.resolve_controller_ref(namespace, cur_ref) {
                        self.enqueue(&d);
                    }
                    return;
                }
                // An orphan: wake every Deployment that could adopt it, on add or when its
                // labels or owner changed.
                let labels_changed = old
                    .as_deref()
                    .is_none_or(|o| o.metadata.labels != cur.metadata.labels);
                if labels_changed || ref_changed {
                    for d in self.deployments_selecting(cur) {
                        self.enqueue(&d);
                    }
                }
            }
            Change::Deleted(rs) => {
                let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
                if let Some(d) = controller_ref(&rs.metadata)
                    .and_then(|r| self.resolve_controller_ref(namespace, r))
                {
                    self.enqueue(&d);
                }
            }
            Change::Relisted => self.enqueue_all(),
        }
    }

    /// Upstream `deletePod`: a Recreate rollout waits for its old pods to be gone.
    fn pod_changed(&self, change: Change<'_, Pod>) {
        match change {
            Change::Deleted(pod) => {
                let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
                let Some(rs_ref) = controller_ref(&pod.metadata).filter(|r| r.kind == "ReplicaSet")
                else {
                    return;
                };
                let Some(rs) = self
                    .replica_sets
                    .get(&ObjectRef::new(&rs_ref.name).within(namespace))
                    .filter(|rs| rs.metadata.uid.as_deref() == Some(rs_ref.uid.as_str()))
                else {
                    return;
                };
                if let Some(d) = controller_ref(&rs.metadata)
                    .and_then(|r| self.resolve_controller_ref(namespace, r))
                    .filter(|d| !fenceposts::is_rolling_update(d))
                {
                    self.enqueue(&d);
                }
            }
            Change::Relisted => {
                for d in self.deployments.state() {
                    if !fenceposts::is_rolling_update(&d) {
                        self.enqueue(&d);
                    }
                }
            }
            Change::Applied { .. } => {}
        }
    }

    async fn reconcile(&self, d: &Deployment) -> Result<Action, DeploymentError> {
        let key = object_key(&d.metadata);
        match self.sync_deployment(d).await {
            Ok(requeue) => {
                self.forget_failures(&key);
                Ok(requeue.map_or_else(Action::await_change, Action::requeue))
            }
            Err(e) if e.deployment_gone() => {
                self.forget_failures(&key);
                Ok(Action::await_change())
            }
            Err(e) => Err(e),
        }
    }

    fn error_policy(&self, d: &Deployment, error: &DeploymentError) -> Action {
        let key = object_key(&d.metadata);
        let failures = {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let n = failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        debug!(deployment = %key, failures, error = %error_chain(error), "backing off");
        Action::requeue(failure_backoff(failures))
    }

    fn forget_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// The wait after the `failures`-th consecutive failure: 5 ms, 10 ms, 20 ms … capped at 1000 s.
fn failure_backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        assert_eq!(failure_backoff(1), Duration::from_millis(5));
        assert_eq!(failure_backoff(4), Duration::from_millis(40));
        assert_eq!(failure_backoff(u32::MAX), BACKOFF_MAX);
    }
}
