//! Idempotency records: what a keyed request did, replayed for a retry.

use std::sync::Arc;

use rkyv::with::Unshare;
use rkyv::{Archive, Deserialize, Serialize};

use crate::orders::Order;
use crate::payments::Payment;
use crate::types::*;

/// The recorded outcome of an idempotent command, replayed for a retry.
///
/// New records name the order they answer with (`Placed`, `Paid`) and rebuild it when
/// replayed; the older forms that hold the order and payment by `Arc` (stored inline,
/// as before) are still read.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum IdempotentOutcome {
    /// A checkout that placed this order, as it was then (how earlier versions
    /// recorded a checkout; still read, no longer written).
    Checkout(#[rkyv(with = Unshare)] Arc<Order>),
    /// A payment that was captured (the order as it was then; how earlier versions
    /// recorded a payment, still read, no longer written: the record held the paid
    /// order for the key's lifetime, long after the order itself left memory).
    Payment(#[rkyv(with = Unshare)] Arc<Order>, #[rkyv(with = Unshare)] Arc<Payment>),
    /// A response recorded by the HTTP layer.
    Response(RecordedResponse),
    /// A checkout or purchase that placed this order, replayed as the order was when
    /// placed ([`Order::as_placed`]): a reference, not a second copy of the order.
    Placed(OrderId),
    /// A payment through a provider that started this call; replayed as the call is
    /// now (it may have settled since).
    Call(PaymentCallId),
    /// A payment that was captured, replayed as the order was when paid
    /// ([`Order::as_paid`]): a reference, not a copy of the order (boxed: every
    /// record is as large as its largest outcome).
    Paid(Box<PaidRef>),
}

/// What a captured payment's record keeps: enough to rebuild the order as it was paid.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaidRef {
    /// The order paid.
    pub order_id: OrderId,
    /// The payment captured.
    pub payment_id: PaymentId,
    /// When (the order's update time then).
    pub at: TimestampMs,
    /// The order's version then.
    pub version: u64,
}

impl PaidRef {
    /// The order as it was paid, and the payment, from the order as it is now; `None`
    /// if the order is gone or has no such payment.
    pub fn rebuild(&self, now: &Order) -> Option<(Order, Payment)> {
        let paid = now.as_paid(&self.payment_id, self.at, self.version)?;
        let payment = paid.payments.last()?.clone();
        Some((paid, payment))
    }
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

/// An idempotency record as its row holds it from row format 10 on. The log and memory
/// keep [`IdempotencyRecord`]; only the row differs. [`IdempotentOutcome`]'s archived
/// form holds its order and payment inline, so every archived outcome was as wide as
/// an order and a payment (264 bytes) whichever it was: a purchase's or a checkout's
/// record (a `Placed` id) with a 53-byte key took 378 bytes a row. Here they are out of
/// line, and that row takes 130.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) struct IdempotencyRow {
    key: String,
    fingerprint: u64,
    outcome: RowOutcome,
    created_at: TimestampMs,
}

/// [`IdempotentOutcome`] with its order and payment out of line.
#[derive(Archive, Serialize, Deserialize, Debug)]
enum RowOutcome {
    Checkout(#[rkyv(with = ArcAsBox)] Arc<Order>),
    Payment(#[rkyv(with = ArcAsBox)] Arc<Order>, #[rkyv(with = ArcAsBox)] Arc<Payment>),
    Response(RecordedResponse),
    Placed(OrderId),
    Call(PaymentCallId),
    Paid(PaidRef),
}

impl From<&IdempotencyRecord> for IdempotencyRow {
    fn from(record: &IdempotencyRecord) -> IdempotencyRow {
        let outcome = match &record.outcome {
            IdempotentOutcome::Checkout(order) => RowOutcome::Checkout(order.clone()),
            IdempotentOutcome::Payment(order, payment) => {
                RowOutcome::Payment(order.clone(), payment.clone())
            }
            IdempotentOutcome::Response(response) => RowOutcome::Response(response.clone()),
            IdempotentOutcome::Placed(order) => RowOutcome::Placed(*order),
            IdempotentOutcome::Call(call) => RowOutcome::Call(*call),
            IdempotentOutcome::Paid(paid) => RowOutcome::Paid(**paid),
        };
        IdempotencyRow {
            key: record.key.clone(),
            fingerprint: record.fingerprint,
            outcome,
            created_at: record.created_at,
        }
    }
}

impl From<IdempotencyRow> for IdempotencyRecord {
    fn from(row: IdempotencyRow) -> IdempotencyRecord {
        let outcome = match row.outcome {
            RowOutcome::Checkout(order) => IdempotentOutcome::Checkout(order),
            RowOutcome::Payment(order, payment) => IdempotentOutcome::Payment(order, payment),
            RowOutcome::Response(response) => IdempotentOutcome::Response(response),
            RowOutcome::Placed(order) => IdempotentOutcome::Placed(order),
            RowOutcome::Call(call) => IdempotentOutcome::Call(call),
            RowOutcome::Paid(paid) => IdempotentOutcome::Paid(Box::new(paid)),
        };
        IdempotencyRecord {
            key: row.key,
            fingerprint: row.fingerprint,
            outcome,
            created_at: row.created_at,
        }
    }
}
