//! The `weft` binary: parse the command line, set up logging, dispatch.

use clap::Parser;
use std::process::ExitCode;
use weft::admin::{self, AdminRequest, AdminResponse};
use weft::cli::{
    AgentSubcommand, Cli, Command, DataDirArgs, NodeCommand, PluginCommand, PluginDirArgs,
    TokenCommand, UserCommand,
};
use weft::config::{Config, FileConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn config(common: DataDirArgs, listen: Option<std::net::SocketAddr>) -> Result<Config, String> {
    let file = FileConfig::load(common.config.as_deref()).map_err(|e| e.to_string())?;
    Ok(Config::resolve(common.data_dir, listen, file))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Plugin { command } => plugin(command),
        Command::Agent(cmd) => {
            let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            let cmd = *cmd;
            match (cmd.command, cmd.run) {
                (Some(AgentSubcommand::Join(j)), _) => rt.block_on(join_and_run(j)),
                (None, Some(args)) => rt
                    .block_on(weft::agent::run(args, weft::server::shutdown_signal()))
                    .map_err(|e| e.to_string()),
                (None, None) => Err(
                    "give --listen, --node-id and --data-dir (the secret in DATA_DIR/secret, or --secret-file), or enrol with `weft agent join`"
                        .into(),
                ),
            }
        }
        Command::Node {
            command: NodeCommand::Token { command },
        } => join_tokens(command),
        Command::Node {
            command: NodeCommand::RotateSecret { name, common },
        } => {
            let config = config(common, None)?;
            let req = AdminRequest::NodeRotateSecret { name: name.clone() };
            match admin::run(&config, req).map_err(|e| e.to_string())? {
                AdminResponse::Done => {
                    println!("rotated the secret of node {name:?}");
                    Ok(())
                }
                AdminResponse::Error(e) => Err(e),
                other => Err(format!("unexpected answer: {other:?}")),
            }
        }
        Command::Serve(args) => {
            let mut config = config(args.common, args.listen)?;
            // A flag can only turn it on; the file's `secure_cookies = true` stays on.
            config.secure_cookies |= args.secure_cookies;
            if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
                config.tls = Some(weft::config::Tls { cert, key });
            }
            if let Some(ca) = args.agent_ca {
                config.agent_ca = Some(ca);
            }
            if let Some(dir) = args.plugins_dir {
                config.plugins_dir = Some(dir);
            }
            if let Some(name) = args.ping_plugin {
                config.ping_plugin = Some(name);
            }
            if let Some(secs) = args.ping_interval {
                config.ping_interval = (secs > 0).then(|| std::time::Duration::from_secs(secs));
            }
            if let Some(secs) = args.health_interval {
                config.health_interval = (secs > 0).then(|| std::time::Duration::from_secs(secs));
            }
            if let Some(secs) = args.health_timeout {
                config.agent_timeout = std::time::Duration::from_secs(secs);
            }
            let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            rt.block_on(weft::server::serve(config, weft::server::shutdown_signal()))
                .map_err(|e| e.to_string())
        }
        Command::User {
            command: UserCommand::Add { name, role, common },
        } => {
            let password = read_password()?;
            let password_hash = weft::store::hash_password(&password).map_err(|e| e.to_string())?;
            drop(password);
            let config = config(common, None)?;
            let req = AdminRequest::UserAdd {
                name,
                role,
                password_hash,
            };
            match admin::run(&config, req).map_err(|e| e.to_string())? {
                AdminResponse::UserAdded(u) => {
                    println!("added {} user {:?}", u.role, u.name);
                    Ok(())
                }
                AdminResponse::Error(e) => Err(e),
                other => Err(format!("unexpected answer from the server: {other:?}")),
            }
        }
        Command::Backup { file, common } => {
            // The server may run elsewhere than here: it is given an absolute path.
            let file =
                std::path::absolute(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let config = config(common, None)?;
            let keyfile = config.data_dir.join("node-secrets.key");
            match admin::run(&config, AdminRequest::Backup { path: file.clone() })
                .map_err(|e| e.to_string())?
            {
                AdminResponse::BackedUp { rows, serving } => {
                    let how = if serving { " while serving" } else { "" };
                    println!("backed up {rows} rows to {}{how}", file.display());
                    if keyfile.exists() {
                        println!(
                            "node secrets are sealed under {}: keep a copy of it with the backup",
                            keyfile.display()
                        );
                    }
                    Ok(())
                }
                AdminResponse::Error(e) => Err(e),
                other => Err(format!("unexpected answer from the server: {other:?}")),
            }
        }
        Command::Token { command } => {
            let (common, req) = match command {
                TokenCommand::Create {
                    name,
                    read_only,
                    common,
                } => (common, AdminRequest::TokenCreate { name, read_only }),
                TokenCommand::List { common } => (common, AdminRequest::TokenList),
                TokenCommand::Revoke { name, common } => {
                    (common, AdminRequest::TokenRevoke { name })
                }
            };
            let config = config(common, None)?;
            match admin::run(&config, req).map_err(|e| e.to_string())? {
                AdminResponse::TokenCreated { info, secret } => {
                    let access = if info.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    };
                    println!(
                        "created {access} token {:?}; its secret is shown once:",
                        info.name
                    );
                    println!("{secret}");
                }
                AdminResponse::Tokens(tokens) => {
                    println!("{:<32} {:<10} CREATED", "NAME", "ACCESS");
                    for t in tokens {
                        let access = if t.read_only {
                            "read-only"
                        } else {
                            "read-write"
                        };
                        println!("{:<32} {:<10} {}", t.name, access, t.created);
                    }
                }
                AdminResponse::Done => println!("done"),
                AdminResponse::UserAdded(u) => println!("added user {:?}", u.name),
                AdminResponse::Error(e) => return Err(e),
                other => return Err(format!("unexpected answer from the server: {other:?}")),
            }
            Ok(())
        }
    }
}

fn plugin(command: PluginCommand) -> Result<(), String> {
    use weft::plugins::{check, scaffold};
    match command {
        PluginCommand::New { name, world, dir } => {
            let files = scaffold::scaffold(&dir, &name, world).map_err(|e| e.to_string())?;
            for f in files {
                println!("wrote {}", f.display());
            }
            println!(
                "build it: cd {} && cargo build --release --target wasm32-wasip2",
                dir.join(&name).display()
            );
            Ok(())
        }
        PluginCommand::Check { file, world } => {
            let bytes =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let report = check::check(&bytes, world).map_err(|e| e.to_string())?;
            println!("{report}");
            match report.refused {
                None => Ok(()),
                Some(_) => Err(format!("{} would be refused", file.display())),
            }
        }
        PluginCommand::List { dirs } => {
            print_plugins(plugin_admin(dirs, AdminRequest::PluginList)?)
        }
        PluginCommand::Reload { dirs } => {
            let answer = plugin_admin(dirs, AdminRequest::PluginReload)?;
            if matches!(answer, AdminResponse::Plugins { serving: false, .. }) {
                println!("no weft is serving this data dir; its plugins load when it starts:");
            }
            print_plugins(answer)
        }
        PluginCommand::Run { name, input, dirs } => {
            let input: serde_json::Value =
                serde_json::from_str(&input).map_err(|e| format!("--input is not JSON: {e}"))?;
            match plugin_admin(dirs, AdminRequest::PluginRun { name, input })? {
                AdminResponse::PluginRan(answer) => {
                    let text = serde_json::to_string_pretty(&answer).map_err(|e| e.to_string())?;
                    println!("{text}");
                    Ok(())
                }
                other => Err(format!("unexpected answer: {other:?}")),
            }
        }
    }
}

fn plugin_admin(dirs: PluginDirArgs, req: AdminRequest) -> Result<AdminResponse, String> {
    let mut config = config(dirs.common, None)?;
    if let Some(dir) = dirs.plugins_dir {
        config.plugins_dir = Some(dir);
    }
    match admin::run(&config, req).map_err(|e| e.to_string())? {
        AdminResponse::Error(e) => Err(e),
        answer => Ok(answer),
    }
}

fn print_plugins(answer: AdminResponse) -> Result<(), String> {
    use weft::plugins::State;
    let AdminResponse::Plugins { plugins, .. } = answer else {
        return Err(format!("unexpected answer: {answer:?}"));
    };
    if plugins.is_empty() {
        println!("no plugins");
    }
    for p in plugins {
        let world = p.world.map(|w| w.as_str()).unwrap_or("?");
        let state = match &p.state {
            State::Loaded => "loaded".to_string(),
            State::Failing { last } => format!("failing: {last}"),
            State::Refused { reason } => format!("refused: {reason}"),
        };
        println!(
            "{:<24} {:<14} {:<10} {state}",
            p.name,
            world,
            p.version.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// One line of stdin, without its line ending. Nothing echoes it: stdin is read as is (pipe it
/// in, or type it into a terminal with `stty -echo`).
fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err("the password (one line on stdin) must not be empty".into());
    }
    Ok(password)
}

/// `weft agent join`: enrol, then run the agent with what enrolment gave.
async fn join_and_run(j: weft::cli::JoinArgs) -> Result<(), String> {
    let joined = weft::agent::join::join(&j)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "enrolled as node {:?}{}; its secret is in {} (0600)",
        j.name,
        joined
            .overlay_address
            .map(|a| format!(" with overlay address {a}"))
            .unwrap_or_default(),
        joined.secret_file.display()
    );
    println!(
        "to start it again: weft agent --listen {} --node-id {} --data-dir {}",
        j.listen,
        j.name,
        j.data_dir.display()
    );
    let args = weft::cli::AgentArgs {
        listen: j.listen,
        node_id: j.name,
        secret_file: Some(joined.secret_file),
        data_dir: j.data_dir,
        peer_interface: j.peer_interface,
        tls_cert: j.tls_cert,
        tls_key: j.tls_key,
        uapi_dir: j.uapi_dir,
        no_offload: false,
    };
    weft::agent::run(args, weft::server::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// `weft node token create|list|revoke`.
fn join_tokens(command: weft::cli::JoinTokenCommand) -> Result<(), String> {
    use weft::cli::JoinTokenCommand as J;
    let (common, req) = match command {
        J::Create {
            pool,
            labels,
            expires,
            uses,
            common,
        } => {
            let labels =
                weft::input::parse_labels(&labels).map_err(|e| format!("--labels: {e}"))?;
            let valid =
                weft::input::parse_lifetime(&expires).map_err(|e| format!("--expires: {e}"))?;
            // Whole seconds cross the admin socket: less than one counts as one.
            let secs = valid.as_secs().max(1);
            let req = AdminRequest::JoinTokenCreate {
                pool,
                labels,
                uses,
                valid_for_secs: secs,
            };
            (common, req)
        }
        J::List { common } => (common, AdminRequest::JoinTokenList),
        J::Revoke { id, common } => (common, AdminRequest::JoinTokenRevoke { id }),
    };
    let config = config(common, None)?;
    match admin::run(&config, req).map_err(|e| e.to_string())? {
        AdminResponse::JoinTokenCreated { token, secret } => {
            println!(
                "created join token {} for {} node(s), valid until {}; its secret is shown once:",
                token.id, token.uses, token.expires
            );
            println!("{secret}");
            Ok(())
        }
        AdminResponse::JoinTokens(tokens) => {
            for t in tokens {
                let state = if t.revoked { "revoked" } else { "" };
                println!(
                    "{}  uses {}/{}  until {}  {state}",
                    t.id,
                    t.enrolled.len(),
                    t.uses,
                    t.expires
                );
                for e in t.enrolled {
                    println!("    enrolled {} at {} from {}", e.node, e.at, e.from);
                }
            }
            Ok(())
        }
        AdminResponse::Done => {
            println!("revoked");
            Ok(())
        }
        AdminResponse::Error(e) => Err(e),
        other => Err(format!("unexpected answer from the server: {other:?}")),
    }
}
