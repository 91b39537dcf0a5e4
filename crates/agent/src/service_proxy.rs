//! The agent side of the service proxy: watches Services and EndpointSlices, translates them
//! into `net::proxy`'s own types (the `net` crate knows nothing of the Kubernetes API) and keeps
//! a [`ServiceProxy`] synced, like kube-proxy's nftables mode:
//!
//! * no sync before both watches have listed everything once (kube-proxy waits for its caches
//!   too; syncing earlier would reject traffic to Services whose slices are not yet known);
//! * changes are batched: a sync runs at most once per `min_sync_period` (kube-proxy's
//!   `--min-sync-period`, default 1 s), as a partial sync of what changed;
//! * a full resync every `full_sync_period` repairs anything changed behind our back;
//! * a failed sync is retried, as a full sync, after `max(min_sync_period, 1 s)`.
//!
//! The counters of the last syncs are published in a shared [`ProxyMetrics`] for /metrics.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use net::proxy::{
    Endpoint, EndpointPort, EndpointSlice, Nft, NodeConfig, Protocol, ProxyMetrics, Service,
    ServiceName, ServicePort, ServiceProxy,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The label that ties an EndpointSlice to its Service (discovery.k8s.io/v1).
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (core/v1 default, 3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// Errors that end the service proxy loop. Watch errors are retried with backoff and do not
/// end it; sync errors are retried too.
#[derive(Debug, thiserror::Error)]
pub enum ServiceProxyError {
    #[error("the service proxy sync task panicked or was cancelled: {source}")]
    SyncTask {
        #[source]
        source: tokio::task::JoinError,
    },
}

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct ServiceProxyConfig {
    pub node: NodeConfig,
    /// At most one sync per this period (kube-proxy `--min-sync-period`, default 1 s); tests
    /// use zero.
    pub min_sync_period: Duration,
    /// A full resync this often (kube-proxy's nftables mode resyncs fully once an hour).
    pub full_sync_period: Duration,
}

impl ServiceProxyConfig {
    pub fn new(node: NodeConfig) -> Self {
        ServiceProxyConfig {
            node,
            min_sync_period: Duration::from_secs(1),
            full_sync_period: Duration::from_secs(3600),
        }
    }
}

fn protocol(value: Option<&str>) -> Option<Protocol> {
    match value.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn ipv4s<'a>(values: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    values.into_iter().filter_map(|v| v.parse().ok()).collect()
}

/// The proxy's view of a Service; None for what the proxy does not program (ExternalName and
/// headless Services, IPv6-only ones).
pub fn service_from_api(svc: &core::Service) -> Option<(ServiceName, Service)> {
    let namespace = svc.metadata.namespace.clone()?;
    let name = svc.metadata.name.clone()?;
    let spec = svc.spec.as_ref()?;
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if type_ == "ExternalName" {
        return None;
    }
    let mut cluster_ip_values: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
    if cluster_ip_values.is_empty() {
        cluster_ip_values.extend(spec.cluster_ip.iter());
    }
    let cluster_ips = ipv4s(cluster_ip_values);
    if cluster_ips.is_empty() {
        // Headless ("None") or not yet allocated: no virtual IP to program.
        return None;
    }
    let with_node_ports = matches!(type_, "NodePort" | "LoadBalancer");
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol(p.protocol.as_deref())?,
                port: u16::try_from(p.port).ok()?,
                node_port: p
                    .node_port
                    .filter(|_| with_node_ports)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0),
            })
        })
        .collect();
    let load_balancer_ips = if type_ == "LoadBalancer" {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            // ipMode Proxy: the load balancer proxies to the node itself, so the node must not
            // capture the address (KEP-1860).
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_ref()?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    let session_affinity_seconds =
        (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
    Some((
        ServiceName::new(namespace, name),
        Service {
            cluster_ips,
            external_ips: ipv4s(spec.external_ips.iter().flatten()),
            load_balancer_ips,
            ports,
            session_affinity_seconds,
            external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        },
    ))
}

/// The proxy's view of an EndpointSlice, keyed by namespace and name; None for IPv6/FQDN
/// slices and slices without a Service label.
pub fn endpoint_slice_from_api(
    slice: &discovery::EndpointSlice,
) -> Option<(String, String, EndpointSlice)> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let namespace = slice.metadata.namespace.clone()?;
    let name = slice.metadata.name.clone()?;
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(EndpointPort {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol(p.protocol.as_deref())?,
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| {
            let conditions = e.conditions.clone().unwrap_or_default();
            // API defaults: ready unset means ready; serving unset follows ready.
            let ready = conditions.ready.unwrap_or(true);
            Endpoint {
                addresses: ipv4s(&e.addresses),
                ready,
                serving: conditions.serving.unwrap_or(ready),
                terminating: conditions.terminating.unwrap_or(false),
                node_name: e.node_name.clone(),
            }
        })
        .collect();
    Some((
        namespace.clone(),
        name,
        EndpointSlice {
            service: ServiceName::new(namespace, service),
            ports,
            endpoints,
        },
    ))
}

/// One watch's progress through its initial list.
enum ListState<T> {
    /// Buffering the objects of a (re-)list until `InitDone`.
    Listing(Vec<T>),
    /// Listed; events apply one by one.
    Watching,
}

/// Runs the service proxy until `cancel`: watches Services and EndpointSlices in all namespaces
/// and syncs `nft` as described in the module docs. `metrics` is updated after every sync.
pub async fn run<N: Nft + 'static>(
    client: Client,
    config: ServiceProxyConfig,
    nft: N,
    metrics: Arc<Mutex<ProxyMetrics>>,
    cancel: CancellationToken,
) -> Result<(), ServiceProxyError> {
    let services = watcher::watcher(
        Api::<core::Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    let slices = watcher::watcher(
        Api::<discovery::EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff();
    futures::pin_mut!(services, slices);

    let mut proxy = Some(ServiceProxy::new(config.node.clone(), nft));
    let mut service_list: ListState<(ServiceName, Service)> = ListState::Listing(Vec::new());
    let mut slice_list: ListState<(String, String, EndpointSlice)> = ListState::Listing(Vec::new());
    let mut services_synced = false;
    let mut slices_synced = false;
    let mut next_sync = Instant::now();
    let mut next_full_sync = Instant::now() + config.full_sync_period;
    let retry = config.min_sync_period.max(Duration::from_secs(1));

    loop {
        let Some(p) = proxy.as_mut() else {
            return Ok(());
        };
        let ready = services_synced && slices_synced;
        let pending = ready && p.has_pending_changes();
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            event = services.next() => match event {
                Some(Ok(event)) => {
                    if apply_service_event(p, &mut service_list, event) {
                        services_synced = true;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "service proxy: watching Services"),
                None => return Ok(()),
            },
            event = slices.next() => match event {
                Some(Ok(event)) => {
                    if apply_slice_event(p, &mut slice_list, event) {
                        slices_synced = true;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "service proxy: watching EndpointSlices"),
                None => return Ok(()),
            },
            _ = tokio::time::sleep_until(next_full_sync), if ready => {
                p.request_full_sync();
                next_full_sync = Instant::now() + config.full_sync_period;
            }
            _ = tokio::time::sleep_until(next_sync), if pending => {
                let Some(owned) = proxy.take() else { return Ok(()) };
                let (owned, result) = tokio::task::spawn_blocking(move || {
                    let mut owned = owned;
                    let result = owned.sync();
                    (owned, result)
                })
                .await
                .map_err(|source| ServiceProxyError::SyncTask { source })?;
                if let Ok(mut m) = metrics.lock() {
                    *m = owned.metrics().clone();
                }
                next_sync = match result {
                    Ok(report) => {
                        tracing::debug!(kind = %report.kind, commands = report.commands, duration = ?report.duration, "service proxy synced");
                        Instant::now() + config.min_sync_period
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "service proxy sync failed; retrying with a full sync");
                        Instant::now() + retry
                    }
                };
                proxy = Some(owned);
            }
        }
    }
}

/// Applies one Service watch event; true once the initial list is complete.
fn apply_service_event<N: Nft>(
    proxy: &mut ServiceProxy<N>,
    list: &mut ListState<(ServiceName, Service)>,
    event: Event<core::Service>,
) -> bool {
    match event {
        Event::Init => *list = ListState::Listing(Vec::new()),
        Event::InitApply(svc) => {
            if let (ListState::Listing(buf), Some(s)) = (&mut *list, service_from_api(&svc)) {
                buf.push(s);
            }
        }
        Event::InitDone => {
            if let ListState::Listing(buf) = std::mem::replace(list, ListState::Watching) {
                let listed: std::collections::BTreeSet<ServiceName> =
                    buf.iter().map(|(n, _)| n.clone()).collect();
                let gone: Vec<ServiceName> = proxy
                    .state()
                    .services
                    .keys()
                    .filter(|n| !listed.contains(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    proxy.remove_service(&name);
                }
                for (name, svc) in buf {
                    proxy.upsert_service(name, svc);
                }
            }
        }
        Event::Apply(svc) => match service_from_api(&svc) {
            Some((name, s)) => proxy.upsert_service(name, s),
            // Became headless or ExternalName: nothing to program any more.
            None => {
                if let (Some(ns), Some(n)) = (&svc.metadata.namespace, &svc.metadata.name) {
                    proxy.remove_service(&ServiceName::new(ns.clone(), n.clone()));
                }
            }
        },
        Event::Delete(svc) => {
            if let (Some(ns), Some(n)) = (&svc.metadata.namespace, &svc.metadata.name) {
                proxy.remove_service(&ServiceName::new(ns.clone(), n.clone()));
            }
        }
    }
    matches!(list, ListState::Watching)
}

/// Applies one EndpointSlice watch event; true once the initial list is complete.
fn apply_slice_event<N: Nft>(
    proxy: &mut ServiceProxy<N>,
    list: &mut ListState<(String, String, EndpointSlice)>,
    event: Event<discovery::EndpointSlice>,
) -> bool {
    match event {
        Event::Init => *list = ListState::Listing(Vec::new()),
        Event::InitApply(slice) => {
            if let (ListState::Listing(buf), Some(s)) =
                (&mut *list, endpoint_slice_from_api(&slice))
            {
                buf.push(s);
            }
        }
        Event::InitDone => {
            if let ListState::Listing(buf) = std::mem::replace(list, ListState::Watching) {
                let listed: std::collections::BTreeSet<(String, String)> = buf
                    .iter()
                    .map(|(ns, n, _)| (ns.clone(), n.clone()))
                    .collect();
                let gone: Vec<(String, String)> = proxy
                    .state()
                    .slices
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                for (ns, n) in gone {
                    proxy.remove_endpoint_slice(&ns, &n);
                }
                for (ns, n, slice) in buf {
                    proxy.upsert_endpoint_slice(&ns, &n, slice);
                }
            }
        }
        Event::Apply(slice) => match endpoint_slice_from_api(&slice) {
            Some((ns, n, s)) => proxy.upsert_endpoint_slice(&ns, &n, s),
            None => {
                if let (Some(ns), Some(n)) = (&slice.metadata.namespace, &slice.metadata.name) {
                    proxy.remove_endpoint_slice(ns, n);
                }
            }
        },
        Event::Delete(slice) => {
            if let (Some(ns), Some(n)) = (&slice.metadata.namespace, &slice.metadata.name) {
                proxy.remove_endpoint_slice(ns, n);
            }
        }
    }
    matches!(list, ListState::Watching)
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::proxy::RecordingNft;
    use serde_json::json;

    fn svc(value: serde_json::Value) -> core::Service {
        serde_json::from_value(value).expect("service")
    }

    #[test]
    fn translates_a_load_balancer_service() {
        let s = svc(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {
                "type": "LoadBalancer", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                          {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}],
                "externalIPs": ["192.0.2.7"],
                "sessionAffinity": "ClientIP",
                "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster"
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.200"}, {"ip": "192.168.1.201", "ipMode": "Proxy"}]}}
        }));
        let (name, s) = service_from_api(&s).expect("programmed");
        assert_eq!(name, ServiceName::new("default", "web"));
        assert_eq!(s.cluster_ips, vec![Ipv4Addr::new(10, 43, 0, 10)]);
        assert_eq!(s.load_balancer_ips, vec![Ipv4Addr::new(192, 168, 1, 200)]);
        assert_eq!(s.external_ips, vec![Ipv4Addr::new(192, 0, 2, 7)]);
        assert_eq!(s.session_affinity_seconds, Some(DEFAULT_AFFINITY_SECONDS));
        assert!(s.external_traffic_local && !s.internal_traffic_local);
        assert_eq!(s.ports[1].protocol, Protocol::Udp);
        assert_eq!(s.ports[1].node_port, Some(30053));
    }

    #[test]
    fn headless_external_name_and_cluster_ip_node_ports() {
        let headless = svc(json!({"metadata": {"namespace": "d", "name": "h"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        assert!(service_from_api(&headless).is_none());
        let ext = svc(json!({"metadata": {"namespace": "d", "name": "e"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        assert!(service_from_api(&ext).is_none());
        // A nodePort left on a ClusterIP Service is not programmed.
        let c = svc(json!({"metadata": {"namespace": "d", "name": "c"},
            "spec": {"clusterIP": "10.43.0.5", "ports": [{"port": 80, "nodePort": 30001}],
                     "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}));
        let (_, c) = service_from_api(&c).expect("programmed");
        assert_eq!(c.ports[0].node_port, None);
        assert_eq!(c.ports[0].name, "");
        assert_eq!(c.session_affinity_seconds, Some(60));
    }

    #[test]
    fn translates_slices_with_condition_defaults() {
        let slice: discovery::EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web-abc",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.42.0.2"], "nodeName": "n1"},
                {"addresses": ["10.42.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }))
        .expect("slice");
        let (ns, name, s) = endpoint_slice_from_api(&slice).expect("slice");
        assert_eq!((ns.as_str(), name.as_str()), ("default", "web-abc"));
        assert_eq!(s.service, ServiceName::new("default", "web"));
        assert_eq!(s.ports[0].port, 8080);
        let (a, b) = (&s.endpoints[0], &s.endpoints[1]);
        assert!(a.ready && a.serving && !a.terminating);
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert!(!b.ready && b.serving && b.terminating);

        let mut v6 = slice.clone();
        v6.address_type = "IPv6".into();
        assert!(endpoint_slice_from_api(&v6).is_none());
        let mut unlabeled = slice;
        unlabeled.metadata.labels = None;
        assert!(endpoint_slice_from_api(&unlabeled).is_none());
    }

    #[test]
    fn relist_removes_what_disappeared() {
        let node = NodeConfig::new("n1", vec![], vec![]).expect("node");
        let mut proxy = ServiceProxy::new(node, RecordingNft::new());
        let mut list = ListState::Listing(Vec::new());
        let a = svc(json!({"metadata": {"namespace": "d", "name": "a"},
            "spec": {"clusterIP": "10.43.0.1", "ports": [{"port": 80}]}}));
        let b = svc(json!({"metadata": {"namespace": "d", "name": "b"},
            "spec": {"clusterIP": "10.43.0.2", "ports": [{"port": 80}]}}));
        assert!(!apply_service_event(&mut proxy, &mut list, Event::Init));
        assert!(!apply_service_event(
            &mut proxy,
            &mut list,
            Event::InitApply(a.clone())
        ));
        assert!(!apply_service_event(
            &mut proxy,
            &mut list,
            Event::InitApply(b)
        ));
        assert!(proxy.state().services.is_empty(), "buffered until InitDone");
        assert!(apply_service_event(&mut proxy, &mut list, Event::InitDone));
        assert_eq!(proxy.state().services.len(), 2);
        // The watch restarts and only `a` is left.
        apply_service_event(&mut proxy, &mut list, Event::Init);
        apply_service_event(&mut proxy, &mut list, Event::InitApply(a));
        apply_service_event(&mut proxy, &mut list, Event::InitDone);
        let names: Vec<String> = proxy
            .state()
            .services
            .keys()
            .map(|n| n.name.clone())
            .collect();
        assert_eq!(names, vec!["a"]);
    }
}
