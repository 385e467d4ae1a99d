//! The address pages: the IPAM table with its filters, and one address's detail, changes and
//! history.

use crate::web::AppState;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
}
