//! The embedded default backend: one SQLite database in WAL mode.
//!
//! * Layout: `kv` holds one row per write (the revision is the row id), so history for reads at
//!   past revisions and for watch replay is the table itself; `current` maps each live key to its
//!   newest row, so latest reads don't scan history; `meta` holds the compacted revision.
//! * Writes: one writer thread owns the only writing connection. It drains whatever requests are
//!   queued, applies them in one transaction (preconditions are checked before a request writes,
//!   so a refused request leaves nothing; a statement failing mid-request rolls the whole batch
//!   back and fails it), commits once, and only then publishes the new revision,
//!   broadcasts the events and acknowledges every request of the batch. `synchronous=FULL` makes
//!   that commit fsync the WAL, so an acknowledged write survives `kill -9` and power loss, and
//!   concurrent writers share one fsync (group commit).
//! * Reads: a small pool of read connections used from `spawn_blocking`; WAL readers see a
//!   consistent snapshot per transaction and never wait for the writer.
//! * Recovery: SQLite replays or discards the WAL on open; the revision counter is the largest
//!   row id, which compaction never removes (it keeps every row at or above the compaction point).
//! * Compaction: `compact` first records the new compaction point (reads below it fail from
//!   then on), then deletes unneeded rows in windows of revisions, each its own small
//!   transaction queued behind ordinary writes so a large purge never stalls them for long.
//!
//! Opening the same database from two processes at once is not supported: both writers would
//! assign revisions from their own counters, and the second one's inserts would fail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::watch::{self, BROADCAST_CAPACITY, History, HistoryPage};
use crate::{
    DeleteResult, Event, EventKind, KeyValue, RangeOptions, RangeResult, Result, Revision, Store,
    StoreError, WatchStream, prefix_end,
};

/// Requests one writer batch may hold: bounds the time any request waits behind others.
const MAX_BATCH: usize = 512;
/// Requests queued for the writer before `create`/`update`/`delete` wait for room.
const WRITE_QUEUE: usize = 4096;
/// Read connections kept open between reads.
const IDLE_READERS: usize = 8;
/// Revisions one compaction purge transaction covers.
const PURGE_WINDOW: Revision = 10_000;
/// How long a connection waits for a lock (only checkpoints and a second process contend).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    revision INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_key_revision ON kv (key, revision);
CREATE TABLE IF NOT EXISTS current (key BLOB PRIMARY KEY, revision INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
";

/// Errors of the SQLite backend; all are reported as [`StoreError::Backend`] and are not
/// retryable except where the message says the writer stopped.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("creating the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening SQLite database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "SQLite journal mode is {0:?}, not WAL (is the file on a filesystem without shared memory?)"
    )]
    NotWal(String),
    #[error("SQLite {step}: {source}")]
    Query {
        step: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("committing a batch of writes: {0}")]
    Commit(String),
    #[error("the key stored at revision {revision} is not UTF-8")]
    KeyEncoding { revision: Revision },
    #[error("starting the SQLite writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    #[error("a SQLite read task failed: {0}")]
    ReadTask(String),
}

impl From<SqliteError> for StoreError {
    fn from(error: SqliteError) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

fn query(step: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| SqliteError::Query { step, source }.into()
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer thread has stopped".into())
}

/// The revision and compaction point as of the last commit, for cheap reads.
#[derive(Default)]
struct Heads {
    revision: AtomicI64,
    compacted: AtomicI64,
}

/// The SQLite store. Dropping it stops the writer thread once queued writes are done.
pub struct SqliteStore {
    writer: mpsc::Sender<WriteRequest>,
    reader: Arc<Reader>,
    live: broadcast::Sender<Arc<Event>>,
    heads: Arc<Heads>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path))
            .await
            .map_err(|error| SqliteError::ReadTask(error.to_string()))?
    }

    fn open_blocking(path: PathBuf) -> Result<Self> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| SqliteError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(&path).map_err(|source| SqliteError::Open {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(query("setting busy_timeout"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(query("enabling WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqliteError::NotWal(mode).into());
        }
        // FULL: every commit fsyncs the WAL before we acknowledge (NORMAL would only fsync at
        // checkpoints and can lose acknowledged writes on power loss).
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(query("setting synchronous=FULL"))?;
        // Checkpoints stay with the writer (SQLite's automatic checkpoint at 1000 pages): a
        // fully checkpointed WAL is then restarted from its beginning, so commits overwrite
        // blocks instead of growing the file, and their fsync need not update the file size.
        // A checkpointer on another thread measured 10x slower single-writer commits, because
        // under constant writes the WAL never got the chance to restart.
        conn.execute_batch(SCHEMA)
            .map_err(query("creating the schema"))?;
        let (revision, compacted) = read_heads(&conn)?;
        tracing::info!(path = %path.display(), revision, compacted, "opened SQLite store");

        let heads = Arc::new(Heads {
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
        });
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (writer, requests) = mpsc::channel(WRITE_QUEUE);
        let thread = Writer {
            conn,
            head: revision,
            compacted,
            heads: heads.clone(),
            live: live.clone(),
        };
        std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || thread.run(requests))
            .map_err(SqliteError::WriterThread)?;
        let reader = Arc::new(Reader {
            path,
            idle: Mutex::new(Vec::new()),
            heads: heads.clone(),
        });
        Ok(Self {
            writer,
            reader,
            live,
            heads,
        })
    }

    async fn submit<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteRequest,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(request(reply))
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let key = key.to_string();
        self.submit(|reply| WriteRequest::Create { key, value, reply })
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.reader.run(move |conn| current(conn, &key)).await
    }

    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        let prefix = prefix.to_string();
        self.reader
            .run(move |conn| range(conn, &prefix, &opts))
            .await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue> {
        let key = key.to_string();
        self.submit(|reply| WriteRequest::Update {
            key,
            value,
            expected: expected_mod_revision,
            reply,
        })
        .await
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<DeleteResult> {
        let key = key.to_string();
        self.submit(|reply| WriteRequest::Delete {
            key,
            expected: expected_mod_revision,
            reply,
        })
        .await
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.heads.revision.load(Ordering::Acquire))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.heads.compacted.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let started = std::time::Instant::now();
        if !self
            .submit(|reply| WriteRequest::Compact { revision, reply })
            .await?
        {
            return Ok(());
        }
        let oldest: Revision = self
            .reader
            .run(|conn| {
                conn.query_row("SELECT coalesce(min(revision), 0) FROM kv", [], |row| {
                    row.get(0)
                })
                .map_err(query("finding the oldest revision"))
            })
            .await?;
        let mut removed = 0;
        let mut from = oldest;
        while from < revision {
            let to = from.saturating_add(PURGE_WINDOW).min(revision);
            removed += self
                .submit(|reply| WriteRequest::Purge {
                    below: revision,
                    from,
                    to,
                    reply,
                })
                .await?;
            from = to;
        }
        tracing::info!(revision, removed, elapsed = ?started.elapsed(), "compacted SQLite history");
        Ok(())
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream> {
        // Subscribe before deciding the start and before any history read (see `watch`).
        let live = self.live.subscribe();
        let start = if start_revision > 0 {
            start_revision
        } else {
            self.heads.revision.load(Ordering::Acquire) + 1
        };
        let history: Arc<dyn History> = Arc::new(Replay {
            reader: self.reader.clone(),
        });
        Ok(watch::watch_stream(
            history,
            live,
            prefix.to_string(),
            start,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

/// The pool of read connections.
struct Reader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    heads: Arc<Heads>,
}

impl Reader {
    /// Runs `read` on a pooled connection on the blocking thread pool.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let reader = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.take()?;
            let result = read(&conn);
            reader.give_back(conn);
            result
        })
        .await
        .map_err(|error| SqliteError::ReadTask(error.to_string()))?
    }

    fn take(&self) -> Result<Connection> {
        if let Some(conn) = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
        {
            return Ok(conn);
        }
        let conn = Connection::open(&self.path).map_err(|source| SqliteError::Open {
            path: self.path.clone(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(query("setting busy_timeout"))?;
        conn.execute_batch("PRAGMA query_only=1;")
            .map_err(query("setting query_only"))?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// The history a watch replays, read through the pool.
struct Replay {
    reader: Arc<Reader>,
}

#[async_trait::async_trait]
impl History for Replay {
    async fn events_since(
        &self,
        prefix: &str,
        from: Revision,
        limit: usize,
    ) -> Result<HistoryPage> {
        let compacted = self.reader.heads.compacted.load(Ordering::Acquire);
        if from < compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted,
            });
        }
        let prefix = prefix.to_string();
        self.reader
            .run(move |conn| events_since(conn, &prefix, from, limit))
            .await
    }
}

/// Reads the newest revision and the compaction point.
fn read_heads(conn: &Connection) -> Result<(Revision, Revision)> {
    let newest: Revision = conn
        .prepare_cached("SELECT coalesce(max(revision), 0) FROM kv")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .map_err(query("reading the current revision"))?;
    let compacted: Revision = conn
        .prepare_cached("SELECT value FROM meta WHERE name = 'compacted'")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)).optional())
        .map_err(query("reading the compacted revision"))?
        .unwrap_or(0);
    Ok((newest.max(compacted), compacted))
}

fn key_string(bytes: Vec<u8>, revision: Revision) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| SqliteError::KeyEncoding { revision }.into())
}

/// The latest live value of `key`.
fn current(conn: &Connection, key: &str) -> Result<Option<KeyValue>> {
    let row = conn
        .prepare_cached(
            "SELECT k.create_revision, k.revision, k.value FROM current c JOIN kv k ON k.revision = c.revision
             WHERE c.key = ?1",
        )
        .and_then(|mut statement| {
            statement
                .query_row([key.as_bytes()], |row| {
                    Ok((row.get::<_, Revision>(0)?, row.get::<_, Revision>(1)?, row.get::<_, Vec<u8>>(2)?))
                })
                .optional()
        })
        .map_err(query("reading a key"))?;
    Ok(row.map(|(create_revision, mod_revision, value)| KeyValue {
        key: key.to_string(),
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    }))
}

/// The SQL key bounds for keys under `prefix` (and after `start_after`), with their parameters.
fn key_bounds(
    column: &str,
    prefix: &str,
    start_after: Option<&str>,
    params: &mut Vec<Value>,
) -> String {
    let mut sql = match start_after {
        Some(after) if after >= prefix => {
            params.push(Value::Blob(after.as_bytes().to_vec()));
            format!("{column} > ?{}", params.len())
        }
        _ => {
            params.push(Value::Blob(prefix.as_bytes().to_vec()));
            format!("{column} >= ?{}", params.len())
        }
    };
    if let Some(end) = prefix_end(prefix.as_bytes()) {
        params.push(Value::Blob(end));
        sql.push_str(&format!(" AND {column} < ?{}", params.len()));
    }
    sql
}

fn range(conn: &Connection, prefix: &str, opts: &RangeOptions) -> Result<RangeResult> {
    let tx = conn
        .unchecked_transaction()
        .map_err(query("starting a read"))?;
    let (head, compacted) = read_heads(&tx)?;
    let at = match opts.revision {
        Some(revision) if revision > 0 => {
            if revision < compacted {
                return Err(StoreError::Compacted {
                    requested: revision,
                    compacted,
                });
            }
            if revision > head {
                return Err(StoreError::FutureRevision {
                    requested: revision,
                    current: head,
                });
            }
            revision
        }
        _ => head,
    };
    let mut params = Vec::new();
    let sql = if at == head {
        let bounds = key_bounds("c.key", prefix, opts.start_after.as_deref(), &mut params);
        format!(
            "SELECT c.key, k.create_revision, k.revision, k.value FROM current c JOIN kv k ON k.revision = c.revision
             WHERE {bounds} ORDER BY c.key LIMIT ?{}",
            params.len() + 1
        )
    } else {
        let bounds = key_bounds("k.key", prefix, opts.start_after.as_deref(), &mut params);
        params.push(Value::Integer(at));
        let at_param = params.len();
        format!(
            "SELECT k.key, k.create_revision, k.revision, k.value FROM kv k
             WHERE {bounds} AND k.revision <= ?{at_param} AND k.deleted = 0
               AND k.revision = (SELECT max(m.revision) FROM kv m WHERE m.key = k.key AND m.revision <= ?{at_param})
             ORDER BY k.key LIMIT ?{}",
            params.len() + 1
        )
    };
    // One more than asked, to learn whether the limit cut the answer short.
    let fetch = opts.limit.map_or(-1, |limit| {
        i64::try_from(limit)
            .unwrap_or(i64::MAX - 1)
            .saturating_add(1)
    });
    params.push(Value::Integer(fetch));
    let mut statement = tx
        .prepare_cached(&sql)
        .map_err(query("preparing a range read"))?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(params), |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, Revision>(1)?,
                row.get::<_, Revision>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })
        .map_err(query("running a range read"))?;
    let mut result = RangeResult {
        kvs: Vec::new(),
        more: false,
        revision: at,
    };
    for row in rows {
        let (key, create_revision, mod_revision, value) =
            row.map_err(query("reading a range row"))?;
        if opts.limit.is_some_and(|limit| result.kvs.len() >= limit) {
            result.more = true;
            break;
        }
        result.kvs.push(KeyValue {
            key: key_string(key, mod_revision)?,
            value: Bytes::from(value),
            create_revision,
            mod_revision,
        });
    }
    Ok(result)
}

fn events_since(
    conn: &Connection,
    prefix: &str,
    from: Revision,
    limit: usize,
) -> Result<HistoryPage> {
    let tx = conn
        .unchecked_transaction()
        .map_err(query("starting a history read"))?;
    let (head, compacted) = read_heads(&tx)?;
    if from < compacted {
        return Err(StoreError::Compacted {
            requested: from,
            compacted,
        });
    }
    if from > head {
        return Ok(HistoryPage {
            events: Vec::new(),
            head,
        });
    }
    let mut params = vec![Value::Integer(from)];
    // The unary `+` keeps SQLite on the revision (row id) order instead of the key index: a
    // watch prefix usually matches most keys, and sorting all of history by revision per page
    // would be far slower than filtering a row-id scan.
    let bounds = key_bounds("+k.key", prefix, None, &mut params);
    params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let sql = format!(
        "SELECT k.revision, k.key, k.create_revision, k.deleted, k.value, p.revision, p.create_revision, p.value
         FROM kv k LEFT JOIN kv p ON k.prev_revision <> 0 AND p.revision = k.prev_revision
         WHERE k.revision >= ?1 AND {bounds} ORDER BY k.revision LIMIT ?{}",
        params.len()
    );
    let mut statement = tx
        .prepare_cached(&sql)
        .map_err(query("preparing a history read"))?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(params), |row| {
            Ok((
                row.get::<_, Revision>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Revision>(2)?,
                row.get::<_, bool>(3)?,
                row.get::<_, Vec<u8>>(4)?,
                row.get::<_, Option<Revision>>(5)?,
                row.get::<_, Option<Revision>>(6)?,
                row.get::<_, Option<Vec<u8>>>(7)?,
            ))
        })
        .map_err(query("running a history read"))?;
    let mut events = Vec::new();
    for row in rows {
        let (
            revision,
            key,
            create_revision,
            deleted,
            value,
            prev_revision,
            prev_create,
            prev_value,
        ) = row.map_err(query("reading a history row"))?;
        let key = key_string(key, revision)?;
        let prev_kv = match (prev_revision, prev_create, prev_value) {
            (Some(mod_revision), Some(create_revision), Some(value)) => Some(KeyValue {
                key: key.clone(),
                value: Bytes::from(value),
                create_revision,
                mod_revision,
            }),
            _ => None,
        };
        let kind = if deleted {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        let kv = KeyValue {
            key,
            value: Bytes::from(value),
            create_revision,
            mod_revision: revision,
        };
        events.push(Event { kind, kv, prev_kv });
    }
    Ok(HistoryPage { events, head })
}

// ---------------------------------------------------------------------------------------------
// Writes

enum WriteRequest {
    Create {
        key: String,
        value: Bytes,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
        reply: oneshot::Sender<Result<DeleteResult>>,
    },
    /// Records a new compaction point; answers whether it moved.
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<bool>>,
    },
    /// Deletes unneeded rows with revisions in `from..to`, for a compaction at `below`.
    Purge {
        below: Revision,
        from: Revision,
        to: Revision,
        reply: oneshot::Sender<Result<usize>>,
    },
}

/// A request applied inside the open transaction, waiting for the commit.
enum Applied {
    Kv {
        reply: oneshot::Sender<Result<KeyValue>>,
        result: Result<KeyValue>,
        event: Option<Event>,
    },
    Delete {
        reply: oneshot::Sender<Result<DeleteResult>>,
        result: Result<DeleteResult>,
        event: Option<Event>,
    },
    Compact {
        reply: oneshot::Sender<Result<bool>>,
        result: Result<bool>,
    },
    Purge {
        reply: oneshot::Sender<Result<usize>>,
        result: Result<usize>,
    },
}

impl Applied {
    /// Turns the request's outcome into a failure of the whole batch.
    fn fail(&mut self, message: &str) {
        let error = || SqliteError::Commit(message.to_string()).into();
        match self {
            Applied::Kv { result, event, .. } => {
                *result = Err(error());
                *event = None;
            }
            Applied::Delete { result, event, .. } => {
                *result = Err(error());
                *event = None;
            }
            Applied::Compact { result, .. } => *result = Err(error()),
            Applied::Purge { result, .. } => *result = Err(error()),
        }
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    /// The newest committed (or, inside a batch, applied) revision.
    head: Revision,
    compacted: Revision,
    heads: Arc<Heads>,
    live: broadcast::Sender<Arc<Event>>,
}

impl Writer {
    fn run(mut self, mut requests: mpsc::Receiver<WriteRequest>) {
        while let Some(first) = requests.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        tracing::debug!("SQLite writer thread stopped");
    }

    fn commit_batch(&mut self, batch: Vec<WriteRequest>) {
        let (head, compacted) = (self.head, self.compacted);
        let mut applied = Vec::with_capacity(batch.len());
        let outcome = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(mut tx) => {
                let mut poisoned = false;
                for request in batch {
                    applied.push(apply(&mut tx, &mut self.head, &mut self.compacted, request, &mut poisoned));
                }
                if poisoned {
                    // Dropping the transaction rolls it back: nothing of this batch is kept.
                    drop(tx);
                    Err("a write in this batch failed after it started; the batch was rolled back".to_string())
                } else {
                    tx.commit().map_err(|e| e.to_string())
                }
            }
            Err(error) => {
                applied.extend(batch.into_iter().map(unapplied));
                Err(error.to_string())
            }
        };
        if let Err(message) = outcome {
            tracing::error!(error = %message, "committing a batch of SQLite writes failed");
            for request in &mut applied {
                request.fail(&message);
            }
            self.head = head;
            self.compacted = compacted;
        }
        self.heads.revision.store(self.head, Ordering::Release);
        self.heads
            .compacted
            .store(self.compacted, Ordering::Release);
        for request in applied {
            match request {
                Applied::Kv {
                    reply,
                    result,
                    event,
                } => {
                    if let Some(event) = event {
                        let _ = self.live.send(Arc::new(event));
                    }
                    let _ = reply.send(result);
                }
                Applied::Delete {
                    reply,
                    result,
                    event,
                } => {
                    if let Some(event) = event {
                        let _ = self.live.send(Arc::new(event));
                    }
                    let _ = reply.send(result);
                }
                Applied::Compact { reply, result } => {
                    let _ = reply.send(result);
                }
                Applied::Purge { reply, result } => {
                    let _ = reply.send(result);
                }
            }
        }
    }
}

/// A request that never ran (its transaction could not start); `fail` fills in the error.
fn unapplied(request: WriteRequest) -> Applied {
    fn pending<T>() -> Result<T> {
        Err(SqliteError::Commit("the transaction did not start".into()).into())
    }
    match request {
        WriteRequest::Create { reply, .. } | WriteRequest::Update { reply, .. } => Applied::Kv {
            reply,
            result: pending(),
            event: None,
        },
        WriteRequest::Delete { reply, .. } => Applied::Delete {
            reply,
            result: pending(),
            event: None,
        },
        WriteRequest::Compact { reply, .. } => Applied::Compact {
            reply,
            result: pending(),
        },
        WriteRequest::Purge { reply, .. } => Applied::Purge {
            reply,
            result: pending(),
        },
    }
}

/// Applies one request inside the batch's transaction. Every precondition (exists, mod
/// revision) is checked before the request writes anything, so a refused request leaves
/// nothing behind without a savepoint (a savepoint per request cost measurable parse time on
/// every write). A failure after writing (an SQL or I/O error) marks the batch `poisoned`: it
/// is rolled back whole and every request in it fails, so nothing half-written is committed.
fn apply(
    tx: &mut Transaction<'_>,
    head: &mut Revision,
    compacted: &mut Revision,
    request: WriteRequest,
    poisoned: &mut bool,
) -> Applied {
    fn in_savepoint<T>(
        tx: &Transaction<'_>,
        poisoned: &mut bool,
        body: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        let result = body(tx);
        if let Err(e) = &result
            && !matches!(
                e,
                StoreError::AlreadyExists(_)
                    | StoreError::NotFound(_)
                    | StoreError::Conflict { .. }
                    | StoreError::Compacted { .. }
                    | StoreError::FutureRevision { .. }
            )
        {
            *poisoned = true;
        }
        result
    }
    match request {
        WriteRequest::Create { key, value, reply } => {
            let revision = *head + 1;
            let result = in_savepoint(tx, poisoned, |conn| {
                if current(conn, &key)?.is_some() {
                    return Err(StoreError::AlreadyExists(key.clone()));
                }
                insert_row(conn, revision, &key, revision, 0, false, &value)?;
                conn.prepare_cached("INSERT INTO current (key, revision) VALUES (?1, ?2)")
                    .and_then(|mut statement| statement.execute(params![key.as_bytes(), revision]))
                    .map_err(query("indexing a created key"))?;
                Ok(KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                })
            });
            let event = result.as_ref().ok().map(|kv| {
                *head = revision;
                Event {
                    kind: EventKind::Put,
                    kv: kv.clone(),
                    prev_kv: None,
                }
            });
            Applied::Kv {
                reply,
                result,
                event,
            }
        }
        WriteRequest::Update {
            key,
            value,
            expected,
            reply,
        } => {
            let revision = *head + 1;
            let result = in_savepoint(tx, poisoned, |conn| {
                let previous =
                    current(conn, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
                if previous.mod_revision != expected {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected,
                        current: Some(previous),
                    });
                }
                insert_row(
                    conn,
                    revision,
                    &key,
                    previous.create_revision,
                    previous.mod_revision,
                    false,
                    &value,
                )?;
                conn.prepare_cached("UPDATE current SET revision = ?2 WHERE key = ?1")
                    .and_then(|mut statement| statement.execute(params![key.as_bytes(), revision]))
                    .map_err(query("indexing an updated key"))?;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: previous.create_revision,
                    mod_revision: revision,
                };
                Ok((kv, previous))
            });
            let (result, event) = match result {
                Ok((kv, previous)) => {
                    *head = revision;
                    let event = Event {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                        prev_kv: Some(previous),
                    };
                    (Ok(kv), Some(event))
                }
                Err(error) => (Err(error), None),
            };
            Applied::Kv {
                reply,
                result,
                event,
            }
        }
        WriteRequest::Delete {
            key,
            expected,
            reply,
        } => {
            let revision = *head + 1;
            let result = in_savepoint(tx, poisoned, |conn| {
                let previous =
                    current(conn, &key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
                if let Some(expected) = expected
                    && previous.mod_revision != expected
                {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected,
                        current: Some(previous),
                    });
                }
                insert_row(
                    conn,
                    revision,
                    &key,
                    0,
                    previous.mod_revision,
                    true,
                    &Bytes::new(),
                )?;
                conn.prepare_cached("DELETE FROM current WHERE key = ?1")
                    .and_then(|mut statement| statement.execute([key.as_bytes()]))
                    .map_err(query("unindexing a deleted key"))?;
                Ok(previous)
            });
            let (result, event) = match result {
                Ok(previous) => {
                    *head = revision;
                    let kv = KeyValue {
                        key,
                        value: Bytes::new(),
                        create_revision: 0,
                        mod_revision: revision,
                    };
                    let event = Event {
                        kind: EventKind::Delete,
                        kv,
                        prev_kv: Some(previous.clone()),
                    };
                    (
                        Ok(DeleteResult {
                            prev: previous,
                            revision,
                        }),
                        Some(event),
                    )
                }
                Err(error) => (Err(error), None),
            };
            Applied::Delete {
                reply,
                result,
                event,
            }
        }
        WriteRequest::Compact { revision, reply } => {
            let result = if revision > *head {
                Err(StoreError::FutureRevision {
                    requested: revision,
                    current: *head,
                })
            } else if revision <= *compacted {
                Ok(false)
            } else {
                in_savepoint(tx, poisoned, |conn| {
                    conn.prepare_cached(
                        "INSERT OR REPLACE INTO meta (name, value) VALUES ('compacted', ?1)",
                    )
                    .and_then(|mut statement| statement.execute([revision]))
                    .map_err(query("recording the compacted revision"))?;
                    Ok(true)
                })
            };
            if matches!(result, Ok(true)) {
                *compacted = revision;
            }
            Applied::Compact { reply, result }
        }
        WriteRequest::Purge {
            below,
            from,
            to,
            reply,
        } => {
            // A row below the compaction point is needed only while it is its key's newest row
            // below that point and not a tombstone: reads at `>= below` may return it, and it
            // is the `prev_kv` of the key's next event. Tombstones below it are never needed:
            // the key's next row starts a new life (`prev_revision` 0).
            let result = in_savepoint(tx, poisoned, |conn| {
                conn.prepare_cached(
                    "DELETE FROM kv WHERE revision >= ?1 AND revision < ?2 AND (deleted = 1 OR EXISTS (
                         SELECT 1 FROM kv n WHERE n.key = kv.key AND n.revision > kv.revision AND n.revision < ?3))",
                )
                .and_then(|mut statement| statement.execute([from, to.min(below), below]))
                .map_err(query("purging compacted history"))
            });
            Applied::Purge { reply, result }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn insert_row(
    conn: &Connection,
    revision: Revision,
    key: &str,
    create_revision: Revision,
    prev_revision: Revision,
    deleted: bool,
    value: &Bytes,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (revision, key, create_revision, prev_revision, deleted, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut statement| {
        statement.execute(params![revision, key.as_bytes(), create_revision, prev_revision, deleted, value.as_ref()])
    })
    .map_err(query("appending to history"))?;
    Ok(())
}
