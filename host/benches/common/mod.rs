//! What the micro-benchmarks share: quick mode, per-call timings, percentiles, one report
//! line per measurement.

use std::time::{Duration, Instant};

/// A few iterations of each, as a smoke test: `WEFT_BENCH_QUICK=1`, or a run without
/// `--bench` (`cargo test --benches`).
pub fn quick() -> bool {
    std::env::var_os("WEFT_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench")
}

/// Per-call times of `f`, run `n` times after `n / 10` warm-up calls, sorted. (Not every
/// bench times synchronous calls.)
#[allow(dead_code)]
pub fn times(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..n / 10 {
        f();
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// The `p` quantile of sorted times.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[allow(dead_code)]
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[allow(dead_code)]
pub fn report(label: &str, t: &[Duration]) {
    println!(
        "  {label:<44} median {:>9.2} µs   p99 {:>9.2} µs",
        us(pct(t, 0.5)),
        us(pct(t, 0.99))
    );
}
