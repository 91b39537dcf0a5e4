//! API errors and their `Status` form.
//!
//! Every failure a client sees is a `metav1.Status` with the HTTP code, `reason` and `details`
//! upstream would send (apimachinery `pkg/api/errors`), so kubectl prints
//! `Error from server (<Reason>): <message>`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

/// Optional `details` of a Status: which object, and the field causes.
#[derive(Clone, Debug, Default)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub causes: Vec<Value>,
    pub retry_after_seconds: Option<u64>,
}

/// An error answered as a `Status`. Not retryable unless its reason says so (Timeout,
/// ServiceUnavailable, TooManyRequests).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Details>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: Details) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `pods "web" not found`, with details naming the object like upstream.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let gr = if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") };
        Self::new(404, "NotFound", format!("{gr} \"{name}\" not found")).with_details(Details {
            name: Some(name.to_string()),
            group: Some(group.to_string()),
            kind: Some(plural.to_string()),
            ..Default::default()
        })
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let gr = if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") };
        Self::new(409, "AlreadyExists", format!("{gr} \"{name}\" already exists")).with_details(Details {
            name: Some(name.to_string()),
            group: Some(group.to_string()),
            kind: Some(plural.to_string()),
            ..Default::default()
        })
    }

    /// The optimistic-concurrency conflict, in upstream's words.
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let gr = if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") };
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}")).with_details(
            Details {
                name: Some(name.to_string()),
                group: Some(group.to_string()),
                kind: Some(plural.to_string()),
                ..Default::default()
            },
        )
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"))
    }

    /// 410 for a resourceVersion older than the retained history (clients re-list).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn status_json(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if let Some(n) = &d.name {
                details.insert("name".into(), json!(n));
            }
            if let Some(g) = &d.group {
                if !g.is_empty() {
                    details.insert("group".into(), json!(g));
                }
            }
            if let Some(k) = &d.kind {
                details.insert("kind".into(), json!(k));
            }
            if !d.causes.is_empty() {
                details.insert("causes".into(), Value::Array(d.causes.clone()));
            }
            if let Some(s) = d.retry_after_seconds {
                details.insert("retryAfterSeconds".into(), json!(s));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.status_json()).unwrap_or_default();
        let mut resp = (code, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        use store::StoreError::*;
        match e {
            Compacted { requested, compacted } => ApiError::expired(format!(
                "The resourceVersion for the provided watch is too old. (requested {requested}, oldest available {compacted})"
            )),
            FutureRevision { requested, current } => ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            )
            .with_details(Details { retry_after_seconds: Some(1), ..Default::default() }),
            Unavailable(m) => ApiError::unavailable(format!("the datastore is unavailable: {m}")),
            other => ApiError::internal(other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
