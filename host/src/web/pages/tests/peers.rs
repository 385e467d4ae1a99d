//! Router tests of the peer pages: who sees what, a refused form keeps what was typed and
//! changes nothing, an agent's failure is shown with the node's name, and a created peer's
//! file and QR code are shown once and never cached.

use super::*;
use crate::web::peers::tests::{TestNodes, agent, closed_port, node};

impl Fixture {
    /// A pool `peers-a` and the nodes peers may go to.
    async fn with_nodes(self, nodes: Vec<crate::controller::peers::PeerNode>) -> Fixture {
        let spec = PoolSpec {
            name: "peers-a".into(),
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
        let mut f = self;
        f.state.peer_nodes = Arc::new(TestNodes(Mutex::new(nodes)));
        f
    }

    fn peers(&self) -> usize {
        self.state.store.read(|r| r.peers()).unwrap().len()
    }

    fn allocated(&self) -> u64 {
        self.state
            .store
            .read(|r| r.pool("peers-a"))
            .unwrap()
            .allocated
    }
}

#[tokio::test]
async fn an_anonymous_visitor_is_sent_to_the_login() {
    let f = Fixture::new();
    let resp = f.get("/peers", None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2Fpeers");
}

#[tokio::test]
async fn a_viewer_sees_the_list_but_not_the_form() {
    let f = Fixture::new().with_nodes(vec![]).await;
    f.user("vic", Role::Viewer).await;
    let viewer = f.login("vic").await;
    let html = text(f.get("/peers", Some(&viewer)).await).await;
    assert!(html.contains("No peers yet."));
    assert!(!html.contains("New peer"));
    assert_eq!(
        f.get("/peers/new", Some(&viewer)).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_peer_is_shown_once_with_its_file_and_qr_code_and_never_cached() {
    let (url, _agent) = agent("n1", "k1").await;
    let f = Fixture::new()
        .with_nodes(vec![node("n1", url, "k1", "peers-a", true)])
        .await;
    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    let form_html = text(f.get("/peers/new", Some(&admin)).await).await;
    assert!(form_html.contains("n1 (online)"), "the node is offered");
    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form(
            "/peers",
            &admin,
            &format!("csrf={csrf}&name=laptop&node=auto&public_key=&dns="),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    let html = text(resp).await;
    assert!(html.contains("Save this now."));
    assert!(html.contains("PrivateKey = "));
    assert!(html.contains("src=\"data:image/svg+xml;base64,"));
    // The list has it, with its node as a badge, and no private key anywhere.
    let list = text(f.get("/peers", Some(&admin)).await).await;
    assert!(list.contains("laptop") && list.contains("node-badge"));
    assert!(list.contains("not polled yet"));
    assert!(!list.contains("PrivateKey"));
    let one = text(f.get("/peers/laptop", Some(&admin)).await).await;
    assert!(one.contains("10.8.0."));
}

#[tokio::test]
async fn a_refused_form_keeps_what_was_typed_and_changes_nothing() {
    let f = Fixture::new().with_nodes(vec![]).await;
    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form(
            "/peers",
            &admin,
            &format!("csrf={csrf}&name=phone&node=auto&public_key=not-a-key&dns="),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    assert!(html.contains("id=\"public_key-error\""));
    assert!(html.contains("value=\"phone\""), "the name is kept");
    let resp = f
        .post_form(
            "/peers",
            &admin,
            &format!("csrf={csrf}&name=phone&node=auto&public_key=&dns="),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let html = text(resp).await;
    assert!(html.contains("id=\"node-error\""));
    assert!(html.contains("no node is registered"));
    assert_eq!(f.peers(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agent_is_named_and_the_address_released() {
    let url = closed_port().await;
    let f = Fixture::new()
        .with_nodes(vec![node("dead", url, "k", "peers-a", true)])
        .await;
    f.user("ada", Role::Admin).await;
    let admin = f.login("ada").await;
    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form(
            "/peers",
            &admin,
            &format!("csrf={csrf}&name=phone&node=dead&public_key=&dns="),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let html = text(resp).await;
    assert!(html.contains("node &#34;dead&#34;") || html.contains("node \"dead\""));
    assert!(html.contains("unreachable"));
    assert_eq!(f.peers(), 0);
    assert_eq!(f.allocated(), 0);
}

#[test]
fn transfer_reads_like_wg_show() {
    use crate::web::pages::peers::bytes;
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(1536), "1.50 KiB");
    assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.00 GiB");
    assert_eq!(crate::web::pages::relative(42), "42 s ago");
    assert_eq!(crate::web::pages::relative(7200), "2 h ago");
}
