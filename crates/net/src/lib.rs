//! Pod networking, with no knowledge of the Kubernetes API.
//!
//! * `netns`: named network namespaces under /run/netns (like `ip netns`), created and removed
//!   from the root mount namespace.
//! * `cni`: the CNI runtime — network config lists, plugin chaining, ADD/DEL/CHECK, cached
//!   results for DEL, and Skiff's default bridge conflist.

pub mod cni;
pub mod netns;
