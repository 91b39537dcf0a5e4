//! Containers: OCI runtime specs and the per-pod shim that runs them with youki's libcontainer.
//!
//! * `spec`: a runtime-level container description ([`ContainerConfig`]) → OCI runtime spec.
//! * `seccomp`: the `RuntimeDefault` seccomp allow-list.
//! * `cgroup`: cgroup v1 / v2 / hybrid layout detection, OOM-kill counters, cgroup removal.
//! * `shim`: the per-pod shim process (`skiff shim`), single-threaded, on libcontainer.
//! * `protocol`: the shim's JSON-lines requests and replies, and its state file.
//! * `cri_log`: container output → CRI-format log files.
//! * `client`: [`ShimClient`], the agent's async side: spawn a shim, re-attach, make requests.
//!
//! Flow: the agent builds a [`ContainerConfig`] per container, turns it into a spec with
//! [`runtime_spec`], spawns one shim per pod with [`ShimClient::spawn_shim`] (or re-attaches to a
//! running one with [`ShimClient::connect`] after a restart) and asks it to start, wait for,
//! kill, exec into and delete containers.

pub mod cgroup;
pub use cgroup::PodLimits;
pub mod client;
mod cri_log;
pub mod protocol;
mod seccomp;
pub mod shim;
pub mod spec;

pub use client::{ClientError, ExecProcess, ShimClient};
pub use protocol::{ContainerState, ContainerStatus, LogRotation, ShimState, read_state_file};
pub use shim::{ShimArgs, shim_main};
pub use spec::{
    CapabilityChanges, ContainerConfig, DEFAULT_CAPABILITIES, Mount, MountSource, Namespace,
    NamespaceKind, Resources, SeccompProfile, SpecError, User, default_namespaces,
    effective_capabilities, runtime_spec,
};
