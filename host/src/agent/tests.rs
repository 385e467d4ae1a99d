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

fn client(base: url::Url, signing: Secret) -> AgentClient {
    AgentClient::new(base, NODE, signing, Duration::from_secs(5)).unwrap()
}

/// The agent's routes over `dir`, its secret file in it.
fn agent_router(guard: Guard, dir: &Path) -> Router {
    router(guard, plane(dir), SecretFile::new(dir.join(SECRET_FILE)))
}

use std::time::Duration;

#[tokio::test]
async fn the_client_gets_a_signed_health_answer_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let guard = open_guard(NODE, Secrets::one(key()), dir.path()).unwrap();
    let base = listen(agent_router(guard, dir.path())).await;
    let health = client(base, key()).health().await.unwrap();
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn a_client_with_the_next_secret_is_answered_during_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let next = Secret::new(b"the-next-secret-of-node-1".to_vec()).unwrap();
    let guard = open_guard(NODE, Secrets::two(key(), next.clone(), now()), dir.path()).unwrap();
    let base = listen(agent_router(guard, dir.path())).await;
    // The answer is signed with the secret that verified the request: the client that only
    // knows the next secret can check it.
    let health = client(base, next).health().await;
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
    let err = client(base, key()).health().await.unwrap_err();
    assert!(
        matches!(err, ResponseError::Forged(ResponseVerifyError::Forged)),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_client_reports_a_refusal_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let guard = open_guard(NODE, Secrets::one(key()), dir.path()).unwrap();
    let base = listen(agent_router(guard, dir.path())).await;
    let wrong = Secret::new(b"not-the-secret-of-node-1".to_vec()).unwrap();
    let err = client(base, wrong).health().await.unwrap_err();
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
fn the_secret_file_is_in_the_data_dir_unless_given() {
    use clap::Parser;
    let args = |extra: &[&str]| {
        let mut argv = vec![
            "weft",
            "agent",
            "--listen",
            "127.0.0.1:7443",
            "--node-id",
            "n1",
            "--data-dir",
            "/d",
        ];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Command::Agent(agent) = cli.command else {
            panic!("not the agent command");
        };
        let crate::cli::AgentCommand {
            command: None,
            run: Some(args),
        } = *agent
        else {
            panic!("not the agent run");
        };
        args.secret_file()
    };
    assert_eq!(args(&[]), PathBuf::from("/d/secret"));
    // A comma is part of a path, not a separator.
    assert_eq!(args(&["--secret-file", "/a,b"]), PathBuf::from("/a,b"));
}

// Rotation: the agent's side (the controller's is in controller::nodes).

fn next_key() -> Secret {
    Secret::new(b"the-next-secret-of-node-1".to_vec()).unwrap()
}

/// An agent on loopback whose secret file (holding `key()`) is in `dir`.
async fn rotating_agent(dir: &Path) -> (url::Url, Guard, SecretFile) {
    let file = SecretFile::new(dir.join(SECRET_FILE));
    write_secret_file(file.path(), &key());
    let guard = open_guard(NODE, file.load().unwrap(), dir).unwrap();
    let base = listen(agent_router(guard.clone(), dir)).await;
    (base, guard, file)
}

fn write_secret_file(path: &Path, secret: &Secret) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, secret.as_bytes()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Stages `next` on the agent at `base`, signing with `signing`.
async fn stage(
    base: &url::Url,
    signing: Secret,
    next: &Secret,
) -> crate::agent_client::AgentAnswer {
    client(base.clone(), signing)
        .stage_secret(next)
        .await
        .unwrap()
}

/// The secret staged on disk, as a restarted agent reads it.
fn staged_secret(file: &SecretFile) -> Secret {
    file.load().unwrap().next().unwrap().clone()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_staged_secret_is_accepted_beside_the_old_one_then_committed_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (base, guard, file) = rotating_agent(dir.path()).await;
    let old = client(base.clone(), key());

    let staged = old.stage_secret(&next_key()).await.unwrap();
    assert_eq!(staged.status, 204, "{}", staged.refusal());
    assert_eq!(staged_secret(&file), next_key());
    assert_eq!(mode(&file.next_path()), 0o600);
    // Both secrets work now.
    assert!(old.health().await.is_ok());
    let new = client(base.clone(), next_key());
    assert!(new.health().await.is_ok());

    let committed = new.commit_secret().await.unwrap();
    assert_eq!(committed.status, 204, "{}", committed.refusal());
    assert_eq!(std::fs::read(file.path()).unwrap(), next_key().as_bytes());
    assert!(!file.next_path().exists());
    assert_eq!(mode(file.path()), 0o600);
    assert_eq!(guard.secrets().current(), &next_key());
    assert!(guard.secrets().next().is_none());
    // A repeated commit (its first answer lost) is answered the same.
    assert_eq!(new.commit_secret().await.unwrap().status, 204);

    // A restarted agent holds the new secret only.
    let restarted = file.load().unwrap();
    assert_eq!(restarted.current(), &next_key());
    assert!(restarted.next().is_none());
}

#[tokio::test]
async fn an_agent_restarted_mid_rotation_accepts_both_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _guard, file) = rotating_agent(dir.path()).await;
    let staged = stage(&base, key(), &next_key()).await;
    assert_eq!(staged.status, 204);
    let secrets = file.load().unwrap();
    assert_eq!(secrets.current(), &key());
    assert_eq!(secrets.next(), Some(&next_key()));
}

#[tokio::test]
async fn a_commit_signed_with_the_old_secret_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (base, guard, file) = rotating_agent(dir.path()).await;
    let old = client(base, key());
    assert_eq!(old.stage_secret(&next_key()).await.unwrap().status, 204);
    let refused = old.commit_secret().await.unwrap();
    assert_eq!(refused.status, 409);
    assert!(
        refused.refusal().starts_with("not_signed_with_next"),
        "{}",
        refused.refusal()
    );
    assert_eq!(guard.secrets().current(), &key());
    assert_eq!(std::fs::read(file.path()).unwrap(), key().as_bytes());
}

#[tokio::test]
async fn staging_signed_with_the_staged_secret_commits_it_first() {
    // The controller switched, its commit was lost, and it rotates again.
    let dir = tempfile::tempdir().unwrap();
    let (base, guard, file) = rotating_agent(dir.path()).await;
    assert_eq!(stage(&base, key(), &next_key()).await.status, 204);
    let third = Secret::new(b"the-third-secret-of-node-1".to_vec()).unwrap();
    let again = stage(&base, next_key(), &third).await;
    assert_eq!(again.status, 204, "{}", again.refusal());
    assert_eq!(guard.secrets().current(), &next_key());
    assert_eq!(guard.secrets().next(), Some(&third));
    assert_eq!(std::fs::read(file.path()).unwrap(), next_key().as_bytes());
    assert_eq!(staged_secret(&file), third);
}

#[tokio::test]
async fn a_sealed_secret_that_does_not_open_is_refused_and_nothing_is_staged() {
    let dir = tempfile::tempdir().unwrap();
    let (base, guard, file) = rotating_agent(dir.path()).await;
    // Sealed under another key than the one signing the request.
    let sealed = crate::protocol::seal_next_secret(&next_key(), NODE, &next_key(), [7; 24]);
    let body = serde_json::to_vec(&crate::agent_api::StageSecret { next: sealed }).unwrap();
    let answer = client(base, key())
        .call(reqwest::Method::PUT, "/v1/secret", body)
        .await
        .unwrap();
    assert_eq!(answer.status, 422);
    assert!(answer.refusal().starts_with("bad_sealed_secret"));
    assert!(guard.secrets().next().is_none());
    assert!(!file.next_path().exists());
}

#[tokio::test]
async fn an_agent_that_cannot_write_its_secret_file_refuses_the_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let guard = open_guard(NODE, Secrets::one(key()), dir.path()).unwrap();
    let unwritable = SecretFile::new(dir.path().join("missing-folder").join(SECRET_FILE));
    let base = listen(router(guard.clone(), plane(dir.path()), unwritable)).await;
    let answer = stage(&base, key(), &next_key()).await;
    assert_eq!(answer.status, 500);
    assert!(
        answer.refusal().contains("cannot write its secret file"),
        "{}",
        answer.refusal()
    );
    assert!(guard.secrets().next().is_none(), "nothing staged");
}

#[tokio::test]
async fn a_late_or_replayed_stage_cannot_replace_a_newer_one() {
    // The controller's first stage request is held up on the way; it gives up, rotates
    // again and switches; then the first one arrives.
    let dir = tempfile::tempdir().unwrap();
    let (base, guard, file) = rotating_agent(dir.path()).await;
    let late = Secret::new(b"the-late-secret-of-node-1".to_vec()).unwrap();
    let sealed = crate::protocol::seal_next_secret(&key(), NODE, &late, [3; 24]);
    let body = serde_json::to_vec(&crate::agent_api::StageSecret { next: sealed }).unwrap();
    // Signed (with the then current secret) ten seconds ago, delivered now.
    let (timestamp, nonce) = (now() - 10, Nonce::random());
    let signature = sign_request(
        &key(),
        &RequestParts {
            node: NODE,
            method: "PUT",
            path: "/v1/secret",
            query: "",
            timestamp,
            nonce,
            body: &body,
        },
    );

    assert_eq!(stage(&base, key(), &next_key()).await.status, 204);
    let answer = reqwest::Client::new()
        .put(base.join("/v1/secret").unwrap())
        .header(HEADER_NODE, NODE)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .header(HEADER_NONCE, nonce.to_hex())
        .header(HEADER_SIGNATURE, signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 409);
    assert!(answer.text().await.unwrap().contains("stale_stage"));
    assert_eq!(
        guard.secrets().next(),
        Some(&next_key()),
        "the newer one stays"
    );
    assert_eq!(staged_secret(&file), next_key());
    let commit = client(base, next_key()).commit_secret().await.unwrap();
    assert_eq!(commit.status, 204, "{}", commit.refusal());
}

#[test]
fn a_new_secret_written_by_join_forgets_a_staged_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = SecretFile::new(dir.path().join(SECRET_FILE));
    write_secret_file(file.path(), &key());
    write_secret_file(&file.next_path(), &next_key());
    file.forget_staged().unwrap();
    assert!(!file.next_path().exists());
    file.forget_staged().unwrap();
}
