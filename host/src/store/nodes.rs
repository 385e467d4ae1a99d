//! Nodes: the servers whose agents weft talks to. A node's name is its id in the signed
//! protocol, fixed at creation. Its shared secret is stored only sealed (see `secretbox`);
//! the store never sees it in clear. Registering a node takes its persistent overlay address
//! from the overlay pool (if one is set) in the same transaction; deleting it gives it back.

use super::{NodeAction, Reader, Result, StoreError, Writer, encode, get_json};
use crate::agent_api::{Health, PublicKey};
use crate::ipam::Status;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Most labels a node carries, and the longest key and value.
pub const MAX_LABELS: usize = 32;
const MAX_LABEL_LEN: usize = 64;

/// A node's health as weft last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Registered, never polled yet.
    Unknown,
    /// The last signed health call was answered and verified.
    Online,
    /// The last call got no answer (refused connection, timeout).
    Offline,
    /// The agent answered, but not acceptably: refused our signature, or its answer did not
    /// verify or parse.
    Error,
    /// Switched off by an operator: not polled, never chosen.
    Disabled,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Unknown => "unknown",
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
            NodeStatus::Error => "error",
            NodeStatus::Disabled => "disabled",
        }
    }
}

/// A shared secret sealed with XChaCha20-Poly1305 under the controller's key file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    #[serde(with = "hex::serde")]
    pub nonce: [u8; 24],
    #[serde(with = "hex::serde")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedSecret(..)")
    }
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Its id in the signed protocol: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Where its agent listens, e.g. `http://10.0.0.5:7443/`.
    pub agent_url: String,
    pub secret: SealedSecret,
    /// The host name or address clients send WireGuard packets to.
    pub endpoint_host: String,
    pub listen_port: u16,
    /// The IPAM pool (id) that peers on this node take their addresses from.
    pub peer_pool: u64,
    pub max_peers: u32,
    pub weight: u32,
    pub labels: Vec<(String, String)>,
    pub enabled: bool,
    pub status: NodeStatus,
    pub last_seen: Option<jiff::Timestamp>,
    pub last_health: Option<Health>,
    pub last_error: Option<String>,
    /// The public key of its peer interface, as its agent reported it.
    pub public_key: Option<PublicKey>,
    /// Its persistent address in the overlay pool, the same in every mesh.
    pub overlay_address: Option<IpAddr>,
    /// The public key its mesh interfaces share, as its agent reported it.
    #[serde(default)]
    pub mesh_key: Option<PublicKey>,
    pub created: jiff::Timestamp,
    pub created_by: String,
}

impl Node {
    /// The `region` label, which placement weighs.
    pub fn region(&self) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == "region")
            .map(|(_, v)| v.as_str())
    }
}

/// What registering a node takes (the secret comes sealed, made by the controller).
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub agent_url: String,
    pub endpoint_host: String,
    pub listen_port: u16,
    /// The peer pool, by id or name.
    pub peer_pool: String,
    pub max_peers: u32,
    pub weight: u32,
    pub labels: Vec<(String, String)>,
    pub enabled: bool,
}

/// An edit: each field given replaces the stored one.
#[derive(Debug, Clone, Default)]
pub struct NodePatch {
    pub agent_url: Option<String>,
    pub endpoint_host: Option<String>,
    pub listen_port: Option<u16>,
    pub peer_pool: Option<String>,
    pub max_peers: Option<u32>,
    pub weight: Option<u32>,
    pub labels: Option<Vec<(String, String)>>,
    pub enabled: Option<bool>,
}

/// What one health call found, to be recorded.
#[derive(Debug, Clone)]
pub enum Observation {
    Answered {
        health: Health,
        /// The public key of the node's peer interface, if the health lists it.
        public_key: Option<PublicKey>,
    },
    Unreachable(String),
    Failed(String),
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

/// The owner written on a node's overlay address.
pub fn node_owner(name: &str) -> String {
    format!("node:{name}")
}

fn check_url(url: &str) -> Result<()> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(invalid(format!(
            "agent_url: {:?} is not an http:// or https:// URL with a host",
            url.chars().take(200).collect::<String>()
        ))),
    }
}

fn check_host(host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "endpoint_host: {:?} is not a host name or IP address",
            host.chars().take(260).collect::<String>()
        )))
    }
}

pub(crate) fn check_labels(labels: &[(String, String)]) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!("labels: at most {MAX_LABELS}")));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_LEN
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if !key_ok {
            return Err(invalid(format!(
                "labels: key {k:?} must be 1 to {MAX_LABEL_LEN} of A-Z a-z 0-9 . _ - /"
            )));
        }
        if v.len() > MAX_LABEL_LEN || v.chars().any(char::is_control) {
            return Err(invalid(format!(
                "labels: the value of {k:?} must be at most {MAX_LABEL_LEN} printable characters"
            )));
        }
    }
    Ok(())
}

fn check_numbers(listen_port: u16, max_peers: u32, weight: u32) -> Result<()> {
    if listen_port == 0 {
        return Err(invalid("listen_port: give a port from 1 to 65535"));
    }
    if max_peers == 0 {
        return Err(invalid("max_peers: at least 1"));
    }
    if weight == 0 {
        return Err(invalid("weight: at least 1"));
    }
    Ok(())
}

impl Reader {
    pub fn node(&self, name: &str) -> Result<Option<Node>> {
        get_json(self.t.nodes()?, "nodes", name)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Result<Vec<Node>> {
        let mut out = Vec::new();
        for e in self.t.nodes()?.iter()? {
            out.push(super::decode("nodes", e?.1.value())?);
        }
        Ok(out)
    }

    /// The overlay pool, if one is set.
    pub fn overlay_pool(&self) -> Result<Option<super::Pool>> {
        match self.t.meta()?.get("overlay_pool")?.map(|g| g.value()) {
            Some(id) => self.pool_by_id(id),
            None => Ok(None),
        }
    }
}

impl Writer<'_> {
    pub(crate) fn node_in_txn(&self, name: &str) -> Result<Option<Node>> {
        get_json(self.t.nodes.table()?, "nodes", name)
    }

    pub(crate) fn put_node_in_txn(&mut self, node: &Node) -> Result<()> {
        self.put_node(node)
    }

    pub(crate) fn overlay_pool_in_txn(&self) -> Result<Option<super::Pool>> {
        match self.t.meta.get("overlay_pool")?.map(|g| g.value()) {
            Some(id) => get_json(self.t.pools.table()?, "pools", id),
            None => Ok(None),
        }
    }

    fn put_node(&mut self, node: &Node) -> Result<()> {
        self.t
            .nodes
            .insert(node.name.as_str(), encode(node).as_slice())?;
        Ok(())
    }

    fn load_node(&self, name: &str) -> Result<Node> {
        get_json(self.t.nodes.table()?, "nodes", name)?
            .ok_or_else(|| StoreError::NotFound(format!("node {name:?}")))
    }

    /// Registers a node, and takes its overlay address if an overlay pool is set. Its
    /// history starts with `Registered` by `actor`.
    pub fn create_node(
        &mut self,
        spec: &NodeSpec,
        secret: SealedSecret,
        actor: &str,
    ) -> Result<Node> {
        let node = self.insert_node(spec, secret, actor)?;
        self.record_node_event(&node.name, actor, NodeAction::Registered)?;
        Ok(node)
    }

    /// Registers a node without a history entry: its caller records how it came.
    pub(super) fn insert_node(
        &mut self,
        spec: &NodeSpec,
        secret: SealedSecret,
        actor: &str,
    ) -> Result<Node> {
        if !crate::protocol::valid_node_id(&spec.name) {
            return Err(invalid(format!(
                "name: {:?} must be 1 to 64 of A-Z a-z 0-9 . _ -",
                spec.name.chars().take(80).collect::<String>()
            )));
        }
        if self.t.nodes.get(spec.name.as_str())?.is_some() {
            return Err(StoreError::NodeNameTaken(spec.name.clone()));
        }
        check_url(&spec.agent_url)?;
        check_host(&spec.endpoint_host)?;
        check_numbers(spec.listen_port, spec.max_peers, spec.weight)?;
        check_labels(&spec.labels)?;
        let pool = self.pool(&spec.peer_pool)?;
        let overlay = self.overlay_pool_in_txn()?;
        let overlay_address = match overlay {
            Some(overlay) => {
                let req = super::AllocationRequest {
                    address: None,
                    owner: Some(node_owner(&spec.name)),
                    hostname: Some(spec.name.clone()),
                };
                Some(self.allocate(&overlay.name, &req, None, actor)?.address)
            }
            None => None,
        };
        let node = Node {
            name: spec.name.clone(),
            agent_url: spec.agent_url.clone(),
            secret,
            endpoint_host: spec.endpoint_host.clone(),
            listen_port: spec.listen_port,
            peer_pool: pool.id,
            max_peers: spec.max_peers,
            weight: spec.weight,
            labels: spec.labels.clone(),
            enabled: spec.enabled,
            status: if spec.enabled {
                NodeStatus::Unknown
            } else {
                NodeStatus::Disabled
            },
            last_seen: None,
            last_health: None,
            last_error: None,
            public_key: None,
            overlay_address,
            mesh_key: None,
            created: self.now,
            created_by: actor.to_string(),
        };
        self.put_node(&node)?;
        Ok(node)
    }

    /// Edits a node. Its name, secret and overlay address stay. What changed goes into its
    /// history, by `actor`: `Edited` if any setting did, `Enabled` or `Disabled` if that did
    /// (a save that changes nothing records nothing).
    pub fn update_node(&mut self, name: &str, patch: &NodePatch, actor: &str) -> Result<Node> {
        let mut node = self.load_node(name)?;
        let before = node.clone();
        if let Some(u) = &patch.agent_url {
            check_url(u)?;
            node.agent_url = u.clone();
        }
        if let Some(h) = &patch.endpoint_host {
            check_host(h)?;
            node.endpoint_host = h.clone();
        }
        node.listen_port = patch.listen_port.unwrap_or(node.listen_port);
        node.max_peers = patch.max_peers.unwrap_or(node.max_peers);
        node.weight = patch.weight.unwrap_or(node.weight);
        check_numbers(node.listen_port, node.max_peers, node.weight)?;
        if let Some(l) = &patch.labels {
            check_labels(l)?;
            node.labels = l.clone();
        }
        if let Some(p) = &patch.peer_pool {
            let pool = self.pool(p)?;
            if pool.id != node.peer_pool && self.peer_count_in_txn(name)? > 0 {
                return Err(StoreError::NodeHasPeers {
                    node: name.to_string(),
                    peers: self.peer_count_in_txn(name)?,
                });
            }
            node.peer_pool = pool.id;
        }
        let edited = node != before;
        if let Some(e) = patch.enabled {
            node.enabled = e;
            node.status = match (e, node.status) {
                (false, _) => NodeStatus::Disabled,
                // Back on: unknown until the next poll says otherwise.
                (true, NodeStatus::Disabled) => NodeStatus::Unknown,
                (true, s) => s,
            };
        }
        self.put_node(&node)?;
        if edited {
            self.record_node_event(name, actor, NodeAction::Edited)?;
        }
        match (before.enabled, node.enabled) {
            (false, true) => self.record_node_event(name, actor, NodeAction::Enabled)?,
            (true, false) => self.record_node_event(name, actor, NodeAction::Disabled)?,
            _ => {}
        }
        Ok(node)
    }

    fn peer_count_in_txn(&self, node: &str) -> Result<u32> {
        let mut n = 0u32;
        for e in self.t.peers_by_node.range((node, "")..)? {
            if e?.0.value().0 != node {
                break;
            }
            n = n.saturating_add(1);
        }
        Ok(n)
    }

    /// Deletes a node that has no peers, releases its overlay address and forgets its history.
    pub fn delete_node(&mut self, name: &str, actor: &str) -> Result<Node> {
        let node = self.load_node(name)?;
        let peers = self.peer_count_in_txn(name)?;
        if peers > 0 {
            return Err(StoreError::NodeHasPeers {
                node: name.to_string(),
                peers,
            });
        }
        if let Some(mesh) = self.meshes_of(name)?.into_iter().next() {
            return Err(StoreError::NodeInMesh {
                node: name.to_string(),
                mesh,
            });
        }
        if let Some(ip) = node.overlay_address
            && let Some(r) = self.address(ip)?
            && r.status == Status::Allocated
            && r.owner.as_deref() == Some(node_owner(name).as_str())
        {
            self.release(ip, actor)?;
        }
        self.t.nodes.remove(name)?;
        self.delete_node_history(name)?;
        Ok(node)
    }

    /// What, if anything, needs pool `id`: the overlay, or a node's peers.
    pub(crate) fn pool_role(&self, id: u64) -> Result<Option<String>> {
        if self.t.meta.get("overlay_pool")?.map(|g| g.value()) == Some(id) {
            return Ok(Some(
                "is the overlay pool (PUT /api/v1/overlay {\"pool\": null} first)".into(),
            ));
        }
        for e in self.t.nodes.iter()? {
            let node: Node = super::decode("nodes", e?.1.value())?;
            if node.peer_pool == id {
                return Ok(Some(format!("is the peer pool of node {:?}", node.name)));
            }
        }
        Ok(None)
    }

    /// Records one round of health calls: one transaction for every node of the round. A
    /// node deleted or disabled while the round ran is left as it is now.
    pub fn record_health(&mut self, round: &[(String, Observation)]) -> Result<()> {
        for (name, obs) in round {
            let Some(mut node) =
                get_json::<_, Node>(self.t.nodes.table()?, "nodes", name.as_str())?
            else {
                continue;
            };
            if !node.enabled {
                continue;
            }
            match obs {
                Observation::Answered { health, public_key } => {
                    node.status = NodeStatus::Online;
                    node.last_seen = Some(self.now);
                    node.last_health = Some(health.clone());
                    node.last_error = None;
                    if public_key.is_some() {
                        node.public_key = *public_key;
                    }
                }
                Observation::Unreachable(why) => {
                    node.status = NodeStatus::Offline;
                    node.last_error = Some(why.clone());
                }
                Observation::Failed(why) => {
                    node.status = NodeStatus::Error;
                    node.last_error = Some(why.clone());
                }
            }
            self.put_node(&node)?;
        }
        Ok(())
    }

    /// Records the public key of a node's peer interface, as its agent answered it.
    pub fn set_node_key(&mut self, name: &str, key: PublicKey) -> Result<()> {
        let mut node = self.load_node(name)?;
        if node.public_key != Some(key) {
            node.public_key = Some(key);
            self.put_node(&node)?;
        }
        Ok(())
    }

    /// Replaces a node's sealed secret (a rotation, once the agent has staged the new one).
    pub fn set_node_secret(&mut self, name: &str, secret: SealedSecret) -> Result<Node> {
        let mut node = self.load_node(name)?;
        node.secret = secret;
        self.put_node(&node)?;
        Ok(node)
    }

    /// Sets (or, with `None`, clears) the overlay pool. Nodes registered later take their
    /// overlay address from it; nodes that have one keep it.
    pub fn set_overlay_pool(&mut self, pool: Option<&str>) -> Result<Option<super::Pool>> {
        match pool {
            Some(p) => {
                let pool = self.pool(p)?;
                self.t.meta.insert("overlay_pool", pool.id)?;
                Ok(Some(pool))
            }
            None => {
                self.t.meta.remove("overlay_pool")?;
                Ok(None)
            }
        }
    }
}
