//! The Recreate strategy (upstream `recreate.go`): scale every old ReplicaSet to 0, wait
//! until none of their pods is left running (the ReplicaSets report 0 and no pod they
//! controlled is outside a terminal phase), and only then create and scale up the new
//! ReplicaSet, so old and new pods never run side by side.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use api::selectors::LabelSelector;

use super::fenceposts::desired_replicas;
use super::progress::deployment_complete;
use super::replica_sets::{is_active, total_actual};
use super::sync::Family;
use super::{DeploymentController, DeploymentError, controller_ref, object_key};

impl DeploymentController {
    /// Upstream `rolloutRecreate`.
    pub(super) async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        selector: &LabelSelector,
    ) -> Result<Option<Duration>, DeploymentError> {
        // The new ReplicaSet is not created yet: nothing may scale up before the old pods
        // are gone.
        let mut family = self
            .all_replica_sets_and_sync_revision(d, rs_list, false)
            .await?;
        let active_old: Vec<ReplicaSet> = family
            .old
            .iter()
            .filter(|rs| is_active(rs))
            .cloned()
            .collect();
        let mut scaled_down = false;
        for old in active_old {
            let (scaled, updated) = self.scale_replica_set_and_record_event(&old, 0, d).await?;
            if let Some(updated) = updated {
                family.replace(updated);
            }
            scaled_down |= scaled;
        }
        if scaled_down {
            return self.sync_rollout_status(&family, d).await;
        }
        if self.old_pods_running(d, &family, selector).await? {
            return self.sync_rollout_status(&family, d).await;
        }
        if family.new.is_none() {
            family = self
                .all_replica_sets_and_sync_revision(d, rs_list, true)
                .await?;
        }
        if let Some(new_rs) = family.new.clone()
            && let (_, Some(updated)) = self
                .scale_replica_set_and_record_event(&new_rs, desired_replicas(d), d)
                .await?
        {
            family.replace(updated);
        }
        if deployment_complete(d, d.status.as_ref()) {
            self.cleanup_deployment(&family.old, d).await?;
        }
        self.sync_rollout_status(&family, d).await
    }

    /// Upstream `oldPodsRunning`: old ReplicaSets still report pods, or a pod one of them
    /// controlled is not yet Succeeded or Failed (Unknown counts as running: it may be).
    async fn old_pods_running(
        &self,
        d: &Deployment,
        family: &Family,
        selector: &LabelSelector,
    ) -> Result<bool, DeploymentError> {
        if total_actual(&family.old) > 0 {
            return Ok(true);
        }
        let old_uids: Vec<&str> = family
            .old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        if old_uids.is_empty() {
            return Ok(false);
        }
        let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
        // Listed fresh rather than cached: this only runs at the switch-over, and must not
        // miss a pod the watch has not delivered yet.
        let pods = Api::<Pod>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(|source| DeploymentError::ListPods {
                deployment: object_key(&d.metadata),
                source,
            })?;
        Ok(pods.items.iter().any(|pod| {
            selector.matches(&pod.metadata.labels.clone().unwrap_or_default())
                && controller_ref(&pod.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
                && !matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        }))
    }
}
