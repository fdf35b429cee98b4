//! `emporium`: the command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use std::sync::Arc;

use emporium_engine::{Engine, EngineConfig, ProductSearch, SearchSettings};
use emporium_replication::standby::StandbyStats;
use emporium_server::config::StandbyOf;
use emporium_server::{Config, ServeArgs, Server};
use tokio::sync::watch;

#[global_allocator]
static ALLOCATOR: emporium_engine::Allocator = emporium_engine::Allocator;

#[derive(Parser)]
#[command(name = "emporium", version, about = "A commerce engine in one process")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API on a data directory.
    Serve(Box<ServeArgs>),
    /// Follow a primary as a warm standby: bootstrap an empty data directory from the
    /// primary's checkpoint, apply its log, serve every read, refuse every write (503
    /// read_only_standby) until promoted (POST /v1/admin/promote).
    Standby(Box<StandbyArgs>),
    /// Promote the standby data directory that no server has open: the next
    /// `emporium serve` on it is a primary in a new epoch.
    Promote {
        /// The data directory.
        #[arg(long, env = "EMPORIUM_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Write a consistent copy of a data directory that no server has open.
    Checkpoint {
        /// The data directory.
        #[arg(long, env = "EMPORIUM_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Where to write the copy (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Rebuild the product search index of a data directory that no server has open.
    Reindex {
        /// The data directory.
        #[arg(long, env = "EMPORIUM_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The index's directory (default: `search` in the data directory).
        #[arg(long, env = "EMPORIUM_SEARCH_DIR")]
        search_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct StandbyArgs {
    /// The primary's replication address (its `--replication-listen`).
    #[arg(long, env = "EMPORIUM_PRIMARY")]
    primary: String,
    /// This standby's name on the primary, stable across restarts: 1-48 characters of
    /// [a-z0-9._-] (default: from the listen address).
    #[arg(long, env = "EMPORIUM_STANDBY_NAME")]
    name: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> std::process::ExitCode {
    // Before any thread: see the function's documentation for what and why.
    if let Err(error) = emporium_engine::tune_process_memory() {
        eprintln!("emporium: running with the system's memory settings: {error}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Standby(args) => follow(*args),
        Command::Promote { data_dir } => promote(data_dir),
        Command::Checkpoint { data_dir, to } => checkpoint(data_dir, to),
        Command::Reindex { data_dir, search_dir } => reindex(data_dir, search_dir),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("emporium: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EMPORIUM_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args)?;
    init_logging(&config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let (shutdown, receiver) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = shutdown.send(true);
        });
        server.run(receiver).await
    })
}

fn follow(args: StandbyArgs) -> anyhow::Result<()> {
    let mut config = Config::resolve(&args.serve)?;
    let name = args.name.unwrap_or_else(|| {
        config
            .listen
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
            .collect::<String>()
            .trim_matches('-')
            .to_string()
    });
    anyhow::ensure!(
        emporium_replication::valid_name(&name),
        "standby name {name:?} is not 1-48 characters of [a-z0-9._-]"
    );
    let stats = Arc::new(StandbyStats::default());
    config.standby =
        Some(StandbyOf { primary: args.primary.clone(), name: name.clone(), stats: stats.clone() });
    init_logging(&config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (signal, signalled) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = signal.send(true);
        });
        emporium_server::standby::run(config, signalled).await
    })
}

fn promote(data_dir: PathBuf) -> anyhow::Result<()> {
    let engine = Engine::open(EngineConfig::new(&data_dir))?;
    let epoch = engine.promote()?;
    println!(
        "{} promoted: epoch {epoch} begins after LSN {}",
        data_dir.display(),
        engine.durable_lsn()
    );
    engine.close();
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("signal received");
}

fn reindex(data_dir: PathBuf, search_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let search_dir = search_dir.unwrap_or_else(|| data_dir.join("search"));
    let engine = Engine::open(EngineConfig::new(&data_dir))?;
    match std::fs::remove_dir_all(&search_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("removing {}: {e}", search_dir.display()),
    }
    let started = std::time::Instant::now();
    let search = ProductSearch::start(&engine, SearchSettings::in_dir(&search_dir))?;
    let status = search.status();
    search.stop();
    engine.close();
    println!(
        "search index {} rebuilt: {} products at LSN {} in {:.2?}",
        search_dir.display(),
        status.products,
        status.applied_lsn,
        started.elapsed()
    );
    Ok(())
}

fn checkpoint(data_dir: PathBuf, to: PathBuf) -> anyhow::Result<()> {
    let engine = Engine::open(EngineConfig::new(&data_dir))?;
    engine.checkpoint(&to)?;
    println!(
        "checkpoint of {} at LSN {} written to {}",
        data_dir.display(),
        engine.durable_lsn(),
        to.display()
    );
    engine.close();
    Ok(())
}
