//! The subsets of a core/v1 Endpoints object, built from a Service and its pods as upstream's
//! Endpoints controller builds them:
//!
//! * one (address, port) pair per pod and Service port, the port resolved per pod; a ready pod
//!   (or any pod when `publishNotReadyAddresses`) goes to `addresses`, others to
//!   `notReadyAddresses`; a headless Service without ports lists bare addresses;
//! * [`repack`] (upstream `endpoints.RepackSubsets`): addresses that offer the same set of ports
//!   share one subset; an address ready on one port and not on another counts as not ready;
//! * [`truncate`]: at most [`MAX_CAPACITY`] addresses, ready ones first, spread over the subsets
//!   in proportion (the over-capacity annotation marks it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service,
};
use tracing::debug;

use super::pods;

/// Addresses an Endpoints object holds at most (upstream `maxCapacity`).
pub const MAX_CAPACITY: usize = 1000;

/// One address offering one port (or no port: headless Services may have none).
struct Entry {
    address: EndpointAddress,
    port: Option<EndpointPort>,
    ready: bool,
}

/// Upstream `podToEndpointAddressForService`: the pod IP of the Service's (first) IP family.
fn pod_address(service: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let spec = service.spec.as_ref();
    let ipv6 = match spec
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
    {
        Some(family) => family == "IPv6",
        // An API server that does not set ipFamilies: the family of the cluster IP, or for a
        // headless Service that of the pod's primary IP.
        None if pods::is_service_ip_set(service) => {
            pods::is_ipv6(spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or(""))
        }
        None => pods::pod_ips(pod)
            .first()
            .is_some_and(|ip| pods::is_ipv6(ip)),
    };
    let ip = pods::pod_ips(pod)
        .into_iter()
        .find(|ip| pods::is_ipv6(ip) == ipv6)?;
    Some(EndpointAddress {
        ip: ip.to_string(),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(pod_reference(pod)),
        hostname: None,
    })
}

/// The targetRef naming a pod.
pub(crate) fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The subsets the Service should have, repacked and sorted (not yet truncated).
pub(crate) fn desired_subsets(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = service.spec.as_ref();
    let publish_not_ready = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let service_ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let mut entries = Vec::new();
    for pod in pods {
        if !pods::should_pod_be_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        let Some(mut address) = pod_address(service, pod) else {
            debug!(pod = ?pod.metadata.name, "no pod IP of the Service's family");
            continue;
        };
        address.hostname = pods::hostname_for(pod, service);
        let ready = publish_not_ready || pods::is_pod_ready(pod);
        if service_ports.is_empty() {
            // Only a headless Service may do without ports.
            if pods::is_headless(service) {
                entries.push(Entry {
                    address,
                    port: None,
                    ready,
                });
            }
            continue;
        }
        for service_port in service_ports {
            let number = match pods::find_port(pod, service_port) {
                Ok(number) => number,
                Err(e) => {
                    debug!(error = %e, "pod skipped for this Service port");
                    continue;
                }
            };
            entries.push(Entry {
                address: address.clone(),
                port: Some(EndpointPort {
                    name: service_port.name.clone().filter(|n| !n.is_empty()),
                    port: number,
                    protocol: Some(
                        service_port
                            .protocol
                            .clone()
                            .unwrap_or_else(|| "TCP".into()),
                    ),
                    app_protocol: service_port.app_protocol.clone(),
                }),
                ready,
            });
        }
    }
    repack(entries)
}

/// What identifies an address: its IP and its pod (two pods may briefly share an IP).
type AddressKey = (String, String);

fn address_key(address: &EndpointAddress) -> AddressKey {
    (
        address.ip.clone(),
        address
            .target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    )
}

/// A port as a sortable key; `None` stands for "no port" (headless without ports).
type PortKey = Option<(String, i32, String, Option<String>)>;

fn port_key(port: &Option<EndpointPort>) -> PortKey {
    port.as_ref().map(|p| {
        (
            p.name.clone().unwrap_or_default(),
            p.port,
            p.protocol.clone().unwrap_or_default(),
            p.app_protocol.clone(),
        )
    })
}

/// Groups addresses by the set of ports they offer.
fn repack(entries: Vec<Entry>) -> Vec<EndpointSubset> {
    let mut addresses: HashMap<AddressKey, EndpointAddress> = HashMap::new();
    let mut ports: BTreeMap<PortKey, EndpointPort> = BTreeMap::new();
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddressKey, bool>> = BTreeMap::new();
    for entry in entries {
        let key = address_key(&entry.address);
        addresses.entry(key.clone()).or_insert(entry.address);
        let port = port_key(&entry.port);
        if let Some(p) = entry.port {
            ports.insert(port.clone(), p);
        }
        // Not ready on any pass wins over ready.
        by_port
            .entry(port)
            .or_default()
            .entry(key)
            .and_modify(|ready| *ready &= entry.ready)
            .or_insert(entry.ready);
    }
    // The same (address, readiness) set offering several ports is one subset.
    let mut by_addresses: BTreeMap<Vec<(AddressKey, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (port, set) in by_port {
        let ports_of_set = by_addresses.entry(set.into_iter().collect()).or_default();
        if let Some(p) = ports.get(&port) {
            ports_of_set.push(p.clone());
        }
    }
    by_addresses
        .into_iter()
        .map(|(set, ports)| {
            let pick = |want: bool| -> Option<Vec<EndpointAddress>> {
                let list: Vec<EndpointAddress> = set
                    .iter()
                    .filter(|(_, ready)| *ready == want)
                    .filter_map(|(key, _)| addresses.get(key).cloned())
                    .collect();
                (!list.is_empty()).then_some(list)
            };
            EndpointSubset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

/// Upstream `truncateEndpoints`: keeps at most [`MAX_CAPACITY`] addresses, ready ones first;
/// each subset keeps a share in proportion to its size (rounded up, the last ones get what is
/// left). Returns whether anything was dropped.
pub(crate) fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |list: &Option<Vec<EndpointAddress>>| list.as_ref().map_or(0, Vec::len);
    let total_ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let total_not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if total_ready + total_not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = total_ready > MAX_CAPACITY;
    let (budget, total) = if truncate_ready {
        (MAX_CAPACITY, total_ready)
    } else {
        (MAX_CAPACITY - total_ready, total_not_ready)
    };
    let mut left = budget;
    for subset in subsets.iter_mut() {
        let list = if truncate_ready {
            subset.not_ready_addresses = None;
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let in_subset = count(list);
        let share = (in_subset * budget).div_ceil(total.max(1)).min(left);
        if let Some(addresses) = list.as_mut() {
            addresses.truncate(share);
            left -= addresses.len();
            if addresses.is_empty() {
                *list = None;
            }
        }
    }
    true
}

/// Upstream `capacityAnnotationSetCorrectly`: the stored subsets are within capacity and carry
/// no over-capacity annotation (a truncated object is rewritten on every sync).
pub(crate) fn capacity_annotation_set_correctly(
    annotations: Option<&BTreeMap<String, String>>,
    subsets: &[EndpointSubset],
) -> bool {
    let count: usize = subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    if count > MAX_CAPACITY {
        return false;
    }
    !annotations.is_some_and(|a| a.contains_key(super::OVER_CAPACITY))
}

/// The subsets as the API returns them (`omitempty`: empty strings and lists absent), without
/// targetRef resourceVersions, so stored and desired subsets compare equal when they mean the
/// same (upstream compares ignoring the pods' resourceVersion).
pub(crate) fn normalized(subsets: Option<&[EndpointSubset]>) -> Vec<EndpointSubset> {
    let address = |a: &EndpointAddress| EndpointAddress {
        hostname: a.hostname.clone().filter(|h| !h.is_empty()),
        target_ref: a.target_ref.clone().map(|r| ObjectReference {
            resource_version: None,
            ..r
        }),
        ..a.clone()
    };
    let list = |l: &Option<Vec<EndpointAddress>>| {
        l.as_ref()
            .filter(|l| !l.is_empty())
            .map(|l| l.iter().map(address).collect())
    };
    subsets
        .unwrap_or_default()
        .iter()
        .map(|s| EndpointSubset {
            addresses: list(&s.addresses),
            not_ready_addresses: list(&s.not_ready_addresses),
            ports: s.ports.as_ref().filter(|p| !p.is_empty()).map(|ports| {
                ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: p.name.clone().filter(|n| !n.is_empty()),
                        protocol: p.protocol.clone().filter(|n| !n.is_empty()),
                        ..p.clone()
                    })
                    .collect()
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
        )
        .expect("service")
    }

    fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "spec": {"nodeName": "n1", "containers": [{"name": "c",
                    "ports": [{"name": "http", "containerPort": http_port}]}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .expect("pod"),
        )
    }

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_share_a_subset_per_port_set() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "admin", "port": 81, "targetPort": 9000},
        ]}));
        let pods = [
            pod("b", "10.42.0.2", true, 8080),
            pod("a", "10.42.0.1", false, 8080),
            pod("c", "10.42.0.3", true, 9090),
        ];
        let subsets = desired_subsets(&svc, &pods);
        // 8080 (a, b), 9090 (c) and the numeric 9000 that all three offer.
        assert_eq!(subsets.len(), 3, "{subsets:#?}");
        let on_8080 = subsets
            .iter()
            .find(|s| s.ports.iter().flatten().any(|p| p.port == 8080))
            .expect("8080 subset");
        assert_eq!(ips(&on_8080.addresses), ["10.42.0.2"]);
        assert_eq!(ips(&on_8080.not_ready_addresses), ["10.42.0.1"]);
        assert_eq!(on_8080.ports.as_ref().map(Vec::len), Some(1));
        let on_9000 = subsets
            .iter()
            .find(|s| s.ports.iter().flatten().any(|p| p.port == 9000))
            .expect("9000 subset");
        assert_eq!(ips(&on_9000.addresses), ["10.42.0.2", "10.42.0.3"]);
        assert_eq!(ips(&on_9000.not_ready_addresses), ["10.42.0.1"]);
        let on_9090 = subsets
            .iter()
            .find(|s| s.ports.iter().flatten().any(|p| p.port == 9090))
            .expect("9090 subset");
        assert_eq!(ips(&on_9090.addresses), ["10.42.0.3"]);
    }

    #[test]
    fn publish_not_ready_lists_everything_as_ready() {
        let svc = service(
            json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true,
            "ports": [{"port": 80, "targetPort": 8080}]}),
        );
        let subsets = desired_subsets(&svc, &[pod("a", "10.42.0.1", false, 8080)]);
        assert_eq!(ips(&subsets[0].addresses), ["10.42.0.1"]);
        assert_eq!(subsets[0].not_ready_addresses, None);
    }

    #[test]
    fn headless_without_ports_lists_bare_addresses() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let subsets = desired_subsets(&svc, &[pod("a", "10.42.0.1", true, 8080)]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].ports, None);
        let with_ip = service(json!({"selector": {"app": "web"}, "clusterIP": "10.43.0.5"}));
        assert!(desired_subsets(&with_ip, &[pod("a", "10.42.0.1", true, 8080)]).is_empty());
    }

    #[test]
    fn truncation_keeps_ready_addresses_first_in_proportion() {
        let address = |i: usize| EndpointAddress {
            ip: format!("10.42.{}.{}", i / 250, i % 250),
            ..Default::default()
        };
        let mut subsets = vec![
            EndpointSubset {
                addresses: Some((0..600).map(address).collect()),
                not_ready_addresses: Some((600..700).map(address).collect()),
                ports: None,
            },
            EndpointSubset {
                addresses: Some((700..1000).map(address).collect()),
                not_ready_addresses: Some((1000..1300).map(address).collect()),
                ports: None,
            },
        ];
        assert!(truncate(&mut subsets));
        let ready: usize = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!((ready, not_ready), (900, 100));
        // 100 not-ready slots split 100:300 → 25 and 75.
        assert_eq!(
            subsets[0].not_ready_addresses.as_ref().map(Vec::len),
            Some(25)
        );
        assert_eq!(
            subsets[1].not_ready_addresses.as_ref().map(Vec::len),
            Some(75)
        );
        assert!(!capacity_annotation_set_correctly(
            None,
            &[EndpointSubset {
                addresses: Some((0..1001).map(address).collect()),
                ..Default::default()
            }]
        ));
    }
}
