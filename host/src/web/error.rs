//! The one place where errors become HTTP: `{"error": {"code", "message"}}` with a status that
//! says whose fault it was. Internal errors are logged with their cause and shown as a plain
//! 500; input never causes one.

use crate::store::StoreError;
use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `pool_overlap`.
    pub code: String,
    /// What was wrong, for a person.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A body that did not parse: 400 if it is not JSON, 422 if it is but does not fit.
    pub fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("invalid request body: {e}"),
            ),
            _ => Self::bad_request(format!("malformed request body: {e}")),
        }
    }

    /// A fault of ours: logged with its cause, shown as a plain 500.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body is larger than {} MiB", super::MAX_BODY >> 20),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown API token (send Authorization: Bearer <token>)",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StatusCode as S;
        use StoreError as E;
        let (status, code) = match &e {
            E::Db(_) | E::Corrupt { .. } | E::SchemaTooNew { .. } | E::Closed | E::Panicked => {
                tracing::error!(error = %e, "store failure");
                return ApiError::new(S::INTERNAL_SERVER_ERROR, "internal", "internal error");
            }
            E::NotFound(_) => (S::NOT_FOUND, "not_found"),
            E::BadCursor(_) => (S::BAD_REQUEST, "malformed"),
            E::PoolNameTaken(_) => (S::CONFLICT, "name_taken"),
            E::TokenNameTaken(_) | E::UserNameTaken(_) => (S::CONFLICT, "name_taken"),
            E::PeerNameTaken(_) | E::NodeNameTaken(_) => (S::CONFLICT, "name_taken"),
            E::NodeHasPeers { .. } => (S::CONFLICT, "node_has_peers"),
            E::MeshNameTaken(_) => (S::CONFLICT, "name_taken"),
            E::NoOverlayPool => (S::CONFLICT, "no_overlay_pool"),
            E::NodeInMesh { .. } => (S::CONFLICT, "node_in_mesh"),
            E::PoolReferenced { .. } => (S::CONFLICT, "pool_in_use"),
            E::PeerKeyTaken { .. } => (S::CONFLICT, "key_taken"),
            E::PoolOverlap { .. } => (S::CONFLICT, "pool_overlap"),
            E::PoolInUse { .. } => (S::CONFLICT, "pool_in_use"),
            E::Exhausted(_) => (S::CONFLICT, "exhausted"),
            E::Taken { .. } => (S::CONFLICT, "taken"),
            E::IdempotencyKeyUsed { .. } => (S::CONFLICT, "idempotency_key_used"),
            E::NotAllocated { .. } => (S::CONFLICT, "not_allocated"),
            E::NotInPool { .. }
            | E::OutsideEveryPool { .. }
            | E::NotUsable(_)
            | E::Gateway(_)
            | E::PoolRule(_)
            | E::RecordRule(_)
            | E::Import { .. }
            | E::Invalid(_) => (S::UNPROCESSABLE_ENTITY, "rule"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<crate::plugin_run::RunError> for ApiError {
    fn from(e: crate::plugin_run::RunError) -> Self {
        use crate::plugin_run::RunError as R;
        use crate::plugins::PluginError as P;
        use crate::syncs::SyncError;
        use StatusCode as S;
        let (status, code) = match &e {
            R::NotFound(_) | R::Plugin(P::NotFound(_)) => (S::NOT_FOUND, "not_found"),
            R::BadInput { .. } => (S::UNPROCESSABLE_ENTITY, "invalid"),
            R::Plugin(P::WrongWorld { .. }) => (S::CONFLICT, "wrong_world"),
            R::Plugin(P::Failing { .. }) => (S::CONFLICT, "plugin_failing"),
            R::Plugin(P::Busy) => (S::SERVICE_UNAVAILABLE, "busy"),
            // The plugin misbehaved, not the caller: weft is the gateway to it.
            R::Plugin(
                P::Timeout { .. }
                | P::OutOfMemory { .. }
                | P::Trap { .. }
                | P::Returned { .. }
                | P::BadOutput { .. },
            ) => (S::BAD_GATEWAY, "plugin_failed"),
            R::Sync(SyncError::AlreadyRunning(_)) => (S::CONFLICT, "already_running"),
            R::Sync(SyncError::Plugin(P::NotFound(_))) => (S::NOT_FOUND, "not_found"),
            R::Sync(SyncError::Plugin(_)) => (S::CONFLICT, "wrong_world"),
            R::Interrupted(_) | R::Sync(SyncError::Interrupted(_)) => {
                (S::SERVICE_UNAVAILABLE, "shutting_down")
            }
            R::Store(_) | R::Sync(SyncError::Store(_)) => return ApiError::internal(&e),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<crate::controller::peers::PeerError> for ApiError {
    fn from(e: crate::controller::peers::PeerError) -> Self {
        use crate::controller::peers::PeerError as P;
        use StatusCode as S;
        let e = match e {
            P::Store(store) => return store.into(),
            other => other,
        };
        let (status, code) = match &e {
            // Answered above, by the store's own mapping.
            P::Store(_) => return ApiError::internal(&e),
            P::BadName(_) => (S::UNPROCESSABLE_ENTITY, "invalid"),
            P::UnknownNode(_) => (S::UNPROCESSABLE_ENTITY, "unknown_node"),
            P::NodeDisabled(_) => (S::CONFLICT, "node_disabled"),
            P::NodeFull { .. } => (S::CONFLICT, "node_full"),
            P::NoEligibleNode(_) => (S::CONFLICT, "no_eligible_node"),
            // The node's agent failed, not the caller: weft is the gateway to it.
            P::Agent { .. } | P::DeleteRefused { .. } => (S::BAD_GATEWAY, "agent_failed"),
            P::RollbackFailed { .. } => {
                tracing::error!(error = %e, "peer rollback failed");
                (S::BAD_GATEWAY, "agent_failed")
            }
            // The node's registered endpoint cannot go into a client's file.
            P::Config { .. } => (S::CONFLICT, "node_misconfigured"),
            P::KeyGen(_) | P::Placement(_) => return ApiError::internal(&e),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::too_large();
        }
        match r {
            JsonRejection::JsonDataError(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("invalid request body: {}", source_text(&e)),
            ),
            other => {
                ApiError::bad_request(format!("malformed request body: {}", source_text(&other)))
            }
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::too_large();
        }
        ApiError::bad_request(format!("unreadable request body: {}", source_text(&r)))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("malformed query: {}", source_text(&r)))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(format!("malformed path: {}", source_text(&r)))
    }
}

/// The innermost cause, which names the field and what was wrong with it.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `Json` whose rejection is an [`ApiError`].
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// The raw body, whose rejection is an [`ApiError`].
pub struct ApiBody(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for ApiBody {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        Ok(ApiBody(axum::body::Bytes::from_request(req, state).await?))
    }
}

/// `Query` whose rejection is an [`ApiError`].
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path` whose rejection is an [`ApiError`].
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A page request that cannot be answered with its page: the same statuses as the API, shown
/// as HTML. An anonymous caller is sent to the login page instead.
#[derive(Debug)]
pub enum PageError {
    /// No live session: 303 to `/login?next=<the page asked for>`.
    SignIn { next: String },
    /// 403: a viewer tried to change something, or a form was forged.
    Forbidden(String),
    /// 404.
    NotFound,
    /// 429: too many failed logins for this name or address.
    TooManyAttempts,
    /// 400: a form that does not parse.
    BadForm(String),
    /// Anything the API would answer: same status, message shown on the page.
    Api(ApiError),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError::Api(e.into())
    }
}

/// A page's path that does not decode (e.g. a segment that is not UTF-8): 400, as the API.
impl From<PathRejection> for PageError {
    fn from(r: PathRejection) -> Self {
        PageError::Api(r.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            PageError::SignIn { next } => {
                let query =
                    serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
                return axum::response::Redirect::to(&format!("/login?{query}")).into_response();
            }
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            PageError::NotFound => (StatusCode::NOT_FOUND, "There is no such page.".into()),
            PageError::TooManyAttempts => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed logins: wait a minute and try again.".into(),
            ),
            PageError::BadForm(m) => (StatusCode::BAD_REQUEST, format!("Malformed form: {m}")),
            PageError::Api(e) => (e.status, e.message),
        };
        (status, super::pages::error_page(status, &message)).into_response()
    }
}

impl From<crate::controller::nodes::NodeError> for ApiError {
    fn from(e: crate::controller::nodes::NodeError) -> Self {
        use crate::controller::nodes::NodeError as N;
        match e {
            N::Store(store) => store.into(),
            // A sealed secret that does not open is our data dir's fault, not the caller's.
            N::Secret(_) | N::BadSecret(_) | N::Client { .. } => ApiError::internal(&e),
            N::RotationRefused { .. } | N::RotationUnconfirmed { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "agent_failed", e.to_string())
            }
        }
    }
}
