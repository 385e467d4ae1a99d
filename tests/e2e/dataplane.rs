//! The agent's data plane with real processes and real WireGuard: `weft agent` in its own
//! network namespace, a client in another one running Debian's wireguard-go with the wg-quick
//! file a peer would get. The client completes a handshake and pings the agent's interface;
//! `wg show` on the agent's node reads the truth (key, endpoint, allowed IP, handshake,
//! transfer); 16 MiB of TCP each way arrive whole (SHA-256), with the kernel offloads and,
//! after the agent is restarted with `--no-offload`, without; removing the peer cuts it off;
//! after a SIGKILL the agent brings its interface and peer back from its data dir alone, and
//! after its interface is deleted from outside it makes it again.
//! Needs root; skips, saying why, elsewhere.

use crate::netns::{Netns, cannot_run, link};
use crate::support::WEFT;
use crate::transfer::transfer;
use std::path::Path;
use std::time::{Duration, Instant};
use weft::agent_api::{InterfaceSpec, InterfaceSummary, PeerSpec, PublicKey, WgDump};
use weft::agent_client::AgentClient;
use weft::protocol::Secret;

const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A unique small number for names and addresses of this run.
pub fn run_id() -> u32 {
    std::process::id() % 200 + 20
}

pub fn write_secret(path: &Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, secret).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn client_for(url: &str, node: &str, secret: &str) -> AgentClient {
    let s = Secret::from_file_contents(secret.as_bytes()).unwrap();
    AgentClient::new(
        url.parse().unwrap(),
        node,
        s.clone(),
        Duration::from_secs(5),
    )
    .unwrap()
}

/// Waits until the agent answers a signed health call.
pub async fn wait_for_agent(client: &AgentClient, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.health().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the agent did not come up: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn signed<T: serde::de::DeserializeOwned>(
    client: &AgentClient,
    method: reqwest::Method,
    path: &str,
    body: Option<&impl serde::Serialize>,
) -> (u16, Option<T>) {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let answer = client.call(method, path, bytes).await.unwrap();
    (answer.status, serde_json::from_slice(&answer.body).ok())
}

pub fn ping(ns: &Netns, ip: &str, count: &str) -> bool {
    ns.try_exec(&["ping", "-c", count, "-W", "2", ip])
        .status
        .success()
}

/// Pings until one answer comes back or `within` passes.
pub fn ping_within(ns: &Netns, ip: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ping(ns, ip, "1") {
            return true;
        }
    }
    false
}

/// Brings up a wireguard-go client in `ns` from a wg-quick file.
pub fn wg_quick_up(ns: &Netns, conf: &Path) {
    let out = ns.try_exec(&[
        "env",
        "WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go",
        "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1",
        "wg-quick",
        "up",
        conf.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "wg-quick up failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the UAPI sockets a test's interfaces leave behind (a killed process cannot).
pub struct Sockets(pub Vec<String>);

impl Drop for Sockets {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_weft_config_handshakes_and_pings_the_agent() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let id = run_id();
    let dir = tempfile::tempdir().unwrap();
    let (iface, client_iface) = (format!("wa{id}"), format!("wc{id}"));
    let _sockets = Sockets(vec![iface.clone(), client_iface.clone()]);
    let mut agent_ns = Netns::new("agent");
    let mut client_ns = Netns::new("client");
    let control = format!("10.201.{id}.2");
    link(
        None,
        &format!("10.201.{id}.1/30"),
        &agent_ns,
        &format!("{control}/30"),
    );
    let wire = format!("10.202.{id}.1");
    link(
        Some(&agent_ns),
        &format!("{wire}/30"),
        &client_ns,
        &format!("10.202.{id}.2/30"),
    );

    let secret_file = dir.path().join("secret");
    write_secret(&secret_file, SECRET);
    let data = dir.path().join("agent");
    let log = dir.path().join("agent.log");
    let agent_args = [
        WEFT,
        "agent",
        "--listen",
        &format!("{control}:7443"),
        "--node-id",
        "n1",
        "--secret-file",
        secret_file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--peer-interface",
        &iface,
    ];
    let env = [("WEFT_LOG", "info")];
    let agent = agent_ns.spawn(&agent_args, &env, &log);
    let client = client_for(&format!("http://{control}:7443/"), "n1", SECRET);
    wait_for_agent(&client, &log).await;

    // Before any interface, a peer is refused and nothing changes.
    let key = weft::wgquick::PrivateKey::generate().unwrap();
    let peer = PeerSpec {
        public_key: key.public_key(),
        allowed_ips: vec!["10.77.0.2/32".parse().unwrap()],
        persistent_keepalive: None,
    };
    let (status, _) =
        signed::<serde_json::Value>(&client, reqwest::Method::POST, "/v1/peers", Some(&peer)).await;
    assert_eq!(status, 409);

    let spec = InterfaceSpec {
        address: "10.77.0.1/24".parse().unwrap(),
        listen_port: 51820,
    };
    let (status, summary) =
        signed::<InterfaceSummary>(&client, reqwest::Method::PUT, "/v1/interface", Some(&spec))
            .await;
    assert_eq!(
        status,
        200,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let summary = summary.unwrap();
    assert_eq!(summary.name, iface);
    let node_key: PublicKey = summary.public_key;
    // The same PUT again changes nothing (same key).
    let (_, again) =
        signed::<InterfaceSummary>(&client, reqwest::Method::PUT, "/v1/interface", Some(&spec))
            .await;
    assert_eq!(again.unwrap().public_key, node_key);
    let (status, _) =
        signed::<serde_json::Value>(&client, reqwest::Method::POST, "/v1/peers", Some(&peer)).await;
    assert_eq!(status, 201);
    let (status, _) =
        signed::<serde_json::Value>(&client, reqwest::Method::POST, "/v1/peers", Some(&peer)).await;
    assert_eq!(status, 200, "adding the same peer again changes nothing");

    // The client, as a user would set it up from weft's file.
    let conf = dir.path().join(format!("{client_iface}.conf"));
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.77.0.2/24\n\n[Peer]\nPublicKey = {}\nEndpoint = {wire}:51820\nAllowedIPs = 10.77.0.0/24\nPersistentKeepalive = 25\n",
            key.to_base64(),
            node_key
        ),
    )
    .unwrap();
    wg_quick_up(&client_ns, &conf);
    assert!(
        ping_within(&client_ns, "10.77.0.1", Duration::from_secs(15)),
        "no ping through the tunnel; agent log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // weft ↔ wireguard-go, both ways, with the offloads on.
    transfer(
        &client_ns,
        &mut agent_ns,
        "10.77.0.1",
        dir.path(),
        "to-weft",
    );
    transfer(
        &agent_ns,
        &mut client_ns,
        "10.77.0.2",
        dir.path(),
        "to-wg-go",
    );

    // `wg show` on the agent's node reads weft's interface truthfully.
    let shown =
        String::from_utf8_lossy(&agent_ns.exec(&["wg", "show", &iface]).stdout).into_owned();
    println!("{shown}");
    assert!(
        shown.contains(&format!("public key: {node_key}")),
        "{shown}"
    );
    assert!(shown.contains("listening port: 51820"), "{shown}");
    assert!(
        shown.contains(&format!("peer: {}", key.public_key())),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("endpoint: 10.202.{id}.2:")),
        "{shown}"
    );
    assert!(shown.contains("allowed ips: 10.77.0.2/32"), "{shown}");
    // wg says "Now" within the second, else "1 second ago" or "N seconds ago"; never decades.
    assert!(
        shown.lines().any(|l| l.contains("latest handshake:")
            && (l.contains("Now") || l.contains("second ago") || l.contains("seconds ago"))),
        "a recent handshake: {shown}"
    );
    assert!(!shown.contains("years"), "{shown}");
    assert!(shown.contains("transfer:"), "{shown}");
    let dump = String::from_utf8_lossy(&agent_ns.exec(&["wg", "show", &iface, "dump"]).stdout)
        .into_owned();
    let peer_line: Vec<&str> = dump.lines().nth(1).unwrap().split('\t').collect();
    let now = jiff::Timestamp::now().as_second();
    let handshake: i64 = peer_line[4].parse().unwrap();
    assert!(
        (now - handshake).abs() < 60,
        "handshake {handshake} vs now {now}"
    );
    let (rx, tx): (u64, u64) = (peer_line[5].parse().unwrap(), peer_line[6].parse().unwrap());
    assert!(rx > 0 && tx > 0, "{dump}");

    // The signed dump agrees.
    let (_, wg) = signed::<WgDump>(&client, reqwest::Method::GET, "/v1/wg", None::<&()>).await;
    let wg = wg.unwrap();
    let p = &wg.interfaces[0].peers[0];
    assert_eq!(p.public_key, key.public_key());
    assert_eq!(
        p.last_handshake.map(|t| (t - handshake).abs() <= 1),
        Some(true)
    );
    assert!(p.rx_bytes >= rx && p.tx_bytes >= tx);

    // Removed: the tunnel no longer carries anything.
    let path = format!("/v1/peers/{}", key.public_key().to_hex());
    let (status, _) =
        signed::<serde_json::Value>(&client, reqwest::Method::DELETE, &path, None::<&()>).await;
    assert_eq!(status, 204);
    assert!(
        !ping(&client_ns, "10.77.0.1", "2"),
        "a removed peer still gets through"
    );
    let (status, _) =
        signed::<serde_json::Value>(&client, reqwest::Method::DELETE, &path, None::<&()>).await;
    assert_eq!(status, 404);

    // Back, then the agent is killed: it restores interface and peer from its data dir,
    // this time with the offloads forced off.
    signed::<serde_json::Value>(&client, reqwest::Method::POST, "/v1/peers", Some(&peer)).await;
    agent_ns.kill(agent);
    let no_offload = [&agent_args[..], &["--no-offload"]].concat();
    agent_ns.spawn(&no_offload, &env, &log);
    wait_for_agent(&client, &log).await;
    let back = Back {
        iface: &iface,
        node_key,
        peer: key.public_key(),
        log: &log,
    };
    back.as_before(&agent_ns, &client_ns, "the restart");
    transfer(
        &client_ns,
        &mut agent_ns,
        "10.77.0.1",
        dir.path(),
        "to-weft-no-offload",
    );
    transfer(
        &agent_ns,
        &mut client_ns,
        "10.77.0.2",
        dir.path(),
        "to-wg-go-no-offload",
    );

    // Deleted from outside (an operator's `ip link del`): the agent starts the interface
    // again, with its key, address and peer, and the tunnel carries traffic again.
    agent_ns.exec(&["ip", "link", "del", &iface]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let link = agent_ns.try_exec(&["ip", "-o", "addr", "show", "dev", &iface]);
        if link.status.success() && String::from_utf8_lossy(&link.stdout).contains("10.77.0.1/24") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the interface did not come back; agent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    back.as_before(&agent_ns, &client_ns, "the interface came back");
}

/// The agent's interface after it was brought back, and what it had before.
struct Back<'a> {
    iface: &'a str,
    node_key: PublicKey,
    peer: PublicKey,
    log: &'a Path,
}

impl Back<'_> {
    /// `wg show` in `agent` gives the same key and the peer, and `client` pings through it.
    fn as_before(&self, agent: &Netns, client: &Netns, after: &str) {
        let shown =
            String::from_utf8_lossy(&agent.exec(&["wg", "show", self.iface]).stdout).into_owned();
        assert!(
            shown.contains(&format!("public key: {}", self.node_key)),
            "the same key after {after}: {shown}"
        );
        assert!(
            shown.contains(&format!("peer: {}", self.peer)),
            "the peer after {after}: {shown}"
        );
        assert!(
            ping_within(client, "10.77.0.1", Duration::from_secs(40)),
            "no ping after {after}; agent log:\n{}",
            std::fs::read_to_string(self.log).unwrap_or_default()
        );
    }
}
