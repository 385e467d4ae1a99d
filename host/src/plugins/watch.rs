//! Picking up changed plugin files without a restart: the plugins folders are watched, and
//! once changes settle the host reloads (compiled forms of unchanged plugins come from the
//! cache, so a reload costs little more than reading the files).

use super::registry::PluginHost;
use notify_debouncer_mini::notify::{self, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use std::sync::Arc;
use std::time::Duration;

/// How long the folders must be quiet before a reload: copying a component in takes several
/// writes, and one reload should see them all.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Watches while it lives.
pub struct Watch {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

impl PluginHost {
    /// Reloads whenever a file in a plugins folder changes. Folders that do not exist yet are
    /// not watched (the data dir's own is created by `weft serve`).
    pub fn watch(self: &Arc<Self>) -> notify::Result<Watch> {
        let host = Arc::downgrade(self);
        let mut debouncer = new_debouncer(SETTLE, move |events: DebounceEventResult| {
            let Some(host) = host.upgrade() else {
                return;
            };
            match events {
                // The callback runs on the debouncer's own thread, so reloading (which may
                // compile) blocks nothing else.
                Ok(events) if !events.is_empty() => {
                    tracing::info!(
                        changed = %events[0].path.display(),
                        "a plugins folder changed; reloading"
                    );
                    host.reload();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watching the plugins folders failed"),
            }
        })?;
        for dir in self.dirs() {
            if dir.is_dir() {
                debouncer.watcher().watch(dir, RecursiveMode::Recursive)?;
            }
        }
        Ok(Watch {
            _debouncer: debouncer,
        })
    }
}
