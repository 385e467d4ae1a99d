//! One WireGuard interface's I/O: a TUN device and a UDP socket joined through its
//! [`Engine`] (the peers and their boringtun sessions) by three tasks — TUN to network
//! (seal), network to TUN (open), and the timers (handshakes, keepalives, rekeys).
//!
//! The three run on one thread of the device's own, in a single-threaded tokio runtime that
//! also owns the TUN's and the socket's readiness. A packet's work therefore never waits for
//! another thread to wake: on the agent's shared, work-stealing runtime a readiness event
//! could wake a second worker. Measured on two cores (`cargo bench -p weft --bench
//! meshplane`), one stream carries about a sixth more this way, for less CPU per bit. The
//! price: one device's packets use one core; a node spreads its devices over its cores.
//!
//! The I/O moves packets in batches, not one per system call. The TUN runs with the kernel's
//! offloads (virtio-net headers, TSO, tun-rs's port of wireguard-go's offload code): one read
//! brings a TCP super-segment, split into MTU-sized packets; decrypted packets are coalesced
//! again before one write. The socket (quinn-udp) sends a run of encrypted packets to one
//! endpoint as one UDP GSO send and receives many datagrams per call (`recvmmsg`, UDP GRO).
//! Each falls back to one packet at a time where the kernel lacks it, with a log line.
//!
//! Each task owns its buffers, so no packet allocates.

use super::engine::{Engine, LastRoute, MTU, PACKET, TIMER_TICK};
use super::gso::{Run, Runs};
use super::keys::KeyPair;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Largest packet read from the TUN or the socket, plus WireGuard's overhead.
const BUF: usize = 65_535 + 32;
/// Packets per TUN batch: a 64 KiB super-segment splits into fewer than this.
const TUN_BATCH: usize = IDEAL_BATCH_SIZE;
/// Where a decrypted packet starts in its buffer: room for the virtio-net header the
/// coalescing TUN write puts in front.
const TUN_OFFSET: usize = VIRTIO_NET_HDR_LEN;
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
    #[error("cannot start the data plane thread of {name}: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
}

/// What the tasks share.
struct Shared {
    name: String,
    engine: Engine,
    tun: tun_rs::AsyncDevice,
    udp: UdpSocket,
    /// The socket's batching state (GSO segments, GRO), from quinn-udp.
    udp_state: quinn_udp::UdpSocketState,
    /// Most datagrams per UDP send, as probed at start (1 without offloads). quinn-udp lowers
    /// its own figure to 1 for good after one refused send; a refusal here is kept per
    /// endpoint instead, so one peer behind a narrow path does not slow every other.
    gso_segments: usize,
    no_gso: GsoRefusals,
    /// Becomes true when the TUN is gone (deleted from outside): the device carries nothing
    /// more, and whoever started it may start it again.
    gone: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// The TUN and the socket with the offloads asked for and available. In a runtime: both
    /// register with its reactor.
    fn open(
        name: &str,
        keys: KeyPair,
        listen_port: u16,
        offload: bool,
    ) -> Result<Shared, DeviceError> {
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
        Ok(Shared {
            name: name.to_string(),
            engine: Engine::new(name, keys),
            tun,
            udp,
            udp_state,
            gso_segments: gso,
            no_gso: GsoRefusals::default(),
            gone: tokio::sync::watch::Sender::new(false),
        })
    }
}

/// Endpoints a GSO send was refused for (a path whose MTU is below a datagram): their runs go
/// out one datagram at a time until the device restarts; every other endpoint keeps GSO.
#[derive(Default)]
struct GsoRefusals(RwLock<HashSet<SocketAddr>>);

impl GsoRefusals {
    fn refused(&self, to: &SocketAddr) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(to)
    }

    /// Notes a refusal; true the first time for this endpoint (worth a log line).
    fn note(&self, to: SocketAddr) -> bool {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(to)
    }
}

/// A running interface: its tasks run on a thread of their own, in a single-threaded
/// runtime. Dropping it stops them and closes the TUN (the kernel removes the interface)
/// before `drop` returns.
pub struct Device {
    shared: Arc<Shared>,
    listen_port: u16,
    /// Dropped to stop the thread.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Device {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // Quick: the thread only drops its tasks, and with them their share of the TUN
            // and the socket; ours goes when this returns.
            let _ = thread.join();
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
    /// Creates the TUN `name` and the socket on `listen_port`, and starts the tasks on the
    /// device's own thread. `offload`: use the kernel's TUN and UDP offloads where it has them.
    pub fn start(
        name: &str,
        keys: KeyPair,
        listen_port: u16,
        offload: bool,
    ) -> Result<Device, DeviceError> {
        let thread_err = |source| DeviceError::Thread {
            name: name.to_string(),
            source,
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let iface = name.to_string();
        let thread = std::thread::Builder::new()
            // What `top -H` and `perf` show (the kernel keeps 15 bytes).
            .name(format!("wg {name}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        rt.block_on(run(iface, keys, listen_port, offload, ready_tx, stopped))
                    }
                    Err(source) => {
                        let _ = ready_tx.send(Err(DeviceError::Thread {
                            name: iface,
                            source,
                        }));
                    }
                }
            })
            .map_err(thread_err)?;
        let shared = ready_rx.recv().map_err(|_| {
            thread_err(std::io::Error::other(
                "the data plane thread ended before the device was ready",
            ))
        })??;
        Ok(Device {
            shared,
            listen_port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// Its peers and their sessions.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Whether its TUN is gone (deleted from outside), so it carries nothing more.
    pub fn is_gone(&self) -> bool {
        *self.shared.gone.borrow()
    }

    /// Turns true when the TUN goes; closed (an error to wait on) when the device is dropped.
    pub fn gone(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.gone.subscribe()
    }
}

/// The device's thread, in its runtime: opens the TUN and the socket (so both register with
/// this runtime's reactor, and their readiness wakes this thread and no other), says whether
/// that worked through `ready`, and runs the tasks until `stop` fires or is dropped.
async fn run(
    iface: String,
    keys: KeyPair,
    listen_port: u16,
    offload: bool,
    ready: std::sync::mpsc::SyncSender<Result<Arc<Shared>, DeviceError>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let shared = match Shared::open(&iface, keys, listen_port, offload) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(shared.clone()));
    let all: [(&str, TaskFn); 3] = [
        ("TUN to network", |s| Box::pin(outbound(s))),
        ("network to TUN", |s| Box::pin(inbound(s))),
        ("timers", |s| Box::pin(timers(s))),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for (task, start) in all {
        let shared = shared.clone();
        tasks.spawn(supervised(iface.clone(), task, move || {
            start(shared.clone())
        }));
    }
    // Sent or dropped alike: the device is being dropped. Dropping the set aborts the tasks;
    // the runtime, dropped as the thread ends, frees them.
    let _ = stop.await;
}

/// How each task of the device is started (and started again after a panic).
type TaskFn = fn(Arc<Shared>) -> Task;

/// One of the device's tasks, as [`supervised`] starts it.
type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a task of the device, and starts it again if it panics: a packet that trips a bug
/// costs its batch, not the interface. A task that returns (the TUN is gone) stays ended.
/// Aborting this aborts the task with it (the `JoinSet` drops it).
async fn supervised(iface: String, task: &'static str, run: impl Fn() -> Task) {
    loop {
        let mut running = tokio::task::JoinSet::new();
        running.spawn(run());
        match running.join_next().await {
            Some(Err(e)) if e.is_panic() => {
                tracing::error!(iface, task, error = %e, "data plane task panicked; starting it again");
                // Not in a tight loop, if it panics at once every time.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return,
        }
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
    if run.segment_size().is_some() && shared.no_gso.refused(&run.to) {
        return send_datagrams(shared, out, run).await;
    }
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
            shared.udp_state.try_send((&shared.udp).into(), &transmit)
        })
        .await;
    match sent {
        Ok(()) => {}
        Err(e) if run.segment_size().is_some() && gso_refused(&e) => {
            // The kernel segments a GSO send but never fragments its datagrams: on a path
            // whose MTU is below one, it refuses the whole run, while a datagram sent alone
            // is fragmented like any other. So the run goes out one datagram at a time, and
            // so do this endpoint's later runs.
            if shared.no_gso.note(run.to) {
                tracing::info!(iface = %shared.name, to = %run.to, error = %e,
                    "UDP GSO send refused (the path's MTU is below a datagram): runs to this endpoint go out one datagram at a time");
            }
            send_datagrams(shared, out, run).await;
        }
        Err(e) => tracing::trace!(iface = %shared.name, error = %e, "packets not sent"),
    }
}

/// A run's datagrams, one send each.
async fn send_datagrams(shared: &Shared, out: &[u8], run: Run) {
    for datagram in out[run.start..run.end].chunks(run.segment) {
        if let Err(e) = shared.udp.send_to(datagram, wire_addr(run.to)).await {
            tracing::trace!(iface = %shared.name, error = %e, "packet not sent");
        }
    }
}

/// Whether a GSO send failed for want of segmentation the path allows (EMSGSIZE: segments
/// larger than the path's MTU) or the device supports (EINVAL, EIO).
fn gso_refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMSGSIZE | libc::EINVAL | libc::EIO)
    )
}

/// TUN → network: read a batch (a super-segment split into packets), find each packet's
/// peer by destination, encrypt it into one buffer end to end, and send runs to each
/// endpoint with one system call.
async fn outbound(shared: Arc<Shared>) {
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
                shared.gone.send_replace(true);
                return;
            }
            Err(e) => {
                // One read the offload code could not split (a malformed header, more
                // segments than buffers): dropped, as wireguard-go drops it.
                tracing::debug!(iface = %shared.name, error = %e, "TUN read dropped");
                continue;
            }
        };
        let mut runs = Runs::new(shared.gso_segments);
        let mut used = 0;
        let mut route = LastRoute::default();
        for (buf, &size) in bufs.iter().zip(&sizes).take(n) {
            let sealed = shared
                .engine
                .seal_routed(&mut route, &buf[..size], &mut out[used..]);
            let Some((len, to)) = sealed else {
                continue;
            };
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
    let mut bufs: [Vec<u8>; quinn_udp::BATCH_SIZE] = std::array::from_fn(|_| vec![0u8; GRO_BUF]);
    let mut metas = [quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let mut scratch = vec![0u8; BUF];
    let mut to_tun = ToTun::new();
    loop {
        let received = {
            // On the stack: no allocation per receive.
            let mut slices = bufs.each_mut().map(|b| std::io::IoSliceMut::new(b));
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
                let opened =
                    shared
                        .engine
                        .open(from, datagram, &mut scratch, to_tun.next(), |answer| {
                            send(&shared, answer, from)
                        });
                if let Some(len) = opened
                    && to_tun.keep(len)
                {
                    to_tun.flush(&shared).await;
                }
            }
        }
        to_tun.flush(&shared).await;
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
            shared.engine.reset_rate_limit();
        }
        shared
            .engine
            .tick(&mut dst, |datagram, to| send(&shared, datagram, to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Whether a thread of this process is named `name`.
    fn thread_named(name: &str) -> bool {
        std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
    }

    #[tokio::test]
    async fn a_device_has_a_thread_of_its_own_reports_a_deleted_tun_and_is_gone_once_dropped() {
        let name = format!("wgt{}", std::process::id() % 100_000);
        let start = || Device::start(&name, KeyPair::from_private([3; 32]), 0, true);
        let device = match start() {
            Ok(d) => d,
            Err(e @ DeviceError::Tun { .. }) => {
                // Needs CAP_NET_ADMIN and /dev/net/tun (CI runs the tests as root).
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let sys = std::path::Path::new("/sys/class/net").join(&name);
        assert!(sys.exists(), "the interface exists while the device runs");
        let thread = format!("wg {name}");
        assert!(
            thread_named(&thread),
            "its tasks run on a thread of its own"
        );
        drop(device);
        assert!(!sys.exists(), "gone as soon as the device is dropped");
        assert!(!thread_named(&thread), "and so is its thread");
        // So a restart (a new port, say) can take the same name straight away.
        let again = start().expect("the name is free again");

        // Deleted from outside: the device says so, for whoever started it to start it again.
        let mut gone = again.gone();
        assert!(!again.is_gone());
        let deleted = std::process::Command::new("ip")
            .args(["link", "del", &name])
            .status();
        if !deleted.is_ok_and(|s| s.success()) {
            eprintln!("`ip link del` unavailable: the rest skipped");
            return;
        }
        tokio::time::timeout(Duration::from_secs(10), gone.wait_for(|g| *g))
            .await
            .expect("the device notices its TUN is gone")
            .expect("while it runs");
        assert!(again.is_gone());
        drop(again);
        assert!(
            gone.changed().await.is_err(),
            "the watch closes with the device"
        );
    }

    #[test]
    fn a_gso_refusal_for_one_endpoint_leaves_every_other_on_gso() {
        let (narrow, wide): (SocketAddr, SocketAddr) = (
            "192.0.2.1:51820".parse().expect("address"),
            "192.0.2.2:51820".parse().expect("address"),
        );
        let refusals = GsoRefusals::default();
        assert!(refusals.note(narrow), "the first refusal is news");
        assert!(!refusals.note(narrow), "a second one is not");
        assert!(refusals.refused(&narrow));
        assert!(!refusals.refused(&wide));
    }

    #[tokio::test]
    async fn a_task_that_panics_is_started_again_and_one_that_returns_is_not() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        supervised("wg0".into(), "test", move || {
            let runs = counted.clone();
            Box::pin(async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("a bug met by one packet");
                }
            })
        })
        .await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "two panics, then it returned"
        );
    }

    #[tokio::test]
    async fn stopping_the_supervisor_stops_its_task() {
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (alive, stopped) = tokio::sync::oneshot::channel::<()>();
        let handles = Mutex::new(Some((started_tx, alive)));
        let supervisor = tokio::spawn(supervised("wg0".into(), "test", move || {
            let taken = handles.lock().unwrap_or_else(|p| p.into_inner()).take();
            Box::pin(async move {
                // Holds `alive` until the task is dropped.
                let Some((started_tx, _alive)) = taken else {
                    return;
                };
                let _ = started_tx.send(());
                std::future::pending::<()>().await
            })
        }));
        started.await.expect("the task started");
        supervisor.abort();
        let dropped = tokio::time::timeout(Duration::from_secs(5), stopped).await;
        assert!(
            matches!(dropped, Ok(Err(_))),
            "the task outlived its supervisor"
        );
    }
}
