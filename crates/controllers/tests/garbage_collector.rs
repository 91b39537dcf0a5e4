//! The garbage collector against the in-process API server: Background, Foreground and Orphan
//! propagation, partial ownership, and owners that never existed.

mod common;

use std::time::Duration;

use controllers::{Context, ControllersConfig, garbage_collector};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(15);

/// A running collector; dropping it stops it.
struct Collector {
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), garbage_collector::GcError>>>,
}

impl Collector {
    fn start(api: &common::TestApi) -> Self {
        let ctx = Context {
            client: api.client.clone(),
            config: ControllersConfig::default(),
            shutdown: api.shutdown.clone(),
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(garbage_collector::run(ctx, cancel.clone()));
        Self {
            cancel,
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("collector stops")
                .expect("collector task");
            result.expect("collector ends cleanly");
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn object<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("test object")
}

fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K, block: bool) -> Value {
    json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "name": owner.meta().name,
        "uid": owner.meta().uid,
        "controller": true,
        "blockOwnerDeletion": block,
    })
}

/// A reference that is not the managing controller (only one of those is allowed).
fn non_controller(mut reference: Value) -> Value {
    reference["controller"] = json!(false);
    reference
}

fn config_map(name: &str, owners: Vec<Value>) -> ConfigMap {
    object(json!({
        "metadata": {"name": name, "ownerReferences": owners},
        "data": {"k": "v"},
    }))
}

async fn create<K>(api: &Api<K>, obj: &K) -> K
where
    K: Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), obj)
        .await
        .expect("create")
}

/// Polls `check` until it holds or the timeout passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("get").is_none()
}

fn owner_uids(cm: &ConfigMap) -> Vec<String> {
    cm.owner_references()
        .iter()
        .map(|o| o.uid.clone())
        .collect()
}

#[tokio::test]
async fn background_deletes_a_deployment_its_replicaset_and_pods() {
    let api = common::start_api().await;
    let gc = Collector::start(&api);
    let deployments: Api<Deployment> = Api::namespaced(api.client.clone(), "default");
    let replicasets: Api<ReplicaSet> = Api::namespaced(api.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    let template = json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    });
    let deploy = create(
        &deployments,
        &object(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template},
        })),
    )
    .await;
    let rs = create(
        &replicasets,
        &object(json!({
            "metadata": {"name": "web-7d9f", "labels": {"app": "web"}, "ownerReferences": [owner_ref(&deploy, true)]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template},
        })),
    )
    .await;
    for name in ["web-7d9f-a", "web-7d9f-b"] {
        create(
            &pods,
            &object(json!({
                "metadata": {"name": name, "labels": {"app": "web"}, "ownerReferences": [owner_ref(&rs, true)]},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            })),
        )
        .await;
    }

    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete deployment");

    eventually("the ReplicaSet and both Pods are collected", || async {
        gone(&replicasets, "web-7d9f").await
            && gone(&pods, "web-7d9f-a").await
            && gone(&pods, "web-7d9f-b").await
    })
    .await;
    assert!(gone(&deployments, "web").await);
    gc.stop().await;
}

#[tokio::test]
async fn foreground_keeps_the_owner_until_blocking_dependents_are_gone() {
    let api = common::start_api().await;
    let gc = Collector::start(&api);
    let cms: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    let owner = create(&cms, &config_map("owner", vec![])).await;
    // The blocking dependent holds its own deletion with a finalizer, so the owner has to wait.
    let mut held = config_map("held", vec![owner_ref(&owner, true)]);
    held.metadata.finalizers = Some(vec!["example.com/hold".to_string()]);
    create(&cms, &held).await;
    create(&cms, &config_map("free", vec![owner_ref(&owner, false)])).await;

    cms.delete("owner", &DeleteParams::foreground())
        .await
        .expect("delete owner");

    // Every dependent is deleted (the non-blocking one goes at once); the owner waits.
    eventually(
        "the non-blocking dependent is collected and the held one is deleting",
        || async {
            let held = cms.get_opt("held").await.expect("get held");
            gone(&cms, "free").await
                && held.is_some_and(|h| h.metadata.deletion_timestamp.is_some())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = cms.get("owner").await.expect("owner still exists");
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );

    // Release the blocking dependent: then the owner goes.
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release held");
    eventually(
        "the owner is deleted once no blocking dependent remains",
        || async { gone(&cms, "held").await && gone(&cms, "owner").await },
    )
    .await;
    gc.stop().await;
}

#[tokio::test]
async fn foreground_propagates_down_an_ownership_chain() {
    let api = common::start_api().await;
    let gc = Collector::start(&api);
    let cms: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    let top = create(&cms, &config_map("top", vec![])).await;
    let middle = create(&cms, &config_map("middle", vec![owner_ref(&top, true)])).await;
    create(&cms, &config_map("bottom", vec![owner_ref(&middle, true)])).await;

    cms.delete("top", &DeleteParams::foreground())
        .await
        .expect("delete top");

    eventually("the whole chain is deleted", || async {
        gone(&cms, "bottom").await && gone(&cms, "middle").await && gone(&cms, "top").await
    })
    .await;
    gc.stop().await;
}

#[tokio::test]
async fn orphan_keeps_dependents_and_strips_their_references() {
    let api = common::start_api().await;
    let gc = Collector::start(&api);
    let cms: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    let owner = create(&cms, &config_map("owner", vec![])).await;
    let other = create(&cms, &config_map("other", vec![])).await;
    create(&cms, &config_map("dep-a", vec![owner_ref(&owner, true)])).await;
    create(
        &cms,
        &config_map(
            "dep-b",
            vec![
                owner_ref(&owner, false),
                non_controller(owner_ref(&other, false)),
            ],
        ),
    )
    .await;

    cms.delete("owner", &DeleteParams::orphan())
        .await
        .expect("delete owner");

    eventually("the owner is deleted", || gone(&cms, "owner")).await;
    let a = cms.get("dep-a").await.expect("dep-a survives");
    assert!(
        a.owner_references().is_empty(),
        "{:?}",
        a.owner_references()
    );
    let b = cms.get("dep-b").await.expect("dep-b survives");
    assert_eq!(owner_uids(&b), vec![other.uid().expect("uid")]);
    // Nothing collects them later either.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!gone(&cms, "dep-a").await);
    gc.stop().await;
}

#[tokio::test]
async fn a_dependent_with_a_live_owner_survives_losing_the_other() {
    let api = common::start_api().await;
    let gc = Collector::start(&api);
    let cms: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    let first = create(&cms, &config_map("first", vec![])).await;
    let second = create(&cms, &config_map("second", vec![])).await;
    create(
        &cms,
        &config_map(
            "shared",
            vec![
                owner_ref(&first, true),
                non_controller(owner_ref(&second, true)),
            ],
        ),
    )
    .await;

    cms.delete("first", &DeleteParams::background())
        .await
        .expect("delete first");

    eventually("the dangling reference is removed", || async {
        let shared = cms.get("shared").await.expect("shared survives");
        owner_uids(&shared) == vec![second.uid().expect("uid")]
    })
    .await;

    // Losing the last owner collects it.
    cms.delete("second", &DeleteParams::background())
        .await
        .expect("delete second");
    eventually("the dependent is collected with its last owner", || {
        gone(&cms, "shared")
    })
    .await;
    gc.stop().await;
}

#[tokio::test]
async fn dependents_of_owners_that_never_existed_are_collected_at_startup() {
    let api = common::start_api().await;
    let cms: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    let live = create(&cms, &config_map("live", vec![])).await;
    let ghost = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-00000000dead"});
    create(&cms, &config_map("orphaned", vec![ghost.clone()])).await;
    create(
        &cms,
        &config_map("half", vec![ghost, non_controller(owner_ref(&live, false))]),
    )
    .await;
    // A same-named owner with another UID is not the owner the reference names.
    let replaced = create(&cms, &config_map("replaced", vec![])).await;
    let mut stale_ref = owner_ref(&replaced, false);
    stale_ref["uid"] = json!("00000000-0000-0000-0000-0000000000aa");
    create(&cms, &config_map("stale", vec![stale_ref])).await;

    let gc = Collector::start(&api);

    eventually("dependents of absent owners are collected", || async {
        gone(&cms, "orphaned").await && gone(&cms, "stale").await
    })
    .await;
    eventually("the reference to the absent owner is dropped", || async {
        owner_uids(&cms.get("half").await.expect("half survives")) == vec![live.uid().expect("uid")]
    })
    .await;
    assert!(!gone(&cms, "replaced").await);
    gc.stop().await;
}

#[tokio::test]
async fn a_cross_namespace_owner_is_absent_and_reported() {
    let api = common::start_api().await;
    let namespaces: Api<Namespace> = Api::all(api.client.clone());
    for ns in ["team-a", "team-b"] {
        create(&namespaces, &object(json!({"metadata": {"name": ns}}))).await;
    }
    let a: Api<ConfigMap> = Api::namespaced(api.client.clone(), "team-a");
    let b: Api<ConfigMap> = Api::namespaced(api.client.clone(), "team-b");
    let owner = create(&a, &config_map("owner", vec![])).await;
    create(&b, &config_map("intruder", vec![owner_ref(&owner, true)])).await;

    let gc = Collector::start(&api);

    eventually(
        "the dependent naming an owner in another namespace is collected",
        || gone(&b, "intruder"),
    )
    .await;
    assert!(!gone(&a, "owner").await);
    let events: Api<Event> = Api::namespaced(api.client.clone(), "team-b");
    eventually(
        "an OwnerRefInvalidNamespace warning is recorded",
        || async {
            let list = events.list(&Default::default()).await.expect("list events");
            list.items.iter().any(|e| {
                e.reason.as_deref() == Some("OwnerRefInvalidNamespace")
                    && e.involved_object.name.as_deref() == Some("intruder")
                    && e.type_.as_deref() == Some("Warning")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("does not exist in namespace \"team-b\""))
            })
        },
    )
    .await;
    gc.stop().await;
}

#[tokio::test]
async fn a_namespaced_dependent_may_have_a_cluster_scoped_owner() {
    let api = common::start_api().await;
    let gc = Collector::start(&api);
    let namespaces: Api<Namespace> = Api::all(api.client.clone());
    let owner_ns = create(
        &namespaces,
        &object(json!({"metadata": {"name": "owner-ns"}})),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    create(
        &cms,
        &config_map("tenant", vec![owner_ref(&owner_ns, true)]),
    )
    .await;

    // The owner is live: nothing happens.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        owner_uids(&cms.get("tenant").await.expect("tenant")),
        vec![owner_ns.uid().expect("uid")]
    );
    gc.stop().await;
}

#[tokio::test]
async fn a_cluster_scoped_dependent_of_a_namespaced_owner_is_reported_and_kept() {
    let api = common::start_api().await;
    let gc = Collector::start(&api);
    let cms: Api<ConfigMap> = Api::namespaced(api.client.clone(), "default");
    let roles: Api<ClusterRole> = Api::all(api.client.clone());
    let owner = create(&cms, &config_map("owner", vec![])).await;
    create(&roles, &object(json!({"metadata": {"name": "reader", "ownerReferences": [owner_ref(&owner, false)]}, "rules": []})))
        .await;

    // Upstream files events of cluster-scoped objects in "default".
    let events: Api<Event> = Api::namespaced(api.client.clone(), "default");
    eventually(
        "an OwnerRefInvalidNamespace warning is recorded",
        || async {
            let list = events.list(&Default::default()).await.expect("list events");
            list.items.iter().any(|e| {
                e.reason.as_deref() == Some("OwnerRefInvalidNamespace")
                    && e.involved_object.name.as_deref() == Some("reader")
            })
        },
    )
    .await;
    // Unresolvable, so never collected, even once the owner is gone.
    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!gone(&roles, "reader").await);
    gc.stop().await;
}

#[tokio::test]
async fn the_collector_stops_on_server_shutdown() {
    let api = common::start_api().await;
    let ctx = Context {
        client: api.client.clone(),
        config: ControllersConfig::default(),
        shutdown: CancellationToken::new(),
    };
    let shutdown = ctx.shutdown.clone();
    let task = tokio::spawn(garbage_collector::run(ctx, CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    let result = tokio::time::timeout(TIMEOUT, task)
        .await
        .expect("collector stops on shutdown")
        .expect("collector task");
    result.expect("collector ends cleanly");
}
