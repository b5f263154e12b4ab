//! The `payrelay` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use payrelay::config::{Config, LogFormat};
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
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let (mut config, development) = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => (config, false),
            Err(e) => {
                eprintln!("payrelay: invalid configuration {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => (Config::development(), true),
    };
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
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr(), apps, "payrelay listening");
    server.run(shutdown_signal()).await
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
