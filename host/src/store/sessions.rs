//! Sessions of the web pages, kept in the database so they survive a restart. The key is the
//! SHA-256 of the session id: the id (256 random bits) lives only in the user's cookie, so a
//! copy of the database lets no one sign in. The time is always passed in by the caller, so
//! expiry is tested with an injected clock.

use super::{Reader, Result, Writer, decode, encode};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A session unused this long is over.
pub const IDLE_TIMEOUT: SignedDuration = SignedDuration::from_mins(30);
/// A session is over this long after login, however busy.
pub const ABSOLUTE_TIMEOUT: SignedDuration = SignedDuration::from_hours(12);
/// `last_seen` is written at most this often, so reading pages does not write per request.
pub const TOUCH_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// A session as stored (under the hash of its id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub user: String,
    pub created: Timestamp,
    pub last_seen: Timestamp,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

/// What a session is worth at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Valid,
    /// Valid, and `last_seen` is old enough to be written again.
    ValidTouch,
    Expired,
}

impl Session {
    pub fn state(&self, now: Timestamp) -> SessionState {
        let idle = now.duration_since(self.last_seen);
        let age = now.duration_since(self.created);
        if idle >= IDLE_TIMEOUT || age >= ABSOLUTE_TIMEOUT {
            SessionState::Expired
        } else if idle >= TOUCH_EVERY {
            SessionState::ValidTouch
        } else {
            SessionState::Valid
        }
    }
}

/// A new session id (or CSRF token): 256 random bits in hex.
pub fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn key(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

impl Reader {
    /// The session behind a cookie's id, whatever its age (see [`Session::state`]).
    pub fn session(&self, id: &str) -> Result<Option<Session>> {
        match self.t.sessions()?.get(key(id).as_slice())? {
            Some(g) => Ok(Some(decode("sessions", g.value())?)),
            None => Ok(None),
        }
    }
}

impl Writer<'_> {
    /// Starts a session for `user` under the fresh id `id` and drops `replaces` (the session
    /// the browser had before logging in, if any), so the id always changes at login. Expired
    /// sessions are swept out here: logins are rare, and the table stays small.
    pub fn create_session(
        &mut self,
        id: &str,
        user: &str,
        now: Timestamp,
        replaces: Option<&str>,
    ) -> Result<Session> {
        if let Some(old) = replaces {
            self.t.sessions.remove(key(old).as_slice())?;
        }
        let mut expired = Vec::new();
        for e in self.t.sessions.iter()? {
            let (k, v) = e?;
            let s: Session = decode("sessions", v.value())?;
            if s.state(now) == SessionState::Expired {
                expired.push(k.value().to_vec());
            }
        }
        for k in expired {
            self.t.sessions.remove(k.as_slice())?;
        }
        let session = Session {
            user: user.to_string(),
            created: now,
            last_seen: now,
            csrf: new_session_id(),
        };
        self.t
            .sessions
            .insert(key(id).as_slice(), encode(&session).as_slice())?;
        Ok(session)
    }

    /// Records that the session was used at `now`.
    pub fn touch_session(&mut self, id: &str, now: Timestamp) -> Result<()> {
        let k = key(id);
        let Some(mut s) = self
            .t
            .sessions
            .get(k.as_slice())?
            .map(|g| decode::<Session>("sessions", g.value()))
            .transpose()?
        else {
            return Ok(());
        };
        s.last_seen = now;
        self.t
            .sessions
            .insert(k.as_slice(), encode(&s).as_slice())?;
        Ok(())
    }

    /// Ends a session (logout, or found expired). Ending an unknown one is not an error.
    pub fn delete_session(&mut self, id: &str) -> Result<()> {
        self.t.sessions.remove(key(id).as_slice())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn session_at(created: Timestamp, last_seen: Timestamp) -> Session {
        Session {
            user: "ann".into(),
            created,
            last_seen,
            csrf: "x".into(),
        }
    }

    #[test]
    fn session_expires_after_30_idle_minutes() {
        let s = session_at(t0(), t0());
        assert_eq!(s.state(t0()), SessionState::Valid);
        assert_eq!(
            s.state(t0() + SignedDuration::from_mins(29)),
            SessionState::ValidTouch
        );
        assert_eq!(
            s.state(t0() + SignedDuration::from_mins(30)),
            SessionState::Expired
        );
    }

    #[test]
    fn busy_session_still_expires_after_12_hours() {
        let late = t0() + SignedDuration::from_hours(12);
        let s = session_at(t0(), late - SignedDuration::from_secs(5));
        assert_eq!(s.state(late), SessionState::Expired);
    }

    #[test]
    fn last_seen_is_written_at_most_once_a_minute() {
        let s = session_at(t0(), t0());
        assert_eq!(
            s.state(t0() + SignedDuration::from_secs(59)),
            SessionState::Valid
        );
        assert_eq!(
            s.state(t0() + SignedDuration::from_secs(60)),
            SessionState::ValidTouch
        );
    }

    #[test]
    fn session_is_stored_under_the_hash_of_its_id_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path).unwrap();
        let id = new_session_id();
        let i = id.clone();
        let s = store
            .write_blocking(move |w| w.create_session(&i, "ann", t0(), None))
            .unwrap();
        store.close();
        let bytes = std::fs::read(&path).unwrap();
        let raw = id.as_bytes();
        assert!(
            !bytes.windows(raw.len()).any(|w| w == raw),
            "id stored in clear"
        );
        let store = Store::open(&path).unwrap();
        assert_eq!(store.read(|r| r.session(&id)).unwrap(), Some(s));
        store.close();
    }

    #[test]
    fn login_replaces_the_previous_session_and_sweeps_expired_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let (old, stale, new) = (new_session_id(), new_session_id(), new_session_id());
        let (o, st, n) = (old.clone(), stale.clone(), new.clone());
        store
            .write_blocking(move |w| {
                w.create_session(&st, "bob", t0(), None)?;
                w.create_session(&o, "ann", t0() + SignedDuration::from_hours(1), None)?;
                w.create_session(&n, "ann", t0() + SignedDuration::from_hours(1), Some(&o))
            })
            .unwrap();
        assert!(store.read(|r| r.session(&old)).unwrap().is_none());
        assert!(store.read(|r| r.session(&stale)).unwrap().is_none());
        assert!(store.read(|r| r.session(&new)).unwrap().is_some());
    }
}
