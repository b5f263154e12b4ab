//! The `payrelay` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use payrelay::config::{Config, LogFormat};
use payrelay::merchants::MerchantStore;
use payrelay::server::Server;
use payrelay::telemetry;

#[derive(Parser)]
#[command(
    name = "payrelay",
    version,
    about = "Real-time gateway for payment platforms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node. Without --config: one development app on 127.0.0.1:6001.
    Serve(ServeArgs),
    /// Load-test a Pusher-compatible server on this machine (see BENCHMARKS.md).
    Bench(payrelay::bench::BenchArgs),
    /// Create, list or revoke merchant API keys in the node's store (the database_url of
    /// --config). A running node refuses a revoked key's new requests at once; Socket.IO
    /// sockets already open with it close at its next credential recheck.
    Keys(KeysArgs),
    /// Manage webhook endpoints and replay their messages in the node's database (the
    /// database_url of --config). A running node sees the change within seconds.
    Webhooks(WebhooksArgs),
}

#[derive(clap::Args)]
struct WebhooksArgs {
    /// TOML configuration file naming the database and the apps; without it, the
    /// development app and ./payrelay.db, as `payrelay serve` uses.
    #[arg(long, env = "PAYRELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The app the endpoints belong to.
    #[arg(long, default_value = "1", global = true)]
    app: String,
    #[command(subcommand)]
    action: payrelay::webhooks::cli::WebhooksAction,
}

#[derive(clap::Args)]
struct KeysArgs {
    /// TOML configuration file naming the store and the apps (a relative database_url is
    /// relative to the file's folder); without it, the development app and ./payrelay.db,
    /// as `payrelay serve` uses.
    #[arg(long, env = "PAYRELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The app the keys belong to.
    #[arg(long, default_value = "1", global = true)]
    app: String,
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key for a merchant; the key is printed once and never again.
    Create {
        #[arg(long)]
        merchant: String,
    },
    /// List keys (ids, merchants, dates; never the keys themselves).
    List {
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Revoke a key by its id (`key_...`).
    Revoke { key_id: String },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "PAYRELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, overriding the file's `bind`.
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Log format, overriding the file's `log_format`.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => payrelay::bench::main(args),
        Command::Keys(args) => keys(args),
        Command::Webhooks(args) => webhooks(args),
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<(Config, bool), ExitCode> {
    match path {
        Some(path) => match Config::load(path) {
            Ok(config) => Ok((config, false)),
            Err(e) => {
                eprintln!("payrelay: invalid configuration {}: {e}", path.display());
                Err(ExitCode::from(2))
            }
        },
        None => Ok((Config::development(), true)),
    }
}

fn webhooks(args: WebhooksArgs) -> ExitCode {
    let config = match load_config(args.config.as_ref()) {
        Ok((config, _)) => config,
        Err(code) => return code,
    };
    if !config.apps.iter().any(|app| app.id == args.app) {
        eprintln!("payrelay: no app `{}` in the configuration", args.app);
        return ExitCode::from(2);
    }
    run_cli(async {
        let db = payrelay::db::Db::open(&config.database_url).await?;
        let store = payrelay::webhooks::store::OutboxStore::new(db);
        payrelay::webhooks::cli::run(&store, &config.webhooks, &args.app, args.action).await
    })
}

/// Runs a command-line action on a small runtime; errors are printed.
fn run_cli(action: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("payrelay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(action).unwrap_or_else(|e| {
        eprintln!("payrelay: {e:#}");
        ExitCode::FAILURE
    })
}

fn keys(args: KeysArgs) -> ExitCode {
    let config = match load_config(args.config.as_ref()) {
        Ok((config, _)) => config,
        Err(code) => return code,
    };
    if !config.apps.iter().any(|app| app.id == args.app) {
        eprintln!("payrelay: no app `{}` in the configuration", args.app);
        return ExitCode::from(2);
    }
    run_cli(async {
        let store = MerchantStore::open(&config.database_url).await?;
        Ok(match args.action {
            KeysAction::Create { merchant } => {
                let key = store.create_key(&args.app, &merchant).await?;
                println!("{}", serde_json::to_string(&key)?);
                eprintln!("Store the api_key now: it is shown only once.");
                ExitCode::SUCCESS
            }
            KeysAction::List { merchant } => {
                for key in store.list_keys(&args.app, merchant.as_deref()).await? {
                    println!("{}", serde_json::to_string(&key)?);
                }
                ExitCode::SUCCESS
            }
            KeysAction::Revoke { key_id } => match store.revoke_key(&args.app, &key_id).await? {
                Some(merchant) => {
                    eprintln!("Revoked {key_id} of merchant {merchant}.");
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("payrelay: no live key `{key_id}` in app {}", args.app);
                    ExitCode::from(1)
                }
            },
        })
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    let (mut config, development) = match load_config(args.config.as_ref()) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    // A node without apps would start and refuse every connection and API call: almost
    // certainly a configuration that lost its [[apps]] (a typo in the table name, a file
    // meant for `payrelay keys`), so it does not start.
    if config.apps.is_empty()
        && let Some(path) = &args.config
    {
        eprintln!(
            "payrelay: invalid configuration {}: apps: no [[apps]] table; a node without apps \
             would refuse every connection and API call (docs/configuration.md, \"App settings\")",
            path.display()
        );
        return ExitCode::from(2);
    }
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    if let Some(format) = args.log_format {
        config.log_format = match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    telemetry::init_tracing(config.log_format, &config.log_level);
    if development {
        tracing::warn!(
            app_id = "1",
            app_key = "app-key",
            "no --config given: serving the built-in development app, whose secret is published \
             in the README; do not expose this node"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("payrelay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let apps = config.apps.len();
    // Taken over before the node says it listens: a signal sent as soon as it does must
    // shut it down gracefully, not kill it with the default action.
    let shutdown = shutdown_signal();
    let server = Server::bind(config).await?;
    tracing::info!(
        addr = %server.local_addr(),
        apps,
        tls = server.tls().is_some(),
        "payrelay listening"
    );
    server.run(shutdown).await
}

/// Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(&mut interrupt) => tracing::info!("Ctrl-C received"),
                () = next(&mut terminate) => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}
