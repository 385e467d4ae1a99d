//! Where a weft mesh's data plane stands: iperf3 TCP (one stream each way, and four streams)
//! and ping round trips between two network namespaces over (1) the bare veth between them (the ceiling),
//! (2) wireguard-go from Debian, and (3) a two-node weft mesh — two real `weft agent`
//! processes given their configuration by `mesh::config::generate` through the signed
//! `PUT /v1/meshes/{id}`, exactly as the controller applies it. The three are interleaved,
//! several rounds each, in one run; min and median are quoted, and the ratios weft ÷
//! wireguard-go and weft ÷ veth; and what weft carries per CPU-second its two agents spent
//! (/proc/<pid>/stat), encrypting and decrypting sides together.
//!
//! Run as root: `cargo bench -p weft --bench meshplane` (needs ip, iperf3, wireguard-go, wg,
//! ping; skips, saying why, elsewhere). `WEFT_BENCH_QUICK=1` (or `cargo test --benches`):
//! one round of 1 s each.

mod common;
#[path = "../../tests/e2e/netns.rs"]
#[allow(dead_code)]
mod netns;
#[path = "../../tests/e2e/pair.rs"]
mod pair;

use netns::{Netns, cannot_run, link};
use std::path::Path;
use std::time::{Duration, Instant};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn stdout(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// iperf3 from `a` to `server` for `secs` with `extra` arguments: received bits per second.
fn iperf(a: &Netns, server: &str, secs: u32, extra: &[&str]) -> f64 {
    let secs = secs.to_string();
    let mut args = vec!["iperf3", "-c", server, "-t", &secs, "-J"];
    args.extend_from_slice(extra);
    let out = a.try_exec(&args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64();
    if bps.is_none() {
        // Counted as 0 (it shows as the min), and said why.
        eprintln!(
            "iperf3 to {server} {extra:?} failed: {}{}",
            v["error"].as_str().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bps.unwrap_or(0.0)
}

/// CPU seconds (user and system) processes `pids` have used.
fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf reads a constant.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // After the command name (in parentheses, which may hold spaces): state is
            // field 3, utime 14 and stime 15.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (ticks(11) + ticks(12)) / tick
        })
        .sum()
}

/// How far apart pings go: 10 ms leaves every CPU idle between them, so each thread a
/// packet must wake pays the wake-up from idle; 0.2 ms keeps them awake, which leaves the
/// path's own work.
const PING_GAPS: [(&str, &str); 2] = [("10 ms apart", "0.01"), ("0.2 ms apart", "0.0002")];

/// The median round trip of 100 pings `gap` seconds apart, in microseconds.
fn rtt(a: &Netns, ip: &str, gap: &str) -> f64 {
    let out = a.try_exec(&["ping", "-c", "100", "-i", gap, "-W", "1", ip]);
    let mut times: Vec<f64> = stdout(out)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Two wireguard-go interfaces, one per namespace, over the veth. Their names differ: the
/// UAPI sockets of both live in the one /var/run/wireguard.
fn wireguard_go(a: &Netns, b: &Netns, ifaces: &[String; 2], dir: &Path) {
    let keys: Vec<(String, String)> = (0..2)
        .map(|_| {
            let private = stdout(
                std::process::Command::new("wg")
                    .arg("genkey")
                    .output()
                    .expect("wg genkey"),
            );
            let mut pubkey = std::process::Command::new("wg")
                .arg("pubkey")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("wg pubkey");
            use std::io::Write;
            pubkey
                .stdin
                .take()
                .expect("stdin")
                .write_all(private.as_bytes())
                .expect("write");
            let public = stdout(pubkey.wait_with_output().expect("wg pubkey"));
            (private.trim().to_string(), public.trim().to_string())
        })
        .collect();
    for (i, ns) in [a, b].into_iter().enumerate() {
        let iface = ifaces[i].as_str();
        let key_file = dir.join(format!("wg{i}.key"));
        std::fs::write(&key_file, &keys[i].0).expect("key file");
        ns.exec(&[
            "env",
            "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1",
            "wireguard-go",
            iface,
        ]);
        let other = 1 - i;
        ns.exec(&[
            "wg",
            "set",
            iface,
            "listen-port",
            "51900",
            "private-key",
            key_file.to_str().expect("path"),
            "peer",
            &keys[other].1,
            "allowed-ips",
            &format!("10.251.0.{}/32", other + 1),
            "endpoint",
            &format!("10.250.0.{}:51900", other + 1),
        ]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.251.0.{}/24", i + 1),
            "dev",
            iface,
        ]);
        ns.exec(&["ip", "link", "set", iface, "mtu", "1420", "up"]);
    }
}

fn summary(label: &str, v: &mut [f64], unit: f64, unit_name: &str) -> f64 {
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    println!(
        "  {label:<28} min {:>8.3} {unit_name}   median {:>8.3} {unit_name}",
        v[0] / unit,
        median / unit
    );
    median
}

fn main() {
    if let Some(why) = cannot_run() {
        println!("meshplane: skipped: {why}");
        return;
    }
    if std::process::Command::new("iperf3")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("meshplane: skipped: needs iperf3 (apt-get install iperf3)");
        return;
    }
    let (rounds, secs) = if common::quick() { (1, 1) } else { (5, 5) };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = Netns::new("ba");
    let mut b = Netns::new("bb");
    link(Some(&a), "10.250.0.1/30", &b, "10.250.0.2/30");
    let wg_ifaces = ["a", "b"].map(|s| format!("wg{s}{}", std::process::id() % 100_000));
    let _sockets = Sockets(&wg_ifaces);
    wireguard_go(&a, &b, &wg_ifaces, dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let agents = rt.block_on(pair::weft_mesh(
        WEFT,
        [&mut a, &mut b],
        dir.path(),
        &pair::Subnets {
            control: 248,
            underlay: 250,
            overlay: 252,
        },
        &[],
    ));
    b.spawn(&["iperf3", "-s"], &[], &dir.path().join("iperf3.log"));
    std::thread::sleep(Duration::from_millis(300));
    // Warm up every path (handshakes).
    for ip in ["10.250.0.2", "10.251.0.2", "10.252.0.2"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !a
            .try_exec(&["ping", "-c", "1", "-W", "1", ip])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "no path to {ip}");
        }
    }
    let paths = [
        ("veth", "10.250.0.2"),
        ("wireguard-go", "10.251.0.2"),
        ("weft mesh", "10.252.0.2"),
    ];
    let modes: [(&str, &[&str]); 3] = [
        ("one stream A → B", &[]),
        ("one stream B → A", &["-R"]),
        ("four streams A → B", &["-P", "4"]),
    ];
    let mut bps = vec![vec![Vec::new(); paths.len()]; modes.len()];
    let mut rtts = vec![vec![Vec::new(); paths.len()]; PING_GAPS.len()];
    let (mut weft_bits, mut weft_cpu) = (0.0, 0.0);
    for r in 0..rounds {
        for (m, (_, extra)) in modes.iter().enumerate() {
            for (i, (_, ip)) in paths.iter().enumerate() {
                let cpu_before = cpu_seconds(&agents);
                let v = iperf(&a, ip, secs, extra);
                if i == 2 {
                    weft_cpu += cpu_seconds(&agents) - cpu_before;
                    weft_bits += v * f64::from(secs);
                }
                bps[m][i].push(v);
            }
        }
        for (g, (_, gap)) in PING_GAPS.iter().enumerate() {
            for (i, (_, ip)) in paths.iter().enumerate() {
                rtts[g][i].push(rtt(&a, ip, gap));
            }
        }
        eprintln!("round {} of {rounds} done", r + 1);
    }
    println!(
        "data plane between two namespaces, iperf3 TCP, {rounds} rounds of {secs} s, interleaved:"
    );
    for (m, (mode, _)) in modes.iter().enumerate() {
        println!(" {mode}:");
        let mut med = Vec::new();
        for (i, (label, _)) in paths.iter().enumerate() {
            med.push(summary(label, &mut bps[m][i], 1e9, "Gbit/s"));
        }
        println!(
            "  weft ÷ wireguard-go = {:.2}   weft ÷ veth = {:.3}",
            med[2] / med[1],
            med[2] / med[0]
        );
    }
    println!(
        " weft carried {:.2} Gbit per CPU-second of its two agents (both sides together, all modes)",
        weft_bits / 1e9 / weft_cpu.max(1e-9)
    );
    for (g, (gap, _)) in PING_GAPS.iter().enumerate() {
        println!("ping round trip, pings {gap} (median of 100, per round):");
        let mut rt_med = Vec::new();
        for (i, (label, _)) in paths.iter().enumerate() {
            rt_med.push(summary(label, &mut rtts[g][i], 1.0, "µs"));
        }
        println!(
            "  added over veth: wireguard-go {:.0} µs, weft {:.0} µs",
            rt_med[1] - rt_med[0],
            rt_med[2] - rt_med[0]
        );
    }
}

/// Removes wireguard-go's UAPI sockets when the bench ends, however it ends.
struct Sockets<'a>(&'a [String; 2]);

impl Drop for Sockets<'_> {
    fn drop(&mut self) {
        for name in self.0 {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        }
    }
}
