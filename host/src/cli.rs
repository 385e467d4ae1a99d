//! The command line. Every option also reads a `WEFT_*` environment variable.

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
