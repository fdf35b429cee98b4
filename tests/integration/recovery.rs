//! Reopening a directory gives back exactly the state that was acknowledged; a
//! directory in another format is refused; checkpoints open as engines.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use emporium_engine::*;
use emporium_tests::{
    cart_with, check_invariants, checkout, config, levels, pay, stocked_sku, unmaterialized_config,
    TestEngine,
};

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
        [Event::Orders(OrderEvent::Placed(placed))] => assert_eq!(placed.id, order.id),
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
            skip_list_column_families: vec!["orders"],
            backend: BackendKind::RocksDb,
            ..Default::default()
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

/// A format-3 log (written before the flash-sale events were appended to the event
/// enum), format-4 log (before the refund event), format-5 log (before the
/// promotions' events), format-6 log (before the returns') or format-7 log (before the
/// payment calls') is read as it is: its unmaterialized
/// tail is replayed, and the log is stamped with the current format, so a build that
/// does not know the new events refuses it by its version from then on.
#[test]
fn older_logs_of_the_same_layout_are_replayed_and_restamped() {
    for old in [3u8, 4, 5, 6, 7] {
        an_older_log_is_replayed_and_restamped(old);
    }
}

fn an_older_log_is_replayed_and_restamped(old: u8) {
    use emporium_storage::{CF_LOG, CF_META};
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(ManualClock::new(emporium_tests::T0));
    let engine = Engine::open(unmaterialized_config(dir.path(), clock.clone())).unwrap();
    let shop = engine.blocking();
    stocked_sku(&shop, "V3-1", 100, 5);
    let order = checkout(&shop, &cart_with(&shop, &[("V3-1", 2)]).id).unwrap();
    let copy = dir.path().join("copy");
    engine.checkpoint(&copy).unwrap();
    engine.close();
    // The checkpoint's rows reflect LSN 0, its log holds everything: written back as
    // format `old`, record by record, with the log's format row.
    let store = open_store(&copy);
    // The log is in a database of its own by now: the records and the format row are
    // two writes.
    let mut batch = emporium_storage::WriteBatch::default();
    let records = store.read_log(0, 10_000).unwrap();
    assert!(!records.is_empty());
    for record in records {
        let mut payload = record.payload.clone();
        assert_eq!(payload[1], ENGINE_FORMAT_VERSION as u8, "records carry the log format");
        payload[1] = old;
        batch.append_log(record.lsn, &payload);
    }
    store.write(&batch, true).unwrap();
    let mut batch = emporium_storage::WriteBatch::default();
    batch.put(CF_META, format!("format/{CF_LOG}").as_bytes(), &u32::from(old).to_le_bytes());
    store.write(&batch, true).unwrap();
    drop(store);

    let engine = Engine::open(config(&copy, clock)).expect("an older log opens");
    let state = engine.state();
    assert_eq!(levels(state, "V3-1"), (5, 2), "the tail was replayed");
    assert_eq!(state.order(&order.id).unwrap().lines.len(), 1);
    assert!(!engine.read_log(Lsn(1), 100).unwrap().is_empty(), "its records still read");
    engine.close();
    let stamp =
        open_store(&copy).get(CF_META, format!("format/{CF_LOG}").as_bytes()).unwrap().unwrap();
    assert_eq!(
        stamp,
        ENGINE_FORMAT_VERSION.to_le_bytes(),
        "the log is stamped with this build's format"
    );
}

/// The store under a closed engine's directory.
pub(crate) fn open_store(dir: &std::path::Path) -> emporium_storage::Store {
    let config = emporium_storage::StoreConfig {
        path: dir.to_path_buf(),
        backend: BackendKind::RocksDb,
        ..Default::default()
    };
    emporium_storage::Store::open(&config).unwrap()
}

/// Opens the store under an engine directory to damage it the way a bug or a bad copy
/// would.
fn tamper(dir: &std::path::Path, damage: impl FnOnce(&mut emporium_storage::WriteBatch)) {
    let store = open_store(dir);
    let mut batch = emporium_storage::WriteBatch::default();
    damage(&mut batch);
    store.write(&batch, true).unwrap();
}

/// Stock that says units are reserved while no pending order holds them (a pending
/// order's row is gone) is refused at open with the SKU named, not served.
#[test]
fn a_reservation_without_its_order_is_refused_at_open() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "RM-1", 100, 5);
    let order = checkout(&te.shop, &cart_with(&te.shop, &[("RM-1", 3)]).id).unwrap();
    let TestEngine { engine, clock, dir, .. } = te;
    engine.close();
    // Orders are stored under their sequence number.
    tamper(dir.path(), |batch| batch.delete("orders", &order.seq.to_be_bytes()));
    match Engine::open(config(dir.path(), clock)) {
        Err(EngineError::IncompatibleData(message)) => {
            assert!(message.contains("RM-1") && message.contains("3 units reserved"), "{message}")
        }
        other => panic!("expected the mismatch to be refused, got {other:?}"),
    }
}

/// The tables that grow with orders load on several threads, a chunk of rows at a
/// time. Many chunks' worth of carts come back whole, and one row that does not decode
/// among them is refused with a clear error, not skipped or hung on.
#[test]
fn a_table_loaded_on_several_threads_comes_back_whole_and_refuses_a_bad_row() {
    // Several chunks of rows (a chunk is 512).
    const CARTS: usize = 1_600;
    let te = TestEngine::new();
    let ids: Vec<CartId> = std::thread::scope(|scope| {
        let makers: Vec<_> = (0..8)
            .map(|_| {
                let shop = te.shop.clone();
                scope.spawn(move || {
                    (0..CARTS / 8)
                        .map(|_| shop.send(CreateCart::default()).unwrap().id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        makers.into_iter().flat_map(|m| m.join().unwrap()).collect()
    });
    let TestEngine { engine, clock, dir, .. } = te;
    engine.close();

    let engine = Engine::open(config(dir.path(), clock.clone())).unwrap();
    let state = engine.state();
    assert_eq!(state.open_cart_count(), CARTS);
    assert!(ids.iter().all(|id| state.cart(id).is_some_and(|cart| cart.id == *id)));
    let middle = state.cart(&ids[CARTS / 2]).unwrap().seq;
    engine.close();

    // Carts are stored under their sequence number.
    tamper(dir.path(), |batch| batch.put("carts", &middle.to_be_bytes(), b"not a cart"));
    match Engine::open(config(dir.path(), clock)) {
        Err(EngineError::IncompatibleData(message)) => {
            assert!(message.contains("cart"), "{message}")
        }
        other => panic!("expected the bad row to be refused, got {other:?}"),
    }
}

/// Rows that reflect an LSN the log no longer continues from (entries after it are
/// gone) are refused at open: replaying past a gap would make a wrong state.
#[test]
fn a_gap_between_the_rows_and_the_log_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(ManualClock::new(emporium_tests::T0));
    let engine = Engine::open(unmaterialized_config(dir.path(), clock.clone())).unwrap();
    stocked_sku(&engine.blocking(), "GAP-1", 100, 5);
    let tail = engine.last_lsn().0;
    let copy = dir.path().join("copy");
    engine.checkpoint(&copy).unwrap();
    engine.close();
    // The checkpoint's rows reflect LSN 0; its log holds 1..=tail. Drop entry 1.
    tamper(&copy, |batch| batch.trim_log(0, 2));
    match Engine::open(config(&copy, clock)) {
        Err(EngineError::IncompatibleData(message)) => {
            assert!(message.contains("are missing"), "{message}")
        }
        other => panic!("expected the gap (of {tail} entries) to be refused, got {other:?}"),
    }
}

/// `Recorded` logs the command's events and its rendered answer as one entry, and the
/// record survives a reopen with the effect.
#[test]
fn a_recorded_answer_shares_its_commands_log_entry() {
    let te = TestEngine::new();
    let key = IdempotencyKey { scope: "cus_1|carts".into(), key: "k".into() };
    let before = te.engine.last_lsn().0;
    let cart = te
        .shop
        .send(Recorded {
            request: CreateCart::default(),
            key: key.clone(),
            fingerprint: 7,
            render: Box::new(|_, cart: &std::sync::Arc<Cart>| {
                Some((201, cart.id.to_string().into_bytes()))
            }),
        })
        .unwrap();
    let entries = te.engine.read_log(Lsn(before + 1), 10).unwrap();
    assert_eq!(entries.len(), 1, "one entry: {entries:?}");
    assert!(matches!(
        entries[0].events.as_slice(),
        [
            Event::Carts(CartEvent::CartCreated(_)),
            Event::Idempotency(IdempotencyEvent::ResponseRecorded(_))
        ]
    ));
    // The same key again is refused inside the engine (the server replays before it).
    let again = te.shop.send(Recorded {
        request: CreateCart::default(),
        key: key.clone(),
        fingerprint: 7,
        render: Box::new(|_, _: &std::sync::Arc<Cart>| None),
    });
    assert!(matches!(again, Err(EngineError::Conflict(_))), "{again:?}");
    let te = te.reopen();
    let record = te.state().idempotency_record(&key.scoped()).expect("the record");
    match &record.outcome {
        IdempotentOutcome::Response(response) => {
            assert_eq!(
                (response.status, response.body.clone()),
                (201, cart.id.to_string().into_bytes())
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(te.state().cart(&cart.id).is_some());
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
        ..Default::default()
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

/// A directory written by format 1 (rows and log payloads without an envelope, a
/// positional counter array; `fixtures/v1`, made by the engine before format 2) opens
/// with every entity and idempotency record intact, upgraded in place, and goes on.
#[test]
fn a_format_1_directory_is_upgraded_in_place_with_everything_intact() {
    let upgraded = upgrades_in_place("v1");
    // Format 1's log was dropped by the upgrade: the rows held all of it.
    assert_eq!(upgraded.replayed, 0);
    upgraded.engine.close();
}

/// A directory written by format 2 (`fixtures/v2`: the format-1 fixture opened by the
/// engine of format 2, then 16 more commands whose rows were never materialized, the
/// process gone without a close) opens with its log rewritten in format 3: the tail is
/// replayed through the converted events, and log readers get them too.
#[test]
fn a_format_2_directory_is_upgraded_in_place_and_its_log_tail_replayed() {
    let upgraded = upgrades_in_place("v2");
    let engine = &upgraded.engine;
    assert_eq!(upgraded.replayed, 16);
    let tail = engine.read_log(Lsn(47), 16).unwrap();
    assert_eq!(tail.iter().map(|e| e.lsn.0).collect::<Vec<_>>(), (47..=62).collect::<Vec<_>>());
    let placed = tail
        .iter()
        .flat_map(|e| &e.events)
        .filter(|e| matches!(e, Event::Orders(OrderEvent::Placed(_))))
        .count();
    assert_eq!(placed, 2, "the tail placed two orders");
    upgraded.engine.close();
    // Its format-2 rows were read as they are and every entity column family is now
    // stamped with row format 10 (the idempotency outcome grew twice, the order status
    // once, tables were added, idempotency rows took a layout of their own), so a build
    // that reads only format 2 refuses the directory instead of failing on a `Placed`
    // record.
    let store = open_store(&upgraded.data);
    for cf in ["idempotency", "orders", "products"] {
        let stamp = store.get(emporium_storage::CF_META, format!("format/{cf}").as_bytes());
        assert_eq!(stamp.unwrap().unwrap(), 10u32.to_le_bytes(), "{cf}");
    }
}

/// A fixture directory after [`upgrades_in_place`].
struct Upgraded {
    /// The engine of the second open.
    engine: Engine,
    /// Log entries the first open replayed after the rows.
    replayed: u64,
    /// The upgraded data directory.
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Opens a copy of `fixtures/<name>` (its `data/` and `manifest.txt`, the state the
/// engine that wrote it printed), checks the upgraded state prints the same, that it
/// goes on (counters continue, a key replays), and that it opens again upgraded for
/// good.
fn upgrades_in_place(name: &str) -> Upgraded {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
    let expected = std::fs::read_to_string(fixture.join("manifest.txt")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("data");
    copy_dir(&fixture.join("data"), &dir);
    let ids = Ids::parse(&expected);
    let clock = std::sync::Arc::new(ManualClock::new(1_780_000_000_000));

    let engine = Engine::open(config(&dir, clock.clone())).unwrap();
    let found = format!("{}{}", ids.header(), manifest(engine.state(), &ids));
    assert_eq!(found, expected, "the upgraded state differs from what {name} held");
    check_invariants(engine.state());
    let last = engine.last_lsn();
    let replayed = engine.stats().recovery_replayed_entries.load(Ordering::Relaxed);
    // It goes on: counters continue where they were, a replayed key still replays.
    let product = stocked_sku(&engine.blocking(), "AFTER-1", 100, 5);
    assert!(product.id > ProductId::parse(ids.products.last().unwrap()).unwrap());
    assert!(engine.last_lsn() > last);
    let replay = engine.blocking().send(Checkout {
        cart_id: ids.carts[0].clone(),
        email: Some("ann@example.com".into()),
        shipping_address: Some(Address {
            name: "Ann".into(),
            line1: "1 Main St".into(),
            city: "Springfield".into(),
            postal_code: "12345".into(),
            country: "US".into(),
            ..Default::default()
        }),
        idempotency: Some(IdempotencyKey { scope: "checkout".into(), key: "key-0".into() }),
        ..Default::default()
    });
    assert_eq!(replay.unwrap().id.to_string(), ids.orders[0]);
    engine.close();
    // The fixture's idempotency records had no age rows: the open made one for each.
    let records = crate::retention::stored_rows(&dir, "idempotency").len();
    assert!(records > 0, "the fixture holds idempotency records");
    assert_eq!(crate::retention::stored_rows(&dir, "idempotency_ages").len(), records);

    // Upgraded for good: it opens again in the current format, the same state plus the
    // new rows.
    let engine = Engine::open(config(&dir, clock)).unwrap();
    assert!(engine.state().product(&product.id).is_some());
    let body = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                !l.starts_with("ids\t") && !l.starts_with("lsn\t") && !l.contains("AFTER-1")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(body(&manifest(engine.state(), &ids)), body(&expected));
    Upgraded { engine, replayed, data: dir, _dir: work }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The ids the fixture's manifest names (its `ids` lines).
struct Ids {
    products: Vec<String>,
    carts: Vec<String>,
    orders: Vec<String>,
    keys: Vec<String>,
    client: String,
}

impl Ids {
    fn parse(manifest: &str) -> Ids {
        let field = |name: &str| -> Vec<String> {
            let prefix = format!("ids\t{name}\t");
            let line = manifest.lines().find(|l| l.starts_with(&prefix)).expect(name);
            line[prefix.len()..].split(',').map(str::to_string).collect()
        };
        Ids {
            products: field("products"),
            carts: field("carts"),
            orders: field("orders"),
            keys: field("keys").iter().map(|k| k.replace('|', "\0")).collect(),
            client: field("client").remove(0),
        }
    }

    fn header(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| k.replace('\0', "|")).collect();
        format!(
            "ids\tproducts\t{}\nids\tcarts\t{}\nids\torders\t{}\nids\tkeys\t{}\nids\tclient\t{}\n",
            self.products.join(","),
            self.carts.join(","),
            self.orders.join(","),
            keys.join(","),
            self.client
        )
    }
}

/// Every entity of the fixture, one line each, in a fixed order: the same text the
/// format-1 engine wrote into `manifest.txt` when it made the fixture.
fn manifest(state: &State, ids: &Ids) -> String {
    use std::fmt::Write;
    let mut m = String::new();
    writeln!(m, "lsn\t{}", state.last_lsn().0).unwrap();
    for c in state.categories() {
        writeln!(m, "category\t{c:?}").unwrap();
    }
    for p in &ids.products {
        writeln!(m, "product\t{:?}", state.product(&ProductId::parse(p).unwrap()).unwrap())
            .unwrap();
    }
    for s in state.all_stock() {
        writeln!(m, "stock\t{s:?}").unwrap();
    }
    for c in &ids.carts {
        writeln!(m, "cart\t{:?}", state.cart(&CartId::parse(c).unwrap()).unwrap()).unwrap();
    }
    for o in &ids.orders {
        writeln!(m, "order\t{:?}", state.order(&OrderId::parse(o).unwrap()).unwrap()).unwrap();
    }
    for r in [Role::Customer, Role::Staff, Role::Admin] {
        for c in state.customers_with_role(r) {
            writeln!(m, "customer\t{c:?}").unwrap();
        }
    }
    for k in &ids.keys {
        // A record made by replaying the log names its order (`Placed`, `Paid`) where
        // the engine that wrote the fixture kept a copy (`Checkout`, `Payment`):
        // printed as the copy the replay answers with, which must equal the fixture's.
        let mut record = (*state.idempotency_record(k).unwrap()).clone();
        match &record.outcome {
            IdempotentOutcome::Placed(id) => {
                record.outcome =
                    IdempotentOutcome::Checkout(Arc::new(state.order(id).unwrap().as_placed()));
            }
            IdempotentOutcome::Paid(paid) => {
                let (order, payment) = paid.rebuild(&state.order(&paid.order_id).unwrap()).unwrap();
                record.outcome = IdempotentOutcome::Payment(Arc::new(order), Arc::new(payment));
            }
            _ => {}
        }
        writeln!(m, "idempotency\t{record:?}").unwrap();
    }
    let client = ApiClientId::parse(&ids.client).unwrap();
    writeln!(m, "api_client\t{:?}", state.api_client(&client).unwrap()).unwrap();
    for h in ["a".repeat(64), "b".repeat(64)] {
        writeln!(m, "refresh_token\t{:?}", state.refresh_token(&h).unwrap()).unwrap();
    }
    for k in state.signing_keys() {
        writeln!(m, "signing_key\t{k:?}").unwrap();
    }
    m
}
