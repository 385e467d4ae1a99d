//! Who is signed in to the pages, and whether a form post is genuine: the session cookie, the
//! extractors that are each page's access rule ([`SignedIn`], [`PageAdmin`]), and the CSRF
//! checks of form posts ([`SessionForm`], [`AdminForm`], [`AdminUpload`], [`PreSessionForm`]).
//!
//! CSRF: forms of a signed-in user carry the session's own token (stored with the session).
//! The login and setup forms have no session yet: they use a double-submit cookie (a random
//! `weft_csrf` cookie, `SameSite=Strict`, that the form must repeat). A signed token would need
//! a server key that survives restarts; the double-submit cookie needs nothing stored, and the
//! `Origin` check below stops the one attack it is weak against (a cookie planted by a sibling
//! site can only come with a foreign `Origin`). Every form post also has its `Origin` (when
//! the browser sends one) checked against the `Host` it was sent to.

use super::AppState;
use super::error::{ApiError, PageError};
use crate::store::{Role, SessionState, new_session_id};
use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, Multipart, MultipartError};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

pub const SESSION_COOKIE: &str = "weft_session";
pub const CSRF_COOKIE: &str = "weft_csrf";
pub const FLASH_COOKIE: &str = "weft_flash";

/// The largest form a page accepts (file uploads have their own limit).
const MAX_FORM: usize = 64 << 10;
/// The most a multipart upload may carry in all: the API's body limit, so a CSV the API
/// imports, the page imports too.
pub const MAX_UPLOAD: usize = super::MAX_BODY;
/// More than any CSRF token: a longer `csrf` field is refused without reading it all.
const MAX_TOKEN: usize = 256;

/// The value of cookie `name` in the request, if any.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A random token as weft makes them: 64 lower-case hex digits. Anything else in a cookie is
/// ignored rather than looked up.
fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The session id from the request's cookie, if it has the shape of one.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE).filter(|id| well_formed(id))
}

fn set_cookie(name: &str, value: &str, attrs: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/; HttpOnly; {attrs}{secure}");
    // Names, hex values and fixed attributes only: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

/// The session cookie for a new session. `Max-Age` is the absolute timeout, so the browser
/// keeps it across restarts but no longer than the server would honour it.
pub fn session_cookie(id: &str, secure: bool) -> HeaderValue {
    let max_age = crate::store::ABSOLUTE_TIMEOUT.as_secs();
    set_cookie(
        SESSION_COOKIE,
        id,
        &format!("SameSite=Lax; Max-Age={max_age}"),
        secure,
    )
}

pub fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", "SameSite=Lax; Max-Age=0", secure)
}

/// The pre-session CSRF token of the login and setup forms: the browser's, if it has one,
/// else a new one with the cookie to set.
pub fn pre_session_csrf(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    match cookie(headers, CSRF_COOKIE).filter(|t| well_formed(t)) {
        Some(t) => (t.to_string(), None),
        None => {
            let t = new_session_id();
            let c = set_cookie(CSRF_COOKIE, &t, "SameSite=Strict", secure);
            (t, Some(c))
        }
    }
}

/// A one-line message for the next page (after a redirect), hex-encoded so any text fits in a
/// cookie; the page that shows it clears it.
pub fn flash_cookie(message: &str, secure: bool) -> HeaderValue {
    set_cookie(
        FLASH_COOKIE,
        &hex::encode(message),
        "SameSite=Lax; Max-Age=60",
        secure,
    )
}

pub fn flash(headers: &HeaderMap) -> Option<String> {
    let bytes = hex::decode(cookie(headers, FLASH_COOKIE)?).ok()?;
    String::from_utf8(bytes).ok()
}

/// Where to go after login: only a path on this site. Anything that a browser could read as
/// another host (`//evil`, `/\evil`, `https://evil`) becomes `/`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// The client's address, for throttling failed logins (absent when served without
/// connection info, as some tests do).
pub async fn client_ip(parts: &mut Parts, state: &AppState) -> Option<std::net::IpAddr> {
    ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
        .await
        .ok()
        .map(|c| c.0.ip())
}

/// A signed-in user: the access rule "any user" of a page. Anonymous callers are sent to the
/// login page, which brings them back here.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        // Only a page can be come back to: after a form post, login leads to `/`.
        let next = match (&parts.method, parts.uri.path_and_query()) {
            (&axum::http::Method::GET, Some(p)) => p.as_str().to_string(),
            _ => "/".to_string(),
        };
        let sign_in = || PageError::SignIn { next: next.clone() };
        let Some(id) = session_id(&parts.headers).map(str::to_string) else {
            return Err(sign_in());
        };
        let Some(session) = state.store.read(|r| r.session(&id))? else {
            return Err(sign_in());
        };
        let now = state.clock.now();
        match session.state(now) {
            SessionState::Valid => {}
            SessionState::ValidTouch => {
                let id = id.clone();
                state
                    .store
                    .write(move |w| w.touch_session(&id, now))
                    .await?;
            }
            SessionState::Expired => {
                state.store.write(move |w| w.delete_session(&id)).await?;
                return Err(sign_in());
            }
        }
        // The user may have been removed since: the session dies with them.
        let Some(user) = state.store.read(|r| r.user(&session.user))? else {
            return Err(sign_in());
        };
        Ok(SignedIn {
            name: user.name,
            role: user.role,
            csrf: session.csrf,
        })
    }
}

/// A signed-in admin: the access rule of every page that changes something.
pub struct PageAdmin(pub SignedIn);

impl FromRequestParts<AppState> for PageAdmin {
    type Rejection = PageError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let user = SignedIn::from_request_parts(parts, state).await?;
        require_admin(&user)?;
        Ok(PageAdmin(user))
    }
}

fn require_admin(user: &SignedIn) -> Result<(), PageError> {
    match user.role {
        Role::Admin => Ok(()),
        Role::Viewer => Err(PageError::Forbidden(format!(
            "{} is a viewer and cannot change anything",
            user.name
        ))),
    }
}

/// Refuses a form post from another site: a foreign `Origin`, or a browser saying the request
/// is cross-site. A request without either header (not a browser, or an old one) passes here
/// and still needs the CSRF token.
fn check_origin(parts: &Parts) -> Result<(), PageError> {
    let foreign = PageError::Forbidden("this form was sent from another site".into());
    if parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(foreign);
    }
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("http://").or(o.strip_prefix("https://")));
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(foreign),
    }
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

fn forged() -> PageError {
    PageError::Forbidden("the form's CSRF token is missing or wrong".into())
}

/// Checks the token a form sent against the one expected (none expected: nothing passes).
fn check_csrf(sent: &str, expected: Option<&str>) -> Result<(), PageError> {
    let expected = expected.ok_or_else(forged)?;
    // Both sides are random 256-bit values: compare their hashes, so timing reveals nothing.
    use sha2::{Digest, Sha256};
    if sent.is_empty() || Sha256::digest(sent) != Sha256::digest(expected) {
        return Err(forged());
    }
    Ok(())
}

/// Reads a form body, checking its `csrf` field against `expected` before parsing the rest:
/// a handler never sees a forged form.
async fn read_form<T: DeserializeOwned>(
    body: Body,
    expected: Option<&str>,
) -> Result<T, PageError> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| PageError::BadForm("the form is too large or unreadable".into()))?;
    let sent = serde_urlencoded::from_bytes::<CsrfField>(&bytes).map_err(|_| forged())?;
    check_csrf(&sent.csrf, expected)?;
    serde_urlencoded::from_bytes(&bytes).map_err(|e| PageError::BadForm(e.to_string()))
}

/// What every admin write passes before its body is read: the `Origin`, a live session, the
/// admin role. The request comes back whole, body unread.
async fn admin_request(req: Request, state: &AppState) -> Result<(SignedIn, Request), PageError> {
    let (mut parts, body) = req.into_parts();
    check_origin(&parts)?;
    let user = SignedIn::from_request_parts(&mut parts, state).await?;
    require_admin(&user)?;
    Ok((user, Request::from_parts(parts, body)))
}

/// A form posted by a signed-in user, with the session's CSRF token.
pub struct SessionForm<T> {
    pub user: SignedIn,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for SessionForm<T> {
    type Rejection = PageError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        check_origin(&parts)?;
        let user = SignedIn::from_request_parts(&mut parts, state).await?;
        let form = read_form(body, Some(&user.csrf)).await?;
        Ok(SessionForm { user, form })
    }
}

/// A form posted by a signed-in admin: a viewer gets 403 before the body is even read.
pub struct AdminForm<T> {
    pub user: SignedIn,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for AdminForm<T> {
    type Rejection = PageError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (user, req) = admin_request(req, state).await?;
        let form = read_form(req.into_body(), Some(&user.csrf)).await?;
        Ok(AdminForm { user, form })
    }
}

/// A `multipart/form-data` form (a file upload) posted by a signed-in admin, with the same
/// guarantees as [`AdminForm`]: a viewer gets 403 before the body is read, and the first field
/// must be the session's `csrf` token, checked before any other field is read. The fields are
/// held in memory, at most [`MAX_UPLOAD`] bytes in all.
pub struct AdminUpload {
    pub user: SignedIn,
    pub fields: Vec<UploadField>,
}

/// One field of an upload, in the order sent (the `csrf` field is not among them).
pub struct UploadField {
    pub name: String,
    /// The file's name on the sender's side, for a file field.
    pub file_name: Option<String>,
    pub bytes: Bytes,
}

impl AdminUpload {
    /// The first field called `name`.
    pub fn field(&self, name: &str) -> Option<&UploadField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

impl FromRequest<AppState> for AdminUpload {
    type Rejection = PageError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (user, req) = admin_request(req, state).await?;
        let fields = read_upload(req, &user.csrf).await?;
        Ok(AdminUpload { user, fields })
    }
}

/// Reads a multipart body whose first field must be `csrf` and match `expected`; only then
/// are the other fields read.
async fn read_upload(req: Request, expected: &str) -> Result<Vec<UploadField>, PageError> {
    // Not multipart at all: there is no token to check, so it is refused as forged.
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|_| forged())?;
    {
        let mut first = multipart
            .next_field()
            .await
            .map_err(|e| upload_error(e, forged()))?
            .ok_or_else(forged)?;
        if first.name() != Some("csrf") {
            return Err(forged());
        }
        let sent = read_field(&mut first, MAX_TOKEN, forged, forged).await?;
        check_csrf(
            std::str::from_utf8(&sent).unwrap_or_default(),
            Some(expected),
        )?;
    }
    let mut fields = Vec::new();
    let mut left = MAX_UPLOAD;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| upload_error(e, unreadable()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = read_field(&mut field, left, too_large, unreadable).await?;
        left -= bytes.len();
        fields.push(UploadField {
            name,
            file_name,
            bytes,
        });
    }
    Ok(fields)
}

/// A field's content, at most `limit` bytes: more is the error `over`, a broken stream the
/// error `broken` (or 413 if the whole body was too large).
async fn read_field(
    field: &mut Field<'_>,
    limit: usize,
    over: fn() -> PageError,
    broken: fn() -> PageError,
) -> Result<Bytes, PageError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| upload_error(e, broken()))? {
        if buf.len() + chunk.len() > limit {
            return Err(over());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn unreadable() -> PageError {
    PageError::BadForm("the upload is unreadable".into())
}

fn too_large() -> PageError {
    PageError::Api(ApiError::too_large())
}

/// A broken upload: too large is 413 whatever the stage; otherwise `other`.
fn upload_error(e: MultipartError, other: PageError) -> PageError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        other
    }
}

/// A form posted before signing in (login, setup), with the double-submit CSRF cookie.
pub struct PreSessionForm<T> {
    pub form: T,
    pub headers: HeaderMap,
    pub client: Option<std::net::IpAddr>,
}

impl<T: DeserializeOwned> FromRequest<AppState> for PreSessionForm<T> {
    type Rejection = PageError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        check_origin(&parts)?;
        let client = client_ip(&mut parts, state).await;
        let expected = cookie(&parts.headers, CSRF_COOKIE).filter(|t| well_formed(t));
        let form = read_form(body, expected).await?;
        Ok(PreSessionForm {
            form,
            headers: parts.headers,
            client,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_accepts_only_paths_on_this_site() {
        assert_eq!(safe_next(Some("/pools?x=1")), "/pools?x=1");
        for evil in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/\r\nSet-Cookie:x",
        ] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; weft_session=xyz"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(session_id(&h), None, "not the shape of an id");
    }
}
