//! Idempotency records: what a keyed request did, replayed for a retry.

use std::sync::Arc;

use rkyv::with::Unshare;
use rkyv::{Archive, Deserialize, Serialize};

use crate::orders::Order;
use crate::payments::Payment;
use crate::types::*;

/// The recorded outcome of an idempotent command, replayed for a retry.
///
/// Orders and payments are held by `Arc` (stored inline, as before): a record shares
/// the order it names with the orders' table instead of widening every record to the
/// size of an order and a payment.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum IdempotentOutcome {
    /// A checkout that placed this order, as it was then (how earlier versions
    /// recorded a checkout; still read, no longer written).
    Checkout(#[rkyv(with = Unshare)] Arc<Order>),
    /// A payment that was captured (the order as it was then).
    Payment(#[rkyv(with = Unshare)] Arc<Order>, #[rkyv(with = Unshare)] Arc<Payment>),
    /// A response recorded by the HTTP layer.
    Response(RecordedResponse),
    /// A checkout or purchase that placed this order, replayed as the order was when
    /// placed ([`Order::as_placed`]): a reference, not a second copy of the order.
    Placed(OrderId),
    /// A payment through a provider that started this call; replayed as the call is
    /// now (it may have settled since).
    Call(PaymentCallId),
}

/// A response kept for an idempotency key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RecordedResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// The idempotency key an event was made under; `apply` turns it into the record, so
/// the log does not carry the outcome twice.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyTag {
    /// The scoped key (`scope` NUL `key`).
    pub key: String,
    /// A fingerprint of the request.
    pub fingerprint: u64,
}

/// An idempotency key's record.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The scoped key (`scope` NUL `key`).
    pub key: String,
    /// A fingerprint of the request that first used the key.
    pub fingerprint: u64,
    /// What that request did.
    pub outcome: IdempotentOutcome,
    /// When; the record is forgotten after the configured time to live.
    pub created_at: TimestampMs,
}
