//! Meshes, the pure part: which member talks to which and with what allowed IPs (`config`),
//! what a valid mesh is (`rules`), and what an agent must be told to match the desired state
//! (`reconcile`). No I/O, no clock, no store: the controller (`controller::meshes`) feeds
//! these functions and carries out what they decide.

pub mod config;
pub mod reconcile;
pub mod rules;

use serde::{Deserialize, Serialize};

/// How a mesh's members are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Every member peers with every other.
    FullMesh,
    /// Hubs peer with everyone; spokes peer with the hubs only and reach each other through
    /// them.
    HubAndSpoke,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::FullMesh => "full-mesh",
            Topology::HubAndSpoke => "hub-and-spoke",
        }
    }
}

/// WireGuard's customary persistent keepalive, in seconds.
pub const DEFAULT_KEEPALIVE: u16 = 25;
/// The interface MTU when none is given: WireGuard's usual 1420.
pub const DEFAULT_MTU: u16 = 1420;
/// Where the search for a mesh's UDP port starts when none is given: one above WireGuard's
/// customary 51820, which nodes' peer interfaces use by default.
pub const FIRST_MESH_PORT: u16 = 51821;
