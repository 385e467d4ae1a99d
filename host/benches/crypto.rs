//! How close the data plane's per-packet work comes to the machine's ChaCha20-Poly1305:
//! 1420-byte packets sealed and opened in process by the device loop's own per-packet path
//! (`dataplane::engine`: route by destination, looked up once per run of packets to one
//! destination as the loop does, the peer's lock, boringtun's `Tunn`, the
//! session index lookup and the source filter on the way in), into buffers of the loop's
//! batch size, against `openssl speed -evp chacha20-poly1305 -bytes 1420` measured in the
//! same run. Each packet costs two AEAD operations here and one in openssl's figure.
//!
//! Two figures for weft:
//! - *one thread*: each packet sealed and then opened on one thread. Two AEAD operations per
//!   packet against openssl's one, so its ratio of packet bytes is at most ~0.5 however fast
//!   the path; the ratio per AEAD operation is printed beside it.
//! - *two stages*: the way a device runs them: its outbound task seals (one thread) and the
//!   receiving device's inbound task opens (another thread), batches of the loop's size
//!   handed from one to the other through a bounded queue, buffers reused. This is what the
//!   data plane carries through both ends of a tunnel on this machine's cores, and the
//!   headline ratio (the "encrypt + decrypt through the device loop").
//!
//! `cargo bench -p weft --bench crypto` (needs openssl on the PATH; without it only weft's
//! figure is printed). `WEFT_BENCH_QUICK=1`: a short run.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use weft::agent_api::{PeerSpec, PublicKey};
use weft::dataplane::engine::{Engine, LastRoute, PACKET};
use weft::dataplane::keys::KeyPair;

const SIZE: usize = 1420;
const A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 51820);
const B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 51820);

/// `engine`'s peer `other` at `at`, sending from 10.0.0.`n`.
fn peer(engine: &Engine, other: &KeyPair, n: u8, at: SocketAddr) {
    let key = PublicKey(*other.public.as_bytes());
    engine.set_peer(&PeerSpec {
        public_key: key,
        allowed_ips: vec![format!("10.0.0.{n}/32").parse().expect("net")],
        persistent_keepalive: None,
    });
    engine.set_endpoint(&key, at);
}

/// Two engines with a session between them, as two agents have after a handshake.
fn pair() -> (Engine, Engine) {
    let (ka, kb) = (
        KeyPair::from_private([7; 32]),
        KeyPair::from_private([9; 32]),
    );
    let (a, b) = (Engine::new("a", ka.clone()), Engine::new("b", kb.clone()));
    peer(&a, &kb, 2, B);
    peer(&b, &ka, 1, A);
    let (mut x, mut y, mut scratch) = (vec![0u8; PACKET], vec![0u8; PACKET], vec![0u8; PACKET]);
    // The first packet starts the handshake; the answers go back and forth until quiet.
    let (len, _) = a.seal(&packet(), &mut x).expect("handshake initiation");
    let mut wire = vec![(B, x[..len].to_vec())];
    while let Some((to, datagram)) = wire.pop() {
        let (engine, from) = if to == B { (&b, A) } else { (&a, B) };
        let mut answers = Vec::new();
        engine.open(from, &datagram, &mut scratch, &mut y, |d| {
            answers.push(d.to_vec())
        });
        wire.extend(answers.into_iter().map(|d| (from, d)));
    }
    (a, b)
}

/// An IPv4 packet of `SIZE` bytes from 10.0.0.1 to 10.0.0.2.
fn packet() -> Vec<u8> {
    let mut p = vec![0xabu8; SIZE];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(SIZE as u16).to_be_bytes());
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p
}

/// Packet bytes per second sealed by one engine and opened by the other, for `for_how_long`.
fn weft(for_how_long: Duration) -> f64 {
    let (a, b) = pair();
    let ip = packet();
    // As the loop holds them: one contiguous batch buffer, one TUN buffer per packet.
    let mut batch = vec![0u8; 128 * PACKET];
    let (mut tun, mut scratch) = (vec![0u8; PACKET], vec![0u8; PACKET]);
    let started = Instant::now();
    let mut packets = 0u64;
    while started.elapsed() < for_how_long {
        let mut route = LastRoute::default();
        for slot in 0..64 {
            let at = slot * PACKET;
            let (len, _) = a
                .seal_routed(&mut route, &ip, &mut batch[at..])
                .expect("sealed");
            let opened = b.open(A, &batch[at..at + len], &mut scratch, &mut tun, |_| {});
            assert_eq!(opened, Some(SIZE), "opened");
        }
        packets += 64;
    }
    packets as f64 * SIZE as f64 / started.elapsed().as_secs_f64()
}

/// Packet bytes per second through two stages on two threads, as a device's outbound task
/// and its peer's inbound task run: one thread seals batches of 64 packets, the other opens
/// them. Batches travel through a bounded queue and their buffers come back for reuse.
fn weft_two_stages(for_how_long: Duration) -> f64 {
    const BATCH: usize = 64;
    const IN_FLIGHT: usize = 4;
    let (a, b) = pair();
    let ip = packet();
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<usize>)>(IN_FLIGHT);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, Vec<usize>)>(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        empty_tx
            .send((vec![0u8; BATCH * PACKET], Vec::with_capacity(BATCH)))
            .expect("queue");
    }
    let started = Instant::now();
    let opened = std::thread::scope(|scope| {
        scope.spawn(move || {
            while started.elapsed() < for_how_long {
                let Ok((mut buf, mut lens)) = empty_rx.recv() else {
                    return;
                };
                lens.clear();
                // One route for the batch, as the device loop keeps it.
                let mut route = LastRoute::default();
                for slot in 0..BATCH {
                    let (len, _) = a
                        .seal_routed(&mut route, &ip, &mut buf[slot * PACKET..])
                        .expect("sealed");
                    lens.push(len);
                }
                if full_tx.send((buf, lens)).is_err() {
                    return;
                }
            }
            // Dropping `full_tx` ends the opening thread once it has drained the queue.
        });
        let opener = scope.spawn(move || {
            let (mut tun, mut scratch) = (vec![0u8; PACKET], vec![0u8; PACKET]);
            let mut packets = 0u64;
            while let Ok((buf, lens)) = full_rx.recv() {
                for (slot, &len) in lens.iter().enumerate() {
                    let at = slot * PACKET;
                    let got = b.open(A, &buf[at..at + len], &mut scratch, &mut tun, |_| {});
                    assert_eq!(got, Some(SIZE), "opened");
                }
                packets += lens.len() as u64;
                // The sealing thread may have stopped: then the buffer is not needed.
                let _ = empty_tx.send((buf, lens));
            }
            packets
        });
        opener.join().expect("opening thread")
    });
    opened as f64 * SIZE as f64 / started.elapsed().as_secs_f64()
}

/// openssl's ChaCha20-Poly1305 bytes per second at 1420 bytes, if openssl is here.
fn openssl(seconds: u32) -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "chacha20-poly1305",
            "-bytes",
            "1420",
            "-seconds",
        ])
        .arg(seconds.to_string())
        .output()
        .ok()?;
    // The last line: "ChaCha20-Poly1305  2056494.66k" (thousands of bytes per second).
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last()?;
    let k = last.split_whitespace().last()?.strip_suffix('k')?;
    Some(k.parse::<f64>().ok()? * 1000.0)
}

fn main() {
    let (rounds, secs) = if common::quick() { (1, 1) } else { (5, 3) };
    let (mut ours, mut staged, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let secs_d = Duration::from_secs(u64::from(secs));
    for _ in 0..rounds {
        ours.push(weft(secs_d));
        staged.push(weft_two_stages(secs_d));
        if let Some(o) = openssl(secs) {
            theirs.push(o);
        }
    }
    ours.sort_by(f64::total_cmp);
    staged.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "1420-byte packets, encrypt + decrypt in process, {rounds} rounds of {secs} s, interleaved with openssl:"
    );
    println!(
        "  weft, one thread (seal, then open)    median {:.3} GB/s   min {:.3} GB/s",
        median(&ours) / 1e9,
        ours[0] / 1e9
    );
    println!(
        "  weft, two stages (seal | open)        median {:.3} GB/s   min {:.3} GB/s",
        median(&staged) / 1e9,
        staged[0] / 1e9
    );
    if theirs.is_empty() {
        println!("  openssl: not found, no ratio");
        return;
    }
    println!(
        "  openssl speed chacha20-poly1305       median {:.3} GB/s   min {:.3} GB/s",
        median(&theirs) / 1e9,
        theirs[0] / 1e9
    );
    let ratio = median(&ours) / median(&theirs);
    println!(
        "  one thread: weft ÷ openssl = {ratio:.2} packet bytes; {:.2} per AEAD operation (two per weft packet, one per openssl byte)",
        2.0 * ratio
    );
    println!(
        "  two stages: weft ÷ openssl = {:.2} packet bytes (min ÷ min {:.2}); goal ≥ 0.6",
        median(&staged) / median(&theirs),
        staged[0] / theirs[0]
    );
}
