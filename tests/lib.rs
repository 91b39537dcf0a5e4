//! End-to-end test support: start the real `skiff` binary on a free loopback port with a temp
//! data dir, and drive it with the real kubectl (1.33 and 1.32).
//!
//! * [`Server`]: one `skiff server` process; dropped → SIGTERM, then SIGKILL by PID if it hangs.
//! * [`Kubectl`]: a pinned kubectl version with its own kubeconfig and discovery cache.
//! * [`image_fixture`]: a busybox OCI image layout built at test time.
//!
//! The binary is found at `$SKIFF_BIN`, else `target/debug/skiff` of this workspace (the test
//! command builds it first).

pub mod image_fixture;
pub mod node_env;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The kubectl versions every kubectl test runs with.
pub const KUBECTL_VERSIONS: &[&str] = &["1.33", "1.32"];

pub fn skiff_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SKIFF_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default();
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let bin = target.join("debug").join("skiff");
    assert!(
        bin.exists(),
        "the skiff binary is not built at {}: run `cargo build -p skiff` first (or set SKIFF_BIN)",
        bin.display()
    );
    bin
}

/// A running `skiff server`.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub extra_args: Vec<String>,
    /// The test's own network namespace the server (and its node) runs in, if any.
    pub netns: Option<TestNetns>,
}

/// The address of a test namespace's `eth0`: the node's InternalIP inside it.
pub const NODE_IP: &str = "198.51.100.2";

/// A network namespace made for one test (`ip netns add`), deleted on drop. Everything a
/// node does to the network (bridges, veths, routes, nftables) stays inside it.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn create(tag: &str) -> TestNetns {
        let name = format!("skiff-test-{}-{tag}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name} failed (run the tests as root)");
        let ns = TestNetns { name };
        let ok = Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]).status().is_ok_and(|s| s.success());
        assert!(ok, "bringing lo up in {} failed", ns.name);
        // A host's network, all inside the namespace: an `eth0` (one end of a veth pair whose
        // other end stays in the namespace too) with an address of TEST-NET-2 and a default
        // route, so the node finds its InternalIP as on a real machine and pods can reach it.
        // Nothing leaves the namespace.
        for args in [
            &["link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"][..],
            &["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"],
            &["link", "set", "eth0-peer", "up"],
            &["link", "set", "eth0", "up"],
            &["route", "add", "default", "dev", "eth0"],
        ] {
            let ok = ns.command("ip").args(args).status().is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?} in {} failed", ns.name);
        }
        ns
    }

    /// `program` run inside the namespace. `nsenter --net` switches only the network
    /// namespace; `ip netns exec` would also remount /sys, hiding /sys/fs/cgroup from the node.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name)).arg("--").arg(program);
        c
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

impl Server {
    /// Starts a server with the embedded SQLite store on a free loopback port.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Server {
        Server::start_in(None, args)
    }

    /// Starts a server in `netns` (when given): loopback there is the namespace's own, so
    /// kubectl and HTTP clients must run inside it too ([`Kubectl`] does that by itself).
    pub fn start_in(netns: Option<TestNetns>, args: &[&str]) -> Server {
        let dir = tempfile::Builder::new().prefix("skiff-e2e-").tempdir().expect("temp dir");
        let mut s = Server {
            child: None,
            kubeconfig: dir.path().join("data").join("kubeconfig.yaml"),
            dir,
            url: String::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            netns,
        };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (or restarts) the process and waits until `/readyz` says ok.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let mut cmd = match &self.netns {
            Some(ns) => ns.command(skiff_bin()),
            None => Command::new(skiff_bin()),
        };
        let child = cmd
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(&self.extra_args)
            // The built-in node changes the network (bridge, veths) and cgroups: it only runs
            // in a test that gave the server its own network namespace.
            .args(if self.netns.is_none() { &["--disable-agent"][..] } else { &[][..] })
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn skiff server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "skiff server did not become ready; log:\n{}", self.log());
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("skiff server exited early ({status}); log:\n{}", self.log());
                }
            }
            if let Ok(text) = std::fs::read_to_string(&self.kubeconfig) {
                if let Some(line) = text.lines().find(|l| l.trim_start().starts_with("server:")) {
                    self.url = line.trim_start().trim_start_matches("server:").trim().to_string();
                    if self.ready() {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ready(&self) -> bool {
        match &self.netns {
            None => http_get(&format!("{}/readyz", self.url)).map(|(c, _)| c == 200).unwrap_or(false),
            // Loopback inside the namespace: ask from there.
            Some(ns) => ns
                .command("curl")
                .args(["-fsS", "--max-time", "2", &format!("{}/readyz", self.url)])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout == b"ok"),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash: nothing is flushed or closed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn kubectl(&self, version: &str) -> Kubectl {
        Kubectl::new(self, version)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The output of one command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with both streams unless the command succeeded.
    pub fn ok(self) -> Output {
        assert!(self.status.success(), "command failed ({}):\nstdout:\n{}\nstderr:\n{}", self.status, self.stdout, self.stderr);
        self
    }

    pub fn fail(self) -> Output {
        assert!(!self.status.success(), "command unexpectedly succeeded:\nstdout:\n{}", self.stdout);
        self
    }
}

/// One pinned kubectl version pointed at a server.
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
    netns: Option<String>,
    pub version: String,
}

impl Kubectl {
    pub fn new(server: &Server, version: &str) -> Kubectl {
        let bin = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}"));
        assert!(bin.exists(), "kubectl {version} is not installed at {}", bin.display());
        let home = server.dir.path().join(format!("home-{version}"));
        std::fs::create_dir_all(&home).expect("home");
        Kubectl {
            bin,
            kubeconfig: server.kubeconfig.clone(),
            home,
            netns: server.netns.as_ref().map(|n| n.name.clone()),
            version: version.into(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .args(args)
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("run kubectl");
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs kubectl on a terminal of `columns`×`rows` (util-linux `script` provides it), as a
    /// user typing `kubectl exec -it` would. Output is what the terminal showed.
    pub fn run_on_terminal(&self, args: &[&str], columns: u16, rows: u16) -> Output {
        let c = self.command(args);
        let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
        let mut line = format!("stty cols {columns} rows {rows}; exec env");
        for (k, v) in c.get_envs() {
            if let Some(v) = v {
                line.push_str(&format!(" {}={}", k.to_string_lossy(), quote(v)));
            }
        }
        line.push(' ');
        line.push_str(&quote(c.get_program()));
        for a in c.get_args() {
            line.push(' ');
            line.push_str(&quote(a));
        }
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run script");
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `kubectl apply -f -` style: writes `manifest` to a file and runs with `-f FILE`.
    pub fn with_file(&self, name: &str, manifest: &str) -> PathBuf {
        let p = self.home.join(name);
        std::fs::write(&p, manifest).expect("write manifest");
        p
    }

    /// Starts a long-running kubectl (e.g. `get -w`) whose stdout lines arrive on a channel.
    pub fn spawn_lines(&self, args: &[&str]) -> (Child, std::sync::mpsc::Receiver<String>) {
        let mut child = self.command(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn kubectl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }
}

/// Waits for a line containing all `needles` on `rx`.
pub fn expect_line(rx: &std::sync::mpsc::Receiver<String>, needles: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                if needles.iter().all(|n| line.contains(n)) {
                    return line;
                }
                seen.push(line);
            }
            Err(_) => break,
        }
    }
    panic!("no line with {needles:?} within {within:?}; saw:\n{}", seen.join("\n"));
}

/// A tiny blocking HTTP client for raw API requests (bad-input tests, crash tests).
pub fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    http_request("GET", url, None, &[])
}

pub fn http_request(method: &str, url: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    http_exchange(method, url, body, headers).map(|(code, _, body)| (code, body))
}

/// One request; returns the status, the response head (status line and headers) and the body.
pub fn http_exchange(method: &str, url: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or_else(|| std::io::Error::other("http only"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    if let Some(b) = body {
        // A server may answer (413) and close before reading a huge body.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad response: {text:.200}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((code, head.to_string(), body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// A throwaway etcd on loopback ports with a temp data dir; killed by PID on drop.
pub struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::Builder::new().prefix("skiff-e2e-etcd-").tempdir().expect("temp dir");
        let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let (client, peer) = (free(), free());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log");
        let child = Command::new("/usr/bin/etcd")
            .arg("--name=skiff-e2e")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=skiff-e2e={peer_url}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn /usr/bin/etcd (apt etcd-server)");
        let etcd = Etcd { child, _dir: dir, endpoint };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get(&format!("{}/health", etcd.endpoint)).is_ok_and(|(c, b)| c == 200 && b.contains("true")) {
                return etcd;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd did not become healthy at {}", etcd.endpoint);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `docker-registry` (apt) serving plain HTTP on 127.0.0.1:5000 inside a test's network
/// namespace, killed by PID on drop.
pub struct Registry {
    child: Child,
    netns: String,
    pub addr: String,
}

impl Registry {
    pub fn start(netns: &TestNetns, dir: &Path) -> Registry {
        let addr = "127.0.0.1:5000".to_string();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("registry-data").display()
            ),
        )
        .expect("registry config");
        // nsenter execs the registry itself, so the child's PID is the registry's.
        let child = netns
            .command("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("apt docker-registry provides docker-registry");
        let registry = Registry { child, netns: netns.name.clone(), addr };
        for _ in 0..200 {
            if registry.curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/v2/", registry.addr)]).0 == "200" {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not answer on {} in {}", registry.addr, registry.netns);
    }

    fn curl(&self, args: &[&str]) -> (String, String) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg("curl")
            .args(args)
            .output()
            .expect("curl");
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Pushes the single image of an OCI layout (as [`image_fixture::busybox_layout`] writes)
    /// as `<addr>/<repo>:<tag>`, with the registry HTTP API (upload session, then PUT).
    pub fn push_layout(&self, layout: &Path, repo: &str, tag: &str) {
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json")).expect("index");
        let manifest_digest = index["manifests"][0]["digest"].as_str().expect("manifest digest").to_string();
        let blob_path = |d: &str| layout.join("blobs").join("sha256").join(d.trim_start_matches("sha256:"));
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob_path(&manifest_digest)).expect("manifest")).expect("manifest json");
        let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap_or_default().to_string()];
        blobs.extend(manifest["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str()).map(str::to_string));
        for digest in blobs {
            let (headers, err) = self.curl(&["-sS", "-X", "POST", "-D", "-", "-o", "/dev/null", &format!("http://{}/v2/{repo}/blobs/uploads/", self.addr)]);
            let location = headers
                .lines()
                .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
                .unwrap_or_else(|| panic!("no upload location from the registry: {headers}{err}"))
                .trim()
                .to_string();
            let location = if location.starts_with('/') { format!("http://{}{location}", self.addr) } else { location };
            let sep = if location.contains('?') { '&' } else { '?' };
            let (code, err) = self.curl(&[
                "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                "-H", "Content-Type: application/octet-stream",
                "--data-binary", &format!("@{}", blob_path(&digest).display()),
                &format!("{location}{sep}digest={digest}"),
            ]);
            assert_eq!(code, "201", "blob upload of {digest}: {err}");
        }
        let (code, err) = self.curl(&[
            "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
            "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary", &format!("@{}", blob_path(&manifest_digest).display()),
            &format!("http://{}/v2/{repo}/manifests/{tag}", self.addr),
        ]);
        assert_eq!(code, "201", "manifest upload: {err}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
