//! Defaults of the smaller groups: networking.k8s.io, discovery.k8s.io,
//! rbac.authorization.k8s.io, scheduling.k8s.io, autoscaling and storage.k8s.io.

use serde_json::{Map, Value, json};

use super::{child_object, default_field, default_string, each_object, existing_object, is_empty};

/// networking/v1 `SetDefaults_NetworkPolicy` and `_NetworkPolicyPort`.
pub(super) fn default_network_policy(policy: &mut Map<String, Value>) {
    let Some(spec) = child_object(policy, "spec") else {
        return;
    };
    for direction in ["ingress", "egress"] {
        each_object(spec, direction, |rule| {
            each_object(rule, "ports", |port| default_field(port, "protocol", "TCP"));
        });
    }
    if is_empty(spec, "policyTypes") {
        // Ingress is always isolated; Egress only when the policy says something about it.
        let types = if is_empty(spec, "egress") {
            json!(["Ingress"])
        } else {
            json!(["Ingress", "Egress"])
        };
        spec.insert("policyTypes".to_owned(), types);
    }
}

/// discovery/v1 `SetDefaults_EndpointPort`: name "" and protocol TCP.
pub(super) fn default_endpoint_slice(slice: &mut Map<String, Value>) {
    each_object(slice, "ports", |port| {
        default_field(port, "name", "");
        default_field(port, "protocol", "TCP");
    });
}

/// rbac/v1 `SetDefaults_(Cluster)RoleBinding` and `_Subject`.
pub(super) fn default_role_binding(binding: &mut Map<String, Value>) {
    if let Some(role_ref) = existing_object(binding, "roleRef") {
        default_string(role_ref, "apiGroup", "rbac.authorization.k8s.io");
    }
    each_object(binding, "subjects", |subject| {
        if !is_empty(subject, "apiGroup") {
            return;
        }
        match subject.get("kind").and_then(Value::as_str) {
            Some("ServiceAccount") => {
                subject.insert("apiGroup".to_owned(), json!(""));
            }
            Some("User" | "Group") => {
                subject.insert("apiGroup".to_owned(), json!("rbac.authorization.k8s.io"));
            }
            _ => {}
        }
    });
}

/// scheduling/v1 `SetDefaults_PriorityClass`.
pub(super) fn default_priority_class(class: &mut Map<String, Value>) {
    default_field(class, "preemptionPolicy", "PreemptLowerPriority");
}

/// autoscaling `SetDefaults_HorizontalPodAutoscaler` (v1 and v2).
pub(super) fn default_horizontal_pod_autoscaler(version: &str, hpa: &mut Map<String, Value>) {
    let Some(spec) = child_object(hpa, "spec") else {
        return;
    };
    default_field(spec, "minReplicas", 1);
    if version != "v2" {
        return;
    }
    if is_empty(spec, "metrics") {
        // autoscaling.DefaultCPUUtilization: 80% of requested CPU.
        spec.insert(
            "metrics".to_owned(),
            json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    // Behavior is only filled in when the user asked for one (GenerateHPAScale{Up,Down}Rules).
    if let Some(behavior) = existing_object(spec, "behavior") {
        if let Some(up) = child_object(behavior, "scaleUp") {
            default_field(up, "stabilizationWindowSeconds", 0);
            default_field(up, "selectPolicy", "Max");
            if is_empty(up, "policies") {
                up.insert(
                    "policies".to_owned(),
                    json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                        {"type": "Percent", "value": 100, "periodSeconds": 15}]),
                );
            }
        }
        if let Some(down) = child_object(behavior, "scaleDown") {
            default_field(down, "stabilizationWindowSeconds", 300);
            default_field(down, "selectPolicy", "Max");
            if is_empty(down, "policies") {
                down.insert(
                    "policies".to_owned(),
                    json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
                );
            }
        }
    }
}

/// storage/v1 `SetDefaults_StorageClass`.
pub(super) fn default_storage_class(class: &mut Map<String, Value>) {
    default_field(class, "reclaimPolicy", "Delete");
    default_field(class, "volumeBindingMode", "Immediate");
}

#[cfg(test)]
mod tests {
    use crate::defaults::apply_defaults;
    use serde_json::json;

    #[test]
    fn network_policy_types() {
        let mut np = json!({"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}});
        apply_defaults("networking.k8s.io", "v1", "NetworkPolicy", &mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(np["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
        let mut np = json!({"spec": {"egress": [{}]}});
        apply_defaults("networking.k8s.io", "v1", "NetworkPolicy", &mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    }

    #[test]
    fn rbac_subjects_and_others() {
        let mut rb = json!({"roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "a"}, {"kind": "ServiceAccount", "name": "b"},
                {"kind": "Group", "name": "c", "apiGroup": "x"}]});
        apply_defaults("rbac.authorization.k8s.io", "v1", "RoleBinding", &mut rb);
        assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(rb["subjects"][1]["apiGroup"], "");
        assert_eq!(rb["subjects"][2]["apiGroup"], "x");

        let mut pc = json!({"value": 5});
        apply_defaults("scheduling.k8s.io", "v1", "PriorityClass", &mut pc);
        assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");

        let mut slice = json!({"ports": [{"port": 80}]});
        apply_defaults("discovery.k8s.io", "v1", "EndpointSlice", &mut slice);
        assert_eq!(
            slice["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );

        let mut hpa =
            json!({"spec": {"maxReplicas": 3, "behavior": {"scaleDown": {"selectPolicy": "Min"}}}});
        apply_defaults("autoscaling", "v2", "HorizontalPodAutoscaler", &mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(hpa["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Min");
        assert_eq!(
            hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            300
        );
        assert_eq!(
            hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["value"],
            4
        );
    }
}
