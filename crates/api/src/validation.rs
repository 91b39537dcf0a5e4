//! Per-kind validation with upstream's error shapes (`k8s.io/apimachinery/pkg/util/validation/
//! field`), so the Status a client gets back reads exactly like a real API server's.
//!
//! * [`FieldError`]: one `field.Error` — its [`FieldError::message`] is upstream's
//!   `Error()`, [`FieldError::body`] the `ErrorBody()` used in Status causes, and
//!   [`FieldError::reason`] the metav1 CauseType.
//! * [`invalid_message`]: the `StatusError` message of `NewInvalid` (`Kind.group "name" is
//!   invalid: …`).
//! * [`validate_create`] / [`validate_update`]: dispatch on group and kind.
//!
//! Submodules:
//! * `meta`: names (DNS-1123, DNS-1035, qualified names, path segments), ObjectMeta, labels,
//!   annotations, label selectors (apimachinery `validation`).
//! * `quantity`: the resource quantity grammar ([`parse_quantity`]).
//! * `pod`: PodSpec, containers, volumes, probes, and pod updates.
//! * `core`: the other core/v1 kinds (Service, ConfigMap, Secret, Namespace, Node, Event, …).
//! * `apps`, `batch`: workloads.
//! * `cluster`: networking, coordination, RBAC, scheduling, policy, autoscaling, discovery.
//!
//! The objects are defaulted JSON; a field with the wrong JSON type is reported as invalid
//! here rather than panicking, since the decoder upstream would have rejected it.

mod apps;
mod batch;
mod cluster;
mod core;
mod meta;
mod pod;
mod quantity;

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::Value;

pub use meta::{is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name};
pub use quantity::{QuantityError, parse_quantity};

/// The kinds of `field.ErrorType` this API server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
    TooMany,
    Forbidden,
    NotFound,
}

impl FieldErrorKind {
    /// Upstream's `ErrorType.String()`.
    fn text(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::NotFound => "Not found",
        }
    }
}

/// One validation failure, as upstream's `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    /// The JSON path of the field, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    /// The offending value; `None` where upstream omits it (Required, Forbidden, TooLong).
    pub bad_value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Required,
            field: field.into(),
            bad_value: None,
            detail: detail.into(),
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            bad_value: Some(value.into()),
            detail: detail.into(),
        }
    }

    /// `field.NotSupported`: the detail lists the supported values, each Go-quoted.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<Value>,
        supported: &[&str],
    ) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|v| go_quote(v)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            bad_value: Some(value.into()),
            detail,
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            kind: FieldErrorKind::Duplicate,
            field: field.into(),
            bad_value: Some(value.into()),
            detail: String::new(),
        }
    }

    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            kind: FieldErrorKind::NotFound,
            field: field.into(),
            bad_value: Some(value.into()),
            detail: String::new(),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: FieldErrorKind::Forbidden,
            field: field.into(),
            bad_value: None,
            detail: detail.into(),
        }
    }

    /// `field.TooLong`: the value itself is never echoed back.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        Self {
            kind: FieldErrorKind::TooLong,
            field: field.into(),
            bad_value: None,
            detail: format!("may not be more than {max_bytes} {unit}"),
        }
    }

    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        Self {
            kind: FieldErrorKind::TooMany,
            field: field.into(),
            bad_value: Some(Value::from(actual)),
            detail: format!("must have at most {max} {unit}"),
        }
    }

    /// Upstream's `ErrorBody()`: the message without the field, used for Status causes.
    pub fn body(&self) -> String {
        let mut body = self.kind.text().to_owned();
        let echoes_value = matches!(
            self.kind,
            FieldErrorKind::Invalid
                | FieldErrorKind::NotSupported
                | FieldErrorKind::Duplicate
                | FieldErrorKind::TooMany
                | FieldErrorKind::NotFound
        );
        if echoes_value && let Some(value) = &self.bad_value {
            body.push_str(": ");
            body.push_str(&render_value(value));
        }
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }

    /// Upstream's `Error()`: `<field>: <body>`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }

    /// The metav1 `CauseType` for this error.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::NotFound => "FieldValueNotFound",
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// The message of upstream's `errors.NewInvalid`: `Deployment.apps "web" is invalid: [a, b]`.
/// Duplicate messages are folded as `ErrorList.ToAggregate` does; one error is not bracketed.
pub fn invalid_message(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> String {
    let qualified = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    let mut seen = HashSet::new();
    let messages: Vec<String> = errors
        .iter()
        .map(FieldError::message)
        .filter(|m| seen.insert(m.clone()))
        .collect();
    let mut out = format!("{qualified} {} is invalid", go_quote(name));
    match messages.as_slice() {
        [] => {}
        [one] => {
            out.push_str(": ");
            out.push_str(one);
        }
        many => {
            let _ = write!(out, ": [{}]", many.join(", "));
        }
    }
    out
}

/// Validates an object about to be created. An empty list means valid.
pub fn validate_create(group: &str, version: &str, kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    meta::validate_object_meta(group, kind, obj, &mut errs);
    validate_kind(group, version, kind, obj, &mut errs);
    errs
}

/// Validates an update of `old` to `new`: everything [`validate_create`] checks on `new`, plus
/// the kind's immutable fields and metadata that may not change.
pub fn validate_update(
    group: &str,
    version: &str,
    kind: &str,
    new: &Value,
    old: &Value,
) -> Vec<FieldError> {
    let mut errs = validate_create(group, version, kind, new);
    meta::validate_object_meta_update(new, old, &mut errs);
    match (group, kind) {
        ("", "Pod") => pod::validate_pod_update(new, old, &mut errs),
        ("", "Service") => core::validate_service_update(new, old, &mut errs),
        ("", "ConfigMap") => core::validate_config_map_update(new, old, &mut errs),
        ("", "Secret") => core::validate_secret_update(new, old, &mut errs),
        ("", "PersistentVolumeClaim") => {
            core::validate_persistent_volume_claim_update(new, old, &mut errs)
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => {
            apps::validate_selector_update(new, old, &mut errs)
        }
        ("apps", "StatefulSet") => apps::validate_stateful_set_update(new, old, &mut errs),
        ("batch", "Job") => batch::validate_job_update(new, old, &mut errs),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            cluster::validate_role_binding_update(new, old, &mut errs)
        }
        ("networking.k8s.io", "IngressClass") => {
            cluster::validate_ingress_class_update(new, old, &mut errs)
        }
        _ => {}
    }
    errs
}

fn validate_kind(group: &str, version: &str, kind: &str, obj: &Value, errs: &mut Vec<FieldError>) {
    match (group, kind) {
        ("", "Pod") => pod::validate_pod(obj, errs),
        ("", "PodTemplate") => pod::validate_pod_template(obj, errs),
        ("", "ReplicationController") => core::validate_replication_controller(obj, errs),
        ("", "Service") => core::validate_service(obj, errs),
        ("", "ConfigMap") => core::validate_config_map(obj, errs),
        ("", "Secret") => core::validate_secret(obj, errs),
        ("", "Namespace") => core::validate_namespace(obj, errs),
        ("", "Node") => core::validate_node(obj, errs),
        ("", "Event") => core::validate_event(obj, errs),
        ("", "Endpoints") => core::validate_endpoints(obj, errs),
        ("", "PersistentVolumeClaim") => core::validate_persistent_volume_claim(obj, errs),
        ("", "PersistentVolume") => core::validate_persistent_volume(obj, errs),
        ("", "ResourceQuota") => core::validate_resource_quota(obj, errs),
        ("", "LimitRange") => core::validate_limit_range(obj, errs),
        ("apps", "Deployment") => apps::validate_deployment(obj, errs),
        ("apps", "ReplicaSet") => apps::validate_replica_set(obj, errs),
        ("apps", "StatefulSet") => apps::validate_stateful_set(obj, errs),
        ("apps", "DaemonSet") => apps::validate_daemon_set(obj, errs),
        ("batch", "Job") => batch::validate_job(obj, errs),
        ("batch", "CronJob") => batch::validate_cron_job(obj, errs),
        ("coordination.k8s.io", "Lease") => cluster::validate_lease(obj, errs),
        ("events.k8s.io", "Event") => cluster::validate_events_v1_event(obj, errs),
        ("networking.k8s.io", "Ingress") => cluster::validate_ingress(obj, errs),
        ("networking.k8s.io", "IngressClass") => cluster::validate_ingress_class(obj, errs),
        ("networking.k8s.io", "NetworkPolicy") => cluster::validate_network_policy(obj, errs),
        ("discovery.k8s.io", "EndpointSlice") => cluster::validate_endpoint_slice(obj, errs),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => cluster::validate_role(obj, errs),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            cluster::validate_role_binding(kind, obj, errs)
        }
        ("scheduling.k8s.io", "PriorityClass") => cluster::validate_priority_class(obj, errs),
        ("policy", "PodDisruptionBudget") => cluster::validate_pod_disruption_budget(obj, errs),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            cluster::validate_horizontal_pod_autoscaler(version, obj, errs)
        }
        _ => {}
    }
}

/// Go's `%q` for a string: double-quoted with Go escapes; printable Unicode kept as is.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How `ErrorBody` prints a bad value: numbers and booleans plainly, strings `%q`-quoted, and
/// anything else as JSON (`json.Marshal`, which sorts map keys).
fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        other => sorted_json(other),
    }
}

fn sorted_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        sorted_json(&map[k.as_str()])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(sorted_json).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

// Read-only accessors shared by the submodules: absent, null and wrong-typed fields all read
// as "not set", which is what Go's decoder would have left for a zero value.

/// The value at a path of object keys.
fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .filter(|v| !v.is_null())
}

/// The string at a path, `""` when absent.
fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path).and_then(Value::as_str).unwrap_or("")
}

/// The elements of the array at a path (none when absent).
fn items_at<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The integer at a path, if it is one.
fn int_at(value: &Value, path: &[&str]) -> Option<i64> {
    at(value, path).and_then(Value::as_i64)
}

/// `ValidateNonnegativeField`.
fn non_negative(value: &Value, path: &[&str], field: &str, errs: &mut Vec<FieldError>) {
    if let Some(n) = int_at(value, path).filter(|n| *n < 0) {
        errs.push(FieldError::invalid(
            field,
            n,
            "must be greater than or equal to 0",
        ));
    }
}

/// `ValidateImmutableField`: reports the new value.
fn immutable(new: &Value, old: &Value, path: &[&str], field: &str, errs: &mut Vec<FieldError>) {
    let new_value = at(new, path);
    if new_value != at(old, path) {
        errs.push(FieldError::invalid(
            field,
            new_value.cloned().unwrap_or(Value::Null),
            "field is immutable",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_match_upstream_shapes() {
        assert_eq!(
            FieldError::required("spec.containers[0].image", "").message(),
            "spec.containers[0].image: Required value"
        );
        let e = FieldError::not_supported(
            "spec.restartPolicy",
            "Sometimes",
            &["Always", "OnFailure", "Never"],
        );
        assert_eq!(
            e.message(),
            r#"spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never""#
        );
        assert_eq!(e.reason(), "FieldValueNotSupported");
        assert_eq!(
            FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0")
                .message(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            FieldError::invalid(
                "spec.template.metadata.labels",
                json!({"b": "2", "a": "1"}),
                "x"
            )
            .body(),
            r#"Invalid value: {"a":"1","b":"2"}: x"#
        );
        assert_eq!(
            FieldError::too_long("metadata.annotations", 262144).message(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            FieldError::too_many("spec.x", 5, 1).body(),
            "Too many: 5: must have at most 1 item"
        );
        assert_eq!(
            FieldError::duplicate("spec.ports[1].name", "http").body(),
            r#"Duplicate value: "http""#
        );
        assert_eq!(
            FieldError::forbidden("spec", "nope").reason(),
            "FieldValueForbidden"
        );
        assert_eq!(go_quote("a\"b\\\n\u{1}é"), r#""a\"b\\\n\x01é""#);
    }

    #[test]
    fn invalid_message_forms() {
        let a = FieldError::required("spec.selector", "");
        let b = FieldError::required("spec.template.spec.containers", "");
        assert_eq!(
            invalid_message(
                "Deployment",
                "apps",
                "web",
                &[a.clone(), b.clone(), a.clone()]
            ),
            "Deployment.apps \"web\" is invalid: [spec.selector: Required value, spec.template.spec.containers: Required value]"
        );
        assert_eq!(
            invalid_message("Pod", "", "x", &[a]),
            "Pod \"x\" is invalid: spec.selector: Required value"
        );
        assert_eq!(invalid_message("Pod", "", "x", &[]), "Pod \"x\" is invalid");
    }
}
