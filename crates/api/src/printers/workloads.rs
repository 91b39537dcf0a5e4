//! Workload kinds: ReplicationController, apps, batch, autoscaling and policy.

use serde_json::Value;

use super::descriptions as d;
use super::{
    Column, age, array_at, bool_at, bool_ptr, container_cells, human_duration, int_at,
    int_or_string, is_deleting, label_selector_at, labels_at, name, opt_int_at, quantity_at,
    str_at, timestamp, translate_timestamp_since,
};
use crate::selectors;

const NAME: Column = ("Name", "string", "name", d::OBJECT_META_NAME, 0);
const AGE: Column = ("Age", "string", "", d::OBJECT_META_CREATION_TIMESTAMP, 0);
const CONTAINERS: Column = (
    "Containers",
    "string",
    "",
    "Names of each container in the template.",
    1,
);
const IMAGES: Column = (
    "Images",
    "string",
    "",
    "Images referenced by each container in the template.",
    1,
);

/// `spec.replicas` as the decoded (defaulted) object has it: 1 when unset.
fn desired_replicas(obj: &Value) -> i64 {
    opt_int_at(obj, "/spec/replicas").unwrap_or(1)
}

pub(super) const REPLICATION_CONTROLLER_COLUMNS: &[Column] = &[
    NAME,
    ("Desired", "integer", "", d::RC_SPEC_REPLICAS, 0),
    ("Current", "integer", "", d::RC_STATUS_REPLICAS, 0),
    ("Ready", "integer", "", d::RC_STATUS_READY_REPLICAS, 0),
    AGE,
    CONTAINERS,
    IMAGES,
    ("Selector", "string", "", d::RC_SPEC_SELECTOR, 1),
];

pub(super) fn replication_controller_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name(obj).into(),
        desired_replicas(obj).into(),
        int_at(obj, "/status/replicas").into(),
        int_at(obj, "/status/readyReplicas").into(),
        age(obj, now),
        names,
        images,
        labels_at(obj, "/spec/selector"),
    ]
}

pub(super) const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    (
        "Ready",
        "string",
        "",
        "Number of the pod with ready state",
        0,
    ),
    ("Up-to-date", "string", "", d::DEPLOYMENT_STATUS_UPDATED, 0),
    ("Available", "string", "", d::DEPLOYMENT_STATUS_AVAILABLE, 0),
    AGE,
    CONTAINERS,
    IMAGES,
    ("Selector", "string", "", d::DEPLOYMENT_SPEC_SELECTOR, 1),
];

pub(super) fn deployment_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    // Upstream prints the selector's String() here (empty for none), "<invalid>" if it fails.
    let selector = match selectors::from_label_selector_json(
        obj.pointer("/spec/selector").unwrap_or(&Value::Null),
    ) {
        Ok(s) => s.to_string(),
        Err(_) => "<invalid>".to_string(),
    };
    vec![
        name(obj).into(),
        format!(
            "{}/{}",
            int_at(obj, "/status/readyReplicas"),
            desired_replicas(obj)
        )
        .into(),
        int_at(obj, "/status/updatedReplicas").into(),
        int_at(obj, "/status/availableReplicas").into(),
        age(obj, now),
        names,
        images,
        selector.into(),
    ]
}

pub(super) const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    ("Desired", "integer", "", d::RS_SPEC_REPLICAS, 0),
    ("Current", "integer", "", d::RS_STATUS_REPLICAS, 0),
    ("Ready", "integer", "", d::RS_STATUS_READY_REPLICAS, 0),
    AGE,
    CONTAINERS,
    IMAGES,
    ("Selector", "string", "", d::RS_SPEC_SELECTOR, 1),
];

pub(super) fn replica_set_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name(obj).into(),
        desired_replicas(obj).into(),
        int_at(obj, "/status/replicas").into(),
        int_at(obj, "/status/readyReplicas").into(),
        age(obj, now),
        names,
        images,
        label_selector_at(obj, "/spec/selector"),
    ]
}

pub(super) const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    (
        "Ready",
        "string",
        "",
        "Number of the pod with ready state",
        0,
    ),
    AGE,
    CONTAINERS,
    IMAGES,
];

pub(super) fn stateful_set_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name(obj).into(),
        format!(
            "{}/{}",
            int_at(obj, "/status/readyReplicas"),
            desired_replicas(obj)
        )
        .into(),
        age(obj, now),
        names,
        images,
    ]
}

pub(super) const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    ("Desired", "integer", "", d::DS_STATUS_DESIRED, 0),
    ("Current", "integer", "", d::DS_STATUS_CURRENT, 0),
    ("Ready", "integer", "", d::DS_STATUS_READY, 0),
    ("Up-to-date", "integer", "", d::DS_STATUS_UPDATED, 0),
    ("Available", "integer", "", d::DS_STATUS_AVAILABLE, 0),
    ("Node Selector", "string", "", d::POD_SPEC_NODE_SELECTOR, 0),
    AGE,
    CONTAINERS,
    IMAGES,
    ("Selector", "string", "", d::DS_SPEC_SELECTOR, 1),
];

pub(super) fn daemon_set_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(obj.pointer("/spec/template/spec"));
    vec![
        name(obj).into(),
        int_at(obj, "/status/desiredNumberScheduled").into(),
        int_at(obj, "/status/currentNumberScheduled").into(),
        int_at(obj, "/status/numberReady").into(),
        int_at(obj, "/status/updatedNumberScheduled").into(),
        int_at(obj, "/status/numberAvailable").into(),
        labels_at(obj, "/spec/template/spec/nodeSelector"),
        age(obj, now),
        names,
        images,
        label_selector_at(obj, "/spec/selector"),
    ]
}

pub(super) const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    ("Controller", "string", "", "Controller of the object", 0),
    ("Revision", "string", "", d::CONTROLLER_REVISION_REVISION, 0),
    AGE,
];

pub(super) fn controller_revision_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let controller = array_at(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map_or_else(
            || "<none>".to_string(),
            |r| {
                // `kind.group/name`, lower-cased, as upstream's formatResourceName.
                let api_version = str_at(r, "/apiVersion");
                let group = match api_version.split_once('/') {
                    Some((group, _)) => group,
                    None => "",
                };
                let kind = str_at(r, "/kind");
                let ref_name = str_at(r, "/name");
                match (kind.is_empty() && group.is_empty(), group.is_empty()) {
                    (true, _) => ref_name.to_string(),
                    (false, true) => format!("{}/{ref_name}", kind.to_lowercase()),
                    (false, false) => {
                        format!("{}/{ref_name}", format!("{kind}.{group}").to_lowercase())
                    }
                }
            },
        );
    vec![
        name(obj).into(),
        controller.into(),
        int_at(obj, "/revision").into(),
        age(obj, now),
    ]
}

pub(super) const JOB_COLUMNS: &[Column] = &[
    NAME,
    ("Status", "string", "", "Status of the job.", 0),
    ("Completions", "string", "", d::JOB_STATUS_SUCCEEDED, 0),
    (
        "Duration",
        "string",
        "",
        "Time required to complete the job.",
        0,
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    ("Selector", "string", "", d::JOB_SPEC_SELECTOR, 1),
];

/// Upstream `hasJobCondition`: the first condition of the type decides.
fn has_job_condition(job: &Value, type_: &str) -> bool {
    array_at(job, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == type_)
        .is_some_and(|c| str_at(c, "/status") == "True")
}

pub(super) fn job_cells(job: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let succeeded = int_at(job, "/status/succeeded");
    let completions = match opt_int_at(job, "/spec/completions") {
        Some(c) => format!("{succeeded}/{c}"),
        None => match opt_int_at(job, "/spec/parallelism").unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        timestamp(job, "/status/startTime"),
        timestamp(job, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.as_nanosecond() - start.as_nanosecond()),
        (Some(start), Some(end)) => human_duration(end.as_nanosecond() - start.as_nanosecond()),
    };
    let status = if has_job_condition(job, "Complete") {
        "Complete"
    } else if has_job_condition(job, "Failed") {
        "Failed"
    } else if is_deleting(job) {
        "Terminating"
    } else if has_job_condition(job, "Suspended") {
        "Suspended"
    } else if has_job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(job.pointer("/spec/template/spec"));
    vec![
        name(job).into(),
        status.into(),
        completions.into(),
        duration.into(),
        age(job, now),
        names,
        images,
        label_selector_at(job, "/spec/selector"),
    ]
}

pub(super) const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    ("Schedule", "string", "", d::CRONJOB_SPEC_SCHEDULE, 0),
    ("Timezone", "string", "", d::CRONJOB_SPEC_TIME_ZONE, 0),
    ("Suspend", "boolean", "", d::CRONJOB_SPEC_SUSPEND, 0),
    ("Active", "integer", "", d::CRONJOB_STATUS_ACTIVE, 0),
    (
        "Last Schedule",
        "string",
        "",
        d::CRONJOB_STATUS_LAST_SCHEDULE,
        0,
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    ("Selector", "string", "", d::JOB_SPEC_SELECTOR, 1),
];

pub(super) fn cron_job_cells(cj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let last_schedule = match cj
        .pointer("/status/lastScheduleTime")
        .and_then(Value::as_str)
    {
        Some(t) => translate_timestamp_since(Some(t), now),
        None => "<none>".to_string(),
    };
    let time_zone = cj
        .pointer("/spec/timeZone")
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let (names, images) = container_cells(cj.pointer("/spec/jobTemplate/spec/template/spec"));
    vec![
        name(cj).into(),
        str_at(cj, "/spec/schedule").into(),
        time_zone.into(),
        bool_ptr(bool_at(cj, "/spec/suspend")).into(),
        (array_at(cj, "/status/active").len() as i64).into(),
        last_schedule.into(),
        age(cj, now),
        names,
        images,
        label_selector_at(cj, "/spec/jobTemplate/spec/selector"),
    ]
}

pub(super) const HPA_COLUMNS: &[Column] = &[
    NAME,
    ("Reference", "string", "", d::HPA_SPEC_SCALE_TARGET_REF, 0),
    ("Targets", "string", "", d::HPA_SPEC_METRICS, 0),
    ("MinPods", "string", "", d::HPA_SPEC_MIN_REPLICAS, 0),
    ("MaxPods", "string", "", d::HPA_SPEC_MAX_REPLICAS, 0),
    ("Replicas", "string", "", d::HPA_STATUS_CURRENT_REPLICAS, 0),
    AGE,
];

fn q(obj: &Value, pointer: &str) -> String {
    quantity_at(obj, pointer).unwrap_or_else(|| "0".to_string())
}

/// One metric of upstream `formatHPAMetrics`, from autoscaling/v2 `spec.metrics[i]` and the
/// matching `status.currentMetrics[i]`.
fn format_hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let unknown = || "<unknown>".to_string();
    let current = |source: &str, field: &str| {
        status
            .and_then(|s| s.get(source))
            .filter(|s| s.is_object())
            .and_then(|s| quantity_at(s, &format!("/current/{field}")))
    };
    match str_at(spec, "/type") {
        "External" | "Object" => {
            let source = if str_at(spec, "/type") == "External" {
                "external"
            } else {
                "object"
            };
            let target = spec.get(source).unwrap_or(&Value::Null);
            if target.pointer("/target/averageValue").is_some() {
                let cur = current(source, "averageValue").unwrap_or_else(unknown);
                format!("{cur}/{} (avg)", q(target, "/target/averageValue"))
            } else {
                let cur = if status
                    .and_then(|s| s.get(source))
                    .is_some_and(Value::is_object)
                {
                    current(source, "value").unwrap_or_else(|| "0".to_string())
                } else {
                    unknown()
                };
                format!("{cur}/{}", q(target, "/target/value"))
            }
        }
        "Pods" => {
            let cur = if status
                .and_then(|s| s.get("pods"))
                .is_some_and(Value::is_object)
            {
                current("pods", "averageValue").unwrap_or_else(|| "0".to_string())
            } else {
                unknown()
            };
            format!("{cur}/{}", q(spec, "/pods/target/averageValue"))
        }
        "Resource" | "ContainerResource" => {
            let source = if str_at(spec, "/type") == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let target = spec.get(source).unwrap_or(&Value::Null);
            let resource = str_at(target, "/name");
            let source_status = status.and_then(|s| s.get(source)).filter(|s| s.is_object());
            if target.pointer("/target/averageValue").is_some() {
                let cur = match source_status {
                    Some(s) => q(s, "/current/averageValue"),
                    None => unknown(),
                };
                format!("{resource}: {cur}/{}", q(target, "/target/averageValue"))
            } else {
                let cur = source_status
                    .and_then(|s| s.pointer("/current/averageUtilization"))
                    .and_then(Value::as_i64)
                    .map_or_else(unknown, |u| format!("{u}%"));
                let want = target
                    .pointer("/target/averageUtilization")
                    .and_then(Value::as_i64)
                    .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                format!("{resource}: {cur}/{want}")
            }
        }
        _ => "<unknown type>".to_string(),
    }
}

/// The TARGETS cell: at most two metrics, then `+ N more...`.
fn format_hpa_metrics(hpa: &Value) -> String {
    let specs = array_at(hpa, "/spec/metrics");
    if !specs.is_empty() {
        let statuses = array_at(hpa, "/status/currentMetrics");
        let list: Vec<String> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| format_hpa_metric(s, statuses.get(i)))
            .collect();
        const MAX: usize = 2;
        if list.len() > MAX {
            return format!("{} + {} more...", list[..MAX].join(", "), list.len() - MAX);
        }
        return list.join(", ");
    }
    // autoscaling/v1 carries a single CPU utilization target.
    match opt_int_at(hpa, "/spec/targetCPUUtilizationPercentage") {
        Some(target) => {
            let current = opt_int_at(hpa, "/status/currentCPUUtilizationPercentage")
                .map_or_else(|| "<unknown>".to_string(), |c| format!("{c}%"));
            format!("cpu: {current}/{target}%")
        }
        None => "<none>".to_string(),
    }
}

pub(super) fn hpa_cells(hpa: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(hpa, "/spec/scaleTargetRef/kind"),
        str_at(hpa, "/spec/scaleTargetRef/name")
    );
    let min_pods = opt_int_at(hpa, "/spec/minReplicas")
        .map_or_else(|| "<unset>".to_string(), |m| m.to_string());
    vec![
        name(hpa).into(),
        reference.into(),
        format_hpa_metrics(hpa).into(),
        min_pods.into(),
        int_at(hpa, "/spec/maxReplicas").into(),
        int_at(hpa, "/status/currentReplicas").into(),
        age(hpa, now),
    ]
}

pub(super) const SCALE_COLUMNS: &[Column] = &[
    ("Name", "string", "", d::OBJECT_META_NAME, 0),
    (
        "Desired",
        "integer",
        "",
        "replicas is the desired number of instances for the scaled object.",
        0,
    ),
    (
        "Available",
        "integer",
        "",
        "replicas is the actual number of observed instances of the scaled object.",
        0,
    ),
    AGE,
];

pub(super) fn scale_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        name(obj).into(),
        int_at(obj, "/spec/replicas").into(),
        int_at(obj, "/status/replicas").into(),
        age(obj, now),
    ]
}

pub(super) const PDB_COLUMNS: &[Column] = &[
    NAME,
    (
        "Min Available",
        "string",
        "",
        "The minimum number of pods that must be available.",
        0,
    ),
    (
        "Max Unavailable",
        "string",
        "",
        "The maximum number of pods that may be unavailable.",
        0,
    ),
    (
        "Allowed Disruptions",
        "integer",
        "",
        "Calculated number of pods that may be disrupted at this time.",
        0,
    ),
    AGE,
];

pub(super) fn pdb_cells(pdb: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let int_or_na = |pointer: &str| match pdb.pointer(pointer) {
        Some(v @ (Value::String(_) | Value::Number(_))) => int_or_string(v),
        _ => "N/A".to_string(),
    };
    vec![
        name(pdb).into(),
        int_or_na("/spec/minAvailable").into(),
        int_or_na("/spec/maxUnavailable").into(),
        int_at(pdb, "/status/disruptionsAllowed").into(),
        age(pdb, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> jiff::Timestamp {
        "2025-03-01T12:00:00Z"
            .parse()
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    const CREATED: &str = "2025-03-01T09:00:00Z";

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "app", "image": "nginx:1.27"}, {"name": "sidecar", "image": "busybox"}]}})
    }

    #[test]
    fn deployments() {
        let dep = json!({"metadata": {"name": "web", "creationTimestamp": CREATED},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            Value::from(deployment_cells(&dep, now())),
            json!([
                "web",
                "2/3",
                3,
                2,
                "3h",
                "app,sidecar",
                "nginx:1.27,busybox",
                "app=web"
            ])
        );
        let fresh = json!({"metadata": {"name": "new", "creationTimestamp": "2025-03-01T11:59:50Z"}, "spec": {}});
        assert_eq!(
            Value::from(deployment_cells(&fresh, now())),
            json!(["new", "0/1", 0, 0, "10s", "", "", ""])
        );
    }

    #[test]
    fn replica_sets_stateful_sets_daemon_sets_and_controllers() {
        let rs = json!({"metadata": {"name": "web-5d4f", "creationTimestamp": CREATED},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d4f"}}, "template": template()},
            "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            Value::from(replica_set_cells(&rs, now())),
            json!([
                "web-5d4f",
                2,
                2,
                1,
                "3h",
                "app,sidecar",
                "nginx:1.27,busybox",
                "app=web,pod-template-hash=5d4f"
            ])
        );
        let sts = json!({"metadata": {"name": "db", "creationTimestamp": CREATED},
            "spec": {"replicas": 3, "template": template()}, "status": {"readyReplicas": 3}});
        assert_eq!(
            Value::from(stateful_set_cells(&sts, now())),
            json!(["db", "3/3", "3h", "app,sidecar", "nginx:1.27,busybox"])
        );
        let ds = json!({"metadata": {"name": "proxy", "creationTimestamp": CREATED},
            "spec": {"selector": {"matchLabels": {"k8s-app": "proxy"}},
                "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "p", "image": "proxy"}]}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                       "updatedNumberScheduled": 2, "numberAvailable": 1}});
        assert_eq!(
            Value::from(daemon_set_cells(&ds, now())),
            json!([
                "proxy",
                2,
                2,
                1,
                2,
                1,
                "kubernetes.io/os=linux",
                "3h",
                "p",
                "proxy",
                "k8s-app=proxy"
            ])
        );
        let rc = json!({"metadata": {"name": "old", "creationTimestamp": CREATED},
            "spec": {"replicas": 2, "selector": {"app": "old"}, "template": template()}, "status": {"replicas": 2}});
        assert_eq!(
            Value::from(replication_controller_cells(&rc, now())),
            json!([
                "old",
                2,
                2,
                0,
                "3h",
                "app,sidecar",
                "nginx:1.27,busybox",
                "app=old"
            ])
        );
        let cr = json!({"metadata": {"name": "db-7c9", "creationTimestamp": CREATED, "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true}]}, "revision": 2});
        assert_eq!(
            Value::from(controller_revision_cells(&cr, now())),
            json!(["db-7c9", "statefulset.apps/db", 2, "3h"])
        );
        let orphan = json!({"metadata": {"name": "x"}, "revision": 1});
        assert_eq!(
            controller_revision_cells(&orphan, now())[1],
            json!("<none>")
        );
    }

    #[test]
    fn jobs_and_cron_jobs() {
        let job = |spec: Value, status: Value| {
            let mut spec = spec;
            spec["template"] = json!({"spec": {"containers": [{"name": "pi", "image": "perl"}]}});
            spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}});
            json!({"metadata": {"name": "pi", "creationTimestamp": CREATED}, "spec": spec, "status": status})
        };
        let cases = [
            (
                job(
                    json!({"completions": 1, "parallelism": 1}),
                    json!({"succeeded": 1, "startTime": "2025-03-01T09:00:00Z",
                    "completionTime": "2025-03-01T09:00:42Z", "conditions": [{"type": "Complete", "status": "True"}]}),
                ),
                ("Complete", "1/1", "42s"),
            ),
            (
                job(
                    json!({"parallelism": 3}),
                    json!({"active": 3, "startTime": "2025-03-01T11:57:00Z"}),
                ),
                ("Running", "0/1 of 3", "3m"),
            ),
            (
                job(
                    json!({"completions": 5, "parallelism": 1}),
                    json!({"succeeded": 2, "conditions": [
                    {"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}),
                ),
                ("Failed", "2/5", ""),
            ),
            (
                job(
                    json!({"completions": 1, "suspend": true}),
                    json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
                ),
                ("Suspended", "0/1", ""),
            ),
        ];
        for (j, (status, completions, duration)) in cases {
            let c = job_cells(&j, now());
            assert_eq!(
                &c[..5],
                &[
                    json!("pi"),
                    json!(status),
                    json!(completions),
                    json!(duration),
                    json!("3h")
                ]
            );
            assert_eq!(
                &c[5..],
                &[
                    json!("pi"),
                    json!("perl"),
                    json!("batch.kubernetes.io/controller-uid=u1")
                ]
            );
        }
        let cj = json!({"metadata": {"name": "hello", "creationTimestamp": CREATED},
            "spec": {"schedule": "*/5 * * * *", "suspend": false, "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "hello", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": "2025-03-01T11:55:00Z"}});
        assert_eq!(
            Value::from(cron_job_cells(&cj, now())),
            json!([
                "hello",
                "*/5 * * * *",
                "<none>",
                "False",
                1,
                "5m",
                "3h",
                "hello",
                "busybox",
                "<none>"
            ])
        );
    }

    #[test]
    fn horizontal_pod_autoscalers() {
        let v2 = json!({"metadata": {"name": "web", "creationTimestamp": CREATED},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 35, "averageValue": "70m"}}}]}});
        assert_eq!(
            Value::from(hpa_cells(&v2, now())),
            json!([
                "web",
                "Deployment/web",
                "cpu: 35%/80%, memory: <unknown>/500Mi + 1 more...",
                "1",
                10,
                2,
                "3h"
            ])
        );
        let v1 = json!({"metadata": {"name": "web", "creationTimestamp": CREATED},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}});
        assert_eq!(
            Value::from(hpa_cells(&v1, now())),
            json!([
                "web",
                "Deployment/web",
                "cpu: <unknown>/50%",
                "<unset>",
                5,
                0,
                "3h"
            ])
        );
    }

    #[test]
    fn pod_disruption_budgets() {
        let pdb = json!({"metadata": {"name": "web", "creationTimestamp": CREATED},
            "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            Value::from(pdb_cells(&pdb, now())),
            json!(["web", "50%", "N/A", 1, "3h"])
        );
        let pdb = json!({"metadata": {"name": "db", "creationTimestamp": CREATED}, "spec": {"maxUnavailable": 1}});
        assert_eq!(
            Value::from(pdb_cells(&pdb, now())),
            json!(["db", "N/A", "1", 0, "3h"])
        );
    }
}
