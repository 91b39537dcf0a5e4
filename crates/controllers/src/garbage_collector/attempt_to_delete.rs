//! `attemptToDelete` (upstream `attemptToDeleteItem` and `processDeletingDependentsItem`):
//! one idempotent check of a node against live state. Every owner reference is resolved with
//! a live GET by name in the dependent's namespace (the graph may lag, and a same-named newer
//! object has another UID):
//!
//! * some owner lives → drop only the references to absent owners and to owners deleting
//!   in the foreground (the dependent stays, so they must not wait for it);
//! * no owner lives but one waits in the foreground → delete in the foreground when the item
//!   has dependents of its own (so blocking propagates), breaking cycles by unblocking;
//! * every owner is absent → delete with the policy the item's own finalizers ask for
//!   (orphan, foreground), else Background.
//!
//! A node that is deleting its dependents instead removes `foregroundDeletion` once no
//! dependent with `blockOwnerDeletion: true` remains.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PropagationPolicy;

use super::graph::{FOREGROUND_FINALIZER, Node, ORPHAN_FINALIZER, ObjectIdentity};
use super::{Action, GarbageCollector, GcError};

/// How one attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    /// The object is gone (or replaced): the graph was told and the item is finished.
    VirtualDeleted,
}

/// The owner references of an item, by the state of the owner they name.
#[derive(Debug, Default)]
struct Classified {
    solid: Vec<OwnerReference>,
    dangling: Vec<OwnerReference>,
    waiting_for_dependents_deletion: Vec<OwnerReference>,
}

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

impl GarbageCollector {
    pub(super) async fn run_attempt_to_delete_worker(&self) {
        while let Some(uid) = self.attempt_to_delete.next().await {
            match self.attempt_to_delete_worker(&uid).await {
                Action::Forget => self.attempt_to_delete.forget(&uid),
                Action::Requeue => self.attempt_to_delete.add_rate_limited(&uid),
            }
            self.attempt_to_delete.done(&uid);
        }
    }

    /// Upstream `attemptToDeleteWorker`: what to do with the key after one attempt.
    async fn attempt_to_delete_worker(&self, uid: &str) -> Action {
        let Some(item) = self.node(uid) else {
            // Removed from the graph since it was queued: nothing left to decide.
            return Action::Forget;
        };
        match self.attempt_to_delete_item(&item).await {
            Ok(Outcome::VirtualDeleted) => Action::Forget,
            Err(GcError::NamespacedOwnerOfClusterScopedObject) => {
                // Will not resolve on retry (upstream forgets the item too).
                tracing::debug!(item = %item.identity, "cluster-scoped object refers to a namespaced owner; not collected");
                Action::Forget
            }
            Err(e @ GcError::NoRestMapping { .. }) => {
                // The kind may become served later (upstream retries as well).
                tracing::debug!(item = %item.identity, error = %e, "garbage collector: retrying");
                Action::Requeue
            }
            Err(e) => {
                tracing::warn!(item = %item.identity, error = %e, "garbage collector: error syncing item; retrying");
                Action::Requeue
            }
            Ok(Outcome::Done) => {
                // A virtual node whose object exists waits for its watch event; otherwise an
                // object added and removed while a watch was re-established could stay in
                // the graph forever (kubernetes#56121).
                if self.node(uid).is_some_and(|n| !n.observed) {
                    Action::Requeue
                } else {
                    Action::Forget
                }
            }
        }
    }

    async fn attempt_to_delete_item(&self, item: &Node) -> Result<Outcome, GcError> {
        // Being deleted, and not waiting for dependents: someone else finishes it.
        if item.being_deleted && !item.deleting_dependents {
            return Ok(Outcome::Done);
        }
        let latest = match self.operations.get_object(&item.identity).await? {
            Some(latest) if latest.uid.as_deref() == Some(item.identity.uid.as_str()) => latest,
            // Gone, or a newer object took the name: the graph's node is stale.
            _ => {
                self.virtual_delete(&item.identity);
                return Ok(Outcome::VirtualDeleted);
            }
        };
        if item.deleting_dependents {
            return self.process_deleting_dependents(item).await;
        }
        let owners = latest.owner_references.clone().unwrap_or_default();
        if owners.is_empty() {
            return Ok(Outcome::Done);
        }
        let classified = self.classify_references(item, &owners).await?;
        tracing::debug!(
            item = %item.identity,
            solid = classified.solid.len(),
            dangling = classified.dangling.len(),
            waiting = classified.waiting_for_dependents_deletion.len(),
            "classified owner references"
        );
        if !classified.solid.is_empty() {
            if classified.dangling.is_empty()
                && classified.waiting_for_dependents_deletion.is_empty()
            {
                return Ok(Outcome::Done);
            }
            // Owners waiting in the foreground must not wait for a dependent that stays.
            let uids: Vec<String> = classified
                .dangling
                .iter()
                .chain(&classified.waiting_for_dependents_deletion)
                .map(|o| o.uid.clone())
                .collect();
            tracing::info!(item = %item.identity, owners = ?uids, "removing references to absent or foreground-deleting owners");
            self.operations
                .remove_owner_references(&item.identity, &uids)
                .await?;
            return Ok(Outcome::Done);
        }
        let dependents = self.lock_graph().dependents(&item.identity.uid);
        if !classified.waiting_for_dependents_deletion.is_empty() && !dependents.is_empty() {
            if dependents.iter().any(|d| d.deleting_dependents) {
                // A dependent of ours waits for us while our owner waits for it: a cycle.
                // Unblock our references so the owners can finish (upstream does the same,
                // accepting false positives from concurrent workers).
                tracing::info!(item = %item.identity, "unblocking owner references to break a foreground deletion cycle");
                self.operations
                    .unblock_owner_references(&item.identity, &owners)
                    .await?;
            }
            tracing::info!(item = %item.identity, "deleting dependent in the foreground: its owner waits for it");
            self.operations
                .delete_object(&item.identity, PropagationPolicy::Foreground)
                .await?;
            return Ok(Outcome::Done);
        }
        let policy = if has_finalizer(&latest, ORPHAN_FINALIZER) {
            PropagationPolicy::Orphan
        } else if has_finalizer(&latest, FOREGROUND_FINALIZER) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::info!(item = %item.identity, ?policy, "deleting object: all of its owners are gone");
        self.operations
            .delete_object(&item.identity, policy)
            .await?;
        Ok(Outcome::Done)
    }

    /// Upstream `processDeletingDependentsItem`.
    async fn process_deleting_dependents(&self, item: &Node) -> Result<Outcome, GcError> {
        let blocking = self.lock_graph().blocking_dependents(&item.identity.uid);
        if blocking.is_empty() {
            tracing::info!(item = %item.identity, "no blocking dependents remain; removing the foregroundDeletion finalizer");
            self.operations
                .remove_finalizer(&item.identity, FOREGROUND_FINALIZER)
                .await?;
            return Ok(Outcome::Done);
        }
        for dep in blocking.iter().filter(|d| !d.deleting_dependents) {
            self.attempt_to_delete.add(&dep.identity.uid);
        }
        Ok(Outcome::Done)
    }

    async fn classify_references(
        &self,
        item: &Node,
        owners: &[OwnerReference],
    ) -> Result<Classified, GcError> {
        let mut out = Classified::default();
        for reference in owners {
            match self.resolve_owner(reference, item).await? {
                None => out.dangling.push(reference.clone()),
                Some(owner)
                    if owner.deletion_timestamp.is_some()
                        && has_finalizer(&owner, FOREGROUND_FINALIZER) =>
                {
                    out.waiting_for_dependents_deletion.push(reference.clone());
                }
                Some(_) => out.solid.push(reference.clone()),
            }
        }
        Ok(out)
    }

    /// Upstream `isDangling`: the live owner a reference names, or `None` when it is absent
    /// (no object by that name in the dependent's namespace, or one with another UID).
    async fn resolve_owner(
        &self,
        reference: &OwnerReference,
        item: &Node,
    ) -> Result<Option<ObjectMeta>, GcError> {
        let mut key = ObjectIdentity::of_owner_reference(reference, "");
        {
            let graph = self.lock_graph();
            if graph.is_absent(&key) {
                return Ok(None);
            }
            key.namespace.clone_from(&item.identity.namespace);
            if graph.is_absent(&key) {
                return Ok(None);
            }
        }
        let resource = super::operations::resource_for(&reference.api_version, &reference.kind)?;
        if !resource.namespaced {
            key.namespace.clear();
        } else if item.identity.namespace.is_empty() {
            return Err(GcError::NamespacedOwnerOfClusterScopedObject);
        }
        match self.operations.get_object(&key).await? {
            Some(owner) if owner.uid.as_deref() == Some(reference.uid.as_str()) => Ok(Some(owner)),
            _ => {
                self.lock_graph().mark_absent(key);
                Ok(None)
            }
        }
    }

    /// A live GET found no object with the node's UID at its coordinates.
    pub(super) fn virtual_delete(&self, identity: &ObjectIdentity) {
        let effects = self.lock_graph().virtual_delete(identity);
        self.apply(effects);
    }
}
