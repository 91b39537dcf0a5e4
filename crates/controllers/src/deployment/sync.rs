//! One sync of one Deployment from current state (upstream `syncDeployment` and `sync.go`):
//!
//! 1. claim its ReplicaSets (`claim`);
//! 2. a deleting Deployment only gets its status refreshed;
//! 3. the paused condition is kept current; a paused Deployment, or one whose `replicas`
//!    changed while ReplicaSets still carry the old size in `desired-replicas` (a scaling
//!    event), is only scaled ([`DeploymentController::scale`], proportionally across the
//!    ReplicaSets of an unfinished rollout);
//! 4. otherwise the strategy rolls it out (`rolling`, `recreate`).
//!
//! Every write returns the stored object, which replaces the copy the sync works on, so later
//! writes in the same sync never conflict with earlier ones; a write against a stale cache
//! fails with 409 Conflict and the sync is retried from fresh state.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use tracing::debug;

use api::selectors::{self, LabelSelector};

use super::annotations::{
    POD_TEMPLATE_HASH, REVISION, desired_replicas_annotation, max_revision,
    replicas_annotations_need_update, set_deployment_revision, set_new_replica_set_annotations,
    set_replicas_annotations,
};
use super::fenceposts::{desired_replicas, is_rolling_update, max_surge, strategy_type};
use super::pod_template_hash::compute_hash;
use super::progress::{
    self, FAILED_REPLICA_SET_CREATE, FOUND_NEW_REPLICA_SET, NEW_REPLICA_SET_CREATED, PROGRESSING,
    calculate_status, get_condition, has_progress_deadline, new_condition, normalized,
    set_condition,
};
use super::replica_sets::{
    actual_replicas, by_revision, by_size_newer, by_size_older, equal_ignore_hash,
    find_active_or_latest, find_new, find_old, is_active, is_saturated, new_rs_new_replicas,
    proportion, spec_replicas, total_spec,
};
use super::{
    DeploymentController, DeploymentError, api_message, controller_ref, is_not_found, object_key,
};

/// The Deployment's ReplicaSets split as upstream's `getAllReplicaSetsAndSyncRevision` returns
/// them: the new one (template equal to the Deployment's) and all the others.
#[derive(Debug, Clone, Default)]
pub(crate) struct Family {
    pub(crate) new: Option<ReplicaSet>,
    pub(crate) old: Vec<ReplicaSet>,
}

impl Family {
    /// Old ones first, then the new one (upstream `append(oldRSs, newRS)`).
    pub(crate) fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new.as_ref()).collect()
    }

    /// Puts a ReplicaSet this sync just wrote in place of its earlier copy.
    pub(crate) fn replace(&mut self, updated: ReplicaSet) {
        let uid = updated.metadata.uid.clone();
        if let Some(new) = self.new.as_mut().filter(|n| n.metadata.uid == uid) {
            *new = updated;
        } else if let Some(old) = self.old.iter_mut().find(|o| o.metadata.uid == uid) {
            *old = updated;
        }
    }
}

/// The Deployment's `spec.selector` as a selector (upstream `LabelSelectorAsSelector`).
pub(crate) fn selector_of(d: &Deployment) -> Result<LabelSelector, selectors::SelectorError> {
    let json = d
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.selector).unwrap_or_default())
        .unwrap_or_default();
    selectors::from_label_selector_json(&json)
}

fn selects_everything(d: &Deployment) -> bool {
    d.spec.as_ref().is_none_or(|s| {
        s.selector
            .match_labels
            .as_ref()
            .is_none_or(BTreeMap::is_empty)
            && s.selector
                .match_expressions
                .as_ref()
                .is_none_or(Vec::is_empty)
    })
}

fn name_of(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// Upstream `metav1.NewControllerRef`.
fn controller_reference(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".to_string(),
        kind: "Deployment".to_string(),
        name: name_of(&d.metadata),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn is_already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Upstream does nothing more when a create is refused because the namespace is terminating.
fn is_namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

impl DeploymentController {
    fn deployments_api(&self, d: &Deployment) -> Api<Deployment> {
        Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    pub(super) fn replica_sets_api(&self, namespace: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Upstream `syncDeployment`: the requeue the progress deadline asks for, if any.
    pub(super) async fn sync_deployment(
        &self,
        cached: &Deployment,
    ) -> Result<Option<Duration>, DeploymentError> {
        let mut d = cached.clone();
        let key = object_key(&d.metadata);
        if selects_everything(&d) {
            self.recorder
                .warning(
                    &crate::events::EventRecorder::reference(&d),
                    "SelectingAll",
                    "This deployment is selecting all pods. A non-empty selector is required.",
                )
                .await;
            let observed = d.status.as_ref().and_then(|s| s.observed_generation);
            if observed.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
                let mut status = d.status.clone().unwrap_or_default();
                status.observed_generation = d.metadata.generation;
                d.status = Some(status);
                self.write_status(&mut d).await?;
            }
            return Ok(None);
        }
        let selector = selector_of(&d).map_err(|source| DeploymentError::InvalidSelector {
            deployment: key.clone(),
            source,
        })?;
        let mut rs_list = self.claim_replica_sets(&d, &selector).await?;

        if d.metadata.deletion_timestamp.is_some() {
            let family = self
                .all_replica_sets_and_sync_revision(&mut d, &mut rs_list, false)
                .await?;
            self.sync_deployment_status(&family, &mut d).await?;
            return Ok(None);
        }

        // Upstream `checkPausedConditions`.
        if let Some(status) = progress::paused_condition(&d, jiff::Timestamp::now()) {
            d.status = Some(status);
            self.write_status(&mut d).await?;
        }
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.sync(&mut d, &mut rs_list).await?;
            return Ok(None);
        }
        if self.is_scaling_event(&mut d, &mut rs_list).await? {
            self.sync(&mut d, &mut rs_list).await?;
            return Ok(None);
        }
        match strategy_type(&d) {
            "Recreate" => self.rollout_recreate(&mut d, &mut rs_list, &selector).await,
            "RollingUpdate" => self.rollout_rolling(&mut d, &mut rs_list).await,
            other => Err(DeploymentError::UnknownStrategy {
                deployment: key,
                strategy: other.to_string(),
            }),
        }
    }

    /// Upstream `sync`: scale (no rollout), clean up old ReplicaSets when paused, and write
    /// the status.
    async fn sync(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<(), DeploymentError> {
        let mut family = self
            .all_replica_sets_and_sync_revision(d, rs_list, false)
            .await?;
        self.scale(d, &mut family).await?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup_deployment(&family.old, d).await?;
        }
        self.sync_deployment_status(&family, d).await
    }

    /// Upstream `isScalingEvent`: an active ReplicaSet was last sized for another
    /// `spec.replicas` than the Deployment has now.
    async fn is_scaling_event(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<bool, DeploymentError> {
        let family = self
            .all_replica_sets_and_sync_revision(d, rs_list, false)
            .await?;
        let desired = desired_replicas(d);
        Ok(family
            .all()
            .into_iter()
            .filter(|rs| is_active(rs))
            .any(|rs| desired_replicas_annotation(&rs.metadata).is_some_and(|v| v != desired)))
    }

    /// Upstream `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet (created if `create`
    /// and missing) with its revision synced, and the old ones. A ReplicaSet this writes is
    /// updated in `rs_list` too.
    pub(super) async fn all_replica_sets_and_sync_revision(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Family, DeploymentError> {
        let old = find_old(d, rs_list);
        let new = self.new_replica_set(d, rs_list, &old, create).await?;
        if let Some(new) = &new {
            match rs_list
                .iter_mut()
                .find(|rs| rs.metadata.uid == new.metadata.uid)
            {
                Some(slot) => *slot = new.clone(),
                None => rs_list.push(new.clone()),
            }
        }
        Ok(Family { new, old })
    }

    /// Upstream `getNewReplicaSet`: the existing new ReplicaSet with its annotations and
    /// minReadySeconds synced (and the Deployment's revision from it), or a new one.
    async fn new_replica_set(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, DeploymentError> {
        let now = jiff::Timestamp::now();
        let new_revision = max_revision(old.iter().map(|rs| &rs.metadata)).saturating_add(1);
        let min_ready_seconds = d.spec.as_ref().and_then(|s| s.min_ready_seconds);

        if let Some(existing) = find_new(d, rs_list) {
            let mut copy = existing.clone();
            let annotations_updated =
                set_new_replica_set_annotations(d, &mut copy.metadata, new_revision, true);
            let rs_min_ready = copy.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if annotations_updated || rs_min_ready.unwrap_or(0) != min_ready_seconds.unwrap_or(0) {
                if let Some(spec) = copy.spec.as_mut() {
                    spec.min_ready_seconds = min_ready_seconds;
                }
                // As upstream, the Deployment's revision follows on the sync this update
                // triggers.
                return self.update_replica_set(d, &copy).await.map(Some);
            }
            let revision = copy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
                .unwrap_or_default();
            let annotation_changed = set_deployment_revision(d, &revision);
            // A Deployment that never had a Progressing condition gets one from the moment
            // its new ReplicaSet was noticed, so the deadline has a start.
            let mut status_changed = false;
            if has_progress_deadline(d) && get_condition(d.status.as_ref(), PROGRESSING).is_none() {
                let mut status = d.status.clone().unwrap_or_default();
                set_condition(
                    &mut status,
                    new_condition(
                        PROGRESSING,
                        "True",
                        FOUND_NEW_REPLICA_SET,
                        format!("Found new replica set {:?}", name_of(&copy.metadata)),
                        now,
                    ),
                );
                d.status = Some(status);
                status_changed = true;
            }
            self.write_deployment(d, annotation_changed, status_changed)
                .await?;
            return Ok(Some(copy));
        }
        if !create {
            return Ok(None);
        }

        let key = object_key(&d.metadata);
        let Some(spec) = d.spec.clone() else {
            return Ok(None);
        };
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        template_meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.to_string(), hash.clone());
        let labels = template_meta.labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.to_string(), hash.clone());
        let name = format!("{}-{hash}", name_of(&d.metadata));
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: d.metadata.namespace.clone(),
                owner_references: Some(vec![controller_reference(d)]),
                labels,
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().chain([&new_rs]).collect();
        let replicas = new_rs_new_replicas(d, &all, &new_rs).map_err(|source| {
            DeploymentError::InvalidFencepost {
                deployment: key.clone(),
                source,
            }
        })?;
        if let Some(spec) = new_rs.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        set_new_replica_set_annotations(d, &mut new_rs.metadata, new_revision, false);

        let namespace = d.metadata.namespace.clone().unwrap_or_default();
        let api = self.replica_sets_api(&namespace);
        let (created, already_existed) = match api.create(&PostParams::default(), &new_rs).await {
            Ok(created) => (created, false),
            // A slow cache or a fast resync: the ReplicaSet may be ours already.
            Err(e) if is_already_exists(&e) => {
                let existing =
                    api.get(&name)
                        .await
                        .map_err(|source| DeploymentError::GetReplicaSet {
                            deployment: key.clone(),
                            replica_set: name.clone(),
                            source,
                        })?;
                let ours = controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same_template = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(&spec.template, t));
                if !(ours && same_template) {
                    // A hash collision: the next sync tries the name the raised count gives.
                    let mut status = d.status.clone().unwrap_or_default();
                    let count = status.collision_count.unwrap_or(0).saturating_add(1);
                    status.collision_count = Some(count);
                    d.status = Some(status);
                    self.write_status(d).await?;
                    debug!(deployment = %key, collision_count = count, "hash collision; bumped collisionCount");
                    return Err(DeploymentError::HashCollision {
                        deployment: key,
                        replica_set: name,
                        collision_count: count,
                    });
                }
                (existing, true)
            }
            Err(e) if is_namespace_terminating(&e) => {
                return Err(DeploymentError::CreateReplicaSet {
                    deployment: key,
                    replica_set: name,
                    source: e,
                });
            }
            Err(e) => {
                let message = format!(
                    "Failed to create new replica set {name:?}: {}",
                    api_message(&e)
                );
                if has_progress_deadline(d) {
                    let mut status = d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition(
                            PROGRESSING,
                            "False",
                            FAILED_REPLICA_SET_CREATE,
                            message.clone(),
                            now,
                        ),
                    );
                    d.status = Some(status);
                    // The create failure is the error worth reporting.
                    let _ = self.write_status(d).await;
                }
                self.recorder
                    .warning(
                        &crate::events::EventRecorder::reference(d),
                        FAILED_REPLICA_SET_CREATE,
                        message,
                    )
                    .await;
                return Err(DeploymentError::CreateReplicaSet {
                    deployment: key,
                    replica_set: name,
                    source: e,
                });
            }
        };
        if !already_existed && replicas > 0 {
            self.recorder
                .normal(
                    &crate::events::EventRecorder::reference(d),
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {name} from 0 to {replicas}"),
                )
                .await;
        }
        let annotation_changed = set_deployment_revision(d, &new_revision.to_string());
        let mut status_changed = false;
        if !already_existed && has_progress_deadline(d) {
            let mut status = d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_REPLICA_SET_CREATED,
                    format!("Created new replica set {name:?}"),
                    now,
                ),
            );
            d.status = Some(status);
            status_changed = true;
        }
        self.write_deployment(d, annotation_changed, status_changed)
            .await?;
        Ok(Some(created))
    }

    /// Upstream `scale`: brings the ReplicaSets to the Deployment's size without rolling out.
    /// One active ReplicaSet (or none) takes the whole size; a saturated new ReplicaSet
    /// leaves the old ones at 0; mid-RollingUpdate the difference to `replicas + maxSurge` is
    /// shared in proportion to each ReplicaSet's size, the rounding leftover going to the
    /// largest.
    pub(super) async fn scale(
        &self,
        d: &Deployment,
        family: &mut Family,
    ) -> Result<(), DeploymentError> {
        let desired = desired_replicas(d);
        if let Some(target) = find_active_or_latest(family.new.as_ref(), &family.old) {
            if spec_replicas(target) == desired {
                return Ok(());
            }
            let target = target.clone();
            if let (_, Some(updated)) = self
                .scale_replica_set_and_record_event(&target, desired, d)
                .await?
            {
                family.replace(updated);
            }
            return Ok(());
        }
        if is_saturated(d, family.new.as_ref()) {
            let active_old: Vec<ReplicaSet> = family
                .old
                .iter()
                .filter(|rs| is_active(rs))
                .cloned()
                .collect();
            for old in active_old {
                if let (_, Some(updated)) =
                    self.scale_replica_set_and_record_event(&old, 0, d).await?
                {
                    family.replace(updated);
                }
            }
            return Ok(());
        }
        if !is_rolling_update(d) {
            return Ok(());
        }
        let mut active: Vec<ReplicaSet> = family
            .all()
            .into_iter()
            .filter(|rs| is_active(rs))
            .cloned()
            .collect();
        let current = total_spec(&active);
        let allowed = if desired > 0 {
            desired.saturating_add(max_surge(d))
        } else {
            0
        };
        let to_add = allowed.saturating_sub(current);
        let operation = match to_add {
            n if n > 0 => {
                active.sort_by(by_size_newer);
                "up"
            }
            n if n < 0 => {
                active.sort_by(by_size_older);
                "down"
            }
            _ => "",
        };
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(active.len());
        for rs in &active {
            if to_add != 0 {
                let share = proportion(d, rs, to_add, added);
                sizes.push(spec_replicas(rs).saturating_add(share));
                added = added.saturating_add(share);
            } else {
                sizes.push(spec_replicas(rs));
            }
        }
        if to_add != 0
            && let Some(largest) = sizes.first_mut()
        {
            *largest = largest.saturating_add(to_add - added).max(0);
        }
        for (rs, size) in active.iter().zip(sizes) {
            if let (_, Some(updated)) = self.scale_replica_set(rs, size, d, operation).await? {
                family.replace(updated);
            }
        }
        Ok(())
    }

    /// Upstream `scaleReplicaSetAndRecordEvent`: `(scaled, updated)`.
    pub(super) async fn scale_replica_set_and_record_event(
        &self,
        rs: &ReplicaSet,
        new_scale: i32,
        d: &Deployment,
    ) -> Result<(bool, Option<ReplicaSet>), DeploymentError> {
        if spec_replicas(rs) == new_scale {
            return Ok((false, None));
        }
        let operation = if spec_replicas(rs) < new_scale {
            "up"
        } else {
            "down"
        };
        self.scale_replica_set(rs, new_scale, d, operation).await
    }

    /// Upstream `scaleReplicaSet`: writes the size and the replicas annotations if either
    /// changed; a size change is recorded as a `ScalingReplicaSet` event on the Deployment.
    async fn scale_replica_set(
        &self,
        rs: &ReplicaSet,
        new_scale: i32,
        d: &Deployment,
        operation: &str,
    ) -> Result<(bool, Option<ReplicaSet>), DeploymentError> {
        let old_scale = spec_replicas(rs);
        let desired = desired_replicas(d);
        let max = desired.saturating_add(max_surge(d));
        let size_changed = old_scale != new_scale;
        if !size_changed && !replicas_annotations_need_update(&rs.metadata, desired, max) {
            return Ok((false, None));
        }
        let mut copy = rs.clone();
        if let Some(spec) = copy.spec.as_mut() {
            spec.replicas = Some(new_scale);
        }
        set_replicas_annotations(&mut copy.metadata, desired, max);
        let updated = self.update_replica_set(d, &copy).await?;
        if size_changed {
            self.recorder
                .normal(
                    &crate::events::EventRecorder::reference(d),
                    "ScalingReplicaSet",
                    format!(
                        "Scaled {operation} replica set {} from {old_scale} to {new_scale}",
                        name_of(&rs.metadata)
                    ),
                )
                .await;
        }
        Ok((size_changed, Some(updated)))
    }

    async fn update_replica_set(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
    ) -> Result<ReplicaSet, DeploymentError> {
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        self.replica_sets_api(&namespace)
            .replace(&name_of(&rs.metadata), &PostParams::default(), rs)
            .await
            .map_err(|source| DeploymentError::UpdateReplicaSet {
                deployment: object_key(&d.metadata),
                replica_set: name_of(&rs.metadata),
                source,
            })
    }

    /// Upstream `cleanupDeployment`: deletes the oldest revisions beyond
    /// `revisionHistoryLimit`, but never one that still has (or is meant to have) pods, or
    /// whose status has not caught up with its spec.
    pub(super) async fn cleanup_deployment(
        &self,
        old: &[ReplicaSet],
        d: &Deployment,
    ) -> Result<(), DeploymentError> {
        let Some(limit) = d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .filter(|l| *l != i32::MAX)
        else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| by_revision(a, b));
        for rs in cleanable
            .into_iter()
            .take(usize::try_from(excess).unwrap_or(0))
        {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if actual_replicas(rs) != 0
                || spec_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let name = name_of(&rs.metadata);
            debug!(deployment = %object_key(&d.metadata), replica_set = %name, "deleting old ReplicaSet");
            let namespace = rs.metadata.namespace.clone().unwrap_or_default();
            match self
                .replica_sets_api(&namespace)
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(DeploymentError::DeleteReplicaSet {
                        deployment: object_key(&d.metadata),
                        replica_set: name,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Upstream `syncDeploymentStatus`: counts and Available only (no progress estimate).
    pub(super) async fn sync_deployment_status(
        &self,
        family: &Family,
        d: &mut Deployment,
    ) -> Result<(), DeploymentError> {
        let status = calculate_status(
            &family.all(),
            family.new.as_ref(),
            d,
            jiff::Timestamp::now(),
        );
        if normalized(&d.status.clone().unwrap_or_default()) == status {
            return Ok(());
        }
        d.status = Some(status);
        self.write_status(d).await
    }

    /// Upstream `syncRolloutStatus`: the status with the progress estimate; when nothing
    /// changed, the requeue that will notice the deadline.
    pub(super) async fn sync_rollout_status(
        &self,
        family: &Family,
        d: &mut Deployment,
    ) -> Result<Option<Duration>, DeploymentError> {
        let now = jiff::Timestamp::now();
        let status = progress::rollout_status(&family.all(), family.new.as_ref(), d, now);
        if normalized(&d.status.clone().unwrap_or_default()) == status {
            return Ok(progress::requeue_stuck_after(d, &status, now));
        }
        d.status = Some(status);
        self.write_status(d).await?;
        Ok(None)
    }

    /// Writes `d.status` through `/status` (checked against the resourceVersion the sync
    /// read) and keeps the stored result.
    pub(super) async fn write_status(&self, d: &mut Deployment) -> Result<(), DeploymentError> {
        let name = name_of(&d.metadata);
        *d = self
            .deployments_api(d)
            .replace_status(&name, &PostParams::default(), d)
            .await
            .map_err(|source| DeploymentError::UpdateStatus {
                deployment: object_key(&d.metadata),
                source,
            })?;
        Ok(())
    }

    /// Writes what the sync changed on the Deployment. Upstream writes the revision
    /// annotation with the status in one `UpdateStatus` (its status strategy keeps
    /// annotation changes); Skiff's `/status` keeps only the status, so the annotation goes
    /// through the main resource first — metadata only, so the generation does not move.
    async fn write_deployment(
        &self,
        d: &mut Deployment,
        annotation_changed: bool,
        status_changed: bool,
    ) -> Result<(), DeploymentError> {
        if annotation_changed {
            let status = d.status.clone();
            let name = name_of(&d.metadata);
            let mut stored = self
                .deployments_api(d)
                .replace(&name, &PostParams::default(), d)
                .await
                .map_err(|source| DeploymentError::UpdateDeployment {
                    deployment: object_key(&d.metadata),
                    source,
                })?;
            stored.status = status;
            *d = stored;
        }
        if status_changed {
            self.write_status(d).await?;
        }
        Ok(())
    }
}
