//! The reconciliation finds what it is there to find: orders and ledgers put straight
//! into a state, bypassing `decide`, in every way they can disagree.

use super::*;

fn usd(amount: i64) -> Money {
    Money::new(amount, Currency::USD).unwrap()
}

fn order(seq: u64, status: OrderStatus, captured: &[i64]) -> Order {
    Order {
        id: OrderId::from_random(u128::from(seq) << 64 | 7),
        seq,
        cart_id: CartId::from_random(u128::from(seq)),
        customer_id: None,
        email: "a@example.com".into(),
        shipping_address: None,
        status,
        lines: Vec::new(),
        subtotal: usd(1000),
        discount_total: usd(0),
        total: usd(1000),
        reservation_expires_at: 0,
        payments: captured
            .iter()
            .map(|&amount| Payment {
                id: PaymentId::from_random(u128::from(seq) << 32 | amount as u128),
                method: "test_card".into(),
                card_brand: "visa".into(),
                amount: usd(amount),
                created_at: 1,
            })
            .collect(),
        created_at: 0,
        updated_at: 0,
        version: 1,
    }
}

fn refund(order: &Order, number: u32, amount: Money) -> Refund {
    Refund {
        id: RefundId::from_random(u128::from(order.seq) << 16 | u128::from(number)),
        order_id: order.id,
        number,
        amount,
        reason: String::new(),
        provider_reference: String::new(),
        created_at: 2,
    }
}

/// Puts `order` and `refunds` of it into a fresh state and reconciles it; the problems
/// found, joined.
fn check(order: Order, refunds: &[Money], expected: &str) {
    let state = State::new();
    for (i, amount) in refunds.iter().enumerate() {
        add_refund(&state, refund(&order, i as u32 + 1, *amount));
    }
    crate::orders::put_order(&state, order, &mut Vec::new());
    let report = state.reconcile();
    let problems: Vec<&str> = report.mismatches.iter().map(|m| m.problem.as_str()).collect();
    assert_eq!(problems.join("; "), expected);
    assert_eq!(report.mismatch_count, report.mismatches.len() as u64);
}

#[test]
fn reconciliation_finds_every_disagreement() {
    use OrderStatus::*;
    check(order(1, Paid, &[1000]), &[], "");
    check(order(1, PendingPayment, &[]), &[], "");
    check(order(1, PartiallyRefunded, &[1000]), &[usd(400)], "");
    check(order(1, Refunded, &[1000]), &[usd(400), usd(600)], "");
    check(order(1, Paid, &[]), &[], "a paid order of total 1000 captured 0");
    check(order(1, Fulfilled, &[999]), &[], "a fulfilled order of total 1000 captured 999");
    check(order(1, Paid, &[1000, 1000]), &[], "a paid order of total 1000 captured 2000");
    check(order(1, Cancelled, &[1000]), &[], "a cancelled order of total 1000 captured 1000");
    check(order(1, Paid, &[1000]), &[usd(1)], "a paid order captured 1000 and refunded 1");
    check(
        order(1, PartiallyRefunded, &[1000]),
        &[usd(1000)],
        "a partially_refunded order captured 1000 and refunded 1000",
    );
    check(
        order(1, Refunded, &[1000]),
        &[usd(999)],
        "a refunded order captured 1000 and refunded 999",
    );
    check(
        order(1, Refunded, &[1000]),
        &[usd(1000), usd(1)],
        "a refunded order captured 1000 and refunded 1001",
    );
    let eur = Money::new(1000, Currency::EUR).unwrap();
    let o = order(1, Refunded, &[1000]);
    let id = RefundId::from_random(1 << 16 | 1);
    check(
        o,
        &[eur],
        &format!("refund {id} is not in USD; a refunded order captured 1000 and refunded 0"),
    );
}

#[test]
fn reconciliation_finds_refunds_of_missing_orders_and_caps_its_list() {
    let state = State::new();
    for seq in 0..(RECONCILIATION_MISMATCHES_MAX as u64 + 5) {
        let o = order(seq, OrderStatus::Paid, &[]);
        add_refund(&state, refund(&o, 1, usd(5)));
    }
    let report = state.reconcile();
    assert_eq!(report.mismatch_count, RECONCILIATION_MISMATCHES_MAX as u64 + 5);
    assert_eq!(report.mismatches.len(), RECONCILIATION_MISMATCHES_MAX);
    assert!(report
        .mismatches
        .iter()
        .all(|m| m.problem == "refunds of an order that does not exist"));
    assert_eq!((report.orders, report.refunds), (0, 105));
}

/// An order fulfilled before fulfilments were recorded (its status says so, no row)
/// keeps its fulfilment when a refund moves its status on: recorded then, with its
/// last change as the time.
#[test]
fn a_refund_keeps_a_legacy_fulfilment() {
    let state = State::new();
    let mut shipped = order(1, OrderStatus::Fulfilled, &[1000]);
    shipped.updated_at = 77;
    let id = shipped.id;
    state.orders.orders.insert(id, Arc::new(shipped.clone()));
    assert_eq!(state.fulfilled_at(&shipped), Some(77));
    let mut rows = Vec::new();
    let refund = Box::new(refund(&shipped, 1, usd(100)));
    apply(&state, &PaymentEvent::Refunded { refund }, 90, &mut rows);
    let after = state.order(&id).unwrap();
    assert_eq!(after.status, OrderStatus::PartiallyRefunded);
    assert_eq!(state.fulfilled_at(&after), Some(77));
    let tables: Vec<&str> = rows.iter().map(|r| r.location().0).collect();
    assert_eq!(tables, ["fulfillments", "refunds", "orders"]);
}
