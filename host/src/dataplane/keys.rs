//! An interface's private key: made on the node from the OS's random source, kept in
//! `DATA_DIR/keys/<interface>.key` (mode 0600 from the moment it exists), and never sent
//! anywhere. Its `Debug` shows only the public half.

use crate::keyfile::{self, KeyFileError};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key folder {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] KeyFileError),
}

/// An interface's keypair.
#[derive(Clone)]
pub struct KeyPair {
    pub private: StaticSecret,
    pub public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyPair {{ public: {} }}",
            crate::agent_api::PublicKey(*self.public.as_bytes())
        )
    }
}

impl KeyPair {
    /// The pair of a private key's bytes.
    pub fn from_private(bytes: [u8; 32]) -> KeyPair {
        let private = StaticSecret::from(bytes);
        let public = PublicKey::from(&private);
        KeyPair { private, public }
    }
}

/// Where an interface's key lives.
pub fn key_path(data_dir: &Path, iface: &str) -> PathBuf {
    data_dir.join("keys").join(format!("{iface}.key"))
}

/// The interface's keypair: read from its key file, or made and written there (0600) the
/// first time. A key file others may read is refused.
pub fn load_or_create(data_dir: &Path, iface: &str) -> Result<KeyPair, KeyError> {
    let path = key_path(data_dir, iface);
    if let Some(dir) = path.parent() {
        let err = |source| KeyError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(KeyPair::from_private(keyfile::load_or_create(&path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_in_a_0600_file_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), "weft0").unwrap();
        let path = key_path(dir.path(), "weft0");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = load_or_create(dir.path(), "weft0").unwrap();
        assert_eq!(a.public.as_bytes(), b.public.as_bytes());
        assert!(!format!("{a:?}").contains(&hex::encode(a.private.to_bytes())));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_or_create(dir.path(), "weft0"),
            Err(KeyError::File(KeyFileError::Open { .. }))
        ));
    }
}
