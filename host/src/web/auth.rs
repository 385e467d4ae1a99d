//! Who may call a route. Every `/api` handler takes one of these extractors; which one is its
//! access rule: [`Reader`] (any token) or [`Admin`] (a token that is not read-only). Routes
//! without either are anonymous: `/healthz`, `/metrics`, `/api/v1/openapi.json`.

use super::AppState;
use super::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// A caller holding any valid token.
pub struct Reader;

/// A caller holding a token that may change things.
pub struct Admin {
    /// The token's name: the actor recorded in history.
    pub name: String,
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn authenticate(parts: &Parts, state: &AppState) -> Result<crate::store::TokenInfo, ApiError> {
    let secret = bearer(parts).ok_or_else(ApiError::unauthorized)?;
    state
        .store
        .read(|r| r.token_by_secret(secret))?
        .ok_or_else(ApiError::unauthorized)
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state)?;
        Ok(Reader)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let t = authenticate(parts, state)?;
        if t.read_only {
            return Err(ApiError::forbidden(format!(
                "token {:?} is read-only and cannot change anything",
                t.name
            )));
        }
        Ok(Admin { name: t.name })
    }
}
