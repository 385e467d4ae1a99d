//! Admin commands (tokens, users, plugins, backups) that work whether or not `weft serve` holds the
//! database: while it runs they go through a Unix socket in the data dir (mode 0600), otherwise
//! the command opens the database (and loads the plugins) itself. Never "database locked".

use crate::config::{self, Config};
use crate::plugins::{PluginHost, Status};
use crate::store::{Role, Store, StoreError, TokenInfo, UserInfo, new_secret};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    TokenCreate {
        name: String,
        read_only: bool,
    },
    TokenList,
    TokenRevoke {
        name: String,
    },
    /// The password is hashed by the command that read it, so only the argon2id hash crosses
    /// the socket and nothing that serves requests ever holds the password.
    UserAdd {
        name: String,
        role: Role,
        password_hash: String,
    },
    JoinTokenCreate {
        pool: String,
        labels: Vec<(String, String)>,
        uses: u32,
        valid_for_secs: u64,
    },
    JoinTokenList,
    JoinTokenRevoke {
        id: String,
    },
    /// Rotates a node's shared secret through its agent.
    NodeRotateSecret {
        name: String,
    },
    /// A consistent copy of the database to `path` (absolute: the server's working folder
    /// is not the command's).
    Backup {
        path: std::path::PathBuf,
    },
    PluginList,
    PluginReload,
    /// `input`: as `plugin_run` takes it.
    PluginRun {
        name: String,
        input: serde_json::Value,
    },
}

impl AdminRequest {
    fn needs_plugins(&self) -> bool {
        matches!(
            self,
            AdminRequest::PluginList | AdminRequest::PluginReload | AdminRequest::PluginRun { .. }
        )
    }

    fn needs_registry(&self) -> bool {
        matches!(self, AdminRequest::NodeRotateSecret { .. })
    }
}

/// What a request is carried out with: the store, and what some requests need besides.
#[derive(Clone)]
pub struct AdminContext {
    pub store: Store,
    pub plugins: Option<Arc<PluginHost>>,
    /// The node registry, for requests that talk to agents.
    pub registry: Option<crate::controller::nodes::Registry>,
    /// Whether this is the running server (else a command that opened the store).
    pub serving: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminResponse {
    TokenCreated {
        info: TokenInfo,
        secret: String,
    },
    Tokens(Vec<TokenInfo>),
    UserAdded(UserInfo),
    /// `serving`: whether these are the plugins of a running `weft serve`.
    Plugins {
        serving: bool,
        plugins: Vec<Status>,
    },
    PluginRan(serde_json::Value),
    JoinTokenCreated {
        token: crate::store::JoinToken,
        secret: String,
    },
    JoinTokens(Vec<crate::store::JoinToken>),
    /// `serving`: the copy was taken by a running `weft serve`, while it served.
    BackedUp {
        rows: u64,
        serving: bool,
    },
    Done,
    Error(String),
}

/// Carries out a request against an open store and, for plugin requests, a plugin host.
pub async fn execute(ctx: &AdminContext, req: AdminRequest) -> AdminResponse {
    let (store, serving) = (&ctx.store, ctx.serving);
    if req.needs_plugins() {
        let Some(host) = ctx.plugins.clone() else {
            return AdminResponse::Error("the plugin host is not running".into());
        };
        return plugin_request(store.clone(), host, serving, req).await;
    }
    if let AdminRequest::NodeRotateSecret { name } = req {
        let Some(registry) = &ctx.registry else {
            return AdminResponse::Error("the node registry is not open".into());
        };
        return match registry.rotate_secret(&name, "cli").await {
            Ok(_) => AdminResponse::Done,
            Err(e) => AdminResponse::Error(e.to_string()),
        };
    }
    let result = match req {
        AdminRequest::TokenCreate { name, read_only } => {
            let secret = new_secret();
            let s = secret.clone();
            store
                .write(move |w| w.create_token(&name, &s, read_only))
                .await
                .map(|info| AdminResponse::TokenCreated { info, secret })
        }
        AdminRequest::TokenList => store.read(|r| r.tokens()).map(AdminResponse::Tokens),
        AdminRequest::TokenRevoke { name } => store
            .write(move |w| w.revoke_token(&name))
            .await
            .map(|()| AdminResponse::Done),
        AdminRequest::UserAdd {
            name,
            role,
            password_hash,
        } => store
            .write(move |w| w.create_user(&name, role, &password_hash))
            .await
            .map(AdminResponse::UserAdded),
        AdminRequest::JoinTokenCreate {
            pool,
            labels,
            uses,
            valid_for_secs,
        } => {
            let secret = crate::store::new_join_secret();
            let s = secret.clone();
            store
                .write(move |w| {
                    let valid = Duration::from_secs(valid_for_secs);
                    w.create_join_token(&s, &pool, &labels, uses, valid, "cli")
                })
                .await
                .map(|token| AdminResponse::JoinTokenCreated { token, secret })
        }
        AdminRequest::JoinTokenList => store
            .read(|r| r.join_tokens())
            .map(AdminResponse::JoinTokens),
        AdminRequest::JoinTokenRevoke { id } => store
            .write(move |w| w.revoke_join_token(&id))
            .await
            .map(|_| AdminResponse::Done),
        AdminRequest::Backup { path } => {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.backup(&path))
                .await
                .unwrap_or(Err(StoreError::Panicked))
                .map(|rows| AdminResponse::BackedUp { rows, serving })
        }
        AdminRequest::PluginList
        | AdminRequest::PluginReload
        | AdminRequest::PluginRun { .. }
        | AdminRequest::NodeRotateSecret { .. } => {
            return AdminResponse::Error("a plugin or agent request reached the store".into());
        }
    };
    result.unwrap_or_else(|e| AdminResponse::Error(e.to_string()))
}

/// Plugin requests run on a blocking thread: loading compiles, and a run waits on the plugin.
async fn plugin_request(
    store: Store,
    host: Arc<PluginHost>,
    serving: bool,
    req: AdminRequest,
) -> AdminResponse {
    let runtime = tokio::runtime::Handle::current();
    let work = move || match req {
        AdminRequest::PluginList => AdminResponse::Plugins {
            serving,
            plugins: host.list(),
        },
        AdminRequest::PluginReload => AdminResponse::Plugins {
            serving,
            plugins: host.reload(),
        },
        AdminRequest::PluginRun { name, input } => {
            match crate::plugin_run::run(&host, &store, runtime, &name, input) {
                Ok(v) => AdminResponse::PluginRan(v),
                Err(e) => AdminResponse::Error(e.to_string()),
            }
        }
        _ => AdminResponse::Error("not a plugin request".into()),
    };
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| AdminResponse::Error(format!("the plugin request failed: {e}")))
}

/// Serves the admin socket until the task is dropped. One JSON request line, one JSON answer.
pub async fn serve(data_dir: &Path, ctx: AdminContext) -> std::io::Result<()> {
    let path = config::admin_socket(data_dir);
    // A socket left by a killed server would make bind fail.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match serde_json::from_str::<AdminRequest>(&line) {
                Ok(req) => execute(&ctx, req).await,
                Err(e) => AdminResponse::Error(format!("bad admin request: {e}")),
            };
            let mut out = serde_json::to_vec(&answer).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot create data dir {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("the database is held by another process that does not answer on {0}")]
    Locked(String),
    #[error("admin socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the plugin host: {0}")]
    Plugins(String),
    #[error("cannot open the node registry: {0}")]
    Registry(String),
}

/// Runs a request from the command line: through the server if one is running, else directly
/// (loading the plugins of `config` for a plugin request).
pub fn run(config: &Config, req: AdminRequest) -> Result<AdminResponse, AdminError> {
    let data_dir = config.data_dir.as_path();
    let socket = config::admin_socket(data_dir);
    // The server may be between opening the database and binding its socket: retry a while.
    for _ in 0..100 {
        if let Ok(stream) = UnixStream::connect(&socket) {
            return call(stream, &req).map_err(AdminError::Socket);
        }
        std::fs::create_dir_all(data_dir)
            .map_err(|e| AdminError::DataDir(data_dir.display().to_string(), e))?;
        match Store::open(&config::db_path(data_dir)) {
            Ok(store) => {
                // Multi-threaded: a plugin's probes and HTTP requests run on this runtime
                // from the blocking thread of the call, and need workers to drive them.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(AdminError::Runtime)?;
                let plugins = if req.needs_plugins() {
                    let host =
                        PluginHost::new(config.plugins_dirs(), Some(config.plugin_cache_dir()))
                            .map_err(|e| AdminError::Plugins(e.to_string()))?;
                    Some(Arc::new(host))
                } else {
                    None
                };
                let registry = if req.needs_registry() {
                    Some(registry(config, &store).map_err(AdminError::Registry)?)
                } else {
                    None
                };
                let ctx = AdminContext {
                    store,
                    plugins,
                    registry,
                    serving: false,
                };
                let answer = rt.block_on(execute(&ctx, req));
                let AdminContext { store, .. } = ctx;
                store.close();
                return Ok(answer);
            }
            Err(e) if e.is_locked() => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(AdminError::Locked(socket.display().to_string()))
}

/// The registry a command uses when no server runs: as `weft serve` would build it.
fn registry(config: &Config, store: &Store) -> Result<crate::controller::nodes::Registry, String> {
    let secrets =
        crate::secretbox::SecretBox::open_or_create(&config.data_dir).map_err(|e| e.to_string())?;
    let roots = match &config.agent_ca {
        Some(path) => crate::https::read_roots(path)?,
        None => Vec::new(),
    };
    Ok(
        crate::controller::nodes::Registry::new(store.clone(), secrets, config.agent_timeout)
            .with_agent_roots(roots),
    )
}

fn call(mut stream: UnixStream, req: &AdminRequest) -> std::io::Result<AdminResponse> {
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}
