//! A captured payment.

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
