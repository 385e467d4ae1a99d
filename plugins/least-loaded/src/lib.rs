//! The `least-loaded` node selector: weft's built-in strategy, as a plugin. Authors can start
//! from it.
//!
//! Nodes at capacity (`active-peers >= max-peers`) are skipped; the lowest
//! `(active / max) / weight` wins; ties go to the node with fewer active peers, then to the
//! name that sorts first, which is the earlier candidate (weft sends them sorted by name).

wit_bindgen::generate!({
    path: "../../wit",
    world: "node-selector",
});

use exports::weft::plugin::selector::{Candidate, Guest, NodeId, Request};
use std::cmp::Ordering;
use weft::plugin::types::Pair;

struct LeastLoaded;

/// A node's load per unit of weight. Compared as fractions (no floating point), so two
/// nodes with equal load compare equal.
fn load(c: &Candidate) -> (u64, u64) {
    (
        u64::from(c.active_peers),
        u64::from(c.max_peers) * u64::from(c.weight.max(1)),
    )
}

fn by_load(a: &Candidate, b: &Candidate) -> Ordering {
    let ((an, ad), (bn, bd)) = (load(a), load(b));
    // The numerators fit 32 bits, so while the denominators do too (capacity × weight below
    // 2^32, the usual case) the cross products fit a u64. WebAssembly has no 128-bit
    // multiply: the u128 path is a library call, several times slower.
    let by_fraction = if ad <= u64::from(u32::MAX) && bd <= u64::from(u32::MAX) {
        (an * bd).cmp(&(bn * ad))
    } else {
        (u128::from(an) * u128::from(bd)).cmp(&(u128::from(bn) * u128::from(ad)))
    };
    by_fraction.then(a.active_peers.cmp(&b.active_peers))
}

impl Guest for LeastLoaded {
    fn select(
        _request: Request,
        _labels: Vec<Pair>,
        candidates: Vec<Candidate>,
    ) -> Result<Option<NodeId>, String> {
        // `min_by` keeps the first of equal nodes: the name that sorts first.
        Ok(candidates
            .iter()
            .filter(|c| c.max_peers > 0 && c.active_peers < c.max_peers)
            .min_by(|a, b| by_load(a, b))
            .map(|c| c.id))
    }
}

export!(LeastLoaded);
