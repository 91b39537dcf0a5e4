//! The periodic compactor: keeps about `StoreConfig::history_retention` of history.
//!
//! Like kube-apiserver's compactor, it remembers the revision it saw at each tick and, once a
//! remembered revision is older than the retention window, compacts to it. History therefore
//! always covers at least the retention window (and at most one tick more), and the same code
//! works for every backend, including etcd shared by several servers (a compaction another
//! server already did is a no-op).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Revision, Store, StoreConfig};

/// The finest tick: samples taken more often than this buy nothing.
const MIN_TICK: Duration = Duration::from_millis(100);
/// Samples per retention window: compaction lags the window by at most a tenth of it.
const TICKS_PER_WINDOW: u32 = 10;

/// Starts the compactor; it runs until `cancel` fires. Failures are logged and retried at the
/// next tick.
pub fn spawn_compactor(
    store: Arc<dyn Store>,
    config: &StoreConfig,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let retention = config.history_retention;
    let tick = (retention / TICKS_PER_WINDOW).max(MIN_TICK);
    tokio::spawn(async move {
        let mut compactor = Compactor {
            retention,
            samples: VecDeque::new(),
            compacted: 0,
        };
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => compactor.tick(store.as_ref()).await,
            }
        }
        tracing::debug!("store compactor stopped");
    })
}

struct Compactor {
    retention: Duration,
    /// (when, revision) samples, oldest first.
    samples: VecDeque<(Instant, Revision)>,
    /// The revision this compactor last compacted to.
    compacted: Revision,
}

impl Compactor {
    async fn tick(&mut self, store: &dyn Store) {
        let now = Instant::now();
        match store.current_revision().await {
            Ok(revision) => self.samples.push_back((now, revision)),
            Err(error) => tracing::warn!(%error, "compactor could not read the current revision"),
        }
        // The newest sample at least `retention` old is the compaction target.
        let mut target = None;
        while let Some(&(at, revision)) = self.samples.front() {
            if now.duration_since(at) < self.retention {
                break;
            }
            target = Some(revision);
            self.samples.pop_front();
        }
        let Some(target) = target.filter(|&target| target > self.compacted) else {
            return;
        };
        match store.compact(target).await {
            Ok(()) => {
                tracing::debug!(revision = target, "compactor compacted store history");
                self.compacted = target;
            }
            Err(error) => tracing::warn!(%error, revision = target, "store compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use bytes::Bytes;

    #[tokio::test(start_paused = true)]
    async fn compacts_to_the_revision_seen_one_retention_ago() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let config = StoreConfig {
            history_retention: Duration::from_secs(10),
        };
        let cancel = CancellationToken::new();
        let task = spawn_compactor(store.clone(), &config, cancel.clone());
        for i in 0..5 {
            store
                .create(&format!("/a/{i}"), Bytes::from_static(b"v"))
                .await
                .expect("create");
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for i in 5..10 {
            store
                .create(&format!("/a/{i}"), Bytes::from_static(b"v"))
                .await
                .expect("create");
        }
        // Nothing is older than the window yet.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(store.compacted_revision().await.expect("compacted"), 0);
        // The first samples (revision 5) age past the window; later ones (10) follow.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(store.compacted_revision().await.expect("compacted"), 5);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(store.compacted_revision().await.expect("compacted"), 10);
        cancel.cancel();
        task.await.expect("compactor task");
    }
}
