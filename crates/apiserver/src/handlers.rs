//! Dispatch of resource requests: verb × subresource → the generic REST operations.

use std::time::Instant;

use api::catalogue::{self, Resource, Subresource};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::codec::{self, BodyFormat, ResponseShape};
use crate::error::{ApiError, ApiResult};
use crate::request::{Query, RequestInfo};
use crate::rest::{self, DeleteOptions, SharedState, UpdateKind, WriteOptions};
use crate::{object, watch};

/// The entry point for every `/api/v1/…` and `/apis/<g>/<v>/…` resource request.
pub async fn resource(State(state): State<SharedState>, req: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (parts.method.clone(), parts.uri.clone(), parts.headers.clone());
    let info = RequestInfo::parse(uri.path());
    let q = Query::parse(uri.query());
    let verb = verb_of(&method, info.as_ref(), &q);
    let resource_label = info.as_ref().map(|i| i.resource.clone()).unwrap_or_default();
    let resp = match info {
        Some(info) => match dispatch(&state, &method, &info, &q, &headers, body, parts).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
        None => ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response(),
    };
    state.metrics.observe_request(verb, &resource_label, resp.status().as_u16(), started.elapsed());
    resp
}

fn verb_of(method: &Method, info: Option<&RequestInfo>, q: &Query) -> &'static str {
    let named = info.is_some_and(|i| i.name.is_some());
    match *method {
        Method::GET if q.flag("watch") => "WATCH",
        Method::GET if named => "GET",
        Method::GET => "LIST",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE if named => "DELETE",
        Method::DELETE => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

fn find_resource(info: &RequestInfo) -> ApiResult<&'static Resource> {
    let res = catalogue::find(&info.group, &info.version, &info.resource)
        .ok_or_else(|| ApiError::new(404, "NotFound", "the server could not find the requested resource"))?;
    if info.namespace.is_some() && !res.namespaced {
        return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    Ok(res)
}

async fn dispatch(
    state: &SharedState,
    method: &Method,
    info: &RequestInfo,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
    // The request's parts with their extensions (hyper's upgrade handle for exec).
    parts: http::request::Parts,
) -> ApiResult<Response> {
    let res = find_resource(info)?;
    let ns = info.namespace.as_deref();
    let shape = ResponseShape::from_headers(headers);
    if info.subresource.as_deref() == Some("finalize") && res.group.is_empty() && res.kind == "Namespace" {
        if *method != Method::PUT {
            return Err(ApiError::method_not_allowed("namespaces/finalize accepts PUT only"));
        }
        return finalize_namespace(state, res, info, q, headers, body).await;
    }
    let sub = match &info.subresource {
        Some(s) => Some(
            Subresource::from_name(s)
                .filter(|s| res.has_subresource(*s) || (*s == Subresource::Status && res.kind == "Namespace"))
                .ok_or_else(|| ApiError::new(404, "NotFound", "the server could not find the requested resource"))?,
        ),
        None => None,
    };
    if res.group.is_empty() && res.kind == "Binding" && *method == Method::POST && info.name.is_none() {
        return crate::subresources::bindings_collection(state, ns, q, headers, body).await;
    }
    if res.create_only && !(*method == Method::POST && info.name.is_none()) {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            res.group_resource()
        )));
    }

    match (method.clone(), info.name.as_deref(), sub) {
        (Method::GET, None, None) => {
            if q.flag("watch") {
                return watch::serve(state.clone(), res, ns.map(String::from), q.clone(), shape).await;
            }
            let (items, rev, cont) = rest::list(state, res, ns, q).await?;
            Ok(respond(StatusCode::OK, &rest::list_response(res, items, rev, cont, shape, q), shape, &[]))
        }
        (Method::POST, None, None) => {
            let format = rest::body_format(headers)?;
            let raw = codec::read_body(body).await?;
            let obj = codec::decode_object(format, &raw)?;
            let opts = WriteOptions::from_request(q, headers)?;
            let (obj, warnings) = rest::create(state, res, ns, obj, Some((&raw, format)), &opts).await?;
            Ok(respond(StatusCode::CREATED, &rest::object_response(res, obj, shape, q), shape, &warnings))
        }
        (Method::DELETE, None, None) => {
            let raw = codec::read_body(body).await?;
            let opts = DeleteOptions::parse(q, &raw)?;
            let list = rest::delete_collection(state, res, ns, q, &opts).await?;
            Ok(respond(StatusCode::OK, &list, ResponseShape::Object, &[]))
        }
        (Method::GET, Some(name), None) => {
            let (obj, _) = rest::get_object(state, res, ns, name).await?;
            Ok(respond(StatusCode::OK, &rest::object_response(res, obj, shape, q), shape, &[]))
        }
        (Method::PUT, Some(name), None | Some(Subresource::Status)) => {
            let kind = if sub.is_some() { UpdateKind::Status } else { UpdateKind::Main };
            let format = rest::body_format(headers)?;
            let raw = codec::read_body(body).await?;
            let new = codec::decode_object(format, &raw)?;
            let opts = WriteOptions::from_request(q, headers)?;
            let raw_vec = raw.to_vec();
            let (obj, warnings) = rest::update(state, res, ns, name, kind, &opts, |_cur| {
                Ok((new.clone(), Some((raw_vec.clone(), format))))
            })
            .await?;
            Ok(respond(StatusCode::OK, &rest::object_response(res, obj, shape, q), shape, &warnings))
        }
        (Method::PATCH, Some(name), None | Some(Subresource::Status)) => {
            let kind = if sub.is_some() { UpdateKind::Status } else { UpdateKind::Main };
            patch(state, res, ns, name, kind, q, headers, body, shape).await
        }
        (Method::DELETE, Some(name), None) => {
            let raw = codec::read_body(body).await?;
            let opts = DeleteOptions::parse(q, &raw)?;
            let (obj, code) = rest::delete(state, res, ns, name, &opts).await?;
            Ok(respond(code, &obj, ResponseShape::Object, &[]))
        }
        (Method::GET, Some(name), Some(Subresource::Status)) => {
            let (obj, _) = rest::get_object(state, res, ns, name).await?;
            Ok(respond(StatusCode::OK, &rest::object_response(res, obj, shape, q), shape, &[]))
        }
        (_, Some(name), Some(Subresource::Scale)) => crate::subresources::scale(state, res, ns, name, method, q, headers, body).await,
        (Method::POST, Some(name), Some(Subresource::Binding)) => {
            crate::subresources::binding(state, res, ns, name, q, headers, body).await
        }
        (Method::POST, Some(name), Some(Subresource::Eviction)) => {
            crate::subresources::eviction(state, res, ns, name, headers, body).await
        }
        (_, Some(name), Some(Subresource::Log | Subresource::Exec | Subresource::Attach | Subresource::PortForward)) => {
            let req = http::Request::from_parts(parts, body);
            crate::subresources::node_proxy(state, res, ns, name, info.subresource.as_deref().unwrap_or_default(), req)
                .await
        }
        (Method::POST, Some(name), None) if res.kind == "Pod" && name.is_empty() => {
            Err(ApiError::method_not_allowed("POST to a named pod is not allowed"))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            res.group_resource()
        ))),
    }
}

/// `PUT namespaces/<name>/finalize`: replaces `spec.finalizers` only (the namespace
/// controller's last step); a deleting namespace left with no finalizers is removed.
async fn finalize_namespace(
    state: &SharedState,
    res: &'static Resource,
    info: &RequestInfo,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let name = info.name.as_deref().unwrap_or_default();
    let format = rest::body_format(headers)?;
    let raw = codec::read_body(body).await?;
    let new = codec::decode_object(format, &raw)?;
    let opts = WriteOptions::from_request(q, headers)?;
    let finalizers = new.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
    let (obj, warnings) = rest::update(state, res, None, name, UpdateKind::Main, &opts, |cur| {
        let mut next = cur.clone();
        next["spec"]["finalizers"] = finalizers.clone();
        if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        Ok((next, None))
    })
    .await?;
    Ok(respond(StatusCode::OK, &obj, ResponseShape::Object, &warnings))
}

/// PATCH in every upstream flavour: JSON patch, merge patch, strategic merge patch and
/// server-side apply (which also creates a missing object).
#[allow(clippy::too_many_arguments)]
async fn patch(
    state: &SharedState,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    kind: UpdateKind,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
    shape: ResponseShape,
) -> ApiResult<Response> {
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let patch_type = PatchType::from_content_type(ct)?;
    let raw = codec::read_body(body).await?;
    let opts = WriteOptions::from_request(q, headers)?;
    let patch_value: Option<Value> = match patch_type {
        PatchType::Json => None,
        PatchType::Apply => Some(codec::decode_yaml(&raw)?),
        _ => Some(serde_json::from_slice(&raw).map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded as JSON: {e}"))
        })?),
    };
    if let Some(p) = &patch_value {
        if !p.is_object() {
            return Err(ApiError::bad_request(format!(
                "the patch must be a JSON object, got {}",
                codec::json_type_name(p)
            )));
        }
    }
    let def = api::schema::definition_for_gvk(res.group, res.version, res.kind);
    let api_version = res.api_version();
    let sub = if kind == UpdateKind::Status { Some("status") } else { None };
    let target = api::apply::Target { def, api_version: &api_version, kind: res.kind, subresource: sub };
    let mut opts = opts;
    let mut config = patch_value.clone().unwrap_or_else(|| json!({}));
    if patch_type == PatchType::Apply {
        if q.get("fieldManager").unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(
                "PATCH with apply-patch+yaml requires fieldManager to be set (e.g. ?fieldManager=kubectl)",
            ));
        }
        if object::name(&config).is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                object::name(&config).unwrap_or_default()
            )));
        }
        // Upstream decodes the applied configuration into its type first: unknown fields are
        // reported (Strict) or dropped (Warn, Ignore) before apply sees them.
        let mut warnings = Vec::new();
        if let Some(d) = def {
            let unknown = api::schema::unknown_fields(d, &config);
            if !unknown.is_empty() {
                let problems: Vec<String> = unknown.iter().map(|p| format!("unknown field \"{p}\"")).collect();
                if opts.field_validation == crate::request::FieldValidation::Strict {
                    return Err(ApiError::bad_request(format!("strict decoding error: {}", problems.join(", "))));
                }
                if opts.field_validation == crate::request::FieldValidation::Warn {
                    warnings = problems;
                }
                api::schema::prune_unknown_fields(d, &mut config);
            }
        }
        opts.applied = true;
        // Server-side apply of a missing object creates it.
        if kind == UpdateKind::Main && state.store.get(&res.key(ns, name)).await?.is_none() {
            let mut obj = api::apply::apply(None, &config, &opts.manager, opts.force, &target, &object::now_rfc3339())
                .map_err(apply_error)?;
            object::meta_mut(&mut obj).insert("name".into(), json!(name));
            let (created, mut more) = rest::create(state, res, ns, obj, None, &opts).await?;
            warnings.append(&mut more);
            return Ok(respond(StatusCode::CREATED, &rest::object_response(res, created, shape, q), shape, &warnings));
        }
        let (obj, _) = rest::update(state, res, ns, name, kind, &opts, |cur| {
            let mut base = cur.clone();
            if let Some(m) = base.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let applied = api::apply::apply(Some(&base), &config, &opts.manager, opts.force, &target, &object::now_rfc3339())
                .map_err(apply_error)?;
            Ok((applied, None))
        })
        .await?;
        return Ok(respond(StatusCode::OK, &rest::object_response(res, obj, shape, q), shape, &warnings));
    }
    let (obj, warnings) = rest::update(state, res, ns, name, kind, &opts, |cur| {
        // A patch applies to the object as stored; its resourceVersion is not a precondition
        // unless the patch sets one.
        let mut base = cur.clone();
        if let Some(m) = base.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let mut patched = match (patch_type, &patch_value) {
            (PatchType::Json, _) => api::patch::json_patch(&base, &raw).map_err(patch_error)?,
            (PatchType::Merge, Some(p)) => api::patch::merge_patch(&base, p).map_err(patch_error)?,
            // Without a schema (no such kind upstream) this falls back to merge-patch semantics.
            (PatchType::Strategic, Some(p)) => {
                api::patch::strategic_merge_patch(&base, p, def).map_err(patch_error)?
            }
            _ => return Err(ApiError::bad_request("empty patch")),
        };
        if !patched.is_object() {
            return Err(ApiError::bad_request("the patch produced something that is not an object"));
        }
        // Keep a resourceVersion the patch did not set out of the precondition check.
        let patch_rv = patched.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(String::from);
        if patch_rv.is_none() {
            if let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
        }
        let raw_patched = serde_json::to_vec(&patched).unwrap_or_default();
        Ok((patched, Some((raw_patched, BodyFormat::Json))))
    })
    .await?;
    Ok(respond(StatusCode::OK, &rest::object_response(res, obj, shape, q), shape, &warnings))
}

/// A server-side apply failure as upstream's Status (409 conflicts with their causes, 400/500
/// for configurations that cannot be applied).
fn apply_error(e: api::apply::ApplyError) -> ApiError {
    let status = e.to_status();
    let code = e.http_status();
    let mut err = ApiError::new(
        code,
        match code {
            409 => "Conflict",
            400 => "BadRequest",
            422 => "Invalid",
            _ => "InternalError",
        },
        status.get("message").and_then(Value::as_str).unwrap_or_default().to_string(),
    );
    if let Some(causes) = status.pointer("/details/causes").and_then(Value::as_array) {
        err = err.with_details(crate::error::Details { causes: causes.clone(), ..Default::default() });
    }
    err
}

/// A patch that cannot be applied, with upstream's status for the failure (400 malformed,
/// 422 not applicable, 500 for a strategic patch upstream cannot handle either).
fn patch_error(e: api::patch::PatchError) -> ApiError {
    let code = e.http_status();
    let reason = match code {
        400 => "BadRequest",
        422 => "Invalid",
        _ => "InternalError",
    };
    ApiError::new(code, reason, format!("the patch could not be applied: {e}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> ApiResult<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
            )),
        }
    }
}

/// Serializes a JSON answer; Tables get their own content type so kubectl recognises them.
pub fn respond(code: StatusCode, value: &Value, shape: ResponseShape, warnings: &[String]) -> Response {
    let ct = match shape {
        ResponseShape::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
        _ => "application/json",
    };
    let mut resp = codec::json_bytes_response(code, serde_json::to_vec(value).unwrap_or_default(), ct);
    rest::warning_headers(resp.headers_mut(), warnings);
    resp
}
