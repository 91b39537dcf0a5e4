//! The namespace controller (upstream `pkg/controller/namespace`): when a Namespace has a
//! deletionTimestamp, empty it and release it.
//!
//! * `mod.rs` (here): the `kube::runtime::Controller` over Namespaces — the watch only
//!   enqueues names; [`reconcile`] runs one deletion pass; requeues follow upstream (content
//!   still going away: after `estimate / 2 + 1` seconds; an error: per-namespace exponential
//!   backoff from 5 ms to 1000 s, client-go's default controller rate limiter).
//! * `deleter`: one pass — phase `Terminating`, delete every namespaced resource (pods
//!   first), check what remains, and `PUT namespaces/<name>/finalize` when nothing does.
//! * `conditions`: the `NamespaceDeletion*` / `Namespace*Remaining` status conditions that
//!   explain a namespace stuck in `Terminating`.
//!
//! Upstream's namespace controller records no Events; neither does this one — the conditions
//! tell the story in `kubectl describe namespace`.

mod conditions;
mod deleter;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Context;
use crate::error_chain;

pub use conditions::{
    CONTENT_FAILURE, CONTENT_REMAINING, DISCOVERY_FAILURE, FINALIZERS_REMAINING,
    GROUP_VERSION_PARSING_FAILURE,
};
pub use deleter::FINALIZER;

/// Namespaces reconciled at once (upstream `--concurrent-namespace-syncs` default).
const CONCURRENT_NAMESPACE_SYNCS: u16 = 10;

/// client-go's per-item exponential failure backoff: 5 ms doubling up to 1000 s.
const BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1000);

/// Errors of one reconcile. All are retryable: the namespace is requeued with backoff and
/// the next pass starts again from the namespace's current state.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("reading namespace {name}")]
    GetNamespace {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("setting status.phase of namespace {name} to Terminating")]
    MarkTerminating {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("namespace {name} was deleted and recreated while it was being updated")]
    UidChanged { name: String },
    #[error("namespace {name}: {step}: the namespace kept changing (409 Conflict)")]
    TooManyConflicts { name: String, step: &'static str },
    /// What failed per resource; the same messages appear in the namespace's
    /// `NamespaceDeletionContentFailure` condition.
    #[error("deleting the content of namespace {name}: {}", errors.join("; "))]
    DeleteContent { name: String, errors: Vec<String> },
    #[error(
        "removing the kubernetes finalizer of namespace {name} (PUT /api/v1/namespaces/{name}/finalize)"
    )]
    Finalize {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs the namespace controller until `cancel` (or `ctx.shutdown`) is cancelled; reconciles
/// in flight are allowed to finish. Failures of single namespaces are retried with backoff
/// and logged; the watch restarts by itself after API errors, so nothing here is fatal and
/// the result is `Ok(())` once stopped.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), NamespaceError> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let state = Arc::new(State {
        deleter: deleter::Deleter::new(ctx.client.clone()),
        failures: Mutex::default(),
    });
    let stop = {
        let (cancel, shutdown) = (cancel.clone(), ctx.shutdown.clone());
        async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
        }
    };
    info!("namespace controller started");
    Controller::new(namespaces, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(CONCURRENT_NAMESPACE_SYNCS))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => debug!(namespace = %object.name, ?action, "reconciled"),
                Err(controller::Error::ReconcilerFailed(e, object)) => {
                    warn!(namespace = %object.name, error = %error_chain(&e), "namespace deletion failed; will retry")
                }
                Err(e) => warn!(error = %error_chain(&e), "namespace controller"),
            }
        })
        .await;
    info!("namespace controller stopped");
    Ok(())
}

/// Shared by every reconcile.
struct State {
    deleter: deleter::Deleter,
    /// Consecutive failures per namespace, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl State {
    fn record_failure(&self, name: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(name.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn forget(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// One pass over a namespace, from its current state. Namespaces that are not being
/// deleted need nothing (upstream enqueues only those with a deletionTimestamp).
async fn reconcile(namespace: Arc<Namespace>, state: Arc<State>) -> Result<Action, NamespaceError> {
    if namespace.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = namespace.metadata.name.clone().unwrap_or_default();
    match state.deleter.delete(&name).await? {
        deleter::Outcome::Done => {
            state.forget(&name);
            Ok(Action::await_change())
        }
        deleter::Outcome::Remaining { estimate_seconds } => {
            debug!(namespace = %name, estimate_seconds, "content remains; checking again later");
            Ok(Action::requeue(remaining_requeue(estimate_seconds)))
        }
    }
}

fn error_policy(namespace: Arc<Namespace>, _error: &NamespaceError, state: Arc<State>) -> Action {
    let name = namespace.metadata.name.as_deref().unwrap_or_default();
    Action::requeue(failure_backoff(state.record_failure(name)))
}

/// Upstream requeues a namespace with content still going away after half the estimate,
/// plus a second.
fn remaining_requeue(estimate_seconds: i64) -> Duration {
    Duration::from_secs((estimate_seconds.max(0) / 2 + 1) as u64)
}

/// The wait after the `failures`-th consecutive failure: 5 ms, 10 ms, 20 ms … capped at 1000 s.
fn failure_backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_content_is_checked_again_after_half_the_estimate() {
        assert_eq!(remaining_requeue(0), Duration::from_secs(1));
        assert_eq!(remaining_requeue(15), Duration::from_secs(8));
        assert_eq!(remaining_requeue(30), Duration::from_secs(16));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        assert_eq!(failure_backoff(1), Duration::from_millis(5));
        assert_eq!(failure_backoff(2), Duration::from_millis(10));
        assert_eq!(failure_backoff(11), Duration::from_millis(5 * 1024));
        assert_eq!(failure_backoff(40), BACKOFF_MAX);
        assert_eq!(failure_backoff(u32::MAX), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn failure_counts_are_per_namespace_and_reset_on_success() {
        let state = State {
            deleter: deleter::Deleter::new(
                kube::Client::try_from(kube::Config::new(
                    "http://127.0.0.1:1".parse().expect("url"),
                ))
                .expect("client"),
            ),
            failures: Mutex::default(),
        };
        assert_eq!(state.record_failure("a"), 1);
        assert_eq!(state.record_failure("a"), 2);
        assert_eq!(state.record_failure("b"), 1);
        state.forget("a");
        assert_eq!(state.record_failure("a"), 1);
    }
}
