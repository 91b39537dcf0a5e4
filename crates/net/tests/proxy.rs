//! The service proxy against the real kernel: `nft` programs Skiff's table inside a "node"
//! namespace this test creates, and real TCP connections go through it. Runs as root; skipped
//! otherwise. Topology (all in namespaces the test creates and deletes, routed veths):
//!
//!     client 10.42.0.4 ─┐                ┌─ ep1 10.42.0.2:8080 (node "node-a", local)
//!                        ├─ node 10.42.0.1 ┤
//!     ext 192.168.77.2 ─┘  192.168.77.1  └─ ep2 10.42.0.3:8080 (node "node-b")
//!
//! Each endpoint answers every connection with its name and the peer address it saw.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use net::netns;
use net::proxy::{
    Endpoint, EndpointPort, EndpointSlice, Ipv4Cidr, NftCli, NodeConfig, Protocol, Service,
    ServiceName, ServicePort, ServiceProxy, SyncKind,
};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Deletes the test's namespaces and stops its responders however the test ends.
struct Cleanup {
    namespaces: Vec<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for name in &self.namespaces {
            if let Err(e) = netns::delete(name) {
                eprintln!("cleanup: deleting netns {name}: {e}");
            }
        }
    }
}

fn sh(ns: &Path, args: &[&str]) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg("--")
        .args(args)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "{args:?} in {}: {}",
        ns.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects a pod-like namespace to the node with a routed veth: the node side holds
/// 10.42.0.1/32, the pod routes everything through it.
fn attach_pod(node: &Path, pod_name: &str, pod: &Path, veth: &str, ip: &str) {
    sh(
        node,
        &[
            "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod_name,
        ],
    );
    sh(node, &["ip", "link", "set", veth, "up"]);
    sh(node, &["ip", "addr", "add", "10.42.0.1/32", "dev", veth]);
    sh(
        node,
        &["ip", "route", "add", &format!("{ip}/32"), "dev", veth],
    );
    sh(pod, &["ip", "link", "set", "eth0", "up"]);
    sh(
        pod,
        &["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"],
    );
    sh(pod, &["ip", "route", "add", "10.42.0.1", "dev", "eth0"]);
    sh(
        pod,
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "10.42.0.1",
            "dev",
            "eth0",
        ],
    );
}

/// A responder inside `ns`: answers each connection with "<name> <peer ip>".
fn responder(ns: &Path, name: &'static str, addr: &str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let addr: SocketAddr = addr.parse().expect("addr");
    let listener = netns::run_in(ns, || TcpListener::bind(addr))
        .expect("run_in")
        .expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        use std::io::Write;
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut conn, peer)) => {
                    let _ = writeln!(conn, "{name} {}", peer.ip());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    })
}

/// One connection from `ns` to `addr`: the responder's line, or the connect error.
fn request(ns: &Path, addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("addr");
    netns::run_in(ns, move || {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        conn.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        conn.read_to_string(&mut out)?;
        Ok(out.trim().to_string())
    })
    .expect("run_in")
}

/// Who answered `n` requests, by responder name.
fn spread(ns: &Path, addr: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let line = request(ns, addr).unwrap_or_else(|e| panic!("request to {addr}: {e}"));
        let who = line.split(' ').next().unwrap_or_default().to_string();
        *counts.entry(who).or_default() += 1;
    }
    counts
}

fn web() -> ServiceName {
    ServiceName::new("default", "web")
}

fn service(node_port: Option<u16>) -> Service {
    Service {
        cluster_ips: vec![Ipv4Addr::new(10, 43, 0, 10)],
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port,
        }],
        ..Service::default()
    }
}

fn slice(endpoints: &[([u8; 4], bool, &str)]) -> EndpointSlice {
    EndpointSlice {
        service: web(),
        ports: vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints: endpoints
            .iter()
            .map(|(ip, ready, node)| Endpoint {
                addresses: vec![Ipv4Addr::from(*ip)],
                ready: *ready,
                serving: *ready,
                terminating: false,
                node_name: Some(node.to_string()),
            })
            .collect(),
    }
}

fn root_tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const VIP: &str = "10.43.0.10:80";
const NODE_PORT: &str = "192.168.77.1:30080";
const EP1: [u8; 4] = [10, 42, 0, 2];
const EP2: [u8; 4] = [10, 42, 0, 3];

#[test]
fn cluster_ip_node_port_affinity_and_rejects_through_the_kernel() {
    if !is_root() || !net::proxy::nft::nft_available(Path::new("nft")) {
        eprintln!("skipping: needs root and nft");
        return;
    }
    let pid = std::process::id();
    let names: Vec<String> = ["node", "ep1", "ep2", "client", "ext"]
        .iter()
        .map(|t| format!("skiff-test-{pid}-px-{t}"))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut cleanup = Cleanup {
        namespaces: names.clone(),
        stop: stop.clone(),
        threads: Vec::new(),
    };
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| netns::create(n).expect("create netns"))
        .collect();
    let [node, ep1, ep2, client, ext] = [0, 1, 2, 3, 4].map(|i| paths[i].as_path());

    sh(node, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    attach_pod(node, &names[1], ep1, "veth-ep1", "10.42.0.2");
    attach_pod(node, &names[2], ep2, "veth-ep2", "10.42.0.3");
    attach_pod(node, &names[3], client, "veth-client", "10.42.0.4");
    sh(
        node,
        &[
            "ip", "link", "add", "veth-ext", "type", "veth", "peer", "name", "eth0", "netns",
            &names[4],
        ],
    );
    sh(node, &["ip", "link", "set", "veth-ext", "up"]);
    sh(
        node,
        &["ip", "addr", "add", "192.168.77.1/24", "dev", "veth-ext"],
    );
    sh(ext, &["ip", "link", "set", "eth0", "up"]);
    sh(
        ext,
        &["ip", "addr", "add", "192.168.77.2/24", "dev", "eth0"],
    );
    // Like a real node, a default route: a ClusterIP without rules would be routed out there,
    // so the reject has to come from the proxy's filter chains, not from a missing route.
    sh(
        node,
        &["ip", "route", "add", "default", "via", "192.168.77.2"],
    );
    cleanup
        .threads
        .push(responder(ep1, "ep1", "0.0.0.0:8080", stop.clone()));
    cleanup
        .threads
        .push(responder(ep2, "ep2", "0.0.0.0:8080", stop.clone()));

    let node_config = NodeConfig::new(
        "node-a",
        vec![Ipv4Addr::new(192, 168, 77, 1)],
        vec!["10.42.0.0/16".parse::<Ipv4Cidr>().expect("cidr")],
    )
    .expect("node config");
    let mut proxy = ServiceProxy::new(node_config, NftCli::in_netns(node));

    // ClusterIP with two endpoints: both answer, evenly enough.
    proxy.upsert_service(web(), service(Some(30080)));
    proxy.upsert_endpoint_slice(
        "default",
        "web-1",
        slice(&[(EP1, true, "node-a"), (EP2, true, "node-b")]),
    );
    assert_eq!(proxy.sync().expect("first sync").kind, SyncKind::Full);
    let counts = spread(client, VIP, 100);
    assert!(
        counts.get("ep1").copied().unwrap_or(0) >= 25
            && counts.get("ep2").copied().unwrap_or(0) >= 25,
        "uneven spread over 100 connections: {counts:?}"
    );

    // NodePort on the node's address, from outside the pod network: masqueraded, so the
    // endpoint sees the node, not the client.
    for _ in 0..10 {
        let line = request(ext, NODE_PORT).expect("node port");
        assert!(
            line.ends_with(" 10.42.0.1"),
            "NodePort traffic not masqueraded: {line}"
        );
    }

    // Hairpin: an endpoint reaching its own Service through the ClusterIP.
    for _ in 0..10 {
        let line = request(ep1, VIP).expect("hairpin");
        assert!(!line.is_empty());
    }

    // An endpoint goes away: after the partial sync no connection reaches it.
    proxy.upsert_endpoint_slice(
        "default",
        "web-1",
        slice(&[(EP1, true, "node-a"), (EP2, false, "node-b")]),
    );
    assert_eq!(
        proxy.sync().expect("endpoint removal").kind,
        SyncKind::Partial
    );
    assert_eq!(
        spread(client, VIP, 50),
        BTreeMap::from([("ep1".to_string(), 50)])
    );

    // externalTrafficPolicy: Local keeps the client's address and uses only local endpoints.
    proxy.upsert_endpoint_slice(
        "default",
        "web-1",
        slice(&[(EP1, true, "node-a"), (EP2, true, "node-b")]),
    );
    let mut local = service(Some(30080));
    local.external_traffic_local = true;
    proxy.upsert_service(web(), local);
    proxy.sync().expect("eTP Local");
    for _ in 0..20 {
        assert_eq!(
            request(ext, NODE_PORT).expect("local node port"),
            "ep1 192.168.77.2"
        );
    }

    // ClientIP affinity: every connection of the client sticks to the first endpoint chosen.
    let mut sticky = service(Some(30080));
    sticky.session_affinity_seconds = Some(60);
    proxy.upsert_service(web(), sticky);
    proxy.sync().expect("affinity");
    let counts = spread(client, VIP, 30);
    assert_eq!(counts.len(), 1, "affinity did not stick: {counts:?}");

    // No ready endpoints: refused at once, not a timeout — ClusterIP and NodePort.
    proxy.upsert_service(web(), service(Some(30080)));
    proxy.upsert_endpoint_slice("default", "web-1", slice(&[(EP1, false, "node-a")]));
    proxy.sync().expect("no endpoints");
    for (ns, addr) in [(client, VIP), (ext, NODE_PORT)] {
        let started = Instant::now();
        let err = request(ns, addr).expect_err("a Service without endpoints must refuse");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{addr}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{addr}: refusal took {:?}",
            started.elapsed()
        );
    }
    // A port the ClusterIP does not serve is refused too.
    let err = request(client, "10.43.0.10:81").expect_err("unused port");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

    // Endpoints back; then the Service goes away and its chains with it.
    proxy.upsert_endpoint_slice("default", "web-1", slice(&[(EP2, true, "node-b")]));
    proxy.sync().expect("endpoints back");
    assert_eq!(
        spread(client, VIP, 5),
        BTreeMap::from([("ep2".to_string(), 5)])
    );
    proxy.remove_service(&web());
    proxy.sync().expect("service removed");
    let listing = Command::new("nsenter")
        .arg(format!("--net={}", node.display()))
        .args(["--", "nft", "list", "table", "ip", "skiff"])
        .output()
        .expect("nft list");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        !listing.contains("default/web"),
        "leftovers after removal:\n{listing}"
    );
    assert!(listing.contains("chain services"));

    // A full resync over the live table is a no-op for traffic, and cleanup removes the table.
    proxy.upsert_service(web(), service(None));
    proxy.full_sync().expect("resync");
    assert_eq!(
        spread(client, VIP, 5),
        BTreeMap::from([("ep2".to_string(), 5)])
    );
    proxy.cleanup().expect("cleanup");
    let tables = Command::new("nsenter")
        .arg(format!("--net={}", node.display()))
        .args(["--", "nft", "list", "tables"])
        .output()
        .expect("nft list tables");
    assert!(String::from_utf8_lossy(&tables.stdout).trim().is_empty());

    drop(cleanup);
    for name in &names {
        assert!(!netns::exists(name), "netns {name} left behind");
    }
    assert!(
        !root_tables().contains("skiff"),
        "a skiff table in the root namespace"
    );
}
