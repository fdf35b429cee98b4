//! The soak: the storefront mix held at a share of the server's measured saturation for
//! a long time (30 minutes in `scripts/soak`), with some checkouts left unpaid so their
//! reservations expire and full carts abandoned so the cart timer drops them, while a
//! sampler records the server's resident memory and its own counters. At the end it
//! waits out the reservations and checks, against what the shoppers were answered:
//!
//! - no 5xx, counted by the shoppers and by the server's own `/metrics`;
//! - resident memory after warm-up drifted by less than [`RSS_DRIFT_MAX`];
//! - every SKU has no units reserved (every unpaid order expired), and units on hand
//!   equal the units at the start minus the units the shoppers were told they paid for;
//! - a sample of the unpaid orders reads `expired`;
//! - carts were abandoned and dropped, and the server still answers `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::check::{AnyObject, Inventory, Order, Page};
use super::driver::{self, Mode, Plan};
use super::emporium::{self, expect, parallel, Admin, PREPARE_CONNECTIONS};
use super::http::Conn;
use super::stats::{Assertion, Latency, Recorder};
use super::workloads::storefront::{Catalog, Sales, Storefront};

/// Largest growth of resident memory from the end of warm-up to the end of the run.
pub const RSS_DRIFT_MAX: f64 = 0.10;
/// Unpaid orders whose status is read back at the end.
const UNPAID_CHECKED: usize = 500;

/// How a soak runs.
#[derive(Clone, Debug)]
pub struct SoakPlan {
    /// The server.
    pub addr: SocketAddr,
    /// Its process, for its resident memory.
    pub server_pid: u32,
    /// Admin email and password.
    pub email: String,
    /// Admin password.
    pub password: String,
    /// The whole run under load (warm-up included).
    pub duration: Duration,
    /// The first part of the run, after which memory must stay put.
    pub warmup: Duration,
    /// The offered rate as a share of the measured saturation.
    pub share: f64,
    /// Connections of the closed loop that measures saturation.
    pub saturation_clients: usize,
    /// The saturation measurement's window.
    pub saturation_window: Duration,
    /// Connections the open loop spreads its arrivals over.
    pub clients: usize,
    /// The share of checkouts left unpaid.
    pub unpaid_share: f64,
    /// The server's reservation time to live (waited out before the stock check).
    pub reservation_ttl: Duration,
    /// Units added to every SKU before the run, so a long run does not sell out.
    pub restock: u64,
    /// How often the sampler reads memory and counters.
    pub sample_every: Duration,
    /// Draw progress bars.
    pub progress: bool,
}

/// One reading of the server.
#[derive(Serialize, Clone, Debug)]
pub struct Sample {
    /// Seconds since the open loop started.
    pub at_s: f64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Requests answered so far (all statuses).
    pub requests: u64,
    /// 5xx answers so far.
    pub server_errors: u64,
    /// Open carts.
    pub carts_open: u64,
    /// Carts dropped as abandoned so far.
    pub carts_abandoned: u64,
    /// Log entries kept by retention.
    pub log_entries_held: u64,
    /// Durable entries the materializer has not written yet.
    pub materializer_lag: u64,
    /// Orders held (every status).
    pub orders: u64,
    /// Idempotency records held.
    pub idempotency_records: u64,
    /// Idempotency records in memory.
    pub idempotency_records_in_memory: u64,
    /// Memory of the storage backend (RocksDB memtables, table readers and block cache),
    /// KiB.
    pub storage_kib: u64,
}

/// What a soak found.
#[derive(Serialize, Debug)]
pub struct SoakReport {
    /// Storefront interactions per second in the closed loop.
    pub saturation: f64,
    /// The offered rate.
    pub offered: f64,
    /// Interactions per second answered over the open loop.
    pub achieved: f64,
    /// Interactions completed.
    pub interactions: u64,
    /// Latency of interactions over the whole run (from each arrival's intended start).
    pub latency: Latency,
    /// 5xx answers seen by the shoppers.
    pub server_errors: u64,
    /// Requests that got no answer.
    pub transport_errors: u64,
    /// Answers of a status or shape the contract does not allow.
    pub wrong_answers: u64,
    /// Resident memory at the end of warm-up, KiB.
    pub rss_warm_kib: u64,
    /// At the end, KiB.
    pub rss_end_kib: u64,
    /// The most seen, KiB.
    pub rss_max_kib: u64,
    /// `(end − warm) / warm`.
    pub rss_drift: f64,
    /// Growth of the storage backend's buffers over the same span, KiB.
    pub storage_growth_kib: i64,
    /// Orders added over the same span.
    pub orders_added: u64,
    /// The rest of the growth per order added, bytes.
    pub bytes_per_order: f64,
    /// Orders the shoppers paid for.
    pub paid_units: u64,
    /// Orders left unpaid.
    pub unpaid_orders: usize,
    /// The readings, every `sample_every`.
    pub samples: Vec<Sample>,
    /// The checks at the end.
    pub assertions: Vec<Assertion>,
}

impl SoakReport {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.assertions.iter().all(|a| a.holds)
    }
}

/// Runs the soak.
pub async fn soak(plan: &SoakPlan) -> anyhow::Result<SoakReport> {
    let admin = Admin::sign_in(plan.addr, &plan.email, &plan.password).await?;
    let products = admin.products().await?;
    let categories = admin.categories().await?;
    let search = emporium::search_exists(plan.addr).await?;
    let catalog = Catalog::new(&products, categories);
    eprintln!(
        "soak: {} products, {} SKUs; restocking each by {}",
        catalog.products.len(),
        catalog.skus.len(),
        plan.restock
    );
    let start_stock = restock(&admin, &catalog.skus, plan.restock).await?;
    let sales = Arc::new(Sales::new(&catalog.skus));
    let storefront = |sales: Option<Arc<Sales>>| {
        Arc::new(Storefront {
            addr: plan.addr,
            catalog: catalog.clone(),
            search,
            skipped_search: Default::default(),
            skipped_order_status: Default::default(),
            unpaid_share: plan.unpaid_share,
            sales,
        })
    };

    // Saturation: the closed loop's throughput. Its purchases are booked too: they
    // take stock like any other.
    let closed = Plan {
        mode: Mode::Closed { clients: plan.saturation_clients },
        warmup: Duration::from_secs(3),
        duration: plan.saturation_window,
        label: "soak: saturation".into(),
        progress: plan.progress,
        server_pid: Some(plan.server_pid),
    };
    let measured = driver::run(storefront(Some(sales.clone())), &closed).await?;
    let saturation = interactions(&measured.rec) as f64 / measured.window.as_secs_f64();
    let offered = saturation * plan.share;
    eprintln!(
        "soak: saturation {saturation:.0}/s; offering {offered:.0}/s for {:?}",
        plan.duration
    );

    // The long open loop, with the sampler beside it.
    let open = Plan {
        mode: Mode::Open { clients: plan.clients, rate: offered },
        warmup: Duration::ZERO,
        duration: plan.duration,
        label: "soak".into(),
        progress: plan.progress,
        server_pid: Some(plan.server_pid),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample_until(plan.clone(), stopped));
    let outcome = driver::run(storefront(Some(sales.clone())), &open).await?;
    stop.send_replace(true);
    let samples = sampler.await??;

    let mut report = summarize(plan, saturation, offered, &outcome, &measured.rec, samples);
    eprintln!(
        "soak: load stopped; waiting (at most {:?}) for the last reservations to expire",
        plan.reservation_ttl + EXPIRY_GRACE
    );
    let waited = Instant::now();
    let drained = no_pending_orders(&admin, plan.reservation_ttl + EXPIRY_GRACE).await?;
    eprintln!(
        "soak: {} after {:.1} s",
        if drained { "no order pending" } else { "orders still pending" },
        waited.elapsed().as_secs_f64()
    );
    check_stock(&admin, &catalog.skus, &start_stock, &sales, &mut report).await?;
    check_expired(plan.addr, &sales, &mut report).await?;
    check_server(plan, &mut report).await?;
    Ok(report)
}

fn interactions(rec: &Recorder) -> u64 {
    rec.op("interaction").map_or(0, |op| op.latency.len())
}

/// Adds `units` to every SKU; answers each SKU's units on hand after it.
async fn restock(admin: &Admin, skus: &[String], units: u64) -> anyhow::Result<Vec<u64>> {
    let admin = Arc::new(admin.clone());
    parallel(admin.addr, skus.to_vec(), PREPARE_CONNECTIONS, move |mut conn, sku| {
        let admin = admin.clone();
        async move {
            let body = serde_json::json!({"delta": units, "reason": "soak restock"}).to_string();
            let path = format!("/v1/inventory/{sku}/adjustments");
            let result = async {
                let reply = conn.post(&path, std::slice::from_ref(admin.auth()), body).await?;
                let levels: Inventory = expect(&reply, 200, "restocking")?;
                anyhow::ensure!(levels.reserved == 0, "{sku} has units reserved before the run");
                Ok(levels.on_hand)
            }
            .await;
            (conn, result)
        }
    })
    .await
}

/// Reads the server every `sample_every` until `stop` turns true, then once more.
async fn sample_until(
    plan: SoakPlan,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Sample>> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut conn = Conn::connect(plan.addr).await?;
    loop {
        let sample = read_sample(&mut conn, plan.server_pid, started).await;
        let sample = match sample {
            Ok(sample) => sample,
            // One reconnect: the sampler's connection may be closed as idle.
            Err(_) => {
                conn = Conn::connect(plan.addr).await?;
                read_sample(&mut conn, plan.server_pid, started).await?
            }
        };
        eprintln!(
            "soak: {:>6.0} s  rss {:>7} KiB (storage {:>6} KiB)  orders {:>7}  requests {:>10}  \
             5xx {}  carts open {:>6} abandoned {:>7}  log held {:>7}  materializer lag {}  \
             keys {:>7} ({} in memory)",
            sample.at_s,
            sample.rss_kib,
            sample.storage_kib,
            sample.orders,
            sample.requests,
            sample.server_errors,
            sample.carts_open,
            sample.carts_abandoned,
            sample.log_entries_held,
            sample.materializer_lag,
            sample.idempotency_records,
            sample.idempotency_records_in_memory
        );
        samples.push(sample);
        let next = started + plan.sample_every * samples.len() as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => {
                let last = read_sample(&mut conn, plan.server_pid, started).await?;
                samples.push(last);
                return Ok(samples);
            }
        }
    }
}

async fn read_sample(conn: &mut Conn, pid: u32, started: Instant) -> anyhow::Result<Sample> {
    let reply = conn.get("/metrics", &[]).await?;
    anyhow::ensure!(reply.status == 200, "/metrics answered {}", reply.status);
    let text = String::from_utf8_lossy(&reply.body);
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let (mut requests, mut server_errors) = (0u64, 0u64);
    for line in text.lines().filter(|l| l.starts_with("emporium_http_requests_total{")) {
        let count = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        requests += count as u64;
        if line.contains("status=\"5") {
            server_errors += count as u64;
        }
    }
    Ok(Sample {
        at_s: started.elapsed().as_secs_f64(),
        rss_kib: rss_kib(pid).context("reading the server's resident memory")?,
        requests,
        server_errors,
        carts_open: gauge("emporium_carts_open"),
        carts_abandoned: gauge("emporium_carts_abandoned"),
        log_entries_held: gauge("emporium_engine_log_entries_held"),
        materializer_lag: gauge("emporium_engine_materializer_lag_lsn"),
        orders: gauge("emporium_orders"),
        idempotency_records: gauge("emporium_idempotency_records"),
        idempotency_records_in_memory: gauge("emporium_idempotency_records_in_memory"),
        storage_kib: gauge("emporium_storage_memory_bytes") / 1024,
    })
}

/// `VmRSS` of `pid`, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

fn summarize(
    plan: &SoakPlan,
    saturation: f64,
    offered: f64,
    outcome: &driver::Outcome,
    saturation_rec: &Recorder,
    samples: Vec<Sample>,
) -> SoakReport {
    let (mut server_errors, mut transport_errors, mut wrong_answers) = (0, 0, 0);
    for rec in [&outcome.rec, saturation_rec] {
        for (_, op) in rec.ops() {
            server_errors += op.server_errors;
            transport_errors += op.transport;
            wrong_answers += op.unexpected + op.malformed;
        }
    }
    let interactions = interactions(&outcome.rec);
    let warm_s = plan.warmup.as_secs_f64();
    let warm = samples.iter().find(|s| s.at_s >= warm_s).cloned();
    let end = samples.last().cloned();
    let rss_warm_kib = warm.as_ref().map_or(0, |s| s.rss_kib);
    let rss_end_kib = end.as_ref().map_or(0, |s| s.rss_kib);
    // What the growth is made of: the storage backend's buffers, and per order added.
    let (storage_growth_kib, orders_added) = match (&warm, &end) {
        (Some(w), Some(e)) => {
            (e.storage_kib as i64 - w.storage_kib as i64, e.orders.saturating_sub(w.orders))
        }
        _ => (0, 0),
    };
    let other_growth_kib = rss_end_kib as i64 - rss_warm_kib as i64 - storage_growth_kib;
    let bytes_per_order = other_growth_kib as f64 * 1024.0 / orders_added.max(1) as f64;
    let rss_max_kib = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let rss_drift = (rss_end_kib as f64 - rss_warm_kib as f64) / (rss_warm_kib.max(1) as f64);
    let metric_errors = samples.last().map_or(0, |s| s.server_errors);
    let abandoned = samples.last().map_or(0, |s| s.carts_abandoned);
    let assertions = vec![
        Assertion::new(
            "no 5xx",
            server_errors == 0 && metric_errors == 0,
            format!("{server_errors} seen by the shoppers, {metric_errors} counted by the server"),
        ),
        Assertion::new(
            "every request answered as the contract allows",
            transport_errors == 0 && wrong_answers == 0,
            format!("{transport_errors} without an answer, {wrong_answers} wrong"),
        ),
        Assertion::new(
            format!("resident memory drifted < {:.0}% after warm-up", RSS_DRIFT_MAX * 100.0),
            rss_warm_kib > 0 && rss_drift < RSS_DRIFT_MAX,
            format!(
                "{rss_warm_kib} KiB at {warm_s:.0} s, {rss_end_kib} KiB at the end ({:+.1}%), \
                 {rss_max_kib} KiB at most; of the growth, {storage_growth_kib} KiB is the \
                 storage backend's buffers, the rest is {:.0} bytes per order added \
                 ({orders_added} orders)",
                rss_drift * 100.0,
                bytes_per_order
            ),
        ),
        Assertion::new(
            "abandoned carts were dropped",
            abandoned > 0,
            format!("{abandoned} carts dropped after their time to live"),
        ),
    ];
    SoakReport {
        saturation,
        offered,
        achieved: interactions as f64 / outcome.window.as_secs_f64().max(1e-9),
        interactions,
        latency: outcome
            .rec
            .op("interaction")
            .map(|op| Latency::of(&op.latency))
            .unwrap_or_default(),
        server_errors: server_errors + metric_errors,
        transport_errors,
        wrong_answers,
        rss_warm_kib,
        rss_end_kib,
        rss_max_kib,
        rss_drift,
        storage_growth_kib,
        orders_added,
        bytes_per_order,
        paid_units: 0,
        unpaid_orders: 0,
        samples,
        assertions,
    }
}

/// Every SKU: nothing reserved, and on hand = at the start − units paid.
async fn check_stock(
    admin: &Admin,
    skus: &[String],
    start: &[u64],
    sales: &Sales,
    report: &mut SoakReport,
) -> anyhow::Result<()> {
    let shared = Arc::new(admin.clone());
    let levels = parallel(admin.addr, skus.to_vec(), PREPARE_CONNECTIONS, move |mut conn, sku| {
        let admin = shared.clone();
        async move {
            let levels = admin.inventory_on(&mut conn, &sku).await;
            (conn, levels)
        }
    })
    .await?;
    let unknown = sales.unknown.load(Ordering::Relaxed);
    let (mut reserved, mut wrong) = (0u64, Vec::new());
    let mut paid_units = 0;
    for (i, level) in levels.iter().enumerate() {
        let paid = sales.paid[i].load(Ordering::Relaxed);
        paid_units += paid;
        reserved += level.reserved;
        let expected = start[i].saturating_sub(paid);
        // A payment without an answer may have gone through: then only "at most".
        let fits = if unknown == 0 { level.on_hand == expected } else { level.on_hand <= expected };
        if !fits && wrong.len() < 5 {
            wrong.push(format!("{}: on hand {} (expected {expected})", skus[i], level.on_hand));
        }
    }
    report.paid_units = paid_units;
    report.assertions.push(Assertion::new(
        "no units reserved once the reservations ran out",
        reserved == 0,
        format!("{reserved} units reserved over {} SKUs", skus.len()),
    ));
    report.assertions.push(Assertion::new(
        "on hand = at the start − units the shoppers paid for, every SKU",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!(
                "{paid_units} units paid over {} SKUs; {unknown} payments without an answer",
                skus.len()
            )
        } else {
            wrong.join("; ")
        },
    ));
    Ok(())
}

/// A sample of the unpaid orders reads `expired`.
/// How long past the reservations' time to live the server may take to expire them
/// (its expiry timer's period, with room).
const EXPIRY_GRACE: Duration = Duration::from_secs(30);

/// Waits until the server lists no order pending payment (every reservation expired or
/// paid), for at most `within`; answers whether it got there. The checks after it say
/// what was still pending if not.
async fn no_pending_orders(admin: &Admin, within: Duration) -> anyhow::Result<bool> {
    let mut conn = Conn::connect(admin.addr).await?;
    let until = Instant::now() + within;
    loop {
        let path = "/v1/orders?status=pending_payment&limit=1";
        let reply = conn.get(path, std::slice::from_ref(admin.auth())).await?;
        let page: Page<AnyObject> = expect(&reply, 200, "listing pending orders")?;
        if page.data.is_empty() {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn check_expired(
    addr: SocketAddr,
    sales: &Sales,
    report: &mut SoakReport,
) -> anyhow::Result<()> {
    let unpaid = sales.unpaid.lock().expect("the ledger lock is never poisoned").clone();
    report.unpaid_orders = unpaid.len();
    let step = (unpaid.len() / UNPAID_CHECKED).max(1);
    let sample: Vec<String> = unpaid.into_iter().step_by(step).take(UNPAID_CHECKED).collect();
    let checked = sample.len();
    let statuses = parallel(addr, sample, 16, |mut conn, id| async move {
        let order = async {
            let reply = conn.get(&format!("/v1/orders/{id}"), &[]).await?;
            expect::<Order>(&reply, 200, "reading an unpaid order")
        }
        .await;
        (conn, order.map(|o| o.status))
    })
    .await?;
    let not_expired: Vec<&String> = statuses.iter().filter(|s| *s != "expired").collect();
    report.assertions.push(Assertion::new(
        "unpaid orders expired",
        checked > 0 && not_expired.is_empty(),
        format!(
            "{checked} of {} unpaid orders read: {} not expired",
            report.unpaid_orders,
            not_expired.len()
        ),
    ));
    Ok(())
}

/// The server still answers ready.
async fn check_server(plan: &SoakPlan, report: &mut SoakReport) -> anyhow::Result<()> {
    let mut conn = Conn::connect(plan.addr).await?;
    let reply = conn.get("/readyz", &[]).await?;
    report.assertions.push(Assertion::new(
        "the server is ready after the run",
        reply.status == 200,
        format!("/readyz answered {}", reply.status),
    ));
    Ok(())
}
