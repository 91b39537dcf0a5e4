//! The etcd backend: Skiff's keys live in a real etcd v3 cluster, so several Skiff servers can
//! share one state.
//!
//! Each operation is one etcd request, mapped the way kube-apiserver's etcd3 storage does it:
//! create is a transaction guarded by `create_revision == 0`, update and conditional delete are
//! guarded by `mod_revision == expected`, and every answer's revision is the header revision
//! etcd returned. Watches are etcd watches with `prev_kv`, and etcd's compacted-watch answer
//! becomes `Err(Compacted)`. Transport failures, timeouts and "no leader" answers become
//! `Unavailable`; the gRPC channel reconnects by itself, so the next call may succeed.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient, PutOptions,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
};

use crate::{
    DeleteResult, Event, EventKind, KeyValue, RangeOptions, RangeResult, Result, Revision, Store,
    StoreError, WatchStream, prefix_end,
};

/// How long one request may take before the store reports etcd unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted: a list of every object of a big resource, or a watch catching up
/// over many events, can be far larger than gRPC's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// gRPC status codes (google.rpc.Code) that mean "try again": etcd answers `Unavailable` for
/// "no leader" and lost connections, `DeadlineExceeded` for request timeouts.
const GRPC_CANCELLED: i32 = 1;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_ABORTED: i32 = 10;
const GRPC_UNAVAILABLE: i32 = 14;

/// etcd's error texts (etcd `mvcc.ErrCompacted`, `mvcc.ErrFutureRev`).
const ETCD_COMPACTED: &str = "required revision has been compacted";
const ETCD_FUTURE_REVISION: &str = "required revision is a future revision";

/// Errors of the etcd backend that are not a request outcome; reported as
/// [`StoreError::Backend`] and not retryable.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd {step}: {source}")]
    Request {
        step: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd answered {step} without a response header")]
    MissingHeader { step: &'static str },
    #[error("etcd answered {step} with an unexpected response shape")]
    UnexpectedResponse { step: &'static str },
    #[error("etcd returned a key that is not UTF-8: {0:?}")]
    KeyEncoding(Vec<u8>),
}

impl From<EtcdError> for StoreError {
    fn from(error: EtcdError) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

/// Sorts an etcd client error into a retryable `Unavailable` or a `Backend` failure.
fn classify(step: &'static str, error: etcd_client::Error) -> StoreError {
    let retryable = match &error {
        etcd_client::Error::GRpcStatus(status) => {
            matches!(i32::from(status.code()), GRPC_CANCELLED | GRPC_DEADLINE_EXCEEDED | GRPC_ABORTED | GRPC_UNAVAILABLE)
                // tonic reports a connection lost mid-stream as `Unknown` with the transport
                // error as its source; etcd's own answers carry no source.
                || std::error::Error::source(status).is_some()
        }
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_) => true,
        _ => false,
    };
    if retryable {
        StoreError::Unavailable(format!("etcd {step}: {error}"))
    } else {
        EtcdError::Request {
            step,
            source: error,
        }
        .into()
    }
}

fn message_of(error: &etcd_client::Error) -> Option<&str> {
    match error {
        etcd_client::Error::GRpcStatus(status) => Some(status.message()),
        _ => None,
    }
}

/// Runs one etcd request with the request timeout.
async fn call<T>(
    step: &'static str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, etcd_client::Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result,
        Err(_) => Err(etcd_client::Error::WatchError(format!(
            "{step} timed out after {REQUEST_TIMEOUT:?}"
        ))),
    }
}

fn header_revision(
    step: &'static str,
    header: Option<&etcd_client::ResponseHeader>,
) -> Result<Revision> {
    header
        .map(|header| header.revision())
        .ok_or_else(|| EtcdError::MissingHeader { step }.into())
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = String::from_utf8(kv.key().to_vec())
        .map_err(|error| EtcdError::KeyEncoding(error.into_bytes()))?;
    Ok(KeyValue {
        key,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// A store backed by an etcd cluster.
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
}

impl EtcdStore {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`) and checks that etcd answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = call("connect", Client::connect(endpoints, Some(options)))
            .await
            .map_err(|error| classify("connect", error))?;
        let store = Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
        };
        let revision = store.current_revision().await?;
        tracing::info!(?endpoints, revision, "connected to etcd");
        Ok(store)
    }

    async fn txn(&self, step: &'static str, txn: Txn) -> Result<(TxnResponse, Revision)> {
        let mut kv = self.kv.clone();
        let response = call(step, kv.txn(txn))
            .await
            .map_err(|error| classify(step, error))?;
        let revision = header_revision(step, response.header())?;
        Ok((response, revision))
    }

    /// The current value from a failed transaction's `or_else` get, as a conflict or not-found.
    fn refused(
        step: &'static str,
        key: &str,
        expected: Revision,
        response: &TxnResponse,
    ) -> StoreError {
        let current = match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Get(get)) => match get.kvs().first().map(convert).transpose() {
                Ok(current) => current,
                Err(error) => return error,
            },
            _ => return EtcdError::UnexpectedResponse { step }.into(),
        };
        match current {
            None => StoreError::NotFound(key.to_string()),
            Some(current) => StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: Some(current),
            },
        }
    }

    /// Whether etcd can still serve a read at `revision`.
    async fn readable_at(&self, revision: Revision) -> Result<bool> {
        let mut kv = self.kv.clone();
        let options = GetOptions::new().with_revision(revision).with_limit(1);
        match call(
            "probing the compacted revision",
            kv.get("\0", Some(options)),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(error)
                if message_of(&error).is_some_and(|message| message.contains(ETCD_COMPACTED)) =>
            {
                Ok(false)
            }
            Err(error) => Err(classify("probing the compacted revision", error)),
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let (response, revision) = self.txn("create", txn).await?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.kv.clone();
        let response = call("get", kv.get(key, None))
            .await
            .map_err(|error| classify("get", error))?;
        response.kvs().first().map(convert).transpose()
    }

    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        let start = match opts.start_after.as_deref() {
            // The smallest key strictly after `after`.
            Some(after) if after >= prefix => format!("{after}\0"),
            _ => prefix.to_string(),
        };
        let mut options = match prefix_end(prefix.as_bytes()) {
            Some(end) => GetOptions::new().with_range(end),
            None => GetOptions::new().with_from_key(),
        };
        // etcd treats limit 0 as "no limit"; a caller asking for 0 keys gets one key fetched
        // only to answer `more`.
        let limit = opts
            .limit
            .map(|limit| i64::try_from(limit.max(1)).unwrap_or(i64::MAX));
        if let Some(limit) = limit {
            options = options.with_limit(limit);
        }
        let requested = opts.revision.filter(|&revision| revision > 0);
        if let Some(revision) = requested {
            options = options.with_revision(revision);
        }
        let mut kv = self.kv.clone();
        let response = match call("range", kv.get(start.as_str(), Some(options))).await {
            Ok(response) => response,
            Err(error) => {
                let message = message_of(&error).unwrap_or_default();
                if let Some(requested) = requested {
                    if message.contains(ETCD_COMPACTED) {
                        let compacted = self.compacted_revision().await?;
                        return Err(StoreError::Compacted {
                            requested,
                            compacted,
                        });
                    }
                    if message.contains(ETCD_FUTURE_REVISION) {
                        let current = self.current_revision().await?;
                        return Err(StoreError::FutureRevision { requested, current });
                    }
                }
                return Err(classify("range", error));
            }
        };
        let revision = match requested {
            Some(revision) => revision,
            None => header_revision("range", response.header())?,
        };
        let mut kvs = response
            .kvs()
            .iter()
            .map(convert)
            .collect::<Result<Vec<_>>>()?;
        let mut more = response.more();
        if opts.limit == Some(0) {
            more = !kvs.is_empty();
            kvs.clear();
        }
        Ok(RangeResult {
            kvs,
            more,
            revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<KeyValue> {
        // `create_revision > 0` keeps an update with expected revision 0 from creating a missing
        // key: etcd compares an absent key's mod_revision as 0.
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key, CompareOp::Equal, expected_mod_revision),
                Compare::create_revision(key, CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let (response, revision) = self.txn("update", txn).await?;
        if !response.succeeded() {
            return Err(Self::refused(
                "update",
                key,
                expected_mod_revision,
                &response,
            ));
        }
        let create_revision = match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Put(put)) => put.prev_key().map(|prev| prev.create_revision()),
            _ => None,
        }
        .ok_or(EtcdError::UnexpectedResponse { step: "update" })?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<DeleteResult> {
        let delete = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        let mut compares = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected_mod_revision {
            compares.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([delete])
            .or_else([TxnOp::get(key, None)]);
        let (response, revision) = self.txn("delete", txn).await?;
        if !response.succeeded() {
            let expected = expected_mod_revision.unwrap_or(0);
            return Err(Self::refused("delete", key, expected, &response));
        }
        let prev = match response.op_responses().into_iter().next() {
            Some(TxnOpResponse::Delete(deleted)) => {
                deleted.prev_kvs().first().map(convert).transpose()?
            }
            _ => None,
        }
        .ok_or(EtcdError::UnexpectedResponse { step: "delete" })?;
        Ok(DeleteResult { prev, revision })
    }

    async fn current_revision(&self) -> Result<Revision> {
        let mut kv = self.kv.clone();
        // Any read answers with the store revision in its header; "\0" is a key nobody uses.
        let options = GetOptions::new().with_limit(1);
        let response = call("reading the current revision", kv.get("\0", Some(options)))
            .await
            .map_err(|error| classify("reading the current revision", error))?;
        header_revision("reading the current revision", response.header())
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        // etcd does not report its compaction point directly. A read at revision r succeeds
        // exactly when r >= the compacted revision, so search for the oldest readable one.
        let current = self.current_revision().await?;
        if current == 0 || self.readable_at(1).await? {
            return Ok(0);
        }
        let (mut unreadable, mut readable) = (1, current);
        while readable - unreadable > 1 {
            let middle = unreadable + (readable - unreadable) / 2;
            if self.readable_at(middle).await? {
                readable = middle;
            } else {
                unreadable = middle;
            }
        }
        Ok(readable)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = self.kv.clone();
        match call("compact", kv.compact(revision, None)).await {
            Ok(_) => {
                tracing::info!(revision, "compacted etcd history");
                Ok(())
            }
            // Another server (or an earlier call) compacted further already.
            Err(error)
                if message_of(&error).is_some_and(|message| message.contains(ETCD_COMPACTED)) =>
            {
                Ok(())
            }
            Err(error)
                if message_of(&error)
                    .is_some_and(|message| message.contains(ETCD_FUTURE_REVISION)) =>
            {
                let current = self.current_revision().await?;
                Err(StoreError::FutureRevision {
                    requested: revision,
                    current,
                })
            }
            Err(error) => Err(classify("compact", error)),
        }
    }

    async fn watch(&self, prefix: &str, start_revision: Revision) -> Result<WatchStream> {
        let mut options = WatchOptions::new()
            .with_prev_key()
            .with_start_revision(start_revision.max(0));
        options = match prefix_end(prefix.as_bytes()) {
            Some(end) => options.with_range(end),
            None => options.with_from_key(),
        };
        let key = if prefix.is_empty() { "\0" } else { prefix };
        let mut client = self.watch.clone();
        let mut stream = call("watch", client.watch(key, Some(options)))
            .await
            .map_err(|error| classify("watch", error))?;
        // Wait for etcd to confirm the watch, so that events written after this call returns are
        // certain to be delivered (a watch from "now" starts at the revision of creation).
        let created = call("watch", stream.message())
            .await
            .map_err(|error| classify("watch", error))?;
        let mut watcher = EtcdWatch {
            stream,
            pending: VecDeque::new(),
            next: start_revision,
            done: false,
        };
        match created {
            Some(response) => watcher.absorb(response),
            None => watcher.fail(StoreError::Unavailable(
                "etcd closed the watch stream".into(),
            )),
        }
        Ok(Box::pin(futures::stream::unfold(watcher, EtcdWatch::step)))
    }
}

/// One etcd watch as a stream of store events.
struct EtcdWatch {
    stream: etcd_client::WatchStream,
    /// Converted events (or a final error) not yet handed out.
    pending: VecDeque<Result<Event>>,
    /// The revision the watch needs next, for the `Compacted` error.
    next: Revision,
    /// No more responses will be read (an error is queued or the stream ended).
    done: bool,
}

impl EtcdWatch {
    async fn step(mut self) -> Option<(Result<Event>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(response)) => self.absorb(response),
                Ok(None) => self.fail(StoreError::Unavailable(
                    "etcd closed the watch stream".into(),
                )),
                Err(error) => self.fail(classify("watch", error)),
            }
        }
    }

    fn absorb(&mut self, response: etcd_client::WatchResponse) {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            // A tombstone has version 0; every put has version >= 1 (etcd mvcc). Reading the
            // kind from the version avoids `event_type()`, which panics on unknown types.
            let kind = if kv.version() == 0 {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            let converted = convert(kv).and_then(|kv| {
                let prev_kv = event.prev_kv().map(convert).transpose()?;
                Ok(Event { kind, kv, prev_kv })
            });
            match converted {
                Ok(event) => {
                    self.next = event.kv.mod_revision + 1;
                    self.pending.push_back(Ok(event));
                }
                Err(error) => return self.fail(error),
            }
        }
        if response.compact_revision() != 0 {
            let compacted = response.compact_revision();
            return self.fail(StoreError::Compacted {
                requested: self.next,
                compacted,
            });
        }
        if response.canceled() {
            let reason = response.cancel_reason().to_string();
            self.fail(StoreError::Unavailable(format!(
                "etcd canceled the watch: {reason}"
            )));
        }
    }

    fn fail(&mut self, error: StoreError) {
        self.pending.push_back(Err(error));
        self.done = true;
    }
}
