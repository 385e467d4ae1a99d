//! How close the data plane's per-packet work comes to the machine's ChaCha20-Poly1305:
//! 1420-byte packets encrypted and decrypted in process by boringtun's `Tunn` the way the
//! device loop drives it (encapsulate into a batch buffer, decapsulate into a TUN buffer of
//! the batch size), against `openssl speed -evp chacha20-poly1305 -bytes 1420` measured in
//! the same run. Each packet costs two AEAD operations here and one in openssl's figure, so
//! the ratio (packet bytes through both ÷ openssl's bytes) understates weft by half.
//!
//! `cargo bench -p weft --bench crypto` (needs openssl on the PATH; without it only weft's
//! figure is printed). `WEFT_BENCH_QUICK=1`: a short run.

mod common;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::time::{Duration, Instant};

const SIZE: usize = 1420;

/// A pair of peers with an established session.
fn pair() -> (Tunn, Tunn) {
    let (ka, kb) = (StaticSecret::from([7u8; 32]), StaticSecret::from([9u8; 32]));
    let mut a = Tunn::new(ka.clone(), PublicKey::from(&kb), None, None, 1, None);
    let mut b = Tunn::new(kb, PublicKey::from(&ka), None, None, 2, None);
    let (mut x, mut y) = (vec![0u8; 2048], vec![0u8; 2048]);
    let init = match a.format_handshake_initiation(&mut x, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("no handshake initiation: {other:?}"),
    };
    let response = match b.decapsulate(None, &init, &mut y) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("no handshake response: {other:?}"),
    };
    let keepalive = match a.decapsulate(None, &response, &mut x) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("no keepalive: {other:?}"),
    };
    let _ = b.decapsulate(None, &keepalive, &mut y);
    (a, b)
}

/// An IPv4 packet of `SIZE` bytes from 10.0.0.1.
fn packet() -> Vec<u8> {
    let mut p = vec![0xabu8; SIZE];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(SIZE as u16).to_be_bytes());
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p
}

/// Packet bytes per second through encrypt and decrypt, for `for_how_long`.
fn weft(for_how_long: Duration) -> f64 {
    let (mut a, mut b) = pair();
    let ip = packet();
    // As the loop holds them: one contiguous batch buffer, one TUN buffer per packet.
    let mut batch = vec![0u8; 128 * 2048];
    let mut tun = vec![0u8; 10 + 2048];
    let started = Instant::now();
    let mut packets = 0u64;
    while started.elapsed() < for_how_long {
        for slot in 0..64 {
            let at = slot * 2048;
            let len = match a.encapsulate(&ip, &mut batch[at..]) {
                TunnResult::WriteToNetwork(p) => p.len(),
                other => panic!("not encrypted: {other:?}"),
            };
            match b.decapsulate(None, &batch[at..at + len], &mut tun[10..]) {
                TunnResult::WriteToTunnelV4(p, _) => assert_eq!(p.len(), SIZE),
                other => panic!("not decrypted: {other:?}"),
            }
        }
        packets += 64;
    }
    packets as f64 * SIZE as f64 / started.elapsed().as_secs_f64()
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
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.push(weft(Duration::from_secs(u64::from(secs))));
        if let Some(o) = openssl(secs) {
            theirs.push(o);
        }
    }
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "1420-byte packets, encrypt + decrypt in process, {rounds} rounds of {secs} s, interleaved with openssl:"
    );
    println!(
        "  weft (boringtun Tunn, loop buffers)   median {:.3} GB/s   min {:.3} GB/s",
        median(&ours) / 1e9,
        ours[0] / 1e9
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
    println!(
        "  weft ÷ openssl = {:.2} (two AEAD operations per weft packet, one per openssl byte)",
        median(&ours) / median(&theirs)
    );
}
