//! Address records: every change goes through [`Writer::change`], which keeps the record, the
//! free index, the status index, the pool's counters and the history in step, in the
//! transaction of the change.

use super::pools::Pool;
use super::{Reader, Result, StoreError, Writer, decode, decode_record, encode, encode_record};
use crate::ipam::alloc::{self, Region};
use crate::ipam::{AddrType, Facts, IpKey, Layout, Record, RecordRuleError, Status, search};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One change to an address, as its history keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: u64,
    #[schema(value_type = String)]
    pub at: jiff::Timestamp,
    /// The token or user that made the change.
    pub actor: String,
    /// allocate, release, reserve, quarantine, edit, device-sync, device-release, import.
    pub action: String,
    pub before: Option<Record>,
    pub after: Option<Record>,
}

/// A change to some address, as the latest changes list it.
#[derive(Debug, Clone)]
pub struct RecentEvent {
    pub address: IpAddr,
    pub event: Event,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocationRequest {
    /// A specific address; without it, the next free one.
    #[schema(value_type = Option<String>)]
    pub address: Option<IpAddr>,
    pub owner: Option<String>,
    pub hostname: Option<String>,
}

/// A change to an address's record. Absent fields stay as they are; an empty string clears.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressPatch {
    pub status: Option<Status>,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub hostname: Option<String>,
    pub mac: Option<String>,
    pub platform: Option<String>,
    pub manufacturer: Option<String>,
}

/// The type an address has before anything is stored for it.
pub(crate) fn default_type(layout: &Layout, v: u128) -> AddrType {
    match Region::of(layout, v) {
        Region::Static => AddrType::Static,
        Region::Outside => AddrType::Dhcp,
    }
}

pub(crate) fn load(
    records: &impl ReadableTable<(u8, u128), &'static [u8]>,
    key: IpKey,
) -> Result<Option<Record>> {
    match records.get((key.family.as_u8(), key.value))? {
        Some(g) => Ok(Some(decode_record(g.value())?)),
        None => Ok(None),
    }
}

fn action_for(status: Status) -> &'static str {
    match status {
        Status::Available => "release",
        Status::Allocated => "allocate",
        Status::Reserved => "reserve",
        Status::Quarantine => "quarantine",
    }
}

impl Reader {
    /// The record of an address: stored, or what an untouched address of its pool looks like.
    pub fn address(&self, ip: IpAddr) -> Result<Record> {
        let key = IpKey::from(ip);
        if let Some(r) = load(self.t.records()?, key)? {
            return Ok(r);
        }
        let pool = self
            .pool_containing(key)?
            .ok_or(StoreError::OutsideEveryPool { address: ip })?;
        let layout = pool.layout()?;
        if !layout.is_usable(key.value) {
            return Err(StoreError::NotUsable(ip));
        }
        Ok(Record::available(
            ip,
            pool.id,
            default_type(&layout, key.value),
            pool.created,
        ))
    }

    pub fn history(&self, ip: IpAddr) -> Result<Vec<Event>> {
        let key = IpKey::from(ip);
        let f = key.family.as_u8();
        let mut out = Vec::new();
        for e in self
            .t
            .history()?
            .range((f, key.value, 0)..=(f, key.value, u64::MAX))?
        {
            out.push(decode("history", e?.1.value())?);
        }
        Ok(out)
    }

    /// The latest `limit` changes across every address, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<RecentEvent>> {
        let mut out = Vec::with_capacity(limit.min(1000));
        for e in self.t.events()?.iter()?.rev().take(limit) {
            let (id, key) = e?;
            let (id, (f, v)) = (id.value(), key.value());
            let family = crate::ipam::Family::from_u8(f)
                .ok_or_else(|| StoreError::corrupt("events", format!("family {f}")))?;
            let event = match self.t.history()?.get((f, v, id))? {
                Some(g) => decode("history", g.value())?,
                None => {
                    return Err(StoreError::corrupt(
                        "events",
                        format!("event {id} has no history entry"),
                    ));
                }
            };
            out.push(RecentEvent {
                address: IpKey::new(family, v).ip(),
                event,
            });
        }
        Ok(out)
    }

    /// The stored records of a pool in address order (for export).
    pub fn pool_records(&self, pool: &Pool) -> Result<Vec<Record>> {
        let layout = pool.layout()?;
        let span = layout.span();
        let f = layout.family.as_u8();
        let mut out = Vec::new();
        for e in self.t.records()?.range((f, span.start)..=(f, span.end))? {
            out.push(decode_record(e?.1.value())?);
        }
        Ok(out)
    }
}

/// What happens to a record that ends up available: a learned (dhcp) one is dropped, its
/// history kept; a static one stays with its history.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFreed {
    Keep,
    DropDhcp,
}

/// How a change is recorded: who made it, under which action name (derived from the new
/// status when `None`), and what becomes of a freed dhcp record.
#[derive(Clone, Copy)]
pub(crate) struct How<'a> {
    pub action: Option<&'a str>,
    pub actor: &'a str,
    pub freed: WhenFreed,
}

impl<'a> How<'a> {
    pub fn by(actor: &'a str) -> Self {
        How {
            action: None,
            actor,
            freed: WhenFreed::Keep,
        }
    }

    pub fn action(self, action: &'a str) -> Self {
        How {
            action: Some(action),
            ..self
        }
    }

    pub fn dropping_dhcp(self) -> Self {
        How {
            freed: WhenFreed::DropDhcp,
            ..self
        }
    }
}

impl Writer<'_> {
    pub fn address(&self, ip: IpAddr) -> Result<Option<Record>> {
        load(self.t.records.table()?, IpKey::from(ip))
    }

    /// Writes a record and its event, and keeps the status index in step. Does not touch the
    /// free index or the pool's counters: see [`Writer::change`].
    pub(crate) fn put_record(
        &mut self,
        before: Option<&Record>,
        after: &Record,
        action: &str,
        actor: &str,
    ) -> Result<()> {
        let key = IpKey::from(after.address);
        self.reindex(key, before, Some(after))?;
        self.t.records.insert(
            (key.family.as_u8(), key.value),
            encode_record(after).as_slice(),
        )?;
        self.append_event(key, action, actor, before.cloned(), Some(after.clone()))
    }

    /// Keeps the secondary indexes (status, search terms) in step with a record that goes
    /// from `before` to `after` (`None`: absent).
    pub(crate) fn reindex(
        &mut self,
        key: IpKey,
        before: Option<&Record>,
        after: Option<&Record>,
    ) -> Result<()> {
        let (f, v) = (key.family.as_u8(), key.value);
        let held = |r: Option<&Record>| r.map(|r| r.status).filter(|s| *s != Status::Available);
        if held(before) != held(after) {
            if let Some(s) = held(before) {
                self.t.by_status.remove((s.as_u8(), f, v))?;
            }
            if let Some(s) = held(after) {
                self.t.by_status.insert((s.as_u8(), f, v), ())?;
            }
        }
        let old = before.map(search::terms).unwrap_or_default();
        let new = after.map(search::terms).unwrap_or_default();
        if old != new {
            for t in &old {
                self.t.search.remove((t.as_str(), f, v))?;
            }
            for t in &new {
                self.t.search.insert((t.as_str(), f, v), ())?;
            }
        }
        Ok(())
    }

    pub(crate) fn append_event(
        &mut self,
        key: IpKey,
        action: &str,
        actor: &str,
        before: Option<Record>,
        after: Option<Record>,
    ) -> Result<()> {
        let id = self.next_id("next_event_id")?;
        let event = Event {
            id,
            at: self.now,
            actor: actor.to_string(),
            action: action.to_string(),
            before,
            after,
        };
        self.t.history.insert(
            (key.family.as_u8(), key.value, id),
            encode(&event).as_slice(),
        )?;
        self.t.events.insert(id, (key.family.as_u8(), key.value))?;
        Ok(())
    }

    /// The one path by which an address changes. `edit` mutates the record; this keeps the
    /// free index, counters, status index and history in step with what it did.
    pub(crate) fn change(
        &mut self,
        pool: &mut Pool,
        layout: &Layout,
        ip: IpAddr,
        how: How<'_>,
        edit: impl FnOnce(&mut Record) -> Result<()>,
    ) -> Result<Record> {
        let How {
            action,
            actor,
            freed,
        } = how;
        let key = IpKey::from(ip);
        let v = key.value;
        if !layout.cidr.contains(&ip) {
            return Err(StoreError::NotInPool {
                address: ip,
                pool: pool.name.clone(),
            });
        }
        if !layout.is_usable(v) {
            return Err(StoreError::NotUsable(ip));
        }
        if layout.gateway == Some(v) {
            return Err(StoreError::Gateway(ip));
        }
        let before = load(self.t.records.table()?, key)?;
        let mut rec = before
            .clone()
            .unwrap_or_else(|| Record::available(ip, pool.id, default_type(layout, v), self.now));
        edit(&mut rec).map_err(|e| match e {
            StoreError::RecordRule(RecordRuleError::NotAvailable { status }) => StoreError::Taken {
                address: ip,
                status: status.as_str(),
            },
            other => other,
        })?;
        // A change that changes nothing writes nothing and leaves no event (re-imports,
        // repeated PATCHes).
        let unchanged = match &before {
            Some(b) => *b == rec,
            None => !rec.worth_storing(),
        };
        if unchanged {
            return Ok(rec);
        }
        rec.updated = self.now;
        let old = before.as_ref().map_or(Status::Available, |b| b.status);
        let new = rec.status;
        match (old == Status::Available, new == Status::Available) {
            (true, false) if !alloc::take(&mut self.index(pool.id), v)? => {
                return Err(StoreError::corrupt(
                    "fresh",
                    format!("{ip} is available but not in the free index"),
                ));
            }
            (false, true) => alloc::give_back(&mut self.index(pool.id), layout, v)?,
            _ => {}
        }
        if old != new {
            if let Some(c) = pool.count_mut(old) {
                *c = c.saturating_sub(1);
            }
            if let Some(c) = pool.count_mut(new) {
                *c += 1;
            }
            self.save_pool(pool)?;
        }
        let action = action.unwrap_or(if old != new { action_for(new) } else { "edit" });
        // A dhcp record that is released is dropped (its history stays); one that was
        // available already and is only being edited is kept.
        let released = old != Status::Available && new == Status::Available;
        if released && rec.addr_type == AddrType::Dhcp && freed == WhenFreed::DropDhcp {
            self.reindex(key, before.as_ref(), None)?;
            self.t.records.remove((key.family.as_u8(), v))?;
            self.append_event(key, action, actor, before, None)?;
        } else {
            self.put_record(before.as_ref(), &rec, action, actor)?;
        }
        Ok(rec)
    }

    /// Allocates the next free address of a pool, or the one asked for. With an idempotency
    /// key, a retry gets the address the first attempt got.
    pub fn allocate(
        &mut self,
        pool: &str,
        req: &AllocationRequest,
        idempotency_key: Option<&str>,
        actor: &str,
    ) -> Result<Record> {
        self.allocate_once(pool, req, idempotency_key, actor)
            .map(|(rec, _)| rec)
    }

    /// [`Writer::allocate`], also saying whether the answer replays an earlier allocation
    /// with the same idempotency key (so it is not counted twice).
    pub fn allocate_once(
        &mut self,
        pool: &str,
        req: &AllocationRequest,
        idempotency_key: Option<&str>,
        actor: &str,
    ) -> Result<(Record, bool)> {
        let mut pool = self.pool(pool)?;
        let layout = pool.layout()?;
        if let Some(k) = idempotency_key
            && let Some(g) = self.t.idempotency.get((pool.id, k))?
        {
            let (f, v) = g.value();
            let family = crate::ipam::Family::from_u8(f)
                .ok_or_else(|| StoreError::corrupt("idempotency", "bad family"))?;
            let key = IpKey::new(family, v);
            return match load(self.t.records.table()?, key)? {
                Some(rec) if rec.status == Status::Allocated => Ok((rec, true)),
                // Replaying a stale answer would hand the caller an address it no longer holds.
                _ => Err(StoreError::IdempotencyKeyUsed {
                    key: k.to_string(),
                    address: key.ip(),
                }),
            };
        }
        let owner = req
            .owner
            .clone()
            .map(|o| crate::ipam::record::bounded("owner", o, 200))
            .transpose()?;
        let facts = Facts {
            hostname: req.hostname.clone(),
            ..Facts::default()
        }
        .validated()?;
        let ip = match req.address {
            Some(ip) => ip,
            None => {
                let v = alloc::next_candidate(&mut self.index(pool.id), &layout)?
                    .ok_or_else(|| StoreError::Exhausted(pool.name.clone()))?;
                layout.key(v).ip()
            }
        };
        let rec = self.change(&mut pool, &layout, ip, How::by(actor), |r| {
            r.set_status(Status::Allocated)?;
            r.addr_type = AddrType::Static;
            r.owner = owner;
            r.hostname = facts.hostname;
            Ok(())
        })?;
        if let Some(k) = idempotency_key {
            let key = IpKey::from(ip);
            self.t
                .idempotency
                .insert((pool.id, k), (key.family.as_u8(), key.value))?;
        }
        Ok((rec, false))
    }

    fn pool_of(&self, ip: IpAddr) -> Result<(Pool, Layout)> {
        let pool = self
            .pool_containing(IpKey::from(ip))?
            .ok_or(StoreError::OutsideEveryPool { address: ip })?;
        let layout = pool.layout()?;
        Ok((pool, layout))
    }

    /// [`Writer::change`] for an address named alone: its pool is looked up first.
    fn change_at(
        &mut self,
        ip: IpAddr,
        how: How<'_>,
        edit: impl FnOnce(&mut Record) -> Result<()>,
    ) -> Result<Record> {
        let (mut pool, layout) = self.pool_of(ip)?;
        self.change(&mut pool, &layout, ip, how, edit)
    }

    /// Releases an allocated address: it goes to the back of the free line.
    pub fn release(&mut self, ip: IpAddr, actor: &str) -> Result<Record> {
        self.change_at(ip, How::by(actor).dropping_dhcp(), |r| {
            if r.status != Status::Allocated {
                return Err(StoreError::NotAllocated {
                    address: ip,
                    status: r.status.as_str(),
                });
            }
            Ok(r.set_status(Status::Available)?)
        })
    }

    /// Changes status, description, owner or facts of an address.
    pub fn patch(&mut self, ip: IpAddr, patch: &AddressPatch, actor: &str) -> Result<Record> {
        let (mut pool, layout) = self.pool_of(ip)?;
        let facts = Facts {
            hostname: patch.hostname.clone().filter(|s| !s.is_empty()),
            mac: patch.mac.clone().filter(|s| !s.is_empty()),
            platform: patch.platform.clone().filter(|s| !s.is_empty()),
            manufacturer: patch.manufacturer.clone().filter(|s| !s.is_empty()),
        }
        .validated()?;
        let owner = patch
            .owner
            .clone()
            .map(|o| crate::ipam::record::bounded("owner", o, 200))
            .transpose()?;
        self.change(
            &mut pool,
            &layout,
            ip,
            How::by(actor).dropping_dhcp(),
            |r| {
                if let Some(s) = patch.status
                    && s != r.status
                {
                    r.set_status(s)?;
                }
                if let Some(d) = &patch.description {
                    r.set_description(Some(d.clone()).filter(|d| !d.is_empty()))?;
                }
                if let Some(o) = owner {
                    r.owner = Some(o).filter(|o| !o.is_empty());
                }
                // A field given in the patch takes its checked value; "" has become None.
                let Facts {
                    hostname,
                    mac,
                    platform,
                    manufacturer,
                } = facts;
                for (given, field, value) in [
                    (&patch.hostname, &mut r.hostname, hostname),
                    (&patch.mac, &mut r.mac, mac),
                    (&patch.platform, &mut r.platform, platform),
                    (&patch.manufacturer, &mut r.manufacturer, manufacturer),
                ] {
                    if given.is_some() {
                        *field = value;
                    }
                }
                Ok(())
            },
        )
    }

    /// Applies a checked import: each row sets one address of the pool to the state it gives.
    /// Any failing row fails the whole transaction, so nothing of the file is written.
    pub fn import(&mut self, pool: &str, rows: &[ImportRow], actor: &str) -> Result<usize> {
        let mut pool = self.pool(pool)?;
        let layout = pool.layout()?;
        for row in rows {
            let line_err = |e: StoreError| StoreError::Import {
                line: row.line,
                reason: e.to_string(),
            };
            let facts = row
                .facts
                .clone()
                .validated()
                .map_err(|e| line_err(e.into()))?;
            let owner = row
                .owner
                .clone()
                .map(|o| crate::ipam::record::bounded("owner", o, 200))
                .transpose()
                .map_err(|e| line_err(e.into()))?;
            // The gateway's row in an export says reserved: importing it back changes nothing.
            if layout.gateway == Some(IpKey::from(row.address).value)
                && row.status == Status::Reserved
            {
                continue;
            }
            self.change(
                &mut pool,
                &layout,
                row.address,
                How::by(actor).action("import"),
                |r| {
                    // An import states the address's state outright, whatever it was.
                    r.status = row.status;
                    if row.status != Status::Reserved {
                        r.description = None;
                    }
                    if let Some(d) = &row.description {
                        r.set_description(Some(d.clone()))?;
                    }
                    if let Some(t) = row.addr_type {
                        r.addr_type = t;
                    }
                    r.set_facts(facts);
                    r.owner = owner;
                    Ok(())
                },
            )
            .map_err(line_err)?;
        }
        Ok(rows.len())
    }
}

/// One checked row of an import file.
#[derive(Debug, Clone)]
pub struct ImportRow {
    /// The line of the file it came from, for error messages.
    pub line: u64,
    pub address: IpAddr,
    pub status: Status,
    pub addr_type: Option<AddrType>,
    pub facts: Facts,
    pub owner: Option<String>,
    pub description: Option<String>,
}
