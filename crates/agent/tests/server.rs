//! The kubelet server on loopback: container logs from CRI files the test writes (newest
//! run, previous, timestamps, tail, since, limit, follow until the run ends), health and
//! metrics, and — as root — exec over `v5.channel.k8s.io`/`v4.channel.k8s.io` into a busybox
//! container run by the real shim (cgroups under `skiff-test-<pid>-…`, removed by a guard).

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::paths::NodePaths;
use bytes::Bytes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use futures::{SinkExt, StreamExt};
use runtime::container::cgroup::CgroupLayout;
use runtime::container::{
    ContainerConfig, ContainerState, SeccompProfile, ShimArgs, ShimClient, default_namespaces,
    read_state_file, runtime_spec,
};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

/// A kubelet server on 127.0.0.1 over a temp node directory; stops when dropped.
struct Kubelet {
    dir: tempfile::TempDir,
    paths: NodePaths,
    addr: String,
    shutdown: CancellationToken,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn kubelet() -> Kubelet {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = NodePaths::new(&dir.path().join("data"), &dir.path().join("logs"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let shutdown = CancellationToken::new();
    tokio::spawn(agent::server::serve(
        listener,
        paths.clone(),
        shutdown.clone(),
    ));
    Kubelet {
        dir,
        paths,
        addr,
        shutdown,
    }
}

impl Kubelet {
    fn write_log(
        &self,
        pod: &str,
        uid: &str,
        container: &str,
        restart: u32,
        lines: &[&str],
    ) -> PathBuf {
        let path = self
            .paths
            .container_log("default", pod, uid, container, restart);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).expect("write log");
        path
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .expect("get");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("body"))
    }
}

fn append(path: &Path, lines: &[&str]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    for l in lines {
        writeln!(f, "{l}").expect("append");
    }
}

fn stamp(offset_secs: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(offset_secs);
    t.to_string()
}

#[tokio::test]
async fn container_logs_read_cri_files_like_the_kubelet() {
    let k = kubelet().await;
    k.write_log(
        "web",
        "u1",
        "app",
        0,
        &[
            "2025-01-01T00:00:00.000000001Z stdout F first run",
            "2025-01-01T00:00:01Z stderr F first run error",
        ],
    );
    let old = "2025-01-01T00:00:02Z stdout F old line";
    let recent = format!("{} stdout P joi", stamp(-5));
    let recent2 = format!("{} stdout F ned", stamp(-5));
    let last = format!("{} stderr F last", stamp(-1));
    k.write_log(
        "web",
        "u1",
        "app",
        1,
        &[old, &recent, &recent2, "not a CRI line", &last],
    );

    assert_eq!(
        k.get("/containerLogs/default/web/app").await,
        (200, "old line\njoined\nlast\n".into())
    );
    assert_eq!(
        k.get("/containerLogs/default/web/app?previous=true").await,
        (200, "first run\nfirst run error\n".into())
    );
    assert_eq!(
        k.get("/containerLogs/default/web/app?previous=true&timestamps=true")
            .await
            .1,
        "2025-01-01T00:00:00.000000001Z first run\n2025-01-01T00:00:01Z first run error\n"
    );
    // tailLines counts the file's lines (the partial chunk and the bad line included).
    assert_eq!(
        k.get("/containerLogs/default/web/app?tailLines=3").await.1,
        "ned\nlast\n"
    );
    assert_eq!(
        k.get("/containerLogs/default/web/app?tailLines=0").await.1,
        ""
    );
    assert_eq!(
        k.get("/containerLogs/default/web/app?sinceSeconds=60")
            .await
            .1,
        "joined\nlast\n"
    );
    assert_eq!(
        k.get("/containerLogs/default/web/app?limitBytes=10")
            .await
            .1,
        "old line\nj"
    );

    let (code, text) = k.get("/containerLogs/default/web/sidecar").await;
    assert_eq!(
        (code, text.as_str()),
        (
            400,
            "container \"sidecar\" in pod \"web\" is waiting to start: ContainerCreating"
        )
    );
    k.write_log("web", "u1", "once", 0, &["2025-01-01T00:00:00Z stdout F x"]);
    let (code, text) = k.get("/containerLogs/default/web/once?previous=true").await;
    assert_eq!(
        (code, text.as_str()),
        (
            400,
            "previous terminated container \"once\" in pod \"web\" not found"
        )
    );
    assert_eq!(k.get("/containerLogs/default/nope/app").await.0, 404);
    let (code, text) = k.get("/containerLogs/default/web/app?tailLines=-2").await;
    assert_eq!(code, 400, "{text}");

    assert_eq!(k.get("/healthz").await, (200, "ok".into()));
    let (code, metrics) = k.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("kubelet_http_requests_total{method=\"GET\",path=\"containerLogs\",server_type=\"readwrite\"} 11"),
        "{metrics}"
    );
}

#[tokio::test]
async fn follow_streams_growth_and_ends_with_the_run() {
    let k = kubelet().await;
    let first = k.write_log(
        "web",
        "u2",
        "app",
        0,
        &["2025-01-01T00:00:00Z stdout F one"],
    );
    let resp = reqwest::get(format!(
        "http://{}/containerLogs/default/web/app?follow=true&timestamps=true",
        k.addr
    ))
    .await
    .expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    assert_eq!(next_chunk(&mut body).await, "2025-01-01T00:00:00Z one\n");
    // A line written in two steps is sent once complete.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&first)
            .expect("open");
        f.write_all(b"2025-01-01T00:00:01Z stdout F tw")
            .expect("write");
        f.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(400)).await;
        f.write_all(b"o\n").expect("write");
    }
    assert_eq!(next_chunk(&mut body).await, "2025-01-01T00:00:01Z two\n");
    // The container restarts: the last lines of run 0 are sent, then the stream ends.
    append(&first, &["2025-01-01T00:00:02Z stderr F three"]);
    k.write_log(
        "web",
        "u2",
        "app",
        1,
        &["2025-01-01T00:00:03Z stdout F next run"],
    );
    let mut rest = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "follow did not end after a newer run appeared"
    );
    assert_eq!(rest, "2025-01-01T00:00:02Z three\n");

    // Following the new run ends when the pod's log directory is removed.
    let resp = reqwest::get(format!(
        "http://{}/containerLogs/default/web/app?follow=1",
        k.addr
    ))
    .await
    .expect("get");
    let mut body = resp.bytes_stream();
    assert_eq!(next_chunk(&mut body).await, "next run\n");
    std::fs::remove_dir_all(k.paths.pod_log_dir("default", "web", "u2")).expect("rm");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while body.next().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "follow did not end after the pod's logs were removed"
    );
}

async fn next_chunk(
    body: &mut (impl futures::Stream<Item = reqwest::Result<Bytes>> + Unpin),
) -> String {
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("in time");
    String::from_utf8(chunk.expect("chunk").expect("ok").to_vec()).expect("utf8")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `target/debug/skiff` (`skiff shim`; built by `cargo test --workspace`).
fn shim_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let debug = exe.parent().and_then(Path::parent).expect("target dir");
    debug.join("skiff")
}

/// A pod with one busybox container run by a real shim; kills everything and removes its
/// cgroups when dropped.
struct ShimPod {
    pod_dir: PathBuf,
    cgroup_parent: String,
}

impl Drop for ShimPod {
    fn drop(&mut self) {
        if let Ok(state) = read_state_file(&self.pod_dir) {
            for c in state
                .containers
                .iter()
                .filter(|c| c.state == ContainerState::Running)
            {
                if let Some(pid) = c.pid {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            // Only the shim this test started (its pid from its own state file).
            let _ = kill(Pid::from_raw(state.shim_pid), Signal::SIGKILL);
        }
        let layout = CgroupLayout::detect();
        for _ in 0..50 {
            if layout.remove(&self.cgroup_parent).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn start_pod(k: &Kubelet, uid: &str, container: &str) -> (ShimPod, ShimClient) {
    let rootfs = k.dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs/bin");
    for d in ["proc", "dev", "sys", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "echo", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    let args = ShimArgs {
        pod_dir: k.paths.pod_dir(uid),
        socket: k.paths.shim_socket(uid),
        state_root: k.paths.container_state(),
        foreground: false,
    };
    let guard = ShimPod {
        pod_dir: args.pod_dir.clone(),
        cgroup_parent: format!("skiff-test-{}-exec", std::process::id()),
    };
    let mut shim = ShimClient::spawn_shim(&shim_binary(), &args)
        .await
        .expect("spawn shim");
    // The id is deliberately unlike the container name: the server finds it by its log path.
    let id = format!("{uid}-{container}-0");
    let config = ContainerConfig {
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec!["sleep 300".into()],
        env: vec!["PATH=/bin".into(), "GREETING=hello".into()],
        rootfs,
        namespaces: default_namespaces(),
        cgroup_path: format!("/{}/{id}", guard.cgroup_parent),
        hostname: Some("web".into()),
        seccomp: SeccompProfile::RuntimeDefault,
        ..ContainerConfig::default()
    };
    let log = k.paths.container_log("default", "web", uid, container, 0);
    let spec = runtime_spec(&config).expect("spec");
    shim.start(&id, &spec, &log).await.expect("start");
    (guard, shim)
}

/// Runs one exec session: sends `input` frames, collects (stdout, stderr, status).
async fn exec(
    k: &Kubelet,
    query: &str,
    protocol: &'static str,
    input: &[&[u8]],
) -> (String, String, Value) {
    let mut request = format!("ws://{}/exec/default/web/app?{query}", k.addr)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static(protocol),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(protocol.as_bytes())
    );
    for frame in input {
        ws.send(Message::Binary(Bytes::copy_from_slice(frame)))
            .await
            .expect("send");
    }
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Value::Null);
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Binary(data) = msg else { continue };
            match data.first() {
                Some(1) => out.extend_from_slice(&data[1..]),
                Some(2) => err.extend_from_slice(&data[1..]),
                Some(3) => status = serde_json::from_slice(&data[1..]).expect("status json"),
                other => panic!("unexpected channel {other:?}"),
            }
        }
    })
    .await;
    assert!(done.is_ok(), "exec session did not end");
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        status,
    )
}

#[tokio::test]
async fn exec_runs_in_the_container_through_the_shim() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let k = kubelet().await;
    let (_guard, _shim) = start_pod(&k, "uid-exec", "app").await;

    // stdin, stdout, stderr and a non-zero exit; [255, 0] ends stdin (v5).
    let (out, err, status) = exec(
        &k,
        "command=sh&command=-c&command=read+x%3B+echo+got+%24x+%24GREETING%3B+echo+oops+%3E%262%3B+exit+3&stdin=true&stdout=true&stderr=true",
        "v5.channel.k8s.io",
        &[b"\x00pi", b"\x00ng\n", b"\xff\x00"],
    )
    .await;
    assert_eq!(out, "got ping hello\n");
    assert_eq!(err, "oops\n");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(
        status["details"]["causes"][0],
        serde_json::json!({"reason": "ExitCode", "message": "3"})
    );

    // Success, without stdin, over v4.
    let (out, err, status) = exec(
        &k,
        "command=echo&command=hi&stdout=true&stderr=true",
        "v4.channel.k8s.io",
        &[],
    )
    .await;
    assert_eq!((out.as_str(), err.as_str()), ("hi\n", ""));
    assert_eq!(
        status,
        serde_json::json!({"metadata": {}, "status": "Success"})
    );

    // tty: a real terminal — one output stream with stderr folded in, and the terminal's
    // newline translation (onlcr), as with upstream.
    let (out, _, status) = exec(
        &k,
        "command=sh&command=-c&command=echo+err+%3E%262&stdout=true&tty=true",
        "v5.channel.k8s.io",
        &[],
    )
    .await;
    assert_eq!(out, "err\r\n");
    assert_eq!(status["status"], "Success");

    // A command that cannot start: a Failure status.
    let (_, _, status) = exec(
        &k,
        "command=%2Fno%2Fsuch&stdout=true",
        "v5.channel.k8s.io",
        &[],
    )
    .await;
    assert_eq!(status["status"], "Failure", "{status}");

    // An unknown container is refused before the upgrade.
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/exec/default/web/nope?command=ls&stdout=true",
            k.addr
        ))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", "v5.channel.k8s.io")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.text().await.expect("text"),
        "container \"nope\" in pod \"web\" is not running"
    );
    // Without a WebSocket upgrade (SPDY), the answer says what is supported.
    let resp = reqwest::Client::new()
        .post(format!(
            "http://{}/exec/default/web/app?command=ls&stdout=true",
            k.addr
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
}
