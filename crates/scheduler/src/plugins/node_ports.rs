//! NodePorts: a pod's host ports must be free on the node (same protocol and port, with a
//! wildcard address conflicting with any).

use super::{Code, Nominated, Plugin, Status};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;

pub fn filter(pod: &PodInfo, node: &NodeInfo, nominated: Option<&Nominated>) -> Option<Status> {
    let used = node
        .used_ports
        .iter()
        .chain(nominated.into_iter().flat_map(|n| n.ports.iter()));
    let mut conflict = false;
    for u in used {
        if pod.host_ports.iter().any(|p| p.conflicts(u)) {
            conflict = true;
            break;
        }
    }
    conflict.then(|| {
        Status::new(
            Code::Unschedulable,
            Plugin::NodePorts,
            "node(s) didn't have free ports for the requested pod ports",
        )
    })
}
