//! Skiff's scheduler: binds pending pods to nodes through `pods/binding`, like kube-scheduler's
//! default profile. It talks to the API server exactly as an outside client does (kube-rs).
//!
//! * `pod_info`: what the scheduler reads from a Pod, parsed once (requests, affinity terms,
//!   tolerations, host ports, spread constraints, priority).
//! * `resources`: upstream's request arithmetic (init-container max, sidecars, overhead).
//! * `cache`: nodes with the pods placed on them, including pods *assumed* while their binding
//!   is in flight, and the zone-interleaved node order.
//! * `queue`: activeQ / backoffQ / unschedulable, moved by cluster events, never polled.
//! * `plugins`: the filters and scores, with upstream's names, reasons and weights.
//! * `schedule_one`: one cycle — sample nodes, filter, score, pick; `FitError` formats
//!   "0/3 nodes are available: …" as upstream.
//! * `preemption`: the DefaultPreemption PostFilter's choice of node and victims.
//!
//! The flow: watches on pods, nodes, namespaces and PriorityClasses feed the cache and the
//! queue (handlers only update state and wake the loop); the scheduling loop pops one pod at a
//! time, schedules it against the cache under its lock, assumes it and hands the binding to a
//! task of its own, so many binds are in flight while the loop moves on. A failed binding
//! forgets the assumed pod and retries it after backoff.

pub mod cache;
pub mod plugins;
pub mod pod_info;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod schedule_one;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use controllers::events::{EventRecorder, EventType};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, NodeChange};
use crate::plugins::{Plugin, PluginSet};
use crate::pod_info::{DEFAULT_SCHEDULER_NAME, PodInfo, PodKey};
use crate::queue::{ClusterEvent, Outcome, SchedulingQueue};
use crate::schedule_one::{Algorithm, ScheduleError};

/// The leader Lease the scheduler runs under (upstream's name).
pub const LEADER_LEASE: &str = "kube-scheduler";

/// The component name on Events and conditions.
const COMPONENT: &str = DEFAULT_SCHEDULER_NAME;
/// Bindings in flight at most: enough to keep the API server busy, bounded so a huge backlog
/// does not open thousands of connections.
const MAX_BINDS_IN_FLIGHT: usize = 256;
/// Events queued for writing at most; beyond that they are dropped with a log line, as
/// client-go's broadcaster drops when its channel is full.
const EVENT_QUEUE: usize = 1000;
/// Event writes in flight.
const EVENT_WRITERS: usize = 16;

/// Why the scheduler stopped. Watch and API errors inside the loop are retried (watches back
/// off and relist; failed bindings and status writes requeue the pod), so only a watch stream
/// ending for good surfaces here; the caller restarts the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("the {resource} watch ended unexpectedly")]
    WatchEnded { resource: &'static str },
}

/// The `result` label of `scheduler_schedule_attempts_total` (upstream's names and values).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: &'static str,
    profile: &'static str,
}

/// The scheduler's Prometheus metrics, process-wide like upstream's legacy registry; exposed
/// on the server's `/metrics` through [`register_metrics`].
struct Metrics {
    attempts: Family<AttemptLabels, Counter>,
    algorithm_duration: Histogram,
    binds: Counter,
    bind_failures: Counter,
    preemption_victims: Counter,
}

impl Metrics {
    fn attempt(&self, result: &'static str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                result,
                profile: DEFAULT_SCHEDULER_NAME,
            })
            .inc();
    }
}

static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(|| Metrics {
    attempts: Family::default(),
    // Upstream's buckets: 1 ms doubling 15 times.
    algorithm_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
    binds: Counter::default(),
    bind_failures: Counter::default(),
    preemption_victims: Counter::default(),
});

/// Adds the scheduler's metrics to `registry` (upstream metric names where they exist).
pub fn register_metrics(registry: &mut Registry) {
    let m = &*METRICS;
    registry.register(
        "scheduler_schedule_attempts",
        "Attempts to schedule pods, by result: scheduled, unschedulable, or error",
        m.attempts.clone(),
    );
    registry.register(
        "scheduler_scheduling_algorithm_duration_seconds",
        "Scheduling algorithm latency (filtering and scoring one pod)",
        m.algorithm_duration.clone(),
    );
    registry.register(
        "skiff_scheduler_binds",
        "Bindings the API server accepted",
        m.binds.clone(),
    );
    registry.register(
        "skiff_scheduler_bind_failures",
        "Bindings the API server refused or that failed in transit",
        m.bind_failures.clone(),
    );
    registry.register(
        "skiff_scheduler_preemption_victims",
        "Pods deleted to make room for higher-priority pods",
        m.preemption_victims.clone(),
    );
}

/// PriorityClass values, for pods whose `spec.priority` the API server did not fill in.
#[derive(Default)]
struct PriorityClasses {
    values: HashMap<String, i32>,
    global_default: Option<(String, i32)>,
}

impl PriorityClasses {
    fn resolve(&self, pod: &Pod) -> i32 {
        let spec = pod.spec.as_ref();
        if let Some(p) = spec.and_then(|s| s.priority) {
            return p;
        }
        match spec
            .and_then(|s| s.priority_class_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            Some(name) => self.values.get(name).copied().unwrap_or(0),
            None => self.global_default.as_ref().map_or(0, |(_, v)| *v),
        }
    }
}

/// An Event to write.
struct PendingEvent {
    object: ObjectReference,
    type_: EventType,
    reason: &'static str,
    message: String,
}

/// State shared by the watch handlers, the scheduling loop and the binding tasks.
struct Shared {
    client: kube::Client,
    cache: Mutex<Cache>,
    queue: Mutex<SchedulingQueue>,
    priorities: Mutex<PriorityClasses>,
    /// Wakes the loop when the queue may have work.
    wake: Notify,
    binds: Arc<Semaphore>,
    events: mpsc::Sender<PendingEvent>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn event(&self, pod: &Pod, type_: EventType, reason: &'static str, message: String) {
        let object = EventRecorder::reference(pod);
        if let Err(e) = self.events.try_send(PendingEvent {
            object,
            type_,
            reason,
            message,
        }) {
            tracing::debug!(error = %e, "event queue full; dropping an event");
        }
    }

    fn on_cluster_event(&self, event: ClusterEvent) {
        lock(&self.queue).on_event(event, Instant::now());
        self.wake.notify_one();
    }

    // ---- pods -------------------------------------------------------------------------

    fn pod_upserted(&self, pod: Pod) {
        let priority = lock(&self.priorities).resolve(&pod);
        let info = Arc::new(PodInfo::new(Arc::new(pod), priority));
        if info.is_terminal() {
            self.pod_deleted(&info.key);
            return;
        }
        if info.node_name.is_some() {
            let event = {
                let mut cache = lock(&self.cache);
                let before = cache
                    .is_placed(&info.key)
                    .then(|| cache.is_assumed(&info.key));
                let labels_changed = before == Some(false)
                    && cache
                        .node(info.node_name.as_deref().unwrap_or_default())
                        .and_then(|n| n.pods.iter().find(|p| p.key == info.key))
                        .is_some_and(|old| old.labels != info.labels);
                cache.add_pod(info.clone());
                match before {
                    None => Some(ClusterEvent::AssignedPodAdd),
                    Some(true) => None,
                    Some(false) => labels_changed.then_some(ClusterEvent::AssignedPodUpdate),
                }
            };
            lock(&self.queue).delete(&info.key);
            if let Some(e) = event {
                self.on_cluster_event(e);
            }
            return;
        }
        if info.scheduler_name != DEFAULT_SCHEDULER_NAME {
            return;
        }
        if info.terminating {
            // Upstream skips pods being deleted.
            lock(&self.queue).delete(&info.key);
            return;
        }
        {
            let mut cache = lock(&self.cache);
            if cache.is_assumed(&info.key) {
                // Our own binding is in flight; the pod will come back bound.
                return;
            }
            cache.set_nomination(info.clone(), info.nominated_node.clone());
        }
        lock(&self.queue).add(info, Instant::now());
        self.wake.notify_one();
    }

    fn pod_deleted(&self, key: &str) {
        let removed = {
            let mut cache = lock(&self.cache);
            cache.clear_nomination(key);
            cache.remove_pod(key)
        };
        lock(&self.queue).delete(key);
        if removed.is_some() {
            self.on_cluster_event(ClusterEvent::AssignedPodDelete);
        }
    }

    // ---- nodes ------------------------------------------------------------------------

    fn node_upserted(&self, node: Node) {
        let change = lock(&self.cache).upsert_node(Arc::new(node));
        if let Some(event) = node_event(change) {
            self.on_cluster_event(event);
        }
    }

    fn node_deleted(&self, name: &str) {
        lock(&self.cache).remove_node(name);
    }
}

/// The queue event a node change amounts to (upstream: NodeAdd, or NodeUpdate with which
/// fields changed).
fn node_event(change: NodeChange) -> Option<ClusterEvent> {
    if change.added {
        return Some(ClusterEvent::NodeAdd);
    }
    let mut set = PluginSet::default();
    if change.allocatable {
        set.insert(Plugin::NodeResourcesFit);
    }
    if change.labels {
        set.insert(Plugin::NodeAffinity);
        set.insert(Plugin::PodTopologySpread);
        set.insert(Plugin::InterPodAffinity);
    }
    if change.taints {
        set.insert(Plugin::TaintToleration);
        set.insert(Plugin::PodTopologySpread);
    }
    if change.schedulable {
        set.insert(Plugin::NodeUnschedulable);
    }
    (!set.is_empty()).then_some(ClusterEvent::NodeUpdate(set))
}

/// Schedules pods until `cancel`. Run it under the `kube-scheduler` leader Lease
/// (`controllers::leader::run_with_leadership`); it relists everything on start.
pub async fn run(
    ctx: controllers::Context,
    cancel: CancellationToken,
) -> Result<(), SchedulerError> {
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        cache: Mutex::default(),
        queue: Mutex::default(),
        priorities: Mutex::default(),
        wake: Notify::new(),
        binds: Arc::new(Semaphore::new(MAX_BINDS_IN_FLIGHT)),
        events: events_tx,
    });
    let recorder = EventRecorder::new(ctx.client.clone(), COMPONENT, ctx.config.identity.clone());
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(0u32);
    let synced_tx = Arc::new(synced_tx);
    let cancel = cancel.child_token();
    // Everything below ends on `cancel`; a watch ending for good cancels the rest too.
    let _guard = cancel.clone().drop_guard();

    let pods = watch_pods(shared.clone(), synced_tx.clone(), cancel.clone());
    let nodes = watch_nodes(shared.clone(), synced_tx.clone(), cancel.clone());
    let classes = watch_priority_classes(shared.clone(), synced_tx.clone(), cancel.clone());
    let namespaces = watch_namespaces(shared.clone(), cancel.clone());
    let events = write_events(recorder, events_rx, cancel.clone());
    let scheduling = async {
        // Like upstream's WaitForCacheSync: pods, nodes and classes listed before deciding.
        while *synced_rx.borrow() < 3 {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                changed = synced_rx.changed() => if changed.is_err() { return Ok(()) },
            }
        }
        tracing::info!("scheduler caches synced; scheduling");
        scheduling_loop(shared.clone(), cancel.clone()).await;
        Ok::<(), SchedulerError>(())
    };
    let result = tokio::select! {
        r = pods => r,
        r = nodes => r,
        r = classes => r,
        r = namespaces => r,
        r = scheduling => r,
        () = events => Ok(()),
    };
    cancel.cancel();
    result
}

/// Marks one watcher as having completed its first list.
fn mark_synced(synced: &tokio::sync::watch::Sender<u32>, done: &mut bool) {
    if !*done {
        *done = true;
        synced.send_modify(|n| *n += 1);
    }
}

async fn watch_pods(
    shared: Arc<Shared>,
    synced: Arc<tokio::sync::watch::Sender<u32>>,
    cancel: CancellationToken,
) -> Result<(), SchedulerError> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    // Terminal pods hold no resources; the server sends DELETED when a pod stops matching.
    let config = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let mut stream = watcher(api, config).modify(controllers::without_managed_fields).boxed();
    let mut known: HashSet<PodKey> = HashSet::new();
    let mut relisted: HashSet<PodKey> = HashSet::new();
    let mut done = false;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            e = stream.try_next() => e,
        };
        match event {
            Ok(Some(watcher::Event::Apply(pod))) => {
                known.insert(key_of(&pod));
                shared.pod_upserted(pod);
            }
            Ok(Some(watcher::Event::Delete(pod))) => {
                let key = key_of(&pod);
                known.remove(&key);
                shared.pod_deleted(&key);
            }
            Ok(Some(watcher::Event::Init)) => relisted.clear(),
            Ok(Some(watcher::Event::InitApply(pod))) => {
                relisted.insert(key_of(&pod));
                shared.pod_upserted(pod);
            }
            Ok(Some(watcher::Event::InitDone)) => {
                // Pods gone while the watch was down were deleted.
                for gone in known.difference(&relisted) {
                    shared.pod_deleted(gone);
                }
                known = std::mem::take(&mut relisted);
                mark_synced(&synced, &mut done);
            }
            Ok(None) => return Err(SchedulerError::WatchEnded { resource: "pods" }),
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn watch_nodes(
    shared: Arc<Shared>,
    synced: Arc<tokio::sync::watch::Sender<u32>>,
    cancel: CancellationToken,
) -> Result<(), SchedulerError> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let mut stream = watcher(api, watcher::Config::default()).modify(controllers::without_managed_fields).boxed();
    let mut known: HashSet<String> = HashSet::new();
    let mut relisted: HashSet<String> = HashSet::new();
    let mut done = false;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            e = stream.try_next() => e,
        };
        match event {
            Ok(Some(watcher::Event::Apply(node))) => {
                known.insert(node.metadata.name.clone().unwrap_or_default());
                shared.node_upserted(node);
            }
            Ok(Some(watcher::Event::Delete(node))) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                known.remove(&name);
                shared.node_deleted(&name);
            }
            Ok(Some(watcher::Event::Init)) => relisted.clear(),
            Ok(Some(watcher::Event::InitApply(node))) => {
                relisted.insert(node.metadata.name.clone().unwrap_or_default());
                shared.node_upserted(node);
            }
            Ok(Some(watcher::Event::InitDone)) => {
                for gone in known.difference(&relisted) {
                    shared.node_deleted(gone);
                }
                known = std::mem::take(&mut relisted);
                mark_synced(&synced, &mut done);
            }
            Ok(None) => return Err(SchedulerError::WatchEnded { resource: "nodes" }),
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn watch_priority_classes(
    shared: Arc<Shared>,
    synced: Arc<tokio::sync::watch::Sender<u32>>,
    cancel: CancellationToken,
) -> Result<(), SchedulerError> {
    let api: Api<PriorityClass> = Api::all(shared.client.clone());
    let mut stream = watcher(api, watcher::Config::default()).modify(controllers::without_managed_fields).boxed();
    let mut done = false;
    let mut relisted = PriorityClasses::default();
    let apply = |classes: &mut PriorityClasses, pc: &PriorityClass| {
        let name = pc.metadata.name.clone().unwrap_or_default();
        classes.values.insert(name.clone(), pc.value);
        if pc.global_default == Some(true) {
            classes.global_default = Some((name, pc.value));
        } else if classes
            .global_default
            .as_ref()
            .is_some_and(|(n, _)| *n == name)
        {
            classes.global_default = None;
        }
    };
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            e = stream.try_next() => e,
        };
        match event {
            Ok(Some(watcher::Event::Apply(pc))) => apply(&mut lock(&shared.priorities), &pc),
            Ok(Some(watcher::Event::Delete(pc))) => {
                let name = pc.metadata.name.clone().unwrap_or_default();
                let mut classes = lock(&shared.priorities);
                classes.values.remove(&name);
                if classes
                    .global_default
                    .as_ref()
                    .is_some_and(|(n, _)| *n == name)
                {
                    classes.global_default = None;
                }
            }
            Ok(Some(watcher::Event::Init)) => relisted = PriorityClasses::default(),
            Ok(Some(watcher::Event::InitApply(pc))) => apply(&mut relisted, &pc),
            Ok(Some(watcher::Event::InitDone)) => {
                *lock(&shared.priorities) = std::mem::take(&mut relisted);
                mark_synced(&synced, &mut done);
            }
            Ok(None) => {
                return Err(SchedulerError::WatchEnded {
                    resource: "priorityclasses",
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "priorityclass watch failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Namespace labels, for pod affinity terms with a `namespaceSelector`.
async fn watch_namespaces(
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<(), SchedulerError> {
    let api: Api<Namespace> = Api::all(shared.client.clone());
    let mut stream = watcher(api, watcher::Config::default()).modify(controllers::without_managed_fields).boxed();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            e = stream.try_next() => e,
        };
        match event {
            Ok(Some(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns))) => {
                let labels: BTreeMap<String, String> =
                    ns.metadata.labels.clone().unwrap_or_default();
                lock(&shared.cache)
                    .upsert_namespace(ns.metadata.name.clone().unwrap_or_default(), labels);
            }
            Ok(Some(watcher::Event::Delete(ns))) => {
                lock(&shared.cache)
                    .remove_namespace(ns.metadata.name.as_deref().unwrap_or_default());
            }
            Ok(Some(watcher::Event::Init | watcher::Event::InitDone)) => {}
            Ok(None) => {
                return Err(SchedulerError::WatchEnded {
                    resource: "namespaces",
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "namespace watch failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

fn key_of(pod: &Pod) -> PodKey {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Writes queued Events, a few at a time, until `cancel`.
async fn write_events(
    recorder: EventRecorder,
    rx: mpsc::Receiver<PendingEvent>,
    cancel: CancellationToken,
) {
    let stream = tokio_stream_from(rx).for_each_concurrent(EVENT_WRITERS, |e| {
        let recorder = recorder.clone();
        async move {
            recorder
                .record(&e.object, e.type_, e.reason, e.message)
                .await
        }
    });
    tokio::select! {
        _ = cancel.cancelled() => {}
        () = stream => {}
    }
}

fn tokio_stream_from<T>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The scheduling loop: pop, schedule, assume, hand off the binding; sleep only when activeQ
/// is empty, until an event or the next backoff/leftover deadline.
async fn scheduling_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut algorithm = Algorithm::default();
    let mut since_yield = 0u32;
    while !cancel.is_cancelled() {
        let popped = lock(&shared.queue).pop(Instant::now());
        match popped {
            Some(p) => {
                schedule_one(&shared, &mut algorithm, p.pod);
                since_yield += 1;
                if since_yield >= 32 {
                    // Let watch handlers and binding tasks on this worker make progress.
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
            }
            None => {
                let deadline = lock(&shared.queue).next_deadline();
                let sleep = async {
                    match deadline {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = shared.wake.notified() => {}
                    _ = sleep => {}
                }
            }
        }
    }
}

/// One cycle for one pod.
fn schedule_one(shared: &Arc<Shared>, algorithm: &mut Algorithm, pod: Arc<PodInfo>) {
    let started = std::time::Instant::now();
    let mut cache = lock(&shared.cache);
    if cache.is_placed(&pod.key) {
        drop(cache);
        lock(&shared.queue).done(&pod.key, Outcome::Scheduled, Instant::now());
        return;
    }
    let result = algorithm.schedule(&pod, &mut cache);
    METRICS
        .algorithm_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(placement) => {
            cache.assume(pod.clone(), &placement.node);
            drop(cache);
            METRICS.attempt("scheduled");
            lock(&shared.queue).done(&pod.key, Outcome::Scheduled, Instant::now());
            tracing::debug!(pod = %pod.key, node = %placement.node, evaluated = placement.evaluated, feasible = placement.feasible, "assumed");
            tokio::spawn(bind(shared.clone(), pod, placement.node));
        }
        Err(ScheduleError::NoNodes) => {
            drop(cache);
            METRICS.attempt("error");
            lock(&shared.queue).done(&pod.key, Outcome::Error, Instant::now());
            let message = ScheduleError::NoNodes.to_string();
            tracing::info!(pod = %pod.key, "{message}");
            tokio::spawn(record_failure(
                shared.clone(),
                pod,
                "SchedulerError",
                message,
                None,
            ));
        }
        Err(ScheduleError::Fit(mut fit)) => {
            let plugins = fit.plugins();
            let mut nominate = None;
            match preemption::preempt(&pod, &cache, &fit) {
                Ok(candidate) => {
                    cache.set_nomination(pod.clone(), Some(candidate.node.clone()));
                    nominate = Some(candidate.node.clone());
                    // Lower-priority pods nominated to the same node lose their place.
                    tokio::spawn(execute_preemption(shared.clone(), pod.clone(), candidate));
                }
                Err(msg) => fit.post_filter_msg = Some(msg),
            }
            drop(cache);
            METRICS.attempt("unschedulable");
            lock(&shared.queue).done(&pod.key, Outcome::Unschedulable(plugins), Instant::now());
            let message = fit.to_string();
            tracing::info!(pod = %pod.key, "unschedulable: {message}");
            tokio::spawn(record_failure(
                shared.clone(),
                pod,
                "Unschedulable",
                message,
                nominate,
            ));
        }
    }
}

/// Binds an assumed pod (`POST pods/<name>/binding`), records `Scheduled`, or on failure
/// forgets the assumption and requeues the pod.
async fn bind(shared: Arc<Shared>, pod: Arc<PodInfo>, node: String) {
    let Ok(_permit) = shared.binds.clone().acquire_owned().await else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &pod.namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            api_version: Some("v1".into()),
            name: Some(node.clone()),
            ..ObjectReference::default()
        },
    };
    let result: Result<serde_json::Value, kube::Error> = api
        .create_subresource("binding", &pod.name, &PostParams::default(), &binding)
        .await;
    match result {
        Ok(_) => {
            METRICS.binds.inc();
            shared.event(
                &pod.pod,
                EventType::Normal,
                "Scheduled",
                format!(
                    "Successfully assigned {}/{} to {node}",
                    pod.namespace, pod.name
                ),
            );
        }
        Err(e) => {
            METRICS.bind_failures.inc();
            let gone = matches!(&e, kube::Error::Api(s) if s.code == 404);
            tracing::warn!(pod = %pod.key, node = %node, error = %e, "binding failed");
            lock(&shared.cache).forget(&pod.key);
            if !gone {
                lock(&shared.queue).requeue_after_error(pod.clone(), Instant::now());
                shared.event(
                    &pod.pod,
                    EventType::Warning,
                    "FailedScheduling",
                    format!("Binding rejected: {e}"),
                );
            }
            // The node's room is back: pods waiting for it may fit now.
            shared.on_cluster_event(ClusterEvent::AssignedPodDelete);
        }
    }
}

/// Sets PodScheduled=False with the reason and message (and the nominated node) when they
/// differ from what the pod shows, and records FailedScheduling.
async fn record_failure(
    shared: Arc<Shared>,
    pod: Arc<PodInfo>,
    reason: &'static str,
    message: String,
    nominated: Option<String>,
) {
    shared.event(
        &pod.pod,
        EventType::Warning,
        "FailedScheduling",
        message.clone(),
    );
    let current = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    let same = current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message.as_str())
    });
    if same && nominated.is_none() {
        return;
    }
    let mut status = json!({
        "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }]
    });
    if let Some(node) = nominated {
        status["nominatedNodeName"] = json!(node);
    }
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &pod.namespace);
    let patch = json!({"status": status});
    if let Err(e) = api
        .patch_status(
            &pod.name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        tracing::warn!(pod = %pod.key, error = %e, "updating the PodScheduled condition failed");
    }
}

/// Carries out a preemption: each victim gets the DisruptionTarget condition and an Event,
/// then a graceful delete; the preemptor waits (nominated) until they are gone.
async fn execute_preemption(
    shared: Arc<Shared>,
    preemptor: Arc<PodInfo>,
    candidate: preemption::Candidate,
) {
    tracing::info!(pod = %preemptor.key, node = %candidate.node, victims = candidate.victims.len(), "preempting");
    for victim in &candidate.victims {
        let api: Api<Pod> = Api::namespaced(shared.client.clone(), &victim.namespace);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": format!("{COMPONENT}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }]}});
        if let Err(e) = api
            .patch_status(
                &victim.name,
                &PatchParams::default(),
                &Patch::Strategic(&condition),
            )
            .await
        {
            tracing::debug!(pod = %victim.key, error = %e, "marking the preemption victim failed");
        }
        match api.delete(&victim.name, &DeleteParams::default()).await {
            Ok(_) => {
                METRICS.preemption_victims.inc();
                shared.event(
                    &victim.pod,
                    EventType::Normal,
                    "Preempted",
                    format!(
                        "Preempted by pod {} on node {}",
                        preemptor.uid, candidate.node
                    ),
                );
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(pod = %victim.key, error = %e, "deleting the preemption victim failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_changes_map_to_plugins() {
        assert_eq!(
            node_event(NodeChange {
                added: true,
                ..NodeChange::default()
            }),
            Some(ClusterEvent::NodeAdd)
        );
        assert_eq!(node_event(NodeChange::default()), None);
        let Some(ClusterEvent::NodeUpdate(set)) = node_event(NodeChange {
            taints: true,
            ..NodeChange::default()
        }) else {
            panic!("taint change is an update");
        };
        assert!(set.contains(Plugin::TaintToleration));
        assert!(!set.contains(Plugin::NodeResourcesFit));
    }

    #[test]
    fn priority_falls_back_to_the_class_and_global_default() {
        let mut classes = PriorityClasses::default();
        classes.values.insert("high".into(), 1000);
        classes.global_default = Some(("def".into(), 7));
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).expect("pod") };
        assert_eq!(
            classes.resolve(&pod(
                serde_json::json!({"spec": {"containers": [], "priority": 5}})
            )),
            5
        );
        assert_eq!(
            classes.resolve(&pod(
                serde_json::json!({"spec": {"containers": [], "priorityClassName": "high"}})
            )),
            1000
        );
        assert_eq!(
            classes.resolve(&pod(serde_json::json!({"spec": {"containers": []}}))),
            7
        );
    }
}
