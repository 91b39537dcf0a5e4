//! Prometheus metrics of the ingress proxy. Names follow ingress-nginx's
//! (`nginx_ingress_controller_requests`, `…_upstream_latency_seconds`) under Skiff's prefix.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// The HTTP status code sent to the client.
    pub status: u16,
}

/// The proxy's counters. Cheap to clone; clones share the values.
#[derive(Clone)]
pub struct IngressMetrics {
    requests: Family<StatusLabels, Counter>,
    upstream_latency: Histogram,
    connect_failures: Counter,
    registry: Arc<Registry>,
}

impl Default for IngressMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IngressMetrics {
    pub fn new() -> Self {
        let metrics = IngressMetrics {
            requests: Family::default(),
            // 0.5 ms doubling to ~33 s.
            upstream_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 17)),
            connect_failures: Counter::default(),
            registry: Arc::new(Registry::default()),
        };
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        IngressMetrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// Adds these metrics to another registry (the process-wide `/metrics`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "skiff_ingress_requests",
            "Requests answered by the ingress proxy, by status code",
            self.requests.clone(),
        );
        registry.register(
            "skiff_ingress_upstream_latency_seconds",
            "Time from sending a request to a backend to its response headers",
            self.upstream_latency.clone(),
        );
        registry.register(
            "skiff_ingress_upstream_connect_failures",
            "Connections to backend endpoints that failed (each is retried on the next endpoint)",
            self.connect_failures.clone(),
        );
    }

    /// The metrics alone in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Requests answered with `status` so far.
    pub fn requests(&self, status: u16) -> u64 {
        self.requests.get_or_create(&StatusLabels { status }).get()
    }

    pub(crate) fn response(&self, status: u16) {
        self.requests.get_or_create(&StatusLabels { status }).inc();
    }

    pub(crate) fn upstream_latency(&self, took: Duration) {
        self.upstream_latency.observe(took.as_secs_f64());
    }

    pub(crate) fn connect_failure(&self) {
        self.connect_failures.inc();
    }
}
