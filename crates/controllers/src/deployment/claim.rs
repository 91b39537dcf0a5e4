//! Which ReplicaSets a Deployment owns (upstream `getReplicaSetsForDeployment` with
//! `ReplicaSetControllerRefManager.ClaimReplicaSets`): the ones it controls whose labels its
//! selector matches, plus matching orphans it adopts; ones it controls that stopped matching
//! are released. A ReplicaSet controlled by anything else is never touched.
//!
//! Before the first adoption the Deployment is re-read from the API (not the cache): adopting
//! for a Deployment that was just deleted, or deleted and recreated under the same name, would
//! hand the ReplicaSet to an owner that no longer exists (upstream #42639).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tracing::debug;

use api::selectors::LabelSelector;

use super::{DeploymentController, DeploymentError, controller_ref, is_not_found, object_key};

impl DeploymentController {
    pub(super) async fn claim_replica_sets(
        &self,
        d: &Deployment,
        selector: &LabelSelector,
    ) -> Result<Vec<ReplicaSet>, DeploymentError> {
        let namespace = d.metadata.namespace.as_deref();
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let candidates: Vec<ReplicaSet> = self
            .replica_sets
            .state()
            .into_iter()
            .filter(|rs| rs.metadata.namespace.as_deref() == namespace)
            .map(|rs| rs.as_ref().clone())
            .collect();
        let mut claimed = Vec::new();
        let mut rechecked = false;
        let mut first_error = None;
        for rs in candidates {
            let matches = selector.matches(&rs.metadata.labels.clone().unwrap_or_default());
            match controller_ref(&rs.metadata) {
                Some(owner) if owner.uid != uid => {}
                Some(_) if matches => claimed.push(rs),
                Some(_) => {
                    // Ours but no longer selected: release it, unless we are going away
                    // (the garbage collector then deals with it as our dependent).
                    if !deleting && let Err(e) = self.release(d, &rs).await {
                        first_error.get_or_insert(e);
                    }
                }
                None => {
                    if deleting || !matches || rs.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if !rechecked {
                        self.recheck_deletion(d).await?;
                        rechecked = true;
                    }
                    match self.adopt(d, &rs).await {
                        Ok(Some(adopted)) => claimed.push(adopted),
                        Ok(None) => {}
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(claimed),
        }
    }

    /// Upstream `RecheckDeletionTimestamp`.
    async fn recheck_deletion(&self, d: &Deployment) -> Result<(), DeploymentError> {
        let key = object_key(&d.metadata);
        let fresh = self
            .deployments_api_in(d.metadata.namespace.as_deref().unwrap_or_default())
            .get(d.metadata.name.as_deref().unwrap_or_default())
            .await
            .map_err(|source| DeploymentError::RecheckDeployment {
                deployment: key.clone(),
                source,
            })?;
        if fresh.metadata.uid != d.metadata.uid {
            return Err(DeploymentError::DeploymentReplaced {
                deployment: key,
                got: fresh.metadata.uid.unwrap_or_default(),
                wanted: d.metadata.uid.clone().unwrap_or_default(),
            });
        }
        if let Some(at) = &fresh.metadata.deletion_timestamp {
            return Err(DeploymentError::DeploymentDeleted {
                deployment: key,
                at: at.0.to_string(),
            });
        }
        Ok(())
    }

    fn deployments_api_in(&self, namespace: &str) -> kube::Api<Deployment> {
        kube::Api::namespaced(self.client.clone(), namespace)
    }

    /// Adds the Deployment as controller with a strategic merge patch on `ownerReferences`
    /// (merged by uid), carrying the ReplicaSet's uid so a recreated one of the same name is
    /// not adopted. `None` when the ReplicaSet is gone.
    async fn adopt(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
    ) -> Result<Option<ReplicaSet>, DeploymentError> {
        let patch = json!({
            "metadata": {
                "ownerReferences": [{
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": d.metadata.name,
                    "uid": d.metadata.uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
                "uid": rs.metadata.uid,
            }
        });
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        match self
            .replica_sets_api(namespace)
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(adopted) => {
                debug!(deployment = %object_key(&d.metadata), replica_set = name, "adopted ReplicaSet");
                Ok(Some(adopted))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(DeploymentError::AdoptReplicaSet {
                deployment: object_key(&d.metadata),
                replica_set: name.to_string(),
                source,
            }),
        }
    }

    /// Removes the Deployment's reference (`$patch: delete` by uid). A ReplicaSet that is
    /// gone, or was recreated under the same name (the uid precondition fails as Invalid),
    /// needs nothing.
    async fn release(&self, d: &Deployment, rs: &ReplicaSet) -> Result<(), DeploymentError> {
        let patch = json!({
            "metadata": {
                "ownerReferences": [{"$patch": "delete", "uid": d.metadata.uid}],
                "uid": rs.metadata.uid,
            }
        });
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        match self
            .replica_sets_api(namespace)
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                debug!(deployment = %object_key(&d.metadata), replica_set = name, "released ReplicaSet");
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 422 => Ok(()),
            Err(source) => Err(DeploymentError::ReleaseReplicaSet {
                deployment: object_key(&d.metadata),
                replica_set: name.to_string(),
                source,
            }),
        }
    }
}
