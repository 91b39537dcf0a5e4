//! namespace (being written)
