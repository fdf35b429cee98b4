//! Reopening a directory gives back exactly the state that was acknowledged; a
//! directory in another format is refused; checkpoints open as engines.

use emporium_engine::*;
use emporium_tests::{cart_with, check_invariants, checkout, config, pay, stocked_sku, TestEngine};

#[test]
fn reopen_restores_state_and_continues_the_log() {
    let te = TestEngine::new();
    let category = te.shop.send(CreateCategory { name: "Shirts".into(), parent_id: None }).unwrap();
    let product = stocked_sku(&te.shop, "R-1", 1500, 10);
    stocked_sku(&te.shop, "R-2", 700, 3);
    let customer = te
        .shop
        .send(RegisterCustomer {
            email: "Ann@Example.com".into(),
            name: "Ann".into(),
            role: Role::Customer,
            credential: "hash".into(),
        })
        .unwrap();
    let paid = checkout(&te.shop, &cart_with(&te.shop, &[("R-1", 2)]).id).unwrap();
    pay(&te.shop, &paid.id).unwrap();
    let pending = checkout(&te.shop, &cart_with(&te.shop, &[("R-1", 1), ("R-2", 3)]).id).unwrap();
    let open_cart = cart_with(&te.shop, &[("R-2", 1)]);
    let lsn = te.engine.last_lsn();

    let te = te.reopen();
    let state = te.state();
    assert_eq!(te.engine.last_lsn(), lsn);
    assert_eq!(te.engine.durable_lsn(), lsn);
    assert_eq!(state.category(&category.id).unwrap().name, "Shirts");
    assert_eq!(*state.product(&product.id).unwrap(), *product);
    assert_eq!(state.product_by_handle(&product.handle).unwrap().id, product.id);
    assert_eq!(state.product_by_sku(&Sku::new("R-1").unwrap()).unwrap().id, product.id);
    assert_eq!(state.customer_by_email("ann@example.com").unwrap().id, customer.id);
    assert_eq!(state.order(&paid.id).unwrap().status, OrderStatus::Paid);
    assert_eq!(state.order(&pending.id).unwrap().status, OrderStatus::PendingPayment);
    assert_eq!(state.cart(&open_cart.id).unwrap().lines.len(), 1);
    let r1 = state.stock(&Sku::new("R-1").unwrap()).unwrap();
    assert_eq!((r1.on_hand, r1.reserved), (8, 1));
    check_invariants(state);

    // Sequential ids go on from where they were, and the log stays contiguous.
    let next = te.shop.send(CreateCategory { name: "Shoes".into(), parent_id: None }).unwrap();
    assert!(next.id > category.id);
    assert_eq!(te.engine.last_lsn().0, lsn.0 + 1);
    let entries = te.engine.read_log(Lsn(1), 1000).unwrap();
    let lsns: Vec<u64> = entries.iter().map(|e| e.lsn.0).collect();
    assert_eq!(lsns, (1..=lsn.0 + 1).collect::<Vec<_>>());
    // Reservations expire after a restart too.
    te.clock.advance(Limits::default().reservation_ttl_ms);
    assert_eq!(te.shop.send(ExpireDue).unwrap(), 1);
    check_invariants(te.state());
}

#[test]
fn the_log_reads_back_the_events_from_any_lsn() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "L-1", 100, 5);
    let order = checkout(&te.shop, &cart_with(&te.shop, &[("L-1", 2)]).id).unwrap();
    let last = te.engine.last_lsn();
    let tail = te.engine.read_log(last, 10).unwrap();
    assert_eq!(tail.len(), 1);
    match &tail[0].events[..] {
        [Event::OrderPlaced { order: placed, .. }] => assert_eq!(placed.id, order.id),
        other => panic!("expected the order placement, got {other:?}"),
    }
    assert!(te.engine.read_log(Lsn(last.0 + 1), 10).unwrap().is_empty());
}

#[test]
fn a_checkpoint_opens_as_an_engine_at_its_lsn() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "C-1", 100, 5);
    let target = te.dir.path().with_extension("checkpoint");
    te.engine.checkpoint(&target).unwrap();
    let lsn = te.engine.last_lsn();
    stocked_sku(&te.shop, "C-2", 100, 5);
    let copy = Engine::open(config(&target, te.clock.clone())).unwrap();
    assert_eq!(copy.last_lsn(), lsn);
    assert!(copy.state().product_by_sku(&Sku::new("C-1").unwrap()).is_some());
    assert!(copy.state().product_by_sku(&Sku::new("C-2").unwrap()).is_none());
    copy.close();
    std::fs::remove_dir_all(&target).unwrap();
    assert!(te.engine.checkpoint(te.dir.path()).is_err(), "a checkpoint never overwrites");
}

#[test]
fn a_directory_of_another_format_is_refused() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "F-1", 100, 5);
    let dir = te.dir.path().to_path_buf();
    let TestEngine { engine, clock, dir: _keep, .. } = te;
    engine.close();
    {
        let store = emporium_storage::Store::open(&emporium_storage::StoreConfig {
            path: dir.clone(),
            column_families: vec!["orders"],
            backend: BackendKind::RocksDb,
        })
        .unwrap();
        let mut batch = emporium_storage::WriteBatch::default();
        batch.put(
            emporium_storage::CF_META,
            b"format/orders",
            &(ENGINE_FORMAT_VERSION + 1).to_le_bytes(),
        );
        store.write(&batch, true).unwrap();
    }
    match Engine::open(config(&dir, clock)) {
        Err(EngineError::IncompatibleData(message)) => {
            assert!(message.contains("orders"), "{message}")
        }
        other => panic!("expected the directory to be refused, got {other:?}"),
    }
}

#[test]
fn idempotent_checkout_replays_after_restart() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "I-1", 100, 5);
    let cart = cart_with(&te.shop, &[("I-1", 2)]);
    let request = Checkout {
        cart_id: cart.id.to_string(),
        email: Some("i@example.com".into()),
        shipping_address: None,
        idempotency: Some(IdempotencyKey { scope: "guest".into(), key: "key-1".into() }),
    };
    let first = te.shop.send(request.clone()).unwrap();
    let te = te.reopen();
    let again = te.shop.send(request.clone()).unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(te.state().stock(&Sku::new("I-1").unwrap()).unwrap().reserved, 2);
    let different = Checkout { email: Some("other@example.com".into()), ..request };
    assert!(matches!(te.shop.send(different), Err(EngineError::IdempotencyKeyReused)));
}

/// The engine runs on sled as it does on RocksDB: the same commands, the same state
/// after a reopen.
#[cfg(feature = "sled")]
#[test]
fn the_sled_backend_recovers_the_same_state() {
    let te = TestEngine::with(|config| config.backend = BackendKind::Sled);
    stocked_sku(&te.shop, "S-1", 100, 5);
    let order = checkout(&te.shop, &cart_with(&te.shop, &[("S-1", 2)]).id).unwrap();
    pay(&te.shop, &order.id).unwrap();
    let lsn = te.engine.last_lsn();
    let TestEngine { engine, shop, clock, dir } = te;
    drop(shop);
    engine.close();
    let mut config = config(dir.path(), clock);
    config.backend = BackendKind::Sled;
    let engine = Engine::open(config).unwrap();
    assert_eq!(engine.last_lsn(), lsn);
    assert_eq!(engine.state().order(&order.id).unwrap().status, OrderStatus::Paid);
    let levels = engine.state().stock(&Sku::new("S-1").unwrap()).unwrap();
    assert_eq!((levels.on_hand, levels.reserved), (3, 0));
    check_invariants(engine.state());
    engine.close();
}
