//! Emptying one deleting namespace, then releasing it (upstream
//! `pkg/controller/namespace/deletion/namespaced_resources_deleter.go`).
//!
//! One pass, from the namespace's current state:
//! 1. read it fresh (NotFound or no deletionTimestamp: nothing to do);
//! 2. make sure `status.phase` is `Terminating`;
//! 3. delete every namespaced resource in it — pods first (1.33's `OrderedNamespaceDeletion`,
//!    on by default: nothing else goes while a pod may still be using it) — with one
//!    `deletecollection` per resource (propagationPolicy Background, so the garbage collector
//!    never adds `orphan`), falling back to list-and-delete where a resource does not serve it;
//! 4. list what remains: pods still in their grace period and objects held by finalizers are
//!    expected (an estimate of how long they take is returned); anything else is an error;
//! 5. write the status conditions that describe the pass;
//! 6. when nothing remains, remove the `kubernetes` finalizer through
//!    `PUT /api/v1/namespaces/<name>/finalize`, after which the server deletes the namespace.

use std::collections::BTreeMap;

use api::catalogue::{self, Resource};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, NamespaceStatus, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use tracing::{debug, info, warn};

use super::NamespaceError;
use super::conditions::{ConditionUpdater, ContentTotals};

/// The spec finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// Upstream's assumed wait for an object held by finalizers (`finalizerEstimateSeconds`).
const FINALIZER_ESTIMATE_SECONDS: i64 = 15;

/// How many times a namespace write is retried on 409 Conflict within one pass.
const CONFLICT_RETRIES: usize = 5;

/// Where a pass left the namespace.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The namespace does not exist, is not being deleted, or has been finalized.
    Done,
    /// Content remains that is expected to go by itself within about this many seconds.
    Remaining { estimate_seconds: i64 },
}

/// Deletes namespaces' content with one client.
pub struct Deleter {
    client: kube::Client,
    namespaces: Api<Namespace>,
    resources: Vec<&'static Resource>,
}

impl Deleter {
    pub fn new(client: kube::Client) -> Self {
        Self {
            namespaces: Api::all(client.clone()),
            client,
            resources: deletable_resources(),
        }
    }

    /// One idempotent pass over the namespace `name` (upstream `Delete`).
    pub async fn delete(&self, name: &str) -> Result<Outcome, NamespaceError> {
        let Some(namespace) =
            self.namespaces
                .get_opt(name)
                .await
                .map_err(|source| NamespaceError::GetNamespace {
                    name: name.into(),
                    source,
                })?
        else {
            return Ok(Outcome::Done);
        };
        let Some(deleted_at) = namespace.metadata.deletion_timestamp.as_ref().map(|t| t.0) else {
            return Ok(Outcome::Done);
        };
        let Some(namespace) = self.mark_terminating(namespace).await? else {
            return Ok(Outcome::Done);
        };

        let estimate = self
            .delete_all_content(namespace.clone(), deleted_at)
            .await?;
        if estimate > 0 {
            return Ok(Outcome::Remaining {
                estimate_seconds: estimate,
            });
        }
        self.finalize(namespace).await?;
        Ok(Outcome::Done)
    }

    /// Sets `status.phase: Terminating` if it is not already; `None` when the namespace is
    /// gone. The server sets the phase itself on DELETE; this covers namespaces deleted
    /// before that (upstream `updateNamespaceStatusFunc`).
    async fn mark_terminating(
        &self,
        mut namespace: Namespace,
    ) -> Result<Option<Namespace>, NamespaceError> {
        let name = name_of(&namespace);
        for _ in 0..CONFLICT_RETRIES {
            if namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating") {
                return Ok(Some(namespace));
            }
            let mut next = namespace.clone();
            next.status
                .get_or_insert_with(NamespaceStatus::default)
                .phase = Some("Terminating".into());
            match self
                .namespaces
                .replace_status(&name, &PostParams::default(), &next)
                .await
            {
                Ok(updated) => return Ok(Some(updated)),
                Err(e) if is_status(&e, 404) => return Ok(None),
                Err(e) if is_status(&e, 409) => match self.refetch(&namespace).await? {
                    Some(latest) => namespace = latest,
                    None => return Ok(None),
                },
                Err(source) => return Err(NamespaceError::MarkTerminating { name, source }),
            }
        }
        Err(NamespaceError::TooManyConflicts {
            name,
            step: "setting status.phase to Terminating",
        })
    }

    /// Removes [`FINALIZER`] from `spec.finalizers` (upstream `finalizeNamespace`); the server
    /// deletes the namespace once no spec finalizer is left.
    async fn finalize(&self, mut namespace: Namespace) -> Result<(), NamespaceError> {
        let name = name_of(&namespace);
        for _ in 0..CONFLICT_RETRIES {
            let current = namespace
                .spec
                .as_ref()
                .and_then(|s| s.finalizers.clone())
                .unwrap_or_default();
            if !current.iter().any(|f| f == FINALIZER) {
                return Ok(());
            }
            let mut next = namespace.clone();
            next.spec.get_or_insert_with(Default::default).finalizers =
                Some(remaining_finalizers(&current));
            match self
                .namespaces
                .replace_subresource("finalize", &name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => {
                    info!(namespace = %name, "namespace emptied and finalized");
                    return Ok(());
                }
                // Another controller finished first: life is good (upstream says the same).
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e) if is_status(&e, 409) => match self.refetch(&namespace).await? {
                    Some(latest) => namespace = latest,
                    None => return Ok(()),
                },
                Err(source) => return Err(NamespaceError::Finalize { name, source }),
            }
        }
        Err(NamespaceError::TooManyConflicts {
            name,
            step: "removing the kubernetes finalizer",
        })
    }

    /// The latest copy after a conflict; a namespace recreated under the same name is not ours.
    async fn refetch(&self, previous: &Namespace) -> Result<Option<Namespace>, NamespaceError> {
        let name = name_of(previous);
        let latest = self.namespaces.get_opt(&name).await.map_err(|source| {
            NamespaceError::GetNamespace {
                name: name.clone(),
                source,
            }
        })?;
        match latest {
            Some(latest) if latest.metadata.uid != previous.metadata.uid => {
                Err(NamespaceError::UidChanged { name })
            }
            other => Ok(other),
        }
    }

    /// Deletes everything in the namespace and reports the pass in its conditions; returns
    /// the estimated seconds until what remains is gone (upstream `deleteAllContent`).
    async fn delete_all_content(
        &self,
        mut namespace: Namespace,
        deleted_at: Timestamp,
    ) -> Result<i64, NamespaceError> {
        let name = name_of(&namespace);
        let mut updater = ConditionUpdater::default();
        let mut totals = ContentTotals::default();
        let mut errors = Vec::new();
        let mut estimate = 0;

        let (pods, rest): (Vec<&Resource>, Vec<&Resource>) = self
            .resources
            .iter()
            .partition(|r| r.group.is_empty() && r.plural == "pods");
        // Pods first; the rest only once no pod is left.
        for batch in [pods, rest] {
            for resource in batch {
                let (pass, error) = self.delete_resource(resource, &name, deleted_at).await;
                if let Some(message) = error {
                    updater.delete_content_error(message.clone());
                    errors.push(message);
                }
                estimate = estimate.max(pass.estimate_seconds);
                if pass.remaining > 0 {
                    totals.by_resource.insert(
                        format!("{}.{}", resource.plural, resource.group),
                        pass.remaining,
                    );
                    for (finalizer, n) in pass.finalizers {
                        *totals.by_finalizer.entry(finalizer).or_default() += n;
                    }
                }
            }
            if !totals.is_empty() {
                break;
            }
        }

        updater.content_totals(&totals);
        let status = namespace
            .status
            .get_or_insert_with(NamespaceStatus::default);
        if updater.update(status, Timestamp::now()) {
            // Best effort, as upstream: a lost write is redone on the next pass.
            if let Err(e) = self
                .namespaces
                .replace_status(&name, &PostParams::default(), &namespace)
                .await
            {
                warn!(namespace = %name, error = %e, "couldn't update status conditions");
            }
        }
        if !errors.is_empty() {
            return Err(NamespaceError::DeleteContent { name, errors });
        }
        debug!(namespace = %name, estimate, remaining = ?totals.by_resource, "deleted namespace content");
        Ok(estimate)
    }

    /// Empties one resource in the namespace (upstream `deleteAllContentForGroupVersionResource`).
    /// Returns what remains, and a message when something went wrong.
    async fn delete_resource(
        &self,
        resource: &Resource,
        namespace: &str,
        deleted_at: Timestamp,
    ) -> (ResourcePass, Option<String>) {
        let gvr = format!(
            "{}/{}, Resource={}",
            resource.group, resource.version, resource.plural
        );
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &api_resource(resource));

        let estimate = if resource.group.is_empty() && resource.plural == "pods" {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            match pods.list(&ListParams::default()).await {
                Ok(list) => remaining_estimate(
                    pod_grace_estimate(&list.items),
                    deleted_at,
                    Timestamp::now(),
                ),
                Err(e) => {
                    return (
                        ResourcePass::default(),
                        Some(format!(
                            "estimating pod termination for gvr: {gvr}: {}",
                            api_message(&e)
                        )),
                    );
                }
            }
        } else {
            0
        };
        let failed = |what: &str, e: &kube::Error| {
            (
                ResourcePass {
                    estimate_seconds: estimate,
                    ..ResourcePass::default()
                },
                Some(format!("{what} for gvr: {gvr}: {}", api_message(e))),
            )
        };

        match api
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await
        {
            Ok(_) => {}
            // Not served: delete one by one (upstream does the same for 404 and 405).
            Err(e) if is_status(&e, 404) || is_status(&e, 405) => {
                debug!(namespace, %gvr, "deletecollection not supported; deleting each item");
                match api.list(&ListParams::default()).await {
                    Ok(list) => {
                        for item in list.items {
                            let Some(item_name) = item.metadata.name.as_deref() else {
                                continue;
                            };
                            match api.delete(item_name, &DeleteParams::background()).await {
                                Ok(_) => {}
                                Err(e) if is_status(&e, 404) || is_status(&e, 405) => {}
                                Err(e) => return failed("deleting each item", &e),
                            }
                        }
                    }
                    Err(e) if is_status(&e, 404) || is_status(&e, 405) => {
                        return (ResourcePass::default(), None);
                    }
                    Err(e) => return failed("listing items to delete", &e),
                }
            }
            Err(e) => return failed("deleting collection", &e),
        }

        let items = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) if is_status(&e, 404) || is_status(&e, 405) => {
                return (
                    ResourcePass {
                        estimate_seconds: estimate,
                        ..ResourcePass::default()
                    },
                    None,
                );
            }
            Err(e) => return failed("verifying no items remain", &e),
        };
        match classify_remaining(&items, estimate) {
            Ok(pass) => (pass, None),
            Err(pass) => (
                pass,
                Some(format!(
                    "unexpected items still remain in namespace: {namespace} for gvr: {gvr}"
                )),
            ),
        }
    }
}

/// What one resource left behind.
#[derive(Debug, Default, PartialEq, Eq)]
struct ResourcePass {
    /// Seconds until the rest should be gone; 0 makes no estimate.
    estimate_seconds: i64,
    remaining: usize,
    finalizers: BTreeMap<String, usize>,
}

/// Whether the items left after deletion are expected (`Ok`): pods within their grace
/// estimate or objects held by finalizers. `Err` means they should have gone.
fn classify_remaining(
    items: &[DynamicObject],
    estimate: i64,
) -> Result<ResourcePass, ResourcePass> {
    if items.is_empty() {
        return Ok(ResourcePass::default());
    }
    let mut finalizers = BTreeMap::new();
    for item in items {
        for finalizer in item.metadata.finalizers.iter().flatten() {
            *finalizers.entry(finalizer.clone()).or_insert(0) += 1;
        }
    }
    let remaining = items.len();
    if estimate != 0 {
        return Ok(ResourcePass {
            estimate_seconds: estimate,
            remaining,
            finalizers,
        });
    }
    if !finalizers.is_empty() {
        return Ok(ResourcePass {
            estimate_seconds: FINALIZER_ESTIMATE_SECONDS,
            remaining,
            finalizers,
        });
    }
    Err(ResourcePass {
        estimate_seconds: 0,
        remaining,
        finalizers,
    })
}

/// The longest termination grace period of the pods that may still be running (upstream
/// `estimateGracefulTerminationForPods`): terminal pods are skipped.
fn pod_grace_estimate(pods: &[Pod]) -> i64 {
    pods.iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        })
        .filter_map(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .max()
        .unwrap_or(0)
        .max(0)
}

/// An estimate counts from when the namespace was deleted; once that long has passed there
/// is no estimate left (upstream `estimateGracefulTermination`).
fn remaining_estimate(estimate: i64, deleted_at: Timestamp, now: Timestamp) -> i64 {
    let elapsed = now.as_second().saturating_sub(deleted_at.as_second());
    if elapsed >= estimate { 0 } else { estimate }
}

/// The namespace's spec finalizers without ours, sorted and deduplicated as upstream's set.
fn remaining_finalizers(current: &[String]) -> Vec<String> {
    let mut out: Vec<String> = current
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every namespaced resource that can be deleted, one version per group-resource: the first
/// the catalogue lists, which is the preferred one (upstream uses the server's preferred
/// namespaced resources that support `delete`). Create-only resources are never stored.
fn deletable_resources() -> Vec<&'static Resource> {
    let mut out: Vec<&'static Resource> = Vec::new();
    for resource in catalogue::RESOURCES {
        if !resource.namespaced || resource.create_only || !resource.verbs().contains(&"delete") {
            continue;
        }
        if out
            .iter()
            .any(|r| r.group == resource.group && r.plural == resource.plural)
        {
            continue;
        }
        out.push(resource);
    }
    out
}

fn api_resource(resource: &Resource) -> ApiResource {
    ApiResource {
        group: resource.group.into(),
        version: resource.version.into(),
        api_version: resource.api_version(),
        kind: resource.kind.into(),
        plural: resource.plural.into(),
    }
}

fn name_of(namespace: &Namespace) -> String {
    namespace.metadata.name.clone().unwrap_or_default()
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == code)
}

/// The server's message for an API error, the error itself otherwise.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(grace: Option<i64>, phase: Option<&str>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                termination_grace_period_seconds: grace,
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: phase.map(String::from),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn object(finalizers: &[&str]) -> DynamicObject {
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                finalizers: (!finalizers.is_empty())
                    .then(|| finalizers.iter().map(|f| f.to_string()).collect()),
                ..ObjectMeta::default()
            },
            data: serde_json::json!({}),
        }
    }

    #[test]
    fn every_namespaced_resource_is_deleted_once_in_its_preferred_version() {
        let resources = deletable_resources();
        let names: Vec<String> = resources
            .iter()
            .map(|r| format!("{}/{}/{}", r.group, r.version, r.plural))
            .collect();
        for expected in [
            "/v1/pods",
            "/v1/configmaps",
            "/v1/secrets",
            "apps/v1/deployments",
            "/v1/events",
            "events.k8s.io/v1/events",
            "coordination.k8s.io/v1/leases",
        ] {
            assert!(
                names.contains(&expected.to_string()),
                "{expected} missing from {names:?}"
            );
        }
        // HorizontalPodAutoscalers are served at v2 and v1 from one storage: deleted once, at v2.
        let hpas: Vec<&String> = names
            .iter()
            .filter(|n| n.contains("horizontalpodautoscalers"))
            .collect();
        assert_eq!(hpas, ["autoscaling/v2/horizontalpodautoscalers"]);
        assert!(resources.iter().all(|r| r.namespaced && !r.create_only));
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with("/namespaces") || n.ends_with("/nodes"))
        );
    }

    #[test]
    fn pod_estimate_is_the_longest_grace_of_live_pods() {
        assert_eq!(pod_grace_estimate(&[]), 0);
        let pods = [
            pod(Some(30), Some("Running")),
            pod(Some(90), Some("Succeeded")),
            pod(Some(45), None),
            pod(None, None),
        ];
        assert_eq!(pod_grace_estimate(&pods), 45);
    }

    #[test]
    fn the_estimate_runs_out_after_the_namespace_has_been_deleted_that_long() {
        let deleted = Timestamp::from_second(1000).expect("ts");
        let at = |s| Timestamp::from_second(s).expect("ts");
        assert_eq!(remaining_estimate(30, deleted, at(1010)), 30);
        assert_eq!(remaining_estimate(30, deleted, at(1030)), 0);
        assert_eq!(remaining_estimate(0, deleted, at(1000)), 0);
    }

    #[test]
    fn leftovers_are_expected_only_with_an_estimate_or_finalizers() {
        assert_eq!(classify_remaining(&[], 0), Ok(ResourcePass::default()));
        let graceful = classify_remaining(&[object(&[])], 30).expect("pods in their grace period");
        assert_eq!((graceful.estimate_seconds, graceful.remaining), (30, 1));
        let held = classify_remaining(&[object(&["a/b"]), object(&["a/b", "c"]), object(&[])], 0)
            .expect("finalizers");
        assert_eq!(held.estimate_seconds, FINALIZER_ESTIMATE_SECONDS);
        assert_eq!(held.remaining, 3);
        assert_eq!(
            held.finalizers,
            BTreeMap::from([("a/b".to_string(), 2), ("c".to_string(), 1)])
        );
        let stuck = classify_remaining(&[object(&[])], 0).expect_err("should have gone");
        assert_eq!(stuck.remaining, 1);
    }

    #[test]
    fn finalizing_removes_only_ours() {
        let current = [
            "kubernetes".to_string(),
            "z.example/x".to_string(),
            "a.example/y".to_string(),
        ];
        assert_eq!(
            remaining_finalizers(&current),
            ["a.example/y", "z.example/x"]
        );
        assert!(remaining_finalizers(&["kubernetes".to_string()]).is_empty());
    }
}
