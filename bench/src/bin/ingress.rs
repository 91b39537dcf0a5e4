//! Ingress proxy benchmark (not a test): requests/s and latency percentiles of the same
//! keep-alive HTTP/1.1 client hitting a backend directly and through Skiff's ingress proxy, in
//! the same run (issue 5: "through the Ingress proxy vs direct").
//!
//!     cargo run -p skiff-bench --bin ingress -- --connections 16 --seconds 5
//!
//! Everything is in-process on 127.0.0.1: an API server on a memory store, a small hyper backend
//! answering "ok", a Service + EndpointSlice + Ingress pointing at it, and the ingress proxy on
//! a free port. The phases alternate (direct, proxy, direct, proxy) so drift on a shared machine
//! shows up rather than favouring one side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Concurrent keep-alive client connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 64)]
    body: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cancel = CancellationToken::new();

    let backend = start_backend(args.body).await?;
    let client = start_api(cancel.clone()).await?;
    create_objects(&client, backend.port()).await?;
    let server = ingress::IngressServer::bind(
        client,
        ingress::IngressConfig {
            http_listen: "127.0.0.1:0".parse()?,
            https_listen: None,
            ..ingress::IngressConfig::default()
        },
    )
    .await?;
    let proxy = server.http_addr();
    let metrics = server.metrics();
    tokio::spawn(server.serve(cancel.clone()));
    wait_for_route(proxy).await?;

    println!(
        "ingress bench: {} connections, {} s per phase, {} B bodies",
        args.connections, args.seconds, args.body
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10}",
        "target", "req/s", "p50 ms", "p99 ms", "errors"
    );
    let phase = Duration::from_secs(args.seconds);
    let mut results = Vec::new();
    for round in 0..2 {
        for (name, addr) in [("direct", backend), ("ingress", proxy)] {
            let r = load(addr, args.connections, phase).await?;
            println!(
                "{:<8} {:>10.0} {:>10.3} {:>10.3} {:>10}   (round {})",
                name,
                r.rps,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.errors,
                round + 1
            );
            results.push((name, r));
        }
    }
    let avg = |which: &str, f: &dyn Fn(&LoadResult) -> f64| {
        let v: Vec<f64> = results
            .iter()
            .filter(|(n, _)| *n == which)
            .map(|(_, r)| f(r))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (d_rps, p_rps) = (avg("direct", &|r| r.rps), avg("ingress", &|r| r.rps));
    let p99 = |r: &LoadResult| r.p99.as_secs_f64() * 1e3;
    let (d_p99, p_p99) = (avg("direct", &p99), avg("ingress", &p99));
    println!(
        "mean: direct {d_rps:.0} req/s p99 {d_p99:.3} ms; ingress {p_rps:.0} req/s p99 {p_p99:.3} ms; \
         ingress/direct throughput {:.0}%, p99 +{:.3} ms",
        100.0 * p_rps / d_rps,
        p_p99 - d_p99
    );
    println!("proxy 200s counted by metrics: {}", metrics.requests(200));
    cancel.cancel();
    Ok(())
}

struct LoadResult {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// `connections` workers, each on one keep-alive connection, sending GETs back to back.
async fn load(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let deadline = Instant::now() + duration;
    let mut workers = Vec::new();
    for _ in 0..connections {
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut sender = None;
            while Instant::now() < deadline {
                if sender.is_none() {
                    sender = connect(addr).await.ok();
                }
                let Some(s) = sender.as_mut() else {
                    errors += 1;
                    continue;
                };
                let request = http::Request::get("/")
                    .header("host", "bench.example.com")
                    .body(Empty::<Bytes>::new())
                    .map_err(anyhow::Error::from);
                let started = Instant::now();
                let outcome = match request {
                    Ok(r) => match s.send_request(r).await {
                        Ok(resp) if resp.status() == 200 => {
                            resp.into_body().collect().await.is_ok()
                        }
                        _ => false,
                    },
                    Err(_) => false,
                };
                if outcome {
                    latencies.push(started.elapsed());
                } else {
                    errors += 1;
                    sender = None;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        latencies.extend(l);
        errors += e;
    }
    if latencies.is_empty() {
        bail!("no request to {addr} succeeded ({errors} errors)");
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Ok(LoadResult {
        rps: latencies.len() as f64 / duration.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    })
}

async fn connect(
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn start_backend(body: usize) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let payload = Bytes::from(vec![b'x'; body]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let payload = payload.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let payload = payload.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(payload)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn start_api(cancel: CancellationToken) -> anyhow::Result<kube::Client> {
    let store: Arc<dyn store::Store> = Arc::new(store::memory::MemoryStore::new());
    let server = apiserver::ApiServer::bind(
        apiserver::ApiServerConfig {
            listen: "127.0.0.1:0".parse()?,
            watch_cache_events: 10_000,
        },
        store,
        cancel,
    )
    .await
    .context("bind the API server")?;
    let url = format!("http://{}", server.local_addr()?);
    tokio::spawn(server.serve());
    let client = kube::Client::try_from(kube::Config::new(url.parse()?))?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for _ in 0..500 {
        if namespaces.get_opt("default").await.ok().flatten().is_some() {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the API server never created the default namespace")
}

async fn create_objects(client: &kube::Client, port: u16) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}
    }))?;
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&pp, &service)
        .await?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "bench-1", "labels": {"kubernetes.io/service-name": "bench"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
    }))?;
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .create(&pp, &slice)
        .await?;
    let ingress: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {"rules": [{"host": "bench.example.com", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "bench", "port": {"number": 80}}}
        }]}}]}
    }))?;
    Api::<Ingress>::namespaced(client.clone(), "default")
        .create(&pp, &ingress)
        .await?;
    Ok(())
}

async fn wait_for_route(proxy: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..500 {
        if let Ok(mut s) = connect(proxy).await {
            let request = http::Request::get("/")
                .header("host", "bench.example.com")
                .body(Empty::<Bytes>::new())?;
            if let Ok(resp) = s.send_request(request).await
                && resp.status() == 200
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the ingress never routed bench.example.com")
}
