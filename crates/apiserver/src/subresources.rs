//! Subresources with their own shape: `scale`, `pods/binding`, `pods/eviction`, and the node
//! proxies (`log`, `exec`, `attach`, `portforward`).

use api::catalogue::{self, Resource};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::codec::{self, ResponseShape};
use crate::error::{ApiError, ApiResult, Details};
use crate::handlers::{PatchType, respond};
use crate::request::Query;
use crate::rest::{self, DeleteOptions, SharedState, UpdateKind, WriteOptions};
use crate::object;

/// The `autoscaling/v1 Scale` view of an object with `spec.replicas`.
fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| {
            // ReplicationController selectors are plain maps; the others are LabelSelectors.
            if s.get("matchLabels").is_some() || s.get("matchExpressions").is_some() {
                api::selectors::from_label_selector_json(s).map(|l| l.to_string()).unwrap_or_default()
            } else {
                s.as_object()
                    .map(|m| {
                        let mut pairs: Vec<String> =
                            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
                        pairs.sort();
                        pairs.join(",")
                    })
                    .unwrap_or_default()
            }
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

#[allow(clippy::too_many_arguments)]
pub async fn scale(
    state: &SharedState,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    method: &Method,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    match *method {
        Method::GET => {
            let (obj, _) = rest::get_object(state, res, ns, name).await?;
            Ok(respond(StatusCode::OK, &scale_of(&obj), ResponseShape::Object, &[]))
        }
        Method::PUT | Method::PATCH => {
            let raw = codec::read_body(body).await?;
            let opts = WriteOptions {
                field_validation: crate::request::FieldValidation::Ignore,
                subresource: Some("scale"),
                ..WriteOptions::from_request(q, headers)?
            };
            let patch_type = if *method == Method::PATCH {
                let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
                Some(PatchType::from_content_type(ct)?)
            } else {
                None
            };
            let body_value: Option<Value> = match patch_type {
                Some(PatchType::Json) => None,
                Some(PatchType::Apply) => Some(codec::decode_yaml(&raw)?),
                _ => Some(serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded as JSON: {e}")))?),
            };
            let scale_def = api::schema::definition_for_gvk("autoscaling", "v1", "Scale");
            let (obj, _) = rest::update(state, res, ns, name, UpdateKind::Main, &opts, |cur| {
                let current_scale = scale_of(cur);
                let new_scale = match (patch_type, &body_value) {
                    (None, Some(b)) => b.clone(),
                    (Some(PatchType::Json), _) => api::patch::json_patch(&current_scale, &raw).map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
                    (Some(PatchType::Merge), Some(p)) => api::patch::merge_patch(&current_scale, p).map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
                    (Some(_), Some(p)) => api::patch::strategic_merge_patch(&current_scale, p, scale_def)
                        .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
                    _ => return Err(ApiError::bad_request("empty request body")),
                };
                let replicas = match new_scale.pointer("/spec/replicas") {
                    None | Some(Value::Null) => 0,
                    Some(v) => v.as_i64().filter(|r| *r >= 0 && *r <= i32::MAX as i64).ok_or_else(|| {
                        ApiError::new(422, "Invalid", format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {v}: must be greater than or equal to 0"))
                    })?,
                };
                let mut next = cur.clone();
                next["spec"]["replicas"] = json!(replicas);
                // A resourceVersion in a PUT Scale is a precondition on the object.
                match new_scale.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|_| patch_type.is_none()) {
                    Some(rv) => {
                        object::set_resource_version(&mut next, rv.parse().unwrap_or(-1));
                    }
                    None => {
                        if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                            m.remove("resourceVersion");
                        }
                    }
                }
                Ok((next, None))
            })
            .await?;
            Ok(respond(StatusCode::OK, &scale_of(&obj), ResponseShape::Object, &[]))
        }
        _ => Err(ApiError::method_not_allowed("the server does not allow this method on the scale subresource")),
    }
}

/// `POST pods/<name>/binding`: sets `spec.nodeName` once (upstream's `BindingREST`).
pub async fn binding(state: &SharedState, res: &'static Resource, ns: Option<&str>, name: &str, q: &Query, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    let format = rest::body_format(headers)?;
    let raw = codec::read_body(body).await?;
    let binding = codec::decode_object(format, &raw)?;
    bind(state, res, ns, name, &binding, q, headers).await
}

/// `POST namespaces/<ns>/bindings`: the older form, the pod named by the Binding's own name.
pub async fn bindings_collection(state: &SharedState, ns: Option<&str>, q: &Query, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    let pods = catalogue::find("", "v1", "pods").ok_or_else(|| ApiError::internal("no pods resource"))?;
    let format = rest::body_format(headers)?;
    let raw = codec::read_body(body).await?;
    let binding = codec::decode_object(format, &raw)?;
    let name = object::name(&binding)
        .ok_or_else(|| ApiError::new(422, "Invalid", "Binding \"\" is invalid: metadata.name: Required value: name or generateName is required"))?
        .to_string();
    bind(state, pods, ns, &name, &binding, q, headers).await
}

async fn bind(state: &SharedState, res: &'static Resource, ns: Option<&str>, name: &str, binding: &Value, q: &Query, headers: &HeaderMap) -> ApiResult<Response> {
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::new(422, "Invalid", format!("Binding \"{name}\" is invalid: target.name: Required value")))?
        .to_string();
    let opts = WriteOptions { field_validation: crate::request::FieldValidation::Ignore, ..WriteOptions::from_request(q, headers)? };
    let annotations = binding.pointer("/metadata/annotations").and_then(Value::as_object).cloned();
    // One write, like upstream's setPodNodeAndMetadata: the node, the Binding's annotations and
    // the PodScheduled condition land together, so watchers see a single MODIFIED event.
    rest::update(state, res, ns, name, UpdateKind::Binding, &opts, |cur| {
        if object::deletion_timestamp(cur).is_some() {
            return Err(ApiError::conflict("", "pods", name, "pod is being deleted, cannot be assigned to a host"));
        }
        if let Some(existing) = cur.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict("", "pods", name, &format!("pod {name} is already assigned to node \"{existing}\"")));
        }
        let mut next = cur.clone();
        next["spec"]["nodeName"] = json!(node);
        if let Some(extra) = &annotations {
            let meta = object::meta_mut(&mut next);
            let target = meta.entry("annotations").or_insert_with(|| json!({}));
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(target) = target.as_object_mut() {
                for (k, v) in extra {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        set_pod_scheduled(&mut next);
        if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        Ok((next, None))
    })
    .await?;
    Ok(respond(StatusCode::CREATED, &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}), ResponseShape::Object, &[]))
}

/// Upstream's `UpdatePodCondition` for PodScheduled=True: the transition time moves only when
/// the status changes; a pod marked Unschedulable before keeps its other conditions.
fn set_pod_scheduled(pod: &mut Value) {
    let now = object::now_rfc3339();
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let status = &mut pod["status"];
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status["conditions"].as_array_mut() else { return };
    let fresh = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    match conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled")) {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {}
        Some(c) => *c = fresh,
        None => conditions.push(fresh),
    }
}

/// `POST pods/<name>/eviction`: deletes the pod unless its PodDisruptionBudget forbids it
/// (upstream `EvictionREST`). The budget is consumed first — `status.disruptionsAllowed`
/// decremented and the pod recorded in `status.disruptedPods`, with a compare-and-swap on the
/// budget — so concurrent evictions (a `kubectl drain` of many pods) can never overdraw it.
pub async fn eviction(state: &SharedState, res: &'static Resource, ns: Option<&str>, name: &str, headers: &HeaderMap, body: Body) -> ApiResult<Response> {
    let format = rest::body_format(headers)?;
    let raw = codec::read_body(body).await?;
    let eviction = codec::decode_object(format, &raw)?;
    let (pod, _) = rest::get_object(state, res, ns, name).await?;
    let mut opts = DeleteOptions::default();
    if let Some(d) = eviction.get("deleteOptions") {
        let q = Query::default();
        opts = DeleteOptions::parse(&q, serde_json::to_vec(d).unwrap_or_default().as_slice())?;
    }
    // Terminal and already-deleting pods disrupt nothing: no budget to consult.
    let terminal = matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null());
    if !terminal && !deleting {
        if let Some(pdb_res) = catalogue::find("policy", "v1", "poddisruptionbudgets") {
            let (pdbs, _, _) = rest::list(state, pdb_res, ns, &Query::default()).await?;
            let labels = object::labels(&pod);
            let matching: Vec<Value> = pdbs
                .into_iter()
                .filter(|b| {
                    b.pointer("/spec/selector")
                        .and_then(|sel| api::selectors::from_label_selector_json(sel).ok())
                        // policy/v1: an empty selector selects every pod of the namespace.
                        .is_some_and(|sel| sel.matches(&labels))
                })
                .collect();
            if matching.len() > 1 {
                return Err(ApiError::new(
                    500,
                    "InternalError",
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some(budget) = matching.first() {
                if unhealthy_pod_may_go(&pod, budget) {
                    // Nothing to take from the budget.
                } else if opts.dry_run {
                    check_budget(budget)?;
                } else {
                    consume_budget(state, pdb_res, ns, budget, name, headers).await?;
                }
            }
        }
    }
    rest::delete(state, res, ns, name, &opts).await?;
    Ok(respond(StatusCode::CREATED, &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}), ResponseShape::Object, &[]))
}

/// A pod that is not Ready may go without consuming the budget while the budget is met, or
/// always with `unhealthyPodEvictionPolicy: AlwaysAllow` (upstream's rules for both policies).
fn unhealthy_pod_may_go(pod: &Value, budget: &Value) -> bool {
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    if ready {
        return false;
    }
    match budget.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) {
        Some("AlwaysAllow") => true,
        _ => {
            let current = budget.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0);
            let desired = budget.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0);
            budget_processed(budget) && current >= desired
        }
    }
}

fn budget_processed(budget: &Value) -> bool {
    let generation = budget.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
    let observed = budget.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
    observed >= generation
}

/// 429 unless the budget allows one more disruption now.
fn check_budget(budget: &Value) -> ApiResult<()> {
    let budget_name = object::name(budget).unwrap_or_default();
    let refuse = |cause: String| {
        ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
            .with_details(Details {
                causes: vec![json!({"reason": "DisruptionBudget", "message": cause})],
                ..Default::default()
            })
    };
    if !budget_processed(budget) {
        return Err(refuse(format!("The disruption budget {budget_name} is still being processed by the server.")));
    }
    let allowed = budget.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
    if allowed <= 0 {
        return Err(refuse(format!(
            "The disruption budget {budget_name} needs {} healthy pods and has {} currently",
            budget.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0),
            budget.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0)
        )));
    }
    Ok(())
}

/// Takes one disruption from the budget and records the pod, atomically.
async fn consume_budget(state: &SharedState, pdb_res: &'static Resource, ns: Option<&str>, budget: &Value, pod: &str, headers: &HeaderMap) -> ApiResult<()> {
    let budget_name = object::name(budget).unwrap_or_default();
    let opts = WriteOptions {
        subresource: Some("status"),
        ..WriteOptions::from_request(&Query::default(), headers)?
    };
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    rest::update(state, pdb_res, ns, &budget_name, UpdateKind::Status, &opts, |current| {
        check_budget(current)?;
        let mut next = current.clone();
        let allowed = current.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
        next["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !next["status"]["disruptedPods"].is_object() {
            next["status"]["disruptedPods"] = json!({});
        }
        next["status"]["disruptedPods"][pod] = json!(now);
        Ok((next, None))
    })
    .await?;
    Ok(())
}

/// `log`, `exec`, `attach`, `portforward` are served by the pod's node: forwarded to its
/// kubelet (`node_proxy`).
pub async fn node_proxy(
    state: &SharedState,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    req: http::Request<Body>,
) -> ApiResult<Response> {
    let (pod, _) = rest::get_object(state, res, ns, name).await?;
    let query = req.uri().query().map(String::from);
    crate::node_proxy::proxy(state, &pod, sub, query.as_deref(), req).await
}
