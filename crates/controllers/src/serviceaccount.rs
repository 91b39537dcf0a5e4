//! The ServiceAccount controller (upstream `pkg/controller/serviceaccount`,
//! `ServiceAccountsController`): every active Namespace has a `default` ServiceAccount, so pods
//! that name none (the ServiceAccount admission default) can run.
//!
//! The reconcile is keyed by Namespace: a Namespace appearing or changing, or one of its
//! ServiceAccounts changing or going away, enqueues the namespace, and the reconcile creates
//! whatever of [`DEFAULT_SERVICE_ACCOUNTS`] the API server does not have. Terminating
//! namespaces are left alone (the API server would refuse the create with 403 anyway).
//! Upstream records no Events for this; neither does this controller.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Context, error_chain};

/// The accounts every namespace gets (upstream's controller manager creates only `default`).
pub const DEFAULT_SERVICE_ACCOUNTS: &[&str] = &["default"];

/// Namespaces reconciled at once (upstream `--concurrent-serviceaccount-syncs` default 5).
const CONCURRENT_SYNCS: u16 = 5;

/// Why a namespace could not get its accounts. Retryable: the namespace is requeued.
#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    #[error("reading ServiceAccount {namespace}/{name}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating ServiceAccount {namespace}/{name}")]
    Create {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    client: kube::Client,
}

/// Runs until `cancel` or `ctx.shutdown`. Failures of single namespaces are retried; the
/// result is `Ok(())` once stopped.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), ServiceAccountError> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let accounts: Api<ServiceAccount> = Api::all(ctx.client.clone());
    let state = Arc::new(State {
        client: ctx.client.clone(),
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
    info!("serviceaccount controller started");
    Controller::new(namespaces, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(CONCURRENT_SYNCS))
        // A ServiceAccount changing or going away enqueues its namespace, so a deleted
        // `default` comes back.
        .watches(accounts, watcher::Config::default(), |sa: ServiceAccount| {
            sa.metadata
                .namespace
                .as_deref()
                .map(ObjectRef::<Namespace>::new)
        })
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                Err(controller::Error::ReconcilerFailed(e, object)) => {
                    warn!(namespace = %object.name, error = %error_chain(&e), "could not create service accounts; will retry")
                }
                Err(e) => debug!(error = %error_chain(&e), "serviceaccount controller"),
            }
        })
        .await;
    info!("serviceaccount controller stopped");
    Ok(())
}

/// Creates the missing default accounts of an active namespace.
async fn reconcile(
    namespace: Arc<Namespace>,
    state: Arc<State>,
) -> Result<Action, ServiceAccountError> {
    let Some(ns) = namespace.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if !is_active(&namespace) {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(state.client.clone(), &ns);
    for &name in DEFAULT_SERVICE_ACCOUNTS {
        let existing = api
            .get_opt(name)
            .await
            .map_err(|source| ServiceAccountError::Get {
                namespace: ns.clone(),
                name: name.to_string(),
                source,
            })?;
        if existing.is_some() {
            continue;
        }
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => info!(namespace = %ns, serviceaccount = name, "created service account"),
            // Already there (the cache lagged), or the namespace started terminating since
            // the cache saw it: both mean nothing is left to do, as upstream treats them.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 403 => {
                debug!(namespace = %ns, serviceaccount = name, reason = %status.reason, "not created")
            }
            Err(source) => {
                return Err(ServiceAccountError::Create {
                    namespace: ns.clone(),
                    name: name.to_string(),
                    source,
                });
            }
        }
    }
    Ok(Action::await_change())
}

/// Upstream syncs only namespaces in phase Active; a namespace with a deletionTimestamp is
/// treated as terminating even before its phase says so.
fn is_active(namespace: &Namespace) -> bool {
    let phase = namespace.status.as_ref().and_then(|s| s.phase.as_deref());
    namespace.metadata.deletion_timestamp.is_none() && matches!(phase, None | Some("Active"))
}

fn error_policy(
    _namespace: Arc<Namespace>,
    _error: &ServiceAccountError,
    _state: Arc<State>,
) -> Action {
    Action::requeue(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn namespace(phase: Option<&str>, deleting: bool) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("a".into()),
                deletion_timestamp: deleting.then(|| Time(jiff::Timestamp::now())),
                ..ObjectMeta::default()
            },
            status: phase.map(|p| NamespaceStatus {
                phase: Some(p.into()),
                ..NamespaceStatus::default()
            }),
            ..Namespace::default()
        }
    }

    #[test]
    fn only_active_namespaces_get_accounts() {
        assert!(is_active(&namespace(Some("Active"), false)));
        assert!(is_active(&namespace(None, false)));
        assert!(!is_active(&namespace(Some("Terminating"), false)));
        assert!(!is_active(&namespace(Some("Active"), true)));
    }
}
