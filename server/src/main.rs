//! `emporium`: the command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use emporium_engine::{Engine, EngineConfig, ProductSearch, SearchSettings};
use emporium_server::{Config, ServeArgs, Server};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
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
