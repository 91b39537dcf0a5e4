//! Pod networking, with no knowledge of the Kubernetes API.
//!
//! * `netns`: named network namespaces under /run/netns (like `ip netns`), created and removed
//!   from the root mount namespace; the `Netns` trait with a real and a fake implementation.
//! * `cni`: the CNI runtime — network config lists, plugin chaining, ADD/DEL/CHECK, cached
//!   results for DEL, and Skiff's default bridge conflist; the `PodNetwork` trait with the real
//!   `CniRuntime` and a fake.
//! * `proxy`: the service proxy (kube-proxy's nftables mode): Services and EndpointSlices in its
//!   own types → rules in Skiff's `ip skiff` table, applied by full or partial `nft` transactions.
//!
//! The agent creates a pod's namespace with `netns`, then attaches it with `cni`, and on pod
//! removal runs DEL before deleting the namespace (DEL also works after it is gone).

pub mod cni;
pub mod netns;
pub mod proxy;
