//! The store: weft's state in one redb file, behind typed reads and writes. Nothing outside
//! this module touches redb.
//!
//! Writes go through one writer thread that batches whatever is queued into one transaction
//! (group commit): a caller's future resolves only after the transaction holding its change is
//! durable. An operation that fails is taken out of its batch, the batch re-runs without it,
//! and it fails alone.
//!
//! A batch is made durable by the journal beside the database (`journal`, `redo`): its redo
//! operations are appended and synced, then the transaction commits to redb without a sync.
//! Every few megabytes of journal, and when the writer is idle or closing, a transaction
//! commits to redb durably (a checkpoint) and the journal starts over. Opening the store
//! replays what the journal holds beyond the last checkpoint.

pub mod agent_nonces;
pub mod checks;
#[cfg(test)]
mod crash_tests;
mod devices;
mod error;
mod join_tokens;
mod journal;
mod listing;
mod meshes;
mod node_history;
mod nodes;
mod notes;
mod peers;
mod plugin_runs;
mod pools;
mod records;
mod redo;
mod sessions;
mod tables;
#[cfg(test)]
mod tests;
mod tokens;
mod users;

pub use devices::{Device, DeviceSpec};
pub use error::StoreError;
pub use join_tokens::{Enrolment, JoinRefused, JoinToken, new_join_secret};
pub use listing::{AddressFilter, COUNT_BUDGET, Count, MAX_SCAN, Page, StatusCounts};
pub use meshes::{Mesh, MeshMember};
pub use node_history::{NodeAction, NodeEvent};
pub use nodes::{
    MAX_LABELS, Node, NodePatch, NodeSpec, NodeStatus, Observation, SealedSecret, node_owner,
};
pub use notes::MAX_NOTE;
pub use peers::{MAX_PEER_NAME, NewPeer, Peer, peer_owner, valid_peer_name};
pub use plugin_runs::{KEEP_RUNS, NewRun, PluginRun, RunOutcome, Trigger, WeftChanges};
pub use pools::{Pool, PoolSpec, PoolStats};
pub use records::{AddressPatch, AllocationRequest, Event, ImportRow, RecentEvent};
pub use sessions::{
    ABSOLUTE_TIMEOUT, IDLE_TIMEOUT, Session, SessionState, TOUCH_EVERY, new_session_id,
};
pub use tables::SCHEMA_VERSION;
pub use tokens::new_secret;
pub use tokens::{Token, TokenInfo};
pub use users::{Role, UserInfo, hash_password};

use journal::Journal;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, StorageBackend, WriteTransaction,
};
use serde::{Serialize, de::DeserializeOwned};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use tables::*;
use tokio::sync::oneshot;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Most changes one transaction carries: bounds the latency a batch adds to its first caller.
const MAX_BATCH: usize = 512;

/// How long the writer waits with nothing to do before it checkpoints the journal.
const IDLE_CHECKPOINT: Duration = Duration::from_millis(500);

/// `meta` keys of the journal: the number its next entry carries as of the last checkpoint,
/// and the salt of its checksums (random per database file).
const JOURNAL_NEXT: &str = "journal_next";
const JOURNAL_SALT: &str = "journal_salt";

macro_rules! tables {
    ($($field:ident: $def:ident <$k:ty, $v:ty>),* $(,)?) => {
        /// Every table, open for writing inside one transaction; each write is also recorded
        /// in the transaction's redo log.
        pub(crate) struct WriteTables<'t> { $(pub(crate) $field: redo::Logged<'t, $k, $v>,)* }
        /// The tables of one snapshot, each opened on first use: a read touches only what
        /// it needs (an API token check opens two tables, not all of them).
        pub(crate) struct ReadTables {
            txn: redb::ReadTransaction,
            $($field: std::cell::OnceCell<redb::ReadOnlyTable<$k, $v>>,)*
        }
        impl<'t> WriteTables<'t> {
            fn open(txn: &'t WriteTransaction, log: &redo::Log) -> Result<Self> {
                Ok(WriteTables {
                    $($field: redo::Logged::new(txn, $def, stringify!($field), log.clone()),)*
                })
            }

            /// Applies a journal entry's operations again (not recorded a second time).
            fn replay(&mut self, payload: &[u8]) -> Result<()> {
                let bad = |e: redo::RedoError| StoreError::corrupt("journal", e);
                for op in redo::ops(payload) {
                    let op = op.map_err(bad)?;
                    match op.table() {
                        $(stringify!($field) => op.apply(self.$field.table_mut()?).map_err(bad)?,)*
                        other => return Err(bad(redo::RedoError::UnknownTable(other.to_string()))),
                    }
                }
                Ok(())
            }
        }
        /// Creates the tables a file lacks, so readers never meet an absent one.
        fn create_tables(txn: &WriteTransaction) -> Result<()> {
            $(txn.open_table($def)?;)*
            Ok(())
        }
        /// Copies every table of the snapshot `from` into `to`, row by row; the rows copied.
        fn copy_tables(from: &redb::ReadTransaction, to: &WriteTransaction) -> Result<u64> {
            let mut rows = 0u64;
            $(
                {
                    let src = from.open_table($def)?;
                    let mut dst = to.open_table($def)?;
                    for entry in src.iter()? {
                        let (k, v) = entry?;
                        dst.insert(k.value(), v.value())?;
                        rows += 1;
                    }
                }
            )*
            Ok(rows)
        }
        #[allow(dead_code)] // some tables are only ever written
        impl ReadTables {
            fn new(txn: redb::ReadTransaction) -> Self {
                ReadTables { txn, $($field: std::cell::OnceCell::new(),)* }
            }
            $(
                pub(crate) fn $field(&self) -> Result<&redb::ReadOnlyTable<$k, $v>> {
                    if let Some(t) = self.$field.get() {
                        return Ok(t);
                    }
                    let t = self.txn.open_table($def)?;
                    Ok(self.$field.get_or_init(|| t))
                }
            )*
        }
    };
}

tables! {
    meta: META<&'static str, u64>,
    pools: POOLS<u64, &'static [u8]>,
    pool_names: POOL_NAMES<&'static str, u64>,
    pool_spans: POOL_SPANS<(u8, u128), u64>,
    records: RECORDS<(u8, u128), &'static [u8]>,
    by_status: BY_STATUS<(u8, u8, u128), ()>,
    history: HISTORY<(u8, u128, u64), &'static [u8]>,
    events: EVENTS<u64, (u8, u128)>,
    fresh: FRESH<(u64, u128), u128>,
    queue: QUEUE<(u64, u8, u64), u128>,
    queued: QUEUED<(u64, u128), (u8, u64)>,
    idempotency: IDEMPOTENCY<(u64, &'static str), (u8, u128)>,
    tokens: TOKENS<&'static str, &'static [u8]>,
    token_hashes: TOKEN_HASHES<&'static [u8], &'static str>,
    devices: DEVICES<&'static str, &'static [u8]>,
    search: SEARCH<(&'static str, u8, u128), ()>,
    users: USERS<&'static str, &'static [u8]>,
    sessions: SESSIONS<&'static [u8], &'static [u8]>,
    plugin_runs: PLUGIN_RUNS<(&'static str, u64), &'static [u8]>,
    peers: PEERS<&'static str, &'static [u8]>,
    peer_keys: PEER_KEYS<&'static [u8], &'static str>,
    peers_by_node: PEERS_BY_NODE<(&'static str, &'static str), ()>,
    nodes: NODES<&'static str, &'static [u8]>,
    meshes: MESHES<&'static str, &'static [u8]>,
    mesh_names: MESH_NAMES<&'static str, &'static str>,
    join_tokens: JOIN_TOKENS<&'static [u8], &'static [u8]>,
    node_history: NODE_HISTORY<(&'static str, u64), &'static [u8]>,
}

/// A consistent snapshot to read from.
pub struct Reader {
    pub(crate) t: ReadTables,
    generation: u64,
}

impl Reader {
    /// The store's generation when this snapshot began: it holds every change committed up
    /// to that generation (and maybe later ones). Equal generations mean nothing was written
    /// in between, so a result derived from a snapshot can be reused while it stays the same.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// One change in progress, inside a write transaction shared with other changes of its batch.
pub struct Writer<'t> {
    pub(crate) t: WriteTables<'t>,
    /// One clock reading per change, so a change's records and events agree on the time.
    pub(crate) now: jiff::Timestamp,
}

impl Reader {
    pub fn schema_version(&self) -> Result<Option<u64>> {
        Ok(self.t.meta()?.get("schema_version")?.map(|g| g.value()))
    }
}

impl Writer<'_> {
    /// Draws the next value of a counter kept in `meta`.
    pub(crate) fn next_id(&mut self, counter: &'static str) -> Result<u64> {
        let next = self.t.meta.get(counter)?.map(|g| g.value()).unwrap_or(0) + 1;
        self.t.meta.insert(counter, next)?;
        Ok(next)
    }
}

trait Job: Send {
    /// Runs the change; false if it failed (the batch is then re-run without it).
    fn run(&mut self, w: &mut Writer<'_>) -> bool;
    /// Marks the change failed without running it (it panicked).
    fn fail(&mut self, e: StoreError);
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, committed: Result<()>);
}

struct Change<F, R> {
    f: F,
    out: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

impl<F, R> Job for Change<F, R>
where
    F: FnMut(&mut Writer<'_>) -> Result<R> + Send,
    R: Send,
{
    fn run(&mut self, w: &mut Writer<'_>) -> bool {
        let out = (self.f)(w);
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn fail(&mut self, e: StoreError) {
        self.out = Some(Err(e));
    }

    fn finish(self: Box<Self>, committed: Result<()>) {
        let answer = match (committed, self.out) {
            (_, Some(Err(e))) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(()), Some(Ok(r))) => Ok(r),
            (Ok(()), None) => Err(StoreError::Closed),
        };
        // The caller may have gone away (client disconnected); the change stands regardless.
        let _ = self.reply.send(answer);
    }
}

/// The handle the rest of weft holds. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    jobs: mpsc::Sender<Box<dyn Job>>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Committed write transactions so far (see [`Reader::generation`]).
    generation: Arc<AtomicU64>,
}

impl Store {
    /// Opens (or creates) the database at `path` and its journal beside it (`path` with the
    /// extension `journal`), checks and migrates the schema, replays what the journal holds
    /// beyond the last checkpoint, and starts the writer thread.
    pub fn open(path: &Path) -> Result<Store> {
        use std::os::unix::fs::OpenOptionsExt;
        if !path.exists() {
            create_atomically(path)?;
        }
        // The database first: its lock keeps a second process away from the journal too.
        let db = Database::create(path)?;
        let journal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // It carries what the database does, secrets' hashes included.
            .mode(0o600)
            .open(journal_path(path))
            .map_err(io_error)?;
        let journal = redb::backends::FileBackend::new(journal)?;
        Self::with_backends(db, journal)
    }

    /// Opens a store over an already-built database with its journal in memory (tests).
    pub fn with_database(db: Database) -> Result<Store> {
        Self::with_backends(db, redb::backends::InMemoryBackend::new())
    }

    /// Opens a store over an already-built database and journal (tests use other storage
    /// backends, to simulate crashes).
    pub fn with_backends(db: Database, journal: impl StorageBackend) -> Result<Store> {
        migrate(&db)?;
        let journal = recover(&db, Box::new(journal))?;
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::channel();
        let writer_db = db.clone();
        let generation = Arc::new(AtomicU64::new(0));
        let committed = generation.clone();
        let writer = std::thread::Builder::new()
            .name("weft-store-writer".into())
            .spawn(move || writer_loop(&writer_db, journal, rx, &committed))
            .map_err(io_error)?;
        Ok(Store {
            db,
            jobs,
            writer: Arc::new(std::sync::Mutex::new(Some(writer))),
            generation,
        })
    }

    /// Closes the store: once every clone is dropped, the writer finishes the changes already
    /// queued and the database file is closed. Blocks until then; call it on the last clone.
    pub fn close(self) {
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        drop(self);
        if let Some(w) = writer {
            let _ = w.join();
        }
    }

    /// Runs `f` on a fresh snapshot.
    pub fn read<R>(&self, f: impl FnOnce(&Reader) -> Result<R>) -> Result<R> {
        // Read before the snapshot begins: the snapshot then holds at least this generation.
        let generation = self.generation.load(Ordering::Acquire);
        let reader = Reader {
            t: ReadTables::new(self.db.begin_read()?),
            generation,
        };
        f(&reader)
    }

    /// Queues a change and waits until it is durable. `f` may run more than once (when
    /// another change of its batch fails) and must depend only on its captures and the store.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnMut(&mut Writer<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.enqueue(f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// The same as [`Store::write`], for callers outside an async runtime (the CLI).
    pub fn write_blocking<R, F>(&self, f: F) -> Result<R>
    where
        F: FnMut(&mut Writer<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.enqueue(f)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// Hands a change to the writer; the receiver resolves once its batch's fate is known.
    fn enqueue<R, F>(&self, f: F) -> Result<oneshot::Receiver<Result<R>>>
    where
        F: FnMut(&mut Writer<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Change {
                f,
                out: None,
                reply,
            }))
            .map_err(|_| StoreError::Closed)?;
        Ok(answer)
    }

    /// Writes a consistent copy of the database to `dest`: every table as of one snapshot,
    /// taken when the call begins (writers go on meanwhile; nothing committed after the
    /// snapshot is in the copy, nothing committed before it is missing). The copy is built
    /// beside `dest`, committed durably and renamed into place, mode 0600. An existing `dest`
    /// is refused. Blocks: async callers run it on a blocking thread. The rows copied.
    pub fn backup(&self, dest: &Path) -> Result<u64> {
        use std::os::unix::fs::OpenOptionsExt;
        if dest.exists() {
            return Err(StoreError::Invalid(format!(
                "{} already exists: give a new file",
                dest.display()
            )));
        }
        let snapshot = self.db.begin_read()?;
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = std::path::PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        // Created 0600 before redb writes a byte: tokens' hashes and sealed secrets are in it.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error)?;
        let rows = {
            let copy = Database::create(&tmp)?;
            let txn = copy.begin_write()?;
            let rows = copy_tables(&snapshot, &txn)?;
            // A copy is another database: no journal of the original may replay into it.
            txn.open_table(META)?
                .insert(JOURNAL_SALT, rand::random::<u64>())?;
            txn.commit()?;
            rows
        };
        std::fs::rename(&tmp, dest).map_err(io_error)?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error)?;
        }
        Ok(rows)
    }

    /// Checks the file's integrity (redb's own check). Needs the only handle to the database:
    /// used by tests and tools after the server is gone.
    pub fn check_integrity(path: &Path) -> Result<bool> {
        let mut db = Database::open(path)?;
        Ok(db.check_integrity()?)
    }
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Db(Arc::new(redb::Error::Io(e)))
}

/// The journal of the database at `path`.
pub fn journal_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("journal")
}

/// Creates a new database beside `path` and renames it into place once it is complete, so a
/// crash during creation leaves no half-made file that redb would refuse to open.
fn create_atomically(path: &Path) -> Result<()> {
    let tmp = path.with_extension("redb-creating");
    let _ = std::fs::remove_file(&tmp);
    migrate(&Database::create(&tmp)?)?;
    std::fs::rename(&tmp, path).map_err(io_error)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
    }
    Ok(())
}

fn migrate(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
    let tables_before = txn.list_tables()?.count();
    let changed = {
        create_tables(&txn)?;
        let mut t = WriteTables::open(&txn, &redo::Log::default())?;
        let found = t.meta.get("schema_version")?.map(|g| g.value());
        // Older files (and new ones) get their journal's salt here.
        let salted = t.meta.get(JOURNAL_SALT)?.is_some();
        if !salted {
            t.meta.insert(JOURNAL_SALT, rand::random::<u64>())?;
        }
        match found {
            None => {
                t.meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(v) => {
                // Each step runs in this transaction, with the version bump: all or nothing.
                // Versions 5 (plugin_runs), 6 (peers, nodes) and 7 (meshes) need no step:
                // `create_tables` above created their tables, and an older file has
                // nothing to carry over into them.
                if v < 8 {
                    node_history::backfill(&mut t)?;
                }
                if v < 4 {
                    backfill_events(&mut t)?;
                }
                if v < 3 {
                    reencode_records(&mut t)?;
                }
                if v < 2 {
                    backfill_search(&mut t)?;
                }
                if v < SCHEMA_VERSION {
                    t.meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
        }
        found != Some(SCHEMA_VERSION) || !salted
    };
    // An up-to-date database is left untouched: no commit, so no fsync at every start.
    if changed || txn.list_tables()?.count() != tables_before {
        txn.commit()?;
    } else {
        txn.abort()?;
    }
    Ok(())
}

/// Version 3: records from JSON to postcard.
fn reencode_records(t: &mut WriteTables<'_>) -> Result<()> {
    let mut all = Vec::new();
    for e in t.records.iter()? {
        let (k, v) = e?;
        let rec: crate::ipam::Record = decode("records", v.value())?;
        all.push((k.value(), rec));
    }
    for (k, rec) in all {
        t.records.insert(k, encode_record(&rec).as_slice())?;
    }
    Ok(())
}

/// Version 4: index every history entry by its event id.
fn backfill_events(t: &mut WriteTables<'_>) -> Result<()> {
    let mut all = Vec::new();
    for e in t.history.iter()? {
        let (f, v, id) = e?.0.value();
        all.push((id, (f, v)));
    }
    for (id, key) in all {
        t.events.insert(id, key)?;
    }
    Ok(())
}

/// Version 2: index the hostnames and MACs of every stored record.
fn backfill_search(t: &mut WriteTables<'_>) -> Result<()> {
    let mut terms = Vec::new();
    for e in t.records.iter()? {
        let (k, v) = e?;
        let (f, ip) = k.value();
        let rec = decode_record(v.value())?;
        terms.extend(
            crate::ipam::search::terms(&rec)
                .into_iter()
                .map(|term| (term, f, ip)),
        );
    }
    for (term, f, ip) in terms {
        t.search.insert((term.as_str(), f, ip), ())?;
    }
    Ok(())
}

/// Replays the journal's entries beyond the last checkpoint into one durable transaction (a
/// checkpoint itself), and returns the journal ready for appends.
fn recover(db: &Database, file: Box<dyn StorageBackend>) -> Result<Journal> {
    let (salt, next) = {
        let r = db.begin_read()?;
        let meta = r.open_table(META)?;
        let get = |k: &str| -> Result<Option<u64>> { Ok(meta.get(k)?.map(|g| g.value())) };
        (
            get(JOURNAL_SALT)?.unwrap_or(0),
            get(JOURNAL_NEXT)?.unwrap_or(1),
        )
    };
    let mut journal = Journal::open(file, salt, next).map_err(io_error)?;
    let entries = journal.scan(next).map_err(io_error)?;
    let Some(&(last, _)) = entries.last() else {
        return Ok(journal);
    };
    let txn = db.begin_write()?;
    {
        let mut t = WriteTables::open(&txn, &redo::Log::default())?;
        for (_, payload) in &entries {
            t.replay(payload)?;
        }
        t.meta.table_mut()?.insert(JOURNAL_NEXT, last + 1)?;
    }
    txn.commit()?;
    tracing::info!(entries = entries.len(), "replayed the store's journal");
    journal.restart_at(last + 1);
    Ok(journal)
}

fn writer_loop(
    db: &Database,
    mut journal: Journal,
    rx: mpsc::Receiver<Box<dyn Job>>,
    generation: &AtomicU64,
) {
    let log = redo::Log::default();
    loop {
        let first = match rx.recv_timeout(IDLE_CHECKPOINT) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                checkpoint_if_needed(db, &mut journal);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut failed = Vec::new();
        while !batch.is_empty() {
            match run_batch(db, &mut journal, &log, &mut batch) {
                Ok(Some(i)) => failed.push(batch.remove(i)),
                Ok(None) => {
                    // Before the answers: a caller that reads after its write sees it counted.
                    generation.fetch_add(1, Ordering::Release);
                    for job in batch.drain(..) {
                        job.finish(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "write transaction failed");
                    for job in batch.drain(..) {
                        job.finish(Err(e.clone()));
                    }
                }
            }
        }
        for job in failed {
            job.finish(Ok(()));
        }
    }
    // A clean close leaves nothing to replay.
    checkpoint_if_needed(db, &mut journal);
}

/// A checkpoint of its own, when the journal holds anything (the writer is idle or closing).
fn checkpoint_if_needed(db: &Database, journal: &mut Journal) {
    if journal.is_empty() {
        return;
    }
    let done = db
        .begin_write()
        .map_err(StoreError::from)
        .and_then(|txn| checkpoint(txn, journal));
    // On failure the journal keeps its entries; the next checkpoint tries again.
    if let Err(e) = done {
        tracing::error!(error = %e, "store checkpoint failed");
    }
}

/// Commits `txn` durably with the journal's next number, and starts a new journal cycle: every
/// entry so far is then in the database.
fn checkpoint(txn: WriteTransaction, journal: &mut Journal) -> Result<()> {
    txn.open_table(META)?
        .insert(JOURNAL_NEXT, journal.next_seq())?;
    txn.commit()?;
    journal.restart();
    Ok(())
}

/// Runs a batch in one transaction. `Ok(Some(i))`: job `i` failed and nothing was committed.
fn run_batch(
    db: &Database,
    journal: &mut Journal,
    log: &redo::Log,
    batch: &mut [Box<dyn Job>],
) -> Result<Option<usize>> {
    log.borrow_mut().clear();
    let mut txn = db.begin_write()?;
    let failed = {
        let mut w = Writer {
            t: WriteTables::open(&txn, log)?,
            now: jiff::Timestamp::now(),
        };
        batch.iter_mut().position(|job| {
            w.now = jiff::Timestamp::now();
            // A bug in one change must not take the writer, and so every later write, down.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&mut w)));
            match ran {
                Ok(ok) => !ok,
                Err(_) => {
                    tracing::error!("a store change panicked; it fails alone");
                    job.fail(StoreError::Panicked);
                    true
                }
            }
        })
    };
    if let Some(i) = failed {
        txn.abort()?;
        return Ok(Some(i));
    }
    let ops = log.borrow();
    if !journal.fits(ops.len()) {
        // Too much for what is left of the journal: this batch is the checkpoint.
        checkpoint(txn, journal)?;
        return Ok(None);
    }
    if !ops.is_empty() {
        // Durable once this returns; an error here drops (aborts) the transaction.
        journal.append(&ops).map_err(io_error)?;
    }
    txn.set_durability(Durability::None)?;
    if let Err(e) = txn.commit() {
        // The entry must not be replayed into a database that refused it. If even that
        // fails, the next start would apply a change whose callers were told it failed:
        // stop rather than answer.
        if !ops.is_empty()
            && let Err(j) = journal.retract()
        {
            tracing::error!(error = %j, "cannot withdraw a journal entry after a failed commit");
            std::process::abort();
        }
        return Err(e.into());
    }
    Ok(None)
}

/// Records are the hot values (every listing decodes a page of them): compact binary
/// (postcard), with timestamps as integers. Everything else is JSON.
pub(crate) fn encode_record(r: &crate::ipam::Record) -> Vec<u8> {
    // Encoding plain fields into a Vec cannot fail.
    postcard::to_allocvec(r).unwrap_or_default()
}

pub(crate) fn decode_record(bytes: &[u8]) -> Result<crate::ipam::Record> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::corrupt("records", e))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(table, e))
}

/// Reads one JSON value from a table, whichever kind of table it is.
pub(crate) fn get_json<'k, K, T>(
    table: &impl ReadableTable<K, &'static [u8]>,
    name: &'static str,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Option<T>>
where
    K: redb::Key + 'static,
    T: DeserializeOwned,
{
    match table.get(key)? {
        Some(g) => Ok(Some(decode(name, g.value())?)),
        None => Ok(None),
    }
}
