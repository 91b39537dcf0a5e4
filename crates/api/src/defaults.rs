//! Server-side defaulting, applied to every object the API server decodes (create, update,
//! patch results and reads from storage), exactly where upstream's scheme defaulters run.
//!
//! * [`apply_defaults`]: the generated `SetDefaults_*` functions of each group
//!   (`pkg/apis/<group>/v1/defaults.go` and `zz_generated.defaults.go`), plus the purely
//!   structural parts of the registry strategies and admission plugins that every cluster runs
//!   (Namespace finalizers, the ServiceAccount and Priority admission defaults on Pods).
//! * [`prepare_for_create`]: strategy logic that needs the object's new uid (the Job selector).
//!
//! Submodules, one per API group (or per subject for the pod spec, which every workload embeds):
//! * `pod`: PodSpec, containers, probes, volumes, pod templates.
//! * `core`: the other core/v1 kinds (Service, Namespace, Secret, PV/PVC, Node, Endpoints, RC).
//! * `apps`: Deployment, ReplicaSet, StatefulSet, DaemonSet.
//! * `batch`: Job, CronJob, and the Job selector generation.
//! * `cluster`: networking, discovery, RBAC, scheduling, autoscaling and storage kinds.
//!
//! Rules every defaulter here follows, because the object is user JSON that validation has
//! not seen yet: a value the user set is never replaced (except where upstream itself
//! overwrites, noted at the spot), and a field of the wrong JSON type is left alone for
//! validation to report — defaulting never panics and never fails.

mod apps;
mod batch;
mod cluster;
mod core;
mod pod;

use serde_json::{Map, Value};

/// Applies upstream's defaults for `group`/`version`/`kind` to `obj` in place.
///
/// Idempotent: applying it twice gives the same object as applying it once. Kinds without
/// defaults (ConfigMap, Lease, LimitRange, ResourceQuota, Event, IngressClass, …) are left
/// untouched. `group` is `""` for the core group.
pub fn apply_defaults(group: &str, version: &str, kind: &str, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (group, kind) {
        ("", "Pod") => pod::default_pod(root),
        ("", "PodTemplate") => {
            if let Some(template) = existing_object(root, "template") {
                pod::default_pod_template(template);
            }
        }
        ("", "ReplicationController") => core::default_replication_controller(root),
        ("", "Service") => core::default_service(root),
        ("", "Namespace") => core::default_namespace(root),
        ("", "Secret") => core::default_secret(root),
        ("", "PersistentVolume") => core::default_persistent_volume(root),
        ("", "PersistentVolumeClaim") => core::default_persistent_volume_claim(root),
        ("", "Endpoints") => core::default_endpoints(root),
        ("", "Node") => core::default_node(root),
        ("", "LimitRange") => core::default_limit_range(root),
        ("apps", "Deployment") => apps::default_deployment(root),
        ("apps", "ReplicaSet") => apps::default_replica_set(root),
        ("apps", "StatefulSet") => apps::default_stateful_set(root),
        ("apps", "DaemonSet") => apps::default_daemon_set(root),
        ("batch", "Job") => batch::default_job(root),
        ("batch", "CronJob") => batch::default_cron_job(root),
        ("networking.k8s.io", "NetworkPolicy") => cluster::default_network_policy(root),
        ("discovery.k8s.io", "EndpointSlice") => cluster::default_endpoint_slice(root),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            cluster::default_role_binding(root)
        }
        ("scheduling.k8s.io", "PriorityClass") => cluster::default_priority_class(root),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            cluster::default_horizontal_pod_autoscaler(version, root)
        }
        ("storage.k8s.io", "StorageClass") => cluster::default_storage_class(root),
        _ => {}
    }
}

/// Strategy defaults that need the uid the API server has just assigned (`PrepareForCreate`).
///
/// Job: unless `spec.manualSelector` is true, the selector is generated from the uid and the
/// pod template gets the controller-uid and job-name labels (pkg/registry/batch/job/strategy.go).
pub fn prepare_for_create(group: &str, _version: &str, kind: &str, obj: &mut Value, uid: &str) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (group, kind) {
        ("batch", "Job") => batch::generate_job_selector(root, uid),
        ("", "Namespace") => core::add_namespace_finalizer(root),
        // Upstream's DefaultTolerationSeconds admission: 300 s for not-ready / unreachable.
        ("", "Pod") => pod::default_toleration_seconds(root),
        _ => {}
    }
}

// Small accessors over the decoded JSON. They encode Go's zero-value semantics: upstream
// defaulters test `== ""`, `== 0` or `== nil`, and JSON `null` decodes to the zero value.

/// The object at `key`, created empty when absent or null; `None` when it has another type.
fn child_object<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = map.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// The object at `key` if it is present and is an object.
fn existing_object<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// Calls `f` on every object element of the array at `key` (other elements are skipped).
fn each_object(
    map: &mut Map<String, Value>,
    key: &str,
    mut f: impl FnMut(&mut Map<String, Value>),
) {
    if let Some(items) = map.get_mut(key).and_then(Value::as_array_mut) {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            f(item);
        }
    }
}

/// Sets a pointer-typed field (`nil` in Go): absent or null.
fn default_field(map: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_owned(), value.into());
        }
        Some(_) => {}
    }
}

/// Sets a plain string field: absent, null or `""`.
fn default_string(map: &mut Map<String, Value>, key: &str, value: &str) {
    match map.get(key) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(_) => return,
    }
    map.insert(key.to_owned(), Value::String(value.to_owned()));
}

/// Sets a plain integer field: absent, null or `0`.
fn default_int(map: &mut Map<String, Value>, key: &str, value: i64) {
    match map.get(key) {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => {}
        Some(_) => return,
    }
    map.insert(key.to_owned(), Value::from(value));
}

/// True when `map[key]` is absent, null, or an empty string/array/object (Go's `len(x) == 0`).
fn is_empty(map: &Map<String, Value>, key: &str) -> bool {
    match map.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_shapes_do_not_panic() {
        for kind in [
            ("", "Pod"),
            ("", "Service"),
            ("apps", "Deployment"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("", "Namespace"),
            ("", "ReplicationController"),
            ("networking.k8s.io", "NetworkPolicy"),
            ("autoscaling", "HorizontalPodAutoscaler"),
        ] {
            for mut odd in [
                json!(null),
                json!([1, 2]),
                json!({"spec": 5}),
                json!({"spec": {"template": "x", "containers": {"a": 1}, "ports": [1, "x"], "jobTemplate": []}}),
                json!({"spec": {"template": {"spec": {"containers": [null, 3, {"ports": 7, "image": 5}], "volumes": [{"secret": 4}]}}}}),
            ] {
                apply_defaults(kind.0, "v1", kind.1, &mut odd);
                prepare_for_create(kind.0, "v1", kind.1, &mut odd, "u");
            }
        }
    }

    #[test]
    fn user_values_win() {
        let mut svc = json!({"spec": {"type": "NodePort", "sessionAffinity": "ClientIP",
            "ports": [{"port": 80, "targetPort": "http", "protocol": "UDP"}],
            "externalTrafficPolicy": "Local"}});
        apply_defaults("", "v1", "Service", &mut svc);
        assert_eq!(svc["spec"]["type"], "NodePort");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "UDP");
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
        assert_eq!(
            svc["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
            10800
        );
    }
}
