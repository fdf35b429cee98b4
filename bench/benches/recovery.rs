//! Time to `Engine::open` a data directory that holds a sizeable shop, in a fresh
//! process each time, as a restart opens it.
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
//!
//! Each open runs in a child process (this binary, told by [`OPEN_ENV`] which
//! directory to open), which reports the time `Engine::open` took, checks what it
//! loaded, closes the engine and exits; only the open is timed. The page cache is warm
//! after the first open, so these are warm-cache times. Opening again and again in one
//! process measures something no restart does: the previous engine's memory, freed by
//! threads that have exited, sits in mimalloc's abandoned segments, and the next
//! open's allocations walk them (BENCHMARKS.md, section 3). The first open after a
//! SIGKILL, which also replays a log tail, is measured by
//! `examples/recovery_after_kill.rs` on the large data set.
//!
//! Run: `cargo bench -p emporium-bench --bench recovery` (both), or
//! `cargo bench -p emporium-bench --bench recovery -- small` (the quick one only).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use emporium_bench::recovery_data::{config, ensure, DataSet, DATA_SETS};
use emporium_engine::Engine;

/// Set in a child's environment to the name of the data set it opens; the directory
/// is its first argument.
const OPEN_ENV: &str = "EMPORIUM_BENCH_RECOVERY_OPEN";

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
            b.iter_custom(|iters| (0..iters).map(|_| open_in_child(set, &dir)).sum())
        });
    }
    group.finish();
}

/// Opens `dir` in a fresh process and returns the time its `Engine::open` took.
fn open_in_child(set: &DataSet, dir: &Path) -> Duration {
    let exe = std::env::current_exe().expect("this benchmark's own path");
    let output = Command::new(exe)
        .arg(dir)
        .env(OPEN_ENV, set.name)
        .output()
        .expect("start a process to open the data set");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the open of {} failed ({}): {stdout}{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let nanos = stdout
        .lines()
        .find_map(|line| line.strip_prefix("open_nanos "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the child reported no open time: {stdout}"));
    Duration::from_nanos(nanos)
}

/// The child: opens the directory, reports how long that took, checks what it holds.
fn child(set_name: &str, dir: &Path) {
    let set = DATA_SETS.iter().find(|s| s.name == set_name).expect("a known data set");
    let started = Instant::now();
    let engine = Engine::open(config(dir)).expect("recover the data set");
    let elapsed = started.elapsed();
    let state = engine.state();
    assert_eq!(
        (state.product_count() as u64, state.order_count() as u64),
        (set.products, set.orders),
        "the data set in {} is not what it should be; delete it to rebuild",
        dir.display()
    );
    engine.close();
    println!("open_nanos {}", elapsed.as_nanos());
}

criterion_group!(benches, recovery);

fn main() {
    emporium_engine::tune_process_memory().expect("memory settings as emporium serve's");
    if let Ok(set) = std::env::var(OPEN_ENV) {
        let dir = std::env::args_os().nth(1).expect("the data directory to open");
        return child(&set, Path::new(&dir));
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
