//! The pod garbage collector (upstream `pkg/controller/podgc`, v1.33). Every
//! `gc_check_period` it force-deletes (grace period 0) pods nobody else will finish:
//!
//! * terminated pods (Succeeded/Failed) beyond `terminated_pod_threshold`, evicted ones
//!   first, then oldest first;
//! * pods bound to a Node that no longer exists — after `quarantine` the Node is looked up
//!   once more (a Node may be re-registering), then the pods get the `DisruptionTarget`
//!   condition (`DeletionByPodGC`), phase Failed, and are deleted;
//! * terminating pods of Nodes that are not Ready and carry the
//!   `node.kubernetes.io/out-of-service` taint (non-graceful node shutdown, KEP-2268);
//! * terminating pods that were never scheduled.
//!
//! Each pass works from the caches' current state; the only memory is when a missing Node
//! was first noticed. Upstream records no Events here; neither does this controller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Context, error_chain};

/// Pod GC settings; the defaults are upstream's.
#[derive(Clone, Debug, PartialEq)]
pub struct PodGcConfig {
    /// Terminated pods kept before the oldest are deleted (`--terminated-pod-gc-threshold`,
    /// 12500; 0 disables that part).
    pub terminated_pod_threshold: usize,
    /// How often the collector runs (upstream `gcCheckPeriod`, 20 s).
    pub gc_check_period: Duration,
    /// How long a Node must stay missing before its pods go (upstream `quarantineTime`, 40 s).
    pub quarantine: Duration,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        Self {
            terminated_pod_threshold: 12_500,
            gc_check_period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

/// The pod GC settings of this server.
pub fn config_from(ctx: &Context) -> PodGcConfig {
    ctx.config.pod_gc.clone()
}

/// Why the collector stopped or one deletion failed. Deletions are retried on the next pass.
#[derive(Debug, thiserror::Error)]
pub enum PodGcError {
    #[error("the {resource} watch stopped before its first list completed")]
    CacheNotReady { resource: &'static str },
    #[error("looking up node {node} (is it really gone?)")]
    GetNode {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("marking pod {pod} Failed before deleting it (PATCH pods/status)")]
    MarkFailed {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("force-deleting pod {pod}")]
    Delete {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs with [`config_from`] until `cancel` or `ctx.shutdown`.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), PodGcError> {
    let config = config_from(&ctx);
    run_with(ctx, config, cancel).await
}

/// Runs with explicit settings until `cancel` or `ctx.shutdown`.
pub async fn run_with(
    ctx: Context,
    config: PodGcConfig,
    cancel: CancellationToken,
) -> Result<(), PodGcError> {
    let mut watches = JoinSet::new();
    let pods = cache(&mut watches, Api::<Pod>::all(ctx.client.clone()));
    let nodes = cache(&mut watches, Api::<Node>::all(ctx.client.clone()));
    let stopped = async {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = ctx.shutdown.cancelled() => {}
        }
    };
    tokio::pin!(stopped);
    let ready = async {
        pods.wait_until_ready()
            .await
            .map_err(|_| PodGcError::CacheNotReady { resource: "pods" })?;
        nodes
            .wait_until_ready()
            .await
            .map_err(|_| PodGcError::CacheNotReady { resource: "nodes" })
    };
    tokio::select! {
        r = ready => r?,
        _ = &mut stopped => return Ok(()),
    }
    info!(?config, "pod garbage collector started");
    let mut gc = PodGc {
        client: ctx.client.clone(),
        config,
        pods,
        nodes,
        missing_since: HashMap::new(),
    };
    loop {
        gc.pass().await;
        tokio::select! {
            _ = &mut stopped => break,
            _ = tokio::time::sleep(gc.config.gc_check_period) => {}
        }
    }
    watches.shutdown().await;
    info!("pod garbage collector stopped");
    Ok(())
}

fn cache<K>(watches: &mut JoinSet<()>, api: Api<K>) -> Store<K>
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
                    debug!(error = %e, "pod GC watch");
                }
                std::future::ready(())
            })
            .await;
    });
    reader
}

struct PodGc {
    client: kube::Client,
    config: PodGcConfig,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Nodes referenced by pods but absent from the cache, and when that was first noticed.
    missing_since: HashMap<String, Instant>,
}

/// Why a pod is collected: decides the condition and the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Terminated,
    NodeGone,
    OutOfService,
    Unscheduled,
}

impl PodGc {
    /// One collection, in upstream's order.
    async fn pass(&mut self) {
        let pods = self.pods.state();
        for pod in terminated_beyond_threshold(&pods, self.config.terminated_pod_threshold) {
            self.collect(&pod, Reason::Terminated).await;
        }
        for pod in self.orphaned(&pods).await {
            self.collect(&pod, Reason::NodeGone).await;
        }
        let nodes: HashMap<String, Arc<Node>> = self
            .nodes
            .state()
            .into_iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n)))
            .collect();
        for pod in &pods {
            if pod.metadata.deletion_timestamp.is_none() {
                continue;
            }
            match pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
            {
                None => self.collect(pod, Reason::Unscheduled).await,
                Some(node) => {
                    if nodes.get(node).is_some_and(|n| out_of_service(n)) {
                        self.collect(pod, Reason::OutOfService).await;
                    }
                }
            }
        }
    }

    /// Pods of Nodes missing from the cache for longer than the quarantine and confirmed
    /// gone by a direct lookup (upstream `gcOrphaned` with its delaying queue).
    async fn orphaned(&mut self, pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
        let existing: HashSet<String> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let mut by_missing_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in pods {
            let Some(node) = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            if !existing.contains(&node) {
                by_missing_node.entry(node).or_default().push(pod.clone());
            }
        }
        let now = Instant::now();
        self.missing_since
            .retain(|node, _| by_missing_node.contains_key(node));
        let mut orphans = Vec::new();
        let api: Api<Node> = Api::all(self.client.clone());
        for (node, pods) in by_missing_node {
            let since = *self.missing_since.entry(node.clone()).or_insert(now);
            if now.saturating_duration_since(since) < self.config.quarantine {
                continue;
            }
            match api.get_opt(&node).await {
                Ok(None) => {
                    for pod in pods {
                        info!(pod = %key(&pod), %node, "found orphaned pod assigned to a node that no longer exists; deleting");
                        orphans.push(pod);
                    }
                }
                // Back: the cache will show it; the quarantine starts over if it goes again.
                Ok(Some(_)) => {
                    self.missing_since.remove(&node);
                }
                Err(source) => {
                    let e = PodGcError::GetNode {
                        node: node.clone(),
                        source,
                    };
                    warn!(error = %error_chain(&e), "will retry");
                }
            }
        }
        orphans
    }

    async fn collect(&self, pod: &Pod, reason: Reason) {
        if let Err(e) = self.mark_failed_and_delete(pod, reason).await {
            warn!(error = %error_chain(&e), "pod GC; will retry");
        }
    }

    /// Upstream `markFailedAndDeletePodWithCondition`: a pod not yet terminal becomes Failed
    /// (with the DisruptionTarget condition when its node is gone), then it is deleted with
    /// grace period 0 — no kubelet is left to finish it.
    async fn mark_failed_and_delete(&self, pod: &Pod, reason: Reason) -> Result<(), PodGcError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if !matches!(phase, Some("Succeeded" | "Failed")) {
            let mut status = json!({"phase": "Failed"});
            if reason == Reason::NodeGone {
                status["conditions"] = json!([{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByPodGC",
                    "message": "PodGC: node no longer exists",
                    "lastTransitionTime": Time(jiff::Timestamp::now()),
                }]);
            }
            match api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Strategic(&json!({"status": status})),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(source) => {
                    return Err(PodGcError::MarkFailed {
                        pod: key(pod),
                        source,
                    });
                }
            }
        }
        debug!(pod = %key(pod), ?reason, "force-deleting pod");
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(PodGcError::Delete {
                pod: key(pod),
                source,
            }),
        }
    }
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Upstream `gcTerminated`: the terminated pods beyond `threshold` (0 = keep all), pods
/// evicted by the kubelet first, then the oldest.
fn terminated_beyond_threshold(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .cloned()
        .collect();
    if terminated.len() <= threshold {
        return Vec::new();
    }
    let evicted = |p: &Pod| p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted");
    terminated.sort_by(|a, b| {
        evicted(b)
            .cmp(&evicted(a))
            .then_with(|| {
                a.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            })
            .then_with(|| key(a).cmp(&key(b)))
    });
    let excess = terminated.len() - threshold;
    terminated.truncate(excess);
    terminated
}

/// A node that is not Ready and tainted out-of-service: its terminating pods will never be
/// finished by its kubelet.
fn out_of_service(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == "node.kubernetes.io/out-of-service")
        });
    !ready && tainted
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn pod(name: &str, phase: &str, created: i64, reason: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).expect("ts"))),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                reason: reason.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect()
    }

    #[test]
    fn terminated_pods_beyond_the_threshold_go_evicted_then_oldest_first() {
        let pods = vec![
            pod("new", "Succeeded", 300, None),
            pod("running", "Running", 1, None),
            pod("old", "Failed", 100, None),
            pod("evicted", "Failed", 400, Some("Evicted")),
            pod("mid", "Succeeded", 200, None),
        ];
        assert_eq!(
            names(&terminated_beyond_threshold(&pods, 2)),
            vec!["evicted", "old"]
        );
        assert!(terminated_beyond_threshold(&pods, 4).is_empty());
        assert!(
            terminated_beyond_threshold(&pods, 0).is_empty(),
            "0 disables"
        );
    }
}
