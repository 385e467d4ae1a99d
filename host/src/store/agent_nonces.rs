//! The agent's accepted request nonces, in their own redb file in the agent's data dir
//! (`agent.redb`), apart from the controller's database: an agent restarted after a crash
//! still refuses a replay of a request it accepted before.

use crate::protocol::{Nonce, NonceStore};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::path::Path;

/// nonce → timestamp of the request that carried it.
const NONCES: TableDefinition<[u8; 16], i64> = TableDefinition::new("nonces");
/// (timestamp, nonce) → (): the same entries by age, so pruning reads only expired ones.
const BY_TIME: TableDefinition<(i64, [u8; 16]), ()> = TableDefinition::new("nonces_by_time");

/// File name of the agent's database inside its data dir.
pub const AGENT_DB_FILE: &str = "agent.redb";

/// Why a nonce could not be read or recorded.
#[derive(Debug, thiserror::Error)]
pub enum NonceStoreError {
    #[error("agent database: {0}")]
    Database(#[from] redb::DatabaseError),
    #[error("agent database transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("agent database table: {0}")]
    Table(#[from] redb::TableError),
    #[error("agent database storage: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("agent database commit: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("agent database durability: {0}")]
    Durability(#[from] redb::SetDurabilityError),
}

/// Accepted nonces, durable: `remember` returns after its transaction has committed with
/// `Durability::Immediate`.
pub struct AgentNonces {
    db: Database,
}

impl std::fmt::Debug for AgentNonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentNonces")
    }
}

impl AgentNonces {
    /// Opens (or creates) `agent.redb` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, NonceStoreError> {
        let db = Database::create(data_dir.join(AGENT_DB_FILE))?;
        let txn = db.begin_write()?;
        txn.open_table(NONCES)?;
        txn.open_table(BY_TIME)?;
        txn.commit()?;
        Ok(AgentNonces { db })
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> Result<u64, NonceStoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(NONCES)?.len()?)
    }

    pub fn is_empty(&self) -> Result<bool, NonceStoreError> {
        Ok(self.len()? == 0)
    }
}

impl NonceStore for AgentNonces {
    type Error = NonceStoreError;

    fn remember(
        &self,
        nonce: Nonce,
        timestamp: i64,
        forget_before: i64,
    ) -> Result<bool, NonceStoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let fresh = {
            let mut nonces = txn.open_table(NONCES)?;
            let mut by_time = txn.open_table(BY_TIME)?;
            let expired: Vec<(i64, [u8; 16])> = by_time
                .range(..(forget_before, [0u8; 16]))?
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for (t, n) in expired {
                by_time.remove((t, n))?;
                nonces.remove(n)?;
            }
            if nonces.get(nonce.0)?.is_some() {
                false
            } else {
                nonces.insert(nonce.0, timestamp)?;
                by_time.insert((timestamp, nonce.0), ())?;
                true
            }
        };
        if fresh {
            txn.commit()?;
        } else {
            // Pruning alone is not worth a durable commit on a refused request.
            txn.abort()?;
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_nonce_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let n = Nonce([7; 16]);
        {
            let store = AgentNonces::open(dir.path()).unwrap();
            assert!(store.remember(n, 1_000, 700).unwrap());
        }
        let store = AgentNonces::open(dir.path()).unwrap();
        assert!(!store.remember(n, 1_000, 700).unwrap());
    }

    #[test]
    fn expired_nonces_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = AgentNonces::open(dir.path()).unwrap();
        assert!(store.remember(Nonce([1; 16]), 1_000, 700).unwrap());
        assert!(store.remember(Nonce([2; 16]), 1_200, 900).unwrap());
        // Later: the first request's timestamp is out of the window, the second's is not.
        assert!(store.remember(Nonce([3; 16]), 1_400, 1_100).unwrap());
        assert_eq!(store.len().unwrap(), 2);
        assert!(!store.remember(Nonce([2; 16]), 1_200, 1_100).unwrap());
    }
}
