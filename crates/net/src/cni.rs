//! cni (being written)
