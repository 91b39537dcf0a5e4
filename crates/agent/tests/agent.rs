//! The node agent against an in-process API server, as root: real containers from a busybox
//! image imported at test time, through the shim (`target/debug/skiff shim`, built by
//! `cargo test --workspace`, or `cargo build -p skiff`). Every test owns a temp dir, a cgroup parent
//! `skiff-test-<pid>-<n>` and network namespaces `skiff-test-<pid>-<n>-<pod uid>`; a guard
//! removes all of them — processes, mounts, cgroups, namespaces — even when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agent::network::LoopbackSandbox;
use agent::node::{AgentConfig, run};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use runtime::container::cgroup::CgroupLayout;
use runtime::image::store::digest_of;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "skiff.test/busybox:1.0";
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

/// A one-layer busybox image as an OCI layout (the layer tarred by the system `tar`).
fn write_image_layout(dir: &Path) -> PathBuf {
    let rootfs = dir.join("image-rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("busybox-static provides /bin/busybox");
    for applet in [
        "sh", "echo", "sleep", "cat", "true", "hostname", "ping", "rm", "touch",
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
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
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
        "annotations": {"io.containerd.image.name": IMAGE}}]});
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
        runtime::image::import::import(&store, &write_image_layout(dir.path()))
            .expect("import the test image");
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

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
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

fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        assert!(
            shim_binary().exists(),
            "build the shim first: cargo build -p skiff-runtime --example shim"
        );
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_ready_and_renews_its_lease() {
    require_root!();
    let mut node = TestNode::new(Duration::from_secs(1)).await;
    node.start();
    let nodes: Api<Node> = Api::all(node.client.clone());
    let name = node.config.node_name.clone();
    let mut registered = None;
    for _ in 0..100 {
        if let Some(n) = nodes.get_opt(&name).await.expect("get node") {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
            if ready
                .is_some_and(|r| r.status == "True" && r.reason.as_deref() == Some("KubeletReady"))
            {
                registered = Some(n);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = registered.expect("the Node registers Ready");
    let status = n.status.expect("status");
    let capacity = status.capacity.expect("capacity");
    for key in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(capacity.contains_key(key), "capacity {key}");
    }
    let info = status.node_info.expect("nodeInfo");
    assert_eq!(
        (info.operating_system.as_str(), info.architecture.as_str()),
        ("linux", "amd64")
    );
    assert!(info.container_runtime_version.starts_with("skiff://"));
    assert!(
        status
            .addresses
            .expect("addresses")
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1")
    );

    let leases: Api<Lease> = Api::namespaced(node.client.clone(), "kube-node-lease");
    let renew_time = |l: &Lease| {
        l.spec
            .as_ref()
            .and_then(|s| s.renew_time.clone())
            .map(|t| t.0)
    };
    let mut first = None;
    for _ in 0..50 {
        first = leases.get_opt(&name).await.expect("get lease");
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("the Lease exists");
    let spec = first.spec.clone().expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(name.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = leases.get(&name).await.expect("lease");
    assert!(
        renew_time(&later) > renew_time(&first),
        "the Lease is renewed"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_survives_agent_restart_and_is_deleted_without_a_trace() {
    require_root!();
    let mut node = TestNode::new(Duration::from_secs(1)).await;
    node.start();
    let created = node
        .create_pod(
            "web",
            json!({"terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": IMAGE,
                "command": ["/bin/sh", "-c", "echo hello; echo $(POD_NAME) in $POD_NS; sleep 1000"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]}]}),
        )
        .await;
    let uid = created.metadata.uid.clone().expect("uid");
    let host = node.create_pod("hostnet", json!({"hostNetwork": true, "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "1000"]}]})).await;
    let running = |p: &Pod| phase(p) == "Running" && container_status(p).is_some_and(|c| c.ready);
    let pod = node
        .wait_pod("web", "Running", Duration::from_secs(30), running)
        .await;
    let status = pod.status.clone().expect("status");
    let c = container_status(&pod).expect("container status");
    assert!(
        c.container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("skiff://")),
        "{c:?}"
    );
    assert!(c.image_id.contains("@sha256:"), "{c:?}");
    assert_eq!(c.restart_count, 0);
    let started_at = c
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.clone())
        .expect("startedAt");
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    let conditions = status.conditions.expect("conditions");
    for kind in ["Initialized", "ContainersReady", "Ready", "PodScheduled"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == kind && c.status == "True"),
            "{kind}: {conditions:?}"
        );
    }
    // The loopback-only sandbox has a namespace of its own but no pod IP yet.
    assert_eq!(
        node.netns_left(),
        vec![format!("{}{uid}", node.netns_prefix)]
    );
    let hostnet = node
        .wait_pod("hostnet", "Running", Duration::from_secs(30), running)
        .await;
    assert_eq!(
        hostnet.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("127.0.0.1")
    );

    let log = node
        .config
        .paths()
        .container_log("default", "web", &uid, "c", 0);
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("in default") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains(" stdout F hello\n"), "CRI log: {text:?}");
    assert!(
        text.contains(" stdout F web in default\n"),
        "CRI log: {text:?}"
    );

    // An agent restart restarts no container: same start time, same process, no restart.
    let pids_before = node.recorded_pids();
    node.stop().await;
    assert!(
        pids_before.iter().all(|p| alive(*p)),
        "containers outlive the agent"
    );
    node.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = node
        .wait_pod("web", "Running", Duration::from_secs(10), running)
        .await;
    let c = container_status(&pod).expect("container status");
    assert_eq!(c.restart_count, 0);
    assert_eq!(
        c.state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone()),
        Some(started_at)
    );
    assert_eq!(node.recorded_pids(), pids_before);

    // Graceful deletion: the shell is pid 1 of its namespace and ignores SIGTERM, so the
    // agent waits out the 2 s grace period, SIGKILLs, tears down and removes the object.
    let began = std::time::Instant::now();
    node.pods()
        .delete(
            "web",
            &DeleteParams {
                grace_period_seconds: Some(2),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete");
    node.wait_pod_removed("web", &uid).await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "deletion took {took:?}"
    );
    let web_pids: Vec<i32> = pids_before.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!node.config.paths().pod_dir(&uid).exists(), "pod dir left");
    assert!(!node.pod_cgroup_exists(&uid), "pod cgroup left");
    assert!(
        node.netns_left().is_empty(),
        "netns left: {:?}",
        node.netns_left()
    );
    let host_uid = host.metadata.uid.clone().expect("uid");
    let mounts = node.mounts_under_dir();
    assert!(
        mounts.iter().all(|m| m.contains(&host_uid)),
        "mounts left: {mounts:?}"
    );
    assert!(
        !node
            .config
            .paths()
            .pod_log_dir("default", "web", &uid)
            .exists(),
        "logs left"
    );
    // The hostnet pod's processes are still alive; the web pod's are all gone.
    let host_pids = node.recorded_pids();
    let web_only: Vec<i32> = web_pids
        .into_iter()
        .filter(|p| !host_pids.contains(p))
        .collect();
    assert!(!web_only.is_empty());
    assert!(
        web_only.iter().all(|p| !alive(*p)),
        "processes left: {web_only:?}"
    );

    node.pods()
        .delete(
            "hostnet",
            &DeleteParams {
                grace_period_seconds: Some(1),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete");
    node.wait_pod_removed("hostnet", &host_uid).await;
    assert!(
        node.mounts_under_dir().is_empty(),
        "mounts left: {:?}",
        node.mounts_under_dir()
    );
    assert!(!node.pod_cgroup_exists(&host_uid));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_never_and_on_failure() {
    require_root!();
    let mut node = TestNode::new(Duration::from_millis(500)).await;
    node.start();
    let fails = node.create_pod("fails", json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", "exit 3"]}]})).await;
    let crashes = node.create_pod("crashes", json!({"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", "echo boom; exit 1"]}]})).await;

    let pod = node
        .wait_pod("fails", "Failed", Duration::from_secs(30), |p| {
            phase(p) == "Failed"
        })
        .await;
    let c = container_status(&pod).expect("status");
    let terminated = c
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (3, Some("Error"))
    );
    assert!(terminated.started_at.is_some() && terminated.finished_at.is_some());
    assert_eq!(c.restart_count, 0);

    let crash_loop = |p: &Pod| {
        container_status(p).is_some_and(|c| {
            c.restart_count >= 2
                && c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
        })
    };
    let pod = node
        .wait_pod(
            "crashes",
            "CrashLoopBackOff",
            Duration::from_secs(40),
            crash_loop,
        )
        .await;
    assert_eq!(
        phase(&pod),
        "Running",
        "OnFailure with a failing container stays Running"
    );
    let c = container_status(&pod).expect("status");
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    let waiting = c
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .expect("waiting");
    assert!(
        waiting.message.as_deref().is_some_and(
            |m| m.starts_with("back-off ") && m.contains("container=c pod=crashes_default(")
        ),
        "{waiting:?}"
    );

    for name in ["fails", "crashes"] {
        node.pods()
            .delete(
                name,
                &DeleteParams {
                    grace_period_seconds: Some(1),
                    ..DeleteParams::default()
                },
            )
            .await
            .expect("delete");
    }
    for pod in [&fails, &crashes] {
        let uid = pod.metadata.uid.clone().expect("uid");
        node.wait_pod_removed(pod.metadata.name.as_deref().unwrap_or_default(), &uid)
            .await;
    }
    assert!(
        node.mounts_under_dir().is_empty(),
        "mounts left: {:?}",
        node.mounts_under_dir()
    );
    assert!(node.netns_left().is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_volumes_and_image_pull_errors() {
    require_root!();
    let mut node = TestNode::new(Duration::from_millis(500)).await;
    // Nothing listens on port 1: pulls fail fast with a network error.
    node.config.registry.plain_http = vec!["127.0.0.1:1".into()];
    node.start();
    let host_dir = node.dir.path().join("host-data");
    let pod = node
        .create_pod(
            "init",
            json!({
                "initContainers": [{"name": "setup", "image": IMAGE,
                    "command": ["sh", "-c", "echo prepared > /work/flag; echo host > /host/file"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "host", "mountPath": "/host"}]}],
                "containers": [{"name": "main", "image": IMAGE,
                    "command": ["sh", "-c", "cat /work/flag; hostname; sleep 1000"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work", "readOnly": true}]}],
                "volumes": [
                    {"name": "work", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                    {"name": "host", "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"}},
                ],
            }),
        )
        .await;
    let uid = pod.metadata.uid.clone().expect("uid");
    node.create_pod(
        "badimage",
        json!({"containers": [{"name": "c", "image": "127.0.0.1:1/nope:1.0"}]}),
    )
    .await;

    let pod = node
        .wait_pod("init", "Running", Duration::from_secs(30), |p| {
            phase(p) == "Running"
        })
        .await;
    let status = pod.status.expect("status");
    let init = status
        .init_container_statuses
        .expect("initContainerStatuses");
    let done = init[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("init terminated");
    assert_eq!(
        (done.exit_code, done.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("file")).expect("hostPath file"),
        "host\n"
    );
    let tmpfs = node
        .config
        .paths()
        .pod_dir(&uid)
        .join("volumes/kubernetes.io~empty-dir/work");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| {
            l.split(' ').nth(4) == Some(tmpfs.to_str().expect("utf-8")) && l.contains(" - tmpfs ")
        });
    assert!(mounted, "medium: Memory is a tmpfs");
    let log = node
        .config
        .paths()
        .container_log("default", "init", &uid, "main", 0);
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("stdout F init\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.contains("stdout F prepared\n") && text.contains("stdout F init\n"),
        "{text:?}"
    );

    let backoff = node
        .wait_pod(
            "badimage",
            "ImagePullBackOff",
            Duration::from_secs(30),
            |p| {
                container_status(p)
                    .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.as_deref())
                    == Some("ImagePullBackOff")
            },
        )
        .await;
    assert_eq!(phase(&backoff), "Pending");
    let waiting = container_status(&backoff)
        .and_then(|c| c.state.clone()?.waiting)
        .expect("waiting");
    assert!(
        waiting
            .message
            .as_deref()
            .is_some_and(|m| m
                .starts_with("Back-off pulling image \"127.0.0.1:1/nope:1.0\": ErrImagePull: ")),
        "{waiting:?}"
    );

    for name in ["init", "badimage"] {
        node.pods()
            .delete(
                name,
                &DeleteParams {
                    grace_period_seconds: Some(1),
                    ..DeleteParams::default()
                },
            )
            .await
            .expect("delete");
    }
    node.wait_pod_removed("init", &uid).await;
    for _ in 0..100 {
        if node
            .pods()
            .get_opt("badimage")
            .await
            .expect("get")
            .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        node.mounts_under_dir().is_empty(),
        "mounts left: {:?}",
        node.mounts_under_dir()
    );
    assert!(node.netns_left().is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_pods_get_ips_reach_each_other_and_release_them() {
    require_root!();
    let mut node = TestNode::new(Duration::from_millis(500)).await;
    // The plugins' host side (bridge, veths, iptables) lives in a namespace of the test's own.
    let host_ns = format!("{}host", node.netns_prefix);
    let host_path = net::netns::create(&host_ns).expect("test host namespace");
    let cni = net::cni::CniRuntime::new(
        vec![PathBuf::from("/usr/lib/cni")],
        node.dir.path().join("net.d"),
        node.dir.path().join("cni-cache"),
    )
    .with_host_netns(&host_path);
    let network = agent::network::CniNetwork::new(
        cni,
        &node.netns_prefix,
        Arc::new(net::netns::HostNetns::new()),
        Some(node.dir.path().join("cni-data")),
    );
    agent::network::PodNetwork::node_pod_cidr(&network, "10.42.0.0/24").expect("default conflist");
    node.config.pod_network = Arc::new(network);
    node.start();

    let server = node
        .create_pod(
            "server",
            json!({"containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "1000"]}]}),
        )
        .await;
    let pod = node
        .wait_pod(
            "server",
            "Running with an IP",
            Duration::from_secs(30),
            |p| {
                phase(p) == "Running" && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
            },
        )
        .await;
    let ip = pod.status.and_then(|s| s.pod_ip).expect("podIP");
    assert!(ip.starts_with("10.42.0."), "{ip}");
    let client = node
        .create_pod("client", json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE, "command": ["ping", "-c", "1", "-W", "5", &ip]}]}))
        .await;
    let done = node
        .wait_pod("client", "finished", Duration::from_secs(30), |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await;
    assert_eq!(
        phase(&done),
        "Succeeded",
        "pods reach each other by IP: {:?}",
        done.status
    );

    for pod in [&server, &client] {
        let name = pod.metadata.name.clone().expect("name");
        node.pods()
            .delete(
                &name,
                &DeleteParams {
                    grace_period_seconds: Some(1),
                    ..DeleteParams::default()
                },
            )
            .await
            .expect("delete");
        node.wait_pod_removed(&name, &pod.metadata.uid.clone().expect("uid"))
            .await;
    }
    // host-local keeps one file per leased address; DEL released both.
    let leases: Vec<String> = std::fs::read_dir(node.dir.path().join("cni-data/cni/networks"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|net| {
            std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(leases.is_empty(), "addresses left allocated: {leases:?}");
    assert_eq!(
        node.netns_left(),
        vec![host_ns.clone()],
        "only the test's own namespace is left"
    );
    assert!(
        node.mounts_under_dir().is_empty(),
        "mounts left: {:?}",
        node.mounts_under_dir()
    );
    node.stop().await;
}

/// Runs `args` in a pod's container through its shim (what `kubectl exec` will do).
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

fn ready_condition(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_ready_and_liveness_restarts() {
    require_root!();
    let mut node = TestNode::new(Duration::from_millis(500)).await;
    node.start();
    let probe = |file: &str, failures: i32| json!({"exec": {"command": ["cat", file]}, "periodSeconds": 1, "failureThreshold": failures});
    let pod = node
        .create_pod(
            "probed",
            json!({"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": IMAGE,
                "command": ["sh", "-c", "touch /tmp/ready /tmp/alive; sleep 1000"],
                "readinessProbe": probe("/tmp/ready", 1), "livenessProbe": probe("/tmp/alive", 2)}]}),
        )
        .await;
    let uid = pod.metadata.uid.clone().expect("uid");
    let ready = node
        .wait_pod("probed", "Ready", Duration::from_secs(30), |p| {
            ready_condition(p).as_deref() == Some("True")
        })
        .await;
    let id = container_status(&ready)
        .and_then(|c| c.container_id.clone())
        .expect("containerID");

    assert_eq!(exec_in(&node, &uid, &id, &["rm", "/tmp/ready"]).await, 0);
    let unready = node
        .wait_pod("probed", "not Ready", Duration::from_secs(15), |p| {
            ready_condition(p).as_deref() == Some("False")
        })
        .await;
    let c = container_status(&unready).expect("status");
    assert!(
        !c.ready && c.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
        "still running, not ready: {c:?}"
    );
    assert_eq!(c.restart_count, 0);

    assert_eq!(exec_in(&node, &uid, &id, &["rm", "/tmp/alive"]).await, 0);
    let restarted = node
        .wait_pod(
            "probed",
            "restarted and Ready",
            Duration::from_secs(30),
            |p| {
                container_status(p).is_some_and(|c| c.restart_count == 1 && c.ready)
                    && ready_condition(p).as_deref() == Some("True")
            },
        )
        .await;
    let c = container_status(&restarted).expect("status");
    assert!(
        c.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some(),
        "{c:?}"
    );

    node.pods()
        .delete(
            "probed",
            &DeleteParams {
                grace_period_seconds: Some(1),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete");
    node.wait_pod_removed("probed", &uid).await;
    assert!(node.mounts_under_dir().is_empty());
    node.stop().await;
}
