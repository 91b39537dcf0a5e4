//! A rate-limited work queue of `namespace/name` keys with client-go's workqueue semantics,
//! shared by the Endpoints and EndpointSlice controllers:
//!
//! * a key queued several times before a worker takes it is synced once (dirty set);
//! * a key is never synced by two workers at once: re-added while in flight, it is queued
//!   again only when the sync in flight is `done` (processing set);
//! * `add_after` queues a key after a delay (upstream `AddAfter`, used to batch pod updates and
//!   to wait for EndpointSlice writes to settle);
//! * `add_rate_limited` queues a failed key after its per-key exponential backoff
//!   (upstream `ItemExponentialFailureRateLimiter`), reset by `forget`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct QueueState {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

/// The queue; cheap to share behind an `Arc`.
pub(crate) struct WorkQueue {
    state: Mutex<QueueState>,
    wake: Notify,
    base_delay: Duration,
    max_delay: Duration,
    /// Ends the timers of delayed adds when the queue shuts down.
    stop: CancellationToken,
}

impl WorkQueue {
    /// A queue whose failed keys wait `base_delay`, doubling per consecutive failure up to
    /// `max_delay`.
    pub(crate) fn new(base_delay: Duration, max_delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            wake: Notify::new(),
            base_delay,
            max_delay,
            stop: CancellationToken::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key` unless it is already waiting.
    pub(crate) fn add(&self, key: String) {
        let mut state = self.lock();
        if state.shut_down || state.dirty.contains(&key) {
            return;
        }
        state.dirty.insert(key.clone());
        if state.processing.contains(&key) {
            // Queued again by `done` once the sync in flight ends.
            return;
        }
        state.queue.push_back(key);
        drop(state);
        self.wake.notify_one();
    }

    /// Queues `key` after `delay`.
    pub(crate) fn add_after(self: &Arc<Self>, key: String, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = queue.stop.cancelled() => {}
                _ = tokio::time::sleep(delay) => queue.add(key),
            }
        });
    }

    /// Queues a key whose sync failed after its backoff, and counts the failure.
    pub(crate) fn add_rate_limited(self: &Arc<Self>, key: String) {
        let failures = {
            let mut state = self.lock();
            let n = state.failures.entry(key.clone()).or_insert(0);
            let previous = *n;
            *n = n.saturating_add(1);
            previous
        };
        let delay = self
            .base_delay
            .saturating_mul(1u32 << failures.min(31))
            .min(self.max_delay);
        self.add_after(key, delay);
    }

    /// How many times `key` has failed in a row.
    pub(crate) fn num_requeues(&self, key: &str) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Resets the failure count of `key` (after a successful sync, or when giving up).
    pub(crate) fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The next key to sync, or `None` once shut down. The caller must call [`Self::done`].
    pub(crate) async fn get(&self) -> Option<String> {
        loop {
            // Registered before looking, so an add between the look and the wait still wakes
            // this worker.
            let notified = self.wake.notified();
            {
                let mut state = self.lock();
                if state.shut_down {
                    return None;
                }
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks the sync of `key` finished; a key added meanwhile is queued now.
    pub(crate) fn done(&self, key: &str) {
        let mut state = self.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) && !state.shut_down {
            state.queue.push_back(key.to_string());
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Stops handing out keys; waiting workers get `None`.
    pub(crate) fn shut_down(&self) {
        self.lock().shut_down = true;
        self.stop.cancel();
        self.wake.notify_waiters();
    }

    /// Keys waiting (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_added_twice_is_synced_once() {
        let queue = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(1));
        queue.add("default/web".into());
        queue.add("default/web".into());
        assert_eq!(queue.len(), 1);
        let key = queue.get().await;
        assert_eq!(key.as_deref(), Some("default/web"));
        queue.done("default/web");
        assert_eq!(queue.len(), 0);
    }

    #[tokio::test]
    async fn a_key_added_while_in_flight_waits_for_done() {
        let queue = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(1));
        queue.add("default/web".into());
        let key = queue.get().await.expect("key");
        queue.add(key.clone());
        assert_eq!(
            queue.len(),
            0,
            "not handed to a second worker while in flight"
        );
        queue.done(&key);
        assert_eq!(queue.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_forget_resets() {
        let queue = WorkQueue::new(Duration::from_secs(1), Duration::from_secs(3));
        queue.add_rate_limited("a".into());
        queue.add_rate_limited("a".into());
        queue.add_rate_limited("a".into());
        assert_eq!(queue.num_requeues("a"), 3);
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(queue.len(), 0);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(queue.len(), 1);
        queue.forget("a");
        assert_eq!(queue.num_requeues("a"), 0);
    }

    #[tokio::test]
    async fn shut_down_releases_waiting_workers() {
        let queue = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(1));
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.get().await })
        };
        tokio::task::yield_now().await;
        queue.shut_down();
        assert_eq!(waiter.await.expect("join"), None);
    }
}
