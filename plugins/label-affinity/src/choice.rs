//! The choice itself, over plain structs: no bindings, so it is tested on any target.
//!
//! Labels are bits of the call's label table, as weft sends them: bit `i` is the table's
//! `i`-th `key=value`.

use std::cmp::{Ordering, Reverse};

/// What the choice needs to know of a candidate.
#[derive(Debug, Clone)]
pub struct Node {
    /// Bit `i`: the node carries label `i` of the table.
    pub labels: u64,
    /// The table index of the node's `region=<name>` label.
    pub region: Option<u32>,
    pub active_peers: u32,
    pub max_peers: u32,
    pub weight: u32,
}

impl Node {
    /// A node at or above its soft capacity (or with none) takes no new peer.
    fn has_room(&self) -> bool {
        self.max_peers > 0 && self.active_peers < self.max_peers
    }

    /// The labels the node carries, its region included: a request's `region=eu` matches a
    /// node in region eu even when that is not repeated among its labels.
    fn carries(&self) -> u64 {
        let region = match self.region {
            Some(i) if i < 64 => 1 << i,
            _ => 0,
        };
        self.labels | region
    }

    /// How many of the wanted labels the node carries.
    fn matches(&self, wanted: u64) -> u32 {
        (self.carries() & wanted).count_ones()
    }

    /// Load per unit of weight, `active / (max * weight)`, as a fraction: compared exactly,
    /// so equal loads tie instead of differing in the last bit of a float.
    fn load(&self) -> (u64, u64) {
        (
            u64::from(self.active_peers),
            u64::from(self.max_peers) * u64::from(self.weight.max(1)),
        )
    }
}

/// `least-loaded`'s order: lower load first, then fewer active peers. The name comes last,
/// and is the nodes' order: weft sends them sorted by name.
fn by_load(a: &Node, b: &Node) -> Ordering {
    let ((an, ad), (bn, bd)) = (a.load(), b.load());
    (u128::from(an) * u128::from(bd))
        .cmp(&(u128::from(bn) * u128::from(ad)))
        .then(a.active_peers.cmp(&b.active_peers))
}

/// The index of the node to choose among those with room: the most labels of `wanted`
/// matched wins, then the least loaded, then the earlier node. With `required`, only a node
/// that matches every label of `wanted` may be chosen; none otherwise.
pub fn choose(wanted: u64, nodes: &[Node], required: bool) -> Option<usize> {
    let all = wanted.count_ones();
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.has_room())
        .map(|(i, n)| (i, n, n.matches(wanted)))
        .filter(|&(_, _, matched)| !required || matched == all)
        // `min_by` keeps the first of equals, so a full tie goes to the earlier node.
        .min_by(|(_, a, am), (_, b, bm)| Reverse(am).cmp(&Reverse(bm)).then_with(|| by_load(a, b)))
        .map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The label table of these tests.
    const TABLE: [&str; 5] = ["region=eu", "region=us", "tier=gold", "zone=eu", "disk=ssd"];

    /// The bits of `labels` in [`TABLE`].
    fn bits(labels: &[&str]) -> u64 {
        labels
            .iter()
            .map(|l| 1 << TABLE.iter().position(|t| t == l).expect("in the table"))
            .fold(0, |a, b| a | b)
    }

    fn node(active: u32, max: u32, labels: &[&str]) -> Node {
        Node {
            labels: bits(labels),
            region: None,
            active_peers: active,
            max_peers: max,
            weight: 1,
        }
    }

    fn chosen(wanted: &[&str], nodes: &[Node], required: bool) -> Option<usize> {
        choose(bits(wanted), nodes, required)
    }

    #[test]
    fn the_best_match_wins_over_a_lighter_load() {
        let nodes = [
            node(0, 10, &["region=us"]),
            node(8, 10, &["region=eu", "tier=gold"]),
            node(1, 10, &["region=eu"]),
        ];
        assert_eq!(chosen(&["region=eu"], &nodes, false), Some(2));
        assert_eq!(chosen(&["region=eu", "tier=gold"], &nodes, false), Some(1));
    }

    #[test]
    fn a_region_label_matches_the_region_field() {
        let mut by_field = node(5, 10, &[]);
        by_field.region = Some(0); // region=eu
        let nodes = [node(0, 10, &[]), by_field];
        assert_eq!(chosen(&["region=eu"], &nodes, false), Some(1));
        // Only `region` is read from the field: `zone=eu` is another label.
        assert_eq!(chosen(&["zone=eu"], &nodes, false), Some(0));
        assert_eq!(chosen(&["region=eu"], &nodes, true), Some(1));
    }

    #[test]
    fn without_a_match_it_is_least_loaded() {
        let mut heavy = node(5, 10, &[]);
        heavy.weight = 4; // 5 / 40 is lighter than 2 / 10
        let nodes = [node(2, 10, &[]), heavy, node(1, 5, &[])];
        assert_eq!(chosen(&["region=eu"], &nodes, false), Some(1));
        assert_eq!(chosen(&[], &nodes, false), Some(1));
    }

    #[test]
    fn equal_loads_go_to_fewer_peers_then_the_earlier_node() {
        // Nodes come sorted by name: "a" is the first.
        let nodes = [node(1, 5, &[]), node(2, 10, &[]), node(1, 5, &[])];
        assert_eq!(chosen(&[], &nodes, false), Some(0));
    }

    #[test]
    fn a_node_without_room_is_never_chosen() {
        let nodes = [
            node(10, 10, &["region=eu"]),
            node(0, 0, &["region=eu"]),
            node(3, 10, &["region=us"]),
        ];
        assert_eq!(chosen(&["region=eu"], &nodes, false), Some(2));
        assert_eq!(chosen(&["region=eu"], &nodes, true), None);
        assert_eq!(chosen(&[], &nodes[..2], false), None);
    }

    #[test]
    fn required_means_every_label() {
        let nodes = [
            node(0, 10, &["region=eu"]),
            node(9, 10, &["region=eu", "tier=gold"]),
        ];
        assert_eq!(chosen(&["region=eu", "tier=gold"], &nodes, true), Some(1));
        assert_eq!(chosen(&["region=us"], &nodes, true), None);
        assert_eq!(chosen(&[], &nodes, true), Some(0));
    }

    #[test]
    fn a_region_index_past_the_bits_is_ignored() {
        let mut odd = node(0, 10, &[]);
        odd.region = Some(64);
        assert_eq!(odd.carries(), 0);
    }
}
