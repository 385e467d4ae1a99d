//! The node registry: adding, editing and deleting nodes, their secrets and overlay addresses (filled in by the nodes slice).
