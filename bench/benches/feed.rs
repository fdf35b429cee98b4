//! The event feed and webhook deliveries: how fast a reader gets through the durable log
//! as public event records, and how fast the records reach a webhook receiver.
//!
//! One server runs in process (`RunningServer`, a temporary directory, loopback, no rate
//! limits, webhooks allowed to loopback) and its engine gets a log made by real commands:
//! 5,000 products created and stocked, 10,000 guest carts opened and filled with one
//! line each, and all 10,000 checked out (40,000 entries; carts and cart lines publish no
//! record, so the feed holds 5,000 `product.created`, 5,000 `stock.set` and 10,000
//! `order.placed` records).
//!
//! - `feed/in_process` and `feed/in_process_order_placed`: the loop `GET /v1/events`
//!   runs, without HTTP: `Engine::read_log` of 4,096 entries from the cursor, then the
//!   endpoint's own `page` (`limit` 1,000) turning them into records, until the log is
//!   read; all types, then `types=order.placed`. Records per second.
//! - `feed/read_log` (entries per second) and `feed/page` (records per second, the log
//!   already in memory) split the in-process loop into its two halves.
//! - `feed/http` and `feed/http_order_placed`: the whole feed over one keep-alive
//!   connection with an admin's token, `limit=1000`, each page's `next_cursor` the next
//!   page's `after`, the client parsing every page. Records per second.
//! - `webhooks/deliveries`: a webhook for `order.placed` and `stock.set` posts to a
//!   hyper receiver on loopback that answers 200 and counts; each iteration sets stock
//!   5,000 times through the engine (1,024 commands in flight) and is timed from the
//!   first command until the receiver has counted all 5,000. Deliveries go one at a time
//!   and in log order, so the time per delivery is one delivery's latency; the summary
//!   printed after the run gives it, the gaps between arrivals and how long the events
//!   took to be made.
//!
//! Run: `cargo bench -p emporium-bench --bench feed` (under two minutes once built;
//! add `-- --quick` for a short run, or a name filter such as `-- webhooks`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use emporium_bench::loadgen::emporium::{expect, Admin};
use emporium_bench::loadgen::http::Conn;
use emporium_bench::{
    checkout, for_each_concurrently, prepare_carts, seed_catalog, set_stock, PREPARE_IN_FLIGHT,
    STOCK_ON_HAND,
};
use emporium_engine::{Engine, LogEntry, Lsn};
use emporium_server::handlers::events::page;
use emporium_server::{Config, RunningServer};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

/// Products, each with one SKU, created and stocked.
const PRODUCTS: u64 = 5_000;
/// Guest carts of one line, every one checked out.
const CARTS: u64 = 10_000;
/// The log entries the fixture makes: a product and its stock, a cart, its line and its
/// checkout.
const ENTRIES: u64 = 2 * PRODUCTS + 3 * CARTS;
/// The feed's records among them: `product.created`, `stock.set`, `order.placed`.
const RECORDS: u64 = 2 * PRODUCTS + CARTS;
/// The type of the filtered reads, and how many of its records the fixture makes.
const ORDER_PLACED: &str = "order.placed";
const ORDERS_PLACED: u64 = CARTS;
/// Log entries read per page: `GET /v1/events` reads this many (its
/// `ENTRIES_PER_PAGE_MAX`) whatever the page's limit.
const ENTRIES_PER_READ: usize = 4096;
/// Records per page: the endpoint's largest `limit`.
const PAGE_LIMIT: usize = 1000;
/// Stock changes made, and deliveries awaited, per webhook iteration.
const DELIVERIES: u64 = 5_000;
/// Longest wait for one iteration's deliveries before the bench gives up.
const DELIVERIES_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for the server's own log consumers (KPIs, recommendations) to catch up
/// with the fixture before measuring.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The first admin of the bench server.
const ADMIN_EMAIL: &str = "admin@emporium.bench";
const ADMIN_PASSWORD: &str = "admin-password-for-benches";

/// The server with its log made, and an admin's session.
struct Shop {
    // Dropped first: the server stops before its directory goes.
    server: RunningServer,
    rt: tokio::runtime::Runtime,
    admin: Admin,
    /// The LSN before the fixture's first entry: where the measured reads start.
    after: u64,
    _dir: tempfile::TempDir,
}

impl Shop {
    fn start() -> Shop {
        // Read by the server when it starts: its first admin.
        std::env::set_var("EMPORIUM_ADMIN_EMAIL", ADMIN_EMAIL);
        std::env::set_var("EMPORIUM_ADMIN_PASSWORD", ADMIN_PASSWORD);
        let dir =
            tempfile::Builder::new().prefix("emporium-bench-feed-").tempdir().expect("temp dir");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("a loopback address"),
            data_dir: dir.path().join("data"),
            password_hash_kib: 64,
            rate_limits: false,
            ..Config::default()
        };
        config.webhooks.allow_private = true;
        // The feed and the deliveries alone: no customer messages of the checkouts.
        config.notifications.sender = emporium_server::notifications::SenderKind::Off;
        let server = RunningServer::start(config).expect("the bench server starts");
        // The client side: the receiver, the HTTP reader and the fixture's submitters.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the bench's tokio runtime");
        let admin = rt
            .block_on(Admin::sign_in(server.addr(), ADMIN_EMAIL, ADMIN_PASSWORD))
            .expect("the first admin signs in");
        let engine = server.app().engine.clone();
        let after = engine.durable_lsn().0;
        let started = Instant::now();
        rt.block_on(make_log(&engine));
        let made_in = started.elapsed();
        settle(&engine);
        let shop = Shop { server, rt, admin, after, _dir: dir };
        shop.check(made_in);
        shop
    }

    fn engine(&self) -> &Engine {
        &self.server.app().engine
    }

    /// Checks the fixture's log and the readers against each other, and says what a
    /// pass of the endpoint's loop reads.
    fn check(&self, made_in: Duration) {
        let engine = self.engine();
        let entries = read_whole_log(engine, self.after).len() as u64;
        assert_eq!(entries, ENTRIES, "the fixture's commands made one log entry each");
        let all = read_feed(engine, self.after, &[]);
        let placed = read_feed(engine, self.after, &[ORDER_PLACED]);
        assert_eq!(all.records, RECORDS, "the feed's records of the fixture");
        assert_eq!(placed.records, ORDERS_PLACED, "one order.placed record per checkout");
        let mut conn = self.connect();
        let over_http = self.rt.block_on(read_feed_http(&mut conn, self, ""));
        assert_eq!(over_http.records, RECORDS, "the feed over HTTP holds the same records");
        let placed_over_http = self.rt.block_on(read_feed_http(&mut conn, self, ORDER_PLACED));
        assert_eq!(placed_over_http.records, ORDERS_PLACED, "the filtered feed over HTTP too");
        eprintln!(
            "feed: {ENTRIES} entries made in {made_in:.1?}, {RECORDS} records \
             ({ORDERS_PLACED} order.placed); a pass of the endpoint's loop reads {} entries \
             in {} pages ({:.2}× the log), {} entries in {} pages with types=order.placed",
            all.entries_read,
            all.pages,
            all.entries_read as f64 / ENTRIES as f64,
            placed.entries_read,
            placed.pages,
        );
    }

    /// A keep-alive connection to the server.
    fn connect(&self) -> Conn {
        self.rt.block_on(Conn::connect(self.server.addr())).expect("connect to the server")
    }
}

/// The fixture's log: products created and stocked, carts opened and filled, all of
/// them checked out.
async fn make_log(engine: &Engine) {
    seed_catalog(engine, 0, PRODUCTS, STOCK_ON_HAND).await;
    let carts = Arc::new(prepare_carts(engine, CARTS, |i| i % PRODUCTS).await);
    let engine = engine.clone();
    for_each_concurrently(CARTS, PREPARE_IN_FLIGHT, move |i| {
        let engine = engine.clone();
        let cart = carts[i as usize].clone();
        async move {
            engine.send(checkout(cart)).await.expect("check a bench cart out");
        }
    })
    .await;
}

/// Waits (a bounded time) until the server's log consumers have read everything
/// durable, so that their catching up does not share the cores with the measurements.
fn settle(engine: &Engine) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let durable = engine.durable_lsn();
        let behind: Vec<(String, Lsn)> =
            engine.consumers().into_iter().filter(|(_, at)| *at < durable).collect();
        if behind.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("feed: measuring with log consumers still behind: {behind:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one pass through the feed read and produced.
#[derive(Clone, Copy, Debug, Default)]
struct Pass {
    records: u64,
    entries_read: u64,
    pages: u64,
}

/// The endpoint's loop in process, from the entry after `after`: read from the cursor,
/// page, move the cursor to the last entry the page took, until a read brings nothing
/// new.
fn read_feed(engine: &Engine, after: u64, types: &[&str]) -> Pass {
    let mut cursor = after;
    let mut pass = Pass::default();
    loop {
        let entries = engine.read_log(Lsn(cursor + 1), ENTRIES_PER_READ).expect("read the log");
        let (data, next) = page(&entries, types, PAGE_LIMIT, cursor);
        pass.entries_read += entries.len() as u64;
        if next == cursor {
            return pass;
        }
        pass.records += data.len() as u64;
        pass.pages += 1;
        cursor = next;
    }
}

/// The log after `after`, whole, in memory.
fn read_whole_log(engine: &Engine, after: u64) -> Vec<LogEntry> {
    let mut log: Vec<LogEntry> = Vec::new();
    loop {
        let from = log.last().map_or(after, |e| e.lsn.0) + 1;
        let entries = engine.read_log(Lsn(from), ENTRIES_PER_READ).expect("read the log");
        if entries.is_empty() {
            return log;
        }
        log.extend(entries);
    }
}

/// `page` alone over a log in memory, in the endpoint's steps.
fn page_log(log: &[LogEntry], after: u64, types: &[&str]) -> u64 {
    let mut cursor = after;
    let mut records = 0;
    let mut at = 0;
    while at < log.len() {
        let window = &log[at..log.len().min(at + ENTRIES_PER_READ)];
        let (data, next) = page(window, types, PAGE_LIMIT, cursor);
        records += data.len() as u64;
        at += window.partition_point(|e| e.lsn.0 <= next);
        cursor = next;
    }
    records
}

/// One page of `GET /v1/events`, as a client reads it.
#[derive(Deserialize)]
struct FeedPage {
    data: Vec<IgnoredAny>,
    next_cursor: String,
}

/// The whole feed over HTTP from the fixture's first entry, `limit=1000`, as the admin.
async fn read_feed_http(conn: &mut Conn, shop: &Shop, types: &str) -> Pass {
    let mut after = shop.after.to_string();
    let mut pass = Pass::default();
    let auth = std::slice::from_ref(shop.admin.auth());
    loop {
        let mut path = format!("/v1/events?limit={PAGE_LIMIT}&after={after}");
        if !types.is_empty() {
            path.push_str(&format!("&types={types}"));
        }
        let reply = conn.get(&path, auth).await.expect("GET /v1/events");
        let page: FeedPage = expect(&reply, 200, "a page of the feed").expect("a page of the feed");
        if page.next_cursor == after {
            return pass;
        }
        pass.records += page.data.len() as u64;
        pass.pages += 1;
        after = page.next_cursor;
    }
}

fn feed(c: &mut Criterion, shop: &mut Option<Shop>) {
    let mut group = c.benchmark_group("feed");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("in_process", |b| {
        let shop = shop.get_or_insert_with(Shop::start);
        b.iter(|| read_feed(shop.engine(), shop.after, &[]))
    });
    group.throughput(Throughput::Elements(ORDERS_PLACED));
    group.bench_function("in_process_order_placed", |b| {
        let shop = shop.get_or_insert_with(Shop::start);
        b.iter(|| read_feed(shop.engine(), shop.after, &[ORDER_PLACED]))
    });
    group.throughput(Throughput::Elements(ENTRIES));
    group.bench_function("read_log", |b| {
        let shop = shop.get_or_insert_with(Shop::start);
        b.iter(|| read_whole_log(shop.engine(), shop.after))
    });
    let mut log: Option<Vec<LogEntry>> = None;
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("page", |b| {
        let shop = shop.get_or_insert_with(Shop::start);
        let log = log.get_or_insert_with(|| read_whole_log(shop.engine(), shop.after));
        b.iter(|| page_log(log, shop.after, &[]))
    });
    drop(log);

    let mut conn: Option<Conn> = None;
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("http", |b| {
        let shop = shop.get_or_insert_with(Shop::start);
        let conn = conn.get_or_insert_with(|| shop.connect());
        b.iter(|| shop.rt.block_on(read_feed_http(conn, shop, "")))
    });
    group.throughput(Throughput::Elements(ORDERS_PLACED));
    group.bench_function("http_order_placed", |b| {
        let shop = shop.get_or_insert_with(Shop::start);
        let conn = conn.get_or_insert_with(|| shop.connect());
        b.iter(|| shop.rt.block_on(read_feed_http(conn, shop, ORDER_PLACED)))
    });
    group.finish();
}

/// A webhook receiver on loopback: hyper's HTTP/1 server answering 200 to everything,
/// counting requests and noting when each arrived.
struct Receiver {
    addr: SocketAddr,
    taken: watch::Receiver<u64>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let (counter, taken) = watch::channel(0u64);
        let counter = Arc::new(counter);
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let noted = arrivals.clone();
        tokio::spawn(async move {
            // A failed accept ends the receiver; the wait for deliveries then says so.
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                let noted = noted.clone();
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let counter = counter.clone();
                        let noted = noted.clone();
                        async move {
                            // Taken once the body is in, as a receiver would.
                            let _ = request.into_body().collect().await;
                            noted.lock().push(Instant::now());
                            counter.send_modify(|n| *n += 1);
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                tokio::spawn(async move {
                    let io = TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Receiver { addr, taken, arrivals }
    }

    /// Waits until `count` deliveries were taken in all.
    async fn wait_for(&mut self, count: u64) {
        let taken = tokio::time::timeout(DELIVERIES_TIMEOUT, self.taken.wait_for(|n| *n >= count));
        let taken = taken.await.expect("every delivery within the timeout");
        taken.map(|_| ()).expect("the receiver is running");
    }
}

/// What every iteration of the webhook bench saw, criterion's warm-up included.
#[derive(Default)]
struct Deliveries {
    rounds: u64,
    elapsed: Duration,
    produced_in: Duration,
    gaps: Vec<Duration>,
}

impl Deliveries {
    fn report(&mut self) {
        if self.rounds == 0 {
            return;
        }
        let delivered = self.rounds * DELIVERIES;
        let per_delivery = self.elapsed / delivered as u32;
        self.gaps.sort_unstable();
        let quantile = |q: f64| self.gaps[((self.gaps.len() - 1) as f64 * q) as usize];
        eprintln!(
            "webhooks/deliveries: {delivered} deliveries in {} rounds, {:.0}/s, {per_delivery:.1?} \
             per delivery (one at a time); gaps between arrivals p50 {:.1?}, p99 {:.1?}, max \
             {:.1?}; the {DELIVERIES} events of a round durable in {:.1?} on average ({:.0}/s)",
            self.rounds,
            delivered as f64 / self.elapsed.as_secs_f64(),
            quantile(0.5),
            quantile(0.99),
            quantile(1.0),
            self.produced_in / self.rounds as u32,
            delivered as f64 / self.produced_in.as_secs_f64(),
        );
    }
}

/// Sets stock `DELIVERIES` times (each a `stock.set` record), `round` making every
/// level new; answers how long until all were durable.
async fn produce(engine: Engine, round: u64) -> Duration {
    let started = Instant::now();
    for_each_concurrently(DELIVERIES, PREPARE_IN_FLIGHT, move |i| {
        let engine = engine.clone();
        let level = STOCK_ON_HAND - (round * DELIVERIES + i) as i64;
        async move {
            engine.send(set_stock(i % PRODUCTS, level)).await.expect("set a SKU's stock");
        }
    })
    .await;
    started.elapsed()
}

/// A webhook to the receiver, its follower started and caught up.
struct Hook {
    receiver: Receiver,
    /// Deliveries taken so far.
    taken: u64,
    /// Iterations run, to make every stock level new.
    round: u64,
}

impl Hook {
    fn create(shop: &Shop) -> Hook {
        let mut receiver = shop.rt.block_on(Receiver::start());
        let mut conn = shop.connect();
        let url = format!("http://{}/hooks/emporium", receiver.addr);
        let body = json!({"url": url, "events": ["order.placed", "stock.set"]});
        let auth = std::slice::from_ref(shop.admin.auth());
        let reply = shop
            .rt
            .block_on(conn.post("/v1/admin/webhooks", auth, body.to_string()))
            .expect("POST /v1/admin/webhooks");
        let _: serde_json::Value =
            expect(&reply, 201, "create the webhook").expect("create the webhook");
        // One delivery first: the follower has started (the server looks for new
        // webhooks every 200 ms) and caught up.
        shop.rt.block_on(async {
            shop.engine().send(set_stock(0, STOCK_ON_HAND)).await.expect("set a SKU's stock");
            receiver.wait_for(1).await;
        });
        Hook { receiver, taken: 1, round: 0 }
    }

    /// One iteration: `DELIVERIES` stock changes, timed from the first command until the
    /// receiver has taken them all.
    fn round(&mut self, shop: &Shop, measured: &mut Deliveries) -> Duration {
        self.round += 1;
        self.taken += DELIVERIES;
        self.receiver.arrivals.lock().clear();
        let started = Instant::now();
        let produced_in = shop.rt.block_on(async {
            let producing = tokio::spawn(produce(shop.engine().clone(), self.round));
            self.receiver.wait_for(self.taken).await;
            producing.await.expect("the stock setters finished")
        });
        let elapsed = started.elapsed();
        measured.rounds += 1;
        measured.elapsed += elapsed;
        measured.produced_in += produced_in;
        let arrivals = self.receiver.arrivals.lock();
        measured.gaps.extend(arrivals.windows(2).map(|w| w[1] - w[0]));
        elapsed
    }
}

fn webhooks(c: &mut Criterion, shop: &mut Option<Shop>) {
    let mut group = c.benchmark_group("webhooks");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(DELIVERIES));
    let mut hook: Option<Hook> = None;
    let mut measured = Deliveries::default();
    group.bench_function("deliveries", |b| {
        let shop = shop.get_or_insert_with(Shop::start);
        let hook = hook.get_or_insert_with(|| Hook::create(shop));
        b.iter_custom(|iters| (0..iters).map(|_| hook.round(shop, &mut measured)).sum())
    });
    group.finish();
    measured.report();
}

fn benches(c: &mut Criterion) {
    // Made by the first benchmark the filter selects, if any.
    let mut shop = None;
    feed(c, &mut shop);
    webhooks(c, &mut shop);
}

criterion_group!(feed_and_webhooks, benches);
emporium_bench::bench_main!(feed_and_webhooks);
