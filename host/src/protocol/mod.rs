//! The signed, replay-proof wire protocol between the controller and its agents: canonical
//! strings, HMAC-SHA256 signatures, and the checks an agent makes before acting on a request.
//! Pure: no I/O, no clock (callers pass `now`), no HTTP types. `docs/agent-protocol.md` is the
//! specification; this module is its reference implementation.

mod replay;
#[cfg(test)]
mod tests;

pub use replay::{GuardError, MemoryNonces, NonceStore, ReplayGuard};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// First line of a request's canonical string: names the protocol and its version.
pub const REQUEST_VERSION: &str = "weft-agent-v1";
/// First line of a response's canonical string: distinct from a request's, so a signed
/// request can never be replayed as a signed response or the other way round.
pub const RESPONSE_VERSION: &str = "weft-agent-v1-response";

/// Header carrying the node id the request is meant for (and the response comes from).
pub const HEADER_NODE: &str = "x-weft-node";
/// Header carrying the request's Unix time in seconds, decimal.
pub const HEADER_TIMESTAMP: &str = "x-weft-timestamp";
/// Header carrying the request's 128-bit nonce, 32 lowercase hex digits.
pub const HEADER_NONCE: &str = "x-weft-nonce";
/// Header carrying the HMAC-SHA256 signature, 64 lowercase hex digits.
pub const HEADER_SIGNATURE: &str = "x-weft-signature";

/// How far a request's timestamp may be from the agent's clock, either way, in seconds.
pub const WINDOW_SECS: i64 = 300;
/// Largest request body an agent hashes; larger bodies are refused before any work.
pub const MAX_BODY: usize = 1024 * 1024;
/// Shortest secret accepted: 128 bits.
pub const MIN_SECRET: usize = 16;
/// Longest node id.
pub const MAX_NODE_ID: usize = 64;

/// A node's shared secret. Its bytes never appear in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from raw bytes; at least [`MIN_SECRET`] of them.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET {
            return Err(SecretError::TooShort(bytes.len()));
        }
        Ok(Secret(bytes))
    }

    /// A secret as kept in a secret file: the file's bytes without one trailing newline
    /// (`\n` or `\r\n`), so `echo "$secret" > file` and `printf %s` give the same key.
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, SecretError> {
        let trimmed = contents
            .strip_suffix(b"\r\n")
            .or_else(|| contents.strip_suffix(b"\n"))
            .unwrap_or(contents);
        Secret::new(trimmed)
    }

    /// The raw bytes: only for writing the agent's secret file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; this cannot fail for SHA-256.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why bytes are not a usable secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Fewer than [`MIN_SECRET`] bytes.
    #[error("a secret needs at least {MIN_SECRET} bytes, this one has {0}")]
    TooShort(usize),
}

/// The secrets an agent accepts: the current one; during a rotation also the next; and, for
/// a short while after one, the retired secret, but only on requests signed no later than
/// the commit (docs/agent-protocol.md, "Rotating the secret").
#[derive(Clone, Debug)]
pub struct Secrets {
    current: Secret,
    next: Option<Staged>,
    retired: Option<Retired>,
}

/// A staged secret and the timestamp of the request that staged it: a stage request older
/// than that (late, or replayed) cannot replace it.
#[derive(Clone, Debug)]
struct Staged {
    secret: Secret,
    at: i64,
}

/// A secret replaced by a commit: requests the controller signed before it switched still
/// pass, and none signed after; and only for [`RETIRED_GRACE_SECS`] of the agent's clock, so
/// a holder of the old secret cannot go on backdating requests.
#[derive(Clone, Debug)]
struct Retired {
    secret: Secret,
    /// The commit's timestamp: the controller switched no later than this.
    signed_until: i64,
    /// The agent's clock when it committed, plus the grace.
    accepted_until: i64,
}

/// How long, by the agent's clock, a retired secret still passes requests signed before the
/// commit: longer than any request the controller still waits for.
pub const RETIRED_GRACE_SECS: i64 = 30;

/// Which of an agent's secrets verified a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Current,
    Next,
    Retired,
}

impl Secrets {
    pub fn one(current: Secret) -> Self {
        Secrets {
            current,
            next: None,
            retired: None,
        }
    }

    /// A rotation under way: `current` and `next`, staged by a request signed at `at`, are
    /// both accepted.
    pub fn two(current: Secret, next: Secret, at: i64) -> Self {
        Secrets {
            current,
            next: Some(Staged { secret: next, at }),
            retired: None,
        }
    }

    pub fn current(&self) -> &Secret {
        &self.current
    }

    pub fn next(&self) -> Option<&Secret> {
        self.next.as_ref().map(|s| &s.secret)
    }

    /// The timestamp of the request that staged the next secret.
    pub fn staged_at(&self) -> Option<i64> {
        self.next.as_ref().map(|s| s.at)
    }

    /// Which of these `secret` is, whatever the clock (the retired one while it is kept).
    pub fn slot_of(&self, secret: &Secret) -> Option<Slot> {
        if self.next() == Some(secret) {
            Some(Slot::Next)
        } else if self.current == *secret {
            Some(Slot::Current)
        } else if self.retired.as_ref().is_some_and(|r| r.secret == *secret) {
            Some(Slot::Retired)
        } else {
            None
        }
    }

    /// Stages `next`, by a request signed at `at` (replacing one staged before): both it and
    /// the current one pass.
    pub fn stage(&self, next: Secret, at: i64) -> Secrets {
        Secrets {
            next: Some(Staged { secret: next, at }),
            ..self.clone()
        }
    }

    /// Makes the staged secret current, the agent's clock reading `now`. The old one is
    /// retired: it still passes requests signed at or before `at` (the commit's timestamp),
    /// so none the controller signed before it switched fails, for [`RETIRED_GRACE_SECS`].
    /// Nothing staged: unchanged.
    pub fn commit(&self, at: i64, now: i64) -> Secrets {
        match &self.next {
            None => self.clone(),
            Some(next) => Secrets {
                current: next.secret.clone(),
                next: None,
                retired: Some(Retired {
                    secret: self.current.clone(),
                    signed_until: at,
                    accepted_until: now.saturating_add(RETIRED_GRACE_SECS),
                }),
            },
        }
    }

    /// The secrets a request signed at `timestamp` may verify under, the agent's clock
    /// reading `now`.
    fn candidates(&self, timestamp: i64, now: i64) -> impl Iterator<Item = (Slot, &Secret)> {
        let retired = self
            .retired
            .as_ref()
            .filter(|r| timestamp <= r.signed_until && now <= r.accepted_until)
            .map(|r| (Slot::Retired, &r.secret));
        std::iter::once((Slot::Current, &self.current))
            .chain(self.next.as_ref().map(|s| (Slot::Next, &s.secret)))
            .chain(retired)
    }
}

/// A random 128-bit nonce.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Nonce(pub [u8; 16]);

impl Nonce {
    pub fn random() -> Self {
        Nonce(rand::random())
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Exactly 32 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(is_lower_hex) {
            return None;
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Nonce(out))
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// A node id is 1 to 64 of `A-Z a-z 0-9 . _ -`: nothing that could break a canonical line.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The parts of a request that are signed, as sent on the wire (path and query still
/// percent-encoded, exactly as in the request line).
#[derive(Clone, Debug)]
pub struct RequestParts<'a> {
    pub node: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query without its `?`; empty when there is none.
    pub query: &'a str,
    pub timestamp: i64,
    pub nonce: Nonce,
    pub body: &'a [u8],
}

/// The query with its `&`-separated pairs sorted bytewise, empty pairs dropped. Pairs stay
/// percent-encoded as sent: both sides sort the same bytes, no decoding rules to agree on.
pub fn sorted_query(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The canonical string a request's signature covers: eight lines joined by `\n`, no
/// trailing newline.
pub fn canonical_request(p: &RequestParts<'_>) -> String {
    format!(
        "{REQUEST_VERSION}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        p.node,
        p.method,
        p.path,
        sorted_query(p.query),
        p.timestamp,
        p.nonce.to_hex(),
        sha256_hex(p.body),
    )
}

/// The canonical string a response's signature covers: bound to the request's nonce, so an
/// answer cannot be moved onto another request.
pub fn canonical_response(node: &str, request_nonce: Nonce, status: u16, body: &[u8]) -> String {
    format!(
        "{RESPONSE_VERSION}\n{node}\n{}\n{status}\n{}",
        request_nonce.to_hex(),
        sha256_hex(body),
    )
}

fn sign_bytes(secret: &Secret, canonical: &str) -> String {
    let mut mac = secret.mac();
    mac.update(canonical.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time check of a hex signature against a canonical string.
fn verify_bytes(secret: &Secret, canonical: &str, signature: &[u8; 32]) -> bool {
    let mut mac = secret.mac();
    mac.update(canonical.as_bytes());
    mac.verify_slice(signature).is_ok()
}

fn parse_signature(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(is_lower_hex) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The signature of a request (64 lowercase hex digits).
pub fn sign_request(secret: &Secret, parts: &RequestParts<'_>) -> String {
    sign_bytes(secret, &canonical_request(parts))
}

/// The signature of a response.
pub fn sign_response(
    secret: &Secret,
    node: &str,
    request_nonce: Nonce,
    status: u16,
    body: &[u8],
) -> String {
    sign_bytes(
        secret,
        &canonical_response(node, request_nonce, status, body),
    )
}

/// The request headers as received, before any check: `None` where a header is missing or
/// not valid UTF-8.
#[derive(Clone, Debug, Default)]
pub struct SignedHeaders<'a> {
    pub node: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Why an agent refuses a request. Every variant means: nothing was done.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A protocol header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A protocol header does not have its documented form.
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    /// The body is larger than [`MAX_BODY`]; it was not hashed.
    #[error("body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    /// The request names another node: it was signed for someone else.
    #[error("request is for another node")]
    WrongNode,
    /// The timestamp is more than [`WINDOW_SECS`] behind the agent's clock.
    #[error("timestamp is {0} s old")]
    Stale(i64),
    /// The timestamp is more than [`WINDOW_SECS`] ahead of the agent's clock.
    #[error("timestamp is {0} s in the future")]
    Future(i64),
    /// No accepted secret gives this signature over what was received (wrong secret, or a
    /// changed method, path, query, body, timestamp, nonce or node).
    #[error("bad signature")]
    BadSignature,
    /// The nonce was already accepted inside the window.
    #[error("nonce already used")]
    Replayed,
}

impl VerifyError {
    /// The short code an agent puts in its 401 answer (docs/agent-protocol.md, "Errors").
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedHeader(_) => "malformed_header",
            VerifyError::BodyTooLarge => "body_too_large",
            VerifyError::WrongNode => "wrong_node",
            VerifyError::Stale(_) => "stale_timestamp",
            VerifyError::Future(_) => "future_timestamp",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::Replayed => "replayed",
        }
    }
}

/// A request whose signature verified. Its nonce still has to be recorded
/// ([`ReplayGuard::check`] does both).
#[derive(Debug, Clone)]
pub struct Verified {
    pub nonce: Nonce,
    pub timestamp: i64,
    /// The secret that verified the request: the response is signed with it.
    pub secret: Secret,
    /// Which of the agent's secrets it was.
    pub slot: Slot,
}

/// Checks a request's headers and signature, without the replay check. Order matters:
/// cheap checks first, and nothing is remembered here, so a forged request costs the agent
/// one HMAC and no storage.
// The arguments are the request's signed parts, kept apart so no HTTP type enters here.
#[allow(clippy::too_many_arguments)]
pub fn verify_request(
    secrets: &Secrets,
    agent_node: &str,
    headers: &SignedHeaders<'_>,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    if body.len() > MAX_BODY {
        return Err(VerifyError::BodyTooLarge);
    }
    let node = headers
        .node
        .ok_or(VerifyError::MissingHeader(HEADER_NODE))?;
    let timestamp = headers
        .timestamp
        .ok_or(VerifyError::MissingHeader(HEADER_TIMESTAMP))?;
    let nonce = headers
        .nonce
        .ok_or(VerifyError::MissingHeader(HEADER_NONCE))?;
    let signature = headers
        .signature
        .ok_or(VerifyError::MissingHeader(HEADER_SIGNATURE))?;

    if !valid_node_id(node) {
        return Err(VerifyError::MalformedHeader(HEADER_NODE));
    }
    let timestamp =
        parse_timestamp(timestamp).ok_or(VerifyError::MalformedHeader(HEADER_TIMESTAMP))?;
    let nonce = Nonce::parse(nonce).ok_or(VerifyError::MalformedHeader(HEADER_NONCE))?;
    let signature =
        parse_signature(signature).ok_or(VerifyError::MalformedHeader(HEADER_SIGNATURE))?;

    if node != agent_node {
        return Err(VerifyError::WrongNode);
    }
    let skew = now - timestamp;
    if skew > WINDOW_SECS {
        return Err(VerifyError::Stale(skew));
    }
    if -skew > WINDOW_SECS {
        return Err(VerifyError::Future(-skew));
    }

    let canonical = canonical_request(&RequestParts {
        node,
        method,
        path,
        query,
        timestamp,
        nonce,
        body,
    });
    // Every candidate is always tried, so the time taken does not say which one matched.
    let mut matched = None;
    for (slot, secret) in secrets.candidates(timestamp, now) {
        if verify_bytes(secret, &canonical, &signature) && matched.is_none() {
            matched = Some((slot, secret));
        }
    }
    let (slot, secret) = matched.ok_or(VerifyError::BadSignature)?;
    Ok(Verified {
        nonce,
        timestamp,
        secret: secret.clone(),
        slot,
    })
}

/// 1 to 18 ASCII digits: no sign, no spaces, and no overflow when the window is applied.
fn parse_timestamp(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Why the controller does not trust an agent's answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseVerifyError {
    /// The answer carries no signature (an agent signs every answer to a verified request).
    #[error("response is not signed")]
    Unsigned,
    /// The signature header does not have its documented form.
    #[error("response signature is malformed")]
    Malformed,
    /// The answer comes from another node than the one asked.
    #[error("response is from another node")]
    WrongNode,
    /// The signature does not match: the answer was forged or altered on the way.
    #[error("response signature does not verify: forged or altered")]
    Forged,
}

/// The controller's check of an agent's answer to the request with `request_nonce`, signed
/// with `secret`: the agent answers under the secret that verified the request.
pub fn verify_response(
    secret: &Secret,
    node: &str,
    request_nonce: Nonce,
    status: u16,
    node_header: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), ResponseVerifyError> {
    let signature = signature.ok_or(ResponseVerifyError::Unsigned)?;
    let signature = parse_signature(signature).ok_or(ResponseVerifyError::Malformed)?;
    if node_header != Some(node) {
        return Err(ResponseVerifyError::WrongNode);
    }
    let canonical = canonical_response(node, request_nonce, status, body);
    if verify_bytes(secret, &canonical, &signature) {
        Ok(())
    } else {
        Err(ResponseVerifyError::Forged)
    }
}

/// What seals a next secret on its way to the agent: a key only holders of the secret that
/// signs the request can derive, so the new secret never crosses the network readable, even
/// over plain HTTP.
fn rotation_cipher(secret: &Secret) -> chacha20poly1305::XChaCha20Poly1305 {
    use chacha20poly1305::KeyInit as _;
    let mut mac = secret.mac();
    mac.update(ROTATION_KEY_LABEL.as_bytes());
    let key = mac.finalize().into_bytes();
    chacha20poly1305::XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key.as_slice()))
}

/// The label the sealing key is derived under: HMAC(secret, label).
pub const ROTATION_KEY_LABEL: &str = "weft-agent-v1-rotate";

/// Seals `next` for `node` under a key derived from `signing` (the secret the request that
/// carries it is signed with). Hex of a 24-byte nonce followed by the ciphertext.
pub fn seal_next_secret(signing: &Secret, node: &str, next: &Secret, nonce: [u8; 24]) -> String {
    use chacha20poly1305::aead::{Aead, Payload};
    let sealed = rotation_cipher(signing)
        .encrypt(
            chacha20poly1305::XNonce::from_slice(&nonce),
            Payload {
                msg: &next.0,
                aad: node.as_bytes(),
            },
        )
        // Encryption fails only for inputs of gigabytes; a secret is bytes long.
        .expect("XChaCha20-Poly1305 seals a short secret");
    let mut out = hex::encode(nonce);
    out.push_str(&hex::encode(sealed));
    out
}

/// Why a sealed next secret was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnsealError {
    #[error("the sealed secret is not hex of a nonce and a ciphertext")]
    Malformed,
    #[error("the sealed secret does not open under the secret that signed the request")]
    DoesNotOpen,
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Opens what [`seal_next_secret`] made, under the secret that verified the request.
pub fn open_next_secret(
    verified: &Secret,
    node: &str,
    sealed: &str,
) -> Result<Secret, UnsealError> {
    use chacha20poly1305::aead::{Aead, Payload};
    let bytes = hex::decode(sealed).map_err(|_| UnsealError::Malformed)?;
    if bytes.len() <= 24 + 16 {
        return Err(UnsealError::Malformed);
    }
    let (nonce, ciphertext) = bytes.split_at(24);
    let opened = rotation_cipher(verified)
        .decrypt(
            chacha20poly1305::XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: node.as_bytes(),
            },
        )
        .map_err(|_| UnsealError::DoesNotOpen)?;
    Ok(Secret::new(opened)?)
}
