//! Prometheus metrics of the API server, served at `/metrics` in the text format.
//! Names follow upstream's where the meaning is the same (`apiserver_request_total`,
//! `apiserver_request_duration_seconds`, `apiserver_longrunning_requests`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
    pub resource: String,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<VerbLabels, Histogram>,
    pub watchers: Gauge,
    pub store_revision: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<VerbLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        });
        let watchers = Gauge::default();
        let store_revision = Gauge::default();
        registry.register("apiserver_request", "Requests by verb, resource and HTTP code", requests.clone());
        registry.register("apiserver_request_duration_seconds", "Request latency by verb and resource (watches: time to establish)", durations.clone());
        registry.register("apiserver_longrunning_requests", "Open watch requests", watchers.clone());
        registry.register("skiff_watch_cache_revision", "The newest store revision seen by the watch cache", store_revision.clone());
        Metrics { registry: Arc::new(Mutex::new(registry)), requests, durations, watchers, store_revision }
    }

    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { verb: verb.into(), resource: resource.into(), code: code.to_string() })
            .inc();
        self.durations
            .get_or_create(&VerbLabels { verb: verb.into(), resource: resource.into() })
            .observe(took.as_secs_f64());
    }

    /// The text exposition format.
    /// Adds another component's metrics (scheduler, cluster DNS, ingress) to this `/metrics`:
    /// one endpoint for the whole server process, like upstream's legacy registry.
    pub fn register(&self, add: impl FnOnce(&mut Registry)) {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        add(&mut reg);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }
}
