//! The first open of a data directory after its process was killed with SIGKILL, in a
//! fresh process: RocksDB replays its write-ahead log (the materializer's rows are
//! written unsynced, so the last ones are only there), then the engine loads its
//! tables and replays its own log's tail.
//!
//! Copies the large recovery data set (100k products, 1M orders; built first if it is
//! not cached, as `benches/recovery.rs` does) to a scratch directory beside it. A
//! child process places `ORDERS` more orders there (default 200,000), writes their ids
//! to a file and is SIGKILLed as soon as it reports them acknowledged. A second, fresh
//! child opens the directory and reports the time of `Engine::open`, then checks that
//! every acknowledged order is there, pending with its one line.
//!
//! Run: `cargo run --release -p emporium-bench --example recovery_after_kill [-- ORDERS]`

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use emporium_bench::recovery_data::{config, ensure, place_orders, DATA_SETS};
use emporium_bench::{bench_data_dir, runtime};
use emporium_engine::{Engine, OrderId, OrderStatus};

const ORDERS_DEFAULT: u64 = 200_000;

fn main() {
    emporium_engine::tune_process_memory().expect("memory settings as emporium serve's");
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write") => {
            write(Path::new(&args[2]), Path::new(&args[3]), args[4].parse().expect("orders"))
        }
        Some("open") => open(Path::new(&args[2]), Path::new(&args[3])),
        count => measure(count.map_or(ORDERS_DEFAULT, |c| c.parse().expect("ORDERS: a number"))),
    }
}

/// The parent: copy, write and kill, open, check.
fn measure(orders: u64) {
    let set = &DATA_SETS[1];
    let source = ensure(set);
    let scratch = tempfile::tempdir_in(bench_data_dir()).expect("scratch directory");
    let dir = scratch.path().join("shop");
    let acknowledged_ids = scratch.path().join("acknowledged");
    copy_dir(&source, &dir);
    let exe = std::env::current_exe().expect("own path");

    let mut writer = Command::new(&exe)
        .arg("write")
        .args([&dir, &acknowledged_ids])
        .arg(orders.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut lines = BufReader::new(writer.stdout.take().expect("stdout")).lines();
    let acknowledged: u64 = loop {
        let line = lines.next().expect("the writer reports").expect("read the writer");
        if let Some(count) = line.strip_prefix("acknowledged ") {
            break count.parse().expect("a count");
        }
    };
    writer.kill().expect("SIGKILL the writer");
    writer.wait().expect("reap the writer");
    println!("writer: {acknowledged} orders acknowledged, then SIGKILL");

    let opened = Command::new(&exe)
        .arg("open")
        .args([&dir, &acknowledged_ids])
        .output()
        .expect("run the opener");
    assert!(
        opened.status.success(),
        "the open failed: {}",
        String::from_utf8_lossy(&opened.stderr)
    );
    let report = String::from_utf8(opened.stdout).expect("utf-8");
    print!("{report}");
    let held: u64 = report
        .split_whitespace()
        .skip_while(|w| *w != "orders")
        .nth(1)
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .expect("the opener reports its orders");
    assert_eq!(held, set.orders + acknowledged, "orders lost or made up");
    assert!(report.contains(&format!("all {acknowledged} acknowledged orders")), "{report}");
}

/// Child: places `orders` orders with many in flight, reports them, and waits to be
/// killed.
fn write(dir: &Path, ids: &Path, orders: u64) {
    let mut config = config(dir);
    config.id_seed = None;
    let engine = Engine::open(config).expect("open to write");
    let placed = place_orders(&runtime(), &engine, orders, DATA_SETS[1].products);
    let mut file = std::fs::File::create(ids).expect("create the id list");
    for id in &placed {
        writeln!(file, "{id}").expect("write an id");
    }
    file.sync_all().expect("sync the id list");
    println!("acknowledged {}", placed.len());
    loop {
        std::thread::park();
    }
}

/// Child: the first open after the kill, timed.
fn open(dir: &Path, ids: &Path) {
    let started = Instant::now();
    let engine = Engine::open(config(dir)).expect("open after the kill");
    let elapsed = started.elapsed();
    let state = engine.state();
    println!(
        "first open after SIGKILL: {:.3} s, orders {}, log entries replayed {}",
        elapsed.as_secs_f64(),
        state.order_count(),
        engine.stats().recovery_replayed_entries.load(std::sync::atomic::Ordering::Relaxed)
    );
    let ids = std::fs::read_to_string(ids).expect("read the id list");
    let mut checked = 0;
    for line in ids.lines() {
        let id = OrderId::parse(line).expect("an order id");
        let order = state.order(&id).unwrap_or_else(|| panic!("acknowledged order {id} is lost"));
        assert_eq!(order.status, OrderStatus::PendingPayment, "{id}");
        assert_eq!(order.lines.len(), 1, "{id}");
        checked += 1;
    }
    println!("all {checked} acknowledged orders are there, pending");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the data set") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("its type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy a file");
        }
    }
}
