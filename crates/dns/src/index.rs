//! The in-memory view of the cluster the DNS answers come from: Services, their EndpointSlices
//! and Namespaces, folded into one precomputed [`ServiceView`] per Service plus a reverse map
//! from IP to names. Writers are the watch loops (one object at a time, or a whole relist);
//! readers are queries, which take a read lock only long enough to clone an `Arc`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::name::dashed;

/// The label tying an EndpointSlice to its Service (discovery.k8s.io/v1).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `(namespace, name)` of a Service.
pub type ServiceKey = (String, String);

/// How a Service is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAddress {
    /// A/AAAA with the cluster IPs (both families when dual-stack).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: A/AAAA with the endpoint IPs.
    Headless,
    /// `type: ExternalName`: a CNAME to this name (lowercase, no trailing dot).
    ExternalName(String),
    /// No cluster IP allocated yet: the name exists but has no records.
    Unallocated,
}

/// A port as DNS sees it: SRV needs a name; protocol lowercase (`tcp`, `udp`, `sctp`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortView {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

/// One published endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointView {
    pub ip: IpAddr,
    /// `hostname` from the EndpointSlice, else the dashed IP (CoreDNS's endpoint name).
    pub host: String,
    /// The slice's ports (target ports) this endpoint serves.
    pub ports: Arc<[PortView]>,
}

/// Everything DNS needs to answer for one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    pub address: ServiceAddress,
    pub ports: Vec<PortView>,
    /// Endpoints published in DNS: ready ones (`conditions.ready` unset counts as ready, per the
    /// EndpointSlice API) and, with `publishNotReadyAddresses`, the rest too. Deduplicated by
    /// IP (an endpoint can briefly sit in two slices while the controller moves it).
    pub endpoints: Vec<EndpointView>,
}

#[derive(Clone, Debug)]
struct ServiceSpecView {
    address: ServiceAddress,
    ports: Vec<PortView>,
    publish_not_ready: bool,
}

#[derive(Clone, Debug)]
struct EndpointSource {
    ip: IpAddr,
    hostname: Option<String>,
    ready: bool,
}

#[derive(Clone, Debug)]
struct SliceView {
    service: String,
    ports: Arc<[PortView]>,
    endpoints: Vec<EndpointSource>,
}

#[derive(Default)]
struct IndexState {
    services: HashMap<ServiceKey, ServiceSpecView>,
    /// `(namespace, slice name)` → slice.
    slices: HashMap<(String, String), SliceView>,
    slices_by_service: HashMap<ServiceKey, BTreeSet<String>>,
    views: HashMap<ServiceKey, Arc<ServiceView>>,
    /// IP → fully-qualified names (relative to the cluster domain: `web.default.svc`), for PTR.
    reverse: HashMap<IpAddr, BTreeSet<String>>,
    /// What each Service contributed to `reverse`, so a change can take it back.
    reverse_by_service: HashMap<ServiceKey, Vec<(IpAddr, String)>>,
    namespaces: HashSet<String>,
    synced_kinds: u8,
    serial: u32,
}

/// The kinds whose first list must finish before NXDOMAIN can be trusted.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Service = 1,
    EndpointSlice = 2,
    Namespace = 4,
}

const ALL_KINDS: u8 = Kind::Service as u8 | Kind::EndpointSlice as u8 | Kind::Namespace as u8;

/// The shared index. Cheap to clone (an `Arc`).
#[derive(Clone, Default)]
pub struct ClusterIndex {
    state: Arc<RwLock<IndexState>>,
}

impl ClusterIndex {
    pub fn new() -> Self {
        Self::default()
    }

    // A poisoned lock only means a writer panicked mid-update; the maps are still
    // structurally valid, and the next event or relist repairs their content.
    fn read(&self) -> RwLockReadGuard<'_, IndexState> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, IndexState> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The Service's answers, `None` when no such Service exists.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<ServiceView>> {
        self.read()
            .views
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Names (relative to the cluster domain) whose address is `ip`.
    pub fn reverse(&self, ip: IpAddr) -> Vec<String> {
        self.read()
            .reverse
            .get(&ip)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn namespace_exists(&self, namespace: &str) -> bool {
        self.read().namespaces.contains(namespace)
    }

    /// True once Services, EndpointSlices and Namespaces have each been listed once. Before
    /// that a missing name may only be not-yet-seen: CoreDNS answers SERVFAIL, not NXDOMAIN.
    pub fn synced(&self) -> bool {
        self.read().synced_kinds == ALL_KINDS
    }

    /// The SOA serial: bumped on every change so secondaries/caches could tell (CoreDNS uses the
    /// time of the last change).
    pub fn serial(&self) -> u32 {
        self.read().serial
    }

    pub fn mark_synced(&self, kind: Kind) {
        self.write().synced_kinds |= kind as u8;
    }

    pub fn apply_service(&self, service: &Service) {
        let Some(key) = key_of(&service.metadata) else {
            return;
        };
        let mut state = self.write();
        state.services.insert(key.clone(), service_spec(service));
        state.rebuild(&key);
    }

    pub fn delete_service(&self, service: &Service) {
        let Some(key) = key_of(&service.metadata) else {
            return;
        };
        let mut state = self.write();
        state.services.remove(&key);
        state.rebuild(&key);
    }

    /// Replaces every Service with a fresh list (after a watch restart).
    pub fn replace_services(&self, services: &[Service]) {
        let mut state = self.write();
        let old: Vec<ServiceKey> = state.services.keys().cloned().collect();
        state.services = services
            .iter()
            .filter_map(|s| Some((key_of(&s.metadata)?, service_spec(s))))
            .collect();
        let mut touched: BTreeSet<ServiceKey> = old.into_iter().collect();
        touched.extend(state.services.keys().cloned());
        for key in touched {
            state.rebuild(&key);
        }
    }

    pub fn apply_slice(&self, slice: &EndpointSlice) {
        let Some((namespace, name)) = key_of(&slice.metadata) else {
            return;
        };
        let mut state = self.write();
        let old = state.remove_slice(&namespace, &name);
        let new = slice_view(slice);
        let mut touched = BTreeSet::new();
        touched.extend(old);
        if let Some(view) = new {
            touched.insert((namespace.clone(), view.service.clone()));
            state.insert_slice(namespace, name, view);
        }
        for key in touched {
            state.rebuild(&key);
        }
    }

    pub fn delete_slice(&self, slice: &EndpointSlice) {
        let Some((namespace, name)) = key_of(&slice.metadata) else {
            return;
        };
        let mut state = self.write();
        if let Some(key) = state.remove_slice(&namespace, &name) {
            state.rebuild(&key);
        }
    }

    pub fn replace_slices(&self, slices: &[EndpointSlice]) {
        let mut state = self.write();
        let mut touched: BTreeSet<ServiceKey> = state.slices_by_service.keys().cloned().collect();
        state.slices.clear();
        state.slices_by_service.clear();
        for slice in slices {
            let Some((namespace, name)) = key_of(&slice.metadata) else {
                continue;
            };
            if let Some(view) = slice_view(slice) {
                touched.insert((namespace.clone(), view.service.clone()));
                state.insert_slice(namespace, name, view);
            }
        }
        for key in touched {
            state.rebuild(&key);
        }
    }

    pub fn apply_namespace(&self, namespace: &Namespace) {
        if let Some(name) = &namespace.metadata.name {
            let mut state = self.write();
            state.namespaces.insert(name.clone());
            state.bump();
        }
    }

    pub fn delete_namespace(&self, namespace: &Namespace) {
        if let Some(name) = &namespace.metadata.name {
            let mut state = self.write();
            state.namespaces.remove(name);
            state.bump();
        }
    }

    pub fn replace_namespaces(&self, namespaces: &[Namespace]) {
        let mut state = self.write();
        state.namespaces = namespaces
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        state.bump();
    }
}

impl IndexState {
    fn bump(&mut self) {
        self.serial = self.serial.wrapping_add(1);
    }

    /// Removes a slice, returning the Service it belonged to.
    fn remove_slice(&mut self, namespace: &str, name: &str) -> Option<ServiceKey> {
        let old = self
            .slices
            .remove(&(namespace.to_string(), name.to_string()))?;
        let key = (namespace.to_string(), old.service);
        if let Some(names) = self.slices_by_service.get_mut(&key) {
            names.remove(name);
            if names.is_empty() {
                self.slices_by_service.remove(&key);
            }
        }
        Some(key)
    }

    fn insert_slice(&mut self, namespace: String, name: String, view: SliceView) {
        self.slices_by_service
            .entry((namespace.clone(), view.service.clone()))
            .or_default()
            .insert(name.clone());
        self.slices.insert((namespace, name), view);
    }

    /// Recomputes one Service's view and its reverse entries from the current maps.
    fn rebuild(&mut self, key: &ServiceKey) {
        self.bump();
        for (ip, name) in self.reverse_by_service.remove(key).unwrap_or_default() {
            if let Some(names) = self.reverse.get_mut(&ip) {
                names.remove(&name);
                if names.is_empty() {
                    self.reverse.remove(&ip);
                }
            }
        }
        let Some(spec) = self.services.get(key) else {
            self.views.remove(key);
            return;
        };
        let mut endpoints: Vec<EndpointView> = Vec::new();
        let mut seen = HashSet::new();
        for slice_name in self.slices_by_service.get(key).into_iter().flatten() {
            let Some(slice) = self.slices.get(&(key.0.clone(), slice_name.clone())) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                if !(endpoint.ready || spec.publish_not_ready) || !seen.insert(endpoint.ip) {
                    continue;
                }
                endpoints.push(EndpointView {
                    ip: endpoint.ip,
                    host: endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| dashed(endpoint.ip)),
                    ports: slice.ports.clone(),
                });
            }
        }
        // A stable order makes answers reproducible; clients that want spread shuffle anyway.
        endpoints.sort_by_key(|e| e.ip);

        let (namespace, service) = key;
        let mut contributed = Vec::new();
        if let ServiceAddress::ClusterIp(ips) = &spec.address {
            for ip in ips {
                contributed.push((*ip, format!("{service}.{namespace}.svc")));
            }
        }
        // CoreDNS answers PTR for any Service's endpoint addresses, named the way the
        // headless records name them.
        for endpoint in &endpoints {
            contributed.push((
                endpoint.ip,
                format!("{}.{service}.{namespace}.svc", endpoint.host),
            ));
        }
        for (ip, name) in &contributed {
            self.reverse.entry(*ip).or_default().insert(name.clone());
        }
        self.reverse_by_service.insert(key.clone(), contributed);
        self.views.insert(
            key.clone(),
            Arc::new(ServiceView {
                address: spec.address.clone(),
                ports: spec.ports.clone(),
                endpoints,
            }),
        );
    }
}

fn key_of(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ServiceKey> {
    Some((metadata.namespace.clone()?, metadata.name.clone()?))
}

fn service_spec(service: &Service) -> ServiceSpecView {
    let spec = service.spec.clone().unwrap_or_default();
    let address = if spec.type_.as_deref() == Some("ExternalName") {
        match spec.external_name.as_deref().map(str::trim) {
            Some(target) if !target.is_empty() => {
                ServiceAddress::ExternalName(target.trim_end_matches('.').to_ascii_lowercase())
            }
            _ => ServiceAddress::Unallocated,
        }
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceAddress::Headless
    } else {
        // clusterIPs holds both families for dual-stack; older objects may only have clusterIP.
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                spec.cluster_ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok()),
            );
        }
        if ips.is_empty() {
            ServiceAddress::Unallocated
        } else {
            ServiceAddress::ClusterIp(ips)
        }
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            Some(PortView {
                name: port
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())?
                    .to_ascii_lowercase(),
                protocol: port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase(),
                port: u16::try_from(port.port).ok()?,
            })
        })
        .collect();
    ServiceSpecView {
        address,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    }
}

fn slice_view(slice: &EndpointSlice) -> Option<SliceView> {
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))?
        .clone();
    // FQDN slices carry names, not addresses; DNS does not publish them.
    if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
        return None;
    }
    let ports: Vec<PortView> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            Some(PortView {
                name: port
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())?
                    .to_ascii_lowercase(),
                protocol: port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase(),
                port: u16::try_from(port.port?).ok()?,
            })
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .flat_map(|endpoint| {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let hostname = endpoint
                .hostname
                .clone()
                .filter(|h| !h.is_empty())
                .map(|h| h.to_ascii_lowercase());
            // Each address of an endpoint is a separate record; in practice there is one.
            endpoint.addresses.iter().filter_map(move |address| {
                Some(EndpointSource {
                    ip: address.parse().ok()?,
                    hostname: hostname.clone(),
                    ready,
                })
            })
        })
        .collect();
    Some(SliceView {
        service,
        ports: ports.into(),
        endpoints,
    })
}
