//! Networking, discovery, storage, RBAC, scheduling and coordination kinds.

use serde_json::Value;

use super::descriptions as d;
use super::{
    Column, age, array_at, bool_at, int_at, label_selector_at, list_with_more,
    load_balancer_ingress, name, str_at,
};

const NAME: Column = ("Name", "string", "name", d::OBJECT_META_NAME, 0);
const AGE: Column = ("Age", "string", "", d::OBJECT_META_CREATION_TIMESTAMP, 0);

pub(super) const LEASE_COLUMNS: &[Column] = &[
    NAME,
    ("Holder", "string", "", d::LEASE_SPEC_HOLDER_IDENTITY, 0),
    AGE,
];

pub(super) fn lease_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        str_at(obj, "/spec/holderIdentity").into(),
        age(obj, now),
    ]
}

pub(super) const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    (
        "AddressType",
        "string",
        "",
        d::ENDPOINT_SLICE_ADDRESS_TYPE,
        0,
    ),
    ("Ports", "string", "", d::ENDPOINT_SLICE_PORTS, 0),
    ("Endpoints", "string", "", d::ENDPOINT_SLICE_ENDPOINTS, 0),
    AGE,
];

const LIST_MAX: usize = 3;

/// Upstream `formatDiscoveryPorts`: the port number, else its name, else `*`.
fn discovery_ports(obj: &Value) -> String {
    let ports = array_at(obj, "/ports");
    let list: Vec<String> = ports
        .iter()
        .take(LIST_MAX)
        .map(|p| {
            match (
                p.get("port").and_then(Value::as_i64),
                p.get("name").and_then(Value::as_str),
            ) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            }
        })
        .collect();
    list_with_more(&list, ports.len() > LIST_MAX, ports.len(), LIST_MAX)
}

/// Upstream `formatDiscoveryEndpoints`: the first three addresses of all endpoints.
fn discovery_endpoints(obj: &Value) -> String {
    let addresses: Vec<String> = array_at(obj, "/endpoints")
        .iter()
        .flat_map(|e| array_at(e, "/addresses").iter())
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect();
    let list = &addresses[..addresses.len().min(LIST_MAX)];
    list_with_more(list, addresses.len() > LIST_MAX, addresses.len(), LIST_MAX)
}

pub(super) fn endpoint_slice_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        str_at(obj, "/addressType").into(),
        discovery_ports(obj).into(),
        discovery_endpoints(obj).into(),
        age(obj, now),
    ]
}

pub(super) const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    (
        "Class",
        "string",
        "",
        "The name of the IngressClass resource that should be used for additional configuration",
        0,
    ),
    (
        "Hosts",
        "string",
        "",
        "Hosts that incoming requests are matched against before the ingress rule",
        0,
    ),
    (
        "Address",
        "string",
        "",
        "Address is a list containing ingress points for the load-balancer",
        0,
    ),
    (
        "Ports",
        "string",
        "",
        "Ports of TLS configurations that open",
        0,
    ),
    AGE,
];

/// Upstream `formatHosts`: the first three non-empty hosts, `*` when there are none.
fn ingress_hosts(obj: &Value) -> String {
    let rules = array_at(obj, "/spec/rules");
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == LIST_MAX {
            more = true;
        }
        let host = str_at(rule, "/host");
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", rules.len() - LIST_MAX)
    } else {
        ret
    }
}

pub(super) fn ingress_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let class = obj
        .pointer("/spec/ingressClassName")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let ports = if array_at(obj, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj).into(),
        class.into(),
        ingress_hosts(obj).into(),
        load_balancer_ingress(obj, "/status/loadBalancer/ingress").into(),
        ports.into(),
        age(obj, now),
    ]
}

pub(super) const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    (
        "Controller",
        "string",
        "",
        "Controller that is responsible for handling this class",
        0,
    ),
    (
        "Parameters",
        "string",
        "",
        "A reference to a resource with additional parameters",
        0,
    ),
    AGE,
];

pub(super) fn ingress_class_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let parameters = match obj.pointer("/spec/parameters").filter(|p| p.is_object()) {
        None => "<none>".to_string(),
        Some(p) => {
            let mut out = str_at(p, "/kind").to_string();
            if let Some(group) = p.get("apiGroup").and_then(Value::as_str) {
                out = format!("{out}.{group}");
            }
            format!("{out}/{}", str_at(p, "/name"))
        }
    };
    vec![
        name(obj).into(),
        str_at(obj, "/spec/controller").into(),
        parameters.into(),
        age(obj, now),
    ]
}

pub(super) const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    (
        "Pod-Selector",
        "string",
        "",
        d::NETWORK_POLICY_SPEC_POD_SELECTOR,
        0,
    ),
    AGE,
];

pub(super) fn network_policy_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    // podSelector is a struct, not a pointer, upstream: absent means the empty selector.
    let selector = match obj.pointer("/spec/podSelector") {
        Some(v) if !v.is_null() => label_selector_at(obj, "/spec/podSelector"),
        _ => "<none>".into(),
    };
    vec![name(obj).into(), selector, age(obj, now)]
}

pub(super) const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    ("Provisioner", "string", "", d::STORAGE_CLASS_PROVISIONER, 0),
    (
        "ReclaimPolicy",
        "string",
        "",
        d::STORAGE_CLASS_RECLAIM_POLICY,
        0,
    ),
    (
        "VolumeBindingMode",
        "string",
        "",
        d::STORAGE_CLASS_VOLUME_BINDING_MODE,
        0,
    ),
    (
        "AllowVolumeExpansion",
        "string",
        "",
        d::STORAGE_CLASS_ALLOW_VOLUME_EXPANSION,
        0,
    ),
    AGE,
];

pub(super) fn storage_class_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let annotation = |key: &str| {
        obj.pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            == Some("true")
    };
    let mut display = name(obj).to_string();
    if annotation("storageclass.kubernetes.io/is-default-class")
        || annotation("storageclass.beta.kubernetes.io/is-default-class")
    {
        display.push_str(" (default)");
    }
    let reclaim = obj
        .get("reclaimPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Delete");
    let binding = obj
        .get("volumeBindingMode")
        .and_then(Value::as_str)
        .unwrap_or("Immediate");
    vec![
        display.into(),
        str_at(obj, "/provisioner").into(),
        reclaim.into(),
        binding.into(),
        bool_at(obj, "/allowVolumeExpansion")
            .unwrap_or(false)
            .into(),
        age(obj, now),
    ]
}

pub(super) const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    ("Value", "integer", "", d::PRIORITY_CLASS_VALUE, 0),
    (
        "Global-Default",
        "boolean",
        "",
        d::PRIORITY_CLASS_GLOBAL_DEFAULT,
        0,
    ),
    AGE,
    (
        "PreemptionPolicy",
        "string",
        "",
        d::PRIORITY_CLASS_PREEMPTION_POLICY,
        1,
    ),
];

pub(super) fn priority_class_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        int_at(obj, "/value").into(),
        bool_at(obj, "/globalDefault").unwrap_or(false).into(),
        age(obj, now),
        str_at(obj, "/preemptionPolicy").into(),
    ]
}

pub(super) const ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    ("Role", "string", "", d::ROLE_BINDING_ROLE_REF, 0),
    AGE,
    ("Users", "string", "", "Users in the roleBinding", 1),
    ("Groups", "string", "", "Groups in the roleBinding", 1),
    (
        "ServiceAccounts",
        "string",
        "",
        "ServiceAccounts in the roleBinding",
        1,
    ),
];

pub(super) const CLUSTER_ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    ("Role", "string", "", d::CLUSTER_ROLE_BINDING_ROLE_REF, 0),
    AGE,
    ("Users", "string", "", "Users in the clusterRoleBinding", 1),
    (
        "Groups",
        "string",
        "",
        "Groups in the clusterRoleBinding",
        1,
    ),
    (
        "ServiceAccounts",
        "string",
        "",
        "ServiceAccounts in the clusterRoleBinding",
        1,
    ),
];

/// Role and ClusterRole bindings print alike: the role reference, then subjects by kind
/// (upstream `rbac.SubjectsStrings`; service accounts as `namespace/name`).
pub(super) fn role_binding_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for s in array_at(obj, "/subjects") {
        match str_at(s, "/kind") {
            "User" => users.push(str_at(s, "/name").to_string()),
            "Group" => groups.push(str_at(s, "/name").to_string()),
            "ServiceAccount" => service_accounts.push(format!(
                "{}/{}",
                str_at(s, "/namespace"),
                str_at(s, "/name")
            )),
            _ => {}
        }
    }
    let role = format!(
        "{}/{}",
        str_at(obj, "/roleRef/kind"),
        str_at(obj, "/roleRef/name")
    );
    vec![
        name(obj).into(),
        role.into(),
        age(obj, now),
        users.join(", ").into(),
        groups.join(", ").into(),
        service_accounts.join(", ").into(),
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

    const CREATED: &str = "2025-03-01T11:00:00Z";

    #[test]
    fn endpoint_slices() {
        let slice = json!({"metadata": {"name": "web-abc", "creationTimestamp": CREATED}, "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "metrics"}, {}, {"port": 9000}],
            "endpoints": [{"addresses": ["10.1.0.4"]}, {"addresses": ["10.1.0.5", "10.1.0.6", "10.1.0.7"]}]});
        assert_eq!(
            Value::from(endpoint_slice_cells(&slice, now())),
            json!([
                "web-abc",
                "IPv4",
                "80,metrics,* + 1 more...",
                "10.1.0.4,10.1.0.5,10.1.0.6 + 1 more...",
                "60m"
            ])
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6"});
        let c = endpoint_slice_cells(&empty, now());
        assert_eq!((&c[2], &c[3]), (&json!("<unset>"), &json!("<unset>")));
    }

    #[test]
    fn ingresses() {
        let ing = json!({"metadata": {"name": "web", "creationTimestamp": CREATED},
            "spec": {"ingressClassName": "skiff", "tls": [{"hosts": ["a.example.com"]}],
                "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "c.example.com"}, {"host": "d.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}});
        assert_eq!(
            Value::from(ingress_cells(&ing, now())),
            json!([
                "web",
                "skiff",
                "a.example.com,b.example.com,c.example.com + 2 more...",
                "192.168.1.10",
                "80, 443",
                "60m"
            ])
        );
        let bare = json!({"metadata": {"name": "b"}, "spec": {"rules": [{}]}});
        assert_eq!(
            Value::from(ingress_cells(&bare, now())),
            json!(["b", "<none>", "*", "", "80", "<unknown>"])
        );
        let class = json!({"metadata": {"name": "skiff", "creationTimestamp": CREATED},
            "spec": {"controller": "skiff.dev/ingress", "parameters": {"apiGroup": "k8s.example.com", "kind": "Params", "name": "p"}}});
        assert_eq!(
            Value::from(ingress_class_cells(&class, now())),
            json!([
                "skiff",
                "skiff.dev/ingress",
                "Params.k8s.example.com/p",
                "60m"
            ])
        );
    }

    #[test]
    fn network_policies_storage_and_scheduling() {
        let np = json!({"metadata": {"name": "deny", "creationTimestamp": CREATED}, "spec": {"podSelector": {}}});
        assert_eq!(
            Value::from(network_policy_cells(&np, now())),
            json!(["deny", "<none>", "60m"])
        );
        let np = json!({"metadata": {"name": "web", "creationTimestamp": CREATED},
            "spec": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}}});
        assert_eq!(
            network_policy_cells(&np, now())[1],
            json!("app in (api,web)")
        );

        let sc = json!({"metadata": {"name": "local-path", "creationTimestamp": CREATED,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "skiff.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            Value::from(storage_class_cells(&sc, now())),
            json!([
                "local-path (default)",
                "skiff.dev/local-path",
                "Delete",
                "WaitForFirstConsumer",
                false,
                "60m"
            ])
        );
        let pc = json!({"metadata": {"name": "system-node-critical", "creationTimestamp": CREATED},
            "value": 2000001000, "preemptionPolicy": "PreemptLowerPriority"});
        assert_eq!(
            Value::from(priority_class_cells(&pc, now())),
            json!([
                "system-node-critical",
                2000001000,
                false,
                "60m",
                "PreemptLowerPriority"
            ])
        );
        let lease = json!({"metadata": {"name": "n1", "creationTimestamp": CREATED}, "spec": {"holderIdentity": "n1"}});
        assert_eq!(
            Value::from(lease_cells(&lease, now())),
            json!(["n1", "n1", "60m"])
        );
    }

    #[test]
    fn role_bindings() {
        let rb = json!({"metadata": {"name": "admins", "creationTimestamp": CREATED},
            "roleRef": {"kind": "ClusterRole", "name": "admin", "apiGroup": "rbac.authorization.k8s.io"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                {"kind": "Group", "name": "ops"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}]});
        assert_eq!(
            Value::from(role_binding_cells(&rb, now())),
            json!([
                "admins",
                "ClusterRole/admin",
                "60m",
                "alice, bob",
                "ops",
                "tools/ci"
            ])
        );
    }
}
