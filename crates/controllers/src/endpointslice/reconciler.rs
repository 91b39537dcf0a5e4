//! The EndpointSlice reconciler (upstream staging `k8s.io/endpointslice` `Reconciler`): from a
//! Service, its pods and the slices it already has, decide which slices to create, update and
//! delete, then write them.
//!
//! Per address type the Service supports, endpoints are grouped by their resolved port set
//! (pods may serve a named port on different numbers) and each group is placed by upstream's
//! strategy, which favours few writes over perfectly packed slices:
//! 1. existing slices keep the endpoints still wanted (updated in place where they changed);
//!    a slice left empty is deleted;
//! 2. endpoints still to place first fill slices already being updated, fullest first;
//! 3. the rest go into the unchanged slice they fit best, else into new slices of at most
//!    `max_endpoints_per_slice`.
//!
//! A create paired with a delete becomes an update of the slice that would be deleted, and a
//! Service without any endpoint keeps one empty placeholder slice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use tracing::debug;

use super::{EndpointSliceController, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, MANAGED_BY};
use crate::endpoints::{HEADLESS_LABEL, LAST_CHANGE_TRIGGER_TIME, pods, trigger_time};

/// The node label whose value becomes an endpoint's zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// One failure of a reconcile; the others still run (upstream aggregates them).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Upstream's wording. The pod is left out until its Node shows up.
    #[error("skipping Pod {pod} for Service {service}: Node {node} Not Found")]
    NodeNotFound {
        pod: String,
        service: String,
        node: String,
    },
    #[error("failed to create EndpointSlice for Service {service}")]
    Create {
        service: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to update {slice} EndpointSlice for Service {service}")]
    Update {
        slice: String,
        service: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to delete {slice} EndpointSlice for Service {service}")]
    Delete {
        slice: String,
        service: String,
        #[source]
        source: kube::Error,
    },
}

/// What one reconcile writes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

/// Upstream `getAddressTypesForService`: the Service's IP families; without them (an API
/// server that does not set ipFamilies) the family of the cluster IP, or both for a headless
/// Service.
pub(crate) fn address_types(service: &Service) -> BTreeSet<&'static str> {
    let spec = service.spec.as_ref();
    let mut types: BTreeSet<&'static str> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|family| match family.as_str() {
            "IPv4" => Some("IPv4"),
            "IPv6" => Some("IPv6"),
            _ => None,
        })
        .collect();
    if !types.is_empty() {
        return types;
    }
    if pods::is_service_ip_set(service) {
        let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        types.insert(if pods::is_ipv6(ip) { "IPv6" } else { "IPv4" });
    } else {
        types.insert("IPv4");
        types.insert("IPv6");
    }
    types
}

/// Upstream `ownedBy`: a controller reference to this very Service (same UID).
fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    slice.metadata.owner_references.iter().flatten().any(|r| {
        r.kind == "Service"
            && r.api_version == "v1"
            && Some(&r.uid) == service.metadata.uid.as_ref()
    })
}

/// The identity of a port set, order and absent-vs-empty name aside.
type PortSetKey = Vec<(String, i32, String, String)>;

fn port_set_key(ports: Option<&[EndpointPort]>) -> PortSetKey {
    let mut key: PortSetKey = ports
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_default(),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    key.sort();
    key
}

/// Upstream `hashEndpoint`: what makes an endpoint the same endpoint — its pod, addresses and
/// hostname; conditions and placement may change in place. Ordered by pod, so new endpoints
/// are placed in pod-name order (upstream's order is random).
type EndpointKey = (String, String, Vec<String>, String);

fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    let target = endpoint.target_ref.as_ref();
    (
        target.and_then(|t| t.namespace.clone()).unwrap_or_default(),
        target.and_then(|t| t.name.clone()).unwrap_or_default(),
        addresses,
        endpoint.hostname.clone().unwrap_or_default(),
    )
}

/// Upstream `EndpointsEqualBeyondHash` (plus hints, which upstream reconciles in a later pass
/// with the same outcome): whether an endpoint needs no rewrite.
fn equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|r| ObjectReference {
            resource_version: None,
            ..r
        })
    };
    a.node_name == b.node_name
        && a.zone == b.zone
        && a.conditions == b.conditions
        && target(a) == target(b)
        && a.hints == b.hints
}

/// Upstream `getEndpointPorts`: each Service port resolved on this pod; ports the pod lacks
/// are left out (so its endpoint lands in a slice of a different port set).
fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let spec = service.spec.as_ref();
    let service_ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let mut ports = Vec::new();
    for service_port in service_ports {
        match pods::find_port(pod, service_port) {
            Ok(number) => ports.push(EndpointPort {
                name: Some(service_port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(
                    service_port
                        .protocol
                        .clone()
                        .unwrap_or_else(|| "TCP".into()),
                ),
                app_protocol: service_port.app_protocol.clone(),
            }),
            Err(e) => debug!(error = %e, "pod skipped for this Service port"),
        }
    }
    ports
}

/// Whether `trafficDistribution: PreferClose` asks for zone hints (and the older topology
/// annotations, which take precedence upstream, are absent).
fn prefer_close(service: &Service) -> bool {
    let annotated = service.metadata.annotations.as_ref().is_some_and(|a| {
        a.contains_key("service.kubernetes.io/topology-mode")
            || a.contains_key("service.kubernetes.io/topology-aware-hints")
    });
    !annotated
        && service
            .spec
            .as_ref()
            .and_then(|s| s.traffic_distribution.as_deref())
            == Some("PreferClose")
}

/// Upstream `podToEndpoint`.
fn pod_to_endpoint(
    pod: &Pod,
    node: Option<&Node>,
    service: &Service,
    address_type: &str,
) -> Endpoint {
    let serving = pods::is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    // A terminating endpoint is never ready (unless the Service publishes everything), but
    // keeps `serving` so proxies can drain to it when nothing else is left.
    let ready = publish_not_ready || (serving && !terminating);
    let zone = node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(ZONE_LABEL))
        .filter(|z| !z.is_empty())
        .cloned();
    let hints = zone
        .as_ref()
        .filter(|_| prefer_close(service))
        .map(|zone| EndpointHints {
            for_zones: Some(vec![ForZone { name: zone.clone() }]),
            for_nodes: None,
        });
    Endpoint {
        addresses: pods::pod_ips(pod)
            .into_iter()
            .filter(|ip| pods::is_ipv6(ip) == (address_type == "IPv6"))
            .map(str::to_string)
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(crate::endpoints::pod_reference(pod)),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        zone,
        hostname: pods::hostname_for(pod, service),
        hints,
        deprecated_topology: None,
    }
}

/// Upstream `setEndpointSliceLabels`: the Service's labels (reserved keys aside) plus the
/// slice's own; and whether the slice's non-reserved labels differed from the Service's.
fn slice_labels(slice: &EndpointSlice, service: &Service) -> (BTreeMap<String, String>, bool) {
    let reserved =
        |k: &str| k == LABEL_SERVICE_NAME || k == LABEL_MANAGED_BY || k == HEADLESS_LABEL;
    let own: BTreeMap<String, String> = slice
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let changed = own != labels;
    if !pods::is_service_ip_set(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    (labels, changed)
}

/// Upstream `newEndpointSlice`: named `<service>-<random>` by the API server, controlled by
/// the Service (so the garbage collector deletes it with the Service).
fn new_slice(service: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    let name = service.metadata.name.clone().unwrap_or_default();
    let mut slice = EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.metadata.namespace.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name,
                uid: service.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    };
    slice.metadata.labels = Some(slice_labels(&slice, service).0);
    slice
}

/// Whether an existing slice is the placeholder this reconcile would create anyway (upstream
/// compares namespace, labels, owners, address type, and empty ports and endpoints).
fn same_placeholder(existing: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    existing.metadata.namespace == placeholder.metadata.namespace
        && existing.metadata.labels.clone().unwrap_or_default()
            == placeholder.metadata.labels.clone().unwrap_or_default()
        && existing
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            == placeholder
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default()
        && existing.address_type == placeholder.address_type
        && existing.endpoints.is_empty()
        && existing.ports.as_ref().is_none_or(Vec::is_empty)
}

/// Upstream `getSliceToFill`: the unchanged slice the remaining endpoints fill most exactly.
fn slice_to_fill<'a>(
    candidates: &[&'a EndpointSlice],
    remaining: usize,
    max: usize,
) -> Option<&'a EndpointSlice> {
    let mut best: Option<(&EndpointSlice, usize)> = None;
    for slice in candidates {
        let Some(diff) = max.checked_sub(remaining + slice.endpoints.len()) else {
            continue;
        };
        if best.is_none_or(|(_, d)| diff < d) {
            best = Some((slice, diff));
            if diff == 0 {
                break;
            }
        }
    }
    best.map(|(slice, _)| slice)
}

/// Upstream `reconcileByPortMapping`: the placement strategy for one port set.
fn reconcile_port_set(
    service: &Service,
    existing: &[Arc<EndpointSlice>],
    mut desired: BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    address_type: &str,
    max: usize,
    plan: &mut Plan,
) {
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeSet<String> = BTreeSet::new();
    let mut to_update: BTreeSet<String> = BTreeSet::new();
    let mut to_delete: BTreeSet<String> = BTreeSet::new();

    // 1. Keep the endpoints still wanted, in their current slices.
    for slice in existing {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let mut kept = Vec::new();
        let mut changed = false;
        for endpoint in &slice.endpoints {
            if let Some(want) = desired.remove(&endpoint_key(endpoint)) {
                changed |= !equal_beyond_key(&want, endpoint);
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(slice, service);
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
                by_name.insert(name, (**slice).clone());
            } else {
                let mut updated = (**slice).clone();
                updated.endpoints = kept;
                updated.metadata.labels = Some(labels);
                to_update.insert(name.clone());
                by_name.insert(name, updated);
            }
        } else if labels_changed {
            let mut updated = (**slice).clone();
            updated.metadata.labels = Some(labels);
            to_update.insert(name.clone());
            by_name.insert(name, updated);
        } else {
            unchanged.insert(name.clone());
            by_name.insert(name, (**slice).clone());
        }
    }

    // 2. Fill the slices being written anyway, fullest first.
    if !desired.is_empty() && !to_update.is_empty() {
        let mut order: Vec<&String> = to_update.iter().collect();
        order.sort_by_key(|name| {
            std::cmp::Reverse(by_name.get(*name).map_or(0, |s| s.endpoints.len()))
        });
        let order: Vec<String> = order.into_iter().cloned().collect();
        for name in order {
            let Some(slice) = by_name.get_mut(&name) else {
                continue;
            };
            while slice.endpoints.len() < max {
                let Some((_, endpoint)) = desired.pop_first() else {
                    break;
                };
                slice.endpoints.push(endpoint);
            }
        }
    }

    // 3. The rest: into the unchanged slice they fit best, else new slices.
    while !desired.is_empty() {
        let mut target: Option<EndpointSlice> = None;
        if desired.len() < max && !unchanged.is_empty() {
            let candidates: Vec<&EndpointSlice> = unchanged
                .iter()
                .filter_map(|name| by_name.get(name))
                .collect();
            target = slice_to_fill(&candidates, desired.len(), max).cloned();
        }
        let mut slice = target.unwrap_or_else(|| new_slice(service, ports.to_vec(), address_type));
        while slice.endpoints.len() < max {
            let Some((_, endpoint)) = desired.pop_first() else {
                break;
            };
            slice.endpoints.push(endpoint);
        }
        match slice.metadata.name.clone() {
            Some(name) => {
                unchanged.remove(&name);
                to_update.insert(name.clone());
                by_name.insert(name, slice);
            }
            None => plan.create.push(slice),
        }
    }

    plan.update
        .extend(to_update.iter().filter_map(|n| by_name.get(n).cloned()));
    plan.delete
        .extend(to_delete.iter().filter_map(|n| by_name.get(n).cloned()));
}

/// Upstream `reconcileByAddressType` up to the writes: the plan for one address type, and the
/// pods left out for want of their Node.
pub(crate) fn plan_address_type(
    service: &Service,
    pods: &[Arc<Pod>],
    node: &dyn Fn(&str) -> Option<Arc<Node>>,
    existing: &[Arc<EndpointSlice>],
    address_type: &str,
    max: usize,
) -> (Plan, Vec<ReconcileError>) {
    let mut plan = Plan::default();
    let mut errors = Vec::new();
    let service_key = pods::key(
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default(),
    );
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);

    // Existing slices by port set; slices of another (older) Service of this name go.
    let mut existing_by_ports: BTreeMap<PortSetKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, service) {
            existing_by_ports
                .entry(port_set_key(slice.ports.as_deref()))
                .or_default()
                .push(slice.clone());
        } else {
            plan.delete.push((**slice).clone());
        }
    }

    // Desired endpoints by port set; terminating pods are included (with ready=false).
    let mut desired_by_ports: BTreeMap<
        PortSetKey,
        (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>),
    > = BTreeMap::new();
    for pod in pods {
        if !pods::should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let key = port_set_key(Some(&ports));
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let entry = desired_by_ports
            .entry(key)
            .or_insert_with(|| (ports, BTreeMap::new()));
        let node = node(&node_name);
        if node.is_none() && !publish_not_ready {
            // Left out, and the Service retried, until the Node exists (the pod garbage
            // collector removes pods of Nodes that never come back).
            errors.push(ReconcileError::NodeNotFound {
                pod: pod.metadata.name.clone().unwrap_or_default(),
                service: service_key.clone(),
                node: node_name,
            });
            continue;
        }
        let endpoint = pod_to_endpoint(pod, node.as_deref(), service, address_type);
        if !endpoint.addresses.is_empty() {
            entry.1.insert(endpoint_key(&endpoint), endpoint);
        }
    }

    for (key, (ports, desired)) in desired_by_ports.iter() {
        let existing = existing_by_ports
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or_default();
        reconcile_port_set(
            service,
            existing,
            desired.clone(),
            ports,
            address_type,
            max,
            &mut plan,
        );
    }
    for (key, slices) in &existing_by_ports {
        if !desired_by_ports.contains_key(key) {
            plan.delete.extend(slices.iter().map(|s| (**s).clone()));
        }
    }

    // A Service with no endpoints at all keeps one empty placeholder slice.
    if existing.len() == plan.delete.len() && plan.create.is_empty() {
        let placeholder = new_slice(service, Vec::new(), address_type);
        if plan.delete.len() == 1 && same_placeholder(&plan.delete[0], &placeholder) {
            plan.delete.clear();
        } else {
            plan.create.push(placeholder);
        }
    }
    (plan, errors)
}

/// Upstream `addTriggerTimeAnnotation`.
fn set_trigger_time(slice: &mut EndpointSlice, trigger_time: Option<jiff::Timestamp>) {
    let mut annotations = slice.metadata.annotations.take().unwrap_or_default();
    match trigger_time {
        Some(time) => {
            annotations.insert(LAST_CHANGE_TRIGGER_TIME.into(), trigger_time::format(time));
        }
        None => {
            annotations.remove(LAST_CHANGE_TRIGGER_TIME);
        }
    }
    slice.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
}

/// Upstream's pairing in `finalize`: a slice to create takes the place of one to delete (same
/// address type, owned by this Service), written as an update.
pub(crate) fn pair_creates_with_deletes(service: &Service, plan: &mut Plan) {
    let mut i = 0;
    while i < plan.delete.len() && !plan.create.is_empty() {
        let reusable = plan
            .create
            .last()
            .is_some_and(|c| c.address_type == plan.delete[i].address_type)
            && owned_by(&plan.delete[i], service);
        if reusable && let Some(mut slice) = plan.create.pop() {
            let old = plan.delete.remove(i);
            slice.metadata.name = old.metadata.name;
            slice.metadata.generate_name = None;
            plan.update.push(slice);
        } else {
            i += 1;
        }
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

impl EndpointSliceController {
    /// Upstream `finalize`: performs the plan. Stops at the first failure (the Service is
    /// retried from current state).
    pub(crate) async fn finalize(
        &self,
        service: &Service,
        mut plan: Plan,
        trigger_time: Option<jiff::Timestamp>,
    ) -> Result<(), ReconcileError> {
        pair_creates_with_deletes(service, &mut plan);
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let service_key = pods::key(
            namespace,
            service.metadata.name.as_deref().unwrap_or_default(),
        );
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
        // No new slices for a Service being deleted: the garbage collector would race them.
        if service.metadata.deletion_timestamp.is_none() {
            for mut slice in plan.create {
                set_trigger_time(&mut slice, trigger_time);
                match api.create(&PostParams::default(), &slice).await {
                    Ok(created) => self.lock_tracker().update(&created),
                    Err(e) if crate::endpoints::namespace_terminating(&e) => return Ok(()),
                    Err(source) => {
                        return Err(ReconcileError::Create {
                            service: service_key,
                            source,
                        });
                    }
                }
            }
        }
        for mut slice in plan.update {
            set_trigger_time(&mut slice, trigger_time);
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.replace(&name, &PostParams::default(), &slice).await {
                Ok(updated) => self.lock_tracker().update(&updated),
                Err(source) => {
                    return Err(ReconcileError::Update {
                        slice: name,
                        service: service_key,
                        source,
                    });
                }
            }
        }
        for slice in plan.delete {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => self.lock_tracker().expect_deletion(&slice),
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(ReconcileError::Delete {
                        slice: name,
                        service: service_key,
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid",
                "labels": {"app": "web"}},
            "spec": spec,
        }))
        .expect("service")
    }

    fn pod(i: usize, ready: bool, http_port: i32) -> Arc<Pod> {
        let ip = format!("10.42.{}.{}", i / 250, i % 250 + 1);
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("web-{i:03}"), "namespace": "default",
                    "uid": format!("pod-{i}")},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c",
                    "ports": [{"name": "http", "containerPort": http_port}]}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
            }))
            .expect("pod"),
        )
    }

    fn node(_: &str) -> Option<Arc<Node>> {
        Some(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "node-1",
                "labels": {"topology.kubernetes.io/zone": "zone-a"}}}))
            .expect("node"),
        ))
    }

    fn svc() -> Service {
        service(
            json!({"selector": {"app": "web"}, "clusterIP": "10.43.0.10",
            "ipFamilies": ["IPv4"], "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        )
    }

    /// Applies a plan as the API would, naming created slices.
    fn apply(existing: &mut Vec<Arc<EndpointSlice>>, mut plan: Plan, next: &mut usize) {
        pair_creates_with_deletes(&svc(), &mut plan);
        for slice in plan.delete {
            existing.retain(|s| s.metadata.name != slice.metadata.name);
        }
        for slice in plan.update {
            let i = existing
                .iter()
                .position(|s| s.metadata.name == slice.metadata.name)
                .expect("updated slice exists");
            existing[i] = Arc::new(slice);
        }
        for mut slice in plan.create {
            *next += 1;
            slice.metadata.name = Some(format!("web-{next}"));
            existing.push(Arc::new(slice));
        }
    }

    #[test]
    fn endpoints_carry_conditions_zone_and_target() {
        let s = svc();
        let mut terminating = (*pod(1, true, 8080)).clone();
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let pods = vec![
            pod(0, true, 8080),
            Arc::new(terminating),
            pod(2, false, 8080),
        ];
        let (plan, errors) = plan_address_type(&s, &pods, &node, &[], "IPv4", 100);
        assert!(errors.is_empty());
        assert_eq!(plan.create.len(), 1);
        let slice = &plan.create[0];
        assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
        let owner = &slice.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", "svc-uid")
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        let labels = slice.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get(LABEL_SERVICE_NAME).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels.get(LABEL_MANAGED_BY).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        let conditions: Vec<_> = slice
            .endpoints
            .iter()
            .map(|e| e.conditions.clone().expect("conditions"))
            .map(|c| (c.ready, c.serving, c.terminating))
            .collect();
        assert_eq!(
            conditions,
            [
                (Some(true), Some(true), Some(false)),
                (Some(false), Some(true), Some(true)),
                (Some(false), Some(false), Some(false)),
            ]
        );
        assert_eq!(slice.endpoints[0].zone.as_deref(), Some("zone-a"));
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));
        assert_eq!(slice.endpoints[0].hints, None);
        let port = &slice.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
    }

    #[test]
    fn missing_nodes_leave_pods_out_unless_publishing_not_ready() {
        let pods = vec![pod(0, true, 8080)];
        let (plan, errors) = plan_address_type(&svc(), &pods, &|_| None, &[], "IPv4", 100);
        assert_eq!(errors.len(), 1);
        assert!(plan.create[0].endpoints.is_empty(), "placeholder only");
        let mut publish = svc();
        if let Some(spec) = publish.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(true);
        }
        let (plan, errors) = plan_address_type(&publish, &pods, &|_| None, &[], "IPv4", 100);
        assert!(errors.is_empty());
        assert_eq!(plan.create[0].endpoints.len(), 1);
    }

    #[test]
    fn scale_up_fills_slices_and_scale_down_updates_in_place() {
        let s = svc();
        let mut slices = Vec::new();
        let mut next = 0;
        let all: Vec<_> = (0..250).map(|i| pod(i, true, 8080)).collect();
        let (plan, _) = plan_address_type(&s, &all, &node, &slices, "IPv4", 100);
        assert_eq!((plan.create.len(), plan.update.len()), (3, 0));
        apply(&mut slices, plan, &mut next);
        let mut sizes: Vec<_> = slices.iter().map(|s| s.endpoints.len()).collect();
        sizes.sort();
        assert_eq!(sizes, [50, 100, 100]);

        // Nothing changed: nothing to write.
        let (plan, _) = plan_address_type(&s, &all, &node, &slices, "IPv4", 100);
        assert!(plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty());

        // Scale to 10: slices that lose everything are deleted, the rest updated in place.
        let (plan, _) = plan_address_type(&s, &all[..10], &node, &slices, "IPv4", 100);
        assert!(plan.create.is_empty());
        assert_eq!((plan.update.len(), plan.delete.len()), (1, 2));
        let kept = plan.update[0].metadata.name.clone();
        apply(&mut slices, plan, &mut next);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].metadata.name, kept);
        assert_eq!(slices[0].endpoints.len(), 10);

        // 30 more: they fit into the existing slice.
        let forty: Vec<_> = (0..40).map(|i| pod(i, true, 8080)).collect();
        let (plan, _) = plan_address_type(&s, &forty, &node, &slices, "IPv4", 100);
        assert_eq!((plan.create.len(), plan.update.len()), (0, 1));
    }

    #[test]
    fn named_ports_split_slices_by_port_set() {
        let pods = vec![pod(0, true, 8080), pod(1, true, 9090)];
        let (plan, _) = plan_address_type(&svc(), &pods, &node, &[], "IPv4", 100);
        let mut ports: Vec<_> = plan
            .create
            .iter()
            .map(|s| s.ports.as_ref().expect("ports")[0].port)
            .collect();
        ports.sort();
        assert_eq!(ports, [Some(8080), Some(9090)]);
    }

    #[test]
    fn an_empty_service_keeps_its_placeholder_and_prefer_close_sets_hints() {
        let s = svc();
        let (plan, _) = plan_address_type(&s, &[], &node, &[], "IPv4", 100);
        assert_eq!(plan.create.len(), 1);
        let mut placeholder = plan.create[0].clone();
        placeholder.metadata.name = Some("web-1".into());
        let (plan, _) = plan_address_type(&s, &[], &node, &[Arc::new(placeholder)], "IPv4", 100);
        assert!(plan.create.is_empty() && plan.delete.is_empty() && plan.update.is_empty());

        let mut close = svc();
        if let Some(spec) = close.spec.as_mut() {
            spec.traffic_distribution = Some("PreferClose".into());
        }
        let (plan, _) = plan_address_type(&close, &[pod(0, true, 8080)], &node, &[], "IPv4", 100);
        let hints = plan.create[0].endpoints[0].hints.clone().expect("hints");
        assert_eq!(hints.for_zones.expect("zones")[0].name, "zone-a");
    }

    #[test]
    fn address_types_follow_ip_families() {
        assert_eq!(
            address_types(&svc()).into_iter().collect::<Vec<_>>(),
            ["IPv4"]
        );
        let headless = service(json!({"clusterIP": "None"}));
        assert_eq!(address_types(&headless).len(), 2);
        let v6 = service(json!({"clusterIP": "fd00::10"}));
        assert_eq!(address_types(&v6).into_iter().collect::<Vec<_>>(), ["IPv6"]);
    }
}
