//! Discovery: `/api`, `/apis` (aggregated v2 and legacy), `/api/v1`, `/apis/<g>[/<v>]`, and
//! `/version`.
//!
//! kubectl asks for the aggregated form first and only recognises it with the exact content type
//! `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`
//! (../shared/notes/kubectl-wire.md §0.5).

use api::catalogue::{self, Resource};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::codec;
use crate::error::ApiError;
use crate::rest::SharedState;

const AGGREGATED_CT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The Kubernetes version we serve. The gcloud kubectl dispatcher picks its kubectl by `minor`.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";
pub const KUBE_GIT_VERSION: &str = "v1.33.0";

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList") && a.contains("g=apidiscovery.k8s.io"))
}

fn aggregated_resource(r: &Resource) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        v["subresources"] = r
            .subresources
            .iter()
            .map(|s| {
                let (g, ver, k) = s.response_kind(r);
                json!({"subresource": s.name(), "responseKind": {"group": g, "version": ver, "kind": k}, "verbs": s.verbs()})
            })
            .collect();
    }
    v
}

fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = catalogue::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| {
            json!({
                "version": v,
                "freshness": "Current",
                "resources": catalogue::resources_of(g, v).map(aggregated_resource).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

fn aggregated_list(groups: Vec<&str>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": groups.into_iter().map(aggregated_group).collect::<Vec<_>>(),
    });
    let mut resp = codec::json_response(StatusCode::OK, &body);
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(AGGREGATED_CT));
    resp.headers_mut().insert(header::VARY, http::HeaderValue::from_static("Accept"));
    resp
}

fn non_core_groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in catalogue::group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

pub async fn api_root(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated_list(vec![""]);
    }
    codec::json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.advertise_address}],
        }),
    )
}

fn api_group(group: &str) -> Value {
    let versions: Vec<Value> = catalogue::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

pub async fn apis_root(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated_list(non_core_groups());
    }
    codec::json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": non_core_groups().into_iter().map(api_group).collect::<Vec<_>>(),
        }),
    )
}

pub async fn apis_group(Path(group): Path<String>) -> Response {
    if !non_core_groups().contains(&group.as_str()) {
        return ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response();
    }
    let mut g = api_group(&group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    codec::json_response(StatusCode::OK, &g)
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<&Resource> = catalogue::resources_of(group, version).collect();
    if resources.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for r in resources {
        let mut v = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        out.push(v);
        for s in r.subresources {
            let (g, ver, k) = s.response_kind(r);
            let mut sv = json!({
                "name": format!("{}/{}", r.plural, s.name()),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": s.verbs(),
            });
            if g != r.group || ver != r.version {
                sv["group"] = json!(g);
                sv["version"] = json!(ver);
            }
            out.push(sv);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}))
}

pub async fn core_v1() -> Response {
    match resource_list("", "v1") {
        Some(v) => codec::json_response(StatusCode::OK, &v),
        None => ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response(),
    }
}

pub async fn apis_group_version(Path((group, version)): Path<(String, String)>) -> Response {
    match resource_list(&group, &version) {
        Some(v) => codec::json_response(StatusCode::OK, &v),
        None => ApiError::new(404, "NotFound", "the server could not find the requested resource").into_response(),
    }
}

pub async fn version() -> Response {
    codec::json_response(
        StatusCode::OK,
        &json!({
            "major": KUBE_MAJOR,
            "minor": KUBE_MINOR,
            "emulationMajor": KUBE_MAJOR,
            "emulationMinor": KUBE_MINOR,
            "gitVersion": KUBE_GIT_VERSION,
            "gitCommit": format!("skiff-{}", env!("CARGO_PKG_VERSION")),
            "gitTreeState": "clean",
            "buildDate": "2026-11-23T00:00:00Z",
            "goVersion": "n/a (skiff is written in Rust)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
        }),
    )
}
