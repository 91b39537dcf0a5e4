//! Skiff's controllers. Each runs inside `skiff server` and talks to the API server exactly as
//! an outside client does (kube-rs), one module per controller:
//!
//! * `leader`: a `coordination.k8s.io` Lease in kube-system; controllers run only while held.
//! * `namespace`: empties a deleting namespace, then finalizes it.
//! * `garbage_collector`: ownerReferences — Background, Foreground (blockOwnerDeletion) and
//!   Orphan propagation.
//!
//! Each controller follows kube-runtime's shape: watches feed a cache, events only enqueue keys,
//! and one idempotent `reconcile` works from current state (NotFound means deleted).

pub mod garbage_collector;
pub mod leader;
pub mod namespace;

use std::time::Duration;

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
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            identity: format!("skiff-{}", std::process::id()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What every controller gets.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub config: ControllersConfig,
    pub shutdown: CancellationToken,
}
