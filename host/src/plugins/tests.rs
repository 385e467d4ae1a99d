//! The plugin host driving real components: the shipped `least-loaded` plugin, the `hostile`
//! test plugin (tests/plugins/hostile) in each of its modes, and hand-written WAT for
//! components that are wrong in shape. The `.wasm` files are built by the README's test
//! command before the tests run (see `component`).

use super::registry::FAILURES_BEFORE_FAILING;
use super::{PluginError, PluginHost, State};
use crate::placement::{self, Candidate, Choice, Health, Request, Strategy, WitCall};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A built component from the shared target dir.
pub(crate) fn component(crate_name: &str) -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join(format!("wasm32-wasip2/release/{crate_name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. The plugins are built by the README's test command (tests/run); by hand: \
             cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml && \
             cargo build --release --target wasm32-wasip2 --manifest-path tests/plugins/Cargo.toml",
            path.display()
        )
    })
}

/// A plugins folder in a temp dir, filled by the test.
struct Folder {
    dir: tempfile::TempDir,
}

impl Folder {
    fn new() -> Folder {
        Folder {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Installs a plugin: its folder with `plugin.toml` and the component.
    fn add(&self, name: &str, wasm: &[u8], manifest: &str) {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
        std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    }

    /// A `hostile` selector in the given mode, with extra `[permissions]` lines.
    fn hostile(&self, name: &str, mode: &str, permissions: &str) {
        self.add(
            name,
            &component("hostile"),
            &format!(
                "name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\n[config]\nmode = \"{mode}\"\n[permissions]\n{permissions}\n"
            ),
        );
    }

    fn host(&self) -> PluginHost {
        PluginHost::new(vec![self.path()], Some(self.cache())).unwrap()
    }
}

fn selector_manifest(name: &str) -> String {
    format!("name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\n")
}

/// A node named `name` in region eu, with `id-<name>` as its id.
fn node(name: &str, active: u32, max: u32, weight: u32) -> Candidate {
    Candidate {
        id: format!("id-{name}"),
        name: name.into(),
        labels: vec![("region".into(), "eu".into())],
        region: Some("eu".into()),
        active_peers: active,
        max_peers: max,
        weight,
        health: Health::Healthy,
        peers_with_handshake: active,
        newest_handshake_secs: Some(5),
        oldest_handshake_secs: Some(100),
    }
}

fn request() -> Request {
    Request {
        peer_name: "laptop".into(),
        labels: vec![],
    }
}

/// The plugin's answer in the contract's form: the id it returned (the index in `nodes`).
fn select(host: &PluginHost, name: &str, nodes: &[Candidate]) -> Result<Option<u64>, PluginError> {
    let call = WitCall::new(&request(), nodes).unwrap();
    host.select(name, &call.request, &call.labels, &call.candidates)
}

/// The node placement chooses with the plugin, which must not have fallen back.
fn choose(
    host: &PluginHost,
    plugin: &str,
    request: &Request,
    nodes: &[Candidate],
) -> Option<String> {
    let Choice { node, fallback } =
        placement::choose(&Strategy::Plugin(plugin.into()), Some(host), request, nodes);
    assert_eq!(fallback, None);
    node.map(|id| id.trim_start_matches("id-").to_string())
}

fn state_of(host: &PluginHost, name: &str) -> State {
    host.list()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
        .state
}

#[test]
fn least_loaded_plugin_scores_like_the_reference() {
    let f = Folder::new();
    f.add(
        "least-loaded",
        &component("least_loaded"),
        &selector_manifest("least-loaded"),
    );
    let host = f.host();
    let pick = |nodes: &[Candidate]| {
        let chosen = choose(&host, "least-loaded", &request(), nodes);
        let builtin = placement::least_loaded(nodes).map(|c| c.name.clone());
        assert_eq!(chosen, builtin, "the plugin and the built-in disagree");
        chosen
    };
    let some = |name: &str| Some(name.to_string());
    // multinode-phase2.md, scenario 1: lower utilization wins.
    assert_eq!(
        pick(&[node("a", 30, 100, 100), node("b", 60, 100, 100)]),
        some("a")
    );
    // Scenario 2: weight 200 halves a's score (0.0025 < 0.003).
    assert_eq!(
        pick(&[node("a", 50, 100, 200), node("b", 30, 100, 100)]),
        some("a")
    );
    // Scenario 3: a node at capacity is skipped.
    assert_eq!(
        pick(&[node("a", 100, 100, 100), node("b", 99, 100, 100)]),
        some("b")
    );
    // Ties: fewer active peers, then the name (the host sorts the candidates by name).
    assert_eq!(pick(&[node("b", 1, 10, 1), node("a", 2, 20, 1)]), some("b"));
    assert_eq!(pick(&[node("b", 1, 10, 1), node("a", 1, 10, 1)]), some("a"));
    assert_eq!(
        pick(&[
            node("c", 1, 10, 1),
            node("b", 1, 10, 1),
            node("a", 1, 10, 1)
        ]),
        some("a")
    );
    // Nothing fits.
    assert_eq!(pick(&[node("a", 5, 5, 1)]), None);
    assert_eq!(pick(&[]), None);
}

#[test]
fn label_affinity_prefers_the_requested_labels_then_the_lighter_node() {
    let f = Folder::new();
    f.add(
        "label-affinity",
        &component("label_affinity"),
        &selector_manifest("label-affinity"),
    );
    f.add(
        "strict",
        &component("label_affinity"),
        &format!(
            "{}[config]\nrequired = \"true\"\n",
            selector_manifest("strict")
        ),
    );
    let host = f.host();
    let at = |name: &str, active: u32, region: Option<&str>, labels: &[(&str, &str)]| {
        let mut n = node(name, active, 10, 1);
        n.region = region.map(Into::into);
        n.labels = labels
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n
    };
    let nodes = [
        at("us-idle", 0, Some("us"), &[]),
        at("eu-busy", 8, Some("eu"), &[("tier", "gold")]),
        // Its region is only among its labels, not in the region field.
        at("eu-idle", 1, None, &[("region", "eu")]),
        at("full", 10, Some("eu"), &[("tier", "gold")]),
    ];
    let asking = |labels: &[(&str, &str)]| Request {
        peer_name: "laptop".into(),
        labels: labels
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let pick =
        |plugin: &str, labels: &[(&str, &str)]| choose(&host, plugin, &asking(labels), &nodes);
    assert_eq!(
        pick("label-affinity", &[("region", "eu")]).as_deref(),
        Some("eu-idle")
    );
    let both = [("region", "eu"), ("tier", "gold")];
    assert_eq!(pick("label-affinity", &both).as_deref(), Some("eu-busy"));
    assert_eq!(pick("label-affinity", &[]).as_deref(), Some("us-idle"));
    // A label no node carries: least loaded among all.
    assert_eq!(
        pick("label-affinity", &[("region", "mars")]).as_deref(),
        Some("us-idle")
    );
    assert_eq!(pick("strict", &[("region", "mars")]), None);
    assert_eq!(pick("strict", &both).as_deref(), Some("eu-busy"));
}

#[test]
fn every_call_gets_a_fresh_instance() {
    let f = Folder::new();
    f.hostile("counter", "count", "");
    let host = f.host();
    let nodes = [node("a", 0, 10, 1), node("b", 0, 10, 1)];
    for _ in 0..3 {
        assert_eq!(
            select(&host, "counter", &nodes).unwrap(),
            Some(1),
            "a second call saw the first call's state"
        );
    }
}

/// The candidates are copied into the plugin by hand (`select::Candidates`): every field of
/// every record, with and without its optional values, must arrive as sent.
#[test]
fn every_field_reaches_the_plugin() {
    use super::bindings::imports::weft::plugin::types::{Health as WitHealth, Pair};
    use super::bindings::node_selector::exports::weft::plugin::selector as wit;
    let f = Folder::new();
    f.hostile("digest", "digest", "");
    let host = f.host();
    let healths = [
        WitHealth::Healthy,
        WitHealth::Degraded,
        WitHealth::Unreachable,
        WitHealth::Unknown,
    ];
    let candidates: Vec<wit::Candidate> = (0..9u32)
        .map(|i| wit::Candidate {
            id: (u64::from(i) << 40) | 0xabc,
            labels: 0x8000_0000_0000_0001 | u64::from(i) << 8,
            region: (i % 2 == 0).then_some(i * 3),
            active_peers: 100 + i,
            max_peers: 200 + i,
            weight: 1 + i,
            health: healths[i as usize % 4],
            handshakes: wit::HandshakeStats {
                peers_with_handshake: 7 * i,
                newest_age_secs: (i % 3 != 0).then_some(u64::from(i) << 33),
                oldest_age_secs: (i % 3 != 1).then_some(u64::MAX - u64::from(i)),
            },
        })
        .collect();
    let labels = [Pair {
        key: "region".into(),
        value: "eu".into(),
    }];
    let request = wit::Request {
        peer_name: "laptop".into(),
        labels: 0b101,
    };

    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0x0100_0000_01b3);
    let opt = |v: Option<u64>| v.map_or(u64::MAX, |v| v ^ 0x5555);
    mix(request.labels);
    mix(request.peer_name.len() as u64);
    for p in &labels {
        mix((p.key.len() * 1000 + p.value.len()) as u64);
    }
    for c in &candidates {
        mix(c.id);
        mix(c.labels);
        mix(opt(c.region.map(u64::from)));
        mix(c.active_peers.into());
        mix(c.max_peers.into());
        mix(c.weight.into());
        mix(c.health as u64);
        mix(c.handshakes.peers_with_handshake.into());
        mix(opt(c.handshakes.newest_age_secs));
        mix(opt(c.handshakes.oldest_age_secs));
    }
    let expected = format!("digest {h}");

    let err = host
        .select("digest", &request, &labels, &candidates)
        .unwrap_err();
    match err {
        PluginError::Returned { message, .. } => assert_eq!(message, expected),
        other => panic!("{other}"),
    }
}

#[test]
fn an_infinite_loop_is_stopped_soon_after_its_time_limit() {
    let f = Folder::new();
    f.hostile("spin", "spin", "time_limit_ms = 50");
    let host = f.host();
    let started = Instant::now();
    let err = select(&host, "spin", &[node("a", 0, 1, 1)]).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err}");
    assert!(
        took < Duration::from_millis(150),
        "stopped after {took:?}, more than 100 ms past its 50 ms limit"
    );
    assert!(
        err.to_string().contains("spin"),
        "the error names the plugin: {err}"
    );
}

#[test]
fn memory_past_the_limit_traps() {
    let f = Folder::new();
    f.hostile("hog", "hog", "memory_mb = 16");
    let err = select(&f.host(), "hog", &[node("a", 0, 1, 1)]).unwrap_err();
    assert!(
        matches!(err, PluginError::OutOfMemory { mib: 16, .. }),
        "{err}"
    );
}

#[test]
fn a_panic_is_an_error_for_that_call_only() {
    let f = Folder::new();
    f.hostile("panicky", "panic", "");
    f.hostile("fine", "first", "");
    let host = f.host();
    let nodes = [node("a", 0, 1, 1)];
    let err = select(&host, "panicky", &nodes).unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "{err}");
    assert_eq!(select(&host, "fine", &nodes).unwrap(), Some(0));
}

#[test]
fn an_answer_outside_the_candidates_is_refused() {
    let f = Folder::new();
    f.hostile("stranger", "stranger", "");
    let err = select(&f.host(), "stranger", &[node("a", 0, 1, 1)]).unwrap_err();
    assert!(matches!(err, PluginError::BadOutput { .. }), "{err}");
    assert!(
        err.to_string().contains(&0xdead_beef_u64.to_string()),
        "{err}"
    );
}

#[test]
fn a_chatty_plugin_still_answers() {
    let f = Folder::new();
    f.hostile("chatty", "chatty", "time_limit_ms = 5000");
    let answer = select(&f.host(), "chatty", &[node("a", 0, 1, 1)]);
    assert_eq!(answer.unwrap(), Some(0));
}

#[test]
fn five_failures_in_a_row_mark_a_plugin_failing_until_reload() {
    let f = Folder::new();
    f.hostile("flaky", "fail", "");
    let host = f.host();
    let nodes = [node("a", 0, 1, 1)];
    for _ in 0..FAILURES_BEFORE_FAILING {
        let err = select(&host, "flaky", &nodes).unwrap_err();
        assert!(matches!(err, PluginError::Returned { .. }), "{err}");
    }
    assert!(matches!(state_of(&host, "flaky"), State::Failing { .. }));
    let err = select(&host, "flaky", &nodes).unwrap_err();
    assert!(matches!(err, PluginError::Failing { .. }), "{err}");
    host.reload();
    assert_eq!(state_of(&host, "flaky"), State::Loaded);
}

#[test]
fn replacing_a_plugin_and_reloading_changes_its_behaviour() {
    let f = Folder::new();
    f.hostile("swap", "first", "");
    let host = f.host();
    let nodes = [node("a", 0, 1, 1), node("b", 0, 1, 1)];
    assert_eq!(
        choose(&host, "swap", &request(), &nodes).as_deref(),
        Some("a")
    );
    f.add(
        "swap",
        &component("least_loaded"),
        &selector_manifest("swap"),
    );
    host.reload();
    // least-loaded breaks the tie by name too, so make b the lighter node.
    let nodes = [node("a", 5, 10, 1), node("b", 0, 10, 1)];
    assert_eq!(
        choose(&host, "swap", &request(), &nodes).as_deref(),
        Some("b")
    );
}

#[test]
fn the_compiled_component_is_cached_and_reused() {
    let f = Folder::new();
    f.add(
        "least-loaded",
        &component("least_loaded"),
        &selector_manifest("least-loaded"),
    );
    drop(f.host());
    let cached: Vec<_> = std::fs::read_dir(f.cache())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let modified = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
    let host = f.host();
    assert_eq!(state_of(&host, "least-loaded"), State::Loaded);
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        modified,
        "a warm start compiled again"
    );
}

/// Components that are wrong in shape, in WAT: each is refused with its reason while the good
/// plugin beside them loads.
#[test]
fn misfit_components_are_refused_with_a_reason_and_the_rest_load() {
    let f = Folder::new();
    f.add(
        "good",
        &component("least_loaded"),
        &selector_manifest("good"),
    );
    let export = |name: &str| {
        format!(
            r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $x (export "select" (func $f)))
                (export "{name}" (instance $x)))"#
        )
    };
    let wat = |text: &str| wat::parse_str(text).unwrap();
    f.add(
        "future",
        &wat(&export("weft:plugin/selector@0.2.0")),
        &selector_manifest("future"),
    );
    f.add(
        "pinger",
        &wat(&export("weft:plugin/checker@0.1.0")),
        &selector_manifest("pinger"),
    );
    f.add("empty", &wat("(component)"), &selector_manifest("empty"));
    f.add("core", &wat("(module)"), &selector_manifest("core"));
    f.add(
        "sneaky",
        &wat(r#"(component
            (import "weft:plugin/http@0.1.0" (instance (export "send" (func))))
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $x (export "select" (func $f)))
            (export "weft:plugin/selector@0.1.0" (instance $x)))"#),
        &selector_manifest("sneaky"),
    );
    f.add(
        "greedy",
        &component("least_loaded"),
        &format!(
            "{}[permissions]\nfilesystem = [\"/\"]\n",
            selector_manifest("greedy")
        ),
    );
    let host = f.host();
    let reason = |name: &str| match state_of(&host, name) {
        State::Refused { reason } => reason,
        other => panic!("{name} was not refused: {other:?}"),
    };
    assert_eq!(state_of(&host, "good"), State::Loaded);
    let r = reason("future");
    assert!(
        r.contains("weft:plugin@0.2.0") && r.contains("weft:plugin@0.1.0"),
        "{r}"
    );
    let r = reason("pinger");
    assert!(
        r.contains("node-selector") && r.contains("ping-check"),
        "{r}"
    );
    assert!(reason("empty").contains("does not export weft:plugin/selector"));
    assert!(reason("core").contains("core WebAssembly module"));
    let r = reason("sneaky");
    assert!(
        r.contains("weft:plugin/http@0.1.0") && r.contains("does not offer"),
        "{r}"
    );
    assert!(reason("greedy").contains("filesystem"));
}
