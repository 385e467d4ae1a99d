//! Probing addresses from the host: ICMP echoes and TCP connects, a batch at a time, the
//! probes of a batch in flight together (up to a bound). No plugins here: the ping sweep
//! calls it directly, and `plugins::probe_host` calls it for ping-check plugins once
//! `grants` has allowed each probe.
//!
//! A batch's answer is in the order asked: the round-trip time of each probe, or `None` when
//! nothing answered within the timeout. The timeout of a probe runs from when it is sent, so
//! a batch larger than the bound takes a few timeouts at worst.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// ICMP echoes in flight at once. They share one socket, so the bound is on packets sent
/// in a burst (and replies queued in the socket's buffer), not on file descriptors.
pub const ICMP_IN_FLIGHT: usize = 1024;
/// TCP connects in flight at once: each holds a file descriptor until it is answered.
pub const TCP_IN_FLIGHT: usize = 512;

/// The receive buffer asked for an ICMP socket, in bytes: room for the replies of a whole
/// in-flight window (an skb on loopback takes a few KiB of buffer, whatever its size).
const RECV_BUFFER: usize = 8 << 20;

/// What an echo carries. Its content does not matter; a recognisable one helps whoever
/// reads a packet capture.
const PAYLOAD: &[u8] = b"weft ping check.";

/// Runs a batch to the end from a blocking thread (not an async one, where blocking is
/// refused). On a multi-threaded runtime the probes run on its threads while this one waits.
/// A current-thread runtime cannot drive its sockets and timers from another thread's
/// `Handle::block_on` (the batch would never end), so there the batch gets a runtime of its
/// own.
pub fn block_on<F: Future>(runtime: &Handle, batch: F) -> Result<F::Output, ProbeError> {
    if runtime.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return Ok(runtime.block_on(batch));
    }
    let own = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ProbeError::Runtime)?;
    Ok(own.block_on(batch))
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Neither kind of ICMP socket could be opened: the unprivileged one (`SOCK_DGRAM`, for
    /// the groups in `net.ipv4.ping_group_range`) nor the raw one (root or `CAP_NET_RAW`).
    #[error(
        "cannot open an {family} socket: neither an unprivileged ICMP socket (is this group in \
         net.ipv4.ping_group_range?) nor a raw one (needs CAP_NET_RAW) is allowed: {source}"
    )]
    IcmpSocket {
        family: &'static str,
        source: std::io::Error,
    },
    /// A runtime of the batch's own could not be started (see [`block_on`]).
    #[error("cannot start a runtime for the probes: {0}")]
    Runtime(std::io::Error),
}

/// Sends one ICMP echo to each of `addrs` (IPv4 and IPv6 alike) and waits up to `timeout`
/// for each reply. One socket per address family serves the whole batch; replies are told
/// apart by identifier and sequence (on an unprivileged socket the kernel matches the
/// identifier, the socket being ours alone). An address asked twice is probed once.
///
/// An ICMP error in answer (destination unreachable, time exceeded) is no answer: only an
/// echo reply proves the address is up.
pub async fn icmp_echo_batch(
    addrs: &[IpAddr],
    timeout: Duration,
) -> Result<Vec<Option<Duration>>, ProbeError> {
    // Each distinct address once: the reply of a second echo with the same identifier and
    // sequence could not be told from the first's.
    let mut unique: Vec<IpAddr> = Vec::new();
    let mut slot: HashMap<IpAddr, usize> = HashMap::new();
    let slots: Vec<usize> = addrs
        .iter()
        .map(|&a| {
            *slot.entry(a).or_insert_with(|| {
                unique.push(a);
                unique.len() - 1
            })
        })
        .collect();
    let v4 = match unique.iter().any(IpAddr::is_ipv4) {
        true => Some(icmp_client(ICMP::V4)?),
        false => None,
    };
    let v6 = match unique.iter().any(IpAddr::is_ipv6) {
        true => Some(icmp_client(ICMP::V6)?),
        false => None,
    };
    // Another batch running at the same time has its own sockets, but on raw sockets every
    // socket sees every reply: a random identifier keeps the batches apart.
    let ident = PingIdentifier(rand::random());
    let limit = Arc::new(Semaphore::new(ICMP_IN_FLIGHT));
    let mut probes = JoinSet::new();
    for (i, &address) in unique.iter().enumerate() {
        let client = match address {
            IpAddr::V4(_) => v4.clone(),
            IpAddr::V6(_) => v6.clone(),
        };
        let Some(client) = client else {
            continue;
        };
        let limit = limit.clone();
        probes.spawn(async move {
            // The semaphore is never closed, so acquiring fails only if it were.
            let _permit = limit.acquire_owned().await.ok();
            let mut pinger = client.pinger(address, ident).await;
            pinger.timeout(timeout);
            // Sequence: the address's place in the batch (distinct addresses need not have
            // distinct sequences, but it costs nothing and helps a packet capture).
            let answer = match pinger.ping(PingSequence(i as u16), PAYLOAD).await {
                Ok((packet, rtt)) if is_echo_reply(&packet) => Some(rtt),
                Ok(_) => None,
                Err(e) => {
                    tracing::trace!(%address, error = %e, "no echo reply");
                    None
                }
            };
            (i, answer)
        });
    }
    let mut answers = vec![None; unique.len()];
    while let Some(done) = probes.join_next().await {
        // A probe task only ends by returning (it does not panic on any input).
        if let Ok((i, answer)) = done {
            answers[i] = answer;
        }
    }
    Ok(slots.into_iter().map(|i| answers[i]).collect())
}

fn icmp_client(kind: ICMP) -> Result<Client, ProbeError> {
    // surge-ping tries the unprivileged kind (its default) first, then a raw socket.
    let config = Config::builder().kind(kind).build();
    let client = Client::new(&config).map_err(|source| ProbeError::IcmpSocket {
        family: match kind {
            ICMP::V4 => "ICMPv4",
            ICMP::V6 => "ICMPv6",
        },
        source,
    })?;
    let fd = client.get_socket().get_native_sock();
    // SAFETY: `fd` is the socket `client` owns, open for as long as `client` lives, and it
    // is only borrowed for this one call.
    let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    // A batch's replies arrive in a burst (on a raw socket with every other ICMP packet of
    // the host, our own echo requests to loopback included): the default buffer of about
    // 200 KiB holds only a hundred or so, and the rest would be dropped as unanswered.
    // Best effort: the kernel caps it at net.core.rmem_max.
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the ICMP socket's receive buffer");
    }
    Ok(client)
}

fn is_echo_reply(packet: &IcmpPacket) -> bool {
    // Echo reply is type 0 in ICMPv4 and 129 in ICMPv6.
    match packet {
        IcmpPacket::V4(p) => p.get_icmp_type().0 == 0,
        IcmpPacket::V6(p) => p.get_icmpv6_type().0 == 129,
    }
}

/// Opens a TCP connection to each of `targets` and waits up to `timeout` for each to be
/// answered. A connect that is refused (the host sent a reset) counts as an answer: the host
/// is up, only the port is closed. A connection that opens is closed at once with a reset,
/// so a sweep leaves no sockets waiting out `TIME_WAIT` behind it.
pub async fn tcp_connect_batch(
    targets: &[(IpAddr, u16)],
    timeout: Duration,
) -> Vec<Option<Duration>> {
    let limit = Arc::new(Semaphore::new(TCP_IN_FLIGHT));
    let mut probes = JoinSet::new();
    for (i, &(address, port)) in targets.iter().enumerate() {
        let limit = limit.clone();
        probes.spawn(async move {
            let _permit = limit.acquire_owned().await.ok();
            let to = SocketAddr::new(address, port);
            let started = Instant::now();
            let answer =
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(to)).await {
                    Ok(Ok(stream)) => {
                        let rtt = started.elapsed();
                        // Best effort: without it the socket only lingers in TIME_WAIT.
                        let _ = stream.set_zero_linger();
                        Some(rtt)
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        Some(started.elapsed())
                    }
                    Ok(Err(e)) => {
                        tracing::trace!(%to, error = %e, "no TCP answer");
                        None
                    }
                    Err(_) => None,
                };
            (i, answer)
        });
    }
    let mut answers = vec![None; targets.len()];
    while let Some(done) = probes.join_next().await {
        if let Ok((i, answer)) = done {
            answers[i] = answer;
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The ICMP tests need a socket the machine may refuse (no raw socket without
    /// CAP_NET_RAW, no unprivileged one outside ping_group_range): they say so and stop.
    fn icmp_or_skip(
        result: Result<Vec<Option<Duration>>, ProbeError>,
    ) -> Option<Vec<Option<Duration>>> {
        match result {
            Ok(answers) => Some(answers),
            Err(e) => {
                println!("skipped: {e}");
                None
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loopback_answers_an_icmp_echo_in_order_even_when_asked_twice() {
        let asked = [ip("127.0.0.1"), ip("127.0.0.2"), ip("127.0.0.1")];
        let Some(answers) = icmp_or_skip(icmp_echo_batch(&asked, Duration::from_secs(1)).await)
        else {
            return;
        };
        assert_eq!(answers.len(), 3);
        for (a, rtt) in asked.iter().zip(&answers) {
            let rtt = rtt.unwrap_or_else(|| panic!("{a} did not answer"));
            assert!(rtt < Duration::from_secs(1), "{a}: {rtt:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ipv6_loopback_answers_an_icmp_echo() {
        let Some(answers) =
            icmp_or_skip(icmp_echo_batch(&[ip("::1")], Duration::from_secs(1)).await)
        else {
            return;
        };
        assert!(answers[0].is_some(), "::1 did not answer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_whole_sweep_batch_is_answered_within_one_timeout() {
        // 1,024 loopback addresses, as many as a sweep sends at once: every echo is
        // answered (none lost in a full socket buffer), and the batch takes far less than
        // one round trip each.
        let asked: Vec<IpAddr> = (1..=1024u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 | i)))
            .collect();
        let started = Instant::now();
        let Some(answers) = icmp_or_skip(icmp_echo_batch(&asked, Duration::from_secs(1)).await)
        else {
            return;
        };
        let lost: Vec<_> = asked
            .iter()
            .zip(&answers)
            .filter(|(_, rtt)| rtt.is_none())
            .map(|(a, _)| a)
            .collect();
        assert!(
            lost.is_empty(),
            "no answer from {} of them: {lost:?}",
            lost.len()
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listening_port_and_a_refused_port_both_answer_a_tcp_connect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        // Bound but not listening: nothing else can take the port while the test runs,
        // and a connect to it is refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let answers = tcp_connect_batch(
            &[(ip("127.0.0.1"), open), (ip("127.0.0.1"), closed_port)],
            Duration::from_secs(1),
        )
        .await;
        assert!(answers[0].is_some(), "the listening port did not answer");
        assert!(answers[1].is_some(), "a refused connect is an answer too");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tcp_connect_that_is_never_answered_times_out_as_none() {
        // A listener whose backlog is full leaves further connects unanswered (the kernel
        // drops their SYNs), like a host that filters the port.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let to = listener.local_addr().unwrap();
        let wait = Duration::from_millis(200);
        let mut held = Vec::new();
        while let Ok(Ok(stream)) =
            tokio::time::timeout(wait, tokio::net::TcpStream::connect(to)).await
        {
            held.push(stream);
            assert!(held.len() < 100, "the backlog never filled");
        }
        let started = Instant::now();
        let answer = tcp_connect_batch(&[(to.ip(), to.port())], wait).await;
        assert_eq!(answer, [None]);
        assert!(started.elapsed() < wait * 3, "{:?}", started.elapsed());
    }
}
