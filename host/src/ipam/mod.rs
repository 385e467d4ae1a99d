//! The IPAM core: address arithmetic, pool layout and overlap rules, the allocator, and the
//! rules of an address record. Pure: no I/O, no async, no logging, nothing of redb or HTTP.

pub mod addr;
pub mod alloc;
pub mod pool;
pub mod record;
pub mod search;

pub use addr::{Family, IpKey};
pub use pool::{Layout, PoolRuleError, Span};
pub use record::{AddrType, Facts, Record, RecordRuleError, Status};
