//! The Endpoints controller (upstream pkg/controller/endpoint): keeps one core/v1 Endpoints
//! object per Service with a selector, named after it, listing the Service's pods.
//!
//! * `mod.rs` (here): [`run`] wires the Service, Pod and Endpoints informers to a work queue of
//!   Service keys and runs the workers; the informer callbacks only enqueue keys (a pod event
//!   enqueues the Services its old and new labels match).
//! * `sync`: one sync of a Service from current state — delete the Endpoints of a Service that
//!   is gone, build the subsets, and write only when they, the labels or the capacity
//!   annotation changed.
//! * `subsets`: the subsets from the pods (ports resolved per pod, readiness, repacking,
//!   truncation at 1000 addresses).
//!
//! Modules shared with the EndpointSlice controller (upstream `k8s.io/endpointslice/util`):
//! * `pods`: what a pod contributes (readiness, IPs, named ports, hostname, Service matches).
//! * `trigger_time`: the `endpoints.kubernetes.io/last-change-trigger-time` annotation.
//! * `informer`: watches into caches with add/update/delete callbacks.
//! * `workqueue`: client-go's rate-limited, de-duplicating work queue.
//!
//! Services without a selector are left alone: their Endpoints are written by users (or, for
//! the `kubernetes` Service, by the API server).

pub(crate) mod informer;
pub(crate) mod pods;
mod subsets;
mod sync;
pub(crate) mod trigger_time;
pub(crate) mod workqueue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::Api;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Context;
use crate::error_chain;
use crate::events::EventRecorder;

use informer::{Cache, EventHandler};
use trigger_time::TriggerTimeTracker;
use workqueue::WorkQueue;

pub use subsets::MAX_CAPACITY;
pub(crate) use subsets::pod_reference;
pub(crate) use sync::namespace_terminating;
pub use trigger_time::LAST_CHANGE_TRIGGER_TIME;

/// The component name upstream records Events under.
pub const CONTROLLER_NAME: &str = "endpoint-controller";

/// Set (to `truncated`) on an Endpoints object that holds fewer addresses than the Service has
/// (upstream `v1.EndpointsOverCapacity`).
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// The label marking the Endpoints (and EndpointSlices) of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Endpoints objects carrying this annotation are leader-election locks, not a Service's.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// Services synced at once (upstream `--concurrent-endpoint-syncs`).
const CONCURRENT_SYNCS: usize = 5;

/// Retries of a failing Service before it is dropped until its next event (upstream
/// `maxRetries`).
const MAX_RETRIES: u32 = 15;

/// Errors of one sync. All are retryable: the Service is requeued with backoff and the next
/// sync starts again from current state.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("deleting the Endpoints of deleted Service {service}")]
    DeleteEndpoints {
        service: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating the Endpoints of Service {service}")]
    CreateEndpoints {
        service: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the Endpoints of Service {service}")]
    UpdateEndpoints {
        service: String,
        #[source]
        source: kube::Error,
    },
    /// Upstream's wording; the watch has not yet delivered this controller's last write.
    #[error(
        "endpoints informer cache is out of date, resource version {resource_version} already processed for endpoints {service}"
    )]
    StaleCache {
        service: String,
        resource_version: String,
    },
}

/// Runs the Endpoints controller until `cancel` (or `ctx.shutdown`) is cancelled; syncs in
/// flight finish first. Failed syncs are retried with backoff and watches restart by
/// themselves, so the result is `Ok(())` once stopped.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), EndpointsError> {
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
    let controller = EndpointsController::new(&ctx);
    info!("endpoints controller started");
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
            Api::<Endpoints>::all(client.clone()),
            controller.endpoints.clone(),
            controller.clone() as Arc<dyn EventHandler<Endpoints>>,
            stop.clone(),
        ),
        controller.clone().run_workers(stop.clone()),
    );
    info!("endpoints controller stopped");
    Ok(())
}

/// Remembers the resourceVersion each write replaced: a cache still showing it has not caught
/// up with the write (upstream `staleEndpointsTracker`).
#[derive(Default)]
struct StaleEndpointsTracker {
    replaced: HashMap<String, String>,
}

/// The controller (upstream `endpoint.Controller`).
pub(crate) struct EndpointsController {
    client: kube::Client,
    recorder: EventRecorder,
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    endpoints: Arc<Cache<Endpoints>>,
    queue: Arc<WorkQueue>,
    trigger_times: Mutex<TriggerTimeTracker>,
    stale: Mutex<StaleEndpointsTracker>,
    /// Delay before a pod change is synced, to batch several (upstream
    /// `--endpoint-updates-batch-period`, default 0).
    batch_period: Duration,
}

impl EndpointsController {
    pub(crate) fn new(ctx: &Context) -> Arc<Self> {
        Arc::new(Self {
            client: ctx.client.clone(),
            recorder: EventRecorder::new(
                ctx.client.clone(),
                CONTROLLER_NAME,
                ctx.config.identity.clone(),
            ),
            services: Arc::default(),
            pods: Arc::default(),
            endpoints: Arc::default(),
            // client-go's DefaultControllerRateLimiter: 5 ms doubling up to 1000 s.
            queue: WorkQueue::new(Duration::from_millis(5), Duration::from_secs(1000)),
            trigger_times: Mutex::default(),
            stale: Mutex::default(),
            batch_period: Duration::ZERO,
        })
    }

    /// Waits for the caches, queues every Endpoints object once (so those of Services deleted
    /// while the controller was down are removed: upstream `checkLeftoverEndpoints`), then runs
    /// the workers until `stop`.
    async fn run_workers(self: Arc<Self>, stop: CancellationToken) {
        let synced = async {
            self.services.wait_synced().await;
            self.pods.wait_synced().await;
            self.endpoints.wait_synced().await;
        };
        tokio::select! {
            _ = stop.cancelled() => {
                self.queue.shut_down();
                return;
            }
            _ = synced => {}
        }
        for endpoints in self.endpoints.list_all() {
            let leader_lock = endpoints
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
            if !leader_lock {
                self.queue.add(pods::key(
                    endpoints.metadata.namespace.as_deref().unwrap_or_default(),
                    endpoints.metadata.name.as_deref().unwrap_or_default(),
                ));
            }
        }
        let workers = (0..CONCURRENT_SYNCS).map(|_| self.clone().worker());
        let shut_down = async {
            stop.cancelled().await;
            self.queue.shut_down();
        };
        futures::join!(futures::future::join_all(workers), shut_down);
    }

    async fn worker(self: Arc<Self>) {
        while let Some(key) = self.queue.get().await {
            let result = self.sync(&key).await;
            self.handle_result(&key, result);
            self.queue.done(&key);
        }
    }

    /// Upstream `handleErr`: forget on success, retry with backoff up to [`MAX_RETRIES`].
    fn handle_result(&self, key: &str, result: Result<(), EndpointsError>) {
        match result {
            Ok(()) => self.queue.forget(key),
            Err(e) if self.queue.num_requeues(key) < MAX_RETRIES => {
                debug!(service = %key, error = %error_chain(&e), "error syncing endpoints, retrying");
                self.queue.add_rate_limited(key.to_string());
            }
            Err(e) => {
                warn!(service = %key, error = %error_chain(&e), "dropping service out of the queue");
                self.queue.forget(key);
            }
        }
    }

    fn enqueue_pod_services(&self, services: impl IntoIterator<Item = String>) {
        for key in services {
            self.queue_after(key, self.batch_period);
        }
    }

    fn queue_after(&self, key: String, delay: Duration) {
        self.queue.add_after(key, delay);
    }

    fn lock_stale(&self) -> std::sync::MutexGuard<'_, StaleEndpointsTracker> {
        self.stale.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_trigger_times(&self) -> std::sync::MutexGuard<'_, TriggerTimeTracker> {
        self.trigger_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    pods::key(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

impl EventHandler<Service> for EndpointsController {
    fn on_add(&self, service: &Service) {
        self.queue.add(object_key(&service.metadata));
    }
    fn on_update(&self, _old: &Service, service: &Service) {
        self.queue.add(object_key(&service.metadata));
    }
    fn on_delete(&self, service: &Service) {
        self.queue.add(object_key(&service.metadata));
    }
}

impl EventHandler<Pod> for EndpointsController {
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

impl EventHandler<Endpoints> for EndpointsController {
    fn on_add(&self, _endpoints: &Endpoints) {}
    fn on_update(&self, _old: &Endpoints, _endpoints: &Endpoints) {}
    /// Endpoints deleted by someone else are written again (if their Service still wants them).
    fn on_delete(&self, endpoints: &Endpoints) {
        self.queue.add(object_key(&endpoints.metadata));
    }
}
