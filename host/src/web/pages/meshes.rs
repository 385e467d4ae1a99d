//! The mesh pages: the list (members, port, generation, how many members are in step), one
//! mesh (settings, members with their drift, the matrix of handshakes between members), the
//! create form, apply, and delete with confirmation.
//!
//! Every change goes through the same store operations and controller round as the JSON API
//! (`web/meshes.rs`), and every mesh is shown through its view; a refusal comes back on the
//! form with the API's status and message, next to the field it is about.

use super::pools::url_part;
use super::{Frame, render, see_other};
use crate::controller::meshes;
use crate::mesh::reconcile::Drift;
use crate::mesh::{DEFAULT_KEEPALIVE, DEFAULT_MTU, Topology};
use crate::store::{Mesh, Pool, Role};
use crate::web::AppState;
use crate::web::error::{ApiError, PageError};
use crate::web::meshes::{MemberRequest, MemberView, MeshRequest, MeshView, view};
use crate::web::nodes::registry;
use crate::web::session::{AdminForm, PageAdmin, SignedIn};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/meshes", get(list).post(create))
        .route("/meshes/new", get(new_form))
        .route("/meshes/{mesh}", get(show))
        .route("/meshes/{mesh}/apply", post(apply))
        .route("/meshes/{mesh}/delete", get(confirm_delete).post(delete))
}

fn frame(title: impl Into<String>, user: SignedIn, headers: &HeaderMap) -> Frame {
    Frame::signed_in("meshes", title, user, headers)
}

/// The page of a mesh: by name, or by id for a mesh whose name is a route of its own.
fn href(name: &str, id: &str) -> String {
    if name == "new" {
        format!("/meshes/{id}")
    } else {
        format!("/meshes/{}", url_part(name))
    }
}

/// Members in step and members drifted. A mesh not applied yet has neither.
fn counts(v: &MeshView) -> (usize, usize) {
    if !v.applied {
        return (0, 0);
    }
    let drifted = v.members.iter().filter(|m| m.drift.is_some()).count();
    (v.members.len() - drifted, drifted)
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

// ---- the list ----

/// A mesh as its row in the list shows it.
pub struct MeshRow {
    pub href: String,
    pub view: MeshView,
    pub in_step: usize,
    pub drifted: usize,
}

impl MeshRow {
    fn of(view: MeshView) -> MeshRow {
        let (in_step, drifted) = counts(&view);
        MeshRow {
            href: href(&view.name, &view.id),
            view,
            in_step,
            drifted,
        }
    }
}

#[derive(Template)]
#[template(path = "meshes.html")]
struct MeshesPage {
    frame: Frame,
    rows: Vec<MeshRow>,
    overlay: Option<Pool>,
    admin: bool,
}

/// Every mesh. Any signed-in user.
async fn list(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (all, overlay) = s.store.read(|r| Ok((r.meshes()?, r.overlay_pool()?)))?;
    let rows = all
        .into_iter()
        .map(|m| Ok(MeshRow::of(view(&s, m)?)))
        .collect::<Result<Vec<_>, ApiError>>()
        .map_err(PageError::Api)?;
    let admin = user.role == Role::Admin;
    let page = MeshesPage {
        frame: frame("Meshes", user, &headers),
        rows,
        overlay,
        admin,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

// ---- one mesh ----

/// A member as its row in the members table shows it.
pub struct MemberRow {
    pub m: MemberView,
    pub lans: String,
    /// The drift badge: its class and its word.
    pub state_class: &'static str,
    pub state: &'static str,
}

impl MemberRow {
    fn of(m: MemberView, applied: bool) -> MemberRow {
        let (state_class, state) = match (applied, m.drift) {
            (false, _) => ("mesh-pending", "not applied"),
            (true, None) => ("mesh-ok", "in step"),
            (true, Some(Drift::Missing)) => ("mesh-missing", "missing"),
            (true, Some(Drift::Changed)) => ("mesh-changed", "changed"),
            (true, Some(Drift::OutOfSync)) => ("mesh-out-of-sync", "out of sync"),
        };
        MemberRow {
            lans: m
                .lan_subnets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            m,
            state_class,
            state,
        }
    }
}

/// One cell of the handshake matrix.
pub struct Cell {
    pub text: String,
    /// `none` for the diagonal and pairs that are not peers, `never`, or `seen`.
    pub class: &'static str,
    /// Full date of the handshake, for the tooltip.
    pub title: String,
}

/// One row of the matrix: what member `from` saw of each member.
pub struct MatrixRow {
    pub from: String,
    pub cells: Vec<Cell>,
}

/// The handshakes as a member × member matrix.
fn matrix(v: &MeshView, now: i64) -> Vec<MatrixRow> {
    let seen: HashMap<(&str, &str), Option<i64>> = v
        .handshakes
        .iter()
        .map(|h| ((h.from.as_str(), h.to.as_str()), h.latest_handshake))
        .collect();
    let hub = |n: &str| v.members.iter().any(|m| m.node == n && m.hub);
    v.members
        .iter()
        .map(|from| MatrixRow {
            from: from.node.clone(),
            cells: v
                .members
                .iter()
                .map(|to| {
                    let peers = from.node != to.node
                        && (v.topology == Topology::FullMesh || hub(&from.node) || hub(&to.node));
                    if !peers {
                        return Cell {
                            text: "—".into(),
                            class: "none",
                            title: String::new(),
                        };
                    }
                    match seen.get(&(from.node.as_str(), to.node.as_str())) {
                        Some(Some(t)) => Cell {
                            text: super::relative(now - t),
                            class: "seen",
                            title: jiff::Timestamp::from_second(*t)
                                .map(|t| t.to_string())
                                .unwrap_or_default(),
                        },
                        Some(None) => Cell {
                            text: "never".into(),
                            class: "never",
                            title: String::new(),
                        },
                        None => Cell {
                            text: "never".into(),
                            class: "never",
                            title: format!("{} did not report this peer", from.node),
                        },
                    }
                })
                .collect(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "mesh.html")]
struct MeshPage {
    frame: Frame,
    csrf: String,
    href: String,
    mesh: MeshView,
    members: Vec<MemberRow>,
    names: Vec<String>,
    matrix: Vec<MatrixRow>,
    in_step: usize,
    drifted: usize,
    admin: bool,
}

fn load(s: &AppState, id: &str) -> Result<Mesh, PageError> {
    Ok(s.store.read(|r| r.mesh(id))?)
}

/// One mesh. Any signed-in user.
async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let mut mesh = view(&s, load(&s, &id)?).map_err(PageError::Api)?;
    let admin = user.role == Role::Admin;
    let (in_step, drifted) = counts(&mesh);
    let matrix = matrix(&mesh, unix_now());
    let names = mesh.members.iter().map(|m| m.node.clone()).collect();
    let applied = mesh.applied;
    let members = std::mem::take(&mut mesh.members)
        .into_iter()
        .map(|m| MemberRow::of(m, applied))
        .collect();
    let page = MeshPage {
        csrf: user.csrf.clone(),
        frame: frame(format!("Mesh {}", mesh.name), user, &headers),
        href: href(&mesh.name, &mesh.id),
        members,
        names,
        matrix,
        in_step,
        drifted,
        mesh,
        admin,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

// ---- create ----

/// The create form as typed, kept so a refused form comes back as it was sent.
#[derive(Default)]
struct MeshForm {
    name: String,
    /// `full-mesh` or `hub-and-spoke`.
    topology: String,
    listen_port: String,
    keepalive: String,
    mtu: String,
    /// The nodes ticked as members, and as hubs.
    members: Vec<String>,
    hubs: Vec<String>,
    /// Node → its LAN subnets as typed (comma separated).
    lans: HashMap<String, String>,
}

impl MeshForm {
    /// The fields as posted: `member` and `hub` once per ticked node, `lan.<node>` per node.
    fn of(fields: Vec<(String, String)>) -> MeshForm {
        let mut form = MeshForm::default();
        for (k, v) in fields {
            match k.as_str() {
                "name" => form.name = v,
                "topology" => form.topology = v,
                "listen_port" => form.listen_port = v,
                "keepalive" => form.keepalive = v,
                "mtu" => form.mtu = v,
                "member" => form.members.push(v),
                "hub" => form.hubs.push(v),
                _ => {
                    if let Some(node) = k.strip_prefix("lan.") {
                        form.lans.insert(node.to_string(), v);
                    }
                }
            }
        }
        form
    }

    fn hub_and_spoke(&self) -> bool {
        self.topology == "hub-and-spoke"
    }

    /// The request the API would take, or what is wrong with the numbers.
    fn request(&self) -> Result<MeshRequest, Box<FieldErrors>> {
        let mut errors = FieldErrors::default();
        fn number(text: &str, slot: &mut Option<String>, what: &str) -> Option<u16> {
            let text = text.trim();
            if text.is_empty() {
                return None;
            }
            match text.parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    *slot = Some(format!("{what}: {text:?} is not a whole number in range"));
                    None
                }
            }
        }
        let listen_port = number(&self.listen_port, &mut errors.listen_port, "listen_port");
        let keepalive = number(&self.keepalive, &mut errors.keepalive, "keepalive");
        let mtu = number(&self.mtu, &mut errors.mtu, "mtu");
        let topology = if self.hub_and_spoke() {
            Topology::HubAndSpoke
        } else {
            Topology::FullMesh
        };
        if errors.any() {
            return Err(Box::new(errors));
        }
        Ok(MeshRequest {
            name: self.name.trim().to_string(),
            topology,
            // Hub boxes stay on the form whatever the topology and whichever nodes are
            // ticked: a full mesh ignores them, and so does a node left out.
            hubs: if topology == Topology::HubAndSpoke {
                self.hubs
                    .iter()
                    .filter(|h| self.members.contains(h))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            },
            members: self
                .members
                .iter()
                .map(|node| MemberRequest {
                    node: node.clone(),
                    lan_subnets: self
                        .lans
                        .get(node)
                        .map(|t| {
                            t.split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect(),
            overlay: None,
            listen_port,
            keepalive: keepalive.unwrap_or(DEFAULT_KEEPALIVE),
            mtu: mtu.unwrap_or(DEFAULT_MTU),
        })
    }
}

/// The form's refusals, by field.
#[derive(Default)]
struct FieldErrors {
    name: Option<String>,
    members: Option<String>,
    listen_port: Option<String>,
    keepalive: Option<String>,
    mtu: Option<String>,
    /// A LAN refusal, with the node whose row it belongs to.
    lan: Option<(String, String)>,
    form: Option<String>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        self.name.is_some()
            || self.members.is_some()
            || self.listen_port.is_some()
            || self.keepalive.is_some()
            || self.mtu.is_some()
            || self.lan.is_some()
            || self.form.is_some()
    }

    /// Puts the API's message next to the field it starts with; a LAN message on the row of
    /// the first member it names.
    fn place(message: String, members: &[String]) -> FieldErrors {
        let mut errors = FieldErrors::default();
        let m = message.as_str();
        if m.starts_with("lan_subnets:") {
            let node = members
                .iter()
                .filter_map(|n| m.find(&format!("node {n:?}")).map(|at| (at, n)))
                .min()
                .map(|(_, n)| n.clone());
            match node {
                Some(n) => errors.lan = Some((n, message)),
                None => errors.members = Some(message),
            }
            return errors;
        }
        let slot = if m.starts_with("name:") {
            &mut errors.name
        } else if m.starts_with("members:") || m.starts_with("hubs:") {
            &mut errors.members
        } else if m.starts_with("listen_port:") {
            &mut errors.listen_port
        } else if m.starts_with("keepalive:") {
            &mut errors.keepalive
        } else if m.starts_with("mtu:") {
            &mut errors.mtu
        } else {
            &mut errors.form
        };
        *slot = Some(message);
        errors
    }

    /// A refusal of the API or the store, placed; a fault of ours is the error page.
    fn from_refusal(
        api: ApiError,
        members: &[String],
    ) -> Result<(StatusCode, FieldErrors), PageError> {
        if api.status.is_server_error() {
            return Err(PageError::Api(api));
        }
        let mut errors = FieldErrors::place(api.message, members);
        if api.code == "name_taken" {
            errors = FieldErrors {
                name: errors.form.take(),
                ..errors
            };
        }
        Ok((api.status, errors))
    }
}

/// One registered node, as its row of the member choice shows it.
pub struct NodeChoice {
    pub name: String,
    pub status: &'static str,
    pub overlay: Option<std::net::IpAddr>,
    pub member: bool,
    pub hub: bool,
    pub lans: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "mesh_new.html")]
struct NewPage {
    frame: Frame,
    csrf: String,
    form: MeshForm,
    errors: FieldErrors,
    nodes: Vec<NodeChoice>,
    overlay: Option<Pool>,
}

fn new_page(
    s: &AppState,
    status: StatusCode,
    user: SignedIn,
    headers: &HeaderMap,
    mut form: MeshForm,
    mut errors: FieldErrors,
) -> Result<Response, PageError> {
    let (nodes, overlay) = s.store.read(|r| Ok((r.nodes()?, r.overlay_pool()?)))?;
    let lan_error = errors.lan.take();
    let nodes = nodes
        .into_iter()
        .map(|n| NodeChoice {
            member: form.members.contains(&n.name),
            hub: form.hubs.contains(&n.name),
            lans: form.lans.remove(&n.name).unwrap_or_default(),
            error: lan_error
                .as_ref()
                .filter(|(node, _)| *node == n.name)
                .map(|(_, m)| m.clone()),
            status: n.status.as_str(),
            overlay: n.overlay_address,
            name: n.name,
        })
        .collect();
    let page = NewPage {
        csrf: user.csrf.clone(),
        frame: frame("New mesh", user, headers),
        form,
        errors,
        nodes,
        overlay,
    };
    Ok(render(status, &page.frame, &page, s.secure_cookies))
}

/// The create form. Admins only.
async fn new_form(
    State(s): State<AppState>,
    PageAdmin(user): PageAdmin,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let form = MeshForm {
        topology: "full-mesh".into(),
        keepalive: DEFAULT_KEEPALIVE.to_string(),
        mtu: DEFAULT_MTU.to_string(),
        ..MeshForm::default()
    };
    new_page(
        &s,
        StatusCode::OK,
        user,
        &headers,
        form,
        FieldErrors::default(),
    )
}

/// Creates a mesh (not applied yet) and goes to its page. Admins only.
async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    AdminForm { user, form }: AdminForm<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let form = MeshForm::of(form);
    let request = match form.request() {
        Ok(r) => r,
        Err(errors) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return new_page(&s, status, user, &headers, form, *errors);
        }
    };
    let (draft, _) = match request.draft() {
        Ok(d) => d,
        Err(api) => {
            let (status, errors) = FieldErrors::from_refusal(api, &form.members)?;
            return new_page(&s, status, user, &headers, form, errors);
        }
    };
    let actor = user.name.clone();
    match s
        .store
        .write(move |w| w.create_mesh(&draft, None, &actor))
        .await
    {
        Ok(mesh) => {
            tracing::info!(mesh = %mesh.name, id = %mesh.id, by = %user.name, "created mesh");
            Ok(see_other(
                &href(&mesh.name, &mesh.id),
                &format!(
                    "Created mesh {}. It is not applied yet: apply it to push it to its {} members.",
                    mesh.name,
                    mesh.members.len()
                ),
                s.secure_cookies,
            ))
        }
        Err(e) => {
            let (status, errors) = FieldErrors::from_refusal(ApiError::from(e), &form.members)?;
            new_page(&s, status, user, &headers, form, errors)
        }
    }
}

// ---- apply ----

#[derive(Deserialize)]
struct Empty {}

/// Applies a mesh: marks it applied, then a round over its members pushes what they lack.
/// Admins only.
async fn apply(
    State(s): State<AppState>,
    Path(id): Path<String>,
    AdminForm { user, .. }: AdminForm<Empty>,
) -> Result<Response, PageError> {
    let reg = registry(&s).map_err(PageError::Api)?;
    let mesh = meshes::apply(reg, &s.mesh_seen, id).await?;
    tracing::info!(mesh = %mesh.name, by = %user.name, "applied mesh");
    let v = view(&s, mesh).map_err(PageError::Api)?;
    let (in_step, _) = counts(&v);
    let message = format!(
        "Applied mesh {}: {in_step} of {} members in step.",
        v.name,
        v.members.len()
    );
    Ok(see_other(&href(&v.name, &v.id), &message, s.secure_cookies))
}

// ---- delete ----

#[derive(Template)]
#[template(path = "mesh_delete.html")]
struct DeletePage {
    frame: Frame,
    csrf: String,
    href: String,
    mesh: MeshView,
}

/// The confirmation. Admins only.
async fn confirm_delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    PageAdmin(user): PageAdmin,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let mesh = view(&s, load(&s, &id)?).map_err(PageError::Api)?;
    let page = DeletePage {
        csrf: user.csrf.clone(),
        frame: frame(format!("Delete mesh {}", mesh.name), user, &headers),
        href: href(&mesh.name, &mesh.id),
        mesh,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

/// Deletes a mesh, then a round over its former members tears its interfaces down (or the
/// next round does, for members that cannot be told now). Admins only.
async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    AdminForm { user, .. }: AdminForm<Empty>,
) -> Result<Response, PageError> {
    let reg = registry(&s).map_err(PageError::Api)?;
    let (mesh, members) = meshes::delete(reg, &s.mesh_seen, id).await?;
    tracing::info!(mesh = %mesh.name, by = %user.name, "deleted mesh");
    let torn_down = members.iter().filter(|m| m.pending.is_none()).count();
    let total = mesh.members.len();
    let pending = if torn_down < total {
        " (the others at the next round, once they answer)"
    } else {
        ""
    };
    let message = format!(
        "Deleted mesh {}: torn down on {torn_down} of {total} members{pending}. The members keep their overlay addresses.",
        mesh.name
    );
    Ok(see_other("/meshes", &message, s.secure_cookies))
}
