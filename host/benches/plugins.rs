//! Plugins through weft's host against native code, all measured in one run so the ratios
//! hold on a noisy machine.
//!
//! Run (the plugins are built first, as the README's test command does):
//!   cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
//!   cargo build --release --target wasm32-wasip2 --manifest-path tests/plugins/Cargo.toml
//!   cargo bench -p weft --bench plugins
//!
//! `WEFT_BENCH_QUICK=1` (and `cargo test --benches`, which runs without `--bench`) does a
//! few iterations of each, as a smoke test.
//!
//! 1. `select` over 1,000 candidates: the `least-loaded` plugin through the host (fresh store
//!    and instance per call) against the built-in `placement::least_loaded`. Goals: plugin
//!    ≤ 5× native, ≤ 100 µs per call. Apart: weft's conversion of its candidates into the
//!    contract's form (`WitCall::new`), and `placement::choose` doing both.
//! 2. A fresh instance per call of a real plugin (`least-loaded`, one candidate): p99, and
//!    calls per second against one instance reused for every call. Goals: p99 ≤ 10 µs,
//!    fresh ≥ 0.9× reused.
//! 3. A compute-bound plugin (`compute`, epoch interruption on as always; fresh store per
//!    call): wasm ÷ native of the same function. Goal ≤ 1.5.
//! 4. Loading 10 plugins (10 distinct components) with an empty compile cache and with a warm
//!    one.
//! 5. A ping sweep of 1,024 addresses on loopback (127.0.0.0/22): the built-in ICMP echo
//!    batch against the `tcp-ping` plugin through the host (one port, where nothing listens:
//!    a refused connect is an answer), each the median of several runs; apart, the same TCP
//!    connects without the plugin, and `ping::sweep` in all (store read and write included).
//!    Needs an ICMP socket (root, CAP_NET_RAW or net.ipv4.ping_group_range).
//!
//! `cargo bench -p weft --bench plugins -- ping` runs section 5 alone; any other word, 1 to 4.

mod common;
use common::{pct, quick, report, times, us};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft::placement::{self, Candidate, Health, Request, Strategy, WitCall};
use weft::plugins::call::{self, PluginInfo};
use weft::plugins::probe_host::ProbeReach;
use weft::plugins::runtime::{Prepared, Runtime};
use weft::plugins::{Manifest, PluginHost};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn component(name: &str) -> Vec<u8> {
    let path = target_dir().join(format!("wasm32-wasip2/release/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first (see the top of this file)",
            path.display()
        )
    })
}

/// The `compute` plugin's function, natively. A copy of tests/plugins/compute/src/lib.rs:
/// the comparison is only fair while the two are the same code.
fn work(rounds: u64) -> u64 {
    let mut table = [0u64; 512];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rounds {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let slot = (x % 512) as usize;
        table[slot] = table[slot].wrapping_add(x.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i);
        if table[slot] & 1 == 0 {
            x = x.rotate_left(7);
        }
    }
    table.iter().fold(0, |a, b| a ^ b)
}

fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            id: format!("node-{i:04}"),
            name: format!("node-{i:04}"),
            labels: vec![("region".into(), ["eu", "us", "ap"][i % 3].into())],
            region: Some(["eu", "us", "ap"][i % 3].into()),
            active_peers: ((i * 7919) % 97) as u32,
            max_peers: 100,
            weight: 1 + (i % 4) as u32,
            health: Health::Healthy,
            peers_with_handshake: ((i * 7919) % 97) as u32,
            newest_handshake_secs: Some(3),
            oldest_handshake_secs: Some(120),
        })
        .collect()
}

/// A plugins folder in a temp dir.
fn install(root: &Path, name: &str, wasm: &[u8], extra: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::write(
        dir.join("plugin.toml"),
        format!("name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\n{extra}"),
    )
    .expect("manifest");
    std::fs::write(dir.join(format!("{name}.wasm")), wasm).expect("component");
}

/// The same component with a custom section that makes its bytes (and cache key) unique.
fn distinct(wasm: &[u8], tag: u8) -> Vec<u8> {
    let name = b"weft-bench";
    let payload = [tag; 8];
    let size = 1 + name.len() + payload.len();
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    out.push(size as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// The word after `--`, if any: `ping` (or a part of it) picks section 5 alone.
fn filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with('-'))
}

fn main() {
    let only = filter();
    let ping = only.as_deref().map(|f| "ping sweep".contains(f));
    if ping != Some(true) {
        placement_sections();
    }
    if ping != Some(false) {
        ping_sweep();
    }
}

fn placement_sections() {
    let quick = quick();
    let n = if quick { 50 } else { 20_000 };
    let tmp = tempfile::tempdir().expect("temp dir");
    let plugins = tmp.path().join("plugins");
    let least_loaded = component("least_loaded");
    install(&plugins, "least-loaded", &least_loaded, "");
    let host = PluginHost::new(vec![plugins.clone()], Some(tmp.path().join("cache")))
        .expect("plugin host");
    let request = Request {
        peer_name: "laptop".into(),
        labels: vec![("region".into(), "eu".into())],
    };

    println!("1. select over 1,000 candidates");
    let native_nodes = candidates(1000);
    // The call in the contract's form, built once: what crosses into the plugin is measured
    // apart from weft's own conversion (the line after).
    let big = WitCall::new(&request, &native_nodes).expect("convert");
    let native_choice = placement::least_loaded(&native_nodes).map(|c| c.id.clone());
    let plugin_choice = host
        .select("least-loaded", &big.request, &big.labels, &big.candidates)
        .expect("select")
        .map(|id| native_nodes[id as usize].id.clone());
    assert_eq!(native_choice, plugin_choice, "plugin and built-in disagree");
    let native = times(n, || {
        std::hint::black_box(placement::least_loaded(std::hint::black_box(&native_nodes)));
    });
    let plugin = times(n, || {
        std::hint::black_box(
            host.select("least-loaded", &big.request, &big.labels, &big.candidates)
                .ok(),
        );
    });
    let convert = times(n, || {
        std::hint::black_box(WitCall::new(&request, std::hint::black_box(&native_nodes)).ok());
    });
    let strategy = Strategy::Plugin("least-loaded".into());
    let end_to_end = times(n, || {
        std::hint::black_box(placement::choose(
            &strategy,
            Some(&host),
            &request,
            &native_nodes,
        ));
    });
    report("built-in least_loaded", &native);
    report("least-loaded plugin (fresh store per call)", &plugin);
    report("WitCall::new (labels to bits, sort by name)", &convert);
    report("placement::choose with the plugin, in all", &end_to_end);
    println!(
        "  plugin ÷ native (median): {:.2}   (goal ≤ 5, and ≤ 100 µs per call); in all: {:.2}",
        pct(&plugin, 0.5).as_secs_f64() / pct(&native, 0.5).as_secs_f64(),
        pct(&end_to_end, 0.5).as_secs_f64() / pct(&native, 0.5).as_secs_f64()
    );

    println!("2. fresh instance per call against a reused instance (least-loaded, 1 candidate)");
    let one = WitCall::new(&request, &native_nodes[..1]).expect("convert");
    let fresh = times(n, || {
        std::hint::black_box(
            host.select("least-loaded", &one.request, &one.labels, &one.candidates)
                .ok(),
        );
    });
    let runtime = Runtime::new(None).expect("runtime");
    let manifest = Manifest::parse(
        "name = \"least-loaded\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\n",
    )
    .expect("manifest");
    let (compiled, _) = runtime.compile(&least_loaded).expect("compile");
    let Ok(Prepared::NodeSelector(pre)) = runtime.prepare(&compiled, manifest.world) else {
        panic!("least-loaded does not prepare as a node-selector");
    };
    let info = std::sync::Arc::new(PluginInfo {
        name: manifest.name.clone(),
        world: manifest.world,
        config: manifest.config.clone(),
        permissions: manifest.permissions.clone(),
    });
    let mut store = call::store(runtime.engine(), &info, call::Reach::Nothing);
    let selector = pre.instantiate(&mut store).expect("instantiate");
    let deadline = Runtime::deadline_ticks(info.permissions.time_limit);
    let reused = times(n, || {
        store.set_epoch_deadline(deadline);
        let answer = selector.select(&mut store, &one.request, &one.labels, &one.candidates);
        std::hint::black_box(answer.ok());
    });
    // What the 1,000 candidates cost to pass in, without instantiation.
    let reused_big = times((n / 10).max(5), || {
        store.set_epoch_deadline(deadline);
        let answer = selector.select(&mut store, &big.request, &big.labels, &big.candidates);
        std::hint::black_box(answer.ok());
    });
    report("fresh store and instance per call", &fresh);
    report("one instance reused", &reused);
    report("one instance reused, 1,000 candidates", &reused_big);
    let rate = |t: &[Duration]| t.len() as f64 / t.iter().sum::<Duration>().as_secs_f64();
    println!(
        "  fresh p99 {:.2} µs (goal ≤ 10); throughput fresh ÷ reused: {:.2} (goal ≥ 0.9)",
        us(pct(&fresh, 0.99)),
        rate(&fresh) / rate(&reused)
    );

    println!("3. compute-bound: wasm ÷ native");
    let rounds: u64 = if quick { 10_000 } else { 20_000_000 };
    let runs = if quick { 3 } else { 15 };
    let native = times(runs, || {
        std::hint::black_box(work(std::hint::black_box(rounds)));
    });
    let expected = work(rounds);
    // Through the same fresh-store path as `PluginHost::select`, but unchecked: the plugin's
    // answer is the result of its work, not a candidate.
    let compute = Manifest::parse(&format!(
        "name = \"compute\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\n[config]\nrounds = {rounds}\n[permissions]\ntime_limit_ms = 60000\n"
    ))
    .expect("manifest");
    let compute_info = std::sync::Arc::new(PluginInfo {
        name: compute.name.clone(),
        world: compute.world,
        config: compute.config.clone(),
        permissions: compute.permissions.clone(),
    });
    let (compiled, _) = runtime.compile(&component("compute")).expect("compile");
    let Ok(Prepared::NodeSelector(compute_pre)) = runtime.prepare(&compiled, compute.world) else {
        panic!("compute does not prepare as a node-selector");
    };
    let mut answer = None;
    let wasm = times(runs, || {
        let mut store = call::store(runtime.engine(), &compute_info, call::Reach::Nothing);
        answer = compute_pre
            .instantiate(&mut store)
            .expect("instantiate")
            .select(&mut store, &one.request, &one.labels, &one.candidates)
            .expect("call")
            .expect("answer");
    });
    assert_eq!(answer, Some(expected), "wasm and native compute differ");
    report(&format!("native work({rounds})"), &native);
    report(&format!("compute plugin work({rounds})"), &wasm);
    println!(
        "  wasm ÷ native (median): {:.2}   (goal ≤ 1.5)",
        pct(&wasm, 0.5).as_secs_f64() / pct(&native, 0.5).as_secs_f64()
    );

    println!("4. loading 10 plugins");
    let ten = tmp.path().join("ten");
    for i in 0..10u8 {
        install(&ten, &format!("p{i}"), &distinct(&least_loaded, i), "");
    }
    let cache = tmp.path().join("ten-cache");
    let t = Instant::now();
    let cold = PluginHost::new(vec![ten.clone()], Some(cache.clone())).expect("cold load");
    let cold_time = t.elapsed();
    assert_eq!(cold.list().len(), 10);
    drop(cold);
    let t = Instant::now();
    let warm = PluginHost::new(vec![ten], Some(cache)).expect("warm load");
    let warm_time = t.elapsed();
    assert!(
        warm.list()
            .iter()
            .all(|s| s.state == weft::plugins::State::Loaded)
    );
    println!(
        "  empty cache {:.1} ms, warm cache {:.1} ms (cold ÷ warm {:.1})",
        cold_time.as_secs_f64() * 1e3,
        warm_time.as_secs_f64() * 1e3,
        cold_time.as_secs_f64() / warm_time.as_secs_f64()
    );
}

/// The median of `runs` timed runs of `f`, after one untimed run.
fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let t = times(runs, f);
    pct(&t, 0.5)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ping_sweep() {
    use std::net::{IpAddr, Ipv4Addr};
    use weft::ping::{self, Checker};
    use weft::store::{AllocationRequest, PoolSpec, Store};

    println!("5. ping sweep of 1,024 addresses on loopback (127.0.0.0/22)");
    let runs = if quick() { 3 } else { 51 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pool: ipnet::IpNet = "127.0.0.0/22".parse().expect("cidr");
    let addrs: Vec<IpAddr> = (0..1024u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | i)))
        .collect();
    if let Err(e) = rt.block_on(weft::probe::icmp_echo_batch(
        &addrs[..1],
        ping::BUILTIN_TIMEOUT,
    )) {
        println!("  skipped: {e}");
        return;
    }
    // A port where nothing listens on any loopback address: every connect is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let tmp = tempfile::tempdir().expect("temp dir");
    let plugins = tmp.path().join("plugins");
    let dir = plugins.join("tcp-ping");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::write(
        dir.join("plugin.toml"),
        format!(
            "name = \"tcp-ping\"\nversion = \"0.1.0\"\nworld = \"ping-check\"\n[config]\nports = \"{port}\"\ntimeout_ms = 1000\n[permissions]\nprobe_ports = [{port}]\n"
        ),
    )
    .expect("manifest");
    std::fs::write(dir.join("tcp_ping.wasm"), component("tcp_ping")).expect("component");
    let host = std::sync::Arc::new(
        PluginHost::new(vec![plugins], Some(tmp.path().join("cache"))).expect("plugin host"),
    );
    let targets: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let reach = || ProbeReach {
        pools: vec![pool],
        runtime: rt.handle().clone(),
    };

    let answered = |answers: &[Option<Duration>]| answers.iter().filter(|a| a.is_some()).count();
    let icmp = median_of(runs, || {
        let answers = rt
            .block_on(weft::probe::icmp_echo_batch(&addrs, ping::BUILTIN_TIMEOUT))
            .expect("icmp");
        assert_eq!(answered(&answers), 1024, "echoes went unanswered");
    });
    let tcp_targets: Vec<(IpAddr, u16)> = addrs.iter().map(|&a| (a, port)).collect();
    let tcp = median_of(runs, || {
        let answers = rt.block_on(weft::probe::tcp_connect_batch(
            &tcp_targets,
            Duration::from_secs(1),
        ));
        assert_eq!(answered(&answers), 1024, "connects went unanswered");
    });
    let plugin = median_of(runs, || {
        let outcomes = host.check("tcp-ping", &targets, reach()).expect("check");
        assert_eq!(outcomes.iter().filter(|o| o.alive).count(), 1024);
    });

    // The sweep in all, on a store holding every address of the pool (the steady state:
    // each sweep finds what the last one did, so it only moves checked_at).
    let store = Store::open(&tmp.path().join("weft.redb")).expect("store");
    let spec = PoolSpec {
        name: "lo".into(),
        cidr: pool,
        description: None,
        reserve_gateway: false,
        static_ranges: vec![],
    };
    let held = store
        .write_blocking(move |w| {
            w.create_pool(&spec, "bench")?;
            let mut n = 0;
            while w
                .allocate("lo", &AllocationRequest::default(), None, "bench")
                .is_ok()
            {
                n += 1;
            }
            Ok(n)
        })
        .expect("allocate");
    let sweep = |checker: &Checker| {
        median_of(runs, || {
            let report = ping::sweep(&store, checker, rt.handle().clone()).expect("sweep");
            assert_eq!((report.checked, report.alive), (held, held));
        })
    };
    let sweep_builtin = sweep(&Checker::Builtin);
    let sweep_plugin = sweep(&Checker::Plugin {
        host: host.clone(),
        name: "tcp-ping".into(),
    });

    let line = |label: &str, d: Duration| {
        println!(
            "  {label:<44} median {:>9.2} ms   {:>6.2}× the built-in",
            ms(d),
            d.as_secs_f64() / icmp.as_secs_f64()
        )
    };
    line("built-in ICMP echo batch (1,024)", icmp);
    line("TCP connect batch, no plugin (1,024 refused)", tcp);
    line("tcp-ping plugin through the host (1,024)", plugin);
    line(
        &format!("ping::sweep built-in, store included ({held})"),
        sweep_builtin,
    );
    line(
        &format!("ping::sweep tcp-ping, store included ({held})"),
        sweep_plugin,
    );
    println!(
        "  tcp-ping plugin ÷ built-in ICMP (median): {:.2}; plugin ÷ the same TCP without it: {:.2}",
        plugin.as_secs_f64() / icmp.as_secs_f64(),
        plugin.as_secs_f64() / tcp.as_secs_f64()
    );
    store.close();
}
