//! `weft serve`: opens the store, serves the API and the admin socket, and shuts down cleanly
//! on SIGINT or SIGTERM (in-flight requests finish, then the database closes).

use crate::config::Config;
use crate::plugins::PluginHost;
use crate::store::Store;
use crate::web::{self, AppState};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
    #[error("node secrets: {0}")]
    Secrets(#[from] crate::secretbox::SecretBoxError),
    #[error(transparent)]
    Tls(#[from] crate::https::TlsError),
    #[error("agent CA {path}: {why}")]
    AgentCa { path: String, why: String },
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
    // A bad certificate is found before anything else starts.
    let tls = match &config.tls {
        Some(t) => Some(crate::https::load(&t.cert, &t.key).await?),
        None => None,
    };
    let agent_roots = match &config.agent_ca {
        Some(path) => crate::https::read_roots(path).map_err(|why| ServeError::AgentCa {
            path: path.display().to_string(),
            why,
        })?,
        None => Vec::new(),
    };
    let store = open_store(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    let plugins = start_plugins(&config).await;
    // Node secrets are sealed under a key file beside the database.
    let secrets = crate::secretbox::SecretBox::open_or_create(&config.data_dir)?;
    let registry =
        crate::controller::nodes::Registry::new(store.clone(), secrets, config.agent_timeout)
            .with_agent_roots(agent_roots);
    // Shared by the background work (schedulers, folder watch): each stops when it flips.
    let (stopping, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let admin = {
        let data_dir = config.data_dir.clone();
        let ctx = crate::admin::AdminContext {
            store: store.clone(),
            plugins: plugins.clone(),
            registry: Some(registry.clone()),
            serving: true,
        };
        // Bind before answering requests, so admin commands never meet a locked database.
        let task = tokio::spawn(async move {
            if let Err(e) = crate::admin::serve(&data_dir, ctx).await {
                tracing::error!(error = %e, "admin socket failed: `weft token` commands cannot reach this server");
            }
        });
        tokio::task::yield_now().await;
        task
    };
    let mut background = Vec::new();
    let _watch = match &plugins {
        Some(host) => match host.watch() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the plugins folders: changes need `weft plugin reload`");
                None
            }
        },
        None => None,
    };
    if let Some(interval) = config.ping_interval {
        let (checker, interval) = ping_checker(&config, plugins.as_ref(), interval);
        background.push(tokio::spawn(crate::ping::run_scheduler(
            store.clone(),
            checker,
            interval,
            stopped(),
        )));
    }
    if let Some(host) = &plugins {
        background.push(tokio::spawn(crate::syncs::run_scheduler(
            host.clone(),
            store.clone(),
            stopped(),
        )));
    }
    let peer_stats = crate::controller::wg_stats::WgSeen::default();
    let mesh_seen = crate::controller::meshes::MeshSeen::default();
    if let Some(interval) = config.health_interval {
        background.push(tokio::spawn(crate::controller::health::run_scheduler(
            registry.clone(),
            peer_stats.clone(),
            mesh_seen.clone(),
            interval,
            stopped(),
        )));
    }
    let mut state = AppState::new(store.clone());
    state.peer_nodes = std::sync::Arc::new(registry.clone());
    state.nodes = Some(registry);
    state.peer_stats = peer_stats;
    state.mesh_seen = mesh_seen;
    // Over HTTPS the session cookie is always `Secure`.
    state.secure_cookies = config.secure_cookies || config.tls.is_some();
    state.plugins = plugins.clone();
    state.placement = config.placement.clone();
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
            "no user exists yet: create the first admin at {scheme}://{}/setup/{token} (works once, until this process stops), or with `weft user add NAME`",
            local,
            scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            }
        );
    }
    let app = web::router(state);
    // The peer address feeds the failed-login throttle.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = match tls {
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve),
        Some(tls) => crate::https::serve(listener, app, tls, shutdown)
            .await
            .map_err(ServeError::Serve),
    };
    admin.abort();
    let _ = admin.await;
    // A sweep or sync under way finishes first: it holds the store.
    let _ = stopping.send(true);
    for task in background {
        let _ = task.await;
    }
    drop(plugins);
    let _ = std::fs::remove_file(crate::config::admin_socket(&config.data_dir));
    tokio::task::spawn_blocking(move || store.close())
        .await
        .ok();
    tracing::info!("database closed; bye");
    result
}

/// The ping check and how often it sweeps: a configured ping-check plugin on its manifest's
/// `interval_secs` (default 60 s), else the built-in ICMP check every `--ping-interval`.
fn ping_checker(
    config: &Config,
    plugins: Option<&Arc<PluginHost>>,
    interval: std::time::Duration,
) -> (crate::ping::Checker, std::time::Duration) {
    use crate::ping::Checker;
    let Some(name) = &config.ping_plugin else {
        return (Checker::Builtin, interval);
    };
    let Some(host) = plugins else {
        tracing::warn!(plugin = %name, "the plugin host is not running; pinging with the built-in ICMP check");
        return (Checker::Builtin, interval);
    };
    let every = host
        .manifest(name)
        .and_then(|m| m.permissions.interval)
        .unwrap_or(interval);
    let checker = Checker::Plugin {
        host: host.clone(),
        name: name.clone(),
    };
    (checker, every)
}

/// Loads the plugins (compiling what the cache lacks), creating DATA_DIR/plugins on first
/// start. weft serves without plugins if the host cannot start, and says so.
async fn start_plugins(config: &Config) -> Option<Arc<PluginHost>> {
    let own = config.data_dir.join("plugins");
    if let Err(e) = std::fs::create_dir_all(&own) {
        tracing::warn!(dir = %own.display(), error = %e, "cannot create the plugins folder");
    }
    let (dirs, cache) = (config.plugins_dirs(), config.plugin_cache_dir());
    let started = tokio::task::spawn_blocking(move || PluginHost::new(dirs, Some(cache))).await;
    match started {
        Ok(Ok(host)) => Some(Arc::new(host)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the plugin host cannot start; serving without plugins");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "the plugin host cannot start; serving without plugins");
            None
        }
    }
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
