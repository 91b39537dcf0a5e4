//! Store write benchmark: the SQLite backend against a single local etcd, same workload.
//!
//! For each backend and each writer count (1 and 64), writers create distinct keys shaped like
//! Kubernetes objects (`/registry/pods/bench/<writer>-<n>`, ~1 KiB JSON) for a fixed time; the
//! table reports acknowledged writes per second and p50/p99 latency. Both backends fsync before
//! acknowledging, and both keep their data in one directory on the same disk.
//!
//! Run: `cargo run --release -p skiff-bench --bin store [-- --seconds 5]`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use store::conformance::EtcdServer;
use store::{Backend, Bytes, Store, StoreConfig};

#[derive(Parser)]
#[command(about = "Benchmark store writes: SQLite backend vs a local etcd")]
struct Args {
    /// Seconds each (backend, writers) case runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Directory for both backends' data (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

const WRITER_COUNTS: [usize; 2] = [1, 64];

struct Outcome {
    backend: &'static str,
    writers: usize,
    writes: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let duration = Duration::from_secs(args.seconds);
    let value = Bytes::from(object_json());
    let mut outcomes = Vec::new();

    for writers in WRITER_COUNTS {
        let path = dir.join(format!("sqlite-{writers}/skiff.db"));
        let store = store::open(&Backend::Sqlite { path }, &StoreConfig::default()).await?;
        outcomes.push(run("sqlite", store, writers, duration, value.clone()).await?);
    }
    let etcd_dir = dir.join("etcd");
    std::fs::create_dir_all(&etcd_dir).context("creating the etcd directory")?;
    let server = EtcdServer::start(&args.etcd, &etcd_dir)
        .await
        .context("starting etcd")?;
    for writers in WRITER_COUNTS {
        let backend = Backend::Etcd {
            endpoints: vec![server.endpoint().to_string()],
        };
        let store = store::open(&backend, &StoreConfig::default()).await?;
        outcomes.push(run("etcd", store, writers, duration, value.clone()).await?);
    }
    drop(server);

    println!(
        "{:<8} {:>7} {:>8} {:>10} {:>8} {:>8}",
        "backend", "writers", "writes", "writes/s", "p50 ms", "p99 ms"
    );
    for outcome in &outcomes {
        println!(
            "{:<8} {:>7} {:>8} {:>10.0} {:>8.2} {:>8.2}",
            outcome.backend,
            outcome.writers,
            outcome.writes,
            outcome.per_second,
            outcome.p50.as_secs_f64() * 1000.0,
            outcome.p99.as_secs_f64() * 1000.0,
        );
    }
    for writers in WRITER_COUNTS {
        let rate = |backend: &str| {
            outcomes
                .iter()
                .find(|o| o.backend == backend && o.writers == writers)
                .map(|o| o.per_second)
        };
        if let (Some(sqlite), Some(etcd)) = (rate("sqlite"), rate("etcd")) {
            println!(
                "sqlite/etcd throughput with {writers} writer(s): {:.1}x",
                sqlite / etcd.max(f64::MIN_POSITIVE)
            );
        }
    }
    Ok(())
}

/// Runs `writers` concurrent creators for `duration` and measures every acknowledged write.
async fn run(
    backend: &'static str,
    store: Arc<dyn Store>,
    writers: usize,
    duration: Duration,
    value: Bytes,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("/registry/pods/bench/{writers}-{writer}-{n}");
                let sent = Instant::now();
                store.create(&key, value.clone()).await?;
                latencies.push(sent.elapsed());
                n += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("writer task")??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies.get(index).copied().unwrap_or_default()
    };
    Ok(Outcome {
        backend,
        writers,
        writes: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(0.50),
        p99: percentile(0.99),
    })
}

/// A pod-sized JSON object (~1 KiB), like what the API server stores.
fn object_json() -> Vec<u8> {
    let mut json = String::from(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bench","namespace":"bench","labels":{"app":"bench"}},"spec":{"containers":[{"name":"app","image":"busybox:1.36","command":["sleep","3600"]}]},"status":{"phase":"Pending","conditions":["#,
    );
    while json.len() < 1000 {
        json.push_str(r#"{"type":"Ready","status":"False"},"#);
    }
    json.push_str(r#"{"type":"Scheduled","status":"True"}]}}"#);
    json.into_bytes()
}
