//! The three PATCH formats of the Kubernetes API.
//!
//! * [`json_patch`]: `application/json-patch+json`, RFC 6902 operations (including `test`),
//!   applied with the `json-patch` crate. Used by `kubectl rollout undo`.
//! * [`merge_patch`]: `application/merge-patch+json`, RFC 7386. Used by `kubectl label`,
//!   `annotate` and `scale`.
//! * [`strategic_merge_patch`] (in `strategic`): `application/strategic-merge-patch+json`,
//!   upstream apimachinery's `strategicpatch` driven by the schema index's patch strategies and
//!   merge keys. Used by `kubectl apply` (client-side), `rollout restart`, `edit`.
//!
//! Every function works on a copy and returns the patched document; the input is untouched.
//! [`PatchError::http_status`] gives the status upstream's API server answers for each error.

mod strategic;

use serde_json::{Map, Value};

pub use strategic::strategic_merge_patch;

/// Why a patch could not be applied. Not retryable: the patch (or its combination with the
/// stored object) is at fault, except that a concurrent update may make a `test` op pass.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The JSON patch body does not decode as a list of RFC 6902 operations.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(#[source] serde_json::Error),
    /// A JSON patch operation failed: a path that does not exist, or a `test` that did not match.
    #[error("the JSON patch could not be applied: {0}")]
    JsonPatchFailed(#[source] json_patch::PatchError),
    /// A merge or strategic merge patch (or the document it applies to) is not a JSON object.
    #[error("{what} must be a JSON object")]
    NotAnObject { what: &'static str },
    /// A strategic merge patch directive is malformed (`$setElementOrder`, `$retainKeys`,
    /// `$deleteFromPrimitiveList`), or the patch names keys its `$retainKeys` does not list.
    #[error("{}", located(.field, .message))]
    BadFormat { field: String, message: String },
    /// The strategic merge patch is well-formed but cannot be applied to this kind of list
    /// (lists of lists).
    #[error("{}", located(.field, .message))]
    Unprocessable { field: String, message: String },
    /// The strategic merge patch does not fit the object: a list element without its merge key,
    /// an unknown `$patch` directive, element types that differ, an order list that does not
    /// match the patch list.
    #[error("{}", located(.field, .message))]
    Merge { field: String, message: String },
}

impl PatchError {
    /// The HTTP status upstream's API server answers with (`patch.go` in apiserver's handlers):
    /// 400 for bodies that do not decode or malformed directives, 422 for JSON patch operations
    /// that fail and lists of lists, and 500 for the other strategic merge errors (upstream
    /// passes them through as internal errors).
    pub fn http_status(&self) -> u16 {
        match self {
            PatchError::InvalidJsonPatch(_)
            | PatchError::NotAnObject { .. }
            | PatchError::BadFormat { .. } => 400,
            PatchError::JsonPatchFailed(_) | PatchError::Unprocessable { .. } => 422,
            PatchError::Merge { .. } => 500,
        }
    }
}

fn located(field: &str, message: &str) -> String {
    if field.is_empty() {
        message.to_owned()
    } else {
        format!("field \"{field}\": {message}")
    }
}

/// Applies an RFC 6902 JSON patch (`[{"op":"replace","path":"/spec/replicas","value":3}]`).
/// The operations apply in order; if one fails, none is applied.
pub fn json_patch(doc: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let operations: json_patch::Patch =
        serde_json::from_slice(patch).map_err(PatchError::InvalidJsonPatch)?;
    let mut patched = doc.clone();
    json_patch::patch(&mut patched, &operations).map_err(PatchError::JsonPatchFailed)?;
    Ok(patched)
}

/// Applies an RFC 7386 JSON merge patch: objects merge key by key, `null` deletes a key,
/// everything else (lists included) replaces. As upstream (evanphx/json-patch `MergePatch`),
/// the patch itself must be an object. Keys keep their order; new keys go last.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject {
            what: "a JSON merge patch",
        });
    };
    let mut patched = doc.clone();
    merge_object(&mut patched, patch);
    Ok(patched)
}

fn merge_object(target: &mut Value, patch: &Map<String, Value>) {
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        match value {
            // shift_remove keeps the other keys in place (serde_json's `remove` would swap).
            Value::Null => {
                target.shift_remove(key);
            }
            Value::Object(nested) => {
                let slot = target.entry(key.clone()).or_insert(Value::Null);
                merge_object(slot, nested);
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_patch_applies_operations_in_order() {
        let doc = json!({"metadata": {"name": "web", "annotations": {"a": "1"}}, "spec": {"replicas": 1}});
        let patch = br#"[
            {"op":"test","path":"/spec/replicas","value":1},
            {"op":"replace","path":"/spec/replicas","value":3},
            {"op":"add","path":"/metadata/labels","value":{"app":"web"}},
            {"op":"remove","path":"/metadata/annotations/a"}
        ]"#;
        assert_eq!(
            json_patch(&doc, patch).expect("applies"),
            json!({"metadata": {"name": "web", "annotations": {}, "labels": {"app": "web"}}, "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn json_patch_failed_test_is_unprocessable_and_atomic() {
        let doc = json!({"spec": {"replicas": 1}});
        let patch = br#"[{"op":"replace","path":"/spec/replicas","value":5},
                         {"op":"test","path":"/spec/replicas","value":2}]"#;
        let err = json_patch(&doc, patch).expect_err("test fails");
        assert!(matches!(err, PatchError::JsonPatchFailed(_)));
        assert_eq!(err.http_status(), 422);
        let err =
            json_patch(&doc, br#"[{"op":"remove","path":"/spec/missing"}]"#).expect_err("missing");
        assert_eq!(err.http_status(), 422);
    }

    #[test]
    fn json_patch_rejects_malformed_bodies() {
        let doc = json!({});
        for body in [
            &b"{}"[..],
            b"[{\"op\":\"frobnicate\",\"path\":\"/a\"}]",
            b"not json",
        ] {
            let err = json_patch(&doc, body).expect_err("malformed");
            assert!(matches!(err, PatchError::InvalidJsonPatch(_)), "{err}");
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let doc = json!({
            "metadata": {"labels": {"a": "1", "b": "2", "c": "3"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "x", "image": "i"}]}}}
        });
        let patch = json!({
            "metadata": {"labels": {"a": null, "tier": "frontend"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "y"}]}}},
            "status": {"ready": true}
        });
        let patched = merge_patch(&doc, &patch).expect("applies");
        assert_eq!(
            patched,
            json!({
                "metadata": {"labels": {"b": "2", "c": "3", "tier": "frontend"}},
                "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "y"}]}}},
                "status": {"ready": true}
            })
        );
        // Removing a key keeps the others in their order.
        let labels: Vec<&String> = patched["metadata"]["labels"]
            .as_object()
            .expect("labels")
            .keys()
            .collect();
        assert_eq!(labels, ["b", "c", "tier"]);
    }

    #[test]
    fn merge_patch_replaces_non_objects_and_requires_object_patch() {
        let doc = json!({"spec": {"selector": "x"}});
        assert_eq!(
            merge_patch(&doc, &json!({"spec": {"selector": {"app": "web"}}})).expect("ok"),
            json!({"spec": {"selector": {"app": "web"}}})
        );
        let err = merge_patch(&doc, &json!([1])).expect_err("array patch");
        assert_eq!(err.http_status(), 400);
    }
}
