//! The cart entity.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// One line of a cart: a SKU and how many.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CartLine {
    /// The SKU.
    pub sku: Sku,
    /// How many, 1 to the configured maximum.
    pub quantity: u32,
}

/// Whether a cart may still change.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CartStatus {
    /// Lines may be added and changed.
    Open,
    /// Checked out into the order; closed for good.
    CheckedOut(OrderId),
}

/// A cart. Prices are not stored: they are the current ones when the cart is read.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Cart {
    /// The id (128 random bits: holding it is what gives a guest access).
    pub id: CartId,
    /// Position in the order of cart creation: the storage key, so new rows append.
    pub seq: u64,
    /// The owner, or `None` for a guest cart.
    pub customer_id: Option<CustomerId>,
    /// The currency every line must be priced in.
    pub currency: Currency,
    /// The lines, one per SKU, in the order they were added.
    pub lines: Vec<CartLine>,
    /// Open or checked out.
    pub status: CartStatus,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}
