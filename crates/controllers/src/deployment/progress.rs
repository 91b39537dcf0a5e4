//! The Deployment's status (upstream `sync.go` `calculateStatus`/`syncRolloutStatus` and
//! `progress.go`): counts summed over its ReplicaSets, and the conditions `kubectl rollout
//! status` and `kubectl describe` read.
//!
//! * `Available`: True (MinimumReplicasAvailable) while at least `replicas - maxUnavailable`
//!   pods are available.
//! * `Progressing`: NewReplicaSetCreated / FoundNewReplicaSet when the rollout starts,
//!   ReplicaSetUpdated each time it makes progress (only `lastUpdateTime` moves),
//!   NewReplicaSetAvailable when complete, ProgressDeadlineExceeded (False) when no progress
//!   was seen for `progressDeadlineSeconds`, and Unknown DeploymentPaused/DeploymentResumed.
//! * `ReplicaFailure`: copied from a ReplicaSet that cannot create or delete pods.
//!
//! Everything here is pure; the time is passed in.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::fenceposts::{desired_replicas, max_unavailable};
use super::replica_sets::{
    total_actual, total_available, total_ready, total_spec, total_terminating,
};

pub(crate) const AVAILABLE: &str = "Available";
pub(crate) const PROGRESSING: &str = "Progressing";
pub(crate) const REPLICA_FAILURE: &str = "ReplicaFailure";

pub(crate) const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub(crate) const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub(crate) const NEW_REPLICA_SET_CREATED: &str = "NewReplicaSetCreated";
pub(crate) const FOUND_NEW_REPLICA_SET: &str = "FoundNewReplicaSet";
pub(crate) const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
pub(crate) const NEW_REPLICA_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
pub(crate) const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
pub(crate) const FAILED_REPLICA_SET_CREATE: &str = "ReplicaSetCreateError";
pub(crate) const DEPLOYMENT_PAUSED: &str = "DeploymentPaused";
pub(crate) const DEPLOYMENT_RESUMED: &str = "DeploymentResumed";

/// A condition time: the API keeps seconds, so a condition made now compares equal to itself
/// after a round trip.
pub(crate) fn condition_time(now: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Upstream `NewDeploymentCondition`: both times now.
pub(crate) fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    let time = condition_time(now);
    DeploymentCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(time.clone()),
        last_transition_time: Some(time),
    }
}

pub(crate) fn get_condition<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Upstream `SetDeploymentCondition`: nothing happens if a condition of the type already has
/// the same status and reason; otherwise it replaces the old one (keeping its
/// lastTransitionTime when the status did not change) and goes last.
pub(crate) fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(Some(status), &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &condition.type_);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

/// Upstream `RemoveDeploymentCondition`.
pub(crate) fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

/// Upstream `HasProgressDeadline`: set and not MaxInt32 (which means "no deadline").
pub(crate) fn has_progress_deadline(d: &Deployment) -> bool {
    progress_deadline(d).is_some()
}

fn progress_deadline(d: &Deployment) -> Option<Duration> {
    let seconds = d.spec.as_ref()?.progress_deadline_seconds?;
    if seconds == i32::MAX {
        return None;
    }
    Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

fn count(n: Option<i32>) -> i32 {
    n.unwrap_or(0)
}

fn generation(d: &Deployment) -> i64 {
    d.metadata.generation.unwrap_or(0)
}

/// The counts as upstream's omitempty fields leave them: zero is absent. Both the computed
/// status and the stored one are compared in this form.
pub(crate) fn normalized(status: &DeploymentStatus) -> DeploymentStatus {
    let nonzero = |n: Option<i32>| n.filter(|n| *n != 0);
    DeploymentStatus {
        observed_generation: status.observed_generation.filter(|g| *g != 0),
        replicas: nonzero(status.replicas),
        updated_replicas: nonzero(status.updated_replicas),
        ready_replicas: nonzero(status.ready_replicas),
        available_replicas: nonzero(status.available_replicas),
        unavailable_replicas: nonzero(status.unavailable_replicas),
        terminating_replicas: status.terminating_replicas,
        collision_count: status.collision_count,
        conditions: status.conditions.clone().filter(|c| !c.is_empty()),
    }
}

/// Upstream `calculateStatus`: the counts over `all`, `updatedReplicas` from the new
/// ReplicaSet, the conditions carried over, and `Available` set from the availability.
pub(crate) fn calculate_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let available = total_available(all.iter().copied());
    // Negative when scaling down with more available pods than wanted: none are unavailable.
    let unavailable = total_spec(all.iter().copied())
        .saturating_sub(available)
        .max(0);
    let mut status = DeploymentStatus {
        observed_generation: Some(generation(d)),
        replicas: Some(total_actual(all.iter().copied())),
        updated_replicas: Some(total_actual(new_rs)),
        ready_replicas: Some(total_ready(all.iter().copied())),
        available_replicas: Some(available),
        unavailable_replicas: Some(unavailable),
        terminating_replicas: total_terminating(all.iter().copied()),
        collision_count: d.status.as_ref().and_then(|s| s.collision_count),
        conditions: d.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    let condition = if available >= desired_replicas(d).saturating_sub(max_unavailable(d)) {
        new_condition(
            AVAILABLE,
            "True",
            MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.".to_string(),
            now,
        )
    } else {
        new_condition(
            AVAILABLE,
            "False",
            MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.".to_string(),
            now,
        )
    };
    set_condition(&mut status, condition);
    normalized(&status)
}

/// Upstream `DeploymentComplete`: every replica updated and available, none old, and the
/// current generation observed.
pub(crate) fn deployment_complete(d: &Deployment, status: Option<&DeploymentStatus>) -> bool {
    let Some(status) = status else {
        return false;
    };
    let desired = desired_replicas(d);
    count(status.updated_replicas) == desired
        && count(status.replicas) == desired
        && count(status.available_replicas) == desired
        && status.observed_generation.unwrap_or(0) >= generation(d)
}

/// Upstream `DeploymentProgressing`: more updated, ready or available pods than the stored
/// status says, or fewer old ones.
pub(crate) fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old_replicas = count(old.replicas) - count(old.updated_replicas);
    let new_old_replicas = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old_replicas < old_old_replicas
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

/// Upstream `DeploymentTimedOut`: the Progressing condition was last updated longer than the
/// deadline ago (already timed out stays timed out; complete never times out).
pub(crate) fn deployment_timed_out(
    d: &Deployment,
    new: &DeploymentStatus,
    now: jiff::Timestamp,
) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(condition) = get_condition(Some(new), PROGRESSING) else {
        return false;
    };
    match condition.reason.as_deref() {
        Some(NEW_REPLICA_SET_AVAILABLE) => false,
        Some(PROGRESS_DEADLINE_EXCEEDED) => true,
        _ => {
            let Some(from) = condition.last_update_time.as_ref() else {
                return false;
            };
            let deadline =
                jiff::SignedDuration::try_from(deadline).unwrap_or(jiff::SignedDuration::MAX);
            from.0.checked_add(deadline).is_ok_and(|end| end < now)
        }
    }
}

/// `"ReplicaSet \"web-abc\" …"` or, without a new ReplicaSet, `"Deployment \"web\" …"`.
fn subject(d: &Deployment, new_rs: Option<&ReplicaSet>) -> String {
    match new_rs.and_then(|rs| rs.metadata.name.as_deref()) {
        Some(name) => format!("ReplicaSet {name:?}"),
        None => format!(
            "Deployment {:?}",
            d.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// Upstream `getReplicaFailures`: the new ReplicaSet's ReplicaFailure condition, else the
/// first old one's, as a Deployment condition.
fn replica_failure(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Option<DeploymentCondition> {
    let failure_of = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == REPLICA_FAILURE)
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    new_rs
        .and_then(failure_of)
        .or_else(|| all.iter().find_map(|rs| failure_of(rs)))
}

/// The pure part of upstream `syncRolloutStatus`: the status to write.
pub(crate) fn rollout_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let mut status = calculate_status(all, new_rs, d, now);
    if !has_progress_deadline(d) {
        remove_condition(&mut status, PROGRESSING);
    }
    let current = get_condition(d.status.as_ref(), PROGRESSING);
    // A resync of a finished rollout estimates no progress.
    let is_complete = status.replicas == status.updated_replicas
        && current.is_some_and(|c| c.reason.as_deref() == Some(NEW_REPLICA_SET_AVAILABLE));
    if has_progress_deadline(d) && !is_complete {
        let subject = subject(d, new_rs);
        if deployment_complete(d, Some(&status)) {
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_REPLICA_SET_AVAILABLE,
                    format!("{subject} has successfully progressed."),
                    now,
                ),
            );
        } else if deployment_progressing(d, &status) {
            let mut condition = new_condition(
                PROGRESSING,
                "True",
                REPLICA_SET_UPDATED,
                format!("{subject} is progressing."),
                now,
            );
            // Unlike other conditions, progress with the same reason still moves
            // lastUpdateTime (that is what the deadline is measured from); only
            // lastTransitionTime stays while the status stays True.
            if let Some(current) = current {
                if current.status == "True" {
                    condition.last_transition_time = current.last_transition_time.clone();
                }
                remove_condition(&mut status, PROGRESSING);
            }
            set_condition(&mut status, condition);
        } else if deployment_timed_out(d, &status, now) {
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "False",
                    PROGRESS_DEADLINE_EXCEEDED,
                    format!("{subject} has timed out progressing."),
                    now,
                ),
            );
        }
    }
    match replica_failure(all, new_rs) {
        Some(failure) => set_condition(&mut status, failure),
        None => remove_condition(&mut status, REPLICA_FAILURE),
    }
    normalized(&status)
}

/// Upstream `requeueStuckDeployment`: when a rollout in progress shows no change, when to look
/// again so the deadline is noticed without waiting for an event — the condition's
/// lastUpdateTime plus the deadline, plus a second against clock skew. `None` when there is
/// nothing to wait for (no deadline, complete, or already timed out).
pub(crate) fn requeue_stuck_after(
    d: &Deployment,
    new: &DeploymentStatus,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let current = get_condition(d.status.as_ref(), PROGRESSING)?;
    if deployment_complete(d, Some(new))
        || current.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)
    {
        return None;
    }
    let updated = current.last_update_time.as_ref()?.0;
    let elapsed = now.duration_since(updated);
    let remaining = jiff::SignedDuration::try_from(deadline)
        .unwrap_or(jiff::SignedDuration::MAX)
        .saturating_sub(elapsed);
    // Upstream requeues at once (rate limited) when under a second remains; waiting that
    // second is as good and cannot spin.
    let remaining = Duration::try_from(remaining).unwrap_or(Duration::ZERO);
    Some(remaining + Duration::from_secs(1))
}

/// `(changed, status)` for upstream `checkPausedConditions`: Unknown DeploymentPaused while
/// paused, Unknown DeploymentResumed once resumed — unless the rollout already timed out,
/// which is not overwritten.
pub(crate) fn paused_condition(d: &Deployment, now: jiff::Timestamp) -> Option<DeploymentStatus> {
    if !has_progress_deadline(d) {
        return None;
    }
    let current = get_condition(d.status.as_ref(), PROGRESSING);
    if current.is_some_and(|c| c.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)) {
        return None;
    }
    let paused_condition_exists =
        current.is_some_and(|c| c.reason.as_deref() == Some(DEPLOYMENT_PAUSED));
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let condition = if paused && !paused_condition_exists {
        new_condition(
            PROGRESSING,
            "Unknown",
            DEPLOYMENT_PAUSED,
            "Deployment is paused".to_string(),
            now,
        )
    } else if !paused && paused_condition_exists {
        new_condition(
            PROGRESSING,
            "Unknown",
            DEPLOYMENT_RESUMED,
            "Deployment is resumed".to_string(),
            now,
        )
    } else {
        return None;
    };
    let mut status = d.status.clone().unwrap_or_default();
    set_condition(&mut status, condition);
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": replicas, "progressDeadlineSeconds": 10,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": status,
        }))
        .expect("deployment")
    }

    fn rs(name: &str, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": replicas, "readyReplicas": available,
                "availableReplicas": available},
        }))
        .expect("rs")
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_complete_rollout_is_available_and_progressed() {
        let d = deployment(
            3,
            json!({"conditions": [{"type": "Progressing", "status": "True",
            "reason": "ReplicaSetUpdated", "lastUpdateTime": "2024-01-01T00:00:00Z",
            "lastTransitionTime": "2024-01-01T00:00:00Z"}]}),
        );
        let new = rs("web-abc", 3, 3);
        let status = rollout_status(&[&new], Some(&new), &d, at("2024-01-01T00:00:05Z"));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.updated_replicas, Some(3));
        assert_eq!(status.unavailable_replicas, None);
        let available = get_condition(Some(&status), AVAILABLE).expect("available");
        assert_eq!(
            available.reason.as_deref(),
            Some(MINIMUM_REPLICAS_AVAILABLE)
        );
        let progressing = get_condition(Some(&status), PROGRESSING).expect("progressing");
        assert_eq!(
            progressing.reason.as_deref(),
            Some(NEW_REPLICA_SET_AVAILABLE)
        );
        assert_eq!(
            progressing.message.as_deref(),
            Some("ReplicaSet \"web-abc\" has successfully progressed.")
        );
        // Same status → lastTransitionTime kept.
        assert_eq!(
            progressing.last_transition_time,
            Some(condition_time(at("2024-01-01T00:00:00Z")))
        );
    }

    #[test]
    fn progress_moves_last_update_time_only() {
        let d = deployment(
            3,
            json!({"replicas": 3, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "True",
            "reason": "ReplicaSetUpdated", "lastUpdateTime": "2024-01-01T00:00:00Z",
            "lastTransitionTime": "2024-01-01T00:00:00Z"}]}),
        );
        let old = rs("web-old", 1, 1);
        let new = rs("web-new", 2, 2);
        let now = at("2024-01-01T00:00:07Z");
        let status = rollout_status(&[&old, &new], Some(&new), &d, now);
        let progressing = get_condition(Some(&status), PROGRESSING).expect("progressing");
        assert_eq!(progressing.reason.as_deref(), Some(REPLICA_SET_UPDATED));
        assert_eq!(progressing.last_update_time, Some(condition_time(now)));
        assert_eq!(
            progressing.last_transition_time,
            Some(condition_time(at("2024-01-01T00:00:00Z")))
        );
    }

    #[test]
    fn no_progress_past_the_deadline_times_out() {
        let stored = json!({"replicas": 4, "updatedReplicas": 1, "readyReplicas": 3,
            "availableReplicas": 3,
            "conditions": [{"type": "Progressing", "status": "True",
            "reason": "ReplicaSetUpdated", "lastUpdateTime": "2024-01-01T00:00:00Z",
            "lastTransitionTime": "2024-01-01T00:00:00Z"}]});
        let d = deployment(3, stored);
        let old = rs("web-old", 3, 3);
        let new = rs("web-new", 1, 0);
        let early = at("2024-01-01T00:00:05Z");
        let status = rollout_status(&[&old, &new], Some(&new), &d, early);
        assert_eq!(
            get_condition(Some(&status), PROGRESSING).and_then(|c| c.reason.as_deref()),
            Some(REPLICA_SET_UPDATED)
        );
        assert_eq!(
            requeue_stuck_after(&d, &status, early),
            Some(Duration::from_secs(6))
        );
        let late = at("2024-01-01T00:00:11Z");
        let status = rollout_status(&[&old, &new], Some(&new), &d, late);
        let progressing = get_condition(Some(&status), PROGRESSING).expect("progressing");
        assert_eq!(progressing.status, "False");
        assert_eq!(
            progressing.reason.as_deref(),
            Some(PROGRESS_DEADLINE_EXCEEDED)
        );
        assert_eq!(
            progressing.message.as_deref(),
            Some("ReplicaSet \"web-new\" has timed out progressing.")
        );
    }

    #[test]
    fn too_few_available_is_minimum_replicas_unavailable() {
        let d = deployment(3, json!({}));
        let new = rs("web-new", 3, 1);
        let status = calculate_status(&[&new], Some(&new), &d, at("2024-01-01T00:00:00Z"));
        assert_eq!(status.unavailable_replicas, Some(2));
        let available = get_condition(Some(&status), AVAILABLE).expect("available");
        assert_eq!(available.status, "False");
        assert_eq!(
            available.reason.as_deref(),
            Some(MINIMUM_REPLICAS_UNAVAILABLE)
        );
    }

    #[test]
    fn pausing_and_resuming_set_unknown_progressing() {
        let mut d = deployment(3, json!({}));
        let now = at("2024-01-01T00:00:00Z");
        if let Some(spec) = d.spec.as_mut() {
            spec.paused = Some(true);
        }
        let status = paused_condition(&d, now).expect("paused");
        let c = get_condition(Some(&status), PROGRESSING).expect("progressing");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("Unknown", Some(DEPLOYMENT_PAUSED))
        );
        d.status = Some(status);
        assert!(paused_condition(&d, now).is_none());
        if let Some(spec) = d.spec.as_mut() {
            spec.paused = Some(false);
        }
        let status = paused_condition(&d, now).expect("resumed");
        let c = get_condition(Some(&status), PROGRESSING).expect("progressing");
        assert_eq!(c.reason.as_deref(), Some(DEPLOYMENT_RESUMED));
    }
}
