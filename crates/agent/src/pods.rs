//! pods (being written)
