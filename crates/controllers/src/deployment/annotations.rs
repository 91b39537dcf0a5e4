//! The annotations a Deployment and its ReplicaSets carry (upstream deploymentutil):
//!
//! * `deployment.kubernetes.io/revision` on each ReplicaSet (and the Deployment's current one
//!   on the Deployment), what `kubectl rollout history` lists; a rolled-back-to ReplicaSet gets
//!   a new revision and remembers its earlier ones in `…/revision-history`;
//! * `…/desired-replicas` and `…/max-replicas`: the Deployment's size (and size plus surge)
//!   when the ReplicaSet was last scaled, from which a later resize of the Deployment is shared
//!   out proportionally;
//! * the Deployment's own annotations (e.g. `kubernetes.io/change-cause`), copied to its new
//!   ReplicaSet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tracing::info;

use super::fenceposts::{desired_replicas, max_surge};

/// The label (and selector requirement) that keeps each ReplicaSet's pods apart
/// (upstream `DefaultDeploymentUniqueLabelKey`).
pub(crate) const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
pub(crate) const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub(crate) const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub(crate) const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED_CONFIGURATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// extensions/v1beta1's rollback request; never copied.
const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";

/// Upstream's `maxRevHistoryLengthInChars`.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Upstream `annotationsToSkip`: annotations of the Deployment never copied to a ReplicaSet
/// (the revision ones are the controller's own bookkeeping).
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED_CONFIGURATION
            | REVISION
            | REVISION_HISTORY
            | DESIRED_REPLICAS
            | MAX_REPLICAS
            | DEPRECATED_ROLLBACK_TO
    )
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Upstream `Revision`: 0 when unset, an error when not a number.
pub(crate) fn revision(meta: &ObjectMeta) -> Result<i64, std::num::ParseIntError> {
    match annotation(meta, REVISION) {
        None => Ok(0),
        Some(v) => v.parse(),
    }
}

/// Upstream `MaxRevision`: the highest revision among `metas`, skipping unparsable ones.
pub(crate) fn max_revision<'a>(metas: impl IntoIterator<Item = &'a ObjectMeta>) -> i64 {
    metas
        .into_iter()
        .filter_map(|meta| match revision(meta) {
            Ok(r) => Some(r),
            Err(e) => {
                info!(replica_set = ?meta.name, error = %e, "couldn't parse the revision of a ReplicaSet");
                None
            }
        })
        .max()
        .unwrap_or(0)
}

/// Upstream `getIntFromAnnotation`: absent or malformed is `None`.
fn int_annotation(meta: &ObjectMeta, key: &str) -> Option<i32> {
    annotation(meta, key)?.parse().ok()
}

pub(crate) fn desired_replicas_annotation(meta: &ObjectMeta) -> Option<i32> {
    int_annotation(meta, DESIRED_REPLICAS)
}

pub(crate) fn max_replicas(meta: &ObjectMeta) -> Option<i32> {
    int_annotation(meta, MAX_REPLICAS)
}

/// Upstream `SetReplicasAnnotations`: whether anything changed.
pub(crate) fn set_replicas_annotations(meta: &mut ObjectMeta, desired: i32, max: i32) -> bool {
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    let mut updated = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            updated = true;
        }
    }
    updated
}

/// Upstream `ReplicasAnnotationsNeedUpdate`.
pub(crate) fn replicas_annotations_need_update(meta: &ObjectMeta, desired: i32, max: i32) -> bool {
    annotation(meta, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || annotation(meta, MAX_REPLICAS) != Some(max.to_string().as_str())
}

/// Upstream `copyDeploymentAnnotationsToReplicaSet`: every annotation of the Deployment but the
/// skipped ones; whether anything changed. The revision is not copied: the ReplicaSet's is
/// the reliable one (the Deployment's is updated from it, and that update may have failed).
fn copy_deployment_annotations(d: &Deployment, meta: &mut ObjectMeta) -> bool {
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in d.metadata.annotations.iter().flatten() {
        if skip_copy(key) || annotations.get(key) == Some(value) {
            continue;
        }
        annotations.insert(key.clone(), value.clone());
        changed = true;
    }
    changed
}

/// Upstream `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises the
/// revision to `new_revision` (recording the one it had in `revision-history` when this is a
/// rollback to an existing ReplicaSet), and for a ReplicaSet about to be created
/// (`exists == false`) sets the replicas annotations. Whether anything changed.
pub(crate) fn set_new_replica_set_annotations(
    d: &Deployment,
    meta: &mut ObjectMeta,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_deployment_annotations(d, meta);
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    let old_revision = annotations.get(REVISION).cloned();
    let old_revision_number = match old_revision.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            Err(e) => {
                info!(replica_set = ?meta.name, error = %e, "not updating the revision of a ReplicaSet with a malformed one");
                return false;
            }
        },
    };
    if old_revision_number < new_revision {
        annotations.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        // A ReplicaSet that had a revision and gets a newer one is being rolled back to:
        // keep its earlier revisions for history.
        if let Some(old_revision) = old_revision {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            if history.is_empty() {
                annotations.insert(REVISION_HISTORY.to_string(), old_revision);
            } else {
                let mut revisions: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old_revision.len() + 1;
                // Drop the oldest entries until the list fits the length limit.
                let mut start = 0;
                while total > MAX_REVISION_HISTORY_CHARS && start < revisions.len() {
                    total -= revisions[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REVISION_HISTORY_CHARS {
                    revisions.drain(..start);
                    revisions.push(&old_revision);
                    annotations.insert(REVISION_HISTORY.to_string(), revisions.join(","));
                } else {
                    info!(replica_set = ?meta.name, "not appending to the revision history: length limit reached");
                }
            }
        }
    }
    if !exists {
        let desired = desired_replicas(d);
        if set_replicas_annotations(meta, desired, desired.saturating_add(max_surge(d))) {
            changed = true;
        }
    }
    changed
}

/// Upstream `SetDeploymentRevision`: whether the Deployment's revision annotation changed.
pub(crate) fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let annotations = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if annotations.get(REVISION).map(String::as_str) == Some(revision) {
        return false;
    }
    annotations.insert(REVISION.to_string(), revision.to_string());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(annotations: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": annotations},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}}}},
        }))
        .expect("deployment")
    }

    #[test]
    fn a_new_replica_set_gets_revision_replicas_and_the_deployments_annotations() {
        let d = deployment(json!({
            "kubernetes.io/change-cause": "kubectl set image",
            (REVISION): "7",
            (LAST_APPLIED_CONFIGURATION): "{}",
        }));
        let mut meta = ObjectMeta::default();
        assert!(set_new_replica_set_annotations(&d, &mut meta, 3, false));
        let annotations = meta.annotations.expect("annotations");
        assert_eq!(
            annotations["kubernetes.io/change-cause"],
            "kubectl set image"
        );
        assert_eq!(annotations[REVISION], "3");
        assert_eq!(annotations[DESIRED_REPLICAS], "4");
        assert_eq!(annotations[MAX_REPLICAS], "5");
        assert!(!annotations.contains_key(LAST_APPLIED_CONFIGURATION));
        assert!(!annotations.contains_key(REVISION_HISTORY));
    }

    #[test]
    fn a_rollback_keeps_the_old_revisions() {
        let d = deployment(json!({}));
        let mut meta = ObjectMeta {
            annotations: Some([(REVISION.to_string(), "1".to_string())].into()),
            ..ObjectMeta::default()
        };
        assert!(set_new_replica_set_annotations(&d, &mut meta, 3, true));
        assert!(set_new_replica_set_annotations(&d, &mut meta, 5, true));
        let annotations = meta.annotations.expect("annotations");
        assert_eq!(annotations[REVISION], "5");
        assert_eq!(annotations[REVISION_HISTORY], "1,3");
        // An existing ReplicaSet's replicas annotations are left to the scaling code.
        assert!(!annotations.contains_key(DESIRED_REPLICAS));
    }

    #[test]
    fn nothing_changes_when_the_revision_is_current() {
        let d = deployment(json!({}));
        let mut meta = ObjectMeta {
            annotations: Some([(REVISION.to_string(), "4".to_string())].into()),
            ..ObjectMeta::default()
        };
        assert!(!set_new_replica_set_annotations(&d, &mut meta, 3, true));
        assert!(!set_new_replica_set_annotations(&d, &mut meta, 4, true));
    }

    #[test]
    fn max_revision_skips_malformed() {
        let metas: Vec<ObjectMeta> = ["2", "x", "9"]
            .into_iter()
            .map(|r| ObjectMeta {
                annotations: Some([(REVISION.to_string(), r.to_string())].into()),
                ..ObjectMeta::default()
            })
            .collect();
        assert_eq!(max_revision(&metas), 9);
        assert_eq!(max_revision(&[]), 0);
    }
}
