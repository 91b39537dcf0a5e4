//! The behaviour every backend must show, as async checks over `Arc<dyn Store>`.
//!
//! Each backend's integration test (`crates/store/tests/*.rs`) runs [`run_all`] against a fresh
//! store. The checks panic with a message naming the broken guarantee, like test assertions.
//! Every check writes under its own prefix (made unique with the store's revision), so a store
//! may be shared with other writers; [`compaction`] compacts the whole store and runs last.
//!
//! The watch checks follow the guarantees etcd's robustness tests hold a watch to: ordered by
//! revision, no duplicates, no gaps, atomic, resumable from any revision still in history, and
//! `Compacted` for older ones.
//!
//! [`EtcdServer`] starts a throwaway single-member etcd for the etcd backend's tests and for the
//! store benchmark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::etcd::EtcdStore;
use crate::{EventKind, KeyValue, RangeOptions, Revision, Store, StoreError, WatchStream};

/// How long a check waits for one watch event before declaring it missing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every check, in an order where none disturbs another.
pub async fn run_all(store: Arc<dyn Store>) {
    create_and_get(store.clone()).await;
    update(store.clone()).await;
    delete(store.clone()).await;
    range(store.clone()).await;
    watch_order_and_resume(store.clone()).await;
    watch_concurrent_writers(store.clone()).await;
    watch_slow_reader(store.clone()).await;
    compaction(store).await;
}

async fn unique_prefix(store: &Arc<dyn Store>, check: &str) -> String {
    let revision = store.current_revision().await.expect("current_revision");
    format!("/conformance/{check}/{revision}/")
}

fn value(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// The next watch item, which must be an event.
async fn next_event(stream: &mut WatchStream, what: &str) -> crate::Event {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("{what}: watch failed: {error}"),
        Ok(None) => panic!("{what}: watch ended early"),
        Err(_) => panic!("{what}: no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Create assigns one new revision with `create_revision == mod_revision`; a second create fails
/// without consuming a revision; get returns what was written.
pub async fn create_and_get(store: Arc<dyn Store>) {
    let prefix = unique_prefix(&store, "create").await;
    let key = format!("{prefix}a");
    let before = store.current_revision().await.expect("current_revision");
    let created = store.create(&key, value("one")).await.expect("create");
    assert!(
        created.mod_revision > before,
        "create must advance the revision"
    );
    assert_eq!(
        created.create_revision, created.mod_revision,
        "a new key's create and mod revisions"
    );
    assert_eq!(created.key, key);
    assert_eq!(created.value, value("one"));
    assert_eq!(
        store.current_revision().await.expect("current_revision"),
        created.mod_revision
    );
    assert_eq!(store.get(&key).await.expect("get"), Some(created.clone()));
    assert_eq!(
        store.get(&format!("{prefix}missing")).await.expect("get"),
        None
    );

    match store.create(&key, value("two")).await {
        Err(StoreError::AlreadyExists(existing)) => assert_eq!(existing, key),
        other => panic!("second create of {key}: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        store.current_revision().await.expect("current_revision"),
        created.mod_revision,
        "a failed create must not consume a revision"
    );
    assert_eq!(
        store.get(&key).await.expect("get").map(|kv| kv.value),
        Some(value("one"))
    );

    let second = store
        .create(&format!("{prefix}b"), value("b"))
        .await
        .expect("create");
    assert!(
        second.mod_revision > created.mod_revision,
        "revisions must increase"
    );
}

/// Update succeeds only at the expected mod revision, keeps `create_revision`, and reports the
/// current value on conflict.
pub async fn update(store: Arc<dyn Store>) {
    let prefix = unique_prefix(&store, "update").await;
    let key = format!("{prefix}a");
    let created = store.create(&key, value("v1")).await.expect("create");
    let updated = store
        .update(&key, value("v2"), created.mod_revision)
        .await
        .expect("update");
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(
        updated.create_revision, created.create_revision,
        "update keeps create_revision"
    );
    assert_eq!(updated.value, value("v2"));
    assert_eq!(store.get(&key).await.expect("get"), Some(updated.clone()));

    match store.update(&key, value("v3"), created.mod_revision).await {
        Err(StoreError::Conflict {
            key: conflicted,
            expected,
            current,
        }) => {
            assert_eq!(conflicted, key);
            assert_eq!(expected, created.mod_revision);
            assert_eq!(
                current,
                Some(updated.clone()),
                "a conflict carries the current value"
            );
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    let missing = format!("{prefix}missing");
    for expected in [0, updated.mod_revision] {
        match store.update(&missing, value("x"), expected).await {
            Err(StoreError::NotFound(name)) => assert_eq!(name, missing),
            other => panic!(
                "update of a missing key (expected {expected}): expected NotFound, got {other:?}"
            ),
        }
    }
    assert_eq!(
        store.get(&missing).await.expect("get"),
        None,
        "an update must never create a key"
    );
}

/// Delete reports the deleted value and its own revision; preconditions are honoured.
pub async fn delete(store: Arc<dyn Store>) {
    let prefix = unique_prefix(&store, "delete").await;
    let key = format!("{prefix}a");
    let missing = format!("{prefix}missing");
    match store.delete(&missing, None).await {
        Err(StoreError::NotFound(name)) => assert_eq!(name, missing),
        other => panic!("delete of a missing key: expected NotFound, got {other:?}"),
    }
    match store.delete(&missing, Some(0)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("conditional delete of a missing key: expected NotFound, got {other:?}"),
    }
    let created = store.create(&key, value("v1")).await.expect("create");
    match store.delete(&key, Some(created.mod_revision + 1000)).await {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, Some(created.clone())),
        other => panic!("delete with a wrong revision: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(&key).await.expect("get"),
        Some(created.clone()),
        "a refused delete keeps the key"
    );

    let deleted = store
        .delete(&key, Some(created.mod_revision))
        .await
        .expect("delete");
    assert_eq!(deleted.prev, created);
    assert!(deleted.revision > created.mod_revision);
    assert_eq!(
        store.current_revision().await.expect("current_revision"),
        deleted.revision
    );
    assert_eq!(store.get(&key).await.expect("get"), None);

    let recreated = store
        .create(&key, value("v2"))
        .await
        .expect("re-create after delete");
    assert_eq!(
        recreated.create_revision, recreated.mod_revision,
        "a re-created key starts a new life"
    );
    let deleted = store
        .delete(&key, None)
        .await
        .expect("unconditional delete");
    assert_eq!(deleted.prev, recreated);
}

/// Range by prefix: ascending keys, prefix boundaries, limit/`more`, `start_after`, past
/// revisions, and `FutureRevision`.
pub async fn range(store: Arc<dyn Store>) {
    let base = unique_prefix(&store, "range").await;
    let prefix = format!("{base}list/");
    // Keys just outside the prefix on both sides must never appear.
    store
        .create(&format!("{base}list"), value("outside"))
        .await
        .expect("create");
    store
        .create(&format!("{base}listx/a"), value("outside"))
        .await
        .expect("create");
    for name in ["d", "b", "a", "c"] {
        store
            .create(&format!("{prefix}{name}"), value(&format!("{name}1")))
            .await
            .expect("create");
    }
    let keys = |kvs: &[KeyValue]| {
        kvs.iter()
            .map(|kv| kv.key.trim_start_matches(&prefix).to_string())
            .collect::<Vec<_>>()
    };

    let all = store
        .range(&prefix, RangeOptions::default())
        .await
        .expect("range");
    assert_eq!(
        keys(&all.kvs),
        ["a", "b", "c", "d"],
        "range is by prefix, ascending"
    );
    assert!(!all.more);
    assert_eq!(
        all.revision,
        store.current_revision().await.expect("current_revision")
    );

    let first = store
        .range(
            &prefix,
            RangeOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("range");
    assert_eq!(keys(&first.kvs), ["a", "b"]);
    assert!(first.more, "a limit that cuts the answer short sets more");
    let after = first.kvs.last().map(|kv| kv.key.clone());
    let second = store
        .range(
            &prefix,
            RangeOptions {
                limit: Some(2),
                start_after: after,
                revision: Some(first.revision),
            },
        )
        .await
        .expect("range");
    assert_eq!(keys(&second.kvs), ["c", "d"]);
    assert!(!second.more, "the last page has more = false");
    let exact = store
        .range(
            &prefix,
            RangeOptions {
                limit: Some(4),
                ..Default::default()
            },
        )
        .await
        .expect("range");
    assert!(
        !exact.more,
        "a limit equal to the count leaves more = false"
    );
    let beyond = store
        .range(
            &prefix,
            RangeOptions {
                start_after: Some(format!("{prefix}d")),
                ..Default::default()
            },
        )
        .await
        .expect("range");
    assert!(beyond.kvs.is_empty());
    let before_prefix = store
        .range(
            &prefix,
            RangeOptions {
                start_after: Some(base.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("range");
    assert_eq!(
        keys(&before_prefix.kvs),
        ["a", "b", "c", "d"],
        "start_after below the prefix is no bound"
    );

    // History: change things, then read the past.
    let snapshot = all.revision;
    let a = all.kvs[0].clone();
    store
        .update(&a.key, value("a2"), a.mod_revision)
        .await
        .expect("update");
    store
        .delete(&format!("{prefix}b"), None)
        .await
        .expect("delete");
    store
        .create(&format!("{prefix}e"), value("e1"))
        .await
        .expect("create");
    let past = store
        .range(
            &prefix,
            RangeOptions {
                revision: Some(snapshot),
                ..Default::default()
            },
        )
        .await
        .expect("range");
    assert_eq!(
        past.revision, snapshot,
        "a past read reports the revision it was served at"
    );
    assert_eq!(
        past.kvs, all.kvs,
        "a read at a past revision sees that revision's state"
    );
    let paged = store
        .range(
            &prefix,
            RangeOptions {
                revision: Some(snapshot),
                limit: Some(1),
                start_after: Some(format!("{prefix}a")),
            },
        )
        .await
        .expect("range");
    assert_eq!(keys(&paged.kvs), ["b"], "paging works at a past revision");
    assert!(paged.more);
    let latest = store
        .range(&prefix, RangeOptions::default())
        .await
        .expect("range");
    assert_eq!(keys(&latest.kvs), ["a", "c", "d", "e"]);
    assert_eq!(latest.kvs[0].value, value("a2"));
    assert_eq!(latest.kvs[0].create_revision, a.create_revision);

    let future = latest.revision + 1000;
    match store
        .range(
            &prefix,
            RangeOptions {
                revision: Some(future),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, future),
        other => panic!("range at a future revision: expected FutureRevision, got {other:?}"),
    }
}

/// What a check expects one event to be.
#[derive(Clone, Debug, PartialEq)]
struct Expected {
    kind: EventKind,
    key: String,
    revision: Revision,
    value: Bytes,
    prev_value: Option<Bytes>,
}

fn observed(event: &crate::Event) -> Expected {
    Expected {
        kind: event.kind,
        key: event.kv.key.clone(),
        revision: event.kv.mod_revision,
        value: event.kv.value.clone(),
        prev_value: event.prev_kv.as_ref().map(|kv| kv.value.clone()),
    }
}

/// A watch delivers exactly the prefix's writes in revision order with correct `prev_kv`, can be
/// resumed from any revision in the middle, and a watch "from now" sees only later writes.
pub async fn watch_order_and_resume(store: Arc<dyn Store>) {
    let base = unique_prefix(&store, "watch").await;
    let prefix = format!("{base}in/");
    let outside = format!("{base}out/");
    let start = store.current_revision().await.expect("current_revision") + 1;
    let mut expected = Vec::new();
    let mut values: BTreeMap<String, KeyValue> = BTreeMap::new();
    for step in 0..60 {
        let key = format!("{prefix}{}", step % 7);
        // Interleave writes outside the prefix; they must not be delivered.
        store
            .create(&format!("{outside}{step}"), value("noise"))
            .await
            .expect("create outside");
        let event = match values.get(&key).cloned() {
            None => {
                let kv = store
                    .create(&key, value(&format!("v{step}")))
                    .await
                    .expect("create");
                values.insert(key.clone(), kv.clone());
                Expected {
                    kind: EventKind::Put,
                    key,
                    revision: kv.mod_revision,
                    value: kv.value,
                    prev_value: None,
                }
            }
            Some(previous) if step % 3 == 0 => {
                let deleted = store
                    .delete(&key, Some(previous.mod_revision))
                    .await
                    .expect("delete");
                values.remove(&key);
                Expected {
                    kind: EventKind::Delete,
                    key,
                    revision: deleted.revision,
                    value: Bytes::new(),
                    prev_value: Some(previous.value),
                }
            }
            Some(previous) => {
                let kv = store
                    .update(&key, value(&format!("v{step}")), previous.mod_revision)
                    .await
                    .expect("update");
                values.insert(key.clone(), kv.clone());
                Expected {
                    kind: EventKind::Put,
                    key,
                    revision: kv.mod_revision,
                    value: kv.value,
                    prev_value: Some(previous.value),
                }
            }
        };
        expected.push(event);
    }

    let mut stream = store.watch(&prefix, start).await.expect("watch");
    for (index, want) in expected.iter().enumerate() {
        let got = next_event(&mut stream, "replay from the first write").await;
        assert_eq!(
            observed(&got),
            *want,
            "event {index} replayed from revision {start}"
        );
        if got.kind == EventKind::Delete {
            assert_eq!(
                got.kv.create_revision, 0,
                "a delete event's kv is a tombstone"
            );
        }
    }

    // Resume from the middle, as a client does with its last revision + 1.
    let middle = expected.len() / 2;
    let resume_at = expected[middle - 1].revision + 1;
    let mut resumed = store.watch(&prefix, resume_at).await.expect("watch");
    for want in &expected[middle..] {
        let got = next_event(&mut resumed, "resume from the middle").await;
        assert_eq!(observed(&got), *want, "resumed at {resume_at}");
    }

    // From now: only writes after the watch started, and the replaying watch follows live too.
    let mut from_now = store.watch(&prefix, 0).await.expect("watch");
    let live = store
        .create(&format!("{prefix}live"), value("live"))
        .await
        .expect("create");
    let got = next_event(&mut from_now, "watch from now").await;
    assert_eq!(got.kv, live, "a watch from now starts after its creation");
    let got = next_event(&mut stream, "replaying watch following live writes").await;
    assert_eq!(got.kv, live);
    let got = next_event(&mut resumed, "resumed watch following live writes").await;
    assert_eq!(got.kv, live);
}

/// Concurrent writers: the watch sees every acknowledged write exactly once, in strictly
/// increasing revision order, with nothing in between.
pub async fn watch_concurrent_writers(store: Arc<dyn Store>) {
    let prefix = unique_prefix(&store, "concurrent").await;
    let mut stream = store.watch(&prefix, 0).await.expect("watch");
    let writers = 16;
    let per_writer = 40;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("{prefix}{writer}");
            let mut acked = Vec::new();
            let mut kv = store.create(&key, value("0")).await.expect("create");
            acked.push((kv.mod_revision, kv.value.clone()));
            for step in 1..per_writer {
                kv = store
                    .update(&key, value(&step.to_string()), kv.mod_revision)
                    .await
                    .expect("update");
                acked.push((kv.mod_revision, kv.value.clone()));
            }
            acked
                .into_iter()
                .map(|(revision, value)| (revision, (key.clone(), value)))
                .collect::<Vec<_>>()
        }));
    }
    let mut acked = BTreeMap::new();
    for task in tasks {
        acked.extend(task.await.expect("writer task"));
    }
    assert_eq!(
        acked.len(),
        writers * per_writer,
        "every write got its own revision"
    );
    let mut last = 0;
    for (revision, (key, value)) in &acked {
        let got = next_event(&mut stream, "concurrent writes").await;
        assert!(
            got.kv.mod_revision > last,
            "watch revisions must strictly increase"
        );
        assert_eq!(
            got.kv.mod_revision, *revision,
            "the watch skipped or invented a revision"
        );
        assert_eq!((&got.kv.key, &got.kv.value), (key, value));
        last = got.kv.mod_revision;
    }
}

/// A watcher that does not read while many more writes happen than any buffer holds still
/// receives every event, in order, without gaps.
pub async fn watch_slow_reader(store: Arc<dyn Store>) {
    let prefix = unique_prefix(&store, "slow").await;
    let mut stream = store.watch(&prefix, 0).await.expect("watch");
    // One event first, so the watch is following live writes when it starts to lag.
    let first = store
        .create(&format!("{prefix}first"), value("x"))
        .await
        .expect("create");
    assert_eq!(
        next_event(&mut stream, "slow reader's first event")
            .await
            .kv,
        first
    );
    let writers = 32;
    let per_writer = 160; // 5120 writes: more than the local backends' broadcast buffer
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for step in 0..per_writer {
                let kv = store
                    .create(&format!("{prefix}{writer}/{step}"), value("x"))
                    .await
                    .expect("create");
                revisions.push(kv.mod_revision);
            }
            revisions
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("writer task"));
    }
    acked.sort_unstable();
    for revision in acked {
        let got = next_event(&mut stream, "slow reader").await;
        assert_eq!(
            got.kv.mod_revision, revision,
            "a slow watcher missed or repeated a revision"
        );
    }
}

/// Compaction: reads and watches below the compacted revision fail with `Compacted` (a watch as
/// its first item, then the stream ends); at and above it everything still works, including
/// `prev_kv` for keys last written before the compaction point.
pub async fn compaction(store: Arc<dyn Store>) {
    let prefix = unique_prefix(&store, "compaction").await;
    let key = format!("{prefix}a");
    let old = format!("{prefix}old");
    let gone = format!("{prefix}gone");
    let old_kv = store.create(&old, value("old")).await.expect("create");
    let gone_kv = store.create(&gone, value("gone")).await.expect("create");
    store.delete(&gone, None).await.expect("delete");
    let v1 = store.create(&key, value("v1")).await.expect("create");
    let v2 = store
        .update(&key, value("v2"), v1.mod_revision)
        .await
        .expect("update");
    let v3 = store
        .update(&key, value("v3"), v2.mod_revision)
        .await
        .expect("update");

    store.compact(v2.mod_revision).await.expect("compact");
    let compacted = store
        .compacted_revision()
        .await
        .expect("compacted_revision");
    assert_eq!(compacted, v2.mod_revision);

    match store
        .range(
            &prefix,
            RangeOptions {
                revision: Some(v1.mod_revision),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, v1.mod_revision);
            assert_eq!(compacted, v2.mod_revision);
        }
        other => panic!("range below the compacted revision: expected Compacted, got {other:?}"),
    }
    let at = store
        .range(
            &prefix,
            RangeOptions {
                revision: Some(v2.mod_revision),
                ..Default::default()
            },
        )
        .await;
    let at = at.expect("range at the compacted revision");
    let state: Vec<_> = at
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert_eq!(
        state,
        [(key.clone(), value("v2")), (old.clone(), value("old"))],
        "state at the compaction point"
    );

    let mut too_old = store.watch(&prefix, v1.mod_revision).await.expect("watch");
    match tokio::time::timeout(EVENT_TIMEOUT, too_old.next()).await {
        Ok(Some(Err(StoreError::Compacted { compacted, .. }))) => {
            assert_eq!(compacted, v2.mod_revision)
        }
        other => {
            panic!("watch below the compacted revision: expected Err(Compacted), got {other:?}")
        }
    }
    match tokio::time::timeout(EVENT_TIMEOUT, too_old.next()).await {
        Ok(None) => {}
        other => panic!("a watch must end after Err(Compacted), got {other:?}"),
    }

    let mut stream = store
        .watch(&prefix, v2.mod_revision)
        .await
        .expect("watch at the compaction point");
    let got = next_event(&mut stream, "watch from the compaction point").await;
    assert_eq!(got.kv, v2);
    let got = next_event(&mut stream, "watch from the compaction point").await;
    assert_eq!(got.kv, v3);
    assert_eq!(got.prev_kv, Some(v2.clone()));
    // A key last written before the compaction point keeps its value as `prev_kv`.
    let old_updated = store
        .update(&old, value("new"), old_kv.mod_revision)
        .await
        .expect("update");
    let got = next_event(&mut stream, "update of a key written before compaction").await;
    assert_eq!(got.kv, old_updated);
    assert_eq!(got.prev_kv, Some(old_kv));
    // A key deleted before the compaction point stays deleted and can be created afresh.
    assert_eq!(store.get(&gone).await.expect("get"), None);
    let reborn = store.create(&gone, value("again")).await.expect("create");
    let got = next_event(&mut stream, "re-create of a key deleted before compaction").await;
    assert_eq!(got.kv, reborn);
    assert_eq!(
        got.prev_kv, None,
        "a key created after its deletion has no prev_kv"
    );
    assert!(reborn.create_revision > gone_kv.create_revision);

    store
        .compact(v1.mod_revision)
        .await
        .expect("compacting to an older revision is a no-op");
    assert_eq!(
        store
            .compacted_revision()
            .await
            .expect("compacted_revision"),
        v2.mod_revision
    );
    let current = store.current_revision().await.expect("current_revision");
    match store.compact(current + 1000).await {
        Err(StoreError::FutureRevision { .. }) => {}
        other => {
            panic!("compact beyond the current revision: expected FutureRevision, got {other:?}")
        }
    }
    store
        .compact(current)
        .await
        .expect("compact to the current revision");
    let latest = store
        .range(&prefix, RangeOptions::default())
        .await
        .expect("range after compaction");
    assert_eq!(
        latest.kvs.len(),
        3,
        "compaction never changes the latest state"
    );
}

/// Why a throwaway etcd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdServerError {
    #[error("finding a free port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),
    #[error("creating the etcd log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd at {endpoint} did not become ready within {timeout:?}; see {log}")]
    NotReady {
        endpoint: String,
        timeout: Duration,
        log: PathBuf,
    },
}

/// A single-member etcd on free 127.0.0.1 ports, killed (by its PID, through the child handle)
/// when dropped. For tests and benchmarks only.
pub struct EtcdServer {
    child: Child,
    endpoint: String,
}

impl EtcdServer {
    /// How long `start` waits for etcd to answer.
    const READY_TIMEOUT: Duration = Duration::from_secs(30);

    /// Starts `binary` (usually `/usr/bin/etcd`) with its data and `etcd.log` in `data_dir`, and
    /// waits until it serves requests.
    pub async fn start(binary: &Path, data_dir: &Path) -> Result<Self, EtcdServerError> {
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = data_dir.join("etcd.log");
        let log_file = std::fs::File::create(&log).map_err(|source| EtcdServerError::Log {
            path: log.clone(),
            source,
        })?;
        let log_err = log_file
            .try_clone()
            .map_err(|source| EtcdServerError::Log {
                path: log.clone(),
                source,
            })?;
        let child = Command::new(binary)
            .arg("--name=skiff-test")
            .arg(format!("--data-dir={}", data_dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=skiff-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|source| EtcdServerError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        let mut server = Self { child, endpoint };
        let deadline = tokio::time::Instant::now() + Self::READY_TIMEOUT;
        loop {
            let exited = matches!(server.child.try_wait(), Ok(Some(_)));
            if !exited
                && let Ok(Ok(_)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    EtcdStore::connect(std::slice::from_ref(&server.endpoint)),
                )
                .await
            {
                return Ok(server);
            }
            if exited || tokio::time::Instant::now() >= deadline {
                let endpoint = std::mem::take(&mut server.endpoint);
                return Err(EtcdServerError::NotReady {
                    endpoint,
                    timeout: Self::READY_TIMEOUT,
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The etcd process's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, EtcdServerError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(EtcdServerError::Port)?;
    Ok(listener.local_addr().map_err(EtcdServerError::Port)?.port())
}
