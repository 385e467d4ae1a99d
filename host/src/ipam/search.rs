//! What the `q` of an address listing matches, in a form an index can answer.
//!
//! `q` matches a record when (case-insensitively) the address starts with it, the hostname
//! starts with it, or the MAC starts or ends with it. The store answers the address part with
//! address ranges (for IPv4, at most three per query) and the rest with a table of *terms*:
//! `h:` + hostname, `m:` + MAC and `r:` + the MAC reversed (so "ends with" is a prefix
//! look-up too). A record is listed once, under the smallest of its terms that matches.

use super::Record;

/// Longest `q` accepted.
pub const MAX_QUERY: usize = 100;

/// The index terms of a record.
pub fn terms(rec: &Record) -> Vec<String> {
    let mut out = Vec::with_capacity(3);
    if let Some(h) = &rec.hostname {
        out.push(format!("h:{}", h.to_ascii_lowercase()));
    }
    if let Some(m) = &rec.mac {
        let m = m.to_ascii_lowercase();
        out.push(format!("r:{}", m.chars().rev().collect::<String>()));
        out.push(format!("m:{m}"));
    }
    out.sort();
    out
}

/// The term prefixes a query looks up, in key order.
pub fn term_prefixes(q: &str) -> Vec<String> {
    let q = q.to_ascii_lowercase();
    let mut out = vec![
        format!("h:{q}"),
        format!("m:{q}"),
        format!("r:{}", q.chars().rev().collect::<String>()),
    ];
    out.sort();
    out
}

/// The smallest term of the record that matches one of the query's term prefixes (see
/// [`term_prefixes`]): where the record is listed.
pub fn listed_under(rec: &Record, prefixes: &[String]) -> Option<String> {
    terms(rec)
        .into_iter()
        .find(|t| prefixes.iter().any(|p| t.starts_with(p.as_str())))
}

/// Whether the address text starts with the query.
pub fn address_matches(rec: &Record, q: &str) -> bool {
    rec.address.to_string().starts_with(&q.to_ascii_lowercase())
}

/// Whether a record matches the query at all.
pub fn matches(rec: &Record, q: &str) -> bool {
    address_matches(rec, q) || listed_under(rec, &term_prefixes(q)).is_some()
}

/// The IPv4 addresses whose text starts with `q`, as ascending, disjoint inclusive ranges; `None`
/// when `q` cannot start an IPv4 address. "10.0.0.1" gives .1, .10-.19 and .100-.199.
pub fn ipv4_ranges(q: &str) -> Option<Vec<(u32, u32)>> {
    if q.is_empty() || q.len() > 15 || !q.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let parts: Vec<&str> = q.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let (done, partial) = parts.split_at(parts.len() - 1);
    let mut prefix: u32 = 0;
    for octet in done {
        let v: u32 = octet
            .parse()
            .ok()
            .filter(|v| *v <= 255 && !octet.is_empty())?;
        if octet.len() > 1 && octet.starts_with('0') {
            return None; // addresses are written without leading zeros
        }
        prefix = (prefix << 8) | v;
    }
    let partial = partial[0];
    // Candidate values of the octet being typed, as ranges.
    let octets: Vec<(u32, u32)> = if partial.is_empty() {
        vec![(0, 255)]
    } else if partial.len() > 3 || (partial.len() > 1 && partial.starts_with('0')) {
        return None;
    } else {
        let p: u32 = partial.parse().ok()?;
        if p > 255 {
            return None;
        }
        let mut r = vec![(p, p)];
        if p != 0 {
            for scale in [10, 100] {
                let lo = p * scale;
                let hi = (lo + scale - 1).min(255);
                if lo <= 255 {
                    r.push((lo, hi));
                }
            }
        }
        r
    };
    let rest = 4 - parts.len(); // octets after the one being typed
    let shift = 8 * rest as u32;
    let low_mask: u32 = if shift == 0 {
        0
    } else {
        (1u64 << shift) as u32 - 1
    };
    Some(
        octets
            .into_iter()
            .map(|(lo, hi)| {
                let base = |o: u32| ((prefix << 8) | o).checked_shl(shift).unwrap_or(0);
                (base(lo), base(hi) | low_mask)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{AddrType, Facts};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn rec(ip: &str, host: Option<&str>, mac: Option<&str>) -> Record {
        let mut r = Record::available(
            ip.parse().unwrap(),
            1,
            AddrType::Static,
            jiff::Timestamp::UNIX_EPOCH,
        );
        r.set_facts(Facts {
            hostname: host.map(str::to_string),
            mac: mac.map(str::to_string),
            ..Facts::default()
        });
        r
    }

    #[test]
    fn hostnames_and_macs_match_by_prefix_and_macs_by_suffix_too() {
        let r = rec("10.0.0.5", Some("Web-1"), Some("52:54:00:ab:cd:ef"));
        assert!(matches(&r, "web"));
        assert!(matches(&r, "52:54"));
        assert!(matches(&r, "CD:EF"));
        assert!(matches(&r, "10.0.0."));
        assert!(!matches(&r, "eb-1"));
        assert!(!matches(&r, "ab:cd"));
    }

    #[test]
    fn a_record_is_listed_under_its_smallest_matching_term() {
        let r = rec("10.0.0.5", Some("ef-host"), Some("52:54:00:ab:cd:ef"));
        assert_eq!(
            listed_under(&r, &term_prefixes("ef")).as_deref(),
            Some("h:ef-host")
        );
        assert_eq!(
            listed_under(&r, &term_prefixes("cd:ef")).as_deref(),
            Some("r:fe:dc:ba:00:45:25")
        );
    }

    #[test]
    fn ipv4_prefixes_become_at_most_three_ranges() {
        let show = |q| {
            ipv4_ranges(q).map(|v| {
                v.iter()
                    .map(|(a, b)| format!("{}-{}", Ipv4Addr::from(*a), Ipv4Addr::from(*b)))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            show("10.0.0.1").unwrap(),
            [
                "10.0.0.1-10.0.0.1",
                "10.0.0.10-10.0.0.19",
                "10.0.0.100-10.0.0.199"
            ]
        );
        assert_eq!(show("10.0.").unwrap(), ["10.0.0.0-10.0.255.255"]);
        assert_eq!(
            show("192.168.0.25").unwrap(),
            ["192.168.0.25-192.168.0.25", "192.168.0.250-192.168.0.255"]
        );
        assert_eq!(show("10.0.0.0").unwrap(), ["10.0.0.0-10.0.0.0"]);
        assert_eq!(show("web"), None);
        assert_eq!(show("300"), None);
        assert_eq!(show("1.2.3.4.5"), None);
    }

    proptest! {
        /// The ranges hold exactly the addresses whose text starts with the query.
        #[test]
        fn ipv4_ranges_agree_with_text_prefixes(addr in any::<u32>(), cut in 1usize..15) {
            let text = Ipv4Addr::from(addr).to_string();
            let q = &text[..cut.min(text.len())];
            let ranges = ipv4_ranges(q).expect("a prefix of an address");
            prop_assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "ranges ascend");
            prop_assert!(ranges.iter().any(|(a, b)| (*a..=*b).contains(&addr)));
            // Sample the edges of each range and their neighbours.
            for (a, b) in ranges {
                for v in [a, b, a.wrapping_sub(1), b.wrapping_add(1)] {
                    let inside = ipv4_ranges(q).unwrap().iter().any(|(x, y)| (*x..=*y).contains(&v));
                    prop_assert_eq!(inside, Ipv4Addr::from(v).to_string().starts_with(q), "{} vs {}", v, q);
                }
            }
        }
    }
}
