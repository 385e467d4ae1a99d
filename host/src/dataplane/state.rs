//! The agent's desired data-plane state, kept in `DATA_DIR/dataplane.json` so that after a
//! restart or a crash the agent brings its interfaces and peers back by itself. Written whole
//! to a temporary file, synced, renamed over the old one and the folder synced: a crash
//! leaves the old state or the new, never half of one.

use crate::agent_api::{InterfaceSpec, MeshSpec, PeerSpec};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "dataplane.json";

/// One interface as the controller asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceState {
    pub name: String,
    pub spec: InterfaceSpec,
    pub peers: Vec<PeerSpec>,
}

/// One mesh as the controller last applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshState {
    pub id: String,
    pub spec: MeshSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub interfaces: Vec<InterfaceState>,
    #[serde(default)]
    pub meshes: Vec<MeshState>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl State {
    pub fn interface(&self, name: &str) -> Option<&InterfaceState> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    pub fn mesh(&self, id: &str) -> Option<&MeshState> {
        self.meshes.iter().find(|m| m.id == id)
    }

    pub fn interface_mut(&mut self, name: &str) -> Option<&mut InterfaceState> {
        self.interfaces.iter_mut().find(|i| i.name == name)
    }

    /// The state saved in `dir`, or an empty one if none was ever saved.
    pub fn load(dir: &Path) -> Result<State, StateError> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Saves the state durably (see the module's comment).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        // Serializing plain structs of strings and numbers cannot fail.
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_api::PublicKey;

    #[test]
    fn a_state_file_from_before_meshes_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), r#"{"interfaces": []}"#).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), State::default());
    }

    #[test]
    fn state_survives_a_save_and_load_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), State::default());
        let state = State {
            interfaces: vec![InterfaceState {
                name: "weft0".into(),
                spec: InterfaceSpec {
                    address: "10.8.0.1/24".parse().unwrap(),
                    listen_port: 51820,
                },
                peers: vec![PeerSpec {
                    public_key: PublicKey([3; 32]),
                    allowed_ips: vec!["10.8.0.2/32".parse().unwrap()],
                    persistent_keepalive: Some(25),
                }],
            }],
            meshes: vec![MeshState {
                id: "0123456789abcdef".into(),
                spec: MeshSpec {
                    generation: 3,
                    interface: "wg-01234567".into(),
                    address: "10.99.0.1/32".parse().unwrap(),
                    listen_port: 51821,
                    mtu: 1420,
                    forward: true,
                    peers: vec![crate::agent_api::MeshPeerSpec {
                        public_key: PublicKey([4; 32]),
                        endpoint: Some("198.51.100.2:51821".into()),
                        allowed_ips: vec!["10.99.0.2/32".parse().unwrap()].into(),
                        persistent_keepalive: Some(25),
                    }],
                },
            }],
        };
        state.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), state);
        assert!(!dir.path().join("dataplane.json.tmp").exists());
    }
}
