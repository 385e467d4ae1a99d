//! First-run setup: while no user exists, `weft serve` logs a one-time link `/setup/<token>`
//! whose form creates the first admin and signs them in. The token lives in memory only
//! ([`AppState::open_setup`]); once used, or once any user exists, the link is a 404.

use super::{Frame, render, render_pre_session};
use crate::store::{Role, hash_password};
use crate::web::AppState;
use crate::web::error::PageError;
use crate::web::session::{PreSessionForm, pre_session_csrf};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub fn router() -> Router<AppState> {
    Router::new().route("/setup/{token}", get(setup_form).post(setup))
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    frame: Frame,
    csrf: String,
    token: String,
    name: String,
    error: Option<String>,
}

/// Whether `token` is the open setup token (compared by hash: timing reveals nothing).
fn is_open(s: &AppState, token: &str) -> bool {
    s.setup.lock().is_ok_and(|t| {
        t.as_deref()
            .is_some_and(|open| Sha256::digest(open) == Sha256::digest(token))
    })
}

/// Takes the setup token if `token` is it, so two concurrent posts cannot both use it.
fn take(s: &AppState, token: &str) -> Option<String> {
    let mut open = s.setup.lock().ok()?;
    let matches = open
        .as_deref()
        .is_some_and(|o| Sha256::digest(o) == Sha256::digest(token));
    if matches { open.take() } else { None }
}

fn put_back(s: &AppState, token: String) {
    if let Ok(mut open) = s.setup.lock() {
        *open = Some(token);
    }
}

/// The form that creates the first admin. Anonymous, with the setup token in the path.
async fn setup_form(
    State(s): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !is_open(&s, &token) || s.store.read(|r| r.has_users()).unwrap_or(true) {
        return PageError::NotFound.into_response();
    }
    let (csrf, cookie) = pre_session_csrf(&headers, s.secure_cookies);
    let page = SetupPage {
        frame: Frame::new("Set up weft", None, &headers),
        csrf,
        token,
        name: String::new(),
        error: None,
    };
    render_pre_session(&page.frame, &page, cookie, s.secure_cookies)
}

#[derive(Deserialize)]
struct SetupForm {
    name: String,
    password: String,
    confirm: String,
}

/// Creates the first admin and signs them in; the link is dead afterwards. Anonymous, with
/// the setup token and the pre-session CSRF cookie.
async fn setup(
    State(s): State<AppState>,
    Path(token): Path<String>,
    f: PreSessionForm<SetupForm>,
) -> Response {
    let PreSessionForm { form, headers, .. } = f;
    let Some(taken) = take(&s, &token) else {
        return PageError::NotFound.into_response();
    };
    let again = |s: &AppState, taken: String, name: String, error: String| {
        put_back(s, taken);
        let (csrf, _) = pre_session_csrf(&headers, s.secure_cookies);
        let page = SetupPage {
            frame: Frame::new("Set up weft", None, &HeaderMap::new()),
            csrf,
            token: token.clone(),
            name,
            error: Some(error),
        };
        render(
            StatusCode::UNPROCESSABLE_ENTITY,
            &page.frame,
            &page,
            s.secure_cookies,
        )
    };
    if form.password != form.confirm {
        return again(&s, taken, form.name, "The passwords differ.".into());
    }
    let password = form.password;
    let permit = s.hashing.acquire().await;
    let hashed = tokio::task::spawn_blocking(move || hash_password(&password)).await;
    drop(permit);
    let hash = match hashed {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return again(&s, taken, form.name, e.to_string()),
        Err(e) => {
            put_back(&s, taken);
            return crate::web::ApiError::internal(&e).into_response();
        }
    };
    let name = form.name.clone();
    let created = s
        .store
        .write(move |w| {
            // The link only ever makes the first user (`None`: someone was first).
            if w.has_users()? {
                return Ok(None);
            }
            w.create_user(&name, Role::Admin, &hash).map(Some)
        })
        .await;
    let user = match created {
        Ok(Some(u)) => u,
        Ok(None) => return PageError::NotFound.into_response(),
        Err(e) => return again(&s, taken, form.name, e.to_string()),
    };
    tracing::info!(user = %user.name, "first admin created through the setup link");
    match super::login::start_session(&s, &user.name, &headers).await {
        Ok(cookies) => {
            let mut resp = Redirect::to("/").into_response();
            for c in cookies {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}
