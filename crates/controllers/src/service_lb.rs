//! The built-in service load balancer (like k3s's ServiceLB): every `type: LoadBalancer`
//! Service without a `loadBalancerClass` gets the InternalIPs of the Ready, schedulable nodes
//! in `status.loadBalancer.ingress`. Each node's service proxy already accepts traffic for a
//! Service's load-balancer addresses on the Service's ports, so those addresses work at once.
//!
//! Keyed by Service: a Service changing enqueues itself, a Node changing enqueues every
//! Service (the address set is the same for all). A Service that stops being a LoadBalancer
//! (or gets a class of another implementation) has the addresses it was given removed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Context, error_chain};

/// Why a Service's status could not be written. Retryable: the Service is requeued.
#[derive(Debug, thiserror::Error)]
pub enum ServiceLbError {
    #[error("updating the load balancer status of Service {namespace}/{name}")]
    Patch {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    client: kube::Client,
    nodes: Store<Node>,
}

/// Runs until `cancel` or `ctx.shutdown`.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), ServiceLbError> {
    let services: Api<Service> = Api::all(ctx.client.clone());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let (node_store, node_writer) = kube::runtime::reflector::store();
    let node_events =
        kube::runtime::reflector(node_writer, watcher(nodes, watcher::Config::default()).modify(crate::without_managed_fields));
    let controller = Controller::new(services, watcher::Config::default());
    let state = Arc::new(State {
        client: ctx.client.clone(),
        nodes: node_store,
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
    // Every node change may change every LoadBalancer's addresses. Polling this stream also
    // keeps the node store current.
    let node_triggers = kube::runtime::WatchStreamExt::touched_objects(node_events)
        .filter_map(|node| async move { node.ok().map(|_| ()) });
    info!("service load balancer started");
    controller
        .reconcile_all_on(node_triggers)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                Err(controller::Error::ReconcilerFailed(e, object)) => {
                    warn!(service = %object, error = %error_chain(&e), "could not set load balancer addresses; will retry")
                }
                Err(e) => debug!(error = %error_chain(&e), "service load balancer"),
            }
        })
        .await;
    info!("service load balancer stopped");
    Ok(())
}

/// Whether this implementation serves `service`.
fn served(service: &Service) -> bool {
    let Some(spec) = service.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.is_none()
}

/// The addresses to publish: InternalIPs of Ready nodes that take new pods.
fn node_addresses(nodes: &[Arc<Node>]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .flat_map(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.addresses.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address)
        })
        .collect()
}

async fn reconcile(service: Arc<Service>, state: Arc<State>) -> Result<Action, ServiceLbError> {
    let (Some(namespace), Some(name)) = (
        service.metadata.namespace.clone(),
        service.metadata.name.clone(),
    ) else {
        return Ok(Action::await_change());
    };
    let current: BTreeSet<String> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect();
    let wanted = if served(&service) {
        node_addresses(&state.nodes.state())
    } else if service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
        // Another implementation's class: not ours to touch.
        return Ok(Action::await_change());
    } else {
        BTreeSet::new()
    };
    if current == wanted {
        return Ok(Action::await_change());
    }
    let ingress: Vec<serde_json::Value> = wanted
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    let api: Api<Service> = Api::namespaced(state.client.clone(), &namespace);
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            info!(service = %format!("{namespace}/{name}"), addresses = ?wanted, "load balancer addresses set");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
        Err(source) => Err(ServiceLbError::Patch {
            namespace,
            name,
            source,
        }),
    }
}

fn error_policy(_: Arc<Service>, _: &ServiceLbError, _: Arc<State>) -> Action {
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, ready: bool, unschedulable: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"unschedulable": unschedulable},
                "status": {
                    "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                },
            }))
            .expect("node"),
        )
    }

    #[test]
    fn publishes_ready_schedulable_nodes_only() {
        let nodes = [
            node("a", "10.0.0.2", true, false),
            node("b", "10.0.0.3", false, false),
            node("c", "10.0.0.4", true, true),
            node("d", "10.0.0.1", true, false),
        ];
        assert_eq!(
            node_addresses(&nodes).into_iter().collect::<Vec<_>>(),
            ["10.0.0.1", "10.0.0.2"]
        );
    }

    #[test]
    fn serves_classless_load_balancers() {
        let svc = |v: serde_json::Value| -> Service { serde_json::from_value(v).expect("service") };
        assert!(served(&svc(json!({"spec": {"type": "LoadBalancer"}}))));
        assert!(!served(&svc(
            json!({"spec": {"type": "LoadBalancer", "loadBalancerClass": "metallb"}})
        )));
        assert!(!served(&svc(json!({"spec": {"type": "NodePort"}}))));
    }
}
