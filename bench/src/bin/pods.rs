//! Node benchmark (not a test): pod create → Running latency with the image present, beside a
//! bare libcontainer create+start of the same bundle in the same run; how many `sleep` pods the
//! node runs at once and the agent's and shims' memory per pod; idle RSS of `skiff server`
//! with its node and no pods.
//!
//!     cargo build --release -p skiff -p skiff-bench && sudo ./target/release/pods
//!
//! Everything runs inside a network namespace the benchmark creates (`ip netns add
//! skiff-bench-<pid>`; the benchmark re-executes itself inside it with `nsenter --net`), with
//! cgroups under `skiff-bench-<pid>`; both are removed at the end, also after a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};

#[derive(Parser, Clone)]
struct Args {
    /// Pods created one after another for the latency figures (they keep running for the
    /// density figure).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Run inside the benchmark's namespace (set by the benchmark itself).
    #[arg(long, hide = true)]
    inside: Option<PathBuf>,
    /// Bare libcontainer runs of the bundle at this path (set by the benchmark itself).
    #[arg(long, hide = true)]
    bare: Option<PathBuf>,
    /// The cgroup parent everything goes under (set by the benchmark itself).
    #[arg(long, hide = true)]
    cgroup_root: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match (&args.bare, &args.inside) {
        (Some(bundle), _) => bare_runs(bundle, &args),
        (None, Some(dir)) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("tokio runtime")
            .and_then(|rt| rt.block_on(inside(dir.clone(), args.clone()))),
        (None, None) => outside(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pods: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn skiff_bin() -> PathBuf {
    std::env::var("SKIFF_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/skiff")
    })
}

/// The network namespace, cgroups and temp dir of one run, removed on drop.
struct Sandbox {
    netns: String,
    cgroup_root: String,
    dir: tempfile::TempDir,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Whatever still runs in our cgroups was started by this benchmark's node.
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let root = hierarchy.path().join(&self.cgroup_root);
            let found = Command::new("find").arg(&root).args(["-name", "cgroup.procs"]).output();
            for procs in found.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
                for pid in std::fs::read_to_string(procs).unwrap_or_default().lines() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
        }
        // Shims live outside the pod cgroups: end them by the PID their state file records.
        let pods = self.dir.path().join("data").join("agent").join("pods");
        for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let state = std::fs::read_to_string(pod.path().join("shim-state.json")).unwrap_or_default();
            if let Some(pid) = serde_json::from_str::<Value>(&state).ok().and_then(|v| v["shim_pid"].as_u64()) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            let uid = pod.file_name().to_string_lossy().into_owned();
            let _ = Command::new("ip").args(["netns", "delete", &format!("skiff-{uid}")]).status();
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let prefix = self.dir.path().display().to_string();
        let mut mine: Vec<&str> = mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&prefix)).collect();
        mine.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mine {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let root = hierarchy.path().join(&self.cgroup_root);
            let found = Command::new("find").arg(&root).args(["-depth", "-type", "d"]).output();
            for d in found.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
                let _ = std::fs::remove_dir(d);
            }
        }
        let _ = Command::new("ip").args(["netns", "delete", &self.netns]).status();
    }
}

/// Creates the namespace and runs the benchmark inside it.
fn outside(args: &Args) -> anyhow::Result<()> {
    if !nix_is_root() {
        bail!("run as root: the benchmark makes a network namespace and cgroups");
    }
    let pid = std::process::id();
    let sandbox = Sandbox {
        netns: format!("skiff-bench-{pid}"),
        cgroup_root: format!("skiff-bench-{pid}"),
        dir: tempfile::Builder::new().prefix("skiff-bench-pods-").tempdir_in("/var/tmp").context("temp dir")?,
    };
    let ok = Command::new("ip").args(["netns", "add", &sandbox.netns]).status().is_ok_and(|s| s.success());
    if !ok {
        bail!("ip netns add {} failed", sandbox.netns);
    }
    let ok = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", sandbox.netns))
        .args(["--", "ip", "link", "set", "lo", "up"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("bringing lo up in {} failed", sandbox.netns);
    }
    let status = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", sandbox.netns))
        .arg("--")
        .arg(std::env::current_exe().context("current exe")?)
        .arg("--pods")
        .arg(args.pods.to_string())
        .arg("--inside")
        .arg(sandbox.dir.path())
        .arg("--cgroup-root")
        .arg(&sandbox.cgroup_root)
        .status()
        .context("nsenter")?;
    if !status.success() {
        let log = std::fs::read_to_string(sandbox.dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("server log (last lines):");
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
        drop(sandbox);
        bail!("the benchmark failed ({status})");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Proportional set size: shared pages (the shims all map the same binary) count once in total.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct ServerProc(Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn inside(dir: PathBuf, args: Args) -> anyhow::Result<()> {
    let cgroup_root = args.cgroup_root.clone().context("--cgroup-root")?;
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("server.log"))?;
    let server = ServerProc(
        Command::new(skiff_bin())
            .args(["server", "--listen", "127.0.0.1:0", "--node-name", "bench", "--kubelet-port", "0"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--cgroup-root")
            .arg(&cgroup_root)
            .arg("--log-root")
            .arg(dir.join("logs"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", skiff_bin().display()))?,
    );
    let http = reqwest::Client::new();
    let kubeconfig = data.join("kubeconfig.yaml");
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if Instant::now() > deadline {
            bail!("the server did not start; see {}", dir.join("server.log").display());
        }
        if let Some(url) = std::fs::read_to_string(&kubeconfig)
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.trim().strip_prefix("server:").map(|s| s.trim().to_string())))
        {
            if http.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break url;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let layout = skiff_e2e::image_fixture::busybox_layout(&dir.join("layout"), "docker.io/library/busybox:1.36");
    let out = Command::new(skiff_bin()).args(["image", "import"]).arg(&layout).arg("--data-dir").arg(&data).output()?;
    if !out.status.success() {
        bail!("skiff image import: {}", String::from_utf8_lossy(&out.stderr));
    }
    wait_until(&http, &format!("{url}/api/v1/nodes/bench"), Duration::from_secs(60), |node| {
        node["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
    .await
    .context("the node never became Ready")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_kib = rss_kib(server.0.id());
    let idle_pss_kib = pss_kib(server.0.id());

    // Warm-up: the first pod also sets up the bridge.
    run_pod(&http, &url, "warmup").await?;
    let mut latencies = Vec::with_capacity(args.pods);
    for i in 0..args.pods {
        latencies.push(run_pod(&http, &url, &format!("lat-{i}")).await?);
    }
    latencies.sort();

    // The same bundle, created and started by libcontainer alone (a single-threaded child:
    // libcontainer forks the calling process).
    let first: Value = http.get(format!("{url}/api/v1/namespaces/default/pods/lat-0")).send().await?.json().await?;
    let uid = first["metadata"]["uid"].as_str().context("pod uid")?;
    let bundles = data.join("agent").join("pods").join(uid).join("bundles");
    let bundle = std::fs::read_dir(&bundles)
        .with_context(|| format!("reading {}", bundles.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("config.json").exists())
        .context("no bundle of pod lat-0")?;
    let out = Command::new(std::env::current_exe()?)
        .arg("--bare")
        .arg(&bundle)
        .arg("--pods")
        .arg(args.pods.to_string())
        .arg("--cgroup-root")
        .arg(&cgroup_root)
        .output()?;
    if !out.status.success() {
        bail!("bare runs failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut bare: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .map(Duration::from_micros)
        .collect();
    bare.sort();

    // Density: every pod is still running; the node's own cost per pod is the server's growth
    // plus the shims.
    let running: Value = http.get(format!("{url}/api/v1/namespaces/default/pods")).send().await?.json().await?;
    let running = running["items"].as_array().map(|a| a.iter().filter(|p| p["status"]["phase"] == "Running").count()).unwrap_or(0);
    let server_kib = rss_kib(server.0.id());
    let idle_pss = idle_pss_kib;
    let server_pss = pss_kib(server.0.id());
    let shims_pss: u64 = shim_pids(&data).into_iter().map(pss_kib).sum();

    println!("skiff node benchmark ({} pods, image present, {})", args.pods, skiff_bin().display());
    println!("  idle RSS of skiff server with its node, no pods: {:.1} MB", idle_kib as f64 / 1024.0);
    println!(
        "  pod create → Running:        p50 {}  p99 {}  max {}",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "  bare libcontainer create+start of the same bundle: p50 {}  p99 {}",
        ms(percentile(&bare, 0.5)),
        ms(percentile(&bare, 0.99))
    );
    if let Some(b) = Some(percentile(&bare, 0.5)).filter(|b| !b.is_zero()) {
        println!("  ratio p50 pod / bare: {:.1}×", percentile(&latencies, 0.5).as_secs_f64() / b.as_secs_f64());
    }
    println!("  pods running at once: {running}");
    println!(
        "  memory (RSS): server {:.1} MB, {:.1} MB over idle",
        server_kib as f64 / 1024.0,
        server_kib.saturating_sub(idle_kib) as f64 / 1024.0
    );
    println!(
        "  memory (PSS, shared pages split): server +{:.1} MB over idle, shims {:.1} MB → {:.2} MB per pod (agent + shim)",
        server_pss.saturating_sub(idle_pss) as f64 / 1024.0,
        shims_pss as f64 / 1024.0,
        (server_pss.saturating_sub(idle_pss) + shims_pss) as f64 / 1024.0 / running.max(1) as f64
    );

    // Tear down through the API so the node removes everything itself.
    http.delete(format!("{url}/api/v1/namespaces/default/pods"))
        .json(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}))
        .send()
        .await?;
    wait_until(&http, &format!("{url}/api/v1/namespaces/default/pods"), Duration::from_secs(180), |list| {
        list["items"].as_array().is_some_and(Vec::is_empty)
    })
    .await
    .context("pods were not removed")?;
    drop(server);
    Ok(())
}

/// Creates a pod bound to the node and returns the time until its container runs, observed
/// through a watch.
async fn run_pod(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<Duration> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": "bench",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
        },
    });
    let started = Instant::now();
    let created = http.post(format!("{url}/api/v1/namespaces/default/pods")).json(&pod).send().await?;
    if !created.status().is_success() {
        bail!("creating pod {name}: {}", created.text().await.unwrap_or_default());
    }
    let created: Value = created.json().await?;
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let watch = http
        .get(format!(
            "{url}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3D{name}"
        ))
        .send()
        .await?;
    let mut body = watch.bytes_stream();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .with_context(|| format!("pod {name} did not run within 60 s"))?;
        let Some(chunk) = chunk else { bail!("the watch of pod {name} ended") };
        buf.extend_from_slice(&chunk?);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else { continue };
            let running = event["object"]["status"]["containerStatuses"][0]["state"]["running"].is_object();
            if running {
                return Ok(started.elapsed());
            }
        }
    }
}

async fn wait_until(http: &reqwest::Client, url: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(url).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if ok(&v) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting on {url}")
}

/// The shims of this node: their PIDs are in each pod's state file.
fn shim_pids(data: &Path) -> Vec<u32> {
    let pods = data.join("agent").join("pods");
    std::fs::read_dir(pods)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|pod| {
            let state = std::fs::read_to_string(pod.path().join("shim-state.json")).ok()?;
            let pid = serde_json::from_str::<Value>(&state).ok()?["shim_pid"].as_u64()?;
            u32::try_from(pid).ok()
        })
        .collect()
}

/// Creates and starts the bundle's container `--pods` times with libcontainer alone, printing
/// each create+start time in microseconds, and removes each one afterwards.
fn bare_runs(bundle: &Path, args: &Args) -> anyhow::Result<()> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    let cgroup_root = args.cgroup_root.clone().context("--cgroup-root")?;
    let base: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    let work = tempfile::Builder::new().prefix("skiff-bench-bare-").tempdir_in("/var/tmp")?;
    let state_root = work.path().join("state");
    std::fs::create_dir_all(&state_root)?;
    for i in 0..args.pods {
        let id = format!("bare-{i}");
        let dir = work.path().join(&id);
        std::fs::create_dir_all(&dir)?;
        let mut spec = base.clone();
        spec["linux"]["cgroupsPath"] = json!(format!("/{cgroup_root}/bare/{id}"));
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&spec)?)?;
        let null = || std::fs::OpenOptions::new().read(true).write(true).open("/dev/null");
        let started = Instant::now();
        let mut container = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(&state_root)?
            .with_stdin(null()?)
            .with_stdout(null()?)
            .with_stderr(null()?)
            .as_init(&dir)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .with_context(|| format!("creating {id}"))?;
        container.start().with_context(|| format!("starting {id}"))?;
        let took = started.elapsed();
        println!("{}", took.as_micros());
        container.kill(libcontainer::signal::Signal::try_from(9)?, true).ok();
        // Reap the init process (we are its parent) before deleting.
        let _ = nix::sys::wait::waitpid(None, None);
        container.delete(true).with_context(|| format!("deleting {id}"))?;
    }
    Ok(())
}
