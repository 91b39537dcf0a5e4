//! [`ServiceProxy`]: holds the Services and EndpointSlices it was told about and keeps Skiff's
//! nftables table in step with them, as kube-proxy's nftables proxier does with partial syncs.
//! Each Service's part of the ruleset is built on its own; a change marks its Service dirty, and
//! a sync rebuilds only the dirty parts and sends the kernel the difference from what it applied
//! last. The first sync, the one after any failure, and the periodic resync are full syncs from
//! what the kernel lists.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::model::{ClusterState, EndpointSlice, NodeConfig, Service, ServiceName};
use super::nft::{Nft, NftError};
use super::rules::{self, Ruleset};
use super::transaction;

/// Errors from a sync. Retryable: the next sync is a full one.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("listing Skiff's nftables table before a full sync: {source}")]
    List {
        #[source]
        source: NftError,
    },
    #[error("applying the {kind} nftables transaction ({lines} commands): {source}")]
    Apply {
        kind: SyncKind,
        lines: usize,
        #[source]
        source: NftError,
    },
}

/// Which kind of transaction a sync ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// The whole table rewritten (first sync, resync, or recovery).
    Full,
    /// Only the changes since the last sync.
    Partial,
    /// Nothing had changed; nft was not run.
    Unchanged,
}

impl std::fmt::Display for SyncKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncKind::Full => "full",
            SyncKind::Partial => "partial",
            SyncKind::Unchanged => "unchanged",
        })
    }
}

/// Counters for /metrics (names follow kube-proxy's `sync_proxy_rules_*` family).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyMetrics {
    /// Syncs that ran nft successfully.
    pub syncs_total: u64,
    pub full_syncs_total: u64,
    pub partial_syncs_total: u64,
    pub sync_failures_total: u64,
    /// Duration of the last sync that ran nft, including building the ruleset.
    pub last_sync_duration: Duration,
    pub last_sync_kind: Option<SyncKind>,
    /// Commands in the last transaction sent.
    pub last_sync_commands: usize,
    /// Rules, chains and map/set elements now programmed.
    pub rules: usize,
    pub chains: usize,
    pub elements: usize,
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub kind: SyncKind,
    pub commands: usize,
    pub duration: Duration,
}

/// What the kernel holds, as far as we know: the base and each Service's part.
struct Applied {
    base: Ruleset,
    services: HashMap<ServiceName, Ruleset>,
    rules: usize,
    chains: usize,
    elements: usize,
}

/// The service proxy of one node.
pub struct ServiceProxy<N: Nft> {
    node: NodeConfig,
    nft: N,
    state: ClusterState,
    /// The slices of each Service, so one Service's part can be rebuilt alone.
    slice_index: BTreeMap<ServiceName, BTreeSet<(String, String)>>,
    /// Services whose part may have changed since the last sync.
    dirty: BTreeSet<ServiceName>,
    /// None forces a full sync.
    applied: Option<Applied>,
    metrics: ProxyMetrics,
}

impl<N: Nft> ServiceProxy<N> {
    pub fn new(node: NodeConfig, nft: N) -> Self {
        ServiceProxy {
            node,
            nft,
            state: ClusterState::default(),
            slice_index: BTreeMap::new(),
            dirty: BTreeSet::new(),
            applied: None,
            metrics: ProxyMetrics::default(),
        }
    }

    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    pub fn nft(&self) -> &N {
        &self.nft
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// Whether a change is waiting for a sync.
    pub fn has_pending_changes(&self) -> bool {
        !self.dirty.is_empty() || self.applied.is_none()
    }

    /// Changes the node's name, addresses or pod network (e.g. after a Node update); the next
    /// sync is a full one.
    pub fn set_node(&mut self, node: NodeConfig) {
        if node != self.node {
            self.node = node;
            self.applied = None;
        }
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, name: ServiceName, service: Service) {
        if self.state.services.get(&name) != Some(&service) {
            self.state.services.insert(name.clone(), service);
            self.dirty.insert(name);
        }
    }

    pub fn remove_service(&mut self, name: &ServiceName) {
        if self.state.services.remove(name).is_some() {
            self.dirty.insert(name.clone());
        }
    }

    /// Adds or replaces the EndpointSlice `namespace/name`.
    pub fn upsert_endpoint_slice(&mut self, namespace: &str, name: &str, slice: EndpointSlice) {
        let key = (namespace.to_string(), name.to_string());
        if self.state.slices.get(&key) == Some(&slice) {
            return;
        }
        self.unindex_slice(&key);
        self.slice_index
            .entry(slice.service.clone())
            .or_default()
            .insert(key.clone());
        self.dirty.insert(slice.service.clone());
        self.state.slices.insert(key, slice);
    }

    pub fn remove_endpoint_slice(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        self.unindex_slice(&key);
        self.state.slices.remove(&key);
    }

    fn unindex_slice(&mut self, key: &(String, String)) {
        if let Some(old) = self.state.slices.get(key) {
            let service = old.service.clone();
            if let Some(keys) = self.slice_index.get_mut(&service) {
                keys.remove(key);
                if keys.is_empty() {
                    self.slice_index.remove(&service);
                }
            }
            self.dirty.insert(service);
        }
    }

    /// Replaces everything known (after a watch re-list); only Services whose part changed
    /// reach the kernel.
    pub fn replace_state(&mut self, state: ClusterState) {
        self.dirty.extend(self.state.services.keys().cloned());
        self.dirty.extend(state.services.keys().cloned());
        self.slice_index.clear();
        for (key, slice) in &state.slices {
            self.slice_index
                .entry(slice.service.clone())
                .or_default()
                .insert(key.clone());
        }
        self.state = state;
    }

    /// Forgets what was applied, so the next sync is a full one.
    pub fn request_full_sync(&mut self) {
        self.applied = None;
    }

    /// The current part of Service `name` (empty once it is gone).
    fn part(&self, name: &ServiceName) -> Ruleset {
        let Some(service) = self.state.services.get(name) else {
            return Ruleset::default();
        };
        let slices: Vec<&EndpointSlice> = self
            .slice_index
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|key| self.state.slices.get(key))
            .collect();
        rules::service_rules(&self.node, name, service, &slices)
    }

    /// Brings the table in step with the current state: a partial sync (only the Services that
    /// changed are rebuilt and diffed) when what the kernel holds is known, a full one
    /// otherwise.
    pub fn sync(&mut self) -> Result<SyncReport, ProxyError> {
        let started = Instant::now();
        let base = rules::base(&self.node);
        let Some(mut applied) = self.applied.take() else {
            return self.sync_full(started, base);
        };
        let mut old = applied.base.clone();
        let mut new = base.clone();
        let mut parts = Vec::with_capacity(self.dirty.len());
        for name in &self.dirty {
            if let Some(part) = applied.services.get(name) {
                old.merge(part);
            }
            let part = self.part(name);
            new.merge(&part);
            parts.push((name.clone(), part));
        }
        let script = match transaction::diff(&old, &new) {
            Ok(script) => script,
            Err(transaction::NeedsFullSync::DeclarationChanged(what)) => {
                tracing::info!(%what, "declaration changed; doing a full nftables sync");
                return self.sync_full(started, base);
            }
        };
        if !script.is_empty() {
            self.apply(SyncKind::Partial, &script)?;
        }
        self.dirty.clear();
        let count = |rs: &Ruleset| (rs.rule_count(), rs.chains.len(), rs.element_count());
        let mut totals = (applied.rules, applied.chains, applied.elements);
        let mut adjust = |rs: &Ruleset, sign: i64| {
            let (r, c, e) = count(rs);
            let add = |t: usize, n: usize| (t as i64 + sign * n as i64).max(0) as usize;
            totals = (add(totals.0, r), add(totals.1, c), add(totals.2, e));
        };
        adjust(&applied.base, -1);
        adjust(&base, 1);
        for (name, part) in parts {
            if let Some(before) = applied.services.get(&name) {
                adjust(before, -1);
            }
            adjust(&part, 1);
            if part == Ruleset::default() {
                applied.services.remove(&name);
            } else {
                applied.services.insert(name, part);
            }
        }
        applied.base = base;
        (applied.rules, applied.chains, applied.elements) = totals;
        let kind = if script.is_empty() {
            SyncKind::Unchanged
        } else {
            SyncKind::Partial
        };
        let report = SyncReport {
            kind,
            commands: script.lines().count(),
            duration: started.elapsed(),
        };
        self.applied = Some(applied);
        if kind != SyncKind::Unchanged {
            self.record(&report);
        }
        Ok(report)
    }

    /// A full sync regardless of what was applied (the periodic resync, which also repairs
    /// anything changed behind our back).
    pub fn full_sync(&mut self) -> Result<SyncReport, ProxyError> {
        self.applied = None;
        self.sync()
    }

    fn sync_full(&mut self, started: Instant, base: Ruleset) -> Result<SyncReport, ProxyError> {
        let mut services = HashMap::with_capacity(self.state.services.len());
        let mut desired = base.clone();
        for name in self.state.services.keys() {
            let part = self.part(name);
            desired.merge(&part);
            services.insert(name.clone(), part);
        }
        let existing = match self.nft.list() {
            Ok(existing) => existing,
            Err(source) => {
                self.metrics.sync_failures_total += 1;
                return Err(ProxyError::List { source });
            }
        };
        let script = transaction::full(&desired, &existing);
        self.apply(SyncKind::Full, &script)?;
        self.dirty.clear();
        self.applied = Some(Applied {
            base,
            services,
            rules: desired.rule_count(),
            chains: desired.chains.len(),
            elements: desired.element_count(),
        });
        let report = SyncReport {
            kind: SyncKind::Full,
            commands: script.lines().count(),
            duration: started.elapsed(),
        };
        self.record(&report);
        Ok(report)
    }

    fn apply(&mut self, kind: SyncKind, script: &str) -> Result<(), ProxyError> {
        self.nft.apply(script).map_err(|source| {
            // The transaction changed nothing, but what the kernel holds is now in doubt.
            self.applied = None;
            self.metrics.sync_failures_total += 1;
            ProxyError::Apply {
                kind,
                lines: script.lines().count(),
                source,
            }
        })
    }

    fn record(&mut self, report: &SyncReport) {
        let m = &mut self.metrics;
        m.syncs_total += 1;
        match report.kind {
            SyncKind::Full => m.full_syncs_total += 1,
            _ => m.partial_syncs_total += 1,
        }
        m.last_sync_duration = report.duration;
        m.last_sync_kind = Some(report.kind);
        m.last_sync_commands = report.commands;
        if let Some(applied) = &self.applied {
            m.rules = applied.rules;
            m.chains = applied.chains;
            m.elements = applied.elements;
        }
        tracing::debug!(kind = %report.kind, commands = report.commands, duration = ?report.duration, "synced service proxy rules");
    }

    /// Removes Skiff's table (on shutdown with cleanup, like `kube-proxy --cleanup`).
    pub fn cleanup(&mut self) -> Result<(), NftError> {
        self.applied = None;
        super::nft::delete_table(&self.nft)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::model::{Endpoint, EndpointPort, Protocol, ServicePort};
    use super::super::nft::RecordingNft;
    use super::super::transaction::TableObjects;
    use super::*;

    fn node() -> NodeConfig {
        NodeConfig::new("n1", vec![Ipv4Addr::new(192, 168, 1, 10)], vec![]).expect("node")
    }

    fn svc() -> Service {
        Service {
            cluster_ips: vec![Ipv4Addr::new(10, 43, 0, 10)],
            ports: vec![ServicePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
            }],
            ..Service::default()
        }
    }

    fn slice(ips: &[[u8; 4]]) -> EndpointSlice {
        EndpointSlice {
            service: ServiceName::new("default", "web"),
            ports: vec![EndpointPort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints: ips
                .iter()
                .map(|ip| Endpoint {
                    addresses: vec![Ipv4Addr::from(*ip)],
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: None,
                })
                .collect(),
        }
    }

    #[test]
    fn first_sync_is_full_then_partial_then_unchanged() {
        let mut p = ServiceProxy::new(node(), RecordingNft::new());
        p.upsert_service(ServiceName::new("default", "web"), svc());
        p.upsert_endpoint_slice("default", "web-1", slice(&[[10, 42, 0, 2], [10, 42, 0, 3]]));
        assert_eq!(p.sync().expect("sync").kind, SyncKind::Full);
        p.upsert_endpoint_slice("default", "web-1", slice(&[[10, 42, 0, 2]]));
        let r = p.sync().expect("sync");
        assert_eq!(r.kind, SyncKind::Partial);
        assert_eq!(p.sync().expect("sync").kind, SyncKind::Unchanged);
        let scripts = p.nft().scripts();
        assert_eq!(scripts.len(), 2);
        assert!(scripts[0].starts_with("add table ip skiff\n"));
        assert_eq!(
            scripts[1],
            "flush chain ip skiff endpoint-default/web/tcp/__10.42.0.3/8080\n\
             flush chain ip skiff service-default/web/tcp/\n\
             add rule ip skiff service-default/web/tcp/ goto endpoint-default/web/tcp/__10.42.0.2/8080\n\
             delete chain ip skiff endpoint-default/web/tcp/__10.42.0.3/8080\n"
        );
        let m = p.metrics();
        assert_eq!(
            (m.syncs_total, m.full_syncs_total, m.partial_syncs_total),
            (2, 1, 1)
        );
        assert_eq!(m.last_sync_commands, 4);
        assert!(m.rules > 0 && m.chains > 0);
    }

    #[test]
    fn a_failed_apply_forces_a_full_sync_next() {
        let mut p = ServiceProxy::new(node(), RecordingNft::new());
        p.upsert_service(ServiceName::new("default", "web"), svc());
        p.sync().expect("sync");
        p.upsert_endpoint_slice("default", "web-1", slice(&[[10, 42, 0, 2]]));
        p.nft().fail_next();
        assert!(matches!(
            p.sync(),
            Err(ProxyError::Apply {
                kind: SyncKind::Partial,
                ..
            })
        ));
        assert_eq!(p.metrics().sync_failures_total, 1);
        p.nft().set_existing(TableObjects {
            chains: ["services".to_string()].into_iter().collect(),
            sets: Default::default(),
        });
        assert_eq!(p.sync().expect("sync").kind, SyncKind::Full);
        let last = p.nft().scripts().pop().expect("script");
        assert!(last.contains("flush chain ip skiff services\n"));
    }

    #[test]
    fn removing_a_service_removes_its_chains() {
        let mut p = ServiceProxy::new(node(), RecordingNft::new());
        let name = ServiceName::new("default", "web");
        p.upsert_service(name.clone(), svc());
        p.upsert_endpoint_slice("default", "web-1", slice(&[[10, 42, 0, 2]]));
        p.sync().expect("sync");
        p.remove_service(&name);
        p.sync().expect("sync");
        let last = p.nft().scripts().pop().expect("script");
        assert!(last.contains("delete element ip skiff service-ips { 10.43.0.10 . tcp . 80 : goto service-default/web/tcp/ }"));
        assert!(last.contains("delete element ip skiff cluster-ips { 10.43.0.10 }"));
        assert!(last.contains("delete chain ip skiff service-default/web/tcp/\n"));
        assert!(last.contains("delete chain ip skiff endpoint-default/web/tcp/__10.42.0.2/8080\n"));
    }
}
