//! The store's contract: group commit answers each change alone, the free index and the
//! records agree, and every change leaves an event.

use super::*;
use crate::ipam::{AddrType, Status};
use std::net::IpAddr;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("weft.redb")).expect("open");
    (dir, store)
}

fn spec(name: &str, cidr: &str) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        cidr: cidr.parse().expect("cidr"),
        description: None,
        reserve_gateway: true,
        static_ranges: vec![],
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_change_fails_alone_in_its_batch() {
    let (_d, store) = store();
    let s = spec("lan", "10.0.0.0/24");
    store
        .write(move |w| w.create_pool(&s, "t"))
        .await
        .expect("pool");
    // Many allocations in flight at once, one of them for an address outside the pool.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let req = AllocationRequest {
                address: (i == 20).then(|| ip("192.168.0.1")),
                ..Default::default()
            };
            store
                .write(move |w| w.allocate("lan", &req, None, "t"))
                .await
        }));
    }
    let mut ok = std::collections::HashSet::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(rec) => assert!(ok.insert(rec.address), "{} handed out twice", rec.address),
            Err(StoreError::NotInPool { .. }) => failed += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok.len(), failed), (39, 1));
    let pool = store.read(|r| r.pool("lan")).expect("pool");
    assert_eq!(pool.stats().allocated, 39);
}

#[tokio::test]
async fn a_panicking_change_does_not_stop_the_writer() {
    let (_d, store) = store();
    let boom = store
        .write(|_w| -> Result<()> { panic!("a bug in a change") })
        .await;
    assert!(matches!(boom, Err(StoreError::Panicked)));
    let s = spec("lan", "10.0.0.0/24");
    store
        .write(move |w| w.create_pool(&s, "t"))
        .await
        .expect("the writer still works");
}

#[tokio::test]
async fn every_change_leaves_an_event_with_before_and_after() {
    let (_d, store) = store();
    let s = spec("lan", "10.0.0.0/29");
    store
        .write(move |w| w.create_pool(&s, "t"))
        .await
        .expect("pool");
    let req = AllocationRequest::default();
    let rec = store
        .write(move |w| w.allocate("lan", &req, None, "alice"))
        .await
        .expect("alloc");
    let addr = rec.address;
    store
        .write(move |w| w.release(addr, "bob"))
        .await
        .expect("release");
    let events = store.read(|r| r.history(addr)).expect("history");
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.actor.as_str(),
                e.after.as_ref().map(|a| a.status),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("allocate", "alice", Some(Status::Allocated)),
            ("release", "bob", Some(Status::Available))
        ]
    );
}

#[tokio::test]
async fn a_change_that_changes_nothing_leaves_no_event() {
    let (_d, store) = store();
    let s = spec("lan", "10.0.0.0/29");
    store
        .write(move |w| w.create_pool(&s, "t"))
        .await
        .expect("pool");
    let patch = AddressPatch {
        status: Some(Status::Reserved),
        description: Some("printer".into()),
        ..Default::default()
    };
    let again = patch.clone();
    store
        .write(move |w| w.patch(ip("10.0.0.3"), &patch, "t"))
        .await
        .expect("reserve");
    store
        .write(move |w| w.patch(ip("10.0.0.3"), &again, "t"))
        .await
        .expect("same again");
    assert_eq!(
        store
            .read(|r| r.history(ip("10.0.0.3")))
            .expect("history")
            .len(),
        1
    );
}

#[tokio::test]
async fn the_schema_version_is_recorded_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.redb");
    let store = Store::open(&path).expect("open");
    assert_eq!(
        store.read(|r| r.schema_version()).expect("read"),
        Some(SCHEMA_VERSION)
    );
    store.close();
    {
        let db = redb::Database::open(&path).expect("open raw");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert("schema_version", SCHEMA_VERSION + 1)
            .expect("bump");
        txn.commit().expect("commit");
    }
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::SchemaTooNew { .. })
    ));
}

#[tokio::test]
async fn the_journal_is_private_and_a_clean_close_leaves_nothing_to_replay() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.redb");
    let store = Store::open(&path).expect("open");
    store
        .write(|w| w.create_pool(&spec("lan", "10.0.0.0/24"), "t"))
        .await
        .expect("pool");
    let file = std::fs::metadata(journal_path(&path)).expect("journal beside the database");
    assert_eq!(file.permissions().mode() & 0o777, 0o600);
    assert_eq!(file.len(), journal::CAPACITY, "preallocated");
    let backup = dir.path().join("copy.redb");
    store.backup(&backup).expect("backup");
    store.close();

    let meta = |p: &Path| {
        let db = redb::Database::open(p).expect("open raw");
        let r = db.begin_read().expect("read");
        let t = r.open_table(META).expect("meta");
        let get = |k| t.get(k).expect("get").map(|g| g.value());
        (get(JOURNAL_SALT), get(JOURNAL_NEXT))
    };
    let (salt, next) = meta(&path);
    let (salt, next) = (salt.expect("salted"), next.expect("checkpointed"));
    assert!(next > 1, "the pool went through the journal");
    let raw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(journal_path(&path))
        .expect("journal");
    let journal = Journal::open(
        Box::new(redb::backends::FileBackend::new(raw).expect("backend")),
        salt,
        next,
    )
    .expect("journal");
    assert!(journal.scan(next).expect("scan").is_empty());
    assert!(
        !journal.scan(1).expect("scan").is_empty(),
        "the entries are still there, numbered below"
    );
    // A copy is another database: the original's journal never replays into it.
    assert_ne!(meta(&backup).0, Some(salt));
}

#[tokio::test]
async fn an_idle_writer_checkpoints_the_journal() {
    let (_d, store) = store();
    let next = |store: &Store| {
        store
            .read(|r| Ok(r.t.meta()?.get(JOURNAL_NEXT)?.map(|g| g.value())))
            .expect("read")
    };
    let before = next(&store);
    store
        .write(|w| w.create_pool(&spec("lan", "10.0.0.0/24"), "t"))
        .await
        .expect("pool");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while next(&store) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint {IDLE_CHECKPOINT:?} after the last write"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        next(&store),
        Some(2),
        "the checkpoint records the next entry's number"
    );
}

mod search_model {
    //! The indexed search against a naive reference: every page of a `q` listing, followed to
    //! the end, holds exactly the records that match, each once.
    use super::*;
    use crate::ipam::search;
    use proptest::prelude::*;

    fn words() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "web", "web-1", "web-10", "db", "db-1", "ab", "10.0.0.1", "Web-2",
        ])
        .prop_map(str::to_string)
    }

    fn macs() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "52:54:00:ab:cd:ef",
            "52:54:00:00:00:01",
            "aa:bb:cc:dd:ee:ff",
            "ab:00:00:00:00:10",
        ])
        .prop_map(str::to_string)
    }

    fn queries() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "w", "web", "WEB-1", "db", "ab", "52:54", "cd:ef", "00:10", "10.0.0.1", "10.0.0.",
            "10.0.1", "1", "zz",
        ])
        .prop_map(str::to_string)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn paged_search_lists_each_match_once(
            devices in prop::collection::vec((0u8..60, prop::option::of(words()), prop::option::of(macs())), 1..40),
            q in queries(),
            status in prop::option::of(prop::sample::select(vec![Status::Allocated, Status::Reserved])),
            limit in 1usize..7,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (_d, store) = store();
            rt.block_on(async {
                let s = spec("lan", "10.0.0.0/24");
                store.write(move |w| w.create_pool(&s, "t")).await.unwrap();
                let s = spec("lab", "10.0.1.0/24");
                store.write(move |w| w.create_pool(&s, "t")).await.unwrap();
                for (i, (host, name, mac)) in devices.iter().enumerate() {
                    let ip: IpAddr = format!("10.0.{}.{}", i % 2, 2 + host).parse().unwrap();
                    let patch = AddressPatch {
                        status: Some(if i % 3 == 0 { Status::Reserved } else { Status::Allocated }),
                        hostname: name.clone(),
                        mac: mac.clone(),
                        ..Default::default()
                    };
                    // A repeated address makes the second patch an edit or a refusal: both fine.
                    let _ = store.write(move |w| w.patch(ip, &patch, "t")).await;
                }
            });
            let everything = store
                .read(|r| r.list(&AddressFilter::default(), None, 500))
                .unwrap()
                .items;
            let want: Vec<IpAddr> = everything
                .iter()
                .filter(|r| search::matches(r, &q) && status.is_none_or(|s| r.status == s))
                .map(|r| r.address)
                .collect();
            let filter = AddressFilter { q: Some(q.clone()), status, ..Default::default() };
            let mut got = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..200 {
                let page = store.read(|r| r.list(&filter, cursor.as_deref(), limit)).unwrap();
                got.extend(page.items.iter().map(|r| r.address));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), got.len(), "a record listed twice: {:?}", got);
            let mut want_sorted = want.clone();
            want_sorted.sort();
            prop_assert_eq!(sorted, want_sorted);
        }
    }
}

#[tokio::test]
async fn a_version_1_database_is_migrated_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.redb");
    let store = Store::open(&path).expect("open");
    let s = spec("lan", "10.0.0.0/24");
    store
        .write(move |w| w.create_pool(&s, "t"))
        .await
        .expect("pool");
    let req = AllocationRequest {
        hostname: Some("web-1".into()),
        ..Default::default()
    };
    store
        .write(move |w| w.allocate("lan", &req, None, "t"))
        .await
        .expect("alloc");
    store.close();
    // Make it look like version 1: records in JSON, no search terms.
    {
        let db = redb::Database::open(&path).expect("open raw");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert("schema_version", 1)
            .expect("v1");
        {
            let mut records = txn.open_table(RECORDS).expect("records");
            let all: Vec<_> = records
                .iter()
                .expect("iter")
                .map(|e| {
                    let (k, v) = e.expect("row");
                    (k.value(), decode_record(v.value()).expect("postcard"))
                })
                .collect();
            for (k, rec) in all {
                records
                    .insert(k, serde_json::to_vec(&rec).expect("json").as_slice())
                    .expect("json row");
            }
        }
        txn.open_table(SEARCH)
            .expect("search")
            .retain(|_, _| false)
            .expect("empty");
        txn.commit().expect("commit");
    }
    let store = Store::open(&path).expect("migrates");
    assert_eq!(
        store.read(|r| r.schema_version()).expect("read"),
        Some(SCHEMA_VERSION)
    );
    let filter = AddressFilter {
        q: Some("web".into()),
        ..Default::default()
    };
    let page = store.read(|r| r.list(&filter, None, 10)).expect("list");
    assert_eq!(page.items.len(), 1);
}

#[tokio::test]
async fn recent_events_are_the_latest_across_addresses_newest_first() {
    let (_d, store) = store();
    let s = spec("lan", "10.0.0.0/29");
    store
        .write(move |w| w.create_pool(&s, "t"))
        .await
        .expect("pool");
    for actor in ["a", "b", "c"] {
        let req = AllocationRequest::default();
        store
            .write(move |w| w.allocate("lan", &req, None, actor))
            .await
            .expect("alloc");
    }
    store
        .write(|w| w.release(ip("10.0.0.2"), "d"))
        .await
        .expect("release");
    let recent = store.read(|r| r.recent_events(3)).expect("recent");
    let summary: Vec<_> = recent
        .iter()
        .map(|e| (e.address, e.event.actor.as_str(), e.event.action.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (ip("10.0.0.2"), "d", "release"),
            (ip("10.0.0.4"), "c", "allocate"),
            (ip("10.0.0.3"), "b", "allocate"),
        ]
    );
    // The gateway's reservation at pool creation is an event too.
    let all = store.read(|r| r.recent_events(100)).expect("recent");
    assert_eq!(all.len(), 5);
    assert_eq!(all[4].address, ip("10.0.0.1"));
}

#[tokio::test]
async fn a_version_3_database_gets_its_events_index_back_filled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.redb");
    let store = Store::open(&path).expect("open");
    let s = spec("lan", "10.0.0.0/29");
    store
        .write(move |w| w.create_pool(&s, "t"))
        .await
        .expect("pool");
    let req = AllocationRequest::default();
    store
        .write(move |w| w.allocate("lan", &req, None, "alice"))
        .await
        .expect("alloc");
    let before = store.read(|r| r.recent_events(10)).expect("recent");
    assert_eq!(before.len(), 2);
    store.close();
    // Make it look like version 3: no events table.
    {
        let db = redb::Database::open(&path).expect("open raw");
        let txn = db.begin_write().expect("txn");
        txn.open_table(META)
            .expect("meta")
            .insert("schema_version", 3)
            .expect("v3");
        txn.delete_table(EVENTS).expect("drop events");
        txn.commit().expect("commit");
    }
    let store = Store::open(&path).expect("migrates");
    assert_eq!(
        store.read(|r| r.schema_version()).expect("read"),
        Some(SCHEMA_VERSION)
    );
    let after = store.read(|r| r.recent_events(10)).expect("recent");
    let ids = |v: &[RecentEvent]| {
        v.iter()
            .map(|e| (e.address, e.event.id))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&after), ids(&before));
    // New events go on from there.
    store
        .write(|w| w.release(ip("10.0.0.2"), "bob"))
        .await
        .expect("release");
    let latest = store.read(|r| r.recent_events(1)).expect("recent");
    assert_eq!(latest[0].event.actor, "bob");
}

mod counting {
    //! Counts by status for a filter: exact from the pools' counters for a pool and a status,
    //! counted (within a budget) for anything else.
    use super::*;

    async fn lan() -> (tempfile::TempDir, Store) {
        let (d, store) = store();
        let s = PoolSpec {
            static_ranges: vec!["10.0.0.2-10.0.0.9".into()],
            ..spec("lan", "10.0.0.0/27")
        };
        store
            .write(move |w| w.create_pool(&s, "t"))
            .await
            .expect("pool");
        for i in 0..6 {
            let req = AllocationRequest {
                hostname: Some(format!("web-{i}")),
                ..Default::default()
            };
            store
                .write(move |w| w.allocate("lan", &req, None, "t"))
                .await
                .expect("alloc");
        }
        (d, store)
    }

    fn n(c: &StatusCounts) -> [(u64, bool); 4] {
        Status::ALL.map(|s| (c.get(s).n, c.get(s).more))
    }

    #[tokio::test]
    async fn counts_match_the_listing() {
        let (_d, store) = lan().await;
        // 30 usable, the gateway reserved, 6 allocated.
        let all = store
            .read(|r| r.count(&AddressFilter::default(), COUNT_BUDGET))
            .expect("count");
        assert_eq!(n(&all), [(23, false), (6, false), (1, false), (0, false)]);
        let held = AddressFilter {
            status: Some(Status::Allocated),
            ..Default::default()
        };
        let c = store.read(|r| r.count(&held, COUNT_BUDGET)).expect("count");
        assert_eq!(n(&c), [(0, false), (6, false), (0, false), (0, false)]);
        let q = AddressFilter {
            q: Some("web-1".into()),
            ..Default::default()
        };
        let c = store.read(|r| r.count(&q, COUNT_BUDGET)).expect("count");
        assert_eq!(n(&c), [(0, false), (1, false), (0, false), (0, false)]);
        // Static free addresses: .2-.9 minus the six allocated (allocation takes the static
        // ranges first).
        let st = AddressFilter {
            addr_type: Some(AddrType::Static),
            ..Default::default()
        };
        let c = store.read(|r| r.count(&st, COUNT_BUDGET)).expect("count");
        assert_eq!(n(&c), [(2, false), (6, false), (1, false), (0, false)]);
    }

    #[tokio::test]
    async fn a_count_past_its_budget_says_at_least() {
        let (_d, store) = lan().await;
        let f = AddressFilter {
            addr_type: Some(AddrType::Dhcp),
            ..Default::default()
        };
        // Five rows examined: the free .8 and .9 are static, .10 to .12 dhcp.
        let c = store.read(|r| r.count(&f, 5)).expect("count");
        assert_eq!(c.get(Status::Available), Count { n: 3, more: true });
        let c = store.read(|r| r.count(&f, 1000)).expect("count");
        assert_eq!(c.get(Status::Available), Count { n: 21, more: false });
    }
}

#[tokio::test]
async fn the_generation_moves_with_every_commit_and_only_then() {
    let (_d, store) = store();
    let generation = || store.read(|r| Ok(r.generation())).expect("read");
    let before = generation();
    assert_eq!(generation(), before, "a read is not a change");
    let s = spec("lan", "10.0.0.0/24");
    store
        .write(move |w| w.create_pool(&s, "t"))
        .await
        .expect("pool");
    let after = generation();
    assert!(after > before, "a committed change is a new generation");
    let failed = store
        .write(|w| w.allocate("nope", &AllocationRequest::default(), None, "t"))
        .await;
    assert!(failed.is_err());
    assert_eq!(generation(), after, "a failed change commits nothing");
}

mod plugin_runs {
    //! Sync runs: newest first, the latest `KEEP_RUNS` per plugin, each plugin apart.
    use super::*;

    fn run(plugin: &str, created: u32) -> NewRun {
        NewRun {
            plugin: plugin.into(),
            started: jiff::Timestamp::UNIX_EPOCH,
            duration_ms: 5,
            trigger: Trigger::Manual,
            outcome: RunOutcome::Report {
                created,
                updated: 0,
                deleted: 0,
                errors: vec![],
            },
            weft_changes: WeftChanges::default(),
        }
    }

    fn created(r: &PluginRun) -> u32 {
        match r.outcome {
            RunOutcome::Report { created, .. } => created,
            RunOutcome::Failed { .. } => panic!("not a report"),
        }
    }

    #[tokio::test]
    async fn runs_are_listed_newest_first_and_pruned_to_the_latest_fifty_per_plugin() {
        let (_d, store) = store();
        assert_eq!(store.read(|r| r.last_run("netbox")).expect("read"), None);
        for i in 0..(KEEP_RUNS as u32 + 5) {
            let r = run("netbox", i);
            store
                .write(move |w| w.record_plugin_run(&r))
                .await
                .expect("record");
        }
        let other = NewRun {
            outcome: RunOutcome::Failed {
                error: "down".into(),
            },
            ..run("phpipam", 0)
        };
        store
            .write(move |w| w.record_plugin_run(&other))
            .await
            .expect("record");

        let all = store.read(|r| r.plugin_runs("netbox", 1000)).expect("read");
        assert_eq!(all.len(), KEEP_RUNS);
        assert_eq!(created(&all[0]), KEEP_RUNS as u32 + 4, "newest first");
        assert_eq!(created(&all[KEEP_RUNS - 1]), 5, "the five oldest are gone");
        let last = store.read(|r| r.last_run("netbox")).expect("read");
        assert_eq!(last.as_ref(), all.first());
        let php = store.read(|r| r.plugin_runs("phpipam", 10)).expect("read");
        assert_eq!(php.len(), 1, "another plugin's runs are its own");
        assert!(matches!(php[0].outcome, RunOutcome::Failed { .. }));
        assert!(php[0].id > all[0].id, "ids increase across plugins");
    }

    #[tokio::test]
    async fn a_version_4_database_gets_the_runs_table_and_the_current_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weft.redb");
        Store::open(&path).expect("open").close();
        // Make it look like version 4: no plugin_runs table.
        {
            let db = redb::Database::open(&path).expect("open raw");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert("schema_version", 4)
                .expect("v4");
            txn.delete_table(PLUGIN_RUNS).expect("drop plugin_runs");
            txn.commit().expect("commit");
        }
        let store = Store::open(&path).expect("migrates");
        assert_eq!(
            store.read(|r| r.schema_version()).expect("read"),
            Some(SCHEMA_VERSION)
        );
        assert_eq!(store.read(|r| r.nodes()).expect("read"), vec![]);
        assert_eq!(
            store.read(|r| r.plugin_runs("x", 10)).expect("read"),
            vec![]
        );
        let r = run("x", 1);
        store
            .write(move |w| w.record_plugin_run(&r))
            .await
            .expect("record");
        assert_eq!(
            store.read(|r| r.plugin_runs("x", 10)).expect("read").len(),
            1
        );
    }
}

mod notes {
    //! A note is a history line that changes nothing.
    use super::*;

    #[tokio::test]
    async fn a_note_adds_history_and_leaves_the_record_as_it_was() {
        let (_d, store) = store();
        let s = spec("lan", "10.0.0.0/29");
        store
            .write(move |w| w.create_pool(&s, "t"))
            .await
            .expect("pool");
        let before = store.read(|r| r.address(ip("10.0.0.3"))).expect("read");
        store
            .write(|w| w.note(ip("10.0.0.3"), "seen in NetBox as spare", "plugin:netbox"))
            .await
            .expect("note");
        let after = store.read(|r| r.address(ip("10.0.0.3"))).expect("read");
        assert_eq!(before, after);
        let history = store.read(|r| r.history(ip("10.0.0.3"))).expect("history");
        let last = history.last().expect("an event");
        assert_eq!(last.action, "note: seen in NetBox as spare");
        assert_eq!(last.actor, "plugin:netbox");
        assert_eq!(last.before, last.after);

        for bad in ["", "two\nlines", &"x".repeat(MAX_NOTE + 1)] {
            let text = bad.to_string();
            let refused = store
                .write(move |w| w.note(ip("10.0.0.3"), &text, "plugin:netbox"))
                .await;
            assert!(matches!(refused, Err(StoreError::Invalid(_))), "{bad:?}");
        }
        let outside = store
            .write(|w| w.note(ip("192.0.2.1"), "hello", "plugin:netbox"))
            .await;
        assert!(matches!(outside, Err(StoreError::OutsideEveryPool { .. })));
    }
}

#[tokio::test]
async fn a_backup_is_the_database_as_of_its_snapshot_and_refuses_to_overwrite() {
    let (dir, store) = store();
    let s = spec("lan", "10.0.0.0/24");
    store.write(move |w| w.create_pool(&s, "t")).await.unwrap();
    let req = AllocationRequest {
        address: None,
        owner: Some("web".into()),
        hostname: Some("web-1".into()),
    };
    let first = store
        .write(move |w| w.allocate("lan", &req, None, "t"))
        .await
        .unwrap()
        .address;
    store
        .write(|w| w.create_token("admin", "a-secret-that-is-long-enough", false))
        .await
        .unwrap();
    let copy = dir.path().join("backup.redb");
    let rows = store.backup(&copy).unwrap();
    assert!(rows > 0);
    // A change after the backup is not in it.
    store.write(move |w| w.release(first, "t")).await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the copy is for its owner only: {mode:o}");
    assert!(Store::check_integrity(&copy).unwrap());
    let restored = Store::open(&copy).unwrap();
    restored
        .read(|r| {
            let rec = r.address(first)?;
            assert_eq!(rec.status, Status::Allocated);
            assert_eq!(r.pool("lan")?.cidr.to_string(), "10.0.0.0/24");
            assert_eq!(r.tokens()?.len(), 1);
            Ok(())
        })
        .unwrap();
    restored.close();
    let e = store.backup(&copy).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}
