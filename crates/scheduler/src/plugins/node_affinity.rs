//! NodeAffinity: `spec.nodeSelector` and required node affinity must match the node's labels;
//! preferred terms add their weight to the node's score.

use super::{Code, Plugin, Status};
use crate::cache::NodeInfo;
use crate::pod_info::{PodInfo, node_selector_term_matches};

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    if pod.required_node_affinity.matches(&node.name, &node.labels) {
        return None;
    }
    Some(Status::new(
        Code::UnschedulableAndUnresolvable,
        Plugin::NodeAffinity,
        REASON,
    ))
}

/// Sum of the weights of preferred terms the node matches.
pub fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    pod.preferred_node_affinity
        .iter()
        .filter(|(_, term)| node_selector_term_matches(term, &node.name, &node.labels))
        .map(|(w, _)| *w)
        .sum()
}
