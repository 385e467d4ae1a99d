//! The agent over HTTP: a refused request reaches no handler and leaves no nonce; a verified
//! one is answered and signed; the controller's client refuses a forged answer.

use super::*;
use crate::agent_client::{AgentClient, ResponseError};
use crate::protocol::{
    HEADER_NODE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, Nonce, RequestParts,
    ResponseVerifyError, sign_request,
};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::ServiceExt;

const NODE: &str = "node-1";

fn key() -> Secret {
    Secret::new(b"the-shared-secret-of-node-1".to_vec()).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A data plane over `dir` that runs nothing until asked (so no root is needed).
fn plane(dir: &Path) -> Arc<crate::dataplane::DataPlane> {
    crate::dataplane::DataPlane::open(dir.to_path_buf(), "weft0".into()).unwrap()
}

/// An agent whose one handler counts the requests that reach it.
fn counting_agent(dir: &Path) -> (Router, Guard, Arc<AtomicUsize>) {
    let guard = open_guard(NODE, Secrets::one(key()), dir).unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/v1/count",
            post(move |body: axum::body::Bytes| async move {
                h.fetch_add(1, Ordering::SeqCst);
                body
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            auth::verify_and_sign,
        ));
    (app, guard, hits)
}

fn signed_request(secret: &Secret, uri: &str, body: &str, timestamp: i64) -> Request<Body> {
    let nonce = Nonce::random();
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let sig = sign_request(
        secret,
        &RequestParts {
            node: NODE,
            method: "POST",
            path,
            query,
            timestamp,
            nonce,
            body: body.as_bytes(),
        },
    );
    Request::post(uri)
        .header(HEADER_NODE, NODE)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .header(HEADER_NONCE, nonce.to_hex())
        .header(HEADER_SIGNATURE, sig)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn error_code(r: axum::response::Response) -> String {
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_signed_request_reaches_the_handler_and_its_answer_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (app, guard, hits) = counting_agent(dir.path());
    let r = app
        .oneshot(signed_request(&key(), "/v1/count?x=1", "hello", now()))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[HEADER_NODE], NODE);
    assert!(r.headers().contains_key(HEADER_SIGNATURE));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(guard.store().len().unwrap(), 1);
}

#[tokio::test]
async fn refused_requests_get_401_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (app, guard, hits) = counting_agent(dir.path());
    let wrong = Secret::new(b"not-the-secret-of-node-1".to_vec()).unwrap();

    let mut tampered = signed_request(&key(), "/v1/count", "hello", now());
    *tampered.body_mut() = Body::from("HELLO");
    let mut unsigned = signed_request(&key(), "/v1/count", "hello", now());
    unsigned.headers_mut().remove(HEADER_SIGNATURE);
    let cases = [
        (
            "bad_signature",
            signed_request(&wrong, "/v1/count", "hello", now()),
        ),
        ("bad_signature", tampered),
        ("missing_header", unsigned),
        (
            "stale_timestamp",
            signed_request(&key(), "/v1/count", "hello", now() - 301),
        ),
        (
            "future_timestamp",
            signed_request(&key(), "/v1/count", "hello", now() + 301),
        ),
    ];
    for (code, req) in cases {
        let r = app.clone().oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{code}");
        assert!(
            !r.headers().contains_key(HEADER_SIGNATURE),
            "refusals are not signed"
        );
        assert_eq!(error_code(r).await, code);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a handler ran for a refused request"
    );
    assert!(
        guard.store().is_empty().unwrap(),
        "a refused request left a nonce"
    );
}

#[tokio::test]
async fn a_replayed_request_gets_401_and_reaches_no_handler() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _guard, hits) = counting_agent(dir.path());
    let first = signed_request(&key(), "/v1/count", "hello", now());
    let mut again = Request::post("/v1/count")
        .body(Body::from("hello"))
        .unwrap();
    *again.headers_mut() = first.headers().clone();
    assert_eq!(
        app.clone().oneshot(first).await.unwrap().status(),
        StatusCode::OK
    );
    let r = app.oneshot(again).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "replayed");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_oversized_body_gets_413_and_reaches_no_handler() {
    let dir = tempfile::tempdir().unwrap();
    let (app, guard, hits) = counting_agent(dir.path());
    let big = "x".repeat(crate::protocol::MAX_BODY + 1);
    let r = app
        .oneshot(signed_request(&key(), "/v1/count", &big, now()))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert!(guard.store().is_empty().unwrap());
}

async fn listen(app: Router) -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    url::Url::parse(&format!("http://{addr}/")).unwrap()
}

fn client(base: url::Url, signing: Secret, secrets: Secrets) -> AgentClient {
    AgentClient::new(base, NODE, signing, secrets, Duration::from_secs(5)).unwrap()
}

use std::time::Duration;

#[tokio::test]
async fn the_client_gets_a_signed_health_answer_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let guard = open_guard(NODE, Secrets::one(key()), dir.path()).unwrap();
    let base = listen(router(guard, plane(dir.path()))).await;
    let health = client(base, key(), Secrets::one(key()))
        .health()
        .await
        .unwrap();
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn a_client_with_the_next_secret_is_answered_during_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let next = Secret::new(b"the-next-secret-of-node-1".to_vec()).unwrap();
    let guard = open_guard(NODE, Secrets::two(key(), next.clone()), dir.path()).unwrap();
    let base = listen(router(guard, plane(dir.path()))).await;
    // The answer is signed with the secret that verified the request: the client that only
    // knows the next secret can check it.
    let health = client(base, next.clone(), Secrets::one(next))
        .health()
        .await;
    assert!(health.is_ok(), "{health:?}");
}

#[tokio::test]
async fn the_client_refuses_a_forged_answer() {
    // A man in the middle answers in the agent's place, without its secret.
    let mitm = Router::new().route(
        "/v1/health",
        axum::routing::get(|| async {
            (
                [
                    (HEADER_NODE, NODE.to_owned()),
                    (HEADER_SIGNATURE, "ab".repeat(32)),
                ],
                r#"{"version":"evil","uptime_seconds":0,"load_average":[0,0,0]}"#,
            )
        }),
    );
    let base = listen(mitm).await;
    let err = client(base, key(), Secrets::one(key()))
        .health()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResponseError::Forged(ResponseVerifyError::Forged)),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_client_reports_a_refusal_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let guard = open_guard(NODE, Secrets::one(key()), dir.path()).unwrap();
    let base = listen(router(guard, plane(dir.path()))).await;
    let wrong = Secret::new(b"not-the-secret-of-node-1".to_vec()).unwrap();
    let err = client(base, wrong.clone(), Secrets::one(wrong))
        .health()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ResponseError::Refused { status: 401, code } if code == "bad_signature"),
        "{err:?}"
    );
}

#[test]
fn a_secret_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "the-shared-secret-of-node-1\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_secret(&path).unwrap_err();
    assert!(
        matches!(err, AgentError::SecretFileOpen { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod 600"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(load_secret(&path).unwrap(), key());
}

#[test]
fn the_command_line_takes_two_secret_files_for_a_rotation() {
    use clap::Parser;
    let cli = crate::cli::Cli::try_parse_from([
        "weft",
        "agent",
        "--listen",
        "127.0.0.1:7443",
        "--node-id",
        "n1",
        "--secret-file",
        "/a,b",
        "--secret-file",
        "/c",
        "--data-dir",
        "/d",
    ])
    .unwrap();
    let crate::cli::Command::Agent(crate::cli::AgentCommand {
        command: None,
        run: Some(args),
    }) = cli.command
    else {
        panic!("not the agent command");
    };
    // A comma is part of a path, not a separator.
    assert_eq!(
        args.secret_file,
        [PathBuf::from("/a,b"), PathBuf::from("/c")]
    );
}
