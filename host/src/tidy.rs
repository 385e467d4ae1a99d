//! Architecture invariants kept as tests: which module may import what (ARCHITECTURE.md).

use std::path::Path;

fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out.push((p.display().to_string(), text));
        }
    }
    out
}

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn assert_none(files: &[(String, String)], forbidden: &[&str], why: &str) {
    for (path, text) in files {
        for f in forbidden {
            assert!(!text.contains(f), "{path} uses `{f}`: {why}");
        }
    }
}

#[test]
fn ipam_and_mesh_are_pure() {
    let mut files = sources(&src().join("ipam"));
    files.extend(sources(&src().join("mesh")));
    assert!(files.iter().any(|(p, _)| p.contains("/mesh/")));
    assert_none(
        &files,
        &[
            "redb::",
            "use redb",
            "axum::",
            "tokio::",
            "std::fs",
            "std::net::Tcp",
            "tracing::",
            "crate::store",
            "crate::web",
            "crate::controller",
            "crate::dataplane",
            "reqwest",
        ],
        "ipam and mesh do no I/O and know nothing of the store, HTTP or agents",
    );
}

#[test]
fn only_the_store_touches_redb() {
    let files: Vec<_> = sources(&src())
        .into_iter()
        .filter(|(p, _)| !p.contains("/store/") && !p.ends_with("tidy.rs"))
        .collect();
    assert_none(
        &files,
        &["redb::", "use redb"],
        "only store/ may import redb",
    );
}

#[test]
fn only_the_edge_knows_http() {
    let files: Vec<_> = sources(&src())
        .into_iter()
        .filter(|(p, _)| {
            !p.contains("/web/")
                && !p.contains("/agent/")
                && !p.ends_with("server.rs")
                && !p.ends_with("https.rs")
                && !p.ends_with("tidy.rs")
        })
        .collect();
    assert_none(
        &files,
        &["axum::", "use axum"],
        "only web/, agent/ (the agent's own server), server.rs and https.rs know axum",
    );
}

#[test]
fn only_the_plugin_host_runs_webassembly() {
    let files: Vec<_> = sources(&src())
        .into_iter()
        .filter(|(p, _)| !p.contains("/plugins/") && !p.ends_with("tidy.rs"))
        .collect();
    assert_none(
        &files,
        &["wasmtime", "use wasmtime"],
        "only plugins/ knows wasmtime; the rest calls plugins through PluginHost",
    );
}

#[test]
fn plugins_know_nothing_of_the_store_or_http() {
    let files = sources(&src().join("plugins"));
    assert!(!files.is_empty());
    assert_none(
        &files,
        &["redb::", "axum::", "crate::web"],
        "the plugin host is reached through its own API; what a plugin may touch in IPAM goes through grants",
    );
}

#[test]
fn the_wg_quick_file_is_made_without_io() {
    let text = std::fs::read_to_string(src().join("wgquick.rs")).unwrap_or_default();
    assert!(!text.is_empty());
    assert_none(
        &[("wgquick.rs".into(), text)],
        &[
            "tokio::",
            "std::fs",
            "std::net::Tcp",
            "tracing::",
            "crate::store",
            "crate::web",
            "reqwest",
        ],
        "wgquick is plain text making: the controller does the I/O around it",
    );
}

#[test]
fn the_node_side_knows_nothing_of_the_controller() {
    let mut files = sources(&src().join("dataplane"));
    files.extend(sources(&src().join("agent")));
    assert!(!files.is_empty());
    assert_none(
        &files,
        &[
            "crate::controller",
            "crate::web",
            "crate::secretbox",
            "crate::store::Store",
        ],
        "the agent and its data plane run on nodes: they reach the controller's state only through the signed protocol",
    );
    assert_none(
        &sources(&src().join("dataplane")),
        &["crate::store", "axum::"],
        "the data plane keeps its own state file and knows no HTTP",
    );
}
