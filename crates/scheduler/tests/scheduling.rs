//! The scheduler against the in-process API server with registered fake nodes: placement by
//! resources, selectors, affinity, taints, host ports, anti-affinity and topology spread; the
//! exact FailedScheduling message; event-driven retry when a node appears; preemption.

// The in-process API server harness the controllers' tests use, shared rather than copied.
#[path = "../../controllers/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use controllers::{Context, ControllersConfig};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(15);

/// A running scheduler; dropping it stops it.
struct Scheduler {
    cancel: CancellationToken,
}

impl Scheduler {
    fn start(api: &common::TestApi) -> Self {
        let ctx = Context {
            client: api.client.clone(),
            config: ControllersConfig::default(),
            shutdown: api.shutdown.clone(),
        };
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) = scheduler::run(ctx, c).await {
                panic!("scheduler failed: {e}");
            }
        });
        Scheduler { cancel }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Registers a Ready node with `cpu` cores, 8Gi, 110 pods, plus `extra` merged into it.
async fn add_node(api: &common::TestApi, name: &str, cpu: &str, labels: Value, taints: Value) {
    let mut all_labels = json!({"kubernetes.io/hostname": name});
    if let (Some(a), Some(l)) = (all_labels.as_object_mut(), labels.as_object()) {
        a.extend(l.clone());
    }
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": all_labels},
        "spec": {"taints": taints},
        "status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}]
        }
    }))
    .expect("node");
    let nodes: Api<Node> = Api::all(api.client.clone());
    let created = nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    if created
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .is_none()
    {
        // The server dropped status on create: set it as a kubelet would.
        let mut with_status = created.clone();
        with_status.status = node.status.clone();
        nodes
            .replace_status(name, &PostParams::default(), &with_status)
            .await
            .expect("node status");
    }
}

async fn create_pod(api: &common::TestApi, name: &str, spec: Value, labels: Value) {
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    }
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
            .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
}

fn cpu_spec(cpu: &str) -> Value {
    json!({"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]})
}

/// Waits until `f` returns Some, polling the API.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn node_of(api: &common::TestApi, pod: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    eventually(&format!("{pod} bound"), || {
        let pods = pods.clone();
        async move { pods.get(pod).await.ok()?.spec?.node_name }
    })
    .await
}

async fn unschedulable_message(api: &common::TestApi, pod: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");
    eventually(&format!("{pod} unschedulable"), || {
        let pods = pods.clone();
        async move {
            let p = pods.get(pod).await.ok()?;
            let c = p
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?;
            (c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
                .then(|| c.message.unwrap_or_default())
        }
    })
    .await
}

#[tokio::test]
async fn places_by_resources_selectors_and_taints() {
    let api = common::start_api().await;
    add_node(&api, "small", "1", json!({"disk": "ssd"}), json!(null)).await;
    add_node(&api, "big", "8", json!({"disk": "hdd"}), json!(null)).await;
    add_node(
        &api,
        "gpu",
        "8",
        json!({"disk": "ssd", "accel": "gpu"}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    )
    .await;
    let _s = Scheduler::start(&api);

    // Needs 2 cpu and an ssd: only the tainted gpu node has both, and it is not tolerated. The
    // small node is too small even empty, so preemption cannot help anywhere.
    create_pod(&api, "needs-ssd", json!({"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "2"}}}]}), json!({})).await;
    let msg = unschedulable_message(&api, "needs-ssd").await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {dedicated: gpu}. preemption: 0/3 nodes are available: \
         3 Preemption is not helpful for scheduling.."
    );

    // With the toleration it lands on gpu.
    create_pod(&api, "tolerant", json!({
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "2"}}}]
    }), json!({})).await;
    assert_eq!(node_of(&api, "tolerant").await, "gpu");

    // Required node affinity with an expression.
    create_pod(&api, "affine", json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}
    ]}}}}), json!({})).await;
    assert_eq!(node_of(&api, "affine").await, "big");

    // Resources: 3 cpu fits only big (gpu is tainted).
    create_pod(&api, "cpu3", cpu_spec("3"), json!({})).await;
    assert_eq!(node_of(&api, "cpu3").await, "big");

    // The Scheduled event.
    let events: Api<Event> = Api::namespaced(api.client.clone(), "default");
    let ev = eventually("Scheduled event", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("Scheduled")
                        && e.involved_object.name.as_deref() == Some("cpu3")
                })
        }
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some("Successfully assigned default/cpu3 to big")
    );
    assert_eq!(
        ev.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );
}

#[tokio::test]
async fn too_big_pod_gets_upstream_message_and_event() {
    let api = common::start_api().await;
    for n in ["a", "b", "c"] {
        add_node(&api, n, "2", json!({}), json!(null)).await;
    }
    let _s = Scheduler::start(&api);
    create_pod(&api, "huge", cpu_spec("64"), json!({})).await;
    let expected = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: \
                    3 Preemption is not helpful for scheduling..";
    assert_eq!(unschedulable_message(&api, "huge").await, expected);
    let events: Api<Event> = Api::namespaced(api.client.clone(), "default");
    let ev = eventually("FailedScheduling event", || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
        }
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.message.as_deref(), Some(expected));
}

#[tokio::test]
async fn pending_pod_is_scheduled_when_a_fitting_node_arrives() {
    let api = common::start_api().await;
    add_node(&api, "small", "1", json!({}), json!(null)).await;
    let _s = Scheduler::start(&api);
    create_pod(&api, "waits", cpu_spec("4"), json!({})).await;
    unschedulable_message(&api, "waits").await;
    let t0 = std::time::Instant::now();
    add_node(&api, "large", "8", json!({}), json!(null)).await;
    assert_eq!(node_of(&api, "waits").await, "large");
    // Event-driven: at most the 1 s initial backoff, not a 5-minute flush or polling period.
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn host_ports_anti_affinity_and_topology_spread() {
    let api = common::start_api().await;
    for (n, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        add_node(
            &api,
            n,
            "4",
            json!({"topology.kubernetes.io/zone": zone}),
            json!(null),
        )
        .await;
    }
    let _s = Scheduler::start(&api);

    // Host ports: four pods on port 80 take the four nodes; a fifth does not fit.
    let port_spec = json!({"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 80}]}]});
    let mut nodes = Vec::new();
    for i in 0..4 {
        let name = format!("port-{i}");
        create_pod(&api, &name, port_spec.clone(), json!({})).await;
        nodes.push(node_of(&api, &name).await);
    }
    nodes.sort();
    assert_eq!(nodes, ["a1", "a2", "b1", "b2"]);
    create_pod(&api, "port-4", port_spec, json!({})).await;
    assert_eq!(
        unschedulable_message(&api, "port-4").await,
        "0/4 nodes are available: 4 node(s) didn't have free ports for the requested pod ports. \
         preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod.."
    );

    // Required anti-affinity per zone: two fit (one per zone), the third does not.
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "topology.kubernetes.io/zone"}
    ]}}});
    create_pod(&api, "db-0", anti.clone(), json!({"app": "db"})).await;
    create_pod(&api, "db-1", anti.clone(), json!({"app": "db"})).await;
    let z0 = node_of(&api, "db-0").await;
    let z1 = node_of(&api, "db-1").await;
    assert_ne!(
        z0.chars().next(),
        z1.chars().next(),
        "db pods in different zones: {z0} {z1}"
    );
    create_pod(&api, "db-2", anti, json!({"app": "db"})).await;
    let msg = unschedulable_message(&api, "db-2").await;
    assert!(
        msg.starts_with("0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules."),
        "{msg}"
    );

    // Topology spread, DoNotSchedule, maxSkew 1 over zones: 6 pods split 3/3.
    let spread = json!({"topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}
    }]});
    let mut per_zone = std::collections::BTreeMap::<char, usize>::new();
    for i in 0..6 {
        let name = format!("web-{i}");
        create_pod(&api, &name, spread.clone(), json!({"app": "web"})).await;
        let node = node_of(&api, &name).await;
        *per_zone
            .entry(node.chars().next().unwrap_or('?'))
            .or_default() += 1;
    }
    assert_eq!(per_zone.get(&'a'), Some(&3));
    assert_eq!(per_zone.get(&'b'), Some(&3));

    // Required affinity: follows the db pod's zone.
    create_pod(&api, "cache", json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}
    ]}}}), json!({})).await;
    let cache_node = node_of(&api, "cache").await;
    assert!(cache_node == z0 || cache_node == z1, "{cache_node}");
}

#[tokio::test]
async fn preemption_evicts_a_lower_priority_pod() {
    let api = common::start_api().await;
    add_node(&api, "only", "2", json!({}), json!(null)).await;
    let classes: Api<PriorityClass> = Api::all(api.client.clone());
    for (name, value) in [("high", 1000), ("low", 10)] {
        let pc: PriorityClass =
            serde_json::from_value(json!({"metadata": {"name": name}, "value": value}))
                .expect("pc");
        classes
            .create(&PostParams::default(), &pc)
            .await
            .expect("priority class");
    }
    let _s = Scheduler::start(&api);
    let pods: Api<Pod> = Api::namespaced(api.client.clone(), "default");

    // A kubelet stand-in: finishes graceful deletions at once.
    let kubelet = {
        let pods = pods.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for p in list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_some())
                    {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let _ = pods
                            .delete(
                                &name,
                                &DeleteParams {
                                    grace_period_seconds: Some(0),
                                    ..DeleteParams::default()
                                },
                            )
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    create_pod(&api, "low", json!({"priorityClassName": "low", "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1500m"}}}]}), json!({})).await;
    assert_eq!(node_of(&api, "low").await, "only");

    // preemptionPolicy Never: stays pending with upstream's message.
    create_pod(&api, "polite", json!({"priorityClassName": "high", "preemptionPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}]}), json!({})).await;
    assert_eq!(
        unschedulable_message(&api, "polite").await,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.."
    );
    pods.delete("polite", &DeleteParams::default())
        .await
        .expect("delete polite");

    create_pod(&api, "high", json!({"priorityClassName": "high", "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "1"}}}]}), json!({})).await;
    assert_eq!(node_of(&api, "high").await, "only");
    eventually("low evicted", || {
        let pods = pods.clone();
        async move { pods.get_opt("low").await.ok()?.is_none().then_some(()) }
    })
    .await;
    let high = pods.get("high").await.expect("high");
    assert_eq!(
        high.status.and_then(|s| s.nominated_node_name).as_deref(),
        Some("only")
    );
    kubelet.abort();
}
