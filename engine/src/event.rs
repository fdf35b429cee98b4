//! Events: the facts the log records. `apply` turns each into a state change with no
//! decision left to make, so replaying the log (or a standby applying it) gives the same
//! state.

use rkyv::{Archive, Deserialize, Serialize};

use crate::model::*;
use crate::types::*;

/// One fact.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
// An event is built once and moved into its log entry; boxing the large ones would
// only add allocations (and change the archived layout).
#[allow(missing_docs, clippy::large_enum_variant)]
pub enum Event {
    CategoryCreated(Category),
    CategoryUpdated(Category),
    CategoryDeleted(CategoryId),
    /// A new product; its new SKUs start with no stock.
    ProductCreated(Product),
    /// The product's new value (archiving included).
    ProductUpdated(Product),
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
    CartCreated(Cart),
    /// A cart line's new quantity; 0 removes the line.
    CartLineSet {
        cart_id: CartId,
        sku: Sku,
        quantity: u32,
        at: TimestampMs,
    },
    /// An order was placed: its lines' stock is reserved and its cart closed.
    OrderPlaced {
        order: Order,
        idempotency: Option<IdempotencyTag>,
    },
    /// Payment was captured: the reserved units left `on_hand`.
    PaymentCaptured {
        order_id: OrderId,
        payment: Payment,
        idempotency: Option<IdempotencyTag>,
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
    CustomerRegistered(Customer),
    IdempotencyForgotten {
        keys: Vec<String>,
    },
    ApiClientCreated(crate::accounts::ApiClient),
    RefreshTokenIssued(crate::accounts::RefreshToken),
    /// The presented token is spent; its successor joins the family.
    RefreshTokenRotated {
        presented: String,
        successor: crate::accounts::RefreshToken,
    },
    /// A spent token was presented again: every token of the family is revoked.
    RefreshFamilyRevoked {
        family: String,
    },
    RefreshTokensPurged {
        hashes: Vec<String>,
    },
    SigningKeyAdded(crate::accounts::SigningKey),
    ResponseRecorded(IdempotencyRecord),
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
