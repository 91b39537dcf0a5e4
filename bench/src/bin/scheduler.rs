//! Scheduler benchmark (not a test): 5,000 registered fake nodes (Ready, with allocatable) and
//! 10,000 pending pods created concurrently; measures binds per second end to end through the
//! API (from the first pod create until every pod is seen bound on a watch) and the memory.
//!
//!     cargo build --release -p skiff -p skiff-bench && target/release/scheduler
//!
//! By default it measures `skiff server --disable-agent` with its built-in scheduler. With
//! `--in-process` the server's own scheduler is expected to be absent or idle and this process
//! runs `scheduler::run` against it instead (its RSS is then reported separately).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Fake nodes to register.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pending pods to create.
    #[arg(long, default_value_t = 10000)]
    pods: usize,
    /// Concurrent create requests.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Run the scheduler in this process instead of relying on the server's built-in one.
    #[arg(long)]
    in_process: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

struct ServerProc {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skiff_bin() -> PathBuf {
    std::env::var("SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/skiff")
        })
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn start(client: &reqwest::Client) -> anyhow::Result<ServerProc> {
    let dir = tempfile::tempdir()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let bin = skiff_bin();
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p skiff` first",
            bin.display()
        );
    }
    let child = Command::new(&bin)
        .args([
            "server",
            "--disable-agent",
            // A /24 per node for 5,000 nodes needs a /11; the default /16 holds 256.
            "--cluster-cidr",
            "10.0.0.0/11",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn skiff")?;
    let url = format!("http://127.0.0.1:{port}");
    let proc = ServerProc {
        child,
        _dir: dir,
        url: url.clone(),
    };
    let t0 = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
            if r.status().is_success() {
                return Ok(proc);
            }
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("server not ready after 20 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn node_body(i: usize) -> Value {
    let name = format!("node-{i}");
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)
        }},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "bench"}]
        }
    })
}

fn pod_body(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    })
}

/// Registers a node; sets its status when the server drops status on create.
async fn register_node(client: &reqwest::Client, base: &str, i: usize) -> anyhow::Result<()> {
    let body = node_body(i);
    let r = client
        .post(format!("{base}/api/v1/nodes"))
        .json(&body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("create node-{i}: {}", r.status());
    }
    let created: Value = r.json().await?;
    if created.pointer("/status/allocatable").is_none() {
        let mut with_status = created.clone();
        with_status["status"] = body["status"].clone();
        let r = client
            .put(format!("{base}/api/v1/nodes/node-{i}/status"))
            .json(&with_status)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("node-{i} status: {}", r.status());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let server = start(&client).await?;
    let base = server.url.clone();
    let server_pid = server.child.id().to_string();

    let cancel = tokio_util::sync::CancellationToken::new();
    if args.in_process {
        let config = kube::Config::new(base.parse()?);
        let kube_client = kube::Client::try_from(config)?;
        let ctx = controllers::Context {
            client: kube_client,
            config: controllers::ControllersConfig::default(),
            shutdown: cancel.clone(),
        };
        let c = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = scheduler::run(ctx, c).await {
                eprintln!("in-process scheduler failed: {e}");
            }
        });
    }

    // 1. Nodes.
    let t = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.nodes)
        .map(|i| {
            let client = client.clone();
            let base = base.clone();
            async move { register_node(&client, &base, i).await }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    println!(
        "registered {} nodes in {:.2} s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );
    let rss_nodes = rss_kib(&server_pid);

    // 2. Watch bound pods from now on.
    let list: Value = client
        .get(format!("{base}/api/v1/namespaces/default/pods?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_string();
    let watch = client
        .get(format!("{base}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}&fieldSelector=spec.nodeName%21%3D"))
        .send()
        .await?;
    if !watch.status().is_success() {
        bail!("watch: {}", watch.status());
    }
    let total = args.pods;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
    let watcher = tokio::spawn(async move {
        let mut bound: HashSet<String> = HashSet::with_capacity(total);
        let mut buf: Vec<u8> = Vec::new();
        let mut stream = watch.bytes_stream();
        let mut done_tx = Some(done_tx);
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let node = ev
                    .pointer("/object/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !node.is_empty() {
                    if let Some(name) = ev.pointer("/object/metadata/name").and_then(Value::as_str)
                    {
                        bound.insert(name.to_string());
                    }
                }
                if bound.len() >= total {
                    if let Some(tx) = done_tx.take() {
                        let _ = tx.send(Instant::now());
                    }
                    return bound.len();
                }
            }
        }
        bound.len()
    });

    // 3. Pods, concurrently; the clock starts with the first create.
    let t0 = Instant::now();
    let created: Vec<bool> = futures::stream::iter(0..args.pods)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/api/v1/namespaces/default/pods");
            async move { matches!(client.post(url).json(&pod_body(i)).send().await, Ok(r) if r.status().is_success()) }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let create_time = t0.elapsed();
    let failed = created.iter().filter(|ok| !**ok).count();
    println!(
        "created {} pods in {:.2} s ({:.0} creates/s, {failed} failed)",
        args.pods,
        create_time.as_secs_f64(),
        args.pods as f64 / create_time.as_secs_f64()
    );

    let finished = tokio::time::timeout(Duration::from_secs(args.timeout), done_rx).await;
    let rss_end = rss_kib(&server_pid);
    match finished {
        Ok(Ok(at)) => {
            let elapsed = at - t0;
            println!(
                "all {} pods bound {:.2} s after the first create: {:.0} binds/s end to end (last bind {:.2} s after the last create)",
                args.pods,
                elapsed.as_secs_f64(),
                args.pods as f64 / elapsed.as_secs_f64(),
                (elapsed.saturating_sub(create_time)).as_secs_f64()
            );
        }
        _ => {
            watcher.abort();
            bail!("not every pod was bound within {} s", args.timeout);
        }
    }
    println!(
        "server RSS: {:.1} MB after nodes, {:.1} MB with {} bound pods",
        rss_nodes as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        args.pods
    );
    if args.in_process {
        println!(
            "bench process RSS (in-process scheduler + client): {:.1} MB",
            rss_kib("self") as f64 / 1024.0
        );
    }
    cancel.cancel();
    Ok(())
}
