//! The protocol side of one WireGuard interface: its peers, each with a
//! `boringtun::noise::Tunn`, found by destination (a longest-prefix table of allowed IPs) or
//! by the session index in a datagram. It seals packets, opens datagrams and runs the
//! timers, and does no I/O: `device` moves the bytes, and tests join engines by an
//! in-process wire with time injected.
//!
//! A peer's `Tunn` sits behind its own mutex, held only while one packet is processed.

use crate::agent_api::{PeerDump, PeerSpec, PublicKey};
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::keys::KeyPair;

/// Handshakes per second answered before cookies are asked for (boringtun's own figure).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// The interface's MTU.
pub const MTU: u16 = 1420;
/// Room for one packet of the interface (at most [`MTU`]) with WireGuard's header, tag and
/// padding: the size of every buffer a packet is sealed into or opened into.
pub const PACKET: usize = 2048;
/// How often [`Engine::tick`] should run.
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// No IP packet is shorter than an IPv4 header.
const MIN_IP_PACKET: usize = 20;

/// A peer's state.
struct Peer {
    key: PublicKey,
    /// The index its `Tunn` puts in session ids.
    index: u32,
    tunn: Tunn,
    /// As people write it (IPv4 as IPv4): `device` maps it for its dual-stack socket.
    endpoint: Option<SocketAddr>,
    allowed_ips: Vec<IpNet>,
    keepalive: Option<u16>,
}

struct Peers {
    by_key: HashMap<PublicKey, Arc<Mutex<Peer>>>,
    /// By the index the peer's `Tunn` puts in its session ids (`receiver_idx >> 8`).
    by_index: HashMap<u32, Arc<Mutex<Peer>>>,
    /// Allowed IPs, longest prefix first: where a packet from the TUN goes.
    routes: IpNetworkTable<Arc<Mutex<Peer>>>,
    next_index: u32,
}

fn network(net: &IpNet) -> Option<IpNetwork> {
    IpNetwork::new_truncate(net.addr(), net.prefix_len()).ok()
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            routes: IpNetworkTable::new(),
            next_index: 0,
        }
    }
}

impl Peers {
    fn remove(&mut self, key: &PublicKey) -> Option<Arc<Mutex<Peer>>> {
        let peer = self.by_key.remove(key)?;
        self.by_index.retain(|_, p| !Arc::ptr_eq(p, &peer));
        let nets = lock(&peer).allowed_ips.clone();
        for net in nets.iter().filter_map(network) {
            if let Some(p) = self.routes.exact_match(net)
                && Arc::ptr_eq(p, &peer)
            {
                self.routes.remove(net);
            }
        }
        Some(peer)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while a peer was locked leaves a consistent Tunn (it only mutates on success).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a datagram may reach boringtun with a [`PACKET`]-sized buffer: one larger than
/// any packet of the interface could make would need a larger one (and boringtun panics
/// when given a short one).
fn admissible(datagram: &[u8]) -> bool {
    datagram.len() <= PACKET
}

/// When a handshake `since` ago happened, as a time since the epoch.
fn handshake_at(since: Option<Duration>, now: SystemTime) -> Option<Duration> {
    now.checked_sub(since?)?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
}

/// The peer the previous packet of a batch was routed to, and its destination. The packets
/// of a TCP super-segment all go to one place: one route lookup serves them all. Kept for one
/// batch only, so a peer removed or rerouted meanwhile is seen from the next batch on.
#[derive(Default)]
pub struct LastRoute(Option<(IpAddr, Arc<Mutex<Peer>>)>);

pub struct Engine {
    /// The interface's name, for log lines.
    name: String,
    keys: KeyPair,
    limiter: Arc<RateLimiter>,
    peers: RwLock<Peers>,
}

impl Engine {
    pub fn new(name: &str, keys: KeyPair) -> Engine {
        let limiter = Arc::new(RateLimiter::new(&keys.public, HANDSHAKE_RATE_LIMIT));
        Engine {
            name: name.to_string(),
            keys,
            limiter,
            peers: RwLock::new(Peers::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Peers> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Peers> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.keys.public.as_bytes())
    }

    /// The private key, for the local UAPI's `get` only (`wg` derives the public key from it).
    pub fn private_key_bytes(&self) -> [u8; 32] {
        self.keys.private.to_bytes()
    }

    /// Adds a peer, or replaces its settings (keeping its session and endpoint when only the
    /// allowed IPs change).
    pub fn set_peer(&self, spec: &PeerSpec) {
        let mut peers = self.write();
        let kept = peers.remove(&spec.public_key);
        let peer = match kept {
            Some(p) if lock(&p).keepalive == spec.persistent_keepalive => {
                lock(&p).allowed_ips = spec.allowed_ips.clone();
                p
            }
            kept => {
                let endpoint = kept.and_then(|p| lock(&p).endpoint);
                // 24 bits: the Tunn shifts it left by 8 for its session ids.
                peers.next_index = (peers.next_index + 1) & 0x00ff_ffff;
                let index = peers.next_index;
                let tunn = Tunn::new(
                    self.keys.private.clone(),
                    boringtun::x25519::PublicKey::from(spec.public_key.0),
                    None,
                    spec.persistent_keepalive,
                    index,
                    Some(self.limiter.clone()),
                );
                Arc::new(Mutex::new(Peer {
                    key: spec.public_key,
                    index,
                    tunn,
                    endpoint,
                    allowed_ips: spec.allowed_ips.clone(),
                    keepalive: spec.persistent_keepalive,
                }))
            }
        };
        let index = lock(&peer).index;
        peers.by_index.insert(index, peer.clone());
        for net in spec.allowed_ips.iter().filter_map(network) {
            peers.routes.insert(net, peer.clone());
        }
        peers.by_key.insert(spec.public_key, peer);
    }

    /// Sets a peer's endpoint (from the local UAPI's `set`).
    pub fn set_endpoint(&self, key: &PublicKey, endpoint: SocketAddr) {
        if let Some(p) = self.read().by_key.get(key) {
            lock(p).endpoint = Some(SocketAddr::new(
                endpoint.ip().to_canonical(),
                endpoint.port(),
            ));
        }
    }

    pub fn remove_peer(&self, key: &PublicKey) -> bool {
        self.write().remove(key).is_some()
    }

    pub fn peer_count(&self) -> usize {
        self.read().by_key.len()
    }

    /// Every peer as `wg show` would report it, in key order.
    pub fn dump(&self) -> Vec<PeerDump> {
        let now = SystemTime::now();
        let mut out: Vec<PeerDump> = self
            .read()
            .by_key
            .values()
            .map(|p| {
                let p = lock(p);
                let (since, tx, rx, _, _) = p.tunn.stats();
                PeerDump {
                    public_key: p.key,
                    endpoint: p.endpoint,
                    allowed_ips: p.allowed_ips.clone(),
                    last_handshake: handshake_at(since, now).map(|t| t.as_secs() as i64),
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                    persistent_keepalive: p.keepalive,
                }
            })
            .collect();
        out.sort_by_key(|p| p.public_key);
        out
    }

    /// When each peer's last handshake was, to the nanosecond, for the UAPI.
    pub fn handshake_times(&self) -> HashMap<PublicKey, Option<Duration>> {
        let now = SystemTime::now();
        self.read()
            .by_key
            .iter()
            .map(|(k, p)| (*k, handshake_at(lock(p).tunn.stats().0, now)))
            .collect()
    }

    /// Seals a packet from the TUN for the peer its destination routes to, into `out` (at
    /// least [`PACKET`] bytes): the datagram's length and where it goes. `None`: nothing to
    /// send (no route, no endpoint yet, or the packet waits for a handshake that is sent
    /// instead).
    pub fn seal(&self, packet: &[u8], out: &mut [u8]) -> Option<(usize, SocketAddr)> {
        self.seal_routed(&mut LastRoute::default(), packet, out)
    }

    /// [`Engine::seal`] for the packets of one batch in turn: a packet for the destination of
    /// the one before goes to the same peer without a route lookup.
    pub fn seal_routed(
        &self,
        last: &mut LastRoute,
        packet: &[u8],
        out: &mut [u8],
    ) -> Option<(usize, SocketAddr)> {
        let dst_ip = Tunn::dst_address(packet)?;
        let peer = match &mut last.0 {
            Some((ip, peer)) if *ip == dst_ip => peer,
            slot => {
                let peer = self.read().routes.longest_match(dst_ip)?.1.clone();
                &slot.insert((dst_ip, peer)).1
            }
        };
        let mut p = lock(peer);
        let len = match p.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(o) => o.len(),
            TunnResult::Err(e) => {
                tracing::debug!(iface = %self.name, error = ?e, "encapsulate failed");
                return None;
            }
            _ => return None,
        };
        Some((len, p.endpoint?))
    }

    /// Opens a datagram from `from` into `dst` (at least [`PACKET`] bytes): the length of a
    /// packet for the TUN, if it carried one its peer may send. What the protocol answers —
    /// handshake responses, cookies, packets that waited for the handshake — goes to
    /// `reply`, all for `from`. `scratch`: room for those answers.
    pub fn open(
        &self,
        from: SocketAddr,
        datagram: &[u8],
        scratch: &mut [u8],
        dst: &mut [u8],
        mut reply: impl FnMut(&[u8]),
    ) -> Option<usize> {
        if !admissible(datagram) {
            return None;
        }
        let peer = {
            let packet = match self
                .limiter
                .verify_packet(Some(from.ip()), datagram, scratch)
            {
                Ok(p) => p,
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    reply(cookie);
                    return None;
                }
                Err(_) => return None,
            };
            let peers = self.read();
            let found = match packet {
                Packet::HandshakeInit(p) => {
                    parse_handshake_anon(&self.keys.private, &self.keys.public, &p)
                        .ok()
                        .and_then(|hh| peers.by_key.get(&PublicKey(hh.peer_static_public)))
                }
                Packet::HandshakeResponse(p) => peers.by_index.get(&(p.receiver_idx >> 8)),
                Packet::PacketCookieReply(p) => peers.by_index.get(&(p.receiver_idx >> 8)),
                Packet::PacketData(p) => peers.by_index.get(&(p.receiver_idx >> 8)),
            };
            found?.clone()
        };
        let mut guard = lock(&peer);
        let p = &mut *guard;
        let (ok, kept) = match p.tunn.decapsulate(Some(from.ip()), datagram, dst) {
            TunnResult::Done => (true, None),
            TunnResult::Err(e) => {
                tracing::debug!(iface = %self.name, error = ?e, "decapsulate failed");
                (false, None)
            }
            TunnResult::WriteToNetwork(out) => {
                reply(out);
                // Packets queued while the handshake ran go out now.
                while let TunnResult::WriteToNetwork(out) = p.tunn.decapsulate(None, &[], scratch) {
                    reply(out);
                }
                (true, None)
            }
            TunnResult::WriteToTunnelV4(packet, src_ip) => {
                (true, Some((packet.len(), IpAddr::V4(src_ip))))
            }
            TunnResult::WriteToTunnelV6(packet, src_ip) => {
                (true, Some((packet.len(), IpAddr::V6(src_ip))))
            }
        };
        if ok {
            // Roaming: an authenticated packet says where the peer is now.
            p.endpoint = Some(from);
        }
        // Only what the peer may send from: its allowed IPs are also its source filter.
        kept.filter(|&(len, src)| {
            len >= MIN_IP_PACKET && p.allowed_ips.iter().any(|n| n.contains(&src))
        })
        .map(|(len, _)| len)
    }

    /// Runs every peer's timers (handshake retries and rekeys, keepalives, expiry): what
    /// they send goes to `send`. `dst`: room for one such datagram.
    pub fn tick(&self, dst: &mut [u8], mut send: impl FnMut(&[u8], SocketAddr)) {
        let all: Vec<_> = self.read().by_key.values().cloned().collect();
        for peer in all {
            let mut p = lock(&peer);
            let endpoint = p.endpoint;
            match p.tunn.update_timers(dst) {
                TunnResult::WriteToNetwork(out) => {
                    if let Some(ep) = endpoint {
                        send(out, ep);
                    }
                }
                TunnResult::Err(e) => {
                    tracing::trace!(iface = %self.name, error = ?e, "timer")
                }
                _ => {}
            }
        }
    }

    /// Starts a new second for the handshake rate limit.
    pub fn reset_rate_limit(&self) {
        self.limiter.reset_count();
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
