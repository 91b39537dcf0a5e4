//! The ruleset: Services and endpoints turned into the chains, sets and map elements of Skiff's
//! own nftables table, laid out like kube-proxy's nftables mode (pkg/proxy/nftables):
//!
//! * `nat-prerouting`/`nat-output` jump to `services`, which looks up `daddr . l4proto . dport`
//!   in the `service-ips` verdict map (ClusterIPs, external IPs, load-balancer IPs) and
//!   `l4proto . dport` in `service-nodeports` for packets to the node's addresses.
//! * `service-<port>` (Cluster policy) and `local-<port>` (Local policy) pick an endpoint: first
//!   the ClientIP affinity sets, then `numgen random mod K 0 goto` rules with falling K, which
//!   gives every endpoint the same share without an anonymous map per Service (those cost
//!   quadratic time in the kernel at 10,000 Services).
//! * `external-<port>` is where NodePort, external-IP and load-balancer traffic enters: it marks
//!   for masquerade (Cluster policy) or keeps the client address and uses local endpoints
//!   (Local policy).
//! * `endpoint-<port>__<ip>/<port>` marks hairpin traffic for masquerade, records affinity and
//!   DNATs.
//! * `nat-postrouting` masquerades what carries the mark; the filter chains reject traffic for
//!   Services without endpoints (`no-endpoint-*` maps) and for unused ports of ClusterIPs
//!   before it can time out.
//!
//! Everything here is data (chain name → rule text); `transaction` turns two rulesets into the
//! `nft -f` script that gets from one to the other.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::model::{
    Backend, ClusterState, EndpointSlice, NodeConfig, Service, ServiceName, ServicePort,
    backends_for_port, categorize,
};

/// The nftables family and name of Skiff's table.
pub const TABLE: &str = "ip skiff";

/// The packet mark bit that asks `nat-postrouting` to masquerade (kube-proxy's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

pub const SERVICE_IPS_MAP: &str = "service-ips";
pub const SERVICE_NODEPORTS_MAP: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES_MAP: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS_MAP: &str = "no-endpoint-nodeports";
pub const CLUSTER_IPS_SET: &str = "cluster-ips";
pub const NODEPORT_IPS_SET: &str = "nodeport-ips";
pub const CLUSTER_CIDRS_SET: &str = "cluster-cidrs";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const REJECT_CHAIN: &str = "reject-chain";
/// Prefix of the per-endpoint ClientIP affinity sets; these hold live state and are never
/// flushed by a resync.
pub const AFFINITY_PREFIX: &str = "affinity-";

/// A chain: its base-chain declaration (type, hook, priority) if it is one, and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    pub base: Option<String>,
    pub rules: Vec<String>,
}

/// A named set or map declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// `set` or `map`.
    pub keyword: &'static str,
    /// The body between braces, e.g. `type ipv4_addr; flags interval;`.
    pub body: String,
    /// Elements are added by the packet path (affinity), not by us.
    pub dynamic: bool,
}

/// Everything Skiff's table should contain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, SetSpec>,
    /// Elements of the non-dynamic sets and maps: set name → element key → map value (None
    /// for a plain set).
    pub elements: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

impl Ruleset {
    /// The number of rules in all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    /// The number of set and map elements.
    pub fn element_count(&self) -> usize {
        self.elements.values().map(BTreeMap::len).sum()
    }

    /// Adds everything in `other` (a Service's part) to this ruleset.
    pub fn merge(&mut self, other: &Ruleset) {
        self.chains
            .extend(other.chains.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.sets
            .extend(other.sets.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (set, items) in &other.elements {
            self.elements
                .entry(set.clone())
                .or_default()
                .extend(items.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    fn chain(&mut self, name: impl Into<String>, rules: Vec<String>) {
        self.chains.insert(name.into(), Chain { base: None, rules });
    }

    fn base_chain(&mut self, name: &str, base: &str, rules: &[&str]) {
        self.chains.insert(
            name.to_string(),
            Chain {
                base: Some(base.to_string()),
                rules: rules.iter().map(|r| r.to_string()).collect(),
            },
        );
    }

    fn set(&mut self, name: &str, keyword: &'static str, body: &str) {
        self.sets.insert(
            name.to_string(),
            SetSpec {
                keyword,
                body: body.to_string(),
                dynamic: false,
            },
        );
        self.elements.entry(name.to_string()).or_default();
    }

    fn element(&mut self, set: &str, key: String, value: Option<String>) {
        self.elements
            .entry(set.to_string())
            .or_default()
            .insert(key, value);
    }
}

/// The fixed part of the table: base chains hooked into netfilter, the dispatch chains and the
/// shared sets and maps. Priorities follow kube-proxy's nftables mode; the output hook takes a
/// number because nft 1.0.6 refuses `priority dstnat` there.
pub fn base(node: &NodeConfig) -> Ruleset {
    let mut rs = Ruleset::default();
    let service_key = "type ipv4_addr . inet_proto . inet_service : verdict;";
    let nodeport_key = "type inet_proto . inet_service : verdict;";
    rs.set(SERVICE_IPS_MAP, "map", service_key);
    rs.set(SERVICE_NODEPORTS_MAP, "map", nodeport_key);
    rs.set(NO_ENDPOINT_SERVICES_MAP, "map", service_key);
    rs.set(NO_ENDPOINT_NODEPORTS_MAP, "map", nodeport_key);
    rs.set(CLUSTER_IPS_SET, "set", "type ipv4_addr;");
    rs.set(NODEPORT_IPS_SET, "set", "type ipv4_addr;");
    rs.set(CLUSTER_CIDRS_SET, "set", "type ipv4_addr; flags interval;");
    for ip in &node.node_ips {
        rs.element(NODEPORT_IPS_SET, ip.to_string(), None);
    }
    for cidr in &node.cluster_cidrs {
        rs.element(CLUSTER_CIDRS_SET, cidr.to_string(), None);
    }

    rs.base_chain(
        "nat-prerouting",
        "type nat hook prerouting priority dstnat;",
        &["jump services"],
    );
    rs.base_chain(
        "nat-output",
        "type nat hook output priority -100;",
        &["jump services"],
    );
    rs.base_chain(
        "nat-postrouting",
        "type nat hook postrouting priority srcnat;",
        &["jump masquerading"],
    );
    // Rejects must happen before DNAT would have applied (priority -110), and the check for
    // unused ClusterIP ports after it (-90), when only untranslated packets still carry a
    // ClusterIP.
    let new = "ct state new jump";
    rs.base_chain(
        "filter-input",
        "type filter hook input priority -110;",
        &[
            &format!("{new} nodeport-endpoints-check"),
            &format!("{new} service-endpoints-check"),
        ],
    );
    rs.base_chain(
        "filter-forward",
        "type filter hook forward priority -110;",
        &[
            &format!("{new} service-endpoints-check"),
            &format!("{new} cluster-ips-check"),
        ],
    );
    rs.base_chain(
        "filter-output",
        "type filter hook output priority -110;",
        &[&format!("{new} service-endpoints-check")],
    );
    rs.base_chain(
        "filter-output-post-dnat",
        "type filter hook output priority -90;",
        &[&format!("{new} cluster-ips-check")],
    );

    rs.chain(
        "services",
        vec![
            format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS_MAP}"),
            format!(
                "ip daddr @{NODEPORT_IPS_SET} meta l4proto . th dport vmap @{SERVICE_NODEPORTS_MAP}"
            ),
        ],
    );
    rs.chain(
        "service-endpoints-check",
        vec![format!(
            "ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES_MAP}"
        )],
    );
    rs.chain(
        "nodeport-endpoints-check",
        vec![format!(
            "ip daddr @{NODEPORT_IPS_SET} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS_MAP}"
        )],
    );
    // Upstream: "Reject traffic to invalid ports of ClusterIPs".
    rs.chain(
        "cluster-ips-check",
        vec![format!("ip daddr @{CLUSTER_IPS_SET} reject")],
    );
    rs.chain(
        MARK_FOR_MASQUERADE,
        vec![format!("meta mark set meta mark or {MASQUERADE_MARK:#x}")],
    );
    rs.chain(
        "masquerading",
        vec![
            format!("meta mark and {MASQUERADE_MARK:#x} == 0 return"),
            // Clear the bit so a packet that is re-routed is not masqueraded twice.
            format!("meta mark set meta mark xor {MASQUERADE_MARK:#x}"),
            "masquerade fully-random".to_string(),
        ],
    );
    // `reject` in the ip family is ICMP port-unreachable: the client gets "connection refused"
    // at once instead of a timeout.
    rs.chain(REJECT_CHAIN, vec!["reject".to_string()]);
    rs
}

/// The name kube-proxy would give the Service port: `<namespace>/<name>/<protocol>/<port name>`.
/// nft 1.0.6 takes neither quoted chain names nor other characters than these, which DNS-label
/// namespaces and names and IANA port names never leave.
pub fn service_port_id(service: &ServiceName, port: &ServicePort) -> String {
    format!(
        "{}/{}/{}/{}",
        service.namespace,
        service.name,
        port.protocol.nft_name(),
        port.name
    )
}

fn endpoint_chain(port_id: &str, backend: &Backend) -> String {
    format!("endpoint-{port_id}__{}/{}", backend.ip, backend.port)
}

fn affinity_set(port_id: &str, backend: &Backend) -> String {
    format!(
        "{AFFINITY_PREFIX}{port_id}__{}/{}",
        backend.ip, backend.port
    )
}

/// What traffic to a destination without usable endpoints gets.
fn no_endpoint_verdict(any_endpoint: bool) -> String {
    // Upstream: no endpoints at all → reject ("has no endpoints"); endpoints, but none for the
    // Local policy → drop ("has no local endpoints").
    if any_endpoint {
        "drop".to_string()
    } else {
        format!("goto {REJECT_CHAIN}")
    }
}

/// The rules that pick one of `backends`: affinity first, then an even random spread.
fn selection_rules(rules: &mut Vec<String>, port_id: &str, backends: &[Backend], affinity: bool) {
    if affinity {
        for b in backends {
            rules.push(format!(
                "ip saddr @{} goto {}",
                affinity_set(port_id, b),
                endpoint_chain(port_id, b)
            ));
        }
    }
    let n = backends.len();
    for (i, b) in backends.iter().enumerate() {
        let chain = endpoint_chain(port_id, b);
        if i + 1 == n {
            rules.push(format!("goto {chain}"));
        } else {
            // Taken with probability 1/(n-i) among what is left: 1/n for every endpoint.
            rules.push(format!("numgen random mod {} 0 goto {chain}", n - i));
        }
    }
}

/// Builds the whole ruleset for `state` on `node`: [`base`] plus every Service's part.
pub fn build(node: &NodeConfig, state: &ClusterState) -> Ruleset {
    let mut rs = base(node);
    let slices = state.slices_by_service();
    for (name, service) in &state.services {
        let service_slices = slices.get(name).map(Vec::as_slice).unwrap_or_default();
        rs.merge(&service_rules(node, name, service, service_slices));
    }
    rs
}

/// One Service's part of the ruleset: its chains, its affinity sets, and its elements of the
/// shared sets and maps. Parts of different Services never share a chain, set or element key,
/// so each can be rebuilt and diffed on its own.
pub fn service_rules(
    node: &NodeConfig,
    name: &ServiceName,
    service: &Service,
    slices: &[&EndpointSlice],
) -> Ruleset {
    let mut rs = Ruleset::default();
    for port in &service.ports {
        add_service_port(&mut rs, node, name, service, port, slices);
    }
    rs
}

fn add_service_port(
    rs: &mut Ruleset,
    node: &NodeConfig,
    name: &ServiceName,
    service: &Service,
    port: &ServicePort,
    slices: &[&EndpointSlice],
) {
    let id = service_port_id(name, port);
    let proto = port.protocol.nft_name();
    let need_local = service.external_traffic_local || service.internal_traffic_local;
    let backends = categorize(
        &backends_for_port(port, slices.iter().copied(), &node.node_name),
        need_local,
    );
    let any = backends.any();
    let affinity = service.session_affinity_seconds.is_some();
    let masquerade_cluster_ip = !node.cluster_cidrs.is_empty();

    let external_dests: Vec<Ipv4Addr> = service
        .external_ips
        .iter()
        .chain(&service.load_balancer_ips)
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let has_external = !external_dests.is_empty() || port.node_port.is_some();

    let internal = if service.internal_traffic_local {
        &backends.local
    } else {
        &backends.cluster
    };
    let external = if service.external_traffic_local {
        &backends.local
    } else {
        &backends.cluster
    };
    let cluster_chain = format!("service-{id}");
    let local_chain = format!("local-{id}");
    let external_chain = format!("external-{id}");
    let internal_chain = if service.internal_traffic_local {
        &local_chain
    } else {
        &cluster_chain
    };

    // Endpoint chains and affinity sets for every backend any policy uses.
    let used: BTreeSet<&Backend> = backends.cluster.iter().chain(&backends.local).collect();
    for b in used {
        let mut rules = vec![format!("ip saddr {} jump {MARK_FOR_MASQUERADE}", b.ip)];
        if let Some(timeout) = service.session_affinity_seconds {
            let set = affinity_set(&id, b);
            rs.sets.insert(
                set.clone(),
                SetSpec {
                    keyword: "set",
                    body: format!("type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;"),
                    dynamic: true,
                },
            );
            rules.push(format!("update @{set} {{ ip saddr }}"));
        }
        rules.push(format!("meta l4proto {proto} dnat to {}:{}", b.ip, b.port));
        rs.chain(endpoint_chain(&id, b), rules);
    }

    // ClusterIP traffic from outside the pod network is masqueraded so replies come back
    // through this node (upstream: masquerade unless the source is in --cluster-cidr).
    let cluster_ip_masquerade = |rules: &mut Vec<String>| {
        if masquerade_cluster_ip {
            for ip in &service.cluster_ips {
                rules.push(format!(
                    "ip daddr {ip} ip saddr != @{CLUSTER_CIDRS_SET} jump {MARK_FOR_MASQUERADE}"
                ));
            }
        }
    };
    if !backends.cluster.is_empty() {
        let mut rules = Vec::new();
        if !service.internal_traffic_local {
            cluster_ip_masquerade(&mut rules);
        }
        selection_rules(&mut rules, &id, &backends.cluster, affinity);
        rs.chain(cluster_chain.clone(), rules);
    }
    if need_local && !backends.local.is_empty() {
        let mut rules = Vec::new();
        if service.internal_traffic_local {
            cluster_ip_masquerade(&mut rules);
        }
        selection_rules(&mut rules, &id, &backends.local, affinity);
        rs.chain(local_chain.clone(), rules);
    }
    if has_external && !external.is_empty() {
        let rules = if service.external_traffic_local {
            let mut rules = Vec::new();
            // Pod traffic to an external destination goes to any endpoint; node-local
            // traffic too, masqueraded (it has a node source address). Only traffic from
            // outside keeps its source address and must stay on this node.
            if masquerade_cluster_ip {
                rules.push(format!(
                    "ip saddr @{CLUSTER_CIDRS_SET} goto {cluster_chain}"
                ));
            }
            rules.push(format!("fib saddr type local jump {MARK_FOR_MASQUERADE}"));
            rules.push(format!("fib saddr type local goto {cluster_chain}"));
            rules.push(format!("goto {local_chain}"));
            rules
        } else {
            vec![
                format!("jump {MARK_FOR_MASQUERADE}"),
                format!("goto {cluster_chain}"),
            ]
        };
        rs.chain(external_chain.clone(), rules);
    }

    for ip in &service.cluster_ips {
        rs.element(CLUSTER_IPS_SET, ip.to_string(), None);
        let key = format!("{ip} . {proto} . {}", port.port);
        if internal.is_empty() {
            rs.element(
                NO_ENDPOINT_SERVICES_MAP,
                key,
                Some(no_endpoint_verdict(any)),
            );
        } else {
            rs.element(SERVICE_IPS_MAP, key, Some(format!("goto {internal_chain}")));
        }
    }
    for ip in &external_dests {
        let key = format!("{ip} . {proto} . {}", port.port);
        if external.is_empty() {
            rs.element(
                NO_ENDPOINT_SERVICES_MAP,
                key,
                Some(no_endpoint_verdict(any)),
            );
        } else {
            rs.element(SERVICE_IPS_MAP, key, Some(format!("goto {external_chain}")));
        }
    }
    if let Some(node_port) = port.node_port {
        let key = format!("{proto} . {node_port}");
        if external.is_empty() {
            rs.element(
                NO_ENDPOINT_NODEPORTS_MAP,
                key,
                Some(no_endpoint_verdict(any)),
            );
        } else {
            rs.element(
                SERVICE_NODEPORTS_MAP,
                key,
                Some(format!("goto {external_chain}")),
            );
        }
    }
}

/// Renders a ruleset as one `nft -f` script, for logs and tests (the same text a full sync
/// adds).
pub fn render(rs: &Ruleset) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table {TABLE} {{");
    for (name, set) in &rs.sets {
        let _ = writeln!(out, "\t{} {name} {{ {} }}", set.keyword, set.body);
    }
    for (name, chain) in &rs.chains {
        let _ = writeln!(out, "\tchain {name} {{");
        if let Some(base) = &chain.base {
            let _ = writeln!(out, "\t\t{base}");
        }
        for rule in &chain.rules {
            let _ = writeln!(out, "\t\t{rule}");
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::{Endpoint, EndpointPort, Ipv4Cidr, Protocol};
    use super::*;

    fn node() -> NodeConfig {
        NodeConfig::new(
            "n1",
            vec![Ipv4Addr::new(192, 168, 1, 10)],
            vec!["10.42.0.0/16".parse::<Ipv4Cidr>().expect("cidr")],
        )
        .expect("node")
    }

    fn web() -> ServiceName {
        ServiceName::new("default", "web")
    }

    fn service(node_port: Option<u16>) -> Service {
        Service {
            cluster_ips: vec![Ipv4Addr::new(10, 43, 0, 10)],
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port,
            }],
            ..Service::default()
        }
    }

    fn slice(eps: &[([u8; 4], bool, &str)]) -> EndpointSlice {
        EndpointSlice {
            service: web(),
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints: eps
                .iter()
                .map(|(ip, ready, node)| Endpoint {
                    addresses: vec![Ipv4Addr::from(*ip)],
                    ready: *ready,
                    serving: *ready,
                    terminating: false,
                    node_name: Some(node.to_string()),
                })
                .collect(),
        }
    }

    fn state(service: Service, slice: Option<EndpointSlice>) -> ClusterState {
        let mut st = ClusterState::default();
        st.services.insert(web(), service);
        if let Some(s) = slice {
            st.slices.insert(("default".into(), "web-abc".into()), s);
        }
        st
    }

    fn rules<'a>(rs: &'a Ruleset, chain: &str) -> Vec<&'a str> {
        rs.chains
            .get(chain)
            .unwrap_or_else(|| panic!("no chain {chain}; have {:?}", rs.chains.keys()))
            .rules
            .iter()
            .map(String::as_str)
            .collect()
    }

    fn element<'a>(rs: &'a Ruleset, set: &str, key: &str) -> Option<&'a str> {
        rs.elements.get(set)?.get(key)?.as_deref()
    }

    #[test]
    fn cluster_ip_with_two_endpoints() {
        let rs = build(
            &node(),
            &state(
                service(None),
                Some(slice(&[
                    ([10, 42, 0, 2], true, "n1"),
                    ([10, 42, 0, 3], true, "n2"),
                ])),
            ),
        );
        assert_eq!(
            element(&rs, SERVICE_IPS_MAP, "10.43.0.10 . tcp . 80"),
            Some("goto service-default/web/tcp/http")
        );
        assert_eq!(
            rules(&rs, "service-default/web/tcp/http"),
            vec![
                "ip daddr 10.43.0.10 ip saddr != @cluster-cidrs jump mark-for-masquerade",
                "numgen random mod 2 0 goto endpoint-default/web/tcp/http__10.42.0.2/8080",
                "goto endpoint-default/web/tcp/http__10.42.0.3/8080",
            ]
        );
        assert_eq!(
            rules(&rs, "endpoint-default/web/tcp/http__10.42.0.2/8080"),
            vec![
                "ip saddr 10.42.0.2 jump mark-for-masquerade",
                "meta l4proto tcp dnat to 10.42.0.2:8080",
            ]
        );
        assert!(rs.elements[CLUSTER_IPS_SET].contains_key("10.43.0.10"));
        assert!(rs.elements[NO_ENDPOINT_SERVICES_MAP].is_empty());
        assert!(!rs.chains.contains_key("external-default/web/tcp/http"));
        // No anonymous sets or maps anywhere: they are what makes big rulesets quadratic.
        for chain in rs.chains.values() {
            for rule in &chain.rules {
                assert!(
                    !rule.contains('{') || rule.starts_with("update @"),
                    "{rule}"
                );
            }
        }
    }

    #[test]
    fn spread_is_even_for_three_endpoints() {
        let rs = build(
            &node(),
            &state(
                service(None),
                Some(slice(&[
                    ([10, 42, 0, 2], true, "n1"),
                    ([10, 42, 0, 3], true, "n1"),
                    ([10, 42, 0, 4], true, "n1"),
                ])),
            ),
        );
        let r = rules(&rs, "service-default/web/tcp/http");
        assert!(r[1].starts_with("numgen random mod 3 0 goto "));
        assert!(r[2].starts_with("numgen random mod 2 0 goto "));
        assert!(r[3].starts_with("goto endpoint-"));
    }

    #[test]
    fn no_endpoints_rejects_and_unready_do_not_count() {
        for slice in [None, Some(slice(&[([10, 42, 0, 2], false, "n1")]))] {
            let rs = build(&node(), &state(service(Some(30080)), slice));
            assert_eq!(
                element(&rs, NO_ENDPOINT_SERVICES_MAP, "10.43.0.10 . tcp . 80"),
                Some("goto reject-chain")
            );
            assert_eq!(
                element(&rs, NO_ENDPOINT_NODEPORTS_MAP, "tcp . 30080"),
                Some("goto reject-chain")
            );
            assert!(rs.elements[SERVICE_IPS_MAP].is_empty());
            assert!(!rs.chains.keys().any(|c| c.starts_with("endpoint-")));
            assert_eq!(rules(&rs, "reject-chain"), vec!["reject"]);
        }
    }

    #[test]
    fn node_port_and_load_balancer_go_through_external_chain() {
        let mut svc = service(Some(30080));
        svc.load_balancer_ips = vec![Ipv4Addr::new(192, 168, 1, 200)];
        let rs = build(
            &node(),
            &state(svc, Some(slice(&[([10, 42, 0, 2], true, "n2")]))),
        );
        assert_eq!(
            element(&rs, SERVICE_NODEPORTS_MAP, "tcp . 30080"),
            Some("goto external-default/web/tcp/http")
        );
        assert_eq!(
            element(&rs, SERVICE_IPS_MAP, "192.168.1.200 . tcp . 80"),
            Some("goto external-default/web/tcp/http")
        );
        assert_eq!(
            rules(&rs, "external-default/web/tcp/http"),
            vec![
                "jump mark-for-masquerade",
                "goto service-default/web/tcp/http"
            ]
        );
        assert!(rs.elements[NODEPORT_IPS_SET].contains_key("192.168.1.10"));
    }

    #[test]
    fn external_traffic_policy_local() {
        let mut svc = service(Some(30080));
        svc.external_traffic_local = true;
        // Endpoints only elsewhere: external traffic is dropped, ClusterIP still works.
        let rs = build(
            &node(),
            &state(svc.clone(), Some(slice(&[([10, 42, 0, 3], true, "n2")]))),
        );
        assert_eq!(
            element(&rs, NO_ENDPOINT_NODEPORTS_MAP, "tcp . 30080"),
            Some("drop")
        );
        assert_eq!(
            element(&rs, SERVICE_IPS_MAP, "10.43.0.10 . tcp . 80"),
            Some("goto service-default/web/tcp/http")
        );
        // One local endpoint: external traffic goes to it without masquerade.
        let rs = build(
            &node(),
            &state(
                svc,
                Some(slice(&[
                    ([10, 42, 0, 2], true, "n1"),
                    ([10, 42, 0, 3], true, "n2"),
                ])),
            ),
        );
        assert_eq!(
            rules(&rs, "external-default/web/tcp/http"),
            vec![
                "ip saddr @cluster-cidrs goto service-default/web/tcp/http",
                "fib saddr type local jump mark-for-masquerade",
                "fib saddr type local goto service-default/web/tcp/http",
                "goto local-default/web/tcp/http",
            ]
        );
        assert_eq!(
            rules(&rs, "local-default/web/tcp/http"),
            vec!["goto endpoint-default/web/tcp/http__10.42.0.2/8080"]
        );
    }

    #[test]
    fn internal_traffic_policy_local() {
        let mut svc = service(None);
        svc.internal_traffic_local = true;
        let rs = build(
            &node(),
            &state(svc.clone(), Some(slice(&[([10, 42, 0, 3], true, "n2")]))),
        );
        assert_eq!(
            element(&rs, NO_ENDPOINT_SERVICES_MAP, "10.43.0.10 . tcp . 80"),
            Some("drop")
        );
        let rs = build(
            &node(),
            &state(
                svc,
                Some(slice(&[
                    ([10, 42, 0, 2], true, "n1"),
                    ([10, 42, 0, 3], true, "n2"),
                ])),
            ),
        );
        assert_eq!(
            element(&rs, SERVICE_IPS_MAP, "10.43.0.10 . tcp . 80"),
            Some("goto local-default/web/tcp/http")
        );
        assert_eq!(
            rules(&rs, "local-default/web/tcp/http"),
            vec![
                "ip daddr 10.43.0.10 ip saddr != @cluster-cidrs jump mark-for-masquerade",
                "goto endpoint-default/web/tcp/http__10.42.0.2/8080",
            ]
        );
    }

    #[test]
    fn client_ip_affinity_uses_per_endpoint_dynamic_sets() {
        let mut svc = service(None);
        svc.session_affinity_seconds = Some(10800);
        let rs = build(
            &node(),
            &state(
                svc,
                Some(slice(&[
                    ([10, 42, 0, 2], true, "n1"),
                    ([10, 42, 0, 3], true, "n1"),
                ])),
            ),
        );
        let set = "affinity-default/web/tcp/http__10.42.0.2/8080";
        assert_eq!(
            rs.sets[set],
            SetSpec {
                keyword: "set",
                body: "type ipv4_addr; flags dynamic,timeout; timeout 10800s;".into(),
                dynamic: true
            }
        );
        let r = rules(&rs, "service-default/web/tcp/http");
        assert_eq!(
            r[1],
            format!("ip saddr @{set} goto endpoint-default/web/tcp/http__10.42.0.2/8080")
        );
        assert_eq!(
            rules(&rs, "endpoint-default/web/tcp/http__10.42.0.2/8080")[1],
            format!("update @{set} {{ ip saddr }}")
        );
        assert!(!rs.elements.contains_key(set));
    }

    #[test]
    fn no_cluster_cidr_means_no_cluster_ip_masquerade() {
        let mut n = node();
        n.cluster_cidrs.clear();
        let rs = build(
            &n,
            &state(service(None), Some(slice(&[([10, 42, 0, 2], true, "n1")]))),
        );
        assert_eq!(
            rules(&rs, "service-default/web/tcp/http"),
            vec!["goto endpoint-default/web/tcp/http__10.42.0.2/8080"]
        );
    }

    #[test]
    fn render_shows_base_chains() {
        let rs = build(&node(), &ClusterState::default());
        let text = render(&rs);
        assert!(text.contains("chain nat-output {\n\t\ttype nat hook output priority -100;"));
        assert!(
            text.contains(
                "map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }"
            )
        );
        assert!(text.contains("meta mark and 0x4000 == 0 return"));
    }
}
