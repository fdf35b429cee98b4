//! Payments: capturing an order's payment and refunding it, through the built-in test
//! provider. A capture pays the order and ships its reserved units out of inventory; a
//! refund gives money back (never units: a return restocks them) and moves the order to
//! `partially_refunded` or `refunded`.
//!
//! The ledger of an order is its captures (kept in the order) and its refunds (a table
//! of their own): immutable entries, from which the order's captured, refunded and
//! balance amounts are sums. [`State::reconcile`] checks every order's status and total
//! against them.

mod calls;
mod commands;
mod model;
mod processor;
mod provider;

use std::collections::BTreeMap;
use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

pub use calls::*;
pub use commands::*;
pub use model::*;
pub use processor::*;
pub use provider::*;

use crate::domains::State;
use crate::idempotency::{self, IdempotencyTag, IdempotentOutcome, PaidRef};
use crate::kernel::table::{check_v1, decode_row, persist, Domain, IdIndex, Row, Table};
use crate::orders::{self, Order, OrderStatus};
use crate::types::*;

const REFUNDS: &str = "refunds";
const PAYMENT_CALLS: &str = "payment_calls";

persist!(Refund, REFUNDS, |r| r.id.text().as_str().as_bytes().to_vec());
persist!(PaymentCall, PAYMENT_CALLS, |c| c.id.text().as_str().as_bytes().to_vec());

/// The refunds and provider calls, by order (a payment is part of its order).
#[derive(Debug, Default)]
pub(crate) struct Tables {
    /// Each order's refunds, oldest first.
    refunds: IdIndex<OrderId, Arc<Vec<Refund>>>,
    /// Every provider call.
    calls: IdIndex<PaymentCallId, Arc<PaymentCall>>,
    /// Each order's calls, oldest first.
    calls_by_order: IdIndex<OrderId, Arc<Vec<PaymentCallId>>>,
    /// The open calls, and their orders.
    open: IdIndex<PaymentCallId, OrderId>,
    /// Each order's open charge (at most one).
    open_by_order: IdIndex<OrderId, PaymentCallId>,
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "payments",
    tables: &[
        Table {
            name: REFUNDS,
            rows: |s, f| {
                s.payments.refunds.entries().iter().flat_map(|(_, r)| r.iter()).for_each(|r| f(r))
            },
            load: |state, bytes| {
                let refund: Refund = decode_row(bytes, "refund")?;
                add_refund(state, refund);
                Ok(())
            },
            check_v1: check_v1::<Refund>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: PAYMENT_CALLS,
            rows: |s, f| s.payments.calls.entries().iter().for_each(|(_, c)| f(&**c)),
            load: |state, bytes| {
                let call: PaymentCall = decode_row(bytes, "payment call")?;
                calls::index_call(state, &Arc::new(call));
                Ok(())
            },
            check_v1: check_v1::<PaymentCall>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |_, _| {},
    timers: None,
    verify: Some(calls::check_calls),
    written: None,
};

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
        /// Part or all of what was captured was refunded.
        Refunded { refund: Box<Refund> },
        /// A payment through a provider was recorded, before the provider is asked.
        CallStarted { call: Box<PaymentCall>, idempotency: Option<Box<IdempotencyTag>> },
        /// A provider answered a call (a capture pays the order).
        CallAdvanced(Box<CallStep>),
    }
}
pub use event::PaymentEvent;

pub(crate) fn apply(state: &State, event: &PaymentEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        PaymentEvent::PaymentCaptured { order_id, payment, idempotency } => {
            capture(state, order_id, (**payment).clone(), at, rows);
            if let Some(tag) = idempotency {
                let version = state.order(order_id).expect("just paid").version;
                let paid = PaidRef { order_id: *order_id, payment_id: payment.id, at, version };
                let outcome = IdempotentOutcome::Paid(Box::new(paid));
                idempotency::record(state, tag, outcome, at, rows);
            }
        }
        PaymentEvent::CallStarted { call, idempotency } => {
            calls::started(state, call, idempotency.as_deref(), at, rows);
        }
        PaymentEvent::CallAdvanced(step) => calls::advanced(state, step, at, rows),
        PaymentEvent::Refunded { refund } => refunded(state, (**refund).clone(), at, rows),
    }
}

/// Records a refund made: the order becomes `partially_refunded` or `refunded`.
fn refunded(state: &State, refund: Refund, at: TimestampMs, rows: &mut Vec<Row>) {
    let mut order = (*state.order(&refund.order_id).expect("decide checked the order")).clone();
    // The status is about to stop saying the order shipped: an order fulfilled before
    // fulfilments were recorded gets its record now.
    orders::keep_fulfillment(state, &order, rows);
    rows.push(Row::put(Arc::new(refund.clone())));
    add_refund(state, refund);
    let ledger = state.ledger(&order);
    order.status = if ledger.refunded == ledger.captured {
        OrderStatus::Refunded
    } else {
        OrderStatus::PartiallyRefunded
    };
    orders::touch(&mut order, at);
    orders::put_order(state, order, rows);
}

/// Adds a refund to its order's list, which stays in the refunds' order.
fn add_refund(state: &State, refund: Refund) {
    let tables = &state.payments;
    let mut list = tables.refunds.get(&refund.order_id).map_or_else(Vec::new, |r| (*r).clone());
    let order_id = refund.order_id;
    list.push(refund);
    list.sort_by_key(|r| r.number);
    tables.refunds.insert(order_id, Arc::new(list));
}

/// Captures `payment` for a pending order: its reserved units leave `on_hand`, and it
/// is paid.
fn capture(
    state: &State,
    order_id: &OrderId,
    payment: Payment,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) {
    let mut order = orders::take_pending(state, order_id);
    let holder = crate::flash_sales::stock_holder(state, &order);
    let lines = order.lines.iter().map(|l| (&l.sku, l.quantity));
    crate::inventory::ship(state, holder, *order_id, lines, rows);
    crate::flash_sales::order_paid(state, &order, at, rows);
    mark_paid(&mut order, payment, at);
    orders::put_order(state, order, rows);
}

/// The order after `payment` is captured: paid, the payment listed.
pub(crate) fn mark_paid(order: &mut Order, payment: Payment, at: TimestampMs) {
    order.status = OrderStatus::Paid;
    // Most orders are paid once: room for exactly this payment, not the four a first
    // push would make.
    order.payments.reserve_exact(1);
    order.payments.push(payment);
    orders::touch(order, at);
}

/// How many mismatches a reconciliation lists (it counts them all).
pub const RECONCILIATION_MISMATCHES_MAX: usize = 100;

/// The payments' reads.
impl State {
    /// An order's refunds, oldest first.
    pub fn refunds(&self, order_id: &OrderId) -> Arc<Vec<Refund>> {
        self.payments.refunds.get(order_id).unwrap_or_default()
    }

    /// What can still be refunded of `order`: its ledger's balance less the refunds a
    /// provider is making now.
    pub fn refundable(&self, order: &Order) -> Money {
        let balance = self.ledger(order).balance();
        let left = balance.amount() - self.refunds_in_progress(&order.id);
        Money::new(left.max(0), balance.currency()).unwrap_or(balance)
    }

    /// An order's ledger: its captures and refunds in the order they happened, and
    /// their sums.
    pub fn ledger(&self, order: &Order) -> Ledger {
        let currency = order.currency();
        let refunds = self.refunds(&order.id);
        let calls = self.payment_calls(&order.id);
        let call_entry = |call: &PaymentCall, kind: LedgerKind, at: TimestampMs| LedgerEntry {
            id: call.id.to_string(),
            kind,
            amount: call.amount,
            provider_reference: call.reference.clone(),
            reason: call.message.clone(),
            created_at: at,
        };
        let mut entries: Vec<LedgerEntry> = calls
            .iter()
            .filter_map(|c| Some(call_entry(c, LedgerKind::Authorization, c.authorized_at?)))
            .chain(
                calls
                    .iter()
                    .filter(|c| c.status == CallStatus::Voided && c.authorized_at.is_some())
                    .map(|c| call_entry(c, LedgerKind::Void, c.updated_at)),
            )
            .chain(order.payments.iter().map(|p| {
                LedgerEntry {
                    id: p.id.to_string(),
                    kind: LedgerKind::Capture,
                    amount: p.amount,
                    // A capture through a provider has the provider's reference; the
                    // built-in test provider's is the payment's id.
                    provider_reference: calls
                        .iter()
                        .find(|c| c.payment_id == Some(p.id))
                        .map_or_else(|| p.id.to_string(), |c| c.reference.clone()),
                    reason: String::new(),
                    created_at: p.created_at,
                }
            }))
            .chain(refunds.iter().map(|r| LedgerEntry {
                id: r.id.to_string(),
                kind: LedgerKind::Refund,
                amount: r.amount,
                provider_reference: r.provider_reference.clone(),
                reason: r.reason.clone(),
                created_at: r.created_at,
            }))
            .collect();
        // Stable, and by kind within a millisecond: an authorization comes before its
        // capture or void, a capture before a refund.
        entries.sort_by_key(|e| (e.created_at, e.kind.rank()));
        let sum = |kind: LedgerKind| {
            let amount = entries
                .iter()
                .filter(|e| e.kind == kind && e.amount.currency() == currency)
                .map(|e| e.amount.amount())
                .sum::<i64>();
            Money::new(amount, currency).unwrap_or(Money::zero(currency))
        };
        let (captured, refunded) = (sum(LedgerKind::Capture), sum(LedgerKind::Refund));
        Ledger { entries, captured, refunded }
    }

    /// What disagrees between `order` and its ledger (nothing, when they agree).
    fn ledger_problems(&self, order: &Order) -> (Ledger, Vec<String>) {
        let ledger = self.ledger(order);
        let mut problems = Vec::new();
        let currency = order.currency();
        if let Some(entry) = ledger.entries.iter().find(|e| e.amount.currency() != currency) {
            problems.push(format!("{} {} is not in {currency}", entry.kind.as_str(), entry.id));
        }
        let (captured, refunded) = (ledger.captured.amount(), ledger.refunded.amount());
        let status = order.status;
        let expected_capture = if status.was_paid() { order.total.amount() } else { 0 };
        if captured != expected_capture {
            problems.push(format!(
                "a {} order of total {} captured {captured}",
                status.as_str(),
                order.total.amount()
            ));
        }
        let refund_ok = match status {
            OrderStatus::PartiallyRefunded => 0 < refunded && refunded < captured,
            OrderStatus::Refunded => refunded == captured && captured > 0,
            _ => refunded == 0,
        };
        if !refund_ok {
            problems.push(format!(
                "a {} order captured {captured} and refunded {refunded}",
                status.as_str()
            ));
        }
        for call in self.payment_calls(&order.id) {
            if call.kind == CallKind::Charge
                && call.status.is_open()
                && status != OrderStatus::PendingPayment
            {
                problems.push(format!(
                    "payment call {} is {} but the order is {}",
                    call.id,
                    call.status.as_str(),
                    status.as_str()
                ));
            }
            let refunds = self.refunds(&order.id);
            let made = call.refund_id.is_some_and(|id| refunds.iter().any(|r| r.id == id));
            if (call.status == CallStatus::Refunded) != made {
                problems.push(format!(
                    "refund call {} is {} and its refund is {}",
                    call.id,
                    call.status.as_str(),
                    if made { "made" } else { "not made" }
                ));
            }
            let paid = call.payment_id.is_some_and(|id| order.payments.iter().any(|p| p.id == id));
            if (call.status == CallStatus::Captured) != paid {
                problems.push(format!(
                    "payment call {} is {} and its payment is {}",
                    call.id,
                    call.status.as_str(),
                    if paid { "in the order" } else { "not in the order" }
                ));
            }
        }
        (ledger, problems)
    }

    /// Checks every order against its ledger: an unpaid order has no captures, a paid
    /// one captured exactly its total, an open provider call's order is still pending
    /// and a captured call's payment is in its order, refunds never exceed what was captured and agree
    /// with the status, every entry is in the order's currency, and no refund names an
    /// order that does not exist. Reads every order: for staff and tests, not for a hot
    /// path.
    ///
    /// It reads the live state, not a snapshot, and a refund being applied meanwhile
    /// is briefly visible in its refund before its order: an order found wrong is read
    /// again (up to three times, a millisecond apart) and reported only if it stays
    /// wrong. The totals are as first read.
    pub fn reconcile(&self) -> Reconciliation {
        let mut report = Reconciliation::default();
        let mut mismatch = |order_id: OrderId, problem: String| {
            report.mismatch_count += 1;
            if report.mismatches.len() < RECONCILIATION_MISMATCHES_MAX {
                report.mismatches.push(Mismatch { order_id, problem });
            }
        };
        let mut totals: BTreeMap<Currency, (i128, i128)> = BTreeMap::new();
        let mut orders = 0u64;
        self.for_each_order(|order| {
            let id = order.id;
            orders += 1;
            let (ledger, mut problems) = self.ledger_problems(&order);
            let total = totals.entry(order.currency()).or_default();
            total.0 += i128::from(ledger.captured.amount());
            total.1 += i128::from(ledger.refunded.amount());
            for _ in 0..3 {
                if problems.is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
                let Some(again) = self.order(&id) else { break };
                problems = self.ledger_problems(&again).1;
            }
            for problem in problems {
                mismatch(id, problem);
            }
        });
        let mut refunds = 0u64;
        for (order_id, list) in self.payments.refunds.entries() {
            refunds += list.len() as u64;
            if self.order(&order_id).is_none() {
                mismatch(order_id, "refunds of an order that does not exist".into());
            }
            if let Some(r) = list.iter().find(|r| r.order_id != order_id) {
                mismatch(order_id, format!("refund {} is filed under another order", r.id));
            }
        }
        report.orders = orders;
        report.refunds = refunds;
        report.totals = totals
            .into_iter()
            .map(|(currency, (captured, refunded))| CurrencyTotals { currency, captured, refunded })
            .collect();
        report
    }
}

#[cfg(test)]
mod tests;
