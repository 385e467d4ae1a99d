//! A `node-selector` that misbehaves in the way its `mode` config value names, so the tests
//! can check that weft survives each: `spin` (never returns), `hog` (allocates without end),
//! `panic`, `fail` (returns an error), `stranger` (chooses node 0xdeadbeef, which is not a candidate),
//! `chatty` (logs without end, then answers), `count` (answers with the number of calls this
//! instance has seen, to show that no state survives between calls), `digest` (fails with a
//! digest of every field it was given, to check the host's copying), and `first` (behaves:
//! chooses the first candidate).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "node-selector",
});

use exports::weft::plugin::selector::{Candidate, Guest, NodeId, Request};
use std::sync::atomic::{AtomicU32, Ordering};
use weft::plugin::types::Pair;
use weft::plugin::{config, log};

/// The id `stranger` answers with; the tests' candidates never have it.
const STRANGER: NodeId = 0xdead_beef;

struct Hostile;

/// FNV-1a over every field of the call as the plugin reads it; the host's test computes the
/// same over what it sent, so a field copied to the wrong place shows.
fn digest(request: &Request, labels: &[Pair], candidates: &[Candidate]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0x0100_0000_01b3);
    let opt = |v: Option<u64>| v.map_or(u64::MAX, |v| v ^ 0x5555);
    mix(request.labels);
    mix(request.peer_name.len() as u64);
    for p in labels {
        mix((p.key.len() * 1000 + p.value.len()) as u64);
    }
    for c in candidates {
        mix(c.id);
        mix(c.labels);
        mix(opt(c.region.map(u64::from)));
        mix(c.active_peers.into());
        mix(c.max_peers.into());
        mix(c.weight.into());
        mix(c.health as u64);
        mix(c.handshakes.peers_with_handshake.into());
        mix(opt(c.handshakes.newest_age_secs));
        mix(opt(c.handshakes.oldest_age_secs));
    }
    h
}

static CALLS: AtomicU32 = AtomicU32::new(0);

impl Guest for Hostile {
    fn select(
        request: Request,
        labels: Vec<Pair>,
        candidates: Vec<Candidate>,
    ) -> Result<Option<NodeId>, String> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match config::get("mode").as_deref() {
            Some("spin") => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Some("hog") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("panic") => panic!("hostile plugin panics on purpose"),
            Some("fail") => Err("hostile plugin refuses on purpose".into()),
            Some("stranger") => Ok(Some(STRANGER)),
            Some("chatty") => {
                for i in 0..100_000 {
                    log::log(log::Level::Info, &format!("line {i}\nforged: line"));
                }
                Ok(candidates.first().map(|c| c.id))
            }
            Some("count") => Ok(Some(calls.into())),
            Some("digest") => Err(format!("digest {}", digest(&request, &labels, &candidates))),
            _ => Ok(candidates.first().map(|c| c.id)),
        }
    }
}

export!(Hostile);
