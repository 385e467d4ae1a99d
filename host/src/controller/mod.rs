//! The controller's work with nodes: the registry and its agents (`nodes`), polling their
//! health (`health`), and peers placed on them (`peers`). Talks to agents only through
//! `agent_client`; keeps its state only through `store`.

pub mod health;
pub mod meshes;
pub mod nodes;
pub mod peers;
pub mod wg_stats;
