//! Ping checks in the store: which addresses to check (the held ones, in order, from the
//! status index), and what a check found (`active`, `checked_at`) written back.
//!
//! A check that changes whether an address is active is a change like any other, with its
//! event in the address's history; one that only confirms what was known moves
//! `checked_at` and nothing else, so a sweep every minute does not bury the history.

use super::records::load;
use super::{Reader, Result, Writer, encode_record};
use crate::ipam::{Family, IpKey, Status};
use std::net::IpAddr;
use std::ops::Bound;

/// The statuses whose addresses are checked: those that should be in use. Quarantined ones
/// are held too, but only to keep them out of circulation.
const CHECKED: [Status; 2] = [Status::Allocated, Status::Reserved];

/// The action of a check's event in an address's history.
pub const ACTION: &str = "ping";

/// What [`Writer::record_checks`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChecksApplied {
    /// Addresses whose `active` flag changed (each with a history event).
    pub changed: usize,
    /// Addresses checked again with the same result (only `checked_at` moved).
    pub unchanged: usize,
    /// Addresses no longer held (or no longer stored) when the result arrived: left alone.
    pub skipped: usize,
}

impl Reader {
    /// Up to `limit` allocated or reserved addresses after `after` (from the first without
    /// it), in address order (IPv4 before IPv6). Reads the status index, so the cost follows
    /// the addresses returned, not the size of the pools.
    pub fn held_addresses(&self, after: Option<IpAddr>, limit: usize) -> Result<Vec<IpAddr>> {
        let index = self.t.by_status()?;
        let mut found: Vec<(u8, u128)> = Vec::new();
        for status in CHECKED {
            let s = status.as_u8();
            let start = match after {
                Some(ip) => {
                    let k = IpKey::from(ip);
                    Bound::Excluded((s, k.family.as_u8(), k.value))
                }
                None => Bound::Included((s, 0, 0)),
            };
            let end = Bound::Included((s, u8::MAX, u128::MAX));
            // The first `limit` of the union are among the first `limit` of each status.
            for e in index.range::<(u8, u8, u128)>((start, end))?.take(limit) {
                let (_, f, v) = e?.0.value();
                found.push((f, v));
            }
        }
        found.sort_unstable();
        found.truncate(limit);
        found
            .into_iter()
            .map(|(f, v)| {
                let family = Family::from_u8(f).ok_or_else(|| {
                    super::StoreError::corrupt("by_status", format!("family {f}"))
                })?;
                Ok(IpKey::new(family, v).ip())
            })
            .collect()
    }
}

impl Writer<'_> {
    /// Writes what a check found: for each address whether it answered. `checked_at`
    /// becomes now; a change of `active` is recorded in the address's history as a `ping`
    /// by `actor`. Addresses that are no longer allocated or reserved are skipped: the
    /// check was of what the address was.
    pub fn record_checks(
        &mut self,
        results: &[(IpAddr, bool)],
        actor: &str,
    ) -> Result<ChecksApplied> {
        let mut applied = ChecksApplied::default();
        for &(ip, alive) in results {
            let key = IpKey::from(ip);
            let Some(before) = load(self.t.records.table()?, key)? else {
                applied.skipped += 1;
                continue;
            };
            if !CHECKED.contains(&before.status) {
                applied.skipped += 1;
                continue;
            }
            let mut after = before.clone();
            after.checked_at = Some(self.now);
            if before.active == alive {
                self.t.records.insert(
                    (key.family.as_u8(), key.value),
                    encode_record(&after).as_slice(),
                )?;
                applied.unchanged += 1;
            } else {
                after.active = alive;
                after.updated = self.now;
                self.put_record(Some(&before), &after, ACTION, actor)?;
                applied.changed += 1;
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AddressPatch, AllocationRequest, PoolSpec, Store};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A store with pool `lan` (10.0.0.0/24) and `v6` (fd00::/120), neither reserving a
    /// gateway: 10.0.0.2, .3 and .5 allocated, .4 reserved, .6 quarantined, .7 allocated then
    /// released; fd00::9 allocated.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("weft.redb")).unwrap();
        store
            .write_blocking(|w| {
                for (name, cidr) in [("lan", "10.0.0.0/24"), ("v6", "fd00::/120")] {
                    let spec = PoolSpec {
                        name: name.into(),
                        cidr: cidr.parse().unwrap(),
                        description: None,
                        reserve_gateway: false,
                        static_ranges: vec![],
                    };
                    w.create_pool(&spec, "t")?;
                }
                let at = |s: &str| AllocationRequest {
                    address: Some(ip(s)),
                    ..Default::default()
                };
                for (pool, a) in [
                    ("lan", "10.0.0.5"),
                    ("lan", "10.0.0.2"),
                    ("lan", "10.0.0.3"),
                    ("lan", "10.0.0.7"),
                    ("v6", "fd00::9"),
                ] {
                    w.allocate(pool, &at(a), None, "t")?;
                }
                let status = |s| AddressPatch {
                    status: Some(s),
                    ..Default::default()
                };
                w.patch(ip("10.0.0.4"), &status(Status::Reserved), "t")?;
                w.patch(ip("10.0.0.6"), &status(Status::Quarantine), "t")?;
                w.release(ip("10.0.0.7"), "t")?;
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    fn held(store: &Store, after: Option<&str>, limit: usize) -> Vec<String> {
        store
            .read(|r| r.held_addresses(after.map(ip), limit))
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn held_addresses_are_the_allocated_and_reserved_ones_in_address_order() {
        let (_d, store) = store();
        assert_eq!(
            held(&store, None, 100),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "fd00::9"]
        );
    }

    #[test]
    fn held_addresses_page_after_the_last_one_seen() {
        let (_d, store) = store();
        assert_eq!(held(&store, None, 2), ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(held(&store, Some("10.0.0.3"), 2), ["10.0.0.4", "10.0.0.5"]);
        assert_eq!(held(&store, Some("10.0.0.5"), 2), ["fd00::9"]);
        assert!(held(&store, Some("fd00::9"), 2).is_empty());
        // The cursor need not be held itself.
        assert_eq!(held(&store, Some("10.0.0.0"), 1), ["10.0.0.2"]);
    }

    fn record(store: &Store, a: &str) -> crate::ipam::Record {
        store.read(|r| r.address(ip(a))).unwrap()
    }

    fn events(store: &Store, a: &str) -> Vec<crate::store::Event> {
        store.read(|r| r.history(ip(a))).unwrap()
    }

    #[test]
    fn a_check_that_changes_active_is_an_event_and_one_that_confirms_it_is_not() {
        let (_d, store) = store();
        let before = events(&store, "10.0.0.2").len();
        let applied = store
            .write_blocking(|w| {
                w.record_checks(&[(ip("10.0.0.2"), true), (ip("10.0.0.3"), false)], "ping")
            })
            .unwrap();
        assert_eq!(
            applied,
            ChecksApplied {
                changed: 1,
                unchanged: 1,
                skipped: 0
            }
        );
        let up = record(&store, "10.0.0.2");
        assert!(up.active);
        let first_check = up.checked_at.expect("checked_at set");
        let history = events(&store, "10.0.0.2");
        assert_eq!(history.len(), before + 1);
        let last = history.last().unwrap();
        assert_eq!(
            (last.action.as_str(), last.actor.as_str()),
            ("ping", "ping")
        );
        assert_eq!(last.before.as_ref().map(|r| r.active), Some(false));
        assert_eq!(last.after.as_ref().map(|r| r.active), Some(true));
        // Not active before or after: checked, but nothing in its history.
        let down = record(&store, "10.0.0.3");
        assert!(!down.active && down.checked_at.is_some());
        assert_eq!(events(&store, "10.0.0.3").len(), before);

        // The same result again: only checked_at moves.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let again = store
            .write_blocking(|w| w.record_checks(&[(ip("10.0.0.2"), true)], "ping"))
            .unwrap();
        assert_eq!(again.unchanged, 1);
        let up_again = record(&store, "10.0.0.2");
        assert!(up_again.checked_at.unwrap() > first_check);
        assert_eq!(up_again.updated, up.updated);
        assert_eq!(events(&store, "10.0.0.2").len(), before + 1);

        // Going quiet is a change too, by whoever checked.
        store
            .write_blocking(|w| w.record_checks(&[(ip("10.0.0.2"), false)], "plugin:tcp-ping"))
            .unwrap();
        let history = events(&store, "10.0.0.2");
        assert_eq!(history.len(), before + 2);
        assert_eq!(history.last().unwrap().actor, "plugin:tcp-ping");
        assert!(!record(&store, "10.0.0.2").active);
    }

    #[test]
    fn addresses_no_longer_held_are_skipped() {
        let (_d, store) = store();
        let applied = store
            .write_blocking(|w| {
                w.record_checks(
                    &[
                        // Released since it was listed, quarantined, never stored.
                        (ip("10.0.0.7"), true),
                        (ip("10.0.0.6"), true),
                        (ip("10.0.0.99"), true),
                        (ip("192.0.2.1"), true),
                    ],
                    "ping",
                )
            })
            .unwrap();
        assert_eq!(applied.skipped, 4);
        assert!(!record(&store, "10.0.0.7").active);
        assert!(record(&store, "10.0.0.6").checked_at.is_none());
    }

    #[test]
    fn a_check_changes_neither_the_status_index_nor_the_pool_counts() {
        let (_d, store) = store();
        let counts = store.read(|r| r.pool("lan")).unwrap().stats();
        store
            .write_blocking(|w| {
                w.record_checks(&[(ip("10.0.0.2"), true), (ip("10.0.0.4"), true)], "ping")
            })
            .unwrap();
        assert_eq!(
            held(&store, None, 100),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "fd00::9"]
        );
        assert_eq!(store.read(|r| r.pool("lan")).unwrap().stats(), counts);
    }
}
