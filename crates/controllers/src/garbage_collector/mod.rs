//! The garbage collector: ownerReferences, as upstream's `pkg/controller/garbagecollector`.
//!
//! * `monitor`: one metadata-only watch per deletable resource → [`monitor::GraphChange`]s.
//! * `graph`: the UID-keyed dependency graph; each change yields the work it implies.
//! * `queue`: rate-limited work queues of UIDs (`attemptToDelete`, `attemptToOrphan`).
//! * `attempt_to_delete`: one idempotent check of a node against live state: delete it when
//!   every owner is gone, drop dangling references when some owner lives, and finish
//!   foreground deletions (remove `foregroundDeletion` once no blocking dependent remains).
//! * `attempt_to_orphan`: strip an `orphan`-finalized owner's references from its
//!   dependents, then remove the finalizer.
//! * `operations`: the API calls; `events`: the Events it records.
//!
//! Flow: watches → graph builder task (sole writer of the graph, besides the virtual deletes
//! workers confirm) → queues → workers. Workers start only once every watch has listed, so
//! the graph knows all dependents before an owner is orphaned or finalized.
//!
//! Owner references follow upstream's rules (kubernetes#92743): a namespaced dependent may
//! name a cluster-scoped owner or an owner in its own namespace; an owner reference is looked
//! up in the dependent's namespace, so one naming an object in another namespace is absent
//! (and, once that object is seen, an `OwnerRefInvalidNamespace` warning is recorded on the
//! dependent). A cluster-scoped dependent naming a namespaced kind is unresolvable: it gets the
//! same warning when the owner is seen, and it is never collected.

mod attempt_to_delete;
mod attempt_to_orphan;
mod graph;
mod monitor;
mod operations;
mod queue;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Context;
use crate::events::EventRecorder;

/// The component upstream's garbage collector records events as.
const EVENT_COMPONENT: &str = "garbage-collector-controller";
use graph::{DependencyGraph, Effect, Node};
use monitor::GraphChange;
use operations::Operations;
use queue::WorkQueue;

/// Workers per queue (upstream `--concurrent-gc-syncs` defaults to 20).
const WORKERS: usize = 20;
/// Graph changes buffered between the watches and the graph builder.
const GRAPH_CHANGES_BUFFER: usize = 1024;
/// How often to say which watches have not listed yet while waiting for them.
const SYNC_REPORT_INTERVAL: Duration = Duration::from_secs(30);

/// Garbage collector errors. `NoRestMapping`, `Get`, `Delete` and `Patch` are retryable: the
/// item is requeued with backoff. `NamespacedOwnerOfClusterScopedObject` is permanent: the
/// item is dropped. `TaskEnded` ends [`run`].
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// An ownerReference's apiVersion/kind is not served (upstream's `restMappingError`).
    #[error("unable to get REST mapping for {api_version}/{kind}")]
    NoRestMapping { api_version: String, kind: String },
    /// Upstream's `namespacedOwnerOfClusterScopedObjectErr`: an ownerReference carries no
    /// namespace, so there is nowhere to look for the owner.
    #[error("cluster-scoped objects cannot refer to namespaced owners")]
    NamespacedOwnerOfClusterScopedObject,
    #[error("getting {object}: {source}")]
    Get {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {object}: {source}")]
    Delete {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching {object} ({step}): {source}")]
    Patch {
        object: String,
        step: &'static str,
        #[source]
        source: kube::Error,
    },
    /// `{failed}` of the dependents could not be orphaned (each is logged).
    #[error("orphaning the dependents of {owner}: {failed} patch(es) failed")]
    OrphanDependents { owner: String, failed: usize },
    /// A collector task stopped before shutdown (a panic, or a watch stream that ended).
    #[error("garbage collector task {task} ended unexpectedly{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    TaskEnded {
        task: String,
        detail: Option<String>,
    },
}

/// What a worker does with its key afterwards (upstream `workQueueItemAction`).
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Forget,
    Requeue,
}

/// Shared state of one collector run.
struct GarbageCollector {
    graph: Mutex<DependencyGraph>,
    operations: Operations,
    events: EventRecorder,
    attempt_to_delete: Arc<WorkQueue>,
    attempt_to_orphan: Arc<WorkQueue>,
    stop: CancellationToken,
}

/// Runs the garbage collector until `cancel` (or `ctx.shutdown`) fires. Call it while holding
/// the controllers' leader lease: two collectors would race each other's patches.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), GcError> {
    let stop = cancel.child_token();
    // Dropping `run` (an aborted task) also stops everything it started.
    let _stop_on_drop = stop.clone().drop_guard();
    let gc = Arc::new(GarbageCollector {
        graph: Mutex::new(DependencyGraph::default()),
        operations: Operations::new(ctx.client.clone()),
        events: EventRecorder::new(
            ctx.client.clone(),
            EVENT_COMPONENT,
            ctx.config.identity.clone(),
        ),
        attempt_to_delete: WorkQueue::new(stop.clone()),
        attempt_to_orphan: WorkQueue::new(stop.clone()),
        stop: stop.clone(),
    });

    let mut tasks: JoinSet<String> = JoinSet::new();
    {
        let (shutdown, stop) = (ctx.shutdown.clone(), stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => stop.cancel(),
                () = stop.cancelled() => {}
            }
            "shutdown link".to_string()
        });
    }

    let resources = monitor::deletable_resources();
    let (changes_tx, changes_rx) = mpsc::channel(GRAPH_CHANGES_BUFFER);
    let (unlisted_tx, mut unlisted_rx) = watch::channel(resources.len());
    for resource in resources.iter().copied() {
        let (client, changes, stop) = (ctx.client.clone(), changes_tx.clone(), stop.clone());
        let task = format!("monitor {}", resource.group_resource());
        tasks.spawn(async move {
            monitor::run(client, resource, changes, stop).await;
            task
        });
    }
    drop(changes_tx);
    {
        let gc = Arc::clone(&gc);
        let resources = resources.clone();
        tasks.spawn(async move {
            gc.process_graph_changes(changes_rx, &resources, unlisted_tx)
                .await;
            "graph builder".to_string()
        });
    }
    tracing::info!(
        resources = resources.len(),
        "garbage collector: waiting for the watches to list"
    );

    // Phase 1: wait until every watch has listed once (upstream `WaitForCacheSync`).
    let unlisted_view = unlisted_rx.clone();
    let mut report = tokio::time::interval(SYNC_REPORT_INTERVAL);
    report.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return drain(tasks).await,
            ended = tasks.join_next() => return unexpected_end(&stop, ended, tasks).await,
            listed = async { unlisted_rx.wait_for(|unlisted| *unlisted == 0).await.is_ok() } => match listed {
                true => break,
                // The graph builder ended: report it.
                false => {
                    let ended = tasks.join_next().await;
                    return unexpected_end(&stop, ended, tasks).await;
                }
            },
            _ = report.tick() => {
                let unlisted = *unlisted_view.borrow();
                tracing::info!(unlisted, "garbage collector: still waiting for every watch to list");
            }
        }
    }
    let nodes = gc.lock_graph().len();
    tracing::info!(nodes, "garbage collector: all watches listed; collecting");

    // Phase 2: collect until stopped.
    for i in 0..WORKERS {
        let gc_delete = Arc::clone(&gc);
        tasks.spawn(async move {
            gc_delete.run_attempt_to_delete_worker().await;
            format!("attemptToDelete worker {i}")
        });
        let gc_orphan = Arc::clone(&gc);
        tasks.spawn(async move {
            gc_orphan.run_attempt_to_orphan_worker().await;
            format!("attemptToOrphan worker {i}")
        });
    }
    tokio::select! {
        () = stop.cancelled() => drain(tasks).await,
        ended = tasks.join_next() => unexpected_end(&stop, ended, tasks).await,
    }
}

/// Waits for every task after `stop`; a panic is still reported.
async fn drain(mut tasks: JoinSet<String>) -> Result<(), GcError> {
    let mut first_panic = None;
    while let Some(ended) = tasks.join_next().await {
        if let Err(e) = ended
            && e.is_panic()
            && first_panic.is_none()
        {
            first_panic = Some(GcError::TaskEnded {
                task: "unknown".to_string(),
                detail: Some(e.to_string()),
            });
        }
    }
    first_panic.map_or(Ok(()), Err)
}

/// A task ended while the collector should be running: stop the rest and report it.
async fn unexpected_end(
    stop: &CancellationToken,
    ended: Option<Result<String, tokio::task::JoinError>>,
    tasks: JoinSet<String>,
) -> Result<(), GcError> {
    if stop.is_cancelled() {
        return drain(tasks).await;
    }
    stop.cancel();
    let _ = drain(tasks).await;
    Err(match ended {
        Some(Ok(task)) => GcError::TaskEnded { task, detail: None },
        Some(Err(e)) => GcError::TaskEnded {
            task: "unknown".to_string(),
            detail: Some(e.to_string()),
        },
        None => GcError::TaskEnded {
            task: "all".to_string(),
            detail: None,
        },
    })
}

impl GarbageCollector {
    fn lock_graph(&self) -> MutexGuard<'_, DependencyGraph> {
        // Graph updates never leave it half-written across a panic that matters here: each
        // is a few map operations, so a poisoned lock is still usable.
        self.graph.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn node(&self, uid: &str) -> Option<Node> {
        self.lock_graph().node(uid).cloned()
    }

    /// The graph builder (upstream `processGraphChanges`): applies watch events in order and
    /// queues the work they imply. Publishes how many watches have not listed yet.
    async fn process_graph_changes(
        &self,
        mut changes: mpsc::Receiver<GraphChange>,
        resources: &[&'static api::catalogue::Resource],
        unlisted_count: watch::Sender<usize>,
    ) {
        let mut unlisted: HashSet<(&'static str, &'static str)> =
            resources.iter().map(|r| (r.group, r.plural)).collect();
        loop {
            let change = tokio::select! {
                () = self.stop.cancelled() => return,
                change = changes.recv() => change,
            };
            let Some(change) = change else { return };
            let effects = {
                let mut graph = self.lock_graph();
                match &change {
                    GraphChange::Observed { resource, meta } => graph.observe(resource, meta),
                    GraphChange::Deleted { resource, meta } => {
                        graph.observe_deleted(resource, meta)
                    }
                    GraphChange::Relisted { resource, present } => {
                        graph.relisted(resource, present)
                    }
                }
            };
            self.apply(effects);
            if let GraphChange::Relisted { resource, .. } = change
                && unlisted.remove(&(resource.group, resource.plural))
            {
                unlisted_count.send_replace(unlisted.len());
            }
        }
    }

    /// Queues the work a graph change implies.
    fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::AttemptToDelete {
                    uid,
                    rate_limited: false,
                } => self.attempt_to_delete.add(&uid),
                Effect::AttemptToDelete {
                    uid,
                    rate_limited: true,
                } => self.attempt_to_delete.add_rate_limited(&uid),
                Effect::AttemptToOrphan { uid } => self.attempt_to_orphan.add(&uid),
                Effect::InvalidNamespaceOwnerRef {
                    dependent,
                    invalid_owner,
                } => {
                    tracing::info!(
                        dependent = %dependent,
                        owner = %invalid_owner,
                        "item references an owner but does not match namespaces"
                    );
                    let events = self.events.clone();
                    let stop = self.stop.clone();
                    let message = format!(
                        "ownerRef {invalid_owner} does not exist in namespace {:?}",
                        dependent.namespace
                    );
                    let reference = dependent.object_reference();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = events.warning(&reference, "OwnerRefInvalidNamespace", message) => {}
                            () = stop.cancelled() => {}
                        }
                    });
                }
            }
        }
    }
}
