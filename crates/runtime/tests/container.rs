//! The shim end to end, as root: busybox containers from a directory rootfs, CRI logs, exit
//! codes, OOM kills, signals, exec, and re-attaching to a shim that outlived its parent.
//! Each test owns a cgroup parent `skiff-test-<pid>-<n>` and a temp dir, both removed by a
//! guard even when the test fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::container::cgroup::CgroupLayout;
use runtime::container::{
    ContainerConfig, ContainerState, Resources, SeccompProfile, ShimArgs, ShimClient,
    default_namespaces, read_state_file, runtime_spec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `target/debug/skiff` (run as `skiff shim …`), next to this test binary's `deps` directory;
/// `cargo test --workspace` builds it because the skiff package has integration tests.
fn shim_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let debug = exe.parent().and_then(Path::parent).expect("target dir");
    debug.join("skiff")
}

struct Pod {
    dir: tempfile::TempDir,
    cgroup_parent: String,
    args: ShimArgs,
}

impl Pod {
    fn new(name: &str) -> Pod {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs/bin");
        for d in ["proc", "dev", "sys", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "echo", "sleep", "cat", "dd", "true", "hostname"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("symlink");
        }
        let args = ShimArgs {
            pod_dir: dir.path().join("pod"),
            socket: dir.path().join("pod/shim.sock"),
            state_root: dir.path().join("state"),
            foreground: false,
        };
        Pod {
            cgroup_parent: format!("skiff-test-{}-{name}", std::process::id()),
            dir,
            args,
        }
    }

    fn config(&self, id: &str, script: &str) -> ContainerConfig {
        ContainerConfig {
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec![script.into()],
            env: vec!["PATH=/bin".into()],
            rootfs: self.dir.path().join("rootfs"),
            namespaces: default_namespaces(),
            cgroup_path: format!("/{}/{id}", self.cgroup_parent),
            hostname: Some("pod-a".into()),
            seccomp: SeccompProfile::RuntimeDefault,
            ..ContainerConfig::default()
        }
    }

    fn log(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(id).join("0.log")
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Kill whatever is left (containers first, then the shim), then remove the cgroups.
        if let Ok(state) = read_state_file(&self.args.pod_dir) {
            for c in state
                .containers
                .iter()
                .filter(|c| c.state == ContainerState::Running)
            {
                if let Some(pid) = c.pid {
                    // SAFETY: plain kill(2).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            // SAFETY: plain kill(2).
            unsafe { libc::kill(state.shim_pid, libc::SIGKILL) };
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

async fn started(pod: &Pod) -> ShimClient {
    ShimClient::spawn_shim(&shim_binary(), &pod.args)
        .await
        .expect("spawn shim")
}

#[tokio::test]
async fn containers_run_log_exit_and_exec() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let pod = Pod::new("run");
    let mut shim = started(&pod).await;

    // echo → CRI log, exit code 0.
    let spec =
        runtime_spec(&pod.config("hello", "echo hello; echo oops >&2; hostname")).expect("spec");
    let status = shim
        .start("hello", &spec, &pod.log("hello"))
        .await
        .expect("start");
    assert_eq!(status.state, ContainerState::Running);
    let status = shim.wait("hello").await.expect("wait");
    assert_eq!(
        (status.state, status.exit_code, status.oom_killed),
        (ContainerState::Exited, Some(0), false)
    );
    let log = std::fs::read_to_string(pod.log("hello")).expect("log");
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.split_once(' ').map(|(_, r)| r).unwrap_or(""))
        .collect();
    assert!(lines.contains(&"stdout F hello"), "{log}");
    assert!(lines.contains(&"stderr F oops"), "{log}");
    assert!(lines.contains(&"stdout F pod-a"), "{log}");
    shim.delete("hello").await.expect("delete");
    assert!(shim.status("hello").await.is_err());

    // Exit codes.
    let spec = runtime_spec(&pod.config("three", "exit 3")).expect("spec");
    shim.start("three", &spec, &pod.log("three"))
        .await
        .expect("start");
    assert_eq!(shim.wait("three").await.expect("wait").exit_code, Some(3));
    assert_eq!(
        read_state_file(&pod.args.pod_dir)
            .expect("state")
            .containers[0]
            .exit_code,
        Some(3)
    );

    // Exec in a running container, then SIGTERM (ignored by a pid-1 sh) and SIGKILL.
    let spec = runtime_spec(&pod.config("sleeper", "sleep 300")).expect("spec");
    shim.start("sleeper", &spec, &pod.log("sleeper"))
        .await
        .expect("start");
    let mut exec = shim
        .exec(
            "sleeper",
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "read x; echo got $x; exit 4".into(),
            ],
            vec!["PATH=/bin".into()],
            None,
        )
        .await
        .expect("exec");
    exec.stdin.write_all(b"ping\n").await.expect("stdin");
    drop(exec.stdin);
    let mut out = String::new();
    exec.stdout.read_to_string(&mut out).await.expect("stdout");
    assert_eq!(out, "got ping\n");
    assert_eq!(shim.wait_exec(exec.pid).await.expect("wait exec"), 4);

    shim.kill("sleeper", libc::SIGTERM).await.expect("sigterm");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        shim.status("sleeper").await.expect("status").state,
        ContainerState::Running,
        "pid 1 ignores SIGTERM without a handler"
    );
    let mut waiter = ShimClient::connect(&pod.args.socket)
        .await
        .expect("connect");
    let wait = tokio::spawn(async move { waiter.wait("sleeper").await });
    shim.kill("sleeper", libc::SIGKILL).await.expect("sigkill");
    let status = wait.await.expect("join").expect("wait");
    assert_eq!(status.exit_code, Some(137));
    assert!(!status.oom_killed);

    shim.shutdown().await.expect("shutdown");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pod.args.socket.exists());
    assert!(!CgroupLayout::detect().exists(&format!("/{}/sleeper", pod.cgroup_parent)));
}

#[tokio::test]
async fn memory_limit_gives_oom_kill() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let pod = Pod::new("oom");
    let mut shim = started(&pod).await;
    let mut config = pod.config("hog", "dd if=/dev/zero of=/dev/null bs=64M count=1");
    config.resources = Resources {
        memory_limit_bytes: Some(16 << 20),
        ..Resources::default()
    };
    let spec = runtime_spec(&config).expect("spec");
    shim.start("hog", &spec, &pod.log("hog"))
        .await
        .expect("start");
    let status = shim.wait("hog").await.expect("wait");
    assert_eq!(status.exit_code, Some(137), "{status:?}");
    assert!(status.oom_killed, "{status:?}");
    shim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn shim_outlives_its_parent_and_is_re_adopted() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let pod = Pod::new("adopt");
    {
        // spawn_shim's direct child exits at once; the shim itself runs on in its own session.
        let mut shim = started(&pod).await;
        let spec = runtime_spec(&pod.config("web", "sleep 300")).expect("spec");
        shim.start("web", &spec, &pod.log("web"))
            .await
            .expect("start");
    }
    let state = read_state_file(&pod.args.pod_dir).expect("state file");
    // SAFETY: signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(state.shim_pid, 0) }, 0, "shim alive");
    let ppid = std::fs::read_to_string(format!("/proc/{}/stat", state.shim_pid)).expect("stat");
    assert_ne!(
        ppid.split_whitespace().nth(3),
        Some(std::process::id().to_string().as_str())
    );

    let mut again = ShimClient::connect(&pod.args.socket)
        .await
        .expect("re-attach");
    let status = again.status("web").await.expect("status");
    assert_eq!(status.state, ContainerState::Running);
    assert_eq!(again.list().await.expect("list").len(), 1);
    again.kill("web", libc::SIGKILL).await.expect("kill");
    assert_eq!(again.wait("web").await.expect("wait").exit_code, Some(137));
    again.shutdown().await.expect("shutdown");
}
