//! Service ClusterIP and NodePort allocation through the generic REST path of an in-process
//! API server on the memory store: allocation and defaults, headless and ExternalName,
//! user-chosen values and upstream's error texts, immutability, releases on type change and
//! delete, no leak when a create fails after allocating, the repair pass after a simulated
//! crash, two API servers sharing a store, and the `kubernetes` Service.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use apiserver::rest::{self, UpdateKind, WriteOptions};
use apiserver::service_alloc::ServiceNetworkConfig;
use apiserver::service_alloc::repair::Repair;
use apiserver::{ApiServer, ApiServerConfig, ApiState};
use serde_json::{Value, json};
use store::Store;
use tokio_util::sync::CancellationToken;

struct Server {
    state: Arc<ApiState>,
    port: u16,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(store: Arc<dyn Store>, network: ServiceNetworkConfig) -> Server {
    let shutdown = CancellationToken::new();
    let config = ApiServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        watch_cache_events: 1000,
    };
    let server = ApiServer::bind_with_services(config, network, store, shutdown.clone())
        .await
        .expect("bind");
    let port = server.local_addr().expect("addr").port();
    let state = server.state();
    tokio::spawn(server.serve());
    let namespaces = api::catalogue::find("", "v1", "namespaces").expect("namespaces");
    for _ in 0..500 {
        if rest::get_object(&state, namespaces, None, "default")
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server {
        state,
        port,
        shutdown,
    }
}

fn memory() -> Arc<dyn Store> {
    Arc::new(store::memory::MemoryStore::new())
}

fn services() -> &'static api::catalogue::Resource {
    api::catalogue::find("", "v1", "services").expect("services")
}

fn opts() -> WriteOptions {
    WriteOptions::internal("test")
}

async fn create(
    state: &ApiState,
    spec: Value,
    name: &str,
) -> Result<Value, apiserver::error::ApiError> {
    let obj =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
    rest::create(state, services(), Some("default"), obj, None, &opts())
        .await
        .map(|(v, _)| v)
}

async fn update(
    state: &ApiState,
    name: &str,
    edit: impl Fn(&mut Value) + Send,
) -> Result<Value, apiserver::error::ApiError> {
    rest::update(
        state,
        services(),
        Some("default"),
        name,
        UpdateKind::Main,
        &opts(),
        |cur| {
            let mut new = cur.clone();
            edit(&mut new);
            Ok((new, None))
        },
    )
    .await
    .map(|(v, _)| v)
}

async fn delete(state: &ApiState, name: &str) {
    rest::delete(
        state,
        services(),
        Some("default"),
        name,
        &rest::DeleteOptions::default(),
    )
    .await
    .expect("delete");
}

/// The IPAddress objects in the store: IP → parentRef name.
async fn ip_addresses(store: &dyn Store) -> Vec<(String, String)> {
    let r = store
        .range("/registry/ipaddresses/", Default::default())
        .await
        .expect("range");
    r.kvs
        .iter()
        .map(|kv| {
            let v: Value = serde_json::from_slice(&kv.value).expect("json");
            let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
            (
                name,
                v["spec"]["parentRef"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

async fn allocated_ports(state: &ApiState) -> BTreeSet<u16> {
    state.services.node_ports().read().await.expect("bitmap").0
}

fn web(extra: Value) -> Value {
    let mut spec = json!({"selector": {"app": "web"}, "ports": [{"port": 80}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    spec
}

fn ip_of(svc: &Value) -> Ipv4Addr {
    svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .parse()
        .expect("ipv4")
}

#[tokio::test]
async fn cluster_ip_is_allocated_with_upstream_defaults() {
    let store = memory();
    let s = start(store.clone(), ServiceNetworkConfig::default()).await;
    let svc = create(&s.state, web(json!({})), "web")
        .await
        .expect("create");
    let ip = ip_of(&svc);
    assert!(
        s.state.services.config.service_cidr.is_usable(ip),
        "{ip} in 10.43.0.0/16"
    );
    // Dynamic allocation prefers the upper band: the first 256 addresses are for static use.
    assert!(
        u32::from(ip) >= u32::from(Ipv4Addr::new(10, 43, 1, 1)),
        "{ip} above the static band"
    );
    let spec = &svc["spec"];
    assert_eq!(spec["clusterIPs"], json!([ip.to_string()]));
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(
        spec["ports"],
        json!([{"port": 80, "protocol": "TCP", "targetPort": 80}])
    );
    assert!(spec.get("externalTrafficPolicy").is_none());
    assert!(
        ip_addresses(store.as_ref())
            .await
            .contains(&(ip.to_string(), "web".to_string()))
    );

    // A replace without the allocated values keeps them (upstream's patchAllocatedValues).
    let replaced = update(&s.state, "web", |n| {
        if let Some(spec) = n["spec"].as_object_mut() {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        n["metadata"]["labels"] = json!({"tier": "front"});
    })
    .await
    .expect("replace");
    assert_eq!(ip_of(&replaced), ip);

    // A dry run shows an address and keeps nothing.
    let before = ip_addresses(store.as_ref()).await;
    let dry_opts = WriteOptions {
        dry_run: true,
        ..opts()
    };
    let obj = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dry"}, "spec": web(json!({"type": "NodePort"}))});
    let (dry, _) = rest::create(&s.state, services(), Some("default"), obj, None, &dry_opts)
        .await
        .expect("dry run");
    assert!(
        dry["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty())
    );
    assert!(dry["spec"]["ports"][0]["nodePort"].as_i64().is_some());
    assert_eq!(ip_addresses(store.as_ref()).await, before);
    assert!(allocated_ports(&s.state).await.is_empty());
}

#[tokio::test]
async fn headless_and_external_name_get_no_ip() {
    let store = memory();
    let s = start(store.clone(), ServiceNetworkConfig::default()).await;
    let before = ip_addresses(store.as_ref()).await;
    let headless = create(
        &s.state,
        json!({"clusterIP": "None", "selector": {"app": "db"}}),
        "db",
    )
    .await
    .expect("headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    assert_eq!(headless["spec"]["ipFamilies"], json!(["IPv4"]));
    let external = create(
        &s.state,
        json!({"type": "ExternalName", "externalName": "example.com"}),
        "ext",
    )
    .await
    .expect("external");
    assert!(external["spec"].get("clusterIP").is_none());
    assert!(external["spec"].get("ipFamilies").is_none());
    assert_eq!(ip_addresses(store.as_ref()).await, before);

    // ExternalName → ClusterIP allocates; back to ExternalName releases.
    let typed = update(&s.state, "ext", |n| {
        n["spec"]["type"] = json!("ClusterIP");
        n["spec"]["ports"] = json!([{"port": 443}]);
        if let Some(spec) = n["spec"].as_object_mut() {
            spec.remove("externalName");
        }
    })
    .await
    .expect("to ClusterIP");
    let ip = ip_of(&typed);
    assert!(
        ip_addresses(store.as_ref())
            .await
            .contains(&(ip.to_string(), "ext".into()))
    );
    let back = update(&s.state, "ext", |n| {
        n["spec"]["type"] = json!("ExternalName");
        n["spec"]["externalName"] = json!("example.org");
    })
    .await
    .expect("to ExternalName");
    assert!(
        back["spec"].get("clusterIP").is_none(),
        "the IP is dropped with the type change"
    );
    assert_eq!(ip_addresses(store.as_ref()).await, before, "and released");
}

#[tokio::test]
async fn chosen_ips_are_checked_with_upstream_messages() {
    let store = memory();
    let s = start(store.clone(), ServiceNetworkConfig::default()).await;
    let ok = create(&s.state, web(json!({"clusterIP": "10.43.0.50"})), "a")
        .await
        .expect("free IP");
    assert_eq!(ok["spec"]["clusterIPs"], json!(["10.43.0.50"]));

    let taken = create(&s.state, web(json!({"clusterIP": "10.43.0.50"})), "b")
        .await
        .expect_err("taken");
    assert_eq!(taken.code, 422);
    assert_eq!(
        taken.message,
        "Service \"b\" is invalid: spec.clusterIPs: Invalid value: [\"10.43.0.50\"]: failed to allocate IP 10.43.0.50: provided IP is already allocated"
    );
    let causes = &taken.details.as_ref().expect("details").causes;
    assert_eq!(causes[0]["field"], "spec.clusterIPs");

    let outside = create(&s.state, web(json!({"clusterIP": "10.99.0.5"})), "c")
        .await
        .expect_err("outside");
    assert_eq!(outside.code, 422);
    assert_eq!(
        outside.message,
        "Service \"c\" is invalid: spec.clusterIPs: Invalid value: [\"10.99.0.5\"]: failed to allocate IP 10.99.0.5: the provided network does not match the current range (10.43.0.0/16)"
    );
    let broadcast = create(&s.state, web(json!({"clusterIP": "10.43.255.255"})), "c")
        .await
        .expect_err("broadcast");
    assert!(broadcast.message.ends_with(
        "failed to allocate IP 10.43.255.255: provided IP 10.43.255.255 is not in the valid range"
    ));

    // The clusterIP is immutable.
    let changed = update(&s.state, "a", |n| {
        n["spec"]["clusterIP"] = json!("10.43.0.51");
        n["spec"]["clusterIPs"] = json!(["10.43.0.51"]);
    })
    .await
    .expect_err("immutable");
    assert_eq!(changed.code, 422);
    assert_eq!(
        changed.message,
        "Service \"a\" is invalid: spec.clusterIPs[0]: Invalid value: [\"10.43.0.51\"]: may not change once set"
    );
    let ips: Vec<String> = ip_addresses(store.as_ref())
        .await
        .into_iter()
        .map(|(ip, _)| ip)
        .collect();
    assert!(
        !ips.contains(&"10.43.0.51".to_string()),
        "a refused update allocated nothing"
    );

    // Deleting releases; the IP can be chosen again.
    delete(&s.state, "a").await;
    create(&s.state, web(json!({"clusterIP": "10.43.0.50"})), "b")
        .await
        .expect("freed IP");
}

#[tokio::test]
async fn node_ports_are_allocated_checked_and_released() {
    let store = memory();
    let s = start(store.clone(), ServiceNetworkConfig::default()).await;
    let np = create(
        &s.state,
        json!({"type": "NodePort", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53}]}),
        "np",
    )
    .await
    .expect("create");
    let ports: Vec<i64> = (0..3)
        .map(|i| {
            np["spec"]["ports"][i]["nodePort"]
                .as_i64()
                .expect("nodePort")
        })
        .collect();
    assert!(
        ports.iter().all(|p| (30000..=32767).contains(p)),
        "{ports:?}"
    );
    assert_ne!(ports[0], ports[1]);
    assert_eq!(
        ports[1], ports[2],
        "one service port number shares its node port across protocols"
    );
    assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    let held: BTreeSet<u16> = ports.iter().map(|p| *p as u16).collect();
    assert_eq!(allocated_ports(&s.state).await, held);

    // A chosen port already in use.
    let taken = create(
        &s.state,
        json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": ports[0]}]}),
        "np2",
    )
    .await
    .expect_err("taken");
    assert_eq!(taken.code, 422);
    assert_eq!(
        taken.message,
        format!(
            "Service \"np2\" is invalid: spec.ports[0].nodePort: Invalid value: {}: provided port is already allocated",
            ports[0]
        )
    );
    let outside = create(
        &s.state,
        json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": 40000}]}),
        "np3",
    )
    .await
    .expect_err("outside");
    assert_eq!(
        outside.message,
        "Service \"np3\" is invalid: spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767"
    );
    let chosen = create(
        &s.state,
        json!({"type": "NodePort", "ports": [{"port": 81, "nodePort": 30081}]}),
        "np4",
    )
    .await
    .expect("free port");
    assert_eq!(chosen["spec"]["ports"][0]["nodePort"], 30081);

    // Removing a port releases its node port; NodePort → ClusterIP releases all.
    update(&s.state, "np", |n| {
        if let Some(p) = n["spec"]["ports"].as_array_mut() {
            p.truncate(1);
        }
    })
    .await
    .expect("drop ports");
    assert!(!allocated_ports(&s.state).await.contains(&(ports[1] as u16)));
    let as_cluster_ip = update(&s.state, "np", |n| n["spec"]["type"] = json!("ClusterIP"))
        .await
        .expect("type change");
    assert!(as_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
    assert!(as_cluster_ip["spec"].get("externalTrafficPolicy").is_none());
    assert_eq!(allocated_ports(&s.state).await, BTreeSet::from([30081]));

    // Deleting releases the IP and the node port.
    let ip = ip_of(&chosen);
    delete(&s.state, "np4").await;
    assert!(allocated_ports(&s.state).await.is_empty());
    assert!(
        !ip_addresses(store.as_ref())
            .await
            .iter()
            .any(|(a, _)| *a == ip.to_string())
    );
}

#[tokio::test]
async fn load_balancer_node_ports_and_health_check_port() {
    let s = start(memory(), ServiceNetworkConfig::default()).await;
    let no_ports = create(
        &s.state,
        web(json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false})),
        "lb0",
    )
    .await
    .expect("create");
    assert!(no_ports["spec"]["ports"][0].get("nodePort").is_none());
    assert!(allocated_ports(&s.state).await.is_empty());

    let local = create(
        &s.state,
        web(json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"})),
        "lb1",
    )
    .await
    .expect("create");
    let hc = local["spec"]["healthCheckNodePort"]
        .as_i64()
        .expect("healthCheckNodePort");
    let np = local["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("nodePort");
    assert_ne!(hc, np);
    assert_eq!(
        allocated_ports(&s.state).await,
        BTreeSet::from([hc as u16, np as u16])
    );

    // Local → Cluster drops and releases the health check port.
    let cluster = update(&s.state, "lb1", |n| {
        n["spec"]["externalTrafficPolicy"] = json!("Cluster")
    })
    .await
    .expect("etp");
    assert!(cluster["spec"].get("healthCheckNodePort").is_none());
    assert_eq!(allocated_ports(&s.state).await, BTreeSet::from([np as u16]));
}

#[tokio::test]
async fn a_failed_create_leaks_nothing() {
    let store = memory();
    let s = start(store.clone(), ServiceNetworkConfig::default()).await;
    create(&s.state, web(json!({"type": "NodePort"})), "dup")
        .await
        .expect("first");
    let ips_before = ip_addresses(store.as_ref()).await;
    let ports_before = allocated_ports(&s.state).await;

    // Allocated, then the store refuses the name.
    let exists = create(&s.state, web(json!({"type": "NodePort"})), "dup")
        .await
        .expect_err("exists");
    assert_eq!(exists.code, 409);
    // Allocated, then validation fails.
    let invalid = create(
        &s.state,
        json!({"type": "NodePort", "ports": [{"port": 80, "name": "Not_Valid"}]}),
        "bad",
    )
    .await
    .expect_err("invalid");
    assert_eq!(invalid.code, 422);
    // Allocated, then admission finds no namespace.
    let obj = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": web(json!({"type": "NodePort"}))});
    let missing = rest::create(&s.state, services(), Some("nowhere"), obj, None, &opts())
        .await
        .expect_err("no namespace");
    assert_eq!(missing.code, 404);
    // A refused update allocated, then reverted.
    let upd = update(&s.state, "dup", |n| {
        n["spec"]["ports"] = json!([{"port": 80}, {"port": 81, "name": "Not_Valid"}]);
    })
    .await
    .expect_err("invalid update");
    assert_eq!(upd.code, 422);

    assert_eq!(ip_addresses(store.as_ref()).await, ips_before);
    assert_eq!(allocated_ports(&s.state).await, ports_before);
}

#[tokio::test]
async fn repair_fixes_a_crash_between_allocation_and_write() {
    let store = memory();
    // State a crash leaves behind: a Service stored without its allocations, an IPAddress and a
    // node port whose Service was never stored.
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "stored", "namespace": "default", "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"type": "NodePort", "clusterIP": "10.43.7.7", "clusterIPs": ["10.43.7.7"], "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 30777}]}});
    store
        .create("/registry/services/default/stored", svc.to_string().into())
        .await
        .expect("service");
    let orphan = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": "10.43.9.9", "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": {"ipaddress.kubernetes.io/ip-family": "IPv4", "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"}},
        "spec": {"parentRef": {"resource": "services", "namespace": "default", "name": "gone"}}});
    store
        .create("/registry/ipaddresses/10.43.9.9", orphan.to_string().into())
        .await
        .expect("orphan");
    let young = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": "10.43.9.10", "creationTimestamp": apiserver::object::now_rfc3339(),
            "labels": {"ipaddress.kubernetes.io/ip-family": "IPv4", "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"}},
        "spec": {"parentRef": {"resource": "services", "namespace": "default", "name": "in-flight"}}});
    store
        .create("/registry/ipaddresses/10.43.9.10", young.to_string().into())
        .await
        .expect("young");

    let s = start(store.clone(), ServiceNetworkConfig::default()).await;
    s.state
        .services
        .node_ports()
        .allocate(
            &apiserver::service_alloc::ports::PortRequest {
                specific: vec![30999],
                dynamic: 0,
            },
            false,
        )
        .await
        .expect("orphan port");

    // The repair at start: the Service's IP is recorded, the old orphan freed, the young one kept.
    let mut fixed = false;
    for _ in 0..300 {
        let ips = ip_addresses(store.as_ref()).await;
        if ips.contains(&("10.43.7.7".into(), "stored".into()))
            && !ips.iter().any(|(ip, _)| ip == "10.43.9.9")
        {
            fixed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        fixed,
        "the start-up repair recorded 10.43.7.7 and freed 10.43.9.9: {:?}",
        ip_addresses(store.as_ref()).await
    );
    assert!(
        ip_addresses(store.as_ref())
            .await
            .iter()
            .any(|(ip, _)| ip == "10.43.9.10"),
        "a young IPAddress may be a create in flight"
    );
    // A new Service cannot take the repaired IP.
    let err = create(&s.state, web(json!({"clusterIP": "10.43.7.7"})), "thief")
        .await
        .expect_err("taken");
    assert!(err.message.contains("provided IP is already allocated"));

    // Node ports: the Service's is recorded; the unused one survives two passes, not three.
    let mut repair = Repair::new(store.clone(), s.state.services.clone());
    let first = repair.run_once().await.expect("pass 1");
    assert!(
        allocated_ports(&s.state).await.contains(&30777),
        "{first:?}"
    );
    assert!(allocated_ports(&s.state).await.contains(&30999));
    repair.run_once().await.expect("pass 2");
    assert!(allocated_ports(&s.state).await.contains(&30999));
    let third = repair.run_once().await.expect("pass 3");
    assert_eq!(third.ports_freed, vec![30999]);
    assert_eq!(allocated_ports(&s.state).await, BTreeSet::from([30777]));
    let err = create(
        &s.state,
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30777}]}),
        "thief2",
    )
    .await
    .expect_err("port taken");
    assert!(err.message.contains("provided port is already allocated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_api_servers_never_hand_out_the_same_ip_or_port() {
    let store = memory();
    let network = ServiceNetworkConfig {
        service_cidr: "10.96.0.0/26".parse().expect("cidr"),
        node_port_range: "30000-30079".parse().expect("range"),
        ..ServiceNetworkConfig::default()
    };
    let a = start(store.clone(), network.clone()).await;
    let b = start(store.clone(), network).await;
    // 62 usable addresses, one for the `kubernetes` Service: 60 creates fit, racing.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let state = if i % 2 == 0 {
            a.state.clone()
        } else {
            b.state.clone()
        };
        tasks.push(tokio::spawn(async move {
            create(
                &state,
                json!({"type": "NodePort", "ports": [{"port": 80}]}),
                &format!("svc-{i}"),
            )
            .await
        }));
    }
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for t in tasks {
        let svc = t.await.expect("join").expect("create");
        assert!(ips.insert(ip_of(&svc)), "{} handed out twice", ip_of(&svc));
        assert!(
            ports.insert(
                svc["spec"]["ports"][0]["nodePort"]
                    .as_i64()
                    .expect("nodePort")
            ),
            "node port handed out twice"
        );
    }
    assert_eq!(ips.len(), 60);
    let recorded = ip_addresses(store.as_ref()).await;
    for ip in &ips {
        assert!(recorded.iter().any(|(r, _)| *r == ip.to_string()));
    }
    assert_eq!(allocated_ports(&a.state).await.len(), 60);
}

#[tokio::test]
async fn the_kubernetes_service_points_at_the_api_server() {
    let store = memory();
    let s = start(store.clone(), ServiceNetworkConfig::default()).await;
    let endpoints_res = api::catalogue::find("", "v1", "endpoints").expect("endpoints");
    let slices_res =
        api::catalogue::find("discovery.k8s.io", "v1", "endpointslices").expect("slices");
    let mut found = None;
    for _ in 0..300 {
        let svc = rest::get_object(&s.state, services(), Some("default"), "kubernetes").await;
        let eps = rest::get_object(&s.state, endpoints_res, Some("default"), "kubernetes").await;
        let slice = rest::get_object(&s.state, slices_res, Some("default"), "kubernetes").await;
        if let (Ok((svc, _)), Ok((eps, _)), Ok((slice, _))) = (svc, eps, slice) {
            found = Some((svc, eps, slice));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (svc, eps, slice) = found.expect("the kubernetes Service, Endpoints and EndpointSlice");
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.1");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "https", "protocol": "TCP", "port": 443, "targetPort": s.port}])
    );
    assert_eq!(
        svc["metadata"]["labels"],
        json!({"component": "apiserver", "provider": "kubernetes"})
    );
    assert_eq!(svc["spec"]["ipFamilyPolicy"], "SingleStack");
    assert!(
        ip_addresses(store.as_ref())
            .await
            .contains(&("10.43.0.1".into(), "kubernetes".into()))
    );

    assert_eq!(
        eps["subsets"],
        json!([{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": s.port, "protocol": "TCP"}]}])
    );
    assert_eq!(
        eps["metadata"]["labels"],
        json!({"endpointslice.kubernetes.io/skip-mirror": "true"})
    );
    assert_eq!(
        slice["metadata"]["labels"],
        json!({"kubernetes.io/service-name": "kubernetes"})
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["endpoints"],
        json!([{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}])
    );
    assert_eq!(
        slice["ports"],
        json!([{"name": "https", "port": s.port, "protocol": "TCP"}])
    );

    let cidrs =
        api::catalogue::find("networking.k8s.io", "v1", "servicecidrs").expect("servicecidrs");
    let (cidr, _) = rest::get_object(&s.state, cidrs, None, "kubernetes")
        .await
        .expect("default ServiceCIDR");
    assert_eq!(cidr["spec"]["cidrs"], json!(["10.43.0.0/16"]));
    assert_eq!(cidr["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(cidr["status"]["conditions"][0]["status"], "True");

    // A user cannot take the kubernetes Service's address.
    let err = create(&s.state, web(json!({"clusterIP": "10.43.0.1"})), "x")
        .await
        .expect_err("taken");
    assert_eq!(err.code, 422);

    // Shutting down takes this server out of the endpoints.
    s.shutdown.cancel();
    let mut emptied = false;
    for _ in 0..300 {
        if let Ok((eps, _)) =
            rest::get_object(&s.state, endpoints_res, Some("default"), "kubernetes").await
            && eps
                .get("subsets")
                .is_none_or(|v| v.as_array().is_some_and(|a| a.is_empty()))
        {
            emptied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(emptied, "the stopped server removed its address");
}
