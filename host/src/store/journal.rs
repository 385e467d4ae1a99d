//! The journal: a small preallocated file of numbered entries, each synced before the batch it
//! carries is answered. It is what makes a batch durable without a durable redb commit: a
//! durable commit writes every B-tree page the batch touched (about twenty for one allocation)
//! and syncs them; a journal entry is one sequential write of the batch's redo operations
//! (see `redo`) into blocks that are already allocated, so `fdatasync` has no metadata to flush.
//!
//! Entries are appended from offset 0 until the next one would pass [`CAPACITY`]; then the
//! store commits to redb durably (a checkpoint) and the journal starts again at offset 0.
//! Sequence numbers keep growing across checkpoints and restarts, so entries left over from an
//! earlier cycle never continue the current one: a scan reads entries from offset 0 while each
//! is whole (its checksum matches) and carries the next number. Checksums are salted with a
//! value kept in the database, so a journal never replays into a database it was not written
//! for (a fresh file, a restored backup).
//!
//! The journal knows nothing of tables: an entry's payload is opaque bytes.

use redb::StorageBackend;
use std::io;

/// Bytes the file is preallocated to, and the most the entries of one cycle take.
#[cfg(not(test))]
pub(crate) const CAPACITY: u64 = 4 << 20;
/// Small in tests, so the crash tests fill it (and checkpoint) within their workload.
#[cfg(test)]
pub(crate) const CAPACITY: u64 = 64 << 10;
const MAGIC: u32 = 0x574a_4e31; // "WJN1"
/// magic, payload length, sequence number, checksum.
const HEADER: usize = 4 + 4 + 8 + 4;
/// Zeros written at a time while preallocating.
const FILL: usize = 1 << 20;

pub(crate) struct Journal {
    file: Box<dyn StorageBackend>,
    salt: u64,
    /// Where the next entry goes.
    end: u64,
    /// Number of the next entry.
    next_seq: u64,
    /// Where the last entry appended begins (for [`Journal::retract`]).
    last_start: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("end", &self.end)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal over `file`, filling it with zeros up to [`CAPACITY`] the first time
    /// (written, not just reserved: an append into an unwritten extent would make `fdatasync`
    /// flush the extent's conversion as well). Entries are read with [`Journal::scan`]; appends
    /// start at offset 0 with number `next_seq`.
    pub(crate) fn open(
        file: Box<dyn StorageBackend>,
        salt: u64,
        next_seq: u64,
    ) -> io::Result<Self> {
        let len = file.len()?;
        if len < CAPACITY {
            file.set_len(CAPACITY)?;
            let zeros = vec![0u8; FILL];
            let mut at = len;
            while at < CAPACITY {
                let n = (CAPACITY - at).min(FILL as u64) as usize;
                file.write(at, &zeros[..n])?;
                at += n as u64;
            }
            file.sync_data()?;
        }
        Ok(Journal {
            file,
            salt,
            end: 0,
            next_seq,
            last_start: 0,
        })
    }

    /// The entries of the current cycle numbered `from` on: those from offset 0 while each is
    /// whole and carries the next number. Empty when the entry at offset 0 is not `from`
    /// (its cycle was checkpointed, or nothing was appended since).
    pub(crate) fn scan(&self, from: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut found = Vec::new();
        let mut at = 0u64;
        let mut expect = from;
        let mut head = [0u8; HEADER];
        // The file's length, not today's capacity: a journal written by a build with a
        // larger one still replays whole.
        let limit = self.file.len()?;
        while at + HEADER as u64 <= limit {
            self.file.read(at, &mut head)?;
            let (magic, len, seq, sum) = parse_header(&head);
            let body = at + HEADER as u64;
            if magic != MAGIC || seq != expect || body + u64::from(len) > limit {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            self.file.read(body, &mut payload)?;
            if checksum(self.salt, seq, &payload) != sum {
                break;
            }
            found.push((seq, payload));
            at = body + u64::from(len);
            expect += 1;
        }
        Ok(found)
    }

    /// Whether an entry of `len` payload bytes fits in this cycle.
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.end + (HEADER + len) as u64 <= CAPACITY
    }

    /// Nothing appended since the last checkpoint.
    pub(crate) fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// The number the next entry will carry: what a checkpoint records in the database.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one entry and syncs it: once this returns, the entry survives a crash. On an
    /// error nothing counts as appended (a torn entry fails its checksum and ends any scan).
    /// The caller checks [`Journal::fits`] first.
    pub(crate) fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|_| self.fits(payload.len()))
            .ok_or_else(|| io::Error::other("journal entry does not fit"))?;
        let mut entry = Vec::with_capacity(HEADER + payload.len());
        entry.extend_from_slice(&MAGIC.to_le_bytes());
        entry.extend_from_slice(&len.to_le_bytes());
        entry.extend_from_slice(&self.next_seq.to_le_bytes());
        entry.extend_from_slice(&checksum(self.salt, self.next_seq, payload).to_le_bytes());
        entry.extend_from_slice(payload);
        self.file.write(self.end, &entry)?;
        self.file.sync_data()?;
        self.last_start = self.end;
        self.end += entry.len() as u64;
        self.next_seq += 1;
        Ok(())
    }

    /// Takes back the entry just appended (its batch could not be applied): its header is
    /// zeroed and synced, so no scan replays it.
    pub(crate) fn retract(&mut self) -> io::Result<()> {
        self.file.write(self.last_start, &[0u8; HEADER])?;
        self.file.sync_data()?;
        self.end = self.last_start;
        self.next_seq -= 1;
        Ok(())
    }

    /// Starts a new cycle, after a durable commit that holds every entry so far and records
    /// `next_seq` (so the old entries, still in the file, are never read again).
    pub(crate) fn restart(&mut self) {
        self.end = 0;
        self.last_start = 0;
    }

    /// Starts a new cycle numbered from `next_seq`: after replaying the entries before it.
    pub(crate) fn restart_at(&mut self, next_seq: u64) {
        self.restart();
        self.next_seq = next_seq;
    }
}

fn parse_header(h: &[u8; HEADER]) -> (u32, u32, u64, u32) {
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[8..16]);
    (u32_at(0), u32_at(4), u64::from_le_bytes(seq), u32_at(16))
}

fn checksum(salt: u64, seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;
    use std::sync::Arc;

    /// A backend the test keeps a handle on, to reopen the same bytes.
    #[derive(Debug, Clone, Default)]
    struct Shared(Arc<InMemoryBackend>);

    impl StorageBackend for Shared {
        fn len(&self) -> io::Result<u64> {
            self.0.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            self.0.read(offset, out)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.0.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.0.write(offset, data)
        }
    }

    fn open(file: &Shared, salt: u64, next: u64) -> Journal {
        Journal::open(Box::new(file.clone()), salt, next).unwrap()
    }

    #[test]
    fn entries_come_back_in_order_from_the_number_asked_for() {
        let file = Shared::default();
        let mut j = open(&file, 7, 1);
        for p in [&b"one"[..], b"two", b""] {
            j.append(p).unwrap();
        }
        assert_eq!(j.next_seq(), 4);
        let again = open(&file, 7, 1);
        let got: Vec<_> = again.scan(1).unwrap();
        assert_eq!(
            got,
            vec![(1, b"one".to_vec()), (2, b"two".to_vec()), (3, Vec::new())]
        );
        // A checkpoint that recorded 4 (or 2) makes those entries old.
        assert!(again.scan(4).unwrap().is_empty());
        assert!(again.scan(2).unwrap().is_empty());
    }

    #[test]
    fn a_new_cycle_does_not_continue_into_the_old_entries_behind_it() {
        let file = Shared::default();
        let mut j = open(&file, 7, 1);
        for p in [&b"a much longer first entry"[..], b"b", b"c", b"d"] {
            j.append(p).unwrap();
        }
        j.restart();
        j.append(b"e").unwrap();
        assert_eq!(open(&file, 7, 5).scan(5).unwrap(), vec![(5, b"e".to_vec())]);
    }

    #[test]
    fn a_torn_or_foreign_entry_ends_the_scan() {
        let file = Shared::default();
        let mut j = open(&file, 7, 1);
        j.append(b"kept").unwrap();
        j.append(b"torn").unwrap();
        // One byte of the second payload never reached the disk.
        let at = (HEADER + 4 + HEADER) as u64;
        file.write(at, b"X").unwrap();
        assert_eq!(
            open(&file, 7, 1).scan(1).unwrap(),
            vec![(1, b"kept".to_vec())]
        );
        // Another database's salt: nothing is its.
        assert!(open(&file, 8, 1).scan(1).unwrap().is_empty());
    }

    #[test]
    fn a_retracted_entry_is_not_replayed_and_its_place_is_reused() {
        let file = Shared::default();
        let mut j = open(&file, 7, 1);
        j.append(b"kept").unwrap();
        j.append(b"withdrawn").unwrap();
        j.retract().unwrap();
        assert_eq!(
            open(&file, 7, 1).scan(1).unwrap(),
            vec![(1, b"kept".to_vec())]
        );
        j.append(b"next").unwrap();
        assert_eq!(
            open(&file, 7, 1).scan(1).unwrap(),
            vec![(1, b"kept".to_vec()), (2, b"next".to_vec())]
        );
    }

    #[test]
    fn an_entry_that_would_pass_the_capacity_does_not_fit() {
        let file = Shared::default();
        let mut j = open(&file, 7, 1);
        assert_eq!(file.len().unwrap(), CAPACITY);
        let big = vec![1u8; (CAPACITY as usize) / 2];
        assert!(j.fits(big.len()));
        j.append(&big).unwrap();
        assert!(!j.fits(big.len()));
        assert!(j.append(&big).is_err());
        j.restart();
        assert!(j.fits(big.len()));
    }
}
