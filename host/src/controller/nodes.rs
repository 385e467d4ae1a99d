//! The node registry as the controller uses it: registering a node (its secret made here,
//! sealed before the store sees it, shown once), a signed client for a node's agent, a
//! connection test, and the nodes as peer placement sees them.

use super::peers::{NodeSource, PeerError, PeerNode};
use crate::agent_api::{Health, PEER_INTERFACE, PublicKey};
use crate::agent_client::{AgentClient, ResponseError};
use crate::protocol::{Secret, Secrets};
use crate::secretbox::{SecretBox, SecretBoxError};
use crate::store::{Node, NodeSpec, NodeStatus, Observation, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one call to an agent may take, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretBoxError),
    #[error("node {0:?}: its stored secret is not a valid secret")]
    BadSecret(String),
    #[error("node {node:?}: cannot build a client for {url:?}: {why}")]
    Client {
        node: String,
        url: String,
        why: String,
    },
}

/// The registry: the store, the sealing key, how long an agent call may take, and a client
/// per node kept between calls (so polls reuse their connections and nothing is unsealed
/// twice), rebuilt when the node's URL or secret changes.
#[derive(Clone)]
pub struct Registry {
    pub store: Store,
    pub secrets: SecretBox,
    pub timeout: Duration,
    /// A private CA trusted for `https://` agents.
    agent_roots: Arc<Vec<reqwest::Certificate>>,
    clients: Arc<Mutex<HashMap<String, (ClientKey, AgentClient)>>>,
}

/// What a cached client was built from.
type ClientKey = (String, [u8; 24]);

/// A new node and its secret, which is shown this once.
pub struct Registered {
    pub node: Node,
    /// 64 lowercase hex characters: the contents of the agent's secret file.
    pub secret: String,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// What a connection test found.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub latency: Duration,
    pub result: Result<Health, String>,
}

/// The public key of a node's peer interface in its health: the one named
/// [`PEER_INTERFACE`], or the only interface when it runs just one.
/// Mesh interfaces (`wg-…`) never count.
pub fn peer_interface_key(health: &Health) -> Option<PublicKey> {
    let candidates: Vec<_> = health
        .interfaces
        .iter()
        .filter(|i| !i.name.starts_with(crate::agent_api::MESH_INTERFACE_PREFIX))
        .collect();
    candidates
        .iter()
        .find(|i| i.name == PEER_INTERFACE)
        .or(match candidates.as_slice() {
            [only] => Some(only),
            _ => None,
        })
        .map(|i| i.public_key)
}

/// How a failed call reads in a node's record: no answer is `offline`, a bad one `error`.
pub fn observe(result: Result<Health, ResponseError>) -> Observation {
    match result {
        Ok(health) => Observation::Answered {
            public_key: peer_interface_key(&health),
            health,
        },
        Err(e @ ResponseError::Http(_)) => Observation::Unreachable(error_chain(&e)),
        Err(e) => Observation::Failed(e.to_string()),
    }
}

pub use crate::error_chain;

impl Registry {
    pub fn new(store: Store, secrets: SecretBox, timeout: Duration) -> Registry {
        Registry {
            store,
            secrets,
            timeout,
            agent_roots: Arc::default(),
            clients: Arc::default(),
        }
    }

    /// Trusts `roots` (a private CA) for agents served over HTTPS.
    pub fn with_agent_roots(mut self, roots: Vec<reqwest::Certificate>) -> Registry {
        self.agent_roots = Arc::new(roots);
        self
    }

    /// Forgets the clients of nodes not in `names` (deleted ones).
    pub fn keep_clients(&self, names: &[&str]) {
        let mut cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|name, _| names.contains(&name.as_str()));
    }

    /// Registers a node with a new random secret, sealed before it is stored.
    pub async fn register(&self, spec: NodeSpec, actor: &str) -> Result<Registered, NodeError> {
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let sealed = self.secrets.seal(&spec.name, secret.as_bytes());
        let actor = actor.to_string();
        let node = self
            .store
            .write(move |w| w.create_node(&spec, sealed.clone(), &actor))
            .await?;
        Ok(Registered { node, secret })
    }

    /// Enrols a node with a join token (its pool and labels come from the token): a new
    /// secret, sealed, and the token's use, in one transaction. `from`: the caller's address.
    pub async fn enrol(
        &self,
        token: String,
        spec: NodeSpec,
        from: String,
    ) -> Result<Result<Registered, crate::store::JoinRefused>, NodeError> {
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let sealed = self.secrets.seal(&spec.name, secret.as_bytes());
        let answer = self
            .store
            .write(move |w| w.enrol_node(&token, &spec, sealed.clone(), &from))
            .await?;
        Ok(answer.map(|node| Registered { node, secret }))
    }

    /// A client that signs for `node` with its secret: the kept one while the node's URL and
    /// secret are unchanged.
    pub fn client(&self, node: &Node) -> Result<AgentClient, NodeError> {
        let key: ClientKey = (node.agent_url.clone(), node.secret.nonce);
        {
            let cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, c)) = cache.get(&node.name)
                && *k == key
            {
                return Ok(c.clone());
            }
        }
        let client = self.build_client(node)?;
        let mut cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(node.name.clone(), (key, client.clone()));
        Ok(client)
    }

    fn build_client(&self, node: &Node) -> Result<AgentClient, NodeError> {
        let bytes = self.secrets.open(&node.name, &node.secret)?;
        let secret = Secret::new(bytes).map_err(|_| NodeError::BadSecret(node.name.clone()))?;
        let client_err = |why: String| NodeError::Client {
            node: node.name.clone(),
            url: node.agent_url.clone(),
            why,
        };
        let url = node
            .agent_url
            .parse::<url::Url>()
            .map_err(|e| client_err(e.to_string()))?;
        AgentClient::with_roots(
            url,
            node.name.clone(),
            secret.clone(),
            Secrets::one(secret),
            self.timeout,
            &self.agent_roots,
        )
        .map_err(|e| client_err(e.to_string()))
    }

    /// A signed health call now, timed; its outcome is recorded like a poll's.
    pub async fn test(&self, name: &str) -> Result<TestOutcome, NodeError> {
        let node = self
            .store
            .read(|r| r.node(name))?
            .ok_or_else(|| StoreError::NotFound(format!("node {name:?}")))?;
        let client = self.client(&node)?;
        let started = Instant::now();
        let answer = client.health().await;
        let latency = started.elapsed();
        let result = answer
            .as_ref()
            .map(Clone::clone)
            .map_err(|e| error_chain(e));
        let round = vec![(node.name.clone(), observe(answer))];
        self.store.write(move |w| w.record_health(&round)).await?;
        Ok(TestOutcome { latency, result })
    }
}

impl NodeSource for Registry {
    fn nodes(&self) -> Result<Vec<PeerNode>, PeerError> {
        let nodes = self.store.read(|r| r.nodes())?;
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let agent = match self.client(&node) {
                Ok(c) => c,
                // One bad record must not hide every other node from placement.
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e, "node left out of placement");
                    continue;
                }
            };
            out.push(PeerNode {
                online: node.status == NodeStatus::Online,
                status: node.status.as_str().to_string(),
                enabled: node.enabled,
                endpoint_host: node.endpoint_host,
                listen_port: node.listen_port,
                peer_pool: node.peer_pool.to_string(),
                max_peers: node.max_peers,
                weight: node.weight,
                labels: node.labels,
                name: node.name,
                agent,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_api::InterfaceSummary;

    fn iface(name: &str, key: u8) -> InterfaceSummary {
        InterfaceSummary {
            name: name.into(),
            public_key: PublicKey([key; 32]),
            listen_port: 51820,
            address: None,
            peers: 0,
        }
    }

    #[test]
    fn the_peer_interface_key_never_comes_from_a_mesh_interface() {
        let health = |ifaces: Vec<InterfaceSummary>| Health {
            version: "t".into(),
            uptime_seconds: 1,
            load_average: [0.0; 3],
            interfaces: ifaces,
        };
        assert_eq!(
            peer_interface_key(&health(vec![iface("wg-0123abcd", 1)])),
            None
        );
        assert_eq!(
            peer_interface_key(&health(vec![iface("wg-0123abcd", 1), iface("wp7", 2)])),
            Some(PublicKey([2; 32])),
            "the only interface that is not a mesh's"
        );
        assert_eq!(
            peer_interface_key(&health(vec![iface("weft0", 3), iface("other", 4)])),
            Some(PublicKey([3; 32]))
        );
    }
}
