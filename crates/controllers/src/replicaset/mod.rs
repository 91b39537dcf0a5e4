//! The ReplicaSet controller (upstream pkg/controller/replicaset), serving both apps/v1
//! ReplicaSets and core/v1 ReplicationControllers: keep `spec.replicas` active pods matching
//! the selector.
//!
//! * `mod.rs` (here): [`run`] wires one pod informer shared by two cores, one per kind; the
//!   informer callbacks (upstream `addPod`/`updatePod`/`deletePod`, `addRS`/`updateRS`/
//!   `deleteRS`) only update the expectations and enqueue owner keys into kube-runtime's
//!   applier, which runs at most one sync per owner at a time.
//! * `kind`: [`ReplicaOwner`], the adapter each kind implements (upstream converts RCs to
//!   ReplicaSets and runs the same code; here the core is generic over the adapter).
//! * `informers`: the pod cache and the watches with add/update/delete callbacks.
//! * `expectations`: creations/deletions a sync still waits to see through the watch, so a
//!   sync never acts on a cache that does not yet show its own earlier writes.
//! * `sync`: one sync from current state — claim pods (adopt matching orphans, release pods
//!   that stopped matching), create missing pods in slow-start batches or delete the surplus,
//!   then write the status if it changed.
//! * `active_pods`: which pods count (active, ready, available) and the order a scale-down
//!   deletes them in.
//!
//! Deleting an owner is left to the garbage collector: a sync of an owner with a
//! deletionTimestamp creates and deletes nothing, adopts nothing and releases nothing.

mod active_pods;
mod expectations;
mod informers;
mod kind;
mod sync;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Context;
use crate::error_chain;
use crate::events::EventRecorder;

pub use active_pods::POD_DELETION_COST;
pub use kind::ReplicaOwner;

use expectations::Expectations;
use informers::{OwnerEventHandler, PodCache, PodEventHandler};

/// Upstream `BurstReplicas`: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 500;

/// Owners synced at once per kind (upstream `--concurrent-replicaset-syncs` and
/// `--concurrent-rc-syncs`, both 5).
const CONCURRENT_SYNCS: u16 = 5;

/// Upstream `SlowStartInitialBatchSize`.
const SLOW_START_INITIAL_BATCH_SIZE: usize = 1;

/// client-go's per-item exponential failure backoff: 5 ms doubling up to 1000 s.
const BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1000);

/// Errors of one sync. All are retryable: the owner is requeued with backoff and the next
/// sync starts again from current state.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("re-reading {kind} {owner} before adopting pods")]
    RecheckOwner {
        kind: &'static str,
        owner: String,
        #[source]
        source: kube::Error,
    },
    /// Upstream's `RecheckDeletionTimestamp` wording.
    #[error("original {kind} {owner} is gone: got uid {got}, wanted {wanted}")]
    OwnerReplaced {
        kind: &'static str,
        owner: String,
        got: String,
        wanted: String,
    },
    #[error("{owner} has just been deleted at {at}")]
    OwnerDeleted { owner: String, at: String },
    #[error("adopting pod {pod} into {kind} {owner}")]
    AdoptPod {
        kind: &'static str,
        owner: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("releasing pod {pod} from {kind} {owner}")]
    ReleasePod {
        kind: &'static str,
        owner: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("claiming pods for {kind} {owner}: {failed} pod(s) could not be adopted or released")]
    ClaimPods {
        kind: &'static str,
        owner: String,
        failed: usize,
        #[source]
        first: Box<ReplicaSetError>,
    },
    /// Upstream refuses to create pods without labels: they could never be matched back.
    #[error("{kind} {owner}: unable to create pods, no labels (set spec.template.metadata.labels)")]
    NoLabels { kind: &'static str, owner: String },
    #[error("creating a pod for {kind} {owner}")]
    CreatePod {
        kind: &'static str,
        owner: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting pod {pod} of {kind} {owner}")]
    DeletePod {
        kind: &'static str,
        owner: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of {kind} {owner}")]
    UpdateStatus {
        kind: &'static str,
        owner: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs the controller for ReplicaSets and ReplicationControllers until `cancel` (or
/// `ctx.shutdown`) is cancelled; syncs in flight finish first. Failed syncs are retried with
/// backoff and watches restart by themselves, so the result is `Ok(())` once stopped.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), ReplicaSetError> {
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
    let pods = Arc::new(PodCache::default());
    let (replica_sets, rs_writer, rs_queue) =
        ReplicaSetController::<ReplicaSet>::new(&ctx, pods.clone());
    let (replication_controllers, rc_writer, rc_queue) =
        ReplicaSetController::<ReplicationController>::new(&ctx, pods.clone());
    let handlers: Vec<Arc<dyn PodEventHandler>> =
        vec![replica_sets.clone(), replication_controllers.clone()];
    info!("replicaset controller started");
    futures::join!(
        forward_cancel,
        informers::run_pod_informer(Api::all(ctx.client.clone()), pods, handlers, stop.clone()),
        run_kind(replica_sets, rs_writer, rs_queue, stop.clone()),
        run_kind(replication_controllers, rc_writer, rc_queue, stop.clone()),
    );
    info!("replicaset controller stopped");
    Ok(())
}

/// Runs the owner watch and the applier of one kind until `stop`.
async fn run_kind<K: ReplicaOwner>(
    core: Arc<ReplicaSetController<K>>,
    writer: Writer<K>,
    queue: UnboundedReceiver<ObjectRef<K>>,
    stop: CancellationToken,
) {
    let informer = informers::run_owner_informer(
        Api::<K>::all(core.client.clone()),
        writer,
        core.clone(),
        stop.clone(),
    );
    let queue = queue
        .map(Ok::<_, Infallible>)
        .take_until(stop.clone().cancelled_owned());
    let syncs = controller::applier(
        |owner, core: Arc<ReplicaSetController<K>>| {
            Box::pin(async move { core.sync(&owner).await })
        },
        |owner, error, core: Arc<ReplicaSetController<K>>| core.error_policy(&owner, error),
        core.clone(),
        core.owners.clone(),
        queue,
        controller::Config::default().concurrency(CONCURRENT_SYNCS),
    )
    .for_each(|result| async move {
        match result {
            Ok((owner, action)) => debug!(kind = %K::kind(&()), %owner, ?action, "synced"),
            Err(controller::Error::ReconcilerFailed(e, owner)) => {
                warn!(kind = %K::kind(&()), %owner, error = %error_chain(&e), "sync failed; will retry")
            }
            // An owner deleted after it was queued: nothing to do.
            Err(controller::Error::ObjectNotFound(owner)) => {
                debug!(kind = %K::kind(&()), %owner, "owner gone before its sync")
            }
            Err(e) => warn!(kind = %K::kind(&()), error = %error_chain(&e), "replicaset controller"),
        }
    });
    futures::join!(informer, syncs);
}

/// The controller for one owner kind (upstream `ReplicaSetController`, instantiated for
/// ReplicaSets and, through conversion, ReplicationControllers).
pub(crate) struct ReplicaSetController<K: ReplicaOwner> {
    client: kube::Client,
    recorder: EventRecorder,
    expectations: Expectations,
    owners: Store<K>,
    pods: Arc<PodCache>,
    queue: UnboundedSender<ObjectRef<K>>,
    burst_replicas: usize,
    /// Consecutive failures per owner key, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// `namespace/name`, upstream's cache key.
fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The owner reference with `controller: true`, if any (upstream `GetControllerOf`).
fn controller_ref(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

fn labels_of(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

impl<K: ReplicaOwner> ReplicaSetController<K> {
    fn new(
        ctx: &Context,
        pods: Arc<PodCache>,
    ) -> (Arc<Self>, Writer<K>, UnboundedReceiver<ObjectRef<K>>) {
        let writer = Writer::new(());
        let (queue, queued) = unbounded();
        let core = Arc::new(Self {
            client: ctx.client.clone(),
            recorder: EventRecorder::new(
                ctx.client.clone(),
                K::COMPONENT,
                ctx.config.identity.clone(),
            ),
            expectations: Expectations::default(),
            owners: writer.as_reader(),
            pods,
            queue,
            burst_replicas: BURST_REPLICAS,
            failures: Mutex::default(),
        });
        (core, writer, queued)
    }

    fn enqueue(&self, owner: &K) {
        // Only fails once the applier has stopped, when nothing needs syncing any more.
        let _ = self.queue.unbounded_send(ObjectRef::from_obj(owner));
    }

    /// Upstream `resolveControllerRef`: the owner a controllerRef names, if it is of this
    /// kind and still the same object (same UID).
    fn resolve_controller_ref(
        &self,
        namespace: &str,
        reference: &OwnerReference,
    ) -> Option<Arc<K>> {
        if reference.kind != K::kind(&()) {
            return None;
        }
        let owner = self
            .owners
            .get(&ObjectRef::new(&reference.name).within(namespace))?;
        (owner.meta().uid.as_deref() == Some(reference.uid.as_str())).then_some(owner)
    }

    /// Upstream `GetPodReplicaSets`: the owners in the pod's namespace whose (non-empty)
    /// selector matches the pod's labels; pods without labels match none.
    fn owners_selecting(&self, pod: &Pod) -> Vec<Arc<K>> {
        let labels = labels_of(pod);
        if labels.is_empty() {
            return Vec::new();
        }
        let namespace = pod.metadata.namespace.as_deref();
        self.owners
            .state()
            .into_iter()
            .filter(|owner| owner.meta().namespace.as_deref() == namespace)
            .filter(|owner| {
                owner
                    .selector()
                    .is_ok_and(|s| !s.is_empty() && s.matches(labels))
            })
            .collect()
    }

    fn error_policy(&self, owner: &K, error: &ReplicaSetError) -> Action {
        let key = object_key(owner.meta());
        let failures = {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let n = failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        debug!(owner = %key, failures, error = %error_chain(error), "backing off");
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

impl<K: ReplicaOwner> PodEventHandler for ReplicaSetController<K> {
    /// Upstream `addPod`.
    fn add_pod(&self, pod: &Pod) {
        if pod.metadata.deletion_timestamp.is_some() {
            // A pod that shows up already deleting (e.g. after a relist) must not count as
            // a creation.
            self.delete_pod(pod);
            return;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(reference) = controller_ref(&pod.metadata) {
            if let Some(owner) = self.resolve_controller_ref(namespace, reference) {
                self.expectations
                    .creation_observed(&object_key(owner.meta()));
                self.enqueue(&owner);
            }
            return;
        }
        // An orphan: every matching owner may want to adopt it.
        for owner in self.owners_selecting(pod) {
            self.enqueue(&owner);
        }
    }

    /// Upstream `updatePod`.
    fn update_pod(&self, old: &Pod, cur: &Pod) {
        if old.metadata.resource_version == cur.metadata.resource_version {
            return;
        }
        let labels_changed = old.metadata.labels != cur.metadata.labels;
        if cur.metadata.deletion_timestamp.is_some() {
            // Graceful deletion: count the deletion as soon as it starts, so the owner makes a
            // replacement without waiting the grace period out.
            self.delete_pod(cur);
            if labels_changed {
                self.delete_pod(old);
            }
            return;
        }
        let namespace = cur.metadata.namespace.as_deref().unwrap_or_default();
        let cur_ref = controller_ref(&cur.metadata);
        let old_ref = controller_ref(&old.metadata);
        let ref_changed = cur_ref != old_ref;
        if ref_changed
            && let Some(old_ref) = old_ref
            && let Some(owner) = self.resolve_controller_ref(namespace, old_ref)
        {
            self.enqueue(&owner);
        }
        if let Some(cur_ref) = cur_ref {
            // Availability after minReadySeconds is scheduled by the sync itself.
            if let Some(owner) = self.resolve_controller_ref(namespace, cur_ref) {
                self.enqueue(&owner);
            }
            return;
        }
        if labels_changed || ref_changed {
            for owner in self.owners_selecting(cur) {
                self.enqueue(&owner);
            }
        }
    }

    /// Upstream `deletePod`.
    fn delete_pod(&self, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let Some(reference) = controller_ref(&pod.metadata) else {
            return;
        };
        let Some(owner) = self.resolve_controller_ref(namespace, reference) else {
            return;
        };
        self.expectations
            .deletion_observed(&object_key(owner.meta()), &object_key(&pod.metadata));
        self.enqueue(&owner);
    }
}

impl<K: ReplicaOwner> OwnerEventHandler<K> for ReplicaSetController<K> {
    fn add_owner(&self, owner: &K) {
        self.enqueue(owner);
    }

    /// Upstream `updateRS`: a new object under the same name ends the old one's expectations.
    fn update_owner(&self, old: &K, cur: &K) {
        if old.meta().uid != cur.meta().uid {
            self.delete_owner(old);
        }
        self.enqueue(cur);
    }

    fn delete_owner(&self, owner: &K) {
        let key = object_key(owner.meta());
        self.expectations.forget(&key);
        self.forget_failures(&key);
        self.enqueue(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        assert_eq!(failure_backoff(1), Duration::from_millis(5));
        assert_eq!(failure_backoff(3), Duration::from_millis(20));
        assert_eq!(failure_backoff(u32::MAX), BACKOFF_MAX);
    }
}

/// Syncs against a real API server with a pod cache fed by hand, so the test decides exactly
/// what the watch has delivered.
#[cfg(test)]
#[path = "../../tests/common/mod.rs"]
mod test_api;

#[cfg(test)]
mod sync_tests {
    use super::test_api as common;
    use super::*;
    use kube::api::{ListParams, PostParams};

    async fn setup(
        replicas: i32,
    ) -> (
        common::TestApi,
        Arc<ReplicaSetController<ReplicaSet>>,
        ReplicaSet,
    ) {
        let api = common::start_api().await;
        let ctx = Context {
            client: api.client.clone(),
            config: crate::ControllersConfig::default(),
            shutdown: api.shutdown.clone(),
        };
        let pods = Arc::new(PodCache::default());
        pods.mark_synced();
        let (core, _writer, _queue) = ReplicaSetController::<ReplicaSet>::new(&ctx, pods);
        let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                },
            },
        }))
        .expect("rs json");
        let rs = Api::<ReplicaSet>::namespaced(api.client.clone(), "default")
            .create(&PostParams::default(), &rs)
            .await
            .expect("create rs");
        (api, core, rs)
    }

    async fn pods_in_api(api: &common::TestApi) -> Vec<Pod> {
        Api::<Pod>::namespaced(api.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
    }

    #[tokio::test]
    async fn a_sync_before_the_watch_shows_earlier_creates_creates_nothing_more() {
        let (api, core, rs) = setup(3).await;
        core.sync(&rs).await.expect("first sync");
        let created = pods_in_api(&api).await;
        assert_eq!(created.len(), 3);
        // The cache has seen none of them yet: without expectations this sync would create
        // three more.
        core.sync(&rs).await.expect("second sync");
        assert_eq!(pods_in_api(&api).await.len(), 3);

        // The watch delivers two of them: still waiting for the third.
        let handlers: Vec<Arc<dyn PodEventHandler>> = vec![core.clone()];
        // The owner store is not fed here, so the handler cannot resolve the controllerRef;
        // lower the expectations as it would.
        let key = object_key(&rs.metadata);
        for pod in &created[..2] {
            informers::apply_pod(&core.pods, &handlers, pod.clone());
            core.expectations.creation_observed(&key);
        }
        core.sync(&rs).await.expect("third sync");
        assert_eq!(pods_in_api(&api).await.len(), 3);

        // The last one arrives: the cache shows all three, and the sync is satisfied.
        informers::apply_pod(&core.pods, &handlers, created[2].clone());
        core.expectations.creation_observed(&key);
        core.sync(&rs).await.expect("fourth sync");
        assert_eq!(pods_in_api(&api).await.len(), 3);
    }

    #[tokio::test]
    async fn scale_down_waits_for_deletions_to_be_observed() {
        let (api, core, rs) = setup(3).await;
        core.sync(&rs).await.expect("create");
        let handlers: Vec<Arc<dyn PodEventHandler>> = vec![core.clone()];
        let key = object_key(&rs.metadata);
        let created = pods_in_api(&api).await;
        for pod in &created {
            informers::apply_pod(&core.pods, &handlers, pod.clone());
            core.expectations.creation_observed(&key);
        }
        let with_replicas = |n: i32| {
            let mut rs = rs.clone();
            if let Some(spec) = rs.spec.as_mut() {
                spec.replicas = Some(n);
            }
            rs
        };
        core.sync(&with_replicas(2)).await.expect("scale to 2");
        let left = pods_in_api(&api).await;
        assert_eq!(left.len(), 2);
        // Scaled to 1 while the cache still shows three pods: without expectations this sync
        // would delete two more (one of them the pod already gone).
        core.sync(&with_replicas(1))
            .await
            .expect("scale to 1, deletion not yet seen");
        assert_eq!(pods_in_api(&api).await.len(), 2);
        // The DELETED event arrives; now the next sync acts.
        let gone = created
            .iter()
            .find(|p| !left.iter().any(|l| l.metadata.name == p.metadata.name))
            .expect("the deleted pod");
        core.expectations
            .deletion_observed(&key, &object_key(&gone.metadata));
        core.pods.remove(gone);
        core.sync(&with_replicas(1)).await.expect("scale to 1");
        assert_eq!(pods_in_api(&api).await.len(), 1);
    }
}
