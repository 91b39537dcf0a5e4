//! Component tests of the ReplicaSet/ReplicationController controller against the in-process
//! API server. There is no scheduler or kubelet: pods stay Pending and unscheduled unless a
//! test sets `spec.nodeName` at create or marks them Running+Ready through `pods/status`.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use controllers::{Context, ControllersConfig};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod, ReplicationController};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

/// The API server plus a running controller, stopped on drop.
struct Harness {
    api: common::TestApi,
    cancel: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
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
        tokio::spawn(controllers::replicaset::run(ctx, cancel.clone()));
        Harness { api, cancel }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.api.client.clone(), NS)
    }

    fn replica_sets(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.api.client.clone(), NS)
    }

    /// Active (not deleting) pods with `app=<app>`, sorted by name.
    async fn active_pods(&self, app: &str) -> Vec<Pod> {
        let mut pods: Vec<Pod> = self
            .pods()
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pods
    }

    /// The Events with `reason` about the object named `involved`.
    async fn events(&self, involved: &str, reason: &str) -> Vec<Event> {
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
            .collect()
    }

    /// Marks a pod Running and Ready since `ready_since` (as a kubelet would).
    async fn mark_ready(&self, name: &str, ready_since: jiff::Timestamp) {
        let patch = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_since.to_string()}],
        }});
        self.pods()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("mark pod ready");
    }

    async fn create_rs(&self, rs: Value) -> ReplicaSet {
        let rs: ReplicaSet = serde_json::from_value(rs).expect("replicaset json");
        self.replica_sets()
            .create(&PostParams::default(), &rs)
            .await
            .expect("create replicaset")
    }

    async fn scale(&self, name: &str, replicas: i32) {
        self.replica_sets()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
            )
            .await
            .expect("scale");
    }

    /// Returns once the controller's pod cache holds every pod created before the call: a
    /// probe pod created now is adopted (and, with zero replicas wanted, then deleted) by a
    /// probe ReplicaSet only once the watch delivered it, and the watch delivers in order.
    async fn cache_barrier(&self) {
        self.create_pod("barrier-probe", json!({"app": "barrier"}), None)
            .await;
        self.create_rs(replica_set("barrier", "barrier", 0, 0))
            .await;
        eventually("the probe pod adopted", 10, || async {
            match self.pods().get_opt("barrier-probe").await.expect("probe") {
                None => Some(()),
                Some(pod) => controller_of(&pod).map(|_| ()),
            }
        })
        .await;
    }

    /// A bare pod (an orphan) with `labels`, optionally bound to `node`.
    async fn create_pod(&self, name: &str, labels: Value, node: Option<&str>) -> Pod {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        }))
        .expect("pod json");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }
}

fn replica_set(name: &str, app: &str, replicas: i32, min_ready_seconds: i32) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready_seconds,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app, "tier": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    })
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `secs` seconds.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect()
}

fn controller_of(pod: &Pod) -> Option<(String, String, String)> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| (r.api_version.clone(), r.kind.clone(), r.name.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_pods_with_owner_references_labels_status_and_events() {
    let h = Harness::start().await;
    let rs = h.create_rs(replica_set("web", "web", 3, 0)).await;
    let pods = eventually("3 pods", 10, || async {
        let pods = h.active_pods("web").await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    for pod in &pods {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        assert!(name.starts_with("web-"), "{name}");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(
            pod.metadata.labels,
            Some(BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                ("tier".to_string(), "web".to_string())
            ]))
        );
        let reference = &pod.metadata.owner_references.as_ref().expect("owner refs")[0];
        assert_eq!(
            (
                reference.api_version.as_str(),
                reference.kind.as_str(),
                reference.name.as_str()
            ),
            ("apps/v1", "ReplicaSet", "web")
        );
        assert_eq!(reference.uid, rs.metadata.uid.clone().expect("uid"));
        assert_eq!(reference.controller, Some(true));
        assert_eq!(reference.block_owner_deletion, Some(true));
    }
    let status = eventually("status", 10, || async {
        let rs = h.replica_sets().get("web").await.expect("get rs");
        rs.status
            .filter(|s| s.replicas == 3 && s.fully_labeled_replicas == Some(3))
    })
    .await;
    assert_eq!(status.observed_generation, rs.metadata.generation);
    assert_eq!(status.ready_replicas, None);
    assert_eq!(status.available_replicas, None);

    let events = eventually("3 SuccessfulCreate events", 10, || async {
        let events = h.events("web", "SuccessfulCreate").await;
        (events.len() == 3).then_some(events)
    })
    .await;
    let mut messages: Vec<String> = events.iter().filter_map(|e| e.message.clone()).collect();
    messages.sort();
    let expected: Vec<String> = names(&pods)
        .iter()
        .map(|n| format!("Created pod: {n}"))
        .collect();
    assert_eq!(messages, expected);
    for event in &events {
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        assert_eq!(event.involved_object.kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(
            event.reporting_component.as_deref(),
            Some("replicaset-controller")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_deletes_unscheduled_then_unready_pods_first_and_scale_up_adds() {
    let h = Harness::start().await;
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    h.create_pod("ready-a", json!({"app": "db"}), Some("node-1"))
        .await;
    h.create_pod("ready-b", json!({"app": "db"}), Some("node-1"))
        .await;
    h.create_pod("scheduled", json!({"app": "db"}), Some("node-1"))
        .await;
    h.create_pod("unscheduled", json!({"app": "db"}), None)
        .await;
    h.mark_ready("ready-a", since).await;
    h.mark_ready("ready-b", since).await;
    // The orphans must be in the controller's cache before the ReplicaSet's first sync, or
    // it would rightly create four pods of its own and delete the surplus later.
    h.cache_barrier().await;

    h.create_rs(replica_set("db", "db", 4, 0)).await;
    eventually("all four adopted", 10, || async {
        let pods = h.active_pods("db").await;
        pods.iter()
            .all(|p| controller_of(p).is_some_and(|c| c.2 == "db"))
            .then_some(())
            .filter(|_| pods.len() == 4)
    })
    .await;

    h.scale("db", 2).await;
    let remaining = eventually("two left", 10, || async {
        let pods = h.active_pods("db").await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    assert_eq!(names(&remaining), ["ready-a", "ready-b"]);
    let deleted = eventually("two SuccessfulDelete events", 10, || async {
        let events = h.events("db", "SuccessfulDelete").await;
        (events.len() == 2).then_some(events)
    })
    .await;
    let mut messages: Vec<String> = deleted.iter().filter_map(|e| e.message.clone()).collect();
    messages.sort();
    assert_eq!(
        messages,
        ["Deleted pod: scheduled", "Deleted pod: unscheduled"]
    );

    h.scale("db", 3).await;
    let pods = eventually("three again", 10, || async {
        let pods = h.active_pods("db").await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    assert!(names(&pods).iter().any(|n| n.starts_with("db-")));
    let status = eventually("status after scaling", 10, || async {
        let rs = h.replica_sets().get("db").await.expect("get rs");
        rs.status.filter(|s| s.replicas == 3)
    })
    .await;
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.available_replicas, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manually_deleted_pod_is_replaced() {
    let h = Harness::start().await;
    h.create_rs(replica_set("web", "web", 2, 0)).await;
    let pods = eventually("2 pods", 10, || async {
        let pods = h.active_pods("web").await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    let victim = pods[0].metadata.name.clone().expect("name");
    h.pods()
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    let pods = eventually("a replacement", 10, || async {
        let pods = h.active_pods("web").await;
        (pods.len() == 2 && !names(&pods).contains(&victim)).then_some(pods)
    })
    .await;
    assert_eq!(pods.len(), 2);
    // It stays at two.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.active_pods("web").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_matching_orphans_and_releases_relabelled_pods() {
    let h = Harness::start().await;
    h.create_pod("orphan", json!({"app": "web", "tier": "web"}), None)
        .await;
    h.create_pod("stranger", json!({"app": "other"}), None)
        .await;
    h.cache_barrier().await;
    h.create_rs(replica_set("web", "web", 2, 0)).await;
    let pods = eventually("orphan adopted plus one created", 10, || async {
        let pods = h.active_pods("web").await;
        (pods.len() == 2 && pods.iter().all(|p| controller_of(p).is_some())).then_some(pods)
    })
    .await;
    assert!(names(&pods).contains(&"orphan".to_string()));
    let orphan = h.pods().get("orphan").await.expect("orphan");
    assert_eq!(
        controller_of(&orphan),
        Some(("apps/v1".into(), "ReplicaSet".into(), "web".into()))
    );
    let reference = &orphan.metadata.owner_references.as_ref().expect("refs")[0];
    assert_eq!(reference.block_owner_deletion, Some(true));
    let stranger = h.pods().get("stranger").await.expect("stranger");
    assert_eq!(stranger.metadata.owner_references, None);

    // Relabel the adopted pod out of the selector: it is released and replaced.
    h.pods()
        .patch(
            "orphan",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"app": "moved"}}})),
        )
        .await
        .expect("relabel");
    eventually("released", 10, || async {
        let pod = h.pods().get("orphan").await.expect("get");
        pod.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
            .then_some(())
    })
    .await;
    eventually("replacement", 10, || async {
        let pods = h.active_pods("web").await;
        (pods.len() == 2 && !names(&pods).contains(&"orphan".to_string())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_available_replicas_follow_min_ready_seconds() {
    let h = Harness::start().await;
    h.create_rs(replica_set("web", "web", 2, 2)).await;
    let pods = eventually("2 pods", 10, || async {
        let pods = h.active_pods("web").await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    let now = jiff::Timestamp::now();
    for name in names(&pods) {
        h.mark_ready(&name, now).await;
    }
    let status = eventually("ready", 10, || async {
        let rs = h.replica_sets().get("web").await.expect("get rs");
        rs.status.filter(|s| s.ready_replicas == Some(2))
    })
    .await;
    assert_eq!(status.available_replicas, None, "not yet minReadySeconds");
    // Nothing else changes: the controller must come back by itself after minReadySeconds.
    let status = eventually("available", 10, || async {
        let rs = h.replica_sets().get("web").await.expect("get rs");
        rs.status.filter(|s| s.available_replicas == Some(2))
    })
    .await;
    assert_eq!(status.replicas, 2);
    assert!(
        jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2) > now,
        "available only after minReadySeconds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_controllers_are_served_too() {
    let h = Harness::start().await;
    let rcs: Api<ReplicationController> = Api::namespaced(h.api.client.clone(), NS);
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "legacy"},
        "spec": {
            "replicas": 2,
            "selector": {"app": "legacy"},
            "template": {
                "metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }))
    .expect("rc json");
    rcs.create(&PostParams::default(), &rc)
        .await
        .expect("create rc");
    let pods = eventually("2 pods", 10, || async {
        let pods = h.active_pods("legacy").await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    for pod in &pods {
        assert_eq!(
            controller_of(pod),
            Some(("v1".into(), "ReplicationController".into(), "legacy".into()))
        );
        assert!(
            pod.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with("legacy-")
        );
    }
    eventually("rc status", 10, || async {
        let rc = rcs.get("legacy").await.expect("get rc");
        rc.status
            .filter(|s| s.replicas == 2 && s.observed_generation == rc.metadata.generation)
    })
    .await;
    let events = eventually("events", 10, || async {
        let events = h.events("legacy", "SuccessfulCreate").await;
        (events.len() == 2).then_some(events)
    })
    .await;
    for event in &events {
        assert_eq!(
            event.involved_object.kind.as_deref(),
            Some("ReplicationController")
        );
        assert_eq!(
            event.reporting_component.as_deref(),
            Some("replication-controller")
        );
    }
    // A ReplicaSet controller must not touch pods the RC controls, and vice versa.
    rcs.patch(
        "legacy",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scale rc");
    eventually("rc scaled down", 10, || async {
        (h.active_pods("legacy").await.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_creates_record_a_warning_and_the_replica_failure_condition() {
    let h = Harness::start().await;
    // The template passes ReplicaSet validation, but a pod with a finalizer that is not
    // fully qualified is invalid, so every create fails.
    let mut rs = replica_set("broken", "broken", 3, 0);
    rs["spec"]["template"]["metadata"]["finalizers"] = json!(["custom"]);
    h.create_rs(rs).await;
    let condition = eventually("ReplicaFailure", 10, || async {
        let rs = h.replica_sets().get("broken").await.expect("get rs");
        rs.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "ReplicaFailure")
    })
    .await;
    assert_eq!(condition.status, "True");
    assert_eq!(condition.reason.as_deref(), Some("FailedCreate"));
    assert!(
        condition
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("finalizers"),
        "{condition:?}"
    );
    let warning = eventually("FailedCreate event", 10, || async {
        h.events("broken", "FailedCreate").await.into_iter().next()
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning
            .message
            .as_deref()
            .unwrap_or_default()
            .starts_with("Error creating: "),
        "{warning:?}"
    );
    assert!(h.active_pods("broken").await.is_empty());

    // Fixing the template heals the ReplicaSet and clears the condition.
    h.replica_sets()
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"template": {"metadata": {"finalizers": null}}}})),
        )
        .await
        .expect("fix template");
    eventually("healed", 30, || async {
        let rs = h.replica_sets().get("broken").await.expect("get rs");
        let status = rs.status?;
        (status.replicas == 3 && status.conditions.unwrap_or_default().is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_duplicate_creates_under_watch_churn() {
    let h = Harness::start().await;
    h.create_rs(replica_set("busy", "busy", 30, 0)).await;
    // Touch the ReplicaSet over and over while its pods are being created: every touch is a
    // sync that, without expectations, would count the pods not yet seen and create more.
    for i in 0..40 {
        let _ = h
            .replica_sets()
            .patch(
                "busy",
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {"touch": i.to_string()}}})),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("30 pods", 20, || async {
        (h.active_pods("busy").await.len() == 30).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = h
        .pods()
        .list(&ListParams::default().labels("app=busy"))
        .await
        .expect("list");
    assert_eq!(all.items.len(), 30, "no pod created beyond the 30 wanted");
    let created: i32 = h
        .events("busy", "SuccessfulCreate")
        .await
        .iter()
        .map(|e| e.count.unwrap_or(1))
        .sum();
    assert_eq!(created, 30);
    assert!(h.events("busy", "SuccessfulDelete").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleting_replica_set_creates_nothing_and_keeps_its_pods() {
    let h = Harness::start().await;
    let mut rs = replica_set("going", "going", 2, 0);
    rs["metadata"]["finalizers"] = json!(["example.com/hold"]);
    h.create_rs(rs).await;
    eventually("2 pods", 10, || async {
        (h.active_pods("going").await.len() == 2).then_some(())
    })
    .await;
    h.replica_sets()
        .delete("going", &DeleteParams::default())
        .await
        .expect("delete rs");
    // Deleting (held by the finalizer); a pod deleted now is not replaced, and an orphan
    // with matching labels is not adopted.
    let victim = names(&h.active_pods("going").await)[0].clone();
    h.pods()
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    h.create_pod("stray", json!({"app": "going"}), None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pods = h.active_pods("going").await;
    assert_eq!(pods.len(), 2, "{:?}", names(&pods));
    let stray = h.pods().get("stray").await.expect("stray");
    assert_eq!(stray.metadata.owner_references, None);
    h.replica_sets()
        .patch(
            "going",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release finalizer");
}
