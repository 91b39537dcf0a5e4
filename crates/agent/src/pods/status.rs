//! Pod status from container statuses, as the kubelet computes it (pkg/kubelet/kubelet_pods.go
//! `getPhase`, pkg/kubelet/status/generate.go): the phase, the conditions, and the terminated
//! reasons. Pure.

use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// `terminated.reason` for an exit: containerd's OOMKilled on any OOM kill in the cgroup,
/// else `Completed` for 0 and `Error` otherwise (CRI `ContainerState` reasons).
pub fn terminated_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

fn exit_code(status: &ContainerStatus) -> Option<i32> {
    status
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

fn last_exit_code(status: &ContainerStatus) -> Option<i32> {
    status
        .last_state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// Whether every init container has completed successfully.
pub fn initialized(init: &[ContainerStatus], spec: &PodSpec) -> bool {
    spec.init_containers.iter().flatten().all(|c| {
        init.iter()
            .any(|s| s.name == c.name && exit_code(s) == Some(0))
    })
}

/// The pod phase (upstream `getPhase`, without sidecar init containers).
pub fn pod_phase(
    spec: &PodSpec,
    init: &[ContainerStatus],
    apps: &[ContainerStatus],
) -> &'static str {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let mut pending_init = 0;
    let mut failed_init = 0;
    for c in spec.init_containers.iter().flatten() {
        match init.iter().find(|s| s.name == c.name) {
            Some(s) if exit_code(s) == Some(0) => {}
            Some(s) if exit_code(s).is_some() => failed_init += 1,
            Some(s)
                if s.state
                    .as_ref()
                    .and_then(|st| st.waiting.as_ref())
                    .is_some()
                    && last_exit_code(s).is_some_and(|c| c != 0) =>
            {
                failed_init += 1
            }
            _ => pending_init += 1,
        }
    }
    if failed_init > 0 && policy == "Never" {
        return FAILED;
    }
    if pending_init > 0 || failed_init > 0 {
        return PENDING;
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &spec.containers {
        let Some(s) = apps.iter().find(|s| s.name == c.name) else {
            waiting += 1;
            continue;
        };
        let state = s.state.as_ref();
        if state.and_then(|st| st.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = state.and_then(|st| st.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if last_exit_code(s).is_some() {
            // Waiting to restart after having run: counts as stopped, as upstream.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        PENDING
    } else if running > 0 {
        RUNNING
    } else if stopped > 0 {
        match policy {
            "Always" => RUNNING,
            _ if stopped == succeeded => SUCCEEDED,
            "Never" => FAILED,
            _ => RUNNING,
        }
    } else {
        PENDING
    }
}

fn names(list: &[&str]) -> String {
    format!("[{}]", list.join(" "))
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: if ok { None } else { reason.map(str::to_string) },
        message: if ok { None } else { message },
        ..PodCondition::default()
    }
}

/// The pod's conditions in the kubelet's order. `previous` keeps each unchanged condition's
/// lastTransitionTime (and the scheduler's PodScheduled as it is).
pub fn pod_conditions(
    spec: &PodSpec,
    phase: &str,
    sandbox_ready: bool,
    init: &[ContainerStatus],
    apps: &[ContainerStatus],
    previous: &[PodCondition],
    now: &Time,
) -> Vec<PodCondition> {
    let completed = phase == SUCCEEDED || phase == FAILED;
    let incomplete: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| {
            !init
                .iter()
                .any(|s| s.name == c.name && exit_code(s) == Some(0))
        })
        .map(|c| c.name.as_str())
        .collect();
    let initialized = incomplete.is_empty();
    let unready: Vec<&str> = spec
        .containers
        .iter()
        .filter(|c| !apps.iter().any(|s| s.name == c.name && s.ready))
        .map(|c| c.name.as_str())
        .collect();
    let (ready_reason, ready_message) =
        if phase == SUCCEEDED && unready.len() == spec.containers.len() {
            ("PodCompleted", None)
        } else {
            (
                "ContainersNotReady",
                Some(format!(
                    "containers with unready status: {}",
                    names(&unready)
                )),
            )
        };
    let ready = unready.is_empty() && initialized;
    let mut out = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None),
        if initialized || (completed && spec.init_containers.as_ref().is_none_or(Vec::is_empty)) {
            condition("Initialized", true, None, None)
        } else {
            condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: {}",
                    names(&incomplete)
                )),
            )
        },
        condition("Ready", ready, Some(ready_reason), ready_message.clone()),
        condition("ContainersReady", ready, Some(ready_reason), ready_message),
    ];
    match previous.iter().find(|c| c.type_ == "PodScheduled") {
        Some(scheduled) => out.push(scheduled.clone()),
        None => out.push(condition("PodScheduled", true, None, None)),
    }
    for c in &mut out {
        if c.last_transition_time.is_none() {
            let kept = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .and_then(|p| p.last_transition_time.clone());
            c.last_transition_time = Some(kept.unwrap_or_else(|| now.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(policy: &str, init: &[&str], apps: &[&str]) -> PodSpec {
        serde_json::from_value(json!({
            "restartPolicy": policy,
            "initContainers": init.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
            "containers": apps.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        }))
        .expect("spec")
    }

    fn status(
        name: &str,
        state: serde_json::Value,
        last: Option<serde_json::Value>,
        ready: bool,
    ) -> ContainerStatus {
        serde_json::from_value(
            json!({"name": name, "image": "i", "imageID": "", "restartCount": 0, "ready": ready,
                                      "state": state, "lastState": last.unwrap_or(json!({}))}),
        )
        .expect("status")
    }

    fn running(name: &str) -> ContainerStatus {
        status(
            name,
            json!({"running": {"startedAt": "2024-01-01T00:00:00Z"}}),
            None,
            true,
        )
    }

    fn exited(name: &str, code: i32) -> ContainerStatus {
        status(name, json!({"terminated": {"exitCode": code}}), None, false)
    }

    #[test]
    fn phases_follow_get_phase() {
        let s = spec("Never", &[], &["a"]);
        assert_eq!(pod_phase(&s, &[], &[]), PENDING);
        assert_eq!(pod_phase(&s, &[], &[running("a")]), RUNNING);
        assert_eq!(pod_phase(&s, &[], &[exited("a", 3)]), FAILED);
        assert_eq!(pod_phase(&s, &[], &[exited("a", 0)]), SUCCEEDED);
        let s = spec("Always", &[], &["a"]);
        assert_eq!(pod_phase(&s, &[], &[exited("a", 0)]), RUNNING);
        let s = spec("OnFailure", &[], &["a", "b"]);
        assert_eq!(
            pod_phase(&s, &[], &[exited("a", 0), exited("b", 0)]),
            SUCCEEDED
        );
        let crash_looping = status(
            "b",
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            Some(json!({"terminated": {"exitCode": 1}})),
            false,
        );
        assert_eq!(
            pod_phase(&s, &[], &[exited("a", 0), crash_looping.clone()]),
            RUNNING
        );
        let s = spec("Never", &["i"], &["a"]);
        assert_eq!(pod_phase(&s, &[running("i")], &[]), PENDING);
        assert_eq!(pod_phase(&s, &[exited("i", 1)], &[]), FAILED);
        let s = spec("Always", &["i"], &["a"]);
        assert_eq!(pod_phase(&s, &[exited("i", 1)], &[]), PENDING);
        assert_eq!(pod_phase(&s, &[exited("i", 0)], &[running("a")]), RUNNING);
    }

    #[test]
    fn conditions_name_unready_containers_and_keep_times() {
        let s = spec("Always", &["i"], &["a", "b"]);
        let t0 = Time(jiff::Timestamp::from_second(1_700_000_000).expect("ts"));
        let t1 = Time(jiff::Timestamp::from_second(1_700_000_100).expect("ts"));
        let first = pod_conditions(&s, PENDING, true, &[running("i")], &[], &[], &t0);
        let kinds: Vec<&str> = first.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        assert_eq!(
            first[1].message.as_deref(),
            Some("containers with incomplete status: [i]")
        );
        assert_eq!(
            first[2].message.as_deref(),
            Some("containers with unready status: [a b]")
        );
        let later = pod_conditions(
            &s,
            RUNNING,
            true,
            &[exited("i", 0)],
            &[running("a"), running("b")],
            &first,
            &t1,
        );
        assert!(later.iter().all(|c| c.status == "True"), "{later:?}");
        assert_eq!(
            later[0].last_transition_time,
            Some(t0.clone()),
            "unchanged keeps its time"
        );
        assert_eq!(later[2].last_transition_time, Some(t1));
        assert_eq!(terminated_reason(0, false), "Completed");
        assert_eq!(terminated_reason(3, false), "Error");
        assert_eq!(terminated_reason(137, true), "OOMKilled");
    }
}
