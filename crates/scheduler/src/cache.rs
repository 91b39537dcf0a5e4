//! The scheduler cache (upstream's `internal/cache`): every Node with the pods assigned to it
//! and what they request, plus the pods this scheduler has *assumed* onto a node while their
//! binding is in flight, so that concurrent binds never overcommit a node.
//!
//! Upstream snapshots the cache before each cycle; here the scheduling loop works on the cache
//! under its lock, which gives the same consistency without copying 5,000 NodeInfos.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};

use crate::pod_info::{HostPort, PodInfo, PodKey};
use crate::resources::Resource;

/// Label the node tree groups zones by (upstream `GetZoneKey` uses region + zone).
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// One node and what is placed on it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    /// `None` while pods are known on a node the cache has not seen (or that was deleted).
    pub node: Option<Arc<Node>>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resource,
    pub requested: Resource,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub pods: Vec<Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
    /// Normalised image name → size in bytes, from `status.images`.
    pub images: HashMap<String, i64>,
    /// Pods here with any pod affinity / with required anti-affinity (InterPodAffinity skips
    /// nodes without them).
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_cpu += pod.non_zero_cpu;
        self.non_zero_memory += pod.non_zero_memory;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if pod.has_pod_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(pod);
    }

    /// Removes the pod with `key`; returns it if it was here.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_cpu -= pod.non_zero_cpu;
        self.non_zero_memory -= pod.non_zero_memory;
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if pod.has_pod_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        Some(pod)
    }

    fn set_node(&mut self, node: Arc<Node>) {
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        self.taints = spec.taints.unwrap_or_default();
        self.unschedulable = spec.unschedulable.unwrap_or(false);
        let status = node.status.as_ref();
        self.allocatable = status
            .and_then(|s| s.allocatable.as_ref())
            .map(Resource::from_list)
            .unwrap_or_default();
        self.images = status
            .and_then(|s| s.images.as_ref())
            .map(|imgs| {
                imgs.iter()
                    .flat_map(|img| {
                        let size = img.size_bytes.unwrap_or(0);
                        img.names
                            .iter()
                            .flatten()
                            .map(move |n| (crate::pod_info::normalized_image_name(n), size))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.node = Some(node);
    }

    /// The zone key the node tree interleaves by.
    fn zone(&self) -> String {
        let region = self
            .labels
            .get(REGION_LABEL)
            .map(String::as_str)
            .unwrap_or("");
        let zone = self
            .labels
            .get(ZONE_LABEL)
            .map(String::as_str)
            .unwrap_or("");
        format!("{region}:\x00:{zone}")
    }
}

/// What changed in a node update, for deciding which unschedulable pods may now fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeChange {
    pub added: bool,
    pub allocatable: bool,
    pub labels: bool,
    pub taints: bool,
    pub schedulable: bool,
    pub images: bool,
}

impl NodeChange {
    pub fn any(&self) -> bool {
        self.added
            || self.allocatable
            || self.labels
            || self.taints
            || self.schedulable
            || self.images
    }
}

/// All nodes and assigned or assumed pods.
#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, NodeInfo>,
    /// Node names in node-tree order (zones interleaved), rebuilt when nodes come or go.
    order: Vec<String>,
    order_dirty: bool,
    /// Where each placed pod is, and whether it is only assumed.
    placed: HashMap<PodKey, (String, bool)>,
    /// Image → number of nodes that have it (ImageLocality's spread factor).
    image_nodes: HashMap<String, usize>,
    /// Namespace labels, for affinity terms with a namespaceSelector.
    namespaces: HashMap<String, BTreeMap<String, String>>,
    /// Pods nominated to a node by preemption and not yet bound: node → pods.
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominated_of: HashMap<PodKey, String>,
    /// Placed pods with any pod affinity, cluster-wide.
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
}

impl Cache {
    /// Adds or updates a node and says what changed.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> NodeChange {
        let Some(name) = node.metadata.name.clone() else {
            return NodeChange::default();
        };
        let info = self.nodes.entry(name.clone()).or_insert_with(|| NodeInfo {
            name: name.clone(),
            ..NodeInfo::default()
        });
        let was_known = info.node.is_some();
        let before = (
            info.allocatable.clone(),
            info.labels.clone(),
            info.taints.clone(),
            info.unschedulable,
            info.images.len(),
        );
        let old_images: Vec<String> = info.images.keys().cloned().collect();
        info.set_node(node);
        let change = if was_known {
            NodeChange {
                added: false,
                allocatable: before.0 != info.allocatable,
                labels: before.1 != info.labels,
                taints: before.2 != info.taints,
                schedulable: before.3 != info.unschedulable,
                images: before.4 != info.images.len(),
            }
        } else {
            NodeChange {
                added: true,
                ..NodeChange::default()
            }
        };
        let new_images: Vec<String> = info.images.keys().cloned().collect();
        if !was_known || change.labels {
            self.order_dirty = true;
        }
        for img in old_images {
            if let Some(n) = self.image_nodes.get_mut(&img) {
                *n = n.saturating_sub(1);
            }
        }
        for img in new_images {
            *self.image_nodes.entry(img).or_default() += 1;
        }
        self.image_nodes.retain(|_, n| *n > 0);
        change
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(info) = self.nodes.get_mut(name) else {
            return;
        };
        for img in info.images.keys() {
            if let Some(n) = self.image_nodes.get_mut(img) {
                *n = n.saturating_sub(1);
            }
        }
        self.image_nodes.retain(|_, n| *n > 0);
        // Upstream keeps a NodeInfo without its node while pods still point at it.
        if info.pods.is_empty() {
            self.nodes.remove(name);
        } else {
            info.node = None;
            info.images.clear();
        }
        self.order_dirty = true;
    }

    /// Places a bound pod (confirming an assumed one); moves it if its node changed.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        let Some(node) = pod.node_name.clone() else {
            return;
        };
        self.remove_pod(&pod.key);
        self.clear_nomination(&pod.key);
        self.place(pod, node, false);
    }

    /// Assumes `pod` onto `node` while its binding is in flight.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove_pod(&pod.key);
        self.clear_nomination(&pod.key);
        self.place(pod, node.to_string(), true);
    }

    fn place(&mut self, pod: Arc<PodInfo>, node: String, assumed: bool) {
        if pod.has_pod_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.placed.insert(pod.key.clone(), (node.clone(), assumed));
        let info = self.nodes.entry(node.clone()).or_insert_with(|| NodeInfo {
            name: node,
            ..NodeInfo::default()
        });
        info.add_pod(pod);
    }

    /// Whether the pod is placed (bound or assumed).
    pub fn is_placed(&self, key: &str) -> bool {
        self.placed.contains_key(key)
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.placed.get(key).is_some_and(|(_, assumed)| *assumed)
    }

    /// Forgets an assumed pod whose binding failed.
    pub fn forget(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.remove_pod(key);
        }
    }

    /// Removes a placed pod; returns it and its node.
    pub fn remove_pod(&mut self, key: &str) -> Option<(Arc<PodInfo>, String)> {
        let (node, _) = self.placed.remove(key)?;
        let info = self.nodes.get_mut(&node)?;
        let pod = info.remove_pod(key)?;
        if pod.has_pod_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        if info.node.is_none() && info.pods.is_empty() {
            self.nodes.remove(&node);
        }
        Some((pod, node))
    }

    /// Records that `pod` is nominated to `node` (or clears it with `None`).
    pub fn set_nomination(&mut self, pod: Arc<PodInfo>, node: Option<String>) {
        self.clear_nomination(&pod.key);
        if let Some(node) = node {
            self.nominated_of.insert(pod.key.clone(), node.clone());
            self.nominated.entry(node).or_default().push(pod);
        }
    }

    pub fn clear_nomination(&mut self, key: &str) {
        if let Some(node) = self.nominated_of.remove(key)
            && let Some(list) = self.nominated.get_mut(&node)
        {
            list.retain(|p| p.key != key);
            if list.is_empty() {
                self.nominated.remove(&node);
            }
        }
    }

    /// Pods nominated to `node` that are at least as important as a pod of `priority` (they
    /// hold their place against it), other than `except`.
    pub fn nominated_for<'a>(
        &'a self,
        node: &str,
        priority: i32,
        except: &'a str,
    ) -> impl Iterator<Item = &'a Arc<PodInfo>> + 'a {
        self.nominated
            .get(node)
            .into_iter()
            .flatten()
            .filter(move |p| p.priority >= priority && p.key != except)
    }

    pub fn upsert_namespace(&mut self, name: String, labels: BTreeMap<String, String>) {
        self.namespaces.insert(name, labels);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces.get(name).cloned()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).filter(|n| n.node.is_some())
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        self.nodes.get_mut(name).filter(|n| n.node.is_some())
    }

    /// Nodes with pods that have affinity terms (for existing-pod checks).
    pub fn nodes_with_affinity_pods(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes
            .values()
            .filter(|n| n.pods_with_affinity > 0 && n.node.is_some())
    }

    /// Every known node (with a Node object), in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.node.is_some())
    }

    pub fn image_node_count(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    /// Node names in node-tree order: zones interleaved round-robin like upstream's `nodeTree`,
    /// so sampling a fraction of nodes still spreads across zones.
    pub fn refresh_order(&mut self) {
        if self.order_dirty {
            let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut names: Vec<&NodeInfo> =
                self.nodes.values().filter(|n| n.node.is_some()).collect();
            names.sort_by(|a, b| a.name.cmp(&b.name));
            for n in names {
                zones.entry(n.zone()).or_default().push(n.name.clone());
            }
            let mut lists: Vec<std::vec::IntoIter<String>> =
                zones.into_values().map(Vec::into_iter).collect();
            self.order.clear();
            loop {
                let mut any = false;
                for list in &mut lists {
                    if let Some(n) = list.next() {
                        self.order.push(n);
                        any = true;
                    }
                }
                if !any {
                    break;
                }
            }
            self.order_dirty = false;
        }
    }

    /// The node-tree order as of the last [`Cache::refresh_order`].
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// The node `pod` is nominated to, if any.
    pub fn nominated_node_of(&self, key: &str) -> Option<&str> {
        self.nominated_of.get(key).map(String::as_str)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.values().filter(|n| n.node.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, zone: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {ZONE_LABEL: zone}},
                "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}
            }))
            .expect("node"),
        )
    }

    fn pod(name: &str, node: Option<&str>, cpu: &str) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
                }))
                .expect("pod"),
            ),
            0,
        ))
    }

    #[test]
    fn assumed_pods_count_until_forgotten_and_confirm_once() {
        let mut c = Cache::default();
        assert!(c.upsert_node(node("a", "z1")).added);
        c.assume(pod("p", None, "500m"), "a");
        assert_eq!(c.node("a").expect("a").requested.milli_cpu, 500);
        // The watch confirms the binding: still counted once.
        c.add_pod(pod("p", Some("a"), "500m"));
        assert_eq!(c.node("a").expect("a").requested.milli_cpu, 500);
        assert!(!c.is_assumed("default/p"));
        c.forget("default/p");
        assert_eq!(c.node("a").expect("a").requested.milli_cpu, 500);
        c.remove_pod("default/p");
        assert_eq!(c.node("a").expect("a").requested.milli_cpu, 0);
        c.assume(pod("q", None, "1"), "a");
        c.forget("default/q");
        assert_eq!(c.node("a").expect("a").requested.milli_cpu, 0);
    }

    #[test]
    fn node_order_interleaves_zones() {
        let mut c = Cache::default();
        for (n, z) in [
            ("a1", "a"),
            ("a2", "a"),
            ("a3", "a"),
            ("b1", "b"),
            ("c1", "c"),
        ] {
            c.upsert_node(node(n, z));
        }
        c.refresh_order();
        assert_eq!(c.order(), ["a1", "b1", "c1", "a2", "a3"]);
        c.remove_node("b1");
        c.refresh_order();
        assert_eq!(c.order(), ["a1", "c1", "a2", "a3"]);
    }

    #[test]
    fn node_updates_report_what_changed() {
        let mut c = Cache::default();
        c.upsert_node(node("a", "z"));
        assert!(!c.upsert_node(node("a", "z")).any());
        let change = c.upsert_node(node("a", "other"));
        assert!(change.labels && !change.allocatable);
    }
}
