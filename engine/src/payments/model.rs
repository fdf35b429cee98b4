//! Payments, refunds and the ledger over them.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// A captured payment.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The id.
    pub id: PaymentId,
    /// The method (`test_card`).
    pub method: String,
    /// The card brand the test token stands for (`visa`), never a card number.
    pub card_brand: String,
    /// The amount captured.
    pub amount: Money,
    /// When it was captured.
    pub created_at: TimestampMs,
}

/// A refund of part or all of what an order's payments captured. Immutable once made.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// The id.
    pub id: RefundId,
    /// The order refunded.
    pub order_id: OrderId,
    /// Its place among the order's refunds, from 1.
    pub number: u32,
    /// The amount given back, in the order's currency.
    pub amount: Money,
    /// Why, as staff gave it (may be empty).
    pub reason: String,
    /// The provider's reference for the refund.
    pub provider_reference: String,
    /// When it was made.
    pub created_at: TimestampMs,
}

/// What a ledger entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LedgerKind {
    /// A provider held the amount on the customer's card (no money moved yet; the
    /// built-in test provider authorizes and captures at once and records only the
    /// capture).
    Authorization,
    /// Money taken from the customer.
    Capture,
    /// An authorization released without capture (no money moved).
    Void,
    /// Money given back.
    Refund,
}

impl LedgerKind {
    /// Its place among entries of the same millisecond.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            LedgerKind::Authorization => 0,
            LedgerKind::Capture => 1,
            LedgerKind::Void => 2,
            LedgerKind::Refund => 3,
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            LedgerKind::Authorization => "authorization",
            LedgerKind::Capture => "capture",
            LedgerKind::Void => "void",
            LedgerKind::Refund => "refund",
        }
    }
}

/// One money movement of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The payment's, refund's or provider call's id.
    pub id: String,
    /// What it was.
    pub kind: LedgerKind,
    /// How much (always positive; the kind gives the direction).
    pub amount: Money,
    /// The provider's reference.
    pub provider_reference: String,
    /// A refund's reason (empty for a capture).
    pub reason: String,
    /// When.
    pub created_at: TimestampMs,
}

/// An order's money movements and their sums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ledger {
    /// Every entry, oldest first.
    pub entries: Vec<LedgerEntry>,
    /// The sum of the captures (authorizations and voids move no money and are not
    /// summed).
    pub captured: Money,
    /// The sum of the refunds.
    pub refunded: Money,
}

impl Ledger {
    /// What the shop still holds of the order's money: captured less refunded.
    pub fn balance(&self) -> Money {
        let amount = self.captured.amount().saturating_sub(self.refunded.amount()).max(0);
        Money::new(amount, self.captured.currency())
            .unwrap_or(Money::zero(self.captured.currency()))
    }
}

/// An order whose ledger disagrees with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The order.
    pub order_id: OrderId,
    /// What disagrees.
    pub problem: String,
}

/// The money of every order in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrencyTotals {
    /// The currency.
    pub currency: Currency,
    /// Everything captured, in minor units.
    pub captured: i128,
    /// Everything refunded, in minor units.
    pub refunded: i128,
}

/// The result of checking every order against its ledger ([`crate::State::reconcile`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Orders checked.
    pub orders: u64,
    /// Refunds seen.
    pub refunds: u64,
    /// Sums per currency.
    pub totals: Vec<CurrencyTotals>,
    /// How many problems were found (an order may have more than one).
    pub mismatch_count: u64,
    /// The first [`crate::RECONCILIATION_MISMATCHES_MAX`] of them.
    pub mismatches: Vec<Mismatch>,
}
