//! Router tests of the node pages: who sees what, registering shows the secret once (never
//! cached), a refused form keeps what was typed, the card buttons test, switch and delete,
//! and a node's own page shows its history.

use super::*;
use crate::controller::nodes::Registry;
use crate::secretbox::SecretBox;

impl Fixture {
    /// The node registry, and a pool `lan` for peers.
    pub(super) async fn with_registry(mut self) -> Fixture {
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

    /// Node `name` in pool `lan`, registered by `test`, with `labels`; its secret.
    async fn node(&self, name: &str, labels: Vec<(String, String)>) -> String {
        let spec = crate::store::NodeSpec {
            name: name.into(),
            agent_url: "http://127.0.0.1:9/".into(),
            endpoint_host: "edge.example.net".into(),
            listen_port: 51820,
            peer_pool: "lan".into(),
            max_peers: 4,
            weight: 1,
            labels,
            enabled: true,
        };
        let reg = self.state.nodes.clone().unwrap();
        reg.register(spec, "test").await.unwrap().secret
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
    f.node("edge-1", vec![]).await;
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

#[tokio::test]
async fn a_nodes_page_needs_a_login_and_an_unknown_node_is_404() {
    let f = Fixture::new().with_registry().await;
    f.node("edge-1", vec![]).await;
    let resp = f.get("/nodes/edge-1", None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2Fnodes%2Fedge-1");
    f.user("vic", Role::Viewer).await;
    let viewer = f.login("vic").await;
    assert_eq!(
        f.get("/nodes/ghost", Some(&viewer)).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_viewer_reads_a_nodes_page_and_history_without_buttons() {
    let f = Fixture::new().with_registry().await;
    f.node("edge-1", vec![]).await;
    f.user("vic", Role::Viewer).await;
    let viewer = f.login("vic").await;
    let list = text(f.get("/nodes", Some(&viewer)).await).await;
    assert!(
        list.contains("href=\"/nodes/edge-1\""),
        "the card links to its page"
    );
    let resp = f.get("/nodes/edge-1", Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    assert!(html.contains("edge.example.net:51820"));
    assert!(
        html.contains("Registered</span> by <strong>test</strong>"),
        "{html}"
    );
    assert!(!html.contains("Test connection") && !html.contains("/edit\""));
}

#[tokio::test]
async fn edits_and_switches_made_on_the_pages_show_in_the_history_newest_first() {
    let f = Fixture::new().with_registry().await;
    f.node("edge-1", vec![]).await;
    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    let csrf = f.session_csrf(&admin).await;
    let body = format!(
        "csrf={csrf}&agent_url=http%3A%2F%2F127.0.0.1%3A9%2F&endpoint_host=edge.example.net&listen_port=51820&peer_pool=lan&max_peers=8&weight=1&labels="
    );
    let resp = f.post_form("/nodes/edge-1/edit", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // Saved again unchanged: nothing to record.
    f.post_form("/nodes/edge-1/edit", &admin, &body).await;
    f.post_form(
        "/nodes/edge-1/enabled",
        &admin,
        &format!("csrf={csrf}&enabled=false"),
    )
    .await;
    let html = text(f.get("/nodes/edge-1", Some(&admin)).await).await;
    let order: Vec<_> = [
        "Disabled</span> by <strong>ada",
        "Edited</span> by <strong>ada",
        "Registered</span> by <strong>test",
    ]
    .iter()
    .map(|s| html.find(s).unwrap_or_else(|| panic!("{s} in {html}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "newest first");
    assert_eq!(html.matches("Edited</span>").count(), 1);
    assert!(html.contains("Test connection"), "an admin has the buttons");
}

#[tokio::test]
async fn an_enrolled_nodes_page_names_the_token_its_maker_and_the_address_escaped() {
    let f = Fixture::new().with_registry().await;
    let maker = "<script>alert(1)</script>";
    f.state
        .store
        .write(move |w| {
            w.create_join_token(
                "wj_x",
                "lan",
                &[],
                1,
                std::time::Duration::from_secs(60),
                maker,
            )
        })
        .await
        .unwrap();
    let spec = crate::store::NodeSpec {
        name: "edge-2".into(),
        agent_url: "http://127.0.0.1:9/".into(),
        endpoint_host: "edge.example.net".into(),
        listen_port: 51820,
        peer_pool: String::new(),
        max_peers: 4,
        weight: 1,
        labels: vec![],
        enabled: true,
    };
    let reg = f.state.nodes.clone().unwrap();
    reg.enrol("wj_x".into(), spec, "198.51.100.7".into())
        .await
        .unwrap()
        .unwrap();
    f.user("vic", Role::Viewer).await;
    let viewer = f.login("vic").await;
    let html = text(f.get("/nodes/edge-2", Some(&viewer)).await).await;
    assert!(
        html.contains("Enrolled</span> by <strong>join-token:"),
        "{html}"
    );
    assert!(html.contains("<code>198.51.100.7</code>"));
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    assert!(!html.contains("<script"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_rotates_a_nodes_secret_from_its_page_and_a_viewer_cannot() {
    let f = Fixture::new().with_registry().await;
    let reg = f.state.nodes.clone().unwrap();
    let secret = f.node("edge-1", vec![]).await;
    let url = crate::web::api_fixture::agent("edge-1", &secret).await;
    let patch = crate::store::NodePatch {
        agent_url: Some(url),
        ..Default::default()
    };
    f.state
        .store
        .write(move |w| w.update_node("edge-1", &patch, "test"))
        .await
        .unwrap();
    let sealed = |f: &Fixture| {
        f.state
            .store
            .read(|r| r.node("edge-1"))
            .unwrap()
            .unwrap()
            .secret
    };
    let before = sealed(&f);

    f.user("vic", Role::Viewer).await;
    let viewer = f.login("vic").await;
    let page = text(f.get("/nodes/edge-1", Some(&viewer)).await).await;
    assert!(!page.contains("Rotate secret"));
    let csrf = f.session_csrf(&viewer).await;
    let resp = f
        .post_form(
            "/nodes/edge-1/rotate-secret",
            &viewer,
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(sealed(&f), before, "a viewer changed nothing");

    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    assert!(
        text(f.get("/nodes/edge-1", Some(&admin)).await)
            .await
            .contains("Rotate secret")
    );
    let resp = f
        .post_form("/nodes/edge-1/rotate-secret", &admin, "csrf=wrong")
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(sealed(&f), before, "no CSRF token, nothing changed");

    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form(
            "/nodes/edge-1/rotate-secret",
            &admin,
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/nodes/edge-1");
    assert!(
        flash_of(&resp).contains("has a new secret"),
        "the flash says so"
    );
    assert_ne!(sealed(&f), before);
    let html = text(f.get("/nodes/edge-1", Some(&admin)).await).await;
    assert!(
        html.contains("Secret rotated</span> by <strong>ada"),
        "{html}"
    );
    assert!(
        reg.test("edge-1").await.unwrap().result.is_ok(),
        "still reachable"
    );
}
