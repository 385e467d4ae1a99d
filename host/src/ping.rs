//! The ping sweep: every allocated or reserved address is checked for whether it answers,
//! and its `active` flag and `checked_at` are kept in the store. The check is the built-in
//! ICMP echo or a `ping-check` plugin; the sweep runs on a schedule ([`run_scheduler`]).
//!
//! Addresses go a batch at a time: read from the status index, probed together, written in
//! one store change. A batch a plugin fails on is logged, counted and left as it was: one
//! bad answer never marks addresses down.

use crate::plugins::probe_host::ProbeReach;
use crate::plugins::{PluginError, PluginHost};
use crate::probe::{self, ProbeError};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Addresses checked together and written in one change.
pub const BATCH: usize = 1024;
/// How long the built-in check waits for an echo reply.
pub const BUILTIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest interval the scheduler runs at, whatever it is given.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What checks whether an address is alive.
#[derive(Clone)]
pub enum Checker {
    /// weft's own ICMP echo, with a timeout of [`BUILTIN_TIMEOUT`].
    Builtin,
    /// A loaded `ping-check` plugin.
    Plugin { host: Arc<PluginHost>, name: String },
}

impl Checker {
    /// Who a check's history events name.
    pub fn actor(&self) -> String {
        match self {
            Checker::Builtin => "ping".to_string(),
            Checker::Plugin { name, .. } => format!("plugin:{name}"),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Addresses a check answered for (alive or not).
    pub checked: usize,
    /// Of those, the ones that answered.
    pub alive: usize,
    /// Addresses whose `active` flag changed.
    pub changed: usize,
    /// Batches the plugin failed on; their addresses were left as they were.
    pub errors: usize,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// The built-in check cannot run at all (no ICMP socket): every batch would fail alike.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("ping sweep: {0}")]
    Store(#[from] StoreError),
    /// The plugin cannot be called at all (not loaded, not a ping check, marked failing):
    /// the sweep stops rather than fail every batch alike.
    #[error("ping sweep: {0}")]
    Plugin(PluginError),
}

/// Checks every held address once. Blocking: run it off the async threads (the scheduler
/// uses `spawn_blocking`). The probes run on `runtime` while this thread waits for them.
pub fn sweep(store: &Store, checker: &Checker, runtime: Handle) -> Result<SweepReport, PingError> {
    sweep_until(store, checker, &runtime, &AtomicBool::new(false))
}

/// [`sweep`], stopping between two batches once `stop` is set.
fn sweep_until(
    store: &Store,
    checker: &Checker,
    runtime: &Handle,
    stop: &AtomicBool,
) -> Result<SweepReport, PingError> {
    let started = Instant::now();
    let mut report = SweepReport::default();
    let actor = checker.actor();
    // A plugin's probes may reach weft's pools as they were when the sweep began.
    let pools = match checker {
        Checker::Builtin => Vec::new(),
        Checker::Plugin { .. } => store.read(|r| r.pools())?.iter().map(|p| p.cidr).collect(),
    };
    let mut after = None;
    while !stop.load(Ordering::Relaxed) {
        let batch = store.read(|r| r.held_addresses(after, BATCH))?;
        let Some(&last) = batch.last() else {
            break;
        };
        after = Some(last);
        let results = match checker {
            Checker::Builtin => {
                let answers =
                    probe::block_on(runtime, probe::icmp_echo_batch(&batch, BUILTIN_TIMEOUT))??;
                batch
                    .iter()
                    .zip(answers)
                    .map(|(&a, rtt)| (a, rtt.is_some()))
                    .collect()
            }
            Checker::Plugin { host, name } => {
                match plugin_batch(host, name, &batch, &pools, runtime) {
                    Ok(results) => results,
                    Err(
                        e @ (PluginError::NotFound(_)
                        | PluginError::WrongWorld { .. }
                        | PluginError::Failing { .. }),
                    ) => return Err(PingError::Plugin(e)),
                    Err(e) => {
                        tracing::warn!(plugin = %name, first = %batch[0], %last, error = %e, "ping check failed for a batch; its addresses are left as they were");
                        report.errors += 1;
                        continue;
                    }
                }
            }
        };
        report.checked += results.len();
        report.alive += results.iter().filter(|(_, alive)| *alive).count();
        let actor = actor.clone();
        let applied = store.write_blocking(move |w| w.record_checks(&results, &actor))?;
        report.changed += applied.changed;
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// A batch through a plugin: the addresses it answered for, and whether each is alive. An
/// address it left out is not checked; one it answered twice for is alive if either says so.
fn plugin_batch(
    host: &PluginHost,
    name: &str,
    batch: &[IpAddr],
    pools: &[ipnet::IpNet],
    runtime: &Handle,
) -> Result<Vec<(IpAddr, bool)>, PluginError> {
    let targets: Vec<String> = batch.iter().map(ToString::to_string).collect();
    let reach = ProbeReach {
        pools: pools.to_vec(),
        runtime: runtime.clone(),
    };
    let outcomes = host.check(name, &targets, reach)?;
    let mut alive: HashMap<&str, bool> = HashMap::with_capacity(outcomes.len());
    for o in &outcomes {
        *alive.entry(o.address.as_str()).or_default() |= o.alive;
    }
    // The host checked that every outcome names a target, so each text is one of ours.
    Ok(batch
        .iter()
        .zip(&targets)
        .filter_map(|(&a, text)| alive.get(text.as_str()).map(|&up| (a, up)))
        .collect())
}

/// Sweeps every `interval` (the first at once) until `shutdown` resolves, each sweep on a
/// blocking thread, logging each one's report. At shutdown a sweep under way stops after
/// its current batch, and this returns once it has (so the store can be closed after).
pub async fn run_scheduler(
    store: Store,
    checker: Checker,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let interval = interval.max(MIN_INTERVAL);
    let checker = Arc::new(checker);
    let runtime = Handle::current();
    let stop = Arc::new(AtomicBool::new(false));
    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(interval);
    // A sweep longer than the interval delays the next one rather than starting a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let actor = checker.actor();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticks.tick() => {}
        }
        let job = {
            let (store, checker, runtime, stop) = (
                store.clone(),
                checker.clone(),
                runtime.clone(),
                stop.clone(),
            );
            tokio::task::spawn_blocking(move || sweep_until(&store, &checker, &runtime, &stop))
        };
        tokio::pin!(job);
        let done = tokio::select! {
            done = &mut job => done,
            _ = &mut shutdown => {
                stop.store(true, Ordering::Relaxed);
                let _ = job.await;
                break;
            }
        };
        match done {
            Ok(Ok(r)) => tracing::info!(
                checker = %actor,
                checked = r.checked,
                alive = r.alive,
                changed = r.changed,
                errors = r.errors,
                took_ms = r.duration.as_millis() as u64,
                "ping sweep done"
            ),
            Ok(Err(e)) => tracing::error!(checker = %actor, error = %e, "ping sweep failed"),
            Err(e) => tracing::error!(checker = %actor, error = %e, "ping sweep panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AddressPatch, AllocationRequest, PoolSpec};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A store with pool `lo` (127.0.0.0/28): its gateway 127.0.0.1 reserved by the pool,
    /// 127.0.0.2 to .4 allocated, .5 reserved, .6 quarantined.
    fn loopback_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weft.redb")).unwrap();
        store
            .write_blocking(|w| {
                let spec = PoolSpec {
                    name: "lo".into(),
                    cidr: "127.0.0.0/28".parse().unwrap(),
                    description: None,
                    reserve_gateway: true,
                    static_ranges: vec![],
                };
                w.create_pool(&spec, "t")?;
                for _ in 0..3 {
                    w.allocate("lo", &AllocationRequest::default(), None, "t")?;
                }
                let status = |s| AddressPatch {
                    status: Some(s),
                    ..Default::default()
                };
                use crate::ipam::Status;
                w.patch(ip("127.0.0.5"), &status(Status::Reserved), "t")?;
                w.patch(ip("127.0.0.6"), &status(Status::Quarantine), "t")?;
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Whether this machine lets weft open an ICMP socket; if not, the test says why and
    /// stops (the built-in check cannot run here at all).
    fn icmp_allowed(rt: &tokio::runtime::Runtime) -> bool {
        match rt.block_on(probe::icmp_echo_batch(&[ip("127.0.0.1")], BUILTIN_TIMEOUT)) {
            Ok(_) => true,
            Err(e) => {
                println!("skipped: {e}");
                false
            }
        }
    }

    const HELD: [&str; 5] = [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
    ];

    fn history_len(store: &Store, a: &str) -> usize {
        store.read(|r| r.history(ip(a))).unwrap().len()
    }

    #[test]
    fn a_builtin_sweep_marks_answering_addresses_active_once() {
        let rt = runtime();
        if !icmp_allowed(&rt) {
            return;
        }
        let (_d, store) = loopback_store();
        let events_before: Vec<usize> = HELD.iter().map(|a| history_len(&store, a)).collect();

        let report = sweep(&store, &Checker::Builtin, rt.handle().clone()).unwrap();
        assert_eq!(
            (report.checked, report.alive, report.changed, report.errors),
            (5, 5, 5, 0),
            "the allocated and reserved addresses (the gateway too), not the quarantined one"
        );
        for (a, before) in HELD.iter().zip(&events_before) {
            let r = store.read(|r| r.address(ip(a))).unwrap();
            assert!(r.active, "{a} is not active");
            assert!(r.checked_at.is_some(), "{a} has no checked_at");
            let history = store.read(|r| r.history(ip(a))).unwrap();
            assert_eq!(history.len(), before + 1, "{a}: one event for the change");
            let last = history.last().unwrap();
            assert_eq!(
                (last.action.as_str(), last.actor.as_str()),
                ("ping", "ping")
            );
        }
        let quarantined = store.read(|r| r.address(ip("127.0.0.6"))).unwrap();
        assert!(!quarantined.active && quarantined.checked_at.is_none());

        // Nothing changed since: checked again, no new events.
        let again = sweep(&store, &Checker::Builtin, rt.handle().clone()).unwrap();
        assert_eq!((again.checked, again.alive, again.changed), (5, 5, 0));
        for (a, before) in HELD.iter().zip(&events_before) {
            assert_eq!(history_len(&store, a), before + 1, "{a}: a new event");
        }
    }

    #[test]
    fn the_scheduler_sweeps_at_once_and_stops_at_shutdown() {
        let rt = runtime();
        if !icmp_allowed(&rt) {
            return;
        }
        let (_d, store) = loopback_store();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let scheduler = rt.spawn(run_scheduler(
            store.clone(),
            Checker::Builtin,
            Duration::from_secs(3600),
            async {
                let _ = stopped.await;
            },
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !store.read(|r| r.address(ip("127.0.0.2"))).unwrap().active {
            assert!(Instant::now() < deadline, "no sweep within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = stop.send(());
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), scheduler)
                .await
                .expect("the scheduler did not stop")
                .unwrap();
        });
    }
}
