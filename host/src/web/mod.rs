//! The HTTP edge: one router for the JSON API, the web pages, health and metrics. Handlers are
//! thin: extract (auth, path, query, body), call the store, answer. Errors become HTTP only in
//! `error`. Every response carries the security headers set in [`router`].
//!
//! Access per route (each handler's doc comment says it again, and `tests` check it):
//! - anonymous: `GET /healthz`, `GET /metrics`, `GET /api/v1/openapi.json`, the login and
//!   setup pages, `/static/*`;
//! - any token: every other `GET` under `/api`;
//! - a write token (not read-only): every `POST`, `PUT`, `PATCH` and `DELETE` under `/api`;
//! - any signed-in user (session cookie): every other page `GET`, and `POST /logout`;
//! - a signed-in admin: every other page write (with the session's CSRF token).

mod addresses;
#[cfg(test)]
pub(crate) mod api_fixture;
mod auth;
mod csv_io;
mod error;
mod meshes;
mod nodes;
mod pages;
mod peers;
mod plugins;
mod pools;
mod session;
mod throttle;

pub use error::{ApiError, PageError};

use crate::metrics::{Metrics, RequestLabels, RouteLabels};
use crate::store::Store;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::Instant;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

/// The largest request body accepted (CSV imports are the big ones).
pub const MAX_BODY: usize = 16 << 20;

/// What every handler shares. Cloned once per request (each extractor takes a copy), so a
/// clone is one reference count, not one per field: with a dozen shared counters bouncing
/// between cores, per-field clones were a measurable share of a request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Set-up only (tests and `weft serve` adjust the state before serving): while the router
/// holds copies, a change would copy the whole state instead of sharing it.
impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Mark the session cookie `Secure` (weft behind a TLS proxy).
    pub secure_cookies: bool,
    /// Session expiry and login throttling read the time here, so tests can move it.
    pub clock: Clock,
    pub(crate) throttle: Arc<throttle::Throttle>,
    /// The first-run setup token: in memory only, taken when the first admin is created.
    pub(crate) setup: Arc<std::sync::Mutex<Option<String>>>,
    /// Password hashes computed at once: each takes 19 MiB and tens of milliseconds, so a
    /// flood of logins waits here instead of filling memory and every blocking thread.
    pub(crate) hashing: Arc<tokio::sync::Semaphore>,
    /// The address pages' counts per filter, while the store is unchanged.
    pub(crate) counts: Arc<pages::CountMemo>,
    /// The plugin host; none where weft runs without plugins (tests, a host that failed to
    /// start).
    pub plugins: Option<Arc<crate::plugins::PluginHost>>,
    /// How `auto` chooses the node of a new peer.
    pub placement: crate::placement::Strategy,
    /// The nodes peers are placed on.
    pub peer_nodes: Arc<dyn crate::controller::peers::NodeSource>,
    /// The node registry; none where weft runs without a data dir (some tests).
    pub nodes: Option<crate::controller::nodes::Registry>,
    /// What the last poll of each node saw of its peers (handshake, transfer).
    pub peer_stats: crate::controller::wg_stats::WgSeen,
    /// What the last mesh round saw on each node.
    pub mesh_seen: crate::controller::meshes::MeshSeen,
}

impl AppState {
    pub fn new(store: Store) -> Self {
        AppState(Arc::new(Shared {
            store,
            metrics: Arc::new(Metrics::new()),
            secure_cookies: false,
            clock: Clock::system(),
            throttle: Arc::default(),
            setup: Arc::default(),
            counts: Arc::default(),
            plugins: None,
            placement: crate::placement::Strategy::LeastLoaded,
            peer_nodes: Arc::new(crate::controller::peers::NoNodes),
            peer_stats: Default::default(),
            mesh_seen: Default::default(),
            nodes: None,
            hashing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }))
    }

    /// Opens the first-run setup: returns the token of the one-time link `/setup/<token>`.
    pub fn open_setup(&self) -> String {
        let token = crate::store::new_session_id();
        if let Ok(mut s) = self.setup.lock() {
            *s = Some(token.clone());
        }
        token
    }
}

/// The time, as the pages see it.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>);

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(jiff::Timestamp::now))
    }

    pub fn new(f: impl Fn() -> jiff::Timestamp + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    pub fn now(&self) -> jiff::Timestamp {
        (self.0)()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "weft", description = "IPAM and overlay network API. Every /api route takes `Authorization: Bearer <token>`; read-only tokens may only GET."),
    modifiers(&TokenScheme),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct TokenScheme;

impl utoipa::Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API routes and their OpenAPI document, built from the same handler annotations so the
/// two cannot drift apart.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(pools::router())
        .merge(addresses::router())
        .merge(plugins::router())
        .merge(nodes::router())
        .merge(peers::router())
        .merge(meshes::router())
        .split_for_parts()
}

/// The whole application, ready to serve.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api();
    let doc = Arc::new(doc);
    Router::new()
        .merge(api)
        .merge(pages::router())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        // The headers every response carries, API and errors included: no inline script or
        // style, no framing, no MIME sniffing, no referrer to other sites.
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .with_state(state)
}

/// Scripts, styles and images only from weft itself; never in a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Readiness: the store answers a read.
async fn healthz(State(s): State<AppState>) -> Response {
    match s.store.read(|r| r.pools().map(|p| p.len())) {
        Ok(_) => "ok\n".into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    match s.store.read(|r| r.pools()) {
        Ok(pools) => s.metrics.set_pools(&pools),
        Err(e) => return ApiError::from(e).into_response(),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Counts and times every request by its route template (never the raw path, so addresses
/// in URLs do not become label values).
async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    s.metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed);
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
