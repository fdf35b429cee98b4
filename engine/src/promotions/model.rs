//! Discount codes, the codes on a cart, and what a placed order was discounted.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// What a code takes off.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscountValue {
    /// A share of the eligible lines, in basis points (1–10,000: 0.01 %–100 %).
    Percent(u32),
    /// A fixed amount off the eligible lines (never more than they cost), in one
    /// currency: a cart in another cannot use it.
    Fixed(Money),
}

/// A discount code.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DiscountCode {
    /// The code as shoppers type it, upper-cased (codes match case-insensitively).
    pub code: String,
    /// Position in the order of creation: the storage key and the listing order.
    pub seq: u64,
    /// What it takes off.
    pub value: DiscountValue,
    /// Only lines of these products (with `category_ids`: of these or those).
    pub product_ids: Vec<ProductId>,
    /// Only lines of products in these categories or below them.
    pub category_ids: Vec<CategoryId>,
    /// The cart's subtotal (before discounts) must be at least this.
    pub min_subtotal: Option<Money>,
    /// Usable from.
    pub starts_at: TimestampMs,
    /// Usable until (exclusive).
    pub ends_at: Option<TimestampMs>,
    /// Orders that may carry it, in all.
    pub usage_limit: Option<u32>,
    /// Orders one customer may place with it (a guest cannot use a code with a limit).
    pub per_customer_limit: Option<u32>,
    /// Whether it combines with other codes on one cart (an exclusive code stands alone).
    pub stackable: bool,
    /// Staff may switch a code off.
    pub active: bool,
    /// Orders carrying it that still hold it (placed, not cancelled or expired).
    pub uses: u32,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

/// An automatic promotion: "buy `buy`, get `get` free" on the eligible units of every
/// cart, no code needed. Of every `buy + get` eligible units in a cart, `get` are free:
/// the cheapest ones (the earlier line first on a tie).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AutomaticPromotion {
    /// The id; also its name in an order's discounts (it cannot be mistaken for a code,
    /// which is upper-case).
    pub id: PromotionId,
    /// What shoppers see (`3 for 2 on mugs`).
    pub name: String,
    /// Units bought per group.
    pub buy: u32,
    /// Units free per group.
    pub get: u32,
    /// Only units of these products (with `category_ids`: of these or those).
    pub product_ids: Vec<ProductId>,
    /// Only units of products in these categories or below them.
    pub category_ids: Vec<CategoryId>,
    /// Staff may switch it off.
    pub active: bool,
    /// In force from.
    pub starts_at: TimestampMs,
    /// In force until (exclusive).
    pub ends_at: Option<TimestampMs>,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
}

impl AutomaticPromotion {
    /// Whether it applies at `now`.
    pub fn in_force(&self, now: TimestampMs) -> bool {
        self.active && self.starts_at <= now && self.ends_at.is_none_or(|end| now < end)
    }
}

/// The codes a shopper entered on a cart, in the order entered.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CartCodes {
    /// The cart.
    pub cart_id: CartId,
    /// The codes.
    pub codes: Vec<String>,
}

/// A code's part of an order's discount.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AppliedCode {
    /// The code.
    pub code: String,
    /// What it took off, in minor units of the order's currency.
    pub amount: i64,
}

/// What a placed order was discounted, code by code and line by line.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OrderDiscount {
    /// The order.
    pub order_id: OrderId,
    /// Its customer (a per-customer limit counts this).
    pub customer_id: Option<CustomerId>,
    /// The codes, in the order they were applied.
    pub codes: Vec<AppliedCode>,
    /// Minor units off each order line, in the order's line order; they sum to the
    /// order's `discount_total`.
    pub line_discounts: Vec<i64>,
    /// The order was cancelled or expired: its uses were given back.
    pub released: bool,
}

/// How one code on a cart prices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeOutcome {
    /// The code.
    pub code: String,
    /// What it takes off now, in minor units (0 when it does not apply).
    pub amount: i64,
    /// Why it does not apply, if it does not (checkout refuses the cart until it is
    /// removed or applies again).
    pub refusal: Option<String>,
}

/// A cart's discounts at the current prices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discounts {
    /// Each code on the cart.
    pub codes: Vec<CodeOutcome>,
    /// Minor units off each line, in line order.
    pub line_discounts: Vec<i64>,
    /// Their sum.
    pub total: i64,
}

impl Discounts {
    /// The first code that does not apply, and why.
    pub fn refusal(&self) -> Option<(&str, &str)> {
        self.codes.iter().find_map(|c| c.refusal.as_deref().map(|r| (c.code.as_str(), r)))
    }
}
