//! Component tests: an in-process API server, the cluster DNS on 127.0.0.1:0 (UDP and TCP),
//! and a fake upstream resolver on another loopback port. Queries go through hickory's client.

// The in-process API server harness the controllers' tests use, shared rather than copied.
#[path = "../../controllers/tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use dns::{DnsConfig, DnsMetrics, DnsServer};

struct RunningDns {
    addr: SocketAddr,
    metrics: DnsMetrics,
    cancel: CancellationToken,
}

impl Drop for RunningDns {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start_dns(client: kube::Client, upstreams: Vec<SocketAddr>) -> RunningDns {
    let cancel = CancellationToken::new();
    let config = DnsConfig {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        upstreams,
        upstream_timeout: Duration::from_millis(500),
        ..DnsConfig::default()
    };
    let server = DnsServer::bind(client, config, cancel.clone())
        .await
        .expect("bind DNS");
    let addr = server.local_addrs()[0];
    let metrics = server.metrics();
    tokio::spawn(async move {
        if let Err(error) = server.serve().await {
            panic!("dns server: {error}");
        }
    });
    RunningDns {
        addr,
        metrics,
        cancel,
    }
}

async fn udp(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(background);
    client
}

async fn tcp(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::new());
    let (client, background) =
        Client::<TokioRuntimeProvider>::new(stream.await.expect("tcp connect"), sender);
    tokio::spawn(background);
    client
}

async fn ask(client: &mut Client<TokioRuntimeProvider>, name: &str, qtype: RecordType) -> Message {
    client
        .query(Name::from_str(name).expect("name"), DNSClass::IN, qtype)
        .await
        .unwrap_or_else(|error| panic!("query {name} {qtype}: {error}"))
        .into_message()
}

fn rdata(message: &Message) -> Vec<String> {
    let mut values: Vec<String> = message.answers.iter().map(|r| r.data.to_string()).collect();
    values.sort();
    values
}

/// Asks until `check` holds (watch propagation), at most `within`.
async fn eventually(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    qtype: RecordType,
    within: Duration,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = Instant::now() + within;
    loop {
        let message = ask(client, name, qtype).await;
        if check(&message) {
            return message;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {qtype} not as expected within {within:?}: {message:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_service(client: &kube::Client, value: serde_json::Value) -> Service {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(value).expect("service json"),
        )
        .await
        .expect("create service")
}

async fn create_slice(client: &kube::Client, value: serde_json::Value) -> EndpointSlice {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(
            &PostParams::default(),
            &serde_json::from_value(value).expect("slice json"),
        )
        .await
        .expect("create endpointslice")
}

/// A fake upstream resolver: answers every A query with 192.0.2.1, and `big.example.com` with
/// 100 addresses (too big for UDP, to exercise the TCP fallback); counts what it saw.
#[derive(Default)]
struct UpstreamLog {
    udp: AtomicUsize,
    tcp: AtomicUsize,
    names: std::sync::Mutex<Vec<String>>,
}

struct FakeUpstream(Arc<UpstreamLog>);

#[async_trait::async_trait]
impl RequestHandler for FakeUpstream {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        match request.protocol() {
            Protocol::Tcp => self.0.tcp.fetch_add(1, Ordering::SeqCst),
            _ => self.0.udp.fetch_add(1, Ordering::SeqCst),
        };
        let query = &request.queries.queries()[0];
        let name = query.original().name().clone();
        self.0
            .names
            .lock()
            .expect("log")
            .push(name.to_ascii().to_ascii_lowercase());
        let count = if name.to_ascii().starts_with("big.") {
            100
        } else {
            1
        };
        let records: Vec<Record> = (0..count)
            .map(|i| Record::from_rdata(name.clone(), 60, RData::A(A::new(192, 0, 2, 1 + i as u8))))
            .collect();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let edns = request.edns.clone();
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(metadata, records.iter(), [], [], []);
        response_handle
            .send_response(response)
            .await
            .expect("fake upstream send")
    }
}

async fn start_upstream() -> (
    SocketAddr,
    Arc<UpstreamLog>,
    hickory_server::Server<FakeUpstream>,
) {
    let log = Arc::new(UpstreamLog::default());
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = socket.local_addr().expect("addr");
    let listener = TcpListener::bind(addr).await.expect("bind upstream tcp");
    let mut server = hickory_server::Server::new(FakeUpstream(log.clone()));
    server.register_socket(socket);
    server.register_listener(listener, Duration::from_secs(5), 65_536);
    (addr, log, server)
}

/// A loopback port nobody listens on.
async fn dead_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.local_addr().expect("addr")
}

#[tokio::test]
async fn cluster_ip_service_a_srv_ptr_over_udp_and_tcp_case_insensitive() {
    let api = common::start_api().await;
    let dns = start_dns(api.client.clone(), vec![dead_port().await]).await;
    create_service(
        &api.client,
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.50", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }),
    )
    .await;
    let mut client = udp(dns.addr).await;
    let answer = eventually(
        &mut client,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(3),
        |m| !m.answers.is_empty(),
    )
    .await;
    assert_eq!(rdata(&answer), vec!["10.43.0.50"]);
    assert!(answer.metadata.authoritative);
    assert_eq!(answer.answers[0].ttl, 5);

    for mut client in [udp(dns.addr).await, tcp(dns.addr).await] {
        let mixed = ask(&mut client, "WEB.Default.SVC.Cluster.Local.", RecordType::A).await;
        assert_eq!(rdata(&mixed), vec!["10.43.0.50"]);

        let aaaa = ask(
            &mut client,
            "web.default.svc.cluster.local.",
            RecordType::AAAA,
        )
        .await;
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());

        let srv = ask(
            &mut client,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(rdata(&srv), vec!["0 100 80 web.default.svc.cluster.local."]);
        assert_eq!(srv.additionals[0].data.to_string(), "10.43.0.50");

        let ptr = ask(&mut client, "50.0.43.10.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(rdata(&ptr), vec!["web.default.svc.cluster.local."]);
    }
    assert!(dns.metrics.requests("A") >= 3);
    assert!(
        dns.metrics
            .encode()
            .contains("skiff_dns_requests_total{type=\"SRV\"} 2")
    );
}

#[tokio::test]
async fn headless_service_endpoints_hostnames_srv_and_publish_not_ready() {
    let api = common::start_api().await;
    let dns = start_dns(api.client.clone(), vec![dead_port().await]).await;
    create_service(
        &api.client,
        json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"},
                     "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}
        }),
    )
    .await;
    create_slice(
        &api.client,
        json!({
            "metadata": {"name": "db-x1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.8"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.9"], "hostname": "db-2", "conditions": {"ready": false}}
            ]
        }),
    )
    .await;
    let mut client = udp(dns.addr).await;
    let a = eventually(
        &mut client,
        "db.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(3),
        |m| m.answers.len() == 2,
    )
    .await;
    assert_eq!(rdata(&a), vec!["10.42.0.7", "10.42.0.8"]);

    let host = ask(
        &mut client,
        "db-0.db.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(rdata(&host), vec!["10.42.0.7"]);
    let dashed = ask(
        &mut client,
        "10-42-0-8.db.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(rdata(&dashed), vec!["10.42.0.8"]);
    let not_ready = ask(
        &mut client,
        "db-2.db.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(not_ready.metadata.response_code, ResponseCode::NXDomain);

    let srv = ask(
        &mut client,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        rdata(&srv),
        vec![
            "0 50 5432 10-42-0-8.db.default.svc.cluster.local.",
            "0 50 5432 db-0.db.default.svc.cluster.local."
        ]
    );
    assert_eq!(srv.additionals.len(), 2);

    let ptr = ask(&mut client, "7.0.42.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rdata(&ptr), vec!["db-0.db.default.svc.cluster.local."]);

    // publishNotReadyAddresses publishes the not-ready endpoint too.
    let services: Api<Service> = Api::namespaced(api.client.clone(), "default");
    services
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"publishNotReadyAddresses": true}})),
        )
        .await
        .expect("patch service");
    let all = eventually(
        &mut client,
        "db.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(1),
        |m| m.answers.len() == 3,
    )
    .await;
    assert_eq!(rdata(&all), vec!["10.42.0.7", "10.42.0.8", "10.42.0.9"]);
    drop(dns);
}

#[tokio::test]
async fn external_name_pods_nxdomain_and_search_path_expansion_not_forwarded() {
    let api = common::start_api().await;
    let (upstream_addr, log, _upstream) = start_upstream().await;
    let dns = start_dns(api.client.clone(), vec![upstream_addr]).await;
    create_service(
        &api.client,
        json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}
        }),
    )
    .await;
    let mut client = udp(dns.addr).await;
    let cname = eventually(
        &mut client,
        "ext.default.svc.cluster.local.",
        RecordType::CNAME,
        Duration::from_secs(3),
        |m| !m.answers.is_empty(),
    )
    .await;
    assert_eq!(rdata(&cname), vec!["db.example.com."]);
    assert_eq!(cname.answers[0].record_type(), RecordType::CNAME);

    let pod = ask(
        &mut client,
        "10-42-1-5.default.pod.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(rdata(&pod), vec!["10.42.1.5"]);

    for name in [
        "nope.default.svc.cluster.local.",
        "web.default.svc.cluster.local.default.svc.cluster.local.",
        "web.default.svc.cluster.local.svc.cluster.local.",
        "10-42-1-5.no-such-namespace.pod.cluster.local.",
    ] {
        let started = Instant::now();
        let nx = ask(&mut client, name, RecordType::A).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{name} was slow"
        );
        assert_eq!(nx.authorities.len(), 1, "{name}: SOA in authority");
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    }
    assert!(
        log.names
            .lock()
            .expect("log")
            .iter()
            .all(|n| !n.ends_with("cluster.local.")),
        "a cluster-domain query reached the upstream"
    );
    assert_eq!(dns.metrics.forwards(), 0);
}

#[tokio::test]
async fn service_changes_are_visible_within_a_second() {
    let api = common::start_api().await;
    let dns = start_dns(api.client.clone(), vec![dead_port().await]).await;
    let mut client = udp(dns.addr).await;
    // Wait until the index has synced: the namespace answers NODATA, not SERVFAIL.
    eventually(
        &mut client,
        "default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(3),
        |m| m.metadata.response_code == ResponseCode::NoError,
    )
    .await;
    let nx = ask(&mut client, "api.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

    create_service(
        &api.client,
        json!({
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.60",
                     "ports": [{"name": "grpc", "port": 9000, "protocol": "TCP"}]}
        }),
    )
    .await;
    eventually(
        &mut client,
        "api.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(1),
        |m| rdata(m) == vec!["10.43.0.60"],
    )
    .await;

    let services: Api<Service> = Api::namespaced(api.client.clone(), "default");
    services
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"ports": [{"name": "grpc", "port": 9001, "protocol": "TCP"}]}}),
            ),
        )
        .await
        .expect("patch ports");
    eventually(
        &mut client,
        "_grpc._tcp.api.default.svc.cluster.local.",
        RecordType::SRV,
        Duration::from_secs(1),
        |m| rdata(m) == vec!["0 100 9001 api.default.svc.cluster.local."],
    )
    .await;

    services
        .delete("api", &DeleteParams::default())
        .await
        .expect("delete service");
    eventually(
        &mut client,
        "api.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(1),
        |m| m.metadata.response_code == ResponseCode::NXDomain,
    )
    .await;
    let ptr_gone = ask(&mut client, "60.0.43.10.in-addr.arpa.", RecordType::PTR).await;
    // Unknown reverse names are forwarded, and the upstream here is dead.
    assert_eq!(ptr_gone.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn forwards_outside_the_cluster_domain_with_tcp_fallback() {
    let api = common::start_api().await;
    let (upstream_addr, log, _upstream) = start_upstream().await;
    let dns = start_dns(api.client.clone(), vec![upstream_addr]).await;

    let mut client = udp(dns.addr).await;
    let answer = ask(&mut client, "www.example.com.", RecordType::A).await;
    assert_eq!(rdata(&answer), vec!["192.0.2.1"]);
    assert!(
        answer.metadata.recursion_available,
        "upstream flags are relayed"
    );
    assert!(!answer.metadata.authoritative);
    assert_eq!(log.udp.load(Ordering::SeqCst), 1);

    let mut client = tcp(dns.addr).await;
    let answer = ask(&mut client, "www.example.org.", RecordType::A).await;
    assert_eq!(rdata(&answer), vec!["192.0.2.1"]);
    assert_eq!(
        log.tcp.load(Ordering::SeqCst),
        1,
        "TCP clients are forwarded over TCP"
    );

    // 100 A records do not fit the UDP payload: the upstream truncates, the forwarder retries
    // over TCP, and a TCP client gets everything.
    let udp_before = log.udp.load(Ordering::SeqCst);
    let mut client = udp(dns.addr).await;
    let _ = ask(&mut client, "big.example.com.", RecordType::A).await;
    assert_eq!(log.udp.load(Ordering::SeqCst), udp_before + 1);
    assert_eq!(
        log.tcp.load(Ordering::SeqCst),
        2,
        "truncated UDP answer retried over TCP"
    );
    let mut client = tcp(dns.addr).await;
    let big = ask(&mut client, "big.example.com.", RecordType::A).await;
    assert_eq!(big.answers.len(), 100);

    assert_eq!(dns.metrics.forwards(), 4);
    assert_eq!(dns.metrics.forward_failures(), 0);
}

#[tokio::test]
async fn dead_upstream_answers_servfail() {
    let api = common::start_api().await;
    let dns = start_dns(api.client.clone(), vec![dead_port().await]).await;
    for mut client in [udp(dns.addr).await, tcp(dns.addr).await] {
        let started = Instant::now();
        let answer = ask(&mut client, "www.example.com.", RecordType::A).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(dns.metrics.forward_failures(), 2);
    assert_eq!(dns.metrics.responses("SERVFAIL"), 2);
}
