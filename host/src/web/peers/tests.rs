//! The peers API through the whole router (`oneshot`, no socket for the controller), against
//! agents that speak the real signed protocol on loopback ports: a test agent that keeps its
//! peers in memory (the data plane is not under test here), one that signs with another
//! secret, one that forges its answers, and a closed port.

use crate::agent_api::{InterfaceSpec, InterfaceSummary, PeerDump, PeerSpec, PublicKey};
use crate::agent_client::AgentClient;
use crate::controller::peers::{NodeSource, PeerError, PeerNode};
use crate::ipam::Status;
use crate::protocol::{HEADER_NODE, HEADER_SIGNATURE, MemoryNonces, ReplayGuard, Secret, Secrets};
use crate::web::api_fixture::{ADMIN, VIEWER, store_with};
use crate::web::{AppState, router};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode, header};
use axum::routing::{delete, post, put};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

fn secret(s: &str) -> Secret {
    Secret::new(format!("{s}-the-shared-secret-of-a-node").into_bytes()).unwrap()
}

// Bodies are read as bytes: the signed client sends no `Content-Type`.

/// What a test agent holds: its interface and its peers, by key.
#[derive(Default)]
pub(crate) struct AgentState {
    interface: Option<InterfaceSpec>,
    peers: BTreeMap<PublicKey, PeerSpec>,
    deletes: usize,
    /// Refuse `POST /v1/peers` as a full node would.
    refuse_peers: bool,
}

type Shared = Arc<Mutex<AgentState>>;

/// The agent's interface key: fixed, so the client's file can be checked.
const NODE_KEY: PublicKey = PublicKey([42; 32]);

async fn put_interface(
    State(st): State<Shared>,
    body: axum::body::Bytes,
) -> axum::Json<InterfaceSummary> {
    let spec: InterfaceSpec = serde_json::from_slice(&body).unwrap();
    let mut st = st.lock().unwrap();
    st.interface = Some(spec.clone());
    axum::Json(InterfaceSummary {
        name: crate::agent_api::PEER_INTERFACE.into(),
        public_key: NODE_KEY,
        listen_port: spec.listen_port,
        address: Some(spec.address),
        peers: st.peers.len() as u32,
    })
}

async fn add_peer(State(st): State<Shared>, body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let spec: PeerSpec = serde_json::from_slice(&body).unwrap();
    let mut st = st.lock().unwrap();
    if st.refuse_peers {
        let body = crate::agent_api::AgentErrorBody {
            error: "too_many_peers".into(),
            message: "the interface holds its maximum of peers".into(),
        };
        return (StatusCode::CONFLICT, axum::Json(body)).into_response();
    }
    st.peers.insert(spec.public_key, spec.clone());
    (
        StatusCode::CREATED,
        axum::Json(PeerDump {
            public_key: spec.public_key,
            endpoint: None,
            allowed_ips: spec.allowed_ips,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: spec.persistent_keepalive,
        }),
    )
        .into_response()
}

async fn remove_peer(State(st): State<Shared>, Path(hex): Path<String>) -> StatusCode {
    let mut st = st.lock().unwrap();
    st.deletes += 1;
    let Ok(key) = PublicKey::from_hex(&hex) else {
        return StatusCode::BAD_REQUEST;
    };
    match st.peers.remove(&key) {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::NOT_FOUND,
    }
}

/// Serves `app` on a loopback port; the server ends with the test's runtime.
async fn serve(app: Router) -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/").parse().unwrap()
}

/// An agent for `node` that verifies requests signed with `key` and signs its answers.
pub(crate) async fn agent(node: &str, key: &str) -> (url::Url, Shared) {
    let guard = Arc::new(ReplayGuard::new(
        Secrets::one(secret(key)),
        node,
        MemoryNonces::default(),
    ));
    let st = Shared::default();
    let app = Router::new()
        .route("/v1/interface", put(put_interface))
        .route("/v1/peers", post(add_peer))
        .route("/v1/peers/{hex}", delete(remove_peer))
        .with_state(st.clone())
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::agent::auth::verify_and_sign,
        ));
    (serve(app).await, st)
}

/// A man in the middle: answers everything 200 with a signature it cannot have made.
async fn forger(node: &str) -> url::Url {
    let node = node.to_string();
    let app = Router::new().fallback(move || {
        let node = node.clone();
        async move {
            (
                [
                    (HEADER_NODE, node),
                    (HEADER_SIGNATURE, "00".repeat(32)),
                    (header::CONTENT_TYPE.as_str(), "application/json".into()),
                ],
                "{}",
            )
        }
    });
    serve(app).await
}

/// A loopback port with nothing listening.
pub(crate) async fn closed_port() -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/").parse().unwrap()
}

pub(crate) struct TestNodes(pub(crate) Mutex<Vec<PeerNode>>);

impl NodeSource for TestNodes {
    fn nodes(&self) -> Result<Vec<PeerNode>, PeerError> {
        Ok(self.0.lock().unwrap().clone())
    }
}

/// A node whose agent is at `url`, signed for with `key`, drawing from `pool`.
pub(crate) fn node(name: &str, url: url::Url, key: &str, pool: &str, online: bool) -> PeerNode {
    let client = AgentClient::new(url, name, secret(key), Duration::from_secs(5)).unwrap();
    PeerNode {
        name: name.into(),
        enabled: true,
        online,
        status: if online { "online" } else { "offline" }.into(),
        endpoint_host: format!("{name}.example.net"),
        listen_port: 51820,
        peer_pool: pool.into(),
        max_peers: 100,
        weight: 1,
        labels: vec![],
        agent: client,
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    state: AppState,
    nodes: Arc<TestNodes>,
}

impl Fixture {
    async fn new(nodes: Vec<PeerNode>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(
            dir.path(),
            &[("peers-a", "10.8.0.0/24"), ("peers-b", "10.9.0.0/24")],
        )
        .await;
        let nodes = Arc::new(TestNodes(Mutex::new(nodes)));
        let mut state = AppState::new(store);
        state.peer_nodes = nodes.clone();
        Fixture { dir, state, nodes }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    async fn create(&self, body: Value) -> (StatusCode, Value) {
        self.call("POST", "/api/v1/peers", Some(ADMIN), Some(body))
            .await
    }

    /// Held addresses of a pool, as its counters say.
    fn allocated(&self, pool: &str) -> u64 {
        self.state.store.read(|r| r.pool(pool)).unwrap().allocated
    }

    fn peer_count(&self) -> usize {
        self.state.store.read(|r| r.peers()).unwrap().len()
    }

    fn status_of(&self, ip: &str) -> Status {
        let ip: IpAddr = ip.parse().unwrap();
        self.state.store.read(|r| r.address(ip)).unwrap().status
    }
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn every_route_needs_a_token_and_writes_need_a_write_token() {
    let (url, _) = agent("node-a", "a").await;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    let (status, _) = f.create(json!({"name": "laptop"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let routes = [
        ("GET", "/api/v1/peers"),
        ("GET", "/api/v1/peers/laptop"),
        ("POST", "/api/v1/peers"),
        ("DELETE", "/api/v1/peers/laptop"),
    ];
    for (method, uri) in routes {
        let body = (method == "POST").then(|| json!({"name": "phone"}));
        let (status, _) = f.call(method, uri, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        let (status, _) = f.call(method, uri, Some("not-a-token"), body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        let (status, _) = f.call(method, uri, Some(VIEWER), body).await;
        let expected = if method == "GET" {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(status, expected, "{method} {uri} as a viewer");
    }
    assert_eq!(f.peer_count(), 1);
    let (status, _) = f
        .call("DELETE", "/api/v1/peers/laptop", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_peer_is_created_on_its_node_and_deleted_from_it() {
    let (url, agent_state) = agent("node-a", "a").await;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    let (status, body) = f.create(json!({"name": "laptop", "node": "node-a"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["peer"]["node"], "node-a");
    assert_eq!(body["peer"]["address"], "10.8.0.2");
    let key = PublicKey::from_base64(body["peer"]["public_key"].as_str().unwrap()).unwrap();
    {
        let st = agent_state.lock().unwrap();
        let iface = st.interface.as_ref().unwrap();
        assert_eq!(iface.address.to_string(), "10.8.0.1/24");
        assert_eq!(iface.listen_port, 51820);
        assert_eq!(
            st.peers[&key].allowed_ips,
            vec!["10.8.0.2/32".parse::<ipnet::IpNet>().unwrap()]
        );
    }
    let private = body["private_key"].as_str().unwrap();
    let config = body["config"].as_str().unwrap();
    assert!(
        config.contains(&format!("PrivateKey = {private}")),
        "{config}"
    );
    assert!(config.contains("Address = 10.8.0.2/24"));
    assert!(config.contains(&format!("PublicKey = {NODE_KEY}")));
    assert!(config.contains("Endpoint = node-a.example.net:51820"));
    assert!(config.contains("AllowedIPs = 10.8.0.0/24"));
    assert!(body["qr_svg"].as_str().unwrap().contains("<svg"));
    assert_eq!(f.status_of("10.8.0.2"), Status::Allocated);

    let (status, one) = f
        .call("GET", "/api/v1/peers/laptop", Some(VIEWER), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, body["peer"]);
    let (_, list) = f.call("GET", "/api/v1/peers", Some(VIEWER), None).await;
    assert_eq!(list["items"], json!([body["peer"]]));

    let (status, _) = f
        .call("DELETE", "/api/v1/peers/laptop", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(agent_state.lock().unwrap().peers.is_empty());
    assert_eq!(f.status_of("10.8.0.2"), Status::Available);
    assert_eq!(f.peer_count(), 0);
    let (status, _) = f
        .call("GET", "/api/v1/peers/laptop", Some(VIEWER), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_supplied_public_key_is_used_and_no_private_key_is_returned() {
    let (url, agent_state) = agent("node-a", "a").await;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    let mine = PublicKey([5; 32]);
    let (status, body) = f
        .create(json!({"name": "laptop", "public_key": mine.to_base64()}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["peer"]["public_key"], mine.to_base64());
    assert!(body.get("private_key").is_none());
    assert!(body.get("qr_svg").is_none());
    assert!(!body["config"].as_str().unwrap().contains("\nPrivateKey ="));
    assert!(agent_state.lock().unwrap().peers.contains_key(&mine));
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let (url, agent_state) = agent("node-a", "a").await;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    let cases = [
        (
            json!({"name": "no spaces"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "peer name",
        ),
        (
            json!({"name": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "peer name",
        ),
        (
            json!({"name": "a".repeat(65)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "peer name",
        ),
        (
            json!({"name": "x", "node": "nowhere"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "nowhere",
        ),
        (
            json!({"name": "x", "public_key": "c2hvcnQ="}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "public key",
        ),
        (
            json!({"name": "x", "public_key": "not base64!"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "public key",
        ),
        (
            json!({"name": "x", "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
    ];
    for (body, status, says) in cases {
        let (got, answer) = f.create(body.clone()).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert!(message(&answer).contains(says), "{body} -> {answer}");
    }
    let (got, _) = f.call("POST", "/api/v1/peers", Some(ADMIN), None).await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert_eq!(f.peer_count(), 0);
    assert_eq!(f.allocated("peers-a"), 0);
    assert!(agent_state.lock().unwrap().interface.is_none());

    // A taken name or key: 409, and the first peer is untouched.
    let (status, first) = f.create(json!({"name": "laptop"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = f.create(json!({"name": "laptop"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let key = first["peer"]["public_key"].clone();
    let (status, answer) = f.create(json!({"name": "phone", "public_key": key})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(message(&answer).contains("laptop"), "{answer}");
    assert_eq!(f.peer_count(), 1);
    assert_eq!(f.allocated("peers-a"), 1);
    assert_eq!(agent_state.lock().unwrap().peers.len(), 1);
}

/// Creates a peer on `node`, expects the agent to fail, and checks nothing of it remains.
async fn assert_rolled_back(f: &Fixture, node: &str, says: &str) {
    let (status, answer) = f.create(json!({"name": "laptop", "node": node})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert_eq!(answer["error"]["code"], "agent_failed");
    let msg = message(&answer);
    assert!(msg.contains(&format!("{node:?}")), "{msg}");
    assert!(msg.contains(says), "{msg}");
    assert!(msg.contains("address was released"), "{msg}");
    assert_eq!(f.peer_count(), 0);
    assert_eq!(f.allocated("peers-a"), 0);
    assert_eq!(f.status_of("10.8.0.2"), Status::Available);
    // The address can be taken again.
    let req = crate::store::AllocationRequest {
        address: Some("10.8.0.2".parse().unwrap()),
        ..Default::default()
    };
    let again = f
        .state
        .store
        .write(move |w| w.allocate("peers-a", &req, None, "t"))
        .await
        .unwrap();
    assert_eq!(again.status, Status::Allocated);
}

#[tokio::test]
async fn an_unreachable_agent_rolls_the_peer_back() {
    let url = closed_port().await;
    let f = Fixture::new(vec![node("dead", url, "a", "peers-a", true)]).await;
    assert_rolled_back(&f, "dead", "unreachable").await;
}

#[tokio::test]
async fn an_agent_with_another_secret_rolls_the_peer_back() {
    let (url, agent_state) = agent("node-a", "other").await;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    assert_rolled_back(&f, "node-a", "refused").await;
    assert!(agent_state.lock().unwrap().interface.is_none());
}

#[tokio::test]
async fn a_refusal_after_the_interface_is_up_rolls_the_peer_back_with_the_agents_reason() {
    let (url, agent_state) = agent("node-a", "a").await;
    agent_state.lock().unwrap().refuse_peers = true;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    assert_rolled_back(
        &f,
        "node-a",
        "409: too_many_peers: the interface holds its maximum",
    )
    .await;
    assert!(agent_state.lock().unwrap().interface.is_some());
}

#[tokio::test]
async fn a_forged_answer_rolls_the_peer_back() {
    let url = forger("node-a").await;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    assert_rolled_back(&f, "node-a", "not trusted").await;
}

#[tokio::test]
async fn auto_without_an_eligible_node_says_why() {
    let f = Fixture::new(vec![]).await;
    let (status, answer) = f.create(json!({"name": "laptop"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "no_eligible_node");
    assert!(
        message(&answer).contains("no node is registered"),
        "{answer}"
    );

    let url = closed_port().await;
    let mut off = node("node-a", url.clone(), "a", "peers-a", false);
    let mut disabled = node("node-b", url.clone(), "a", "peers-b", true);
    disabled.enabled = false;
    *f.nodes.0.lock().unwrap() = vec![off.clone(), disabled.clone()];
    let (status, answer) = f.create(json!({"name": "laptop", "node": "auto"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        message(&answer).contains("no enabled node is online (node-a: offline)"),
        "{answer}"
    );

    off.online = true;
    off.max_peers = 0;
    *f.nodes.0.lock().unwrap() = vec![off, disabled.clone()];
    let (_, answer) = f.create(json!({"name": "laptop"})).await;
    assert!(
        message(&answer).contains("every online node is at capacity (node-a: 0/0 peers)"),
        "{answer}"
    );

    let (status, answer) = f.create(json!({"name": "laptop", "node": "node-a"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "node_full");

    *f.nodes.0.lock().unwrap() = vec![disabled];
    let (_, answer) = f.create(json!({"name": "laptop"})).await;
    assert!(
        message(&answer).contains("none of the 1 registered nodes is enabled"),
        "{answer}"
    );
    let (status, answer) = f.create(json!({"name": "laptop", "node": "node-b"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "node_disabled");
    assert_eq!(f.peer_count(), 0);
    assert_eq!(f.allocated("peers-a") + f.allocated("peers-b"), 0);
}

#[tokio::test]
async fn auto_spreads_peers_by_load_and_skips_offline_nodes() {
    let (url_a, st_a) = agent("node-a", "a").await;
    let (url_b, st_b) = agent("node-b", "b").await;
    let dead = closed_port().await;
    let f = Fixture::new(vec![
        node("node-a", url_a, "a", "peers-a", true),
        node("node-b", url_b, "b", "peers-b", true),
        node("node-c", dead, "c", "peers-b", false),
    ])
    .await;
    for i in 0..4 {
        let (status, body) = f.create(json!({"name": format!("p{i}")})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_eq!(st_a.lock().unwrap().peers.len(), 2);
    assert_eq!(st_b.lock().unwrap().peers.len(), 2);
    assert_eq!(f.allocated("peers-a"), 2);
    assert_eq!(f.allocated("peers-b"), 2);
}

#[tokio::test]
async fn delete_is_refused_while_the_agent_is_unreachable_unless_forced() {
    let (url, _) = agent("node-a", "a").await;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    let (status, _) = f.create(json!({"name": "laptop"})).await;
    assert_eq!(status, StatusCode::CREATED);
    // The node's agent goes away.
    let dead = closed_port().await;
    *f.nodes.0.lock().unwrap() = vec![node("node-a", dead, "a", "peers-a", false)];
    let (status, answer) = f
        .call("DELETE", "/api/v1/peers/laptop", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert!(message(&answer).contains("force=true"), "{answer}");
    assert_eq!(f.peer_count(), 1);
    assert_eq!(f.status_of("10.8.0.2"), Status::Allocated);
    let (status, _) = f
        .call(
            "DELETE",
            "/api/v1/peers/laptop?force=true",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(f.peer_count(), 0);
    assert_eq!(f.status_of("10.8.0.2"), Status::Available);
}

#[tokio::test]
async fn a_peer_the_agent_no_longer_has_is_deleted() {
    let (url, st) = agent("node-a", "a").await;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    let (status, _) = f.create(json!({"name": "laptop"})).await;
    assert_eq!(status, StatusCode::CREATED);
    st.lock().unwrap().peers.clear();
    let (status, _) = f
        .call("DELETE", "/api/v1/peers/laptop", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(st.lock().unwrap().deletes, 1);
    assert_eq!(f.peer_count(), 0);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_private_key_reaches_the_database_file_or_the_api() {
    let (url, _) = agent("node-a", "a").await;
    let f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    let mut keys = Vec::new();
    for i in 0..3 {
        let (status, body) = f.create(json!({"name": format!("p{i}")})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let private = body["private_key"].as_str().unwrap().to_string();
        let public = body["peer"]["public_key"].as_str().unwrap().to_string();
        keys.push((private, public));
    }
    let (_, list) = f.call("GET", "/api/v1/peers", Some(VIEWER), None).await;
    let (_, one) = f.call("GET", "/api/v1/peers/p0", Some(VIEWER), None).await;
    let db_path = f.dir.path().join("db.redb");
    // The database file and its journal: a recent change may be only in the journal yet.
    let mut db = std::fs::read(&db_path).unwrap();
    db.extend(std::fs::read(crate::store::journal_path(&db_path)).unwrap());
    use base64::Engine;
    for (private, public) in &keys {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(private)
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert!(
            !contains(&db, private.as_bytes()),
            "base64 private key in the db"
        );
        assert!(!contains(&db, &raw), "raw private key in the db");
        assert!(!contains(&db, hex::encode(&raw).as_bytes()));
        assert!(!list.to_string().contains(private.as_str()));
        assert!(!one.to_string().contains(private.as_str()));
        // The search finds what is there: the public key is stored.
        let public_raw = base64::engine::general_purpose::STANDARD
            .decode(public)
            .unwrap();
        assert!(contains(&db, &public_raw) || contains(&db, public.as_bytes()));
    }
}

#[tokio::test]
async fn a_failed_placement_plugin_falls_back_to_least_loaded_and_says_so() {
    let (url, _) = agent("node-a", "a").await;
    let mut f = Fixture::new(vec![node("node-a", url, "a", "peers-a", true)]).await;
    f.state.placement = crate::placement::Strategy::Plugin("by-region".into());
    let (status, body) = f.create(json!({"name": "laptop"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["peer"]["node"], "node-a");
    let why = body["placement_fallback"].as_str().unwrap();
    assert!(why.contains("by-region"), "{why}");
}
