//! Polling the health of every enabled node: one round every interval, all nodes at once,
//! each call bounded by a timeout, so a dead node never delays the others. A round's results
//! are written in one transaction. Nodes with peers are also asked for their WireGuard dump,
//! which feeds the peer pages (handshake, transfer).

use super::nodes::{Registry, observe};
use super::wg_stats::WgSeen;
use crate::agent_api::{Health, WgDump};
use crate::agent_client::{AgentClient, ResponseError};
use crate::store::Observation;
use std::future::Future;
use std::time::Duration;

/// One node to poll.
pub struct Target {
    pub name: String,
    pub client: AgentClient,
}

/// What one node's poll found.
pub struct Polled {
    pub name: String,
    pub observation: Observation,
    /// Its WireGuard dump, when it answered and runs any peer.
    pub dump: Option<WgDump>,
}

async fn poll_one(target: Target, timeout: Duration) -> Polled {
    let health: Result<Health, ResponseError> =
        match tokio::time::timeout(timeout, target.client.health()).await {
            Ok(r) => r,
            Err(_) => {
                return Polled {
                    name: target.name,
                    observation: Observation::Unreachable(format!(
                        "no answer within {} ms",
                        timeout.as_millis()
                    )),
                    dump: None,
                };
            }
        };
    let has_peers = matches!(&health, Ok(h) if h.interfaces.iter().any(|i| i.peers > 0));
    let dump = if has_peers {
        let call = target
            .client
            .call(reqwest::Method::GET, "/v1/wg", Vec::new());
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(answer)) if answer.status == 200 => serde_json::from_slice(&answer.body).ok(),
            _ => None,
        }
    } else {
        None
    };
    Polled {
        name: target.name,
        observation: observe(health),
        dump,
    }
}

/// Polls every target at once; each call (and its dump) bounded by `timeout`.
pub async fn poll_round(targets: Vec<Target>, timeout: Duration) -> Vec<Polled> {
    let mut set = tokio::task::JoinSet::new();
    for t in targets {
        set.spawn(poll_one(t, timeout));
    }
    let mut out = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        if let Ok(p) = r {
            out.push(p);
        }
    }
    out
}

/// One round over the registry's enabled nodes, recorded in one transaction.
pub async fn round(registry: &Registry, seen: &WgSeen) -> Result<usize, crate::store::StoreError> {
    let nodes = registry.store.read(|r| r.nodes())?;
    registry.keep_clients(&nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>());
    let mut targets = Vec::new();
    let mut results = Vec::new();
    for node in nodes.into_iter().filter(|n| n.enabled) {
        match registry.client(&node) {
            Ok(client) => targets.push(Target {
                name: node.name,
                client,
            }),
            Err(e) => results.push((node.name, Observation::Failed(e.to_string()))),
        }
    }
    for p in poll_round(targets, registry.timeout).await {
        match &p.dump {
            Some(d) => seen.record(&p.name, d),
            None => seen.forget(&p.name),
        }
        results.push((p.name, p.observation));
    }
    let n = results.len();
    if n == 0 {
        return Ok(0);
    }
    registry
        .store
        .write(move |w| w.record_health(&results))
        .await?;
    Ok(n)
}

/// Polls every `interval` until `shutdown` resolves; after each health round, a mesh round
/// keeps applied meshes in step (and repairs drift).
pub async fn run_scheduler(
    registry: Registry,
    seen: WgSeen,
    meshes: super::meshes::MeshSeen,
    interval: Duration,
    shutdown: impl Future,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = &mut shutdown => break,
            r = round(&registry, &seen) => match r {
                Ok(n) => tracing::debug!(nodes = n, "health round done"),
                Err(e) => tracing::warn!(error = %e, "health round not recorded"),
            },
        }
        tokio::select! {
            _ = &mut shutdown => break,
            r = super::meshes::round(&registry, &meshes, None) => if let Err(e) = r {
                tracing::warn!(error = %e, "mesh round not recorded");
            },
        }
    }
    tracing::info!("health polling stopped");
}
