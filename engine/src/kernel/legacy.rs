//! Log formats of earlier versions, kept only to upgrade a directory that holds them.
//!
//! Format 2 had one flat event enum; format 3 nests each domain's events under its
//! domain. The payload types are unchanged, so an entry converts variant by variant.
//! Never extend these types: they describe bytes already on disk.

use rkyv::{Archive, Deserialize, Serialize};

use crate::accounts::{AccountEvent, ApiClient, Customer, RefreshToken, SigningKey};
use crate::carts::{Cart, CartEvent};
use crate::catalog::{CatalogEvent, Category, Product};
use crate::domains::{Event, LogEntry};
use crate::error::{EngineError, Result};
use crate::idempotency::{IdempotencyEvent, IdempotencyRecord, IdempotencyTag};
use crate::inventory::InventoryEvent;
use crate::orders::{OrderEvent, PlacedOrder};
use crate::payments::{Payment, PaymentEvent};
use crate::types::*;

/// A format-2 event: the variants in their format-2 order.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) enum EventV2 {
    CategoryCreated(Box<Category>),
    CategoryUpdated(Box<Category>),
    CategoryDeleted(CategoryId),
    ProductCreated(Box<Product>),
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
    CartLineSet {
        cart_id: CartId,
        sku: Sku,
        quantity: u32,
        at: TimestampMs,
    },
    OrderPlaced(Box<PlacedOrder>),
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
    ApiClientCreated(Box<ApiClient>),
    RefreshTokenIssued(Box<RefreshToken>),
    RefreshTokenRotated {
        presented: String,
        successor: Box<RefreshToken>,
    },
    RefreshFamilyRevoked {
        family: String,
    },
    RefreshTokensPurged {
        hashes: Vec<String>,
    },
    SigningKeyAdded(Box<SigningKey>),
    ResponseRecorded(Box<IdempotencyRecord>),
}

/// A format-2 log entry.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) struct LogEntryV2 {
    pub(crate) lsn: Lsn,
    pub(crate) at: TimestampMs,
    pub(crate) events: Vec<EventV2>,
}

impl TryFrom<LogEntryV2> for LogEntry {
    type Error = EngineError;

    fn try_from(entry: LogEntryV2) -> Result<LogEntry> {
        let lsn = entry.lsn;
        let events: Result<Vec<Event>> =
            entry.events.into_iter().map(|event| upgrade(event, lsn)).collect();
        Ok(LogEntry { lsn, at: entry.at, events: events? })
    }
}

/// The format-3 form of a format-2 event of entry `lsn`.
fn upgrade(event: EventV2, lsn: Lsn) -> Result<Event> {
    use EventV2 as V2;
    Ok(match event {
        V2::CategoryCreated(c) => CatalogEvent::CategoryCreated(c.into()).into(),
        V2::CategoryUpdated(c) => CatalogEvent::CategoryUpdated(c.into()).into(),
        V2::CategoryDeleted(id) => CatalogEvent::CategoryDeleted(id).into(),
        V2::ProductCreated(p) => CatalogEvent::ProductCreated(p.into()).into(),
        V2::ProductUpdated(p) => CatalogEvent::ProductUpdated(p.into()).into(),
        V2::StockSet { sku, on_hand, reason } => {
            InventoryEvent::StockSet { sku, on_hand, reason }.into()
        }
        V2::StockAdjusted { sku, delta, reason } => {
            // Deltas were bounded by the most units on hand, which fits an `i32`.
            let delta = i32::try_from(delta).map_err(|_| {
                EngineError::IncompatibleData(format!(
                    "log entry {lsn} adjusts stock by {delta}, past any bound"
                ))
            })?;
            InventoryEvent::StockAdjusted { sku, delta, reason }.into()
        }
        V2::CartCreated(c) => CartEvent::CartCreated(c).into(),
        // The times of format 2's events were their entry's time, which `apply` gets.
        V2::CartLineSet { cart_id, sku, quantity, .. } => {
            CartEvent::CartLineSet { cart_id, sku, quantity }.into()
        }
        V2::OrderPlaced(placed) => OrderEvent::Placed(placed).into(),
        V2::PaymentCaptured { order_id, payment, idempotency, .. } => {
            PaymentEvent::PaymentCaptured { order_id, payment, idempotency }.into()
        }
        V2::OrderCancelled { order_id, .. } => OrderEvent::Cancelled { order_id }.into(),
        V2::OrderExpired { order_id, .. } => OrderEvent::Expired { order_id }.into(),
        V2::OrderFulfilled { order_id, .. } => OrderEvent::Fulfilled { order_id }.into(),
        V2::CustomerRegistered(c) => AccountEvent::CustomerRegistered(c).into(),
        V2::IdempotencyForgotten { keys } => IdempotencyEvent::IdempotencyForgotten { keys }.into(),
        V2::ApiClientCreated(c) => AccountEvent::ApiClientCreated(c).into(),
        V2::RefreshTokenIssued(t) => AccountEvent::RefreshTokenIssued(t).into(),
        V2::RefreshTokenRotated { presented, successor } => {
            AccountEvent::RefreshTokenRotated { presented, successor }.into()
        }
        V2::RefreshFamilyRevoked { family } => AccountEvent::RefreshFamilyRevoked { family }.into(),
        V2::RefreshTokensPurged { hashes } => AccountEvent::RefreshTokensPurged { hashes }.into(),
        V2::SigningKeyAdded(k) => AccountEvent::SigningKeyAdded(k).into(),
        V2::ResponseRecorded(r) => IdempotencyEvent::ResponseRecorded(r).into(),
    })
}
