//! The documents of the agent's endpoints (docs/agent-protocol.md, "Endpoints"), shared by the
//! agent that answers them and the controller that asks. Plain serde types: whoever reads one
//! checks it at that edge (`validate`), the agent a controller's request, the controller an
//! agent's answer.
//!
//! | Method and path            | Body          | Answer                                  |
//! |----------------------------|---------------|-----------------------------------------|
//! | `GET /v1/health`           | —             | [`Health`]                              |
//! | `PUT /v1/interface`        | [`InterfaceSpec`] | [`InterfaceSummary`] (200)          |
//! | `GET /v1/wg`               | —             | [`WgDump`]                              |
//! | `POST /v1/peers`           | [`PeerSpec`]  | [`PeerDump`] (201 new, 200 unchanged)   |
//! | `DELETE /v1/peers/{hex}`   | —             | 204; 404 if the node has no such peer   |
//! | `GET /v1/meshes`           | —             | [`MeshList`]                            |
//! | `PUT /v1/meshes/{id}`      | [`MeshSpec`]  | [`MeshStatus`] (200); 409 if older      |
//! | `DELETE /v1/meshes/{id}`   | —             | 204; 404 if the node has no such mesh   |
//!
//! A refused request is answered with [`AgentErrorBody`] and a 4xx or 5xx status.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// The name of a node's peer interface: the one that client peers connect to.
pub const PEER_INTERFACE: &str = "weft0";

/// Most peers a node's peer interface takes (bounds the agent's state and every dump).
pub const MAX_PEERS: usize = 65_536;

/// Most allowed IPs one peer may carry.
pub const MAX_ALLOWED_IPS: usize = 256;

/// A WireGuard (x25519) public key: 32 bytes, written as standard base64 (44 characters),
/// the way `wg` prints it. Never a private key: those do not leave the node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| KeyError(s.chars().take(60).collect()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError(s.chars().take(60).collect()))?;
        Ok(PublicKey(arr))
    }

    /// The key as it appears in a path (`DELETE /v1/peers/{hex}`): base64 has `/` and `+`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut arr = [0u8; 32];
        hex::decode_to_slice(s, &mut arr).map_err(|_| KeyError(s.chars().take(70).collect()))?;
        Ok(PublicKey(arr))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a WireGuard public key (32 bytes in base64, as `wg pubkey` prints)")]
pub struct KeyError(pub String);

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub version: String,
    pub uptime_seconds: u64,
    /// 1, 5 and 15 minute load averages; zeros where /proc/loadavg cannot be read.
    pub load_average: [f64; 3],
    /// Every WireGuard interface the agent runs (the peer interface and, later, meshes).
    #[serde(default)]
    pub interfaces: Vec<InterfaceSummary>,
}

/// One interface in [`Health`], and the answer of `PUT /v1/interface`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceSummary {
    pub name: String,
    pub public_key: PublicKey,
    pub listen_port: u16,
    /// The interface's own address with its prefix length, once set.
    pub address: Option<IpNet>,
    pub peers: u32,
}

/// `PUT /v1/interface`: the node's peer interface ([`PEER_INTERFACE`]) as the controller
/// wants it. The first PUT creates it with a new keypair made on the node; later ones change
/// the address or port and keep the key and peers. The same PUT twice changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// The interface's address in the node's peer pool, with the pool's prefix length (so
    /// the kernel routes the whole pool to it), e.g. `10.8.0.1/24`.
    pub address: IpNet,
    /// The UDP port clients send to. Not 0.
    pub listen_port: u16,
}

/// `GET /v1/wg`: what `wg show all dump` would say, without any private key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct WgDump {
    pub interfaces: Vec<InterfaceDump>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceDump {
    pub name: String,
    pub public_key: PublicKey,
    pub listen_port: u16,
    pub peers: Vec<PeerDump>,
}

/// One peer as the data plane sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerDump {
    pub public_key: PublicKey,
    /// Where its packets last came from (or the configured endpoint); none before any.
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    /// Unix time (seconds) of the latest completed handshake; none if never.
    pub last_handshake: Option<i64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
}

/// `POST /v1/peers`: add a peer to the node's peer interface. Adding the same peer again
/// (same key, same allowed IPs, same keepalive) answers 200 and changes nothing; the same key
/// with other settings replaces them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerSpec {
    pub public_key: PublicKey,
    /// 1 to [`MAX_ALLOWED_IPS`] prefixes, each with no host bits set.
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: Option<u16>,
}

impl PeerSpec {
    /// What a receiver checks before acting on it.
    pub fn validate(&self) -> Result<(), String> {
        if self.allowed_ips.is_empty() {
            return Err("allowed_ips: give at least one prefix".into());
        }
        if self.allowed_ips.len() > MAX_ALLOWED_IPS {
            return Err(format!("allowed_ips: at most {MAX_ALLOWED_IPS} prefixes"));
        }
        for net in &self.allowed_ips {
            if net.trunc() != *net {
                return Err(format!(
                    "allowed_ips: {net} has host bits set (did you mean {}?)",
                    net.trunc()
                ));
            }
        }
        Ok(())
    }
}

impl InterfaceSpec {
    pub fn validate(&self) -> Result<(), String> {
        if self.listen_port == 0 {
            return Err("listen_port: give a port from 1 to 65535".into());
        }
        if self.address.addr() == self.address.network() && self.address.prefix_len() < 31 {
            return Err(format!(
                "address: {} is the network address of its prefix",
                self.address
            ));
        }
        Ok(())
    }
}

/// Most allowed IPs one mesh peer may carry: a hub's entry on a spoke carries every spoke's
/// prefixes routed through that hub.
pub const MAX_MESH_ALLOWED_IPS: usize = 65_536;

/// Most peers one mesh interface takes.
pub const MAX_MESH_PEERS: usize = 16_384;

/// Lowest and highest MTU of a mesh interface (the data plane's buffers are sized for
/// [`crate::dataplane::engine::MTU`]; IPv6 needs at least 1280).
pub const MESH_MTU: std::ops::RangeInclusive<u16> = 1280..=1420;

/// Whether `id` may name a mesh: 1 to 64 of `a-z 0-9` (an interface name is made of it).
pub fn valid_mesh_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// What every mesh interface's name starts with (and no peer interface's).
pub const MESH_INTERFACE_PREFIX: &str = "wg-";

/// The interface a mesh runs on, on every member: `wg-` and the first 8 characters of its id.
pub fn mesh_interface(id: &str) -> String {
    format!("{MESH_INTERFACE_PREFIX}{}", id.get(..8).unwrap_or(id))
}

/// `PUT /v1/meshes/{id}`: the whole state one member should have for one mesh. The agent
/// makes it so: the interface (keyed with the node's mesh key), its address, its peers (and
/// no others), a route to every peer's allowed IPs, and IP forwarding when `forward`.
/// A generation older than the applied one is refused; the same state again changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeshSpec {
    pub generation: u64,
    pub interface: String,
    /// The node's overlay address as a host prefix (`/32` or `/128`).
    pub address: IpNet,
    pub listen_port: u16,
    pub mtu: u16,
    /// The node forwards between the mesh and its LAN, or between spokes (a hub).
    pub forward: bool,
    pub peers: Vec<MeshPeerSpec>,
}

/// One peer of a mesh interface. Shared parts are reference-counted: a 1,000-node full mesh
/// carries each member's prefixes once, not once per peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeshPeerSpec {
    pub public_key: PublicKey,
    /// `host:port` (IPv6 literals in brackets); the agent resolves it.
    pub endpoint: Option<Arc<str>>,
    pub allowed_ips: Arc<[IpNet]>,
    pub persistent_keepalive: Option<u16>,
}

impl MeshSpec {
    /// What the agent checks before acting on it.
    pub fn validate(&self) -> Result<(), String> {
        if !self.interface.starts_with(MESH_INTERFACE_PREFIX) || self.interface.len() > 15 {
            return Err(format!(
                "interface: {:?} is not a mesh interface name",
                self.interface
            ));
        }
        if self.listen_port == 0 {
            return Err("listen_port: give a port from 1 to 65535".into());
        }
        if !MESH_MTU.contains(&self.mtu) {
            return Err(format!(
                "mtu: {} is outside {}..={}",
                self.mtu,
                MESH_MTU.start(),
                MESH_MTU.end()
            ));
        }
        if self.address.prefix_len() != self.address.max_prefix_len() {
            return Err(format!("address: {} is not a host prefix", self.address));
        }
        if self.peers.len() > MAX_MESH_PEERS {
            return Err(format!("peers: at most {MAX_MESH_PEERS}"));
        }
        let mut keys = std::collections::HashSet::new();
        for p in &self.peers {
            if !keys.insert(p.public_key) {
                return Err(format!("peers: {} appears twice", p.public_key));
            }
            if p.allowed_ips.len() > MAX_MESH_ALLOWED_IPS {
                return Err(format!(
                    "peers: {} has more than {MAX_MESH_ALLOWED_IPS} allowed IPs",
                    p.public_key
                ));
            }
            if let Some(net) = p.allowed_ips.iter().find(|n| n.trunc() != **n) {
                return Err(format!("peers: allowed IP {net} has host bits set"));
            }
        }
        Ok(())
    }

    /// The state without its generation, hashed: equal digests mean the same configuration.
    /// The controller compares it with the agent's to decide whom to push to.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let unnumbered = MeshSpec {
            generation: 0,
            ..self.clone()
        };
        // Serializing plain structs of strings and numbers cannot fail.
        let bytes = serde_json::to_vec(&unnumbered).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(&bytes))
    }

    /// The peer as the data plane's peer table takes it.
    pub fn peer_specs(&self) -> impl Iterator<Item = PeerSpec> + '_ {
        self.peers.iter().map(|p| PeerSpec {
            public_key: p.public_key,
            allowed_ips: p.allowed_ips.to_vec(),
            persistent_keepalive: p.persistent_keepalive,
        })
    }
}

/// One mesh as an agent runs it: in `GET /v1/meshes` and the answer of a PUT.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeshStatus {
    pub id: String,
    pub generation: u64,
    /// [`MeshSpec::digest`] of the applied state.
    pub digest: String,
    pub interface: String,
    /// The running interface has exactly the applied peers and allowed IPs (false after a
    /// `wg set` by hand, or when the interface could not be brought back).
    pub in_sync: bool,
    pub peers: Vec<PeerDump>,
}

/// `GET /v1/meshes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeshList {
    /// The node's mesh key: every mesh interface of the node uses it, so the controller can
    /// write any member's peers before that member ran the mesh.
    pub mesh_key: PublicKey,
    pub meshes: Vec<MeshStatus>,
}

/// `PUT /v1/secret`: the next secret, sealed for the agent (`protocol::seal_next_secret`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StageSecret {
    pub next: String,
}

/// The body of every refusal: a stable code and a message for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentErrorBody {
    pub error: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_key_reads_and_writes_as_wg_prints_it() {
        let s = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
        let k = PublicKey::from_base64(s).unwrap();
        assert_eq!(k.to_base64(), s);
        assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{s}\""));
        assert!(PublicKey::from_base64("c2hvcnQ=").is_err());
        assert!(serde_json::from_str::<PublicKey>("\"not base64!\"").is_err());
    }

    #[test]
    fn a_peer_spec_needs_clean_prefixes() {
        let k = PublicKey([7; 32]);
        let spec = |ips: &[&str]| PeerSpec {
            public_key: k,
            allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            persistent_keepalive: None,
        };
        assert!(spec(&["10.8.0.2/32"]).validate().is_ok());
        assert!(spec(&[]).validate().unwrap_err().contains("at least one"));
        assert!(
            spec(&["10.8.0.2/24"])
                .validate()
                .unwrap_err()
                .contains("10.8.0.0/24")
        );
    }
}
