//! The `ipam` and `http` imports of ipam-sync plugins: weft's store as the plugin may see and
//! change it (every change recorded with `plugin:<name>` as its actor), and outbound HTTP to
//! the hosts its manifest grants.
//!
//! Everything a plugin hands over is untrusted: addresses are parsed, ids and texts bounded,
//! URLs and headers checked, and every use asks `grants` first. A call runs on a blocking
//! thread (see `syncs`), so store writes use `write_blocking` and HTTP runs on the runtime
//! given in [`SyncReach`] through `block_on`.

use super::bindings::imports::weft::plugin::{http, ipam, types};
use super::call::{CallState, Reach};
use super::grants::{self, Ask, Denied};
use super::manifest::{Permissions, World};
use crate::ipam::{AddrType, Record, Status};
use crate::store::{AddressFilter, AddressPatch, DeviceSpec, Store, StoreError, WeftChanges};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Most records one `records` call returns, whatever the plugin asks.
pub const MAX_PAGE: u32 = 1000;
/// Largest request or response body, in bytes.
pub const MAX_BODY: usize = 16 << 20;
/// Most headers on a request.
const MAX_HEADERS: usize = 64;
/// Largest header name plus value, in bytes.
const MAX_HEADER_BYTES: usize = 8 << 10;
/// Longest device id (as the store allows).
const MAX_DEVICE_ID: usize = 128;

/// What a sync may reach.
pub struct SyncReach {
    pub store: Store,
    /// Where outbound requests run.
    pub runtime: tokio::runtime::Handle,
    /// When the call must be over: no request may outlive it (wasmtime's deadline cannot
    /// interrupt a plugin while it waits in the host).
    pub deadline: Instant,
    /// What the call changed in weft, as weft saw it: read by whoever made the call.
    pub changes: Arc<Changes>,
    /// Built on the first request, then reused for the call's later ones (keep-alive).
    client: OnceLock<reqwest::Client>,
}

impl SyncReach {
    /// The reach of one call that may run for `time_limit` from now.
    pub fn new(store: Store, runtime: tokio::runtime::Handle, time_limit: Duration) -> SyncReach {
        SyncReach {
            store,
            runtime,
            deadline: Instant::now() + time_limit,
            changes: Arc::default(),
            client: OnceLock::new(),
        }
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let client = reqwest::Client::builder()
            // A redirect is answered to the plugin, which may follow it with a new request:
            // that one is checked against the grants like any other.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would be a host the manifest never granted.
            .no_proxy()
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up HTTP: {e}"))?;
        Ok(self.client.get_or_init(|| client))
    }
}

/// weft's records as a call changed them, counted as the changes are committed.
#[derive(Debug, Default)]
pub struct Changes {
    created: AtomicU32,
    updated: AtomicU32,
    deleted: AtomicU32,
}

impl Changes {
    pub fn counted(&self) -> WeftChanges {
        WeftChanges {
            created: self.created.load(Ordering::Relaxed),
            updated: self.updated.load(Ordering::Relaxed),
            deleted: self.deleted.load(Ordering::Relaxed),
        }
    }

    fn add(&self, change: Change) {
        let counter = match change {
            Change::Created => &self.created,
            Change::Updated => &self.updated,
            Change::Deleted => &self.deleted,
            Change::Nothing => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one import call did to weft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Created,
    Updated,
    Deleted,
    Nothing,
}

/// How an address's record went from `before` to `after` (absent: available).
fn change_of(before: Option<&Record>, after: Option<&Record>) -> Change {
    let held = |r: Option<&Record>| r.is_some_and(|r| r.status != Status::Available);
    match (held(before), held(after)) {
        (false, true) => Change::Created,
        (true, false) => Change::Deleted,
        (true, true) if before != after => Change::Updated,
        _ => Change::Nothing,
    }
}

/// Why a request was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{url:?} is not a URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("scheme {0:?} is not allowed: only http and https")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("URLs with a user name or password are refused: send credentials in a header")]
    Credentials,
    #[error("request refused: {0}")]
    Denied(#[from] Denied),
    #[error("header {0:?} is not a valid HTTP header")]
    BadHeader(String),
    #[error("header {0:?} is set by weft, not by plugins")]
    ReservedHeader(String),
    #[error("a request has at most {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("a request body is at most {} MiB", MAX_BODY >> 20)]
    BodyTooLarge,
}

/// The URL of a request, checked: http or https, a host, no credentials, and a host:port
/// (80 and 443 by default) the manifest grants. Nothing is connected before this passes.
pub fn checked_url(
    world: World,
    permissions: &Permissions,
    text: &str,
) -> Result<url::Url, Refused> {
    let url = url::Url::parse(text).map_err(|e| Refused::BadUrl {
        url: text.chars().take(200).collect(),
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(Refused::Scheme(other.to_string())),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Credentials);
    }
    // `url` lower-cases domain names and strips the brackets of IPv6 literals here.
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(Refused::NoHost),
    };
    let port = url.port_or_known_default().ok_or(Refused::NoHost)?;
    grants::check(
        world,
        permissions,
        |_| false,
        Ask::Http { host: &host, port },
    )?;
    Ok(url)
}

/// Headers weft sets itself: a plugin choosing them could smuggle a second request or lie
/// about the body.
fn reserved_header(name: &str) -> bool {
    [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    ]
    .iter()
    .any(|r| name.eq_ignore_ascii_case(r))
}

/// The plugin's headers, checked.
pub fn checked_headers(pairs: &[types::Pair]) -> Result<reqwest::header::HeaderMap, Refused> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    if pairs.len() > MAX_HEADERS {
        return Err(Refused::TooManyHeaders);
    }
    let mut map = HeaderMap::new();
    for p in pairs {
        let shown = || p.key.chars().take(100).collect::<String>();
        if reserved_header(&p.key) {
            return Err(Refused::ReservedHeader(shown()));
        }
        if p.key.len() + p.value.len() > MAX_HEADER_BYTES {
            return Err(Refused::BadHeader(shown()));
        }
        let name =
            HeaderName::from_bytes(p.key.as_bytes()).map_err(|_| Refused::BadHeader(shown()))?;
        // `from_str` refuses control characters, so no header can end early (no CRLF).
        let value = HeaderValue::from_str(&p.value).map_err(|_| Refused::BadHeader(shown()))?;
        map.append(name, value);
    }
    Ok(map)
}

impl CallState {
    fn sync_reach(&self) -> Result<&SyncReach, String> {
        match &self.reach {
            Reach::Sync(r) => Ok(r),
            // Only the ipam-sync world links these imports; answered rather than assumed.
            Reach::Nothing | Reach::Probe(_) => {
                Err("this call has no IPAM or HTTP to reach".to_string())
            }
        }
    }

    fn allow(&self, ask: Ask<'_>) -> Result<(), String> {
        grants::check(self.plugin.world, &self.plugin.permissions, |_| false, ask)
            .map_err(|e| e.to_string())
    }

    /// The name changes are recorded under in the history.
    fn actor(&self) -> String {
        format!("plugin:{}", self.plugin.name)
    }

    /// Runs a change as the plugin, waits for it to be durable and counts what it did.
    fn write<F>(&self, f: F) -> Result<(), String>
    where
        F: FnMut(&mut crate::store::Writer<'_>) -> crate::store::Result<Change> + Send + 'static,
    {
        self.allow(Ask::IpamWrite)?;
        let reach = self.sync_reach()?;
        // Counted after the commit: `f` may run more than once inside the store.
        let change = reach.store.write_blocking(f).map_err(store_error)?;
        reach.changes.add(change);
        Ok(())
    }
}

fn store_error(e: StoreError) -> String {
    e.to_string()
}

/// An address as text from a plugin.
fn parse_address(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>().map_err(|_| {
        format!(
            "{:?} is not an IP address (expected for example 10.0.0.7 or fd00::7)",
            text.chars().take(64).collect::<String>()
        )
    })
}

/// A text that becomes part of a record, bounded and without control characters.
fn plain(field: &str, text: String, max: usize) -> Result<String, String> {
    if text.chars().count() > max {
        return Err(format!("{field} is longer than {max} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{field} cannot hold control characters"));
    }
    Ok(text)
}

fn wit_status(s: Status) -> ipam::Status {
    match s {
        Status::Available => ipam::Status::Available,
        Status::Allocated => ipam::Status::Allocated,
        Status::Reserved => ipam::Status::Reserved,
        Status::Quarantine => ipam::Status::Quarantine,
    }
}

fn wit_record(r: Record, pool: &str) -> ipam::AddressRecord {
    ipam::AddressRecord {
        address: r.address.to_string(),
        pool: pool.to_string(),
        status: wit_status(r.status),
        address_type: match r.addr_type {
            AddrType::Static => ipam::AddressType::Static,
            AddrType::Dhcp => ipam::AddressType::Dhcp,
        },
        active: r.active,
        hostname: r.hostname,
        mac: r.mac,
        platform: r.platform,
        manufacturer: r.manufacturer,
        owner: r.owner,
        description: r.description,
        device: r.device,
    }
}

impl ipam::Host for CallState {
    fn pools(&mut self) -> Result<Vec<ipam::Pool>, String> {
        self.allow(Ask::IpamRead)?;
        let pools = self
            .sync_reach()?
            .store
            .read(|r| r.pools())
            .map_err(store_error)?;
        Ok(pools
            .into_iter()
            .map(|p| ipam::Pool {
                name: p.name,
                cidr: p.cidr.to_string(),
                description: p.description,
            })
            .collect())
    }

    fn records(
        &mut self,
        pool: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<ipam::RecordPage, String> {
        self.allow(Ask::IpamRead)?;
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let page = self
            .sync_reach()?
            .store
            .read(|r| {
                let p = r.pool(&pool)?;
                let filter = AddressFilter {
                    pool: Some(p.id),
                    ..AddressFilter::default()
                };
                let page = r.list(&filter, cursor.as_deref(), limit)?;
                Ok((p.name, page))
            })
            .map_err(store_error)?;
        let (name, page) = page;
        Ok(ipam::RecordPage {
            items: page
                .items
                .into_iter()
                .map(|r| wit_record(r, &name))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    fn upsert_device(&mut self, device: ipam::Device) -> Result<(), String> {
        let id = plain("device id", device.id, MAX_DEVICE_ID)?;
        if id.is_empty() {
            return Err("a device id cannot be empty".to_string());
        }
        let spec = DeviceSpec {
            ip: parse_address(&device.address)?,
            // The store checks hostname and MAC and bounds platform and manufacturer.
            hostname: device.hostname,
            mac: device.mac,
            platform: device.platform,
            manufacturer: device.manufacturer,
        };
        let actor = self.actor();
        self.write(move |w| {
            let before = w.address(spec.ip)?;
            w.upsert_device(&id, &spec, &actor)?;
            Ok(change_of(before.as_ref(), w.address(spec.ip)?.as_ref()))
        })
    }

    fn delete_device(&mut self, id: String) -> Result<(), String> {
        let id = plain("device id", id, MAX_DEVICE_ID)?;
        let actor = self.actor();
        self.write(move |w| w.delete_device(&id, &actor).map(|_| Change::Deleted))
    }

    fn reserve(&mut self, address: String, description: String) -> Result<(), String> {
        let ip = parse_address(&address)?;
        let description = plain("description", description, 1000)?;
        let actor = self.actor();
        // Reserving an address already reserved only sets its description: a sync can say
        // the same thing every run.
        let patch = AddressPatch {
            status: Some(Status::Reserved),
            description: Some(description),
            ..AddressPatch::default()
        };
        self.write(move |w| {
            let before = w.address(ip)?;
            w.patch(ip, &patch, &actor)?;
            Ok(change_of(before.as_ref(), w.address(ip)?.as_ref()))
        })
    }

    fn release(&mut self, address: String) -> Result<(), String> {
        let ip = parse_address(&address)?;
        let actor = self.actor();
        self.write(move |w| {
            let status = w.address(ip)?.map_or(Status::Available, |r| r.status);
            match status {
                Status::Allocated => w.release(ip, &actor).map(|_| Change::Deleted),
                Status::Reserved => {
                    let patch = AddressPatch {
                        status: Some(Status::Available),
                        ..AddressPatch::default()
                    };
                    w.patch(ip, &patch, &actor).map(|_| Change::Deleted)
                }
                // Already free: releasing again changes nothing.
                Status::Available => Ok(Change::Nothing),
                // Quarantine is an operator's decision, not a sync's.
                Status::Quarantine => Err(StoreError::NotAllocated {
                    address: ip,
                    status: Status::Quarantine.as_str(),
                }),
            }
        })
    }

    fn note(&mut self, address: String, text: String) -> Result<(), String> {
        let ip = parse_address(&address)?;
        let actor = self.actor();
        self.write(move |w| w.note(ip, &text, &actor).map(|()| Change::Nothing))
    }
}

impl http::Host for CallState {
    fn send(&mut self, request: http::Request) -> Result<http::Response, String> {
        let url = checked_url(self.plugin.world, &self.plugin.permissions, &request.url)
            .map_err(|e| e.to_string())?;
        let headers = checked_headers(&request.headers).map_err(|e| e.to_string())?;
        if request.body.as_ref().is_some_and(|b| b.len() > MAX_BODY) {
            return Err(Refused::BodyTooLarge.to_string());
        }
        let reach = self.sync_reach()?;
        let left = reach.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the call's time limit is reached: no more requests".to_string());
        }
        let method = match request.method {
            http::Method::Get => reqwest::Method::GET,
            http::Method::Post => reqwest::Method::POST,
            http::Method::Put => reqwest::Method::PUT,
            http::Method::Patch => reqwest::Method::PATCH,
            http::Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = reach
            .client()?
            .request(method, url.clone())
            .headers(headers)
            .timeout(left);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        // Shown in errors without its query, which may hold a secret.
        let mut shown = url;
        shown.set_query(None);
        let answer = reach.runtime.block_on(async move {
            let mut response = builder.send().await?;
            let status = response.status().as_u16();
            let headers: Vec<types::Pair> = response
                .headers()
                .iter()
                .filter_map(|(k, v)| {
                    // A header that is not text is of no use to a plugin; leave it out.
                    Some(types::Pair {
                        key: k.as_str().to_string(),
                        value: v.to_str().ok()?.to_string(),
                    })
                })
                .collect();
            if response
                .content_length()
                .is_some_and(|n| n > MAX_BODY as u64)
            {
                return Ok(Err(()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Ok(Err(()));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Ok(http::Response {
                status,
                headers,
                body,
            }))
        });
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(())) => Err(format!(
                "the answer of {shown} is larger than {} MiB",
                MAX_BODY >> 20
            )),
            Err(e) if e.is_timeout() => Err(format!(
                "{shown} did not answer within the call's time limit"
            )),
            // reqwest's error names the URL (with its query): say it without.
            Err(e) => Err(format!("request to {shown} failed: {}", e.without_url())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::Manifest;

    fn sync(hosts: &str) -> (World, Permissions) {
        let m = Manifest::parse(&format!(
            "name = \"s\"\nversion = \"1.0.0\"\nworld = \"ipam-sync\"\n[permissions]\noutbound_hosts = [{hosts}]\n"
        ))
        .expect("manifest");
        (m.world, m.permissions)
    }

    #[test]
    fn a_url_passes_only_to_a_granted_host_and_port() {
        let (w, p) = sync("\"netbox.example:443\", \"127.0.0.1:8080\", \"[::1]:80\"");
        let check = |u: &str| checked_url(w, &p, u).map(|u| u.to_string());
        assert!(check("https://netbox.example/api/ipam/prefixes/?limit=50").is_ok());
        assert!(
            check("https://NETBOX.example:443/api/").is_ok(),
            "names are case-blind"
        );
        assert!(check("http://127.0.0.1:8080/api/").is_ok());
        assert!(check("http://[::1]/").is_ok(), "port 80 is http's default");
        // The default port of http is 80, not the granted 443.
        assert!(matches!(
            checked_url(w, &p, "http://netbox.example/api/"),
            Err(Refused::Denied(Denied::HostNotGranted { port: 80, .. }))
        ));
        assert!(matches!(
            checked_url(w, &p, "https://evil.example/"),
            Err(Refused::Denied(Denied::HostNotGranted { .. }))
        ));
        assert!(matches!(
            checked_url(w, &p, "http://127.0.0.1:8081/"),
            Err(Refused::Denied(Denied::HostNotGranted { port: 8081, .. }))
        ));
        // A granted name as a user name does not make another host granted.
        assert!(matches!(
            checked_url(w, &p, "https://netbox.example@evil.example/"),
            Err(Refused::Credentials)
        ));
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_sent() {
        let (w, p) = sync("\"netbox.example:443\"");
        assert!(matches!(
            checked_url(w, &p, "ftp://netbox.example:443/"),
            Err(Refused::Scheme(s)) if s == "ftp"
        ));
        assert!(matches!(
            checked_url(w, &p, "file:///etc/passwd"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            checked_url(w, &p, "netbox.example/api"),
            Err(Refused::BadUrl { .. })
        ));
        assert!(matches!(
            checked_url(w, &p, "https://user:secret@netbox.example/"),
            Err(Refused::Credentials)
        ));
    }

    #[test]
    fn a_selector_may_not_send_even_to_a_listed_host() {
        let (_, p) = sync("\"netbox.example:443\"");
        assert!(matches!(
            checked_url(World::NodeSelector, &p, "https://netbox.example/"),
            Err(Refused::Denied(Denied::NotInWorld { .. }))
        ));
    }

    fn pair(k: &str, v: &str) -> types::Pair {
        types::Pair {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn headers_are_checked_and_weft_keeps_the_framing_ones() {
        let ok = checked_headers(&[
            pair("Authorization", "Token abc"),
            pair("Accept", "application/json"),
        ])
        .expect("plain headers pass");
        assert_eq!(ok.len(), 2);
        for (k, v) in [
            ("X-Evil", "a\r\nHost: evil.example"),
            ("Bad Name", "x"),
            ("", "x"),
        ] {
            assert!(
                matches!(checked_headers(&[pair(k, v)]), Err(Refused::BadHeader(_))),
                "{k:?}: {v:?}"
            );
        }
        for k in ["Host", "content-length", "Transfer-Encoding", "Connection"] {
            assert!(
                matches!(
                    checked_headers(&[pair(k, "1")]),
                    Err(Refused::ReservedHeader(_))
                ),
                "{k}"
            );
        }
        let many: Vec<_> = (0..=MAX_HEADERS)
            .map(|i| pair(&format!("x-{i}"), "1"))
            .collect();
        assert_eq!(checked_headers(&many).err(), Some(Refused::TooManyHeaders));
    }
}
