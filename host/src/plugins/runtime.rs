//! The wasmtime side: one engine for every plugin (pooling allocator, epoch interruption), the
//! compile cache on disk, the contract-version check, and the per-world pre-instantiated
//! components that each call instantiates in a fresh store.

use super::bindings::{ipam_sync::IpamSyncPre, ping_check::PingCheckPre};
use super::call::CallState;
use super::manifest::World;
use super::select::SelectorPre;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The contract this host offers (`wit/plugin.wit`).
pub const CONTRACT: &str = "weft:plugin";
pub const CONTRACT_VERSION: (u64, u64, u64) = (0, 1, 0);

/// How often the epoch advances: a call overruns its time limit by at most about this.
pub const TICK: Duration = Duration::from_millis(5);

/// Calls that may run at once: each holds an instance slot of the pooling allocator.
pub const MAX_CONCURRENT_CALLS: u32 = 64;

/// Bytes of each linear memory reset in place rather than given back to the kernel: a Rust
/// plugin's 1 MiB stack, its data and a heap that holds a call over thousands of candidates.
const KEEP_RESIDENT: usize = 4 << 20;
/// The same for tables (function tables are a few KiB).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(
        "built for {CONTRACT}@{found}, but this weft offers {CONTRACT}@{}.{}.{}; rebuild the plugin against weft's wit/",
        CONTRACT_VERSION.0, CONTRACT_VERSION.1, CONTRACT_VERSION.2
    )]
    WrongContract { found: String },
    #[error("its manifest says {declared}, but the component exports {found} (a {actual} plugin)")]
    WorldMismatch {
        declared: World,
        found: String,
        actual: World,
    },
    #[error("its manifest says {declared}, but the component does not export {CONTRACT}/{}", declared.export())]
    MissingExport { declared: World },
    #[error("it imports {import}, which the {world} world does not offer")]
    ForbiddenImport { world: World, import: String },
    #[error("cannot prepare the component: {0}")]
    Link(String),
}

/// The engine and what every plugin shares. Dropping it stops the epoch ticker.
pub struct Runtime {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
    selector_linker: Linker<CallState>,
    ping_linker: Linker<CallState>,
    sync_linker: Linker<CallState>,
}

/// A component ready to instantiate, with the linker of its world.
#[derive(Clone)]
pub enum Prepared {
    NodeSelector(SelectorPre),
    PingCheck(PingCheckPre<CallState>),
    IpamSync(IpamSyncPre<CallState>),
}

impl Runtime {
    /// `cache_dir`: where compiled components are kept between runs (none: compile each load).
    pub fn new(cache_dir: Option<PathBuf>) -> wasmtime::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::new();
        let slots = MAX_CONCURRENT_CALLS * 2;
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots)
            .total_tables(slots * 4)
            .total_stacks(slots)
            .max_memory_size(super::manifest::MAX_MEMORY_MB as usize * (1 << 20));
        // A call's instance is thrown away at once, so its slot's reset is on every call's
        // path. By default wasmtime gives the touched pages back (`madvise`) and the next
        // instance faults them in again: about half of a small call's time. Instead, keep up
        // to this much of each slot resident and reset it in place, restoring the initial
        // contents exactly (wasmtime copies back the memory image and zeroes the rest), so an
        // instance still starts as from scratch. `pagemap_scan` (Linux 6.7+) limits the reset
        // to the pages written; older kernels reset the whole kept region, slower than the
        // default. What stays resident is at most what plugins touched, up to
        // `KEEP_RESIDENT` per slot in use.
        pool.linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })?
        };
        let linker = |w| super::call::linker(&engine, w);
        let (selector_linker, ping_linker, sync_linker) = (
            linker(World::NodeSelector)?,
            linker(World::PingCheck)?,
            linker(World::IpamSync)?,
        );
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Runtime {
            engine,
            cache_dir,
            stop,
            ticker: Some(ticker),
            selector_linker,
            ping_linker,
            sync_linker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Epoch ticks for a time limit, rounded up, plus one for the tick already under way.
    pub fn deadline_ticks(limit: Duration) -> u64 {
        (limit.as_micros().div_ceil(TICK.as_micros()) as u64).saturating_add(1)
    }

    /// Compiles a component, or loads its compiled form from the cache. The key is the
    /// content's SHA-256 plus the engine's compatibility hash, so a new weft (or a changed
    /// engine setting) never loads an artefact made by another.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, String), LoadError> {
        let digest = hex::encode(Sha256::digest(bytes));
        let Some(dir) = &self.cache_dir else {
            return Ok((self.compile_fresh(bytes)?, digest));
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let path = dir.join(format!("{digest}-{:016x}.cwasm", h.finish()));
        if path.exists() {
            // SAFETY: the file is in weft's own data dir, written by `store_cached` below from
            // `Component::serialize` of this engine configuration (the name carries its
            // compatibility hash). A file that fails to load is compiled afresh.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, digest)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compiled plugin in the cache is unreadable; compiling again")
                }
            }
        }
        let component = self.compile_fresh(bytes)?;
        if let Err(e) = store_cached(&component, &path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled plugin");
        }
        Ok((component, digest))
    }

    fn compile_fresh(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        if wasmparser_is_core_module(bytes) {
            return Err(LoadError::NotAComponent(
                "it is a core WebAssembly module; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)".into(),
            ));
        }
        Component::new(&self.engine, bytes).map_err(|e| LoadError::NotAComponent(e.to_string()))
    }

    /// Checks the component against the contract and its declared world, and links it.
    pub fn prepare(&self, component: &Component, declared: World) -> Result<Prepared, LoadError> {
        check_contract(&self.engine, component, declared)?;
        let linker = match declared {
            World::NodeSelector => &self.selector_linker,
            World::PingCheck => &self.ping_linker,
            World::IpamSync => &self.sync_linker,
        };
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| link_error(e, declared))?;
        let link = |e: wasmtime::Error| LoadError::Link(e.to_string());
        Ok(match declared {
            World::NodeSelector => Prepared::NodeSelector(SelectorPre::new(pre).map_err(link)?),
            World::PingCheck => Prepared::PingCheck(PingCheckPre::new(pre).map_err(link)?),
            World::IpamSync => Prepared::IpamSync(IpamSyncPre::new(pre).map_err(link)?),
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Writes beside the final name and renames, so a crash never leaves half a file that a
/// later start would load.
fn store_cached(component: &Component, path: &Path) -> wasmtime::Result<()> {
    let bytes = component.serialize()?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A core module starts with the same magic as a component but a different version/layer
/// field; telling them apart gives a better message than the compiler's.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// `weft:plugin/<interface>@<version>` split into the interface and the version.
pub(crate) fn contract_item(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(CONTRACT)?.strip_prefix('/')?;
    rest.split_once('@')
}

/// Whether a version of the contract is one this host can run: same major, and for 0.x the
/// same minor (semver's rule for pre-1.0).
fn compatible(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return false;
    };
    let (want_major, want_minor, _) = CONTRACT_VERSION;
    major == want_major && (major != 0 || minor == want_minor)
}

fn check_contract(
    engine: &Engine,
    component: &Component,
    declared: World,
) -> Result<(), LoadError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if let Some((iface, version)) = contract_item(name) {
            if !compatible(version) {
                return Err(LoadError::WrongContract {
                    found: version.to_string(),
                });
            }
            if !declared.imports().contains(&iface) {
                return Err(LoadError::ForbiddenImport {
                    world: declared,
                    import: name.to_string(),
                });
            }
        }
    }
    let names: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(n, item)| {
            (
                n.to_string(),
                matches!(item.ty, ComponentItem::ComponentInstance(_)),
            )
        })
        .collect();
    for (name, _) in &names {
        if let Some((_, version)) = contract_item(name)
            && !compatible(version)
        {
            return Err(LoadError::WrongContract {
                found: version.to_string(),
            });
        }
    }
    let exported = |w: World| {
        names
            .iter()
            .filter(|(_, is_instance)| *is_instance)
            .find(|(n, _)| contract_item(n).is_some_and(|(iface, _)| iface == w.export()))
            .map(|(n, _)| n.clone())
    };
    if exported(declared).is_some() {
        return Ok(());
    }
    for other in World::ALL {
        if let Some(found) = exported(other) {
            return Err(LoadError::WorldMismatch {
                declared,
                found,
                actual: other,
            });
        }
    }
    Err(LoadError::MissingExport { declared })
}

/// Turns wasmtime's "no matching implementation" into which import the world lacks.
fn link_error(e: wasmtime::Error, world: World) -> LoadError {
    let text = format!("{e:#}");
    // wasmtime names the import in backticks: "component imports instance `x`, but ...".
    match text.split('`').nth(1) {
        Some(import) if text.contains("matching implementation was not found") => {
            LoadError::ForbiddenImport {
                world,
                import: import.to_string(),
            }
        }
        _ => LoadError::Link(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_breaking_version_of_the_contract_is_compatible() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.0.0"));
        assert!(!compatible("banana"));
    }

    #[test]
    fn contract_names_split_into_interface_and_version() {
        assert_eq!(
            contract_item("weft:plugin/selector@0.1.0"),
            Some(("selector", "0.1.0"))
        );
        assert_eq!(contract_item("wasi:cli/environment@0.2.6"), None);
    }

    #[test]
    fn a_deadline_covers_the_limit_and_the_tick_under_way() {
        assert_eq!(Runtime::deadline_ticks(Duration::from_millis(50)), 11);
        assert_eq!(Runtime::deadline_ticks(Duration::from_millis(1)), 2);
    }
}
