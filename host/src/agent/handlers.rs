//! The agent's endpoints (the table in `agent_api`), each a thin call into the data plane.
//! A refusal is an `AgentErrorBody` with a status that says whose fault it was.

use crate::agent_api::{AgentErrorBody, InterfaceSpec, MeshSpec, PeerSpec, PublicKey};
use crate::dataplane::{DataPlane, PlaneError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
struct Agent {
    plane: Arc<DataPlane>,
    started: Instant,
}

pub fn routes(plane: Arc<DataPlane>, started: Instant) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/interface", put(put_interface))
        .route("/v1/wg", get(dump))
        .route("/v1/peers", post(add_peer))
        .route("/v1/peers/{key}", delete(remove_peer))
        .route("/v1/meshes", get(meshes))
        .route("/v1/meshes/{id}", put(put_mesh).delete(delete_mesh))
        .with_state(Agent { plane, started })
}

pub(super) fn refuse(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    let body = AgentErrorBody {
        error: error.into(),
        message: message.into(),
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for PlaneError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            PlaneError::NoInterface(_) => (StatusCode::CONFLICT, "no_interface"),
            PlaneError::Overlap { .. } => (StatusCode::CONFLICT, "overlap"),
            PlaneError::Full(_) => (StatusCode::CONFLICT, "full"),
            PlaneError::Stale { .. } => (StatusCode::CONFLICT, "stale_generation"),
            PlaneError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            _ => {
                tracing::error!(error = %self, "data plane failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "dataplane")
            }
        };
        refuse(status, code, self.to_string())
    }
}

/// A JSON body read as bytes: the signed client sends no `Content-Type`, and a body that does
/// not parse is the caller's 400, with serde's message.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body)
}

pub(super) fn bad_body(e: serde_json::Error) -> Response {
    refuse(StatusCode::BAD_REQUEST, "bad_body", e.to_string())
}

async fn health(State(a): State<Agent>) -> Response {
    Json(super::health(a.started, &a.plane).await).into_response()
}

async fn put_interface(State(a): State<Agent>, body: axum::body::Bytes) -> Response {
    let spec: InterfaceSpec = match parse(&body) {
        Ok(s) => s,
        Err(e) => return bad_body(e),
    };
    match a.plane.put_interface(&spec).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn dump(State(a): State<Agent>) -> Response {
    Json(a.plane.dump().await).into_response()
}

async fn add_peer(State(a): State<Agent>, body: axum::body::Bytes) -> Response {
    let spec: PeerSpec = match parse(&body) {
        Ok(s) => s,
        Err(e) => return bad_body(e),
    };
    match a.plane.add_peer(&spec).await {
        Ok((dump, true)) => (StatusCode::CREATED, Json(dump)).into_response(),
        Ok((dump, false)) => Json(dump).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn remove_peer(State(a): State<Agent>, Path(key): Path<String>) -> Response {
    let Ok(key) = PublicKey::from_hex(&key) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!("{key:?} is not a public key in hex (64 lowercase digits)"),
        );
    };
    match a.plane.remove_peer(&key).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => refuse(StatusCode::NOT_FOUND, "no_peer", format!("no peer {key}")),
        Err(e) => e.into_response(),
    }
}

async fn meshes(State(a): State<Agent>) -> Response {
    Json(a.plane.meshes().await).into_response()
}

async fn put_mesh(
    State(a): State<Agent>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let spec: MeshSpec = match parse(&body) {
        Ok(s) => s,
        Err(e) => return bad_body(e),
    };
    match a.plane.put_mesh(&id, &spec).await {
        Ok((status, _changed)) => Json(status).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete_mesh(State(a): State<Agent>, Path(id): Path<String>) -> Response {
    match a.plane.delete_mesh(&id).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no mesh {id:?} on this node"),
        ),
        Err(e) => e.into_response(),
    }
}
