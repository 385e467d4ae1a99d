//! `weft plugin new NAME --world WORLD`: a ready-to-build crate for a new plugin.
//!
//! The crate stands alone: it carries a copy of weft's contract (`wit/plugin.wit`), has its
//! own `[workspace]` so it builds wherever it is put, and its `src/lib.rs` is a minimal
//! working plugin of the world, to be replaced by the author's own logic.

use super::manifest::{World, valid_name};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The contract this weft was built with: the crate builds against exactly it.
const CONTRACT_WIT: &str = include_str!("../../../wit/plugin.wit");

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("plugin name {0:?} must be 1 to 64 of a-z, 0-9 and '-', starting with a letter")]
    BadName(String),
    #[error("{0} already exists and is not an empty folder; choose another name or place")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes the crate of a new `world` plugin named `name` into `dir/name/`, and returns the
/// files written. Refuses a name weft would not load and a folder that already has
/// something in it; never overwrites a file.
pub fn scaffold(dir: &Path, name: &str, world: World) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let root = dir.join(name);
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Write { path, source }
    };
    match std::fs::read_dir(&root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ScaffoldError::Exists(root));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // A file of that name, or a folder we cannot read: either way not ours to fill.
        Err(_) => return Err(ScaffoldError::Exists(root)),
    }

    let crate_name = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("__NAME__", name)
            .replace("__WASM__", &crate_name)
            .replace("__WORLD__", world.as_str())
    };
    let (lib, manifest) = match world {
        World::NodeSelector => (SELECTOR_LIB, SELECTOR_MANIFEST),
        World::PingCheck => (PING_LIB, PING_MANIFEST),
        World::IpamSync => (SYNC_LIB, SYNC_MANIFEST),
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("plugin.toml", fill(manifest)),
        ("README.md", fill(README)),
        ("wit/plugin.wit", CONTRACT_WIT.to_string()),
        ("src/lib.rs", fill(lib)),
    ];

    let mut written = Vec::with_capacity(files.len());
    for (relative, text) in files {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        // `create_new`: a file that appeared since the check above is left alone.
        std::fs::File::create_new(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(write_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

const CARGO_TOML: &str = r#"[package]
name = "__NAME__"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A component for weft: build with `cargo build --release --target wasm32-wasip2`.
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = "0.61.1"

# A workspace of its own, so the crate builds wherever it is put.
[workspace]

[profile.release]
# Small components load and instantiate faster.
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#;

const README: &str = r#"# __NAME__

A weft `__WORLD__` plugin. `src/lib.rs` is where its logic goes, `plugin.toml` is what it
is and may do, and `wit/plugin.wit` is the contract with weft (`weft:plugin@0.1.0`).

Build (once before: `rustup target add wasm32-wasip2`):

    cargo build --release --target wasm32-wasip2

Check that weft can load it, and see what it exports and asks for:

    weft plugin check target/wasm32-wasip2/release/__WASM__.wasm

Install: a folder named after the plugin in weft's plugins folder, holding `plugin.toml` and
the component, then reload:

    mkdir -p <data-dir>/plugins/__NAME__
    cp plugin.toml target/wasm32-wasip2/release/__WASM__.wasm <data-dir>/plugins/__NAME__/
    weft plugin reload

Cargo names the component after the crate with `-` turned into `_`: `__WASM__.wasm`
(under `$CARGO_TARGET_DIR` if that is set). weft takes the one `.wasm` file in the folder,
whatever its name.
"#;

const SELECTOR_MANIFEST: &str = r#"name = "__NAME__"
version = "0.1.0"
world = "__WORLD__"
description = "Chooses the first node with room"

# Values the plugin reads with `config::get`, as strings.
[config]

[permissions]
# memory_mb = 64        # default 64, at most 256
# time_limit_ms = 50    # per call; default 50 for a selector
"#;

const SELECTOR_LIB: &str = r#"//! __NAME__: a weft node selector. It chooses the first candidate with room; put your own
//! choice in `select`.

wit_bindgen::generate!({
    path: "wit",
    world: "node-selector",
});

use exports::weft::plugin::selector::{Candidate, Guest, NodeId, Request};
use weft::plugin::types::Pair;

struct Plugin;

impl Guest for Plugin {
    /// The node for the request's new peer: the `id` of one of `candidates`, none if no node
    /// fits, or an error (weft logs it and uses its built-in `least-loaded`).
    ///
    /// `candidates` come sorted by node name. Labels are bits: bit `i` of a candidate's
    /// `labels` (or of `request.labels`) stands for `labels[i]`, a `key=value` pair; a
    /// candidate's `region` is the index of its `region=<name>` pair. For example, whether a
    /// node carries every label the request asks for:
    /// `c.labels & request.labels == request.labels`.
    fn select(
        _request: Request,
        _labels: Vec<Pair>,
        candidates: Vec<Candidate>,
    ) -> Result<Option<NodeId>, String> {
        Ok(candidates
            .iter()
            .find(|c| c.active_peers < c.max_peers)
            .map(|c| c.id))
    }
}

export!(Plugin);
"#;

const PING_MANIFEST: &str = r#"name = "__NAME__"
version = "0.1.0"
world = "__WORLD__"
description = "An address is alive if it answers a TCP connect"

# Values the plugin reads with `config::get`, as strings.
[config]
port = 22

[permissions]
# The ports the plugin may probe: `port` above must be one of them.
probe_ports = [22]
# interval_secs = 60    # between runs; default 60, at least 10
# time_limit_ms = 10000 # per batch; default 10000
"#;

const PING_LIB: &str = r#"//! __NAME__: a weft ping check. An address is alive if it answers a TCP connect on the port
//! of `[config] port` (default 22), which `[permissions] probe_ports` must grant.

wit_bindgen::generate!({
    path: "wit",
    world: "ping-check",
});

use exports::weft::plugin::checker::{Guest, Outcome};
use weft::plugin::{config, log, probe};

/// How long each connect may wait. The host sends every probe of a batch at once, so a
/// batch takes about this long however many addresses it has.
const TIMEOUT_MS: u32 = 500;

struct Plugin;

impl Guest for Plugin {
    fn check(targets: Vec<String>) -> Result<Vec<Outcome>, String> {
        let port = match config::get("port") {
            None => 22,
            Some(text) => text
                .parse::<u16>()
                .map_err(|_| format!("config `port` must be a port number, not {text:?}"))?,
        };
        let probes: Vec<probe::TcpTarget> = targets
            .iter()
            .map(|address| probe::TcpTarget {
                address: address.clone(),
                port,
            })
            .collect();
        let answers = probe::tcp_connect(&probes, TIMEOUT_MS);
        let mut outcomes = Vec::with_capacity(targets.len());
        for (address, answer) in targets.into_iter().zip(answers) {
            match answer {
                Ok(rtt_us) => outcomes.push(Outcome {
                    alive: rtt_us.is_some(),
                    rtt_us,
                    address,
                }),
                // A refused probe (say, a port not granted) leaves the address unchecked.
                Err(e) => log::log(log::Level::Warn, &format!("{address}:{port}: {e}")),
            }
        }
        Ok(outcomes)
    }
}

export!(Plugin);
"#;

const SYNC_MANIFEST: &str = r#"name = "__NAME__"
version = "0.1.0"
world = "__WORLD__"
description = "Keeps weft's IPAM and another system in step"

# Values the plugin reads with `config::get`, as strings.
[config]
# url = "https://ipam.example.com"

[permissions]
# The hosts (host:port) the plugin may send HTTP requests to; nothing else is reachable.
# outbound_hosts = ["ipam.example.com:443"]
# interval_secs = 300   # between runs; default 300, at least 10
# time_limit_ms = 60000 # per run; default 60000
"#;

const SYNC_LIB: &str = r#"//! __NAME__: a weft IPAM sync. It only logs what weft has; put the sync in `sync`, reading
//! and changing weft's IPAM with `ipam` and reaching the other system with `http`.

wit_bindgen::generate!({
    path: "wit",
    world: "ipam-sync",
});

use exports::weft::plugin::syncer::{Guest, Report};
use weft::plugin::{ipam, log};

struct Plugin;

impl Guest for Plugin {
    fn sync() -> Result<Report, String> {
        let pools = ipam::pools()?;
        log::log(
            log::Level::Info,
            &format!("{} pools, nothing synced yet", pools.len()),
        );
        Ok(Report {
            created: 0,
            updated: 0,
            deleted: 0,
            errors: Vec::new(),
        })
    }
}

export!(Plugin);
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::manifest::Manifest;

    fn names(root: &Path, written: &[PathBuf]) -> Vec<String> {
        let mut names: Vec<String> = written
            .iter()
            .map(|p| {
                p.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_world_gets_a_complete_crate_whose_manifest_loads() {
        for world in World::ALL {
            let tmp = tempfile::tempdir().unwrap();
            let written = scaffold(tmp.path(), "my-plugin", world).unwrap();
            let root = tmp.path().join("my-plugin");
            assert_eq!(
                names(&root, &written),
                [
                    "Cargo.toml",
                    "README.md",
                    "plugin.toml",
                    "src/lib.rs",
                    "wit/plugin.wit"
                ],
                "{world}"
            );
            let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap();

            let manifest = Manifest::parse(&read("plugin.toml")).unwrap();
            assert_eq!(manifest.name, "my-plugin");
            assert_eq!(manifest.version, "0.1.0");
            assert_eq!(manifest.world, world);
            assert!(!manifest.description.is_empty());

            let cargo: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
            assert_eq!(cargo["package"]["name"].as_str(), Some("my-plugin"));
            assert_eq!(
                cargo["dependencies"]["wit-bindgen"].as_str(),
                Some("0.61.1")
            );
            assert_eq!(
                cargo["lib"]["crate-type"].as_array().unwrap()[0].as_str(),
                Some("cdylib")
            );
            assert!(cargo.contains_key("workspace"));
            assert_eq!(cargo["profile"]["release"]["panic"].as_str(), Some("abort"));

            assert_eq!(read("wit/plugin.wit"), CONTRACT_WIT);
            assert!(CONTRACT_WIT.contains("package weft:plugin@0.1.0;"));
            let lib = read("src/lib.rs");
            assert!(lib.contains(&format!("world: \"{world}\"")), "{lib}");
            assert!(!lib.contains("__"), "a placeholder was left: {lib}");
            let readme = read("README.md");
            assert!(
                readme.contains("weft plugin check target/wasm32-wasip2/release/my_plugin.wasm")
            );
            assert!(!readme.contains("__"), "a placeholder was left: {readme}");
        }
    }

    #[test]
    fn a_ping_check_is_granted_the_port_it_probes() {
        let tmp = tempfile::tempdir().unwrap();
        scaffold(tmp.path(), "tcp22", World::PingCheck).unwrap();
        let text = std::fs::read_to_string(tmp.path().join("tcp22/plugin.toml")).unwrap();
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.permissions.probe_ports, vec![22]);
        assert_eq!(m.config["port"], "22");
    }

    #[test]
    fn a_name_weft_would_not_load_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", "My-Plugin", "1st", "../up", "a b", "dots.no"] {
            let err = scaffold(tmp.path(), bad, World::NodeSelector).unwrap_err();
            assert!(
                matches!(err, ScaffoldError::BadName(ref n) if n == bad),
                "{err}"
            );
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_existing_folder_with_something_in_it_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("mine");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("notes.txt"), "keep me").unwrap();
        let err = scaffold(tmp.path(), "mine", World::IpamSync).unwrap_err();
        assert!(
            matches!(err, ScaffoldError::Exists(ref p) if *p == root),
            "{err}"
        );
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);

        // A file where the folder would go is refused the same way.
        std::fs::write(tmp.path().join("plain"), "").unwrap();
        let err = scaffold(tmp.path(), "plain", World::IpamSync).unwrap_err();
        assert!(matches!(err, ScaffoldError::Exists(_)), "{err}");
    }

    #[test]
    fn an_existing_empty_folder_is_filled() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("empty")).unwrap();
        let written = scaffold(tmp.path(), "empty", World::NodeSelector).unwrap();
        assert_eq!(written.len(), 5);
    }
}
