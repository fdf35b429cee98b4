//! Durable checkouts per second through the real runtime: `Engine::open` on a temporary
//! directory (RocksDB), the sequencer, and synced group commit.
//!
//! A checkout is answered only once the batch holding it is fsynced, so one submitter
//! gets at most one checkout per sync. Group commit is the engine's answer: while one
//! batch syncs the next accumulates, and throughput should grow with the number of
//! concurrent submitters. This measures 1, 16 and 256 submitters (tokio tasks calling
//! `engine.send`), each iteration a batch of checkouts of prepared one-line carts
//! spread evenly over the submitters. Carts and stock are prepared outside the timing.
//! After each submitter count it prints the mean commit-group size and sync time over
//! the measured intervals, and the process's CPU per checkout with the cores it kept
//! busy (every thread's time: the engine's, RocksDB's and the submitters'), which says
//! whether a figure is bound by the CPU (near two cores on the two-core machines these
//! run on) or by the waits of the commit cycle, beside the cores' worth of time the
//! host took from the machine (steal: a figure that lost much was slowed by the host's
//! other guests, not by the engine); and the committer's time per group on a
//! core and waiting, runnable, for one (the kernel's `schedstat`): a synced write much
//! longer than the disk's sync with a long wait is the committer queued behind the
//! other threads, not the disk. `baseline_fdatasync_8k` measures the disk's own sync
//! (an 8 kB overwrite plus `fdatasync`, as `pg_test_fsync` does) in the same run, since
//! that is what durable throughput is to be compared with. Target: at least 50k durable
//! checkouts/s with 256 submitters (one fdatasync takes about 85 µs on the reference
//! machine).
//!
//! Run: `cargo bench -p emporium-bench --bench durable` (add `-- --quick` for a short
//! run).

use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use emporium_bench::{
    checkout, prepare_carts, runtime, seed_catalog, CommitCounters, SyncProbe, STOCK_ON_HAND,
};
use emporium_engine::{Engine, EngineConfig};

/// Products (one SKU each) the carts draw from.
const CATALOG_PRODUCTS: u64 = 10_000;
/// Concurrent submitters measured.
const SUBMITTERS: [usize; 3] = [1, 16, 256];

/// Checkouts in one measured iteration: enough that every submitter sends several in a
/// row, so the measurement is not dominated by ramp-up and tail.
fn checkouts_per_iteration(submitters: usize) -> u64 {
    (submitters as u64 * 16).max(512)
}

/// An engine on a fresh temporary directory, its catalog created and stocked.
fn stocked_engine(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, Engine) {
    let dir =
        tempfile::Builder::new().prefix("emporium-bench-durable-").tempdir().expect("temp dir");
    let engine = open_engine(dir.path());
    rt.block_on(seed_catalog(&engine, 0, CATALOG_PRODUCTS, STOCK_ON_HAND));
    (dir, engine)
}

fn open_engine(dir: &std::path::Path) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.id_seed = Some(1);
    // No reservation may expire during the run: expiries would be extra commands in the
    // measured groups.
    config.limits.reservation_ttl_ms = 24 * 60 * 60 * 1000;
    Engine::open(config).expect("open the engine")
}

/// Checks out every cart, the carts dealt round robin to `submitters` tasks that each
/// send one checkout at a time.
async fn checkout_all(engine: &Engine, carts: Vec<String>, submitters: usize) {
    let mut queues = vec![Vec::new(); submitters];
    for (i, cart) in carts.into_iter().enumerate() {
        queues[i % submitters].push(cart);
    }
    let tasks: Vec<_> = queues
        .into_iter()
        .map(|queue| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for cart_id in queue {
                    engine.send(checkout(cart_id)).await.expect("a durable checkout");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a submitter panicked");
    }
}

fn durable_checkouts(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("durable_checkout");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    // The baseline, in the same run: what one fdatasync costs on this disk right now.
    SyncProbe::bench_baseline(&mut group);
    for submitters in SUBMITTERS {
        // Opened and stocked only if this submitter count is selected.
        let mut opened: Option<(tempfile::TempDir, Engine)> = None;
        let per_iteration = checkouts_per_iteration(submitters);
        let mut next_sku = 0u64;
        let mut measured = CommitCounters::default();
        group.throughput(Throughput::Elements(per_iteration));
        group.bench_function(BenchmarkId::new("submitters", submitters), |b| {
            let (_, engine) = opened.get_or_insert_with(|| stocked_engine(&rt));
            b.iter_custom(|iters| {
                let count = iters * per_iteration;
                let first = next_sku;
                next_sku += count;
                let carts = rt.block_on(prepare_carts(engine, count, move |i| {
                    (first + i) % CATALOG_PRODUCTS
                }));
                let before = CommitCounters::read(engine.stats());
                let started = Instant::now();
                rt.block_on(checkout_all(engine, carts, submitters));
                let elapsed = started.elapsed();
                measured.add(CommitCounters::read(engine.stats()).over(before, elapsed));
                elapsed
            })
        });
        if let Some((_dir, engine)) = opened {
            let (committer_running, committer_waiting) = measured.committer_micros_per_group();
            eprintln!(
                "durable_checkout/submitters/{submitters}: {} checkouts in {} groups, mean group \
                 {:.1} commands, mean synced write {:.0} µs, {:.0} log bytes per checkout, \
                 {:.1} µs of the process's CPU per checkout ({:.2} cores busy, {:.2} taken by \
                 the host); per group the committer ran {:.0} µs and waited {:.0} µs for a core",
                measured.commands,
                measured.groups,
                measured.mean_group_commands(),
                measured.mean_sync_micros(),
                measured.mean_log_entry_bytes(),
                measured.cpu_micros_per_command(),
                measured.cores_busy(),
                measured.cores_stolen(),
                committer_running,
                committer_waiting,
            );
            engine.close();
        }
    }
    group.finish();
}

criterion_group!(benches, durable_checkouts);
emporium_bench::bench_main!(benches);
