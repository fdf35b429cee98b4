//! The order entity and its lifecycle.

use std::sync::Arc;

use rkyv::with::{Map, Unshare};
use rkyv::{Archive, Deserialize, Serialize};

use crate::payments::Payment;
use crate::types::*;

/// Where an order ships to.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Address {
    /// The recipient.
    pub name: String,
    /// Street and number.
    pub line1: String,
    /// Optional second line.
    pub line2: String,
    /// The city.
    pub city: String,
    /// State, province or region, where one is used.
    pub region: String,
    /// The postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
}

/// Where an order is in its life.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Stock reserved, waiting for payment until the reservation expires.
    PendingPayment,
    /// Paid: the reserved units left `on_hand`.
    Paid,
    /// Shipped.
    Fulfilled,
    /// Cancelled before payment: stock released.
    Cancelled,
    /// Not paid in time: stock released.
    Expired,
    /// Paid (or fulfilled), then part of what was captured was refunded.
    PartiallyRefunded,
    /// Paid (or fulfilled), then everything captured was refunded.
    Refunded,
}

impl OrderStatus {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::PartiallyRefunded => "partially_refunded",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// Whether the order was paid: its units left `on_hand` (a refund gives money
    /// back, not units; a return restocks them).
    pub fn was_paid(&self) -> bool {
        matches!(
            self,
            OrderStatus::Paid
                | OrderStatus::Fulfilled
                | OrderStatus::PartiallyRefunded
                | OrderStatus::Refunded
        )
    }

    /// Parses the wire name.
    pub fn parse(value: &str) -> Option<OrderStatus> {
        [
            OrderStatus::PendingPayment,
            OrderStatus::Paid,
            OrderStatus::Fulfilled,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
            OrderStatus::PartiallyRefunded,
            OrderStatus::Refunded,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// When an order was fulfilled (shipped): kept apart from its status, which a refund
/// moves on.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Fulfillment {
    /// The order.
    pub order_id: OrderId,
    /// When.
    pub fulfilled_at: TimestampMs,
}

/// One line of an order, priced when the order was placed.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    /// The SKU.
    pub sku: Sku,
    /// The product the SKU belonged to.
    pub product_id: ProductId,
    /// The product and variant title at checkout.
    pub title: String,
    /// Units.
    pub quantity: u32,
    /// The price of one unit at checkout.
    pub unit_price: Money,
    /// `unit_price × quantity`.
    pub line_total: Money,
}

/// An order.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// The id (128 random bits: holding it is what gives a guest access).
    pub id: OrderId,
    /// Position in the order of checkouts, for listing.
    pub seq: u64,
    /// The cart it was checked out from.
    pub cart_id: CartId,
    /// The owner, or `None` for a guest order.
    pub customer_id: Option<CustomerId>,
    /// Where to send the receipt.
    pub email: String,
    /// Where to ship. Held by `Arc` (stored inline): seven strings inline would add
    /// 168 bytes to every order, most of which have no address.
    #[rkyv(with = Map<Unshare>)]
    pub shipping_address: Option<Arc<Address>>,
    /// The status.
    pub status: OrderStatus,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// Sum of the line totals.
    pub subtotal: Money,
    /// Discounts applied.
    pub discount_total: Money,
    /// `subtotal - discount_total`.
    pub total: Money,
    /// When an unpaid order expires and its stock is released.
    pub reservation_expires_at: TimestampMs,
    /// Captured payments.
    pub payments: Vec<Payment>,
    /// When it was placed.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

impl Order {
    /// The currency of every amount of the order.
    pub fn currency(&self) -> Currency {
        self.total.currency()
    }

    /// The order as it was when placed. After that an order only changes its status,
    /// its payments, and with them its update time and version, so this is exact, and
    /// an idempotent checkout's or purchase's replay needs no copy of the order.
    pub fn as_placed(&self) -> Order {
        Order {
            status: OrderStatus::PendingPayment,
            payments: Vec::new(),
            updated_at: self.created_at,
            version: 1,
            ..self.clone()
        }
    }

    /// The order as it was when `payment` was captured at `at`, making it `version`,
    /// or `None` if the order has no such payment. After a capture an order only
    /// changes its status, its payments, and with them its update time and version,
    /// so this is exact, and an idempotent payment's replay needs no copy of the order.
    pub fn as_paid(&self, payment: &PaymentId, at: TimestampMs, version: u64) -> Option<Order> {
        let paid = self.payments.iter().position(|p| p.id == *payment)?;
        Some(Order {
            status: OrderStatus::Paid,
            payments: self.payments[..=paid].to_vec(),
            updated_at: at,
            version,
            ..self.clone()
        })
    }

    /// Whether the order still holds a reservation of its lines' stock.
    pub fn holds_reservation(&self) -> bool {
        self.status == OrderStatus::PendingPayment
    }
}
