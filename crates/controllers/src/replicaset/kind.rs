//! The two kinds the controller serves. Upstream runs the ReplicaSet controller over
//! ReplicationControllers by converting each RC to an `apps.ReplicaSet`
//! (pkg/controller/replication's conversion adapters); here the core reads an owner through
//! [`ReplicaOwner`] and each kind is a thin adapter. Everything the core writes back —
//! the status (identical JSON for both kinds), Events and ownerReferences — names the real
//! kind, so `kubectl describe rc` tells the same story as for a ReplicaSet.

use std::fmt::Debug;

use api::selectors::{self, LabelSelector, SelectorError};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What the generic core needs of an owner of replicas.
pub trait ReplicaOwner:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The component upstream's controller records Events as.
    const COMPONENT: &'static str;

    /// `spec.replicas` (defaulted to 1 by the API server; 1 when absent, as upstream's
    /// defaulting would make it).
    fn desired_replicas(&self) -> i32;

    fn min_ready_seconds(&self) -> i32;

    /// The pod selector, as upstream's `metav1.LabelSelectorAsSelector` makes it (a missing
    /// selector selects nothing).
    fn selector(&self) -> Result<LabelSelector, SelectorError>;

    fn template(&self) -> Option<&PodTemplateSpec>;

    /// The current status, in ReplicaSet terms.
    fn replica_status(&self) -> ReplicaSetStatus;
}

impl ReplicaOwner for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn selector(&self) -> Result<LabelSelector, SelectorError> {
        let Some(spec) = &self.spec else {
            return Ok(LabelSelector::nothing());
        };
        let json = serde_json::to_value(&spec.selector).map_err(|e| {
            SelectorError::MalformedLabelSelector {
                field: "spec.selector".into(),
                reason: e.to_string(),
            }
        })?;
        selectors::from_label_selector_json(&json)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn replica_status(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }
}

impl ReplicaOwner for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    /// Upstream's conversion turns the selector map into `matchLabels`; an absent map stays
    /// absent and selects nothing.
    fn selector(&self) -> Result<LabelSelector, SelectorError> {
        Ok(match self.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(map) => LabelSelector::from_map(map),
            None => LabelSelector::nothing(),
        })
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn replica_status(&self) -> ReplicaSetStatus {
        let Some(status) = &self.status else {
            return ReplicaSetStatus::default();
        };
        ReplicaSetStatus {
            replicas: status.replicas,
            fully_labeled_replicas: status.fully_labeled_replicas,
            ready_replicas: status.ready_replicas,
            available_replicas: status.available_replicas,
            observed_generation: status.observed_generation,
            conditions: status.conditions.as_ref().map(|conditions| {
                conditions
                    .iter()
                    .map(|c| ReplicaSetCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                        last_transition_time: c.last_transition_time.clone(),
                    })
                    .collect()
            }),
            terminating_replicas: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{ReplicationControllerSpec, ReplicationControllerStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaSelector;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn replica_set_selector_and_defaults() {
        let rs = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                selector: MetaSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    match_expressions: None,
                },
                ..ReplicaSetSpec::default()
            }),
            ..ReplicaSet::default()
        };
        assert_eq!(rs.desired_replicas(), 1);
        assert_eq!(rs.min_ready_seconds(), 0);
        let selector = rs.selector().expect("selector");
        assert!(selector.matches(&labels(&[("app", "web"), ("x", "y")])));
        assert!(!selector.matches(&labels(&[("app", "db")])));
        assert!(
            ReplicaSet::default()
                .selector()
                .expect("none")
                .matches_nothing()
        );
    }

    #[test]
    fn replication_controller_converts_like_upstream() {
        let rc = ReplicationController {
            spec: Some(ReplicationControllerSpec {
                replicas: Some(3),
                min_ready_seconds: Some(5),
                selector: Some(labels(&[("app", "web")])),
                ..ReplicationControllerSpec::default()
            }),
            status: Some(ReplicationControllerStatus {
                replicas: 2,
                ready_replicas: Some(1),
                observed_generation: Some(4),
                ..ReplicationControllerStatus::default()
            }),
            ..ReplicationController::default()
        };
        assert_eq!(rc.desired_replicas(), 3);
        assert_eq!(rc.min_ready_seconds(), 5);
        assert!(
            rc.selector()
                .expect("selector")
                .matches(&labels(&[("app", "web")]))
        );
        let status = rc.replica_status();
        assert_eq!(
            (
                status.replicas,
                status.ready_replicas,
                status.observed_generation
            ),
            (2, Some(1), Some(4))
        );
        assert!(
            ReplicationController::default()
                .selector()
                .expect("none")
                .matches_nothing()
        );
    }
}
