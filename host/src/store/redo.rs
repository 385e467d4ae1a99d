//! Redo operations: every change a batch makes to a table, recorded as it happens, so the
//! journal can carry the batch and a restart can apply it again.
//!
//! Each operation is a blind write (put a value, remove a key, remove a range of keys), so
//! replaying the operations of a cycle over a database that already holds some or all of them
//! ends in the same state: a key's final value is set by the last operation on it.
//!
//! `Logged` wraps a redb table of a write transaction, opened on first use: its reads go
//! straight to the table; the writes it offers are the only ones there are, and each records
//! itself.

use redb::{
    AccessGuard, Key, Range, ReadableTable, StorageError, Table, TableDefinition, Value,
    WriteTransaction,
};
use std::borrow::Borrow;
use std::cell::{OnceCell, RefCell};
use std::ops::{Bound, RangeBounds};
use std::rc::Rc;

const PUT: u8 = 1;
const REMOVE: u8 = 2;
const REMOVE_RANGE: u8 = 3;

/// The operations of one transaction, in order: shared by all its tables.
pub(crate) type Log = Rc<RefCell<Vec<u8>>>;

pub(crate) struct Logged<'t, K: Key + 'static, V: Value + 'static> {
    txn: &'t WriteTransaction,
    def: TableDefinition<'static, K, V>,
    /// Opened on first use: opening a table, and writing its root back at commit, has a cost
    /// per table, and a change touches a few of the schema's tables.
    table: OnceCell<Table<'t, K, V>>,
    name: &'static str,
    log: Log,
}

impl<'t, K: Key + 'static, V: Value + 'static> Logged<'t, K, V> {
    pub(crate) fn new(
        txn: &'t WriteTransaction,
        def: TableDefinition<'static, K, V>,
        name: &'static str,
        log: Log,
    ) -> Self {
        Logged {
            txn,
            def,
            table: OnceCell::new(),
            name,
            log,
        }
    }

    /// The table, for reading (and for what takes a `ReadableTable`).
    pub(crate) fn table(&self) -> Result<&Table<'t, K, V>, redb::Error> {
        if let Some(t) = self.table.get() {
            return Ok(t);
        }
        let t = self.txn.open_table(self.def)?;
        Ok(self.table.get_or_init(|| t))
    }

    /// The table, for writes that are not recorded (replay, checkpoints).
    pub(crate) fn table_mut(&mut self) -> Result<&mut Table<'t, K, V>, redb::Error> {
        self.table()?;
        self.table
            .get_mut()
            .ok_or_else(|| redb::Error::Corrupted("table not open".into()))
    }

    pub(crate) fn get<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::Error> {
        Ok(self.table()?.get(key)?)
    }

    pub(crate) fn range<'a, KR>(
        &self,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<Range<'_, K, V>, redb::Error>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        Ok(self.table()?.range(range)?)
    }

    pub(crate) fn iter(&self) -> Result<Range<'_, K, V>, redb::Error> {
        Ok(self.table()?.iter()?)
    }

    #[allow(clippy::type_complexity)] // redb's own signature
    pub(crate) fn first(
        &self,
    ) -> Result<Option<(AccessGuard<'_, K>, AccessGuard<'_, V>)>, redb::Error> {
        Ok(self.table()?.first()?)
    }

    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::Error> {
        {
            let mut log = self.log.borrow_mut();
            op(&mut log, PUT, self.name);
            field(&mut log, K::as_bytes(key.borrow()).as_ref());
            field(&mut log, V::as_bytes(value.borrow()).as_ref());
        }
        Ok(self.table_mut()?.insert(key, value)?)
    }

    pub(crate) fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, redb::Error> {
        {
            let mut log = self.log.borrow_mut();
            op(&mut log, REMOVE, self.name);
            field(&mut log, K::as_bytes(key.borrow()).as_ref());
        }
        Ok(self.table_mut()?.remove(key)?)
    }

    /// Removes every key in `range`.
    pub(crate) fn remove_range<'a, KR>(
        &mut self,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<(), redb::Error>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        {
            let mut log = self.log.borrow_mut();
            op(&mut log, REMOVE_RANGE, self.name);
            bound::<K, KR>(&mut log, range.start_bound());
            bound::<K, KR>(&mut log, range.end_bound());
        }
        Ok(self.table_mut()?.retain_in(range, |_, _| false)?)
    }
}

fn op(log: &mut Vec<u8>, kind: u8, table: &str) {
    log.push(kind);
    field(log, table.as_bytes());
}

fn field(log: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are bounded by redb far below 4 GiB.
    log.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    log.extend_from_slice(bytes);
}

fn bound<'a, K: Key + 'static, KR: Borrow<K::SelfType<'a>>>(log: &mut Vec<u8>, b: Bound<&KR>) {
    match b {
        Bound::Included(k) => {
            log.push(1);
            field(log, K::as_bytes(k.borrow()).as_ref());
        }
        Bound::Excluded(k) => {
            log.push(2);
            field(log, K::as_bytes(k.borrow()).as_ref());
        }
        Bound::Unbounded => log.push(0),
    }
}

/// A recorded operation, borrowed from a journal entry.
#[derive(Debug, PartialEq)]
pub(crate) enum Op<'a> {
    Put {
        table: &'a str,
        key: &'a [u8],
        value: &'a [u8],
    },
    Remove {
        table: &'a str,
        key: &'a [u8],
    },
    RemoveRange {
        table: &'a str,
        start: Bound<&'a [u8]>,
        end: Bound<&'a [u8]>,
    },
}

/// Why a journal entry's operations could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedoError {
    #[error("malformed operation at byte {0}")]
    Malformed(usize),
    #[error("operation on unknown table {0:?}")]
    UnknownTable(String),
    #[error("{what} of {len} bytes for a type {width} bytes wide")]
    Width {
        what: &'static str,
        len: usize,
        width: usize,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl<'a> Op<'a> {
    pub(crate) fn table(&self) -> &'a str {
        match self {
            Op::Put { table, .. } | Op::Remove { table, .. } | Op::RemoveRange { table, .. } => {
                table
            }
        }
    }

    /// Applies the operation to `t` (the table it names).
    pub(crate) fn apply<K: Key + 'static, V: Value + 'static>(
        &self,
        t: &mut Table<'_, K, V>,
    ) -> Result<(), RedoError> {
        match *self {
            Op::Put { key, value, .. } => {
                width::<K>("key", key)?;
                width::<V>("value", value)?;
                t.insert(K::from_bytes(key), V::from_bytes(value))?;
            }
            Op::Remove { key, .. } => {
                width::<K>("key", key)?;
                t.remove(K::from_bytes(key))?;
            }
            Op::RemoveRange { start, end, .. } => {
                for b in [start, end] {
                    if let Bound::Included(k) | Bound::Excluded(k) = b {
                        width::<K>("key", k)?;
                    }
                }
                let range = (start.map(K::from_bytes), end.map(K::from_bytes));
                t.retain_in(range, |_, _| false)?;
            }
        }
        Ok(())
    }
}

/// Fixed-width types decode by slicing: a wrong length must be refused, not sliced.
fn width<T: Value>(what: &'static str, bytes: &[u8]) -> Result<(), RedoError> {
    match T::fixed_width() {
        Some(width) if width != bytes.len() => Err(RedoError::Width {
            what,
            len: bytes.len(),
            width,
        }),
        _ => Ok(()),
    }
}

/// The operations of a journal entry, in the order they were made.
pub(crate) fn ops(payload: &[u8]) -> Ops<'_> {
    Ops { payload, at: 0 }
}

pub(crate) struct Ops<'a> {
    payload: &'a [u8],
    at: usize,
}

impl<'a> Ops<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.payload.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let len = self.payload.get(self.at..self.at + 4)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = self.at + 4;
        let bytes = self.payload.get(start..start.checked_add(len)?)?;
        self.at = start + len;
        Some(bytes)
    }

    fn bound(&mut self) -> Option<Bound<&'a [u8]>> {
        match self.byte()? {
            0 => Some(Bound::Unbounded),
            1 => Some(Bound::Included(self.field()?)),
            2 => Some(Bound::Excluded(self.field()?)),
            _ => None,
        }
    }

    fn next_op(&mut self) -> Option<Op<'a>> {
        let kind = self.byte()?;
        let table = std::str::from_utf8(self.field()?).ok()?;
        match kind {
            PUT => Some(Op::Put {
                table,
                key: self.field()?,
                value: self.field()?,
            }),
            REMOVE => Some(Op::Remove {
                table,
                key: self.field()?,
            }),
            REMOVE_RANGE => Some(Op::RemoveRange {
                table,
                start: self.bound()?,
                end: self.bound()?,
            }),
            _ => None,
        }
    }
}

impl<'a> Iterator for Ops<'a> {
    type Item = Result<Op<'a>, RedoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.payload.len() {
            return None;
        }
        let start = self.at;
        match self.next_op() {
            Some(op) => Some(Ok(op)),
            None => {
                // Stop after reporting: the rest cannot be framed.
                self.at = self.payload.len();
                Some(Err(RedoError::Malformed(start)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
    use std::collections::BTreeMap;

    const T: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("t");

    #[derive(Debug, Clone)]
    enum Change {
        Put(u8, u64, Vec<u8>),
        Remove(u8, u64),
        RemoveRange(u8, u64, u64),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (
                0u8..3,
                0u64..20,
                proptest::collection::vec(any::<u8>(), 0..8)
            )
                .prop_map(|(a, b, v)| Change::Put(a, b, v)),
            (0u8..3, 0u64..20).prop_map(|(a, b)| Change::Remove(a, b)),
            (0u8..3, 0u64..20, 0u64..20).prop_map(|(a, b, c)| Change::RemoveRange(a, b, c)),
        ]
    }

    fn db() -> Database {
        let db = redb::Builder::new()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap();
        txn.commit().unwrap();
        db
    }

    fn contents(db: &Database) -> BTreeMap<(u8, u64), Vec<u8>> {
        let r = db.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        t.iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect()
    }

    /// Makes `changes` through `Logged` on `db`; the operations recorded.
    fn make(db: &Database, changes: &[Change]) -> Vec<u8> {
        let log = Log::default();
        let txn = db.begin_write().unwrap();
        {
            let mut t = Logged::new(&txn, T, "t", log.clone());
            for c in changes {
                match c {
                    Change::Put(a, b, v) => {
                        t.insert((*a, *b), v.as_slice()).unwrap();
                    }
                    Change::Remove(a, b) => {
                        t.remove((*a, *b)).unwrap();
                    }
                    Change::RemoveRange(a, lo, hi) => {
                        t.remove_range((*a, *lo)..(*a, *hi)).unwrap();
                    }
                }
            }
        }
        txn.commit().unwrap();
        log.take()
    }

    fn replay(db: &Database, payload: &[u8]) {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for op in ops(payload) {
                let op = op.unwrap();
                assert_eq!(op.table(), "t");
                op.apply(&mut t).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    proptest! {
        /// Replaying a batch's operations on the state before it gives the state after it; and
        /// replaying them again (a crash after the checkpoint, before the journal moved on)
        /// changes nothing.
        #[test]
        fn replay_reproduces_the_batch_and_is_idempotent(
            before in proptest::collection::vec(change(), 0..30),
            batch in proptest::collection::vec(change(), 0..30),
        ) {
            let original = db();
            make(&original, &before);
            let start = contents(&original);
            let payload = make(&original, &batch);
            let after = contents(&original);

            let copy = db();
            {
                let txn = copy.begin_write().unwrap();
                let mut t = txn.open_table(T).unwrap();
                for (k, v) in &start {
                    t.insert(*k, v.as_slice()).unwrap();
                }
                drop(t);
                txn.commit().unwrap();
            }
            replay(&copy, &payload);
            prop_assert_eq!(&contents(&copy), &after);
            replay(&copy, &payload);
            prop_assert_eq!(&contents(&copy), &after);
        }

        /// Whatever the bytes, reading operations ends without a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for op in ops(&bytes) {
                if op.is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn a_wrong_width_is_refused_not_sliced() {
        let db = db();
        let txn = db.begin_write().unwrap();
        let mut t = txn.open_table(T).unwrap();
        let op = Op::Remove {
            table: "t",
            key: b"short",
        };
        assert!(matches!(op.apply(&mut t), Err(RedoError::Width { .. })));
    }
}
