//! `weft agent join` against `weft serve` over HTTPS, under a CA the test makes: a node
//! enrols with a one-time join token, writes its secret 0600, starts serving, and the
//! controller reaches it with its token's pool and labels and an overlay address. A reused,
//! forged, revoked or expired token is refused, saying which, and changes nothing (no node,
//! no use of any token, no address taken, no secret written); a plain-HTTP URL without
//! `--insecure` is refused before any request.

use crate::support::{WEFT, free_port};
use crate::tls::{Controller, Killed, LOOPBACK, test_ca, tls_args};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `weft node token ARGS` on the controller's data dir (through its admin socket while it
/// serves); what it printed.
fn node_token(c: &Controller, args: &[&str]) -> String {
    let out = Command::new(WEFT)
        .args(["node", "token"])
        .args(args)
        .arg("--data-dir")
        .arg(&c.data)
        .output()
        .unwrap();
    let (ok, said) = said(&out);
    assert!(ok, "weft node token {args:?}: {said}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new join token made with `create ARGS`: its id and its secret.
fn new_token(c: &Controller, args: &[&str]) -> (String, String) {
    let made = node_token(c, &[&["create"], args].concat());
    // "created join token ID for ..." and, on the last line, the secret.
    let id = made.split_whitespace().nth(3).unwrap().to_string();
    let secret = made.lines().last().unwrap().trim().to_string();
    assert!(secret.starts_with("wj_"), "{made}");
    (id, secret)
}

/// Whether a process succeeded, and everything it said.
fn said(out: &Output) -> (bool, String) {
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// What every `weft agent join` of a test has in common: the CA it pins, where it listens,
/// the endpoint it announces.
struct Join {
    ca: std::path::PathBuf,
    listen: String,
    endpoint: String,
}

impl Join {
    /// `agent join URL --token TOKEN --name NAME ... --data-dir DATA`.
    fn args(&self, url: &str, token: &str, name: &str, data: &Path) -> Vec<String> {
        [
            "agent",
            "join",
            url,
            "--token",
            token,
            "--name",
            name,
            "--listen",
            &self.listen,
            "--endpoint",
            &self.endpoint,
            "--ca",
            self.ca.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// A join that is meant to be refused, so must end: `timeout` stops one that goes on to
    /// serve (then it fails, 124, with what it said).
    fn bounded(&self, url: &str, token: &str, name: &str, data: &Path) -> Vec<String> {
        let mut all = vec!["timeout".to_string(), "20".into(), WEFT.into()];
        all.extend(self.args(url, token, name, data));
        all
    }
}

/// What a join could change on the controller: its nodes, its pools (with their counts) and
/// its join tokens (with their uses and enrolments).
async fn controller_state(c: &Controller) -> (Value, Value, String) {
    let mut read = Vec::new();
    for path in ["/api/v1/nodes", "/api/v1/pools"] {
        let (status, body) = c.call_status(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(!body["items"].as_array().unwrap().is_empty(), "{body}");
        read.push(body);
    }
    let pools = read.pop().unwrap();
    (read.pop().unwrap(), pools, node_token(c, &["list"]))
}

/// Checks node `name` just enrolled with a token for `pool` labelled region=eu, called from
/// `from`: registered with the token's pool and labels, an overlay address from the overlay
/// pool (`overlay` is its prefix), online; its secret 0600 in `agent_dir`; the token used
/// once, by it. Returns what the API shows of the node.
async fn assert_enrolled(
    c: &Controller,
    name: &str,
    pool: &str,
    overlay: &str,
    from: &str,
    agent_dir: &Path,
) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent_dir.join("secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let node = c
        .call(Method::GET, &format!("/api/v1/nodes/{name}"), None)
        .await;
    assert_eq!(node["labels"]["region"], "eu", "{node}");
    assert_eq!(node["peer_pool"], pool, "{node}");
    assert!(
        node["overlay_address"]
            .as_str()
            .is_some_and(|a| a.starts_with(overlay)),
        "{node}"
    );
    assert!(
        node["created_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("join-token:")),
        "{node}"
    );
    assert_eq!(node["status"], "online", "{node}");
    let listed = node_token(c, &["list"]);
    assert!(
        listed.contains("uses 1/1") && listed.contains(&format!("enrolled {name}")),
        "{listed}"
    );
    assert!(listed.contains(&format!("from {from}")), "{listed}");
    node
}

/// Joins that must fail, run by `join` as (URL, token, data dir) → (succeeded, what it
/// said): a `used` token (for `pool`, already used up), a forged one, a revoked one, an
/// expired one, and a fresh one over plain HTTP. Each is refused saying why, writes no
/// secret, and the controller is left as it was; the plain-HTTP one sends no request at all.
async fn bad_joins_are_refused(
    c: &Controller,
    pool: &str,
    used: &str,
    scratch: &Path,
    join: impl Fn(&str, &str, &Path) -> (bool, String),
) {
    // Made first, so that it has expired, or nearly, by the time it is tried.
    let (_, expiring) = new_token(c, &["--pool", pool, "--expires", "1s"]);
    let expired_at = Instant::now() + Duration::from_millis(1100);
    let (revoked_id, revoked) = new_token(c, &["--pool", pool]);
    assert!(node_token(c, &["revoke", &revoked_id]).contains("revoked"));
    let (_, fresh) = new_token(c, &["--pool", pool]);
    let forged = weft::store::new_join_secret();
    // Anything that connects to the plain-HTTP URL is seen here.
    let listener = std::net::TcpListener::bind((c.host.as_str(), 0)).unwrap();
    let plain = format!("http://{}/", listener.local_addr().unwrap());
    let before = controller_state(c).await;

    let refused = |n: usize, url: &str, token: &str, why: &[&str]| {
        let data = scratch.join(format!("refused-{n}"));
        let (ok, said) = join(url, token, &data);
        assert!(!ok, "joined with {why:?}: {said}");
        assert!(why.iter().all(|w| said.contains(w)), "{why:?}: {said}");
        assert!(
            !data.join("secret").exists(),
            "a refused join wrote a secret: {said}"
        );
    };
    refused(1, &c.base, used, &["used up"]);
    refused(2, &c.base, &forged, &["unknown join token"]);
    refused(3, &c.base, &revoked, &["revoked"]);
    refused(4, &plain, &fresh, &["plain HTTP", "--insecure"]);
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener
            .accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a plain-HTTP join connected before refusing"
    );
    tokio::time::sleep_until(expired_at.into()).await;
    refused(5, &c.base, &expiring, &["expired"]);

    let after = controller_state(c).await;
    assert_eq!(before, after, "a refused join changed the controller");
}

#[tokio::test]
async fn a_node_joins_over_https_with_a_one_time_token_and_bad_tokens_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), LOOPBACK);
    let c = Controller::start(
        dir.path(),
        "127.0.0.1",
        &tls_args(&ca.cert, &ca.key),
        Some(&ca.pem),
    )
    .await;
    for (name, cidr) in [("vpn", "10.67.0.0/24"), ("ov", "100.67.0.0/24")] {
        let pool = json!({"name": name, "cidr": cidr});
        c.call(Method::POST, "/api/v1/pools", Some(pool)).await;
    }
    let overlay = json!({"pool": "ov"});
    c.call(Method::PUT, "/api/v1/overlay", Some(overlay)).await;
    // Made while serving: through the admin socket.
    let (_, secret) = new_token(&c, &["--pool", "vpn", "--labels", "region=eu"]);

    let join = Join {
        ca: ca.file.clone(),
        listen: format!("127.0.0.1:{}", free_port()),
        endpoint: "127.0.0.1".into(),
    };
    let agent_dir = dir.path().join("agent");
    let mut agent = Killed(
        Command::new(WEFT)
            .args(join.args(&c.base, &secret, "n1", &agent_dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // It enrols, writes its secret 0600, starts serving, and the controller reaches it.
    c.wait_online("n1", || {
        agent.0.try_wait().ok().flatten().map(|s| format!("{s:?}"))
    })
    .await;
    assert_enrolled(&c, "n1", "vpn", "100.67.0.", "127.0.0.1", &agent_dir).await;

    bad_joins_are_refused(&c, "vpn", &secret, dir.path(), |url, token, data| {
        let args = join.bounded(url, token, "n2", data);
        said(&Command::new(&args[0]).args(&args[1..]).output().unwrap())
    })
    .await;
}
