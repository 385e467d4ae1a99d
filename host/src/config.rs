//! Settings for `weft serve` and the admin commands: a flag wins over its `WEFT_*`
//! environment variable (clap reads both), which wins over the optional config file, which
//! wins over the embedded default. No file is needed.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_DATA_DIR: &str = "./weft-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// How often allocated and reserved addresses are pinged, when nothing says otherwise.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(60);
/// How often every enabled node's agent is asked for its health.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);
/// How long one call to an agent may take.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// What a config file may hold (TOML). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    /// Mark the session cookie `Secure` (see [`Config::secure_cookies`]).
    pub secure_cookies: Option<bool>,
    /// Another folder of plugins, besides DATA_DIR/plugins.
    pub plugins_dir: Option<PathBuf>,
    /// The node-selector plugin that places `auto` peers (default: the built-in
    /// `least-loaded`, which is also the fallback when the plugin fails).
    pub placement_plugin: Option<String>,
    /// The ping-check plugin that checks addresses (default: the built-in ICMP check).
    pub ping_plugin: Option<String>,
    /// Seconds between ping sweeps; 0 turns them off.
    pub ping_interval_secs: Option<u64>,
    /// Seconds between health polls of the nodes; 0 turns them off.
    pub health_interval_secs: Option<u64>,
    /// Seconds one call to an agent may take.
    pub health_timeout_secs: Option<u64>,
    /// Serve HTTPS with this certificate chain (PEM) and `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A CA (PEM) that signs agents' HTTPS certificates.
    pub agent_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The settled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Send the session cookie with `Secure`, so browsers only return it over HTTPS. weft
    /// serves plain HTTP itself, so this is for when a TLS proxy sits in front; default off.
    pub secure_cookies: bool,
    /// Another folder of plugins, besides [`Config::plugins_dirs`]'s DATA_DIR/plugins.
    pub plugins_dir: Option<PathBuf>,
    /// How `auto` chooses the node of a new peer.
    pub placement: crate::placement::Strategy,
    /// The ping-check plugin that sets addresses' `active` flag; none: the built-in ICMP
    /// check.
    pub ping_plugin: Option<String>,
    /// Time between ping sweeps; none: no sweeps.
    pub ping_interval: Option<Duration>,
    /// Time between health polls of the nodes; none: no polls.
    pub health_interval: Option<Duration>,
    /// How long one call to an agent may take (polls, tests, peers).
    pub agent_timeout: Duration,
    /// Serve HTTPS (rustls) with this certificate chain and key, both PEM; none: plain HTTP.
    pub tls: Option<Tls>,
    /// A CA (PEM) trusted for agents' `https://` URLs, besides the system's roots.
    pub agent_ca: Option<PathBuf>,
}

/// Where the TLS certificate chain and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    pub fn resolve(
        data_dir: Option<PathBuf>,
        listen: Option<SocketAddr>,
        file: FileConfig,
    ) -> Config {
        Config {
            data_dir: data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: listen.or(file.listen).unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .parse()
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
            }),
            secure_cookies: file.secure_cookies.unwrap_or(false),
            agent_ca: file.agent_ca,
            tls: match (file.tls_cert, file.tls_key) {
                (Some(cert), Some(key)) => Some(Tls { cert, key }),
                _ => None,
            },
            plugins_dir: file.plugins_dir,
            placement: match file.placement_plugin {
                Some(name) => crate::placement::Strategy::Plugin(name),
                None => crate::placement::Strategy::LeastLoaded,
            },
            ping_plugin: file.ping_plugin,
            ping_interval: match file.ping_interval_secs {
                None => Some(DEFAULT_PING_INTERVAL),
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
            },
            health_interval: match file.health_interval_secs {
                None => Some(DEFAULT_HEALTH_INTERVAL),
                Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
            },
            agent_timeout: match file.health_timeout_secs {
                None | Some(0) => DEFAULT_HEALTH_TIMEOUT,
                Some(secs) => Duration::from_secs(secs),
            },
        }
    }

    /// The folders plugins load from: DATA_DIR/plugins, then `--plugins-dir`.
    pub fn plugins_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.data_dir.join("plugins")];
        dirs.extend(self.plugins_dir.clone());
        dirs
    }

    /// Where compiled plugins are cached between runs.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.data_dir.join("plugin-cache")
    }

    pub fn db_path(&self) -> PathBuf {
        db_path(&self.data_dir)
    }
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("weft.redb")
}

pub fn admin_socket(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let file: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/weft\"").unwrap();
        let c = Config::resolve(Some("/tmp/x".into()), None, file);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.listen.port(), 9000);
        let c = Config::resolve(None, None, FileConfig::default());
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn cookies_are_secure_only_when_configured() {
        let c = Config::resolve(None, None, FileConfig::default());
        assert!(!c.secure_cookies);
        let file: FileConfig = toml::from_str("secure_cookies = true").unwrap();
        assert!(Config::resolve(None, None, file).secure_cookies);
    }

    #[test]
    fn peers_are_placed_by_least_loaded_unless_a_plugin_is_named() {
        use crate::placement::Strategy;
        let c = Config::resolve(None, None, FileConfig::default());
        assert_eq!(c.placement, Strategy::LeastLoaded);
        let file: FileConfig = toml::from_str("placement_plugin = \"by-region\"").unwrap();
        assert_eq!(
            Config::resolve(None, None, file).placement,
            Strategy::Plugin("by-region".into())
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        assert!(toml::from_str::<FileConfig>("lissten = \"x\"").is_err());
    }
}
