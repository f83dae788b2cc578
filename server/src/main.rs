//! `chronik`: the Chronik broker.

use anyhow::Context;

#[global_allocator]
static ALLOCATOR: chronik_server::alloc::LazyLargeAlloc = chronik_server::alloc::LazyLargeAlloc;
use chronik_server::{Config, Deps, Settings};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chronik", version, about = "Chronik: a Kafka-compatible streaming broker with search built in")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a broker. Settings come from flags, then CHRONIK_* environment
    /// variables, then the --config TOML file, then defaults.
    Start {
        /// TOML file with any of the settings below (names with underscores)
        #[arg(long, env = "CHRONIK_CONFIG")]
        config: Option<std::path::PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Start { config, settings } = cli.command;
    let file = match config {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {}", path.display()))?;
            Settings::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Settings::default(),
    };
    let config = Config::from_settings(settings.or(file))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let deps = Deps::production(&config)?;
        let running = chronik_server::start(config, deps).await?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
