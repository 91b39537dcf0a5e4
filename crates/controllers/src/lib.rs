//! Skiff's controllers. Each runs inside `skiff server` and talks to the API server exactly as
//! an outside client does (kube-rs), one module per controller:
//!
//! * `leader`: a `coordination.k8s.io` Lease in kube-system; controllers run only while held.
//! * `namespace`: empties a deleting namespace, then finalizes it.
//! * `node_ipam`: assigns each Node a pod CIDR from the cluster CIDR.
//! * `garbage_collector`: ownerReferences — Background, Foreground (blockOwnerDeletion) and
//!   Orphan propagation.
//! * `replicaset`: keeps `replicas` pods for each ReplicaSet and ReplicationController.
//! * `deployment`: rolls Deployments out through ReplicaSets (RollingUpdate, Recreate).
//! * `node_lifecycle`: marks nodes with stale Leases unreachable, taints them, evicts pods.
//! * `pod_gc`: removes pods of vanished nodes and terminated pods beyond a threshold.
//! * `serviceaccount`: a `default` ServiceAccount in every namespace.
//! * `disruption`: PodDisruptionBudget status (healthy, desired, disruptions allowed).
//! * `service_lb`: LoadBalancer Services get the nodes' addresses (like k3s's ServiceLB).
//! * `endpoints`, `endpointslice`: the backends of each Service from its pods' readiness.
//! * `events`: the Event recorder all of them (and the scheduler) share.
//!
//! Each controller follows kube-runtime's shape: watches feed a cache, events only enqueue keys,
//! and one idempotent `reconcile` works from current state (NotFound means deleted).

pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod garbage_collector;
pub mod leader;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod pod_gc;
pub mod replicaset;
pub mod service_lb;
pub mod serviceaccount;

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// Settings shared by the controllers.
#[derive(Clone, Debug)]
pub struct ControllersConfig {
    /// The holder identity written into leader Leases (unique per server process).
    pub identity: String,
    /// Leader election timings (upstream: lease 15 s, renew deadline 10 s, retry 2 s).
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// The pod network every node's range is carved from (k3s default 10.42.0.0/16).
    pub cluster_cidr: node_ipam::Ipv4Cidr,
    /// The prefix length of each node's range (upstream default /24).
    pub node_cidr_mask: u8,
    /// Node health timings (kube-controller-manager `--node-monitor-period`,
    /// `--node-monitor-grace-period`, …).
    pub node_lifecycle: node_lifecycle::NodeLifecycleConfig,
    /// Pod garbage collection (`--terminated-pod-gc-threshold`, …).
    pub pod_gc: pod_gc::PodGcConfig,
    /// Endpoints per EndpointSlice (`--max-endpoints-per-slice`, 100).
    pub max_endpoints_per_slice: usize,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            identity: format!("skiff-{}", std::process::id()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            cluster_cidr: node_ipam::Ipv4Cidr {
                addr: std::net::Ipv4Addr::new(10, 42, 0, 0),
                prefix: 16,
            },
            node_cidr_mask: 24,
            node_lifecycle: node_lifecycle::NodeLifecycleConfig::default(),
            pod_gc: pod_gc::PodGcConfig::default(),
            max_endpoints_per_slice: endpointslice::DEFAULT_MAX_ENDPOINTS_PER_SLICE,
        }
    }
}

/// An error with its sources, for one log line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What every controller gets.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub config: ControllersConfig,
    pub shutdown: CancellationToken,
}

/// The leader Lease of the controller manager (upstream: kube-controller-manager).
pub const LEADER_LEASE: &str = "skiff-controller-manager";

/// Runs every controller while this server holds the leader Lease, until `ctx.shutdown`.
/// A controller that fails is logged and restarted after a pause; losing the Lease stops them
/// all, and winning it again starts them afresh (each relists on start).
pub async fn run_all(ctx: Context) {
    let work_ctx = ctx.clone();
    let result =
        leader::run_with_leadership(ctx, LEADER_LEASE, move |leading: CancellationToken| {
            let ctx = work_ctx.clone();
            async move {
                tracing::info!(identity = %ctx.config.identity, "leading: starting controllers");
                let run = |name: &'static str, start: Starter| {
                    supervise_with(name, leading.clone(), ctx.clone(), start)
                };
                futures::future::join_all([
                    run("deployment", |ctx, cancel| {
                        async move {
                            deployment::run(ctx, cancel)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        .boxed()
                    }),
                    run("disruption", |ctx, cancel| {
                        async move {
                            disruption::run(ctx, cancel)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        .boxed()
                    }),
                    run("endpoints", |ctx, cancel| {
                        async move { endpoints::run(ctx, cancel).await.map_err(|e| e.to_string()) }
                            .boxed()
                    }),
                    run("endpointslice", |ctx, cancel| {
                        async move {
                            let options = endpointslice::EndpointSliceOptions {
                                max_endpoints_per_slice: ctx.config.max_endpoints_per_slice,
                                ..Default::default()
                            };
                            endpointslice::run_with(ctx, cancel, options)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        .boxed()
                    }),
                    run("garbage-collector", |ctx, cancel| {
                        async move {
                            garbage_collector::run(ctx, cancel)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        .boxed()
                    }),
                    run("namespace", |ctx, cancel| {
                        async move { namespace::run(ctx, cancel).await.map_err(|e| e.to_string()) }
                            .boxed()
                    }),
                    run("node-ipam", |ctx, cancel| {
                        async move { node_ipam::run(ctx, cancel).await.map_err(|e| e.to_string()) }
                            .boxed()
                    }),
                    run("node-lifecycle", |ctx, cancel| {
                        async move {
                            node_lifecycle::run(ctx, cancel)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        .boxed()
                    }),
                    run("pod-garbage-collector", |ctx, cancel| {
                        async move { pod_gc::run(ctx, cancel).await.map_err(|e| e.to_string()) }
                            .boxed()
                    }),
                    run("replicaset", |ctx, cancel| {
                        async move {
                            replicaset::run(ctx, cancel)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        .boxed()
                    }),
                    run("service-lb", |ctx, cancel| {
                        async move {
                            service_lb::run(ctx, cancel)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        .boxed()
                    }),
                    run("serviceaccount", |ctx, cancel| {
                        async move {
                            serviceaccount::run(ctx, cancel)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        .boxed()
                    }),
                ])
                .await;
                tracing::info!("controllers stopped");
            }
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "leader election failed; controllers are not running");
    }
}

/// Starts one controller run: `(ctx, cancel) → Ok(()) when cancelled, Err(message) on failure`.
type Starter = fn(Context, CancellationToken) -> BoxFuture<'static, Result<(), String>>;

/// [`supervise`] for a controller that takes the shared [`Context`].
async fn supervise_with(
    name: &'static str,
    cancel: CancellationToken,
    ctx: Context,
    start: Starter,
) {
    supervise(name, cancel, move |cancel| start(ctx.clone(), cancel)).await
}

/// Restarts a controller that returns an error, until `cancel`.
async fn supervise<F, Fut>(name: &'static str, cancel: CancellationToken, start: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut backoff = Duration::from_secs(1);
    while !cancel.is_cancelled() {
        match start(cancel.child_token()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(controller = name, error = %e, "controller failed; restarting");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Drops `metadata.managedFields` from an object an informer keeps. No controller reads them,
/// and they are often the largest part of an object in memory (kube-rs recommends the same);
/// an update sent from such a copy omits the field, which keeps the stored entries.
pub fn without_managed_fields<K: kube::Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}
