//! A pool's shape: which of its addresses may be handed out, which is the gateway, which are
//! static, and whether it overlaps another pool. Plain functions over plain values.

use super::addr::{Family, IpKey};
use ipnet::IpNet;
use std::net::IpAddr;

/// An inclusive range of address values within one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u128,
    pub end: u128,
}

impl Span {
    pub fn contains(&self, v: u128) -> bool {
        self.start <= v && v <= self.end
    }

    /// How many addresses the span holds, saturating for a whole IPv6 space. Never zero.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    pub fn overlaps(&self, other: &Span) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// Why a pool's definition was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PoolRuleError {
    /// The CIDR has host bits set, e.g. `10.0.0.1/24`.
    #[error("cidr {given} has host bits set; did you mean {network}?")]
    HostBitsSet { given: IpNet, network: IpNet },
    /// A static range did not parse as `FIRST-LAST`.
    #[error("static range {0:?} is not of the form FIRST-LAST (e.g. 10.0.0.10-10.0.0.50)")]
    RangeSyntax(String),
    /// A static range runs backwards.
    #[error("static range {0:?} ends before it starts")]
    RangeBackwards(String),
    /// A static range reaches outside the pool's usable addresses.
    #[error("static range {range:?} is not inside the usable addresses of {cidr}")]
    RangeOutside { range: String, cidr: IpNet },
    /// Two static ranges share addresses.
    #[error("static ranges {0:?} and {1:?} overlap")]
    RangesOverlap(String, String),
}

/// Everything the allocator needs to know about a pool, derived from its CIDR and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub cidr: IpNet,
    pub family: Family,
    /// The addresses that may ever be handed out or recorded (network/broadcast excluded).
    pub usable: Span,
    /// The gateway's address: usable, but never handed out.
    pub gateway: Option<u128>,
    /// Sorted, disjoint ranges of weft-managed addresses; empty means the whole pool is static.
    pub static_ranges: Vec<Span>,
}

impl Layout {
    /// Validates a pool definition and derives its layout.
    pub fn new(
        cidr: IpNet,
        reserve_gateway: bool,
        static_ranges: &[String],
    ) -> Result<Self, PoolRuleError> {
        if cidr.trunc() != cidr {
            return Err(PoolRuleError::HostBitsSet {
                given: cidr,
                network: cidr.trunc(),
            });
        }
        let family = Family::of(cidr.addr());
        let first = IpKey::from(cidr.network()).value;
        let last = IpKey::from(cidr.broadcast()).value;
        let usable = match cidr {
            // RFC 3021: /31 and /32 have no network or broadcast address.
            IpNet::V4(n) if n.prefix_len() >= 31 => Span {
                start: first,
                end: last,
            },
            IpNet::V4(_) => Span {
                start: first + 1,
                end: last - 1,
            },
            // The all-zero address of an IPv6 subnet is the subnet-router anycast address.
            IpNet::V6(n) if n.prefix_len() >= 127 => Span {
                start: first,
                end: last,
            },
            IpNet::V6(_) => Span {
                start: first + 1,
                end: last,
            },
        };
        // A point-to-point link or a single host has no gateway to keep back.
        let gateway = (reserve_gateway && usable.len() > 2).then_some(usable.start);

        let mut ranges: Vec<(Span, &String)> = Vec::with_capacity(static_ranges.len());
        for text in static_ranges {
            let span = parse_range(text, family)?;
            if !(usable.contains(span.start) && usable.contains(span.end)) {
                return Err(PoolRuleError::RangeOutside {
                    range: text.clone(),
                    cidr,
                });
            }
            ranges.push((span, text));
        }
        ranges.sort_by_key(|(s, _)| s.start);
        for pair in ranges.windows(2) {
            if pair[0].0.overlaps(&pair[1].0) {
                return Err(PoolRuleError::RangesOverlap(
                    pair[0].1.clone(),
                    pair[1].1.clone(),
                ));
            }
        }
        Ok(Layout {
            cidr,
            family,
            usable,
            gateway,
            static_ranges: ranges.into_iter().map(|(s, _)| s).collect(),
        })
    }

    /// The whole CIDR as a span, network and broadcast included.
    pub fn span(&self) -> Span {
        Span {
            start: IpKey::from(self.cidr.network()).value,
            end: IpKey::from(self.cidr.broadcast()).value,
        }
    }

    pub fn is_usable(&self, v: u128) -> bool {
        self.usable.contains(v)
    }

    /// Whether next-free may hand this address out: usable, not the gateway, and inside the
    /// static ranges when the pool has any (outside them is the DHCP server's ground).
    pub fn is_allocatable(&self, v: u128) -> bool {
        self.is_usable(v) && Some(v) != self.gateway && self.in_static_region(v)
    }

    /// Addresses in a static range, or every address of a pool without static ranges.
    pub fn in_static_region(&self, v: u128) -> bool {
        self.static_ranges.is_empty() || self.static_ranges.iter().any(|r| r.contains(v))
    }

    /// The usable addresses, less the gateway: what the free index starts with.
    pub fn initial_free(&self) -> Vec<Span> {
        let u = self.usable;
        match self.gateway {
            Some(g) if g == u.start => vec![Span {
                start: u.start + 1,
                end: u.end,
            }],
            _ => vec![u],
        }
    }

    /// The number of usable addresses, the gateway included; saturates for huge IPv6 pools.
    pub fn total(&self) -> u128 {
        self.usable.len()
    }

    pub fn key(&self, v: u128) -> IpKey {
        IpKey::new(self.family, v)
    }
}

fn parse_range(text: &str, family: Family) -> Result<Span, PoolRuleError> {
    let syntax = || PoolRuleError::RangeSyntax(text.to_string());
    let (a, b) = text.split_once('-').ok_or_else(syntax)?;
    let a: IpAddr = a.trim().parse().map_err(|_| syntax())?;
    let b: IpAddr = b.trim().parse().map_err(|_| syntax())?;
    if Family::of(a) != family || Family::of(b) != family {
        return Err(syntax());
    }
    let (a, b) = (IpKey::from(a).value, IpKey::from(b).value);
    if b < a {
        return Err(PoolRuleError::RangeBackwards(text.to_string()));
    }
    Ok(Span { start: a, end: b })
}

/// Finds the pool a new span collides with, given the existing pools of the same family sorted
/// by start. Because existing pools never overlap, only the last pool starting at or before the
/// new span's end can collide: the store answers that with one range lookup.
pub fn overlapping<'a, T>(
    new: Span,
    sorted: impl DoubleEndedIterator<Item = (Span, &'a T)>,
) -> Option<&'a T> {
    sorted
        .rev()
        .find(|(s, _)| s.start <= new.end)
        .filter(|(s, _)| s.end >= new.start)
        .map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(cidr: &str) -> Layout {
        Layout::new(cidr.parse().unwrap(), true, &[]).unwrap()
    }

    fn ip(v: u128, l: &Layout) -> String {
        l.key(v).to_string()
    }

    #[test]
    fn ipv4_network_and_broadcast_are_never_usable() {
        let l = layout("10.0.0.0/24");
        assert_eq!(ip(l.usable.start, &l), "10.0.0.1");
        assert_eq!(ip(l.usable.end, &l), "10.0.0.254");
        assert_eq!(l.gateway.map(|g| ip(g, &l)).as_deref(), Some("10.0.0.1"));
        assert_eq!(l.total(), 254);
    }

    #[test]
    fn ipv4_slash_31_and_32_are_all_usable_without_gateway() {
        let l = layout("10.0.0.0/31");
        assert_eq!(l.total(), 2);
        assert_eq!(l.gateway, None);
        assert_eq!(ip(l.usable.start, &l), "10.0.0.0");
        let l = layout("10.0.0.7/32");
        assert_eq!(l.total(), 1);
        assert_eq!(l.initial_free(), vec![l.usable]);
    }

    #[test]
    fn ipv6_anycast_address_is_never_usable() {
        let l = layout("fd00::/64");
        assert_eq!(ip(l.usable.start, &l), "fd00::1");
        assert_eq!(ip(l.usable.end, &l), "fd00::ffff:ffff:ffff:ffff");
        assert_eq!(l.initial_free()[0].start, l.usable.start + 1);
    }

    #[test]
    fn ipv6_slash_127_and_128_are_all_usable() {
        let l = layout("fd00::/127");
        assert_eq!(l.total(), 2);
        assert_eq!(ip(l.usable.start, &l), "fd00::");
        assert_eq!(layout("fd00::5/128").total(), 1);
    }

    #[test]
    fn host_bits_in_the_cidr_are_refused() {
        let err = Layout::new("10.0.0.1/24".parse().unwrap(), true, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cidr 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
        );
    }

    #[test]
    fn static_ranges_must_lie_inside_and_apart() {
        let cidr: IpNet = "10.0.0.0/24".parse().unwrap();
        let ok = Layout::new(cidr, true, &["10.0.0.10-10.0.0.50".into()]).unwrap();
        assert!(ok.is_allocatable(10 + (10 << 24)));
        assert!(!ok.is_allocatable(60 + (10 << 24)));
        assert!(matches!(
            Layout::new(cidr, true, &["10.0.0.10-10.0.1.5".into()]),
            Err(PoolRuleError::RangeOutside { .. })
        ));
        assert!(matches!(
            Layout::new(cidr, true, &["10.0.0.50-10.0.0.10".into()]),
            Err(PoolRuleError::RangeBackwards(_))
        ));
        assert!(matches!(
            Layout::new(
                cidr,
                true,
                &["10.0.0.1-10.0.0.9".into(), "10.0.0.5-10.0.0.20".into()]
            ),
            Err(PoolRuleError::RangesOverlap(..))
        ));
        assert!(matches!(
            Layout::new(cidr, true, &["10.0.0.10".into()]),
            Err(PoolRuleError::RangeSyntax(_))
        ));
    }

    #[test]
    fn overlap_names_the_colliding_pool() {
        let pools = [
            (Span { start: 0, end: 9 }, "a"),
            (Span { start: 20, end: 29 }, "b"),
        ];
        let find = |s, e| {
            overlapping(
                Span { start: s, end: e },
                pools.iter().map(|(s, n)| (*s, n)),
            )
        };
        assert_eq!(find(10, 19), None);
        assert_eq!(find(5, 15), Some(&"a"));
        assert_eq!(find(15, 25), Some(&"b"));
        assert_eq!(find(0, 100), Some(&"b"));
        assert_eq!(find(30, 40), None);
    }
}
