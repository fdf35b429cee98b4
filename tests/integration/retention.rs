//! The log as the engine's truth: the materialized rows plus the replayed tail give the
//! acknowledged state back, retention trims what everyone has passed and nothing a
//! registered consumer still needs, and a consumer that falls too far behind is dropped
//! and told so.

use std::sync::Arc;

use emporium_engine::*;
use emporium_tests::{
    cart_with, check_invariants, checkout, config, pay, register_customer, stocked_sku,
    unmaterialized_config, T0,
};

/// A configuration that trims the log down to what is needed.
fn trimming(dir: &std::path::Path, clock: Arc<ManualClock>) -> EngineConfig {
    let mut config = config(dir, clock);
    config.log_retain_entries_min = 0;
    config.materialize_interval_ms = 1;
    config
}

#[test]
fn retention_trims_what_the_rows_hold_and_reads_below_it_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(trimming(dir.path(), clock.clone())).unwrap();
    let shop = engine.blocking();
    stocked_sku(&shop, "T-1", 100, 50);
    for _ in 0..5 {
        let order = checkout(&shop, &cart_with(&shop, &[("T-1", 1)]).id).unwrap();
        pay(&shop, &order.id).unwrap();
    }
    let last = engine.last_lsn();
    engine.close();

    // Closing flushed the materializer: the rows reflect the last LSN and the log was
    // trimmed below it, so nothing is replayed.
    let engine = Engine::open(trimming(dir.path(), clock.clone())).unwrap();
    assert_eq!(engine.last_lsn(), last);
    assert_eq!(engine.materialized_lsn(), last);
    assert_eq!(
        engine.stats().recovery_replayed_entries.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(engine.first_log_lsn().0 > 1, "the log was not trimmed: {:?}", engine.first_log_lsn());
    match engine.read_log(Lsn(1), 10) {
        Err(EngineError::LogTrimmed { requested, first }) => {
            assert_eq!(requested, Lsn(1));
            assert_eq!(first, engine.first_log_lsn());
        }
        other => panic!("expected LogTrimmed, got {other:?}"),
    }
    let levels = engine.state().stock(&Sku::new("T-1").unwrap()).unwrap();
    assert_eq!((levels.on_hand, levels.reserved), (45, 0));
    check_invariants(engine.state());
    engine.close();
}

/// The log's database has a write-ahead log of its own, so a trim can outlive a crash
/// that loses the unlogged rows written before it: the log is trimmed only below rows
/// whose flush completed. With no flush asked for, nothing is trimmed however far the
/// rows have been written; a flush that completes (here the close's) lets it go.
#[test]
fn the_log_is_kept_until_the_rows_that_cover_it_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut unflushed = trimming(dir.path(), clock.clone());
    unflushed.persist_interval_ms = 3_600_000;
    let engine = Engine::open(unflushed.clone()).unwrap();
    let shop = engine.blocking();
    stocked_sku(&shop, "D-1", 100, 50);
    for _ in 0..5 {
        checkout(&shop, &cart_with(&shop, &[("D-1", 1)]).id).unwrap();
    }
    let last = engine.last_lsn();
    // The flush that publishes the materialized LSN has trimmed (or not) before it.
    wait_materialized(&engine);
    assert_eq!(engine.first_log_lsn(), Lsn(1), "trimmed below rows that are not durable");
    engine.close();

    let engine = Engine::open(unflushed).unwrap();
    assert_eq!(engine.last_lsn(), last);
    assert!(engine.first_log_lsn() > Lsn(1), "the close made the rows durable, then trimmed");
    engine.close();
}

#[test]
fn a_registered_consumer_holds_the_log_until_it_advances() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(trimming(dir.path(), clock.clone())).unwrap();
    let consumer = engine.register_consumer("search-index").unwrap();
    assert_eq!(consumer.position(), Lsn(0));
    let shop = engine.blocking();
    stocked_sku(&shop, "K-1", 100, 50);
    let order = checkout(&shop, &cart_with(&shop, &[("K-1", 1)]).id).unwrap();
    let last = engine.last_lsn();
    engine.close();

    // Across a restart the consumer keeps its place and every entry after it.
    let engine = Engine::open(trimming(dir.path(), clock.clone())).unwrap();
    let consumer = engine.register_consumer("search-index").unwrap();
    assert_eq!(consumer.position(), Lsn(0));
    let entries = consumer.read(1000).unwrap();
    assert_eq!(entries.first().map(|e| e.lsn), Some(Lsn(1)));
    assert_eq!(entries.last().map(|e| e.lsn), Some(last));
    assert!(entries.iter().any(|e| e.events.iter().any(
        |ev| matches!(ev, Event::Orders(OrderEvent::Placed(placed)) if placed.id == order.id)
    )));
    // It cannot claim what is not durable, and positions never go back.
    assert!(consumer.advance(Lsn(last.0 + 1)).unwrap_err().is_validation());
    consumer.advance(last).unwrap();
    consumer.advance(Lsn(1)).unwrap();
    assert_eq!(consumer.position(), last);
    engine
        .blocking()
        .send(AdjustStock { sku: "K-1".into(), delta: 1, reason: "found".into() })
        .unwrap();
    engine.close();

    let engine = Engine::open(trimming(dir.path(), clock)).unwrap();
    let consumer = engine.register_consumer("search-index").unwrap();
    assert_eq!(consumer.position(), last, "the position was persisted");
    assert!(engine.first_log_lsn() > Lsn(1), "the passed prefix was trimmed");
    let rest = consumer.read(10).unwrap();
    assert_eq!(rest.iter().map(|e| e.lsn).collect::<Vec<_>>(), vec![Lsn(last.0 + 1)]);
    assert!(engine.register_consumer("Not A Name").unwrap_err().is_validation());
    engine.close();
}

/// A consumer that moves while no command comes makes the materializer write without a
/// group: that write must not touch the LSN or the counters the rows reflect.
#[test]
fn an_idle_flush_for_a_consumer_keeps_the_counters() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(trimming(dir.path(), clock.clone())).unwrap();
    let first = stocked_sku(&engine.blocking(), "I-1", 100, 5);
    let last = engine.last_lsn();
    engine.close();
    let engine = Engine::open(trimming(dir.path(), clock.clone())).unwrap();
    let consumer = engine.register_consumer("idle-reader").unwrap();
    consumer.advance(last).unwrap();
    engine.close();
    let engine = Engine::open(trimming(dir.path(), clock)).unwrap();
    assert_eq!(engine.register_consumer("idle-reader").unwrap().position(), last);
    assert_eq!(engine.last_lsn(), last);
    let second = stocked_sku(&engine.blocking(), "I-2", 100, 5);
    assert!(second.id > first.id, "{} reused after {}", second.id, first.id);
    engine.close();
}

/// A flush writes only the counters that moved since the one before: a counter that
/// stood still through many flushes keeps what an earlier one wrote, through a reopen
/// that replays nothing.
#[test]
fn counters_written_by_earlier_flushes_hold_through_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(trimming(dir.path(), clock.clone())).unwrap();
    let shop = engine.blocking();
    let mut products = Vec::new();
    for sku in ["K-1", "K-2"] {
        products.push(stocked_sku(&shop, sku, 100, 5).id);
        wait_materialized(&engine);
        // Flushes in which only the carts' counters move.
        for _ in 0..3 {
            cart_with(&shop, &[(sku, 1)]);
            wait_materialized(&engine);
        }
    }
    engine.close();
    let engine = Engine::open(trimming(dir.path(), clock)).unwrap();
    let replayed =
        engine.stats().recovery_replayed_entries.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(replayed, 0, "the counters must come from the stored rows, not a replay");
    let third = stocked_sku(&engine.blocking(), "K-3", 100, 5).id;
    assert!(products.iter().all(|id| third > *id), "{third} reused after {products:?}");
    engine.close();
}

#[test]
fn a_consumer_past_the_lag_cap_is_dropped_and_told_to_resynchronise() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = trimming(dir.path(), clock.clone());
    config.log_consumer_lag_max = 5;
    let engine = Engine::open(config).unwrap();
    let slow = engine.register_consumer("slow-standby").unwrap();
    let shop = engine.blocking();
    for n in 0..10 {
        shop.send(CreateCategory { name: format!("C{n}"), parent_id: None }).unwrap();
    }
    engine.close();
    assert!(slow.is_dropped());
    assert!(slow.read(10).unwrap_err().is_log_trimmed());
    assert!(slow.advance(Lsn(3)).unwrap_err().is_log_trimmed());

    // Dropped for good: registering again starts from what the log still holds.
    let engine = Engine::open(trimming(dir.path(), clock)).unwrap();
    let again = engine.register_consumer("slow-standby").unwrap();
    assert_eq!(again.position().0 + 1, engine.first_log_lsn().0);
    assert!(!again.is_dropped());
    engine.unregister_consumer("slow-standby").unwrap();
    assert!(again.is_dropped());
    engine.close();
}

#[test]
fn the_log_tail_after_the_rows_is_replayed_through_apply() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    // The materializer never writes while the engine runs: every command's rows stay
    // in memory, only its log entry is on disk.
    let engine = Engine::open(unmaterialized_config(dir.path(), clock.clone())).unwrap();
    let shop = engine.blocking();
    stocked_sku(&shop, "P-1", 100, 10);
    let order = checkout(&shop, &cart_with(&shop, &[("P-1", 3)]).id).unwrap();
    let paid = checkout(&shop, &cart_with(&shop, &[("P-1", 2)]).id).unwrap();
    pay(&shop, &paid.id).unwrap();
    let last = engine.last_lsn();
    assert_eq!(engine.materialized_lsn(), Lsn(0));
    // A checkpoint now is what a crash would leave: the log, and rows from before it.
    let copy = dir.path().with_extension("copy");
    engine.checkpoint(&copy).unwrap();
    engine.close();

    let engine = Engine::open(config(&copy, clock)).unwrap();
    assert_eq!(engine.last_lsn(), last);
    let replayed =
        engine.stats().recovery_replayed_entries.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(replayed, last.0);
    assert_eq!(engine.materialized_lsn(), last, "the replayed tail is written back");
    assert_eq!(engine.state().order(&order.id).unwrap().status, OrderStatus::PendingPayment);
    assert_eq!(engine.state().order(&paid.id).unwrap().status, OrderStatus::Paid);
    let levels = engine.state().stock(&Sku::new("P-1").unwrap()).unwrap();
    assert_eq!((levels.on_hand, levels.reserved), (8, 3));
    check_invariants(engine.state());
    engine.close();
    std::fs::remove_dir_all(&copy).unwrap();
}

/// The synced write of a checkout is its log entry alone, and the entry carries only
/// new facts: a keyed one-line guest checkout fits in 300 bytes.
#[test]
fn a_one_line_checkout_writes_at_most_300_bytes_of_log() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), Arc::new(ManualClock::new(T0)))).unwrap();
    let shop = engine.blocking();
    stocked_sku(&shop, "TSHIRT-M", 1999, 100);
    let cart = cart_with(&shop, &[("TSHIRT-M", 1)]);
    let bytes = || engine.stats().log_bytes_total.load(std::sync::atomic::Ordering::Relaxed);
    let before = bytes();
    shop.send(Checkout {
        cart_id: cart.id.to_string(),
        email: Some("ann.shopper@example.com".into()),
        shipping_address: None,
        idempotency: Some(IdempotencyKey {
            scope: "guest".into(),
            key: "0b7f9a52-3c1e-4d7a-9f0e-5a2b8c6d4e1f".into(),
        }),
        ..Default::default()
    })
    .unwrap();
    let written = bytes() - before;
    eprintln!("a keyed one-line guest checkout wrote {written} bytes of log");
    assert!(written <= 300, "a one-line checkout wrote {written} bytes of log");
    engine.close();
}

/// Rows changed many times between two flushes are written once each, with their last
/// change: twenty checkouts of one SKU in one window leave one stock row holding all
/// twenty reservations, and each cart's row says it was checked out.
#[test]
fn a_flush_writes_each_changed_row_once_with_its_last_change() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut one_window = config(dir.path(), clock.clone());
    // No flush but the close's.
    one_window.materialize_interval_ms = 3_600_000;
    let engine = Engine::open(one_window.clone()).unwrap();
    let shop = engine.blocking();
    stocked_sku(&shop, "W-1", 100, 50);
    let mut carts = Vec::new();
    for _ in 0..20 {
        let cart = cart_with(&shop, &[("W-1", 1)]);
        checkout(&shop, &cart.id).unwrap();
        carts.push(cart.id);
    }
    let last = engine.last_lsn();
    let after_close = engine.clone();
    engine.close();
    let written = after_close.stats().rows_materialized.load(std::sync::atomic::Ordering::Relaxed);
    drop(after_close);
    // The product and its SKU's stock once each, every order and every cart once. Every
    // change written would be over a hundred rows: the stock's 21 (set, then one per
    // checkout), three per cart (made, its line, checked out).
    assert_eq!(written, 1 + 1 + 20 + 20, "rows written by the close's flush");
    assert_eq!(stored_rows(dir.path(), "carts").len(), 20);
    assert_eq!(stored_rows(dir.path(), "stock").len(), 1);

    // Everything is in the rows (nothing replayed), the stock row as the last checkout
    // left it.
    let engine = Engine::open(one_window).unwrap();
    assert_eq!(engine.last_lsn(), last);
    assert_eq!(
        engine.stats().recovery_replayed_entries.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let levels = engine.state().stock(&Sku::new("W-1").unwrap()).unwrap();
    assert_eq!((levels.on_hand, levels.reserved), (50, 20));
    assert_eq!(engine.state().order_count(), 20);
    for id in &carts {
        let cart = engine.state().cart(id).unwrap();
        assert!(matches!(cart.status, CartStatus::CheckedOut(_)), "cart {id}: {:?}", cart.status);
        assert_eq!(cart.lines.len(), 1);
    }
    check_invariants(engine.state());
    engine.close();
}

/// Waits (at most 10 s) until the materializer has written everything applied.
fn wait_materialized(engine: &Engine) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while engine.materialized_lsn() < engine.last_lsn() {
        assert!(std::time::Instant::now() < deadline, "the materializer did not catch up");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// An engine on `dir` that keeps at most three settled orders in memory.
fn open_keeping_three_orders(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let mut config = trimming(dir, clock.clone());
    config.orders_in_memory = Some(3);
    Engine::open(config).unwrap()
}

/// Settled orders beyond `orders_in_memory` leave memory once the store holds their
/// last value; they read back whole (by id, in listings, a customer's own), a refund
/// changes one out of memory without indexing it twice, and an open loads settled
/// orders into the store's index only.
#[test]
fn settled_orders_leave_memory_and_are_read_back_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let open = || open_keeping_three_orders(dir.path(), &clock);
    let engine = open();
    let shop = engine.blocking();
    stocked_sku(&shop, "M-1", 1000, 1000);
    let ann = register_customer(&shop, "ann@example.com");
    let mut placed = Vec::new();
    for n in 0..20 {
        let cart = if n % 2 == 0 {
            cart_with(&shop, &[("M-1", 1 + n % 3)])
        } else {
            let cart = shop
                .send(CreateCart { customer_id: Some(ann.id.to_string()), currency: None })
                .unwrap();
            shop.send(AddCartItem { cart_id: cart.id.to_string(), sku: "M-1".into(), quantity: 2 })
                .unwrap()
        };
        let order = checkout(&shop, &cart.id).unwrap();
        if n < 16 {
            pay(&shop, &order.id).unwrap();
        }
        placed.push(order.id);
    }
    wait_materialized(&engine);
    let state = engine.state();
    let pending = 4;
    assert!(
        state.orders_in_memory() <= 3 + pending,
        "{} orders in memory, at most 3 settled and {pending} pending allowed",
        state.orders_in_memory()
    );
    assert_eq!(state.order_count(), 20);
    let read: Vec<Arc<Order>> = placed.iter().map(|id| state.order(id).unwrap()).collect();
    for (n, order) in read.iter().enumerate() {
        assert_eq!((order.id, order.seq), (placed[n], n as u64 + 1));
        let status = if n < 16 { OrderStatus::Paid } else { OrderStatus::PendingPayment };
        assert_eq!(order.status, status, "order {n}");
    }

    // Changed out of memory: the refund reads it back, and it returns to memory.
    let first_anns = placed[1];
    shop.send(RefundPayment { order_id: first_anns.to_string(), amount: None, reason: "".into() })
        .unwrap();
    assert_eq!(state.order(&first_anns).unwrap().status, OrderStatus::Refunded);
    assert_eq!(listed(state, &OrderFilter::default()), placed, "every order, once, in order");
    let anns: Vec<OrderId> = placed.iter().skip(1).step_by(2).copied().collect();
    let of_ann = OrderFilter { customer_id: Some(ann.id), status: None };
    assert_eq!(listed(state, &of_ann), anns, "Ann's orders, once each");
    check_invariants(state);
    assert_eq!(state.reconcile().mismatch_count, 0);
    wait_materialized(&engine);
    let digest = state.digest();
    let before: Vec<Arc<Order>> = placed.iter().map(|id| state.order(id).unwrap()).collect();
    engine.close();

    let engine = open();
    let state = engine.state();
    assert_eq!(state.orders_in_memory(), pending, "only pending orders load into memory");
    assert_eq!(state.digest(), digest);
    for order in &before {
        assert_eq!(state.order(&order.id).as_deref(), Some(&**order));
    }
    assert_eq!(listed(state, &of_ann), anns);
    let report = state.reconcile();
    assert_eq!((report.orders, report.mismatch_count), (20, 0));
    check_invariants(state);
    engine.close();
}

/// An order's shipping and tax charges, and the shipment that says which location its
/// units left from, leave memory with it and are read back from the store, then and
/// after an open, which loads only those of orders in memory.
#[test]
fn order_charges_and_shipments_leave_memory_with_their_orders() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let open = || open_keeping_three_orders(dir.path(), &clock);
    let engine = open();
    let shop = engine.blocking();
    stocked_sku(&shop, "C-1", 1000, 1000);
    // A location before the default one: every order's units leave from there.
    let location =
        CreateLocation { name: "North".into(), kind: "warehouse".into(), priority: Some(10) };
    let north = shop.send(location).unwrap().id;
    shop.send(SetLocationStock {
        sku: "C-1".into(),
        location_id: north.to_string(),
        on_hand: 1000,
        reason: "count".into(),
        expected_version: None,
    })
    .unwrap();
    shop.send(SetTaxRate { zone: "US".into(), rate_bp: Some(500) }).unwrap();
    let rate = ShippingRate::Flat { amount: 499 };
    let create = CreateShippingMethod {
        name: "Standard".into(),
        currency: "USD".into(),
        rate,
        countries: vec![],
    };
    let method = shop.send(create).unwrap().id.to_string();
    let address = Address {
        name: "Ann".into(),
        line1: "1 Main St".into(),
        city: "Springfield".into(),
        region: "IL".into(),
        postal_code: "62701".into(),
        country: "US".into(),
        ..Default::default()
    };
    let mut placed = Vec::new();
    for n in 0..12 {
        let units = 1 + n % 2;
        let cart = cart_with(&shop, &[("C-1", units)]);
        let order = shop
            .send(Checkout {
                cart_id: cart.id.to_string(),
                email: Some("guest@example.com".into()),
                shipping_address: Some(address.clone()),
                shipping_method_id: Some(method.clone()),
                ..Default::default()
            })
            .unwrap();
        let charges = engine.state().order_charges(&order.id).expect("charged");
        assert_eq!((charges.shipping, charges.tax()), (499, 50 * units));
        if n < 10 {
            pay(&shop, &order.id).unwrap();
        }
        let order = engine.state().order(&order.id).unwrap();
        let sources = engine.state().order_stock_sources(&order).unwrap();
        let expected = [(north, units as u32)];
        assert_eq!(sources.iter().map(|p| (p.location_id, p.units)).collect::<Vec<_>>(), expected);
        placed.push((order.id, charges, sources));
    }
    wait_materialized(&engine);
    let state = engine.state();
    let pending = 2;
    assert!(
        state.order_charges_in_memory() <= 3 + pending,
        "{} orders' charges in memory, at most those of 3 settled and {pending} pending orders",
        state.order_charges_in_memory()
    );
    assert!(
        state.shipments_in_memory() <= 3,
        "{} shipments in memory",
        state.shipments_in_memory()
    );
    let read_back = |state: &State| {
        for (order_id, charges, sources) in &placed {
            assert_eq!(state.order_charges(order_id).as_deref(), Some(&**charges));
            let order = state.order(order_id).unwrap();
            assert_eq!(state.order_stock_sources(&order).as_ref(), Some(sources));
        }
    };
    read_back(state);
    let digest = state.digest();
    engine.close();

    let engine = open();
    let state = engine.state();
    assert_eq!(state.order_charges_in_memory(), pending, "those of pending orders load");
    assert_eq!(state.shipments_in_memory(), 0, "pending orders have none");
    assert_eq!(state.digest(), digest);
    read_back(state);
    check_invariants(state);
    engine.close();
}

/// The ids of the first 100 orders `filter` lists.
fn listed(state: &State, filter: &OrderFilter) -> Vec<OrderId> {
    state.orders(filter, None, 100).items.iter().map(|o| o.id).collect()
}

/// Idempotency records beyond `idempotency_records_in_memory` leave memory once the
/// store holds them, keeping only their age and a count: a retry with an old key is
/// still answered as the first time (read from the store), the key with another
/// request is still refused, a key reused after its record expired replaces the
/// stored record, and forgetting (by age and past the most kept) deletes stored
/// records as it does those in memory; an open loads none of them into memory.
#[test]
fn idempotency_records_leave_memory_and_are_read_back_from_the_store() {
    const MADE: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let open = |records_max: usize| {
        let mut config = trimming(dir.path(), clock.clone());
        config.idempotency_records_in_memory = Some(2);
        config.limits.idempotency_records_max = records_max;
        Engine::open(config).unwrap()
    };
    let engine = open(1_000);
    let shop = engine.blocking();
    stocked_sku(&shop, "I-1", 1000, 1000);
    let key = |n: usize| Some(IdempotencyKey { scope: "guest".into(), key: format!("k-{n}") });
    let checkout_of = |cart: &CartId, n: usize| Checkout {
        cart_id: cart.to_string(),
        email: Some("guest@example.com".into()),
        idempotency: key(n),
        ..Default::default()
    };
    let mut first = Vec::new();
    for n in 0..MADE {
        clock.advance(1);
        let cart = cart_with(&shop, &[("I-1", 1)]);
        let order = shop.send(checkout_of(&cart.id, n)).unwrap();
        first.push((cart.id, order));
    }
    wait_materialized(&engine);
    let state = engine.state();
    assert_eq!(state.idempotency_record_count(), MADE);
    assert!(
        state.idempotency_records_in_memory() <= 2,
        "{} records in memory, 2 allowed",
        state.idempotency_records_in_memory()
    );
    // Every key replays its own order, read from the store; another cart under an old
    // key is refused.
    for (n, (cart, order)) in first.iter().enumerate() {
        let replayed = shop.send(checkout_of(cart, n)).unwrap();
        assert_eq!((replayed.id, replayed.seq), (order.id, order.seq), "key {n}");
    }
    let other = cart_with(&shop, &[("I-1", 2)]);
    let reused = shop.send(checkout_of(&other.id, 0));
    assert!(matches!(reused, Err(EngineError::IdempotencyKeyReused)), "{reused:?}");
    assert_eq!(state.order_count(), MADE, "no retry placed an order");

    // A day after key 0 was first used (the others are younger), it comes again before
    // the sweep: its stored record is replaced, leaving one age entry for it.
    clock.advance(24 * 60 * 60 * 1000 + 1 - MADE as i64);
    let again = shop.send(checkout_of(&other.id, 0)).unwrap();
    assert_ne!(again.id, first[0].1.id);
    assert_eq!(state.idempotency_record_count(), MADE);
    let held = state.idempotency_record(&key(0).unwrap().scoped()).expect("the new record");
    assert_eq!(held.outcome, IdempotentOutcome::Placed(again.id));
    // The first orders' reservations ran out meanwhile: expired here, so that the
    // sweep an open starts with finds nothing due.
    shop.send(ExpireDue).unwrap();
    assert_eq!(state.idempotency_record_count(), MADE);
    wait_materialized(&engine);
    let digest = state.digest();
    engine.close();

    // Reopened: no record loads into memory.
    let engine = open(1_000);
    assert_eq!(engine.state().digest(), digest);
    let held = engine.state().idempotency_records_in_memory();
    assert_eq!((engine.state().idempotency_record_count(), held), (MADE, 0));
    engine.close();

    // Reopened with room for 30: the sweep forgets the oldest past the bound, then
    // those past their time, out of memory or not.
    let engine = open(30);
    let shop = engine.blocking();
    let state = engine.state();
    // An open sweeps at once; this one waits for it, or does it.
    shop.send(ExpireDue).unwrap();
    assert_eq!(state.idempotency_record_count(), 30);
    // Keys 1..=10 were the oldest (key 0 is the newest now).
    for n in 1..=10 {
        assert!(state.idempotency_record(&key(n).unwrap().scoped()).is_none(), "key {n}");
    }
    assert!(state.idempotency_record(&key(11).unwrap().scoped()).is_some());
    clock.advance(MADE as i64);
    shop.send(ExpireDue).unwrap();
    assert_eq!(state.idempotency_record_count(), 1, "only key 0's new record is left");
    assert!(state.idempotency_record(&key(0).unwrap().scoped()).is_some());
    assert!(state.idempotency_record(&key(11).unwrap().scoped()).is_none());
    let digest = state.digest();
    wait_materialized(&engine);
    engine.close();

    // The deletes reached the store.
    let engine = open(30);
    assert_eq!(engine.state().digest(), digest);
    assert_eq!(engine.state().idempotency_record_count(), 1);
    check_invariants(engine.state());
    engine.close();
}

/// The keys of a table's rows in the store under a closed engine.
pub(crate) fn stored_rows(dir: &std::path::Path, table: &str) -> Vec<Vec<u8>> {
    let store = crate::recovery::open_store(dir);
    let mut keys = Vec::new();
    store
        .scan(table, &mut |key, _| {
            keys.push(key.to_vec());
            true
        })
        .unwrap();
    keys
}

/// A guest's checkout of one unit of `sku` in a new cart, under idempotency key `key`.
fn keyed_checkout(shop: &BlockingEngine, sku: &str, key: &str) {
    let cart = cart_with(shop, &[(sku, 1)]);
    shop.send(Checkout {
        cart_id: cart.id.to_string(),
        email: Some("guest@example.com".into()),
        idempotency: Some(IdempotencyKey { scope: "guest".into(), key: key.into() }),
        ..Default::default()
    })
    .unwrap();
}

/// Every idempotency record has an age row beside it in the store, so that records out
/// of memory are forgotten in age order without their keys in memory. A directory
/// with fewer age rows than records (written before age rows existed, or a rebuild cut
/// short) gets them back at open, and every record is still forgotten when it is due;
/// forgetting deletes both rows.
#[test]
fn missing_idempotency_age_rows_are_rebuilt_at_open() {
    const MADE: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let open = || {
        let mut config = trimming(dir.path(), clock.clone());
        config.idempotency_records_in_memory = Some(0);
        Engine::open(config).unwrap()
    };
    let engine = open();
    let shop = engine.blocking();
    stocked_sku(&shop, "A-1", 1000, 1000);
    for n in 0..MADE {
        clock.advance(1);
        keyed_checkout(&shop, "A-1", &format!("a-{n}"));
    }
    wait_materialized(&engine);
    engine.close();
    let ages = stored_rows(dir.path(), "idempotency_ages");
    assert_eq!((stored_rows(dir.path(), "idempotency").len(), ages.len()), (MADE, MADE));

    // A third of the age rows go missing.
    {
        let store = crate::recovery::open_store(dir.path());
        let mut batch = emporium_storage::WriteBatch::default();
        for key in ages.iter().step_by(3) {
            batch.delete("idempotency_ages", key);
        }
        store.write(&batch, true).unwrap();
    }
    assert_eq!(stored_rows(dir.path(), "idempotency_ages").len(), MADE - MADE.div_ceil(3));

    let engine = open();
    let shop = engine.blocking();
    assert_eq!(engine.state().idempotency_record_count(), MADE);
    assert_eq!(engine.state().idempotency_records_in_memory(), 0);
    clock.advance(24 * 60 * 60 * 1000);
    shop.send(ExpireDue).unwrap();
    assert_eq!(engine.state().idempotency_record_count(), 0, "every record is past its time");
    wait_materialized(&engine);
    engine.close();
    assert_eq!(stored_rows(dir.path(), "idempotency").len(), 0);
    assert_eq!(stored_rows(dir.path(), "idempotency_ages").len(), 0);
}

/// The sweep forgets records out of memory whose deletions the materializer has not
/// written yet exactly once: the next sweep, before they are written, takes the next
/// oldest records, not the same ones again.
#[test]
fn a_sweep_before_the_last_ones_deletions_are_written_takes_the_next_records() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let key = |n: usize| Some(IdempotencyKey { scope: "guest".into(), key: format!("s-{n}") });
    let checkout_of = |shop: &BlockingEngine, n: usize| {
        clock.advance(1);
        keyed_checkout(shop, "S-1", &format!("s-{n}"));
    };
    let engine = {
        let mut config = trimming(dir.path(), clock.clone());
        config.idempotency_records_in_memory = Some(0);
        Engine::open(config).unwrap()
    };
    let shop = engine.blocking();
    stocked_sku(&shop, "S-1", 1000, 1000);
    for n in 0..10 {
        checkout_of(&shop, n);
    }
    wait_materialized(&engine);
    engine.close();

    // Reopened with room for 5 and a materializer that does not write for an hour.
    let mut config = unmaterialized_config(dir.path(), clock.clone());
    config.idempotency_records_in_memory = Some(0);
    config.limits.idempotency_records_max = 5;
    let engine = Engine::open(config).unwrap();
    let shop = engine.blocking();
    let state = engine.state();
    clock.advance(1);
    shop.send(ExpireDue).unwrap();
    assert_eq!(state.idempotency_record_count(), 5);
    for n in 10..13 {
        checkout_of(&shop, n);
    }
    assert_eq!(state.idempotency_record_count(), 8);
    shop.send(ExpireDue).unwrap();
    assert_eq!(state.idempotency_record_count(), 5, "the three oldest left are forgotten");
    for n in 0..8 {
        assert!(state.idempotency_record(&key(n).unwrap().scoped()).is_none(), "key {n}");
    }
    for n in 8..13 {
        assert!(state.idempotency_record(&key(n).unwrap().scoped()).is_some(), "key {n}");
    }
    engine.close();
}

/// Records of one millisecond are forgotten by key order within it; one made in the
/// sweep's own millisecond after the sweep, with a lower key than the last it forgot,
/// is still found once it is out of memory, and is the next one forgotten.
#[test]
fn a_record_of_the_sweeps_own_millisecond_is_forgotten_in_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let key = |k: &str| Some(IdempotencyKey { scope: "guest".into(), key: k.into() });
    let mut config = trimming(dir.path(), clock.clone());
    config.idempotency_records_in_memory = Some(0);
    // The tests' engines sweep only when asked (`ExpireDue`).
    config.limits.idempotency_records_max = 3;
    let engine = Engine::open(config).unwrap();
    let shop = engine.blocking();
    stocked_sku(&shop, "M-1", 1000, 1000);
    // The clock stands still: every record is of the same millisecond.
    for k in ["k-b", "k-c", "k-d", "k-e"] {
        keyed_checkout(&shop, "M-1", k);
    }
    wait_materialized(&engine);
    let state = engine.state();
    shop.send(ExpireDue).unwrap();
    assert_eq!(state.idempotency_record_count(), 3);
    assert!(state.idempotency_record(&key("k-b").unwrap().scoped()).is_none());
    keyed_checkout(&shop, "M-1", "k-a");
    wait_materialized(&engine);
    assert_eq!(state.idempotency_records_in_memory(), 0);
    shop.send(ExpireDue).unwrap();
    assert_eq!(state.idempotency_record_count(), 3);
    for (k, held) in [("k-a", false), ("k-c", true), ("k-d", true), ("k-e", true)] {
        let found = state.idempotency_record(&key(k).unwrap().scoped()).is_some();
        assert_eq!(found, held, "{k}");
    }
    engine.close();
}
