//! The join tokens page: every token with what it enrols (peer pool, labels), its uses left,
//! expiry, maker, whether it was revoked and the nodes it enrolled; for admins a create form
//! (the secret and the `weft agent join` command shown once) and revoke buttons.
//!
//! The same store operations as `weft node token create|list|revoke`, and the same reading of
//! labels and lifetimes (`crate::input`).

use super::{Frame, render, see_other};
use crate::input::{parse_labels, parse_lifetime};
use crate::store::{JoinToken, Pool, Role, StoreError, new_join_secret};
use crate::web::AppState;
use crate::web::error::{ApiError, PageError};
use crate::web::session::{AdminForm, SignedIn};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/join-tokens", get(list).post(create))
        .route("/join-tokens/{id}/revoke", post(revoke))
}

fn frame(title: impl Into<String>, user: SignedIn, headers: &HeaderMap) -> Frame {
    Frame::signed_in("nodes", title, user, headers)
}

/// Whether a token would enrol a node now, in the order the store checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    UsedUp,
    Expired,
    Revoked,
}

impl TokenState {
    /// Its CSS class (`token-…`).
    pub fn class(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::UsedUp => "used-up",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::UsedUp => "used up",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

/// A token with its pool's name, as the list shows it.
pub struct TokenRow {
    pub token: JoinToken,
    pub pool: String,
}

impl TokenRow {
    pub fn uses_left(&self) -> usize {
        (self.token.uses as usize).saturating_sub(self.token.enrolled.len())
    }

    /// Whether it would enrol a node now, and if not, why.
    pub fn state(&self, now: i64) -> TokenState {
        if self.token.revoked {
            TokenState::Revoked
        } else if self.uses_left() == 0 {
            TokenState::UsedUp
        } else if self.token.expires.as_second() <= now {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    pub fn expiry(&self, now: i64) -> String {
        let left = self.token.expires.as_second() - now;
        if left > 0 {
            super::ahead(left)
        } else {
            format!("expired {}", super::relative(-left))
        }
    }

    pub fn labels(&self) -> String {
        super::nodes::labels_text(&self.token.labels)
    }
}

fn rows(pools: &[Pool], tokens: Vec<JoinToken>) -> Vec<TokenRow> {
    tokens
        .into_iter()
        .map(|token| TokenRow {
            pool: pool_name(pools, token.peer_pool),
            token,
        })
        .collect()
}

fn pool_name(pools: &[Pool], id: u64) -> String {
    pools
        .iter()
        .find(|p| p.id == id)
        .map_or_else(|| id.to_string(), |p| p.name.clone())
}

/// The create form as typed, kept so a refused form comes back as it was sent.
#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    pool: String,
    /// `key=value` pairs separated by commas.
    #[serde(default)]
    labels: String,
    /// A lifetime like `30m`, `1h`, `2d`.
    #[serde(default)]
    expires: String,
    #[serde(default)]
    uses: String,
}

impl Default for TokenForm {
    /// The CLI's defaults: one node, within the hour.
    fn default() -> Self {
        TokenForm {
            pool: String::new(),
            labels: String::new(),
            expires: "1h".into(),
            uses: "1".into(),
        }
    }
}

/// The form's refusals, by field.
#[derive(Default)]
struct FieldErrors {
    pool: Option<String>,
    labels: Option<String>,
    expires: Option<String>,
    uses: Option<String>,
    form: Option<String>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        [
            &self.pool,
            &self.labels,
            &self.expires,
            &self.uses,
            &self.form,
        ]
        .iter()
        .any(|e| e.is_some())
    }

    /// Puts a store refusal next to the field its message starts with.
    fn from_refusal(e: StoreError) -> Result<(StatusCode, FieldErrors), PageError> {
        let api = ApiError::from(e.clone());
        if api.status.is_server_error() {
            return Err(PageError::Api(api));
        }
        let mut errors = FieldErrors::default();
        let m = api.message.clone();
        let slot = match &e {
            StoreError::NotFound(what) if what.starts_with("pool") => &mut errors.pool,
            _ if m.starts_with("labels:") => &mut errors.labels,
            _ if m.starts_with("expires:") => &mut errors.expires,
            _ if m.starts_with("uses:") => &mut errors.uses,
            _ => &mut errors.form,
        };
        *slot = Some(m);
        Ok((api.status, errors))
    }
}

/// What the form says, read at the edge with the CLI's parsers.
struct Parsed {
    labels: Vec<(String, String)>,
    valid_for: std::time::Duration,
    uses: u32,
}

impl TokenForm {
    fn parse(&self) -> Result<Parsed, Box<FieldErrors>> {
        let mut errors = FieldErrors::default();
        let labels = parse_labels(&self.labels).unwrap_or_else(|e| {
            errors.labels = Some(format!("labels: {e}"));
            Vec::new()
        });
        let valid_for = parse_lifetime(&self.expires).unwrap_or_else(|e| {
            errors.expires = Some(format!("expires: {e}"));
            std::time::Duration::ZERO
        });
        let text = self.uses.trim();
        let uses = text.parse().unwrap_or_else(|_| {
            errors.uses = Some(format!("uses: {text:?} is not a whole number in range"));
            0
        });
        if self.pool.trim().is_empty() {
            errors.pool = Some("pool: choose the peer pool of the nodes it enrols".into());
        }
        if errors.any() {
            return Err(Box::new(errors));
        }
        Ok(Parsed {
            labels,
            valid_for,
            uses,
        })
    }
}

#[derive(Template)]
#[template(path = "join_tokens.html")]
struct ListPage {
    frame: Frame,
    csrf: String,
    rows: Vec<TokenRow>,
    pools: Vec<Pool>,
    form: TokenForm,
    errors: FieldErrors,
    now: i64,
    admin: bool,
}

fn list_page(
    s: &AppState,
    status: StatusCode,
    user: SignedIn,
    headers: &HeaderMap,
    form: TokenForm,
    errors: FieldErrors,
) -> Result<Response, PageError> {
    let (pools, tokens) = s.store.read(|r| Ok((r.pools()?, r.join_tokens()?)))?;
    let admin = user.role == Role::Admin;
    let page = ListPage {
        csrf: user.csrf.clone(),
        frame: frame("Join tokens", user, headers),
        rows: rows(&pools, tokens),
        pools,
        form,
        errors,
        now: jiff::Timestamp::now().as_second(),
        admin,
    };
    Ok(render(status, &page.frame, &page, s.secure_cookies))
}

/// Every join token, newest first, and for admins the create form. Any signed-in user.
async fn list(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    list_page(
        &s,
        StatusCode::OK,
        user,
        &headers,
        TokenForm::default(),
        FieldErrors::default(),
    )
}

#[derive(Template)]
#[template(path = "join_token_created.html")]
struct CreatedPage {
    frame: Frame,
    row: TokenRow,
    secret: String,
    command: String,
    /// The controller was reached over plain HTTP, which `weft agent join` refuses.
    plain_http: bool,
    now: i64,
}

/// The controller's URL as the browser reached it, for the join command: HTTPS when weft
/// marks its cookies secure (it serves TLS, or sits behind a TLS proxy). A missing or odd
/// `Host` becomes a placeholder rather than a command that would mislead.
fn controller_url(headers: &HeaderMap, https: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("CONTROLLER");
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}/")
}

/// The command that enrols a node with `secret`: its name from its host name; its endpoint
/// is for the operator to fill in.
fn join_command(url: &str, secret: &str) -> String {
    format!(
        "weft agent join {url} --token {secret} --name \"$(hostname -s)\" \\\n  --listen 0.0.0.0:7443 --endpoint ENDPOINT --data-dir /var/lib/weft-agent"
    )
}

/// Creates a join token and shows its secret, once (never cached). Admins only.
async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    AdminForm { user, form }: AdminForm<TokenForm>,
) -> Result<Response, PageError> {
    let parsed = match form.parse() {
        Ok(p) => p,
        Err(errors) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return list_page(&s, status, user, &headers, form, *errors);
        }
    };
    let secret = new_join_secret();
    let (sec, pool, actor) = (secret.clone(), form.pool.clone(), user.name.clone());
    let created = s
        .store
        .write(move |w| {
            w.create_join_token(
                &sec,
                &pool,
                &parsed.labels,
                parsed.uses,
                parsed.valid_for,
                &actor,
            )
        })
        .await;
    match created {
        Ok(token) => {
            tracing::info!(user = %user.name, token = %token.id, "created join token");
            let pools = s.store.read(|r| r.pools())?;
            let url = controller_url(&headers, s.secure_cookies);
            let page = CreatedPage {
                frame: frame(format!("Join token {}", token.id), user, &headers),
                command: join_command(&url, &secret),
                plain_http: !s.secure_cookies,
                row: TokenRow {
                    pool: pool_name(&pools, token.peer_pool),
                    token,
                },
                secret,
                now: jiff::Timestamp::now().as_second(),
            };
            let mut resp = render(StatusCode::CREATED, &page.frame, &page, s.secure_cookies);
            // The page holds the token's secret: no cache may keep it.
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        }
        Err(e) => {
            let (status, errors) = FieldErrors::from_refusal(e)?;
            list_page(&s, status, user, &headers, form, errors)
        }
    }
}

#[derive(Deserialize)]
struct Empty {}

/// Revokes a join token: it enrols nothing more (nodes it enrolled stay). Admins only.
async fn revoke(
    State(s): State<AppState>,
    Path(id): Path<String>,
    AdminForm { user, .. }: AdminForm<Empty>,
) -> Result<Response, PageError> {
    let i = id.clone();
    s.store
        .write(move |w| w.revoke_join_token(&i))
        .await
        .map_err(|e| PageError::Api(e.into()))?;
    tracing::info!(user = %user.name, token = %id, "revoked join token");
    Ok(see_other(
        "/join-tokens",
        &format!("Revoked join token {id}"),
        s.secure_cookies,
    ))
}
