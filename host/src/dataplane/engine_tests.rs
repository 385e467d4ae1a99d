//! Engines joined by an in-process wire: handshakes, rekeys, roaming and peer changes while
//! traffic flows, with boringtun's clock injected (`--features test-clock`: a clock per
//! thread that moves only when a test advances it) instead of waited for.

use super::*;
use crate::agent_api::PeerSpec;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::net::Ipv4Addr;

struct Node {
    engine: Engine,
    /// Its UDP address: where datagrams for it are delivered, and where its own come from.
    at: SocketAddr,
    overlay: Ipv4Addr,
    /// Sequence numbers of the packets its TUN received, in order.
    tun: Vec<u32>,
}

/// Engines and the wire between them: datagrams in flight, delivered in order by address.
struct Net {
    nodes: Vec<Node>,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// While true the wire loses everything.
    cut: bool,
    /// Handshake initiations put on the wire.
    handshakes: usize,
    /// Datagrams each node sent that carried no packet (keepalives).
    keepalives: Vec<usize>,
}

/// An IPv4 packet from `src` to `dst` carrying `seq`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; 24];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&24u16.to_be_bytes());
    p[8] = 64;
    p[9] = 253; // experimental protocol: nothing parses it
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    p
}

/// A WireGuard transport datagram with nothing inside: 16 bytes of header, 16 of tag.
fn is_keepalive(datagram: &[u8]) -> bool {
    datagram.first() == Some(&4) && datagram.len() == 32
}

impl Net {
    /// `n` nodes at 192.0.2.i:51820 with overlay addresses 10.0.0.i, knowing nobody.
    fn new(n: u8) -> Net {
        let nodes = (1..=n)
            .map(|i| Node {
                engine: Engine::new(&format!("wg{i}"), KeyPair::from_private([i; 32])),
                at: SocketAddr::from(([192, 0, 2, i], 51820)),
                overlay: Ipv4Addr::new(10, 0, 0, i),
                tun: Vec::new(),
            })
            .collect();
        Net {
            nodes,
            wire: VecDeque::new(),
            cut: false,
            handshakes: 0,
            keepalives: vec![0; usize::from(n)],
        }
    }

    fn spec(&self, b: usize, keepalive: Option<u16>) -> PeerSpec {
        PeerSpec {
            public_key: self.nodes[b].engine.public_key(),
            allowed_ips: vec![IpNet::from(IpAddr::V4(self.nodes[b].overlay))],
            persistent_keepalive: keepalive,
        }
    }

    /// `a` gets `b` as a peer, knowing where it is.
    fn knows(&self, a: usize, b: usize) {
        self.nodes[a].engine.set_peer(&self.spec(b, None));
        let at = self.nodes[b].at;
        self.nodes[a]
            .engine
            .set_endpoint(&self.spec(b, None).public_key, at);
    }

    /// `a` and `b` as peers: `a` knows where `b` is; `b` learns it from `a`'s handshake.
    fn pair(&self, a: usize, b: usize) {
        self.knows(a, b);
        self.nodes[b].engine.set_peer(&self.spec(a, None));
    }

    fn put(&mut self, from: usize, to: SocketAddr, datagram: &[u8]) {
        if datagram.first() == Some(&1) {
            self.handshakes += 1;
        }
        if is_keepalive(datagram) {
            self.keepalives[from] += 1;
        }
        let at = self.nodes[from].at;
        self.wire.push_back((at, to, datagram.to_vec()));
    }

    /// `a`'s TUN hands the engine a packet for `b`'s overlay address. False: not sealed.
    fn send(&mut self, a: usize, b: usize, seq: u32) -> bool {
        let packet = ipv4(self.nodes[a].overlay, self.nodes[b].overlay, seq);
        let mut out = vec![0u8; PACKET];
        match self.nodes[a].engine.seal(&packet, &mut out) {
            Some((len, to)) => {
                self.put(a, to, &out[..len]);
                true
            }
            None => false,
        }
    }

    /// Delivers what is on the wire, and what that makes the engines answer, until it is
    /// quiet. A datagram for an address where no node is, is lost.
    fn pump(&mut self) {
        let (mut scratch, mut dst) = (vec![0u8; PACKET], vec![0u8; PACKET]);
        while let Some((from, to, datagram)) = self.wire.pop_front() {
            let Some(i) = self.nodes.iter().position(|n| n.at == to) else {
                continue;
            };
            if self.cut {
                continue;
            }
            let mut answers = Vec::new();
            let opened = self.nodes[i]
                .engine
                .open(from, &datagram, &mut scratch, &mut dst, |a| {
                    answers.push(a.to_vec())
                });
            if let Some(len) = opened {
                assert_eq!(len, 24, "the packet comes out as it went in");
                let seq = u32::from_be_bytes([dst[20], dst[21], dst[22], dst[23]]);
                self.nodes[i].tun.push(seq);
            }
            for a in answers {
                self.put(i, from, &a);
            }
        }
    }

    fn endpoint_of(&self, a: usize, b: usize) -> Option<SocketAddr> {
        let key = self.nodes[b].engine.public_key();
        self.nodes[a]
            .engine
            .dump()
            .into_iter()
            .find(|p| p.public_key == key)?
            .endpoint
    }
}

#[test]
fn a_first_packet_waits_for_the_handshake_and_then_arrives() {
    let mut net = Net::new(2);
    net.pair(0, 1);
    net.send(0, 1, 7);
    net.pump();
    assert_eq!(net.nodes[1].tun, [7]);
    assert_eq!(net.handshakes, 1);
    assert_eq!(
        net.endpoint_of(1, 0),
        Some(net.nodes[0].at),
        "learnt from the handshake"
    );
    assert!(net.send(1, 0, 8), "the responder now knows where to send");
    net.pump();
    assert_eq!(net.nodes[0].tun, [8]);
}

#[test]
fn a_packet_for_no_peer_or_from_outside_the_allowed_ips_goes_nowhere() {
    let mut net = Net::new(3);
    net.pair(0, 1);
    // 10.0.0.3 is nobody's allowed IP on node 0.
    assert!(!net.send(0, 2, 1));
    net.send(0, 1, 2);
    net.pump();
    // Node 1 sends as if from 10.0.0.3: node 0 allows only 10.0.0.2 from it.
    let spoofed = ipv4(net.nodes[2].overlay, net.nodes[0].overlay, 3);
    let mut out = vec![0u8; PACKET];
    let (len, to) = net.nodes[1]
        .engine
        .seal(&spoofed, &mut out)
        .expect("sealed");
    net.put(1, to, &out[..len]);
    net.pump();
    assert!(net.nodes[0].tun.is_empty());
}

/// One route lookup serves a run of packets to one destination; a batch that alternates
/// between peers still sends each packet to its own.
#[test]
fn a_batch_for_two_peers_sends_each_packet_to_its_own() {
    let mut net = Net::new(3);
    net.pair(0, 1);
    net.pair(0, 2);
    for b in [1, 2] {
        net.send(0, b, 0);
        net.pump();
    }
    let mut route = LastRoute::default();
    let mut out = vec![0u8; PACKET];
    for (seq, b) in [(1, 1), (2, 1), (3, 2), (4, 1), (5, 2), (6, 2)] {
        let packet = ipv4(net.nodes[0].overlay, net.nodes[b].overlay, seq);
        let (len, to) = net.nodes[0]
            .engine
            .seal_routed(&mut route, &packet, &mut out)
            .expect("sealed");
        assert_eq!(to, net.nodes[b].at, "packet {seq} goes to node {b}");
        net.put(0, to, &out[..len]);
    }
    // Not to the peer of the packet before: 10.0.0.9 routes nowhere.
    let nowhere = ipv4(net.nodes[0].overlay, Ipv4Addr::new(10, 0, 0, 9), 7);
    assert!(
        net.nodes[0]
            .engine
            .seal_routed(&mut route, &nowhere, &mut out)
            .is_none()
    );
    net.pump();
    assert_eq!(net.nodes[1].tun, [0, 1, 2, 4]);
    assert_eq!(net.nodes[2].tun, [0, 3, 5, 6]);
}

/// Roaming: a peer's authenticated packet from a new address moves its endpoint there.
#[test]
fn a_peer_that_moves_is_followed_to_its_new_address() {
    let mut net = Net::new(2);
    net.pair(0, 1);
    net.send(0, 1, 1);
    net.pump();
    let moved = SocketAddr::from(([198, 51, 100, 2], 40000));
    net.nodes[1].at = moved;
    net.send(0, 1, 2);
    net.pump();
    assert_eq!(net.nodes[1].tun, [1], "sent to the old address: lost");
    net.send(1, 0, 3);
    net.pump();
    assert_eq!(net.nodes[0].tun, [3]);
    assert_eq!(net.endpoint_of(0, 1), Some(moved));
    net.send(0, 1, 4);
    net.pump();
    assert_eq!(net.nodes[1].tun, [1, 4]);
    assert_eq!(net.handshakes, 1, "the session survives the move");
}

#[test]
fn a_removed_peer_is_cut_off_while_traffic_flows() {
    let mut net = Net::new(3);
    net.pair(0, 1);
    net.pair(0, 2);
    for seq in 0..3 {
        net.send(0, 1, seq);
        net.send(0, 2, seq);
    }
    net.pump();
    // Datagrams both ways in flight when node 1 is removed from node 0.
    net.send(1, 0, 10);
    net.send(2, 0, 10);
    assert!(
        net.nodes[0]
            .engine
            .remove_peer(&net.spec(1, None).public_key)
    );
    assert!(!net.send(0, 1, 11), "nothing is sealed for a removed peer");
    net.send(0, 2, 11);
    net.pump();
    net.send(1, 0, 12);
    net.pump();
    assert_eq!(
        net.nodes[0].tun,
        [10],
        "only node 2's packet; node 1's are dropped"
    );
    assert_eq!(net.nodes[1].tun, [0, 1, 2]);
    assert_eq!(net.nodes[2].tun, [0, 1, 2, 11]);
    assert_eq!(net.nodes[0].engine.peer_count(), 1);
}

#[test]
fn a_peer_added_while_traffic_flows_leaves_other_sessions_alone() {
    let mut net = Net::new(3);
    net.pair(0, 1);
    net.send(0, 1, 0);
    net.pump();
    // In flight while node 2 is added, and node 1's allowed IPs grow by a subnet.
    net.send(0, 1, 1);
    net.send(1, 0, 1);
    net.pair(0, 2);
    let mut wider = net.spec(1, None);
    wider
        .allowed_ips
        .push("10.1.0.0/24".parse().expect("prefix"));
    net.nodes[0].engine.set_peer(&wider);
    net.pump();
    assert_eq!(net.nodes[1].tun, [0, 1]);
    assert_eq!(net.nodes[0].tun, [1]);
    assert_eq!(net.handshakes, 1, "node 1's session was kept");
    let to_subnet = ipv4(net.nodes[0].overlay, Ipv4Addr::new(10, 1, 0, 9), 2);
    let mut out = vec![0u8; PACKET];
    let (_, to) = net.nodes[0]
        .engine
        .seal(&to_subnet, &mut out)
        .expect("routed");
    assert_eq!(to, net.nodes[1].at, "the new subnet routes to node 1");
    net.send(0, 2, 3);
    net.pump();
    assert_eq!(net.nodes[2].tun, [3]);
    assert_eq!(net.handshakes, 2);
}

/// The session of a live pair, and its first data packet, for feeding the receive path.
fn live_pair() -> (Net, Vec<u8>) {
    let mut net = Net::new(2);
    net.pair(0, 1);
    net.send(0, 1, 0);
    net.pump();
    let packet = ipv4(net.nodes[0].overlay, net.nodes[1].overlay, 1);
    let mut out = vec![0u8; PACKET];
    let (len, _) = net.nodes[0].engine.seal(&packet, &mut out).expect("sealed");
    out.truncate(len);
    (net, out)
}

#[test]
fn a_packet_at_the_mtu_fits_the_batch_buffers() {
    let (net, _) = live_pair();
    let mut ip = vec![0u8; usize::from(MTU)];
    ip[..20].copy_from_slice(&ipv4(net.nodes[0].overlay, net.nodes[1].overlay, 0)[..20]);
    ip[2..4].copy_from_slice(&MTU.to_be_bytes());
    let mut sealed = vec![0u8; PACKET];
    let (len, _) = net.nodes[0].engine.seal(&ip, &mut sealed).expect("sealed");
    let (mut scratch, mut dst) = (vec![0u8; PACKET], vec![0u8; PACKET]);
    let opened = net.nodes[1].engine.open(
        net.nodes[0].at,
        &sealed[..len],
        &mut scratch,
        &mut dst,
        |_| {},
    );
    assert_eq!(opened, Some(usize::from(MTU)));
    assert_eq!(dst[..usize::from(MTU)], ip[..]);
}

proptest! {
    /// Whatever arrives from the network — arbitrary bytes, or a live session's data header
    /// with arbitrary bytes after it — opening it into a batch buffer never panics, and
    /// nothing unauthenticated reaches the TUN.
    #[test]
    fn no_datagram_makes_the_receive_path_panic(
        junk in proptest::collection::vec(any::<u8>(), 0..3000),
        data_header in any::<bool>(),
    ) {
        let (net, first) = live_pair();
        let mut datagram = junk;
        if data_header && datagram.len() >= 16 {
            // Type 4 (data) for node 1's live session, the rest arbitrary.
            datagram[..8].copy_from_slice(&first[..8]);
        }
        let (mut scratch, mut dst) = (vec![0u8; PACKET], vec![0u8; PACKET]);
        let from = net.nodes[0].at;
        let opened = net.nodes[1].engine.open(from, &datagram, &mut scratch, &mut dst, |_| {});
        prop_assert_eq!(opened, None);
    }
}

/// Timers, with boringtun's clock moved by the test.
#[cfg(feature = "test-clock")]
mod timers {
    use super::*;
    use mock_instant::MockClock;

    impl Net {
        /// Every node's timers, once.
        fn tick(&mut self) {
            let mut dst = vec![0u8; PACKET];
            for i in 0..self.nodes.len() {
                let mut sent = Vec::new();
                self.nodes[i]
                    .engine
                    .tick(&mut dst, |d, to| sent.push((d.to_vec(), to)));
                for (d, to) in sent {
                    self.put(i, to, &d);
                }
            }
        }
    }

    /// Runs the net for `seconds` of injected time, ticking as the device does; each second
    /// `each_second` may send.
    fn run(net: &mut Net, seconds: u32, mut each_second: impl FnMut(&mut Net, u32)) {
        for second in 0..seconds {
            each_second(net, second);
            net.pump();
            for _ in 0..4 {
                MockClock::advance(TIMER_TICK);
                net.tick();
                net.pump();
            }
        }
    }

    #[test]
    fn traffic_both_ways_survives_rekeys_past_the_session_lifetime() {
        let mut net = Net::new(2);
        net.pair(0, 1);
        // 400 s: past REJECT_AFTER_TIME (180 s) twice; REKEY_AFTER_TIME is 120 s.
        run(&mut net, 400, |net, s| {
            net.send(0, 1, s);
            net.send(1, 0, s);
        });
        let all: Vec<u32> = (0..400).collect();
        assert_eq!(
            net.nodes[1].tun, all,
            "every packet from node 0 arrived, in order"
        );
        // Node 1 first sends once the handshake made by node 0's first packet is done.
        assert_eq!(net.nodes[0].tun, all);
        assert!(
            (3..=6).contains(&net.handshakes),
            "a new session at least every 120 s: {} handshakes",
            net.handshakes
        );
    }

    #[test]
    fn a_lost_handshake_is_sent_again_and_the_waiting_packet_arrives() {
        let mut net = Net::new(2);
        net.pair(0, 1);
        net.cut = true;
        net.send(0, 1, 42);
        run(&mut net, 4, |_, _| {});
        assert_eq!(net.handshakes, 1, "not retried before REKEY_TIMEOUT (5 s)");
        run(&mut net, 2, |_, _| {});
        assert_eq!(net.handshakes, 2, "retried once 5 s passed");
        net.cut = false;
        run(&mut net, 6, |_, _| {});
        assert_eq!(net.nodes[1].tun, [42]);
    }

    #[test]
    fn persistent_keepalive_speaks_for_a_quiet_peer() {
        let mut net = Net::new(2);
        net.nodes[0].engine.set_peer(&net.spec(1, Some(25)));
        let at = net.nodes[1].at;
        net.nodes[0]
            .engine
            .set_endpoint(&net.spec(1, None).public_key, at);
        net.nodes[1].engine.set_peer(&net.spec(0, None));
        net.send(0, 1, 0);
        run(&mut net, 60, |_, _| {});
        assert!(
            net.keepalives[0] >= 2,
            "a keepalive at least every 25 s: {}",
            net.keepalives[0]
        );
        assert_eq!(net.nodes[1].tun, [0], "keepalives carry nothing to the TUN");
    }
}
