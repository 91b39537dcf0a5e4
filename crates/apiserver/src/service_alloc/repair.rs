//! The allocation repair pass (upstream's `RepairIPAddress` and node port `Repair`
//! controllers): after a crash between allocating and storing a Service, or a release that
//! failed, allocations and Services disagree. One pass makes them agree again:
//!
//! * a Service ClusterIP without an IPAddress object gets one; an IPAddress pointing at the
//!   wrong Service is re-pointed unless that Service really holds the IP (then both are
//!   reported: the IP was handed out twice and one Service must be recreated);
//! * an allocator-managed IPAddress whose Service does not exist (or does not hold the IP) is
//!   deleted once it is older than a minute — younger ones may belong to a create in flight;
//! * node ports used by Services but missing from the bitmap are re-recorded; bitmap ports no
//!   Service uses are freed after being seen unused in [`LEAK_PASSES`] passes in a row (a create
//!   in flight holds its ports briefly before its Service is stored).
//!
//! Everything fixed is logged and returned in a [`RepairReport`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use store::{RangeOptions, Store, StoreError};
use tokio_util::sync::CancellationToken;

use super::ServiceAllocator;
use super::ip::{self, IP_ALLOCATOR_MANAGER, LABEL_MANAGED_BY, ServiceRef};
use super::ports::PortAllocError;
use super::spec;

/// Upstream's grace before an orphaned IPAddress is deleted (the default request timeout).
pub const ORPHAN_IP_GRACE: Duration = Duration::from_secs(60);
/// Upstream's `numRepairsBeforeLeakCleanup`.
pub const LEAK_PASSES: u32 = 3;

/// A repair pass failed part-way; retryable (the next pass starts over).
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("listing Services for the allocation repair failed: {0}")]
    ListServices(#[source] StoreError),
    #[error("listing IPAddress objects for the allocation repair failed: {0}")]
    ListIpAddresses(#[source] StoreError),
    #[error("repairing the IPAddress of {ip} failed: {source}")]
    WriteIpAddress {
        ip: Ipv4Addr,
        #[source]
        source: StoreError,
    },
    #[error("repairing the node port bitmap failed: {0}")]
    NodePorts(#[source] PortAllocError),
}

/// What one pass changed or found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// ClusterIPs of Services that had no (or a wrong) IPAddress, now recorded.
    pub ips_recorded: Vec<Ipv4Addr>,
    /// Orphaned IPAddress objects deleted.
    pub ips_freed: Vec<Ipv4Addr>,
    /// Node ports of Services missing from the bitmap, now recorded.
    pub ports_recorded: Vec<u16>,
    /// Node ports no Service uses, freed.
    pub ports_freed: Vec<u16>,
    /// Problems a pass cannot fix (duplicates, values outside the configured ranges).
    pub problems: Vec<String>,
}

/// The repair state kept between passes (the node port leak counters).
pub struct Repair {
    store: Arc<dyn Store>,
    alloc: Arc<ServiceAllocator>,
    port_leaks: HashMap<u16, u32>,
}

impl Repair {
    pub fn new(store: Arc<dyn Store>, alloc: Arc<ServiceAllocator>) -> Repair {
        Repair {
            store,
            alloc,
            port_leaks: HashMap::new(),
        }
    }

    /// One full pass over Services, IPAddress objects and the node port bitmap.
    pub async fn run_once(&mut self) -> Result<RepairReport, RepairError> {
        let mut report = RepairReport::default();
        let services = list_services(self.store.as_ref())
            .await
            .map_err(RepairError::ListServices)?;
        self.repair_ips(&services, &mut report).await?;
        self.repair_ports(&services, &mut report).await?;
        Ok(report)
    }

    async fn repair_ips(
        &mut self,
        services: &[Value],
        report: &mut RepairReport,
    ) -> Result<(), RepairError> {
        let cidr = self.alloc.ips().cidr();
        // Which Service holds which IP, from the Services' side.
        let mut holders: BTreeMap<Ipv4Addr, Vec<ServiceRef>> = BTreeMap::new();
        for svc in services {
            if !spec::needs_cluster_ip(svc) || spec::is_headless(svc) {
                continue;
            }
            let owner = ServiceRef::of(svc);
            for raw in spec::cluster_ips(svc) {
                match raw.parse::<Ipv4Addr>() {
                    Ok(ip) if cidr.is_usable(ip) => {
                        holders.entry(ip).or_default().push(owner.clone())
                    }
                    Ok(ip) => {
                        let msg = format!(
                            "the ClusterIP {ip} of Service {owner} is not within the service CIDR {cidr}; please recreate the Service"
                        );
                        tracing::warn!("{msg}");
                        report.problems.push(msg);
                    }
                    Err(_) if raw.is_empty() => {}
                    Err(_) => {
                        let msg = format!(
                            "the ClusterIP {raw:?} of Service {owner} is not a valid IPv4 address; please recreate the Service"
                        );
                        tracing::warn!("{msg}");
                        report.problems.push(msg);
                    }
                }
            }
        }
        let stored = ip::list_ip_addresses(self.store.as_ref())
            .await
            .map_err(RepairError::ListIpAddresses)?;
        let mut objects: HashMap<Ipv4Addr, (Value, store::Revision)> = HashMap::new();
        for (addr, obj, rev) in stored {
            if let Some(a) = addr {
                objects.insert(a, (obj, rev));
            }
        }

        // Services → IPAddress objects.
        for (ip, owners) in &holders {
            if owners.len() > 1 {
                let names: Vec<String> = owners.iter().map(ToString::to_string).collect();
                let msg = format!(
                    "ClusterIP {ip} was assigned to multiple services ({}); please recreate all but one",
                    names.join(", ")
                );
                tracing::error!("{msg}");
                report.problems.push(msg);
            }
            let Some(first) = owners.first() else {
                continue;
            };
            match objects.get(ip) {
                None => {
                    tracing::warn!(service = %first, ip = %ip, "the ClusterIP is not allocated; repairing");
                    self.create_ip_address(*ip, first).await?;
                    report.ips_recorded.push(*ip);
                }
                Some((obj, rev)) => {
                    let parent = ServiceRef::from_ip_address(obj);
                    let labelled = obj
                        .pointer("/metadata/labels")
                        .and_then(|l| l.get(LABEL_MANAGED_BY))
                        .and_then(Value::as_str)
                        == Some(IP_ALLOCATOR_MANAGER);
                    if parent.as_ref().is_some_and(|p| owners.contains(p)) && labelled {
                        continue;
                    }
                    tracing::warn!(service = %first, ip = %ip, parent = ?parent, "the ClusterIP's IPAddress has a wrong reference; repairing");
                    match self
                        .store
                        .delete(&ip::ip_address_key(*ip), Some(*rev))
                        .await
                    {
                        Ok(_) | Err(StoreError::NotFound(_)) => {}
                        Err(StoreError::Conflict { .. }) => continue, // changed under us; next pass
                        Err(source) => return Err(RepairError::WriteIpAddress { ip: *ip, source }),
                    }
                    self.create_ip_address(*ip, first).await?;
                    report.ips_recorded.push(*ip);
                }
            }
        }

        // IPAddress objects → Services.
        let now = jiff::Timestamp::now();
        for (ip, (obj, rev)) in &objects {
            let managed = obj
                .pointer("/metadata/labels")
                .and_then(|l| l.get(LABEL_MANAGED_BY))
                .and_then(Value::as_str)
                == Some(IP_ALLOCATOR_MANAGER);
            if !managed || holders.contains_key(ip) {
                continue;
            }
            let created = obj
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let age = created
                .map(|c| now.duration_since(c))
                .unwrap_or(jiff::SignedDuration::MAX);
            if age
                < jiff::SignedDuration::try_from(ORPHAN_IP_GRACE)
                    .unwrap_or(jiff::SignedDuration::MAX)
            {
                continue; // maybe a create in flight
            }
            let parent = ServiceRef::from_ip_address(obj);
            tracing::warn!(ip = %ip, parent = ?parent, "IPAddress appears to have leaked: cleaning up");
            match self
                .store
                .delete(&ip::ip_address_key(*ip), Some(*rev))
                .await
            {
                Ok(_) => report.ips_freed.push(*ip),
                Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => {}
                Err(source) => return Err(RepairError::WriteIpAddress { ip: *ip, source }),
            }
        }
        Ok(())
    }

    async fn create_ip_address(&self, ip: Ipv4Addr, owner: &ServiceRef) -> Result<(), RepairError> {
        match self
            .store
            .create(&ip::ip_address_key(ip), ip::ip_address_object(ip, owner))
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(source) => Err(RepairError::WriteIpAddress { ip, source }),
        }
    }

    async fn repair_ports(
        &mut self,
        services: &[Value],
        report: &mut RepairReport,
    ) -> Result<(), RepairError> {
        let range = self.alloc.node_ports().range();
        let mut in_use: BTreeMap<u16, Vec<ServiceRef>> = BTreeMap::new();
        for svc in services {
            let owner = ServiceRef::of(svc);
            for p in spec::node_ports(svc) {
                if range.contains(i64::from(p)) {
                    in_use.entry(p).or_default().push(owner.clone());
                } else {
                    let msg = format!(
                        "the node port {p} of Service {owner} is not within the port range {range}; please recreate the Service"
                    );
                    tracing::warn!("{msg}");
                    report.problems.push(msg);
                }
            }
        }
        for (p, owners) in &in_use {
            // The same port twice in one Service is fine (TCP and UDP of one port number).
            let distinct: BTreeSet<String> = owners.iter().map(ToString::to_string).collect();
            if distinct.len() > 1 {
                let msg = format!(
                    "node port {p} was assigned to multiple services ({}); please recreate all but one",
                    distinct.into_iter().collect::<Vec<_>>().join(", ")
                );
                tracing::error!("{msg}");
                report.problems.push(msg);
            }
        }
        let (bitmap, _) = self
            .alloc
            .node_ports()
            .read()
            .await
            .map_err(|e| RepairError::NodePorts(e.into()))?;
        let missing: Vec<u16> = in_use
            .keys()
            .filter(|p| !bitmap.contains(p))
            .copied()
            .collect();
        let mut free = Vec::new();
        let mut leaks = HashMap::new();
        for p in bitmap.iter().filter(|p| !in_use.contains_key(p)) {
            let seen = self.port_leaks.get(p).copied().unwrap_or(0) + 1;
            if seen >= LEAK_PASSES {
                free.push(*p);
            } else {
                leaks.insert(*p, seen);
            }
        }
        self.port_leaks = leaks;
        if missing.is_empty() && free.is_empty() {
            return Ok(());
        }
        for p in &missing {
            tracing::warn!(port = p, "the node port is not allocated; repairing");
        }
        for p in &free {
            tracing::warn!(
                port = p,
                "the node port appears to have leaked: cleaning up"
            );
        }
        self.alloc
            .node_ports()
            .update(|used| {
                let mut changed = false;
                for p in &missing {
                    changed |= used.insert(*p);
                }
                for p in &free {
                    changed |= used.remove(p);
                }
                changed
            })
            .await
            .map_err(RepairError::NodePorts)?;
        report.ports_recorded = missing;
        report.ports_freed = free;
        Ok(())
    }
}

/// Every stored Service.
async fn list_services(store: &dyn Store) -> Result<Vec<Value>, StoreError> {
    let prefix = "/registry/services/";
    let mut out = Vec::new();
    let mut start_after = None;
    loop {
        let page = store
            .range(
                prefix,
                RangeOptions {
                    revision: None,
                    limit: Some(1000),
                    start_after: start_after.clone(),
                },
            )
            .await?;
        for kv in &page.kvs {
            match serde_json::from_slice::<Value>(&kv.value) {
                Ok(v) => out.push(v),
                Err(e) => {
                    tracing::error!(key = %kv.key, error = %e, "a stored Service is not JSON; skipped by the allocation repair")
                }
            }
        }
        start_after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more || start_after.is_none() {
            return Ok(out);
        }
    }
}

/// Runs a pass now and then every `interval` until cancelled, logging what each pass fixed.
pub async fn run(mut repair: Repair, interval: Duration, cancel: CancellationToken) {
    loop {
        match repair.run_once().await {
            Ok(report) if report != RepairReport::default() => {
                tracing::info!(?report, "service allocation repair fixed or found problems");
            }
            Ok(_) => tracing::debug!("service allocation repair: all consistent"),
            Err(e) => {
                tracing::warn!(error = %e, "service allocation repair failed; retrying next pass")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
