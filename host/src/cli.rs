//! The command line. Every option also reads a `WEFT_*` environment variable.

use crate::plugins::World;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "An overlay network and IPAM for many Linux servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: the API on --listen, state in --data-dir.
    Serve(ServeArgs),
    /// Manage API tokens (works whether or not `weft serve` is running).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage users of the web pages (works whether or not `weft serve` is running).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Write, check and list plugins (WebAssembly components; see plugins/README.md).
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Run a node's agent: answers the controller's signed requests (docs/agent-protocol.md);
    /// `weft agent join` enrols a new node first.
    Agent(Box<AgentCommand>),
    /// Join tokens that enrol nodes (works whether or not `weft serve` is running).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Write a consistent copy of the database to FILE, while `weft serve` runs or not.
    Backup {
        /// The new file (an existing one is refused).
        file: std::path::PathBuf,
        #[command(flatten)]
        common: DataDirArgs,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentCommand {
    #[command(subcommand)]
    pub command: Option<AgentSubcommand>,
    #[command(flatten)]
    pub run: Option<AgentArgs>,
}

#[derive(Debug, Subcommand)]
pub enum AgentSubcommand {
    /// Enrol this node with a join token, keep the secret it gets, and run the agent.
    Join(JoinArgs),
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The controller's URL, e.g. https://weft.example.net/
    pub url: String,
    /// The join token (`weft node token create`)
    #[arg(long, env = "WEFT_JOIN_TOKEN")]
    pub token: String,
    /// This node's name: its id in the signed protocol
    #[arg(long)]
    pub name: String,
    /// Address to serve the controller's requests on
    #[arg(long, env = "WEFT_AGENT_LISTEN")]
    pub listen: SocketAddr,
    /// HOST or HOST:PORT that clients and mesh members reach this node at (PORT: its
    /// WireGuard port, default 51820)
    #[arg(long)]
    pub endpoint: String,
    /// Where the controller reaches this agent [default: http(s)://HOST:LISTEN-PORT/]
    #[arg(long)]
    pub agent_url: Option<String>,
    /// Where the agent keeps its state; the secret goes to DATA_DIR/secret (0600)
    #[arg(long, env = "WEFT_AGENT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Trust only this CA (PEM) for the controller's certificate
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Allow a plain-HTTP controller: the token and the node's secret then cross the network
    /// in clear
    #[arg(long)]
    pub insecure: bool,
    /// Serve the controller's requests over HTTPS with this certificate chain (PEM)
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name of the node's peer interface, as for `weft agent`
    #[arg(long, env = "WEFT_PEER_INTERFACE", default_value = crate::agent_api::PEER_INTERFACE)]
    pub peer_interface: String,
    /// Where the WireGuard UAPI sockets go, as for `weft agent`
    #[arg(long, env = "WEFT_UAPI_DIR", default_value = crate::dataplane::uapi::SOCKET_DIR)]
    pub uapi_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Join tokens: create (the secret is the last line printed), list, revoke.
    Token {
        #[command(subcommand)]
        command: JoinTokenCommand,
    },
    /// Give a node a new shared secret, through its agent, with no failed request: the
    /// agent takes the new one before the old one stops working.
    RotateSecret {
        /// The node's name
        name: String,
        #[command(flatten)]
        common: DataDirArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum JoinTokenCommand {
    /// Create a join token; its secret is the last line printed (shown once, stored hashed).
    Create {
        /// The peer pool (name or id) the nodes it enrols take peers' addresses from
        #[arg(long)]
        pool: String,
        /// Labels the nodes get, as k=v,k=v
        #[arg(long, default_value = "")]
        labels: String,
        /// How long it stays valid, e.g. 30m, 1h, 7d
        #[arg(long, default_value = "1h")]
        expires: String,
        /// How many nodes it may enrol
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[command(flatten)]
        common: DataDirArgs,
    },
    /// List join tokens (never their secrets) with the nodes each enrolled.
    List {
        #[command(flatten)]
        common: DataDirArgs,
    },
    /// Revoke a join token by its id (as `list` shows it).
    Revoke {
        id: String,
        #[command(flatten)]
        common: DataDirArgs,
    },
}

impl AgentArgs {
    /// The secret file given, or DATA_DIR/secret.
    pub fn secret_file(&self) -> PathBuf {
        self.secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::agent::SECRET_FILE))
    }
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Address to serve the controller's requests on
    #[arg(long, env = "WEFT_AGENT_LISTEN")]
    pub listen: SocketAddr,
    /// The node id the controller gave this node (part of every signature)
    #[arg(long, env = "WEFT_NODE_ID")]
    pub node_id: String,
    /// The file holding the node's shared secret (mode 0600), DATA_DIR/secret by default.
    /// A rotation rewrites it, so the agent must be able to write its folder
    #[arg(long, env = "WEFT_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Where the agent keeps its state (agent.redb, dataplane.json, keys/)
    #[arg(long, env = "WEFT_AGENT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The name of the node's peer interface, the one client peers connect to
    #[arg(long, env = "WEFT_PEER_INTERFACE", default_value = crate::agent_api::PEER_INTERFACE)]
    pub peer_interface: String,
    /// Serve the controller's requests over HTTPS with this certificate chain (PEM); needs
    /// --tls-key
    #[arg(long, env = "WEFT_AGENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, env = "WEFT_AGENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where the WireGuard UAPI sockets go (`wg show` looks in /var/run/wireguard)
    #[arg(long, env = "WEFT_UAPI_DIR", default_value = crate::dataplane::uapi::SOCKET_DIR)]
    pub uapi_dir: std::path::PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Write a ready-to-build crate for a new plugin into DIR/NAME/.
    New {
        name: String,
        /// node-selector, ping-check or ipam-sync.
        #[arg(long, value_parser = parse_world)]
        world: World,
        /// Where to create the crate's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Check a component: the world and contract version it targets, what it imports, and
    /// whether this weft loads it.
    Check {
        file: PathBuf,
        /// The world its manifest will declare [default: the one it exports]
        #[arg(long, value_parser = parse_world)]
        world: Option<World>,
    },
    /// List the plugins (DATA_DIR/plugins/NAME/ and --plugins-dir) and the state of each: of
    /// the running `weft serve`, or as they would load.
    List {
        #[command(flatten)]
        dirs: PluginDirArgs,
    },
    /// Make the running `weft serve` load its plugins afresh (a changed file in a plugins
    /// folder is also picked up by itself).
    Reload {
        #[command(flatten)]
        dirs: PluginDirArgs,
    },
    /// Run a plugin once, for testing: through the running `weft serve` if there is one,
    /// else here. Prints what it answered, as JSON.
    Run {
        name: String,
        /// JSON input: for a node-selector {"request": {"peer_name", "labels"}, "candidates":
        /// [{"name", "max_peers", ...}]}; for a ping-check {"targets": [ADDRESS, ...]}; a sync
        /// takes none.
        #[arg(long, default_value = "null")]
        input: String,
        #[command(flatten)]
        dirs: PluginDirArgs,
    },
}

#[derive(Debug, Args)]
pub struct PluginDirArgs {
    #[command(flatten)]
    pub common: DataDirArgs,
    /// Another folder of plugins, besides DATA_DIR/plugins
    #[arg(long, env = "WEFT_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
}

fn parse_world(text: &str) -> Result<World, String> {
    World::ALL
        .into_iter()
        .find(|w| w.as_str() == text)
        .ok_or_else(|| format!("{text:?} is not a world: node-selector, ping-check or ipam-sync"))
}

#[derive(Debug, Args)]
pub struct DataDirArgs {
    /// Where weft keeps its database [default: ./weft-data]
    #[arg(long, env = "WEFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML file with defaults for these options
    #[arg(long, env = "WEFT_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: DataDirArgs,
    /// Address to serve the API on [default: 127.0.0.1:8080]
    #[arg(long, env = "WEFT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Mark the session cookie Secure (set this when a TLS proxy serves weft over HTTPS)
    #[arg(long, env = "WEFT_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key
    #[arg(long, env = "WEFT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, env = "WEFT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Trust agents whose HTTPS certificate this CA (PEM, one or more) signed, besides the
    /// system's roots
    #[arg(long, env = "WEFT_AGENT_CA")]
    pub agent_ca: Option<PathBuf>,
    /// Another folder of plugins, besides DATA_DIR/plugins
    #[arg(long, env = "WEFT_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// The ping-check plugin that checks addresses [default: the built-in ICMP check]
    #[arg(long, env = "WEFT_PING_PLUGIN")]
    pub ping_plugin: Option<String>,
    /// Seconds between ping sweeps of allocated and reserved addresses; 0 turns them off
    /// [default: 60]
    #[arg(long, env = "WEFT_PING_INTERVAL")]
    pub ping_interval: Option<u64>,
    /// Seconds between health polls of every enabled node; 0 turns them off [default: 60]
    #[arg(long, env = "WEFT_HEALTH_INTERVAL")]
    pub health_interval: Option<u64>,
    /// Seconds one call to a node's agent may take [default: 5]
    #[arg(long, env = "WEFT_HEALTH_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..=300))]
    pub health_timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is the last line printed (shown once, stored hashed).
    Create {
        #[arg(long)]
        name: String,
        /// The token may only read.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        common: DataDirArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        common: DataDirArgs,
    },
    /// Revoke a token by name.
    Revoke {
        name: String,
        #[command(flatten)]
        common: DataDirArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from stdin (one line), never from the command line.
    Add {
        name: String,
        /// admin (may change things) or viewer (reads only).
        #[arg(long, default_value = "admin")]
        role: crate::store::Role,
        #[command(flatten)]
        common: DataDirArgs,
    },
}
