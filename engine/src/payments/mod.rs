//! Payments: capturing an order's payment through the built-in test provider. A
//! capture pays the order and ships its reserved units out of inventory.

mod model;

use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

pub use model::*;

use crate::domains::State;
use crate::error::{EngineError, Result};
use crate::idempotency::{self, IdempotencyKey, IdempotencyTag, IdempotentOutcome, Replay};
use crate::kernel::handler::{Ctx, Decision, Request, APPLIED};
use crate::kernel::table::{Domain, Row};
use crate::orders::{self, invalid_transition, order_named, Order, OrderStatus};
use crate::types::*;

/// Payments keep no table of their own: a payment is part of its order.
#[derive(Debug, Default)]
pub(crate) struct Tables;

pub(crate) const DOMAIN: Domain =
    Domain { name: "payments", tables: &[], counters: |_| vec![], timers: None, verify: None };

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The payments' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum PaymentEvent {
        /// Payment was captured: the reserved units left `on_hand`.
        PaymentCaptured {
            order_id: OrderId,
            payment: Box<Payment>,
            idempotency: Option<Box<IdempotencyTag>>,
        },
    }
}
pub use event::PaymentEvent;

pub(crate) fn apply(state: &State, event: &PaymentEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        PaymentEvent::PaymentCaptured { order_id, payment, idempotency } => {
            let mut order = orders::take_pending(state, order_id);
            for line in &order.lines {
                crate::inventory::ship(state, &line.sku, line.quantity, rows);
            }
            crate::flash_sales::order_paid(state, order_id, at, rows);
            mark_paid(&mut order, (**payment).clone(), at);
            if let Some(tag) = idempotency {
                let outcome = IdempotentOutcome::Payment(order.clone(), (**payment).clone());
                idempotency::record(state, tag, outcome, at, rows);
            }
            orders::put_order(state, order, rows);
        }
    }
}

/// The order after `payment` is captured: paid, the payment listed.
pub(crate) fn mark_paid(order: &mut Order, payment: Payment, at: TimestampMs) {
    order.status = OrderStatus::Paid;
    order.payments.push(payment);
    orders::touch(order, at);
}

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
    Replayed(Box<(Order, Payment)>),
}

/// The card brand a test token stands for: approved, declined, or not a test token.
fn test_card(token: &str) -> Result<Option<&'static str>> {
    match token {
        "tok_visa" => Ok(Some("visa")),
        "tok_mastercard" => Ok(Some("mastercard")),
        "tok_declined" => Ok(None),
        _ => Err(EngineError::field(
            "token",
            "the test provider takes tok_visa, tok_mastercard or tok_declined",
        )),
    }
}

impl Request for CapturePayment {
    type Output = PaymentReceipt;
    type Outcome = Captured;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<Captured>> {
        let c = self;
        let print = || idempotency::fingerprint(&(&c.order_id, &c.method, &c.token));
        let tag = match idempotency::check(state, c.idempotency.as_ref(), print, ctx)? {
            Replay::Recorded(IdempotentOutcome::Payment(order, payment)) => {
                return Decision::nothing(Captured::Replayed(Box::new((order, payment))));
            }
            Replay::Recorded(_) => return Err(EngineError::IdempotencyKeyReused),
            Replay::New(tag) => Some(tag),
            Replay::Unkeyed => None,
        };
        if c.method != "test_card" {
            return Err(EngineError::field("method", "the only payment method is test_card"));
        }
        let brand = test_card(&c.token)?;
        let order = order_named(state, &c.order_id)?;
        if order.status != OrderStatus::PendingPayment {
            return Err(invalid_transition(&order, "pay"));
        }
        if ctx.now >= order.reservation_expires_at {
            return Err(EngineError::InvalidState("the order's reservation has expired".into()));
        }
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
            Captured::Replayed(replayed) => {
                let (order, payment) = *replayed;
                PaymentReceipt { order: Arc::new(order), payment }
            }
        }
    }
}
