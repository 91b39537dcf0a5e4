//! API server benchmark (not a test): start-up time to `/readyz`, idle RSS, ConfigMap
//! create/update/delete latency at a fixed 100 requests/s, and watch fan-out with 1 vs 1,000
//! watchers on the same prefix.
//!
//!     cargo build --release -p skiff && cargo run --release -p skiff-bench --bin api
//!
//! The server is `target/release/skiff` (or `$SKIFF_BIN`) on 127.0.0.1 with a temp data dir.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Seconds of the fixed-rate CRUD phase.
    #[arg(long, default_value_t = 20)]
    crud_seconds: u64,
    /// Requests per second in the CRUD phase.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Watchers in the fan-out phase.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Writes observed by the watchers in the fan-out phase.
    #[arg(long, default_value_t = 200)]
    events: usize,
}

struct ServerProc {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
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
    std::env::var("SKIFF_BIN").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/skiff")
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Starts the server and returns it with the time from spawn to `/readyz` = 200.
async fn start(client: &reqwest::Client) -> anyhow::Result<(ServerProc, Duration)> {
    let dir = tempfile::tempdir()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let bin = skiff_bin();
    if !bin.exists() {
        bail!("{} is missing: run `cargo build --release -p skiff` first", bin.display());
    }
    let t0 = Instant::now();
    let child = Command::new(&bin)
        // The control plane alone: the built-in node changes the network and runs only inside a
        // namespace of its own (see tests/tests/node.rs).
        .args(["server", "--disable-agent", "--listen", &format!("127.0.0.1:{port}"), "--log-level", "warn", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn skiff")?;
    let url = format!("http://127.0.0.1:{port}");
    let proc = ServerProc { child, _dir: dir, url: url.clone() };
    loop {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
            if r.status().is_success() {
                return Ok((proc, t0.elapsed()));
            }
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("server not ready after 20 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;

    // 1. Start-up and idle footprint.
    let mut starts = Vec::new();
    for _ in 0..5 {
        let (s, took) = start(&client).await?;
        starts.push(took);
        drop(s);
    }
    starts.sort();
    let (server, _) = start(&client).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(server.child.id());
    println!("start to /readyz OK: median {} (min {}, max {}) over 5 starts", ms(starts[2]), ms(starts[0]), ms(starts[4]));
    println!("idle RSS: {:.1} MB", idle as f64 / 1024.0);

    // 2. ConfigMap create/update/delete at a fixed rate (open loop: a slow answer does not slow
    //    the schedule).
    let cm_url = format!("{}/api/v1/namespaces/default/configmaps", server.url);
    let total = (args.crud_seconds * args.rate) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    // Each name cycles create → update → delete on three consecutive ticks, in one task so the
    // three never race; an op whose tick passed while the previous one ran starts at once.
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total / 3 + 1);
    for n in 0..total.div_ceil(3) {
        let client = client.clone();
        let cm_url = cm_url.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("bench-{n}");
            let mut out = Vec::with_capacity(3);
            for op in 0..3 {
                let i = n * 3 + op;
                if i >= total {
                    break;
                }
                tokio::time::sleep_until(t0 + interval * i as u32).await;
                let t = Instant::now();
                let r = match op {
                    0 => client.post(&cm_url).json(&json!({"metadata": {"name": name}, "data": {"v": "0"}})).send().await,
                    1 => {
                        client
                            .patch(format!("{cm_url}/{name}"))
                            .header("Content-Type", "application/merge-patch+json")
                            .body(r#"{"data":{"v":"1"}}"#)
                            .send()
                            .await
                    }
                    _ => client.delete(format!("{cm_url}/{name}")).send().await,
                };
                let ok = matches!(&r, Ok(resp) if resp.status().is_success());
                out.push((op, t.elapsed(), ok));
            }
            out
        }));
    }
    let mut lat: [Vec<Duration>; 3] = [vec![], vec![], vec![]];
    let mut failures = 0;
    for t in tasks {
        for (op, d, ok) in t.await? {
            if !ok {
                failures += 1;
            }
            lat[op].push(d);
        }
    }
    let mut all: Vec<Duration> = lat.iter().flatten().copied().collect();
    all.sort();
    println!("CRUD at {} req/s for {} s ({} requests, {failures} failed):", args.rate, args.crud_seconds, total);
    for (i, name) in ["create", "update", "delete"].iter().enumerate() {
        lat[i].sort();
        println!("  {name:<7} p50 {}  p99 {}", ms(percentile(&lat[i], 0.5)), ms(percentile(&lat[i], 0.99)));
    }
    println!("  all     p50 {}  p99 {}", ms(percentile(&all, 0.5)), ms(percentile(&all, 0.99)));

    // 3. Watch fan-out: N watchers on the same prefix, then `events` writes.
    for watchers in [1usize, args.watchers] {
        let ns_url = format!("{}/api/v1/namespaces/default/configmaps", server.url);
        let received = Arc::new(AtomicUsize::new(0));
        let rss_before = rss_kib(server.child.id());
        let start_rv = {
            let v: serde_json::Value = client.get(&ns_url).send().await?.json().await?;
            v["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string()
        };
        let mut handles = Vec::new();
        for _ in 0..watchers {
            let client = reqwest::Client::new();
            let url = format!("{ns_url}?watch=1&resourceVersion={start_rv}&labelSelector=fan%3Dout");
            let received = received.clone();
            let want = args.events;
            handles.push(tokio::spawn(async move {
                let Ok(resp) = client.get(url).send().await else { return };
                let mut stream = resp.bytes_stream();
                let mut got = 0;
                while let Some(Ok(chunk)) = stream.next().await {
                    let n = chunk.iter().filter(|b| **b == b'\n').count();
                    got += n;
                    received.fetch_add(n, Ordering::Relaxed);
                    if got >= want {
                        return;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500 + watchers as u64)).await;
        let rss_watching = rss_kib(server.child.id());
        let t = Instant::now();
        for i in 0..args.events {
            client
                .post(&ns_url)
                .json(&json!({"metadata": {"name": format!("fan-{watchers}-{i}"), "labels": {"fan": "out"}}}))
                .send()
                .await?;
        }
        let expected = watchers * args.events;
        while received.load(Ordering::Relaxed) < expected && t.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = t.elapsed();
        let got = received.load(Ordering::Relaxed);
        println!(
            "watch fan-out, {watchers} watcher(s): {got}/{expected} events delivered in {} ({:.0} events/s); server RSS {:.1} MB → {:.1} MB with watchers ({:.1} KB per watcher)",
            ms(took),
            got as f64 / took.as_secs_f64(),
            rss_before as f64 / 1024.0,
            rss_watching as f64 / 1024.0,
            (rss_watching.saturating_sub(rss_before)) as f64 / watchers as f64,
        );
        for h in handles {
            h.abort();
        }
        // Clean the fan-out objects so the next round starts from the same state.
        client.delete(format!("{ns_url}?labelSelector=fan%3Dout")).send().await?;
    }
    Ok(())
}
