//! Server-side printing: the `Table` columns and cells upstream's
//! `pkg/printers/internalversion/printers.go` gives each built-in kind.
//!
//! Without these `kubectl get` shows only NAME and AGE: kubectl has no client-side printers for
//! built-in types. The API server builds a `meta.k8s.io/v1 Table` from [`column_definitions`] and
//! one [`row_cells`] per object. Upstream's server always prints with `Wide: true`, so the cells
//! include the `priority: 1` columns and kubectl hides those unless `-o wide`.
//!
//! * `pod`: Pods (the READY/STATUS/RESTARTS logic of upstream `printPod`).
//! * `core`: the other core/v1 kinds (Node, Service, Endpoints, Event, volumes, quotas …).
//! * `workloads`: apps, batch, autoscaling and policy kinds.
//! * `cluster`: networking, discovery, storage, RBAC, scheduling and coordination kinds.
//! * `descriptions`: the column descriptions, from the upstream field documentation.
//!
//! Kinds without a printer (Role, ClusterRole, LimitRange, custom resources …) get upstream's
//! default table: Name and Created At.

mod cluster;
mod core;
mod descriptions;
mod pod;
mod workloads;

use serde::Serialize;
use serde_json::Value;

use crate::selectors;

/// One column of a `Table` (`metav1.TableColumnDefinition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnDefinition {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
}

/// A column as the printers declare them: name, type, format, description, priority.
type Column = (&'static str, &'static str, &'static str, &'static str, i32);

/// How one kind is printed.
struct Printer {
    columns: &'static [Column],
    cells: fn(&Value, jiff::Timestamp) -> Vec<Value>,
}

/// The printer for a group and kind, if upstream has one.
fn printer(group: &str, kind: &str) -> Option<Printer> {
    let p = |columns, cells| Some(Printer { columns, cells });
    match (group, kind) {
        ("", "Pod") => p(pod::COLUMNS, pod::cells),
        ("", "PodTemplate") => p(core::POD_TEMPLATE_COLUMNS, core::pod_template_cells),
        ("", "Node") => p(core::NODE_COLUMNS, core::node_cells),
        ("", "Service") => p(core::SERVICE_COLUMNS, core::service_cells),
        ("", "Endpoints") => p(core::ENDPOINTS_COLUMNS, core::endpoints_cells),
        ("", "Namespace") => p(core::NAMESPACE_COLUMNS, core::namespace_cells),
        ("", "ConfigMap") => p(core::CONFIG_MAP_COLUMNS, core::config_map_cells),
        ("", "Secret") => p(core::SECRET_COLUMNS, core::secret_cells),
        ("", "ServiceAccount") => p(core::SERVICE_ACCOUNT_COLUMNS, core::service_account_cells),
        ("", "Event") => p(core::EVENT_COLUMNS, core::event_cells),
        // events.k8s.io shares the core Event's storage and printer upstream.
        ("events.k8s.io", "Event") => p(core::EVENT_COLUMNS, core::events_v1_event_cells),
        ("", "ReplicationController") => p(
            workloads::REPLICATION_CONTROLLER_COLUMNS,
            workloads::replication_controller_cells,
        ),
        ("", "PersistentVolume") => p(
            core::PERSISTENT_VOLUME_COLUMNS,
            core::persistent_volume_cells,
        ),
        ("", "PersistentVolumeClaim") => p(
            core::PERSISTENT_VOLUME_CLAIM_COLUMNS,
            core::persistent_volume_claim_cells,
        ),
        ("", "ResourceQuota") => p(core::RESOURCE_QUOTA_COLUMNS, core::resource_quota_cells),
        ("apps", "Deployment") => p(workloads::DEPLOYMENT_COLUMNS, workloads::deployment_cells),
        ("apps", "ReplicaSet") => p(workloads::REPLICA_SET_COLUMNS, workloads::replica_set_cells),
        ("apps", "StatefulSet") => p(
            workloads::STATEFUL_SET_COLUMNS,
            workloads::stateful_set_cells,
        ),
        ("apps", "DaemonSet") => p(workloads::DAEMON_SET_COLUMNS, workloads::daemon_set_cells),
        ("apps", "ControllerRevision") => p(
            workloads::CONTROLLER_REVISION_COLUMNS,
            workloads::controller_revision_cells,
        ),
        ("batch", "Job") => p(workloads::JOB_COLUMNS, workloads::job_cells),
        ("batch", "CronJob") => p(workloads::CRON_JOB_COLUMNS, workloads::cron_job_cells),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            p(workloads::HPA_COLUMNS, workloads::hpa_cells)
        }
        ("autoscaling", "Scale") => p(workloads::SCALE_COLUMNS, workloads::scale_cells),
        ("policy", "PodDisruptionBudget") => p(workloads::PDB_COLUMNS, workloads::pdb_cells),
        ("coordination.k8s.io", "Lease") => p(cluster::LEASE_COLUMNS, cluster::lease_cells),
        ("discovery.k8s.io", "EndpointSlice") => p(
            cluster::ENDPOINT_SLICE_COLUMNS,
            cluster::endpoint_slice_cells,
        ),
        ("networking.k8s.io", "Ingress") => p(cluster::INGRESS_COLUMNS, cluster::ingress_cells),
        ("networking.k8s.io", "IngressClass") => {
            p(cluster::INGRESS_CLASS_COLUMNS, cluster::ingress_class_cells)
        }
        ("networking.k8s.io", "NetworkPolicy") => p(
            cluster::NETWORK_POLICY_COLUMNS,
            cluster::network_policy_cells,
        ),
        ("storage.k8s.io", "StorageClass") => {
            p(cluster::STORAGE_CLASS_COLUMNS, cluster::storage_class_cells)
        }
        ("scheduling.k8s.io", "PriorityClass") => p(
            cluster::PRIORITY_CLASS_COLUMNS,
            cluster::priority_class_cells,
        ),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            p(cluster::ROLE_BINDING_COLUMNS, cluster::role_binding_cells)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => p(
            cluster::CLUSTER_ROLE_BINDING_COLUMNS,
            cluster::role_binding_cells,
        ),
        _ => None,
    }
}

/// Upstream's default table (apiserver `rest.NewDefaultTableConvertor`) for kinds without a
/// printer.
const DEFAULT_COLUMNS: &[Column] = &[
    ("Name", "string", "name", descriptions::OBJECT_META_NAME, 0),
    (
        "Created At",
        "date",
        "",
        descriptions::OBJECT_META_CREATION_TIMESTAMP,
        0,
    ),
];

fn default_cells(obj: &Value, _now: jiff::Timestamp) -> Vec<Value> {
    // RFC 3339 in UTC, seconds precision; a missing timestamp is Go's zero time.
    let created = match timestamp(obj, "/metadata/creationTimestamp") {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    };
    vec![name(obj).into(), created.into()]
}

/// The columns of `group`/`kind`'s table, in upstream's order (wide columns have priority 1).
pub fn column_definitions(group: &str, kind: &str) -> Vec<ColumnDefinition> {
    let columns = printer(group, kind).map_or(DEFAULT_COLUMNS, |p| p.columns);
    columns
        .iter()
        .map(
            |(name, type_, format, description, priority)| ColumnDefinition {
                name: (*name).to_string(),
                type_: (*type_).to_string(),
                format: (*format).to_string(),
                description: (*description).to_string(),
                priority: *priority,
            },
        )
        .collect()
}

/// The cells of one row for `obj`, matching [`column_definitions`] one to one. Strings and
/// numbers as upstream puts them in the row (ages are relative to `now`).
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    match printer(group, kind) {
        Some(p) => (p.cells)(obj, now),
        None => default_cells(obj, now),
    }
}

/// The row `conditions` upstream sets: Pods that succeeded or failed are marked `Completed`
/// (kubectl uses it to tell finished pods apart). Empty for everything else.
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    if (group, kind) != ("", "Pod") {
        return Vec::new();
    }
    let (reason, message) = match str_at(obj, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![
        serde_json::json!({"type": "Completed", "status": "True", "reason": reason, "message": message}),
    ]
}

/// Upstream `duration.HumanDuration`: a succinct age with two or three significant figures
/// ("45s", "2m3s", "5h", "3d4h", "2y40d"); "<invalid>" for a time more than a second ahead.
pub fn human_duration(nanos: i128) -> String {
    const SECOND: i128 = 1_000_000_000;
    const MINUTE: i128 = 60 * SECOND;
    const HOUR: i128 = 60 * MINUTE;
    // Go truncates toward zero, as Rust's integer division does.
    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        let s = (nanos / SECOND) % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let m = (nanos / MINUTE) % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Upstream `translateTimestampSince`: the age of an RFC 3339 timestamp string, or "<unknown>"
/// when it is unset.
pub fn translate_timestamp_since(ts: Option<&str>, now: jiff::Timestamp) -> String {
    match ts.and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        Some(t) => since(t, now),
        None => "<unknown>".to_string(),
    }
}

fn since(t: jiff::Timestamp, now: jiff::Timestamp) -> String {
    human_duration(now.as_nanosecond() - t.as_nanosecond())
}

// ---------------------------------------------------------------------------------------------
// Reading fields of the JSON objects. Absent fields read as Go's zero values, as upstream's
// typed printers see them.
// ---------------------------------------------------------------------------------------------

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn opt_int_at(obj: &Value, pointer: &str) -> Option<i64> {
    obj.pointer(pointer).and_then(Value::as_i64)
}

fn bool_at(obj: &Value, pointer: &str) -> Option<bool> {
    obj.pointer(pointer).and_then(Value::as_bool)
}

fn array_at<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn len_at(obj: &Value, pointer: &str) -> usize {
    match obj.pointer(pointer) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn timestamp(obj: &Value, pointer: &str) -> Option<jiff::Timestamp> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn name(obj: &Value) -> &str {
    str_at(obj, "/metadata/name")
}

fn age(obj: &Value, now: jiff::Timestamp) -> Value {
    translate_timestamp_since(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
        now,
    )
    .into()
}

fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

fn or_placeholder(s: &str, placeholder: &str) -> String {
    if s.is_empty() {
        placeholder.to_string()
    } else {
        s.to_string()
    }
}

/// Upstream `layoutContainerCells`: container names and images, comma-joined.
fn container_cells(pod_spec: Option<&Value>) -> (Value, Value) {
    let containers = pod_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let mut names = Vec::new();
    let mut images = Vec::new();
    for c in containers.into_iter().flatten() {
        names.push(str_at(c, "/name"));
        images.push(str_at(c, "/image"));
    }
    (names.join(",").into(), images.join(",").into())
}

/// Upstream `metav1.FormatLabelSelector` of the selector at `pointer` (absent is null).
fn label_selector_at(obj: &Value, pointer: &str) -> Value {
    selectors::format_label_selector(obj.pointer(pointer).unwrap_or(&Value::Null)).into()
}

/// Upstream `labels.FormatLabels` of the string map at `pointer`.
fn labels_at(obj: &Value, pointer: &str) -> Value {
    selectors::format_labels(obj.pointer(pointer)).into()
}

/// A `resource.Quantity` as stored: the server keeps the string the client sent.
fn quantity_at(obj: &Value, pointer: &str) -> Option<String> {
    match obj.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An `intstr.IntOrString` printed as upstream's `String()`.
fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Upstream `printBoolPtr`.
fn bool_ptr(v: Option<bool>) -> String {
    match v {
        Some(true) => "True".to_string(),
        Some(false) => "False".to_string(),
        None => "<unset>".to_string(),
    }
}

/// Upstream's load balancer stringers: unique IPs (or hostnames) sorted and comma-joined. The
/// server prints wide, so the 16-character clipping never applies.
fn load_balancer_ingress(obj: &Value, pointer: &str) -> String {
    let mut result: Vec<&str> = Vec::new();
    for ing in array_at(obj, pointer) {
        let ip = str_at(ing, "/ip");
        let entry = if !ip.is_empty() {
            ip
        } else {
            str_at(ing, "/hostname")
        };
        if !entry.is_empty() {
            result.push(entry);
        }
    }
    result.sort_unstable();
    result.dedup();
    result.join(",")
}

/// Upstream `listWithMoreString`.
fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count - max);
    }
    if ret.is_empty() {
        "<unset>".to_string()
    } else {
        ret
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_duration_matches_upstream_thresholds() {
        let s = 1_000_000_000i128;
        let cases = [
            (-3 * s, "<invalid>"),
            (-s - 1, "0s"),
            (0, "0s"),
            (59 * s, "59s"),
            (119 * s, "119s"),
            (120 * s, "2m"),
            (123 * s, "2m3s"),
            (9 * 60 * s + 59 * s, "9m59s"),
            (10 * 60 * s + 30 * s, "10m"),
            (179 * 60 * s, "179m"),
            (3 * 3600 * s, "3h"),
            (3 * 3600 * s + 25 * 60 * s, "3h25m"),
            (8 * 3600 * s, "8h"),
            (47 * 3600 * s, "47h"),
            (48 * 3600 * s, "2d"),
            (3 * 86400 * s + 4 * 3600 * s, "3d4h"),
            (8 * 86400 * s, "8d"),
            (729 * 86400 * s, "729d"),
            (730 * 86400 * s, "2y"),
            (770 * 86400 * s, "2y40d"),
            (8 * 365 * 86400 * s, "8y"),
        ];
        for (nanos, want) in cases {
            assert_eq!(human_duration(nanos), want, "{nanos}ns");
        }
    }

    #[test]
    fn default_table_prints_name_and_creation_time() {
        let cols = column_definitions("rbac.authorization.k8s.io", "Role");
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Name", "Created At"]);
        assert_eq!(cols[1].type_, "date");
        let obj =
            json!({"metadata": {"name": "reader", "creationTimestamp": "2024-05-01T10:00:00Z"}});
        let now: jiff::Timestamp = "2024-05-02T10:00:00Z"
            .parse()
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(
            row_cells("rbac.authorization.k8s.io", "Role", &obj, now),
            vec![json!("reader"), json!("2024-05-01T10:00:00Z")]
        );
        let serialized = serde_json::to_value(&cols[0]).unwrap_or_default();
        assert_eq!(
            serialized
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>()),
            Some(vec![
                "name".into(),
                "type".into(),
                "format".into(),
                "description".into(),
                "priority".into()
            ])
        );
    }

    #[test]
    fn every_printer_fills_every_column() {
        let kinds = [
            ("", "Pod"),
            ("", "PodTemplate"),
            ("", "Node"),
            ("", "Service"),
            ("", "Endpoints"),
            ("", "Namespace"),
            ("", "ConfigMap"),
            ("", "Secret"),
            ("", "ServiceAccount"),
            ("", "Event"),
            ("events.k8s.io", "Event"),
            ("", "ReplicationController"),
            ("", "PersistentVolume"),
            ("", "PersistentVolumeClaim"),
            ("", "ResourceQuota"),
            ("", "LimitRange"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("apps", "ControllerRevision"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("autoscaling", "HorizontalPodAutoscaler"),
            ("autoscaling", "Scale"),
            ("policy", "PodDisruptionBudget"),
            ("coordination.k8s.io", "Lease"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("networking.k8s.io", "Ingress"),
            ("networking.k8s.io", "IngressClass"),
            ("networking.k8s.io", "NetworkPolicy"),
            ("storage.k8s.io", "StorageClass"),
            ("scheduling.k8s.io", "PriorityClass"),
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("rbac.authorization.k8s.io", "RoleBinding"),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
            ("example.com", "Widget"),
        ];
        // Empty and nonsense objects must print (with placeholders), never panic.
        let objects = [
            json!({}),
            json!({"metadata": {"name": "x"}, "spec": 5, "status": "odd"}),
            json!(null),
        ];
        for (group, kind) in kinds {
            let cols = column_definitions(group, kind);
            for obj in &objects {
                let cells = row_cells(group, kind, obj, jiff::Timestamp::UNIX_EPOCH);
                assert_eq!(cells.len(), cols.len(), "{group}/{kind}");
            }
        }
    }
}
