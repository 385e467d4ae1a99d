//! Router tests of the pages, sessions and CSRF: the whole application through `oneshot`, no
//! socket, with an injected clock.

use crate::store::{PoolSpec, Role, Store, hash_password};
use crate::web::session::{AdminForm, PageAdmin};
use crate::web::{AppState, Clock, router};
use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use axum::routing::post;
use jiff::{SignedDuration, Timestamp};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";

/// A store in a temp dir, and the state over it with a clock the test moves.
struct Fixture {
    dir: tempfile::TempDir,
    state: AppState,
    now: Arc<Mutex<Timestamp>>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        Self::over(dir, store)
    }

    fn over(dir: tempfile::TempDir, store: Store) -> Fixture {
        let now = Arc::new(Mutex::new(Timestamp::from_second(1_800_000_000).unwrap()));
        let mut state = AppState::new(store);
        let n = now.clone();
        state.clock = Clock::new(move || *n.lock().unwrap());
        Fixture { dir, state, now }
    }

    fn advance(&self, d: SignedDuration) {
        let mut now = self.now.lock().unwrap();
        *now += d;
    }

    async fn user(&self, name: &str, role: Role) {
        let (name, hash) = (name.to_string(), hash_password(PASSWORD).unwrap());
        self.state
            .store
            .write(move |w| w.create_user(&name, role, &hash))
            .await
            .unwrap();
    }

    /// The application, plus a test-only admin write so the role and CSRF rules of
    /// [`AdminForm`] are checked before the IPAM pages use them.
    fn app(&self) -> Router {
        self.app_from([192, 0, 2, 1])
    }

    fn app_from(&self, ip: [u8; 4]) -> Router {
        let probe = Router::new()
            .route("/test/admin-write", post(admin_write))
            .route("/test/admin-read", axum::routing::get(admin_read))
            .with_state(self.state.clone());
        router(self.state.clone())
            .merge(probe)
            .layer(MockConnectInfo(SocketAddr::from((ip, 40000))))
    }

    async fn send(&self, req: Request<Body>) -> Response<Body> {
        self.app().oneshot(req).await.unwrap()
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Response<Body> {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, path: &str, cookie: &str, body: &str) -> Response<Body> {
        self.send(
            form(path, cookie)
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    /// The login form's CSRF cookie and token.
    async fn login_csrf(&self) -> (String, String) {
        let resp = self.get("/login", None).await;
        let cookie = set_cookie(&resp, "weft_csrf").unwrap();
        let html = text(resp).await;
        (format!("weft_csrf={cookie}"), csrf_in(&html))
    }

    async fn try_login(&self, name: &str, password: &str, ip: [u8; 4]) -> Response<Body> {
        let (cookie, csrf) = self.login_csrf().await;
        let body = format!("csrf={csrf}&name={name}&password={password}");
        self.app_from(ip)
            .oneshot(
                form("/login", &cookie)
                    .body(Body::from(body.clone()))
                    .unwrap(),
            )
            .await
            .unwrap()
    }

    /// Logs in and returns the `Cookie` header of the session.
    async fn login(&self, name: &str) -> String {
        let resp = self.try_login(name, PASSWORD, [192, 0, 2, 1]).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        format!(
            "weft_session={}",
            set_cookie(&resp, "weft_session").unwrap()
        )
    }

    /// The session's CSRF token, read from the logout form of a page.
    async fn session_csrf(&self, cookie: &str) -> String {
        let resp = self.get("/", Some(cookie)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        csrf_in(&text(resp).await)
    }
}

async fn admin_write(f: AdminForm<Probe>) -> String {
    format!("written by {} ({})", f.user.name, f.form.value)
}

async fn admin_read(PageAdmin(u): PageAdmin) -> String {
    u.name
}

#[derive(serde::Deserialize)]
struct Probe {
    value: String,
}

fn form(path: &str, cookie: &str) -> axum::http::request::Builder {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookie)
        .header(header::HOST, "weft.test")
}

/// The value a response sets for cookie `name`, and the whole `Set-Cookie` line.
fn set_cookie_line(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// The message a response leaves for the next page.
pub(super) fn flash_of(resp: &Response<Body>) -> String {
    let hex = set_cookie(resp, "weft_flash").expect("a flash cookie");
    String::from_utf8(hex::decode(hex).unwrap()).unwrap()
}

fn set_cookie(resp: &Response<Body>, name: &str) -> Option<String> {
    let line = set_cookie_line(resp, name)?;
    let value = line.split(';').next()?.split_once('=')?.1.to_string();
    Some(value)
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_string()
}

async fn text(resp: Response<Body>) -> String {
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn location(resp: &Response<Body>) -> &str {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn login_sets_a_fresh_http_only_lax_session_cookie() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let resp = f.try_login("ann", PASSWORD, [192, 0, 2, 1]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/");
    let line = set_cookie_line(&resp, "weft_session").unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(line.contains(attr), "{line}");
    }
    assert!(!line.contains("Secure"), "no TLS, no Secure: {line}");
    let id = set_cookie(&resp, "weft_session").unwrap();
    assert_eq!(id.len(), 64);

    // Logging in again with that session gives a new id and ends the old one.
    let old = format!("weft_session={id}");
    let (csrf_cookie, csrf) = f.login_csrf().await;
    let body = format!("csrf={csrf}&name=ann&password={PASSWORD}");
    let resp = f
        .post_form("/login", &format!("{old}; {csrf_cookie}"), &body)
        .await;
    let new = set_cookie(&resp, "weft_session").unwrap();
    assert_ne!(new, id);
    assert_eq!(f.get("/", Some(&old)).await.status(), StatusCode::SEE_OTHER);
    let fresh = format!("weft_session={new}");
    assert_eq!(f.get("/", Some(&fresh)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn secure_cookies_flag_marks_the_session_cookie_secure() {
    let mut f = Fixture::new();
    f.state.secure_cookies = true;
    f.user("ann", Role::Admin).await;
    let resp = f.try_login("ann", PASSWORD, [192, 0, 2, 1]).await;
    let line = set_cookie_line(&resp, "weft_session").unwrap();
    assert!(line.contains("; Secure"), "{line}");
}

#[tokio::test]
async fn wrong_password_is_401_with_the_form_and_no_session() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let resp = f.try_login("ann", "wrong", [192, 0, 2, 1]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&resp, "weft_session").is_none());
    let html = text(resp).await;
    assert!(html.contains("Wrong name or password"));
    assert!(!html.contains("wrong\""), "the password is not echoed back");
}

#[tokio::test]
async fn eleventh_login_in_a_minute_after_ten_failures_is_429() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    for _ in 0..10 {
        let resp = f.try_login("ann", "wrong", [192, 0, 2, 1]).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right password, from another address: the name is being guessed.
    let resp = f.try_login("ann", PASSWORD, [192, 0, 2, 9]).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    f.advance(SignedDuration::from_secs(61));
    let resp = f.try_login("ann", PASSWORD, [192, 0, 2, 9]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn ten_failures_from_one_address_block_it_for_every_name() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    for i in 0..10 {
        let resp = f
            .try_login(&format!("guess{i}"), "x", [198, 51, 100, 7])
            .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = f.try_login("ann", PASSWORD, [198, 51, 100, 7]).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let resp = f.try_login("ann", PASSWORD, [192, 0, 2, 1]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn session_survives_a_store_reopen() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let cookie = f.login("ann").await;
    let Fixture { dir, state, .. } = f;
    let store = state.store.clone();
    drop(state);
    store.close();
    let store = Store::open(&dir.path().join("db.redb")).unwrap();
    let f = Fixture::over(dir, store);
    assert_eq!(f.get("/", Some(&cookie)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn session_ends_after_30_idle_minutes() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let cookie = f.login("ann").await;
    f.advance(SignedDuration::from_mins(29));
    assert_eq!(f.get("/", Some(&cookie)).await.status(), StatusCode::OK);
    // That visit counted as use: 29 more idle minutes are fine, 30 are not.
    f.advance(SignedDuration::from_mins(29));
    assert_eq!(f.get("/", Some(&cookie)).await.status(), StatusCode::OK);
    f.advance(SignedDuration::from_mins(30));
    let resp = f.get("/", Some(&cookie)).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(location(&resp).starts_with("/login"));
}

#[tokio::test]
async fn busy_session_ends_after_12_hours() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let cookie = f.login("ann").await;
    for _ in 0..(12 * 3 - 1) {
        f.advance(SignedDuration::from_mins(20));
        assert_eq!(f.get("/", Some(&cookie)).await.status(), StatusCode::OK);
    }
    f.advance(SignedDuration::from_mins(20));
    assert_eq!(
        f.get("/", Some(&cookie)).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn logout_ends_the_session() {
    let f = Fixture::new();
    f.user("ann", Role::Viewer).await;
    let cookie = f.login("ann").await;
    let csrf = f.session_csrf(&cookie).await;
    let resp = f
        .post_form("/logout", &cookie, &format!("csrf={csrf}"))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login");
    assert!(
        set_cookie_line(&resp, "weft_session")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        f.get("/", Some(&cookie)).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn anonymous_page_request_is_sent_to_login_and_back() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let resp = f.get("/?x=1", None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2F%3Fx%3D1");
    let html = text(f.get("/login?next=%2F%3Fx%3D1", None).await).await;
    assert!(html.contains("name=\"next\" value=\"/?x=1\""), "{html}");
}

#[tokio::test]
async fn login_never_redirects_to_another_site() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let html = text(f.get("/login?next=https://evil.example/", None).await).await;
    assert!(html.contains("name=\"next\" value=\"/\""));
    for next in [
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%5Cevil.example",
    ] {
        let (cookie, csrf) = f.login_csrf().await;
        let body = format!("csrf={csrf}&name=ann&password={PASSWORD}&next={next}");
        let resp = f.post_form("/login", &cookie, &body).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/", "next={next}");
    }
}

#[tokio::test]
async fn login_without_the_csrf_cookie_and_token_is_403_and_starts_nothing() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let (cookie, csrf) = f.login_csrf().await;
    let cases = [
        (cookie.clone(), format!("name=ann&password={PASSWORD}")),
        (
            cookie.clone(),
            format!("csrf={}&name=ann&password={PASSWORD}", "0".repeat(64)),
        ),
        (
            String::new(),
            format!("csrf={csrf}&name=ann&password={PASSWORD}"),
        ),
    ];
    for (cookie, body) in cases {
        let resp = f.post_form("/login", &cookie, &body).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{body}");
        assert!(set_cookie(&resp, "weft_session").is_none());
    }
}

#[tokio::test]
async fn logout_without_a_valid_csrf_token_is_403_and_the_session_lives_on() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let cookie = f.login("ann").await;
    for body in [String::new(), format!("csrf={}", "f".repeat(64))] {
        let resp = f.post_form("/logout", &cookie, &body).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(f.get("/", Some(&cookie)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn form_from_a_foreign_origin_is_403_and_changes_nothing() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let cookie = f.login("ann").await;
    let csrf = f.session_csrf(&cookie).await;
    let body = format!("csrf={csrf}");
    let req = form("/logout", &cookie)
        .header(header::ORIGIN, "https://evil.example")
        .body(Body::from(body.clone()))
        .unwrap();
    assert_eq!(f.send(req).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.get("/", Some(&cookie)).await.status(), StatusCode::OK);
    // The same form from this site's own origin works.
    let req = form("/logout", &cookie)
        .header(header::ORIGIN, "http://weft.test")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(f.send(req).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn viewer_may_read_but_every_admin_write_is_403() {
    let f = Fixture::new();
    f.user("vic", Role::Viewer).await;
    f.user("ann", Role::Admin).await;
    let viewer = f.login("vic").await;
    assert_eq!(f.get("/", Some(&viewer)).await.status(), StatusCode::OK);
    assert_eq!(
        f.get("/test/admin-read", Some(&viewer)).await.status(),
        StatusCode::FORBIDDEN
    );
    let csrf = f.session_csrf(&viewer).await;
    let resp = f
        .post_form(
            "/test/admin-write",
            &viewer,
            &format!("csrf={csrf}&value=x"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let admin = f.login("ann").await;
    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form("/test/admin-write", &admin, &format!("csrf={csrf}&value=x"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(resp).await, "written by ann (x)");
    // Another session's token is not this session's.
    let resp = f
        .post_form(
            "/test/admin-write",
            &admin,
            &format!("csrf={}&value=x", f.session_csrf(&viewer).await),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn security_headers_are_on_pages_api_and_404s() {
    let f = Fixture::new();
    for path in [
        "/login",
        "/api/v1/pools",
        "/no/such/route",
        "/static/weft.css",
    ] {
        let resp = f.get(path, None).await;
        let h = resp.headers();
        assert_eq!(
            h.get(header::CONTENT_SECURITY_POLICY).unwrap(),
            crate::web::CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert_eq!(h.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(), "nosniff");
        assert_eq!(h.get(header::REFERRER_POLICY).unwrap(), "same-origin");
    }
    let csp = crate::web::CONTENT_SECURITY_POLICY;
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));
}

#[tokio::test]
async fn stylesheet_is_served_with_a_long_cache() {
    let f = Fixture::new();
    let resp = f.get("/static/weft.css", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cache = resp.headers().get(header::CACHE_CONTROL).unwrap();
    assert!(cache.to_str().unwrap().contains("max-age=31536000"));
    assert!(text(resp).await.contains(".badge"));
}

#[tokio::test]
async fn script_in_a_pool_name_comes_back_escaped_on_the_dashboard() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let spec: PoolSpec = serde_json::from_value(serde_json::json!({
        "name": "<script>alert(1)</script>",
        "cidr": "10.0.0.0/24",
        "description": "<img src=x onerror=alert(2)>",
    }))
    .unwrap();
    f.state
        .store
        .write(move |w| w.create_pool(&spec, "test"))
        .await
        .unwrap();
    let cookie = f.login("ann").await;
    let html = text(f.get("/", Some(&cookie)).await).await;
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{html}"
    );
    assert!(!html.contains("<script"));
    assert!(!html.contains("<img src=x"));
    assert!(html.contains("10.0.0.0/24"));
}

#[tokio::test]
async fn dashboard_shows_the_user_and_role() {
    let f = Fixture::new();
    f.user("vic", Role::Viewer).await;
    let cookie = f.login("vic").await;
    let html = text(f.get("/", Some(&cookie)).await).await;
    assert!(html.contains(">vic<") && html.contains(">viewer<"));
}

#[tokio::test]
async fn setup_link_creates_the_first_admin_once_then_is_404() {
    let f = Fixture::new();
    let token = f.state.open_setup();
    assert_eq!(
        f.get(&format!("/setup/{}", "0".repeat(64)), None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let resp = f.get(&format!("/setup/{token}"), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = format!("weft_csrf={}", set_cookie(&resp, "weft_csrf").unwrap());
    let csrf = csrf_in(&text(resp).await);
    let path = format!("/setup/{token}");

    let mismatch = format!("csrf={csrf}&name=root&password=pw1&confirm=pw2");
    let resp = f.post_form(&path, &cookie, &mismatch).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let body = format!("csrf={csrf}&name=root&password={PASSWORD}&confirm={PASSWORD}");
    let resp = f.post_form(&path, &cookie, &body).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/");
    let session = format!(
        "weft_session={}",
        set_cookie(&resp, "weft_session").unwrap()
    );
    let html = text(f.get("/", Some(&session)).await).await;
    assert!(html.contains(">root<") && html.contains(">admin<"));

    assert_eq!(f.get(&path, None).await.status(), StatusCode::NOT_FOUND);
    let again = format!("csrf={csrf}&name=eve&password={PASSWORD}&confirm={PASSWORD}");
    assert_eq!(
        f.post_form(&path, &cookie, &again).await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(f.state.store.read(|r| r.user("eve")).unwrap().is_none());
}

#[tokio::test]
async fn setup_link_is_dead_once_a_user_exists() {
    let f = Fixture::new();
    let token = f.state.open_setup();
    f.user("ann", Role::Admin).await;
    assert_eq!(
        f.get(&format!("/setup/{token}"), None).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn flash_message_shows_once_after_login() {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    let resp = f.try_login("ann", PASSWORD, [192, 0, 2, 1]).await;
    let session = set_cookie(&resp, "weft_session").unwrap();
    let flash = set_cookie(&resp, "weft_flash").unwrap();
    let cookie = format!("weft_session={session}; weft_flash={flash}");
    let resp = f.get("/", Some(&cookie)).await;
    assert!(
        set_cookie_line(&resp, "weft_flash")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(text(resp).await.contains("Signed in as ann."));
}

#[tokio::test]
async fn anonymous_form_post_is_sent_to_login_without_a_way_back_to_the_post() {
    let f = Fixture::new();
    let resp = f.post_form("/logout", "", "csrf=x").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2F");
}

// Each page's own router tests, using the fixture and helpers above.
mod addresses;
mod join_tokens;
mod meshes;
mod nodes;
mod peers;
mod plugins;
mod pools;
