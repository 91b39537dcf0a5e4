//! Images: a content-addressed store, import, pull, unpack and overlayfs snapshots.
//!
//! * `reference`: image references normalised like Docker, and the pull policy decision.
//! * `manifest`: the OCI / Docker JSON documents (manifests, indexes, configs).
//! * `store`: blobs by digest, the reference index, leases and garbage collection.
//!
//! Flow: `pull` or `import` write blobs into the [`Store`] and tag a reference; `snapshot`
//! unpacks each layer once into `snapshots/<chain-id>` (`unpack` does the tar work) and mounts an
//! overlay of them with a per-container upper directory.

pub mod import;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use reference::{ImageRef, PullDecision, PullPolicy, ReferenceError, pull_decision};
pub use store::{
    GcReport, ImageConfig, ImageInspect, ImageRecord, LayerRecord, Lease, Store, StoreError,
};
