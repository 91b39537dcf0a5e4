//! The Endpoints controller against a real in-process API server. There is no kubelet: the
//! tests create pods bound to a node and write their status (IP, Running, Ready) themselves.

mod common;

use std::future::Future;
use std::time::Duration;

use controllers::endpoints::{self, LAST_CHANGE_TRIGGER_TIME};
use controllers::{Context, ControllersConfig};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Harness {
    api: common::TestApi,
    cancel: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start() -> Harness {
    let api = common::start_api().await;
    let cancel = CancellationToken::new();
    let ctx = Context {
        client: api.client.clone(),
        config: ControllersConfig::default(),
        shutdown: api.shutdown.clone(),
    };
    tokio::spawn(endpoints::run(ctx, cancel.clone()));
    Harness { api, cancel }
}

impl Harness {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.api.client.clone(), "default")
    }
    fn services(&self) -> Api<Service> {
        Api::namespaced(self.api.client.clone(), "default")
    }
    fn endpoints(&self) -> Api<Endpoints> {
        Api::namespaced(self.api.client.clone(), "default")
    }

    async fn service(&self, spec: Value) -> Service {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"tier": "frontend"}},
            "spec": spec,
        }))
        .expect("service json");
        self.services()
            .create(&PostParams::default(), &svc)
            .await
            .expect("create service")
    }

    /// A pod bound to node-1 serving `http` on `port`, then marked Running with `ip` and the
    /// given readiness (what the kubelet would write).
    async fn pod(&self, name: &str, ip: &str, port: i32, ready: bool) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox",
                "ports": [{"name": "http", "containerPort": port}]}]},
        }))
        .expect("pod json");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        self.set_status(name, ip, ready).await;
    }

    async fn set_status(&self, name: &str, ip: &str, ready: bool) {
        let status = json!({"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                "lastTransitionTime": jiff::Timestamp::now().to_string()}],
        }});
        self.pods()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("pod status");
    }

    /// Waits until the Endpoints `web` satisfy `check`.
    async fn wait_endpoints(&self, what: &str, check: impl Fn(&Endpoints) -> bool) -> Endpoints {
        let api = self.endpoints();
        wait_for(what, || async {
            api.get_opt("web").await.ok().flatten().filter(|e| check(e))
        })
        .await
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn ips(endpoints: &Endpoints, ready: bool) -> Vec<String> {
    let mut ips: Vec<String> = endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| {
            if ready {
                s.addresses.clone()
            } else {
                s.not_ready_addresses.clone()
            }
            .unwrap_or_default()
        })
        .map(|a| a.ip)
        .collect();
    ips.sort();
    ips
}

#[tokio::test]
async fn ready_pods_are_addresses_and_not_ready_ones_move_aside() {
    let h = start().await;
    h.service(
        json!({"selector": {"app": "web"}, "clusterIP": "10.43.0.20",
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
    )
    .await;
    for i in 1..=3 {
        h.pod(&format!("web-{i}"), &format!("10.42.0.{i}"), 8080, true)
            .await;
    }
    let ep = h
        .wait_endpoints("3 ready addresses", |e| ips(e, true).len() == 3)
        .await;
    assert_eq!(ips(&ep, true), ["10.42.0.1", "10.42.0.2", "10.42.0.3"]);
    let subset = &ep.subsets.as_ref().expect("subsets")[0];
    let port = &subset.ports.as_ref().expect("ports")[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), 8080, Some("TCP"))
    );
    let address = &subset.addresses.as_ref().expect("addresses")[0];
    assert_eq!(address.node_name.as_deref(), Some("node-1"));
    let target = address.target_ref.as_ref().expect("targetRef");
    assert_eq!(
        (target.kind.as_deref(), target.name.as_deref()),
        (Some("Pod"), Some("web-1"))
    );
    // The Service's labels are copied; it has a cluster IP, so no headless label.
    let labels = ep.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("tier").map(String::as_str), Some("frontend"));
    assert!(!labels.contains_key(endpoints::HEADLESS_LABEL));
    assert!(
        ep.metadata
            .annotations
            .iter()
            .flatten()
            .any(|(k, _)| k == LAST_CHANGE_TRIGGER_TIME),
        "trigger time annotation"
    );

    // A pod turning NotReady moves to notReadyAddresses.
    h.set_status("web-2", "10.42.0.2", false).await;
    let ep = h
        .wait_endpoints("web-2 not ready", |e| ips(e, false) == ["10.42.0.2"])
        .await;
    assert_eq!(ips(&ep, true), ["10.42.0.1", "10.42.0.3"]);

    // A change that does not matter to the endpoints writes nothing.
    let version = ep.metadata.resource_version.clone();
    let labels = json!({"metadata": {"annotations": {"note": "unrelated"}}});
    h.pods()
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("annotate pod");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = h.endpoints().get("web").await.expect("endpoints");
    assert_eq!(
        again.metadata.resource_version, version,
        "no write for an unrelated change"
    );
}

#[tokio::test]
async fn named_target_ports_resolve_per_pod() {
    let h = start().await;
    h.service(json!({"selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}))
        .await;
    h.pod("web-a", "10.42.0.1", 8080, true).await;
    h.pod("web-b", "10.42.0.2", 9090, true).await;
    let ep = h
        .wait_endpoints("two port sets", |e| {
            e.subsets.as_ref().is_some_and(|s| s.len() == 2)
        })
        .await;
    let mut by_port: Vec<(i32, Vec<String>)> = ep
        .subsets
        .iter()
        .flatten()
        .map(|s| {
            (
                s.ports.as_ref().expect("ports")[0].port,
                s.addresses.iter().flatten().map(|a| a.ip.clone()).collect(),
            )
        })
        .collect();
    by_port.sort();
    assert_eq!(
        by_port,
        [
            (8080, vec!["10.42.0.1".to_string()]),
            (9090, vec!["10.42.0.2".to_string()])
        ]
    );
}

#[tokio::test]
async fn publish_not_ready_addresses_lists_every_pod_as_ready() {
    let h = start().await;
    h.service(
        json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true,
        "clusterIP": "None", "ports": [{"port": 80, "targetPort": 8080}]}),
    )
    .await;
    h.pod("web-1", "10.42.0.1", 8080, false).await;
    let ep = h
        .wait_endpoints("the not-ready pod as ready", |e| {
            ips(e, true) == ["10.42.0.1"]
        })
        .await;
    assert!(ips(&ep, false).is_empty());
    // Headless: marked so.
    assert!(
        ep.metadata
            .labels
            .iter()
            .flatten()
            .any(|(k, _)| k == endpoints::HEADLESS_LABEL)
    );
}

#[tokio::test]
async fn terminating_pods_leave_and_a_deleted_service_takes_its_endpoints() {
    let h = start().await;
    h.service(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}))
        .await;
    h.pod("web-1", "10.42.0.1", 8080, true).await;
    h.pod("web-2", "10.42.0.2", 8080, true).await;
    h.wait_endpoints("both pods", |e| ips(e, true).len() == 2)
        .await;
    // Bound to a node, so the deletion is graceful: the pod stays, terminating.
    h.pods()
        .delete("web-2", &DeleteParams::default())
        .await
        .expect("delete pod");
    let pod = h.pods().get("web-2").await.expect("terminating pod");
    assert!(pod.metadata.deletion_timestamp.is_some());
    let ep = h
        .wait_endpoints("the terminating pod gone", |e| {
            ips(e, true) == ["10.42.0.1"]
        })
        .await;
    assert!(
        ips(&ep, false).is_empty(),
        "terminating pods are not even not-ready"
    );

    h.services()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    let api = h.endpoints();
    wait_for("the Endpoints deleted", || async {
        matches!(api.get_opt("web").await, Ok(None)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn services_without_a_selector_keep_their_own_endpoints() {
    let h = start().await;
    h.service(json!({"ports": [{"port": 80}]})).await;
    let manual: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 80}]}],
    }))
    .expect("endpoints json");
    let written = h
        .endpoints()
        .create(&PostParams::default(), &manual)
        .await
        .expect("create endpoints");
    // A pod that would match anything does not matter either.
    h.pod("web-1", "10.42.0.1", 8080, true).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let now = h.endpoints().get("web").await.expect("still there");
    assert_eq!(
        now.metadata.resource_version,
        written.metadata.resource_version
    );
    assert_eq!(ips(&now, true), ["192.0.2.10"]);
}
