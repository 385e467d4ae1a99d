//! weft: an overlay network for an operator with many Linux servers. See ARCHITECTURE.md.

pub mod ipam;
pub mod store;
