//! A return: units of a fulfilled order a customer sends back.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// Where a return is.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReturnStatus {
    /// Asked for by the customer; staff have not decided.
    Requested,
    /// Staff agreed: the customer may send the units.
    Approved,
    /// Staff refused, with a reason.
    Rejected,
    /// The units arrived: restocked (per line, as staff chose) and refunded.
    Received,
}

impl ReturnStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReturnStatus::Requested => "requested",
            ReturnStatus::Approved => "approved",
            ReturnStatus::Rejected => "rejected",
            ReturnStatus::Received => "received",
        }
    }

    /// Parses the wire name.
    pub fn parse(value: &str) -> Option<ReturnStatus> {
        [
            ReturnStatus::Requested,
            ReturnStatus::Approved,
            ReturnStatus::Rejected,
            ReturnStatus::Received,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// Units of one order line sent back.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ReturnLine {
    /// The SKU (a line of the order).
    pub sku: Sku,
    /// Units.
    pub quantity: u32,
    /// What the customer paid for these units (the line's total after its discount,
    /// pro rata, rounded down), in minor units: what receiving them refunds.
    pub amount: i64,
    /// Whether receiving them put them back in stock (staff decide, on receipt).
    pub restocked: bool,
}

/// A return.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Return {
    /// The id.
    pub id: ReturnId,
    /// Position in the order of requests: the storage key and the listing order.
    pub seq: u64,
    /// The order.
    pub order_id: OrderId,
    /// The lines.
    pub lines: Vec<ReturnLine>,
    /// Why, as the customer said.
    pub reason: String,
    /// Where it is.
    pub status: ReturnStatus,
    /// Staff's note on approving or rejecting (the reason of a rejection).
    pub note: String,
    /// The refund that receiving it made (none when nothing was left to refund).
    pub refund_id: Option<RefundId>,
    /// When it was requested.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

impl Return {
    /// What its lines are worth, in minor units.
    pub fn amount(&self) -> i64 {
        self.lines.iter().map(|l| l.amount).sum()
    }
}
