//! One sync of one owner from current state (upstream `syncReplicaSet`):
//!
//! 1. the owner's active pods: matching pods it controls, plus matching orphans it adopts
//!    (`claim_pods`, upstream `PodControllerRefManager.ClaimPods`), minus controlled pods
//!    whose labels stopped matching, which it releases;
//! 2. if every earlier creation and deletion has been seen through the watch and the owner is
//!    not being deleted: create the missing pods in slow-start batches, or delete the surplus
//!    in `active_pods` order (`manage_replicas`), at most [`BURST_REPLICAS`] per sync;
//! 3. the status, written only when it changed; a failed create or delete shows as the
//!    `ReplicaFailure` condition until a sync manages replicas without error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::active_pods::{
    available_at, is_pod_active, is_pod_available, is_pod_ready, pods_to_delete,
};
use super::expectations::Satisfied;
use super::{
    ReplicaOwner, ReplicaSetController, ReplicaSetError, SLOW_START_INITIAL_BATCH_SIZE,
    controller_ref, labels_of, object_key,
};

#[cfg(doc)]
use super::BURST_REPLICAS;

/// The condition type a failed create or delete sets (upstream `ReplicaSetReplicaFailure`).
pub(crate) const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Upstream adds a second to the minReadySeconds wait so that millisecond skew cannot make
/// the re-check land just before the pod becomes available.
const AVAILABILITY_SKEW: Duration = Duration::from_secs(1);

/// The message of an API error as the server wrote it (what upstream's `err.Error()` shows).
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.is_not_found())
}

/// Upstream ignores creates refused because the namespace is terminating: every later one
/// would fail too, and the namespace controller is about to delete the owner.
fn is_namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

/// What a failed sync step shows in the `ReplicaFailure` condition's message.
fn failure_message(error: &ReplicaSetError) -> String {
    match error {
        ReplicaSetError::CreatePod { source, .. } | ReplicaSetError::DeletePod { source, .. } => {
            api_message(source)
        }
        ReplicaSetError::NoLabels { .. } => "unable to create pods, no labels".to_string(),
        other => other.to_string(),
    }
}

/// Upstream `slowStartBatch`: calls `f` `count` times in batches of 1, 2, 4 … run
/// concurrently, stopping after the first batch with an error, so that a create that fails
/// (quota, admission) fails once instead of `count` times. Returns the successes and the
/// first error.
pub(crate) async fn slow_start_batch<E, F, Fut>(
    count: usize,
    initial_batch_size: usize,
    f: F,
) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial_batch_size);
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| f())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => successes += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
        remaining -= batch;
        batch = batch.saturating_mul(2).min(remaining);
    }
    (successes, None)
}

/// Upstream `controller.GetPodFromTemplate` / `getPodsPrefix`: a pod named
/// `<owner>-<random>` with the template's labels, annotations, finalizers and spec, controlled
/// by the owner.
pub(crate) fn pod_from_template<K: ReplicaOwner>(owner: &K) -> Result<Pod, ReplicaSetError> {
    let meta = owner.meta();
    let name = meta.name.clone().unwrap_or_default();
    let template = owner.template().cloned().unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let labels = template_meta.labels.filter(|l| !l.is_empty());
    if labels.is_none() {
        return Err(ReplicaSetError::NoLabels {
            kind: kind_name::<K>(),
            owner: object_key(meta),
        });
    }
    // `<name>-` unless that is too long to be a valid name prefix (253 characters); the
    // server shortens the base of generated names as needed.
    let generate_name = if name.len() < 253 {
        format!("{name}-")
    } else {
        name.clone()
    };
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: meta.namespace.clone(),
            labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![controller_reference(owner)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    })
}

/// Upstream `metav1.NewControllerRef`.
fn controller_reference<K: ReplicaOwner>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn kind_name<K: ReplicaOwner>() -> &'static str {
    // Both kinds have static names; `Resource::kind` returns a borrowed Cow for them.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "owner",
    }
}

/// Upstream `calculateStatus`: counts over the claimed active pods, and the
/// `ReplicaFailure` condition set on a failed create/delete (kept, not re-stamped, while it
/// persists) and removed after a sync without one.
pub(crate) fn calculate_status<K: ReplicaOwner>(
    owner: &K,
    pods: &[Arc<Pod>],
    manage_error: Option<&ReplicaSetError>,
    now: jiff::Timestamp,
) -> ReplicaSetStatus {
    let mut status = owner.replica_status();
    let template_labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready_seconds = owner.min_ready_seconds();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for pod in pods {
        let labels = labels_of(pod);
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            fully_labeled += 1;
        }
        if is_pod_ready(pod) {
            ready += 1;
            if is_pod_available(pod, min_ready_seconds, now) {
                available += 1;
            }
        }
    }
    let has_failure = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == REPLICA_FAILURE);
    match manage_error {
        Some(error) if !has_failure => {
            let diff = pods.len() as i64 - i64::from(owner.desired_replicas());
            let reason = match diff {
                d if d < 0 => "FailedCreate",
                d if d > 0 => "FailedDelete",
                _ => "",
            };
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(ReplicaSetCondition {
                    type_: REPLICA_FAILURE.to_string(),
                    status: "True".to_string(),
                    reason: Some(reason.to_string()).filter(|r| !r.is_empty()),
                    message: Some(failure_message(error)),
                    last_transition_time: Some(Time(now)),
                });
        }
        None if has_failure => {
            if let Some(conditions) = status.conditions.as_mut() {
                conditions.retain(|c| c.type_ != REPLICA_FAILURE);
            }
            if status.conditions.as_ref().is_some_and(Vec::is_empty) {
                status.conditions = None;
            }
        }
        _ => {}
    }
    status.replicas = pods.len() as i32;
    status.fully_labeled_replicas = Some(fully_labeled).filter(|n| *n != 0);
    status.ready_replicas = Some(ready).filter(|n| *n != 0);
    status.available_replicas = Some(available).filter(|n| *n != 0);
    status
}

/// Upstream `updateReplicaSetStatus`'s "nothing changed" test: same counts, conditions, and
/// the current generation already observed.
fn status_unchanged<K: ReplicaOwner>(owner: &K, new: &ReplicaSetStatus) -> bool {
    let current = owner.replica_status();
    let generation = owner.meta().generation.unwrap_or(0);
    let count = |n: Option<i32>| n.unwrap_or(0);
    current.replicas == new.replicas
        && count(current.fully_labeled_replicas) == count(new.fully_labeled_replicas)
        && count(current.ready_replicas) == count(new.ready_replicas)
        && count(current.available_replicas) == count(new.available_replicas)
        && current.observed_generation.unwrap_or(0) == generation
        && current.conditions.unwrap_or_default() == new.conditions.clone().unwrap_or_default()
}

/// The merge patch that makes the status `status`: zero counts and empty lists are removed
/// (`null`), as upstream's omitempty fields leave them out.
fn status_patch(status: &ReplicaSetStatus, generation: i64) -> Value {
    let omit_zero = |n: Option<i32>| n.filter(|n| *n != 0).map_or(Value::Null, Value::from);
    json!({
        "status": {
            "replicas": status.replicas,
            "fullyLabeledReplicas": omit_zero(status.fully_labeled_replicas),
            "readyReplicas": omit_zero(status.ready_replicas),
            "availableReplicas": omit_zero(status.available_replicas),
            "observedGeneration": if generation == 0 { Value::Null } else { Value::from(generation) },
            "conditions": match &status.conditions {
                Some(c) if !c.is_empty() => serde_json::to_value(c).unwrap_or(Value::Null),
                _ => Value::Null,
            },
        }
    })
}

impl<K: ReplicaOwner> ReplicaSetController<K> {
    fn owners_api(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn pods_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Upstream `syncReplicaSet`.
    pub(super) async fn sync(&self, owner: &K) -> Result<Action, ReplicaSetError> {
        self.pods.wait_synced().await;
        let meta = owner.meta();
        let key = object_key(meta);
        let namespace = meta.namespace.clone().unwrap_or_default();
        let satisfied = self.expectations.satisfied(&key);
        let selector = match owner.selector() {
            Ok(selector) => selector,
            Err(e) => {
                // Upstream logs and drops the key: only a spec change can fix the selector.
                warn!(kind = kind_name::<K>(), owner = %key, error = %e, "invalid selector; not syncing");
                return Ok(Action::await_change());
            }
        };
        let active: Vec<Arc<Pod>> = self
            .pods
            .list(&namespace)
            .into_iter()
            .filter(|p| is_pod_active(p))
            .collect();
        let claimed = self.claim_pods(owner, &selector, active).await?;

        let manage_error = if satisfied == Satisfied::Yes && meta.deletion_timestamp.is_none() {
            self.manage_replicas(owner, &claimed).await.err()
        } else {
            None
        };

        let now = jiff::Timestamp::now();
        let status = calculate_status(owner, &claimed, manage_error.as_ref(), now);
        if !status_unchanged(owner, &status) {
            let generation = meta.generation.unwrap_or(0);
            let patch = status_patch(&status, generation);
            match self
                .owners_api(&namespace)
                .patch_status(
                    meta.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                // Deleted meanwhile: its pods belong to the garbage collector now.
                Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
                Err(source) => {
                    return Err(ReplicaSetError::UpdateStatus {
                        kind: kind_name::<K>(),
                        owner: key,
                        source,
                    });
                }
            }
        }
        if let Some(error) = manage_error {
            return Err(error);
        }
        self.forget_failures(&key);
        Ok(self.next_sync(owner, &claimed, satisfied, now))
    }

    /// When to look again without a watch event: when the next ready pod turns available
    /// (upstream requeues after minReadySeconds), or when outstanding expectations expire.
    fn next_sync(
        &self,
        owner: &K,
        pods: &[Arc<Pod>],
        satisfied: Satisfied,
        now: jiff::Timestamp,
    ) -> Action {
        let min_ready_seconds = owner.min_ready_seconds();
        let mut next: Option<Duration> = match satisfied {
            Satisfied::No { expires_in } => Some(expires_in),
            Satisfied::Yes => None,
        };
        if min_ready_seconds > 0 {
            for pod in pods {
                if !is_pod_ready(pod) || is_pod_available(pod, min_ready_seconds, now) {
                    continue;
                }
                let wait = available_at(pod, min_ready_seconds)
                    .map(|at| at.duration_since(now))
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or_default()
                    + AVAILABILITY_SKEW;
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        match next {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        }
    }

    /// Upstream `ClaimPods`: the pods this owner controls and still selects, adopting
    /// matching orphans and releasing controlled pods that no longer match. A deleting owner
    /// neither adopts nor releases.
    async fn claim_pods(
        &self,
        owner: &K,
        selector: &api::selectors::LabelSelector,
        pods: Vec<Arc<Pod>>,
    ) -> Result<Vec<Arc<Pod>>, ReplicaSetError> {
        let meta = owner.meta();
        let owner_uid = meta.uid.as_deref().unwrap_or_default();
        let owner_deleting = meta.deletion_timestamp.is_some();
        let mut claimed = Vec::new();
        let mut errors: Vec<ReplicaSetError> = Vec::new();
        // Upstream checks once, lazily, with a live read that the owner is still the same
        // object and not being deleted before the first adoption.
        let mut may_adopt: Option<bool> = None;
        for pod in pods {
            let matches = selector.matches(labels_of(&pod));
            match controller_ref(&pod.metadata) {
                Some(reference) if reference.uid != owner_uid => {}
                Some(_) if matches => claimed.push(pod),
                Some(_) if owner_deleting => {}
                Some(_) => {
                    if let Err(e) = self.release(owner, &pod).await {
                        errors.push(e);
                    }
                }
                None => {
                    if owner_deleting || !matches || pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if may_adopt.is_none() {
                        let check = self.recheck_deletion(owner).await;
                        may_adopt = Some(check.is_ok());
                        if let Err(e) = check {
                            errors.push(e);
                        }
                    }
                    if may_adopt != Some(true) {
                        continue;
                    }
                    match self.adopt(owner, &pod).await {
                        Ok(Some(adopted)) => claimed.push(Arc::new(adopted)),
                        Ok(None) => {}
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
        let failed = errors.len();
        match errors.into_iter().next() {
            None => Ok(claimed),
            Some(first) => Err(ReplicaSetError::ClaimPods {
                kind: kind_name::<K>(),
                owner: object_key(meta),
                failed,
                first: Box::new(first),
            }),
        }
    }

    /// Upstream `RecheckDeletionTimestamp`: a live read of the owner.
    async fn recheck_deletion(&self, owner: &K) -> Result<(), ReplicaSetError> {
        let meta = owner.meta();
        let key = object_key(meta);
        let fresh = self
            .owners_api(meta.namespace.as_deref().unwrap_or_default())
            .get(meta.name.as_deref().unwrap_or_default())
            .await
            .map_err(|source| ReplicaSetError::RecheckOwner {
                kind: kind_name::<K>(),
                owner: key.clone(),
                source,
            })?;
        if fresh.meta().uid != meta.uid {
            return Err(ReplicaSetError::OwnerReplaced {
                kind: kind_name::<K>(),
                owner: key,
                got: fresh.meta().uid.clone().unwrap_or_default(),
                wanted: meta.uid.clone().unwrap_or_default(),
            });
        }
        if let Some(at) = &fresh.meta().deletion_timestamp {
            return Err(ReplicaSetError::OwnerDeleted {
                owner: key,
                at: at.0.to_string(),
            });
        }
        Ok(())
    }

    /// Adds the owner as controller with a strategic merge patch on `ownerReferences` (merged
    /// by uid), carrying the pod's uid so a recreated pod of the same name is not adopted.
    /// `None` when the pod is gone.
    async fn adopt(&self, owner: &K, pod: &Pod) -> Result<Option<Pod>, ReplicaSetError> {
        let patch = json!({
            "metadata": {
                "ownerReferences": [controller_reference(owner)],
                "uid": pod.metadata.uid,
            }
        });
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match self
            .pods_api(pod.metadata.namespace.as_deref().unwrap_or_default())
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(adopted) => {
                debug!(kind = kind_name::<K>(), owner = %object_key(owner.meta()), pod = name, "adopted pod");
                Ok(Some(adopted))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(ReplicaSetError::AdoptPod {
                kind: kind_name::<K>(),
                owner: object_key(owner.meta()),
                pod: name.to_string(),
                source,
            }),
        }
    }

    /// Removes the owner's reference (`$patch: delete` by uid). A pod that is gone, or was
    /// recreated under the same name (the uid precondition fails as Invalid), needs nothing.
    async fn release(&self, owner: &K, pod: &Pod) -> Result<(), ReplicaSetError> {
        let patch = json!({
            "metadata": {
                "ownerReferences": [{"$patch": "delete", "uid": owner.meta().uid}],
                "uid": pod.metadata.uid,
            }
        });
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match self
            .pods_api(pod.metadata.namespace.as_deref().unwrap_or_default())
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                debug!(kind = kind_name::<K>(), owner = %object_key(owner.meta()), pod = name, "released pod");
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 422 => Ok(()),
            Err(source) => Err(ReplicaSetError::ReleasePod {
                kind: kind_name::<K>(),
                owner: object_key(owner.meta()),
                pod: name.to_string(),
                source,
            }),
        }
    }

    /// Upstream `manageReplicas`.
    async fn manage_replicas(&self, owner: &K, pods: &[Arc<Pod>]) -> Result<(), ReplicaSetError> {
        let key = object_key(owner.meta());
        let desired = owner.desired_replicas().max(0) as usize;
        if pods.len() < desired {
            let diff = (desired - pods.len()).min(self.burst_replicas);
            // Set before creating: the ADDED events may arrive before the creates return.
            self.expectations.expect_creations(&key, diff);
            debug!(kind = kind_name::<K>(), owner = %key, need = desired, have = pods.len(), creating = diff, "too few replicas");
            let (successes, error) = slow_start_batch(diff, SLOW_START_INITIAL_BATCH_SIZE, || {
                self.create_pod(owner)
            })
            .await;
            // The pods never created will never be observed.
            for _ in successes..diff {
                self.expectations.creation_observed(&key);
            }
            return error.map_or(Ok(()), Err);
        }
        if pods.len() > desired {
            let diff = (pods.len() - desired).min(self.burst_replicas);
            let related = self.indirectly_related_pods(owner);
            let doomed = pods_to_delete(pods, &related, diff, jiff::Timestamp::now());
            self.expectations
                .expect_deletions(&key, doomed.iter().map(|p| object_key(&p.metadata)));
            debug!(kind = kind_name::<K>(), owner = %key, need = desired, have = pods.len(), deleting = diff, "too many replicas");
            let results =
                futures::future::join_all(doomed.iter().map(|pod| self.delete_pod(owner, pod)))
                    .await;
            let mut first_error = None;
            for (pod, result) in doomed.iter().zip(results) {
                if let Err(error) = result {
                    // Not deleted, so never observed as deleted.
                    self.expectations
                        .deletion_observed(&key, &object_key(&pod.metadata));
                    let not_found = matches!(&error, ReplicaSetError::DeletePod { source, .. } if is_not_found(source));
                    if !not_found {
                        first_error.get_or_insert(error);
                    }
                }
            }
            return first_error.map_or(Ok(()), Err);
        }
        Ok(())
    }

    /// Upstream `getIndirectlyRelatedPods`: the pods selected by this owner and by every
    /// owner of the same kind with the same controller (a Deployment's ReplicaSets), so a
    /// scale-down prefers nodes the whole family crowds. An owner without a controller has
    /// no related pods.
    fn indirectly_related_pods(&self, owner: &K) -> Vec<Arc<Pod>> {
        let Some(reference) = controller_ref(owner.meta()) else {
            return Vec::new();
        };
        let namespace = owner.meta().namespace.as_deref();
        let siblings: Vec<_> = self
            .owners
            .state()
            .into_iter()
            .filter(|o| o.meta().namespace.as_deref() == namespace)
            .filter(|o| controller_ref(o.meta()).is_some_and(|r| r.uid == reference.uid))
            .filter_map(|o| o.selector().ok())
            .collect();
        self.pods
            .list(namespace.unwrap_or_default())
            .into_iter()
            .filter(|p| siblings.iter().any(|s| s.matches(labels_of(p))))
            .collect()
    }

    /// Upstream `RealPodControl.CreatePods` with its Events.
    async fn create_pod(&self, owner: &K) -> Result<(), ReplicaSetError> {
        let pod = pod_from_template(owner)?;
        let namespace = owner.meta().namespace.clone().unwrap_or_default();
        let reference = crate::events::EventRecorder::reference(owner);
        match self
            .pods_api(&namespace)
            .create(&PostParams::default(), &pod)
            .await
        {
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                debug!(kind = kind_name::<K>(), owner = %object_key(owner.meta()), pod = %name, "created pod");
                self.recorder
                    .normal(
                        &reference,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    )
                    .await;
                Ok(())
            }
            Err(source) => {
                self.recorder
                    .warning(
                        &reference,
                        "FailedCreate",
                        format!("Error creating: {}", api_message(&source)),
                    )
                    .await;
                if is_namespace_terminating(&source) {
                    return Ok(());
                }
                Err(ReplicaSetError::CreatePod {
                    kind: kind_name::<K>(),
                    owner: object_key(owner.meta()),
                    source,
                })
            }
        }
    }

    /// Upstream `RealPodControl.DeletePod` with its Events (none for a pod already gone).
    async fn delete_pod(&self, owner: &K, pod: &Pod) -> Result<(), ReplicaSetError> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let reference = crate::events::EventRecorder::reference(owner);
        match self
            .pods_api(pod.metadata.namespace.as_deref().unwrap_or_default())
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                self.recorder
                    .normal(
                        &reference,
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                    )
                    .await;
                Ok(())
            }
            Err(source) => {
                if !is_not_found(&source) {
                    self.recorder
                        .warning(
                            &reference,
                            "FailedDelete",
                            format!("Error deleting: {}", api_message(&source)),
                        )
                        .await;
                }
                Err(ReplicaSetError::DeletePod {
                    kind: kind_name::<K>(),
                    owner: object_key(owner.meta()),
                    pod: name.to_string(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, PodTemplateSpec};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn replica_set(replicas: i32, min_ready_seconds: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("rs-uid".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready_seconds),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[("app", "web"), ("tier", "front")])),
                        annotations: Some(labels(&[("note", "x")])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        node_name: Some("n1".into()),
                        ..PodSpec::default()
                    }),
                }),
                ..ReplicaSetSpec::default()
            }),
            status: None,
        }
    }

    fn pod(pod_labels: &[(&str, &str)], ready_since: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                labels: Some(labels(pod_labels)),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: ready_since.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(t.parse().expect("time"))),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        })
    }

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_on_the_first_failing_batch() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<(), ()>(())
        })
        .await;
        assert_eq!((ok, err, calls.load(Ordering::SeqCst)), (10, None, 10));

        // Batches 1, 2, 4: the 5th call (in the batch of 4) fails; the batch finishes and
        // nothing after it runs.
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(20, 1, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n == 4 { Err(n) } else { Ok(()) }
        })
        .await;
        assert_eq!((ok, err, calls.load(Ordering::SeqCst)), (6, Some(4), 7));

        let (ok, err) = slow_start_batch(0, 1, || async { Err::<(), ()>(()) }).await;
        assert_eq!((ok, err), (0, None));
    }

    #[test]
    fn pods_come_from_the_template_with_a_controller_reference() {
        let pod = pod_from_template(&replica_set(1, 0)).expect("pod");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(
            pod.metadata.labels,
            Some(labels(&[("app", "web"), ("tier", "front")]))
        );
        assert_eq!(pod.metadata.annotations, Some(labels(&[("note", "x")])));
        let refs = pod.metadata.owner_references.expect("owner refs");
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (
                refs[0].api_version.as_str(),
                refs[0].kind.as_str(),
                refs[0].name.as_str(),
                refs[0].uid.as_str()
            ),
            ("apps/v1", "ReplicaSet", "web", "rs-uid")
        );
        assert_eq!(
            (refs[0].controller, refs[0].block_owner_deletion),
            (Some(true), Some(true))
        );
        assert_eq!(pod.spec.and_then(|s| s.node_name).as_deref(), Some("n1"));

        let mut unlabeled = replica_set(1, 0);
        if let Some(t) = unlabeled.spec.as_mut().and_then(|s| s.template.as_mut()) {
            t.metadata = None;
        }
        assert!(matches!(
            pod_from_template(&unlabeled),
            Err(ReplicaSetError::NoLabels { .. })
        ));
    }

    #[test]
    fn status_counts_labeled_ready_and_available_pods() {
        let now: jiff::Timestamp = "2024-01-01T00:01:00Z".parse().expect("now");
        let pods = vec![
            pod(
                &[("app", "web"), ("tier", "front")],
                Some("2024-01-01T00:00:00Z"),
            ),
            pod(
                &[("app", "web"), ("tier", "front")],
                Some("2024-01-01T00:00:55Z"),
            ),
            pod(&[("app", "web")], None),
        ];
        let status = calculate_status(&replica_set(3, 10), &pods, None, now);
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.conditions, None);
    }

    #[test]
    fn replica_failure_is_set_once_and_cleared_after_success() {
        let now: jiff::Timestamp = "2024-01-01T00:00:00Z".parse().expect("now");
        let error = ReplicaSetError::NoLabels {
            kind: "ReplicaSet",
            owner: "default/web".into(),
        };
        let mut rs = replica_set(2, 0);
        let failed = calculate_status(&rs, &[], Some(&error), now);
        let conditions = failed.conditions.clone().expect("conditions");
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, REPLICA_FAILURE);
        assert_eq!(conditions[0].reason.as_deref(), Some("FailedCreate"));
        assert_eq!(
            conditions[0].message.as_deref(),
            Some("unable to create pods, no labels")
        );

        rs.status = Some(failed);
        let later: jiff::Timestamp = "2024-01-01T00:05:00Z".parse().expect("later");
        let again = calculate_status(&rs, &[], Some(&error), later);
        assert_eq!(again.conditions, Some(conditions), "kept, not re-stamped");

        rs.status = Some(again);
        let healed = calculate_status(&rs, &[], None, later);
        assert_eq!(healed.conditions, None);
    }

    #[test]
    fn status_is_written_only_when_it_changed() {
        let now: jiff::Timestamp = "2024-01-01T00:00:00Z".parse().expect("now");
        let mut rs = replica_set(1, 0);
        let pods = vec![pod(&[("app", "web"), ("tier", "front")], None)];
        let status = calculate_status(&rs, &pods, None, now);
        assert!(!status_unchanged(&rs, &status));
        rs.status = Some(ReplicaSetStatus {
            observed_generation: Some(3),
            ..status.clone()
        });
        assert!(status_unchanged(&rs, &status));
        rs.metadata.generation = Some(4);
        assert!(
            !status_unchanged(&rs, &status),
            "a new generation must be observed"
        );
    }

    #[test]
    fn status_patch_removes_zero_counts() {
        let status = ReplicaSetStatus {
            replicas: 0,
            ready_replicas: Some(0),
            available_replicas: Some(2),
            ..ReplicaSetStatus::default()
        };
        let patch = status_patch(&status, 7);
        assert_eq!(
            patch,
            json!({"status": {
                "replicas": 0,
                "fullyLabeledReplicas": null,
                "readyReplicas": null,
                "availableReplicas": 2,
                "observedGeneration": 7,
                "conditions": null,
            }})
        );
    }
}
