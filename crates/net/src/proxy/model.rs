//! What the service proxy is told: Services, EndpointSlices and the node, in the proxy's own
//! words (the agent translates from the Kubernetes API; this crate does not know it).
//!
//! Endpoint selection follows kube-proxy's `CategorizeEndpoints` (pkg/proxy/topology.go): ready
//! endpoints serve traffic; only when a Service has none do serving-and-terminating endpoints
//! take over, so connections still land during a rolling update instead of being rejected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Errors in the proxy's configuration; fixing the flag or field named is the only remedy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("invalid CIDR {value:?}: {reason}")]
    InvalidCidr { value: String, reason: &'static str },
    #[error("the node name for the service proxy must not be empty")]
    EmptyNodeName,
}

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The transport protocols a Service port can use (core/v1 `Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The name nftables knows the protocol by (`meta l4proto tcp`).
    pub fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// An IPv4 prefix, such as the cluster's pod CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// A prefix; host bits of `addr` are cleared so equal networks compare equal.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, ModelError> {
        if prefix_len > 32 {
            return Err(ModelError::InvalidCidr {
                value: format!("{addr}/{prefix_len}"),
                reason: "the prefix length must be at most 32",
            });
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        Ok(Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
        })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| ModelError::InvalidCidr {
            value: s.to_string(),
            reason,
        };
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected ADDRESS/PREFIX, such as 10.42.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid("the address is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| invalid("the prefix length is not a number"))?;
        Ipv4Cidr::new(addr, len)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// The node the proxy runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The Node's name; endpoints with this `nodeName` are local (for the Local traffic policies).
    pub node_name: String,
    /// Addresses NodePorts answer on (kube-proxy's `--nodeport-addresses`).
    pub node_ips: Vec<Ipv4Addr>,
    /// The pod network. Traffic to a ClusterIP from outside it is masqueraded, and for
    /// `externalTrafficPolicy: Local` traffic from inside it is treated as cluster traffic, as
    /// kube-proxy does with `--cluster-cidr`. Empty: no ClusterIP masquerade.
    pub cluster_cidrs: Vec<Ipv4Cidr>,
}

impl NodeConfig {
    pub fn new(
        node_name: impl Into<String>,
        node_ips: Vec<Ipv4Addr>,
        cluster_cidrs: Vec<Ipv4Cidr>,
    ) -> Result<Self, ModelError> {
        let node_name = node_name.into();
        if node_name.is_empty() {
            return Err(ModelError::EmptyNodeName);
        }
        Ok(NodeConfig {
            node_name,
            node_ips,
            cluster_cidrs,
        })
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `spec.ports[].name`; matched against EndpointSlice port names (may be empty).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// Set for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
}

/// A Service as the dataplane needs it. Headless and ExternalName Services have no cluster IPs
/// and are simply not given to the proxy (or given with none and no other destination).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    pub cluster_ips: Vec<Ipv4Addr>,
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP` with its `timeoutSeconds` (default 10800).
    pub session_affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local` (NodePort, LoadBalancer and external IPs).
    pub external_traffic_local: bool,
    /// `internalTrafficPolicy: Local` (ClusterIP).
    pub internal_traffic_local: bool,
}

/// A port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// One endpoint of an EndpointSlice, its conditions already defaulted as the API documents
/// them (ready: unset means true; serving: unset means ready; terminating: unset means false).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Only the first address is used, as kube-proxy does.
    pub addresses: Vec<Ipv4Addr>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
}

/// An EndpointSlice (discovery.k8s.io/v1) belonging to `service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// From the `kubernetes.io/service-name` label.
    pub service: ServiceName,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// One backend of one Service port: where its traffic is DNATed to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub local: bool,
}

/// The backends of one Service port, split as kube-proxy's `CategorizeEndpoints` does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CategorizedBackends {
    /// For the Cluster traffic policy.
    pub cluster: Vec<Backend>,
    /// For the Local traffic policies (only computed when the Service uses one).
    pub local: Vec<Backend>,
}

impl CategorizedBackends {
    /// Whether any endpoint can take traffic; without one, traffic is rejected rather than
    /// dropped so clients fail fast.
    pub fn any(&self) -> bool {
        !self.cluster.is_empty() || !self.local.is_empty()
    }
}

/// Collects the backends of `port` of a Service from its slices, deduplicated by address and
/// port (an endpoint can appear in two slices while the controller moves it; the first ready
/// copy wins, like kube-proxy's endpoint slice cache).
pub fn backends_for_port<'a>(
    port: &ServicePort,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_name: &str,
) -> Vec<Backend> {
    let mut by_addr: BTreeMap<(Ipv4Addr, u16), Backend> = BTreeMap::new();
    for slice in slices {
        let Some(slice_port) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(&ip) = endpoint.addresses.first() else {
                continue;
            };
            let backend = Backend {
                ip,
                port: slice_port.port,
                ready: endpoint.ready,
                serving: endpoint.serving,
                terminating: endpoint.terminating,
                local: endpoint.node_name.as_deref() == Some(node_name),
            };
            by_addr
                .entry((ip, slice_port.port))
                .and_modify(|existing| {
                    if !existing.ready && backend.ready {
                        *existing = backend.clone();
                    }
                })
                .or_insert(backend);
        }
    }
    by_addr.into_values().collect()
}

/// Splits backends into the cluster and local sets (kube-proxy's `CategorizeEndpoints`, without
/// topology hints): ready ones, or serving-and-terminating ones when no ready one exists.
pub fn categorize(backends: &[Backend], need_local: bool) -> CategorizedBackends {
    let pick = |filter: &dyn Fn(&Backend) -> bool| -> Vec<Backend> {
        let ready: Vec<Backend> = backends
            .iter()
            .filter(|b| b.ready && filter(b))
            .cloned()
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        backends
            .iter()
            .filter(|b| b.serving && b.terminating && filter(b))
            .cloned()
            .collect()
    };
    CategorizedBackends {
        cluster: pick(&|_| true),
        local: if need_local {
            pick(&|b| b.local)
        } else {
            Vec::new()
        },
    }
}

/// Every Service and EndpointSlice the proxy knows, keyed as the API keys them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    pub services: BTreeMap<ServiceName, Service>,
    /// Keyed by the slice's namespace and name.
    pub slices: BTreeMap<(String, String), EndpointSlice>,
}

impl ClusterState {
    /// The slices of each Service, for rule generation.
    pub fn slices_by_service(&self) -> BTreeMap<&ServiceName, Vec<&EndpointSlice>> {
        let mut out: BTreeMap<&ServiceName, Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in self.slices.values() {
            out.entry(&slice.service).or_default().push(slice);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: [u8; 4], ready: bool, serving: bool, terminating: bool, node: &str) -> Endpoint {
        Endpoint {
            addresses: vec![Ipv4Addr::from(ip)],
            ready,
            serving,
            terminating,
            node_name: Some(node.to_string()),
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            service: ServiceName::new("default", "web"),
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints,
        }
    }

    fn http() -> ServicePort {
        ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
        }
    }

    #[test]
    fn cidr_parses_and_normalizes() {
        let c: Ipv4Cidr = "10.42.3.7/16".parse().expect("parse");
        assert_eq!(c.to_string(), "10.42.0.0/16");
        assert!(c.contains(Ipv4Addr::new(10, 42, 200, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 43, 0, 1)));
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("::1/64".parse::<Ipv4Cidr>().is_err());
        let all: Ipv4Cidr = "1.2.3.4/0".parse().expect("parse");
        assert!(all.contains(Ipv4Addr::new(200, 1, 1, 1)));
    }

    #[test]
    fn ports_match_by_name_and_protocol() {
        let mut s = slice(vec![ep([10, 42, 0, 2], true, true, false, "n1")]);
        s.ports[0].name = "other".into();
        assert!(backends_for_port(&http(), [&s], "n1").is_empty());
        s.ports[0].name = "http".into();
        s.ports[0].protocol = Protocol::Udp;
        assert!(backends_for_port(&http(), [&s], "n1").is_empty());
        s.ports[0].protocol = Protocol::Tcp;
        let b = backends_for_port(&http(), [&s], "n1");
        assert_eq!(b.len(), 1);
        assert_eq!(
            (b[0].ip, b[0].port, b[0].local),
            (Ipv4Addr::new(10, 42, 0, 2), 8080, true)
        );
    }

    #[test]
    fn duplicate_endpoints_across_slices_prefer_ready() {
        let a = slice(vec![ep([10, 42, 0, 2], false, false, false, "n1")]);
        let b = slice(vec![ep([10, 42, 0, 2], true, true, false, "n1")]);
        let backends = backends_for_port(&http(), [&a, &b], "n1");
        assert_eq!(backends.len(), 1);
        assert!(backends[0].ready);
    }

    #[test]
    fn terminating_serving_endpoints_only_when_none_ready() {
        let s = slice(vec![
            ep([10, 42, 0, 2], true, true, false, "n1"),
            ep([10, 42, 0, 3], false, true, true, "n2"),
            ep([10, 42, 0, 4], false, false, true, "n2"),
        ]);
        let c = categorize(&backends_for_port(&http(), [&s], "n2"), true);
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip, Ipv4Addr::new(10, 42, 0, 2));
        // No ready local endpoint on n2, so the serving terminating one is used locally.
        assert_eq!(c.local.len(), 1);
        assert_eq!(c.local[0].ip, Ipv4Addr::new(10, 42, 0, 3));

        let s = slice(vec![
            ep([10, 42, 0, 3], false, true, true, "n2"),
            ep([10, 42, 0, 4], false, false, true, "n2"),
            ep([10, 42, 0, 5], false, false, false, "n2"),
        ]);
        let c = categorize(&backends_for_port(&http(), [&s], "n1"), false);
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip, Ipv4Addr::new(10, 42, 0, 3));
        assert!(c.local.is_empty());
        assert!(c.any());
        assert!(!categorize(&[], true).any());
    }
}
