use serde_json::{Value, json};

use super::*;
use crate::schema::definition_for_gvk;

const T0: &str = "2025-01-01T00:00:00Z";
const T1: &str = "2025-01-01T00:01:00Z";
const T2: &str = "2025-01-01T00:02:00Z";

fn deployments() -> Target<'static> {
    Target {
        def: definition_for_gvk("apps", "v1", "Deployment"),
        api_version: "apps/v1",
        kind: "Deployment",
        subresource: None,
    }
}

fn deployment(replicas: i64, labels: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}
        }
    })
}

fn nginx() -> Value {
    json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}])
}

fn entries(object: &Value) -> &Vec<Value> {
    object["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
}

fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    entries(object)
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn fields<'a>(object: &'a Value, manager: &str, operation: &str) -> &'a Value {
    &entry(object, manager, operation)
        .unwrap_or_else(|| panic!("no {operation} entry for {manager}"))["fieldsV1"]
}

fn apply_ok(live: Option<&Value>, config: &Value, manager: &str, now: &str) -> Value {
    apply(live, config, manager, false, &deployments(), now).expect("apply")
}

#[test]
fn create_via_apply_owns_the_configuration() {
    let config = deployment(2, json!({"app": "web"}), nginx());
    let created = apply_ok(None, &config, "kubectl", T0);
    let mut expected = config.clone();
    expected["metadata"]["managedFields"] = json!([{
        "manager": "kubectl",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": T0,
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}}}}}}}}
        }
    }]);
    assert_eq!(created, expected);
    // Key order is upstream's ManagedFieldsEntry field order.
    let keys: Vec<&String> = entries(&created)[0]
        .as_object()
        .expect("entry")
        .keys()
        .collect();
    assert_eq!(
        keys,
        [
            "manager",
            "operation",
            "apiVersion",
            "time",
            "fieldsType",
            "fieldsV1"
        ]
    );
}

#[test]
fn reapplying_without_a_field_removes_it() {
    let first = deployment(2, json!({"app": "web", "tier": "frontend"}), nginx());
    let live = apply_ok(None, &first, "kubectl", T0);
    let second = deployment(2, json!({"app": "web"}), nginx());
    let updated = apply_ok(Some(&live), &second, "kubectl", T1);
    assert_eq!(updated["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        fields(&updated, "kubectl", "Apply")["f:metadata"],
        json!({"f:labels": {"f:app": {}}})
    );
    assert_eq!(entries(&updated).len(), 1);
    assert_eq!(
        entry(&updated, "kubectl", "Apply").expect("entry")["time"],
        T1
    );
}

#[test]
fn a_field_two_appliers_own_stays_until_both_drop_it() {
    let config = deployment(2, json!({"app": "web", "shared": "yes"}), nginx());
    let live = apply_ok(None, &config, "alice", T0);
    // Bob applies the same value: no conflict, shared ownership.
    let bob = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"shared": "yes"}}});
    let live = apply_ok(Some(&live), &bob, "bob", T1);
    assert_eq!(
        fields(&live, "bob", "Apply"),
        &json!({"f:metadata": {"f:labels": {"f:shared": {}}}})
    );
    // Alice drops it: Bob still owns it, so it stays.
    let alice = deployment(2, json!({"app": "web"}), nginx());
    let live = apply_ok(Some(&live), &alice, "alice", T1);
    assert_eq!(live["metadata"]["labels"]["shared"], "yes");
    // Bob drops it too (he applies nothing else): now it goes, and so does his entry.
    let bob_empty =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    let live = apply_ok(Some(&live), &bob_empty, "bob", T2);
    assert!(live["metadata"]["labels"].get("shared").is_none());
    assert!(entry(&live, "bob", "Apply").is_none());
}

#[test]
fn conflicts_with_an_update_manager_and_force() {
    // Created by client-side apply (an Update).
    let mut live = deployment(2, json!({"app": "web"}), nginx());
    record_update(
        None,
        &mut live,
        "kubectl-client-side-apply",
        &deployments(),
        T0,
    );
    live["metadata"]["uid"] = json!("u1");

    let config = deployment(3, json!({"app": "web"}), nginx());
    let err =
        apply(Some(&live), &config, "other", false, &deployments(), T1).expect_err("conflict");
    assert_eq!(err.http_status(), 409);
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    let status = err.to_status();
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(status["code"], 409);
    assert_eq!(
        status["details"]["causes"],
        json!([{"type": "FieldManagerConflict",
                "message": "conflict with \"kubectl-client-side-apply\" using apps/v1",
                "field": ".spec.replicas"}])
    );

    let forced = apply(Some(&live), &config, "other", true, &deployments(), T1).expect("force");
    assert_eq!(forced["spec"]["replicas"], 3);
    assert!(
        fields(&forced, "other", "Apply")["f:spec"]
            .get("f:replicas")
            .is_some()
    );
    let csa = fields(&forced, "kubectl-client-side-apply", "Update");
    assert!(csa["f:spec"].get("f:replicas").is_none());
    assert!(csa["f:spec"].get("f:template").is_some());
    // Same values everywhere else: shared, not conflicting.
    assert!(
        fields(&forced, "other", "Apply")["f:spec"]
            .get("f:template")
            .is_some()
    );
}

#[test]
fn several_conflicts_are_grouped_by_manager() {
    let mut live = deployment(2, json!({"app": "web"}), nginx());
    record_update(
        None,
        &mut live,
        "kubectl-client-side-apply",
        &deployments(),
        T0,
    );
    let config = deployment(
        3,
        json!({"app": "web"}),
        json!([{"name": "nginx", "image": "nginx:1.28", "ports": [{"containerPort": 80}]}]),
    );
    let err =
        apply(Some(&live), &config, "other", false, &deployments(), T1).expect_err("conflicts");
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn associative_lists_merge_by_key_and_keep_other_managers_items() {
    let live = apply_ok(
        None,
        &deployment(1, json!({"app": "web"}), nginx()),
        "kubectl",
        T0,
    );
    // A sidecar injector applies only its container.
    let sidecar = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "proxy", "image": "envoy", "ports": [{"containerPort": 9901, "protocol": "TCP"}]}]}}}});
    let live = apply_ok(Some(&live), &sidecar, "injector", T1);
    let names: Vec<&str> = live["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["nginx", "proxy"]);
    assert_eq!(
        fields(&live, "injector", "Apply")["f:spec"]["f:template"]["f:spec"]["f:containers"],
        json!({"k:{\"name\":\"proxy\"}": {".": {}, "f:image": {}, "f:name": {},
            "f:ports": {"k:{\"containerPort\":9901,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}}}})
    );
    // kubectl re-applies its own config: the sidecar stays.
    let live = apply_ok(
        Some(&live),
        &deployment(1, json!({"app": "web"}), nginx()),
        "kubectl",
        T2,
    );
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // kubectl changes its image: nobody else owns it, no conflict.
    let newer = json!([{"name": "nginx", "image": "nginx:1.28", "ports": [{"containerPort": 80}]}]);
    let live = apply_ok(
        Some(&live),
        &deployment(1, json!({"app": "web"}), newer),
        "kubectl",
        T2,
    );
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
}

#[test]
fn dropping_a_list_item_removes_it() {
    let two = json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]);
    let live = apply_ok(None, &deployment(1, json!({}), two), "kubectl", T0);
    let one = json!([{"name": "b", "image": "b"}]);
    let live = apply_ok(Some(&live), &deployment(1, json!({}), one), "kubectl", T1);
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"],
        json!([{"name": "b", "image": "b"}])
    );
}

#[test]
fn record_update_on_create_follows_go_zero_values() {
    let mut created = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}}},
        "status": {}
    });
    record_update(None, &mut created, "kubectl-create", &deployments(), T0);
    assert_eq!(
        entries(&created),
        &vec![json!({
            "manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1", "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:replicas": {}, "f:selector": {},
                    "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}, "f:type": {}},
                    "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {}, "f:image": {}, "f:name": {}, "f:resources": {}}}}}
                }
            }
        })]
    );
}

#[test]
fn record_update_moves_ownership() {
    let mut live = deployment(1, json!({"app": "web"}), nginx());
    record_update(None, &mut live, "creator", &deployments(), T0);
    let mut next = live.clone();
    next["metadata"]["labels"]["app"] = json!("api");
    next["spec"]["replicas"] = json!(5);
    record_update(Some(&live), &mut next, "kubectl-edit", &deployments(), T1);
    assert_eq!(
        fields(&next, "kubectl-edit", "Update"),
        &json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}}})
    );
    let creator = fields(&next, "creator", "Update");
    assert!(creator["f:spec"].get("f:replicas").is_none());
    // The labels map itself stays the creator's (a member without members below: `{}`).
    assert_eq!(creator["f:metadata"], json!({"f:labels": {}}));
    // Oldest first among Update entries.
    assert_eq!(entries(&next)[0]["manager"], "creator");

    // A write that changes nothing leaves the entries (and times) alone.
    let mut same = next.clone();
    record_update(Some(&next), &mut same, "kubectl-edit", &deployments(), T2);
    assert_eq!(same, next);

    // Removing kubectl-edit's fields (a removal is owned by nobody) drops its entry.
    let mut after = next.clone();
    if let Some(meta) = after["metadata"].as_object_mut() {
        meta.remove("labels");
    }
    if let Some(spec) = after["spec"].as_object_mut() {
        spec.remove("replicas");
    }
    record_update(Some(&next), &mut after, "cleaner", &deployments(), T2);
    assert!(
        entry(&after, "kubectl-edit", "Update").is_none(),
        "{after:#}"
    );
    assert!(entry(&after, "cleaner", "Update").is_none());
    assert!(entry(&after, "creator", "Update").is_some());
}

#[test]
fn record_update_honours_client_managed_fields_and_reset() {
    let mut live = deployment(1, json!({"app": "web"}), nginx());
    record_update(None, &mut live, "creator", &deployments(), T0);

    let mut reset = live.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    record_update(Some(&live), &mut reset, "resetter", &deployments(), T1);
    assert!(reset["metadata"].get("managedFields").is_none());

    let mut replaced = live.clone();
    replaced["metadata"]["managedFields"] = json!([{"manager": "someone", "operation": "Update",
        "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    record_update(Some(&live), &mut replaced, "x", &deployments(), T1);
    assert_eq!(entries(&replaced).len(), 1);
    assert_eq!(entries(&replaced)[0]["manager"], "someone");

    // Invalid entries are ignored: the stored ones stay.
    let mut invalid = live.clone();
    invalid["metadata"]["managedFields"] = json!([{"manager": "bad", "operation": "Nope"}]);
    record_update(Some(&live), &mut invalid, "x", &deployments(), T1);
    assert_eq!(
        invalid["metadata"]["managedFields"],
        live["metadata"]["managedFields"]
    );

    // An empty manager name is upstream's "unknown".
    let mut unnamed = live.clone();
    unnamed["spec"]["replicas"] = json!(9);
    record_update(Some(&live), &mut unnamed, "", &deployments(), T1);
    assert!(entry(&unnamed, "unknown", "Update").is_some());
}

#[test]
fn status_writers_own_status_and_spec_writers_do_not() {
    let mut live = deployment(1, json!({"app": "web"}), nginx());
    live["status"] = json!({"replicas": 0});
    record_update(None, &mut live, "creator", &deployments(), T0);
    assert!(fields(&live, "creator", "Update").get("f:status").is_none());

    let status_target = Target {
        subresource: Some("status"),
        ..deployments()
    };
    let mut next = live.clone();
    next["status"]["replicas"] = json!(1);
    next["status"]["readyReplicas"] = json!(1);
    record_update(
        Some(&live),
        &mut next,
        "skiff-controller",
        &status_target,
        T1,
    );
    let status_entry = entry(&next, "skiff-controller", "Update").expect("entry");
    assert_eq!(status_entry["subresource"], "status");
    assert_eq!(
        status_entry["fieldsV1"],
        json!({"f:status": {"f:readyReplicas": {}, "f:replicas": {}}})
    );
}

#[test]
fn kubectl_takes_over_client_side_applied_fields() {
    let config = deployment(2, json!({"app": "web"}), nginx());
    let mut annotated = config.clone();
    let mut last_applied = String::new();
    managed::write_go_json(&config, &mut last_applied);
    annotated["metadata"]["annotations"] =
        json!({ LAST_APPLIED_ANNOTATION: format!("{last_applied}\n") });
    let mut live = annotated.clone();
    record_update(
        None,
        &mut live,
        "kubectl-client-side-apply",
        &deployments(),
        T0,
    );

    let mut changed = config.clone();
    changed["spec"]["replicas"] = json!(4);
    let applied = apply(Some(&live), &changed, "kubectl", false, &deployments(), T1)
        .expect("fields set by client-side apply are taken over");
    assert_eq!(applied["spec"]["replicas"], 4);
    let annotation = applied["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
        .as_str()
        .expect("annotation");
    assert!(annotation.contains("\"replicas\":4"));
    assert!(annotation.ends_with("}\n"));
    // Another manager name gets the conflict.
    assert!(apply(Some(&live), &changed, "helm", false, &deployments(), T1).is_err());
}

#[test]
fn a_noop_apply_keeps_the_object_and_time() {
    let config = deployment(2, json!({"app": "web"}), nginx());
    let live = apply_ok(None, &config, "kubectl", T0);
    let again = apply_ok(Some(&live), &config, "kubectl", T1);
    assert_eq!(again, live);
}

#[test]
fn invalid_configurations_are_rejected() {
    let target = deployments();
    let err = apply(None, &json!([1]), "m", false, &target, T0).expect_err("not an object");
    assert_eq!(err.http_status(), 400);

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"}});
    let err = apply(None, &pod, "m", false, &target, T0).expect_err("wrong kind");
    assert_eq!(err.to_string(), "invalid object type: /v1, Kind=Pod");
    assert_eq!(err.to_status()["reason"], "BadRequest");

    let mut with_fields = deployment(1, json!({}), nginx());
    with_fields["metadata"]["managedFields"] = json!([]);
    let err = apply(None, &with_fields, "m", false, &target, T0).expect_err("managedFields");
    assert_eq!(err.to_string(), "metadata.managedFields must be nil");

    let keyless = deployment(1, json!({}), json!([{"image": "nginx"}]));
    let err = apply(None, &keyless, "m", false, &target, T0).expect_err("no key");
    assert_eq!(err.http_status(), 500);
    assert_eq!(
        err.to_string(),
        "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): .spec.template.spec.containers: element 0: associative list with keys has an element that omits all key fields [\"name\"] (and doesn't have default values for any key fields)"
    );

    let unknown = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"bogus": 1}});
    let err = apply(None, &unknown, "m", false, &target, T0).expect_err("undeclared");
    assert!(
        err.to_string()
            .ends_with(".spec.bogus: field not declared in schema")
    );
}

#[test]
fn update_managers_are_capped() {
    let mut live = deployment(1, json!({}), nginx());
    record_update(
        None,
        &mut live,
        "creator",
        &deployments(),
        "2025-01-01T00:00:00Z",
    );
    for i in 0..12 {
        let mut next = live.clone();
        next["metadata"]["labels"][format!("l{i}")] = json!("v");
        record_update(
            Some(&live),
            &mut next,
            &format!("m{i:02}"),
            &deployments(),
            &format!("2025-01-01T00:{:02}:00Z", i + 1),
        );
        live = next;
    }
    let updaters = entries(&live)
        .iter()
        .filter(|e| e["operation"] == "Update")
        .count();
    assert_eq!(updaters, managed::MAX_UPDATE_MANAGERS);
    let ancient = entry(&live, "ancient-changes", "Update").expect("ancient-changes");
    assert!(
        ancient["fieldsV1"]["f:metadata"]["f:labels"]
            .get("f:l0")
            .is_some()
    );
    assert!(entry(&live, "creator", "Update").is_none());
    assert!(entry(&live, "m11", "Update").is_some());
}

#[test]
fn unknown_kinds_are_deduced() {
    let target = Target {
        def: None,
        api_version: "example.com/v1",
        kind: "Widget",
        subresource: None,
    };
    let config = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 1, "tags": ["a"], "nested": {"x": 1}}});
    let created = apply(None, &config, "kubectl", false, &target, T0).expect("apply");
    assert_eq!(
        created["metadata"]["managedFields"][0]["fieldsV1"],
        // Without a schema every map entry is a member and lists are atomic.
        json!({"f:spec": {".": {}, "f:nested": {".": {}, "f:x": {}}, "f:size": {}, "f:tags": {}}})
    );
    let smaller = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"tags": ["b"]}});
    let updated = apply(Some(&created), &smaller, "kubectl", false, &target, T1).expect("apply");
    assert_eq!(updated["spec"], json!({"tags": ["b"]}));
}

#[test]
fn manager_names_come_from_the_user_agent() {
    assert_eq!(
        manager_from_user_agent("kubectl/v1.33.0 (linux/amd64) kubernetes/abc"),
        "kubectl"
    );
    assert_eq!(manager_from_user_agent(""), "");
    assert_eq!(manager_from_user_agent(&"x".repeat(300)).len(), 128);
}
