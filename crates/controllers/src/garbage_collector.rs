//! garbage_collector (being written)
