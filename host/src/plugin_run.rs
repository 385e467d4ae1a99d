//! A plugin run by hand, whatever its world: `weft plugin run NAME --input JSON`, and
//! `POST /api/v1/plugins/{name}/run`. JSON in, JSON out; the input is checked here, at the
//! edge, before anything reaches the plugin.
//!
//! - node-selector: `{"request": {"peer_name", "labels"}, "candidates": [{"name", ...}]}` →
//!   `{"chosen": NAME | null}`, the plugin's own answer (no fallback: this is for testing it).
//! - ping-check: `{"targets": ["10.0.0.7", ...]}` → `{"outcomes": [...]}`; probes stay inside
//!   weft's pools as always.
//! - ipam-sync: no input (`null` or `{}`) → the run's report, kept with the others.

use crate::placement::{self, Health, WitCall};
use crate::plugins::probe_host::ProbeReach;
use crate::plugins::{PluginError, PluginHost, World};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The most targets one hand-made ping-check run may name.
pub const MAX_TARGETS: usize = 4096;
/// The most candidates one hand-made selection may carry.
pub const MAX_CANDIDATES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no plugin named {0:?} is loaded")]
    NotFound(String),
    #[error("bad input for the {world} plugin {name}: {message}")]
    BadInput {
        name: String,
        world: World,
        message: String,
    },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Sync(#[from] crate::syncs::SyncError),
    #[error("cannot read weft's pools: {0}")]
    Store(#[from] StoreError),
    /// The blocking task of the run went away (the runtime is shutting down).
    #[error("the run was interrupted: {0}")]
    Interrupted(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectInput {
    request: RequestInput,
    candidates: Vec<CandidateInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    peer_name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateInput {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    region: Option<String>,
    #[serde(default)]
    active_peers: u32,
    max_peers: u32,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default = "healthy")]
    health: HealthInput,
    #[serde(default)]
    peers_with_handshake: u32,
    newest_handshake_secs: Option<u64>,
    oldest_handshake_secs: Option<u64>,
}

fn one() -> u32 {
    1
}

fn healthy() -> HealthInput {
    HealthInput::Healthy
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HealthInput {
    Healthy,
    Degraded,
    Unreachable,
    Unknown,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckInput {
    targets: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Chosen {
    chosen: Option<String>,
}

#[derive(Debug, Serialize)]
struct Outcome {
    address: String,
    alive: bool,
    rtt_us: Option<u32>,
}

#[derive(Debug, Serialize)]
struct Outcomes {
    outcomes: Vec<Outcome>,
}

/// Runs plugin `name` once on `input`. Blocking: call it off the async threads.
pub fn run(
    host: &PluginHost,
    store: &Store,
    runtime: tokio::runtime::Handle,
    name: &str,
    input: Value,
) -> Result<Value, RunError> {
    let world = host
        .world_of(name)
        .ok_or_else(|| RunError::NotFound(name.to_string()))?;
    let bad = |message: String| RunError::BadInput {
        name: name.to_string(),
        world,
        message,
    };
    let answer = match world {
        World::NodeSelector => {
            let input: SelectInput =
                serde_json::from_value(input).map_err(|e| bad(e.to_string()))?;
            let (request, candidates) = selection(input).map_err(bad)?;
            let call = WitCall::new(&request, &candidates).map_err(bad)?;
            let chosen = host.select(name, &call.request, &call.labels, &call.candidates)?;
            // The host checked the id is a candidate's; ids are indices of `candidates`.
            serde_json::to_value(Chosen {
                chosen: chosen.map(|id| candidates[id as usize].name.clone()),
            })
        }
        World::PingCheck => {
            let input: CheckInput =
                serde_json::from_value(input).map_err(|e| bad(e.to_string()))?;
            if input.targets.is_empty() || input.targets.len() > MAX_TARGETS {
                return Err(bad(format!("name 1 to {MAX_TARGETS} targets")));
            }
            let pools = store.read(|r| r.pools())?;
            let reach = ProbeReach {
                pools: pools.iter().map(|p| p.cidr).collect(),
                runtime,
            };
            let outcomes = host.check(name, &input.targets, reach)?;
            serde_json::to_value(Outcomes {
                outcomes: outcomes
                    .into_iter()
                    .map(|o| Outcome {
                        address: o.address,
                        alive: o.alive,
                        rtt_us: o.rtt_us,
                    })
                    .collect(),
            })
        }
        World::IpamSync => {
            let empty = input.is_null() || input.as_object().is_some_and(|o| o.is_empty());
            if !empty {
                return Err(bad("a sync takes no input".into()));
            }
            let record =
                crate::syncs::run(host, store, name, crate::syncs::Trigger::Manual, runtime)?;
            serde_json::to_value(record)
        }
    };
    // Our own types always serialize.
    Ok(answer.unwrap_or(Value::Null))
}

/// [`run`] from async code (a handler): on a blocking thread of the current runtime.
pub async fn run_now(
    host: std::sync::Arc<PluginHost>,
    store: Store,
    name: String,
    input: Value,
) -> Result<Value, RunError> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || run(&host, &store, runtime, &name, input))
        .await
        .map_err(|e| RunError::Interrupted(e.to_string()))?
}

/// The placement types of a hand-made selection, checked.
fn selection(
    input: SelectInput,
) -> Result<(placement::Request, Vec<placement::Candidate>), String> {
    if input.candidates.len() > MAX_CANDIDATES {
        return Err(format!("at most {MAX_CANDIDATES} candidates"));
    }
    let mut names = std::collections::HashSet::new();
    let mut candidates = Vec::with_capacity(input.candidates.len());
    for c in input.candidates {
        if c.name.is_empty() || !names.insert(c.name.clone()) {
            return Err(format!(
                "candidate names must be present and distinct ({:?})",
                c.name
            ));
        }
        if c.weight == 0 {
            return Err(format!("candidate {:?}: weight must be at least 1", c.name));
        }
        candidates.push(placement::Candidate {
            id: c.name.clone(),
            name: c.name,
            labels: c.labels.into_iter().collect(),
            region: c.region,
            active_peers: c.active_peers,
            max_peers: c.max_peers,
            weight: c.weight,
            health: match c.health {
                HealthInput::Healthy => Health::Healthy,
                HealthInput::Degraded => Health::Degraded,
                HealthInput::Unreachable => Health::Unreachable,
                HealthInput::Unknown => Health::Unknown,
            },
            peers_with_handshake: c.peers_with_handshake,
            newest_handshake_secs: c.newest_handshake_secs,
            oldest_handshake_secs: c.oldest_handshake_secs,
        });
    }
    let request = placement::Request {
        peer_name: input.request.peer_name,
        labels: input.request.labels.into_iter().collect(),
    };
    Ok((request, candidates))
}
