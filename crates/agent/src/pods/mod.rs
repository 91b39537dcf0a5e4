//! Pods bound to this node: [`PodManager`] watches them (field selector `spec.nodeName`) and
//! runs one `worker::PodWorker` per pod UID.
//!
//! * `worker`: the per-pod state machine — sandbox, images, init then app containers through
//!   the pod's shim, restart policy and back-off, status writes, graceful deletion, teardown.
//! * `container`: a Kubernetes container → the runtime's `ContainerConfig` (pure).
//! * `credentials`: registry credentials from imagePullSecrets (pure).
//! * `probe`: liveness, readiness and startup probes; `handler` runs their exec, httpGet and
//!   tcpSocket checks (shared with hooks) and `grpc` their gRPC health checks.
//! * `hooks`: postStart and preStop lifecycle hooks; `kill`: stopping one container (Killing
//!   Event, preStop, the image's stop signal, grace period, SIGKILL).
//! * `events`: the kubelet's Events about the pod, written in order off the worker's path.
//! * `status`: phase and conditions from container statuses (pure).
//! * `sandbox`: the pod directory, hosts and resolv.conf files, volumes.
//!
//! At start the manager lists the node's pods and re-adopts them (their shims kept the
//! containers running); pod directories whose object is gone are torn down.

mod container;
mod credentials;
mod events;
mod grpc;
mod handler;
mod hooks;
mod kill;
mod probe;
mod sandbox;
pub use sandbox::ClusterDns;
mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use runtime::container::cgroup::CgroupLayout;
use runtime::image::Store;
use runtime::image::pull::Puller;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use container::{
    ContainerConfigError, ContainerEnvironment, HostVolume, container_config, expand, process_args,
};
pub use sandbox::{PodRecord, SandboxError};
pub use status::{pod_conditions, pod_phase, terminated_reason};

use crate::node::{AgentConfig, error_chain};
use crate::paths::NodePaths;
use worker::PodWorker;

/// A failed step of a pod worker. All are retried by the worker (a sandbox or teardown step
/// again after a second; a container on its next sync), so none ends the worker.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("talking to the pod's shim")]
    Shim(#[source] runtime::container::ClientError),
    #[error("pod network")]
    Network(#[from] crate::network::NetworkError),
    #[error("pod sandbox")]
    Sandbox(#[from] SandboxError),
    #[error("removing a container root filesystem")]
    Rootfs(#[source] runtime::image::snapshot::SnapshotError),
    #[error("removing the pod cgroup")]
    Cgroup(#[source] runtime::container::cgroup::CgroupError),
    #[error("{step} {path:?}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod API request")]
    Api(#[source] kube::Error),
    #[error("encoding the pod status")]
    Encode(#[source] serde_json::Error),
    #[error("a blocking task panicked")]
    Blocking(#[source] tokio::task::JoinError),
}

/// What every pod worker of the node shares.
pub(crate) struct NodeContext {
    pub config: Arc<AgentConfig>,
    pub client: Client,
    pub store: Store,
    pub puller: Puller,
    pub paths: NodePaths,
    pub layout: CgroupLayout,
    /// Records the kubelet's Events (source component "kubelet"), shared so repeats of one
    /// pod's Event are counted together.
    pub recorder: controllers::events::EventRecorder,
}

/// Watches the node's pods and runs their workers.
pub struct PodManager {
    node: Arc<NodeContext>,
}

impl PodManager {
    pub fn new(config: Arc<AgentConfig>, client: Client, store: Store) -> PodManager {
        let node = NodeContext {
            paths: config.paths(),
            puller: Puller::new(config.registry.clone()),
            layout: CgroupLayout::detect(),
            recorder: controllers::events::EventRecorder::new(
                client.clone(),
                "kubelet",
                config.node_name.clone(),
            ),
            config,
            client,
            store,
        };
        PodManager {
            node: Arc::new(node),
        }
    }

    /// Runs until `shutdown`; then waits for the workers, which stop without touching their
    /// containers.
    pub async fn run(self, shutdown: CancellationToken) {
        let api: Api<Pod> = Api::all(self.node.client.clone());
        let selector = format!("spec.nodeName={}", self.node.config.node_name);
        let mut events =
            watcher::watcher(api, watcher::Config::default().fields(&selector)).boxed();
        let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
        let mut tasks: JoinSet<String> = JoinSet::new();
        let mut listed: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(uid) = done {
                        workers.remove(&uid);
                    }
                }
                event = events.next() => match event {
                    None => break,
                    Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
                    Some(Ok(Event::InitApply(pod) | Event::Apply(pod))) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        if let Some(seen) = listed.as_mut() {
                            seen.insert(uid.clone());
                        }
                        match workers.get(&uid) {
                            Some(tx) => {
                                tx.send_replace(Some(pod));
                            }
                            None => {
                                let (tx, rx) = watch::channel(Some(pod.clone()));
                                workers.insert(uid, tx);
                                let worker = PodWorker::new(self.node.clone(), pod, rx, shutdown.clone());
                                tasks.spawn(worker.run());
                            }
                        }
                    }
                    Some(Ok(Event::Delete(pod))) => {
                        if let Some(tx) = pod.metadata.uid.as_ref().and_then(|uid| workers.get(uid)) {
                            tx.send_replace(None);
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        let seen = listed.take().unwrap_or_default();
                        for (uid, tx) in &workers {
                            if !seen.contains(uid) {
                                tx.send_replace(None);
                            }
                        }
                        for record in self.orphans(&workers) {
                            let (tx, _) = watch::channel(None);
                            workers.insert(record.uid.clone(), tx);
                            tasks.spawn(PodWorker::orphan(self.node.clone(), record, shutdown.clone()).run());
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %error_chain(&e), "watching this node's pods failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Pod directories without a worker: their pods were deleted while no agent ran.
    fn orphans(&self, workers: &HashMap<String, watch::Sender<Option<Pod>>>) -> Vec<PodRecord> {
        let dir = self.node.paths.root.join("pods");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let uid = entry.file_name().to_string_lossy().into_owned();
                if workers.contains_key(&uid) {
                    return None;
                }
                Some(sandbox::read_record(&entry.path()).unwrap_or(PodRecord {
                    namespace: String::new(),
                    name: String::new(),
                    uid,
                    host_network: false,
                }))
            })
            .collect()
    }
}
