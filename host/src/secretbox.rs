//! Node secrets at rest: sealed with XChaCha20-Poly1305 under a 32-byte key kept in its own
//! file in the data dir (`node-secrets.key`, mode 0600), apart from the database, so a copy
//! of the database alone (a backup, a stolen disk image of it) does not give anyone the
//! power to command the agents. The node's name is the associated data: a sealed secret
//! moved onto another node's record does not open.

use crate::store::SealedSecret;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;

/// The key file's name in the data dir.
pub const KEY_FILE: &str = "node-secrets.key";

#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    #[error(transparent)]
    KeyFile(#[from] crate::keyfile::KeyFileError),
    /// Wrong key file, or the record was altered.
    #[error("the secret of node {0:?} does not open with this data dir's key file")]
    Unseal(String),
}

/// The controller's sealing key. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// Opens the key file of `data_dir`, creating it (0600, from the OS's random source) on
    /// first use. A key file that others may read is refused.
    pub fn open_or_create(data_dir: &Path) -> Result<SecretBox, SecretBoxError> {
        let key = crate::keyfile::load_or_create(&data_dir.join(KEY_FILE))?;
        Ok(SecretBox::from_key(key))
    }

    pub fn from_key(key: [u8; 32]) -> SecretBox {
        SecretBox {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Seals `secret` for `node`, under a fresh random nonce.
    pub fn seal(&self, node: &str, secret: &[u8]) -> SealedSecret {
        let nonce: [u8; 24] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: node.as_bytes(),
                },
            )
            // Encrypting into a Vec fails only for messages beyond 2^38 bytes.
            .unwrap_or_default();
        SealedSecret { nonce, ciphertext }
    }

    /// Opens what [`SecretBox::seal`] sealed for `node`.
    pub fn open(&self, node: &str, sealed: &SealedSecret) -> Result<Vec<u8>, SecretBoxError> {
        self.cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: node.as_bytes(),
                },
            )
            .map_err(|_| SecretBoxError::Unseal(node.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_sealed_secret_opens_only_for_its_node_and_with_its_key() {
        let b = SecretBox::from_key([7; 32]);
        let sealed = b.seal("n1", b"the secret");
        assert_eq!(b.open("n1", &sealed).unwrap(), b"the secret");
        assert!(b.open("n2", &sealed).is_err(), "moved to another node");
        assert!(SecretBox::from_key([8; 32]).open("n1", &sealed).is_err());
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert!(b.open("n1", &altered).is_err());
        assert_ne!(b.seal("n1", b"x").nonce, b.seal("n1", b"x").nonce);
    }

    #[test]
    fn the_key_file_is_made_0600_once_and_an_open_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::open_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = a.seal("n", b"s");
        let again = SecretBox::open_or_create(dir.path()).unwrap();
        assert_eq!(again.open("n", &sealed).unwrap(), b"s", "the same key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretBox::open_or_create(dir.path()),
            Err(SecretBoxError::KeyFile(
                crate::keyfile::KeyFileError::Open { .. }
            ))
        ));
    }
}
