//! The flash sale entity and the record of each purchase's units.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// Where a sale is in its life, as stored. Whether it is selling right now also depends
/// on the clock: see [`FlashSale::status`].
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SalePhase {
    /// Created; its timer starts it at `starts_at`.
    Scheduled,
    /// Started by its timer; its timer ends it at `ends_at`.
    Live,
    /// Ended at `ends_at`: the units not taken went back to normal stock.
    Ended,
    /// Cancelled: the units not taken went back to normal stock.
    Cancelled,
}

/// A sale's status as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlashSaleStatus {
    /// Before `starts_at`.
    Scheduled,
    /// Selling.
    Live,
    /// Inside its window with no unit left (units of expiring orders may come back).
    SoldOut,
    /// Past `ends_at`.
    Ended,
    /// Cancelled.
    Cancelled,
}

impl FlashSaleStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            FlashSaleStatus::Scheduled => "scheduled",
            FlashSaleStatus::Live => "live",
            FlashSaleStatus::SoldOut => "sold_out",
            FlashSaleStatus::Ended => "ended",
            FlashSaleStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(value: &str) -> Option<FlashSaleStatus> {
        [
            FlashSaleStatus::Scheduled,
            FlashSaleStatus::Live,
            FlashSaleStatus::SoldOut,
            FlashSaleStatus::Ended,
            FlashSaleStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// A flash sale: `quantity` units of one SKU carved out of its stock, sold at `price`
/// between `starts_at` and `ends_at`, at most `per_customer_limit` units per customer.
/// `remaining + reserved + sold == quantity` always.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FlashSale {
    /// The id (`fsale_…`).
    pub id: FlashSaleId,
    /// Creation order.
    pub seq: u64,
    /// The SKU sold.
    pub sku: Sku,
    /// The product that sells the SKU (when the sale was created).
    pub product_id: ProductId,
    /// The line title its orders carry.
    pub title: String,
    /// The sale price of one unit.
    pub price: Money,
    /// Units allocated to the sale.
    pub quantity: u32,
    /// Units one customer may hold in pending and paid orders of the sale.
    pub per_customer_limit: u32,
    /// When it starts selling.
    pub starts_at: TimestampMs,
    /// When it stops selling.
    pub ends_at: TimestampMs,
    /// How long a purchase's order holds its units unpaid.
    pub reservation_ttl_ms: i64,
    /// Where it is in its life.
    pub phase: SalePhase,
    /// Units not taken (after the end: back in normal stock).
    pub remaining: u32,
    /// Units in pending orders of the sale.
    pub reserved: u32,
    /// Units in paid orders of the sale.
    pub sold: u32,
    /// Created at.
    pub created_at: TimestampMs,
    /// Last changed at.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

impl FlashSale {
    /// Whether it still holds its units apart from normal stock (not ended or
    /// cancelled).
    pub fn holds_stock(&self) -> bool {
        matches!(self.phase, SalePhase::Scheduled | SalePhase::Live)
    }

    /// Whether a purchase may be made at `now`: not ended or cancelled, and inside the
    /// window (the clock decides, so a timer that has not fired yet never lets a
    /// purchase through after `ends_at`, nor holds one back after `starts_at`).
    pub fn selling_at(&self, now: TimestampMs) -> bool {
        self.holds_stock() && self.starts_at <= now && now < self.ends_at
    }

    /// The status at `now`.
    pub fn status(&self, now: TimestampMs) -> FlashSaleStatus {
        match self.phase {
            SalePhase::Cancelled => FlashSaleStatus::Cancelled,
            SalePhase::Ended => FlashSaleStatus::Ended,
            _ if now >= self.ends_at => FlashSaleStatus::Ended,
            _ if now < self.starts_at => FlashSaleStatus::Scheduled,
            _ if self.remaining == 0 => FlashSaleStatus::SoldOut,
            _ => FlashSaleStatus::Live,
        }
    }
}

/// The units one order of a sale holds, and whose they are: the `flash_sale_orders` row
/// each purchase writes, from which an open counts each customer's units (they count
/// toward the limit while the order is pending or paid). Not kept in memory: the order
/// says the same ([`crate::State::flash_sale_of_order`]).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SaleOrder {
    /// The order.
    pub order_id: OrderId,
    /// The sale.
    pub sale_id: FlashSaleId,
    /// The buyer.
    pub customer_id: CustomerId,
    /// Units bought.
    pub units: u32,
}
