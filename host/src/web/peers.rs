//! `/api/v1/peers`: create a peer on a node (or `auto`), list, show, delete.

use super::AppState;
use super::auth::{Admin, Reader};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::agent_api::PublicKey;
use crate::controller::peers::{CreatePeer, Peers, Placement};
use crate::store::Peer;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A peer as the API shows it. There is never a private key here.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PeerView {
    pub id: u64,
    pub name: String,
    /// The node whose peer interface the peer connects to.
    pub node: String,
    #[schema(value_type = String, example = "10.8.0.2")]
    pub address: IpAddr,
    /// The client's WireGuard public key (base64).
    #[schema(value_type = String)]
    pub public_key: PublicKey,
    #[schema(value_type = String)]
    pub created: jiff::Timestamp,
    pub created_by: String,
}

impl From<Peer> for PeerView {
    fn from(p: Peer) -> Self {
        PeerView {
            id: p.id,
            name: p.name,
            node: p.node,
            address: p.address,
            public_key: p.public_key,
            created: p.created,
            created_by: p.created_by,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PeerList {
    pub items: Vec<PeerView>,
}

/// What creating a peer takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`, unique.
    pub name: String,
    /// `auto` (the node-selection strategy chooses among enabled, online nodes below
    /// capacity) or a node's name.
    #[serde(default = "auto")]
    #[schema(default = "auto", example = "auto")]
    pub node: String,
    /// The client's own public key (base64, as `wg pubkey` prints). Without it, weft
    /// generates the keypair and returns the private key once.
    #[schema(value_type = Option<String>)]
    pub public_key: Option<PublicKey>,
    /// DNS servers for the client's wg-quick file.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub dns: Vec<IpAddr>,
}

fn auto() -> String {
    "auto".into()
}

/// A new peer, with what the client needs. Given only in this answer: weft does not keep
/// the private key, so the configuration cannot be fetched again.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedPeer {
    pub peer: PeerView,
    /// The generated private key (base64); absent when the request gave a public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// The client's wg-quick file. With a public key of the request's, its `PrivateKey`
    /// line is left for the client to fill in.
    pub config: String,
    /// The QR code of `config` as an SVG document (WireGuard's mobile apps scan it); only
    /// when the private key is in the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_svg: Option<String>,
    /// Set when the configured placement plugin failed and `least-loaded` chose instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement_fallback: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Delete from weft (and release the address) even if the node's agent cannot confirm
    /// that it removed the peer.
    #[serde(default)]
    pub force: bool,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_peers, create_peer))
        .routes(routes!(get_peer, delete_peer))
}

fn peers(s: &AppState) -> Peers {
    Peers {
        store: s.store.clone(),
        strategy: s.placement.clone(),
        plugins: s.plugins.clone(),
    }
}

/// List peers. Access: any token.
#[utoipa::path(get, path = "/api/v1/peers", tag = "peers",
    responses((status = 200, body = PeerList), (status = 401, body = ErrorBody)),
    security(("token" = [])))]
async fn list_peers(State(s): State<AppState>, _: Reader) -> Result<Json<PeerList>, ApiError> {
    let peers = s.store.read(|r| r.peers())?;
    Ok(Json(PeerList {
        items: peers.into_iter().map(PeerView::from).collect(),
    }))
}

/// Create a peer: its address comes from the node's peer pool, then the node's agent adds
/// it. If the agent fails, nothing of the peer remains (the address is released) and the
/// error names the node and why. The private key (when generated), the wg-quick file and
/// its QR code are in this answer only: they cannot be fetched later. Access: a write token.
#[utoipa::path(post, path = "/api/v1/peers", tag = "peers", request_body = PeerRequest,
    responses((status = 201, body = CreatedPeer),
        (status = 400, description = "malformed body", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "name or key taken, node disabled or full, no eligible node for `auto`, pool exhausted", body = ErrorBody),
        (status = 422, description = "bad name or public key, unknown node", body = ErrorBody),
        (status = 502, description = "the node's agent failed (unreachable, refused, forged answer); rolled back", body = ErrorBody)),
    security(("token" = [])))]
async fn create_peer(
    State(s): State<AppState>,
    who: Admin,
    ApiJson(req): ApiJson<PeerRequest>,
) -> Result<(StatusCode, Json<CreatedPeer>), ApiError> {
    let nodes = s.peer_nodes.nodes()?;
    let created = peers(&s)
        .create(
            CreatePeer {
                name: req.name,
                node: Placement::parse(&req.node),
                public_key: req.public_key,
                dns: req.dns,
            },
            &nodes,
            &who.name,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedPeer {
            peer: created.peer.into(),
            private_key: created.private_key.as_ref().map(|k| k.to_base64()),
            config: created.config,
            qr_svg: created.qr_svg,
            placement_fallback: created.placement_fallback,
        }),
    ))
}

/// Show one peer. Access: any token.
#[utoipa::path(get, path = "/api/v1/peers/{name}", tag = "peers",
    params(("name" = String, Path, description = "peer name")),
    responses((status = 200, body = PeerView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn get_peer(
    State(s): State<AppState>,
    _: Reader,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PeerView>, ApiError> {
    let peer = s
        .store
        .read(|r| r.peer(&name))?
        .ok_or_else(|| ApiError::not_found(format!("peer {name:?} not found")))?;
    Ok(Json(peer.into()))
}

/// Delete a peer: its node's agent removes it (a node that no longer has it counts as
/// done), then its address is released. If the agent cannot confirm, the peer is kept
/// unless `force=true`. Access: a write token.
#[utoipa::path(delete, path = "/api/v1/peers/{name}", tag = "peers",
    params(("name" = String, Path, description = "peer name"), DeleteParams),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, description = "the node's agent did not confirm; nothing changed", body = ErrorBody)),
    security(("token" = [])))]
async fn delete_peer(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(name): ApiPath<String>,
    ApiQuery(p): ApiQuery<DeleteParams>,
) -> Result<StatusCode, ApiError> {
    let peer = s
        .store
        .read(|r| r.peer(&name))?
        .ok_or_else(|| ApiError::not_found(format!("peer {name:?} not found")))?;
    let nodes = s.peer_nodes.nodes()?;
    let node = nodes.iter().find(|n| n.name == peer.node);
    peers(&s).delete(&name, node, p.force, &who.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
pub(crate) mod tests;
