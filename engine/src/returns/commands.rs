//! The returns' commands: request (the customer), approve or reject, receive (staff).

use std::sync::Arc;

use super::{Return, ReturnDecision, ReturnEvent, ReturnLine, ReturnReceipt, ReturnStatus};
use crate::domains::{Event, State};
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{done, not_found, Ctx, Decision, Request, APPLIED};
use crate::orders::{invalid_transition, order_named, Order};
use crate::payments::{check_refund_count, new_refund, refund_call, PaymentEvent};
use crate::types::*;
use crate::validate::Checks;

/// Returns per order, at most (requested, approved, rejected or received).
pub const RETURNS_PER_ORDER_MAX: usize = 20;
/// The longest reason or note, in characters.
pub const RETURN_TEXT_MAX: usize = 500;

/// A customer asks to send back units of a fulfilled order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestReturn {
    /// The order.
    pub order_id: String,
    /// `(sku, units)` per line, each SKU a line of the order, at most once.
    pub lines: Vec<(String, i64)>,
    /// Why (1–500 characters).
    pub reason: String,
}

/// Staff approve a requested return, or reject a requested or approved one (an
/// approved return whose units never came, or that cannot be received, is rejected to
/// free its units).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DecideReturn {
    /// The return.
    pub return_id: String,
    /// Approve, or reject.
    pub approve: bool,
    /// A note; required to reject (the reason given to the customer).
    pub note: String,
}

/// Staff receive an approved return's units: each line is restocked unless listed in
/// `not_restocked` (damaged goods), and what the units are worth is refunded (never
/// more than is left to refund), all in one log entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReceiveReturn {
    /// The return.
    pub return_id: String,
    /// SKUs of the return not to put back in stock.
    pub not_restocked: Vec<String>,
}

/// What a return command gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnOutcome {
    /// The return.
    pub r#return: Arc<Return>,
    /// The order after it.
    pub order: Arc<Order>,
}

fn outcome(state: &State, id: ReturnId) -> ReturnOutcome {
    let r = state.order_return(&id).expect(APPLIED);
    let order = state.order(&r.order_id).expect(APPLIED);
    ReturnOutcome { r#return: r, order }
}

fn return_named(state: &State, id: &str) -> Result<Arc<Return>> {
    ReturnId::parse(id)
        .and_then(|id| state.order_return(&id))
        .ok_or_else(|| not_found(EntityKind::Return, id))
}

fn wrong_state(r: &Return, action: &str) -> EngineError {
    EngineError::InvalidState(format!("cannot {action} a return that is {}", r.status.as_str()))
}

/// What `units` more of `order`'s line `i` are worth, when the order's other returns
/// (rejected ones aside) hold `before` units of it, valued `claimed`: the pro rata share
/// of what the line was paid (its total after its discount, with its tax), rounded
/// down, less what is already claimed;
/// the last units take exactly what is left. So a line's returns add up to exactly
/// what it cost, whatever was rejected in between.
fn paid_for(
    state: &State,
    order: &Order,
    i: usize,
    (before, claimed): (u32, i64),
    units: u32,
) -> i64 {
    let line = &order.lines[i];
    let off = state.order_discount(&order.id).and_then(|d| d.line_discounts.get(i).copied());
    let tax = state.order_charges(&order.id).and_then(|c| c.line_taxes.get(i).copied());
    let paid = line.line_total.amount() - off.unwrap_or(0) + tax.unwrap_or(0);
    if before + units >= line.quantity {
        return (paid - claimed).max(0);
    }
    let share = (i128::from(paid) * i128::from(before + units) / i128::from(line.quantity)) as i64;
    (share - claimed).max(0)
}

/// Units of `sku` the order's other returns (not rejected ones) hold, and what they are
/// valued.
fn units_returned(state: &State, order: &Order, sku: &Sku) -> (u32, i64) {
    state
        .returns_of_order(&order.id)
        .iter()
        .filter(|r| r.status != ReturnStatus::Rejected)
        .flat_map(|r| r.lines.iter().filter(|l| &l.sku == sku))
        .fold((0, 0), |(units, value), l| (units + l.quantity, value + l.amount))
}

impl Request for RequestReturn {
    type Output = ReturnOutcome;
    type Outcome = ReturnId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<ReturnId>> {
        let c = self;
        let mut checks = Checks::default();
        checks.text("reason", &c.reason, 1, RETURN_TEXT_MAX, true);
        let order = order_named(state, &c.order_id)?;
        if c.lines.is_empty() {
            checks.fail("items", "must list at least one line");
        }
        let mut lines: Vec<ReturnLine> = Vec::with_capacity(c.lines.len());
        for (n, (sku, units)) in c.lines.iter().enumerate() {
            let at = format!("items[{n}]");
            let Some(i) = order.lines.iter().position(|l| l.sku.as_str() == sku) else {
                checks.fail(format!("{at}.sku"), "is not a line of the order");
                continue;
            };
            let sku = &order.lines[i].sku;
            if lines.iter().any(|l| &l.sku == sku) {
                checks.fail(format!("{at}.sku"), "is listed twice");
                continue;
            }
            let before = units_returned(state, &order, sku);
            let left = order.lines[i].quantity - before.0.min(order.lines[i].quantity);
            if *units < 1 || *units > i64::from(left) {
                checks.fail(
                    format!("{at}.quantity"),
                    format!("must be between 1 and {left}, the units not returned yet"),
                );
                continue;
            }
            let units = *units as u32;
            let amount = paid_for(state, &order, i, before, units);
            lines.push(ReturnLine { sku: sku.clone(), quantity: units, amount, restocked: false });
        }
        done(checks)?;
        let Some(fulfilled_at) = state.fulfilled_at(&order) else {
            return Err(invalid_transition(&order, "return"));
        };
        if !order.status.was_paid() {
            return Err(invalid_transition(&order, "return"));
        }
        if ctx.now > fulfilled_at.saturating_add(ctx.limits.return_window_ms) {
            return Err(EngineError::InvalidState(format!(
                "the return window of {} days after fulfilment has passed",
                ctx.limits.return_window_ms / 86_400_000
            )));
        }
        if state.returns_of_order(&order.id).len() >= RETURNS_PER_ORDER_MAX {
            return Err(EngineError::InvalidState(format!(
                "an order takes at most {RETURNS_PER_ORDER_MAX} returns"
            )));
        }
        let id = loop {
            let id = ReturnId::from_random(ctx.ids.random_u128());
            if state.order_return(&id).is_none() {
                break id;
            }
        };
        let new = Return {
            id,
            seq: state.returns.return_seq.next(),
            order_id: order.id,
            lines,
            reason: c.reason.clone(),
            status: ReturnStatus::Requested,
            note: String::new(),
            refund_id: None,
            created_at: ctx.now,
            updated_at: ctx.now,
            version: 1,
        };
        Decision::one(id, ReturnEvent::Requested(Box::new(new)))
    }

    fn reply(state: &State, id: ReturnId) -> ReturnOutcome {
        outcome(state, id)
    }
}

impl Request for DecideReturn {
    type Output = ReturnOutcome;
    type Outcome = ReturnId;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<ReturnId>> {
        let c = self;
        let r = return_named(state, &c.return_id)?;
        let mut checks = Checks::default();
        let min = if c.approve { 0 } else { 1 };
        checks.text("note", &c.note, min, RETURN_TEXT_MAX, true);
        done(checks)?;
        let open = if c.approve {
            r.status == ReturnStatus::Requested
        } else {
            matches!(r.status, ReturnStatus::Requested | ReturnStatus::Approved)
        };
        if !open {
            return Err(wrong_state(&r, if c.approve { "approve" } else { "reject" }));
        }
        let decision =
            ReturnDecision { return_id: r.id, approved: c.approve, note: c.note.clone() };
        Decision::one(r.id, ReturnEvent::Decided(Box::new(decision)))
    }

    fn reply(state: &State, id: ReturnId) -> ReturnOutcome {
        outcome(state, id)
    }
}

impl Request for ReceiveReturn {
    type Output = ReturnOutcome;
    type Outcome = ReturnId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<ReturnId>> {
        let c = self;
        let r = return_named(state, &c.return_id)?;
        let mut checks = Checks::default();
        for (i, sku) in c.not_restocked.iter().enumerate() {
            if !r.lines.iter().any(|l| l.sku.as_str() == sku) {
                checks.fail(format!("not_restocked[{i}]"), "is not a line of the return");
            }
        }
        done(checks)?;
        if r.status != ReturnStatus::Approved {
            return Err(wrong_state(&r, "receive"));
        }
        let order = state.order(&r.order_id).expect("a return's order exists");
        let mut restocked = Vec::with_capacity(r.lines.len());
        for line in &r.lines {
            // A SKU no product sells any more has no stock row to go back to.
            let restock = !c.not_restocked.iter().any(|s| s == line.sku.as_str())
                && state.stock(&line.sku).is_some();
            if restock {
                let on_hand = state.stock(&line.sku).map_or(0, |s| s.on_hand);
                if i64::from(on_hand) + i64::from(line.quantity) > crate::ON_HAND_MAX {
                    return Err(EngineError::Conflict(format!(
                        "restocking {} would put more than {} units on hand",
                        line.sku,
                        crate::ON_HAND_MAX
                    )));
                }
            }
            if restock {
                restocked.push(line.sku.clone());
            }
        }
        // Never more than is left to refund; nothing when nothing is. An order paid
        // through a provider is refunded through it: a refund call, whose refund (of the
        // id chosen now) is made when the provider answers.
        let refundable = state.refundable(&order);
        let amount = r.amount().min(refundable.amount());
        let mut events: Vec<Event> = Vec::with_capacity(2);
        let refund: Option<(RefundId, Event)> = if amount > 0 {
            check_refund_count(state, &order)?;
            let amount = Money::new(amount, order.currency()).expect("at most the balance");
            let reason = format!("return {}", r.id);
            Some(match state.captured_charge(&order.id) {
                Some(charge) => {
                    let call = refund_call(&order, &charge, amount, reason, ctx);
                    let id = call.refund_id.expect("a refund call has its refund's id");
                    (
                        id,
                        PaymentEvent::CallStarted { call: Box::new(call), idempotency: None }
                            .into(),
                    )
                }
                None => {
                    let refund = new_refund(state, &order, amount, reason, ctx);
                    (refund.id, PaymentEvent::Refunded { refund: Box::new(refund) }.into())
                }
            })
        } else {
            None
        };
        let refund_id = refund.as_ref().map(|(id, _)| *id);
        let receipt = ReturnReceipt { return_id: r.id, order_id: r.order_id, restocked, refund_id };
        events.push(ReturnEvent::Received(Box::new(receipt)).into());
        events.extend(refund.map(|(_, event)| event));
        Decision::many(r.id, events)
    }

    fn reply(state: &State, id: ReturnId) -> ReturnOutcome {
        outcome(state, id)
    }
}
