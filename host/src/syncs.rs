//! Running `ipam-sync` plugins: once on demand ([`run`], [`run_now`]) or on their manifest's
//! `interval_secs` ([`run_scheduler`]). Every run, failed or not, is recorded in the store
//! (the latest runs per plugin, see `store::plugin_runs`), and a plugin never runs twice at
//! once: a second run while one is under way is refused with [`SyncError::AlreadyRunning`].

use crate::plugins::sync_host::SyncReach;
use crate::plugins::{Manifest, PluginError, PluginHost, State, World};
use crate::store::{NewRun, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::store::{PluginRun, RunOutcome, Trigger, WeftChanges};

/// What a run returns: the run as stored.
pub type RunRecord = PluginRun;

/// Most per-item errors kept from one run's report.
pub const MAX_REPORTED_ERRORS: usize = 100;
/// Longest per-item error kept, in characters.
const MAX_ERROR_CHARS: usize = 500;
/// How often the scheduler looks for plugins that are due.
const SCHEDULER_TICK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A run of the plugin is under way (API: 409).
    #[error("plugin {0} is already running; try again when that run is over")]
    AlreadyRunning(String),
    /// No such sync plugin: nothing ran and nothing was recorded (API: 404 for `NotFound`,
    /// 400 for `WrongWorld`).
    #[error(transparent)]
    Plugin(PluginError),
    /// The run happened but could not be recorded.
    #[error("the run could not be recorded: {0}")]
    Store(#[from] StoreError),
    /// The blocking task of the run went away (the runtime is shutting down).
    #[error("the run was interrupted: {0}")]
    Interrupted(String),
}

/// The plugins with a run under way, by plugin host: the guard that [`run`] and the scheduler
/// share. Keyed by the host's address too, so two hosts in one process (tests) do not share
/// names.
static RUNNING: Mutex<BTreeSet<(usize, String)>> = Mutex::new(BTreeSet::new());

/// A claimed plugin; released when dropped, whatever way the run ends (even a panic).
struct Running((usize, String));

impl Running {
    fn claim(host: &PluginHost, name: &str) -> Result<Running, SyncError> {
        let key = (std::ptr::from_ref(host) as usize, name.to_string());
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if !running.insert(key.clone()) {
            return Err(SyncError::AlreadyRunning(name.to_string()));
        }
        Ok(Running(key))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// The manifest of a loaded sync plugin.
fn manifest_of(host: &PluginHost, name: &str) -> Option<Manifest> {
    host.manifest(name).filter(|m| m.world == World::IpamSync)
}

/// Runs the sync plugin `name` once and records the run. Blocking: call it off the async
/// threads (see [`run_now`]). A plugin that fails is recorded as a failed run and returned as
/// such (`Ok` with [`RunOutcome::Failed`]); an unknown plugin is an error and not recorded.
pub fn run(
    host: &PluginHost,
    store: &Store,
    name: &str,
    trigger: Trigger,
    runtime: tokio::runtime::Handle,
) -> Result<RunRecord, SyncError> {
    let _running = Running::claim(host, name)?;
    let time_limit = manifest_of(host, name)
        .map(|m| m.permissions.time_limit)
        .unwrap_or_else(|| World::IpamSync.default_time_limit());
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let reach = SyncReach::new(store.clone(), runtime, time_limit);
    let changes = reach.changes.clone();
    let result = host.sync(name, reach);
    let duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    let outcome = match result {
        Ok(report) => RunOutcome::Report {
            created: report.created,
            updated: report.updated,
            deleted: report.deleted,
            errors: bounded_errors(report.errors),
        },
        Err(e @ (PluginError::NotFound(_) | PluginError::WrongWorld { .. })) => {
            return Err(SyncError::Plugin(e));
        }
        // The error can hold the plugin's own text: kept bounded like its per-item errors.
        Err(e) => RunOutcome::Failed {
            error: one_line(&e.to_string()),
        },
    };
    match &outcome {
        RunOutcome::Report {
            created,
            updated,
            deleted,
            errors,
        } => tracing::info!(
            plugin = name,
            trigger = trigger.as_str(),
            created,
            updated,
            deleted,
            errors = errors.len(),
            duration_ms,
            "sync run done"
        ),
        RunOutcome::Failed { error } => {
            tracing::warn!(plugin = name, trigger = trigger.as_str(), error = %error, duration_ms, "sync run failed")
        }
    }
    let run = NewRun {
        plugin: name.to_string(),
        started,
        duration_ms,
        trigger,
        outcome,
        weft_changes: changes.counted(),
    };
    Ok(store.write_blocking(move |w| w.record_plugin_run(&run))?)
}

/// [`run`] from async code (an axum handler): runs on a blocking thread of the current
/// runtime and waits for it.
pub async fn run_now(
    host: Arc<PluginHost>,
    store: Store,
    name: String,
    trigger: Trigger,
) -> Result<RunRecord, SyncError> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || run(&host, &store, &name, trigger, runtime))
        .await
        .map_err(|e| SyncError::Interrupted(e.to_string()))?
}

/// A plugin's per-item errors as kept: a bounded number of bounded, single-line texts (a
/// plugin's report is untrusted).
fn bounded_errors(errors: Vec<String>) -> Vec<String> {
    let total = errors.len();
    let mut kept: Vec<String> = errors
        .iter()
        .take(MAX_REPORTED_ERRORS)
        .map(|e| one_line(e))
        .collect();
    if total > MAX_REPORTED_ERRORS {
        kept.push(format!("… and {} more", total - MAX_REPORTED_ERRORS));
    }
    kept
}

/// A text as kept in a run: one line of at most [`MAX_ERROR_CHARS`] characters.
fn one_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_CHARS)
        .collect();
    if text.chars().count() > MAX_ERROR_CHARS {
        line.push('…');
    }
    line
}

/// The loaded sync plugins with an interval, and their intervals.
fn scheduled(host: &PluginHost) -> Vec<(String, Duration)> {
    host.list()
        .into_iter()
        .filter(|s| s.world == Some(World::IpamSync) && s.state == State::Loaded)
        .filter_map(|s| {
            let interval = manifest_of(host, &s.name)?.permissions.interval?;
            Some((s.name, interval))
        })
        .collect()
}

/// The plugins due at `now`, moving each one's next time on. A plugin seen for the first
/// time is due one interval later (not at once: a restart does not run every sync); one no
/// longer scheduled is forgotten.
fn due(
    now: Instant,
    next: &mut BTreeMap<String, Instant>,
    plans: &[(String, Duration)],
) -> Vec<String> {
    next.retain(|name, _| plans.iter().any(|(p, _)| p == name));
    let mut out = Vec::new();
    for (name, interval) in plans {
        let at = next.entry(name.clone()).or_insert(now + *interval);
        if now >= *at {
            *at = now + *interval;
            out.push(name.clone());
        }
    }
    out
}

/// Runs every loaded sync plugin that has an `interval_secs` on that interval, each run on a
/// blocking thread, until `shutdown` resolves. A plugin still running when it is due again
/// is skipped that time. Reloads are picked up: plugins are looked up afresh every tick.
/// Runs under way at shutdown are not waited for.
pub async fn run_scheduler(host: Arc<PluginHost>, store: Store, shutdown: impl Future) {
    let mut next = BTreeMap::new();
    let mut tick = tokio::time::interval(SCHEDULER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let lookup = host.clone();
        let Ok(plans) = tokio::task::spawn_blocking(move || scheduled(&lookup)).await else {
            break;
        };
        for name in due(Instant::now(), &mut next, &plans) {
            let (host, store) = (host.clone(), store.clone());
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                match run(&host, &store, &name, Trigger::Schedule, runtime) {
                    Ok(_) => {}
                    Err(SyncError::AlreadyRunning(_)) => {
                        tracing::debug!(plugin = %name, "still running; this turn is skipped")
                    }
                    Err(e) => tracing::warn!(plugin = %name, error = %e, "scheduled sync not run"),
                }
            });
        }
    }
    tracing::info!("sync scheduler stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_is_due_every_interval_from_when_it_is_first_seen() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let plans = vec![("a".to_string(), s(60)), ("b".to_string(), s(10))];
        let mut next = BTreeMap::new();
        assert!(due(t0, &mut next, &plans).is_empty(), "not at once");
        assert_eq!(due(t0 + s(10), &mut next, &plans), ["b"]);
        assert!(due(t0 + s(15), &mut next, &plans).is_empty());
        assert_eq!(due(t0 + s(60), &mut next, &plans), ["a", "b"]);
        // Unloaded: forgotten; loaded again: one interval from then.
        assert!(due(t0 + s(70), &mut next, &plans[1..]).contains(&"b".to_string()));
        assert!(!next.contains_key("a"));
        assert!(due(t0 + s(75), &mut next, &plans).is_empty());
        assert_eq!(due(t0 + s(135), &mut next, &plans), ["a", "b"]);
    }

    #[test]
    fn a_report_keeps_a_bounded_number_of_single_line_errors() {
        let many: Vec<String> = (0..150).map(|i| format!("item {i}\nforged line")).collect();
        let kept = bounded_errors(many);
        assert_eq!(kept.len(), MAX_REPORTED_ERRORS + 1);
        assert_eq!(kept[0], "item 0 forged line");
        assert_eq!(kept[MAX_REPORTED_ERRORS], "… and 50 more");
        let long = bounded_errors(vec!["x".repeat(10_000)]);
        assert_eq!(long[0].chars().count(), MAX_ERROR_CHARS + 1);
    }

    #[test]
    fn a_plugin_is_claimed_once_until_its_run_ends() {
        let host = PluginHost::new(vec![], None).expect("host");
        let first = Running::claim(&host, "netbox").expect("free");
        assert!(matches!(
            Running::claim(&host, "netbox"),
            Err(SyncError::AlreadyRunning(n)) if n == "netbox"
        ));
        assert!(
            Running::claim(&host, "phpipam").is_ok(),
            "other plugins run"
        );
        drop(first);
        assert!(Running::claim(&host, "netbox").is_ok(), "free again");
    }
}
