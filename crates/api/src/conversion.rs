//! Conversion between a served version and the stored one.
//!
//! One resource is served in two shapes over one storage: `events` in core/v1 and in
//! `events.k8s.io/v1` (upstream stores both as core Events; `pkg/apis/events/v1` converts).
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

/// Whether objects of `res` are stored in another shape than served.
pub fn needs_conversion(res: &Resource) -> bool {
    is_events_v1(res)
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
    if !is_events_v1(res) {
        return obj.clone();
    }
    rename(obj, EVENT_FIELDS.iter().copied(), "v1")
}

/// The served form of a stored object for `res`.
pub fn from_storage(res: &Resource, obj: &Value) -> Value {
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
}
