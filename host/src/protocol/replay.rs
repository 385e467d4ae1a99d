//! Replay protection: a verified request's nonce is recorded, durably, before the request is
//! acted on; a nonce already recorded inside the window is refused.

use super::{Nonce, Secrets, SignedHeaders, Verified, VerifyError, WINDOW_SECS, verify_request};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// Where accepted nonces are kept. An agent's implementation must make `remember` durable
/// before it returns: a nonce accepted before a crash must still be refused after it.
pub trait NonceStore {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Records `nonce` (whose request carried `timestamp`) unless already recorded, and
    /// forgets nonces whose timestamp is before `forget_before`. `Ok(true)`: it was new.
    fn remember(
        &self,
        nonce: Nonce,
        timestamp: i64,
        forget_before: i64,
    ) -> Result<bool, Self::Error>;
}

/// Why a request was not accepted: refused, or the nonce could not be recorded (then it is
/// not acted on either — better refused than replayable).
#[derive(Debug, thiserror::Error)]
pub enum GuardError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Refused(#[from] VerifyError),
    #[error("cannot record the nonce")]
    Store(#[source] E),
}

/// Verification and the replay check together: what an agent runs on each request.
pub struct ReplayGuard<S> {
    /// Replaced whole by a rotation; read on every request.
    secrets: RwLock<Secrets>,
    node: String,
    store: S,
}

impl<S: NonceStore> ReplayGuard<S> {
    pub fn new(secrets: Secrets, node: impl Into<String>, store: S) -> Self {
        ReplayGuard {
            secrets: RwLock::new(secrets),
            node: node.into(),
            store,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The secrets accepted now.
    pub fn secrets(&self) -> Secrets {
        self.secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Accepts `secrets` from the next request on.
    pub fn set_secrets(&self, secrets: Secrets) {
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = secrets;
    }

    /// Verifies the request, then records its nonce. The nonce is recorded only once the
    /// signature has verified, so forged requests cannot fill the store.
    pub fn check(
        &self,
        headers: &SignedHeaders<'_>,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, GuardError<S::Error>> {
        let verified = verify_request(
            &self.secrets(),
            &self.node,
            headers,
            method,
            path,
            query,
            body,
            now,
        )?;
        // A nonce whose timestamp is outside the window can no longer pass the timestamp
        // check, so it need not be remembered.
        let fresh = self
            .store
            .remember(verified.nonce, verified.timestamp, now - WINDOW_SECS)
            .map_err(GuardError::Store)?;
        if !fresh {
            return Err(VerifyError::Replayed.into());
        }
        Ok(verified)
    }
}

/// Nonces in memory: for tests, and for the pure logic's unit tests.
#[derive(Default, Debug)]
pub struct MemoryNonces(Mutex<HashMap<Nonce, i64>>);

impl MemoryNonces {
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-memory store cannot fail.
#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

impl NonceStore for MemoryNonces {
    type Error = Never;

    fn remember(&self, nonce: Nonce, timestamp: i64, forget_before: i64) -> Result<bool, Never> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| *t >= forget_before);
        if map.contains_key(&nonce) {
            return Ok(false);
        }
        map.insert(nonce, timestamp);
        Ok(true)
    }
}

impl<T: NonceStore> NonceStore for std::sync::Arc<T> {
    type Error = T::Error;
    fn remember(&self, nonce: Nonce, timestamp: i64, forget_before: i64) -> Result<bool, T::Error> {
        (**self).remember(nonce, timestamp, forget_before)
    }
}
