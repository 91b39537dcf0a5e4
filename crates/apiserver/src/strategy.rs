//! Per-kind storage rules the generic handler applies: what a create resets, which kinds carry
//! `metadata.generation`, how status and spec are kept apart, and pod QoS.
//!
//! These follow each upstream registry's `strategy.go` (`PrepareForCreate`,
//! `PrepareForUpdate`, `GetResetFields`).

use api::catalogue::{Resource, Subresource};
use serde_json::{Value, json};

/// Kinds whose strategy sets `generation = 1` on create and bumps it on spec changes.
pub fn has_generation(res: &Resource) -> bool {
    matches!(
        (res.group, res.kind),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
            | ("", "ReplicationController")
            | ("batch", "Job" | "CronJob")
            | ("networking.k8s.io", "Ingress" | "NetworkPolicy")
            | ("discovery.k8s.io", "EndpointSlice")
            | ("policy", "PodDisruptionBudget")
            | ("autoscaling", "HorizontalPodAutoscaler")
    )
}

/// Resets what a create may not set, like each strategy's `PrepareForCreate`.
pub fn prepare_for_create(res: &Resource, obj: &mut Value) {
    if !res.has_subresource(Subresource::Status) {
        return;
    }
    match (res.group, res.kind) {
        // The kubelet registers its Node with status; upstream keeps it.
        ("", "Node") => {}
        ("", "Pod") => {
            let qos = qos_class(obj);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "Namespace") => obj["status"] = json!({"phase": "Active"}),
        ("", "PersistentVolume") => obj["status"] = json!({"phase": "Pending"}),
        ("", "PersistentVolumeClaim") => obj["status"] = json!({"phase": "Pending"}),
        _ => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
    }
}

/// On a main-resource update, status is kept from the old object (it changes only through
/// `/status`); on a `/status` update, everything but status is kept.
pub fn merge_for_update(res: &Resource, new: Value, old: &Value, status_update: bool) -> Value {
    if !res.has_subresource(Subresource::Status) {
        return new;
    }
    if status_update {
        let mut out = old.clone();
        match new.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        // Status writers (kubelet, controllers) may still touch metadata upstream for some
        // kinds; the safe common rule is: only status changes, but finalizers removed by a
        // status writer are honoured nowhere upstream either, so metadata stays as it was.
        out
    } else {
        let mut out = new;
        match old.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        out
    }
}

/// The pod's QoS class, computed like upstream's `qos.GetPodQOS`: BestEffort when no container
/// sets any cpu/memory request or limit; Guaranteed when every container has cpu and memory
/// limits equal to its requests; Burstable otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    let spec = &pod["spec"];
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| spec.get(*f).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c.pointer("/resources/requests");
        let limits = c.pointer("/resources/limits");
        for r in ["cpu", "memory"] {
            let req = requests.and_then(|m| m.get(r));
            let lim = limits.and_then(|m| m.get(r));
            if req.is_some() || lim.is_some() {
                any = true;
            }
            match (req, lim) {
                // A request defaults to its limit, so a limit alone is "equal".
                (None, Some(_)) => {}
                (Some(q), Some(l)) if quantity_eq(q, l) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn quantity_eq(a: &Value, b: &Value) -> bool {
    match (a.as_str(), b.as_str()) {
        (Some(x), Some(y)) => match (api::validation::parse_quantity(x), api::validation::parse_quantity(y)) {
            (Ok(p), Ok(q)) => p == q,
            _ => x == y,
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
        let guaranteed = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burst = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]}});
        assert_eq!(qos_class(&burst), "Burstable");
    }

    #[test]
    fn status_is_split_from_spec() {
        let deploy = api::catalogue::find("apps", "v1", "deployments").expect("deployments");
        let old = json!({"spec": {"replicas": 1}, "status": {"replicas": 1}});
        let new = json!({"spec": {"replicas": 2}, "status": {"replicas": 9}});
        let main = merge_for_update(deploy, new.clone(), &old, false);
        assert_eq!((main["spec"]["replicas"].as_i64(), main["status"]["replicas"].as_i64()), (Some(2), Some(1)));
        let status = merge_for_update(deploy, new, &old, true);
        assert_eq!((status["spec"]["replicas"].as_i64(), status["status"]["replicas"].as_i64()), (Some(1), Some(9)));
    }
}
