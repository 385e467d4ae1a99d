//! Plugins: WebAssembly components that users write, run by wasmtime in a sandbox.
//!
//! - `manifest`: `plugin.toml`, what a plugin is and may do.
//! - `grants`: the one decision on whether a plugin may reach outside its sandbox.
//! - `bindings`: Rust bindings of `wit/plugin.wit`.
//! - `runtime`: the engine, compile cache, contract check and pre-instantiation.
//! - `call`: one call's store, limits and the host's side of the imports.
//! - `select`: calling a `node-selector`, its candidates copied in one pass.
//! - `probe_host`: the probes a `ping-check` plugin may send.
//! - `sync_host`: the IPAM and HTTP an `ipam-sync` plugin may use.
//! - `registry`: the loaded plugins, their states, reload, and calls by name.
//! - `scaffold`: `weft plugin new`, a ready-to-build crate for a new plugin.
//! - `watch`: reloading when a file in a plugins folder changes.

pub mod bindings;
pub mod call;
pub mod check;
pub mod grants;
pub mod manifest;
pub mod probe_host;
pub mod registry;
pub mod runtime;
pub mod scaffold;
pub mod select;
pub mod sync_host;
pub mod watch;

pub use manifest::{Manifest, World};
pub use registry::{PluginError, PluginHost, State, Status};

#[cfg(test)]
mod ping_tests;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
pub(crate) mod tests;
