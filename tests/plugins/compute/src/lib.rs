//! A `node-selector` that burns CPU: it runs `work(rounds)` with `rounds` from its config and
//! returns the result as the node id. The benchmark runs the same function natively (it is
//! copied in host/benches/plugins.rs; keep the two in step) to measure what the sandbox costs.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "node-selector",
});

use exports::weft::plugin::selector::{Candidate, Guest, NodeId, Request};
use weft::plugin::config;
use weft::plugin::types::Pair;

/// xorshift64* over a 4 KiB table: arithmetic, branches and memory traffic, as real work has.
pub fn work(rounds: u64) -> u64 {
    let mut table = [0u64; 512];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rounds {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let slot = (x % 512) as usize;
        table[slot] = table[slot].wrapping_add(x.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i);
        if table[slot] & 1 == 0 {
            x = x.rotate_left(7);
        }
    }
    table.iter().fold(0, |a, b| a ^ b)
}

struct Compute;

impl Guest for Compute {
    fn select(
        _request: Request,
        _labels: Vec<Pair>,
        _candidates: Vec<Candidate>,
    ) -> Result<Option<NodeId>, String> {
        let rounds = config::get("rounds")
            .and_then(|r| r.parse().ok())
            .unwrap_or(1_000_000);
        Ok(Some(work(rounds)))
    }
}

export!(Compute);
