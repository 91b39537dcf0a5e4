//! `GET /exec/{namespace}/{pod}/{container}?command=…&stdin&stdout&stderr&tty`: runs a command
//! in a running container over a WebSocket, the protocol `kubectl exec` speaks since 1.30
//! (`k8s.io/apimachinery/pkg/util/remotecommand`, `v5.channel.k8s.io` and `v4.channel.k8s.io`).
//!
//! Every binary message starts with its channel: 0 stdin (client → server), 1 stdout, 2 stderr,
//! 3 the final `metav1.Status` (server → client), 4 terminal resize (client → server), and in
//! v5 only 255 "close": `[255, 0]` half-closes stdin, the only way a v5 client can signal EOF
//! without closing the connection. v4 clients end stdin by closing the connection.
//!
//! The process is started by the pod's shim with pipes or, with `tty`, on a terminal the
//! container opens (so shells get job control and `tty` names it): then there is one output,
//! sent on the stdout channel, and resize messages (`{"Width":80,"Height":24}`) set the
//! terminal's window size.
//! SPDY (the pre-1.30 protocol kubectl falls back to) is not served: the request is refused
//! with a message saying so.

use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use runtime::container::{ContainerState, ShimClient};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{ServerError, ServerState, find_pod, shim_container};

/// The subprotocols served, preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5's close signal: `[255, channel]` says the client will send no more on `channel`.
const CLOSE: u8 = 255;

/// `PodExecOptions` from the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ExecOptions {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl ExecOptions {
    fn parse(query: Option<&str>) -> Result<ExecOptions, ServerError> {
        let mut opts = ExecOptions::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let on = !(value == "0"
                || value.eq_ignore_ascii_case("f")
                || value.eq_ignore_ascii_case("false"));
            match key.as_ref() {
                "command" => opts.command.push(value.into_owned()),
                "stdin" | "input" => opts.stdin = on,
                "stdout" | "output" => opts.stdout = on,
                "stderr" | "error" => opts.stderr = on,
                "tty" => opts.tty = on,
                _ => {}
            }
        }
        // The same checks and words as upstream's `ValidatePodExecOptions`.
        if opts.command.is_empty() {
            return Err(ServerError::BadExecRequest(
                "you must specify at least one command for the container".into(),
            ));
        }
        if !(opts.stdin || opts.stdout || opts.stderr) {
            return Err(ServerError::BadExecRequest(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        Ok(opts)
    }
}

pub(super) async fn exec(
    State(state): State<ServerState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    start(
        state,
        &namespace,
        &pod,
        None,
        &container,
        query.as_deref(),
        ws,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// Upstream's form with the pod UID, which pins the exact pod instance.
pub(super) async fn exec_with_uid(
    State(state): State<ServerState>,
    UrlPath((namespace, pod, uid, container)): UrlPath<(String, String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    start(
        state,
        &namespace,
        &pod,
        Some(&uid),
        &container,
        query.as_deref(),
        ws,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// Checks the request and the container before upgrading, so failures are plain HTTP errors
/// the API server can relay; from the upgrade on, failures travel on the status channel.
async fn start(
    state: ServerState,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
    container: &str,
    query: Option<&str>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ServerError> {
    let opts = ExecOptions::parse(query)?;
    let Ok(ws) = ws else {
        return Err(ServerError::BadExecRequest(format!(
            "exec needs a WebSocket upgrade with one of the subprotocols {PROTOCOLS:?}; SPDY is not supported by this node"
        )));
    };
    let ws = ws.protocols(PROTOCOLS);
    let Some(protocol) = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .map(str::to_string)
    else {
        return Err(ServerError::BadExecRequest(format!(
            "none of the offered WebSocket subprotocols is supported: use one of {PROTOCOLS:?}"
        )));
    };
    let pod = find_pod(&state.paths, namespace, name, uid)?;
    let not_running = || ServerError::ContainerNotRunning {
        pod: name.to_string(),
        container: container.to_string(),
    };
    let target = shim_container(&state.paths, &pod, container)
        .await?
        .ok_or_else(not_running)?;
    if target.state != ContainerState::Running {
        return Err(not_running());
    }
    let session = Session {
        socket: state.paths.shim_socket(&pod.uid),
        container_id: target.id,
        opts,
        v5: protocol == PROTOCOLS[0],
        shutdown: state.shutdown.clone(),
    };
    Ok(ws.on_upgrade(move |socket| session.run(socket)))
}

/// One exec session after the upgrade.
struct Session {
    socket: std::path::PathBuf,
    container_id: String,
    opts: ExecOptions,
    v5: bool,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Session {
    async fn run(self, socket: WebSocket) {
        let (mut sink, mut incoming) = socket.split();
        let process = async {
            let mut shim = ShimClient::connect(&self.socket).await?;
            let process = shim
                .exec_with(
                    &self.container_id,
                    self.opts.command.clone(),
                    Vec::new(),
                    None,
                    self.opts.tty,
                )
                .await?;
            // Waits hold their connection until the process exits: use a second one.
            let waiter = ShimClient::connect(&self.socket).await?;
            Ok::<_, runtime::container::ClientError>((process, waiter))
        };
        let (process, mut waiter) = match process.await {
            Ok(started) => started,
            Err(e) => {
                let status = internal_error(&format!("error executing command in container: {e}"));
                let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
                let _ = sink.send(normal_close()).await;
                return;
            }
        };
        let pid = process.pid;
        let terminal = process.terminal;
        // The shim reaps the process whatever happens to this connection: the wait runs on.
        let exit = tokio::spawn(async move { waiter.wait_exec(pid).await });

        let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
        let stdout_channel = self.opts.stdout.then_some(STDOUT);
        let stderr_channel = match (self.opts.tty, self.opts.stderr) {
            (true, _) => stdout_channel,
            (false, true) => Some(STDERR),
            (false, false) => None,
        };
        // The pumps end at the process's EOF; if the client goes first they drain on their own.
        tokio::spawn(async move {
            tokio::join!(
                pump(process.stdout, stdout_channel, out_tx.clone()),
                pump(process.stderr, stderr_channel, out_tx),
            );
        });

        // Client → process. Without `stdin` the process gets EOF at once.
        let mut stdin = self.opts.stdin.then_some(process.stdin);
        let v5 = self.v5;
        let mut client_gone = false;
        loop {
            tokio::select! {
                msg = out_rx.recv() => {
                    // None: both pumps are done, all output is sent.
                    let Some(msg) = msg else { break };
                    if sink.send(msg).await.is_err() {
                        client_gone = true;
                        break;
                    }
                }
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Binary(data))) => match (data.first().copied(), data.get(1..)) {
                        (Some(STDIN), Some(bytes)) => {
                            if let Some(w) = stdin.as_mut()
                                && w.write_all(bytes).await.is_err()
                            {
                                stdin = None;
                            }
                        }
                        (Some(CLOSE), Some([STDIN])) if v5 => stdin = None,
                        (Some(RESIZE), Some(size)) => {
                            if let (Some(t), Some((columns, rows))) = (terminal.as_ref(), window_size(size)) {
                                let _ = t.resize(columns, rows);
                            }
                        }
                        _ => {}
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        client_gone = true;
                        break;
                    }
                    Some(Ok(_)) => {}
                },
                _ = self.shutdown.cancelled() => return,
            }
        }
        drop(stdin);
        if client_gone {
            return;
        }
        let status = match exit.await {
            Ok(Ok(0)) => json!({"metadata": {}, "status": "Success"}),
            Ok(Ok(code)) => non_zero_exit(&self.opts.command, code),
            Ok(Err(e)) => internal_error(&format!("error executing command in container: {e}")),
            Err(e) => internal_error(&format!("error executing command in container: {e}")),
        };
        let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
        let _ = sink.send(normal_close()).await;
    }
}

/// A close frame with code 1000. client-go's WebSocket executor treats any other close —
/// including one with no code (1005) — as an error on every stream, even after the status
/// arrived, and kubectl then fails with "error reading from error stream".
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() }))
}

/// Copies one output pipe to its channel (or drains it, so the process never blocks on a
/// stream nobody asked for).
async fn pump(
    mut pipe: runtime::container::client::ExecOutput,
    channel: Option<u8>,
    tx: mpsc::Sender<Message>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(channel) = channel
                    && tx.send(frame(channel, &buf[..n])).await.is_err()
                {
                    // The session is over; keep draining so the process can finish.
                    continue;
                }
            }
        }
    }
}

/// A resize message's `{"Width":…,"Height":…}` (`remotecommand.TerminalSize`).
fn window_size(json: &[u8]) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let width = u16::try_from(v.get("Width")?.as_u64()?).ok()?;
    let height = u16::try_from(v.get("Height")?.as_u64()?).ok()?;
    Some((width, height))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(channel);
    b.put_slice(data);
    Message::Binary(Bytes::from(b))
}

/// The status upstream's kubelet sends for a non-zero exit: kubectl exits with the code in the
/// `ExitCode` cause.
fn non_zero_exit(command: &[String], code: i32) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// `apierrors.NewInternalError` as a status.
fn internal_error(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exec_options() {
        let o = ExecOptions::parse(Some(
            "command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&stderr=true",
        ))
        .expect("parse");
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        let err = ExecOptions::parse(Some("stdout=true")).expect_err("no command");
        assert_eq!(
            err.to_string(),
            "you must specify at least one command for the container"
        );
        let err = ExecOptions::parse(Some("command=ls")).expect_err("no stream");
        assert_eq!(
            err.to_string(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(
            ExecOptions::parse(Some("command=ls&stdout=true&stderr=true&tty=true"))
                .expect("tty")
                .tty
        );
    }

    #[test]
    fn resize_messages_parse() {
        assert_eq!(window_size(br#"{"Width":120,"Height":40}"#), Some((120, 40)));
        assert_eq!(window_size(br#"{"Width":-1,"Height":40}"#), None);
        assert_eq!(window_size(b"junk"), None);
    }

    #[test]
    fn statuses_match_upstream() {
        let s = non_zero_exit(&["sh".into()], 3);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(
            frame(3, b"x"),
            Message::Binary(Bytes::from_static(b"\x03x"))
        );
    }
}
