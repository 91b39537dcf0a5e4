//! Request bodies in, responses out: JSON, YAML and Kubernetes protobuf.
//!
//! kubectl 1.32+ sends protobuf for `kubectl create <generator>` (kubernetes PR #125314) and
//! accepts JSON back, so responses are always JSON (or a `Table` when asked for).

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// The request body limit, like upstream's 3 MiB `MaxRequestBodyBytes`.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The media type of a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    Protobuf,
}

impl BodyFormat {
    /// From `Content-Type`; a missing one means JSON (kubectl's `PUT …/scale` sends none).
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<BodyFormat> {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "" | "application/json" | "*/*" => Ok(BodyFormat::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(BodyFormat::Yaml),
            "application/vnd.kubernetes.protobuf" => Ok(BodyFormat::Protobuf),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// Decodes an object body. Errors are 400s that say what is wrong with the body.
pub fn decode_object(format: BodyFormat, body: &[u8]) -> ApiResult<Value> {
    let value = match format {
        BodyFormat::Json => serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded as JSON: {e}")))?,
        BodyFormat::Yaml => decode_yaml(body)?,
        BodyFormat::Protobuf => crate::protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded as protobuf: {e}")))?,
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a JSON object, got {}",
            json_type_name(&value)
        )));
    }
    Ok(value)
}

/// YAML to JSON, refusing documents JSON cannot represent (non-string keys, multiple docs).
pub fn decode_yaml(body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the YAML body is not valid UTF-8"))?;
    let yaml: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded as YAML: {e}")))?;
    serde_json::to_value(yaml)
        .map_err(|e| ApiError::bad_request(format!("the YAML body cannot be represented as JSON: {e}")))
}

pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a body up to [`MAX_BODY_BYTES`]; over that is a 413 like upstream.
pub async fn read_body(body: Body) -> ApiResult<Bytes> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("Request entity too large: limit is {MAX_BODY_BYTES}"),
                ))
            } else {
                Err(ApiError::bad_request(format!("reading the request body failed: {e}")))
            }
        }
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &Value) -> Response {
    json_bytes_response(status, serde_json::to_vec(value).unwrap_or_default(), "application/json")
}

pub fn json_bytes_response(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// What the client wants back, from `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseShape {
    Object,
    /// `application/json;as=Table;v=v1;g=meta.k8s.io` (kubectl get).
    Table,
    /// `as=PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
}

impl ResponseShape {
    pub fn from_headers(headers: &HeaderMap) -> ResponseShape {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        for part in accept.split(',') {
            let params: Vec<&str> = part.split(';').map(|s| s.trim()).collect();
            let media = params.first().copied().unwrap_or("");
            if media != "application/json" && media != "*/*" && !media.is_empty() {
                continue;
            }
            let has = |k: &str, v: &str| params.iter().any(|p| *p == format!("{k}={v}"));
            if has("as", "Table") && has("g", "meta.k8s.io") && (has("v", "v1") || has("v", "v1beta1")) {
                return ResponseShape::Table;
            }
            if (has("as", "PartialObjectMetadata") || has("as", "PartialObjectMetadataList"))
                && has("g", "meta.k8s.io")
            {
                return ResponseShape::Metadata;
            }
            if params.len() == 1 || !params.iter().any(|p| p.starts_with("as=")) {
                return ResponseShape::Object;
            }
        }
        ResponseShape::Object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_accept_is_recognised() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
            ),
        );
        assert_eq!(ResponseShape::from_headers(&h), ResponseShape::Table);
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert_eq!(ResponseShape::from_headers(&h), ResponseShape::Object);
    }

    #[test]
    fn yaml_and_bad_bodies() {
        let v = decode_object(BodyFormat::Yaml, b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n").expect("yaml");
        assert_eq!(v["metadata"]["name"], "x");
        let e = decode_object(BodyFormat::Json, b"{\"a\":").expect_err("truncated");
        assert_eq!(e.code, 400);
        let e = decode_object(BodyFormat::Json, b"[1]").expect_err("array");
        assert!(e.message.contains("an array"));
        let e = decode_object(BodyFormat::Yaml, b"a: [").expect_err("bad yaml");
        assert_eq!(e.code, 400);
    }
}
