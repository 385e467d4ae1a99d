//! Ping checks through the plugin host: the `probe` import answering entry by entry (each
//! probe decided by `grants`), the shipped `tcp-ping` plugin driven through `PluginHost`,
//! and a ping sweep with it. All traffic stays on loopback. The `.wasm` files are built by
//! the README's test command before the tests run (see `tests::component`).

use super::bindings::imports::weft::plugin::probe::{self, Host as _};
use super::call::{self, PluginInfo, Reach};
use super::manifest::Manifest;
use super::probe_host::{MAX_BATCH, ProbeReach};
use super::runtime::Runtime;
use super::{PluginError, PluginHost};
use crate::ping::{self, Checker};
use crate::store::{AllocationRequest, PoolSpec, Store};
use std::net::{IpAddr, TcpListener};
use std::sync::Arc;

use super::tests::component;

/// A plugins folder in a temp dir, filled by the test.
struct Folder(tempfile::TempDir);

impl Folder {
    fn new() -> Folder {
        Folder(tempfile::tempdir().unwrap())
    }

    /// Installs a plugin: its folder with `plugin.toml` and the component.
    fn add(&self, name: &str, wasm: &[u8], manifest: &str) {
        let dir = self.0.path().join("plugins").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
        std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    }

    fn host(&self) -> PluginHost {
        let root = self.0.path();
        PluginHost::new(vec![root.join("plugins")], Some(root.join("cache"))).unwrap()
    }
}

/// A multi-threaded runtime, as weft serves with: the probes of a batch run on it while the
/// plugin's call waits.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn pools(cidrs: &[&str]) -> Vec<ipnet::IpNet> {
    cidrs.iter().map(|c| c.parse().unwrap()).collect()
}

/// A port on `address` where a connect is refused: bound for a moment to be sure nothing
/// listens there, then let go.
fn refusing_port(address: &str) -> u16 {
    let l = TcpListener::bind((address, 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// A listener that never accepts: a connect to it completes (the kernel answers) and stays
/// queued, so `accepted` tells afterwards whether anything connected.
struct Listener(TcpListener);

impl Listener {
    fn on(address: &str) -> Listener {
        let l = TcpListener::bind((address, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        Listener(l)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn accepted(&self) -> bool {
        self.0.accept().is_ok()
    }
}

/// A listener on `address` whose backlog is full: further connects go unanswered (the
/// kernel drops their SYNs), as with a host that filters the port. Holds its connections.
struct Silent {
    listener: tokio::net::TcpListener,
    _held: Vec<std::net::TcpStream>,
}

impl Silent {
    fn on(rt: &tokio::runtime::Runtime, address: &str) -> Silent {
        let _in = rt.enter();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::new(address.parse().unwrap(), 0))
            .unwrap();
        let listener = socket.listen(0).unwrap();
        let to = listener.local_addr().unwrap();
        let mut held = Vec::new();
        while let Ok(s) =
            std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_millis(200))
        {
            held.push(s);
            assert!(held.len() < 100, "the backlog never filled");
        }
        Silent {
            listener,
            _held: held,
        }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }
}

fn tcp_ping_manifest(name: &str, ports: &str, granted: &[u16]) -> String {
    format!(
        "name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"ping-check\"\n[config]\nports = \"{ports}\"\ntimeout_ms = 1000\n[permissions]\nprobe_ports = {granted:?}\n"
    )
}

/// One call's state for a plugin with `manifest`, reaching `reach`, to call the host's side
/// of the `probe` import directly, as the plugin would.
fn call_state(runtime: &Runtime, manifest: &str, reach: Reach) -> wasmtime::Store<call::CallState> {
    let m = Manifest::parse(manifest).unwrap();
    let info = Arc::new(PluginInfo {
        name: m.name.clone(),
        world: m.world,
        config: m.config.clone(),
        permissions: m.permissions.clone(),
    });
    call::store(runtime.engine(), &info, reach)
}

fn target(address: &str, port: u16) -> probe::TcpTarget {
    probe::TcpTarget {
        address: address.into(),
        port,
    }
}

fn refusal(answer: &Result<Option<u32>, String>) -> &str {
    match answer {
        Err(why) => why,
        Ok(rtt) => panic!("the probe ran (answer {rtt:?}) though it should have been refused"),
    }
}

#[test]
fn each_probe_of_a_batch_is_answered_in_order_or_refused_with_its_reason() {
    let rt = runtime();
    let engine = Runtime::new(None).unwrap();
    let open = Listener::on("127.0.0.1");
    let outside = Listener::on("127.0.1.1");
    let ungranted = Listener::on("127.0.0.1");
    let closed = refusing_port("127.0.0.2");
    let manifest = tcp_ping_manifest("p", "", &[open.port(), closed, outside.port()]);
    let reach = Reach::Probe(ProbeReach {
        pools: pools(&["127.0.0.0/24"]),
        runtime: rt.handle().clone(),
    });
    let mut store = call_state(&engine, &manifest, reach);
    let answers = store.data_mut().tcp_connect(
        vec![
            target("127.0.0.1", open.port()),
            target("not an address", open.port()),
            target(&"9".repeat(100_000), open.port()),
            target("10.1.2.3", open.port()),
            target("127.0.1.1", outside.port()),
            target("127.0.0.1", ungranted.port()),
            target("127.0.0.2", closed),
        ],
        1000,
    );
    assert_eq!(answers.len(), 7);
    assert!(matches!(answers[0], Ok(Some(_))), "{:?}", answers[0]);
    assert!(refusal(&answers[1]).contains("not an IP address"));
    let why = refusal(&answers[2]);
    assert!(
        why.contains("not an IP address") && why.len() < 200,
        "a plugin's text is quoted back bounded: {} bytes",
        why.len()
    );
    let answers = [&answers[..2], &answers[3..]].concat();
    assert!(refusal(&answers[2]).contains("10.1.2.3 is outside every weft pool"));
    assert!(refusal(&answers[3]).contains("outside every weft pool"));
    let why = refusal(&answers[4]);
    assert!(
        why.contains(&format!(
            "port {} is not among the probe ports",
            ungranted.port()
        )),
        "{why}"
    );
    assert!(
        matches!(answers[5], Ok(Some(_))),
        "a refused connect proves the host is up: {:?}",
        answers[5]
    );
    // A refused probe is not sent.
    assert!(open.accepted());
    assert!(!outside.accepted(), "a probe left weft's pools");
    assert!(!ungranted.accepted(), "a probe went to a port not granted");

    let echoes = store.data_mut().icmp_echo(
        vec!["127.0.0.1".into(), "10.1.2.3".into(), "::1/128".into()],
        1000,
    );
    match &echoes[0] {
        Ok(rtt) => assert!(rtt.is_some(), "127.0.0.1 did not answer an echo"),
        Err(why) if why.contains("cannot open an ICMPv4 socket") => {
            println!("ICMP part skipped: {why}")
        }
        Err(why) => panic!("{why}"),
    }
    assert!(refusal(&echoes[1]).contains("outside every weft pool"));
    assert!(refusal(&echoes[2]).contains("not an IP address"));
}

#[test]
fn probes_run_on_a_current_thread_runtime_too() {
    // As `weft plugin run` has: a runtime no other thread drives while the call blocks.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Runtime::new(None).unwrap();
    let open = Listener::on("127.0.0.1");
    let manifest = tcp_ping_manifest("p", "", &[open.port()]);
    let reach = Reach::Probe(ProbeReach {
        pools: pools(&["127.0.0.0/24"]),
        runtime: rt.handle().clone(),
    });
    let mut store = call_state(&engine, &manifest, reach);
    let answers = store
        .data_mut()
        .tcp_connect(vec![target("127.0.0.1", open.port())], 1000);
    assert!(matches!(answers[0], Ok(Some(_))), "{:?}", answers[0]);
}

#[test]
fn a_batch_too_large_or_a_call_that_may_not_probe_is_refused_whole() {
    let rt = runtime();
    let engine = Runtime::new(None).unwrap();
    let manifest = tcp_ping_manifest("p", "", &[22]);
    let reach = || {
        Reach::Probe(ProbeReach {
            pools: pools(&["127.0.0.0/24"]),
            runtime: rt.handle().clone(),
        })
    };
    let mut store = call_state(&engine, &manifest, reach());
    let answers = store
        .data_mut()
        .icmp_echo(vec!["127.0.0.1".into(); MAX_BATCH + 1], 100);
    assert_eq!(answers.len(), MAX_BATCH + 1);
    assert!(
        answers
            .iter()
            .all(|a| refusal(a).contains("batch too large"))
    );

    // Without a probe reach (a call made for another purpose), nothing is sent.
    let mut store = call_state(&engine, &manifest, Reach::Nothing);
    let answers = store
        .data_mut()
        .tcp_connect(vec![target("127.0.0.1", 22)], 100);
    assert!(refusal(&answers[0]).contains("not a ping check"));

    // A selector may not probe even when handed a reach: grants decide by world.
    let selector = "name = \"s\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\n";
    let mut store = call_state(&engine, selector, reach());
    let answers = store.data_mut().icmp_echo(vec!["127.0.0.1".into()], 100);
    assert!(refusal(&answers[0]).contains("node-selector plugins cannot probe addresses"));
}

fn check(
    host: &PluginHost,
    name: &str,
    targets: &[&str],
    pools_: &[&str],
    rt: &tokio::runtime::Runtime,
) -> Result<Vec<(String, bool, Option<u32>)>, PluginError> {
    let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    let reach = ProbeReach {
        pools: pools(pools_),
        runtime: rt.handle().clone(),
    };
    Ok(host
        .check(name, &targets, reach)?
        .into_iter()
        .map(|o| (o.address, o.alive, o.rtt_us))
        .collect())
}

#[test]
fn tcp_ping_finds_listening_and_refusing_hosts_alive_and_never_probes_past_its_grants() {
    let rt = runtime();
    let open = Listener::on("127.0.0.1");
    let outside = Listener::on("127.0.1.1");
    let f = Folder::new();
    let tcp_ping = component("tcp_ping");
    // Nothing listens on 127.0.0.2, so the same port is refused there.
    f.add(
        "tcp-ping",
        &tcp_ping,
        &tcp_ping_manifest("tcp-ping", &open.port().to_string(), &[open.port()]),
    );
    let ungranted = Listener::on("127.0.0.1");
    f.add(
        "greedy",
        &tcp_ping,
        &tcp_ping_manifest("greedy", &ungranted.port().to_string(), &[open.port()]),
    );
    let silent = Silent::on(&rt, "127.0.0.3");
    f.add(
        "silent",
        &tcp_ping,
        &tcp_ping_manifest("silent", &silent.port().to_string(), &[silent.port()]),
    );
    let host = f.host();

    let outcomes = check(
        &host,
        "tcp-ping",
        &["127.0.0.1", "127.0.0.2", "10.1.2.3", "127.0.1.1"],
        &["127.0.0.0/24"],
        &rt,
    )
    .unwrap();
    let [(a, a_alive, a_rtt), (b, b_alive, b_rtt)] = outcomes.as_slice() else {
        panic!("expected outcomes for 127.0.0.1 and 127.0.0.2 only: {outcomes:?}");
    };
    assert_eq!((a.as_str(), *a_alive), ("127.0.0.1", true));
    assert!(a_rtt.is_some());
    assert_eq!(
        (b.as_str(), *b_alive),
        ("127.0.0.2", true),
        "a refused connect is an answer: the host is up"
    );
    assert!(b_rtt.is_some());
    assert!(open.accepted());
    // 10.1.2.3 and 127.0.1.1 are outside the pools: refused, so not checked (not down).
    assert!(!outside.accepted(), "a probe left weft's pools");

    // Nothing answers within the timeout: checked, and down.
    let outcomes = check(&host, "silent", &["127.0.0.3"], &["127.0.0.0/24"], &rt).unwrap();
    assert_eq!(outcomes, [("127.0.0.3".to_string(), false, None)]);

    // A port its manifest does not grant: nothing is sent, nothing is checked.
    let outcomes = check(&host, "greedy", &["127.0.0.1"], &["127.0.0.0/24"], &rt).unwrap();
    assert!(outcomes.is_empty(), "{outcomes:?}");
    assert!(!ungranted.accepted(), "a probe went to a port not granted");
}

/// A store with pool `lo` (127.0.0.0/28), its gateway 127.0.0.1 reserved by the pool, and
/// `n` addresses allocated from 127.0.0.2 on.
fn loopback_store(n: usize) -> (tempfile::TempDir, Store, Vec<IpAddr>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("weft.redb")).unwrap();
    let allocated = store
        .write_blocking(move |w| {
            let spec = PoolSpec {
                name: "lo".into(),
                cidr: "127.0.0.0/28".parse().unwrap(),
                description: None,
                reserve_gateway: true,
                static_ranges: vec![],
            };
            w.create_pool(&spec, "t")?;
            (0..n)
                .map(|_| {
                    w.allocate("lo", &AllocationRequest::default(), None, "t")
                        .map(|r| r.address)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
    (dir, store, allocated)
}

#[test]
fn a_sweep_with_tcp_ping_marks_answering_addresses_active_by_the_plugin() {
    let rt = runtime();
    let (_d, store, allocated) = loopback_store(3);
    let f = Folder::new();
    let port = refusing_port("127.0.0.1");
    f.add(
        "tcp-ping",
        &component("tcp_ping"),
        &tcp_ping_manifest("tcp-ping", &port.to_string(), &[port]),
    );
    f.add(
        "broken",
        &component("tcp_ping"),
        &tcp_ping_manifest("broken", "not-a-port", &[port]),
    );
    let host = Arc::new(f.host());

    // A plugin that fails: the batch is counted as an error and its addresses left alone.
    let broken = Checker::Plugin {
        host: host.clone(),
        name: "broken".into(),
    };
    let report = ping::sweep(&store, &broken, rt.handle().clone()).unwrap();
    assert_eq!((report.checked, report.errors), (0, 1));
    for a in &allocated {
        let r = store.read(|r| r.address(*a)).unwrap();
        assert!(!r.active && r.checked_at.is_none(), "{a} was touched");
    }

    // A plugin that is not there: the sweep stops at once rather than fail every batch.
    let missing = Checker::Plugin {
        host: host.clone(),
        name: "missing".into(),
    };
    let err = ping::sweep(&store, &missing, rt.handle().clone()).unwrap_err();
    assert!(
        matches!(err, ping::PingError::Plugin(PluginError::NotFound(_))),
        "{err}"
    );

    let checker = Checker::Plugin {
        host,
        name: "tcp-ping".into(),
    };
    let report = ping::sweep(&store, &checker, rt.handle().clone()).unwrap();
    // The three allocated and the gateway, which the pool reserves.
    assert_eq!(
        (report.checked, report.alive, report.changed, report.errors),
        (4, 4, 4, 0)
    );
    for a in &allocated {
        let r = store.read(|r| r.address(*a)).unwrap();
        assert!(r.active && r.checked_at.is_some(), "{a}: {r:?}");
        let history = store.read(|r| r.history(*a)).unwrap();
        let last = history.last().unwrap();
        assert_eq!(
            (last.action.as_str(), last.actor.as_str()),
            ("ping", "plugin:tcp-ping")
        );
    }

    // Every address falls silent (a full listener on all of them): each goes down, with an
    // event by the plugin that saw it.
    let events: Vec<usize> = allocated
        .iter()
        .map(|a| store.read(|r| r.history(*a)).unwrap().len())
        .collect();
    let silent = Silent::on(&rt, "0.0.0.0");
    f.add(
        "silent",
        &component("tcp_ping"),
        &tcp_ping_manifest("silent", &silent.port().to_string(), &[silent.port()]),
    );
    let Checker::Plugin { host, .. } = checker else {
        unreachable!()
    };
    host.reload();
    let silent_checker = Checker::Plugin {
        host,
        name: "silent".into(),
    };
    let report = ping::sweep(&store, &silent_checker, rt.handle().clone()).unwrap();
    assert_eq!(
        (report.checked, report.alive, report.changed, report.errors),
        (4, 0, 4, 0)
    );
    for (a, before) in allocated.iter().zip(events) {
        assert!(!store.read(|r| r.address(*a)).unwrap().active, "{a}");
        let history = store.read(|r| r.history(*a)).unwrap();
        assert_eq!(history.len(), before + 1);
        assert_eq!(history.last().unwrap().actor, "plugin:silent");
    }
}
