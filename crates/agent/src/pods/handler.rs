//! The handlers that probes and lifecycle hooks share, as upstream's `pkg/probe` and
//! `pkg/kubelet/lifecycle` do:
//!
//! * `exec`: a command in the container through the pod's shim, its stdout then stderr kept
//!   (upstream's `RunInContainer` appends them the same way).
//! * `httpGet`: one GET over HTTP/1.1, or HTTPS without certificate verification (the kubelet
//!   sets `InsecureSkipVerify`), with the action's `httpHeaders`, following redirects on the
//!   same host only (upstream `RedirectChecker(false)`), the body read up to 10 KiB.
//! * `tcpSocket` and the dial every network handler starts with.
//!
//! Network handlers connect to the action's `host`, else the pod IP; a pod whose sandbox has no
//! IP (loopback-only) is reached on 127.0.0.1 inside its network namespace. The socket is made
//! in that namespace and then used from the agent's runtime like any other.
//!
//! Failure messages follow Go's error strings where users see them (events, probe output):
//! `dial tcp 10.42.0.5:8080: connect: connection refused`, `Get "http://…": …`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use runtime::container::ShimClient;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The Kubernetes minor version the agent speaks, for `kube-probe/1.33` user agents.
pub(crate) const KUBE_VERSION: &str = "1.33";
/// Upstream reads at most this much of an HTTP handler's response body (`maxRespBodyLength`).
const MAX_BODY: usize = 10 * 1024;
/// And keeps at most this much of an exec handler's output.
const MAX_EXEC_OUTPUT: usize = 10 * 1024;
/// Go's http.Client stops after this many redirects.
const MAX_REDIRECTS: usize = 10;

/// Where the network handlers of one pod connect, and the shim that runs its exec handlers.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub pod_ip: Option<IpAddr>,
    /// The pod's network namespace, used when it has no IP.
    pub netns: Option<PathBuf>,
    pub shim_socket: PathBuf,
}

/// One host and port to dial, and the network namespace to dial it from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// As written in URLs and messages: an IP or a DNS name, without brackets.
    pub host: String,
    pub port: u16,
    pub netns: Option<PathBuf>,
}

impl Endpoint {
    /// `host:port` as Go's `net.JoinHostPort` writes it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Target {
    /// The endpoint for a handler's optional `host`: that host as given (dialled from the
    /// node), else the pod IP, else 127.0.0.1 in the pod's namespace.
    pub fn endpoint(&self, host: Option<&str>, port: u16) -> Endpoint {
        match (host.filter(|h| !h.is_empty()), self.pod_ip) {
            (Some(h), _) => Endpoint {
                host: h.to_string(),
                port,
                netns: None,
            },
            (None, Some(ip)) => Endpoint {
                host: ip.to_string(),
                port,
                netns: None,
            },
            (None, None) => Endpoint {
                host: "127.0.0.1".into(),
                port,
                netns: self.netns.clone(),
            },
        }
    }
}

/// Resolves a named or numbered port against the container's ports (upstream
/// `ResolveContainerPort`: a string that parses as a number is that number).
pub(crate) fn resolve_port(value: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {name} in {}", container.name))?,
        },
    };
    match u16::try_from(number) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("invalid port number: {number}")),
    }
}

/// An OS error as Go's net package words it ("connection refused", not "Connection refused
/// (os error 111)").
fn go_errno(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return "i/o timeout".into();
    }
    match e.raw_os_error() {
        Some(code) => {
            let text = nix::errno::Errno::from_raw(code).desc();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => e.to_string(),
            }
        }
        None => e.to_string(),
    }
}

/// Connects to `endpoint` within `timeout`, from its network namespace when it has one.
pub(crate) async fn dial(endpoint: &Endpoint, timeout: Duration) -> Result<TcpStream, String> {
    let Endpoint { host, port, netns } = endpoint.clone();
    let authority = endpoint.authority();
    let connect = move || -> Result<std::net::TcpStream, String> {
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("dial tcp: lookup {host}: {e}"))?
                .collect(),
        };
        let mut last = format!("dial tcp: lookup {host}: no such host");
        for addr in addrs {
            match std::net::TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    last = format!("dial tcp {authority}: i/o timeout");
                }
                Err(e) => last = format!("dial tcp {authority}: connect: {}", go_errno(&e)),
            }
        }
        Err(last)
    };
    let stream = tokio::task::spawn_blocking(move || match netns {
        Some(path) => net::netns::run_in(&path, connect)
            .unwrap_or_else(|e| Err(format!("entering the pod network: {e}"))),
        None => connect(),
    })
    .await
    .map_err(|e| format!("dial task failed: {e}"))??;
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("dial tcp: {e}"))?;
    let _ = stream.set_nodelay(true);
    TcpStream::from_std(stream).map_err(|e| format!("dial tcp: {e}"))
}

/// What an exec handler's command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExecOutput {
    pub exit_code: i32,
    /// Stdout then stderr, at most 10 KiB.
    pub output: String,
    pub stderr: String,
}

/// Why an exec handler has no exit code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ExecError {
    /// Upstream's `TimeoutError` wording.
    #[error("command {command:?} timed out")]
    TimedOut { command: String },
    #[error("{0}")]
    Runtime(String),
}

/// Reads a stream to its end, keeping at most `limit` bytes (the rest is drained so the
/// process never blocks on a full pipe).
async fn read_capped(mut reader: impl AsyncRead + Unpin, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// Runs `command` in container `runtime_id` and waits for it, at most `timeout` when given.
pub(crate) async fn exec(
    shim_socket: &std::path::Path,
    runtime_id: &str,
    command: &[String],
    timeout: Option<Duration>,
) -> Result<ExecOutput, ExecError> {
    let run = async {
        let mut shim = ShimClient::connect(shim_socket)
            .await
            .map_err(|e| ExecError::Runtime(e.to_string()))?;
        let process = shim
            .exec(runtime_id, command.to_vec(), Vec::new(), None)
            .await
            .map_err(|e| ExecError::Runtime(e.to_string()))?;
        drop(process.stdin);
        let (stdout, stderr, code) = tokio::join!(
            read_capped(process.stdout, MAX_EXEC_OUTPUT),
            read_capped(process.stderr, MAX_EXEC_OUTPUT),
            shim.wait_exec(process.pid)
        );
        let exit_code = code.map_err(|e| ExecError::Runtime(e.to_string()))?;
        let mut output = stdout;
        output.extend_from_slice(&stderr);
        output.truncate(MAX_EXEC_OUTPUT);
        Ok(ExecOutput {
            exit_code,
            output: String::from_utf8_lossy(&output).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    };
    match timeout {
        Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
            Err(ExecError::TimedOut {
                command: command.join(" "),
            })
        }),
        None => run.await,
    }
}

/// The two schemes of an `httpGet` action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An HTTP GET as upstream's `NewRequestForHTTPGetAction` builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpRequest {
    pub scheme: Scheme,
    pub endpoint: Endpoint,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Headers in order, `Host` excluded (it overrides the authority instead).
    pub headers: Vec<(String, String)>,
    /// The `Host` header: the action's, else the URL's authority.
    pub host_header: String,
}

impl HttpRequest {
    /// `action` against `container` in the pod behind `target`; `agent` is the user agent's
    /// product (`kube-probe` for probes, `kube-lifecycle` for hooks).
    pub fn new(
        action: &HTTPGetAction,
        container: &Container,
        target: &Target,
        agent: &str,
    ) -> Result<HttpRequest, String> {
        let scheme = match action.scheme.as_deref().map(str::to_ascii_uppercase) {
            None => Scheme::Http,
            Some(s) if s.is_empty() || s == "HTTP" => Scheme::Http,
            Some(s) if s == "HTTPS" => Scheme::Https,
            Some(other) => return Err(format!("unsupported scheme {other:?}")),
        };
        let port = resolve_port(&action.port, container)?;
        let endpoint = target.endpoint(action.host.as_deref(), port);
        let raw = action.path.clone().unwrap_or_default();
        let path = if raw.starts_with('/') {
            raw
        } else {
            format!("/{raw}")
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut host_header = None;
        for h in action.http_headers.iter().flatten() {
            if h.name.eq_ignore_ascii_case("host") {
                host_header = Some(h.value.clone());
            } else {
                headers.push((h.name.clone(), h.value.clone()));
            }
        }
        let has = |name: &str, headers: &[(String, String)]| {
            headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
        };
        if !has("user-agent", &headers) {
            headers.push(("User-Agent".into(), format!("{agent}/{KUBE_VERSION}")));
        }
        if !has("accept", &headers) {
            headers.push(("Accept".into(), "*/*".into()));
        } else {
            // An Accept header set to "" removes it (upstream `newProbeRequest`).
            headers.retain(|(k, v)| !(k.eq_ignore_ascii_case("accept") && v.is_empty()));
        }
        Ok(HttpRequest {
            scheme,
            host_header: host_header
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| endpoint.authority()),
            endpoint,
            path,
            headers,
        })
    }

    /// The URL as Go prints it in errors: `http://10.42.0.5:8080/healthz`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.endpoint.authority(),
            self.path
        )
    }

    /// The request a `Location` header sends the client to, relative to this one.
    fn redirect(&self, location: &str) -> Option<HttpRequest> {
        let mut next = self.clone();
        let rest = if let Some(rest) = location.strip_prefix("http://") {
            next.scheme = Scheme::Http;
            Some(rest)
        } else if let Some(rest) = location.strip_prefix("https://") {
            next.scheme = Scheme::Https;
            Some(rest)
        } else {
            location.strip_prefix("//")
        };
        match rest {
            Some(rest) => {
                let (authority, path) = match rest.find(['/', '?']) {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                let default_port = match next.scheme {
                    Scheme::Http => 80,
                    Scheme::Https => 443,
                };
                let (host, port) = split_authority(authority, default_port)?;
                if host != self.endpoint.host {
                    next.endpoint = Endpoint {
                        host,
                        port,
                        netns: None,
                    };
                } else {
                    next.endpoint.port = port;
                }
                next.host_header = next.endpoint.authority();
                next.path = if path.starts_with('/') {
                    path.to_string()
                } else {
                    format!("/{path}")
                };
            }
            None if location.starts_with('/') => next.path = location.to_string(),
            None => {
                let base = self.path.split('?').next().unwrap_or("/");
                let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
                next.path = format!("{dir}{location}");
            }
        }
        Some(next)
    }
}

/// `host[:port]` (IPv6 in brackets) into host and port.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

/// The response an `httpGet` handler got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpResponse {
    pub status: u16,
    /// The first 10 KiB of the body.
    pub body: String,
}

/// Why an `httpGet` handler got no response; displays as Go's `*url.Error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Get {url:?}: {reason}")]
pub(crate) struct HttpError {
    pub url: String,
    pub reason: String,
    /// An HTTPS request answered in plain HTTP (upstream falls back to HTTP for hooks).
    pub plain_http_answer: bool,
}

/// Aborts a spawned connection task when the request is done or abandoned.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The TLS client config of HTTPS handlers: no certificate verification, as the kubelet's
/// `InsecureSkipVerify`; handshake signatures are still checked.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS configuration: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerification(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[derive(Debug)]
struct SkipVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS handshake that failed because the server spoke plain HTTP: its first bytes are not a
/// TLS record.
fn is_plain_http_answer(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            )
        })
}

/// Sends one request on a fresh connection and reads the head and up to 10 KiB of body.
async fn round_trip<I>(
    io: I,
    request: &HttpRequest,
) -> Result<(u16, Option<String>, String), String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut builder = http::Request::get(request.path.as_str())
        .header(http::header::HOST, request.host_header.as_str())
        // The kubelet's probe transport disables keep-alives.
        .header(http::header::CONNECTION, "close");
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let req = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let response = sender.send_request(req).await.map_err(|e| {
        if e.is_incomplete_message() {
            "EOF".to_string()
        } else {
            e.to_string()
        }
    })?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = response.into_body();
    let mut kept = Vec::new();
    while kept.len() < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = MAX_BODY - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            // A body cut short is not fatal: what arrived is the body.
            Some(Err(_)) | None => break,
        }
    }
    Ok((
        status,
        location,
        String::from_utf8_lossy(&kept).into_owned(),
    ))
}

/// One request without redirects: dial, TLS when HTTPS, round trip.
async fn get_once(
    request: &HttpRequest,
    dial_timeout: Duration,
) -> Result<(u16, Option<String>, String), HttpError> {
    let fail = |reason: String, plain_http_answer: bool| HttpError {
        url: request.url(),
        reason,
        plain_http_answer,
    };
    let tcp = dial(&request.endpoint, dial_timeout)
        .await
        .map_err(|e| fail(e, false))?;
    match request.scheme {
        Scheme::Http => round_trip(tcp, request).await.map_err(|e| fail(e, false)),
        Scheme::Https => {
            let config = tls_config().map_err(|e| fail(e, false))?;
            let name = rustls::pki_types::ServerName::try_from(request.endpoint.host.clone())
                .map_err(|e| fail(format!("invalid server name: {e}"), false))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    if is_plain_http_answer(&e) {
                        fail(
                            "http: server gave HTTP response to HTTPS client".into(),
                            true,
                        )
                    } else {
                        fail(format!("tls: {e}"), false)
                    }
                })?;
            round_trip(tls, request).await.map_err(|e| fail(e, false))
        }
    }
}

/// The outcome of an `httpGet` handler after redirects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpOutcome {
    pub response: HttpResponse,
    /// The last response is a redirect the client did not follow (to another host, or
    /// without a Location).
    pub redirect_not_followed: bool,
}

/// Performs `request`, following up to 10 redirects that stay on the first request's host,
/// all within `timeout` when given (Go's `http.Client.Timeout`).
pub(crate) async fn http_get(
    request: &HttpRequest,
    timeout: Option<Duration>,
) -> Result<HttpOutcome, HttpError> {
    let run = async {
        let mut current = request.clone();
        let mut redirects = 0;
        // Without an overall timeout (hooks), a dial still gives up like the OS would.
        let dial_timeout = timeout.unwrap_or(Duration::from_secs(120));
        loop {
            let (status, location, body) = get_once(&current, dial_timeout).await?;
            let response = HttpResponse { status, body };
            let is_redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
            let next = location
                .filter(|_| is_redirect)
                .and_then(|l| current.redirect(&l));
            let Some(next) = next else {
                return Ok(HttpOutcome {
                    redirect_not_followed: (300..400).contains(&status),
                    response,
                });
            };
            if next.endpoint.host != request.endpoint.host {
                return Ok(HttpOutcome {
                    response,
                    redirect_not_followed: true,
                });
            }
            redirects += 1;
            if redirects >= MAX_REDIRECTS {
                return Err(HttpError {
                    url: next.url(),
                    reason: "stopped after 10 redirects".into(),
                    plain_http_answer: false,
                });
            }
            current = next;
        }
    };
    match timeout {
        Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
            Err(HttpError {
                url: request.url(),
                reason:
                    "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                        .into(),
                plain_http_answer: false,
            })
        }),
        None => run.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn container() -> Container {
        serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .expect("container")
    }

    fn target() -> Target {
        Target {
            pod_ip: Some(IpAddr::from([127, 0, 0, 1])),
            netns: None,
            shim_socket: PathBuf::from("/nonexistent"),
        }
    }

    fn action(value: serde_json::Value) -> HTTPGetAction {
        serde_json::from_value(value).expect("action")
    }

    /// Serves the canned responses in order, one connection each, and returns the requests.
    fn serve(responses: Vec<String>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for response in responses {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = stream.write_all(response.as_bytes());
            }
            seen
        });
        (port, server)
    }

    #[test]
    fn ports_resolve_by_number_name_or_numeric_string() {
        let c = container();
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("9090".into()), &c),
            Ok(9090)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert!(resolve_port(&IntOrString::String("grpc".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }

    #[test]
    fn endpoints_prefer_the_host_then_the_pod_ip_then_loopback_in_the_netns() {
        let mut t = target();
        assert_eq!(t.endpoint(Some("example.com"), 80).host, "example.com");
        assert_eq!(t.endpoint(None, 80).authority(), "127.0.0.1:80");
        t.pod_ip = Some("fd00::5".parse().expect("ip"));
        assert_eq!(t.endpoint(Some(""), 8080).authority(), "[fd00::5]:8080");
        t.pod_ip = None;
        t.netns = Some(PathBuf::from("/run/netns/p"));
        let e = t.endpoint(None, 80);
        assert_eq!(
            (e.host.as_str(), e.netns),
            ("127.0.0.1", Some(PathBuf::from("/run/netns/p")))
        );
    }

    #[test]
    fn requests_get_upstream_default_headers_and_the_host_override() {
        let r = HttpRequest::new(
            &action(json!({"port": "http", "path": "healthz?x=1"})),
            &container(),
            &target(),
            "kube-probe",
        )
        .expect("request");
        assert_eq!(r.url(), "http://127.0.0.1:8080/healthz?x=1");
        assert_eq!(r.host_header, "127.0.0.1:8080");
        assert_eq!(
            r.headers,
            [
                ("User-Agent".to_string(), "kube-probe/1.33".to_string()),
                ("Accept".to_string(), "*/*".to_string())
            ]
        );
        let r = HttpRequest::new(
            &action(json!({"port": 80, "scheme": "HTTPS", "httpHeaders": [
                {"name": "Host", "value": "web.example"}, {"name": "accept", "value": ""},
                {"name": "X-Probe", "value": "1"}, {"name": "user-agent", "value": "mine"}]})),
            &container(),
            &target(),
            "kube-lifecycle",
        )
        .expect("request");
        assert_eq!(r.url(), "https://127.0.0.1:80/");
        assert_eq!(r.host_header, "web.example");
        assert_eq!(
            r.headers,
            [
                ("X-Probe".to_string(), "1".to_string()),
                ("user-agent".to_string(), "mine".to_string())
            ]
        );
    }

    #[test]
    fn redirects_resolve_against_the_current_request() {
        let r = HttpRequest::new(
            &action(json!({"port": 8080, "path": "/a/b"})),
            &container(),
            &target(),
            "kube-probe",
        )
        .expect("request");
        assert_eq!(
            r.redirect("/c").map(|n| n.url()).as_deref(),
            Some("http://127.0.0.1:8080/c")
        );
        assert_eq!(
            r.redirect("c").map(|n| n.url()).as_deref(),
            Some("http://127.0.0.1:8080/a/c")
        );
        let other = r.redirect("https://example.com/x").expect("absolute");
        assert_eq!(other.url(), "https://example.com:443/x");
        assert_eq!(other.host_header, "example.com:443");
        let same = r.redirect("http://127.0.0.1:9090").expect("same host");
        assert_eq!(same.url(), "http://127.0.0.1:9090/");
    }

    #[tokio::test]
    async fn http_get_follows_same_host_redirects_and_stops_at_another_host() {
        let (port, server) = serve(vec![
            "HTTP/1.1 302 Found\r\nLocation: /ready\r\nContent-Length: 0\r\n\r\n".into(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into(),
            "HTTP/1.1 301 Moved\r\nLocation: http://elsewhere.invalid/\r\nContent-Length: 4\r\n\r\nmove".into(),
            "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n".into(),
        ]);
        let request = HttpRequest::new(
            &action(json!({"port": port, "path": "/healthz", "httpHeaders": [{"name": "X-Token", "value": "t"}]})),
            &container(),
            &target(),
            "kube-probe",
        )
        .expect("request");
        let timeout = Some(Duration::from_secs(5));
        let first = http_get(&request, timeout).await.expect("followed");
        assert_eq!(first.response.status, 200);
        assert_eq!(first.response.body, "ok");
        assert!(!first.redirect_not_followed);
        let second = http_get(&request, timeout).await.expect("not followed");
        assert_eq!(
            (second.response.status, second.redirect_not_followed),
            (301, true)
        );
        assert_eq!(second.response.body, "move");
        let third = http_get(&request, timeout).await.expect("answered");
        assert_eq!(third.response.status, 503);
        let seen = server.join().expect("server");
        assert!(
            seen[0].starts_with("GET /healthz HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].to_ascii_lowercase().contains("x-token: t\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0]
                .to_ascii_lowercase()
                .contains("user-agent: kube-probe/1.33\r\n")
        );
        assert!(
            seen[1].starts_with("GET /ready HTTP/1.1\r\n"),
            "{}",
            seen[1]
        );
        assert!(
            seen[1].to_ascii_lowercase().contains("x-token: t\r\n"),
            "headers survive a redirect"
        );
        let refused = http_get(&request, timeout)
            .await
            .expect_err("nothing listens");
        assert_eq!(
            refused.to_string(),
            format!(
                "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_is_recognised() {
        let (port, server) = serve(vec![
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".into(),
        ]);
        let request = HttpRequest::new(
            &action(json!({"port": port, "scheme": "HTTPS"})),
            &container(),
            &target(),
            "kube-lifecycle",
        )
        .expect("request");
        let err = http_get(&request, Some(Duration::from_secs(5)))
            .await
            .expect_err("not TLS");
        assert!(err.plain_http_answer, "{err}");
        assert!(
            err.to_string()
                .ends_with("http: server gave HTTP response to HTTPS client")
        );
        server.join().expect("server");
    }
}
