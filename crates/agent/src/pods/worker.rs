//! [`PodWorker`]: one pod's life on this node, as an explicit state machine (see [`State`]).
//! Each sync works from current state — the latest Pod and what the shim reports — never from
//! the event that woke it, so an agent restart resumes where the last agent stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, LifecycleHandler, ObjectReference, Pod, PodIP,
    PodStatus, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use net::cni::{PortMapping, Protocol};
use nix::sys::signal::Signal;
use runtime::container::{Namespace, NamespaceKind, ShimArgs, ShimClient};
use runtime::image::pull::Credentials;
use runtime::image::{ImageRecord, ImageRef, PullDecision, PullPolicy};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::container::{ContainerEnvironment, EnvSources, HostVolume, container_config};
use super::credentials;
use super::events::{self, PodEvents, container_reference, format_pod};
use super::handler::Target;
use super::hooks::{self, HookContext};
use super::kill::{self, ContainerKill};
use super::probe::{self, ProbeEvent, ProbeKind};
use super::sandbox::{self, PodRecord};
use super::status::{self, pod_conditions, pod_phase, terminated_reason};
use super::{NodeContext, PodError};
use crate::network::{HostNetwork, PodNetwork, PodNetworkStatus, PodSandboxRef};
use crate::node::error_chain;

/// The longest crash-loop and image-pull back-off (upstream `MaxContainerBackOff`).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts its back-off afresh (upstream resets
/// the back-off entry after twice the maximum).
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The worker's states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Creating the pod directory, network, hosts/resolv files, volumes and shim — or
    /// re-attaching to them after an agent restart.
    Sandbox,
    /// Running init containers in order, then the app containers, restarting them per
    /// restartPolicy with back-off, and reporting status.
    Sync,
    /// `deletionTimestamp` is set: per container, preStop, the stop signal (the image's
    /// STOPSIGNAL or SIGTERM), what is left of the grace period, SIGKILL.
    Terminating,
    /// Removing containers, the shim, rootfs mounts, cgroups, network and the pod directory,
    /// then deleting the pod object (grace 0, UID precondition) if it still exists.
    Cleanup,
    /// Nothing of the pod is left on the node.
    Done,
}

/// Upstream's crash-loop back-off: the first restart is immediate, then `base` doubling up to
/// five minutes.
pub(crate) fn backoff_delay(base: Duration, crashes: u32) -> Duration {
    if crashes <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(crashes - 2).unwrap_or(u32::MAX);
    base.checked_mul(factor)
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

/// A duration as Go's `time.Duration.String()` prints it (`10s`, `2m40s`, `5m0s`, `1.234s`,
/// `300ms`), which upstream's back-off, pull and probe messages use.
pub(crate) fn go_duration(d: Duration) -> String {
    /// `value / scale` with the fraction's trailing zeros dropped, as Go prints it.
    fn fraction(value: u128, scale: u128) -> String {
        let (whole, rest) = (value / scale, value % scale);
        if rest == 0 {
            return whole.to_string();
        }
        let digits = scale.ilog10() as usize;
        let rest = format!("{rest:0digits$}");
        format!("{whole}.{}", rest.trim_end_matches('0'))
    }
    let nanos = d.as_nanos();
    match nanos {
        0 => "0s".into(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", fraction(n, 1_000)),
        n if n < 1_000_000_000 => format!("{}ms", fraction(n, 1_000_000)),
        n => {
            let secs = n / 1_000_000_000;
            let (hours, minutes) = (secs / 3600, (secs / 60) % 60);
            let seconds = fraction(n % 60_000_000_000, 1_000_000_000);
            match (hours, minutes) {
                (0, 0) => format!("{seconds}s"),
                (0, m) => format!("{m}m{seconds}s"),
                (h, m) => format!("{h}h{m}m{seconds}s"),
            }
        }
    }
}

fn time_of(rfc3339: Option<&str>) -> Option<Time> {
    let ts: jiff::Timestamp = rfc3339?.parse().ok()?;
    Some(Time(ts.round(jiff::Unit::Second).unwrap_or(ts)))
}

fn now() -> Time {
    let ts = jiff::Timestamp::now();
    Time(ts.round(jiff::Unit::Second).unwrap_or(ts))
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..ContainerState::default()
    }
}

/// One container of the pod as the worker tracks it.
#[derive(Debug, Default)]
struct Tracked {
    /// What the API will be told; `state: None` until the container is first acted on.
    status: ContainerStatus,
    /// The shim's id of the current attempt (`<pod-uid>-<attempt>-<name>`).
    runtime_id: Option<String>,
    /// Consecutive crashes, for the back-off.
    crashes: u32,
    backoff_until: Option<Instant>,
    image_failures: u32,
    image_backoff_until: Option<Instant>,
    image_error: Option<String>,
    /// The runtime id whose exit is already recorded, so it counts as one crash only.
    exited_id: Option<String>,
    /// The image's StopSignal, read when the container was created.
    stop_signal: Option<Signal>,
    /// The crash-loop and image back-offs whose BackOff Event is recorded (once per period).
    backoff_event_for: Option<Instant>,
    image_backoff_event_for: Option<Instant>,
    /// The last start failure reported in an Event, so a failure that persists across syncs
    /// is reported once.
    failure_event: Option<String>,
}

impl Tracked {
    fn terminated(&self) -> Option<&ContainerStateTerminated> {
        self.status.state.as_ref()?.terminated.as_ref()
    }

    fn running(&self) -> bool {
        self.status
            .state
            .as_ref()
            .is_some_and(|s| s.running.is_some())
    }

    /// Has run (or tried to) and stopped: terminated now, or waiting to restart.
    fn last_exit(&self) -> Option<i32> {
        self.terminated().map(|t| t.exit_code).or_else(|| {
            self.status
                .last_state
                .as_ref()?
                .terminated
                .as_ref()
                .map(|t| t.exit_code)
        })
    }

    /// Clears the state, keeping a termination as the last state.
    fn retire_state(&mut self) {
        if let Some(state) = self.status.state.take()
            && state.terminated.is_some()
        {
            self.status.last_state = Some(state);
        }
    }

    fn set_waiting(&mut self, reason: &str, message: Option<String>) {
        // A terminated state becomes the last state when the container waits to restart.
        self.retire_state();
        self.status.state = Some(waiting(reason, message));
        self.status.ready = false;
        self.status.started = Some(false);
    }
}

/// The pod's sandbox once created.
struct Sandbox {
    network: PodNetworkStatus,
    shared: sandbox::PodNamespaces,
    hosts: PathBuf,
    resolv: PathBuf,
    volumes: BTreeMap<String, HostVolume>,
    volume_errors: BTreeMap<String, String>,
}

pub(crate) struct PodWorker {
    node: Arc<NodeContext>,
    pod: Pod,
    record: PodRecord,
    updates: watch::Receiver<Option<Pod>>,
    /// The API object is gone (deleted, or never seen: an orphaned pod directory).
    gone: bool,
    shutdown: CancellationToken,
    shim: Option<ShimClient>,
    sandbox: Option<Sandbox>,
    containers: BTreeMap<String, Tracked>,
    exits_tx: mpsc::UnboundedSender<()>,
    exits_rx: mpsc::UnboundedReceiver<()>,
    probe_tx: mpsc::UnboundedSender<ProbeEvent>,
    probe_rx: mpsc::UnboundedReceiver<ProbeEvent>,
    /// Probe tasks by the runtime id of the container they probe.
    probers: HashMap<String, Vec<tokio::task::AbortHandle>>,
    watchers: JoinSet<()>,
    last_status: Option<Value>,
    start_time: Option<Time>,
    /// When the configMap/secret/downwardAPI/projected volumes were last written.
    api_volumes_at: Option<Instant>,
    events: PodEvents,
}

/// How a postStart hook ended.
enum PostStart {
    Done,
    Failed(String),
    /// The pod is being deleted or the agent stops: the next state deals with the container.
    Interrupted,
}

impl PodWorker {
    pub(crate) fn new(
        node: Arc<NodeContext>,
        pod: Pod,
        updates: watch::Receiver<Option<Pod>>,
        shutdown: CancellationToken,
    ) -> PodWorker {
        let record = PodRecord {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            host_network: pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false),
        };
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.clone());
        let events = PodEvents::new(node.recorder.clone());
        PodWorker {
            node,
            pod,
            record,
            updates,
            gone: false,
            shutdown,
            shim: None,
            sandbox: None,
            containers: BTreeMap::new(),
            exits_tx,
            exits_rx,
            probe_tx,
            probe_rx,
            probers: HashMap::new(),
            watchers: JoinSet::new(),
            last_status: None,
            start_time,
            api_volumes_at: None,
            events,
        }
    }

    /// A worker that only removes what a pod left on the node after its object disappeared
    /// while no agent was running.
    pub(crate) fn orphan(
        node: Arc<NodeContext>,
        record: PodRecord,
        shutdown: CancellationToken,
    ) -> PodWorker {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some(record.namespace.clone());
        pod.metadata.name = Some(record.name.clone());
        pod.metadata.uid = Some(record.uid.clone());
        let (_tx, rx) = watch::channel(None);
        let mut worker = PodWorker::new(node, pod, rx, shutdown);
        worker.record = record;
        worker.gone = true;
        worker
    }

    pub(crate) fn uid(&self) -> String {
        self.record.uid.clone()
    }

    fn pod_dir(&self) -> PathBuf {
        self.node.paths.pod_dir(&self.record.uid)
    }

    fn sandbox_ref(&self) -> PodSandboxRef {
        PodSandboxRef {
            namespace: self.record.namespace.clone(),
            name: self.record.name.clone(),
            uid: self.record.uid.clone(),
            port_mappings: port_mappings(&self.pod),
        }
    }

    fn network(&self) -> Arc<dyn PodNetwork> {
        if self.record.host_network {
            Arc::new(HostNetwork {
                node_ip: self.node.config.node_ip,
            })
        } else {
            self.node.config.pod_network.clone()
        }
    }

    fn pod_cgroup(&self) -> String {
        format!(
            "/{}/pod{}",
            self.node.config.cgroup_root.trim_matches('/'),
            self.record.uid
        )
    }

    /// The pod as upstream's messages name it: `name_namespace(uid)`.
    fn pod_label(&self) -> String {
        format_pod(&self.record.name, &self.record.namespace, &self.record.uid)
    }

    /// Container `name` as an Event's involved object.
    fn container_ref(&self, name: &str) -> ObjectReference {
        container_reference(&self.pod, name)
    }

    /// Where probes and hooks of this pod connect.
    fn target(&self) -> Target {
        Target {
            pod_ip: self
                .sandbox
                .as_ref()
                .and_then(|s| s.network.ips.first().copied()),
            netns: self.sandbox.as_ref().and_then(|s| s.network.netns.clone()),
            shim_socket: self.node.paths.shim_socket(&self.record.uid),
        }
    }

    fn hook_context(&self, c: &Container, runtime_id: &str) -> HookContext {
        HookContext {
            container: c.clone(),
            runtime_id: runtime_id.to_string(),
            target: self.target(),
            pod_label: self.pod_label(),
            pod_reference: events::pod_reference(&self.pod),
            events: self.events.clone(),
        }
    }

    /// The grace period of a kill that has no override: the deletion's, else the pod's
    /// terminationGracePeriodSeconds (30 by default).
    fn pod_grace(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0);
        Duration::from_secs(seconds as u64)
    }

    /// The signal that stops container `name`: its `lifecycle.stopSignal`, else its image's
    /// StopSignal, else SIGTERM (as containerd and CRI-O do).
    fn stop_signal(&self, name: &str) -> Signal {
        let declared = self
            .container_spec(name)
            .and_then(|c| c.lifecycle?.stop_signal)
            .and_then(|s| kill::parse_signal(&s));
        if let Some(signal) = declared {
            return signal;
        }
        let t = self.containers.get(name);
        if let Some(signal) = t.and_then(|t| t.stop_signal) {
            return signal;
        }
        // A container adopted after an agent restart: read its image's config again.
        let from_image = t.and_then(|t| {
            let reference = ImageRef::parse(&t.status.image).ok()?;
            let record = self.node.store.get(&reference).ok()??;
            let config = self.node.store.config(&record).ok()?;
            kill::parse_signal(config.stop_signal.as_deref()?)
        });
        from_image.unwrap_or(Signal::SIGTERM)
    }

    /// Stopping container `name` (attempt `runtime_id`), with its preStop hook.
    fn container_kill(
        &self,
        name: &str,
        runtime_id: &str,
        message: String,
        grace: Duration,
    ) -> ContainerKill {
        let spec = self.container_spec(name);
        let pre_stop = spec.as_ref().and_then(|c| {
            let hook = c.lifecycle.as_ref()?.pre_stop.clone()?;
            Some((hook, self.hook_context(c, runtime_id)))
        });
        ContainerKill {
            runtime_id: runtime_id.to_string(),
            shim_socket: self.node.paths.shim_socket(&self.record.uid),
            message,
            reference: spec.map(|_| self.container_ref(name)),
            events: self.events.clone(),
            pre_stop,
            grace,
            signal: self.stop_signal(name),
        }
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(self.node.client.clone(), &self.record.namespace)
    }

    fn deleting(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// Whether the agent stops, or the latest update (not yet taken) deletes the pod.
    fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
            || self
                .updates
                .borrow()
                .as_ref()
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    }

    /// Runs the pod until nothing of it is left, or until the agent shuts down (then the
    /// containers keep running under their shim).
    pub(crate) async fn run(mut self) -> String {
        let mut state = if self.gone {
            State::Cleanup
        } else {
            State::Sandbox
        };
        while state != State::Done && !self.shutdown.is_cancelled() {
            state = self.step(state).await;
        }
        self.uid()
    }

    async fn step(&mut self, state: State) -> State {
        self.take_update();
        match state {
            State::Sandbox => self.create_sandbox().await,
            State::Sync => self.sync().await,
            State::Terminating => self.terminate().await,
            State::Cleanup => self.cleanup().await,
            State::Done => State::Done,
        }
    }

    /// Takes the latest Pod from the manager. Always reads: `changed()` in [`Self::wait`]
    /// already marked the value seen.
    fn take_update(&mut self) {
        let latest = self.updates.borrow_and_update().clone();
        match latest {
            Some(pod) => self.pod = pod,
            None => self.gone = true,
        }
    }

    /// Waits for a pod update, a container exit, `until`, or shutdown.
    async fn wait(&mut self, until: Option<Instant>) {
        // Finished exit watchers and probers hold their results until joined.
        while self.watchers.try_join_next().is_some() {}
        let sleep = until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            changed = self.updates.changed() => {
                // The manager is gone only at shutdown; do not spin on a closed channel.
                if changed.is_err() {
                    self.shutdown.cancelled().await;
                }
            }
            _ = self.exits_rx.recv() => {}
            Some(event) = self.probe_rx.recv() => self.on_probe(event).await,
            _ = tokio::time::sleep_until(sleep) => {}
        }
    }

    async fn retry_later(&mut self) {
        self.wait(Some(Instant::now() + Duration::from_secs(1)))
            .await;
    }

    async fn connect_shim(&mut self) -> Result<(), PodError> {
        if self.shim.is_some() {
            return Ok(());
        }
        let socket = self.node.paths.shim_socket(&self.record.uid);
        let client = match ShimClient::connect(&socket).await {
            Ok(client) => client,
            Err(_) => {
                let args = ShimArgs {
                    pod_dir: self.pod_dir(),
                    socket: socket.clone(),
                    state_root: self.node.paths.container_state(),
                    foreground: false,
                };
                ShimClient::spawn_shim(&self.node.config.skiff_binary, &args)
                    .await
                    .map_err(PodError::Shim)?
            }
        };
        self.shim = Some(client);
        Ok(())
    }

    async fn create_sandbox(&mut self) -> State {
        if self.gone {
            return State::Cleanup;
        }
        if self.deleting() {
            return if self.pod_dir().exists() {
                State::Terminating
            } else {
                State::Cleanup
            };
        }
        match self.try_create_sandbox().await {
            Ok(()) => {
                self.adopt().await;
                State::Sync
            }
            Err(e) => {
                tracing::warn!(pod = %self.sandbox_ref(), error = %error_chain(&e), "creating the pod sandbox failed; retrying");
                self.retry_later().await;
                State::Sandbox
            }
        }
    }

    async fn try_create_sandbox(&mut self) -> Result<(), PodError> {
        let pod_dir = self.pod_dir();
        sandbox::write_record(&pod_dir, &self.record)?;
        let network = self.network();
        let pod_ref = self.sandbox_ref();
        let net = network.setup(&pod_ref).await?;
        let ips: Vec<String> = net.ips.iter().map(ToString::to_string).collect();
        let (hosts, resolv) = sandbox::write_files(
            &pod_dir,
            &self.pod,
            &ips,
            self.record.host_network,
            &self.node.config.resolv_conf,
            &self.node.config.cluster_dns,
        )?;
        let (volumes, volume_errors) = sandbox::prepare_volumes(&pod_dir, &self.pod);
        let shared = sandbox::pod_namespaces(&pod_dir, &self.pod, self.record.host_network)?;
        let limits = pod_limits(&self.pod, self.node.config.pod_max_pids);
        if let Err(e) = self.node.layout.set_pod_limits(&self.pod_cgroup(), &limits) {
            // The containers' own limits still hold; the pod-wide ones are a second line.
            tracing::warn!(pod = %self.sandbox_ref(), error = %error_chain(&e), "setting the pod cgroup's limits failed");
        }
        self.connect_shim().await?;
        self.sandbox = Some(Sandbox {
            network: net,
            shared,
            hosts,
            resolv,
            volumes,
            volume_errors,
        });
        self.refresh_api_volumes().await;
        if self.start_time.is_none() {
            self.start_time = Some(now());
        }
        Ok(())
    }

    /// Builds the tracked containers from the last reported status and what the shim runs,
    /// so an agent restart neither restarts nor forgets a container.
    async fn adopt(&mut self) {
        let reported: Vec<ContainerStatus> = self
            .pod
            .status
            .iter()
            .flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            })
            .cloned()
            .collect();
        let spec = self.pod.spec.clone().unwrap_or_default();
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            let mut t = Tracked::default();
            t.status.name = c.name.clone();
            t.status.image = c.image.clone().unwrap_or_default();
            if let Some(prev) = reported.iter().find(|s| s.name == c.name) {
                t.status.restart_count = prev.restart_count;
                t.status.last_state = prev.last_state.clone();
                t.status.image = prev.image.clone();
                t.status.image_id = prev.image_id.clone();
                t.crashes = u32::try_from(prev.restart_count).unwrap_or(0);
                // A finished container whose shim record is gone keeps its reported end.
                if prev.state.as_ref().is_some_and(|s| s.terminated.is_some()) {
                    t.status.state = prev.state.clone();
                    t.status.container_id = prev.container_id.clone();
                }
            }
            self.containers.insert(c.name.clone(), t);
        }
        let listed = match self.shim.as_mut() {
            Some(shim) => shim.list().await.unwrap_or_default(),
            None => Vec::new(),
        };
        let prefix = format!("{}-", self.record.uid);
        let mut latest: HashMap<String, (u32, String)> = HashMap::new();
        for s in &listed {
            let Some((attempt, name)) =
                s.id.strip_prefix(&prefix)
                    .and_then(|rest| rest.split_once('-'))
            else {
                continue;
            };
            let Ok(attempt) = attempt.parse::<u32>() else {
                continue;
            };
            if latest.get(name).is_none_or(|(a, _)| attempt > *a) {
                latest.insert(name.to_string(), (attempt, s.id.clone()));
            }
        }
        for (name, (attempt, id)) in latest {
            if let Some(t) = self.containers.get_mut(&name) {
                // An exit the API already has for this attempt (terminated, or the last state
                // of a crash-looping container) is not a new crash; an older attempt's is stale.
                let this = format!("skiff://{id}");
                let reported_exit = |s: Option<&ContainerState>| {
                    s.and_then(|s| s.terminated.as_ref())
                        .and_then(|t| t.container_id.as_deref())
                        == Some(this.as_str())
                };
                if reported_exit(t.status.state.as_ref())
                    || reported_exit(t.status.last_state.as_ref())
                {
                    t.exited_id = Some(id.clone());
                } else if t.terminated().is_some() {
                    t.status.state = None;
                }
                t.runtime_id = Some(id.clone());
                t.status.restart_count = i32::try_from(attempt).unwrap_or(i32::MAX);
                t.status.container_id = Some(this);
            }
        }
        self.observe(&listed);
    }

    /// Folds the shim's view into the tracked statuses; a newly seen exit counts as a crash
    /// for the back-off and starts an exit watcher for newly seen running containers.
    fn observe(&mut self, listed: &[runtime::container::ContainerStatus]) {
        let base = self.node.config.backoff_base;
        let socket = self.node.paths.shim_socket(&self.record.uid);
        let pod_dir = self.pod_dir();
        let mut started: Vec<(String, String)> = Vec::new();
        let mut ended: Vec<String> = Vec::new();
        for (name, t) in self.containers.iter_mut() {
            let Some(id) = t.runtime_id.clone() else {
                continue;
            };
            let found = listed.iter().find(|s| s.id == id);
            let (exit_code, reason, message, finished) = match found.map(|s| s.state) {
                Some(runtime::container::ContainerState::Running) => {
                    let s = found.map(|s| s.started_at.clone()).unwrap_or_default();
                    if !t.running() {
                        t.status.state = Some(ContainerState {
                            running: Some(ContainerStateRunning {
                                started_at: time_of(s.as_deref()),
                            }),
                            ..ContainerState::default()
                        });
                        // Probes decide readiness and startup; without them a running
                        // container is ready and started (upstream).
                        started.push((name.clone(), id.clone()));
                        t.status.ready = true;
                        t.status.started = Some(true);
                        let (socket, tx, id) = (socket.clone(), self.exits_tx.clone(), id.clone());
                        self.watchers.spawn(async move {
                            match ShimClient::connect(&socket).await {
                                Ok(mut client) => {
                                    if client.wait(&id).await.is_err() {
                                        tokio::time::sleep(Duration::from_secs(1)).await;
                                    }
                                }
                                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                            }
                            let _ = tx.send(());
                        });
                    }
                    continue;
                }
                Some(runtime::container::ContainerState::Exited) => {
                    let Some(s) = found else { continue };
                    let code = s.exit_code.unwrap_or(137);
                    let message = std::fs::read_to_string(
                        pod_dir
                            .join("containers")
                            .join(name)
                            .join("termination-log"),
                    )
                    .ok()
                    .map(|m| m.chars().take(4096).collect::<String>())
                    .filter(|m| !m.is_empty());
                    (
                        code,
                        terminated_reason(code, s.oom_killed).to_string(),
                        message,
                        s.finished_at.clone(),
                    )
                }
                // The shim lost the container (it died while the container ran): its exit
                // status is unknown, as upstream's ContainerStatusUnknown.
                Some(runtime::container::ContainerState::Unknown) | None => (
                    137,
                    "ContainerStatusUnknown".to_string(),
                    Some(
                        "The container could not be located when the pod was terminated"
                            .to_string(),
                    ),
                    None,
                ),
            };
            if t.exited_id.as_deref() == Some(id.as_str()) {
                continue;
            }
            t.exited_id = Some(id.clone());
            ended.push(id.clone());
            let started_at = t
                .status
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.clone())
                .or_else(|| time_of(found.and_then(|s| s.started_at.as_deref())));
            let finished_at = time_of(finished.as_deref()).unwrap_or_else(now);
            let ran = started_at
                .as_ref()
                .and_then(|s| finished_at.0.duration_since(s.0).try_into().ok())
                .unwrap_or(Duration::ZERO);
            t.crashes = if ran >= BACKOFF_RESET {
                1
            } else {
                t.crashes + 1
            };
            t.backoff_until = Some(Instant::now() + backoff_delay(base, t.crashes));
            t.status.state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    reason: Some(reason),
                    message,
                    started_at,
                    finished_at: Some(finished_at),
                    container_id: t.status.container_id.clone(),
                    signal: None,
                }),
                ..ContainerState::default()
            });
            t.status.ready = false;
            t.status.started = Some(false);
        }
        for id in ended {
            for handle in self.probers.remove(&id).unwrap_or_default() {
                handle.abort();
            }
        }
        for (name, id) in started {
            self.start_probes(&name, &id, true);
        }
    }

    /// Starts the container's probes: the startup probe alone while it has not succeeded,
    /// then liveness and readiness (upstream runs them only after startup).
    fn start_probes(&mut self, name: &str, runtime_id: &str, first: bool) {
        let Some(container) = self.container_spec(name) else {
            return;
        };
        let all = probe::probes(&container);
        let has_startup = all.iter().any(|(k, _)| *k == ProbeKind::Startup);
        let has_readiness = all.iter().any(|(k, _)| *k == ProbeKind::Readiness);
        if let Some(t) = self.containers.get_mut(name) {
            if first && has_startup {
                t.status.started = Some(false);
            }
            if has_readiness || (first && has_startup) {
                t.status.ready = false;
            }
        }
        let target = self.target();
        let reference = self.container_ref(name);
        for (kind, spec) in all {
            let wanted = if first && has_startup {
                kind == ProbeKind::Startup
            } else {
                kind != ProbeKind::Startup
            };
            if !wanted {
                continue;
            }
            let prober = probe::Prober {
                kind,
                probe: spec,
                container: container.clone(),
                runtime_id: runtime_id.to_string(),
                target: target.clone(),
                results: self.probe_tx.clone(),
                events: self.events.clone(),
                reference: reference.clone(),
            };
            let handle = self.watchers.spawn(prober.run());
            self.probers
                .entry(runtime_id.to_string())
                .or_default()
                .push(handle);
        }
    }

    fn container_spec(&self, name: &str) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .find(|c| c.name == name)
            .cloned()
    }

    /// Acts on a probe crossing its threshold: readiness flips Ready; startup success starts
    /// the other probes; a failed liveness or startup probe kills the container, which then
    /// restarts per restartPolicy.
    async fn on_probe(&mut self, event: ProbeEvent) {
        let Some(t) = self.containers.get_mut(&event.container) else {
            return;
        };
        if t.runtime_id.as_deref() != Some(event.runtime_id.as_str()) || !t.running() {
            return;
        }
        match (event.kind, event.success) {
            (ProbeKind::Readiness, ready) => t.status.ready = ready,
            (ProbeKind::Startup, true) => {
                t.status.started = Some(true);
                t.status.ready = true;
                self.start_probes(&event.container, &event.runtime_id, false);
            }
            (ProbeKind::Liveness, true) => {}
            (kind, false) => {
                tracing::info!(pod = %self.sandbox_ref(), container = %event.container, ?kind, message = %event.message,
                    "container failed its probe, will be restarted");
                // The probe's own terminationGracePeriodSeconds overrides the pod's (KEP-2238).
                let probe_grace = self
                    .container_spec(&event.container)
                    .and_then(|c| {
                        if kind == ProbeKind::Liveness {
                            c.liveness_probe
                        } else {
                            c.startup_probe
                        }
                    })
                    .and_then(|p| p.termination_grace_period_seconds)
                    .map(|s| Duration::from_secs(s.max(0) as u64));
                let grace = probe_grace.unwrap_or_else(|| self.pod_grace());
                let message = format!(
                    "Container {} failed {} probe, will be restarted",
                    event.container,
                    kind.as_str().to_ascii_lowercase()
                );
                let kill = self.container_kill(&event.container, &event.runtime_id, message, grace);
                self.watchers.spawn(kill.run());
            }
        }
    }

    async fn refresh(&mut self) -> Result<(), PodError> {
        let listed = match self.shim.as_mut() {
            Some(shim) => shim.list().await,
            None => return Ok(()),
        };
        match listed {
            Ok(listed) => {
                self.observe(&listed);
                Ok(())
            }
            Err(e) => {
                // The shim died: the next sandbox pass starts a new one, which adopts its
                // containers' records.
                self.shim = None;
                Err(PodError::Shim(e))
            }
        }
    }

    /// When the API-backed volumes should be written again: soon while one failed (upstream
    /// retries mounts with back-off), else after the kubelet's sync period, so an edited
    /// ConfigMap or Secret reaches running containers. `None` without such volumes.
    fn api_volumes_due(&self) -> Option<Instant> {
        let has_any = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(crate::volume_sources::is_api_volume);
        if !has_any || self.sandbox.is_none() {
            return None;
        }
        let failing = self
            .sandbox
            .as_ref()
            .is_some_and(|s| !s.volume_errors.is_empty());
        let every = if failing {
            API_VOLUME_RETRY
        } else {
            self.node.config.sync_frequency
        };
        Some(
            self.api_volumes_at
                .map_or_else(Instant::now, |at| at + every),
        )
    }

    /// Reads every configMap, secret, downwardAPI and projected volume from the API and
    /// publishes its files atomically. A failure is kept per volume (containers mounting it
    /// wait in ContainerCreating) and told with a FailedMount Event, as upstream.
    async fn refresh_api_volumes(&mut self) {
        self.api_volumes_at = Some(Instant::now());
        let pod_dir = self.pod_dir();
        let volumes: Vec<Volume> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter(|v| crate::volume_sources::is_api_volume(v))
            .cloned()
            .collect();
        let fs_group = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|c| c.fs_group)
            .and_then(|g| u32::try_from(g).ok());
        let downward = PodDownward {
            pod: &self.pod,
            host_ip: self.node.config.node_ip.to_string(),
            pod_ips: self
                .sandbox
                .as_ref()
                .map(|s| s.network.ips.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        };
        let mut results = Vec::new();
        for volume in &volumes {
            let written = async {
                let dir = sandbox::api_volume_dir(&pod_dir, volume).map_err(|e| error_chain(&e))?;
                let payload =
                    crate::volume_sources::resolve(&self.node.client, &self.pod, volume, &downward)
                        .await
                        .map_err(|e| e.to_string())?;
                crate::volume_sources::write_atomic(&dir, &payload, fs_group)
                    .map_err(|e| error_chain(&e))?;
                Ok::<_, String>(dir)
            }
            .await;
            results.push((volume.name.clone(), written));
        }
        let object = events::pod_reference(&self.pod);
        let Some(sandbox) = self.sandbox.as_mut() else {
            return;
        };
        for (name, written) in results {
            match written {
                Ok(dir) => {
                    sandbox.volume_errors.remove(&name);
                    sandbox.volumes.insert(
                        name,
                        HostVolume {
                            path: dir,
                            read_only: true,
                        },
                    );
                }
                Err(reason) => {
                    let message =
                        format!("MountVolume.SetUp failed for volume {name:?} : {reason}");
                    if sandbox.volume_errors.get(&name) != Some(&message) {
                        self.events
                            .warning(object.clone(), events::FAILED_MOUNT, message.clone());
                    }
                    sandbox.volume_errors.insert(name, message);
                }
            }
        }
    }

    async fn sync(&mut self) -> State {
        if self.gone {
            return State::Cleanup;
        }
        if self.deleting() {
            return State::Terminating;
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(pod = %self.sandbox_ref(), error = %error_chain(&e), "reading container states failed");
            self.retry_later().await;
            return State::Sandbox;
        }
        let volumes_due = self.api_volumes_due();
        if volumes_due.is_some_and(|due| due <= Instant::now()) {
            self.refresh_api_volumes().await;
        }
        let wake = self.sync_containers().await;
        let wake = match (wake, self.api_volumes_due()) {
            (Some(w), Some(v)) => Some(w.min(v)),
            (w, v) => w.or(v),
        };
        if let Err(e) = self.write_status().await {
            tracing::warn!(pod = %self.sandbox_ref(), error = %error_chain(&e), "pod status update failed");
            self.last_status = None;
            if matches!(&e, PodError::Api(kube::Error::Api(s)) if s.code == 404) {
                self.gone = true;
                return State::Cleanup;
            }
        }
        self.wait(wake).await;
        State::Sync
    }

    /// One pass over the containers: the first unfinished init container, else every app
    /// container that should (re)start. Returns when to look again for back-offs.
    async fn sync_containers(&mut self) -> Option<Instant> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut wake: Option<Instant> = None;
        let mut earliest = |w: Option<Instant>| {
            if let Some(w) = w {
                wake = Some(wake.map_or(w, |x: Instant| x.min(w)));
            }
        };
        for c in spec.init_containers.iter().flatten() {
            let Some(t) = self.containers.get(&c.name) else {
                continue;
            };
            if t.terminated().is_some_and(|t| t.exit_code == 0) {
                continue;
            }
            if t.running() {
                return None;
            }
            // A failed init container restarts unless restartPolicy is Never (then the pod fails).
            if t.last_exit().is_some() && policy == "Never" {
                return None;
            }
            earliest(self.start_if_due(c).await);
            return wake;
        }
        for c in &spec.containers {
            let Some(t) = self.containers.get(&c.name) else {
                continue;
            };
            if t.running() {
                continue;
            }
            let restart = match t.last_exit() {
                None => true,
                Some(code) => policy == "Always" || (policy == "OnFailure" && code != 0),
            };
            if restart {
                earliest(self.start_if_due(c).await);
            }
        }
        wake
    }

    /// Starts (or restarts) `c` unless its crash back-off runs; returns when to look again.
    async fn start_if_due(&mut self, c: &Container) -> Option<Instant> {
        // A deletion that arrived during this pass (e.g. while a postStart hook ran) starts
        // nothing more; the next step terminates the pod.
        if self.stopping() {
            return None;
        }
        let pod_label = self.pod_label();
        let reference = self.container_ref(&c.name);
        let base = self.node.config.backoff_base;
        let t = self.containers.get_mut(&c.name)?;
        if t.last_exit().is_some()
            && let Some(until) = t.backoff_until.filter(|u| *u > Instant::now())
        {
            let delay = backoff_delay(base, t.crashes);
            t.set_waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {} restarting failed container={} pod={pod_label}",
                    go_duration(delay),
                    c.name
                )),
            );
            // Once per back-off period; the recorder counts the periods.
            if t.backoff_event_for != Some(until) {
                t.backoff_event_for = Some(until);
                self.events.warning(
                    reference,
                    events::BACK_OFF,
                    format!(
                        "Back-off restarting failed container {} in pod {pod_label}",
                        c.name
                    ),
                );
            }
            return Some(until);
        }
        let image = match self.ensure_image(c).await {
            Ok(image) => image,
            Err(wake) => return wake,
        };
        self.start_container(c, image).await
    }

    /// Records a start failure's Events unless the same failure was the last one reported.
    fn report_failure(&mut self, name: &str, key: &str, report: impl FnOnce(&PodEvents)) {
        let Some(t) = self.containers.get_mut(name) else {
            return;
        };
        if t.failure_event.as_deref() != Some(key) {
            t.failure_event = Some(key.to_string());
            report(&self.events);
        }
    }

    /// The container's image per its imagePullPolicy, or the waiting state that explains why
    /// not (ErrImagePull, then ImagePullBackOff while backing off; ErrImageNeverPull;
    /// InvalidImageName), with upstream's image Events.
    async fn ensure_image(&mut self, c: &Container) -> Result<ImageRecord, Option<Instant>> {
        let name = c.image.clone().unwrap_or_default();
        let shown = with_default_tag(&name);
        let object = self.container_ref(&c.name);
        let reference = match ImageRef::parse(&name) {
            Ok(r) => r,
            Err(e) => {
                let message = format!("Failed to apply default image tag {name:?}: {e}");
                if let Some(t) = self.containers.get_mut(&c.name) {
                    t.set_waiting("InvalidImageName", Some(message.clone()));
                }
                self.report_failure(&c.name, "InvalidImageName", |events| {
                    events.warning(object.clone(), events::INSPECT_FAILED, message);
                    events.warning(object, events::FAILED, "Error: InvalidImageName");
                });
                return Err(None);
            }
        };
        let present = self.node.store.get(&reference).ok().flatten();
        let policy = c
            .image_pull_policy
            .as_deref()
            .and_then(PullPolicy::from_api);
        match runtime::image::pull_decision(&reference, policy, present.is_some()) {
            PullDecision::UsePresent => {
                if let Some(record) = present {
                    self.events.normal(
                        object,
                        events::PULLED_IMAGE,
                        format!("Container image {shown:?} already present on machine"),
                    );
                    return Ok(record);
                }
            }
            PullDecision::NeverPullMissing => {
                let message =
                    format!("Container image {shown:?} is not present with pull policy of Never");
                if let Some(t) = self.containers.get_mut(&c.name) {
                    t.set_waiting("ErrImageNeverPull", Some(message.clone()));
                }
                self.report_failure(&c.name, "ErrImageNeverPull", |events| {
                    events.warning(object.clone(), events::ERR_IMAGE_NEVER_PULL, message);
                    events.warning(object, events::FAILED, "Error: ErrImageNeverPull");
                });
                return Err(None);
            }
            PullDecision::Pull => {}
        }
        let base = self.node.config.backoff_base;
        {
            let t = self.containers.get_mut(&c.name).ok_or(None)?;
            if let Some(until) = t.image_backoff_until.filter(|u| *u > Instant::now()) {
                let last = t.image_error.clone().unwrap_or_default();
                t.set_waiting(
                    "ImagePullBackOff",
                    Some(format!(
                        "Back-off pulling image {name:?}: ErrImagePull: {last}"
                    )),
                );
                if t.image_backoff_event_for != Some(until) {
                    t.image_backoff_event_for = Some(until);
                    // Upstream records the pull back-off as a Normal Event.
                    self.events.normal(
                        object.clone(),
                        events::BACK_OFF,
                        format!("Back-off pulling image {shown:?}"),
                    );
                    self.events
                        .warning(object, events::FAILED, "Error: ImagePullBackOff");
                }
                return Err(Some(until));
            }
            if t.status.state.is_none() {
                t.set_waiting("ContainerCreating", None);
            }
        }
        // Tell the API the pod is pulling before a possibly long download.
        let _ = self.write_status().await;
        let credentials = self.pull_credentials(&reference.registry).await;
        self.events.normal(
            object.clone(),
            events::PULLING_IMAGE,
            format!("Pulling image {shown:?}"),
        );
        let began = Instant::now();
        let pulled = tokio::select! {
            r = self.node.puller.pull(&self.node.store, &reference, &credentials, &|_| {}) => r,
            _ = self.shutdown.cancelled() => return Err(None),
        };
        let t = self.containers.get_mut(&c.name).ok_or(None)?;
        match pulled {
            Ok(record) => {
                t.image_failures = 0;
                t.image_backoff_until = None;
                t.image_error = None;
                // Upstream truncates to milliseconds; pulls here never queue, so the time
                // including waiting is the pull's.
                let took = Duration::from_millis(began.elapsed().as_millis() as u64);
                self.events.normal(
                    object,
                    events::PULLED_IMAGE,
                    format!(
                        "Successfully pulled image {shown:?} in {} ({} including waiting). Image size: {} bytes.",
                        go_duration(took),
                        go_duration(took),
                        record.size
                    ),
                );
                Ok(record)
            }
            Err(e) => {
                t.image_failures += 1;
                // The first failure retries after `base` (upstream's image back-off has no free retry).
                let delay = backoff_delay(base, t.image_failures + 1);
                let until = Instant::now() + delay;
                t.image_backoff_until = Some(until);
                t.image_error = Some(e.to_string());
                t.set_waiting("ErrImagePull", Some(e.to_string()));
                self.events.warning(
                    object.clone(),
                    events::FAILED,
                    format!("Failed to pull image {shown:?}: {e}"),
                );
                self.events
                    .warning(object, events::FAILED, "Error: ErrImagePull");
                Err(Some(until))
            }
        }
    }

    /// Creates and starts attempt `restartCount (+1)` of `c`, then runs its postStart hook.
    /// Returns when to look at the pod again (a failed hook's restart).
    async fn start_container(&mut self, c: &Container, image: ImageRecord) -> Option<Instant> {
        let uid = self.record.uid.clone();
        let t = self.containers.get(&c.name)?;
        // restartCount counts attempts after the first.
        let attempt = match (&t.runtime_id, t.last_exit()) {
            (None, None) => u32::try_from(t.status.restart_count).unwrap_or(0),
            _ => u32::try_from(t.status.restart_count).unwrap_or(0) + 1,
        };
        let old_id = t.runtime_id.clone();
        let object = self.container_ref(&c.name);
        match self
            .create_container(c, &image, attempt, old_id.as_deref())
            .await
        {
            Ok((id, stop_signal)) => {
                if let Some(t) = self.containers.get_mut(&c.name) {
                    t.retire_state();
                    t.runtime_id = Some(id.clone());
                    t.status.restart_count = i32::try_from(attempt).unwrap_or(i32::MAX);
                    t.status.container_id = Some(format!("skiff://{id}"));
                    t.status.image = image.reference.to_string();
                    t.status.image_id = image.repo_digest();
                    t.stop_signal = stop_signal;
                    t.failure_event = None;
                }
                self.events.normal(
                    object.clone(),
                    events::CREATED,
                    format!("Created container: {}", c.name),
                );
                self.events.normal(
                    object.clone(),
                    events::STARTED,
                    format!("Started container {}", c.name),
                );
                if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
                    match self.run_post_start(c, &id, hook).await {
                        PostStart::Done => {}
                        PostStart::Interrupted => return None,
                        PostStart::Failed(message) => {
                            return self.post_start_failed(c, &id, object, message).await;
                        }
                    }
                }
                // The refresh sees it running, starts its probes and its exit watcher.
                if let Err(e) = self.refresh().await {
                    tracing::warn!(pod = %uid, error = %error_chain(&e), "reading container state failed");
                }
                None
            }
            Err(StartFailure::Config(message)) => {
                if let Some(t) = self.containers.get_mut(&c.name) {
                    t.set_waiting("CreateContainerConfigError", Some(message.clone()));
                }
                self.report_failure(&c.name, &message, |events| {
                    events.warning(object, events::FAILED, format!("Error: {message}"));
                });
                None
            }
            Err(StartFailure::Mount) => {
                // FailedMount was recorded when the volume could not be filled.
                if let Some(t) = self.containers.get_mut(&c.name) {
                    t.set_waiting("ContainerCreating", None);
                }
                None
            }
            Err(StartFailure::Create(message)) => {
                if let Some(t) = self.containers.get_mut(&c.name) {
                    t.set_waiting("CreateContainerError", Some(message.clone()));
                }
                self.report_failure(&c.name, &message, |events| {
                    events.warning(object, events::FAILED, format!("Error: {message}"));
                });
                None
            }
            Err(StartFailure::Start(message)) => {
                // The runtime could not start the process (a missing executable…): upstream
                // reports it as terminated with StartError and exit code 128, then backs off.
                self.events
                    .warning(object, events::FAILED, format!("Error: {message}"));
                let base = self.node.config.backoff_base;
                let t = self.containers.get_mut(&c.name)?;
                t.retire_state();
                t.runtime_id = None;
                t.status.restart_count = i32::try_from(attempt).unwrap_or(i32::MAX);
                t.crashes += 1;
                let until = Instant::now() + backoff_delay(base, t.crashes);
                t.backoff_until = Some(until);
                let at = now();
                t.status.state = Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 128,
                        reason: Some("StartError".into()),
                        message: Some(message),
                        started_at: Some(at.clone()),
                        finished_at: Some(at),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                });
                t.status.ready = false;
                t.status.started = Some(false);
                Some(until)
            }
        }
    }

    /// Runs the postStart hook of the just started `c`. Like the kubelet's, it holds the pod's
    /// sync (later containers start after it, and the container is not Running in the status
    /// until it returns), but a deletion or the agent stopping interrupts the wait.
    async fn run_post_start(
        &mut self,
        c: &Container,
        id: &str,
        hook: LifecycleHandler,
    ) -> PostStart {
        if self.stopping() {
            return PostStart::Interrupted;
        }
        let ctx = self.hook_context(c, id);
        let run = async move { hooks::run(&hook, &ctx).await };
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => {
                    return match result {
                        Ok(()) => PostStart::Done,
                        Err(message) => PostStart::Failed(message),
                    };
                }
                _ = self.shutdown.cancelled() => return PostStart::Interrupted,
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        return PostStart::Interrupted;
                    }
                    if self.stopping() {
                        return PostStart::Interrupted;
                    }
                }
            }
        }
    }

    /// A failed postStart hook: upstream records FailedPostStartHook, kills the container
    /// (preStop and grace period included) and lets restartPolicy decide; meanwhile the
    /// container waits with reason PostStartHookError.
    async fn post_start_failed(
        &mut self,
        c: &Container,
        id: &str,
        object: ObjectReference,
        message: String,
    ) -> Option<Instant> {
        tracing::info!(pod = %self.sandbox_ref(), container = %c.name, %message, "postStart hook failed; killing the container");
        self.events
            .warning(object, events::FAILED_POST_START_HOOK, message.clone());
        let grace = self.pod_grace();
        self.container_kill(&c.name, id, "FailedPostStartHook".into(), grace)
            .run()
            .await;
        if let Err(e) = self.refresh().await {
            tracing::warn!(pod = %self.sandbox_ref(), error = %error_chain(&e), "reading container state failed");
        }
        let t = self.containers.get_mut(&c.name)?;
        let until = t.backoff_until.unwrap_or_else(Instant::now);
        if t.terminated().is_some() {
            t.set_waiting("PostStartHookError", Some(message));
        }
        Some(until)
    }

    /// Credentials for `registry` from the pod's imagePullSecrets (missing or unreadable
    /// secrets are skipped, as the kubelet does, and the pull goes anonymous).
    async fn pull_credentials(&self, registry: &str) -> Credentials {
        let names: Vec<String> = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect();
        let api: Api<Secret> = Api::namespaced(self.node.client.clone(), &self.record.namespace);
        let mut entries = Vec::new();
        for name in names {
            match api.get_opt(&name).await {
                Ok(Some(secret)) => {
                    let data = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    entries.extend(credentials::entries_from_secret(
                        secret.type_.as_deref(),
                        &data,
                    ));
                }
                Ok(None) => {
                    tracing::warn!(pod = %self.sandbox_ref(), secret = %name, "imagePullSecret not found")
                }
                Err(e) => {
                    tracing::warn!(pod = %self.sandbox_ref(), secret = %name, error = %e, "reading imagePullSecret failed")
                }
            }
        }
        credentials::for_registry(&entries, registry)
    }

    /// The ConfigMaps and Secrets the container's environment refers to.
    async fn env_sources(&self, c: &Container) -> Result<EnvSources, String> {
        let (config_maps, secrets) = EnvSources::wanted(c);
        let mut out = EnvSources::default();
        let namespace = &self.record.namespace;
        let api: Api<ConfigMap> = Api::namespaced(self.node.client.clone(), namespace);
        for name in config_maps {
            let found = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("reading ConfigMap {namespace}/{name}: {e}"))?;
            out.config_maps
                .insert(name, found.map(|cm| cm.data.unwrap_or_default()));
        }
        let api: Api<Secret> = Api::namespaced(self.node.client.clone(), namespace);
        for name in secrets {
            let found = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("reading Secret {namespace}/{name}: {e}"))?;
            let data = found.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            });
            out.secrets.insert(name, data);
        }
        Ok(out)
    }

    /// Prepares the rootfs and runtime spec and has the shim start attempt `attempt`.
    async fn create_container(
        &mut self,
        c: &Container,
        image: &ImageRecord,
        attempt: u32,
        old_id: Option<&str>,
    ) -> Result<(String, Option<Signal>), StartFailure> {
        let sources = self.env_sources(c).await.map_err(StartFailure::Create)?;
        let sandbox = self
            .sandbox
            .as_ref()
            .ok_or_else(|| StartFailure::Create("the pod sandbox is not ready".into()))?;
        for vm in c.volume_mounts.iter().flatten() {
            if let Some(message) = sandbox.volume_errors.get(&vm.name) {
                let from_api = self
                    .pod
                    .spec
                    .iter()
                    .flat_map(|s| s.volumes.iter().flatten())
                    .any(|v| v.name == vm.name && crate::volume_sources::is_api_volume(v));
                // The kubelet keeps such a pod in ContainerCreating and retries the mount.
                return Err(if from_api {
                    StartFailure::Mount
                } else {
                    StartFailure::Config(message.clone())
                });
            }
        }
        let image_config = self
            .node
            .store
            .config(image)
            .map_err(|e| StartFailure::Create(format!("reading the image config: {e}")))?;
        if let (Some(old), Some(shim)) = (old_id, self.shim.as_mut()) {
            // The previous attempt's log stays (kubectl logs --previous); its runtime state goes.
            let _ = shim.delete(old).await;
        }
        let container_dir = self.pod_dir().join("containers").join(&c.name);
        let (store, record, dir) = (
            self.node.store.clone(),
            image.clone(),
            container_dir.clone(),
        );
        let rootfs = tokio::task::spawn_blocking(move || {
            runtime::image::snapshot::cleanup_rootfs(&store, &dir)?;
            runtime::image::snapshot::prepare_rootfs(&store, &record, &dir)
        })
        .await
        .map_err(|e| StartFailure::Create(format!("preparing the root filesystem: {e}")))?
        .map_err(|e| StartFailure::Create(format!("preparing the root filesystem: {e}")))?;
        let termination_log = (c
            .termination_message_path
            .as_deref()
            .unwrap_or("/dev/termination-log")
            == "/dev/termination-log")
            .then(|| container_dir.join("termination-log"));
        if let Some(path) = &termination_log {
            std::fs::write(path, b"")
                .map_err(|e| StartFailure::Create(format!("creating {path:?}: {e}")))?;
        }
        let mut namespaces = vec![
            Namespace {
                kind: NamespaceKind::Pid,
                path: None,
            },
            Namespace {
                kind: NamespaceKind::Mount,
                path: None,
            },
        ];
        // hostIPC pods stay in the host's IPC namespace: no entry at all.
        if let Some(ipc) = &sandbox.shared.ipc {
            namespaces.push(Namespace {
                kind: NamespaceKind::Ipc,
                path: Some(ipc.clone()),
            });
        }
        if !self.record.host_network {
            namespaces.push(Namespace {
                kind: NamespaceKind::Uts,
                path: sandbox.shared.uts.clone(),
            });
            namespaces.push(Namespace {
                kind: NamespaceKind::Network,
                path: sandbox.network.netns.clone(),
            });
        }
        let host_ip = self.node.config.node_ip.to_string();
        let env = ContainerEnvironment {
            pod: &self.pod,
            image: &image_config,
            rootfs: &rootfs.path,
            host_ip,
            pod_ips: sandbox
                .network
                .ips
                .iter()
                .map(ToString::to_string)
                .collect(),
            volumes: &sandbox.volumes,
            sources: &sources,
            namespaces,
            cgroup_path: format!("{}/{}", self.pod_cgroup(), c.name),
            hosts_file: Some(sandbox.hosts.clone()),
            resolv_conf: Some(sandbox.resolv.clone()),
            termination_log,
        };
        let mut config =
            container_config(c, &env).map_err(|e| StartFailure::Config(e.to_string()))?;
        // One /dev/shm for the whole pod, like the sandbox's upstream (a volume the user
        // mounts there wins).
        if let Some(shm) = &sandbox.shared.shm
            && !config
                .mounts
                .iter()
                .any(|m| m.destination == std::path::Path::new("/dev/shm"))
        {
            config.mounts.push(runtime::container::Mount {
                destination: "/dev/shm".into(),
                source: runtime::container::MountSource::Bind(shm.clone()),
                read_only: false,
                options: vec![],
            });
        }
        if self.record.host_network {
            // hostNetwork pods share the host's UTS namespace and so its hostname.
            config.hostname = None;
        }
        let spec = runtime::container::runtime_spec(&config)
            .map_err(|e| StartFailure::Config(e.to_string()))?;
        let id = format!("{}-{attempt}-{}", self.record.uid, c.name);
        let log = self.node.paths.container_log(
            &self.record.namespace,
            &self.record.name,
            &self.record.uid,
            &c.name,
            attempt,
        );
        let shim = self
            .shim
            .as_mut()
            .ok_or_else(|| StartFailure::Create("the pod's shim is not running".into()))?;
        shim.start(&id, &spec, &log)
            .await
            .map_err(|e| StartFailure::Start(error_chain(&e)))?;
        let stop_signal = image_config.stop_signal.as_deref().and_then(|name| {
            let parsed = kill::parse_signal(name);
            if parsed.is_none() {
                tracing::warn!(container = %id, signal = %name, "the image's StopSignal is not a known signal; SIGTERM stops the container");
            }
            parsed
        });
        Ok((id, stop_signal))
    }

    fn container_status(&self, c: &Container, default_reason: &str) -> ContainerStatus {
        let mut s = self
            .containers
            .get(&c.name)
            .map(|t| t.status.clone())
            .unwrap_or_default();
        s.name = c.name.clone();
        if s.image.is_empty() {
            s.image = c.image.clone().unwrap_or_default();
        }
        if s.state.is_none() {
            s.state = Some(waiting(default_reason, None));
            s.started = Some(false);
        }
        s
    }

    fn build_status(&self, sandbox_ready: bool) -> PodStatus {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let previous = self.pod.status.clone().unwrap_or_default();
        let init: Vec<ContainerStatus> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.container_status(c, "PodInitializing"))
            .collect();
        let initialized = status::initialized(&init, &spec);
        let default_reason = if initialized {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let apps: Vec<ContainerStatus> = spec
            .containers
            .iter()
            .map(|c| self.container_status(c, default_reason))
            .collect();
        let phase = pod_phase(&spec, &init, &apps);
        let conditions = pod_conditions(
            &spec,
            phase,
            sandbox_ready,
            &init,
            &apps,
            previous.conditions.as_deref().unwrap_or_default(),
            &now(),
        );
        let host_ip = self.node.config.node_ip.to_string();
        let ips: Vec<String> = self
            .sandbox
            .as_ref()
            .map(|s| s.network.ips.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: ips.first().cloned(),
            pod_ips: (!ips.is_empty())
                .then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
            start_time: self.start_time.clone(),
            init_container_statuses: (!init.is_empty()).then_some(init),
            container_statuses: Some(apps),
            qos_class: previous.qos_class,
            ..PodStatus::default()
        }
    }

    /// Writes the status through `pods/<name>/status` when it changed. A merge patch replaces
    /// the lists (containerStatuses, conditions) whole; scalar fields no longer set are nulled.
    async fn write_status(&mut self) -> Result<(), PodError> {
        let status = self.build_status(self.sandbox.is_some());
        let mut value = serde_json::to_value(&status).map_err(PodError::Encode)?;
        // Conditions carry a fresh "now" for new transitions; compare without times.
        let comparable = strip_times(&value);
        if self.last_status.as_ref() == Some(&comparable) {
            return Ok(());
        }
        if let Some(map) = value.as_object_mut() {
            for key in [
                "message",
                "reason",
                "podIP",
                "podIPs",
                "initContainerStatuses",
            ] {
                map.entry(key).or_insert(Value::Null);
            }
        }
        let updated = self
            .api()
            .patch_status(
                &self.record.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": value })),
            )
            .await
            .map_err(PodError::Api)?;
        // Keep our view of the object current (transition times, PodScheduled).
        if updated.metadata.uid.as_deref() == Some(&self.record.uid) {
            self.pod.status = updated.status;
        }
        self.last_status = Some(comparable);
        Ok(())
    }

    /// Graceful deletion: every running container is stopped at once, each as upstream's
    /// `killContainer` does (Killing Event, preStop within the grace period, the stop signal,
    /// SIGKILL when the rest of the grace period runs out).
    async fn terminate(&mut self) -> State {
        if self.shim.is_none() && self.connect_shim().await.is_err() {
            return State::Cleanup;
        }
        let grace = self.pod_grace();
        let Some(shim) = self.shim.as_mut() else {
            return State::Cleanup;
        };
        let running: Vec<String> = shim
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.state == runtime::container::ContainerState::Running)
            .map(|s| s.id)
            .collect();
        let prefix = format!("{}-", self.record.uid);
        let mut kills = JoinSet::new();
        for id in running {
            // Runtime ids are `<pod uid>-<attempt>-<container name>`.
            let name = id
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split_once('-'))
                .map(|(_, name)| name.to_string())
                .unwrap_or_default();
            let kill = self.container_kill(&name, &id, format!("Stopping container {name}"), grace);
            kills.spawn(kill.run());
        }
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return State::Terminating,
                done = kills.join_next() => if done.is_none() { break },
            }
        }
        self.take_update();
        // The containers' final states, as the kubelet reports them before the object goes.
        if !self.gone && self.refresh().await.is_ok() {
            let _ = self.write_status().await;
        }
        State::Cleanup
    }

    async fn cleanup(&mut self) -> State {
        match self.try_cleanup().await {
            Ok(()) => State::Done,
            Err(e) => {
                tracing::warn!(pod = %self.sandbox_ref(), error = %error_chain(&e), "pod teardown failed; retrying");
                self.retry_later().await;
                State::Cleanup
            }
        }
    }

    async fn try_cleanup(&mut self) -> Result<(), PodError> {
        self.watchers.abort_all();
        let pod_dir = self.pod_dir();
        if pod_dir.exists() {
            let has_state = pod_dir
                .join(runtime::container::protocol::STATE_FILE)
                .exists();
            if self.shim.is_none() && has_state {
                self.connect_shim().await?;
            }
            if let Some(mut shim) = self.shim.take() {
                shim.shutdown().await.map_err(PodError::Shim)?;
            }
            // The shim removes its socket as it exits; wait for that so no shim outlives the pod.
            let socket = self.node.paths.shim_socket(&self.record.uid);
            for _ in 0..100 {
                if !socket.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let store = self.node.store.clone();
            let containers_dir = pod_dir.join("containers");
            tokio::task::spawn_blocking(move || -> Result<(), PodError> {
                for entry in std::fs::read_dir(&containers_dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    runtime::image::snapshot::cleanup_rootfs(&store, &entry.path())
                        .map_err(PodError::Rootfs)?;
                }
                Ok(())
            })
            .await
            .map_err(PodError::Blocking)??;
        }
        self.node
            .layout
            .remove(&self.pod_cgroup())
            .map_err(PodError::Cgroup)?;
        let network = self.network();
        let pod_ref = self.sandbox_ref();
        network.teardown(&pod_ref).await?;
        self.sandbox = None;
        sandbox::remove(&pod_dir)?;
        let logs = self.node.paths.pod_log_dir(
            &self.record.namespace,
            &self.record.name,
            &self.record.uid,
        );
        match std::fs::remove_dir_all(&logs) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PodError::Io {
                    step: "removing pod logs",
                    path: logs,
                    source: e,
                });
            }
            _ => {}
        }
        if !self.gone {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.record.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.api().delete(&self.record.name, &params).await {
                Ok(_) => {}
                // Gone already, or a new pod of the same name (the UID precondition failed).
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(PodError::Api(e)),
            }
        }
        tracing::info!(pod = %self.sandbox_ref(), "pod removed from the node");
        Ok(())
    }
}

/// An image name as upstream's `applyDefaultImageTag` shows it in Events: `:latest` added when
/// it has neither tag nor digest.
fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The containers' hostPorts, for the CNI `portMappings` capability (hostNetwork pods use the
/// host's ports directly and need none).
fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    if spec.host_network == Some(true) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        for port in c.ports.iter().flatten() {
            let Some(host_port) = port
                .host_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
            else {
                continue;
            };
            let Ok(container_port) = u16::try_from(port.container_port) else {
                continue;
            };
            let protocol = match port.protocol.as_deref() {
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                _ => Protocol::Tcp,
            };
            let host_ip = port.host_ip.as_deref().and_then(|ip| ip.parse().ok());
            out.push(PortMapping {
                host_port,
                container_port,
                protocol,
                host_ip,
            });
        }
    }
    out
}

/// Why a container could not be started, by the waiting reason it maps to.
/// The pod cgroup's limits as the kubelet computes them (pkg/kubelet/cm `ResourceConfigForPod`):
/// memory and CPU quota only when every app container has that limit (the sum, or the largest
/// init container's if larger, plus the pod overhead), CPU shares from the summed requests.
fn pod_limits(pod: &Pod, pids_max: Option<i64>) -> runtime::container::PodLimits {
    let spec = pod.spec.clone().unwrap_or_default();
    let quantity = |c: &Container, kind: &str, name: &str| -> Option<i64> {
        let r = c.resources.as_ref()?;
        let map = if kind == "limits" {
            r.limits.as_ref()?
        } else {
            r.requests.as_ref()?
        };
        api::validation::parse_quantity(&map.get(name)?.0)
            .ok()
            .and_then(|m| i64::try_from(m).ok())
    };
    // Millis summed over app containers, `None` if one lacks it; the largest init container's
    // if that is more (init containers run one at a time, before the app containers).
    let total = |kind: &str, name: &str| -> Option<i64> {
        let apps: Option<i64> = spec
            .containers
            .iter()
            .map(|c| quantity(c, kind, name))
            .sum();
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .filter_map(|c| quantity(c, kind, name))
            .max()
            .unwrap_or(0);
        let overhead = spec
            .overhead
            .as_ref()
            .and_then(|o| o.get(name))
            .and_then(|q| api::validation::parse_quantity(&q.0).ok())
            .and_then(|m| i64::try_from(m).ok())
            .unwrap_or(0);
        apps.map(|a| a.max(init) + overhead)
    };
    const PERIOD_US: u64 = 100_000;
    let requested_cpu: i64 = spec
        .containers
        .iter()
        .filter_map(|c| quantity(c, "requests", "cpu").or_else(|| quantity(c, "limits", "cpu")))
        .sum();
    runtime::container::PodLimits {
        memory_bytes: total("limits", "memory").map(|millis| millis / 1000),
        cpu_quota_us: total("limits", "cpu")
            .map(|millis| (millis * PERIOD_US as i64 / 1000).max(1000)),
        cpu_period_us: PERIOD_US,
        cpu_shares: Some(
            u64::try_from(requested_cpu * 1024 / 1000)
                .unwrap_or(0)
                .max(2),
        ),
        pids_max,
    }
}

/// How often a failing configMap/secret volume is tried again.
const API_VOLUME_RETRY: Duration = Duration::from_secs(2);

/// The downward API's view of a pod on this node, for its volumes.
struct PodDownward<'a> {
    pod: &'a Pod,
    host_ip: String,
    pod_ips: Vec<String>,
}

impl crate::volume_sources::DownwardValues for PodDownward<'_> {
    fn field(&self, path: &str) -> Option<String> {
        super::container::pod_field(self.pod, &self.host_ip, &self.pod_ips, path)
    }

    fn resource(
        &self,
        container: &str,
        resource: &str,
        divisor: Option<&str>,
    ) -> Result<String, String> {
        let spec = self
            .pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .find(|c| c.name == container)
            .ok_or_else(|| format!("container {container:?} is not in the pod"))?;
        super::container::resource_field(spec, resource, divisor)
    }
}

enum StartFailure {
    /// A configMap/secret/… volume it mounts could not be filled yet.
    Mount,
    Config(String),
    Create(String),
    Start(String),
}

/// The status without condition transition times, to tell real changes from re-renders.
fn strip_times(status: &Value) -> Value {
    let mut v = status.clone();
    if let Some(conditions) = v.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conditions {
            if let Some(m) = c.as_object_mut() {
                m.remove("lastTransitionTime");
                m.remove("lastProbeTime");
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_limits_follow_the_kubelet() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "resources": {"limits": {"memory": "256Mi"}}}],
                "containers": [
                    {"name": "a", "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}}},
                    {"name": "b", "resources": {"limits": {"memory": "64Mi"}}},
                ],
            },
        }))
        .expect("pod");
        let l = pod_limits(&pod, Some(100));
        // The init container's 256Mi is more than the apps' 128Mi together.
        assert_eq!(l.memory_bytes, Some(256 * 1024 * 1024));
        // b has no cpu limit: no pod-wide quota.
        assert_eq!(l.cpu_quota_us, None);
        assert_eq!(l.cpu_shares, Some(256));
        assert_eq!(l.pids_max, Some(100));
        let besteffort: Pod = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}),
        )
        .expect("pod");
        let l = pod_limits(&besteffort, None);
        assert_eq!(
            (l.memory_bytes, l.cpu_quota_us, l.cpu_shares),
            (None, None, Some(2))
        );
    }

    #[test]
    fn backoff_doubles_from_the_second_restart_up_to_five_minutes() {
        let base = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=8).map(|n| backoff_delay(base, n).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff_delay(base, 200), MAX_BACKOFF);
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(go_duration(MAX_BACKOFF), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(1234)), "1.234s");
        assert_eq!(go_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_millis(62_050)), "1m2.05s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn waiting_moves_a_termination_to_last_state() {
        let mut t = Tracked::default();
        t.status.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        t.set_waiting("CrashLoopBackOff", Some("m".into()));
        assert_eq!(t.last_exit(), Some(1));
        assert!(t.terminated().is_none());
        assert_eq!(
            t.status
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code),
            Some(1)
        );
        t.set_waiting("CrashLoopBackOff", Some("again".into()));
        assert_eq!(t.last_exit(), Some(1), "a second wait keeps the last state");
    }

    #[test]
    fn status_comparison_ignores_transition_times() {
        let a = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "x"}]});
        let b = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "y"}]});
        assert_eq!(strip_times(&a), strip_times(&b));
    }
}
