//! Prometheus metrics of the DNS server. Names mirror CoreDNS's (`coredns_dns_requests_total`,
//! `coredns_dns_responses_total`, `coredns_forward_requests_total`,
//! `coredns_dns_request_duration_seconds`) under Skiff's prefix, so dashboards translate.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// Query type: A, AAAA, SRV …
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RcodeLabels {
    /// Response code: NOERROR, NXDOMAIN, SERVFAIL …
    pub rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream resolver, `ip:port`.
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `cluster` (answered from the index) or `forward` (relayed upstream).
    pub source: String,
}

/// The DNS server's counters. Cheap to clone; clones share the values.
#[derive(Clone)]
pub struct DnsMetrics {
    requests: Family<TypeLabels, Counter>,
    responses: Family<RcodeLabels, Counter>,
    forwards: Family<UpstreamLabels, Counter>,
    forward_failures: Counter,
    durations: Family<SourceLabels, Histogram>,
    registry: Arc<Registry>,
}

impl Default for DnsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsMetrics {
    pub fn new() -> Self {
        let requests = Family::<TypeLabels, Counter>::default();
        let responses = Family::<RcodeLabels, Counter>::default();
        let forwards = Family::<UpstreamLabels, Counter>::default();
        let forward_failures = Counter::default();
        // CoreDNS's buckets: 0.25 ms doubling to ~8 s.
        let durations = Family::<SourceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00025, 2.0, 16,
            ))
        });
        let mut registry = Registry::default();
        let metrics = DnsMetrics {
            requests,
            responses,
            forwards,
            forward_failures,
            durations,
            registry: Arc::new(Registry::default()),
        };
        metrics.register(&mut registry);
        DnsMetrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// Adds these metrics to another registry (the process-wide `/metrics`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "skiff_dns_requests",
            "DNS queries received, by query type",
            self.requests.clone(),
        );
        registry.register(
            "skiff_dns_responses",
            "DNS responses sent, by response code",
            self.responses.clone(),
        );
        registry.register(
            "skiff_dns_forward_requests",
            "Queries relayed to an upstream resolver, by upstream",
            self.forwards.clone(),
        );
        registry.register(
            "skiff_dns_forward_failures",
            "Forwarded queries no upstream answered (the client got SERVFAIL)",
            self.forward_failures.clone(),
        );
        registry.register(
            "skiff_dns_request_duration_seconds",
            "Time to answer a query, by where the answer came from",
            self.durations.clone(),
        );
    }

    /// The metrics alone in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub(crate) fn observe(&self, qtype: &str, rcode: &str, forwarded: bool, took: Duration) {
        self.requests
            .get_or_create(&TypeLabels {
                r#type: qtype.to_string(),
            })
            .inc();
        self.responses
            .get_or_create(&RcodeLabels {
                rcode: rcode.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&SourceLabels {
                source: if forwarded { "forward" } else { "cluster" }.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn forwarded(&self, upstream: std::net::SocketAddr) {
        self.forwards
            .get_or_create(&UpstreamLabels {
                to: upstream.to_string(),
            })
            .inc();
    }

    pub(crate) fn forward_failed(&self) {
        self.forward_failures.inc();
    }

    /// Queries received of `qtype` ("A", "SRV" …).
    pub fn requests(&self, qtype: &str) -> u64 {
        self.requests
            .get_or_create(&TypeLabels {
                r#type: qtype.to_string(),
            })
            .get()
    }

    /// Responses sent with `rcode` ("NOERROR", "NXDOMAIN", "SERVFAIL" …).
    pub fn responses(&self, rcode: &str) -> u64 {
        self.responses
            .get_or_create(&RcodeLabels {
                rcode: rcode.to_string(),
            })
            .get()
    }

    /// Queries relayed upstream, over all upstreams.
    pub fn forwards(&self) -> u64 {
        let mut total = 0;
        // Family has no iterator; the encoded text is the one public view of all label sets.
        for line in self.encode().lines() {
            if let Some(rest) = line.strip_prefix("skiff_dns_forward_requests_total{")
                && let Some(value) = rest.rsplit(' ').next()
            {
                total += value.parse::<u64>().unwrap_or(0);
            }
        }
        total
    }

    /// Forwards that ended in SERVFAIL.
    pub fn forward_failures(&self) -> u64 {
        self.forward_failures.get()
    }
}
