//! One metadata-only watch per deletable resource (upstream's `monitors`), feeding the graph
//! builder in event order. Only `ObjectMeta` travels: the server answers
//! `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` for lists and
//! watches, so specs and statuses never reach the collector.

use std::collections::HashSet;

use api::catalogue::{RESOURCES, Resource};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::operations::api_resource;

/// What a watch saw, in the order it saw it.
#[derive(Debug)]
pub enum GraphChange {
    /// Added or updated.
    Observed {
        resource: &'static Resource,
        meta: ObjectMeta,
    },
    Deleted {
        resource: &'static Resource,
        meta: ObjectMeta,
    },
    /// A (re)list finished with these UIDs; anything else of the resource is gone.
    Relisted {
        resource: &'static Resource,
        present: HashSet<String>,
    },
}

/// The resources the collector watches (upstream `GetDeletableResources`: every resource that
/// supports list, watch and delete), one served version per resource so that an object is
/// seen once: the first in the catalogue, which lists the preferred version first.
pub fn deletable_resources() -> Vec<&'static Resource> {
    let mut out: Vec<&'static Resource> = Vec::new();
    for r in RESOURCES {
        let verbs = r.verbs();
        if !["list", "watch", "delete"]
            .iter()
            .all(|v| verbs.contains(v))
        {
            continue;
        }
        // core `bindings` only accepts create upstream; nothing is ever stored under it.
        if r.group.is_empty() && r.plural == "bindings" {
            continue;
        }
        if out
            .iter()
            .any(|o| o.group == r.group && o.plural == r.plural)
        {
            continue;
        }
        out.push(r);
    }
    out
}

/// Watches `resource` cluster-wide until `stop`, or until the graph builder goes away.
/// Watch errors are retried with kube-runtime's default backoff (a 410 Gone relists).
pub async fn run(
    client: kube::Client,
    resource: &'static Resource,
    changes: mpsc::Sender<GraphChange>,
    stop: CancellationToken,
) {
    // `Api<PartialObjectMeta<_>>` makes kube-rs send the metadata-only Accept header.
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &api_resource(resource));
    let stream = watch_stream(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    // UIDs of the list in progress, between `Init` and `InitDone`.
    let mut listing: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = stream.next() => event,
        };
        let change = match event {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(resource = %resource.group_resource(), error = %e, "garbage collector watch failed; retrying");
                continue;
            }
            Some(Ok(Event::Init)) => {
                listing = Some(HashSet::new());
                continue;
            }
            Some(Ok(Event::InitApply(obj))) => {
                if let (Some(set), Some(uid)) = (listing.as_mut(), obj.metadata.uid.as_ref()) {
                    set.insert(uid.clone());
                }
                GraphChange::Observed {
                    resource,
                    meta: obj.metadata,
                }
            }
            Some(Ok(Event::InitDone)) => GraphChange::Relisted {
                resource,
                present: listing.take().unwrap_or_default(),
            },
            Some(Ok(Event::Apply(obj))) => GraphChange::Observed {
                resource,
                meta: obj.metadata,
            },
            Some(Ok(Event::Delete(obj))) => GraphChange::Deleted {
                resource,
                meta: obj.metadata,
            },
        };
        let sent = tokio::select! {
            () = stop.cancelled() => return,
            sent = changes.send(change) => sent,
        };
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletable_resources_are_unique_and_watchable() {
        let rs = deletable_resources();
        assert!(rs.iter().all(|r| !r.create_only));
        assert!(!rs.iter().any(|r| r.plural == "bindings"));
        let hpas: Vec<_> = rs
            .iter()
            .filter(|r| r.plural == "horizontalpodautoscalers")
            .collect();
        assert_eq!(hpas.len(), 1);
        assert_eq!(hpas[0].version, "v2");
        assert!(rs.iter().any(|r| r.kind == "ConfigMap"));
        assert!(rs.iter().any(|r| r.kind == "Namespace"));
    }
}
