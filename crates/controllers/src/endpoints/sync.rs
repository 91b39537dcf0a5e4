//! One sync of a Service's Endpoints from current state (upstream `syncService`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use tracing::debug;

use super::subsets::{self, capacity_annotation_set_correctly, normalized, truncate};
use super::{EndpointsController, EndpointsError, HEADLESS_LABEL, OVER_CAPACITY, pods};
use crate::events::EventRecorder;

/// Whether the API refused a create because the namespace is being deleted: creates will keep
/// failing, so the Service is dropped rather than retried (upstream `NamespaceTerminatingCause`).
pub(crate) fn namespace_terminating(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")),
        _ => false,
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Labels without the headless marker (the Service itself never carries it).
fn without_headless(labels: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut labels = labels.cloned().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    labels
}

impl EndpointsController {
    /// Syncs the Endpoints of the Service `key` (`namespace/name`).
    pub(crate) async fn sync(&self, key: &str) -> Result<(), EndpointsError> {
        let (namespace, name) = pods::split_key(key);
        let Some(service) = self.services.get(namespace, name) else {
            return self.service_deleted(namespace, name).await;
        };
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            // An ExternalName Service is a DNS alias; it gets no endpoints.
            return Ok(());
        }
        let Some(selector) = pods::selector(&service) else {
            return Ok(());
        };
        let pods = pods::selected_pods(&self.pods, namespace, selector);
        // Computed even when nothing is written, so the tracker remembers this state.
        let trigger_time = self
            .lock_trigger_times()
            .compute(namespace, &service, &pods);
        let desired = subsets::desired_subsets(&service, &pods);

        let current = self.endpoints.get(namespace, name);
        if let Some(current) = &current {
            let rv = current
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            if self.lock_stale().replaced.get(key) == Some(&rv) {
                return Err(EndpointsError::StaleCache {
                    service: key.to_string(),
                    resource_version: rv,
                });
            }
            let stored = normalized(current.subsets.as_deref());
            if stored == normalized(Some(&desired))
                && without_headless(current.metadata.labels.as_ref())
                    == service.metadata.labels.clone().unwrap_or_default()
                && capacity_annotation_set_correctly(current.metadata.annotations.as_ref(), &stored)
            {
                debug!(service = %key, "endpoints are equal, skipping update");
                return Ok(());
            }
        }

        let endpoints = self.build(&service, current.as_deref(), desired, trigger_time);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        let result = match &current {
            None => api.create(&PostParams::default(), &endpoints).await,
            Some(_) => api.replace(name, &PostParams::default(), &endpoints).await,
        };
        match result {
            Ok(written) => {
                if let Some(current) = &current
                    && written.metadata.resource_version != current.metadata.resource_version
                {
                    self.lock_stale().replaced.insert(
                        key.to_string(),
                        current
                            .metadata
                            .resource_version
                            .clone()
                            .unwrap_or_default(),
                    );
                }
                Ok(())
            }
            Err(e) if current.is_none() && namespace_terminating(&e) => {
                debug!(service = %key, "namespace terminating; not creating endpoints");
                Ok(())
            }
            Err(source) => {
                let reference = EventRecorder::reference(&endpoints);
                if current.is_none() {
                    self.recorder
                        .warning(
                            &reference,
                            "FailedToCreateEndpoint",
                            format!("Failed to create endpoint for service {key}: {source}"),
                        )
                        .await;
                    Err(EndpointsError::CreateEndpoints {
                        service: key.to_string(),
                        source,
                    })
                } else {
                    self.recorder
                        .warning(
                            &reference,
                            "FailedToUpdateEndpoint",
                            format!("Failed to update endpoint {key}: {source}"),
                        )
                        .await;
                    Err(EndpointsError::UpdateEndpoints {
                        service: key.to_string(),
                        source,
                    })
                }
            }
        }
    }

    /// The Service is gone: so are its Endpoints.
    async fn service_deleted(&self, namespace: &str, name: &str) -> Result<(), EndpointsError> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(EndpointsError::DeleteEndpoints {
                    service: pods::key(namespace, name),
                    source,
                });
            }
        }
        self.lock_trigger_times().delete_service(namespace, name);
        self.lock_stale()
            .replaced
            .remove(&pods::key(namespace, name));
        Ok(())
    }

    /// The Endpoints object to write: the stored one (or a new one) with the desired subsets,
    /// the Service's labels (plus the headless marker) and the annotations.
    fn build(
        &self,
        service: &Service,
        current: Option<&Endpoints>,
        mut subsets: Vec<k8s_openapi::api::core::v1::EndpointSubset>,
        trigger_time: Option<jiff::Timestamp>,
    ) -> Endpoints {
        let mut endpoints = current.cloned().unwrap_or_else(|| Endpoints {
            metadata: ObjectMeta {
                name: service.metadata.name.clone(),
                namespace: service.metadata.namespace.clone(),
                ..ObjectMeta::default()
            },
            ..Endpoints::default()
        });
        let mut annotations = endpoints.metadata.annotations.take().unwrap_or_default();
        match trigger_time {
            Some(time) => {
                annotations.insert(
                    super::LAST_CHANGE_TRIGGER_TIME.to_string(),
                    super::trigger_time::format(time),
                );
            }
            None => {
                annotations.remove(super::LAST_CHANGE_TRIGGER_TIME);
            }
        }
        if truncate(&mut subsets) {
            annotations.insert(OVER_CAPACITY.to_string(), "truncated".to_string());
        } else {
            annotations.remove(OVER_CAPACITY);
        }
        endpoints.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
        let mut labels = service.metadata.labels.clone().unwrap_or_default();
        if pods::is_service_ip_set(service) {
            labels.remove(HEADLESS_LABEL);
        } else {
            labels.insert(HEADLESS_LABEL.to_string(), String::new());
        }
        endpoints.metadata.labels = (!labels.is_empty()).then_some(labels);
        endpoints.subsets = (!subsets.is_empty()).then_some(subsets);
        endpoints
    }
}
