//! Health polling of many agents: one round of `controller::health::poll_round` over 1,000
//! simulated agents — each a task in this process serving the real agent router (signed
//! protocol, nonces in memory) on its own loopback port, with its own node id and secret —
//! against the baseline of one signed health call to one agent, in the same run.
//!
//! Run: `cargo bench -p weft --bench health` (goal: a round of 1,000 in < 5 s).
//! `WEFT_BENCH_QUICK=1` (or `cargo test --benches`) polls 50 agents, as a smoke test.

mod common;
use common::{pct, quick, report, us};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::agent_client::AgentClient;
use weft::controller::health::{Target, poll_round};
use weft::protocol::{MemoryNonces, ReplayGuard, Secret, Secrets};
use weft::store::Observation;

/// 1,000 listeners and as many client connections: more than the usual 1,024 descriptors.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn secret(i: usize) -> Secret {
    Secret::new(format!("the-secret-of-simulated-agent-{i:04}").into_bytes()).expect("secret")
}

fn main() {
    raise_fd_limit();
    let agents = if quick() { 50 } else { 1_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(async {
        // One data plane (never asked to run an interface) behind every simulated agent.
        let plane = weft::dataplane::DataPlane::open(dir.path().to_path_buf(), "weft0".into())
            .expect("data plane");
        let mut targets = Vec::with_capacity(agents);
        for i in 0..agents {
            let node = format!("node-{i:04}");
            let guard = Arc::new(ReplayGuard::new(
                Secrets::one(secret(i)),
                &node,
                MemoryNonces::default(),
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let file = weft::agent::SecretFile::new(format!("/nonexistent/{node}.secret"));
            let app = weft::agent::router(guard, plane.clone(), file);
            tokio::spawn(async move { axum::serve(listener, app).await });
            let client = AgentClient::new(
                url::Url::parse(&format!("http://{addr}/")).expect("url"),
                node.clone(),
                secret(i),
                Duration::from_secs(5),
            )
            .expect("client");
            targets.push(Target { name: node, client });
        }
        println!("health polling, {agents} simulated agents on loopback (2 worker threads)");

        // Baseline: one signed health call to one agent, one at a time.
        let one = targets[0].client.clone();
        let mut single = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            one.health().await.expect("health");
            single.push(t.elapsed());
        }
        single.sort();
        report("one signed health call (baseline)", &single);

        // Rounds: the first opens every connection; the later ones reuse them.
        let mut rounds = Vec::new();
        for r in 0..5 {
            let batch: Vec<Target> = targets
                .iter()
                .map(|t| Target {
                    name: t.name.clone(),
                    client: t.client.clone(),
                })
                .collect();
            let t = Instant::now();
            let polled = poll_round(batch, Duration::from_secs(5)).await;
            let took = t.elapsed();
            let online = polled
                .iter()
                .filter(|p| matches!(p.observation, Observation::Answered { .. }))
                .count();
            assert_eq!(online, agents, "every agent answered in round {r}");
            println!(
                "  round {r} ({}): {:>8.1} ms for {agents} agents",
                if r == 0 {
                    "new connections"
                } else {
                    "kept-alive"
                },
                took.as_secs_f64() * 1e3
            );
            rounds.push(took);
        }
        let first = rounds[0];
        let mut warm = rounds[1..].to_vec();
        warm.sort();
        let median = pct(&warm, 0.5);
        println!(
            "  round of {agents}: first {:.1} ms, kept-alive median {:.1} ms (goal < 5000 ms); \
             {:.0}× one call, {:.1} µs per agent",
            first.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            median.as_secs_f64() / pct(&single, 0.5).as_secs_f64(),
            us(median) / agents as f64
        );
    });
}
