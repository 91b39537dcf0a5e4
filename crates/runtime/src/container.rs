//! container (being written)
