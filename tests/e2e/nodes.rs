//! A controller and two real `weft agent` processes, each in its own network namespace
//! reached over a veth pair: register both nodes, check their health, create peers with
//! `auto` and see them spread by the scoring and appear in `wg show` on the right node, bring
//! one up as a real wireguard-go client with weft's own file and ping the node through it,
//! delete peers. Then kill one agent: its node goes offline, `auto` picks the other, and a
//! peer asked of the dead node fails with its address released. Needs root; skips elsewhere.

use crate::dataplane::{Sockets, client_for, wait_for_agent, wg_quick_up, write_secret};
use crate::netns::{Netns, cannot_run, link};
use crate::support::{Server, WEFT};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

struct Agent {
    ns: Netns,
    process: usize,
    iface: String,
}

fn wg_show(agent: &Agent) -> String {
    String::from_utf8_lossy(&agent.ns.exec(&["wg", "show", &agent.iface]).stdout).into_owned()
}

async fn node_status(server: &Server, name: &str) -> String {
    let (_, node) = server.get(&format!("/api/v1/nodes/{name}")).await;
    node["status"].as_str().unwrap_or_default().to_string()
}

async fn wait_status(server: &Server, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while node_status(server, name).await != want {
        assert!(
            Instant::now() < deadline,
            "node {name} never became {want}: {}",
            node_status(server, name).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_places_peers_on_two_agents_and_survives_losing_one() {
    if let Some(why) = cannot_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let id = std::process::id() % 200 + 20;
    let server = Server::start().await;
    for (name, cidr) in [
        ("pa", "10.78.0.0/24"),
        ("pb", "10.79.0.0/24"),
        ("ov", "100.96.0.0/24"),
    ] {
        server.pool(name, cidr).await;
    }
    let (status, _) = server
        .call(Method::PUT, "/api/v1/overlay", Some(json!({"pool": "ov"})))
        .await;
    assert_eq!(status, StatusCode::OK);

    let dir = tempfile::tempdir().unwrap();
    let client_ns = Netns::new("cl");
    let mut agents = Vec::new();
    let mut sockets = vec![format!("wq{id}")];
    for (i, (node, pool)) in [("n1", "pa"), ("n2", "pb")].into_iter().enumerate() {
        let ns = Netns::new(node);
        let octet = 203 + i;
        let control = format!("10.{octet}.{id}.2");
        link(
            None,
            &format!("10.{octet}.{id}.1/30"),
            &ns,
            &format!("{control}/30"),
        );
        // n1 also faces the client namespace: that is its public endpoint.
        let endpoint = if i == 0 {
            link(
                Some(&ns),
                &format!("10.205.{id}.1/30"),
                &client_ns,
                &format!("10.205.{id}.2/30"),
            );
            format!("10.205.{id}.1")
        } else {
            control.clone()
        };
        let (status, reg) = server
            .post(
                "/api/v1/nodes",
                json!({"name": node, "agent_url": format!("http://{control}:7443/"),
                    "endpoint_host": endpoint, "peer_pool": pool, "max_peers": 10,
                    "labels": {"region": format!("r{i}")}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reg}");
        assert!(
            reg["node"]["overlay_address"]
                .as_str()
                .unwrap()
                .starts_with("100.96.0.")
        );
        let secret = reg["secret"].as_str().unwrap().to_string();
        let secret_file = dir.path().join(format!("{node}.secret"));
        write_secret(&secret_file, &secret);
        let iface = format!("w{}{id}", &node[1..]);
        sockets.push(iface.clone());
        let data = dir.path().join(node);
        let log = dir.path().join(format!("{node}.log"));
        let args = [
            WEFT,
            "agent",
            "--listen",
            &format!("{control}:7443"),
            "--node-id",
            node,
            "--secret-file",
            secret_file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--peer-interface",
            &iface,
        ];
        let mut ns = ns;
        let process = ns.spawn(&args, &[("WEFT_LOG", "info")], &log);
        wait_for_agent(
            &client_for(&format!("http://{control}:7443/"), node, &secret),
            &log,
        )
        .await;
        agents.push(Agent { ns, process, iface });
    }
    let _sockets = Sockets(sockets);

    // Health: a test call answers with its latency; the poller marks both online.
    for node in ["n1", "n2"] {
        let (status, test) = server
            .post(&format!("/api/v1/nodes/{node}/test"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(test["ok"], true, "{test}");
        wait_status(&server, node, "online").await;
    }

    // Four peers with `auto`: least-loaded spreads them two and two.
    let mut created = Vec::new();
    for i in 0..4 {
        let (status, body) = server
            .post(
                "/api/v1/peers",
                json!({"name": format!("p{i}"), "node": "auto"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        created.push(body);
    }
    let on = |node: &str| created.iter().filter(|c| c["peer"]["node"] == node).count();
    assert_eq!((on("n1"), on("n2")), (2, 2));
    for c in &created {
        let agent = if c["peer"]["node"] == "n1" {
            &agents[0]
        } else {
            &agents[1]
        };
        let other = if c["peer"]["node"] == "n1" {
            &agents[1]
        } else {
            &agents[0]
        };
        let key = c["peer"]["public_key"].as_str().unwrap();
        assert!(
            wg_show(agent).contains(&format!("peer: {key}")),
            "{}",
            wg_show(agent)
        );
        assert!(!wg_show(other).contains(key));
    }
    // No private key of a node anywhere in what the controller answers.
    let (_, nodes) = server.get("/api/v1/nodes").await;
    assert!(!nodes.to_string().contains("private"));

    // A real client with weft's own file reaches n1's interface.
    let first = created.iter().find(|c| c["peer"]["node"] == "n1").unwrap();
    let conf = dir.path().join(format!("wq{id}.conf"));
    std::fs::write(&conf, first["config"].as_str().unwrap()).unwrap();
    wg_quick_up(&client_ns, &conf);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !client_ns
        .try_exec(&["ping", "-c", "1", "-W", "1", "10.78.0.1"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "no ping over weft's peer; n1: {}",
            wg_show(&agents[0])
        );
    }

    // Deleting a peer removes it from its node.
    let gone = created.iter().find(|c| c["peer"]["node"] == "n2").unwrap();
    let name = gone["peer"]["name"].as_str().unwrap();
    let (status, _) = server
        .call(Method::DELETE, &format!("/api/v1/peers/{name}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!wg_show(&agents[1]).contains(gone["peer"]["public_key"].as_str().unwrap()));

    // n2's agent dies: offline, `auto` goes to n1, and n2 refuses with its address released.
    let (n2_ns_process, n2) = (agents[1].process, &mut agents[1]);
    n2.ns.kill(n2_ns_process);
    wait_status(&server, "n2", "offline").await;
    let (status, body) = server
        .post("/api/v1/peers", json!({"name": "after", "node": "auto"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["peer"]["node"], "n1");
    let (_, before) = server.get("/api/v1/pools/pb").await;
    let (status, body) = server
        .post("/api/v1/peers", json!({"name": "doomed", "node": "n2"}))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("n2") && message.contains("released"),
        "{message}"
    );
    let (_, after) = server.get("/api/v1/pools/pb").await;
    assert_eq!(
        before["stats"]["allocated"], after["stats"]["allocated"],
        "the address went back"
    );
    let (status, _) = server.get("/api/v1/peers/doomed").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The controller's database and its journal hold no private key of a node.
    let mut db = std::fs::read(server.data_dir().join("weft.redb")).unwrap_or_default();
    db.extend(std::fs::read(server.data_dir().join("weft.journal")).unwrap_or_default());
    for agent in &agents {
        let key = std::fs::read(
            dir.path()
                .join(if agent.iface.starts_with("w1") {
                    "n1"
                } else {
                    "n2"
                })
                .join("keys")
                .join(format!("{}.key", agent.iface)),
        )
        .unwrap();
        assert!(
            !db.windows(32).any(|w| w == key.as_slice()),
            "a node's private key in the controller's database"
        );
    }
}
