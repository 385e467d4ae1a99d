//! The pool pages: the list, the create form, delete with confirmation, CSV export and import.
//!
//! Every change goes through the same store operations as the JSON API (`web/pools.rs`), and
//! its refusals become the form's field errors here, with the status the API would answer.

use super::{Frame, PoolRow, render, see_other};
use crate::ipam::PoolRuleError;
use crate::store::{Pool, PoolSpec, Role, StoreError};
use crate::web::error::{ApiError, PageError};
use crate::web::session::{AdminForm, AdminUpload, PageAdmin, SignedIn};
use crate::web::{AppState, csv_io};
use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use serde::Deserialize;
use std::fmt::Write;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/pools", get(list).post(create))
        .route("/pools/new", get(new_form))
        .route("/pools/{pool}/delete", get(confirm_delete).post(delete))
        .route("/pools/{pool}/export.csv", get(export))
        .route("/pools/{pool}/import", get(import_form).post(import))
}

/// The `{pool}` of a URL (a name, or an id: the store resolves both), with a page's rejection.
#[derive(Deserialize, FromRequestParts)]
#[serde(transparent)]
#[from_request(via(Path), rejection(PageError))]
struct PoolName(String);

/// `s` as one URL path segment or query value: everything but RFC 3986's unreserved
/// characters percent-encoded, so a name with `/`, `?`, `#`, `&`, `+` or spaces stays one piece.
pub fn url_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A pool's segment in `/pools/{pool}/…`: its name, except for `.` and `..`, which a browser
/// would resolve away (even percent-encoded); those go by id, which the store also accepts
/// and no name can be mistaken for (names are never all digits).
pub fn pool_seg(pool: &Pool) -> String {
    match pool.name.as_str() {
        "." | ".." => pool.id.to_string(),
        name => url_part(name),
    }
}

fn frame(title: impl Into<String>, user: SignedIn, headers: &HeaderMap) -> Frame {
    Frame::signed_in("pools", title, user, headers)
}

/// An error the store gave for something the user sent: the status and message the API
/// would answer. Faults of ours (5xx) stay errors, shown as the plain error page.
fn refusal(e: StoreError) -> Result<ApiError, PageError> {
    let api = ApiError::from(e);
    if api.status.is_server_error() {
        return Err(PageError::Api(api));
    }
    Ok(api)
}

// ---- the list ----

#[derive(Template)]
#[template(path = "pools.html")]
struct PoolsPage {
    frame: Frame,
    rows: Vec<PoolRow>,
    /// Write links are shown to admins only.
    admin: bool,
}

/// Every pool with its utilization, counts and actions. Any signed-in user.
async fn list(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let rows = s
        .store
        .read(|r| r.pools())?
        .into_iter()
        .map(|pool| {
            let stats = pool.stats();
            PoolRow { pool, stats }
        })
        .collect();
    let admin = user.role == Role::Admin;
    let page = PoolsPage {
        frame: frame("Pools", user, &headers),
        rows,
        admin,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

// ---- create ----

/// The create form as typed: kept verbatim so a refused form comes back as it was sent.
#[derive(Deserialize)]
struct NewPool {
    #[serde(default)]
    name: String,
    #[serde(default)]
    cidr: String,
    #[serde(default)]
    description: String,
    /// One range per line, `FIRST-LAST`.
    #[serde(default)]
    static_ranges: String,
    /// A checkbox: present ("on") when ticked, absent when not.
    #[serde(default)]
    reserve_gateway: Option<String>,
}

/// The messages shown next to each field, and above the form for the rest.
#[derive(Default)]
struct FieldErrors {
    name: Option<String>,
    cidr: Option<String>,
    description: Option<String>,
    static_ranges: Option<String>,
    form: Option<String>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        self.name.is_some()
            || self.cidr.is_some()
            || self.description.is_some()
            || self.static_ranges.is_some()
            || self.form.is_some()
    }

    /// Puts a store refusal next to the field it is about.
    fn from_refusal(e: &StoreError, message: String) -> FieldErrors {
        let mut errors = FieldErrors::default();
        let slot = match e {
            // `create_pool`'s only `Invalid` refusals are about the name.
            StoreError::PoolNameTaken(_) | StoreError::Invalid(_) => &mut errors.name,
            StoreError::PoolOverlap { .. }
            | StoreError::PoolRule(PoolRuleError::HostBitsSet { .. }) => &mut errors.cidr,
            StoreError::PoolRule(_) => &mut errors.static_ranges,
            StoreError::RecordRule(crate::ipam::RecordRuleError::TooLong {
                field: "description",
                ..
            }) => &mut errors.description,
            _ => &mut errors.form,
        };
        *slot = Some(message);
        errors
    }
}

impl NewPool {
    /// The spec to send to the store, or the errors found at the edge: a name is required
    /// and the CIDR must parse (`10.0.0.0/33` and `banana` are the field's error, not a
    /// malformed form). Everything else is the store's rule.
    fn spec(&self) -> Result<PoolSpec, FieldErrors> {
        let mut errors = FieldErrors::default();
        if self.name.trim().is_empty() {
            errors.name = Some("Enter a name for the pool.".into());
        }
        let cidr = self.cidr.trim();
        let parsed = if cidr.is_empty() {
            errors.cidr = Some("Enter the pool's network, e.g. 10.0.0.0/24.".into());
            None
        } else {
            match cidr.parse::<IpNet>() {
                Ok(net) => Some(net),
                Err(_) => {
                    errors.cidr = Some(format!(
                        "{cidr:?} is not a network in CIDR form (e.g. 10.0.0.0/24 or fd00:1::/64)"
                    ));
                    None
                }
            }
        };
        match parsed {
            Some(cidr) if !errors.any() => {
                let description = self.description.trim();
                Ok(PoolSpec {
                    name: self.name.trim().to_string(),
                    cidr,
                    description: (!description.is_empty()).then(|| description.to_string()),
                    reserve_gateway: self.reserve_gateway.is_some(),
                    static_ranges: self
                        .static_ranges
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            }
            _ => Err(errors),
        }
    }
}

#[derive(Template)]
#[template(path = "pool_new.html")]
struct NewPoolPage {
    frame: Frame,
    csrf: String,
    form: NewPool,
    errors: FieldErrors,
}

fn new_page(
    status: StatusCode,
    user: SignedIn,
    headers: &HeaderMap,
    form: NewPool,
    errors: FieldErrors,
    secure: bool,
) -> Response {
    let page = NewPoolPage {
        csrf: user.csrf.clone(),
        frame: frame("New pool", user, headers),
        form,
        errors,
    };
    render(status, &page.frame, &page, secure)
}

/// The create form, empty (the gateway reserved by default, as in the API). Admins only.
async fn new_form(
    State(s): State<AppState>,
    PageAdmin(user): PageAdmin,
    headers: HeaderMap,
) -> Response {
    let form = NewPool {
        name: String::new(),
        cidr: String::new(),
        description: String::new(),
        static_ranges: String::new(),
        reserve_gateway: Some("on".into()),
    };
    new_page(
        StatusCode::OK,
        user,
        &headers,
        form,
        FieldErrors::default(),
        s.secure_cookies,
    )
}

/// Creates a pool: 303 to the list, or the form again with its errors (422 invalid, 409 a
/// conflict, as the API). Admins only, with the session's CSRF token.
async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    AdminForm { user, form }: AdminForm<NewPool>,
) -> Result<Response, PageError> {
    let spec = match form.spec() {
        Ok(spec) => spec,
        Err(errors) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(new_page(
                status,
                user,
                &headers,
                form,
                errors,
                s.secure_cookies,
            ));
        }
    };
    let actor = user.name.clone();
    match s.store.write(move |w| w.create_pool(&spec, &actor)).await {
        Ok(pool) => {
            tracing::info!(user = %user.name, pool = %pool.name, "created pool");
            let message = format!("Created pool {}", pool.name);
            Ok(see_other("/pools", &message, s.secure_cookies))
        }
        Err(e) => {
            let api = refusal(e.clone())?;
            let errors = FieldErrors::from_refusal(&e, api.message);
            Ok(new_page(
                api.status,
                user,
                &headers,
                form,
                errors,
                s.secure_cookies,
            ))
        }
    }
}

// ---- delete ----

#[derive(Template)]
#[template(path = "pool_delete.html")]
struct DeletePage {
    frame: Frame,
    csrf: String,
    row: PoolRow,
    seg: String,
    force: bool,
    error: Option<String>,
}

fn delete_page(
    status: StatusCode,
    user: SignedIn,
    headers: &HeaderMap,
    pool: Pool,
    force: bool,
    error: Option<String>,
    secure: bool,
) -> Response {
    let page = DeletePage {
        csrf: user.csrf.clone(),
        frame: frame(format!("Delete pool {}", pool.name), user, headers),
        seg: pool_seg(&pool),
        row: PoolRow {
            stats: pool.stats(),
            pool,
        },
        force,
        error,
    };
    render(status, &page.frame, &page, secure)
}

/// The confirmation page: what the pool holds, and the force rule. Admins only.
async fn confirm_delete(
    State(s): State<AppState>,
    PageAdmin(user): PageAdmin,
    PoolName(name): PoolName,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let pool = s.store.read(|r| r.pool(&name))?;
    Ok(delete_page(
        StatusCode::OK,
        user,
        &headers,
        pool,
        false,
        None,
        s.secure_cookies,
    ))
}

#[derive(Deserialize)]
struct DeleteForm {
    /// A checkbox: present when ticked.
    #[serde(default)]
    force: Option<String>,
}

/// Deletes a pool, by the API's rule: refused (409, the page again with the reason) while
/// addresses are allocated, unless forced. Admins only, with the session's CSRF token.
async fn delete(
    State(s): State<AppState>,
    PoolName(name): PoolName,
    headers: HeaderMap,
    AdminForm { user, form }: AdminForm<DeleteForm>,
) -> Result<Response, PageError> {
    let force = form.force.is_some();
    let target = name.clone();
    match s.store.write(move |w| w.delete_pool(&target, force)).await {
        Ok(pool) => {
            tracing::info!(user = %user.name, pool = %pool.name, force, "deleted pool");
            let message = format!("Deleted pool {}", pool.name);
            Ok(see_other("/pools", &message, s.secure_cookies))
        }
        Err(e @ (StoreError::PoolInUse { .. } | StoreError::PoolReferenced { .. })) => {
            let api = refusal(e)?;
            let pool = s.store.read(|r| r.pool(&name))?;
            Ok(delete_page(
                api.status,
                user,
                &headers,
                pool,
                force,
                Some(api.message),
                s.secure_cookies,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

// ---- CSV ----

/// The pool's records as the API's CSV, as a download. Any signed-in user.
async fn export(
    State(s): State<AppState>,
    _: SignedIn,
    PoolName(name): PoolName,
) -> Result<Response, PageError> {
    let (pool, records) = s.store.read(|r| {
        let pool = r.pool(&name)?;
        let records = r.pool_records(&pool)?;
        Ok((pool, records))
    })?;
    // A plain ASCII file name for every browser, and the exact one (RFC 6266) for those that
    // read it; both built only of characters that are safe in a header.
    let plain: String = pool
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "attachment; filename=\"{plain}.csv\"; filename*=UTF-8''{}.csv",
        url_part(&pool.name)
    );
    let disposition = HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static(
        "attachment; filename=\"pool.csv\"",
    ));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        csv_io::export(&records),
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "pool_import.html")]
struct ImportPage {
    frame: Frame,
    csrf: String,
    pool: Pool,
    seg: String,
    /// Why the file was refused, above the form.
    error: Option<String>,
    /// No file was chosen.
    file_error: Option<String>,
}

fn import_page(
    status: StatusCode,
    user: SignedIn,
    headers: &HeaderMap,
    pool: Pool,
    error: Option<String>,
    file_error: Option<String>,
    secure: bool,
) -> Response {
    let page = ImportPage {
        csrf: user.csrf.clone(),
        frame: frame(format!("Import into {}", pool.name), user, headers),
        seg: pool_seg(&pool),
        pool,
        error,
        file_error,
    };
    render(status, &page.frame, &page, secure)
}

/// The upload form. Admins only.
async fn import_form(
    State(s): State<AppState>,
    PageAdmin(user): PageAdmin,
    PoolName(name): PoolName,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let pool = s.store.read(|r| r.pool(&name))?;
    Ok(import_page(
        StatusCode::OK,
        user,
        &headers,
        pool,
        None,
        None,
        s.secure_cookies,
    ))
}

/// Imports an uploaded CSV, all or nothing: one bad row refuses the whole file (422, its line
/// and reason shown). On success, 303 to the pool's addresses. Admins only, with the
/// session's CSRF token as the upload's first field.
async fn import(
    State(s): State<AppState>,
    PoolName(name): PoolName,
    headers: HeaderMap,
    upload: AdminUpload,
) -> Result<Response, PageError> {
    let pool = s.store.read(|r| r.pool(&name))?;
    let user = upload.user.clone();
    let refused = |pool: Pool, error: Option<String>, file_error: Option<String>| {
        import_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            user.clone(),
            &headers,
            pool,
            error,
            file_error,
            s.secure_cookies,
        )
    };
    // A browser sends an empty file field when none was chosen.
    let Some(file) = upload.field("file").filter(|f| !f.bytes.is_empty()) else {
        return Ok(refused(
            pool,
            None,
            Some("Choose a CSV file to import.".into()),
        ));
    };
    let rows = match csv_io::parse(&file.bytes) {
        Ok(rows) => rows,
        Err(e) => {
            let error = nothing_imported(file.file_name.as_deref(), &e.message);
            return Ok(refused(pool, Some(error), None));
        }
    };
    let (target, actor) = (pool.name.clone(), user.name.clone());
    match s
        .store
        .write(move |w| w.import(&target, &rows, &actor))
        .await
    {
        Ok(n) => {
            tracing::info!(user = %user.name, pool = %pool.name, rows = n, "imported CSV");
            let to = format!("/addresses?pool={}", url_part(&pool.name));
            let message = format!("Imported {n} rows into {}", pool.name);
            Ok(see_other(&to, &message, s.secure_cookies))
        }
        Err(e) => {
            let api = refusal(e)?;
            if api.status == StatusCode::NOT_FOUND {
                // The pool went away between reading and writing.
                return Err(PageError::Api(api));
            }
            let error = nothing_imported(file.file_name.as_deref(), &api.message);
            Ok(refused(pool, Some(error), None))
        }
    }
}

/// The message of a refused file, naming it, so it is clear which upload it is about.
fn nothing_imported(file_name: Option<&str>, reason: &str) -> String {
    match file_name.filter(|n| !n.is_empty()) {
        Some(name) => format!("Nothing was imported from {name}: {reason}"),
        None => format!("Nothing was imported: {reason}"),
    }
}

#[cfg(test)]
mod unit_tests {
    use super::url_part;

    #[test]
    fn url_parts_encode_everything_but_unreserved_characters() {
        assert_eq!(url_part("lab-1.a_b~"), "lab-1.a_b~");
        assert_eq!(url_part("a b/c?d#e&f+g"), "a%20b%2Fc%3Fd%23e%26f%2Bg");
        assert_eq!(url_part("é"), "%C3%A9");
    }
}
