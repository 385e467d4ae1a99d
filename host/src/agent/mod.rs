//! The agent's HTTP server: every request goes through the protocol's checks (`auth`) before
//! a handler sees it, and every answer to a verified request is signed. The handlers
//! (`handlers`) drive the node's data plane (`dataplane`): health, the peer interface, peers
//! and the WireGuard dump (the table in `agent_api`).

pub mod auth;
mod handlers;
pub mod join;
pub mod rotation;

use crate::dataplane::DataPlane;
use crate::protocol::{NonceStore, ReplayGuard, Secret, SecretError, Secrets};
use crate::store::agent_nonces::{AgentNonces, NonceStoreError};
use axum::Router;
pub use rotation::SecretFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The secret file's name in the data dir, unless `--secret-file` says otherwise.
pub const SECRET_FILE: &str = "secret";

/// The agent's request checks, shared by every connection.
pub type Guard = Arc<ReplayGuard<AgentNonces>>;

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read the secret file {path}: {source}")]
    ReadSecret {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Anyone else who can read the secret can impersonate the controller.
    #[error(
        "the secret file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    SecretFileOpen { path: PathBuf, mode: u32 },
    #[error("the secret file {path}: {source}")]
    BadSecret { path: PathBuf, source: SecretError },
    #[error(
        "the staged secret {0} is not a timestamp line and a secret: remove it to drop the rotation"
    )]
    BadStaged(PathBuf),
    #[error("the node id {0:?} is not 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadNodeId(String),
    #[error(transparent)]
    Nonces(#[from] NonceStoreError),
    #[error(transparent)]
    DataPlane(#[from] crate::dataplane::PlaneError),
    #[error(transparent)]
    Tls(#[from] crate::https::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a secret file, refusing one that group or others may read.
pub fn load_secret(path: &Path) -> Result<Secret, AgentError> {
    let bytes = read_secret_file(path)?;
    Secret::from_file_contents(&bytes).map_err(|source| AgentError::BadSecret {
        path: path.to_owned(),
        source,
    })
}

/// A secret file's bytes, refusing a file that group or others may read.
fn read_secret_file(path: &Path) -> Result<Vec<u8>, AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |source| AgentError::ReadSecret {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_err)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(AgentError::SecretFileOpen {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    std::fs::read(path).map_err(read_err)
}

/// The guard of an agent whose state lives in `data_dir`.
pub fn open_guard(node: &str, secrets: Secrets, data_dir: &Path) -> Result<Guard, AgentError> {
    if !crate::protocol::valid_node_id(node) {
        return Err(AgentError::BadNodeId(node.to_owned()));
    }
    std::fs::create_dir_all(data_dir).map_err(|source| AgentError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let nonces = AgentNonces::open(data_dir)?;
    Ok(Arc::new(ReplayGuard::new(secrets, node, nonces)))
}

pub use crate::agent_api::Health;

/// The agent's routes, all behind the signature check. Generic over where nonces are kept so
/// the benchmark can show what the durable record costs; the agent uses [`AgentNonces`].
/// `secret_file`: where a rotated secret is kept (the file the secrets were loaded from).
pub fn router<S: NonceStore + Send + Sync + 'static>(
    guard: Arc<ReplayGuard<S>>,
    plane: Arc<DataPlane>,
    secret_file: SecretFile,
) -> Router {
    handlers::routes(plane, Instant::now())
        .merge(rotation::routes(guard.clone(), secret_file))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            auth::verify_and_sign,
        ))
}

/// The health document of an agent started at `started`.
pub async fn health(started: Instant, plane: &DataPlane) -> Health {
    let load = tokio::fs::read_to_string("/proc/loadavg")
        .await
        .unwrap_or_default();
    let mut avg = [0.0; 3];
    for (slot, field) in avg.iter_mut().zip(load.split_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    Health {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: started.elapsed().as_secs(),
        load_average: avg,
        interfaces: plane.summaries().await,
    }
}

/// Serves the agent on `listener` until `shutdown` resolves: over HTTPS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    guard: Guard,
    plane: Arc<DataPlane>,
    secret_file: SecretFile,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(guard, plane, secret_file);
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            crate::https::serve(listener, app, tls, shutdown).await
        }
    }
}

/// `weft agent`: loads the secrets (refusing open files), opens the nonce store, serves.
pub async fn run(
    args: crate::cli::AgentArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let secret_file = SecretFile::new(args.secret_file());
    let secrets = secret_file.load()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::https::load(cert, key).await?),
        _ => None,
    };
    let guard = open_guard(&args.node_id, secrets, &args.data_dir)?;
    let plane = DataPlane::open_with(
        args.data_dir.clone(),
        args.peer_interface.clone(),
        args.uapi_dir.clone(),
    )?;
    plane.set_offload(!args.no_offload);
    // Interfaces and peers come back before the controller is answered.
    plane.restore().await;
    let listen_err = |source| AgentError::Listen {
        addr: args.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(listen_err)?;
    tracing::info!(node = %args.node_id, addr = %args.listen, "agent listening");
    serve(listener, guard, plane, secret_file, tls, shutdown)
        .await
        .map_err(listen_err)
}

#[cfg(test)]
mod tests;
