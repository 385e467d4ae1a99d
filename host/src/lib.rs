//! weft: an overlay network for an operator with many Linux servers. See ARCHITECTURE.md.
//!
//! # Layout
//! - `ipam`: the pure core (addresses, pools, allocator, record rules): no I/O.
//! - `store`: redb behind typed reads and group-committed writes.
//! - `web`: the HTTP edge (JSON API, OpenAPI, health, metrics); `metrics` its counters.
//! - `probe`: ICMP echoes and TCP connects, a batch at a time; `ping` the sweep that uses
//!   them (or a ping-check plugin) to keep each held address's `active` flag.
//! - `admin`: admin commands over a Unix socket or the database directly.
//! - `syncs`: running ipam-sync plugins, on demand and on their interval, and their runs.
//! - `server`, `cli`, `config`: the `weft serve` process and its settings; `input` the text
//!   forms (labels, lifetimes) the CLI and the pages both read.
//! - `plugins`: the WebAssembly plugin host; `placement`, `ping`, `syncs` and `plugin_run`
//!   are what weft does with it (choose nodes, check addresses, sync IPAM, run one by hand).

pub mod admin;
pub mod agent;
pub mod agent_api;
pub mod agent_client;
pub mod cli;
pub mod config;
pub mod controller;
pub mod dataplane;
pub mod https;
pub mod input;
pub mod ipam;
pub mod keyfile;
pub mod mesh;
pub mod metrics;
pub mod ping;
pub mod placement;
pub mod plugin_run;
pub mod plugins;
pub mod probe;
pub mod protocol;
pub mod secretbox;
pub mod server;
pub mod store;
pub mod syncs;
pub mod web;
pub mod wgquick;

#[cfg(test)]
mod tidy;

/// An error with its causes, each said once: reqwest's own message is "error sending
/// request", and the cause (refused, timed out, bad certificate) is further down, sometimes
/// after a layer that repeats its cause's words.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}
