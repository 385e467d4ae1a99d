//! Polling the health of every enabled node (filled in by the nodes slice).
