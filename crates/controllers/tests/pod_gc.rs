//! Pod GC against a real in-process API server: pods of a Node that is gone, terminated
//! pods beyond the threshold, and terminating pods of an out-of-service Node are removed;
//! everything else stays.

mod common;

use std::time::Duration;

use controllers::pod_gc::{self, PodGcConfig};
use controllers::{Context, ControllersConfig};
use k8s_openapi::api::core::v1::{
    Container, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus, Taint,
};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

async fn pod(client: &kube::Client, name: &str, node: Option<&str>, phase: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Container::default()
            }],
            node_name: node.map(String::from),
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let mut p = pods
        .create(&PostParams::default(), &p)
        .await
        .expect("create pod");
    p.status = Some(PodStatus {
        phase: Some(phase.into()),
        ..PodStatus::default()
    });
    pods.replace_status(name, &PostParams::default(), &p)
        .await
        .expect("pod status");
}

async fn node(client: &kube::Client, name: &str, ready: &str, taints: Vec<Taint>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let n = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: Some(taints),
            ..NodeSpec::default()
        }),
        ..Node::default()
    };
    let mut n = nodes
        .create(&PostParams::default(), &n)
        .await
        .expect("create node");
    n.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: ready.into(),
            ..NodeCondition::default()
        }]),
        ..NodeStatus::default()
    });
    nodes
        .replace_status(name, &PostParams::default(), &n)
        .await
        .expect("node status");
}

async fn names(pods: &Api<Pod>) -> Vec<String> {
    let mut n: Vec<String> = pods
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn collects_orphans_excess_terminated_and_out_of_service_pods() {
    let api = common::start_api().await;
    let client = api.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    node(&client, "real", "True", vec![]).await;
    node(&client, "doomed", "True", vec![]).await;
    let out_of_service = Taint {
        key: "node.kubernetes.io/out-of-service".into(),
        effect: "NoExecute".into(),
        ..Taint::default()
    };
    node(&client, "shut-down", "Unknown", vec![out_of_service]).await;
    pod(&client, "on-real", Some("real"), "Running").await;
    pod(&client, "on-doomed", Some("doomed"), "Running").await;
    pod(&client, "stuck", Some("shut-down"), "Running").await;
    pod(&client, "pending", None, "Pending").await;
    for name in ["t1-oldest", "t2", "t3", "t4-newest"] {
        pod(&client, name, None, "Succeeded").await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // Terminating on an out-of-service node: the kubelet will never finish it.
    pods.delete("stuck", &DeleteParams::default())
        .await
        .expect("delete stuck");
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete node");

    let cancel = CancellationToken::new();
    let ctx = Context {
        client: client.clone(),
        config: ControllersConfig::default(),
        shutdown: api.shutdown.clone(),
    };
    let config = PodGcConfig {
        terminated_pod_threshold: 2,
        gc_check_period: Duration::from_millis(200),
        quarantine: Duration::from_secs(1),
    };
    let started = tokio::time::Instant::now();
    tokio::spawn(pod_gc::run_with(ctx, config, cancel.clone()));

    // The quarantine holds the orphan for a second; the rest goes at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        names(&pods).await,
        vec!["on-doomed", "on-real", "pending", "t3", "t4-newest"]
    );
    loop {
        let left = names(&pods).await;
        if left == vec!["on-real", "pending", "t3", "t4-newest"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "orphan not collected: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "orphan collected before the quarantine ended"
    );
    // Nothing else goes on later passes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        names(&pods).await,
        vec!["on-real", "pending", "t3", "t4-newest"]
    );
    cancel.cancel();
}
