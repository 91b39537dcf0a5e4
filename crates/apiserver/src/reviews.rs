//! Create-only review resources (`authorization.k8s.io`).
//!
//! This server has no authentication or authorization yet (plain HTTP on loopback only), so
//! every request is allowed; the reviews say so truthfully, which is what `kubectl auth can-i`
//! reports.

use api::catalogue::Resource;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::rest::Warnings;

pub fn create(res: &Resource, mut obj: Value) -> ApiResult<(Value, Warnings)> {
    crate::rest::check_type(res, &mut obj)?;
    match res.kind {
        "SelfSubjectAccessReview" => {
            if obj.pointer("/spec/resourceAttributes").is_none() && obj.pointer("/spec/nonResourceAttributes").is_none() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                ));
            }
            obj["status"] = json!({
                "allowed": true,
                "reason": "skiff: authorization is not enabled on this server; every request is allowed",
            });
        }
        "SelfSubjectRulesReview" => {
            obj["status"] = json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            });
        }
        other => return Err(ApiError::method_not_allowed(format!("{other} cannot be created"))),
    }
    Ok((obj, vec![]))
}
