//! The runtime on its own clock and at its end: the sequencer's timer expires
//! reservations, forgets idempotency records and purges refresh tokens without anyone
//! sending `ExpireDue` (every other test turns that timer off), works off a burst at
//! once, drops abandoned carts, and a close lets every command queued before it
//! complete.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_engine::*;
use emporium_tests::{cart_with, check_invariants, levels, stocked_sku, wait_until, TestEngine};

/// Waits (bounded) until `done` holds; the timer runs on its own thread.
fn eventually(what: &str, done: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(10), done)
}

#[test]
fn the_sequencers_timer_expires_reservations_and_forgets_records() {
    let te = TestEngine::with(|config| config.tick_interval_ms = 5);
    stocked_sku(&te.shop, "T-1", 100, 10);
    let cart = cart_with(&te.shop, &[("T-1", 3)]);
    let key = IdempotencyKey { scope: "guest".into(), key: "timer-1".into() };
    let order = te
        .shop
        .send(Checkout {
            cart_id: cart.id.to_string(),
            email: Some("ann@example.com".into()),
            idempotency: Some(key.clone()),
            ..Default::default()
        })
        .unwrap();
    te.shop
        .send(IssueRefreshToken {
            subject: "cus_000000000001".into(),
            token_hash: "c".repeat(64),
            expires_at: te.clock.now_ms() + 60_000,
        })
        .unwrap();
    assert_eq!(levels(te.state(), "T-1"), (10, 3));

    // Nothing is due yet: the timer leaves everything alone.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(te.state().order(&order.id).unwrap().status, OrderStatus::PendingPayment);

    let limits = Limits::default();
    te.clock.advance(limits.reservation_ttl_ms);
    eventually("expire the order", || {
        te.state().order(&order.id).unwrap().status == OrderStatus::Expired
    });
    assert_eq!(levels(te.state(), "T-1"), (10, 0), "the expiry released the units");
    assert!(te.state().refresh_token(&"c".repeat(64)).is_none(), "the token is purged");
    assert!(te.state().idempotency_record(&key.scoped()).is_some(), "the record is young");

    te.clock.advance(limits.idempotency_ttl_ms);
    eventually("forget the record", || te.state().idempotency_record(&key.scoped()).is_none());
    check_invariants(te.state());

    // What the timer did is durable like any command.
    let te = te.reopen();
    assert_eq!(te.state().order(&order.id).unwrap().status, OrderStatus::Expired);
    assert!(te.state().idempotency_record(&key.scoped()).is_none());
}

/// Commands queued before a close complete and are durable; none is left waiting.
/// (A sequencer that refused everything once the close began, as one did for a while,
/// fails this at once.)
#[test]
fn a_close_completes_what_was_queued_before_it() {
    const QUEUED: usize = 200;
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let te = TestEngine::with(|config| config.faults.hold_sequencer = hold.clone());
    let TestEngine { engine, shop, clock: _clock, dir } = te;
    drop(shop);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let carts = runtime.block_on(async {
        let polled = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..QUEUED)
            .map(|_| {
                let (engine, polled) = (engine.clone(), polled.clone());
                tokio::spawn(async move {
                    let send = engine.send(CreateCart::default());
                    polled.fetch_add(1, Ordering::AcqRel);
                    // The first poll of `send` queues the command.
                    send.await
                })
            })
            .collect();
        // On this single-threaded runtime a task runs only when this one yields: once
        // every task has counted itself, each has queued its command in the same poll.
        // The sequencer is held until the close begins, so all of them are still queued
        // when it does.
        while polled.load(Ordering::Acquire) < QUEUED {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        let closing = tokio::task::spawn_blocking({
            let engine = engine.clone();
            move || engine.close()
        });
        let mut carts = Vec::new();
        for task in tasks {
            carts.push(task.await.unwrap().expect("a command queued before the close completes"));
        }
        closing.await.unwrap();
        carts
    });
    assert_eq!(carts.len(), QUEUED);
    let refused = engine.blocking().send(CreateCart::default());
    assert!(matches!(refused, Err(EngineError::Unavailable(_))), "{refused:?}");
    drop(engine);
    let clock = Arc::new(ManualClock::new(emporium_tests::T0));
    let engine = Engine::open(emporium_tests::config(dir.path(), clock)).unwrap();
    for cart in &carts {
        assert!(engine.state().cart(&cart.id).is_some(), "acknowledged cart {} lost", cart.id);
    }
    engine.close();
}

/// Carts are bounded by time: an open one left unchanged past the carts' time to live is
/// dropped by the timer and counted (the cart-abandonment figure), in batches past the
/// per-command cap; a cart changed meanwhile stays; a checked-out cart stays for the
/// time to live after its checkout, then is dropped uncounted, its order kept.
#[test]
fn abandoned_carts_are_dropped_and_counted() {
    const IDLE: usize = 2 * EXPIRIES_PER_COMMAND_MAX + 100;
    let te = TestEngine::new();
    stocked_sku(&te.shop, "AB-1", 100, 10);
    let idle: Vec<Arc<Cart>> =
        (0..IDLE).map(|_| te.shop.send(CreateCart::default()).unwrap()).collect();
    let bought = cart_with(&te.shop, &[("AB-1", 1)]);
    let ttl = Limits::default().cart_ttl_ms;
    te.clock.advance(ttl - 1_000);
    let order = emporium_tests::checkout(&te.shop, &bought.id).unwrap();
    let touched = cart_with(&te.shop, &[("AB-1", 2)]);
    te.clock.advance(2_000);
    assert_eq!(te.state().open_cart_count(), IDLE + 1);
    let mut sweeps = 0;
    while te.state().open_cart_count() > 1 {
        te.shop.send(ExpireDue).unwrap();
        sweeps += 1;
        assert!(sweeps <= 3, "{} carts still open", te.state().open_cart_count());
    }
    assert_eq!(sweeps, 3, "at most {EXPIRIES_PER_COMMAND_MAX} carts per command");
    assert_eq!(te.state().carts_abandoned(), IDLE as u64);
    assert!(idle.iter().all(|c| te.state().cart(&c.id).is_none()));
    assert!(te.state().cart(&touched.id).is_some(), "a cart changed within the TTL stays");
    assert!(te.state().cart(&bought.id).is_some(), "checked out within the TTL: kept");
    // Adding to a dropped cart is a plain not-found.
    let gone = te.shop.send(AddCartItem {
        cart_id: idle[0].id.to_string(),
        sku: "AB-1".into(),
        quantity: 1,
    });
    assert!(matches!(gone, Err(EngineError::NotFound { .. })), "{gone:?}");
    // A TTL later the touched cart is abandoned, and the checked-out one dropped
    // without counting as abandoned.
    te.clock.advance(ttl);
    te.shop.send(ExpireDue).unwrap();
    assert!(te.state().cart(&touched.id).is_none(), "the touched cart went idle");
    assert!(te.state().cart(&bought.id).is_none(), "a checked-out cart is kept for one TTL");
    assert_eq!(te.state().carts_abandoned(), IDLE as u64 + 1, "only open carts are abandoned");
    let closed = te.shop.send(AddCartItem {
        cart_id: bought.id.to_string(),
        sku: "AB-1".into(),
        quantity: 1,
    });
    assert!(matches!(closed, Err(EngineError::NotFound { .. })), "{closed:?}");
    // The KPIs decide a dropped cart when it is dropped, not at the end of its
    // abandonment window (here longer than the carts' time to live): it can no longer
    // be checked out, and the model holds only the carts that still can.
    let mut kpis = KpiModel::new(2 * ttl);
    for entry in te.engine.read_log(Lsn(1), 100_000).unwrap() {
        kpis.fold(te.state(), &entry);
    }
    assert_eq!(kpis.totals().carts_created, IDLE as u64 + 2);
    assert_eq!(kpis.totals().carts_converted, 1);
    assert_eq!(kpis.totals().carts_abandoned, 1, "the touched cart had items; the idle ones none");
    assert_eq!(kpis.detail().open_carts, 0);
    let te = te.reopen();
    assert_eq!(te.state().carts_abandoned(), IDLE as u64 + 1);
    assert_eq!(te.state().open_cart_count(), 0);
    assert!(te.state().cart(&bought.id).is_none(), "the drop is durable");
    assert_eq!(te.state().order(&order.id).unwrap().cart_id, bought.id);
    check_invariants(te.state());
}

/// A burst of expiries larger than one batch is worked off at once, not one batch per
/// timer interval: 3,000 reservations fall due together and all expire well within one
/// interval of the first.
#[test]
fn a_burst_of_expiries_is_worked_off_at_once() {
    const ORDERS: usize = 3_000;
    let te = TestEngine::with(|config| config.tick_interval_ms = 2_000);
    stocked_sku(&te.shop, "BU-1", 100, ORDERS as i64);
    let orders: Vec<Arc<Order>> = (0..ORDERS)
        .map(|_| {
            emporium_tests::checkout(&te.shop, &cart_with(&te.shop, &[("BU-1", 1)]).id).unwrap()
        })
        .collect();
    te.clock.advance(Limits::default().reservation_ttl_ms);
    let expired = || {
        orders
            .iter()
            .filter(|o| te.state().order(&o.id).unwrap().status == OrderStatus::Expired)
            .count()
    };
    eventually("start expiring", || expired() > 0);
    let first = Instant::now();
    eventually("expire them all", || expired() == ORDERS);
    let took = first.elapsed();
    assert!(took < Duration::from_millis(1_500), "the backlog took {took:?}: batch per interval");
    assert_eq!(levels(te.state(), "BU-1"), (ORDERS as u32, 0));
}

/// Idempotency records are bounded in number as well as in time: past the most kept,
/// the oldest are forgotten first (in batches past the per-command cap).
#[test]
fn idempotency_records_past_their_bound_are_forgotten_oldest_first() {
    const MAX: usize = 100;
    let te = TestEngine::with(|config| config.limits.idempotency_records_max = MAX);
    let key = |n: usize| IdempotencyKey { scope: "guest".into(), key: format!("flood-{n}") };
    for n in 0..MAX + 1_500 {
        te.clock.advance(1);
        let record = RecordResponse { key: key(n), fingerprint: 1, status: 201, body: vec![] };
        te.shop.send(record).unwrap();
    }
    // 1,500 over the bound: two sweeps of at most 1,024.
    for _ in 0..2 {
        te.shop.send(ExpireDue).unwrap();
    }
    assert_eq!(count_records(&te, MAX + 1_500, &key), MAX);
    assert!(te.state().idempotency_record(&key(0).scoped()).is_none(), "the oldest went first");
    assert!(te.state().idempotency_record(&key(MAX + 1_499).scoped()).is_some());
}

fn count_records(te: &TestEngine, made: usize, key: &dyn Fn(usize) -> IdempotencyKey) -> usize {
    (0..made).filter(|n| te.state().idempotency_record(&key(*n).scoped()).is_some()).count()
}
