//! `/api/v1/nodes`: register, list, show, edit, test and delete nodes; `/api/v1/overlay`: the
//! overlay pool that gives each node its persistent overlay address.

use super::AppState;
use super::auth::{Admin, Reader};
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::agent_api::{Health, PublicKey};
use crate::controller::nodes::Registry;
use crate::store::{Node, NodeEvent, NodePatch, NodeSpec, NodeStatus};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A node as the API shows it. Its secret is never here (only once, at registration).
#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub name: String,
    pub agent_url: String,
    /// Where clients send WireGuard packets: `host:port`.
    pub endpoint: String,
    pub endpoint_host: String,
    pub listen_port: u16,
    /// The IPAM pool peers on this node take their addresses from (its name).
    pub peer_pool: String,
    pub max_peers: u32,
    /// Peers placed on this node now.
    pub peers: u32,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    pub enabled: bool,
    pub status: NodeStatus,
    #[schema(value_type = Option<String>)]
    pub last_seen: Option<jiff::Timestamp>,
    pub last_error: Option<String>,
    /// The last health document its agent sent.
    #[schema(value_type = Option<Object>)]
    pub last_health: Option<Health>,
    /// The public key of its peer interface, as its agent reported it.
    #[schema(value_type = Option<String>)]
    pub public_key: Option<PublicKey>,
    /// Its persistent overlay address (the same in every mesh).
    #[schema(value_type = Option<String>)]
    pub overlay_address: Option<IpAddr>,
    #[schema(value_type = String)]
    pub created: jiff::Timestamp,
    /// Who registered it: a token's or user's name, or `join-token:<id>` when it enrolled.
    pub created_by: String,
}

/// The view of `node`, with its pool's name and its peer count.
pub fn view(s: &AppState, node: Node) -> Result<NodeView, ApiError> {
    let (pool, peers) = s.store.read(|r| {
        let pool = r.pool_by_id(node.peer_pool)?;
        Ok((pool, r.peer_count(&node.name)?))
    })?;
    Ok(NodeView {
        endpoint: endpoint(&node.endpoint_host, node.listen_port),
        peer_pool: pool.map_or_else(|| node.peer_pool.to_string(), |p| p.name),
        peers,
        labels: node.labels.into_iter().collect(),
        name: node.name,
        agent_url: node.agent_url,
        endpoint_host: node.endpoint_host,
        listen_port: node.listen_port,
        max_peers: node.max_peers,
        weight: node.weight,
        enabled: node.enabled,
        status: node.status,
        last_seen: node.last_seen,
        last_error: node.last_error,
        last_health: node.last_health,
        public_key: node.public_key,
        overlay_address: node.overlay_address,
        created: node.created,
        created_by: node.created_by,
    })
}

/// `host:port`, with an IPv6 address in brackets.
pub fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeList {
    pub items: Vec<NodeView>,
}

fn default_port() -> u16 {
    51820
}
fn default_max_peers() -> u32 {
    250
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// What registering a node takes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRequest {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`: the node's id in the signed protocol, fixed.
    pub name: String,
    /// Where its agent listens, e.g. `http://192.0.2.10:7443/`.
    pub agent_url: String,
    /// The host name or address clients reach the node at.
    pub endpoint_host: String,
    #[serde(default = "default_port")]
    #[schema(default = 51820)]
    pub listen_port: u16,
    /// The IPAM pool (name or id) peers on this node take their addresses from.
    pub peer_pool: String,
    #[serde(default = "default_max_peers")]
    #[schema(default = 250)]
    pub max_peers: u32,
    #[serde(default = "one")]
    #[schema(default = 1)]
    pub weight: u32,
    /// e.g. `{"region": "eu-west"}`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub enabled: bool,
}

/// A registered node, with its secret: shown in this answer only.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RegisteredNode {
    pub node: NodeView,
    /// The node's shared secret (64 hex characters): the whole content of the agent's
    /// secret file. weft keeps it only sealed and never shows it again.
    pub secret: String,
    /// The command to run on the node, once the secret is in `/var/lib/weft-agent/secret`
    /// (mode 0600).
    pub agent_command: String,
}

/// An edit: each field given replaces the stored one. The name cannot change.
#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeEdit {
    pub agent_url: Option<String>,
    pub endpoint_host: Option<String>,
    pub listen_port: Option<u16>,
    pub peer_pool: Option<String>,
    pub max_peers: Option<u32>,
    pub weight: Option<u32>,
    pub labels: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
}

impl From<NodeEdit> for NodePatch {
    fn from(e: NodeEdit) -> Self {
        NodePatch {
            agent_url: e.agent_url,
            endpoint_host: e.endpoint_host,
            listen_port: e.listen_port,
            peer_pool: e.peer_pool,
            max_peers: e.max_peers,
            weight: e.weight,
            labels: e.labels.map(|l| l.into_iter().collect()),
            enabled: e.enabled,
        }
    }
}

/// A connection test's answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TestResult {
    pub ok: bool,
    /// The signed round trip, in milliseconds.
    pub latency_ms: f64,
    #[schema(value_type = Option<Object>)]
    pub health: Option<Health>,
    pub error: Option<String>,
    /// The node's status after the test.
    pub status: NodeStatus,
}

/// A node's history, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeHistory {
    pub events: Vec<NodeEvent>,
}

/// The overlay pool setting.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// The pool (name or id; answered by name) nodes take their overlay address from; null:
    /// none.
    pub pool: Option<String>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_nodes, create_node))
        .routes(routes!(get_node, edit_node, delete_node))
        .routes(routes!(test_node))
        .routes(routes!(node_history))
        .routes(routes!(rotate_secret))
        .routes(routes!(get_overlay, set_overlay))
        .routes(routes!(enrol))
}

/// The caller's address, as enrolment records it.
pub struct Caller(String);

impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = super::session::client_ip(parts, state).await;
        Ok(Caller(
            ip.map_or_else(|| "unknown".into(), |ip| ip.to_string()),
        ))
    }
}

/// What a node's agent sends to enrol (`weft agent join`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// The join token (`weft node token create`).
    pub token: String,
    /// The node's name: its id in the signed protocol.
    pub name: String,
    /// Where its agent listens, e.g. `https://192.0.2.10:7443/`.
    pub agent_url: String,
    /// The host name or address clients reach the node at.
    pub endpoint_host: String,
    #[serde(default = "default_port")]
    #[schema(default = 51820)]
    pub listen_port: u16,
}

/// An enrolled node: its name, overlay address and shared secret (this answer only).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Enrolled {
    pub node: String,
    #[schema(value_type = Option<String>)]
    pub overlay_address: Option<IpAddr>,
    /// The node's shared secret for the signed protocol (64 hex characters).
    pub secret: String,
}

/// Enrol a node with a join token: the node is registered with the token's peer pool and
/// labels, takes its overlay address, and gets its shared secret in the answer, once. Access:
/// anonymous — the join token in the body is the credential (401 if unknown; 403 if used up,
/// expired or revoked, saying which).
#[utoipa::path(post, path = "/api/v1/enroll", tag = "nodes", request_body = EnrolRequest,
    responses((status = 201, body = Enrolled),
        (status = 400, description = "malformed body", body = ErrorBody),
        (status = 401, description = "unknown join token", body = ErrorBody),
        (status = 403, description = "the token is used up, expired or revoked", body = ErrorBody),
        (status = 404, description = "the token's peer pool is gone", body = ErrorBody),
        (status = 409, description = "name taken, or the overlay pool is full", body = ErrorBody),
        (status = 422, description = "bad name, URL, endpoint or port", body = ErrorBody)))]
async fn enrol(
    State(s): State<AppState>,
    Caller(from): Caller,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    let reg = registry(&s)?;
    let spec = NodeSpec {
        name: req.name,
        agent_url: req.agent_url,
        endpoint_host: req.endpoint_host,
        listen_port: req.listen_port,
        peer_pool: String::new(),
        max_peers: default_max_peers(),
        weight: 1,
        labels: Vec::new(),
        enabled: true,
    };
    match reg.enrol(req.token, spec, from.clone()).await? {
        Ok(r) => {
            tracing::info!(node = %r.node.name, from = %from, by = %r.node.created_by, "enrolled node");
            Ok((
                StatusCode::CREATED,
                Json(Enrolled {
                    node: r.node.name,
                    overlay_address: r.node.overlay_address,
                    secret: r.secret,
                }),
            ))
        }
        Err(crate::store::JoinRefused::Unknown) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown join token",
        )),
        Err(refused) => Err(ApiError::forbidden(refused.to_string())),
    }
}

pub fn registry(s: &AppState) -> Result<&Registry, ApiError> {
    s.nodes.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the node registry is not running",
        )
    })
}

/// The shell command that starts a node's agent.
pub fn agent_command(node: &Node) -> String {
    let listen = url::Url::parse(&node.agent_url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .map_or_else(|| "0.0.0.0:7443".to_string(), |p| format!("0.0.0.0:{p}"));
    format!(
        "weft agent --listen {listen} --node-id {} --data-dir /var/lib/weft-agent",
        node.name
    )
}

fn node_or_404(s: &AppState, name: &str) -> Result<Node, ApiError> {
    s.store
        .read(|r| r.node(name))?
        .ok_or_else(|| ApiError::not_found(format!("node {name:?} not found")))
}

/// List nodes. Access: any token.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    responses((status = 200, body = NodeList), (status = 401, body = ErrorBody)),
    security(("token" = [])))]
async fn list_nodes(State(s): State<AppState>, _: Reader) -> Result<Json<NodeList>, ApiError> {
    let nodes = s.store.read(|r| r.nodes())?;
    let items = nodes
        .into_iter()
        .map(|n| view(&s, n))
        .collect::<Result<_, _>>()?;
    Ok(Json(NodeList { items }))
}

/// Register a node. The answer carries its new shared secret, once: weft stores it only
/// sealed under the key file of its data dir. With an overlay pool set, the node takes its
/// persistent overlay address from it. Access: a write token.
#[utoipa::path(post, path = "/api/v1/nodes", tag = "nodes", request_body = NodeRequest,
    responses((status = 201, body = RegisteredNode),
        (status = 400, description = "malformed body", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "no such peer pool", body = ErrorBody),
        (status = 409, description = "name taken, or the overlay pool is full", body = ErrorBody),
        (status = 422, description = "bad name, URL, endpoint, port, numbers or labels", body = ErrorBody)),
    security(("token" = [])))]
async fn create_node(
    State(s): State<AppState>,
    who: Admin,
    ApiJson(req): ApiJson<NodeRequest>,
) -> Result<(StatusCode, Json<RegisteredNode>), ApiError> {
    let reg = registry(&s)?;
    let spec = NodeSpec {
        name: req.name,
        agent_url: req.agent_url,
        endpoint_host: req.endpoint_host,
        listen_port: req.listen_port,
        peer_pool: req.peer_pool,
        max_peers: req.max_peers,
        weight: req.weight,
        labels: req.labels.into_iter().collect(),
        enabled: req.enabled,
    };
    let registered = reg.register(spec, &who.name).await?;
    tracing::info!(node = %registered.node.name, by = %who.name, "registered node");
    let agent_command = agent_command(&registered.node);
    Ok((
        StatusCode::CREATED,
        Json(RegisteredNode {
            node: view(&s, registered.node)?,
            secret: registered.secret,
            agent_command,
        }),
    ))
}

/// Show one node. Access: any token.
#[utoipa::path(get, path = "/api/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "node name")),
    responses((status = 200, body = NodeView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn get_node(
    State(s): State<AppState>,
    _: Reader,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<NodeView>, ApiError> {
    let node = node_or_404(&s, &name)?;
    Ok(Json(view(&s, node)?))
}

/// Edit a node (not its name): agent URL, endpoint, port, peer pool (only while it has no
/// peers), capacity, weight, labels, enabled. Access: a write token.
#[utoipa::path(patch, path = "/api/v1/nodes/{name}", tag = "nodes", request_body = NodeEdit,
    params(("name" = String, Path, description = "node name")),
    responses((status = 200, body = NodeView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "peer pool changed while the node has peers", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("token" = [])))]
async fn edit_node(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(name): ApiPath<String>,
    ApiJson(edit): ApiJson<NodeEdit>,
) -> Result<Json<NodeView>, ApiError> {
    let patch = NodePatch::from(edit);
    let actor = who.name;
    let node = s
        .store
        .write(move |w| w.update_node(&name, &patch, &actor))
        .await?;
    Ok(Json(view(&s, node)?))
}

/// Delete a node with no peers; its overlay address is released. Access: a write token.
#[utoipa::path(delete, path = "/api/v1/nodes/{name}", tag = "nodes",
    params(("name" = String, Path, description = "node name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the node still has peers", body = ErrorBody)),
    security(("token" = [])))]
async fn delete_node(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let actor = who.name.clone();
    let n = name.clone();
    s.store.write(move |w| w.delete_node(&n, &actor)).await?;
    s.peer_stats.forget(&name);
    tracing::info!(node = %name, by = %who.name, "deleted node");
    Ok(StatusCode::NO_CONTENT)
}

/// Test the connection: a signed health call now, answered with its latency and the health
/// document (or why it failed); the node's status is updated as a poll would. Access: a
/// write token (it changes the node's status).
#[utoipa::path(post, path = "/api/v1/nodes/{name}/test", tag = "nodes",
    params(("name" = String, Path, description = "node name")),
    responses((status = 200, body = TestResult), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn test_node(
    State(s): State<AppState>,
    _: Admin,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TestResult>, ApiError> {
    let outcome = registry(&s)?.test(&name).await?;
    let status = node_or_404(&s, &name)?.status;
    let (health, error) = match outcome.result {
        Ok(h) => (Some(h), None),
        Err(e) => (None, Some(e)),
    };
    Ok(Json(TestResult {
        ok: health.is_some(),
        latency_ms: outcome.latency.as_secs_f64() * 1000.0,
        health,
        error,
        status,
    }))
}

/// A node's history, oldest first: who registered or enrolled it (for an enrolment: the
/// join token, who made it, and the address the agent called from), edited, enabled or
/// disabled it, or rotated its secret, and when. Access: any token.
#[utoipa::path(get, path = "/api/v1/nodes/{name}/history", tag = "nodes",
    params(("name" = String, Path, description = "node name")),
    responses((status = 200, body = NodeHistory), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn node_history(
    State(s): State<AppState>,
    _: Reader,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<NodeHistory>, ApiError> {
    // One snapshot for both: a node deleted in between is a 404, not an empty history.
    let events = s.store.read(|r| match r.node(&name)? {
        Some(_) => r.node_history(&name).map(Some),
        None => Ok(None),
    })?;
    let events = events.ok_or_else(|| ApiError::not_found(format!("node {name:?} not found")))?;
    Ok(Json(NodeHistory { events }))
}

/// Rotate the node's shared secret through its agent, with no failed request meanwhile
/// (docs/agent-protocol.md, "Rotating the secret"); the new secret is never shown. Access: a
/// write token. 502 when the agent does not take it: if it did not stage it, the secret is
/// unchanged; if it did not confirm, it accepts both until a rotation finishes.
#[utoipa::path(post, path = "/api/v1/nodes/{name}/rotate-secret", tag = "nodes",
    params(("name" = String, Path, description = "node name")),
    responses((status = 204, description = "rotated"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody)),
    security(("token" = [])))]
async fn rotate_secret(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    registry(&s)?.rotate_secret(&name, &who.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The overlay pool. Access: any token.
#[utoipa::path(get, path = "/api/v1/overlay", tag = "nodes",
    responses((status = 200, body = Overlay), (status = 401, body = ErrorBody)),
    security(("token" = [])))]
async fn get_overlay(State(s): State<AppState>, _: Reader) -> Result<Json<Overlay>, ApiError> {
    let pool = s.store.read(|r| r.overlay_pool())?;
    Ok(Json(Overlay {
        pool: pool.map(|p| p.name),
    }))
}

/// Set (or, with null, clear) the overlay pool. Nodes registered from now on take their
/// overlay address from it; nodes that have one keep it. Access: a write token.
#[utoipa::path(put, path = "/api/v1/overlay", tag = "nodes", request_body = Overlay,
    responses((status = 200, body = Overlay), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "no such pool", body = ErrorBody),
        (status = 422, description = "a body that is JSON but not this shape", body = ErrorBody)),
    security(("token" = [])))]
async fn set_overlay(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(req): ApiJson<Overlay>,
) -> Result<Json<Overlay>, ApiError> {
    let pool = s
        .store
        .write(move |w| w.set_overlay_pool(req.pool.as_deref()))
        .await?;
    Ok(Json(Overlay {
        pool: pool.map(|p| p.name),
    }))
}

#[cfg(test)]
mod tests;
