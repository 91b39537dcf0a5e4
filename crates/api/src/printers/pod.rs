//! The Pod table: upstream `printPod`, whose STATUS is what people read as "the pod's state".

use serde_json::Value;

use super::descriptions as d;
use super::{
    Column, age, array_at, int_at, is_deleting, name, or_placeholder, since, str_at, timestamp,
};

pub(super) const COLUMNS: &[Column] = &[
    ("Name", "string", "name", d::OBJECT_META_NAME, 0),
    (
        "Ready",
        "string",
        "",
        "The aggregate readiness state of this pod for accepting traffic.",
        0,
    ),
    (
        "Status",
        "string",
        "",
        "The aggregate status of the containers in this pod.",
        0,
    ),
    (
        "Restarts",
        "string",
        "",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        0,
    ),
    ("Age", "string", "", d::OBJECT_META_CREATION_TIMESTAMP, 0),
    ("IP", "string", "", d::POD_STATUS_POD_IP, 1),
    ("Node", "string", "", d::POD_SPEC_NODE_NAME, 1),
    (
        "Nominated Node",
        "string",
        "",
        d::POD_STATUS_NOMINATED_NODE_NAME,
        1,
    ),
    (
        "Readiness Gates",
        "string",
        "",
        d::POD_SPEC_READINESS_GATES,
        1,
    ),
];

/// The reason the node lifecycle controller gives pods on an unreachable node.
const NODE_UNREACHABLE_POD_REASON: &str = "NodeLost";

/// A sidecar: an init container with `restartPolicy: Always` (KEP-753).
fn is_restartable_init_container(c: Option<&Value>) -> bool {
    c.is_some_and(|c| str_at(c, "/restartPolicy") == "Always")
}

/// The later of the running "last restart" time and this container's last termination.
fn later_termination(current: Option<jiff::Timestamp>, status: &Value) -> Option<jiff::Timestamp> {
    match timestamp(status, "/lastState/terminated/finishedAt") {
        Some(t) if current.is_none_or(|c| c < t) => Some(t),
        _ => current,
    }
}

fn has_condition(obj: &Value, type_: &str, status: &str) -> bool {
    array_at(obj, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == type_ && str_at(c, "/status") == status)
}

/// Upstream `isPodInitializedConditionTrue`: the first Initialized condition decides.
fn initialized(obj: &Value) -> bool {
    array_at(obj, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == "Initialized")
        .is_some_and(|c| str_at(c, "/status") == "True")
}

/// The reason a terminated container shows, with upstream's Signal/ExitCode fallbacks.
fn terminated_reason(terminated: &Value, prefix: &str) -> String {
    let reason = str_at(terminated, "/reason");
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int_at(terminated, "/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int_at(terminated, "/exitCode"))
    }
}

pub(super) fn cells(pod: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let containers = array_at(pod, "/spec/containers");
    let init_containers = array_at(pod, "/spec/initContainers");
    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let mut total_containers = containers.len();
    let mut ready_containers = 0usize;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut last_restartable_init_restart: Option<jiff::Timestamp> = None;

    let phase = str_at(pod, "/status/phase");
    let mut reason = phase.to_string();
    let status_reason = str_at(pod, "/status/reason");
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    // A pod whose scheduling gates are not all removed yet shows SchedulingGated.
    if array_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let init_spec = |name: &str| init_containers.iter().find(|c| str_at(c, "/name") == name);
    total_containers += init_containers
        .iter()
        .filter(|c| is_restartable_init_container(Some(c)))
        .count();

    let mut initializing = false;
    for (i, status) in array_at(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        restarts += int_at(status, "/restartCount");
        last_restart = later_termination(last_restart, status);
        let restartable = is_restartable_init_container(init_spec(str_at(status, "/name")));
        if restartable {
            restartable_init_restarts += int_at(status, "/restartCount");
            last_restartable_init_restart =
                later_termination(last_restartable_init_restart, status);
        }
        let terminated = status
            .pointer("/state/terminated")
            .filter(|t| t.is_object());
        let waiting_reason = str_at(status, "/state/waiting/reason");
        if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
            continue;
        } else if restartable && status.get("started").and_then(Value::as_bool) == Some(true) {
            if status.get("ready").and_then(Value::as_bool) == Some(true) {
                ready_containers += 1;
            }
            continue;
        } else if let Some(t) = terminated {
            reason = terminated_reason(t, "Init:");
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_containers.len());
        }
        initializing = true;
        break;
    }

    if !initializing || initialized(pod) {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for status in array_at(pod, "/status/containerStatuses").iter().rev() {
            restarts += int_at(status, "/restartCount");
            last_restart = later_termination(last_restart, status);
            let waiting_reason = str_at(status, "/state/waiting/reason");
            let terminated = status
                .pointer("/state/terminated")
                .filter(|t| t.is_object());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t, "");
            } else if status.get("ready").and_then(Value::as_bool) == Some(true)
                && status
                    .pointer("/state/running")
                    .is_some_and(Value::is_object)
            {
                has_running = true;
                ready_containers += 1;
            }
        }
        // A pod whose last container completed but another still runs is not Completed.
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready", "True") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    if is_deleting(pod) && status_reason == NODE_UNREACHABLE_POD_REASON {
        reason = "Unknown".to_string();
    } else if is_deleting(pod) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(t, now)),
        _ => restarts.to_string(),
    };

    // v1 → internal conversion: status.podIP wins over podIPs[0] when both are set.
    let mut pod_ip = str_at(pod, "/status/podIP");
    if pod_ip.is_empty() {
        pod_ip = str_at(pod, "/status/podIPs/0/ip");
    }

    let gates = array_at(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = array_at(pod, "/status/conditions");
        let true_conditions = gates
            .iter()
            .filter(|g| {
                let type_ = str_at(g, "/conditionType");
                conditions
                    .iter()
                    .find(|c| str_at(c, "/type") == type_)
                    .is_some_and(|c| str_at(c, "/status") == "True")
            })
            .count();
        format!("{true_conditions}/{}", gates.len())
    };

    vec![
        name(pod).into(),
        format!("{ready_containers}/{total_containers}").into(),
        reason.into(),
        restarts_cell.into(),
        age(pod, now),
        or_placeholder(pod_ip, "<none>").into(),
        or_placeholder(str_at(pod, "/spec/nodeName"), "<none>").into(),
        or_placeholder(str_at(pod, "/status/nominatedNodeName"), "<none>").into(),
        readiness_gates.into(),
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

    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2025-03-01T11:00:00Z"},
            "spec": spec,
            "status": status,
        })
    }

    fn two_containers() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}, {"name": "log", "image": "busybox"}], "nodeName": "n1"})
    }

    /// (case, pod, READY, STATUS, RESTARTS)
    #[test]
    fn status_ready_and_restarts_follow_upstream() {
        let running = json!({"running": {"startedAt": "2025-03-01T11:00:05Z"}});
        let cases: Vec<(&str, Value, &str, &str, &str)> = vec![
            (
                "pending, not scheduled",
                pod(
                    json!({"containers": [{"name": "app"}]}),
                    json!({"phase": "Pending"}),
                ),
                "0/1",
                "Pending",
                "0",
            ),
            (
                "running, one of two ready",
                pod(
                    two_containers(),
                    json!({"phase": "Running", "podIP": "10.1.0.4", "containerStatuses": [
                        {"name": "app", "ready": true, "restartCount": 0, "state": running},
                        {"name": "log", "ready": false, "restartCount": 0, "state": running},
                    ]}),
                ),
                "1/2",
                "Running",
                "0",
            ),
            (
                "crash looping with a recent restart",
                pod(
                    json!({"containers": [{"name": "app"}]}),
                    json!({"phase": "Running", "containerStatuses": [{
                        "name": "app", "ready": false, "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-03-01T11:55:00Z"}},
                    }]}),
                ),
                "0/1",
                "CrashLoopBackOff",
                "3 (5m ago)",
            ),
            (
                "image pull error",
                pod(
                    json!({"containers": [{"name": "app"}]}),
                    json!({"phase": "Pending", "containerStatuses": [{
                        "name": "app", "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "ErrImagePull"}},
                    }]}),
                ),
                "0/1",
                "ErrImagePull",
                "0",
            ),
            (
                "completed",
                pod(
                    json!({"containers": [{"name": "app"}]}),
                    json!({"phase": "Succeeded", "containerStatuses": [{
                        "name": "app", "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    }]}),
                ),
                "0/1",
                "Completed",
                "0",
            ),
            (
                "killed by a signal without a reason",
                pod(
                    json!({"containers": [{"name": "app"}]}),
                    json!({"phase": "Failed", "containerStatuses": [{
                        "name": "app", "restartCount": 0, "state": {"terminated": {"exitCode": 137, "signal": 9}},
                    }]}),
                ),
                "0/1",
                "Signal:9",
                "0",
            ),
            (
                "waiting on the first init container",
                pod(
                    json!({"initContainers": [{"name": "init"}], "containers": [{"name": "app"}]}),
                    json!({"phase": "Pending",
                        "initContainerStatuses": [{"name": "init", "restartCount": 0, "state": {"running": {}}}],
                        "containerStatuses": [{"name": "app", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}),
                ),
                "0/1",
                "Init:0/1",
                "0",
            ),
            (
                "init container crash looping",
                pod(
                    json!({"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "app"}]}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "b", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                         "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-03-01T11:59:30Z"}}},
                    ]}),
                ),
                "0/1",
                "Init:CrashLoopBackOff",
                "2 (30s ago)",
            ),
            (
                "init container failed with an exit code",
                pod(
                    json!({"initContainers": [{"name": "a"}], "containers": [{"name": "app"}]}),
                    json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 2}}},
                    ]}),
                ),
                "0/1",
                "Init:ExitCode:2",
                "0",
            ),
            (
                "sidecar counts toward READY",
                pod(
                    json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "app"}]}),
                    json!({"phase": "Running",
                        "conditions": [{"type": "Initialized", "status": "True"}],
                        "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1,
                            "state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-03-01T10:00:00Z"}}}],
                        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                ),
                "2/2",
                "Running",
                "1 (120m ago)",
            ),
            (
                "deleting",
                {
                    let mut p = pod(
                        json!({"containers": [{"name": "app"}]}),
                        json!({"phase": "Running", "containerStatuses": [
                            {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                    );
                    p["metadata"]["deletionTimestamp"] = json!("2025-03-01T11:59:00Z");
                    p
                },
                "1/1",
                "Terminating",
                "0",
            ),
            (
                "deleting on a lost node",
                {
                    let mut p = pod(
                        json!({"containers": [{"name": "app"}]}),
                        json!({"phase": "Running", "reason": "NodeLost"}),
                    );
                    p["metadata"]["deletionTimestamp"] = json!("2025-03-01T11:59:00Z");
                    p
                },
                "0/1",
                "Unknown",
                "0",
            ),
            (
                "scheduling gated",
                pod(
                    json!({"containers": [{"name": "app"}], "schedulingGates": [{"name": "g"}]}),
                    json!({"phase": "Pending", "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
                ),
                "0/1",
                "SchedulingGated",
                "0",
            ),
            (
                "evicted",
                pod(
                    json!({"containers": [{"name": "app"}]}),
                    json!({"phase": "Failed", "reason": "Evicted"}),
                ),
                "0/1",
                "Evicted",
                "0",
            ),
            (
                "one container completed, the other still running",
                pod(
                    two_containers(),
                    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
                        {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}},
                        {"name": "log", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    ]}),
                ),
                "1/2",
                "NotReady",
                "0",
            ),
        ];
        for (case, p, ready, status, restarts) in cases {
            let c = cells(&p, now());
            assert_eq!(c.len(), COLUMNS.len(), "{case}");
            assert_eq!(c[0], json!("web-1"), "{case}");
            assert_eq!(c[1], json!(ready), "{case}: READY");
            assert_eq!(c[2], json!(status), "{case}: STATUS");
            assert_eq!(c[3], json!(restarts), "{case}: RESTARTS");
            assert_eq!(c[4], json!("60m"), "{case}: AGE");
        }
    }

    #[test]
    fn wide_columns() {
        let p = pod(
            json!({"containers": [{"name": "app"}], "nodeName": "n1", "readinessGates": [
                {"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]}),
            json!({"phase": "Running", "podIPs": [{"ip": "10.1.0.9"}, {"ip": "fd00::9"}],
                "conditions": [{"type": "example.com/lb", "status": "True"}]}),
        );
        let c = cells(&p, now());
        assert_eq!(
            &c[5..],
            &[
                json!("10.1.0.9"),
                json!("n1"),
                json!("<none>"),
                json!("1/2")
            ]
        );
        let bare = pod(json!({"containers": []}), json!({}));
        let c = cells(&bare, now());
        assert_eq!(
            &c[5..],
            &[
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }
}
