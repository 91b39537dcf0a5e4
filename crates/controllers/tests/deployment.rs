//! Component tests of the Deployment controller against the in-process API server. The
//! ReplicaSet controller is simulated (it runs in the real server, not here): a task that
//! watches ReplicaSets and reports `spec.replicas` pods as existing and available, except for
//! templates whose image is marked broken, whose pods never become ready — a stalled rollout.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controllers::{Context, ControllersConfig};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NS: &str = "default";
const BROKEN_IMAGE: &str = "registry.invalid/broken:1";
const ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

/// The API server, the Deployment controller and the simulated ReplicaSet controller.
struct Harness {
    api: common::TestApi,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

fn images_of(rs: &ReplicaSet) -> Vec<String> {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn revision(rs: &ReplicaSet) -> Option<&str> {
    annotation(&rs.metadata, "deployment.kubernetes.io/revision")
}

/// The simulated ReplicaSet controller: mirrors `spec.replicas` into the status, one event
/// at a time (like the real one, its status writes follow the spec changes in order).
async fn simulate_replica_set_controller(client: kube::Client) {
    let api: Api<ReplicaSet> = Api::namespaced(client, NS);
    let stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let Ok(rs) = event else { continue };
        let replicas = spec_replicas(&rs);
        let ready = if images_of(&rs).iter().any(|i| i == BROKEN_IMAGE) {
            0
        } else {
            replicas
        };
        let generation = rs.metadata.generation.unwrap_or(0);
        let status = rs.status.clone().unwrap_or_default();
        let current = (
            status.replicas,
            status.ready_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            status.observed_generation.unwrap_or(0),
        );
        if current == (replicas, ready, ready, generation) {
            continue;
        }
        let patch = json!({"status": {
            "replicas": replicas,
            "fullyLabeledReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": generation,
        }});
        let name = rs.metadata.name.clone().unwrap_or_default();
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

/// Records every ReplicaSet state seen and checks `invariant` on each; violations are kept.
struct Observer {
    violations: Arc<Mutex<Vec<String>>>,
    states: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observer {
    fn start(
        client: kube::Client,
        invariant: impl Fn(&[&ReplicaSet]) -> Option<String> + Send + 'static,
    ) -> Observer {
        let violations = Arc::new(Mutex::new(Vec::new()));
        let states = Arc::new(Mutex::new(0));
        let (v, s) = (violations.clone(), states.clone());
        let task = tokio::spawn(async move {
            let api: Api<ReplicaSet> = Api::namespaced(client, NS);
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            let mut seen: HashMap<String, ReplicaSet> = HashMap::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(rs) | watcher::Event::InitApply(rs)) => {
                        seen.insert(rs.metadata.name.clone().unwrap_or_default(), rs);
                    }
                    Ok(watcher::Event::Delete(rs)) => {
                        seen.remove(rs.metadata.name.as_deref().unwrap_or_default());
                    }
                    _ => continue,
                }
                let all: Vec<&ReplicaSet> = seen.values().collect();
                *s.lock().expect("lock") += 1;
                if let Some(violation) = invariant(&all) {
                    v.lock().expect("lock").push(violation);
                }
            }
        });
        Observer {
            violations,
            states,
            task,
        }
    }

    fn assert_held(&self) {
        let violations = self.violations.lock().expect("lock");
        assert!(violations.is_empty(), "invariant violated: {violations:#?}");
        assert!(*self.states.lock().expect("lock") > 0, "no state observed");
    }
}

fn describe(rss: &[&ReplicaSet]) -> String {
    rss.iter()
        .map(|rs| {
            format!(
                "{}: spec {} status {} available {}",
                rs.metadata.name.as_deref().unwrap_or_default(),
                spec_replicas(rs),
                status_replicas(rs),
                available(rs)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A RollingUpdate's bounds: pods never above `max_total`, and pods known available (a
/// ReplicaSet's available pods, but no more than it keeps) never below `min_available`.
fn rolling_bounds(
    max_total: i32,
    min_available: i32,
) -> impl Fn(&[&ReplicaSet]) -> Option<String> + Send + 'static {
    move |rss| {
        let total: i32 = rss.iter().map(|rs| spec_replicas(rs)).sum();
        let available: i32 = rss
            .iter()
            .map(|rs| spec_replicas(rs).min(available(rs)))
            .sum();
        (total > max_total || available < min_available).then(|| describe(rss))
    }
}

impl Harness {
    async fn start() -> Harness {
        let api = common::start_api().await;
        let cancel = CancellationToken::new();
        let ctx = Context {
            client: api.client.clone(),
            config: ControllersConfig::default(),
            shutdown: api.shutdown.clone(),
        };
        let controller = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                let _ = controllers::deployment::run(ctx, cancel).await;
            }
        });
        let simulator = tokio::spawn(simulate_replica_set_controller(api.client.clone()));
        Harness {
            api,
            cancel,
            tasks: vec![controller, simulator],
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.api.client.clone(), NS)
    }

    fn replica_sets(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.api.client.clone(), NS)
    }

    async fn create(&self, spec: Value) -> Deployment {
        let d: Deployment = serde_json::from_value(spec).expect("deployment json");
        self.deployments()
            .create(&PostParams::default(), &d)
            .await
            .expect("create deployment")
    }

    async fn get(&self, name: &str) -> Deployment {
        self.deployments().get(name).await.expect("get deployment")
    }

    async fn patch(&self, name: &str, patch: Value) -> Deployment {
        self.deployments()
            .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .expect("patch deployment")
    }

    async fn set_image(&self, name: &str, image: &str) -> Deployment {
        self.patch(
            name,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}),
        )
        .await
    }

    /// The Deployment's ReplicaSets, oldest revision first.
    async fn replica_sets_of(&self, name: &str) -> Vec<ReplicaSet> {
        let d = self.get(name).await;
        let mut rss: Vec<ReplicaSet> =
            self.replica_sets()
                .list(&ListParams::default())
                .await
                .expect("list replica sets")
                .items
                .into_iter()
                .filter(|rs| {
                    rs.metadata.owner_references.iter().flatten().any(|r| {
                        r.controller == Some(true) && Some(&r.uid) == d.metadata.uid.as_ref()
                    })
                })
                .collect();
        rss.sort_by_key(|rs| {
            revision(rs)
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(0)
        });
        rss
    }

    /// `kubectl rollout status`'s "successfully rolled out".
    async fn wait_rolled_out(&self, name: &str) -> Deployment {
        eventually(&format!("deployment {name} rolled out"), || async {
            let d = self.get(name).await;
            rolled_out(&d).then_some(d)
        })
        .await
    }

    async fn events(&self, involved: &str, reason: &str) -> Vec<String> {
        Api::<Event>::namespaced(self.api.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.name.as_deref() == Some(involved)
            })
            .filter_map(|e| e.message)
            .collect()
    }

    async fn wait_event(&self, involved: &str, reason: &str, message: &str) {
        eventually(&format!("event {reason} {message:?}"), || async {
            self.events(involved, reason)
                .await
                .iter()
                .any(|m| m == message)
                .then_some(())
        })
        .await
    }
}

/// kubectl's `DeploymentStatusViewer` verdict: the spec observed, every replica updated and
/// available, no old ones left, and no ProgressDeadlineExceeded.
fn rolled_out(d: &Deployment) -> bool {
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    d.metadata.generation.unwrap_or(0) <= status.observed_generation.unwrap_or(0)
        && progressing(d).is_none_or(|(_, reason, _)| reason != "ProgressDeadlineExceeded")
        && updated >= desired
        && status.replicas.unwrap_or(0) <= updated
        && status.available_replicas.unwrap_or(0) >= updated
}

/// The Progressing condition's (status, reason, message).
fn progressing(d: &Deployment) -> Option<(String, String, String)> {
    condition(d, "Progressing")
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn web(name: &str, replicas: i32, image: &str, strategy: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    })
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

fn name_of(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

#[tokio::test]
async fn create_makes_a_hashed_replica_set_at_revision_1_and_completes() {
    let h = Harness::start().await;
    let created = h.create(web("web", 3, "nginx:1", json!({}))).await;
    let d = h.wait_rolled_out("web").await;
    let rss = h.replica_sets_of("web").await;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let name = name_of(rs);
    let hash = name
        .strip_prefix("web-")
        .expect("named <deployment>-<hash>");
    assert!(!hash.is_empty() && hash.len() <= 10, "{hash}");
    assert!(hash.chars().all(|c| ALPHABET.contains(c)), "{hash}");

    let spec = rs.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.selector
            .match_labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash")),
        Some(&hash.to_string())
    );
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .expect("template labels");
    assert_eq!(
        template_labels.get("pod-template-hash"),
        Some(&hash.to_string())
    );
    assert_eq!(template_labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(rs.metadata.labels.as_ref(), Some(&template_labels));
    let owner = &rs.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(owner.kind, "Deployment");
    assert_eq!(Some(&owner.uid), created.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
    assert_eq!(revision(rs), Some("1"));
    // Defaults: 25% of 3 → surge 1.
    assert_eq!(
        annotation(&rs.metadata, "deployment.kubernetes.io/desired-replicas"),
        Some("3")
    );
    assert_eq!(
        annotation(&rs.metadata, "deployment.kubernetes.io/max-replicas"),
        Some("4")
    );

    assert_eq!(
        annotation(&d.metadata, "deployment.kubernetes.io/revision"),
        Some("1")
    );
    let status = d.status.as_ref().expect("status");
    assert_eq!(status.observed_generation, d.metadata.generation);
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3))
    );
    assert_eq!(status.unavailable_replicas, None);
    assert_eq!(
        condition(&d, "Available"),
        Some((
            "True".into(),
            "MinimumReplicasAvailable".into(),
            "Deployment has minimum availability.".into()
        ))
    );
    // The final condition appears on the sync after the counts: wait for it.
    let d = eventually("NewReplicaSetAvailable", || async {
        let d = h.get("web").await;
        (progressing(&d).map(|c| c.1) == Some("NewReplicaSetAvailable".into())).then_some(d)
    })
    .await;
    assert_eq!(
        progressing(&d),
        Some((
            "True".into(),
            "NewReplicaSetAvailable".into(),
            format!("ReplicaSet \"{name}\" has successfully progressed.")
        ))
    );
    h.wait_event(
        "web",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {name} from 0 to 3"),
    )
    .await;
}

/// Rolls `web` from nginx:1 to nginx:2 and checks the RollingUpdate bounds on every
/// ReplicaSet state observed on the way.
async fn rolling_update_respects_bounds(
    replicas: i32,
    surge: Value,
    unavailable: Value,
    max_total: i32,
    min_available: i32,
) {
    let h = Harness::start().await;
    h.create(web("web", replicas, "nginx:1", rolling(surge, unavailable)))
        .await;
    h.wait_rolled_out("web").await;
    let first = name_of(&h.replica_sets_of("web").await[0]);
    let observer = Observer::start(
        h.api.client.clone(),
        rolling_bounds(max_total, min_available),
    );

    h.patch(
        "web",
        json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "image updated to 2"}}}),
    )
    .await;
    h.set_image("web", "nginx:2").await;
    let d = h.wait_rolled_out("web").await;
    observer.assert_held();

    let rss = h.replica_sets_of("web").await;
    assert_eq!(rss.len(), 2);
    assert_eq!(name_of(&rss[0]), first);
    assert_eq!(spec_replicas(&rss[0]), 0);
    assert_eq!(revision(&rss[1]), Some("2"));
    assert_eq!(spec_replicas(&rss[1]), replicas);
    assert_eq!(
        annotation(&rss[1].metadata, "kubernetes.io/change-cause"),
        Some("image updated to 2")
    );
    assert_eq!(
        annotation(&d.metadata, "deployment.kubernetes.io/revision"),
        Some("2")
    );
    // Old pods go in steps; the last step takes the old ReplicaSet to 0.
    let scaled_down = h.events("web", "ScalingReplicaSet").await;
    assert!(
        scaled_down.iter().any(|m| m
            .starts_with(&format!("Scaled down replica set {first} from "))
            && m.ends_with(" to 0")),
        "no scale-down to 0 of {first}: {scaled_down:?}"
    );
    let second = name_of(&rss[1]);
    assert!(
        h.events("web", "ScalingReplicaSet")
            .await
            .iter()
            .any(|m| m.starts_with(&format!("Scaled up replica set {second} from 0 to "))),
        "no scale-up event for {second}"
    );
}

#[tokio::test]
async fn rolling_update_with_max_unavailable_0_keeps_every_replica_available() {
    rolling_update_respects_bounds(3, json!(1), json!(0), 4, 3).await;
}

#[tokio::test]
async fn rolling_update_with_percentages_stays_within_surge_and_unavailability() {
    // 25% of 8: surge 2 (rounded up), unavailable 2 (rounded down).
    rolling_update_respects_bounds(8, json!("25%"), json!("25%"), 10, 6).await;
}

#[tokio::test]
async fn rolling_update_with_no_surge_removes_before_adding() {
    rolling_update_respects_bounds(4, json!(0), json!(1), 4, 3).await;
}

#[tokio::test]
async fn rollback_reuses_the_old_replica_set_at_revision_3() {
    let h = Harness::start().await;
    h.create(web("web", 2, "nginx:1", rolling(json!(1), json!(0))))
        .await;
    h.wait_rolled_out("web").await;
    h.set_image("web", "nginx:2").await;
    h.wait_rolled_out("web").await;
    let rss = h.replica_sets_of("web").await;
    assert_eq!(rss.len(), 2);
    let (first, second) = (name_of(&rss[0]), name_of(&rss[1]));

    // What `kubectl rollout undo` sends: revision 1's template without the hash label.
    let mut template = serde_json::to_value(
        rss[0]
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .expect("template"),
    )
    .expect("template json");
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    h.deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/template", "value": template}
                ]))
                .expect("json patch"),
            ),
        )
        .await
        .expect("undo");
    let d = eventually("rolled back", || async {
        let d = h.get("web").await;
        (rolled_out(&d)
            && annotation(&d.metadata, "deployment.kubernetes.io/revision") == Some("3"))
        .then_some(d)
    })
    .await;
    let rss = h.replica_sets_of("web").await;
    assert_eq!(rss.len(), 2, "the old ReplicaSet is reused, none created");
    assert_eq!(name_of(&rss[0]), second);
    assert_eq!(spec_replicas(&rss[0]), 0);
    assert_eq!(name_of(&rss[1]), first);
    assert_eq!(revision(&rss[1]), Some("3"));
    assert_eq!(
        annotation(
            &rss[1].metadata,
            "deployment.kubernetes.io/revision-history"
        ),
        Some("1")
    );
    assert_eq!(spec_replicas(&rss[1]), 2);
    assert_eq!(d.status.as_ref().and_then(|s| s.updated_replicas), Some(2));
}

#[tokio::test]
async fn recreate_scales_old_to_zero_and_waits_for_old_pods_to_go() {
    let h = Harness::start().await;
    h.create(web("db", 2, "postgres:16", json!({"type": "Recreate"})))
        .await;
    h.wait_rolled_out("db").await;
    let old = h.replica_sets_of("db").await.remove(0);
    // Old and new pods must never run together: at most one ReplicaSet wants or has pods.
    let observer = Observer::start(h.api.client.clone(), |rss| {
        let busy = rss
            .iter()
            .filter(|rs| spec_replicas(rs) > 0 || status_replicas(rs) > 0)
            .count();
        (busy > 1).then(|| describe(rss))
    });
    // A pod of the old ReplicaSet still shutting down.
    let hash = old
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .cloned()
        .expect("hash label");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db-old-pod", "namespace": NS,
            "labels": {"app": "db", "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": name_of(&old), "uid": old.metadata.uid, "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "postgres:16"}]},
    }))
    .expect("pod json");
    let pods: Api<Pod> = Api::namespaced(h.api.client.clone(), NS);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");

    h.set_image("db", "postgres:17").await;
    eventually("old ReplicaSet scaled to 0", || async {
        let rs = h.replica_sets().get(&name_of(&old)).await.expect("old rs");
        (spec_replicas(&rs) == 0 && status_replicas(&rs) == 0).then_some(())
    })
    .await;
    h.wait_event(
        "db",
        "ScalingReplicaSet",
        &format!("Scaled down replica set {} from 2 to 0", name_of(&old)),
    )
    .await;
    // The old pod is still there: no new ReplicaSet yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        h.replica_sets_of("db").await.len(),
        1,
        "new ReplicaSet before old pods were gone"
    );

    pods.delete("db-old-pod", &DeleteParams::default())
        .await
        .expect("delete pod");
    h.wait_rolled_out("db").await;
    let rss = h.replica_sets_of("db").await;
    assert_eq!(rss.len(), 2);
    assert_eq!(spec_replicas(&rss[1]), 2);
    assert_eq!(revision(&rss[1]), Some("2"));
    h.wait_event(
        "db",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {} from 0 to 2", name_of(&rss[1])),
    )
    .await;
    observer.assert_held();
}

#[tokio::test]
async fn a_paused_deployment_scales_but_does_not_roll_out() {
    let h = Harness::start().await;
    h.create(web("web", 2, "nginx:1", rolling(json!(1), json!(0))))
        .await;
    h.wait_rolled_out("web").await;
    h.patch("web", json!({"spec": {"paused": true}})).await;
    eventually("paused condition", || async {
        let d = h.get("web").await;
        (progressing(&d)
            == Some((
                "Unknown".into(),
                "DeploymentPaused".into(),
                "Deployment is paused".into(),
            )))
        .then_some(())
    })
    .await;

    let changed = h.set_image("web", "nginx:2").await;
    let scaled = h.patch("web", json!({"spec": {"replicas": 4}})).await;
    assert!(scaled.metadata.generation > changed.metadata.generation);
    eventually("scaled while paused", || async {
        let d = h.get("web").await;
        let rss = h.replica_sets_of("web").await;
        (d.status.as_ref().and_then(|s| s.observed_generation) == scaled.metadata.generation
            && rss.len() == 1
            && spec_replicas(&rss[0]) == 4
            && d.status.as_ref().and_then(|s| s.available_replicas) == Some(4))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.replica_sets_of("web").await.len(),
        1,
        "rolled out while paused"
    );

    h.patch("web", json!({"spec": {"paused": false}})).await;
    let d = eventually("resumed rollout complete", || async {
        let d = h.get("web").await;
        (rolled_out(&d) && progressing(&d).map(|c| c.1) == Some("NewReplicaSetAvailable".into()))
            .then_some(d)
    })
    .await;
    let rss = h.replica_sets_of("web").await;
    assert_eq!(rss.len(), 2);
    assert_eq!(spec_replicas(&rss[1]), 4);
    assert_eq!(d.status.as_ref().and_then(|s| s.updated_replicas), Some(4));
}

#[tokio::test]
async fn scaling_mid_rollout_is_shared_proportionally() {
    let h = Harness::start().await;
    h.create(web("web", 10, "nginx:1", rolling(json!(3), json!(2))))
        .await;
    h.wait_rolled_out("web").await;
    let old = name_of(&h.replica_sets_of("web").await[0]);
    // A rollout that cannot finish holds still at old 8 (10 - maxUnavailable) and new 5
    // (10 + maxSurge - 8).
    h.set_image("web", BROKEN_IMAGE).await;
    let new = eventually("rollout stalled at 8 + 5", || async {
        let rss = h.replica_sets_of("web").await;
        let sizes: Vec<i32> = rss.iter().map(spec_replicas).collect();
        (sizes == [8, 5]).then(|| name_of(&rss[1]))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    h.patch("web", json!({"spec": {"replicas": 20}})).await;
    // 23 allowed, 13 there: +10 shared by size against max-replicas 13 —
    // old round(8·23/13) − 8 = 6, new round(5·23/13) − 5 = 4.
    eventually("proportional scale-up", || async {
        let rss = h.replica_sets_of("web").await;
        let sizes: Vec<i32> = rss.iter().map(spec_replicas).collect();
        (sizes == [14, 9]).then_some(())
    })
    .await;
    h.wait_event(
        "web",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {old} from 8 to 14"),
    )
    .await;
    h.wait_event(
        "web",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {new} from 5 to 9"),
    )
    .await;
    for rs in h.replica_sets_of("web").await {
        assert_eq!(
            annotation(&rs.metadata, "deployment.kubernetes.io/desired-replicas"),
            Some("20")
        );
        assert_eq!(
            annotation(&rs.metadata, "deployment.kubernetes.io/max-replicas"),
            Some("23")
        );
    }
    // And it holds there (the rollout itself cannot move).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sizes: Vec<i32> = h
        .replica_sets_of("web")
        .await
        .iter()
        .map(spec_replicas)
        .collect();
    assert_eq!(sizes, [14, 9]);
}

#[tokio::test]
async fn revision_history_limit_deletes_the_oldest_empty_replica_sets() {
    let h = Harness::start().await;
    let mut spec = web("web", 1, "nginx:1", rolling(json!(1), json!(0)));
    spec["spec"]["revisionHistoryLimit"] = json!(1);
    h.create(spec).await;
    for image in ["nginx:1", "nginx:2", "nginx:3"] {
        h.set_image("web", image).await;
        h.wait_rolled_out("web").await;
    }
    let rss = eventually("only one old ReplicaSet kept", || async {
        let rss = h.replica_sets_of("web").await;
        (rss.len() == 2).then_some(rss)
    })
    .await;
    let revisions: Vec<Option<&str>> = rss.iter().map(revision).collect();
    assert_eq!(revisions, [Some("2"), Some("3")]);
    assert_eq!(images_of(&rss[0]), ["nginx:2"]);
}

#[tokio::test]
async fn a_stalled_rollout_keeps_the_old_pods_and_exceeds_its_deadline() {
    let h = Harness::start().await;
    let mut spec = web("web", 3, "nginx:1", rolling(json!(1), json!(0)));
    spec["spec"]["progressDeadlineSeconds"] = json!(2);
    h.create(spec).await;
    h.wait_rolled_out("web").await;
    let old = name_of(&h.replica_sets_of("web").await[0]);
    let observer = Observer::start(h.api.client.clone(), rolling_bounds(4, 3));

    h.set_image("web", BROKEN_IMAGE).await;
    let d = eventually("ProgressDeadlineExceeded", || async {
        let d = h.get("web").await;
        (progressing(&d).map(|c| c.1) == Some("ProgressDeadlineExceeded".into())).then_some(d)
    })
    .await;
    let rss = h.replica_sets_of("web").await;
    assert_eq!(rss.len(), 2);
    assert_eq!(name_of(&rss[0]), old);
    assert_eq!((spec_replicas(&rss[0]), available(&rss[0])), (3, 3));
    assert_eq!((spec_replicas(&rss[1]), available(&rss[1])), (1, 0));
    assert_eq!(
        progressing(&d),
        Some((
            "False".into(),
            "ProgressDeadlineExceeded".into(),
            format!(
                "ReplicaSet \"{}\" has timed out progressing.",
                name_of(&rss[1])
            )
        ))
    );
    assert_eq!(condition(&d, "Available").map(|c| c.0), Some("True".into()));
    assert!(!rolled_out(&d));
    observer.assert_held();
}

#[tokio::test]
async fn matching_orphan_replica_sets_are_adopted_and_foreign_ones_left_alone() {
    let h = Harness::start().await;
    let orphan = |name: &str, owner: Option<Value>| -> ReplicaSet {
        let mut meta = json!({"name": name, "namespace": NS, "labels": {"app": "web"}});
        if let Some(owner) = owner {
            meta["ownerReferences"] = json!([owner]);
        }
        serde_json::from_value(json!({
            "metadata": meta,
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:0"}]}}},
        }))
        .expect("rs json")
    };
    h.replica_sets()
        .create(&PostParams::default(), &orphan("web-orphan", None))
        .await
        .expect("create orphan");
    let foreign_owner = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "other",
        "uid": "00000000-0000-0000-0000-000000000001", "controller": true});
    h.replica_sets()
        .create(
            &PostParams::default(),
            &orphan("web-foreign", Some(foreign_owner)),
        )
        .await
        .expect("create foreign");
    let d = h
        .create(web("web", 2, "nginx:1", rolling(json!(1), json!(0))))
        .await;
    h.wait_rolled_out("web").await;
    let adopted = h.replica_sets().get("web-orphan").await.expect("orphan");
    let owner = controller_uid(&adopted);
    assert_eq!(owner.as_ref(), d.metadata.uid.as_ref(), "orphan adopted");
    // As an old ReplicaSet of the rollout it was scaled away.
    assert_eq!(spec_replicas(&adopted), 0);
    let foreign = h.replica_sets().get("web-foreign").await.expect("foreign");
    assert_eq!(
        controller_uid(&foreign).as_deref(),
        Some("00000000-0000-0000-0000-000000000001")
    );
    assert_eq!(spec_replicas(&foreign), 1);
    let names: HashSet<String> = h.replica_sets_of("web").await.iter().map(name_of).collect();
    assert!(names.contains("web-orphan") && !names.contains("web-foreign"));
}

fn controller_uid(rs: &ReplicaSet) -> Option<String> {
    rs.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}
