//! Rotating the node's secret without a failed request (docs/agent-protocol.md, "Rotating
//! the secret"). The controller stages the next secret (`PUT /v1/secret`, sealed under the
//! secret that signs the request), switches to it, then commits (`POST /v1/secret/commit`,
//! signed with the next secret). Each step is on disk before it is answered: the staged
//! secret in `<secret file>.next` (after a line with the staging request's timestamp), the
//! commit as a rename over the secret file; an agent that restarts mid-rotation accepts both
//! again.

use super::handlers::{bad_body, refuse};
use super::{AgentError, load_secret, read_secret_file};
use crate::agent_api::StageSecret;
use crate::protocol::{NonceStore, ReplayGuard, Secret, Secrets, Slot, Verified, open_next_secret};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Extension, Router};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The node's secret file and, during a rotation, the staged one beside it.
#[derive(Clone, Debug)]
pub struct SecretFile {
    path: PathBuf,
}

impl SecretFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SecretFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a staged secret waits for its commit.
    pub fn next_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".next");
        PathBuf::from(name)
    }

    /// The secret, and the staged one if a rotation was under way.
    pub fn load(&self) -> Result<Secrets, AgentError> {
        let current = load_secret(&self.path)?;
        let next = self.next_path();
        if !next.exists() {
            return Ok(Secrets::one(current));
        }
        // Its first line is the staging request's timestamp, the rest the secret.
        let bad = || AgentError::BadStaged(next.clone());
        let bytes = read_secret_file(&next)?;
        let line = bytes.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
        let at: i64 = std::str::from_utf8(&bytes[..line])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let secret = Secret::new(&bytes[line + 1..]).map_err(|_| bad())?;
        tracing::info!(file = %next.display(), "a secret rotation is under way: both secrets are accepted");
        Ok(Secrets::two(current, secret, at))
    }

    /// Forgets a staged secret (a new secret was written by hand or by `join`).
    pub fn forget_staged(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.next_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes the staged secret, after the staging request's timestamp: whole or not at
    /// all, mode 0600, durable.
    fn stage(&self, next: &Secret, at: i64) -> std::io::Result<()> {
        self.replace(
            &self.next_path(),
            &[format!("{at}\n").as_bytes(), next.as_bytes()],
        )
    }

    /// The staged secret becomes the secret, durable: written whole beside the secret file
    /// (without the timestamp line), renamed over it, then the staged file removed. A crash
    /// in between leaves the staged file, and so both secrets, accepted again.
    fn commit(&self, next: &Secret) -> std::io::Result<()> {
        self.replace(&self.path, &[next.as_bytes()])?;
        self.forget_staged()?;
        self.sync_dir()
    }

    /// Replaces `path` with `parts`: written to a new 0600 file beside it, synced, renamed
    /// over it, the folder synced. Whole or not at all.
    fn replace(&self, path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    }
}

struct Rotation<S> {
    guard: Arc<ReplayGuard<S>>,
    file: SecretFile,
    /// One rotation step at a time: a step reads the secrets, writes a file, then sets them.
    step: tokio::sync::Mutex<()>,
}

pub fn routes<S: NonceStore + Send + Sync + 'static>(
    guard: Arc<ReplayGuard<S>>,
    file: SecretFile,
) -> Router {
    let state = Arc::new(Rotation {
        guard,
        file,
        step: tokio::sync::Mutex::new(()),
    });
    Router::new()
        .route("/v1/secret", put(stage::<S>))
        .route("/v1/secret/commit", post(commit::<S>))
        .with_state(state)
}

fn cannot_write(file: &Path, e: &std::io::Error) -> Response {
    tracing::error!(file = %file.display(), error = %e, "cannot keep the rotated secret");
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        "secret_file",
        format!(
            "the agent cannot write its secret file {}: {e} (it keeps the secret in a file it can write: DATA_DIR/secret by default)",
            file.display()
        ),
    )
}

impl<S: NonceStore> Rotation<S> {
    /// Commits the staged secret, as of the request verified at `at`.
    fn commit_now(&self, at: i64) -> std::io::Result<()> {
        let secrets = self.guard.secrets();
        if let Some(next) = secrets.next() {
            self.file.commit(next)?;
        }
        self.guard.set_secrets(secrets.commit(at, unix_now()));
        tracing::info!("secret rotated: the new secret is the only one accepted");
        Ok(())
    }

    /// Which secret verified the request, as of now: the middleware decided before this
    /// step took its turn, and a step before may have changed the secrets since.
    fn slot(&self, verified: &Verified) -> Option<Slot> {
        self.guard.secrets().slot_of(&verified.secret)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `PUT /v1/secret`: stages the next secret. A request signed with the staged secret first
/// commits it (the controller had switched but its commit never arrived).
async fn stage<S: NonceStore + Send + Sync + 'static>(
    State(rotation): State<Arc<Rotation<S>>>,
    Extension(verified): Extension<Verified>,
    body: axum::body::Bytes,
) -> Response {
    let body: StageSecret = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    let _step = rotation.step.lock().await;
    let node = rotation.guard.node().to_owned();
    let next = match open_next_secret(&verified.secret, &node, &body.next) {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_sealed_secret",
                e.to_string(),
            );
        }
    };
    match rotation.slot(&verified) {
        Some(Slot::Current) => {
            // A stage request older than the one that staged what waits now (late, or
            // replayed) must not replace it: the controller may have switched to it.
            if rotation
                .guard
                .secrets()
                .staged_at()
                .is_some_and(|at| verified.timestamp <= at)
            {
                return refuse(
                    StatusCode::CONFLICT,
                    "stale_stage",
                    "a newer request staged the next secret",
                );
            }
        }
        Some(Slot::Next) => {
            let r = rotation.clone();
            let at = verified.timestamp;
            match tokio::task::spawn_blocking(move || r.commit_now(at)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return cannot_write(rotation.file.path(), &e),
                Err(e) => return cannot_write(rotation.file.path(), &std::io::Error::other(e)),
            }
        }
        Some(Slot::Retired) | None => return retired(),
    }
    if next == *rotation.guard.secrets().current() {
        return refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "same_secret",
            "the next secret is the current one",
        );
    }
    let file = rotation.file.clone();
    let staged = next.clone();
    let at = verified.timestamp;
    let written = tokio::task::spawn_blocking(move || file.stage(&staged, at)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return cannot_write(&rotation.file.next_path(), &e),
        Err(e) => return cannot_write(&rotation.file.next_path(), &std::io::Error::other(e)),
    }
    rotation
        .guard
        .set_secrets(rotation.guard.secrets().stage(next, verified.timestamp));
    tracing::info!("next secret staged: both secrets are accepted until the commit");
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /v1/secret/commit`: signed with the staged secret, makes it the only one.
async fn commit<S: NonceStore + Send + Sync + 'static>(
    State(rotation): State<Arc<Rotation<S>>>,
    Extension(verified): Extension<Verified>,
) -> Response {
    let _step = rotation.step.lock().await;
    match rotation.slot(&verified) {
        Some(Slot::Next) => {
            let r = rotation.clone();
            let committed =
                tokio::task::spawn_blocking(move || r.commit_now(verified.timestamp)).await;
            match committed {
                Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
                Ok(Err(e)) => cannot_write(rotation.file.path(), &e),
                Err(e) => cannot_write(rotation.file.path(), &std::io::Error::other(e)),
            }
        }
        // A repeated commit whose first answer was lost: nothing is staged any more.
        Some(Slot::Current) if rotation.guard.secrets().next().is_none() => {
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Slot::Current) => refuse(
            StatusCode::CONFLICT,
            "not_signed_with_next",
            "a commit is signed with the staged secret: switch to it first",
        ),
        Some(Slot::Retired) | None => retired(),
    }
}

fn retired() -> Response {
    refuse(
        StatusCode::CONFLICT,
        "retired_secret",
        "signed with a secret this agent has retired",
    )
}
