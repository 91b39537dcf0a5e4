//! core/v1 kinds other than Pod (pkg/apis/core/validation).

use std::collections::HashSet;

use base64::Engine as _;
use serde_json::{Value, json};

use super::meta::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, selector_matches, validate_labels,
};
use super::pod::{port_range, validate_pod_template_spec, validate_port_reference};
use super::{FieldError, at, immutable, int_at, items_at, non_negative, parse_quantity, str_at};

/// `MaxSecretSize` and the ConfigMap equivalent: 1 MiB of data.
const MAX_DATA_SIZE: usize = 1024 * 1024;
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// `ValidateReplicationControllerSpec`: the selector is a plain map that must select the
/// template.
pub(super) fn validate_replication_controller(rc: &Value, errs: &mut Vec<FieldError>) {
    non_negative(rc, &["spec", "replicas"], "spec.replicas", errs);
    non_negative(
        rc,
        &["spec", "minReadySeconds"],
        "spec.minReadySeconds",
        errs,
    );
    let selector = at(rc, &["spec", "selector"]);
    let selector_empty = selector
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty());
    if selector_empty {
        errs.push(FieldError::required("spec.selector", ""));
    } else {
        validate_labels(selector, "spec.selector", errs);
    }
    let Some(template) = at(rc, &["spec", "template"]) else {
        errs.push(FieldError::required("spec.template", ""));
        return;
    };
    let labels = at(template, &["metadata", "labels"]);
    if !selector_empty && !selector_matches(&json!({"matchLabels": selector}), labels) {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            labels.cloned().unwrap_or(Value::Null),
            "`selector` does not match template `labels`",
        ));
    }
    validate_pod_template_spec(template, "spec.template", errs);
    let restart = str_at(template, &["spec", "restartPolicy"]);
    if !restart.is_empty() && restart != "Always" {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            restart,
            &["Always"],
        ));
    }
}

/// `ValidateService`.
pub(super) fn validate_service(service: &Value, errs: &mut Vec<FieldError>) {
    let spec = at(service, &["spec"]).cloned().unwrap_or(Value::Null);
    let service_type = str_at(&spec, &["type"]);
    if !SERVICE_TYPES.contains(&service_type) {
        errs.push(FieldError::not_supported(
            "spec.type",
            service_type,
            &SERVICE_TYPES,
        ));
    }
    let cluster_ip = str_at(&spec, &["clusterIP"]);
    let headless = cluster_ip == "None";
    let ports = items_at(&spec, &["ports"]);
    if service_type == "ExternalName" {
        let external_name = str_at(&spec, &["externalName"]);
        if external_name.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else {
            for msg in is_dns1123_subdomain(external_name.trim_end_matches('.')) {
                errs.push(FieldError::invalid("spec.externalName", external_name, msg));
            }
        }
    } else if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = HashSet::new();
    let mut port_protocols = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = str_at(port, &["name"]);
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else if !name.is_empty() {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{path}.name"), name, msg));
            }
            if !names.insert(name.to_owned()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), name));
            }
        }
        let number = int_at(port, &["port"]).unwrap_or(0);
        port_range(number, &format!("{path}.port"), errs);
        let protocol = str_at(port, &["protocol"]);
        if protocol.is_empty() {
            errs.push(FieldError::required(format!("{path}.protocol"), ""));
        } else if !PROTOCOLS.contains(&protocol) {
            errs.push(FieldError::not_supported(
                format!("{path}.protocol"),
                protocol,
                &PROTOCOLS,
            ));
        }
        if !port_protocols.insert((number, protocol.to_owned())) {
            errs.push(FieldError::duplicate(
                path.clone(),
                json!({"port": number, "protocol": protocol}),
            ));
        }
        validate_port_reference(
            at(port, &["targetPort"]),
            &format!("{path}.targetPort"),
            errs,
        );
        if let Some(node_port) = int_at(port, &["nodePort"]).filter(|p| *p != 0) {
            if !matches!(service_type, "NodePort" | "LoadBalancer") {
                errs.push(FieldError::forbidden(
                    format!("{path}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                port_range(node_port, &format!("{path}.nodePort"), errs);
            }
        }
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<std::net::IpAddr>().is_err() {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            cluster_ip,
            "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    let affinity = str_at(&spec, &["sessionAffinity"]);
    if !["ClientIP", "None"].contains(&affinity) {
        errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            affinity,
            &["ClientIP", "None"],
        ));
    }
    if let Some(timeout) = int_at(
        &spec,
        &["sessionAffinityConfig", "clientIP", "timeoutSeconds"],
    ) && !(1..=86400).contains(&timeout)
    {
        errs.push(FieldError::invalid(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            timeout,
            "must be greater than 0 and less than 86400",
        ));
    }
    let external_policy = str_at(&spec, &["externalTrafficPolicy"]);
    if !external_policy.is_empty() {
        let externally_accessible = matches!(service_type, "NodePort" | "LoadBalancer")
            || (service_type == "ClusterIP" && !items_at(&spec, &["externalIPs"]).is_empty());
        if !externally_accessible {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                external_policy,
                "may only be set for externally-accessible services",
            ));
        } else if !["Cluster", "Local"].contains(&external_policy) {
            errs.push(FieldError::not_supported(
                "spec.externalTrafficPolicy",
                external_policy,
                &["Cluster", "Local"],
            ));
        }
    }
    let internal_policy = str_at(&spec, &["internalTrafficPolicy"]);
    if !internal_policy.is_empty() && !["Cluster", "Local"].contains(&internal_policy) {
        errs.push(FieldError::not_supported(
            "spec.internalTrafficPolicy",
            internal_policy,
            &["Cluster", "Local"],
        ));
    }
    validate_labels(at(&spec, &["selector"]), "spec.selector", errs);
}

/// `ValidateServiceUpdate`: the primary cluster IP may not change once allocated (except to or
/// from ExternalName).
pub(super) fn validate_service_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let old_ip = str_at(old, &["spec", "clusterIP"]);
    let new_ip = str_at(new, &["spec", "clusterIP"]);
    let external_name_involved = str_at(old, &["spec", "type"]) == "ExternalName"
        || str_at(new, &["spec", "type"]) == "ExternalName";
    if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip && !external_name_involved {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            json!([new_ip]),
            "may not change once set",
        ));
    }
}

/// `IsConfigMapKey`.
fn config_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_owned());
    }
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_owned());
    }
    if key == "." {
        errs.push("must not be '.'".to_owned());
    } else if key == ".." {
        errs.push("must not be '..'".to_owned());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".to_owned());
    }
    errs
}

/// Validates the keys of `data` and `binaryData`/`stringData`; returns the total bytes.
fn validate_data_keys(obj: &Value, maps: &[(&str, bool)], errs: &mut Vec<FieldError>) -> usize {
    let mut seen = HashSet::new();
    let mut total = 0;
    for (map_name, base64_values) in maps {
        let Some(map) = at(obj, &[map_name]).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in map {
            let path = format!("{map_name}[{key}]");
            for msg in config_key_errors(key) {
                errs.push(FieldError::invalid(path.clone(), key.as_str(), msg));
            }
            if !seen.insert(key.clone()) && *map_name == "binaryData" {
                errs.push(FieldError::invalid(
                    path.clone(),
                    key.as_str(),
                    "duplicate of key present in data",
                ));
            }
            let text = value.as_str().unwrap_or("");
            total += if *base64_values {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_or(text.len(), |b| b.len())
            } else {
                text.len()
            };
        }
    }
    total
}

pub(super) fn validate_config_map(config_map: &Value, errs: &mut Vec<FieldError>) {
    let total = validate_data_keys(config_map, &[("data", false), ("binaryData", true)], errs);
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("", MAX_DATA_SIZE));
    }
}

/// ConfigMaps and Secrets marked `immutable: true` keep their data and the flag forever.
fn validate_immutable_data(
    new: &Value,
    old: &Value,
    data_keys: &[&str],
    errs: &mut Vec<FieldError>,
) {
    if at(old, &["immutable"]).and_then(Value::as_bool) != Some(true) {
        return;
    }
    if at(new, &["immutable"]).and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for key in data_keys {
        if at(new, &[key]) != at(old, &[key]) {
            errs.push(FieldError::forbidden(
                *key,
                "field is immutable when `immutable` is set",
            ));
        }
    }
}

pub(super) fn validate_config_map_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    validate_immutable_data(new, old, &["data", "binaryData"], errs);
}

/// `ValidateSecret`: keys, size, and the keys each well-known type requires.
pub(super) fn validate_secret(secret: &Value, errs: &mut Vec<FieldError>) {
    let total = validate_data_keys(secret, &[("data", true), ("stringData", false)], errs);
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long("data", MAX_DATA_SIZE));
    }
    let has_key = |key: &str| {
        at(secret, &["data", key]).is_some() || at(secret, &["stringData", key]).is_some()
    };
    match str_at(secret, &["type"]) {
        "kubernetes.io/service-account-token"
            if str_at(
                secret,
                &[
                    "metadata",
                    "annotations",
                    "kubernetes.io/service-account.name",
                ],
            )
            .is_empty() =>
        {
            errs.push(FieldError::required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        "kubernetes.io/dockercfg" if !has_key(".dockercfg") => {
            errs.push(FieldError::required("data[.dockercfg]", ""));
        }
        "kubernetes.io/dockerconfigjson" if !has_key(".dockerconfigjson") => {
            errs.push(FieldError::required("data[.dockerconfigjson]", ""));
        }
        "kubernetes.io/basic-auth" if !has_key("username") && !has_key("password") => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if !has_key("ssh-privatekey") => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has_key(key) {
                    errs.push(FieldError::required(format!("data[{key}]"), ""));
                }
            }
        }
        _ => {}
    }
}

pub(super) fn validate_secret_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    immutable(new, old, &["type"], "type", errs);
    validate_immutable_data(new, old, &["data"], errs);
}

pub(super) fn validate_namespace(namespace: &Value, errs: &mut Vec<FieldError>) {
    for finalizer in items_at(namespace, &["spec", "finalizers"])
        .iter()
        .filter_map(Value::as_str)
    {
        let msgs = is_qualified_name(finalizer);
        for msg in msgs {
            errs.push(FieldError::invalid("spec.finalizers", finalizer, msg));
        }
    }
}

pub(super) fn validate_node(node: &Value, errs: &mut Vec<FieldError>) {
    const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    for (i, taint) in items_at(node, &["spec", "taints"]).iter().enumerate() {
        let key = str_at(taint, &["key"]);
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid(
                format!("spec.taints[{i}].key"),
                key,
                msg,
            ));
        }
        let effect = str_at(taint, &["effect"]);
        if effect.is_empty() {
            errs.push(FieldError::required(format!("spec.taints[{i}].effect"), ""));
        } else if !EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                format!("spec.taints[{i}].effect"),
                effect,
                &EFFECTS,
            ));
        }
    }
    for (i, cidr) in items_at(node, &["spec", "podCIDRs"]).iter().enumerate() {
        let text = cidr.as_str().unwrap_or("");
        let valid = text.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
        });
        if !valid {
            errs.push(FieldError::invalid(
                format!("spec.podCIDRs[{i}]"),
                text,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
}

/// core/v1 `ValidateEventCreate`: the event lives in its involved object's namespace.
pub(super) fn validate_event(event: &Value, errs: &mut Vec<FieldError>) {
    let namespace = str_at(event, &["metadata", "namespace"]);
    let involved = str_at(event, &["involvedObject", "namespace"]);
    if !involved.is_empty() && involved != namespace {
        errs.push(FieldError::invalid(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        ));
    }
    let event_type = str_at(event, &["type"]);
    if !str_at(event, &["reportingComponent"]).is_empty()
        && !["Normal", "Warning"].contains(&event_type)
    {
        errs.push(FieldError::invalid(
            "type",
            event_type,
            "has invalid value: must be one of [Normal Warning]",
        ));
    }
}

pub(super) fn validate_endpoints(endpoints: &Value, errs: &mut Vec<FieldError>) {
    for (i, subset) in items_at(endpoints, &["subsets"]).iter().enumerate() {
        for (j, port) in items_at(subset, &["ports"]).iter().enumerate() {
            let path = format!("subsets[{i}].ports[{j}]");
            port_range(
                int_at(port, &["port"]).unwrap_or(0),
                &format!("{path}.port"),
                errs,
            );
            let protocol = str_at(port, &["protocol"]);
            if !PROTOCOLS.contains(&protocol) {
                errs.push(FieldError::not_supported(
                    format!("{path}.protocol"),
                    protocol,
                    &PROTOCOLS,
                ));
            }
        }
    }
}

const ACCESS_MODES: [&str; 4] = [
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn validate_access_modes(spec: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let modes = items_at(spec, &["accessModes"]);
    if modes.is_empty() {
        errs.push(FieldError::required(
            format!("{field}.accessModes"),
            "at least 1 access mode is required",
        ));
    }
    for mode in modes.iter().filter_map(Value::as_str) {
        if !ACCESS_MODES.contains(&mode) {
            errs.push(FieldError::not_supported(
                format!("{field}.accessModes"),
                mode,
                &ACCESS_MODES,
            ));
        }
    }
}

fn validate_quantity_map(value: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(map) = value.and_then(Value::as_object) else {
        return;
    };
    for (name, quantity) in map {
        let text = quantity
            .as_str()
            .map_or_else(|| quantity.to_string(), str::to_owned);
        match parse_quantity(&text) {
            Ok(millis) if millis < 0 => errs.push(FieldError::invalid(
                format!("{field}[{name}]"),
                text,
                "must be greater than or equal to 0",
            )),
            Ok(_) => {}
            Err(e) => errs.push(FieldError::invalid(
                format!("{field}[{name}]"),
                text,
                e.to_string(),
            )),
        }
    }
}

pub(super) fn validate_persistent_volume_claim(pvc: &Value, errs: &mut Vec<FieldError>) {
    let spec = at(pvc, &["spec"]).cloned().unwrap_or(Value::Null);
    validate_access_modes(&spec, "spec", errs);
    let storage = at(&spec, &["resources", "requests", "storage"]);
    if storage.is_none() && at(&spec, &["dataSourceRef"]).is_none() {
        errs.push(FieldError::required("spec.resources[storage]", ""));
    }
    validate_quantity_map(
        at(&spec, &["resources", "requests"]),
        "spec.resources.requests",
        errs,
    );
    let mode = str_at(&spec, &["volumeMode"]);
    if !mode.is_empty() && !["Block", "Filesystem"].contains(&mode) {
        errs.push(FieldError::not_supported(
            "spec.volumeMode",
            mode,
            &["Block", "Filesystem"],
        ));
    }
}

pub(super) fn validate_persistent_volume_claim_update(
    new: &Value,
    old: &Value,
    errs: &mut Vec<FieldError>,
) {
    // Only the storage request (expansion) and a few binding fields may change.
    let strip = |v: &Value| {
        let mut spec = at(v, &["spec"]).cloned().unwrap_or(Value::Null);
        if let Some(map) = spec.as_object_mut() {
            map.remove("resources");
            map.remove("volumeAttributesClassName");
            if str_at(old, &["spec", "volumeName"]).is_empty() {
                map.remove("volumeName");
            }
        }
        spec
    };
    if strip(new) != strip(old) {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
}

pub(super) fn validate_persistent_volume(pv: &Value, errs: &mut Vec<FieldError>) {
    let spec = at(pv, &["spec"]).cloned().unwrap_or(Value::Null);
    validate_access_modes(&spec, "spec", errs);
    if at(&spec, &["capacity"]).is_none() {
        errs.push(FieldError::required("spec.capacity", ""));
    }
    validate_quantity_map(at(&spec, &["capacity"]), "spec.capacity", errs);
    let policy = str_at(&spec, &["persistentVolumeReclaimPolicy"]);
    if !["Delete", "Recycle", "Retain"].contains(&policy) {
        errs.push(FieldError::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            policy,
            &["Delete", "Recycle", "Retain"],
        ));
    }
}

pub(super) fn validate_resource_quota(quota: &Value, errs: &mut Vec<FieldError>) {
    validate_quantity_map(at(quota, &["spec", "hard"]), "spec.hard", errs);
}

pub(super) fn validate_limit_range(limit_range: &Value, errs: &mut Vec<FieldError>) {
    for (i, item) in items_at(limit_range, &["spec", "limits"])
        .iter()
        .enumerate()
    {
        let limit_type = str_at(item, &["type"]);
        if limit_type.is_empty() {
            errs.push(FieldError::required(format!("spec.limits[{i}].type"), ""));
        }
        for key in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            validate_quantity_map(at(item, &[key]), &format!("spec.limits[{i}].{key}"), errs);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::{FieldError, validate_create, validate_update};
    use serde_json::{Value, json};

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn service(spec: Value) -> Value {
        let mut s = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec});
        crate::defaults::apply_defaults("", "v1", "Service", &mut s);
        s
    }

    #[test]
    fn service_rules() {
        let ok = service(json!({"ports": [{"port": 80}], "selector": {"app": "web"}}));
        assert!(validate_create("", "v1", "Service", &ok).is_empty());
        let headless = service(json!({"clusterIP": "None"}));
        assert!(validate_create("", "v1", "Service", &headless).is_empty());
        let m = messages(&validate_create("", "v1", "Service", &service(json!({}))));
        assert_eq!(m, vec!["spec.ports: Required value"]);
        let m = messages(&validate_create(
            "",
            "v1",
            "Service",
            &service(json!({"type": "Magic",
            "ports": [{"port": 0}, {"port": 81, "name": "b", "protocol": "ICMP"}]})),
        ));
        assert!(m.contains(&"spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".to_owned()), "{m:?}");
        assert!(m.contains(&"spec.ports[0].name: Required value".to_owned()));
        assert!(
            m.contains(
                &"spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
                    .to_owned()
            )
        );
        assert!(m.contains(&"spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".to_owned()));
        let m = messages(&validate_create(
            "",
            "v1",
            "Service",
            &service(json!({"type": "ExternalName"})),
        ));
        assert_eq!(m, vec!["spec.externalName: Required value"]);
        let old = service(json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}));
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.0.0.2");
        let m = messages(&validate_update("", "v1", "Service", &new, &old));
        assert_eq!(
            m,
            vec!["spec.clusterIPs[0]: Invalid value: [\"10.0.0.2\"]: may not change once set"]
        );
    }

    #[test]
    fn config_maps_and_secrets() {
        let cm = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"ok.key": "v", "bad key": "v"},
            "binaryData": {"ok.key": "AA=="}});
        let m = messages(&validate_create("", "v1", "ConfigMap", &cm));
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters"));
        assert_eq!(
            m[1],
            "binaryData[ok.key]: Invalid value: \"ok.key\": duplicate of key present in data"
        );
        let big = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"k": "x".repeat(1024 * 1024 + 1)}});
        assert_eq!(
            messages(&validate_create("", "v1", "ConfigMap", &big)),
            vec![": Too long: may not be more than 1048576 bytes"]
        );

        let old = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque", "immutable": true, "data": {"a": "YQ=="}});
        let mut new = old.clone();
        new["data"]["a"] = json!("Yg==");
        new["type"] = json!("kubernetes.io/tls");
        let m = messages(&validate_update("", "v1", "Secret", &new, &old));
        assert!(
            m.contains(&"data[tls.crt]: Required value".to_owned()),
            "{m:?}"
        );
        assert!(m.contains(
            &"type: Invalid value: \"kubernetes.io/tls\": field is immutable".to_owned()
        ));
        assert!(
            m.contains(&"data: Forbidden: field is immutable when `immutable` is set".to_owned())
        );
    }

    #[test]
    fn events_claims_and_nodes() {
        let ev = json!({"metadata": {"name": "e.1", "namespace": "default"}, "involvedObject": {"namespace": "other"}});
        assert_eq!(
            messages(&validate_create("", "v1", "Event", &ev)),
            vec![
                "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"
            ]
        );
        let pvc = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}});
        assert!(validate_create("", "v1", "PersistentVolumeClaim", &pvc).is_empty());
        let node = json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}});
        assert_eq!(
            messages(&validate_create("", "v1", "Node", &node)),
            vec![
                "spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
            ]
        );
    }
}
