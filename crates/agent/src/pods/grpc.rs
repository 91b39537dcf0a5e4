//! gRPC probes: one `grpc.health.v1.Health/Check` call over HTTP/2 cleartext, as upstream's
//! `pkg/probe/grpc` makes it with grpc-go. The two protobuf messages are a single field each,
//! so they are encoded here by hand:
//!
//! ```text
//! HealthCheckRequest  { string service = 1; }
//! HealthCheckResponse { ServingStatus status = 1; }  // UNKNOWN 0, SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3
//! ```
//!
//! Only SERVING succeeds. Failure messages are upstream's, e.g.
//! `service unhealthy (responded with "NOT_SERVING")` or
//! `timeout: failed to connect service "10.42.0.5:50051" within 1s: context deadline exceeded`
//! (grpc-go dials with `WithBlock`, retrying until the probe's timeout).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use super::handler::{Endpoint, KUBE_VERSION, dial};
use super::worker::go_duration;

/// The RPC a gRPC probe calls.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// grpc-go's first reconnect back-off.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Why a gRPC frame or message could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("the message is truncated")]
    Truncated,
    #[error("compressed messages are not supported")]
    Compressed,
    #[error("varint is longer than 10 bytes")]
    Varint,
    #[error("unsupported wire type {0}")]
    WireType(u64),
}

/// A protobuf varint.
fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn read_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = input.split_first().ok_or(DecodeError::Truncated)?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Varint)
}

/// `HealthCheckRequest { service }`; the empty service (the server as a whole) is the empty
/// message, as proto3 omits default values.
pub(crate) fn encode_request(service: &str) -> Bytes {
    let mut out = BytesMut::new();
    if !service.is_empty() {
        put_varint(&mut out, (1 << 3) | 2);
        put_varint(&mut out, service.len() as u64);
        out.put_slice(service.as_bytes());
    }
    out.freeze()
}

/// The `status` of a `HealthCheckResponse`; unknown fields are skipped, a missing status is
/// UNKNOWN (0).
pub(crate) fn decode_response(mut input: &[u8]) -> Result<u64, DecodeError> {
    let mut status = 0;
    while !input.is_empty() {
        let key = read_varint(&mut input)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = read_varint(&mut input)?,
            (_, 0) => {
                read_varint(&mut input)?;
            }
            (_, 1) => input = input.get(8..).ok_or(DecodeError::Truncated)?,
            (_, 5) => input = input.get(4..).ok_or(DecodeError::Truncated)?,
            (_, 2) => {
                let len = usize::try_from(read_varint(&mut input)?)
                    .map_err(|_| DecodeError::Truncated)?;
                input = input.get(len..).ok_or(DecodeError::Truncated)?;
            }
            (_, wire) => return Err(DecodeError::WireType(wire)),
        }
    }
    Ok(status)
}

/// A gRPC length-prefixed message: compressed flag 0, big-endian length, the message.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The first message of a response body.
pub(crate) fn unframe(body: &[u8]) -> Result<&[u8], DecodeError> {
    let (head, rest) = body.split_at_checked(5).ok_or(DecodeError::Truncated)?;
    if head[0] != 0 {
        return Err(DecodeError::Compressed);
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    rest.get(..len).ok_or(DecodeError::Truncated)
}

/// The health protocol's status names (`ServingStatus.String()`).
pub(crate) fn serving_status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => other.to_string(),
    }
}

/// gRPC status code names as grpc-go prints them.
fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("Code({code})"), |n| (*n).to_string())
}

/// The gRPC code grpc-go derives from a non-200 HTTP status.
fn code_of_http_status(status: u16) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = value.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `grpc-timeout` in milliseconds (at most 8 digits, per the spec).
fn grpc_timeout(left: Duration) -> String {
    format!("{}m", left.as_millis().clamp(1, 99_999_999))
}

/// The outcome of one RPC, before it is worded for the probe.
#[derive(Debug, PartialEq, Eq)]
enum RpcOutcome {
    Status(u64),
    /// A non-OK gRPC status: code and message.
    Failed(u32, String),
}

/// Reads the health status, or the gRPC error, out of a response.
fn read_response(
    http_status: u16,
    headers: &http::HeaderMap,
    trailers: Option<&http::HeaderMap>,
    body: &[u8],
) -> RpcOutcome {
    let field = |name: &str| {
        trailers
            .and_then(|t| t.get(name))
            .or_else(|| headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if http_status != 200 {
        let reason = http::StatusCode::from_u16(http_status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        return RpcOutcome::Failed(
            code_of_http_status(http_status),
            format!("unexpected HTTP status code received from server: {http_status} ({reason})"),
        );
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return RpcOutcome::Failed(
            2,
            format!("transport: received unexpected content-type {content_type:?}"),
        );
    }
    let code = match field("grpc-status") {
        Some(code) => code.trim().parse::<u32>().unwrap_or(2),
        None => {
            return RpcOutcome::Failed(
                13,
                "server closed the stream without sending trailers".into(),
            );
        }
    };
    if code != 0 {
        let message = field("grpc-message")
            .map(|m| percent_decode(&m))
            .unwrap_or_default();
        return RpcOutcome::Failed(code, message);
    }
    match unframe(body).and_then(decode_response) {
        Ok(status) => RpcOutcome::Status(status),
        Err(e) => RpcOutcome::Failed(
            13,
            format!("grpc: failed to unmarshal the received message: {e}"),
        ),
    }
}

/// Calls Health/Check for `service` on `endpoint`; `Ok` only for SERVING. The error is the
/// probe's output.
pub(crate) async fn check(
    endpoint: &Endpoint,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let addr = endpoint.authority();
    let connect_timeout = || {
        format!(
            "timeout: failed to connect service {addr:?} within {}: context deadline exceeded",
            go_duration(timeout)
        )
    };
    // grpc-go's blocking dial: retry with back-off until the deadline.
    let tcp = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(connect_timeout());
        }
        match dial(endpoint, left).await {
            Ok(tcp) => break tcp,
            Err(_) => {
                let pause =
                    RECONNECT_BACKOFF.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    };
    let handshake = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp));
    let (mut sender, connection) = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(format!("error: failed to connect service at {addr:?}: {e}")),
        Err(_) => return Err(connect_timeout()),
    };
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let rpc = async {
        let left = deadline.saturating_duration_since(Instant::now());
        let request = http::Request::post(format!("http://{addr}{CHECK_PATH}"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(
                http::header::USER_AGENT,
                format!("kube-probe/{KUBE_VERSION}"),
            )
            .header("grpc-timeout", grpc_timeout(left))
            .body(Full::new(frame(&encode_request(service))))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("rpc error: code = Unavailable desc = connection error: {e}"))?;
        let (parts, body) = response.into_parts();
        let collected = body
            .collect()
            .await
            .map_err(|e| format!("rpc error: code = Internal desc = {e}"))?;
        let trailers = collected.trailers().cloned();
        let bytes = collected.to_bytes();
        Ok::<_, String>(read_response(
            parts.status.as_u16(),
            &parts.headers,
            trailers.as_ref(),
            &bytes,
        ))
    };
    let outcome = tokio::time::timeout_at(deadline, rpc).await;
    driver.abort();
    match outcome {
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {}",
            go_duration(timeout)
        )),
        Ok(Err(e)) => Err(format!("error: health rpc probe failed: {e}")),
        Ok(Ok(RpcOutcome::Status(1))) => Ok(()),
        Ok(Ok(RpcOutcome::Status(status))) => Err(format!(
            "service unhealthy (responded with {:?})",
            serving_status_name(status)
        )),
        Ok(Ok(RpcOutcome::Failed(12, message))) => Err(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
        )),
        Ok(Ok(RpcOutcome::Failed(4, _))) => Err(format!(
            "timeout: health rpc did not complete within {}",
            go_duration(timeout)
        )),
        Ok(Ok(RpcOutcome::Failed(code, message))) => Err(format!(
            "error: health rpc probe failed: rpc error: code = {} desc = {message}",
            code_name(code)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use http_body_util::StreamBody;
    use hyper::body::{Frame, Incoming};

    #[test]
    fn requests_encode_the_service_field() {
        assert_eq!(encode_request("").as_ref(), b"");
        assert_eq!(encode_request("db").as_ref(), b"\x0a\x02db");
        let long = "s".repeat(200);
        let encoded = encode_request(&long);
        assert_eq!(&encoded[..3], b"\x0a\xc8\x01", "a two-byte length varint");
        assert_eq!(encoded.len(), 203);
        assert_eq!(
            frame(b"\x0a\x02db").as_ref(),
            b"\x00\x00\x00\x00\x04\x0a\x02db"
        );
    }

    #[test]
    fn responses_decode_the_status_and_skip_unknown_fields() {
        assert_eq!(decode_response(b""), Ok(0));
        assert_eq!(decode_response(b"\x08\x01"), Ok(1));
        assert_eq!(decode_response(b"\x08\x02"), Ok(2));
        // Unknown fields of every wire type before the status.
        let mut message = vec![0x10, 0x96, 0x01, 0x1a, 0x03, b'a', b'b', b'c'];
        message.extend_from_slice(&[0x21, 1, 2, 3, 4, 5, 6, 7, 8, 0x2d, 1, 2, 3, 4, 0x08, 0x03]);
        assert_eq!(decode_response(&message), Ok(3));
        assert_eq!(decode_response(b"\x08"), Err(DecodeError::Truncated));
        assert_eq!(decode_response(b"\x1a\x05ab"), Err(DecodeError::Truncated));
        assert_eq!(decode_response(b"\x0b"), Err(DecodeError::WireType(3)));
        assert_eq!(
            decode_response(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ]),
            Err(DecodeError::Varint)
        );
        assert_eq!(
            unframe(b"\x00\x00\x00\x00\x02\x08\x01"),
            Ok(&b"\x08\x01"[..])
        );
        assert_eq!(
            unframe(b"\x01\x00\x00\x00\x00"),
            Err(DecodeError::Compressed)
        );
        assert_eq!(
            unframe(b"\x00\x00\x00\x00\x05\x08"),
            Err(DecodeError::Truncated)
        );
        assert_eq!(unframe(b"\x00\x00"), Err(DecodeError::Truncated));
        assert_eq!(serving_status_name(2), "NOT_SERVING");
        assert_eq!(
            percent_decode("unknown%20service%3A x"),
            "unknown service: x"
        );
    }

    #[test]
    fn responses_map_grpc_and_http_errors() {
        let grpc = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, http::HeaderValue::from_static(v));
            }
            h
        };
        let headers = grpc(&[("content-type", "application/grpc")]);
        let ok = grpc(&[("grpc-status", "0")]);
        assert_eq!(
            read_response(200, &headers, Some(&ok), b"\x00\x00\x00\x00\x02\x08\x01"),
            RpcOutcome::Status(1)
        );
        let trailers_only = grpc(&[
            ("content-type", "application/grpc"),
            ("grpc-status", "12"),
            ("grpc-message", "unknown%20service"),
        ]);
        assert_eq!(
            read_response(200, &trailers_only, None, b""),
            RpcOutcome::Failed(12, "unknown service".into())
        );
        assert!(
            matches!(read_response(404, &headers, None, b""), RpcOutcome::Failed(12, m) if m.contains("404 (Not Found)"))
        );
        assert!(matches!(
            read_response(200, &grpc(&[("content-type", "text/html")]), None, b""),
            RpcOutcome::Failed(2, _)
        ));
    }

    /// A tiny Health server: answers every Check with `status`, recording the requested service.
    async fn health_server(status: u8) -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        record.lock().expect("lock").push(body.to_vec());
                        let mut trailers = http::HeaderMap::new();
                        let frames: Vec<Result<Frame<Bytes>, Infallible>> = if path == CHECK_PATH {
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            vec![
                                Ok(Frame::data(frame(&[0x08, status]))),
                                Ok(Frame::trailers(trailers)),
                            ]
                        } else {
                            trailers.insert("grpc-status", http::HeaderValue::from_static("12"));
                            vec![Ok(Frame::trailers(trailers))]
                        };
                        let response = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(StreamBody::new(futures::stream::iter(frames)))
                            .expect("response");
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, seen)
    }

    fn endpoint(addr: std::net::SocketAddr) -> Endpoint {
        Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            netns: None,
        }
    }

    #[tokio::test]
    async fn check_succeeds_only_when_serving() {
        let timeout = Duration::from_secs(2);
        let (addr, seen) = health_server(1).await;
        assert_eq!(check(&endpoint(addr), "db", timeout).await, Ok(()));
        assert_eq!(seen.lock().expect("lock")[0], frame(b"\x0a\x02db").to_vec());
        let (addr, _) = health_server(2).await;
        assert_eq!(
            check(&endpoint(addr), "", timeout).await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
    }

    #[tokio::test]
    async fn check_times_out_connecting_to_nothing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let began = std::time::Instant::now();
        let err = check(&endpoint(addr), "", Duration::from_millis(300))
            .await
            .expect_err("refused");
        assert!(
            began.elapsed() >= Duration::from_millis(250),
            "waits like a blocking dial"
        );
        assert_eq!(
            err,
            format!(
                "timeout: failed to connect service \"{addr}\" within 300ms: context deadline exceeded"
            )
        );
    }
}
