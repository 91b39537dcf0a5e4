//! Container probes (liveness, readiness, startup) with upstream's timing: initialDelaySeconds,
//! periodSeconds (10), timeoutSeconds (1), successThreshold (1), failureThreshold (3). One
//! [`Prober`] task per probe of a running container reports threshold crossings to the pod
//! worker, which marks the container (un)ready or started, or kills it. Every failed attempt
//! is an Unhealthy Event (`Liveness probe failed: <output>`), as the kubelet records it.
//!
//! Handlers (`handler`, shared with lifecycle hooks): `exec` through the shim (its output is
//! the message), `tcpSocket`, `httpGet` (2xx succeeds; a redirect the client did not follow is
//! a success with a ProbeWarning Event; HTTPS without verification) and `grpc` (`grpc`).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ObjectReference, Probe};
use tokio::sync::mpsc;

use super::events::{self, PodEvents};
use super::grpc;
use super::handler::{self, ExecError, HttpRequest, Target, resolve_port};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// As upstream's messages name it (`Liveness probe failed: …`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
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

/// One attempt's result, as upstream's `probe.Result` with its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// Counts as a success, with a ProbeWarning Event.
    Warning(String),
    Failure(String),
    /// The probe could not run (upstream: "errored and resulted in unknown state"); counts as
    /// a failure.
    Error(String),
}

/// Runs one probe attempt.
pub(crate) async fn attempt(
    probe: &Probe,
    container: &Container,
    runtime_id: &str,
    target: &Target,
    timeout: Duration,
) -> Outcome {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match handler::exec(&target.shim_socket, runtime_id, &command, Some(timeout)).await {
            Ok(out) if out.exit_code == 0 => Outcome::Success,
            Ok(out) => Outcome::Failure(out.output),
            Err(e @ ExecError::TimedOut { .. }) => Outcome::Failure(e.to_string()),
            Err(ExecError::Runtime(e)) => Outcome::Error(e),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = match resolve_port(&tcp.port, container) {
            Ok(port) => port,
            Err(e) => return Outcome::Error(e),
        };
        let endpoint = target.endpoint(tcp.host.as_deref(), port);
        return match handler::dial(&endpoint, timeout).await {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failure(e),
        };
    }
    if let Some(get) = &probe.http_get {
        let request = match HttpRequest::new(get, container, target, "kube-probe") {
            Ok(r) => r,
            Err(e) => return Outcome::Error(e),
        };
        return match handler::http_get(&request, Some(timeout)).await {
            Ok(outcome) if outcome.redirect_not_followed => Outcome::Warning(format!(
                "Probe terminated redirects, Response body: {}",
                outcome.response.body
            )),
            Ok(outcome) if (200..400).contains(&outcome.response.status) => Outcome::Success,
            // Upstream keeps this wording exactly, for users' metrics (issue 99425).
            Ok(outcome) => Outcome::Failure(format!(
                "HTTP probe failed with statuscode: {}",
                outcome.response.status
            )),
            Err(e) => Outcome::Failure(e.to_string()),
        };
    }
    if let Some(g) = &probe.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return Outcome::Error(format!("invalid port number: {}", g.port));
        };
        // gRPC probes have no host: always the pod.
        let endpoint = target.endpoint(None, port);
        let service = g.service.clone().unwrap_or_default();
        return match grpc::check(&endpoint, &service, timeout).await {
            Ok(()) => Outcome::Success,
            Err(message) => Outcome::Failure(message),
        };
    }
    Outcome::Error("probe has no handler".into())
}

/// One probe of one running container.
pub(crate) struct Prober {
    pub kind: ProbeKind,
    pub probe: Probe,
    pub container: Container,
    pub runtime_id: String,
    pub target: Target,
    pub results: mpsc::UnboundedSender<ProbeEvent>,
    pub events: PodEvents,
    /// The container as the Events' involved object.
    pub reference: ObjectReference,
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
        let kind = self.kind.as_str();
        loop {
            let outcome =
                attempt(p, &self.container, &self.runtime_id, &self.target, timeout).await;
            let (success, message) = match outcome {
                Outcome::Success => (true, String::new()),
                Outcome::Warning(output) => {
                    self.events.warning(
                        self.reference.clone(),
                        events::PROBE_WARNING,
                        format!("{kind} probe warning: {output}"),
                    );
                    (true, String::new())
                }
                Outcome::Failure(output) => {
                    self.events.warning(
                        self.reference.clone(),
                        events::UNHEALTHY,
                        format!("{kind} probe failed: {output}"),
                    );
                    (false, output)
                }
                Outcome::Error(error) => {
                    self.events.warning(
                        self.reference.clone(),
                        events::UNHEALTHY,
                        format!("{kind} probe errored and resulted in unknown state: {error}"),
                    );
                    (false, error)
                }
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
                if self.results.send(event).is_err() {
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
    use serde_json::json;
    use std::io::{Read, Write};
    use std::net::{IpAddr, TcpListener};
    use std::path::PathBuf;

    fn target() -> Target {
        Target {
            pod_ip: Some(IpAddr::from([127, 0, 0, 1])),
            netns: None,
            shim_socket: PathBuf::from("/nonexistent"),
        }
    }

    fn probe(value: serde_json::Value) -> Probe {
        serde_json::from_value(value).expect("probe")
    }

    #[tokio::test]
    async fn http_and_tcp_probes_follow_upstream_codes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let responses = [
                "204 No Content\r\n",
                "500 Internal Server Error\r\n",
                "302 Found\r\nLocation: http://other.invalid/\r\n",
            ];
            for status in responses {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream
                    .write_all(format!("HTTP/1.1 {status}Content-Length: 2\r\n\r\nhi").as_bytes());
            }
            // One more accept for the tcpSocket probe.
            let _ = listener.accept();
        });
        let c: Container = serde_json::from_value(json!({"name": "c"})).expect("container");
        let timeout = Duration::from_secs(2);
        let http = probe(json!({"httpGet": {"port": port, "path": "/healthz"}}));
        let run = |p: Probe| {
            let c = c.clone();
            async move { attempt(&p, &c, "id", &target(), timeout).await }
        };
        assert_eq!(run(http.clone()).await, Outcome::Success);
        assert_eq!(
            run(http.clone()).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            run(http.clone()).await,
            Outcome::Warning("Probe terminated redirects, Response body: hi".into())
        );
        let tcp = probe(json!({"tcpSocket": {"port": port}}));
        assert_eq!(run(tcp.clone()).await, Outcome::Success);
        server.join().expect("server");
        assert_eq!(
            run(tcp).await,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
        assert!(matches!(run(probe(json!({}))).await, Outcome::Error(_)));
    }

    #[test]
    fn probes_are_listed_startup_first() {
        let c: Container = serde_json::from_value(json!({"name": "c",
            "readinessProbe": {"exec": {"command": ["true"]}},
            "startupProbe": {"grpc": {"port": 9000}}}))
        .expect("container");
        let kinds: Vec<ProbeKind> = probes(&c).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [ProbeKind::Startup, ProbeKind::Readiness]);
        assert_eq!(ProbeKind::Liveness.as_str(), "Liveness");
    }
}
