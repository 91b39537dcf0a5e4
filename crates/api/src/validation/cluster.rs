//! The smaller groups: coordination, events.k8s.io, networking, discovery, RBAC, scheduling,
//! policy and autoscaling.

use serde_json::Value;

use super::meta::{is_dns1123_subdomain, validate_label_selector};
use super::pod::{port_range, validate_port_reference};
use super::{FieldError, at, immutable, int_at, items_at, non_negative, str_at};

pub(super) fn validate_lease(lease: &Value, errs: &mut Vec<FieldError>) {
    if let Some(duration) = int_at(lease, &["spec", "leaseDurationSeconds"]).filter(|d| *d <= 0) {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            duration,
            "must be greater than 0",
        ));
    }
    non_negative(
        lease,
        &["spec", "leaseTransitions"],
        "spec.leaseTransitions",
        errs,
    );
}

/// events.k8s.io/v1 `ValidateEventCreate` for the fields a new-style event requires.
pub(super) fn validate_events_v1_event(event: &Value, errs: &mut Vec<FieldError>) {
    if at(event, &["eventTime"]).is_none() {
        errs.push(FieldError::required("eventTime", ""));
    }
    let event_type = str_at(event, &["type"]);
    if !["Normal", "Warning"].contains(&event_type) {
        errs.push(FieldError::invalid(
            "type",
            event_type,
            "has invalid value: must be one of [Normal Warning]",
        ));
    }
    for key in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if str_at(event, &[key]).is_empty() {
            errs.push(FieldError::required(key, ""));
        }
    }
    let namespace = str_at(event, &["metadata", "namespace"]);
    let regarding = str_at(event, &["regarding", "namespace"]);
    if !regarding.is_empty() && regarding != namespace {
        errs.push(FieldError::invalid(
            "regarding.namespace",
            regarding,
            "does not match event.namespace",
        ));
    }
}

const PATH_TYPES: [&str; 3] = ["Exact", "ImplementationSpecific", "Prefix"];

fn validate_ingress_backend(backend: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let service = at(backend, &["service"]);
    let resource = at(backend, &["resource"]);
    match (service, resource) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            field,
            "",
            "cannot set both resource and service backends",
        )),
        (None, None) => errs.push(FieldError::invalid(
            field,
            "",
            "resource or service backend is required",
        )),
        (Some(service), None) => {
            if str_at(service, &["name"]).is_empty() {
                errs.push(FieldError::required(format!("{field}.service.name"), ""));
            }
            let number = at(service, &["port", "number"]);
            let name = str_at(service, &["port", "name"]);
            match (number, name.is_empty()) {
                (Some(_), false) => errs.push(FieldError::invalid(
                    format!("{field}.service.port"),
                    "",
                    "cannot set both port name & port number",
                )),
                (Some(n), true) => port_range(
                    n.as_i64().unwrap_or(0),
                    &format!("{field}.service.port.number"),
                    errs,
                ),
                (None, false) => validate_port_reference(
                    Some(&Value::from(name)),
                    &format!("{field}.service.port.name"),
                    errs,
                ),
                (None, true) => errs.push(FieldError::invalid(
                    format!("{field}.service.port"),
                    "",
                    "port name or number is required",
                )),
            }
        }
        (None, Some(_)) => {}
    }
}

pub(super) fn validate_ingress(ingress: &Value, errs: &mut Vec<FieldError>) {
    let spec = at(ingress, &["spec"]).cloned().unwrap_or(Value::Null);
    let rules = items_at(&spec, &["rules"]);
    match at(&spec, &["defaultBackend"]) {
        Some(backend) => validate_ingress_backend(backend, "spec.defaultBackend", errs),
        None if rules.is_empty() => errs.push(FieldError::invalid(
            "spec.rules",
            Value::Array(Vec::new()),
            "either `defaultBackend` or `rules` must be specified",
        )),
        None => {}
    }
    for (i, rule) in rules.iter().enumerate() {
        let host = str_at(rule, &["host"]);
        if !host.is_empty() {
            let check = host.strip_prefix("*.").unwrap_or(host);
            for msg in is_dns1123_subdomain(check) {
                errs.push(FieldError::invalid(
                    format!("spec.rules[{i}].host"),
                    host,
                    msg,
                ));
            }
        }
        let Some(http) = at(rule, &["http"]) else {
            continue;
        };
        let paths = items_at(http, &["paths"]);
        if paths.is_empty() {
            errs.push(FieldError::required(
                format!("spec.rules[{i}].http.paths"),
                "",
            ));
        }
        for (j, path) in paths.iter().enumerate() {
            let field = format!("spec.rules[{i}].http.paths[{j}]");
            let path_type = str_at(path, &["pathType"]);
            let value = str_at(path, &["path"]);
            if path_type.is_empty() {
                errs.push(FieldError::required(
                    format!("{field}.pathType"),
                    "pathType must be specified",
                ));
            } else if !PATH_TYPES.contains(&path_type) {
                errs.push(FieldError::not_supported(
                    format!("{field}.pathType"),
                    path_type,
                    &PATH_TYPES,
                ));
            } else if !value.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{field}.path"),
                    value,
                    "must be an absolute path",
                ));
            }
            match at(path, &["backend"]) {
                Some(backend) => {
                    validate_ingress_backend(backend, &format!("{field}.backend"), errs)
                }
                None => errs.push(FieldError::required(format!("{field}.backend"), "")),
            }
        }
    }
}

pub(super) fn validate_ingress_class(class: &Value, errs: &mut Vec<FieldError>) {
    let controller = str_at(class, &["spec", "controller"]);
    if controller.is_empty() {
        errs.push(FieldError::required("spec.controller", ""));
    } else if controller.len() > 250 {
        errs.push(FieldError::too_long("spec.controller", 250));
    }
}

pub(super) fn validate_ingress_class_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    immutable(new, old, &["spec", "controller"], "spec.controller", errs);
}

pub(super) fn validate_network_policy(policy: &Value, errs: &mut Vec<FieldError>) {
    match at(policy, &["spec", "podSelector"]) {
        Some(selector) => validate_label_selector(selector, "spec.podSelector", errs),
        None => errs.push(FieldError::required("spec.podSelector", "")),
    }
    for direction in ["ingress", "egress"] {
        for (i, rule) in items_at(policy, &["spec", direction]).iter().enumerate() {
            for (j, port) in items_at(rule, &["ports"]).iter().enumerate() {
                let field = format!("spec.{direction}[{i}].ports[{j}]");
                let protocol = str_at(port, &["protocol"]);
                if !protocol.is_empty() && !["SCTP", "TCP", "UDP"].contains(&protocol) {
                    errs.push(FieldError::not_supported(
                        format!("{field}.protocol"),
                        protocol,
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
                if let Some(p) = at(port, &["port"]) {
                    validate_port_reference(Some(p), &format!("{field}.port"), errs);
                }
            }
        }
    }
    let types = items_at(policy, &["spec", "policyTypes"]);
    if types.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.policyTypes",
            Value::from(types.to_vec()),
            "may not specify more than two policyTypes",
        ));
    }
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or("");
        if !["Ingress", "Egress"].contains(&t) {
            errs.push(FieldError::not_supported(
                format!("spec.policyTypes[{i}]"),
                t,
                &["Ingress", "Egress"],
            ));
        }
    }
}

pub(super) fn validate_endpoint_slice(slice: &Value, errs: &mut Vec<FieldError>) {
    let address_type = str_at(slice, &["addressType"]);
    if !["IPv4", "IPv6", "FQDN"].contains(&address_type) {
        errs.push(FieldError::not_supported(
            "addressType",
            address_type,
            &["IPv4", "IPv6", "FQDN"],
        ));
    }
    for (i, endpoint) in items_at(slice, &["endpoints"]).iter().enumerate() {
        let addresses = items_at(endpoint, &["addresses"]);
        if addresses.is_empty() {
            errs.push(FieldError::required(
                format!("endpoints[{i}].addresses"),
                "must contain at least 1 address",
            ));
        }
        for (j, address) in addresses.iter().enumerate() {
            let text = address.as_str().unwrap_or("");
            let valid = match address_type {
                "IPv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => is_dns1123_subdomain(text).is_empty(),
            };
            if !valid {
                errs.push(FieldError::invalid(
                    format!("endpoints[{i}].addresses[{j}]"),
                    text,
                    format!("must be a valid {address_type} address"),
                ));
            }
        }
    }
    for (i, port) in items_at(slice, &["ports"]).iter().enumerate() {
        if let Some(n) = int_at(port, &["port"]) {
            port_range(n, &format!("ports[{i}].port"), errs);
        }
    }
}

pub(super) fn validate_role(role: &Value, errs: &mut Vec<FieldError>) {
    for (i, rule) in items_at(role, &["rules"]).iter().enumerate() {
        let field = format!("rules[{i}]");
        if items_at(rule, &["verbs"]).is_empty() {
            errs.push(FieldError::required(
                format!("{field}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let non_resource = !items_at(rule, &["nonResourceURLs"]).is_empty();
        if non_resource {
            if !items_at(rule, &["apiGroups"]).is_empty()
                || !items_at(rule, &["resources"]).is_empty()
            {
                errs.push(FieldError::invalid(
                    format!("{field}.nonResourceURLs"),
                    Value::from(items_at(rule, &["nonResourceURLs"]).to_vec()),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
        } else {
            if items_at(rule, &["apiGroups"]).is_empty() {
                errs.push(FieldError::required(
                    format!("{field}.apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
            if items_at(rule, &["resources"]).is_empty() {
                errs.push(FieldError::required(
                    format!("{field}.resources"),
                    "resource rules must supply at least one resource",
                ));
            }
        }
    }
}

pub(super) fn validate_role_binding(kind: &str, binding: &Value, errs: &mut Vec<FieldError>) {
    let ref_kind = str_at(binding, &["roleRef", "kind"]);
    let allowed: &[&str] = if kind == "RoleBinding" {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !allowed.contains(&ref_kind) {
        errs.push(FieldError::not_supported("roleRef.kind", ref_kind, allowed));
    }
    let api_group = str_at(binding, &["roleRef", "apiGroup"]);
    if api_group != "rbac.authorization.k8s.io" {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            api_group,
            &["rbac.authorization.k8s.io"],
        ));
    }
    if str_at(binding, &["roleRef", "name"]).is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    }
    for (i, subject) in items_at(binding, &["subjects"]).iter().enumerate() {
        let field = format!("subjects[{i}]");
        if str_at(subject, &["name"]).is_empty() {
            errs.push(FieldError::required(format!("{field}.name"), ""));
        }
        let subject_kind = str_at(subject, &["kind"]);
        let subject_group = str_at(subject, &["apiGroup"]);
        match subject_kind {
            "ServiceAccount" => {
                if !subject_group.is_empty() {
                    errs.push(FieldError::not_supported(
                        format!("{field}.apiGroup"),
                        subject_group,
                        &[""],
                    ));
                }
                if kind == "ClusterRoleBinding" && str_at(subject, &["namespace"]).is_empty() {
                    errs.push(FieldError::required(format!("{field}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if subject_group != "rbac.authorization.k8s.io" {
                    errs.push(FieldError::not_supported(
                        format!("{field}.apiGroup"),
                        subject_group,
                        &["rbac.authorization.k8s.io"],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                format!("{field}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

/// A binding's roleRef cannot change (delete and recreate instead).
pub(super) fn validate_role_binding_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    if at(new, &["roleRef"]) != at(old, &["roleRef"]) {
        errs.push(FieldError::invalid(
            "roleRef",
            at(new, &["roleRef"]).cloned().unwrap_or(Value::Null),
            "cannot change roleRef",
        ));
    }
}

/// System priority classes (`system-` prefix) are reserved; values above one billion too.
pub(super) fn validate_priority_class(class: &Value, errs: &mut Vec<FieldError>) {
    let name = str_at(class, &["metadata", "name"]);
    let value = int_at(class, &["value"]);
    if name.starts_with("system-")
        && !matches!(name, "system-node-critical" | "system-cluster-critical")
    {
        errs.push(FieldError::forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved for system use only",
        ));
    } else if value.is_some_and(|v| v > 1_000_000_000) && !name.starts_with("system-") {
        errs.push(FieldError::forbidden(
            "value",
            "maximum allowed value of a user defined priority is 1000000000",
        ));
    }
    if at(class, &["value"]).is_none() {
        errs.push(FieldError::required("value", ""));
    }
    let policy = str_at(class, &["preemptionPolicy"]);
    if !policy.is_empty() && !["Never", "PreemptLowerPriority"].contains(&policy) {
        errs.push(FieldError::not_supported(
            "preemptionPolicy",
            policy,
            &["Never", "PreemptLowerPriority"],
        ));
    }
}

pub(super) fn validate_pod_disruption_budget(pdb: &Value, errs: &mut Vec<FieldError>) {
    let min = at(pdb, &["spec", "minAvailable"]);
    let max = at(pdb, &["spec", "maxUnavailable"]);
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            "spec",
            pdb.get("spec").cloned().unwrap_or(Value::Null),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (key, value) in [("minAvailable", min), ("maxUnavailable", max)] {
        match value {
            Some(Value::Number(n)) if n.as_i64().unwrap_or(-1) < 0 => {
                errs.push(FieldError::invalid(
                    format!("spec.{key}"),
                    n.as_i64().unwrap_or(-1),
                    "must be greater than or equal to 0",
                ))
            }
            Some(Value::String(s)) => {
                let percent = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok());
                match percent {
                    None => errs.push(FieldError::invalid(format!("spec.{key}"), s.as_str(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
                    Some(p) if p > 100 => errs.push(FieldError::invalid(format!("spec.{key}"), s.as_str(), "must not be greater than 100%")),
                    Some(_) => {}
                }
            }
            _ => {}
        }
    }
    if let Some(selector) = at(pdb, &["spec", "selector"]) {
        validate_label_selector(selector, "spec.selector", errs);
    }
    let policy = str_at(pdb, &["spec", "unhealthyPodEvictionPolicy"]);
    if !policy.is_empty() && !["AlwaysAllow", "IfHealthyBudget"].contains(&policy) {
        errs.push(FieldError::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            policy,
            &["AlwaysAllow", "IfHealthyBudget"],
        ));
    }
}

pub(super) fn validate_horizontal_pod_autoscaler(
    version: &str,
    hpa: &Value,
    errs: &mut Vec<FieldError>,
) {
    let min = int_at(hpa, &["spec", "minReplicas"]);
    let max = int_at(hpa, &["spec", "maxReplicas"]);
    if let Some(min) = min.filter(|m| *m < 1) {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            min,
            "must be greater than or equal to 1",
        ));
    }
    match max {
        None => errs.push(FieldError::required("spec.maxReplicas", "")),
        Some(max) if max < 1 => errs.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than 0",
        )),
        Some(max) => {
            if let Some(min) = min.filter(|m| *m > max) {
                let _ = min;
                errs.push(FieldError::invalid(
                    "spec.maxReplicas",
                    max,
                    "must be greater than or equal to `minReplicas`",
                ));
            }
        }
    }
    let target = at(hpa, &["spec", "scaleTargetRef"]);
    for key in ["kind", "name"] {
        if target.is_none_or(|t| str_at(t, &[key]).is_empty()) {
            errs.push(FieldError::required(
                format!("spec.scaleTargetRef.{key}"),
                "",
            ));
        }
    }
    if version == "v1"
        && let Some(cpu) =
            int_at(hpa, &["spec", "targetCPUUtilizationPercentage"]).filter(|c| *c < 1)
    {
        errs.push(FieldError::invalid(
            "spec.targetCPUUtilizationPercentage",
            cpu,
            "must be greater than 0",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::{FieldError, validate_create, validate_update};
    use serde_json::json;

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn ingress_rules() {
        let ing = json!({"metadata": {"name": "i", "namespace": "d"}, "spec": {"rules": [{"host": "*.example.com",
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                {"path": "api", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {}}}},
                {"path": "/x", "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}});
        assert_eq!(
            messages(&validate_create("networking.k8s.io", "v1", "Ingress", &ing)),
            vec![
                "spec.rules[0].http.paths[1].path: Invalid value: \"api\": must be an absolute path",
                "spec.rules[0].http.paths[1].backend.service.port: Invalid value: \"\": port name or number is required",
                "spec.rules[0].http.paths[2].pathType: Required value: pathType must be specified",
            ]
        );
    }

    #[test]
    fn rbac_lease_priority_hpa() {
        let rb = json!({"metadata": {"name": "r", "namespace": "d"}, "roleRef": {"kind": "ClusterRole", "name": "view",
            "apiGroup": "rbac.authorization.k8s.io"}, "subjects": [{"kind": "User", "name": "a", "apiGroup": "rbac.authorization.k8s.io"}]});
        assert!(validate_create("rbac.authorization.k8s.io", "v1", "RoleBinding", &rb).is_empty());
        let mut changed = rb.clone();
        changed["roleRef"]["name"] = json!("edit");
        let m = messages(&validate_update(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            &changed,
            &rb,
        ));
        assert_eq!(
            m,
            vec![
                "roleRef: Invalid value: {\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"ClusterRole\",\"name\":\"edit\"}: cannot change roleRef"
            ]
        );

        let lease = json!({"metadata": {"name": "n1", "namespace": "kube-node-lease"}, "spec": {"leaseDurationSeconds": 0}});
        assert_eq!(
            messages(&validate_create(
                "coordination.k8s.io",
                "v1",
                "Lease",
                &lease
            )),
            vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );

        let pc = json!({"metadata": {"name": "high"}, "value": 2_000_000_000i64, "preemptionPolicy": "PreemptLowerPriority"});
        assert_eq!(
            messages(&validate_create(
                "scheduling.k8s.io",
                "v1",
                "PriorityClass",
                &pc
            )),
            vec![
                "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
            ]
        );

        let hpa = json!({"metadata": {"name": "h", "namespace": "d"}, "spec": {"minReplicas": 5, "maxReplicas": 2,
            "scaleTargetRef": {"kind": "Deployment", "name": "web"}}});
        assert_eq!(
            messages(&validate_create(
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                &hpa
            )),
            vec![
                "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
            ]
        );
    }
}
