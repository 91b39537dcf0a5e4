//! Parsing a query name inside the cluster domain into what it asks for, following the
//! Kubernetes DNS-Based Service Discovery spec (kubernetes/dns docs/specification.md) and the
//! CoreDNS `kubernetes` plugin's request parsing. Pure: labels in, [`ClusterName`] out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// What a name inside the cluster domain refers to. Labels are lowercase: DNS names compare
/// case-insensitively (RFC 4343).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterName {
    /// `<domain>` itself: SOA and NS live here.
    Apex,
    /// `dns-version.<domain>`: TXT with the spec's schema version.
    Version,
    /// `svc.<domain>` or `pod.<domain>`: exist (they have children) but hold no records.
    EmptyNonTerminal,
    /// `<ns>.svc.<domain>` or `<ns>.pod.<domain>`: exists when the namespace does.
    Namespace { namespace: String },
    /// `<svc>.<ns>.svc.<domain>`.
    Service { namespace: String, service: String },
    /// `<endpoint>.<svc>.<ns>.svc.<domain>`: a headless Service's endpoint by hostname (or by
    /// dashed IP when it has none).
    Endpoint {
        namespace: String,
        service: String,
        endpoint: String,
    },
    /// `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: the SRV name of a named port.
    ServicePort {
        namespace: String,
        service: String,
        port: String,
        protocol: String,
    },
    /// `<dashed-ip>.<ns>.pod.<domain>` (CoreDNS `pods insecure`: the IP is not checked against
    /// a pod).
    Pod { namespace: String, ip: IpAddr },
    /// Anything else under the domain: NXDOMAIN.
    Unknown,
}

/// The labels of `name` below `domain_labels`, lowercase and left to right; `None` when `name`
/// is not in the domain. `web.default.svc.cluster.local.` in `cluster.local` gives
/// `["web", "default", "svc"]`.
pub fn labels_in_domain(name: &Name, domain_labels: &[String]) -> Option<Vec<String>> {
    let labels: Vec<String> = name
        .iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    let relative = labels.len().checked_sub(domain_labels.len())?;
    if labels[relative..] != *domain_labels {
        return None;
    }
    let mut labels = labels;
    labels.truncate(relative);
    Some(labels)
}

/// Classifies the labels below the cluster domain.
pub fn parse(labels: &[String]) -> ClusterName {
    let owned = |s: &String| s.clone();
    match labels {
        [] => ClusterName::Apex,
        [version] if version == "dns-version" => ClusterName::Version,
        [kind] if kind == "svc" || kind == "pod" => ClusterName::EmptyNonTerminal,
        [namespace, kind] if kind == "svc" || kind == "pod" => ClusterName::Namespace {
            namespace: owned(namespace),
        },
        [service, namespace, svc] if svc == "svc" => ClusterName::Service {
            namespace: owned(namespace),
            service: owned(service),
        },
        [dashed, namespace, pod] if pod == "pod" => match ip_from_dashed(dashed) {
            Some(ip) => ClusterName::Pod {
                namespace: owned(namespace),
                ip,
            },
            None => ClusterName::Unknown,
        },
        [endpoint, service, namespace, svc] if svc == "svc" => ClusterName::Endpoint {
            namespace: owned(namespace),
            service: owned(service),
            endpoint: owned(endpoint),
        },
        [port, protocol, service, namespace, svc] if svc == "svc" => {
            match (port.strip_prefix('_'), protocol.strip_prefix('_')) {
                (Some(port), Some(protocol)) if !port.is_empty() && !protocol.is_empty() => {
                    ClusterName::ServicePort {
                        namespace: owned(namespace),
                        service: owned(service),
                        port: port.to_string(),
                        protocol: protocol.to_string(),
                    }
                }
                _ => ClusterName::Unknown,
            }
        }
        // Includes search-path expansions such as
        // web.default.svc.cluster.local.default.svc.cluster.local: too many labels.
        _ => ClusterName::Unknown,
    }
}

/// `10-42-0-5` → 10.42.0.5; `fd00--1` → fd00::1 (dashes stand for the dots or colons, as in
/// CoreDNS's pod records and endpoint names).
pub fn ip_from_dashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The label CoreDNS gives an endpoint without a hostname: its IP with dashes.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The reverse-lookup name's address: `5.0.42.10.in-addr.arpa.` → 10.42.0.5. Only names of a
/// single address (all 4 or 32 labels) qualify; partial reverse zones are not addresses.
pub fn reverse_address(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    let full = match net.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    (net.prefix_len() == full).then(|| net.addr())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Option<Vec<String>> {
        let domain = vec!["cluster".to_string(), "local".to_string()];
        labels_in_domain(&Name::from_ascii(name).expect("name"), &domain)
    }

    fn parse_str(name: &str) -> ClusterName {
        parse(&labels(name).expect("in domain"))
    }

    #[test]
    fn labels_are_lowercased_and_relative_to_the_domain() {
        assert_eq!(
            labels("Web.Default.SVC.Cluster.LOCAL."),
            Some(vec!["web".into(), "default".into(), "svc".into()])
        );
        assert_eq!(labels("cluster.local."), Some(vec![]));
        assert_eq!(labels("example.com."), None);
        assert_eq!(labels("local."), None);
        assert_eq!(labels("notcluster.local."), None);
    }

    #[test]
    fn service_endpoint_and_srv_names() {
        assert_eq!(
            parse_str("web.default.svc.cluster.local."),
            ClusterName::Service {
                namespace: "default".into(),
                service: "web".into()
            }
        );
        assert_eq!(
            parse_str("web-0.db.prod.svc.cluster.local."),
            ClusterName::Endpoint {
                namespace: "prod".into(),
                service: "db".into(),
                endpoint: "web-0".into()
            }
        );
        assert_eq!(
            parse_str("_HTTP._TCP.web.default.svc.cluster.local."),
            ClusterName::ServicePort {
                namespace: "default".into(),
                service: "web".into(),
                port: "http".into(),
                protocol: "tcp".into()
            }
        );
        assert_eq!(
            parse_str("http.tcp.web.default.svc.cluster.local."),
            ClusterName::Unknown
        );
        assert_eq!(
            parse_str("_.tcp.web.default.svc.cluster.local."),
            ClusterName::Unknown
        );
    }

    #[test]
    fn structural_names() {
        assert_eq!(parse_str("cluster.local."), ClusterName::Apex);
        assert_eq!(
            parse_str("dns-version.cluster.local."),
            ClusterName::Version
        );
        assert_eq!(
            parse_str("svc.cluster.local."),
            ClusterName::EmptyNonTerminal
        );
        assert_eq!(
            parse_str("pod.cluster.local."),
            ClusterName::EmptyNonTerminal
        );
        assert_eq!(
            parse_str("default.svc.cluster.local."),
            ClusterName::Namespace {
                namespace: "default".into()
            }
        );
        assert_eq!(parse_str("foo.cluster.local."), ClusterName::Unknown);
        assert_eq!(
            parse_str("web.default.cluster.local."),
            ClusterName::Unknown
        );
    }

    #[test]
    fn search_path_expansions_are_unknown() {
        assert_eq!(
            parse_str("web.default.svc.cluster.local.default.svc.cluster.local."),
            ClusterName::Unknown
        );
        assert_eq!(
            parse_str("web.default.svc.cluster.local.svc.cluster.local."),
            ClusterName::Unknown
        );
    }

    #[test]
    fn pod_names() {
        assert_eq!(
            parse_str("10-42-0-5.default.pod.cluster.local."),
            ClusterName::Pod {
                namespace: "default".into(),
                ip: "10.42.0.5".parse().expect("ip")
            }
        );
        assert_eq!(
            parse_str("fd00--1.default.pod.cluster.local."),
            ClusterName::Pod {
                namespace: "default".into(),
                ip: "fd00::1".parse().expect("ip")
            }
        );
        assert_eq!(
            parse_str("10-42-0.default.pod.cluster.local."),
            ClusterName::Unknown
        );
        assert_eq!(
            parse_str("web.default.pod.cluster.local."),
            ClusterName::Unknown
        );
    }

    #[test]
    fn dashed_round_trips() {
        for ip in ["10.42.0.5", "fd00::1", "2001:db8::a:b"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(ip_from_dashed(&dashed(ip)), Some(ip));
        }
        assert_eq!(dashed("fd00::1".parse().expect("ip")), "fd00--1");
    }

    #[test]
    fn reverse_names() {
        let name = Name::from_ascii("5.0.42.10.in-addr.arpa.").expect("name");
        assert_eq!(
            reverse_address(&name),
            Some("10.42.0.5".parse().expect("ip"))
        );
        let partial = Name::from_ascii("42.10.in-addr.arpa.").expect("name");
        assert_eq!(reverse_address(&partial), None);
        let v6 = Name::from_ascii(
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        )
        .expect("name");
        assert_eq!(reverse_address(&v6), Some("fd00::1".parse().expect("ip")));
        assert_eq!(
            reverse_address(&Name::from_ascii("example.com.").expect("name")),
            None
        );
    }
}
