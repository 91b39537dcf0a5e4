//! `status.loadBalancer.ingress` of Ingresses: the node addresses on every served Ingress, and
//! cleared on an Ingress that is no longer served — but only while it still shows exactly our
//! addresses, so the status another controller wrote is never fought over.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// Writes Ingress statuses through the `status` subresource.
pub(crate) struct StatusWriter {
    client: Client,
    /// Sorted; empty means status is not managed.
    addresses: Vec<String>,
}

/// Why one status write failed. Retryable: the next rebuild tries again.
#[derive(Debug, thiserror::Error)]
#[error("ingress: writing status.loadBalancer of Ingress {namespace}/{name}: {source}")]
pub struct StatusError {
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

impl StatusWriter {
    pub(crate) fn new(client: Client, addresses: &[std::net::IpAddr]) -> Self {
        let mut addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
        addresses.sort();
        addresses.dedup();
        StatusWriter { client, addresses }
    }

    /// Brings every Ingress's status in line with whether it is served.
    pub(crate) async fn sync(&self, all: &[Arc<Ingress>], served: &[Arc<Ingress>]) {
        if self.addresses.is_empty() {
            return;
        }
        for ingress in all {
            let is_served = served.iter().any(|s| Arc::ptr_eq(s, ingress));
            let current = published(ingress);
            let desired = if is_served {
                (current != self.addresses).then_some(self.addresses.as_slice())
            } else {
                (current == self.addresses).then_some(&[][..])
            };
            let Some(desired) = desired else { continue };
            if let Err(e) = self.write(ingress, desired).await {
                tracing::warn!(error = %e, "will retry on the next change");
            }
        }
    }

    async fn write(&self, ingress: &Ingress, addresses: &[String]) -> Result<(), StatusError> {
        let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
        let name = ingress.metadata.name.clone().unwrap_or_default();
        let entries: Vec<serde_json::Value> = addresses
            .iter()
            .map(|ip| serde_json::json!({ "ip": ip }))
            .collect();
        // A merge patch replaces the list whole; null removes it (an empty loadBalancer, as
        // ingress-nginx leaves an Ingress it stopped serving).
        let list = if entries.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::Array(entries)
        };
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": list } } });
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), &namespace);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(ingress = %format!("{namespace}/{name}"), ?addresses, "ingress status updated");
                Ok(())
            }
            // Deleted meanwhile: nothing to publish.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(StatusError {
                namespace,
                name,
                source,
            }),
        }
    }
}

/// The addresses an Ingress currently shows, sorted.
fn published(ingress: &Ingress) -> Vec<String> {
    let mut addrs: Vec<String> = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ip.clone().or_else(|| e.hostname.clone()))
        .collect();
    addrs.sort();
    addrs
}
