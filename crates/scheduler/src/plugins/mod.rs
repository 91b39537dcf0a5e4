//! The default profile's filter and score plugins, in upstream's order and with upstream's
//! names, reasons and weights (`pkg/scheduler/framework/plugins`):
//!
//! * filters: NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts,
//!   NodeResourcesFit, PodTopologySpread, InterPodAffinity — the first that rejects a node
//!   gives its reasons, as upstream's `RunFilterPlugins` stops there;
//! * scores (weight): TaintToleration (3), NodeAffinity (2), PodTopologySpread (2),
//!   InterPodAffinity (2), NodeResourcesFit LeastAllocated (1),
//!   NodeResourcesBalancedAllocation (1), ImageLocality (1), each normalised to 0–100.
//!
//! Plugins that need cluster-wide state (pod affinity counts, spread counts) compute it once
//! per cycle in their `pre_filter`/`pre_score`, held in [`CycleState`].

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;

use std::borrow::Cow;

use crate::cache::{Cache, NodeInfo};
use crate::pod_info::PodInfo;

/// Upstream's `MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;

/// The plugins, as named in upstream's profile (used for requeueing decisions and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plugin {
    NodeUnschedulable,
    NodeName,
    TaintToleration,
    NodeAffinity,
    NodePorts,
    NodeResourcesFit,
    PodTopologySpread,
    InterPodAffinity,
    /// The preemption PostFilter (its dry run reports per-node statuses too).
    DefaultPreemption,
}

impl Plugin {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of plugins (which ones rejected a pod).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PluginSet(u16);

impl PluginSet {
    pub fn insert(&mut self, p: Plugin) {
        self.0 |= p.bit();
    }
    pub fn contains(&self, p: Plugin) -> bool {
        self.0 & p.bit() != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    pub fn intersects(&self, other: PluginSet) -> bool {
        self.0 & other.0 != 0
    }
    pub fn of(plugins: &[Plugin]) -> PluginSet {
        let mut s = PluginSet::default();
        for p in plugins {
            s.insert(*p);
        }
        s
    }
}

/// Upstream's status codes for a rejected node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Evicting pods could make it fit: preemption may help.
    Unschedulable,
    /// Nothing the scheduler can do about it on this node.
    UnschedulableAndUnresolvable,
}

/// Why a node was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub plugin: Plugin,
    pub reasons: Vec<Cow<'static, str>>,
}

impl Status {
    pub fn new(code: Code, plugin: Plugin, reason: impl Into<Cow<'static, str>>) -> Status {
        Status {
            code,
            plugin,
            reasons: vec![reason.into()],
        }
    }
}

/// Per-cycle state of the plugins that look beyond one node.
#[derive(Clone)]
pub struct CycleState {
    pub affinity: Option<inter_pod_affinity::FilterState>,
    pub spread: Option<pod_topology_spread::FilterState>,
}

impl CycleState {
    /// Runs the PreFilter of the plugins that need it.
    pub fn pre_filter(pod: &PodInfo, cache: &Cache) -> CycleState {
        CycleState {
            affinity: inter_pod_affinity::pre_filter(pod, cache),
            spread: pod_topology_spread::pre_filter(pod, cache),
        }
    }
}

/// Extra load on a node from pods nominated to it that the candidate must not displace.
#[derive(Clone, Debug, Default)]
pub struct Nominated {
    pub requests: crate::resources::Resource,
    pub pods: usize,
    pub ports: Vec<crate::pod_info::HostPort>,
}

impl Nominated {
    pub fn on(cache: &Cache, node: &str, pod: &PodInfo) -> Option<Nominated> {
        let mut n: Option<Nominated> = None;
        for p in cache.nominated_for(node, pod.priority, &pod.key) {
            let e = n.get_or_insert_with(Nominated::default);
            e.requests.add(&p.requests);
            e.pods += 1;
            e.ports.extend(p.host_ports.iter().cloned());
        }
        n
    }
}

/// Runs every filter on one node; `None` means it fits.
pub fn run_filters(
    pod: &PodInfo,
    node: &NodeInfo,
    state: &CycleState,
    nominated: Option<&Nominated>,
) -> Option<Status> {
    node_unschedulable::filter(pod, node)
        .or_else(|| node_name_filter(pod, node))
        .or_else(|| taint_toleration::filter(pod, node))
        .or_else(|| node_affinity::filter(pod, node))
        .or_else(|| node_ports::filter(pod, node, nominated))
        .or_else(|| node_resources::filter(pod, node, nominated))
        .or_else(|| state.spread.as_ref().and_then(|s| s.filter(pod, node)))
        .or_else(|| state.affinity.as_ref().and_then(|s| s.filter(node)))
}

/// NodeName: a pod that names a node fits only there.
fn node_name_filter(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    let wanted = pod.node_name.as_deref()?;
    (wanted != node.name).then(|| {
        Status::new(
            Code::UnschedulableAndUnresolvable,
            Plugin::NodeName,
            "node(s) didn't match the requested node name",
        )
    })
}

/// Upstream's `DefaultNormalizeScore`: scales so the best node gets `MAX_NODE_SCORE`; `reverse`
/// flips it (fewer is better). All zero stays zero (or all max when reversed).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// Scores every feasible node with the default profile; returns the weighted totals.
pub fn score_nodes(pod: &PodInfo, nodes: &[&NodeInfo], cache: &Cache) -> Vec<i64> {
    let n = nodes.len();
    let mut total = vec![0i64; n];
    let mut add = |scores: &[i64], weight: i64| {
        for (t, s) in total.iter_mut().zip(scores) {
            *t += s * weight;
        }
    };
    // TaintToleration (3).
    let mut s: Vec<i64> = nodes
        .iter()
        .map(|node| taint_toleration::score(pod, node))
        .collect();
    default_normalize(&mut s, true);
    add(&s, 3);
    // NodeAffinity (2).
    if !pod.preferred_node_affinity.is_empty() {
        let mut s: Vec<i64> = nodes
            .iter()
            .map(|node| node_affinity::score(pod, node))
            .collect();
        default_normalize(&mut s, false);
        add(&s, 2);
    }
    // PodTopologySpread (2).
    if let Some(state) = pod_topology_spread::pre_score(pod, nodes, cache) {
        add(&state.scores(pod, nodes), 2);
    }
    // InterPodAffinity (2).
    if let Some(state) = inter_pod_affinity::pre_score(pod, cache) {
        add(&state.scores(nodes), 2);
    }
    // NodeResourcesFit LeastAllocated (1) and BalancedAllocation (1).
    let s: Vec<i64> = nodes
        .iter()
        .map(|node| node_resources::least_allocated_score(pod, node))
        .collect();
    add(&s, 1);
    if node_resources::balanced_applies(pod) {
        let s: Vec<i64> = nodes
            .iter()
            .map(|node| node_resources::balanced_allocation_score(pod, node))
            .collect();
        add(&s, 1);
    }
    // ImageLocality (1).
    if !pod.images.is_empty() {
        let total_nodes = cache.node_count();
        let s: Vec<i64> = nodes
            .iter()
            .map(|node| image_locality::score(pod, node, cache, total_nodes))
            .collect();
        add(&s, 1);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_normalize_scales_and_reverses() {
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 1, 2];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 100]);
    }

    #[test]
    fn plugin_sets() {
        let s = PluginSet::of(&[Plugin::NodeResourcesFit, Plugin::NodePorts]);
        assert!(s.contains(Plugin::NodePorts));
        assert!(!s.contains(Plugin::NodeAffinity));
        assert!(s.intersects(PluginSet::of(&[Plugin::NodePorts])));
        assert!(!s.intersects(PluginSet::of(&[Plugin::TaintToleration])));
    }
}
