//! `weft agent join` against `weft serve` over HTTPS, under a CA the test makes: a node
//! enrols with a one-time join token, writes its secret 0600, starts serving, and the
//! controller reaches it with its token's pool and labels and an overlay address. A reused,
//! forged, revoked or expired token is refused, saying which, and changes nothing (no node,
//! no use of any token, no address taken, no secret written); a plain-HTTP URL without
//! `--insecure` is refused before any request. Once on loopback, and once across network
//! namespaces (needs root; skips elsewhere), where the node also takes a peer that a real
//! WireGuard client in a third namespace pings the node through.

use crate::dataplane::{Sockets, wg_quick_up};
use crate::netns::{Netns, cannot_run, link};
use crate::support::{WEFT, free_port};
use crate::tls::{Controller, Killed, LOOPBACK, TestCa, test_ca, tls_args};
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
    /// The node's peer interface: named per test, so tests never share a UAPI socket.
    peer_interface: String,
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
            "--peer-interface",
            &self.peer_interface,
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

/// A TLS controller on loopback, under a CA the test makes, with `pools` (name, CIDR).
async fn loopback_controller(dir: &Path, pools: &[(&str, &str)]) -> (Controller, TestCa) {
    let ca = test_ca(dir, LOOPBACK);
    let c = Controller::start(
        dir,
        "127.0.0.1",
        &tls_args(&ca.cert, &ca.key),
        Some(&ca.pem),
    )
    .await;
    for (name, cidr) in pools {
        let pool = json!({"name": name, "cidr": cidr});
        c.call(Method::POST, "/api/v1/pools", Some(pool)).await;
    }
    (c, ca)
}

/// `weft agent join` on loopback as `n1` with `token`, state in `agent_dir`; returns once
/// the controller reaches it, with the agent (killed when dropped).
async fn join_on_loopback(
    c: &Controller,
    ca: &TestCa,
    token: &str,
    agent_dir: &Path,
) -> (Join, Killed) {
    let join = Join {
        ca: ca.file.clone(),
        listen: format!("127.0.0.1:{}", free_port()),
        endpoint: "127.0.0.1".into(),
        peer_interface: weft::agent_api::PEER_INTERFACE.into(),
    };
    let mut agent = Killed(
        Command::new(WEFT)
            .args(join.args(&c.base, token, "n1", agent_dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    c.wait_online("n1", || {
        agent.0.try_wait().ok().flatten().map(|s| format!("{s:?}"))
    })
    .await;
    (join, agent)
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
    let pools = [("vpn", "10.67.0.0/24"), ("ov", "100.67.0.0/24")];
    let (c, ca) = loopback_controller(dir.path(), &pools).await;
    let overlay = json!({"pool": "ov"});
    c.call(Method::PUT, "/api/v1/overlay", Some(overlay)).await;
    // Made while serving: through the admin socket.
    let (_, secret) = new_token(&c, &["--pool", "vpn", "--labels", "region=eu"]);

    // It enrols, writes its secret 0600, starts serving, and the controller reaches it.
    let agent_dir = dir.path().join("agent");
    let (join, _agent) = join_on_loopback(&c, &ca, &secret, &agent_dir).await;
    assert_enrolled(&c, "n1", "vpn", "100.67.0.", "127.0.0.1", &agent_dir).await;

    bad_joins_are_refused(&c, "vpn", &secret, dir.path(), |url, token, data| {
        let args = join.bounded(url, token, "n2", data);
        said(&Command::new(&args[0]).args(&args[1..]).output().unwrap())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_its_own_namespace_joins_takes_a_peer_and_bad_tokens_change_nothing() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let id = std::process::id() % 200 + 20;
    let dir = tempfile::tempdir().unwrap();
    // Both interfaces named for this test: their UAPI sockets are in the one folder `wg`
    // reads; the client's is named after its file.
    let (peer_iface, client_iface) = (format!("wjp{id}"), format!("wj{id}"));
    let _sockets = Sockets(vec![peer_iface.clone(), client_iface.clone()]);
    // The controller in the root namespace, the node in its own, linked; a client behind the
    // node, which reaches the node's one address through it.
    let (controller_ip, node_ip) = (format!("10.206.{id}.1"), format!("10.206.{id}.2"));
    let mut node_ns = Netns::new("join");
    let client_ns = Netns::new("jcl");
    link(
        None,
        &format!("{controller_ip}/30"),
        &node_ns,
        &format!("{node_ip}/30"),
    );
    link(
        Some(&node_ns),
        &format!("10.207.{id}.1/30"),
        &client_ns,
        &format!("10.207.{id}.2/30"),
    );
    client_ns.exec(&[
        "ip",
        "route",
        "add",
        &format!("10.206.{id}.0/30"),
        "via",
        &format!("10.207.{id}.1"),
    ]);

    let ca = test_ca(dir.path(), &[&controller_ip]);
    let c = Controller::start(
        dir.path(),
        &controller_ip,
        &tls_args(&ca.cert, &ca.key),
        Some(&ca.pem),
    )
    .await;
    for (name, cidr) in [("jp", "10.69.0.0/24"), ("jo", "100.69.0.0/24")] {
        let pool = json!({"name": name, "cidr": cidr});
        let (status, body) = c
            .call_status(Method::POST, "/api/v1/pools", Some(pool))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let overlay = json!({"pool": "jo"});
    let (status, body) = c
        .call_status(Method::PUT, "/api/v1/overlay", Some(overlay))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, secret) = new_token(&c, &["--pool", "jp", "--labels", "region=eu"]);

    // The node joins from its namespace, then serves there.
    let join = Join {
        ca: ca.file.clone(),
        listen: format!("{node_ip}:7443"),
        endpoint: node_ip.clone(),
        peer_interface: peer_iface.clone(),
    };
    let agent_dir = dir.path().join("agent");
    let log = dir.path().join("agent.log");
    let mut args = vec![WEFT.to_string()];
    args.extend(join.args(&c.base, &secret, "n1", &agent_dir));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = node_ns.spawn(&args, &[("WEFT_LOG", "info")], &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    c.wait_online("n1", || {
        node_ns
            .exited(agent)
            .map(|s| format!("{s:?}\n{}", log_text()))
    })
    .await;
    let node = assert_enrolled(&c, "n1", "jp", "100.69.0.", &node_ip, &agent_dir).await;
    assert_eq!(
        node["agent_url"],
        format!("http://{node_ip}:7443/"),
        "{node}"
    );
    assert_eq!(node["endpoint_host"], node_ip, "{node}");
    let overlay_address = node["overlay_address"].as_str().unwrap();
    assert!(
        log_text().contains(&format!("with overlay address {overlay_address}")),
        "{}",
        log_text()
    );

    // It takes a peer: on its interface, with an address from the token's pool.
    let (status, created) = c
        .call_status(
            Method::POST,
            "/api/v1/peers",
            Some(json!({"name": "p1", "node": "n1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}\n{}", log_text());
    assert_eq!(created["peer"]["node"], "n1");
    assert!(
        created["peer"]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("10.69.0.")),
        "{created}"
    );
    let iface = peer_iface.as_str();
    let shown = String::from_utf8_lossy(&node_ns.exec(&["wg", "show", iface]).stdout).into_owned();
    let key = created["peer"]["public_key"].as_str().unwrap();
    assert!(shown.contains(&format!("peer: {key}")), "{shown}");
    let addr = String::from_utf8_lossy(
        &node_ns
            .exec(&["ip", "-o", "-4", "addr", "show", "dev", iface])
            .stdout,
    )
    .into_owned();
    let node_addr = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address on {iface}: {addr}"))
        .to_string();
    assert!(node_addr.starts_with("10.69.0."), "{addr}");

    // A real client with the peer's file reaches the node through the tunnel.
    let conf = dir.path().join(format!("{client_iface}.conf"));
    std::fs::write(&conf, created["config"].as_str().unwrap()).unwrap();
    wg_quick_up(&client_ns, &conf);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !client_ns
        .try_exec(&["ping", "-c", "1", "-W", "1", &node_addr])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "no ping through the peer; node: {}\n{}",
            String::from_utf8_lossy(&node_ns.exec(&["wg", "show", iface]).stdout),
            log_text()
        );
    }

    // Bad joins from the node's namespace: refused, and nothing changes.
    bad_joins_are_refused(&c, "jp", &secret, dir.path(), |url, token, data| {
        let args = join.bounded(url, token, "n2", data);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        said(&node_ns.try_exec(&args))
    })
    .await;
    // The node still serves after all that.
    c.wait_online("n1", || None).await;
    println!("joined in a namespace in {:?}", started.elapsed());
}

/// `weft node rotate-secret NAME` on the controller's data dir (through its admin socket).
fn rotate_secret(c: &Controller, name: &str) -> (bool, String) {
    said(
        &Command::new(WEFT)
            .args(["node", "rotate-secret", name, "--data-dir"])
            .arg(&c.data)
            .output()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_nodes_secret_rotates_while_the_controller_hammers_it_and_no_call_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (c, ca) = loopback_controller(dir.path(), &[("vpn", "10.68.0.0/24")]).await;
    let (_, token) = new_token(&c, &["--pool", "vpn"]);
    let agent_dir = dir.path().join("agent");
    let _agent = join_on_loopback(&c, &ca, &token, &agent_dir).await;
    let secret_file = agent_dir.join("secret");
    let first = std::fs::read(&secret_file).unwrap();

    // Pollers: signed calls through the controller, back to back, while it rotates.
    let c = std::sync::Arc::new(c);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pollers: Vec<_> = (0..4)
        .map(|_| {
            let (c, stop) = (c.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    answers.push(c.call(Method::POST, "/api/v1/nodes/n1/test", None).await);
                }
                answers
            })
        })
        .collect();
    for _ in 0..3 {
        let c = c.clone();
        let (ok, said) = tokio::task::spawn_blocking(move || rotate_secret(&c, "n1"))
            .await
            .unwrap();
        assert!(ok, "weft node rotate-secret: {said}");
        assert!(said.contains("rotated the secret of node \"n1\""), "{said}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut calls = 0;
    for p in pollers {
        for answer in p.await.unwrap() {
            calls += 1;
            assert_eq!(
                answer["ok"], true,
                "a call failed during the rotation: {answer}"
            );
        }
    }
    assert!(calls >= 4, "the pollers ran ({calls} calls)");

    // The agent holds one new secret, on disk, and a rotation of an unknown node says so.
    let now = std::fs::read(&secret_file).unwrap();
    assert_ne!(first, now, "the secret file was rewritten");
    assert!(!agent_dir.join("secret.next").exists());
    let (ok, said) = rotate_secret(&c, "nope");
    assert!(!ok && said.contains("nope"), "{said}");
    let answer = c.call(Method::POST, "/api/v1/nodes/n1/test", None).await;
    assert_eq!(answer["ok"], true, "{answer}");
}
