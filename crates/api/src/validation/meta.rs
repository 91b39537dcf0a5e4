//! Names, ObjectMeta, labels, annotations and label selectors, following apimachinery's
//! `pkg/util/validation` and `pkg/api/validation` (messages are upstream's, word for word).

use serde_json::{Map, Value};

use super::{FieldError, at, items_at, str_at};

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const DNS1035_LABEL_MAX: usize = 63;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
/// `TotalAnnotationSizeLimitB`: 256 KiB across all keys and values.
const TOTAL_ANNOTATION_SIZE: usize = 256 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";

/// Upstream's `RegexError`: the message, examples, and the regex.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let mut out = format!("{message} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{format}')"));
    out
}

fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn matches_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

fn matches_qualified_name_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// `IsDNS1123Label`: the messages for each rule broken (empty when valid).
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns1123_label(s) {
        if matches_dns1123_subdomain(s) {
            // A valid subdomain that is not a label: the length is checked above, so dots.
            errs.push("must not contain dots".to_owned());
        } else {
            errs.push(regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !matches_dns1123_subdomain(s) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1035Label` (Service names).
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1035_LABEL_MAX {
        errs.push(max_len_error(DNS1035_LABEL_MAX));
    }
    if !(matches_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsQualifiedName`: an optional DNS subdomain prefix and `/`, then a name part.
pub fn is_qualified_name(s: &str) -> Vec<String> {
    const MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
    let examples = ["MyName", "my.name", "123-abc"];
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(MESSAGE, QUALIFIED_NAME_FMT, &examples)
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(MESSAGE, QUALIFIED_NAME_FMT, &examples)
        ));
    }
    errs
}

/// `IsValidLabelValue`.
pub(super) fn is_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !s.is_empty() && !matches_qualified_name_part(s) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsValidPathSegmentName` (RBAC object names).
fn is_path_segment_name(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| s.contains(**bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// Which name rule a kind's `metadata.name` follows.
#[derive(Clone, Copy)]
enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
    PathSegment,
}

fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::Dns1123Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

fn check_name(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
        NameRule::Dns1123Label => is_dns1123_label(name),
        NameRule::Dns1035Label => is_dns1035_label(name),
        NameRule::PathSegment => is_path_segment_name(name),
    }
}

/// Built-in kinds that live outside namespaces (a namespace on them is forbidden). Kinds not
/// listed and not known namespaced (custom resources) only get the format check.
fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "",
            "Namespace" | "Node" | "PersistentVolume" | "ComponentStatus"
        ) | (
            "rbac.authorization.k8s.io",
            "ClusterRole" | "ClusterRoleBinding"
        ) | ("scheduling.k8s.io", "PriorityClass")
            | (
                "storage.k8s.io",
                "StorageClass" | "CSIDriver" | "CSINode" | "VolumeAttachment"
            )
            | (
                "networking.k8s.io",
                "IngressClass" | "IPAddress" | "ServiceCIDR"
            )
            | ("node.k8s.io", "RuntimeClass")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("apiregistration.k8s.io", "APIService")
            | ("certificates.k8s.io", "CertificateSigningRequest")
            | (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration"
                    | "ValidatingWebhookConfiguration"
                    | "ValidatingAdmissionPolicy"
                    | "ValidatingAdmissionPolicyBinding"
            )
            | (
                "flowcontrol.apiserver.k8s.io",
                "FlowSchema" | "PriorityLevelConfiguration"
            )
    )
}

fn is_known_namespaced(group: &str) -> bool {
    matches!(
        group,
        "" | "apps"
            | "batch"
            | "autoscaling"
            | "policy"
            | "networking.k8s.io"
            | "discovery.k8s.io"
            | "coordination.k8s.io"
            | "events.k8s.io"
            | "rbac.authorization.k8s.io"
            | "storage.k8s.io"
    )
}

/// Standard finalizers that need no domain prefix.
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// `ValidateObjectMeta` with the kind's name rule and scope.
pub(super) fn validate_object_meta(
    group: &str,
    kind: &str,
    obj: &Value,
    errs: &mut Vec<FieldError>,
) {
    let Some(metadata) = at(obj, &["metadata"]) else {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
        return;
    };
    let rule = name_rule(group, kind);
    let name = str_at(metadata, &["name"]);
    let generate_name = str_at(metadata, &["generateName"]);
    if !generate_name.is_empty() {
        // A trailing dash is fine in a prefix: the random suffix follows it.
        let masked = match generate_name.strip_suffix('-') {
            Some(head) if !head.is_empty() => format!("{head}a"),
            _ => generate_name.to_owned(),
        };
        for msg in check_name(rule, &masked) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in check_name(rule, name) {
            errs.push(FieldError::invalid("metadata.name", name, msg));
        }
        if group == "batch" && kind == "CronJob" && name.len() > 52 {
            // The controller appends an 11-character suffix to name its Jobs.
            errs.push(FieldError::invalid(
                "metadata.name",
                name,
                "must be no more than 52 characters",
            ));
        }
    }
    let namespace = str_at(metadata, &["namespace"]);
    if is_cluster_scoped(group, kind) {
        if !namespace.is_empty() {
            errs.push(FieldError::forbidden(
                "metadata.namespace",
                "not allowed on this type",
            ));
        }
    } else if namespace.is_empty() {
        if is_known_namespaced(group) {
            errs.push(FieldError::required("metadata.namespace", ""));
        }
    } else {
        for msg in is_dns1123_label(namespace) {
            errs.push(FieldError::invalid("metadata.namespace", namespace, msg));
        }
    }
    validate_labels(at(metadata, &["labels"]), "metadata.labels", errs);
    validate_annotations(at(metadata, &["annotations"]), "metadata.annotations", errs);
    for finalizer in items_at(metadata, &["finalizers"])
        .iter()
        .filter_map(Value::as_str)
    {
        let msgs = is_qualified_name(finalizer);
        if !msgs.is_empty() {
            for msg in msgs {
                errs.push(FieldError::invalid("metadata.finalizers", finalizer, msg));
            }
        } else if !finalizer.contains('/') && !STANDARD_FINALIZERS.contains(&finalizer) {
            errs.push(FieldError::invalid(
                "metadata.finalizers",
                finalizer,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    validate_owner_references(metadata, errs);
}

fn validate_owner_references(metadata: &Value, errs: &mut Vec<FieldError>) {
    let mut controllers = Vec::new();
    for owner in items_at(metadata, &["ownerReferences"]) {
        let path = "metadata.ownerReferences";
        let api_version = str_at(owner, &["apiVersion"]);
        if api_version.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.apiVersion"),
                api_version,
                "version must not be empty",
            ));
        }
        let kind = str_at(owner, &["kind"]);
        if kind.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.kind"),
                kind,
                "kind must not be empty",
            ));
        }
        let name = str_at(owner, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                name,
                "name must not be empty",
            ));
        }
        if str_at(owner, &["uid"]).is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.uid"),
                "",
                "uid must not be empty",
            ));
        }
        if at(owner, &["controller"]).and_then(Value::as_bool) == Some(true) {
            controllers.push(format!(
                "Kind={kind}, Name={name}, UID={}",
                str_at(owner, &["uid"])
            ));
        }
    }
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            "metadata.ownerReferences",
            Value::from(items_at(metadata, &["ownerReferences"]).to_vec()),
            format!("Only one reference can have Controller set to true. Found \"true\" in references for {}", controllers.join(" and ")),
        ));
    }
}

/// `ValidateObjectMetaUpdate`: identity may not change.
pub(super) fn validate_object_meta_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    for key in ["name", "namespace"] {
        let new_value = str_at(new, &["metadata", key]);
        let old_value = str_at(old, &["metadata", key]);
        if new_value != old_value && !(key == "namespace" && new_value.is_empty()) {
            errs.push(FieldError::invalid(
                format!("metadata.{key}"),
                new_value,
                "field is immutable",
            ));
        }
    }
    for key in ["uid", "creationTimestamp"] {
        let new_value = at(new, &["metadata", key]);
        let old_value = at(old, &["metadata", key]);
        if new_value.is_some() && new_value != old_value {
            errs.push(FieldError::invalid(
                format!("metadata.{key}"),
                new_value.cloned().unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
    }
}

fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// `ValidateLabels`: every error is reported on the map's own path, as upstream does.
pub(super) fn validate_labels(labels: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(labels) = labels else {
        return;
    };
    let Some(map) = labels.as_object() else {
        errs.push(FieldError::invalid(
            field,
            labels.clone(),
            "must be a map of string keys to string values",
        ));
        return;
    };
    for (key, value) in sorted_entries(map) {
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid(field, key.as_str(), msg));
        }
        match value.as_str() {
            Some(value) => {
                for msg in is_label_value(value) {
                    errs.push(FieldError::invalid(field, value, msg));
                }
            }
            None => errs.push(FieldError::invalid(
                field,
                value.clone(),
                "label values must be strings",
            )),
        }
    }
}

/// `ValidateAnnotations`: qualified keys (case-insensitively) and a 256 KiB total.
pub(super) fn validate_annotations(
    annotations: Option<&Value>,
    field: &str,
    errs: &mut Vec<FieldError>,
) {
    let Some(map) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0usize;
    for (key, value) in sorted_entries(map) {
        for msg in is_qualified_name(&key.to_lowercase()) {
            errs.push(FieldError::invalid(field, key.as_str(), msg));
        }
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE {
        errs.push(FieldError::too_long(field, TOTAL_ANNOTATION_SIZE));
    }
}

/// `ValidateLabelSelector` (metav1 validation).
pub(super) fn validate_label_selector(selector: &Value, field: &str, errs: &mut Vec<FieldError>) {
    validate_labels(
        at(selector, &["matchLabels"]),
        &format!("{field}.matchLabels"),
        errs,
    );
    for (i, requirement) in items_at(selector, &["matchExpressions"]).iter().enumerate() {
        let path = format!("{field}.matchExpressions[{i}]");
        let operator = str_at(requirement, &["operator"]);
        let values = items_at(requirement, &["values"]);
        match operator {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        format!("{path}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        format!("{path}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                format!("{path}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        let key = str_at(requirement, &["key"]);
        for msg in is_qualified_name(key) {
            errs.push(FieldError::invalid(format!("{path}.key"), key, msg));
        }
        for value in values {
            if let Some(value) = value.as_str() {
                for msg in is_label_value(value) {
                    errs.push(FieldError::invalid(format!("{path}.values"), value, msg));
                }
            }
        }
    }
}

/// Whether a label selector (matchLabels and matchExpressions) selects `labels`.
pub(super) fn selector_matches(selector: &Value, labels: Option<&Value>) -> bool {
    let empty = Map::new();
    let labels = labels.and_then(Value::as_object).unwrap_or(&empty);
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let match_labels_ok = at(selector, &["matchLabels"])
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let expressions_ok = items_at(selector, &["matchExpressions"])
        .iter()
        .all(|requirement| {
            let key = str_at(requirement, &["key"]);
            let values: Vec<&str> = items_at(requirement, &["values"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            match str_at(requirement, &["operator"]) {
                "In" => label(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                _ => false,
            }
        });
    match_labels_ok && expressions_ok
}

/// True when a selector has neither matchLabels nor matchExpressions (selects everything).
pub(super) fn selector_is_empty(selector: &Value) -> bool {
    let no_labels = at(selector, &["matchLabels"])
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    no_labels && items_at(selector, &["matchExpressions"]).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::validate_create;
    use serde_json::json;

    #[test]
    fn name_messages_are_upstreams() {
        let errs = validate_create(
            "",
            "v1",
            "ConfigMap",
            &json!({"metadata": {"name": "Foo", "namespace": "default"}}),
        );
        assert_eq!(
            errs[0].message(),
            "metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert_eq!(
            is_dns1123_label("a_b"),
            vec![
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots"]);
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        assert!(is_dns1035_label("1abc").len() == 1);
        assert!(is_dns1035_label("abc-1").is_empty());
        assert!(is_qualified_name("example.com/My_Name.1").is_empty());
        assert_eq!(
            is_qualified_name("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert_eq!(is_path_segment_name("a/b"), vec!["may not contain '/'"]);
    }

    #[test]
    fn metadata_rules() {
        let errs = validate_create("", "v1", "ConfigMap", &json!({"metadata": {}}));
        assert_eq!(
            errs[0].message(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(errs[1].message(), "metadata.namespace: Required value");
        let ok = validate_create(
            "",
            "v1",
            "ConfigMap",
            &json!({"metadata": {"generateName": "web-", "namespace": "d"}}),
        );
        assert!(ok.is_empty(), "{ok:?}");
        let errs = validate_create(
            "",
            "v1",
            "Node",
            &json!({"metadata": {"name": "n", "namespace": "d"}}),
        );
        assert_eq!(
            errs[0].message(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
        let errs = validate_create(
            "",
            "v1",
            "Service",
            &json!({"metadata": {"name": "1web", "namespace": "d"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "type": "ClusterIP", "sessionAffinity": "None"}}),
        );
        assert_eq!(errs.len(), 1);
        assert!(errs[0].detail.starts_with("a DNS-1035 label"));
        let errs = validate_create(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            &json!({"metadata": {"name": "system:Admin"}}),
        );
        assert!(errs.is_empty(), "{errs:?}");
        let errs = validate_create(
            "",
            "v1",
            "ConfigMap",
            &json!({"metadata": {"name": "x", "namespace": "d",
            "labels": {"a b": "ok", "k": "bad value"}, "annotations": {"big": "x".repeat(262_144)},
            "finalizers": ["custom"]}}),
        );
        let messages: Vec<String> = errs.iter().map(FieldError::message).collect();
        assert!(
            messages[0]
                .starts_with("metadata.labels: Invalid value: \"a b\": name part must consist of")
        );
        assert!(
            messages[1].starts_with(
                "metadata.labels: Invalid value: \"bad value\": a valid label must be"
            )
        );
        assert_eq!(
            messages[2],
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            messages[3],
            "metadata.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        );
    }

    #[test]
    fn selectors() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert!(selector_matches(
            &sel,
            Some(&json!({"app": "web", "tier": "a"}))
        ));
        assert!(!selector_matches(&sel, Some(&json!({"app": "web"}))));
        let mut errs = Vec::new();
        validate_label_selector(
            &json!({"matchExpressions": [{"key": "k", "operator": "In"}, {"key": "k", "operator": "Is"}]}),
            "spec.selector",
            &mut errs,
        );
        assert_eq!(
            errs[0].message(),
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert_eq!(
            errs[1].message(),
            "spec.selector.matchExpressions[1].operator: Invalid value: \"Is\": not a valid selector operator"
        );
    }
}
