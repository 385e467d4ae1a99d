//! One call into a plugin: a fresh store with the plugin's limits, the host's side of the
//! imports, and the linker of each world.
//!
//! A store lives for one call, so nothing a plugin does survives to the next call (or leaks
//! to another plugin). WASI is linked because Rust's standard library imports it, but with
//! nothing in it: no files, no environment, no arguments, no sockets, no stdin, output
//! dropped, and clocks frozen at zero for worlds that have no use for time.

use super::bindings::imports::weft::plugin::{config, log, types};
use super::bindings::{ipam_sync, node_selector, ping_check};
use super::manifest::{Permissions, World};
use super::probe_host::ProbeReach;
use super::runtime::Runtime;
use super::sync_host::SyncReach;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Log lines one call may write; the rest are counted and dropped, so a chatty plugin cannot
/// flood weft's log.
const MAX_LOG_LINES: u32 = 100;
/// Longest log line kept, in bytes.
const MAX_LOG_LINE: usize = 1024;

/// What the host knows of a plugin while it runs: from its manifest.
#[derive(Debug)]
pub struct PluginInfo {
    pub name: String,
    pub world: World,
    pub config: BTreeMap<String, String>,
    pub permissions: Permissions,
}

/// What one call may reach outside its sandbox besides log and config, handed over by
/// whoever makes the call; every use is still checked by `grants`.
pub enum Reach {
    /// A selector reaches nothing.
    Nothing,
    /// A ping check's probes.
    Probe(ProbeReach),
    /// A sync's IPAM and outbound HTTP.
    Sync(SyncReach),
}

/// The data of a call's store.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub(super) plugin: Arc<PluginInfo>,
    pub(super) reach: Reach,
    log_lines: u32,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A clock stuck at zero, for worlds with no use for time: a selector's answer must not
/// depend on when it runs.
struct Frozen;

impl wasmtime_wasi::HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A fresh store for one call of `plugin`, with its memory and time limits.
pub fn store(engine: &Engine, plugin: &Arc<PluginInfo>, reach: Reach) -> Store<CallState> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    match plugin.world {
        World::NodeSelector | World::PingCheck => {
            wasi.wall_clock(Frozen).monotonic_clock(Frozen);
        }
        // A sync may need the date (for example to stamp what it writes elsewhere).
        World::IpamSync => {}
    }
    let limits = StoreLimitsBuilder::new()
        .memory_size(plugin.permissions.memory_bytes)
        .trap_on_grow_failure(true)
        .build();
    let mut store = Store::new(
        engine,
        CallState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits,
            plugin: plugin.clone(),
            reach,
            log_lines: 0,
        },
    );
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(Runtime::deadline_ticks(plugin.permissions.time_limit));
    store.epoch_deadline_trap();
    store
}

/// The linker of a world: empty WASI, plus exactly the world's own imports.
pub fn linker(engine: &Engine, world: World) -> wasmtime::Result<Linker<CallState>> {
    let mut l = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut l)?;
    match world {
        World::NodeSelector => {
            node_selector::NodeSelector::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?
        }
        World::PingCheck => ping_check::PingCheck::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?,
        World::IpamSync => ipam_sync::IpamSync::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)?,
    }
    Ok(l)
}

impl types::Host for CallState {}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(plugin = %self.plugin.name, "plugin logs too much; dropping its lines until the call ends");
            }
            return;
        }
        // A plugin's text is untrusted: no control characters (no forged log lines), bounded.
        let mut text: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if text.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        let name = &self.plugin.name;
        match level {
            log::Level::Trace => tracing::trace!(plugin = %name, "{text}"),
            log::Level::Debug => tracing::debug!(plugin = %name, "{text}"),
            log::Level::Info => tracing::info!(plugin = %name, "{text}"),
            log::Level::Warn => tracing::warn!(plugin = %name, "{text}"),
            log::Level::Error => tracing::error!(plugin = %name, "{text}"),
        }
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.plugin.config.get(&key).cloned()
    }

    fn all(&mut self) -> Vec<types::Pair> {
        self.plugin
            .config
            .iter()
            .map(|(key, value)| types::Pair {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }
}
