//! Keeping every applied mesh's members in step. A round asks each enabled node which meshes
//! it runs (`GET /v1/meshes`, which also names the node's mesh key), computes every applied
//! mesh's configuration (`mesh::config`), and tells each agent only what differs
//! (`mesh::reconcile`): a member whose configuration did not change is not called again.
//! Rounds run after each health poll, and at once when a mesh is applied, changed or deleted.
//! What each agent last reported is kept in memory (`MeshSeen`) for the status views.

use super::nodes::{Registry, error_chain};
use crate::agent_api::{MeshList, MeshSpec, MeshStatus};
use crate::agent_client::AgentClient;
use crate::mesh::config::{self, Member, MeshParams};
use crate::mesh::reconcile::{self, Action, Drift};
use crate::store::{Mesh, Node, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// What an agent last reported of its meshes, and what went wrong telling it.
#[derive(Debug, Clone)]
pub struct NodeMeshes {
    pub checked: jiff::Timestamp,
    /// Its meshes, or why it could not be asked.
    pub list: Result<MeshList, String>,
    /// Mesh id → why pushing or deleting it failed in that round.
    pub errors: HashMap<String, String>,
}

/// The last report of every node, in memory.
#[derive(Clone, Default)]
pub struct MeshSeen(Arc<RwLock<HashMap<String, NodeMeshes>>>);

impl MeshSeen {
    pub fn get(&self, node: &str) -> Option<NodeMeshes> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
    }

    fn put(&self, node: String, seen: NodeMeshes) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, seen);
    }
}

/// One member's desired configuration, or why it has none yet.
pub struct Desired {
    pub node: String,
    pub config: Result<(MeshSpec, String), &'static str>,
}

/// Every member's desired configuration for `mesh`. Members whose node has not yet reported
/// its mesh key, or has no overlay address, are left out of everyone's configuration.
pub fn desired(mesh: &Mesh, nodes: &HashMap<String, Node>) -> Vec<Desired> {
    let mut ready = Vec::new();
    let mut out: Vec<Desired> = Vec::new();
    for m in &mesh.members {
        let node = nodes.get(&m.node);
        match node.and_then(|n| Some((n, n.mesh_key?, n.overlay_address?))) {
            Some((n, key, overlay)) => ready.push(Member {
                node: &m.node,
                public_key: key,
                overlay,
                endpoint_host: &n.endpoint_host,
                lan: &m.lan_subnets,
                hub: mesh.is_hub(&m.node),
            }),
            None => out.push(Desired {
                node: m.node.clone(),
                config: Err(match node {
                    None => "the node no longer exists",
                    Some(n) if n.overlay_address.is_none() => "the node has no overlay address",
                    Some(_) => {
                        "the node has not reported its mesh key yet (is its agent reachable?)"
                    }
                }),
            }),
        }
    }
    let params = MeshParams {
        id: &mesh.id,
        topology: mesh.topology,
        listen_port: mesh.listen_port,
        keepalive: mesh.keepalive,
        mtu: mesh.mtu,
        generation: mesh.generation,
    };
    let specs = config::generate(&params, &ready);
    for (member, spec) in ready.iter().zip(specs) {
        let digest = spec.digest();
        out.push(Desired {
            node: member.node.to_string(),
            config: Ok((spec, digest)),
        });
    }
    out
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub nodes: usize,
    pub pushed: usize,
    pub deleted: usize,
    pub failed: usize,
}

async fn fetch(client: &AgentClient) -> Result<MeshList, String> {
    let answer = client
        .call(reqwest::Method::GET, "/v1/meshes", Vec::new())
        .await
        .map_err(|e| error_chain(&e))?;
    if answer.status != 200 {
        return Err(refusal("GET /v1/meshes", answer.status, &answer.body));
    }
    serde_json::from_slice(&answer.body).map_err(|e| format!("GET /v1/meshes: bad answer: {e}"))
}

fn refusal(what: &str, status: u16, body: &[u8]) -> String {
    let message = crate::agent_client::refusal_of(body);
    format!("{what}: the agent refused ({status}): {message}")
}

async fn push(client: &AgentClient, id: &str, spec: &MeshSpec) -> Result<MeshStatus, String> {
    let path = format!("/v1/meshes/{id}");
    let body = serde_json::to_vec(spec).unwrap_or_default();
    let answer = client
        .call(reqwest::Method::PUT, &path, body)
        .await
        .map_err(|e| error_chain(&e))?;
    if answer.status != 200 {
        return Err(refusal(&format!("PUT {path}"), answer.status, &answer.body));
    }
    serde_json::from_slice(&answer.body).map_err(|e| format!("PUT {path}: bad answer: {e}"))
}

async fn remove(client: &AgentClient, id: &str) -> Result<(), String> {
    let path = format!("/v1/meshes/{id}");
    let answer = client
        .call(reqwest::Method::DELETE, &path, Vec::new())
        .await
        .map_err(|e| error_chain(&e))?;
    match answer.status {
        204 | 404 => Ok(()),
        s => Err(refusal(&format!("DELETE {path}"), s, &answer.body)),
    }
}

/// One node's part of a round: ask, then push and delete what differs.
async fn reconcile_node(
    client: AgentClient,
    list: Result<MeshList, String>,
    desired: Vec<(String, MeshSpec, String)>,
) -> (NodeMeshes, usize, usize, usize) {
    let mut errors = HashMap::new();
    let (mut pushed, mut deleted) = (0, 0);
    let list = match list {
        Ok(mut list) => {
            let actions = reconcile::plan(&desired, &list.meshes);
            let mut updates = Vec::new();
            for action in actions {
                match action {
                    Action::Put { id, spec } => match push(&client, id, spec).await {
                        Ok(status) => {
                            pushed += 1;
                            updates.push(Ok(status));
                        }
                        Err(e) => {
                            errors.insert(id.to_string(), e);
                        }
                    },
                    Action::Delete { id } => match remove(&client, id).await {
                        Ok(()) => {
                            deleted += 1;
                            updates.push(Err(id.to_string()));
                        }
                        Err(e) => {
                            errors.insert(id.to_string(), e);
                        }
                    },
                }
            }
            for u in updates {
                match u {
                    Ok(status) => match list.meshes.iter_mut().find(|m| m.id == status.id) {
                        Some(m) => *m = status,
                        None => list.meshes.push(status),
                    },
                    Err(id) => list.meshes.retain(|m| m.id != id),
                }
            }
            Ok(list)
        }
        Err(e) => Err(e),
    };
    let failed = errors.len() + usize::from(list.is_err());
    let seen = NodeMeshes {
        checked: jiff::Timestamp::now(),
        list,
        errors,
    };
    (seen, pushed, deleted, failed)
}

/// One round over the enabled nodes (or only those in `only`).
pub async fn round(
    registry: &Registry,
    seen: &MeshSeen,
    only: Option<&HashSet<String>>,
) -> Result<RoundReport, StoreError> {
    let (meshes, nodes) = registry.store.read(|r| Ok((r.meshes()?, r.nodes()?)))?;
    let targets: Vec<(Node, AgentClient)> = nodes
        .iter()
        .filter(|n| n.enabled && only.is_none_or(|o| o.contains(&n.name)))
        .filter_map(|n| match registry.client(n) {
            Ok(c) => Some((n.clone(), c)),
            Err(e) => {
                tracing::warn!(node = %n.name, error = %e, "no client for node");
                None
            }
        })
        .collect();
    // Ask first: a node's mesh key is needed by every other member's configuration.
    let mut asks = tokio::task::JoinSet::new();
    for (node, client) in targets {
        let timeout = registry.timeout;
        asks.spawn(async move {
            let list = match tokio::time::timeout(timeout, fetch(&client)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            (node, client, list)
        });
    }
    let mut asked = Vec::new();
    while let Some(r) = asks.join_next().await {
        if let Ok(a) = r {
            asked.push(a);
        }
    }
    let keys: Vec<(String, crate::agent_api::PublicKey)> = asked
        .iter()
        .filter_map(|(n, _, l)| {
            let key = l.as_ref().ok()?.mesh_key;
            (n.mesh_key != Some(key)).then(|| (n.name.clone(), key))
        })
        .collect();
    let mut by_name: HashMap<String, Node> =
        nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
    if !keys.is_empty() {
        for (name, key) in &keys {
            if let Some(n) = by_name.get_mut(name) {
                n.mesh_key = Some(*key);
            }
        }
        registry
            .store
            .write(move |w| {
                for (name, key) in &keys {
                    w.set_node_mesh_key(name, *key)?;
                }
                Ok(())
            })
            .await?;
    }
    let mut per_node: HashMap<String, Vec<(String, MeshSpec, String)>> = HashMap::new();
    for mesh in meshes.iter().filter(|m| m.applied) {
        for d in desired(mesh, &by_name) {
            if let Ok((spec, digest)) = d.config {
                per_node
                    .entry(d.node)
                    .or_default()
                    .push((mesh.id.clone(), spec, digest));
            }
        }
    }
    let mut work = tokio::task::JoinSet::new();
    for (node, client, list) in asked {
        let want = per_node.remove(&node.name).unwrap_or_default();
        work.spawn(async move { (node.name, reconcile_node(client, list, want).await) });
    }
    let mut report = RoundReport::default();
    while let Some(r) = work.join_next().await {
        let Ok((name, (node_seen, pushed, deleted, failed))) = r else {
            continue;
        };
        for (mesh, e) in &node_seen.errors {
            tracing::warn!(node = %name, mesh = %mesh, error = %e, "mesh not in step");
        }
        report.nodes += 1;
        report.pushed += pushed;
        report.deleted += deleted;
        report.failed += failed;
        seen.put(name, node_seen);
    }
    if report.pushed + report.deleted + report.failed > 0 {
        tracing::info!(?report, "mesh round");
    }
    Ok(report)
}

/// The nodes of a mesh.
pub fn member_names(mesh: &Mesh) -> HashSet<String> {
    mesh.members.iter().map(|m| m.node.clone()).collect()
}

/// Marks a mesh applied and pushes it to its members now.
pub async fn apply(
    registry: &Registry,
    seen: &MeshSeen,
    id_or_name: String,
) -> Result<Mesh, StoreError> {
    let mesh = registry
        .store
        .write(move |w| w.mark_mesh_applied(&id_or_name))
        .await?;
    round(registry, seen, Some(&member_names(&mesh))).await?;
    Ok(mesh)
}

/// Where a deleted mesh's member stands: torn down, or why not yet (the next round that
/// reaches it will).
#[derive(Debug, Clone)]
pub struct TearDown {
    pub node: String,
    pub pending: Option<String>,
}

/// Deletes a mesh and tears its interfaces down on its members now; the members keep their
/// overlay addresses.
pub async fn delete(
    registry: &Registry,
    seen: &MeshSeen,
    id_or_name: String,
) -> Result<(Mesh, Vec<TearDown>), StoreError> {
    let mesh = registry
        .store
        .write(move |w| w.delete_mesh(&id_or_name))
        .await?;
    round(registry, seen, Some(&member_names(&mesh))).await?;
    let members = mesh
        .members
        .iter()
        .map(|m| {
            let pending = match seen.get(&m.node) {
                None => Some("the node is disabled or has no client".to_string()),
                Some(r) => match &r.list {
                    Err(e) => Some(e.clone()),
                    Ok(l) if l.meshes.iter().any(|x| x.id == mesh.id) => Some(
                        r.errors
                            .get(&mesh.id)
                            .cloned()
                            .unwrap_or_else(|| "still running".into()),
                    ),
                    Ok(_) => None,
                },
            };
            TearDown {
                node: m.node.clone(),
                pending,
            }
        })
        .collect();
    Ok((mesh, members))
}

/// One member as the status view shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MemberState {
    pub node: String,
    /// The generation of the configuration its agent runs; none if it runs none.
    pub applied_generation: Option<u64>,
    /// How it differs from its desired configuration; none when in step.
    pub drift: Option<Drift>,
    /// Why it is not in step, or could not be asked (the last round's word).
    pub error: Option<String>,
    #[schema(value_type = Option<String>)]
    pub checked: Option<jiff::Timestamp>,
}

/// The latest handshake member `from` saw with member `to` (Unix seconds; none if never).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Handshake {
    pub from: String,
    pub to: String,
    pub latest_handshake: Option<i64>,
}

/// Where a mesh's members stand, from the last reports.
pub fn state(
    mesh: &Mesh,
    nodes: &HashMap<String, Node>,
    seen: &MeshSeen,
) -> (Vec<MemberState>, Vec<Handshake>) {
    let by_key: HashMap<crate::agent_api::PublicKey, &str> = mesh
        .members
        .iter()
        .filter_map(|m| Some((nodes.get(&m.node)?.mesh_key?, m.node.as_str())))
        .collect();
    let mut members = Vec::new();
    let mut handshakes = Vec::new();
    for d in desired(mesh, nodes) {
        let report = seen.get(&d.node);
        let running = report
            .as_ref()
            .and_then(|r| r.list.as_ref().ok())
            .and_then(|l| l.meshes.iter().find(|s| s.id == mesh.id));
        let mut error = report.as_ref().and_then(|r| match &r.list {
            Err(e) => Some(e.clone()),
            Ok(_) => r.errors.get(&mesh.id).cloned(),
        });
        let drift = match &d.config {
            Ok((spec, digest)) => reconcile::drift(spec, digest, running),
            Err(why) => {
                error.get_or_insert_with(|| why.to_string());
                Some(Drift::Missing)
            }
        };
        if let Some(r) = running {
            for p in &r.peers {
                if let Some(to) = by_key.get(&p.public_key) {
                    handshakes.push(Handshake {
                        from: d.node.clone(),
                        to: to.to_string(),
                        latest_handshake: p.last_handshake,
                    });
                }
            }
        }
        members.push(MemberState {
            node: d.node,
            applied_generation: running.map(|r| r.generation),
            drift: if mesh.applied { drift } else { None },
            error,
            checked: report.map(|r| r.checked),
        });
    }
    let order: HashMap<&str, usize> = mesh
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.node.as_str(), i))
        .collect();
    members.sort_by_key(|m| order.get(m.node.as_str()).copied());
    (members, handshakes)
}
