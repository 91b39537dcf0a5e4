//! The cluster DNS of `skiff server` with its built-in node: Skiff's DNS server (crate `dns`)
//! on the node's address, port 53, published as the well-known `kube-system/kube-dns` Service
//! (`--cluster-dns`, 10.43.0.10 by default) so ClusterFirst pods resolve Service names through
//! the service dataplane like they would through CoreDNS.
//!
//! The Service has no selector (the DNS server is not a pod); its EndpointSlice, named after
//! the node, points at the node's address. Both are written with server-side apply, so a
//! restart converges them and a user's edits of other fields are kept.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The field manager of what this module writes.
const MANAGER: &str = "skiff-cluster-dns";

/// Serves cluster DNS until `shutdown`.
pub async fn run(
    client: kube::Client,
    node_name: String,
    node_ip: IpAddr,
    service_ip: IpAddr,
    domain: String,
    metrics: &apiserver::metrics::Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = dns::DnsConfig {
        domain: domain.clone(),
        listen: vec![SocketAddr::new(node_ip, 53)],
        ..Default::default()
    };
    let server = dns::DnsServer::bind(client.clone(), config, shutdown.clone())
        .await
        .with_context(|| format!("cannot serve cluster DNS on {node_ip}:53"))?;
    metrics.register(|r| server.metrics().register(r));
    tracing::info!(address = %SocketAddr::new(node_ip, 53), service = %service_ip, %domain, upstreams = ?server.upstreams(), "cluster DNS is serving");
    let publish = {
        let shutdown = shutdown.clone();
        async move {
            let mut pause = Duration::from_millis(200);
            loop {
                match publish(&client, &node_name, node_ip, service_ip).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, cause = %e.root_cause(), "publishing kube-system/kube-dns failed; retrying"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    };
    let (served, ()) = tokio::join!(server.serve(), publish);
    served.context("the cluster DNS server failed")
}

/// The `kube-dns` Service and this node's EndpointSlice for it.
async fn publish(client: &kube::Client, node_name: &str, node_ip: IpAddr, service_ip: IpAddr) -> anyhow::Result<()> {
    let params = PatchParams::apply(MANAGER).force();
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
        },
        "spec": {
            "clusterIP": service_ip.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    });
    let applied = services.patch("kube-dns", &params, &Patch::Apply(&service)).await;
    match applied {
        Ok(s) => {
            let ip = s.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
            if ip != service_ip.to_string() {
                tracing::warn!(cluster_ip = %ip, expected = %service_ip, "kube-system/kube-dns has another ClusterIP than --cluster-dns; pods will not reach the cluster DNS");
            }
        }
        Err(e) => return Err(e).context("applying Service kube-system/kube-dns"),
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let name = format!("kube-dns-{node_name}");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "labels": {"kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "skiff-cluster-dns"},
        },
        "addressType": if node_ip.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [node_ip.to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": node_name}],
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ],
    });
    slices
        .patch(&name, &params, &Patch::Apply(&slice))
        .await
        .with_context(|| format!("applying EndpointSlice kube-system/{name}"))?;
    tracing::info!(service = %service_ip, endpoint = %node_ip, "published kube-system/kube-dns");
    Ok(())
}
