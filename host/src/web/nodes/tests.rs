//! The nodes API through the whole router, with real agents (`agent::router`, the signed
//! protocol, nonces in memory) on loopback ports: registration shows the secret once and
//! stores it only sealed, the overlay address comes and goes with the node, a connection
//! test and a health round mark nodes online or offline, and every route states its access.

use crate::agent_api::Health;
use crate::controller::wg_stats::WgSeen;
use crate::ipam::Status;
use crate::store::NodeStatus;
use crate::web::api_fixture::*;
use axum::http::StatusCode;
use serde_json::json;
use std::net::IpAddr;

#[tokio::test]
async fn every_route_needs_a_token_and_writes_need_a_write_token() {
    let f = Fixture::new().await;
    let (status, _) = f
        .admin("POST", "/api/v1/nodes", Some(request("n1", &closed_port())))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let routes = [
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/nodes/n1"),
        ("GET", "/api/v1/nodes/n1/history"),
        ("POST", "/api/v1/nodes"),
        ("PATCH", "/api/v1/nodes/n1"),
        ("POST", "/api/v1/nodes/n1/test"),
        ("POST", "/api/v1/nodes/n1/rotate-secret"),
        ("DELETE", "/api/v1/nodes/n1"),
        ("GET", "/api/v1/overlay"),
        ("PUT", "/api/v1/overlay"),
    ];
    assert_access(&f, &routes, |method, uri| match (method, uri) {
        ("POST", "/api/v1/nodes") => Some(request("n2", &closed_port())),
        ("PATCH", _) => Some(json!({"weight": 2})),
        ("PUT", _) => Some(json!({"pool": "overlay"})),
        _ => None,
    })
    .await;
    let (_, list) = f.admin("GET", "/api/v1/nodes", None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "viewers changed nothing"
    );
    assert_eq!(list["items"][0]["weight"], 1);
}

#[tokio::test]
async fn a_nodes_history_says_who_registered_edited_and_switched_it() {
    let f = Fixture::new().await;
    let (status, _) = f.admin("GET", "/api/v1/nodes/ghost/history", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    f.admin("POST", "/api/v1/nodes", Some(request("n1", &closed_port())))
        .await;
    f.admin("PATCH", "/api/v1/nodes/n1", Some(json!({"weight": 5})))
        .await;
    f.admin("PATCH", "/api/v1/nodes/n1", Some(json!({"enabled": false})))
        .await;
    let (status, body) = f
        .call("GET", "/api/v1/nodes/n1/history", Some(VIEWER), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["events"].as_array().unwrap();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("admin", "registered"),
            ("admin", "edited"),
            ("admin", "disabled")
        ]
    );
    assert!(events[0]["at"].as_str().unwrap().ends_with('Z'));
    f.admin("DELETE", "/api/v1/nodes/n1", None).await;
    let (status, _) = f.admin("GET", "/api/v1/nodes/n1/history", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "gone with its node");
}

#[tokio::test]
async fn an_enrolled_nodes_history_names_the_token_its_maker_and_the_agents_address() {
    use axum::extract::connect_info::MockConnectInfo;
    use tower::ServiceExt;
    let f = Fixture::new().await;
    let token = f
        .state
        .store
        .write(|w| {
            w.create_join_token(
                "wj_test",
                "peers-a",
                &[],
                1,
                std::time::Duration::from_secs(60),
                "ops",
            )
        })
        .await
        .unwrap();
    let body = json!({"token": "wj_test", "name": "n1", "agent_url": closed_port(),
        "endpoint_host": "n1.example.net"});
    let req = axum::http::Request::post("/api/v1/enroll")
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let app = crate::web::router(f.state.clone()).layer(MockConnectInfo(
        std::net::SocketAddr::from(([198, 51, 100, 7], 40000)),
    ));
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (_, body) = f.admin("GET", "/api/v1/nodes/n1/history", None).await;
    assert_eq!(
        body["events"],
        json!([{
            "at": body["events"][0]["at"],
            "actor": format!("join-token:{}", token.id),
            "action": {"kind": "enrolled", "token": token.id, "token_created_by": "ops",
                "from": "198.51.100.7"},
        }])
    );
}

#[tokio::test]
async fn the_secret_is_shown_once_and_stored_only_sealed() {
    let f = Fixture::new().await;
    let (status, body) = f
        .admin("POST", "/api/v1/nodes", Some(request("n1", &closed_port())))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = body["secret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 64);
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(
        body["agent_command"]
            .as_str()
            .unwrap()
            .contains("--node-id n1")
    );
    assert_eq!(body["node"]["status"], "unknown");
    assert_eq!(body["node"]["endpoint"], "n1.example.net:51820");
    // Never again: not in the list, not in the node.
    let (_, one) = f.admin("GET", "/api/v1/nodes/n1", None).await;
    let (_, list) = f.admin("GET", "/api/v1/nodes", None).await;
    for v in [&one, &list] {
        assert!(!v.to_string().contains(&secret));
    }
    // Nor in the database file, as text or as the raw bytes it encodes.
    f.state.store.write(|_| Ok(())).await.unwrap();
    let db = std::fs::read(f.dir.path().join("db.redb")).unwrap();
    let raw = hex::decode(&secret).unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));
    assert!(!db.windows(raw.len()).any(|w| w == raw.as_slice()));
}

#[tokio::test]
async fn bad_requests_are_refused_by_field_and_change_nothing() {
    let f = Fixture::new().await;
    let cases = [
        (
            json!({"name": "bad name"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"agent_url": "ftp://x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent_url",
        ),
        (
            json!({"endpoint_host": "a b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "endpoint_host",
        ),
        (
            json!({"listen_port": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "listen_port",
        ),
        (
            json!({"max_peers": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_peers",
        ),
        (
            json!({"weight": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "weight",
        ),
        (
            json!({"labels": {"a b": "x"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "labels",
        ),
        (json!({"peer_pool": "nope"}), StatusCode::NOT_FOUND, "nope"),
    ];
    for (change, status, says) in cases {
        let mut body = request("n1", &closed_port());
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (got, answer) = f.admin("POST", "/api/v1/nodes", Some(body)).await;
        assert_eq!(got, status, "{change}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{change}: {message}");
    }
    let (_, list) = f.admin("GET", "/api/v1/nodes", None).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    f.admin("POST", "/api/v1/nodes", Some(request("n1", &closed_port())))
        .await;
    let (status, _) = f
        .admin("POST", "/api/v1/nodes", Some(request("n1", &closed_port())))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "the name is taken");
    let (status, _) = f
        .admin("PATCH", "/api/v1/nodes/n1", Some(json!({"name": "n2"})))
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the name is fixed"
    );
}

#[tokio::test]
async fn a_node_takes_its_overlay_address_and_gives_it_back_when_deleted() {
    let f = Fixture::new().await;
    let (status, _) = f
        .admin("PUT", "/api/v1/overlay", Some(json!({"pool": "nope"})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, overlay) = f
        .admin("PUT", "/api/v1/overlay", Some(json!({"pool": "overlay"})))
        .await;
    assert_eq!(
        (status, &overlay["pool"]),
        (StatusCode::OK, &json!("overlay"))
    );
    let (_, a) = f
        .admin("POST", "/api/v1/nodes", Some(request("n1", &closed_port())))
        .await;
    let (_, b) = f
        .admin("POST", "/api/v1/nodes", Some(request("n2", &closed_port())))
        .await;
    let ip_a: IpAddr = a["node"]["overlay_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ip_b: IpAddr = b["node"]["overlay_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(ip_a, ip_b);
    let rec = f.state.store.read(|r| r.address(ip_a)).unwrap();
    assert_eq!(rec.status, Status::Allocated);
    assert_eq!(rec.owner.as_deref(), Some("node:n1"));
    // Edits keep it.
    let (_, edited) = f
        .admin(
            "PATCH",
            "/api/v1/nodes/n1",
            Some(json!({"max_peers": 10, "enabled": false})),
        )
        .await;
    assert_eq!(edited["overlay_address"], a["node"]["overlay_address"]);
    assert_eq!(edited["status"], "disabled");
    let (status, _) = f.admin("DELETE", "/api/v1/nodes/n1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let rec = f.state.store.read(|r| r.address(ip_a)).unwrap();
    assert_eq!(rec.status, Status::Available);
    let (status, _) = f.admin("DELETE", "/api/v1/nodes/n1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_test_and_a_health_round_mark_nodes_online_or_offline() {
    let f = Fixture::new().await;
    let (_, live) = f
        .admin(
            "POST",
            "/api/v1/nodes",
            Some(request("live", "http://127.0.0.1:1/")),
        )
        .await;
    // A client made for the old URL is not reused once the URL changes.
    let (_, before) = f.admin("POST", "/api/v1/nodes/live/test", None).await;
    assert_eq!(before["ok"], false);
    let url = agent("live", live["secret"].as_str().unwrap()).await;
    f.admin(
        "PATCH",
        "/api/v1/nodes/live",
        Some(json!({"agent_url": url})),
    )
    .await;
    f.admin(
        "POST",
        "/api/v1/nodes",
        Some(request("dead", &closed_port())),
    )
    .await;
    let (_, off) = f
        .admin(
            "POST",
            "/api/v1/nodes",
            Some(request("off", &closed_port())),
        )
        .await;
    assert_eq!(off["node"]["status"], "unknown");
    f.admin(
        "PATCH",
        "/api/v1/nodes/off",
        Some(json!({"enabled": false})),
    )
    .await;

    let (status, test) = f.admin("POST", "/api/v1/nodes/live/test", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(test["ok"], true, "{test}");
    assert_eq!(test["status"], "online");
    assert!(test["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(test["health"]["version"], env!("CARGO_PKG_VERSION"));
    let (_, test) = f.admin("POST", "/api/v1/nodes/dead/test", None).await;
    assert_eq!(
        (test["ok"].clone(), test["status"].clone()),
        (json!(false), json!("offline"))
    );
    assert!(
        test["error"].as_str().unwrap().contains("refused"),
        "{test}"
    );

    let seen = WgSeen::default();
    let polled = crate::controller::health::round(f.registry(), &seen)
        .await
        .unwrap();
    assert_eq!(polled, 2, "the disabled node is not polled");
    let status = |name: &str| f.state.store.read(|r| r.node(name)).unwrap().unwrap();
    assert_eq!(status("live").status, NodeStatus::Online);
    assert!(status("live").last_seen.is_some());
    let health: Health = status("live").last_health.unwrap();
    assert!(health.uptime_seconds < 60);
    assert_eq!(status("dead").status, NodeStatus::Offline);
    assert_eq!(status("off").status, NodeStatus::Disabled);
    // Placement sees exactly that.
    let nodes = f.state.peer_nodes.nodes().unwrap();
    let live = nodes.iter().find(|n| n.name == "live").unwrap();
    assert!(live.online && live.enabled);
    assert_eq!(
        live.labels,
        vec![("region".to_string(), "eu-west".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keyed_with_another_secret_is_an_error_not_offline() {
    let f = Fixture::new().await;
    let url = agent(
        "n1",
        "0000000000000000000000000000000000000000000000000000000000000000",
    )
    .await;
    f.admin("POST", "/api/v1/nodes", Some(request("n1", &url)))
        .await;
    let (_, test) = f.admin("POST", "/api/v1/nodes/n1/test", None).await;
    assert_eq!(test["status"], "error", "{test}");
    assert!(
        test["error"].as_str().unwrap().contains("refused"),
        "{test}"
    );
}

#[tokio::test]
async fn a_pool_that_nodes_need_cannot_be_deleted() {
    let f = Fixture::new().await;
    f.admin("PUT", "/api/v1/overlay", Some(json!({"pool": "overlay"})))
        .await;
    f.admin("POST", "/api/v1/nodes", Some(request("n1", &closed_port())))
        .await;
    for (pool, says) in [
        ("overlay", "overlay pool"),
        ("peers-a", "peer pool of node \"n1\""),
    ] {
        let (status, body) = f
            .admin("DELETE", &format!("/api/v1/pools/{pool}?force=true"), None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    f.admin("DELETE", "/api/v1/nodes/n1", None).await;
    f.admin("PUT", "/api/v1/overlay", Some(json!({"pool": null})))
        .await;
    let (status, _) = f.admin("DELETE", "/api/v1/pools/peers-a", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_secret_keeps_the_node_reachable_and_never_shows_the_secret() {
    let f = Fixture::new().await;
    let (_, made) = f
        .admin(
            "POST",
            "/api/v1/nodes",
            Some(request("n1", "http://127.0.0.1:1/")),
        )
        .await;
    let url = agent("n1", made["secret"].as_str().unwrap()).await;
    f.admin("PATCH", "/api/v1/nodes/n1", Some(json!({"agent_url": url})))
        .await;
    let (status, body) = f
        .admin("POST", "/api/v1/nodes/n1/rotate-secret", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, test) = f.admin("POST", "/api/v1/nodes/n1/test", None).await;
    assert_eq!(test["ok"], true, "{test}");
    let (_, node) = f.admin("GET", "/api/v1/nodes/n1", None).await;
    assert!(node.get("secret").is_none(), "{node}");

    // An agent that cannot be reached: 502, and the secret stays as it was.
    f.admin(
        "POST",
        "/api/v1/nodes",
        Some(request("dead", &closed_port())),
    )
    .await;
    let before = f.state.store.read(|r| r.node("dead")).unwrap().unwrap();
    let (status, body) = f
        .admin("POST", "/api/v1/nodes/dead/rotate-secret", None)
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the secret is unchanged"),
        "{body}"
    );
    let after = f.state.store.read(|r| r.node("dead")).unwrap().unwrap();
    assert_eq!(before.secret, after.secret);
    let (status, _) = f
        .admin("POST", "/api/v1/nodes/nope/rotate-secret", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
