//! Watches feeding in-memory caches with client-go informer callbacks (add, update with the
//! old object, delete), shared by the Endpoints and EndpointSlice controllers.
//!
//! A [`Cache`] holds every object of one kind by namespace and name (cluster-scoped kinds under
//! the empty namespace), so a sync lists one namespace without scanning the cluster. [`run`]
//! keeps it current; after a watch restarts, the new list is compared with the cache and
//! replayed as the adds, updates and deletes it implies, as a client-go relist does.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Callbacks of an informer (upstream `cache.ResourceEventHandlerFuncs`). They must only
/// update bookkeeping and enqueue keys.
pub(crate) trait EventHandler<K>: Send + Sync {
    fn on_add(&self, object: &K);
    fn on_update(&self, old: &K, new: &K);
    fn on_delete(&self, object: &K);
}

/// Every object of one kind, by namespace and name.
pub(crate) struct Cache<K> {
    by_namespace: RwLock<HashMap<String, HashMap<String, Arc<K>>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Self {
            by_namespace: RwLock::default(),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// `(namespace, name)` of an object; cluster-scoped objects have the empty namespace.
fn key_of<K: Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl<K: Resource> Cache<K> {
    /// One object.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let map = self
            .by_namespace
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(namespace)?.get(name).cloned()
    }

    /// The objects of one namespace.
    pub(crate) fn list(&self, namespace: &str) -> Vec<Arc<K>> {
        let map = self
            .by_namespace
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(namespace)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every object.
    pub(crate) fn list_all(&self) -> Vec<Arc<K>> {
        let map = self
            .by_namespace
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.values()
            .flat_map(|objects| objects.values().cloned())
            .collect()
    }

    /// Waits until the first list has been loaded (upstream `WaitForCacheSync`).
    pub(crate) async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as `self`, so this only ends when synced.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Stores `object`, returning what it replaced.
    pub(crate) fn insert(&self, object: K) -> Option<Arc<K>> {
        let (namespace, name) = key_of(&object);
        let mut map = self
            .by_namespace
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(namespace)
            .or_default()
            .insert(name, Arc::new(object))
    }

    /// Forgets one object, returning it.
    pub(crate) fn remove(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let mut map = self
            .by_namespace
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let objects = map.get_mut(namespace)?;
        let removed = objects.remove(name);
        if objects.is_empty() {
            map.remove(namespace);
        }
        removed
    }

    fn keys(&self) -> HashSet<(String, String)> {
        let map = self
            .by_namespace
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .flat_map(|(ns, objects)| objects.keys().map(move |name| (ns.clone(), name.clone())))
            .collect()
    }
}

/// Stores one added or modified object and tells the handler.
fn apply<K: Resource + Clone>(cache: &Cache<K>, handler: &dyn EventHandler<K>, object: K) {
    match cache.insert(object.clone()) {
        Some(old) => handler.on_update(&old, &object),
        None => handler.on_add(&object),
    }
}

/// Watches `api` into `cache` until `cancel`, calling `handler` after each change is in the
/// cache. Watch errors are retried with kube-runtime's default backoff.
pub(crate) async fn run<K>(
    api: Api<K>,
    cache: Arc<Cache<K>>,
    handler: Arc<dyn EventHandler<K>>,
    cancel: CancellationToken,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let kind = K::kind(&());
    let stream = watcher(api, watcher::Config::default()).modify(crate::without_managed_fields).default_backoff();
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
            Some(Err(e)) => warn!(%kind, error = %e, "watch failed; retrying"),
            Some(Ok(watcher::Event::Init)) => unseen = Some(cache.keys()),
            Some(Ok(watcher::Event::InitApply(object))) => {
                if let Some(unseen) = unseen.as_mut() {
                    unseen.remove(&key_of(&object));
                }
                apply(&cache, handler.as_ref(), object);
            }
            Some(Ok(watcher::Event::InitDone)) => {
                for (namespace, name) in unseen.take().into_iter().flatten() {
                    if let Some(gone) = cache.remove(&namespace, &name) {
                        handler.on_delete(&gone);
                    }
                }
                cache.synced.send_replace(true);
                debug!(%kind, "cache synced");
            }
            Some(Ok(watcher::Event::Apply(object))) => apply(&cache, handler.as_ref(), object),
            Some(Ok(watcher::Event::Delete(object))) => {
                let (namespace, name) = key_of(&object);
                cache.remove(&namespace, &name);
                // The final state of the object as the server saw it.
                handler.on_delete(&object);
            }
        }
    }
}
