//! Upstream's `ControllerExpectations` / `UIDTrackingControllerExpectations`
//! (pkg/controller/controller_utils.go): what a sync is still waiting to see through the pod
//! watch.
//!
//! The watch-fed pod cache lags the API. After a sync creates 3 pods, a sync that runs before
//! their ADDED events arrive would count too few pods and create 3 more. So a sync records
//! what it is about to do (`expect_creations(3)`, `expect_deletions([keys])`), the pod event
//! handlers lower the counts as the events arrive, and the next sync only manages replicas
//! once everything expected was observed — or once the record is older than five minutes
//! (upstream's `ExpectationsTimeout`), so a lost event cannot wedge a ReplicaSet forever.
//!
//! Deletions are tracked by pod key, not by count: a graceful deletion is seen twice (once as
//! the update that sets deletionTimestamp, once as the final DELETED event), and only the
//! first may count.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Upstream `ExpectationsTimeout`: a record older than this no longer holds a sync back.
pub(crate) const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// One owner's outstanding creations and deletions.
#[derive(Debug)]
struct Expectation {
    add: i64,
    del: i64,
    /// Keys (`namespace/name`) of the pods whose deletion is awaited.
    deleting: HashSet<String>,
    /// When the counts were last set (not lowered): the record expires from here.
    set_at: Instant,
}

impl Expectation {
    fn fulfilled(&self) -> bool {
        self.add <= 0 && self.del <= 0
    }
}

/// Expectations of every owner of one kind, keyed by `namespace/name`.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    records: Mutex<HashMap<String, Expectation>>,
}

/// What [`Expectations::satisfied`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Satisfied {
    /// Nothing outstanding (or the record expired): the sync may create and delete.
    Yes,
    /// Still waiting; the record expires after this long if nothing arrives.
    No { expires_in: Duration },
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Upstream `SatisfiedExpectations`: true when there is no record (a controller that just
    /// started, or an owner never synced), when everything was observed, or when the record
    /// expired.
    pub(crate) fn satisfied(&self, key: &str) -> Satisfied {
        let records = self.lock();
        let Some(record) = records.get(key) else {
            return Satisfied::Yes;
        };
        if record.fulfilled() {
            return Satisfied::Yes;
        }
        let age = record.set_at.elapsed();
        if age > EXPECTATIONS_TIMEOUT {
            return Satisfied::Yes;
        }
        Satisfied::No {
            expires_in: EXPECTATIONS_TIMEOUT - age,
        }
    }

    /// Upstream `ExpectCreations`: replaces the record with `count` creations to observe.
    pub(crate) fn expect_creations(&self, key: &str, count: usize) {
        self.lock().insert(
            key.to_string(),
            Expectation {
                add: count as i64,
                del: 0,
                deleting: HashSet::new(),
                set_at: Instant::now(),
            },
        );
    }

    /// Upstream `CreationObserved`: one expected pod arrived (or will never be created).
    pub(crate) fn creation_observed(&self, key: &str) {
        if let Some(record) = self.lock().get_mut(key) {
            record.add -= 1;
        }
    }

    /// Upstream `ExpectDeletions` (UID tracking): replaces the record with these pods to see go.
    pub(crate) fn expect_deletions(&self, key: &str, pod_keys: impl IntoIterator<Item = String>) {
        let deleting: HashSet<String> = pod_keys.into_iter().collect();
        self.lock().insert(
            key.to_string(),
            Expectation {
                add: 0,
                del: deleting.len() as i64,
                deleting,
                set_at: Instant::now(),
            },
        );
    }

    /// Upstream `DeletionObserved`: counts only the first sighting of an awaited pod.
    pub(crate) fn deletion_observed(&self, key: &str, pod_key: &str) {
        if let Some(record) = self.lock().get_mut(key)
            && record.deleting.remove(pod_key)
        {
            record.del -= 1;
        }
    }

    /// Upstream `DeleteExpectations`: the owner is gone.
    pub(crate) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_record_is_satisfied() {
        let e = Expectations::default();
        assert_eq!(e.satisfied("ns/rs"), Satisfied::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn creations_must_all_be_observed() {
        let e = Expectations::default();
        e.expect_creations("ns/rs", 2);
        assert!(matches!(e.satisfied("ns/rs"), Satisfied::No { .. }));
        e.creation_observed("ns/rs");
        assert!(matches!(e.satisfied("ns/rs"), Satisfied::No { .. }));
        e.creation_observed("ns/rs");
        assert_eq!(e.satisfied("ns/rs"), Satisfied::Yes);
        // Other owners are unaffected.
        e.creation_observed("ns/other");
        assert_eq!(e.satisfied("ns/other"), Satisfied::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deletion_seen_twice_counts_once() {
        let e = Expectations::default();
        e.expect_deletions("ns/rs", ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/unrelated");
        assert!(matches!(e.satisfied("ns/rs"), Satisfied::No { .. }));
        e.deletion_observed("ns/rs", "ns/b");
        assert_eq!(e.satisfied("ns/rs"), Satisfied::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_after_five_minutes() {
        let e = Expectations::default();
        e.expect_creations("ns/rs", 1);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            e.satisfied("ns/rs"),
            Satisfied::No {
                expires_in: Duration::from_secs(240)
            }
        );
        tokio::time::advance(Duration::from_secs(241)).await;
        assert_eq!(e.satisfied("ns/rs"), Satisfied::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn forgetting_an_owner_clears_its_record() {
        let e = Expectations::default();
        e.expect_creations("ns/rs", 5);
        e.forget("ns/rs");
        assert_eq!(e.satisfied("ns/rs"), Satisfied::Yes);
    }
}
