//! apps/v1 workloads (pkg/apis/apps/validation).

use serde_json::Value;

use super::meta::{selector_is_empty, selector_matches, validate_label_selector};
use super::pod::validate_pod_template_spec;
use super::{FieldError, at, immutable, int_at, non_negative, str_at};

/// Selector present, well formed, non-empty and selecting the template; the template valid
/// with restartPolicy Always — shared by Deployment, ReplicaSet, StatefulSet and DaemonSet.
fn validate_selector_and_template(obj: &Value, what: &str, errs: &mut Vec<FieldError>) {
    let selector = at(obj, &["spec", "selector"]);
    match selector {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(selector) => {
            validate_label_selector(selector, "spec.selector", errs);
            if selector_is_empty(selector) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    selector.clone(),
                    format!("empty selector is invalid for {what}"),
                ));
            }
        }
    }
    let Some(template) = at(obj, &["spec", "template"]) else {
        errs.push(FieldError::required("spec.template", ""));
        return;
    };
    let labels = at(template, &["metadata", "labels"]);
    if let Some(selector) = selector.filter(|s| !selector_is_empty(s))
        && !selector_matches(selector, labels)
    {
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
    if at(template, &["spec", "activeDeadlineSeconds"]).is_some() {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
}

/// `ValidatePositiveIntOrPercent` (+ `IsNotMoreThan100Percent` when `cap_percent`). Returns the
/// value as a number or percentage for the both-zero check.
fn validate_int_or_percent(
    obj: &Value,
    path: &[&str],
    field: &str,
    cap_percent: bool,
    errs: &mut Vec<FieldError>,
) -> Option<i64> {
    match at(obj, path)? {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(-1);
            if n < 0 {
                errs.push(FieldError::invalid(
                    field,
                    n,
                    "must be greater than or equal to 0",
                ));
            }
            Some(n)
        }
        Value::String(s) => {
            let Some(percent) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                errs.push(FieldError::invalid(field, s.as_str(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
                return None;
            };
            if percent < 0 {
                errs.push(FieldError::invalid(
                    field,
                    s.as_str(),
                    "must be greater than or equal to 0",
                ));
            }
            if cap_percent && percent > 100 {
                errs.push(FieldError::invalid(
                    field,
                    s.as_str(),
                    "must not be greater than 100%",
                ));
            }
            Some(percent)
        }
        other => {
            errs.push(FieldError::invalid(
                field,
                other.clone(),
                "must be an integer or percentage (e.g '5%')",
            ));
            None
        }
    }
}

/// maxUnavailable and maxSurge, which may not both be zero.
fn validate_rolling_update(obj: &Value, base: &[&str], field: &str, errs: &mut Vec<FieldError>) {
    let path_unavailable: Vec<&str> = base.iter().copied().chain(["maxUnavailable"]).collect();
    let path_surge: Vec<&str> = base.iter().copied().chain(["maxSurge"]).collect();
    let unavailable = validate_int_or_percent(
        obj,
        &path_unavailable,
        &format!("{field}.maxUnavailable"),
        true,
        errs,
    );
    let surge =
        validate_int_or_percent(obj, &path_surge, &format!("{field}.maxSurge"), false, errs);
    if unavailable == Some(0) && surge.unwrap_or(0) == 0 {
        let value = at(obj, &path_unavailable).cloned().unwrap_or(Value::Null);
        errs.push(FieldError::invalid(
            format!("{field}.maxUnavailable"),
            value,
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

pub(super) fn validate_deployment(deployment: &Value, errs: &mut Vec<FieldError>) {
    non_negative(deployment, &["spec", "replicas"], "spec.replicas", errs);
    validate_selector_and_template(deployment, "deployment", errs);
    match str_at(deployment, &["spec", "strategy", "type"]) {
        "Recreate" => {
            if at(deployment, &["spec", "strategy", "rollingUpdate"]).is_some() {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => validate_rolling_update(
            deployment,
            &["spec", "strategy", "rollingUpdate"],
            "spec.strategy.rollingUpdate",
            errs,
        ),
        other => errs.push(FieldError::not_supported(
            "spec.strategy.type",
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
    non_negative(
        deployment,
        &["spec", "minReadySeconds"],
        "spec.minReadySeconds",
        errs,
    );
    non_negative(
        deployment,
        &["spec", "revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
        errs,
    );
    non_negative(
        deployment,
        &["spec", "progressDeadlineSeconds"],
        "spec.progressDeadlineSeconds",
        errs,
    );
    if let Some(deadline) = int_at(deployment, &["spec", "progressDeadlineSeconds"])
        && deadline <= int_at(deployment, &["spec", "minReadySeconds"]).unwrap_or(0)
    {
        errs.push(FieldError::invalid(
            "spec.progressDeadlineSeconds",
            deadline,
            "must be greater than minReadySeconds",
        ));
    }
}

pub(super) fn validate_replica_set(replica_set: &Value, errs: &mut Vec<FieldError>) {
    non_negative(replica_set, &["spec", "replicas"], "spec.replicas", errs);
    non_negative(
        replica_set,
        &["spec", "minReadySeconds"],
        "spec.minReadySeconds",
        errs,
    );
    validate_selector_and_template(replica_set, "deployment", errs);
}

pub(super) fn validate_stateful_set(stateful_set: &Value, errs: &mut Vec<FieldError>) {
    match str_at(stateful_set, &["spec", "podManagementPolicy"]) {
        "OrderedReady" | "Parallel" => {}
        "" => errs.push(FieldError::required("spec.podManagementPolicy", "")),
        other => errs.push(FieldError::invalid(
            "spec.podManagementPolicy",
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    match str_at(stateful_set, &["spec", "updateStrategy", "type"]) {
        "RollingUpdate" => {
            non_negative(
                stateful_set,
                &["spec", "updateStrategy", "rollingUpdate", "partition"],
                "spec.updateStrategy.rollingUpdate.partition",
                errs,
            );
        }
        "OnDelete" => {
            if let Some(rolling) = at(stateful_set, &["spec", "updateStrategy", "rollingUpdate"]) {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    rolling.clone(),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "" => errs.push(FieldError::required("spec.updateStrategy", "")),
        other => errs.push(FieldError::invalid(
            "spec.updateStrategy.type",
            other,
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    non_negative(stateful_set, &["spec", "replicas"], "spec.replicas", errs);
    non_negative(
        stateful_set,
        &["spec", "minReadySeconds"],
        "spec.minReadySeconds",
        errs,
    );
    validate_selector_and_template(stateful_set, "statefulset", errs);
}

/// Only replicas, ordinals, template, updateStrategy, revisionHistoryLimit,
/// persistentVolumeClaimRetentionPolicy and minReadySeconds may change.
pub(super) fn validate_stateful_set_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let strip = |v: &Value| {
        let mut spec = at(v, &["spec"]).cloned().unwrap_or(Value::Null);
        if let Some(map) = spec.as_object_mut() {
            for key in [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ] {
                map.remove(key);
            }
        }
        spec
    };
    if strip(new) != strip(old) {
        errs.push(FieldError::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

pub(super) fn validate_daemon_set(daemon_set: &Value, errs: &mut Vec<FieldError>) {
    validate_selector_and_template(daemon_set, "daemonset", errs);
    match str_at(daemon_set, &["spec", "updateStrategy", "type"]) {
        "OnDelete" => {}
        "RollingUpdate" => validate_rolling_update(
            daemon_set,
            &["spec", "updateStrategy", "rollingUpdate"],
            "spec.updateStrategy.rollingUpdate",
            errs,
        ),
        other => errs.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            other,
            &["OnDelete", "RollingUpdate"],
        )),
    }
    non_negative(
        daemon_set,
        &["spec", "minReadySeconds"],
        "spec.minReadySeconds",
        errs,
    );
    non_negative(
        daemon_set,
        &["spec", "revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
        errs,
    );
}

/// apps/v1 selectors are immutable.
pub(super) fn validate_selector_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    immutable(new, old, &["spec", "selector"], "spec.selector", errs);
}

#[cfg(test)]
mod tests {
    use crate::validation::{FieldError, invalid_message, validate_create, validate_update};
    use serde_json::{Value, json};

    fn deployment(spec: Value) -> Value {
        let mut d = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec});
        crate::defaults::apply_defaults("apps", "v1", "Deployment", &mut d);
        d
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}})
    }

    #[test]
    fn deployment_rules() {
        let ok = deployment(
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": template()}),
        );
        assert!(validate_create("apps", "v1", "Deployment", &ok).is_empty());

        let errs = validate_create(
            "apps",
            "v1",
            "Deployment",
            &deployment(json!({"template": template(), "replicas": -1})),
        );
        assert_eq!(
            invalid_message("Deployment", "apps", "web", &errs),
            "Deployment.apps \"web\" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.selector: Required value]"
        );
        let m = messages(&validate_create(
            "apps",
            "v1",
            "Deployment",
            &deployment(json!({
            "selector": {"matchLabels": {"app": "other"}}, "template": template(),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}})),
        ));
        assert_eq!(
            m,
            vec![
                "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`",
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
            ]
        );
        let m = messages(&validate_create(
            "apps",
            "v1",
            "Deployment",
            &deployment(json!({
            "selector": {}, "template": template(), "strategy": {"type": "Recreate", "rollingUpdate": {}}})),
        ));
        assert_eq!(
            m,
            vec![
                "spec.selector: Invalid value: {}: empty selector is invalid for deployment",
                "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
            ]
        );
        let old = ok.clone();
        let mut new = ok.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
        new["spec"]["template"]["metadata"]["labels"]["v"] = json!("2");
        assert_eq!(
            messages(&validate_update("apps", "v1", "Deployment", &new, &old)),
            vec![
                "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"v\":\"2\"}}: field is immutable"
            ]
        );
    }

    #[test]
    fn stateful_set_and_daemon_set_rules() {
        let mut sts = json!({"metadata": {"name": "db", "namespace": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}}, "template": template(), "serviceName": "db"}});
        crate::defaults::apply_defaults("apps", "v1", "StatefulSet", &mut sts);
        assert!(validate_create("apps", "v1", "StatefulSet", &sts).is_empty());
        let mut changed = sts.clone();
        changed["spec"]["serviceName"] = json!("other");
        changed["spec"]["replicas"] = json!(3);
        let m = messages(&validate_update(
            "apps",
            "v1",
            "StatefulSet",
            &changed,
            &sts,
        ));
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with(
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas'"
        ));

        let mut ds = json!({"metadata": {"name": "agent", "namespace": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}}, "template": template()}});
        crate::defaults::apply_defaults("apps", "v1", "DaemonSet", &mut ds);
        assert!(validate_create("apps", "v1", "DaemonSet", &ds).is_empty());
        ds["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            messages(&validate_create("apps", "v1", "DaemonSet", &ds)),
            vec![
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
            ]
        );
    }
}
