//! Cluster DNS benchmark (not a test): queries/s and latency for a Service name. An
//! in-process API server (memory store) holds one ClusterIP Service among `--services`
//! others; the DNS server answers on 127.0.0.1 and `--clients` concurrent clients, each with
//! its own UDP socket, ask for `web.default.svc.cluster.local` A back to back for
//! `--seconds`. Loopback only.
//!
//!     cargo run -p skiff-bench --bin dns -- --clients 16 --seconds 5

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Concurrent clients, each one query in flight.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long to measure.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Extra Services in the index besides the queried one.
    #[arg(long, default_value_t = 1000)]
    services: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shutdown = CancellationToken::new();
    let store: Arc<dyn store::Store> = Arc::new(store::memory::MemoryStore::new());
    let server = apiserver::ApiServer::bind(
        apiserver::ApiServerConfig {
            listen: "127.0.0.1:0".parse()?,
            watch_cache_events: 100_000,
        },
        store,
        shutdown.clone(),
    )
    .await
    .context("bind the API server")?;
    let url = format!("http://{}", server.local_addr()?);
    tokio::spawn(server.serve());
    let client = kube::Client::try_from(kube::Config::new(url.parse()?))?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    for attempt in 0.. {
        match services.list(&Default::default()).await {
            Ok(_) => break,
            Err(_) if attempt < 200 => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(error) => return Err(error).context("API server never became ready"),
        }
    }

    let started = Instant::now();
    for i in 0..args.services {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("filler-{i}"), "namespace": "default"},
            "spec": {"clusterIP": format!("10.43.{}.{}", 100 + i / 250, 1 + i % 250),
                     "ports": [{"name": "http", "port": 80}]}
        }))?;
        services.create(&PostParams::default(), &service).await?;
    }
    let web: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.43.0.80", "ports": [{"name": "http", "port": 80}]}
    }))?;
    services.create(&PostParams::default(), &web).await?;
    println!(
        "created {} Services in {:.2?}",
        args.services + 1,
        started.elapsed()
    );

    let dns = dns::DnsServer::bind(
        client,
        dns::DnsConfig {
            listen: vec!["127.0.0.1:0".parse()?],
            upstreams: vec!["127.0.0.1:9".parse()?],
            ..dns::DnsConfig::default()
        },
        shutdown.clone(),
    )
    .await?;
    let addr = dns.local_addrs()[0];
    let metrics = dns.metrics();
    tokio::spawn(dns.serve());

    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(
        Name::from_ascii("web.default.svc.cluster.local.")?,
        RecordType::A,
    ));
    let query = query.to_vec()?;

    // Wait for the index to hold the Service.
    let probe = UdpSocket::bind("127.0.0.1:0").await?;
    probe.connect(addr).await?;
    let synced = Instant::now();
    loop {
        if exchange(&probe, &query).await?.answers.len() == 1 {
            break;
        }
        if synced.elapsed() > Duration::from_secs(30) {
            bail!("the DNS index never showed web.default");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "DNS answered the Service {:.2?} after start",
        synced.elapsed()
    );

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let query = query.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(addr, query, deadline).await
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    for task in tasks {
        let (mut own, own_errors) = task.await??;
        latencies.append(&mut own);
        errors += own_errors;
    }
    shutdown.cancel();
    latencies.sort_unstable();
    let count = latencies.len();
    if count == 0 {
        bail!("no query completed");
    }
    let pct = |p: f64| latencies[((count as f64 * p) as usize).min(count - 1)];
    println!(
        "{} clients, {} s: {} queries, {:.0} queries/s, p50 {:.0?} p99 {:.0?} max {:.0?}, {} errors",
        args.clients,
        args.seconds,
        count,
        count as f64 / args.seconds as f64,
        pct(0.50),
        pct(0.99),
        latencies[count - 1],
        errors
    );
    println!("server counted {} A queries", metrics.requests("A"));
    Ok(())
}

async fn exchange(socket: &UdpSocket, query: &[u8]) -> anyhow::Result<Message> {
    socket.send(query).await?;
    let mut buffer = [0u8; 4096];
    let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer))
        .await
        .context("DNS answer timed out")??;
    Ok(Message::from_vec(&buffer[..len])?)
}

/// One client: one query in flight, back to back, until the deadline.
async fn client_loop(
    addr: SocketAddr,
    query: Vec<u8>,
    deadline: Instant,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(addr).await?;
    let mut latencies = Vec::new();
    let mut errors = 0;
    while Instant::now() < deadline {
        let sent = Instant::now();
        match exchange(&socket, &query).await {
            Ok(answer) if answer.answers.len() == 1 => latencies.push(sent.elapsed()),
            _ => errors += 1,
        }
    }
    Ok((latencies, errors))
}
