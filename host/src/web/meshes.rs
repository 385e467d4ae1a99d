//! `/api/v1/meshes`: create, list, show (with each member's applied generation, drift and the
//! handshakes between members), replace, apply and delete meshes.

use super::AppState;
use super::auth::{Admin, Reader};
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::nodes::registry;
use crate::controller::meshes::{self, Handshake, MemberState, member_names};
use crate::mesh::reconcile::Drift;
use crate::mesh::rules::MeshDraft;
use crate::mesh::{DEFAULT_KEEPALIVE, DEFAULT_MTU, Topology};
use crate::store::{Mesh, Node};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// One member in a mesh request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    /// A registered node's name.
    pub node: String,
    /// The subnets behind the node that the other members reach through it.
    #[serde(default)]
    #[schema(example = json!(["192.168.10.0/24"]))]
    pub lan_subnets: Vec<String>,
}

fn default_topology() -> Topology {
    Topology::FullMesh
}
fn default_keepalive() -> u16 {
    DEFAULT_KEEPALIVE
}
fn default_mtu() -> u16 {
    DEFAULT_MTU
}

/// A mesh as asked for (create, or replace).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeshRequest {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    #[serde(default = "default_topology")]
    pub topology: Topology,
    /// The hubs (members) of a hub-and-spoke mesh.
    #[serde(default)]
    pub hubs: Vec<String>,
    pub members: Vec<MemberRequest>,
    /// The overlay subnet: may be left out; if given it must be the overlay pool's CIDR.
    pub overlay: Option<String>,
    /// The UDP port of the mesh on every member; left out: the first port from 51821 up
    /// that no member uses yet (a replacement keeps the mesh's port while it is free).
    pub listen_port: Option<u16>,
    /// Persistent keepalive in seconds; 0 turns it off.
    #[serde(default = "default_keepalive")]
    #[schema(default = 25)]
    pub keepalive: u16,
    #[serde(default = "default_mtu")]
    #[schema(default = 1420)]
    pub mtu: u16,
}

impl MeshRequest {
    /// The draft the store checks, with LAN subnets parsed here (the edge).
    pub fn draft(self) -> Result<(MeshDraft, Option<String>), ApiError> {
        let mut members = Vec::with_capacity(self.members.len());
        for m in self.members {
            let mut lans = Vec::with_capacity(m.lan_subnets.len());
            for s in &m.lan_subnets {
                let net: IpNet = s.trim().parse().map_err(|_| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "rule",
                        format!(
                            "lan_subnets: {:?} of node {:?} is not a subnet like 192.168.10.0/24",
                            s.chars().take(64).collect::<String>(),
                            m.node
                        ),
                    )
                })?;
                lans.push(net);
            }
            members.push((m.node, lans));
        }
        Ok((
            MeshDraft {
                name: self.name,
                topology: self.topology,
                hubs: self.hubs,
                members,
                listen_port: self.listen_port,
                keepalive: self.keepalive,
                mtu: self.mtu,
            },
            self.overlay,
        ))
    }
}

/// One member as the API shows it, with where it stands.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MemberView {
    pub node: String,
    #[schema(value_type = Option<String>)]
    pub overlay_address: Option<IpAddr>,
    #[schema(value_type = Vec<String>)]
    pub lan_subnets: Vec<IpNet>,
    pub hub: bool,
    /// The generation of the configuration its agent runs; none if it runs none.
    pub applied_generation: Option<u64>,
    /// How it differs from what it should run; none when in step (or not applied yet).
    pub drift: Option<Drift>,
    /// Why it is not in step, from the last round.
    pub error: Option<String>,
    #[schema(value_type = Option<String>)]
    pub checked: Option<jiff::Timestamp>,
}

/// A mesh as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MeshView {
    pub id: String,
    pub name: String,
    pub topology: Topology,
    pub hubs: Vec<String>,
    /// The interface on every member: `wg-` and the first 8 characters of the id.
    pub interface: String,
    /// The overlay pool's CIDR.
    pub overlay: Option<String>,
    pub listen_port: u16,
    pub keepalive: u16,
    pub mtu: u16,
    /// Bumped at every change.
    pub generation: u64,
    /// Applied at least once: weft keeps its members in step and repairs drift.
    pub applied: bool,
    pub members: Vec<MemberView>,
    /// The latest handshake each member saw with each of its peers in this mesh.
    pub handshakes: Vec<Handshake>,
    #[schema(value_type = String)]
    pub created: jiff::Timestamp,
    pub created_by: String,
    #[schema(value_type = String)]
    pub updated: jiff::Timestamp,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MeshList {
    pub items: Vec<MeshView>,
}

/// What deleting a mesh did on its members.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted {
    /// Members whose interface for the mesh is gone.
    pub torn_down: Vec<String>,
    /// Members that could not be told now; the next round tears their interface down.
    pub pending: Vec<PendingMember>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PendingMember {
    pub node: String,
    pub error: String,
}

/// The view of `mesh` with the last reports of its members.
pub fn view(s: &AppState, mesh: Mesh) -> Result<MeshView, ApiError> {
    let (nodes, overlay) = s.store.read(|r| Ok((r.nodes()?, r.overlay_pool()?)))?;
    let nodes: HashMap<String, Node> = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
    Ok(view_with(
        s,
        mesh,
        &nodes,
        overlay.map(|p| p.cidr.to_string()),
    ))
}

fn view_with(
    s: &AppState,
    mesh: Mesh,
    nodes: &HashMap<String, Node>,
    overlay: Option<String>,
) -> MeshView {
    let (states, handshakes) = meshes::state(&mesh, nodes, &s.mesh_seen);
    let mut states: HashMap<String, MemberState> =
        states.into_iter().map(|m| (m.node.clone(), m)).collect();
    let members = mesh
        .members
        .iter()
        .map(|m| {
            let st = states.remove(&m.node);
            MemberView {
                node: m.node.clone(),
                overlay_address: nodes.get(&m.node).and_then(|n| n.overlay_address),
                lan_subnets: m.lan_subnets.clone(),
                hub: mesh.is_hub(&m.node),
                applied_generation: st.as_ref().and_then(|s| s.applied_generation),
                drift: st.as_ref().and_then(|s| s.drift),
                error: st.as_ref().and_then(|s| s.error.clone()),
                checked: st.and_then(|s| s.checked),
            }
        })
        .collect();
    MeshView {
        interface: mesh.interface(),
        id: mesh.id,
        name: mesh.name,
        topology: mesh.topology,
        hubs: mesh.hubs,
        overlay,
        listen_port: mesh.listen_port,
        keepalive: mesh.keepalive,
        mtu: mesh.mtu,
        generation: mesh.generation,
        applied: mesh.applied,
        members,
        handshakes,
        created: mesh.created,
        created_by: mesh.created_by,
        updated: mesh.updated,
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_meshes, create_mesh))
        .routes(routes!(get_mesh, replace_mesh, delete_mesh))
        .routes(routes!(apply_mesh))
}

/// Runs a round over `nodes` now (the registry's agents), so an answer shows their state.
async fn round_now(s: &AppState, nodes: HashSet<String>) -> Result<(), ApiError> {
    meshes::round(registry(s)?, &s.mesh_seen, Some(&nodes)).await?;
    Ok(())
}

/// List meshes. Access: any token.
#[utoipa::path(get, path = "/api/v1/meshes", tag = "meshes",
    responses((status = 200, body = MeshList), (status = 401, body = ErrorBody)),
    security(("token" = [])))]
async fn list_meshes(State(s): State<AppState>, _: Reader) -> Result<Json<MeshList>, ApiError> {
    let (all, nodes, overlay) = s
        .store
        .read(|r| Ok((r.meshes()?, r.nodes()?, r.overlay_pool()?)))?;
    let nodes: HashMap<String, Node> = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
    let overlay = overlay.map(|p| p.cidr.to_string());
    let items = all
        .into_iter()
        .map(|m| view_with(&s, m, &nodes, overlay.clone()))
        .collect();
    Ok(Json(MeshList { items }))
}

/// Create a mesh (not applied yet). Members without an overlay address take one from the
/// overlay pool; if it runs out, nothing is created or allocated. Access: a write token.
#[utoipa::path(post, path = "/api/v1/meshes", tag = "meshes", request_body = MeshRequest,
    responses((status = 201, body = MeshView),
        (status = 400, description = "malformed body", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "name taken, no overlay pool, or the overlay pool is full", body = ErrorBody),
        (status = 422, description = "bad name, members, hubs, overlay subnet, LAN subnets (overlapping each other or the overlay), port, keepalive or MTU", body = ErrorBody)),
    security(("token" = [])))]
async fn create_mesh(
    State(s): State<AppState>,
    who: Admin,
    ApiJson(req): ApiJson<MeshRequest>,
) -> Result<(StatusCode, Json<MeshView>), ApiError> {
    let (draft, overlay) = req.draft()?;
    let actor = who.name.clone();
    let mesh = s
        .store
        .write(move |w| w.create_mesh(&draft, overlay.as_deref(), &actor))
        .await?;
    tracing::info!(mesh = %mesh.name, id = %mesh.id, by = %who.name, "created mesh");
    Ok((StatusCode::CREATED, Json(view(&s, mesh)?)))
}

/// Show a mesh (by id or name) with where each member stands. Access: any token.
#[utoipa::path(get, path = "/api/v1/meshes/{mesh}", tag = "meshes",
    params(("mesh" = String, Path, description = "mesh id or name")),
    responses((status = 200, body = MeshView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn get_mesh(
    State(s): State<AppState>,
    _: Reader,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MeshView>, ApiError> {
    let mesh = s.store.read(|r| r.mesh(&id))?;
    Ok(Json(view(&s, mesh)?))
}

/// Replace a mesh's desired state (members, LAN subnets, topology, settings); its id stays
/// and its generation goes up. An applied mesh is pushed at once, to the members whose
/// configuration changed (and removed from members taken out). Access: a write token.
#[utoipa::path(put, path = "/api/v1/meshes/{mesh}", tag = "meshes", request_body = MeshRequest,
    params(("mesh" = String, Path, description = "mesh id or name")),
    responses((status = 200, body = MeshView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "name taken, no overlay pool, or the overlay pool is full", body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("token" = [])))]
async fn replace_mesh(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<MeshRequest>,
) -> Result<Json<MeshView>, ApiError> {
    let (draft, overlay) = req.draft()?;
    let before = s.store.read(|r| r.mesh(&id))?;
    let actor = who.name.clone();
    let mesh = s
        .store
        .write(move |w| w.update_mesh(&id, &draft, overlay.as_deref(), &actor))
        .await?;
    tracing::info!(mesh = %mesh.name, generation = mesh.generation, by = %who.name, "changed mesh");
    if mesh.applied {
        let mut nodes = member_names(&before);
        nodes.extend(member_names(&mesh));
        round_now(&s, nodes).await?;
    }
    Ok(Json(view(&s, mesh)?))
}

/// Apply a mesh: push its configuration now to every member that lacks it, runs another,
/// or drifted; from then on each poll keeps the members in step. Applying again repairs
/// drift. Access: a write token.
#[utoipa::path(post, path = "/api/v1/meshes/{mesh}/apply", tag = "meshes",
    params(("mesh" = String, Path, description = "mesh id or name")),
    responses((status = 200, body = MeshView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn apply_mesh(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MeshView>, ApiError> {
    let mesh = meshes::apply(registry(&s)?, &s.mesh_seen, id).await?;
    tracing::info!(mesh = %mesh.name, by = %who.name, "applied mesh");
    Ok(Json(view(&s, mesh)?))
}

/// Delete a mesh: its interfaces are torn down on every member now (or, for members that
/// cannot be reached, at the next round); the members keep their overlay addresses.
/// Access: a write token.
#[utoipa::path(delete, path = "/api/v1/meshes/{mesh}", tag = "meshes",
    params(("mesh" = String, Path, description = "mesh id or name")),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("token" = [])))]
async fn delete_mesh(
    State(s): State<AppState>,
    who: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    let (mesh, members) = meshes::delete(registry(&s)?, &s.mesh_seen, id).await?;
    tracing::info!(mesh = %mesh.name, by = %who.name, "deleted mesh");
    let mut out = Deleted {
        torn_down: Vec::new(),
        pending: Vec::new(),
    };
    for m in members {
        match m.pending {
            None => out.torn_down.push(m.node),
            Some(error) => out.pending.push(PendingMember {
                node: m.node,
                error,
            }),
        }
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests;
