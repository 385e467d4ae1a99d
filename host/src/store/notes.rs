//! Notes: a line in an address's history that changes nothing about the address, for
//! example a sync saying why it left an address alone.

use super::{Result, StoreError, Writer};
use crate::ipam::IpKey;
use std::net::IpAddr;

/// The longest note kept, in characters.
pub const MAX_NOTE: usize = 500;

impl Writer<'_> {
    /// Appends `text` to the history of `ip` as a `note: <text>` event whose record before
    /// and after is the same. The address must be in a pool (a note on an address weft does
    /// not manage would have no page to be read on).
    pub fn note(&mut self, ip: IpAddr, text: &str, actor: &str) -> Result<()> {
        let text = text.trim();
        if text.is_empty() {
            return Err(StoreError::Invalid("a note needs some text".into()));
        }
        if text.chars().count() > MAX_NOTE {
            return Err(StoreError::Invalid(format!(
                "a note is at most {MAX_NOTE} characters"
            )));
        }
        // History is shown line by line: no control characters, so no forged entries.
        if text.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "a note cannot hold control characters (such as line breaks)".into(),
            ));
        }
        let key = IpKey::from(ip);
        if self.pool_containing(key)?.is_none() {
            return Err(StoreError::OutsideEveryPool { address: ip });
        }
        let record = self.address(ip)?;
        // The event's action carries the text: `Event` has no field of its own for it.
        self.append_event(key, &format!("note: {text}"), actor, record.clone(), record)
    }
}
