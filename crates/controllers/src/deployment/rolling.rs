//! The RollingUpdate strategy (upstream `rolling.go`). Each sync makes one move and writes
//! the status; the ReplicaSet status changes it causes bring the next sync:
//!
//! 1. grow the new ReplicaSet while all ReplicaSets together stay within
//!    `replicas + maxSurge` (or shrink it if the Deployment shrank);
//! 2. else shrink old ReplicaSets while at least `replicas - maxUnavailable` pods stay
//!    available: first the unavailable pods of old ReplicaSets (they add nothing to
//!    availability, and left alone they could block the rollout, upstream #16737), then
//!    available ones, oldest ReplicaSet first;
//! 3. once complete, delete old ReplicaSets beyond `revisionHistoryLimit`.
//!
//! Availability is the ReplicaSets' `status.availableReplicas`, which the ReplicaSet
//! controller counts with `minReadySeconds`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::fenceposts::{desired_replicas, max_unavailable};
use super::progress::deployment_complete;
use super::replica_sets::{
    available_replicas, by_creation, is_active, new_rs_new_replicas, spec_replicas,
    total_available, total_spec,
};
use super::sync::Family;
use super::{DeploymentController, DeploymentError, object_key};

impl DeploymentController {
    /// Upstream `rolloutRolling`.
    pub(super) async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> Result<Option<Duration>, DeploymentError> {
        let mut family = self
            .all_replica_sets_and_sync_revision(d, rs_list, true)
            .await?;
        if self.reconcile_new_replica_set(&mut family, d).await? {
            return self.sync_rollout_status(&family, d).await;
        }
        if self.reconcile_old_replica_sets(&mut family, d).await? {
            return self.sync_rollout_status(&family, d).await;
        }
        if deployment_complete(d, d.status.as_ref()) {
            self.cleanup_deployment(&family.old, d).await?;
        }
        self.sync_rollout_status(&family, d).await
    }

    /// Upstream `reconcileNewReplicaSet`: whether it scaled.
    async fn reconcile_new_replica_set(
        &self,
        family: &mut Family,
        d: &Deployment,
    ) -> Result<bool, DeploymentError> {
        let Some(new_rs) = family.new.clone() else {
            return Ok(false);
        };
        let desired = desired_replicas(d);
        let target = match spec_replicas(&new_rs) {
            size if size == desired => return Ok(false),
            size if size > desired => desired,
            _ => new_rs_new_replicas(d, &family.all(), &new_rs).map_err(|source| {
                DeploymentError::InvalidFencepost {
                    deployment: object_key(&d.metadata),
                    source,
                }
            })?,
        };
        let (scaled, updated) = self
            .scale_replica_set_and_record_event(&new_rs, target, d)
            .await?;
        if let Some(updated) = updated {
            family.replace(updated);
        }
        Ok(scaled)
    }

    /// Upstream `reconcileOldReplicaSets`: whether anything was scaled down.
    async fn reconcile_old_replica_sets(
        &self,
        family: &mut Family,
        d: &Deployment,
    ) -> Result<bool, DeploymentError> {
        let Some(new_rs) = family.new.clone() else {
            return Ok(false);
        };
        let active_old: Vec<ReplicaSet> = family
            .old
            .iter()
            .filter(|rs| is_active(rs))
            .cloned()
            .collect();
        if total_spec(&active_old) == 0 {
            return Ok(false);
        }
        let all_pods = total_spec(family.all());
        let min_available = desired_replicas(d).saturating_sub(max_unavailable(d));
        // Pods of the new ReplicaSet not yet available are already spending the
        // unavailability budget.
        let new_unavailable = spec_replicas(&new_rs) - available_replicas(&new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let (active_old, cleaned) = self
            .cleanup_unhealthy_replicas(active_old, d, max_scaled_down, family)
            .await?;
        let scaled = self
            .scale_down_old_replica_sets(active_old, &new_rs, d, family)
            .await?;
        Ok(cleaned + scaled > 0)
    }

    /// Upstream `cleanupUnhealthyReplicas`: removes up to `max_cleanup` unavailable pods from
    /// old ReplicaSets, oldest first. Returns the old ReplicaSets as they are now and how
    /// many replicas were removed.
    async fn cleanup_unhealthy_replicas(
        &self,
        mut old: Vec<ReplicaSet>,
        d: &Deployment,
        max_cleanup: i32,
        family: &mut Family,
    ) -> Result<(Vec<ReplicaSet>, i32), DeploymentError> {
        old.sort_by(by_creation);
        let mut total = 0;
        for slot in old.iter_mut() {
            if total >= max_cleanup {
                break;
            }
            let size = spec_replicas(slot);
            let available = available_replicas(slot);
            if size == 0 || size == available {
                continue;
            }
            let count = (max_cleanup - total).min(size - available);
            let target = size - count;
            if target > size {
                // More available than wanted: a status that has not caught up yet.
                return Err(DeploymentError::InvalidScaleDown {
                    deployment: object_key(&d.metadata),
                    replica_set: slot.metadata.name.clone().unwrap_or_default(),
                    from: size,
                    to: target,
                });
            }
            let (_, updated) = self
                .scale_replica_set_and_record_event(slot, target, d)
                .await?;
            total += count;
            if let Some(updated) = updated {
                family.replace(updated.clone());
                *slot = updated;
            }
        }
        Ok((old, total))
    }

    /// Upstream `scaleDownOldReplicaSetsForRollingUpdate`: removes available old pods down to
    /// `replicas - maxUnavailable` available in all, oldest ReplicaSet first.
    async fn scale_down_old_replica_sets(
        &self,
        mut old: Vec<ReplicaSet>,
        new_rs: &ReplicaSet,
        d: &Deployment,
        family: &mut Family,
    ) -> Result<i32, DeploymentError> {
        let min_available = desired_replicas(d).saturating_sub(max_unavailable(d));
        let available = total_available(old.iter().chain([new_rs]));
        if available <= min_available {
            return Ok(0);
        }
        old.sort_by(by_creation);
        let to_remove = available - min_available;
        let mut total = 0;
        for rs in &old {
            if total >= to_remove {
                break;
            }
            let size = spec_replicas(rs);
            if size == 0 {
                continue;
            }
            let count = size.min(to_remove - total);
            let target = size - count;
            let (_, updated) = self
                .scale_replica_set_and_record_event(rs, target, d)
                .await?;
            if let Some(updated) = updated {
                family.replace(updated);
            }
            total += count;
        }
        Ok(total)
    }
}
