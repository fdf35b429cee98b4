//! Flash sales through the embedding API: windows moved by the engine's own timers,
//! per-customer caps, purchases that expire back into the sale, the end returning what
//! is left to normal stock, cancel, restarts mid-window, idempotent purchases and one
//! customer racing itself. Each case states its steps and the expected line of text:
//! the outcome, the sale's `remaining/reserved/sold` and the SKU's `on hand/reserved`.
//! After every step the stock is checked against an independent count (pending orders
//! plus what open sales hold) and each sale against its orders.

use std::sync::Arc;

use emporium_engine::*;
use emporium_tests::*;

const SKU: &str = "FS-1";
const HOUR: i64 = 60 * 60 * 1000;
const TTL_MS: i64 = 10 * 60 * 1000;

struct Sale {
    te: TestEngine,
    id: FlashSaleId,
    buyers: Vec<CustomerId>,
}

fn create_input(quantity: i64, limit: i64, starts_at: i64, ends_at: i64) -> CreateFlashSale {
    CreateFlashSale {
        sku: SKU.into(),
        price: MoneyInput { amount: 500, currency: "USD".into() },
        quantity,
        per_customer_limit: limit,
        starts_at,
        ends_at,
        reservation_ttl_ms: Some(TTL_MS),
    }
}

/// 100 units of `SKU` at 1000, a sale of `quantity` at 500 with `limit` per customer
/// from `T0 + starts_in` for an hour after that, and three customers.
fn sale(quantity: i64, limit: i64, starts_in: i64) -> Sale {
    let te = TestEngine::new();
    stocked_sku(&te.shop, SKU, 1000, 100);
    let created = te
        .shop
        .send(create_input(quantity, limit, T0 + starts_in, T0 + starts_in + HOUR))
        .expect("create the sale");
    let buyers = (0..3)
        .map(|i| {
            te.shop
                .send(RegisterCustomer {
                    email: format!("buyer{i}@example.com"),
                    name: format!("Buyer {i}"),
                    role: Role::Customer,
                    credential: "hash".into(),
                })
                .expect("register")
                .id
        })
        .collect();
    let sale = Sale { te, id: created.id, buyers };
    sale.check();
    sale
}

impl Sale {
    fn buy(&self, buyer: usize, quantity: i64) -> Result<Arc<Order>> {
        self.buy_keyed(buyer, quantity, None)
    }

    fn buy_keyed(&self, buyer: usize, quantity: i64, key: Option<&str>) -> Result<Arc<Order>> {
        let result = self.te.shop.send(PurchaseFlashSale {
            sale_id: self.id.to_string(),
            customer_id: self.buyers[buyer],
            quantity,
            idempotency: key.map(|k| IdempotencyKey { scope: "test".into(), key: k.into() }),
        });
        self.check();
        result
    }

    /// Moves the clock by `ms` and runs the timers.
    fn tick(&self, ms: i64) {
        self.te.clock.advance(ms);
        self.te.shop.send(ExpireDue).expect("expire");
        self.check();
    }

    /// `status remaining/reserved/sold, SKU on_hand/reserved`.
    fn line(&self) -> String {
        let state = self.te.state();
        let sale = state.flash_sale(&self.id).expect("the sale");
        let (on_hand, reserved) = levels(state, SKU);
        format!(
            "{} {}/{}/{}, sku {on_hand}/{reserved}",
            sale.status(self.te.clock.now_ms()).as_str(),
            sale.remaining,
            sale.reserved,
            sale.sold
        )
    }

    fn check(&self) {
        check_invariants(self.te.state());
        check_flash_sales(self.te.state());
    }
}

fn step<T>(sale: &Sale, result: Result<T>, expected: &str) {
    assert_eq!(format!("{}; {}", outcome(&result), sale.line()), expected);
}

#[test]
fn creating_a_sale_carves_its_units_out_of_available_stock() {
    let s = sale(30, 2, 0);
    assert_eq!(s.line(), "live 30/0/0, sku 100/30");
    let te = &s.te;
    let cases: [(CreateFlashSale, &str); 7] = [
        (create_input(0, 1, T0, T0 + HOUR), "validation_failed: quantity"),
        (create_input(10, 11, T0, T0 + HOUR), "validation_failed: per_customer_limit"),
        (create_input(10, 1, T0 + HOUR, T0 + HOUR), "validation_failed: ends_at"),
        (create_input(10, 1, T0 - 2 * HOUR, T0 - HOUR), "validation_failed: ends_at"),
        (create_input(71, 1, T0, T0 + HOUR), "out_of_stock: FS-1 71>70"),
        (
            CreateFlashSale { sku: "NOPE".into(), ..create_input(1, 1, T0, T0 + HOUR) },
            "validation_failed: sku",
        ),
        (
            CreateFlashSale {
                price: MoneyInput { amount: 500, currency: "EUR".into() },
                ..create_input(1, 1, T0, T0 + HOUR)
            },
            "validation_failed: price.currency",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(outcome(&te.shop.send(input.clone())), expected, "{input:?}");
        assert_eq!(s.line(), "live 30/0/0, sku 100/30", "a refusal changed nothing");
    }
    // A second sale takes what is left; the SKU's available stock is what neither holds.
    let second = te.shop.send(create_input(70, 1, T0, T0 + HOUR)).expect("second sale");
    assert_eq!(second.remaining, 70);
    assert_eq!(levels(te.state(), SKU), (100, 100));
    s.check();
}

#[test]
fn the_window_is_kept_by_the_engines_timers() {
    let s = sale(30, 2, HOUR);
    assert_eq!(s.line(), "scheduled 30/0/0, sku 100/30");
    step(&s, s.buy(0, 1), "sale_not_live; scheduled 30/0/0, sku 100/30");
    s.tick(HOUR);
    let phase = s.te.state().flash_sale(&s.id).unwrap().phase;
    assert_eq!(phase, SalePhase::Live, "the start timer fired");
    // A minute before the end: the order it places outlives the sale.
    s.te.clock.advance(HOUR - 60_000);
    step(&s, s.buy(0, 1), "ok; live 29/1/0, sku 100/30");
    // Past the end, before the timer fires: the clock decides, nothing is sold.
    s.te.clock.advance(60_000);
    step(&s, s.buy(1, 1), "sale_not_live; ended 29/1/0, sku 100/30");
    s.tick(0);
    // The end returned the 29 units not taken; the pending order still holds its one.
    assert_eq!(s.line(), "ended 29/1/0, sku 100/1");
    // It expires after the end: its unit goes back to normal stock, not to the sale.
    s.tick(TTL_MS);
    assert_eq!(s.line(), "ended 30/0/0, sku 100/0");
}

#[test]
fn caps_count_pending_and_paid_units_per_customer() {
    let s = sale(30, 2, 0);
    step(&s, s.buy(0, 3), "validation_failed: quantity; live 30/0/0, sku 100/30");
    step(&s, s.buy(0, 0), "validation_failed: quantity; live 30/0/0, sku 100/30");
    let first = s.buy(0, 1).expect("first unit");
    assert_eq!(first.total.amount(), 500, "the sale price");
    assert_eq!(first.status, OrderStatus::PendingPayment);
    pay(&s.te.shop, &first.id).expect("pay");
    s.check();
    assert_eq!(s.line(), "live 29/0/1, sku 99/29");
    step(&s, s.buy(0, 2), "purchase_limit_exceeded; live 29/0/1, sku 99/29");
    let second = s.buy(0, 1).expect("second unit");
    step(&s, s.buy(0, 1), "purchase_limit_exceeded; live 28/1/1, sku 99/29");
    step(&s, s.buy(1, 2), "ok; live 26/3/1, sku 99/29");
    // Cancelling a pending order gives its unit back to the sale and to the cap.
    s.te.shop
        .send(CancelOrder { order_id: second.id.to_string(), expected_version: None })
        .unwrap();
    s.check();
    assert_eq!(s.line(), "live 27/2/1, sku 99/29");
    step(&s, s.buy(0, 1), "ok; live 26/3/1, sku 99/29");
}

#[test]
fn an_unpaid_purchase_expires_back_into_the_sale() {
    let s = sale(3, 3, 0);
    step(&s, s.buy(0, 3), "ok; sold_out 0/3/0, sku 100/3");
    step(&s, s.buy(1, 1), "sold_out; sold_out 0/3/0, sku 100/3");
    s.tick(TTL_MS);
    assert_eq!(s.line(), "live 3/0/0, sku 100/3");
    step(&s, s.buy(1, 1), "ok; live 2/1/0, sku 100/3");
}

#[test]
fn a_cancelled_sale_returns_what_is_left_and_sells_no_more() {
    let s = sale(30, 2, 0);
    let order = s.buy(0, 2).expect("buy");
    let cancel = || s.te.shop.send(CancelFlashSale { sale_id: s.id.to_string() });
    step(&s, cancel(), "ok; cancelled 28/2/0, sku 100/2");
    step(&s, cancel(), "invalid_state; cancelled 28/2/0, sku 100/2");
    step(&s, s.buy(1, 1), "sale_not_live; cancelled 28/2/0, sku 100/2");
    // The order bought before the cancel may still be paid.
    pay(&s.te.shop, &order.id).expect("pay");
    s.check();
    assert_eq!(s.line(), "cancelled 28/0/2, sku 98/0");
}

/// Closing a sale lets its own counts go at once and keeps every other sale's: here
/// while another sale is open, and then a sale with more buyers than are let go on the
/// sequencer itself.
#[test]
fn closing_a_sale_lets_its_counts_go_and_keeps_the_other_sales() {
    const BUYERS: usize = 4500;
    let s = sale(30, 2, 0);
    // Units left after every buyer's one: a second ask meets the cap, not `sold_out`.
    let units = BUYERS as i64 + 10;
    stocked_sku(&s.te.shop, "FS-2", 1000, units);
    let other = CreateFlashSale { sku: "FS-2".into(), ..create_input(units, 1, T0, T0 + HOUR) };
    let other = s.te.shop.send(other).expect("the second sale").id;
    s.buy(0, 2).expect("buy in the first sale");
    let buyers: Vec<CustomerId> = (0..BUYERS)
        .map(|i| register_customer(&s.te.shop, &format!("crowd{i}@example.com")).id)
        .collect();
    let buy_other = |customer: CustomerId| {
        s.te.shop.send(PurchaseFlashSale {
            sale_id: other.to_string(),
            customer_id: customer,
            quantity: 1,
            idempotency: None,
        })
    };
    for &buyer in &buyers {
        buy_other(buyer).expect("buy in the second sale");
    }
    s.check();
    let held = |sale: &FlashSaleId, customer: &CustomerId| {
        s.te.state().flash_sale_units_held(sale, customer)
    };
    let other_held = || buyers.iter().map(|b| held(&other, b)).collect::<Vec<_>>();
    assert_eq!(held(&s.id, &s.buyers[0]), 2);
    assert_eq!(other_held(), vec![1; BUYERS]);

    s.te.shop.send(CancelFlashSale { sale_id: s.id.to_string() }).expect("cancel the first");
    s.check();
    assert_eq!(held(&s.id, &s.buyers[0]), 0, "a closed sale's counts go");
    assert_eq!(other_held(), vec![1; BUYERS], "the open sale's counts stay");
    assert_eq!(outcome(&buy_other(buyers[7])), "purchase_limit_exceeded");

    s.te.shop.send(CancelFlashSale { sale_id: other.to_string() }).expect("cancel the second");
    s.check();
    assert_eq!(other_held(), vec![0; BUYERS], "its counts go, however many");
    assert_eq!(outcome(&buy_other(buyers[7])), "sale_not_live");
}

#[test]
fn a_closed_sale_keeps_no_counts_and_its_pending_orders_settle_after_a_restart() {
    let s = sale(30, 2, 0);
    let pending = s.buy(0, 2).expect("buy");
    let paid = s.buy(1, 1).expect("buy");
    pay(&s.te.shop, &paid.id).expect("pay");
    s.check();
    let held = |s: &Sale, buyer: usize| s.te.state().flash_sale_units_held(&s.id, &s.buyers[buyer]);
    assert_eq!((held(&s, 0), held(&s, 1)), (2, 1));
    // Each purchase's row, as the orders say it.
    let rows = |s: &Sale| {
        let digest = s.te.state().digest();
        digest.into_iter().find(|d| d.table == "flash_sale_orders").expect("the table")
    };
    let before = rows(&s);
    assert_eq!(before.rows, 2);
    assert_eq!(s.te.state().flash_sale_of_order(&pending), Some(s.id));
    step(
        &s,
        s.te.shop.send(CancelFlashSale { sale_id: s.id.to_string() }),
        "ok; cancelled 27/2/1, sku 99/2",
    );
    assert_eq!((held(&s, 0), held(&s, 1)), (0, 0), "a closed sale's counts go");

    // An open rebuilds the counts of open sales only, from the rows it finds.
    let Sale { te, id, buyers } = s;
    let s = Sale { te: te.reopen(), id, buyers };
    s.check();
    assert_eq!(rows(&s), before);
    assert_eq!((held(&s, 0), held(&s, 1)), (0, 0));
    assert_eq!(s.line(), "cancelled 27/2/1, sku 99/2");
    // The pending order still expires, its units to normal stock.
    s.tick(TTL_MS);
    assert_eq!(s.line(), "cancelled 29/0/1, sku 99/0");
    let expired = s.te.state().order(&pending.id).expect("the order");
    assert_eq!(expired.status, OrderStatus::Expired);
}

#[test]
fn a_restart_mid_window_resumes_and_a_window_missed_while_down_ends_at_open() {
    let s = sale(30, 2, 0);
    s.buy(0, 2).expect("buy");
    let Sale { te, id, buyers } = s;
    let s = Sale { te: te.reopen(), id, buyers };
    s.check();
    assert_eq!(s.line(), "live 28/2/0, sku 100/30");
    step(&s, s.buy(1, 1), "ok; live 27/3/0, sku 100/30");
    step(&s, s.buy(0, 1), "purchase_limit_exceeded; live 27/3/0, sku 100/30");

    // A sale scheduled for later whose whole window passes while the process is down.
    let later = s.te.shop.send(create_input(10, 1, T0 + HOUR, T0 + 2 * HOUR)).unwrap();
    let Sale { te, id, buyers } = s;
    te.clock.advance(3 * HOUR);
    let s = Sale { te: te.reopen(), id, buyers };
    s.tick(0);
    let later = s.te.state().flash_sale(&later.id).unwrap();
    assert_eq!(later.phase, SalePhase::Ended, "ended at once, never started");
    // Both ended; the three pending units expired back too (their TTL passed).
    assert_eq!(s.line(), "ended 30/0/0, sku 100/0");
}

#[test]
fn a_purchase_key_replays_its_order() {
    let s = sale(30, 2, 0);
    let first = s.buy_keyed(0, 1, Some("k1")).expect("buy");
    let again = s.buy_keyed(0, 1, Some("k1")).expect("replay");
    assert_eq!(again, first, "the replay answers the order as it was placed");
    assert_eq!(s.line(), "live 29/1/0, sku 100/30");
    step(&s, s.buy_keyed(0, 2, Some("k1")), "idempotency_key_reused; live 29/1/0, sku 100/30");
}

#[test]
fn one_customer_racing_itself_gets_exactly_its_limit() {
    let s = sale(60, 3, 0);
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let shop = s.te.engine.blocking();
            let (id, buyer) = (s.id.to_string(), s.buyers[0]);
            std::thread::spawn(move || {
                (0..32)
                    .filter(|_| {
                        shop.send(PurchaseFlashSale {
                            sale_id: id.clone(),
                            customer_id: buyer,
                            quantity: 1,
                            idempotency: None,
                        })
                        .is_ok()
                    })
                    .count()
            })
        })
        .collect();
    let bought: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(bought, 3);
    s.check();
    assert_eq!(s.line(), "live 57/3/0, sku 100/60");
}
