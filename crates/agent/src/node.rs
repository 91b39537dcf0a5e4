//! node (being written)
