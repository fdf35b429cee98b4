//! Many threads racing for the same scarce stock: exactly the stock is sold, never more,
//! and readers never see a broken invariant while the race runs.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use emporium_engine::*;
use emporium_tests::{
    cart_with, check_invariants, checkout, pay, stocked_sku, units_in_orders, wait_until,
    SequencerHold, TestEngine,
};

const BUYERS: usize = 64;
const UNITS: u32 = 100;
const ROUNDS: usize = 8;

#[test]
fn sixty_four_buyers_take_exactly_the_stock() {
    let te = TestEngine::new();
    for round in 0..ROUNDS {
        let sku = format!("HOT-{round}");
        stocked_sku(&te.shop, &sku, 999, i64::from(UNITS));
        let sku = Sku::new(sku).unwrap();
        let taken = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(BUYERS + 1));
        let watcher = {
            let (engine, sku, done) = (te.engine.clone(), sku.clone(), done.clone());
            std::thread::spawn(move || watch_invariants(&engine, &sku, &done))
        };
        let buyers: Vec<_> = (0..BUYERS)
            .map(|buyer| {
                let (shop, sku, taken, start) =
                    (te.shop.clone(), sku.clone(), taken.clone(), start.clone());
                std::thread::spawn(move || buy_until_sold_out(&shop, &sku, buyer, &taken, &start))
            })
            .collect();
        start.wait();
        for buyer in buyers {
            buyer.join().unwrap();
        }
        done.store(true, Ordering::Release);
        watcher.join().unwrap();
        let levels = te.state().stock(&sku).unwrap();
        assert_eq!(taken.load(Ordering::Acquire), UNITS, "round {round}: units taken");
        // Against the orders, counted independently of the stock row: every unit is in
        // exactly one pending or paid order, the paid ones left `on_hand`, the pending
        // ones are `reserved`. (Shown to fail: a payment that leaves `on_hand` alone in
        // `inventory::ship` fails here.)
        let (pending, sold) = units_in_orders(te.state(), &sku);
        assert_eq!(pending + sold, UNITS, "round {round}: units in orders");
        assert_eq!(levels.on_hand, UNITS - sold, "round {round}: {levels:?}");
        assert_eq!(levels.reserved, pending, "round {round}: {levels:?}");
        check_invariants(te.state());
    }
}

/// Buys 1–3 units at a time until the SKU is sold out; pays for every other order.
fn buy_until_sold_out(
    shop: &BlockingEngine,
    sku: &Sku,
    buyer: usize,
    taken: &AtomicU32,
    start: &Barrier,
) {
    start.wait();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let quantity = (buyer + attempt) % 3 + 1;
        let cart = cart_with(shop, &[(sku.as_str(), quantity as i64)]);
        match checkout(shop, &cart.id) {
            Ok(order) => {
                taken.fetch_add(quantity as u32, Ordering::AcqRel);
                if attempt % 2 == 0 {
                    pay(shop, &order.id).expect("pay");
                }
            }
            Err(EngineError::OutOfStock(short)) => {
                assert_eq!(short.len(), 1);
                assert!(short[0].available < quantity as u32);
                if short[0].available == 0 {
                    return;
                }
            }
            Err(e) => panic!("unexpected checkout error: {e}"),
        }
    }
}

/// Reads the SKU's levels while the race runs. Nothing is cancelled or restocked
/// during it, so from one read to the next `on_hand` and `available` can only fall and
/// the version only rise: a torn read (levels of two instants) or a lost write shows up
/// as one of them going the wrong way. (`reserved <= on_hand` is not checked: the
/// stock cell's writer asserts it, so no read could see it broken.) Shown to fail: a
/// `StockCell::read` that skips its sequence re-check fails "one version, two values".
fn watch_invariants(engine: &Engine, sku: &Sku, done: &AtomicBool) {
    let mut last = engine.state().stock(sku).unwrap();
    // At least one more read, even when the race is over before this thread first runs.
    loop {
        let levels = engine.state().stock(sku).unwrap();
        assert!(levels.on_hand <= last.on_hand, "{last:?} then {levels:?}");
        assert!(levels.available() <= last.available(), "{last:?} then {levels:?}");
        assert!(levels.version >= last.version, "{last:?} then {levels:?}");
        if levels.version == last.version {
            assert_eq!(levels, last, "one version, two values");
        }
        last = levels;
        if done.load(Ordering::Acquire) {
            return;
        }
    }
}

#[test]
fn async_callers_share_group_commits() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "ASYNC-1", 100, 100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(checkout_from_tasks(&te));
}

async fn checkout_from_tasks(te: &TestEngine) {
    let before = te.engine.stats().groups_committed.load(Ordering::Acquire);
    let committed_before = te.engine.stats().commands_committed.load(Ordering::Acquire);
    let mut tasks = Vec::new();
    for _ in 0..512 {
        let engine = te.engine.clone();
        tasks.push(tokio::spawn(async move {
            let cart = engine.send(CreateCart::default()).await?;
            engine
                .send(AddCartItem {
                    cart_id: cart.id.to_string(),
                    sku: "ASYNC-1".into(),
                    quantity: 1,
                })
                .await?;
            engine
                .send(Checkout {
                    cart_id: cart.id.to_string(),
                    email: Some("a@example.com".into()),
                    ..Default::default()
                })
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("checkout");
    }
    let stats = te.engine.stats();
    let groups = stats.groups_committed.load(Ordering::Acquire) - before;
    let commands = stats.commands_committed.load(Ordering::Acquire) - committed_before;
    assert_eq!(commands, 1536, "the runtime counted every command once");
    // One sync per command would make 1536 groups. With 512 callers in flight the
    // groups hold many commands each; a mean of 4 is far below what they reach and far
    // above what a build without group commit (exactly 1) could reach.
    assert!(commands >= 4 * groups, "{groups} groups for {commands} commands");
    let (pending, _) = units_in_orders(te.state(), &Sku::new("ASYNC-1").unwrap());
    assert_eq!(pending, 512, "every checkout placed one pending unit");
    check_invariants(te.state());
}

/// A committer with nothing to write gets the sequencer's first command at once, not
/// after the sequencer has drained its queue: the first command syncs while the rest
/// are applied. Commands queued behind a held sequencer would otherwise all go into one
/// group, the committer idle while they are applied and the sequencer idle while they
/// sync.
#[test]
fn a_waiting_committer_is_handed_the_first_command_at_once() {
    let faults = Faults::default();
    let te = TestEngine::with(|config| config.faults = faults.clone());
    let hold = SequencerHold(faults);
    hold.hold_after(|| {
        te.shop.send(CreateCart::default()).expect("create a cart");
    });
    let stats = te.engine.stats();
    let (groups_before, commands_before) = (
        stats.groups_committed.load(Ordering::Acquire),
        stats.commands_committed.load(Ordering::Acquire),
    );
    const QUEUED: usize = 200;
    let callers: Vec<_> = (0..QUEUED)
        .map(|_| {
            let shop = te.shop.clone();
            std::thread::spawn(move || shop.send(CreateCart::default()).map(|_| ()))
        })
        .collect();
    let what = "the commands to reach the engine's queue";
    wait_until(what, Duration::from_secs(10), || te.engine.queue_depth() >= QUEUED);
    hold.release();
    for caller in callers {
        caller.join().unwrap().expect("create a cart");
    }
    let groups = stats.groups_committed.load(Ordering::Acquire) - groups_before;
    let commands = stats.commands_committed.load(Ordering::Acquire) - commands_before;
    assert_eq!(commands, QUEUED as u64);
    assert!(groups >= 2, "{commands} queued commands were committed in one group");
}

#[test]
fn a_full_queue_answers_overloaded_at_once() {
    let te = TestEngine::with(|config| config.queue_commands_max = 4);
    stocked_sku(&te.shop, "Q-1", 100, 10);
    // Flood the queue from many threads; some calls must be refused as overloaded, none
    // may hang, and whatever was accepted is applied.
    let overloaded = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (shop, overloaded) = (te.shop.clone(), overloaded.clone());
            std::thread::spawn(move || {
                let mut slowest_refusal = std::time::Duration::ZERO;
                for _ in 0..200 {
                    let sent = std::time::Instant::now();
                    match shop.send(CreateCart::default()) {
                        Ok(_) => {}
                        Err(EngineError::Overloaded) => {
                            overloaded.fetch_add(1, Ordering::Relaxed);
                            slowest_refusal = slowest_refusal.max(sent.elapsed());
                        }
                        Err(e) => panic!("unexpected: {e}"),
                    }
                }
                slowest_refusal
            })
        })
        .collect();
    let slowest = threads.into_iter().map(|t| t.join().unwrap()).max().unwrap();
    assert!(overloaded.load(Ordering::Relaxed) > 0, "a queue of 4 never filled under 16 threads");
    // A refusal is a failed `try_send`: it never waits for the queue to drain, let alone
    // for a sync. The bound is generous (a loaded CI machine) yet far below what waiting
    // for the queue behind a sync per group would take if the refusal blocked.
    assert!(slowest < std::time::Duration::from_millis(250), "a refusal took {slowest:?}");
}
