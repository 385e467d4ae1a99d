//! The node pages: nodes as cards (status, last seen, peers of capacity as a bar), one node
//! with its history, register (the secret shown once), edit, enable or disable, test the
//! connection, delete.
//!
//! Every change goes through the same store and registry operations as the JSON API
//! (`web/nodes.rs`); a refusal comes back on the form with the API's status and message.

use super::{Frame, render, see_other};
use crate::controller::nodes::Registry;
use crate::store::{Node, NodeAction, NodeEvent, NodePatch, NodeSpec, Pool, Role, StoreError};
use crate::web::AppState;
use crate::web::error::{ApiError, PageError};
use crate::web::nodes::{agent_command, endpoint, registry};
use crate::web::session::{AdminForm, PageAdmin, SignedIn};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/nodes", get(list).post(create))
        .route("/nodes/new", get(new_form))
        .route("/nodes/{name}", get(show))
        .route("/nodes/{name}/edit", get(edit_form).post(edit))
        .route("/nodes/{name}/enabled", post(set_enabled))
        .route("/nodes/{name}/test", post(test))
        .route("/nodes/{name}/rotate-secret", post(rotate_secret))
        .route("/nodes/{name}/delete", get(confirm_delete).post(delete))
}

fn frame(title: impl Into<String>, user: SignedIn, headers: &HeaderMap) -> Frame {
    Frame::signed_in("nodes", title, user, headers)
}

fn page_err(e: impl Into<ApiError>) -> PageError {
    PageError::Api(e.into())
}

fn not_found(name: &str) -> PageError {
    PageError::Api(ApiError::not_found(format!("node {name:?} not found")))
}

fn load(s: &AppState, name: &str) -> Result<Node, PageError> {
    s.store
        .read(|r| r.node(name))?
        .ok_or_else(|| not_found(name))
}

/// A node with what its card shows.
pub struct NodeCard {
    pub node: Node,
    pub pool: String,
    pub peers: u32,
}

impl NodeCard {
    pub fn endpoint(&self) -> String {
        endpoint(&self.node.endpoint_host, self.node.listen_port)
    }

    /// Peers of capacity, in whole percent, for the bar.
    pub fn percent(&self) -> u64 {
        (u64::from(self.peers) * 100 / u64::from(self.node.max_peers.max(1))).min(100)
    }

    pub fn last_seen(&self, now: i64) -> String {
        match self.node.last_seen {
            Some(t) => super::relative(now - t.as_second()),
            None => "never".into(),
        }
    }

    pub fn labels(&self) -> String {
        labels_text(&self.node.labels)
    }
}

pub(super) fn labels_text(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cards(s: &AppState, nodes: Vec<Node>) -> Result<Vec<NodeCard>, PageError> {
    let (pools, counts) = s.store.read(|r| Ok((r.pools()?, r.peer_counts()?)))?;
    Ok(nodes
        .into_iter()
        .map(|node| NodeCard {
            pool: pools
                .iter()
                .find(|p| p.id == node.peer_pool)
                .map_or_else(|| node.peer_pool.to_string(), |p| p.name.clone()),
            peers: counts.get(&node.name).copied().unwrap_or(0),
            node,
        })
        .collect())
}

// ---- the list ----

#[derive(Template)]
#[template(path = "nodes.html")]
struct NodesPage {
    frame: Frame,
    csrf: String,
    cards: Vec<NodeCard>,
    overlay: Option<Pool>,
    now: i64,
    admin: bool,
}

/// Every node as a card. Any signed-in user.
async fn list(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let (nodes, overlay) = s.store.read(|r| Ok((r.nodes()?, r.overlay_pool()?)))?;
    let admin = user.role == Role::Admin;
    let page = NodesPage {
        csrf: user.csrf.clone(),
        frame: frame("Nodes", user, &headers),
        cards: cards(&s, nodes)?,
        overlay,
        now: jiff::Timestamp::now().as_second(),
        admin,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

// ---- one node ----

#[derive(Template)]
#[template(path = "node.html")]
struct NodePage {
    frame: Frame,
    csrf: String,
    card: NodeCard,
    /// Its history, newest first: what changed last is what a reader looks for.
    events: Vec<NodeEvent>,
    now: i64,
    admin: bool,
}

/// What a history entry says happened, for the timeline.
pub fn action_text(action: &NodeAction) -> &'static str {
    match action {
        NodeAction::Registered => "Registered",
        NodeAction::Enrolled { .. } => "Enrolled",
        NodeAction::Edited => "Edited",
        NodeAction::Enabled => "Enabled",
        NodeAction::Disabled => "Disabled",
        NodeAction::SecretRotated => "Secret rotated",
    }
}

/// One node: its card and its history. Any signed-in user.
async fn show(
    State(s): State<AppState>,
    Path(name): Path<String>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    // One snapshot: the node and the history that led to it.
    let (node, mut events) = s
        .store
        .read(|r| Ok((r.node(&name)?, r.node_history(&name)?)))?;
    let node = node.ok_or_else(|| not_found(&name))?;
    events.reverse();
    let admin = user.role == Role::Admin;
    let page = NodePage {
        csrf: user.csrf.clone(),
        frame: frame(format!("Node {name}"), user, &headers),
        card: cards(&s, vec![node])?.remove(0),
        events,
        now: jiff::Timestamp::now().as_second(),
        admin,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

// ---- register and edit ----

/// The form as typed, kept so a refused form comes back as it was sent.
#[derive(Deserialize, Default)]
struct NodeForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    agent_url: String,
    #[serde(default)]
    endpoint_host: String,
    #[serde(default)]
    listen_port: String,
    #[serde(default)]
    peer_pool: String,
    #[serde(default)]
    max_peers: String,
    #[serde(default)]
    weight: String,
    /// `key=value` pairs separated by commas.
    #[serde(default)]
    labels: String,
}

/// The form's refusals, by field.
#[derive(Default)]
struct FieldErrors {
    name: Option<String>,
    agent_url: Option<String>,
    endpoint_host: Option<String>,
    listen_port: Option<String>,
    peer_pool: Option<String>,
    max_peers: Option<String>,
    weight: Option<String>,
    labels: Option<String>,
    form: Option<String>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        [
            &self.name,
            &self.agent_url,
            &self.endpoint_host,
            &self.listen_port,
            &self.peer_pool,
            &self.max_peers,
            &self.weight,
            &self.labels,
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
            StoreError::NodeNameTaken(_) => &mut errors.name,
            StoreError::NotFound(what) if what.starts_with("pool") => &mut errors.peer_pool,
            StoreError::NodeHasPeers { .. } => &mut errors.peer_pool,
            _ if m.starts_with("name:") => &mut errors.name,
            _ if m.starts_with("agent_url:") => &mut errors.agent_url,
            _ if m.starts_with("endpoint_host:") => &mut errors.endpoint_host,
            _ if m.starts_with("listen_port:") => &mut errors.listen_port,
            _ if m.starts_with("max_peers:") => &mut errors.max_peers,
            _ if m.starts_with("weight:") => &mut errors.weight,
            _ if m.starts_with("labels:") => &mut errors.labels,
            _ => &mut errors.form,
        };
        *slot = Some(m);
        Ok((api.status, errors))
    }
}

/// What the form says, parsed at the edge: numbers and labels.
struct Parsed {
    listen_port: u16,
    max_peers: u32,
    weight: u32,
    labels: Vec<(String, String)>,
}

impl NodeForm {
    fn parse(&self) -> Result<Parsed, Box<FieldErrors>> {
        let mut errors = FieldErrors::default();
        fn number<T: std::str::FromStr>(
            text: &str,
            default: T,
            slot: &mut Option<String>,
            what: &str,
        ) -> T {
            let text = text.trim();
            if text.is_empty() {
                return default;
            }
            text.parse().unwrap_or_else(|_| {
                *slot = Some(format!("{what}: {text:?} is not a whole number in range"));
                default
            })
        }
        let listen_port = number(
            &self.listen_port,
            51820,
            &mut errors.listen_port,
            "listen_port",
        );
        let max_peers = number(&self.max_peers, 250, &mut errors.max_peers, "max_peers");
        let weight = number(&self.weight, 1, &mut errors.weight, "weight");
        let labels = crate::input::parse_labels(&self.labels).unwrap_or_else(|e| {
            errors.labels = Some(format!("labels: {e}"));
            Vec::new()
        });
        if errors.any() {
            return Err(Box::new(errors));
        }
        Ok(Parsed {
            listen_port,
            max_peers,
            weight,
            labels,
        })
    }

    fn of(node: &Node, pool: &str) -> NodeForm {
        NodeForm {
            name: node.name.clone(),
            agent_url: node.agent_url.clone(),
            endpoint_host: node.endpoint_host.clone(),
            listen_port: node.listen_port.to_string(),
            peer_pool: pool.to_string(),
            max_peers: node.max_peers.to_string(),
            weight: node.weight.to_string(),
            labels: labels_text(&node.labels),
        }
    }
}

#[derive(Template)]
#[template(path = "node_form.html")]
struct FormPage {
    frame: Frame,
    csrf: String,
    form: NodeForm,
    errors: FieldErrors,
    pools: Vec<Pool>,
    /// Some(name) when editing that node (its name is fixed).
    editing: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn form_page(
    s: &AppState,
    status: StatusCode,
    user: SignedIn,
    headers: &HeaderMap,
    form: NodeForm,
    errors: FieldErrors,
    editing: Option<String>,
) -> Result<Response, PageError> {
    let pools = s.store.read(|r| r.pools())?;
    let title = match &editing {
        Some(n) => format!("Edit node {n}"),
        None => "New node".into(),
    };
    let page = FormPage {
        csrf: user.csrf.clone(),
        frame: frame(title, user, headers),
        form,
        errors,
        pools,
        editing,
    };
    Ok(render(status, &page.frame, &page, s.secure_cookies))
}

/// The register form. Admins only.
async fn new_form(
    State(s): State<AppState>,
    PageAdmin(user): PageAdmin,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let form = NodeForm {
        listen_port: "51820".into(),
        max_peers: "250".into(),
        weight: "1".into(),
        ..NodeForm::default()
    };
    form_page(
        &s,
        StatusCode::OK,
        user,
        &headers,
        form,
        FieldErrors::default(),
        None,
    )
}

#[derive(Template)]
#[template(path = "node_registered.html")]
struct RegisteredPage {
    frame: Frame,
    node: Node,
    secret: String,
    command: String,
}

/// Registers a node and shows its secret, once (never cached). Admins only.
async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    AdminForm { user, form }: AdminForm<NodeForm>,
) -> Result<Response, PageError> {
    let reg: &Registry = registry(&s).map_err(PageError::Api)?;
    let parsed = match form.parse() {
        Ok(p) => p,
        Err(errors) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return form_page(&s, status, user, &headers, form, *errors, None);
        }
    };
    let spec = NodeSpec {
        name: form.name.trim().to_string(),
        agent_url: form.agent_url.trim().to_string(),
        endpoint_host: form.endpoint_host.trim().to_string(),
        listen_port: parsed.listen_port,
        peer_pool: form.peer_pool.clone(),
        max_peers: parsed.max_peers,
        weight: parsed.weight,
        labels: parsed.labels,
        enabled: true,
    };
    match reg.register(spec, &user.name).await {
        Ok(r) => {
            tracing::info!(user = %user.name, node = %r.node.name, "registered node");
            let page = RegisteredPage {
                frame: frame(format!("Node {} registered", r.node.name), user, &headers),
                command: agent_command(&r.node),
                node: r.node,
                secret: r.secret,
            };
            let mut resp = render(StatusCode::CREATED, &page.frame, &page, s.secure_cookies);
            // The page holds the node's secret: no cache may keep it.
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        }
        Err(crate::controller::nodes::NodeError::Store(e)) => {
            let (status, errors) = FieldErrors::from_refusal(e)?;
            form_page(&s, status, user, &headers, form, errors, None)
        }
        Err(e) => Err(page_err(e)),
    }
}

/// The edit form, filled in. Admins only.
async fn edit_form(
    State(s): State<AppState>,
    Path(name): Path<String>,
    PageAdmin(user): PageAdmin,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let node = load(&s, &name)?;
    let pool = s
        .store
        .read(|r| r.pool_by_id(node.peer_pool))?
        .map_or_else(|| node.peer_pool.to_string(), |p| p.name);
    let form = NodeForm::of(&node, &pool);
    form_page(
        &s,
        StatusCode::OK,
        user,
        &headers,
        form,
        FieldErrors::default(),
        Some(name),
    )
}

/// Saves an edit. Admins only.
async fn edit(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    AdminForm { user, form }: AdminForm<NodeForm>,
) -> Result<Response, PageError> {
    let parsed = match form.parse() {
        Ok(p) => p,
        Err(errors) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return form_page(&s, status, user, &headers, form, *errors, Some(name));
        }
    };
    let patch = NodePatch {
        agent_url: Some(form.agent_url.trim().to_string()),
        endpoint_host: Some(form.endpoint_host.trim().to_string()),
        listen_port: Some(parsed.listen_port),
        peer_pool: Some(form.peer_pool.clone()),
        max_peers: Some(parsed.max_peers),
        weight: Some(parsed.weight),
        labels: Some(parsed.labels),
        enabled: None,
    };
    let (n, actor) = (name.clone(), user.name.clone());
    match s
        .store
        .write(move |w| w.update_node(&n, &patch, &actor))
        .await
    {
        Ok(_) => Ok(see_other(
            "/nodes",
            &format!("Saved node {name}"),
            s.secure_cookies,
        )),
        Err(StoreError::NotFound(what)) if what.starts_with("node") => Err(not_found(&name)),
        Err(e) => {
            let (status, errors) = FieldErrors::from_refusal(e)?;
            form_page(&s, status, user, &headers, form, errors, Some(name))
        }
    }
}

#[derive(Deserialize)]
struct EnabledForm {
    /// "true" to enable, anything else to disable.
    enabled: String,
}

/// Enables or disables a node. Admins only.
async fn set_enabled(
    State(s): State<AppState>,
    Path(name): Path<String>,
    AdminForm { user, form }: AdminForm<EnabledForm>,
) -> Result<Response, PageError> {
    let enabled = form.enabled == "true";
    let patch = NodePatch {
        enabled: Some(enabled),
        ..NodePatch::default()
    };
    let (n, actor) = (name.clone(), user.name.clone());
    s.store
        .write(move |w| w.update_node(&n, &patch, &actor))
        .await
        .map_err(page_err)?;
    tracing::info!(user = %user.name, node = %name, enabled, "node switched");
    let word = if enabled { "Enabled" } else { "Disabled" };
    Ok(see_other(
        "/nodes",
        &format!("{word} node {name}"),
        s.secure_cookies,
    ))
}

#[derive(Deserialize)]
struct Empty {}

/// Tests the connection (a signed health call) and says how it went. Admins only.
async fn test(
    State(s): State<AppState>,
    Path(name): Path<String>,
    AdminForm { .. }: AdminForm<Empty>,
) -> Result<Response, PageError> {
    let reg = registry(&s).map_err(PageError::Api)?;
    let outcome = reg.test(&name).await.map_err(page_err)?;
    let ms = outcome.latency.as_secs_f64() * 1000.0;
    let message = match outcome.result {
        Ok(h) => format!(
            "{name} answered in {ms:.1} ms (weft {}, up {} s)",
            h.version, h.uptime_seconds
        ),
        Err(e) => format!("{name} did not answer ({ms:.0} ms): {e}"),
    };
    Ok(see_other("/nodes", &message, s.secure_cookies))
}

/// Rotates the node's secret through its agent (docs/agent-protocol.md, "Rotating the
/// secret"); the outcome comes back as a message on the node's page. Admins only.
async fn rotate_secret(
    State(s): State<AppState>,
    Path(name): Path<String>,
    AdminForm { user, .. }: AdminForm<Empty>,
) -> Result<Response, PageError> {
    load(&s, &name)?;
    let reg = registry(&s).map_err(PageError::Api)?;
    let message = match reg.rotate_secret(&name, &user.name).await {
        Ok(_) => format!("{name} has a new secret; no request failed on the way"),
        Err(e) => format!("The secret of {name} was not rotated: {e}"),
    };
    let to = format!("/nodes/{}", super::pools::url_part(&name));
    Ok(see_other(&to, &message, s.secure_cookies))
}

#[derive(Template)]
#[template(path = "node_delete.html")]
struct DeletePage {
    frame: Frame,
    csrf: String,
    card: NodeCard,
    error: Option<String>,
}

/// The confirmation. Admins only.
async fn confirm_delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
    PageAdmin(user): PageAdmin,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let node = load(&s, &name)?;
    let card = cards(&s, vec![node])?.remove(0);
    let page = DeletePage {
        csrf: user.csrf.clone(),
        frame: frame(format!("Delete node {name}"), user, &headers),
        card,
        error: None,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

/// Deletes a node without peers. Admins only.
async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    AdminForm { user, .. }: AdminForm<Empty>,
) -> Result<Response, PageError> {
    let (n, actor) = (name.clone(), user.name.clone());
    match s.store.write(move |w| w.delete_node(&n, &actor)).await {
        Ok(_) => {
            s.peer_stats.forget(&name);
            tracing::info!(user = %user.name, node = %name, "deleted node");
            Ok(see_other(
                "/nodes",
                &format!("Deleted node {name}"),
                s.secure_cookies,
            ))
        }
        Err(e @ StoreError::NodeHasPeers { .. }) => {
            let node = load(&s, &name)?;
            let card = cards(&s, vec![node])?.remove(0);
            let api = ApiError::from(e);
            let page = DeletePage {
                csrf: user.csrf.clone(),
                frame: frame(format!("Delete node {name}"), user, &headers),
                card,
                error: Some(api.message),
            };
            Ok(render(api.status, &page.frame, &page, s.secure_cookies))
        }
        Err(e) => Err(page_err(e)),
    }
}
