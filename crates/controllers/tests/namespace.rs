//! The namespace controller against a real in-process API server: a deleted namespace is
//! emptied (pods first), described by its conditions while content remains, and finalized.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use controllers::namespace::{self, CONTENT_REMAINING, FINALIZERS_REMAINING};
use controllers::{Context, ControllersConfig};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, PodTemplateSpec, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

fn pod(name: &str, node: Option<&str>, grace: Option<i64>, finalizers: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            finalizers: (!finalizers.is_empty())
                .then(|| finalizers.iter().map(|f| f.to_string()).collect()),
            ..meta(name)
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Container::default()
            }],
            node_name: node.map(String::from),
            termination_grace_period_seconds: grace,
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn deployment(name: &str) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    Deployment {
        metadata: meta(name),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: pod(name, None, None, &[]).spec,
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn configmap(name: &str, finalizers: &[&str]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            finalizers: (!finalizers.is_empty())
                .then(|| finalizers.iter().map(|f| f.to_string()).collect()),
            ..meta(name)
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..ConfigMap::default()
    }
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta(name),
                ..Namespace::default()
            },
        )
        .await
        .expect("create namespace");
}

/// Starts the controller; the returned token stops it.
fn start_controller(
    client: &kube::Client,
) -> (
    CancellationToken,
    JoinHandle<Result<(), namespace::NamespaceError>>,
) {
    let ctx = Context {
        client: client.clone(),
        config: ControllersConfig::default(),
        shutdown: CancellationToken::new(),
    };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(namespace::run(ctx, cancel.clone()));
    (cancel, task)
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the namespace to disappear; on timeout the panic shows where it got stuck.
async fn wait_gone(namespaces: &Api<Namespace>, name: &str, timeout: Duration) {
    let start = tokio::time::Instant::now();
    while let Some(ns) = namespaces.get_opt(name).await.expect("get namespace") {
        assert!(
            start.elapsed() < timeout,
            "namespace {name} still there after {timeout:?}: spec {:?}, status {}",
            ns.spec,
            serde_json::to_string_pretty(&ns.status).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn condition(ns: &Namespace, type_: &str) -> Option<(String, String, String)> {
    let c = ns
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_namespace_is_emptied_and_removed() {
    let api = common::start_api().await;
    let client = api.client.clone();
    create_namespace(&client, "doomed").await;
    create_namespace(&client, "bystander").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "doomed");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "doomed");
    let pp = PostParams::default();
    for i in 0..3 {
        cms.create(&pp, &configmap(&format!("cm-{i}"), &[]))
            .await
            .expect("configmap");
        secrets
            .create(
                &pp,
                &Secret {
                    metadata: meta(&format!("s-{i}")),
                    ..Secret::default()
                },
            )
            .await
            .expect("secret");
    }
    deployments
        .create(&pp, &deployment("web"))
        .await
        .expect("deployment");
    pods.create(&pp, &pod("unbound", None, None, &[]))
        .await
        .expect("pod");
    let bystander: Api<ConfigMap> = Api::namespaced(client.clone(), "bystander");
    bystander
        .create(&pp, &configmap("keep", &[]))
        .await
        .expect("bystander configmap");

    // Deleting marks the namespace Terminating and keeps it for the controller.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete namespace");
    let ns = namespaces
        .get("doomed")
        .await
        .expect("namespace still there");
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(
        ns.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );
    assert_eq!(
        ns.spec.as_ref().and_then(|s| s.finalizers.clone()),
        Some(vec![namespace::FINALIZER.to_string()])
    );

    // The server refuses new content while it terminates.
    let refused = cms
        .create(&pp, &configmap("late", &[]))
        .await
        .expect_err("create in a terminating namespace");
    match refused {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("because it is being terminated"),
                "{}",
                status.message
            );
        }
        other => panic!("expected 403, got {other}"),
    }

    let (cancel, task) = start_controller(&client);
    wait_gone(&namespaces, "doomed", Duration::from_secs(10)).await;
    for (what, n) in [
        (
            "configmaps",
            cms.list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
        ),
        (
            "secrets",
            secrets
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
        ),
        (
            "deployments",
            deployments
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
        ),
        (
            "pods",
            pods.list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
        ),
    ] {
        assert_eq!(n, 0, "{what} left behind");
    }
    // Other namespaces are untouched.
    assert!(bystander.get_opt("keep").await.expect("get").is_some());
    assert!(
        namespaces
            .get("bystander")
            .await
            .expect("bystander")
            .metadata
            .deletion_timestamp
            .is_none()
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_go_first_and_remaining_content_is_described_in_conditions() {
    let api = common::start_api().await;
    let client = api.client.clone();
    create_namespace(&client, "held").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "held");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "held");
    let pp = PostParams::default();
    pods.create(&pp, &pod("stuck", None, None, &["example.com/hold"]))
        .await
        .expect("pod");
    cms.create(&pp, &configmap("config", &[]))
        .await
        .expect("configmap");

    let (cancel, task) = start_controller(&client);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete namespace");

    wait_until(
        "the conditions to name the held pod",
        Duration::from_secs(10),
        || async {
            let ns = namespaces.get("held").await.expect("namespace");
            condition(&ns, FINALIZERS_REMAINING).is_some_and(|(status, _, _)| status == "True")
        },
    )
    .await;
    let ns = namespaces.get("held").await.expect("namespace");
    assert_eq!(
        condition(&ns, CONTENT_REMAINING),
        Some((
            "True".into(),
            "SomeResourcesRemain".into(),
            "Some resources are remaining: pods. has 1 resource instances".into()
        ))
    );
    assert_eq!(
        condition(&ns, FINALIZERS_REMAINING),
        Some((
            "True".into(),
            "SomeFinalizersRemain".into(),
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances".into()
        ))
    );
    assert_eq!(
        condition(&ns, namespace::DISCOVERY_FAILURE),
        Some((
            "False".into(),
            "ResourcesDiscovered".into(),
            "All resources successfully discovered".into()
        ))
    );
    assert_eq!(
        condition(&ns, namespace::CONTENT_FAILURE).map(|c| c.0),
        Some("False".into())
    );
    assert_eq!(
        ns.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Terminating")
    );
    // Ordered deletion: nothing else goes while a pod remains.
    assert!(
        pods.get("stuck")
            .await
            .expect("pod")
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert!(
        cms.get_opt("config").await.expect("get").is_some(),
        "the configmap must outlive the pod"
    );

    // Whoever owns the finalizer finishes: the pod goes, then everything else, then the namespace
    // (the controller looks again after upstream's finalizer estimate: 15 s / 2 + 1).
    pods.patch(
        "stuck",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release the pod");
    wait_gone(&namespaces, "held", Duration::from_secs(20)).await;
    assert!(
        cms.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_node_are_waited_for_through_their_grace_period() {
    let api = common::start_api().await;
    let client = api.client.clone();
    create_namespace(&client, "running").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "running");
    pods.create(
        &PostParams::default(),
        &pod("bound", Some("node-1"), Some(4), &[]),
    )
    .await
    .expect("pod");

    let (cancel, task) = start_controller(&client);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("running", &DeleteParams::default())
        .await
        .expect("delete namespace");

    // The pod is deleted gracefully: it stays (its kubelet would stop it) and so does the
    // namespace, without the pass being reported as a failure.
    wait_until(
        "the pod to be marked for deletion",
        Duration::from_secs(5),
        || async {
            pods.get("bound")
                .await
                .expect("pod")
                .metadata
                .deletion_timestamp
                .is_some()
        },
    )
    .await;
    wait_until(
        "the conditions to name the pod",
        Duration::from_secs(5),
        || async {
            let ns = namespaces.get("running").await.expect("namespace");
            condition(&ns, CONTENT_REMAINING).is_some_and(|(status, _, _)| status == "True")
        },
    )
    .await;
    let ns = namespaces.get("running").await.expect("namespace");
    assert_eq!(
        condition(&ns, namespace::CONTENT_FAILURE).map(|c| c.0),
        Some("False".into())
    );

    // The "kubelet" finishes the pod; the namespace goes at the next look.
    pods.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("kubelet's final delete");
    wait_gone(&namespaces, "running", Duration::from_secs(10)).await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_namespaces_cannot_be_deleted() {
    let api = common::start_api().await;
    let client = api.client.clone();
    let (cancel, task) = start_controller(&client);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        match namespaces.delete(name, &DeleteParams::default()).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{name}: {status:?}"),
            other => panic!("deleting {name} must be forbidden, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let ns = namespaces
            .get(name)
            .await
            .expect("system namespace still there");
        assert!(ns.metadata.deletion_timestamp.is_none(), "{name}");
        assert_ne!(
            ns.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Terminating"),
            "{name}"
        );
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_stops_on_the_context_shutdown_too() {
    let api = common::start_api().await;
    let ctx = Context {
        client: api.client.clone(),
        config: ControllersConfig::default(),
        shutdown: CancellationToken::new(),
    };
    let task = tokio::spawn(namespace::run(ctx.clone(), CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    ctx.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("ok");
}
