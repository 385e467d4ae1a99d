//! Next-free allocation cost against pool fill, through the real store and over the pure
//! allocator.
//!
//! Run:
//!   cargo bench -p weft --bench allocation              # full run, about 2 to 3 minutes
//!   cargo bench -p weft --bench allocation -- --test    # test mode: small sizes, each bench once
//!   cargo test -p weft --benches                        # the same test mode, as CI runs it
//!
//! `WEFT_BENCH_QUICK=1` forces the small sizes in any mode; `WEFT_BENCH_SUMMARY=0` skips the
//! summary and the p99 study (criterion's groups only).
//!
//! Two questions of the issue, and how they are answered:
//!
//! 1. Next-free on a /16 at 0 %, 50 % and 99.9 % full, time per allocation; goal: 99.9 % / 0 %
//!    ≤ 1.5. Criterion groups `store/next_free` (redb store) and `mem/next_free` (the pure
//!    allocator over `MemIndex`, measured the same way as the store), one benchmark per fill
//!    level, one iteration = one allocation. After criterion, the same store fixtures are
//!    measured once more with our own clock and a line `ratio 99.9%/0% = X` is printed, with
//!    the commit time of the measured transactions beside it. That is done twice: with 32
//!    allocations per transaction (where consecutive allocations of the lower levels share
//!    B-tree leaves, written once per transaction) and with each allocation alone in its
//!    transaction, as one client's requests are (every level then writes its leaves afresh).
//! 2. Allocation p99 with 1,000,000 addresses allocated ÷ with 1,000 allocated; goal ≤ 1.3. A
//!    /8 pool is filled to 1,000 and then to 1,000,000 allocations (bulk, in transactions of
//!    50,000), two stores side by side; in each state 3,000 single allocations are timed one by
//!    one, in transactions of 500 that are each released afterwards, the two states taking
//!    turns; p50, p99 and the ratio of the p99s are printed.
//!
//! How the store is measured:
//!
//! - Every measured allocation is a real `Writer::allocate` (pool look-up by name, record,
//!   status index, counters, history, free index) inside a `write_blocking` transaction. The
//!   clock runs around each `allocate` call inside the closure, so the transaction's begin and
//!   its durable commit (an fsync) are not in the figure: with the commit in, disk noise would
//!   swamp what the fill level changes. The durable round trip (one allocation per
//!   `write_blocking`, commit included) is reported beside it in the summary, for information.
//! - A fill level has to stay put while it is measured. Each measured batch of `batch`
//!   allocations (one transaction) is followed by an untimed transaction that releases those
//!   same addresses, so the number held never drifts. Released addresses go to the back of
//!   the released queue, and next-free drains fresh (never handed out) addresses first:
//!   * at 0 % and 50 %, every measured allocation takes a fresh address (the lowest one);
//!   * at 99.9 %, the fixture is built as a pool that was filled completely and then had 0.1 %
//!     of its addresses, spread across the pool, released: no fresh address is left, and every
//!     measured allocation takes the oldest released address. That is what a nearly full pool
//!     looks like after it has lived for a while, and it is the dearer path (queue look-up and
//!     removal, and a stored record to load). A pool filled in one sweep to 99.9 % still has
//!     a fresh tail; that case is printed too ("fresh tail").
//! - Churn still changes the state slowly: released records stay, history grows, and at 0 % /
//!   50 % fresh addresses get used up while the released queue grows. So each fixture is a copy
//!   of a template file built once per level, and serves at most `budget` allocations before
//!   it is replaced by a new copy (untimed). Every level gets the same budget.

use criterion::{Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft::ipam::Layout;
use weft::ipam::alloc::{self, MemIndex};
use weft::store::{AllocationRequest, PoolSpec, Store};

const POOL: &str = "bench";
const ACTOR: &str = "bench";

/// How big everything is: a real run, or the small sizes of test mode.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    quick: bool,
    /// Prefix length of the fill-level pool (a /16 in a real run).
    level_prefix: u8,
    /// Allocations timed per write transaction (capped by the free addresses of the level).
    batch: usize,
    /// Allocations one store fixture serves before it is replaced by a fresh copy.
    budget: u64,
    /// Batches per level measured for the summary, in this many rounds (the levels take turns).
    summary_batches: usize,
    rounds: usize,
    /// Durable round trips per level (one allocation per committed transaction).
    durable_samples: usize,
    /// Allocations per level timed alone in their transaction (as one client's requests
    /// are), commit excluded.
    single_samples: usize,
    /// Allocations per bulk-fill transaction.
    fill_chunk: u64,
    /// Allocations held in the two states of the p99 study.
    p99_small: u64,
    p99_large: u64,
    /// Timed allocations per state of the p99 study, and per transaction (the states take
    /// turns, one transaction each).
    p99_samples: usize,
    p99_txn: usize,
    /// Durable round trips per state of the p99 study.
    p99_durable: usize,
}

impl Sizes {
    fn pick(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                level_prefix: 20,
                batch: 32,
                budget: 512,
                summary_batches: 4,
                rounds: 2,
                durable_samples: 4,
                single_samples: 8,
                fill_chunk: 2_000,
                p99_small: 100,
                p99_large: 3_000,
                p99_samples: 200,
                p99_txn: 100,
                p99_durable: 4,
            }
        } else {
            Sizes {
                quick,
                level_prefix: 16,
                batch: 32,
                budget: 16_384,
                summary_batches: 300,
                rounds: 10,
                durable_samples: 120,
                single_samples: 2_000,
                fill_chunk: 50_000,
                p99_small: 1_000,
                p99_large: 1_000_000,
                p99_samples: 3_000,
                p99_txn: 500,
                p99_durable: 200,
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Level {
    name: &'static str,
    slug: &'static str,
    frac: f64,
}

const LEVELS: [Level; 3] = [
    Level {
        name: "0%",
        slug: "0",
        frac: 0.0,
    },
    Level {
        name: "50%",
        slug: "50",
        frac: 0.5,
    },
    Level {
        name: "99.9%",
        slug: "99_9",
        frac: 0.999,
    },
];

/// Fill levels of this fraction or more are built full-then-released (see the top comment).
const NEARLY_FULL: f64 = 0.99;

fn request() -> AllocationRequest {
    AllocationRequest {
        address: None,
        owner: Some("bench".into()),
        hostname: None,
    }
}

fn open_with_pool(path: &Path, cidr: &str) -> Store {
    let store = Store::open(path).expect("open store");
    let spec = PoolSpec {
        name: POOL.into(),
        cidr: cidr.parse().expect("cidr"),
        description: None,
        reserve_gateway: true,
        static_ranges: Vec::new(),
    };
    store
        .write_blocking(move |w| w.create_pool(&spec, ACTOR))
        .expect("create pool");
    store
}

/// Allocates `n` next-free addresses in transactions of `chunk`; returns the time of each
/// transaction (commit included) and its size.
fn fill(store: &Store, n: u64, chunk: u64) -> Vec<(Duration, u64)> {
    let mut left = n;
    let mut times = Vec::new();
    while left > 0 {
        let m = left.min(chunk);
        let t = Instant::now();
        store
            .write_blocking(move |w| {
                let req = request();
                for _ in 0..m {
                    w.allocate(POOL, &req, None, ACTOR)?;
                }
                Ok(())
            })
            .expect("bulk fill");
        times.push((t.elapsed(), m));
        left -= m;
    }
    times
}

/// `k` next-free allocations in one transaction, each timed on its own (commit excluded).
fn timed_allocations(store: &Store, k: usize) -> Vec<(IpAddr, Duration)> {
    store
        .write_blocking(move |w| {
            let req = request();
            let mut out = Vec::with_capacity(k);
            for _ in 0..k {
                let t = Instant::now();
                let rec = w.allocate(POOL, &req, None, ACTOR)?;
                let dt = t.elapsed();
                out.push((rec.address, dt));
            }
            Ok(out)
        })
        .expect("timed allocations")
}

/// `k` next-free allocations, each its own durable transaction, timed round trip.
fn durable_allocations(store: &Store, k: usize) -> Vec<(IpAddr, Duration)> {
    (0..k)
        .map(|_| {
            let t = Instant::now();
            let rec = store
                .write_blocking(|w| w.allocate(POOL, &request(), None, ACTOR))
                .expect("durable allocation");
            (rec.address, t.elapsed())
        })
        .collect()
}

fn release(store: &Store, addrs: Vec<IpAddr>) {
    store
        .write_blocking(move |w| {
            for ip in &addrs {
                w.release(*ip, ACTOR)?;
            }
            Ok(())
        })
        .expect("release");
}

fn utilization(store: &Store) -> f64 {
    store
        .read(|r| r.pool(POOL))
        .expect("read pool")
        .stats()
        .utilization
}

/// Drops a store and waits until its writer thread has let go of the file (the integrity
/// check needs the only handle), so the file can be copied as a cleanly closed database.
fn close(store: Store, path: &Path) {
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Store::check_integrity(path) {
            Ok(true) => return,
            Ok(false) => panic!("{} fails redb's integrity check", path.display()),
            Err(e) if Instant::now() > deadline => panic!("{} stays open: {e}", path.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// One fill level of the /16 pool: a template file, and the live copy being measured.
struct Fixture {
    level: Level,
    sizes: Sizes,
    dir: PathBuf,
    template: PathBuf,
    /// Allocations per measured transaction: the batch size, capped by the free addresses.
    k: usize,
    /// Utilization of the template.
    utilization: f64,
    /// A sweep-filled pool's last fresh addresses, timed while the 99.9 % template was built.
    fresh_tail: Vec<Duration>,
    live: Option<(Store, PathBuf)>,
    /// Round trip of each measured allocation transaction less the time inside `allocate`:
    /// mostly the durable commit.
    commits: Vec<Duration>,
    served: u64,
    copies: u32,
    build_time: Duration,
}

impl Fixture {
    fn new(dir: &Path, sizes: Sizes, level: Level) -> Fixture {
        let started = Instant::now();
        let template = dir.join(format!("template-{}.redb", level.slug));
        let cidr = format!("10.0.0.0/{}", sizes.level_prefix);
        let layout = Layout::new(cidr.parse().expect("cidr"), true, &[]).expect("layout");
        let store = open_with_pool(&template, &cidr);
        // The gateway is reserved at creation and counts as held.
        let total = layout.total() as u64;
        let held = ((level.frac * total as f64).ceil() as u64).max(1);
        let free = total - held;
        let mut fresh_tail = Vec::new();
        if level.frac < NEARLY_FULL {
            fill(&store, held - 1, sizes.fill_chunk);
        } else {
            // Sweep up to just below the level, time the last fresh addresses at ~99.9 %
            // (informational), fill up completely, then give back `free` addresses spread
            // evenly over the pool: they wait in the released queue, no fresh address is left.
            let tail = (sizes.batch as u64).min(free);
            fill(&store, held - 1 - tail, sizes.fill_chunk);
            let got = timed_allocations(&store, tail as usize);
            fresh_tail = got.iter().map(|(_, d)| *d).collect();
            fill(&store, free, sizes.fill_chunk);
            let allocatable = total - 1; // usable addresses less the gateway
            let first = layout.usable.start + 1;
            let spread: Vec<IpAddr> = (0..free)
                .map(|i| {
                    layout
                        .key(first + (i * allocatable / free.max(1)) as u128)
                        .ip()
                })
                .collect();
            release(&store, spread);
        }
        let utilization = utilization(&store);
        close(store, &template);
        Fixture {
            level,
            sizes,
            dir: dir.to_path_buf(),
            template,
            k: sizes.batch.min(free.max(1) as usize),
            utilization,
            fresh_tail,
            live: None,
            commits: Vec::new(),
            served: 0,
            copies: 0,
            build_time: started.elapsed(),
        }
    }

    /// Replaces the live copy by a fresh copy of the template, and warms redb's cache with one
    /// untimed batch.
    fn renew(&mut self) {
        if let Some((store, path)) = self.live.take() {
            drop(store);
            // The writer thread may still hold it open for a moment: unlinking is fine.
            let _ = std::fs::remove_file(path);
        }
        self.copies += 1;
        let path = self
            .dir
            .join(format!("live-{}-{}.redb", self.level.slug, self.copies));
        std::fs::copy(&self.template, &path).expect("copy template");
        let store = Store::open(&path).expect("open copy");
        let warm = timed_allocations(&store, self.k);
        release(&store, warm.into_iter().map(|(ip, _)| ip).collect());
        self.served = self.k as u64;
        self.live = Some((store, path));
    }

    fn store(&mut self, upcoming: u64) -> &Store {
        if self.live.is_none() || self.served + upcoming > self.sizes.budget {
            self.renew();
        }
        self.served += upcoming;
        &self.live.as_ref().expect("live store").0
    }

    /// One measured batch of `m` (≤ k) allocations, released afterwards (untimed).
    fn batch(&mut self, m: usize) -> Vec<Duration> {
        let store = self.store(m as u64);
        let t = Instant::now();
        let got = timed_allocations(store, m);
        let round_trip = t.elapsed();
        let times: Vec<Duration> = got.iter().map(|(_, d)| *d).collect();
        release(store, got.into_iter().map(|(ip, _)| ip).collect());
        self.commits
            .push(round_trip.saturating_sub(times.iter().sum()));
        times
    }

    /// `m` (≤ k) durable round trips, released afterwards (untimed).
    fn durable(&mut self, m: usize) -> Vec<Duration> {
        let store = self.store(m as u64);
        let got = durable_allocations(store, m);
        let times = got.iter().map(|(_, d)| *d).collect();
        release(store, got.into_iter().map(|(ip, _)| ip).collect());
        times
    }

    /// For criterion's `iter_custom`: the summed time of `iters` allocations.
    fn measure(&mut self, iters: u64) -> Duration {
        let mut left = iters;
        let mut total = Duration::ZERO;
        while left > 0 {
            let m = left.min(self.k as u64) as usize;
            total += self.batch(m).iter().sum::<Duration>();
            left -= m as u64;
        }
        total
    }
}

/// Sorted samples with nearest-rank percentiles.
struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn new(mut v: Vec<Duration>) -> Stats {
        v.sort();
        Stats { sorted: v }
    }
    fn pct(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.sorted.len() as f64).ceil() as usize).clamp(1, self.sorted.len());
        self.sorted[rank - 1]
    }
    fn mean(&self) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        self.sorted.iter().sum::<Duration>() / self.sorted.len() as u32
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn verdict(ratio: f64, goal: f64) -> &'static str {
    if ratio <= goal { "meets" } else { "MISSES" }
}

fn store_group(c: &mut Criterion, fixtures: &mut [Option<Fixture>], dir: &Path, sizes: Sizes) {
    let mut group = c.benchmark_group("store/next_free");
    group
        .throughput(Throughput::Elements(1))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    for (slot, level) in fixtures.iter_mut().zip(LEVELS) {
        group.bench_function(format!("/{} {}", sizes.level_prefix, level.name), |b| {
            let f = slot.get_or_insert_with(|| Fixture::new(dir, sizes, level));
            b.iter_custom(|iters| f.measure(iters));
        });
    }
    group.finish();
}

/// The pure allocator at one fill level of the /16: a template index, and a working copy.
struct MemFixture {
    layout: Layout,
    template: MemIndex,
    work: MemIndex,
    /// Allocations per timed run, capped by the free addresses (as for the store).
    k: usize,
    served: u64,
    budget: u64,
}

fn ok<T>(r: Result<T, std::convert::Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => match e {},
    }
}

impl MemFixture {
    /// Built the same way as the store's templates: swept to the level, or for 99.9 % filled
    /// up and then 0.1 % given back, spread across the pool.
    fn new(layout: &Layout, level: Level, sizes: Sizes) -> MemFixture {
        let mut idx = MemIndex::default();
        ok(alloc::init(&mut idx, layout));
        let total = layout.total() as u64;
        let held = ((level.frac * total as f64).ceil() as u64).max(1);
        let free = total - held;
        if level.frac < NEARLY_FULL {
            for _ in 1..held {
                ok(alloc::take_next(&mut idx, layout)).expect("not full yet");
            }
        } else {
            while ok(alloc::take_next(&mut idx, layout)).is_some() {}
            let allocatable = total - 1;
            let first = layout.usable.start + 1;
            for i in 0..free {
                ok(alloc::give_back(
                    &mut idx,
                    layout,
                    first + (i * allocatable / free.max(1)) as u128,
                ));
            }
        }
        MemFixture {
            layout: layout.clone(),
            work: idx.clone(),
            template: idx,
            k: sizes.batch.min(free.max(1) as usize),
            served: 0,
            budget: sizes.budget,
        }
    }

    /// For `iter_custom`: `iters` next-free allocations timed in runs of at most `k`, each run
    /// given back afterwards (untimed); the working copy is renewed from the template (untimed)
    /// after `budget` allocations, exactly as the store fixtures are.
    fn measure(&mut self, iters: u64) -> Duration {
        let mut left = iters;
        let mut total = Duration::ZERO;
        let mut got = Vec::with_capacity(self.k);
        while left > 0 {
            let m = left.min(self.k as u64) as usize;
            if self.served + m as u64 > self.budget {
                self.work = self.template.clone();
                self.served = 0;
            }
            let t = Instant::now();
            for _ in 0..m {
                got.push(ok(alloc::take_next(
                    &mut self.work,
                    black_box(&self.layout),
                )));
            }
            total += t.elapsed();
            for v in got.drain(..) {
                ok(alloc::give_back(
                    &mut self.work,
                    &self.layout,
                    v.expect("a free address"),
                ));
            }
            self.served += m as u64;
            left -= m as u64;
        }
        total
    }
}

fn mem_group(c: &mut Criterion, sizes: Sizes) {
    let cidr = format!("10.0.0.0/{}", sizes.level_prefix);
    let layout = Layout::new(cidr.parse().expect("cidr"), true, &[]).expect("layout");
    let mut group = c.benchmark_group("mem/next_free");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for level in LEVELS {
        let mut fixture: Option<MemFixture> = None;
        group.bench_function(format!("/{} {}", sizes.level_prefix, level.name), |b| {
            let f = fixture.get_or_insert_with(|| MemFixture::new(&layout, level, sizes));
            b.iter_custom(|iters| f.measure(iters));
        });
    }
    group.finish();
}

fn level_summary(fixtures: &mut [Option<Fixture>], dir: &Path, sizes: Sizes) {
    println!();
    println!(
        "== next-free on a /{} (own clock: each allocate() timed inside its transaction, commit excluded) ==",
        sizes.level_prefix
    );
    let mut fs: Vec<&mut Fixture> = fixtures
        .iter_mut()
        .zip(LEVELS)
        .map(|(slot, level)| slot.get_or_insert_with(|| Fixture::new(dir, sizes, level)))
        .collect();
    let mut samples = vec![Vec::new(); fs.len()];
    let mut singles = vec![Vec::new(); fs.len()];
    let mut durable = vec![Vec::new(); fs.len()];
    for f in fs.iter_mut() {
        f.commits.clear();
    }
    // The levels take turns, round by round, so that a change in the machine's load during
    // the run weighs on all of them alike.
    let per_round = sizes.summary_batches.div_ceil(sizes.rounds);
    let durable_per_round = sizes.durable_samples.div_ceil(sizes.rounds);
    let singles_per_round = sizes.single_samples.div_ceil(sizes.rounds);
    for _ in 0..sizes.rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            for _ in 0..per_round {
                let k = f.k;
                samples[i].extend(f.batch(k));
            }
            let commits = f.commits.len();
            for _ in 0..singles_per_round {
                singles[i].extend(f.batch(1));
            }
            // The commit figure is the batches' alone.
            f.commits.truncate(commits);
            let mut left = durable_per_round;
            while left > 0 {
                let m = f.k.min(left);
                durable[i].extend(f.durable(m));
                left -= m;
            }
        }
    }
    let mut means = Vec::new();
    let mut single_means = Vec::new();
    for (((f, samples), singles), durable) in fs.into_iter().zip(samples).zip(singles).zip(durable)
    {
        let commits = Stats::new(f.commits.split_off(0));
        let s = Stats::new(samples);
        let d = Stats::new(durable);
        println!(
            "{:>6} (utilization {:7.3}%): mean {:7.2} µs  p50 {:7.2} µs  p99 {:7.2} µs  [n={}, {} per txn]",
            f.level.name,
            f.utilization * 100.0,
            us(s.mean()),
            us(s.pct(0.5)),
            us(s.pct(0.99)),
            s.sorted.len(),
            f.k,
        );
        let one = Stats::new(singles);
        println!(
            "       alone in its transaction: mean {:7.2} µs  p50 {:7.2} µs  p99 {:7.2} µs  [n={}, 1 per txn]",
            us(one.mean()),
            us(one.pct(0.5)),
            us(one.pct(0.99)),
            one.sorted.len(),
        );
        single_means.push((one.mean(), one.pct(0.5)));
        println!(
            "       commit of a {}-allocation transaction: p50 {:8.1} µs  p99 {:8.1} µs   durable round trip of 1 allocation: p50 {:8.1} µs  p99 {:8.1} µs  [n={}]",
            f.k,
            us(commits.pct(0.5)),
            us(commits.pct(0.99)),
            us(d.pct(0.5)),
            us(d.pct(0.99)),
            d.sorted.len(),
        );
        if !f.fresh_tail.is_empty() {
            let t = Stats::new(f.fresh_tail.clone());
            println!(
                "       (fresh tail of a sweep-filled pool at ~{}: mean {:7.2} µs  p50 {:7.2} µs  [n={}])",
                f.level.name,
                us(t.mean()),
                us(t.pct(0.5)),
                t.sorted.len()
            );
        }
        println!(
            "       (template built in {:.1} s; {} fixture copies used)",
            f.build_time.as_secs_f64(),
            f.copies
        );
        means.push((s.mean(), s.pct(0.5)));
    }
    let ratios = |m: &[(Duration, Duration)]| {
        let ((m0, p0), (m9, p9)) = (m[0], m[m.len() - 1]);
        (
            m9.as_secs_f64() / m0.as_secs_f64(),
            p9.as_secs_f64() / p0.as_secs_f64(),
        )
    };
    let (ratio, p50) = ratios(&means);
    println!(
        "ratio 99.9%/0% = {ratio:.3} (mean; p50: {p50:.3}), {} allocations per transaction   goal ≤ 1.5: {}",
        sizes.batch,
        verdict(ratio, 1.5)
    );
    // One client's allocations: each its own transaction. The batch above favours the lower
    // levels, whose consecutive allocations share B-tree leaves; here every level writes its
    // leaves afresh.
    let (ratio, p50) = ratios(&single_means);
    println!(
        "ratio 99.9%/0% = {ratio:.3} (mean; p50: {p50:.3}), 1 allocation per transaction   goal ≤ 1.5: {}",
        verdict(ratio, 1.5)
    );
}

/// One state of the p99 study: a /8 pool with a number of addresses allocated.
struct Held {
    store: Store,
    count: u64,
    samples: Vec<Duration>,
    durable: Vec<Duration>,
}

impl Held {
    fn new(dir: &Path, count: u64, sizes: Sizes) -> Held {
        let store = open_with_pool(&dir.join(format!("held-{count}.redb")), "10.0.0.0/8");
        let t = Instant::now();
        let chunks = fill(&store, count, sizes.fill_chunk);
        if chunks.len() > 1 {
            // Bulk cost per allocation of each fill transaction, commit included: a cost that
            // grew with the number held would show here as a rising row.
            let per: Vec<String> = chunks
                .iter()
                .map(|(d, n)| format!("{:.1}", us(*d) / *n as f64))
                .collect();
            println!(
                "  fill to {count}: {:.1} s; µs per allocation in each transaction of {}: {}",
                t.elapsed().as_secs_f64(),
                sizes.fill_chunk,
                per.join(" "),
            );
        }
        Held {
            store,
            count,
            samples: Vec::new(),
            durable: Vec::new(),
        }
    }

    /// One transaction of `n` single allocations timed one by one, released afterwards.
    fn sample(&mut self, n: usize) -> Vec<Duration> {
        let got = timed_allocations(&self.store, n);
        let times = got.iter().map(|(_, d)| *d).collect();
        release(&self.store, got.into_iter().map(|(ip, _)| ip).collect());
        times
    }
}

fn p99_study(dir: &Path, sizes: Sizes) {
    println!();
    println!(
        "== allocation latency on a /8 with {} vs {} allocated ==",
        sizes.p99_small, sizes.p99_large
    );
    let mut states = [
        Held::new(dir, sizes.p99_small, sizes),
        Held::new(dir, sizes.p99_large, sizes),
    ];
    // One untimed transaction each first, so both start with a warm cache; then the two states
    // take turns, one transaction each per round, so that the machine's load weighs on both
    // alike.
    for h in states.iter_mut() {
        h.sample(sizes.p99_txn);
    }
    let rounds = sizes.p99_samples.div_ceil(sizes.p99_txn);
    let durable_per_round = sizes.p99_durable.div_ceil(rounds);
    for _ in 0..rounds {
        for h in states.iter_mut() {
            let got = h.sample(sizes.p99_txn);
            h.samples.extend(got);
            let got = durable_allocations(&h.store, durable_per_round);
            h.durable.extend(got.iter().map(|(_, d)| *d));
            release(&h.store, got.into_iter().map(|(ip, _)| ip).collect());
        }
    }
    let mut rows = Vec::new();
    for h in states {
        let s = Stats::new(h.samples);
        let d = Stats::new(h.durable);
        println!(
            "  {:>9} allocated: p50 {:7.2} µs  p99 {:7.2} µs  mean {:7.2} µs  max {:8.1} µs  [n={}, {} per txn]   durable round trip: p50 {:8.1} µs  p99 {:8.1} µs  [n={}]",
            h.count,
            us(s.pct(0.5)),
            us(s.pct(0.99)),
            us(s.mean()),
            us(s.pct(1.0)),
            s.sorted.len(),
            sizes.p99_txn,
            us(d.pct(0.5)),
            us(d.pct(0.99)),
            d.sorted.len(),
        );
        rows.push((s, d));
    }
    let file = std::fs::metadata(dir.join(format!("held-{}.redb", sizes.p99_large)))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "  database file with {} allocated: {:.0} MiB",
        sizes.p99_large,
        file as f64 / (1024.0 * 1024.0)
    );
    let (small, large) = (&rows[0].0, &rows[1].0);
    let ratio = large.pct(0.99).as_secs_f64() / small.pct(0.99).as_secs_f64();
    println!(
        "ratio p99 {}/{} = {:.3} (p50: {:.3}; durable p99: {:.3})   goal ≤ 1.3: {}",
        sizes.p99_large,
        sizes.p99_small,
        ratio,
        large.pct(0.5).as_secs_f64() / small.pct(0.5).as_secs_f64(),
        rows[1].1.pct(0.99).as_secs_f64() / rows[0].1.pct(0.99).as_secs_f64(),
        verdict(ratio, 1.3)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let env_on = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
    // Criterion's own rule: without --bench (cargo test --benches), or with --test, it is test mode.
    let test_mode = has("--test") || !has("--bench");
    let sizes = Sizes::pick(test_mode || env_on("WEFT_BENCH_QUICK"));
    let listing = has("--list");
    let summary = !listing && std::env::var("WEFT_BENCH_SUMMARY").map_or(true, |v| v != "0");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = Criterion::default().configure_from_args();
    let mut fixtures: Vec<Option<Fixture>> = LEVELS.iter().map(|_| None).collect();
    store_group(&mut c, &mut fixtures, dir.path(), sizes);
    mem_group(&mut c, sizes);
    if summary {
        if sizes.quick {
            println!(
                "(small sizes: test mode or WEFT_BENCH_QUICK; the figures below are not the real ones)"
            );
        }
        level_summary(&mut fixtures, dir.path(), sizes);
        p99_study(dir.path(), sizes);
    }
    drop(fixtures);
    c.final_summary();
}
