//! The per-request path: match the route, redirect to HTTPS or answer an error, or forward to a
//! backend endpoint with the ingress-nginx request headers, retrying the next endpoint when
//! connecting fails, and relay the response (or the upgraded byte stream) back.
//!
//! Status codes and when (as ingress-nginx): 404 no rule and no default backend; 503 the Service
//! is missing or has no ready endpoints; 502 no endpoint could be reached, or one broke off;
//! 504 connecting timed out on every try, or the response did not start within the upstream
//! timeout; 308 the HTTP → HTTPS redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::IngressMetrics;
use crate::routes::{Backend, RouteTable, Target};
use crate::upstream::{SendError, UpstreamPool};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of every response the proxy sends: a relayed backend body or a short error text.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the legacy
/// ones proxies also drop.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientConn {
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) scheme: Scheme,
}

pub(crate) struct Proxy {
    routes: RwLock<Arc<RouteTable>>,
    pool: Arc<UpstreamPool>,
    metrics: IngressMetrics,
    max_attempts: usize,
    upstream_timeout: Duration,
    /// The HTTPS listener's port, when there is one (redirect target).
    https_port: Option<u16>,
    /// Ends upgraded tunnels at shutdown.
    shutdown: CancellationToken,
}

impl Proxy {
    pub(crate) fn new(
        pool: Arc<UpstreamPool>,
        metrics: IngressMetrics,
        max_attempts: usize,
        upstream_timeout: Duration,
        https_port: Option<u16>,
        shutdown: CancellationToken,
    ) -> Self {
        Proxy {
            routes: RwLock::new(Arc::new(RouteTable::default())),
            pool,
            metrics,
            max_attempts,
            upstream_timeout,
            https_port,
            shutdown,
        }
    }

    /// Swaps in a new routing table; requests already routed keep the old one.
    pub(crate) fn replace_routes(&self, table: RouteTable) {
        let table = Arc::new(table);
        match self.routes.write() {
            Ok(mut t) => *t = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    fn current_routes(&self) -> Arc<RouteTable> {
        match self.routes.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        conn: ClientConn,
    ) -> Response<ProxyBody> {
        let response = self.route_and_forward(request, conn).await;
        self.metrics.response(response.status().as_u16());
        response
    }

    async fn route_and_forward(
        &self,
        mut request: Request<Incoming>,
        conn: ClientConn,
    ) -> Response<ProxyBody> {
        let host_header = original_host(&request);
        let host = route_host(host_header.as_deref().unwrap_or(""));
        let path = request.uri().path().to_string();
        let table = self.current_routes();
        let Some(route) = table.route(&host, &path) else {
            return error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no Ingress rule matches host {host:?} and path {path:?}, and no Ingress sets a defaultBackend"
                ),
            );
        };
        if route.redirect_https
            && conn.scheme == Scheme::Http
            && let Some(port) = self.https_port
        {
            return redirect_to_https(&host, port, &request);
        }
        let backend = route.backend;
        let endpoints = match &backend.target {
            Target::Unavailable(message) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, message);
            }
            Target::Endpoints(addrs) => addrs.clone(),
            Target::ExternalName { host, port } => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => addrs.collect(),
                    Err(e) => {
                        return error(
                            StatusCode::BAD_GATEWAY,
                            &format!(
                                "cannot resolve {host} for ExternalName service {}: {e}",
                                backend.service
                            ),
                        );
                    }
                }
            }
        };
        if endpoints.is_empty() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no ready endpoints for service {}", backend.service),
            );
        }

        let client_upgrade =
            is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let upstream_request = prepare_request(request, conn, host_header.as_deref());
        self.forward(&backend, &endpoints, upstream_request, client_upgrade)
            .await
    }

    async fn forward(
        &self,
        backend: &Backend,
        endpoints: &[SocketAddr],
        mut request: Request<Incoming>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        let start = backend.next_index();
        let attempts = self.max_attempts.min(endpoints.len());
        let mut failures = Vec::new();
        let mut timed_out = false;
        for attempt in 0..attempts {
            let addr = endpoints[(start + attempt) % endpoints.len()];
            let sent_at = Instant::now();
            match self.pool.send(addr, request).await {
                Ok(response) => {
                    self.metrics.upstream_latency(sent_at.elapsed());
                    return relay_response(
                        response,
                        client_upgrade,
                        addr,
                        &backend.service,
                        &self.shutdown,
                    );
                }
                Err(SendError::Connect {
                    request: back,
                    reason,
                    timed_out: t,
                }) => {
                    self.metrics.connect_failure();
                    tracing::debug!(service = %backend.service, %addr, %reason, "endpoint unreachable, trying the next");
                    failures.push(reason);
                    timed_out = t;
                    request = *back;
                }
                Err(SendError::Timeout) => {
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        &format!(
                            "endpoint {addr} of service {} did not answer within {:?}",
                            backend.service, self.upstream_timeout
                        ),
                    );
                }
                Err(SendError::Upstream(e)) => {
                    tracing::warn!(service = %backend.service, %addr, error = %e, "backend failed");
                    return error(
                        StatusCode::BAD_GATEWAY,
                        &format!("endpoint {addr} of service {} failed: {e}", backend.service),
                    );
                }
            }
        }
        let status = if timed_out {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        };
        tracing::warn!(service = %backend.service, tried = attempts, "no endpoint reachable");
        error(
            status,
            &format!(
                "could not connect to service {} (tried {attempts} of {} endpoints: {})",
                backend.service,
                endpoints.len(),
                failures.join("; ")
            ),
        )
    }
}

/// The Host the client asked for, as sent: the absolute-form URI's authority wins over the Host
/// header (RFC 9112 §3.2.2); HTTP/2 has only the `:authority`.
fn original_host(request: &Request<Incoming>) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str().to_string());
    }
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// The host part used for matching: no port, lowercase, no trailing dot.
fn route_host(host: &str) -> String {
    let without_port = match host.parse::<http::uri::Authority>() {
        Ok(a) => a.host().to_string(),
        Err(_) => host.to_string(),
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Drops hop-by-hop headers, including those the Connection header names. With `upgrade`, the
/// Upgrade handshake headers pass through (the tunnel is end to end).
fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_value = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// Rewrites the client's request for the backend: origin-form URI, HTTP/1.1, Host preserved,
/// hop-by-hop headers dropped and the X-Forwarded-* set ingress-nginx sends.
fn prepare_request(
    request: Request<Incoming>,
    conn: ClientConn,
    host: Option<&str>,
) -> Request<Incoming> {
    let upgrade = is_upgrade(request.headers());
    let (mut parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    parts.uri = path_and_query
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let headers = &mut parts.headers;
    remove_hop_by_hop(headers, upgrade);
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(header::HOST, host.clone());
        headers.insert("x-forwarded-host", host);
    }

    let client_ip: IpAddr = conn.remote.ip().to_canonical();
    // Appended, as ingress-nginx's $full_x_forwarded_for does with use-forwarded-headers off.
    let prior: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if prior.is_empty() {
        client_ip.to_string()
    } else {
        format!("{}, {client_ip}", prior.join(", "))
    };
    let set = |headers: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(headers, "x-forwarded-for", forwarded_for);
    set(headers, "x-real-ip", client_ip.to_string());
    set(
        headers,
        "x-forwarded-proto",
        conn.scheme.as_str().to_string(),
    );
    set(
        headers,
        "x-forwarded-scheme",
        conn.scheme.as_str().to_string(),
    );
    set(headers, "x-scheme", conn.scheme.as_str().to_string());
    set(headers, "x-forwarded-port", conn.local.port().to_string());
    Request::from_parts(parts, body)
}

/// Relays a backend response; a 101 to an upgrade request becomes a byte tunnel.
fn relay_response(
    mut response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    addr: SocketAddr,
    service: &str,
    shutdown: &CancellationToken,
) -> Response<ProxyBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return error(
                StatusCode::BAD_GATEWAY,
                &format!("endpoint {addr} of service {service} switched protocols unasked"),
            );
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let service = service.to_string();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(c), Ok(u)) => (c, u),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(%service, error = %e, "upgrade did not complete");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(e) = copied {
                        tracing::debug!(%service, error = %e, "upgraded connection ended");
                    }
                }
            }
        });
        let (mut parts, _) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, empty());
    }
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
    )
}

fn redirect_to_https(host: &str, port: u16, request: &Request<Incoming>) -> Response<ProxyBody> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let authority = if port == 443 {
        host.to_string()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let location = format!("https://{authority}{path}");
    let mut response = error(
        StatusCode::PERMANENT_REDIRECT,
        &format!("redirecting to {location}"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short plain-text answer: "503 Service Unavailable: no ready endpoints for service …".
pub(crate) fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = format!(
        "{} {}: {message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_port_case_and_trailing_dot() {
        assert_eq!(route_host("Foo.Example.com:8080"), "foo.example.com");
        assert_eq!(route_host("foo.example.com."), "foo.example.com");
        assert_eq!(route_host("[::1]:80"), "[::1]");
        assert_eq!(route_host(""), "");
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_headers_survive_for_upgrades_only() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        let mut kept = h.clone();
        remove_hop_by_hop(&mut kept, true);
        assert_eq!(
            kept.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            kept.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
    }

    #[tokio::test]
    async fn error_bodies_name_the_status_and_the_cause() {
        let r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ready endpoints for service default/web",
        );
        assert_eq!(r.status(), 503);
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            &body[..],
            b"503 Service Unavailable: no ready endpoints for service default/web\n"
        );
    }
}
