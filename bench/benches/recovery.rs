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
//! The first open after a SIGKILL, in a fresh process, is measured by
//! `examples/recovery_after_kill.rs` on the large data set.
//!
//! Run: `cargo bench -p emporium-bench --bench recovery` (both), or
//! `cargo bench -p emporium-bench --bench recovery -- small` (the quick one only).

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use emporium_bench::recovery_data::{config, ensure, DATA_SETS};
use emporium_engine::Engine;

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
emporium_bench::bench_main!(benches);
