//! Payments: capturing an order's payment and refunding it, through the built-in test
//! provider. A capture pays the order and ships its reserved units out of inventory; a
//! refund gives money back (never units: a return restocks them) and moves the order to
//! `partially_refunded` or `refunded`.
//!
//! The ledger of an order is its captures (kept in the order) and its refunds (a table
//! of their own): immutable entries, from which the order's captured, refunded and
//! balance amounts are sums. [`State::reconcile`] checks every order's status and total
//! against them.

mod commands;
mod model;

use std::collections::BTreeMap;
use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::domains::State;
use crate::idempotency::{self, IdempotencyTag, IdempotentOutcome};
use crate::kernel::table::{check_v1, decode_row, persist, Domain, IdIndex, Row, Table};
use crate::orders::{self, Order, OrderStatus};
use crate::types::*;

const REFUNDS: &str = "refunds";

persist!(Refund, REFUNDS, |r| r.id.text().as_str().as_bytes().to_vec());

/// The refunds, by order (a payment is part of its order).
#[derive(Debug, Default)]
pub(crate) struct Tables {
    /// Each order's refunds, oldest first.
    refunds: IdIndex<OrderId, Arc<Vec<Refund>>>,
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "payments",
    tables: &[Table {
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
    }],
    counters: |_| vec![],
    timers: None,
    verify: None,
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
        PaymentEvent::Refunded { refund } => {
            let mut order =
                (*state.order(&refund.order_id).expect("decide checked the order")).clone();
            let refund = (**refund).clone();
            // The status is about to stop saying the order shipped: an order fulfilled
            // before fulfilments were recorded gets its record now.
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
    }
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

/// The order after `payment` is captured: paid, the payment listed.
pub(crate) fn mark_paid(order: &mut Order, payment: Payment, at: TimestampMs) {
    order.status = OrderStatus::Paid;
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

    /// An order's ledger: its captures and refunds in the order they happened, and
    /// their sums.
    pub fn ledger(&self, order: &Order) -> Ledger {
        let currency = order.currency();
        let refunds = self.refunds(&order.id);
        let mut entries: Vec<LedgerEntry> = order
            .payments
            .iter()
            .map(|p| LedgerEntry {
                id: p.id.to_string(),
                kind: LedgerKind::Capture,
                amount: p.amount,
                provider_reference: p.id.to_string(),
                reason: String::new(),
                created_at: p.created_at,
            })
            .chain(refunds.iter().map(|r| LedgerEntry {
                id: r.id.to_string(),
                kind: LedgerKind::Refund,
                amount: r.amount,
                provider_reference: r.provider_reference.clone(),
                reason: r.reason.clone(),
                created_at: r.created_at,
            }))
            .collect();
        // Stable: a capture comes before a refund of the same millisecond.
        entries.sort_by_key(|e| e.created_at);
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
        (ledger, problems)
    }

    /// Checks every order against its ledger: an unpaid order has no entries, a paid
    /// one captured exactly its total, refunds never exceed what was captured and agree
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
        for (id, order) in self.orders.orders.entries() {
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
        }
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
