//! The service proxy: Skiff's equivalent of kube-proxy in nftables mode. All rules live in one
//! table of Skiff's own (`table ip skiff`); nothing else on the host is touched.
//!
//! * `model`: Services, EndpointSlices and the node in the proxy's own types, and endpoint
//!   selection (ready, else serving-and-terminating; local ones for the Local policies).
//! * `rules`: the pure model → ruleset step (chains, sets, map elements as text).
//! * `transaction`: the `nft -f` script for a full sync (flush and refill in one transaction)
//!   or for the difference between two rulesets.
//! * `nft`: the narrow `Nft` trait, the `nft` binary behind it, and a recording fake.
//! * `proxier`: [`ServiceProxy`], which holds the state, syncs (full first, then partial) and
//!   counts.
//!
//! The agent translates API objects into `model` types, feeds them to a [`ServiceProxy`] and
//! calls [`ServiceProxy::sync`] after a short debounce.

pub mod model;
pub mod nft;
pub mod proxier;
pub mod rules;
pub mod transaction;

pub use model::{
    ClusterState, Endpoint, EndpointPort, EndpointSlice, Ipv4Cidr, ModelError, NodeConfig,
    Protocol, Service, ServiceName, ServicePort,
};
pub use nft::{Nft, NftCli, NftError, RecordingNft};
pub use proxier::{ProxyError, ProxyMetrics, ServiceProxy, SyncKind, SyncReport};
