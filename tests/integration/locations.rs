//! Stock in several locations through the embedding API: the reservation rule as data
//! (priority, then the fullest, then the id; a line split across locations; all or
//! nothing), payment shipping from where units were reserved, cancel and expiry
//! releasing there, transfers, the single-location commands acting on the default
//! location, flash sales, the locations' own rules, and a restart and a log replay.

use emporium_engine::*;
use emporium_tests::*;

const HOUR: i64 = 3_600_000;

/// A SKU's `(on_hand, reserved)` at each location, in location order.
fn at(state: &State, sku: &str) -> Vec<(u32, u32)> {
    let sku = Sku::new(sku).unwrap();
    let (_, levels) = state.stock_by_location(&sku).expect("the SKU has stock");
    levels.iter().map(|l| (l.on_hand, l.reserved)).collect()
}

/// Where an order's units are, as `(sku, location seq, units)`.
fn sources(te: &TestEngine, order: &OrderId) -> Option<Vec<(String, u64, u32)>> {
    let order = te.state().order(order).unwrap();
    let sources = te.state().order_stock_sources(&order)?;
    Some(sources.iter().map(|p| (p.sku.to_string(), p.location_id.seq(), p.units)).collect())
}

fn location(te: &TestEngine, name: &str, priority: i64) -> LocationId {
    let create =
        CreateLocation { name: name.into(), kind: "warehouse".into(), priority: Some(priority) };
    te.shop.send(create).expect("create a location").id
}

fn set_at(te: &TestEngine, sku: &str, location: LocationId, on_hand: i64) {
    let set = SetLocationStock {
        sku: sku.into(),
        location_id: location.to_string(),
        on_hand,
        reason: "count".into(),
        expected_version: None,
    };
    te.shop.send(set).expect("set stock at a location");
}

fn order_of(te: &TestEngine, lines: &[(&str, i64)]) -> Result<std::sync::Arc<Order>> {
    let cart = cart_with(&te.shop, lines);
    checkout(&te.shop, &cart.id)
}

/// A shop selling A and B, with locations North and South beside the default one.
fn shop(north_priority: i64, south_priority: i64) -> (TestEngine, LocationId, LocationId) {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "A", 1000, 0);
    stocked_sku(&te.shop, "B", 500, 0);
    let north = location(&te, "North", north_priority);
    let south = location(&te, "South", south_priority);
    (te, north, south)
}

#[test]
fn a_checkout_reserves_by_priority_then_the_fullest_and_all_or_nothing() {
    // (priorities of North and South; on hand at default, North, South; units ordered;
    // what each location then has reserved, or the refusal). The default location's
    // priority is 100.
    type Case = ((i64, i64), [i64; 3], i64, Result<[u32; 3], &'static str>);
    let cases: Vec<Case> = vec![
        // Equal priorities: the fullest first, then the next, splitting the line.
        ((10, 10), [5, 3, 4], 6, Ok([0, 2, 4])),
        ((10, 10), [5, 3, 4], 8, Ok([1, 3, 4])),
        ((10, 10), [5, 3, 4], 12, Ok([5, 3, 4])),
        // A tie on priority and units: by id (North was created first).
        ((10, 10), [5, 4, 4], 5, Ok([0, 4, 1])),
        // Priority beats fullness: South (5) before North (10), both before default.
        ((10, 5), [9, 9, 2], 4, Ok([0, 2, 2])),
        // The default location can come first.
        ((200, 300), [3, 9, 9], 4, Ok([3, 1, 0])),
        // Nothing at the first choice: the others serve.
        ((10, 10), [7, 0, 0], 2, Ok([2, 0, 0])),
        // More than every location together: refused, nothing reserved anywhere.
        ((10, 10), [5, 3, 4], 13, Err("out_of_stock: A 13>12")),
    ];
    for ((north_priority, south_priority), stock, units, expected) in cases {
        let (te, north, south) = shop(north_priority, south_priority);
        for (location, on_hand) in
            [(LocationId::DEFAULT, stock[0]), (north, stock[1]), (south, stock[2])]
        {
            set_at(&te, "A", location, on_hand);
        }
        let case = format!("priorities {north_priority}/{south_priority}, {stock:?}, {units}");
        let placed = order_of(&te, &[("A", units)]);
        let on_hand = stock.map(|n| n as u32);
        match expected {
            Ok(reserved) => {
                placed.expect(&case);
                let want: Vec<(u32, u32)> = on_hand.into_iter().zip(reserved).collect();
                assert_eq!(at(te.state(), "A"), want, "{case}");
            }
            Err(code) => {
                assert_eq!(outcome(&placed), code, "{case}");
                let want: Vec<(u32, u32)> = on_hand.into_iter().map(|n| (n, 0)).collect();
                assert_eq!(at(te.state(), "A"), want, "{case}: nothing reserved");
            }
        }
        check_invariants(te.state());
    }

    // Several lines: one short line refuses the whole checkout, whichever locations
    // would have served the others.
    let (te, north, south) = shop(10, 10);
    set_at(&te, "A", north, 4);
    set_at(&te, "B", south, 2);
    set_at(&te, "B", LocationId::DEFAULT, 1);
    assert_eq!(outcome(&order_of(&te, &[("A", 4), ("B", 4)])), "out_of_stock: B 4>3");
    assert_eq!(at(te.state(), "A"), [(0, 0), (4, 0), (0, 0)]);
    assert_eq!(at(te.state(), "B"), [(1, 0), (0, 0), (2, 0)]);
    order_of(&te, &[("A", 4), ("B", 3)]).unwrap();
    assert_eq!(at(te.state(), "A"), [(0, 0), (4, 4), (0, 0)]);
    assert_eq!(at(te.state(), "B"), [(1, 1), (0, 0), (2, 2)]);
}

#[test]
fn units_ship_and_come_back_where_they_were_reserved() {
    let (te, north, south) = shop(10, 20);
    for (location, on_hand) in [(LocationId::DEFAULT, 10), (north, 3), (south, 3)] {
        set_at(&te, "A", location, on_hand);
    }
    // 5 units: North's 3, then South's 2.
    let paid = order_of(&te, &[("A", 5)]).unwrap();
    assert_eq!(at(te.state(), "A"), [(10, 0), (3, 3), (3, 2)]);
    // 2 more: South's last one, then the default's.
    let cancelled = order_of(&te, &[("A", 2)]).unwrap();
    assert_eq!(at(te.state(), "A"), [(10, 1), (3, 3), (3, 3)]);
    // 3 more from the default; this one expires.
    let expired = order_of(&te, &[("A", 3)]).unwrap();
    assert_eq!(at(te.state(), "A"), [(10, 4), (3, 3), (3, 3)]);

    let a = || "A".to_string();
    assert_eq!(sources(&te, &paid.id), Some(vec![(a(), 1, 3), (a(), 2, 2)]));
    assert_eq!(sources(&te, &cancelled.id), Some(vec![(a(), 2, 1), (a(), 0, 1)]));
    pay(&te.shop, &paid.id).unwrap();
    assert_eq!(at(te.state(), "A"), [(10, 4), (0, 0), (1, 1)], "shipped from North and South");
    assert_eq!(sources(&te, &paid.id), Some(vec![(a(), 1, 3), (a(), 2, 2)]), "the pick list");
    te.shop
        .send(CancelOrder { order_id: cancelled.id.to_string(), expected_version: None })
        .unwrap();
    assert_eq!(at(te.state(), "A"), [(10, 3), (0, 0), (1, 0)], "released at South and default");
    te.clock.advance(2 * HOUR);
    te.shop.send(ExpireDue).unwrap();
    assert_eq!(te.state().order(&expired.id).unwrap().status, OrderStatus::Expired);
    assert_eq!(at(te.state(), "A"), [(10, 0), (0, 0), (1, 0)]);
    assert!(te.state().allocation(&Holder::Order(paid.id)).is_none(), "nothing left to track");
    assert_eq!(sources(&te, &cancelled.id), Some(vec![]));
    assert_eq!(sources(&te, &expired.id), Some(vec![]));
    assert_eq!(levels(te.state(), "A"), (11, 0));
    check_invariants(te.state());
}

#[test]
fn transfers_and_the_single_location_commands() {
    let (te, north, _) = shop(10, 10);
    te.shop
        .send(SetStock {
            sku: "A".into(),
            on_hand: 8,
            reason: "count".into(),
            expected_version: None,
        })
        .unwrap();
    let transfer = |from: &str, to: &str, quantity: i64| {
        te.shop.send(TransferStock {
            sku: "A".into(),
            from_location_id: from.into(),
            to_location_id: to.into(),
            quantity,
            reason: "rebalance".into(),
        })
    };
    let (default, north_id) = (LocationId::DEFAULT.to_string(), north.to_string());
    let before = te.state().stock(&Sku::new("A").unwrap()).unwrap();
    let after = transfer(&default, &north_id, 5).unwrap();
    assert_eq!((after.on_hand, after.reserved), (8, 0), "the totals stay");
    assert_eq!(after.version, before.version + 1, "a transfer is a change of the SKU");
    assert_eq!(at(te.state(), "A"), [(3, 0), (5, 0), (0, 0)]);

    // North (priority 10) serves first; its reserved units cannot move.
    order_of(&te, &[("A", 4)]).unwrap();
    assert_eq!(at(te.state(), "A"), [(3, 0), (5, 4), (0, 0)]);
    let refusals = [
        (transfer(&north_id, &default, 2), "conflict"),
        (transfer(&north_id, &north_id, 1), "validation_failed: to_location_id"),
        (transfer(&north_id, "loc_00000000009z", 1), "validation_failed: to_location_id"),
        (transfer("nowhere", &default, 1), "validation_failed: from_location_id"),
        (transfer(&default, &north_id, 0), "validation_failed: quantity"),
    ];
    for (refused, code) in refusals {
        assert_eq!(outcome(&refused), code);
    }
    assert_eq!(at(te.state(), "A"), [(3, 0), (5, 4), (0, 0)], "refusals changed nothing");
    transfer(&north_id, &default, 1).unwrap();
    assert_eq!(at(te.state(), "A"), [(4, 0), (4, 4), (0, 0)]);

    // The single-location commands count the default location only.
    te.shop
        .send(SetStock {
            sku: "A".into(),
            on_hand: 10,
            reason: "count".into(),
            expected_version: None,
        })
        .unwrap();
    assert_eq!(at(te.state(), "A"), [(10, 0), (4, 4), (0, 0)]);
    assert_eq!(levels(te.state(), "A"), (14, 4), "the totals are over every location");
    te.shop.send(AdjustStock { sku: "A".into(), delta: -10, reason: "damaged".into() }).unwrap();
    assert_eq!(at(te.state(), "A"), [(0, 0), (4, 4), (0, 0)]);
    let removed = te.shop.send(AdjustStock { sku: "A".into(), delta: -1, reason: "lost".into() });
    assert_eq!(outcome(&removed), "conflict", "the default location holds none");
    // Below what is reserved at a location is a conflict, whatever the totals.
    let below = SetLocationStock {
        sku: "A".into(),
        location_id: north_id.clone(),
        on_hand: 3,
        reason: "count".into(),
        expected_version: None,
    };
    assert_eq!(outcome(&te.shop.send(below)), "conflict");
    let adjust = AdjustLocationStock {
        sku: "A".into(),
        location_id: north_id.clone(),
        delta: 6,
        reason: "received".into(),
    };
    assert_eq!(levels_of(te.shop.send(adjust)), (10, 4));
    assert_eq!(at(te.state(), "A"), [(0, 0), (10, 4), (0, 0)]);
    // The totals' bound covers every location.
    set_at(&te, "A", LocationId::DEFAULT, 1);
    let over = SetLocationStock {
        sku: "A".into(),
        location_id: north_id,
        on_hand: ON_HAND_MAX,
        reason: String::new(),
        expected_version: None,
    };
    assert_eq!(outcome(&te.shop.send(over)), "validation_failed: on_hand");
    check_invariants(te.state());
}

fn levels_of(levels: Result<StockLevels>) -> (u32, u32) {
    let levels = levels.unwrap();
    (levels.on_hand, levels.reserved)
}

#[test]
fn locations_are_created_changed_and_deleted_only_when_empty() {
    let (te, north, south) = shop(10, 10);
    let names: Vec<(String, u32)> =
        te.state().locations().iter().map(|l| (l.name.clone(), l.priority)).collect();
    assert_eq!(names, [("Default".into(), 100), ("North".into(), 10), ("South".into(), 10)]);
    set_at(&te, "A", north, 2);
    set_at(&te, "A", south, 2);
    set_at(&te, "A", LocationId::DEFAULT, 2);

    // A new priority changes where the next checkout reserves.
    let update = UpdateLocation {
        location_id: LocationId::DEFAULT.to_string(),
        name: Some("Main".into()),
        priority: Some(0),
        ..Default::default()
    };
    let main = te.shop.send(update.clone()).unwrap();
    assert_eq!(
        (main.name.as_str(), main.priority, main.kind),
        ("Main", 0, LocationKind::Warehouse)
    );
    assert_eq!(main.version, 2);
    let stale = UpdateLocation { expected_version: Some(1), ..update };
    assert_eq!(outcome(&te.shop.send(stale)), "version_mismatch: expected 1, current 2");
    order_of(&te, &[("A", 3)]).unwrap();
    assert_eq!(at(te.state(), "A"), [(2, 2), (2, 1), (2, 0)]);

    let delete = |id: LocationId| {
        te.shop.send(DeleteLocation { location_id: id.to_string(), expected_version: None })
    };
    assert_eq!(outcome(&delete(LocationId::DEFAULT)), "invalid_state");
    assert_eq!(outcome(&delete(north)), "invalid_state", "it holds units");
    assert_eq!(outcome(&delete(south)), "invalid_state", "it holds units, none reserved");
    set_at(&te, "A", south, 0);
    delete(south).unwrap();
    assert_eq!(outcome(&delete(south)), "not_found: stock location");
    assert_eq!(te.state().locations().len(), 2);
    assert_eq!(at(te.state(), "A"), [(2, 2), (2, 1)]);

    let refusals = [
        (
            CreateLocation { name: String::new(), kind: "warehouse".into(), priority: None },
            "validation_failed: name",
        ),
        (
            CreateLocation { name: "X".into(), kind: "barn".into(), priority: None },
            "validation_failed: kind",
        ),
        (
            CreateLocation { name: "X".into(), kind: "store".into(), priority: Some(1001) },
            "validation_failed: priority",
        ),
    ];
    for (create, code) in refusals {
        assert_eq!(outcome(&te.shop.send(create)), code);
    }
    let store = te
        .shop
        .send(CreateLocation { name: "Shop".into(), kind: "store".into(), priority: None })
        .unwrap();
    assert_eq!((store.kind, store.priority), (LocationKind::Store, LOCATION_PRIORITY_DEFAULT));
    assert_ne!(store.id, south, "a deleted location's id is not given again");
    let bad = UpdateLocation { location_id: "loc_x".into(), ..Default::default() };
    assert_eq!(outcome(&te.shop.send(bad)), "not_found: stock location");

    // At most LOCATIONS_MAX besides the default.
    for i in te.state().locations().len() - 1..LOCATIONS_MAX {
        location(&te, &format!("L{i}"), 50);
    }
    let one_more = CreateLocation { name: "More".into(), kind: "store".into(), priority: None };
    assert_eq!(outcome(&te.shop.send(one_more)), "invalid_state");
    check_invariants(te.state());
}

#[test]
fn a_flash_sale_takes_its_allocation_from_the_locations() {
    let (te, north, _) = shop(10, 10);
    set_at(&te, "A", LocationId::DEFAULT, 2);
    set_at(&te, "A", north, 5);
    let sale = te
        .shop
        .send(CreateFlashSale {
            sku: "A".into(),
            price: MoneyInput { amount: 500, currency: "USD".into() },
            quantity: 6,
            per_customer_limit: 5,
            starts_at: T0,
            ends_at: T0 + HOUR,
            reservation_ttl_ms: Some(HOUR),
        })
        .unwrap();
    assert_eq!(at(te.state(), "A"), [(2, 1), (5, 5), (0, 0)]);
    let buyer = te
        .shop
        .send(RegisterCustomer {
            email: "b@example.com".into(),
            name: "B".into(),
            role: Role::Customer,
            credential: "hash".into(),
        })
        .unwrap()
        .id;
    let bought = te
        .shop
        .send(PurchaseFlashSale {
            sale_id: sale.id.to_string(),
            customer_id: buyer,
            quantity: 4,
            idempotency: None,
        })
        .unwrap();
    assert_eq!(at(te.state(), "A"), [(2, 1), (5, 5), (0, 0)], "still the sale's");
    assert_eq!(sources(&te, &bought.id), None, "decided at payment");
    pay(&te.shop, &bought.id).unwrap();
    assert_eq!(at(te.state(), "A"), [(2, 1), (1, 1), (0, 0)], "shipped from North");
    assert_eq!(sources(&te, &bought.id), Some(vec![("A".into(), 1, 4)]));
    check_invariants(te.state());
    // A second order is still pending when the sale ends: the end releases the unit
    // not taken (North's, the sale's parts away from the default location first); the
    // order's unit stays reserved, at the default location, until the order is
    // cancelled.
    te.clock.advance(HOUR - 60_000);
    let late = te
        .shop
        .send(PurchaseFlashSale {
            sale_id: sale.id.to_string(),
            customer_id: buyer,
            quantity: 1,
            idempotency: None,
        })
        .unwrap();
    te.clock.advance(60_000);
    te.shop.send(ExpireDue).unwrap();
    assert_eq!(te.state().order(&late.id).unwrap().status, OrderStatus::PendingPayment);
    assert_eq!(at(te.state(), "A"), [(2, 1), (1, 0), (0, 0)]);
    check_invariants(te.state());
    te.shop.send(CancelOrder { order_id: late.id.to_string(), expected_version: None }).unwrap();
    assert_eq!(at(te.state(), "A"), [(2, 0), (1, 0), (0, 0)]);
    assert!(te.state().allocation(&Holder::Sale(sale.id)).is_none());
    check_invariants(te.state());
}

/// Two orders over three locations: `(first, second)`.
fn two_orders(te: &TestEngine) -> (OrderId, OrderId) {
    stocked_sku(&te.shop, "A", 1000, 0);
    let north = location(te, "North", 10);
    let south = location(te, "South", 20);
    for (location, on_hand) in [(LocationId::DEFAULT, 4), (north, 3), (south, 3)] {
        set_at(te, "A", location, on_hand);
    }
    let first = order_of(te, &[("A", 5)]).unwrap().id;
    let second = order_of(te, &[("A", 3)]).unwrap().id;
    assert_eq!(at(te.state(), "A"), [(4, 2), (3, 3), (3, 3)]);
    (first, second)
}

/// After a reopen: the levels, and each order's units still known by location.
fn pay_both(te: &TestEngine, (first, second): (OrderId, OrderId), how: &str) {
    assert_eq!(at(te.state(), "A"), [(4, 2), (3, 3), (3, 3)], "{how}");
    assert_eq!(te.state().locations().len(), 3, "{how}");
    // The second holds South's last unit and two of the default's.
    pay(&te.shop, &second).unwrap();
    assert_eq!(at(te.state(), "A"), [(2, 0), (3, 3), (2, 2)], "{how}");
    pay(&te.shop, &first).unwrap();
    assert_eq!(at(te.state(), "A"), [(2, 0), (0, 0), (0, 0)], "{how}");
    assert_eq!(location(te, "East", 5).seq(), 3, "{how}: the id counter survives");
    check_invariants(te.state());
}

#[test]
fn levels_and_allocations_survive_a_restart_and_a_log_replay() {
    // From the materialized rows.
    let te = TestEngine::new();
    let orders = two_orders(&te);
    pay_both(&te.reopen(), orders, "rows");

    // From the log alone: a checkpoint of an engine that never materialized a row.
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(ManualClock::new(T0));
    let engine = Engine::open(unmaterialized_config(dir.path(), clock.clone())).unwrap();
    let shop = engine.blocking();
    let te = TestEngine { engine, shop, clock, dir };
    let orders = two_orders(&te);
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("replayed");
    te.engine.checkpoint(&copy).unwrap();
    let engine = Engine::open(config(&copy, te.clock.clone())).unwrap();
    let shop = engine.blocking();
    let replayed = TestEngine { engine, shop, clock: te.clock.clone(), dir: copy_dir };
    pay_both(&replayed, orders, "log");
}
