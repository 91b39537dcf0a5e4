//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that tolerate the
//! `node.kubernetes.io/unschedulable:NoSchedule` taint (DaemonSet pods do).

use k8s_openapi::api::core::v1::Taint;

use super::{Code, Plugin, Status};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    if !node.unschedulable {
        return None;
    }
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    };
    if pod
        .tolerations
        .iter()
        .any(|t| super::taint_toleration::tolerates(t, &taint))
    {
        return None;
    }
    Some(Status::new(
        Code::UnschedulableAndUnresolvable,
        Plugin::NodeUnschedulable,
        "node(s) were unschedulable",
    ))
}
