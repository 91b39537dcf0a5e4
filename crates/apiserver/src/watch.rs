//! The watch endpoint: newline-delimited JSON events over a chunked response.
//!
//! A watcher's states: `Initial` (send the current state as ADDED when resourceVersion is unset
//! or "0"), then `Following` the watch cache from its cursor revision (or a store watch when the
//! revision is older than the cache window), sending BOOKMARKs when idle if asked, until the
//! timeout, the client going away, or server shutdown.
//!
//! Filtered watches follow upstream's cacher: an object that starts matching the selectors is
//! ADDED, one that stops matching is DELETED.

use std::sync::Arc;
use std::time::Duration;

use api::catalogue::Resource;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use store::{RangeOptions, Revision};

use crate::codec::ResponseShape;
use crate::error::{ApiError, ApiResult};
use crate::request::Query;
use crate::rest::{self, Selection, SharedState};
use crate::tables;
use crate::watch_cache::{CachedEvent, Subscription, WatchEventType};

/// How often an idle watcher that allowed bookmarks gets one (upstream: about every minute).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);
/// Upstream's default watch timeout is random in [30 min, 60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45 * 60);

struct Watcher {
    state: SharedState,
    res: &'static Resource,
    prefix: String,
    sel: Selection,
    shape: ResponseShape,
    bookmarks: bool,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

pub async fn serve(state: SharedState, res: &'static Resource, ns: Option<String>, q: Query, shape: ResponseShape) -> ApiResult<Response> {
    let sel = Selection::from_query(res, &q)?;
    let rv = q.get("resourceVersion").filter(|s| !s.is_empty()).map(String::from);
    let start: Option<Revision> = match rv.as_deref() {
        None | Some("0") => None,
        Some(s) => Some(s.parse().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: Invalid value: {s:?}: must be a non-negative integer"))
        })?),
    };
    let send_initial = match q.get("sendInitialEvents") {
        Some("true") => true,
        Some("false") => false,
        _ => start.is_none(),
    };
    let timeout = q.timeout()?.unwrap_or(DEFAULT_TIMEOUT);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let w = Watcher {
        prefix: res.namespace_prefix(ns.as_deref()),
        state: state.clone(),
        res,
        sel,
        shape,
        bookmarks: q.flag("allowWatchBookmarks"),
        tx,
    };
    // Establish the starting point before answering 200, so that a compacted revision is a
    // plain 410 response rather than an error event.
    let (initial, cursor) = if send_initial {
        let mut items = Vec::new();
        let mut after = None;
        let rev = loop {
            let r = state
                .store
                .range(&w.prefix, RangeOptions { revision: start.or(after.as_ref().map(|(r, _)| *r)), limit: Some(1000), start_after: after.as_ref().map(|(_, k): &(Revision, String)| k.clone()) })
                .await?;
            for kv in &r.kvs {
                let obj = rest::decode_stored(res, &kv.value, kv.mod_revision)?;
                if w.sel.matches(res, &obj)? {
                    items.push(obj);
                }
            }
            if !r.more {
                break r.revision;
            }
            after = r.kvs.last().map(|kv| (r.revision, kv.key.clone()));
        };
        (items, rev)
    } else {
        (Vec::new(), start.unwrap_or(0))
    };
    let sub = state.cache.subscribe(&state.store, cursor).await?;
    let shutdown = state.shutdown.clone();
    state.metrics.watchers.inc();
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(timeout, async {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = w.run(initial, cursor, sub, send_initial) => {}
            }
        })
        .await;
        metrics.watchers.dec();
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    let ct = match shape {
        ResponseShape::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
        _ => "application/json",
    };
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    Ok(resp)
}

impl Watcher {
    async fn run(self, initial: Vec<Value>, mut cursor: Revision, sub: Subscription, send_initial: bool) {
        for obj in initial {
            if !self.send_object(WatchEventType::Added, &obj).await {
                return;
            }
        }
        if send_initial && self.bookmarks {
            // The "initial events end" bookmark (KEP-3157) tells informers the state is complete.
            let bm = json!({"type": "BOOKMARK", "object": self.bookmark_object(cursor, true)});
            if !self.send_line(&bm).await {
                return;
            }
        }
        match sub {
            Subscription::Cache => self.follow_cache(&mut cursor).await,
            Subscription::Store(stream) => self.follow_store(stream).await,
        }
    }

    async fn follow_cache(&self, cursor: &mut Revision) {
        let mut latest = self.state.cache.latest_receiver();
        let mut last_sent = tokio::time::Instant::now();
        loop {
            let Some((events, seen)) = self.state.cache.events_after(*cursor, 512) else {
                self.send_error(ApiError::expired("The resourceVersion for the provided watch is too old.")).await;
                return;
            };
            if events.is_empty() {
                let wait = tokio::time::sleep_until(last_sent + BOOKMARK_INTERVAL);
                tokio::select! {
                    changed = latest.changed() => if changed.is_err() { return },
                    _ = wait => {
                        if self.bookmarks {
                            // Everything up to `seen` was looked at (and none of it was ours).
                            let rev = seen.max(*cursor);
                            let bm = json!({"type": "BOOKMARK", "object": self.bookmark_object(rev, false)});
                            if !self.send_line(&bm).await { return }
                            *cursor = rev.max(*cursor);
                        } else if self.tx.is_closed() {
                            return;
                        }
                        last_sent = tokio::time::Instant::now();
                    }
                }
                continue;
            }
            for ev in events {
                *cursor = ev.revision;
                if !self.deliver(&ev).await {
                    return;
                }
                last_sent = tokio::time::Instant::now();
            }
        }
    }

    async fn follow_store(&self, mut stream: store::WatchStream) {
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => {
                    let Some(ce) = CachedEvent::from_store(ev) else { continue };
                    if !self.deliver(&Arc::new(ce)).await {
                        return;
                    }
                }
                Err(e) => {
                    self.send_error(e.into()).await;
                    return;
                }
            }
        }
    }

    /// Sends one event if it concerns this watcher. Returns false when the client is gone.
    async fn deliver(&self, ev: &Arc<CachedEvent>) -> bool {
        if !ev.key.starts_with(&self.prefix) {
            return true;
        }
        if api::conversion::needs_conversion(self.res) {
            // Another served shape of the same storage (events.k8s.io Events).
            let object = api::conversion::from_storage(self.res, &ev.object);
            let prev = ev.prev().map(|p| api::conversion::from_storage(self.res, p));
            let Some(t) = self.event_type_for(ev.event_type, &object, prev.as_ref()) else { return true };
            return self.send_object(t, &object).await;
        }
        let Some(t) = self.event_type_for(ev.event_type, &ev.object, ev.prev()) else { return true };
        if self.shape == ResponseShape::Object {
            // The shared serialization: no per-watcher encoding of the object.
            let mut line = Vec::with_capacity(64 + 512);
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(t.as_str().as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            line.extend_from_slice(&ev.object_json());
            line.extend_from_slice(b"}\n");
            return self.tx.send(Ok(Bytes::from(line))).await.is_ok();
        }
        self.send_object(t, &ev.object).await
    }

    /// The event type this watcher sees, or None when the change is not its business.
    fn event_type_for(&self, t: WatchEventType, object: &Value, prev: Option<&Value>) -> Option<WatchEventType> {
        let now_matches = self.sel.matches(self.res, object).unwrap_or(false);
        let before_matched = prev.is_some_and(|p| self.sel.matches(self.res, p).unwrap_or(false));
        match t {
            WatchEventType::Added if now_matches => Some(WatchEventType::Added),
            WatchEventType::Modified if now_matches && before_matched => Some(WatchEventType::Modified),
            WatchEventType::Modified if now_matches => Some(WatchEventType::Added),
            WatchEventType::Modified if before_matched => Some(WatchEventType::Deleted),
            WatchEventType::Deleted if now_matches => Some(WatchEventType::Deleted),
            _ => None,
        }
    }

    async fn send_object(&self, t: WatchEventType, obj: &Value) -> bool {
        let object = match self.shape {
            ResponseShape::Table => {
                let rv = crate::object::resource_version(obj).unwrap_or_default().to_string();
                tables::table(self.res, std::slice::from_ref(obj), json!({"resourceVersion": rv}), None)
            }
            ResponseShape::Metadata => crate::object::partial_object_metadata(obj),
            ResponseShape::Object => obj.clone(),
        };
        self.send_line(&json!({"type": t.as_str(), "object": object})).await
    }

    fn bookmark_object(&self, rev: Revision, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.res.kind, "apiVersion": self.res.api_version(), "metadata": meta})
    }

    async fn send_error(&self, e: ApiError) {
        let _ = self.send_line(&json!({"type": "ERROR", "object": e.status_json()})).await;
    }

    async fn send_line(&self, v: &Value) -> bool {
        let mut line = serde_json::to_vec(v).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Ok(Bytes::from(line))).await.is_ok()
    }
}
