//! Building the authoritative answer for a query from the [`ClusterIndex`], with the record
//! shapes and response codes of the CoreDNS `kubernetes` plugin (the Kubernetes DNS-Based
//! Service Discovery spec). Names outside the cluster domain, and reverse names of addresses
//! the cluster does not know, are handed back as [`Resolution::Forward`] — CoreDNS's
//! `fallthrough in-addr.arpa ip6.arpa` in the stock Corefile.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::config::ValidConfig;
use crate::index::{ClusterIndex, EndpointView, ServiceAddress, ServiceView};
use crate::name::{ClusterName, labels_in_domain, parse, reverse_address};

/// The schema version of the DNS spec this server implements (`dns-version.<domain>` TXT).
pub const SPEC_VERSION: &str = "1.1.0";

/// What to do with a query.
#[derive(Debug)]
pub enum Resolution {
    /// Skiff is authoritative: send this.
    Answer(Answer),
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// An authoritative response's content.
#[derive(Debug, Default)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        Answer {
            rcode: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals,
        }
    }
}

/// The authority for the cluster domain.
pub struct Authority<'a> {
    pub config: &'a ValidConfig,
    pub index: &'a ClusterIndex,
}

enum Outcome {
    Records(Vec<Record>, Vec<Record>),
    NoData,
    NxDomain,
}

impl Authority<'_> {
    /// Resolves `qname`/`qtype`; `qname` keeps the client's case (answers echo it).
    pub fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        if let Some(labels) = labels_in_domain(qname, &self.config.domain_labels) {
            return Resolution::Answer(self.cluster(qname, &parse(&labels), qtype));
        }
        if qtype == RecordType::PTR
            && let Some(ip) = reverse_address(qname)
        {
            let names = self.index.reverse(ip);
            if !names.is_empty() {
                let answers = names
                    .iter()
                    .filter_map(|relative| self.fqdn(relative))
                    .map(|target| self.record(qname.clone(), RData::PTR(PTR(target))))
                    .collect();
                return Resolution::Answer(Answer::records(answers, Vec::new()));
            }
        }
        Resolution::Forward
    }

    fn cluster(&self, qname: &Name, name: &ClusterName, qtype: RecordType) -> Answer {
        let outcome = self.outcome(qname, name, qtype);
        let (rcode, answers, additionals) = match outcome {
            Outcome::Records(answers, additionals) if !answers.is_empty() => {
                return Answer::records(answers, additionals);
            }
            Outcome::Records(..) | Outcome::NoData => (ResponseCode::NoError, vec![], vec![]),
            // Until the first lists are in, a missing name may just be unseen: CoreDNS answers
            // SERVFAIL then, so resolvers retry instead of caching a negative answer.
            Outcome::NxDomain if !self.index.synced() => (ResponseCode::ServFail, vec![], vec![]),
            Outcome::NxDomain => (ResponseCode::NXDomain, vec![], vec![]),
        };
        // RFC 2308: negative answers carry the zone's SOA so resolvers know how long to cache.
        let authorities = if rcode == ResponseCode::ServFail {
            Vec::new()
        } else {
            vec![self.soa()]
        };
        Answer {
            rcode,
            answers,
            authorities,
            additionals,
        }
    }

    fn outcome(&self, qname: &Name, name: &ClusterName, qtype: RecordType) -> Outcome {
        match name {
            ClusterName::Apex => match qtype {
                RecordType::SOA => Outcome::Records(vec![self.soa()], vec![]),
                RecordType::NS => match self.fqdn("ns.dns") {
                    Some(ns) => Outcome::Records(
                        vec![self.record(qname.clone(), RData::NS(NS(ns)))],
                        vec![],
                    ),
                    None => Outcome::NoData,
                },
                _ => Outcome::NoData,
            },
            ClusterName::Version => match qtype {
                RecordType::TXT => Outcome::Records(
                    vec![self.record(
                        qname.clone(),
                        RData::TXT(TXT::new(vec![SPEC_VERSION.to_string()])),
                    )],
                    vec![],
                ),
                _ => Outcome::NoData,
            },
            ClusterName::EmptyNonTerminal => Outcome::NoData,
            ClusterName::Namespace { namespace } => {
                if self.index.namespace_exists(namespace) {
                    Outcome::NoData
                } else {
                    Outcome::NxDomain
                }
            }
            ClusterName::Pod { namespace, ip } => {
                if !self.index.namespace_exists(namespace) {
                    return Outcome::NxDomain;
                }
                address_records(self, qname, qtype, [*ip])
            }
            ClusterName::Service { namespace, service } => {
                let Some(view) = self.index.service(namespace, service) else {
                    return Outcome::NxDomain;
                };
                self.service(qname, namespace, service, &view, qtype)
            }
            ClusterName::Endpoint {
                namespace,
                service,
                endpoint,
            } => {
                let Some(view) = self.index.service(namespace, service) else {
                    return Outcome::NxDomain;
                };
                let ips: Vec<IpAddr> = view
                    .endpoints
                    .iter()
                    .filter(|e| e.host == *endpoint)
                    .map(|e| e.ip)
                    .collect();
                if ips.is_empty() {
                    return Outcome::NxDomain;
                }
                address_records(self, qname, qtype, ips)
            }
            ClusterName::ServicePort {
                namespace,
                service,
                port,
                protocol,
            } => {
                let Some(view) = self.index.service(namespace, service) else {
                    return Outcome::NxDomain;
                };
                let targets = srv_targets(&view, namespace, service, |p| {
                    p.name == *port && p.protocol == *protocol
                });
                if targets.is_empty() {
                    // No such port: the name does not exist (CoreDNS: no matching service).
                    return Outcome::NxDomain;
                }
                if qtype != RecordType::SRV {
                    return Outcome::NoData;
                }
                self.srv_records(qname, &view, targets)
            }
            ClusterName::Unknown => Outcome::NxDomain,
        }
    }

    fn service(
        &self,
        qname: &Name,
        namespace: &str,
        service: &str,
        view: &ServiceView,
        qtype: RecordType,
    ) -> Outcome {
        match &view.address {
            ServiceAddress::ExternalName(target) => {
                // A CNAME owns the name for every type (RFC 1034 §3.6.2).
                match self.absolute(target) {
                    Some(target) => Outcome::Records(
                        vec![self.record(qname.clone(), RData::CNAME(CNAME(target)))],
                        vec![],
                    ),
                    None => Outcome::NoData,
                }
            }
            // A headless Service with nothing published has no records at all: CoreDNS
            // answers NXDOMAIN, not NODATA.
            ServiceAddress::Headless if view.endpoints.is_empty() => Outcome::NxDomain,
            ServiceAddress::Headless if qtype == RecordType::SRV => {
                let targets = srv_targets(view, namespace, service, |_| true);
                self.srv_records(qname, view, targets)
            }
            ServiceAddress::Headless => {
                address_records(self, qname, qtype, view.endpoints.iter().map(|e| e.ip))
            }
            ServiceAddress::ClusterIp(_) if qtype == RecordType::SRV => {
                let targets = srv_targets(view, namespace, service, |_| true);
                self.srv_records(qname, view, targets)
            }
            ServiceAddress::ClusterIp(ips) => {
                address_records(self, qname, qtype, ips.iter().copied())
            }
            ServiceAddress::Unallocated => Outcome::NoData,
        }
    }

    /// SRV records for `targets`, with the targets' addresses as additional records.
    /// Weights split 100 evenly over the records, as CoreDNS does within one priority.
    fn srv_records(&self, qname: &Name, view: &ServiceView, targets: Vec<SrvTarget>) -> Outcome {
        let weight = u16::try_from(100 / targets.len().max(1))
            .unwrap_or(1)
            .max(1);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut added = std::collections::HashSet::new();
        for target in targets {
            let target_name = match &target.host {
                SrvHost::Relative(relative) => self.fqdn(relative),
                SrvHost::External(external) => self.absolute(external),
            };
            let Some(target_name) = target_name else {
                continue;
            };
            answers.push(self.record(
                qname.clone(),
                RData::SRV(SRV::new(0, weight, target.port, target_name.clone())),
            ));
            if added.insert(target_name.clone()) {
                let ips: Vec<IpAddr> = match (&target.ip, &view.address) {
                    (Some(ip), _) => vec![*ip],
                    (None, ServiceAddress::ClusterIp(ips)) => ips.clone(),
                    _ => Vec::new(),
                };
                for ip in ips {
                    additionals.push(self.record(target_name.clone(), address_rdata(ip)));
                }
            }
        }
        Outcome::Records(answers, additionals)
    }

    fn soa(&self) -> Record {
        let mname = self
            .fqdn("ns.dns")
            .unwrap_or_else(|| self.config.domain.clone());
        let rname = self
            .fqdn("hostmaster")
            .unwrap_or_else(|| self.config.domain.clone());
        // Refresh/retry/expire as CoreDNS's kubernetes plugin; minimum = the record TTL.
        let soa = SOA::new(
            mname,
            rname,
            self.index.serial(),
            7200,
            1800,
            86400,
            self.config.ttl,
        );
        self.record(self.config.domain.clone(), RData::SOA(soa))
    }

    fn record(&self, name: Name, rdata: RData) -> Record {
        Record::from_rdata(name, self.config.ttl, rdata)
    }

    /// `relative` under the cluster domain (`web.default.svc` → `web.default.svc.cluster.local.`).
    fn fqdn(&self, relative: &str) -> Option<Name> {
        Name::from_ascii(relative)
            .ok()?
            .append_domain(&self.config.domain)
            .ok()
    }

    fn absolute(&self, name: &str) -> Option<Name> {
        Name::from_ascii(format!("{name}.")).ok()
    }
}

enum SrvHost {
    /// Under the cluster domain.
    Relative(String),
    /// An ExternalName target.
    External(String),
}

struct SrvTarget {
    host: SrvHost,
    port: u16,
    /// The address for the additional section (endpoints); `None` = the Service's cluster IPs.
    ip: Option<IpAddr>,
}

fn srv_targets(
    view: &ServiceView,
    namespace: &str,
    service: &str,
    wanted: impl Fn(&crate::index::PortView) -> bool,
) -> Vec<SrvTarget> {
    match &view.address {
        ServiceAddress::ClusterIp(_) | ServiceAddress::Unallocated => view
            .ports
            .iter()
            .filter(|p| wanted(p))
            .map(|p| SrvTarget {
                host: SrvHost::Relative(format!("{service}.{namespace}.svc")),
                port: p.port,
                ip: None,
            })
            .collect(),
        ServiceAddress::ExternalName(external) => view
            .ports
            .iter()
            .filter(|p| wanted(p))
            .map(|p| SrvTarget {
                host: SrvHost::External(external.clone()),
                port: p.port,
                ip: None,
            })
            .collect(),
        // Headless: one record per endpoint and matching endpoint port (the target port).
        ServiceAddress::Headless => view
            .endpoints
            .iter()
            .flat_map(|endpoint: &EndpointView| {
                endpoint
                    .ports
                    .iter()
                    .filter(|p| wanted(p))
                    .map(|p| SrvTarget {
                        host: SrvHost::Relative(format!(
                            "{}.{service}.{namespace}.svc",
                            endpoint.host
                        )),
                        port: p.port,
                        ip: Some(endpoint.ip),
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}

/// A or AAAA records for the addresses of the queried family; other types get NODATA (the
/// name exists).
fn address_records(
    authority: &Authority<'_>,
    qname: &Name,
    qtype: RecordType,
    ips: impl IntoIterator<Item = IpAddr>,
) -> Outcome {
    let answers: Vec<Record> = ips
        .into_iter()
        .filter(|ip| match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            _ => false,
        })
        .map(|ip| authority.record(qname.clone(), address_rdata(ip)))
        .collect();
    if answers.is_empty() {
        Outcome::NoData
    } else {
        Outcome::Records(answers, vec![])
    }
}

fn address_rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    use super::*;
    use crate::config::DnsConfig;
    use crate::index::Kind;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).expect("service")
    }

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).expect("slice")
    }

    fn fixture() -> (ValidConfig, ClusterIndex) {
        let config = DnsConfig {
            upstreams: vec!["192.0.2.53:53".parse().expect("addr")],
            ..DnsConfig::default()
        }
        .validate()
        .expect("config");
        let index = ClusterIndex::new();
        index.replace_namespaces(&[serde_json::from_value::<Namespace>(
            json!({"metadata": {"name": "default"}}),
        )
        .expect("ns")]);
        index.replace_services(&[
            service(json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                   {"port": 81}]}
            })),
            service(json!({
                "metadata": {"name": "db", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
            })),
            service(json!({
                "metadata": {"name": "empty", "namespace": "default"},
                "spec": {"clusterIP": "None"}
            })),
            service(json!({
                "metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "Example.COM."}
            })),
        ]);
        index.replace_slices(&[slice(json!({
            "metadata": {"name": "db-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.8"], "conditions": {}},
                {"addresses": ["10.42.0.9"], "conditions": {"ready": false}}
            ]
        }))]);
        for kind in [Kind::Service, Kind::EndpointSlice, Kind::Namespace] {
            index.mark_synced(kind);
        }
        (config, index)
    }

    fn resolve(name: &str, qtype: RecordType) -> Answer {
        let (config, index) = fixture();
        let authority = Authority {
            config: &config,
            index: &index,
        };
        match authority.resolve(&Name::from_ascii(name).expect("name"), qtype) {
            Resolution::Answer(answer) => answer,
            Resolution::Forward => panic!("{name} was forwarded"),
        }
    }

    fn rdata(answer: &Answer) -> Vec<String> {
        answer.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn cluster_ip_service_a_and_nodata_aaaa() {
        let answer = resolve("Web.Default.svc.cluster.local.", RecordType::A);
        assert_eq!(answer.rcode, ResponseCode::NoError);
        assert_eq!(rdata(&answer), vec!["10.43.0.20"]);
        // The owner keeps the client's case; TTL is the configured 5 s.
        assert_eq!(
            answer.answers[0].name.to_ascii(),
            "Web.Default.svc.cluster.local."
        );
        assert_eq!(answer.answers[0].ttl, 5);

        let aaaa = resolve("web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(aaaa.rcode, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        assert_eq!(aaaa.authorities[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn srv_for_named_ports_only() {
        let answer = resolve("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            rdata(&answer),
            vec!["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(answer.additionals.len(), 1);
        assert_eq!(answer.additionals[0].data.to_string(), "10.43.0.20");

        let wrong_proto = resolve("_http._udp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(wrong_proto.rcode, ResponseCode::NXDomain);
        let a_on_srv_name = resolve("_http._tcp.web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a_on_srv_name.rcode, ResponseCode::NoError);
        assert!(a_on_srv_name.answers.is_empty());
    }

    #[test]
    fn headless_publishes_ready_endpoints_and_hostnames() {
        let answer = resolve("db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&answer), vec!["10.42.0.7", "10.42.0.8"]);

        let host = resolve("db-0.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&host), vec!["10.42.0.7"]);
        let dashed = resolve("10-42-0-8.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&dashed), vec!["10.42.0.8"]);
        let not_ready = resolve("10-42-0-9.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(not_ready.rcode, ResponseCode::NXDomain);

        let srv = resolve("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            rdata(&srv),
            vec![
                "0 50 5432 db-0.db.default.svc.cluster.local.",
                "0 50 5432 10-42-0-8.db.default.svc.cluster.local."
            ]
        );
        assert_eq!(srv.additionals.len(), 2);

        let empty = resolve("empty.default.svc.cluster.local.", RecordType::A);
        assert_eq!(empty.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn external_name_is_a_cname_for_every_type() {
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let answer = resolve("ext.default.svc.cluster.local.", qtype);
            assert_eq!(rdata(&answer), vec!["example.com."]);
            assert_eq!(answer.answers[0].record_type(), RecordType::CNAME);
        }
    }

    #[test]
    fn pods_and_negative_answers() {
        let pod = resolve("10-42-3-4.default.pod.cluster.local.", RecordType::A);
        assert_eq!(rdata(&pod), vec!["10.42.3.4"]);
        let other_ns = resolve("10-42-3-4.nope.pod.cluster.local.", RecordType::A);
        assert_eq!(other_ns.rcode, ResponseCode::NXDomain);

        let missing = resolve("nope.default.svc.cluster.local.", RecordType::A);
        assert_eq!(missing.rcode, ResponseCode::NXDomain);
        assert_eq!(missing.authorities.len(), 1);
        let soa = missing.authorities[0].data.to_string();
        assert!(
            soa.starts_with("ns.dns.cluster.local. hostmaster.cluster.local."),
            "{soa}"
        );

        let expanded = resolve(
            "web.default.svc.cluster.local.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(expanded.rcode, ResponseCode::NXDomain);

        let namespace = resolve("default.svc.cluster.local.", RecordType::A);
        assert_eq!(namespace.rcode, ResponseCode::NoError);
        assert!(namespace.answers.is_empty());
        let version = resolve("dns-version.cluster.local.", RecordType::TXT);
        assert_eq!(rdata(&version), vec!["1.1.0"]);
        let apex = resolve("cluster.local.", RecordType::SOA);
        assert_eq!(apex.answers.len(), 1);
    }

    #[test]
    fn ptr_for_cluster_ips_and_endpoints_others_forwarded() {
        let answer = resolve("20.0.43.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(rdata(&answer), vec!["web.default.svc.cluster.local."]);
        let endpoint = resolve("7.0.42.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(rdata(&endpoint), vec!["db-0.db.default.svc.cluster.local."]);

        let (config, index) = fixture();
        let authority = Authority {
            config: &config,
            index: &index,
        };
        for (name, qtype) in [
            ("1.2.0.192.in-addr.arpa.", RecordType::PTR),
            ("example.com.", RecordType::A),
        ] {
            assert!(matches!(
                authority.resolve(&Name::from_ascii(name).expect("name"), qtype),
                Resolution::Forward
            ));
        }
    }

    #[test]
    fn unsynced_index_answers_servfail_not_nxdomain() {
        let (config, _) = fixture();
        let index = ClusterIndex::new();
        let authority = Authority {
            config: &config,
            index: &index,
        };
        let Resolution::Answer(answer) = authority.resolve(
            &Name::from_ascii("web.default.svc.cluster.local.").expect("name"),
            RecordType::A,
        ) else {
            panic!("forwarded");
        };
        assert_eq!(answer.rcode, ResponseCode::ServFail);
    }

    #[test]
    fn updates_and_deletes_rebuild_views_and_reverse_entries() {
        let (config, index) = fixture();
        let authority = Authority {
            config: &config,
            index: &index,
        };
        let web = service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.21", "clusterIPs": ["10.43.0.21"]}
        }));
        index.apply_service(&web);
        assert!(index.reverse("10.43.0.20".parse().expect("ip")).is_empty());
        assert_eq!(
            index.reverse("10.43.0.21".parse().expect("ip")),
            vec!["web.default.svc"]
        );
        index.delete_service(&web);
        let Resolution::Answer(answer) = authority.resolve(
            &Name::from_ascii("web.default.svc.cluster.local.").expect("name"),
            RecordType::A,
        ) else {
            panic!("forwarded");
        };
        assert_eq!(answer.rcode, ResponseCode::NXDomain);
        assert!(index.reverse("10.43.0.21".parse().expect("ip")).is_empty());
    }
}
