//! A node: the server's built-in one or `skiff agent`. Builds the agent's config from flags,
//! starts the kubelet server and runs the agent until shutdown.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::NodeFlags;

/// The address of the interface the default route uses, found without sending anything (a UDP
/// `connect` only picks a route); 127.0.0.1 when there is none (e.g. a fresh namespace).
pub(crate) fn detect_node_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            // TEST-NET-1 (RFC 5737): never routed anywhere real, and no packet is sent.
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Starts the kubelet server and the agent; returns when `shutdown` fires (containers keep
/// running under their shims).
pub async fn run(flags: NodeFlags, data_dir: &Path, client: kube::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    let node_name = flags.node_name.clone().unwrap_or_else(|| crate::config::hostname().to_lowercase());
    let node_ip = flags.node_ip.unwrap_or_else(detect_node_ip);
    let skiff_binary = std::env::current_exe().context("cannot find the skiff binary to run pod shims")?;
    let data_dir = std::path::absolute(data_dir).context("--data-dir")?;
    let mut config = agent::node::AgentConfig::new(&node_name, &data_dir, &skiff_binary, node_ip);
    config.log_root = flags.log_root.clone();
    config.cgroup_root = flags.cgroup_root.clone();
    config.backoff_base = flags.restart_backoff;
    config.sync_frequency = flags.sync_frequency;
    config.pod_max_pids = (flags.pod_max_pids > 0).then_some(flags.pod_max_pids);
    config.eviction = flags.eviction_hard;
    let dns_servers: Vec<String> = flags.cluster_dns.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    for server in &dns_servers {
        server.parse::<std::net::IpAddr>().map_err(|_| anyhow::anyhow!("--cluster-dns {server:?} is not an IP address"))?;
    }
    config.cluster_dns = agent::pods::ClusterDns { servers: dns_servers, domain: flags.cluster_domain.trim_end_matches('.').to_string() };
    config.lease_renew = flags.node_lease_renew;
    config.registry.mirrors = crate::config::parse_mirrors("--registry-mirror", &flags.registry_mirrors).map_err(anyhow::Error::msg)?;
    config.registry.plain_http = flags.plain_http_registries.clone();

    let paths = config.paths();
    let cni = net::cni::CniRuntime::new(
        flags.cni_bin_dir.split(',').filter(|d| !d.is_empty()).map(Into::into).collect(),
        flags.cni_conf_dir.clone().unwrap_or_else(|| paths.root.join("cni").join("net.d")),
        paths.network_state().join("cni-cache"),
    );
    config.pod_network = Arc::new(agent::network::CniNetwork::new(
        cni,
        "skiff-",
        Arc::new(net::netns::HostNetns::new()),
        Some(data_dir.clone()),
    ));

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(node_ip, flags.kubelet_port))
        .await
        .with_context(|| format!("cannot listen on {node_ip}:{} for the kubelet server (--kubelet-port)", flags.kubelet_port))?;
    config.kubelet_port = listener.local_addr()?.port();
    config.validate().map_err(|e| anyhow::anyhow!("node settings: {e}"))?;
    tracing::info!(node = %node_name, ip = %node_ip, kubelet_port = config.kubelet_port, "starting the node");

    let server = tokio::spawn(agent::server::serve(listener, paths, shutdown.clone()));
    // Services: this node's nftables dataplane, fed by the API like kube-proxy.
    let cluster_cidr: net::proxy::Ipv4Cidr =
        flags.cluster_cidr.parse().map_err(|e| anyhow::anyhow!("--cluster-cidr {:?}: {e}", flags.cluster_cidr))?;
    let node_ips = match node_ip {
        std::net::IpAddr::V4(ip) => vec![ip],
        std::net::IpAddr::V6(_) => vec![],
    };
    let proxy_node = net::proxy::NodeConfig::new(node_name.clone(), node_ips, vec![cluster_cidr])
        .map_err(|e| anyhow::anyhow!("service proxy: {e}"))?;
    let proxy_metrics = Arc::new(std::sync::Mutex::new(net::proxy::ProxyMetrics::default()));
    let proxy = tokio::spawn(agent::service_proxy::run(
        client.clone(),
        agent::service_proxy::ServiceProxyConfig::new(proxy_node),
        net::proxy::NftCli::new(),
        proxy_metrics,
        shutdown.clone(),
    ));
    let result = agent::node::run(config, client, shutdown.clone()).await;
    shutdown.cancel();
    let _ = server.await;
    if let Ok(Err(e)) = proxy.await {
        tracing::error!(error = %e, "the service proxy failed");
    }
    result.map_err(|e| anyhow::anyhow!("the node agent failed: {e}"))
}
