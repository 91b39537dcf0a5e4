//! Issue #3 end to end: `skiff server` with its built-in node, inside a network namespace made
//! for the test, running real containers from an imported image, driven by the real kubectl.

use std::process::Command;
use std::time::Duration;

use skiff_e2e::{Server, TestNetns, image_fixture, skiff_bin};

/// Removes the test's cgroup root from every hierarchy (the agent removes pod cgroups). If a
/// test failed midway, first ends what is still running in it and unmounts what the node
/// mounted under the test's data dir, and removes the pod network namespaces it made.
struct CgroupRoot(String, std::cell::RefCell<Option<std::path::PathBuf>>);

impl CgroupRoot {
    fn new(name: String) -> CgroupRoot {
        CgroupRoot(name, std::cell::RefCell::new(None))
    }

    fn watch_data_dir(&self, dir: std::path::PathBuf) {
        *self.1.borrow_mut() = Some(dir);
    }

    fn kill_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return };
        for e in entries.flatten() {
            let root = e.path().join(&self.0);
            let out = Command::new("find").arg(&root).args(["-name", "cgroup.procs"]).output();
            for procs in out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
                for pid in std::fs::read_to_string(procs).unwrap_or_default().lines() {
                    // Processes of this test's own cgroup: started by this test's node.
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
        }
        let Some(data) = self.1.borrow().clone() else { return };
        let pods = data.join("agent").join("pods");
        for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let state = std::fs::read_to_string(pod.path().join("shim-state.json")).unwrap_or_default();
            if let Some(pid) = serde_json::from_str::<serde_json::Value>(&state).ok().and_then(|v| v["shim_pid"].as_u64()) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            let uid = pod.file_name().to_string_lossy().into_owned();
            let _ = Command::new("ip").args(["netns", "delete", &format!("skiff-{uid}")]).status();
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let prefix = data.display().to_string();
        let mut mine: Vec<&str> = mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&prefix)).collect();
        mine.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mine {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        self.kill_leftovers();
        let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return };
        for e in entries.flatten() {
            let p = e.path().join(&self.0);
            if p.is_dir() {
                // Deepest first: pod and container cgroups if a test failed midway.
                let mut dirs = vec![p.clone()];
                let mut i = 0;
                while i < dirs.len() {
                    if let Ok(children) = std::fs::read_dir(&dirs[i]) {
                        dirs.extend(children.flatten().map(|c| c.path()).filter(|c| c.is_dir()));
                    }
                    i += 1;
                }
                for d in dirs.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
            }
        }
        // The unified hierarchy lives one level down on hybrid hosts.
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/unified/{}", self.0));
    }
}

fn leftover_cgroups(root: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let p = e.path().join(root);
            if let Ok(children) = std::fs::read_dir(&p) {
                out.extend(children.flatten().filter(|c| c.path().is_dir()).map(|c| c.path().display().to_string()));
            }
        }
    }
    out
}

#[test]
fn a_bound_pod_runs_logs_execs_and_is_cleaned_up() {
    let cgroup_root = CgroupRoot::new(format!("skiff-test-{}-node", std::process::id()));
    let netns = TestNetns::create("node");
    let logs = tempfile::Builder::new().prefix("skiff-e2e-logs-").tempdir().expect("tempdir");
    let server = Server::start_in(
        Some(netns),
        &[
            "--node-name", "node-1",
            "--kubelet-port", "0",
            "--cgroup-root", &cgroup_root.0,
            "--log-root", logs.path().to_str().unwrap_or_default(),
            "--restart-backoff", "1s",
        ],
    );
    cgroup_root.watch_data_dir(server.data_dir());
    let k = server.kubectl("1.33");
    // On failure, pods are deleted through the API first so the node tears them down itself.
    struct DeletePods<'a>(&'a skiff_e2e::Kubectl);
    impl Drop for DeletePods<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = self.0.run(&["delete", "pods", "--all", "--grace-period=1", "--timeout=30s"]);
            }
        }
    }
    let _delete_pods = DeletePods(&k);

    // The image comes from `skiff image import` into the node's store.
    let layout = image_fixture::busybox_layout(&server.dir.path().join("layout"), "docker.io/library/busybox:1.36");
    let out = Command::new(skiff_bin())
        .args(["image", "import"])
        .arg(&layout)
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .expect("skiff image import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = k.run(&["wait", "node/node-1", "--for=condition=Ready", "--timeout=60s"]).ok();
    assert!(out.stdout.contains("condition met"), "{}", out.stdout);
    k.run(&["wait", "node/node-1", "--for=jsonpath={.spec.podCIDR}", "--timeout=30s"]).ok();
    let out = k.run(&["get", "node", "node-1", "-o", "jsonpath={.spec.podCIDR} {.status.nodeInfo.containerRuntimeVersion}"]).ok();
    assert!(out.stdout.starts_with("10.42.0.0/24 skiff://"), "{}", out.stdout);

    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  nodeName: node-1\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: busybox:1.36\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo hello from box; exec sleep 1000\"]\n";
    let f = k.with_file("pod.yaml", pod);
    k.run(&["create", "-f", f.to_str().unwrap_or_default()]).ok();
    let out = k.run(&["wait", "pod/box", "--for=condition=Ready", "--timeout=60s"]);
    if !out.status.success() {
        let pod = k.run(&["get", "pod", "box", "-o", "yaml"]);
        panic!("pod box never became Ready: {}\n{}\nserver log:\n{}", out.stderr, pod.stdout, server.log());
    }

    let out = k.run(&["get", "pod", "box", "-o", "wide"]).ok();
    let row = out.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(row.contains("Running") && row.contains("1/1") && row.contains("10.42.0.") && row.contains("node-1"), "{}", out.stdout);

    let out = k.run(&["logs", "box"]).ok();
    assert_eq!(out.stdout.trim(), "hello from box");
    let out = k.run(&["exec", "box", "--", "echo", "hi from exec"]).ok();
    assert_eq!(out.stdout.trim(), "hi from exec");
    let out = k.run(&["exec", "box", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", out.stderr);
    let out = k.run(&["exec", "-i", "box", "--", "cat"]);
    assert!(out.status.success(), "{}", out.stderr);

    // A failing container: restartPolicy Never, exit 3 → Failed with the exit code.
    let failing = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: fails\nspec:\n  nodeName: node-1\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox:1.36\n    command: [\"sh\", \"-c\", \"exit 3\"]\n";
    let f = k.with_file("fails.yaml", failing);
    k.run(&["create", "-f", f.to_str().unwrap_or_default()]).ok();
    let out = k.run(&["wait", "pod/fails", "--for=jsonpath={.status.phase}=Failed", "--timeout=60s"]).ok();
    assert!(out.stdout.contains("condition met"), "{}", out.stdout);
    let out = k.run(&["get", "pod", "fails", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}"]).ok();
    assert_eq!(out.stdout.trim(), "3 Error");

    // Deletion honours the grace period and leaves nothing behind.
    for p in ["box", "fails"] {
        let out = k.run(&["delete", "pod", p, "--timeout=60s"]).ok();
        assert_eq!(out.stdout.trim(), format!("pod \"{p}\" deleted"));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(leftover_cgroups(&cgroup_root.0), Vec::<String>::new(), "pod cgroups left behind");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let data = server.data_dir().display().to_string();
    assert!(!mounts.lines().any(|l| l.contains(&data)), "mounts left under {data}");
    let netns = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(!netns.lines().any(|l| l.starts_with("skiff-") && !l.starts_with("skiff-test-")), "pod namespaces left: {netns}");
}
