//! Events: the facts the log records. `apply` turns each into a state change with no
//! decision left to make, so replaying the log (or a standby applying it) gives the same
//! state.

use rkyv::{Archive, Deserialize, Serialize};

use crate::model::*;
use crate::types::*;

/// One fact.
///
/// Whole entities are boxed: an archived enum is as large as its largest variant, so
/// an unboxed `Product` or idempotency record would make every event, a one-line
/// checkout's included, cost hundreds of bytes of log.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Event {
    CategoryCreated(Box<Category>),
    CategoryUpdated(Box<Category>),
    CategoryDeleted(CategoryId),
    /// A new product; its new SKUs start with no stock.
    ProductCreated(Box<Product>),
    /// The product's new value (archiving included).
    ProductUpdated(Box<Product>),
    StockSet {
        sku: Sku,
        on_hand: u32,
        reason: String,
    },
    StockAdjusted {
        sku: Sku,
        delta: i64,
        reason: String,
    },
    CartCreated(Box<Cart>),
    /// A cart line's new quantity; 0 removes the line.
    CartLineSet {
        cart_id: CartId,
        sku: Sku,
        quantity: u32,
        at: TimestampMs,
    },
    /// An order was placed: its lines' stock is reserved and its cart closed.
    OrderPlaced(Box<PlacedOrder>),
    /// Payment was captured: the reserved units left `on_hand`.
    PaymentCaptured {
        order_id: OrderId,
        payment: Box<Payment>,
        idempotency: Option<Box<IdempotencyTag>>,
        at: TimestampMs,
    },
    OrderCancelled {
        order_id: OrderId,
        at: TimestampMs,
    },
    OrderExpired {
        order_id: OrderId,
        at: TimestampMs,
    },
    OrderFulfilled {
        order_id: OrderId,
        at: TimestampMs,
    },
    CustomerRegistered(Box<Customer>),
    IdempotencyForgotten {
        keys: Vec<String>,
    },
    ApiClientCreated(Box<crate::accounts::ApiClient>),
    RefreshTokenIssued(Box<crate::accounts::RefreshToken>),
    /// The presented token is spent; its successor joins the family.
    RefreshTokenRotated {
        presented: String,
        successor: Box<crate::accounts::RefreshToken>,
    },
    /// A spent token was presented again: every token of the family is revoked.
    RefreshFamilyRevoked {
        family: String,
    },
    RefreshTokensPurged {
        hashes: Vec<String>,
    },
    SigningKeyAdded(Box<crate::accounts::SigningKey>),
    ResponseRecorded(Box<IdempotencyRecord>),
}

/// The new facts of a placed order: what was bought at which price, by whom, until
/// when it is reserved. Everything else of the order (owner, currency, product ids,
/// titles, totals) follows from the state at its LSN, so the log does not repeat it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PlacedOrder {
    /// The new order's id.
    pub id: OrderId,
    /// The cart it closes.
    pub cart_id: CartId,
    /// Where to send the receipt.
    pub email: String,
    /// Where to ship (boxed: most of its bytes are empty strings' headers).
    pub shipping_address: Option<Box<Address>>,
    /// SKU, units and the unit price charged, per line.
    pub lines: Vec<PlacedLine>,
    /// When the reservation ends unless paid.
    pub reservation_expires_at: TimestampMs,
    /// The idempotency key it was placed under, if any.
    pub idempotency: Option<Box<IdempotencyTag>>,
}

/// One line of a [`PlacedOrder`].
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PlacedLine {
    /// The SKU.
    pub sku: Sku,
    /// Units reserved.
    pub quantity: u32,
    /// The price of one unit at checkout.
    pub unit_price: Money,
}

/// The events of one command, as one log record.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its position in the log.
    pub lsn: Lsn,
    /// When the command was applied.
    pub at: TimestampMs,
    /// What it did.
    pub events: Vec<Event>,
}
