//! Component tests of the ingress controller: an in-process API server, backends that are small
//! hyper servers on 127.0.0.1 answering with their own name, and the ingress proxy on
//! 127.0.0.1:0. Loopback only.

// The in-process API server harness the controllers' tests use, shared rather than copied.
#[path = "../../controllers/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ingress::{IngressConfig, IngressServer};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Backends

/// A backend HTTP server answering `{"backend": name, "path": …, "headers": {…}}`; `/slow`
/// waits 3 s; an Upgrade request gets 101 and an echo of the raw stream.
async fn backend(name: &str) -> SocketAddr {
    counting_backend(name).await.0
}

/// [`backend`], also counting the TCP connections it accepted.
async fn counting_backend(name: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let name = name.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(name.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, accepted)
}

async fn answer(
    name: String,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .expect("response");
        return Ok(response);
    }
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let path = req.uri().to_string();
    let (parts, body) = req.into_parts();
    let received = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers = BTreeMap::new();
    for (k, v) in &parts.headers {
        let v = v.to_str().unwrap_or("").to_string();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|old: &mut String| {
                old.push_str(", ");
                old.push_str(&v);
            })
            .or_insert(v);
    }
    let body = json!({
        "backend": name,
        "path": path,
        "headers": headers,
        "received": received.len(),
        "checksum": received.iter().map(|b| u64::from(*b)).sum::<u64>(),
    });
    Ok(Response::new(Full::new(Bytes::from(body.to_string()))))
}

/// A port nothing listens on.
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------------
// Cluster objects

struct Cluster {
    api: common::TestApi,
    ingress: SocketAddr,
    https: SocketAddr,
    metrics: ingress::IngressMetrics,
    cancel: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(upstream_timeout: Duration) -> Cluster {
    let api = common::start_api().await;
    let config = IngressConfig {
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        https_listen: Some("127.0.0.1:0".parse().expect("addr")),
        status_addresses: vec!["127.0.0.1".parse().expect("ip")],
        upstream_timeout,
        connect_timeout: Duration::from_secs(2),
        ..IngressConfig::default()
    };
    let server = IngressServer::bind(api.client.clone(), config)
        .await
        .expect("bind ingress");
    let ingress = server.http_addr();
    let https = server.https_addr().expect("https");
    let metrics = server.metrics();
    let cancel = CancellationToken::new();
    tokio::spawn(server.serve(cancel.clone()));
    Cluster {
        api,
        ingress,
        https,
        metrics,
        cancel,
    }
}

impl Cluster {
    /// A Service `name` (port 80 named http) whose endpoints are 127.0.0.1 at `ports` (one
    /// EndpointSlice per port, as the target port is per slice) with the given readiness.
    async fn service(&self, name: &str, endpoints: &[(u16, bool)]) {
        let services: Api<Service> = Api::namespaced(self.api.client.clone(), "default");
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .expect("service");
        services
            .create(&PostParams::default(), &svc)
            .await
            .expect("create service");
        let slices: Api<EndpointSlice> = Api::namespaced(self.api.client.clone(), "default");
        for (i, (port, ready)) in endpoints.iter().enumerate() {
            let slice: EndpointSlice = serde_json::from_value(json!({
                "metadata": {
                    "name": format!("{name}-{i}"),
                    "labels": {"kubernetes.io/service-name": name}
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
            }))
            .expect("slice");
            slices
                .create(&PostParams::default(), &slice)
                .await
                .expect("create slice");
        }
    }

    async fn ingress(&self, object: Value) {
        let ingresses: Api<Ingress> = Api::namespaced(self.api.client.clone(), "default");
        let object: Ingress = serde_json::from_value(object).expect("ingress");
        ingresses
            .create(&PostParams::default(), &object)
            .await
            .expect("create ingress");
    }
}

fn rule(host: Option<&str>, paths: &[(&str, &str, &str)]) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(path, kind, svc)| {
            json!({"path": path, "pathType": kind,
                   "backend": {"service": {"name": svc, "port": {"number": 80}}}})
        })
        .collect();
    match host {
        Some(h) => json!({"host": h, "http": {"paths": paths}}),
        None => json!({"http": {"paths": paths}}),
    }
}

// ---------------------------------------------------------------------------------------------
// Client

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn backend(&self) -> String {
        self.json()["backend"].as_str().unwrap_or("").to_string()
    }
}

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn send_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Answer {
    let response = sender.send_request(request).await.expect("send request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn request(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Answer {
    send_on(&mut connect(addr).await, request(host, path)).await
}

/// Polls until `check` holds for the answer (routes converge asynchronously), or panics with
/// the last answer after 10 s.
async fn eventually(
    addr: SocketAddr,
    host: &str,
    path: &str,
    check: impl Fn(&Answer) -> bool,
) -> Answer {
    let mut last = None;
    for _ in 0..200 {
        let answer = get(addr, host, path).await;
        if check(&answer) {
            return answer;
        }
        last = Some(answer);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = last.expect("at least one answer");
    panic!(
        "{host}{path}: still {} {:?} after 10 s",
        last.status, last.body
    );
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn two_hosts_and_two_paths_route_to_the_right_service() {
    let c = start(Duration::from_secs(60)).await;
    for name in ["a", "b", "c", "d"] {
        let port = backend(name).await.port();
        c.service(name, &[(port, true)]).await;
    }
    c.ingress(json!({
        "metadata": {"name": "web"},
        "spec": {"rules": [
            rule(Some("foo.example.com"), &[("/a", "Prefix", "a"), ("/b", "Prefix", "b")]),
            rule(Some("bar.example.com"), &[("/a", "Prefix", "c"), ("/b", "Prefix", "d")]),
        ]}
    }))
    .await;
    eventually(c.ingress, "foo.example.com", "/a", |a| a.backend() == "a").await;
    for (host, path, want) in [
        ("foo.example.com", "/a/x?q=1", "a"),
        ("FOO.example.com:80", "/b", "b"),
        ("bar.example.com", "/a", "c"),
        ("bar.example.com", "/b/deeper/still", "d"),
    ] {
        let answer = get(c.ingress, host, path).await;
        assert_eq!(answer.status, 200, "{host}{path}: {}", answer.body);
        assert_eq!(answer.backend(), want, "{host}{path}");
        assert_eq!(
            answer.json()["path"],
            path,
            "the path and query pass unchanged"
        );
    }
    // Element-wise prefix: /ab is not under /a.
    let miss = get(c.ingress, "foo.example.com", "/ab").await;
    assert_eq!(miss.status, 404);
    let unknown = get(c.ingress, "nobody.example.com", "/a").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.body,
        "404 Not Found: no Ingress rule matches host \"nobody.example.com\" and path \"/a\", and no Ingress sets a defaultBackend\n"
    );
    assert!(c.metrics.requests(200) >= 4);
    assert!(c.metrics.encode().contains("skiff_ingress_requests_total"));
}

#[tokio::test]
async fn the_backend_sees_forwarded_headers_and_the_original_host() {
    let c = start(Duration::from_secs(60)).await;
    let port = backend("web").await.port();
    c.service("web", &[(port, true)]).await;
    c.ingress(json!({
        "metadata": {"name": "web"},
        "spec": {"rules": [rule(Some("foo.example.com"), &[("/", "Prefix", "web")])]}
    }))
    .await;
    eventually(c.ingress, "foo.example.com:8000", "/", |a| {
        a.backend() == "web"
    })
    .await;
    let req = Request::get("/x")
        .header("host", "foo.example.com:8000")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("x-keep-me", "1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let answer = send_on(&mut connect(c.ingress).await, req).await;
    let seen = &answer.json()["headers"];
    assert_eq!(seen["host"], "foo.example.com:8000");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "foo.example.com:8000");
    assert_eq!(seen["x-forwarded-port"], c.ingress.port().to_string());
    assert_eq!(seen["x-keep-me"], "1");
    assert!(seen.get("x-drop-me").is_none(), "{seen}");
    assert!(seen.get("connection").is_none(), "{seen}");
}

#[tokio::test]
async fn exact_beats_prefix_and_the_default_backend_catches_the_rest() {
    let c = start(Duration::from_secs(60)).await;
    for name in ["exact", "prefix", "fallback"] {
        let port = backend(name).await.port();
        c.service(name, &[(port, true)]).await;
    }
    c.ingress(json!({
        "metadata": {"name": "web"},
        "spec": {
            "defaultBackend": {"service": {"name": "fallback", "port": {"name": "http"}}},
            "rules": [rule(None, &[("/api", "Prefix", "prefix"), ("/api", "Exact", "exact")])]
        }
    }))
    .await;
    eventually(c.ingress, "any.host", "/api", |a| a.backend() == "exact").await;
    assert_eq!(
        get(c.ingress, "any.host", "/api/").await.backend(),
        "prefix"
    );
    assert_eq!(
        get(c.ingress, "any.host", "/api/v1").await.backend(),
        "prefix"
    );
    assert_eq!(
        get(c.ingress, "any.host", "/apis").await.backend(),
        "fallback"
    );
    assert_eq!(get(c.ingress, "other", "/").await.backend(), "fallback");
}

#[tokio::test]
async fn unavailable_backends_get_503_502_and_504_with_clear_bodies() {
    let c = start(Duration::from_millis(500)).await;
    let dead = dead_port().await;
    let slow = backend("slow").await.port();
    c.service("empty", &[(dead, false)]).await;
    c.service("dead", &[(dead, true)]).await;
    c.service("slow", &[(slow, true)]).await;
    c.ingress(json!({
        "metadata": {"name": "web"},
        "spec": {"rules": [rule(None, &[
            ("/empty", "Prefix", "empty"),
            ("/dead", "Prefix", "dead"),
            ("/missing", "Prefix", "missing"),
            ("/slow", "Prefix", "slow"),
        ])]}
    }))
    .await;
    // Routed, and the Service itself seen by the proxy's watch (not only the Ingress).
    let empty = eventually(c.ingress, "h", "/empty", |a| {
        a.status != 404 && !a.body.contains("does not exist")
    })
    .await;
    assert_eq!(empty.status, 503);
    assert_eq!(
        empty.body,
        "503 Service Unavailable: no ready endpoints for service default/empty\n"
    );
    let missing = get(c.ingress, "h", "/missing").await;
    assert_eq!(missing.status, 503);
    assert_eq!(
        missing.body,
        "503 Service Unavailable: service default/missing does not exist\n"
    );
    let dead_answer = get(c.ingress, "h", "/dead").await;
    assert_eq!(dead_answer.status, 502);
    assert!(
        dead_answer.body.starts_with(&format!(
            "502 Bad Gateway: could not connect to service default/dead (tried 1 of 1 endpoints: connect to 127.0.0.1:{dead}"
        )),
        "{}",
        dead_answer.body
    );
    let slow_answer = get(c.ingress, "h", "/slow").await;
    assert_eq!(slow_answer.status, 504);
    assert!(
        slow_answer
            .body
            .starts_with("504 Gateway Timeout: endpoint 127.0.0.1:"),
        "{}",
        slow_answer.body
    );
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_for_the_next_one() {
    let c = start(Duration::from_secs(60)).await;
    let live = backend("live").await.port();
    let dead = dead_port().await;
    c.service("web", &[(dead, true), (live, true)]).await;
    c.ingress(json!({
        "metadata": {"name": "web"},
        "spec": {"rules": [rule(None, &[("/", "Prefix", "web")])]}
    }))
    .await;
    eventually(c.ingress, "h", "/", |a| a.status == 200).await;
    // Round-robin starts on the dead endpoint every other request; each still succeeds.
    for i in 0..6 {
        let answer = get(c.ingress, "h", "/").await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
        assert_eq!(answer.backend(), "live");
    }
    assert!(
        c.metrics
            .encode()
            .contains("skiff_ingress_upstream_connect_failures_total")
    );
}

#[tokio::test]
async fn an_upgrade_is_tunnelled_both_ways() {
    let c = start(Duration::from_secs(60)).await;
    let port = backend("ws").await.port();
    c.service("ws", &[(port, true)]).await;
    c.ingress(json!({
        "metadata": {"name": "ws"},
        "spec": {"rules": [rule(Some("ws.example.com"), &[("/", "Prefix", "ws")])]}
    }))
    .await;
    eventually(c.ingress, "ws.example.com", "/", |a| a.backend() == "ws").await;
    let mut stream = TcpStream::connect(c.ingress).await.expect("connect");
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "connection closed in the response head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for message in [&b"ping"[..], b"a longer second message"] {
        stream.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn routing_changes_keep_an_open_keep_alive_connection() {
    let c = start(Duration::from_secs(60)).await;
    for name in ["old", "new"] {
        let port = backend(name).await.port();
        c.service(name, &[(port, true)]).await;
    }
    c.ingress(json!({
        "metadata": {"name": "web"},
        "spec": {"rules": [rule(Some("h"), &[("/", "Prefix", "old")])]}
    }))
    .await;
    eventually(c.ingress, "h", "/", |a| a.backend() == "old").await;
    let mut conn = connect(c.ingress).await;
    assert_eq!(send_on(&mut conn, request("h", "/")).await.backend(), "old");

    let ingresses: Api<Ingress> = Api::namespaced(c.api.client.clone(), "default");
    ingresses
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rules": [rule(Some("h"), &[("/", "Prefix", "new")])]}})),
        )
        .await
        .expect("patch ingress");
    let mut switched = false;
    for _ in 0..200 {
        // Same connection every time: a dropped connection fails send_on.
        if send_on(&mut conn, request("h", "/")).await.backend() == "new" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched, "the route never changed on the open connection");
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn status_load_balancer_is_published_and_cleared_and_other_classes_are_ignored() {
    let c = start(Duration::from_secs(60)).await;
    let port = backend("web").await.port();
    c.service("web", &[(port, true)]).await;
    c.ingress(json!({
        "metadata": {"name": "ours"},
        "spec": {"ingressClassName": "skiff",
                 "rules": [rule(Some("ours.example.com"), &[("/", "Prefix", "web")])]}
    }))
    .await;
    c.ingress(json!({
        "metadata": {"name": "theirs"},
        "spec": {"ingressClassName": "nginx",
                 "rules": [rule(Some("theirs.example.com"), &[("/", "Prefix", "web")])]}
    }))
    .await;
    eventually(c.ingress, "ours.example.com", "/", |a| a.backend() == "web").await;
    assert_eq!(get(c.ingress, "theirs.example.com", "/").await.status, 404);

    let classes: Api<IngressClass> = Api::all(c.api.client.clone());
    let class = classes.get("skiff").await.expect("default IngressClass");
    assert_eq!(
        class.spec.and_then(|s| s.controller).as_deref(),
        Some(ingress::CONTROLLER)
    );
    assert_eq!(
        class
            .metadata
            .annotations
            .and_then(|a| a
                .get("ingressclass.kubernetes.io/is-default-class")
                .cloned())
            .as_deref(),
        Some("true")
    );

    let ingresses: Api<Ingress> = Api::namespaced(c.api.client.clone(), "default");
    let ips = |i: &Ingress| -> Vec<String> {
        i.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ip.clone())
            .collect()
    };
    let mut published = Vec::new();
    for _ in 0..200 {
        published = ips(&ingresses.get("ours").await.expect("get"));
        if !published.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published, vec!["127.0.0.1".to_string()]);
    assert!(ips(&ingresses.get("theirs").await.expect("get")).is_empty());

    // Moving ours to another class stops serving it and clears the status.
    ingresses
        .patch(
            "ours",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingressClassName": "nginx"}})),
        )
        .await
        .expect("patch class");
    eventually(c.ingress, "ours.example.com", "/", |a| a.status == 404).await;
    let mut cleared = false;
    for _ in 0..200 {
        if ips(&ingresses.get("ours").await.expect("get")).is_empty() {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cleared,
        "status.loadBalancer still set on an Ingress no longer served"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS

/// Accepts any certificate and remembers the one presented.
#[derive(Debug, Default)]
struct Recorder(Mutex<Option<Vec<u8>>>);

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().expect("lock") = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects with TLS and `sni`, sends GET / with that Host; returns the certificate presented
/// and the answer.
async fn get_tls(addr: SocketAddr, sni: &str) -> (Vec<u8>, Answer) {
    let recorder = Arc::new(Recorder::default());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(recorder.clone())
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("server name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let answer = send_on(&mut sender, request(sni, "/")).await;
    let cert = recorder
        .0
        .lock()
        .expect("lock")
        .clone()
        .expect("a certificate");
    (cert, answer)
}

fn tls_secret(name: &str, host: &str) -> (Secret, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(cert.pem().into_bytes())),
            (
                "tls.key".to_string(),
                ByteString(key.serialize_pem().into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    (secret, cert.der().to_vec())
}

#[tokio::test]
async fn tls_picks_the_certificate_by_sni_and_http_redirects() {
    let c = start(Duration::from_secs(60)).await;
    let port = backend("secure").await.port();
    c.service("secure", &[(port, true)]).await;
    let secrets: Api<Secret> = Api::namespaced(c.api.client.clone(), "default");
    let (a_secret, a_der) = tls_secret("a-tls", "a.example.com");
    let (b_secret, b_der) = tls_secret("b-tls", "b.example.com");
    for s in [&a_secret, &b_secret] {
        secrets
            .create(&PostParams::default(), s)
            .await
            .expect("create secret");
    }
    c.ingress(json!({
        "metadata": {"name": "secure"},
        "spec": {
            "tls": [{"hosts": ["a.example.com"], "secretName": "a-tls"},
                    {"hosts": ["b.example.com"], "secretName": "b-tls"}],
            "rules": [
                rule(Some("a.example.com"), &[("/", "Prefix", "secure")]),
                rule(Some("b.example.com"), &[("/", "Prefix", "secure")]),
            ]
        }
    }))
    .await;
    // HTTP on a TLS host redirects (ingress-nginx's ssl-redirect default) once the cert loaded.
    let redirect = eventually(c.ingress, "a.example.com", "/", |a| a.status == 308).await;
    assert_eq!(
        redirect
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some(format!("https://a.example.com:{}/", c.https.port()).as_str())
    );

    let (cert, answer) = get_tls(c.https, "a.example.com").await;
    assert_eq!(cert, a_der);
    assert_eq!(answer.backend(), "secure");
    assert_eq!(answer.json()["headers"]["x-forwarded-proto"], "https");
    let (cert, _) = get_tls(c.https, "b.example.com").await;
    assert_eq!(cert, b_der);
    let (cert, answer) = get_tls(c.https, "unknown.example.com").await;
    assert!(
        cert != a_der && cert != b_der,
        "unknown SNI gets the default certificate"
    );
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_reused() {
    let c = start(Duration::from_secs(60)).await;
    let (addr, accepted) = counting_backend("pooled").await;
    c.service("pooled", &[(addr.port(), true)]).await;
    c.ingress(json!({
        "metadata": {"name": "pooled"},
        "spec": {"rules": [rule(None, &[("/", "Prefix", "pooled")])]}
    }))
    .await;
    eventually(c.ingress, "h", "/", |a| a.backend() == "pooled").await;
    let before = accepted.load(Ordering::SeqCst);
    // Fresh client connections each time; sequential, so one backend connection suffices.
    for _ in 0..10 {
        assert_eq!(get(c.ingress, "h", "/").await.backend(), "pooled");
        // The connection returns to the pool when hyper has finished the response.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        accepted.load(Ordering::SeqCst) - before <= 1,
        "{} backend connections for 10 sequential requests",
        accepted.load(Ordering::SeqCst) - before
    );
}

#[tokio::test]
async fn request_bodies_stream_through_and_http2_clients_are_served() {
    let c = start(Duration::from_secs(60)).await;
    let port = backend("sink").await.port();
    c.service("sink", &[(port, true)]).await;
    c.ingress(json!({
        "metadata": {"name": "sink"},
        "spec": {"rules": [rule(Some("sink.example.com"), &[("/", "Prefix", "sink")])]}
    }))
    .await;
    eventually(c.ingress, "sink.example.com", "/", |a| {
        a.backend() == "sink"
    })
    .await;

    // A 1 MiB request body in 64 KiB chunks without Content-Length (chunked on the wire).
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..16u8)
        .map(|i| Ok(hyper::body::Frame::data(Bytes::from(vec![i; 64 * 1024]))))
        .collect();
    let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
    let stream = TcpStream::connect(c.ingress).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::post("/upload")
                .header("host", "sink.example.com")
                .body(body)
                .expect("request"),
        )
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let answer: Value = serde_json::from_slice(
        &response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
    .expect("json");
    assert_eq!(answer["received"], 1024 * 1024);
    let expected: u64 = (0..16u64).map(|i| i * 64 * 1024).sum();
    assert_eq!(answer["checksum"], expected);

    // HTTP/2 with prior knowledge: the :authority becomes the Host the backend sees.
    let stream = TcpStream::connect(c.ingress).await.expect("connect");
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let response = h2
        .send_request(
            Request::get("http://sink.example.com/h2")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("h2 send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let answer: Value = serde_json::from_slice(
        &response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
    .expect("json");
    assert_eq!(answer["backend"], "sink");
    assert_eq!(answer["path"], "/h2");
    assert_eq!(answer["headers"]["host"], "sink.example.com");
}
