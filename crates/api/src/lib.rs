//! Kubernetes API knowledge, with no async and no I/O.
//!
//! * `apply`: server-side apply (merge, ownership, conflicts) and `metadata.managedFields`.
//! * `catalogue`: every resource the API server serves (group, version, kind, plural, scope,
//!   verbs, short names, subresources). A new kind is one entry here.
//! * `schema`: a compact index of the upstream OpenAPI definitions (generated at build time from
//!   `shared/k8s/openapi-v2-v1.33.json`): field types, patch merge keys and strategies, list types.
//! * `openapi`: the `/openapi/v2` and `/openapi/v3` documents served to clients.
//! * `patch`: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.
//! * `conversion`: served ↔ stored shapes (events.k8s.io/v1 Events are stored as core Events).
//! * `validation` / `defaults`: per-kind validation (names, required fields) and defaulting.
//! * `selectors`: label selectors (equality and set-based) and field selectors.
//! * `printers`: server-side printing (`Table`) with upstream kubectl's columns.

pub mod apply;
pub mod catalogue;
pub mod conversion;
pub mod defaults;
pub mod openapi;
pub mod patch;
pub mod printers;
pub mod schema;
pub mod selectors;
pub mod validation;

pub use k8s_openapi;
