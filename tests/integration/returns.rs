//! Returns through the embedding API: who may return what and when, what units are
//! worth (pro rata after the discount, adding up exactly per line), and what receiving
//! does (restock as chosen, refund at most what is left), through a restart.

use std::sync::Arc;

use emporium_engine::*;
use emporium_tests::*;

const DAY: i64 = 86_400_000;

/// A paid guest order of A×2 at 10.00 and B×3 at 3.33 (29.99), with 10 % off when
/// `discounted` (2.99: 1.99 off A's line, 1.00 off B's), fulfilled when `fulfilled`.
struct Bought {
    te: TestEngine,
    order: Arc<Order>,
}

fn bought(discounted: bool, fulfilled: bool) -> Bought {
    let te = TestEngine::with(|_| {});
    stocked_sku(&te.shop, "A", 1000, 10);
    stocked_sku(&te.shop, "B", 333, 10);
    let cart = cart_with(&te.shop, &[("A", 2), ("B", 3)]);
    if discounted {
        let code =
            CreateDiscountCode { code: "TEN".into(), percent_off: Some(10), ..Default::default() };
        te.shop.send(code).unwrap();
        te.shop
            .send(ApplyDiscountCode { cart_id: cart.id.to_string(), code: "TEN".into() })
            .unwrap();
    }
    let order = checkout(&te.shop, &cart.id).unwrap();
    te.shop
        .send(CapturePayment {
            order_id: order.id.to_string(),
            method: "test_card".into(),
            token: "tok_visa".into(),
            idempotency: None,
        })
        .unwrap();
    if fulfilled {
        te.shop.send(FulfillOrder { order_id: order.id.to_string() }).unwrap();
    }
    let order = te.state().order(&order.id).unwrap();
    Bought { te, order }
}

impl Bought {
    fn request(&self, lines: &[(&str, i64)]) -> Result<ReturnOutcome> {
        self.te.shop.send(RequestReturn {
            order_id: self.order.id.to_string(),
            lines: lines.iter().map(|(s, q)| (s.to_string(), *q)).collect(),
            reason: "does not fit".into(),
        })
    }

    fn decide(&self, r: &Return, approve: bool, note: &str) -> Result<ReturnOutcome> {
        let return_id = r.id.to_string();
        self.te.shop.send(DecideReturn { return_id, approve, note: note.into() })
    }

    fn receive(&self, r: &Return, not_restocked: &[&str]) -> Result<ReturnOutcome> {
        let not_restocked = not_restocked.iter().map(|s| s.to_string()).collect();
        self.te.shop.send(ReceiveReturn { return_id: r.id.to_string(), not_restocked })
    }

    /// Requests, approves and receives a return of `lines`, restocking all but
    /// `not_restocked`.
    fn returned(&self, lines: &[(&str, i64)], not_restocked: &[&str]) -> ReturnOutcome {
        let r = self.request(lines).unwrap().r#return;
        self.decide(&r, true, "").unwrap();
        self.receive(&r, not_restocked).unwrap()
    }

    /// `status | captured/refunded/balance | A on hand, B on hand`.
    fn summary(&self) -> String {
        let state = self.te.state();
        let order = state.order(&self.order.id).unwrap();
        let ledger = state.ledger(&order);
        format!(
            "{} | {}/{}/{} | A {}, B {}",
            order.status.as_str(),
            ledger.captured.amount(),
            ledger.refunded.amount(),
            ledger.balance().amount(),
            levels(state, "A").0,
            levels(state, "B").0
        )
    }
}

/// What returns of `returns` (each a list of lines) are worth, in turn, on the
/// (discounted) order.
fn check_amounts(discounted: bool, returns: &[&[(&str, i64)]], expected: &str) {
    let b = bought(discounted, true);
    let amounts: Vec<String> = returns
        .iter()
        .map(|lines| match b.request(lines) {
            Ok(outcome) => outcome.r#return.amount().to_string(),
            Err(e) => error_code(&e),
        })
        .collect();
    assert_eq!(amounts.join(", "), expected, "{returns:?}");
}

#[test]
fn units_are_worth_what_was_paid_for_them() {
    check_amounts(false, &[&[("A", 1)]], "1000");
    check_amounts(false, &[&[("A", 2), ("B", 3)]], "2999");
    check_amounts(false, &[&[("B", 1)], &[("B", 1)], &[("B", 1)]], "333, 333, 333");
    // 10 % off: A's line paid 18.01, B's 8.99; each line's returns add up to it exactly.
    check_amounts(true, &[&[("A", 2), ("B", 3)]], "2700");
    check_amounts(true, &[&[("A", 1)], &[("A", 1)]], "900, 901");
    check_amounts(true, &[&[("B", 1)], &[("B", 1)], &[("B", 1)]], "299, 300, 300");
    check_amounts(true, &[&[("B", 2)], &[("B", 1)]], "599, 300");
    // Never more units than were bought and not returned yet.
    check_amounts(false, &[&[("B", 2)], &[("B", 2)]], "666, validation_failed: items[0].quantity");
    check_amounts(false, &[&[("A", 3)]], "validation_failed: items[0].quantity");
    check_amounts(false, &[&[("A", 0)]], "validation_failed: items[0].quantity");
    check_amounts(false, &[&[("C", 1)]], "validation_failed: items[0].sku");
    check_amounts(false, &[&[("A", 1), ("A", 1)]], "validation_failed: items[1].sku");
    check_amounts(false, &[&[]], "validation_failed: items");
}

#[test]
fn only_a_fulfilled_order_within_the_window_is_returned() {
    let paid = bought(false, false);
    assert_eq!(error_code(&paid.request(&[("A", 1)]).unwrap_err()), "invalid_state");
    let shipped = bought(false, true);
    shipped.te.clock.advance(30 * DAY);
    shipped.request(&[("A", 1)]).expect("on the last day of the window");
    shipped.te.clock.advance(1);
    assert_eq!(error_code(&shipped.request(&[("A", 1)]).unwrap_err()), "invalid_state");
    let empty = RequestReturn {
        order_id: shipped.order.id.to_string(),
        lines: vec![("A".into(), 1)],
        reason: String::new(),
    };
    assert_eq!(error_code(&shipped.te.shop.send(empty).unwrap_err()), "validation_failed: reason");
}

#[test]
fn a_return_is_approved_or_rejected_then_received_once() {
    let b = bought(false, true);
    let r = b.request(&[("A", 1)]).unwrap().r#return;
    assert_eq!(r.status, ReturnStatus::Requested);
    assert_eq!(error_code(&b.receive(&r, &[]).unwrap_err()), "invalid_state");
    assert_eq!(error_code(&b.decide(&r, false, "").unwrap_err()), "validation_failed: note");
    let rejected = b.decide(&r, false, "worn").unwrap().r#return;
    assert_eq!((rejected.status, rejected.note.as_str()), (ReturnStatus::Rejected, "worn"));
    assert_eq!(error_code(&b.decide(&r, true, "").unwrap_err()), "invalid_state");
    assert_eq!(error_code(&b.receive(&r, &[]).unwrap_err()), "invalid_state");
    // A rejected return's units may be asked for again.
    let again = b.request(&[("A", 2)]).unwrap().r#return;
    b.decide(&again, true, "ok").unwrap();
    assert_eq!(
        error_code(&b.receive(&again, &["B"]).unwrap_err()),
        "validation_failed: not_restocked[0]"
    );
    let received = b.receive(&again, &[]).unwrap();
    assert_eq!(received.r#return.status, ReturnStatus::Received);
    assert_eq!(error_code(&b.receive(&again, &[]).unwrap_err()), "invalid_state");
    assert_eq!(b.te.state().returns_of_order(&b.order.id).len(), 2);
    check_invariants(b.te.state());
}

#[test]
fn receiving_restocks_as_chosen_and_refunds_at_most_the_balance() {
    let b = bought(true, true);
    assert_eq!(b.summary(), "fulfilled | 2700/0/2700 | A 8, B 7");
    let first = b.returned(&[("A", 1), ("B", 1)], &["B"]);
    let lines: Vec<(bool, i64)> =
        first.r#return.lines.iter().map(|l| (l.restocked, l.amount)).collect();
    assert_eq!(lines, [(true, 900), (false, 299)]);
    let refund = first.r#return.refund_id.expect("a refund");
    assert_eq!(b.te.state().refunds(&b.order.id)[0].id, refund);
    assert_eq!(b.summary(), "partially_refunded | 2700/1199/1501 | A 9, B 7");
    check_invariants(b.te.state());
    // Staff refund most of the rest by hand; a return then refunds only what is left.
    let by_hand = RefundPayment {
        order_id: b.order.id.to_string(),
        amount: Some(MoneyInput { amount: 1400, currency: "USD".into() }),
        reason: "goodwill".into(),
    };
    b.te.shop.send(by_hand).unwrap();
    let second = b.returned(&[("B", 2)], &[]);
    assert_eq!(second.r#return.amount(), 600);
    assert_eq!(b.summary(), "refunded | 2700/2700/0 | A 9, B 9");
    // Nothing left to refund: a last return restocks and refunds nothing.
    let third = b.returned(&[("A", 1)], &[]);
    assert_eq!(third.r#return.refund_id, None);
    assert_eq!(b.summary(), "refunded | 2700/2700/0 | A 10, B 9");
    check_invariants(b.te.state());
    let before = b.te.state().returns_of_order(&b.order.id);
    let te = b.te.reopen();
    assert_eq!(te.state().returns_of_order(&b.order.id), before);
    assert_eq!(levels(te.state(), "A").0, 10);
    check_invariants(te.state());
}

/// A rejected return in the middle leaves no gap: the line's returns still add up to
/// exactly what it cost.
#[test]
fn a_rejected_return_does_not_change_what_the_others_are_worth_in_total() {
    let b = bought(true, true);
    let two = b.request(&[("B", 2)]).unwrap().r#return;
    let one = b.request(&[("B", 1)]).unwrap().r#return;
    assert_eq!((two.amount(), one.amount()), (599, 300));
    b.decide(&two, false, "no").unwrap();
    let again = b.request(&[("B", 2)]).unwrap().r#return;
    assert_eq!(again.amount() + one.amount(), 899, "B's line paid 8.99");
    // An approved return whose units never came may still be rejected.
    b.decide(&again, true, "").unwrap();
    let withdrawn = b.decide(&again, false, "never arrived").unwrap().r#return;
    assert_eq!(withdrawn.status, ReturnStatus::Rejected);
    b.request(&[("B", 2)]).expect("its units are free again");
}

/// Fulfilment is kept apart from the status through a restart: a paid order partly
/// refunded, then shipped, is not shipped twice.
#[test]
fn a_partly_refunded_order_ships_once_across_a_restart() {
    let b = bought(false, false);
    let refund = RefundPayment {
        order_id: b.order.id.to_string(),
        amount: Some(MoneyInput { amount: 100, currency: "USD".into() }),
        reason: String::new(),
    };
    b.te.shop.send(refund).unwrap();
    b.te.shop.send(FulfillOrder { order_id: b.order.id.to_string() }).unwrap();
    let te = b.te.reopen();
    let again = te.shop.send(FulfillOrder { order_id: b.order.id.to_string() });
    assert_eq!(error_code(&again.unwrap_err()), "invalid_state");
    let order = te.state().order(&b.order.id).unwrap();
    assert_eq!(order.status, OrderStatus::PartiallyRefunded);
    assert!(te.state().fulfilled_at(&order).is_some());
}
