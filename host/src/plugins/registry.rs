//! The plugins weft has: loaded from the plugins folders, each with its state (loaded,
//! failing, refused — with why), reloaded without a restart, and called by name.
//!
//! A plugin is a folder holding `plugin.toml` and one `.wasm` component. One bad plugin never
//! stops the others from loading, and a call that traps, overruns or runs out of memory is an
//! error for that call only. After [`FAILURES_BEFORE_FAILING`] failures in a row a plugin is
//! marked failing and skipped until it is reloaded.

use super::bindings::imports::weft::plugin::types::Pair;
use super::bindings::ipam_sync::exports::weft::plugin::syncer;
use super::bindings::node_selector::exports::weft::plugin::selector;
use super::bindings::ping_check::exports::weft::plugin::checker;
use super::call::{self, PluginInfo, Reach};
use super::manifest::{Manifest, ManifestError, World};
use super::probe_host::ProbeReach;
use super::runtime::{LoadError, Prepared, Runtime};
use super::sync_host::SyncReach;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub const FAILURES_BEFORE_FAILING: u32 = 5;
/// The largest component file weft reads.
const MAX_COMPONENT_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RefusedBecause {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no plugin.toml in the folder")]
    NoManifest,
    #[error("cannot read plugin.toml: {0}")]
    ReadManifest(std::io::Error),
    #[error("expected one .wasm file in the folder, found {0}")]
    ComponentCount(usize),
    #[error("the component is larger than {} MiB", MAX_COMPONENT_BYTES >> 20)]
    TooLarge,
    #[error("another plugin is already named {0:?} (in {1})")]
    DuplicateName(String, PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no plugin named {0:?}")]
    NotFound(String),
    #[error("plugin {name} is a {actual} plugin, not a {wanted}")]
    WrongWorld {
        name: String,
        actual: World,
        wanted: World,
    },
    #[error(
        "plugin {name} is marked failing after {FAILURES_BEFORE_FAILING} failures in a row (last: {last}); reload it to try again"
    )]
    Failing { name: String, last: String },
    #[error("plugin {name} ran past its time limit of {limit:?}")]
    Timeout { name: String, limit: Duration },
    #[error("plugin {name} hit its memory limit of {mib} MiB")]
    OutOfMemory { name: String, mib: usize },
    #[error("plugin {name} trapped: {message}")]
    Trap { name: String, message: String },
    #[error("plugin {name} returned an error: {message}")]
    Returned { name: String, message: String },
    #[error("plugin {name} answered something invalid: {message}")]
    BadOutput { name: String, message: String },
    #[error("too many plugin calls at once; try again")]
    Busy,
}

/// A plugin that loaded.
pub struct Loaded {
    pub info: Arc<PluginInfo>,
    pub manifest: Manifest,
    pub dir: PathBuf,
    /// SHA-256 of the component.
    pub digest: String,
    prepared: Prepared,
    failures: AtomicU32,
    last_error: Mutex<Option<String>>,
}

/// A folder that did not load, and why.
#[derive(Debug)]
pub struct Refused {
    pub dir: PathBuf,
    pub name: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    Loaded,
    Failing { last: String },
    Refused { reason: String },
}

/// One line of `weft plugin list` and of the plugins page.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub name: String,
    pub dir: PathBuf,
    pub world: Option<World>,
    pub version: Option<String>,
    pub description: String,
    #[serde(flatten)]
    pub state: State,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Plugins {
    loaded: BTreeMap<String, Arc<Loaded>>,
    refused: Vec<Refused>,
}

pub struct PluginHost {
    runtime: Runtime,
    dirs: Vec<PathBuf>,
    plugins: RwLock<Arc<Plugins>>,
}

impl PluginHost {
    /// A host over the plugin folders `dirs` (each holds one folder per plugin), compiling
    /// into `cache_dir`. Loads everything at once; see [`PluginHost::reload`].
    pub fn new(dirs: Vec<PathBuf>, cache_dir: Option<PathBuf>) -> wasmtime::Result<PluginHost> {
        let host = PluginHost {
            runtime: Runtime::new(cache_dir)?,
            dirs,
            plugins: RwLock::new(Arc::default()),
        };
        host.reload();
        Ok(host)
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The folders plugins load from.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Loads every plugin afresh (compiled forms come from the cache) and swaps them in at
    /// once; calls under way finish on what they started with. Failing plugins start clean.
    pub fn reload(&self) -> Vec<Status> {
        let started = Instant::now();
        let mut next = Plugins::default();
        for dir in self.plugin_folders() {
            match self.load(&dir) {
                Ok(p) => {
                    if let Some(other) = next.loaded.get(&p.manifest.name) {
                        next.refused.push(Refused {
                            reason: RefusedBecause::DuplicateName(
                                p.manifest.name.clone(),
                                other.dir.clone(),
                            )
                            .to_string(),
                            name: Some(p.manifest.name.clone()),
                            dir,
                        });
                    } else {
                        next.loaded.insert(p.manifest.name.clone(), Arc::new(p));
                    }
                }
                Err((name, why)) => {
                    tracing::warn!(dir = %dir.display(), reason = %why, "plugin refused");
                    next.refused.push(Refused {
                        dir,
                        name,
                        reason: why.to_string(),
                    });
                }
            }
        }
        tracing::info!(
            loaded = next.loaded.len(),
            refused = next.refused.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "plugins loaded"
        );
        *self.plugins.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.list()
    }

    /// Each plugin's folder, in name order so loading is deterministic.
    fn plugin_folders(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !is_hidden(p))
                .collect();
            found.sort();
            out.extend(found);
        }
        out
    }

    fn load(&self, dir: &Path) -> Result<Loaded, (Option<String>, RefusedBecause)> {
        let manifest_path = dir.join("plugin.toml");
        if !manifest_path.exists() {
            return Err((None, RefusedBecause::NoManifest));
        }
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| (None, RefusedBecause::ReadManifest(e)))?;
        let manifest = Manifest::parse(&text).map_err(|e| (None, e.into()))?;
        let named = |why: RefusedBecause| (Some(manifest.name.clone()), why);
        let wasm: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                    .collect()
            })
            .unwrap_or_default();
        let [path] = wasm.as_slice() else {
            return Err(named(RefusedBecause::ComponentCount(wasm.len())));
        };
        let read = |source| LoadError::Read {
            path: path.clone(),
            source,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| named(read(e).into()))?
            .len();
        if len > MAX_COMPONENT_BYTES {
            return Err(named(RefusedBecause::TooLarge));
        }
        let bytes = std::fs::read(path).map_err(|e| named(read(e).into()))?;
        let (component, digest) = self.runtime.compile(&bytes).map_err(|e| named(e.into()))?;
        let prepared = self
            .runtime
            .prepare(&component, manifest.world)
            .map_err(|e| named(e.into()))?;
        Ok(Loaded {
            info: Arc::new(PluginInfo {
                name: manifest.name.clone(),
                world: manifest.world,
                config: manifest.config.clone(),
                permissions: manifest.permissions.clone(),
            }),
            manifest,
            dir: dir.to_path_buf(),
            digest,
            prepared,
            failures: AtomicU32::new(0),
            last_error: Mutex::new(None),
        })
    }

    pub fn list(&self) -> Vec<Status> {
        let plugins = self.snapshot();
        let mut out: Vec<Status> = plugins
            .loaded
            .values()
            .map(|p| {
                let last_error = p
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let failing = p.failures.load(Ordering::Relaxed) >= FAILURES_BEFORE_FAILING;
                Status {
                    name: p.manifest.name.clone(),
                    dir: p.dir.clone(),
                    world: Some(p.manifest.world),
                    version: Some(p.manifest.version.clone()),
                    description: p.manifest.description.clone(),
                    state: match (&last_error, failing) {
                        (Some(last), true) => State::Failing { last: last.clone() },
                        _ => State::Loaded,
                    },
                    last_error,
                }
            })
            .collect();
        out.extend(plugins.refused.iter().map(|r| Status {
            name: r.name.clone().unwrap_or_else(|| folder_name(&r.dir)),
            dir: r.dir.clone(),
            world: None,
            version: None,
            description: String::new(),
            state: State::Refused {
                reason: r.reason.clone(),
            },
            last_error: None,
        }));
        out
    }

    /// The world of a loaded plugin.
    pub fn world_of(&self, name: &str) -> Option<World> {
        self.snapshot().loaded.get(name).map(|p| p.manifest.world)
    }

    /// The manifest of a loaded plugin.
    pub fn manifest(&self, name: &str) -> Option<Manifest> {
        self.snapshot().loaded.get(name).map(|p| p.manifest.clone())
    }

    fn snapshot(&self) -> Arc<Plugins> {
        self.plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn get(&self, name: &str, wanted: World) -> Result<Arc<Loaded>, PluginError> {
        let p = self
            .snapshot()
            .loaded
            .get(name)
            .cloned()
            .ok_or_else(|| PluginError::NotFound(name.to_string()))?;
        if p.manifest.world != wanted {
            return Err(PluginError::WrongWorld {
                name: name.to_string(),
                actual: p.manifest.world,
                wanted,
            });
        }
        if p.failures.load(Ordering::Relaxed) >= FAILURES_BEFORE_FAILING {
            let last = p.last_error.lock().unwrap_or_else(|e| e.into_inner());
            return Err(PluginError::Failing {
                name: name.to_string(),
                last: last.clone().unwrap_or_default(),
            });
        }
        Ok(p)
    }

    /// Asks a `node-selector` plugin to choose among `candidates`, whose labels are bits of
    /// the table `labels` (see `placement::WitCall`, which builds all three). Blocking: run it
    /// off the async threads. The answer is checked: it must be one of the candidates' ids.
    pub fn select(
        &self,
        name: &str,
        request: &selector::Request,
        labels: &[Pair],
        candidates: &[selector::Candidate],
    ) -> Result<Option<selector::NodeId>, PluginError> {
        let p = self.get(name, World::NodeSelector)?;
        let Prepared::NodeSelector(pre) = &p.prepared else {
            return Err(p.wrong_world(World::NodeSelector));
        };
        let outcome = (|| {
            let mut store = call::store(self.runtime.engine(), &p.info, Reach::Nothing);
            pre.instantiate(&mut store)?
                .select(&mut store, request, labels, candidates)
        })();
        let answer = p.settle(outcome)?;
        match answer {
            Ok(Some(id)) if !candidates.iter().any(|c| c.id == id) => {
                Err(p.fail(PluginError::BadOutput {
                    name: name.to_string(),
                    message: format!("it chose node {id}, which is not among the candidates"),
                }))
            }
            Ok(choice) => Ok(p.succeeded(choice)),
            Err(message) => Err(p.fail(PluginError::Returned {
                name: name.to_string(),
                message,
            })),
        }
    }

    /// Asks a `ping-check` plugin whether `targets` are alive. Blocking: run it off the async
    /// threads. The answer is checked: one outcome per target at most, each for a target.
    pub fn check(
        &self,
        name: &str,
        targets: &[String],
        reach: ProbeReach,
    ) -> Result<Vec<checker::Outcome>, PluginError> {
        let p = self.get(name, World::PingCheck)?;
        let Prepared::PingCheck(pre) = &p.prepared else {
            return Err(p.wrong_world(World::PingCheck));
        };
        let outcome = (|| {
            let mut store = call::store(self.runtime.engine(), &p.info, Reach::Probe(reach));
            pre.instantiate(&mut store)?
                .weft_plugin_checker()
                .call_check(&mut store, targets)
        })();
        match p.settle(outcome)? {
            Ok(outcomes) => {
                let asked: std::collections::HashSet<&str> =
                    targets.iter().map(String::as_str).collect();
                if let Some(stranger) = outcomes
                    .iter()
                    .find(|o| !asked.contains(o.address.as_str()))
                {
                    return Err(p.fail(PluginError::BadOutput {
                        name: name.to_string(),
                        message: format!(
                            "it answered for {:?}, which it was not asked about",
                            stranger.address
                        ),
                    }));
                }
                Ok(p.succeeded(outcomes))
            }
            Err(message) => Err(p.fail(PluginError::Returned {
                name: name.to_string(),
                message,
            })),
        }
    }

    /// Runs an `ipam-sync` plugin once. Blocking: run it off the async threads.
    pub fn sync(&self, name: &str, reach: SyncReach) -> Result<syncer::Report, PluginError> {
        let p = self.get(name, World::IpamSync)?;
        let Prepared::IpamSync(pre) = &p.prepared else {
            return Err(p.wrong_world(World::IpamSync));
        };
        let outcome = (|| {
            let mut store = call::store(self.runtime.engine(), &p.info, Reach::Sync(reach));
            pre.instantiate(&mut store)?
                .weft_plugin_syncer()
                .call_sync(&mut store)
        })();
        match p.settle(outcome)? {
            Ok(report) => Ok(p.succeeded(report)),
            Err(message) => Err(p.fail(PluginError::Returned {
                name: name.to_string(),
                message,
            })),
        }
    }
}

impl Loaded {
    /// A plugin whose prepared form is not of the world its manifest names: cannot happen,
    /// since `Runtime::prepare` builds one from the other, but answered rather than assumed.
    fn wrong_world(&self, wanted: World) -> PluginError {
        PluginError::WrongWorld {
            name: self.info.name.clone(),
            actual: self.info.world,
            wanted,
        }
    }

    /// A call that ran and answered well: the run of failures is over.
    fn succeeded<T>(&self, v: T) -> T {
        self.failures.store(0, Ordering::Relaxed);
        v
    }

    /// Turns what wasmtime answered into the call's result, counting a failure.
    fn settle<T>(&self, outcome: wasmtime::Result<T>) -> Result<T, PluginError> {
        outcome.map_err(|e| self.fail(self.classify(e)))
    }

    fn classify(&self, e: wasmtime::Error) -> PluginError {
        let name = self.info.name.clone();
        let text = format!("{e:#}");
        if let Some(trap) = e.downcast_ref::<wasmtime::Trap>()
            && *trap == wasmtime::Trap::Interrupt
        {
            return PluginError::Timeout {
                name,
                limit: self.info.permissions.time_limit,
            };
        }
        // `trap_on_grow_failure` reports a refused `memory.grow` as an error naming it.
        if text.contains("forcing trap when growing memory") {
            return PluginError::OutOfMemory {
                name,
                mib: self.info.permissions.memory_bytes >> 20,
            };
        }
        if text.contains("maximum concurrent") {
            return PluginError::Busy;
        }
        PluginError::Trap {
            name,
            message: text,
        }
    }

    /// Records a failed call; the fifth in a row marks the plugin failing.
    fn fail(&self, e: PluginError) -> PluginError {
        if matches!(e, PluginError::Busy) {
            return e;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        tracing::warn!(plugin = %self.info.name, failures = n, error = %e, "plugin call failed");
        if n == FAILURES_BEFORE_FAILING {
            tracing::error!(plugin = %self.info.name, "plugin marked failing; it is skipped until reloaded");
        }
        e
    }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn folder_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
