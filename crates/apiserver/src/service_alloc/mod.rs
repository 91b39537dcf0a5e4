//! Service ClusterIP and NodePort allocation, the way upstream's Service REST storage does it
//! (pkg/registry/core/service/storage `alloc.go`, `ipallocator`, `portallocator`, v1.33).
//!
//! * `ip`: ClusterIPs as `networking.k8s.io/v1` IPAddress objects, created if absent.
//! * `ports`: node ports as a bitmap at `/registry/ranges/servicenodeports`, changed by CAS.
//! * `spec`: the Service fields around allocation (IP families, values kept on update, fields
//!   a type change drops).
//! * `repair`: the loop that frees allocations no Service holds and re-records Services'
//!   values that lack one (after a crash between allocation and the Service write).
//! * `kubernetes_service`: the `kubernetes` Service in `default`, its Endpoints and
//!   EndpointSlice, and the default ServiceCIDR (upstream's bootstrap controllers).
//!
//! A write flows: `rest::create`/`rest::update` call [`ServiceAllocator::allocate_create`] /
//! [`ServiceAllocator::allocate_update`] before validation; the returned [`Allocation`] is
//! finished with [`ServiceAllocator::finish`] — committed (old values released) once the
//! Service is stored, reverted (new values released) on any failure. A deleted Service's values
//! are released by [`ServiceAllocator::release_service`].

pub mod ip;
pub mod kubernetes_service;
pub mod ports;
pub mod repair;
pub mod spec;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use api::validation::FieldError;
use serde_json::{Value, json};
use store::Store;

use crate::error::{ApiError, ApiResult, Details};
use ip::{ClusterIpAllocator, IpAllocError, ServiceRef};
pub use ip::ServiceCidr;
pub use ports::NodePortRange;
use ports::{NodePortAllocator, PortAllocError, PortRequest};

/// The service network settings of an API server (`--service-cidr`,
/// `--service-node-port-range`, `--advertise-address`).
#[derive(Clone, Debug)]
pub struct ServiceNetworkConfig {
    /// Where ClusterIPs come from; its first address is the `kubernetes` Service's.
    pub service_cidr: ServiceCidr,
    /// Where node ports come from.
    pub node_port_range: NodePortRange,
    /// The address put in the `kubernetes` Endpoints. `None`: the listen address, or when
    /// listening on all addresses, the host's primary one.
    pub advertise_address: Option<IpAddr>,
    /// How often the repair loop runs after the one at start (upstream: 3 minutes).
    pub repair_interval: Duration,
    /// How often this server renews its lease and reconciles the `kubernetes` Endpoints
    /// (upstream's endpoint reconciler: every 10 s, leases live 15 s = 1.5 intervals).
    pub endpoint_interval: Duration,
}

impl Default for ServiceNetworkConfig {
    fn default() -> Self {
        ServiceNetworkConfig {
            service_cidr: ServiceCidr::default(),
            node_port_range: NodePortRange::default(),
            advertise_address: None,
            repair_interval: Duration::from_secs(180),
            endpoint_interval: Duration::from_secs(10),
        }
    }
}

/// Allocates ClusterIPs and node ports for Service writes.
pub struct ServiceAllocator {
    pub config: ServiceNetworkConfig,
    ips: ClusterIpAllocator,
    ports: NodePortAllocator,
}

/// What one Service write allocated and what it will release once stored. Must be passed to
/// [`ServiceAllocator::finish`]; a dropped one leaks until the repair loop finds it.
#[must_use = "finish the allocation: commit after the Service is stored, revert on failure"]
#[derive(Debug, Default)]
pub struct Allocation {
    owner: Option<ServiceRef>,
    dry_run: bool,
    /// Released on revert.
    new_ips: Vec<Ipv4Addr>,
    new_ports: Vec<u16>,
    /// Released on commit.
    old_ips: Vec<Ipv4Addr>,
    old_ports: Vec<u16>,
}

/// Where a node port goes in the Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    Port(usize),
    HealthCheck,
}

/// A node port plan: user-chosen ports (with where they go) and slots to fill.
#[derive(Default)]
struct PortPlan {
    specific: Vec<(Slot, u16)>,
    dynamic: Vec<Slot>,
    /// Service ports that share a service port number share a node port (TCP and UDP 53).
    copies: Vec<(usize, Slot)>,
}

impl ServiceAllocator {
    pub fn new(store: Arc<dyn Store>, config: ServiceNetworkConfig) -> ServiceAllocator {
        ServiceAllocator {
            ips: ClusterIpAllocator::new(store.clone(), config.service_cidr),
            ports: NodePortAllocator::new(store, config.node_port_range),
            config,
        }
    }

    pub fn ips(&self) -> &ClusterIpAllocator {
        &self.ips
    }

    pub fn node_ports(&self) -> &NodePortAllocator {
        &self.ports
    }

    /// `allocateCreate`: IP family fields, the ClusterIP, node ports and the health check node
    /// port of a new Service (`svc` is defaulted and named).
    pub async fn allocate_create(&self, svc: &mut Value, dry_run: bool) -> ApiResult<Allocation> {
        let owner = ServiceRef::of(svc);
        let mut txn = Allocation {
            owner: Some(owner.clone()),
            dry_run,
            ..Default::default()
        };
        spec::init_ip_family_fields(svc, None).map_err(|errs| invalid(&owner.name, errs))?;

        if spec::needs_cluster_ip(svc) && !spec::is_headless(svc) {
            self.allocate_cluster_ip(svc, &owner, &mut txn).await?;
        }

        let mut plan = PortPlan::default();
        if spec::needs_node_port(svc) {
            // initNodePorts: ports with the same port number share one node port.
            let mut by_port_number: HashMap<i64, Slot> = HashMap::new();
            let all = spec::ports(svc).to_vec();
            for (i, port) in all.iter().enumerate() {
                let np = spec::port_node_port(port);
                if np == 0 && !spec::should_allocate_node_ports(svc) {
                    continue;
                }
                let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                match by_port_number.get(&number) {
                    None => {
                        let requested = if np != 0 {
                            np
                        } else {
                            all.iter()
                                .filter(|p| p.get("port").and_then(Value::as_i64) == Some(number))
                                .map(spec::port_node_port)
                                .find(|p| *p != 0)
                                .unwrap_or(0)
                        };
                        if requested != 0 {
                            let p = self.check_node_port(&owner, i, requested)?;
                            plan.specific.push((Slot::Port(i), p));
                        } else {
                            plan.dynamic.push(Slot::Port(i));
                        }
                        by_port_number.insert(number, Slot::Port(i));
                    }
                    Some(first) if np == 0 => plan.copies.push((i, *first)),
                    Some(_) => {
                        let p = self.check_node_port(&owner, i, np)?;
                        if !plan.specific.iter().any(|(_, q)| *q == p) {
                            plan.specific.push((Slot::Port(i), p));
                        }
                    }
                }
            }
        }
        if spec::needs_health_check(svc) {
            let hc = spec::health_check_node_port(svc);
            if hc != 0 {
                let p = self.ports.check_range(hc).map_err(|e| {
                    ApiError::internal(format!(
                        "failed to allocate requested HealthCheck NodePort {hc}: {e}"
                    ))
                })?;
                plan.specific.push((Slot::HealthCheck, p));
            } else {
                plan.dynamic.push(Slot::HealthCheck);
            }
        }
        if let Err(e) = self.allocate_ports(svc, &owner, plan, &mut txn).await {
            self.finish(txn, false).await;
            return Err(e);
        }
        Ok(txn)
    }

    /// `allocateUpdate` preceded by `patchAllocatedValues` and the strategy's
    /// `dropTypeDependentFields`: values the client left out are kept, values the type change
    /// obsoletes are dropped, new ones allocated, and old ones scheduled for release.
    pub async fn allocate_update(
        &self,
        new: &mut Value,
        old: &Value,
        dry_run: bool,
    ) -> ApiResult<Allocation> {
        let owner = ServiceRef::of(old);
        let mut txn = Allocation {
            owner: Some(owner.clone()),
            dry_run,
            ..Default::default()
        };
        spec::patch_allocated_values(new, old);
        spec::drop_type_dependent_fields(new, old);
        spec::init_ip_family_fields(new, Some(old)).map_err(|errs| invalid(&owner.name, errs))?;

        // ClusterIPs: only a change to or from ExternalName allocates or releases; any other
        // change of the IP is refused by validation ("may not change once set").
        let old_needs = spec::needs_cluster_ip(old);
        let new_needs = spec::needs_cluster_ip(new);
        if !old_needs && new_needs {
            if !spec::is_headless(new) {
                self.allocate_cluster_ip(new, &owner, &mut txn).await?;
            }
        } else if old_needs && !new_needs && !spec::is_headless(old) {
            txn.old_ips.extend(
                spec::cluster_ips(old)
                    .iter()
                    .filter_map(|ip| ip.parse::<Ipv4Addr>().ok()),
            );
        }

        // Node ports.
        let old_ports = spec::node_ports(old);
        let mut plan = PortPlan::default();
        if spec::needs_node_port(new) {
            let mut seen = BTreeSet::new();
            for (i, port) in spec::ports(new).to_vec().iter().enumerate() {
                let np = spec::port_node_port(port);
                if np == 0 && !spec::should_allocate_node_ports(new) {
                    continue;
                }
                if np != 0 {
                    let p = self.check_node_port(&owner, i, np)?;
                    if !old_ports.contains(&p) && seen.insert(p) {
                        plan.specific.push((Slot::Port(i), p));
                    }
                } else {
                    plan.dynamic.push(Slot::Port(i));
                }
            }
        }
        // Health check node port transitions (updateHealthCheckNodePort).
        let needed_hc = spec::needs_health_check(old);
        let needs_hc = spec::needs_health_check(new);
        let old_hc = spec::health_check_node_port(old);
        let new_hc = spec::health_check_node_port(new);
        match (needed_hc, needs_hc) {
            (false, true) if new_hc != 0 => {
                let p = self.ports.check_range(new_hc).map_err(|e| {
                    ApiError::internal(format!(
                        "failed to allocate requested HealthCheck NodePort {new_hc}: {e}"
                    ))
                })?;
                if !old_ports.contains(&p) {
                    plan.specific.push((Slot::HealthCheck, p));
                }
            }
            (false, true) => plan.dynamic.push(Slot::HealthCheck),
            (true, true) if old_hc != new_hc => {
                return Err(invalid(
                    &owner.name,
                    vec![FieldError::invalid(
                        "spec.healthCheckNodePort",
                        new_hc,
                        "cannot change healthCheckNodePort on loadBalancer service with externalTraffic=Local during update",
                    )],
                ));
            }
            _ => {}
        }
        if let Err(e) = self.allocate_ports(new, &owner, plan, &mut txn).await {
            self.finish(txn, false).await;
            return Err(e);
        }
        // Whatever the old object held and the new one does not is released once stored.
        let kept = spec::node_ports(new);
        txn.old_ports.extend(old_ports.difference(&kept));
        Ok(txn)
    }

    /// Commits (`success`: releases what the write replaced) or reverts (releases what it
    /// allocated). Failures are logged: the repair loop cleans up whatever is left.
    pub async fn finish(&self, txn: Allocation, success: bool) {
        if txn.dry_run {
            return;
        }
        let (ips, ports) = if success {
            (txn.old_ips, txn.old_ports)
        } else {
            (txn.new_ips, txn.new_ports)
        };
        let Some(owner) = txn.owner else { return };
        for ip in ips {
            if let Err(e) = self.ips.release(ip, &owner).await {
                tracing::warn!(service = %owner, ip = %ip, error = %e, "releasing a ClusterIP failed; the repair loop will free it");
            }
        }
        if let Err(e) = self.ports.release(&ports).await {
            tracing::warn!(service = %owner, ports = ?ports, error = %e, "releasing node ports failed; the repair loop will free them");
        }
    }

    /// `releaseAllocatedResources`: frees the ClusterIPs and node ports of a deleted Service.
    pub async fn release_service(&self, svc: &Value) {
        let owner = ServiceRef::of(svc);
        let mut txn = Allocation {
            owner: Some(owner),
            ..Default::default()
        };
        if spec::needs_cluster_ip(svc) && !spec::is_headless(svc) {
            txn.old_ips.extend(
                spec::cluster_ips(svc)
                    .iter()
                    .filter_map(|ip| ip.parse::<Ipv4Addr>().ok()),
            );
        }
        txn.old_ports.extend(spec::node_ports(svc));
        self.finish(txn, true).await;
    }

    async fn allocate_cluster_ip(
        &self,
        svc: &mut Value,
        owner: &ServiceRef,
        txn: &mut Allocation,
    ) -> ApiResult<()> {
        let wanted = spec::cluster_ip(svc).to_string();
        let ip = if wanted.is_empty() {
            self.ips
                .allocate_next(owner, txn.dry_run)
                .await
                .map_err(|e| ApiError::internal(format!("failed to allocate a serviceIP: {e}")))?
        } else {
            let Ok(ip) = wanted.parse::<Ipv4Addr>() else {
                // Pre-validation only lets IPv4 through here.
                return Err(ApiError::internal(format!(
                    "failed to allocate IP {wanted}: not an IPv4 address"
                )));
            };
            match self.ips.allocate(ip, owner, txn.dry_run).await {
                Ok(()) => ip,
                Err(IpAllocError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    return Err(invalid(
                        &owner.name,
                        vec![FieldError::invalid(
                            "spec.clusterIPs",
                            json!(spec::cluster_ips(svc)),
                            format!("failed to allocate IP {wanted}: {e}"),
                        )],
                    ));
                }
            }
        };
        txn.new_ips.push(ip);
        if let Some(s) = spec::spec_mut(svc) {
            s.insert("clusterIP".into(), json!(ip.to_string()));
            s.insert("clusterIPs".into(), json!([ip.to_string()]));
        }
        Ok(())
    }

    fn check_node_port(&self, owner: &ServiceRef, index: usize, port: i64) -> ApiResult<u16> {
        self.ports
            .check_range(port)
            .map_err(|e| node_port_invalid(&owner.name, index, port, &e))
    }

    /// Runs a port plan in one CAS and writes the results into the Service.
    async fn allocate_ports(
        &self,
        svc: &mut Value,
        owner: &ServiceRef,
        plan: PortPlan,
        txn: &mut Allocation,
    ) -> ApiResult<()> {
        if plan.specific.is_empty() && plan.dynamic.is_empty() && plan.copies.is_empty() {
            return Ok(());
        }
        let req = PortRequest {
            specific: plan.specific.iter().map(|(_, p)| *p).collect(),
            dynamic: plan.dynamic.len(),
        };
        let picked = match self.ports.allocate(&req, txn.dry_run).await {
            Ok(p) => p,
            Err(PortAllocError::Allocated { port }) => {
                let slot = plan
                    .specific
                    .iter()
                    .find(|(_, p)| *p == port)
                    .map(|(s, _)| *s);
                return Err(match slot {
                    Some(Slot::Port(i)) => node_port_invalid(
                        &owner.name,
                        i,
                        i64::from(port),
                        &PortAllocError::Allocated { port },
                    ),
                    _ => ApiError::internal(format!(
                        "failed to allocate requested HealthCheck NodePort {port}: provided port is already allocated"
                    )),
                });
            }
            Err(e @ (PortAllocError::Full | PortAllocError::Contended)) => {
                return Err(ApiError::internal(format!(
                    "failed to allocate a nodePort: {e}"
                )));
            }
            Err(PortAllocError::Store(e)) => return Err(e.into()),
            Err(e) => {
                return Err(ApiError::internal(format!(
                    "failed to allocate a nodePort: {e}"
                )));
            }
        };
        txn.new_ports.extend(req.specific.iter().copied());
        txn.new_ports.extend(picked.iter().copied());
        let mut assigned: HashMap<Slot, u16> = HashMap::new();
        for (slot, p) in plan
            .specific
            .iter()
            .copied()
            .chain(plan.dynamic.iter().copied().zip(picked))
        {
            assigned.insert(slot, p);
            match slot {
                Slot::Port(i) => spec::set_port_node_port(svc, i, i64::from(p)),
                Slot::HealthCheck => spec::set_health_check_node_port(svc, i64::from(p)),
            }
        }
        for (i, from) in plan.copies {
            if let Some(p) = assigned.get(&from) {
                spec::set_port_node_port(svc, i, i64::from(*p));
            }
        }
        Ok(())
    }
}

fn node_port_invalid(name: &str, index: usize, port: i64, e: &PortAllocError) -> ApiError {
    invalid(
        name,
        vec![FieldError::invalid(
            format!("spec.ports[{index}].nodePort"),
            port,
            e.to_string(),
        )],
    )
}

/// A 422 Invalid for a Service, shaped like the generic handler's validation errors.
fn invalid(name: &str, errors: Vec<FieldError>) -> ApiError {
    let causes = errors
        .iter()
        .map(|e| json!({"reason": e.reason(), "message": e.message(), "field": e.field}))
        .collect();
    ApiError::new(
        422,
        "Invalid",
        api::validation::invalid_message("Service", "", name, &errors),
    )
    .with_details(Details {
        name: Some(name.to_string()),
        group: Some(String::new()),
        kind: Some("Service".to_string()),
        causes,
        ..Default::default()
    })
}

/// Whether `res` is the core Service resource (the only one with allocation hooks).
pub fn is_service(res: &api::catalogue::Resource) -> bool {
    res.group.is_empty() && res.kind == "Service"
}
