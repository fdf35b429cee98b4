//! `emporium-load`: the load generator's command line.
//!
//! `emporium-load run WORKLOAD --system SYSTEM …` measures one workload on one running
//! server (sweeping concurrency, checking correctness) and writes
//! `RESULTS/WORKLOAD.SYSTEM.json`; `emporium-load report` turns every result file into
//! the charts and the section of `BENCHMARKS.md`. `scripts/bench` runs the whole
//! comparison; see `BENCHMARKS.md` for the workloads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use emporium_bench::loadgen::report::{self, Results};
use emporium_bench::loadgen::soak::{self, SoakPlan};
use emporium_bench::loadgen::stats::Point;
use emporium_bench::loadgen::suite::{self, EmporiumTarget, Settings};

#[derive(Parser)]
#[command(
    name = "emporium-load",
    about = "Drives Emporium and its baselines; reports the comparison"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measures one workload on one running server.
    Run(RunArgs),
    /// Writes the charts and the report section of BENCHMARKS.md from the result files.
    Report(ReportArgs),
    /// Holds the storefront at a share of saturation for a long run (see scripts/soak).
    Soak(SoakArgs),
    /// Product search in-process beside PostgreSQL full-text search on one generated
    /// catalog (see scripts/bench-search).
    Search(SearchArgs),
}

#[derive(clap::Args)]
struct SearchArgs {
    /// Products in the generated catalog.
    #[arg(long, default_value_t = 100_000)]
    products: usize,
    /// Distinct queries in the mix.
    #[arg(long, default_value_t = 5_000)]
    queries: usize,
    /// Thread counts (Emporium) and connection counts (PostgreSQL) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Seconds per measurement, after a warm-up of a fifth of it.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// PostgreSQL's connection string; without it only Emporium is measured.
    #[arg(long)]
    pg_url: Option<String>,
    /// A running Emporium to load the catalog into and measure `GET /v1/search` on.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Its process id, for its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Only the HTTP measurement (no in-process index, no PostgreSQL).
    #[arg(long)]
    http_only: bool,
    /// Connections of the HTTP measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    http_clients: Vec<usize>,
    /// The first admin's email.
    #[arg(long, env = "EMPORIUM_ADMIN_EMAIL", default_value = "admin@example.com")]
    admin_email: String,
    /// The first admin's password.
    #[arg(long, env = "EMPORIUM_ADMIN_PASSWORD")]
    admin_password: Option<String>,
    /// Where the index is built (a fresh directory is made inside).
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
    /// Where the report (JSON) goes.
    #[arg(long, default_value = "bench/search/search.json")]
    output: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum WorkloadName {
    /// GET of one product's JSON (Emporium) or the same bytes as a static file (nginx).
    ProductGet,
    /// Add-to-cart on guest carts (Emporium).
    AddToCart,
    /// One hot SKU's flash sale, signed-in buyers under a per-customer cap (Emporium,
    /// PostgreSQL, Redis): the rate, sold-out answers and a sell-out round.
    FlashSale,
    /// Checkouts of 5–15 lines from 100k SKUs, then payment (Emporium, PostgreSQL).
    CheckoutHeavy,
    /// The TPC-W shopping mix on the demo shop (Emporium), closed and open loop.
    Storefront,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum System {
    Emporium,
    Nginx,
    Postgres,
    Redis,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Emporium => "emporium",
            System::Nginx => "nginx",
            System::Postgres => "postgres",
            System::Redis => "redis",
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// What to measure.
    #[arg(value_enum)]
    workload: WorkloadName,
    /// Which server answers.
    #[arg(long, value_enum)]
    system: System,
    /// Emporium's or nginx's address.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// PostgreSQL's connection string or Redis's URL.
    #[arg(long)]
    url: Option<String>,
    /// nginx: the path of the product JSON file.
    #[arg(long, default_value = "/product.json")]
    path: String,
    /// Emporium admin email.
    #[arg(long, env = "EMPORIUM_ADMIN_EMAIL", default_value = "admin@example.com")]
    admin_email: String,
    /// Emporium admin password.
    #[arg(long, env = "EMPORIUM_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Concurrency sweep (virtual clients, one connection each).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Concurrencies of the hot-SKU checkout-heavy runs.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    hot_clients: Vec<usize>,
    /// Connections of the closed-loop storefront.
    #[arg(long, default_value_t = 64)]
    storefront_clients: usize,
    /// Seconds of warm-up before each measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds in each measured window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Prepared checkout-heavy carts per point, at most.
    #[arg(long, default_value_t = 25_000)]
    checkout_carts_max: usize,
    /// product-get on Emporium: write the product's JSON here (for nginx to serve).
    #[arg(long)]
    export_product: Option<PathBuf>,
    /// Where result files go.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// Never draw progress bars.
    #[arg(long)]
    no_progress: bool,
    /// The server's process id: its CPU time (and its children's) is recorded.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// Where the result files are (and the charts go).
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// The file whose section between the loadgen markers is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    benchmarks: PathBuf,
    /// The command that produced the results, for the record.
    #[arg(long, default_value = "scripts/bench")]
    command: String,
    /// A file of extra context (server versions, settings) to print under the heading.
    #[arg(long)]
    context: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SoakArgs {
    /// Emporium's address.
    #[arg(long)]
    addr: SocketAddr,
    /// The server's process id (its resident memory is sampled).
    #[arg(long)]
    server_pid: u32,
    /// Emporium admin email.
    #[arg(long, env = "EMPORIUM_ADMIN_EMAIL", default_value = "admin@example.com")]
    admin_email: String,
    /// Emporium admin password.
    #[arg(long, env = "EMPORIUM_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: String,
    /// Minutes under load.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Minutes of warm-up at the start of the run, after which memory must stay put.
    #[arg(long, default_value_t = 5.0)]
    warmup_minutes: f64,
    /// The offered rate as a share of the measured saturation.
    #[arg(long, default_value_t = 0.7)]
    share: f64,
    /// The share of checkouts left unpaid (their reservations expire).
    #[arg(long, default_value_t = 0.3)]
    unpaid_share: f64,
    /// The server's reservation time to live, in seconds (waited out at the end).
    #[arg(long)]
    reservation_ttl_s: u64,
    /// Units added to every SKU before the run.
    #[arg(long, default_value_t = 100_000)]
    restock: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10.0)]
    sample_s: f64,
    /// Connections of the open loop.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Where the report (JSON) goes.
    #[arg(long, default_value = "bench/soak/report.json")]
    output: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(run(args))
        }
        Command::Report(args) => write_report(&args),
        Command::Soak(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(soak(args))
        }
        Command::Search(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(search(args))
        }
    }
}

async fn search(args: SearchArgs) -> anyhow::Result<()> {
    use emporium_bench::loadgen::search::*;
    use std::sync::Arc;
    let duration = Duration::from_secs_f64(args.duration);
    let warmup = duration / 5;
    let catalog = catalog(args.products, 20_261_201);
    let queries = Arc::new(queries(&catalog, args.queries, 7));
    let dir = tempfile::tempdir_in(&args.work_dir)?;
    let mut points = Vec::new();
    let mut took = Duration::ZERO;
    if !args.http_only {
        eprintln!("search: indexing {} products", catalog.len());
        let (index, indexed) = build_index(dir.path(), &catalog)?;
        took = indexed;
        eprintln!("search: indexed in {took:.2?}, {} segments", index.segment_count());
        let index = Arc::new(index);
        for &threads in &args.threads {
            run_emporium(&index, &queries, threads, warmup)?;
            let p = run_emporium(&index, &queries, threads, duration)?;
            eprintln!(
                "search: emporium {threads} threads: {:.0} q/s p50 {} us p99 {} us",
                p.qps, p.p50_us, p.p99_us
            );
            points.push(p);
        }
    }
    let mut postgres_load_s = None;
    if let (Some(url), false) = (&args.pg_url, args.http_only) {
        eprintln!("search: loading PostgreSQL");
        let loaded = load_postgres(url, &catalog).await?;
        postgres_load_s = Some(loaded.as_secs_f64());
        eprintln!("search: PostgreSQL loaded and indexed in {loaded:.2?}");
        for &connections in &args.threads {
            run_postgres(url, &queries, connections, warmup).await?;
            let p = run_postgres(url, &queries, connections, duration).await?;
            eprintln!(
                "search: postgres {connections} connections: {:.0} q/s p50 {} us p99 {} us",
                p.qps, p.p50_us, p.p99_us
            );
            points.push(p);
        }
    }
    let mut http_points = Vec::new();
    let mut http_load_s = None;
    if let Some(addr) = args.addr {
        let target = EmporiumTarget {
            addr,
            email: args.admin_email.clone(),
            password: args
                .admin_password
                .clone()
                .context("set EMPORIUM_ADMIN_PASSWORD (or --admin-password)")?,
        };
        eprintln!("search: loading {} products into Emporium at {addr}", catalog.len());
        let admin = target.admin().await?;
        let (categories, loaded) = load_emporium(&admin, &catalog).await?;
        http_load_s = Some(loaded.as_secs_f64());
        eprintln!("search: loaded and searchable in {loaded:.2?}");
        let paths: Vec<String> = queries.iter().map(|q| q.path(&categories)).collect();
        let settings = Settings {
            clients: args.http_clients.clone(),
            hot_clients: Vec::new(),
            storefront_clients: 0,
            warmup,
            duration,
            progress: false,
            checkout_carts_max: 0,
            server_pid: args.server_pid,
            metrics: None,
        };
        http_points = suite::search_emporium(&target, &settings, paths).await?;
    }
    let report = SearchReport {
        products: args.products,
        emporium_index_s: took.as_secs_f64(),
        postgres_load_s,
        http_load_s,
        points,
        http: http_points,
    };
    if let Some(parent) = args.output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.output, serde_json::to_vec_pretty(&report)?)?;
    println!("| system | threads | queries/s | p50 | p99 | queries with hits |");
    println!("|---|---|---|---|---|---|");
    for p in &report.points {
        println!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.0}% |",
            p.system,
            p.threads,
            p.qps,
            p.p50_us as f64 / 1000.0,
            p.p99_us as f64 / 1000.0,
            p.with_hits * 100.0
        );
    }
    for p in &report.http {
        let cpu = p.server_cores.map_or("server CPU not measured".to_string(), |cores| {
            format!("server CPU {:.0} µs per query", cores * 1e6 / p.throughput.max(1.0))
        });
        println!(
            "| emporium `/v1/search` over HTTP | {} connections | {:.0} | {:.2} ms | {:.2} ms | {cpu} |",
            p.clients,
            p.throughput,
            p.latency.p50_us as f64 / 1000.0,
            p.latency.p99_us as f64 / 1000.0,
        );
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let settings = Settings {
        clients: args.clients.clone(),
        hot_clients: args.hot_clients.clone(),
        storefront_clients: args.storefront_clients,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        checkout_carts_max: args.checkout_carts_max,
        server_pid: args.server_pid,
        metrics: if args.system == System::Emporium { args.addr } else { None },
    };
    let addr = || args.addr.context("--addr is required for this system");
    let url = || args.url.clone().context("--url is required for this system");
    let emporium = || -> anyhow::Result<EmporiumTarget> {
        Ok(EmporiumTarget {
            addr: addr()?,
            email: args.admin_email.clone(),
            password: args
                .admin_password
                .clone()
                .context("set EMPORIUM_ADMIN_PASSWORD (or --admin-password)")?,
        })
    };
    use System::*;
    use WorkloadName::*;
    let points: Vec<Point> = match (args.workload, args.system) {
        (ProductGet, Emporium) => {
            let export = args.export_product.as_deref();
            suite::product_get_emporium(&emporium()?, &settings, export).await?
        }
        (ProductGet, Nginx) => suite::product_get_nginx(addr()?, &args.path, &settings).await?,
        (AddToCart, Emporium) => suite::add_to_cart_emporium(&emporium()?, &settings).await?,
        (FlashSale, Emporium) => suite::flash_emporium(&emporium()?, &settings).await?,
        (FlashSale, Postgres) => suite::flash_postgres(&url()?, &settings).await?,
        (FlashSale, Redis) => suite::flash_redis(&url()?, &settings).await?,
        (CheckoutHeavy, Emporium) => suite::checkout_emporium(&emporium()?, &settings).await?,
        (CheckoutHeavy, Postgres) => suite::checkout_postgres(&url()?, &settings).await?,
        (Storefront, Emporium) => suite::storefront_emporium(&emporium()?, &settings).await?,
        (workload, system) => bail!("{workload:?} does not run on {system:?}"),
    };
    let failed = points.iter().filter(|p| !p.checks.passed()).count();
    let results = Results {
        workload: args
            .workload
            .to_possible_value()
            .expect("every workload has a name")
            .get_name()
            .to_string(),
        system: args.system.name().to_string(),
        finished_at: now_rfc3339(),
        points,
    };
    let path = report::save(&args.results, &results)?;
    eprintln!("wrote {}", path.display());
    if failed > 0 {
        bail!("{failed} runs failed their correctness checks");
    }
    Ok(())
}

async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let plan = SoakPlan {
        addr: args.addr,
        server_pid: args.server_pid,
        email: args.admin_email,
        password: args.admin_password,
        duration: Duration::from_secs_f64(args.minutes * 60.0),
        warmup: Duration::from_secs_f64(args.warmup_minutes * 60.0),
        share: args.share,
        saturation_clients: 64,
        saturation_window: Duration::from_secs(20),
        clients: args.clients,
        unpaid_share: args.unpaid_share,
        reservation_ttl: Duration::from_secs(args.reservation_ttl_s),
        restock: args.restock,
        sample_every: Duration::from_secs_f64(args.sample_s),
        progress: std::io::stderr().is_terminal(),
    };
    let report = soak::soak(&plan).await?;
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.output, serde_json::to_vec_pretty(&report)?)?;
    println!(
        "soak: {:.1} min at {:.0}/s ({:.0}% of the measured {:.0}/s): {} interactions, \
         {:.0}/s answered, p50 {} µs, p99 {} µs, p99.9 {} µs",
        args.minutes,
        report.offered,
        args.share * 100.0,
        report.saturation,
        report.interactions,
        report.achieved,
        report.latency.p50_us,
        report.latency.p99_us,
        report.latency.p999_us
    );
    for assertion in &report.assertions {
        let verdict = if assertion.holds { "PASS" } else { "FAIL" };
        println!("soak: {verdict} {}: {}", assertion.what, assertion.detail);
    }
    println!("soak: report in {}", args.output.display());
    if !report.passed() {
        bail!("the soak failed a check");
    }
    Ok(())
}

fn write_report(args: &ReportArgs) -> anyhow::Result<()> {
    let points = report::load(&args.results)?;
    if points.is_empty() {
        bail!("no results in {}", args.results.display());
    }
    let charts = report::charts(&points, &args.results)?;
    let base = args.benchmarks.parent().unwrap_or(Path::new("."));
    let charts: Vec<(String, String)> =
        charts.into_iter().map(|(title, path)| (title, relative(&path, base))).collect();
    let mut context = format!(
        "Measured by `{}` on {} ({}), {}. Every server ran on 127.0.0.1 with the load \
         generator on the same cores, one server under load at a time; each point is a \
         closed loop of N clients (one keep-alive connection each) unless marked open \
         loop, after a warm-up that is not counted. Raw results: `{}`.\n",
        args.command,
        machine(),
        kernel(),
        now_rfc3339(),
        relative(&args.results, base),
    );
    if let Some(path) = &args.context {
        let extra =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        context.push('\n');
        context.push_str(&extra);
    }
    let section = report::markdown(&points, &charts, &context);
    report::splice(&args.benchmarks, &section)?;
    eprintln!("wrote {} and {} charts", args.benchmarks.display(), charts.len());
    Ok(())
}

fn relative(path: &Path, base: &Path) -> String {
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (path, base) = (absolute(path), absolute(base));
    match path.strip_prefix(&base) {
        Ok(rest) if rest.as_os_str().is_empty() => ".".to_string(),
        Ok(rest) => rest.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// The CPU model and core count.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map_or_else(|| "unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        })
        .unwrap_or(0);
    format!("{cores} × {model}, {} GiB", (memory_kib as f64 / 1024.0 / 1024.0).round())
}

fn kernel() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("Linux {}", release.trim())
}

fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    emporium_server::wire::rfc3339(ms)
}
