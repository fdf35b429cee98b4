//! Crash safety: the engine runs in a child process under concurrent checkout,
//! flash-sale purchase, payment and cancellation load and is SIGKILLed at random moments. After each kill the
//! directory is reopened and every acknowledged command must be there, nothing
//! half-applied, the stock invariants must hold and the log's LSNs must be contiguous.
//! The child's materializer writes rows and trims the log every few milliseconds, so
//! the kills land inside those too; across the run, recovery must have replayed a log
//! tail and found a trimmed log, or the test proved less than it says.
//!
//! `EMPORIUM_CRASH_CYCLES` sets the number of kills (default 20) and
//! `EMPORIUM_CRASH_SEED` replays a run; the seed is printed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use emporium_engine::*;
use emporium_tests::{
    check_flash_sales, check_invariants, config, units_in_orders, ManualClockExt, CRASH_SALE_SKU,
    CRASH_SKUS,
};
use rand::{Rng, SeedableRng};

/// What the child acknowledged about one order.
#[derive(Debug, Default)]
struct Acked {
    lines: String,
    paid: bool,
    cancelled: bool,
}

#[test]
fn acknowledged_commands_survive_sigkill() {
    let cycles: usize = env_or("EMPORIUM_CRASH_CYCLES", 20);
    let seed: u64 = env_or("EMPORIUM_CRASH_SEED", rand::random());
    eprintln!("crash test: {cycles} cycles, EMPORIUM_CRASH_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    crash_cycles(dir.path(), cycles, seed, &mut |_| String::new());
}

/// Runs `cycles` kills of the crash child on `dir`: after each SIGKILL, `after_kill`
/// does what else the crash did (a power cut loses what was not synced) and describes
/// it, then the directory is reopened and checked against every acknowledgement so far.
pub(crate) fn crash_cycles(
    dir: &std::path::Path,
    cycles: usize,
    seed: u64,
    after_kill: &mut dyn FnMut(&mut rand::rngs::StdRng) -> String,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut acked = Acks::default();
    let mut previous_lsn = 0;
    let (mut replayed_total, mut trimmed_seen) = (0, false);
    for cycle in 0..cycles {
        let kill_after = Duration::from_millis(rng.random_range(5..250));
        let lines = run_and_kill(dir, rng.random(), kill_after);
        let new_acks = record(&mut acked, &lines);
        let crash = after_kill(&mut rng);
        let Reopened { lsn, replayed, first_log_lsn } = verify(dir, &acked, cycle);
        replayed_total += replayed;
        trimmed_seen |= first_log_lsn > 1;
        assert!(
            lsn >= previous_lsn,
            "cycle {cycle}: the log went back from {previous_lsn} to {lsn}"
        );
        eprintln!(
            "cycle {cycle}: killed after {kill_after:?}{crash}, {new_acks} acks, log at LSN \
             {lsn}, {replayed} entries replayed, log from {first_log_lsn}"
        );
        previous_lsn = lsn;
    }
    assert!(replayed_total > 0, "no kill left a log tail to replay");
    assert!(trimmed_seen, "no kill found a trimmed log");
    assert!(
        acked.orders.len() > cycles && acked.restocked > 0,
        "the load acknowledged too little to prove anything: {} orders, {} restocked",
        acked.orders.len(),
        acked.restocked
    );
}

pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs the child until it is ready plus `kill_after`, SIGKILLs it, and returns every
/// complete line it printed.
fn run_and_kill(dir: &std::path::Path, seed: u64, kill_after: Duration) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-child"))
        .arg(dir)
        .arg(seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start crash-child");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut buffer = Vec::new();
        // A line cut by the kill has no newline and was never fully said: dropped.
        while reader.read_until(b'\n', &mut buffer).unwrap_or(0) > 0 {
            if buffer.ends_with(b"\n") {
                let line = String::from_utf8_lossy(&buffer).trim_end().to_string();
                if line == "READY" {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
            buffer.clear();
        }
        lines
    });
    // The child signals readiness after opening (and, first time, stocking) the engine;
    // if it dies first, the channel closes and the test fails below.
    let ready = ready_rx.recv_timeout(Duration::from_secs(60));
    // The kill lands at a random point of the load; the bound keeps the test short.
    let deadline = std::time::Instant::now() + kill_after;
    while ready.is_ok() && std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("crash-child exited on its own: {status}");
        }
        std::thread::yield_now();
    }
    child.kill().expect("SIGKILL crash-child");
    child.wait().unwrap();
    let lines = reader.join().unwrap();
    assert!(ready.is_ok(), "crash-child never became ready; it printed {lines:?}");
    lines
}

/// Everything the child acknowledged, across cycles.
#[derive(Debug, Default)]
struct Acks {
    orders: BTreeMap<String, Acked>,
    /// Cart id → its acknowledged lines (`SKU:units`).
    carts: BTreeMap<String, Vec<String>>,
    /// Units restocked by acknowledged adjustments of the first SKU.
    restocked: i64,
    /// Units of adjustments sent but not acknowledged (each may or may not be durable).
    restocked_maybe: i64,
}

fn record(acks: &mut Acks, lines: &[String]) -> usize {
    let mut count = 0;
    for line in lines {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["TRY", "adjust", delta] => acks.restocked_maybe += delta.parse::<i64>().unwrap(),
            ["ACK", "adjust", delta] => {
                let delta: i64 = delta.parse().unwrap();
                acks.restocked += delta;
                acks.restocked_maybe -= delta;
            }
            ["ACK", "cart", id] => {
                acks.carts.insert(id.to_string(), Vec::new());
            }
            ["ACK", "item", id, line] => acks.carts.get_mut(*id).unwrap().push(line.to_string()),
            ["ACK", "checkout", id, lines] => {
                acks.orders.entry(id.to_string()).or_default().lines = lines.to_string()
            }
            ["ACK", "pay", id] => acks.orders.entry(id.to_string()).or_default().paid = true,
            ["ACK", "cancel", id] => {
                acks.orders.entry(id.to_string()).or_default().cancelled = true
            }
            ["READY"] => continue,
            other => panic!("unknown line from the child: {other:?}"),
        }
        count += usize::from(words[0] == "ACK");
    }
    count
}

/// What a reopen found.
struct Reopened {
    lsn: u64,
    replayed: u64,
    first_log_lsn: u64,
}

/// Reopens the directory and checks it against every acknowledgement so far.
fn verify(dir: &std::path::Path, acks: &Acks, cycle: usize) -> Reopened {
    let clock = Arc::new(ManualClock::new(0));
    clock.set_to_now();
    let engine = Engine::open(config(dir, clock)).expect("reopen after SIGKILL");
    let state = engine.state();
    for (id, lines) in &acks.carts {
        let cart = state
            .cart(&CartId::parse(id).unwrap())
            .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged cart {id} is missing"));
        let found: Vec<String> =
            cart.lines.iter().map(|l| format!("{}:{}", l.sku, l.quantity)).collect();
        for line in lines {
            assert!(found.contains(line), "cycle {cycle}: cart {id} lacks {line}: {found:?}");
        }
    }
    // Stock, against what was stocked, restocked and paid for (counted from the orders):
    // on hand = stocked + restocked - sold, where restocks sent but not acknowledged may
    // or may not have become durable.
    for (i, (sku, stocked)) in CRASH_SKUS.into_iter().enumerate() {
        let sku = Sku::new(sku).unwrap();
        let (_, sold) = units_in_orders(state, &sku);
        let on_hand = i64::from(state.stock(&sku).unwrap().on_hand);
        let restocked = on_hand + i64::from(sold) - stocked;
        let (least, most) =
            if i == 0 { (acks.restocked, acks.restocked + acks.restocked_maybe) } else { (0, 0) };
        assert!(
            (least..=most).contains(&restocked),
            "cycle {cycle}: {sku} has {on_hand} on hand after {sold} sold: restocked \
             {restocked}, expected {least} to {most}"
        );
    }
    for (id, expected) in &acks.orders {
        let order = state
            .order(&OrderId::parse(id).unwrap())
            .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged order {id} is missing"));
        let lines: Vec<String> =
            order.lines.iter().map(|l| format!("{}:{}", l.sku, l.quantity)).collect();
        assert_eq!(lines.join(","), expected.lines, "cycle {cycle}: order {id} lines");
        let status = order.status;
        if expected.paid {
            assert_eq!(status, OrderStatus::Paid, "cycle {cycle}: paid order {id}");
        } else if expected.cancelled {
            assert_eq!(status, OrderStatus::Cancelled, "cycle {cycle}: cancelled order {id}");
        } else {
            // An unacknowledged payment or cancel may or may not have been made durable.
            assert!(
                matches!(
                    status,
                    OrderStatus::PendingPayment | OrderStatus::Paid | OrderStatus::Cancelled
                ),
                "cycle {cycle}: order {id} is {status:?}"
            );
        }
    }
    // The flash sale's SKU: on hand = stocked - paid for (no restocks).
    let sale_sku = Sku::new(CRASH_SALE_SKU.0).unwrap();
    let (_, sold) = units_in_orders(state, &sale_sku);
    let on_hand = i64::from(state.stock(&sale_sku).unwrap().on_hand);
    assert_eq!(on_hand + i64::from(sold), CRASH_SALE_SKU.1, "cycle {cycle}: {sale_sku}");
    // Every order present, acknowledged or not, is whole: its cart is closed into it (a
    // flash sale's order has no cart; its sale counts it, checked below).
    let mut after = None;
    loop {
        let page = state.orders(&OrderFilter::default(), after, 100);
        for order in &page.items {
            if state.flash_sale_of_order(order).is_some() {
                continue;
            }
            let cart = state.cart(&order.cart_id).expect("an order's cart exists");
            assert_eq!(cart.status, CartStatus::CheckedOut(order.id), "cycle {cycle}");
        }
        match page.next {
            Some(next) => after = Some(next.parse().unwrap()),
            None => break,
        }
    }
    check_invariants(state);
    check_flash_sales(state);
    let last = engine.last_lsn().0;
    // The log holds every entry from its first (retention trims below the rows' LSN) to
    // the last, and the rows' LSN is within it or just before.
    let first_log_lsn = engine.first_log_lsn().0;
    assert!(
        first_log_lsn <= engine.materialized_lsn().0 + 1,
        "cycle {cycle}: log trimmed past the rows"
    );
    let replayed =
        engine.stats().recovery_replayed_entries.load(std::sync::atomic::Ordering::Relaxed);
    let mut expected_lsn = first_log_lsn;
    while expected_lsn <= last {
        let entries = engine.read_log(Lsn(expected_lsn), 10_000).expect("read the log");
        assert!(
            !entries.is_empty(),
            "cycle {cycle}: the log stops at {expected_lsn} before {last}"
        );
        for entry in entries {
            assert_eq!(entry.lsn.0, expected_lsn, "cycle {cycle}: LSNs are not contiguous");
            expected_lsn += 1;
        }
    }
    engine.close();
    Reopened { lsn: last, replayed, first_log_lsn }
}
