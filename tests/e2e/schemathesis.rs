//! schemathesis (from PyPI), a fuzzer no one here wrote, against the OpenAPI document the
//! server serves, with an admin token and some data in the store: it must find no 5xx, no
//! status code the document does not list, no response whose content type or body breaks
//! the document's schema.
//!
//! This guards against two kinds of bug at once: a handler that turns odd but well-formed
//! input into a 500 (or a panic), and a document that drifts from what the handlers really
//! answer, which misleads every client generated from it. Our own tests only send what we
//! thought of; schemathesis sends what the document allows.
//!
//! schemathesis must be installed (`pip install schemathesis`; `bash tests/run` installs it
//! into `target/tools-venv`): without it the test fails rather than passes untested. Set
//! `WEFT_SCHEMATHESIS_SEED` to replay a run.

use crate::support::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Test cases per operation and phase: enough to reach past validation, small enough to stay
/// well under two minutes.
const MAX_EXAMPLES: &str = "40";
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// The schemathesis executable: on `PATH`, or in the venv `tests/run` makes.
fn schemathesis() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools-venv/bin/schemathesis");
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("schemathesis"))
        .chain([venv])
        .find(|p| p.is_file())
}

/// Pools, allocations, a reservation and a device, so that reads and links find something.
async fn some_data(server: &Server) {
    server.pool("lan", "10.20.0.0/24").await;
    let (status, body) = server
        .post(
            "/api/v1/pools",
            json!({"name": "dc", "cidr": "10.30.0.0/23", "description": "racks",
                   "static_ranges": ["10.30.0.10-10.30.0.99"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server.pool("v6", "fd00:20::/120").await;
    for pool in ["lan", "dc", "v6"] {
        for i in 0..3 {
            let (status, body) = server
                .post(
                    &format!("/api/v1/pools/{pool}/allocations"),
                    json!({"owner": "team-a", "hostname": format!("{pool}-{i}")}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }
    let (status, body) = server
        .call(
            reqwest::Method::PATCH,
            "/api/v1/addresses/10.20.0.200",
            Some(json!({"status": "reserved", "description": "printer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            "/api/v1/devices/sw-1",
            Some(json!({"ip": "10.30.0.150", "hostname": "sw-1", "mac": "00:11:22:33:44:55"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// What a run's output says after its "FAILURES" heading, or its tail: the part to read.
fn excerpt(output: &str) -> String {
    let from = output
        .find("FAILURES")
        .or_else(|| output.find("ERRORS"))
        .unwrap_or_else(|| output.len().saturating_sub(6000));
    let from = output.floor_char_boundary(from);
    let text = &output[from..];
    let end = text.floor_char_boundary(text.len().min(20_000));
    text[..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let Some(bin) = schemathesis() else {
        panic!(
            "schemathesis is missing: run `pip install schemathesis` (the README's test command installs it)"
        );
    };
    let server = Server::start().await;
    some_data(&server).await;

    let work = server.dir.path().join("schemathesis");
    std::fs::create_dir_all(&work).expect("work dir");
    let report = work.join("report.json");
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.current_dir(&work)
        .arg("run")
        .arg(server.url("/api/v1/openapi.json"))
        .args([
            "--header",
            &format!("Authorization: Bearer {}", server.token),
        ])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--request-timeout", "30"])
        .args(["--generation-database", "none"])
        // Slow generation on a busy machine is not a finding about the API.
        .args(["--suppress-health-check", "too_slow"])
        .args(["--report", "json", "--report-json-path"])
        .arg(&report)
        .arg("--no-color")
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100")
        .kill_on_drop(true);
    if let Ok(seed) = std::env::var("WEFT_SCHEMATHESIS_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("schemathesis ran for more than 5 minutes")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The JSON report, when this version writes one, says what was found in a stable form.
    let summary = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|r| json!({"operations": r["operations"], "failures": r["failures"], "errors": r["errors"]}));
    // The seed is a 128-bit number: take it from the text, not from JSON's doubles.
    let seed = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Seed:"))
        .map_or_else(String::new, |s| {
            format!("\nreplay with WEFT_SCHEMATHESIS_SEED={}", s.trim())
        });
    let found = summary
        .as_ref()
        .map_or_else(String::new, |s| format!("\nreport: {s:#}"))
        + &seed;
    assert!(
        out.status.success(),
        "schemathesis found problems in the API (exit status {}):{found}\n\n{}",
        out.status,
        excerpt(&output)
    );
    if let Some(s) = &summary {
        let failures = s["failures"].as_array().map_or(0, Vec::len);
        let errors = s["errors"].as_array().map_or(0, Vec::len);
        assert!(
            failures == 0 && errors == 0,
            "schemathesis exited 0 but reports failures or errors:{found}\n\n{}",
            excerpt(&output)
        );
        let tested = s["operations"]["tested"].as_u64().unwrap_or(0);
        assert!(
            tested >= 10,
            "schemathesis tested only {tested} operations:{found}\n\n{}",
            excerpt(&output)
        );
    }
    eprintln!("schemathesis:\n{}", excerpt(&output));
}

/// Each parameter the document declares `in: path` is a `{name}` of its route, and each
/// `{name}` is declared. A query parameter documented as a path parameter is one no client
/// generated from the document can send, and one schemathesis never fuzzes.
#[tokio::test]
async fn openapi_path_parameters_match_the_route_templates() {
    let server = Server::start().await;
    let r = server
        .client
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.expect("a JSON document");
    let mut problems = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        let names: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split_once('}').map(|(n, _)| n))
            .collect();
        for (method, op) in ops.as_object().expect("operations") {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: Vec<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            for p in &in_path {
                if !names.contains(p) {
                    problems.push(format!(
                        "{} {path}: parameter {p:?} is declared `in: path` but the route has no {{{p}}}",
                        method.to_uppercase()
                    ));
                }
            }
            for n in &names {
                if !in_path.contains(n) {
                    problems.push(format!(
                        "{} {path}: {{{n}}} is not declared as a path parameter",
                        method.to_uppercase()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the OpenAPI document misplaces parameters:\n{}",
        problems.join("\n")
    );
}
