//! The node lifecycle controller (upstream `pkg/controller/nodelifecycle` with the taint
//! manager of `pkg/controller/tainteviction`): notices nodes whose kubelet has gone quiet,
//! says so in their status and taints, and moves pods off them.
//!
//! * `mod.rs` (here): configuration, the caches (Nodes, node Leases in `kube-node-lease`,
//!   Pods) and the loop: every `monitor_period` a monitor pass; on any Node or Pod change a
//!   taint pass; at the next eviction deadline a taint-manager pass.
//! * `health`: pure rules — when conditions turn Unknown, which NoSchedule taints the
//!   conditions and `spec.unschedulable` call for (TaintNodesByCondition), zone disruption.
//! * `taint_eviction`: toleration matching and the NoExecute evictions.
//!
//! A monitor pass, per Node: the kubelet's heartbeat is the newer of the Lease's `renewTime`
//! and the Ready condition's `lastHeartbeatTime`, timed by this process's clock when it sees
//! either change (upstream's `probeTimestamp`, immune to clock skew). Past `grace_period`
//! (`startup_grace_period` from creation for a node that never posted Ready) the kubelet's
//! conditions become Unknown through `nodes/status`, the node gets an Event `NodeNotReady`
//! and its pods `Ready=False`. Ready False/Unknown nodes are queued for the
//! `node.kubernetes.io/not-ready` / `unreachable` NoExecute taint, handed out per zone at
//! `eviction_rate` (slower or not at all when a zone is largely down; when every zone is
//! wholly down the controller assumes its own network is at fault and removes those taints,
//! as upstream does). A Ready node loses them at once.

mod health;
mod taint_eviction;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::EventRecorder;
use crate::{Context, error_chain};

pub use health::{
    NO_EXECUTE, NO_SCHEDULE, TAINT_DISK_PRESSURE, TAINT_MEMORY_PRESSURE, TAINT_NETWORK_UNAVAILABLE,
    TAINT_NOT_READY, TAINT_OUT_OF_SERVICE, TAINT_PID_PRESSURE, TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
};
pub use taint_eviction::tolerates;

/// Where kubelets renew their heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The controller's timings and eviction rates; the defaults are upstream's
/// kube-controller-manager flag defaults (v1.33).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLifecycleConfig {
    /// How often nodes are checked (`--node-monitor-period`, 5 s).
    pub monitor_period: Duration,
    /// How long a kubelet may stay silent before its node is Unknown
    /// (`--node-monitor-grace-period`, 50 s since v1.32).
    pub grace_period: Duration,
    /// How long a new node may take to post its first status (`--node-startup-grace-period`,
    /// 60 s).
    pub startup_grace_period: Duration,
    /// Nodes per second a zone's NoExecute taints are handed out at (`--node-eviction-rate`,
    /// 0.1).
    pub eviction_rate: f64,
    /// The rate in a partially disrupted zone of a large cluster
    /// (`--secondary-node-eviction-rate`, 0.01).
    pub secondary_eviction_rate: f64,
    /// Zones up to this many nodes stop tainting altogether when partially disrupted
    /// (`--large-cluster-size-threshold`, 50).
    pub large_cluster_size_threshold: usize,
    /// The not-ready fraction (with more than two down) that makes a zone partially
    /// disrupted (`--unhealthy-zone-threshold`, 0.55).
    pub unhealthy_zone_threshold: f64,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(50),
            startup_grace_period: Duration::from_secs(60),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            large_cluster_size_threshold: 50,
            unhealthy_zone_threshold: 0.55,
        }
    }
}

/// The node lifecycle settings of this server.
pub fn config_from(ctx: &Context) -> NodeLifecycleConfig {
    ctx.config.node_lifecycle.clone()
}

/// Why the controller stopped. Failures of single updates are logged and retried on the
/// next pass; only losing a cache for good is fatal (retryable by restarting the controller).
#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    #[error("the {resource} watch stopped before its first list completed")]
    CacheNotReady { resource: &'static str },
    #[error("writing status.conditions of node {node} (PUT nodes/{node}/status)")]
    UpdateStatus {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating spec.taints of node {node}")]
    PatchTaints {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("setting the Ready condition of pod {pod} to False (PUT pods/status)")]
    MarkPodNotReady {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs with [`config_from`] until `cancel` or `ctx.shutdown`.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), NodeLifecycleError> {
    let config = config_from(&ctx);
    run_with(ctx, config, cancel).await
}

/// Runs with explicit timings until `cancel` or `ctx.shutdown`.
pub async fn run_with(
    ctx: Context,
    config: NodeLifecycleConfig,
    cancel: CancellationToken,
) -> Result<(), NodeLifecycleError> {
    // Lease renewals wake nothing (the monitor pass reads them on its own schedule); a
    // changed Node may need new condition taints and evictions, a changed Pod evictions.
    let nodes_changed = Arc::new(Notify::new());
    let pods_changed = Arc::new(Notify::new());
    let mut watches = JoinSet::new();
    let nodes = cache(
        &mut watches,
        Api::<Node>::all(ctx.client.clone()),
        Some(nodes_changed.clone()),
    );
    let leases = cache(
        &mut watches,
        Api::<Lease>::namespaced(ctx.client.clone(), NODE_LEASE_NAMESPACE),
        None,
    );
    let pods = cache(
        &mut watches,
        Api::<Pod>::all(ctx.client.clone()),
        Some(pods_changed.clone()),
    );
    let stopped = async {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = ctx.shutdown.cancelled() => {}
        }
    };
    tokio::pin!(stopped);
    let ready = async {
        nodes
            .wait_until_ready()
            .await
            .map_err(|_| NodeLifecycleError::CacheNotReady { resource: "nodes" })?;
        leases
            .wait_until_ready()
            .await
            .map_err(|_| NodeLifecycleError::CacheNotReady { resource: "leases" })?;
        pods.wait_until_ready()
            .await
            .map_err(|_| NodeLifecycleError::CacheNotReady { resource: "pods" })
    };
    tokio::select! {
        r = ready => r?,
        _ = &mut stopped => return Ok(()),
    }
    info!(?config, "node lifecycle controller started");
    let mut controller = NodeLifecycle {
        node_recorder: EventRecorder::new(
            ctx.client.clone(),
            "node-controller",
            ctx.config.identity.clone(),
        ),
        eviction_recorder: EventRecorder::new(
            ctx.client.clone(),
            "taint-eviction-controller",
            ctx.config.identity.clone(),
        ),
        client: ctx.client.clone(),
        config,
        nodes,
        leases,
        pods,
        health: HashMap::new(),
        known: HashMap::new(),
        zones: HashMap::new(),
        all_disrupted: true,
        mark_pods_retry: HashSet::new(),
        taint_manager: taint_eviction::TaintManager::default(),
    };
    // The loop's one state: when the next monitor pass and the next eviction are due.
    // Each wake-up runs the pass it is for, then the taint-manager pass (cheap, and it
    // reads whatever the other passes changed).
    let mut next_monitor = Instant::now();
    let mut next_eviction: Option<Instant> = None;
    loop {
        let eviction_due = async {
            match next_eviction {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stopped => break,
            _ = tokio::time::sleep_until(next_monitor) => {
                controller.monitor_pass().await;
                next_monitor = Instant::now() + controller.config.monitor_period;
            }
            _ = nodes_changed.notified() => controller.condition_taint_pass().await,
            _ = pods_changed.notified() => {}
            _ = eviction_due => {}
        }
        next_eviction = controller.taint_manager_pass().await;
    }
    watches.shutdown().await;
    info!("node lifecycle controller stopped");
    Ok(())
}

/// A watch-fed cache; with `changed`, its every change wakes the loop.
fn cache<K>(watches: &mut JoinSet<()>, api: Api<K>, changed: Option<Arc<Notify>>) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default()).modify(crate::without_managed_fields)).default_backoff();
    watches.spawn(async move {
        stream
            .for_each(|event| {
                if let Err(e) = event {
                    debug!(error = %e, "node lifecycle watch");
                }
                if let Some(changed) = &changed {
                    changed.notify_one();
                }
                std::future::ready(())
            })
            .await;
    });
    reader
}

/// What the controller remembers of one node's kubelet (upstream `nodeHealthData`).
struct NodeHealth {
    /// When this process last saw the kubelet post anything.
    probe: Instant,
    ready_heartbeat: Option<jiff::Timestamp>,
    lease_renew: Option<jiff::Timestamp>,
}

/// One zone's NoExecute tainting queue and its token bucket (burst 1, as upstream).
struct Zone {
    state: health::ZoneState,
    queue: VecDeque<String>,
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl Zone {
    fn new(rate: f64) -> Zone {
        Zone {
            state: health::ZoneState::Normal,
            queue: VecDeque::new(),
            rate,
            tokens: 1.0,
            refilled: Instant::now(),
        }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(1.0);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn enqueue(&mut self, node: &str) {
        if !self.queue.iter().any(|n| n == node) {
            self.queue.push_back(node.to_string());
        }
    }

    fn dequeue(&mut self, node: &str) {
        self.queue.retain(|n| n != node);
    }
}

struct NodeLifecycle {
    client: kube::Client,
    node_recorder: EventRecorder,
    eviction_recorder: EventRecorder,
    config: NodeLifecycleConfig,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    health: HashMap<String, NodeHealth>,
    /// Nodes seen so far, for the RegisteredNode / RemovingNode events.
    known: HashMap<String, ObjectReference>,
    zones: HashMap<String, Zone>,
    /// Every zone wholly down at the last pass (upstream starts as if it were).
    all_disrupted: bool,
    /// Nodes whose pods could not all be marked not ready yet.
    mark_pods_retry: HashSet<String>,
    taint_manager: taint_eviction::TaintManager,
}

impl NodeLifecycle {
    /// The periodic pass over every node (upstream `monitorNodeHealth`).
    async fn monitor_pass(&mut self) {
        let now = jiff::Timestamp::now();
        let mut nodes: Vec<Node> = self.nodes.state().iter().map(|n| (**n).clone()).collect();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        self.register_nodes(&nodes).await;

        for node in &mut nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let before = health::Readiness::of(node);
            match self.update_health(node, now).await {
                Ok(()) => {}
                Err(e) => {
                    warn!(node = %name, error = %error_chain(&e), "could not mark node unknown; will retry")
                }
            }
            let after = health::Readiness::of(node);
            if before == health::Readiness::True && after != health::Readiness::True {
                self.node_recorder
                    .normal(
                        &EventRecorder::reference(&*node),
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    )
                    .await;
                self.mark_pods_retry.insert(name.clone());
            }
            if after == health::Readiness::True {
                self.mark_pods_retry.remove(&name);
            } else if self.mark_pods_retry.contains(&name) {
                match self.mark_pods_not_ready(&name).await {
                    Ok(()) => {
                        self.mark_pods_retry.remove(&name);
                    }
                    Err(e) => {
                        warn!(node = %name, error = %error_chain(&e), "could not mark pods not ready; will retry")
                    }
                }
            }
        }

        let entering_disruption = self.handle_disruption(&nodes);
        let decisions = self.no_execute_decisions(&nodes, entering_disruption);
        for node in &nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let decision = decisions
                .get(name)
                .copied()
                .unwrap_or(health::NoExecute::Keep);
            if let Err(e) = self.apply_taints(node, decision, now).await {
                warn!(node = %name, error = %error_chain(&e), "could not update taints; will retry");
            }
        }
    }

    /// Records RegisteredNode / RemovingNode and forgets what belonged to deleted nodes.
    async fn register_nodes(&mut self, nodes: &[Node]) {
        let names: HashSet<&str> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|k| !names.contains(k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(reference) = self.known.remove(&name) {
                self.node_recorder
                    .normal(
                        &reference,
                        "RemovingNode",
                        format!("Node {name} event: Removing Node {name} from Controller"),
                    )
                    .await;
            }
            self.health.remove(&name);
            self.mark_pods_retry.remove(&name);
            for zone in self.zones.values_mut() {
                zone.dequeue(&name);
            }
        }
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            if !self.known.contains_key(&name) {
                let reference = EventRecorder::reference(node);
                self.node_recorder
                    .normal(
                        &reference,
                        "RegisteredNode",
                        format!("Node {name} event: Registered Node {name} in Controller"),
                    )
                    .await;
                self.known.insert(name, reference);
            }
        }
    }

    /// Upstream `tryUpdateNodeHealth`: refreshes the probe time from the Ready heartbeat and
    /// the Lease, and turns the kubelet's conditions Unknown once it is overdue. `node` is
    /// replaced by what the API server returned.
    async fn update_health(
        &mut self,
        node: &mut Node,
        now: jiff::Timestamp,
    ) -> Result<(), NodeLifecycleError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let now_instant = Instant::now();
        let ready = health::condition(node, "Ready");
        let heartbeat = ready
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0);
        let grace = if ready.is_some() {
            self.config.grace_period
        } else {
            self.config.startup_grace_period
        };
        let first_probe = if ready.is_some() {
            now_instant
        } else {
            // A node that never posted status is timed from its creation.
            let age = node
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|c| Duration::try_from(now.duration_since(c.0)).ok())
                .unwrap_or(Duration::ZERO);
            now_instant.checked_sub(age).unwrap_or(now_instant)
        };
        let entry = self.health.entry(name.clone()).or_insert(NodeHealth {
            probe: first_probe,
            ready_heartbeat: heartbeat,
            lease_renew: None,
        });
        if entry.ready_heartbeat != heartbeat {
            entry.ready_heartbeat = heartbeat;
            entry.probe = now_instant;
        }
        let renewed = self
            .leases
            .get(&ObjectRef::new(&name).within(NODE_LEASE_NAMESPACE))
            .and_then(|lease| lease.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        if let Some(renewed) = renewed
            && entry.lease_renew.is_none_or(|seen| seen < renewed)
        {
            entry.lease_renew = Some(renewed);
            entry.probe = now_instant;
        }
        if now_instant <= entry.probe + grace {
            return Ok(());
        }
        let mut updated = node.clone();
        if !health::mark_conditions_unknown(&mut updated, now) {
            return Ok(());
        }
        info!(node = %name, "kubelet stopped posting node status; marking its conditions Unknown");
        let api: Api<Node> = Api::all(self.client.clone());
        let stored = api
            .replace_status(&name, &PostParams::default(), &updated)
            .await
            .map_err(|source| NodeLifecycleError::UpdateStatus {
                node: name.clone(),
                source,
            })?;
        *node = stored;
        Ok(())
    }

    /// Upstream `MarkPodsNotReady`: the Ready condition of every pod on the node turns False
    /// (with a Warning `NodeNotReady` on the pod), so Services stop sending it traffic.
    async fn mark_pods_not_ready(&self, node: &str) -> Result<(), NodeLifecycleError> {
        let mut first_error = None;
        for pod in self.pods.state() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
                continue;
            }
            let mut pod = (*pod).clone();
            let Some(ready) = pod
                .status
                .as_mut()
                .and_then(|s| s.conditions.as_mut())
                .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Ready"))
            else {
                continue;
            };
            if ready.status == "False" {
                continue;
            }
            ready.status = "False".to_string();
            ready.last_transition_time = Some(Time(jiff::Timestamp::now()));
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            match api
                .replace_status(&name, &PostParams::default(), &pod)
                .await
            {
                Ok(_) => {
                    self.node_recorder
                        .warning(
                            &EventRecorder::reference(&pod),
                            "NodeNotReady",
                            "Node is not ready",
                        )
                        .await;
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    first_error.get_or_insert(NodeLifecycleError::MarkPodNotReady {
                        pod: format!("{namespace}/{name}"),
                        source,
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Upstream `handleDisruption`: recomputes each zone's state and its tainting rate.
    /// Returns true when the cluster has just become wholly disrupted (every taint the
    /// controller set is then lifted).
    fn handle_disruption(&mut self, nodes: &[Node]) -> bool {
        let mut counts: HashMap<String, (usize, usize, usize)> = HashMap::new();
        for node in nodes {
            let entry = counts.entry(health::zone_key(node)).or_default();
            entry.2 += 1;
            if health::excluded_from_disruption(node) {
                continue;
            }
            match health::Readiness::of(node) {
                health::Readiness::True => entry.0 += 1,
                _ => entry.1 += 1,
            }
        }
        self.zones.retain(|zone, _| counts.contains_key(zone));
        let threshold = self.config.unhealthy_zone_threshold;
        let states: HashMap<&String, health::ZoneState> = counts
            .iter()
            .map(|(zone, (ready, not_ready, _))| {
                (zone, health::zone_state(*ready, *not_ready, threshold))
            })
            .collect();
        let all_disrupted = !states.is_empty()
            && states
                .values()
                .all(|s| *s == health::ZoneState::FullDisruption);
        let was_disrupted = self.all_disrupted;
        self.all_disrupted = all_disrupted;
        for (zone, state) in &states {
            let size = counts.get(*zone).map_or(0, |c| c.2);
            let rate = if all_disrupted {
                0.0
            } else {
                match state {
                    health::ZoneState::Normal | health::ZoneState::FullDisruption => {
                        self.config.eviction_rate
                    }
                    health::ZoneState::PartialDisruption
                        if size > self.config.large_cluster_size_threshold =>
                    {
                        self.config.secondary_eviction_rate
                    }
                    health::ZoneState::PartialDisruption => 0.0,
                }
            };
            let entry = self
                .zones
                .entry((*zone).clone())
                .or_insert_with(|| Zone::new(rate));
            if entry.state != *state {
                info!(zone = %zone, from = ?entry.state, to = ?state, "zone disruption state changed");
                entry.state = *state;
            }
            entry.rate = rate;
        }
        if all_disrupted && !was_disrupted {
            warn!(
                "no node in any zone is Ready: assuming the control plane's network is at fault; stopping evictions"
            );
            return true;
        }
        if was_disrupted && !all_disrupted && !states.is_empty() {
            // Leaving full disruption: every kubelet gets a fresh grace period, as upstream,
            // since the silence may have been on this side.
            let now = Instant::now();
            for h in self.health.values_mut() {
                h.probe = now;
            }
        }
        false
    }

    /// Upstream `processTaintBaseEviction` plus `doNoExecuteTaintingPass`: what each node's
    /// NoExecute taints should become this pass.
    fn no_execute_decisions(
        &mut self,
        nodes: &[Node],
        lift_all: bool,
    ) -> HashMap<String, health::NoExecute> {
        use health::{NoExecute, Readiness};
        let mut decisions = HashMap::new();
        if lift_all {
            for zone in self.zones.values_mut() {
                zone.queue.clear();
            }
            for node in nodes {
                decisions.insert(
                    node.metadata.name.clone().unwrap_or_default(),
                    NoExecute::Remove,
                );
            }
            return decisions;
        }
        let by_name: HashMap<&str, &Node> = nodes
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
            .collect();
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let zone = self
                .zones
                .entry(health::zone_key(node))
                .or_insert_with(|| Zone::new(self.config.eviction_rate));
            let (want, other) = match Readiness::of(node) {
                Readiness::True => {
                    zone.dequeue(&name);
                    decisions.insert(name, NoExecute::Remove);
                    continue;
                }
                Readiness::False => (TAINT_NOT_READY, TAINT_UNREACHABLE),
                Readiness::Unknown => (TAINT_UNREACHABLE, TAINT_NOT_READY),
            };
            if health::has_taint(node, want, NO_EXECUTE) {
                zone.dequeue(&name);
                decisions.insert(name, NoExecute::Set(want));
            } else if health::has_taint(node, other, NO_EXECUTE) {
                // The node went from one failure to the other: swap at once, no rate limit.
                zone.dequeue(&name);
                decisions.insert(name, NoExecute::Set(want));
            } else {
                zone.enqueue(&name);
            }
        }
        let now = Instant::now();
        for zone in self.zones.values_mut() {
            while let Some(name) = zone.queue.front().cloned() {
                let Some(node) = by_name.get(name.as_str()) else {
                    zone.queue.pop_front();
                    continue;
                };
                let want = match Readiness::of(node) {
                    Readiness::True => {
                        zone.queue.pop_front();
                        continue;
                    }
                    Readiness::False => TAINT_NOT_READY,
                    Readiness::Unknown => TAINT_UNREACHABLE,
                };
                if !zone.try_take(now) {
                    break;
                }
                zone.queue.pop_front();
                decisions.insert(name, health::NoExecute::Set(want));
            }
        }
        decisions
    }

    /// Writes the node's taints if the NoSchedule set or the NoExecute decision changes
    /// them. The resourceVersion guards against overwriting someone else's taint edit.
    async fn apply_taints(
        &self,
        node: &Node,
        decision: health::NoExecute,
        now: jiff::Timestamp,
    ) -> Result<(), NodeLifecycleError> {
        let Some(next) = health::desired_taints(node, decision, now) else {
            return Ok(());
        };
        let name = node.metadata.name.clone().unwrap_or_default();
        let taints: Option<&Vec<Taint>> = (!next.is_empty()).then_some(&next);
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": taints},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                let keys: Vec<String> = next
                    .iter()
                    .map(|t| format!("{}:{}", t.key, t.effect))
                    .collect();
                debug!(node = %name, taints = ?keys, "updated node taints");
                Ok(())
            }
            // Changed meanwhile: the watch brings the new version and the next pass retries.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
            Err(source) => Err(NodeLifecycleError::PatchTaints { node: name, source }),
        }
    }

    /// On any change: keeps the NoSchedule condition taints in sync (cordon shows at once)
    /// without touching NoExecute ones, which only the monitor pass decides.
    async fn condition_taint_pass(&self) {
        let now = jiff::Timestamp::now();
        for node in self.nodes.state() {
            if let Err(e) = self.apply_taints(&node, health::NoExecute::Keep, now).await {
                warn!(node = ?node.metadata.name, error = %error_chain(&e), "could not update taints; will retry");
            }
        }
    }

    /// Evicts what the taints say must go now; returns when to look again.
    async fn taint_manager_pass(&mut self) -> Option<Instant> {
        let now = jiff::Timestamp::now();
        let node_taints: HashMap<String, Vec<Taint>> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| {
                let taints: Vec<Taint> = n
                    .spec
                    .as_ref()?
                    .taints
                    .iter()
                    .flatten()
                    .filter(|t| t.effect == NO_EXECUTE)
                    .cloned()
                    .collect();
                (!taints.is_empty()).then(|| (n.metadata.name.clone().unwrap_or_default(), taints))
            })
            .collect();
        if node_taints.is_empty() && self.taint_manager.is_idle() {
            return None;
        }
        let pods = self.pods.state();
        let plan = self.taint_manager.plan(&pods, &node_taints, now);
        for pod in &plan.cancelled {
            let reference = EventRecorder::reference(pod);
            let key = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            self.eviction_recorder
                .normal(
                    &reference,
                    "TaintManagerEviction",
                    format!("Cancelling deletion of Pod {key}"),
                )
                .await;
        }
        for (pod, node) in &plan.evict {
            match taint_eviction::evict(&self.client, &self.eviction_recorder, pod, node).await {
                Ok(()) => self.taint_manager.mark_evicted(pod),
                Err(e) => warn!(error = %error_chain(&e), "eviction failed; will retry"),
            }
        }
        let retry_soon = plan
            .evict
            .iter()
            .any(|(p, _)| !self.taint_manager.is_evicted(p));
        let next = plan
            .next_deadline
            .map(|at| Instant::now() + taint_eviction::until(at, jiff::Timestamp::now()));
        if retry_soon {
            let soon = Instant::now() + Duration::from_secs(1);
            return Some(next.map_or(soon, |n| n.min(soon)));
        }
        next
    }
}
