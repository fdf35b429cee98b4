//! Inventory's entity: a SKU's stock levels.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// A SKU's stock: `available = on_hand - reserved`, all non-negative.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StockLevels {
    /// The SKU.
    pub sku: Sku,
    /// Units in the warehouse, including reserved ones.
    pub on_hand: u32,
    /// Units held by unpaid orders.
    pub reserved: u32,
    /// Bumped by every change.
    pub version: u64,
}

impl StockLevels {
    /// Units that can still be reserved.
    pub fn available(&self) -> u32 {
        debug_assert!(self.reserved <= self.on_hand, "reserved exceeds on hand for {}", self.sku);
        self.on_hand - self.reserved
    }
}
