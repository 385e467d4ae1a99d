//! The address pages: the IPAM table with its filters, and one address's detail, changes and
//! history.
//!
//! `GET /addresses` lists a page of addresses (the store's cursor listing) with counts by
//! status for the same filter (`Reader::count`: exact from the pools' counters when the
//! filter is a pool and/or a status, else counted within a budget and shown as "N+").
//! `POST /addresses/allocate` hands out the next free address of a pool; `GET`/`POST
//! /addresses/{ip}` show an address with its history and change it through the store's own
//! write paths, so every rule stays in `ipam::record` and `store::records`.

use super::{Frame, compact, render, see_other};
use crate::ipam::{AddrType, Record, Status};
use crate::store::{
    AddressFilter, AddressPatch, AllocationRequest, COUNT_BUDGET, Count, Event, Reader,
    StatusCounts, StoreError,
};
use crate::web::AppState;
use crate::web::error::{ApiError, PageError};
use crate::web::session::{AdminForm, SignedIn};
use askama::Template;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;

/// Rows per page of the table.
const PAGE_ROWS: usize = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/addresses", get(list))
        .route("/addresses/allocate", post(allocate))
        .route("/addresses/{ip}", get(detail).post(act))
}

/// A filter value the table cannot use: answered 400, naming the parameter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum FilterError {
    #[error("pool: there is no pool {0:?}")]
    UnknownPool(String),
    #[error("status: {0}")]
    Status(String),
    #[error("type: {0}")]
    Type(String),
    #[error("active: unknown value {0:?} (expected yes or no)")]
    Active(String),
    #[error("q: longer than {} characters", crate::ipam::search::MAX_QUERY)]
    QueryTooLong,
}

impl From<FilterError> for PageError {
    fn from(e: FilterError) -> Self {
        PageError::Api(ApiError::bad_request(e.to_string()))
    }
}

/// The filters of the table as typed in the URL ("" = any): they refill the form and every
/// link keeps them, so a filtered view is a bookmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Filters {
    pool: String,
    status: String,
    addr_type: String,
    active: String,
    q: String,
}

impl Filters {
    /// The filters and the cursor of a query string. Unknown parameters are ignored; a repeated
    /// one counts by its last value.
    fn parse(raw: Option<&str>) -> Result<(Filters, Option<String>), PageError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| PageError::Api(ApiError::bad_request(format!("malformed query: {e}"))))?;
        let mut f = Filters::default();
        let mut cursor = None;
        for (k, v) in pairs {
            let v = v.trim().to_string();
            match k.as_str() {
                "pool" => f.pool = v,
                "status" => f.status = v,
                "type" => f.addr_type = v,
                "active" => f.active = v,
                "q" => f.q = v,
                "cursor" => cursor = Some(v).filter(|c| !c.is_empty()),
                _ => {}
            }
        }
        Ok((f, cursor))
    }

    /// The filter in the store's terms, checking each value (the pool against the store).
    fn resolve(&self, r: &Reader) -> Result<Result<AddressFilter, FilterError>, StoreError> {
        let pool = match self.pool.as_str() {
            "" => None,
            name => match r.pool(name) {
                Ok(p) => Some(p.id),
                Err(StoreError::NotFound(_)) => {
                    return Ok(Err(FilterError::UnknownPool(name.to_string())));
                }
                Err(e) => return Err(e),
            },
        };
        Ok(self.check().map(|mut f| {
            f.pool = pool;
            f
        }))
    }

    /// Everything but the pool, which needs the store.
    fn check(&self) -> Result<AddressFilter, FilterError> {
        let status = match self.status.as_str() {
            "" => None,
            s => Some(s.parse::<Status>().map_err(FilterError::Status)?),
        };
        let addr_type = match self.addr_type.as_str() {
            "" => None,
            t => Some(t.parse::<AddrType>().map_err(FilterError::Type)?),
        };
        let active = match self.active.as_str() {
            "" => None,
            "yes" => Some(true),
            "no" => Some(false),
            other => return Err(FilterError::Active(other.to_string())),
        };
        if self.q.len() > crate::ipam::search::MAX_QUERY {
            return Err(FilterError::QueryTooLong);
        }
        Ok(AddressFilter {
            pool: None,
            status,
            addr_type,
            active,
            q: Some(self.q.clone()).filter(|q| !q.is_empty()),
        })
    }

    /// `/addresses` with these filters (only those set) and the cursor.
    fn url(&self, cursor: Option<&str>) -> String {
        let mut pairs: Vec<(&str, &str)> = [
            ("pool", self.pool.as_str()),
            ("status", self.status.as_str()),
            ("type", self.addr_type.as_str()),
            ("active", self.active.as_str()),
            ("q", self.q.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        if let Some(c) = cursor {
            pairs.push(("cursor", c));
        }
        match serde_urlencoded::to_string(&pairs) {
            Ok(q) if !q.is_empty() => format!("/addresses?{q}"),
            _ => "/addresses".to_string(),
        }
    }
}

/// `1234567` as `1,234,567`; past ten million, the compact form of the dashboard.
fn grouped(n: u64) -> String {
    if n >= 10_000_000 {
        return compact(&n);
    }
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count as shown: "at least" counts get a `+`.
fn count_text(c: Count) -> String {
    format!("{}{}", grouped(c.n), if c.more { "+" } else { "" })
}

/// One card of the counts section.
struct CountCard {
    status: &'static str,
    text: String,
    /// The tooltip: what "N+" means.
    title: String,
}

fn count_cards(counts: &StatusCounts) -> Vec<CountCard> {
    Status::ALL
        .into_iter()
        .map(|s| {
            let c = counts.get(s);
            CountCard {
                status: s.as_str(),
                text: count_text(c),
                title: if c.more {
                    format!("at least {} (counting stops early on large results)", c.n)
                } else {
                    c.n.to_string()
                },
            }
        })
        .collect()
}

/// One row of the table: the record and its pool's name.
struct Row {
    rec: Record,
    pool: String,
}

impl Row {
    fn status(&self) -> &'static str {
        self.rec.status.as_str()
    }
    fn addr_type(&self) -> &'static str {
        self.rec.addr_type.as_str()
    }
}

/// What was typed in the allocate form, kept when it is refused.
#[derive(Debug, Clone, Default, Deserialize)]
struct AllocateForm {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    hostname: String,
}

#[derive(Template)]
#[template(path = "addresses.html")]
struct ListPage {
    frame: Frame,
    filters: Filters,
    /// Names of every pool, for the selects.
    pools: Vec<String>,
    rows: Vec<Row>,
    counts: Vec<CountCard>,
    first: String,
    next: Option<String>,
    /// The CSRF token of an admin's allocate form; `None` for a viewer (no form).
    csrf: Option<String>,
    alloc: AllocateForm,
    /// Why the allocate form was refused, and the field it is about.
    alloc_error: Option<(String, Option<&'static str>)>,
}

impl ListPage {
    fn alloc_message(&self) -> Option<&str> {
        self.alloc_error.as_ref().map(|(m, _)| m.as_str())
    }

    /// The message to show after `field` of the allocate form, if it was refused for it.
    fn field_error(&self, field: &str) -> Option<&str> {
        match &self.alloc_error {
            Some((m, Some(f))) if *f == field => Some(m),
            _ => None,
        }
    }

    fn selected(&self, field: &str, value: &str) -> bool {
        let current = match field {
            "pool" => &self.filters.pool,
            "status" => &self.filters.status,
            "type" => &self.filters.addr_type,
            "active" => &self.filters.active,
            _ => return false,
        };
        current == value
    }
}

/// What one read of the table gives: rows, counts, pool names, the next cursor.
/// Counts by filter, reused while nothing is written: counting a filtered view examines up
/// to two budgets of rows (about a millisecond), and a busy view is asked for again and again.
#[derive(Default)]
pub struct CountMemo {
    by_filter: std::sync::Mutex<HashMap<String, (u64, StatusCounts)>>,
}

/// Filters remembered at once; beyond that the memo starts over.
const MEMO_ENTRIES: usize = 256;

impl CountMemo {
    fn get_or(
        &self,
        filter: &AddressFilter,
        generation: u64,
        count: impl FnOnce() -> crate::store::Result<StatusCounts>,
    ) -> crate::store::Result<StatusCounts> {
        let key = format!("{filter:?}");
        let lock = || self.by_filter.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, counts)) = lock().get(&key)
            && *g == generation
        {
            return Ok(*counts);
        }
        let counts = count()?;
        let mut memo = lock();
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(key, (generation, counts));
        Ok(counts)
    }
}

struct Listing {
    rows: Vec<Row>,
    counts: StatusCounts,
    pools: Vec<String>,
    next: Option<String>,
}

/// Reads a page of the table and its counts from one snapshot, on a blocking thread (a
/// filtered page and its count may examine thousands of rows).
async fn read_listing(
    s: &AppState,
    filters: Filters,
    cursor: Option<String>,
) -> Result<Listing, PageError> {
    let store = s.store.clone();
    let memo = s.counts.clone();
    let read = tokio::task::spawn_blocking(move || {
        store.read(|r| {
            let filter = match filters.resolve(r)? {
                Ok(f) => f,
                Err(e) => return Ok(Err(e)),
            };
            let all = r.pools()?;
            let names: HashMap<u64, String> = all.iter().map(|p| (p.id, p.name.clone())).collect();
            let page = r.list(&filter, cursor.as_deref(), PAGE_ROWS)?;
            let counts = memo.get_or(&filter, r.generation(), || r.count(&filter, COUNT_BUDGET))?;
            let rows = page
                .items
                .into_iter()
                .map(|rec| Row {
                    pool: names.get(&rec.pool).cloned().unwrap_or_default(),
                    rec,
                })
                .collect();
            Ok(Ok(Listing {
                rows,
                counts,
                pools: all.into_iter().map(|p| p.name).collect(),
                next: page.next_cursor,
            }))
        })
    })
    .await
    .map_err(|e| PageError::Api(ApiError::internal(&e)))??;
    Ok(read?)
}

/// Renders the table page for `filters` (with an allocate form's refusal, if any).
async fn list_page(
    s: &AppState,
    user: SignedIn,
    headers: &HeaderMap,
    filters: Filters,
    cursor: Option<String>,
    refused: Option<(Refusal, AllocateForm)>,
) -> Result<Response, PageError> {
    let listing = read_listing(s, filters.clone(), cursor).await?;
    let csrf = matches!(user.role, crate::store::Role::Admin).then(|| user.csrf.clone());
    let frame = Frame::signed_in("addresses", "Addresses", user, headers);
    let (status, alloc_error, alloc) = match refused {
        Some((r, typed)) => (r.status, Some((r.message, r.field)), typed),
        None => (
            StatusCode::OK,
            None,
            AllocateForm {
                pool: filters.pool.clone(),
                ..AllocateForm::default()
            },
        ),
    };
    let page = ListPage {
        frame,
        first: filters.url(None),
        next: listing.next.as_deref().map(|c| filters.url(Some(c))),
        filters,
        pools: listing.pools,
        rows: listing.rows,
        counts: count_cards(&listing.counts),
        csrf,
        alloc,
        alloc_error,
    };
    Ok(render(status, &page.frame, &page, s.secure_cookies))
}

/// The IPAM table. Any signed-in user; a bad filter value is a 400 page naming it.
async fn list(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let (filters, cursor) = Filters::parse(raw.as_deref())?;
    list_page(&s, user, &headers, filters, cursor, None).await
}

/// A refused write as the page shows it: status, message, and the form field it is about.
struct Refusal {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

/// The refusal of a write as the page shows it, or the error itself when it is ours (5xx).
fn refusal(e: StoreError) -> Result<Refusal, PageError> {
    use crate::ipam::RecordRuleError as R;
    let field = match &e {
        StoreError::RecordRule(r) => Some(match r {
            R::BadMac(_) => "mac",
            R::BadHostname(_) => "hostname",
            R::DescriptionNotReserved { .. } => "description",
            R::TooLong { field, .. } => field,
            R::NotAvailable { .. } => return refusal_of(e, None),
        }),
        StoreError::NotFound(_) | StoreError::Exhausted(_) => Some("pool"),
        _ => None,
    };
    refusal_of(e, field)
}

fn refusal_of(e: StoreError, field: Option<&'static str>) -> Result<Refusal, PageError> {
    let api = ApiError::from(e);
    if api.status.is_server_error() {
        return Err(PageError::Api(api));
    }
    Ok(Refusal {
        status: api.status,
        message: api.message,
        field,
    })
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Allocates the next free address of a pool. Admin; a refusal (unknown pool, pool full,
/// bad hostname) shows the table again with the message and what was typed.
async fn allocate(
    State(s): State<AppState>,
    headers: HeaderMap,
    f: AdminForm<AllocateForm>,
) -> Result<Response, PageError> {
    let AdminForm { user, form } = f;
    let req = AllocationRequest {
        address: None,
        owner: non_empty(&form.owner),
        hostname: non_empty(&form.hostname),
    };
    let (pool, actor) = (form.pool.clone(), user.name.clone());
    let done = s
        .store
        .write(move |w| w.allocate_once(&pool, &req, None, &actor))
        .await;
    match done {
        Ok((rec, replayed)) => {
            if !replayed {
                s.metrics.allocations.inc();
            }
            let ip = rec.address;
            Ok(see_other(
                &format!("/addresses/{ip}"),
                &format!("Allocated {ip}"),
                s.secure_cookies,
            ))
        }
        Err(e) => {
            let refused = refusal(e)?;
            list_page(
                &s,
                user,
                &headers,
                Filters::default(),
                None,
                Some((refused, form)),
            )
            .await
        }
    }
}

/// One field an event changed, as the timeline shows it ("" = not set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldChange {
    pub field: &'static str,
    pub before: String,
    pub after: String,
}

/// The fields of a record a person cares about, as text. An absent record (never stored, or
/// dropped on release) is an available address: its type and activity are taken from `other`,
/// so that appearing or going is not shown as a change of those.
fn facts_of(r: Option<&Record>, other: Option<&Record>) -> [(&'static str, String); 10] {
    let text =
        |f: fn(&Record) -> Option<&str>| r.and_then(f).map(str::to_string).unwrap_or_default();
    let kept = |f: fn(&Record) -> &'static str| r.or(other).map(f).unwrap_or_default().to_string();
    [
        (
            "status",
            r.map_or("available", |r| r.status.as_str()).to_string(),
        ),
        ("type", kept(|r| r.addr_type.as_str())),
        ("active", kept(|r| if r.active { "yes" } else { "no" })),
        ("hostname", text(|r| r.hostname.as_deref())),
        ("mac", text(|r| r.mac.as_deref())),
        ("platform", text(|r| r.platform.as_deref())),
        ("manufacturer", text(|r| r.manufacturer.as_deref())),
        ("owner", text(|r| r.owner.as_deref())),
        ("description", text(|r| r.description.as_deref())),
        ("device", text(|r| r.device.as_deref())),
    ]
}

/// What an event changed, field by field, in a fixed order (timestamps left out: the event
/// has its own).
pub(crate) fn diff(before: Option<&Record>, after: Option<&Record>) -> Vec<FieldChange> {
    facts_of(before, after)
        .into_iter()
        .zip(facts_of(after, before))
        .filter(|((_, b), (_, a))| a != b)
        .map(|((field, before), (_, after))| FieldChange {
            field,
            before,
            after,
        })
        .collect()
}

/// A timestamp as pages show it.
pub(super) fn when(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// One entry of the timeline.
struct EventView {
    at: String,
    actor: String,
    action: String,
    changes: Vec<FieldChange>,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        EventView {
            at: when(e.at),
            changes: diff(e.before.as_ref(), e.after.as_ref()),
            actor: e.actor,
            action: e.action,
        }
    }
}

/// The actions a record's status allows (the store enforces the same rules; this only
/// decides which forms to show).
pub(crate) fn allowed_actions(status: Status) -> &'static [&'static str] {
    match status {
        Status::Available => &["allocate", "reserve", "quarantine", "edit"],
        Status::Allocated => &["release", "quarantine", "edit"],
        Status::Reserved => &["available", "quarantine", "edit"],
        Status::Quarantine => &["available", "edit"],
    }
}

/// A form of the detail page; which fields count depends on `action`.
#[derive(Debug, Clone, Default, Deserialize)]
struct ActionForm {
    #[serde(default)]
    action: String,
    owner: Option<String>,
    hostname: Option<String>,
    mac: Option<String>,
    platform: Option<String>,
    manufacturer: Option<String>,
    description: Option<String>,
}

#[derive(Template)]
#[template(path = "address.html")]
struct DetailPage {
    frame: Frame,
    ip: String,
    /// `None` for an address no pool holds any more (only its history is left).
    rec: Option<Record>,
    pool: Option<String>,
    /// The pool's gateway: reserved for good, no actions.
    gateway: bool,
    csrf: Option<String>,
    events: Vec<EventView>,
    error: Option<String>,
    /// The field of the refused form the error is about, if one.
    error_field: Option<&'static str>,
    /// What was typed in a refused form.
    typed: Option<ActionForm>,
}

impl DetailPage {
    fn status(&self) -> &'static str {
        self.rec.as_ref().map_or("", |r| r.status.as_str())
    }

    fn addr_type(&self) -> &'static str {
        self.rec.as_ref().map_or("", |r| r.addr_type.as_str())
    }

    fn reserved(&self) -> bool {
        self.rec
            .as_ref()
            .is_some_and(|r| r.status == Status::Reserved)
    }

    /// The message to show after `field` of the form of `action`, if it was refused for it.
    fn field_error(&self, action: &str, field: &str) -> Option<&str> {
        let refused = self.typed.as_ref().is_some_and(|t| t.action == action);
        match (&self.error, self.error_field) {
            (Some(m), Some(f)) if refused && f == field => Some(m),
            _ => None,
        }
    }

    /// Whether to show the form of `action`: admins only, and only what the status allows.
    fn allows(&self, action: &str) -> bool {
        match (&self.rec, &self.csrf) {
            (Some(r), Some(_)) if !self.gateway => allowed_actions(r.status).contains(&action),
            _ => false,
        }
    }

    fn any_action(&self) -> bool {
        [
            "allocate",
            "release",
            "reserve",
            "quarantine",
            "available",
            "edit",
        ]
        .iter()
        .any(|a| self.allows(a))
    }

    /// The value of a field in the form of `action`: what was typed if that form was refused,
    /// else (for the edit form) the record's.
    fn value(&self, action: &str, field: &str) -> String {
        if let Some(t) = self.typed.as_ref().filter(|t| t.action == action) {
            let v = match field {
                "owner" => &t.owner,
                "hostname" => &t.hostname,
                "mac" => &t.mac,
                "platform" => &t.platform,
                "manufacturer" => &t.manufacturer,
                "description" => &t.description,
                _ => &None,
            };
            return v.clone().unwrap_or_default();
        }
        if action != "edit" {
            return String::new();
        }
        let Some(r) = &self.rec else {
            return String::new();
        };
        let v = match field {
            "owner" => &r.owner,
            "hostname" => &r.hostname,
            "mac" => &r.mac,
            "platform" => &r.platform,
            "manufacturer" => &r.manufacturer,
            "description" => &r.description,
            _ => &None,
        };
        v.clone().unwrap_or_default()
    }
}

fn parse_ip(ip: &str) -> Result<IpAddr, PageError> {
    ip.parse().map_err(|_| {
        PageError::Api(ApiError::bad_request(format!(
            "{ip:?} is not an IP address"
        )))
    })
}

/// Renders the detail page of `ip`, with a refused form's message and what was typed.
fn detail_page(
    s: &AppState,
    user: SignedIn,
    headers: &HeaderMap,
    ip: IpAddr,
    refused: Option<(Refusal, ActionForm)>,
) -> Result<Response, PageError> {
    let (rec, pool, gateway, events) = s.store.read(|r| {
        let rec = match r.address(ip) {
            Ok(rec) => Some(rec),
            // Its pool may be gone: the history stays, and is still worth showing.
            Err(StoreError::OutsideEveryPool { .. } | StoreError::NotUsable(_)) => None,
            Err(e) => return Err(e),
        };
        let pool = match &rec {
            Some(rec) => r.pool_by_id(rec.pool)?,
            None => None,
        };
        let gateway = match &pool {
            Some(p) => p.layout()?.gateway == Some(crate::ipam::IpKey::from(ip).value),
            None => false,
        };
        Ok((rec, pool, gateway, r.history(ip)?))
    })?;
    if rec.is_none() && events.is_empty() {
        return Err(PageError::Api(ApiError::not_found(format!(
            "{ip} is not an address of any pool"
        ))));
    }
    let csrf = matches!(user.role, crate::store::Role::Admin).then(|| user.csrf.clone());
    let frame = Frame::signed_in("addresses", ip.to_string(), user, headers);
    let (status, error, error_field, typed) = match refused {
        Some((r, t)) => (r.status, Some(r.message), r.field, Some(t)),
        None => (StatusCode::OK, None, None, None),
    };
    let page = DetailPage {
        frame,
        ip: ip.to_string(),
        rec,
        pool: pool.map(|p| p.name),
        gateway,
        csrf,
        events: events.into_iter().rev().map(EventView::from).collect(),
        error,
        error_field,
        typed,
    };
    Ok(render(status, &page.frame, &page, s.secure_cookies))
}

/// One address: status, facts, pool, history; action forms for admins. Any signed-in user.
async fn detail(
    State(s): State<AppState>,
    user: SignedIn,
    headers: HeaderMap,
    Path(ip): Path<String>,
) -> Result<Response, PageError> {
    let ip = parse_ip(&ip)?;
    detail_page(&s, user, &headers, ip, None)
}

/// Changes an address through the store's write paths. Admin; a refusal (the status rules,
/// a bad field) shows the detail page again with the message and what was typed.
async fn act(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(ip): Path<String>,
    f: AdminForm<ActionForm>,
) -> Result<Response, PageError> {
    let ip = parse_ip(&ip)?;
    let AdminForm { user, form } = f;
    let actor = user.name.clone();
    let status_patch = |status| AddressPatch {
        status: Some(status),
        ..AddressPatch::default()
    };
    let (done, message) = match form.action.as_str() {
        "allocate" => {
            let req = AllocationRequest {
                address: Some(ip),
                owner: form.owner.as_deref().and_then(non_empty),
                hostname: form.hostname.as_deref().and_then(non_empty),
            };
            let done = s
                .store
                .write(move |w| {
                    let pool = w
                        .pool_containing(crate::ipam::IpKey::from(ip))?
                        .ok_or(StoreError::OutsideEveryPool { address: ip })?;
                    // By id: a pool name is never all digits, so the id cannot be misread.
                    w.allocate(&pool.id.to_string(), &req, None, &actor)
                })
                .await;
            if done.is_ok() {
                s.metrics.allocations.inc();
            }
            (done, format!("Allocated {ip}"))
        }
        "release" => (
            s.store.write(move |w| w.release(ip, &actor)).await,
            format!("Released {ip}"),
        ),
        "reserve" => {
            let patch = AddressPatch {
                description: Some(form.description.clone().unwrap_or_default()),
                ..status_patch(Status::Reserved)
            };
            (
                s.store.write(move |w| w.patch(ip, &patch, &actor)).await,
                format!("Reserved {ip}"),
            )
        }
        "quarantine" => {
            let patch = status_patch(Status::Quarantine);
            (
                s.store.write(move |w| w.patch(ip, &patch, &actor)).await,
                format!("Quarantined {ip}"),
            )
        }
        "available" => {
            let patch = status_patch(Status::Available);
            (
                s.store.write(move |w| w.patch(ip, &patch, &actor)).await,
                format!("{ip} is available again"),
            )
        }
        "edit" => {
            // A field the form did not send stays as it is; a disabled description is not
            // sent, so it is only ever changed while reserved.
            let patch = AddressPatch {
                status: None,
                description: form.description.clone(),
                owner: form.owner.clone(),
                hostname: form.hostname.clone().map(|h| h.trim().to_string()),
                mac: form.mac.clone().map(|m| m.trim().to_string()),
                platform: form.platform.clone(),
                manufacturer: form.manufacturer.clone(),
            };
            (
                s.store.write(move |w| w.patch(ip, &patch, &actor)).await,
                format!("Saved {ip}"),
            )
        }
        other => {
            return Err(PageError::BadForm(format!("unknown action {other:?}")));
        }
    };
    match done {
        Ok(_) => Ok(see_other(
            &format!("/addresses/{ip}"),
            &message,
            s.secure_cookies,
        )),
        Err(e) => {
            let refused = refusal(e)?;
            detail_page(&s, user, &headers, ip, Some((refused, form)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record::available(
            "10.0.0.5".parse().unwrap(),
            1,
            AddrType::Static,
            jiff::Timestamp::UNIX_EPOCH,
        )
    }

    #[test]
    fn diff_lists_each_changed_field_before_and_after() {
        let before = rec();
        let mut after = before.clone();
        after.status = Status::Reserved;
        after.description = Some("printer".into());
        after.updated = jiff::Timestamp::from_second(60).unwrap();
        assert_eq!(
            diff(Some(&before), Some(&after)),
            [
                FieldChange {
                    field: "status",
                    before: "available".into(),
                    after: "reserved".into()
                },
                FieldChange {
                    field: "description",
                    before: "".into(),
                    after: "printer".into()
                },
            ],
            "timestamps are not listed"
        );
        assert!(diff(Some(&before), Some(&before)).is_empty());
        // A record first stored, or dropped on release: an available address appears or
        // returns, and its facts with it.
        after.status = Status::Allocated;
        after.description = None;
        after.hostname = Some("web-1".into());
        let change = |field, before: &str, after: &str| FieldChange {
            field,
            before: before.into(),
            after: after.into(),
        };
        assert_eq!(
            diff(None, Some(&after)),
            [
                change("status", "available", "allocated"),
                change("hostname", "", "web-1")
            ]
        );
        assert_eq!(
            diff(Some(&after), None),
            [
                change("status", "allocated", "available"),
                change("hostname", "web-1", "")
            ]
        );
    }

    #[test]
    fn filters_round_trip_through_the_url_and_bad_values_say_which() {
        let (f, cursor) = Filters::parse(Some(
            "pool=lan&status=allocated&q=web+1&x=y&cursor=10.0.0.9",
        ))
        .unwrap();
        assert_eq!(cursor.as_deref(), Some("10.0.0.9"));
        assert_eq!(f.url(None), "/addresses?pool=lan&status=allocated&q=web+1");
        assert_eq!(
            Filters::parse(f.url(None).strip_prefix("/addresses?"))
                .unwrap()
                .0,
            f
        );
        let bad = |q: &str| Filters::parse(Some(q)).unwrap().0.check().unwrap_err();
        assert!(matches!(bad("status=lost"), FilterError::Status(_)));
        assert!(bad("type=x").to_string().starts_with("type:"));
        assert_eq!(bad("active=maybe"), FilterError::Active("maybe".into()));
        assert_eq!(Filters::default().url(None), "/addresses");
    }

    #[test]
    fn counts_are_grouped_and_open_ended_counts_say_so() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(
            count_text(Count {
                n: 2000,
                more: true
            }),
            "2,000+"
        );
    }

    #[test]
    fn held_addresses_offer_only_what_their_status_allows() {
        assert!(!allowed_actions(Status::Allocated).contains(&"reserve"));
        assert!(allowed_actions(Status::Allocated).contains(&"release"));
        assert!(!allowed_actions(Status::Quarantine).contains(&"allocate"));
        assert!(allowed_actions(Status::Available).contains(&"reserve"));
    }
}
