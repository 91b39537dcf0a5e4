//! The Kubernetes API server (v1.33) over Skiff's store.
//!
//! * `handlers`: dispatch of resource requests (verb × subresource) to the generic operations.
//! * `rest`: get/list/create/update/patch/delete for every catalogue kind, on the store.
//! * `strategy`: per-kind create/update rules (status split, generation, pod QoS).
//! * `subresources`: `scale`, `pods/binding`, `pods/eviction`.
//! * `node_proxy`: `pods/log`, `pods/exec`, `attach`, `portforward` forwarded to the pod's
//!   kubelet (streamed; WebSocket upgrades spliced through).
//! * `watch` + `watch_cache`: streaming watches fanned out from one store watch.
//! * `discovery`: `/api`, `/apis` (aggregated and legacy), `/version`.
//! * `tables`: `Table` answers for `kubectl get`.
//! * `codec`: JSON, YAML and protobuf bodies; `protobuf`: kubectl's protobuf envelope.
//! * `request`: path and query parsing; `error`: `Status` errors; `metrics`: Prometheus.
//! * `reviews`: create-only authorization reviews.
//! * `service_alloc`: Service ClusterIP/NodePort allocation, its repair loop, and the
//!   `kubernetes` Service bootstrap.
//!
//! A request flows: axum router → `handlers::resource` → `rest` → `store`; writes then come back
//! through the store watch into `watch_cache` and out to every watcher.

pub mod codec;
pub mod discovery;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod node_proxy;
pub mod object;
pub mod protobuf;
pub mod request;
pub mod rest;
pub mod reviews;
pub mod service_alloc;
pub mod strategy;
pub mod subresources;
pub mod tables;
pub mod watch;
pub mod watch_cache;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use store::Store;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::watch_cache::WatchCache;

/// Shared state of one API server.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
    /// `host:port` clients should use (for legacy discovery's serverAddressByClientCIDRs).
    pub advertise_address: String,
    /// Service ClusterIP and NodePort allocation (used by `rest` for Service writes).
    pub services: Arc<service_alloc::ServiceAllocator>,
    ready: AtomicBool,
}

/// Settings of the API server.
#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    pub listen: SocketAddr,
    /// Events kept in memory for watches (older watches read the store's history).
    pub watch_cache_events: usize,
}

/// A bound, not yet serving API server.
pub struct ApiServer {
    state: Arc<ApiState>,
    listener: tokio::net::TcpListener,
}

impl ApiServer {
    /// Binds the listener, starts the watch cache and creates the default namespaces, with the
    /// default service network (10.43.0.0/16, node ports 30000-32767).
    pub async fn bind(config: ApiServerConfig, store: Arc<dyn Store>, shutdown: CancellationToken) -> std::io::Result<ApiServer> {
        Self::bind_with_services(config, service_alloc::ServiceNetworkConfig::default(), store, shutdown).await
    }

    /// [`ApiServer::bind`] with the service network settings (`--service-cidr`,
    /// `--service-node-port-range`, `--advertise-address`).
    pub async fn bind_with_services(
        config: ApiServerConfig,
        services: service_alloc::ServiceNetworkConfig,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> std::io::Result<ApiServer> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local = listener.local_addr()?;
        let start = store.current_revision().await.map_err(std::io::Error::other)?;
        let cache = WatchCache::new(start, config.watch_cache_events);
        tokio::spawn(cache.clone().run(store.clone(), shutdown.clone()));
        let allocator = Arc::new(service_alloc::ServiceAllocator::new(store.clone(), services));
        let state = Arc::new(ApiState {
            store,
            cache,
            metrics: Metrics::new(),
            shutdown,
            advertise_address: local.to_string(),
            services: allocator,
            ready: AtomicBool::new(false),
        });
        Ok(ApiServer { state, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> Arc<ApiState> {
        self.state.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains open requests.
    pub async fn serve(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let boot = tokio::spawn(bootstrap(state.clone()));
        // Ends on the shutdown token by itself, after taking this server out of the endpoints.
        tokio::spawn(service_alloc::kubernetes_service::run(state.clone(), state.shutdown.clone()));
        let app = router(state.clone());
        let shutdown = state.shutdown.clone();
        let served = axum::serve(self.listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await });
        let result = served.await;
        boot.abort();
        result
    }
}

/// Every route of the server.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/version", get(discovery::version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api", get(discovery::api_root))
        .route("/api/v1", get(discovery::core_v1))
        .route("/apis", get(discovery::apis_root))
        .route("/apis/{group}", get(discovery::apis_group))
        .route("/apis/{group}/{version}", get(discovery::apis_group_version))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_v3_index))
        .route("/openapi/v3/{*path}", get(openapi_v3_doc))
        .route("/api/v1/{*rest}", any(handlers::resource))
        .route("/apis/{group}/{version}/{*rest}", any(handlers::resource))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response()
}

async fn health() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "[-]bootstrap: the default namespaces are not created yet\nreadyz check failed").into_response();
    }
    match state.store.current_revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("[-]datastore: {e}\nreadyz check failed")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    state.metrics.store_revision.set(state.cache.latest());
    let mut resp = state.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

async fn openapi_v2() -> Response {
    let mut resp = api::openapi::v2_json().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn openapi_v3_index() -> Response {
    codec::json_response(StatusCode::OK, &api::openapi::v3_index_json())
}

async fn openapi_v3_doc(Path(path): Path<String>) -> Response {
    match api::openapi::v3_document(path.trim_matches('/')) {
        Some((doc, hash)) => {
            let mut resp = doc.into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
                resp.headers_mut().insert(header::ETAG, etag);
            }
            resp
        }
        None => ApiError::new(404, "NotFound", format!("the OpenAPI v3 document for {path:?} does not exist")).into_response(),
    }
}

/// Creates the default namespaces (upstream's `SystemNamespaces` bootstrap controller), then
/// marks the server ready. Retries until the store accepts the writes.
async fn bootstrap(state: Arc<ApiState>) {
    let Some(ns_res) = api::catalogue::find("", "v1", "namespaces") else { return };
    let opts = rest::WriteOptions::internal("skiff-apiserver");
    loop {
        let mut ok = true;
        for ns in rest::SYSTEM_NAMESPACES {
            if let Ok(Some(_)) = state.store.get(&ns_res.key(None, ns)).await {
                continue;
            }
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match rest::create(&state, ns_res, None, obj, None, &opts).await {
                Ok(_) => tracing::info!(namespace = ns, "created system namespace"),
                Err(e) if e.code == 409 => {}
                Err(e) => {
                    tracing::warn!(namespace = ns, error = %e, "creating system namespace failed; retrying");
                    ok = false;
                }
            }
        }
        if ok {
            state.ready.store(true, Ordering::Release);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The JSON of a `Status` success (for handlers that answer with one).
pub fn status_success() -> serde_json::Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}
