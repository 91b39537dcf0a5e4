//! The EndpointSlice controller against a real in-process API server. There is no kubelet:
//! the tests create a Node object and pods bound to it, and write the pods' status (IP,
//! Running, Ready) themselves. The garbage collector is not running, so a deleted Service's
//! slices stay; what makes them go is their ownerReference, which the tests check.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use controllers::endpointslice::{self, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, MANAGED_BY};
use controllers::{Context, ControllersConfig};
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-1",
        "labels": {"topology.kubernetes.io/zone": "zone-a"}}}))
    .expect("node json");
    Api::<Node>::all(api.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let cancel = CancellationToken::new();
    let ctx = Context {
        client: api.client.clone(),
        config: ControllersConfig::default(),
        shutdown: api.shutdown.clone(),
    };
    tokio::spawn(endpointslice::run(ctx, cancel.clone()));
    Harness { api, cancel }
}

impl Harness {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.api.client.clone(), "default")
    }
    fn services(&self) -> Api<Service> {
        Api::namespaced(self.api.client.clone(), "default")
    }
    fn slices_api(&self) -> Api<EndpointSlice> {
        Api::namespaced(self.api.client.clone(), "default")
    }

    async fn service(&self, spec: Value) -> Service {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": spec,
        }))
        .expect("service json");
        self.services()
            .create(&PostParams::default(), &svc)
            .await
            .expect("create service")
    }

    async fn pod_on(&self, name: &str, node: &str, ip: &str, port: i32, ready: bool) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                "ports": [{"name": "http", "containerPort": port}]}]},
        }))
        .expect("pod json");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        self.set_status(name, ip, ready).await;
    }

    async fn pod(&self, name: &str, ip: &str, port: i32, ready: bool) {
        self.pod_on(name, "node-1", ip, port, ready).await;
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

    /// The slices this controller manages for `web`.
    async fn slices(&self) -> Vec<EndpointSlice> {
        let selector = format!("{LABEL_SERVICE_NAME}=web,{LABEL_MANAGED_BY}={MANAGED_BY}");
        let mut items = self
            .slices_api()
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("list slices")
            .items;
        items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        items
    }

    async fn wait_slices(
        &self,
        what: &str,
        check: impl Fn(&[EndpointSlice]) -> bool,
    ) -> Vec<EndpointSlice> {
        wait_for(what, || async {
            let slices = self.slices().await;
            check(&slices).then_some(slices)
        })
        .await
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..400 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn all_endpoints(slices: &[EndpointSlice]) -> Vec<&Endpoint> {
    slices.iter().flat_map(|s| s.endpoints.iter()).collect()
}

fn endpoint<'a>(slices: &'a [EndpointSlice], pod: &str) -> Option<&'a Endpoint> {
    all_endpoints(slices)
        .into_iter()
        .find(|e| e.target_ref.as_ref().and_then(|t| t.name.as_deref()) == Some(pod))
}

/// (ready, serving, terminating) of one pod's endpoint.
fn conditions(slices: &[EndpointSlice], pod: &str) -> Option<(bool, bool, bool)> {
    let c = endpoint(slices, pod)?.conditions.clone()?;
    Some((c.ready?, c.serving?, c.terminating?))
}

fn names(slices: &[EndpointSlice]) -> BTreeSet<String> {
    slices
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect()
}

#[tokio::test]
async fn ready_pods_make_one_slice_owned_by_the_service() {
    let h = start().await;
    let svc = h
        .service(
            json!({"selector": {"app": "web"}, "clusterIP": "10.43.0.20",
            "ipFamilies": ["IPv4"],
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "appProtocol": "http"}]}),
        )
        .await;
    for i in 1..=3 {
        h.pod(&format!("web-{i}"), &format!("10.42.0.{i}"), 8080, true)
            .await;
    }
    let slices = h
        .wait_slices("3 ready endpoints", |s| {
            s.len() == 1
                && (1..=3).all(|i| conditions(s, &format!("web-{i}")) == Some((true, true, false)))
        })
        .await;
    let slice = &slices[0];
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.endpoints.len(), 3);
    assert!(
        slice
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("web-"))
    );
    let owner = &slice.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(owner.api_version, "v1");
    assert_eq!(owner.kind, "Service");
    assert_eq!(owner.name, "web");
    assert_eq!(Some(&owner.uid), svc.metadata.uid.as_ref());
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    let port = &slice.ports.as_ref().expect("ports")[0];
    assert_eq!(
        (
            port.name.as_deref(),
            port.port,
            port.protocol.as_deref(),
            port.app_protocol.as_deref()
        ),
        (Some("http"), Some(8080), Some("TCP"), Some("http"))
    );
    let first = endpoint(&slices, "web-1").expect("web-1");
    assert_eq!(first.addresses, ["10.42.0.1"]);
    assert_eq!(first.node_name.as_deref(), Some("node-1"));
    assert_eq!(first.zone.as_deref(), Some("zone-a"));

    // NotReady: ready and serving false, still listed.
    h.set_status("web-2", "10.42.0.2", false).await;
    let slices = h
        .wait_slices("web-2 not ready", |s| {
            conditions(s, "web-2") == Some((false, false, false))
        })
        .await;
    assert_eq!(slices.len(), 1, "updated in place");
    assert_eq!(slices[0].metadata.name, slice.metadata.name);

    // Deleting the Service: the controller writes nothing more; the ownerReference above is
    // what lets the garbage collector remove the slice.
    h.services()
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    h.pod("web-4", "10.42.0.4", 8080, true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = h.slices().await;
    assert_eq!(names(&after), names(&slices));
    assert!(endpoint(&after, "web-4").is_none());
}

#[tokio::test]
async fn named_target_ports_give_one_slice_per_port_set() {
    let h = start().await;
    h.service(
        json!({"selector": {"app": "web"}, "clusterIP": "10.43.0.21", "ipFamilies": ["IPv4"],
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
    )
    .await;
    h.pod("web-a", "10.42.0.1", 8080, true).await;
    h.pod("web-b", "10.42.0.2", 9090, true).await;
    let slices = h
        .wait_slices("two slices", |s| {
            s.len() == 2 && all_endpoints(s).len() == 2
        })
        .await;
    let mut by_port: Vec<(Option<i32>, Vec<String>)> = slices
        .iter()
        .map(|s| {
            (
                s.ports.as_ref().expect("ports")[0].port,
                s.endpoints
                    .iter()
                    .flat_map(|e| e.addresses.clone())
                    .collect(),
            )
        })
        .collect();
    by_port.sort();
    assert_eq!(
        by_port,
        [
            (Some(8080), vec!["10.42.0.1".to_string()]),
            (Some(9090), vec!["10.42.0.2".to_string()])
        ]
    );
}

#[tokio::test]
async fn terminating_pods_stay_as_terminating_endpoints() {
    let h = start().await;
    h.service(
        json!({"selector": {"app": "web"}, "clusterIP": "10.43.0.22", "ipFamilies": ["IPv4"],
        "ports": [{"port": 80, "targetPort": 8080}]}),
    )
    .await;
    h.pod("web-1", "10.42.0.1", 8080, true).await;
    h.wait_slices("web-1 ready", |s| {
        conditions(s, "web-1") == Some((true, true, false))
    })
    .await;
    // Bound to a node: a graceful deletion, the pod keeps running while it terminates.
    h.pods()
        .delete("web-1", &DeleteParams::default())
        .await
        .expect("delete pod");
    let slices = h
        .wait_slices("web-1 terminating", |s| {
            conditions(s, "web-1") == Some((false, true, true))
        })
        .await;
    assert_eq!(slices.len(), 1);
}

#[tokio::test]
async fn publish_not_ready_addresses_makes_every_endpoint_ready() {
    let h = start().await;
    h.service(
        json!({"selector": {"app": "web"}, "clusterIP": "None", "ipFamilies": ["IPv4"],
        "publishNotReadyAddresses": true, "ports": [{"port": 80, "targetPort": 8080}]}),
    )
    .await;
    h.pod("web-1", "10.42.0.1", 8080, false).await;
    let slices = h
        .wait_slices("ready although not ready", |s| {
            conditions(s, "web-1") == Some((true, false, false))
        })
        .await;
    let labels = slices[0].metadata.labels.clone().unwrap_or_default();
    assert!(labels.contains_key("service.kubernetes.io/headless"));
}

#[tokio::test]
async fn many_pods_fill_slices_of_at_most_100_and_scale_down_updates_in_place() {
    let h = start().await;
    h.service(
        json!({"selector": {"app": "web"}, "clusterIP": "10.43.0.23", "ipFamilies": ["IPv4"],
        "ports": [{"port": 80, "targetPort": 8080}]}),
    )
    .await;
    for i in 0..250 {
        h.pod(
            &format!("web-{i:03}"),
            &format!("10.42.{}.{}", i / 200, i % 200 + 1),
            8080,
            true,
        )
        .await;
    }
    let full = h
        .wait_slices("250 endpoints", |s| all_endpoints(s).len() == 250)
        .await;
    assert_eq!(full.len(), 3, "250 endpoints need 3 slices");
    assert!(full.iter().all(|s| s.endpoints.len() <= 100));

    // Scale down to 10: pods leave the Service.
    for i in 10..250 {
        let unlabel = json!({"metadata": {"labels": {"app": "gone"}}});
        h.pods()
            .patch(
                &format!("web-{i:03}"),
                &PatchParams::default(),
                &Patch::Merge(&unlabel),
            )
            .await
            .expect("relabel pod");
    }
    let small = h
        .wait_slices("10 endpoints", |s| all_endpoints(s).len() == 10)
        .await;
    // Endpoints are placed in pod order, so the ten left share the first slice: it is
    // updated in place and the two emptied slices are deleted; nothing is created.
    assert_eq!(small.len(), 1);
    assert!(
        names(&full).is_superset(&names(&small)),
        "no slice recreated"
    );
    // Settled: no further writes.
    let version = small[0].metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.slices().await[0].metadata.resource_version, version);
}

#[tokio::test]
async fn services_without_a_selector_are_left_alone() {
    let h = start().await;
    h.service(json!({"ports": [{"port": 80}], "clusterIP": "10.43.0.24", "ipFamilies": ["IPv4"]}))
        .await;
    let manual: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-manual", "labels": {LABEL_SERVICE_NAME: "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"]}],
        "ports": [{"port": 80}],
    }))
    .expect("slice json");
    let written = h
        .slices_api()
        .create(&PostParams::default(), &manual)
        .await
        .expect("create slice");
    h.pod("web-1", "10.42.0.1", 8080, true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(h.slices().await.is_empty(), "no managed slices");
    let now = h
        .slices_api()
        .get("web-manual")
        .await
        .expect("manual slice");
    assert_eq!(
        now.metadata.resource_version,
        written.metadata.resource_version
    );
}

#[tokio::test]
async fn a_pod_on_a_missing_node_is_left_out_with_a_warning() {
    let h = start().await;
    h.service(
        json!({"selector": {"app": "web"}, "clusterIP": "10.43.0.25", "ipFamilies": ["IPv4"],
        "ports": [{"port": 80, "targetPort": 8080}]}),
    )
    .await;
    h.pod("web-1", "10.42.0.1", 8080, true).await;
    h.pod_on("web-2", "ghost", "10.42.9.1", 8080, true).await;
    let slices = h
        .wait_slices("web-1 only", |s| endpoint(s, "web-1").is_some())
        .await;
    assert!(endpoint(&slices, "web-2").is_none());
    let events: Api<Event> = Api::namespaced(h.api.client.clone(), "default");
    let event = wait_for("a FailedToUpdateEndpointSlices event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedToUpdateEndpointSlices"))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("Service"));
    let message = event.message.unwrap_or_default();
    assert!(
        message.contains("Error updating Endpoint Slices for Service default/web")
            && message.contains("Node ghost Not Found"),
        "{message}"
    );
}
