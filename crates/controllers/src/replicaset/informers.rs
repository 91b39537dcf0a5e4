//! The watches, as client-go informers: a cache plus add/update/delete callbacks with the old
//! object, which the expectations need (an ADDED pod lowers the creations awaited, a pod that
//! gains a deletionTimestamp or vanishes lowers the deletions awaited).
//!
//! * [`PodCache`] and [`run_pod_informer`]: one pod watch for the whole cluster, shared by the
//!   ReplicaSet and ReplicationController cores (upstream's shared informer factory does the
//!   same), indexed by namespace because every sync lists one namespace.
//! * [`run_owner_informer`]: the watch of one owner kind into a kube-runtime `Store`, whose
//!   callbacks the core handles.
//!
//! After a watch restarts (relist), the new list is compared with the cache and replayed as
//! the adds, updates and deletes it implies, as a client-go relist does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::kind::ReplicaOwner;

/// Callbacks of a pod informer (upstream `cache.ResourceEventHandlerFuncs`). They must only
/// update bookkeeping and enqueue keys.
pub(crate) trait PodEventHandler: Send + Sync {
    fn add_pod(&self, pod: &Pod);
    fn update_pod(&self, old: &Pod, cur: &Pod);
    fn delete_pod(&self, pod: &Pod);
}

/// Callbacks of an owner informer.
pub(crate) trait OwnerEventHandler<K>: Send + Sync {
    fn add_owner(&self, owner: &K);
    fn update_owner(&self, old: &K, cur: &K);
    fn delete_owner(&self, owner: &K);
}

/// Every pod of the cluster, by namespace and name.
#[derive(Debug)]
pub(crate) struct PodCache {
    by_namespace: RwLock<HashMap<String, HashMap<String, Arc<Pod>>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl Default for PodCache {
    fn default() -> Self {
        Self {
            by_namespace: RwLock::default(),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }
}

fn pod_name(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

impl PodCache {
    /// The pods of one namespace.
    pub(crate) fn list(&self, namespace: &str) -> Vec<Arc<Pod>> {
        let map = self
            .by_namespace
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(namespace)
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until the first list has been loaded (upstream `WaitForCacheSync`).
    pub(crate) async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as `self`, so this only ends when synced.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Marks the cache loaded without a watch (for syncs against a hand-fed cache).
    #[cfg(test)]
    pub(crate) fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    fn insert(&self, pod: Pod) -> Option<Arc<Pod>> {
        let (namespace, name) = pod_name(&pod);
        let mut map = self
            .by_namespace
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(namespace)
            .or_default()
            .insert(name, Arc::new(pod))
    }

    pub(crate) fn remove(&self, pod: &Pod) -> Option<Arc<Pod>> {
        let (namespace, name) = pod_name(pod);
        let mut map = self
            .by_namespace
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pods = map.get_mut(&namespace)?;
        let removed = pods.remove(&name);
        if pods.is_empty() {
            map.remove(&namespace);
        }
        removed
    }

    fn keys(&self) -> HashSet<(String, String)> {
        let map = self
            .by_namespace
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .flat_map(|(ns, pods)| pods.keys().map(move |name| (ns.clone(), name.clone())))
            .collect()
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        let map = self
            .by_namespace
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(namespace)?.get(name).cloned()
    }
}

/// Applies one pod (added or modified) to the cache and tells every handler.
pub(crate) fn apply_pod(cache: &PodCache, handlers: &[Arc<dyn PodEventHandler>], pod: Pod) {
    let cur = pod.clone();
    match cache.insert(pod) {
        Some(old) => handlers.iter().for_each(|h| h.update_pod(&old, &cur)),
        None => handlers.iter().for_each(|h| h.add_pod(&cur)),
    }
}

/// Watches every pod into `cache` until `cancel`, calling `handlers` for each change. Watch
/// errors are retried with kube-runtime's default backoff.
pub(crate) async fn run_pod_informer(
    pods: Api<Pod>,
    cache: Arc<PodCache>,
    handlers: Vec<Arc<dyn PodEventHandler>>,
    cancel: CancellationToken,
) {
    let stream = watcher(pods, watcher::Config::default()).modify(crate::without_managed_fields).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Keys not yet seen in the relist under way; whatever remains at its end was deleted
    // while the watch was down.
    let mut unseen: Option<HashSet<(String, String)>> = None;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = stream.next() => event,
        };
        match event {
            None => return,
            Some(Err(e)) => warn!(error = %e, "pod watch failed; retrying"),
            Some(Ok(watcher::Event::Init)) => unseen = Some(cache.keys()),
            Some(Ok(watcher::Event::InitApply(pod))) => {
                if let Some(unseen) = unseen.as_mut() {
                    unseen.remove(&pod_name(&pod));
                }
                apply_pod(&cache, &handlers, pod);
            }
            Some(Ok(watcher::Event::InitDone)) => {
                for (namespace, name) in unseen.take().into_iter().flatten() {
                    if let Some(gone) = cache.get(&namespace, &name) {
                        cache.remove(&gone);
                        handlers.iter().for_each(|h| h.delete_pod(&gone));
                    }
                }
                cache.synced.send_replace(true);
                debug!("pod cache synced");
            }
            Some(Ok(watcher::Event::Apply(pod))) => apply_pod(&cache, &handlers, pod),
            Some(Ok(watcher::Event::Delete(pod))) => {
                // The final state of the object as the server saw it.
                cache.remove(&pod);
                handlers.iter().for_each(|h| h.delete_pod(&pod));
            }
        }
    }
}

/// Watches one owner kind into `writer` (whose reader the core and the applier use) until
/// `cancel`, calling `handler` after each change is in the store.
pub(crate) async fn run_owner_informer<K: ReplicaOwner>(
    owners: Api<K>,
    mut writer: Writer<K>,
    handler: Arc<dyn OwnerEventHandler<K>>,
    cancel: CancellationToken,
) {
    let reader: Store<K> = writer.as_reader();
    let stream = watcher(owners, watcher::Config::default()).modify(crate::without_managed_fields).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // During a relist the store keeps the previous list until InitDone; the callbacks for
    // the listed objects run then, against what the store held before.
    let mut previous: HashMap<ObjectRef<K>, Arc<K>> = HashMap::new();
    let mut listed: Vec<K> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            event = stream.next() => event,
        };
        let event = match event {
            None => return,
            Some(Err(e)) => {
                warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                continue;
            }
            Some(Ok(event)) => event,
        };
        // The object the store held before this event, for update callbacks.
        let old = match &event {
            watcher::Event::Apply(owner) => reader.get(&ObjectRef::from_obj(owner)),
            _ => None,
        };
        writer.apply_watcher_event(&event);
        match event {
            watcher::Event::Init => {
                previous = reader
                    .state()
                    .into_iter()
                    .map(|o| (ObjectRef::from_obj(o.as_ref()), o))
                    .collect();
                listed.clear();
            }
            watcher::Event::InitApply(owner) => listed.push(owner),
            watcher::Event::InitDone => {
                for owner in listed.drain(..) {
                    match previous.remove(&ObjectRef::from_obj(&owner)) {
                        Some(old) => handler.update_owner(&old, &owner),
                        None => handler.add_owner(&owner),
                    }
                }
                for gone in std::mem::take(&mut previous).into_values() {
                    handler.delete_owner(&gone);
                }
            }
            watcher::Event::Apply(owner) => match old {
                Some(old) => handler.update_owner(&old, &owner),
                None => handler.add_owner(&owner),
            },
            watcher::Event::Delete(owner) => handler.delete_owner(&owner),
        }
    }
}
