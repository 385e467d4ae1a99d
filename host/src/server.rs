//! `weft serve`: opens the store, serves the API and the admin socket, and shuts down cleanly
//! on SIGINT or SIGTERM (in-flight requests finish, then the database closes).

use crate::config::Config;
use crate::store::Store;
use crate::web::{self, AppState};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Admin(std::io::Error),
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// Opens the data dir and database, creating them on first start.
pub fn open_store(config: &Config) -> Result<Store, ServeError> {
    let dir = &config.data_dir;
    let fresh = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|source| ServeError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    if fresh {
        // The data dir holds the database and the admin socket: owner only.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(Store::open(&config.db_path())?)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let started = std::time::Instant::now();
    let store = open_store(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    let admin = {
        let data_dir = config.data_dir.clone();
        let store = store.clone();
        // Bind before answering requests, so admin commands never meet a locked database.
        let task = tokio::spawn(async move {
            if let Err(e) = crate::admin::serve(&data_dir, store).await {
                tracing::error!(error = %e, "admin socket failed: `weft token` commands cannot reach this server");
            }
        });
        tokio::task::yield_now().await;
        task
    };
    let mut state = AppState::new(store.clone());
    state.secure_cookies = config.secure_cookies;
    let no_tokens = store
        .read(|r| r.tokens().map(|t| t.is_empty()))
        .unwrap_or(false);
    let local = listener.local_addr().map_err(ServeError::Serve)?;
    tracing::info!(
        listen = %local,
        data_dir = %config.data_dir.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "weft is serving"
    );
    if no_tokens {
        tracing::warn!("no API token exists yet: create one with `weft token create --name NAME`");
    }
    let no_users = !store.read(|r| r.has_users()).unwrap_or(true);
    if no_users {
        // Logged once, by design: whoever reads this log may create the first admin.
        let token = state.open_setup();
        tracing::warn!(
            "no user exists yet: create the first admin at http://{}/setup/{token} (works once, until this process stops), or with `weft user add NAME`",
            local
        );
    }
    let app = web::router(state);
    // The peer address feeds the failed-login throttle.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve);
    admin.abort();
    let _ = admin.await;
    let _ = std::fs::remove_file(crate::config::admin_socket(&config.data_dir));
    tokio::task::spawn_blocking(move || store.close())
        .await
        .ok();
    tracing::info!("database closed; bye");
    result
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
