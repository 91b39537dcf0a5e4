//! The kubelet server: the HTTP endpoints the API server proxies `pods/log` and `pods/exec`
//! to, with upstream's URL shapes (`pkg/kubelet/server/server.go`).
//!
//! * `logs`: `GET /containerLogs/{namespace}/{pod}/{container}` — reads the CRI log files under
//!   [`NodePaths::log_root`], streams the message text, follows a growing file.
//! * `exec`: `GET /exec/{namespace}/{pod}/{container}` — a WebSocket (`v5.channel.k8s.io`,
//!   `v4.channel.k8s.io`) piped to a process the pod's shim runs in the container.
//! * `/healthz` and `/metrics` (a Prometheus request counter).
//!
//! The server knows pods only through the node's files: a pod is the log directory
//! `<namespace>_<name>_<uid>` (which gives its UID, hence its shim socket), and a container
//! is found in the shim by the log path it was started with, so the pod workers and this
//! server share no naming convention beyond [`NodePaths`].

mod exec;
mod logs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderValue, StatusCode, header};
use runtime::container::{ContainerState, ContainerStatus, ShimClient};
use tokio_util::sync::CancellationToken;

use crate::paths::NodePaths;

pub use logs::{LogOptions, LogOptionsError};

/// A request the server cannot answer. Answered as plain text with the status upstream's
/// kubelet uses; the API server relays the text as the message of its `Status`.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("pod \"{name}\" in namespace \"{namespace}\" not found on this node")]
    PodNotFound { namespace: String, name: String },
    /// Upstream's wording for a container that has no log yet (`validateContainerLogStatus`).
    #[error("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")]
    ContainerWaiting { pod: String, container: String },
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPreviousContainer { pod: String, container: String },
    #[error("container \"{container}\" in pod \"{pod}\" is not running")]
    ContainerNotRunning { pod: String, container: String },
    #[error(transparent)]
    LogOptions(#[from] LogOptionsError),
    #[error("{0}")]
    BadExecRequest(String),
    #[error("reading {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The pod's shim is not reachable (retryable: it may be restarting).
    #[error("the runtime of pod \"{pod}\" is not reachable: {source}")]
    Shim {
        pod: String,
        #[source]
        source: runtime::container::ClientError,
    },
}

impl ServerError {
    fn status(&self) -> StatusCode {
        match self {
            ServerError::PodNotFound { .. } => StatusCode::NOT_FOUND,
            ServerError::ContainerWaiting { .. }
            | ServerError::NoPreviousContainer { .. }
            | ServerError::ContainerNotRunning { .. }
            | ServerError::LogOptions(_)
            | ServerError::BadExecRequest(_) => StatusCode::BAD_REQUEST,
            ServerError::Io { .. } | ServerError::Shim { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), self.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

/// What every handler shares.
#[derive(Clone)]
struct ServerState {
    paths: NodePaths,
    shutdown: CancellationToken,
    requests: Arc<RequestCounter>,
}

/// `kubelet_http_requests_total{method,path}`: upstream's counter of the kubelet server's
/// requests, `path` being the first path segment as upstream labels it.
#[derive(Default)]
struct RequestCounter(Mutex<BTreeMap<(String, String), u64>>);

impl RequestCounter {
    fn observe(&self, method: &str, path: &str) {
        let root = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let label = match root {
            "containerLogs" | "exec" | "healthz" | "metrics" => root,
            _ => "other",
        };
        if let Ok(mut map) = self.0.lock() {
            *map.entry((method.to_string(), label.to_string()))
                .or_default() += 1;
        }
    }

    fn encode(&self) -> String {
        let mut out = String::from(
            "# HELP kubelet_http_requests_total Number of the http requests received since the server started\n\
             # TYPE kubelet_http_requests_total counter\n",
        );
        if let Ok(map) = self.0.lock() {
            for ((method, path), n) in map.iter() {
                out.push_str(&format!(
                    "kubelet_http_requests_total{{method=\"{method}\",path=\"{path}\",server_type=\"readwrite\"}} {n}\n"
                ));
            }
        }
        out
    }
}

/// Serves the kubelet endpoints on `listener` until `shutdown` is cancelled; open log follows
/// and exec sessions end with it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    paths: NodePaths,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = ServerState {
        paths,
        shutdown: shutdown.clone(),
        requests: Arc::default(),
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .route("/exec/{namespace}/{pod}/{container}", any(exec::exec))
        .route(
            "/exec/{namespace}/{pod}/{uid}/{container}",
            any(exec::exec_with_uid),
        )
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

async fn count_request(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    state
        .requests
        .observe(req.method().as_str(), req.uri().path());
    next.run(req).await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<ServerState>) -> Response {
    let mut resp = state.requests.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// A pod as the node's files know it: its log directory and UID.
#[derive(Debug, Clone)]
struct PodOnNode {
    name: String,
    uid: String,
    log_dir: PathBuf,
}

/// Finds the pod's log directory `<namespace>_<name>_<uid>` under the log root. A pod deleted
/// and re-created under the same name can leave two directories for a moment; the one whose
/// shim is alive (else the most recently modified) is the current pod.
fn find_pod(
    paths: &NodePaths,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<PodOnNode, ServerError> {
    let not_found = || ServerError::PodNotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let prefix = format!("{namespace}_{name}_");
    let entries = match std::fs::read_dir(&paths.log_root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(source) => {
            return Err(ServerError::Io {
                path: paths.log_root.clone(),
                source,
            });
        }
    };
    let mut candidates: Vec<(bool, std::time::SystemTime, PodOnNode)> = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(dir_name) = file_name.to_str() else {
            continue;
        };
        // Namespaces and pod names cannot contain '_', so the UID is everything after the prefix.
        let Some(pod_uid) = dir_name.strip_prefix(&prefix) else {
            continue;
        };
        if pod_uid.is_empty() || pod_uid.contains('_') || uid.is_some_and(|u| u != pod_uid) {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        let alive = paths.shim_socket(pod_uid).exists();
        candidates.push((
            alive,
            modified,
            PodOnNode {
                name: name.to_string(),
                uid: pod_uid.to_string(),
                log_dir: entry.path(),
            },
        ));
    }
    candidates.sort_by_key(|c| (c.0, c.1));
    candidates
        .pop()
        .map(|(_, _, pod)| pod)
        .ok_or_else(not_found)
}

/// The container the shim runs with output to `container`'s log directory of this pod: the
/// pod workers start every container with `log_path` = [`NodePaths::container_log`], so the
/// log path names the container whatever id the worker gave it. The newest running one wins.
async fn shim_container(
    paths: &NodePaths,
    pod: &PodOnNode,
    container: &str,
) -> Result<Option<ContainerStatus>, ServerError> {
    let socket = paths.shim_socket(&pod.uid);
    let mut shim = ShimClient::connect(&socket)
        .await
        .map_err(|source| ServerError::Shim {
            pod: pod.name.clone(),
            source,
        })?;
    let containers = shim.list().await.map_err(|source| ServerError::Shim {
        pod: pod.name.clone(),
        source,
    })?;
    let dir = pod.log_dir.join(container);
    let mut mine: Vec<ContainerStatus> = containers
        .into_iter()
        .filter(|c| c.log_path.parent() == Some(dir.as_path()))
        .collect();
    mine.sort_by_key(|c| {
        (
            c.state == ContainerState::Running,
            logs::restart_of(&c.log_path),
        )
    });
    Ok(mine.pop())
}
