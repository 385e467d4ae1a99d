//! Peers: placing a peer on a node, its address, the agent calls, and the rollback.
//!
//! Creating a peer is three steps: the peer and its address are written (durably) first, so
//! no concurrent creation can take the address; then the node's agent is asked to ensure its
//! peer interface and add the peer. If any agent call fails, the peer and its address are
//! deleted again (durably) and the error names the node and why. A generated private key is
//! handed back once and never stored or logged.

use super::nodes::error_chain;
use crate::agent_api::{InterfaceSpec, InterfaceSummary, PeerDump, PeerSpec, PublicKey};
use crate::agent_client::{AgentAnswer, AgentClient, ResponseError};
use crate::placement::{self, Candidate, Health, Strategy};
use crate::plugins::PluginHost;
use crate::store::{NewPeer, Peer, Store, StoreError, valid_peer_name};
use crate::wgquick::{self, ClientConfig, ConfigError, KeyGenError, PrivateKey};
use ipnet::IpNet;
use std::fmt;
use std::sync::Arc;

/// A node as peers see it: what placement weighs, where clients connect, which pool their
/// addresses come from, and a client for its agent.
#[derive(Debug, Clone)]
pub struct PeerNode {
    pub name: String,
    pub enabled: bool,
    /// The last health poll reached the agent.
    pub online: bool,
    /// The node's status as the registry words it (`online`, `offline`, `error`,
    /// `disabled`), for the reasons in errors.
    pub status: String,
    /// Where clients send their packets: the node's public host name or address.
    pub endpoint_host: String,
    pub listen_port: u16,
    /// The IPAM pool (id or name) that peers on this node take addresses from.
    pub peer_pool: String,
    pub max_peers: u32,
    pub weight: u32,
    pub labels: Vec<(String, String)>,
    pub agent: AgentClient,
}

/// Where peers find the registry's nodes, each with a client for its agent. `weft serve`
/// reads the node registry; tests give nodes of their own.
pub trait NodeSource: Send + Sync {
    fn nodes(&self) -> Result<Vec<PeerNode>, PeerError>;
}

/// A source without nodes: every placement fails with "no node is registered".
pub struct NoNodes;

impl NodeSource for NoNodes {
    fn nodes(&self) -> Result<Vec<PeerNode>, PeerError> {
        Ok(Vec::new())
    }
}

/// Where a new peer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The node-selection strategy chooses among enabled, online nodes below capacity.
    Auto,
    Named(String),
}

impl Placement {
    /// `"auto"` or a node's name.
    pub fn parse(s: &str) -> Placement {
        if s == "auto" {
            Placement::Auto
        } else {
            Placement::Named(s.to_string())
        }
    }
}

/// A request to create a peer.
#[derive(Debug, Clone)]
pub struct CreatePeer {
    pub name: String,
    pub node: Placement,
    /// The client's own public key; without it, weft generates the keypair.
    pub public_key: Option<PublicKey>,
    pub dns: Vec<std::net::IpAddr>,
}

/// What creating a peer gives back, once. Its `Debug` leaves out the file and QR code,
/// which hold the private key.
pub struct Created {
    pub peer: Peer,
    /// Only when weft generated the keypair. Not stored anywhere.
    pub private_key: Option<PrivateKey>,
    /// The client's wg-quick file (with the private key when generated).
    pub config: String,
    /// The QR code of `config`; only when it is complete (the private key is in it).
    pub qr_svg: Option<String>,
    /// Set when a placement plugin failed and `least-loaded` chose instead.
    pub placement_fallback: Option<String>,
}

impl fmt::Debug for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Created")
            .field("peer", &self.peer)
            .field("private_key", &self.private_key)
            .field("config", &"<redacted>")
            .field("qr_svg", &self.qr_svg.as_ref().map(|_| "<redacted>"))
            .field("placement_fallback", &self.placement_fallback)
            .finish()
    }
}

/// What the controller needs around peers.
#[derive(Clone)]
pub struct Peers {
    pub store: Store,
    pub strategy: Strategy,
    pub plugins: Option<Arc<PluginHost>>,
}

/// Why `auto` found no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    NoNodes,
    NoneEnabled {
        nodes: usize,
    },
    /// Enabled nodes exist but none is online; each with its status.
    NoneOnline {
        nodes: Vec<(String, String)>,
    },
    /// Online nodes exist but each is full; each with active/max.
    AllFull {
        nodes: Vec<(String, u32, u32)>,
    },
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligible::NoNodes => f.write_str("no node is registered"),
            Ineligible::NoneEnabled { nodes } => {
                write!(f, "none of the {nodes} registered nodes is enabled")
            }
            Ineligible::NoneOnline { nodes } => {
                f.write_str("no enabled node is online (")?;
                for (i, (name, status)) in nodes.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{name}: {status}")?;
                }
                f.write_str(")")
            }
            Ineligible::AllFull { nodes } => {
                f.write_str("every online node is at capacity (")?;
                for (i, (name, active, max)) in nodes.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{name}: {active}/{max} peers")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// What went wrong in a call to a node's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentFailure {
    /// No connection, or it failed or timed out.
    Unreachable(String),
    /// The agent answered with a refusal, and its reason.
    Refused { status: u16, message: String },
    /// The answer's signature did not verify: a forged or altered answer, not trusted.
    Forged(String),
    /// A verified answer that is not what the endpoint documents.
    BadAnswer(String),
}

impl fmt::Display for AgentFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentFailure::Unreachable(why) => write!(f, "agent unreachable ({why})"),
            AgentFailure::Refused { status, message } => {
                write!(f, "agent refused the request ({status}: {message})")
            }
            AgentFailure::Forged(why) => {
                write!(
                    f,
                    "agent answer not trusted, signature check failed ({why})"
                )
            }
            AgentFailure::BadAnswer(why) => write!(f, "agent answer not understood ({why})"),
        }
    }
}

impl From<ResponseError> for AgentFailure {
    fn from(e: ResponseError) -> Self {
        match e {
            ResponseError::Http(e) => AgentFailure::Unreachable(error_chain(&e)),
            ResponseError::Refused { status, code } => AgentFailure::Refused {
                status,
                message: code,
            },
            ResponseError::Forged(e) => AgentFailure::Forged(e.to_string()),
            e @ (ResponseError::Url(_) | ResponseError::TooLarge | ResponseError::Json(_)) => {
                AgentFailure::BadAnswer(e.to_string())
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("peer name {0:?} must be 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("there is no node {0:?}")]
    UnknownNode(String),
    #[error("node {0:?} is disabled")]
    NodeDisabled(String),
    #[error("node {node:?} is full: {active}/{max} peers")]
    NodeFull { node: String, active: u32, max: u32 },
    #[error("no node can take the peer: {0}")]
    NoEligibleNode(Ineligible),
    /// The agent call failed; the peer and its address were rolled back.
    #[error("node {node:?}: {failure}; the peer was not created and its address was released")]
    Agent { node: String, failure: AgentFailure },
    /// The agent call failed and so did the rollback: the peer is still in the store.
    #[error(
        "node {node:?}: {failure}; removing the peer again also failed ({rollback}): delete it with force=true"
    )]
    RollbackFailed {
        node: String,
        failure: AgentFailure,
        rollback: Box<StoreError>,
    },
    /// Deleting: the agent could not confirm the peer is gone.
    #[error(
        "node {node:?}: {failure}; the peer was kept (delete with force=true to remove it from weft anyway)"
    )]
    DeleteRefused { node: String, failure: AgentFailure },
    #[error("cannot make the client's key: {0}")]
    KeyGen(#[from] KeyGenError),
    /// The node's endpoint cannot go into a wg-quick file.
    #[error("node {node:?}: {error}")]
    Config { node: String, error: ConfigError },
    /// A node-selector plugin ran on a blocking thread that did not come back.
    #[error("node selection did not finish: {0}")]
    Placement(String),
}

/// `/32` or `/128`: what the node routes to one peer.
fn host_net(ip: std::net::IpAddr) -> IpNet {
    IpNet::from(ip)
}

impl Peers {
    /// Chooses the node for a new peer among `nodes` (the registry's).
    pub async fn choose(
        &self,
        peer_name: &str,
        placement: &Placement,
        nodes: &[PeerNode],
    ) -> Result<(PeerNode, Option<String>), PeerError> {
        let counts = self.store.read(|r| r.peer_counts())?;
        let active = |n: &PeerNode| counts.get(&n.name).copied().unwrap_or(0);
        if let Placement::Named(name) = placement {
            let node = nodes
                .iter()
                .find(|n| &n.name == name)
                .ok_or_else(|| PeerError::UnknownNode(name.clone()))?;
            if !node.enabled {
                return Err(PeerError::NodeDisabled(name.clone()));
            }
            // A named node is tried even when the last poll found it offline: the agent
            // call says for sure, and the rollback undoes the allocation if it is down.
            // As `least-loaded` counts it: a node with `max_peers` 0 takes none.
            if active(node) >= node.max_peers {
                return Err(PeerError::NodeFull {
                    node: name.clone(),
                    active: active(node),
                    max: node.max_peers,
                });
            }
            return Ok((node.clone(), None));
        }
        let eligible: Vec<&PeerNode> = nodes
            .iter()
            .filter(|n| n.enabled && n.online && active(n) < n.max_peers)
            .collect();
        if eligible.is_empty() {
            return Err(PeerError::NoEligibleNode(why_none(nodes, &active)));
        }
        let candidates: Vec<Candidate> = eligible
            .iter()
            .map(|n| Candidate {
                id: n.name.clone(),
                name: n.name.clone(),
                labels: n.labels.clone(),
                region: n
                    .labels
                    .iter()
                    .find(|(k, _)| k == "region")
                    .map(|(_, v)| v.clone()),
                active_peers: active(n),
                max_peers: n.max_peers,
                weight: n.weight.max(1),
                health: Health::Healthy,
                peers_with_handshake: 0,
                newest_handshake_secs: None,
                oldest_handshake_secs: None,
            })
            .collect();
        let request = placement::Request {
            peer_name: peer_name.to_string(),
            labels: Vec::new(),
        };
        let (strategy, plugins) = (self.strategy.clone(), self.plugins.clone());
        // A plugin call blocks; the built-in strategy is cheap either way.
        let choice = tokio::task::spawn_blocking(move || {
            placement::choose(&strategy, plugins.as_deref(), &request, &candidates)
        })
        .await
        .map_err(|e| PeerError::Placement(e.to_string()))?;
        let chosen = choice
            .node
            .and_then(|id| eligible.iter().find(|n| n.name == id))
            .ok_or_else(|| PeerError::NoEligibleNode(why_none(nodes, &active)))?;
        Ok(((*chosen).clone(), choice.fallback))
    }

    /// Creates a peer on a node of `nodes` (the registry's): allocate, ensure the node's
    /// peer interface, add the peer; roll back if the agent fails.
    pub async fn create(
        &self,
        req: CreatePeer,
        nodes: &[PeerNode],
        actor: &str,
    ) -> Result<Created, PeerError> {
        if !valid_peer_name(&req.name) {
            return Err(PeerError::BadName(req.name.chars().take(80).collect()));
        }
        if self.store.read(|r| r.peer(&req.name))?.is_some() {
            return Err(StoreError::PeerNameTaken(req.name).into());
        }
        let (node, placement_fallback) = self.choose(&req.name, &req.node, nodes).await?;
        let (private_key, public_key) = match req.public_key {
            Some(k) => (None, k),
            None => {
                let k = PrivateKey::generate()?;
                let public = k.public_key();
                (Some(k), public)
            }
        };
        let (pool_cidr, interface) = self.store.read(|r| {
            Ok((
                r.pool(&node.peer_pool)?.cidr,
                r.peer_interface_address(&node.peer_pool)?,
            ))
        })?;
        // Check that the node's endpoint fits a wg-quick file before anything is written.
        let client = |address: IpNet, node_key: PublicKey| ClientConfig {
            private_key: private_key.as_ref(),
            public_key,
            address,
            dns: req.dns.clone(),
            node_public_key: node_key,
            endpoint_host: &node.endpoint_host,
            endpoint_port: node.listen_port,
            allowed_ips: vec![pool_cidr],
        };
        wgquick::render(&client(interface, public_key)).map_err(|error| PeerError::Config {
            node: node.name.clone(),
            error,
        })?;

        let new = NewPeer {
            name: req.name.clone(),
            node: node.name.clone(),
            pool: node.peer_pool.clone(),
            public_key,
        };
        let who = actor.to_string();
        let peer = self.store.write(move |w| w.create_peer(&new, &who)).await?;

        let added = async {
            let summary = put_interface(&node.agent, interface, node.listen_port).await?;
            add_peer(&node.agent, &peer).await?;
            Ok::<_, AgentFailure>(summary)
        }
        .await;
        let summary = match added {
            Ok(summary) => summary,
            Err(failure) => return Err(self.roll_back(&peer, &node.name, failure, actor).await),
        };
        tracing::info!(peer = %peer.name, node = %node.name, address = %peer.address, "peer created");

        let address = IpNet::new(peer.address, pool_cidr.prefix_len()).unwrap_or(pool_cidr);
        let config = wgquick::render(&client(address, summary.public_key)).map_err(|error| {
            PeerError::Config {
                node: node.name.clone(),
                error,
            }
        })?;
        // A file too large for a QR code (many DNS servers) still has its text.
        let qr_svg = match private_key {
            Some(_) => wgquick::qr_svg(&config).ok(),
            None => None,
        };
        Ok(Created {
            peer,
            private_key,
            config,
            qr_svg,
            placement_fallback,
        })
    }

    /// Undoes a created peer after its agent failed; the error to report either way.
    async fn roll_back(
        &self,
        peer: &Peer,
        node: &str,
        failure: AgentFailure,
        actor: &str,
    ) -> PeerError {
        let (name, who) = (peer.name.clone(), actor.to_string());
        match self.store.write(move |w| w.delete_peer(&name, &who)).await {
            Ok(_) => {
                tracing::warn!(peer = %peer.name, node, %failure, "agent failed; peer rolled back");
                PeerError::Agent {
                    node: node.to_string(),
                    failure,
                }
            }
            Err(rollback) => {
                tracing::error!(peer = %peer.name, node, %failure, error = %rollback, "rollback failed");
                PeerError::RollbackFailed {
                    node: node.to_string(),
                    failure,
                    rollback: Box::new(rollback),
                }
            }
        }
    }

    /// Removes a peer from its node's agent (a 404 there counts as gone), then deletes it and
    /// releases its address. If the agent cannot confirm, the peer is kept unless `force`.
    /// `node` is the peer's node from the registry; none if it was deleted since.
    pub async fn delete(
        &self,
        name: &str,
        node: Option<&PeerNode>,
        force: bool,
        actor: &str,
    ) -> Result<Peer, PeerError> {
        let peer = self
            .store
            .read(|r| r.peer(name))?
            .ok_or_else(|| StoreError::NotFound(format!("peer {name:?}")))?;
        if let Some(node) = node
            && let Err(failure) = remove_peer(&node.agent, &peer.public_key).await
        {
            if !force {
                return Err(PeerError::DeleteRefused {
                    node: node.name.clone(),
                    failure,
                });
            }
            tracing::warn!(peer = %peer.name, node = %node.name, %failure,
                "agent did not confirm the removal; deleting the peer anyway (force)");
        }
        let (name, who) = (name.to_string(), actor.to_string());
        let gone = self
            .store
            .write(move |w| w.delete_peer(&name, &who))
            .await?;
        tracing::info!(peer = %gone.name, node = %gone.node, "peer deleted");
        Ok(gone)
    }
}

/// Names every node's reason for being passed over.
fn why_none(nodes: &[PeerNode], active: &dyn Fn(&PeerNode) -> u32) -> Ineligible {
    if nodes.is_empty() {
        return Ineligible::NoNodes;
    }
    let enabled: Vec<&PeerNode> = nodes.iter().filter(|n| n.enabled).collect();
    if enabled.is_empty() {
        return Ineligible::NoneEnabled { nodes: nodes.len() };
    }
    let online: Vec<&&PeerNode> = enabled.iter().filter(|n| n.online).collect();
    if online.is_empty() {
        return Ineligible::NoneOnline {
            nodes: enabled
                .iter()
                .map(|n| (n.name.clone(), n.status.clone()))
                .collect(),
        };
    }
    Ineligible::AllFull {
        nodes: online
            .iter()
            .map(|n| (n.name.clone(), active(n), n.max_peers))
            .collect(),
    }
}

// The agent calls, through the signed client. Small and private so the typed methods of
// `agent_client` can replace them.

/// A verified answer with a status outside 2xx is the agent's refusal, with its reason.
fn refusal(answer: &AgentAnswer) -> AgentFailure {
    AgentFailure::Refused {
        status: answer.status,
        message: answer.refusal(),
    }
}

fn json_of<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Plain documents of keys, addresses and numbers: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// `PUT /v1/interface`: the node's peer interface with its address and port.
async fn put_interface(
    agent: &AgentClient,
    address: IpNet,
    listen_port: u16,
) -> Result<InterfaceSummary, AgentFailure> {
    let spec = InterfaceSpec {
        address,
        listen_port,
    };
    let answer = agent
        .call(reqwest::Method::PUT, "/v1/interface", json_of(&spec))
        .await?;
    if !(200..300).contains(&answer.status) {
        return Err(refusal(&answer));
    }
    let summary: InterfaceSummary = serde_json::from_slice(&answer.body)
        .map_err(|e| AgentFailure::BadAnswer(format!("PUT /v1/interface: {e}")))?;
    Ok(summary)
}

/// `POST /v1/peers`: the peer with its one address as its allowed IP.
async fn add_peer(agent: &AgentClient, peer: &Peer) -> Result<PeerDump, AgentFailure> {
    let spec = PeerSpec {
        public_key: peer.public_key,
        allowed_ips: vec![host_net(peer.address)],
        persistent_keepalive: None,
    };
    let answer = agent
        .call(reqwest::Method::POST, "/v1/peers", json_of(&spec))
        .await?;
    if !(200..300).contains(&answer.status) {
        return Err(refusal(&answer));
    }
    let dump: PeerDump = serde_json::from_slice(&answer.body)
        .map_err(|e| AgentFailure::BadAnswer(format!("POST /v1/peers: {e}")))?;
    if dump.public_key != peer.public_key {
        return Err(AgentFailure::BadAnswer(
            "POST /v1/peers answered for another key".into(),
        ));
    }
    Ok(dump)
}

/// `DELETE /v1/peers/{hex}`: 204, or 404 when the node has no such peer (gone either way).
async fn remove_peer(agent: &AgentClient, key: &PublicKey) -> Result<(), AgentFailure> {
    let path = format!("/v1/peers/{}", key.to_hex());
    let answer = agent
        .call(reqwest::Method::DELETE, &path, Vec::new())
        .await?;
    match answer.status {
        200..300 | 404 => Ok(()),
        _ => Err(refusal(&answer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_peer_shows_no_private_key_in_debug() {
        let key = PrivateKey::from_bytes([3; 32]);
        let secret = key.to_base64();
        let created = Created {
            peer: Peer {
                id: 1,
                name: "laptop".into(),
                node: "node-a".into(),
                address: "10.8.0.2".parse().unwrap(),
                public_key: key.public_key(),
                created: jiff::Timestamp::UNIX_EPOCH,
                created_by: "t".into(),
            },
            config: format!("[Interface]\nPrivateKey = {secret}\n"),
            qr_svg: Some("<svg/>".into()),
            private_key: Some(key),
            placement_fallback: None,
        };
        let shown = format!("{created:?}");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(shown.contains("laptop"));
    }

    #[test]
    fn agent_failures_say_what_happened() {
        let f = AgentFailure::Refused {
            status: 401,
            message: "bad_signature".into(),
        };
        let e = PeerError::Agent {
            node: "node-a".into(),
            failure: f,
        };
        assert_eq!(
            e.to_string(),
            "node \"node-a\": agent refused the request (401: bad_signature); the peer was not created and its address was released"
        );
        assert_eq!(Placement::parse("auto"), Placement::Auto);
        assert_eq!(
            Placement::parse("node-a"),
            Placement::Named("node-a".into())
        );
    }
}
