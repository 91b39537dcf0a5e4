//! Keeping the [`ClusterIndex`] current: one kube-rs watcher per kind (Services,
//! EndpointSlices, Namespaces). Each loop is a small state machine over the watcher's events:
//! `Streaming` applies single changes; `Listing` buffers a relist (after a start or a lost
//! watch) and swaps it in whole at `InitDone`, so objects deleted while we were away vanish.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use tokio_util::sync::CancellationToken;

use crate::index::{ClusterIndex, Kind};

/// A watch stream that ended. Not retryable in place: the watcher already retries API errors
/// with backoff, so an end means the client itself is gone.
#[derive(Debug, thiserror::Error)]
#[error("the {kind} watch ended unexpectedly")]
pub struct WatchEnded {
    pub kind: &'static str,
}

/// How one kind lands in the index.
trait Indexed: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static {
    const KIND: Kind;
    const NAME: &'static str;
    fn apply(index: &ClusterIndex, object: &Self);
    fn delete(index: &ClusterIndex, object: &Self);
    fn replace(index: &ClusterIndex, objects: &[Self]);
}

impl Indexed for Service {
    const KIND: Kind = Kind::Service;
    const NAME: &'static str = "Service";
    fn apply(index: &ClusterIndex, object: &Self) {
        index.apply_service(object);
    }
    fn delete(index: &ClusterIndex, object: &Self) {
        index.delete_service(object);
    }
    fn replace(index: &ClusterIndex, objects: &[Self]) {
        index.replace_services(objects);
    }
}

impl Indexed for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
    const NAME: &'static str = "EndpointSlice";
    fn apply(index: &ClusterIndex, object: &Self) {
        index.apply_slice(object);
    }
    fn delete(index: &ClusterIndex, object: &Self) {
        index.delete_slice(object);
    }
    fn replace(index: &ClusterIndex, objects: &[Self]) {
        index.replace_slices(objects);
    }
}

impl Indexed for Namespace {
    const KIND: Kind = Kind::Namespace;
    const NAME: &'static str = "Namespace";
    fn apply(index: &ClusterIndex, object: &Self) {
        index.apply_namespace(object);
    }
    fn delete(index: &ClusterIndex, object: &Self) {
        index.delete_namespace(object);
    }
    fn replace(index: &ClusterIndex, objects: &[Self]) {
        index.replace_namespaces(objects);
    }
}

pub(crate) async fn services(
    client: Client,
    index: ClusterIndex,
    cancel: CancellationToken,
) -> Result<(), WatchEnded> {
    watch::<Service>(Api::all(client), index, cancel).await
}

pub(crate) async fn endpoint_slices(
    client: Client,
    index: ClusterIndex,
    cancel: CancellationToken,
) -> Result<(), WatchEnded> {
    watch::<EndpointSlice>(Api::all(client), index, cancel).await
}

pub(crate) async fn namespaces(
    client: Client,
    index: ClusterIndex,
    cancel: CancellationToken,
) -> Result<(), WatchEnded> {
    watch::<Namespace>(Api::all(client), index, cancel).await
}

/// Where a watch loop is.
enum State<K> {
    /// Applying changes one by one.
    Streaming,
    /// Collecting a full list; it replaces the kind's contents when complete.
    Listing(Vec<K>),
}

async fn watch<K>(
    api: Api<K>,
    index: ClusterIndex,
    cancel: CancellationToken,
) -> Result<(), WatchEnded>
where
    K: Indexed,
    K::DynamicType: Default,
{
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut state = State::Streaming;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            event = events.next() => event,
        };
        match event {
            None => return Err(WatchEnded { kind: K::NAME }),
            Some(Err(error)) => {
                tracing::warn!(kind = K::NAME, %error, "DNS watch failed; retrying with backoff");
            }
            Some(Ok(event)) => state = step(&index, state, event),
        }
    }
}

fn step<K: Indexed>(index: &ClusterIndex, state: State<K>, event: Event<K>) -> State<K> {
    match (state, event) {
        (_, Event::Init) => State::Listing(Vec::new()),
        (State::Listing(mut listed), Event::InitApply(object)) => {
            listed.push(object);
            State::Listing(listed)
        }
        (State::Listing(listed), Event::InitDone) => {
            K::replace(index, &listed);
            index.mark_synced(K::KIND);
            State::Streaming
        }
        // kube-rs sends no plain changes mid-list; should one come, it belongs in the list
        // (a Delete is applied now and cannot reappear, as the list predates it).
        (State::Listing(mut listed), Event::Apply(object)) => {
            listed.push(object);
            State::Listing(listed)
        }
        (State::Listing(listed), Event::Delete(object)) => {
            K::delete(index, &object);
            State::Listing(listed)
        }
        (State::Streaming, Event::InitApply(object) | Event::Apply(object)) => {
            K::apply(index, &object);
            State::Streaming
        }
        (State::Streaming, Event::Delete(object)) => {
            K::delete(index, &object);
            State::Streaming
        }
        (State::Streaming, Event::InitDone) => State::Streaming,
    }
}
