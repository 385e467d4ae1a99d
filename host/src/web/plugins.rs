//! `/api/v1/plugins`: the plugins and their states, reload, and a run by hand.

use super::AppState;
use super::auth::{Admin, Reader};
use super::error::{ApiBody, ApiError, ApiPath, ErrorBody};
use crate::plugins::{PluginHost, State as PluginState, Status, World};
use crate::store::{KEEP_RUNS, PluginRun, Store};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What a plugin may do, from its manifest.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PermissionsView {
    /// host:port pairs an ipam-sync plugin may send HTTP requests to.
    pub outbound_hosts: Vec<String>,
    /// Ports a ping-check plugin may probe.
    pub probe_ports: Vec<u16>,
    pub memory_mb: u64,
    pub time_limit_ms: u64,
    /// Seconds between scheduled runs, if the plugin is scheduled.
    pub interval_secs: Option<u64>,
}

/// A plugin as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PluginView {
    pub name: String,
    /// node-selector, ping-check or ipam-sync; none for a plugin refused before its world was
    /// known.
    pub world: Option<String>,
    pub version: Option<String>,
    pub description: String,
    /// loaded, failing or refused.
    pub state: String,
    /// Why it is failing or refused.
    pub reason: Option<String>,
    /// The last failed call's error, even if later calls succeeded.
    pub last_error: Option<String>,
    pub permissions: Option<PermissionsView>,
    /// An ipam-sync plugin's latest run, if it ever ran.
    pub last_run: Option<PluginRun>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PluginList {
    pub items: Vec<PluginView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunList {
    /// Newest first; at most the latest 50 are kept.
    pub items: Vec<PluginRun>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plugins))
        .routes(routes!(reload_plugins))
        .routes(routes!(run_plugin))
        .routes(routes!(plugin_runs))
}

pub(crate) fn host(s: &AppState) -> Result<Arc<PluginHost>, ApiError> {
    s.plugins.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugins_unavailable",
            "the plugin host is not running (see weft's log)",
        )
    })
}

/// A plugin as the API and the page show it; a sync's latest run comes from `store`.
pub(crate) fn view(
    host: &PluginHost,
    store: &Store,
    status: Status,
) -> Result<PluginView, crate::store::StoreError> {
    let last_run = match status.world {
        Some(World::IpamSync) => store.read(|r| r.last_run(&status.name))?,
        _ => None,
    };
    let (state, reason) = match status.state {
        PluginState::Loaded => ("loaded", None),
        PluginState::Failing { last } => ("failing", Some(last)),
        PluginState::Refused { reason } => ("refused", Some(reason)),
    };
    let permissions = (state != "refused")
        .then(|| host.manifest(&status.name))
        .flatten()
        .map(|m| {
            let p = m.permissions;
            PermissionsView {
                outbound_hosts: p.outbound_hosts.iter().map(|h| h.to_string()).collect(),
                probe_ports: p.probe_ports,
                memory_mb: (p.memory_bytes >> 20) as u64,
                time_limit_ms: p.time_limit.as_millis() as u64,
                interval_secs: p.interval.map(|i| i.as_secs()),
            }
        });
    Ok(PluginView {
        name: status.name,
        world: status.world.map(|w| w.as_str().to_string()),
        version: status.version,
        description: status.description,
        state: state.to_string(),
        reason,
        last_error: status.last_error,
        permissions,
        last_run,
    })
}

fn list_of(
    host: &PluginHost,
    store: &Store,
    statuses: Vec<Status>,
) -> Result<PluginList, ApiError> {
    let items = statuses
        .into_iter()
        .map(|s| view(host, store, s))
        .collect::<Result<_, _>>()?;
    Ok(PluginList { items })
}

/// List the plugins: loaded, failing (with the last error) and refused (with why). Access: any
/// token.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, body = PluginList), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("token" = [])))]
async fn list_plugins(State(s): State<AppState>, _: Reader) -> Result<Json<PluginList>, ApiError> {
    let host = host(&s)?;
    Ok(Json(list_of(&host, &s.store, host.list())?))
}

/// Load every plugin afresh from the plugins folders; failing plugins start clean. Access: a
/// token that may write.
#[utoipa::path(post, path = "/api/v1/plugins/reload", tag = "plugins",
    responses((status = 200, body = PluginList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("token" = [])))]
async fn reload_plugins(State(s): State<AppState>, _: Admin) -> Result<Json<PluginList>, ApiError> {
    let host = host(&s)?;
    let statuses = reload(host.clone()).await?;
    Ok(Json(list_of(&host, &s.store, statuses)?))
}

/// Reloads on a blocking thread: loading may compile.
pub(crate) async fn reload(host: Arc<PluginHost>) -> Result<Vec<Status>, ApiError> {
    tokio::task::spawn_blocking(move || host.reload())
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// The latest runs of a sync plugin, newest first, whether or not it is still installed.
/// Access: any token.
#[utoipa::path(get, path = "/api/v1/plugins/{name}/runs", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    responses((status = 200, body = RunList), (status = 401, body = ErrorBody)),
    security(("token" = [])))]
async fn plugin_runs(
    State(s): State<AppState>,
    _: Reader,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<RunList>, ApiError> {
    let items = s.store.read(|r| r.plugin_runs(&name, KEEP_RUNS))?;
    Ok(Json(RunList { items }))
}

/// Run a plugin once. The body is the plugin's input, by world: a node-selector takes
/// `{"request": {"peer_name", "labels"}, "candidates": [...]}` and answers `{"chosen"}`; a
/// ping-check takes `{"targets": [...]}` and answers `{"outcomes"}`; an ipam-sync takes no
/// body and answers its run report (kept with its other runs). Access: a token that may write.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/run", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    request_body(content = Object, description = "The plugin's input (none for a sync)"),
    responses((status = 200, body = Object, description = "What the plugin answered"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("token" = [])))]
async fn run_plugin(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(name): ApiPath<String>,
    ApiBody(body): ApiBody,
) -> Result<Json<serde_json::Value>, ApiError> {
    let host = host(&s)?;
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).map_err(ApiError::from_json)?
    };
    let answer = crate::plugin_run::run_now(host, s.store.clone(), name, input).await?;
    Ok(Json(answer))
}
