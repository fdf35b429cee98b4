//! Fixtures shared by the Emporium benchmarks: catalog and order inputs, the runtime
//! that drives concurrent submitters, engine counters, and where cached data sets live.
//!
//! Everything here prepares work outside the measured region; nothing here is measured
//! itself. Failures panic: a benchmark whose setup fails has nothing to report.
//!
//! The HTTP load generator (binary `emporium-load`) lives in [`loadgen`].

pub mod loadgen;
pub mod recovery_data;

/// Every benchmark and the load generator allocate with mimalloc, as `emporium serve`
/// does: the engine's per-command cost includes its allocations, and measuring them
/// with another allocator would measure a configuration nobody runs.
#[global_allocator]
static GLOBAL: emporium_engine::Allocator = emporium_engine::Allocator;

/// `criterion_main!` with the process set up as `emporium serve` sets up its own
/// ([`emporium_engine::tune_process_memory`]) before the first benchmark runs.
#[macro_export]
macro_rules! bench_main {
    ($($group:path),+ $(,)?) => {
        fn main() {
            emporium_engine::tune_process_memory().expect("memory settings as emporium serve's");
            $($group();)+
            criterion::Criterion::default().configure_from_args().final_summary();
        }
    };
}

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use emporium_engine::{
    AddCartItem, Checkout, CreateCart, CreateProduct, Engine, EngineStats, MoneyInput,
    ProductStatus, SetStock, TimestampMs, VariantInput, COMMITTER_THREAD,
};

/// A fixed "now" for the pure-domain benchmarks and the recovery data set:
/// 2026-01-01T00:00:00Z.
pub const T0: TimestampMs = 1_767_225_600_000;

/// Units on hand given to every benchmark SKU: enough that no run sells out.
pub const STOCK_ON_HAND: i64 = 500_000_000;

/// Commands in flight at once while preparing data (not while measuring).
pub const PREPARE_IN_FLIGHT: usize = 1024;

/// The SKU of benchmark product `n`.
pub fn sku(n: u64) -> String {
    format!("BENCH-{n:08}")
}

/// An active product with one variant, SKU [`sku`]`(n)`, priced in USD.
pub fn product(n: u64) -> CreateProduct {
    CreateProduct {
        handle: None,
        title: format!("Bench Product {n}"),
        description: "A product made by the benchmark fixtures.".into(),
        brand: "Acme".into(),
        category_ids: vec![],
        attributes: BTreeMap::new(),
        status: Some(ProductStatus::Active),
        variants: vec![VariantInput {
            sku: sku(n),
            title: String::new(),
            options: BTreeMap::new(),
            price: MoneyInput { amount: 1000 + (n % 9000) as i64, currency: "USD".into() },
        }],
    }
}

/// Sets [`sku`]`(n)` to `on_hand` units.
pub fn set_stock(n: u64, on_hand: i64) -> SetStock {
    SetStock { sku: sku(n), on_hand, reason: "stock count".into(), expected_version: None }
}

/// A guest checkout of `cart_id`.
pub fn checkout(cart_id: String) -> Checkout {
    Checkout { cart_id, email: Some("buyer@example.com".into()), ..Default::default() }
}

/// A multi-thread tokio runtime with one worker per core, for concurrent submitters.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().build().expect("tokio runtime")
}

/// Runs `job(i)` for every `i` in `0..count`, at most `in_flight` at a time (each of
/// `in_flight` tasks takes every `in_flight`-th index), and returns the results in
/// index order.
pub async fn for_each_concurrently<T, F, Fut>(count: u64, in_flight: usize, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let tasks = (in_flight as u64).clamp(1, count.max(1));
    let handles: Vec<_> = (0..tasks)
        .map(|first| {
            let job = job.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut i = first;
                while i < count {
                    out.push((i, job(i).await));
                    i += tasks;
                }
                out
            })
        })
        .collect();
    let mut results = Vec::with_capacity(count as usize);
    for handle in handles {
        results.extend(handle.await.expect("a fixture task panicked"));
    }
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, value)| value).collect()
}

/// Creates products `first..first + count`, each with [`STOCK_ON_HAND`] units, through
/// the engine (durably, with many commands in flight so group commit keeps it quick).
pub async fn seed_catalog(engine: &Engine, first: u64, count: u64, on_hand: i64) {
    let engine = engine.clone();
    for_each_concurrently(count, PREPARE_IN_FLIGHT, move |i| {
        let engine = engine.clone();
        async move {
            engine.send(product(first + i)).await.expect("create a bench product");
            engine.send(set_stock(first + i, on_hand)).await.expect("stock a bench product");
        }
    })
    .await;
}

/// Opens `count` guest carts, cart `i` holding one unit of [`sku`]`(sku_of(i))`, and
/// returns their ids.
pub async fn prepare_carts(
    engine: &Engine,
    count: u64,
    sku_of: impl Fn(u64) -> u64 + Clone + Send + Sync + 'static,
) -> Vec<String> {
    let engine = engine.clone();
    for_each_concurrently(count, PREPARE_IN_FLIGHT, move |i| {
        let engine = engine.clone();
        let sku = sku(sku_of(i));
        async move {
            let cart = engine.send(CreateCart::default()).await.expect("create a bench cart");
            let cart_id = cart.id.to_string();
            let item = AddCartItem { cart_id: cart_id.clone(), sku, quantity: 1 };
            engine.send(item).await.expect("fill a bench cart");
            cart_id
        }
    })
    .await
}

/// The commit counters at one instant, to take deltas over a measured interval.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitCounters {
    /// Commands acknowledged after their group was synced.
    pub commands: u64,
    /// Groups written.
    pub groups: u64,
    /// Nanoseconds spent in synced writes.
    pub sync_nanos: u64,
    /// Bytes of log payload written (all that the synced writes carry).
    pub log_bytes: u64,
    /// Log entries written.
    pub log_entries: u64,
    /// CPU time of the whole process (every thread: the engine's, RocksDB's, the
    /// callers'), in nanoseconds; 0 where the clock cannot be read.
    pub cpu_nanos: u64,
    /// Wall-clock time, in nanoseconds, over which the deltas were taken (0 for a
    /// reading at one instant).
    pub wall_nanos: u64,
    /// The committer thread's time on a core and its time runnable but waiting for
    /// one, in nanoseconds (the kernel's `schedstat`); 0 where it cannot be read.
    pub committer: ThreadSched,
    /// The host's steal time over every CPU of the machine, in nanoseconds
    /// ([`loadgen::cpu::host_steal_nanos`]): time this machine's work waited while the
    /// host ran other guests.
    pub steal_nanos: u64,
}

/// A thread's scheduling times, in nanoseconds, from `/proc/self/task/<tid>/schedstat`:
/// on a core, and runnable but waiting in a run queue for one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadSched {
    /// Time on a core.
    pub running_nanos: u64,
    /// Time runnable and waiting for a core.
    pub waiting_nanos: u64,
}

impl ThreadSched {
    /// The times of the process's threads named `name` (as the kernel keeps a thread's
    /// name: its first 15 bytes), summed; zero when there is none or `/proc` cannot be
    /// read.
    pub fn of_threads_named(name: &str) -> ThreadSched {
        let comm = &name.as_bytes()[..name.len().min(15)];
        let mut total = ThreadSched::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return total };
        for task in tasks.flatten() {
            let path = task.path();
            let named = std::fs::read(path.join("comm"))
                .is_ok_and(|read| read.strip_suffix(b"\n").unwrap_or(&read) == comm);
            if !named {
                continue;
            }
            let Ok(line) = std::fs::read_to_string(path.join("schedstat")) else { continue };
            let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0));
            total.running_nanos += fields.next().unwrap_or(0);
            total.waiting_nanos += fields.next().unwrap_or(0);
        }
        total
    }

    fn since(self, earlier: ThreadSched) -> ThreadSched {
        ThreadSched {
            running_nanos: self.running_nanos.saturating_sub(earlier.running_nanos),
            waiting_nanos: self.waiting_nanos.saturating_sub(earlier.waiting_nanos),
        }
    }
}

impl CommitCounters {
    /// Reads the engine's counters.
    pub fn read(stats: &EngineStats) -> CommitCounters {
        CommitCounters {
            commands: stats.commands_committed.load(Ordering::Relaxed),
            groups: stats.groups_committed.load(Ordering::Relaxed),
            sync_nanos: stats.sync_nanos_total.load(Ordering::Relaxed),
            log_bytes: stats.log_bytes_total.load(Ordering::Relaxed),
            log_entries: stats.log_entries_total.load(Ordering::Relaxed),
            cpu_nanos: process_cpu_nanos(),
            wall_nanos: 0,
            committer: ThreadSched::of_threads_named(COMMITTER_THREAD),
            steal_nanos: loadgen::cpu::host_steal_nanos(),
        }
    }

    /// What happened between `earlier` and `self`, `elapsed` apart.
    pub fn over(self, earlier: CommitCounters, elapsed: Duration) -> CommitCounters {
        CommitCounters { wall_nanos: elapsed.as_nanos() as u64, ..self.since(earlier) }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: CommitCounters) -> CommitCounters {
        CommitCounters {
            commands: self.commands - earlier.commands,
            groups: self.groups - earlier.groups,
            sync_nanos: self.sync_nanos - earlier.sync_nanos,
            log_bytes: self.log_bytes - earlier.log_bytes,
            log_entries: self.log_entries - earlier.log_entries,
            cpu_nanos: self.cpu_nanos.saturating_sub(earlier.cpu_nanos),
            wall_nanos: self.wall_nanos.saturating_sub(earlier.wall_nanos),
            committer: self.committer.since(earlier.committer),
            steal_nanos: self.steal_nanos.saturating_sub(earlier.steal_nanos),
        }
    }

    /// Adds another interval's deltas.
    pub fn add(&mut self, other: CommitCounters) {
        self.commands += other.commands;
        self.groups += other.groups;
        self.sync_nanos += other.sync_nanos;
        self.log_bytes += other.log_bytes;
        self.log_entries += other.log_entries;
        self.cpu_nanos += other.cpu_nanos;
        self.wall_nanos += other.wall_nanos;
        self.committer.running_nanos += other.committer.running_nanos;
        self.committer.waiting_nanos += other.committer.waiting_nanos;
        self.steal_nanos += other.steal_nanos;
    }

    /// Log payload bytes per log entry.
    pub fn mean_log_entry_bytes(&self) -> f64 {
        self.log_bytes as f64 / self.log_entries.max(1) as f64
    }

    /// Commands per commit group.
    pub fn mean_group_commands(&self) -> f64 {
        self.commands as f64 / self.groups.max(1) as f64
    }

    /// Microseconds per synced write.
    pub fn mean_sync_micros(&self) -> f64 {
        self.sync_nanos as f64 / 1000.0 / self.groups.max(1) as f64
    }

    /// Microseconds of the process's CPU per command acknowledged.
    pub fn cpu_micros_per_command(&self) -> f64 {
        self.cpu_nanos as f64 / 1000.0 / self.commands.max(1) as f64
    }

    /// Cores the process kept busy on average (its CPU time over the wall-clock time).
    pub fn cores_busy(&self) -> f64 {
        self.cpu_nanos as f64 / self.wall_nanos.max(1) as f64
    }

    /// Cores' worth of time the host took from the machine on average (its steal time
    /// over the wall-clock time).
    pub fn cores_stolen(&self) -> f64 {
        self.steal_nanos as f64 / self.wall_nanos.max(1) as f64
    }

    /// Microseconds the committer spent per commit group on a core, and runnable but
    /// waiting for one: what a group's cycle takes beyond the disk's sync when the
    /// cores are busy.
    pub fn committer_micros_per_group(&self) -> (f64, f64) {
        let per_group = |nanos: u64| nanos as f64 / 1000.0 / self.groups.max(1) as f64;
        (per_group(self.committer.running_nanos), per_group(self.committer.waiting_nanos))
    }
}

/// CPU time the whole process has used so far, every thread's, in nanoseconds
/// (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`); 0 where the clock cannot be read.
pub fn process_cpu_nanos() -> u64 {
    cpu_clock_nanos(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or(0)
}

/// A CPU-time clock's reading in nanoseconds (`clock_gettime(clock)`), if it can be read.
fn cpu_clock_nanos(clock: libc::clockid_t) -> Option<u64> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` writes one `timespec` through the pointer it is given,
    // which points to a live local.
    let read = unsafe { libc::clock_gettime(clock, &mut now) };
    (read == 0).then(|| now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

/// Where benchmarks keep data sets worth reusing between runs: `bench-data/` in the
/// cargo target directory (found from the benchmark executable's path,
/// `<target>/<profile>/deps/<bench>`), so `cargo clean` removes them.
pub fn bench_data_dir() -> PathBuf {
    let from_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .filter(|target| target.join("CACHEDIR.TAG").exists());
    let target = from_exe
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("bench-data")
}

/// The disk's own cost of durability, measured beside the engine in the same run: an
/// 8 kB write over the start of a preallocated file followed by `fdatasync`, the way
/// `pg_test_fsync` measures it. One such sync per checkout is what a system without
/// group commit can at best do with one client.
pub struct SyncProbe {
    file: std::fs::File,
    _dir: tempfile::TempDir,
}

impl SyncProbe {
    /// Bytes written before each sync.
    pub const WRITE_BYTES: usize = 8192;

    /// A probe file in a new temporary directory (on the same file system as the
    /// benchmarks' data directories).
    pub fn new() -> SyncProbe {
        let dir =
            tempfile::Builder::new().prefix("emporium-bench-sync-").tempdir().expect("temp dir");
        let file = std::fs::File::create(dir.path().join("probe")).expect("create the probe file");
        use std::os::unix::fs::FileExt;
        file.write_all_at(&[0u8; SyncProbe::WRITE_BYTES], 0).expect("preallocate the probe");
        file.sync_all().expect("sync the probe");
        SyncProbe { file, _dir: dir }
    }

    /// One write and one `fdatasync`.
    pub fn sync_once(&mut self) {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&[1u8; SyncProbe::WRITE_BYTES], 0).expect("write the probe");
        self.file.sync_data().expect("fdatasync the probe");
    }

    /// Adds `baseline_fdatasync_8k` to `group`: one probe sync per element, the disk's
    /// cost measured in the same run as what the group compares with it.
    pub fn bench_baseline(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ) {
        group.throughput(criterion::Throughput::Elements(1));
        group.bench_function("baseline_fdatasync_8k", |b| {
            let mut probe = SyncProbe::new();
            b.iter(|| probe.sync_once())
        });
    }
}

impl Default for SyncProbe {
    fn default() -> SyncProbe {
        SyncProbe::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spins until the calling thread's own CPU clock has run `nanos`, however busy the
    /// machine is (spinning for that long in wall-clock time would get less CPU when
    /// other processes hold the cores).
    fn spin_cpu(nanos: u64) -> u64 {
        let thread_cpu_nanos =
            || cpu_clock_nanos(libc::CLOCK_THREAD_CPUTIME_ID).expect("the thread's CPU clock");
        let started = thread_cpu_nanos();
        let mut x = 0u64;
        while thread_cpu_nanos() - started < nanos {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        x
    }

    /// The process's CPU clock counts work done on any of its threads, and the
    /// counters' deltas carry it with the interval's length.
    #[test]
    fn commit_counters_carry_the_cpu_spent_over_an_interval() {
        // Each thread spins until its own CPU clock has run 30 ms.
        let spin = || spin_cpu(30_000_000);
        let before = CommitCounters { cpu_nanos: process_cpu_nanos(), ..Default::default() };
        let other = std::thread::spawn(spin);
        spin();
        other.join().expect("the spinning thread");
        let after = CommitCounters { cpu_nanos: process_cpu_nanos(), ..Default::default() };
        let interval = after.over(before, Duration::from_millis(30));
        // Two threads spun 30 ms of CPU each: at least that much for the process.
        assert!(interval.cpu_nanos >= 30_000_000, "{} ns", interval.cpu_nanos);
        assert_eq!(interval.wall_nanos, 30_000_000);
        assert!(interval.cores_busy() >= 1.0, "{}", interval.cores_busy());
        let mut total = CommitCounters { commands: 10, ..interval };
        total.add(CommitCounters { commands: 10, ..interval });
        assert_eq!(total.wall_nanos, 60_000_000);
        // The sums' quotient, in floating point: equal to the interval's own within
        // rounding.
        let per_command = interval.cpu_nanos as f64 / 10_000.0;
        assert!((total.cpu_micros_per_command() - per_command).abs() < 1e-9 * per_command);
    }

    /// A thread's scheduling times are found by its name, as the kernel truncates it,
    /// and count its time on a core.
    #[test]
    fn a_named_threads_time_on_a_core_is_read() {
        let name = "emporium-bench-sched-probe";
        assert_eq!(ThreadSched::of_threads_named(name), ThreadSched::default());
        let (spun, done) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn_scoped(scope, || {
                    spin_cpu(20_000_000);
                    spun.wait();
                    done.wait();
                })
                .expect("spawn the probe");
            spun.wait();
            let probe = ThreadSched::of_threads_named(name);
            let other = ThreadSched::of_threads_named("emporium-other-probe");
            done.wait();
            assert!(probe.running_nanos >= 20_000_000, "{probe:?}");
            assert_eq!(other, ThreadSched::default());
        });
    }
}
