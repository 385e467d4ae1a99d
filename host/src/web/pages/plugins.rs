//! The plugins page: each plugin with its world, version, permissions and state (loaded,
//! failing or refused, with why), its last runs; run a sync now; reload every plugin.

use super::{Frame, render, see_other};
use crate::plugins::World;
use crate::store::{PluginRun, Role, RunOutcome};
use crate::web::AppState;
use crate::web::error::{ApiError, PageError};
use crate::web::plugins::{PluginView, host, view};
use crate::web::session::{AdminForm, SignedIn};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/plugins", get(list))
        .route("/plugins/reload", post(reload))
        .route("/plugins/{name}/run", post(run))
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
struct Empty {}

#[derive(Template)]
#[template(path = "plugins.html")]
struct PluginsPage {
    frame: Frame,
    csrf: String,
    /// Each plugin with its latest runs (syncs only), newest first.
    plugins: Vec<(PluginView, Vec<PluginRun>)>,
    /// Whether the plugin host runs at all.
    running: bool,
    /// Write buttons are shown to admins only.
    admin: bool,
}

/// Runs shown per sync plugin.
const RUNS_SHOWN: usize = 5;

impl PluginsPage {
    fn runnable(&self, p: &PluginView) -> bool {
        self.admin && p.state == "loaded" && p.world.as_deref() == Some(World::IpamSync.as_str())
    }

    /// A run's outcome in a few words.
    fn summary(&self, run: &PluginRun) -> String {
        match &run.outcome {
            RunOutcome::Report {
                created,
                updated,
                deleted,
                errors,
            } => format!(
                "{created} created, {updated} updated, {deleted} deleted, {} errors",
                errors.len()
            ),
            RunOutcome::Failed { error } => format!("failed: {error}"),
        }
    }

    fn failed(&self, run: &PluginRun) -> bool {
        matches!(run.outcome, RunOutcome::Failed { .. })
    }
}

/// Every plugin and its state. Any signed-in user.
async fn list(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let mut plugins = Vec::new();
    if let Some(h) = &s.plugins {
        for status in h.list() {
            let v = view(h, &s.store, status)?;
            let runs = match v.last_run {
                Some(_) => s.store.read(|r| r.plugin_runs(&v.name, RUNS_SHOWN))?,
                None => Vec::new(),
            };
            plugins.push((v, runs));
        }
    }
    let running = s.plugins.is_some();
    let admin = user.role == Role::Admin;
    let page = PluginsPage {
        csrf: user.csrf.clone(),
        frame: Frame::signed_in("plugins", "Plugins", user, &headers),
        plugins,
        running,
        admin,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

/// Loads every plugin afresh. A signed-in admin.
async fn reload(
    State(s): State<AppState>,
    AdminForm { user, .. }: AdminForm<Empty>,
) -> Result<Response, PageError> {
    let h = host(&s).map_err(PageError::Api)?;
    let statuses = crate::web::plugins::reload(h)
        .await
        .map_err(PageError::Api)?;
    let refused = statuses
        .iter()
        .filter(|p| matches!(p.state, crate::plugins::State::Refused { .. }))
        .count();
    tracing::info!(user = %user.name, plugins = statuses.len(), refused, "reloaded plugins");
    let n = statuses.len();
    let message = format!(
        "Reloaded {n} plugin{} ({refused} refused)",
        if n == 1 { "" } else { "s" }
    );
    Ok(see_other("/plugins", &message, s.secure_cookies))
}

/// Runs a sync now and shows its outcome. A signed-in admin.
async fn run(
    State(s): State<AppState>,
    Path(name): Path<String>,
    AdminForm { user, .. }: AdminForm<Empty>,
) -> Result<Response, PageError> {
    let h = host(&s).map_err(PageError::Api)?;
    if h.world_of(&name) != Some(World::IpamSync) {
        return Err(PageError::Api(ApiError::not_found(format!(
            "no ipam-sync plugin named {name:?} is loaded"
        ))));
    }
    let outcome =
        crate::plugin_run::run_now(h, s.store.clone(), name.clone(), serde_json::Value::Null).await;
    tracing::info!(user = %user.name, plugin = %name, ok = outcome.is_ok(), "ran plugin by hand");
    let message = match outcome {
        Ok(_) => format!("Ran {name}: see its last run below"),
        Err(e) => format!("{name} failed: {e}"),
    };
    Ok(see_other("/plugins", &message, s.secure_cookies))
}
