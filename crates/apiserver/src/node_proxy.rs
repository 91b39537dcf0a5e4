//! The node proxies `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: the API
//! server finds the pod's node, builds the kubelet URL and relays the kubelet's answer, as
//! upstream's `pkg/registry/core/pod/rest` (`LogREST`, `ExecREST` …) with the
//! `UpgradeAwareHandler` does.
//!
//! * `log` is an ordinary request: the kubelet's body (a possibly endless `text/plain`
//!   stream with `follow`) is streamed back as it arrives.
//! * `exec`, `attach`, `portforward` are upgrades (WebSocket, or SPDY for older clients):
//!   the client's request goes to the kubelet over a fresh connection; once the kubelet
//!   answers `101 Switching Protocols`, the client gets that answer with the kubelet's headers
//!   and the two upgraded connections are spliced byte for byte. The API server does not
//!   look into the stream protocol at all.
//!
//! A kubelet error (any answer other than 2xx, or 101 for upgrades) becomes a `Status` whose
//! message is the kubelet's text, as upstream's `GenericHttpResponseChecker` does.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::ApiState;
use crate::error::ApiError;
use crate::rest;

/// How long connecting to a kubelet may take before the node counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The kubelet port when a Node does not report one (upstream's `--kubelet-port` default).
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// How much of a kubelet's error answer is kept as the message.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Why a node proxy request failed. `NodeUnreachable` and `NodeMissing` are retryable (the
/// node may come back); the others need a different request or pod.
#[derive(Debug, thiserror::Error)]
pub enum NodeProxyError {
    #[error("pod {pod} does not have a host assigned")]
    NoHost { pod: String },
    #[error("{0}")]
    ContainerNotSpecified(String),
    #[error("container {container} is not valid for pod {pod}")]
    UnknownContainer { pod: String, container: String },
    #[error("cannot {verb} a container in a completed pod; current phase is {phase}")]
    CompletedPod { verb: &'static str, phase: String },
    #[error("PodLogOptions \"{pod}\" is invalid: {field}: Invalid value: {value:?}: {reason}")]
    InvalidLogOptions {
        pod: String,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("the pods/{sub} subresource is not served by the node proxy")]
    UnknownSubresource { sub: String },
    #[error("node {node} of pod {pod} is not registered, so its kubelet cannot be reached")]
    NodeMissing { node: String, pod: String },
    #[error("node {node} reports no address for its kubelet (status.addresses is empty)")]
    NoAddress { node: String },
    #[error("the kubelet of node {node} at {address} is unreachable: {reason}")]
    NodeUnreachable {
        node: String,
        address: String,
        reason: String,
    },
}

impl From<NodeProxyError> for ApiError {
    fn from(e: NodeProxyError) -> ApiError {
        let message = e.to_string();
        match e {
            NodeProxyError::NoHost { .. }
            | NodeProxyError::ContainerNotSpecified(_)
            | NodeProxyError::UnknownContainer { .. }
            | NodeProxyError::CompletedPod { .. }
            | NodeProxyError::UnknownSubresource { .. } => ApiError::bad_request(message),
            NodeProxyError::InvalidLogOptions { .. } => ApiError::new(422, "Invalid", message),
            NodeProxyError::NodeMissing { .. }
            | NodeProxyError::NoAddress { .. }
            | NodeProxyError::NodeUnreachable { .. } => ApiError::unavailable(message),
        }
    }
}

/// Serves `pods/<sub>` of `pod` (already read from the store) by relaying `req` to the pod's
/// kubelet. `query` is the request's raw query string. `req` must still carry hyper's upgrade
/// handle in its extensions (pass the request as axum received it) for `exec`, `attach` and
/// `portforward`.
pub async fn proxy(
    state: &ApiState,
    pod: &Value,
    sub: &str,
    query: Option<&str>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let target = kubelet_target(pod, sub, query)?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let address = kubelet_address(state, node, &target.pod).await?;
    if target.upgrade {
        upgrade(req, &address, node, &target.path_and_query).await
    } else {
        forward(
            req.method().clone(),
            &address,
            node,
            &target.path_and_query,
            sub,
            &target.pod,
        )
        .await
    }
}

/// The kubelet request a `pods/<sub>` request maps to.
#[derive(Debug, PartialEq, Eq)]
struct KubeletTarget {
    pod: String,
    path_and_query: String,
    upgrade: bool,
}

/// Checks the pod and the options, and builds the kubelet path (upstream `LogLocation`,
/// `ExecLocation`, `AttachLocation`, `PortForwardLocation`).
fn kubelet_target(
    pod: &Value,
    sub: &str,
    query: Option<&str>,
) -> Result<KubeletTarget, NodeProxyError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(NodeProxyError::NoHost { pod: name });
    }
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let requested = params
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.as_str())
        .filter(|c| !c.is_empty());
    // Everything but `container` (which becomes part of the path) goes on to the kubelet.
    let rest: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "container").collect();
    let encode = |pairs: &[&(String, String)]| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        s.finish()
    };
    let with_query = |path: String, q: String| {
        if q.is_empty() {
            path
        } else {
            format!("{path}?{q}")
        }
    };
    match sub {
        "log" => {
            validate_log_options(&name, &rest)?;
            let container = container_for(pod, &name, requested)?;
            Ok(KubeletTarget {
                path_and_query: with_query(
                    format!("/containerLogs/{namespace}/{name}/{container}"),
                    encode(&rest),
                ),
                pod: name,
                upgrade: false,
            })
        }
        "exec" | "attach" => {
            let phase = pod
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" {
                let verb = if sub == "exec" {
                    "exec into"
                } else {
                    "attach to"
                };
                return Err(NodeProxyError::CompletedPod {
                    verb,
                    phase: phase.to_string(),
                });
            }
            let container = container_for(pod, &name, requested)?;
            Ok(KubeletTarget {
                path_and_query: with_query(
                    format!("/{sub}/{namespace}/{name}/{container}"),
                    encode(&rest),
                ),
                pod: name,
                upgrade: true,
            })
        }
        "portforward" => Ok(KubeletTarget {
            path_and_query: with_query(format!("/portForward/{namespace}/{name}"), encode(&rest)),
            pod: name,
            upgrade: true,
        }),
        other => Err(NodeProxyError::UnknownSubresource {
            sub: other.to_string(),
        }),
    }
}

/// Upstream's `ValidatePodLogOptions`, so a bad option is refused before the node is asked.
fn validate_log_options(pod: &str, params: &[&(String, String)]) -> Result<(), NodeProxyError> {
    let invalid = |field: &'static str, value: &str, reason: &'static str| {
        NodeProxyError::InvalidLogOptions {
            pod: pod.to_string(),
            field,
            value: value.to_string(),
            reason,
        }
    };
    let mut since = 0;
    for (k, v) in params {
        let (field, min, reason): (&'static str, i64, &'static str) = match k.as_str() {
            "tailLines" => ("tailLines", 0, "must be greater than or equal to 0"),
            "limitBytes" => ("limitBytes", 1, "must be greater than 0"),
            "sinceSeconds" => ("sinceSeconds", 1, "must be greater than 0"),
            "sinceTime" => {
                since += 1;
                continue;
            }
            _ => continue,
        };
        if field == "sinceSeconds" {
            since += 1;
        }
        match v.trim().parse::<i64>() {
            Ok(n) if n >= min => {}
            _ => return Err(invalid(field, v, reason)),
        }
    }
    if since > 1 {
        return Err(invalid(
            "sinceSeconds",
            "",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    Ok(())
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request is about: the one named, which must exist in the pod, or the
/// pod's only container (upstream's wording for the errors).
fn container_for(
    pod: &Value,
    name: &str,
    requested: Option<&str>,
) -> Result<String, NodeProxyError> {
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    match requested {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(NodeProxyError::UnknownContainer {
                    pod: name.to_string(),
                    container: c.to_string(),
                })
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None if containers.is_empty() => Err(NodeProxyError::ContainerNotSpecified(format!(
            "a container name must be specified for pod {name}"
        ))),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                message.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(NodeProxyError::ContainerNotSpecified(message))
        }
    }
}

/// `host:port` of the node's kubelet: its InternalIP (else ExternalIP, else Hostname) and
/// `status.daemonEndpoints.kubeletEndpoint.Port`.
async fn kubelet_address(state: &ApiState, node: &str, pod: &str) -> Result<String, ApiError> {
    let nodes = api::catalogue::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes resource is missing from the catalogue"))?;
    let obj = match rest::get_object(state, nodes, None, node).await {
        Ok((obj, _)) => obj,
        Err(e) if e.code == 404 => {
            return Err(NodeProxyError::NodeMissing {
                node: node.to_string(),
                pod: pod.to_string(),
            }
            .into());
        }
        Err(e) => return Err(e),
    };
    Ok(address_of(node, &obj)?)
}

fn address_of(node: &str, obj: &Value) -> Result<String, NodeProxyError> {
    let addresses = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let of_type = |t: &str| {
        addresses
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .filter(|a| !a.is_empty())
    };
    let host = ["InternalIP", "ExternalIP", "Hostname"]
        .into_iter()
        .find_map(of_type)
        .ok_or_else(|| NodeProxyError::NoAddress {
            node: node.to_string(),
        })?;
    let port = obj
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    })
}

/// Opens an HTTP/1.1 connection to the kubelet.
/// The kubelet at `address` could not be reached or answered nothing.
fn unreachable(node: &str, address: &str, reason: impl ToString) -> NodeProxyError {
    NodeProxyError::NodeUnreachable { node: node.to_string(), address: address.to_string(), reason: reason.to_string() }
}

async fn connect(
    address: &str,
    node: &str,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, NodeProxyError> {
    let unreachable = |reason: String| unreachable(node, address, reason);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended");
        }
    });
    Ok(sender)
}

fn kubelet_request(
    method: Method,
    address: &str,
    path_and_query: &str,
) -> Result<http::request::Builder, ApiError> {
    let host = HeaderValue::from_str(address)
        .map_err(|e| ApiError::internal(format!("kubelet address {address:?}: {e}")))?;
    Ok(Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, host))
}

/// `log`: one request, the body streamed back.
async fn forward(
    method: Method,
    address: &str,
    node: &str,
    path_and_query: &str,
    sub: &str,
    pod: &str,
) -> Result<Response, ApiError> {
    let mut sender = connect(address, node).await?;
    let req = kubelet_request(method, address, path_and_query)?
        .body(Empty::new())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(node, address, e))?;
    if !resp.status().is_success() {
        return Err(kubelet_error(resp, sub, pod).await);
    }
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("text/plain"));
    out.headers_mut().insert(header::CONTENT_TYPE, content_type);
    Ok(out)
}

/// `exec`, `attach`, `portforward`: upstream's `UpgradeAwareHandler`.
async fn upgrade(
    mut req: Request<Body>,
    address: &str,
    node: &str,
    path_and_query: &str,
) -> Result<Response, ApiError> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut sender = connect(address, node).await?;
    let mut builder = kubelet_request(req.method().clone(), address, path_and_query)?;
    for (name, value) in req.headers() {
        // Credentials for the API server are not the kubelet's business; Host is the kubelet's.
        if name == header::HOST || name == header::AUTHORIZATION || name == header::CONTENT_LENGTH {
            continue;
        }
        builder = builder.header(name, value);
    }
    let out = builder
        .body(Empty::new())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let resp = sender
        .send_request(out)
        .await
        .map_err(|e| unreachable(node, address, e))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let sub = path_and_query
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_lowercase();
        let pod = path_and_query
            .split('/')
            .nth(3)
            .unwrap_or_default()
            .to_string();
        return Err(kubelet_error(resp, &sub, &pod).await);
    }
    let mut answer = Response::new(Body::empty());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *answer.headers_mut() = resp.headers().clone();
    let node = node.to_string();
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::join!(client_upgrade, hyper::upgrade::on(resp)) {
            (Ok(c), Ok(k)) => (c, k),
            (c, k) => {
                tracing::debug!(node, client = ?c.err(), kubelet = ?k.err(), "upgrade did not complete");
                return;
            }
        };
        let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
            tracing::debug!(node, error = %e, "upgraded stream ended with an error");
        }
    });
    Ok(answer)
}

/// A kubelet's error answer as a `Status` (upstream `GenericHttpResponseChecker`).
async fn kubelet_error(
    resp: http::Response<hyper::body::Incoming>,
    sub: &str,
    pod: &str,
) -> ApiError {
    let code = resp.status();
    let text = match Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
    {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).trim().to_string(),
        Err(_) => String::new(),
    };
    match code {
        StatusCode::BAD_REQUEST => ApiError::bad_request(text),
        StatusCode::INTERNAL_SERVER_ERROR => ApiError::internal(text),
        StatusCode::NOT_FOUND if text.is_empty() => ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ( pods/{sub} {pod})"),
        ),
        StatusCode::NOT_FOUND => ApiError::new(404, "NotFound", text),
        other => {
            let reason = match other.as_u16() {
                401 => "Unauthorized",
                403 => "Forbidden",
                409 => "Conflict",
                422 => "Invalid",
                429 => "TooManyRequests",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "InternalError",
            };
            let text = if text.is_empty() {
                format!("the kubelet answered {other} for pods/{sub} of pod {pod}")
            } else {
                text
            };
            ApiError::new(other.as_u16(), reason, text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str], node: Option<&str>, phase: &str) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "ns1"},
            "spec": {
                "nodeName": node,
                "containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>(),
            },
            "status": {"phase": phase},
        })
    }

    #[test]
    fn builds_kubelet_paths() {
        let p = pod(&["nginx"], Some("n1"), "Running");
        let t = kubelet_target(&p, "log", Some("follow=true&tailLines=3")).expect("log");
        assert_eq!(
            t.path_and_query,
            "/containerLogs/ns1/web/nginx?follow=true&tailLines=3"
        );
        assert!(!t.upgrade);
        let t = kubelet_target(
            &p,
            "exec",
            Some("command=sh&command=-c&command=echo+hi&container=nginx&stdout=true"),
        )
        .expect("exec");
        assert_eq!(
            t.path_and_query,
            "/exec/ns1/web/nginx?command=sh&command=-c&command=echo+hi&stdout=true"
        );
        assert!(t.upgrade);
        assert_eq!(
            kubelet_target(&p, "log", None).expect("log").path_and_query,
            "/containerLogs/ns1/web/nginx"
        );
        assert_eq!(
            kubelet_target(&p, "portforward", Some("ports=80"))
                .expect("pf")
                .path_and_query,
            "/portForward/ns1/web?ports=80"
        );
    }

    #[test]
    fn upstream_errors() {
        let msg = |r: Result<KubeletTarget, NodeProxyError>| r.expect_err("error").to_string();
        assert_eq!(
            msg(kubelet_target(&pod(&["a"], None, "Pending"), "log", None)),
            "pod web does not have a host assigned"
        );
        assert_eq!(
            msg(kubelet_target(
                &pod(&["a", "b"], Some("n"), "Running"),
                "log",
                None
            )),
            "a container name must be specified for pod web, choose one of: [a b]"
        );
        assert_eq!(
            msg(kubelet_target(
                &pod(&["a"], Some("n"), "Running"),
                "exec",
                Some("container=x&command=ls")
            )),
            "container x is not valid for pod web"
        );
        assert_eq!(
            msg(kubelet_target(
                &pod(&["a"], Some("n"), "Succeeded"),
                "exec",
                Some("command=ls")
            )),
            "cannot exec into a container in a completed pod; current phase is Succeeded"
        );
        assert_eq!(
            msg(kubelet_target(
                &pod(&["a"], Some("n"), "Running"),
                "log",
                Some("tailLines=-1")
            )),
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: \"-1\": must be greater than or equal to 0"
        );
        let e: ApiError = NodeProxyError::CompletedPod {
            verb: "exec into",
            phase: "Failed".into(),
        }
        .into();
        assert_eq!(e.code, 400);
        let e: ApiError = NodeProxyError::NodeMissing {
            node: "n".into(),
            pod: "p".into(),
        }
        .into();
        assert_eq!(e.code, 503);
    }

    #[test]
    fn kubelet_addresses() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "h1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 11250}},
        }});
        assert_eq!(address_of("n", &node).expect("address"), "10.0.0.5:11250");
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "fd00::1"}]}});
        assert_eq!(address_of("n", &node).expect("address"), "[fd00::1]:10250");
        assert!(matches!(
            address_of("n", &json!({})),
            Err(NodeProxyError::NoAddress { .. })
        ));
    }
}
