//! Crash safety, end to end: 200 cycles of starting `weft serve` on one data dir, letting 64
//! clients allocate (and release, and retry with an `Idempotency-Key`) as fast as they can,
//! and SIGKILLing the server at a random moment.
//!
//! The bug this guards against is an answer that runs ahead of the disk: a `201 Created` (or a
//! `200` release) sent before the transaction holding the change is durable, or a change
//! whose parts (the record, the free index, the pool's counters, the idempotency key) do not
//! commit together. After a kill such a server comes back having forgotten an address it
//! handed out, hands the same address to a second client, counts allocations it does not
//! hold, or lets a retried idempotent request take a second address. Each client request
//! carries a unique `owner` tag, so the final listing says which request holds each address,
//! and every answer the clients received is checked against it: nothing answered is lost,
//! nothing is held twice, and only requests whose answers were lost to the kill may account
//! for anything the clients were not told about.
//!
//! The run is seeded: set `WEFT_CRASH_SEED` to replay the same kill delays and client choices
//! (the interleaving of requests is up to the scheduler).

use crate::support::Server;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CYCLES: usize = 200;
const CLIENTS: usize = 64;
/// One client in this many sends every allocation with an `Idempotency-Key`.
const KEYED_EVERY: usize = 8;
/// The longest a cycle lets clients run before the kill (from their start, or from the
/// cycle's first answer).
const MAX_KILL_DELAY_MS: u64 = 200;
const POOL: &str = "crash";
const CIDR: &str = "10.0.0.0/16";

/// splitmix64: small, seedable, good enough to pick kill moments and choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the clients were told about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Answered 201 and not released since.
    Yes,
    /// A release is on its way.
    Releasing,
    /// The release was answered 200.
    Released,
    /// The release's answer was lost to a kill: it may or may not have happened.
    Unknown,
}

/// Everything the clients were told, shared by all of them, across cycles.
#[derive(Default)]
struct Model {
    /// Address -> what we were told, and the owner tag of the request that got it.
    addrs: HashMap<IpAddr, (Held, String)>,
    /// Owner tag -> the address its 201 gave.
    answered: HashMap<String, IpAddr>,
    /// Owner tags of allocations whose answer was lost: each may hold one address we were
    /// never told about.
    lost: HashSet<String>,
    /// Idempotency keys whose answer was lost, to retry (in a later cycle, or at the end).
    pending_keys: Vec<String>,
    /// Addresses answered to unkeyed requests, which a client may release.
    releasable: Vec<IpAddr>,
    violations: Vec<String>,
    created: u64,
    lost_allocations: u64,
    released: u64,
    lost_releases: u64,
    replays: u64,
}

impl Model {
    fn allocated(&mut self, tag: &str, ip: IpAddr, keyed: bool) {
        self.created += 1;
        if let Some(prev) = self.answered.get(tag)
            && *prev != ip
        {
            self.violations.push(format!(
                "request {tag} was answered {prev}, and {ip} when retried with the same Idempotency-Key"
            ));
        }
        if let Some((Held::Yes, holder)) = self.addrs.get(&ip)
            && holder != tag
        {
            self.violations.push(format!(
                "{ip} answered 201 to {tag} while {holder} still holds it"
            ));
        }
        let fresh = self.answered.insert(tag.to_string(), ip).is_none();
        self.lost.remove(tag);
        self.addrs.insert(ip, (Held::Yes, tag.to_string()));
        if fresh && !keyed {
            self.releasable.push(ip);
        }
    }

    fn allocation_lost(&mut self, tag: &str, keyed: bool) {
        self.lost_allocations += 1;
        if self.answered.contains_key(tag) {
            // A replay of a key already answered: it cannot have taken anything new.
            return;
        }
        self.lost.insert(tag.to_string());
        if keyed {
            self.pending_keys.push(tag.to_string());
        }
    }

    fn take_releasable(&mut self, rng: &mut Rng) -> Option<IpAddr> {
        if self.releasable.is_empty() {
            return None;
        }
        let i = rng.below(self.releasable.len() as u64) as usize;
        let ip = self.releasable.swap_remove(i);
        if let Some(entry) = self.addrs.get_mut(&ip) {
            entry.0 = Held::Releasing;
        }
        Some(ip)
    }

    /// `ok`: the release was answered 200; otherwise its answer was lost.
    fn release_done(&mut self, ip: IpAddr, ok: bool) {
        if ok {
            self.released += 1;
        } else {
            self.lost_releases += 1;
        }
        // If another request got the address meanwhile (state `Yes` again), the release
        // happened before that allocation and the address stays held.
        if let Some(entry) = self.addrs.get_mut(&ip)
            && entry.0 == Held::Releasing
        {
            entry.0 = if ok { Held::Released } else { Held::Unknown };
        }
    }

    fn held(&self) -> usize {
        self.addrs.values().filter(|(h, _)| *h == Held::Yes).count()
    }
}

/// What one cycle's clients share.
struct Cycle {
    client: Client,
    base: String,
    token: String,
    cycle: usize,
    model: Arc<Mutex<Model>>,
}

/// A request's answer, or `None` when the server went away before answering in full.
async fn send(req: reqwest::RequestBuilder) -> Option<(StatusCode, Value)> {
    let r = req.send().await.ok()?;
    let status = r.status();
    let bytes = r.bytes().await.ok()?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Some((status, body))
}

impl Cycle {
    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().expect("model lock")
    }

    /// Allocates for `tag`; false once the server is gone.
    async fn allocate(&self, tag: &str, keyed: bool) -> bool {
        let mut req = self
            .client
            .post(format!("{}/api/v1/pools/{POOL}/allocations", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "owner": tag }));
        if keyed {
            req = req.header("Idempotency-Key", tag);
        }
        match send(req).await {
            Some((StatusCode::CREATED, body)) => {
                let ip = body["address"]
                    .as_str()
                    .and_then(|a| a.parse::<IpAddr>().ok());
                let mut m = self.model();
                match ip {
                    Some(ip) => {
                        if body["status"] != "allocated" || body["owner"] != tag {
                            m.violations.push(format!(
                                "cycle {}: 201 for {tag} is not its allocation: {body}",
                                self.cycle
                            ));
                        }
                        m.allocated(tag, ip, keyed);
                    }
                    None => m.violations.push(format!(
                        "cycle {}: 201 for {tag} without an address: {body}",
                        self.cycle
                    )),
                }
                true
            }
            Some((status, body)) => {
                self.model().violations.push(format!(
                    "cycle {}: allocation {tag} answered {status}: {body}",
                    self.cycle
                ));
                // The request may or may not have taken an address: count it as lost.
                self.model().allocation_lost(tag, keyed);
                false
            }
            None => {
                self.model().allocation_lost(tag, keyed);
                false
            }
        }
    }

    /// Releases `ip`; false once the server is gone.
    async fn release(&self, ip: IpAddr) -> bool {
        let req = self
            .client
            .delete(format!("{}/api/v1/addresses/{ip}/allocation", self.base))
            .bearer_auth(&self.token);
        match send(req).await {
            Some((StatusCode::OK, body)) => {
                let mut m = self.model();
                if body["status"] != "available" {
                    m.violations.push(format!(
                        "cycle {}: release of {ip} answered 200 with {body}",
                        self.cycle
                    ));
                }
                m.release_done(ip, true);
                true
            }
            Some((status, body)) => {
                let mut m = self.model();
                m.violations.push(format!(
                    "cycle {}: release of {ip} answered {status}: {body}",
                    self.cycle
                ));
                m.release_done(ip, false);
                false
            }
            None => {
                self.model().release_done(ip, false);
                false
            }
        }
    }
}

/// One client: allocates (keyed clients with an `Idempotency-Key`, first retrying keys whose
/// answers an earlier kill swallowed), now and then releases, until the server is gone.
async fn client_loop(cx: Arc<Cycle>, task: usize, mut rng: Rng) {
    let keyed = task.is_multiple_of(KEYED_EVERY);
    for n in 0.. {
        if keyed {
            let retry = cx.model().pending_keys.pop();
            let tag = retry.unwrap_or_else(|| format!("k{}-{task}-{n}", cx.cycle));
            if !cx.allocate(&tag, true).await {
                return;
            }
            // Now and then replay an answered key at once: it must give the same address.
            if rng.below(4) == 0 {
                cx.model().replays += 1;
                if !cx.allocate(&tag, true).await {
                    return;
                }
            }
            continue;
        }
        let to_release = if rng.below(3) == 0 {
            cx.model().take_releasable(&mut rng)
        } else {
            None
        };
        let alive = match to_release {
            Some(ip) => cx.release(ip).await,
            None => {
                cx.allocate(&format!("c{}-{task}-{n}", cx.cycle), false)
                    .await
            }
        };
        if !alive {
            return;
        }
    }
}

fn check(model: &Mutex<Model>, seed: u64, when: &str) {
    let m = model.lock().expect("model lock");
    assert!(
        m.violations.is_empty(),
        "{when} (WEFT_CRASH_SEED={seed}): {} problem(s):\n{}",
        m.violations.len(),
        m.violations
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every allocated address of the pool, following `next_cursor`.
async fn list_allocated(server: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/addresses?status=allocated&pool={POOL}&limit=500");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        out.extend(body["items"].as_array().expect("items").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

async fn pool_allocated(server: &Server, when: &str) -> u64 {
    let (status, body) = server.get(&format!("/api/v1/pools/{POOL}")).await;
    assert_eq!(status, StatusCode::OK, "{when}: GET the pool: {body}");
    body["stats"]["allocated"]
        .as_u64()
        .expect("stats.allocated")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_allocating_loses_and_doubles_nothing() {
    let seed = std::env::var("WEFT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("crash: WEFT_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let mut server = Server::start().await;
    server.pool(POOL, CIDR).await;
    let model = Arc::new(Mutex::new(Model::default()));
    // Cycles killed after some allocations were answered and while others were in flight.
    let mut mid_stream = 0;
    let mut restarting = Duration::ZERO;

    for cycle in 0..CYCLES {
        let cx = Arc::new(Cycle {
            client: server.client.clone(),
            base: server.url(""),
            token: server.token.clone(),
            cycle,
            model: model.clone(),
        });
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|task| tokio::spawn(client_loop(cx.clone(), task, Rng(rng.next()))))
            .collect();
        let (created, lost) = {
            let m = model.lock().expect("model lock");
            (m.created, m.lost_allocations)
        };
        // Half the kills come at any moment after the clients start (often while the first
        // batch is being written); the other half once answers are flowing, so that a
        // slower machine still kills mid-stream.
        if rng.below(2) == 1 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while model.lock().expect("model lock").created == created && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(MAX_KILL_DELAY_MS + 1))).await;
        server.kill();
        for t in tasks {
            t.await.expect("client task");
        }
        check(&model, seed, &format!("cycle {cycle}"));
        {
            let m = model.lock().expect("model lock");
            if m.created > created && m.lost_allocations > lost {
                mid_stream += 1;
            }
        }

        let t = Instant::now();
        server.restart().await;
        restarting += t.elapsed();
        // Cheap check each cycle: the pool counts at least what the clients were told it
        // holds, and no more than that plus what lost answers and releases may account for.
        let when = format!("after the kill of cycle {cycle} (WEFT_CRASH_SEED={seed})");
        let counted = pool_allocated(&server, &when).await as usize;
        let m = model.lock().expect("model lock");
        let held = m.held();
        let unknown = m
            .addrs
            .values()
            .filter(|(h, _)| *h == Held::Unknown)
            .count();
        assert!(
            held <= counted && counted <= held + m.lost.len() + unknown,
            "{when}: the pool counts {counted} allocated; \
             the clients were answered {held}, with {} lost allocations and {unknown} lost releases",
            m.lost.len()
        );
    }

    assert!(
        mid_stream >= CYCLES / 4,
        "only {mid_stream} of {CYCLES} kills came while allocations were being answered: the test lost its point"
    );

    // Settle every key whose answer a kill swallowed: the retry must give the address the
    // first attempt took, if it took one.
    let cx = Cycle {
        client: server.client.clone(),
        base: server.url(""),
        token: server.token.clone(),
        cycle: CYCLES,
        model: model.clone(),
    };
    let pending = std::mem::take(&mut model.lock().expect("model lock").pending_keys);
    for tag in pending {
        assert!(cx.allocate(&tag, true).await, "retry of key {tag} failed");
    }
    check(&model, seed, "retrying lost keys");

    let listed = list_allocated(&server).await;
    let (summary, problems, by_addr) = {
        let m = model.lock().expect("model lock");
        let summary = format!(
            "{} answered 201 ({} idempotent replays), {} allocations lost to kills, {} released, {} releases lost",
            m.created, m.replays, m.lost_allocations, m.released, m.lost_releases
        );
        let mut problems = Vec::new();
        let mut by_addr: HashMap<IpAddr, String> = HashMap::new();
        let mut by_owner: HashMap<String, IpAddr> = HashMap::new();
        for r in &listed {
            let ip: IpAddr = r["address"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("address");
            let owner = r["owner"].as_str().unwrap_or_default().to_string();
            if r["status"] != "allocated" {
                problems.push(format!("listed as allocated but {r}"));
            }
            if let Some(prev) = by_addr.insert(ip, owner.clone()) {
                problems.push(format!("{ip} listed twice (owners {prev} and {owner})"));
            }
            if let Some(prev) = by_owner.insert(owner.clone(), ip) {
                problems.push(format!(
                    "request {owner:?} holds two addresses: {prev} and {ip}"
                ));
            }
        }
        for (ip, (held, tag)) in &m.addrs {
            let now = by_addr.get(ip);
            match (held, now) {
                (Held::Yes, Some(o)) if o == tag => {}
                (Held::Yes, None) => problems.push(format!(
                    "{ip} was answered 201 to {tag} but is not allocated"
                )),
                (Held::Yes, Some(o)) => {
                    problems.push(format!("{ip} was answered 201 to {tag} but is held by {o}"))
                }
                (Held::Releasing, _) => problems.push(format!("release of {ip} never finished")),
                (Held::Released, Some(o)) if !m.lost.contains(o) => problems.push(format!(
                    "{ip} was released (200) but is allocated to {o}, which no lost request explains"
                )),
                (Held::Unknown, Some(o)) if o != tag && !m.lost.contains(o) => problems.push(format!(
                    "{ip} (release answer lost) is allocated to {o}, which no lost request explains"
                )),
                _ => {}
            }
        }
        for (ip, owner) in &by_addr {
            let told = m.addrs.get(ip).map(|(_, t)| t == owner).unwrap_or(false);
            if !told && !m.lost.contains(owner) {
                problems.push(format!(
                    "{ip} is allocated to {owner:?}, which was never answered this address and was not lost"
                ));
            }
        }
        (summary, problems, by_addr)
    };
    assert!(
        problems.is_empty(),
        "after {CYCLES} kills (WEFT_CRASH_SEED={seed}): {} problem(s):\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    let counted = pool_allocated(&server, "at the end").await;
    assert_eq!(
        counted,
        listed.len() as u64,
        "the pool's stats.allocated disagrees with its allocated records (WEFT_CRASH_SEED={seed})"
    );

    // The free index survived too: the next allocation gets an address no one holds.
    let (status, body) = server
        .post(
            &format!("/api/v1/pools/{POOL}/allocations"),
            json!({"owner": "final"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ip: IpAddr = body["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("address");
    assert!(
        !by_addr.contains_key(&ip),
        "the final allocation got {ip}, which is held already"
    );
    assert_eq!(
        pool_allocated(&server, "after the final allocation").await,
        counted + 1
    );

    eprintln!(
        "crash: {CYCLES} kills ({mid_stream} while answers were flowing) in {:.1}s ({:.1}s restarting): {summary}; \
         {} allocated at the end",
        started.elapsed().as_secs_f64(),
        restarting.as_secs_f64(),
        counted + 1
    );

    // A clean stop leaves a file redb's own check accepts.
    let exit = server.terminate();
    assert!(exit.success(), "weft serve exited with {exit} on SIGTERM");
    let db = server.data_dir().join("weft.redb");
    assert!(
        weft::store::Store::check_integrity(&db).expect("open the database"),
        "redb integrity check failed on {}",
        db.display()
    );
}
