//! `plugin.toml`: what a plugin says it is and what it may do. Parsed and checked before the
//! component is even read, so a plugin that asks for too much never runs.
//!
//! ```toml
//! name = "netbox-sync"
//! version = "0.1.0"
//! world = "ipam-sync"
//! description = "Keeps weft and NetBox in step"
//!
//! [config]
//! url = "https://netbox.example.com"
//!
//! [permissions]
//! outbound_hosts = ["netbox.example.com:443"]
//! memory_mb = 32
//! time_limit_ms = 30000
//! interval_secs = 300
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The most memory any plugin may have, whatever its manifest asks.
pub const MAX_MEMORY_MB: u32 = 256;
/// Memory when the manifest does not say.
pub const DEFAULT_MEMORY_MB: u32 = 64;
/// The longest any single call may run, whatever the manifest asks.
pub const MAX_TIME_LIMIT: Duration = Duration::from_secs(300);
/// The shortest interval between scheduled runs, so a plugin cannot busy the host.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);

/// The worlds of `wit/plugin.wit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    NodeSelector,
    PingCheck,
    IpamSync,
}

impl World {
    pub const ALL: [World; 3] = [World::NodeSelector, World::PingCheck, World::IpamSync];

    pub fn as_str(self) -> &'static str {
        match self {
            World::NodeSelector => "node-selector",
            World::PingCheck => "ping-check",
            World::IpamSync => "ipam-sync",
        }
    }

    /// The interface the world exports: how a component shows which world it was built for.
    pub fn export(self) -> &'static str {
        match self {
            World::NodeSelector => "selector",
            World::PingCheck => "checker",
            World::IpamSync => "syncer",
        }
    }

    /// The contract's interfaces a component of this world may import (`types` comes with
    /// any interface that uses it).
    pub fn imports(self) -> &'static [&'static str] {
        match self {
            World::NodeSelector => &["types", "log", "config"],
            World::PingCheck => &["types", "log", "config", "probe"],
            World::IpamSync => &["types", "log", "config", "ipam", "http"],
        }
    }

    /// How long one call may run when the manifest does not say.
    pub fn default_time_limit(self) -> Duration {
        match self {
            World::NodeSelector => Duration::from_millis(50),
            World::PingCheck => Duration::from_secs(10),
            World::IpamSync => Duration::from_secs(60),
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The manifest as written. Unknown keys are refused: a permission weft does not know is
/// never silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    world: World,
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    permissions: RawPermissions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    outbound_hosts: Vec<String>,
    #[serde(default)]
    probe_ports: Vec<u16>,
    memory_mb: Option<u32>,
    time_limit_ms: Option<u64>,
    interval_secs: Option<u64>,
}

/// A host and port a plugin may send HTTP requests to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// Lower-cased.
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// What a plugin may do beyond computing: each grant is something the host checks on every
/// use (see `grants`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub outbound_hosts: Vec<HostPort>,
    pub probe_ports: Vec<u16>,
    pub memory_bytes: usize,
    pub time_limit: Duration,
    /// How often the scheduler runs a ping check or a sync; none for a selector.
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub world: World,
    pub description: String,
    /// The `[config]` table, each value as the string the plugin reads.
    pub config: BTreeMap<String, String>,
    pub permissions: Permissions,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("plugin.toml is not valid: {0}")]
    Syntax(String),
    #[error("plugin name {0:?} must be 1 to 64 of a-z, 0-9 and '-', starting with a letter")]
    BadName(String),
    #[error("plugin version {0:?} is not a version like 1.2.3")]
    BadVersion(String),
    #[error("config value {key:?} must be a string, number or boolean")]
    BadConfigValue { key: String },
    #[error("outbound host {0:?} must be host:port (for example netbox.example.com:443)")]
    BadHost(String),
    #[error("a {world} plugin cannot be granted {permission}: only {allowed} plugins use it")]
    NotForWorld {
        world: World,
        permission: &'static str,
        allowed: World,
    },
    #[error("memory_mb must be between 1 and {MAX_MEMORY_MB}, not {0}")]
    BadMemory(u32),
    #[error("time_limit_ms must be between 1 and {max}, not {0}", max = MAX_TIME_LIMIT.as_millis())]
    BadTimeLimit(u64),
    #[error("interval_secs must be at least {min}, not {0}", min = MIN_INTERVAL.as_secs())]
    BadInterval(u64),
    #[error("probe port 0 is not a port")]
    BadPort,
}

/// A plugin name is also a file name, a URL segment and a log field: keep it plain.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn valid_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn host_port(text: &str) -> Result<HostPort, ManifestError> {
    let bad = || ManifestError::BadHost(text.to_string());
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':');
    if host.is_empty() || port == 0 || !host.bytes().all(plain) {
        return Err(bad());
    }
    Ok(HostPort {
        host: host.to_ascii_lowercase(),
        port,
    })
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(e.message().to_string()))?;
        if !valid_name(&raw.name) {
            return Err(ManifestError::BadName(raw.name));
        }
        if !valid_version(&raw.version) {
            return Err(ManifestError::BadVersion(raw.version));
        }
        let mut config = BTreeMap::new();
        for (key, value) in raw.config {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => {
                    return Err(ManifestError::BadConfigValue { key });
                }
            };
            config.insert(key, text);
        }
        let permissions = Self::permissions(raw.world, raw.permissions)?;
        Ok(Manifest {
            name: raw.name,
            version: raw.version,
            world: raw.world,
            description: raw.description,
            config,
            permissions,
        })
    }

    fn permissions(world: World, raw: RawPermissions) -> Result<Permissions, ManifestError> {
        let only = |permission, allowed| ManifestError::NotForWorld {
            world,
            permission,
            allowed,
        };
        if !raw.outbound_hosts.is_empty() && world != World::IpamSync {
            return Err(only("outbound_hosts", World::IpamSync));
        }
        if !raw.probe_ports.is_empty() && world != World::PingCheck {
            return Err(only("probe_ports", World::PingCheck));
        }
        if raw.interval_secs.is_some() && world == World::NodeSelector {
            return Err(ManifestError::NotForWorld {
                world,
                permission: "interval_secs",
                allowed: World::PingCheck,
            });
        }
        if raw.probe_ports.contains(&0) {
            return Err(ManifestError::BadPort);
        }
        let memory_mb = raw.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
        if !(1..=MAX_MEMORY_MB).contains(&memory_mb) {
            return Err(ManifestError::BadMemory(memory_mb));
        }
        let time_limit = match raw.time_limit_ms {
            None => world.default_time_limit(),
            Some(ms) if ms >= 1 && u128::from(ms) <= MAX_TIME_LIMIT.as_millis() => {
                Duration::from_millis(ms)
            }
            Some(ms) => return Err(ManifestError::BadTimeLimit(ms)),
        };
        let interval = match (world, raw.interval_secs) {
            (World::NodeSelector, _) => None,
            (_, Some(s)) if s < MIN_INTERVAL.as_secs() => {
                return Err(ManifestError::BadInterval(s));
            }
            (_, Some(s)) => Some(Duration::from_secs(s)),
            (World::PingCheck, None) => Some(Duration::from_secs(60)),
            (World::IpamSync, None) => Some(Duration::from_secs(300)),
        };
        let mut outbound_hosts = raw
            .outbound_hosts
            .iter()
            .map(|h| host_port(h))
            .collect::<Result<Vec<_>, _>>()?;
        outbound_hosts.sort();
        outbound_hosts.dedup();
        let mut probe_ports = raw.probe_ports;
        probe_ports.sort_unstable();
        probe_ports.dedup();
        Ok(Permissions {
            outbound_hosts,
            probe_ports,
            memory_bytes: memory_mb as usize * (1 << 20),
            time_limit,
            interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELECTOR: &str = r#"
        name = "least-loaded"
        version = "0.1.0"
        world = "node-selector"
    "#;

    #[test]
    fn a_minimal_selector_gets_the_defaults_of_its_world() {
        let m = Manifest::parse(SELECTOR).unwrap();
        assert_eq!(m.world, World::NodeSelector);
        assert_eq!(m.permissions.memory_bytes, 64 << 20);
        assert_eq!(m.permissions.time_limit, Duration::from_millis(50));
        assert_eq!(m.permissions.interval, None);
        assert!(m.permissions.outbound_hosts.is_empty());
    }

    #[test]
    fn an_unknown_permission_is_refused_by_name() {
        let text = format!("{SELECTOR}\n[permissions]\nfilesystem = [\"/\"]\n");
        let err = Manifest::parse(&text).unwrap_err().to_string();
        assert!(err.contains("unknown field `filesystem`"), "{err}");
    }

    #[test]
    fn a_selector_cannot_ask_for_the_network() {
        let text = format!("{SELECTOR}\n[permissions]\noutbound_hosts = [\"x.example:443\"]\n");
        assert_eq!(
            Manifest::parse(&text),
            Err(ManifestError::NotForWorld {
                world: World::NodeSelector,
                permission: "outbound_hosts",
                allowed: World::IpamSync
            })
        );
    }

    #[test]
    fn memory_beyond_the_host_maximum_is_refused() {
        let text = format!("{SELECTOR}\n[permissions]\nmemory_mb = 4096\n");
        assert_eq!(Manifest::parse(&text), Err(ManifestError::BadMemory(4096)));
    }

    #[test]
    fn sync_hosts_are_host_and_port_lower_cased() {
        let m = Manifest::parse(
            r#"
            name = "netbox-sync"
            version = "1.2.3"
            world = "ipam-sync"
            [config]
            url = "http://NetBox.example:8000"
            page_size = 100
            [permissions]
            outbound_hosts = ["NetBox.example:8000", "[::1]:8080"]
            "#,
        )
        .unwrap();
        assert_eq!(m.config["page_size"], "100");
        assert_eq!(
            m.permissions.outbound_hosts,
            vec![
                HostPort {
                    host: "::1".into(),
                    port: 8080
                },
                HostPort {
                    host: "netbox.example".into(),
                    port: 8000
                }
            ]
        );
        assert_eq!(m.permissions.interval, Some(Duration::from_secs(300)));
        for bad in ["netbox.example", "netbox.example:0", "a b:80", ":80"] {
            let text = format!(
                "name = \"s\"\nversion = \"1.0.0\"\nworld = \"ipam-sync\"\n[permissions]\noutbound_hosts = [\"{bad}\"]\n"
            );
            assert_eq!(
                Manifest::parse(&text),
                Err(ManifestError::BadHost(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_are_plain() {
        for bad in ["", "Upper", "1st", "has space", "dots.no", "../up"] {
            let text = format!("name = \"{bad}\"\nversion = \"1.0.0\"\nworld = \"ping-check\"\n");
            assert_eq!(
                Manifest::parse(&text),
                Err(ManifestError::BadName(bad.into()))
            );
        }
    }
}
