//! What weft's IPAM sync plugins (`netbox-sync`, `phpipam-sync`) share: given weft's pools
//! and records and what the other IPAM holds, make weft match it, and find what weft holds
//! that the other IPAM lacks.
//!
//! Each plugin reads both sides (through its own `ipam` and `http` imports) into the plain
//! types of this crate, then calls [`pull`] with its [`Weft`] (a thin forwarder to the
//! imports) and [`to_push`]. Everything here is plain Rust, tested natively.
//!
//! What a sync owns in weft is marked, so that later runs find it again without any state of
//! their own: a device it made has the id `<source>:<id>` (`netbox:12`), and a reservation
//! it made has a description starting with `<source>:<id>`. Only what carries its marks is
//! ever updated or removed by it; anything else weft holds is left alone.
//!
//! Runs are idempotent: [`pull`] asks weft for a change only where weft differs from the
//! other side, so a second run against the same data changes nothing.

pub use ipnet;
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Longest reservation description weft keeps.
const MAX_DESCRIPTION: usize = 1000;

/// A weft pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub net: IpNet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Available,
    Allocated,
    Reserved,
    Quarantine,
}

/// What a sync needs of a weft record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub address: IpAddr,
    pub status: Status,
    pub hostname: Option<String>,
    /// In weft's form (`52:54:00:ab:cd:ef`).
    pub mac: Option<String>,
    pub description: Option<String>,
    pub device: Option<String>,
}

/// What the other IPAM says of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// In use by a host: a weft device holding the address.
    Device {
        hostname: Option<String>,
        mac: Option<String>,
    },
    /// Set aside: a weft reservation with this description.
    Reserved { description: String },
    /// Known but not mirrored (for example NetBox's `deprecated`).
    Nothing,
}

/// One address of the other IPAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// The other IPAM's id of the address, unique there.
    pub id: String,
    pub address: IpAddr,
    pub want: Want,
}

/// The changes weft can make for a sync (the plugin's `ipam` import).
pub trait Weft {
    fn upsert_device(
        &mut self,
        id: &str,
        address: IpAddr,
        hostname: Option<&str>,
        mac: Option<&str>,
    ) -> Result<(), String>;
    fn delete_device(&mut self, id: &str) -> Result<(), String>;
    fn reserve(&mut self, address: IpAddr, description: &str) -> Result<(), String>;
    fn release(&mut self, address: IpAddr) -> Result<(), String>;
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: u32,
    pub updated: u32,
    pub deleted: u32,
    /// Addresses of the other IPAM outside every weft pool: not weft's business.
    pub outside: u32,
    /// Addresses weft holds for something else (an allocation, another sync's device): left
    /// alone. Addresses weft pushed to the other IPAM come back as these.
    pub held_elsewhere: u32,
    pub errors: Vec<String>,
}

/// The device id a sync gives the other IPAM's address `id`.
pub fn device_id(source: &str, id: &str) -> String {
    format!("{source}:{id}")
}

/// The description of a reservation mirrored from the other IPAM: the mark, then its text.
pub fn reservation_description(source: &str, id: &str, text: &str) -> String {
    let mark = device_id(source, id);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    let full = if text.is_empty() {
        mark
    } else {
        format!("{mark} {text}")
    };
    full.chars().take(MAX_DESCRIPTION).collect()
}

/// The other IPAM's id in a reservation description this sync wrote, if it did.
fn reservation_mark<'d>(source: &str, description: &'d str) -> Option<&'d str> {
    let rest = description.strip_prefix(source)?.strip_prefix(':')?;
    let id = rest.split(' ').next().unwrap_or(rest);
    (!id.is_empty()).then_some(id)
}

/// A hostname weft accepts (letters, digits, '-', '_', dot-separated labels), lower-cased;
/// none for anything else, so one odd name in the other IPAM does not fail its address.
pub fn hostname(text: &str) -> Option<String> {
    let h = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(h)
}

/// A MAC address in weft's form (`52:54:00:ab:cd:ef`); none if it is not one.
pub fn mac(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
    Some(pairs.join(":"))
}

/// An address as the other IPAM writes it: `10.0.0.5` or `10.0.0.5/24`.
pub fn address(text: &str) -> Option<IpAddr> {
    let bare = text.split_once('/').map_or(text, |(a, _)| a);
    bare.trim().parse().ok()
}

/// Makes weft match `external` for every address in a weft pool: devices and reservations
/// created or updated, and what this sync made earlier that the other IPAM no longer has
/// removed. `records` is weft's held records (every pool) before the run.
pub fn pull(
    source: &str,
    pools: &[Pool],
    records: &[Record],
    external: &[External],
    weft: &mut impl Weft,
) -> Counts {
    let mut counts = Counts::default();
    let by_address: HashMap<IpAddr, &Record> = records.iter().map(|r| (r.address, r)).collect();
    let our_devices: HashSet<&str> = records
        .iter()
        .filter_map(|r| r.device.as_deref())
        .filter(|d| d.strip_prefix(source).is_some_and(|r| r.starts_with(':')))
        .collect();
    let mut seen_devices = HashSet::new();
    let mut seen_reservations = HashSet::new();
    let mut claimed = HashSet::new();

    for item in external {
        if !pools.iter().any(|p| p.net.contains(&item.address)) {
            counts.outside += 1;
            continue;
        }
        // The same address twice on the other side (NetBox VRFs, say): the first listed
        // wins, every run, and the others are left out rather than failing each run.
        if !claimed.insert(item.address) {
            counts.held_elsewhere += 1;
            continue;
        }
        let id = device_id(source, &item.id);
        let weft_has = by_address.get(&item.address).copied();
        let ours = weft_has.is_some_and(|r| r.device.as_deref() == Some(id.as_str()));
        let free = weft_has.is_none_or(|r| r.status == Status::Available);
        // A reservation this sync made for this very address of the other IPAM.
        let mine = weft_has.is_some_and(|r| {
            r.status == Status::Reserved
                && r.description
                    .as_deref()
                    .and_then(|d| reservation_mark(source, d))
                    == Some(item.id.as_str())
        });
        match &item.want {
            Want::Device { hostname, mac } => {
                seen_devices.insert(id.clone());
                let same = weft_has.is_some_and(|r| {
                    ours && r.status == Status::Allocated
                        && r.hostname == *hostname
                        && r.mac == *mac
                });
                if same {
                    continue;
                }
                if mine {
                    // Our reservation that the other IPAM now uses: it goes first, and is not
                    // released again below as gone.
                    seen_reservations.insert(item.id.clone());
                    if let Err(e) = weft.release(item.address) {
                        fail(&mut counts, format!("reservation of {}", item.address), e);
                        continue;
                    }
                } else if !ours && !free {
                    counts.held_elsewhere += 1;
                    continue;
                }
                match weft.upsert_device(&id, item.address, hostname.as_deref(), mac.as_deref()) {
                    // A device of ours elsewhere has moved here: an update, not a new one.
                    Ok(()) if mine || ours || our_devices.contains(id.as_str()) => {
                        counts.updated += 1
                    }
                    Ok(()) => counts.created += 1,
                    Err(e) => fail(&mut counts, format!("device {id} at {}", item.address), e),
                }
            }
            Want::Reserved { description } => {
                seen_reservations.insert(item.id.clone());
                if mine && weft_has.and_then(|r| r.description.as_ref()) == Some(description) {
                    continue;
                }
                // Our device that the other IPAM now reserves: the device goes first, and is
                // not deleted again below as gone.
                if ours {
                    seen_devices.insert(id.clone());
                    if let Err(e) = weft.delete_device(&id) {
                        fail(&mut counts, format!("device {id}"), e);
                        continue;
                    }
                } else if !mine && !free {
                    counts.held_elsewhere += 1;
                    continue;
                }
                match weft.reserve(item.address, description) {
                    Ok(()) if mine || ours => counts.updated += 1,
                    Ok(()) => counts.created += 1,
                    Err(e) => fail(&mut counts, format!("reservation of {}", item.address), e),
                }
            }
            Want::Nothing => {}
        }
    }

    // What this sync made that the other IPAM no longer has (or no longer mirrors).
    for r in records {
        if let Some(d) = r.device.as_deref()
            && our_devices.contains(d)
            && !seen_devices.contains(d)
        {
            match weft.delete_device(d) {
                Ok(()) => counts.deleted += 1,
                Err(e) => fail(&mut counts, format!("device {d}"), e),
            }
        }
        if r.status == Status::Reserved
            && let Some(id) = r
                .description
                .as_deref()
                .and_then(|d| reservation_mark(source, d))
            && !seen_reservations.contains(id)
        {
            match weft.release(r.address) {
                Ok(()) => counts.deleted += 1,
                Err(e) => fail(&mut counts, format!("reservation of {}", r.address), e),
            }
        }
    }
    counts
}

fn fail(counts: &mut Counts, what: String, e: String) {
    counts.errors.push(format!("{what}: {e}"));
}

/// weft's allocated addresses that the other IPAM lacks and that this sync did not make: what
/// to create there. `known` is every address the other IPAM has, whatever its status.
pub fn to_push<'r>(
    source: &str,
    records: &'r [Record],
    known: &HashSet<IpAddr>,
) -> Vec<&'r Record> {
    records
        .iter()
        .filter(|r| r.status == Status::Allocated && !known.contains(&r.address))
        .filter(|r| {
            !r.device
                .as_deref()
                .is_some_and(|d| d.strip_prefix(source).is_some_and(|x| x.starts_with(':')))
        })
        .collect()
}

/// The longest of `nets` holding `ip`: the prefix an address belongs to.
pub fn longest_match<T>(ip: IpAddr, nets: &[(IpNet, T)]) -> Option<&(IpNet, T)> {
    nets.iter()
        .filter(|(n, _)| n.contains(&ip))
        .max_by_key(|(n, _)| n.prefix_len())
}

/// A JSON field as text: APIs send ids and numbers as strings or numbers (phpIPAM both).
pub fn text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An error text that is safe to report: one line, bounded.
pub fn short(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// weft as a map of address to record, applying the changes like the host does.
    #[derive(Default)]
    struct FakeWeft {
        records: HashMap<IpAddr, Record>,
        calls: u32,
    }

    impl FakeWeft {
        fn list(&self) -> Vec<Record> {
            let mut v: Vec<Record> = self.records.values().cloned().collect();
            v.sort_by_key(|r| r.address);
            v
        }
    }

    impl Weft for FakeWeft {
        fn upsert_device(
            &mut self,
            id: &str,
            address: IpAddr,
            hostname: Option<&str>,
            mac: Option<&str>,
        ) -> Result<(), String> {
            self.calls += 1;
            if let Some(r) = self.records.get(&address)
                && r.device.as_deref() != Some(id)
                && r.status != Status::Available
            {
                return Err(format!("{address} is taken"));
            }
            self.records.retain(|_, r| r.device.as_deref() != Some(id));
            self.records.insert(
                address,
                Record {
                    address,
                    status: Status::Allocated,
                    hostname: hostname.map(str::to_string),
                    mac: mac.map(str::to_string),
                    description: None,
                    device: Some(id.to_string()),
                },
            );
            Ok(())
        }
        fn delete_device(&mut self, id: &str) -> Result<(), String> {
            self.calls += 1;
            self.records.retain(|_, r| r.device.as_deref() != Some(id));
            Ok(())
        }
        fn reserve(&mut self, address: IpAddr, description: &str) -> Result<(), String> {
            self.calls += 1;
            self.records.insert(
                address,
                Record {
                    address,
                    status: Status::Reserved,
                    hostname: None,
                    mac: None,
                    description: Some(description.to_string()),
                    device: None,
                },
            );
            Ok(())
        }
        fn release(&mut self, address: IpAddr) -> Result<(), String> {
            self.calls += 1;
            self.records.remove(&address);
            Ok(())
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pools() -> Vec<Pool> {
        vec![Pool {
            name: "lan".into(),
            net: "10.0.0.0/24".parse().unwrap(),
        }]
    }

    fn device(id: &str, a: &str, h: &str) -> External {
        External {
            id: id.into(),
            address: ip(a),
            want: Want::Device {
                hostname: Some(h.into()),
                mac: None,
            },
        }
    }

    fn reserved(id: &str, a: &str, text: &str) -> External {
        External {
            id: id.into(),
            address: ip(a),
            want: Want::Reserved {
                description: reservation_description("nb", id, text),
            },
        }
    }

    #[test]
    fn a_first_run_mirrors_and_a_second_changes_nothing() {
        let mut weft = FakeWeft::default();
        let ext = vec![
            device("1", "10.0.0.5", "web"),
            reserved("2", "10.0.0.6", "spare"),
            device("3", "192.0.2.1", "far"),
            device("4", "10.0.0.5", "twin"),
        ];
        let first = pull("nb", &pools(), &weft.list(), &ext, &mut weft);
        assert_eq!((first.created, first.updated, first.deleted), (2, 0, 0));
        assert_eq!(first.outside, 1);
        assert_eq!(first.held_elsewhere, 1, "the second of two at one address");
        assert!(first.errors.is_empty());
        assert_eq!(
            weft.records[&ip("10.0.0.6")].description.as_deref(),
            Some("nb:2 spare")
        );
        let calls = weft.calls;
        let second = pull("nb", &pools(), &weft.list(), &ext, &mut weft);
        assert_eq!((second.created, second.updated, second.deleted), (0, 0, 0));
        assert!(second.errors.is_empty());
        assert_eq!(weft.calls, calls, "no change asked of weft");
    }

    #[test]
    fn changes_and_removals_there_follow_here_and_nothing_else_is_touched() {
        let mut weft = FakeWeft::default();
        // weft's own allocation, and another sync's device.
        for (a, d) in [("10.0.0.9", None), ("10.0.0.10", Some("php:1"))] {
            weft.records.insert(
                ip(a),
                Record {
                    address: ip(a),
                    status: Status::Allocated,
                    hostname: None,
                    mac: None,
                    description: None,
                    device: d.map(str::to_string),
                },
            );
        }
        let ext = vec![
            device("1", "10.0.0.5", "web"),
            device("2", "10.0.0.7", "db"),
            reserved("3", "10.0.0.8", "spare"),
            device("4", "10.0.0.9", "clash"),
        ];
        let first = pull("nb", &pools(), &weft.list(), &ext, &mut weft);
        assert_eq!(first.created, 3);
        assert_eq!(
            first.held_elsewhere, 1,
            "weft's own allocation is left alone"
        );

        let ext = vec![
            device("1", "10.0.0.15", "web"), // moved
            device("2", "10.0.0.7", "db2"),  // renamed
            device("4", "10.0.0.9", "clash"),
        ]; // 3 is gone
        let next = pull("nb", &pools(), &weft.list(), &ext, &mut weft);
        assert_eq!((next.created, next.updated, next.deleted), (0, 2, 1));
        assert!(!weft.records.contains_key(&ip("10.0.0.5")));
        assert!(!weft.records.contains_key(&ip("10.0.0.8")));
        assert_eq!(
            weft.records[&ip("10.0.0.7")].hostname.as_deref(),
            Some("db2")
        );
        assert!(weft.records[&ip("10.0.0.9")].device.is_none());
        assert_eq!(
            weft.records[&ip("10.0.0.10")].device.as_deref(),
            Some("php:1")
        );

        let known: HashSet<IpAddr> = ext.iter().map(|e| e.address).collect();
        let push: Vec<IpAddr> = to_push("nb", &weft.list(), &known)
            .iter()
            .map(|r| r.address)
            .collect();
        assert_eq!(
            push,
            vec![ip("10.0.0.10")],
            "ours and known ones are not pushed"
        );
    }

    #[test]
    fn an_address_that_turns_from_used_to_reserved_and_back_is_updated_in_place() {
        let mut weft = FakeWeft::default();
        let used = vec![device("1", "10.0.0.5", "web")];
        let reserved_now = vec![reserved("1", "10.0.0.5", "spare")];
        pull("nb", &pools(), &weft.list(), &used, &mut weft);

        let to_reserved = pull("nb", &pools(), &weft.list(), &reserved_now, &mut weft);
        assert_eq!(
            to_reserved,
            Counts {
                updated: 1,
                ..Counts::default()
            }
        );
        assert_eq!(weft.records[&ip("10.0.0.5")].status, Status::Reserved);
        let again = pull("nb", &pools(), &weft.list(), &reserved_now, &mut weft);
        assert_eq!(again, Counts::default());

        let to_used = pull("nb", &pools(), &weft.list(), &used, &mut weft);
        assert_eq!(
            to_used,
            Counts {
                updated: 1,
                ..Counts::default()
            }
        );
        assert_eq!(
            weft.records[&ip("10.0.0.5")].device.as_deref(),
            Some("nb:1")
        );
        let again = pull("nb", &pools(), &weft.list(), &used, &mut weft);
        assert_eq!(again, Counts::default());
    }

    #[test]
    fn texts_from_the_other_side_are_normalised_or_dropped() {
        assert_eq!(
            hostname("Web-1.Example.com."),
            Some("web-1.example.com".into())
        );
        assert_eq!(hostname("not a name"), None);
        assert_eq!(mac("52-54-00-AB-CD-EF"), Some("52:54:00:ab:cd:ef".into()));
        assert_eq!(mac("nope"), None);
        assert_eq!(address("10.0.0.5/24"), Some(ip("10.0.0.5")));
        assert_eq!(address("fd00::7/64"), Some(ip("fd00::7")));
        assert_eq!(address("x"), None);
        assert_eq!(reservation_mark("nb", "nb:12 spare"), Some("12"));
        assert_eq!(reservation_mark("nb", "nbx:12"), None);
        assert_eq!(reservation_description("nb", "1", "a\nb"), "nb:1 a b");
    }
}

/// weft's side of a sync, through the plugin's own `ipam` import: `weft_snapshot()` (weft's
/// pools and held records, every page) and `Weft` (the [`Weft`] changes as `ipam` calls).
/// Expand it in the plugin crate, where `wit_bindgen::generate!` made the import and `ipam`
/// names it (`use weft::plugin::ipam;`): the bindings are the crate's own, so this is a macro
/// rather than functions.
#[macro_export]
macro_rules! weft_through_ipam {
    () => {
        /// weft's pools and held records, every page.
        pub fn weft_snapshot() -> Result<(Vec<$crate::Pool>, Vec<$crate::Record>), String> {
            let mut pools = Vec::new();
            let mut records = Vec::new();
            for p in ipam::pools()? {
                let net: $crate::ipnet::IpNet = p
                    .cidr
                    .parse()
                    .map_err(|_| format!("weft pool {} has cidr {:?}", p.name, p.cidr))?;
                let mut cursor = None;
                loop {
                    let page = ipam::records(&p.name, cursor.as_deref(), 1000)?;
                    for r in page.items {
                        let Ok(address) = r.address.parse() else {
                            continue;
                        };
                        records.push($crate::Record {
                            address,
                            status: match r.status {
                                ipam::Status::Available => $crate::Status::Available,
                                ipam::Status::Allocated => $crate::Status::Allocated,
                                ipam::Status::Reserved => $crate::Status::Reserved,
                                ipam::Status::Quarantine => $crate::Status::Quarantine,
                            },
                            hostname: r.hostname,
                            mac: r.mac,
                            description: r.description,
                            device: r.device,
                        });
                    }
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                pools.push($crate::Pool { name: p.name, net });
            }
            Ok((pools, records))
        }

        /// weft through the `ipam` import.
        pub struct Weft;

        impl $crate::Weft for Weft {
            fn upsert_device(
                &mut self,
                id: &str,
                address: ::std::net::IpAddr,
                hostname: Option<&str>,
                mac: Option<&str>,
            ) -> Result<(), String> {
                ipam::upsert_device(&ipam::Device {
                    id: id.to_string(),
                    address: address.to_string(),
                    hostname: hostname.map(str::to_string),
                    mac: mac.map(str::to_string),
                    platform: None,
                    manufacturer: None,
                })
            }
            fn delete_device(&mut self, id: &str) -> Result<(), String> {
                ipam::delete_device(id)
            }
            fn reserve(
                &mut self,
                address: ::std::net::IpAddr,
                description: &str,
            ) -> Result<(), String> {
                ipam::reserve(&address.to_string(), description)
            }
            fn release(&mut self, address: IpAddr) -> Result<(), String> {
                ipam::release(&address.to_string())
            }
        }
    };
}
