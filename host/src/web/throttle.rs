//! Slows down password guessing: at most [`MAX_FAILURES`] failed logins per minute for one
//! user name or one client address; beyond that, logins are refused (429) without checking the
//! password. In memory only: a restart forgets, which costs an attacker a restart of weft.

use jiff::{SignedDuration, Timestamp};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

pub const MAX_FAILURES: usize = 10;
pub const WINDOW: SignedDuration = SignedDuration::from_mins(1);
/// Keys kept before stale ones are swept, so a flood of made-up names cannot grow the map
/// without bound.
const SWEEP_AT: usize = 10_000;

/// Failed-login times per key (`u:<name>` or `a:<address>`), oldest first.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, VecDeque<Timestamp>>>,
}

impl Throttle {
    /// Whether any of `keys` has used up its failures in the window ending at `now`.
    pub fn blocked(&self, keys: &[String], now: Timestamp) -> bool {
        let Ok(mut map) = self.failures.lock() else {
            return false;
        };
        keys.iter().any(|k| {
            map.get_mut(k).is_some_and(|times| {
                prune(times, now);
                times.len() >= MAX_FAILURES
            })
        })
    }

    pub fn record_failure(&self, keys: &[String], now: Timestamp) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= SWEEP_AT {
            map.retain(|_, times| {
                prune(times, now);
                !times.is_empty()
            });
        }
        for k in keys {
            let times = map.entry(k.clone()).or_default();
            prune(times, now);
            times.push_back(now);
        }
    }
}

fn prune(times: &mut VecDeque<Timestamp>, now: Timestamp) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        times.pop_front();
    }
}

/// The keys a login attempt counts against.
pub fn keys(name: &str, client: Option<std::net::IpAddr>) -> Vec<String> {
    // Names are at most 64 characters; a longer one cannot exist, and must not grow the map.
    let name: String = name.chars().take(64).collect();
    let mut keys = vec![format!("u:{name}")];
    if let Some(ip) = client {
        keys.push(format!("a:{ip}"));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_in_a_minute_block_and_a_minute_later_they_do_not() {
        let t = Throttle::default();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let k = keys("ann", None);
        for _ in 0..MAX_FAILURES - 1 {
            t.record_failure(&k, now);
        }
        assert!(!t.blocked(&k, now));
        t.record_failure(&k, now);
        assert!(t.blocked(&k, now));
        assert!(!t.blocked(&keys("bob", None), now));
        assert!(!t.blocked(&k, now + WINDOW));
    }
}
