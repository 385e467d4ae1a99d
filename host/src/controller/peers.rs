//! Peers: placing a peer on a node, its address, the agent call, and the rollback (filled in by the peers slice).
