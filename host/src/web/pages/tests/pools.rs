//! Router tests of the pool pages: list, create, delete, CSV export and import.

use super::*;
use crate::ipam::Status;
use crate::store::AllocationRequest;

const BOUNDARY: &str = "weft-test-boundary";

impl Fixture {
    /// A pool made directly in the store (the API's JSON spec).
    async fn pool(&self, spec: serde_json::Value) {
        let spec: PoolSpec = serde_json::from_value(spec).unwrap();
        self.state
            .store
            .write(move |w| w.create_pool(&spec, "test"))
            .await
            .unwrap();
    }

    /// Pool `lab`, 10.0.0.0/24, with its gateway 10.0.0.1 reserved.
    async fn lab(&self) {
        self.pool(serde_json::json!({"name": "lab", "cidr": "10.0.0.0/24"}))
            .await;
    }

    async fn allocate(&self, pool: &str) -> std::net::IpAddr {
        let pool = pool.to_string();
        self.state
            .store
            .write(move |w| w.allocate(&pool, &AllocationRequest::default(), None, "test"))
            .await
            .unwrap()
            .address
    }

    fn pool_names(&self) -> Vec<String> {
        let pools = self.state.store.read(|r| r.pools()).unwrap();
        pools.into_iter().map(|p| p.name).collect()
    }

    fn status_of(&self, ip: &str) -> Status {
        let ip = ip.parse().unwrap();
        self.state.store.read(|r| r.address(ip)).unwrap().status
    }

    /// An admin (`ann`) and a viewer (`vic`), signed in: their cookies and CSRF tokens.
    async fn admin_and_viewer(&self) -> (Session, Session) {
        self.user("ann", Role::Admin).await;
        self.user("vic", Role::Viewer).await;
        (self.session("ann").await, self.session("vic").await)
    }

    async fn session(&self, name: &str) -> Session {
        let cookie = self.login(name).await;
        let csrf = self.session_csrf(&cookie).await;
        Session { cookie, csrf }
    }

    async fn upload(&self, path: &str, cookie: &str, parts: &[Part<'_>]) -> Response<Body> {
        self.send(upload(path, cookie).body(multipart(parts)).unwrap())
            .await
    }

    /// A good upload of `csv`, the CSRF token first, as a browser sends the import form.
    async fn import(&self, path: &str, s: &Session, csv: &str) -> Response<Body> {
        let parts = [
            Part::field("csrf", &s.csrf),
            Part::file("file", "hosts.csv", csv),
        ];
        self.upload(path, &s.cookie, &parts).await
    }
}

struct Session {
    cookie: String,
    csrf: String,
}

/// One field of a `multipart/form-data` body.
struct Part<'a> {
    name: &'a str,
    file_name: Option<&'a str>,
    value: &'a str,
}

impl<'a> Part<'a> {
    fn field(name: &'a str, value: &'a str) -> Part<'a> {
        Part {
            name,
            file_name: None,
            value,
        }
    }

    fn file(name: &'a str, file_name: &'a str, value: &'a str) -> Part<'a> {
        Part {
            name,
            file_name: Some(file_name),
            value,
        }
    }
}

fn multipart(parts: &[Part<'_>]) -> Body {
    let mut body = String::new();
    for p in parts {
        body.push_str(&format!("--{BOUNDARY}\r\n"));
        match p.file_name {
            Some(f) => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{}\"; filename=\"{f}\"\r\nContent-Type: text/csv\r\n\r\n",
                p.name
            )),
            None => body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                p.name
            )),
        }
        body.push_str(p.value);
        body.push_str("\r\n");
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    Body::from(body)
}

fn upload(path: &str, cookie: &str) -> axum::http::request::Builder {
    Request::post(path)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header(header::COOKIE, cookie)
        .header(header::HOST, "weft.test")
}

/// The form fields of the create form, urlencoded, with the session's token.
fn create_body(csrf: &str, fields: &[(&str, &str)]) -> String {
    let mut all = vec![("csrf", csrf)];
    all.extend_from_slice(fields);
    serde_urlencoded::to_string(all).unwrap()
}

/// The `<input>` (or `<textarea>`) tag of field `id` in a page.
fn field_tag<'h>(html: &'h str, id: &str) -> &'h str {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no field {id} in {html}"));
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    &html[start..=end]
}

/// Asserts that the page shows `message` as the error of `field`, linked from the field.
fn assert_field_error(html: &str, field: &str, message: &str) {
    let tag = field_tag(html, field);
    assert!(
        tag.contains("aria-invalid=\"true\"")
            && tag.contains(&format!("aria-describedby=\"{field}-error\"")),
        "{tag}"
    );
    let p = format!("<p class=\"field-error\" id=\"{field}-error\">");
    let at = html.find(&p).unwrap_or_else(|| panic!("no {p} in {html}"));
    let shown = &html[at + p.len()..];
    let shown = &shown[..shown.find("</p>").unwrap()];
    assert!(
        shown.contains(message),
        "{field}: {shown:?} lacks {message:?}"
    );
    let fields_with_errors = html.matches("class=\"field-error\"").count();
    assert_eq!(fields_with_errors, 1, "only {field} has an error: {html}");
}

// ---- access ----

#[tokio::test]
async fn anonymous_visitors_of_every_pool_page_are_sent_to_login_and_back() {
    let f = Fixture::new();
    f.lab().await;
    for path in [
        "/pools",
        "/pools/new",
        "/pools/lab/delete",
        "/pools/lab/export.csv",
        "/pools/lab/import",
    ] {
        let resp = f.get(path, None).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        let next = serde_urlencoded::to_string([("next", path)]).unwrap();
        assert_eq!(location(&resp), format!("/login?{next}"), "{path}");
    }
}

#[tokio::test]
async fn anonymous_pool_writes_are_sent_to_login_and_change_nothing() {
    let f = Fixture::new();
    f.lab().await;
    let body = "name=new&cidr=10.9.0.0%2F24";
    let resp = f.post_form("/pools", "", body).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login?next=%2F");
    let resp = f.post_form("/pools/lab/delete", "", "force=on").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let csv = "address,status\n10.0.0.5,allocated\n";
    let parts = [Part::file("file", "a.csv", csv)];
    let resp = f.upload("/pools/lab/import", "", &parts).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(f.pool_names(), ["lab"]);
    assert_eq!(f.status_of("10.0.0.5"), Status::Available);
}

#[tokio::test]
async fn viewer_reads_the_pool_list_and_export_but_sees_no_write_links() {
    let f = Fixture::new();
    f.lab().await;
    let (_, viewer) = f.admin_and_viewer().await;
    let resp = f.get("/pools", Some(&viewer.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    assert!(
        html.contains("href=\"/pools/lab/export.csv\">Export CSV</a>"),
        "{html}"
    );
    for admin_only in ["/pools/new", "/pools/lab/import", "/pools/lab/delete"] {
        assert!(!html.contains(admin_only), "{admin_only} shown to a viewer");
    }
    let resp = f.get("/pools/lab/export.csv", Some(&viewer.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(text(resp).await.starts_with("address,status,type"));
}

#[tokio::test]
async fn viewer_is_refused_every_pool_write_and_nothing_changes() {
    let f = Fixture::new();
    f.lab().await;
    let ip = f.allocate("lab").await;
    let (_, viewer) = f.admin_and_viewer().await;
    for form_page in ["/pools/new", "/pools/lab/delete", "/pools/lab/import"] {
        let resp = f.get(form_page, Some(&viewer.cookie)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{form_page}");
    }

    let body = create_body(&viewer.csrf, &[("name", "new"), ("cidr", "10.9.0.0/24")]);
    let resp = f.post_form("/pools", &viewer.cookie, &body).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let body = format!("csrf={}&force=on", viewer.csrf);
    let resp = f
        .post_form("/pools/lab/delete", &viewer.cookie, &body)
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let csv = "address,status\n10.0.0.5,reserved\n";
    let resp = f.import("/pools/lab/import", &viewer, csv).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    assert_eq!(f.pool_names(), ["lab"]);
    assert_eq!(f.status_of(&ip.to_string()), Status::Allocated);
    assert_eq!(f.status_of("10.0.0.5"), Status::Available);
}

#[tokio::test]
async fn pool_writes_without_the_session_csrf_token_are_403_and_change_nothing() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, viewer) = f.admin_and_viewer().await;
    // No token, a made-up one, and another session's.
    let wrong = ["".to_string(), "0".repeat(64), viewer.csrf.clone()];
    for token in &wrong {
        let body = create_body(token, &[("name", "new"), ("cidr", "10.9.0.0/24")]);
        let resp = f.post_form("/pools", &admin.cookie, &body).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "create, {token:?}");

        let body = format!("csrf={token}&force=on");
        let resp = f.post_form("/pools/lab/delete", &admin.cookie, &body).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "delete, {token:?}");

        let forged = Session {
            cookie: admin.cookie.clone(),
            csrf: token.clone(),
        };
        let csv = "address,status\n10.0.0.5,reserved\n";
        let resp = f.import("/pools/lab/import", &forged, csv).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "import, {token:?}");
    }
    // An upload with no token field at all.
    let parts = [Part::file(
        "file",
        "a.csv",
        "address,status\n10.0.0.5,reserved\n",
    )];
    let resp = f.upload("/pools/lab/import", &admin.cookie, &parts).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.pool_names(), ["lab"]);
    assert_eq!(f.status_of("10.0.0.5"), Status::Available);
}

#[tokio::test]
async fn upload_csrf_token_must_come_before_the_file() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, _) = f.admin_and_viewer().await;
    let parts = [
        Part::file("file", "a.csv", "address,status\n10.0.0.5,reserved\n"),
        Part::field("csrf", &admin.csrf),
    ];
    let resp = f.upload("/pools/lab/import", &admin.cookie, &parts).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.status_of("10.0.0.5"), Status::Available);
}

#[tokio::test]
async fn upload_from_a_foreign_origin_is_403_and_changes_nothing() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, _) = f.admin_and_viewer().await;
    let parts = [
        Part::field("csrf", &admin.csrf),
        Part::file("file", "a.csv", "address,status\n10.0.0.5,reserved\n"),
    ];
    let req = upload("/pools/lab/import", &admin.cookie)
        .header(header::ORIGIN, "https://evil.example")
        .body(multipart(&parts))
        .unwrap();
    assert_eq!(f.send(req).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.status_of("10.0.0.5"), Status::Available);
}

#[tokio::test]
async fn upload_larger_than_16_mib_is_413_and_changes_nothing() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, _) = f.admin_and_viewer().await;
    let mut csv = String::from("address,status\n10.0.0.5,reserved\n");
    csv.push_str(&"#".repeat(16 << 20));
    let resp = f.import("/pools/lab/import", &admin, &csv).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(f.status_of("10.0.0.5"), Status::Available);
}

#[tokio::test]
async fn unknown_pool_pages_are_404() {
    let f = Fixture::new();
    let (admin, _) = f.admin_and_viewer().await;
    for path in [
        "/pools/nope/delete",
        "/pools/nope/export.csv",
        "/pools/nope/import",
    ] {
        let resp = f.get(path, Some(&admin.cookie)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let body = format!("csrf={}&force=on", admin.csrf);
    let resp = f
        .post_form("/pools/nope/delete", &admin.cookie, &body)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

// ---- the list ----

#[tokio::test]
async fn pool_list_shows_each_pool_with_its_utilization_bar_and_admin_actions() {
    let f = Fixture::new();
    f.lab().await;
    f.pool(serde_json::json!({"name": "v6", "cidr": "fd00:1::/64", "description": "lab v6"}))
        .await;
    for _ in 0..9 {
        f.allocate("lab").await;
    }
    let (admin, _) = f.admin_and_viewer().await;
    let resp = f.get("/pools", Some(&admin.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    assert!(html.contains("aria-current=\"page\">Pools</a>"));
    assert!(html.contains("href=\"/pools/new\""));
    assert!(html.contains("<a href=\"/addresses?pool=lab\"><strong>lab</strong></a>"));
    assert!(html.contains("<code>10.0.0.0/24</code>") && html.contains("<code>fd00:1::/64</code>"));
    // 9 allocated + the gateway of 254 usable addresses: 4%.
    assert!(html.contains("<progress max=\"100\" value=\"4\""), "{html}");
    assert!(html.contains("lab v6"));
    for action in [
        "href=\"/pools/lab/export.csv\">Export CSV</a>",
        "href=\"/pools/lab/import\">Import CSV</a>",
        "href=\"/pools/lab/delete\">Delete</a>",
    ] {
        assert!(html.contains(action), "{action}");
    }
}

#[tokio::test]
async fn pool_names_are_percent_encoded_in_every_url_the_pages_make() {
    let f = Fixture::new();
    f.pool(serde_json::json!({"name": "a b/c?d#e&f+é", "cidr": "10.1.0.0/24"}))
        .await;
    let (admin, _) = f.admin_and_viewer().await;
    let html = text(f.get("/pools", Some(&admin.cookie)).await).await;
    let seg = "a%20b%2Fc%3Fd%23e%26f%2B%C3%A9";
    assert!(
        html.contains(&format!("href=\"/addresses?pool={seg}\"")),
        "{html}"
    );
    for path in ["delete", "import", "export.csv"] {
        let url = format!("/pools/{seg}/{path}");
        assert!(html.contains(&format!("href=\"{url}\"")), "{url}");
        let resp = f.get(&url, Some(&admin.cookie)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{url}");
    }
    let html = text(
        f.get(&format!("/pools/{seg}/delete"), Some(&admin.cookie))
            .await,
    )
    .await;
    assert!(html.contains(&format!("action=\"/pools/{seg}/delete\"")));
}

#[tokio::test]
async fn a_pool_named_dot_dot_is_linked_by_its_id_which_a_browser_cannot_resolve_away() {
    let f = Fixture::new();
    f.pool(serde_json::json!({"name": "..", "cidr": "10.1.0.0/24"}))
        .await;
    let id = f.state.store.read(|r| r.pool("..")).unwrap().id;
    let (admin, _) = f.admin_and_viewer().await;
    let html = text(f.get("/pools", Some(&admin.cookie)).await).await;
    assert!(
        html.contains(&format!("href=\"/pools/{id}/delete\"")),
        "{html}"
    );
    let body = format!("csrf={}", admin.csrf);
    let resp = f
        .post_form(&format!("/pools/{id}/delete"), &admin.cookie, &body)
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(flash_of(&resp), "Deleted pool ..");
    assert!(f.pool_names().is_empty());
}

#[tokio::test]
async fn script_in_a_pool_name_and_description_comes_back_escaped_on_every_pool_page() {
    let f = Fixture::new();
    let name = "<script>alert(1)</script>";
    f.pool(serde_json::json!({
        "name": name,
        "cidr": "10.0.0.0/24",
        "description": "<img src=x onerror=alert(2)>",
    }))
    .await;
    let (admin, _) = f.admin_and_viewer().await;
    let seg = crate::web::pages::pools::url_part(name);
    for path in [
        "/pools".to_string(),
        format!("/pools/{seg}/delete"),
        format!("/pools/{seg}/import"),
    ] {
        let resp = f.get(&path, Some(&admin.cookie)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let html = text(resp).await;
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{path}: {html}"
        );
        assert!(
            !html.contains("<script") && !html.contains("<img src=x"),
            "{path}: {html}"
        );
    }
    // What was typed into a refused form comes back escaped too.
    let body = create_body(
        &admin.csrf,
        &[
            ("name", "<script>x</script>"),
            ("cidr", "banana\"><script>"),
        ],
    );
    let html = text(f.post_form("/pools", &admin.cookie, &body).await).await;
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains("value=\"&#60;script&#62;x&#60;/script&#62;\""),
        "{html}"
    );
}

// ---- create ----

#[tokio::test]
async fn new_pool_form_has_every_field_and_reserves_the_gateway_by_default() {
    let f = Fixture::new();
    let (admin, _) = f.admin_and_viewer().await;
    let resp = f.get("/pools/new", Some(&admin.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    assert!(html.contains("<form method=\"post\" action=\"/pools\">"));
    assert_eq!(csrf_in(&html), admin.csrf);
    for field in ["name", "cidr", "description"] {
        assert!(field_tag(&html, field).starts_with("<input"), "{field}");
    }
    assert!(field_tag(&html, "static_ranges").starts_with("<textarea"));
    let gateway = field_tag(&html, "reserve_gateway");
    assert!(gateway.contains("type=\"checkbox\"") && gateway.contains("value=\"on\""));
    assert!(gateway.contains(" checked"), "{gateway}");
    assert!(html.contains(">Create pool</button>"));
    assert!(!html.contains("field-error") && !html.contains("aria-invalid"));
}

#[tokio::test]
async fn admin_creates_a_pool_and_is_sent_to_the_list_with_a_flash() {
    let f = Fixture::new();
    let (admin, _) = f.admin_and_viewer().await;
    let body = create_body(
        &admin.csrf,
        &[
            ("name", "lab"),
            ("cidr", "10.0.0.0/24"),
            ("description", "the lab"),
            (
                "static_ranges",
                "10.0.0.10-10.0.0.50\r\n\r\n 10.0.0.100-10.0.0.120 \r\n",
            ),
            ("reserve_gateway", "on"),
        ],
    );
    let resp = f.post_form("/pools", &admin.cookie, &body).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/pools");
    assert_eq!(flash_of(&resp), "Created pool lab");
    let pool = f.state.store.read(|r| r.pool("lab")).unwrap();
    assert_eq!(pool.cidr.to_string(), "10.0.0.0/24");
    assert_eq!(pool.description.as_deref(), Some("the lab"));
    assert_eq!(
        pool.static_ranges,
        ["10.0.0.10-10.0.0.50", "10.0.0.100-10.0.0.120"]
    );
    assert!(pool.reserve_gateway);
    assert_eq!(f.status_of("10.0.0.1"), Status::Reserved);
}

#[tokio::test]
async fn unticked_gateway_box_creates_a_pool_without_a_reserved_gateway() {
    let f = Fixture::new();
    let (admin, _) = f.admin_and_viewer().await;
    let body = create_body(&admin.csrf, &[("name", "lab"), ("cidr", "10.0.0.0/24")]);
    let resp = f.post_form("/pools", &admin.cookie, &body).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let pool = f.state.store.read(|r| r.pool("lab")).unwrap();
    assert!(!pool.reserve_gateway && pool.description.is_none());
    assert_eq!(f.status_of("10.0.0.1"), Status::Available);
}

#[tokio::test]
async fn create_form_shows_each_error_next_to_its_field_and_keeps_what_was_typed() {
    let f = Fixture::new();
    f.pool(serde_json::json!({"name": "core", "cidr": "10.0.0.0/16"}))
        .await;
    let (admin, _) = f.admin_and_viewer().await;
    let long = "d".repeat(1001);
    // (name, cidr, static ranges, description): the field at fault, the status, the message.
    let cases = [
        (
            ("lab", "banana", "", ""),
            "cidr",
            422,
            "&#34;banana&#34; is not a network",
        ),
        (("lab", "10.0.0.0/33", "", ""), "cidr", 422, "not a network"),
        (("lab", "", "", ""), "cidr", 422, "Enter the pool"),
        (
            ("lab", "10.1.0.1/24", "", ""),
            "cidr",
            422,
            "did you mean 10.1.0.0/24",
        ),
        (
            ("lab", "10.0.5.0/24", "", ""),
            "cidr",
            409,
            "overlaps pool &#34;core&#34;",
        ),
        (
            ("core", "10.1.0.0/24", "", ""),
            "name",
            409,
            "already taken",
        ),
        (("  ", "10.1.0.0/24", "", ""), "name", 422, "Enter a name"),
        (("123", "10.1.0.0/24", "", ""), "name", 422, "all digits"),
        (
            ("lab", "10.1.0.0/24", "10.1.0.9", ""),
            "static_ranges",
            422,
            "FIRST-LAST",
        ),
        (
            ("lab", "10.1.0.0/24", "10.2.0.1-10.2.0.9", ""),
            "static_ranges",
            422,
            "not inside",
        ),
        (
            ("lab", "10.1.0.0/24", "", long.as_str()),
            "description",
            422,
            "longer than 1000",
        ),
    ];
    for ((name, cidr, ranges, description), field, status, message) in cases {
        let body = create_body(
            &admin.csrf,
            &[
                ("name", name),
                ("cidr", cidr),
                ("static_ranges", ranges),
                ("description", description),
            ],
        );
        let resp = f.post_form("/pools", &admin.cookie, &body).await;
        assert_eq!(resp.status().as_u16(), status, "{field}: {cidr}");
        let html = text(resp).await;
        assert_field_error(&html, field, message);
        // What was typed is kept; the gateway box stays as it was sent (unticked).
        assert!(field_tag(&html, "name").contains(&format!("value=\"{name}\"")));
        assert!(field_tag(&html, "cidr").contains(&format!("value=\"{cidr}\"")));
        assert!(html.contains(&format!(">{ranges}</textarea>")));
        assert!(field_tag(&html, "description").contains(&format!("value=\"{description}\"")));
        assert!(!field_tag(&html, "reserve_gateway").contains("checked"));
        assert_eq!(csrf_in(&html), admin.csrf, "the form can be sent again");
    }
    assert_eq!(f.pool_names(), ["core"], "no refused form created anything");
}

#[tokio::test]
async fn empty_create_form_shows_both_required_fields() {
    let f = Fixture::new();
    let (admin, _) = f.admin_and_viewer().await;
    let body = create_body(&admin.csrf, &[("reserve_gateway", "on")]);
    let resp = f.post_form("/pools", &admin.cookie, &body).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    assert!(html.contains("id=\"name-error\"") && html.contains("id=\"cidr-error\""));
    assert!(field_tag(&html, "reserve_gateway").contains(" checked"));
}

// ---- delete ----

#[tokio::test]
async fn delete_confirmation_shows_what_the_pool_holds_and_the_force_box() {
    let f = Fixture::new();
    f.lab().await;
    f.allocate("lab").await;
    let (admin, _) = f.admin_and_viewer().await;
    let resp = f.get("/pools/lab/delete", Some(&admin.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    assert!(html.contains("<form method=\"post\" action=\"/pools/lab/delete\">"));
    assert_eq!(csrf_in(&html), admin.csrf);
    let force = field_tag(&html, "force");
    assert!(force.contains("type=\"checkbox\"") && force.contains("value=\"on\""));
    assert!(!force.contains("checked"), "force is never the default");
    assert!(html.contains("1 addresses are allocated"), "{html}");
    assert!(html.contains(">Delete pool</button>"));
}

#[tokio::test]
async fn deleting_a_pool_with_allocated_addresses_is_refused_without_force() {
    let f = Fixture::new();
    f.lab().await;
    let ip = f.allocate("lab").await;
    let (admin, _) = f.admin_and_viewer().await;
    let body = format!("csrf={}", admin.csrf);
    let resp = f.post_form("/pools/lab/delete", &admin.cookie, &body).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let html = text(resp).await;
    assert!(
        html.contains("<p class=\"error\" role=\"alert\">"),
        "{html}"
    );
    assert!(html.contains("still holds 1 allocated addresses"), "{html}");
    assert!(
        html.contains(">Delete pool</button>"),
        "the form is offered again"
    );
    assert_eq!(f.pool_names(), ["lab"]);
    assert_eq!(f.status_of(&ip.to_string()), Status::Allocated);
}

#[tokio::test]
async fn deleting_a_pool_with_allocated_addresses_with_force_deletes_it() {
    let f = Fixture::new();
    f.lab().await;
    f.allocate("lab").await;
    let (admin, _) = f.admin_and_viewer().await;
    let body = format!("csrf={}&force=on", admin.csrf);
    let resp = f.post_form("/pools/lab/delete", &admin.cookie, &body).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/pools");
    assert_eq!(flash_of(&resp), "Deleted pool lab");
    assert!(f.pool_names().is_empty());
}

#[tokio::test]
async fn a_pool_with_nothing_allocated_is_deleted_without_force() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, _) = f.admin_and_viewer().await;
    let body = format!("csrf={}", admin.csrf);
    let resp = f.post_form("/pools/lab/delete", &admin.cookie, &body).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(f.pool_names().is_empty());
}

// ---- CSV ----

#[tokio::test]
async fn export_is_a_csv_attachment_of_the_pools_records() {
    let f = Fixture::new();
    f.lab().await;
    let ip = f.allocate("lab").await;
    let (_, viewer) = f.admin_and_viewer().await;
    let resp = f.get("/pools/lab/export.csv", Some(&viewer.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let disposition = h[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"lab.csv\""),
        "{disposition}"
    );
    let csv = text(resp).await;
    assert!(csv.starts_with("address,status,type,"), "{csv}");
    assert!(csv.contains("10.0.0.1,reserved,"), "the gateway: {csv}");
    assert!(csv.contains(&format!("{ip},allocated,")), "{csv}");
}

#[tokio::test]
async fn import_form_sends_the_csrf_token_before_the_file() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, _) = f.admin_and_viewer().await;
    let resp = f.get("/pools/lab/import", Some(&admin.cookie)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    let form =
        "<form method=\"post\" enctype=\"multipart/form-data\" action=\"/pools/lab/import\">";
    assert!(html.contains(form), "{html}");
    // The layout's sign-out form has a token too: look inside the import form only.
    let form = &html[html.find(form).unwrap()..];
    let csrf = form.find("name=\"csrf\"").unwrap();
    let file = form.find("name=\"file\"").unwrap();
    assert!(csrf < file);
    assert_eq!(csrf_in(&html), admin.csrf);
    assert!(html.contains(">Import</button>"));
}

#[tokio::test]
async fn good_import_redirects_to_the_pools_addresses_and_the_records_exist() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, _) = f.admin_and_viewer().await;
    let csv = "address,status,hostname,description\n\
               10.0.0.5,allocated,web1,\n\
               10.0.0.6,reserved,,printer\n";
    let resp = f.import("/pools/lab/import", &admin, csv).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/addresses?pool=lab");
    assert_eq!(flash_of(&resp), "Imported 2 rows into lab");
    let web1 = f
        .state
        .store
        .read(|r| r.address("10.0.0.5".parse().unwrap()))
        .unwrap();
    assert_eq!(web1.status, Status::Allocated);
    assert_eq!(web1.hostname.as_deref(), Some("web1"));
    assert_eq!(f.status_of("10.0.0.6"), Status::Reserved);
}

#[tokio::test]
async fn bad_import_shows_the_bad_line_and_changes_nothing() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, _) = f.admin_and_viewer().await;
    // Refused while parsing (a status that does not exist), then by the store (an address
    // outside the pool): either way, the line is named and nothing is written.
    let cases = [
        (
            "address,status\n10.0.0.5,allocated\n10.0.0.6,lost\n",
            "line 3:",
        ),
        (
            "address,status\n10.0.0.5,allocated\n10.9.9.9,reserved\n",
            "line 3:",
        ),
        ("address,colour\n10.0.0.5,red\n", "line 1:"),
    ];
    for (csv, line) in cases {
        let resp = f.import("/pools/lab/import", &admin, csv).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{csv}");
        let html = text(resp).await;
        let alert = "<p class=\"error\" role=\"alert\">Nothing was imported from hosts.csv: ";
        assert!(html.contains(&format!("{alert}{line}")), "{html}");
        assert!(
            html.contains(">Import</button>"),
            "the form is offered again"
        );
        assert_eq!(f.status_of("10.0.0.5"), Status::Available, "{csv}");
    }
}

#[tokio::test]
async fn import_without_a_file_asks_for_one() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, _) = f.admin_and_viewer().await;
    let resp = f.import("/pools/lab/import", &admin, "").await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    let tag = field_tag(&html, "file");
    assert!(tag.contains("aria-describedby=\"file-error\""), "{tag}");
    assert!(html.contains("id=\"file-error\">Choose a CSV file"));
}

#[tokio::test]
async fn exported_csv_imports_back_into_a_fresh_pool() {
    let f = Fixture::new();
    f.lab().await;
    let ip = f.allocate("lab").await;
    let (admin, _) = f.admin_and_viewer().await;
    let csv = text(f.get("/pools/lab/export.csv", Some(&admin.cookie)).await).await;
    let body = format!("csrf={}&force=on", admin.csrf);
    f.post_form("/pools/lab/delete", &admin.cookie, &body).await;
    f.lab().await;
    let resp = f.import("/pools/lab/import", &admin, &csv).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(f.status_of(&ip.to_string()), Status::Allocated);
}

#[tokio::test]
async fn import_posted_as_a_plain_form_is_refused_as_forged() {
    let f = Fixture::new();
    f.lab().await;
    let (admin, _) = f.admin_and_viewer().await;
    let body = format!("csrf={}&file=address,status", admin.csrf);
    let resp = f.post_form("/pools/lab/import", &admin.cookie, &body).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}
