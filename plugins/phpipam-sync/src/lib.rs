//! `phpipam-sync`: keeps weft's IPAM and phpIPAM in step, through phpIPAM's REST API
//! (`<url>/api/<app>/...`, answers in the envelope `{"code":200,"success":true,"data":...}`).
//!
//! - phpIPAM's addresses (`GET /api/<app>/addresses/`) inside a weft pool become weft devices
//!   (`phpipam:<id>`, with hostname and MAC) when their tag is Used, Offline or DHCP, and weft
//!   reservations (description `phpipam:<id> <description>`) when it is Reserved. Devices and
//!   reservations this sync made whose phpIPAM address is gone are removed from weft.
//! - weft's allocated addresses phpIPAM lacks are created there (`POST /api/<app>/addresses/`
//!   in the phpIPAM subnet holding them, from `GET /api/<app>/subnets/`, tag Used); an
//!   address in no phpIPAM subnet is left out (phpIPAM needs a subnet).
//!
//! Config: `url` (phpIPAM's base URL), `app` (the API application id) and `token` (the app's
//! token, sent as the `token` header; never logged).

wit_bindgen::generate!({
    path: "../../wit",
    world: "ipam-sync",
});

use exports::weft::plugin::syncer::{Guest, Report};
use ipnet::IpNet;
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;
use sync_kit::{External, Want};
use weft::plugin::types::Pair;
use weft::plugin::{config, http, ipam, log};

/// What this sync's marks start with (`phpipam:12`).
const SOURCE: &str = "phpipam";
/// phpIPAM's default address tags (table `ipTags`).
const TAG_OFFLINE: &str = "1";
const TAG_USED: &str = "2";
const TAG_RESERVED: &str = "3";
const TAG_DHCP: &str = "4";

struct PhpipamSync;

struct Phpipam {
    /// `<url>/api/<app>`, without a trailing slash.
    api: String,
    token: String,
}

impl Phpipam {
    fn from_config() -> Result<Phpipam, String> {
        let url = config::get("url").ok_or("config `url` (phpIPAM's base URL) is missing")?;
        let app = config::get("app").ok_or("config `app` (the phpIPAM API app id) is missing")?;
        let token = config::get("token").ok_or("config `token` (the app's token) is missing")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "config `url` {url:?} must start with http:// or https://"
            ));
        }
        if app.is_empty()
            || !app
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "config `app` {app:?} must be letters, digits, '-' or '_'"
            ));
        }
        Ok(Phpipam {
            api: format!("{}/api/{app}", url.trim_end_matches('/')),
            token,
        })
    }

    fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Value), String> {
        let mut headers = vec![
            pair("token", &self.token),
            pair("Accept", "application/json"),
        ];
        if body.is_some() {
            headers.push(pair("Content-Type", "application/json"));
        }
        let response = http::send(&http::Request {
            method,
            url: format!("{}{path}", self.api),
            headers,
            body,
        })?;
        let json: Value = serde_json::from_slice(&response.body).map_err(|_| {
            format!(
                "{path} answered {} with something that is not JSON: {}",
                response.status,
                sync_kit::short(&String::from_utf8_lossy(&response.body))
            )
        })?;
        Ok((response.status, json))
    }

    /// The `data` list of a listing. phpIPAM answers 404 ("No addresses found") for an empty
    /// one.
    fn list(&self, path: &str) -> Result<Vec<Value>, String> {
        let (status, json) = self.send(http::Method::Get, path, None)?;
        let success = json.get("success").and_then(Value::as_bool) == Some(true);
        match (status, success) {
            (200, true) => match json.get("data") {
                Some(Value::Array(items)) => Ok(items.clone()),
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(_) => Err(format!("{path} answered data that is not a list")),
            },
            (404, false) => Ok(Vec::new()),
            _ => Err(format!("{path} answered {status}: {}", message(&json))),
        }
    }

    fn create_address(&self, subnet: &str, ip: IpAddr, hostname: &str) -> Result<(), String> {
        let body = serde_json::json!({
            "subnetId": subnet,
            "ip": ip.to_string(),
            "hostname": hostname,
            "description": "from weft",
            "tag": TAG_USED,
        });
        let (status, json) = self.send(
            http::Method::Post,
            "/addresses/",
            Some(body.to_string().into_bytes()),
        )?;
        let success = json.get("success").and_then(Value::as_bool) == Some(true);
        if status != 201 || !success {
            return Err(format!("phpIPAM refused it ({status}): {}", message(&json)));
        }
        Ok(())
    }
}

/// phpIPAM's error text, bounded.
fn message(json: &Value) -> String {
    json.get("message")
        .and_then(Value::as_str)
        .map_or_else(|| "no message".to_string(), sync_kit::short)
}

fn pair(key: &str, value: &str) -> Pair {
    Pair {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn field(item: &Value, key: &str) -> Option<String> {
    item.get(key).and_then(sync_kit::text)
}

sync_kit::weft_through_ipam!();

/// What weft should hold for a phpIPAM address.
fn want(id: &str, item: &Value) -> Want {
    let text = |k| field(item, k).unwrap_or_default();
    match field(item, "tag").as_deref() {
        Some(TAG_RESERVED) => Want::Reserved {
            description: sync_kit::reservation_description(SOURCE, id, &text("description")),
        },
        Some(TAG_USED | TAG_OFFLINE | TAG_DHCP) | None => Want::Device {
            hostname: sync_kit::hostname(&text("hostname")),
            mac: sync_kit::mac(&text("mac")),
        },
        // A tag someone added: not known, not mirrored.
        Some(_) => Want::Nothing,
    }
}

impl Guest for PhpipamSync {
    fn sync() -> Result<Report, String> {
        let php = Phpipam::from_config()?;
        let (pools, records) = weft_snapshot()?;
        let subnets = php.list("/subnets/")?;
        let addresses = php.list("/addresses/")?;

        let mut errors = Vec::new();
        let mut external = Vec::new();
        for item in &addresses {
            let id = field(item, "id");
            let ip = field(item, "ip").and_then(|a| sync_kit::address(&a));
            match (id, ip) {
                (Some(id), Some(address)) => external.push(External {
                    want: want(&id, item),
                    id,
                    address,
                }),
                _ => errors.push(format!(
                    "phpIPAM address without a usable id and ip: {}",
                    sync_kit::short(&item.to_string())
                )),
            }
        }
        let mut counts = sync_kit::pull(SOURCE, &pools, &records, &external, &mut Weft);

        // Back to phpIPAM: weft's allocations it lacks, into the subnet that holds them.
        let known: HashSet<IpAddr> = external.iter().map(|e| e.address).collect();
        let nets: Vec<(IpNet, String)> = subnets
            .iter()
            .filter_map(|s| {
                let net = format!("{}/{}", field(s, "subnet")?, field(s, "mask")?);
                Some((net.parse().ok()?, field(s, "id")?))
            })
            .collect();
        let mut no_subnet = 0;
        for r in sync_kit::to_push(SOURCE, &records, &known) {
            let Some((_, subnet)) = sync_kit::longest_match(r.address, &nets) else {
                no_subnet += 1;
                continue;
            };
            match php.create_address(subnet, r.address, r.hostname.as_deref().unwrap_or("")) {
                Ok(()) => counts.created += 1,
                Err(e) => counts
                    .errors
                    .push(format!("creating {} in phpIPAM: {e}", r.address)),
            }
        }

        errors.append(&mut counts.errors);
        log::log(
            log::Level::Info,
            &format!(
                "phpIPAM: {} addresses, {} outside weft's pools, {} held in weft by something else, {} weft allocations in no phpIPAM subnet",
                addresses.len(),
                counts.outside,
                counts.held_elsewhere,
                no_subnet
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

export!(PhpipamSync);
