//! The collector's API calls (upstream `operations.go` and `patch.go`): metadata-only GETs,
//! deletes with a UID precondition, and the patches that drop or unblock ownerReferences and
//! remove finalizers.

use api::catalogue::{self, Resource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use super::GcError;
use super::graph::ObjectIdentity;

/// How often a read-modify-write is retried on 409 Conflict (client-go's `retry.DefaultRetry`).
const CONFLICT_RETRIES: usize = 5;

/// The dynamic `ApiResource` of a catalogue entry.
pub fn api_resource(resource: &Resource) -> ApiResource {
    ApiResource {
        group: resource.group.to_string(),
        version: resource.version.to_string(),
        api_version: resource.api_version(),
        kind: resource.kind.to_string(),
        plural: resource.plural.to_string(),
    }
}

/// The served resource of an ownerReference's apiVersion and kind (upstream's REST mapping).
pub fn resource_for(api_version: &str, kind: &str) -> Result<&'static Resource, GcError> {
    let (group, version) = catalogue::split_api_version(api_version);
    catalogue::find_kind(group, version, kind)
        .filter(|r| !r.create_only)
        .ok_or_else(|| GcError::NoRestMapping {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })
}

pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.is_not_found())
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.is_conflict())
}

#[derive(Clone)]
pub struct Operations {
    client: kube::Client,
}

impl Operations {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// The API of `identity`'s resource in its namespace. A namespaced kind without a namespace
    /// (a virtual owner guessed from a cluster-scoped dependent) has nowhere to be looked up.
    fn api(&self, identity: &ObjectIdentity) -> Result<Api<DynamicObject>, GcError> {
        let resource = resource_for(&identity.api_version, &identity.kind)?;
        let ar = api_resource(resource);
        if !resource.namespaced {
            Ok(Api::all_with(self.client.clone(), &ar))
        } else if identity.namespace.is_empty() {
            Err(GcError::NamespacedOwnerOfClusterScopedObject)
        } else {
            Ok(Api::namespaced_with(
                self.client.clone(),
                &identity.namespace,
                &ar,
            ))
        }
    }

    /// The live metadata of the object at `identity`'s coordinates; `None` when there is none
    /// (the UID is not compared here).
    pub async fn get_object(
        &self,
        identity: &ObjectIdentity,
    ) -> Result<Option<ObjectMeta>, GcError> {
        let api = self.api(identity)?;
        api.get_metadata_opt(&identity.name)
            .await
            .map(|o| o.map(|o| o.metadata))
            .map_err(|source| GcError::Get {
                object: identity.to_string(),
                source,
            })
    }

    /// Deletes the object, provided it still has the UID the graph knows (upstream
    /// `deleteObject`). NotFound means it is already gone.
    pub async fn delete_object(
        &self,
        identity: &ObjectIdentity,
        policy: PropagationPolicy,
    ) -> Result<(), GcError> {
        let api = self.api(identity)?;
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(identity.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&identity.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(GcError::Delete {
                object: identity.to_string(),
                source,
            }),
        }
    }

    /// Drops the ownerReferences naming `owner_uids` with a strategic merge patch keyed by UID
    /// (`$patch: delete`), carrying the dependent's UID so a same-named newer object is refused
    /// as an immutable-field change (upstream `GenerateDeleteOwnerRefStrategicMergeBytes`).
    pub async fn remove_owner_references(
        &self,
        identity: &ObjectIdentity,
        owner_uids: &[String],
    ) -> Result<(), GcError> {
        let deletes: Vec<Value> = owner_uids
            .iter()
            .map(|uid| json!({"$patch": "delete", "uid": uid}))
            .collect();
        self.patch_owner_references(identity, deletes, "remove ownerReferences")
            .await
    }

    /// A strategic merge patch of `metadata.ownerReferences` (merged by uid), guarded by the
    /// object's uid so a same-named newer object is never touched. A vanished object is fine.
    async fn patch_owner_references(
        &self,
        identity: &ObjectIdentity,
        references: Vec<Value>,
        step: &'static str,
    ) -> Result<(), GcError> {
        let api = self.api(identity)?;
        let patch = json!({"metadata": {"ownerReferences": references, "uid": identity.uid}});
        match api
            .patch_metadata(
                &identity.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(GcError::Patch {
                object: identity.to_string(),
                step,
                source,
            }),
        }
    }

    /// Sets `blockOwnerDeletion: false` on every blocking reference of the object (upstream
    /// `unblockOwnerReferencesStrategicMergePatch`), used to break foreground-deletion cycles.
    pub async fn unblock_owner_references(
        &self,
        identity: &ObjectIdentity,
        owners: &[OwnerReference],
    ) -> Result<(), GcError> {
        let unblock: Vec<Value> = owners
            .iter()
            .filter(|o| o.block_owner_deletion == Some(true))
            .map(|o| json!({"uid": o.uid, "blockOwnerDeletion": false}))
            .collect();
        if unblock.is_empty() {
            return Ok(());
        }
        self.patch_owner_references(identity, unblock, "unblock ownerReferences")
            .await
    }

    /// Removes one finalizer with a merge patch of the whole list, guarded by the
    /// resourceVersion it was read at and retried on conflict (upstream `removeFinalizer`).
    pub async fn remove_finalizer(
        &self,
        identity: &ObjectIdentity,
        finalizer: &str,
    ) -> Result<(), GcError> {
        let api = self.api(identity)?;
        let mut last_conflict = None;
        for _ in 0..CONFLICT_RETRIES {
            let meta = match api.get_metadata_opt(&identity.name).await {
                Ok(Some(o)) => o.metadata,
                Ok(None) => return Ok(()),
                Err(source) => {
                    return Err(GcError::Get {
                        object: identity.to_string(),
                        source,
                    });
                }
            };
            if meta.uid.as_deref() != Some(identity.uid.as_str()) {
                return Ok(());
            }
            let finalizers = meta.finalizers.unwrap_or_default();
            if !finalizers.iter().any(|f| f == finalizer) {
                return Ok(());
            }
            let remaining: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
            let patch = json!({"metadata": {
                "finalizers": if remaining.is_empty() { Value::Null } else { json!(remaining) },
                "resourceVersion": meta.resource_version,
                "uid": identity.uid,
            }});
            match api
                .patch_metadata(
                    &identity.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if is_conflict(&e) => last_conflict = Some(e),
                Err(source) => {
                    return Err(GcError::Patch {
                        object: identity.to_string(),
                        step: "remove finalizer",
                        source,
                    });
                }
            }
        }
        match last_conflict {
            Some(source) => Err(GcError::Patch {
                object: identity.to_string(),
                step: "remove finalizer",
                source,
            }),
            None => Ok(()),
        }
    }
}
