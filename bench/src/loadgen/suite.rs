//! The measured sequences: for each workload and system, the setup (outside the
//! window), the concurrency sweep or arrival rates, and the checks of the state
//! afterwards. Each function answers the measured [`Point`]s, printing each as it ends.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::{Rng, SeedableRng};

use super::baseline;
use super::driver::{self, Mode, Outcome, Plan, Workload};
use super::emporium::{self, Admin};
use super::http::Conn;
use super::report::thousands;
use super::stats::{Assertion, Checks, Commits, Latency, OpSummary, Point};
use super::workloads::checkout::{self, EmporiumCheckout, Ledger, PgCheckout, PreparedOrder};
use super::workloads::flash::{Ask, Demand, EmporiumFlash, PgFlash, RedisFlash, Tally};
use super::workloads::micro::{AddToCart, ProductGet, SearchGet};
use super::workloads::storefront::{Catalog, Storefront};

/// Units of the sale in each flash-sale rate round (the most a sale may have): more
/// than a round sells, so the rate is measured without a sell-out.
pub const RATE_SALE_UNITS: u64 = 1_000_000;
/// Units in the sell-out round.
pub const SELLOUT_UNITS: u64 = 1_000;
/// Buyers: registered customers on Emporium, customer numbers on the baselines. The
/// sell-out round has all of them ask, twice each.
pub const FLASH_BUYERS: usize = 2_000;
/// The per-customer cap in the sell-out round.
pub const PER_BUYER_LIMIT: u32 = 2;
/// The sale price, in cents.
const FLASH_PRICE: i64 = 4999;
/// SKUs whose stock is read back after a checkout-heavy run (besides the hot one).
const SAMPLED_SKUS: usize = 300;
/// The open-loop storefront's arrival rate, as a share of the closed loop's throughput.
const OPEN_LOOP_SHARE: f64 = 0.7;
/// Connections the open-loop storefront spreads its arrivals over.
const OPEN_LOOP_CLIENTS: usize = 256;
/// Cores busy outside the server and the generator past which a run is flagged.
const OTHER_CORES_SUSPECT: f64 = 0.5;
/// Steal time, in cores, past which a point is noted as disturbed by the host. The
/// two-core machines these run on are guests of a shared host: one flash-sale run lost
/// 0.10, 0.16 and 0.49 cores in its three phases, and its purchase rate was the lowest
/// of three runs of the same build.
const STOLEN_CORES_SUSPECT: f64 = 0.05;

/// How the sweeps run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Concurrency sweep.
    pub clients: Vec<usize>,
    /// Concurrencies of the hot-SKU checkout runs.
    pub hot_clients: Vec<usize>,
    /// Connections of the closed-loop storefront.
    pub storefront_clients: usize,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Each measured window.
    pub duration: Duration,
    /// Draw progress bars.
    pub progress: bool,
    /// Prepared checkout-heavy carts per measured point, at most.
    pub checkout_carts_max: usize,
    /// The server's process id, for its CPU time.
    pub server_pid: Option<u32>,
    /// Emporium's address, to read its commit counters from `/metrics` around each run.
    pub metrics: Option<SocketAddr>,
}

/// The Emporium under test.
#[derive(Clone, Debug)]
pub struct EmporiumTarget {
    /// Its address.
    pub addr: SocketAddr,
    /// An admin's email.
    pub email: String,
    /// Their password.
    pub password: String,
}

impl EmporiumTarget {
    /// Signs the admin in.
    pub async fn admin(&self) -> anyhow::Result<Admin> {
        Admin::sign_in(self.addr, &self.email, &self.password).await
    }
}

/// Labels of one measured point.
struct Labels<'a> {
    workload: &'a str,
    variant: &'a str,
    system: &'a str,
}

impl Labels<'_> {
    fn plan(&self, settings: &Settings, mode: Mode) -> Plan {
        let load = match mode {
            Mode::Closed { clients } => format!("c={clients}"),
            Mode::Open { rate, .. } => format!("{rate:.0}/s"),
        };
        let variant =
            if self.variant.is_empty() { String::new() } else { format!("/{}", self.variant) };
        Plan {
            mode,
            warmup: settings.warmup,
            duration: settings.duration,
            label: format!("{} {}{variant} {load}", self.system, self.workload),
            progress: settings.progress,
            server_pid: settings.server_pid,
        }
    }
}

async fn measure<W: Workload>(
    labels: &Labels<'_>,
    workload: Arc<W>,
    plan: &Plan,
    settings: &Settings,
) -> anyhow::Result<(Point, Arc<W>)> {
    let unit = workload.unit();
    let before = match settings.metrics {
        Some(addr) => Some((Instant::now(), engine_counters(addr).await?)),
        None => None,
    };
    let outcome = driver::run(workload.clone(), plan).await?;
    let mut point = point(labels, plan, unit, &outcome);
    if let (Some(addr), Some((at, before))) = (settings.metrics, before) {
        let after = engine_counters(addr).await?;
        point.commits = Some(Commits {
            commands: after.commands - before.commands,
            groups: after.groups - before.groups,
            sync_seconds: after.sync_seconds - before.sync_seconds,
            elapsed_seconds: at.elapsed().as_secs_f64(),
        });
    }
    Ok((point, workload))
}

/// Emporium's engine counters, as `/metrics` exposes them.
async fn engine_counters(addr: SocketAddr) -> anyhow::Result<Commits> {
    let mut conn = Conn::connect(addr).await?;
    let reply = conn.get("/metrics", &[]).await?;
    let text = String::from_utf8_lossy(&reply.body);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    Ok(Commits {
        commands: value("emporium_engine_commands_committed ") as u64,
        groups: value("emporium_engine_groups_committed ") as u64,
        sync_seconds: value("emporium_engine_sync_seconds "),
        elapsed_seconds: 0.0,
    })
}

/// The point a run makes, before workload-specific checks are added.
fn point(labels: &Labels<'_>, plan: &Plan, unit: &str, outcome: &Outcome) -> Point {
    let window = outcome.window;
    let ops: Vec<OpSummary> =
        outcome.rec.ops().map(|(name, record)| OpSummary::of(name, record, window)).collect();
    let main = ops.iter().find(|o| o.name == unit).cloned();
    let requests: Vec<&OpSummary> = ops.iter().filter(|o| o.name != unit).collect();
    let answers = if requests.iter().any(|o| !o.statuses.is_empty()) {
        requests.iter().map(|o| o.statuses.values().sum::<u64>()).sum()
    } else {
        main.as_ref().map_or(0, |m| m.ok + m.refused + m.server_errors + m.unexpected + m.malformed)
    };
    let checks = Checks {
        answers,
        server_errors: main.as_ref().map_or(0, |m| m.server_errors),
        malformed: main.as_ref().map_or(0, |m| m.malformed),
        unexpected: main.as_ref().map_or(0, |m| m.unexpected),
        transport: ops.iter().map(|o| o.transport).sum(),
        ..Checks::default()
    };
    let mut notes = Vec::new();
    if window + Duration::from_millis(1) < plan.duration {
        notes.push(format!(
            "prepared work ran out after {:.1} s of the {:.0} s window",
            window.as_secs_f64(),
            plan.duration.as_secs_f64()
        ));
    }
    if let (Some(machine), Some(server), Some(generator)) =
        (outcome.cores.machine, outcome.cores.server, outcome.cores.generator)
    {
        // Loopback networking accounts for some of the rest; much more than that means
        // something else was running and the figure is suspect.
        let rest = machine - server - generator;
        if rest > OTHER_CORES_SUSPECT {
            notes.push(format!(
                "{rest:.2} cores were busy outside the server and the generator (kernel \
                 networking, or other processes disturbing this run)"
            ));
        }
    }
    if let Some(stolen) = outcome.cores.stolen.filter(|&s| s > STOLEN_CORES_SUSPECT) {
        notes.push(format!(
            "the host took {stolen:.2} cores' worth of time from this machine (steal): \
             other guests slowed this run"
        ));
    }
    if outcome.failed > 0 {
        notes.push(format!("{} clients gave up after failing to reconnect", outcome.failed));
    }
    let (mode, clients, rate) = match plan.mode {
        Mode::Closed { clients } => ("closed", clients, None),
        Mode::Open { clients, rate } => ("open", clients, Some(rate)),
    };
    Point {
        workload: labels.workload.to_string(),
        variant: labels.variant.to_string(),
        system: labels.system.to_string(),
        mode: mode.to_string(),
        clients,
        rate,
        window_s: (window.as_secs_f64() * 1000.0).round() / 1000.0,
        unit: unit.to_string(),
        throughput: main.as_ref().map_or(0.0, |m| m.throughput),
        latency: main.as_ref().map_or_else(Latency::default, |m| m.latency.clone()),
        ops,
        checks,
        notes,
        server_cores: outcome.cores.server,
        generator_cores: outcome.cores.generator,
        machine_cores: outcome.cores.machine,
        stolen_cores: outcome.cores.stolen,
        commits: None,
    }
}

fn report(point: &Point) {
    eprintln!("{}", point.line());
    eprintln!("    correctness: {}", point.checks.line());
    if let Some(commits) = &point.commits {
        eprintln!("    group commit: {}", commits.line());
    }
    for note in &point.notes {
        eprintln!("    note: {note}");
    }
}

/// A short tag that keeps one run's SKUs apart from another's on the same server.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}", nanos & 0xff_ffff_ffff)
}

/// The first demo product and its JSON exactly as Emporium serves it.
async fn a_product(addr: SocketAddr) -> anyhow::Result<(String, bytes::Bytes)> {
    let mut conn = Conn::connect(addr).await?;
    let reply = conn.get("/v1/products?limit=1&status=active", &[]).await?;
    let page: super::check::Page<super::check::Product> =
        emporium::expect(&reply, 200, "listing products")?;
    let Some(product) = page.data.into_iter().next() else {
        bail!("the server has no products: start it with --demo true")
    };
    let reply = conn.get(&format!("/v1/products/{}", product.id), &[]).await?;
    if reply.status != 200 {
        bail!("GET product: {}", reply.status);
    }
    Ok((product.id, reply.body))
}

/// Product GET on Emporium, sweeping concurrency; writes the product's JSON to
/// `export` so nginx can serve the same bytes.
pub async fn product_get_emporium(
    target: &EmporiumTarget,
    settings: &Settings,
    export: Option<&Path>,
) -> anyhow::Result<Vec<Point>> {
    let (id, json) = a_product(target.addr).await?;
    if let Some(path) = export {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    let path = format!("/v1/products/{id}");
    let labels = Labels { workload: "product-get", variant: "", system: "emporium" };
    let workload = || ProductGet { addr: target.addr, path: path.clone() };
    let note = format!("{path}: {} bytes of JSON, keep-alive", json.len());
    sweep(&labels, settings, workload, &note).await
}

/// Closed-loop runs of `workload` at each of the settings' concurrencies, each point
/// noted with `note`.
async fn sweep<W: Workload>(
    labels: &Labels<'_>,
    settings: &Settings,
    workload: impl Fn() -> W,
    note: &str,
) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    for &clients in &settings.clients {
        let plan = labels.plan(settings, Mode::Closed { clients });
        let (mut point, _) = measure(labels, Arc::new(workload()), &plan, settings).await?;
        point.notes.push(note.to_string());
        report(&point);
        points.push(point);
    }
    Ok(points)
}

/// `GET /v1/search` on Emporium with the query mix `paths`, sweeping concurrency.
pub async fn search_emporium(
    target: &EmporiumTarget,
    settings: &Settings,
    paths: Vec<String>,
) -> anyhow::Result<Vec<Point>> {
    let labels = Labels { workload: "search", variant: "", system: "emporium" };
    let note = format!("{} queries in the mix, keep-alive", paths.len());
    sweep(&labels, settings, || SearchGet { addr: target.addr, paths: paths.clone() }, &note).await
}

/// The product's JSON as a static file on nginx, sweeping concurrency.
pub async fn product_get_nginx(
    addr: SocketAddr,
    path: &str,
    settings: &Settings,
) -> anyhow::Result<Vec<Point>> {
    let labels = Labels { workload: "product-get", variant: "", system: "nginx" };
    let workload = || ProductGet { addr, path: path.to_string() };
    sweep(&labels, settings, workload, &format!("{path}: static file, keep-alive")).await
}

/// Add-to-cart on Emporium, sweeping concurrency.
pub async fn add_to_cart_emporium(
    target: &EmporiumTarget,
    settings: &Settings,
) -> anyhow::Result<Vec<Point>> {
    let mut conn = Conn::connect(target.addr).await?;
    let page: super::check::Page<super::check::Product> = emporium::expect(
        &conn.get("/v1/products?limit=10&status=active", &[]).await?,
        200,
        "listing products",
    )?;
    let skus: Vec<String> = page.data.iter().map(|p| p.variants[0].sku.clone()).collect();
    let labels = Labels { workload: "add-to-cart", variant: "", system: "emporium" };
    let mut points = Vec::new();
    for &clients in &settings.clients {
        let workload = Arc::new(AddToCart { addr: target.addr, skus: skus.clone() });
        let plan = labels.plan(settings, Mode::Closed { clients });
        let (mut point, _) = measure(&labels, workload, &plan, settings).await?;
        point.notes.push(format!(
            "guest carts of up to {} lines, one unit per request, durable",
            skus.len()
        ));
        report(&point);
        points.push(point);
    }
    Ok(points)
}

/// One measured flash-sale round, the same on every system.
struct Round {
    /// `rate`, `sold-out` or `sell-out`.
    variant: &'static str,
    clients: usize,
    /// Units left in the sale when the round starts.
    units: u64,
    /// The per-customer cap.
    cap: u32,
    /// The sell-out round's asks (the others ask one unit at a time without end).
    asks: Option<Vec<Ask>>,
}

impl Round {
    /// The rate sweep, the sold-out sweep, then the sell-out round.
    fn all(settings: &Settings) -> Vec<Round> {
        let sweep = |variant, units, cap| {
            settings.clients.iter().map(move |&clients| Round {
                variant,
                clients,
                units,
                cap,
                asks: None,
            })
        };
        let rate_cap = RATE_SALE_UNITS as u32;
        let mut rounds: Vec<Round> =
            sweep("rate", RATE_SALE_UNITS, rate_cap).chain(sweep("sold-out", 0, 1)).collect();
        rounds.push(Round {
            variant: "sell-out",
            clients: settings.clients.iter().copied().max().unwrap_or(64),
            units: SELLOUT_UNITS,
            cap: PER_BUYER_LIMIT,
            asks: Some(sellout_asks()),
        });
        rounds
    }

    fn unit(&self) -> &'static str {
        if self.variant == "sold-out" {
            "sold-out answer"
        } else {
            "purchase"
        }
    }

    fn demand(&self) -> Demand {
        match &self.asks {
            Some(asks) => Demand::listed(asks, self.clients),
            None => Demand::Unlimited { buyers: FLASH_BUYERS as u32 },
        }
    }

    fn tally(&self) -> Tally {
        Tally::new(FLASH_BUYERS, self.cap)
    }

    fn labels(&self, system: &'static str) -> Labels<'static> {
        Labels { workload: "flash-sale", variant: self.variant, system }
    }

    fn plan(&self, labels: &Labels<'_>, settings: &Settings) -> Plan {
        let plan = labels.plan(settings, Mode::Closed { clients: self.clients });
        if self.asks.is_none() {
            return plan;
        }
        // The round ends when every buyer has an answer.
        Plan {
            warmup: Duration::ZERO,
            duration: settings.duration.max(Duration::from_secs(10)),
            ..plan
        }
    }

    /// The checks every system gets, given the units the system says are `left`, and
    /// the round's own notes.
    fn close(&self, point: &mut Point, tally: &Tally, left: u64) {
        point.checks.units_sold = Some(tally.sold.load(Ordering::Relaxed));
        point.checks.units_stock = Some(self.units);
        point.checks.assertions.extend(tally.assertions(self.units, left));
        match self.variant {
            "sell-out" => {
                // Running out of buyers is how a sell-out round ends, not a shortfall.
                point.notes.retain(|n| !n.starts_with("prepared work ran out"));
                point.notes.push(format!(
                    "{FLASH_BUYERS} buyers, each asking twice for 1–{PER_BUYER_LIMIT} units \
                     (the cap is {PER_BUYER_LIMIT} per customer) for {SELLOUT_UNITS} units, \
                     one buyer's asks on different connections at once; the round ends when \
                     every ask has an answer: {} purchases, {} sold_out, {} over the cap",
                    tally.purchases.load(Ordering::Relaxed),
                    tally.sold_out.load(Ordering::Relaxed),
                    tally.over_cap.load(Ordering::Relaxed),
                ));
            }
            "sold-out" => point.notes.push(
                "every request after the last unit: each answer is a refusal for lack of stock"
                    .to_string(),
            ),
            _ => point.notes.push(format!(
                "client c is buyer c, one unit per request, {} units in the sale, cap {} per \
                 customer (checked and counted on every purchase, never reached)",
                thousands(self.units as f64),
                thousands(f64::from(self.cap))
            )),
        }
        report(point);
    }
}

/// The sell-out round's asks: each of [`FLASH_BUYERS`] buyers asks twice for 1 to
/// [`PER_BUYER_LIMIT`] units, so many reach their cap and most of them find the sale
/// sold out.
fn sellout_asks() -> Vec<Ask> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xf1a5);
    (0..FLASH_BUYERS as u32)
        .flat_map(|buyer| [buyer, buyer])
        .map(|buyer| Ask { buyer, quantity: rng.random_range(1..=PER_BUYER_LIMIT) })
        .collect()
}

/// The flash sale on Emporium: [`FLASH_BUYERS`] customers registered through the API,
/// then for each round a fresh SKU and a live sale of it, bought through
/// `POST /v1/flash-sales/{id}/purchases`.
pub async fn flash_emporium(
    target: &EmporiumTarget,
    settings: &Settings,
) -> anyhow::Result<Vec<Point>> {
    let admin = target.admin().await?;
    let tag = run_tag();
    let started = Instant::now();
    let buyers = Arc::new(emporium::register_buyers(target.addr, &tag, FLASH_BUYERS).await?);
    eprintln!(
        "    registered {FLASH_BUYERS} buyers in {:.1} s (argon2id as configured)",
        started.elapsed().as_secs_f64()
    );
    let mut points = Vec::new();
    for (n, round) in Round::all(settings).into_iter().enumerate() {
        let sku = format!("FS{tag}-{n}");
        // The sold-out rounds' sale has one unit, bought before the window.
        let units = round.units.max(1);
        admin.create_skus(vec![(sku.clone(), 6999, units)], "Flash sale").await?;
        let sale = admin.create_flash_sale(&sku, FLASH_PRICE, units, round.cap.max(1)).await?;
        let workload = Arc::new(EmporiumFlash {
            addr: target.addr,
            path: format!("/v1/flash-sales/{}/purchases", sale.id),
            sku: sku.clone(),
            price: FLASH_PRICE,
            buyers: buyers.clone(),
            keys: format!("{tag}-{n}"),
            demand: round.demand(),
            tally: round.tally(),
            unit: round.unit(),
        });
        if round.units == 0 {
            sell_last_unit(target.addr, &sale.id, &buyers[0]).await?;
        }
        let labels = round.labels("emporium");
        let (mut point, workload) =
            measure(&labels, workload, &round.plan(&labels, settings), settings).await?;
        let after = emporium::flash_sale(target.addr, &sale.id).await?;
        let levels = admin.inventory(&sku).await?;
        let bought = units - round.units + workload.tally.sold.load(Ordering::Relaxed);
        let unknown = workload.tally.unknown.load(Ordering::Relaxed);
        point.checks.assertions.push(Assertion::new(
            "the sale's units add up, the SKU's stock is the sale's",
            after.remaining + after.reserved + after.sold == after.quantity
                && (bought..=bought + unknown).contains(&after.reserved)
                && after.sold == 0
                && levels.on_hand == units
                && levels.available == 0,
            format!(
                "sale: {} remaining, {} reserved in pending orders, {} paid, of {} ({}); \
                 SKU: on hand {}, reserved {}, available {}",
                after.remaining,
                after.reserved,
                after.sold,
                after.quantity,
                after.status,
                levels.on_hand,
                levels.reserved,
                levels.available
            ),
        ));
        point.notes.push(format!(
            "signed-in buyers, POST /v1/flash-sales/{{id}}/purchases with an Idempotency-Key, \
             durable; {FLASH_BUYERS} customers registered"
        ));
        round.close(&mut point, &workload.tally, after.remaining);
        points.push(point);
    }
    Ok(points)
}

/// Buys a one-unit sale's only unit, so that what follows is sold out.
async fn sell_last_unit(
    addr: SocketAddr,
    sale: &str,
    buyer: &(http::HeaderName, http::HeaderValue),
) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr).await?;
    let headers = [buyer.clone(), super::http::idempotency(&format!("last-unit-{sale}"))];
    let path = format!("/v1/flash-sales/{sale}/purchases");
    let reply = conn.post(&path, &headers, r#"{"quantity":1}"#).await?;
    let _: super::check::Order = emporium::expect(&reply, 201, "buying the last unit")?;
    Ok(())
}

/// The flash sale on PostgreSQL: the same rounds, each on a fresh sale row.
pub async fn flash_postgres(url: &str, settings: &Settings) -> anyhow::Result<Vec<Point>> {
    let admin = baseline::pg_connect(url).await?;
    admin.batch_execute(baseline::PG_SCHEMA).await?;
    let server = baseline::pg_settings(&admin).await?;
    let mut points = Vec::new();
    for round in Round::all(settings) {
        admin.batch_execute("TRUNCATE flash_orders, flash_holdings, flash_sales").await?;
        admin
            .execute(
                "INSERT INTO flash_sales VALUES (1, $1, $2, $3)",
                &[&(round.units as i64), &FLASH_PRICE, &(round.cap as i32)],
            )
            .await?;
        baseline::pg_quiesce(&admin, "flash_sales, flash_holdings, flash_orders").await?;
        let labels = round.labels("postgres");
        let workload = Arc::new(PgFlash {
            url: url.to_string(),
            sale: 1,
            demand: round.demand(),
            tally: round.tally(),
            unit: round.unit(),
        });
        let (mut point, workload) =
            measure(&labels, workload, &round.plan(&labels, settings), settings).await?;
        let left: i64 =
            admin.query_one("SELECT remaining FROM flash_sales WHERE id = 1", &[]).await?.get(0);
        let row = admin
            .query_one(
                "SELECT (SELECT coalesce(sum(qty), 0)::bigint FROM flash_orders), \
                        (SELECT coalesce(max(units), 0) FROM flash_holdings)",
                &[],
            )
            .await?;
        let (ordered, top): (i64, i32) = (row.get(0), row.get(1));
        point.checks.assertions.push(Assertion::new(
            "order rows hold the units taken, holdings within the cap",
            ordered == round.units as i64 - left && top as u32 <= round.cap,
            format!("{ordered} units in order rows, the most any customer holds {top}"),
        ));
        point.notes.push(format!(
            "{server}; SELECT flash_purchase(sale, customer, quantity): one PL/pgSQL \
             transaction (guarded decrement, cap check and count, order row)"
        ));
        round.close(&mut point, &workload.tally, left.max(0) as u64);
        points.push(point);
    }
    Ok(points)
}

/// The flash sale on Redis: the same rounds with the Lua purchase.
pub async fn flash_redis(url: &str, settings: &Settings) -> anyhow::Result<Vec<Point>> {
    let mut admin = baseline::redis_connect(url).await?;
    let server = baseline::redis_settings(&mut admin).await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(baseline::REDIS_PURCHASE_LUA)
        .query_async(&mut admin)
        .await?;
    let (stock_key, buyers_key) = ("flash:stock".to_string(), "flash:buyers".to_string());
    let mut points = Vec::new();
    for round in Round::all(settings) {
        let _: () = redis::cmd("DEL").arg(&buyers_key).query_async(&mut admin).await?;
        let _: () =
            redis::cmd("SET").arg(&stock_key).arg(round.units).query_async(&mut admin).await?;
        let labels = round.labels("redis");
        let workload = Arc::new(RedisFlash {
            url: url.to_string(),
            stock_key: stock_key.clone(),
            buyers_key: buyers_key.clone(),
            cap: round.cap,
            sha: sha.clone(),
            demand: round.demand(),
            tally: round.tally(),
            unit: round.unit(),
        });
        let (mut point, workload) =
            measure(&labels, workload, &round.plan(&labels, settings), settings).await?;
        let left: i64 = redis::cmd("GET").arg(&stock_key).query_async(&mut admin).await?;
        let held: Vec<u32> = redis::cmd("HVALS").arg(&buyers_key).query_async(&mut admin).await?;
        let total = held.iter().map(|&h| u64::from(h)).sum::<u64>();
        let top = held.iter().copied().max().unwrap_or(0);
        point.checks.assertions.push(Assertion::new(
            "the buyers' hash holds the units taken, within the cap",
            total == round.units - left.max(0) as u64 && top <= round.cap,
            format!("{total} units in the hash, the most any customer holds {top}"),
        ));
        point.notes.push(format!(
            "{server}; Lua by EVALSHA: stock check, the customer's units in a hash checked \
             against the cap and counted, decrement"
        ));
        round.close(&mut point, &workload.tally, left.max(0) as u64);
        points.push(point);
    }
    Ok(points)
}

/// The checkout-heavy sequence: `(variant, clients)` for every run.
fn checkout_runs(settings: &Settings) -> Vec<(&'static str, usize)> {
    let uniform = settings.clients.iter().map(|&c| ("uniform", c));
    uniform.chain(settings.hot_clients.iter().map(|&c| ("hot", c))).collect()
}

/// Checkout-heavy on Emporium: [`checkout::SKUS`] SKUs created through the API, then
/// for each run carts prepared with the orders' lines and the checkout+payment pairs
/// measured.
pub async fn checkout_emporium(
    target: &EmporiumTarget,
    settings: &Settings,
) -> anyhow::Result<Vec<Point>> {
    let admin = target.admin().await?;
    let tag = run_tag();
    let (code, method) = admin.create_promotion(&tag).await?;
    let sku = move |i: u32| format!("CK{tag}-{i:06}");
    let started = Instant::now();
    let skus = (0..checkout::SKUS)
        .map(|i| (sku(i), checkout::price(i), checkout::initial_stock(i)))
        .collect();
    admin.create_skus(skus, "Checkout").await?;
    eprintln!(
        "    created {} products and SKUs with stock in {:.1} s",
        checkout::SKUS,
        started.elapsed().as_secs_f64()
    );
    let ledger = Arc::new(Ledger::new());
    let mut rates = RateGuess::new(600.0);
    let mut points = Vec::new();
    // Emporium alone also runs the uniform orders with a 10 % code on every cart and
    // a shipping method to a taxed address: its cost beside the plain checkout.
    let promo = settings.clients.iter().map(|&c| ("promo", c));
    for (n, (variant, clients)) in checkout_runs(settings).into_iter().chain(promo).enumerate() {
        let count = rates.carts(clients, settings, settings.checkout_carts_max);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xc4ec + n as u64);
        let orders: Vec<Vec<(u32, u32)>> =
            (0..count).map(|_| checkout::order_lines(&mut rng, variant == "hot")).collect();
        let prepared_at = Instant::now();
        let lines =
            orders.iter().map(|o| o.iter().map(|&(i, units)| (sku(i), units)).collect()).collect();
        let promoted = variant == "promo";
        let ids = emporium::prepare_carts(target.addr, lines, promoted.then_some(&*code)).await?;
        let line_count: usize = orders.iter().map(Vec::len).sum();
        eprintln!(
            "    prepared {count} carts ({line_count} lines) in {:.1} s",
            prepared_at.elapsed().as_secs_f64()
        );
        let carts = ids
            .into_iter()
            .zip(orders)
            .map(|(cart_id, lines)| PreparedOrder { cart_id, lines })
            .collect();
        let labels = Labels { workload: "checkout-heavy", variant, system: "emporium" };
        let workload = EmporiumCheckout::new(target.addr, carts, clients, ledger.clone());
        let workload = Arc::new(if promoted { workload.shipped(&method) } else { workload });
        let plan = labels.plan(settings, Mode::Closed { clients });
        let (mut point, _) = measure(&labels, workload, &plan, settings).await?;
        emporium_ledger_checks(&mut point, &admin, &ledger, &sku).await?;
        point.notes.push(
            "the unit is a pair of durable requests: checkout of a cart prepared with 5–15 \
             lines (1–5 units each), then payment"
                .to_string(),
        );
        rates.saw(clients, point.throughput);
        report(&point);
        points.push(point);
    }
    Ok(points)
}

/// How many carts to prepare for a run: enough for its window at the rate it will
/// likely reach (the best rate seen so far, scaled up for more clients), within the
/// budget. A run that still runs out ends early and says so.
struct RateGuess {
    best: f64,
    best_clients: usize,
}

impl RateGuess {
    fn new(first: f64) -> RateGuess {
        RateGuess { best: first, best_clients: 0 }
    }

    fn carts(&self, clients: usize, settings: &Settings, budget: usize) -> usize {
        let growth = if self.best_clients == 0 {
            1.0
        } else {
            (clients as f64 / self.best_clients as f64).clamp(1.0, 8.0)
        };
        let seconds = (settings.warmup + settings.duration).as_secs_f64();
        let wanted = (self.best * growth * 1.3 * seconds) as usize;
        wanted.clamp(clients * 20, budget.max(clients * 20))
    }

    fn saw(&mut self, clients: usize, throughput: f64) {
        if throughput >= self.best || self.best_clients == 0 {
            self.best = throughput.max(1.0);
            self.best_clients = clients;
        }
    }
}

/// SKUs whose stock levels are read back: the hot one and a sample of the rest.
fn sampled_skus() -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5a3b);
    let mut out = vec![checkout::HOT];
    out.extend((0..SAMPLED_SKUS).map(|_| rng.random_range(1..checkout::SKUS)));
    out.sort_unstable();
    out.dedup();
    out
}

async fn emporium_ledger_checks(
    point: &mut Point,
    admin: &Admin,
    ledger: &Ledger,
    sku: &impl Fn(u32) -> String,
) -> anyhow::Result<()> {
    let mut conn = Conn::connect(admin.addr).await?;
    let mut mismatches = Vec::new();
    let exact = ledger.unknown.load(Ordering::Relaxed) == 0;
    let sampled = sampled_skus();
    for &i in &sampled {
        let levels = admin.inventory_on(&mut conn, &sku(i)).await?;
        let paid = ledger.paid[i as usize].load(Ordering::Relaxed);
        let unpaid = ledger.unpaid[i as usize].load(Ordering::Relaxed);
        let expected_on_hand = checkout::initial_stock(i) - paid;
        let agrees = levels.on_hand == expected_on_hand && levels.reserved == unpaid;
        if !agrees && (exact || levels.on_hand > expected_on_hand) {
            mismatches.push(format!(
                "{}: on hand {} (expected {expected_on_hand}), reserved {} (expected {unpaid})",
                sku(i),
                levels.on_hand,
                levels.reserved
            ));
        }
    }
    ledger_assertions(point, ledger, sampled.len(), mismatches);
    Ok(())
}

fn ledger_assertions(point: &mut Point, ledger: &Ledger, sampled: usize, mismatches: Vec<String>) {
    // Over every SKU; the per-SKU bound is the read-back assertion below.
    let stock = (0..checkout::SKUS).map(checkout::initial_stock).sum();
    point.checks.units_sold = Some(ledger.units());
    point.checks.units_stock = Some(stock);
    point.checks.assertions.push(Assertion::new(
        "server's stock equals the buyers' count",
        mismatches.is_empty(),
        if mismatches.is_empty() {
            format!(
                "{sampled} SKUs read back (the hot one included); {} units sold so far over all SKUs",
                ledger.units()
            )
        } else {
            mismatches.into_iter().take(3).collect::<Vec<_>>().join("; ")
        },
    ));
}

/// Checkout-heavy on PostgreSQL: the same catalog as rows, the same orders generated
/// on the fly (nothing needs preparing), the same runs.
pub async fn checkout_postgres(url: &str, settings: &Settings) -> anyhow::Result<Vec<Point>> {
    let admin = baseline::pg_connect(url).await?;
    admin.batch_execute(baseline::PG_SCHEMA).await?;
    admin
        .execute(
            "INSERT INTO stock (sku, qty, price) \
             SELECT g, CASE WHEN g = $1::bigint THEN $2::bigint ELSE $3::bigint END, 1000 + g % 9000 \
             FROM generate_series(0, $4::bigint) AS g",
            &[
                &i64::from(checkout::HOT),
                &(checkout::STOCK_HOT as i64),
                &(checkout::STOCK_PER_SKU as i64),
                &i64::from(checkout::SKUS - 1),
            ],
        )
        .await?;
    let server = baseline::pg_settings(&admin).await?;
    let ledger = Arc::new(Ledger::new());
    let mut points = Vec::new();
    for (variant, clients) in checkout_runs(settings) {
        baseline::pg_quiesce(&admin, "stock, orders, order_lines, payments").await?;
        let labels = Labels { workload: "checkout-heavy", variant, system: "postgres" };
        let workload = Arc::new(PgCheckout {
            url: url.to_string(),
            hot: variant == "hot",
            ledger: ledger.clone(),
        });
        let plan = labels.plan(settings, Mode::Closed { clients });
        let (mut point, _) = measure(&labels, workload, &plan, settings).await?;
        pg_ledger_checks(&mut point, &admin, &ledger).await?;
        point.notes.push(format!(
            "{server}; the unit is two transactions: guarded stock UPDATEs in ascending SKU \
             order + order row + line rows, then the payment"
        ));
        report(&point);
        points.push(point);
    }
    Ok(points)
}

async fn pg_ledger_checks(
    point: &mut Point,
    admin: &tokio_postgres::Client,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    let sampled: Vec<i64> = sampled_skus().into_iter().map(i64::from).collect();
    let rows = admin.query("SELECT sku, qty FROM stock WHERE sku = ANY($1)", &[&sampled]).await?;
    let exact = ledger.unknown.load(Ordering::Relaxed) == 0;
    let mut mismatches = Vec::new();
    for row in rows {
        let (sku, qty): (i64, i64) = (row.get(0), row.get(1));
        let i = sku as usize;
        let taken =
            ledger.paid[i].load(Ordering::Relaxed) + ledger.unpaid[i].load(Ordering::Relaxed);
        let expected = checkout::initial_stock(sku as u32) as i64 - taken as i64;
        if qty != expected && (exact || qty > expected) {
            mismatches.push(format!("sku {sku}: qty {qty} (expected {expected})"));
        }
    }
    let lines: i64 =
        admin.query_one("SELECT coalesce(sum(qty), 0)::bigint FROM order_lines", &[]).await?.get(0);
    let negative: i64 =
        admin.query_one("SELECT count(*) FROM stock WHERE qty < 0", &[]).await?.get(0);
    point.checks.assertions.push(Assertion::new(
        "order lines equal the buyers' units, no stock below zero",
        (!exact || lines as u64 == ledger.units()) && negative == 0,
        format!(
            "{lines} units in order lines, buyers counted {}, {negative} rows below zero",
            ledger.units()
        ),
    ));
    ledger_assertions(point, ledger, sampled.len(), mismatches);
    Ok(())
}

/// The storefront on Emporium's demo shop: closed loop, then open loop at
/// [`OPEN_LOOP_SHARE`] of the closed loop's throughput (latency corrected for
/// coordinated omission).
pub async fn storefront_emporium(
    target: &EmporiumTarget,
    settings: &Settings,
) -> anyhow::Result<Vec<Point>> {
    let admin = target.admin().await?;
    let products = admin.products().await?;
    let categories = admin.categories().await?;
    let search = emporium::search_exists(target.addr).await?;
    eprintln!(
        "    storefront: {} products, {} categories, /v1/search {}",
        products.len(),
        categories.len(),
        if search { "exists" } else { "answers 404 not_found: the search step is skipped" }
    );
    let catalog = || Catalog::new(&products, categories.clone());
    let mut points = Vec::new();
    let closed = Mode::Closed { clients: settings.storefront_clients };
    let mut throughput = 0.0;
    for (variant, mode) in [("closed", Some(closed)), ("open", None)] {
        let mode = mode.unwrap_or(Mode::Open {
            clients: OPEN_LOOP_CLIENTS,
            rate: (throughput * OPEN_LOOP_SHARE).max(100.0),
        });
        let labels = Labels { workload: "storefront", variant, system: "emporium" };
        let workload = Arc::new(Storefront {
            addr: target.addr,
            catalog: catalog(),
            search,
            skipped_search: Default::default(),
            skipped_order_status: Default::default(),
            unpaid_share: 0.0,
            sales: None,
        });
        let plan = labels.plan(settings, mode);
        let (mut point, workload) = measure(&labels, workload, &plan, settings).await?;
        let skipped = workload.skipped_search.load(Ordering::Relaxed);
        if !search {
            point.notes.push(format!(
                "search: skipped ({skipped} draws) — GET /v1/search answered 404 not_found when probed"
            ));
        }
        point.notes.push(format!(
            "order status drawn before the shopper had an order: {} (redrawn)",
            workload.skipped_order_status.load(Ordering::Relaxed)
        ));
        if variant == "open" {
            point.notes.push(format!(
                "open loop at {:.0}% of the closed loop's throughput over {OPEN_LOOP_CLIENTS} \
                 connections; latency from each arrival's intended start",
                OPEN_LOOP_SHARE * 100.0
            ));
        }
        throughput = point.throughput;
        report(&point);
        points.push(point);
    }
    Ok(points)
}
