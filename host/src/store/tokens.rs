//! API tokens: random secrets, stored only as their SHA-256 (a token has 256 random bits, so
//! a fast hash is enough; passwords, which have far fewer, use argon2 instead).

use super::{Reader, Result, StoreError, Writer, decode, encode};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A token as stored: never the secret itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    pub name: String,
    pub sha256: String,
    pub read_only: bool,
    pub created: jiff::Timestamp,
}

/// What listing shows of a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenInfo {
    pub name: String,
    pub read_only: bool,
    pub created: jiff::Timestamp,
}

impl From<Token> for TokenInfo {
    fn from(t: Token) -> Self {
        TokenInfo {
            name: t.name,
            read_only: t.read_only,
            created: t.created,
        }
    }
}

/// A new secret: `weft_` and 256 random bits in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("weft_{}", hex::encode(bytes))
}

/// The name rule of tokens and users: 1 to 64 letters, digits, '-', '_', '.' or '@'.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

impl Reader {
    /// The token a secret belongs to, if any. The look-up is by hash, so the comparison never
    /// touches the secret byte by byte.
    pub fn token_by_secret(&self, secret: &str) -> Result<Option<TokenInfo>> {
        let Some(name) = self.t.token_hashes()?.get(digest(secret).as_slice())? else {
            return Ok(None);
        };
        match self.t.tokens()?.get(name.value())? {
            Some(t) => Ok(Some(decode::<Token>("tokens", t.value())?.into())),
            None => Ok(None),
        }
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let mut out = Vec::new();
        for e in self.t.tokens()?.iter()? {
            out.push(decode::<Token>("tokens", e?.1.value())?.into());
        }
        Ok(out)
    }
}

impl Writer<'_> {
    /// Stores a token for `secret` (made by the caller with [`new_secret`]).
    pub fn create_token(&mut self, name: &str, secret: &str, read_only: bool) -> Result<TokenInfo> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(
                "token name must be 1 to 64 letters, digits, '-', '_', '.' or '@'".into(),
            ));
        }
        if self.t.tokens.get(name)?.is_some() {
            return Err(StoreError::TokenNameTaken(name.to_string()));
        }
        let hash = digest(secret);
        let token = Token {
            name: name.to_string(),
            sha256: hex::encode(&hash),
            read_only,
            created: self.now,
        };
        self.t.tokens.insert(name, encode(&token).as_slice())?;
        self.t.token_hashes.insert(hash.as_slice(), name)?;
        Ok(token.into())
    }

    pub fn revoke_token(&mut self, name: &str) -> Result<()> {
        let token: Token = match self.t.tokens.remove(name)? {
            Some(g) => decode("tokens", g.value())?,
            None => return Err(StoreError::NotFound(format!("token {name:?}"))),
        };
        let hash = hex::decode(&token.sha256).map_err(|e| StoreError::corrupt("tokens", e))?;
        self.t.token_hashes.remove(hash.as_slice())?;
        Ok(())
    }
}
