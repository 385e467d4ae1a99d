//! The node registry as the controller uses it: registering a node (its secret made here,
//! sealed before the store sees it, shown once), a signed client for a node's agent, a
//! connection test, and the nodes as peer placement sees them.

use super::peers::{NodeSource, PeerError, PeerNode};
use crate::agent_api::{Health, PEER_INTERFACE, PublicKey};
use crate::agent_client::{AgentClient, ResponseError};
use crate::protocol::Secret;
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
    /// Staging the next secret failed: nothing changed, the old secret stays.
    #[error(
        "node {node:?}: the agent did not take the next secret ({why}); the secret is unchanged"
    )]
    RotationRefused { node: String, why: String },
    /// The controller switched, but the agent did not confirm: it accepts both secrets
    /// until a commit reaches it, so nothing fails meanwhile.
    #[error(
        "node {node:?}: the controller now signs with the new secret, but the agent did not confirm the commit ({why}); it accepts both secrets until it does: rotate again to finish"
    )]
    RotationUnconfirmed { node: String, why: String },
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
    /// One rotation at a time: rare, and each is three steps that must not interleave.
    rotating: Arc<tokio::sync::Mutex<()>>,
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

/// A rotation step's answer: 204, or why not.
fn no_content(
    answer: Result<crate::agent_client::AgentAnswer, ResponseError>,
) -> Result<(), String> {
    match answer {
        Ok(a) if a.status == 204 => Ok(()),
        Ok(a) => Err(format!("{}: {}", a.status, a.refusal())),
        Err(e) => Err(error_chain(&e)),
    }
}

impl Registry {
    pub fn new(store: Store, secrets: SecretBox, timeout: Duration) -> Registry {
        Registry {
            store,
            secrets,
            timeout,
            agent_roots: Arc::default(),
            clients: Arc::default(),
            rotating: Arc::default(),
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

    /// A client that signs for `node` with its secret: the kept one while the node's URL is
    /// unchanged. A new secret (a rotation) switches the kept client, and so every clone of
    /// it in use, rather than making another: no clone goes on signing with the old one.
    pub fn client(&self, node: &Node) -> Result<AgentClient, NodeError> {
        let key: ClientKey = (node.agent_url.clone(), node.secret.nonce);
        let mut cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, c)) = cache.get(&node.name)
            && *k == key
        {
            return Ok(c.clone());
        }
        // `node` may be a record read before an edit or a rotation: only the store's
        // current record may change the client, never an older one back.
        let current = self.store.read(|r| r.node(&node.name))?;
        let current = current.as_ref().unwrap_or(node);
        let key: ClientKey = (current.agent_url.clone(), current.secret.nonce);
        if let Some((k, c)) = cache.get_mut(&current.name)
            && k.0 == key.0
        {
            if k.1 != key.1 {
                c.switch_secret(self.open_secret(current)?);
                k.1 = key.1;
            }
            return Ok(c.clone());
        }
        // Built under the lock: one client per node, so a rotation's switch reaches every
        // clone of it.
        let client = self.build_client(current)?;
        cache.insert(current.name.clone(), (key, client.clone()));
        Ok(client)
    }

    fn open_secret(&self, node: &Node) -> Result<Secret, NodeError> {
        let bytes = self.secrets.open(&node.name, &node.secret)?;
        Secret::new(bytes).map_err(|_| NodeError::BadSecret(node.name.clone()))
    }

    /// Rotates a node's secret with no failed request (docs/agent-protocol.md, "Rotating the
    /// secret"): the agent stages the next secret and accepts both; the store takes it and
    /// the node's client switches to it; the agent commits and retires the old one, still
    /// accepting requests signed before the switch.
    pub async fn rotate_secret(&self, name: &str, actor: &str) -> Result<Node, NodeError> {
        let _one = self.rotating.lock().await;
        let node = self
            .store
            .read(|r| r.node(name))?
            .ok_or_else(|| StoreError::NotFound(format!("node {name:?}")))?;
        let client = self.client(&node)?;
        let next = hex::encode(rand::random::<[u8; 32]>());
        let next_secret =
            Secret::new(next.as_bytes()).map_err(|_| NodeError::BadSecret(name.to_owned()))?;
        no_content(client.stage_secret(&next_secret).await).map_err(|why| {
            NodeError::RotationRefused {
                node: name.to_owned(),
                why,
            }
        })?;
        let sealed = self.secrets.seal(name, next.as_bytes());
        let (owned, actor) = (name.to_owned(), actor.to_owned());
        let node = self
            .store
            .write(move |w| {
                let node = w.set_node_secret(&owned, sealed.clone())?;
                w.record_node_event(&owned, &actor, crate::store::NodeAction::SecretRotated)?;
                Ok(node)
            })
            .await?;
        // Switches the kept client: from here on every request is signed with the new secret.
        let client = self.client(&node)?;
        no_content(client.commit_secret().await).map_err(|why| NodeError::RotationUnconfirmed {
            node: name.to_owned(),
            why,
        })?;
        tracing::info!(node = %name, "secret rotated");
        Ok(node)
    }

    fn build_client(&self, node: &Node) -> Result<AgentClient, NodeError> {
        let secret = self.open_secret(node)?;
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
            secret,
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

    /// A registry with node `n1` whose agent runs on loopback: a real agent router with its
    /// durable nonce store and its secret file, holding what registration made.
    async fn node_with_agent(
        dir: &std::path::Path,
    ) -> (Registry, crate::agent::Guard, crate::agent::SecretFile) {
        let store = crate::web::api_fixture::store_with(dir, &[("peers", "10.8.0.0/24")]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let registry = Registry::new(
            store,
            SecretBox::open_or_create(dir).unwrap(),
            DEFAULT_TIMEOUT,
        );
        let spec = NodeSpec {
            name: "n1".into(),
            agent_url: format!("http://{addr}/"),
            endpoint_host: "127.0.0.1".into(),
            listen_port: 51820,
            peer_pool: "peers".into(),
            max_peers: 10,
            weight: 1,
            labels: vec![],
            enabled: true,
        };
        let registered = registry.register(spec, "test").await.unwrap();
        let agent_dir = dir.join("agent");
        std::fs::create_dir(&agent_dir).unwrap();
        let file = crate::agent::SecretFile::new(agent_dir.join(crate::agent::SECRET_FILE));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file.path())
                .unwrap();
            f.write_all(registered.secret.as_bytes()).unwrap();
        }
        let guard = crate::agent::open_guard("n1", file.load().unwrap(), &agent_dir).unwrap();
        let plane = crate::dataplane::DataPlane::open(agent_dir, "weft0".into()).unwrap();
        tokio::spawn(crate::agent::serve(
            listener,
            guard.clone(),
            plane,
            file.clone(),
            None,
            std::future::pending(),
        ));
        (registry, guard, file)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotating_while_pollers_hammer_the_agent_fails_no_request() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let (registry, guard, file) = node_with_agent(dir.path()).await;
        let stop = Arc::new(AtomicBool::new(false));
        // Each poller does what the health poller does: read the node, take its client, call.
        let pollers: Vec<_> = (0..8)
            .map(|_| {
                let (registry, stop) = (registry.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0u32, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let node = registry.store.read(|r| r.node("n1")).unwrap().unwrap();
                        match registry.client(&node).unwrap().health().await {
                            Ok(_) => ok += 1,
                            Err(e) => failed.push(error_chain(&e)),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        for _ in 0..5 {
            registry.rotate_secret("n1", "test").await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for p in pollers {
            let (o, f) = p.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {failed:?}",
            failed.len(),
            ok as usize + failed.len()
        );
        assert!(ok >= 40, "the pollers ran ({ok} requests)");

        // Both sides end on the same single secret, on disk too.
        let node = registry.store.read(|r| r.node("n1")).unwrap().unwrap();
        let stored = registry.open_secret(&node).unwrap();
        assert_eq!(guard.secrets().current(), &stored);
        assert!(guard.secrets().next().is_none());
        assert_eq!(std::fs::read(file.path()).unwrap(), stored.as_bytes());
        assert!(!file.next_path().exists());
    }

    #[tokio::test]
    async fn a_rotation_the_agent_refuses_leaves_the_secret_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, guard, file) = node_with_agent(dir.path()).await;
        let before = registry.store.read(|r| r.node("n1")).unwrap().unwrap();
        // The agent cannot write beside its secret file.
        std::fs::create_dir(file.next_path()).unwrap();
        std::fs::write(file.next_path().join("x"), "in the way").unwrap();
        let err = registry.rotate_secret("n1", "test").await.unwrap_err();
        assert!(matches!(err, NodeError::RotationRefused { .. }), "{err}");
        assert!(err.to_string().contains("the secret is unchanged"), "{err}");
        let after = registry.store.read(|r| r.node("n1")).unwrap().unwrap();
        assert_eq!(before.secret, after.secret);
        assert!(guard.secrets().next().is_none());
        assert!(registry.client(&after).unwrap().health().await.is_ok());
    }

    #[tokio::test]
    async fn rotating_an_unknown_node_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _, _) = node_with_agent(dir.path()).await;
        let err = registry.rotate_secret("nope", "test").await.unwrap_err();
        assert!(
            matches!(err, NodeError::Store(StoreError::NotFound(_))),
            "{err}"
        );
    }
}
