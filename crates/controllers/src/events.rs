//! Core/v1 Events recorded by the controllers and the scheduler, like client-go's legacy
//! recorder with its correlator: the same (object, type, reason, message) seen again bumps
//! `count` and `lastTimestamp` of the first Event instead of writing a new one, so
//! `kubectl describe` shows "(x3 over 2m)" and `kubectl get events` stays short.
//!
//! Recording is best-effort, as upstream: a failure is logged, never returned, so a controller
//! never fails its reconcile because an Event could not be written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Correlated events remembered at most (client-go's cache holds 4096).
const CORRELATION_CACHE_SIZE: usize = 4096;

/// (namespace, involved object's UID and fieldPath, type, reason, message): what makes two
/// events the same (client-go's `getEventKey` also keys on the field path, so one container's
/// events never count another's).
type CorrelationKey = (String, String, &'static str, String, String);

/// The two event types Kubernetes knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Records Events as one component (e.g. "replicaset-controller", "default-scheduler").
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    component: String,
    instance: String,
    /// The first Event written for each key, and its count.
    seen: Arc<Mutex<HashMap<CorrelationKey, (String, i32)>>>,
}

impl EventRecorder {
    /// `component` is the source upstream reports (`source.component` and
    /// `reportingComponent`); `instance` identifies this process (`reportingInstance`).
    pub fn new(
        client: kube::Client,
        component: impl Into<String>,
        instance: impl Into<String>,
    ) -> Self {
        Self {
            client,
            component: component.into(),
            instance: instance.into(),
            seen: Arc::default(),
        }
    }

    /// The reference an Event needs for any typed object.
    pub fn reference<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
        let meta = object.meta();
        ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..ObjectReference::default()
        }
    }

    /// Records a Normal event about `object`.
    pub async fn normal(&self, object: &ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(object, EventType::Normal, reason, message.into())
            .await
    }

    /// Records a Warning event about `object`.
    pub async fn warning(
        &self,
        object: &ObjectReference,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.record(object, EventType::Warning, reason, message.into())
            .await
    }

    /// Records an event; repeats within the correlation cache bump the first one's count.
    pub async fn record(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        // Upstream's recorder files events of cluster-scoped objects under "default".
        let namespace = object
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_string());
        let object_name = object.name.clone().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = jiff::Timestamp::now();
        let key = (
            namespace.clone(),
            format!(
                "{}/{}",
                object.uid.clone().unwrap_or_else(|| object_name.clone()),
                object.field_path.clone().unwrap_or_default()
            ),
            type_.as_str(),
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
        let name = format!("{}.{:x}", object_name, now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                namespace: object.namespace.clone().filter(|ns| !ns.is_empty()),
                ..object.clone()
            },
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
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
