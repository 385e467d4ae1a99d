//! Signing in and out: `GET /login` (the form), `POST /login`, `POST /logout`.

use super::{Frame, render, render_pre_session};
use crate::store::new_session_id;
use crate::web::AppState;
use crate::web::error::PageError;
use crate::web::session::{
    CSRF_COOKIE, PreSessionForm, SESSION_COOKIE, SessionForm, clear_cookie, flash_cookie,
    pre_session_csrf, safe_next, session_cookie, session_id,
};
use crate::web::throttle;
use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    frame: Frame,
    csrf: String,
    next: String,
    name: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// The login form. Anonymous.
async fn login_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let (csrf, cookie) = pre_session_csrf(&headers, s.secure_cookies);
    let page = LoginPage {
        frame: Frame::new("Sign in", None, &headers),
        csrf,
        next: safe_next(q.next.as_deref()),
        name: String::new(),
        error: None,
    };
    render_pre_session(&page.frame, &page, cookie, s.secure_cookies)
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Checks the password (argon2, on a blocking thread) and starts a new session. Anonymous,
/// with the pre-session CSRF cookie. A wrong name or password answers 401 with the form again;
/// after [`throttle::MAX_FAILURES`] failures in a minute for the name or the address, 429.
async fn login(State(s): State<AppState>, f: PreSessionForm<LoginForm>) -> Response {
    let PreSessionForm {
        form,
        headers,
        client,
    } = f;
    let now = s.clock.now();
    let keys = throttle::keys(&form.name, client);
    if s.throttle.blocked(&keys, now) {
        return PageError::TooManyAttempts.into_response();
    }
    // Waits its turn: at most one argon2 check per core at a time.
    let Ok(permit) = s.hashing.acquire().await else {
        return crate::web::ApiError::internal(&"the hashing semaphore is closed").into_response();
    };
    let store = s.store.clone();
    let (name, password) = (form.name.clone(), form.password);
    let verified =
        tokio::task::spawn_blocking(move || store.read(|r| r.verify_user(&name, &password))).await;
    drop(permit);
    let user = match verified {
        Ok(Ok(user)) => user,
        Ok(Err(e)) => return PageError::from(e).into_response(),
        Err(e) => return crate::web::ApiError::internal(&e).into_response(),
    };
    let Some(user) = user else {
        s.throttle.record_failure(&keys, now);
        tracing::info!(user = ?form.name, client = ?client, "failed login");
        let (csrf, _) = pre_session_csrf(&headers, s.secure_cookies);
        let page = LoginPage {
            frame: Frame::new("Sign in", None, &HeaderMap::new()),
            csrf,
            next: safe_next(form.next.as_deref()),
            name: form.name,
            error: Some("Wrong name or password.".into()),
        };
        return render(
            StatusCode::UNAUTHORIZED,
            &page.frame,
            &page,
            s.secure_cookies,
        );
    };
    match start_session(&s, &user.name, &headers).await {
        Ok(cookies) => {
            let mut resp = Redirect::to(&safe_next(form.next.as_deref())).into_response();
            for c in cookies {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// Starts a session for `user` under a fresh id, dropping the browser's previous one, and
/// returns the cookies to set (the session, and the pre-session CSRF cookie cleared).
pub(super) async fn start_session(
    s: &AppState,
    user: &str,
    headers: &HeaderMap,
) -> Result<Vec<axum::http::HeaderValue>, PageError> {
    let id = new_session_id();
    let old = session_id(headers).map(str::to_string);
    let (i, u, now) = (id.clone(), user.to_string(), s.clock.now());
    s.store
        .write(move |w| w.create_session(&i, &u, now, old.as_deref()))
        .await?;
    tracing::info!(user, "signed in");
    Ok(vec![
        session_cookie(&id, s.secure_cookies),
        clear_cookie(CSRF_COOKIE, s.secure_cookies),
        flash_cookie(&format!("Signed in as {user}."), s.secure_cookies),
    ])
}

#[derive(Deserialize)]
struct LogoutForm {}

/// Ends the session. Any signed-in user, with the session's CSRF token.
async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    f: SessionForm<LogoutForm>,
) -> Response {
    let SessionForm {
        user,
        form: LogoutForm {},
    } = f;
    if let Some(id) = session_id(&headers).map(str::to_string)
        && let Err(e) = s.store.write(move |w| w.delete_session(&id)).await
    {
        return PageError::from(e).into_response();
    }
    tracing::info!(user = %user.name, "signed out");
    let mut resp = Redirect::to("/login").into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        clear_cookie(SESSION_COOKIE, s.secure_cookies),
    );
    h.append(
        header::SET_COOKIE,
        flash_cookie("Signed out.", s.secure_cookies),
    );
    resp
}
