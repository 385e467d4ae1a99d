//! Plugins inside a running `weft serve`: the API and the CLI over them, a changed file picked
//! up without a restart, and hostile plugins that fail alone while the API keeps answering.

use crate::support::{Server, WEFT, assert_error_code};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

fn hostile(name: &str, mode: &str, permissions: &str) -> String {
    format!(
        "name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\n[config]\nmode = \"{mode}\"\n[permissions]\n{permissions}"
    )
}

const LEAST_LOADED: &str = "name = \"picker\"\nversion = \"0.2.0\"\nworld = \"node-selector\"\n";

/// Node `a` is busier than `b`: `least-loaded` picks `b`, the hostile `first` mode picks `a`.
fn selection() -> Value {
    json!({
        "request": {"peer_name": "p1", "labels": {"region": "eu"}},
        "candidates": [
            {"name": "a", "active_peers": 3, "max_peers": 4},
            {"name": "b", "active_peers": 0, "max_peers": 4, "region": "eu"}
        ]
    })
}

async fn run(s: &Server, name: &str, input: Value) -> (StatusCode, Value) {
    s.post(&format!("/api/v1/plugins/{name}/run"), input).await
}

fn state_of(list: &Value, name: &str) -> String {
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["name"] == name))
        .map(|p| p["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("{name} is not listed: {list}"))
}

/// Polls until plugin `name` answers `want` for [`selection`], or gives up after 15 s.
async fn wait_for_choice(s: &Server, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = run(s, name, selection()).await;
        if status == StatusCode::OK && body["chosen"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never chose {want}: last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_plugin_dropped_in_the_folder_is_used_and_replacing_its_file_changes_it() {
    let s = Server::start().await;
    // No reload asked: the server watches its plugins folder.
    s.install_plugin("picker", "hostile", &hostile("picker", "first", ""));
    wait_for_choice(&s, "picker", "a").await;
    s.install_plugin("picker", "least_loaded", LEAST_LOADED);
    wait_for_choice(&s, "picker", "b").await;
    let (_, list) = s.get("/api/v1/plugins").await;
    let picker = &list["items"][0];
    assert_eq!(picker["version"], "0.2.0", "{list}");
    assert_eq!(picker["world"], "node-selector");
    assert_eq!(picker["permissions"]["time_limit_ms"], 50);
}

#[tokio::test]
async fn a_run_by_hand_checks_its_input_and_names_what_is_wrong() {
    let s = Server::start_with_plugins(&[("picker", "least_loaded", LEAST_LOADED)]).await;
    let (status, body) = run(&s, "nobody", selection()).await;
    assert_error_code(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = run(&s, "picker", json!({"targets": ["10.0.0.1"]})).await;
    assert_error_code(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("node-selector") && message.contains("targets"),
        "{message}"
    );
    let twice = json!({"request": {"peer_name": "p"}, "candidates": [
        {"name": "a", "max_peers": 1}, {"name": "a", "max_peers": 1}]});
    let (status, body) = run(&s, "picker", twice).await;
    assert_error_code(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, body) = run(&s, "picker", selection()).await;
    assert_eq!(
        (status, &body["chosen"]),
        (StatusCode::OK, &json!("b")),
        "{body}"
    );
}

/// Latency of `GET /api/v1/pools`, one request after another, for `d`.
async fn api_latencies(s: &Server, d: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    let until = Instant::now() + d;
    while Instant::now() < until {
        let t = Instant::now();
        let (status, body) = s.get("/api/v1/pools").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the API failed while plugins misbehaved: {body}"
        );
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn p(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

#[tokio::test]
async fn hostile_plugins_fail_alone_while_the_api_keeps_answering() {
    // The hog has time enough to reach its memory limit on a busy machine.
    let s = Server::start_with_plugins(&[
        ("spin", "hostile", &hostile("spin", "spin", "")),
        (
            "hog",
            "hostile",
            &hostile("hog", "hog", "memory_mb = 16\ntime_limit_ms = 2000\n"),
        ),
        ("crash", "hostile", &hostile("crash", "panic", "")),
    ])
    .await;
    s.pool("lan", "10.0.0.0/24").await;

    let quiet = api_latencies(&s, Duration::from_secs(1)).await;
    let attack = |name: &'static str, why: &'static str| {
        let s = &s;
        async move {
            let mut calls = 0;
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                let (status, body) = run(s, name, selection()).await;
                calls += 1;
                let message = body["error"]["message"].as_str().unwrap_or_default();
                match status {
                    StatusCode::BAD_GATEWAY => assert!(message.contains(why), "{name}: {body}"),
                    // Five failures in a row: skipped until reloaded; reload and go on.
                    StatusCode::CONFLICT => {
                        assert!(message.contains("failing"), "{name}: {body}");
                        s.reload_plugins().await;
                    }
                    other => panic!("{name} answered {other}: {body}"),
                }
            }
            calls
        }
    };
    let (busy, spins, hogs) = tokio::join!(
        api_latencies(&s, Duration::from_secs(3)),
        attack("spin", "time limit"),
        attack("hog", "memory limit"),
    );
    let (status, body) = run(&s, "crash", selection()).await;
    assert_error_code(status, &body, StatusCode::BAD_GATEWAY, "plugin_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("trapped"),
        "{body}"
    );
    println!(
        "API p50/p99 quiet {:?}/{:?} ({} requests); with two hostile plugins running {:?}/{:?} ({} requests; {spins} spin and {hogs} hog calls)",
        p(&quiet, 0.5),
        p(&quiet, 0.99),
        quiet.len(),
        p(&busy, 0.5),
        p(&busy, 0.99),
        busy.len()
    );
    assert!(spins > 5 && hogs > 5, "the hostile plugins hardly ran");
    // Liveness, not a benchmark: no API request waited on a plugin's time limit.
    assert!(
        p(&busy, 1.0) < Duration::from_secs(2),
        "an API request stalled"
    );
    // The server is whole afterwards: every plugin listed, the store as it was.
    let list = s.reload_plugins().await;
    for name in ["spin", "hog", "crash"] {
        assert_eq!(state_of(&list, name), "loaded");
    }
    assert_eq!(s.stats("lan").await["allocated"], 0);
}

#[tokio::test]
async fn five_failures_mark_a_plugin_failing_until_reloaded() {
    let s =
        Server::start_with_plugins(&[("crash", "hostile", &hostile("crash", "panic", ""))]).await;
    for _ in 0..5 {
        let (status, body) = run(&s, "crash", selection()).await;
        assert_error_code(status, &body, StatusCode::BAD_GATEWAY, "plugin_failed");
    }
    let (status, body) = run(&s, "crash", selection()).await;
    assert_error_code(status, &body, StatusCode::CONFLICT, "plugin_failing");
    let (_, list) = s.get("/api/v1/plugins").await;
    assert_eq!(state_of(&list, "crash"), "failing");
    assert!(
        list["items"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("trapped"),
        "{list}"
    );
    let list = s.reload_plugins().await;
    assert_eq!(state_of(&list, "crash"), "loaded");
}

fn weft_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(WEFT).args(args).output().expect("run weft");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_lists_reloads_and_runs_plugins_with_or_without_a_server() {
    let mut s = Server::start_with_plugins(&[
        ("picker", "least_loaded", LEAST_LOADED),
        ("crash", "hostile", &hostile("crash", "panic", "")),
    ])
    .await;
    let dir = s.data_dir();
    let dir = dir.to_str().expect("utf-8 path");
    let input = selection().to_string();
    for serving in [true, false] {
        let (ok, out, err) = weft_cli(&["plugin", "reload", "--data-dir", dir]);
        assert!(ok, "{err}");
        assert!(out.contains("picker") && out.contains("loaded"), "{out}");
        assert_eq!(out.contains("no weft is serving"), !serving, "{out}");
        let (ok, out, err) = weft_cli(&[
            "plugin",
            "run",
            "picker",
            "--input",
            &input,
            "--data-dir",
            dir,
        ]);
        assert!(ok, "{err}");
        let answer: Value = serde_json::from_str(&out).expect("JSON out");
        assert_eq!(answer["chosen"], "b");
        let (ok, _, err) = weft_cli(&[
            "plugin",
            "run",
            "crash",
            "--input",
            &input,
            "--data-dir",
            dir,
        ]);
        assert!(!ok && err.contains("trapped"), "{err}");
        let (ok, _, err) = weft_cli(&[
            "plugin",
            "run",
            "picker",
            "--input",
            "{oops",
            "--data-dir",
            dir,
        ]);
        assert!(!ok && err.contains("not JSON"), "{err}");
        if serving {
            // The failure above counted in the server, where the list comes from.
            let (_, out, _) = weft_cli(&["plugin", "list", "--data-dir", dir]);
            assert!(out.contains("crash"), "{out}");
            s.terminate();
        }
    }
}

#[tokio::test]
async fn a_new_plugin_from_weft_plugin_new_builds_checks_and_runs() {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().to_str().expect("utf-8 path");
    // Its own target dir under the shared one: built once per target dir, like the plugins.
    let target = crate::support::plugin_wasm("least_loaded")
        .ancestors()
        .nth(3)
        .expect("the target dir")
        .join("scaffolded");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (name, world) in [
        ("my-pick", "node-selector"),
        ("my-ping", "ping-check"),
        ("my-sync", "ipam-sync"),
    ] {
        let (ok, _, err) = weft_cli(&["plugin", "new", name, "--world", world, "--dir", root]);
        assert!(ok, "{err}");
        let crate_dir = work.path().join(name);
        let built = Command::new(&cargo)
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .output()
            .expect("run cargo");
        assert!(
            built.status.success(),
            "the {world} crate from `weft plugin new` does not build: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let wasm = target.join(format!(
            "wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ));
        let (ok, out, err) = weft_cli(&["plugin", "check", wasm.to_str().expect("utf-8")]);
        assert!(ok, "{world}: {out}{err}");
        assert!(out.contains(world), "{out}");
        std::fs::copy(&wasm, crate_dir.join(format!("{name}.wasm"))).expect("copy");
    }
    // Dropped into a server's plugins folder, the selector is used as it is.
    let s = Server::start().await;
    let dir = s.data_dir().join("plugins").join("my-pick");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    for file in ["plugin.toml", "my-pick.wasm"] {
        std::fs::copy(work.path().join("my-pick").join(file), dir.join(file)).expect("copy");
    }
    s.reload_plugins().await;
    let (status, body) = run(&s, "my-pick", selection()).await;
    assert_eq!(
        (status, &body["chosen"]),
        (StatusCode::OK, &json!("a")),
        "{body}"
    );
}
