//! Router tests of the node pages: who sees what, registering shows the secret once (never
//! cached), a refused form keeps what was typed, and the card buttons test, switch and
//! delete.

use super::*;
use crate::controller::nodes::Registry;
use crate::secretbox::SecretBox;

impl Fixture {
    /// The node registry, and a pool `lan` for peers.
    async fn with_registry(mut self) -> Fixture {
        let spec = PoolSpec {
            name: "lan".into(),
            cidr: "10.8.0.0/24".parse().unwrap(),
            description: None,
            reserve_gateway: true,
            static_ranges: vec![],
        };
        self.state
            .store
            .write(move |w| w.create_pool(&spec, "test"))
            .await
            .unwrap();
        let registry = Registry::new(
            self.state.store.clone(),
            SecretBox::from_key([9; 32]),
            std::time::Duration::from_secs(2),
        );
        self.state.peer_nodes = Arc::new(registry.clone());
        self.state.nodes = Some(registry);
        self
    }

    fn node_count(&self) -> usize {
        self.state.store.read(|r| r.nodes()).unwrap().len()
    }
}

/// A loopback port where nothing listens.
fn closed_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    format!("http%3A%2F%2F127.0.0.1%3A{port}%2F")
}

#[tokio::test]
async fn an_anonymous_visitor_is_sent_to_the_login() {
    let f = Fixture::new().with_registry().await;
    let resp = f.get("/nodes", None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2Fnodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_registers_tests_disables_and_deletes_a_node() {
    let f = Fixture::new().with_registry().await;
    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    let csrf = f.session_csrf(&admin).await;
    let body = format!(
        "csrf={csrf}&name=edge-1&agent_url={}&endpoint_host=edge-1.example.net&listen_port=51820&peer_pool=lan&max_peers=10&weight=2&labels=region%3Deu",
        closed_url()
    );
    let resp = f.post_form("/nodes", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    let html = text(resp).await;
    assert!(html.contains("Save this now."));
    let secret = html
        .split("id=\"secret\" class=\"secret\" type=\"text\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(secret.len(), 64);
    assert!(html.contains("--node-id edge-1"));

    let list = text(f.get("/nodes", Some(&admin)).await).await;
    assert!(list.contains("edge-1.example.net:51820"));
    assert!(list.contains("0 / 10") && list.contains("region=eu"));
    assert!(list.contains("node-unknown"));
    assert!(!list.contains(&secret), "the secret is shown once");

    let resp = f
        .post_form("/nodes/edge-1/test", &admin, &format!("csrf={csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let list = text(f.get("/nodes", Some(&admin)).await).await;
    assert!(list.contains("node-offline"), "the test found no agent");

    f.post_form(
        "/nodes/edge-1/enabled",
        &admin,
        &format!("csrf={csrf}&enabled=false"),
    )
    .await;
    let list = text(f.get("/nodes", Some(&admin)).await).await;
    assert!(list.contains("node-disabled") && list.contains(">Enable<"));

    let resp = f
        .post_form("/nodes/edge-1/delete", &admin, &format!("csrf={csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(f.node_count(), 0);
}

#[tokio::test]
async fn a_refused_form_keeps_what_was_typed_and_changes_nothing() {
    let f = Fixture::new().with_registry().await;
    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    let csrf = f.session_csrf(&admin).await;
    let body = format!(
        "csrf={csrf}&name=edge-1&agent_url=ftp%3A%2F%2Fx&endpoint_host=edge.example.net&listen_port=51820&peer_pool=lan&max_peers=10&weight=1&labels="
    );
    let resp = f.post_form("/nodes", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    assert!(html.contains("id=\"agent_url-error\""), "{html}");
    assert!(html.contains("value=\"edge.example.net\""));
    let body = format!(
        "csrf={csrf}&name=edge-1&agent_url={}&endpoint_host=edge.example.net&listen_port=seventy&peer_pool=lan&max_peers=10&weight=1&labels=",
        closed_url()
    );
    let resp = f.post_form("/nodes", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text(resp).await.contains("id=\"listen_port-error\""));
    assert_eq!(f.node_count(), 0);
}

#[tokio::test]
async fn a_viewer_sees_the_cards_but_no_buttons() {
    let f = Fixture::new().with_registry().await;
    let reg = f.state.nodes.clone().unwrap();
    let spec = crate::store::NodeSpec {
        name: "edge-1".into(),
        agent_url: "http://127.0.0.1:9/".into(),
        endpoint_host: "edge.example.net".into(),
        listen_port: 51820,
        peer_pool: "lan".into(),
        max_peers: 4,
        weight: 1,
        labels: vec![],
        enabled: true,
    };
    reg.register(spec, "test").await.unwrap();
    f.user("vic", Role::Viewer).await;
    let viewer = f.login("vic").await;
    let html = text(f.get("/nodes", Some(&viewer)).await).await;
    assert!(html.contains("edge-1") && html.contains("never"));
    assert!(!html.contains("Test connection") && !html.contains("New node"));
    assert_eq!(
        f.get("/nodes/new", Some(&viewer)).await.status(),
        StatusCode::FORBIDDEN
    );
    let csrf = f.session_csrf(&viewer).await;
    let resp = f
        .post_form("/nodes/edge-1/delete", &viewer, &format!("csrf={csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.node_count(), 1);
}
