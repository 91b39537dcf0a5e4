//! Resource arithmetic as upstream's scheduler framework does it (`framework.Resource` and
//! `k8s.io/component-helpers/resource.PodRequests`): a pod's effective request is
//! `max(sum(containers) + sidecars, max(init containers))` plus `spec.overhead`, with restartable
//! init containers (sidecars) counted as running next to every later init container and the
//! app containers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Upstream's `DefaultMilliCPURequest`: what a container without a cpu request counts as when
/// spreading (scoring only, never for fit).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Upstream's `DefaultMemoryRequest` (200 MB in binary units).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of each resource: cpu in millicores, everything else in whole units (bytes for
/// memory and ephemeral-storage), rounded up like `Quantity.Value()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Pods a node allows (only meaningful for allocatable).
    pub allowed_pods: i64,
    /// Extended resources, hugepages and anything else by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// Reads a resource list (`requests`, `allocatable`, `overhead`); unparsable quantities count
    /// as zero because the API server validated them already.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list {
            r.set(name, quantity_value(name, q));
        }
        r
    }

    fn set(&mut self, name: &str, value: i64) {
        match name {
            "cpu" => self.milli_cpu = value,
            "memory" => self.memory = value,
            "ephemeral-storage" => self.ephemeral_storage = value,
            "pods" => self.allowed_pods = value,
            other => {
                if is_scalar_resource(other) {
                    self.scalar.insert(other.to_string(), value);
                }
            }
        }
    }

    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.saturating_add(other.allowed_pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_sub(other.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.saturating_sub(other.allowed_pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_sub(*v);
        }
    }

    /// Per resource, the larger of the two.
    fn set_max(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// Upstream's `IsScalarResourceName`: extended resources (a domain-qualified name outside
/// `kubernetes.io/`), hugepages, attachable volumes and the native `requests.*`-free rest.
fn is_scalar_resource(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && !name.starts_with("kubernetes.io/"))
}

/// A quantity's value in the scheduler's unit for `name`: millis for cpu, otherwise the whole
/// value rounded up (`Quantity.Value()`).
pub fn quantity_value(name: &str, q: &Quantity) -> i64 {
    let Ok(millis) = api::validation::parse_quantity(&q.0) else {
        return 0;
    };
    let v = if name == "cpu" {
        millis
    } else {
        // Round up to a whole unit, as Value() does.
        millis.div_euclid(1000) + i128::from(millis.rem_euclid(1000) != 0)
    };
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn container_requests(c: &Container, non_missing: bool) -> Resource {
    let mut r = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resource::from_list)
        .unwrap_or_default();
    if non_missing {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        if requests.is_none_or(|m| !m.contains_key("cpu")) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if requests.is_none_or(|m| !m.contains_key("memory")) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// The pod's effective request (`PodRequests`). With `non_missing`, containers without a cpu
/// or memory request count the defaults above, as upstream's scoring does so that best-effort
/// pods still spread.
pub fn pod_requests(pod: &Pod, non_missing: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_missing));
    }
    let mut restartable_init = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let mut creqs = container_requests(c, non_missing);
        if c.restart_policy.as_deref() == Some("Always") {
            // A sidecar keeps running next to the app containers and every later init container.
            reqs.add(&creqs);
            restartable_init.add(&creqs);
            creqs = restartable_init.clone();
        } else {
            creqs.add(&restartable_init);
        }
        init_max.set_max(&creqs);
    }
    reqs.set_max(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        reqs.add(&Resource::from_list(overhead));
    }
    reqs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn sums_containers_and_takes_init_max_and_overhead() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}}
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
            ],
            "overhead": {"cpu": "50m"}
        }}));
        let r = pod_requests(&p, false);
        assert_eq!(r.milli_cpu, 1050);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(r.scalar("example.com/gpu"), 1);
    }

    #[test]
    fn sidecars_add_to_app_containers_and_later_inits() {
        let p = pod(json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "init", "resources": {"requests": {"cpu": "500m"}}}
            ]
        }}));
        // app 100 + sidecar 200 = 300; init 500 + sidecar 200 = 700 → 700.
        assert_eq!(pod_requests(&p, false).milli_cpu, 700);
    }

    #[test]
    fn non_missing_defaults_apply_per_container() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"cpu": "1"}}}
        ]}}));
        let r = pod_requests(&p, true);
        assert_eq!(r.milli_cpu, 1100);
        assert_eq!(r.memory, 2 * DEFAULT_MEMORY_REQUEST);
        assert!(pod_requests(&p, false).memory == 0);
    }

    #[test]
    fn quantities_round_up_to_units() {
        assert_eq!(quantity_value("memory", &Quantity("1500m".into())), 2);
        assert_eq!(quantity_value("cpu", &Quantity("1500m".into())), 1500);
        assert_eq!(quantity_value("memory", &Quantity("bogus".into())), 0);
    }
}
