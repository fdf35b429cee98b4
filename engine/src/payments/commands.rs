//! The payments' commands: capture and refund, through the built-in test provider.

use std::sync::Arc;

use super::{Payment, PaymentEvent, Refund};
use crate::catalog::MoneyInput;
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::idempotency::{self, IdempotencyKey, IdempotentOutcome, Replay};
use crate::kernel::handler::{done, not_found, Ctx, Decision, Request, APPLIED};
use crate::orders::{invalid_transition, order_named, Order, OrderStatus};
use crate::types::*;
use crate::validate::Checks;

/// Captures payment for a pending order through the built-in test provider.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CapturePayment {
    /// The order.
    pub order_id: String,
    /// `test_card`.
    pub method: String,
    /// `tok_visa` and `tok_mastercard` are approved, `tok_declined` is declined.
    pub token: String,
    /// Makes a retry return the first outcome.
    pub idempotency: Option<IdempotencyKey>,
}

/// What a captured payment gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentReceipt {
    /// The order after the capture.
    pub order: Arc<Order>,
    /// The payment.
    pub payment: Payment,
}

/// What a capture's reply is read from: the payment it made, or the one a retry with
/// its idempotency key replays.
#[doc(hidden)]
#[derive(Debug)]
pub enum Captured {
    New(OrderId, PaymentId),
    Replayed(Arc<Order>, Arc<Payment>),
}

/// The card brand a test token stands for: approved, declined, or not a test token.
fn test_card(token: &str) -> Result<Option<&'static str>> {
    match super::test_token(token) {
        Ok(brand) => Ok(Some(brand)),
        Err(_) if token == "tok_declined" => Ok(None),
        Err(why) => Err(EngineError::field("token", why)),
    }
}

/// The order named, if it can be paid now: pending, its reservation not run out, and
/// no payment of it in progress.
pub(crate) fn payable_order(state: &State, id: &str, ctx: &Ctx<'_>) -> Result<Arc<Order>> {
    let order = order_named(state, id)?;
    if order.status != OrderStatus::PendingPayment {
        return Err(invalid_transition(&order, "pay"));
    }
    if ctx.now >= order.reservation_expires_at {
        return Err(EngineError::InvalidState("the order's reservation has expired".into()));
    }
    if state.open_charge(&order.id).is_some() {
        return Err(EngineError::InvalidState(
            "a payment of this order is in progress: wait for it to settle".into(),
        ));
    }
    Ok(order)
}

impl Request for CapturePayment {
    type Output = PaymentReceipt;
    type Outcome = Captured;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<Captured>> {
        let c = self;
        let print = || idempotency::fingerprint(&(&c.order_id, &c.method, &c.token));
        let tag = match idempotency::check(state, c.idempotency.as_ref(), print, ctx)? {
            Replay::Recorded(IdempotentOutcome::Payment(order, payment)) => {
                return Decision::nothing(Captured::Replayed(order, payment));
            }
            Replay::Recorded(IdempotentOutcome::Paid(paid)) => {
                let id = paid.order_id;
                let (order, payment) = state
                    .order(&id)
                    .and_then(|now| paid.rebuild(&now))
                    .ok_or_else(|| not_found(EntityKind::Order, id.text().as_str()))?;
                return Decision::nothing(Captured::Replayed(Arc::new(order), Arc::new(payment)));
            }
            Replay::Recorded(_) => return Err(EngineError::IdempotencyKeyReused),
            Replay::New(tag) => Some(tag),
            Replay::Unkeyed => None,
        };
        if c.method != "test_card" {
            return Err(EngineError::field("method", "the only payment method is test_card"));
        }
        let brand = test_card(&c.token)?;
        let order = payable_order(state, &c.order_id, ctx)?;
        let Some(brand) = brand else {
            return Err(EngineError::PaymentDeclined("the test card was declined".into()));
        };
        let payment = Payment {
            id: PaymentId::from_random(ctx.ids.random_u128()),
            method: c.method.clone(),
            card_brand: brand.to_string(),
            amount: order.total,
            created_at: ctx.now,
        };
        let outcome = Captured::New(order.id, payment.id);
        let event = PaymentEvent::PaymentCaptured {
            order_id: order.id,
            payment: Box::new(payment),
            idempotency: tag,
        };
        Decision::one(outcome, event)
    }

    fn reply(state: &State, outcome: Captured) -> PaymentReceipt {
        match outcome {
            Captured::New(order_id, payment_id) => {
                let order = state.order(&order_id).expect(APPLIED);
                let payment =
                    order.payments.iter().find(|p| p.id == payment_id).expect(APPLIED).clone();
                PaymentReceipt { order, payment }
            }
            Captured::Replayed(order, payment) => {
                PaymentReceipt { order, payment: Arc::unwrap_or_clone(payment) }
            }
        }
    }
}

/// Refunds per order, at most: each is a provider call and a ledger entry.
pub const REFUNDS_PER_ORDER_MAX: usize = 100;
/// The longest refund reason, in characters.
pub const REFUND_REASON_MAX: usize = 500;

/// Refunds part or all of what a paid order captured, through the built-in test
/// provider. Money only: the units stay sold (a return restocks them).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RefundPayment {
    /// The order.
    pub order_id: String,
    /// How much, in the order's currency; `None` refunds everything not yet refunded.
    pub amount: Option<MoneyInput>,
    /// Why (up to 500 characters, may be empty).
    pub reason: String,
}

/// What a refund gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundReceipt {
    /// The refund.
    pub refund: Refund,
    /// The order after it.
    pub order: Arc<Order>,
}

/// Refuses a refund past the most an order takes (made, or being made by a provider).
pub(crate) fn check_refund_count(state: &State, order: &Order) -> Result<()> {
    let in_progress = state
        .payment_calls(&order.id)
        .iter()
        .filter(|c| c.kind == super::CallKind::Refund && c.status.is_open())
        .count();
    if state.refunds(&order.id).len() + in_progress >= REFUNDS_PER_ORDER_MAX {
        return Err(EngineError::InvalidState(format!(
            "an order takes at most {REFUNDS_PER_ORDER_MAX} refunds"
        )));
    }
    Ok(())
}

/// The next refund of `order` through the built-in test provider (which refunds at
/// once; its reference names the refund). The caller checked the amount and the count.
pub(crate) fn new_refund(
    state: &State,
    order: &Order,
    amount: Money,
    reason: String,
    ctx: &mut Ctx<'_>,
) -> Refund {
    let id = RefundId::from_random(ctx.ids.random_u128());
    Refund {
        id,
        order_id: order.id,
        number: state.refunds(&order.id).len() as u32 + 1,
        amount,
        reason,
        provider_reference: format!("test_{id}"),
        created_at: ctx.now,
    }
}

/// The order named and the amount to refund of it, checked: the order is paid (and not
/// all refunded), the amount (`None`: everything left) is in its currency, more than
/// zero, and at most what can still be refunded (captured less refunded, less refunds
/// a provider is making now), the reason fits, and the order takes another refund.
pub(crate) fn checked_refund(
    state: &State,
    order_id: &str,
    amount: Option<&MoneyInput>,
    reason: &str,
) -> Result<(Arc<Order>, Money)> {
    let mut checks = Checks::default();
    let amount = amount.and_then(|input| input.checked(&mut checks, "amount"));
    checks.text("reason", reason, 0, REFUND_REASON_MAX, true);
    done(checks)?;
    let order = order_named(state, order_id)?;
    if !matches!(
        order.status,
        OrderStatus::Paid | OrderStatus::Fulfilled | OrderStatus::PartiallyRefunded
    ) {
        return Err(invalid_transition(&order, "refund"));
    }
    check_refund_count(state, &order)?;
    let ledger = state.ledger(&order);
    let refundable = state.refundable(&order);
    let amount = amount.unwrap_or(refundable);
    if amount.currency() != order.currency() {
        return Err(EngineError::field(
            "amount.currency",
            format!("must be the order's currency, {}", order.currency()),
        ));
    }
    if amount.amount() == 0 {
        return Err(EngineError::field("amount.amount", "must be more than zero"));
    }
    if amount.amount() > refundable.amount() {
        return Err(EngineError::field(
            "amount.amount",
            format!(
                "exceeds what can still be refunded: {} of the {} captured",
                refundable.amount(),
                ledger.captured.amount()
            ),
        ));
    }
    Ok((order, amount))
}

impl Request for RefundPayment {
    type Output = RefundReceipt;
    type Outcome = (OrderId, RefundId);

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<(OrderId, RefundId)>> {
        let c = self;
        let (order, amount) = checked_refund(state, &c.order_id, c.amount.as_ref(), &c.reason)?;
        if let Some(charge) = state.captured_charge(&order.id) {
            return Err(EngineError::InvalidState(format!(
                "the order was paid through the provider {}: refund it through the provider \
                 (StartRefund)",
                charge.provider
            )));
        }
        let refund = new_refund(state, &order, amount, c.reason.clone(), ctx);
        let id = refund.id;
        Decision::one((order.id, id), PaymentEvent::Refunded { refund: Box::new(refund) })
    }

    fn reply(state: &State, (order_id, refund_id): (OrderId, RefundId)) -> RefundReceipt {
        let order = state.order(&order_id).expect(APPLIED);
        let refund =
            state.refunds(&order_id).iter().find(|r| r.id == refund_id).expect(APPLIED).clone();
        RefundReceipt { refund, order }
    }
}
