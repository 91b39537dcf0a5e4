//! The `endpoints.kubernetes.io/last-change-trigger-time` annotation (upstream
//! `TriggerTimeTracker`): when the change that an Endpoints or EndpointSlice write reflects
//! happened, so the programming latency of Services can be measured. It is the earliest of the
//! trigger times (a pod's Ready condition transition; a Service's creation) that changed since
//! the previous sync of the Service; a Service seen for the first time uses its creation time.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Service};

use super::pods::ready_condition;

/// The annotation key.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

#[derive(Default)]
struct ServiceState {
    pod_trigger_times: HashMap<String, Timestamp>,
    service_trigger_time: Option<Timestamp>,
}

/// Per-Service memory of the trigger times seen at the previous sync.
#[derive(Default)]
pub(crate) struct TriggerTimeTracker {
    services: HashMap<(String, String), ServiceState>,
}

fn pod_trigger_time(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

fn earliest(a: Option<Timestamp>, b: Timestamp) -> Option<Timestamp> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl TriggerTimeTracker {
    /// The trigger time for this sync of the Service (`None`: nothing that counts changed),
    /// remembering the current times for the next sync.
    pub(crate) fn compute(
        &mut self,
        namespace: &str,
        service: &Service,
        pods: &[std::sync::Arc<Pod>],
    ) -> Option<Timestamp> {
        let name = service.metadata.name.clone().unwrap_or_default();
        let known = self
            .services
            .contains_key(&(namespace.to_string(), name.clone()));
        let state = self
            .services
            .entry((namespace.to_string(), name))
            .or_default();
        let mut changed = None;
        let mut pod_times = HashMap::new();
        for pod in pods {
            let Some(time) = pod_trigger_time(pod) else {
                continue;
            };
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            if state
                .pod_trigger_times
                .get(&pod_name)
                .is_none_or(|last| time > *last)
            {
                changed = earliest(changed, time);
            }
            pod_times.insert(pod_name, time);
        }
        let service_time = service.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let Some(time) = service_time
            && state.service_trigger_time.is_none_or(|last| time > last)
        {
            changed = earliest(changed, time);
        }
        state.pod_trigger_times = pod_times;
        state.service_trigger_time = service_time;
        if known { changed } else { service_time }
    }

    /// Forgets a deleted Service.
    pub(crate) fn delete_service(&mut self, namespace: &str, name: &str) {
        self.services
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

/// Upstream formats the time as RFC 3339 with nanoseconds, trailing zeros trimmed, in UTC.
pub(crate) fn format(time: Timestamp) -> String {
    time.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(name: &str, transition: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": "True",
                    "lastTransitionTime": transition}]},
            }))
            .expect("pod"),
        )
    }

    #[test]
    fn first_sync_uses_creation_then_the_earliest_changed_time() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "creationTimestamp": "2025-01-01T00:00:00Z"},
        }))
        .expect("service");
        let mut tracker = TriggerTimeTracker::default();
        let a = pod("a", "2025-01-01T00:01:00Z");
        let time = tracker.compute("default", &service, std::slice::from_ref(&a));
        assert_eq!(time.map(format).as_deref(), Some("2025-01-01T00:00:00Z"));
        // Nothing changed.
        assert_eq!(
            tracker.compute("default", &service, std::slice::from_ref(&a)),
            None
        );
        // b is new, a changed later: the earliest change.
        let b = pod("b", "2025-01-01T00:02:00Z");
        let a2 = pod("a", "2025-01-01T00:03:00Z");
        let time = tracker.compute("default", &service, &[a2, b]);
        assert_eq!(time.map(format).as_deref(), Some("2025-01-01T00:02:00Z"));
        tracker.delete_service("default", "web");
        let time = tracker.compute("default", &service, &[]);
        assert_eq!(time.map(format).as_deref(), Some("2025-01-01T00:00:00Z"));
    }
}
