//! The protocol, as a specification: each refusal of docs/agent-protocol.md, and its worked
//! example.

use super::*;
use std::sync::Arc;

const NODE: &str = "node-1";
const NOW: i64 = 1_767_225_600;

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes()).unwrap()
}

fn key() -> Secret {
    secret("the-shared-secret-of-node-1")
}

/// A request as a client sends it: its headers and what they sign.
struct Req {
    node: String,
    method: String,
    path: String,
    query: String,
    body: Vec<u8>,
    timestamp: String,
    nonce: String,
    signature: String,
}

impl Req {
    fn headers(&self) -> SignedHeaders<'_> {
        SignedHeaders {
            node: Some(&self.node),
            timestamp: Some(&self.timestamp),
            nonce: Some(&self.nonce),
            signature: Some(&self.signature),
        }
    }
}

fn signed_by(secret: &Secret, node: &str, timestamp: i64) -> Req {
    let nonce = Nonce::random();
    let (method, path, query, body) = ("POST", "/v1/peers", "b=2&a=1", b"{\"name\":\"x\"}");
    let signature = sign_request(
        secret,
        &RequestParts {
            node,
            method,
            path,
            query,
            timestamp,
            nonce,
            body,
        },
    );
    Req {
        node: node.into(),
        method: method.into(),
        path: path.into(),
        query: query.into(),
        body: body.to_vec(),
        timestamp: timestamp.to_string(),
        nonce: nonce.to_hex(),
        signature,
    }
}

fn signed(timestamp: i64) -> Req {
    signed_by(&key(), NODE, timestamp)
}

fn guard() -> ReplayGuard<Arc<MemoryNonces>> {
    ReplayGuard::new(Secrets::one(key()), NODE, Arc::new(MemoryNonces::default()))
}

/// What the agent decides about `req` at `now`.
fn check<S: NonceStore>(g: &ReplayGuard<S>, r: &Req, now: i64) -> Result<(), VerifyError> {
    match g.check(&r.headers(), &r.method, &r.path, &r.query, &r.body, now) {
        Ok(_) => Ok(()),
        Err(GuardError::Refused(e)) => Err(e),
        Err(GuardError::Store(e)) => panic!("store failed: {e}"),
    }
}

/// Asserts `req` is refused with `want` and that nothing was remembered.
fn refused(r: &Req, want: VerifyError) {
    let g = guard();
    assert_eq!(check(&g, r, NOW), Err(want));
    assert!(
        g.store().is_empty(),
        "a refused request left a nonce behind"
    );
}

#[test]
fn a_signed_request_is_accepted_and_its_nonce_remembered() {
    let g = guard();
    assert_eq!(check(&g, &signed(NOW), NOW), Ok(()));
    assert_eq!(g.store().len(), 1);
}

#[test]
fn replayed_request_is_rejected_inside_the_window() {
    let g = guard();
    let r = signed(NOW);
    assert_eq!(check(&g, &r, NOW), Ok(()));
    assert_eq!(check(&g, &r, NOW + 10), Err(VerifyError::Replayed));
}

#[test]
fn replayed_request_is_rejected_after_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let r = signed(NOW);
    {
        let store = crate::store::agent_nonces::AgentNonces::open(dir.path()).unwrap();
        let g = ReplayGuard::new(Secrets::one(key()), NODE, store);
        assert_eq!(check(&g, &r, NOW), Ok(()));
    }
    // A new guard over the same file: what a restarted agent has.
    let store = crate::store::agent_nonces::AgentNonces::open(dir.path()).unwrap();
    let g = ReplayGuard::new(Secrets::one(key()), NODE, store);
    assert_eq!(check(&g, &r, NOW + 5), Err(VerifyError::Replayed));
}

#[test]
fn stale_timestamp_is_rejected() {
    refused(
        &signed(NOW - WINDOW_SECS - 1),
        VerifyError::Stale(WINDOW_SECS + 1),
    );
}

#[test]
fn future_timestamp_is_rejected() {
    refused(
        &signed(NOW + WINDOW_SECS + 1),
        VerifyError::Future(WINDOW_SECS + 1),
    );
}

#[test]
fn timestamps_at_the_edges_of_the_window_are_accepted() {
    let g = guard();
    assert_eq!(check(&g, &signed(NOW - WINDOW_SECS), NOW), Ok(()));
    assert_eq!(check(&g, &signed(NOW + WINDOW_SECS), NOW), Ok(()));
}

#[test]
fn tampered_body_is_rejected() {
    let mut r = signed(NOW);
    r.body = b"{\"name\":\"y\"}".to_vec();
    refused(&r, VerifyError::BadSignature);
}

#[test]
fn tampered_path_is_rejected() {
    let mut r = signed(NOW);
    r.path = "/v1/peers/other".into();
    refused(&r, VerifyError::BadSignature);
}

#[test]
fn tampered_query_is_rejected() {
    let mut r = signed(NOW);
    r.query = "b=2&a=3".into();
    refused(&r, VerifyError::BadSignature);
}

#[test]
fn query_order_does_not_matter() {
    let mut r = signed(NOW);
    r.query = "a=1&b=2".into();
    assert_eq!(check(&guard(), &r, NOW), Ok(()));
}

#[test]
fn tampered_method_timestamp_or_nonce_is_rejected() {
    let mut r = signed(NOW);
    r.method = "DELETE".into();
    refused(&r, VerifyError::BadSignature);
    let mut r = signed(NOW);
    r.timestamp = (NOW + 1).to_string();
    refused(&r, VerifyError::BadSignature);
    let mut r = signed(NOW);
    r.nonce = Nonce::random().to_hex();
    refused(&r, VerifyError::BadSignature);
}

#[test]
fn wrong_secret_is_rejected() {
    refused(
        &signed_by(&secret("not-the-secret-of-node-1"), NODE, NOW),
        VerifyError::BadSignature,
    );
}

#[test]
fn a_request_for_another_node_is_rejected() {
    refused(&signed_by(&key(), "node-2", NOW), VerifyError::WrongNode);
}

#[test]
fn another_nodes_signature_is_rejected_even_with_the_same_secret() {
    // Signed for node-2, relabelled for node-1: the node id is inside the signature.
    let mut r = signed_by(&key(), "node-2", NOW);
    r.node = NODE.into();
    refused(&r, VerifyError::BadSignature);
}

#[test]
fn missing_or_malformed_headers_are_rejected() {
    let mut r = signed(NOW);
    r.signature.clear();
    refused(&r, VerifyError::MalformedHeader(HEADER_SIGNATURE));
    let r = signed(NOW);
    let g = guard();
    let mut h = r.headers();
    h.signature = None;
    assert_eq!(
        g.check(&h, &r.method, &r.path, &r.query, &r.body, NOW)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(VerifyError::MissingHeader(HEADER_SIGNATURE).to_string())
    );
    let mut r = signed(NOW);
    r.signature = r.signature.to_uppercase();
    refused(&r, VerifyError::MalformedHeader(HEADER_SIGNATURE));
    let mut r = signed(NOW);
    r.timestamp = format!("+{NOW}");
    refused(&r, VerifyError::MalformedHeader(HEADER_TIMESTAMP));
    let mut r = signed(NOW);
    r.nonce.pop();
    refused(&r, VerifyError::MalformedHeader(HEADER_NONCE));
    let mut r = signed(NOW);
    r.node = "node\n1".into();
    refused(&r, VerifyError::MalformedHeader(HEADER_NODE));
}

#[test]
fn nonce_is_not_remembered_for_a_forged_request() {
    let g = guard();
    let forged = signed_by(&secret("an-attackers-guess-1234"), NODE, NOW);
    assert_eq!(check(&g, &forged, NOW), Err(VerifyError::BadSignature));
    assert!(g.store().is_empty());
    // The genuine request with the same nonce still goes through.
    let mut genuine = signed(NOW);
    let nonce = Nonce::parse(&forged.nonce).unwrap();
    genuine.nonce = forged.nonce.clone();
    genuine.signature = sign_request(
        &key(),
        &RequestParts {
            node: NODE,
            method: &genuine.method,
            path: &genuine.path,
            query: &genuine.query,
            timestamp: NOW,
            nonce,
            body: &genuine.body,
        },
    );
    assert_eq!(check(&g, &genuine, NOW), Ok(()));
}

#[test]
fn oversized_body_is_rejected_before_hashing() {
    let mut r = signed(NOW);
    r.body = vec![0; MAX_BODY + 1];
    refused(&r, VerifyError::BodyTooLarge);
}

#[test]
fn second_secret_is_accepted_and_answers_are_signed_with_the_one_that_verified() {
    let old = key();
    let new = secret("the-next-secret-of-node-1");
    let g = ReplayGuard::new(
        Secrets::two(old.clone(), new.clone(), NOW),
        NODE,
        MemoryNonces::default(),
    );
    for s in [&old, &new] {
        let r = signed_by(s, NODE, NOW);
        let v = g
            .check(&r.headers(), &r.method, &r.path, &r.query, &r.body, NOW)
            .unwrap();
        assert_eq!(&v.secret, s);
    }
}

#[test]
fn expired_nonces_are_pruned_from_memory() {
    let g = guard();
    assert_eq!(check(&g, &signed(NOW), NOW), Ok(()));
    assert_eq!(check(&g, &signed(NOW + 400), NOW + 400), Ok(()));
    assert_eq!(g.store().len(), 1);
}

#[test]
fn forged_response_is_rejected() {
    let nonce = Nonce::random();
    let body = b"{\"ok\":true}";
    let sig = sign_response(&key(), NODE, nonce, 200, body);
    let verify = |status, node: &str, sig: &str, body: &[u8], nonce| {
        verify_response(&key(), NODE, nonce, status, Some(node), Some(sig), body)
    };
    assert_eq!(verify(200, NODE, &sig, body, nonce), Ok(()));
    // Altered body, status, or moved onto another request: all forged.
    assert_eq!(
        verify(200, NODE, &sig, b"{\"ok\":false}", nonce),
        Err(ResponseVerifyError::Forged)
    );
    assert_eq!(
        verify(500, NODE, &sig, body, nonce),
        Err(ResponseVerifyError::Forged)
    );
    assert_eq!(
        verify(200, NODE, &sig, body, Nonce::random()),
        Err(ResponseVerifyError::Forged)
    );
    // Signed by someone without the secret.
    let mitm = sign_response(&secret("man-in-the-middle-key"), NODE, nonce, 200, body);
    assert_eq!(
        verify(200, NODE, &mitm, body, nonce),
        Err(ResponseVerifyError::Forged)
    );
    assert_eq!(
        verify(200, "node-2", &sig, body, nonce),
        Err(ResponseVerifyError::WrongNode)
    );
    assert_eq!(
        verify_response(&key(), NODE, nonce, 200, Some(NODE), None, body),
        Err(ResponseVerifyError::Unsigned)
    );
}

#[test]
fn a_signed_request_cannot_pass_as_a_response() {
    // The two canonical strings begin with different version lines.
    assert!(
        !canonical_response(NODE, Nonce([0; 16]), 200, b"")
            .starts_with(&format!("{REQUEST_VERSION}\n"))
    );
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let s = Secrets::two(key(), secret("the-next-secret-of-node-1"), NOW);
    let shown = format!("{s:?}");
    assert!(!shown.contains("shared-secret"), "{shown}");
    assert!(!shown.contains("next-secret"), "{shown}");
}

#[test]
fn short_secrets_are_refused_and_a_trailing_newline_is_not_part_of_the_key() {
    assert_eq!(
        Secret::new(b"short".to_vec()),
        Err(SecretError::TooShort(5))
    );
    assert_eq!(
        Secret::from_file_contents(b"0123456789abcdef\n").unwrap(),
        Secret::new(b"0123456789abcdef".to_vec()).unwrap()
    );
}

/// The worked example of docs/agent-protocol.md. The values are here and in the document;
/// the test checks both the computation and that the document still shows them.
mod worked_example {
    use super::super::*;

    pub const SECRET: &str = "weft-example-secret-0123456789ab";
    pub const NODE: &str = "node-1";
    pub const METHOD: &str = "POST";
    pub const PATH: &str = "/v1/peers";
    pub const QUERY: &str = "b=2&a=1";
    pub const TIMESTAMP: i64 = 1_767_225_600;
    pub const NONCE: &str = "00112233445566778899aabbccddeeff";
    pub const BODY: &str = r#"{"name":"laptop"}"#;
    pub const BODY_SHA256: &str =
        "2bde2b52e9f5da08e02703afc516c1345659933fcda33c5202a457cf20f01f90";
    pub const CANONICAL: &str = "weft-agent-v1\nnode-1\nPOST\n/v1/peers\na=1&b=2\n1767225600\n00112233445566778899aabbccddeeff\n2bde2b52e9f5da08e02703afc516c1345659933fcda33c5202a457cf20f01f90";
    pub const SIGNATURE: &str = "d5240f0899355f88e14dc3e6ab3a25d546d41cfbbc71964cbbabb8e9eb1ac960";
    pub const RESPONSE_STATUS: u16 = 200;
    pub const RESPONSE_BODY: &str = r#"{"ok":true}"#;
    pub const RESPONSE_CANONICAL: &str = "weft-agent-v1-response\nnode-1\n00112233445566778899aabbccddeeff\n200\n4062edaf750fb8074e7e83e0c9028c94e32468a8b6f1614774328ef045150f93";
    pub const RESPONSE_SIGNATURE: &str =
        "37791020e2b7063c3ea602310993fc707b4edc2e64c6f79b8590e5f53c08435c";

    fn doc() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/agent-protocol.md");
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_worked_example_of_the_docs_signs_and_verifies() {
        let secret = Secret::new(SECRET.as_bytes()).unwrap();
        let nonce = Nonce::parse(NONCE).unwrap();
        let parts = RequestParts {
            node: NODE,
            method: METHOD,
            path: PATH,
            query: QUERY,
            timestamp: TIMESTAMP,
            nonce,
            body: BODY.as_bytes(),
        };
        assert_eq!(sha256_hex(BODY.as_bytes()), BODY_SHA256);
        assert_eq!(canonical_request(&parts), CANONICAL);
        assert_eq!(sign_request(&secret, &parts), SIGNATURE);

        let secrets = Secrets::one(secret.clone());
        let ts = TIMESTAMP.to_string();
        let headers = SignedHeaders {
            node: Some(NODE),
            timestamp: Some(&ts),
            nonce: Some(NONCE),
            signature: Some(SIGNATURE),
        };
        let v = verify_request(
            &secrets,
            NODE,
            &headers,
            METHOD,
            PATH,
            QUERY,
            BODY.as_bytes(),
            TIMESTAMP + 1,
        );
        assert!(v.is_ok(), "{v:?}");

        assert_eq!(
            canonical_response(NODE, nonce, RESPONSE_STATUS, RESPONSE_BODY.as_bytes()),
            RESPONSE_CANONICAL
        );
        assert_eq!(
            sign_response(
                &secret,
                NODE,
                nonce,
                RESPONSE_STATUS,
                RESPONSE_BODY.as_bytes()
            ),
            RESPONSE_SIGNATURE
        );
    }

    #[test]
    fn the_docs_show_the_worked_example() {
        let doc = doc();
        for value in [
            SECRET,
            NODE,
            PATH,
            QUERY,
            &TIMESTAMP.to_string(),
            NONCE,
            BODY,
            BODY_SHA256,
            SIGNATURE,
            RESPONSE_BODY,
            RESPONSE_SIGNATURE,
            "4062edaf750fb8074e7e83e0c9028c94e32468a8b6f1614774328ef045150f93",
        ] {
            assert!(doc.contains(value), "docs/agent-protocol.md lacks {value}");
        }
        // The canonical strings appear line by line in a code block.
        assert!(
            doc.contains(CANONICAL),
            "docs/agent-protocol.md lacks the canonical request"
        );
        assert!(
            doc.contains(RESPONSE_CANONICAL),
            "docs/agent-protocol.md lacks the canonical response"
        );
    }
}

mod properties {
    use super::super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the request, what was signed verifies, and any changed body byte does not.
        #[test]
        fn any_signed_request_verifies_and_any_changed_body_byte_is_caught(
            path in "/[a-z0-9/%._-]{0,40}",
            query in "[a-z0-9=&%]{0,40}",
            body in proptest::collection::vec(any::<u8>(), 1..512),
            flip in any::<proptest::sample::Index>(),
            skew in -WINDOW_SECS..=WINDOW_SECS,
        ) {
            let key = Secret::new(b"property-secret-0123456789".to_vec()).unwrap();
            let secrets = Secrets::one(key.clone());
            let nonce = Nonce::random();
            let now = 1_767_225_600;
            let timestamp = now + skew;
            let parts = RequestParts { node: "n", method: "PUT", path: &path, query: &query, timestamp, nonce, body: &body };
            let sig = sign_request(&key, &parts);
            let (ts, n) = (timestamp.to_string(), nonce.to_hex());
            let headers = SignedHeaders { node: Some("n"), timestamp: Some(&ts), nonce: Some(&n), signature: Some(&sig) };
            prop_assert!(verify_request(&secrets, "n", &headers, "PUT", &path, &query, &body, now).is_ok());
            let mut changed = body.clone();
            changed[flip.index(body.len())] ^= 1;
            prop_assert_eq!(
                verify_request(&secrets, "n", &headers, "PUT", &path, &query, &changed, now).map(|_| ()),
                Err(VerifyError::BadSignature)
            );
        }
    }
}

// Rotation: stage, commit, retire.

fn verifies(secrets: &Secrets, by: &Secret, timestamp: i64) -> Result<Slot, VerifyError> {
    verifies_at(secrets, by, timestamp, timestamp)
}

/// As [`verifies`], the agent's clock reading `now`.
fn verifies_at(
    secrets: &Secrets,
    by: &Secret,
    timestamp: i64,
    now: i64,
) -> Result<Slot, VerifyError> {
    let r = signed_by(by, NODE, timestamp);
    verify_request(
        secrets,
        NODE,
        &r.headers(),
        &r.method,
        &r.path,
        &r.query,
        &r.body,
        now,
    )
    .map(|v| v.slot)
}

#[test]
fn a_retired_secret_passes_only_requests_signed_up_to_the_commit_and_only_briefly() {
    let (old, new) = (key(), secret("the-next-secret-of-node-1"));
    let staged = Secrets::one(old.clone()).stage(new.clone(), NOW - 1);
    assert_eq!(staged.staged_at(), Some(NOW - 1));
    assert_eq!(verifies(&staged, &old, NOW), Ok(Slot::Current));
    assert_eq!(verifies(&staged, &new, NOW), Ok(Slot::Next));

    let committed = staged.commit(NOW, NOW);
    assert_eq!(committed.current(), &new);
    assert_eq!(committed.next(), None);
    assert_eq!(verifies(&committed, &new, NOW + 1), Ok(Slot::Current));
    // Signed before the controller switched (at or before the commit's timestamp): passes.
    assert_eq!(
        verifies_at(&committed, &old, NOW - 10, NOW),
        Ok(Slot::Retired)
    );
    assert_eq!(verifies(&committed, &old, NOW), Ok(Slot::Retired));
    // Signed after: the old secret no longer commands this agent.
    assert_eq!(
        verifies(&committed, &old, NOW + 1),
        Err(VerifyError::BadSignature)
    );
    // Backdated, once the grace has passed on the agent's clock: refused too.
    assert_eq!(
        verifies_at(&committed, &old, NOW, NOW + RETIRED_GRACE_SECS),
        Ok(Slot::Retired)
    );
    assert_eq!(
        verifies_at(&committed, &old, NOW, NOW + RETIRED_GRACE_SECS + 1),
        Err(VerifyError::BadSignature)
    );
    // The next rotation forgets it entirely.
    let third = secret("the-third-secret-of-node-1");
    let again = committed
        .stage(third.clone(), NOW + 99)
        .commit(NOW + 100, NOW + 100);
    assert_eq!(verifies(&again, &old, NOW), Err(VerifyError::BadSignature));
    assert_eq!(
        verifies_at(&again, &new, NOW + 50, NOW + 100),
        Ok(Slot::Retired)
    );
}

#[test]
fn committing_with_nothing_staged_changes_nothing() {
    let s = Secrets::one(key()).commit(NOW, NOW);
    assert_eq!(s.current(), &key());
    assert_eq!(verifies(&s, &key(), NOW + 1), Ok(Slot::Current));
}

#[test]
fn a_secret_is_placed_whatever_the_clock() {
    let (old, new) = (key(), secret("the-next-secret-of-node-1"));
    let staged = Secrets::one(old.clone()).stage(new.clone(), NOW);
    assert_eq!(staged.slot_of(&old), Some(Slot::Current));
    assert_eq!(staged.slot_of(&new), Some(Slot::Next));
    let committed = staged.commit(NOW, NOW);
    assert_eq!(committed.slot_of(&new), Some(Slot::Current));
    assert_eq!(committed.slot_of(&old), Some(Slot::Retired));
    assert_eq!(committed.slot_of(&secret("someone-else-s-secret")), None);
}

#[test]
fn a_sealed_next_secret_opens_only_under_the_signing_secret_for_its_node() {
    let next = secret("the-next-secret-of-node-1");
    let sealed = seal_next_secret(&key(), NODE, &next, [9; 24]);
    assert!(
        !sealed.contains(&hex::encode(next.as_bytes())),
        "not in clear"
    );
    assert_eq!(open_next_secret(&key(), NODE, &sealed), Ok(next.clone()));
    assert_eq!(
        open_next_secret(&secret("someone-else-s-secret"), NODE, &sealed),
        Err(UnsealError::DoesNotOpen)
    );
    assert_eq!(
        open_next_secret(&key(), "node-2", &sealed),
        Err(UnsealError::DoesNotOpen),
        "moved onto another node"
    );
    let mut flipped = sealed.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    assert_eq!(
        open_next_secret(&key(), NODE, std::str::from_utf8(&flipped).unwrap()),
        Err(UnsealError::DoesNotOpen)
    );
    assert_eq!(
        open_next_secret(&key(), NODE, "zz"),
        Err(UnsealError::Malformed)
    );
    // A secret too short to be one is refused even when it opens.
    let short = Secret(b"short".to_vec());
    let sealed = seal_next_secret(&key(), NODE, &short, [1; 24]);
    assert_eq!(
        open_next_secret(&key(), NODE, &sealed),
        Err(UnsealError::Secret(SecretError::TooShort(5)))
    );
}

proptest::proptest! {
    #[test]
    fn opening_arbitrary_text_never_panics(s in ".{0,200}") {
        let _ = open_next_secret(&key(), NODE, &s);
    }
}
