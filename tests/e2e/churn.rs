//! Peers change while traffic flows, on a weft agent's interface with real WireGuard peers
//! (Debian's wireguard-go), each in its own network namespace:
//! - a new peer set over the UAPI socket (what `wg set` sends) while another peer's pings
//!   flow: not one of those pings is lost, and the new peer's TCP transfer arrives whole;
//! - a peer whose address changes (roaming) is followed to its new address;
//! - a peer removed over the UAPI while its pings flow is cut off mid-flow, and the others
//!   carry on.
//!
//! Needs root; skips elsewhere.

use crate::dataplane::{
    Sockets, client_for, ping, ping_within, run_id, signed, wait_for_agent, wg_quick_up,
    write_secret,
};
use crate::netns::{Netns, cannot_run, link};
use crate::support::WEFT;
use crate::transfer::transfer;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use weft::agent_api::{InterfaceSpec, InterfaceSummary, PeerSpec, PublicKey};
use weft::wgquick::PrivateKey;

const SECRET: &str = "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
/// The agent's address on its interface; peers are .2 and .3.
const AGENT: &str = "10.78.0.1";

/// One UAPI exchange on `sock`, as `wg` makes it: the answer's lines, `errno=` last.
pub fn uapi(sock: &Path, request: &str) -> Vec<String> {
    let mut s = UnixStream::connect(sock).expect("UAPI socket");
    s.write_all(request.as_bytes()).expect("UAPI write");
    let mut lines = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line.expect("UAPI read");
        let last = line.starts_with("errno=");
        lines.push(line);
        if last {
            break;
        }
    }
    lines
}

/// A wireguard-go peer of the agent, brought up in `ns` from the wg-quick file a user would
/// write (interface address `overlay`, the agent at `agent.1:51820`), once it pings the
/// agent through the tunnel. `log`: the agent's, shown if it does not.
fn wg_go_peer(
    ns: &Netns,
    dir: &Path,
    iface: &str,
    key: &PrivateKey,
    overlay: &str,
    agent: (PublicKey, &str),
    log: &Path,
) {
    let conf = dir.join(format!("{iface}.conf"));
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = {overlay}/24\nListenPort = 51820\n\n[Peer]\nPublicKey = {}\nEndpoint = {}:51820\nAllowedIPs = {AGENT}/32\n",
            key.to_base64(),
            agent.0,
            agent.1,
        ),
    )
    .expect("wg-quick file");
    wg_quick_up(ns, &conf);
    assert!(
        ping_within(ns, AGENT, Duration::from_secs(15)),
        "no path from {overlay}; agent log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Pings `ip` from `ns` every 10 ms, `count` times, and returns how many answers came back.
/// `meanwhile` runs while the pings flow.
fn ping_flow(ns: &mut Netns, ip: &str, count: u32, log: &Path, meanwhile: impl FnOnce()) -> u32 {
    let n = count.to_string();
    let flow = ns.spawn(&["ping", "-c", &n, "-i", "0.01", "-W", "1", ip], &[], log);
    meanwhile();
    let deadline = Instant::now() + Duration::from_secs(u64::from(count) / 50 + 20);
    while ns.exited(flow).is_none() {
        assert!(Instant::now() < deadline, "ping {ip} never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // "400 packets transmitted, 400 received, 0% packet loss, time 4010ms"
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    summary
        .split(", ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no received count: {summary}"))
}

/// Whether the UAPI `get` lists `key`, and the endpoint it gives it.
fn peer_in_get(sock: &Path, key: &PublicKey) -> Option<String> {
    let lines = uapi(sock, "get=1\n\n");
    assert_eq!(lines.last().map(String::as_str), Some("errno=0"));
    let at = lines
        .iter()
        .position(|l| *l == format!("public_key={}", key.to_hex()))?;
    Some(
        lines[at + 1..]
            .iter()
            .take_while(|l| !l.starts_with("public_key="))
            .find_map(|l| l.strip_prefix("endpoint="))
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_change_while_traffic_flows() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let id = run_id();
    let dir = tempfile::tempdir().expect("tempdir");
    let (iface, wg_b, wg_c) = (format!("wp{id}"), format!("wr{id}"), format!("wn{id}"));
    let _sockets = Sockets(vec![wg_b.clone(), wg_c.clone()]);
    let mut a = Netns::new("churna");
    let mut b = Netns::new("churnb");
    let c = Netns::new("churnc");
    let control = format!("10.203.{id}.2");
    link(
        None,
        &format!("10.203.{id}.1/30"),
        &a,
        &format!("{control}/30"),
    );
    let (_, b_dev) = link(Some(&a), "10.79.0.1/24", &b, "10.79.0.2/24");
    link(Some(&a), "10.80.0.1/24", &c, "10.80.0.2/24");

    let secret_file = dir.path().join("secret");
    write_secret(&secret_file, SECRET);
    let data = dir.path().join("agent");
    let log = dir.path().join("agent.log");
    let agent = a.spawn(
        &[
            WEFT,
            "agent",
            "--listen",
            &format!("{control}:7443"),
            "--node-id",
            "churn",
            "--secret-file",
            secret_file.to_str().expect("path"),
            "--data-dir",
            data.to_str().expect("path"),
            "--peer-interface",
            &iface,
            "--uapi-dir",
            dir.path().to_str().expect("path"),
        ],
        &[("WEFT_LOG", "info")],
        &log,
    );
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let client = client_for(&format!("http://{control}:7443/"), "churn", SECRET);
    wait_for_agent(&client, &log).await;
    let spec = InterfaceSpec {
        address: format!("{AGENT}/24").parse().expect("net"),
        listen_port: 51820,
    };
    let (status, summary) =
        signed::<InterfaceSummary>(&client, reqwest::Method::PUT, "/v1/interface", Some(&spec))
            .await;
    assert_eq!(status, 200, "{}", agent_log());
    let agent_key = summary.expect("summary").public_key;
    let sock = dir.path().join(format!("{iface}.sock"));

    // Peer B, added as the controller adds peers.
    let kb = PrivateKey::generate().expect("key");
    let peer_b = PeerSpec {
        public_key: kb.public_key(),
        allowed_ips: vec!["10.78.0.2/32".parse().expect("net")],
        persistent_keepalive: None,
    };
    let (status, _) =
        signed::<serde_json::Value>(&client, reqwest::Method::POST, "/v1/peers", Some(&peer_b))
            .await;
    assert_eq!(status, 201);
    wg_go_peer(
        &b,
        dir.path(),
        &wg_b,
        &kb,
        "10.78.0.2",
        (agent_key, "10.79.0.1"),
        &log,
    );

    // Peer C is set over the UAPI while B's pings flow; none of B's is lost.
    let kc = PrivateKey::generate().expect("key");
    let received = ping_flow(&mut b, AGENT, 400, &dir.path().join("flow-add.log"), || {
        let answer = uapi(
            &sock,
            &format!(
                "set=1\npublic_key={}\nendpoint=10.80.0.2:51820\nallowed_ip=10.78.0.3/32\n\n",
                kc.public_key().to_hex()
            ),
        );
        assert_eq!(answer, ["errno=0"]);
        wg_go_peer(
            &c,
            dir.path(),
            &wg_c,
            &kc,
            "10.78.0.3",
            (agent_key, "10.80.0.1"),
            &log,
        );
    });
    assert_eq!(received, 400, "B lost pings while C was added");
    transfer(&c, &mut a, AGENT, dir.path(), "new-peer");
    assert_eq!(
        peer_in_get(&sock, &kc.public_key()).as_deref(),
        Some("10.80.0.2:51820")
    );

    // Roaming: B's address moves; its next packet comes from there, and the agent follows.
    b.exec(&["ip", "addr", "del", "10.79.0.2/24", "dev", &b_dev]);
    b.exec(&["ip", "addr", "add", "10.79.0.3/24", "dev", &b_dev]);
    // wireguard-go sends from the address it last received on until its endpoint is set
    // again (as its roaming client does on a network change).
    b.exec(&[
        "wg",
        "set",
        &wg_b,
        "peer",
        &agent_key.to_base64(),
        "endpoint",
        "10.79.0.1:51820",
    ]);
    assert!(
        ping_within(&b, AGENT, Duration::from_secs(10)),
        "B lost its path after moving; B: {}\nagent: {:?}\nagent log:\n{}",
        String::from_utf8_lossy(&b.try_exec(&["wg", "show", &wg_b]).stdout),
        uapi(&sock, "get=1\n\n"),
        agent_log()
    );
    assert_eq!(
        peer_in_get(&sock, &kb.public_key()).as_deref(),
        Some("10.79.0.3:51820")
    );
    assert!(
        ping(&a, "10.78.0.2", "2"),
        "the agent reaches B at its new address"
    );

    // B is removed over the UAPI while its pings flow: cut off mid-flow; C carries on.
    let received = ping_flow(
        &mut b,
        AGENT,
        300,
        &dir.path().join("flow-remove.log"),
        || {
            std::thread::sleep(Duration::from_secs(1));
            let answer = uapi(
                &sock,
                &format!(
                    "set=1\npublic_key={}\nremove=true\n\n",
                    kb.public_key().to_hex()
                ),
            );
            assert_eq!(answer, ["errno=0"]);
        },
    );
    assert!(
        received > 0 && received < 300,
        "B's pings flow until it is removed, then stop: {received} of 300"
    );
    assert!(!ping(&b, AGENT, "2"), "a removed peer still gets through");
    assert!(ping(&c, AGENT, "2"), "the other peer carries on");
    assert_eq!(peer_in_get(&sock, &kb.public_key()), None);
    assert!(a.exited(agent).is_none(), "the agent is still running");
}
