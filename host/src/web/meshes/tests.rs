//! The meshes API through the whole router: every validation error is a 4xx that names what
//! was wrong and changes nothing; members take overlay addresses (all or none); a mesh is
//! shown with where each member stands; deleting it keeps the members' overlay addresses;
//! and every route states its access. Applying to real agents needs TUN devices and runs in
//! network namespaces (tests/e2e/meshes.rs); here agents are unreachable or only asked.

use crate::controller::meshes;
use crate::web::api_fixture::*;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// Registers `name` with its agent at `url`.
async fn node(f: &Fixture, name: &str, url: &str) -> Value {
    let (status, body) = f
        .admin("POST", "/api/v1/nodes", Some(request(name, url)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["node"].clone()
}

async fn set_overlay(f: &Fixture) {
    let (status, _) = f
        .admin("PUT", "/api/v1/overlay", Some(json!({"pool": "overlay"})))
        .await;
    assert_eq!(status, StatusCode::OK);
}

fn mesh(name: &str, members: &[(&str, &[&str])]) -> Value {
    json!({
        "name": name,
        "members": members
            .iter()
            .map(|(n, lans)| json!({"node": n, "lan_subnets": lans}))
            .collect::<Vec<_>>(),
    })
}

/// Everything a refused request could have changed.
async fn snapshot(f: &Fixture) -> (Value, Value, Value) {
    let (_, meshes) = f.admin("GET", "/api/v1/meshes", None).await;
    let (_, pool) = f.admin("GET", "/api/v1/pools/overlay", None).await;
    let (_, nodes) = f.admin("GET", "/api/v1/nodes", None).await;
    let nodes = json!(
        nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| json!([n["name"], n["overlay_address"]]))
            .collect::<Vec<_>>()
    );
    (meshes, pool, nodes)
}

async fn three_nodes(f: &Fixture) {
    for n in ["a", "b", "c"] {
        node(f, n, &closed_port()).await;
    }
}

#[tokio::test]
async fn every_route_needs_a_token_and_writes_need_a_write_token() {
    let f = Fixture::new().await;
    set_overlay(&f).await;
    three_nodes(&f).await;
    let (status, _) = f
        .admin("POST", "/api/v1/meshes", Some(mesh("m1", &[("a", &[])])))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let routes = [
        ("GET", "/api/v1/meshes"),
        ("POST", "/api/v1/meshes"),
        ("GET", "/api/v1/meshes/m1"),
        ("PUT", "/api/v1/meshes/m1"),
        ("POST", "/api/v1/meshes/m1/apply"),
        ("DELETE", "/api/v1/meshes/m1"),
    ];
    assert_access(&f, &routes, |method, _| match method {
        "POST" | "PUT" => Some(mesh("m2", &[("b", &[])])),
        _ => None,
    })
    .await;
    let (_, list) = f.admin("GET", "/api/v1/meshes", None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "no viewer write landed"
    );
}

#[tokio::test]
async fn without_an_overlay_pool_a_mesh_is_refused_with_what_to_do() {
    let f = Fixture::new().await;
    three_nodes(&f).await;
    let before = snapshot(&f).await;
    let (status, body) = f
        .admin(
            "POST",
            "/api/v1/meshes",
            Some(mesh("m", &[("a", &[]), ("b", &[])])),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "no_overlay_pool");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("create a pool and make it the overlay"),
        "{body}"
    );
    assert_eq!(snapshot(&f).await, before);
}

#[tokio::test]
async fn members_registered_before_the_overlay_pool_take_their_address_at_creation() {
    let f = Fixture::new().await;
    three_nodes(&f).await;
    set_overlay(&f).await;
    let (status, body) = f
        .admin(
            "POST",
            "/api/v1/meshes",
            Some(mesh("office", &[("a", &["192.168.10.0/24"]), ("b", &[])])),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["overlay"], "100.64.0.0/24");
    assert_eq!(body["topology"], "full-mesh");
    assert_eq!(body["generation"], 1);
    assert_eq!(body["applied"], false);
    assert_eq!(body["keepalive"], 25);
    let id = body["id"].as_str().unwrap();
    assert_eq!(id.len(), 16);
    assert_eq!(body["interface"], format!("wg-{}", &id[..8]));
    let a = body["members"][0]["overlay_address"].as_str().unwrap();
    let b = body["members"][1]["overlay_address"].as_str().unwrap();
    assert!(a.starts_with("100.64.0.") && b.starts_with("100.64.0.") && a != b);
    assert_eq!(
        body["members"][0]["lan_subnets"],
        json!(["192.168.10.0/24"])
    );
    let (_, c) = f.admin("GET", "/api/v1/nodes/c", None).await;
    assert!(
        c["overlay_address"].is_null(),
        "a node outside the mesh takes nothing"
    );

    // A second mesh over the same node: the same overlay address.
    let mut second = mesh("lab", &[("a", &[]), ("c", &[])]);
    second["listen_port"] = json!(51830);
    second["overlay"] = json!("100.64.0.0/24");
    let (status, body) = f.admin("POST", "/api/v1/meshes", Some(second)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["members"][0]["overlay_address"], a);
}

#[tokio::test]
async fn if_the_overlay_pool_runs_out_nothing_is_allocated() {
    let f = Fixture::new().await;
    // A /30 has two addresses to give, for three members.
    let (status, _) = f
        .admin(
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "tiny", "cidr": "100.65.0.0/30"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    three_nodes(&f).await;
    let (status, _) = f
        .admin("PUT", "/api/v1/overlay", Some(json!({"pool": "tiny"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, pool_before) = f.admin("GET", "/api/v1/pools/tiny", None).await;
    let before = snapshot(&f).await;
    let (status, body) = f
        .admin(
            "POST",
            "/api/v1/meshes",
            Some(mesh("m", &[("a", &[]), ("b", &[]), ("c", &[])])),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "exhausted");
    assert_eq!(snapshot(&f).await, before);
    let (_, pool_after) = f.admin("GET", "/api/v1/pools/tiny", None).await;
    assert_eq!(
        pool_after, pool_before,
        "the first member's address was given back"
    );
}

#[tokio::test]
async fn every_validation_error_names_what_was_wrong_and_changes_nothing() {
    let f = Fixture::new().await;
    set_overlay(&f).await;
    three_nodes(&f).await;
    let mut taken = mesh("taken", &[("c", &[])]);
    taken["listen_port"] = json!(51900);
    assert_eq!(
        f.admin("POST", "/api/v1/meshes", Some(taken)).await.0,
        StatusCode::CREATED
    );
    let with = |patch: Value| {
        let mut m = mesh(
            "m",
            &[("a", &["192.168.1.0/24"]), ("b", &["192.168.2.0/24"])],
        );
        for (k, v) in patch.as_object().unwrap() {
            m[k] = v.clone();
        }
        m
    };
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            with(json!({"overlay": "10.0.0.0/24"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "overlay: a mesh's overlay subnet is the overlay pool's 100.64.0.0/24, not 10.0.0.0/24",
        ),
        (
            mesh(
                "m",
                &[("a", &["192.168.0.0/16"]), ("b", &["192.168.2.0/24"])],
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lan_subnets: 192.168.0.0/16 of node \"a\" overlaps 192.168.2.0/24 of node \"b\"",
        ),
        (
            mesh("m", &[("a", &["100.64.0.0/25"])]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lan_subnets: 100.64.0.0/25 of node \"a\" overlaps the overlay pool 100.64.0.0/24",
        ),
        (
            mesh("m", &[("a", &["192.168.1.7/24"])]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "did you mean 192.168.1.0/24?",
        ),
        (
            mesh("m", &[("a", &["not-a-subnet"])]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lan_subnets: \"not-a-subnet\" of node \"a\" is not a subnet",
        ),
        (
            mesh("m", &[("a", &[]), ("ghost", &[])]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "members: there is no node named \"ghost\"",
        ),
        (
            mesh("m", &[("a", &[]), ("a", &[])]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "members: node \"a\" is listed twice",
        ),
        (
            mesh("m", &[]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "members: give at least one node",
        ),
        (
            with(json!({"topology": "hub-and-spoke"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "hubs: a hub-and-spoke mesh needs at least one hub",
        ),
        (
            with(json!({"topology": "hub-and-spoke", "hubs": ["c"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "hubs: \"c\" is not a member of the mesh",
        ),
        (
            with(json!({"hubs": ["a"]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "hubs: only a hub-and-spoke mesh has hubs",
        ),
        (
            with(json!({"topology": "ring"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown variant `ring`",
        ),
        (
            with(json!({"mtu": 9000})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "mtu: 9000 is outside 1280..=1420",
        ),
        (
            with(json!({"keepalive": 7200})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "keepalive: at most 3600 seconds",
        ),
        (
            with(json!({"listen_port": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "listen_port: give a port from 1 to 65535",
        ),
        (
            with(json!({"listen_port": 51820})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "listen_port: 51820 is node \"a\"'s peer port",
        ),
        (
            mesh("m", &[("c", &[])])
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("listen_port".into(), json!(51900));
                    Value::Object(o)
                })
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "listen_port: node \"c\" already uses 51900 for mesh \"taken\"",
        ),
        (
            with(json!({"name": "taken"})),
            StatusCode::CONFLICT,
            "mesh name \"taken\" is already taken",
        ),
        (
            with(json!({"name": "no spaces"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name: \"no spaces\" must be",
        ),
        (
            with(json!({"colour": "blue"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `colour`",
        ),
    ];
    for (body, status, says) in cases {
        let before = snapshot(&f).await;
        let (got, answer) = f.admin("POST", "/api/v1/meshes", Some(body.clone())).await;
        assert_eq!(got, status, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{body}: {message:?} should say {says:?}"
        );
        assert_eq!(snapshot(&f).await, before, "{body} changed the store");
        // The same errors for a replacement (replacing "taken" with itself is no clash).
        if says.contains("already taken") || says.contains("already uses") {
            continue;
        }
        let (got, _) = f
            .admin("PUT", "/api/v1/meshes/taken", Some(body.clone()))
            .await;
        assert_eq!(got, status, "PUT {body}");
        assert_eq!(snapshot(&f).await, before, "PUT {body} changed the store");
    }
    let (status, _) = f.admin("GET", "/api/v1/meshes/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_change_bumps_the_generation_and_a_node_in_a_mesh_cannot_be_deleted() {
    let f = Fixture::new().await;
    set_overlay(&f).await;
    three_nodes(&f).await;
    let (_, created) = f
        .admin(
            "POST",
            "/api/v1/meshes",
            Some(mesh("m", &[("a", &[]), ("b", &[])])),
        )
        .await;
    let (status, body) = f
        .admin(
            "PUT",
            "/api/v1/meshes/m",
            Some(mesh("m", &[("a", &["10.20.0.0/16"]), ("c", &[])])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], created["id"], "the id stays");
    assert_eq!(body["generation"], 2);
    assert_eq!(body["members"][1]["node"], "c");
    let (status, body) = f.admin("DELETE", "/api/v1/nodes/a", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "node_in_mesh");
    // b left the mesh: it may go.
    let (status, _) = f.admin("DELETE", "/api/v1/nodes/b", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn an_applied_mesh_shows_unreachable_members_as_missing_with_why() {
    let f = Fixture::new().await;
    set_overlay(&f).await;
    three_nodes(&f).await;
    f.admin(
        "POST",
        "/api/v1/meshes",
        Some(mesh("m", &[("a", &[]), ("b", &[])])),
    )
    .await;
    let (status, body) = f.admin("POST", "/api/v1/meshes/m/apply", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["applied"], true);
    for m in body["members"].as_array().unwrap() {
        assert_eq!(m["drift"], "missing", "{m}");
        assert!(m["applied_generation"].is_null());
        let error = m["error"].as_str().unwrap();
        assert!(error.contains("agent unreachable"), "{error}");
    }
    // Deleting it: the members could not be told, so they are pending; addresses stay.
    let (status, body) = f.admin("DELETE", "/api/v1/meshes/m", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["torn_down"], json!([]));
    assert_eq!(body["pending"].as_array().unwrap().len(), 2);
    let (_, a) = f.admin("GET", "/api/v1/nodes/a", None).await;
    assert!(
        a["overlay_address"].is_string(),
        "the overlay address stays with its node"
    );
    let (status, _) = f.admin("GET", "/api/v1/meshes/m", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_round_learns_each_nodes_mesh_key_from_its_agent() {
    let f = Fixture::new().await;
    set_overlay(&f).await;
    let registered = f
        .admin(
            "POST",
            "/api/v1/nodes",
            Some(request("a", "http://127.0.0.1:1/")),
        )
        .await
        .1;
    let secret = registered["secret"].as_str().unwrap();
    let url = agent("a", secret).await;
    f.admin("PATCH", "/api/v1/nodes/a", Some(json!({"agent_url": url})))
        .await;
    // A mesh that is not applied is never pushed: asking is all a round does here.
    f.admin("POST", "/api/v1/meshes", Some(mesh("m", &[("a", &[])])))
        .await;
    let report = meshes::round(f.registry(), &f.state.mesh_seen, None)
        .await
        .unwrap();
    assert_eq!(report.nodes, 1);
    assert_eq!((report.pushed, report.deleted, report.failed), (0, 0, 0));
    let key = f
        .state
        .store
        .read(|r| r.node("a"))
        .unwrap()
        .unwrap()
        .mesh_key;
    assert!(key.is_some(), "the agent's mesh key was recorded");
    let (_, body) = f.admin("GET", "/api/v1/meshes/m", None).await;
    assert!(
        body["members"][0]["drift"].is_null(),
        "not applied: no drift shown"
    );
}
