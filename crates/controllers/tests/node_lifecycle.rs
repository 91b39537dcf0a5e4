//! The node lifecycle controller against a real in-process API server, with fake Nodes whose
//! Leases the test renews (a live kubelet) or stops renewing (a dead one), and short timings.

mod common;

use std::time::Duration;

use controllers::node_lifecycle::{self, NodeLifecycleConfig};
use controllers::{Context, ControllersConfig};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, Event, Node, NodeCondition, NodeStatus, Pod, PodCondition, PodSpec, PodStatus,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn config() -> NodeLifecycleConfig {
    NodeLifecycleConfig {
        monitor_period: Duration::from_millis(200),
        grace_period: Duration::from_secs(2),
        startup_grace_period: Duration::from_secs(2),
        ..NodeLifecycleConfig::default()
    }
}

fn start(api: &common::TestApi) -> CancellationToken {
    let cancel = CancellationToken::new();
    let ctx = Context {
        client: api.client.clone(),
        config: ControllersConfig::default(),
        shutdown: api.shutdown.clone(),
    };
    tokio::spawn(node_lifecycle::run_with(ctx, config(), cancel.clone()));
    cancel
}

/// Registers a Ready node as a kubelet would: the Node, its status, its Lease.
async fn register_node(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    let mut node = nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let now = Time(jiff::Timestamp::now());
    let condition = |type_: &str, status: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some("KubeletReady".into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
        message: None,
    };
    node.status = Some(NodeStatus {
        conditions: Some(vec![
            condition("MemoryPressure", "False"),
            condition("DiskPressure", "False"),
            condition("PIDPressure", "False"),
            condition("Ready", "True"),
        ]),
        ..NodeStatus::default()
    });
    nodes
        .replace_status(name, &PostParams::default(), &node)
        .await
        .expect("node status");
    renew_lease(client, name).await;
}

async fn renew_lease(client: &kube::Client, name: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    leases
        .patch(
            name,
            &PatchParams::apply("kubelet").force(),
            &Patch::Apply(&lease),
        )
        .await
        .expect("renew lease");
}

/// A kubelet that keeps renewing until the token is cancelled.
fn keep_alive(client: kube::Client, name: &'static str) -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        while !token.is_cancelled() {
            renew_lease(&client, name).await;
            tokio::select! {
                _ = token.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    });
    stop
}

/// A Running, Ready pod bound to `node`, as a kubelet would report it.
async fn running_pod(
    client: &kube::Client,
    name: &str,
    node: &str,
    tolerations: Vec<Toleration>,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = Pod {
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
            node_name: Some(node.into()),
            tolerations: Some(tolerations),
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let mut pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    pods.replace_status(name, &PostParams::default(), &pod)
        .await
        .expect("pod status")
}

fn unreachable_for(seconds: Option<i64>) -> Toleration {
    Toleration {
        key: Some("node.kubernetes.io/unreachable".into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: seconds,
        value: None,
    }
}

fn taints(node: &Node) -> Vec<String> {
    let mut t: Vec<String> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
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

/// Gone, or marked for deletion (bound pods are deleted gracefully; no kubelet finishes them here).
async fn deleted(pods: &Api<Pod>, name: &str) -> bool {
    match pods.get_opt(name).await.expect("get pod") {
        None => true,
        Some(p) => p.metadata.deletion_timestamp.is_some(),
    }
}

#[tokio::test]
async fn silent_node_goes_unknown_is_tainted_and_its_pods_are_evicted_by_toleration() {
    let api = common::start_api().await;
    let client = api.client.clone();
    register_node(&client, "healthy").await;
    register_node(&client, "dying").await;
    let _healthy = keep_alive(client.clone(), "healthy");
    let dying = keep_alive(client.clone(), "dying");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // tolerationSeconds 0 rather than no toleration, so DefaultTolerationSeconds admission
    // (300 s) cannot change what this pod tolerates.
    running_pod(&client, "plain", "dying", vec![unreachable_for(Some(0))]).await;
    running_pod(&client, "patient", "dying", vec![unreachable_for(Some(2))]).await;
    running_pod(&client, "forever", "dying", vec![unreachable_for(None)]).await;
    running_pod(&client, "elsewhere", "healthy", vec![]).await;
    let cancel = start(&api);
    let nodes: Api<Node> = Api::all(client.clone());

    // While the kubelet renews, nothing happens.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let node = nodes.get("dying").await.expect("node");
    assert!(taints(&node).is_empty(), "{:?}", taints(&node));
    assert!(!deleted(&pods, "plain").await);

    dying.cancel();
    let node = wait_for("conditions Unknown", Duration::from_secs(6), || async {
        let n = nodes.get("dying").await.expect("node");
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (ready.status == "Unknown").then_some(n)
    })
    .await;
    for c in node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .expect("conditions")
    {
        assert_eq!(c.status, "Unknown", "{}", c.type_);
        assert_eq!(c.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            c.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
    }
    let node = wait_for("unreachable taints", Duration::from_secs(3), || async {
        let n = nodes.get("dying").await.expect("node");
        (taints(&n).len() == 2).then_some(n)
    })
    .await;
    assert_eq!(
        taints(&node),
        vec![
            "node.kubernetes.io/unreachable:NoExecute",
            "node.kubernetes.io/unreachable:NoSchedule"
        ]
    );
    let no_execute = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .and_then(|ts| ts.iter().find(|t| t.effect == "NoExecute"))
        .expect("NoExecute taint");
    let tainted_at = no_execute.time_added.as_ref().expect("timeAdded").0;

    // Zero seconds: evicted at once, with upstream's event.
    wait_for("plain evicted", Duration::from_secs(2), || async {
        deleted(&pods, "plain").await.then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let evictions = events.list(&ListParams::default()).await.expect("events");
    assert!(
        evictions
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("TaintManagerEviction")
                && e.message.as_deref() == Some("Marking for deletion Pod default/plain")),
        "no TaintManagerEviction event"
    );
    // The pods left on the node are no longer Ready.
    let forever = pods.get("forever").await.expect("pod");
    let ready = forever
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    assert_eq!(ready.map(|c| c.status.as_str()), Some("False"));

    // Two seconds of toleration: evicted about two seconds after the taint.
    assert!(
        !deleted(&pods, "patient").await
            || jiff::Timestamp::now() >= tainted_at + jiff::SignedDuration::from_millis(1900)
    );
    wait_for("patient evicted", Duration::from_secs(5), || async {
        deleted(&pods, "patient").await.then_some(())
    })
    .await;
    let waited = jiff::Timestamp::now().duration_since(tainted_at);
    assert!(
        waited >= jiff::SignedDuration::from_millis(1900),
        "evicted too early: {waited:?}"
    );

    // Tolerating forever stays; the healthy node's pod is untouched.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!deleted(&pods, "forever").await);
    assert!(!deleted(&pods, "elsewhere").await);
    assert!(taints(&nodes.get("healthy").await.expect("node")).is_empty());

    // The kubelet comes back: Ready again, the taints go.
    let mut node = nodes.get("dying").await.expect("node");
    let now = Time(jiff::Timestamp::now());
    for c in node
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .expect("conditions")
    {
        c.status = if c.type_ == "Ready" { "True" } else { "False" }.into();
        c.last_heartbeat_time = Some(now.clone());
        c.reason = Some("KubeletReady".into());
    }
    nodes
        .replace_status("dying", &PostParams::default(), &node)
        .await
        .expect("status");
    let _revived = keep_alive(client.clone(), "dying");
    wait_for("taints removed", Duration::from_secs(3), || async {
        taints(&nodes.get("dying").await.expect("node"))
            .is_empty()
            .then_some(())
    })
    .await;
    cancel.cancel();
}

#[tokio::test]
async fn cordon_adds_the_unschedulable_taint_and_uncordon_removes_it() {
    let api = common::start_api().await;
    let client = api.client.clone();
    register_node(&client, "n1").await;
    let _alive = keep_alive(client.clone(), "n1");
    let cancel = start(&api);
    let nodes: Api<Node> = Api::all(client.clone());
    // A user taint survives everything the controller does.
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}})))
        .await
        .expect("user taint");
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": true}})),
        )
        .await
        .expect("cordon");
    wait_for("unschedulable taint", Duration::from_secs(3), || async {
        let t = taints(&nodes.get("n1").await.expect("node"));
        (t == vec![
            "dedicated:NoSchedule",
            "node.kubernetes.io/unschedulable:NoSchedule",
        ])
        .then_some(())
    })
    .await;
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": null}})),
        )
        .await
        .expect("uncordon");
    wait_for(
        "unschedulable taint removed",
        Duration::from_secs(3),
        || async {
            (taints(&nodes.get("n1").await.expect("node")) == vec!["dedicated:NoSchedule"])
                .then_some(())
        },
    )
    .await;
    cancel.cancel();
}

#[tokio::test]
async fn a_node_reporting_not_ready_gets_the_not_ready_taints() {
    let api = common::start_api().await;
    let client = api.client.clone();
    register_node(&client, "ok").await;
    register_node(&client, "sick").await;
    let _a = keep_alive(client.clone(), "ok");
    let _b = keep_alive(client.clone(), "sick");
    let cancel = start(&api);
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node = nodes.get("sick").await.expect("node");
    for c in node
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .expect("conditions")
    {
        if c.type_ == "Ready" {
            c.status = "False".into();
            c.reason = Some("KubeletNotReady".into());
        }
        if c.type_ == "DiskPressure" {
            c.status = "True".into();
        }
    }
    nodes
        .replace_status("sick", &PostParams::default(), &node)
        .await
        .expect("status");
    wait_for("not-ready taints", Duration::from_secs(3), || async {
        let t = taints(&nodes.get("sick").await.expect("node"));
        (t == vec![
            "node.kubernetes.io/disk-pressure:NoSchedule",
            "node.kubernetes.io/not-ready:NoExecute",
            "node.kubernetes.io/not-ready:NoSchedule",
        ])
        .then_some(())
    })
    .await;
    cancel.cancel();
}

#[tokio::test]
async fn when_every_node_is_down_no_node_keeps_a_no_execute_taint() {
    let api = common::start_api().await;
    let client = api.client.clone();
    register_node(&client, "only").await;
    let alive = keep_alive(client.clone(), "only");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    running_pod(&client, "p", "only", vec![]).await;
    let cancel = start(&api);
    let nodes: Api<Node> = Api::all(client.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    alive.cancel();
    // Unknown and NoSchedule-tainted, but the controller blames its own network: no
    // NoExecute taint, no eviction (upstream's full-disruption mode).
    wait_for("unreachable NoSchedule", Duration::from_secs(6), || async {
        let t = taints(&nodes.get("only").await.expect("node"));
        (t == vec!["node.kubernetes.io/unreachable:NoSchedule"]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        taints(&nodes.get("only").await.expect("node")),
        vec!["node.kubernetes.io/unreachable:NoSchedule"]
    );
    assert!(!deleted(&pods, "p").await);
    cancel.cancel();
}
