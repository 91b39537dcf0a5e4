//! Conversion between a served version and the stored one.
//!
//! Two resources are served in two shapes over one storage:
//! * `events` in core/v1 and `events.k8s.io/v1` (upstream stores both as core Events;
//!   `pkg/apis/events/v1` converts);
//! * `horizontalpodautoscalers` in `autoscaling/v2` (stored) and `autoscaling/v1`, whose single
//!   `targetCPUUtilizationPercentage` is the v2 cpu Utilization metric
//!   (`pkg/apis/autoscaling/v1/conversion.go`).
//!
//! Every other resource is stored as served.

use serde_json::{Map, Value, json};

use crate::catalogue::Resource;

/// Field renames between events.k8s.io/v1 (left) and core/v1 (right).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedSource", "source"),
    ("reportingController", "reportingComponent"),
];

fn is_events_v1(res: &Resource) -> bool {
    res.group == "events.k8s.io" && res.kind == "Event"
}

fn is_hpa_v1(res: &Resource) -> bool {
    res.group == "autoscaling" && res.version == "v1" && res.kind == "HorizontalPodAutoscaler"
}

/// Whether objects of `res` are stored in another shape than served.
pub fn needs_conversion(res: &Resource) -> bool {
    is_events_v1(res) || is_hpa_v1(res)
}

/// A v1 HPA (served) to its stored v2 form.
fn hpa_v1_to_v2(obj: &Value) -> Value {
    let mut out = obj.clone();
    out["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(pct) = spec.remove("targetCPUUtilizationPercentage") {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": pct}}}]),
            );
        }
    if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut)
        && let Some(pct) = status.remove("currentCPUUtilizationPercentage") {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": pct}}}]),
            );
        }
    out
}

/// The stored v2 HPA in its v1 shape: only the cpu Utilization metric has a v1 field.
fn hpa_v2_to_v1(obj: &Value) -> Value {
    let is_cpu_util = |m: &Value| {
        m.get("type").and_then(Value::as_str) == Some("Resource")
            && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
    };
    let mut out = obj.clone();
    out["apiVersion"] = json!("autoscaling/v1");
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(Value::Array(metrics)) = spec.remove("metrics")
            && let Some(pct) = metrics
                .iter()
                .find(|m| is_cpu_util(m) && m.pointer("/resource/target/type").and_then(Value::as_str) == Some("Utilization"))
                .and_then(|m| m.pointer("/resource/target/averageUtilization"))
            {
                spec.insert("targetCPUUtilizationPercentage".into(), pct.clone());
            }
        spec.remove("behavior");
    }
    if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(Value::Array(metrics)) = status.remove("currentMetrics")
            && let Some(pct) = metrics.iter().find(|m| is_cpu_util(m)).and_then(|m| m.pointer("/resource/current/averageUtilization")) {
                status.insert("currentCPUUtilizationPercentage".into(), pct.clone());
            }
        status.remove("conditions");
    }
    out
}

fn rename(obj: &Value, pairs: impl Iterator<Item = (&'static str, &'static str)>, api_version: &str) -> Value {
    let Some(m) = obj.as_object() else { return obj.clone() };
    let renames: Vec<(&str, &str)> = pairs.collect();
    let mut out = Map::new();
    for (k, v) in m {
        let key = renames.iter().find(|(from, _)| from == k).map(|(_, to)| *to).unwrap_or(k.as_str());
        out.insert(key.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), json!(api_version));
    Value::Object(out)
}

/// The stored (core/v1) form of an object of `res`.
pub fn to_storage(res: &Resource, obj: &Value) -> Value {
    if is_hpa_v1(res) {
        return hpa_v1_to_v2(obj);
    }
    if !is_events_v1(res) {
        return obj.clone();
    }
    rename(obj, EVENT_FIELDS.iter().copied(), "v1")
}

/// The served form of a stored object for `res`.
pub fn from_storage(res: &Resource, obj: &Value) -> Value {
    if is_hpa_v1(res) {
        return hpa_v2_to_v1(obj);
    }
    if !is_events_v1(res) {
        return obj.clone();
    }
    rename(obj, EVENT_FIELDS.iter().map(|(a, b)| (*b, *a)), "events.k8s.io/v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_between_versions() {
        let res = crate::catalogue::find("events.k8s.io", "v1", "events").expect("events.k8s.io");
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "note": "hi", "regarding": {"name": "p"}, "reason": "R"});
        let stored = to_storage(res, &v1);
        assert_eq!(stored["message"], "hi");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(from_storage(res, &stored), v1);
        let core = crate::catalogue::find("", "v1", "events").expect("events");
        assert!(!needs_conversion(core));
    }

    #[test]
    fn hpa_v1_round_trips_through_v2() {
        let res = crate::catalogue::find("autoscaling", "v1", "horizontalpodautoscalers").expect("hpa v1");
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80}});
        let stored = to_storage(res, &v1);
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
        assert_eq!(from_storage(res, &stored), v1);
    }
}
