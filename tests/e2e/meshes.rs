//! Meshes with real processes: a controller and four `weft agent`s, each in its own network
//! namespace with a LAN (an interface of its own) behind it, joined by an underlay router
//! namespace. A full mesh of three is created and applied, and every member pings every
//! other's overlay address and LAN; a LAN subnet is added (pushed only to the members whose
//! configuration changed) and a member removed (its interface goes); a hub-and-spoke mesh
//! joins two spokes through a hub, over a node that sits in both meshes with its one overlay
//! address; an agent restarts with its meshes up, and one that lost its state is repaired by
//! the next poll; deleting a mesh tears its interfaces down and leaves the overlay addresses
//! allocated. Needs root; skips elsewhere.

use crate::dataplane::{client_for, wait_for_agent, write_secret};
use crate::netns::{Netns, cannot_run, link};
use crate::support::{Server, WEFT};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Node {
    name: String,
    ns: Netns,
    process: usize,
    args: Vec<String>,
    log: PathBuf,
    data: PathBuf,
    client: weft::agent_client::AgentClient,
}

impl Node {
    fn start(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.process = self.ns.spawn(&args, &[("WEFT_LOG", "info")], &self.log);
    }

    fn has_link(&self, iface: &str) -> bool {
        self.ns
            .try_exec(&["ip", "link", "show", iface])
            .status
            .success()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Pings `ip` from `from` until one answer comes back, for up to 15 s.
fn reaches(from: &Node, ip: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if from
            .ns
            .try_exec(&["ping", "-c", "1", "-W", "1", ip])
            .status
            .success()
        {
            return true;
        }
    }
    false
}

fn assert_reaches(from: &Node, ip: &str, nodes: &[Node]) {
    if !reaches(from, ip) {
        let logs: Vec<String> = nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, n.log()))
            .collect();
        let routes = from.ns.try_exec(&["ip", "route"]);
        panic!(
            "{} cannot reach {ip}\nroutes: {}\n{}",
            from.name,
            String::from_utf8_lossy(&routes.stdout),
            logs.join("\n")
        );
    }
}

async fn mesh(server: &Server, name: &str) -> Value {
    let (status, m) = server.get(&format!("/api/v1/meshes/{name}")).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    m
}

/// Waits until every member of `name` is in step (no drift), as a round after `since` saw.
async fn wait_in_step(server: &Server, name: &str, since: jiff::Timestamp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = mesh(server, name).await;
        let members = m["members"].as_array().unwrap();
        let fresh = |x: &Value| {
            x["checked"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| t > since)
        };
        if members.iter().all(|x| x["drift"].is_null() && fresh(x)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "mesh {name} never in step: {m:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn member<'a>(m: &'a Value, node: &str) -> &'a Value {
    m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["node"] == node)
        .unwrap_or_else(|| panic!("{node} not in {m}"))
}

fn overlay_of(m: &Value, node: &str) -> String {
    member(m, node)["overlay_address"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A LAN behind a node: `addr` on an interface of its own. (A veth pair with both ends in
/// the namespace stands in for a dummy interface, which not every kernel has.)
fn lan(ns: &Netns, name: &str, addr: &str) {
    let peer = format!("{name}p");
    ns.exec(&[
        "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
    ]);
    ns.exec(&["ip", "addr", "add", addr, "dev", name]);
    ns.exec(&["ip", "link", "set", name, "up"]);
    ns.exec(&["ip", "link", "set", &peer, "up"]);
}

/// Starts agent `i` in its namespace: control link to the root namespace, underlay link to
/// the router, a LAN of its own; registers it and waits for it to answer.
async fn node(server: &Server, router: &Netns, dir: &Path, id: u32, i: usize) -> Node {
    let name = format!("m{}", i + 1);
    let ns = Netns::new(&name);
    let control = format!("10.{}.{id}.2", 210 + i);
    link(
        None,
        &format!("10.{}.{id}.1/30", 210 + i),
        &ns,
        &format!("{control}/30"),
    );
    let underlay = format!("10.{}.{id}.2", 180 + i);
    link(
        Some(router),
        &format!("10.{}.{id}.1/30", 180 + i),
        &ns,
        &format!("{underlay}/30"),
    );
    ns.exec(&[
        "ip",
        "route",
        "add",
        "10.176.0.0/12",
        "via",
        &format!("10.{}.{id}.1", 180 + i),
    ]);
    lan(&ns, "lan0", &format!("192.168.{}.1/24", 10 + i));
    let (status, reg) = server
        .post(
            "/api/v1/nodes",
            json!({"name": name, "agent_url": format!("http://{control}:7443/"),
                "endpoint_host": underlay, "peer_pool": "pp"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reg}");
    let secret = reg["secret"].as_str().unwrap().to_string();
    let secret_file = dir.join(format!("{name}.secret"));
    write_secret(&secret_file, &secret);
    let data = dir.join(&name);
    let args: Vec<String> = [
        WEFT,
        "agent",
        "--listen",
        &format!("{control}:7443"),
        "--node-id",
        &name,
        "--secret-file",
        secret_file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--peer-interface",
        &format!("wp{i}{id}"),
        // Four agents on one machine: each its own UAPI folder.
        "--uapi-dir",
        dir.join(format!("{name}-uapi")).to_str().unwrap(),
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut n = Node {
        log: dir.join(format!("{name}.log")),
        name: name.clone(),
        ns,
        process: 0,
        args,
        data,
        client: client_for(&format!("http://{control}:7443/"), &name, &secret),
    };
    n.start();
    wait_for_agent(&n.client, &n.log).await;
    n
}

/// Restarts `n`'s agent and waits until it answers; returns when that was.
async fn restart(n: &mut Node) -> jiff::Timestamp {
    let p = n.process;
    n.ns.kill(p);
    let at = jiff::Timestamp::now();
    n.start();
    wait_for_agent(&n.client, &n.log).await;
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshes_join_nodes_and_their_lans_and_follow_every_change() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let id = std::process::id() % 200 + 20;
    let server = Server::start().await;
    server.pool("pp", "10.76.0.0/24").await;
    server.pool("ov", "100.98.0.0/24").await;
    let (status, _) = server
        .call(Method::PUT, "/api/v1/overlay", Some(json!({"pool": "ov"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let router = Netns::new("ul");
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(node(&server, &router, dir.path(), id, i).await);
    }

    // A full mesh of m1, m2, m3, each with its LAN.
    let (status, created) = server
        .post(
            "/api/v1/meshes",
            json!({"name": "office", "overlay": "100.98.0.0/24", "members": [
                {"node": "m1", "lan_subnets": ["192.168.10.0/24"]},
                {"node": "m2", "lan_subnets": ["192.168.11.0/24"]},
                {"node": "m3", "lan_subnets": ["192.168.12.0/24"]},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let iface = created["interface"].as_str().unwrap().to_string();
    let (status, applied) = server
        .call(Method::POST, "/api/v1/meshes/office/apply", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    let m = wait_in_step(&server, "office", jiff::Timestamp::now()).await;
    for x in m["members"].as_array().unwrap() {
        assert_eq!(x["applied_generation"], 1, "{x}");
    }
    let overlay: Vec<String> = (1..=4)
        .map(|i| overlay_of(&m, &format!("m{i}")))
        .take(3)
        .collect();
    for (a, from) in nodes.iter().take(3).enumerate() {
        let addr = from.ns.exec(&["ip", "-4", "addr", "show", &iface]);
        assert!(
            String::from_utf8_lossy(&addr.stdout).contains(&format!("{}/32", overlay[a])),
            "{}: {}",
            from.name,
            String::from_utf8_lossy(&addr.stdout)
        );
        for b in (0..3).filter(|&b| b != a) {
            assert_reaches(from, &overlay[b], &nodes);
            assert_reaches(from, &format!("192.168.{}.1", 10 + b), &nodes);
        }
    }
    // Every pair has shaken hands.
    let m = mesh(&server, "office").await;
    let handshakes = m["handshakes"].as_array().unwrap();
    assert_eq!(handshakes.len(), 6, "{m:#}");

    // m2's mesh interface deleted from outside: its agent makes it again from the saved
    // mesh (address, peers, routes to the LANs), and m2 reaches m1 and its LAN over it.
    nodes[1].ns.exec(&["ip", "link", "del", &iface]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let addr = nodes[1].ns.try_exec(&["ip", "-4", "addr", "show", &iface]);
        if String::from_utf8_lossy(&addr.stdout).contains(&format!("{}/32", overlay[1])) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "m2's mesh interface did not come back:\n{}",
            nodes[1].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_reaches(&nodes[1], &overlay[0], &nodes);
    assert_reaches(&nodes[1], "192.168.10.1", &nodes);

    // A LAN subnet more on m1: only m2 and m3 (whose entry for m1 changed) are pushed.
    lan(&nodes[0].ns, "lan1", "192.168.20.1/24");
    let members = |with_m3: bool| {
        let mut v = vec![
            json!({"node": "m1", "lan_subnets": ["192.168.10.0/24", "192.168.20.0/24"]}),
            json!({"node": "m2", "lan_subnets": ["192.168.11.0/24"]}),
        ];
        if with_m3 {
            v.push(json!({"node": "m3", "lan_subnets": ["192.168.12.0/24"]}));
        }
        v
    };
    let (status, changed) = server
        .call(
            Method::PUT,
            "/api/v1/meshes/office",
            Some(json!({"name": "office", "members": members(true)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["generation"], 2);
    let m = wait_in_step(&server, "office", jiff::Timestamp::now()).await;
    assert_eq!(
        member(&m, "m1")["applied_generation"],
        1,
        "m1's own configuration did not change"
    );
    assert_eq!(member(&m, "m2")["applied_generation"], 2);
    assert_eq!(member(&m, "m3")["applied_generation"], 2);
    assert_reaches(&nodes[1], "192.168.20.1", &nodes);
    assert_reaches(&nodes[2], "192.168.20.1", &nodes);

    // m3 leaves: its interface goes; m1 and m2 still reach each other.
    let (status, _) = server
        .call(
            Method::PUT,
            "/api/v1/meshes/office",
            Some(json!({"name": "office", "members": members(false)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_in_step(&server, "office", jiff::Timestamp::now()).await;
    assert!(!nodes[2].has_link(&iface), "m3 still has {iface}");
    assert_reaches(&nodes[0], &overlay[1], &nodes);

    // Hub and spoke: m3 the hub, m1 and m4 spokes that reach each other through it. m1 now
    // sits in two meshes with its one overlay address.
    let (status, hs) = server
        .post(
            "/api/v1/meshes",
            json!({"name": "spokes", "topology": "hub-and-spoke", "hubs": ["m3"],
                "members": [{"node": "m3"}, {"node": "m1"}, {"node": "m4"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hs}");
    assert_eq!(hs["listen_port"], 51822, "51821 is m1's port in office");
    assert_eq!(
        overlay_of(&hs, "m1"),
        overlay[0],
        "one overlay address in every mesh"
    );
    let hs_iface = hs["interface"].as_str().unwrap().to_string();
    let (status, _) = server
        .call(Method::POST, "/api/v1/meshes/spokes/apply", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let hs = wait_in_step(&server, "spokes", jiff::Timestamp::now()).await;
    let m4 = overlay_of(&hs, "m4");
    let peers = nodes[0].ns.exec(&["ip", "route", "show", "dev", &hs_iface]);
    assert!(
        String::from_utf8_lossy(&peers.stdout).contains(&m4),
        "m1 routes m4 through the hub's entry"
    );
    assert_reaches(&nodes[0], &m4, &nodes);
    assert_reaches(&nodes[3], &overlay[0], &nodes);
    assert_reaches(&nodes[3], &overlay[2], &nodes);
    // m4 has one peer, the hub; yet it reached m1.
    let hs = mesh(&server, "spokes").await;
    let m4_peers = hs["handshakes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["from"] == "m4")
        .count();
    assert_eq!(m4_peers, 1, "{hs:#}");

    // m1 restarts: both its meshes come back without the controller pushing anything.
    let since = restart(&mut nodes[0]).await;
    wait_in_step(&server, "spokes", since).await;
    assert!(nodes[0].has_link(&iface) && nodes[0].has_link(&hs_iface));
    assert_reaches(&nodes[1], &overlay[0], &nodes);
    assert_reaches(&nodes[3], &overlay[0], &nodes);

    // An older generation than the one m1 runs is refused by its agent, and changes nothing.
    let office_id = created["id"].as_str().unwrap();
    let answer = nodes[0]
        .client
        .call(Method::GET, "/v1/meshes", Vec::new())
        .await
        .unwrap();
    let list: Value = serde_json::from_slice(&answer.body).unwrap();
    let running = list["meshes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == office_id)
        .unwrap()
        .clone();
    assert_eq!(running["generation"], 3, "{running}");
    let older = json!({"generation": 1, "interface": iface,
        "address": format!("{}/32", overlay[0]), "listen_port": 51821, "mtu": 1420,
        "forward": false, "peers": []});
    let answer = nodes[0]
        .client
        .call(
            Method::PUT,
            &format!("/v1/meshes/{office_id}"),
            serde_json::to_vec(&older).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 409);
    let refusal: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(refusal["error"], "stale_generation", "{refusal}");
    assert_reaches(&nodes[1], &overlay[0], &nodes);

    // m2 loses its state (a wiped data plane file): the next poll puts the mesh back.
    let p = nodes[1].process;
    nodes[1].ns.kill(p);
    std::fs::remove_file(nodes[1].data.join("dataplane.json")).unwrap();
    let since = restart(&mut nodes[1]).await;
    wait_in_step(&server, "office", since).await;
    assert!(nodes[1].has_link(&iface));
    assert_reaches(&nodes[1], &overlay[0], &nodes);

    // Deleting a mesh tears its interfaces down; the overlay addresses stay allocated.
    let (status, deleted) = server
        .call(Method::DELETE, "/api/v1/meshes/office", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["torn_down"], json!(["m1", "m2"]), "{deleted}");
    assert!(!nodes[0].has_link(&iface) && !nodes[1].has_link(&iface));
    assert!(nodes[0].has_link(&hs_iface), "the other mesh stays");
    for (i, ip) in overlay.iter().enumerate() {
        let (_, node) = server.get(&format!("/api/v1/nodes/m{}", i + 1)).await;
        assert_eq!(node["overlay_address"], ip.as_str());
        let (_, rec) = server.get(&format!("/api/v1/addresses/{ip}")).await;
        assert_eq!(rec["status"], "allocated", "{rec}");
    }
}
