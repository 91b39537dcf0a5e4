//! The EndpointSlice controller (upstream pkg/controller/endpointslice with the staging
//! `k8s.io/endpointslice` reconciler): keeps the discovery.k8s.io/v1 EndpointSlices of every
//! Service with a selector — at most `max_endpoints_per_slice` endpoints each, one group of
//! slices per resolved port set and address type, each endpoint with ready / serving /
//! terminating conditions, node, zone, pod and hostname.
//!
//! * `mod.rs` (here): [`run`] wires the Service, Pod, Node and EndpointSlice informers to a
//!   work queue of Service keys; callbacks only enqueue keys (pods: the Services their old and
//!   new labels match; slices: their Service, unless the change is this controller's own
//!   write). One sync per Service works from current state.
//! * `reconciler`: the plan (which slices to create, update, delete — upstream's placement
//!   strategy) and its writes.
//! * `tracker`: which of this controller's writes the watch has delivered.
//!
//! Slices of a deleted Service are left to the garbage collector (each slice is controlled by
//! its Service); Services without a selector are left alone (their slices are the user's).

mod reconciler;
mod tracker;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Context;
use crate::endpoints::informer::{self, Cache, EventHandler};
use crate::endpoints::pods;
use crate::endpoints::trigger_time::TriggerTimeTracker;
use crate::endpoints::workqueue::WorkQueue;
use crate::error_chain;
use crate::events::EventRecorder;

pub use reconciler::ReconcileError;
use tracker::EndpointSliceTracker;

/// The label naming a slice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The component name upstream records Events under.
pub const CONTROLLER_NAME: &str = "endpoint-slice-controller";

/// Upstream `--max-endpoints-per-slice` default.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Retries of a failing Service before it is dropped until its next event.
const MAX_RETRIES: u32 = 15;

/// A slice change is synced at least this long after it was seen, so a burst of watch events
/// (often this controller's own writes) leads to one sync (upstream
/// `endpointSliceChangeMinSyncDelay`).
const SLICE_CHANGE_MIN_SYNC_DELAY: Duration = Duration::from_secs(1);

/// Settings of the controller (upstream kube-controller-manager flags).
#[derive(Clone, Debug)]
pub struct EndpointSliceOptions {
    /// `--max-endpoints-per-slice` (1–1000, default 100).
    pub max_endpoints_per_slice: usize,
    /// `--endpointslice-updates-batch-period` (default 0): delay before a pod change is synced.
    pub updates_batch_period: Duration,
    /// `--concurrent-service-endpoint-syncs` (default 5).
    pub concurrent_syncs: usize,
}

impl Default for EndpointSliceOptions {
    fn default() -> Self {
        Self {
            max_endpoints_per_slice: DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            updates_batch_period: Duration::ZERO,
            concurrent_syncs: 5,
        }
    }
}

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
pub enum EndpointSliceError {
    /// Rejected options; not retryable (fix the flag).
    #[error("--max-endpoints-per-slice must be between 1 and 1000, got {0}")]
    InvalidMaxEndpointsPerSlice(usize),
    /// Retryable: the watch has not yet delivered this controller's last writes.
    #[error("EndpointSlice informer cache is out of date for Service {service}")]
    StaleCache { service: String },
    /// Retryable: some writes (or pods) failed; the Service is synced again with backoff.
    #[error("updating the EndpointSlices of Service {service}: {}", messages(.errors))]
    Reconcile {
        service: String,
        errors: Vec<ReconcileError>,
    },
}

/// Upstream's aggregate formatting: one message, or `[a, b]`.
fn messages(errors: &[ReconcileError]) -> String {
    let all: Vec<String> = errors.iter().map(|e| error_chain(e)).collect();
    match all.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", all.join(", ")),
    }
}

/// Runs the EndpointSlice controller with default options until `cancel` (or
/// `ctx.shutdown`); syncs in flight finish first.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), EndpointSliceError> {
    run_with(ctx, cancel, EndpointSliceOptions::default()).await
}

/// [`run`] with explicit options.
pub async fn run_with(
    ctx: Context,
    cancel: CancellationToken,
    options: EndpointSliceOptions,
) -> Result<(), EndpointSliceError> {
    if !(1..=1000).contains(&options.max_endpoints_per_slice) {
        return Err(EndpointSliceError::InvalidMaxEndpointsPerSlice(
            options.max_endpoints_per_slice,
        ));
    }
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
    let controller = EndpointSliceController::new(&ctx, options);
    info!("endpointslice controller started");
    let client = ctx.client.clone();
    futures::join!(
        forward_cancel,
        informer::run(
            Api::<Service>::all(client.clone()),
            controller.services.clone(),
            controller.clone() as Arc<dyn EventHandler<Service>>,
            stop.clone(),
        ),
        informer::run(
            Api::<Pod>::all(client.clone()),
            controller.pods.clone(),
            controller.clone() as Arc<dyn EventHandler<Pod>>,
            stop.clone(),
        ),
        informer::run(
            Api::<Node>::all(client.clone()),
            controller.nodes.clone(),
            controller.clone() as Arc<dyn EventHandler<Node>>,
            stop.clone(),
        ),
        informer::run(
            Api::<EndpointSlice>::all(client.clone()),
            controller.slices.clone(),
            controller.clone() as Arc<dyn EventHandler<EndpointSlice>>,
            stop.clone(),
        ),
        controller.clone().run_workers(stop.clone()),
    );
    info!("endpointslice controller stopped");
    Ok(())
}

/// The controller (upstream `endpointslice.Controller` and its `Reconciler`).
pub(crate) struct EndpointSliceController {
    client: kube::Client,
    recorder: EventRecorder,
    options: EndpointSliceOptions,
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<Node>>,
    slices: Arc<Cache<EndpointSlice>>,
    queue: Arc<WorkQueue>,
    tracker: Mutex<EndpointSliceTracker>,
    trigger_times: Mutex<TriggerTimeTracker>,
}

impl EndpointSliceController {
    fn new(ctx: &Context, options: EndpointSliceOptions) -> Arc<Self> {
        Arc::new(Self {
            client: ctx.client.clone(),
            recorder: EventRecorder::new(
                ctx.client.clone(),
                CONTROLLER_NAME,
                ctx.config.identity.clone(),
            ),
            options,
            services: Arc::default(),
            pods: Arc::default(),
            nodes: Arc::default(),
            slices: Arc::default(),
            // Upstream: 1 s doubling up to 1000 s.
            queue: WorkQueue::new(Duration::from_secs(1), Duration::from_secs(1000)),
            tracker: Mutex::default(),
            trigger_times: Mutex::default(),
        })
    }

    fn lock_tracker(&self) -> std::sync::MutexGuard<'_, EndpointSliceTracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_trigger_times(&self) -> std::sync::MutexGuard<'_, TriggerTimeTracker> {
        self.trigger_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn run_workers(self: Arc<Self>, stop: CancellationToken) {
        let synced = async {
            self.services.wait_synced().await;
            self.pods.wait_synced().await;
            self.nodes.wait_synced().await;
            self.slices.wait_synced().await;
        };
        tokio::select! {
            _ = stop.cancelled() => {
                self.queue.shut_down();
                return;
            }
            _ = synced => {}
        }
        let workers = (0..self.options.concurrent_syncs.max(1)).map(|_| self.clone().worker());
        let shut_down = async {
            stop.cancelled().await;
            self.queue.shut_down();
        };
        futures::join!(futures::future::join_all(workers), shut_down);
    }

    async fn worker(self: Arc<Self>) {
        while let Some(key) = self.queue.get().await {
            match self.sync(&key).await {
                Ok(()) => self.queue.forget(&key),
                Err(e) if self.queue.num_requeues(&key) < MAX_RETRIES => {
                    debug!(service = %key, error = %error_chain(&e), "error syncing endpoint slices, retrying");
                    self.queue.add_rate_limited(key.clone());
                }
                Err(e) => {
                    warn!(service = %key, error = %error_chain(&e), "dropping service out of the queue");
                    self.queue.forget(&key);
                }
            }
            self.queue.done(&key);
        }
    }

    /// One sync of the Service `key` from current state (upstream `syncService`).
    async fn sync(&self, key: &str) -> Result<(), EndpointSliceError> {
        let (namespace, name) = pods::split_key(key);
        let Some(service) = self.services.get(namespace, name) else {
            // Its slices go with it through the garbage collector.
            self.lock_trigger_times().delete_service(namespace, name);
            self.lock_tracker().delete_service(key);
            return Ok(());
        };
        if service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Ok(());
        }
        let Some(selector) = pods::selector(&service) else {
            return Ok(());
        };
        let pods = pods::selected_pods(&self.pods, namespace, selector);
        let mut slices: Vec<Arc<EndpointSlice>> = self
            .slices
            .list(namespace)
            .into_iter()
            .filter(|s| {
                let labels = s.metadata.labels.as_ref();
                labels.and_then(|l| l.get(LABEL_SERVICE_NAME)).map(String::as_str) == Some(name)
                    && labels.and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str)
                        == Some(MANAGED_BY)
                    // Slices being deleted would otherwise be planned around forever.
                    && s.metadata.deletion_timestamp.is_none()
            })
            .collect();
        slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        if self.lock_tracker().stale_slices(key, &slices) {
            return Err(EndpointSliceError::StaleCache {
                service: key.to_string(),
            });
        }
        let trigger_time = self
            .lock_trigger_times()
            .compute(namespace, &service, &pods);
        let errors = self.reconcile(&service, &pods, &slices, trigger_time).await;
        if errors.is_empty() {
            return Ok(());
        }
        let error = EndpointSliceError::Reconcile {
            service: key.to_string(),
            errors,
        };
        let message = match &error {
            EndpointSliceError::Reconcile { errors, .. } => messages(errors),
            other => other.to_string(),
        };
        self.recorder
            .warning(
                &EventRecorder::reference(service.as_ref()),
                "FailedToUpdateEndpointSlices",
                format!("Error updating Endpoint Slices for Service {key}: {message}"),
            )
            .await;
        Err(error)
    }

    /// Upstream `Reconciler.Reconcile`: each address type the Service supports, then the
    /// slices of address types it no longer supports are deleted.
    async fn reconcile(
        &self,
        service: &Service,
        pods: &[Arc<Pod>],
        slices: &[Arc<EndpointSlice>],
        trigger_time: Option<jiff::Timestamp>,
    ) -> Vec<ReconcileError> {
        let supported = reconciler::address_types(service);
        let mut errors = Vec::new();
        let node = |name: &str| self.nodes.get("", name);
        for address_type in &supported {
            let existing: Vec<Arc<EndpointSlice>> = slices
                .iter()
                .filter(|s| s.address_type == *address_type)
                .cloned()
                .collect();
            let (plan, skipped) = reconciler::plan_address_type(
                service,
                pods,
                &node,
                &existing,
                address_type,
                self.options.max_endpoints_per_slice,
            );
            errors.extend(skipped);
            if let Err(e) = self.finalize(service, plan, trigger_time).await {
                errors.push(e);
            }
        }
        let unsupported = reconciler::Plan {
            delete: slices
                .iter()
                .filter(|s| !supported.contains(s.address_type.as_str()))
                .map(|s| (**s).clone())
                .collect(),
            ..reconciler::Plan::default()
        };
        if !unsupported.delete.is_empty()
            && let Err(e) = self.finalize(service, unsupported, trigger_time).await
        {
            errors.push(e);
        }
        errors
    }

    /// Queues the Service of a slice, after the minimum delay.
    fn queue_service_for_slice(&self, slice: &EndpointSlice) {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
        else {
            debug!(slice = ?slice.metadata.name, "EndpointSlice without a service-name label");
            return;
        };
        let key = pods::key(
            slice.metadata.namespace.as_deref().unwrap_or_default(),
            service,
        );
        self.queue.add_after(
            key,
            SLICE_CHANGE_MIN_SYNC_DELAY.max(self.options.updates_batch_period),
        );
    }

    fn enqueue_pod_services(&self, services: impl IntoIterator<Item = String>) {
        for key in services {
            self.queue.add_after(key, self.options.updates_batch_period);
        }
    }
}

fn managed_by_us(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .map(String::as_str)
        == Some(MANAGED_BY)
}

fn service_key(service: &Service) -> String {
    pods::key(
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default(),
    )
}

impl EventHandler<Service> for EndpointSliceController {
    fn on_add(&self, service: &Service) {
        self.queue.add(service_key(service));
    }
    fn on_update(&self, _old: &Service, service: &Service) {
        self.queue.add(service_key(service));
    }
    fn on_delete(&self, service: &Service) {
        self.queue.add(service_key(service));
    }
}

impl EventHandler<Pod> for EndpointSliceController {
    fn on_add(&self, pod: &Pod) {
        self.enqueue_pod_services(pods::services_for_pod(&self.services, pod));
    }
    fn on_update(&self, old: &Pod, pod: &Pod) {
        self.enqueue_pod_services(pods::services_to_update(&self.services, old, pod));
    }
    fn on_delete(&self, pod: &Pod) {
        self.enqueue_pod_services(pods::services_for_pod(&self.services, pod));
    }
}

/// Nodes are only looked up (for zones, and whether a pod's Node exists); upstream reacts to
/// Node changes only for topology-aware hints.
impl EventHandler<Node> for EndpointSliceController {
    fn on_add(&self, _node: &Node) {}
    fn on_update(&self, _old: &Node, _node: &Node) {}
    fn on_delete(&self, _node: &Node) {}
}

impl EventHandler<EndpointSlice> for EndpointSliceController {
    fn on_add(&self, slice: &EndpointSlice) {
        if managed_by_us(slice) && self.lock_tracker().should_sync(slice) {
            self.queue_service_for_slice(slice);
        }
    }

    fn on_update(&self, old: &EndpointSlice, slice: &EndpointSlice) {
        let service_of = |s: &EndpointSlice| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SERVICE_NAME))
                .cloned()
        };
        // Someone moved the slice to another Service: both need a sync.
        if service_of(old) != service_of(slice) {
            self.queue_service_for_slice(slice);
            self.queue_service_for_slice(old);
            return;
        }
        let managed_by_changed = managed_by_us(old) != managed_by_us(slice);
        if managed_by_changed || (managed_by_us(slice) && self.lock_tracker().should_sync(slice)) {
            self.queue_service_for_slice(slice);
        }
    }

    fn on_delete(&self, slice: &EndpointSlice) {
        if !managed_by_us(slice) {
            return;
        }
        let unexpected = {
            let mut tracker = self.lock_tracker();
            tracker.has(slice) && !tracker.handle_deletion(slice)
        };
        if unexpected {
            // Deleted by someone else: write it again.
            self.queue_service_for_slice(slice);
        }
    }
}
