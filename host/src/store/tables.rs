//! The redb schema: every table weft keeps, and the schema version. This file is the format
//! that outlives a release; ARCHITECTURE.md describes it, and a change to a key or value
//! layout bumps `SCHEMA_VERSION` with a migration in `migrate`.
//!
//! Values are JSON (serde) so that adding an optional field needs no migration, except
//! `records`, the hot table, which is postcard (a new field there is a migration). Addresses are
//! keys `(family, value)`: 4 or 6, then the address as a big integer, so keys sort like
//! addresses.

use redb::TableDefinition;

/// 1: first release. 2: adds `search` (back-filled from `records`). 3: `records` values in
/// postcard instead of JSON. Since 3, without a bump: `users` and `sessions` (new tables start
/// empty and are created on open, so an older file needs no migration). 4: adds `events`
/// (back-filled from `history`: an empty one would hide the older changes). 5: adds
/// `plugin_runs` (starts empty). 6: `peers`, `peer_keys`, `peers_by_node`, `nodes`. 7: `meshes`,
/// `mesh_names`, `join_tokens` (all start empty). 8: `node_history` (back-filled: each node's
/// registration or enrolment).
pub const SCHEMA_VERSION: u64 = 8;

/// `"schema_version"`, `"next_pool_id"`, `"next_event_id"`, `"next_release_seq"`,
/// `"next_plugin_run_id"`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// pool id -> `Pool` (JSON).
pub const POOLS: TableDefinition<u64, &[u8]> = TableDefinition::new("pools");
/// pool name -> pool id.
pub const POOL_NAMES: TableDefinition<&str, u64> = TableDefinition::new("pool_names");
/// (family, first address of the CIDR) -> pool id: finds a pool by address, and overlaps.
pub const POOL_SPANS: TableDefinition<(u8, u128), u64> = TableDefinition::new("pool_spans");
/// (family, address) -> `Record` (postcard): only addresses with something to say.
pub const RECORDS: TableDefinition<(u8, u128), &[u8]> = TableDefinition::new("records");
/// (status, family, address) for held records (allocated, reserved, quarantine).
pub const BY_STATUS: TableDefinition<(u8, u8, u128), ()> = TableDefinition::new("by_status");
/// (family, address, event id) -> `Event` (JSON). Kept when the record goes.
pub const HISTORY: TableDefinition<(u8, u128, u64), &[u8]> = TableDefinition::new("history");
/// event id -> (family, address): `history` by time, so the latest changes across every
/// address are a short reverse range instead of a scan. Written with each history entry.
pub const EVENTS: TableDefinition<u64, (u8, u128)> = TableDefinition::new("events");
/// (pool id, first) -> last: runs of never-handed-out addresses.
pub const FRESH: TableDefinition<(u64, u128), u128> = TableDefinition::new("fresh");
/// (pool id, region, release sequence) -> address: released addresses, oldest first.
pub const QUEUE: TableDefinition<(u64, u8, u64), u128> = TableDefinition::new("queue");
/// (pool id, address) -> (region, release sequence): the queue, looked up by address.
pub const QUEUED: TableDefinition<(u64, u128), (u8, u64)> = TableDefinition::new("queued");
/// (pool id, Idempotency-Key) -> (family, address) the key's allocation got.
pub const IDEMPOTENCY: TableDefinition<(u64, &str), (u8, u128)> =
    TableDefinition::new("idempotency");
/// token name -> `Token` (JSON, with the SHA-256 of the secret, never the secret).
pub const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// SHA-256 of a token's secret -> token name.
pub const TOKEN_HASHES: TableDefinition<&[u8], &str> = TableDefinition::new("token_hashes");
/// (search term, family, address): hostnames (`h:`), MACs (`m:`) and reversed MACs (`r:`),
/// lower-cased, of stored records: what `q` looks up (see `ipam::search`).
pub const SEARCH: TableDefinition<(&str, u8, u128), ()> = TableDefinition::new("search");
/// device id -> `Device` (JSON).
pub const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// user name -> `User` (JSON, with the argon2id hash of the password, never the password).
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// SHA-256 of a session id -> `Session` (JSON). The id itself is only ever in the cookie.
pub const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
/// (plugin name, run id) -> `PluginRun` (JSON): the latest runs of each sync plugin.
pub const PLUGIN_RUNS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("plugin_runs");
/// peer name -> `Peer` (JSON: node, address, public key; never a private key).
pub const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers");
/// a peer's public key (32 bytes) -> peer name: one peer per key.
pub const PEER_KEYS: TableDefinition<&[u8], &str> = TableDefinition::new("peer_keys");
/// (node name, peer name): a node's peers, and how many.
pub const PEERS_BY_NODE: TableDefinition<(&str, &str), ()> = TableDefinition::new("peers_by_node");
/// node name -> `Node` (JSON; its shared secret only sealed, see `secretbox`).
pub const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// mesh id -> `Mesh` (JSON: the desired state, its generation).
pub const MESHES: TableDefinition<&str, &[u8]> = TableDefinition::new("meshes");
/// mesh name -> mesh id.
pub const MESH_NAMES: TableDefinition<&str, &str> = TableDefinition::new("mesh_names");
/// SHA-256 of a join token's secret -> `JoinToken` (JSON: pool, labels, uses, expiry, who
/// enrolled). The secret itself is printed once and never stored.
pub const JOIN_TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("join_tokens");
/// (node name, sequence) -> `NodeEvent` (JSON): each node's history, oldest first, one range
/// per node. Written in the transaction of the change it records; deleted with the node.
pub const NODE_HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("node_history");
