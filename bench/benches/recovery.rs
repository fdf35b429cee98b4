//! Time to `Engine::open` a data directory that holds a sizeable shop.
//!
//! Recovery is a scan of the entity column families into memory plus a replay of the
//! log tail the materializer had not written yet (bounded by its interval; none after a
//! clean close), so it grows with the number of rows, and it is how long a restarted
//! node is unavailable.
//! Two data sets: 100k products and 1M orders (`large`), and 10k products and 100k
//! orders (`small`, for a quick run). Each order is a guest cart of one line checked
//! out and left pending (so every order is also in the expiry index, and the
//! reservation cross-check at open sees all of them). The data sets are built once
//! through the engine API, with many commands in flight so group commit makes it quick,
//! and cached under `<target>/bench-data/recovery-v2/`; delete that folder to rebuild.
//! The page cache is warm after the first iteration, so these are warm-cache times.
//!
//! Run: `cargo bench -p emporium-bench --bench recovery` (both), or
//! `cargo bench -p emporium-bench --bench recovery -- small` (the quick one only).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use emporium_bench::{
    bench_data_dir, checkout, for_each_concurrently, runtime, seed_catalog, sku, PREPARE_IN_FLIGHT,
    T0,
};
use emporium_engine::{AddCartItem, CreateCart, Engine, EngineConfig, ManualClock};

/// Units given to every SKU: more than its share of the orders.
const ON_HAND: i64 = 1_000_000;

struct DataSet {
    name: &'static str,
    products: u64,
    orders: u64,
    measurement: Duration,
}

const DATA_SETS: [DataSet; 2] = [
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
fn config(dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.clock = Arc::new(ManualClock::new(T0));
    config.id_seed = Some(42);
    config
}

/// The data set's directory, built first if it is not cached. A build goes to a
/// `.building` folder that is renamed when complete, so an interrupted build is never
/// taken for a finished one.
fn ensure(set: &DataSet) -> PathBuf {
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

fn build(dir: &Path, set: &DataSet) {
    let rt = runtime();
    let engine = Engine::open(config(dir)).expect("open the engine to build");
    rt.block_on(seed_catalog(&engine, 0, set.products, ON_HAND));
    let products = set.products;
    let shop = engine.clone();
    rt.block_on(for_each_concurrently(set.orders, PREPARE_IN_FLIGHT, move |i| {
        let engine = shop.clone();
        async move {
            let cart = engine.send(CreateCart::default()).await.expect("create a cart");
            let cart_id = cart.id.to_string();
            let item =
                AddCartItem { cart_id: cart_id.clone(), sku: sku(i % products), quantity: 1 };
            engine.send(item).await.expect("fill a cart");
            engine.send(checkout(cart_id)).await.expect("check out");
        }
    }));
    assert_eq!(engine.state().order_count() as u64, set.orders);
    engine.close();
}

fn recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    for set in &DATA_SETS {
        // Build only what the filter selects: the large set takes minutes.
        let mut dir = None;
        group.measurement_time(set.measurement);
        group.throughput(Throughput::Elements(set.products + set.orders));
        group.bench_function(set.name, |b| {
            let dir = dir.get_or_insert_with(|| ensure(set)).clone();
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let engine = Engine::open(config(&dir)).expect("recover the data set");
                    elapsed += started.elapsed();
                    let state = engine.state();
                    assert_eq!(
                        (state.product_count() as u64, state.order_count() as u64),
                        (set.products, set.orders),
                        "the data set in {} is not what it should be; delete it to rebuild",
                        dir.display()
                    );
                    engine.close();
                }
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
