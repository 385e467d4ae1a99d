//! The allocator: which free address to hand out next, at a cost that does not grow with the
//! pool. Free addresses live in two structures, both ordered maps:
//!
//! - *fresh* intervals: addresses never handed out, as `start -> end` runs. A new pool is one
//!   or two intervals, so a /8 or an IPv6 /64 costs nothing until it is used.
//! - the *released* queue: addresses given back, in the order they came back. Next-free drains
//!   fresh intervals first and then the oldest released address, so an address just freed is
//!   not handed out again at once (least recently used first).
//!
//! Each operation is a handful of ordered-map lookups: O(log n), never a scan. The maps sit
//! behind [`FreeIndex`], so the same policy runs over redb tables in the store and over
//! `BTreeMap`s in [`MemIndex`] for model-based tests.

use super::pool::{Layout, Span};

/// Which queue a released address waits in: next-free only drains the static one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Region {
    /// Inside the pool's static ranges (or anywhere, for a pool without static ranges).
    Static = 0,
    /// Outside the static ranges: handed out only on request, by address.
    Outside = 1,
}

impl Region {
    pub fn of(layout: &Layout, v: u128) -> Self {
        if layout.in_static_region(v) {
            Region::Static
        } else {
            Region::Outside
        }
    }
}

/// The ordered maps of one pool's free addresses. Implementations only store and look up;
/// every decision is made by the functions of this module.
pub trait FreeIndex {
    type Error;

    /// The fresh interval with the greatest start `<= v`.
    fn fresh_floor(&mut self, v: u128) -> Result<Option<Span>, Self::Error>;
    /// The fresh interval with the least start `>= v`.
    fn fresh_ceil(&mut self, v: u128) -> Result<Option<Span>, Self::Error>;
    fn fresh_insert(&mut self, span: Span) -> Result<(), Self::Error>;
    fn fresh_remove(&mut self, start: u128) -> Result<(), Self::Error>;

    /// Appends an address to the back of its region's queue.
    fn released_push(&mut self, region: Region, v: u128) -> Result<(), Self::Error>;
    /// The address at the front of a region's queue, without taking it.
    fn released_front(&mut self, region: Region) -> Result<Option<u128>, Self::Error>;
    /// Takes an address out of whichever queue holds it; false if none does.
    fn released_remove(&mut self, v: u128) -> Result<bool, Self::Error>;
    fn released_contains(&mut self, v: u128) -> Result<bool, Self::Error>;
}

/// Fills the index of a new pool.
pub fn init<I: FreeIndex>(idx: &mut I, layout: &Layout) -> Result<(), I::Error> {
    for span in layout.initial_free() {
        idx.fresh_insert(span)?;
    }
    Ok(())
}

/// Whether the address is free (in a fresh interval or a released queue).
pub fn is_free<I: FreeIndex>(idx: &mut I, v: u128) -> Result<bool, I::Error> {
    Ok(fresh_containing(idx, v)?.is_some() || idx.released_contains(v)?)
}

/// Takes the next free address next-free may hand out, or `None` when there is none.
pub fn take_next<I: FreeIndex>(idx: &mut I, layout: &Layout) -> Result<Option<u128>, I::Error> {
    let candidate = next_candidate(idx, layout)?;
    if let Some(v) = candidate {
        take(idx, v)?;
    }
    Ok(candidate)
}

/// The address next-free would hand out, without taking it.
pub fn next_candidate<I: FreeIndex>(
    idx: &mut I,
    layout: &Layout,
) -> Result<Option<u128>, I::Error> {
    let candidate = if layout.static_ranges.is_empty() {
        idx.fresh_ceil(0)?.map(|s| s.start)
    } else {
        first_fresh_in_static_ranges(idx, layout)?
    };
    match candidate {
        Some(v) => Ok(Some(v)),
        None => idx.released_front(Region::Static),
    }
}

/// Takes one specific address; false if it is not free.
pub fn take<I: FreeIndex>(idx: &mut I, v: u128) -> Result<bool, I::Error> {
    if let Some(span) = fresh_containing(idx, v)? {
        idx.fresh_remove(span.start)?;
        if span.start < v {
            idx.fresh_insert(Span {
                start: span.start,
                end: v - 1,
            })?;
        }
        if v < span.end {
            idx.fresh_insert(Span {
                start: v + 1,
                end: span.end,
            })?;
        }
        return Ok(true);
    }
    idx.released_remove(v)
}

/// Gives an address back: it joins the back of its region's queue. The caller guarantees it
/// is not free already (the store knows from the address's record).
pub fn give_back<I: FreeIndex>(idx: &mut I, layout: &Layout, v: u128) -> Result<(), I::Error> {
    idx.released_push(Region::of(layout, v), v)
}

fn fresh_containing<I: FreeIndex>(idx: &mut I, v: u128) -> Result<Option<Span>, I::Error> {
    Ok(idx.fresh_floor(v)?.filter(|s| s.contains(v)))
}

/// The lowest fresh address inside a static range: one or two lookups per static range.
fn first_fresh_in_static_ranges<I: FreeIndex>(
    idx: &mut I,
    layout: &Layout,
) -> Result<Option<u128>, I::Error> {
    for range in &layout.static_ranges {
        if let Some(span) = fresh_containing(idx, range.start)? {
            return Ok(Some(range.start.max(span.start)));
        }
        if let Some(span) = idx.fresh_ceil(range.start)?
            && span.start <= range.end
        {
            return Ok(Some(span.start));
        }
    }
    Ok(None)
}

/// A [`FreeIndex`] in memory: the reference implementation for tests and benchmarks.
#[derive(Debug, Default, Clone)]
pub struct MemIndex {
    fresh: std::collections::BTreeMap<u128, u128>,
    queue: std::collections::BTreeMap<(Region, u64), u128>,
    queued: std::collections::HashMap<u128, (Region, u64)>,
    seq: u64,
}

impl FreeIndex for MemIndex {
    type Error = std::convert::Infallible;

    fn fresh_floor(&mut self, v: u128) -> Result<Option<Span>, Self::Error> {
        Ok(self
            .fresh
            .range(..=v)
            .next_back()
            .map(|(&start, &end)| Span { start, end }))
    }
    fn fresh_ceil(&mut self, v: u128) -> Result<Option<Span>, Self::Error> {
        Ok(self
            .fresh
            .range(v..)
            .next()
            .map(|(&start, &end)| Span { start, end }))
    }
    fn fresh_insert(&mut self, span: Span) -> Result<(), Self::Error> {
        self.fresh.insert(span.start, span.end);
        Ok(())
    }
    fn fresh_remove(&mut self, start: u128) -> Result<(), Self::Error> {
        self.fresh.remove(&start);
        Ok(())
    }
    fn released_push(&mut self, region: Region, v: u128) -> Result<(), Self::Error> {
        self.seq += 1;
        self.queue.insert((region, self.seq), v);
        self.queued.insert(v, (region, self.seq));
        Ok(())
    }
    fn released_front(&mut self, region: Region) -> Result<Option<u128>, Self::Error> {
        Ok(self
            .queue
            .range((region, 0)..=(region, u64::MAX))
            .next()
            .map(|(_, &v)| v))
    }
    fn released_remove(&mut self, v: u128) -> Result<bool, Self::Error> {
        Ok(match self.queued.remove(&v) {
            Some(key) => self.queue.remove(&key).is_some(),
            None => false,
        })
    }
    fn released_contains(&mut self, v: u128) -> Result<bool, Self::Error> {
        Ok(self.queued.contains_key(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::convert::Infallible;

    fn ok<T>(r: Result<T, Infallible>) -> T {
        match r {
            Ok(t) => t,
        }
    }

    fn pool(cidr: &str, ranges: &[&str]) -> (Layout, MemIndex) {
        let ranges: Vec<String> = ranges.iter().map(|s| s.to_string()).collect();
        let layout = Layout::new(cidr.parse().unwrap(), true, &ranges).unwrap();
        let mut idx = MemIndex::default();
        ok(init(&mut idx, &layout));
        (layout, idx)
    }

    fn drain(layout: &Layout, idx: &mut MemIndex) -> Vec<String> {
        std::iter::from_fn(|| ok(take_next(idx, layout)))
            .map(|v| layout.key(v).to_string())
            .collect()
    }

    #[test]
    fn next_free_skips_network_gateway_and_broadcast() {
        let (l, mut idx) = pool("10.0.0.0/29", &[]);
        assert_eq!(
            drain(&l, &mut idx),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn slash_31_and_slash_32_hand_out_every_address() {
        let (l, mut idx) = pool("192.0.2.0/31", &[]);
        assert_eq!(drain(&l, &mut idx), ["192.0.2.0", "192.0.2.1"]);
        let (l, mut idx) = pool("192.0.2.9/32", &[]);
        assert_eq!(drain(&l, &mut idx), ["192.0.2.9"]);
    }

    #[test]
    fn ipv6_slash_127_and_slash_128_hand_out_every_address() {
        let (l, mut idx) = pool("fd00::/127", &[]);
        assert_eq!(drain(&l, &mut idx), ["fd00::", "fd00::1"]);
        let (l, mut idx) = pool("fd00::7/128", &[]);
        assert_eq!(drain(&l, &mut idx), ["fd00::7"]);
    }

    #[test]
    fn ipv6_next_free_skips_anycast_and_gateway() {
        let (l, mut idx) = pool("fd00::/64", &[]);
        let first = ok(take_next(&mut idx, &l)).unwrap();
        assert_eq!(l.key(first).to_string(), "fd00::2");
    }

    #[test]
    fn released_addresses_go_to_the_back_of_the_line() {
        let (l, mut idx) = pool("10.0.0.0/29", &[]);
        let a = ok(take_next(&mut idx, &l)).unwrap();
        let b = ok(take_next(&mut idx, &l)).unwrap();
        ok(give_back(&mut idx, &l, b));
        ok(give_back(&mut idx, &l, a));
        // Fresh addresses first, then b (released first), then a.
        let rest = drain(&l, &mut idx);
        assert_eq!(
            rest,
            ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.3", "10.0.0.2"]
        );
    }

    #[test]
    fn next_free_stays_inside_static_ranges() {
        let (l, mut idx) = pool(
            "10.0.0.0/24",
            &["10.0.0.10-10.0.0.11", "10.0.0.20-10.0.0.20"],
        );
        assert_eq!(drain(&l, &mut idx), ["10.0.0.10", "10.0.0.11", "10.0.0.20"]);
        // An address outside the ranges can still be taken by name, and given back.
        let outside = l.usable.start + 99;
        assert!(ok(take(&mut idx, outside)));
        ok(give_back(&mut idx, &l, outside));
        assert_eq!(ok(take_next(&mut idx, &l)), None);
        assert!(ok(is_free(&mut idx, outside)));
    }

    #[test]
    fn taking_a_specific_address_splits_its_interval() {
        let (l, mut idx) = pool("10.0.0.0/29", &[]);
        let mid = l.usable.start + 3;
        assert!(ok(take(&mut idx, mid)));
        assert!(!ok(take(&mut idx, mid)));
        assert!(!ok(is_free(&mut idx, mid)));
        assert_eq!(
            drain(&l, &mut idx),
            ["10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Next,
        Take(u8),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Next),
            2 => any::<u8>().prop_map(Op::Take),
            2 => any::<u8>().prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Random allocate / take / release sequences against a naive reference: the set of
        /// held addresses. Reserve and quarantine are "take" to the index; back-to-available
        /// is "release": the store maps every status change onto these three.
        #[test]
        fn allocator_agrees_with_a_naive_reference(
            ops in proptest::collection::vec(op(), 1..300),
            with_ranges in any::<bool>(),
        ) {
            let ranges: &[&str] = if with_ranges { &["10.0.0.20-10.0.0.40", "10.0.0.100-10.0.0.110"] } else { &[] };
            let (l, mut idx) = pool("10.0.0.0/25", ranges);
            let base = l.cidr.network();
            let base = crate::ipam::IpKey::from(base).value;
            let mut held: BTreeSet<u128> = BTreeSet::new();
            let mut released_order: Vec<u128> = Vec::new();
            let gateway = l.gateway.unwrap();
            for op in ops {
                match op {
                    Op::Next => {
                        let got = ok(take_next(&mut idx, &l));
                        let free_allocatable = (l.usable.start..=l.usable.end)
                            .filter(|v| l.is_allocatable(*v) && !held.contains(v))
                            .count();
                        match got {
                            Some(v) => {
                                prop_assert!(l.is_allocatable(v), "handed out {v} outside the allocatable set");
                                prop_assert!(held.insert(v), "handed out {v} twice");
                                // A released address only comes back when no fresh one is left,
                                // and then the one released longest ago.
                                if let Some(pos) = released_order.iter().position(|r| *r == v) {
                                    let first_static = released_order.iter().position(|r| l.in_static_region(*r));
                                    prop_assert_eq!(Some(pos), first_static);
                                    released_order.remove(pos);
                                }
                            }
                            None => prop_assert_eq!(free_allocatable, 0),
                        }
                    }
                    Op::Take(o) => {
                        let v = base + o as u128 % 128;
                        let expect = l.is_usable(v) && v != gateway && !held.contains(&v);
                        let got = if l.is_usable(v) && v != gateway { ok(take(&mut idx, v)) } else { false };
                        prop_assert_eq!(got, expect);
                        if got {
                            held.insert(v);
                            released_order.retain(|r| *r != v);
                        }
                    }
                    Op::Release(o) => {
                        if let Some(&v) = held.iter().nth(o as usize % held.len().max(1)) {
                            held.remove(&v);
                            ok(give_back(&mut idx, &l, v));
                            released_order.push(v);
                        }
                    }
                }
                for v in l.usable.start..=l.usable.end {
                    let free = ok(is_free(&mut idx, v));
                    prop_assert_eq!(free, v != gateway && !held.contains(&v), "address {} free={}", v, free);
                }
            }
        }
    }
}
