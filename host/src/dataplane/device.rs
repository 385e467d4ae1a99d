//! One WireGuard interface: a TUN device, a UDP socket and a `boringtun::noise::Tunn` per
//! peer, joined by three tasks — TUN to network (encrypt), network to TUN (decrypt), and the
//! timers (handshakes, keepalives, rekeys). The protocol is boringtun's; the I/O is weft's.
//!
//! The I/O moves packets in batches, not one per system call. The TUN runs with the kernel's
//! offloads (virtio-net headers, TSO, tun-rs's port of wireguard-go's offload code): one read
//! brings a TCP super-segment, split into MTU-sized packets; decrypted packets are coalesced
//! again before one write. The socket (quinn-udp) sends a run of encrypted packets to one
//! endpoint as one UDP GSO send and receives many datagrams per call (`recvmmsg`, UDP GRO).
//! Each falls back to one packet at a time where the kernel lacks it, with a log line.
//!
//! Each task owns its buffers, so no packet allocates. A peer's `Tunn` sits behind its own
//! mutex, held only while one packet is processed; sends happen after it is released.

use super::gso::{Run, Runs};
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
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Handshakes per second answered before cookies are asked for (boringtun's own figure).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// How often every peer's timers run.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Largest packet read from the TUN or the socket, plus WireGuard's overhead.
const BUF: usize = 65_535 + 32;
pub const MTU: u16 = 1420;
/// Room for one packet of the interface (at most [`MTU`]) with WireGuard's header, tag and
/// padding.
const PACKET: usize = 2048;
/// Packets per TUN batch: a 64 KiB super-segment splits into fewer than this.
const TUN_BATCH: usize = IDEAL_BATCH_SIZE;
/// Where a decrypted packet starts in its buffer: room for the virtio-net header the
/// coalescing TUN write puts in front.
const TUN_OFFSET: usize = VIRTIO_NET_HDR_LEN;
/// No IP packet is shorter than an IPv4 header.
const MIN_IP_PACKET: usize = 20;
/// Largest datagram run one receive brings with UDP GRO.
const GRO_BUF: usize = 65_536;

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
    /// The socket's batching state (GSO segments, GRO), from quinn-udp.
    udp_state: quinn_udp::UdpSocketState,
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

/// The TUN, with offloads if asked and the kernel has them; else without, saying so.
fn open_tun(name: &str, offload: bool) -> Result<tun_rs::AsyncDevice, DeviceError> {
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(MTU)
            .offload(offload)
            .build_async()
    };
    let err = |source| DeviceError::Tun {
        name: name.to_string(),
        source,
    };
    if !offload {
        return build(false).map_err(err);
    }
    match build(true) {
        Ok(tun) => Ok(tun),
        Err(e) => {
            tracing::warn!(iface = name, error = %e, "TUN offloads unavailable: one packet per read and write");
            build(false).map_err(err)
        }
    }
}

fn setsockopt(udp: &UdpSocket, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a live socket, and a pointer to an int of the size given.
    let r = unsafe {
        libc::setsockopt(
            udp.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Lets the kernel fragment datagrams larger than the path (both families: the socket is
/// dual-stack).
fn allow_fragments(udp: &UdpSocket) -> std::io::Result<()> {
    setsockopt(
        udp,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )?;
    setsockopt(
        udp,
        libc::IPPROTO_IPV6,
        libc::IPV6_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )?;
    setsockopt(udp, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0)
}

fn set_udp_gro(udp: &UdpSocket, on: bool) -> std::io::Result<()> {
    setsockopt(udp, libc::SOL_UDP, libc::UDP_GRO, i32::from(on))
}

/// Whether a read error means the TUN is gone (stop), rather than one bad read (drop it).
fn tun_gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EBADFD | libc::ENODEV | libc::ENXIO)
    )
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
    /// `offload`: use the kernel's TUN and UDP offloads where it has them.
    pub fn start(
        name: &str,
        keys: KeyPair,
        listen_port: u16,
        offload: bool,
    ) -> Result<Device, DeviceError> {
        let tun = open_tun(name, offload)?;
        let udp = bind_udp(listen_port)?;
        let udp_err = |source| DeviceError::Udp {
            port: listen_port,
            source,
        };
        let udp_state = quinn_udp::UdpSocketState::new((&udp).into()).map_err(udp_err)?;
        // quinn-udp forbids fragmentation (QUIC probes its path MTU); WireGuard lets the
        // kernel fragment a datagram too large for the path, as the kernel module does.
        allow_fragments(&udp).map_err(udp_err)?;
        if !offload {
            set_udp_gro(&udp, false).map_err(udp_err)?;
        }
        let gso = if offload {
            udp_state.max_gso_segments()
        } else {
            1
        };
        tracing::info!(
            iface = name,
            tun_tso = tun.tcp_gso(),
            tun_uso = tun.udp_gso(),
            udp_gso_segments = gso,
            udp_gro_segments = if offload { udp_state.gro_segments() } else { 1 },
            "data plane offloads"
        );
        let limiter = Arc::new(RateLimiter::new(&keys.public, HANDSHAKE_RATE_LIMIT));
        let shared = Arc::new(Shared {
            name: name.to_string(),
            keys,
            limiter,
            tun,
            udp,
            udp_state,
            peers: RwLock::new(Peers::default()),
        });
        let tasks = vec![
            tokio::spawn(outbound(shared.clone(), offload)),
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

/// Sends a run of encrypted packets as one UDP send (GSO when it holds several), waiting
/// for room in the socket rather than dropping a whole run.
async fn send_run(shared: &Shared, out: &[u8], run: Run) {
    let transmit = quinn_udp::Transmit {
        destination: wire_addr(run.to),
        ecn: None,
        contents: &out[run.start..run.end],
        segment_size: run.segment_size(),
        src_ip: None,
    };
    let sent = shared
        .udp
        .async_io(Interest::WRITABLE, || {
            shared.udp_state.send((&shared.udp).into(), &transmit)
        })
        .await;
    if let Err(e) = sent {
        tracing::trace!(iface = %shared.name, error = %e, "packets not sent");
    }
}

/// TUN → network: read a batch (a super-segment split into packets), find each packet's
/// peer by destination, encrypt it into one buffer end to end, and send runs to each
/// endpoint with one system call.
async fn outbound(shared: Arc<Shared>, offload: bool) {
    let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + 65_535];
    let mut bufs = vec![vec![0u8; PACKET]; TUN_BATCH];
    let mut sizes = vec![0usize; TUN_BATCH];
    let mut out = vec![0u8; TUN_BATCH * PACKET];
    loop {
        let n = match shared
            .tun
            .recv_multiple(&mut original, &mut bufs, &mut sizes, 0)
            .await
        {
            Ok(n) => n,
            Err(e) if tun_gone(&e) => {
                tracing::warn!(iface = %shared.name, error = %e, "TUN read failed; interface stopped");
                return;
            }
            Err(e) => {
                // One read the offload code could not split (a malformed header, more
                // segments than buffers): dropped, as wireguard-go drops it.
                tracing::debug!(iface = %shared.name, error = %e, "TUN read dropped");
                continue;
            }
        };
        // Read per batch: quinn-udp lowers it when the kernel refuses a GSO send.
        let gso = if offload {
            shared.udp_state.max_gso_segments()
        } else {
            1
        };
        let mut runs = Runs::new(gso);
        let mut used = 0;
        for (buf, &size) in bufs.iter().zip(&sizes).take(n) {
            let packet = &buf[..size];
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
            let (len, endpoint) = {
                let mut p = lock(&peer);
                let endpoint = p.endpoint;
                match p.tunn.encapsulate(packet, &mut out[used..]) {
                    TunnResult::WriteToNetwork(o) => (o.len(), endpoint),
                    TunnResult::Err(e) => {
                        tracing::debug!(iface = %shared.name, error = ?e, "encapsulate failed");
                        continue;
                    }
                    _ => continue,
                }
            };
            let Some(to) = endpoint else { continue };
            if let Some(run) = runs.push(to, used, len) {
                send_run(&shared, &out, run).await;
            }
            used += len;
        }
        if let Some(run) = runs.finish() {
            send_run(&shared, &out, run).await;
        }
    }
}

/// Decrypted packets waiting for one coalescing TUN write.
struct ToTun {
    bufs: Vec<Vec<u8>>,
    ready: usize,
    gro: GROTable,
}

impl ToTun {
    fn new() -> ToTun {
        // Room to grow: the coalescing write appends segments to a flow's first packet,
        // up to a 64 KiB super-segment, and merges only where the capacity allows.
        let buf = || {
            let mut b = Vec::with_capacity(TUN_OFFSET + 65_535);
            b.resize(TUN_OFFSET + PACKET, 0);
            b
        };
        ToTun {
            bufs: (0..TUN_BATCH).map(|_| buf()).collect(),
            ready: 0,
            gro: GROTable::default(),
        }
    }

    /// The buffer the next packet is decrypted into, whole again (a coalescing write
    /// shortens and lengthens them).
    fn next(&mut self) -> &mut [u8] {
        let buf = &mut self.bufs[self.ready];
        buf.resize(TUN_OFFSET + PACKET, 0);
        &mut buf[TUN_OFFSET..]
    }

    /// Keeps the packet of `len` bytes just decrypted into [`ToTun::next`]; true when the
    /// batch is full.
    fn keep(&mut self, len: usize) -> bool {
        self.bufs[self.ready].truncate(TUN_OFFSET + len);
        self.ready += 1;
        self.ready == self.bufs.len()
    }

    async fn flush(&mut self, shared: &Shared) {
        if self.ready == 0 {
            return;
        }
        let written = shared
            .tun
            .send_multiple(&mut self.gro, &mut self.bufs[..self.ready], TUN_OFFSET)
            .await;
        if let Err(e) = written {
            // One packet the coalescing code refused must not take the batch with it.
            tracing::debug!(iface = %shared.name, error = %e, "batch refused; writing packets one by one");
            let vnet = shared.tun.tcp_gso();
            for buf in &mut self.bufs[..self.ready] {
                let packet = if vnet {
                    // A header that asks for nothing: no segmentation, no checksum.
                    buf[..TUN_OFFSET].fill(0);
                    &buf[..]
                } else {
                    &buf[TUN_OFFSET..]
                };
                if let Err(e) = shared.tun.try_send(packet) {
                    tracing::trace!(iface = %shared.name, error = %e, "packet not written to the TUN");
                }
            }
        }
        self.ready = 0;
    }
}

/// Network → TUN: receive a batch of datagrams; for each find the peer (by its handshake's
/// static key, or the index in the session id) and decrypt; write the batch to the TUN at
/// once. Handshakes are answered and queued packets flushed on the way.
async fn inbound(shared: Arc<Shared>) {
    let mut bufs = vec![vec![0u8; GRO_BUF]; quinn_udp::BATCH_SIZE];
    let mut metas = vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let mut scratch = vec![0u8; BUF];
    let mut to_tun = ToTun::new();
    loop {
        let received = {
            let mut slices: Vec<std::io::IoSliceMut<'_>> = bufs
                .iter_mut()
                .map(|b| std::io::IoSliceMut::new(b))
                .collect();
            shared
                .udp
                .async_io(Interest::READABLE, || {
                    shared
                        .udp_state
                        .recv((&shared.udp).into(), &mut slices, &mut metas)
                })
                .await
        };
        let n = match received {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(iface = %shared.name, error = %e, "UDP receive failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        for (meta, buf) in metas.iter().zip(&bufs).take(n) {
            let from = shown_addr(meta.addr);
            let stride = meta.stride.max(1);
            for datagram in buf[..meta.len].chunks(stride) {
                if datagram_in(&shared, from, datagram, &mut scratch, &mut to_tun).await {
                    to_tun.flush(&shared).await;
                }
            }
        }
        to_tun.flush(&shared).await;
    }
}

/// Whether a datagram may reach boringtun with a [`PACKET`]-sized buffer: one larger than
/// any packet of the interface could make would need a larger one (and boringtun panics
/// when given a short one).
fn admissible(datagram: &[u8]) -> bool {
    datagram.len() <= PACKET
}

/// One datagram from `from`. True when the TUN batch is full.
async fn datagram_in(
    shared: &Shared,
    from: SocketAddr,
    datagram: &[u8],
    scratch: &mut [u8],
    to_tun: &mut ToTun,
) -> bool {
    if !admissible(datagram) {
        return false;
    }
    let peer = {
        let packet = match shared
            .limiter
            .verify_packet(Some(from.ip()), datagram, scratch)
        {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(cookie)) => {
                send(shared, cookie, from);
                return false;
            }
            Err(_) => return false,
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
            None => return false,
        }
    };
    let mut guard = lock(&peer);
    let p = &mut *guard;
    let (ok, kept) = match p.tunn.decapsulate(Some(from.ip()), datagram, to_tun.next()) {
        TunnResult::Done => (true, None),
        TunnResult::Err(e) => {
            tracing::debug!(iface = %shared.name, error = ?e, "decapsulate failed");
            (false, None)
        }
        TunnResult::WriteToNetwork(out) => {
            send(shared, out, from);
            // Packets queued while the handshake ran go out now.
            while let TunnResult::WriteToNetwork(out) = p.tunn.decapsulate(None, &[], scratch) {
                send(shared, out, from);
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
    match kept {
        // Only what the peer may send from: its allowed IPs are also its source filter.
        Some((len, src))
            if len >= MIN_IP_PACKET && p.allowed_ips.iter().any(|n| n.contains(&src)) =>
        {
            to_tun.keep(len)
        }
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tunn(
        me: &boringtun::x25519::StaticSecret,
        peer: &boringtun::x25519::StaticSecret,
        index: u32,
    ) -> Tunn {
        Tunn::new(
            me.clone(),
            boringtun::x25519::PublicKey::from(peer),
            None,
            None,
            index,
            None,
        )
    }

    /// Two peers with a session between them: `b` has answered `a`'s handshake and `a` has
    /// its first data packet on the way. Returns them and that packet.
    fn session() -> (Tunn, Tunn, Vec<u8>) {
        let ka = boringtun::x25519::StaticSecret::from([1u8; 32]);
        let kb = boringtun::x25519::StaticSecret::from([2u8; 32]);
        let (mut a, mut b) = (tunn(&ka, &kb, 1), tunn(&kb, &ka, 2));
        let (mut buf, mut out) = (vec![0u8; BUF], vec![0u8; BUF]);
        // An IPv4 packet from 10.0.0.1 to 10.0.0.2, queued until the handshake is done.
        let mut ip = vec![0u8; 40];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let init = match a.encapsulate(&ip, &mut buf) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("no handshake: {other:?}"),
        };
        let response = match b.decapsulate(None, &init, &mut out) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("no response: {other:?}"),
        };
        let data = match a.decapsulate(None, &response, &mut buf) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("no keepalive: {other:?}"),
        };
        (a, b, data)
    }

    #[test]
    fn a_session_carries_a_packet_through_buffers_of_the_batch_size() {
        let (mut a, mut b, first) = session();
        let mut dst = vec![0u8; PACKET];
        assert!(admissible(&first));
        let _ = b.decapsulate(None, &first, &mut dst);
        let ip = {
            let mut ip = vec![0u8; MTU as usize];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&MTU.to_be_bytes());
            ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
            ip
        };
        let mut out = vec![0u8; PACKET];
        let sealed = match a.encapsulate(&ip, &mut out) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("not encrypted: {other:?}"),
        };
        assert!(
            admissible(&sealed),
            "a packet at the MTU fits the batch buffers"
        );
        match b.decapsulate(None, &sealed, &mut dst) {
            TunnResult::WriteToTunnelV4(p, _) => assert_eq!(p, &ip[..]),
            other => panic!("not decrypted: {other:?}"),
        }
    }

    proptest! {
        /// Whatever arrives from the network — arbitrary bytes, or a live session's data
        /// header with arbitrary bytes after it — decrypting into a batch buffer never panics.
        #[test]
        fn no_datagram_makes_the_receive_path_panic(
            junk in proptest::collection::vec(any::<u8>(), 0..3000),
            data_header in any::<bool>(),
        ) {
            let (_a, mut b, first) = session();
            let mut datagram = junk;
            if data_header && datagram.len() >= 16 {
                // Type 4 (data) for b's live session, the rest arbitrary.
                datagram[..8].copy_from_slice(&first[..8]);
            }
            let mut dst = vec![0u8; PACKET];
            if admissible(&datagram) {
                let _ = b.decapsulate(None, &datagram, &mut dst);
            }
        }
    }
}
