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
    /// Search a topic through a running broker's search HTTP API and print
    /// the hits, one per line (or as JSON).
    Search {
        /// The topic (created with search.enabled=true)
        topic: String,
        /// The query: `error`, `level:error AND user.id:42`, `"disk full"`, `offset:[10 TO 20]`, ...
        query: String,
        /// The broker's search HTTP API
        #[arg(long, env = "CHRONIK_HTTP_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// How many hits
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Order: relevance, time (newest first) or offset
        #[arg(long, default_value = "relevance")]
        sort: String,
        /// Print the broker's JSON answer as it is
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a topic's search indexes from its log, through a running
    /// broker's search HTTP API (in the background: searches return fewer
    /// hits until it has caught up).
    RebuildIndex {
        /// The topic (with search.enabled=true)
        topic: String,
        /// The broker's search HTTP API
        #[arg(long, env = "CHRONIK_HTTP_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
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
    let (config, settings) = match cli.command {
        Command::Start { config, settings } => (config, settings),
        Command::Search { topic, query, url, limit, sort, json } => return search(&url, &topic, &query, limit, &sort, json),
        Command::RebuildIndex { topic, url } => return rebuild_index(&url, &topic),
    };
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
        let shared = running.shared.clone();
        let outcome = tokio::select! {
            biased;
            _ = wait_for_signal() => Ok(()),
            reason = shared.failed() => Err(anyhow::anyhow!(reason)),
        };
        tracing::info!("shutting down");
        running.shutdown().await;
        outcome
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

/// `chronik rebuild-index`: one POST to the search API (in a cluster, every
/// live broker rebuilds the indexes it holds).
fn rebuild_index(url: &str, topic: &str) -> anyhow::Result<()> {
    // Topic names are [a-zA-Z0-9._-]: safe in a path as they are.
    let target = format!("{}/topics/{topic}/search/_rebuild", url.trim_end_matches('/'));
    let mut response =
        ureq::post(&target).config().http_status_as_error(false).build().send_empty().with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response.body_mut().read_json().with_context(|| format!("{target} did not answer JSON"))?;
    if !status.is_success() {
        anyhow::bail!("{} ({})", body["error"]["reason"].as_str().unwrap_or("unknown error"), status.as_u16());
    }
    let brokers: Vec<String> = body["brokers"].as_array().map(|b| b.iter().map(|id| id.to_string()).collect()).unwrap_or_default();
    println!("rebuilding the search index of {topic} from its log (on broker {})", brokers.join(", "));
    Ok(())
}

fn search(url: &str, topic: &str, query: &str, limit: usize, sort: &str, json: bool) -> anyhow::Result<()> {
    // Topic names are [a-zA-Z0-9._-]: safe in a path as they are.
    let target = format!("{}/topics/{topic}/search", url.trim_end_matches('/'));
    let order = if sort == "offset" { "asc" } else { "desc" };
    let mut response = ureq::get(&target)
        .query("q", query)
        .query("limit", limit.to_string())
        .query("sort", sort)
        .query("order", order)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response.body_mut().read_json().with_context(|| format!("{target} did not answer JSON"))?;
    if !status.is_success() {
        let reason = body["error"]["reason"].as_str().unwrap_or("unknown error");
        anyhow::bail!("{} ({})", reason, status.as_u16());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    for h in body["hits"].as_array().into_iter().flatten() {
        let value = match &h["value"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("{}/{}\t{}\t{}\t{}", h["partition"], h["offset"], h["timestamp"], h["key"].as_str().unwrap_or("-"), value);
    }
    eprintln!("{} of {} hits ({} ms)", body["hits"].as_array().map_or(0, |a| a.len()), body["total"], body["took_ms"]);
    Ok(())
}
