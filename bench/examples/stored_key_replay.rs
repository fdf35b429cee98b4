//! The cost of a retry whose idempotency record has left memory: it is read from the
//! store. Places `ORDERS` keyed one-line checkouts (default 50,000; every record past
//! the 10,000 most recently written leaves memory), with the store's periodic flush
//! held off so that the records' rows are still in RocksDB's memtable, then sends 200
//! of the first checkouts again under their keys and prints the time each replay took.
//!
//! A vector memtable is copied and sorted for every point read: with the idempotency
//! table on one, each replay took 11–15 ms at 50,000–150,000 records; on a skip list,
//! 40–63 µs.
//!
//! Run: `cargo run --release -p emporium-bench --example stored_key_replay [-- ORDERS]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_bench::{for_each_concurrently, runtime, seed_catalog, sku};
use emporium_engine::{AddCartItem, Checkout, CreateCart, Engine, EngineConfig, IdempotencyKey};
use parking_lot::Mutex;

const PRODUCTS: u64 = 1_000;
const REPLAYS: usize = 200;

fn main() {
    emporium_engine::tune_process_memory().expect("memory settings as emporium serve's");
    let orders: u64 = std::env::args().nth(1).map_or(50_000, |a| a.parse().expect("ORDERS"));
    let data = emporium_bench::bench_data_dir();
    std::fs::create_dir_all(&data).expect("create the bench data directory");
    let dir = tempfile::tempdir_in(data).expect("scratch directory");
    let mut config = EngineConfig::new(dir.path());
    config.persist_interval_ms = 600_000;
    let engine = Engine::open(config).expect("open the engine");
    let rt = runtime();
    rt.block_on(seed_catalog(&engine, 0, PRODUCTS, emporium_bench::STOCK_ON_HAND));
    let key = |n: u64| Some(IdempotencyKey { scope: "guest".into(), key: format!("ck-{n}") });
    let carts = Arc::new(Mutex::new(Vec::new()));
    let placing = (engine.clone(), carts.clone());
    rt.block_on(for_each_concurrently(orders, 256, move |n| {
        let (engine, carts) = placing.clone();
        async move {
            let cart = engine.send(CreateCart::default()).await.expect("create a cart");
            let cart_id = cart.id.to_string();
            let item =
                AddCartItem { cart_id: cart_id.clone(), sku: sku(n % PRODUCTS), quantity: 1 };
            engine.send(item).await.expect("add a line");
            let checkout =
                Checkout { idempotency: key(n), ..emporium_bench::checkout(cart_id.clone()) };
            let order = engine.send(checkout).await.expect("check out");
            carts.lock().push((n, cart_id, order.id));
        }
    }));
    // Until the materializer has written the last rows (records leave memory then).
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.materialized_lsn() < engine.last_lsn() {
        assert!(Instant::now() < deadline, "the materializer did not catch up");
        std::thread::sleep(Duration::from_millis(2));
    }
    let state = engine.state();
    let mut carts = carts.lock().clone();
    carts.sort_unstable();
    let shop = engine.blocking();
    let started = Instant::now();
    for (n, cart_id, order_id) in carts.iter().take(REPLAYS) {
        let checkout =
            Checkout { idempotency: key(*n), ..emporium_bench::checkout(cart_id.clone()) };
        let replayed = shop.send(checkout).expect("replay");
        assert_eq!(replayed.id, *order_id, "key {n} replays its order");
    }
    let each = started.elapsed().as_secs_f64() * 1e6 / REPLAYS as f64;
    println!(
        "{} idempotency records, {} of them in memory; {REPLAYS} replays of the oldest keys: \
         {each:.1} µs each",
        state.idempotency_record_count(),
        state.idempotency_records_in_memory()
    );
    engine.close();
}
