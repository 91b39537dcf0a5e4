//! Skiff's revisioned key-value store with watch, shaped like etcd v3.
//!
//! * [`Store`]: the one trait every backend implements. Every successful write gets one
//!   cluster-wide, strictly increasing revision; reads can be served at a past revision still in
//!   history; watches replay history from a revision and then follow live writes.
//! * `memory`: an in-memory backend for fast unit tests.
//! * `sqlite`: the embedded default (rusqlite, WAL, fsync before acknowledging, group commit).
//! * `etcd`: a real etcd cluster through `etcd-client`, so several servers can share state.
//! * `compactor`: the periodic task that drops history older than the retention window.
//! * `conformance`: the behaviour suite every backend must pass (used by each backend's tests),
//!   plus [`conformance::EtcdServer`], a throwaway local etcd for tests and benchmarks.
//! * `watch` (private): replay-then-follow watches shared by the memory and sqlite backends.
//!
//! The flow: [`open`] turns a [`Backend`] into an `Arc<dyn Store>`; [`spawn_compactor`] keeps
//! history at about [`StoreConfig::history_retention`]; the API server reads, writes and runs
//! one watch through the [`Store`] trait.
//!
//! A watcher that falls behind never sees a gap: the local backends re-read what it missed from
//! history (see `watch`), etcd buffers on its side; only history compacted in the meantime ends
//! the watch with `Err(Compacted)`.
//!
//! Revision semantics follow etcd: a watch's `start_revision` is inclusive, a read or watch
//! below the compacted revision fails with [`StoreError::Compacted`].

use std::sync::Arc;
use std::time::Duration;

pub use bytes::Bytes;
use futures::stream::BoxStream;

pub mod compactor;
pub mod conformance;
pub mod etcd;
pub mod memory;
pub mod sqlite;
mod watch;

pub use compactor::spawn_compactor;

/// A store revision. Revision 0 never holds data; the first write is revision 1 or later.
pub type Revision = i64;

/// One stored key and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision of the write that created this key (unchanged by updates).
    pub create_revision: Revision,
    /// The revision of the last write to this key. For a delete event's `kv`, the delete's revision.
    /// A delete event's `kv` has `create_revision` 0, as etcd's tombstones do.
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, delivered by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put: the new value. For a delete: the key, an empty value, and
    /// `mod_revision` = the revision of the delete.
    pub kv: KeyValue,
    /// The value before this change: `None` for a put that created the key; always `Some`
    /// for a delete (the deleted value).
    pub prev_kv: Option<KeyValue>,
}

/// How a range read is served.
#[derive(Clone, Debug, Default)]
pub struct RangeOptions {
    /// Read at this past revision (must not be compacted); `None` reads the latest state.
    pub revision: Option<Revision>,
    /// At most this many keys; `None` is unlimited.
    pub limit: Option<usize>,
    /// Only keys strictly greater than this (for continue tokens).
    pub start_after: Option<String>,
}

/// The answer to a range read.
#[derive(Clone, Debug, Default)]
pub struct RangeResult {
    /// Keys in ascending byte order.
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the answer short.
    pub more: bool,
    /// The revision the read was served at (the store revision for a latest read).
    pub revision: Revision,
}

/// The result of a successful delete.
#[derive(Clone, Debug)]
pub struct DeleteResult {
    /// The value that was deleted.
    pub prev: KeyValue,
    /// The revision of the delete.
    pub revision: Revision,
}

/// Store errors. `Unavailable` is retryable; the others describe the request's outcome.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// An update or delete whose expected mod revision did not match. Carries the current value.
    #[error("conflict on key {key}: expected mod revision {expected}, current {}", current.as_ref().map(|kv| kv.mod_revision).unwrap_or(0))]
    Conflict {
        key: String,
        expected: Revision,
        current: Option<KeyValue>,
    },
    /// The requested revision is older than the compacted revision.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The backend could not be reached or failed; retryable.
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    #[error("datastore I/O error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of watch events. Ends with an `Err(Compacted)` item when the watch fell behind the
/// retained history; otherwise runs until dropped.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// The revisioned key-value store.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates `key` only if absent. Errors: `AlreadyExists`.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;
    /// The latest value of `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Keys starting with `prefix`, ascending.
    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult>;
    /// Replaces `key` only if its mod revision is `expected_mod_revision`.
    /// Errors: `NotFound`, `Conflict`.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue>;
    /// Deletes `key`, only if its mod revision matches when `expected_mod_revision` is set.
    /// Errors: `NotFound`, `Conflict`.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<DeleteResult>;
    /// The revision of the newest write (0 for an empty, never-written store).
    async fn current_revision(&self) -> Result<Revision>;
    /// The compaction point: reads and watches at revisions `>= compacted_revision()` are served,
    /// those below fail with `Compacted` (0 when nothing was ever compacted).
    async fn compacted_revision(&self) -> Result<Revision>;
    /// Drops history below `revision` (no-op when already compacted further).
    /// Errors: `FutureRevision` when `revision` is above the current revision.
    async fn compact(&self, revision: Revision) -> Result<()>;
    /// Events for keys under `prefix` with revision `>= start_revision`, in revision order,
    /// without gaps or duplicates, then live events. `start_revision` 0 means "from now".
    ///
    /// A start revision below the compacted revision is reported as the stream's first item,
    /// `Err(Compacted)`, never as this call's error, so callers have one path for "re-list".
    /// After any `Err` item the stream ends; resume with a new watch from the last delivered
    /// revision + 1. The call itself fails only when the backend is unreachable.
    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream>;
}

/// Which backend to open, from the `--datastore-endpoint` / `--data-dir` flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    /// The SQLite database file (e.g. `<data-dir>/skiff.db`); it and its parent directories
    /// are created when missing.
    Sqlite {
        path: std::path::PathBuf,
    },
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    Etcd {
        endpoints: Vec<String>,
    },
}

/// Store-wide settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How much history compaction keeps (default 5 minutes, like upstream).
    pub history_retention: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            history_retention: Duration::from_secs(300),
        }
    }
}

/// Opens the store `backend` names: creates or recovers the SQLite database, or connects to etcd.
///
/// Errors: `Backend` when the SQLite file cannot be opened or initialised, `Unavailable` when
/// etcd cannot be reached. `config` is applied by [`spawn_compactor`]; it is taken here too so
/// that callers pass one configuration to both.
pub async fn open(backend: &Backend, _config: &StoreConfig) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match backend {
        Backend::Memory => Arc::new(memory::MemoryStore::new()),
        Backend::Sqlite { path } => Arc::new(sqlite::SqliteStore::open(path).await?),
        Backend::Etcd { endpoints } => Arc::new(etcd::EtcdStore::connect(endpoints).await?),
    };
    Ok(store)
}

/// The smallest key greater than every key starting with `prefix`, as etcd computes prefix range
/// ends (`clientv3.GetPrefixRangeEnd`); `None` when there is none (empty or all-0xff prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/registry/"), Some(b"/registry0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
