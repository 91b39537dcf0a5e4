//! The watch cache: one store watch, fanned out in memory to every API watcher.
//!
//! Like upstream's `cacher`, the server keeps one watch on `/registry/` and a window of recent
//! events, decoded once and shared (`Arc`). A client watch from a resourceVersion inside the
//! window is served from memory; an older one falls back to a watch on the store itself, which
//! replays its history or answers 410 Expired when that history was compacted.
//!
//! States of the feeding task (`run`): `Following` the store watch; on a broken stream it
//! `Reconnecting`s from the last revision it saw; on `Compacted` (it fell behind history) it
//! restarts the window at the store's current revision, so older watchers fall back to the store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use store::{EventKind, Revision, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::object;

/// The watch event types of the Kubernetes watch protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
}

impl WatchEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
        }
    }
}

/// One change, decoded once and shared by every watcher.
#[derive(Debug)]
pub struct CachedEvent {
    pub event_type: WatchEventType,
    pub key: String,
    pub revision: Revision,
    /// The object after the change; for a delete, its last state with the delete's revision.
    pub object: Arc<Value>,
    /// The stored bytes of the object before a modification, decoded on first use: only
    /// watchers with a selector look at it (to tell an object entering or leaving their
    /// selection), and keeping it undecoded holds the window's memory to one decoded object per
    /// event.
    prev_raw: Option<(Bytes, Revision)>,
    prev: OnceLock<Option<Arc<Value>>>,
    json: OnceLock<Bytes>,
}

/// A stored value as the API object it is: JSON, with its revision as resourceVersion. None for
/// values that are not JSON objects (never written by this server).
fn decode_stored(value: &[u8], rev: Revision) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(value).ok()?;
    if !v.is_object() {
        return None;
    }
    object::set_resource_version(&mut v, rev);
    Some(v)
}

impl CachedEvent {
    /// The object before a modification (None for creations and deletions).
    pub fn prev(&self) -> Option<&Value> {
        self.prev
            .get_or_init(|| self.prev_raw.as_ref().and_then(|(raw, rev)| decode_stored(raw, *rev)).map(Arc::new))
            .as_deref()
    }

    /// The object serialized once, shared by all watchers that want plain JSON.
    pub fn object_json(&self) -> Bytes {
        self.json.get_or_init(|| Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default())).clone()
    }

    /// Decodes a store event. Returns None for values that are not JSON objects (never written
    /// by this server; skipped rather than breaking every watcher).
    pub fn from_store(ev: store::Event) -> Option<CachedEvent> {
        let (event_type, object, prev_raw) = match ev.kind {
            EventKind::Put => {
                let object = decode_stored(&ev.kv.value, ev.kv.mod_revision)?;
                match ev.prev_kv {
                    Some(p) => (WatchEventType::Modified, object, Some((p.value, p.mod_revision))),
                    None => (WatchEventType::Added, object, None),
                }
            }
            EventKind::Delete => {
                let p = ev.prev_kv.as_ref()?;
                (WatchEventType::Deleted, decode_stored(&p.value, ev.kv.mod_revision)?, None)
            }
        };
        Some(CachedEvent {
            event_type,
            key: ev.kv.key,
            revision: ev.kv.mod_revision,
            object: Arc::new(object),
            prev_raw,
            prev: OnceLock::new(),
            json: OnceLock::new(),
        })
    }
}

/// How often the window is trimmed to the store's compacted revision.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);

struct Window {
    events: VecDeque<Arc<CachedEvent>>,
    /// Watches from any revision `>= start` can be served from `events`.
    start: Revision,
    latest: Revision,
}

/// Where a watcher's events come from.
pub enum Subscription {
    /// From memory; poll with [`WatchCache::events_after`].
    Cache,
    /// From the store (the revision is older than the window).
    Store(store::WatchStream),
}

pub struct WatchCache {
    window: Mutex<Window>,
    latest_tx: tokio::sync::watch::Sender<Revision>,
    capacity: usize,
}

impl WatchCache {
    /// A cache whose window starts at `start` (the store revision when the server started).
    pub fn new(start: Revision, capacity: usize) -> Arc<WatchCache> {
        let (latest_tx, _) = tokio::sync::watch::channel(start);
        Arc::new(WatchCache {
            window: Mutex::new(Window { events: VecDeque::with_capacity(1024), start, latest: start }),
            latest_tx,
            capacity,
        })
    }

    pub fn latest(&self) -> Revision {
        self.lock().latest
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // A poisoned lock only means a watcher panicked mid-copy; the window itself is intact.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn latest_receiver(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.latest_tx.subscribe()
    }

    /// Serves a watch for events after `after` from memory when the window covers it.
    pub async fn subscribe(&self, store: &Arc<dyn Store>, after: Revision) -> Result<Subscription, StoreError> {
        let start = self.lock().start;
        if after >= start {
            Ok(Subscription::Cache)
        } else {
            Ok(Subscription::Store(store.watch("/registry/", after + 1).await?))
        }
    }

    /// Events with revision `> after`, at most `max`, oldest first, and the cache's latest
    /// revision at the same instant (when no events are returned, everything up to it has been
    /// seen, so a bookmark may carry it). `None` means `after` fell out of the window while the
    /// watcher was slow: the watch must end with 410 Expired.
    pub fn events_after(&self, after: Revision, max: usize) -> Option<(Vec<Arc<CachedEvent>>, Revision)> {
        let w = self.lock();
        if after < w.start {
            return None;
        }
        // Events are in revision order: binary search for the first one after `after`.
        let idx = w.events.partition_point(|e| e.revision <= after);
        Some((w.events.iter().skip(idx).take(max).cloned().collect(), w.latest))
    }

    fn push(&self, ev: CachedEvent) {
        let rev = ev.revision;
        {
            let mut w = self.lock();
            if rev <= w.latest {
                return; // a duplicate after a reconnect
            }
            w.events.push_back(Arc::new(ev));
            while w.events.len() > self.capacity {
                if let Some(old) = w.events.pop_front() {
                    w.start = old.revision;
                }
            }
            w.latest = rev;
        }
        self.latest_tx.send_replace(rev);
    }

    /// Drops events the store has compacted away, so the window never promises history the
    /// store no longer has (a watch from before compaction gets 410 Expired, as upstream).
    pub fn trim_compacted(&self, compacted: Revision) {
        let mut w = self.lock();
        while w.events.front().is_some_and(|e| e.revision < compacted) {
            w.events.pop_front();
        }
        // Watches "after X" need revision X+1 onwards; the store serves revisions >= compacted.
        w.start = w.start.max(compacted - 1).min(w.latest);
    }

    /// Moves the window to `rev` with no events (after the feed fell behind compaction).
    fn reset(&self, rev: Revision) {
        {
            let mut w = self.lock();
            w.events.clear();
            w.start = rev;
            w.latest = rev;
        }
        self.latest_tx.send_replace(rev);
    }

    /// Feeds the cache from the store until cancelled.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let from = self.latest() + 1;
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                s = store.watch("/registry/", from) => s,
            };
            let mut stream = match stream {
                Ok(s) => s,
                Err(StoreError::Compacted { .. }) => {
                    self.resync(&store).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache: store watch failed; retrying");
                    tokio::select! { _ = cancel.cancelled() => return, _ = tokio::time::sleep(backoff) => {} }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let mut trim = tokio::time::interval(TRIM_INTERVAL);
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = trim.tick() => {
                        if let Ok(compacted) = store.compacted_revision().await {
                            self.trim_compacted(compacted);
                        }
                        continue;
                    }
                    n = stream.next() => n,
                };
                match next {
                    Some(Ok(ev)) => {
                        let rev = ev.kv.mod_revision;
                        match CachedEvent::from_store(ev) {
                            Some(ce) => self.push(ce),
                            None => {
                                tracing::warn!(revision = rev, "watch cache: skipping an undecodable value");
                                // Keep the revision moving so bookmarks stay truthful.
                                let mut w = self.lock();
                                w.latest = w.latest.max(rev);
                            }
                        }
                    }
                    Some(Err(StoreError::Compacted { .. })) => {
                        tracing::warn!("watch cache fell behind compaction; restarting its window");
                        self.resync(&store).await;
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "watch cache: store watch broke; reconnecting");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    async fn resync(&self, store: &Arc<dyn Store>) {
        match store.current_revision().await {
            Ok(rev) => self.reset(rev),
            Err(e) => {
                tracing::warn!(error = %e, "watch cache: cannot read the current revision");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{Event, KeyValue};

    fn put(key: &str, rev: Revision, prev: bool) -> Event {
        let kv = |r| KeyValue {
            key: key.into(),
            value: Bytes::from(format!("{{\"metadata\":{{\"name\":\"{key}\"}},\"r\":{r}}}")),
            create_revision: 1,
            mod_revision: r,
        };
        Event { kind: EventKind::Put, kv: kv(rev), prev_kv: prev.then(|| kv(rev - 1)) }
    }

    #[test]
    fn window_serves_events_after_a_revision_and_expires_old_ones() {
        let cache = WatchCache::new(10, 3);
        for r in 11..=15 {
            cache.push(CachedEvent::from_store(put("/registry/a", r, r > 11)).expect("decodes"));
        }
        // Capacity 3 keeps 13..=15: a watcher after 12 is served; after 11 has expired.
        let (evs, latest) = cache.events_after(12, 100).expect("in window");
        assert_eq!(latest, 15);
        assert_eq!(evs.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![13, 14, 15]);
        assert!(cache.events_after(11, 100).is_none());
        assert_eq!(evs[0].event_type, WatchEventType::Modified);
        assert_eq!(evs[0].object["metadata"]["resourceVersion"], "13");
        assert!(cache.events_after(15, 100).expect("in window").0.is_empty());
    }

    #[test]
    fn trimming_follows_store_compaction() {
        let cache = WatchCache::new(0, 100);
        for r in 1..=10 {
            cache.push(CachedEvent::from_store(put("/registry/a", r, r > 1)).expect("decodes"));
        }
        cache.trim_compacted(6);
        assert!(cache.events_after(4, 100).is_none(), "revision 5 was compacted");
        let (evs, _) = cache.events_after(5, 100).expect("from 6 on is kept");
        assert_eq!(evs.first().map(|e| e.revision), Some(6));
    }

    #[test]
    fn delete_events_carry_the_last_state_at_the_delete_revision() {
        let kv = KeyValue { key: "/registry/a".into(), value: Bytes::new(), create_revision: 1, mod_revision: 9 };
        let prev = KeyValue {
            key: "/registry/a".into(),
            value: Bytes::from_static(b"{\"metadata\":{\"name\":\"a\"}}"),
            create_revision: 1,
            mod_revision: 5,
        };
        let ce = CachedEvent::from_store(Event { kind: EventKind::Delete, kv, prev_kv: Some(prev) }).expect("decodes");
        assert_eq!(ce.event_type, WatchEventType::Deleted);
        assert_eq!(ce.object["metadata"]["resourceVersion"], "9");
    }
}
