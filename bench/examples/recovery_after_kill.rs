//! The first open of a data directory after its process was killed with SIGKILL, in a
//! fresh process: RocksDB replays its write-ahead log (the materializer's rows are
//! written unsynced, so the last ones are only there), then the engine loads its
//! tables and replays its own log's tail.
//!
//! Copies the large recovery data set (100k products, 1M orders; built first if it is
//! not cached, as `benches/recovery.rs` does) to a scratch directory beside it. A
//! child process places `ORDERS` more orders there (default 200,000) and is SIGKILLed
//! as soon as it reports them acknowledged. A second, fresh child opens the directory
//! and reports the time of `Engine::open`; every acknowledged order must be there.
//!
//! Run: `cargo run --release -p emporium-bench --example recovery_after_kill [-- ORDERS]`

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use emporium_bench::recovery_data::{config, ensure, place_orders, DATA_SETS};
use emporium_bench::{bench_data_dir, runtime};
use emporium_engine::Engine;

const ORDERS_DEFAULT: u64 = 200_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write") => write(Path::new(&args[2]), args[3].parse().expect("orders")),
        Some("open") => open(Path::new(&args[2])),
        count => measure(count.map_or(ORDERS_DEFAULT, |c| c.parse().expect("ORDERS: a number"))),
    }
}

/// The parent: copy, write and kill, open, check.
fn measure(orders: u64) {
    let set = &DATA_SETS[1];
    let source = ensure(set);
    let scratch = tempfile::tempdir_in(bench_data_dir()).expect("scratch directory");
    let dir = scratch.path().join("shop");
    copy_dir(&source, &dir);
    let exe = std::env::current_exe().expect("own path");

    let mut writer = Command::new(&exe)
        .args(["write", dir.to_str().expect("path"), &orders.to_string()])
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
        .args(["open", dir.to_str().expect("path")])
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
        .and_then(|n| n.parse().ok())
        .expect("the opener reports its orders");
    assert_eq!(held, set.orders + acknowledged, "an acknowledged order is missing");
}

/// Child: places `orders` orders with many in flight, reports them, and waits to be
/// killed.
fn write(dir: &Path, orders: u64) {
    let mut config = config(dir);
    config.id_seed = None;
    let engine = Engine::open(config).expect("open to write");
    place_orders(&runtime(), &engine, orders, DATA_SETS[1].products);
    println!("acknowledged {orders}");
    loop {
        std::thread::park();
    }
}

/// Child: the first open after the kill, timed.
fn open(dir: &Path) {
    let started = Instant::now();
    let engine = Engine::open(config(dir)).expect("open after the kill");
    let elapsed = started.elapsed();
    println!(
        "first open after SIGKILL: {:.3} s, orders {}",
        elapsed.as_secs_f64(),
        engine.state().order_count()
    );
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
