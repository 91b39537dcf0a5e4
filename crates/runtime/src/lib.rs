//! The container runtime: images and containers, with no knowledge of the Kubernetes API (the
//! agent translates pods into what this crate takes).
//!
//! * `image`: the content store under the data dir, pulling from registries (`oci-client`),
//!   importing OCI layouts and `docker save` tarballs, unpacking layers (whiteouts, opaque
//!   directories) and overlayfs snapshots.
//! * `container`: OCI runtime specs from a container description, and the per-pod shim
//!   (`skiff shim`) that creates containers with youki's `libcontainer`, reaps them, records exit
//!   codes and writes CRI-format logs.

pub mod container;
pub mod image;
