//! Plugin runs: what each run of an `ipam-sync` plugin did (or why it failed), the latest
//! [`KEEP_RUNS`] per plugin. Older runs are pruned in the transaction that adds a new one, so
//! the table never grows past `KEEP_RUNS` times the number of plugins.

use super::{Reader, Result, StoreError, Writer, decode, encode};
use serde::{Deserialize, Serialize};

/// Runs kept per plugin.
pub const KEEP_RUNS: usize = 50;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The scheduler, on the plugin's `interval_secs`.
    Schedule,
    /// Someone asked for it (API, page, CLI).
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum RunOutcome {
    /// The plugin ran to the end and reported what it did.
    Report {
        created: u32,
        updated: u32,
        deleted: u32,
        /// What went wrong for single items; the run went on past them.
        errors: Vec<String>,
    },
    /// The run failed as a whole: the plugin returned an error, trapped or ran out of time.
    Failed { error: String },
}

/// weft's records as a run changed them, counted by weft itself (the plugin's report is its
/// own word, and may count changes in the other system too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WeftChanges {
    /// Addresses that became held (allocated or reserved).
    pub created: u32,
    /// Held addresses whose record changed.
    pub updated: u32,
    /// Addresses released, devices deleted.
    pub deleted: u32,
}

/// What a run did, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginRun {
    /// Increasing across every plugin: later runs have larger ids.
    pub id: u64,
    pub plugin: String,
    #[schema(value_type = String)]
    pub started: jiff::Timestamp,
    pub duration_ms: u64,
    pub trigger: Trigger,
    #[serde(flatten)]
    pub outcome: RunOutcome,
    /// Runs recorded before weft counted them say zeros.
    #[serde(default)]
    pub weft_changes: WeftChanges,
}

/// A run to record: a [`PluginRun`] before the store gives it its id.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub plugin: String,
    pub started: jiff::Timestamp,
    pub duration_ms: u64,
    pub trigger: Trigger,
    pub outcome: RunOutcome,
    pub weft_changes: WeftChanges,
}

impl Reader {
    /// The latest `limit` runs of a plugin, newest first.
    pub fn plugin_runs(&self, plugin: &str, limit: usize) -> Result<Vec<PluginRun>> {
        let mut out = Vec::with_capacity(limit.min(KEEP_RUNS));
        for e in self
            .t
            .plugin_runs()?
            .range((plugin, 0)..=(plugin, u64::MAX))?
            .rev()
            .take(limit)
        {
            out.push(decode("plugin_runs", e?.1.value())?);
        }
        Ok(out)
    }

    /// The latest run of a plugin, if it ever ran.
    pub fn last_run(&self, plugin: &str) -> Result<Option<PluginRun>> {
        Ok(self.plugin_runs(plugin, 1)?.pop())
    }
}

impl Writer<'_> {
    /// Records a run and prunes the plugin's runs beyond the latest [`KEEP_RUNS`].
    pub fn record_plugin_run(&mut self, run: &NewRun) -> Result<PluginRun> {
        // Plugin names are checked at load (manifest); this only keeps keys bounded.
        if run.plugin.is_empty() || run.plugin.len() > 64 {
            return Err(StoreError::Invalid(format!(
                "{:?} is not a plugin name",
                run.plugin
            )));
        }
        let id = self.next_id("next_plugin_run_id")?;
        let stored = PluginRun {
            id,
            plugin: run.plugin.clone(),
            started: run.started,
            duration_ms: run.duration_ms,
            trigger: run.trigger,
            outcome: run.outcome.clone(),
            weft_changes: run.weft_changes,
        };
        let name = run.plugin.as_str();
        self.t
            .plugin_runs
            .insert((name, id), encode(&stored).as_slice())?;
        let mut ids = Vec::new();
        for e in self.t.plugin_runs.range((name, 0)..=(name, u64::MAX))? {
            ids.push(e?.0.value().1);
        }
        // Ids increase, so the oldest come first.
        let excess = ids.len().saturating_sub(KEEP_RUNS);
        for old in &ids[..excess] {
            self.t.plugin_runs.remove((name, *old))?;
        }
        Ok(stored)
    }
}
