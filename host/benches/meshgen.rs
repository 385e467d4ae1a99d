//! Mesh configuration generation (`mesh::config::generate`): a 1,000-node full mesh and a
//! 1,000-node hub-and-spoke mesh with 3 hubs — time per generation and the peak heap it
//! takes (a counting allocator) — against the baseline, in the same run, of serializing the
//! result to JSON (what sending every member its configuration costs at the least).
//!
//! Run: `cargo bench -p weft --bench meshgen` (goal: < 1 s each).
//! `WEFT_BENCH_QUICK=1` (or `cargo test --benches`) uses 100 nodes, as a smoke test.

mod common;
use common::{pct, quick, times};
use ipnet::IpNet;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use weft::agent_api::PublicKey;
use weft::mesh::Topology;
use weft::mesh::config::{Member, MeshParams, generate};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The heap `f` takes at its peak, above what was live before, and its result.
fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (PEAK.load(Ordering::Relaxed) - base, out)
}

struct Nodes {
    names: Vec<String>,
    hosts: Vec<String>,
    lans: Vec<Vec<IpNet>>,
}

fn nodes(n: usize) -> Nodes {
    Nodes {
        names: (0..n).map(|i| format!("node-{i:04}")).collect(),
        hosts: (0..n)
            .map(|i| format!("198.51.{}.{}", i / 250, i % 250 + 1))
            .collect(),
        lans: (0..n)
            .map(|i| {
                vec![
                    format!("10.{}.{}.0/24", 100 + i / 256, i % 256)
                        .parse()
                        .unwrap(),
                ]
            })
            .collect(),
    }
}

fn members(n: &Nodes, hubs: usize) -> Vec<Member<'_>> {
    (0..n.names.len())
        .map(|i| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Member {
                node: &n.names[i],
                public_key: PublicKey(key),
                overlay: IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i as u32 + 2)),
                endpoint_host: &n.hosts[i],
                lan: &n.lans[i],
                hub: i < hubs,
            }
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let n = if quick() { 100 } else { 1_000 };
    let rounds = if quick() { 3 } else { 10 };
    let fleet = nodes(n);
    println!("mesh configuration generation, {n} nodes ({rounds} rounds each):");
    for (label, topology, hubs) in [
        ("full mesh", Topology::FullMesh, 0),
        ("hub-and-spoke, 3 hubs", Topology::HubAndSpoke, 3),
    ] {
        let params = MeshParams {
            id: "0123456789abcdef",
            topology,
            listen_port: 51821,
            keepalive: 25,
            mtu: 1420,
            generation: 1,
        };
        let input = members(&fleet, hubs);
        let (peak, configs) = peak_of(|| generate(&params, &input));
        let peers: usize = configs.iter().map(|c| c.peers.len()).sum();
        let prefixes: usize = configs
            .iter()
            .flat_map(|c| &c.peers)
            .map(|p| p.allowed_ips.len())
            .sum();
        let gen_t = times(rounds, || {
            std::hint::black_box(generate(&params, &input));
        });
        let json_t = times(rounds, || {
            std::hint::black_box(serde_json::to_vec(&configs).map(|v| v.len()).unwrap_or(0));
        });
        let json_len = serde_json::to_vec(&configs).map(|v| v.len()).unwrap_or(0);
        let (g, j) = (pct(&gen_t, 0.5), pct(&json_t, 0.5));
        println!("  {label}: {peers} peer entries, {prefixes} allowed IPs");
        println!(
            "    generate        median {:>8.1} ms   max {:>8.1} ms   peak heap {:>6.1} MiB",
            ms(g),
            ms(pct(&gen_t, 1.0)),
            peak as f64 / (1 << 20) as f64
        );
        println!(
            "    baseline: JSON  median {:>8.1} ms   ({:.1} MiB of JSON)",
            ms(j),
            json_len as f64 / (1 << 20) as f64
        );
        println!(
            "    generate ÷ JSON = {:.2}",
            g.as_secs_f64() / j.as_secs_f64()
        );
    }
}
