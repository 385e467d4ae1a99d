//! The peer pages: the list (node as a badge, address, last handshake and transfer from the
//! last poll), one peer, the create form, the one-time page with the client's file and QR
//! code, and delete with confirmation.
//!
//! Every change goes through `controller::peers`, as the JSON API does; its refusals come
//! back as the form's errors with the status the API would answer.

use super::{Frame, render, see_other};
use crate::agent_api::{PeerDump, PublicKey};
use crate::controller::peers::{CreatePeer, Created, PeerError, Peers, Placement};
use crate::store::{Peer, Role};
use crate::web::AppState;
use crate::web::error::{ApiError, PageError};
use crate::web::session::{AdminForm, PageAdmin, SignedIn};
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use std::net::IpAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/peers", get(list).post(create))
        .route("/peers/new", get(new_form))
        .route("/peers/{name}", get(show))
        .route("/peers/{name}/delete", get(confirm_delete).post(delete))
}

fn frame(title: impl Into<String>, user: SignedIn, headers: &HeaderMap) -> Frame {
    Frame::signed_in("peers", title, user, headers)
}

fn controller(s: &AppState) -> Peers {
    Peers {
        store: s.store.clone(),
        strategy: s.placement.clone(),
        plugins: s.plugins.clone(),
    }
}

/// A peer with what the last poll of its node saw of it.
pub struct PeerRow {
    pub peer: Peer,
    pub seen: Option<PeerDump>,
}

impl PeerRow {
    /// "12 s ago", "never", or "not polled yet" when the node's last poll did not list it.
    pub fn handshake(&self, now: i64) -> String {
        match &self.seen {
            None => "not polled yet".into(),
            Some(PeerDump {
                last_handshake: None,
                ..
            }) => "never".into(),
            Some(PeerDump {
                last_handshake: Some(t),
                ..
            }) => super::relative(now - t),
        }
    }

    pub fn transfer(&self) -> String {
        match &self.seen {
            None => "–".into(),
            Some(d) => format!("{} in / {} out", bytes(d.rx_bytes), bytes(d.tx_bytes)),
        }
    }
}

/// Bytes in binary units, as `wg show` prints them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// Every peer with its node's view of it, from the node's last poll.
fn rows(s: &AppState, peers: Vec<Peer>) -> Vec<PeerRow> {
    let seen = s.peer_stats.seen();
    peers
        .into_iter()
        .map(|peer| {
            let seen = seen.get(&(peer.node.clone(), peer.public_key)).cloned();
            PeerRow { peer, seen }
        })
        .collect()
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

// ---- the list ----

#[derive(Template)]
#[template(path = "peers.html")]
struct PeersPage {
    frame: Frame,
    rows: Vec<PeerRow>,
    now: i64,
    admin: bool,
}

/// Every peer. Any signed-in user.
async fn list(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let peers = s.store.read(|r| r.peers())?;
    let admin = user.role == Role::Admin;
    let page = PeersPage {
        frame: frame("Peers", user, &headers),
        rows: rows(&s, peers),
        now: unix_now(),
        admin,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

// ---- one peer ----

#[derive(Template)]
#[template(path = "peer.html")]
struct PeerPage {
    frame: Frame,
    row: PeerRow,
    now: i64,
    admin: bool,
}

fn not_found(name: &str) -> PageError {
    PageError::Api(ApiError::not_found(format!("peer {name:?} not found")))
}

/// One peer. Any signed-in user.
async fn show(
    State(s): State<AppState>,
    Path(name): Path<String>,
    user: SignedIn,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let peer = s
        .store
        .read(|r| r.peer(&name))?
        .ok_or_else(|| not_found(&name))?;
    let admin = user.role == Role::Admin;
    let row = rows(&s, vec![peer]).remove(0);
    let page = PeerPage {
        frame: frame(format!("Peer {}", row.peer.name), user, &headers),
        row,
        now: unix_now(),
        admin,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

// ---- create ----

/// The create form as typed, kept so a refused form comes back as it was sent.
#[derive(Deserialize, Default)]
struct NewPeer {
    #[serde(default)]
    name: String,
    /// `auto` or a node's name.
    #[serde(default)]
    node: String,
    /// The client's own public key; empty: weft generates the keypair.
    #[serde(default)]
    public_key: String,
    /// DNS servers for the client's file, separated by commas or spaces.
    #[serde(default)]
    dns: String,
}

#[derive(Default)]
struct FieldErrors {
    name: Option<String>,
    node: Option<String>,
    public_key: Option<String>,
    dns: Option<String>,
    form: Option<String>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        self.name.is_some()
            || self.node.is_some()
            || self.public_key.is_some()
            || self.dns.is_some()
            || self.form.is_some()
    }

    /// Puts a refusal of the controller next to the field it is about.
    fn from_refusal(e: PeerError) -> Result<(StatusCode, FieldErrors), PageError> {
        let mut errors = FieldErrors::default();
        let slot = match &e {
            PeerError::BadName(_) => &mut errors.name,
            PeerError::UnknownNode(_)
            | PeerError::NodeDisabled(_)
            | PeerError::NodeFull { .. }
            | PeerError::NoEligibleNode(_) => &mut errors.node,
            _ => &mut errors.form,
        };
        let api = ApiError::from(e);
        // A fault of ours is the error page; an agent's failure (502) is the form's message.
        if api.status.is_server_error() && api.status != StatusCode::BAD_GATEWAY {
            return Err(PageError::Api(api));
        }
        *slot = Some(api.message);
        Ok((api.status, errors))
    }
}

impl NewPeer {
    /// The request for the controller, or what is wrong at the edge.
    fn request(&self) -> Result<CreatePeer, FieldErrors> {
        let mut errors = FieldErrors::default();
        let name = self.name.trim();
        if name.is_empty() {
            errors.name = Some("Enter a name for the peer.".into());
        }
        let node = match self.node.trim() {
            "" => "auto",
            n => n,
        };
        let public_key = match self.public_key.trim() {
            "" => None,
            k => match PublicKey::from_base64(k) {
                Ok(k) => Some(k),
                Err(e) => {
                    errors.public_key = Some(e.to_string());
                    None
                }
            },
        };
        let mut dns = Vec::new();
        for part in self
            .dns
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
        {
            match part.parse::<IpAddr>() {
                Ok(ip) => dns.push(ip),
                Err(_) => {
                    errors.dns = Some(format!("{part:?} is not an IP address"));
                    break;
                }
            }
        }
        if errors.any() {
            return Err(errors);
        }
        Ok(CreatePeer {
            name: name.to_string(),
            node: Placement::parse(node),
            public_key,
            dns,
        })
    }
}

#[derive(Template)]
#[template(path = "peer_new.html")]
struct NewPeerPage {
    frame: Frame,
    csrf: String,
    form: NewPeer,
    errors: FieldErrors,
    /// The registry's nodes, each with its status, for the node choice.
    nodes: Vec<(String, String)>,
}

async fn new_page(
    s: &AppState,
    status: StatusCode,
    user: SignedIn,
    headers: &HeaderMap,
    form: NewPeer,
    errors: FieldErrors,
) -> Result<Response, PageError> {
    let nodes = s
        .peer_nodes
        .nodes()
        .map_err(|e| PageError::Api(ApiError::from(e)))?
        .into_iter()
        .map(|n| (n.name, n.status))
        .collect();
    let page = NewPeerPage {
        csrf: user.csrf.clone(),
        frame: frame("New peer", user, headers),
        form,
        errors,
        nodes,
    };
    Ok(render(status, &page.frame, &page, s.secure_cookies))
}

/// The create form. Admins only.
async fn new_form(
    State(s): State<AppState>,
    PageAdmin(user): PageAdmin,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let form = NewPeer {
        node: "auto".into(),
        ..NewPeer::default()
    };
    new_page(
        &s,
        StatusCode::OK,
        user,
        &headers,
        form,
        FieldErrors::default(),
    )
    .await
}

#[derive(Template)]
#[template(path = "peer_created.html")]
struct CreatedPage {
    frame: Frame,
    peer: Peer,
    config: String,
    /// The QR code as a `data:` URL for an `<img>` (the CSP allows `data:` images only).
    qr: Option<String>,
    generated: bool,
    fallback: Option<String>,
}

/// Creates a peer and shows, once, the client's file and its QR code (the private key is in
/// them and weft keeps no copy). Never cached. Admins only, with the session's CSRF token.
async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    AdminForm { user, form }: AdminForm<NewPeer>,
) -> Result<Response, PageError> {
    let request = match form.request() {
        Ok(r) => r,
        Err(errors) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return new_page(&s, status, user, &headers, form, errors).await;
        }
    };
    let nodes = s
        .peer_nodes
        .nodes()
        .map_err(|e| PageError::Api(ApiError::from(e)))?;
    match controller(&s).create(request, &nodes, &user.name).await {
        Ok(created) => {
            tracing::info!(user = %user.name, peer = %created.peer.name, node = %created.peer.node, "created peer");
            Ok(created_page(&s, user, &headers, created))
        }
        Err(e) => {
            let (status, errors) = FieldErrors::from_refusal(e)?;
            new_page(&s, status, user, &headers, form, errors).await
        }
    }
}

fn created_page(s: &AppState, user: SignedIn, headers: &HeaderMap, c: Created) -> Response {
    use base64::Engine;
    let qr = c.qr_svg.as_ref().map(|svg| {
        format!(
            "data:image/svg+xml;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(svg)
        )
    });
    let page = CreatedPage {
        frame: frame(format!("Peer {} created", c.peer.name), user, headers),
        generated: c.private_key.is_some(),
        peer: c.peer,
        config: c.config,
        qr,
        fallback: c.placement_fallback,
    };
    let mut resp = render(StatusCode::CREATED, &page.frame, &page, s.secure_cookies);
    // The page holds a private key: no cache may keep it.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

// ---- delete ----

#[derive(Template)]
#[template(path = "peer_delete.html")]
struct DeletePage {
    frame: Frame,
    csrf: String,
    peer: Peer,
    force: bool,
    error: Option<String>,
}

#[derive(Deserialize)]
struct DeleteForm {
    /// A checkbox: present when ticked.
    #[serde(default)]
    force: Option<String>,
}

/// The confirmation. Admins only.
async fn confirm_delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
    PageAdmin(user): PageAdmin,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let peer = s
        .store
        .read(|r| r.peer(&name))?
        .ok_or_else(|| not_found(&name))?;
    let page = DeletePage {
        csrf: user.csrf.clone(),
        frame: frame(format!("Delete peer {name}"), user, &headers),
        peer,
        force: false,
        error: None,
    };
    Ok(render(StatusCode::OK, &page.frame, &page, s.secure_cookies))
}

/// Deletes a peer: its node's agent removes it, then its address is released. If the agent
/// cannot confirm, the form comes back with why (and the force box). Admins only.
async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    AdminForm { user, form }: AdminForm<DeleteForm>,
) -> Result<Response, PageError> {
    let peer = s
        .store
        .read(|r| r.peer(&name))?
        .ok_or_else(|| not_found(&name))?;
    let force = form.force.is_some();
    let nodes = s
        .peer_nodes
        .nodes()
        .map_err(|e| PageError::Api(ApiError::from(e)))?;
    let node = nodes.iter().find(|n| n.name == peer.node);
    match controller(&s).delete(&name, node, force, &user.name).await {
        Ok(_) => {
            tracing::info!(user = %user.name, peer = %name, force, "deleted peer");
            Ok(see_other(
                "/peers",
                &format!("Deleted peer {name}"),
                s.secure_cookies,
            ))
        }
        Err(e) => {
            let api = ApiError::from(e);
            if api.status.is_server_error() && api.status != StatusCode::BAD_GATEWAY {
                return Err(PageError::Api(api));
            }
            let page = DeletePage {
                csrf: user.csrf.clone(),
                frame: frame(format!("Delete peer {name}"), user, &headers),
                peer,
                force: true,
                error: Some(api.message),
            };
            Ok(render(api.status, &page.frame, &page, s.secure_cookies))
        }
    }
}
