//! Router tests of the join tokens page: who may read and write, creating shows the secret
//! and the join command once (never cached), a refused form keeps what was typed with each
//! error by its field, revoking, CSRF, and escaping.

use super::*;
use crate::store::JoinToken;

impl Fixture {
    fn join_tokens(&self) -> Vec<JoinToken> {
        self.state.store.read(|r| r.join_tokens()).unwrap()
    }

    /// A join token made in the store, as the CLI makes them.
    async fn join_token(&self, secret: &'static str, labels: Vec<(String, String)>) -> JoinToken {
        self.state
            .store
            .write(move |w| {
                w.create_join_token(
                    secret,
                    "lan",
                    &labels,
                    2,
                    std::time::Duration::from_secs(3600),
                    "cli",
                )
            })
            .await
            .unwrap()
    }

    /// An admin (`ada`) and a viewer (`vic`), signed in: their cookies and CSRF tokens.
    async fn token_admin_and_viewer(&self) -> ((String, String), (String, String)) {
        self.user("ada", Role::Admin).await;
        self.user("vic", Role::Viewer).await;
        let admin = self.login("ada").await;
        let viewer = self.login("vic").await;
        let (a, v) = (
            self.session_csrf(&admin).await,
            self.session_csrf(&viewer).await,
        );
        ((admin, a), (viewer, v))
    }
}

fn create_body(csrf: &str, pool: &str, labels: &str, expires: &str, uses: &str) -> String {
    let enc = |s: &str| crate::web::pages::pools::url_part(s);
    format!(
        "csrf={csrf}&pool={}&labels={}&expires={}&uses={}",
        enc(pool),
        enc(labels),
        enc(expires),
        enc(uses)
    )
}

/// The secret on the created page.
fn secret_in(html: &str) -> String {
    html.split("id=\"secret\" class=\"secret\" type=\"text\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn an_anonymous_visitor_is_sent_to_the_login_and_changes_nothing() {
    let f = Fixture::new().with_registry().await;
    let token = f.join_token("wj_a", vec![]).await;
    let resp = f.get("/join-tokens", None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2Fjoin-tokens");
    for path in [
        "/join-tokens".to_string(),
        format!("/join-tokens/{}/revoke", token.id),
    ] {
        let body = create_body("x", "lan", "", "1h", "1");
        let resp = f.post_form(&path, "", &body).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&resp).starts_with("/login"));
    }
    assert_eq!(f.join_tokens(), vec![token]);
}

#[tokio::test]
async fn a_viewer_reads_the_tokens_but_every_write_is_403_and_changes_nothing() {
    let f = Fixture::new().with_registry().await;
    let token = f.join_token("wj_a", vec![]).await;
    let (_, (viewer, csrf)) = f.token_admin_and_viewer().await;
    let resp = f.get("/join-tokens", Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    assert!(html.contains(&token.id) && html.contains("2 of 2"));
    assert!(!html.contains("New join token") && !html.contains("/revoke\""));
    let nodes = text(f.get("/nodes", Some(&viewer)).await).await;
    assert!(
        nodes.contains("href=\"/join-tokens\""),
        "linked from the nodes page"
    );

    let resp = f
        .post_form(
            "/join-tokens",
            &viewer,
            &create_body(&csrf, "lan", "", "1h", "1"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let path = format!("/join-tokens/{}/revoke", token.id);
    let resp = f.post_form(&path, &viewer, &format!("csrf={csrf}")).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        f.join_tokens(),
        vec![token],
        "nothing made, nothing revoked"
    );
}

#[tokio::test]
async fn an_admin_creates_a_token_and_sees_its_secret_and_join_command_once() {
    let f = Fixture::new().with_registry().await;
    let ((admin, csrf), _) = f.token_admin_and_viewer().await;
    let body = create_body(&csrf, "lan", "region=eu, tier=edge", "2d", "3");
    let resp = f.post_form("/join-tokens", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    let html = text(resp).await;
    assert!(html.contains("Save this now."));
    let secret = secret_in(&html);
    assert!(secret.starts_with("wj_") && secret.len() == 67, "{secret}");
    assert!(
        html.contains(&format!(
            "weft agent join http://weft.test/ --token {secret}"
        )),
        "{html}"
    );
    assert!(
        html.contains("plain HTTP"),
        "the page says join wants HTTPS"
    );

    let tokens = f.join_tokens();
    assert_eq!(tokens.len(), 1);
    let t = &tokens[0];
    assert_eq!((t.uses, t.created_by.as_str()), (3, "ada"));
    assert_eq!(
        t.labels,
        vec![
            ("region".to_string(), "eu".to_string()),
            ("tier".to_string(), "edge".to_string())
        ]
    );
    let lifetime = t.expires.as_second() - t.created.as_second();
    assert_eq!(lifetime, 2 * 86_400);

    let list = text(f.get("/join-tokens", Some(&admin)).await).await;
    assert!(list.contains(&t.id) && list.contains("region=eu, tier=edge"));
    assert!(list.contains("3 of 3") && list.contains(">active<"));
    assert!(list.contains(">ada<"));
    assert!(!list.contains(&secret), "the secret is shown once");
    // Only its hash is kept.
    f.state.store.write(|_| Ok(())).await.unwrap();
    let db = std::fs::read(f.dir.path().join("db.redb")).unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

#[tokio::test]
async fn with_https_the_join_command_names_an_https_controller() {
    let mut f = Fixture::new().with_registry().await;
    f.state.secure_cookies = true;
    let ((admin, csrf), _) = f.token_admin_and_viewer().await;
    let body = create_body(&csrf, "lan", "", "1h", "1");
    let html = text(f.post_form("/join-tokens", &admin, &body).await).await;
    assert!(html.contains("weft agent join https://weft.test/ --token wj_"));
    assert!(!html.contains("plain HTTP"));
}

#[tokio::test]
async fn a_refused_form_keeps_what_was_typed_with_each_error_by_its_field() {
    let f = Fixture::new().with_registry().await;
    let ((admin, csrf), _) = f.token_admin_and_viewer().await;
    let body = create_body(&csrf, "lan", "region=eu, oops", "soon", "many");
    let resp = f.post_form("/join-tokens", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    for field in ["labels", "expires", "uses"] {
        assert!(
            html.contains(&format!("id=\"{field}-error\"")),
            "{field}: {html}"
        );
    }
    assert!(html.contains("value=\"region=eu, oops\"") && html.contains("value=\"soon\""));
    assert!(html.contains("value=\"many\""));

    // Refusals the store makes land by their fields too.
    let cases = [
        (
            create_body(&csrf, "nope", "", "1h", "1"),
            StatusCode::NOT_FOUND,
            "pool",
        ),
        (
            create_body(&csrf, "lan", "", "1h", "0"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "uses",
        ),
        (
            create_body(&csrf, "lan", "a b=c", "1h", "1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "labels",
        ),
        (
            create_body(&csrf, "lan", "", "1 month", "1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "expires",
        ),
    ];
    for (body, status, field) in cases {
        let resp = f.post_form("/join-tokens", &admin, &body).await;
        assert_eq!(resp.status(), status, "{body}");
        let html = text(resp).await;
        assert!(
            html.contains(&format!("id=\"{field}-error\"")),
            "{field}: {html}"
        );
    }
    assert!(f.join_tokens().is_empty(), "nothing was made");
}

#[tokio::test]
async fn a_missing_or_wrong_csrf_token_is_403_and_changes_nothing() {
    let f = Fixture::new().with_registry().await;
    let token = f.join_token("wj_a", vec![]).await;
    let ((admin, _), (_, viewer_csrf)) = f.token_admin_and_viewer().await;
    let revoke = format!("/join-tokens/{}/revoke", token.id);
    for csrf in ["", "0000", viewer_csrf.as_str()] {
        let body = create_body(csrf, "lan", "", "1h", "1");
        let resp = f.post_form("/join-tokens", &admin, &body).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "csrf {csrf:?}");
        let resp = f.post_form(&revoke, &admin, &format!("csrf={csrf}")).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "csrf {csrf:?}");
    }
    let resp = f.post_form(&revoke, &admin, "").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "no csrf field");
    assert_eq!(f.join_tokens(), vec![token]);
}

#[tokio::test]
async fn an_admin_revokes_a_token_and_it_shows_revoked_without_a_button() {
    let f = Fixture::new().with_registry().await;
    let token = f.join_token("wj_a", vec![]).await;
    let ((admin, csrf), _) = f.token_admin_and_viewer().await;
    let list = text(f.get("/join-tokens", Some(&admin)).await).await;
    assert!(list.contains("/revoke\""), "a revoke button");
    let path = format!("/join-tokens/{}/revoke", token.id);
    let resp = f.post_form(&path, &admin, &format!("csrf={csrf}")).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/join-tokens");
    assert!(f.join_tokens()[0].revoked);
    let list = text(f.get("/join-tokens", Some(&admin)).await).await;
    assert!(list.contains(">revoked<") && !list.contains("/revoke\""));
    let resp = f
        .post_form(
            "/join-tokens/ffffffffffff/revoke",
            &admin,
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_list_shows_the_nodes_a_token_enrolled_and_from_where() {
    let f = Fixture::new().with_registry().await;
    let token = f.join_token("wj_a", vec![]).await;
    let spec = crate::store::NodeSpec {
        name: "edge-9".into(),
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
    reg.enrol("wj_a".into(), spec, "198.51.100.7".into())
        .await
        .unwrap()
        .unwrap();
    let ((admin, _), _) = f.token_admin_and_viewer().await;
    let list = text(f.get("/join-tokens", Some(&admin)).await).await;
    assert!(list.contains(&token.id) && list.contains("1 of 2"));
    assert!(list.contains("href=\"/nodes/edge-9\""));
    assert!(list.contains("from <code>198.51.100.7</code>"), "{list}");
}

#[tokio::test]
async fn a_label_with_script_comes_back_escaped() {
    let f = Fixture::new().with_registry().await;
    let ((admin, csrf), _) = f.token_admin_and_viewer().await;
    let body = create_body(&csrf, "lan", "x=<script>alert(1)</script>", "1h", "1");
    let resp = f.post_form("/join-tokens", &admin, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created = text(resp).await;
    let list = text(f.get("/join-tokens", Some(&admin)).await).await;
    // Refused, the typed text comes back escaped in the field too.
    let refused = text(
        f.post_form(
            "/join-tokens",
            &admin,
            &create_body(&csrf, "lan", "<script>alert(2)</script>", "1h", "1"),
        )
        .await,
    )
    .await;
    for html in [&created, &list, &refused] {
        assert!(html.contains("&#60;script&#62;alert("), "{html}");
        assert!(!html.contains("<script"));
    }
}
