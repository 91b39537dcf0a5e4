//! Core/v1 Events the collector records, like client-go's legacy recorder with its
//! correlator: the same (object, reason, message) seen again bumps `count` and
//! `lastTimestamp` of the first Event instead of writing a new one, so `kubectl describe`
//! shows "(x3 over 2m)".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::graph::ObjectIdentity;

/// The component upstream's garbage collector records events as.
pub const COMPONENT: &str = "garbage-collector-controller";

/// Correlated events remembered at most (client-go's cache holds 4096).
const CORRELATION_CACHE_SIZE: usize = 4096;

/// (namespace, involved object's UID, reason, message): what makes two events the same.
type CorrelationKey = (String, String, String, String);

#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    instance: String,
    /// The first Event written for each key, and its count.
    seen: Arc<Mutex<HashMap<CorrelationKey, (String, i32)>>>,
}

impl EventRecorder {
    pub fn new(client: kube::Client, instance: String) -> Self {
        Self {
            client,
            instance,
            seen: Arc::default(),
        }
    }

    /// Records a Warning about `object`; failures are logged, never returned (an event is
    /// best-effort, as upstream).
    pub async fn warn(&self, object: &ObjectIdentity, reason: &str, message: String) {
        // Upstream's recorder files events of cluster-scoped objects under "default".
        let namespace = if object.namespace.is_empty() {
            "default".to_string()
        } else {
            object.namespace.clone()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = jiff::Timestamp::now();
        let key = (
            namespace.clone(),
            object.uid.clone(),
            reason.to_string(),
            message.clone(),
        );
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            match seen.get_mut(&key) {
                Some((name, count)) => {
                    *count = count.saturating_add(1);
                    Some((name.clone(), *count))
                }
                None => None,
            }
        };
        if let Some((name, count)) = repeat {
            let patch = json!({"count": count, "lastTimestamp": Time(now)});
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(event = %name, error = %e, "could not update a repeated event; writing a new one")
                }
            }
        }
        let name = format!("{}.{:x}", object.name, now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(object.api_version.clone()),
                kind: Some(object.kind.clone()),
                name: Some(object.name.clone()),
                namespace: (!object.namespace.is_empty()).then(|| object.namespace.clone()),
                uid: Some(object.uid.clone()),
                ..ObjectReference::default()
            },
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some("Warning".to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            source: Some(EventSource {
                component: Some(COMPONENT.to_string()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => {
                let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.len() >= CORRELATION_CACHE_SIZE {
                    seen.clear();
                }
                seen.insert(key, (name, 1));
            }
            Err(e) => tracing::warn!(%namespace, reason, error = %e, "could not record an event"),
        }
    }
}
