//! The `kubernetes` Service in `default` and what points it at the API servers — upstream's
//! bootstrap controllers (`kubernetesservice`, the lease endpoint reconciler, and
//! `defaultservicecidr`).
//!
//! [`run`] is one long-running task per API server, a small state machine:
//! * `WaitForNamespace`: the `default` namespace is created by the server's bootstrap.
//! * `Bootstrap`: the default ServiceCIDR `kubernetes` (made Ready), the allocation repair
//!   loop started, and the `kubernetes` Service created with the first IP of the range, port
//!   443 `https` → this server's port (reconciled at start if someone changed it).
//! * `Reconcile`: every `endpoint_interval`, this server renews its lease under
//!   `/registry/masterleases/<ip>` and writes the addresses of every server with a live lease
//!   into the `kubernetes` Endpoints and EndpointSlice — so several API servers sharing one
//!   store all appear, and one that stopped drops out when its lease expires.
//! * On shutdown the server removes its own lease and address (upstream's `Stop`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use api::catalogue::{self, Resource};
use serde_json::{Value, json};
use store::{Bytes, RangeOptions, StoreError};
use tokio_util::sync::CancellationToken;

use super::repair::{self, Repair};
use crate::ApiState;
use crate::error::{ApiError, ApiResult};
use crate::request::Query;
use crate::rest::{self, UpdateKind, WriteOptions};

pub const KUBERNETES_SERVICE: &str = "kubernetes";
pub const DEFAULT_NAMESPACE: &str = "default";
/// The default ServiceCIDR's name (upstream's `DefaultServiceCIDRName`).
pub const DEFAULT_SERVICE_CIDR: &str = "kubernetes";
/// Where API server leases live (upstream's lease endpoint reconciler).
pub const MASTER_LEASES_PREFIX: &str = "/registry/masterleases/";
/// The field manager of the API server's own writes.
const MANAGER: &str = "kube-apiserver";

/// The states of [`run`].
enum State {
    WaitForNamespace,
    Bootstrap,
    Reconcile,
}

/// Runs the bootstrap controllers until `cancel`, then removes this server from the
/// `kubernetes` endpoints.
pub async fn run(state: Arc<ApiState>, cancel: CancellationToken) {
    let (ip, port) = advertised(&state);
    let interval = state.services.config.endpoint_interval;
    let mut current = State::WaitForNamespace;
    loop {
        let wait = match current {
            State::WaitForNamespace => match namespace_exists(&state).await {
                true => {
                    current = State::Bootstrap;
                    Duration::ZERO
                }
                false => Duration::from_millis(100),
            },
            State::Bootstrap => match bootstrap(&state, port, &cancel).await {
                Ok(()) => {
                    current = State::Reconcile;
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(error = %e, "creating the kubernetes Service failed; retrying");
                    Duration::from_millis(500)
                }
            },
            State::Reconcile => {
                if let Err(e) = reconcile_endpoints(&state, ip, port, false).await {
                    tracing::warn!(error = %e, "reconciling the kubernetes Service endpoints failed; retrying");
                }
                interval
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if matches!(current, State::Reconcile) {
        // Best effort: a store that is already gone must not hold up shutdown.
        let removal = reconcile_endpoints(&state, ip, port, true);
        match tokio::time::timeout(interval.max(Duration::from_secs(1)) * 2, removal).await {
            Ok(Ok(())) => {
                tracing::info!(%ip, "removed this API server from the kubernetes Service endpoints")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "removing this API server from the kubernetes endpoints failed")
            }
            Err(_) => {
                tracing::warn!("removing this API server from the kubernetes endpoints timed out")
            }
        }
    }
}

/// The address and port clients reach this server on.
pub fn advertised(state: &ApiState) -> (Ipv4Addr, u16) {
    let listen: Option<SocketAddr> = state.advertise_address.parse().ok();
    let port = listen.map(|a| a.port()).unwrap_or(6443);
    let chosen = match state.services.config.advertise_address {
        Some(ip) => Some(ip),
        None => listen.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()),
    };
    let ip = match chosen {
        Some(IpAddr::V4(v4)) => v4,
        Some(IpAddr::V6(v6)) => v6.to_ipv4_mapped().unwrap_or_else(primary_host_ip),
        None => primary_host_ip(),
    };
    (ip, port)
}

/// The host's source address for its default route (like upstream's `ChooseHostInterface`).
/// Connecting a UDP socket only looks the route up; nothing is sent.
fn primary_host_ip() -> Ipv4Addr {
    let probe = || -> std::io::Result<Ipv4Addr> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        // TEST-NET-1 (RFC 5737): never answered, only routed.
        socket.connect("192.0.2.1:9")?;
        match socket.local_addr()?.ip() {
            IpAddr::V4(v4) if !v4.is_unspecified() => Ok(v4),
            _ => Err(std::io::Error::other("no IPv4 source address")),
        }
    };
    probe().unwrap_or(Ipv4Addr::LOCALHOST)
}

fn resource(group: &str, plural: &str) -> ApiResult<&'static Resource> {
    let version = "v1";
    catalogue::find(group, version, plural)
        .ok_or_else(|| ApiError::internal(format!("no {plural} resource in the catalogue")))
}

async fn namespace_exists(state: &ApiState) -> bool {
    match resource("", "namespaces") {
        Ok(ns) => rest::get_object(state, ns, None, DEFAULT_NAMESPACE)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

async fn bootstrap(state: &Arc<ApiState>, port: u16, cancel: &CancellationToken) -> ApiResult<()> {
    ensure_service_cidr(state).await?;
    // Repair before the kubernetes Service claims its IP, so a stale record is fixed first.
    let mut repairer = Repair::new(state.store.clone(), state.services.clone());
    match repairer.run_once().await {
        Ok(report) if report != repair::RepairReport::default() => {
            tracing::info!(
                ?report,
                "service allocation repair at start fixed or found problems"
            )
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "service allocation repair at start failed; the periodic pass retries")
        }
    }
    let interval = state.services.config.repair_interval;
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(interval) => repair::run(repairer, interval, stop).await,
        }
    });
    ensure_kubernetes_service(state, port).await
}

/// `defaultservicecidr`: creates the ServiceCIDR `kubernetes` from the configured range and
/// marks it Ready; an existing one with other CIDRs is reported, not changed.
async fn ensure_service_cidr(state: &ApiState) -> ApiResult<()> {
    let res = resource("networking.k8s.io", "servicecidrs")?;
    let cidr = state.services.config.service_cidr.to_string();
    let opts = WriteOptions::internal("kubernetes-service-cidr-controller");
    let existing = match rest::get_object(state, res, None, DEFAULT_SERVICE_CIDR).await {
        Ok((obj, _)) => obj,
        Err(e) if e.code == 404 => {
            let obj = json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                "metadata": {"name": DEFAULT_SERVICE_CIDR}, "spec": {"cidrs": [cidr]}});
            match rest::create(state, res, None, obj, None, &opts).await {
                Ok((obj, _)) => {
                    tracing::info!(cidrs = %cidr, "created the default ServiceCIDR");
                    obj
                }
                Err(e) if e.code == 409 => {
                    rest::get_object(state, res, None, DEFAULT_SERVICE_CIDR)
                        .await?
                        .0
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if existing.pointer("/spec/cidrs") != Some(&json!([cidr])) {
        let stored = existing
            .pointer("/spec/cidrs")
            .cloned()
            .unwrap_or(Value::Null);
        tracing::warn!(
            configured = %cidr,
            stored = %stored,
            "the default ServiceCIDR does not match --service-cidr; configure the flag to match it or delete the ServiceCIDR"
        );
        return Ok(());
    }
    let ready = existing
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        });
    if ready || object_deleting(&existing) {
        return Ok(());
    }
    let condition = json!({"type": "Ready", "status": "True", "reason": "",
        "message": "Kubernetes default Service CIDR is ready", "lastTransitionTime": crate::object::now_rfc3339()});
    rest::update(
        state,
        res,
        None,
        DEFAULT_SERVICE_CIDR,
        UpdateKind::Status,
        &opts,
        |cur| {
            let mut new = cur.clone();
            if let Some(root) = new.as_object_mut() {
                root.insert("status".into(), json!({"conditions": [condition.clone()]}));
            }
            Ok((new, None))
        },
    )
    .await
    .map(|_| ())
}

fn object_deleting(obj: &Value) -> bool {
    crate::object::deletion_timestamp(obj).is_some()
}

fn service_ports(port: u16) -> Value {
    json!([{"name": "https", "protocol": "TCP", "port": 443, "targetPort": port}])
}

/// Creates the `kubernetes` Service, or resets its ports and type if they were changed.
async fn ensure_kubernetes_service(state: &ApiState, port: u16) -> ApiResult<()> {
    let res = resource("", "services")?;
    let opts = WriteOptions::internal(MANAGER);
    let ip = state.services.config.service_cidr.first().to_string();
    match rest::get_object(state, res, Some(DEFAULT_NAMESPACE), KUBERNETES_SERVICE).await {
        Ok((current, _)) => {
            let ports_ok = current.pointer("/spec/ports") == Some(&service_ports(port));
            let type_ok =
                current.pointer("/spec/type").and_then(Value::as_str) == Some("ClusterIP");
            if ports_ok && type_ok {
                return Ok(());
            }
            tracing::warn!("resetting the kubernetes Service's ports and type");
            rest::update(
                state,
                res,
                Some(DEFAULT_NAMESPACE),
                KUBERNETES_SERVICE,
                UpdateKind::Main,
                &opts,
                |cur| {
                    let mut new = cur.clone();
                    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("ports".into(), service_ports(port));
                        spec.insert("type".into(), json!("ClusterIP"));
                    }
                    Ok((new, None))
                },
            )
            .await
            .map(|_| ())
        }
        Err(e) if e.code == 404 => {
            let svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": KUBERNETES_SERVICE, "namespace": DEFAULT_NAMESPACE,
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": ip, "ipFamilyPolicy": "SingleStack",
                    "sessionAffinity": "None", "ports": service_ports(port)},
            });
            match rest::create(state, res, Some(DEFAULT_NAMESPACE), svc, None, &opts).await {
                Ok(_) => {
                    tracing::info!(cluster_ip = %ip, "created the kubernetes Service");
                    Ok(())
                }
                Err(e) if e.code == 409 => Ok(()), // another API server was first
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Renews (or, when `leaving`, removes) this server's lease, then writes every live server's
/// address into the `kubernetes` Endpoints and EndpointSlice.
pub async fn reconcile_endpoints(
    state: &ApiState,
    ip: Ipv4Addr,
    port: u16,
    leaving: bool,
) -> ApiResult<()> {
    let ttl = state.services.config.endpoint_interval.mul_f32(1.5);
    let key = format!("{MASTER_LEASES_PREFIX}{ip}");
    if leaving {
        match state.store.delete(&key, None).await {
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        renew_lease(state, &key, ip, port).await?;
    }
    let now = jiff::Timestamp::now();
    let leases = state
        .store
        .range(MASTER_LEASES_PREFIX, RangeOptions::default())
        .await?;
    let mut ips: Vec<Ipv4Addr> = Vec::new();
    for kv in &leases.kvs {
        let Ok(v) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        let renewed = v
            .get("renewTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let live = renewed.is_some_and(|t| {
            let age = now.duration_since(t);
            age < jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX)
        });
        let lease_ip = v
            .get("ip")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        match (live, lease_ip) {
            (true, Some(addr)) => ips.push(addr),
            // Upstream lets expired leases age out with their TTL; without TTLs in the store,
            // the first server to see one expired deletes it.
            (false, _) => {
                let _ = state.store.delete(&kv.key, Some(kv.mod_revision)).await;
            }
            (true, None) => {}
        }
    }
    ips.sort();
    ips.dedup();
    sync_endpoints(state, &ips, port).await?;
    sync_endpoint_slice(state, &ips, port).await
}

async fn renew_lease(state: &ApiState, key: &str, ip: Ipv4Addr, port: u16) -> ApiResult<()> {
    let value = Bytes::from(
        json!({"ip": ip.to_string(), "port": port, "renewTime": crate::object::now_rfc3339()})
            .to_string(),
    );
    for _ in 0..4 {
        let result = match state.store.get(key).await? {
            Some(kv) => {
                state
                    .store
                    .update(key, value.clone(), kv.mod_revision)
                    .await
            }
            None => state.store.create(key, value.clone()).await,
        };
        match result {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. })
            | Err(StoreError::AlreadyExists(_))
            | Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(format!(
        "renewing the API server lease {key} kept conflicting"
    )))
}

/// The Endpoints `kubernetes` (upstream's `EndpointsAdapter.updateEndpoints`): one subset with
/// every server's address, labelled so the mirroring controller leaves it alone.
async fn sync_endpoints(state: &ApiState, ips: &[Ipv4Addr], port: u16) -> ApiResult<()> {
    let res = resource("", "endpoints")?;
    let labels = json!({"endpointslice.kubernetes.io/skip-mirror": "true"});
    let subsets = if ips.is_empty() {
        json!([])
    } else {
        json!([{
            "addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }])
    };
    let opts = WriteOptions::internal(MANAGER);
    match rest::get_object(state, res, Some(DEFAULT_NAMESPACE), KUBERNETES_SERVICE).await {
        Ok((current, _)) => {
            let current_subsets = current.get("subsets").cloned().unwrap_or_else(|| json!([]));
            if current_subsets == subsets && current.pointer("/metadata/labels") == Some(&labels) {
                return Ok(());
            }
            rest::update(
                state,
                res,
                Some(DEFAULT_NAMESPACE),
                KUBERNETES_SERVICE,
                UpdateKind::Main,
                &opts,
                |cur| {
                    let mut new = cur.clone();
                    crate::object::meta_mut(&mut new).insert("labels".into(), labels.clone());
                    if let Some(root) = new.as_object_mut() {
                        if ips.is_empty() {
                            root.remove("subsets");
                        } else {
                            root.insert("subsets".into(), subsets.clone());
                        }
                    }
                    Ok((new, None))
                },
            )
            .await
            .map(|_| ())
        }
        Err(e) if e.code == 404 => {
            let mut obj = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": KUBERNETES_SERVICE, "namespace": DEFAULT_NAMESPACE, "labels": labels}});
            if !ips.is_empty()
                && let Some(root) = obj.as_object_mut()
            {
                root.insert("subsets".into(), subsets);
            }
            match rest::create(state, res, Some(DEFAULT_NAMESPACE), obj, None, &opts).await {
                Ok(_) | Err(ApiError { code: 409, .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The EndpointSlice `kubernetes` (upstream's `EndpointsAdapter.updateEndpointSlice`),
/// labelled only with the service name, as upstream does; other slices carrying that label
/// are deleted.
async fn sync_endpoint_slice(state: &ApiState, ips: &[Ipv4Addr], port: u16) -> ApiResult<()> {
    let res = resource("discovery.k8s.io", "endpointslices")?;
    let labels = json!({"kubernetes.io/service-name": KUBERNETES_SERVICE});
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    let ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    let opts = WriteOptions::internal(MANAGER);

    let q = Query::parse(Some(
        "labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes",
    ));
    let (slices, _, _) = rest::list(state, res, Some(DEFAULT_NAMESPACE), &q).await?;
    let mut current = None;
    for slice in slices {
        let name = crate::object::name(&slice).unwrap_or("").to_string();
        if name == KUBERNETES_SERVICE
            && slice.get("addressType").and_then(Value::as_str) == Some("IPv4")
        {
            current = Some(slice);
        } else {
            match rest::delete(
                state,
                res,
                Some(DEFAULT_NAMESPACE),
                &name,
                &rest::DeleteOptions::default(),
            )
            .await
            {
                Ok(_) => {
                    tracing::info!(slice = %name, "deleted a stray EndpointSlice of the kubernetes Service")
                }
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    match current {
        Some(cur) => {
            let same = cur.get("endpoints").cloned().unwrap_or_else(|| json!([]))
                == json!(endpoints)
                && cur.get("ports") == Some(&ports)
                && cur.pointer("/metadata/labels") == Some(&labels);
            if same {
                return Ok(());
            }
            rest::update(
                state,
                res,
                Some(DEFAULT_NAMESPACE),
                KUBERNETES_SERVICE,
                UpdateKind::Main,
                &opts,
                |cur| {
                    let mut new = cur.clone();
                    crate::object::meta_mut(&mut new).insert("labels".into(), labels.clone());
                    if let Some(root) = new.as_object_mut() {
                        root.insert("addressType".into(), json!("IPv4"));
                        root.insert("endpoints".into(), json!(endpoints));
                        root.insert("ports".into(), ports.clone());
                    }
                    Ok((new, None))
                },
            )
            .await
            .map(|_| ())
        }
        None => {
            let obj = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": KUBERNETES_SERVICE, "namespace": DEFAULT_NAMESPACE, "labels": labels},
                "addressType": "IPv4", "endpoints": endpoints, "ports": ports});
            match rest::create(state, res, Some(DEFAULT_NAMESPACE), obj, None, &opts).await {
                Ok(_) | Err(ApiError { code: 409, .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}
