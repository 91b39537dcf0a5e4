//! Keeping the proxy current: one kube-rs reflector per kind (Ingresses, IngressClasses,
//! Services, EndpointSlices, Secrets) whose events only wake the rebuild loop; the loop works
//! from the caches' current state, never from the event (a burst of events is one rebuild).
//!
//! The rebuild loop is a two-state machine:
//! * `Syncing`: waits until every cache has its first full list, so a half-known cluster never
//!   publishes a table (or clears an Ingress's status) from partial data;
//! * `Serving`: rebuilds routes and certificates on each wake-up, swaps them in, then brings
//!   Ingress statuses in line.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::class::ClassSelector;
use crate::proxy::Proxy;
use crate::routes::{RouteInputs, RouteTable};
use crate::status::StatusWriter;
use crate::tls::{SecretCache, SniResolver};

/// Events arriving within this window after a wake-up are folded into the same rebuild.
const DEBOUNCE: Duration = Duration::from_millis(5);

/// The reflector caches.
#[derive(Clone)]
pub(crate) struct Caches {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
}

impl Caches {
    /// Starts the reflectors; each event wakes `changed`.
    pub(crate) fn start(
        client: &Client,
        changed: &Arc<Notify>,
        cancel: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Caches {
        Caches {
            ingresses: reflect(Api::all(client.clone()), changed, cancel, tasks),
            classes: reflect(Api::all(client.clone()), changed, cancel, tasks),
            services: reflect(Api::all(client.clone()), changed, cancel, tasks),
            slices: reflect(Api::all(client.clone()), changed, cancel, tasks),
            secrets: reflect(Api::all(client.clone()), changed, cancel, tasks),
        }
    }

    async fn ready(&self) {
        // An error means the reflector task ended, which only happens at shutdown.
        let _ = futures::join!(
            self.ingresses.wait_until_ready(),
            self.classes.wait_until_ready(),
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.secrets.wait_until_ready(),
        );
    }
}

fn reflect<K>(
    api: Api<K>,
    changed: &Arc<Notify>,
    cancel: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Store<K>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let changed = changed.clone();
    let cancel = cancel.clone();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Ok(_)) => changed.notify_one(),
                // The watcher relists after its backoff; the cache keeps the last state.
                Some(Err(e)) => {
                    tracing::warn!(kind = %K::kind(&Default::default()), error = %e, "ingress watch failed; retrying")
                }
            }
        }
    });
    reader
}

enum State {
    Syncing,
    Serving,
}

/// Everything a rebuild writes to.
pub(crate) struct RouteSync {
    pub(crate) caches: Caches,
    pub(crate) class: String,
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) sni: Option<Arc<SniResolver>>,
    pub(crate) status: StatusWriter,
    pub(crate) changed: Arc<Notify>,
}

impl RouteSync {
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let mut state = State::Syncing;
        let mut secrets = SecretCache::default();
        loop {
            state = match state {
                State::Syncing => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = self.caches.ready() => {}
                    }
                    tracing::info!("ingress caches synced; serving routes");
                    self.rebuild(&mut secrets).await;
                    State::Serving
                }
                State::Serving => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = self.changed.notified() => {}
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    self.rebuild(&mut secrets).await;
                    State::Serving
                }
            };
        }
    }

    async fn rebuild(&self, secrets: &mut SecretCache) {
        let selector = ClassSelector::new(&self.class, &self.caches.classes.state());
        let all = self.caches.ingresses.state();
        let mut served: Vec<Arc<Ingress>> =
            all.iter().filter(|i| selector.serves(i)).cloned().collect();
        // Oldest first: on conflicting rules the oldest Ingress wins (ingress-nginx).
        served.sort_by(|a, b| {
            let key = |i: &Ingress| {
                (
                    i.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    i.metadata.namespace.clone(),
                    i.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        let certs = secrets.build(&served, &self.caches.secrets.state());
        let tls_hosts = if self.sni.is_some() {
            certs.hosts()
        } else {
            Default::default()
        };
        let table = RouteTable::build(&RouteInputs {
            ingresses: &served,
            services: &self.caches.services.state(),
            slices: &self.caches.slices.state(),
            tls_hosts: &tls_hosts,
        });
        self.proxy.replace_routes(table);
        if let Some(sni) = &self.sni {
            sni.replace(certs);
        }
        tracing::debug!(
            served = served.len(),
            total = all.len(),
            "ingress routes rebuilt"
        );
        self.status.sync(&all, &served).await;
    }
}
