//! Raw HTTP against a real `skiff server`: bad input gets a 4xx `Status`, discovery and health
//! endpoints, watch semantics, restarts and crashes lose no acknowledged write.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_e2e::{Server, http_exchange, http_get, http_request};

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn post_json(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    send(s, "POST", path, &bytes, "application/json")
}

fn send(s: &Server, method: &str, path: &str, body: &[u8], ct: &str) -> (u16, Value) {
    let (code, text) = http_request(method, &format!("{}{path}", s.url), Some(body), &[("Content-Type", ct)]).expect("request");
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_status(code: u16, body: &Value, want_code: u16, reason: &str, needle: &str) {
    assert_eq!(code, want_code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}

#[test]
fn bad_input_gets_a_4xx_status_naming_the_problem() {
    let s = Server::start();
    let (c, b) = send(&s, "POST", CM, b"{\"apiVersion\":\"v1\",", "application/json");
    assert_status(c, &b, 400, "BadRequest", "could not be decoded as JSON");
    let (c, b) = send(&s, "POST", CM, b"kind: [", "application/yaml");
    assert_status(c, &b, 400, "BadRequest", "YAML");
    let (c, b) = send(&s, "POST", CM, b"k8s\x00\x0a\x05garbage", "application/vnd.kubernetes.protobuf");
    assert_status(c, &b, 400, "BadRequest", "protobuf");
    let (c, b) = send(&s, "POST", CM, b"{}", "text/html");
    assert_status(c, &b, 415, "UnsupportedMediaType", "text/html");

    // Wrong kind for the URL, wrong namespace in the body.
    let (c, b) = post_json(&s, CM, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}));
    assert_status(c, &b, 400, "BadRequest", "does not match the expected kind (ConfigMap)");
    let (c, b) = post_json(&s, CM, &json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}));
    assert_status(c, &b, 400, "BadRequest", "API version");
    let (c, b) = post_json(&s, CM, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}}));
    assert_status(c, &b, 400, "BadRequest", "does not match the namespace");

    // Unknown and duplicate fields under Strict; ignored (with a warning) otherwise.
    let strict = format!("{CM}?fieldValidation=Strict");
    let (c, b) = post_json(&s, &strict, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dataz": {}}));
    assert_status(c, &b, 400, "BadRequest", "unknown field \"dataz\"");
    let dup = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","name":"y"}}"#;
    let (c, b) = send(&s, "POST", &strict, dup, "application/json");
    assert_status(c, &b, 400, "BadRequest", "duplicate field \"metadata.name\"");

    // Invalid names (RFC 1123) are 422 Invalid with the field named.
    let (c, b) = post_json(&s, CM, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_Valid"}}));
    assert_status(c, &b, 422, "Invalid", "metadata.name");
    assert_eq!(b["details"]["causes"][0]["field"], "metadata.name", "{b}");
    let (c, b) = post_json(&s, CM, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}));
    assert_status(c, &b, 422, "Invalid", "name");

    // A body over the 3 MiB limit is a 413.
    let huge = format!("{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"a\":\"{}\"}}}}", "x".repeat(4 * 1024 * 1024));
    let (c, b) = send(&s, "POST", CM, huge.as_bytes(), "application/json");
    assert_status(c, &b, 413, "RequestEntityTooLarge", "limit is");

    // Missing namespace, unknown resource, conflicts.
    let (c, b) = post_json(&s, "/api/v1/namespaces/nowhere/configmaps", &json!({"metadata": {"name": "x"}}));
    assert_status(c, &b, 404, "NotFound", "namespaces \"nowhere\" not found");
    let (c, b) = send(&s, "GET", "/api/v1/namespaces/default/widgets", b"", "application/json");
    assert_status(c, &b, 404, "NotFound", "could not find the requested resource");
    let (c, _) = post_json(&s, CM, &json!({"metadata": {"name": "dup"}}));
    assert_eq!(c, 201);
    let (c, b) = post_json(&s, CM, &json!({"metadata": {"name": "dup"}}));
    assert_status(c, &b, 409, "AlreadyExists", "configmaps \"dup\" already exists");
    let (c, b) = send(&s, "PUT", &format!("{CM}/dup"), &serde_json::to_vec(&json!({"metadata": {"name": "dup", "resourceVersion": "1"}})).unwrap_or_default(), "application/json");
    assert_status(c, &b, 409, "Conflict", "the object has been modified");
    let (c, b) = send(&s, "PATCH", &format!("{CM}/dup"), b"{}", "application/xml");
    assert_status(c, &b, 415, "UnsupportedMediaType", "application/xml");
    let (c, b) = send(&s, "GET", &format!("{CM}?labelSelector=a%20in%20(b"), b"", "application/json");
    assert_eq!(c, 400, "{b}");
    let (c, b) = send(&s, "GET", &format!("{CM}?fieldSelector=spec.nope%3Dx"), b"", "application/json");
    assert_status(c, &b, 400, "BadRequest", "is not a known field selector");
    let (c, b) = send(&s, "GET", &format!("/api/v1/pods?fieldSelector=spec.nope%3Dx"), b"", "application/json");
    assert_status(c, &b, 400, "BadRequest", "field label not supported");
    assert!(s.log().lines().all(|l| !l.contains("panicked")), "server log has a panic:\n{}", s.log());
}

#[test]
fn discovery_openapi_health_and_metrics() {
    let s = Server::start();
    let (c, body) = http_request("GET", &format!("{}/apis", s.url), None, &[("Accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")]).expect("apis");
    assert_eq!(c, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["kind"], "APIGroupDiscoveryList");
    assert!(v["items"].as_array().is_some_and(|g| g.iter().any(|g| g["metadata"]["name"] == "apps")));
    let (_, body) = http_get(&format!("{}/version", s.url)).expect("version");
    assert!(body.contains("\"minor\":\"33\""), "{body}");
    for p in ["/healthz", "/livez", "/readyz"] {
        let (c, body) = http_get(&format!("{}{p}", s.url)).expect("health");
        assert_eq!((c, body.as_str()), (200, "ok"), "{p}");
    }
    let (c, body) = http_get(&format!("{}/openapi/v3", s.url)).expect("openapi v3");
    assert_eq!(c, 200);
    let idx: Value = serde_json::from_str(&body).expect("json");
    let url = idx["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("apps/v1 doc").to_string();
    let (c, body) = http_get(&format!("{}{url}", s.url)).expect("apps doc");
    assert_eq!(c, 200);
    assert!(body.contains("io.k8s.api.apps.v1.Deployment"), "apps/v1 doc lacks Deployment");
    let (c, body) = http_get(&format!("{}/openapi/v2", s.url)).expect("openapi v2");
    assert_eq!(c, 200);
    assert!(body.contains("\"swagger\""));
    // The controllers list ConfigMaps too (the garbage collector watches every kind), so count
    // ours as a difference.
    let lists = || -> u64 {
        let (_, metrics) = http_get(&format!("{}/metrics", s.url)).expect("metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("apiserver_request_total{verb=\"LIST\",resource=\"configmaps\",code=\"200\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = lists();
    http_get(&format!("{}{CM}", s.url)).expect("list");
    let after = lists();
    assert!(after > before, "LIST configmaps counted {before} → {after}");
}

#[test]
fn watch_is_ordered_resumable_and_filtered() {
    let s = Server::start();
    let (_, first) = post_json(&s, CM, &json!({"metadata": {"name": "w0", "labels": {"k": "v"}}}));
    let rv0: i64 = first["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).expect("rv");
    for i in 1..20 {
        post_json(&s, CM, &json!({"metadata": {"name": format!("w{i}"), "labels": {"k": if i % 2 == 0 { "v" } else { "other" }}}}));
    }
    // Resume from rv0: exactly the 19 later creations, in order, no duplicates.
    let (c, body) = http_get(&format!("{}{CM}?watch=true&resourceVersion={rv0}&timeoutSeconds=1", s.url)).expect("watch");
    assert_eq!(c, 200);
    let events: Vec<Value> = body.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let names: Vec<String> = events.iter().map(|e| e["object"]["metadata"]["name"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(names, (1..20).map(|i| format!("w{i}")).collect::<Vec<_>>());
    let rvs: Vec<i64> = events.iter().filter_map(|e| e["object"]["metadata"]["resourceVersion"].as_str()?.parse().ok()).collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
    assert!(events.iter().all(|e| e["type"] == "ADDED"));

    // A label-filtered watch from the start sees only matching objects.
    let (_, body) = http_get(&format!("{}{CM}?watch=1&labelSelector=k%3Dv&timeoutSeconds=1", s.url)).expect("watch");
    let n = body.lines().filter(|l| l.contains("\"ADDED\"")).count();
    assert_eq!(n, 10, "{body}");

    // A watch from a revision older than history is 410 Gone after compaction; here, from 1 on a
    // fresh server is still inside history, so it replays.
    let (c, _) = http_get(&format!("{}{CM}?watch=1&resourceVersion=1&timeoutSeconds=1", s.url)).expect("watch");
    assert_eq!(c, 200);

    // Paging: limit/continue walks every item exactly once.
    let mut seen = Vec::new();
    let mut cont = String::new();
    loop {
        let (_, body) = http_get(&format!("{}{CM}?limit=7&continue={cont}", s.url)).expect("list");
        let v: Value = serde_json::from_str(&body).expect("json");
        seen.extend(v["items"].as_array().cloned().unwrap_or_default().iter().map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_string()));
        match v["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20);
}

#[test]
fn sigterm_stops_cleanly_and_state_survives_restart() {
    let mut s = Server::start();
    let (c, _) = post_json(&s, CM, &json!({"metadata": {"name": "durable"}, "data": {"k": "v"}}));
    assert_eq!(c, 201);
    let status = s.terminate().expect("was running");
    assert!(status.success(), "exit status {status}; log:\n{}", s.log());
    assert!(s.log().contains("shutting down"), "{}", s.log());
    s.spawn();
    let (c, body) = http_get(&format!("{}{CM}/durable", s.url)).expect("get");
    assert_eq!(c, 200);
    assert!(body.contains("\"k\":\"v\""));
}

#[test]
fn sigkill_under_concurrent_writes_loses_no_acknowledged_write() {
    let mut s = Server::start();
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..6 {
        let url = s.url.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let url = url.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let name = format!("r{round}-w{w}-{i}");
                        let body = serde_json::to_vec(&json!({"metadata": {"name": name}})).unwrap_or_default();
                        match http_request("POST", &format!("{url}{CM}"), Some(&body), &[("Content-Type", "application/json")]) {
                            Ok((201, _)) => acked.push(name),
                            _ => break,
                        }
                        i += 1;
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 97 * round as u64));
        s.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in handles {
            acknowledged.extend(h.join().unwrap_or_default());
        }
        s.spawn();
        let (c, body) = http_get(&format!("{}{CM}", s.url)).expect("list");
        assert_eq!(c, 200);
        let v: Value = serde_json::from_str(&body).expect("json");
        let present: std::collections::HashSet<String> = v["items"].as_array().cloned().unwrap_or_default().iter().map(|i| i["metadata"]["name"].as_str().unwrap_or_default().to_string()).collect();
        let lost: Vec<&String> = acknowledged.iter().filter(|n| !present.contains(*n)).collect();
        assert!(lost.is_empty(), "round {round}: {} acknowledged writes lost, e.g. {:?}", lost.len(), lost.iter().take(5).collect::<Vec<_>>());
    }
    assert!(acknowledged.len() > 50, "too few writes to mean anything: {}", acknowledged.len());
}

#[test]
fn watch_and_exact_list_from_compacted_history_get_410() {
    let s = Server::start_with(&["--history-retention", "10s"]);
    let (_, first) = post_json(&s, CM, &json!({"metadata": {"name": "old"}}));
    let rv: i64 = first["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).expect("rv");
    post_json(&s, CM, &json!({"metadata": {"name": "old2"}}));
    // Retention 10 s, compactor tick 1 s, watch-cache trim every 5 s.
    std::thread::sleep(Duration::from_secs(17));
    post_json(&s, CM, &json!({"metadata": {"name": "new"}}));
    let (c, body) = http_get(&format!("{}{CM}?watch=1&resourceVersion={}&timeoutSeconds=1", s.url, rv - 1)).expect("watch");
    let v: Value = serde_json::from_str(body.lines().next().unwrap_or_default()).unwrap_or(Value::Null);
    let expired = c == 410 || (v["type"] == "ERROR" && v["object"]["code"] == 410);
    assert!(expired, "watch from a compacted revision: {c} {body}");
    let (c, body) = http_get(&format!("{}{CM}?resourceVersion={rv}&resourceVersionMatch=Exact", s.url)).expect("list");
    assert_eq!(c, 410, "{body}");
    assert!(body.contains("\"reason\":\"Expired\""), "{body}");
    // The current state is still there.
    let (c, body) = http_get(&format!("{}{CM}", s.url)).expect("list");
    assert_eq!(c, 200);
    assert!(body.contains("\"old\"") && body.contains("\"new\""));
}

#[test]
fn unknown_fields_are_dropped_unless_strict() {
    let s = Server::start();
    let (c, b) = post_json(&s, CM, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "loose", "bogus": 1}, "data": {"a": "1"}, "extra": true}));
    assert_eq!(c, 201, "{b}");
    assert!(b.get("extra").is_none() && b["metadata"].get("bogus").is_none(), "{b}");
    assert_eq!(b["data"]["a"], "1");
    let (c, head, text) = http_exchange("POST", &format!("{}{CM}?fieldValidation=Warn", s.url), Some(br#"{"metadata":{"name":"warned"},"extra":1}"#), &[("Content-Type", "application/json")]).expect("post");
    assert_eq!(c, 201, "{text}");
    assert!(head.to_ascii_lowercase().contains("warning: 299 - \"unknown field \\\"extra\\\"\""), "{head}");
}

#[test]
fn binding_assigns_a_node_once_and_scale_and_eviction_work() {
    let s = Server::start();
    let pods = "/api/v1/namespaces/default/pods";
    for name in ["p1", "p2"] {
        let (c, b) = post_json(&s, pods, &json!({"metadata": {"name": name, "labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}));
        assert_eq!(c, 201, "{b}");
    }
    let (c, b) = post_json(&s, &format!("{pods}/p1/binding"), &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1", "annotations": {"example.com/placed-by": "test"}}, "target": {"kind": "Node", "name": "n1"}}));
    assert_eq!(c, 201, "{b}");
    // Like upstream's BindingREST: node, the Binding's annotations and PodScheduled in one
    // write, and no managed-fields entry for it.
    let (_, body) = http_get(&format!("{}{pods}/p1", s.url)).expect("get");
    let p1: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(p1["spec"]["nodeName"], "n1");
    assert_eq!(p1["metadata"]["annotations"]["example.com/placed-by"], "test");
    assert_eq!(p1["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(p1["status"]["conditions"][0]["status"], "True");
    let managers = p1["metadata"]["managedFields"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(managers, 1, "only the creator manages fields: {}", p1["metadata"]["managedFields"]);
    let (c, b) = post_json(&s, &format!("{pods}/p1/binding"), &json!({"metadata": {"name": "p1"}, "target": {"name": "n2"}}));
    assert_status(c, &b, 409, "Conflict", "already assigned to node \"n1\"");
    let (c, b) = post_json(&s, "/api/v1/namespaces/default/bindings", &json!({"metadata": {"name": "p2"}, "target": {"name": "n2"}}));
    assert_eq!(c, 201, "{b}");
    let (_, body) = http_get(&format!("{}{pods}/p2", s.url)).expect("get");
    let p2: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(p2["spec"]["nodeName"], "n2");
    assert_eq!(p2["status"]["conditions"][0]["type"], "PodScheduled");

    // Eviction is refused while a PodDisruptionBudget allows no disruption.
    let (c, _) = post_json(&s, "/apis/policy/v1/namespaces/default/poddisruptionbudgets", &json!({"metadata": {"name": "pdb"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "x"}}}}));
    assert_eq!(c, 201);
    let (c, b) = post_json(&s, &format!("{pods}/p2/eviction"), &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p2"}}));
    assert_status(c, &b, 429, "TooManyRequests", "disruption budget");
    let (c, _) = send(&s, "DELETE", "/apis/policy/v1/namespaces/default/poddisruptionbudgets/pdb", b"", "application/json");
    assert_eq!(c, 200);
    let (c, b) = post_json(&s, &format!("{pods}/p2/eviction"), &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p2"}, "deleteOptions": {"gracePeriodSeconds": 0}}));
    assert_eq!(c, 201, "{b}");
    let (c, _) = http_get(&format!("{}{pods}/p2", s.url)).expect("get");
    assert_eq!(c, 404, "evicted with grace 0 is gone");
}
