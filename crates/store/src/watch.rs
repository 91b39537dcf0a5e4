//! Watches for the local backends (memory and sqlite): replay history, then follow live writes.
//!
//! Each backend keeps every write of the retained history (one event per revision) and
//! broadcasts each committed event, in revision order, on a `tokio::sync::broadcast` channel.
//! A watch subscribes to that channel *before* it reads history, so every event committed after
//! the read is in its receiver; events it already replayed are recognised by revision and
//! skipped. That closes the race between replay and live delivery without gaps or duplicates.
//!
//! A watcher that falls more than [`BROADCAST_CAPACITY`] events behind loses part of the channel
//! (`RecvError::Lagged`). It then re-reads the missed revisions from history and carries on, so a
//! slow watcher never sees a gap; only when that history has been compacted meanwhile does it
//! get `Err(Compacted)` and end, exactly like a watch started from a compacted revision.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::{Event, Result, Revision, StoreError, WatchStream};

/// Events buffered per watcher before it counts as lagging and falls back to history.
pub(crate) const BROADCAST_CAPACITY: usize = 4096;

/// How many events one history read returns while catching up.
const REPLAY_PAGE: usize = 1000;

/// A backend's retained history, as the watch machinery reads it.
#[async_trait::async_trait]
pub(crate) trait History: Send + Sync + 'static {
    /// Events for keys under `prefix` with revision `>= from`, ascending, at most `limit`, read
    /// from one consistent snapshot. Errors: `Compacted` when `from` is below the compacted
    /// revision.
    async fn events_since(&self, prefix: &str, from: Revision, limit: usize)
    -> Result<HistoryPage>;
}

/// One page of history.
pub(crate) struct HistoryPage {
    pub events: Vec<Event>,
    /// The store revision of the snapshot the page was read from.
    pub head: Revision,
}

/// Builds the watch stream. `live` must have been subscribed before `start` was decided and
/// before any history is read (see the module docs).
pub(crate) fn watch_stream(
    history: Arc<dyn History>,
    live: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    start: Revision,
) -> WatchStream {
    let watcher = Watcher {
        history,
        live,
        prefix,
        next: start.max(1),
        pending: VecDeque::new(),
        state: State::CatchingUp,
    };
    Box::pin(futures::stream::unfold(watcher, Watcher::step))
}

/// Where a watcher is.
enum State {
    /// Reading history from `next` page by page, until a page reaches the store's head.
    CatchingUp,
    /// Delivering events from the live broadcast, skipping revisions below `next`.
    Following,
    /// The stream has ended (after an error item).
    Done,
}

struct Watcher {
    history: Arc<dyn History>,
    live: broadcast::Receiver<Arc<Event>>,
    prefix: String,
    /// The lowest revision not yet delivered or skipped: every event below it has been handled.
    next: Revision,
    /// Replayed events not yet handed out.
    pending: VecDeque<Event>,
    state: State,
}

impl Watcher {
    async fn step(mut self) -> Option<(Result<Event>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            match self.state {
                State::Done => return None,
                State::CatchingUp => {
                    let page = match self
                        .history
                        .events_since(&self.prefix, self.next, REPLAY_PAGE)
                        .await
                    {
                        Ok(page) => page,
                        Err(error) => return Some(self.fail(error)),
                    };
                    let full = page.events.len() >= REPLAY_PAGE;
                    if let Some(last) = page.events.last() {
                        self.next = last.kv.mod_revision + 1;
                    }
                    if !full {
                        // The snapshot held nothing more for this prefix up to its head.
                        self.next = self.next.max(page.head + 1);
                        self.state = State::Following;
                    }
                    self.pending.extend(page.events);
                }
                State::Following => match self.live.recv().await {
                    Ok(event) => {
                        let revision = event.kv.mod_revision;
                        if revision < self.next {
                            continue; // already replayed from history
                        }
                        self.next = revision + 1;
                        if event.kv.key.starts_with(&self.prefix) {
                            let event = Arc::unwrap_or_clone(event);
                            return Some((Ok(event), self));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(
                            missed,
                            from = self.next,
                            "watcher lagged; re-reading history"
                        );
                        self.state = State::CatchingUp;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Some(
                            self.fail(StoreError::Unavailable("the store was closed".into())),
                        );
                    }
                },
            }
        }
    }

    fn fail(mut self, error: StoreError) -> (Result<Event>, Self) {
        self.state = State::Done;
        self.pending.clear();
        (Err(error), self)
    }
}
