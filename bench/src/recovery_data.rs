//! The data sets of the recovery measurements (`benches/recovery.rs`,
//! `examples/recovery_after_kill.rs`): a shop built through the engine API and cached
//! under `<target>/bench-data/recovery-v2/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_engine::{AddCartItem, CreateCart, Engine, EngineConfig, ManualClock, OrderId};

use crate::{
    bench_data_dir, checkout, for_each_concurrently, runtime, seed_catalog, sku, PREPARE_IN_FLIGHT,
    T0,
};

/// Units given to every SKU: more than its share of the orders.
const ON_HAND: i64 = 1_000_000;

/// A data set: how many products and orders, and its name (its folder).
pub struct DataSet {
    /// Its folder under `recovery-v2/`, and the benchmark's name.
    pub name: &'static str,
    /// Products, each with stock.
    pub products: u64,
    /// Orders of one line, each from a guest cart, left pending.
    pub orders: u64,
    /// Criterion's measurement time for it.
    pub measurement: Duration,
}

/// The small set (a quick run) and the large one.
pub const DATA_SETS: [DataSet; 2] = [
    DataSet {
        name: "small_10k_products_100k_orders",
        products: 10_000,
        orders: 100_000,
        measurement: Duration::from_secs(15),
    },
    DataSet {
        name: "large_100k_products_1m_orders",
        products: 100_000,
        orders: 1_000_000,
        measurement: Duration::from_secs(100),
    },
];

/// The engine's configuration for the data sets: a clock that stays at `T0`, so no
/// reservation ever falls due and opening the directory never changes it.
pub fn config(dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.clock = Arc::new(ManualClock::new(T0));
    config.id_seed = Some(42);
    config
}

/// The data set's directory, built first if it is not cached. A build goes to a
/// `.building` folder that is renamed when complete, so an interrupted build is never
/// taken for a finished one.
pub fn ensure(set: &DataSet) -> PathBuf {
    let root = bench_data_dir().join("recovery-v2");
    let dir = root.join(set.name);
    if dir.exists() {
        return dir;
    }
    let building = root.join(format!("{}.building", set.name));
    if building.exists() {
        std::fs::remove_dir_all(&building).expect("remove an interrupted build");
    }
    eprintln!("recovery: building {} (cached for later runs) ...", building.display());
    let started = Instant::now();
    build(&building, set);
    std::fs::rename(&building, &dir).expect("publish the data set");
    eprintln!("recovery: built {} in {:.1} s", dir.display(), started.elapsed().as_secs_f64());
    dir
}

/// Builds the data set into `dir` through the engine API.
pub fn build(dir: &Path, set: &DataSet) {
    let rt = runtime();
    let engine = Engine::open(config(dir)).expect("open the engine to build");
    rt.block_on(seed_catalog(&engine, 0, set.products, ON_HAND));
    place_orders(&rt, &engine, set.orders, set.products);
    assert_eq!(engine.state().order_count() as u64, set.orders);
    engine.close();
}

/// Places `orders` orders of one line (a guest cart each, checked out and left
/// pending) over the first `products` SKUs, many in flight; returns their ids, each
/// acknowledged (durable).
pub fn place_orders(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    orders: u64,
    products: u64,
) -> Vec<OrderId> {
    let shop = engine.clone();
    rt.block_on(for_each_concurrently(orders, PREPARE_IN_FLIGHT, move |i| {
        let engine = shop.clone();
        async move {
            let cart = engine.send(CreateCart::default()).await.expect("create a cart");
            let cart_id = cart.id.to_string();
            let item =
                AddCartItem { cart_id: cart_id.clone(), sku: sku(i % products), quantity: 1 };
            engine.send(item).await.expect("fill a cart");
            engine.send(checkout(cart_id)).await.expect("check out").id
        }
    }))
}
