//! The node agent (Skiff's kubelet). `skiff server` runs one in-process as its built-in node;
//! `skiff agent` runs it standalone. Either way it talks to the API server like any client.
//!
//! * `paths`: where a pod's state, shim socket, containers and logs live on the node.
//! * `node`: registers the Node (capacity, addresses, nodeInfo, conditions) and renews its
//!   Lease in kube-node-lease.
//! * `pods`: one worker per pod bound to this node — images, sandbox, containers through the
//!   per-pod shim, restart policy and backoff, graceful deletion, status.
//! * `network`: the pod sandbox's network (CNI through `net`, or the host's).
//! * `volume_sources`: configMap, secret, downwardAPI and projected volumes, written
//!   atomically like the kubelet's AtomicWriter.
//! * `service_proxy`: Services and EndpointSlices → the node's nftables dataplane
//!   (`net::proxy`), like kube-proxy's nftables mode.
//! * `server`: the kubelet HTTP server (logs, exec) the API server proxies `pods/log` and
//!   `pods/exec` to.

pub mod network;
pub mod node;
pub mod paths;
pub mod pods;
pub mod server;
pub mod service_proxy;
pub mod volume_sources;
