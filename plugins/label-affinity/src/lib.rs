//! The `label-affinity` node selector: nodes whose labels match the request (for example
//! `region=eu`) first, then the least loaded, as `least-loaded` scores them.
//!
//! Among nodes with room (`active-peers < max-peers`), the ones that carry the most of the
//! request's labels win; a request's `region` label also matches a node's region field. Ties
//! go to the lowest `(active / max) / weight`, then to fewer active peers, then to the name
//! that sorts first (the earlier candidate: weft sends them sorted by name). With
//! `required = "true"` in `[config]`, only a node that carries every label of the request may
//! be chosen; if there is none, no node is chosen. Labels are compared as bits of the call's
//! label table, so the table's text is never read.

wit_bindgen::generate!({
    path: "../../wit",
    world: "node-selector",
});

mod choice;

use choice::Node;
use exports::weft::plugin::selector::{Candidate, Guest, NodeId, Request};
use weft::plugin::config;
use weft::plugin::types::Pair;

struct LabelAffinity;

/// The `required` setting: absent is false; anything but true or false is an error, so a
/// typo does not silently turn the requirement off.
fn required() -> Result<bool, String> {
    match config::get("required").as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(format!(
            "config `required` must be \"true\" or \"false\", not {other:?}"
        )),
    }
}

fn node(c: &Candidate) -> Node {
    Node {
        labels: c.labels,
        region: c.region,
        active_peers: c.active_peers,
        max_peers: c.max_peers,
        weight: c.weight,
    }
}

impl Guest for LabelAffinity {
    fn select(
        request: Request,
        _labels: Vec<Pair>,
        candidates: Vec<Candidate>,
    ) -> Result<Option<NodeId>, String> {
        let required = required()?;
        let nodes: Vec<Node> = candidates.iter().map(node).collect();
        // `nodes` is `candidates` in order, so the index is one of theirs.
        Ok(choice::choose(request.labels, &nodes, required).map(|i| candidates[i].id))
    }
}

export!(LabelAffinity);
