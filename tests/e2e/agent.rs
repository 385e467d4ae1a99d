//! `weft agent` as a real process: a signed health call is answered and its answer verifies;
//! the same request replayed after the agent was killed (SIGKILL) and restarted is refused,
//! because accepted nonces were on disk before the first answer; an open secret file is
//! refused at start.

use crate::support::{WEFT, free_port};
use reqwest::StatusCode;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft::agent_client::AgentClient;
use weft::protocol::{
    HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, Nonce, RequestParts, Secret,
    sign_request, verify_response,
};

const NODE: &str = "node-e2e";
const SECRET: &str = "the-secret-of-node-e2e-0123456789";

fn write_secret(dir: &Path, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn agent_command(dir: &Path, port: u16) -> Command {
    let mut c = Command::new(WEFT);
    c.args([
        "agent",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--node-id",
        NODE,
    ])
    .arg("--secret-file")
    .arg(dir.join("secret"))
    .arg("--data-dir")
    .arg(dir.join("data"))
    .env("WEFT_LOG", "warn");
    c
}

/// Starts the agent and waits until it accepts connections.
fn start_agent(dir: &Path, port: u16) -> Child {
    let child = agent_command(dir, port)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn weft agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "weft agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_request_replayed_after_the_agent_is_killed_and_restarted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), 0o600);
    let port = free_port();
    let mut agent = start_agent(dir.path(), port);
    let secret = Secret::new(SECRET.as_bytes().to_vec()).unwrap();

    let nonce = Nonce::random();
    let timestamp = now();
    let signature = sign_request(
        &secret,
        &RequestParts {
            node: NODE,
            method: "GET",
            path: "/v1/health",
            query: "",
            timestamp,
            nonce,
            body: b"",
        },
    );
    // No pooled connections: the first one dies with the killed agent.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let send = || {
        http.get(format!("http://127.0.0.1:{port}/v1/health"))
            .header(HEADER_NODE, NODE)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_NONCE, nonce.to_hex())
            .header(HEADER_SIGNATURE, &signature)
            .send()
    };

    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let (node, sig) = (
        first
            .headers()
            .get(HEADER_NODE)
            .map(|v| v.to_str().unwrap().to_owned()),
        first
            .headers()
            .get(HEADER_SIGNATURE)
            .map(|v| v.to_str().unwrap().to_owned()),
    );
    let body = first.bytes().await.unwrap();
    verify_response(
        &secret,
        NODE,
        nonce,
        200,
        node.as_deref(),
        sig.as_deref(),
        &body,
    )
    .expect("the agent's answer verifies");

    agent.kill().unwrap();
    agent.wait().unwrap();
    let mut agent = start_agent(dir.path(), port);
    let replayed = send().await.unwrap();
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    let v: serde_json::Value = replayed.json().await.unwrap();
    assert_eq!(v["error"], "replayed");

    // A fresh request from the controller's client still goes through.
    let client = AgentClient::new(
        url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
        NODE,
        secret.clone(),
        Duration::from_secs(5),
    )
    .unwrap();
    let health = client.health().await.unwrap();
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[test]
fn the_agent_refuses_a_secret_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path(), 0o640);
    let out = agent_command(dir.path(), free_port()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("readable by group or others"), "{stderr}");
    assert!(!stderr.contains(SECRET), "the secret was printed: {stderr}");
}
