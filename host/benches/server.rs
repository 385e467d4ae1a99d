//! The running server, end to end: durable allocations per second over loopback against the
//! disk's raw synchronous-write rate; listing latency and startup time on a store of a million
//! address records; and the latency of the addresses web page on that store.
//!
//! Run (the release binary is the caller's to build; the bench starts it as a real process):
//!   cargo build --release -p weft && cargo bench -p weft --bench server
//!
//! Settings (environment):
//! - `WEFT_BIN`: the `weft` binary to run (default: `<target>/release/weft`, where `<target>` is
//!   `CARGO_TARGET_DIR` or the workspace's `target/`).
//! - `WEFT_BENCH_QUICK=1`: small sizes (10,000 records, 1 s per scenario) for a smoke run. Also
//!   the case when the binary runs without `--bench` (`cargo test --benches`).
//! - `WEFT_BENCH_REBUILD=1`: rebuild the cached million-record store.
//!
//! What is measured, in one run:
//!
//! 1. Durable allocations. `dd if=/dev/zero of=FILE bs=4k count=2000 oflag=dsync` in the same
//!    directory as the data dir gives the disk's synchronous-write rate (writes/s = count ÷
//!    seconds; run before and after the HTTP runs, their mean is the baseline). Then
//!    `weft serve` on a fresh data dir, a /8 pool, and `POST /api/v1/pools/bench/allocations`
//!    (each answer is a committed, fsynced allocation) for a fixed time from 1 client in
//!    sequence (HTTP keep-alive) and from 64 concurrent clients. Goals: 1 client ≥ 0.8× dd,
//!    64 clients ≥ 5× dd (group commit). For the analysis, the same is then done in-process
//!    against the store (no HTTP), so the HTTP share and the store's share can be told apart.
//! 2. (Allocation p99 at 1,000,000 ÷ 1,000 allocated is the `allocation` bench's.)
//! 3. Listing. A store with 1,000,000 allocated records (`host-1` … `host-1000000` in a /8) is
//!    built through the library once and cached under `<target>/bench-data/` (keyed by the
//!    schema version and the record count); each run copies it to a fresh data dir. The time
//!    from spawning `weft serve` to its first 200 on `/healthz` is the startup time (goal
//!    < 1 s; three starts). Then `wrk --latency` measures `GET /api/v1/addresses?limit=50`
//!    (first page) and `?status=allocated&q=host-99&limit=50` (filtered page) with 1 and with
//!    64 connections. Goals: p99 ≤ 1 ms with 1 client, ≤ 10 ms with 64. Without `wrk`
//!    (`apt-get install wrk`), this part says so and is skipped. For the analysis, the same
//!    queries are timed in-process: the store's read, the JSON encoding of the page, and the
//!    JSON decoding of one stored record (what a scan pays per row).
//! 4. The addresses page (issue 4), on the same server and store: a viewer is added with
//!    `weft user add bench-viewer --role viewer` (password on stdin, through the admin socket
//!    while `weft serve` runs) and signs in over HTTP as a browser does (`GET /login` for the
//!    `weft_csrf` cookie and the form's `csrf` field, `POST /login`, the `weft_session` cookie
//!    from the 303). Then `wrk --latency` with that cookie measures `GET /addresses` (first
//!    page) and `GET /addresses?status=allocated&q=host-99` (filtered), 50 rows each, with 1
//!    and with 64 connections, each run right after the API's run on the same rows (part 3),
//!    which is its baseline: median, p99 and the ratio page ÷ API. Goal: p99 ≤ 15 ms. The page
//!    is opened with the session before and after the runs (wrk would count a redirect to the
//!    login page as a success).

use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use weft::ipam::{Record, Status};
use weft::store::{
    AddressFilter, AllocationRequest, COUNT_BUDGET, PoolSpec, SCHEMA_VERSION, Store, Writer,
};

const POOL: &str = "bench";
const CIDR: &str = "10.0.0.0/8";
const ACTOR: &str = "bench";
/// Bump when the cached store's contents change meaning (not only with the schema).
const FIXTURE_FORMAT: u32 = 1;
const FIRST_PAGE: &str = "/api/v1/addresses?limit=50";
const FILTERED_PAGE: &str = "/api/v1/addresses?status=allocated&q=host-99&limit=50";
/// The same two listings as web pages (50 rows a page, like the API's `limit=50` above).
const FIRST_ADDRESSES_PAGE: &str = "/addresses";
const FILTERED_ADDRESSES_PAGE: &str = "/addresses?status=allocated&q=host-99";
/// Each listing: its name, the API's URL (the baseline), the page's URL.
const LISTINGS: [(&str, &str, &str); 2] = [
    ("first page", FIRST_PAGE, FIRST_ADDRESSES_PAGE),
    ("filtered", FILTERED_PAGE, FILTERED_ADDRESSES_PAGE),
];
/// The page user: a viewer, since a read is what is measured.
const PAGE_USER: &str = "bench-viewer";
const PAGE_PASSWORD: &str = "bench viewer passphrase";
/// Issue 4's goal for the addresses page, with 1 and with 64 connections.
const PAGE_GOAL_P99_MS: f64 = 15.0;

#[derive(Clone, Copy, Debug)]
struct Sizes {
    quick: bool,
    /// Time per measured scenario.
    secs: Duration,
    /// Writes of the dd baseline.
    dd_count: u32,
    /// Records in the listing store.
    records: u64,
    /// Allocations per transaction while building the listing store.
    fill_chunk: u64,
    /// Starts of `weft serve` timed on the listing store.
    starts: usize,
    /// In-process repetitions of the listing queries.
    list_reps: usize,
}

impl Sizes {
    fn pick(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                secs: Duration::from_secs(1),
                dd_count: 500,
                records: 10_000,
                fill_chunk: 5_000,
                starts: 2,
                list_reps: 50,
            }
        } else {
            Sizes {
                quick,
                secs: Duration::from_secs(5),
                dd_count: 2_000,
                records: 1_000_000,
                fill_chunk: 50_000,
                starts: 3,
                list_reps: 300,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

fn env_on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_ms(d: Duration) -> String {
    let m = ms(d);
    if m < 1.0 {
        format!("{:.0} µs", m * 1e3)
    } else {
        format!("{m:.2} ms")
    }
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// The newest modification time of any file under `dir`.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            e.metadata().ok().and_then(|m| m.modified().ok())
        };
        newest = newest.max(t);
    }
    newest
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state is field 3, utime 14 and stime 15.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
}

fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time of the calling thread: tells work from waiting for a core.
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime fills the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn per_op_us(cpu: Option<Duration>, n: usize) -> String {
    match cpu {
        Some(c) if n > 0 => format!("{:.0} µs", c.as_secs_f64() * 1e6 / n as f64),
        _ => "?".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The `weft` process.

fn weft_bin() -> PathBuf {
    match std::env::var_os("WEFT_BIN") {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("release/weft"),
    }
}

fn weft_cmd(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    // Only the flags given here count: no config file or settings from the caller's shell.
    for v in ["WEFT_CONFIG", "WEFT_DATA_DIR", "WEFT_LISTEN"] {
        c.env_remove(v);
    }
    c.env("WEFT_LOG", "info");
    c
}

/// `weft token create`; returns the secret (the last line printed).
fn create_token(bin: &Path, data_dir: &Path) -> Result<String> {
    let out = weft_cmd(bin)
        .args(["token", "create", "--name", "bench", "--data-dir"])
        .arg(data_dir)
        .stderr(Stdio::inherit())
        .output()
        .context("running weft token create")?;
    if !out.status.success() {
        bail!("weft token create failed: {}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .ok_or_else(|| anyhow!("weft token create printed no secret"))
}

fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// One plain HTTP/1.1 GET on a new connection; the status code, or None if nobody listens.
fn raw_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split(' ').nth(1)?.parse().ok()
}

struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Spawns `weft serve` and waits for its first 200 on `/healthz`; returns it with the time
    /// that took, and the startup the server itself logged (`startup_ms`).
    fn start(bin: &Path, data_dir: &Path, log: &Path) -> Result<(Server, Duration, Option<u64>)> {
        let addr = free_port()?;
        let log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let t0 = Instant::now();
        let child = weft_cmd(bin)
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            // The bench's pools are not loopback: no ping sweep.
            .env("WEFT_PING_INTERVAL", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut server = Server {
            child: Some(child),
            addr,
            log: log.to_path_buf(),
        };
        let deadline = t0 + Duration::from_secs(120);
        loop {
            if raw_get_status(addr, "/healthz") == Some(200) {
                break;
            }
            if let Some(c) = server.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                server.child = None;
                bail!(
                    "weft serve exited ({status}) before answering:\n{}",
                    server.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "weft serve did not answer /healthz in 120 s:\n{}",
                    server.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let startup = t0.elapsed();
        let logged = fs::read_to_string(log).ok().and_then(|text| {
            let rest = &text[text.find("startup_ms=")? + "startup_ms=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        });
        Ok((server, startup, logged))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// CPU time the server process has used so far.
    fn cpu(&self) -> Option<Duration> {
        proc_cpu(self.pid())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, and wait for the clean shutdown (the database is closed when it exits).
    fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("weft serve exited with {status}:\n{}", self.log_tail());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("weft serve did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: durable allocations.

struct Dd {
    seconds: f64,
    writes_per_s: f64,
}

/// `dd ... oflag=dsync` in `dir`: `count` synchronous 4 KiB writes.
fn dd(dir: &Path, count: u32) -> Result<Dd> {
    let file = dir.join("dd.bin");
    let t = Instant::now();
    let out = Command::new("dd")
        .env("LC_ALL", "C")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=4k", &format!("count={count}"), "oflag=dsync"])
        .output()
        .context("running dd")?;
    let wall = t.elapsed().as_secs_f64();
    let _ = fs::remove_file(&file);
    if !out.status.success() {
        bail!("dd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // "8192000 bytes (8.2 MB, 7.8 MiB) copied, 3.0412 s, 2.7 MB/s"
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seconds = stderr
        .lines()
        .find_map(|l| {
            let rest = &l[l.find("copied, ")? + "copied, ".len()..];
            rest.split(' ').next()?.parse::<f64>().ok()
        })
        .filter(|s| *s > 0.0)
        .unwrap_or(wall);
    Ok(Dd {
        seconds,
        writes_per_s: count as f64 / seconds,
    })
}

struct Rate {
    n: usize,
    elapsed: Duration,
    /// Round trip of each operation, sorted.
    lat: Vec<Duration>,
    /// CPU the serving side used meanwhile: the server process over HTTP, this whole
    /// process (store and load tasks) in-process.
    cpu: Option<Duration>,
}

impl Rate {
    fn new(mut lat: Vec<Duration>, elapsed: Duration) -> Rate {
        lat.sort();
        Rate {
            n: lat.len(),
            elapsed,
            lat,
            cpu: None,
        }
    }
    fn per_s(&self) -> f64 {
        self.n as f64 / self.elapsed.as_secs_f64()
    }
}

fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()?)
}

/// Next-free allocations over HTTP from one connection in sequence until `deadline`.
async fn alloc_client(
    client: reqwest::Client,
    url: Arc<str>,
    token: Arc<str>,
    who: usize,
    deadline: Instant,
) -> Result<Vec<Duration>> {
    let mut lat = Vec::new();
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let t = Instant::now();
        let resp = client
            .post(&*url)
            .bearer_auth(&*token)
            .header("content-type", "application/json")
            .body(format!(r#"{{"hostname":"c{who}-{i}"}}"#))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if status.as_u16() != 201 {
            bail!(
                "allocation answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        lat.push(t.elapsed());
    }
    Ok(lat)
}

async fn http_allocations(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    clients: usize,
    secs: Duration,
) -> Result<Rate> {
    let (url, token): (Arc<str>, Arc<str>) = (url.into(), token.into());
    let start = Instant::now();
    let deadline = start + secs;
    let tasks: Vec<_> = (0..clients)
        .map(|who| {
            tokio::spawn(alloc_client(
                client.clone(),
                url.clone(),
                token.clone(),
                who,
                deadline,
            ))
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(Rate::new(lat, start.elapsed()))
}

/// The same allocations without HTTP: `Store::write` from `writers` tasks until `secs` pass.
/// With `empty`, each write changes nothing: what a durable commit costs by itself.
async fn store_writes(store: &Store, writers: usize, secs: Duration, empty: bool) -> Result<Rate> {
    let start = Instant::now();
    let deadline = start + secs;
    let tasks: Vec<_> = (0..writers)
        .map(|who| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let req = AllocationRequest {
                        hostname: Some(format!("s{who}-{i}")),
                        ..AllocationRequest::default()
                    };
                    let t = Instant::now();
                    if empty {
                        store.write(|_: &mut Writer<'_>| Ok(())).await?;
                    } else {
                        store
                            .write(move |w| w.allocate(POOL, &req, None, ACTOR))
                            .await?;
                    }
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(Rate::new(lat, start.elapsed()))
}

struct DurableResults {
    /// dd runs in order: before the 1-client run, between the two HTTP runs, after them, and
    /// after the in-process runs.
    dds: Vec<Dd>,
    one: Rate,
    many: Rate,
    /// In-process: empty commits from 1 writer, allocations from 1 and from 64 writers.
    store_empty: Option<Rate>,
    store_one: Option<Rate>,
    store_many: Option<Rate>,
}

impl DurableResults {
    fn mean_dd(&self, idx: &[usize]) -> f64 {
        let v: Vec<f64> = idx
            .iter()
            .filter_map(|i| self.dds.get(*i))
            .map(|d| d.writes_per_s)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
    /// The disk's rate around the 1-client run: the dd before it and the one after it.
    fn base_one(&self) -> f64 {
        self.mean_dd(&[0, 1])
    }
    /// Around the 64-client run.
    fn base_many(&self) -> f64 {
        self.mean_dd(&[1, 2])
    }
}

fn pool_spec() -> PoolSpec {
    PoolSpec {
        name: POOL.into(),
        cidr: CIDR.parse().expect("cidr"),
        description: None,
        reserve_gateway: true,
        static_ranges: Vec::new(),
    }
}

fn run_dd(dir: &Path, count: u32, label: &str) -> Result<Dd> {
    let d = dd(dir, count)?;
    println!(
        "    dd bs=4k count={count} oflag=dsync ({label}): {:.2} s = {:.0} writes/s",
        d.seconds, d.writes_per_s
    );
    Ok(d)
}

fn durable_part(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    work: &Path,
    sizes: Sizes,
) -> Result<DurableResults> {
    let dir = tempfile::Builder::new()
        .prefix("durable-")
        .tempdir_in(work)?;
    let data_dir = dir.path().join("data");
    println!("[1] durable allocations; data dir {}", data_dir.display());
    fs::create_dir_all(&data_dir)?;
    let token = create_token(bin, &data_dir)?;
    let (server, startup, _) = Server::start(bin, &data_dir, &dir.path().join("serve.log"))?;
    println!(
        "    weft serve up on {} in {:.0} ms",
        server.addr,
        ms(startup)
    );
    let client = http_client()?;
    let url = server.url(&format!("/api/v1/pools/{POOL}/allocations"));
    rt.block_on(async {
        let resp = client
            .post(server.url("/api/v1/pools"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": POOL, "cidr": CIDR}))
            .send()
            .await?;
        if resp.status().as_u16() != 201 {
            bail!(
                "creating the pool answered {}: {}",
                resp.status(),
                resp.text().await?
            );
        }
        // Warm up: connections, the page cache, the file's first growth.
        http_allocations(&client, &url, &token, 1, sizes.secs / 5).await?;
        anyhow::Ok(())
    })?;

    // Each HTTP run is bracketed by dd runs: the disk's rate drifts (it is shared), and a
    // ratio means something only against the rate of the same minutes.
    let mut dds = vec![run_dd(dir.path(), sizes.dd_count, "before 1 client")?];
    let mut runs = Vec::new();
    for clients in [1, 64] {
        let (c0, s0) = (server.cpu(), rusage_cpu(libc::RUSAGE_SELF));
        let mut r = rt.block_on(http_allocations(&client, &url, &token, clients, sizes.secs))?;
        r.cpu = c0.zip(server.cpu()).map(|(a, b)| b.saturating_sub(a));
        let client_cpu = rusage_cpu(libc::RUSAGE_SELF).saturating_sub(s0);
        println!(
            "    {clients} client(s): {} allocations in {:.2} s = {:.0}/s (p50 {}, p99 {}; CPU per allocation: server {}, this HTTP client {})",
            r.n,
            r.elapsed.as_secs_f64(),
            r.per_s(),
            fmt_ms(pct(&r.lat, 0.5)),
            fmt_ms(pct(&r.lat, 0.99)),
            per_op_us(r.cpu, r.n),
            per_op_us(Some(client_cpu), r.n)
        );
        runs.push(r);
        let label = if clients == 1 {
            "between"
        } else {
            "after 64 clients"
        };
        dds.push(run_dd(dir.path(), sizes.dd_count, label)?);
    }
    server.stop()?;
    let many = runs.pop().ok_or_else(|| anyhow!("no run"))?;
    let one = runs.pop().ok_or_else(|| anyhow!("no run"))?;

    // The analysis: straight into the store, on a fresh file in the same directory, without
    // HTTP: empty commits (the floor of a durable write), then the allocations.
    let inproc = || -> Result<[Rate; 3]> {
        let path = dir.path().join("inproc.redb");
        let store = Store::open(&path)?;
        let spec = pool_spec();
        store.write_blocking(move |w| w.create_pool(&spec, ACTOR))?;
        let out = rt.block_on(async {
            store_writes(&store, 1, sizes.secs / 5, false).await?;
            let mut out = Vec::new();
            for (writers, empty) in [(1, true), (1, false), (64, false)] {
                let c0 = rusage_cpu(libc::RUSAGE_SELF);
                let mut r = store_writes(&store, writers, sizes.secs, empty).await?;
                r.cpu = Some(rusage_cpu(libc::RUSAGE_SELF).saturating_sub(c0));
                let what = if empty { "empty commits" } else { "allocations" };
                println!(
                    "    in-process store, {writers} writer(s), {what}: {:.0}/s (p50 {}; process CPU {} each)",
                    r.per_s(),
                    fmt_ms(pct(&r.lat, 0.5)),
                    per_op_us(r.cpu, r.n)
                );
                out.push(r);
            }
            let [a, b, c]: [Rate; 3] = out.try_into().map_err(|_| anyhow!("runs"))?;
            anyhow::Ok([a, b, c])
        });
        store.close();
        out
    };
    let (store_empty, store_one, store_many) = match inproc() {
        Ok([a, b, c]) => (Some(a), Some(b), Some(c)),
        Err(e) => {
            println!("    in-process store run failed: {e:#}");
            (None, None, None)
        }
    };
    match run_dd(dir.path(), sizes.dd_count, "after in-process") {
        Ok(d) => dds.push(d),
        Err(e) => println!("    last dd failed: {e:#}"),
    }
    Ok(DurableResults {
        dds,
        one,
        many,
        store_empty,
        store_one,
        store_many,
    })
}

// ---------------------------------------------------------------------------------------------
// Part 3: listing on a million records, and startup.

/// The cached store: built once per schema version and size.
fn listing_fixture(bin: &Path, cache_root: &Path, sizes: Sizes) -> Result<(PathBuf, String)> {
    let dir = cache_root.join(format!(
        "list-s{SCHEMA_VERSION}-f{FIXTURE_FORMAT}-n{}",
        sizes.records
    ));
    let marker = dir.join("complete");
    let token_file = dir.join("token");
    let db = weft::config::db_path(&dir);
    if marker.exists() && db.exists() && !env_on("WEFT_BENCH_REBUILD") {
        let token = fs::read_to_string(&token_file)?.trim().to_string();
        println!("    cached store: {}", dir.display());
        return Ok((db, token));
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    println!(
        "    building the store ({} records) in {} ...",
        sizes.records,
        dir.display()
    );
    let t = Instant::now();
    let store = Store::open(&db)?;
    let spec = pool_spec();
    store.write_blocking(move |w| w.create_pool(&spec, ACTOR))?;
    let mut done = 0u64;
    while done < sizes.records {
        let (from, to) = (done + 1, (done + sizes.fill_chunk).min(sizes.records));
        store.write_blocking(move |w| {
            for n in from..=to {
                let req = AllocationRequest {
                    hostname: Some(format!("host-{n}")),
                    ..AllocationRequest::default()
                };
                w.allocate(POOL, &req, None, ACTOR)?;
            }
            Ok(())
        })?;
        done = to;
        if done.is_multiple_of(sizes.fill_chunk * 4) || done == sizes.records {
            println!("      {done} records, {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    store.close();
    let token = create_token(bin, &dir)?;
    fs::write(&token_file, &token)?;
    fs::write(&marker, format!("{} records\n", sizes.records))?;
    println!("    built in {:.1} s", t.elapsed().as_secs_f64());
    Ok((db, token))
}

#[derive(Clone, Copy, Debug)]
struct WrkResult {
    p50: Duration,
    p99: Duration,
    rps: f64,
    requests: u64,
    errors: u64,
    /// CPU the server used during the run, and wrk itself (it shares the cores).
    server_cpu: Option<Duration>,
    wrk_cpu: Duration,
    elapsed: Duration,
}

fn parse_wrk_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit_at = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(unit_at);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

fn parse_wrk(out: &str) -> Option<WrkResult> {
    let mut p50 = None;
    let mut p99 = None;
    let mut rps = None;
    let mut requests = None;
    let mut errors = 0;
    for line in out.lines() {
        let l = line.trim();
        let mut words = l.split_whitespace();
        match words.next() {
            Some("50%") => p50 = words.next().and_then(parse_wrk_duration),
            Some("99%") => p99 = words.next().and_then(parse_wrk_duration),
            Some("Requests/sec:") => rps = words.next().and_then(|w| w.parse().ok()),
            Some(first) if l.contains(" requests in ") => requests = first.parse().ok(),
            _ if l.starts_with("Non-2xx or 3xx responses:") => {
                errors += l
                    .rsplit(' ')
                    .next()
                    .and_then(|w| w.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            // "Socket errors: connect 0, read 0, write 0, timeout 3"
            _ if l.starts_with("Socket errors:") => {
                errors += l
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|w| w.parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    Some(WrkResult {
        p50: p50?,
        p99: p99?,
        rps: rps?,
        requests: requests?,
        errors,
        server_cpu: None,
        wrk_cpu: Duration::ZERO,
        elapsed: Duration::ZERO,
    })
}

fn have_wrk() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `wrk --latency` on `path` with `conns` connections for `secs`; `auth` is the header line
/// that authenticates each request (a bearer token, or a session cookie for the pages).
fn wrk(server: &Server, path: &str, auth: &str, conns: usize, secs: Duration) -> Result<WrkResult> {
    let threads = conns.min(2);
    let url = server.url(path);
    let (c0, w0, t0) = (
        server.cpu(),
        rusage_cpu(libc::RUSAGE_CHILDREN),
        Instant::now(),
    );
    let out = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{conns}"),
            &format!("-d{}s", secs.as_secs().max(1)),
            "--latency",
            // Slow answers are measured, not dropped as timeouts (wrk's default is 2 s).
            "--timeout",
            "30s",
            "-H",
            auth,
            &url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r = parse_wrk(&text).ok_or_else(|| anyhow!("cannot read wrk's output:\n{text}"))?;
    r.elapsed = t0.elapsed();
    r.wrk_cpu = rusage_cpu(libc::RUSAGE_CHILDREN).saturating_sub(w0);
    r.server_cpu = c0.zip(server.cpu()).map(|(a, b)| b.saturating_sub(a));
    Ok(r)
}

struct Scenario {
    name: &'static str,
    conns: usize,
    r: WrkResult,
}

struct ListAnalysis {
    name: &'static str,
    items: usize,
    bytes: usize,
    cursor: Option<String>,
    read: Vec<Duration>,
    /// The same reads in CPU time of the reading thread.
    read_cpu: Vec<Duration>,
    encode: Vec<Duration>,
    /// What the addresses page reads on top of the API's page: the counts by status for the
    /// same filter (`Reader::count` with the page's `COUNT_BUDGET`).
    count: Vec<Duration>,
}

struct Startup {
    /// Spawn to the first 200 on `/healthz`.
    took: Duration,
    /// What the server logged as its own startup (`startup_ms`).
    logged: Option<u64>,
    /// Whether the database file was out of the page cache.
    cold: bool,
}

/// Drops the file's pages from the page cache (that file only: POSIX_FADV_DONTNEED).
fn evict_from_page_cache(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path)?;
    f.sync_all()?;
    // SAFETY: posix_fadvise on a descriptor we hold open; it only advises the kernel.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("posix_fadvise: {}", std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

struct ListingResults {
    records: u64,
    db_bytes: u64,
    startups: Vec<Startup>,
    scenarios: Option<Vec<Scenario>>,
    /// The addresses page, the same listings (None without wrk; an error if the page user
    /// could not sign in or a run failed).
    pages: Option<Result<Vec<Scenario>>>,
    analysis: Vec<ListAnalysis>,
    /// JSON decoding of one stored record (median of many), what a scan pays per row.
    decode_one: Option<Duration>,
    /// `Store::read` doing nothing: a snapshot and every table opened (median).
    empty_read: Duration,
    /// The token look-up every request makes (median).
    auth: Duration,
}

fn listing_filters() -> [(&'static str, AddressFilter); 2] {
    [
        ("first page", AddressFilter::default()),
        (
            "filtered",
            AddressFilter {
                status: Some(Status::Allocated),
                q: Some("host-99".into()),
                ..AddressFilter::default()
            },
        ),
    ]
}

fn listing_part(bin: &Path, work: &Path, sizes: Sizes) -> Result<ListingResults> {
    println!("[3] listing with {} records, startup", sizes.records);
    let (cached_db, token) = listing_fixture(bin, &work.join("cache"), sizes)?;
    let dir = tempfile::Builder::new()
        .prefix("listing-")
        .tempdir_in(work)?;
    let data_dir = dir.path().join("data");
    fs::create_dir_all(&data_dir)?;
    let db = weft::config::db_path(&data_dir);
    let t = Instant::now();
    let db_bytes = fs::copy(&cached_db, &db)?;
    let copied = t.elapsed();
    // Flushed here, or the server's first commit (its schema check) would pay for writing
    // the whole copy to disk, and that would be counted as its startup.
    fs::File::open(&db)?.sync_all()?;
    println!(
        "    copied {:.0} MB to {} in {:.1} s, synced in {:.1} s",
        db_bytes as f64 / 1e6,
        data_dir.display(),
        copied.as_secs_f64(),
        (t.elapsed() - copied).as_secs_f64()
    );

    let log = dir.path().join("serve.log");
    let mut startups = Vec::new();
    let mut server = None;
    // The first start finds the file out of the page cache (as after a reboot), the others
    // find it cached (a restart).
    let cold = match evict_from_page_cache(&db) {
        Ok(()) => true,
        Err(e) => {
            println!("    cannot evict the file from the page cache ({e:#}): every start is warm");
            false
        }
    };
    for i in 0..sizes.starts {
        let (s, took, logged) = Server::start(bin, &data_dir, &log)?;
        let cold = cold && i == 0;
        println!(
            "    start {} ({}): first 200 on /healthz after {:.0} ms (server logged startup_ms={})",
            i + 1,
            if cold { "cold page cache" } else { "warm" },
            ms(took),
            logged.map_or("?".into(), |v| v.to_string())
        );
        startups.push(Startup { took, logged, cold });
        if i + 1 < sizes.starts {
            s.stop()?;
        } else {
            server = Some(s);
        }
    }
    let server = server.ok_or_else(|| anyhow!("no start"))?;

    // What the two pages hold, through the API.
    for path in [FIRST_PAGE, FILTERED_PAGE] {
        let body = http_get(&server, path, &token)?;
        let v: serde_json::Value = serde_json::from_str(&body).context("page is not JSON")?;
        let items = v["items"].as_array().map_or(0, Vec::len);
        println!(
            "    GET {path}: {items} items, {} bytes, next_cursor {}",
            body.len(),
            v["next_cursor"]
        );
    }

    // The pages' visitor: a viewer added while the server runs (through its admin socket),
    // signed in over HTTP as a browser is.
    let session = page_session(bin, &data_dir, &server);
    match &session {
        Ok(cookie) => {
            for path in [FIRST_ADDRESSES_PAGE, FILTERED_ADDRESSES_PAGE] {
                let (rows, bytes) = page_rows(&server, path, cookie)?;
                println!("    GET {path} as {PAGE_USER}: {rows} rows, {bytes} bytes");
            }
        }
        Err(e) => println!("    the pages cannot be measured: {e:#}"),
    }

    let (scenarios, pages) = if have_wrk() {
        let bearer = format!("Authorization: Bearer {token}");
        let mut api = Vec::new();
        let mut pages = Vec::new();
        let mut page_error = None;
        // Each page right after the API call it is compared with: the ratio is of the same
        // minutes on a shared machine.
        for (name, api_path, page_path) in LISTINGS {
            for conns in [1, 64] {
                let r = wrk(&server, api_path, &bearer, conns, sizes.secs)?;
                print_wrk("API", name, conns, &r);
                api.push(Scenario { name, conns, r });
                if let (Ok(cookie), None) = (&session, &page_error) {
                    let auth = format!("Cookie: weft_session={cookie}");
                    match wrk(&server, page_path, &auth, conns, sizes.secs) {
                        Ok(r) => {
                            print_wrk("page", name, conns, &r);
                            pages.push(Scenario { name, conns, r });
                        }
                        Err(e) => page_error = Some(e),
                    }
                }
            }
        }
        let pages = match (session, page_error) {
            (Err(e), _) | (_, Some(e)) => Err(e),
            // wrk counts a redirect as a success: the session must still open the page now,
            // or what was measured may have been 303s to the login page.
            (Ok(cookie), None) => page_rows(&server, FIRST_ADDRESSES_PAGE, &cookie)
                .context("after the runs")
                .map(|_| pages),
        };
        (Some(api), Some(pages))
    } else {
        println!(
            "    wrk is not installed: listing latency SKIPPED (install it: apt-get install wrk)"
        );
        (None, None)
    };
    server.stop()?;

    // The analysis: the same pages in-process, split into the store's read and the encoding.
    let store = Store::open(&db)?;
    let mut analysis = Vec::new();
    let mut decode_one = None;
    // What every request pays before its own work: a snapshot with every table opened (the
    // auth extractor takes one, the handler another), and the token look-up.
    let median_of = |f: &mut dyn FnMut() -> Result<()>| -> Result<Duration> {
        let mut d = Vec::new();
        for _ in 0..2_000 {
            let t = Instant::now();
            f()?;
            d.push(t.elapsed());
        }
        d.sort();
        Ok(pct(&d, 0.5))
    };
    let empty_read = median_of(&mut || Ok(store.read(|_| Ok(()))?))?;
    let auth = median_of(&mut || {
        let found = store.read(|r| r.token_by_secret(&token))?;
        if found.is_none() {
            bail!("the bench token is not in the store");
        }
        Ok(())
    })?;
    for (name, filter) in listing_filters() {
        let reps = if filter.q.is_some() {
            sizes.list_reps / 3
        } else {
            sizes.list_reps * 3
        };
        let mut read = Vec::new();
        let mut read_cpu = Vec::new();
        let mut encode = Vec::new();
        let mut count = Vec::new();
        let mut last = None;
        for _ in 0..reps.max(5) {
            let (t, c) = (Instant::now(), thread_cpu());
            let page = store.read(|r| r.list(&filter, None, 50))?;
            read.push(t.elapsed());
            read_cpu.push(thread_cpu().saturating_sub(c));
            let t = Instant::now();
            let bytes = serde_json::to_vec(&page)?;
            encode.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(store.read(|r| r.count(&filter, COUNT_BUDGET))?);
            count.push(t.elapsed());
            last = Some((page, bytes.len()));
        }
        read.sort();
        read_cpu.sort();
        encode.sort();
        count.sort();
        let (page, bytes) = last.ok_or_else(|| anyhow!("no page"))?;
        if decode_one.is_none()
            && let Some(rec) = page.items.first()
        {
            let raw = serde_json::to_vec(rec)?;
            let mut d = Vec::new();
            for _ in 0..2_000 {
                let t = Instant::now();
                let r: Record = serde_json::from_slice(&raw)?;
                d.push(t.elapsed());
                std::hint::black_box(r);
            }
            d.sort();
            decode_one = Some(pct(&d, 0.5));
        }
        analysis.push(ListAnalysis {
            name,
            items: page.items.len(),
            bytes,
            cursor: page.next_cursor.clone(),
            read,
            read_cpu,
            encode,
            count,
        });
    }
    store.close();
    Ok(ListingResults {
        records: sizes.records,
        db_bytes,
        startups,
        scenarios,
        pages,
        analysis,
        decode_one,
        empty_read,
        auth,
    })
}

/// An answer read by [`raw_http`].
struct RawResponse {
    status: u16,
    /// Header lines as they came, `(name, value)`.
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResponse {
    /// The value of cookie `name` set by this answer (`Set-Cookie: name=value; ...`).
    fn set_cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(h, _)| h.eq_ignore_ascii_case("set-cookie"))
            .find_map(|(_, v)| v.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.split(';').next())
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), with extra header lines
/// and an optional `(content type, body)`.
fn raw_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<(&str, &str)>,
) -> Result<RawResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if let Some((content_type, body)) = body {
        req.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    if let Some((_, body)) = body {
        req.push_str(body);
    }
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{method} {path}: no HTTP answer"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    // axum answers whole bodies with Content-Length; a chunked one would need unchunking.
    if headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    }) {
        bail!("{method} {path}: unexpected chunked answer");
    }
    Ok(RawResponse {
        status,
        headers,
        body: body.to_string(),
    })
}

fn http_get(server: &Server, path: &str, token: &str) -> Result<String> {
    let resp = raw_http(
        server.addr,
        "GET",
        path,
        &[format!("Authorization: Bearer {token}")],
        None,
    )?;
    if resp.status != 200 {
        bail!("GET {path}: {} {}", resp.status, resp.body);
    }
    Ok(resp.body)
}

/// Adds the page user to a running server's data dir (`weft user add`, password on stdin, over
/// the admin socket) and signs in; returns the `weft_session` cookie's value.
fn page_session(bin: &Path, data_dir: &Path, server: &Server) -> Result<String> {
    let mut child = weft_cmd(bin)
        .args(["user", "add", PAGE_USER, "--role", "viewer", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running weft user add")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin for weft user add"))?
        .write_all(format!("{PAGE_PASSWORD}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "weft user add failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    login(server, PAGE_USER, PAGE_PASSWORD)
}

/// Signs in as a browser does: `GET /login` gives the `weft_csrf` cookie and the form's hidden
/// `csrf` field, `POST /login` sends both back with the name and password and answers 303 with
/// the `weft_session` cookie. Returns that cookie's value.
fn login(server: &Server, name: &str, password: &str) -> Result<String> {
    let form = raw_http(server.addr, "GET", "/login", &[], None)?;
    if form.status != 200 {
        bail!("GET /login: {}", form.status);
    }
    let csrf_cookie = form
        .set_cookie("weft_csrf")
        .ok_or_else(|| anyhow!("GET /login set no weft_csrf cookie"))?;
    let csrf = hidden_field(&form.body, "csrf")
        .ok_or_else(|| anyhow!("no csrf field in the login form"))?;
    let body =
        serde_urlencoded::to_string([("csrf", csrf), ("name", name), ("password", password)])?;
    let resp = raw_http(
        server.addr,
        "POST",
        "/login",
        &[format!("Cookie: weft_csrf={csrf_cookie}")],
        Some(("application/x-www-form-urlencoded", &body)),
    )?;
    if resp.status != 303 {
        bail!("POST /login as {name}: {} {}", resp.status, resp.body);
    }
    resp.set_cookie("weft_session")
        .map(str::to_string)
        .ok_or_else(|| anyhow!("POST /login set no weft_session cookie"))
}

/// The value of the form field `name="NAME" value="..."` in a page.
fn hidden_field<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    let field = format!("name=\"{name}\" value=\"");
    let rest = &html[html.find(&field)? + field.len()..];
    rest.split('"').next()
}

/// Opens a page with the session; checks it is the addresses table (a 303 would be the login
/// page) and returns its rows and size.
fn page_rows(server: &Server, path: &str, session: &str) -> Result<(usize, usize)> {
    let resp = raw_http(
        server.addr,
        "GET",
        path,
        &[format!("Cookie: weft_session={session}")],
        None,
    )?;
    if resp.status != 200 {
        bail!("GET {path} with the session: {}", resp.status);
    }
    if !resp.body.contains("class=\"addresses\"") {
        bail!("GET {path}: no addresses table in the page");
    }
    let rows = resp.body.matches("<td><a href=\"/addresses/").count();
    Ok((rows, resp.body.len()))
}

fn print_wrk(what: &str, name: &str, conns: usize, r: &WrkResult) {
    println!(
        "    wrk {what} {name}, {conns} conn: p50 {}, p99 {}, {:.0} req/s, {} requests, {} errors; \
         server CPU {} per request; cores busy: server {:.2}, wrk {:.2} (of {})",
        fmt_ms(r.p50),
        fmt_ms(r.p99),
        r.rps,
        r.requests,
        r.errors,
        per_op_us(r.server_cpu, r.requests as usize),
        r.server_cpu.unwrap_or_default().as_secs_f64() / r.elapsed.as_secs_f64(),
        r.wrk_cpu.as_secs_f64() / r.elapsed.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

// ---------------------------------------------------------------------------------------------
// The summary.

fn print_summary(sizes: Sizes, durable: &Result<DurableResults>, listing: &Result<ListingResults>) {
    println!();
    println!(
        "==================================== weft server bench ===================================="
    );
    if sizes.quick {
        println!("(quick mode: small sizes; these are not the real figures)");
    }
    println!();
    println!(
        "1. Durable allocations over loopback (POST /api/v1/pools/{POOL}/allocations, keep-alive)"
    );
    match durable {
        Err(e) => println!("   FAILED: {e:#}"),
        Ok(d) => {
            let all: Vec<String> = d
                .dds
                .iter()
                .map(|x| format!("{:.0}", x.writes_per_s))
                .collect();
            println!(
                "   disk: dd bs=4k count={} oflag=dsync, same filesystem: {} writes/s (in run order)",
                sizes.dd_count,
                all.join(", ")
            );
            println!(
                "   baseline per run: the mean of the dd just before and just after it: 1 client {:.0}, 64 clients {:.0} writes/s",
                d.base_one(),
                d.base_many()
            );
            println!();
            println!(
                "   {:<34} {:>10} {:>8} {:>8} {:>10} {:>10} {:>10}  verdict",
                "", "per s", "× dd", "goal", "p50", "p99", "CPU each"
            );
            for (label, r, goal, base) in [
                ("HTTP allocations, 1 client", &d.one, 0.8, d.base_one()),
                ("HTTP allocations, 64 clients", &d.many, 5.0, d.base_many()),
            ] {
                let x = r.per_s() / base;
                println!(
                    "   {:<34} {:>10.0} {:>7.2}× {:>7}× {:>10} {:>10} {:>10}  {}",
                    label,
                    r.per_s(),
                    x,
                    goal,
                    fmt_ms(pct(&r.lat, 0.5)),
                    fmt_ms(pct(&r.lat, 0.99)),
                    per_op_us(r.cpu, r.n),
                    verdict(x >= goal)
                );
            }
            let base = d.mean_dd(&[0, 1, 2, 3]);
            for (label, r) in [
                ("in-process empty commits, 1 writer", &d.store_empty),
                ("in-process allocations, 1 writer", &d.store_one),
                ("in-process allocations, 64 writers", &d.store_many),
            ] {
                if let Some(r) = r {
                    println!(
                        "   {:<34} {:>10.0} {:>7.2}× {:>8} {:>10} {:>10} {:>10}  (analysis)",
                        label,
                        r.per_s(),
                        r.per_s() / base,
                        "",
                        fmt_ms(pct(&r.lat, 0.5)),
                        fmt_ms(pct(&r.lat, 0.99)),
                        per_op_us(r.cpu, r.n)
                    );
                }
            }
            println!(
                "   (CPU each: the server process's CPU over HTTP, this whole process's in-process; in-process × dd is against the mean of all dd runs)"
            );
            println!();
            println!(
                "   1 client: {:.0} allocs/s = {:.2}× dd (goal ≥ 0.8×: {})",
                d.one.per_s(),
                d.one.per_s() / d.base_one(),
                verdict(d.one.per_s() / d.base_one() >= 0.8)
            );
            println!(
                "   64 clients: {:.0} allocs/s = {:.2}× dd (goal ≥ 5×: {})",
                d.many.per_s(),
                d.many.per_s() / d.base_many(),
                verdict(d.many.per_s() / d.base_many() >= 5.0)
            );
        }
    }
    println!();
    println!(
        "2. Allocation p99 at 1,000,000 ÷ 1,000 allocated: see `cargo bench -p weft --bench allocation`."
    );
    println!();
    match listing {
        Err(e) => println!("3. Listing and startup\n   FAILED: {e:#}"),
        Ok(l) => {
            println!(
                "3. Listing with {} records (store file {:.0} MB), over loopback",
                l.records,
                l.db_bytes as f64 / 1e6
            );
            println!("   first page: GET {FIRST_PAGE}");
            println!("   filtered:   GET {FILTERED_PAGE}");
            match &l.scenarios {
                None => println!("   wrk is not installed: latency SKIPPED (apt-get install wrk)"),
                Some(sc) => {
                    println!();
                    println!(
                        "   {:<12} {:>8} {:>10} {:>10} {:>10} {:>8} {:>12}  verdict",
                        "page", "clients", "p50", "p99", "req/s", "goal p99", "server CPU/req"
                    );
                    for s in sc {
                        let goal = if s.conns == 1 { 1.0 } else { 10.0 };
                        let mut v = verdict(ms(s.r.p99) <= goal).to_string();
                        if s.r.errors > 0 {
                            v.push_str(&format!(" ({} errors!)", s.r.errors));
                        }
                        println!(
                            "   {:<12} {:>8} {:>10} {:>10} {:>10.0} {:>5} ms {:>12}  {}",
                            s.name,
                            s.conns,
                            fmt_ms(s.r.p50),
                            fmt_ms(s.r.p99),
                            s.r.rps,
                            goal,
                            per_op_us(s.r.server_cpu, s.r.requests as usize),
                            v
                        );
                    }
                    println!();
                    for name in ["first page", "filtered"] {
                        let get = |c: usize| {
                            sc.iter()
                                .find(|s| s.name == name && s.conns == c)
                                .map(|s| s.r)
                        };
                        if let (Some(a), Some(b)) = (get(1), get(64)) {
                            println!(
                                "   list {name} p50/p99: 1 client {} / {}, 64 clients {} / {}",
                                fmt_ms(a.p50),
                                fmt_ms(a.p99),
                                fmt_ms(b.p50),
                                fmt_ms(b.p99)
                            );
                        }
                    }
                }
            }
            let worst = l.startups.iter().map(|s| s.took).max().unwrap_or_default();
            println!(
                "   startup ms (spawn to first 200 on /healthz): {} (worst {:.0} ms; goal < 1000 ms: {}); server-logged startup_ms: {}",
                l.startups
                    .iter()
                    .map(|s| format!("{:.0}{}", ms(s.took), if s.cold { " cold" } else { "" }))
                    .collect::<Vec<_>>()
                    .join(", "),
                ms(worst),
                verdict(ms(worst) < 1000.0),
                l.startups
                    .iter()
                    .map(|s| s.logged.map_or("?".into(), |v| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!();
            println!(
                "   analysis, in-process (same queries, no HTTP; CPU = the reading thread's CPU time):"
            );
            for a in &l.analysis {
                // Every address from 10.0.0.1 on is stored (the gateway reserved, then the
                // allocations), so the cursor tells how many rows the page examined.
                let first = if a.name == "filtered" { 2 } else { 1 };
                let rows = a
                    .cursor
                    .as_deref()
                    .and_then(|c| c.parse::<std::net::Ipv4Addr>().ok())
                    .map(|c| {
                        (u32::from(c) - u32::from(std::net::Ipv4Addr::new(10, 0, 0, first)) + 1)
                            .to_string()
                    })
                    .unwrap_or_else(|| "?".into());
                println!(
                    "   {:<12} store read p50 {} p99 {} (CPU p50 {} p99 {}); JSON encode p50 {}; \
                     {} items from ~{} rows examined, {} bytes",
                    a.name,
                    fmt_ms(pct(&a.read, 0.5)),
                    fmt_ms(pct(&a.read, 0.99)),
                    fmt_ms(pct(&a.read_cpu, 0.5)),
                    fmt_ms(pct(&a.read_cpu, 0.99)),
                    fmt_ms(pct(&a.encode, 0.5)),
                    a.items,
                    rows,
                    a.bytes,
                );
            }
            println!(
                "   per request before any work: empty Store::read (snapshot + open all tables) {}, token look-up {}",
                fmt_ms(l.empty_read),
                fmt_ms(l.auth)
            );
            if let Some(d) = l.decode_one {
                println!(
                    "   JSON decode of one stored record: {:.2} µs (×{} rows, a full MAX_SCAN page: ~{:.1} ms for decoding alone)",
                    d.as_secs_f64() * 1e6,
                    weft::store::MAX_SCAN,
                    d.as_secs_f64() * 1e3 * weft::store::MAX_SCAN as f64
                );
            }
        }
    }
    println!();
    match listing {
        Err(_) => println!("4. The addresses page: not measured (the listing part failed)"),
        Ok(l) => print_pages(l),
    }
    println!(
        "============================================================================================"
    );
}

/// Issue 4's figure: the addresses page's latency, against the API's on the same rows.
fn print_pages(l: &ListingResults) {
    println!(
        "4. The addresses page with {} records, over loopback, signed in as a viewer",
        l.records
    );
    for (name, api, page) in LISTINGS {
        println!("   {name:<11} GET {page}   (API baseline: GET {api}, the same 50 rows)");
    }
    let (Some(api), Some(pages)) = (&l.scenarios, &l.pages) else {
        println!("   wrk is not installed: SKIPPED (apt-get install wrk)");
        return;
    };
    let pages = match pages {
        Ok(p) => p,
        Err(e) => {
            println!("   FAILED: {e:#}");
            return;
        }
    };
    println!();
    println!(
        "   {:<12} {:>8} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9}  verdict",
        "page",
        "clients",
        "p50",
        "p99",
        "req/s",
        "goal p99",
        "API p50",
        "API p99",
        "×API p50",
        "×API p99"
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    for p in pages {
        let Some(base) = api.iter().find(|a| a.name == p.name && a.conns == p.conns) else {
            continue;
        };
        let mut v = verdict(ms(p.r.p99) <= PAGE_GOAL_P99_MS).to_string();
        if p.r.errors > 0 {
            v.push_str(&format!(" ({} errors!)", p.r.errors));
        }
        println!(
            "   {:<12} {:>8} {:>10} {:>10} {:>8.0} {:>5} ms {:>10} {:>10} {:>8.1}× {:>8.1}×  {}",
            p.name,
            p.conns,
            fmt_ms(p.r.p50),
            fmt_ms(p.r.p99),
            p.r.rps,
            PAGE_GOAL_P99_MS,
            fmt_ms(base.r.p50),
            fmt_ms(base.r.p99),
            ratio(p.r.p50, base.r.p50),
            ratio(p.r.p99, base.r.p99),
            v
        );
    }
    println!();
    for (name, _, _) in LISTINGS {
        let get = |c: usize| pages.iter().find(|s| s.name == name && s.conns == c);
        if let (Some(a), Some(b)) = (get(1), get(64)) {
            println!(
                "   addresses page, {name}, median/p99: 1 client {} / {}, 64 clients {} / {} \
                 (goal p99 ≤ {PAGE_GOAL_P99_MS} ms: {})",
                fmt_ms(a.r.p50),
                fmt_ms(a.r.p99),
                fmt_ms(b.r.p50),
                fmt_ms(b.r.p99),
                verdict(ms(a.r.p99.max(b.r.p99)) <= PAGE_GOAL_P99_MS)
            );
        }
    }
    println!(
        "   analysis, in-process: what the page reads beyond the API's page, the counts by status \
         of its filter (budget {COUNT_BUDGET} rows):"
    );
    for a in &l.analysis {
        println!(
            "   {:<12} counts p50 {} p99 {} (the page of rows itself: p50 {})",
            a.name,
            fmt_ms(pct(&a.count, 0.5)),
            fmt_ms(pct(&a.count, 0.99)),
            fmt_ms(pct(&a.read, 0.5)),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // As criterion does: without --bench (cargo test --benches), or with --test, a smoke run.
    let test_mode = has("--test") || !has("--bench");
    let sizes = Sizes::pick(test_mode || env_on("WEFT_BENCH_QUICK"));

    let bin = weft_bin();
    if !bin.is_file() {
        eprintln!(
            "weft binary not found at {}: build it first with `cargo build --release -p weft`, \
             or point WEFT_BIN at one",
            bin.display()
        );
        if test_mode {
            eprintln!("(test mode: skipping the server bench)");
            return;
        }
        std::process::exit(1);
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bin_time = fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(s)) = (bin_time, newest_mtime(&src))
        && s > b
    {
        println!(
            "WARNING: {} is older than host/src: run `cargo build --release -p weft` first",
            bin.display()
        );
    }
    println!("load average at start: {}", loadavg());
    println!(
        "weft server bench: binary {}, {} mode",
        bin.display(),
        if sizes.quick { "quick" } else { "full" }
    );

    let work = target_dir().join("bench-data");
    if let Err(e) = fs::create_dir_all(&work) {
        eprintln!("cannot create {}: {e}", work.display());
        std::process::exit(1);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let t = Instant::now();
    let durable = durable_part(&rt, &bin, &work, sizes);
    if let Err(e) = &durable {
        println!("[1] failed: {e:#}");
    }
    let listing = listing_part(&bin, &work, sizes);
    if let Err(e) = &listing {
        println!("[3] failed: {e:#}");
    }
    print_summary(sizes, &durable, &listing);
    println!(
        "(load average at the end: {}; {} cores: figures taken on a busy machine are noisy)",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("(whole run: {:.0} s)", t.elapsed().as_secs_f64());
    if durable.is_err() || listing.is_err() {
        std::process::exit(1);
    }
}
