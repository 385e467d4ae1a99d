//! Listing addresses: filters, search and cursor pagination, each page a bounded amount of
//! work however large the store.
//!
//! Where rows come from:
//! - `status=available`: the free index, in address order (free addresses are mostly not
//!   stored);
//! - `q`: first the addresses whose text starts with `q` (for IPv4, at most three address
//!   ranges), in address order; then the `search` table, in term order, for hostnames and MACs;
//! - otherwise the held-status index (with a status) or the records, in address order.
//!
//! A page examines at most [`MAX_SCAN`] rows; a sparse filter may return a short page with a
//! cursor to go on from.

use super::pools::{Pool, free_from};
use super::records::{default_type, load};
use super::{Reader, Result, StoreError, decode_record};
use crate::ipam::{AddrType, Family, IpKey, Record, Status, search};
use serde::Serialize;

/// Most rows one listing request examines.
pub const MAX_SCAN: usize = 10_000;

/// Most rows one pass of [`Reader::count`] examines (a count makes at most two passes): what
/// counting a filter no counter answers may cost.
pub const COUNT_BUDGET: usize = 1_000;

/// How many addresses match: exactly `n`, or at least `n` when `more` (counting stopped at
/// its budget).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub n: u64,
    pub more: bool,
}

/// Matching addresses by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    by_status: [Count; 4],
}

impl StatusCounts {
    pub fn get(&self, s: Status) -> Count {
        self.by_status[s.as_u8() as usize]
    }

    fn get_mut(&mut self, s: Status) -> &mut Count {
        &mut self.by_status[s.as_u8() as usize]
    }
}

#[derive(Debug, Clone, Default)]
pub struct AddressFilter {
    pub pool: Option<u64>,
    pub status: Option<Status>,
    pub addr_type: Option<AddrType>,
    pub active: Option<bool>,
    /// See `ipam::search`: an address prefix, a hostname prefix, or a MAC prefix or suffix.
    pub q: Option<String>,
}

impl AddressFilter {
    /// Everything but `q`, which each source of rows answers itself (mostly by an index).
    fn matches_except_q(&self, r: &Record) -> bool {
        self.addr_type.is_none_or(|t| r.addr_type == t)
            && self.active.is_none_or(|a| r.active == a)
            && self.status.is_none_or(|s| r.status == s)
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub items: Vec<Record>,
    /// Pass back as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Where a listing stopped: after an address (address order), or after a search term's row.
#[derive(Debug, Clone, PartialEq)]
enum Cursor {
    Address(IpKey),
    Term(String, IpKey),
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor> {
        let bad = || StoreError::BadCursor(text.to_string());
        if let Some(rest) = text.strip_prefix("t~") {
            let (term, ip) = rest.split_once('~').ok_or_else(bad)?;
            let term =
                String::from_utf8(hex::decode(term).map_err(|_| bad())?).map_err(|_| bad())?;
            let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
            return Ok(Cursor::Term(term, ip.into()));
        }
        text.parse::<std::net::IpAddr>()
            .map(|ip| Cursor::Address(ip.into()))
            .map_err(|_| bad())
    }

    fn render(&self) -> String {
        match self {
            Cursor::Address(k) => k.to_string(),
            Cursor::Term(t, k) => format!("t~{}~{k}", hex::encode(t)),
        }
    }
}

/// Collects a page, counting the rows examined.
struct PageBuilder<'f> {
    filter: &'f AddressFilter,
    limit: usize,
    /// Rows examined before the page stops.
    max_scan: usize,
    /// False when only counting: rows are tallied in `tally`, not kept.
    keep: bool,
    tally: [u64; 4],
    listed: usize,
    items: Vec<Record>,
    scanned: usize,
    last: Option<Cursor>,
    stopped: bool,
}

impl PageBuilder<'_> {
    /// Offers a row; false once the page is full or the scan budget spent.
    fn offer(&mut self, rec: Record, at: Cursor) -> bool {
        self.scanned += 1;
        self.last = Some(at);
        if self.filter.matches_except_q(&rec) {
            self.listed += 1;
            self.tally[rec.status.as_u8() as usize] += 1;
            if self.keep {
                self.items.push(rec);
            }
        }
        self.stopped = self.listed >= self.limit || self.scanned >= self.max_scan;
        !self.stopped
    }

    /// Counts a row examined and not listed, so no page examines without bound.
    fn skip(&mut self, at: Cursor) -> bool {
        self.scanned += 1;
        self.last = Some(at);
        self.stopped = self.scanned >= self.max_scan;
        !self.stopped
    }

    /// A row its source matched (`Some`) or ruled out (`None`); false once the page is done.
    fn consider(&mut self, rec: Option<Record>, at: Cursor) -> bool {
        match rec {
            Some(rec) => self.offer(rec, at),
            None => self.skip(at),
        }
    }

    fn finish(self) -> Page {
        Page {
            next_cursor: if self.stopped {
                self.last.map(|c| c.render())
            } else {
                None
            },
            items: self.items,
        }
    }
}

fn family(f: u8) -> Result<Family> {
    Family::from_u8(f).ok_or_else(|| StoreError::corrupt("records", format!("family {f}")))
}

impl Reader {
    /// One page of addresses matching `filter`, after `cursor` (a `next_cursor` this gave).
    pub fn list(&self, filter: &AddressFilter, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let pools = self.filter_pools(filter)?;
        let cursor = cursor.map(Cursor::parse).transpose()?;
        let mut page = PageBuilder {
            filter,
            limit,
            max_scan: MAX_SCAN,
            keep: true,
            tally: [0; 4],
            listed: 0,
            items: Vec::new(),
            scanned: 0,
            last: None,
            stopped: false,
        };
        self.fill(&pools, cursor, &mut page)?;
        Ok(page.finish())
    }

    /// The pools a filter covers.
    fn filter_pools(&self, filter: &AddressFilter) -> Result<Vec<Pool>> {
        Ok(match filter.pool {
            Some(id) => self.pool_by_id(id)?.into_iter().collect(),
            None => self.pools()?,
        })
    }

    /// How many addresses match `filter`, by status. Exact and cheap (the pools' counters)
    /// when the filter is at most a pool and a status; otherwise counted by listing, at most
    /// `budget` rows examined per pass and two passes, so a count costs about as much as two
    /// pages however large the store. A count that ran out of budget says `more`.
    pub fn count(&self, filter: &AddressFilter, budget: usize) -> Result<StatusCounts> {
        let wanted = |s: Status| filter.status.is_none_or(|f| f == s);
        let pools = self.filter_pools(filter)?;
        let mut out = StatusCounts::default();
        if filter.addr_type.is_none() && filter.active.is_none() && filter.q.is_none() {
            for pool in &pools {
                let st = pool.stats();
                for (s, n) in [
                    (Status::Available, st.available),
                    (Status::Allocated, st.allocated),
                    (Status::Reserved, st.reserved),
                    (Status::Quarantine, st.quarantine),
                ] {
                    if wanted(s) {
                        let c = out.get_mut(s);
                        c.n = c.n.saturating_add(n);
                    }
                }
            }
            return Ok(out);
        }
        // Free addresses that are not stored are inactive, have no hostname or MAC, and are
        // found only through the free index; when the filter rules them out, the available
        // ones it matches are stored records, counted with the held ones in one pass.
        let unstored_may_match = filter.active != Some(true)
            && filter.q.as_deref().is_none_or(|q| {
                !address_query_spans(q, &pools, filter.pool.is_some(), None).is_empty()
            });
        let held_wanted = Status::ALL
            .into_iter()
            .any(|s| s != Status::Available && wanted(s));
        let counted = |s: Status| wanted(s) && (s != Status::Available || !unstored_may_match);
        let run = |status: Option<Status>| -> Result<([u64; 4], bool)> {
            let f = AddressFilter {
                status,
                ..filter.clone()
            };
            let mut page = PageBuilder {
                filter: &f,
                limit: usize::MAX,
                max_scan: budget,
                keep: false,
                tally: [0; 4],
                listed: 0,
                items: Vec::new(),
                scanned: 0,
                last: None,
                stopped: false,
            };
            self.fill(&pools, None, &mut page)?;
            Ok((page.tally, page.stopped))
        };
        if held_wanted || counted(Status::Available) {
            // One held status: its index. Otherwise every stored record.
            let (tally, stopped) = run(filter.status.filter(|s| *s != Status::Available))?;
            for s in Status::ALL.into_iter().filter(|s| counted(*s)) {
                *out.get_mut(s) = Count {
                    n: tally[s.as_u8() as usize],
                    more: stopped,
                };
            }
        }
        if wanted(Status::Available) && unstored_may_match {
            let (tally, stopped) = run(Some(Status::Available))?;
            *out.get_mut(Status::Available) = Count {
                n: tally[Status::Available.as_u8() as usize],
                more: stopped,
            };
        }
        Ok(out)
    }

    /// Offers `page` the rows of `pools` matching its filter, after `cursor`, until it stops.
    fn fill(&self, pools: &[Pool], cursor: Option<Cursor>, page: &mut PageBuilder) -> Result<()> {
        let filter = page.filter;
        let after = match &cursor {
            Some(Cursor::Address(k)) => Some(*k),
            _ => None,
        };
        match (filter.status, filter.q.as_deref()) {
            (Some(Status::Available), _) => self.list_free(pools, after, page)?,
            (_, Some(q)) => {
                if !matches!(cursor, Some(Cursor::Term(..))) {
                    let spans = address_query_spans(q, pools, filter.pool.is_some(), after);
                    self.list_by_address(filter.status, &spans, Some(q), page)?;
                }
                if !page.stopped {
                    let from = match cursor {
                        Some(Cursor::Term(t, k)) => Some((t, k)),
                        _ => None,
                    };
                    self.list_by_terms(q, pools, filter.pool.is_some(), from, page)?;
                }
            }
            (status, None) => {
                let spans = scan_spans(pools, filter.pool.is_some(), after);
                self.list_by_address(status, &spans, None, page)?;
            }
        }
        Ok(())
    }

    /// Free addresses, stored or not, in address order. `q` is checked row by row here (free
    /// addresses are mostly not stored, so not indexed).
    fn list_free(
        &self,
        pools: &[Pool],
        after: Option<IpKey>,
        page: &mut PageBuilder,
    ) -> Result<()> {
        let q = page.filter.q.clone();
        for pool in pools {
            let layout = pool.layout()?;
            let f = layout.family;
            let from = match after {
                Some(a) if a.family == f && a.value >= layout.span().end => continue,
                Some(a) if a.family == f && a.value >= layout.span().start => a.value + 1,
                Some(a) if a.family > f => continue,
                _ => layout.usable.start,
            };
            for v in free_from(self, pool.id, from)? {
                let key = layout.key(v?);
                let rec = match load(self.t.records()?, key)? {
                    Some(r) => r,
                    None => Record::available(
                        key.ip(),
                        pool.id,
                        default_type(&layout, key.value),
                        pool.created,
                    ),
                };
                let listed = q.as_deref().is_none_or(|q| search::matches(&rec, q));
                if !page.consider(listed.then_some(rec), Cursor::Address(key)) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Stored records (or held ones of one status) within address spans, in address order.
    /// With `q`, only those whose address text starts with it.
    fn list_by_address(
        &self,
        status: Option<Status>,
        spans: &[(u8, u128, u128)],
        q: Option<&str>,
        page: &mut PageBuilder,
    ) -> Result<()> {
        for &(f, start, end) in spans {
            let fam = family(f)?;
            match status {
                Some(s) => {
                    let s = s.as_u8();
                    for e in self.t.by_status()?.range((s, f, start)..=(s, f, end))? {
                        let key = IpKey::new(fam, e?.0.value().2);
                        let rec = load(self.t.records()?, key)?.ok_or_else(|| {
                            StoreError::corrupt("by_status", format!("{key} has no record"))
                        })?;
                        let listed = q.is_none_or(|q| search::address_matches(&rec, q));
                        if !page.consider(listed.then_some(rec), Cursor::Address(key)) {
                            return Ok(());
                        }
                    }
                }
                None => {
                    for e in self.t.records()?.range((f, start)..=(f, end))? {
                        let (k, v) = e?;
                        let key = IpKey::new(fam, k.value().1);
                        let rec = decode_record(v.value())?;
                        let listed = q.is_none_or(|q| search::address_matches(&rec, q));
                        if !page.consider(listed.then_some(rec), Cursor::Address(key)) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Records whose hostname or MAC matches `q`, in term order; each record once, under its
    /// smallest matching term, and none that the address part of the query already listed.
    fn list_by_terms(
        &self,
        q: &str,
        pools: &[Pool],
        one_pool: bool,
        from: Option<(String, IpKey)>,
        page: &mut PageBuilder,
    ) -> Result<()> {
        // The pool filter as address spans, worked out once rather than per row.
        let bounds = scan_spans(pools, one_pool, None);
        let in_pools = |key: IpKey| {
            let f = key.family.as_u8();
            bounds
                .iter()
                .any(|&(bf, a, b)| bf == f && (a..=b).contains(&key.value))
        };
        let prefixes = search::term_prefixes(q);
        for prefix in &prefixes {
            let start = match &from {
                Some((t, _)) if t.as_str() > prefix.as_str() && !t.starts_with(prefix.as_str()) => {
                    continue;
                }
                Some((t, k)) if t.starts_with(prefix.as_str()) => {
                    (t.clone(), k.family.as_u8(), k.value)
                }
                _ => (prefix.clone(), 0, 0),
            };
            let skip_first = from.as_ref().is_some_and(|(t, k)| {
                (t.as_str(), k.family.as_u8(), k.value) == (start.0.as_str(), start.1, start.2)
            });
            let range = self
                .t
                .search()?
                .range((start.0.as_str(), start.1, start.2)..)?;
            for (i, e) in range.enumerate() {
                let entry = e?;
                let (term, f, v) = entry.0.value();
                if !term.starts_with(prefix.as_str()) {
                    break;
                }
                if i == 0 && skip_first {
                    continue;
                }
                let key = IpKey::new(family(f)?, v);
                let at = Cursor::Term(term.to_string(), key);
                // Outside the pool filter: ruled out before the record is even loaded.
                let listed = match in_pools(key) {
                    true => load(self.t.records()?, key)?.filter(|rec| {
                        !search::address_matches(rec, q)
                            && search::listed_under(rec, &prefixes).as_deref() == Some(term)
                    }),
                    false => None,
                };
                if !page.consider(listed, at) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The address spans the address part of `q` covers: IPv4 ranges for an IPv4 prefix, the
/// whole IPv6 space for what could start an IPv6 address (checked row by row), else none.
fn address_query_spans(
    q: &str,
    pools: &[Pool],
    one_pool: bool,
    after: Option<IpKey>,
) -> Vec<(u8, u128, u128)> {
    let candidates: Vec<(u8, u128, u128)> = match search::ipv4_ranges(q) {
        Some(ranges) => ranges
            .into_iter()
            .map(|(a, b)| (4, a as u128, b as u128))
            .collect(),
        None if q.contains(':')
            && q.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') =>
        {
            vec![(6, 0, u128::MAX)]
        }
        None => vec![],
    };
    let bounds = scan_spans(pools, one_pool, after);
    let mut out = Vec::new();
    for (f, a, b) in candidates {
        for &(bf, ba, bb) in &bounds {
            if f == bf && a.max(ba) <= b.min(bb) {
                out.push((f, a.max(ba), b.min(bb)));
            }
        }
    }
    out.sort();
    out
}

/// The key ranges to scan: the one pool's CIDR, or both whole families; starting after the
/// cursor.
fn scan_spans(pools: &[Pool], one_pool: bool, after: Option<IpKey>) -> Vec<(u8, u128, u128)> {
    let spans: Vec<(u8, u128, u128)> = if one_pool {
        pools
            .iter()
            .filter_map(|p| p.layout().ok())
            .map(|l| (l.family.as_u8(), l.span().start, l.span().end))
            .collect()
    } else {
        vec![(4, 0, u32::MAX as u128), (6, 0, u128::MAX)]
    };
    spans
        .into_iter()
        .filter_map(|(f, start, end)| match after {
            Some(a) if a.family.as_u8() > f => None,
            Some(a) if a.family.as_u8() == f => {
                (a.value < end).then(|| (f, start.max(a.value + 1), end))
            }
            _ => Some((f, start, end)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        for c in [
            Cursor::Address("10.0.0.9".parse::<std::net::IpAddr>().unwrap().into()),
            Cursor::Term(
                "h:web~1".into(),
                "fd00::1".parse::<std::net::IpAddr>().unwrap().into(),
            ),
        ] {
            assert_eq!(Cursor::parse(&c.render()).unwrap(), c);
        }
        assert!(Cursor::parse("not-an-address").is_err());
        assert!(Cursor::parse("t~zz~10.0.0.1").is_err());
    }
}
