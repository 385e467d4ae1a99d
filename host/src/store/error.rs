//! What can go wrong in the store: one enum, a variant per outcome a caller may branch on.

use crate::ipam::{PoolRuleError, RecordRuleError};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (I/O, corruption). Never caused by input.
    #[error("database error: {0}")]
    Db(Arc<redb::Error>),
    /// A stored value could not be decoded: the file was written by something else.
    #[error("corrupt value in table {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    /// The database was written by a newer weft.
    #[error("database schema version {found} is newer than this weft understands ({supported})")]
    SchemaTooNew { found: u64, supported: u64 },
    /// A change hit a bug (it panicked); it was rolled back.
    #[error("internal error in a store change")]
    Panicked,
    /// The writer thread is gone (the process is shutting down).
    #[error("the store is shutting down")]
    Closed,

    #[error("{0} not found")]
    NotFound(String),
    #[error("pool name {0:?} is already taken")]
    PoolNameTaken(String),
    #[error("{cidr} overlaps pool {name:?} ({existing})")]
    PoolOverlap {
        cidr: String,
        name: String,
        existing: String,
    },
    #[error(
        "pool {pool:?} still holds {held} allocated addresses; delete with force=true to drop them"
    )]
    PoolInUse { pool: String, held: u64 },
    #[error("pool {0:?} is exhausted: no free address left")]
    Exhausted(String),
    #[error(
        "Idempotency-Key {key:?} was used for {address}, which has since been released; use a new key"
    )]
    IdempotencyKeyUsed { key: String, address: IpAddr },
    #[error("{address} is {status} and cannot be taken")]
    Taken {
        address: IpAddr,
        status: &'static str,
    },
    #[error("{address} is not in pool {pool:?}")]
    NotInPool { address: IpAddr, pool: String },
    #[error("{address} is not in any pool")]
    OutsideEveryPool { address: IpAddr },
    #[error("{0} is a network, broadcast or anycast address and is never handed out")]
    NotUsable(IpAddr),
    #[error("{0} is the pool's gateway and is never handed out")]
    Gateway(IpAddr),
    #[error("{address} is {status}, not allocated")]
    NotAllocated {
        address: IpAddr,
        status: &'static str,
    },
    #[error("{0}")]
    PoolRule(#[from] PoolRuleError),
    #[error("{0}")]
    RecordRule(RecordRuleError),
    #[error("line {line}: {reason}")]
    Import { line: u64, reason: String },
    #[error("token name {0:?} is already taken")]
    TokenNameTaken(String),
    #[error("user name {0:?} is already taken")]
    UserNameTaken(String),
    #[error("peer name {0:?} is already taken")]
    PeerNameTaken(String),
    #[error("pool {pool:?} {role}")]
    PoolReferenced { pool: String, role: String },
    #[error("node name {0:?} is already taken")]
    NodeNameTaken(String),
    /// A node's peers hold addresses of its pool and keys on its agent.
    #[error("node {node:?} still has {peers} peers: delete them first")]
    NodeHasPeers { node: String, peers: u32 },
    /// WireGuard tells peers apart by key: two peers cannot share one.
    #[error("public key {key} is already used by peer {peer:?}")]
    PeerKeyTaken { key: String, peer: String },
    #[error("mesh name {0:?} is already taken")]
    MeshNameTaken(String),
    #[error(
        "there is no overlay pool: create a pool and make it the overlay (PUT /api/v1/overlay) first"
    )]
    NoOverlayPool,
    #[error("node {node:?} is a member of mesh {mesh:?}: take it out of the mesh first")]
    NodeInMesh { node: String, mesh: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cursor {0:?} is not one this API gave")]
    BadCursor(String),
}

impl StoreError {
    /// Another process holds the database file.
    pub fn is_locked(&self) -> bool {
        matches!(self, StoreError::Db(e) if matches!(**e, redb::Error::DatabaseAlreadyOpen))
    }

    pub(crate) fn corrupt(table: &'static str, e: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            table,
            reason: e.to_string(),
        }
    }
}

impl From<RecordRuleError> for StoreError {
    fn from(e: RecordRuleError) -> Self {
        StoreError::RecordRule(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Arc::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
