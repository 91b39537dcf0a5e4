//! Pods and pod templates (`ValidatePodSpec`, `ValidatePodTemplateSpec`, `ValidatePodUpdate`
//! in pkg/apis/core/validation).

use std::collections::HashSet;

use serde_json::Value;

use super::meta::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, validate_annotations,
    validate_labels,
};
use super::{FieldError, at, int_at, items_at, non_negative, parse_quantity, str_at};

const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
const DNS_POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

pub(super) fn validate_pod(pod: &Value, errs: &mut Vec<FieldError>) {
    match at(pod, &["spec"]) {
        Some(spec) => validate_pod_spec(spec, "spec", errs),
        None => errs.push(FieldError::required("spec.containers", "")),
    }
}

pub(super) fn validate_pod_template(template: &Value, errs: &mut Vec<FieldError>) {
    match at(template, &["template"]) {
        Some(t) => validate_pod_template_spec(t, "template", errs),
        None => errs.push(FieldError::required("template.spec.containers", "")),
    }
}

/// `ValidatePodTemplateSpec`: template metadata labels/annotations and the pod spec.
pub(super) fn validate_pod_template_spec(
    template: &Value,
    field: &str,
    errs: &mut Vec<FieldError>,
) {
    validate_labels(
        at(template, &["metadata", "labels"]),
        &format!("{field}.metadata.labels"),
        errs,
    );
    validate_annotations(
        at(template, &["metadata", "annotations"]),
        &format!("{field}.metadata.annotations"),
        errs,
    );
    match at(template, &["spec"]) {
        Some(spec) => validate_pod_spec(spec, &format!("{field}.spec"), errs),
        None => errs.push(FieldError::required(format!("{field}.spec.containers"), "")),
    }
}

/// `ValidatePodSpec` for the fields users most often get wrong.
pub(super) fn validate_pod_spec(spec: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let volumes = validate_volumes(spec, field, errs);
    let mut names = HashSet::new();
    let containers = items_at(spec, &["containers"]);
    if containers.is_empty() {
        errs.push(FieldError::required(format!("{field}.containers"), ""));
    }
    for list in ["initContainers", "containers"] {
        for (i, container) in items_at(spec, &[list]).iter().enumerate() {
            validate_container(
                container,
                &format!("{field}.{list}[{i}]"),
                list,
                &volumes,
                &mut names,
                errs,
            );
        }
    }
    let restart = str_at(spec, &["restartPolicy"]);
    if restart.is_empty() {
        errs.push(FieldError::required(format!("{field}.restartPolicy"), ""));
    } else if !RESTART_POLICIES.contains(&restart) {
        errs.push(FieldError::not_supported(
            format!("{field}.restartPolicy"),
            restart,
            &RESTART_POLICIES,
        ));
    }
    let dns = str_at(spec, &["dnsPolicy"]);
    if dns.is_empty() {
        errs.push(FieldError::required(format!("{field}.dnsPolicy"), ""));
    } else if !DNS_POLICIES.contains(&dns) {
        errs.push(FieldError::not_supported(
            format!("{field}.dnsPolicy"),
            dns,
            &DNS_POLICIES,
        ));
    }
    if let Some(deadline) = int_at(spec, &["activeDeadlineSeconds"])
        && !(1..=i64::from(i32::MAX)).contains(&deadline)
    {
        errs.push(FieldError::invalid(
            format!("{field}.activeDeadlineSeconds"),
            deadline,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    non_negative(
        spec,
        &["terminationGracePeriodSeconds"],
        &format!("{field}.terminationGracePeriodSeconds"),
        errs,
    );
    validate_labels(
        at(spec, &["nodeSelector"]),
        &format!("{field}.nodeSelector"),
        errs,
    );
    for key in ["hostname", "subdomain"] {
        let value = str_at(spec, &[key]);
        if !value.is_empty() {
            for msg in is_dns1123_label(value) {
                errs.push(FieldError::invalid(format!("{field}.{key}"), value, msg));
            }
        }
    }
    let account = str_at(spec, &["serviceAccountName"]);
    if !account.is_empty() {
        for msg in is_dns1123_subdomain(account) {
            errs.push(FieldError::invalid(
                format!("{field}.serviceAccountName"),
                account,
                msg,
            ));
        }
    }
    for (i, toleration) in items_at(spec, &["tolerations"]).iter().enumerate() {
        validate_toleration(toleration, &format!("{field}.tolerations[{i}]"), errs);
    }
}

fn validate_toleration(toleration: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let key = str_at(toleration, &["key"]);
    if !key.is_empty() {
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid(format!("{field}.key"), key, msg));
        }
    }
    match str_at(toleration, &["operator"]) {
        "" | "Equal" => {
            if key.is_empty() {
                errs.push(FieldError::invalid(format!("{field}.operator"), "Equal", "operator must be Exists when `key` is empty, which means \"match all values and all keys\""));
            }
        }
        "Exists" => {
            if !str_at(toleration, &["value"]).is_empty() {
                errs.push(FieldError::invalid(
                    format!("{field}.operator"),
                    str_at(toleration, &["value"]),
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            format!("{field}.operator"),
            other,
            &["Equal", "Exists"],
        )),
    }
    let effect = str_at(toleration, &["effect"]);
    if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        errs.push(FieldError::not_supported(
            format!("{field}.effect"),
            effect,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        ));
    }
}

/// Returns the declared volume names for the mount checks.
fn validate_volumes(spec: &Value, field: &str, errs: &mut Vec<FieldError>) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, volume) in items_at(spec, &["volumes"]).iter().enumerate() {
        let path = format!("{field}.volumes[{i}]");
        let name = str_at(volume, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else {
            for msg in is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{path}.name"), name, msg));
            }
            if !names.insert(name.to_owned()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), name));
            }
        }
        let sources: Vec<&str> = crate::schema::volume_source_keys()
            .filter(|s| at(volume, &[s]).is_some())
            .collect();
        match sources.as_slice() {
            [] => errs.push(FieldError::required(
                path.clone(),
                "must specify a volume type",
            )),
            [_] => {}
            [_, second, ..] => errs.push(FieldError::forbidden(
                format!("{path}.{second}"),
                "may not specify more than 1 volume type",
            )),
        }
        let required = [
            ("configMap", "name"),
            ("secret", "secretName"),
            ("persistentVolumeClaim", "claimName"),
            ("hostPath", "path"),
            ("nfs", "server"),
        ];
        for (source, key) in required {
            if let Some(source_value) = at(volume, &[source])
                && str_at(source_value, &[key]).is_empty()
            {
                errs.push(FieldError::required(format!("{path}.{source}.{key}"), ""));
            }
        }
        for source in ["configMap", "secret", "downwardAPI", "projected"] {
            if let Some(mode) = int_at(volume, &[source, "defaultMode"])
                && !(0..=0o777).contains(&mode)
            {
                errs.push(FieldError::invalid(
                    format!("{path}.{source}.defaultMode"),
                    mode,
                    "must be a number between 0 and 0777 (octal), both inclusive",
                ));
            }
        }
    }
    names
}

fn validate_container(
    container: &Value,
    field: &str,
    list: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    let name = str_at(container, &["name"]);
    if name.is_empty() {
        errs.push(FieldError::required(format!("{field}.name"), ""));
    } else {
        for msg in is_dns1123_label(name) {
            errs.push(FieldError::invalid(format!("{field}.name"), name, msg));
        }
        if !names.insert(name.to_owned()) {
            errs.push(FieldError::duplicate(format!("{field}.name"), name));
        }
    }
    let image = str_at(container, &["image"]);
    if image.is_empty() {
        errs.push(FieldError::required(format!("{field}.image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            format!("{field}.image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    let pull = str_at(container, &["imagePullPolicy"]);
    if !pull.is_empty() && !PULL_POLICIES.contains(&pull) {
        errs.push(FieldError::not_supported(
            format!("{field}.imagePullPolicy"),
            pull,
            &PULL_POLICIES,
        ));
    }
    let message_policy = str_at(container, &["terminationMessagePolicy"]);
    if !message_policy.is_empty() && !["File", "FallbackToLogsOnError"].contains(&message_policy) {
        errs.push(FieldError::not_supported(
            format!("{field}.terminationMessagePolicy"),
            message_policy,
            &["File", "FallbackToLogsOnError"],
        ));
    }
    if list == "initContainers" {
        let restart = str_at(container, &["restartPolicy"]);
        if !restart.is_empty() && restart != "Always" {
            errs.push(FieldError::not_supported(
                format!("{field}.restartPolicy"),
                restart,
                &["Always"],
            ));
        }
    } else if at(container, &["restartPolicy"]).is_some() {
        errs.push(FieldError::forbidden(
            format!("{field}.restartPolicy"),
            "may not be set for non-init containers",
        ));
    }
    validate_ports(container, field, errs);
    for (i, env) in items_at(container, &["env"]).iter().enumerate() {
        let env_name = str_at(env, &["name"]);
        let path = format!("{field}.env[{i}]");
        if env_name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else if env_name.contains('=') || !env_name.chars().all(|c| (' '..='~').contains(&c)) {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                env_name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        if at(env, &["valueFrom"]).is_some() && !str_at(env, &["value"]).is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            ));
        }
    }
    let mut mount_paths = HashSet::new();
    for (i, mount) in items_at(container, &["volumeMounts"]).iter().enumerate() {
        let path = format!("{field}.volumeMounts[{i}]");
        let volume = str_at(mount, &["name"]);
        if volume.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else if !volumes.contains(volume) {
            errs.push(FieldError::not_found(format!("{path}.name"), volume));
        }
        let mount_path = str_at(mount, &["mountPath"]);
        if mount_path.is_empty() {
            errs.push(FieldError::required(format!("{path}.mountPath"), ""));
        } else if !mount_paths.insert(mount_path.to_owned()) {
            errs.push(FieldError::invalid(
                format!("{path}.mountPath"),
                mount_path,
                "must be unique",
            ));
        }
    }
    validate_resources(container, field, errs);
    for probe_name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = at(container, &[probe_name]) {
            validate_probe(
                probe,
                &format!("{field}.{probe_name}"),
                probe_name != "readinessProbe",
                errs,
            );
        }
    }
}

fn validate_ports(container: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let mut port_names = HashSet::new();
    for (i, port) in items_at(container, &["ports"]).iter().enumerate() {
        let path = format!("{field}.ports[{i}]");
        let port_name = str_at(port, &["name"]);
        if !port_name.is_empty() {
            for msg in port_name_errors(port_name) {
                errs.push(FieldError::invalid(format!("{path}.name"), port_name, msg));
            }
            if !port_names.insert(port_name.to_owned()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), port_name));
            }
        }
        match int_at(port, &["containerPort"]) {
            None | Some(0) => errs.push(FieldError::required(format!("{path}.containerPort"), "")),
            Some(n) => port_range(n, &format!("{path}.containerPort"), errs),
        }
        if let Some(host_port) = int_at(port, &["hostPort"]).filter(|p| *p != 0) {
            port_range(host_port, &format!("{path}.hostPort"), errs);
        }
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
    }
}

/// `IsValidPortNum` as an error on `field`.
pub(super) fn port_range(port: i64, field: &str, errs: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&port) {
        errs.push(FieldError::invalid(
            field,
            port,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// `IsValidPortName` (IANA_SVC_NAME).
pub(super) fn port_name_errors(name: &str) -> Vec<&'static str> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen");
    }
    errs
}

/// An IntOrString port reference (probe, Service targetPort): a number in range or a name.
pub(super) fn validate_port_reference(
    port: Option<&Value>,
    field: &str,
    errs: &mut Vec<FieldError>,
) {
    match port {
        Some(Value::Number(n)) => port_range(n.as_i64().unwrap_or(0), field, errs),
        Some(Value::String(name)) => {
            for msg in port_name_errors(name) {
                errs.push(FieldError::invalid(field, name.as_str(), msg));
            }
        }
        Some(other) => errs.push(FieldError::invalid(
            field,
            other.clone(),
            "must be an integer or a port name",
        )),
        None => errs.push(FieldError::required(field, "")),
    }
}

fn validate_probe(
    probe: &Value,
    field: &str,
    success_must_be_one: bool,
    errs: &mut Vec<FieldError>,
) {
    let handlers: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .filter(|h| at(probe, &[h]).is_some())
        .collect();
    match handlers.as_slice() {
        [] => errs.push(FieldError::required(field, "must specify a handler type")),
        [_] => {}
        [_, second, ..] => errs.push(FieldError::forbidden(
            format!("{field}.{second}"),
            "may not specify more than 1 handler type",
        )),
    }
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        non_negative(probe, &[key], &format!("{field}.{key}"), errs);
    }
    if success_must_be_one && let Some(n) = int_at(probe, &["successThreshold"]).filter(|n| *n != 1)
    {
        errs.push(FieldError::invalid(
            format!("{field}.successThreshold"),
            n,
            "must be 1",
        ));
    }
    if let Some(http_get) = at(probe, &["httpGet"]) {
        validate_port_reference(
            at(http_get, &["port"]),
            &format!("{field}.httpGet.port"),
            errs,
        );
        let scheme = str_at(http_get, &["scheme"]);
        if !scheme.is_empty() && !["HTTP", "HTTPS"].contains(&scheme) {
            errs.push(FieldError::not_supported(
                format!("{field}.httpGet.scheme"),
                scheme,
                &["HTTP", "HTTPS"],
            ));
        }
    }
    if let Some(tcp) = at(probe, &["tcpSocket"]) {
        validate_port_reference(at(tcp, &["port"]), &format!("{field}.tcpSocket.port"), errs);
    }
    if let Some(exec) = at(probe, &["exec"])
        && items_at(exec, &["command"]).is_empty()
    {
        errs.push(FieldError::required(format!("{field}.exec.command"), ""));
    }
}

/// Quantities parse, are non-negative, and requests do not exceed limits.
pub(super) fn validate_resources(container: &Value, field: &str, errs: &mut Vec<FieldError>) {
    let mut parsed = |kind: &str| -> Vec<(String, i128)> {
        let mut out = Vec::new();
        if let Some(list) = at(container, &["resources", kind]).and_then(Value::as_object) {
            for (name, quantity) in list {
                let path = format!("{field}.resources.{kind}[{name}]");
                for msg in is_qualified_name(name) {
                    errs.push(FieldError::invalid(path.clone(), name.as_str(), msg));
                }
                let text = match quantity {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        errs.push(FieldError::invalid(
                            path.clone(),
                            other.clone(),
                            "must be a quantity",
                        ));
                        continue;
                    }
                };
                match parse_quantity(&text) {
                    Ok(millis) if millis < 0 => {
                        errs.push(FieldError::invalid(
                            path,
                            text,
                            "must be greater than or equal to 0",
                        ));
                    }
                    Ok(millis) => out.push((name.clone(), millis)),
                    Err(e) => errs.push(FieldError::invalid(path, text, e.to_string())),
                }
            }
        }
        out
    };
    let limits = parsed("limits");
    let requests = parsed("requests");
    for (name, request) in requests {
        if let Some((_, limit)) = limits.iter().find(|(n, _)| *n == name)
            && request > *limit
        {
            let text = at(container, &["resources", "requests", &name])
                .cloned()
                .unwrap_or(Value::Null);
            let limit_text = at(container, &["resources", "limits", &name])
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default();
            errs.push(FieldError::invalid(
                format!("{field}.resources.requests[{name}]"),
                text,
                format!("must be less than or equal to {name} limit of {limit_text}"),
            ));
        }
    }
}

/// `ValidatePodUpdate`: only images, a shorter or new activeDeadlineSeconds, added
/// tolerations and removed scheduling gates may change.
pub(super) fn validate_pod_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let (Some(new_spec), Some(old_spec)) = (at(new, &["spec"]), at(old, &["spec"])) else {
        return;
    };
    if let (Some(new_deadline), Some(old_deadline)) = (
        int_at(new_spec, &["activeDeadlineSeconds"]),
        int_at(old_spec, &["activeDeadlineSeconds"]),
    ) {
        if new_deadline > old_deadline {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                new_deadline,
                "must be less than or equal to previous value",
            ));
        }
    } else if at(old_spec, &["activeDeadlineSeconds"]).is_some()
        && at(new_spec, &["activeDeadlineSeconds"]).is_none()
    {
        errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            Value::Null,
            "must not update from a positive integer to nil value",
        ));
    }
    // Compare the specs with the mutable parts neutralised.
    let mut new_masked = new_spec.clone();
    let mut old_masked = old_spec.clone();
    for spec in [&mut new_masked, &mut old_masked] {
        if let Some(map) = spec.as_object_mut() {
            map.remove("activeDeadlineSeconds");
            map.remove("schedulingGates");
            for list in ["containers", "initContainers"] {
                if let Some(items) = map.get_mut(list).and_then(Value::as_array_mut) {
                    for c in items.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
        }
    }
    // Tolerations may only be added to: the old ones must all still be there.
    let new_tolerations = items_at(new_spec, &["tolerations"]);
    let tolerations_ok = items_at(old_spec, &["tolerations"])
        .iter()
        .all(|t| new_tolerations.contains(t));
    for spec in [&mut new_masked, &mut old_masked] {
        if let Some(map) = spec.as_object_mut() {
            map.remove("tolerations");
        }
    }
    if new_masked != old_masked || !tolerations_ok {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::{FieldError, validate_create, validate_update};
    use serde_json::{Value, json};

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn defaulted(spec: Value) -> Value {
        let mut p = pod(spec);
        crate::defaults::apply_defaults("", "v1", "Pod", &mut p);
        p
    }

    #[test]
    fn valid_defaulted_pod_passes() {
        let p = defaulted(json!({"containers": [{"name": "web", "image": "nginx",
            "ports": [{"containerPort": 80, "name": "http"}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
            "livenessProbe": {"httpGet": {"port": "http"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data"}]}));
        let errs = validate_create("", "v1", "Pod", &p);
        assert!(errs.is_empty(), "{:?}", messages(&errs));
    }

    #[test]
    fn container_errors() {
        let p = defaulted(json!({"containers": [
            {"name": "Web", "image": "", "ports": [{"containerPort": 70000}]},
            {"name": "Web", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
             "volumeMounts": [{"name": "nope", "mountPath": "/a"}]}],
            "restartPolicy": "Sometimes"}));
        let m = messages(&validate_create("", "v1", "Pod", &p));
        assert!(
            m[0].starts_with(
                "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label"
            ),
            "{m:?}"
        );
        assert!(
            m.contains(&"spec.containers[0].image: Required value".to_owned()),
            "{m:?}"
        );
        assert!(m.contains(&"spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_owned()));
        assert!(m.contains(&"spec.containers[1].name: Duplicate value: \"Web\"".to_owned()));
        assert!(
            m.contains(&"spec.containers[1].volumeMounts[0].name: Not found: \"nope\"".to_owned())
        );
        assert!(m.contains(&"spec.containers[1].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1".to_owned()), "{m:?}");
        assert!(m.contains(&"spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".to_owned()));
        let m = messages(&validate_create("", "v1", "Pod", &defaulted(json!({}))));
        assert_eq!(m, vec!["spec.containers: Required value"]);
        let bad = defaulted(json!({"containers": [{"name": "a", "image": "a",
            "resources": {"limits": {"memory": "lots"}}}]}));
        let m = messages(&validate_create("", "v1", "Pod", &bad));
        assert!(m[0].starts_with("spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match"), "{m:?}");
    }

    #[test]
    fn pod_update_allows_only_image_changes() {
        let old = defaulted(json!({"containers": [{"name": "a", "image": "a:1"}]}));
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("a:2");
        new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        assert!(validate_update("", "v1", "Pod", &new, &old).is_empty());
        new["spec"]["restartPolicy"] = json!("Never");
        let m = messages(&validate_update("", "v1", "Pod", &new, &old));
        assert!(
            m[0].starts_with("spec: Forbidden: pod updates may not change fields other than"),
            "{m:?}"
        );
    }
}
