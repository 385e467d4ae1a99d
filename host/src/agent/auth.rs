//! The agent's side of the protocol as axum middleware: buffers the body (capped), verifies
//! and records the nonce before the handler runs, signs the handler's answer.

use crate::protocol::{
    GuardError, HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_BODY,
    NonceStore, ReplayGuard, SignedHeaders, VerifyError, sign_response,
};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Largest answer the agent signs; handlers write far less.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An unsigned refusal: `{"error": code}`.
fn refuse(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": code }))).into_response()
}

pub async fn verify_and_sign<S: NonceStore + Send + Sync + 'static>(
    State(guard): State<Arc<ReplayGuard<S>>>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    // The cap applies while reading: an oversized body is never held whole, nor hashed.
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            VerifyError::BodyTooLarge.code(),
        );
    };
    let now = unix_now();
    // Verification ends with a durable commit (an fsync): off the async workers.
    let checked = tokio::task::spawn_blocking(move || {
        let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let headers = SignedHeaders {
            node: header(HEADER_NODE),
            timestamp: header(HEADER_TIMESTAMP),
            nonce: header(HEADER_NONCE),
            signature: header(HEADER_SIGNATURE),
        };
        let outcome = guard.check(
            &headers,
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
            &body,
            now,
        );
        (outcome, guard, parts, body)
    })
    .await;
    let (outcome, guard, parts, body) = match checked {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("request verification panicked: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let verified = match outcome {
        Ok(v) => v,
        Err(GuardError::Refused(VerifyError::BodyTooLarge)) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                VerifyError::BodyTooLarge.code(),
            );
        }
        Err(GuardError::Refused(e)) => {
            tracing::info!(reason = %e, "refused an agent request");
            return refuse(StatusCode::UNAUTHORIZED, e.code());
        }
        Err(GuardError::Store(e)) => {
            tracing::error!("cannot record a request nonce: {e}");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "nonce_store");
        }
    };

    let (nonce, secret) = (verified.nonce, verified.secret.clone());
    // Handlers that care which secret verified the request (rotation) read it from here.
    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(verified);
    let answer = next.run(request).await;
    let (mut parts, body) = answer.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, MAX_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("cannot buffer an agent answer: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let signature = sign_response(&secret, guard.node(), nonce, parts.status.as_u16(), &body);
    // Both values are ASCII (a checked node id, hex digits): they are valid header values.
    if let (Ok(node), Ok(sig)) = (
        HeaderValue::from_str(guard.node()),
        HeaderValue::from_str(&signature),
    ) {
        parts.headers.insert(HEADER_NODE, node);
        parts.headers.insert(HEADER_SIGNATURE, sig);
    }
    Response::from_parts(parts, Body::from(body))
}
