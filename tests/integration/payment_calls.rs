//! Payments through a provider (the outbox): the call is recorded before the provider
//! is asked and every answer after; the processor takes a call through authorization
//! and capture with retries, backoff and a circuit breaker, voids what the provider did
//! not settle in time, and finishes after a restart what a previous run left open.
//! While a charge is open its order neither expires nor can be cancelled.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use emporium_engine::*;
use emporium_tests::*;

/// A provider scripted by the test: its first `failures` calls fail, then it answers
/// like the test provider; `pending` makes it answer authorizations by "callback" (never
/// sent: the test records the answer itself).
struct Scripted {
    failures: u32,
    pending: bool,
    decline_refunds: bool,
    calls: AtomicU32,
    voids: AtomicU32,
}

impl Scripted {
    fn new(failures: u32, pending: bool) -> Arc<Scripted> {
        Arc::new(Scripted {
            failures,
            pending,
            decline_refunds: false,
            calls: AtomicU32::new(0),
            voids: AtomicU32::new(0),
        })
    }

    fn fails_now(&self) -> bool {
        self.calls.fetch_add(1, Ordering::SeqCst) < self.failures
    }
}

impl PaymentProvider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn authorize<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, Authorization> {
        Box::pin(async move {
            if self.fails_now() {
                return Err(ProviderError::Unavailable("scripted failure".into()));
            }
            let reference = format!("sc_{}", call.id);
            if self.pending {
                return Ok(Authorization::Pending { reference });
            }
            match call.token.as_str() {
                "tok_visa" => {
                    Ok(Authorization::Authorized { reference, card_brand: "visa".into() })
                }
                _ => Err(ProviderError::Declined("scripted decline".into())),
            }
        })
    }

    fn capture<'a>(&'a self, _call: &'a PaymentCall) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            if self.fails_now() {
                return Err(ProviderError::Unavailable("scripted failure".into()));
            }
            Ok(())
        })
    }

    fn void<'a>(&'a self, _call: &'a PaymentCall) -> ProviderFuture<'a, ()> {
        self.voids.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(())))
    }

    fn refund<'a>(&'a self, call: &'a PaymentCall) -> ProviderFuture<'a, String> {
        Box::pin(async move {
            if self.fails_now() {
                return Err(ProviderError::Unavailable("scripted failure".into()));
            }
            if self.decline_refunds {
                return Err(ProviderError::Declined("scripted refund decline".into()));
            }
            assert!(call.charge_reference.starts_with("sc_"), "a refund names its charge");
            Ok(format!("sc_{}", call.id))
        })
    }
}

/// A provider's answer to call `call_id`, as a callback or the processor records it (an
/// authorization comes with the card's brand).
fn answer(call_id: &str, status: CallStatus, reference: &str, message: &str) -> AdvanceCall {
    let card_brand = if status == CallStatus::Authorized { "visa" } else { "" };
    AdvanceCall {
        call_id: call_id.into(),
        status,
        reference: reference.into(),
        card_brand: card_brand.into(),
        message: message.into(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Fast retries and a small breaker, on the test's manual clock.
fn fast(te: &TestEngine) -> ProcessorConfig {
    ProcessorConfig {
        attempts: 3,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(20),
        callback_wait: Duration::from_secs(30),
        give_up_after: Duration::from_secs(600),
        poll: Duration::from_millis(5),
        concurrency: 8,
        clock: te.clock.clone(),
    }
}

/// A pending order of 2 × SKU `P` (10.00 each, 5 on hand).
fn pending_order(te: &TestEngine) -> Arc<Order> {
    stocked_sku(&te.shop, "P", 1000, 5);
    checkout(&te.shop, &cart_with(&te.shop, &[("P", 2)]).id).unwrap()
}

fn start(te: &TestEngine, order: &Order, provider: &str, token: &str) -> Result<Arc<PaymentCall>> {
    te.shop.send(StartCharge {
        order_id: order.id.to_string(),
        provider: provider.into(),
        method: "test_card".into(),
        token: token.into(),
        idempotency: None,
    })
}

/// Waits (up to 10 s) until the call is in `status`.
fn settled(te: &TestEngine, id: PaymentCallId, status: CallStatus) -> Arc<PaymentCall> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let call = te.state().payment_call(&id).unwrap();
        if call.status == status {
            return call;
        }
        assert!(std::time::Instant::now() < deadline, "the call stayed {:?}", call.status);
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn ledger_kinds(te: &TestEngine, order: &OrderId) -> Vec<&'static str> {
    let order = te.state().order(order).unwrap();
    te.state().ledger(&order).entries.iter().map(|e| e.kind.as_str()).collect()
}

#[test]
fn a_synchronous_provider_authorizes_and_captures_through_the_outbox() {
    let te = TestEngine::new();
    let rt = runtime();
    let _guard = rt.enter();
    let processor =
        PaymentProcessor::start(te.engine.clone(), vec![Arc::new(TestProvider)], fast(&te))
            .unwrap();
    let order = pending_order(&te);
    let call = start(&te, &order, "test", "tok_visa").unwrap();
    assert_eq!(call.status, CallStatus::Pending, "recorded before the provider is asked");
    processor.kick();
    let call = settled(&te, call.id, CallStatus::Captured);
    assert_eq!(call.reference, format!("test_{}", call.id));
    assert_eq!(call.card_brand, "visa");
    let paid = te.state().order(&order.id).unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(paid.payments.len(), 1);
    assert_eq!(Some(paid.payments[0].id), call.payment_id);
    assert_eq!(levels(te.state(), "P"), (3, 0), "the units shipped");
    assert_eq!(ledger_kinds(&te, &order.id), ["authorization", "capture"]);
    let ledger = te.state().ledger(&paid);
    assert_eq!(ledger.captured, paid.total);
    assert_eq!(ledger.entries[1].provider_reference, call.reference);
    check_invariants(te.state());

    // A declined token: recorded, the order unchanged and payable again.
    let other = checkout(&te.shop, &cart_with(&te.shop, &[("P", 1)]).id).unwrap();
    let declined = start(&te, &other, "test", "tok_declined").unwrap();
    processor.kick();
    let declined = settled(&te, declined.id, CallStatus::Declined);
    assert_eq!(declined.message, "the test card was declined");
    assert_eq!(te.state().order(&other.id).unwrap().status, OrderStatus::PendingPayment);
    assert!(ledger_kinds(&te, &other.id).is_empty());
    let again = start(&te, &other, "test", "tok_mastercard").unwrap();
    processor.kick();
    settled(&te, again.id, CallStatus::Captured);
    assert_eq!(te.state().payment_calls(&other.id).len(), 2);
    check_invariants(te.state());
    processor.stop();
}

#[test]
fn failures_are_retried_with_backoff_and_open_the_breaker() {
    let te = TestEngine::new();
    let rt = runtime();
    let _guard = rt.enter();
    // Seven failures: more than one pass's attempts (3) and than the breaker's limit.
    let provider = Scripted::new(7, false);
    let processor =
        PaymentProcessor::start(te.engine.clone(), vec![provider.clone()], fast(&te)).unwrap();
    let order = pending_order(&te);
    let call = start(&te, &order, "scripted", "tok_visa").unwrap();
    processor.kick();
    settled(&te, call.id, CallStatus::Captured);
    assert!(provider.calls.load(Ordering::SeqCst) >= 9, "7 failures, then authorize and capture");
    assert!(processor.breaker_openings("scripted").unwrap() >= 1, "the breaker opened");
    assert_eq!(processor.breaker("scripted"), Some(BreakerState::Closed), "and closed again");
    assert!(processor.stats().provider_failures.load(Ordering::Relaxed) >= 2);
    assert_eq!(te.state().order(&order.id).unwrap().status, OrderStatus::Paid);
    check_invariants(te.state());
    processor.stop();
}

#[test]
fn the_breaker_opens_after_consecutive_failures_and_lets_one_trial_through() {
    let breaker = CircuitBreaker::new(2, Duration::from_millis(30));
    assert!(breaker.allow());
    breaker.failure();
    assert_eq!(breaker.state(), BreakerState::Closed);
    breaker.failure();
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(!breaker.allow(), "open: calls fail fast");
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(breaker.allow(), "one trial");
    assert!(!breaker.allow(), "only one");
    breaker.failure();
    assert_eq!(breaker.state(), BreakerState::Open, "a failed trial reopens it");
    std::thread::sleep(Duration::from_millis(40));
    assert!(breaker.allow());
    breaker.success();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.times_opened(), 2);
    // Full jitter: never above the doubled ceiling, never above the cap.
    for retry in 0..30 {
        let wait = backoff(retry, Duration::from_millis(10), Duration::from_millis(300));
        let ceiling = Duration::from_millis(10 << retry.min(5)).min(Duration::from_millis(300));
        assert!(wait <= ceiling, "retry {retry}: {wait:?} > {ceiling:?}");
    }
}

#[test]
fn an_open_charge_holds_its_order_until_it_settles() {
    let te = TestEngine::new();
    let rt = runtime();
    let _guard = rt.enter();
    let provider = Scripted::new(0, true);
    // Not given up within the test: it moves the clock past the reservation only.
    let mut config = fast(&te);
    config.give_up_after = Duration::from_secs(3600);
    let processor =
        PaymentProcessor::start(te.engine.clone(), vec![provider.clone()], config).unwrap();
    let order = pending_order(&te);
    let call = start(&te, &order, "scripted", "tok_visa").unwrap();
    processor.kick();
    let call = settled(&te, call.id, CallStatus::AwaitingCallback);
    assert_eq!(call.reference, format!("sc_{}", call.id));

    // Past its reservation, the order is held while the provider may be taking money.
    te.clock.advance(16 * 60 * 1000);
    assert_eq!(te.shop.send(ExpireDue).unwrap(), 0);
    let cancel =
        te.shop.send(CancelOrder { order_id: order.id.to_string(), expected_version: None });
    assert_eq!(outcome(&cancel), "invalid_state");
    let twice = start(&te, &order, "scripted", "tok_visa");
    assert_eq!(outcome(&twice), "invalid_state", "one open charge per order");
    let inline = te.shop.send(CapturePayment {
        order_id: order.id.to_string(),
        method: "test_card".into(),
        token: "tok_visa".into(),
        idempotency: None,
    });
    assert_eq!(outcome(&inline), "invalid_state");
    check_invariants(te.state());

    // The callback: a decline. Recorded once; the same answer again changes nothing.
    let decline =
        answer(&call.id.to_string(), CallStatus::Declined, &call.reference, "insufficient funds");
    let lsn = te.engine.last_lsn();
    te.shop.send(decline.clone()).unwrap();
    let after = te.engine.last_lsn();
    assert!(after > lsn);
    te.shop.send(decline).unwrap();
    assert_eq!(te.engine.last_lsn(), after, "a repeated callback writes nothing");
    // Now it expires as it would have.
    assert_eq!(te.shop.send(ExpireDue).unwrap(), 1);
    assert_eq!(te.state().order(&order.id).unwrap().status, OrderStatus::Expired);
    assert_eq!(levels(te.state(), "P"), (5, 0));
    check_invariants(te.state());
    processor.stop();
}

#[test]
fn answers_are_checked_against_the_call() {
    let te = TestEngine::new();
    let order = pending_order(&te);
    let call = start(&te, &order, "scripted", "tok_visa").unwrap();
    let advance =
        |status, reference: &str| te.shop.send(answer(&call.id.to_string(), status, reference, ""));
    assert_eq!(outcome(&advance(CallStatus::Captured, "r1")), "invalid_state", "not authorized");
    assert_eq!(outcome(&advance(CallStatus::Authorized, "")), "validation_failed: reference");
    advance(CallStatus::Authorized, "r1").unwrap();
    assert_eq!(outcome(&advance(CallStatus::Declined, "r1")), "invalid_state", "held money");
    assert_eq!(outcome(&advance(CallStatus::Captured, "r2")), "validation_failed: reference");
    advance(CallStatus::Captured, "r1").unwrap();
    // The authorization again (a late callback) is nothing new; a decline is refused.
    advance(CallStatus::Authorized, "r1").unwrap();
    assert_eq!(outcome(&advance(CallStatus::Declined, "r1")), "invalid_state");
    assert_eq!(te.state().order(&order.id).unwrap().status, OrderStatus::Paid);
    let unknown = te.shop.send(answer("pcall_nope", CallStatus::Declined, "", ""));
    assert_eq!(outcome(&unknown), "not_found: payment call");

    // Card numbers are never taken, and an order takes at most 20 attempts.
    let other = checkout(&te.shop, &cart_with(&te.shop, &[("P", 1)]).id).unwrap();
    let card = start(&te, &other, "scripted", "4242 4242 4242 4242");
    assert_eq!(outcome(&card), "validation_failed: token");
    for _ in 0..PAYMENT_CALLS_PER_ORDER_MAX {
        let c = start(&te, &other, "scripted", "tok_declined").unwrap();
        te.shop.send(answer(&c.id.to_string(), CallStatus::Declined, "", "no")).unwrap();
    }
    assert_eq!(outcome(&start(&te, &other, "scripted", "tok_visa")), "invalid_state");
    check_invariants(te.state());
}

#[test]
fn a_call_the_provider_never_settles_is_voided_and_its_order_released() {
    let te = TestEngine::new();
    let rt = runtime();
    let _guard = rt.enter();
    // Always unreachable for authorizations; voids succeed.
    let provider = Scripted::new(u32::MAX, false);
    let mut config = fast(&te);
    config.give_up_after = Duration::from_secs(60);
    let processor =
        PaymentProcessor::start(te.engine.clone(), vec![provider.clone()], config).unwrap();
    let order = pending_order(&te);
    let call = start(&te, &order, "scripted", "tok_visa").unwrap();
    processor.kick();
    // Tried and failed, more than one pass' worth, and still open.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while provider.calls.load(Ordering::SeqCst) < 6 {
        assert!(std::time::Instant::now() < deadline, "the provider was not tried");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(te.state().payment_call(&call.id).unwrap().status, CallStatus::Pending);
    te.clock.advance(61_000);
    let call = settled(&te, call.id, CallStatus::Voided);
    assert!(provider.voids.load(Ordering::SeqCst) >= 1, "voided with the provider first");
    assert_eq!(call.message, "the provider did not settle the payment in time");
    assert!(ledger_kinds(&te, &order.id).is_empty(), "never authorized: no entries");
    te.clock.advance(15 * 60 * 1000);
    assert_eq!(te.shop.send(ExpireDue).unwrap(), 1);
    check_invariants(te.state());
    processor.stop();
}

#[test]
fn a_restart_resumes_the_calls_left_open() {
    let te = TestEngine::new();
    let order = pending_order(&te);
    // Recorded, then the process stops before the provider was asked.
    let call = start(&te, &order, "test", "tok_visa").unwrap();
    let te = te.reopen();
    assert_eq!(te.state().payment_call(&call.id).unwrap().status, CallStatus::Pending);
    assert_eq!(te.state().open_charge(&order.id).map(|c| c.id), Some(call.id));
    let rt = runtime();
    let _guard = rt.enter();
    let processor =
        PaymentProcessor::start(te.engine.clone(), vec![Arc::new(TestProvider)], fast(&te))
            .unwrap();
    settled(&te, call.id, CallStatus::Captured);
    assert_eq!(te.state().order(&order.id).unwrap().status, OrderStatus::Paid);
    processor.stop();
    let te = te.reopen();
    assert_eq!(te.state().payment_call(&call.id).unwrap().status, CallStatus::Captured);
    assert!(te.state().open_payment_calls().is_empty());
    assert_eq!(ledger_kinds(&te, &order.id), ["authorization", "capture"]);
    check_invariants(te.state());
}

fn refund_through(te: &TestEngine, order: &Order, amount: i64) -> Result<Arc<PaymentCall>> {
    te.shop.send(StartRefund {
        order_id: order.id.to_string(),
        amount: Some(MoneyInput { amount, currency: "USD".into() }),
        reason: "damaged".into(),
    })
}

/// A processor with the test provider, and an order it was paid through.
fn paid_through_test_provider(te: &TestEngine) -> (PaymentProcessor, Arc<Order>, Arc<PaymentCall>) {
    let processor =
        PaymentProcessor::start(te.engine.clone(), vec![Arc::new(TestProvider)], fast(te)).unwrap();
    let order = pending_order(te);
    let charge = start(te, &order, "test", "tok_visa").unwrap();
    processor.kick();
    let charge = settled(te, charge.id, CallStatus::Captured);
    (processor, order, charge)
}

#[test]
fn an_order_paid_through_a_provider_is_refunded_through_it() {
    let te = TestEngine::new();
    let rt = runtime();
    let _guard = rt.enter();
    let (processor, order, charge) = paid_through_test_provider(&te);

    // The built-in refund is refused: the money is with the provider.
    let by_hand = te.shop.send(RefundPayment {
        order_id: order.id.to_string(),
        amount: None,
        reason: String::new(),
    });
    assert_eq!(outcome(&by_hand), "invalid_state");
    let call = refund_through(&te, &order, 500).unwrap();
    assert_eq!((call.kind, call.status), (CallKind::Refund, CallStatus::Pending));
    assert_eq!(call.charge_reference, format!("test_{}", charge.id));
    processor.kick();
    let call = settled(&te, call.id, CallStatus::Refunded);
    let refunds = te.state().refunds(&order.id);
    assert_eq!(refunds.len(), 1);
    assert_eq!(Some(refunds[0].id), call.refund_id);
    assert_eq!(refunds[0].provider_reference, format!("test_{}", call.id));
    assert_eq!(refunds[0].reason, "damaged");
    let now = te.state().order(&order.id).unwrap();
    assert_eq!(now.status, OrderStatus::PartiallyRefunded);
    assert_eq!(ledger_kinds(&te, &order.id), ["authorization", "capture", "refund"]);
    assert_eq!(te.state().refundable(&now).amount(), 1500);
    check_invariants(te.state());
    // The rest, by default.
    let rest = te.shop.send(StartRefund { order_id: order.id.to_string(), ..Default::default() });
    let rest = rest.unwrap();
    assert_eq!(rest.amount.amount(), 1500);
    processor.kick();
    settled(&te, rest.id, CallStatus::Refunded);
    assert_eq!(te.state().order(&order.id).unwrap().status, OrderStatus::Refunded);
    check_invariants(te.state());
    processor.stop();
}

#[test]
fn a_refund_in_progress_holds_its_amount_and_a_declined_one_gives_it_back() {
    let te = TestEngine::new();
    let rt = runtime();
    let _guard = rt.enter();
    let mut provider = Scripted::new(0, false);
    Arc::get_mut(&mut provider).unwrap().decline_refunds = true;
    let order = pending_order(&te);
    let charge = start(&te, &order, "scripted", "tok_visa").unwrap();
    // Answered by hand: the processor starts later, so the refund below stays pending.
    for (status, reference) in [(CallStatus::Authorized, "sc_1"), (CallStatus::Captured, "sc_1")] {
        te.shop.send(answer(&charge.id.to_string(), status, reference, "")).unwrap();
    }
    let held = refund_through(&te, &order, 1500).unwrap();
    let over = refund_through(&te, &order, 501);
    assert_eq!(outcome(&over), "validation_failed: amount.amount", "1500 of 2000 are held");
    refund_through(&te, &order, 500).unwrap();
    assert_eq!(outcome(&refund_through(&te, &order, 1)), "validation_failed: amount.amount");
    check_invariants(te.state());

    let processor =
        PaymentProcessor::start(te.engine.clone(), vec![provider.clone()], fast(&te)).unwrap();
    let held = settled(&te, held.id, CallStatus::Declined);
    assert_eq!(held.message, "scripted refund decline");
    let now = te.state().order(&order.id).unwrap();
    assert_eq!(now.status, OrderStatus::Paid, "no refund was made");
    assert!(te.state().refunds(&order.id).is_empty());
    // Once every refund call is declined, everything is refundable again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !te.state().open_payment_calls().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(te.state().refundable(&now).amount(), 2000);
    check_invariants(te.state());
    processor.stop();
}

#[test]
fn a_return_of_an_order_paid_through_a_provider_is_refunded_through_it() {
    let te = TestEngine::new();
    let rt = runtime();
    let _guard = rt.enter();
    let (processor, order, _) = paid_through_test_provider(&te);
    te.shop.send(FulfillOrder { order_id: order.id.to_string() }).unwrap();
    let asked = te
        .shop
        .send(RequestReturn {
            order_id: order.id.to_string(),
            lines: vec![("P".into(), 1)],
            reason: "too big".into(),
        })
        .unwrap();
    let return_id = asked.r#return.id.to_string();
    te.shop
        .send(DecideReturn { return_id: return_id.clone(), approve: true, note: String::new() })
        .unwrap();
    let received =
        te.shop.send(ReceiveReturn { return_id, not_restocked: vec![] }).unwrap().r#return;
    assert_eq!(levels(te.state(), "P"), (4, 0), "restocked at once");
    let refund_call = te
        .state()
        .payment_calls(&order.id)
        .into_iter()
        .find(|c| c.kind == CallKind::Refund)
        .expect("the return's refund goes through the provider");
    assert_eq!(refund_call.refund_id, received.refund_id);
    assert_eq!(refund_call.amount.amount(), 1000);
    processor.kick();
    settled(&te, refund_call.id, CallStatus::Refunded);
    let refunds = te.state().refunds(&order.id);
    assert_eq!(refunds.iter().map(|r| r.id).collect::<Vec<_>>(), [received.refund_id.unwrap()]);
    check_invariants(te.state());
    processor.stop();
}

#[test]
fn after_a_long_outage_an_authorization_is_captured_and_an_unknown_provider_given_up() {
    let te = TestEngine::new();
    let order = pending_order(&te);
    let call = start(&te, &order, "test", "tok_visa").unwrap();
    let authorized =
        answer(&call.id.to_string(), CallStatus::Authorized, &format!("test_{}", call.id), "");
    te.shop.send(authorized).unwrap();
    // Another order: three declined attempts, then one through a provider this
    // deployment no longer has.
    let other = checkout(&te.shop, &cart_with(&te.shop, &[("P", 1)]).id).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        te.clock.advance(1);
        let c = start(&te, &other, "test", "tok_declined").unwrap();
        let decline = answer(&c.id.to_string(), CallStatus::Declined, "", "no");
        te.shop.send(decline).unwrap();
        ids.push(c.id);
    }
    te.clock.advance(1);
    let lost = start(&te, &other, "gone", "tok_visa").unwrap();
    ids.push(lost.id);

    let te = te.reopen();
    let listed: Vec<PaymentCallId> =
        te.state().payment_calls(&other.id).iter().map(|c| c.id).collect();
    assert_eq!(listed, ids, "oldest first after a restart too");
    // An hour down: past the give-up time (600 s) and the reservations (15 min).
    te.clock.advance(3_600_000);
    let rt = runtime();
    let _guard = rt.enter();
    let processor =
        PaymentProcessor::start(te.engine.clone(), vec![Arc::new(TestProvider)], fast(&te))
            .unwrap();
    settled(&te, call.id, CallStatus::Captured);
    assert_eq!(te.state().order(&order.id).unwrap().status, OrderStatus::Paid, "not voided");
    let lost = settled(&te, lost.id, CallStatus::Voided);
    assert!(lost.message.contains("not configured"), "{}", lost.message);
    // The sequencer expires what is due after a command, or this does.
    te.shop.send(ExpireDue).unwrap();
    let other = te.state().order(&other.id).unwrap();
    assert_eq!(other.status, OrderStatus::Expired, "the other order expires at last");
    check_invariants(te.state());
    processor.stop();
}
