//! A `skiff server` whose built-in node runs inside a network namespace made for the test,
//! with its cgroups under `skiff-test-<pid>-<tag>`: the setup every end-to-end test with real
//! containers shares, and the guards that leave nothing behind when such a test fails.

use std::process::Command;
use std::time::Duration;

use crate::{Kubectl, Server, TestNetns, image_fixture, skiff_bin};

/// Removes the test's cgroup root from every hierarchy (the agent removes pod cgroups). If a
/// test failed midway, first ends what is still running in it and unmounts what the node
/// mounted under the test's data dir, and removes the pod network namespaces it made.
pub struct CgroupRoot(pub String, std::cell::RefCell<Option<std::path::PathBuf>>);

impl CgroupRoot {
    pub fn new(name: String) -> CgroupRoot {
        CgroupRoot(name, std::cell::RefCell::new(None))
    }

    pub fn watch_data_dir(&self, dir: std::path::PathBuf) {
        *self.1.borrow_mut() = Some(dir);
    }

    pub fn kill_leftovers(&self) {
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

pub fn leftover_cgroups(root: &str) -> Vec<String> {
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

/// A `skiff server` with its node in a network namespace of its own, the busybox image
/// imported, and kubectl 1.33 pointed at it. On a failing test, pods are deleted through the
/// API first so the node tears them down itself; then the server stops and leftovers go.
pub struct NodeEnv {
    pub k: Kubectl,
    pub server: Server,
    pub cgroup_root: CgroupRoot,
    pub logs: tempfile::TempDir,
}

impl NodeEnv {
    pub fn start(tag: &str, extra: &[&str]) -> NodeEnv {
        let cgroup_root = CgroupRoot::new(format!("skiff-test-{}-{tag}", std::process::id()));
        let netns = TestNetns::create(tag);
        let logs = tempfile::Builder::new().prefix("skiff-e2e-logs-").tempdir().expect("tempdir");
        let mut args = vec![
            "--node-name", "node-1",
            "--kubelet-port", "0",
            "--cgroup-root", &cgroup_root.0,
            "--log-root", logs.path().to_str().unwrap_or_default(),
            "--restart-backoff", "1s",
            // Like kind: the host's free disk must not decide whether the test can schedule.
            "--eviction-hard", "memory.available<0,nodefs.available<0%",
        ];
        args.extend_from_slice(extra);
        let server = Server::start_in(Some(netns), &args);
        cgroup_root.watch_data_dir(server.data_dir());
        let k = server.kubectl("1.33");
        let env = NodeEnv { k, server, cgroup_root, logs };
        env.import_image("docker.io/library/busybox:1.36");
        let out = env.k.run(&["wait", "node/node-1", "--for=condition=Ready", "--timeout=60s"]);
        assert!(out.stdout.contains("condition met"), "{}{}\n{}", out.stdout, out.stderr, env.server.log());
        env
    }

    /// Imports the busybox test image as `reference` into the node's image store
    /// (`skiff image import`).
    pub fn import_image(&self, reference: &str) {
        let dir = self.server.dir.path().join(format!("layout-{}", reference.replace(['/', ':'], "_")));
        let layout = image_fixture::busybox_layout(&dir, reference);
        let out = Command::new(skiff_bin())
            .args(["image", "import"])
            .arg(&layout)
            .arg("--data-dir")
            .arg(self.server.data_dir())
            .output()
            .expect("skiff image import");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn netns(&self) -> &TestNetns {
        self.server.netns.as_ref().expect("the node runs in a namespace")
    }

    pub fn create(&self, name: &str, manifest: &str) {
        let f = self.k.with_file(&format!("{name}.yaml"), manifest);
        self.k.run(&["create", "-f", f.to_str().unwrap_or_default()]).ok();
    }

    /// `kubectl wait` for `what`, or a panic showing the pod and the server's log.
    pub fn wait(&self, pod: &str, what: &str, timeout: &str) {
        let out = self.k.run(&["wait", &format!("pod/{pod}"), what, &format!("--timeout={timeout}")]);
        if !out.status.success() {
            let yaml = self.k.run(&["get", "pod", pod, "-o", "yaml"]);
            panic!("pod {pod}: {what} not met: {}\n{}\nserver log:\n{}", out.stderr, yaml.stdout, self.server.log());
        }
    }

    pub fn jsonpath(&self, pod: &str, path: &str) -> String {
        self.k.run(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]).ok().stdout
    }

    /// Polls `kubectl get pod` until its row contains `needle`.
    pub fn wait_row(&self, pod: &str, needle: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            last = self.k.run(&["get", "pod", pod]).stdout;
            if last.lines().nth(1).is_some_and(|row| row.contains(needle)) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("pod {pod} never showed {needle:?}; last:\n{last}\n{}", self.k.run(&["get", "pod", pod, "-o", "yaml"]).stdout);
    }

    /// Deletes every pod and checks the node left no cgroup, mount or pod namespace behind.
    pub fn delete_all_and_check_clean(&self) {
        self.k.run(&["delete", "pods", "--all", "--grace-period=1", "--timeout=60s"]).ok();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(leftover_cgroups(&self.cgroup_root.0), Vec::<String>::new(), "pod cgroups left behind");
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let data = self.server.data_dir().display().to_string();
        assert!(!mounts.lines().any(|l| l.contains(&data)), "mounts left under {data}");
        // No veth of a pod is left in the node's namespace, and no pod IP stays allocated.
        let links = self.netns().command("ip").args(["-o", "link", "show"]).output().expect("ip link");
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(!links.lines().any(|l| l.contains(": veth")), "veths left behind:\n{links}");
        let networks = self.server.data_dir().join("cni").join("networks");
        assert!(networks.is_dir(), "no IPAM state at {}", networks.display());
        for network in std::fs::read_dir(&networks).into_iter().flatten().flatten() {
            let ips: Vec<String> = std::fs::read_dir(network.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect();
            assert!(ips.is_empty(), "pod IPs still allocated in {}: {ips:?}", network.path().display());
        }
        let pods = self.server.data_dir().join("agent").join("pods");
        let netns = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
        let netns = String::from_utf8_lossy(&netns.stdout);
        for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let uid = pod.file_name().to_string_lossy().into_owned();
            assert!(!netns.contains(&format!("skiff-{uid}")), "pod namespace of {uid} left: {netns}");
        }
    }
}

impl Drop for NodeEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.k.run(&["delete", "pods", "--all", "--grace-period=1", "--timeout=30s"]);
            // Stop the server and undo what its node left (processes, mounts) before the
            // server's temp dir is removed, or the removal fails on busy mount points.
            self.server.terminate();
            self.cgroup_root.kill_leftovers();
        }
    }
}

