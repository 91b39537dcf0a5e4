//! A rate-limited work queue of UIDs with client-go's workqueue semantics: a key queued
//! twice is held once, a key is never handed to two workers at once (re-adding it while it
//! is processed queues it again after `done`), and `add_rate_limited` waits an exponential
//! per-key backoff (5 ms doubling to 1000 s, `DefaultControllerRateLimiter`'s item limiter)
//! that `forget` resets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<String>,
    /// Keys waiting to be processed (in `queue`, or re-added while processing).
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

#[derive(Debug)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
    stop: CancellationToken,
}

impl WorkQueue {
    pub fn new(stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            stop,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every critical section is a
        // handful of collection operations.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn add(&self, key: &str) {
        let mut s = self.lock();
        if !s.dirty.insert(key.to_string()) {
            return;
        }
        if s.processing.contains(key) {
            return;
        }
        s.queue.push_back(key.to_string());
        drop(s);
        self.notify.notify_one();
    }

    /// Queues `key` after its backoff, which doubles with every call until `forget`.
    pub fn add_rate_limited(self: &Arc<Self>, key: &str) {
        let delay = {
            let mut s = self.lock();
            let failures = s.failures.entry(key.to_string()).or_insert(0);
            let delay = backoff(*failures);
            *failures = failures.saturating_add(1);
            delay
        };
        let queue = Arc::clone(self);
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => queue.add(&key),
                () = queue.stop.cancelled() => {}
            }
        });
    }

    /// Resets the key's backoff.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The next key to process, or `None` once the queue is stopped. Every key returned must
    /// be handed back with `done`.
    pub async fn next(&self) -> Option<String> {
        loop {
            {
                let mut s = self.lock();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    return Some(key);
                }
            }
            // `notify_one` stores a permit when nobody waits, so an `add` between the check
            // above and this wait is not lost.
            tokio::select! {
                () = self.notify.notified() => {}
                () = self.stop.cancelled() => return None,
            }
        }
    }

    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Keys queued or being processed.
    #[cfg(test)]
    fn len(&self) -> usize {
        let s = self.lock();
        s.queue.len() + s.processing.len()
    }
}

fn backoff(failures: u32) -> Duration {
    BASE_DELAY
        .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .map_or(MAX_DELAY, |d| d.min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_queued_twice_is_processed_once() {
        let q = WorkQueue::new(CancellationToken::new());
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(q.next().await.as_deref(), Some("b"));
        assert_eq!(q.len(), 2);
        q.done("a");
        q.done("b");
        assert_eq!(q.len(), 0);
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let q = WorkQueue::new(CancellationToken::new());
        q.add("a");
        let key = q.next().await;
        assert_eq!(key.as_deref(), Some("a"));
        q.add("a");
        // Not handed out again while still processing.
        assert_eq!(q.lock().queue.len(), 0);
        q.done("a");
        assert_eq!(q.next().await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_adds_back_off_exponentially_until_forgotten() {
        let q = WorkQueue::new(CancellationToken::new());
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(3), Duration::from_millis(40));
        assert_eq!(backoff(40), MAX_DELAY);
        q.add_rate_limited("a");
        q.add_rate_limited("a");
        let start = tokio::time::Instant::now();
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), Duration::from_millis(5));
        q.forget("a");
        assert!(q.lock().failures.is_empty());
    }

    #[tokio::test]
    async fn next_returns_none_once_stopped() {
        let stop = CancellationToken::new();
        let q = WorkQueue::new(stop.clone());
        stop.cancel();
        assert_eq!(q.next().await, None);
    }
}
