//! weft: an overlay network for an operator with many Linux servers. See ARCHITECTURE.md.
//!
//! # Layout
//! - `ipam`: the pure core (addresses, pools, allocator, record rules): no I/O.
//! - `store`: redb behind typed reads and group-committed writes.
//! - `web`: the HTTP edge (JSON API, OpenAPI, health, metrics); `metrics` its counters.
//! - `admin`: admin commands over a Unix socket or the database directly.
//! - `syncs`: running ipam-sync plugins, on demand and on their interval, and their runs.
//! - `server`, `cli`, `config`: the `weft serve` process and its settings.

pub mod admin;
pub mod cli;
pub mod config;
pub mod ipam;
pub mod metrics;
pub mod placement;
pub mod plugins;
pub mod server;
pub mod store;
pub mod syncs;
pub mod web;

#[cfg(test)]
mod tidy;
