//! The kubelet's Events about a pod and its containers, so `kubectl describe pod` tells what
//! the node did: image pulls, container creation and start, kills, back-offs, probe failures
//! and hook failures — with upstream's reasons (`pkg/kubelet/events`) and messages.
//!
//! A pod worker never waits for the API: [`PodEvents`] queues each Event and one task per pod
//! writes them in order through the node's shared `EventRecorder`, which folds repeats into
//! `count`. Container events name the container through `fieldPath`
//! (`spec.containers{main}`), as upstream's `GenerateContainerRef` does.

use controllers::events::{EventRecorder, EventType};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use tokio::sync::mpsc;

pub(crate) const PULLING_IMAGE: &str = "Pulling";
pub(crate) const PULLED_IMAGE: &str = "Pulled";
/// Upstream uses "Failed" for pull failures and for every container creation error.
pub(crate) const FAILED: &str = "Failed";
pub(crate) const INSPECT_FAILED: &str = "InspectFailed";
pub(crate) const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
/// Upstream uses "BackOff" for both the image pull and the crash-loop back-off.
pub(crate) const BACK_OFF: &str = "BackOff";
pub(crate) const CREATED: &str = "Created";
pub(crate) const STARTED: &str = "Started";
pub(crate) const KILLING: &str = "Killing";
pub(crate) const UNHEALTHY: &str = "Unhealthy";
pub(crate) const PROBE_WARNING: &str = "ProbeWarning";
pub(crate) const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
pub(crate) const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
pub(crate) const LIFECYCLE_HTTP_FALLBACK: &str = "LifecycleHTTPFallback";
pub(crate) const FAILED_MOUNT: &str = "FailedMount";

struct Pending {
    object: ObjectReference,
    type_: EventType,
    reason: &'static str,
    message: String,
}

/// The Event queue of one pod worker. Cloned into the tasks the worker spawns (probers,
/// container kills); the writer task ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct PodEvents {
    queue: mpsc::UnboundedSender<Pending>,
}

impl PodEvents {
    /// Starts the pod's writer task on the current runtime.
    pub fn new(recorder: EventRecorder) -> PodEvents {
        let (queue, mut pending) = mpsc::unbounded_channel::<Pending>();
        // Outside a runtime (never in the agent) the queue has no reader and Events are
        // dropped, as a failed write would be.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                while let Some(e) = pending.recv().await {
                    recorder
                        .record(&e.object, e.type_, e.reason, e.message)
                        .await;
                }
            });
        }
        PodEvents { queue }
    }

    pub fn normal(
        &self,
        object: ObjectReference,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.push(object, EventType::Normal, reason, message.into());
    }

    pub fn warning(
        &self,
        object: ObjectReference,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.push(object, EventType::Warning, reason, message.into());
    }

    fn push(
        &self,
        object: ObjectReference,
        type_: EventType,
        reason: &'static str,
        message: String,
    ) {
        let _ = self.queue.send(Pending {
            object,
            type_,
            reason,
            message,
        });
    }
}

/// The pod as an Event's involved object.
pub(crate) fn pod_reference(pod: &Pod) -> ObjectReference {
    EventRecorder::reference(pod)
}

/// A container of the pod as an Event's involved object: the pod with the container's
/// `fieldPath` (`spec.initContainers{name}` for init containers).
pub(crate) fn container_reference(pod: &Pod, container: &str) -> ObjectReference {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|list| list.iter().any(|c| c.name == container));
    let field = if init { "initContainers" } else { "containers" };
    ObjectReference {
        field_path: Some(format!("spec.{field}{{{container}}}")),
        ..pod_reference(pod)
    }
}

/// A pod as upstream's `format.Pod` writes it in messages: `name_namespace(uid)`.
pub(crate) fn format_pod(name: &str, namespace: &str, uid: &str) -> String {
    format!("{name}_{namespace}({uid})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_references_carry_the_field_path() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1", "resourceVersion": "7"},
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "main"}]},
        }))
        .expect("pod");
        let main = container_reference(&pod, "main");
        assert_eq!(main.field_path.as_deref(), Some("spec.containers{main}"));
        assert_eq!(
            (
                main.kind.as_deref(),
                main.api_version.as_deref(),
                main.name.as_deref()
            ),
            (Some("Pod"), Some("v1"), Some("web"))
        );
        assert_eq!(
            (main.uid.as_deref(), main.namespace.as_deref()),
            (Some("u-1"), Some("prod"))
        );
        assert_eq!(
            container_reference(&pod, "setup").field_path.as_deref(),
            Some("spec.initContainers{setup}")
        );
        assert_eq!(pod_reference(&pod).field_path, None);
        assert_eq!(format_pod("web", "prod", "u-1"), "web_prod(u-1)");
    }
}
