//! The kubelet's Events, lifecycle hooks, gRPC and HTTPS probes and the image's STOPSIGNAL,
//! against an in-process API server, as root: real containers from busybox images imported at
//! test time, through the shim (`target/debug/skiff shim`; `cargo build -p skiff`). Every test
//! owns a temp dir, a cgroup parent `skiff-test-<pid>-<n>` and network namespaces
//! `skiff-test-<pid>-<n>-<pod uid>`; a guard removes all of them — processes, mounts, cgroups,
//! namespaces — even when the test fails. Test servers for probes and hooks listen inside the
//! pod's own namespace, never in the host's.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, Ordering};
use std::time::Duration;

use agent::network::LoopbackSandbox;
use agent::node::{AgentConfig, run};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use runtime::container::cgroup::CgroupLayout;
use runtime::image::store::digest_of;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "skiff.test/busybox:1.0";
/// The same busybox with `STOPSIGNAL SIGQUIT` in its config.
const QUIT_IMAGE: &str = "skiff.test/busybox-quit:1.0";
static NEXT: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn shim_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let debug = exe.parent().and_then(Path::parent).expect("target dir");
    debug.join("skiff")
}

/// An in-process API server on a memory store and a kube client for it.
async fn start_api(shutdown: CancellationToken) -> kube::Client {
    let store: Arc<dyn store::Store> = Arc::new(store::memory::MemoryStore::new());
    let config = apiserver::ApiServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        watch_cache_events: 10_000,
    };
    let server = apiserver::ApiServer::bind(config, store, shutdown)
        .await
        .expect("bind the API server");
    let url = format!("http://{}", server.local_addr().expect("local addr"));
    tokio::spawn(server.serve());
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for _ in 0..200 {
        if namespaces
            .get_opt("kube-node-lease")
            .await
            .ok()
            .flatten()
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
}

/// A one-layer busybox image named `name` as an OCI layout in `dir` (the layer tarred by the
/// system `tar`), with `stop_signal` as its config's StopSignal.
fn write_image_layout(dir: &Path, name: &str, stop_signal: Option<&str>) -> PathBuf {
    let dir = dir.join(name.replace(['/', ':'], "_"));
    let dir = dir.as_path();
    let rootfs = dir.join("image-rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("busybox-static provides /bin/busybox");
    for applet in [
        "sh", "echo", "sleep", "cat", "true", "hostname", "rm", "touch", "nc", "printf", "test",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .expect("passwd");
    let layer_path = dir.join("layer.tar");
    let status = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer_path)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let layer = std::fs::read(&layer_path).expect("layer");
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "StopSignal": stop_signal},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(&layer), "size": layer.len()}],
    }))
    .expect("manifest");
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("blobs");
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    for blob in [&layer, &config, &manifest] {
        let digest = digest_of(blob);
        std::fs::write(
            layout.join("blobs/sha256").join(&digest["sha256:".len()..]),
            blob,
        )
        .expect("blob");
    }
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(&manifest), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name}}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index"),
    )
    .expect("index.json");
    layout
}

/// One node under test. Dropping it removes everything the agent and its pods made.
struct TestNode {
    dir: tempfile::TempDir,
    cgroup_root: String,
    netns_prefix: String,
    config: AgentConfig,
    client: kube::Client,
    api_shutdown: CancellationToken,
    agent: Option<(CancellationToken, JoinHandle<()>)>,
}

impl TestNode {
    async fn new(backoff_base: Duration) -> TestNode {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let cgroup_root = format!("skiff-test-{}-{n}", std::process::id());
        let netns_prefix = format!("{cgroup_root}-");
        let dir = tempfile::tempdir().expect("tempdir");
        let api_shutdown = CancellationToken::new();
        let client = start_api(api_shutdown.clone()).await;
        let mut config = AgentConfig::new(
            &format!("node-{n}"),
            dir.path(),
            &shim_binary(),
            "127.0.0.1".parse().expect("ip"),
        );
        config.log_root = dir.path().join("logs");
        config.lease_renew = Duration::from_millis(300);
        config.backoff_base = backoff_base;
        config.cgroup_root = cgroup_root.clone();
        config.pod_network = Arc::new(LoopbackSandbox::with_prefix(&netns_prefix));
        let store = runtime::image::Store::open(config.paths().images()).expect("image store");
        for (name, signal) in [(IMAGE, None), (QUIT_IMAGE, Some("SIGQUIT"))] {
            runtime::image::import::import(&store, &write_image_layout(dir.path(), name, signal))
                .expect("import the test image");
        }
        TestNode {
            dir,
            cgroup_root,
            netns_prefix,
            config,
            client,
            api_shutdown,
            agent: None,
        }
    }

    fn start(&mut self) {
        let token = CancellationToken::new();
        let (config, client, t) = (self.config.clone(), self.client.clone(), token.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = run(config, client, t).await {
                panic!("agent failed: {e:?}");
            }
        });
        self.agent = Some((token, task));
    }

    async fn stop(&mut self) {
        if let Some((token, task)) = self.agent.take() {
            token.cancel();
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("agent stops")
                .expect("agent task");
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create_pod(&self, name: &str, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["nodeName"] = json!(self.config.node_name);
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    async fn wait_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pod = self.pods().get(name).await.expect("get pod");
            if check(&pod) {
                return pod;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("pod {name} never became {what}: {:#?}", pod.status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the pod object is gone and the agent's teardown of it has finished (its
    /// directory is the last thing removed before the object is deleted; the object may go
    /// earlier when the API server finalizes it on a status write).
    async fn wait_pod_removed(&self, name: &str, uid: &str) {
        for _ in 0..300 {
            let object_gone = self.pods().get_opt(name).await.expect("get pod").is_none();
            if object_gone && !self.config.paths().pod_dir(uid).exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("pod {name} was not removed from the node");
    }

    fn pod_cgroup_exists(&self, uid: &str) -> bool {
        CgroupLayout::detect().exists(&format!("/{}/pod{uid}", self.cgroup_root))
    }

    fn mounts_under_dir(&self) -> Vec<String> {
        let prefix = self.dir.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }

    fn netns_left(&self) -> Vec<String> {
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&self.netns_prefix))
            .collect()
    }

    /// Container init pids and shim pids recorded in the pods' state files.
    fn recorded_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir(self.config.paths().root.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(state) = runtime::container::read_state_file(&entry.path()) {
                pids.push(state.shim_pid);
                pids.extend(state.containers.iter().filter_map(|c| c.pid));
            }
        }
        pids
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some((token, task)) = self.agent.take() {
            token.cancel();
            task.abort();
        }
        self.api_shutdown.cancel();
        // Only processes this test's shims started (recorded by pid), never by name.
        for pid in self.recorded_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut mounts = self.mounts_under_dir();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
        for _ in 0..50 {
            if CgroupLayout::detect()
                .remove(&format!("/{}", self.cgroup_root))
                .is_ok()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for name in self.netns_left() {
            let _ = net::netns::delete(&name);
        }
    }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        assert!(
            shim_binary().exists(),
            "build the shim first: cargo build -p skiff"
        );
    };
}

fn container_named<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

fn ready_condition(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// The Events about the pod with `uid`.
async fn events_of(node: &TestNode, uid: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(node.client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
        .collect()
}

/// Waits for an Event about pod `uid` with `reason` that `check` accepts.
async fn wait_event(
    node: &TestNode,
    uid: &str,
    reason: &str,
    timeout: Duration,
    check: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let events = events_of(node, uid).await;
        if let Some(e) = events
            .iter()
            .find(|e| e.reason.as_deref() == Some(reason) && check(e))
        {
            return e.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<String> = events
                .iter()
                .map(|e| format!("{:?} {:?} x{:?}", e.reason, e.message, e.count))
                .collect();
            panic!("no {reason} event for pod {uid}; events: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn message(e: &Event) -> &str {
    e.message.as_deref().unwrap_or("")
}

/// Runs `args` in a pod's container through its shim (what `kubectl exec` does).
async fn exec_in(node: &TestNode, uid: &str, container_id: &str, args: &[&str]) -> i32 {
    let socket = node.config.paths().shim_socket(uid);
    let mut shim = runtime::container::ShimClient::connect(&socket)
        .await
        .expect("shim");
    let id = container_id.trim_start_matches("skiff://");
    let process = shim
        .exec(
            id,
            args.iter().map(|a| a.to_string()).collect(),
            vec!["PATH=/bin".into()],
            None,
        )
        .await
        .expect("exec");
    shim.wait_exec(process.pid).await.expect("wait exec")
}

async fn delete_pod(node: &TestNode, name: &str, grace: u32) {
    node.pods()
        .delete(
            name,
            &DeleteParams {
                grace_period_seconds: Some(grace),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete");
}

/// A listener on 127.0.0.1:`port` inside the pod's own network namespace, once the agent
/// has made it.
async fn listen_in_pod(node: &TestNode, uid: &str, port: u16) -> tokio::net::TcpListener {
    let path = PathBuf::from("/run/netns").join(format!("{}{uid}", node.netns_prefix));
    for _ in 0..300 {
        if net::netns::is_netns(&path) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listener = net::netns::run_in(&path, move || {
        std::net::TcpListener::bind(("127.0.0.1", port))
    })
    .expect("enter the pod's namespace")
    .expect("bind in the pod's namespace");
    listener.set_nonblocking(true).expect("nonblocking");
    tokio::net::TcpListener::from_std(listener).expect("tokio listener")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_the_story_of_a_start_a_crash_loop_and_a_deletion() {
    require_root!();
    let mut node = TestNode::new(Duration::from_millis(400)).await;
    node.start();
    let web = node
        .create_pod(
            "web",
            json!({"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "1000"]}]}),
        )
        .await;
    let crash = node
        .create_pod(
            "crash",
            json!({"containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c", "exit 1"]}]}),
        )
        .await;
    let uid = web.metadata.uid.clone().expect("uid");
    let crash_uid = crash.metadata.uid.clone().expect("uid");
    let long = Duration::from_secs(30);

    let pulled = wait_event(&node, &uid, "Pulled", long, |_| true).await;
    assert_eq!(
        message(&pulled),
        format!("Container image \"{IMAGE}\" already present on machine")
    );
    assert_eq!(pulled.type_.as_deref(), Some("Normal"));
    let object = &pulled.involved_object;
    assert_eq!(
        (
            object.kind.as_deref(),
            object.name.as_deref(),
            object.field_path.as_deref()
        ),
        (Some("Pod"), Some("web"), Some("spec.containers{main}"))
    );
    assert_eq!(
        pulled.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("kubelet")
    );
    assert_eq!(
        pulled.reporting_instance.as_deref(),
        Some(node.config.node_name.as_str())
    );
    wait_event(&node, &uid, "Created", long, |e| {
        message(e) == "Created container: main"
    })
    .await;
    wait_event(&node, &uid, "Started", long, |e| {
        message(e) == "Started container main"
    })
    .await;

    // The crash loop: one BackOff Event per back-off period, counted on the first.
    let back_off = wait_event(&node, &crash_uid, "BackOff", long, |e| {
        e.count.unwrap_or(0) >= 2
    })
    .await;
    assert_eq!(back_off.type_.as_deref(), Some("Warning"));
    assert_eq!(
        message(&back_off),
        format!("Back-off restarting failed container main in pod crash_default({crash_uid})")
    );
    let back_offs = events_of(&node, &crash_uid)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("BackOff"))
        .count();
    assert_eq!(back_offs, 1, "repeats are aggregated into one Event");
    let pod = node.pods().get("crash").await.expect("crash pod");
    let restarts = container_named(&pod, "main").map_or(0, |c| c.restart_count);
    let count = events_of(&node, &crash_uid)
        .await
        .iter()
        .find(|e| e.reason.as_deref() == Some("BackOff"))
        .and_then(|e| e.count)
        .unwrap_or(0);
    assert!(
        count <= restarts + 1,
        "one BackOff per back-off period, not per sync: {count} events for {restarts} restarts"
    );

    delete_pod(&node, "web", 1).await;
    wait_event(&node, &uid, "Killing", long, |e| {
        message(e) == "Stopping container main"
    })
    .await;
    node.wait_pod_removed("web", &uid).await;
    delete_pod(&node, "crash", 0).await;
    node.wait_pod_removed("crash", &crash_uid).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_start_runs_before_the_container_counts_as_running_and_a_failure_restarts_it() {
    require_root!();
    let mut node = TestNode::new(Duration::from_millis(500)).await;
    node.start();
    // The hook takes two seconds and writes a file the main process waits for and prints.
    let hooked = node
        .create_pod(
            "hooked",
            json!({"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": IMAGE,
                "command": ["sh", "-c", "while [ ! -f /tmp/hooked ]; do sleep 0.1; done; cat /tmp/hooked; sleep 1000"],
                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "sleep 2; echo from-the-hook > /tmp/hooked"]}}}}]}),
        )
        .await;
    let failing = node
        .create_pod(
            "failing",
            json!({"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": IMAGE,
                "command": ["sleep", "1000"],
                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo no luck; exit 3"]}}}}]}),
        )
        .await;
    let uid = hooked.metadata.uid.clone().expect("uid");
    let failing_uid = failing.metadata.uid.clone().expect("uid");

    let running = node
        .wait_pod("hooked", "Running", Duration::from_secs(30), |p| {
            container_named(p, "main")
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some())
        })
        .await;
    // Running only once the hook finished: its file is already there.
    let c = container_named(&running, "main").expect("status");
    let id = c.container_id.clone().expect("container id");
    assert_eq!(
        exec_in(&node, &uid, &id, &["test", "-f", "/tmp/hooked"]).await,
        0
    );
    assert_eq!(c.started, Some(true));
    let log = node
        .config
        .paths()
        .container_log("default", "hooked", &uid, "main", 0);
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("from-the-hook") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains(" stdout F from-the-hook\n"), "log: {text:?}");

    // A failing hook: FailedPostStartHook, the container killed and restarted.
    let long = Duration::from_secs(40);
    let failed = wait_event(&node, &failing_uid, "FailedPostStartHook", long, |_| true).await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(
        message(&failed),
        format!(
            "Exec lifecycle hook ([sh -c echo no luck; exit 3]) for Container \"main\" in Pod \"failing_default({failing_uid})\" failed - error: command 'sh -c echo no luck; exit 3' exited with 3: , message: \"no luck\\n\""
        )
    );
    wait_event(&node, &failing_uid, "Killing", long, |e| {
        message(e) == "FailedPostStartHook"
    })
    .await;
    let pod = node
        .wait_pod("failing", "restarted", long, |p| {
            container_named(p, "main").is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    let c = container_named(&pod, "main").expect("status");
    assert!(
        c.state.as_ref().is_some_and(|s| s.running.is_none()),
        "a container whose postStart fails never counts as running: {c:?}"
    );

    delete_pod(&node, "hooked", 1).await;
    delete_pod(&node, "failing", 1).await;
    node.wait_pod_removed("hooked", &uid).await;
    node.wait_pod_removed("failing", &failing_uid).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_stop_runs_before_the_stop_signal_within_the_grace_period() {
    require_root!();
    let mut node = TestNode::new(Duration::from_secs(1)).await;
    node.start();
    let out = node.dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let volume = json!([{"name": "out", "hostPath": {"path": out.display().to_string(), "type": "Directory"}}]);
    let mounts = json!([{"name": "out", "mountPath": "/out"}]);
    // The shell traps SIGTERM (and SIGQUIT) and logs which signal stopped it.
    let trapping = |file: &str| {
        format!(
            "trap 'echo TERM >> /out/{file}; exit 0' TERM; trap 'echo QUIT >> /out/{file}; exit 0' QUIT; echo started >> /out/{file}; while true; do sleep 0.1; done"
        )
    };
    let ordered = node
        .create_pod(
            "ordered",
            json!({"terminationGracePeriodSeconds": 10, "volumes": volume, "containers": [{"name": "main", "image": IMAGE,
                "command": ["sh", "-c", trapping("ordered")], "volumeMounts": mounts,
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "sleep 1; echo prestop >> /out/ordered"]}}}}]}),
        )
        .await;
    // The image's STOPSIGNAL (SIGQUIT) stops it, not SIGTERM.
    let quit = node
        .create_pod(
            "quit",
            json!({"terminationGracePeriodSeconds": 10, "volumes": volume, "containers": [{"name": "main", "image": QUIT_IMAGE,
                "command": ["sh", "-c", trapping("quit")], "volumeMounts": mounts}]}),
        )
        .await;
    // A preStop longer than the grace period is cut short; the signal still gets two seconds.
    let bounded = node
        .create_pod(
            "bounded",
            json!({"containers": [{"name": "main", "image": IMAGE,
                "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
                "lifecycle": {"preStop": {"exec": {"command": ["sleep", "100"]}}}}]}),
        )
        .await;
    // An httpGet preStop reaches a server in the pod (busybox nc on 8080 in the pod's network).
    let http = node
        .create_pod(
            "http",
            json!({"terminationGracePeriodSeconds": 5, "volumes": volume, "containers": [{"name": "main", "image": IMAGE,
                // stdin stays open a while: busybox nc closes on stdin EOF, maybe before the request is read.
                "command": ["sh", "-c", "(printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n'; sleep 3) | nc -l -p 8080 > /out/request; sleep 1000"],
                "volumeMounts": mounts,
                "lifecycle": {"preStop": {"httpGet": {"path": "/shutdown", "port": 8080, "httpHeaders": [{"name": "X-Reason", "value": "deletion"}]}}}}]}),
        )
        .await;
    let running = |p: &Pod| container_named(p, "main").is_some_and(|c| c.ready);
    for name in ["ordered", "quit", "bounded", "http"] {
        node.wait_pod(name, "Running", Duration::from_secs(30), running)
            .await;
    }
    for file in ["ordered", "quit"] {
        for _ in 0..50 {
            if std::fs::read_to_string(out.join(file)).is_ok_and(|t| t.contains("started")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let began = std::time::Instant::now();
    delete_pod(&node, "ordered", 10).await;
    delete_pod(&node, "quit", 10).await;
    let ordered_uid = ordered.metadata.uid.clone().expect("uid");
    node.wait_pod_removed("ordered", &ordered_uid).await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "the preStop hook ran first: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the trapped SIGTERM ended it early: {took:?}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("ordered")).expect("ordered log"),
        "started\nprestop\nTERM\n"
    );
    let quit_uid = quit.metadata.uid.clone().expect("uid");
    node.wait_pod_removed("quit", &quit_uid).await;
    assert_eq!(
        std::fs::read_to_string(out.join("quit")).expect("quit log"),
        "started\nQUIT\n"
    );

    let began = std::time::Instant::now();
    delete_pod(&node, "bounded", 3).await;
    let bounded_uid = bounded.metadata.uid.clone().expect("uid");
    node.wait_pod_removed("bounded", &bounded_uid).await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(15),
        "3 s of preStop, then the 2 s minimum for SIGTERM before SIGKILL: {took:?}"
    );
    assert!(!node.pod_cgroup_exists(&bounded_uid), "pod cgroup left");

    delete_pod(&node, "http", 5).await;
    let http_uid = http.metadata.uid.clone().expect("uid");
    node.wait_pod_removed("http", &http_uid).await;
    let request = std::fs::read_to_string(out.join("request")).expect("the hook's request");
    assert!(
        request.starts_with("GET /shutdown HTTP/1.1\r\n"),
        "{request:?}"
    );
    let lower = request.to_ascii_lowercase();
    assert!(
        lower.contains("user-agent: kube-lifecycle/1.33\r\n"),
        "{request:?}"
    );
    assert!(lower.contains("x-reason: deletion\r\n"), "{request:?}");
    assert!(
        node.netns_left().is_empty(),
        "netns left: {:?}",
        node.netns_left()
    );
    assert!(
        node.mounts_under_dir().is_empty(),
        "mounts left: {:?}",
        node.mounts_under_dir()
    );
    node.stop().await;
}

/// The gRPC health server in the pod: answers Health/Check with the current status.
async fn serve_grpc_health(listener: tokio::net::TcpListener, status: Arc<AtomicU8>) {
    while let Ok((stream, _)) = listener.accept().await {
        let status = status.clone();
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let status = status.load(Ordering::SeqCst);
            async move {
                let path = req.uri().path().to_string();
                let _ = req.into_body().collect().await;
                let mut trailers = http::HeaderMap::new();
                let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                    if path == "/grpc.health.v1.Health/Check" {
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        // Length-prefixed HealthCheckResponse { status }.
                        let message = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
                        vec![Ok(Frame::data(message)), Ok(Frame::trailers(trailers))]
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
}

/// An HTTPS server in the pod with a self-signed certificate: `/healthz` answers the current
/// status when the probe sent its `X-Probe` header.
async fn serve_https(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    status: Arc<AtomicU16>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    while let Ok((stream, _)) = listener.accept().await {
        let (acceptor, status) = (acceptor.clone(), status.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let code = if req.uri().path() == "/healthz"
                    && req.headers().get("x-probe").is_some_and(|v| v == "yes")
                {
                    status.load(Ordering::SeqCst)
                } else {
                    404
                };
                async move {
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(code)
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .expect("response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// A self-signed certificate made by the openssl CLI, as rustls server config.
fn tls_server_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=probe.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(status.status.success(), "openssl: {status:?}");
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_https_readiness_probes_flip_ready() {
    require_root!();
    let mut node = TestNode::new(Duration::from_secs(1)).await;
    node.start();
    let probe = |handler: serde_json::Value| {
        let mut p = json!({"periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1});
        for (k, v) in handler.as_object().expect("handler") {
            p[k] = v.clone();
        }
        p
    };
    let pod = node
        .create_pod(
            "probed",
            json!({"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "grpc", "image": IMAGE, "command": ["sleep", "1000"],
                 "readinessProbe": probe(json!({"grpc": {"port": 50051, "service": "skiff.test"}}))},
                {"name": "web", "image": IMAGE, "command": ["sleep", "1000"], "ports": [{"name": "https", "containerPort": 8443}],
                 "readinessProbe": probe(json!({"httpGet": {"scheme": "HTTPS", "port": "https", "path": "/healthz",
                     "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}}))}]}),
        )
        .await;
    let uid = pod.metadata.uid.clone().expect("uid");
    let grpc_status = Arc::new(AtomicU8::new(1));
    let https_status = Arc::new(AtomicU16::new(200));
    let grpc_server = tokio::spawn(serve_grpc_health(
        listen_in_pod(&node, &uid, 50051).await,
        grpc_status.clone(),
    ));
    let https_server = tokio::spawn(serve_https(
        listen_in_pod(&node, &uid, 8443).await,
        tls_server_config(node.dir.path()),
        https_status.clone(),
    ));
    let ready =
        |name: &'static str| move |p: &Pod| container_named(p, name).is_some_and(|c| c.ready);
    let not_ready =
        |name: &'static str| move |p: &Pod| container_named(p, name).is_some_and(|c| !c.ready);
    let long = Duration::from_secs(30);
    node.wait_pod("probed", "Ready", long, |p| {
        ready("grpc")(p) && ready("web")(p) && ready_condition(p).as_deref() == Some("True")
    })
    .await;

    grpc_status.store(2, Ordering::SeqCst);
    node.wait_pod("probed", "gRPC not ready", long, not_ready("grpc"))
        .await;
    let unhealthy = wait_event(&node, &uid, "Unhealthy", long, |e| {
        message(e) == "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")"
    })
    .await;
    assert_eq!(
        unhealthy.involved_object.field_path.as_deref(),
        Some("spec.containers{grpc}")
    );
    assert_eq!(
        ready_condition(&node.pods().get("probed").await.expect("pod")).as_deref(),
        Some("False")
    );
    grpc_status.store(1, Ordering::SeqCst);
    node.wait_pod("probed", "gRPC ready again", long, ready("grpc"))
        .await;

    https_status.store(503, Ordering::SeqCst);
    node.wait_pod("probed", "HTTPS not ready", long, not_ready("web"))
        .await;
    wait_event(&node, &uid, "Unhealthy", long, |e| {
        message(e) == "Readiness probe failed: HTTP probe failed with statuscode: 503"
    })
    .await;
    https_status.store(200, Ordering::SeqCst);
    node.wait_pod("probed", "Ready again", long, |p| {
        ready_condition(p).as_deref() == Some("True")
    })
    .await;

    // Without a server the gRPC probe waits out its timeout, as grpc-go's blocking dial does.
    grpc_server.abort();
    let _ = grpc_server.await;
    wait_event(&node, &uid, "Unhealthy", long, |e| {
        message(e)
            == "Readiness probe failed: timeout: failed to connect service \"127.0.0.1:50051\" within 1s: context deadline exceeded"
    })
    .await;
    https_server.abort();
    delete_pod(&node, "probed", 1).await;
    node.wait_pod_removed("probed", &uid).await;
    node.stop().await;
}
