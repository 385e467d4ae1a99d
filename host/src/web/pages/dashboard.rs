//! The dashboard at `/`: every pool with its utilization and counts by status.

use super::{Frame, render};
use crate::store::{Pool, PoolStats};
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

/// A count that fits a card: exact below ten million, else in scientific form (an IPv6 /64
/// alone has 2^64 addresses).
pub(crate) fn compact(n: &u64) -> String {
    if *n < 10_000_000 {
        n.to_string()
    } else {
        format!("{:.2e}", *n as f64)
    }
}

struct PoolRow {
    pool: Pool,
    stats: PoolStats,
}

impl PoolRow {
    /// Utilization in whole percent, for the bar and its label (never 0 while something is
    /// held, so a nearly empty pool does not look unused).
    fn percent(&self) -> u64 {
        let p = (self.stats.utilization * 100.0).round() as u64;
        if p == 0 && self.stats.total > self.stats.available {
            1
        } else {
            p.min(100)
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    frame: Frame,
    pools: Vec<PoolRow>,
    totals: PoolStats,
}

/// Pools with utilization and counts. Any signed-in user.
async fn dashboard(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let pools = s.store.read(|r| r.pools())?;
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
    let mut frame = Frame::new("Dashboard", Some(user), &headers);
    frame.section = "ipam";
    let page = Dashboard {
        frame,
        pools,
        totals,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn huge_counts_are_shown_compactly() {
        assert_eq!(compact(&212), "212");
        assert_eq!(compact(&18_446_744_073_709_551_614), "1.84e19");
    }
}
