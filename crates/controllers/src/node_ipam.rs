//! The node IPAM controller: gives each Node a pod CIDR (`spec.podCIDR`/`podCIDRs`) carved from
//! the cluster CIDR, like upstream's range allocator (`pkg/controller/nodeipam`, default
//! 10.42.0.0/16 in k3s with /24 per node).
//!
//! The reconcile works from current state: the CIDRs in use are the ones every Node in the
//! watch cache already carries, plus those this process assigned and has not seen come back
//! yet. It runs one reconcile at a time, so two Nodes never get the same range.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Context;

/// Why a Node could not get a range. `Exhausted` waits for a Node to go away; API errors are
/// retried.
#[derive(Debug, thiserror::Error)]
pub enum NodeIpamError {
    #[error(
        "cluster CIDR {cidr} has no free /{mask} left for node {node}; remove unused nodes or use a larger --cluster-cidr"
    )]
    Exhausted {
        cidr: String,
        mask: u8,
        node: String,
    },
    #[error("assigning pod CIDR {cidr} to node {node}: {source}")]
    Patch {
        node: String,
        cidr: String,
        #[source]
        source: kube::Error,
    },
}

/// An IPv4 range like 10.42.0.0/16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (e.g. 10.42.0.0/16)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: bad prefix length"))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        if u32::from(addr) & !mask != 0 {
            return Err(format!(
                "{s:?} has host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(u32::from(addr) & mask)
            ));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Ipv4Cidr {
    /// The `index`th subnet of length `mask` inside this range.
    fn subnet(&self, mask: u8, index: u32) -> Option<Ipv4Cidr> {
        let count = self.subnet_count(mask);
        (index < count).then(|| Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) + (index << (32 - mask))),
            prefix: mask,
        })
    }

    fn subnet_count(&self, mask: u8) -> u32 {
        if mask < self.prefix || mask > 32 {
            return 0;
        }
        1u32.checked_shl(u32::from(mask - self.prefix))
            .unwrap_or(u32::MAX)
    }
}

/// Picks the lowest subnet of `cluster` not in `used`.
pub fn allocate(cluster: Ipv4Cidr, mask: u8, used: &BTreeSet<String>) -> Option<Ipv4Cidr> {
    (0..cluster.subnet_count(mask))
        .filter_map(|i| cluster.subnet(mask, i))
        .find(|c| !used.contains(&c.to_string()))
}

struct State {
    cluster: Ipv4Cidr,
    mask: u8,
    nodes: kube::runtime::reflector::Store<Node>,
    /// Assigned here but possibly not yet visible in the watch cache.
    assigned: Mutex<BTreeSet<String>>,
    api: Api<Node>,
}

async fn reconcile(node: Arc<Node>, state: Arc<State>) -> Result<Action, NodeIpamError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let has_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_ref())
        .is_some_and(|c| !c.is_empty());
    if has_cidr || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut used: BTreeSet<String> = state
        .nodes
        .state()
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
        .collect();
    let cidr = {
        let assigned = state.assigned.lock().unwrap_or_else(|p| p.into_inner());
        used.extend(assigned.iter().cloned());
        allocate(state.cluster, state.mask, &used)
    }
    .ok_or_else(|| NodeIpamError::Exhausted {
        cidr: state.cluster.to_string(),
        mask: state.mask,
        node: name.clone(),
    })?;
    let cidr = cidr.to_string();
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    state
        .api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| NodeIpamError::Patch {
            node: name.clone(),
            cidr: cidr.clone(),
            source,
        })?;
    state
        .assigned
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(cidr.clone());
    tracing::info!(node = %name, pod_cidr = %cidr, "assigned pod CIDR");
    Ok(Action::await_change())
}

fn error_policy(_node: Arc<Node>, error: &NodeIpamError, _state: Arc<State>) -> Action {
    tracing::warn!(%error, "node IPAM");
    match error {
        NodeIpamError::Exhausted { .. } => Action::requeue(Duration::from_secs(60)),
        NodeIpamError::Patch { .. } => Action::requeue(Duration::from_secs(2)),
    }
}

/// Runs until `cancel` or `ctx.shutdown`.
pub async fn run(ctx: Context, cancel: CancellationToken) -> Result<(), NodeIpamError> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(1));
    let state = Arc::new(State {
        cluster: ctx.config.cluster_cidr,
        mask: ctx.config.node_cidr_mask,
        nodes: controller.store(),
        assigned: Mutex::default(),
        api,
    });
    let stop = {
        let (cancel, shutdown) = (cancel.clone(), ctx.shutdown.clone());
        async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
        }
    };
    controller
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "node IPAM");
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_the_lowest_free_subnet() {
        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().expect("cidr");
        let mut used = BTreeSet::new();
        assert_eq!(
            allocate(cluster, 24, &used).map(|c| c.to_string()),
            Some("10.42.0.0/24".into())
        );
        used.insert("10.42.0.0/24".to_string());
        used.insert("10.42.2.0/24".to_string());
        assert_eq!(
            allocate(cluster, 24, &used).map(|c| c.to_string()),
            Some("10.42.1.0/24".into())
        );
        let tiny: Ipv4Cidr = "10.42.0.0/23".parse().expect("cidr");
        used.insert("10.42.1.0/24".to_string());
        assert_eq!(allocate(tiny, 24, &used), None);
        assert!("10.42.0.1/16".parse::<Ipv4Cidr>().is_err());
    }
}
