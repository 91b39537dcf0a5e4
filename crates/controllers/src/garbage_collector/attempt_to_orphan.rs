//! `attemptToOrphan` (upstream `attemptToOrphanWorker` + `orphanDependents`): an owner being
//! deleted with the `orphan` finalizer loses its place in every dependent's ownerReferences,
//! then the finalizer goes and the server finishes the deletion.

use futures::StreamExt;

use super::graph::ORPHAN_FINALIZER;
use super::{Action, GarbageCollector, GcError};

/// Dependents patched at once while orphaning.
const ORPHAN_PATCH_CONCURRENCY: usize = 16;

impl GarbageCollector {
    pub(super) async fn run_attempt_to_orphan_worker(&self) {
        while let Some(uid) = self.attempt_to_orphan.next().await {
            let action = match self.attempt_to_orphan_item(&uid).await {
                Ok(()) => Action::Forget,
                Err(e) => {
                    tracing::warn!(owner = %uid, error = %e, "garbage collector: orphaning failed; retrying");
                    Action::Requeue
                }
            };
            match action {
                Action::Forget => self.attempt_to_orphan.forget(&uid),
                Action::Requeue => self.attempt_to_orphan.add_rate_limited(&uid),
            }
            self.attempt_to_orphan.done(&uid);
        }
    }

    async fn attempt_to_orphan_item(&self, uid: &str) -> Result<(), GcError> {
        let Some(owner) = self.node(uid) else {
            // The owner left the graph: it is already gone.
            return Ok(());
        };
        let dependents = self.lock_graph().dependents(uid);
        let owner_uid = &[uid.to_string()];
        let (operations, owner_identity) = (&self.operations, &owner.identity);
        let count = dependents.len();
        let failed = futures::stream::iter(dependents)
            .map(move |dep| async move {
                let result = operations.remove_owner_references(&dep.identity, owner_uid).await;
                if let Err(e) = &result {
                    tracing::warn!(dependent = %dep.identity, owner = %owner_identity, error = %e, "could not orphan dependent");
                }
                result.is_err()
            })
            .buffer_unordered(ORPHAN_PATCH_CONCURRENCY)
            .filter(|failed| futures::future::ready(*failed))
            .count()
            .await;
        if failed > 0 {
            return Err(GcError::OrphanDependents {
                owner: owner.identity.to_string(),
                failed,
            });
        }
        tracing::info!(owner = %owner.identity, dependents = count, "orphaned dependents; removing the orphan finalizer");
        self.operations
            .remove_finalizer(&owner.identity, ORPHAN_FINALIZER)
            .await
    }
}
