//! An address record and the rules for changing it: which status may follow which, when a
//! description may be set, what a hostname or MAC must look like.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Available,
    Allocated,
    Reserved,
    Quarantine,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Available,
        Status::Allocated,
        Status::Reserved,
        Status::Quarantine,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Available => "available",
            Status::Allocated => "allocated",
            Status::Reserved => "reserved",
            Status::Quarantine => "quarantine",
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Status::ALL.get(v as usize).copied()
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?} (expected available, allocated, reserved or quarantine)"
                )
            })
    }
}

/// `static`: managed by weft. `dhcp`: learned from a device outside the static ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddrType {
    Static,
    Dhcp,
}

impl AddrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AddrType::Static => "static",
            AddrType::Dhcp => "dhcp",
        }
    }
}

impl std::str::FromStr for AddrType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "static" => Ok(AddrType::Static),
            "dhcp" => Ok(AddrType::Dhcp),
            _ => Err(format!("unknown type {s:?} (expected static or dhcp)")),
        }
    }
}

/// What a device tells about the address it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Facts {
    pub hostname: Option<String>,
    pub mac: Option<String>,
    pub platform: Option<String>,
    pub manufacturer: Option<String>,
}

impl Facts {
    pub fn is_empty(&self) -> bool {
        *self == Facts::default()
    }

    /// Checks every field and puts the MAC in its canonical form (lowercase, colons).
    pub fn validated(self) -> Result<Facts, RecordRuleError> {
        Ok(Facts {
            hostname: self.hostname.map(validate_hostname).transpose()?,
            mac: self.mac.map(|m| canonical_mac(&m)).transpose()?,
            platform: self
                .platform
                .map(|s| bounded("platform", s, 100))
                .transpose()?,
            manufacturer: self
                .manufacturer
                .map(|s| bounded("manufacturer", s, 100))
                .transpose()?,
        })
    }
}

/// One address and what weft knows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// The id of the pool the address belongs to.
    pub pool: u64,
    pub status: Status,
    #[serde(rename = "type")]
    pub addr_type: AddrType,
    /// Whether the last ping check saw the address answer.
    pub active: bool,
    #[schema(value_type = Option<String>)]
    #[serde(with = "ts::optional")]
    pub checked_at: Option<jiff::Timestamp>,
    pub hostname: Option<String>,
    pub mac: Option<String>,
    pub platform: Option<String>,
    pub manufacturer: Option<String>,
    /// Free text: what holds the address.
    pub owner: Option<String>,
    /// Set only while the address is reserved.
    pub description: Option<String>,
    /// The device whose sync put the address here, if any.
    pub device: Option<String>,
    #[schema(value_type = String)]
    #[serde(with = "ts")]
    pub created: jiff::Timestamp,
    #[schema(value_type = String)]
    #[serde(with = "ts")]
    pub updated: jiff::Timestamp,
}

impl Record {
    /// An address as it is before anything is said about it.
    pub fn available(
        address: IpAddr,
        pool: u64,
        addr_type: AddrType,
        now: jiff::Timestamp,
    ) -> Self {
        Record {
            address,
            pool,
            status: Status::Available,
            addr_type,
            active: false,
            checked_at: None,
            hostname: None,
            mac: None,
            platform: None,
            manufacturer: None,
            owner: None,
            description: None,
            device: None,
            created: now,
            updated: now,
        }
    }

    /// Moves the record to a new status under the transition rules. Leaving `reserved` clears
    /// the description; returning to `available` clears what held the address.
    pub fn set_status(&mut self, to: Status) -> Result<(), RecordRuleError> {
        use Status::*;
        match (self.status, to) {
            (from, Allocated | Reserved) if from != Available && from != to => {
                return Err(RecordRuleError::NotAvailable { status: from });
            }
            (Allocated, Allocated) => {
                return Err(RecordRuleError::NotAvailable { status: Allocated });
            }
            _ => {}
        }
        if to != Reserved {
            self.description = None;
        }
        if to == Available {
            self.owner = None;
            self.set_facts(Facts::default());
            self.device = None;
        }
        self.status = to;
        Ok(())
    }

    /// What the record says of its device.
    pub fn facts(&self) -> Facts {
        Facts {
            hostname: self.hostname.clone(),
            mac: self.mac.clone(),
            platform: self.platform.clone(),
            manufacturer: self.manufacturer.clone(),
        }
    }

    pub fn set_facts(&mut self, f: Facts) {
        self.hostname = f.hostname;
        self.mac = f.mac;
        self.platform = f.platform;
        self.manufacturer = f.manufacturer;
    }

    /// Sets the description: only a reserved address has one.
    pub fn set_description(&mut self, text: Option<String>) -> Result<(), RecordRuleError> {
        if self.status != Status::Reserved {
            return Err(RecordRuleError::DescriptionNotReserved {
                status: self.status,
            });
        }
        self.description = text.map(|t| bounded("description", t, 1000)).transpose()?;
        Ok(())
    }

    /// Whether the record has something to say, so it must be stored.
    pub fn worth_storing(&self) -> bool {
        self.status != Status::Available
            || !self.facts().is_empty()
            || self.owner.is_some()
            || self.checked_at.is_some()
    }
}

/// Timestamps as RFC 3339 text in JSON, and as integer nanoseconds in compact binary formats
/// (the store's), where parsing text would cost more than the rest of the record.
pub mod ts {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            t.serialize(s)
        } else {
            t.as_nanosecond().serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<jiff::Timestamp, D::Error> {
        if d.is_human_readable() {
            jiff::Timestamp::deserialize(d)
        } else {
            let n = i128::deserialize(d)?;
            jiff::Timestamp::from_nanosecond(n).map_err(serde::de::Error::custom)
        }
    }

    pub mod optional {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<jiff::Timestamp>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                t.serialize(s)
            } else {
                t.map(|t| t.as_nanosecond()).serialize(s)
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<jiff::Timestamp>, D::Error> {
            if d.is_human_readable() {
                Option::<jiff::Timestamp>::deserialize(d)
            } else {
                Option::<i128>::deserialize(d)?
                    .map(|n| jiff::Timestamp::from_nanosecond(n).map_err(serde::de::Error::custom))
                    .transpose()
            }
        }
    }
}

/// A rule about an address record was broken.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordRuleError {
    /// The address is held (allocated, reserved or quarantined) and cannot be taken.
    #[error("address is {} and cannot be taken", status.as_str())]
    NotAvailable { status: Status },
    /// A description was given for an address that is not reserved.
    #[error("description can be set only while the address is reserved (it is {})", status.as_str())]
    DescriptionNotReserved { status: Status },
    #[error("mac {0:?} is not a MAC address (expected six hex pairs, e.g. 52:54:00:12:34:56)")]
    BadMac(String),
    #[error(
        "hostname {0:?} is not a valid hostname (letters, digits, '-', '.', up to 253 characters)"
    )]
    BadHostname(String),
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
}

pub fn bounded(field: &'static str, s: String, max: usize) -> Result<String, RecordRuleError> {
    if s.chars().count() > max {
        return Err(RecordRuleError::TooLong { field, max });
    }
    Ok(s)
}

fn validate_hostname(h: String) -> Result<String, RecordRuleError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(h)
    } else {
        Err(RecordRuleError::BadHostname(h))
    }
}

/// `52-54-00-AB-CD-EF`, `5254.00ab.cdef` and `52:54:00:ab:cd:ef` are one MAC.
pub fn canonical_mac(m: &str) -> Result<String, RecordRuleError> {
    let hex: String = m
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RecordRuleError::BadMac(m.to_string()));
    }
    let hex = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
    Ok(pairs.join(":"))
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
    fn a_held_address_cannot_be_allocated_or_reserved() {
        let mut r = rec();
        r.set_status(Status::Allocated).unwrap();
        assert_eq!(
            r.set_status(Status::Allocated),
            Err(RecordRuleError::NotAvailable {
                status: Status::Allocated
            })
        );
        assert!(r.set_status(Status::Reserved).is_err());
        r.set_status(Status::Quarantine).unwrap();
        r.set_status(Status::Available).unwrap();
        r.set_status(Status::Reserved).unwrap();
    }

    #[test]
    fn description_only_while_reserved() {
        let mut r = rec();
        assert!(matches!(
            r.set_description(Some("printer".into())),
            Err(RecordRuleError::DescriptionNotReserved { .. })
        ));
        r.set_status(Status::Reserved).unwrap();
        r.set_description(Some("printer".into())).unwrap();
        r.set_status(Status::Available).unwrap();
        assert_eq!(r.description, None);
    }

    #[test]
    fn mac_addresses_are_stored_in_one_form() {
        assert_eq!(
            canonical_mac("52-54-00-AB-CD-EF").unwrap(),
            "52:54:00:ab:cd:ef"
        );
        assert_eq!(
            canonical_mac("5254.00ab.cdef").unwrap(),
            "52:54:00:ab:cd:ef"
        );
        assert!(canonical_mac("52:54:00").is_err());
    }

    #[test]
    fn hostnames_are_checked() {
        let f = Facts {
            hostname: Some("web-1.example".into()),
            ..Facts::default()
        };
        assert!(f.validated().is_ok());
        let f = Facts {
            hostname: Some("<script>".into()),
            ..Facts::default()
        };
        assert!(f.validated().is_err());
    }
}
