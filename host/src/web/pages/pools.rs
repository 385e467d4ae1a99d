//! The pool pages: the list, the create form, delete with confirmation, CSV export and import.

use crate::web::AppState;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
}
