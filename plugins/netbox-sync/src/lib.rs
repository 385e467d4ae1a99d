//! `netbox-sync`: keeps weft's IPAM and NetBox in step.
//!
//! - NetBox's IP addresses (`/api/ipam/ip-addresses/`, every page, following `next`) inside a
//!   weft pool become weft devices (`netbox:<id>`, hostname from `dns_name`, else from the
//!   device or VM the address is assigned to) when their status is `active`, `dhcp` or
//!   `slaac`, and weft reservations (description `netbox:<id> <description>`) when it is
//!   `reserved`. Devices and reservations this sync made whose NetBox address is gone (or
//!   `deprecated`) are removed from weft.
//! - weft's allocated addresses NetBox lacks are created there (`POST
//!   /api/ipam/ip-addresses/`, status `active`, with the prefix length of the NetBox prefix
//!   holding them, else of the weft pool).
//!
//! Config: `url` (NetBox's base URL, for example `https://netbox.example.com`) and `token`
//! (an API token, sent as `Authorization: Token <token>`; never logged).

wit_bindgen::generate!({
    path: "../../wit",
    world: "ipam-sync",
});

use exports::weft::plugin::syncer::{Guest, Report};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::IpAddr;
use sync_kit::{External, Want};
use weft::plugin::types::Pair;
use weft::plugin::{config, http, ipam, log};

/// What this sync's marks start with (`netbox:12`).
const SOURCE: &str = "netbox";
/// NetBox's own page size cap (`MAX_PAGE_SIZE`) is 1000 by default.
const PAGE: u32 = 1000;
/// Pages followed at most per listing: a `next` loop must not run the call out.
const MAX_PAGES: usize = 1000;

struct NetboxSync;

struct Netbox {
    /// Without a trailing slash.
    base: String,
    token: String,
}

#[derive(Deserialize)]
struct Page<T> {
    results: Vec<T>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct Prefix {
    prefix: String,
}

#[derive(Deserialize)]
struct Choice {
    value: String,
}

#[derive(Deserialize)]
struct Named {
    name: Option<String>,
}

#[derive(Deserialize)]
struct Assigned {
    device: Option<Named>,
    virtual_machine: Option<Named>,
}

#[derive(Deserialize)]
struct IpAddress {
    id: u64,
    address: String,
    status: Option<Choice>,
    // Options, not strings: a null from some NetBox version must not fail the whole page.
    dns_name: Option<String>,
    description: Option<String>,
    assigned_object: Option<Assigned>,
}

impl Netbox {
    fn from_config() -> Result<Netbox, String> {
        let url = config::get("url").ok_or("config `url` (NetBox's base URL) is missing")?;
        let token = config::get("token").ok_or("config `token` (a NetBox API token) is missing")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "config `url` {url:?} must start with http:// or https://"
            ));
        }
        Ok(Netbox {
            base: url.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn send(
        &self,
        method: http::Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response, String> {
        let mut headers = vec![
            pair("Authorization", &format!("Token {}", self.token)),
            pair("Accept", "application/json"),
        ];
        if body.is_some() {
            headers.push(pair("Content-Type", "application/json"));
        }
        http::send(&http::Request {
            method,
            url: url.to_string(),
            headers,
            body,
        })
    }

    /// Every item of a listing, page after page. A `next` link must stay on NetBox's base
    /// URL: a listing cannot send the sync (and its token) elsewhere.
    fn list<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, String> {
        let mut url = format!("{}{path}?limit={PAGE}", self.base);
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let response = self.send(http::Method::Get, &url, None)?;
            if response.status != 200 {
                return Err(format!(
                    "GET {path} answered {}: {}",
                    response.status,
                    sync_kit::short(&String::from_utf8_lossy(&response.body))
                ));
            }
            let page: Page<T> = serde_json::from_slice(&response.body).map_err(|e| {
                format!("GET {path} answered something that is not a NetBox listing: {e}")
            })?;
            out.extend(page.results);
            match page.next {
                Some(next) if next.starts_with(&format!("{}/", self.base)) => url = next,
                Some(next) => {
                    return Err(format!(
                        "NetBox's next page {:?} is not under {}",
                        sync_kit::short(&next),
                        self.base
                    ));
                }
                None => return Ok(out),
            }
        }
        Err(format!("GET {path} has more than {MAX_PAGES} pages"))
    }

    fn create_address(&self, address: &str, dns_name: &str) -> Result<(), String> {
        let body = serde_json::json!({
            "address": address,
            "status": "active",
            "dns_name": dns_name,
            "description": "from weft",
        });
        let url = format!("{}/api/ipam/ip-addresses/", self.base);
        let response = self.send(
            http::Method::Post,
            &url,
            Some(body.to_string().into_bytes()),
        )?;
        if response.status != 201 {
            return Err(format!(
                "NetBox refused it ({}): {}",
                response.status,
                sync_kit::short(&String::from_utf8_lossy(&response.body))
            ));
        }
        Ok(())
    }
}

fn pair(key: &str, value: &str) -> Pair {
    Pair {
        key: key.to_string(),
        value: value.to_string(),
    }
}

sync_kit::weft_through_ipam!();

/// What weft should hold for a NetBox address.
fn want(ip: &IpAddress) -> Want {
    let status = ip.status.as_ref().map_or("active", |s| s.value.as_str());
    match status {
        "active" | "dhcp" | "slaac" => {
            let assigned = ip.assigned_object.as_ref().and_then(|a| {
                a.device
                    .as_ref()
                    .or(a.virtual_machine.as_ref())
                    .and_then(|n| n.name.clone())
            });
            let hostname = sync_kit::hostname(ip.dns_name.as_deref().unwrap_or(""))
                .or_else(|| assigned.as_deref().and_then(sync_kit::hostname));
            Want::Device {
                hostname,
                mac: None,
            }
        }
        "reserved" => Want::Reserved {
            description: sync_kit::reservation_description(
                SOURCE,
                &ip.id.to_string(),
                ip.description.as_deref().unwrap_or(""),
            ),
        },
        _ => Want::Nothing,
    }
}

impl Guest for NetboxSync {
    fn sync() -> Result<Report, String> {
        let netbox = Netbox::from_config()?;
        let (pools, records) = weft_snapshot()?;
        let prefixes: Vec<Prefix> = netbox.list("/api/ipam/prefixes/")?;
        let addresses: Vec<IpAddress> = netbox.list("/api/ipam/ip-addresses/")?;

        let mut errors = Vec::new();
        let mut external = Vec::new();
        for a in &addresses {
            match sync_kit::address(&a.address) {
                Some(address) => external.push(External {
                    id: a.id.to_string(),
                    address,
                    want: want(a),
                }),
                None => errors.push(format!(
                    "NetBox address {} has address {:?}",
                    a.id,
                    sync_kit::short(&a.address)
                )),
            }
        }
        let mut counts = sync_kit::pull(SOURCE, &pools, &records, &external, &mut Weft);

        // Back to NetBox: weft's allocations it lacks, in the prefix that holds them.
        let known: HashSet<IpAddr> = external.iter().map(|e| e.address).collect();
        let nets: Vec<(IpNet, ())> = prefixes
            .iter()
            .filter_map(|p| p.prefix.parse().ok().map(|n| (n, ())))
            .chain(pools.iter().map(|p| (p.net, ())))
            .collect();
        for r in sync_kit::to_push(SOURCE, &records, &known) {
            let Some((net, ())) = sync_kit::longest_match(r.address, &nets) else {
                continue;
            };
            let address = format!("{}/{}", r.address, net.prefix_len());
            match netbox.create_address(&address, r.hostname.as_deref().unwrap_or("")) {
                Ok(()) => counts.created += 1,
                Err(e) => counts
                    .errors
                    .push(format!("creating {address} in NetBox: {e}")),
            }
        }

        errors.append(&mut counts.errors);
        log::log(
            log::Level::Info,
            &format!(
                "NetBox: {} addresses, {} outside weft's pools, {} held in weft by something else",
                addresses.len(),
                counts.outside,
                counts.held_elsewhere
            ),
        );
        Ok(Report {
            created: counts.created,
            updated: counts.updated,
            deleted: counts.deleted,
            errors,
        })
    }
}

export!(NetboxSync);
