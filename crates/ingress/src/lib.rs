//! Skiff's built-in Ingress controller: networking.k8s.io/v1 Ingresses of the default
//! IngressClass `skiff` served by an L7 reverse proxy on the node (ports 80/443), in the manner
//! of ingress-nginx and of the Traefik k3s ships.
//!
//! The flow:
//! * `class`: which Ingresses are ours (IngressClass / annotation / default class) and the
//!   default IngressClass created at start.
//! * `watch`: reflectors over Ingresses, IngressClasses, Services, EndpointSlices and Secrets;
//!   every change rebuilds the routing table and certificate table and swaps them in.
//! * `routes`: the pure routing table — host (exact, wildcard) → path (Exact, Prefix) →
//!   backend (Service port → ready EndpointSlice endpoints).
//! * `tls`: Secrets → certificates, the SNI resolver and the self-signed default certificate.
//! * `server`: HTTP and HTTPS accept loops (hyper auto: HTTP/1.1 with upgrades, HTTP/2).
//! * `proxy`: per request — route, redirect, forward with X-Forwarded-* headers, retry the next
//!   endpoint on connect failure, 404/502/503/504 with clear bodies, WebSocket tunnels.
//! * `upstream`: HTTP/1.1 keep-alive connection pool to backend endpoints.
//! * `status`: `status.loadBalancer.ingress[].ip` of served Ingresses.
//! * `config`, `metrics`: [`IngressConfig`] and [`IngressMetrics`].
//!
//! Entry points: [`run`] for the one-call form; [`IngressServer::bind`] then
//! [`IngressServer::serve`] to learn the bound addresses (port 0) and hold the metrics handle.

pub mod class;
pub mod config;
pub mod metrics;
mod proxy;
mod routes;
mod server;
pub mod status;
pub mod tls;
mod upstream;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use class::{CONTROLLER, ClassError};
pub use config::{ConfigError, IngressConfig};
pub use metrics::IngressMetrics;
pub use routes::{FORCE_SSL_REDIRECT_ANNOTATION, SSL_REDIRECT_ANNOTATION};
pub use tls::TlsError;

use crate::config::ValidConfig;
use crate::proxy::Proxy;
use crate::status::StatusWriter;
use crate::tls::SniResolver;
use crate::upstream::UpstreamPool;
use crate::watch::{Caches, RouteSync};

/// Pause between attempts to create the default IngressClass while the API is unreachable.
const CLASS_RETRY: Duration = Duration::from_secs(2);

/// Why the ingress controller could not start. `Bind` is fixed by changing the listen address
/// (ports below 1024 need CAP_NET_BIND_SERVICE) or stopping what holds it; `Config` names the
/// field; `Tls` means the default certificate could not be made (not retryable).
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("ingress: cannot listen on {addr} ({scheme}): {source}")]
    Bind {
        addr: SocketAddr,
        scheme: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("ingress: {0}")]
    Tls(#[from] TlsError),
}

/// A bound, not yet serving, ingress controller.
pub struct IngressServer {
    config: ValidConfig,
    client: kube::Client,
    http: TcpListener,
    https: Option<(TcpListener, TlsAcceptor)>,
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    sni: Option<Arc<SniResolver>>,
    metrics: IngressMetrics,
    shutdown: CancellationToken,
    proxy: Arc<Proxy>,
}

impl IngressServer {
    /// Validates the configuration, binds the listeners and generates the default certificate.
    pub async fn bind(client: kube::Client, config: IngressConfig) -> Result<Self, IngressError> {
        let config = ValidConfig::try_from(config)?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| IngressError::Bind {
                addr: config.http_listen,
                scheme: "http",
                source,
            })?;
        let http_addr = http.local_addr().map_err(|source| IngressError::Bind {
            addr: config.http_listen,
            scheme: "http",
            source,
        })?;
        let (https, https_addr, sni) = match config.https_listen {
            None => (None, None, None),
            Some(addr) => {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| IngressError::Bind {
                            addr,
                            scheme: "https",
                            source,
                        })?;
                let bound = listener.local_addr().map_err(|source| IngressError::Bind {
                    addr,
                    scheme: "https",
                    source,
                })?;
                let sni = Arc::new(SniResolver::new(tls::default_certificate()?));
                let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(sni.clone())?));
                (Some((listener, acceptor)), Some(bound), Some(sni))
            }
        };
        let metrics = IngressMetrics::new();
        let shutdown = CancellationToken::new();
        let pool = UpstreamPool::new(
            config.connect_timeout,
            config.upstream_timeout,
            config.idle_connections_per_endpoint,
            config.idle_timeout,
        );
        let proxy = Arc::new(Proxy::new(
            pool,
            metrics.clone(),
            config.max_attempts,
            config.upstream_timeout,
            https_addr.map(|a| a.port()),
            shutdown.clone(),
        ));
        Ok(IngressServer {
            config,
            client,
            http,
            https,
            http_addr,
            https_addr,
            sni,
            metrics,
            shutdown,
            proxy,
        })
    }

    /// The bound HTTP address (the real port when `http_listen` had port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound HTTPS address, when HTTPS is enabled.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The proxy's metrics (shared with the running server).
    pub fn metrics(&self) -> IngressMetrics {
        self.metrics.clone()
    }

    /// Serves until `cancel`, then lets open connections finish for up to `drain_timeout`.
    /// Watch and API errors are logged and retried, never fatal.
    pub async fn serve(self, cancel: CancellationToken) -> Result<(), IngressError> {
        let IngressServer {
            config,
            client,
            http,
            https,
            sni,
            shutdown,
            proxy,
            ..
        } = self;
        let mut tasks = JoinSet::new();
        let changed = Arc::new(Notify::new());
        let caches = Caches::start(&client, &changed, &shutdown, &mut tasks);

        let class_client = client.clone();
        let class_name = config.class.clone();
        let class_cancel = shutdown.clone();
        tasks.spawn(async move {
            loop {
                match class::ensure_default_class(&class_client, &class_name).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "retrying in {CLASS_RETRY:?}"),
                }
                tokio::select! {
                    _ = class_cancel.cancelled() => return,
                    _ = tokio::time::sleep(CLASS_RETRY) => {}
                }
            }
        });

        let sync = RouteSync {
            caches,
            class: config.class.clone(),
            proxy: proxy.clone(),
            sni,
            status: StatusWriter::new(client.clone(), &config.status_addresses),
            changed,
        };
        tasks.spawn(sync.run(shutdown.clone()));

        let tracker = TaskTracker::new();
        tasks.spawn(server::accept_loop(
            http,
            None,
            proxy.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
        if let Some((listener, acceptor)) = https {
            tasks.spawn(server::accept_loop(
                listener,
                Some(acceptor),
                proxy.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        tracing::info!(http = %config.http_listen, https = ?config.https_listen, class = %config.class, "ingress proxy serving");

        cancel.cancelled().await;
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        tracker.close();
        if tokio::time::timeout(config.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = tracker.len(),
                "ingress: connections still open after {:?}; closing them",
                config.drain_timeout
            );
        }
        Ok(())
    }
}

/// Binds and serves the ingress controller until `cancel` (what `skiff server` / `skiff agent`
/// call on each node).
pub async fn run(
    client: kube::Client,
    config: IngressConfig,
    cancel: CancellationToken,
) -> Result<(), IngressError> {
    IngressServer::bind(client, config)
        .await?
        .serve(cancel)
        .await
}
