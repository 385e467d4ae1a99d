//! The web pages: server-rendered HTML (askama templates in the workspace's `templates/`),
//! one file per page, all sharing `layout.html` through [`Frame`]. Pages are usable without
//! JavaScript; the only asset is the embedded stylesheet.
//!
//! Every handler states its access rule by its extractors: [`SignedIn`] reads, `PageAdmin` or
//! `AdminForm` change something (a viewer gets 403).

mod addresses;
mod dashboard;
mod join_tokens;
mod login;
mod meshes;
mod nodes;
pub mod peers;
mod plugins;
mod pools;
mod setup;

pub use addresses::CountMemo;

use super::AppState;
use super::session::{FLASH_COOKIE, SignedIn, clear_cookie, flash};
use crate::store::{Pool, PoolStats};
use askama::Template;
use axum::Router;
use axum::http::HeaderValue;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

/// The stylesheet, embedded so the binary serves itself: the shared rules, then each page's.
const CSS: &str = concat!(
    include_str!("weft.css"),
    include_str!("pools.css"),
    include_str!("addresses.css"),
    include_str!("plugins.css"),
    include_str!("peers.css"),
    include_str!("nodes.css"),
    include_str!("meshes.css"),
);
/// Bumped with each release, so the year-long cache never serves an old stylesheet.
const CSS_URL: &str = concat!("/static/weft.css?v=", env!("CARGO_PKG_VERSION"));

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/weft.css", get(css))
        .merge(login::router())
        .merge(setup::router())
        .merge(dashboard::router())
        .merge(pools::router())
        .merge(addresses::router())
        .merge(plugins::router())
        .merge(nodes::router())
        .merge(join_tokens::router())
        .merge(peers::router())
        .merge(meshes::router())
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        CSS,
    )
        .into_response()
}

/// What `layout.html` needs from every page: who is signed in (with the CSRF token of the
/// logout form), the flash message, and the title.
pub struct Frame {
    pub title: String,
    pub user: Option<SignedIn>,
    pub flash: Option<String>,
    /// Which navigation entry is the current page.
    pub section: &'static str,
}

impl Frame {
    pub fn new(title: impl Into<String>, user: Option<SignedIn>, headers: &HeaderMap) -> Frame {
        Frame {
            title: title.into(),
            user,
            flash: flash(headers),
            section: "",
        }
    }

    /// The frame of a page behind the login, in navigation `section`.
    pub fn signed_in(
        section: &'static str,
        title: impl Into<String>,
        user: SignedIn,
        headers: &HeaderMap,
    ) -> Frame {
        Frame {
            section,
            ..Frame::new(title, Some(user), headers)
        }
    }

    pub fn css(&self) -> &'static str {
        CSS_URL
    }
}

/// A 303 to `to` with a one-time message for the page there.
pub fn see_other(to: &str, message: &str, secure: bool) -> Response {
    let mut resp = axum::response::Redirect::to(to).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        super::session::flash_cookie(message, secure),
    );
    resp
}

/// Renders a page; a flash message it showed is cleared so it appears once.
/// [`render`] for a form shown before sign-in, setting the pre-session CSRF cookie if the
/// browser had none.
pub fn render_pre_session(
    frame: &Frame,
    page: &impl Template,
    csrf_cookie: Option<HeaderValue>,
    secure: bool,
) -> Response {
    let mut resp = render(StatusCode::OK, frame, page, secure);
    if let Some(c) = csrf_cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

pub fn render(status: StatusCode, frame: &Frame, page: &impl Template, secure: bool) -> Response {
    match page.render() {
        Ok(html) => {
            let mut resp = (status, Html(html)).into_response();
            if frame.flash.is_some() {
                resp.headers_mut()
                    .append(header::SET_COOKIE, clear_cookie(FLASH_COOKIE, secure));
            }
            resp
        }
        Err(e) => super::ApiError::internal(&e).into_response(),
    }
}

/// A count that fits a card: exact below ten million, else in scientific form (an IPv6 /64
/// alone has 2^64 addresses).
pub fn compact(n: &u64) -> String {
    if *n < 10_000_000 {
        n.to_string()
    } else {
        format!("{:.2e}", *n as f64)
    }
}

/// How long ago `secs` seconds was, in the largest unit that fits: "12 s ago", "3 min ago",
/// "5 h ago", "2 days ago"; "just now" under a second, "in the future" for a clock ahead.
pub fn relative(secs: i64) -> String {
    match secs {
        s if s < 0 => "in the future".into(),
        0 => "just now".into(),
        s => format!("{} ago", span(s)),
    }
}

/// How long from now `secs` seconds is: "in 12 s", "in 5 h"; "now" for no time left.
pub fn ahead(secs: i64) -> String {
    if secs <= 0 {
        "now".into()
    } else {
        format!("in {}", span(secs))
    }
}

/// A positive number of seconds in the largest unit that fits: "12 s", "3 min", "5 h",
/// "1 day", "2 days".
fn span(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h", s / 3600),
        s if s < 2 * 86_400 => "1 day".into(),
        s => format!("{} days", s / 86_400),
    }
}

/// A pool with its numbers, as the dashboard and the pool list show it.
pub struct PoolRow {
    pub pool: Pool,
    pub stats: PoolStats,
}

impl PoolRow {
    /// Utilization in whole percent, for the bar and its label (never 0 while something is
    /// held, so a nearly empty pool does not look unused).
    pub fn percent(&self) -> u64 {
        let p = (self.stats.utilization * 100.0).round() as u64;
        if p == 0 && self.stats.total > self.stats.available {
            1
        } else {
            p.min(100)
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    frame: Frame,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// The body of an error answered to a page request.
pub fn error_page(status: StatusCode, message: &str) -> Html<String> {
    let page = ErrorPage {
        frame: Frame {
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            user: None,
            flash: None,
            section: "",
        },
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message,
    };
    // The error page has no input but a message and a status: rendering cannot fail in
    // practice, and if it did a plain message is still an answer.
    Html(page.render().unwrap_or_else(|_| "error".to_string()))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::compact;

    #[test]
    fn huge_counts_are_shown_compactly() {
        assert_eq!(compact(&212), "212");
        assert_eq!(compact(&18_446_744_073_709_551_614), "1.84e19");
    }
}
