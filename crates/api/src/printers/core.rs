//! core/v1 kinds other than Pod and ReplicationController.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use serde_json::Value;

use super::descriptions as d;
use super::{
    Column, age, array_at, container_cells, int_at, is_deleting, labels_at, len_at,
    load_balancer_ingress, name, or_placeholder, quantity_at, str_at, translate_timestamp_since,
};

const NAME: Column = ("Name", "string", "name", d::OBJECT_META_NAME, 0);
const AGE: Column = ("Age", "string", "", d::OBJECT_META_CREATION_TIMESTAMP, 0);

pub(super) const POD_TEMPLATE_COLUMNS: &[Column] = &[
    NAME,
    (
        "Containers",
        "string",
        "",
        "Names of each container in the template.",
        0,
    ),
    (
        "Images",
        "string",
        "",
        "Images referenced by each container in the template.",
        0,
    ),
    (
        "Pod Labels",
        "string",
        "",
        "The labels for the pod template.",
        0,
    ),
];

pub(super) fn pod_template_cells(obj: &Value, _now: jiff::Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/template/spec"));
    vec![
        name(obj).into(),
        names,
        images,
        labels_at(obj, "/template/metadata/labels"),
    ]
}

pub(super) const NODE_COLUMNS: &[Column] = &[
    NAME,
    ("Status", "string", "", "The status of the node", 0),
    ("Roles", "string", "", "The roles of the node", 0),
    AGE,
    ("Version", "string", "", d::NODE_INFO_KUBELET_VERSION, 0),
    ("Internal-IP", "string", "", d::NODE_STATUS_ADDRESSES, 1),
    ("External-IP", "string", "", d::NODE_STATUS_ADDRESSES, 1),
    ("OS-Image", "string", "", d::NODE_INFO_OS_IMAGE, 1),
    (
        "Kernel-Version",
        "string",
        "",
        d::NODE_INFO_KERNEL_VERSION,
        1,
    ),
    (
        "Container-Runtime",
        "string",
        "",
        d::NODE_INFO_CONTAINER_RUNTIME,
        1,
    ),
];

/// Roles come from `node-role.kubernetes.io/<role>` label keys and the legacy
/// `kubernetes.io/role=<role>` label, sorted and de-duplicated.
fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str().filter(|v| !v.is_empty())
            {
                roles.insert(v.to_string());
            }
        }
    }
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn node_address(node: &Value, type_: &str) -> String {
    array_at(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == type_)
        .map_or_else(
            || "<none>".to_string(),
            |a| str_at(a, "/address").to_string(),
        )
}

pub(super) fn node_cells(node: &Value, now: jiff::Timestamp) -> Vec<Value> {
    // Only the Ready condition is shown; upstream keeps the last one of each type.
    let ready = array_at(node, "/status/conditions")
        .iter()
        .rfind(|c| str_at(c, "/type") == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, "/status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    vec![
        name(node).into(),
        status.join(",").into(),
        node_roles(node).into(),
        age(node, now),
        str_at(node, "/status/nodeInfo/kubeletVersion").into(),
        node_address(node, "InternalIP").into(),
        node_address(node, "ExternalIP").into(),
        or_placeholder(str_at(node, "/status/nodeInfo/osImage"), "<unknown>").into(),
        or_placeholder(str_at(node, "/status/nodeInfo/kernelVersion"), "<unknown>").into(),
        or_placeholder(
            str_at(node, "/status/nodeInfo/containerRuntimeVersion"),
            "<unknown>",
        )
        .into(),
    ]
}

pub(super) const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    ("Type", "string", "", d::SERVICE_SPEC_TYPE, 0),
    ("Cluster-IP", "string", "", d::SERVICE_SPEC_CLUSTER_IP, 0),
    ("External-IP", "string", "", d::SERVICE_SPEC_EXTERNAL_IPS, 0),
    ("Port(s)", "string", "", d::SERVICE_SPEC_PORTS, 0),
    AGE,
    ("Selector", "string", "", d::SERVICE_SPEC_SELECTOR, 1),
];

/// Upstream `getServiceExternalIP` (wide, so load balancer addresses are not clipped).
fn service_external_ip(svc: &Value) -> String {
    let external_ips: Vec<&str> = array_at(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_at(svc, "/spec/type") {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(svc, "/status/loadBalancer/ingress");
            if !external_ips.is_empty() {
                let mut results: Vec<&str> = if lb.is_empty() {
                    Vec::new()
                } else {
                    lb.split(',').collect()
                };
                results.extend(external_ips);
                return results.join(",");
            }
            if lb.is_empty() {
                "<pending>".to_string()
            } else {
                lb
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// Upstream `makePortString`: `80/TCP`, or `80:30080/TCP` with a node port.
fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = array_at(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int_at(p, "/port");
            let protocol = str_at(p, "/protocol");
            let node_port = int_at(p, "/nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect();
    if pieces.is_empty() {
        "<none>".to_string()
    } else {
        pieces.join(",")
    }
}

pub(super) fn service_cells(svc: &Value, now: jiff::Timestamp) -> Vec<Value> {
    // v1 → internal conversion fills clusterIPs from clusterIP when only the latter is set.
    let mut cluster_ip = str_at(svc, "/spec/clusterIPs/0");
    if cluster_ip.is_empty() {
        cluster_ip = str_at(svc, "/spec/clusterIP");
    }
    vec![
        name(svc).into(),
        str_at(svc, "/spec/type").into(),
        or_placeholder(cluster_ip, "<none>").into(),
        service_external_ip(svc).into(),
        service_ports(svc).into(),
        age(svc, now),
        labels_at(svc, "/spec/selector"),
    ]
}

pub(super) const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    ("Endpoints", "string", "", d::ENDPOINTS_SUBSETS, 0),
    AGE,
];

/// Go's `net.JoinHostPort`: IPv6 addresses are bracketed.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') || host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream `formatEndpoints` for all ports: at most three `ip:port` entries, then `+ N more...`.
fn format_endpoints(obj: &Value) -> String {
    let subsets = array_at(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addresses = array_at(ss, "/addresses");
        let ports = array_at(ss, "/ports");
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(a, "/ip"), int_at(port, "/port")));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - MAX)
    } else {
        ret
    }
}

pub(super) fn endpoints_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        format_endpoints(obj).into(),
        age(obj, now),
    ]
}

pub(super) const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    ("Status", "string", "", "The status of the namespace", 0),
    AGE,
];

pub(super) fn namespace_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        str_at(obj, "/status/phase").into(),
        age(obj, now),
    ]
}

pub(super) const CONFIG_MAP_COLUMNS: &[Column] =
    &[NAME, ("Data", "string", "", d::CONFIG_MAP_DATA, 0), AGE];

pub(super) fn config_map_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let data = len_at(obj, "/data") + len_at(obj, "/binaryData");
    vec![name(obj).into(), (data as i64).into(), age(obj, now)]
}

pub(super) const SECRET_COLUMNS: &[Column] = &[
    NAME,
    ("Type", "string", "", d::SECRET_TYPE, 0),
    ("Data", "string", "", d::SECRET_DATA, 0),
    AGE,
];

pub(super) fn secret_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    // stringData is merged into data on write; count keys once either way.
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for field in ["data", "stringData"] {
        if let Some(m) = obj.get(field).and_then(Value::as_object) {
            keys.extend(m.keys().map(String::as_str));
        }
    }
    vec![
        name(obj).into(),
        str_at(obj, "/type").into(),
        (keys.len() as i64).into(),
        age(obj, now),
    ]
}

pub(super) const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    ("Secrets", "string", "", d::SERVICE_ACCOUNT_SECRETS, 0),
    AGE,
];

pub(super) fn service_account_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        (len_at(obj, "/secrets") as i64).into(),
        age(obj, now),
    ]
}

pub(super) const EVENT_COLUMNS: &[Column] = &[
    ("Last Seen", "string", "", d::EVENT_LAST_TIMESTAMP, 0),
    ("Type", "string", "", d::EVENT_TYPE, 0),
    ("Reason", "string", "", d::EVENT_REASON, 0),
    ("Object", "string", "", d::EVENT_INVOLVED_OBJECT, 0),
    ("Subobject", "string", "", d::OBJECT_REFERENCE_FIELD_PATH, 1),
    ("Source", "string", "", d::EVENT_SOURCE, 1),
    ("Message", "string", "", d::EVENT_MESSAGE, 0),
    ("First Seen", "string", "", d::EVENT_FIRST_TIMESTAMP, 1),
    ("Count", "string", "", d::EVENT_COUNT, 1),
    ("Name", "string", "name", d::OBJECT_META_NAME, 1),
];

/// The internal Event fields the printer reads; core/v1 and events.k8s.io/v1 name them
/// differently.
struct EventView<'a> {
    first_timestamp: Option<&'a str>,
    last_timestamp: Option<&'a str>,
    event_time: Option<&'a str>,
    count: i64,
    series: Option<(&'a str, i64)>,
    object: &'a Value,
    source_component: &'a str,
    source_host: &'a str,
    reporting_controller: &'a str,
    reporting_instance: &'a str,
    message: &'a str,
}

fn opt_str<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn event_row(obj: &Value, ev: EventView<'_>, now: jiff::Timestamp) -> Vec<Value> {
    let first_timestamp = match ev.first_timestamp {
        Some(t) => translate_timestamp_since(Some(t), now),
        None => translate_timestamp_since(ev.event_time, now),
    };
    let mut last_timestamp = match ev.last_timestamp {
        Some(t) => translate_timestamp_since(Some(t), now),
        None => first_timestamp.clone(),
    };
    let mut count = ev.count;
    if let Some((last_observed, series_count)) = ev.series {
        last_timestamp =
            translate_timestamp_since(Some(last_observed).filter(|s| !s.is_empty()), now);
        count = series_count;
    } else if count == 0 {
        // Singleton events have no count in the new API.
        count = 1;
    }
    let kind = str_at(ev.object, "/kind").to_lowercase();
    let involved_name = str_at(ev.object, "/name");
    let target = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };
    let component = if ev.source_component.is_empty() {
        ev.reporting_controller
    } else {
        ev.source_component
    };
    let instance = if ev.source_host.is_empty() {
        ev.reporting_instance
    } else {
        ev.source_host
    };
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        last_timestamp.into(),
        str_at(obj, "/type").into(),
        str_at(obj, "/reason").into(),
        target.into(),
        str_at(ev.object, "/fieldPath").into(),
        source.into(),
        ev.message.trim().into(),
        first_timestamp.into(),
        count.into(),
        name(obj).into(),
    ]
}

fn series(obj: &Value) -> Option<(&str, i64)> {
    obj.get("series")
        .filter(|s| s.is_object())
        .map(|s| (str_at(s, "/lastObservedTime"), int_at(s, "/count")))
}

pub(super) fn event_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let view = EventView {
        first_timestamp: opt_str(obj, "/firstTimestamp"),
        last_timestamp: opt_str(obj, "/lastTimestamp"),
        event_time: opt_str(obj, "/eventTime"),
        count: int_at(obj, "/count"),
        series: series(obj),
        object: obj.get("involvedObject").unwrap_or(&Value::Null),
        source_component: str_at(obj, "/source/component"),
        source_host: str_at(obj, "/source/host"),
        reporting_controller: str_at(obj, "/reportingComponent"),
        reporting_instance: str_at(obj, "/reportingInstance"),
        message: str_at(obj, "/message"),
    };
    event_row(obj, view, now)
}

pub(super) fn events_v1_event_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let view = EventView {
        first_timestamp: opt_str(obj, "/deprecatedFirstTimestamp"),
        last_timestamp: opt_str(obj, "/deprecatedLastTimestamp"),
        event_time: opt_str(obj, "/eventTime"),
        count: int_at(obj, "/deprecatedCount"),
        series: series(obj),
        object: obj.get("regarding").unwrap_or(&Value::Null),
        source_component: str_at(obj, "/deprecatedSource/component"),
        source_host: str_at(obj, "/deprecatedSource/host"),
        reporting_controller: str_at(obj, "/reportingController"),
        reporting_instance: str_at(obj, "/reportingInstance"),
        message: str_at(obj, "/note"),
    };
    event_row(obj, view, now)
}

pub(super) const PERSISTENT_VOLUME_COLUMNS: &[Column] = &[
    NAME,
    ("Capacity", "string", "", d::PV_SPEC_CAPACITY, 0),
    ("Access Modes", "string", "", d::PV_SPEC_ACCESS_MODES, 0),
    ("Reclaim Policy", "string", "", d::PV_SPEC_RECLAIM_POLICY, 0),
    ("Status", "string", "", d::PV_STATUS_PHASE, 0),
    ("Claim", "string", "", d::PV_SPEC_CLAIM_REF, 0),
    ("StorageClass", "string", "", "StorageClass of the pv", 0),
    (
        "VolumeAttributesClass",
        "string",
        "",
        "VolumeAttributesClass of the pv",
        0,
    ),
    ("Reason", "string", "", d::PV_STATUS_REASON, 0),
    AGE,
    ("VolumeMode", "string", "", d::PV_SPEC_VOLUME_MODE, 1),
];

/// Upstream `GetAccessModesAsString`: fixed order, de-duplicated.
fn access_modes(obj: &Value, pointer: &str) -> String {
    let modes: Vec<&str> = array_at(obj, pointer)
        .iter()
        .filter_map(Value::as_str)
        .collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| modes.contains(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The class of a volume or claim: the beta annotation wins over `spec.storageClassName`.
fn storage_class(obj: &Value) -> String {
    match obj
        .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str)
    {
        Some(class) => class.to_string(),
        None => str_at(obj, "/spec/storageClassName").to_string(),
    }
}

fn volume_phase(obj: &Value) -> String {
    if is_deleting(obj) {
        "Terminating".to_string()
    } else {
        str_at(obj, "/status/phase").to_string()
    }
}

fn unset_or(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("<unset>")
        .to_string()
}

pub(super) fn persistent_volume_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let claim = match obj.pointer("/spec/claimRef").filter(|c| c.is_object()) {
        Some(c) => format!("{}/{}", str_at(c, "/namespace"), str_at(c, "/name")),
        None => String::new(),
    };
    vec![
        name(obj).into(),
        quantity_at(obj, "/spec/capacity/storage")
            .unwrap_or_else(|| "0".to_string())
            .into(),
        access_modes(obj, "/spec/accessModes").into(),
        str_at(obj, "/spec/persistentVolumeReclaimPolicy").into(),
        volume_phase(obj).into(),
        claim.into(),
        storage_class(obj).into(),
        unset_or(obj, "/spec/volumeAttributesClassName").into(),
        str_at(obj, "/status/reason").into(),
        age(obj, now),
        unset_or(obj, "/spec/volumeMode").into(),
    ]
}

pub(super) const PERSISTENT_VOLUME_CLAIM_COLUMNS: &[Column] = &[
    NAME,
    ("Status", "string", "", d::PVC_STATUS_PHASE, 0),
    ("Volume", "string", "", d::PVC_SPEC_VOLUME_NAME, 0),
    ("Capacity", "string", "", d::PVC_STATUS_CAPACITY, 0),
    ("Access Modes", "string", "", d::PVC_STATUS_ACCESS_MODES, 0),
    ("StorageClass", "string", "", "StorageClass of the pvc", 0),
    (
        "VolumeAttributesClass",
        "string",
        "",
        "VolumeAttributesClass of the pvc",
        0,
    ),
    AGE,
    ("VolumeMode", "string", "", d::PVC_SPEC_VOLUME_MODE, 1),
];

pub(super) fn persistent_volume_claim_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let volume = str_at(obj, "/spec/volumeName");
    // Capacity and modes are only shown once the claim is bound to a volume.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity_at(obj, "/status/capacity/storage").unwrap_or_else(|| "0".to_string()),
            access_modes(obj, "/status/accessModes"),
        )
    };
    vec![
        name(obj).into(),
        volume_phase(obj).into(),
        volume.into(),
        capacity.into(),
        modes.into(),
        storage_class(obj).into(),
        unset_or(obj, "/spec/volumeAttributesClassName").into(),
        age(obj, now),
        unset_or(obj, "/spec/volumeMode").into(),
    ]
}

pub(super) const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    (
        "Request",
        "string",
        "",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
        0,
    ),
    (
        "Limit",
        "string",
        "",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
        0,
    ),
    AGE,
];

pub(super) fn resource_quota_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let mut resources: Vec<&String> = obj
        .pointer("/status/hard")
        .and_then(Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    resources.sort();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for resource in resources {
        let escaped = resource.replace('~', "~0").replace('/', "~1");
        let used =
            quantity_at(obj, &format!("/status/used/{escaped}")).unwrap_or_else(|| "0".to_string());
        let hard =
            quantity_at(obj, &format!("/status/hard/{escaped}")).unwrap_or_else(|| "0".to_string());
        let entry = format!("{resource}: {used}/{hard}");
        // Names like limits.cpu go to the Limit column.
        let mut pieces = resource.split('.');
        if pieces.next() == Some("limits") && pieces.next().is_some() {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        name(obj).into(),
        requests.join(", ").into(),
        limits.join(", ").into(),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> jiff::Timestamp {
        "2025-03-01T12:00:00Z"
            .parse()
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    const CREATED: &str = "2025-02-27T12:00:00Z";

    #[test]
    fn nodes() {
        let cases = [
            (
                json!({"metadata": {"name": "n1", "creationTimestamp": CREATED, "labels": {
                        "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "",
                        "kubernetes.io/hostname": "n1"}},
                    "spec": {"unschedulable": true},
                    "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                        "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.10"}],
                        "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0",
                            "containerRuntimeVersion": "skiff://0.1.0"}}}),
                json!([
                    "n1",
                    "Ready,SchedulingDisabled",
                    "control-plane,master",
                    "2d",
                    "v1.33.0",
                    "192.168.1.10",
                    "<none>",
                    "Debian GNU/Linux 12",
                    "6.1.0",
                    "skiff://0.1.0"
                ]),
            ),
            (
                json!({"metadata": {"name": "n2", "creationTimestamp": CREATED, "labels": {"kubernetes.io/role": "worker"}},
                    "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                json!([
                    "n2",
                    "NotReady",
                    "worker",
                    "2d",
                    "",
                    "<none>",
                    "<none>",
                    "<unknown>",
                    "<unknown>",
                    "<unknown>"
                ]),
            ),
            (
                json!({"metadata": {"name": "n3"}}),
                json!([
                    "n3",
                    "Unknown",
                    "<none>",
                    "<unknown>",
                    "",
                    "<none>",
                    "<none>",
                    "<unknown>",
                    "<unknown>",
                    "<unknown>"
                ]),
            ),
        ];
        for (node, want) in cases {
            assert_eq!(Value::from(node_cells(&node, now())), want);
        }
    }

    #[test]
    fn services() {
        let svc = |spec: Value, status: Value| json!({"metadata": {"name": "web", "creationTimestamp": CREATED}, "spec": spec, "status": status});
        let cases = [
            (
                svc(
                    json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                        "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}),
                    json!({}),
                ),
                json!([
                    "web",
                    "ClusterIP",
                    "10.96.0.10",
                    "<none>",
                    "80/TCP,53/UDP",
                    "2d",
                    "app=web"
                ]),
            ),
            (
                svc(
                    json!({"type": "NodePort", "clusterIP": "10.96.0.11",
                        "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
                    json!({}),
                ),
                json!([
                    "web",
                    "NodePort",
                    "10.96.0.11",
                    "<none>",
                    "80:30080/TCP",
                    "2d",
                    "<none>"
                ]),
            ),
            (
                svc(
                    json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"], "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
                    json!({"loadBalancer": {}}),
                ),
                json!([
                    "web",
                    "LoadBalancer",
                    "10.96.0.12",
                    "<pending>",
                    "443:31443/TCP",
                    "2d",
                    "<none>"
                ]),
            ),
            (
                svc(
                    json!({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"], "externalIPs": ["1.2.3.4"], "ports": []}),
                    json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.9"}]}}),
                ),
                json!([
                    "web",
                    "LoadBalancer",
                    "10.96.0.12",
                    "203.0.113.9,lb.example.com,1.2.3.4",
                    "<none>",
                    "2d",
                    "<none>"
                ]),
            ),
            (
                svc(
                    json!({"type": "ExternalName", "externalName": "db.example.com"}),
                    json!({}),
                ),
                json!([
                    "web",
                    "ExternalName",
                    "<none>",
                    "db.example.com",
                    "<none>",
                    "2d",
                    "<none>"
                ]),
            ),
            (
                svc(
                    json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}),
                    json!({}),
                ),
                json!([
                    "web",
                    "ClusterIP",
                    "None",
                    "<none>",
                    "<none>",
                    "2d",
                    "<none>"
                ]),
            ),
        ];
        for (svc, want) in cases {
            assert_eq!(Value::from(service_cells(&svc, now())), want);
        }
    }

    #[test]
    fn endpoints() {
        let ep = json!({"metadata": {"name": "web", "creationTimestamp": CREATED}, "subsets": [
            {"addresses": [{"ip": "10.1.0.4"}, {"ip": "10.1.0.5"}], "ports": [{"port": 8080}, {"port": 8443}]},
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]},
        ]});
        assert_eq!(
            Value::from(endpoints_cells(&ep, now())),
            json!([
                "web",
                "10.1.0.4:8080,10.1.0.5:8080,10.1.0.4:8443 + 2 more...",
                "2d"
            ])
        );
        let v6 = json!({"metadata": {"name": "v6"}, "subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(endpoints_cells(&v6, now())[1], json!("[fd00::1]:80"));
        let none = json!({"metadata": {"name": "empty"}});
        assert_eq!(endpoints_cells(&none, now())[1], json!("<none>"));
    }

    #[test]
    fn events_in_both_api_groups() {
        let core = json!({
            "metadata": {"name": "web-1.17f", "namespace": "default", "creationTimestamp": "2025-03-01T11:50:00Z"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "Successfully pulled image \"nginx\"\n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2025-03-01T11:50:00Z", "lastTimestamp": "2025-03-01T11:58:00Z", "count": 4
        });
        assert_eq!(
            Value::from(event_cells(&core, now())),
            json!([
                "2m",
                "Normal",
                "Pulled",
                "pod/web-1",
                "spec.containers{app}",
                "kubelet, n1",
                "Successfully pulled image \"nginx\"",
                "10m",
                4,
                "web-1.17f"
            ])
        );
        let v1 = json!({
            "metadata": {"name": "n1.1", "namespace": "default"},
            "regarding": {"kind": "Node", "name": "n1"},
            "reason": "NodeReady", "type": "Normal", "note": "Node n1 status is now: NodeReady",
            "eventTime": "2025-03-01T11:59:30.123456Z", "reportingController": "skiff-agent", "reportingInstance": "n1"
        });
        assert_eq!(
            Value::from(events_v1_event_cells(&v1, now())),
            json!([
                "29s",
                "Normal",
                "NodeReady",
                "node/n1",
                "",
                "skiff-agent, n1",
                "Node n1 status is now: NodeReady",
                "29s",
                1,
                "n1.1"
            ])
        );
        let series = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Deployment"},
            "eventTime": "2025-03-01T11:00:00.000000Z", "series": {"count": 7, "lastObservedTime": "2025-03-01T11:59:00.000000Z"}});
        let c = event_cells(&series, now());
        assert_eq!(
            (&c[0], &c[3], &c[7], &c[8]),
            (
                &json!("60s"),
                &json!("deployment"),
                &json!("60m"),
                &json!(7)
            )
        );
    }

    #[test]
    fn config_and_secrets() {
        let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": CREATED}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
        assert_eq!(
            Value::from(config_map_cells(&cm, now())),
            json!(["cfg", 2, "2d"])
        );
        let secret = json!({"metadata": {"name": "s", "creationTimestamp": CREATED}, "type": "Opaque",
            "data": {"a": "MQ=="}, "stringData": {"a": "x", "b": "y"}});
        assert_eq!(
            Value::from(secret_cells(&secret, now())),
            json!(["s", "Opaque", 2, "2d"])
        );
        let sa = json!({"metadata": {"name": "default", "creationTimestamp": CREATED}});
        assert_eq!(
            Value::from(service_account_cells(&sa, now())),
            json!(["default", 0, "2d"])
        );
        let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": CREATED}, "status": {"phase": "Active"}});
        assert_eq!(
            Value::from(namespace_cells(&ns, now())),
            json!(["kube-system", "Active", "2d"])
        );
    }

    #[test]
    fn volumes_and_quotas() {
        let pv = json!({"metadata": {"name": "pv1", "creationTimestamp": CREATED},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"},
                "storageClassName": "local", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            Value::from(persistent_volume_cells(&pv, now())),
            json!([
                "pv1",
                "10Gi",
                "RWO,RWX",
                "Retain",
                "Bound",
                "default/data",
                "local",
                "<unset>",
                "",
                "2d",
                "Filesystem"
            ])
        );
        let pending = json!({"metadata": {"name": "data", "creationTimestamp": CREATED},
            "spec": {"storageClassName": "local"}, "status": {"phase": "Pending"}});
        assert_eq!(
            Value::from(persistent_volume_claim_cells(&pending, now())),
            json!([
                "data", "Pending", "", "", "", "local", "<unset>", "2d", "<unset>"
            ])
        );
        let bound = json!({"metadata": {"name": "data", "creationTimestamp": CREATED,
                "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"}, "deletionTimestamp": CREATED},
            "spec": {"volumeName": "pv1", "volumeMode": "Block"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOncePod"]}});
        assert_eq!(
            Value::from(persistent_volume_claim_cells(&bound, now())),
            json!([
                "data",
                "Terminating",
                "pv1",
                "10Gi",
                "RWOP",
                "legacy",
                "<unset>",
                "2d",
                "Block"
            ])
        );
        let quota = json!({"metadata": {"name": "q", "creationTimestamp": CREATED},
            "status": {"hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "2Gi", "limits.cpu": "4"},
                       "used": {"pods": "3", "limits.cpu": "500m"}}});
        assert_eq!(
            Value::from(resource_quota_cells(&quota, now())),
            json!([
                "q",
                "pods: 3/10, requests.cpu: 0/2",
                "limits.cpu: 500m/4, limits.memory: 0/2Gi",
                "2d"
            ])
        );
    }
}
