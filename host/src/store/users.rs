//! Users of the web pages: a name, a role and the argon2id hash of a password (never the
//! password). Hashing and verifying are slow by design (tens of milliseconds): async callers
//! run them on a blocking thread, and hashing happens before the writer is involved.

use super::{Reader, Result, StoreError, Writer, decode, encode, tokens::valid_name};
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// What a user may do in the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May change things.
    Admin,
    /// Reads only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!("role must be admin or viewer, not {other:?}")),
        }
    }
}

/// A user as stored.
#[derive(Clone, Serialize, Deserialize)]
struct User {
    name: String,
    role: Role,
    /// PHC string: `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.
    password_hash: String,
    created: jiff::Timestamp,
}

/// What the rest of weft sees of a user: never the hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub created: jiff::Timestamp,
}

impl From<User> for UserInfo {
    fn from(u: User) -> Self {
        UserInfo {
            name: u.name,
            role: u.role,
            created: u.created,
        }
    }
}

/// argon2id with OWASP's parameters (m=19 MiB, t=2, p=1). Verification reads the parameters
/// from the stored hash, so raising them later keeps old hashes valid.
fn argon2() -> Argon2<'static> {
    // The constants are within argon2's bounds, so this cannot fail; the fallback is the same.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or(Params::DEFAULT);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with a fresh random salt. Slow by design: not on an async worker.
pub fn hash_password(password: &str) -> Result<String> {
    if password.is_empty() {
        return Err(StoreError::Invalid("the password must not be empty".into()));
    }
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Invalid(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches the PHC string `hash`.
fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .ok()
        .is_some_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash no password is checked against in earnest: verifying an unknown user's password
/// against it costs as much as a real check, so timing does not reveal which names exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("weft decoy password").unwrap_or_default())
}

impl Reader {
    pub fn user(&self, name: &str) -> Result<Option<UserInfo>> {
        match self.t.users()?.get(name)? {
            Some(g) => Ok(Some(decode::<User>("users", g.value())?.into())),
            None => Ok(None),
        }
    }

    pub fn has_users(&self) -> Result<bool> {
        Ok(self.t.users()?.first()?.is_some())
    }

    /// The user, if `password` is theirs. Slow by design (argon2): call it from a blocking
    /// thread, never an async worker.
    pub fn verify_user(&self, name: &str, password: &str) -> Result<Option<UserInfo>> {
        let user = match self.t.users()?.get(name)? {
            Some(g) => decode::<User>("users", g.value())?,
            None => {
                verify(decoy_hash(), password);
                return Ok(None);
            }
        };
        Ok(verify(&user.password_hash, password).then(|| user.into()))
    }
}

impl Writer<'_> {
    pub fn has_users(&mut self) -> Result<bool> {
        Ok(self.t.users.first()?.is_some())
    }

    /// Stores a user whose password was hashed by the caller with [`hash_password`] (the
    /// writer thread must not spend tens of milliseconds hashing).
    pub fn create_user(&mut self, name: &str, role: Role, password_hash: &str) -> Result<UserInfo> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(
                "user name must be 1 to 64 letters, digits, '-', '_', '.' or '@'".into(),
            ));
        }
        // Only argon2id hashes are stored: anything else (say, a plain password sent by
        // mistake over the admin socket) is refused.
        let argon2id = PasswordHash::new(password_hash)
            .is_ok_and(|h| h.algorithm.as_str() == Algorithm::Argon2id.as_str());
        if !argon2id {
            return Err(StoreError::Invalid(
                "the password hash is not an argon2id PHC string".into(),
            ));
        }
        if self.t.users.get(name)?.is_some() {
            return Err(StoreError::UserNameTaken(name.to_string()));
        }
        let user = User {
            name: name.to_string(),
            role,
            password_hash: password_hash.to_string(),
            created: self.now,
        };
        self.t.users.insert(name, encode(&user).as_slice())?;
        Ok(user.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        (dir, store)
    }

    #[test]
    fn password_is_stored_as_an_argon2id_hash_with_owasp_parameters() {
        let hash = hash_password("correct horse").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
    }

    #[test]
    fn right_password_verifies_and_wrong_one_does_not() {
        let (_d, store) = store();
        let hash = hash_password("s3cret").unwrap();
        store
            .write_blocking(move |w| w.create_user("ann", Role::Admin, &hash))
            .unwrap();
        let ok = store.read(|r| r.verify_user("ann", "s3cret")).unwrap();
        assert_eq!(ok.map(|u| u.role), Some(Role::Admin));
        assert!(
            store
                .read(|r| r.verify_user("ann", "nope"))
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .read(|r| r.verify_user("bob", "s3cret"))
                .unwrap()
                .is_none()
        );
        assert!(store.read(|r| r.has_users()).unwrap());
    }

    #[test]
    fn taken_name_is_refused() {
        let (_d, store) = store();
        let hash = hash_password("pw").unwrap();
        let h = hash.clone();
        store
            .write_blocking(move |w| w.create_user("ann", Role::Viewer, &h))
            .unwrap();
        let again = store.write_blocking(move |w| w.create_user("ann", Role::Admin, &hash));
        assert!(matches!(again, Err(StoreError::UserNameTaken(_))));
    }

    #[test]
    fn bad_names_empty_passwords_and_foreign_hashes_are_refused() {
        let (_d, store) = store();
        let hash = hash_password("pw").unwrap();
        let bad = store.write_blocking(move |w| w.create_user("<script>", Role::Admin, &hash));
        assert!(matches!(bad, Err(StoreError::Invalid(_))));
        assert!(hash_password("").is_err());
        let plain = store.write_blocking(|w| w.create_user("ann", Role::Admin, "hunter2"));
        assert!(matches!(plain, Err(StoreError::Invalid(_))));
        assert!(!store.read(|r| r.has_users()).unwrap());
    }
}
