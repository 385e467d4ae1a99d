//! One WireGuard interface: a TUN device, a UDP socket and a `boringtun::noise::Tunn` per
//! peer, joined by three tasks — TUN to network (encrypt), network to TUN (decrypt), and the
//! timers (handshakes, keepalives, rekeys). The protocol is boringtun's; the I/O is weft's.
//!
//! Each task owns its buffers, so no packet allocates. A peer's `Tunn` sits behind its own
//! mutex, held only while one packet is processed and sent with a non-blocking send (UDP and
//! TUN writes never wait on a lock holder's I/O).

use super::keys::KeyPair;
use crate::agent_api::{PeerDump, PeerSpec, PublicKey};
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Handshakes per second answered before cookies are asked for (boringtun's own figure).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// How often every peer's timers run.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Largest packet read from the TUN or the socket, plus WireGuard's overhead.
const BUF: usize = 65_535 + 32;
pub const MTU: u16 = 1420;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "cannot create TUN device {name}: {source} (the agent needs CAP_NET_ADMIN and /dev/net/tun)"
    )]
    Tun {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot listen on UDP port {port}: {source}")]
    Udp { port: u16, source: std::io::Error },
}

/// A peer's state.
struct Peer {
    key: PublicKey,
    /// The index its `Tunn` puts in session ids.
    index: u32,
    tunn: Tunn,
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

/// What the tasks share.
struct Shared {
    name: String,
    keys: KeyPair,
    limiter: Arc<RateLimiter>,
    tun: tun_rs::AsyncDevice,
    udp: UdpSocket,
    peers: RwLock<Peers>,
}

/// A running interface. Dropping it stops its tasks and closes the TUN (the kernel removes
/// the interface).
pub struct Device {
    shared: Arc<Shared>,
    listen_port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Device {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Mapped into IPv6, since the socket is dual-stack.
fn wire_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        v6 => v6,
    }
}

/// As people write it: an IPv4-mapped address as IPv4.
fn shown_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn bind_udp(port: u16) -> Result<UdpSocket, DeviceError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| DeviceError::Udp { port, source };
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_only_v6(false).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())
        .map_err(err)?;
    UdpSocket::from_std(s.into()).map_err(err)
}

impl Device {
    /// Creates the TUN `name` and the socket on `listen_port`, and starts the tasks.
    pub fn start(name: &str, keys: KeyPair, listen_port: u16) -> Result<Device, DeviceError> {
        let tun = tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(MTU)
            .build_async()
            .map_err(|source| DeviceError::Tun {
                name: name.to_string(),
                source,
            })?;
        let udp = bind_udp(listen_port)?;
        let limiter = Arc::new(RateLimiter::new(&keys.public, HANDSHAKE_RATE_LIMIT));
        let shared = Arc::new(Shared {
            name: name.to_string(),
            keys,
            limiter,
            tun,
            udp,
            peers: RwLock::new(Peers::default()),
        });
        let tasks = vec![
            tokio::spawn(outbound(shared.clone())),
            tokio::spawn(inbound(shared.clone())),
            tokio::spawn(timers(shared.clone())),
        ];
        Ok(Device {
            shared,
            listen_port,
            tasks,
        })
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.shared.keys.public.as_bytes())
    }

    /// The private key, for the local UAPI's `get` only (`wg` derives the public key from it).
    pub fn private_key_bytes(&self) -> [u8; 32] {
        self.shared.keys.private.to_bytes()
    }

    /// Adds a peer, or replaces its settings (keeping its session and endpoint when only the
    /// allowed IPs change).
    pub fn set_peer(&self, spec: &PeerSpec) {
        let mut peers = self.shared.peers.write().unwrap_or_else(|p| p.into_inner());
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
                    self.shared.keys.private.clone(),
                    boringtun::x25519::PublicKey::from(spec.public_key.0),
                    None,
                    spec.persistent_keepalive,
                    index,
                    Some(self.shared.limiter.clone()),
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
        let peers = self.shared.peers.read().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.by_key.get(key) {
            lock(p).endpoint = Some(endpoint);
        }
    }

    pub fn remove_peer(&self, key: &PublicKey) -> bool {
        let mut peers = self.shared.peers.write().unwrap_or_else(|p| p.into_inner());
        peers.remove(key).is_some()
    }

    pub fn peer_count(&self) -> usize {
        let peers = self.shared.peers.read().unwrap_or_else(|p| p.into_inner());
        peers.by_key.len()
    }

    /// Every peer as `wg show` would report it, in key order.
    pub fn dump(&self) -> Vec<PeerDump> {
        let peers = self.shared.peers.read().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        let mut out: Vec<PeerDump> = peers
            .by_key
            .values()
            .map(|p| {
                let p = lock(p);
                let (since, tx, rx, _, _) = p.tunn.stats();
                PeerDump {
                    public_key: p.key,
                    endpoint: p.endpoint.map(shown_addr),
                    allowed_ips: p.allowed_ips.clone(),
                    last_handshake: since.and_then(|d| {
                        now.checked_sub(d)?
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .ok()
                            .map(|t| t.as_secs() as i64)
                    }),
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
        let peers = self.shared.peers.read().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        peers
            .by_key
            .iter()
            .map(|(k, p)| {
                let since = lock(p).tunn.stats().0;
                let at = since.and_then(|d| {
                    now.checked_sub(d)?
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .ok()
                });
                (*k, at)
            })
            .collect()
    }
}

fn send(shared: &Shared, packet: &[u8], to: SocketAddr) {
    if let Err(e) = shared.udp.try_send_to(packet, wire_addr(to)) {
        // UDP may drop; a full socket buffer is a dropped packet, as on a wire.
        tracing::trace!(iface = %shared.name, error = %e, "packet not sent");
    }
}

fn to_tun(shared: &Shared, peer: &Peer, packet: &[u8], src: IpAddr) {
    // Only what the peer may send from: its allowed IPs are also its source filter.
    if !peer.allowed_ips.iter().any(|n| n.contains(&src)) {
        return;
    }
    if let Err(e) = shared.tun.try_send(packet) {
        tracing::trace!(iface = %shared.name, error = %e, "packet not written to the TUN");
    }
}

/// TUN → network: find the peer by destination, encrypt, send to its endpoint.
async fn outbound(shared: Arc<Shared>) {
    let mut src = vec![0u8; BUF];
    let mut dst = vec![0u8; BUF];
    loop {
        let n = match shared.tun.recv(&mut src).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(iface = %shared.name, error = %e, "TUN read failed; interface stopped");
                return;
            }
        };
        let packet = &src[..n];
        let Some(dst_ip) = Tunn::dst_address(packet) else {
            continue;
        };
        let peer = {
            let peers = shared.peers.read().unwrap_or_else(|p| p.into_inner());
            match peers.routes.longest_match(dst_ip) {
                Some((_, p)) => p.clone(),
                None => continue,
            }
        };
        let mut p = lock(&peer);
        let endpoint = p.endpoint;
        match p.tunn.encapsulate(packet, &mut dst) {
            TunnResult::WriteToNetwork(out) => {
                if let Some(ep) = endpoint {
                    send(&shared, out, ep);
                }
            }
            TunnResult::Err(e) => {
                tracing::debug!(iface = %shared.name, error = ?e, "encapsulate failed")
            }
            _ => {}
        }
    }
}

/// Network → TUN: find the peer (by its handshake's static key, or the index in the
/// session id), decrypt, write to the TUN; answer handshakes and flush queued packets.
async fn inbound(shared: Arc<Shared>) {
    let mut src = vec![0u8; BUF];
    let mut dst = vec![0u8; BUF];
    loop {
        let (n, from) = match shared.udp.recv_from(&mut src).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(iface = %shared.name, error = %e, "UDP receive failed");
                continue;
            }
        };
        let from = shown_addr(from);
        let datagram = &src[..n];
        let peer = {
            let packet = match shared
                .limiter
                .verify_packet(Some(from.ip()), datagram, &mut dst)
            {
                Ok(p) => p,
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    send(&shared, cookie, from);
                    continue;
                }
                Err(_) => continue,
            };
            let peers = shared.peers.read().unwrap_or_else(|p| p.into_inner());
            let found = match packet {
                Packet::HandshakeInit(p) => {
                    parse_handshake_anon(&shared.keys.private, &shared.keys.public, &p)
                        .ok()
                        .and_then(|hh| peers.by_key.get(&PublicKey(hh.peer_static_public)))
                }
                Packet::HandshakeResponse(p) => peers.by_index.get(&(p.receiver_idx >> 8)),
                Packet::PacketCookieReply(p) => peers.by_index.get(&(p.receiver_idx >> 8)),
                Packet::PacketData(p) => peers.by_index.get(&(p.receiver_idx >> 8)),
            };
            match found {
                Some(p) => p.clone(),
                None => continue,
            }
        };
        let mut guard = lock(&peer);
        let p = &mut *guard;
        let ok = match p.tunn.decapsulate(Some(from.ip()), datagram, &mut dst) {
            TunnResult::Done => true,
            TunnResult::Err(e) => {
                tracing::debug!(iface = %shared.name, error = ?e, "decapsulate failed");
                false
            }
            TunnResult::WriteToNetwork(out) => {
                send(&shared, out, from);
                // Packets queued while the handshake ran go out now.
                while let TunnResult::WriteToNetwork(out) = p.tunn.decapsulate(None, &[], &mut dst)
                {
                    send(&shared, out, from);
                }
                true
            }
            TunnResult::WriteToTunnelV4(packet, src_ip) => {
                to_tun(&shared, p, packet, IpAddr::V4(src_ip));
                true
            }
            TunnResult::WriteToTunnelV6(packet, src_ip) => {
                to_tun(&shared, p, packet, IpAddr::V6(src_ip));
                true
            }
        };
        if ok {
            // Roaming: an authenticated packet says where the peer is now.
            p.endpoint = Some(from);
        }
    }
}

/// Every peer's timers every 250 ms; the rate limiter's count every second.
async fn timers(shared: Arc<Shared>) {
    let mut dst = vec![0u8; BUF];
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        n = n.wrapping_add(1);
        if n.is_multiple_of(4) {
            shared.limiter.reset_count();
        }
        let all: Vec<_> = {
            let peers = shared.peers.read().unwrap_or_else(|p| p.into_inner());
            peers.by_key.values().cloned().collect()
        };
        for peer in all {
            let mut p = lock(&peer);
            let endpoint = p.endpoint;
            match p.tunn.update_timers(&mut dst) {
                TunnResult::WriteToNetwork(out) => {
                    if let Some(ep) = endpoint {
                        send(&shared, out, ep);
                    }
                }
                TunnResult::Err(e) => {
                    tracing::trace!(iface = %shared.name, error = ?e, "timer")
                }
                _ => {}
            }
        }
    }
}
