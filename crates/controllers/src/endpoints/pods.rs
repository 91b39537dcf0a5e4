//! What a pod contributes to a Service's endpoints, shared by the Endpoints and EndpointSlice
//! controllers (upstream `k8s.io/endpointslice/util` and `pkg/api/v1/pod`):
//!
//! * which pods count at all ([`should_pod_be_in_endpoints`]), readiness, addresses, the
//!   hostname a headless Service publishes;
//! * [`find_port`]: a Service port's targetPort resolved against one pod (named ports are
//!   looked up in that pod's containers, so pods may serve one Service on different numbers);
//! * [`services_to_update`]: the Services a pod event concerns (old and new labels).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodCondition, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::informer::Cache;

/// `namespace/name`, upstream's cache key.
pub(crate) fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Splits a `namespace/name` key.
pub(crate) fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The Service's selector, or `None` when it selects nothing. A nil selector means the
/// endpoints are managed by hand; an empty one cannot reach the controller either, because
/// the API drops empty maps (upstream `omitempty`).
pub(crate) fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|selector| !selector.is_empty())
}

/// Whether every selector pair is among `labels` (a Service selector is equality-only).
pub(crate) fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|labels| labels.get(k)) == Some(v))
}

/// The pods of `namespace` the selector matches.
pub(crate) fn selected_pods(
    pods: &Cache<Pod>,
    namespace: &str,
    selector: &BTreeMap<String, String>,
) -> Vec<std::sync::Arc<Pod>> {
    let mut selected: Vec<_> = pods
        .list(namespace)
        .into_iter()
        .filter(|pod| selector_matches(selector, pod.metadata.labels.as_ref()))
        .collect();
    // A stable order, so equal inputs build equal objects.
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    selected
}

/// The pod's `Ready` condition.
pub(crate) fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Upstream `IsPodReady`: the Ready condition is True.
pub(crate) fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// The pod's IPs: `status.podIPs`, or `status.podIP` from a writer that sets only that.
pub(crate) fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let ips: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    status
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .into_iter()
        .collect()
}

/// Whether `ip` is an IPv6 address (upstream `utilnet.IsIPv6String`).
pub(crate) fn is_ipv6(ip: &str) -> bool {
    ip.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Upstream `ShouldPodBeInEndpoints`: not terminal (Succeeded/Failed), has an IP, and — unless
/// `include_terminating` — not being deleted.
pub(crate) fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    if pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// Upstream `ShouldSetHostname`: the pod asked for a hostname under this Service's name as its
/// subdomain (how a headless Service gives pods stable DNS names).
pub(crate) fn should_set_hostname(pod: &Pod, service: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.subdomain.as_deref() == service.metadata.name.as_deref()
        && service.metadata.namespace == pod.metadata.namespace
}

/// The pod's hostname when [`should_set_hostname`] holds.
pub(crate) fn hostname_for(pod: &Pod, service: &Service) -> Option<String> {
    if should_set_hostname(pod, service) {
        pod.spec.as_ref()?.hostname.clone()
    } else {
        None
    }
}

/// Upstream `helper.IsServiceIPSet`: a cluster IP that is neither empty nor `None`.
pub(crate) fn is_service_ip_set(service: &Service) -> bool {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// Whether the Service is headless (`clusterIP: None`).
pub(crate) fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Why a Service port has no number on a pod.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no suitable port for manifest: {pod} (no {protocol} container port named {name:?})")]
pub(crate) struct NoSuchPort {
    pub pod: String,
    pub name: String,
    pub protocol: String,
}

/// Upstream `podutil.FindPort`: a numeric targetPort as is; a named one is the containerPort
/// of that name and the Service port's protocol in the pod's containers, then in its sidecars
/// (init containers with `restartPolicy: Always`). A missing targetPort means `port` (the API
/// defaults it so).
pub(crate) fn find_port(pod: &Pod, service_port: &ServicePort) -> Result<i32, NoSuchPort> {
    let name = match &service_port.target_port {
        None => return Ok(service_port.port),
        Some(IntOrString::Int(n)) => return Ok(*n),
        Some(IntOrString::String(name)) => name,
    };
    let protocol = service_port.protocol.as_deref().unwrap_or("TCP");
    if let Some(spec) = pod.spec.as_ref() {
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        for container in spec.containers.iter().chain(sidecars) {
            for port in container.ports.iter().flatten() {
                if port.name.as_deref() == Some(name.as_str())
                    && port.protocol.as_deref().unwrap_or("TCP") == protocol
                {
                    return Ok(port.container_port);
                }
            }
        }
    }
    Err(NoSuchPort {
        pod: pod.metadata.uid.clone().unwrap_or_default(),
        name: name.clone(),
        protocol: protocol.to_string(),
    })
}

/// Keys of the Services in `namespace` whose selector matches `labels`.
fn services_for_labels(
    services: &Cache<Service>,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> BTreeSet<String> {
    services
        .list(namespace)
        .iter()
        .filter(|service| selector(service).is_some_and(|s| selector_matches(s, labels)))
        .map(|service| {
            key(
                namespace,
                service.metadata.name.as_deref().unwrap_or_default(),
            )
        })
        .collect()
}

/// The Services a pod (added or deleted) belongs to (upstream `GetPodServiceMemberships`).
pub(crate) fn services_for_pod(services: &Cache<Service>, pod: &Pod) -> BTreeSet<String> {
    services_for_labels(
        services,
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.labels.as_ref(),
    )
}

/// Upstream `podEndpointsChanged`: (whether the pod's endpoint changed, whether the Services
/// it matches may have changed).
fn pod_endpoints_changed(old: &Pod, new: &Pod) -> (bool, bool) {
    let host_and_domain = |pod: &Pod| {
        pod.spec
            .as_ref()
            .map(|s| (s.hostname.clone(), s.subdomain.clone()))
    };
    let labels_changed =
        old.metadata.labels != new.metadata.labels || host_and_domain(old) != host_and_domain(new);
    let pod_changed = old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || is_pod_ready(old) != is_pod_ready(new)
        || pod_ips(old) != pod_ips(new);
    (pod_changed, labels_changed)
}

/// The Services a pod update concerns (upstream `GetServicesToUpdateOnPodChange`): none for a
/// resync or an irrelevant change; the current Services when only the pod changed; when the
/// labels changed, the Services it left or joined — all of both sets if the pod changed too.
pub(crate) fn services_to_update(
    services: &Cache<Service>,
    old: &Pod,
    new: &Pod,
) -> BTreeSet<String> {
    if old.metadata.resource_version == new.metadata.resource_version {
        return BTreeSet::new();
    }
    let (pod_changed, labels_changed) = pod_endpoints_changed(old, new);
    if !pod_changed && !labels_changed {
        return BTreeSet::new();
    }
    let current = services_for_pod(services, new);
    if !labels_changed {
        return current;
    }
    let previous = services_for_pod(services, old);
    if pod_changed {
        current.union(&previous).cloned().collect()
    } else {
        current.symmetric_difference(&previous).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("pod json")
    }

    fn service_port(value: serde_json::Value) -> ServicePort {
        serde_json::from_value(value).expect("port json")
    }

    fn service(name: &str, selector: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": selector},
        }))
        .expect("service json")
    }

    #[test]
    fn named_ports_resolve_per_pod_and_protocol() {
        let p = pod(json!({
            "metadata": {"name": "a", "uid": "u1"},
            "spec": {
                "containers": [{"name": "c", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                ]}],
                "initContainers": [{"name": "side", "restartPolicy": "Always",
                    "ports": [{"name": "metrics", "containerPort": 9090}]}],
            },
        }));
        let by_name = |name: &str, protocol: &str| {
            find_port(
                &p,
                &service_port(json!({"port": 80, "targetPort": name, "protocol": protocol})),
            )
        };
        assert_eq!(by_name("http", "TCP"), Ok(8080));
        assert_eq!(by_name("dns", "UDP"), Ok(53));
        assert_eq!(by_name("metrics", "TCP"), Ok(9090));
        assert!(by_name("dns", "TCP").is_err(), "protocol must match");
        assert!(by_name("grpc", "TCP").is_err());
        assert_eq!(
            find_port(&p, &service_port(json!({"port": 80, "targetPort": 9376}))),
            Ok(9376)
        );
        assert_eq!(find_port(&p, &service_port(json!({"port": 80}))), Ok(80));
    }

    #[test]
    fn terminal_ipless_and_deleting_pods_are_left_out() {
        let running = pod(json!({"status": {"phase": "Running", "podIP": "10.42.0.5"}}));
        assert!(should_pod_be_in_endpoints(&running, false));
        let no_ip = pod(json!({"status": {"phase": "Running"}}));
        assert!(!should_pod_be_in_endpoints(&no_ip, true));
        let done = pod(json!({"status": {"phase": "Succeeded", "podIP": "10.42.0.5"}}));
        assert!(!should_pod_be_in_endpoints(&done, true));
        let deleting = pod(json!({
            "metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"phase": "Running", "podIP": "10.42.0.5"},
        }));
        assert!(!should_pod_be_in_endpoints(&deleting, false));
        assert!(should_pod_be_in_endpoints(&deleting, true));
    }

    #[test]
    fn hostname_only_under_the_services_subdomain() {
        let svc = service("db", json!({"app": "db"}));
        let p = |subdomain: &str| {
            pod(json!({
                "metadata": {"name": "db-0", "namespace": "default"},
                "spec": {"containers": [], "hostname": "db-0", "subdomain": subdomain},
            }))
        };
        assert_eq!(hostname_for(&p("db"), &svc).as_deref(), Some("db-0"));
        assert_eq!(hostname_for(&p("other"), &svc), None);
    }

    #[test]
    fn pod_updates_enqueue_services_left_and_joined() {
        let services = Cache::<Service>::default();
        services.insert(service("web", json!({"app": "web"})));
        services.insert(service("api", json!({"app": "api"})));
        services.insert(service("manual", serde_json::Value::Null));
        let p = |rv: &str, app: &str, ready: &str| {
            pod(json!({
                "metadata": {"name": "p", "namespace": "default", "resourceVersion": rv,
                    "labels": {"app": app}},
                "status": {"podIP": "10.42.0.5",
                    "conditions": [{"type": "Ready", "status": ready}]},
            }))
        };
        let keys = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
        // A resync (same resourceVersion) and an irrelevant change enqueue nothing.
        assert!(
            services_to_update(&services, &p("1", "web", "True"), &p("1", "web", "False"))
                .is_empty()
        );
        assert!(
            services_to_update(&services, &p("1", "web", "True"), &p("2", "web", "True"))
                .is_empty()
        );
        // Readiness: the current Services.
        assert_eq!(
            keys(services_to_update(
                &services,
                &p("1", "web", "True"),
                &p("2", "web", "False")
            )),
            ["default/web"]
        );
        // Moved from web to api: both.
        assert_eq!(
            keys(services_to_update(
                &services,
                &p("1", "web", "True"),
                &p("2", "api", "True")
            )),
            ["default/api", "default/web"]
        );
    }
}
