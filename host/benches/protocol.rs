//! The cost of the agent protocol (docs/agent-protocol.md), measured against baselines in
//! the same run so the ratios hold on a noisy machine.
//!
//! Run: `cargo bench -p weft --bench protocol`
//!
//! `WEFT_BENCH_QUICK=1` (and `cargo test --benches`, which runs without `--bench`) does a
//! few iterations of each, as a smoke test.
//!
//! 1. Per request on the agent, a 256-byte body: a bare SHA-256 of the body (the baseline),
//!    signature verification alone (`protocol::verify_request`), and verification plus the
//!    durable nonce record (`ReplayGuard` over `AgentNonces`: one redb commit with
//!    `Durability::Immediate`, an fsync, per request) in a temp dir.
//! 2. Round trip of `GET /v1/health` on loopback, one request at a time over a kept-alive
//!    connection: the signing client (`AgentClient::health`, answer verified) against a plain
//!    reqwest GET of an unsigned route on the same server returning the same document; and the
//!    signed call to the same agent with its nonces kept in memory, to show the fsync's share.

mod common;
use common::{pct, quick, report, times, us};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft::agent_client::AgentClient;
use weft::protocol::{
    MemoryNonces, Nonce, ReplayGuard, RequestParts, Secret, Secrets, SignedHeaders, sign_request,
    verify_request,
};
use weft::store::agent_nonces::AgentNonces;

const NODE: &str = "node-1";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn key() -> Secret {
    Secret::new(b"bench-secret-0123456789abcdef0123".to_vec()).expect("secret")
}

/// A signed request's headers, owned.
struct Signed {
    timestamp: String,
    nonce: String,
    signature: String,
}

fn sign(body: &[u8], now: i64) -> Signed {
    let nonce = Nonce::random();
    let signature = sign_request(
        &key(),
        &RequestParts {
            node: NODE,
            method: "POST",
            path: "/v1/peers",
            query: "",
            timestamp: now,
            nonce,
            body,
        },
    );
    Signed {
        timestamp: now.to_string(),
        nonce: nonce.to_hex(),
        signature,
    }
}

fn headers(s: &Signed) -> SignedHeaders<'_> {
    SignedHeaders {
        node: Some(NODE),
        timestamp: Some(&s.timestamp),
        nonce: Some(&s.nonce),
        signature: Some(&s.signature),
    }
}

fn per_request() {
    let n = if quick() { 50 } else { 20_000 };
    let durable_n = if quick() { 20 } else { 2_000 };
    let body = vec![b'x'; 256];
    let now = unix_now();
    println!("1. Per request on the agent (256-byte body)");

    let t = times(n, || {
        black_box(Sha256::digest(black_box(&body)));
    });
    report("SHA-256 of the body (baseline)", &t);
    let base = pct(&t, 0.5);

    let secrets = Secrets::one(key());
    let one = sign(&body, now);
    let t = times(n, || {
        let v = verify_request(
            &secrets,
            NODE,
            &headers(&one),
            "POST",
            "/v1/peers",
            "",
            black_box(&body),
            now,
        );
        assert!(v.is_ok());
    });
    report("verify (headers, window, HMAC)", &t);
    let verify = pct(&t, 0.5);

    let dir = tempfile::tempdir().expect("temp dir");
    let guard = ReplayGuard::new(
        Secrets::one(key()),
        NODE,
        AgentNonces::open(dir.path()).expect("agent.redb"),
    );
    let requests: Vec<Signed> = (0..durable_n + durable_n / 10)
        .map(|_| sign(&body, now))
        .collect();
    let mut next = requests.iter();
    let t = times(durable_n, || {
        let r = next.next().expect("enough requests");
        let v = guard.check(&headers(r), "POST", "/v1/peers", "", &body, now);
        assert!(v.is_ok());
    });
    report("verify + durable nonce record (fsync)", &t);
    println!(
        "  verify ÷ SHA-256 (median): {:.1}; durable record adds {:.0} µs (median)",
        verify.as_secs_f64() / base.as_secs_f64(),
        us(pct(&t, 0.5).saturating_sub(verify))
    );
}

fn round_trip() {
    let n = if quick() { 20 } else { 2_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(async {
        let guard =
            weft::agent::open_guard(NODE, Secrets::one(key()), dir.path()).expect("agent guard");
        let started = Instant::now();
        let plane = weft::dataplane::DataPlane::open(dir.path().to_path_buf(), "weft0".into())
            .expect("data plane");
        let unsigned_plane = plane.clone();
        // The unsigned route sits beside the signed ones, outside their layer.
        let app = axum::Router::new()
            .route(
                "/unsigned/health",
                axum::routing::get(move || {
                    let plane = unsigned_plane.clone();
                    async move { axum::Json(weft::agent::health(started, &plane).await) }
                }),
            )
            .merge(weft::agent::router(
                guard,
                plane.clone(),
                weft::agent::SecretFile::new(dir.path().join("secret")),
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let base = url::Url::parse(&format!("http://{addr}/")).expect("url");
        // The same agent with its nonces in memory: what the durable record costs end to end.
        let in_memory = Arc::new(ReplayGuard::new(
            Secrets::one(key()),
            NODE,
            MemoryNonces::default(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let memory_addr = listener.local_addr().expect("addr");
        let app = weft::agent::router(
            in_memory,
            plane.clone(),
            weft::agent::SecretFile::new(dir.path().join("secret")),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let memory = AgentClient::new(
            url::Url::parse(&format!("http://{memory_addr}/")).expect("url"),
            NODE,
            key(),
            Duration::from_secs(5),
        )
        .expect("client");
        let signed =
            AgentClient::new(base.clone(), NODE, key(), Duration::from_secs(5)).expect("client");
        let plain = reqwest::Client::new();
        let plain_url = base.join("/unsigned/health").expect("url");

        println!("2. GET /v1/health round trip on loopback ({n} calls, one at a time)");
        let mut times_of = Vec::new();
        for label in [
            "unsigned (plain reqwest)",
            "signed (AgentClient, verified)",
            "signed, nonces in memory (no fsync)",
        ] {
            let client = if label.contains("memory") {
                &memory
            } else {
                &signed
            };
            for _ in 0..n / 10 {
                call(label, client, &plain, &plain_url).await;
            }
            let mut t = Vec::with_capacity(n);
            for _ in 0..n {
                let s = Instant::now();
                call(label, client, &plain, &plain_url).await;
                t.push(s.elapsed());
            }
            t.sort();
            report(label, &t);
            times_of.push(pct(&t, 0.5));
        }
        println!(
            "  signed ÷ unsigned (median): {:.2}; with nonces in memory: {:.2}",
            times_of[1].as_secs_f64() / times_of[0].as_secs_f64(),
            times_of[2].as_secs_f64() / times_of[0].as_secs_f64()
        );
    });
}

async fn call(label: &str, signed: &AgentClient, plain: &reqwest::Client, plain_url: &url::Url) {
    if label.starts_with("unsigned") {
        let r = plain.get(plain_url.clone()).send().await.expect("get");
        assert!(r.status().is_success());
        black_box(r.bytes().await.expect("body"));
    } else {
        black_box(signed.health().await.expect("signed health"));
    }
}

fn main() {
    per_request();
    round_trip();
}
