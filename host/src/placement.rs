//! Choosing the node that gets a new peer: the built-in `least-loaded` strategy (a pure
//! function), or a `node-selector` plugin by name with `least-loaded` as its fallback.
//!
//! `least-loaded` is the scoring of multinode-phase2.md: nodes at capacity are skipped, the
//! lowest `(active / max) / weight` wins, ties go to fewer active peers, then to the name.

use crate::plugins::PluginHost;
use crate::plugins::bindings::imports::weft::plugin::types as wit_types;
use crate::plugins::bindings::node_selector::exports::weft::plugin::selector as wit;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Unreachable,
    Unknown,
}

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub region: Option<String>,
    pub active_peers: u32,
    pub max_peers: u32,
    /// At least 1.
    pub weight: u32,
    pub health: Health,
    pub peers_with_handshake: u32,
    pub newest_handshake_secs: Option<u64>,
    pub oldest_handshake_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub peer_name: String,
    pub labels: Vec<(String, String)>,
}

/// How nodes are chosen: weft's own strategy or a plugin's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    LeastLoaded,
    Plugin(String),
}

/// What placement decided, and why it did not use the configured plugin if it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub node: Option<String>,
    /// Set when a plugin strategy failed and `least-loaded` chose instead.
    pub fallback: Option<String>,
}

/// A node's load per unit of weight as a fraction, compared without floating point so equal
/// loads tie exactly.
fn by_load(a: &Candidate, b: &Candidate) -> Ordering {
    let frac = |c: &Candidate| {
        (
            u128::from(c.active_peers),
            u128::from(c.max_peers) * u128::from(c.weight.max(1)),
        )
    };
    let ((an, ad), (bn, bd)) = (frac(a), frac(b));
    (an * bd)
        .cmp(&(bn * ad))
        .then(a.active_peers.cmp(&b.active_peers))
        .then_with(|| a.name.cmp(&b.name))
}

/// The built-in strategy.
pub fn least_loaded(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates
        .iter()
        .filter(|c| c.max_peers > 0 && c.active_peers < c.max_peers)
        .min_by(|a, b| by_load(a, b))
}

/// Chooses with `strategy`; a plugin that fails (or is missing, or failing) leaves the choice
/// to `least-loaded`, with the reason in [`Choice::fallback`]. Blocking when a plugin runs.
pub fn choose(
    strategy: &Strategy,
    plugins: Option<&PluginHost>,
    request: &Request,
    candidates: &[Candidate],
) -> Choice {
    let builtin = |fallback| Choice {
        node: least_loaded(candidates).map(|c| c.id.clone()),
        fallback,
    };
    let name = match strategy {
        Strategy::LeastLoaded => return builtin(None),
        Strategy::Plugin(name) => name,
    };
    let Some(host) = plugins else {
        return builtin(Some(format!(
            "strategy {name:?} needs the plugin host, which is not running"
        )));
    };
    let call = match WitCall::new(request, candidates) {
        Ok(call) => call,
        Err(why) => return builtin(Some(why)),
    };
    match host.select(name, &call.request, &call.labels, &call.candidates) {
        Ok(node) => Choice {
            // The host checked that `id` is a candidate's, and ids are indices of `candidates`.
            node: node.map(|id| candidates[id as usize].id.clone()),
            fallback: None,
        },
        Err(e) => builtin(Some(e.to_string())),
    }
}

/// The most labels a call can carry: one bit each in a `u64`.
pub const MAX_LABELS: usize = 64;

/// A call in the contract's form (`wit/plugin.wit`, `selector`): the label table, labels as
/// bits of it, candidates sorted by name, each with the index of its [`Candidate`] as its id.
#[derive(Debug, Clone)]
pub struct WitCall {
    pub request: wit::Request,
    pub labels: Vec<wit_types::Pair>,
    pub candidates: Vec<wit::Candidate>,
}

/// The label table being built: each distinct `key=value` once, up to [`MAX_LABELS`].
#[derive(Default)]
struct Table<'a> {
    index: HashMap<(&'a str, &'a str), u32, BuildHasherDefault<Fx>>,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Table<'a> {
    /// The label's index, added if there is room; none once the table is full.
    fn add(&mut self, key: &'a str, value: &'a str) -> Option<u32> {
        if let Some(&i) = self.index.get(&(key, value)) {
            return Some(i);
        }
        if self.pairs.len() == MAX_LABELS {
            return None;
        }
        let i = self.pairs.len() as u32;
        self.index.insert((key, value), i);
        self.pairs.push((key, value));
        Some(i)
    }

    /// The bits of `labels`, each added to the table if there is room.
    fn bits(&mut self, labels: &'a [(String, String)]) -> u64 {
        labels
            .iter()
            .filter_map(|(k, v)| self.add(k, v))
            .fold(0, |bits, i| bits | 1 << i)
    }
}

/// rustc's FxHash. Building the table hashes every label of every candidate, and SipHash
/// made that several times the cost of the plugin call; its resistance to chosen keys buys
/// nothing here, as the table never holds more than [`MAX_LABELS`] entries.
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, mut bytes: &[u8]) {
        // Whole words, then the tail in fixed-size reads: a copy of a variable length would
        // be a `memcpy` call per label.
        while let Some((word, rest)) = bytes.split_first_chunk::<8>() {
            self.write_u64(u64::from_le_bytes(*word));
            bytes = rest;
        }
        if let Some((word, rest)) = bytes.split_first_chunk::<4>() {
            self.write_u64(u32::from_le_bytes(*word).into());
            bytes = rest;
        }
        if let Some((word, rest)) = bytes.split_first_chunk::<2>() {
            self.write_u64(u16::from_le_bytes(*word).into());
            bytes = rest;
        }
        if let Some(&byte) = bytes.first() {
            self.write_u64(byte.into());
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(i.into());
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl WitCall {
    /// The request's labels take the first places of the table, so a request with at most
    /// [`MAX_LABELS`] of them is always representable (one with more is refused); then the
    /// candidates' regions, then their other labels, in name order. Labels past the limit are
    /// left out.
    pub fn new(request: &Request, candidates: &[Candidate]) -> Result<WitCall, String> {
        let mut table = Table::default();
        let mut wanted = 0u64;
        for (k, v) in &request.labels {
            let Some(i) = table.add(k, v) else {
                return Err(format!(
                    "the request asks for more than {MAX_LABELS} distinct labels, more than a plugin can be given"
                ));
            };
            wanted |= 1 << i;
        }
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| candidates[a].name.cmp(&candidates[b].name));
        let regions: Vec<Option<u32>> = order
            .iter()
            .map(|&i| {
                let region = candidates[i].region.as_deref()?;
                table.add("region", region)
            })
            .collect();
        let wit_candidates = order
            .iter()
            .zip(regions)
            .map(|(&i, region)| {
                let c = &candidates[i];
                wit::Candidate {
                    id: i as u64,
                    labels: table.bits(&c.labels),
                    region,
                    active_peers: c.active_peers,
                    max_peers: c.max_peers,
                    weight: c.weight.max(1),
                    health: match c.health {
                        Health::Healthy => wit_types::Health::Healthy,
                        Health::Degraded => wit_types::Health::Degraded,
                        Health::Unreachable => wit_types::Health::Unreachable,
                        Health::Unknown => wit_types::Health::Unknown,
                    },
                    handshakes: wit::HandshakeStats {
                        peers_with_handshake: c.peers_with_handshake,
                        newest_age_secs: c.newest_handshake_secs,
                        oldest_age_secs: c.oldest_handshake_secs,
                    },
                }
            })
            .collect();
        Ok(WitCall {
            request: wit::Request {
                peer_name: request.peer_name.clone(),
                labels: wanted,
            },
            labels: table
                .pairs
                .iter()
                .map(|&(key, value)| wit_types::Pair {
                    key: key.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            candidates: wit_candidates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop, prop_assert, proptest};
    use proptest::strategy::Strategy as Generator;

    pub fn node(name: &str, active: u32, max: u32, weight: u32) -> Candidate {
        Candidate {
            id: format!("id-{name}"),
            name: name.into(),
            labels: vec![],
            region: None,
            active_peers: active,
            max_peers: max,
            weight,
            health: Health::Healthy,
            peers_with_handshake: 0,
            newest_handshake_secs: None,
            oldest_handshake_secs: None,
        }
    }

    fn pick(nodes: &[Candidate]) -> Option<&str> {
        least_loaded(nodes).map(|c| c.name.as_str())
    }

    #[test]
    fn the_reference_scenarios() {
        assert_eq!(
            pick(&[node("a", 30, 100, 100), node("b", 60, 100, 100)]),
            Some("a")
        );
        assert_eq!(
            pick(&[node("a", 50, 100, 200), node("b", 30, 100, 100)]),
            Some("a")
        );
        assert_eq!(
            pick(&[node("a", 100, 100, 100), node("b", 99, 100, 100)]),
            Some("b")
        );
        assert_eq!(pick(&[node("a", 5, 5, 1)]), None);
    }

    #[test]
    fn ties_go_to_fewer_peers_then_the_name() {
        assert_eq!(pick(&[node("b", 1, 10, 1), node("a", 2, 20, 1)]), Some("b"));
        assert_eq!(pick(&[node("b", 1, 10, 1), node("a", 1, 10, 1)]), Some("a"));
    }

    #[test]
    fn without_a_plugin_host_a_plugin_strategy_falls_back_and_says_why() {
        let nodes = [node("a", 1, 10, 1), node("b", 0, 10, 1)];
        let request = Request {
            peer_name: "p".into(),
            labels: vec![],
        };
        let choice = choose(&Strategy::Plugin("smart".into()), None, &request, &nodes);
        assert_eq!(choice.node.as_deref(), Some("id-b"));
        assert!(choice.fallback.unwrap().contains("smart"));
    }

    fn labelled(name: &str, region: Option<&str>, labels: &[(&str, &str)]) -> Candidate {
        let mut n = node(name, 0, 10, 1);
        n.region = region.map(Into::into);
        n.labels = labels
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n
    }

    fn table(call: &WitCall) -> Vec<String> {
        call.labels
            .iter()
            .map(|p| format!("{}={}", p.key, p.value))
            .collect()
    }

    #[test]
    fn a_call_in_the_contracts_form_is_sorted_by_name_with_labels_as_bits() {
        let nodes = [
            labelled("b", Some("us"), &[("tier", "gold"), ("region", "us")]),
            labelled("a", Some("eu"), &[("disk", "ssd")]),
            labelled("c", None, &[("tier", "gold")]),
        ];
        let request = Request {
            peer_name: "laptop".into(),
            labels: vec![("tier".into(), "gold".into()), ("zone".into(), "x".into())],
        };
        let call = WitCall::new(&request, &nodes).unwrap();
        // The request's labels first, then the regions, then the other labels, in name order.
        assert_eq!(
            table(&call),
            ["tier=gold", "zone=x", "region=eu", "region=us", "disk=ssd"]
        );
        assert_eq!(call.request.labels, 0b11);
        assert_eq!(call.request.peer_name, "laptop");
        let ids: Vec<u64> = call.candidates.iter().map(|c| c.id).collect();
        assert_eq!(
            ids,
            [1, 0, 2],
            "sorted by name, each id its index in `nodes`"
        );
        let (a, b, c) = (
            &call.candidates[0],
            &call.candidates[1],
            &call.candidates[2],
        );
        assert_eq!((a.labels, a.region), (0b10000, Some(2)));
        assert_eq!((b.labels, b.region), (0b01001, Some(3)));
        assert_eq!((c.labels, c.region), (0b00001, None));
    }

    #[test]
    fn past_64_labels_the_rest_are_left_out_but_the_request_always_fits() {
        let many: Vec<(String, String)> = (0..70).map(|i| ("k".into(), format!("{i}"))).collect();
        let mut crowded = node("a", 0, 10, 1);
        crowded.labels = many.clone();
        crowded.region = Some("eu".into());
        let request = Request {
            peer_name: "p".into(),
            labels: vec![("want".into(), "me".into())],
        };
        let call = WitCall::new(&request, &[crowded]).unwrap();
        assert_eq!(call.labels.len(), MAX_LABELS);
        assert_eq!(table(&call)[..2], ["want=me", "region=eu"]);
        // Bits 2..64 are k=0..k=61; the node's last 8 labels have no bit.
        assert_eq!(call.candidates[0].labels, !0b11);
        assert_eq!(call.candidates[0].region, Some(1));

        let greedy = Request {
            peer_name: "p".into(),
            labels: many,
        };
        let err = WitCall::new(&greedy, &[node("a", 0, 10, 1)]).unwrap_err();
        assert!(err.contains("64"), "{err}");
    }

    #[test]
    fn a_request_with_too_many_labels_falls_back_to_least_loaded() {
        let request = Request {
            peer_name: "p".into(),
            labels: (0..65).map(|i| ("k".into(), format!("{i}"))).collect(),
        };
        let host = PluginHost::new(vec![], None).unwrap();
        let nodes = [node("a", 1, 10, 1), node("b", 0, 10, 1)];
        let choice = choose(
            &Strategy::Plugin("any".into()),
            Some(&host),
            &request,
            &nodes,
        );
        assert_eq!(choice.node.as_deref(), Some("id-b"));
        assert!(choice.fallback.unwrap().contains("64"));
    }

    fn arb_node() -> impl Generator<Value = Candidate> {
        ("[a-e]", 0u32..20, 0u32..20, 1u32..5)
            .prop_map(|(name, active, max, weight)| node(&name, active, max, weight))
    }

    proptest! {
        /// The choice has spare capacity and no other node with spare capacity scores lower,
        /// measured in floating point as the reference writes it.
        #[test]
        fn the_choice_is_a_lowest_scoring_node_with_room(nodes in prop::collection::vec(arb_node(), 0..8)) {
            let score = |c: &Candidate| (c.active_peers as f64 / c.max_peers as f64) / c.weight as f64;
            let room: Vec<&Candidate> = nodes.iter().filter(|c| c.active_peers < c.max_peers).collect();
            match least_loaded(&nodes) {
                None => prop_assert!(room.is_empty()),
                Some(chosen) => {
                    prop_assert!(chosen.active_peers < chosen.max_peers);
                    for other in room {
                        prop_assert!(score(chosen) <= score(other) + 1e-12);
                    }
                }
            }
        }
    }
}
