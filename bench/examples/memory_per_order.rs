//! Resident memory per order held by the embedded engine, with the soak's kind of order:
//! a guest cart of `LINES` lines (default 10) checked out and paid, each with an
//! idempotency key, as the storefront's shoppers do.
//!
//! Seeds 10,000 products, places a first batch of orders (so that tables and the
//! allocator have grown past their start), then reads the process's resident memory
//! before and after `ORDERS` more (default 100,000) and prints the difference per order.
//! It also counts what the same run holds besides the orders: open carts and
//! idempotency records.
//!
//! Run: `cargo run --release -p emporium-bench --example memory_per_order [-- ORDERS [LINES
//! [ORDERS_IN_MEMORY [RECORDS_IN_MEMORY]]]]`, the last two each a number or `all` (the
//! engine's defaults otherwise): settled orders and idempotency records kept in memory.

use std::time::Instant;

use emporium_bench::{for_each_concurrently, runtime, seed_catalog, sku};
use emporium_engine::{
    AddCartItem, CapturePayment, Checkout, CreateCart, Engine, EngineConfig, IdempotencyKey,
};

const PRODUCTS: u64 = 10_000;
const WARM_UP: u64 = 20_000;
const IN_FLIGHT: usize = 256;

fn main() {
    emporium_engine::tune_process_memory().expect("memory settings as emporium serve's");
    let args: Vec<String> = std::env::args().collect();
    let orders: u64 = args.get(1).map_or(100_000, |a| a.parse().expect("ORDERS: a number"));
    let lines: u64 = args.get(2).map_or(10, |a| a.parse().expect("LINES: a number"));
    let mut config = EngineConfig::new("");
    let in_memory = |arg: Option<&String>, default: Option<usize>| match arg.map(String::as_str) {
        None => default,
        Some("all") => None,
        Some(n) => Some(n.parse().expect("ORDERS_IN_MEMORY, RECORDS_IN_MEMORY: a number or `all`")),
    };
    config.orders_in_memory = in_memory(args.get(3), config.orders_in_memory);
    config.idempotency_records_in_memory =
        in_memory(args.get(4), config.idempotency_records_in_memory);
    let data = emporium_bench::bench_data_dir();
    std::fs::create_dir_all(&data).expect("create the bench data directory");
    let dir = tempfile::tempdir_in(data).expect("scratch directory");
    config.data_dir = dir.path().to_path_buf();
    let engine = Engine::open(config).expect("open the engine");
    let rt = runtime();
    rt.block_on(seed_catalog(&engine, 0, PRODUCTS, emporium_bench::STOCK_ON_HAND));
    rt.block_on(place(&engine, 0, WARM_UP, lines));
    let storage = |engine: &Engine| engine.storage_memory_bytes().unwrap_or(0) / 1024;
    let (before, storage_before) = (resident_kib(), storage(&engine));
    let started = Instant::now();
    rt.block_on(place(&engine, WARM_UP, orders, lines));
    let (after, storage_after) = (resident_kib(), storage(&engine));
    let state = engine.state();
    println!(
        "{orders} orders of {lines} lines placed and paid in {:.1} s; {} orders held, {} of \
         them in memory; {} idempotency records, {} of them in memory",
        started.elapsed().as_secs_f64(),
        state.order_count(),
        state.orders_in_memory(),
        state.idempotency_record_count(),
        state.idempotency_records_in_memory()
    );
    let per_order = |kib: i64| (kib * 1024) as f64 / orders as f64;
    let grown = after as i64 - before as i64;
    let storage_grown = storage_after as i64 - storage_before as i64;
    println!(
        "resident: {before} KiB before, {after} KiB after: {:.0} bytes per order; \
         of which the storage backend's buffers {storage_before} -> {storage_after} KiB, \
         the rest {:.0} bytes per order",
        per_order(grown),
        per_order(grown - storage_grown)
    );
    engine.close();
}

/// Places and pays orders `first..first + count`, each from a guest cart of `lines`
/// lines, checkout and payment each under an idempotency key.
async fn place(engine: &Engine, first: u64, count: u64, lines: u64) {
    let engine = engine.clone();
    for_each_concurrently(count, IN_FLIGHT, move |i| {
        let engine = engine.clone();
        let n = first + i;
        async move {
            let cart = engine.send(CreateCart::default()).await.expect("create a cart");
            let cart_id = cart.id.to_string();
            for line in 0..lines {
                let sku = sku((n * 7919 + line * 104_729) % PRODUCTS);
                let item = AddCartItem { cart_id: cart_id.clone(), sku, quantity: 1 };
                engine.send(item).await.expect("add a line");
            }
            let key = |k: String| Some(IdempotencyKey { scope: "guest".into(), key: k });
            let checkout = Checkout {
                idempotency: key(format!("ck-{cart_id}")),
                ..emporium_bench::checkout(cart_id.clone())
            };
            let order = engine.send(checkout).await.expect("check out");
            let payment = CapturePayment {
                order_id: order.id.to_string(),
                method: "test_card".into(),
                token: "tok_visa".into(),
                idempotency: key(format!("pay-{}", order.id)),
            };
            engine.send(payment).await.expect("pay");
        }
    })
    .await;
}

/// The process's resident set, from `/proc/self/statm`.
fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 =
        statm.split_whitespace().nth(1).expect("resident pages").parse().expect("a number");
    pages * 4
}
