//! Container lifecycle hooks (upstream `pkg/kubelet/lifecycle`): `postStart` runs right after
//! the container starts and `preStop` before it is signalled to stop, each with the `exec`,
//! `httpGet` or `sleep` handler. Like the kubelet, neither has a timeout of its own: postStart
//! holds the pod's sync until it returns, and preStop is bounded by the grace period by its
//! caller (`kill`).
//!
//! A failed hook yields upstream's message, which becomes the FailedPostStartHook or
//! FailedPreStopHook Event. An `httpGet` hook fails only when no response comes back; its
//! status code is not checked (upstream discards the response).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, ObjectReference};

use super::events::{self, PodEvents};
use super::handler::{self, ExecError, HttpRequest, Scheme, Target};

/// What a hook needs to know about its container.
#[derive(Clone)]
pub(crate) struct HookContext {
    pub container: Container,
    pub runtime_id: String,
    pub target: Target,
    /// `name_namespace(uid)`, for messages.
    pub pod_label: String,
    pub pod_reference: ObjectReference,
    pub events: PodEvents,
}

/// Runs one hook to completion. `Err` carries the Event message.
pub(crate) async fn run(handler: &LifecycleHandler, ctx: &HookContext) -> Result<(), String> {
    let name = &ctx.container.name;
    let pod = &ctx.pod_label;
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        // Go prints the command slice as `[sh -c echo hi]`.
        let shown = format!("[{}]", command.join(" "));
        let failed = |error: String, output: &str| {
            format!(
                "Exec lifecycle hook ({shown}) for Container {name:?} in Pod {pod:?} failed - error: {error}, message: {output:?}"
            )
        };
        return match handler::exec(&ctx.target.shim_socket, &ctx.runtime_id, &command, None).await {
            Ok(out) if out.exit_code == 0 => Ok(()),
            Ok(out) => Err(failed(
                format!(
                    "command '{}' exited with {}: {}",
                    command.join(" "),
                    out.exit_code,
                    out.stderr
                ),
                &out.output,
            )),
            Err(e @ ExecError::TimedOut { .. }) | Err(e @ ExecError::Runtime(_)) => {
                Err(failed(e.to_string(), ""))
            }
        };
    }
    if let Some(get) = &handler.http_get {
        let path = get.path.clone().unwrap_or_default();
        let failed = |error: String| {
            format!(
                "HTTP lifecycle hook ({path}) for Container {name:?} in Pod {pod:?} failed - error: {error}"
            )
        };
        let request =
            HttpRequest::new(get, &ctx.container, &ctx.target, "kube-lifecycle").map_err(failed)?;
        return match handler::http_get(&request, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.plain_http_answer && request.scheme == Scheme::Https => {
                // Upstream retries an HTTPS hook that got a plain HTTP answer over HTTP and
                // reports the fallback (KEP-4427).
                let mut plain = request.clone();
                plain.scheme = Scheme::Http;
                plain
                    .headers
                    .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
                match handler::http_get(&plain, None).await {
                    Ok(_) => {
                        ctx.events.warning(
                            ctx.pod_reference.clone(),
                            events::LIFECYCLE_HTTP_FALLBACK,
                            format!(
                                "request to HTTPS lifecycle hook {} got HTTP response, retry with HTTP succeeded",
                                request.endpoint.authority()
                            ),
                        );
                        Ok(())
                    }
                    Err(_) => Err(failed(e.to_string())),
                }
            }
            Err(e) => Err(failed(e.to_string())),
        };
    }
    if let Some(sleep) = &handler.sleep {
        // Cancellation (the container stopping first) drops this future, as upstream's
        // context ends the sleep.
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return Ok(());
    }
    Err("Cannot run handler: invalid handler: only exec, httpGet and sleep are supported in lifecycle hooks".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::IpAddr;
    use std::path::PathBuf;

    fn context() -> HookContext {
        HookContext {
            container: serde_json::from_value(json!({"name": "main"})).expect("container"),
            runtime_id: "u-0-main".into(),
            target: Target {
                pod_ip: Some(IpAddr::from([127, 0, 0, 1])),
                netns: None,
                shim_socket: PathBuf::from("/nonexistent/shim.sock"),
            },
            pod_label: "web_default(u)".into(),
            pod_reference: ObjectReference::default(),
            events: PodEvents::new(controllers::events::EventRecorder::new(
                kube::Client::try_from(kube::Config::new(
                    "http://127.0.0.1:1".parse().expect("url"),
                ))
                .expect("client"),
                "kubelet",
                "n",
            )),
        }
    }

    fn handler(value: serde_json::Value) -> LifecycleHandler {
        serde_json::from_value(value).expect("handler")
    }

    #[tokio::test]
    async fn failures_are_worded_like_upstream() {
        let ctx = context();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let err = run(
            &handler(json!({"httpGet": {"path": "/stop", "port": port}})),
            &ctx,
        )
        .await
        .expect_err("nothing listens");
        assert_eq!(
            err,
            format!(
                "HTTP lifecycle hook (/stop) for Container \"main\" in Pod \"web_default(u)\" failed - error: Get \"http://127.0.0.1:{port}/stop\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
        let err = run(
            &handler(json!({"exec": {"command": ["sh", "-c", "exit 1"]}})),
            &ctx,
        )
        .await
        .expect_err("no shim");
        assert!(
            err.starts_with("Exec lifecycle hook ([sh -c exit 1]) for Container \"main\" in Pod \"web_default(u)\" failed - error: "),
            "{err}"
        );
        assert!(
            run(&handler(json!({"tcpSocket": {"port": 80}})), &ctx)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn sleep_hooks_sleep() {
        let began = tokio::time::Instant::now();
        assert_eq!(
            run(&handler(json!({"sleep": {"seconds": 1}})), &context()).await,
            Ok(())
        );
        assert!(began.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn http_hooks_ignore_the_status_code() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        assert_eq!(
            run(
                &handler(json!({"httpGet": {"path": "/quit", "port": port}})),
                &context()
            )
            .await,
            Ok(())
        );
        let request = server.join().expect("server");
        assert!(request.starts_with("GET /quit HTTP/1.1\r\n"), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("user-agent: kube-lifecycle/1.33"),
            "{request}"
        );
    }
}
