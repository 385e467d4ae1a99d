//! Pools: creation (with the overlap rule), look-up by id, name or address, deletion, and the
//! redb form of the allocator's free index.

use super::{Reader, Result, StoreError, WriteTables, Writer, encode, get_json};
use crate::ipam::alloc::{self, FreeIndex, Region};
use crate::ipam::{AddrType, Family, IpKey, Layout, Record, Span, Status, pool::overlapping};
use ipnet::IpNet;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// What a user sends to create a pool.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    #[schema(value_type = String, example = "10.0.0.0/24")]
    pub cidr: IpNet,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub reserve_gateway: bool,
    #[serde(default)]
    #[schema(example = json!(["10.0.0.10-10.0.0.50"]))]
    pub static_ranges: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A pool as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    pub id: u64,
    pub name: String,
    pub cidr: IpNet,
    pub description: Option<String>,
    pub reserve_gateway: bool,
    pub static_ranges: Vec<String>,
    pub created: jiff::Timestamp,
    /// Held addresses by status, kept in step with the records in the same transaction.
    pub allocated: u64,
    pub reserved: u64,
    pub quarantine: u64,
}

/// A pool's numbers. IPv6 pools can be larger than any integer type JSON readers handle, so
/// counts beyond 2^64 saturate.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct PoolStats {
    pub total: u64,
    pub available: u64,
    pub allocated: u64,
    pub reserved: u64,
    pub quarantine: u64,
    /// Held addresses / total, from 0 to 1.
    pub utilization: f64,
}

impl Pool {
    pub fn layout(&self) -> Result<Layout> {
        Ok(Layout::new(
            self.cidr,
            self.reserve_gateway,
            &self.static_ranges,
        )?)
    }

    pub fn stats(&self) -> PoolStats {
        let total = self.layout().map(|l| l.total()).unwrap_or_default();
        let held = (self.allocated + self.reserved + self.quarantine) as u128;
        PoolStats {
            total: u64::try_from(total).unwrap_or(u64::MAX),
            available: u64::try_from(total.saturating_sub(held)).unwrap_or(u64::MAX),
            allocated: self.allocated,
            reserved: self.reserved,
            quarantine: self.quarantine,
            utilization: if total == 0 {
                0.0
            } else {
                held as f64 / total as f64
            },
        }
    }

    pub(crate) fn count_mut(&mut self, status: Status) -> Option<&mut u64> {
        match status {
            Status::Available => None,
            Status::Allocated => Some(&mut self.allocated),
            Status::Reserved => Some(&mut self.reserved),
            Status::Quarantine => Some(&mut self.quarantine),
        }
    }
}

fn span_of(cidr: &IpNet) -> (Family, Span) {
    let family = Family::of(cidr.addr());
    let span = Span {
        start: IpKey::from(cidr.network()).value,
        end: IpKey::from(cidr.broadcast()).value,
    };
    (family, span)
}

/// Resolves `{pool}` of a URL: an id if it is all digits and such a pool exists, else a name.
fn resolve(
    pools: &impl ReadableTable<u64, &'static [u8]>,
    names: &impl ReadableTable<&'static str, u64>,
    id_or_name: &str,
) -> Result<Pool> {
    if let Ok(id) = id_or_name.parse::<u64>()
        && let Some(p) = get_json(pools, "pools", id)?
    {
        return Ok(p);
    }
    let id = names
        .get(id_or_name)?
        .map(|g| g.value())
        .ok_or_else(|| StoreError::NotFound(format!("pool {id_or_name:?}")))?;
    get_json(pools, "pools", id)?
        .ok_or_else(|| StoreError::NotFound(format!("pool {id_or_name:?}")))
}

/// The pool whose CIDR holds the address, if any: one range look-up.
fn containing(
    spans: &impl ReadableTable<(u8, u128), u64>,
    pools: &impl ReadableTable<u64, &'static [u8]>,
    key: IpKey,
) -> Result<Option<Pool>> {
    let f = key.family.as_u8();
    let Some(entry) = spans.range((f, 0)..=(f, key.value))?.next_back() else {
        return Ok(None);
    };
    let id = entry?.1.value();
    let pool: Option<Pool> = get_json(pools, "pools", id)?;
    Ok(pool.filter(|p| p.cidr.contains(&key.ip())))
}

impl Reader {
    pub fn pool(&self, id_or_name: &str) -> Result<Pool> {
        resolve(self.t.pools()?, self.t.pool_names()?, id_or_name)
    }

    pub fn pool_by_id(&self, id: u64) -> Result<Option<Pool>> {
        get_json(self.t.pools()?, "pools", id)
    }

    /// Every pool, in address order (IPv4 first).
    pub fn pools(&self) -> Result<Vec<Pool>> {
        let mut out = Vec::new();
        for entry in self.t.pool_spans()?.iter()? {
            let id = entry?.1.value();
            if let Some(p) = self.pool_by_id(id)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    pub fn pool_containing(&self, key: IpKey) -> Result<Option<Pool>> {
        containing(self.t.pool_spans()?, self.t.pools()?, key)
    }
}

impl<'t> Writer<'t> {
    pub fn pool(&self, id_or_name: &str) -> Result<Pool> {
        resolve(
            self.t.pools.table()?,
            self.t.pool_names.table()?,
            id_or_name,
        )
    }

    pub fn pool_containing(&self, key: IpKey) -> Result<Option<Pool>> {
        containing(self.t.pool_spans.table()?, self.t.pools.table()?, key)
    }

    pub(crate) fn save_pool(&mut self, pool: &Pool) -> Result<()> {
        self.t.pools.insert(pool.id, encode(pool).as_slice())?;
        Ok(())
    }

    /// Creates a pool: checks the name, the layout and overlaps, fills its free index and
    /// records its gateway as reserved.
    pub fn create_pool(&mut self, spec: &PoolSpec, actor: &str) -> Result<Pool> {
        let name = spec.name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(StoreError::Invalid(
                "name must be 1 to 64 characters".into(),
            ));
        }
        if name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StoreError::Invalid(
                "name must not be all digits (it would read as a pool id)".into(),
            ));
        }
        let layout = Layout::new(spec.cidr, spec.reserve_gateway, &spec.static_ranges)?;
        if self.t.pool_names.get(name)?.is_some() {
            return Err(StoreError::PoolNameTaken(name.to_string()));
        }
        let (family, span) = span_of(&spec.cidr);
        let f = family.as_u8();
        let mut existing = Vec::new();
        if let Some(entry) = self.t.pool_spans.range((f, 0)..=(f, span.end))?.next_back() {
            let id = entry?.1.value();
            if let Some(p) = get_json::<u64, Pool>(self.t.pools.table()?, "pools", id)? {
                existing.push((span_of(&p.cidr).1, p));
            }
        }
        if let Some(p) = overlapping(span, existing.iter().map(|(s, p)| (*s, p))) {
            return Err(StoreError::PoolOverlap {
                cidr: spec.cidr.to_string(),
                name: p.name.clone(),
                existing: p.cidr.to_string(),
            });
        }
        let description = spec
            .description
            .clone()
            .map(|d| crate::ipam::record::bounded("description", d, 1000))
            .transpose()?;
        let mut pool = Pool {
            id: self.next_id("next_pool_id")?,
            name: name.to_string(),
            cidr: spec.cidr,
            description,
            reserve_gateway: spec.reserve_gateway,
            static_ranges: spec.static_ranges.clone(),
            created: self.now,
            allocated: 0,
            reserved: 0,
            quarantine: 0,
        };
        self.t.pool_names.insert(name, pool.id)?;
        self.t.pool_spans.insert((f, span.start), pool.id)?;
        alloc::init(&mut self.index(pool.id), &layout)?;
        if let Some(g) = layout.gateway {
            let mut rec =
                Record::available(layout.key(g).ip(), pool.id, AddrType::Static, self.now);
            rec.status = Status::Reserved;
            rec.description = Some("gateway".into());
            pool.reserved += 1;
            self.put_record(None, &rec, "reserve", actor)?;
        }
        self.save_pool(&pool)?;
        Ok(pool)
    }

    /// Deletes a pool with everything it indexes. Refused while it holds allocations, unless
    /// forced; refused, forced or not, while it is the overlay pool or a node's peer pool
    /// (nodes would be left pointing at nothing). The history of its addresses is kept.
    pub fn delete_pool(&mut self, id_or_name: &str, force: bool) -> Result<Pool> {
        let pool = self.pool(id_or_name)?;
        if let Some(role) = self.pool_role(pool.id)? {
            return Err(StoreError::PoolReferenced {
                pool: pool.name.clone(),
                role,
            });
        }
        if pool.allocated > 0 && !force {
            return Err(StoreError::PoolInUse {
                pool: pool.name.clone(),
                held: pool.allocated,
            });
        }
        let (family, span) = span_of(&pool.cidr);
        let f = family.as_u8();
        let id = pool.id;
        let mut gone = Vec::new();
        for e in self.t.records.range((f, span.start)..=(f, span.end))? {
            let (k, v) = e?;
            gone.push((k.value().1, super::decode_record(v.value())?));
        }
        for (v, rec) in &gone {
            for t in crate::ipam::search::terms(rec) {
                self.t.search.remove((t.as_str(), f, *v))?;
            }
        }
        self.t
            .records
            .remove_range((f, span.start)..=(f, span.end))?;
        for status in [Status::Allocated, Status::Reserved, Status::Quarantine] {
            let s = status.as_u8();
            self.t
                .by_status
                .remove_range((s, f, span.start)..=(s, f, span.end))?;
        }
        self.t.fresh.remove_range((id, 0)..=(id, u128::MAX))?;
        self.t
            .queue
            .remove_range((id, 0, 0)..=(id, u8::MAX, u64::MAX))?;
        self.t.queued.remove_range((id, 0)..=(id, u128::MAX))?;
        self.t.idempotency.remove_range((id, "")..(id + 1, ""))?;
        self.t.pool_spans.remove((f, span.start))?;
        self.t.pool_names.remove(pool.name.as_str())?;
        self.t.pools.remove(id)?;
        Ok(pool)
    }

    pub(crate) fn index(&mut self, pool: u64) -> PoolIndex<'_, 't> {
        PoolIndex {
            t: &mut self.t,
            pool,
        }
    }
}

type FreshEntry<'a> = std::result::Result<
    (
        redb::AccessGuard<'a, (u64, u128)>,
        redb::AccessGuard<'a, u128>,
    ),
    redb::StorageError,
>;

/// A `fresh` table entry as the run it stands for.
fn run(e: FreshEntry<'_>) -> Result<Span> {
    let (k, end) = e?;
    Ok(Span {
        start: k.value().1,
        end: end.value(),
    })
}

/// One pool's free index in redb: see `ipam::alloc`.
pub(crate) struct PoolIndex<'a, 't> {
    t: &'a mut WriteTables<'t>,
    pool: u64,
}

impl FreeIndex for PoolIndex<'_, '_> {
    type Error = StoreError;

    fn fresh_floor(&mut self, v: u128) -> Result<Option<Span>> {
        let p = self.pool;
        self.t
            .fresh
            .range((p, 0)..=(p, v))?
            .next_back()
            .map(run)
            .transpose()
    }

    fn fresh_ceil(&mut self, v: u128) -> Result<Option<Span>> {
        let p = self.pool;
        self.t
            .fresh
            .range((p, v)..=(p, u128::MAX))?
            .next()
            .map(run)
            .transpose()
    }

    fn fresh_insert(&mut self, span: Span) -> Result<()> {
        self.t.fresh.insert((self.pool, span.start), span.end)?;
        Ok(())
    }

    fn fresh_remove(&mut self, start: u128) -> Result<()> {
        self.t.fresh.remove((self.pool, start))?;
        Ok(())
    }

    fn released_push(&mut self, region: Region, v: u128) -> Result<()> {
        let seq = self
            .t
            .meta
            .get("next_release_seq")?
            .map(|g| g.value())
            .unwrap_or(0)
            + 1;
        self.t.meta.insert("next_release_seq", seq)?;
        self.t.queue.insert((self.pool, region as u8, seq), v)?;
        self.t.queued.insert((self.pool, v), (region as u8, seq))?;
        Ok(())
    }

    fn released_front(&mut self, region: Region) -> Result<Option<u128>> {
        let (p, r) = (self.pool, region as u8);
        match self.t.queue.range((p, r, 0)..=(p, r, u64::MAX))?.next() {
            Some(e) => Ok(Some(e?.1.value())),
            None => Ok(None),
        }
    }

    fn released_remove(&mut self, v: u128) -> Result<bool> {
        let Some(slot) = self.t.queued.remove((self.pool, v))?.map(|g| g.value()) else {
            return Ok(false);
        };
        self.t.queue.remove((self.pool, slot.0, slot.1))?;
        Ok(true)
    }

    fn released_contains(&mut self, v: u128) -> Result<bool> {
        Ok(self.t.queued.get((self.pool, v))?.is_some())
    }
}

/// Free addresses of one pool in address order, from `from` on: the merge of its fresh runs
/// and its released addresses. Used to list `status=available` without storing them.
pub(crate) fn free_from(
    r: &Reader,
    pool: u64,
    from: u128,
) -> Result<impl Iterator<Item = Result<u128>> + '_> {
    // The run holding `from`, if any, then every later run.
    let first = match r.t.fresh()?.range((pool, 0)..=(pool, from))?.next_back() {
        Some(e) => {
            let (k, end) = e?;
            let start = k.value().1;
            (end.value() >= from).then_some(start)
        }
        None => None,
    };
    let runs =
        r.t.fresh()?
            .range((pool, first.unwrap_or(from))..=(pool, u128::MAX))?
            .map(move |e| {
                let (k, end) = e?;
                Ok::<_, StoreError>((k.value().1.max(from), end.value()))
            })
            .flat_map(|run| -> Box<dyn Iterator<Item = Result<u128>>> {
                match run {
                    Ok((s, e)) => Box::new((s..=e).map(Ok)),
                    Err(err) => Box::new(std::iter::once(Err(err))),
                }
            });
    let released =
        r.t.queued()?
            .range((pool, from)..=(pool, u128::MAX))?
            .map(|e| Ok::<_, StoreError>(e?.0.value().1));
    Ok(MergeAsc {
        a: runs.peekable(),
        b: released.peekable(),
    })
}

/// Merges two ascending streams of addresses (they never share an address).
struct MergeAsc<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for MergeAsc<A, B>
where
    A: Iterator<Item = Result<u128>>,
    B: Iterator<Item = Result<u128>>,
{
    type Item = Result<u128>;
    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(Ok(x)), Some(Ok(y))) => {
                if x <= y {
                    self.a.next()
                } else {
                    self.b.next()
                }
            }
            (Some(Err(_)), _) | (Some(_), None) => self.a.next(),
            (None, Some(_)) | (Some(Ok(_)), Some(Err(_))) => self.b.next(),
            (None, None) => None,
        }
    }
}
