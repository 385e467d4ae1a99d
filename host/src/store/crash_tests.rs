//! Crash consistency of the store. An address's record, the pool's free index (fresh runs and
//! released queue), the status index and the pool's counters are separate redb tables kept in
//! step inside one transaction. This guards against a crash, at any point of the disk's life,
//! leaving them out of step: an address both free and held (next-free would hand it out a
//! second time), an address neither free nor held (leaked), counters that disagree with the
//! records, or an allocation whose write was acknowledged (and made durable) missing after
//! recovery. The database file and its journal share one simulated disk, as in redb's own `tests/crash_consistency.rs`: a storage
//! backend whose durable image advances only at `sync_data`, frozen from sync `k` on, so the
//! image is what a crash just before sync `k` completes would leave, optionally with the
//! header write that was in flight at that moment reaching the disk.

use super::{AddressFilter, AddressPatch, AllocationRequest, DeviceSpec, PoolSpec, Store};
use crate::ipam::Status;
use redb::StorageBackend;
use redb::backends::InMemoryBackend;
use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The error type of `StorageBackend`'s I/O methods: `std::io::Error`, as long as redb's
/// `experimental-api-5` feature (which makes it `redb::BackendError`) is off.
type BackendIoError = std::io::Error;

/// One file of the simulated disk.
#[derive(Debug, Default)]
struct FileState {
    /// The file as the running database sees it: every write lands here at once.
    live: Vec<u8>,
    /// The file as a crash would leave it: `live` as of the last sync that completed.
    durable: Vec<u8>,
    /// The last write to offset 0 (the header) issued before the freezing sync: in flight at
    /// the crash, it may have reached the disk although the sync did not complete.
    header_in_flight: Vec<u8>,
    /// `live` when the freezing sync began: every write issued before the crash.
    at_crash: Option<Vec<u8>>,
}

/// The disk: the database file and its journal, with one count of syncs between them (a sync
/// of either is a point where the crash may come).
#[derive(Debug, Default)]
struct CrashState {
    files: [FileState; 2],
    syncs: u64,
    /// From this sync on, syncs no longer advance `durable` (the simulated crash).
    freeze_from: Option<u64>,
}

impl CrashState {
    fn frozen(&self) -> bool {
        self.freeze_from.is_some_and(|f| self.syncs >= f)
    }
}

const DB: usize = 0;
const JOURNAL: usize = 1;

#[derive(Clone, Debug, Default)]
struct CrashBackend {
    state: Arc<Mutex<CrashState>>,
    file: usize,
}

/// What a crash during the freezing sync can leave: the database file and the journal.
struct CrashImage {
    kind: &'static str,
    db: Vec<u8>,
    journal: Vec<u8>,
}

impl CrashBackend {
    fn frozen_at(sync: u64) -> Self {
        let backend = CrashBackend {
            state: Arc::default(),
            file: DB,
        };
        backend.state.lock().unwrap().freeze_from = Some(sync);
        backend
    }

    /// The journal's file on the same disk.
    fn journal(&self) -> Self {
        CrashBackend {
            state: self.state.clone(),
            file: JOURNAL,
        }
    }

    fn syncs(&self) -> u64 {
        self.state.lock().unwrap().syncs
    }

    /// The files after a crash during the freezing sync, in the forms that crash can take:
    /// only what was synced; that plus the in-flight header write of the database; and that
    /// plus every journal write issued before the crash.
    fn crash_images(&self) -> Vec<CrashImage> {
        let state = self.state.lock().unwrap();
        let [db, journal] = &state.files;
        let mut images = vec![CrashImage {
            kind: "synced data",
            db: db.durable.clone(),
            journal: journal.durable.clone(),
        }];
        let header = &db.header_in_flight;
        if !header.is_empty()
            && db.durable.len() >= header.len()
            && db.durable[..header.len()] != header[..]
        {
            let mut image = db.durable.clone();
            image[..header.len()].copy_from_slice(header);
            images.push(CrashImage {
                kind: "synced data + in-flight database header",
                db: image,
                journal: journal.durable.clone(),
            });
        }
        if let Some(issued) = journal.at_crash.as_ref().filter(|j| **j != journal.durable) {
            images.push(CrashImage {
                kind: "synced data + journal writes in flight",
                db: db.durable.clone(),
                journal: issued.clone(),
            });
        }
        images
    }
}

impl StorageBackend for CrashBackend {
    fn len(&self) -> Result<u64, BackendIoError> {
        Ok(self.state.lock().unwrap().files[self.file].live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        let state = self.state.lock().unwrap();
        let live = &state.files[self.file].live;
        let offset = usize::try_from(offset).unwrap();
        if offset + out.len() > live.len() {
            return Err(std::io::Error::from(ErrorKind::UnexpectedEof));
        }
        out.copy_from_slice(&live[offset..offset + out.len()]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        let mut state = self.state.lock().unwrap();
        state.files[self.file]
            .live
            .resize(usize::try_from(len).unwrap(), 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        let mut state = self.state.lock().unwrap();
        state.syncs += 1;
        if state.freeze_from == Some(state.syncs) {
            for f in &mut state.files {
                f.at_crash = Some(f.live.clone());
            }
        }
        if !state.frozen() {
            let f = &mut state.files[self.file];
            f.durable = f.live.clone();
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        let mut state = self.state.lock().unwrap();
        let frozen = state.frozen();
        let f = &mut state.files[self.file];
        let offset = usize::try_from(offset).unwrap();
        if offset + data.len() > f.live.len() {
            f.live.resize(offset + data.len(), 0);
        }
        f.live[offset..offset + data.len()].copy_from_slice(data);
        // Writes issued after the freezing sync happen after the crash: they never reach disk.
        if offset == 0 && !frozen {
            f.header_in_flight = data.to_vec();
        }
        Ok(())
    }
}

const ACTOR: &str = "crash-test";
const LAN: &str = "lan";
const V6: &str = "v6";

/// One acknowledged write of the workload: each is one `write_blocking` call, so (the writer
/// thread having nothing else queued) one transaction.
#[derive(Debug, Clone, Copy)]
enum Step {
    CreatePool(&'static str, &'static str),
    /// Next-free in a pool.
    Next(&'static str),
    /// Next-free `n` times in one transaction (large enough to grow the file).
    NextMany(&'static str, usize),
    /// A specific address.
    Take(&'static str, &'static str),
    Release(&'static str),
    /// A status change through `patch` (reserve, quarantine, back to available).
    SetStatus(&'static str, Status),
    Device(&'static str, &'static str),
}

const WORKLOAD: &[Step] = &[
    Step::CreatePool(LAN, "10.0.0.0/24"),
    Step::CreatePool(V6, "fd00::/120"),
    Step::Next(LAN),
    Step::Next(LAN),
    Step::Next(LAN),
    Step::Take(LAN, "10.0.0.50"),
    // Already held: refused, nothing committed.
    Step::Take(LAN, "10.0.0.50"),
    Step::Next(V6),
    Step::Take(V6, "fd00::80"),
    Step::Release("10.0.0.3"),
    Step::SetStatus("10.0.0.60", Status::Reserved),
    Step::SetStatus("10.0.0.4", Status::Quarantine),
    Step::Device("dev-1", "10.0.0.100"),
    Step::NextMany(LAN, 40),
    Step::Release("fd00::2"),
    Step::SetStatus("10.0.0.4", Status::Available),
    // The device moves: its old address is released in the same transaction.
    Step::Device("dev-1", "10.0.0.101"),
    Step::SetStatus("fd00::90", Status::Quarantine),
    Step::Release("10.0.0.50"),
    Step::SetStatus("10.0.0.60", Status::Available),
    Step::Next(V6),
    // Back from the released queue, by address.
    Step::Take(LAN, "10.0.0.3"),
    Step::Release("10.0.0.2"),
    Step::Next(LAN),
];

/// What a step's `write_blocking` answered: the addresses (or pool) it got, or the error.
type Answer = Result<Vec<String>, String>;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn run_step(store: &Store, step: Step) -> Answer {
    let got = |r: crate::ipam::Record| vec![r.address.to_string()];
    let out = match step {
        Step::CreatePool(name, cidr) => store.write_blocking(move |w| {
            let spec = PoolSpec {
                name: name.to_string(),
                cidr: cidr.parse().unwrap(),
                description: None,
                reserve_gateway: true,
                static_ranges: Vec::new(),
            };
            w.create_pool(&spec, ACTOR)
                .map(|p| vec![p.cidr.to_string()])
        }),
        Step::Next(pool) => store.write_blocking(move |w| {
            w.allocate(pool, &AllocationRequest::default(), None, ACTOR)
                .map(got)
        }),
        Step::NextMany(pool, n) => store.write_blocking(move |w| {
            (0..n)
                .map(|_| {
                    let r = w.allocate(pool, &AllocationRequest::default(), None, ACTOR)?;
                    Ok(r.address.to_string())
                })
                .collect()
        }),
        Step::Take(pool, addr) => store.write_blocking(move |w| {
            let req = AllocationRequest {
                address: Some(ip(addr)),
                ..AllocationRequest::default()
            };
            w.allocate(pool, &req, None, ACTOR).map(got)
        }),
        Step::Release(addr) => store.write_blocking(move |w| w.release(ip(addr), ACTOR).map(got)),
        Step::SetStatus(addr, status) => store.write_blocking(move |w| {
            let patch = AddressPatch {
                status: Some(status),
                ..AddressPatch::default()
            };
            w.patch(ip(addr), &patch, ACTOR).map(got)
        }),
        Step::Device(id, addr) => store.write_blocking(move |w| {
            let spec = DeviceSpec {
                ip: ip(addr),
                hostname: Some(format!("{id}-host")),
                mac: None,
                platform: None,
                manufacturer: None,
            };
            w.upsert_device(id, &spec, ACTOR)
                .map(|d| vec![d.ip.to_string()])
        }),
    };
    out.map_err(|e| e.to_string())
}

/// What a crash may keep or lose: the pools, which address is held with which status, and
/// where each device is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    pools: BTreeMap<String, String>,
    held: BTreeMap<IpAddr, Status>,
    devices: BTreeMap<String, IpAddr>,
}

/// Reads the store's state, checking on the way that it is consistent: every usable address of
/// a pool is exactly one of free or held, the counters match the held records, and each
/// device's address is allocated to it.
fn consistent_state(store: &Store, ctx: &str) -> State {
    store
        .read(|r| {
            let mut state = State {
                pools: BTreeMap::new(),
                held: BTreeMap::new(),
                devices: BTreeMap::new(),
            };
            for pool in r.pools()? {
                state.pools.insert(pool.name.clone(), pool.cidr.to_string());
                // Listed records per held status: allocated, reserved, quarantine.
                let mut counts = [0u64; 3];
                for (i, status) in [Status::Allocated, Status::Reserved, Status::Quarantine].into_iter().enumerate() {
                    let filter = AddressFilter {
                        pool: Some(pool.id),
                        status: Some(status),
                        ..AddressFilter::default()
                    };
                    let page = r.list(&filter, None, 10_000)?;
                    assert!(page.next_cursor.is_none(), "{ctx}: listing {status:?} was cut short");
                    for rec in &page.items {
                        assert_eq!(rec.status, status, "{ctx}: {} listed under the wrong status", rec.address);
                        assert_eq!(rec.pool, pool.id, "{ctx}: {} listed under the wrong pool", rec.address);
                        let before = state.held.insert(rec.address, status);
                        assert!(before.is_none(), "{ctx}: {} is held under two statuses", rec.address);
                    }
                    counts[i] = page.items.len() as u64;
                }
                let available = AddressFilter {
                    pool: Some(pool.id),
                    status: Some(Status::Available),
                    ..AddressFilter::default()
                };
                let page = r.list(&available, None, 10_000)?;
                assert!(page.next_cursor.is_none(), "{ctx}: listing available was cut short");
                let mut free = BTreeSet::new();
                for rec in &page.items {
                    assert!(free.insert(rec.address), "{ctx}: {} is free twice", rec.address);
                    assert!(
                        !state.held.contains_key(&rec.address),
                        "{ctx}: {} is both free and held ({:?})",
                        rec.address,
                        state.held.get(&rec.address),
                    );
                }
                let stats = pool.stats();
                assert_eq!(
                    [stats.allocated, stats.reserved, stats.quarantine],
                    counts,
                    "{ctx}: pool {} counters (allocated, reserved, quarantine) disagree with its records",
                    pool.name,
                );
                let held: u64 = counts.iter().sum();
                assert_eq!(
                    held + free.len() as u64,
                    stats.total,
                    "{ctx}: pool {}: {held} held + {} free != {} usable (an address is lost or doubled)",
                    pool.name,
                    free.len(),
                    stats.total,
                );
                assert_eq!(stats.available, free.len() as u64, "{ctx}: pool {} available count", pool.name);
            }
            for step in WORKLOAD {
                if let Step::Device(id, _) = step
                    && let Some(dev) = r.device(id)?
                {
                    let rec = r.address(dev.ip)?;
                    assert_eq!(
                        (rec.status, rec.device.as_deref()),
                        (Status::Allocated, Some(*id)),
                        "{ctx}: device {id}'s address {} is not allocated to it",
                        dev.ip,
                    );
                    state.devices.insert(id.to_string(), dev.ip);
                }
            }
            Ok(state)
        })
        .unwrap_or_else(|e| panic!("{ctx}: reading the store failed: {e}"))
}

/// One run of the workload over a backend.
struct Run {
    /// Syncs redb made creating the file (before it is a database at all).
    creation_syncs: u64,
    answers: Vec<Answer>,
    /// The backend's sync count before and after each step.
    syncs_before: Vec<u64>,
    syncs_after: Vec<u64>,
    /// `states[j]`: the state after the first `j` steps (only filled when asked for).
    states: Vec<State>,
}

fn run_workload(backend: &CrashBackend, with_states: bool) -> Run {
    let db = redb::Builder::new()
        .create_with_backend(backend.clone())
        .expect("creating the database");
    let creation_syncs = backend.syncs();
    let store = Store::with_backends(db, backend.journal()).expect("opening the store");
    let mut run = Run {
        creation_syncs,
        answers: Vec::new(),
        syncs_before: Vec::new(),
        syncs_after: Vec::new(),
        states: Vec::new(),
    };
    if with_states {
        run.states.push(consistent_state(
            &store,
            "reference run, before the workload",
        ));
    }
    for (i, step) in WORKLOAD.iter().enumerate() {
        run.syncs_before.push(backend.syncs());
        run.answers.push(run_step(&store, *step));
        run.syncs_after.push(backend.syncs());
        if with_states {
            run.states.push(consistent_state(
                &store,
                &format!("reference run, after step {i} ({step:?})"),
            ));
        }
    }
    run
}

fn in_memory(image: &[u8]) -> InMemoryBackend {
    let backend = InMemoryBackend::new();
    backend.set_len(image.len() as u64).unwrap();
    backend.write(0, image).unwrap();
    backend
}

/// Opens a crash image with redb (the error is redb's refusal to open it).
fn open_image(image: &[u8]) -> Result<redb::Database, redb::DatabaseError> {
    redb::Builder::new().create_with_backend(in_memory(image))
}

/// Checks redb's integrity of an opened crash image, then opens the store over it and checks
/// the store's consistency; returns the state it recovered.
fn recover(mut db: redb::Database, journal: &[u8], ctx: &str) -> (Store, State) {
    // Ok(false) means redb repaired something; it must then be clean.
    let clean = db
        .check_integrity()
        .unwrap_or_else(|e| panic!("{ctx}: integrity check failed: {e}"));
    if !clean {
        assert!(
            db.check_integrity().unwrap(),
            "{ctx}: still not clean after repair"
        );
    }
    let store = Store::with_backends(db, in_memory(journal))
        .unwrap_or_else(|e| panic!("{ctx}: the store does not open: {e}"));
    let state = consistent_state(&store, ctx);
    (store, state)
}

/// The allocator works on the recovered store: next-free hands out an address nobody holds,
/// that address cannot be taken a second time, and the store stays consistent.
fn allocate_after_recovery(store: &Store, state: &State, ctx: &str) {
    let mut held = state.held.clone();
    for name in state.pools.keys() {
        let pool = name.clone();
        let got = store
            .write_blocking(move |w| w.allocate(&pool, &AllocationRequest::default(), None, ACTOR))
            .unwrap_or_else(|e| panic!("{ctx}: next-free in {name} failed after recovery: {e}"));
        let addr = got.address;
        assert!(
            !held.contains_key(&addr),
            "{ctx}: next-free in {name} handed out {addr}, which is already {:?}",
            held[&addr],
        );
        held.insert(addr, Status::Allocated);
        let pool = name.clone();
        let again = store.write_blocking(move |w| {
            let req = AllocationRequest {
                address: Some(addr),
                ..AllocationRequest::default()
            };
            w.allocate(&pool, &req, None, ACTOR)
        });
        assert!(
            again.is_err(),
            "{ctx}: {addr} was allocated twice after recovery"
        );
    }
    let after = consistent_state(
        store,
        &format!("{ctx}, after allocating on the recovered store"),
    );
    assert_eq!(
        after.held, held,
        "{ctx}: allocating after recovery changed other addresses"
    );
}

#[test]
fn crash_at_every_sync_point_leaves_no_address_held_twice_or_lost() {
    // Pass 1: the reference run. Counts the syncs of the whole workload (before the store is
    // dropped), and records every step's answer and the state after it.
    let probe = CrashBackend::default();
    let reference = run_workload(&probe, true);
    let total = probe.syncs();
    for (step, answer) in WORKLOAD.iter().zip(&reference.answers) {
        let refused = matches!(step, Step::Take(LAN, "10.0.0.50")) && answer.is_err();
        assert!(
            answer.is_ok() || refused,
            "workload step {step:?} failed: {answer:?}"
        );
    }
    assert!(
        reference.answers.iter().filter(|a| a.is_err()).count() == 1,
        "exactly the second take of 10.0.0.50 is refused: {:?}",
        reference.answers
    );
    assert!(
        total > WORKLOAD.len() as u64,
        "only {total} syncs for {} commits",
        WORKLOAD.len()
    );

    let mut images = 0;
    let mut refused_during_creation = 0;
    for k in 1..=total {
        let backend = CrashBackend::frozen_at(k);
        let run = run_workload(&backend, false);
        assert_eq!(
            run.answers, reference.answers,
            "crash at sync {k}: the run answered differently"
        );
        // Steps acknowledged with all their syncs before sync k are durable in the image; steps
        // that began after sync k had been issued cannot be in it.
        let durable = run.syncs_after.iter().filter(|&&s| s < k).count();
        let begun = run.syncs_before.iter().filter(|&&s| s < k).count();
        for image in backend.crash_images() {
            images += 1;
            let ctx = format!("crash at sync {k} of {total} ({})", image.kind);
            let db = match open_image(&image.db) {
                Ok(db) => db,
                // redb writes the magic number last when it creates a file, so a crash while
                // creating leaves a file it refuses to open, rather than a wrong database. No
                // write can have been acknowledged yet.
                Err(e)
                    if k <= run.creation_syncs && e.to_string().contains("Not a redb database") =>
                {
                    refused_during_creation += 1;
                    continue;
                }
                Err(e) => panic!("{ctx}: the crash image does not open: {e}"),
            };
            let (store, state) = recover(db, &image.journal, &ctx);
            let matches: Vec<usize> = (0..=WORKLOAD.len())
                .filter(|&j| reference.states[j] == state)
                .collect();
            assert!(
                matches.iter().any(|&j| durable <= j && j <= begun),
                "{ctx}: the recovered state is not the state after j steps for any j in \
                 {durable}..={begun} (steps acknowledged durable ..= steps begun); it matches \
                 j in {matches:?}\nrecovered: {state:#?}",
            );
            allocate_after_recovery(&store, &state, &ctx);
        }
    }
    assert!(images as u64 >= total);
    assert!(
        refused_during_creation <= reference.creation_syncs,
        "{refused_during_creation} images refused"
    );
}

/// A device that moves to another address of its own pool releases the old address and
/// allocates the new one in one change; the pool's counters must count one allocation, not two.
#[test]
fn moving_a_device_within_its_pool_keeps_the_pool_counters_in_step() {
    let db = redb::Builder::new()
        .create_with_backend(InMemoryBackend::new())
        .unwrap();
    let store = Store::with_database(db).unwrap();
    for step in [
        Step::CreatePool(LAN, "10.0.0.0/24"),
        Step::Device("dev-1", "10.0.0.100"),
        Step::Device("dev-1", "10.0.0.101"),
    ] {
        run_step(&store, step).unwrap_or_else(|e| panic!("{step:?} failed: {e}"));
    }
    // Checks the counters against the records, among the rest.
    let state = consistent_state(&store, "after dev-1 moved from 10.0.0.100 to 10.0.0.101");
    assert_eq!(state.held.get(&ip("10.0.0.100")), None);
    assert_eq!(state.held.get(&ip("10.0.0.101")), Some(&Status::Allocated));
}
