//! The API as a user meets it: every IPAM workflow over HTTP against a real `weft serve`,
//! every error case (with its status, code and message) leaving the store unchanged, the
//! access rule of every route, the token CLI, the OpenAPI document, metrics and shutdown.

use crate::support::{self, Server, assert_error, assert_error_code, csv_rows};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A JSON request with the admin token.
fn jreq(s: &Server, method: Method, path: &str, body: Value) -> RequestBuilder {
    s.request(Some(s.token.as_str()), method, path).json(&body)
}

/// A request with the admin token and a raw body of the given content type.
fn rawreq(
    s: &Server,
    method: Method,
    path: &str,
    content_type: &str,
    body: &str,
) -> RequestBuilder {
    s.request(Some(s.token.as_str()), method, path)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body.to_string())
}

/// Sends a request that must fail with `want` (error shape, message mentioning `needle`) and
/// checks that the pool's records and every pool's stats are exactly as before.
async fn refused(
    s: &Server,
    pool: &str,
    req: RequestBuilder,
    want: StatusCode,
    needle: &str,
) -> Value {
    let before = s.snapshot(pool).await;
    let (status, body) = s.send(req).await;
    assert_error(status, &body, want, needle);
    assert_eq!(
        s.snapshot(pool).await,
        before,
        "a refused request changed the store: {body}"
    );
    body
}

fn addresses(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {page}"))
        .iter()
        .map(|r| r["address"].as_str().expect("address").to_string())
        .collect()
}

/// The addresses a listing query returns (one page, which must be the last).
async fn listed(s: &Server, query: &str) -> Vec<String> {
    let (status, page) = s.get(&format!("/api/v1/addresses?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    assert!(
        page["next_cursor"].is_null(),
        "{query}: expected one page, got {page}"
    );
    addresses(&page)
}

/// Every page of a listing query, following `next_cursor`.
async fn all_pages(s: &Server, query: &str, limit: usize) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = format!("/api/v1/addresses?{query}&limit={limit}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = s.get(&q).await;
        assert_eq!(status, StatusCode::OK, "{q}: {page}");
        let items = addresses(&page);
        assert!(
            items.len() <= limit,
            "{q}: {} items for limit {limit}",
            items.len()
        );
        out.extend(items);
        pages += 1;
        assert!(pages < 1000, "pagination does not end");
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (out, pages),
        }
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The value of one series (`name{labels}`) in a Prometheus text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn history(s: &Server, ip: &str) -> Vec<Value> {
    let (status, body) = s.get(&format!("/api/v1/addresses/{ip}/history")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {body}"))
        .clone()
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn patch(s: &Server, ip: &str, body: Value) -> (StatusCode, Value) {
    s.call(
        Method::PATCH,
        &format!("/api/v1/addresses/{ip}"),
        Some(body),
    )
    .await
}

async fn put_device(s: &Server, id: &str, body: Value) -> (StatusCode, Value) {
    s.call(Method::PUT, &format!("/api/v1/devices/{id}"), Some(body))
        .await
}

async fn release(s: &Server, ip: &str) -> (StatusCode, Value) {
    s.call(
        Method::DELETE,
        &format!("/api/v1/addresses/{ip}/allocation"),
        None,
    )
    .await
}

async fn address(s: &Server, ip: &str) -> Value {
    let (status, body) = s.get(&format!("/api/v1/addresses/{ip}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn create_pool(s: &Server, spec: Value) -> Value {
    let (status, body) = s.post("/api/v1/pools", spec).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn import(s: &Server, pool: &str, csv: &str) -> (StatusCode, Value) {
    s.send_raw(
        Method::POST,
        &format!("/api/v1/pools/{pool}/import"),
        "text/csv",
        csv,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// The route table: every route the API has, with a request that succeeds on the fixture
// `route_fixture` builds (in this order).

enum Body {
    None,
    Json(Value),
    Csv(&'static str),
}

struct Route {
    method: Method,
    /// The path as the OpenAPI document writes it.
    template: &'static str,
    /// A concrete path for the fixture.
    path: &'static str,
    body: Body,
    /// What the admin token gets.
    ok: StatusCode,
}

/// The one anonymous API route: enrolment with a join token.
const ENROL: &str = "/api/v1/enroll";

fn routes() -> Vec<Route> {
    use Method as M;
    use StatusCode as S;
    let r = |method, template, path, body, ok| Route {
        method,
        template,
        path,
        body,
        ok,
    };
    vec![
        r(
            M::GET,
            "/api/v1/plugins",
            "/api/v1/plugins",
            Body::None,
            S::OK,
        ),
        r(
            M::POST,
            "/api/v1/plugins/reload",
            "/api/v1/plugins/reload",
            Body::None,
            S::OK,
        ),
        r(
            M::POST,
            "/api/v1/plugins/{name}/run",
            "/api/v1/plugins/least-loaded/run",
            Body::Json(json!({
                "request": {"peer_name": "p1"},
                "candidates": [{"name": "a", "max_peers": 4}, {"name": "b", "max_peers": 4}]
            })),
            S::OK,
        ),
        r(
            M::GET,
            "/api/v1/plugins/{name}/runs",
            "/api/v1/plugins/least-loaded/runs",
            Body::None,
            S::OK,
        ),
        r(M::GET, "/api/v1/pools", "/api/v1/pools", Body::None, S::OK),
        r(
            M::POST,
            "/api/v1/pools",
            "/api/v1/pools",
            Body::Json(json!({"name": "other", "cidr": "10.9.0.0/24"})),
            S::CREATED,
        ),
        r(
            M::GET,
            "/api/v1/pools/{pool}",
            "/api/v1/pools/lan",
            Body::None,
            S::OK,
        ),
        r(
            M::POST,
            "/api/v1/pools/{pool}/allocations",
            "/api/v1/pools/lan/allocations",
            Body::Json(json!({"owner": "route-table"})),
            S::CREATED,
        ),
        r(
            M::GET,
            "/api/v1/pools/{pool}/export.csv",
            "/api/v1/pools/lan/export.csv",
            Body::None,
            S::OK,
        ),
        r(
            M::POST,
            "/api/v1/pools/{pool}/import",
            "/api/v1/pools/lan/import",
            Body::Csv("address,status,description\n10.0.0.77,reserved,printer\n"),
            S::OK,
        ),
        r(
            M::GET,
            "/api/v1/addresses",
            "/api/v1/addresses",
            Body::None,
            S::OK,
        ),
        r(
            M::GET,
            "/api/v1/addresses/{ip}",
            "/api/v1/addresses/10.0.0.2",
            Body::None,
            S::OK,
        ),
        r(
            M::PATCH,
            "/api/v1/addresses/{ip}",
            "/api/v1/addresses/10.0.0.99",
            Body::Json(json!({"status": "quarantine"})),
            S::OK,
        ),
        r(
            M::DELETE,
            "/api/v1/addresses/{ip}/allocation",
            "/api/v1/addresses/10.0.0.2/allocation",
            Body::None,
            S::OK,
        ),
        r(
            M::GET,
            "/api/v1/addresses/{ip}/history",
            "/api/v1/addresses/10.0.0.2/history",
            Body::None,
            S::OK,
        ),
        r(
            M::PUT,
            "/api/v1/devices/{id}",
            "/api/v1/devices/d2",
            Body::Json(json!({"ip": "10.0.0.60", "hostname": "db-1"})),
            S::OK,
        ),
        r(
            M::DELETE,
            "/api/v1/devices/{id}",
            "/api/v1/devices/d1",
            Body::None,
            S::NO_CONTENT,
        ),
        r(
            M::DELETE,
            "/api/v1/pools/{pool}",
            "/api/v1/pools/other",
            Body::None,
            S::NO_CONTENT,
        ),
        r(
            M::GET,
            "/api/v1/overlay",
            "/api/v1/overlay",
            Body::None,
            S::OK,
        ),
        r(
            M::PUT,
            "/api/v1/overlay",
            "/api/v1/overlay",
            Body::Json(json!({"pool": "lan"})),
            S::OK,
        ),
        r(M::GET, "/api/v1/nodes", "/api/v1/nodes", Body::None, S::OK),
        // An agent URL where nothing answers: the test call says so, and the node is
        // deleted again before the peers below.
        r(
            M::POST,
            "/api/v1/nodes",
            "/api/v1/nodes",
            Body::Json(json!({"name": "n1", "agent_url": "http://127.0.0.1:9/",
                "endpoint_host": "n1.example.net", "peer_pool": "lan"})),
            S::CREATED,
        ),
        r(
            M::GET,
            "/api/v1/nodes/{name}",
            "/api/v1/nodes/n1",
            Body::None,
            S::OK,
        ),
        r(
            M::PATCH,
            "/api/v1/nodes/{name}",
            "/api/v1/nodes/n1",
            Body::Json(json!({"weight": 2})),
            S::OK,
        ),
        r(
            M::POST,
            "/api/v1/nodes/{name}/test",
            "/api/v1/nodes/n1/test",
            Body::None,
            S::OK,
        ),
        r(
            M::GET,
            "/api/v1/nodes/{name}/history",
            "/api/v1/nodes/n1/history",
            Body::None,
            S::OK,
        ),
        // n1's agent never answers: the rotation is refused and the secret stays.
        r(
            M::POST,
            "/api/v1/nodes/{name}/rotate-secret",
            "/api/v1/nodes/n1/rotate-secret",
            Body::None,
            S::BAD_GATEWAY,
        ),
        // A mesh of n1 alone, whose agent never answers: applied, it shows n1 as missing.
        r(
            M::GET,
            "/api/v1/meshes",
            "/api/v1/meshes",
            Body::None,
            S::OK,
        ),
        r(
            M::POST,
            "/api/v1/meshes",
            "/api/v1/meshes",
            Body::Json(json!({"name": "m1", "members": [{"node": "n1"}]})),
            S::CREATED,
        ),
        r(
            M::GET,
            "/api/v1/meshes/{mesh}",
            "/api/v1/meshes/m1",
            Body::None,
            S::OK,
        ),
        r(
            M::PUT,
            "/api/v1/meshes/{mesh}",
            "/api/v1/meshes/m1",
            Body::Json(json!({"name": "m1", "members": [
                {"node": "n1", "lan_subnets": ["192.168.50.0/24"]}]})),
            S::OK,
        ),
        r(
            M::POST,
            "/api/v1/meshes/{mesh}/apply",
            "/api/v1/meshes/m1/apply",
            Body::None,
            S::OK,
        ),
        r(
            M::DELETE,
            "/api/v1/meshes/{mesh}",
            "/api/v1/meshes/m1",
            Body::None,
            S::OK,
        ),
        r(
            M::DELETE,
            "/api/v1/nodes/{name}",
            "/api/v1/nodes/n1",
            Body::None,
            S::NO_CONTENT,
        ),
        // No node is registered here: creating a peer is refused, and there is none to see.
        // The peers API with nodes and agents is tested in the router's own tests.
        r(M::GET, "/api/v1/peers", "/api/v1/peers", Body::None, S::OK),
        r(
            M::POST,
            "/api/v1/peers",
            "/api/v1/peers",
            Body::Json(json!({"name": "p1", "node": "auto"})),
            S::CONFLICT,
        ),
        r(
            M::GET,
            "/api/v1/peers/{name}",
            "/api/v1/peers/p1",
            Body::None,
            S::NOT_FOUND,
        ),
        r(
            M::DELETE,
            "/api/v1/peers/{name}",
            "/api/v1/peers/p1",
            Body::None,
            S::NOT_FOUND,
        ),
    ]
}

/// Pool `lan` (10.0.0.0/24) with 10.0.0.2 allocated and device `d1` on 10.0.0.50; the
/// `least-loaded` plugin installed.
async fn route_fixture(s: &Server) {
    s.install_plugin(
        "least-loaded",
        "least_loaded",
        "name = \"least-loaded\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\n",
    );
    s.reload_plugins().await;
    s.pool("lan", "10.0.0.0/24").await;
    assert_eq!(s.allocate("lan").await, "10.0.0.2");
    let (status, body) = put_device(s, "d1", json!({"ip": "10.0.0.50"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn route_request(s: &Server, token: Option<&str>, r: &Route) -> RequestBuilder {
    let req = s.request(token, r.method.clone(), r.path);
    match &r.body {
        Body::None => req,
        Body::Json(v) => req.json(v),
        Body::Csv(text) => req
            .header(reqwest::header::CONTENT_TYPE, "text/csv")
            .body(text.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Health, metrics, OpenAPI

#[tokio::test]
async fn health_metrics_and_openapi_answer_without_a_token() {
    let s = Server::start().await;
    for path in ["/healthz", "/metrics", "/api/v1/openapi.json"] {
        let r = s.client.get(s.url(path)).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let (_, doc) = s
        .send(s.request(None, Method::GET, "/api/v1/openapi.json"))
        .await;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let r = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    let ctype = r.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(ctype.starts_with("text/plain"), "{ctype}");
}

#[tokio::test]
async fn metrics_expose_pool_allocation_and_http_series() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/29").await;
    s.allocate("lan").await;
    let text = s.metrics().await;
    for name in [
        "weft_pool_size",
        "weft_pool_utilization",
        "weft_allocations_total",
        "weft_http_requests_total",
        "weft_http_request_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert_eq!(
        metric(&text, r#"weft_pool_size{pool="lan"}"#),
        Some(6.0),
        "{text}"
    );
    let util = metric(&text, r#"weft_pool_utilization{pool="lan"}"#).expect("utilization");
    assert!((util - 2.0 / 6.0).abs() < 1e-9, "{util}");
    assert_eq!(metric(&text, "weft_allocations_total"), Some(1.0), "{text}");
    let series = r#"weft_http_requests_total{route="/api/v1/pools/{pool}/allocations",method="POST",status="201"}"#;
    assert_eq!(metric(&text, series), Some(1.0), "{text}");
    assert!(
        text.contains(
            r#"weft_http_request_duration_seconds_count{route="/api/v1/pools/{pool}/allocations"}"#
        ),
        "{text}"
    );
    // Raw addresses never become label values.
    s.get("/api/v1/addresses/10.0.0.2").await;
    assert!(!s.metrics().await.contains("10.0.0.2"));
}

/// The pool gauges say what the pool's stats say after every kind of change, not only after
/// creation and allocation.
#[tokio::test]
async fn pool_metrics_follow_releases_edits_device_syncs_and_imports() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/29").await;
    let ip = s.allocate("lan").await;
    let check = |step: &'static str| {
        let s = &s;
        async move {
            let stats = s.stats("lan").await;
            let text = s.metrics().await;
            let util = metric(&text, r#"weft_pool_utilization{pool="lan"}"#).expect("utilization");
            let want = stats["utilization"].as_f64().expect("utilization");
            assert!(
                (util - want).abs() < 1e-9,
                "after {step}: weft_pool_utilization is {util}, the pool's stats say {want}"
            );
            let allocated = metric(
                &text,
                r#"weft_pool_addresses{pool="lan",status="allocated"}"#,
            );
            assert_eq!(allocated, stats["allocated"].as_f64(), "after {step}");
        }
    };
    check("allocate").await;
    assert_eq!(release(&s, &ip).await.0, StatusCode::OK);
    check("release").await;
    assert_eq!(
        patch(&s, "10.0.0.3", json!({"status": "reserved"})).await.0,
        StatusCode::OK
    );
    check("PATCH to reserved").await;
    assert_eq!(
        put_device(&s, "d1", json!({"ip": "10.0.0.4"})).await.0,
        StatusCode::OK
    );
    check("device sync").await;
    assert_eq!(
        import(&s, "lan", "address,status\n10.0.0.5,quarantine\n")
            .await
            .0,
        StatusCode::OK
    );
    check("import").await;
}

#[tokio::test]
async fn openapi_documents_exactly_the_routes_the_server_answers() {
    let s = Server::start().await;
    let (status, doc) = s
        .send(s.request(None, Method::GET, "/api/v1/openapi.json"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let http_methods = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().expect("operations") {
            if !http_methods.contains(&method.as_str()) {
                continue;
            }
            documented.insert((method.to_uppercase(), path.clone()));
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} does not document 401"
            );
            if path == ENROL {
                // Anonymous: the join token in the body is the credential (tests/e2e/tls.rs).
                assert!(op.get("security").is_none(), "{method} {path}");
                continue;
            }
            // Every other documented API route asks for the bearer token.
            assert_eq!(op["security"], json!([{"token": []}]), "{method} {path}");
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"]
            .as_str()
            .map(str::to_lowercase),
        Some("bearer".to_string())
    );
    let mut known: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), r.template.to_string()))
        .collect();
    known.insert(("POST".into(), ENROL.into()));
    assert_eq!(
        documented, known,
        "the OpenAPI paths differ from the routes the server has"
    );

    // Every documented operation is answered (not a missing route, not a wrong method) ...
    route_fixture(&s).await;
    for r in routes() {
        let (status, body) = s.send(route_request(&s, Some(&s.token), &r)).await;
        let missing = status == StatusCode::NOT_FOUND
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no route"));
        assert!(
            !missing && status != StatusCode::METHOD_NOT_ALLOWED,
            "{} {} is documented but answers {status} {body}",
            r.method,
            r.path
        );
        assert_eq!(status, r.ok, "{} {}: {body}", r.method, r.path);
    }
    // ... and no undocumented method is answered on a documented path.
    let all = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for path in paths.keys() {
        let concrete = path
            .replace("{pool}", "lan")
            .replace("{ip}", "10.0.0.3")
            .replace("{id}", "d9");
        for m in &all {
            if documented.contains(&(m.to_string(), path.clone())) {
                continue;
            }
            let r = s
                .request(Some(&s.token), m.clone(), &concrete)
                .send()
                .await
                .expect("request");
            assert_eq!(
                r.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{m} {concrete} is not documented"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Access rules

#[tokio::test]
async fn every_api_route_enforces_its_access_rule() {
    let s = Server::start().await;
    route_fixture(&s).await;
    let viewer = support::create_token(&s.data_dir(), "viewer", true);
    for r in routes() {
        let what = format!("{} {}", r.method, r.path);
        let before = s.snapshot("lan").await;

        // No token, an unknown token, a known secret under the wrong scheme: 401.
        let (status, body) = s.send(route_request(&s, None, &r)).await;
        assert_error_code(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        let unknown = "weft_0000000000000000000000000000000000000000000000000000000000000000";
        let (status, body) = s.send(route_request(&s, Some(unknown), &r)).await;
        assert_error_code(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        let basic =
            route_request(&s, None, &r).header("Authorization", format!("Basic {}", s.token));
        let (status, body) = s.send(basic).await;
        assert_error_code(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            s.snapshot("lan").await,
            before,
            "{what} without a valid token changed the store"
        );

        // A read-only token reads, and is refused every write with nothing changed.
        let (viewer_status, viewer_body) = s.send(route_request(&s, Some(&viewer), &r)).await;
        if r.method == Method::GET {
            assert_eq!(
                viewer_status, r.ok,
                "{what} with a read-only token: {viewer_body}"
            );
        } else {
            assert_error_code(
                viewer_status,
                &viewer_body,
                StatusCode::FORBIDDEN,
                "forbidden",
            );
            assert!(
                viewer_body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("viewer")
            );
            assert_eq!(
                s.snapshot("lan").await,
                before,
                "{what} with a read-only token changed the store"
            );
        }

        // The admin token works.
        let (status, body) = s.send(route_request(&s, Some(&s.token), &r)).await;
        assert_eq!(status, r.ok, "{what} with the admin token: {body}");
        if r.method == Method::GET {
            assert_eq!(
                viewer_body, body,
                "{what}: the read-only token saw something else"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[tokio::test]
async fn token_cli_lists_names_revokes_and_stores_only_hashes() {
    use sha2::Digest;
    let s = Server::start().await;
    let dir = s.data_dir();
    let dir_arg = dir.to_str().expect("utf-8 path");
    let viewer = support::create_token(&dir, "viewer", true);
    let robot = support::create_token(&dir, "robot", false);
    let secrets = [s.token.clone(), viewer.clone(), robot.clone()];

    let list = support::weft(&["token", "list", "--data-dir", dir_arg]);
    for name in ["admin", "viewer", "robot"] {
        assert!(list.contains(name), "{name} missing from:\n{list}");
    }
    let viewer_line = list
        .lines()
        .find(|l| l.starts_with("viewer"))
        .expect("viewer line");
    assert!(viewer_line.contains("read-only"), "{viewer_line}");
    for secret in &secrets {
        assert!(secret.starts_with("weft_") && secret.len() > 40, "{secret}");
        let hex = secret.trim_start_matches("weft_");
        assert!(!list.contains(hex), "token list shows a secret:\n{list}");
    }

    // Every token works while the server runs (it was created through the admin socket).
    assert_eq!(
        s.call_as(&viewer, Method::GET, "/api/v1/pools", None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = s
        .call_as(
            &robot,
            Method::POST,
            "/api/v1/pools",
            Some(json!({"name": "lan", "cidr": "10.0.0.0/24"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Stored hashed: the database file (and its journal) holds each token's SHA-256, never its
    // secret.
    let mut bytes = std::fs::read(dir.join("weft.redb")).expect("database file");
    bytes.extend(std::fs::read(dir.join("weft.journal")).expect("journal file"));
    let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for secret in &secrets {
        let hex = secret.trim_start_matches("weft_");
        assert!(
            !holds(secret.as_bytes()),
            "the database file holds a token secret"
        );
        assert!(
            !holds(hex.as_bytes()),
            "the database file holds a token secret's hex"
        );
        let digest = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
        assert!(
            holds(digest.as_bytes()),
            "the database file does not hold the token's hash"
        );
    }

    // A revoked token gets 401 at once; the others keep working.
    support::weft(&["token", "revoke", "viewer", "--data-dir", dir_arg]);
    let (status, body) = s.call_as(&viewer, Method::GET, "/api/v1/pools", None).await;
    assert_error_code(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        s.call_as(&robot, Method::GET, "/api/v1/pools", None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(s.get("/api/v1/pools").await.0, StatusCode::OK);
    let list = support::weft(&["token", "list", "--data-dir", dir_arg]);
    assert!(!list.lines().any(|l| l.starts_with("viewer")), "{list}");

    // Revoking an unknown token and reusing a name fail, saying why.
    let out = std::process::Command::new(support::WEFT)
        .args(["token", "revoke", "nobody", "--data-dir", dir_arg])
        .output()
        .expect("run weft");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
    let out = std::process::Command::new(support::WEFT)
        .args(["token", "create", "--name", "robot", "--data-dir", dir_arg])
        .output()
        .expect("run weft");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("robot"));
}

// ---------------------------------------------------------------------------------------------
// Pools

#[tokio::test]
async fn creating_a_pool_returns_201_with_its_id_and_stats() {
    let s = Server::start().await;
    let pool = create_pool(
        &s,
        json!({
            "name": "lan",
            "cidr": "10.0.0.0/24",
            "description": "office",
            "reserve_gateway": true,
            "static_ranges": ["10.0.0.10-10.0.0.50"],
        }),
    )
    .await;
    let id = pool["id"].as_u64().expect("id");
    assert_eq!(pool["name"], "lan");
    assert_eq!(pool["cidr"], "10.0.0.0/24");
    assert_eq!(pool["description"], "office");
    assert_eq!(pool["reserve_gateway"], true);
    assert_eq!(pool["static_ranges"], json!(["10.0.0.10-10.0.0.50"]));
    let stats = &pool["stats"];
    assert_eq!(stats["total"], 254);
    assert_eq!(stats["available"], 253);
    assert_eq!(stats["allocated"], 0);
    assert_eq!(stats["reserved"], 1, "the gateway is reserved");
    assert_eq!(stats["quarantine"], 0);
    assert!((stats["utilization"].as_f64().expect("utilization") - 1.0 / 254.0).abs() < 1e-9);

    // By id and by name, and in the list.
    assert_eq!(
        s.get(&format!("/api/v1/pools/{id}")).await,
        (StatusCode::OK, pool.clone())
    );
    assert_eq!(
        s.get("/api/v1/pools/lan").await,
        (StatusCode::OK, pool.clone())
    );
    let (status, list) = s.get("/api/v1/pools").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([pool]));

    // The gateway's record says so.
    let gw = address(&s, "10.0.0.1").await;
    assert_eq!(gw["status"], "reserved");
    assert_eq!(gw["description"], "gateway");

    // Without a reserved gateway every usable address is free, the first one included.
    let lab = create_pool(
        &s,
        json!({"name": "lab", "cidr": "10.0.1.0/29", "reserve_gateway": false}),
    )
    .await;
    assert_ne!(lab["id"], pool["id"]);
    assert_eq!(lab["stats"]["total"], 6);
    assert_eq!(lab["stats"]["available"], 6);
    assert_eq!(lab["stats"]["reserved"], 0);
    assert_eq!(s.allocate("lab").await, "10.0.1.1");
    let (_, list) = s.get("/api/v1/pools").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(s.get("/api/v1/pools/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pool_stats_count_every_status() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/29").await;
    assert_eq!(s.allocate("lan").await, "10.0.0.2");
    assert_eq!(
        patch(&s, "10.0.0.3", json!({"status": "reserved"})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&s, "10.0.0.4", json!({"status": "quarantine"}))
            .await
            .0,
        StatusCode::OK
    );
    let stats = s.stats("lan").await;
    assert_eq!(stats["total"], 6);
    assert_eq!(stats["allocated"], 1);
    assert_eq!(stats["reserved"], 2);
    assert_eq!(stats["quarantine"], 1);
    assert_eq!(stats["available"], 2);
    assert!((stats["utilization"].as_f64().expect("utilization") - 4.0 / 6.0).abs() < 1e-9);
    s.assert_stats_match_records("lan").await;
}

#[tokio::test]
async fn overlapping_pool_is_refused_naming_the_colliding_pool() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    s.pool("lab", "10.0.2.0/24").await;
    for (cidr, colliding) in [
        ("10.0.0.0/24", "lan"),
        ("10.0.0.0/23", "lan"),
        ("10.0.0.128/25", "lan"),
        ("10.0.0.7/32", "lan"),
        ("10.0.2.0/23", "lab"),
        ("10.0.2.64/26", "lab"),
        ("0.0.0.0/0", ""),
    ] {
        let req = jreq(
            &s,
            Method::POST,
            "/api/v1/pools",
            json!({"name": "new", "cidr": cidr}),
        );
        let body = refused(&s, "lan", req, StatusCode::CONFLICT, colliding).await;
        assert_eq!(body["error"]["code"], "pool_overlap", "{cidr}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("lan") || msg.contains("lab"), "{cidr}: {msg}");
    }
    // Neighbours and the other family do not collide.
    s.pool("v6", "fd00::/64").await;
    s.pool("mid", "10.0.1.0/24").await;
    // Pools are listed in address order, IPv4 first.
    let (_, list) = s.get("/api/v1/pools").await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["lan", "mid", "lab", "v6"]);
}

#[tokio::test]
async fn invalid_pool_definitions_are_refused_and_change_nothing() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let post = |body: Value| jreq(&s, Method::POST, "/api/v1/pools", body);
    use StatusCode as S;
    let cases: Vec<(RequestBuilder, StatusCode, &str, &str)> = vec![
        (
            post(json!({"name": "lan", "cidr": "10.5.0.0/24"})),
            S::CONFLICT,
            "name_taken",
            "lan",
        ),
        (
            post(json!({"name": "x", "cidr": "10.5.0.1/24"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.5.0.0/24",
        ),
        (
            post(json!({"name": "x", "cidr": "banana"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "",
        ),
        (
            post(json!({"name": "x", "cidr": "10.5.0.0/33"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "",
        ),
        (
            post(json!({"name": "x"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "cidr",
        ),
        (
            post(json!({"cidr": "10.5.0.0/24"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "name",
        ),
        (
            post(json!({"name": "", "cidr": "10.5.0.0/24"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "name",
        ),
        (
            post(json!({"name": "   ", "cidr": "10.5.0.0/24"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "name",
        ),
        (
            post(json!({"name": "123", "cidr": "10.5.0.0/24"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "digits",
        ),
        (
            post(json!({"name": "x".repeat(65), "cidr": "10.5.0.0/24"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "64",
        ),
        (
            post(json!({"name": "x", "cidr": "10.5.0.0/24", "description": "d".repeat(1001)})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "description",
        ),
        (
            post(
                json!({"name": "x", "cidr": "10.5.0.0/24", "static_ranges": ["10.5.0.10-10.5.1.5"]}),
            ),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.5.0.10-10.5.1.5",
        ),
        (
            post(
                json!({"name": "x", "cidr": "10.5.0.0/24", "static_ranges": ["10.5.0.50-10.5.0.10"]}),
            ),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.5.0.50-10.5.0.10",
        ),
        (
            post(json!({"name": "x", "cidr": "10.5.0.0/24", "static_ranges": ["10.5.0.10"]})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.5.0.10",
        ),
        (
            post(
                json!({"name": "x", "cidr": "10.5.0.0/24", "static_ranges": ["10.5.0.1-10.5.0.9", "10.5.0.5-10.5.0.20"]}),
            ),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "overlap",
        ),
        (
            post(json!({"name": "x", "cidr": "fd05::/64", "static_ranges": ["10.5.0.1-10.5.0.9"]})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.5.0.1-10.5.0.9",
        ),
        (
            post(json!({"name": "x", "cidr": "10.5.0.0/24", "colour": "blue"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "colour",
        ),
        (
            post(json!({"name": "x", "cidr": 42})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "",
        ),
        (post(json!(["x"])), S::UNPROCESSABLE_ENTITY, "invalid", ""),
        (
            rawreq(
                &s,
                Method::POST,
                "/api/v1/pools",
                "application/json",
                "{\"name\": \"x\",",
            ),
            S::BAD_REQUEST,
            "malformed",
            "",
        ),
        (
            rawreq(
                &s,
                Method::POST,
                "/api/v1/pools",
                "application/json",
                "not json",
            ),
            S::BAD_REQUEST,
            "malformed",
            "",
        ),
        (
            rawreq(&s, Method::POST, "/api/v1/pools", "application/json", ""),
            S::BAD_REQUEST,
            "malformed",
            "",
        ),
    ];
    for (req, status, code, needle) in cases {
        let body = refused(&s, "lan", req, status, needle).await;
        assert_eq!(body["error"]["code"], code, "{body}");
    }
}

#[tokio::test]
async fn deleting_a_pool_that_holds_allocations_needs_force() {
    let s = Server::start().await;
    let lan = s.pool("lan", "10.0.0.0/29").await;
    assert_eq!(s.allocate("lan").await, "10.0.0.2");

    let del = |path: &str| s.request(Some(&s.token), Method::DELETE, path);
    let body = refused(
        &s,
        "lan",
        del("/api/v1/pools/lan"),
        StatusCode::CONFLICT,
        "lan",
    )
    .await;
    assert_eq!(body["error"]["code"], "pool_in_use");
    let body = refused(
        &s,
        "lan",
        del("/api/v1/pools/lan?force=false"),
        StatusCode::CONFLICT,
        "force",
    )
    .await;
    assert_eq!(body["error"]["code"], "pool_in_use");
    let body = refused(
        &s,
        "lan",
        del("/api/v1/pools/lan?force=maybe"),
        StatusCode::BAD_REQUEST,
        "",
    )
    .await;
    assert_eq!(body["error"]["code"], "malformed");
    refused(
        &s,
        "lan",
        del("/api/v1/pools/nope?force=true"),
        StatusCode::NOT_FOUND,
        "nope",
    )
    .await;

    let (status, _) = s
        .send(del(&format!("/api/v1/pools/{}?force=true", lan["id"])))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.get("/api/v1/pools/lan").await;
    assert_error_code(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(s.get("/api/v1/pools").await.1["items"], json!([]));
    // Its addresses are gone with it; their history stays.
    let (status, body) = s.get("/api/v1/addresses/10.0.0.2").await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "10.0.0.2");
    assert_eq!(actions(&history(&s, "10.0.0.2").await), ["allocate"]);
    assert_eq!(s.get("/api/v1/addresses").await.1["items"], json!([]));

    // The CIDR and the name are free again: a new pool starts from scratch.
    let again = s.pool("lan", "10.0.0.0/29").await;
    assert_ne!(again["id"], lan["id"]);
    assert_eq!(again["stats"]["allocated"], 0);
    assert_eq!(s.allocate("lan").await, "10.0.0.2");

    // A pool that holds no allocation goes without force (by id).
    let spare = s.pool("spare", "10.0.1.0/29").await;
    assert_eq!(
        patch(&s, "10.0.1.3", json!({"status": "reserved"})).await.0,
        StatusCode::OK
    );
    let (status, body) = s.send(del(&format!("/api/v1/pools/{}", spare["id"]))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(s.get("/api/v1/pools/spare").await.0, StatusCode::NOT_FOUND);
    s.assert_stats_match_records("lan").await;
}

// ---------------------------------------------------------------------------------------------
// Allocation

#[tokio::test]
async fn allocations_come_in_address_order_skipping_network_and_gateway() {
    let s = Server::start().await;
    let pool = s.pool("lan", "10.0.0.0/29").await;
    let (status, rec) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"owner": "alice", "hostname": "web-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rec}");
    assert_eq!(rec["address"], "10.0.0.2");
    assert_eq!(rec["pool"], pool["id"]);
    assert_eq!(rec["status"], "allocated");
    assert_eq!(rec["type"], "static");
    assert_eq!(rec["owner"], "alice");
    assert_eq!(rec["hostname"], "web-1");
    assert_eq!(address(&s, "10.0.0.2").await, rec);
    // An empty body (no content type either) asks for the next free address.
    let (status, rec) = s
        .send(s.request(
            Some(&s.token),
            Method::POST,
            "/api/v1/pools/lan/allocations",
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rec}");
    assert_eq!(rec["address"], "10.0.0.3");
    // By pool id as well as by name.
    assert_eq!(s.allocate(&pool["id"].to_string()).await, "10.0.0.4");
    assert_eq!(s.allocate("lan").await, "10.0.0.5");
    assert_eq!(s.allocate("lan").await, "10.0.0.6");
    let stats = s.stats("lan").await;
    assert_eq!(
        (stats["allocated"].as_u64(), stats["available"].as_u64()),
        (Some(5), Some(0))
    );
    s.assert_stats_match_records("lan").await;
}

#[tokio::test]
async fn allocate_fails_when_pool_is_exhausted() {
    let s = Server::start().await;
    s.pool("tiny", "10.0.0.0/29").await;
    for want in ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"] {
        assert_eq!(s.allocate("tiny").await, want);
    }
    let req = jreq(
        &s,
        Method::POST,
        "/api/v1/pools/tiny/allocations",
        json!({}),
    );
    let body = refused(&s, "tiny", req, StatusCode::CONFLICT, "tiny").await;
    assert_eq!(body["error"]["code"], "exhausted");
    // A released address can be had again.
    assert_eq!(release(&s, "10.0.0.2").await.0, StatusCode::OK);
    assert_eq!(s.allocate("tiny").await, "10.0.0.2");
}

#[tokio::test]
async fn allocation_takes_a_requested_address() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let (status, rec) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"address": "10.0.0.20", "owner": "bob", "hostname": "db-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rec}");
    assert_eq!(rec["address"], "10.0.0.20");
    assert_eq!(rec["owner"], "bob");
    assert_eq!(rec["hostname"], "db-1");
    assert_eq!(address(&s, "10.0.0.20").await, rec);
    // Next-free goes on from the bottom, around the taken address.
    assert_eq!(s.allocate("lan").await, "10.0.0.2");
    assert_eq!(s.stats("lan").await["allocated"], 2);
}

#[tokio::test]
async fn allocation_errors_change_nothing() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    s.pool("lab", "10.0.1.0/24").await;
    let (status, _) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"address": "10.0.0.20"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        patch(&s, "10.0.0.30", json!({"status": "reserved"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&s, "10.0.0.31", json!({"status": "quarantine"}))
            .await
            .0,
        StatusCode::OK
    );
    let path = "/api/v1/pools/lan/allocations";
    let alloc = |body: Value| jreq(&s, Method::POST, path, body);
    use StatusCode as S;
    let cases: Vec<(RequestBuilder, StatusCode, &str, &str)> = vec![
        (
            alloc(json!({"address": "10.0.0.20"})),
            S::CONFLICT,
            "taken",
            "10.0.0.20",
        ),
        (
            alloc(json!({"address": "10.0.0.30"})),
            S::CONFLICT,
            "taken",
            "10.0.0.30",
        ),
        (
            alloc(json!({"address": "10.0.0.31"})),
            S::CONFLICT,
            "taken",
            "10.0.0.31",
        ),
        (
            alloc(json!({"address": "10.0.0.1"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.0.0.1",
        ),
        (
            alloc(json!({"address": "10.0.0.0"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.0.0.0",
        ),
        (
            alloc(json!({"address": "10.0.0.255"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.0.0.255",
        ),
        (
            alloc(json!({"address": "10.0.1.5"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.0.1.5",
        ),
        (
            alloc(json!({"address": "192.168.9.9"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "192.168.9.9",
        ),
        (
            alloc(json!({"address": "fd00::5"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "fd00::5",
        ),
        (
            alloc(json!({"address": "banana"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "",
        ),
        (
            alloc(json!({"hostname": "bad host!"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "bad host!",
        ),
        (
            alloc(json!({"owner": "o".repeat(201)})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "owner",
        ),
        (
            alloc(json!({"colour": "blue"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "colour",
        ),
        (
            alloc(json!({"owner": 7})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "",
        ),
        (
            rawreq(&s, Method::POST, path, "application/json", "{\"owner\":"),
            S::BAD_REQUEST,
            "malformed",
            "",
        ),
        (
            rawreq(&s, Method::POST, path, "application/json", "owner=x"),
            S::BAD_REQUEST,
            "malformed",
            "",
        ),
        (
            jreq(
                &s,
                Method::POST,
                "/api/v1/pools/nope/allocations",
                json!({}),
            ),
            S::NOT_FOUND,
            "not_found",
            "nope",
        ),
        (
            alloc(json!({})).header("Idempotency-Key", ""),
            S::BAD_REQUEST,
            "malformed",
            "Idempotency-Key",
        ),
        (
            alloc(json!({})).header("Idempotency-Key", "k".repeat(201)),
            S::BAD_REQUEST,
            "malformed",
            "Idempotency-Key",
        ),
    ];
    for (req, status, code, needle) in cases {
        let body = refused(&s, "lan", req, status, needle).await;
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    // Nothing was skipped or lost: next-free still starts at the bottom.
    assert_eq!(s.allocate("lan").await, "10.0.0.2");
    s.assert_stats_match_records("lan").await;
}

#[tokio::test]
async fn idempotency_key_retry_returns_the_same_address() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    s.pool("lab", "10.0.1.0/24").await;
    let (status, first) = s
        .allocate_with_key("lan", "order-1", json!({"owner": "alice"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["address"], "10.0.0.2");
    let before = s.snapshot("lan").await;
    for _ in 0..3 {
        let (status, retry) = s
            .allocate_with_key("lan", "order-1", json!({"owner": "alice"}))
            .await;
        assert!(status.is_success(), "{status} {retry}");
        assert_eq!(retry["address"], first["address"], "{retry}");
        assert_eq!(retry["status"], "allocated");
    }
    assert_eq!(s.snapshot("lan").await, before, "a retry allocated again");
    assert_eq!(s.stats("lan").await["allocated"], 1);

    // Another key is another allocation; the same key in another pool is another allocation.
    let (status, second) = s.allocate_with_key("lan", "order-2", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["address"], "10.0.0.3");
    let (status, other) = s.allocate_with_key("lab", "order-1", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(other["address"], "10.0.1.2");
    // A keyed request for a specific address, retried, does not fail as "taken".
    let (status, asked) = s
        .allocate_with_key("lan", "order-3", json!({"address": "10.0.0.40"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{asked}");
    let (status, again) = s
        .allocate_with_key("lan", "order-3", json!({"address": "10.0.0.40"}))
        .await;
    assert!(status.is_success(), "{status} {again}");
    assert_eq!(again["address"], "10.0.0.40");
    assert_eq!(s.stats("lan").await["allocated"], 3);
    s.assert_stats_match_records("lan").await;
}

#[tokio::test]
async fn released_addresses_go_to_the_back_of_the_line() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/29").await;
    assert_eq!(s.allocate("lan").await, "10.0.0.2");
    assert_eq!(s.allocate("lan").await, "10.0.0.3");
    assert_eq!(release(&s, "10.0.0.3").await.0, StatusCode::OK);
    assert_eq!(release(&s, "10.0.0.2").await.0, StatusCode::OK);
    // Never-used addresses first, then the released ones in the order they came back.
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(s.allocate("lan").await);
    }
    assert_eq!(
        got,
        ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.3", "10.0.0.2"]
    );
    let (status, body) = s.post("/api/v1/pools/lan/allocations", json!({})).await;
    assert_error_code(status, &body, StatusCode::CONFLICT, "exhausted");
    s.assert_stats_match_records("lan").await;
}

// ---------------------------------------------------------------------------------------------
// Addresses: listing

#[tokio::test]
async fn address_listing_filters_by_pool_status_type_active_and_query() {
    let s = Server::start().await;
    create_pool(
        &s,
        json!({"name": "lan", "cidr": "10.0.0.0/24", "static_ranges": ["10.0.0.10-10.0.0.50"]}),
    )
    .await;
    s.pool("lab", "10.0.1.0/24").await;
    let (status, _) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"hostname": "web-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"address": "10.0.0.11", "owner": "alice"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        patch(
            &s,
            "10.0.0.12",
            json!({"status": "reserved", "description": "printer"})
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&s, "10.0.0.13", json!({"status": "quarantine"}))
            .await
            .0,
        StatusCode::OK
    );
    let device = json!({"ip": "10.0.0.100", "hostname": "db-1", "mac": "52:54:00:ab:cd:ef"});
    assert_eq!(put_device(&s, "d1", device).await.0, StatusCode::OK);
    let (status, _) = s
        .post(
            "/api/v1/pools/lab/allocations",
            json!({"hostname": "web-2"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let lan_all = strs(&[
        "10.0.0.1",
        "10.0.0.10",
        "10.0.0.11",
        "10.0.0.12",
        "10.0.0.13",
        "10.0.0.100",
    ]);
    assert_eq!(listed(&s, "pool=lan").await, lan_all);
    let lan_id = s.get("/api/v1/pools/lan").await.1["id"].clone();
    assert_eq!(listed(&s, &format!("pool={lan_id}")).await, lan_all);
    let mut everything = lan_all.clone();
    everything.extend(strs(&["10.0.1.1", "10.0.1.2"]));
    assert_eq!(listed(&s, "").await, everything);
    assert_eq!(
        listed(&s, "pool=lan&status=allocated").await,
        strs(&["10.0.0.10", "10.0.0.11", "10.0.0.100"])
    );
    assert_eq!(
        listed(&s, "status=allocated").await,
        strs(&["10.0.0.10", "10.0.0.11", "10.0.0.100", "10.0.1.2"])
    );
    assert_eq!(
        listed(&s, "status=reserved").await,
        strs(&["10.0.0.1", "10.0.0.12", "10.0.1.1"])
    );
    assert_eq!(listed(&s, "status=quarantine").await, strs(&["10.0.0.13"]));
    assert_eq!(listed(&s, "type=dhcp").await, strs(&["10.0.0.100"]));
    assert_eq!(
        listed(&s, "pool=lab&type=static").await,
        strs(&["10.0.1.1", "10.0.1.2"])
    );
    assert_eq!(listed(&s, "active=true").await, Vec::<String>::new());
    assert_eq!(
        listed(&s, "pool=lab&active=false").await,
        strs(&["10.0.1.1", "10.0.1.2"])
    );
    assert_eq!(listed(&s, "q=web").await, strs(&["10.0.0.10", "10.0.1.2"]));
    assert_eq!(listed(&s, "q=DB-1").await, strs(&["10.0.0.100"]));
    assert_eq!(listed(&s, "q=52:54:00:AB").await, strs(&["10.0.0.100"]));
    assert_eq!(listed(&s, "q=cd:ef").await, strs(&["10.0.0.100"]));
    assert_eq!(
        listed(&s, "q=10.0.1.").await,
        strs(&["10.0.1.1", "10.0.1.2"])
    );
    assert_eq!(
        listed(&s, "q=10.0.0.1&status=allocated").await,
        strs(&["10.0.0.10", "10.0.0.11", "10.0.0.100"])
    );
    assert_eq!(listed(&s, "q=").await, everything);
    assert_eq!(listed(&s, "q=nothing-matches").await, Vec::<String>::new());
    // Free addresses, stored or not, in address order (10.0.0.2.. lie outside the static ranges).
    let (status, page) = s
        .get("/api/v1/addresses?pool=lan&status=available&limit=3")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        addresses(&page),
        strs(&["10.0.0.2", "10.0.0.3", "10.0.0.4"])
    );
    assert!(
        page["items"]
            .as_array()
            .is_some_and(|i| i.iter().all(|r| r["status"] == "available"))
    );
    assert_eq!(page["items"][0]["type"], "dhcp");
    assert_eq!(
        listed(&s, "pool=lan&status=available&type=static&q=10.0.0.1").await,
        strs(&[
            "10.0.0.14",
            "10.0.0.15",
            "10.0.0.16",
            "10.0.0.17",
            "10.0.0.18",
            "10.0.0.19"
        ])
    );
    // Records carry what the filters matched on.
    let (_, page) = s.get("/api/v1/addresses?q=db-1").await;
    let rec = &page["items"][0];
    assert_eq!(
        (rec["status"].as_str(), rec["type"].as_str()),
        (Some("allocated"), Some("dhcp"))
    );
    assert_eq!(rec["mac"], "52:54:00:ab:cd:ef");
    assert_eq!(rec["device"], "d1");
}

#[tokio::test]
async fn address_listing_paginates_with_a_cursor() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    s.pool("v6", "fd00::/120").await;
    for _ in 0..23 {
        s.allocate("lan").await;
    }
    for _ in 0..4 {
        s.allocate("v6").await;
    }
    let (status, whole) = s.get("/api/v1/addresses?limit=500").await;
    assert_eq!(status, StatusCode::OK);
    assert!(whole["next_cursor"].is_null());
    let whole = addresses(&whole);
    assert_eq!(whole.len(), 24 + 5, "{whole:?}");
    assert_eq!(whole[0], "10.0.0.1");
    assert_eq!(whole[24], "fd00::1");

    for limit in [1, 7, 10, 29, 30] {
        let (paged, pages) = all_pages(&s, "", limit).await;
        assert_eq!(paged, whole, "limit {limit}");
        assert!(
            pages >= whole.len().div_ceil(limit),
            "limit {limit}: {pages} pages"
        );
    }
    // The default page is 50 rows.
    let (_, page) = s.get("/api/v1/addresses?pool=lan&status=available").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(50));
    assert!(page["next_cursor"].is_string());

    // Free addresses page too: 254 - 24 of them, each once, in order.
    let (free, _) = all_pages(&s, "pool=lan&status=available", 100).await;
    let want: Vec<String> = (25..=254).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(free, want);
    // Filters hold across pages.
    let (held, _) = all_pages(&s, "status=allocated&q=10.0.0.1", 3).await;
    let want: Vec<String> = (10..=19).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(held, want);
}

#[tokio::test]
async fn address_listing_rejects_bad_queries() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    s.allocate("lan").await;
    for query in [
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=ten",
        "limit=18446744073709551616",
        "status=lost",
        "type=bogus",
        "active=maybe",
        "cursor=not-an-address",
        "cursor=",
        "colour=blue",
        "limit=1&limit=2",
    ] {
        let req = s.request(
            Some(&s.token),
            Method::GET,
            &format!("/api/v1/addresses?{query}"),
        );
        let body = refused(&s, "lan", req, StatusCode::BAD_REQUEST, "").await;
        assert_eq!(body["error"]["code"], "malformed", "{query}: {body}");
    }
    let long = format!("/api/v1/addresses?q={}", "a".repeat(101));
    let body = refused(
        &s,
        "lan",
        s.request(Some(&s.token), Method::GET, &long),
        StatusCode::BAD_REQUEST,
        "q",
    )
    .await;
    assert_eq!(body["error"]["code"], "malformed");
    let req = s.request(Some(&s.token), Method::GET, "/api/v1/addresses?pool=nope");
    refused(&s, "lan", req, StatusCode::NOT_FOUND, "nope").await;
}

// ---------------------------------------------------------------------------------------------
// Addresses: one address

#[tokio::test]
async fn reading_an_address_shows_untouched_ones_as_available() {
    let s = Server::start().await;
    let pool = create_pool(
        &s,
        json!({"name": "lan", "cidr": "10.0.0.0/24", "static_ranges": ["10.0.0.10-10.0.0.50"]}),
    )
    .await;
    let rec = address(&s, "10.0.0.20").await;
    assert_eq!(rec["address"], "10.0.0.20");
    assert_eq!(rec["pool"], pool["id"]);
    assert_eq!(rec["status"], "available");
    assert_eq!(rec["type"], "static");
    assert_eq!(rec["hostname"], Value::Null);
    assert_eq!(address(&s, "10.0.0.200").await["type"], "dhcp");
    for (ip, status, needle) in [
        ("10.9.9.9", StatusCode::UNPROCESSABLE_ENTITY, "10.9.9.9"),
        ("fd00::1", StatusCode::UNPROCESSABLE_ENTITY, "fd00::1"),
        ("10.0.0.0", StatusCode::UNPROCESSABLE_ENTITY, "10.0.0.0"),
        ("10.0.0.255", StatusCode::UNPROCESSABLE_ENTITY, "10.0.0.255"),
        ("banana", StatusCode::BAD_REQUEST, "banana"),
        ("10.0.0.300", StatusCode::BAD_REQUEST, "10.0.0.300"),
    ] {
        let req = s.request(
            Some(&s.token),
            Method::GET,
            &format!("/api/v1/addresses/{ip}"),
        );
        refused(&s, "lan", req, status, needle).await;
    }
    // Reading stores nothing.
    assert_eq!(csv_rows(&s.export("lan").await).len(), 1);
}

#[tokio::test]
async fn patch_reserves_with_a_description_and_leaving_reserved_clears_it() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let (status, rec) = patch(
        &s,
        "10.0.0.5",
        json!({"status": "reserved", "description": "printer"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(
        (rec["status"].as_str(), rec["description"].as_str()),
        (Some("reserved"), Some("printer"))
    );
    assert_eq!(address(&s, "10.0.0.5").await, rec);
    let (status, rec) = patch(&s, "10.0.0.5", json!({"description": "laser printer"})).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["description"], "laser printer");
    // A reserved address is not handed out.
    let (status, body) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"address": "10.0.0.5"}),
        )
        .await;
    assert_error_code(status, &body, StatusCode::CONFLICT, "taken");
    let (status, rec) = patch(&s, "10.0.0.5", json!({"status": "quarantine"})).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["description"], Value::Null);
    let (status, rec) = patch(&s, "10.0.0.5", json!({"status": "available"})).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["status"], "available");
    let stats = s.stats("lan").await;
    assert_eq!(
        (stats["reserved"].as_u64(), stats["quarantine"].as_u64()),
        (Some(1), Some(0))
    );
    s.assert_stats_match_records("lan").await;
    let events = history(&s, "10.0.0.5").await;
    assert_eq!(
        actions(&events),
        ["reserve", "edit", "quarantine", "release"]
    );
}

#[tokio::test]
async fn patch_updates_owner_and_facts_and_an_empty_string_clears() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let ip = s.allocate("lan").await;
    let facts = json!({"owner": "bob", "hostname": "h-1", "mac": "5254.00AB.CDEF", "platform": "linux", "manufacturer": "acme"});
    let (status, rec) = patch(&s, &ip, facts).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["owner"], "bob");
    assert_eq!(rec["hostname"], "h-1");
    assert_eq!(rec["mac"], "52:54:00:ab:cd:ef");
    assert_eq!(rec["platform"], "linux");
    assert_eq!(rec["manufacturer"], "acme");
    assert_eq!(rec["status"], "allocated");
    assert_eq!(address(&s, &ip).await, rec);
    let (status, rec) = patch(&s, &ip, json!({"hostname": "", "owner": ""})).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["hostname"], Value::Null);
    assert_eq!(rec["owner"], Value::Null);
    assert_eq!(rec["mac"], "52:54:00:ab:cd:ef");
    assert_eq!(address(&s, &ip).await, rec);
}

/// What a PATCH answers is what was stored: a later GET shows the same record.
#[tokio::test]
async fn patch_response_matches_the_stored_record() {
    let s = Server::start().await;
    create_pool(
        &s,
        json!({"name": "lan", "cidr": "10.0.0.0/24", "static_ranges": ["10.0.0.10-10.0.0.50"]}),
    )
    .await;
    // One address inside the static ranges, one outside (a learned, dhcp-type address).
    for ip in ["10.0.0.20", "10.0.0.100"] {
        let (status, rec) = patch(
            &s,
            ip,
            json!({"hostname": "printer-1", "mac": "52:54:00:00:00:01"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{rec}");
        assert_eq!(rec["hostname"], "printer-1");
        let stored = address(&s, ip).await;
        assert_eq!(
            stored["hostname"], rec["hostname"],
            "PATCH {ip} answered {rec} but GET shows {stored}"
        );
        assert_eq!(stored["mac"], rec["mac"], "{ip}");
    }
}

#[tokio::test]
async fn description_is_refused_unless_reserved_and_patch_errors_change_nothing() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let ip = s.allocate("lan").await;
    assert_eq!(
        patch(&s, "10.0.0.7", json!({"status": "quarantine"}))
            .await
            .0,
        StatusCode::OK
    );
    let p =
        |ip: &str, body: Value| jreq(&s, Method::PATCH, &format!("/api/v1/addresses/{ip}"), body);
    use StatusCode as S;
    let cases: Vec<(RequestBuilder, StatusCode, &str, &str)> = vec![
        (
            p(&ip, json!({"description": "x"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "reserved",
        ),
        (
            p("10.0.0.9", json!({"description": "x"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "reserved",
        ),
        (
            p("10.0.0.7", json!({"description": "x"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "reserved",
        ),
        (
            p(&ip, json!({"status": "available", "description": "x"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "reserved",
        ),
        (
            p(&ip, json!({"status": "reserved"})),
            S::CONFLICT,
            "taken",
            ip.as_str(),
        ),
        (
            p("10.0.0.7", json!({"status": "allocated"})),
            S::CONFLICT,
            "taken",
            "10.0.0.7",
        ),
        (
            p(
                "10.0.0.8",
                json!({"status": "reserved", "description": "d".repeat(1001)}),
            ),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "description",
        ),
        (
            p(&ip, json!({"status": "lost"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "",
        ),
        (
            p(&ip, json!({"mac": "zz:zz"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "zz:zz",
        ),
        (
            p(&ip, json!({"hostname": "no spaces"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "no spaces",
        ),
        (
            p(&ip, json!({"platform": "p".repeat(101)})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "platform",
        ),
        (
            p(&ip, json!({"owner": "o".repeat(201)})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "owner",
        ),
        (
            p(&ip, json!({"colour": "blue"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "colour",
        ),
        (
            p("10.0.0.1", json!({"owner": "x"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.0.0.1",
        ),
        (
            p("10.0.0.0", json!({"owner": "x"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.0.0.0",
        ),
        (
            p("10.9.9.9", json!({"owner": "x"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.9.9.9",
        ),
        (
            p("banana", json!({"owner": "x"})),
            S::BAD_REQUEST,
            "malformed",
            "banana",
        ),
        (
            rawreq(
                &s,
                Method::PATCH,
                &format!("/api/v1/addresses/{ip}"),
                "application/json",
                "{",
            ),
            S::BAD_REQUEST,
            "malformed",
            "",
        ),
    ];
    for (req, status, code, needle) in cases {
        let body = refused(&s, "lan", req, status, needle).await;
        assert_eq!(body["error"]["code"], code, "{body}");
    }
}

#[tokio::test]
async fn releasing_returns_an_address_to_available() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let (_, rec) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"owner": "alice", "hostname": "web-1"}),
        )
        .await;
    let ip = rec["address"].as_str().expect("address").to_string();
    let (status, rec) = release(&s, &ip).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["status"], "available");
    assert_eq!(rec["owner"], Value::Null);
    assert_eq!(rec["hostname"], Value::Null);
    assert_eq!(address(&s, &ip).await["status"], "available");
    assert_eq!(s.stats("lan").await["allocated"], 0);
    s.assert_stats_match_records("lan").await;

    assert_eq!(
        patch(&s, "10.0.0.7", json!({"status": "quarantine"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&s, "10.0.0.8", json!({"status": "reserved"})).await.0,
        StatusCode::OK
    );
    let del = |ip: &str| {
        s.request(
            Some(&s.token),
            Method::DELETE,
            &format!("/api/v1/addresses/{ip}/allocation"),
        )
    };
    for (ip, status, code) in [
        (ip.as_str(), StatusCode::CONFLICT, "not_allocated"),
        ("10.0.0.9", StatusCode::CONFLICT, "not_allocated"),
        ("10.0.0.7", StatusCode::CONFLICT, "not_allocated"),
        ("10.0.0.8", StatusCode::CONFLICT, "not_allocated"),
        ("10.9.9.9", StatusCode::UNPROCESSABLE_ENTITY, "rule"),
        ("10.0.0.255", StatusCode::UNPROCESSABLE_ENTITY, "rule"),
        ("banana", StatusCode::BAD_REQUEST, "malformed"),
    ] {
        let body = refused(&s, "lan", del(ip), status, ip).await;
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    // The gateway is never released.
    let body = s.send(del("10.0.0.1")).await;
    assert!(body.0.is_client_error(), "{body:?}");
    assert_eq!(address(&s, "10.0.0.1").await["status"], "reserved");
}

#[tokio::test]
async fn history_records_actor_action_before_and_after() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let robot = support::create_token(&s.data_dir(), "robot", false);
    let (status, rec) = s
        .call_as(
            &robot,
            Method::POST,
            "/api/v1/pools/lan/allocations",
            Some(json!({"owner": "first"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rec}");
    let ip = rec["address"].as_str().expect("address").to_string();
    assert_eq!(
        patch(&s, &ip, json!({"owner": "second"})).await.0,
        StatusCode::OK
    );
    let path = format!("/api/v1/addresses/{ip}/allocation");
    assert_eq!(
        s.call_as(&robot, Method::DELETE, &path, None).await.0,
        StatusCode::OK
    );

    let events = history(&s, &ip).await;
    assert_eq!(actions(&events), ["allocate", "edit", "release"]);
    let actors: Vec<&str> = events
        .iter()
        .map(|e| e["actor"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actors, ["robot", "admin", "robot"]);
    assert_eq!(events[0]["before"], Value::Null);
    assert_eq!(events[0]["after"]["status"], "allocated");
    assert_eq!(events[0]["after"]["owner"], "first");
    assert_eq!(events[1]["before"]["owner"], "first");
    assert_eq!(events[1]["after"]["owner"], "second");
    assert_eq!(events[2]["before"]["status"], "allocated");
    assert_eq!(events[2]["after"]["status"], "available");
    assert_eq!(events[2]["after"]["owner"], Value::Null);
    let ids: Vec<u64> = events.iter().filter_map(|e| e["id"].as_u64()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(events.iter().all(|e| e["at"].is_string()));
    // The history of the gateway starts with its reservation at the pool's creation.
    let gw = history(&s, "10.0.0.1").await;
    assert_eq!(actions(&gw), ["reserve"]);
    assert_eq!(gw[0]["actor"], "admin");
    // An untouched address has none; a non-address is refused.
    assert_eq!(history(&s, "10.0.0.99").await, Vec::<Value>::new());
    let (status, body) = s.get("/api/v1/addresses/banana/history").await;
    assert_error_code(status, &body, StatusCode::BAD_REQUEST, "malformed");
}

// ---------------------------------------------------------------------------------------------
// Devices

async fn lan_with_static_range(s: &Server) {
    create_pool(
        s,
        json!({"name": "lan", "cidr": "10.0.0.0/24", "static_ranges": ["10.0.0.10-10.0.0.50"]}),
    )
    .await;
}

#[tokio::test]
async fn device_sync_allocates_its_address_with_its_facts() {
    let s = Server::start().await;
    lan_with_static_range(&s).await;
    let spec = json!({"ip": "10.0.0.100", "hostname": "web-1", "mac": "52-54-00-AB-CD-EF", "platform": "linux", "manufacturer": "acme"});
    let (status, dev) = put_device(&s, "d1", spec).await;
    assert_eq!(status, StatusCode::OK, "{dev}");
    assert_eq!(dev["id"], "d1");
    assert_eq!(dev["ip"], "10.0.0.100");
    assert_eq!(dev["mac"], "52:54:00:ab:cd:ef");
    let rec = address(&s, "10.0.0.100").await;
    assert_eq!(rec["status"], "allocated");
    assert_eq!(
        rec["type"], "dhcp",
        "outside the static ranges of a pool that has them"
    );
    assert_eq!(rec["hostname"], "web-1");
    assert_eq!(rec["mac"], "52:54:00:ab:cd:ef");
    assert_eq!(rec["platform"], "linux");
    assert_eq!(rec["manufacturer"], "acme");
    assert_eq!(rec["device"], "d1");
    assert_eq!(actions(&history(&s, "10.0.0.100").await), ["device-sync"]);

    // Inside the static ranges the address is static.
    let (status, _) = put_device(&s, "d2", json!({"ip": "10.0.0.20", "hostname": "db-1"})).await;
    assert_eq!(status, StatusCode::OK);
    let rec = address(&s, "10.0.0.20").await;
    assert_eq!(
        (rec["status"].as_str(), rec["type"].as_str()),
        (Some("allocated"), Some("static"))
    );

    // A second sync of the same device at the same address updates its facts.
    let (status, _) = put_device(&s, "d1", json!({"ip": "10.0.0.100", "hostname": "web-1b"})).await;
    assert_eq!(status, StatusCode::OK);
    let rec = address(&s, "10.0.0.100").await;
    assert_eq!(
        (rec["status"].as_str(), rec["hostname"].as_str()),
        (Some("allocated"), Some("web-1b"))
    );
    assert_eq!(rec["mac"], Value::Null);
    assert_eq!(s.stats("lan").await["allocated"], 2);
    s.assert_stats_match_records("lan").await;
    // Next-free does not hand out a device's static address.
    assert_eq!(s.allocate("lan").await, "10.0.0.10");
}

#[tokio::test]
async fn moving_a_device_releases_its_old_address() {
    let s = Server::start().await;
    lan_with_static_range(&s).await;
    let facts = json!({"hostname": "web-1", "mac": "52:54:00:ab:cd:ef", "platform": "linux", "manufacturer": "acme"});
    let at = |ip: &str| {
        let mut spec = facts.clone();
        spec["ip"] = json!(ip);
        spec
    };

    // A dhcp record is dropped when its device moves; its history stays.
    assert_eq!(
        put_device(&s, "d1", at("10.0.0.100")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        put_device(&s, "d1", at("10.0.0.101")).await.0,
        StatusCode::OK
    );
    let old = address(&s, "10.0.0.100").await;
    assert_eq!(old["status"], "available");
    assert_eq!(old["hostname"], Value::Null);
    assert_eq!(old["device"], Value::Null);
    let export = s.export("lan").await;
    assert!(
        !export.contains("10.0.0.100,"),
        "the dhcp record was kept:\n{export}"
    );
    let events = history(&s, "10.0.0.100").await;
    assert_eq!(actions(&events), ["device-sync", "device-release"]);
    assert_eq!(events[1]["before"]["hostname"], "web-1");
    assert_eq!(events[1]["after"], Value::Null);
    assert_eq!(address(&s, "10.0.0.101").await["device"], "d1");
    let stats = s.stats("lan").await;
    assert_eq!(
        stats["allocated"], 1,
        "one device holds one address: {stats}"
    );
    s.assert_stats_match_records("lan").await;

    // A static record returns to available with its facts cleared, and stays stored.
    assert_eq!(
        put_device(&s, "d1", at("10.0.0.20")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        put_device(&s, "d1", at("10.0.0.21")).await.0,
        StatusCode::OK
    );
    let old = address(&s, "10.0.0.20").await;
    assert_eq!(old["status"], "available");
    assert_eq!(old["type"], "static");
    for field in [
        "hostname",
        "mac",
        "platform",
        "manufacturer",
        "owner",
        "device",
    ] {
        assert_eq!(old[field], Value::Null, "{field} kept after release: {old}");
    }
    let rows = csv_rows(&s.export("lan").await);
    let row = rows
        .iter()
        .find(|r| r["address"] == "10.0.0.20")
        .expect("static record kept");
    assert_eq!(row["status"], "available");
    assert_eq!(row["hostname"], "");
    assert!(!rows.iter().any(|r| r["address"] == "10.0.0.101"));
    assert_eq!(address(&s, "10.0.0.21").await["status"], "allocated");
    let stats = s.stats("lan").await;
    assert_eq!(
        stats["allocated"], 1,
        "one device holds one address: {stats}"
    );
    s.assert_stats_match_records("lan").await;

    // A device moving to another pool releases the address in the first.
    s.pool("lab", "10.0.1.0/24").await;
    assert_eq!(put_device(&s, "d1", at("10.0.1.9")).await.0, StatusCode::OK);
    assert_eq!(s.stats("lan").await["allocated"], 0);
    assert_eq!(s.stats("lab").await["allocated"], 1);
    s.assert_stats_match_records("lan").await;
    s.assert_stats_match_records("lab").await;
}

#[tokio::test]
async fn deleting_a_device_releases_its_address() {
    let s = Server::start().await;
    lan_with_static_range(&s).await;
    assert_eq!(
        put_device(&s, "d1", json!({"ip": "10.0.0.20", "hostname": "a-1"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        put_device(&s, "d2", json!({"ip": "10.0.0.100", "hostname": "b-1"}))
            .await
            .0,
        StatusCode::OK
    );
    let before_delete = history(&s, "10.0.0.100").await.len();

    let (status, body) = s.call(Method::DELETE, "/api/v1/devices/d1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let rec = address(&s, "10.0.0.20").await;
    assert_eq!(rec["status"], "available");
    assert_eq!(rec["hostname"], Value::Null);
    assert_eq!(rec["device"], Value::Null);

    let (status, _) = s.call(Method::DELETE, "/api/v1/devices/d2", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let rows = csv_rows(&s.export("lan").await);
    assert!(
        !rows.iter().any(|r| r["address"] == "10.0.0.100"),
        "dhcp record kept"
    );
    let events = history(&s, "10.0.0.100").await;
    assert_eq!(events.len(), before_delete + 1);
    assert_eq!(
        events.last().map(|e| e["action"].clone()),
        Some(json!("device-release"))
    );
    assert_eq!(s.stats("lan").await["allocated"], 0);
    s.assert_stats_match_records("lan").await;

    let req = s.request(Some(&s.token), Method::DELETE, "/api/v1/devices/d1");
    let body = refused(&s, "lan", req, StatusCode::NOT_FOUND, "d1").await;
    assert_eq!(body["error"]["code"], "not_found");
    // The device is gone: syncing it again is a new device.
    assert_eq!(
        put_device(&s, "d1", json!({"ip": "10.0.0.20"})).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn device_outside_every_pool_is_refused_naming_the_ip() {
    let s = Server::start().await;
    lan_with_static_range(&s).await;
    let put = |id: &str, body: Value| jreq(&s, Method::PUT, &format!("/api/v1/devices/{id}"), body);
    let body = refused(
        &s,
        "lan",
        put("d1", json!({"ip": "10.7.0.1"})),
        StatusCode::UNPROCESSABLE_ENTITY,
        "10.7.0.1",
    )
    .await;
    assert_eq!(body["error"]["code"], "rule");
    // A known device moving outside every pool keeps its address.
    assert_eq!(
        put_device(&s, "d1", json!({"ip": "10.0.0.20"})).await.0,
        StatusCode::OK
    );
    refused(
        &s,
        "lan",
        put("d1", json!({"ip": "fd00::7"})),
        StatusCode::UNPROCESSABLE_ENTITY,
        "fd00::7",
    )
    .await;
    assert_eq!(address(&s, "10.0.0.20").await["device"], "d1");
}

#[tokio::test]
async fn device_errors_change_nothing() {
    let s = Server::start().await;
    lan_with_static_range(&s).await;
    assert_eq!(
        put_device(&s, "d1", json!({"ip": "10.0.0.100", "hostname": "a-1"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&s, "10.0.0.30", json!({"status": "reserved"}))
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"address": "10.0.0.31"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let put = |id: &str, body: Value| jreq(&s, Method::PUT, &format!("/api/v1/devices/{id}"), body);
    use StatusCode as S;
    let cases: Vec<(RequestBuilder, StatusCode, &str, &str)> = vec![
        // Another device's, a reserved, an allocated address: taken, and d1 keeps its own.
        (
            put("d2", json!({"ip": "10.0.0.100"})),
            S::CONFLICT,
            "taken",
            "10.0.0.100",
        ),
        (
            put("d1", json!({"ip": "10.0.0.30"})),
            S::CONFLICT,
            "taken",
            "10.0.0.30",
        ),
        (
            put("d1", json!({"ip": "10.0.0.31"})),
            S::CONFLICT,
            "taken",
            "10.0.0.31",
        ),
        (
            put("d2", json!({"ip": "10.0.0.1"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.0.0.1",
        ),
        (
            put("d2", json!({"ip": "10.0.0.255"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "10.0.0.255",
        ),
        (
            put("d1", json!({"ip": "10.0.0.40", "mac": "nope"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "nope",
        ),
        (
            put("d1", json!({"ip": "10.0.0.40", "hostname": "a b"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "a b",
        ),
        (
            put("d2", json!({"ip": "banana"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "",
        ),
        (
            put("d2", json!({"hostname": "x"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "ip",
        ),
        (
            put("d2", json!({"ip": "10.0.0.40", "colour": 1})),
            S::UNPROCESSABLE_ENTITY,
            "invalid",
            "colour",
        ),
        (
            put(&"d".repeat(129), json!({"ip": "10.0.0.40"})),
            S::UNPROCESSABLE_ENTITY,
            "rule",
            "128",
        ),
        (
            rawreq(
                &s,
                Method::PUT,
                "/api/v1/devices/d2",
                "application/json",
                "{\"ip\": ",
            ),
            S::BAD_REQUEST,
            "malformed",
            "",
        ),
    ];
    for (req, status, code, needle) in cases {
        let body = refused(&s, "lan", req, status, needle).await;
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    assert_eq!(address(&s, "10.0.0.100").await["device"], "d1");
}

// ---------------------------------------------------------------------------------------------
// CSV

const CSV_HEADER: &str =
    "address,status,type,hostname,mac,platform,manufacturer,owner,description,active";

#[tokio::test]
async fn export_lists_the_stored_records_as_csv() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let (status, _) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"owner": "alice", "hostname": "web-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let desc = "printer, 2nd floor \"east\"";
    assert_eq!(
        patch(
            &s,
            "10.0.0.9",
            json!({"status": "reserved", "description": desc})
        )
        .await
        .0,
        StatusCode::OK
    );

    let r = s
        .request(Some(&s.token), Method::GET, "/api/v1/pools/lan/export.csv")
        .send()
        .await
        .expect("export");
    assert_eq!(r.status(), StatusCode::OK);
    let ctype = r.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let text = r.text().await.expect("csv");
    assert_eq!(text.lines().next(), Some(CSV_HEADER));
    let rows = csv_rows(&text);
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["address"].as_str(), r["status"].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("10.0.0.1", "reserved"),
            ("10.0.0.2", "allocated"),
            ("10.0.0.9", "reserved")
        ]
    );
    assert_eq!(rows[1]["owner"], "alice");
    assert_eq!(rows[1]["hostname"], "web-1");
    assert_eq!(rows[1]["type"], "static");
    assert_eq!(rows[1]["active"], "false");
    assert_eq!(rows[2]["description"], desc);
    let (status, body) = s.get("/api/v1/pools/nope/export.csv").await;
    assert_error_code(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn import_applies_every_row_of_a_good_file() {
    let s = Server::start().await;
    lan_with_static_range(&s).await;
    let file = "address,status,type,hostname,mac,owner,description\n\
                10.0.0.10,allocated,,web-1,52-54-00-00-00-01,alice,\n\
                10.0.0.11,reserved,,,,,\"printer, 2nd floor\"\n\
                10.0.0.12,quarantine,,,,,\n\
                10.0.0.100,allocated,dhcp,db-1,,,\n";
    // As `curl --data-binary @file` sends it: with a form content type.
    let (status, body) = s
        .send_raw(
            Method::POST,
            "/api/v1/pools/lan/import",
            "application/x-www-form-urlencoded",
            file,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["imported"], 4);

    let rec = address(&s, "10.0.0.10").await;
    assert_eq!(rec["status"], "allocated");
    assert_eq!(rec["hostname"], "web-1");
    assert_eq!(rec["mac"], "52:54:00:00:00:01");
    assert_eq!(rec["owner"], "alice");
    assert_eq!(
        address(&s, "10.0.0.11").await["description"],
        "printer, 2nd floor"
    );
    assert_eq!(address(&s, "10.0.0.12").await["status"], "quarantine");
    assert_eq!(address(&s, "10.0.0.100").await["type"], "dhcp");
    let stats = s.stats("lan").await;
    assert_eq!(stats["allocated"], 2);
    assert_eq!(stats["reserved"], 2);
    assert_eq!(stats["quarantine"], 1);
    s.assert_stats_match_records("lan").await;
    let events = history(&s, "10.0.0.10").await;
    assert_eq!(actions(&events), ["import"]);
    assert_eq!(events[0]["actor"], "admin");
    // The imported addresses are no longer free.
    assert_eq!(s.allocate("lan").await, "10.0.0.13");
    let (status, body) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"address": "10.0.0.11"}),
        )
        .await;
    assert_error_code(status, &body, StatusCode::CONFLICT, "taken");
}

#[tokio::test]
async fn import_of_an_export_restores_the_pool() {
    let s = Server::start().await;
    lan_with_static_range(&s).await;
    let (status, _) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"owner": "alice", "hostname": "web-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        patch(
            &s,
            "10.0.0.30",
            json!({"status": "reserved", "description": "a, b"})
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        patch(&s, "10.0.0.31", json!({"status": "quarantine"}))
            .await
            .0,
        StatusCode::OK
    );
    let dev = json!({"ip": "10.0.0.100", "hostname": "db-1", "mac": "52:54:00:00:00:09", "platform": "linux", "manufacturer": "acme"});
    assert_eq!(put_device(&s, "d1", dev).await.0, StatusCode::OK);
    let export = s.export("lan").await;
    let stats = s.stats("lan").await;

    let (status, _) = s
        .call(Method::DELETE, "/api/v1/pools/lan?force=true", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    lan_with_static_range(&s).await;
    let (status, body) = import(&s, "lan", &export).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.export("lan").await, export);
    assert_eq!(s.stats("lan").await, stats);
    // Importing the same file again changes nothing.
    let (status, body) = import(&s, "lan", &export).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.export("lan").await, export);
    assert_eq!(s.stats("lan").await, stats);
}

#[tokio::test]
async fn import_with_one_bad_row_writes_nothing_and_names_the_line() {
    let s = Server::start().await;
    lan_with_static_range(&s).await;
    s.pool("lab", "10.0.1.0/24").await;
    let (status, _) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"address": "10.0.0.40"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Two good rows (lines 2 and 3), then the bad one on line 4.
    let file = |header: &str, bad: &str| {
        let pad = ",".repeat(header.matches(',').count() - 1);
        format!("{header}\n10.0.0.20,allocated{pad}\n10.0.0.21,reserved{pad}\n{bad}\n")
    };
    let cases: Vec<(String, &str)> = vec![
        (file("address,status", "10.0.0.22,lost"), "line 4"),
        (file("address,status", "10.9.9.9,allocated"), "line 4"),
        (file("address,status", "10.0.1.5,allocated"), "line 4"),
        (file("address,status", "banana,allocated"), "line 4"),
        (file("address,status", ",allocated"), "line 4"),
        (file("address,status", "10.0.0.23,"), "line 4"),
        (file("address,status", "10.0.0.20,reserved"), "line 4"),
        (file("address,status", "10.0.0.1,allocated"), "line 4"),
        (file("address,status", "10.0.0.255,allocated"), "line 4"),
        (file("address,status", "10.0.0.0,reserved"), "line 4"),
        (
            file("address,status", "10.0.0.22,allocated,extra"),
            "line 4",
        ),
        (
            file("address,status,type", "10.0.0.22,allocated,wifi"),
            "line 4",
        ),
        (file("address,status,type", "10.0.0.22,allocated"), "line 4"),
        (
            file("address,status,mac", "10.0.0.22,allocated,zz"),
            "line 4",
        ),
        (
            file("address,status,hostname", "10.0.0.22,allocated,a b"),
            "line 4",
        ),
        (
            file("address,status,description", "10.0.0.22,allocated,oops"),
            "line 4",
        ),
        (
            file(
                "address,status,description",
                &format!("10.0.0.22,reserved,{}", "d".repeat(1001)),
            ),
            "line 4",
        ),
        (
            file("address,status,colour", "10.0.0.22,allocated,blue"),
            "line 1",
        ),
        ("address\n10.0.0.20\n".to_string(), "line 1"),
        ("status\nallocated\n".to_string(), "line 1"),
        (String::new(), "line 1"),
    ];
    for (file, needle) in cases {
        eprintln!("import case: {file:?}");
        let req = rawreq(
            &s,
            Method::POST,
            "/api/v1/pools/lan/import",
            "text/csv",
            &file,
        );
        let body = refused(&s, "lan", req, StatusCode::UNPROCESSABLE_ENTITY, needle).await;
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(needle), "{file:?}: {msg}");
        // The lab pool was not touched either.
        assert_eq!(csv_rows(&s.export("lab").await).len(), 1);
    }
    let req = rawreq(
        &s,
        Method::POST,
        "/api/v1/pools/nope/import",
        "text/csv",
        "address,status\n",
    );
    refused(&s, "lan", req, StatusCode::NOT_FOUND, "nope").await;
    // Line numbers count from the header, and a bad row late in a long file is found.
    let mut long = String::from("address,status\n");
    for i in 2..=200 {
        long.push_str(&format!("10.0.0.{i},quarantine\n"));
    }
    long.push_str("10.0.0.201,lost\n");
    let req = rawreq(
        &s,
        Method::POST,
        "/api/v1/pools/lan/import",
        "text/csv",
        &long,
    );
    refused(&s, "lan", req, StatusCode::UNPROCESSABLE_ENTITY, "line 201").await;
    // An import obeys the same rules as the API: an owner is at most 200 characters.
    let long_owner = file(
        "address,status,owner",
        &format!("10.0.0.22,allocated,{}", "o".repeat(201)),
    );
    let req = rawreq(
        &s,
        Method::POST,
        "/api/v1/pools/lan/import",
        "text/csv",
        &long_owner,
    );
    refused(&s, "lan", req, StatusCode::UNPROCESSABLE_ENTITY, "line 4").await;
}

// ---------------------------------------------------------------------------------------------
// Errors in general

#[tokio::test]
async fn unknown_routes_answer_404_with_the_error_shape() {
    let s = Server::start().await;
    for path in [
        "/api/v1/nope",
        "/nope",
        "/api/v2/pools",
        "/api/v1/pools/lan/allocations/x",
    ] {
        let (status, body) = s.get(path).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, path);
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn unsupported_methods_answer_405_with_the_error_shape() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    for (method, path) in [
        (Method::PUT, "/api/v1/pools"),
        (Method::PATCH, "/api/v1/pools/lan"),
        (Method::GET, "/api/v1/pools/lan/allocations"),
        (Method::POST, "/api/v1/addresses"),
        (Method::GET, "/api/v1/devices/d1"),
    ] {
        let before = s.snapshot("lan").await;
        let (status, body) = s
            .send(s.request(Some(&s.token), method.clone(), path))
            .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{method} {path} answered 405 without the error shape: {body}"
        );
        assert_eq!(s.snapshot("lan").await, before);
    }
}

/// A body over the size limit is refused with the error shape, whichever route it goes to.
#[tokio::test]
async fn oversized_bodies_are_refused_with_the_error_shape() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let big = " ".repeat(17 << 20);
    let mut wrong = Vec::new();
    for (method, path, ctype) in [
        (Method::POST, "/api/v1/pools", "application/json"),
        (
            Method::POST,
            "/api/v1/pools/lan/allocations",
            "application/json",
        ),
        (Method::POST, "/api/v1/pools/lan/import", "text/csv"),
        (
            Method::PATCH,
            "/api/v1/addresses/10.0.0.5",
            "application/json",
        ),
        (Method::PUT, "/api/v1/devices/d1", "application/json"),
    ] {
        let before = s.snapshot("lan").await;
        // A client of its own: the server answers before reading the whole body, and the
        // connection is not fit for reuse afterwards.
        let once = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let r = once
            .request(method.clone(), s.url(path))
            .bearer_auth(&s.token)
            .header(reqwest::header::CONTENT_TYPE, ctype)
            .body(big.clone())
            .send()
            .await
            .expect("oversized request");
        let (status, body) = support::json_of(r).await;
        let sized = status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST;
        let shaped = body["error"]["code"].is_string() && body["error"]["message"].is_string();
        if !(sized && shaped) {
            wrong.push(format!("{method} {path} answered {status} {body}"));
        }
        assert_eq!(s.snapshot("lan").await, before, "{method} {path}");
    }
    assert!(
        wrong.is_empty(),
        "oversized bodies not refused with 413/400 and the error shape:\n{}",
        wrong.join("\n")
    );
}

/// `weft_allocations_total` counts addresses allocated, not requests answered: a retry with
/// the same Idempotency-Key allocates nothing.
#[tokio::test]
async fn allocation_metric_counts_each_allocation_once() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    for _ in 0..3 {
        let (status, body) = s.allocate_with_key("lan", "order-1", json!({})).await;
        assert!(status.is_success(), "{body}");
    }
    s.allocate("lan").await;
    let (status, _) = s
        .post(
            "/api/v1/pools/lan/allocations",
            json!({"address": "10.0.0.2"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(s.stats("lan").await["allocated"], 2);
    let text = s.metrics().await;
    assert_eq!(metric(&text, "weft_allocations_total"), Some(2.0), "{text}");
}

/// Odd input of every kind gets a 4xx with the error shape, never a 5xx.
#[tokio::test]
async fn odd_input_never_causes_a_server_error() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    s.pool("top", "ffff:ffff:ffff:ffff::/64").await;
    s.pool("all6", "fd00::/8").await;
    s.allocate("lan").await;
    let t = Some(s.token.as_str());
    let max6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let reqs = vec![
        s.request(t, Method::GET, "/api/v1/pools/18446744073709551616"),
        s.request(t, Method::GET, "/api/v1/pools/0"),
        s.request(t, Method::GET, "/api/v1/pools/%00"),
        s.request(t, Method::GET, "/api/v1/pools/%E2%9C%93"),
        s.request(t, Method::DELETE, "/api/v1/pools/%20?force=true"),
        s.request(t, Method::GET, "/api/v1/addresses/10.0.0.1%2F24"),
        s.request(t, Method::GET, "/api/v1/addresses/::ffff:10.0.0.5"),
        s.request(t, Method::GET, "/api/v1/addresses/999.1.1.1"),
        s.request(t, Method::GET, &format!("/api/v1/addresses/{max6}/history")),
        s.request(t, Method::GET, &format!("/api/v1/addresses?cursor={max6}")),
        s.request(
            t,
            Method::GET,
            &format!("/api/v1/addresses?cursor={max6}&status=available"),
        ),
        s.request(
            t,
            Method::GET,
            &format!("/api/v1/addresses?cursor={max6}&status=allocated&pool=top"),
        ),
        s.request(
            t,
            Method::GET,
            "/api/v1/addresses?cursor=255.255.255.255&status=available",
        ),
        s.request(
            t,
            Method::GET,
            "/api/v1/addresses?limit=500&status=available&pool=all6",
        ),
        s.request(t, Method::GET, "/api/v1/addresses?q=%00%FF"),
        s.request(t, Method::GET, "/api/v1/addresses?pool=&status="),
        s.request(t, Method::GET, "/api/v1/addresses?limit=1&limit=2"),
        s.request(t, Method::POST, "/api/v1/pools/lan/allocations")
            .header(
                "Idempotency-Key",
                reqwest::header::HeaderValue::from_bytes("caf\u{e9}".as_bytes())
                    .expect("obs-text header"),
            ),
        s.request(t, Method::POST, "/api/v1/pools/lan/allocations")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(vec![0xff, 0xfe, 0x00]),
        s.request(t, Method::POST, "/api/v1/pools")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{\"name\": \"x\", \"cidr\": \"::/0\"} trailing"),
        jreq(
            &s,
            Method::POST,
            "/api/v1/pools",
            json!({"name": "x", "cidr": "0.0.0.0/0"}),
        ),
        jreq(
            &s,
            Method::POST,
            "/api/v1/pools",
            json!({"name": "\u{0}", "cidr": "10.3.0.0/24"}),
        ),
        jreq(
            &s,
            Method::POST,
            "/api/v1/pools",
            json!({"name": "x", "cidr": "10.3.0.0/24", "static_ranges": ["10.3.0.9-10.3.0.8"]}),
        ),
        jreq(
            &s,
            Method::POST,
            "/api/v1/pools/top/allocations",
            json!({"address": max6, "hostname": "h".repeat(300)}),
        ),
        jreq(
            &s,
            Method::PATCH,
            "/api/v1/addresses/10.0.0.2",
            json!({"status": null, "owner": null}),
        ),
        jreq(
            &s,
            Method::PATCH,
            "/api/v1/addresses/10.0.0.2",
            json!({"mac": "52:54:00:ab:cd:ef:00"}),
        ),
        jreq(
            &s,
            Method::PUT,
            "/api/v1/devices/%20",
            json!({"ip": "10.0.0.3", "hostname": ".."}),
        ),
        rawreq(
            &s,
            Method::POST,
            "/api/v1/pools/lan/import",
            "text/csv",
            "address,status\n\"10.0.0.5,allocated\n",
        ),
        rawreq(
            &s,
            Method::POST,
            "/api/v1/pools/lan/import",
            "text/csv",
            "\u{feff}address,status\n10.0.0.5,allocated\n",
        ),
        rawreq(
            &s,
            Method::POST,
            "/api/v1/pools/lan/import",
            "text/csv",
            "address,address,status\n10.0.0.5,10.0.0.6,allocated\n",
        ),
        s.request(t, Method::POST, "/api/v1/pools/lan/import")
            .body(vec![0xff, 0xfe, b'\n', 0x00]),
    ];
    for req in reqs {
        let req = req.build().expect("request");
        let what = format!("{} {}", req.method(), req.url());
        let r = s.client.execute(req).await.expect("send");
        let (status, body) = support::json_of(r).await;
        assert!(!status.is_server_error(), "{what} answered {status} {body}");
        if status.is_client_error() {
            assert!(
                body["error"]["code"].is_string(),
                "{what} answered {status} without the error shape: {body}"
            );
        }
    }
    s.assert_stats_match_records("lan").await;
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// IPv6 and small pools

#[tokio::test]
async fn ipv6_pool_workflow_starts_at_2_because_1_is_the_gateway() {
    let s = Server::start().await;
    let pool = s.pool("v6", "fd00::/64").await;
    let stats = &pool["stats"];
    assert_eq!(
        stats["total"],
        json!(u64::MAX),
        "2^64 - 1 usable (the anycast address is not)"
    );
    assert_eq!(stats["reserved"], 1);
    assert_eq!(stats["allocated"], 0);

    assert_eq!(s.allocate("v6").await, "fd00::2");
    assert_eq!(s.allocate("v6").await, "fd00::3");
    let gw = address(&s, "fd00::1").await;
    assert_eq!(
        (gw["status"].as_str(), gw["description"].as_str()),
        (Some("reserved"), Some("gateway"))
    );
    let (status, body) = s.get("/api/v1/addresses/fd00::").await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "fd00::");
    // Any spelling of an address is the same address.
    assert_eq!(
        address(&s, "fd00:0:0:0:0:0:0:2").await["address"],
        "fd00::2"
    );
    assert_eq!(address(&s, "FD00::2").await["status"], "allocated");

    let last = "fd00::ffff:ffff:ffff:ffff";
    let (status, rec) = s
        .post(
            "/api/v1/pools/v6/allocations",
            json!({"address": last, "hostname": "edge"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rec}");
    let (status, body) = s
        .post(
            "/api/v1/pools/v6/allocations",
            json!({"address": "fd00:0:0:1::"}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "fd00:0:0:1::",
    );
    let (status, body) = s
        .post(
            "/api/v1/pools/v6/allocations",
            json!({"address": "fd00::1"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "fd00::1");

    assert_eq!(
        listed(&s, "pool=v6&status=allocated").await,
        strs(&["fd00::2", "fd00::3", last])
    );
    let (_, page) = s
        .get("/api/v1/addresses?pool=v6&status=available&limit=3")
        .await;
    assert_eq!(addresses(&page), strs(&["fd00::4", "fd00::5", "fd00::6"]));
    assert_eq!(listed(&s, "q=edge").await, strs(&[last]));
    assert_eq!(listed(&s, "q=FD00::3").await, strs(&["fd00::3"]));

    assert_eq!(release(&s, "fd00::2").await.0, StatusCode::OK);
    assert_eq!(
        actions(&history(&s, "fd00::2").await),
        ["allocate", "release"]
    );
    assert_eq!(
        put_device(&s, "r1", json!({"ip": "fd00::abcd", "hostname": "router"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(address(&s, "fd00::abcd").await["device"], "r1");
    let (status, body) = import(
        &s,
        "v6",
        "address,status,description\nfd00::99,reserved,lab\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats = s.stats("v6").await;
    assert_eq!(stats["allocated"], 3);
    assert_eq!(stats["reserved"], 2);
    assert_eq!(stats["available"], json!(u64::MAX - 5));
    s.assert_stats_match_records("v6").await;
    // The next free address is a fresh one, not the one just released.
    assert_eq!(s.allocate("v6").await, "fd00::4");

    // Pools of both families live side by side; a v6 overlap is refused.
    s.pool("v4", "10.0.0.0/24").await;
    let (status, body) = s
        .post("/api/v1/pools", json!({"name": "x", "cidr": "fd00::/48"}))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "v6");
}

#[tokio::test]
async fn slash_31_and_slash_32_pools_hand_out_every_address() {
    let s = Server::start().await;
    for (name, cidr, want) in [
        ("p2p", "10.0.0.0/31", vec!["10.0.0.0", "10.0.0.1"]),
        ("host", "10.0.1.7/32", vec!["10.0.1.7"]),
        ("p2p6", "fd00::/127", vec!["fd00::", "fd00::1"]),
        ("host6", "fd01::5/128", vec!["fd01::5"]),
    ] {
        let pool = s.pool(name, cidr).await;
        let stats = &pool["stats"];
        assert_eq!(stats["total"], want.len(), "{name}");
        assert_eq!(stats["reserved"], 0, "{name}: no gateway to keep back");
        let mut got = Vec::new();
        for _ in 0..want.len() {
            got.push(s.allocate(name).await);
        }
        assert_eq!(got, want, "{name}");
        let req = jreq(
            &s,
            Method::POST,
            &format!("/api/v1/pools/{name}/allocations"),
            json!({}),
        );
        let body = refused(&s, name, req, StatusCode::CONFLICT, name).await;
        assert_eq!(body["error"]["code"], "exhausted");
        let stats = s.stats(name).await;
        assert_eq!(stats["utilization"], 1.0, "{name}");
        s.assert_stats_match_records(name).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The README's walkthrough, request for request

/// The README's `api` shell function: the token and a JSON content type on every request,
/// with or without a body.
async fn readme_api(
    s: &Server,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = s
        .request(Some(&s.token), method, path)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    s.send(req).await
}

#[tokio::test]
async fn readme_walkthrough_works_as_written() {
    let s = Server::start().await;
    use Method as M;
    let (status, body) = readme_api(
        &s,
        M::POST,
        "/api/v1/pools",
        Some(r#"{"name":"lan","cidr":"10.20.0.0/24","static_ranges":["10.20.0.10-10.20.0.99"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = readme_api(
        &s,
        M::POST,
        "/api/v1/pools",
        Some(r#"{"name":"oops","cidr":"10.20.0.128/25"}"#),
    )
    .await;
    assert_error(status, &body, StatusCode::CONFLICT, "lan");
    let (status, body) = readme_api(&s, M::GET, "/api/v1/pools/lan", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stats"]["total"], 254);

    let keyed = s
        .request(Some(&s.token), M::POST, "/api/v1/pools/lan/allocations")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", "web-1");
    let (status, first) = s
        .send(
            keyed
                .try_clone()
                .expect("clone")
                .body(r#"{"hostname":"web-1","owner":"team-a"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["address"], "10.20.0.10");
    let (status, again) = s.send(keyed).await;
    assert!(status.is_success(), "{again}");
    assert_eq!(again["address"], "10.20.0.10", "a retry without a body");
    let (status, body) = readme_api(
        &s,
        M::POST,
        "/api/v1/pools/lan/allocations",
        Some(r#"{"address":"10.20.0.50"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = readme_api(
        &s,
        M::PATCH,
        "/api/v1/addresses/10.20.0.60",
        Some(r#"{"status":"reserved","description":"printer, 2nd floor"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = readme_api(
        &s,
        M::PATCH,
        "/api/v1/addresses/10.20.0.61",
        Some(r#"{"status":"quarantine"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = readme_api(
        &s,
        M::DELETE,
        "/api/v1/addresses/10.20.0.50/allocation",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = readme_api(&s, M::GET, "/api/v1/addresses/10.20.0.60/history", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["events"][0]["after"]["description"],
        "printer, 2nd floor"
    );

    let (status, page) = readme_api(
        &s,
        M::GET,
        "/api/v1/addresses?pool=lan&status=allocated&limit=2",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(addresses(&page), ["10.20.0.10"]);
    let (status, page) = readme_api(
        &s,
        M::GET,
        "/api/v1/addresses?pool=lan&status=available&limit=3",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3));
    let (status, page) = readme_api(&s, M::GET, "/api/v1/addresses?q=web", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(addresses(&page), ["10.20.0.10"]);

    let (status, body) = readme_api(
        &s,
        M::PUT,
        "/api/v1/devices/srv-42",
        Some(r#"{"ip":"10.20.0.200","hostname":"srv-42","mac":"52:54:00:12:34:56","platform":"linux","manufacturer":"Dell"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(address(&s, "10.20.0.200").await["type"], "dhcp");
    let (status, body) = readme_api(&s, M::DELETE, "/api/v1/devices/srv-42", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let (status, csv) = readme_api(&s, M::GET, "/api/v1/pools/lan/export.csv", None).await;
    assert_eq!(status, StatusCode::OK);
    let csv = csv.as_str().expect("csv text").to_string();
    let (status, body) = s
        .send_raw(
            M::POST,
            "/api/v1/pools/lan/import",
            "application/x-www-form-urlencoded",
            &csv,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.export("lan").await, csv);
    s.assert_stats_match_records("lan").await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown

#[tokio::test]
async fn sigterm_exits_cleanly_and_a_restart_keeps_every_change() {
    let mut s = Server::start().await;
    lan_with_static_range(&s).await;
    s.pool("v6", "fd00::/64").await;
    let (status, keyed) = s
        .allocate_with_key("lan", "order-1", json!({"owner": "alice"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(keyed["address"], "10.0.0.10");
    assert_eq!(s.allocate("lan").await, "10.0.0.11");
    assert_eq!(release(&s, "10.0.0.11").await.0, StatusCode::OK);
    assert_eq!(
        patch(
            &s,
            "10.0.0.30",
            json!({"status": "reserved", "description": "ups"})
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        put_device(&s, "d1", json!({"ip": "10.0.0.100", "hostname": "db-1"}))
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = import(&s, "lan", "address,status\n10.0.0.40,quarantine\n").await;
    assert_eq!(status, StatusCode::OK);
    s.allocate("v6").await;
    let viewer = support::create_token(&s.data_dir(), "viewer", true);
    let before = (
        s.snapshot("lan").await,
        s.export("v6").await,
        history(&s, "10.0.0.11").await,
    );

    let exit = s.terminate();
    assert!(exit.success(), "weft serve exited with {exit} on SIGTERM");
    s.restart().await;

    let after = (
        s.snapshot("lan").await,
        s.export("v6").await,
        history(&s, "10.0.0.11").await,
    );
    assert_eq!(after, before);
    assert_eq!(
        s.call_as(&viewer, Method::GET, "/api/v1/pools", None)
            .await
            .0,
        StatusCode::OK
    );
    // The allocator and the idempotency keys carry on where they were: fresh addresses before
    // the released one, and a retry gets the first attempt's address.
    assert_eq!(s.allocate("lan").await, "10.0.0.12");
    let (status, retry) = s
        .allocate_with_key("lan", "order-1", json!({"owner": "alice"}))
        .await;
    assert!(status.is_success(), "{retry}");
    assert_eq!(retry["address"], "10.0.0.10");
    assert_eq!(retry["status"], "allocated");
    // The device is known: moving it releases its old address.
    assert_eq!(
        put_device(&s, "d1", json!({"ip": "10.0.0.101"})).await.0,
        StatusCode::OK
    );
    assert_eq!(address(&s, "10.0.0.100").await["status"], "available");
    // A second graceful stop also succeeds.
    assert!(s.terminate().success());
}
