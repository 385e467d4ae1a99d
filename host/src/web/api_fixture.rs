//! The API test fixture shared by the node and mesh tests: a store with a peer pool and an
//! overlay pool, an admin and a viewer token, a registry, and real agents on loopback.

use crate::controller::nodes::Registry;
use crate::protocol::{MemoryNonces, ReplayGuard, Secret, Secrets};
use crate::secretbox::SecretBox;
use crate::store::{PoolSpec, Store};
use crate::web::{AppState, router};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

pub const ADMIN: &str = "admin-secret-token-0123456789";
pub const VIEWER: &str = "viewer-secret-token-0123456789";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub state: AppState,
}

/// A store in `dir` with these pools (name, CIDR) and the admin and viewer tokens.
pub async fn store_with(dir: &std::path::Path, pools: &[(&str, &str)]) -> Store {
    let store = Store::open(&dir.join("db.redb")).unwrap();
    for (name, cidr) in pools {
        let spec = PoolSpec {
            name: name.to_string(),
            cidr: cidr.parse().unwrap(),
            description: None,
            reserve_gateway: true,
            static_ranges: vec![],
        };
        store
            .write(move |w| w.create_pool(&spec, "test"))
            .await
            .unwrap();
    }
    store
        .write(|w| w.create_token("admin", ADMIN, false))
        .await
        .unwrap();
    store
        .write(|w| w.create_token("viewer", VIEWER, true))
        .await
        .unwrap();
    store
}

impl Fixture {
    pub async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(
            dir.path(),
            &[("peers-a", "10.8.0.0/24"), ("overlay", "100.64.0.0/24")],
        )
        .await;
        let registry = Registry::new(
            store.clone(),
            SecretBox::open_or_create(dir.path()).unwrap(),
            Duration::from_secs(2),
        );
        let mut state = AppState::new(store);
        state.peer_nodes = Arc::new(registry.clone());
        state.nodes = Some(registry);
        Fixture { dir, state }
    }

    pub async fn call(
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
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, uri, Some(ADMIN), body).await
    }

    pub fn registry(&self) -> &Registry {
        self.state.nodes.as_ref().unwrap()
    }
}

pub fn request(name: &str, agent_url: &str) -> Value {
    json!({
        "name": name,
        "agent_url": agent_url,
        "endpoint_host": format!("{name}.example.net"),
        "peer_pool": "peers-a",
        "labels": {"region": "eu-west"},
    })
}

/// A real agent router for `node`, keyed with the secret registration gave, on a loopback
/// port. The server ends with the test's runtime.
pub async fn agent(node: &str, secret: &str) -> String {
    let guard = Arc::new(ReplayGuard::new(
        Secrets::one(Secret::from_file_contents(secret.as_bytes()).unwrap()),
        node,
        MemoryNonces::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    let plane = crate::dataplane::DataPlane::open(dir.clone(), "weft0".into()).unwrap();
    let file = crate::agent::SecretFile::new(dir.join("secret"));
    tokio::spawn(
        async move { axum::serve(listener, crate::agent::router(guard, plane, file)).await },
    );
    format!("http://{addr}/")
}

/// A loopback URL where nothing listens.
pub fn closed_port() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/")
}

/// The access rule every API route states: no token is a 401; a viewer's token reads (GET)
/// and is refused every write with a 403. `body` gives each route's request body.
pub async fn assert_access(
    f: &Fixture,
    routes: &[(&str, &str)],
    body: impl Fn(&str, &str) -> Option<Value>,
) {
    for &(method, uri) in routes {
        let (status, _) = f.call(method, uri, None, body(method, uri)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        let (status, _) = f.call(method, uri, Some(VIEWER), body(method, uri)).await;
        let expected = if method == "GET" {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(status, expected, "{method} {uri} as a viewer");
    }
}
