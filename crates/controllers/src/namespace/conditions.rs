//! The status conditions a deleting namespace carries, so `kubectl describe namespace` says
//! why it is still `Terminating` (upstream `pkg/controller/namespace/deletion/
//! status_condition_utils.go`). Every pass of the deleter reports all five types: a failure as
//! `True` with its reason, otherwise `False` with the "ok" reason and message.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{NamespaceCondition, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
pub const GROUP_VERSION_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The maintained types in upstream's order, with the reason and message of their "ok"
/// (`False`) variant.
const MAINTAINED: [(&str, &str, &str); 5] = [
    (
        DISCOVERY_FAILURE,
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        GROUP_VERSION_PARSING_FAILURE,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        CONTENT_FAILURE,
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        CONTENT_REMAINING,
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        FINALIZERS_REMAINING,
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

/// What is left in a namespace after one deletion pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentTotals {
    /// Remaining objects per resource, keyed as upstream prints them: `<plural>.<group>`
    /// (so core resources read `pods.`).
    pub by_resource: BTreeMap<String, usize>,
    /// Remaining objects per finalizer they still carry.
    pub by_finalizer: BTreeMap<String, usize>,
}

impl ContentTotals {
    pub fn is_empty(&self) -> bool {
        self.by_resource.values().all(|&n| n == 0)
    }
}

/// Collects one pass's failures, then writes them into a namespace status.
#[derive(Debug, Default)]
pub struct ConditionUpdater {
    failures: Vec<(&'static str, &'static str, String)>,
    delete_content_errors: Vec<String>,
}

impl ConditionUpdater {
    /// Records a failure to delete one resource's content.
    pub fn delete_content_error(&mut self, message: String) {
        self.delete_content_errors.push(message);
    }

    /// Records what remains (upstream `ProcessContentTotals`).
    pub fn content_totals(&mut self, totals: &ContentTotals) {
        let resources: Vec<String> = totals
            .by_resource
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(resource, n)| format!("{resource} has {n} resource instances"))
            .collect();
        if !resources.is_empty() {
            self.failures.push((
                CONTENT_REMAINING,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", sorted_join(resources)),
            ));
        }
        let finalizers: Vec<String> = totals
            .by_finalizer
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(finalizer, n)| format!("{finalizer} in {n} resource instances"))
            .collect();
        if !finalizers.is_empty() {
            self.failures.push((
                FINALIZERS_REMAINING,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    sorted_join(finalizers)
                ),
            ));
        }
    }

    /// Writes the conditions into `status`; `true` when anything changed. A condition's
    /// `lastTransitionTime` moves only when its status flips (upstream `updateConditions`).
    pub fn update(mut self, status: &mut NamespaceStatus, now: Timestamp) -> bool {
        if !self.delete_content_errors.is_empty() {
            let count = self.delete_content_errors.len();
            let messages = sorted_join(std::mem::take(&mut self.delete_content_errors));
            self.failures.push((
                CONTENT_FAILURE,
                "ContentDeletionFailed",
                format!("Failed to delete all resource types, {count} remaining: {messages}"),
            ));
        }
        // Kubernetes times are whole seconds on the wire.
        let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let mut changed = false;
        for (type_, ok_reason, ok_message) in MAINTAINED {
            let (state, reason, message) = match self.failures.iter().find(|(t, _, _)| *t == type_)
            {
                Some((_, reason, message)) => ("True", *reason, message.clone()),
                None => ("False", ok_reason, ok_message.to_string()),
            };
            match conditions.iter_mut().find(|c| c.type_ == type_) {
                None => {
                    conditions.push(NamespaceCondition {
                        type_: type_.to_string(),
                        status: state.to_string(),
                        reason: Some(reason.to_string()),
                        message: Some(message),
                        last_transition_time: Some(now.clone()),
                    });
                    changed = true;
                }
                Some(old) => {
                    if old.status != state
                        || old.reason.as_deref() != Some(reason)
                        || old.message.as_deref() != Some(message.as_str())
                    {
                        if old.status != state {
                            old.last_transition_time = Some(now.clone());
                        }
                        old.status = state.to_string();
                        old.reason = Some(reason.to_string());
                        old.message = Some(message);
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

/// Sorted for stable messages, so an unchanged situation does not rewrite the status.
fn sorted_join(mut parts: Vec<String>) -> String {
    parts.sort();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("timestamp")
    }

    fn find<'a>(status: &'a NamespaceStatus, type_: &str) -> &'a NamespaceCondition {
        status
            .conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == type_))
            .expect("condition")
    }

    #[test]
    fn a_clean_pass_reports_every_condition_as_ok() {
        let mut status = NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        };
        assert!(ConditionUpdater::default().update(&mut status, at(10)));
        let conditions = status.conditions.as_ref().expect("conditions");
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                DISCOVERY_FAILURE,
                GROUP_VERSION_PARSING_FAILURE,
                CONTENT_FAILURE,
                CONTENT_REMAINING,
                FINALIZERS_REMAINING
            ]
        );
        assert!(conditions.iter().all(|c| c.status == "False"));
        let f = find(&status, FINALIZERS_REMAINING);
        assert_eq!(f.reason.as_deref(), Some("ContentHasNoFinalizers"));
        assert_eq!(
            f.message.as_deref(),
            Some("All content-preserving finalizers finished")
        );
        // The same pass again changes nothing.
        assert!(!ConditionUpdater::default().update(&mut status, at(20)));
    }

    #[test]
    fn remaining_content_and_finalizers_are_counted_like_upstream() {
        let mut totals = ContentTotals::default();
        totals.by_resource.insert("pods.".into(), 2);
        totals.by_resource.insert("deployments.apps".into(), 1);
        totals.by_resource.insert("secrets.".into(), 0);
        totals.by_finalizer.insert("example.com/keep".into(), 1);
        let mut updater = ConditionUpdater::default();
        updater.content_totals(&totals);
        let mut status = NamespaceStatus::default();
        assert!(updater.update(&mut status, at(10)));
        let c = find(&status, CONTENT_REMAINING);
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some("SomeResourcesRemain"))
        );
        assert_eq!(
            c.message.as_deref(),
            Some(
                "Some resources are remaining: deployments.apps has 1 resource instances, pods. has 2 resource instances"
            )
        );
        let f = find(&status, FINALIZERS_REMAINING);
        assert_eq!(
            (f.status.as_str(), f.reason.as_deref()),
            ("True", Some("SomeFinalizersRemain"))
        );
        assert_eq!(
            f.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances"
            )
        );
    }

    #[test]
    fn content_errors_are_aggregated_and_sorted() {
        let mut updater = ConditionUpdater::default();
        updater.delete_content_error(
            "unexpected items still remain in namespace: a for gvr: /v1, Resource=pods".into(),
        );
        updater.delete_content_error("boom".into());
        let mut status = NamespaceStatus::default();
        updater.update(&mut status, at(10));
        let c = find(&status, CONTENT_FAILURE);
        assert_eq!(c.status, "True");
        assert_eq!(c.reason.as_deref(), Some("ContentDeletionFailed"));
        assert_eq!(
            c.message.as_deref(),
            Some(
                "Failed to delete all resource types, 2 remaining: boom, unexpected items still remain in namespace: a for gvr: /v1, Resource=pods"
            )
        );
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut status = NamespaceStatus::default();
        let mut first = ContentTotals::default();
        first.by_resource.insert("pods.".into(), 2);
        let mut u = ConditionUpdater::default();
        u.content_totals(&first);
        u.update(&mut status, at(10));

        // Same status, new message: the time stays.
        let mut second = ContentTotals::default();
        second.by_resource.insert("pods.".into(), 1);
        let mut u = ConditionUpdater::default();
        u.content_totals(&second);
        assert!(u.update(&mut status, at(20)));
        let c = find(&status, CONTENT_REMAINING);
        assert_eq!(c.last_transition_time, Some(Time(at(10))));
        assert_eq!(
            c.message.as_deref(),
            Some("Some resources are remaining: pods. has 1 resource instances")
        );

        // Flipped to ok: the time moves.
        assert!(ConditionUpdater::default().update(&mut status, at(30)));
        let c = find(&status, CONTENT_REMAINING);
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("ContentRemoved"))
        );
        assert_eq!(c.last_transition_time, Some(Time(at(30))));
    }

    #[test]
    fn conditions_of_other_types_are_kept() {
        let mut status = NamespaceStatus {
            conditions: Some(vec![NamespaceCondition {
                type_: "Custom".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        ConditionUpdater::default().update(&mut status, at(10));
        let conditions = status.conditions.expect("conditions");
        assert_eq!(conditions.len(), 6);
        assert_eq!(conditions[0].type_, "Custom");
    }
}
