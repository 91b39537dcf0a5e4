//! Service proxy rule-programming benchmark (not a test): time to program N Services × M
//! endpoints into an empty `ip skiff` table, then time single endpoint changes at that size.
//! Goals from issue 5: < 1 s and < 50 ms at 10,000 × 2 (upstream iptables mode: 5–13 s).
//!
//!     cargo build -p skiff-bench --bin proxy && sudo ./target/debug/proxy
//!
//! Everything runs in a network namespace the benchmark creates (`skiff-test-<pid>-proxy`),
//! deleted at the end, also after a failure; the root namespace's nftables are never touched.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use net::netns;
use net::proxy::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, Ipv4Cidr, NftCli, NodeConfig, Protocol,
    Service, ServiceName, ServicePort, ServiceProxy, SyncKind,
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    #[arg(long, default_value_t = 2)]
    endpoints: u32,
    /// Single endpoint changes timed after the full sync.
    #[arg(long, default_value_t = 20)]
    changes: u32,
}

/// Deletes the benchmark's namespace however the run ends.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.0) {
            eprintln!("cleanup: deleting netns {}: {e}", self.0);
        }
    }
}

fn ip(base: [u8; 2], n: u32) -> Ipv4Addr {
    Ipv4Addr::new(base[0], base[1], (n >> 8) as u8, n as u8)
}

fn slice(service: &ServiceName, first_endpoint: u32, count: u32) -> EndpointSlice {
    EndpointSlice {
        service: service.clone(),
        ports: vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints: (0..count)
            .map(|e| Endpoint {
                addresses: vec![ip([10, 42], first_endpoint + e)],
                ready: true,
                serving: true,
                terminating: false,
                node_name: Some("node-a".into()),
            })
            .collect(),
    }
}

fn state(args: &Args) -> ClusterState {
    let mut st = ClusterState::default();
    for i in 0..args.services {
        let name = ServiceName::new("bench", format!("svc-{i}"));
        st.services.insert(
            name.clone(),
            Service {
                cluster_ips: vec![ip([10, 43], i + 1)],
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: None,
                }],
                ..Service::default()
            },
        );
        st.slices.insert(
            ("bench".into(), format!("svc-{i}-abcde")),
            slice(&name, i * args.endpoints, args.endpoints),
        );
    }
    st
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.services == 0 || args.endpoints == 0 || args.services * args.endpoints >= 65_000 {
        bail!(
            "--services × --endpoints must be between 1 and 65,000 (addresses come from 10.42/16)"
        );
    }
    let name = format!("skiff-test-{}-proxy", std::process::id());
    let path =
        netns::create(&name).with_context(|| format!("creating netns {name} (run as root)"))?;
    let _guard = NetnsGuard(name.clone());

    let node = NodeConfig::new(
        "node-a",
        vec![Ipv4Addr::new(192, 168, 77, 1)],
        vec!["10.42.0.0/16".parse::<Ipv4Cidr>()?],
    )?;
    let mut proxy = ServiceProxy::new(node, NftCli::in_netns(&path));
    let st = state(&args);

    let started = Instant::now();
    let ruleset = net::proxy::rules::build(proxy.node(), &st);
    let build_time = started.elapsed();
    println!(
        "ruleset for {} Services × {} endpoints: {} chains, {} rules, {} elements, built in {:.1} ms",
        args.services,
        args.endpoints,
        ruleset.chains.len(),
        ruleset.rule_count(),
        ruleset.element_count(),
        build_time.as_secs_f64() * 1e3
    );

    proxy.replace_state(st);
    let report = proxy.sync().context("full sync")?;
    if report.kind != SyncKind::Full {
        bail!("first sync was {:?}, not full", report.kind);
    }
    println!(
        "full sync from scratch: {:.0} ms ({} commands)",
        report.duration.as_secs_f64() * 1e3,
        report.commands
    );

    let mut times = Vec::new();
    for c in 0..args.changes {
        // Replace the second endpoint of one Service with a fresh address.
        let i = (c * 7919) % args.services;
        let service = ServiceName::new("bench", format!("svc-{i}"));
        let mut s = slice(&service, i * args.endpoints, args.endpoints);
        if let Some(last) = s.endpoints.last_mut() {
            last.addresses = vec![Ipv4Addr::new(10, 44, (c >> 8) as u8, c as u8)];
        }
        proxy.upsert_endpoint_slice("bench", &format!("svc-{i}-abcde"), s);
        let report = proxy.sync().context("partial sync")?;
        if report.kind != SyncKind::Partial {
            bail!("endpoint change synced as {:?}, not partial", report.kind);
        }
        times.push(report.duration);
    }
    times.sort();
    if !times.is_empty() {
        println!(
            "one endpoint change ({} runs): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            times.len(),
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.9).as_secs_f64() * 1e3,
            percentile(&times, 1.0).as_secs_f64() * 1e3,
        );
    }

    let started = Instant::now();
    let report = proxy.full_sync().context("resync")?;
    println!(
        "full resync over the live table: {:.0} ms (listing + flush + refill, {} commands; {:.0} ms wall)",
        report.duration.as_secs_f64() * 1e3,
        report.commands,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
