//! Router tests of the address pages: the table with its filters, an address's detail, its
//! changes and its history.

use super::*;
use crate::ipam::Status;
use crate::store::{AddressPatch, AllocationRequest};
use std::collections::HashMap;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A fixture with an admin (ann), a viewer (vic) and a pool `lan` (10.0.0.0/24, gateway
/// 10.0.0.1 reserved).
async fn lan() -> Fixture {
    let f = Fixture::new();
    f.user("ann", Role::Admin).await;
    f.user("vic", Role::Viewer).await;
    pool(&f, "lan", "10.0.0.0/24").await;
    f
}

async fn pool(f: &Fixture, name: &str, cidr: &str) {
    let spec: PoolSpec =
        serde_json::from_value(serde_json::json!({"name": name, "cidr": cidr})).unwrap();
    f.state
        .store
        .write(move |w| w.create_pool(&spec, "test"))
        .await
        .unwrap();
}

/// Allocates the next free address of `pool` straight in the store.
async fn allocated(f: &Fixture, pool: &str, hostname: Option<&str>) -> IpAddr {
    let (pool, req) = (
        pool.to_string(),
        AllocationRequest {
            hostname: hostname.map(str::to_string),
            ..Default::default()
        },
    );
    f.state
        .store
        .write(move |w| w.allocate(&pool, &req, None, "test"))
        .await
        .unwrap()
        .address
}

async fn patched(f: &Fixture, addr: &str, patch: AddressPatch) {
    let addr = ip(addr);
    f.state
        .store
        .write(move |w| w.patch(addr, &patch, "test"))
        .await
        .unwrap();
}

fn record(f: &Fixture, addr: &str) -> crate::ipam::Record {
    f.state.store.read(|r| r.address(ip(addr))).unwrap()
}

fn history_len(f: &Fixture, addr: &str) -> usize {
    f.state.store.read(|r| r.history(ip(addr))).unwrap().len()
}

/// The addresses of the table's rows, in order.
fn rows(html: &str) -> Vec<String> {
    let Some(at) = html.find("<table class=\"addresses\">") else {
        return vec![];
    };
    html[at..]
        .split("<td><a href=\"/addresses/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect()
}

/// The counts section: status -> the number shown.
fn counts(html: &str) -> HashMap<String, String> {
    let at = html
        .find("<section class=\"counts\"")
        .expect("a counts section");
    let end = at + html[at..].find("</section>").unwrap();
    html[at..end]
        .split("<span class=\"n\"")
        .skip(1)
        .map(|card| {
            let n = card.split('>').nth(1).unwrap().split('<').next().unwrap();
            let status = card
                .split("status-")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            (status.to_string(), n.to_string())
        })
        .collect()
}

fn count_map(pairs: [(&str, &str); 4]) -> HashMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `href` of the link whose text is `text`, unescaped.
fn link(html: &str, text: &str) -> Option<String> {
    let at = html.find(&format!(">{text}</a>"))?;
    let start = html[..at].rfind("href=\"")? + 6;
    let href = html[start..].split('"').next()?;
    Some(href.replace("&#38;", "&").replace("&amp;", "&"))
}

#[tokio::test]
async fn anonymous_visitors_are_sent_to_login_and_change_nothing() {
    let f = lan().await;
    let resp = f.get("/addresses?status=allocated", None).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&resp),
        "/login?next=%2Faddresses%3Fstatus%3Dallocated"
    );
    let resp = f.get("/addresses/10.0.0.5", None).await;
    assert_eq!(location(&resp), "/login?next=%2Faddresses%2F10.0.0.5");
    for (path, body) in [
        ("/addresses/allocate", "csrf=x&pool=lan"),
        ("/addresses/10.0.0.5", "csrf=x&action=allocate"),
    ] {
        let resp = f.post_form(path, "", body).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&resp), "/login?next=%2F");
    }
    assert_eq!(record(&f, "10.0.0.5").status, Status::Available);
    assert_eq!(f.state.store.read(|r| r.pool("lan")).unwrap().allocated, 0);
}

#[tokio::test]
async fn a_viewer_reads_everything_sees_no_forms_and_every_write_is_403() {
    let f = lan().await;
    let held = allocated(&f, "lan", Some("web-1")).await.to_string();
    let viewer = f.login("vic").await;
    let html = text(f.get("/addresses", Some(&viewer)).await).await;
    assert!(rows(&html).contains(&held));
    assert!(!html.contains("Allocate next free"));
    assert!(!html.contains("/addresses/allocate"));
    let resp = f.get(&format!("/addresses/{held}"), Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = text(resp).await;
    assert!(html.contains("web-1"));
    assert!(
        !html.contains("name=\"action\""),
        "no action forms for a viewer"
    );

    let csrf = f.session_csrf(&viewer).await;
    let resp = f
        .post_form(
            "/addresses/allocate",
            &viewer,
            &format!("csrf={csrf}&pool=lan"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    for (addr, action) in [
        ("10.0.0.9", "allocate"),
        (held.as_str(), "release"),
        ("10.0.0.9", "reserve"),
        ("10.0.0.9", "quarantine"),
        (held.as_str(), "edit"),
    ] {
        let resp = f
            .post_form(
                &format!("/addresses/{addr}"),
                &viewer,
                &format!("csrf={csrf}&action={action}&hostname=x&description=y"),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{action}");
    }
    let pool = f.state.store.read(|r| r.pool("lan")).unwrap();
    assert_eq!((pool.allocated, pool.reserved, pool.quarantine), (1, 1, 0));
    assert_eq!(record(&f, &held).hostname.as_deref(), Some("web-1"));
    assert_eq!(history_len(&f, "10.0.0.9"), 0);
}

#[tokio::test]
async fn an_admin_allocates_the_next_free_address_and_lands_on_its_page() {
    let f = lan().await;
    let admin = f.login("ann").await;
    let html = text(f.get("/addresses", Some(&admin)).await).await;
    assert!(html.contains("Allocate next free"));
    let csrf = csrf_in(&html);
    let resp = f
        .post_form(
            "/addresses/allocate",
            &admin,
            &format!("csrf={csrf}&pool=lan&owner=team-a&hostname=web-1"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/addresses/10.0.0.2");
    assert_eq!(flash_of(&resp), "Allocated 10.0.0.2");
    let rec = record(&f, "10.0.0.2");
    assert_eq!(rec.status, Status::Allocated);
    assert_eq!(
        (rec.owner.as_deref(), rec.hostname.as_deref()),
        (Some("team-a"), Some("web-1"))
    );
    let html = text(f.get("/addresses/10.0.0.2", Some(&admin)).await).await;
    assert!(html.contains("<h1>10.0.0.2</h1>"));
    assert!(html.contains("badge status-allocated"));
}

#[tokio::test]
async fn allocating_from_an_unknown_pool_shows_the_table_again_with_the_reason() {
    let f = lan().await;
    let admin = f.login("ann").await;
    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form(
            "/addresses/allocate",
            &admin,
            &format!("csrf={csrf}&pool=nope&hostname=kept-host"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let html = text(resp).await;
    assert!(html.contains("class=\"error\" role=\"alert\""), "{html}");
    assert!(
        html.contains("value=\"kept-host\""),
        "what was typed is kept"
    );
}

#[tokio::test]
async fn a_missing_or_wrong_csrf_token_is_403_and_changes_nothing() {
    let f = lan().await;
    let admin = f.login("ann").await;
    let wrong = "0".repeat(64);
    for (path, body) in [
        ("/addresses/allocate", "pool=lan".to_string()),
        ("/addresses/allocate", format!("csrf={wrong}&pool=lan")),
        ("/addresses/10.0.0.9", "action=reserve".to_string()),
        (
            "/addresses/10.0.0.9",
            format!("csrf={wrong}&action=reserve&description=x"),
        ),
    ] {
        let resp = f.post_form(path, &admin, &body).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path} {body}");
    }
    let pool = f.state.store.read(|r| r.pool("lan")).unwrap();
    assert_eq!((pool.allocated, pool.reserved), (0, 1));
    assert_eq!(history_len(&f, "10.0.0.9"), 0);
}

#[tokio::test]
async fn script_in_owner_and_description_comes_back_escaped() {
    let f = lan().await;
    let admin = f.login("ann").await;
    let csrf = f.session_csrf(&admin).await;
    let evil = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let resp = f
        .post_form(
            "/addresses/10.0.0.7",
            &admin,
            &format!("csrf={csrf}&action=reserve&description={evil}"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = f
        .post_form(
            "/addresses/allocate",
            &admin,
            &format!("csrf={csrf}&pool=lan&owner={evil}"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    for path in [
        "/addresses",
        "/addresses/10.0.0.7",
        "/addresses/10.0.0.2",
        "/",
    ] {
        let html = text(f.get(path, Some(&admin)).await).await;
        assert!(!html.contains("<script"), "{path}: {html}");
    }
    let html = text(f.get("/addresses", Some(&admin)).await).await;
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    // A hostname is refused as such, and what was typed comes back escaped in the form.
    let resp = f
        .post_form(
            "/addresses/allocate",
            &admin,
            &format!("csrf={csrf}&pool=lan&hostname={evil}"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    assert!(html.contains("id=\"hostname-error\""));
    assert!(!html.contains("<script"), "{html}");
    let resp = f
        .post_form(
            "/addresses/10.0.0.7",
            &admin,
            &format!("csrf={csrf}&action=edit&hostname={evil}&description=ok"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!text(resp).await.contains("<script"));
}

#[tokio::test]
async fn ipv6_addresses_have_their_pages_too() {
    let f = lan().await;
    pool(&f, "v6", "fd00::/120").await;
    let addr = allocated(&f, "v6", Some("v6-host")).await.to_string();
    let viewer = f.login("vic").await;
    let html = text(
        f.get("/addresses?pool=v6&status=allocated", Some(&viewer))
            .await,
    )
    .await;
    assert_eq!(rows(&html), [addr.as_str()]);
    let resp = f.get(&format!("/addresses/{addr}"), Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(text(resp).await.contains("v6-host"));
}

#[tokio::test]
async fn filters_in_the_url_select_the_rows_and_the_counts_follow() {
    let f = lan().await;
    pool(&f, "dc", "10.1.0.0/24").await;
    for i in 0..3 {
        allocated(&f, "lan", Some(&format!("web-{i}"))).await; // .2 .3 .4
    }
    allocated(&f, "dc", Some("db-1")).await; // 10.1.0.2
    patched(
        &f,
        "10.0.0.3",
        AddressPatch {
            status: Some(Status::Quarantine),
            ..Default::default()
        },
    )
    .await;
    let viewer = f.login("vic").await;

    let html = text(
        f.get("/addresses?pool=lan&status=allocated", Some(&viewer))
            .await,
    )
    .await;
    assert_eq!(rows(&html), ["10.0.0.2", "10.0.0.4"]);
    assert_eq!(
        counts(&html),
        count_map([
            ("available", "0"),
            ("allocated", "2"),
            ("reserved", "0"),
            ("quarantine", "0")
        ])
    );
    assert!(html.contains("<option value=\"allocated\" selected>"));

    // Every pool, no filter: both gateways reserved, 254 - 1 - 3 + 254 - 1 - 1 free.
    let html = text(f.get("/addresses", Some(&viewer)).await).await;
    assert_eq!(
        counts(&html),
        count_map([
            ("available", "502"),
            ("allocated", "3"),
            ("reserved", "2"),
            ("quarantine", "1")
        ])
    );

    // A search: counted by listing, exact when small.
    let html = text(f.get("/addresses?q=web", Some(&viewer)).await).await;
    assert_eq!(rows(&html), ["10.0.0.2", "10.0.0.3", "10.0.0.4"]);
    assert_eq!(
        counts(&html),
        count_map([
            ("available", "0"),
            ("allocated", "2"),
            ("reserved", "0"),
            ("quarantine", "1")
        ])
    );
    let html = text(
        f.get("/addresses?q=web&status=quarantine", Some(&viewer))
            .await,
    )
    .await;
    assert_eq!(rows(&html), ["10.0.0.3"]);
    let html = text(
        f.get("/addresses?q=db&pool=dc&type=static", Some(&viewer))
            .await,
    )
    .await;
    assert_eq!(rows(&html), ["10.1.0.2"]);
    let html = text(f.get("/addresses?active=yes", Some(&viewer)).await).await;
    assert!(rows(&html).is_empty());
    assert_eq!(counts(&html)["allocated"], "0");
}

#[tokio::test]
async fn next_reaches_the_following_rows_and_keeps_the_filters() {
    let f = lan().await;
    for i in 0..60 {
        allocated(&f, "lan", Some(&format!("host-{i}"))).await;
    }
    let viewer = f.login("vic").await;
    let html = text(
        f.get("/addresses?pool=lan&status=allocated", Some(&viewer))
            .await,
    )
    .await;
    let first = rows(&html);
    assert_eq!(first.len(), 50);
    let next = link(&html, "Next").expect("a Next link");
    assert!(
        next.starts_with("/addresses?pool=lan&status=allocated&cursor="),
        "{next}"
    );
    assert_eq!(
        link(&html, "First").as_deref(),
        Some("/addresses?pool=lan&status=allocated")
    );
    let html = text(f.get(&next, Some(&viewer)).await).await;
    let second = rows(&html);
    assert_eq!(second.len(), 10);
    assert!(second.iter().all(|a| !first.contains(a)));
    assert_eq!(second.last().map(String::as_str), Some("10.0.0.61"));
    assert!(link(&html, "Next").is_none(), "the last page");
    assert_eq!(counts(&html)["allocated"], "60");
}

#[tokio::test]
async fn a_bad_filter_value_is_400_naming_it() {
    let f = lan().await;
    let viewer = f.login("vic").await;
    for (query, named) in [
        ("status=lost", "status"),
        ("type=ptp", "type"),
        ("active=maybe", "active"),
        ("pool=nope", "pool"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let resp = f.get(&format!("/addresses?{query}"), Some(&viewer)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        let html = text(resp).await;
        assert!(html.contains(named), "{query}: {html}");
    }
    let resp = f.get("/addresses/not-an-ip", Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = f.get("/addresses/192.168.9.9", Some(&viewer)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reserving_with_a_description_shows_in_the_history() {
    let f = lan().await;
    let admin = f.login("ann").await;
    let csrf = f.session_csrf(&admin).await;
    let resp = f
        .post_form(
            "/addresses/10.0.0.7",
            &admin,
            &format!("csrf={csrf}&action=reserve&description=network+printer"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/addresses/10.0.0.7");
    assert_eq!(flash_of(&resp), "Reserved 10.0.0.7");
    let html = text(f.get("/addresses/10.0.0.7", Some(&admin)).await).await;
    let timeline = &html[html.find("<ol class=\"timeline\">").expect("a timeline")..];
    assert!(timeline.contains("reserve</span> by <strong>ann</strong>"));
    assert!(timeline.contains("<del>available</del> → <ins>reserved</ins>"));
    assert!(timeline.contains(
        "description</span>: <span class=\"unset\">—</span> → <ins>network printer</ins>"
    ));
    // Reserved: the description is editable, and there is a way back.
    assert!(html.contains("value=\"network printer\""));
    assert!(html.contains(">Make available</button>"));
    assert!(!html.contains(">Reserve</button>"));
}

#[tokio::test]
async fn a_description_edit_is_refused_while_not_reserved() {
    let f = lan().await;
    let held = allocated(&f, "lan", None).await.to_string();
    let admin = f.login("ann").await;
    let html = text(f.get(&format!("/addresses/{held}"), Some(&admin)).await).await;
    assert!(html.contains("name=\"description\" value=\"\" disabled"));
    let csrf = csrf_in(&html);
    let before = history_len(&f, &held);
    let resp = f
        .post_form(
            &format!("/addresses/{held}"),
            &admin,
            &format!("csrf={csrf}&action=edit&hostname=kept-host&description=sneaky"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    assert!(
        html.contains("only while the address is reserved"),
        "{html}"
    );
    assert!(
        html.contains("value=\"kept-host\""),
        "what was typed is kept"
    );
    let rec = record(&f, &held);
    assert_eq!((rec.description, rec.hostname), (None, None));
    assert_eq!(history_len(&f, &held), before);
}

#[tokio::test]
async fn only_the_actions_the_status_allows_are_offered_and_others_are_refused() {
    let f = lan().await;
    let held = allocated(&f, "lan", None).await.to_string();
    let admin = f.login("ann").await;
    let html = text(f.get(&format!("/addresses/{held}"), Some(&admin)).await).await;
    for shown in ["release", "quarantine", "edit"] {
        assert!(
            html.contains(&format!("name=\"action\" value=\"{shown}\"")),
            "{shown}"
        );
    }
    for hidden in ["allocate", "reserve", "available"] {
        assert!(
            !html.contains(&format!("name=\"action\" value=\"{hidden}\"")),
            "{hidden}"
        );
    }
    // The gateway is reserved for good: no forms at all.
    let html = text(f.get("/addresses/10.0.0.1", Some(&admin)).await).await;
    assert!(!html.contains("name=\"action\""));

    // Reserving an allocated address anyway: 409 from the store's rules, nothing changed.
    let csrf = csrf_in(&html);
    let resp = f
        .post_form(
            &format!("/addresses/{held}"),
            &admin,
            &format!("csrf={csrf}&action=reserve&description=x"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(record(&f, &held).status, Status::Allocated);

    // Release, then make it available from quarantine.
    let resp = f
        .post_form(
            &format!("/addresses/{held}"),
            &admin,
            &format!("csrf={csrf}&action=quarantine"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(record(&f, &held).status, Status::Quarantine);
    let resp = f
        .post_form(
            &format!("/addresses/{held}"),
            &admin,
            &format!("csrf={csrf}&action=available"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(record(&f, &held).status, Status::Available);
}

#[tokio::test]
async fn an_admin_allocates_releases_and_edits_a_chosen_address() {
    let f = lan().await;
    let admin = f.login("ann").await;
    let csrf = f.session_csrf(&admin).await;
    let post = |body: String| {
        let (f, admin) = (&f, &admin);
        async move { f.post_form("/addresses/10.0.0.20", admin, &body).await }
    };
    let resp = post(format!(
        "csrf={csrf}&action=allocate&owner=ops&hostname=app-1"
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(flash_of(&resp), "Allocated 10.0.0.20");
    let resp = post(format!(
        "csrf={csrf}&action=edit&hostname=app-2&mac=52-54-00-AB-CD-EF&platform=linux&manufacturer=acme&owner=ops"
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let rec = record(&f, "10.0.0.20");
    assert_eq!(rec.hostname.as_deref(), Some("app-2"));
    assert_eq!(rec.mac.as_deref(), Some("52:54:00:ab:cd:ef"));
    let resp = post(format!("csrf={csrf}&action=edit&mac=nonsense")).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = text(resp).await;
    assert!(html.contains(
        "name=\"mac\" value=\"nonsense\" maxlength=\"17\" aria-invalid=\"true\" aria-describedby=\"mac-error\""
    ));
    assert!(html.contains("<p class=\"field-error\" id=\"mac-error\">"));
    assert_eq!(
        record(&f, "10.0.0.20").mac.as_deref(),
        Some("52:54:00:ab:cd:ef")
    );
    let resp = post(format!("csrf={csrf}&action=release")).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(flash_of(&resp), "Released 10.0.0.20");
    assert_eq!(record(&f, "10.0.0.20").status, Status::Available);
    let resp = post(format!("csrf={csrf}&action=explode")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_dashboard_lists_recent_changes_with_links() {
    let f = lan().await;
    allocated(&f, "lan", Some("web-1")).await;
    let viewer = f.login("vic").await;
    let html = text(f.get("/", Some(&viewer)).await).await;
    let at = html
        .find("Recent changes")
        .expect("a recent changes section");
    let recent = &html[at..];
    // Newest first: the allocation, then the gateway's reservation at pool creation.
    let allocation = recent.find("href=\"/addresses/10.0.0.2\"").unwrap();
    let gateway = recent.find("href=\"/addresses/10.0.0.1\"").unwrap();
    assert!(allocation < gateway);
    assert!(recent.contains("<td>allocate</td>") && recent.contains("<td>test</td>"));
}
