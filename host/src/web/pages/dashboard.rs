//! The dashboard at `/`: every pool with its utilization and counts by status, and the latest
//! changes across every address.

use super::{Frame, PoolRow, render};
use crate::store::PoolStats;
use crate::web::AppState;
use crate::web::error::PageError;
use crate::web::session::SignedIn;
use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(dashboard))
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    frame: Frame,
    pools: Vec<PoolRow>,
    totals: PoolStats,
    recent: Vec<Recent>,
}

/// How many of the latest changes the dashboard lists.
const RECENT: usize = 20;

/// One of the latest changes, as the dashboard lists it.
struct Recent {
    at: String,
    actor: String,
    action: String,
    address: String,
}

/// Pools with utilization and counts, and the latest changes. Any signed-in user.
async fn dashboard(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    // One snapshot: the counts and the latest changes agree.
    let (pools, recent) = s
        .store
        .read(|r| Ok((r.pools()?, r.recent_events(RECENT)?)))?;
    let recent = recent
        .into_iter()
        .map(|e| Recent {
            at: super::addresses::when(e.event.at),
            actor: e.event.actor,
            action: e.event.action,
            address: e.address.to_string(),
        })
        .collect();
    let mut totals = PoolStats {
        total: 0,
        available: 0,
        allocated: 0,
        reserved: 0,
        quarantine: 0,
        utilization: 0.0,
    };
    let pools: Vec<PoolRow> = pools
        .into_iter()
        .map(|pool| {
            let stats = pool.stats();
            totals.total = totals.total.saturating_add(stats.total);
            totals.available = totals.available.saturating_add(stats.available);
            totals.allocated += stats.allocated;
            totals.reserved += stats.reserved;
            totals.quarantine += stats.quarantine;
            PoolRow { pool, stats }
        })
        .collect();
    let frame = Frame::signed_in("dashboard", "Dashboard", user, &headers);
    let page = Dashboard {
        frame,
        pools,
        totals,
        recent,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}
