//! Container probes (liveness, readiness, startup) with upstream's timing: initialDelaySeconds,
//! periodSeconds (10), timeoutSeconds (1), successThreshold (1), failureThreshold (3). One
//! [`Prober`] task per probe of a running container reports threshold crossings to the pod
//! worker, which marks the container (un)ready or started, or kills it.
//!
//! Handlers: `exec` through the shim; `tcpSocket` and `httpGet` (2xx/3xx succeed, as upstream)
//! to the pod IP — or, for a pod whose sandbox has no IP (loopback-only), to 127.0.0.1 inside the
//! pod's network namespace. `grpc` is not supported and reports failure with a message.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use runtime::container::ShimClient;
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

/// A probe's result crossing its threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeEvent {
    pub container: String,
    pub runtime_id: String,
    pub kind: ProbeKind,
    pub success: bool,
    pub message: String,
}

/// Where network probes connect.
#[derive(Clone, Debug)]
pub(crate) struct ProbeTarget {
    pub pod_ip: Option<IpAddr>,
    /// The pod's network namespace, used when it has no IP.
    pub netns: Option<PathBuf>,
    pub shim_socket: PathBuf,
}

/// The probes of `container` that exist, with their kind.
pub(crate) fn probes(container: &Container) -> Vec<(ProbeKind, Probe)> {
    [
        (ProbeKind::Startup, &container.startup_probe),
        (ProbeKind::Liveness, &container.liveness_probe),
        (ProbeKind::Readiness, &container.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(kind, p)| p.clone().map(|p| (kind, p)))
    .collect()
}

fn seconds(value: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(min) as u64)
}

/// Resolves a named or numbered port against the container's ports.
fn port(value: &IntOrString, container: &Container) -> Result<u16, String> {
    match value {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("container has no port named {name:?}")),
    }
}

/// One blocking TCP or HTTP check (run on a blocking thread, possibly inside the pod's netns).
fn network_check(
    addr: SocketAddr,
    http: Option<(String, String, String)>,
    timeout: Duration,
) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let Some((scheme, host, path)) = http else {
        return Ok(());
    };
    if scheme.eq_ignore_ascii_case("HTTPS") {
        return Err("httpGet with scheme HTTPS is not supported by this node yet".into());
    }
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending the probe request: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("reading the probe response: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Runs one probe attempt.
async fn attempt(
    probe: &Probe,
    container: &Container,
    runtime_id: &str,
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        let run = async {
            let mut shim = ShimClient::connect(&target.shim_socket)
                .await
                .map_err(|e| e.to_string())?;
            let process = shim
                .exec(runtime_id, command, Vec::new(), None)
                .await
                .map_err(|e| e.to_string())?;
            drop(process.stdin);
            let code = shim
                .wait_exec(process.pid)
                .await
                .map_err(|e| e.to_string())?;
            if code == 0 {
                Ok(())
            } else {
                Err(format!("command exited with {code}"))
            }
        };
        return tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Err(format!("command timed out after {timeout:?}")));
    }
    let (host, port_value, http) = if let Some(tcp) = &probe.tcp_socket {
        (tcp.host.clone(), tcp.port.clone(), None)
    } else if let Some(get) = &probe.http_get {
        let scheme = get.scheme.clone().unwrap_or_else(|| "HTTP".into());
        let path = get
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        (get.host.clone(), get.port.clone(), Some((scheme, path)))
    } else {
        return Err(
            "probe has no supported handler (grpc probes are not supported by this node yet)"
                .into(),
        );
    };
    let port = port(&port_value, container)?;
    let explicit = host.filter(|h| !h.is_empty());
    let (ip, netns) = match (&explicit, target.pod_ip) {
        (Some(_), _) => (None, None),
        (None, Some(ip)) => (Some(ip), None),
        (None, None) => (Some(IpAddr::from([127, 0, 0, 1])), target.netns.clone()),
    };
    let check = move || -> Result<(), String> {
        let addr = match (ip, &explicit) {
            (Some(ip), _) => SocketAddr::new(ip, port),
            (None, Some(h)) => (h.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("resolving {h}: {e}"))?
                .next()
                .ok_or_else(|| format!("{h} has no address"))?,
            (None, None) => return Err("no address to probe".into()),
        };
        let host_header = explicit.clone().unwrap_or_else(|| addr.ip().to_string());
        network_check(
            addr,
            http.map(|(scheme, path)| (scheme, format!("{host_header}:{port}"), path)),
            timeout,
        )
    };
    let result = tokio::task::spawn_blocking(move || match netns {
        Some(path) => net::netns::run_in(&path, check)
            .unwrap_or_else(|e| Err(format!("entering the pod network: {e}"))),
        None => check(),
    })
    .await;
    result.unwrap_or_else(|e| Err(format!("probe task failed: {e}")))
}

/// One probe of one running container.
pub(crate) struct Prober {
    pub kind: ProbeKind,
    pub probe: Probe,
    pub container: Container,
    pub runtime_id: String,
    pub target: ProbeTarget,
    pub events: mpsc::UnboundedSender<ProbeEvent>,
}

impl Prober {
    /// Probes until the container goes (the worker aborts the task) or, for liveness and
    /// startup, until the result that ends the probe's job has been reported.
    pub async fn run(self) {
        let p = &self.probe;
        let period = seconds(p.period_seconds, 10, 1);
        let timeout = seconds(p.timeout_seconds, 1, 1);
        let success_threshold = p.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = p.failure_threshold.unwrap_or(3).max(1);
        tokio::time::sleep(seconds(p.initial_delay_seconds, 0, 0)).await;
        let (mut successes, mut failures) = (0, 0);
        let mut reported: Option<bool> = None;
        loop {
            let result = attempt(p, &self.container, &self.runtime_id, &self.target, timeout).await;
            let (success, message) = match result {
                Ok(()) => (true, String::new()),
                Err(m) => (false, m),
            };
            if success {
                successes += 1;
                failures = 0;
            } else {
                failures += 1;
                successes = 0;
            }
            let crossed = if success && successes >= success_threshold {
                Some(true)
            } else if !success && failures >= failure_threshold {
                Some(false)
            } else {
                None
            };
            if let Some(state) = crossed.filter(|s| reported != Some(*s)) {
                reported = Some(state);
                let event = ProbeEvent {
                    container: self.container.name.clone(),
                    runtime_id: self.runtime_id.clone(),
                    kind: self.kind,
                    success: state,
                    message,
                };
                if self.events.send(event).is_err() {
                    return;
                }
                // A startup probe's job ends with its first verdict; a failed liveness probe's
                // container is about to be killed.
                if self.kind == ProbeKind::Startup || (self.kind == ProbeKind::Liveness && !state) {
                    return;
                }
            }
            tokio::time::sleep(period).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn http_and_tcp_checks_follow_upstream_codes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            for (i, stream) in listener.incoming().take(3).enumerate() {
                let mut stream = stream.expect("accept");
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let status = if i == 1 {
                    "500 Internal Server Error"
                } else {
                    "204 No Content"
                };
                let _ = stream.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        let http = || Some(("HTTP".to_string(), addr.to_string(), "/healthz".to_string()));
        let timeout = Duration::from_secs(2);
        assert_eq!(network_check(addr, http(), timeout), Ok(()));
        assert_eq!(
            network_check(addr, http(), timeout),
            Err("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(network_check(addr, None, timeout), Ok(()));
        server.join().expect("server");
        assert!(
            network_check(addr, None, timeout).is_err(),
            "nothing listens any more"
        );
    }

    #[test]
    fn named_ports_resolve_against_the_container() {
        let c: Container = serde_json::from_value(
            serde_json::json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .expect("container");
        assert_eq!(port(&IntOrString::String("http".into()), &c), Ok(8080));
        assert_eq!(port(&IntOrString::Int(9090), &c), Ok(9090));
        assert!(port(&IntOrString::String("grpc".into()), &c).is_err());
        assert_eq!(probes(&c).len(), 0);
    }
}
