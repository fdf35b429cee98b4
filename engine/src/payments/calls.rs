//! Payments through a provider: the outbox of provider calls.
//!
//! A payment through an external provider is recorded before the provider is asked
//! ([`StartCharge`]: a [`PaymentCall`] in `pending`) and every answer is recorded after
//! ([`AdvanceCall`]), so a crash between the two leaves a call the
//! [`crate::PaymentProcessor`] finds and finishes on restart: the order is never in an
//! unknown state. While a charge is open its order neither expires nor can be cancelled
//! (the provider may be taking the money); a declined or voided charge lets it expire as
//! it would have.
//!
//! ```text
//! charge: pending ──► awaiting_callback ──► authorized ──► captured
//!            │  └──────────────────────────────►┘
//!            └──► declined / voided (from any open status)
//! refund: pending ──► refunded | declined
//! ```
//!
//! An order paid through a provider is refunded through it ([`StartRefund`]): the refund
//! call holds its amount (what can still be refunded excludes it) until the provider
//! answers, and its [`Refund`] is made, with the provider's reference, when it does.
//! A refund call is never voided: it is retried until the provider answers.

use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

use super::{Payment, PaymentEvent, Refund};
use crate::catalog::MoneyInput;
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::idempotency::{self, IdempotencyKey, IdempotencyTag, IdempotentOutcome, Replay};
use crate::kernel::handler::{done, not_found, Ctx, Decision, Request, APPLIED};
use crate::kernel::table::Row;
use crate::orders::{invalid_transition, Order, OrderStatus};
use crate::types::*;
use crate::validate::Checks;

/// Provider calls open at once, at most: past it a new payment is refused with
/// [`EngineError::Overloaded`] until some settle. Each open charge holds its order's
/// reservation past its expiry, so this bounds what a stalled provider can hold.
pub const OPEN_CALLS_MAX: usize = 10_000;
/// Payment calls per order, at most (a declined one may be followed by another).
pub const PAYMENT_CALLS_PER_ORDER_MAX: usize = 20;
/// The longest provider name, token, reference or card brand, in bytes.
pub const PROVIDER_TEXT_MAX: usize = 200;
/// The longest message a provider gives with a decline.
pub const PROVIDER_MESSAGE_MAX: usize = 500;

/// What a provider call does.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// Authorize and capture an order's total.
    Charge,
    /// Give back part or all of what a charge captured.
    Refund,
}

impl CallKind {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallKind::Charge => "charge",
            CallKind::Refund => "refund",
        }
    }
}

/// Where a provider call is.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// Recorded; the provider has not answered (or its answer was lost in a crash).
    Pending,
    /// The provider took the request and will answer by callback.
    AwaitingCallback,
    /// The provider authorized the amount; capturing it is next.
    Authorized,
    /// Captured: the order is paid.
    Captured,
    /// The provider declined; the order is unchanged and can be paid again.
    Declined,
    /// Given up (the provider could not be reached in time, or the capture failed)
    /// and voided with the provider: no money moved.
    Voided,
    /// A refund the provider made.
    Refunded,
}

impl CallStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallStatus::Pending => "pending",
            CallStatus::AwaitingCallback => "awaiting_callback",
            CallStatus::Authorized => "authorized",
            CallStatus::Captured => "captured",
            CallStatus::Declined => "declined",
            CallStatus::Voided => "voided",
            CallStatus::Refunded => "refunded",
        }
    }

    /// The status of a wire name.
    pub fn parse(name: &str) -> Option<CallStatus> {
        [
            CallStatus::Pending,
            CallStatus::AwaitingCallback,
            CallStatus::Authorized,
            CallStatus::Captured,
            CallStatus::Declined,
            CallStatus::Voided,
            CallStatus::Refunded,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// Whether the call still waits for the provider.
    pub fn is_open(&self) -> bool {
        matches!(self, CallStatus::Pending | CallStatus::AwaitingCallback | CallStatus::Authorized)
    }

    /// Whether a call of `kind` in this status may move to `next`.
    pub fn can_become(&self, kind: CallKind, next: CallStatus) -> bool {
        use CallStatus::*;
        match kind {
            // An authorization is captured or voided, never declined: the provider
            // holds the money until one of the two.
            CallKind::Charge => matches!(
                (self, next),
                (Pending, AwaitingCallback | Authorized)
                    | (AwaitingCallback, Authorized)
                    | (Authorized, Captured)
                    | (Pending | AwaitingCallback, Declined)
                    | (Pending | AwaitingCallback | Authorized, Voided)
            ),
            CallKind::Refund => matches!((self, next), (Pending, Refunded | Declined)),
        }
    }
}

/// A call to a payment provider for an order: the outbox entry, recorded before the
/// provider is asked and kept as the record of what it answered.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PaymentCall {
    /// The id; also the idempotency key the provider is given, so asking again after a
    /// crash cannot charge twice.
    pub id: PaymentCallId,
    /// The order paid or refunded.
    pub order_id: OrderId,
    /// A charge or a refund.
    pub kind: CallKind,
    /// The provider's name.
    pub provider: String,
    /// The payment method (`test_card`; a refund's is its charge's).
    pub method: String,
    /// The provider's token for the card; never a card number (empty for a refund).
    pub token: String,
    /// The amount: the order's total for a charge.
    pub amount: Money,
    /// Where it is.
    pub status: CallStatus,
    /// The provider's reference, once it gave one.
    pub reference: String,
    /// The card brand, once authorized.
    pub card_brand: String,
    /// The provider's message with a decline, or why the call was voided.
    pub message: String,
    /// When the provider authorized it, if it did.
    pub authorized_at: Option<TimestampMs>,
    /// The payment a capture made.
    pub payment_id: Option<PaymentId>,
    /// A refund's: the reference of the charge it gives back.
    pub charge_reference: String,
    /// A refund's reason.
    pub reason: String,
    /// A refund's id, chosen when the call is recorded; the refund exists once the
    /// provider made it.
    pub refund_id: Option<RefundId>,
    /// When it was recorded.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
}

/// A provider's answer to a call, as recorded.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CallStep {
    /// The call.
    pub call_id: PaymentCallId,
    /// Its order.
    pub order_id: OrderId,
    /// Its new status.
    pub status: CallStatus,
    /// The provider's reference (kept once given).
    pub reference: String,
    /// The card brand (with an authorization).
    pub card_brand: String,
    /// The provider's message (with a decline or a void).
    pub message: String,
    /// The payment a capture makes.
    pub payment: Option<Payment>,
    /// The refund a refund call makes.
    pub refund: Option<Refund>,
}

/// Starts paying a pending order through a provider: records the call, which the
/// [`crate::PaymentProcessor`] then makes. The provider is named, not checked: the
/// processor knows the providers, the engine only keeps the record.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StartCharge {
    /// The order.
    pub order_id: String,
    /// The provider's name.
    pub provider: String,
    /// The payment method (`test_card`).
    pub method: String,
    /// The provider's card token. Something shaped like a card number is refused.
    pub token: String,
    /// Makes a retry return the same call.
    pub idempotency: Option<IdempotencyKey>,
}

/// Refunds part or all of what an order paid through a provider captured, through that
/// provider: records the refund call, which the [`crate::PaymentProcessor`] then makes.
/// The amount is held (not refundable again) from now on; the refund is made when the
/// provider answers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StartRefund {
    /// The order.
    pub order_id: String,
    /// How much, in the order's currency; `None` refunds everything not yet refunded.
    pub amount: Option<MoneyInput>,
    /// Why (up to 500 characters, may be empty).
    pub reason: String,
}

/// Records a provider's answer to a call: from the processor, or from a provider's
/// (verified) callback. Recording the status a call already has, with the same
/// reference, changes nothing, so a callback delivered twice is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvanceCall {
    /// The call.
    pub call_id: String,
    /// Its new status.
    pub status: CallStatus,
    /// The provider's reference; must match the one the call has, once it has one.
    pub reference: String,
    /// The card brand (with an authorization; the call keeps the first it was given).
    pub card_brand: String,
    /// The provider's message (with a decline or a void).
    pub message: String,
}

/// Whether `token` looks like a card number (12 to 19 digits, spaces and dashes
/// aside): those are refused, never stored.
fn looks_like_card_number(token: &str) -> bool {
    let digits = token.bytes().filter(u8::is_ascii_digit).count();
    token.bytes().all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
        && (12..=19).contains(&digits)
}

/// A call by its id text.
pub(crate) fn call_named(state: &State, id: &str) -> Result<Arc<PaymentCall>> {
    PaymentCallId::parse(id)
        .and_then(|id| state.payment_call(&id))
        .ok_or_else(|| not_found(EntityKind::PaymentCall, id))
}

impl Request for StartCharge {
    type Output = Arc<PaymentCall>;
    type Outcome = PaymentCallId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<PaymentCallId>> {
        let c = self;
        let print = || idempotency::fingerprint(&(&c.order_id, &c.provider, &c.method, &c.token));
        let tag = match idempotency::check(state, c.idempotency.as_ref(), print, ctx)? {
            Replay::Recorded(IdempotentOutcome::Call(id)) if state.payment_call(&id).is_some() => {
                return Decision::nothing(id);
            }
            Replay::Recorded(_) => return Err(EngineError::IdempotencyKeyReused),
            Replay::New(tag) => Some(tag),
            Replay::Unkeyed => None,
        };
        let mut checks = Checks::default();
        checks.text("provider", &c.provider, 1, PROVIDER_TEXT_MAX, false);
        checks.text("method", &c.method, 1, PROVIDER_TEXT_MAX, false);
        checks.text("token", &c.token, 1, PROVIDER_TEXT_MAX, false);
        if looks_like_card_number(&c.token) {
            checks.fail("token", "card numbers are never accepted: send the provider's token");
        }
        done(checks)?;
        let order = super::payable_order(state, &c.order_id, ctx)?;
        let charges =
            state.payment_calls(&order.id).iter().filter(|c| c.kind == CallKind::Charge).count();
        if charges >= PAYMENT_CALLS_PER_ORDER_MAX {
            return Err(EngineError::InvalidState(format!(
                "an order takes at most {PAYMENT_CALLS_PER_ORDER_MAX} payment attempts"
            )));
        }
        if state.payments.open.len() >= OPEN_CALLS_MAX {
            return Err(EngineError::Overloaded);
        }
        let call = PaymentCall {
            id: PaymentCallId::from_random(ctx.ids.random_u128()),
            order_id: order.id,
            kind: CallKind::Charge,
            provider: c.provider.clone(),
            method: c.method.clone(),
            token: c.token.clone(),
            amount: order.total,
            status: CallStatus::Pending,
            reference: String::new(),
            card_brand: String::new(),
            message: String::new(),
            authorized_at: None,
            payment_id: None,
            charge_reference: String::new(),
            reason: String::new(),
            refund_id: None,
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        let id = call.id;
        Decision::one(id, PaymentEvent::CallStarted { call: Box::new(call), idempotency: tag })
    }

    fn reply(state: &State, id: PaymentCallId) -> Arc<PaymentCall> {
        state.payment_call(&id).expect(APPLIED)
    }
}

/// The refund call of `amount` for `order`, paid through `charge`.
pub(crate) fn refund_call(
    order: &Order,
    charge: &PaymentCall,
    amount: Money,
    reason: String,
    ctx: &mut Ctx<'_>,
) -> PaymentCall {
    PaymentCall {
        id: PaymentCallId::from_random(ctx.ids.random_u128()),
        order_id: order.id,
        kind: CallKind::Refund,
        provider: charge.provider.clone(),
        method: charge.method.clone(),
        token: String::new(),
        amount,
        status: CallStatus::Pending,
        reference: String::new(),
        card_brand: charge.card_brand.clone(),
        message: String::new(),
        authorized_at: None,
        payment_id: None,
        charge_reference: charge.reference.clone(),
        reason,
        refund_id: Some(RefundId::from_random(ctx.ids.random_u128())),
        created_at: ctx.now,
        updated_at: ctx.now,
    }
}

impl Request for StartRefund {
    type Output = Arc<PaymentCall>;
    type Outcome = PaymentCallId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<PaymentCallId>> {
        let c = self;
        let (order, amount) =
            super::checked_refund(state, &c.order_id, c.amount.as_ref(), &c.reason)?;
        let Some(charge) = state.captured_charge(&order.id) else {
            return Err(EngineError::InvalidState(
                "the order was paid through the built-in test provider: refund it with RefundPayment"
                    .into(),
            ));
        };
        if state.payments.open.len() >= OPEN_CALLS_MAX {
            return Err(EngineError::Overloaded);
        }
        let call = refund_call(&order, &charge, amount, c.reason.clone(), ctx);
        let id = call.id;
        Decision::one(id, PaymentEvent::CallStarted { call: Box::new(call), idempotency: None })
    }

    fn reply(state: &State, id: PaymentCallId) -> Arc<PaymentCall> {
        state.payment_call(&id).expect(APPLIED)
    }
}

impl Request for AdvanceCall {
    type Output = Arc<PaymentCall>;
    type Outcome = PaymentCallId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<PaymentCallId>> {
        let c = self;
        let mut checks = Checks::default();
        checks.text("reference", &c.reference, 0, PROVIDER_TEXT_MAX, false);
        checks.text("card_brand", &c.card_brand, 0, PROVIDER_TEXT_MAX, false);
        checks.text("message", &c.message, 0, PROVIDER_MESSAGE_MAX, true);
        done(checks)?;
        let call = call_named(state, &c.call_id)?;
        if !call.reference.is_empty() && !c.reference.is_empty() && c.reference != call.reference {
            return Err(EngineError::field(
                "reference",
                format!("the call's provider reference is {}", call.reference),
            ));
        }
        let passed = c.status == CallStatus::Authorized && call.authorized_at.is_some();
        if call.status == c.status || passed {
            // A repeated answer (a callback delivered twice, or after the capture that
            // followed it): nothing new.
            return Decision::nothing(call.id);
        }
        if !call.status.can_become(call.kind, c.status) {
            return Err(EngineError::InvalidState(format!(
                "a {} {} call cannot become {}",
                call.status.as_str(),
                call.kind.as_str(),
                c.status.as_str()
            )));
        }
        let reference = if call.reference.is_empty() { &c.reference } else { &call.reference };
        let needs_reference = matches!(
            c.status,
            CallStatus::Authorized | CallStatus::Captured | CallStatus::Refunded
        );
        if reference.is_empty() && needs_reference {
            return Err(EngineError::field("reference", "the provider's answer has a reference"));
        }
        let payment = if c.status == CallStatus::Captured {
            let order = state.order(&call.order_id).expect("a call's order exists");
            if order.status != OrderStatus::PendingPayment {
                // An open charge holds its order pending; this is a broken invariant.
                return Err(invalid_transition(&order, "capture a payment of"));
            }
            Some(Payment {
                id: PaymentId::from_random(ctx.ids.random_u128()),
                method: call.method.clone(),
                card_brand: call.card_brand.clone(),
                amount: call.amount,
                created_at: ctx.now,
            })
        } else {
            None
        };
        let refund = (c.status == CallStatus::Refunded).then(|| Refund {
            id: call.refund_id.expect("a refund call has its refund's id"),
            order_id: call.order_id,
            number: state.refunds(&call.order_id).len() as u32 + 1,
            amount: call.amount,
            reason: call.reason.clone(),
            provider_reference: reference.clone(),
            created_at: ctx.now,
        });
        let step = CallStep {
            call_id: call.id,
            order_id: call.order_id,
            status: c.status,
            reference: reference.clone(),
            card_brand: c.card_brand.clone(),
            message: c.message.clone(),
            payment,
            refund,
        };
        Decision::one(call.id, PaymentEvent::CallAdvanced(Box::new(step)))
    }

    fn reply(state: &State, id: PaymentCallId) -> Arc<PaymentCall> {
        state.payment_call(&id).expect(APPLIED)
    }
}

/// Applies a started call: recorded, open, and its key's record.
pub(crate) fn started(
    state: &State,
    call: &PaymentCall,
    idempotency: Option<&IdempotencyTag>,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) {
    if let Some(tag) = idempotency {
        idempotency::record(state, tag, IdempotentOutcome::Call(call.id), at, rows);
    }
    put_call(state, call.clone(), rows);
}

/// Applies a provider's answer; a capture pays the order.
pub(crate) fn advanced(state: &State, step: &CallStep, at: TimestampMs, rows: &mut Vec<Row>) {
    let mut call = (*state.payment_call(&step.call_id).expect("decide checked the call")).clone();
    call.status = step.status;
    call.reference.clone_from(&step.reference);
    if call.card_brand.is_empty() {
        call.card_brand.clone_from(&step.card_brand);
    }
    if !step.message.is_empty() {
        call.message.clone_from(&step.message);
    }
    if step.status == CallStatus::Authorized {
        call.authorized_at = Some(at);
    }
    if let Some(payment) = &step.payment {
        let mut payment = payment.clone();
        if payment.card_brand.is_empty() {
            payment.card_brand.clone_from(&call.card_brand);
        }
        call.payment_id = Some(payment.id);
        super::capture(state, &call.order_id, payment, at, rows);
    }
    if let Some(refund) = &step.refund {
        super::refunded(state, refund.clone(), at, rows);
    }
    call.updated_at = at;
    put_call(state, call, rows);
}

/// Publishes a call and keeps the indexes over it (each order's calls, the open ones).
fn put_call(state: &State, call: PaymentCall, rows: &mut Vec<Row>) {
    let call = Arc::new(call);
    index_call(state, &call);
    rows.push(Row::put(call));
}

pub(crate) fn index_call(state: &State, call: &Arc<PaymentCall>) {
    let tables = &state.payments;
    let known = tables.calls.contains_key(&call.id);
    tables.calls.insert(call.id, call.clone());
    if !known {
        let mut list =
            tables.calls_by_order.get(&call.order_id).map_or_else(Vec::new, |l| (*l).clone());
        list.push(call.id);
        // Oldest first, whatever order the rows are loaded in.
        list.sort_by_key(|id| tables.calls.get(id).map(|c| (c.created_at, c.id)));
        tables.calls_by_order.insert(call.order_id, Arc::new(list));
    }
    if call.status.is_open() {
        tables.open.insert(call.id, call.order_id);
        if call.kind == CallKind::Charge {
            tables.open_by_order.insert(call.order_id, call.id);
        }
    } else {
        tables.open.remove(&call.id);
        if tables.open_by_order.get(&call.order_id) == Some(call.id) {
            tables.open_by_order.remove(&call.order_id);
        }
    }
}

/// Pair assertion for payment calls, at open: every call's order exists, an open
/// charge's order is pending and has no other open charge, a captured charge's payment
/// is in its order.
pub(crate) fn check_calls(state: &State) -> Result<()> {
    let broken = |why: String| Err(EngineError::IncompatibleData(why));
    let mut open_charges = std::collections::HashSet::new();
    for (id, call) in state.payments.calls.entries() {
        let Some(order) = state.order(&call.order_id) else {
            return broken(format!(
                "payment call {id} names order {} which does not exist",
                call.order_id
            ));
        };
        if call.kind == CallKind::Charge && call.status.is_open() {
            if order.status != OrderStatus::PendingPayment {
                return broken(format!(
                    "payment call {id} is open but its order {} is {}",
                    order.id,
                    order.status.as_str()
                ));
            }
            if !open_charges.insert(order.id) {
                return broken(format!("order {} has two open charges", order.id));
            }
        }
        if call.status == CallStatus::Captured
            && !call.payment_id.is_some_and(|p| order.payments.iter().any(|x| x.id == p))
        {
            return broken(format!(
                "payment call {id} is captured but its payment is not in its order"
            ));
        }
    }
    Ok(())
}

/// The payment calls' reads.
impl State {
    /// A payment call by id.
    pub fn payment_call(&self, id: &PaymentCallId) -> Option<Arc<PaymentCall>> {
        self.payments.calls.get(id)
    }

    /// An order's payment calls, oldest first.
    pub fn payment_calls(&self, order_id: &OrderId) -> Vec<Arc<PaymentCall>> {
        let ids = self.payments.calls_by_order.get(order_id).unwrap_or_default();
        ids.iter().filter_map(|id| self.payment_call(id)).collect()
    }

    /// Every open payment call (the provider's answer is still to come), oldest first.
    pub fn open_payment_calls(&self) -> Vec<Arc<PaymentCall>> {
        let mut calls: Vec<_> = self
            .payments
            .open
            .entries()
            .into_iter()
            .filter_map(|(id, _)| self.payment_call(&id))
            .filter(|c| c.status.is_open())
            .collect();
        calls.sort_by_key(|c| (c.created_at, c.id));
        calls
    }

    /// The charge that paid the order through a provider, if one did.
    pub fn captured_charge(&self, order_id: &OrderId) -> Option<Arc<PaymentCall>> {
        self.payment_calls(order_id)
            .into_iter()
            .find(|c| c.kind == CallKind::Charge && c.status == CallStatus::Captured)
    }

    /// The refunds of the order being made by a provider now, summed (minor units).
    pub fn refunds_in_progress(&self, order_id: &OrderId) -> i64 {
        self.payment_calls(order_id)
            .iter()
            .filter(|c| c.kind == CallKind::Refund && c.status.is_open())
            .map(|c| c.amount.amount())
            .sum()
    }

    /// How many payment calls are open.
    pub fn open_payment_call_count(&self) -> usize {
        self.payments.open.len()
    }

    /// The order's open charge, if one is in progress.
    pub fn open_charge(&self, order_id: &OrderId) -> Option<Arc<PaymentCall>> {
        self.payments.open_by_order.get(order_id).and_then(|id| self.payment_call(&id))
    }
}
