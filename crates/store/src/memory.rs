//! The in-memory backend, for fast tests: the same MVCC model as `sqlite`, held in maps.
//!
//! Every write appends one row to `rows` under the next revision; `versions` indexes each key's
//! rows so reads at a past revision find the newest row at or below it. All state sits behind one
//! mutex, and events are broadcast while it is held, so the broadcast order is the revision
//! order that `watch` relies on.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::watch::{self, BROADCAST_CAPACITY, History, HistoryPage};
use crate::{
    DeleteResult, Event, EventKind, KeyValue, RangeOptions, RangeResult, Result, Revision, Store,
    StoreError, WatchStream,
};

/// A store that lives and dies with the process.
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Event>>,
}

/// One write: a put (create or update) or a delete tombstone.
struct Row {
    key: String,
    value: Bytes,
    /// 0 for a tombstone.
    create_revision: Revision,
    /// The revision of the key's previous live row; 0 when this write created the key.
    prev_revision: Revision,
    deleted: bool,
}

#[derive(Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    rows: BTreeMap<Revision, Row>,
    /// Each key's row revisions, ascending.
    versions: BTreeMap<String, Vec<Revision>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                live,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied write: every mutation is
        // a few infallible map operations done after all checks, so the state stays usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn kv(&self, revision: Revision) -> Option<KeyValue> {
        let row = self.rows.get(&revision)?;
        Some(KeyValue {
            key: row.key.clone(),
            value: row.value.clone(),
            create_revision: row.create_revision,
            mod_revision: revision,
        })
    }

    /// The key's newest live row at or below `at`.
    fn live_at(&self, key: &str, at: Revision) -> Option<KeyValue> {
        let versions = self.versions.get(key)?;
        let index = versions.partition_point(|&revision| revision <= at);
        let revision = *versions.get(index.checked_sub(1)?)?;
        let row = self.rows.get(&revision)?;
        if row.deleted { None } else { self.kv(revision) }
    }

    fn latest(&self, key: &str) -> Option<KeyValue> {
        self.live_at(key, self.revision)
    }

    fn event(&self, revision: Revision) -> Option<Event> {
        let row = self.rows.get(&revision)?;
        let prev_kv = if row.prev_revision == 0 {
            None
        } else {
            self.kv(row.prev_revision)
        };
        let kv = self.kv(revision)?;
        let kind = if row.deleted {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        Some(Event { kind, kv, prev_kv })
    }

    /// Appends a row at the next revision and returns its event.
    fn append(&mut self, row: Row) -> Event {
        self.revision += 1;
        let revision = self.revision;
        self.versions
            .entry(row.key.clone())
            .or_default()
            .push(revision);
        self.rows.insert(revision, row);
        // The row was just inserted, so `event` finds it; the fallback keeps this panic-free.
        self.event(revision).unwrap_or_else(|| Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: String::new(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: revision,
            },
            prev_kv: None,
        })
    }

    fn check_readable(&self, revision: Revision) -> Result<()> {
        if revision < self.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        Ok(())
    }

    /// Drops rows below `below` that no read or watch at `>= below` can need: rows superseded
    /// by a newer row that is itself below `below`, and tombstones (see `sqlite` for why the
    /// newest row below the compaction point is kept).
    fn purge(&mut self, below: Revision) {
        let mut emptied = Vec::new();
        for (key, versions) in self.versions.iter_mut() {
            let older = versions.partition_point(|&revision| revision < below);
            let mut keep_from = older.saturating_sub(1);
            if let Some(&newest_below) = versions.get(keep_from).filter(|_| older > 0)
                && self.rows.get(&newest_below).is_some_and(|row| row.deleted)
            {
                keep_from += 1;
            }
            for revision in versions.drain(..keep_from) {
                self.rows.remove(&revision);
            }
            if versions.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.versions.remove(&key);
        }
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let mut state = self.state();
        if state.latest(key).is_some() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let row = Row {
            key: key.to_string(),
            value,
            create_revision: state.revision + 1,
            prev_revision: 0,
            deleted: false,
        };
        let event = state.append(row);
        let _ = self.shared.live.send(Arc::new(event.clone()));
        Ok(event.kv)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.state().latest(key))
    }

    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        let state = self.state();
        let at = match opts.revision {
            Some(revision) if revision > 0 => {
                state.check_readable(revision)?;
                revision
            }
            _ => state.revision,
        };
        let limit = opts.limit.unwrap_or(usize::MAX);
        let mut result = RangeResult {
            kvs: Vec::new(),
            more: false,
            revision: at,
        };
        let keys = state
            .versions
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(key, _)| {
                opts.start_after
                    .as_deref()
                    .is_none_or(|after| key.as_str() > after)
            });
        for (key, _) in keys {
            let Some(kv) = state.live_at(key, at) else {
                continue;
            };
            if result.kvs.len() == limit {
                result.more = true;
                break;
            }
            result.kvs.push(kv);
        }
        Ok(result)
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue> {
        let mut state = self.state();
        let current = state
            .latest(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if current.mod_revision != expected_mod_revision {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected: expected_mod_revision,
                current: Some(current),
            });
        }
        let row = Row {
            key: key.to_string(),
            value,
            create_revision: current.create_revision,
            prev_revision: current.mod_revision,
            deleted: false,
        };
        let event = state.append(row);
        let _ = self.shared.live.send(Arc::new(event.clone()));
        Ok(event.kv)
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<DeleteResult> {
        let mut state = self.state();
        let current = state
            .latest(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if let Some(expected) = expected_mod_revision
            && current.mod_revision != expected
        {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: Some(current),
            });
        }
        let row = Row {
            key: key.to_string(),
            value: Bytes::new(),
            create_revision: 0,
            prev_revision: current.mod_revision,
            deleted: true,
        };
        let event = state.append(row);
        let revision = event.kv.mod_revision;
        let _ = self.shared.live.send(Arc::new(event));
        Ok(DeleteResult {
            prev: current,
            revision,
        })
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.state().revision)
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.state().compacted)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut state = self.state();
        if revision > state.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: state.revision,
            });
        }
        if revision <= state.compacted {
            return Ok(());
        }
        state.compacted = revision;
        state.purge(revision);
        Ok(())
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream> {
        let live = self.shared.live.subscribe();
        let start = if start_revision > 0 {
            start_revision
        } else {
            self.state().revision + 1
        };
        let history: Arc<dyn History> = self.shared.clone();
        Ok(watch::watch_stream(
            history,
            live,
            prefix.to_string(),
            start,
        ))
    }
}

#[async_trait::async_trait]
impl History for Shared {
    async fn events_since(
        &self,
        prefix: &str,
        from: Revision,
        limit: usize,
    ) -> Result<HistoryPage> {
        let state = self.lock();
        if from < state.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: state.compacted,
            });
        }
        let events = state
            .rows
            .range(from..)
            .filter(|(_, row)| row.key.starts_with(prefix))
            .take(limit)
            .filter_map(|(&revision, _)| state.event(revision))
            .collect();
        Ok(HistoryPage {
            events,
            head: state.revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    /// A watcher that lags past the broadcast buffer while history is compacted under it gets
    /// `Compacted` (it cannot re-read what it missed), then its stream ends.
    #[tokio::test]
    async fn lagging_watcher_past_compaction_gets_compacted() {
        let store = MemoryStore::new();
        let mut watch = store.watch("/a/", 0).await.expect("watch");
        let first = store
            .create("/a/first", Bytes::from_static(b"x"))
            .await
            .expect("create");
        assert_eq!(watch.next().await.expect("item").expect("event").kv, first);
        let mut last = 0;
        for i in 0..BROADCAST_CAPACITY + 10 {
            last = store
                .create(&format!("/a/{i}"), Bytes::from_static(b"x"))
                .await
                .expect("create")
                .mod_revision;
        }
        store.compact(last).await.expect("compact");
        match watch.next().await {
            Some(Err(StoreError::Compacted {
                requested,
                compacted,
            })) => {
                assert_eq!(compacted, last);
                assert!(requested < last);
            }
            other => panic!("expected Compacted, got {other:?}"),
        }
        assert!(watch.next().await.is_none());
    }

    /// Compaction keeps the newest row below the compaction point (it is still readable and is
    /// the next event's `prev_kv`) and drops superseded rows and tombstones.
    #[tokio::test]
    async fn purge_keeps_only_what_reads_at_the_compaction_point_need() {
        let store = MemoryStore::new();
        let a1 = store
            .create("/a", Bytes::from_static(b"1"))
            .await
            .expect("create");
        let a2 = store
            .update("/a", Bytes::from_static(b"2"), a1.mod_revision)
            .await
            .expect("update");
        store
            .create("/b", Bytes::from_static(b"1"))
            .await
            .expect("create");
        let deleted = store.delete("/b", None).await.expect("delete");
        // At the delete's revision, the deleted row is still the delete event's `prev_kv`.
        store.compact(deleted.revision).await.expect("compact");
        let kept = store.state().rows.keys().copied().collect::<Vec<_>>();
        assert_eq!(
            kept,
            [a2.mod_revision, deleted.prev.mod_revision, deleted.revision]
        );
        let c = store
            .create("/c", Bytes::from_static(b"1"))
            .await
            .expect("create");
        store.compact(c.mod_revision).await.expect("compact");
        let state = store.state();
        assert_eq!(
            state.rows.keys().copied().collect::<Vec<_>>(),
            [a2.mod_revision, c.mod_revision]
        );
        assert!(!state.versions.contains_key("/b"));
        assert_eq!(
            state.versions.get("/a").cloned(),
            Some(vec![a2.mod_revision])
        );
    }
}
