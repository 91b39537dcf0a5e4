//! The node proxy end to end on loopback: an in-process API server's store holds a Node whose
//! kubelet endpoint is a fake kubelet this test runs; `pods/log` streams through, a
//! `v5.channel.k8s.io` exec round-trips stdin, stdout and the exit status, and the failure
//! cases answer upstream's Status.

use apiserver::{ApiState, node_proxy, rest};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_util::sync::CancellationToken;

/// The API server's state plus a router that serves `pods/{sub}` through the proxy, the way
/// `handlers` does once wired.
struct Harness {
    state: Arc<ApiState>,
    url: String,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn pod_sub(
    State(state): State<Arc<ApiState>>,
    Path((ns, name, sub)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let Some(pods) = api::catalogue::find("", "v1", "pods") else {
        return (http::StatusCode::INTERNAL_SERVER_ERROR, "no pods").into_response();
    };
    let result = async {
        let (pod, _) = rest::get_object(&state, pods, Some(&ns), &name).await?;
        node_proxy::proxy(&state, &pod, &sub, query.as_deref(), req).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn harness() -> Harness {
    let shutdown = CancellationToken::new();
    let store: Arc<dyn store::Store> = Arc::new(store::memory::MemoryStore::new());
    let server = apiserver::ApiServer::bind(
        apiserver::ApiServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            watch_cache_events: 1000,
        },
        store,
        shutdown.clone(),
    )
    .await
    .expect("bind");
    let state = server.state();
    tokio::spawn(server.serve());
    let namespaces = api::catalogue::find("", "v1", "namespaces").expect("namespaces");
    for _ in 0..200 {
        if rest::get_object(&state, namespaces, None, "default")
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let app = Router::new()
        .route("/api/v1/namespaces/{ns}/pods/{name}/{sub}", any(pod_sub))
        .with_state(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let url = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Harness {
        state,
        url,
        shutdown,
    }
}

async fn create(state: &ApiState, plural: &str, ns: Option<&str>, obj: Value) {
    let res = api::catalogue::find("", "v1", plural).expect("resource");
    rest::create(
        state,
        res,
        ns,
        obj,
        None,
        &rest::WriteOptions::internal("test"),
    )
    .await
    .expect("create");
}

fn node(name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        },
    })
}

fn pod(name: &str, node: Option<&str>, containers: &[&str]) -> Value {
    let mut spec = json!({"containers": containers.iter().map(|c| json!({"name": c, "image": "busybox"})).collect::<Vec<_>>()});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

/// Reads a request head (up to the blank line) from a raw connection.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.expect("read head") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A fake kubelet: `/containerLogs/…` answers two chunked lines with a pause between them,
/// `/exec/…` is a v5 WebSocket that echoes stdin to stdout and, at stdin EOF, reports exit
/// code 3. Every request line seen is sent on `seen`.
async fn fake_kubelet(listener: TcpListener, seen: tokio::sync::mpsc::UnboundedSender<String>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut peek = [0u8; 64];
            let n = stream.peek(&mut peek).await.unwrap_or(0);
            let first = String::from_utf8_lossy(&peek[..n]).into_owned();
            if first.starts_with("GET /containerLogs/") {
                let head = read_head(&mut stream).await;
                let _ = seen.send(head.lines().next().unwrap_or_default().to_string());
                if head.contains("/missing?") || head.contains("/missing ") {
                    let body = "container \"missing\" in pod \"web\" is waiting to start: ContainerCreating";
                    let resp = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(resp.as_bytes()).await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nline1\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = stream.write_all(b"6\r\nline2\n\r\n0\r\n\r\n").await;
                return;
            }
            let callback = |req: &WsRequest, mut resp: WsResponse| {
                let _ = seen.send(format!("WS {}", req.uri()));
                resp.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    http::HeaderValue::from_static("v5.channel.k8s.io"),
                );
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Binary(data) = msg else { continue };
                match data.first() {
                    Some(0) => {
                        let mut out = vec![1u8];
                        out.extend_from_slice(&data[1..]);
                        let _ = ws.send(Message::Binary(out.into())).await;
                    }
                    Some(255) => {
                        let status = json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}});
                        let mut out = vec![3u8];
                        out.extend_from_slice(status.to_string().as_bytes());
                        let _ = ws.send(Message::Binary(out.into())).await;
                        let _ = ws.close(None).await;
                    }
                    _ => {}
                }
            }
        });
    }
}

/// A plain HTTP/1.1 GET through the proxy: status and the body chunks as they arrive.
async fn get(url: &str, path: &str) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Bytes>) {
    let tcp = TcpStream::connect(url).await.expect("connect proxy");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", url)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut body = resp.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let _ = tx.send(data);
            }
        }
    });
    (status, rx)
}

async fn body_text(mut rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> String {
    let mut text = Vec::new();
    while let Some(b) = rx.recv().await {
        text.extend_from_slice(&b);
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn logs_and_exec_go_through_the_kubelet() {
    let h = harness().await;
    let kubelet = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind kubelet");
    let port = kubelet.local_addr().expect("addr").port();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(fake_kubelet(kubelet, seen_tx));
    create(&h.state, "nodes", None, node("n1", port)).await;
    create(
        &h.state,
        "pods",
        Some("default"),
        pod("web", Some("n1"), &["nginx"]),
    )
    .await;

    // Logs: the container defaults to the only one, options pass through, and the first line
    // arrives before the kubelet has finished (streamed, not buffered).
    let (status, mut rx) = get(
        &h.url,
        "/api/v1/namespaces/default/pods/web/log?follow=true&tailLines=10",
    )
    .await;
    assert_eq!(status, 200);
    let first = tokio::time::timeout(Duration::from_millis(250), rx.recv())
        .await
        .expect("first chunk in time");
    assert_eq!(first.as_deref(), Some(&b"line1\n"[..]));
    assert_eq!(body_text(rx).await, "line2\n");
    assert_eq!(
        seen.recv().await.as_deref(),
        Some("GET /containerLogs/default/web/nginx?follow=true&tailLines=10 HTTP/1.1")
    );

    // A kubelet error becomes a Status with its text.
    create(
        &h.state,
        "pods",
        Some("default"),
        pod("two", Some("n1"), &["a", "missing"]),
    )
    .await;
    let (status, rx) = get(
        &h.url,
        "/api/v1/namespaces/default/pods/two/log?container=missing",
    )
    .await;
    assert_eq!(status, 400);
    let status_body: Value = serde_json::from_str(&body_text(rx).await).expect("status json");
    assert_eq!(
        status_body["message"],
        "container \"missing\" in pod \"web\" is waiting to start: ContainerCreating"
    );
    let _ = seen.recv().await;

    // Exec over WebSocket v5: stdin is echoed, [255, 0] ends stdin, the status arrives.
    let mut request = format!(
        "ws://{}/api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true",
        h.url
    )
    .into_client_request()
    .expect("ws request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(request)
        .await
        .expect("ws connect");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"v5.channel.k8s.io"[..])
    );
    assert_eq!(
        seen.recv().await.as_deref(),
        Some("WS /exec/default/web/nginx?command=cat&stdin=true&stdout=true")
    );
    ws.send(Message::Binary(Bytes::from_static(b"\x00hello")))
        .await
        .expect("send stdin");
    let echoed = ws.next().await.expect("frame").expect("ok");
    assert_eq!(echoed, Message::Binary(Bytes::from_static(b"\x01hello")));
    ws.send(Message::Binary(Bytes::from_static(b"\xff\x00")))
        .await
        .expect("send close");
    let Message::Binary(status) = ws.next().await.expect("frame").expect("ok") else {
        panic!("status frame")
    };
    assert_eq!(status[0], 3);
    let status: Value = serde_json::from_slice(&status[1..]).expect("status");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn failures_answer_upstream_statuses() {
    let h = harness().await;
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    create(&h.state, "nodes", None, node("dead", dead_port)).await;
    create(
        &h.state,
        "pods",
        Some("default"),
        pod("unbound", None, &["c"]),
    )
    .await;
    create(
        &h.state,
        "pods",
        Some("default"),
        pod("lost", Some("ghost"), &["c"]),
    )
    .await;
    create(
        &h.state,
        "pods",
        Some("default"),
        pod("down", Some("dead"), &["c"]),
    )
    .await;
    create(
        &h.state,
        "pods",
        Some("default"),
        pod("many", Some("dead"), &["a", "b"]),
    )
    .await;

    let check = |path: &'static str, code: u16, needle: String| {
        let url = h.url.clone();
        async move {
            let (status, rx) = get(&url, path).await;
            let text = body_text(rx).await;
            assert_eq!(status, code, "{path}: {text}");
            let body: Value = serde_json::from_str(&text).expect("status json");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(message.contains(&needle), "{path}: {message}");
        }
    };
    check(
        "/api/v1/namespaces/default/pods/unbound/log",
        400,
        "pod unbound does not have a host assigned".into(),
    )
    .await;
    check(
        "/api/v1/namespaces/default/pods/lost/log",
        503,
        "node ghost".into(),
    )
    .await;
    check(
        "/api/v1/namespaces/default/pods/down/log",
        503,
        format!("node dead at 127.0.0.1:{dead_port}"),
    )
    .await;
    check(
        "/api/v1/namespaces/default/pods/many/log",
        400,
        "a container name must be specified for pod many, choose one of: [a b]".into(),
    )
    .await;
    check(
        "/api/v1/namespaces/default/pods/many/log?container=zz",
        400,
        "container zz is not valid for pod many".into(),
    )
    .await;
}
