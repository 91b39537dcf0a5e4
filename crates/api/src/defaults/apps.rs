//! apps/v1 defaults (`pkg/apis/apps/v1/defaults.go`).

use serde_json::{Map, Value, json};

use super::{child_object, core, default_field, default_string, existing_object, pod};

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(template) = existing_object(spec, "template") {
        pod::default_pod_template(template);
    }
}

/// `SetDefaults_Deployment`: replicas 1, RollingUpdate 25%/25%, 10 old ReplicaSets kept,
/// progress deadline 600 s.
pub(super) fn default_deployment(deployment: &mut Map<String, Value>) {
    let Some(spec) = child_object(deployment, "spec") else {
        return;
    };
    default_field(spec, "replicas", 1);
    if let Some(strategy) = child_object(spec, "strategy") {
        default_string(strategy, "type", "RollingUpdate");
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(rolling) = child_object(strategy, "rollingUpdate")
        {
            default_field(rolling, "maxUnavailable", "25%");
            default_field(rolling, "maxSurge", "25%");
        }
    }
    default_field(spec, "revisionHistoryLimit", 10);
    default_field(spec, "progressDeadlineSeconds", 600);
    default_template(spec);
}

/// `SetDefaults_ReplicaSet`: replicas 1.
pub(super) fn default_replica_set(replica_set: &mut Map<String, Value>) {
    let Some(spec) = child_object(replica_set, "spec") else {
        return;
    };
    default_field(spec, "replicas", 1);
    default_template(spec);
}

/// `SetDefaults_StatefulSet`.
pub(super) fn default_stateful_set(stateful_set: &mut Map<String, Value>) {
    let Some(spec) = child_object(stateful_set, "spec") else {
        return;
    };
    default_string(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = child_object(spec, "updateStrategy") {
        let type_unset = matches!(strategy.get("type"), None | Some(Value::Null))
            || strategy.get("type").and_then(Value::as_str) == Some("");
        if type_unset {
            strategy.insert("type".to_owned(), json!("RollingUpdate"));
            // Upstream creates the rollingUpdate block only when it also chose the type.
            default_field(strategy, "rollingUpdate", json!({}));
        }
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(rolling) = existing_object(strategy, "rollingUpdate")
        {
            default_field(rolling, "partition", 0);
        }
    }
    if let Some(retention) = child_object(spec, "persistentVolumeClaimRetentionPolicy") {
        default_string(retention, "whenDeleted", "Retain");
        default_string(retention, "whenScaled", "Retain");
    }
    default_field(spec, "replicas", 1);
    default_field(spec, "revisionHistoryLimit", 10);
    if let Some(claims) = spec
        .get_mut("volumeClaimTemplates")
        .and_then(Value::as_array_mut)
    {
        for claim in claims.iter_mut().filter_map(Value::as_object_mut) {
            core::default_persistent_volume_claim(claim);
        }
    }
    default_template(spec);
}

/// `SetDefaults_DaemonSet`: RollingUpdate with maxUnavailable 1 and maxSurge 0.
pub(super) fn default_daemon_set(daemon_set: &mut Map<String, Value>) {
    let Some(spec) = child_object(daemon_set, "spec") else {
        return;
    };
    if let Some(strategy) = child_object(spec, "updateStrategy") {
        default_string(strategy, "type", "RollingUpdate");
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(rolling) = child_object(strategy, "rollingUpdate")
        {
            default_field(rolling, "maxUnavailable", 1);
            default_field(rolling, "maxSurge", 0);
        }
    }
    default_field(spec, "revisionHistoryLimit", 10);
    default_template(spec);
}

#[cfg(test)]
mod tests {
    use crate::defaults::apply_defaults;
    use serde_json::json;

    /// What `kubectl create deployment web --image=nginx` posts.
    fn kubectl_create_deployment() -> serde_json::Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}}}})
    }

    #[test]
    fn deployment_matches_upstream_output() {
        let mut deployment = kubectl_create_deployment();
        apply_defaults("apps", "v1", "Deployment", &mut deployment);
        assert_eq!(
            deployment["spec"],
            json!({"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {},
                        "imagePullPolicy": "Always",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File"}],
                        "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                        "securityContext": {}, "terminationGracePeriodSeconds": 30,
                        "schedulerName": "default-scheduler"}},
                "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600})
        );
        let once = deployment.clone();
        apply_defaults("apps", "v1", "Deployment", &mut deployment);
        assert_eq!(once, deployment);
    }

    #[test]
    fn recreate_deployment_gets_no_rolling_update() {
        let mut deployment = json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 0}});
        apply_defaults("apps", "v1", "Deployment", &mut deployment);
        assert_eq!(deployment["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(deployment["spec"]["replicas"], 0);
    }

    #[test]
    fn stateful_set_and_daemon_set() {
        let mut sts = json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"]}}]}});
        apply_defaults("apps", "v1", "StatefulSet", &mut sts);
        let spec = &sts["spec"];
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(
            spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["status"]["phase"],
            "Pending"
        );

        let mut ds = json!({"spec": {}});
        apply_defaults("apps", "v1", "DaemonSet", &mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    }
}
