//! Skiff's built-in cluster DNS: answers the cluster domain (`cluster.local`) from the API's
//! Services, EndpointSlices and Namespaces as CoreDNS's `kubernetes` plugin does (the
//! Kubernetes DNS-Based Service Discovery spec, kubernetes/dns docs/specification.md), and
//! forwards everything else to the node's resolvers. It runs behind the `kube-dns` Service.
//!
//! The flow of a query:
//! * `server`: the hickory request handler. Decides between an authoritative answer and a
//!   forward, builds the response, counts it.
//! * `name`: parses a name under the cluster domain into what it asks for (Service, endpoint,
//!   SRV port, pod, …). Pure.
//! * `answer`: builds records and response codes for a parsed name from the index.
//! * `index`: the in-memory view — one precomputed answer set per Service plus IP → names.
//! * `watch`: kube-rs watchers feeding the index (state machine: streaming / relisting).
//! * `forward`: relays other queries upstream over UDP (TCP on truncation) with a timeout.
//! * `config`: [`DnsConfig`] and its validation (resolv.conf upstreams).
//! * `metrics`: [`DnsMetrics`], Prometheus counters and a latency histogram.
//!
//! Entry points: [`run`] for the one-call form; [`DnsServer::bind`] + [`DnsServer::serve`] to
//! learn the bound addresses (port 0) and hold the metrics handle.

mod answer;
pub mod config;
pub mod forward;
mod index;
pub mod metrics;
mod name;
mod server;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, DnsConfig};
pub use metrics::DnsMetrics;

use crate::config::ValidConfig;
use crate::forward::Forwarder;
use crate::index::ClusterIndex;
use crate::server::ClusterDnsHandler;

/// How many times a port-0 listen address is retried when the kernel's UDP port is taken for
/// TCP (UDP and TCP must share the port, as resolvers retry truncated answers over TCP on the
/// same address).
const SHARED_PORT_ATTEMPTS: usize = 20;

/// Why the DNS server could not start or stopped. `Bind` is fixed by changing `listen`
/// (port 53 needs CAP_NET_BIND_SERVICE); the others are not retryable in place.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("dns: cannot listen on {addr} ({protocol}): {source}")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("dns: a listening socket failed: {0}")]
    Serve(String),
    #[error("dns: {0}")]
    Watch(#[from] watch::WatchEnded),
    #[error("dns: a watch task panicked: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A bound, not yet serving, DNS server.
pub struct DnsServer {
    config: Arc<ValidConfig>,
    client: kube::Client,
    cancel: CancellationToken,
    index: ClusterIndex,
    metrics: DnsMetrics,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Validates `config` and binds UDP and TCP on every listen address (the same port for
    /// both, also when the configured port is 0).
    pub async fn bind(
        client: kube::Client,
        config: DnsConfig,
        cancel: CancellationToken,
    ) -> Result<Self, DnsError> {
        let config = config.validate()?;
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut addrs = Vec::new();
        for &addr in &config.listen {
            let (socket, listener) = bind_pair(addr).await?;
            addrs.push(socket.local_addr().map_err(|source| DnsError::Bind {
                addr,
                protocol: "udp",
                source,
            })?);
            udp.push(socket);
            tcp.push(listener);
        }
        tracing::info!(listen = ?addrs, upstreams = ?config.upstreams, domain = %config.domain, "cluster DNS bound");
        Ok(DnsServer {
            config: Arc::new(config),
            client,
            cancel,
            index: ClusterIndex::new(),
            metrics: DnsMetrics::new(),
            udp,
            tcp,
            addrs,
        })
    }

    /// The bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The upstream resolvers in use (configured or read from /etc/resolv.conf).
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.config.upstreams
    }

    /// The metrics handle, for `/metrics`; stays valid after `serve` consumes the server.
    pub fn metrics(&self) -> DnsMetrics {
        self.metrics.clone()
    }

    /// Watches the API and answers queries until the cancellation token fires.
    pub async fn serve(self) -> Result<(), DnsError> {
        let DnsServer {
            config,
            client,
            cancel,
            index,
            metrics,
            udp,
            tcp,
            addrs: _,
        } = self;
        // Watches end on a child token so that a failing server also stops them.
        let watches_cancel = cancel.child_token();
        let mut watches = JoinSet::new();
        watches.spawn(watch::services(
            client.clone(),
            index.clone(),
            watches_cancel.clone(),
        ));
        watches.spawn(watch::endpoint_slices(
            client.clone(),
            index.clone(),
            watches_cancel.clone(),
        ));
        watches.spawn(watch::namespaces(
            client,
            index.clone(),
            watches_cancel.clone(),
        ));

        let handler = ClusterDnsHandler {
            forwarder: Forwarder::new(config.upstreams.clone(), config.upstream_timeout),
            config: config.clone(),
            index,
            metrics,
        };
        let mut server = hickory_server::Server::new(handler);
        for socket in udp {
            server.register_socket(socket);
        }
        for listener in tcp {
            // 64 KiB: one maximum-size DNS message queued per connection.
            server.register_listener(listener, config.tcp_idle_timeout, 65_536);
        }

        let outcome = tokio::select! {
            () = cancel.cancelled() => Ok(()),
            done = server.block_until_done() => match done {
                Ok(()) => Ok(()),
                Err(error) => Err(DnsError::Serve(error.to_string())),
            },
            Some(ended) = watches.join_next() => match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(ended)) => Err(DnsError::Watch(ended)),
                Err(panicked) => Err(DnsError::Task(panicked)),
            },
        };
        watches_cancel.cancel();
        if let Err(error) = server.shutdown_gracefully().await {
            tracing::debug!(%error, "DNS server shutdown");
        }
        while watches.join_next().await.is_some() {}
        outcome
    }
}

/// Runs the cluster DNS until `cancel` fires: what `skiff server` calls.
pub async fn run(
    client: kube::Client,
    config: DnsConfig,
    cancel: CancellationToken,
) -> Result<(), DnsError> {
    DnsServer::bind(client, config, cancel).await?.serve().await
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                addr,
                protocol: "udp",
                source,
            })?;
        let bound = socket.local_addr().map_err(|source| DnsError::Bind {
            addr,
            protocol: "udp",
            source,
        })?;
        match TcpListener::bind(bound).await {
            Ok(listener) => return Ok((socket, listener)),
            // With port 0 the kernel picked a UDP port whose TCP twin is taken: pick again.
            Err(source)
                if addr.port() == 0
                    && source.kind() == std::io::ErrorKind::AddrInUse
                    && attempts < SHARED_PORT_ATTEMPTS =>
            {
                continue;
            }
            Err(source) => {
                return Err(DnsError::Bind {
                    addr: bound,
                    protocol: "tcp",
                    source,
                });
            }
        }
    }
}
