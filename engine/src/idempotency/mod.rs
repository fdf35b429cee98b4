//! Idempotency keys: a keyed request's outcome is recorded in the same log entry as its
//! effect, so a retry with the key gets the first outcome again (also after a crash),
//! and a different request with the same key is refused. Records are forgotten after
//! their time to live.

mod model;

use std::sync::Arc;

use crossbeam_skiplist::SkipSet;
use rkyv::{Archive, Deserialize, Serialize};

pub use model::*;

use crate::domains::{Event, State};
use crate::error::{EngineError, Result};
use crate::kernel::codec;
use crate::kernel::handler::{done, Ctx, Decision, Request};
use crate::kernel::table::{check_v1, decode_row, Domain, Index, Persist, Row, Table, Timers};
use crate::types::*;
use crate::validate::Checks;
use crate::EXPIRIES_PER_COMMAND_MAX;

const IDEMPOTENCY: &str = "idempotency";

// Stored as an `IdempotencyRow` (see there): the record without its outcome's padding.
impl Persist for IdempotencyRecord {
    fn table(&self) -> &'static str {
        IDEMPOTENCY
    }
    fn key(&self) -> Vec<u8> {
        self.key.as_bytes().to_vec()
    }
    fn encode(&self) -> Vec<u8> {
        codec::encode(&IdempotencyRow::from(self))
    }
}

/// A stored record: an `IdempotencyRow` from row format 10 on, the record as it is
/// before.
fn decode_record(bytes: &[u8]) -> Result<IdempotencyRecord> {
    if codec::row_version(bytes).is_some_and(|v| v < codec::ROW_FORMAT_IDEMPOTENCY_ROW) {
        decode_row(bytes, "idempotency record")
    } else {
        decode_row::<IdempotencyRow>(bytes, "idempotency record").map(IdempotencyRecord::from)
    }
}

/// An `Idempotency-Key`, scoped to whoever sent it so that two clients cannot collide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who sent it (a customer id, an API client id, or `guest`).
    pub scope: String,
    /// The key: 1–255 printable ASCII characters.
    pub key: String,
}

impl IdempotencyKey {
    /// The key as stored: scope and key joined by a NUL.
    pub fn scoped(&self) -> String {
        let mut scoped = String::with_capacity(self.scope.len() + 1 + self.key.len());
        scoped.push_str(&self.scope);
        scoped.push('\u{0}');
        scoped.push_str(&self.key);
        scoped
    }
}

/// The records in memory.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub(crate) records: Index<String, Arc<IdempotencyRecord>>,
    /// Every record, oldest first.
    pub(crate) by_age: SkipSet<ByAge>,
}

/// A record in [`Tables::by_age`]: ordered by `(created_at, key)`, and holding the
/// record itself rather than a third copy of its key.
#[derive(Clone, Debug)]
pub(crate) struct ByAge(pub(crate) Arc<IdempotencyRecord>);

impl ByAge {
    fn rank(&self) -> (TimestampMs, &str) {
        (self.0.created_at, &self.0.key)
    }
}

impl PartialEq for ByAge {
    fn eq(&self, other: &ByAge) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for ByAge {}

impl PartialOrd for ByAge {
    fn partial_cmp(&self, other: &ByAge) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByAge {
    fn cmp(&self, other: &ByAge) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "idempotency",
    tables: &[Table {
        name: IDEMPOTENCY,
        rows: |s, f| s.idempotency.records.entries().iter().for_each(|(_, r)| f(&**r)),
        load: |state, bytes| {
            put(state, decode_record(bytes)?, &mut Vec::new());
            Ok(())
        },
        check_v1: check_v1::<IdempotencyRecord>,
        load_in_parallel: true,
        keys_ascend: false,
    }],
    counters: |_| vec![],
    timers: Some(Timers {
        due: |state, now, limits| {
            state.idempotency.by_age.len() > limits.idempotency_records_max
                || state
                    .idempotency
                    .by_age
                    .front()
                    .is_some_and(|e| e.value().0.created_at + limits.idempotency_ttl_ms <= now)
        },
        expire: forget_expired,
    }),
    verify: None,
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// Idempotency's own facts (a keyed checkout or payment records its outcome through
    /// its own event's tag).
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum IdempotencyEvent {
        IdempotencyForgotten { keys: Vec<String> },
        ResponseRecorded(Box<IdempotencyRecord>),
    }
}
pub use event::IdempotencyEvent;

pub(crate) fn apply(
    state: &State,
    event: &IdempotencyEvent,
    _at: TimestampMs,
    rows: &mut Vec<Row>,
) {
    match event {
        IdempotencyEvent::ResponseRecorded(record) => put(state, (**record).clone(), rows),
        IdempotencyEvent::IdempotencyForgotten { keys } => {
            for key in keys {
                if let Some(record) = state.idempotency.records.remove(key) {
                    state.idempotency.by_age.remove(&ByAge(record));
                    rows.push(Row::delete(IDEMPOTENCY, key.as_bytes()));
                }
            }
        }
    }
}

fn put(state: &State, record: IdempotencyRecord, rows: &mut Vec<Row>) {
    let tables = &state.idempotency;
    let record = Arc::new(record);
    // One lookup of the key: the record it replaces (one that expired) comes back from
    // the insert, and its age entry goes before the new one enters.
    if let Some(previous) = tables.records.replace(record.key.clone(), record.clone()) {
        tables.by_age.remove(&ByAge(previous));
    }
    tables.by_age.insert(ByAge(record.clone()));
    rows.push(Row::put(record));
}

/// Records the outcome of the command a tag came with; `apply` of that command's event.
pub(crate) fn record(
    state: &State,
    tag: &IdempotencyTag,
    outcome: IdempotentOutcome,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) {
    let record = IdempotencyRecord {
        key: tag.key.clone(),
        fingerprint: tag.fingerprint,
        outcome,
        created_at: at,
    };
    put(state, record, rows);
}

/// FNV-1a over a canonical rendering of a request (its `Debug` text): equal requests,
/// equal fingerprints. Fingerprints are kept in idempotency records, so the rendering
/// and the hash must not change.
pub(crate) fn fingerprint(parts: &dyn std::fmt::Debug) -> u64 {
    let mut hash = Fnv1a(0xcbf2_9ce4_8422_2325);
    // The text is hashed as it is written, never held: writing to the hash cannot fail.
    let _ = std::fmt::Write::write_fmt(&mut hash, format_args!("{parts:?}"));
    hash.0
}

/// An FNV-1a hash that text is written into.
struct Fnv1a(u64);

impl std::fmt::Write for Fnv1a {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0 = text.bytes().fold(self.0, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Ok(())
    }
}

/// What an idempotency key says about a request.
// Returned once per keyed command and matched at once: boxing would cost more.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Replay {
    /// No key: proceed.
    Unkeyed,
    /// A new key: proceed, and record the outcome under this tag.
    New(Box<IdempotencyTag>),
    /// The same request came with this key before: answer what it did.
    Recorded(IdempotentOutcome),
}

/// Looks a request's key up. `print` makes the request's fingerprint (only a keyed
/// request pays for it). The same key with another fingerprint is refused.
pub(crate) fn check(
    state: &State,
    key: Option<&IdempotencyKey>,
    print: impl FnOnce() -> u64,
    ctx: &Ctx<'_>,
) -> Result<Replay> {
    let Some(key) = key else { return Ok(Replay::Unkeyed) };
    let mut checks = Checks::default();
    if key.key.is_empty()
        || key.key.len() > 255
        || !key.key.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        checks.fail("idempotency_key", "must be 1-255 printable ASCII characters");
    }
    checks.text("idempotency_key.scope", &key.scope, 1, 128, false);
    done(checks)?;
    let fingerprint = print();
    let scoped = key.scoped();
    match state.idempotency_record(&scoped) {
        Some(record) if record.created_at + ctx.limits.idempotency_ttl_ms > ctx.now => {
            if record.fingerprint == fingerprint {
                Ok(Replay::Recorded(record.outcome.clone()))
            } else {
                Err(EngineError::IdempotencyKeyReused)
            }
        }
        _ => Ok(Replay::New(Box::new(IdempotencyTag { key: scoped, fingerprint }))),
    }
}

/// Forgets the records past their time to live, and the oldest past the most kept.
fn forget_expired(state: &State, ctx: &Ctx<'_>, events: &mut Vec<Event>) -> usize {
    let excess = state.idempotency.by_age.len().saturating_sub(ctx.limits.idempotency_records_max);
    let keys: Vec<String> = state
        .idempotency
        .by_age
        .iter()
        .enumerate()
        .take_while(|(i, e)| {
            *i < excess || e.value().0.created_at + ctx.limits.idempotency_ttl_ms <= ctx.now
        })
        .take(EXPIRIES_PER_COMMAND_MAX)
        .map(|(_, e)| e.value().0.key.clone())
        .collect();
    if !keys.is_empty() {
        events.push(IdempotencyEvent::IdempotencyForgotten { keys }.into());
    }
    0
}

/// Records the response of an idempotent request so a retry with the same key gets it
/// again, also after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordResponse {
    /// The key.
    pub key: IdempotencyKey,
    /// A fingerprint of the request.
    pub fingerprint: u64,
    /// The HTTP status.
    pub status: u16,
    /// The body, at most [`RESPONSE_BYTES_MAX`].
    pub body: Vec<u8>,
}

/// The largest response body kept for an idempotency key (the largest the API makes,
/// a cart or product at its limits, is far below it).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;

impl Request for RecordResponse {
    type Output = ();
    type Outcome = ();

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<()>> {
        if self.body.len() > RESPONSE_BYTES_MAX {
            return Err(EngineError::field("body", "is too large to keep for an idempotency key"));
        }
        let scoped = self.key.scoped();
        if let Some(existing) = state.idempotency_record(&scoped) {
            if existing.created_at + ctx.limits.idempotency_ttl_ms > ctx.now {
                return Err(EngineError::Conflict(
                    "the idempotency key has a recorded outcome".into(),
                ));
            }
        }
        let record = IdempotencyRecord {
            key: scoped,
            fingerprint: self.fingerprint,
            outcome: IdempotentOutcome::Response(RecordedResponse {
                status: self.status,
                body: self.body.clone(),
            }),
            created_at: ctx.now,
        };
        Decision::one((), IdempotencyEvent::ResponseRecorded(Box::new(record)))
    }

    fn reply(_: &State, (): ()) {}
}

/// How a [`Recorded`] request's answer is kept: its HTTP status and body, rendered
/// from the state and the output right after the command applied (on the sequencer),
/// or `None` to keep nothing (a body past [`RESPONSE_BYTES_MAX`] is not kept either).
pub type Render<O> = Box<dyn Fn(&State, &O) -> Option<(u16, Vec<u8>)> + Send>;

/// Runs `request` and records its rendered answer under `key` in the same log entry as
/// its effect: a crash leaves both or neither, so a retry with the key either replays
/// the answer or runs the request for the first time, never a second time.
pub struct Recorded<R: Request> {
    /// The command.
    pub request: R,
    /// The key it came with.
    pub key: IdempotencyKey,
    /// A fingerprint of the request, to refuse the key with another request.
    pub fingerprint: u64,
    /// Renders the answer to keep.
    pub render: Render<R::Output>,
}

impl<R: Request> Request for Recorded<R> {
    type Output = R::Output;
    type Outcome = R::Outcome;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<R::Outcome>> {
        if let Some(existing) = state.idempotency_record(&self.key.scoped()) {
            if existing.created_at + ctx.limits.idempotency_ttl_ms > ctx.now {
                return Err(EngineError::Conflict(
                    "the idempotency key has a recorded outcome".into(),
                ));
            }
        }
        self.request.decide(state, ctx)
    }

    fn reply(state: &State, outcome: R::Outcome) -> R::Output {
        R::reply(state, outcome)
    }

    fn after(&self, state: &State, output: &R::Output, ctx: &Ctx<'_>) -> Option<Event> {
        let (status, body) = (self.render)(state, output)?;
        if body.len() > RESPONSE_BYTES_MAX {
            tracing::warn!(bytes = body.len(), "an answer too large to keep for its key");
            return None;
        }
        let record = IdempotencyRecord {
            key: self.key.scoped(),
            fingerprint: self.fingerprint,
            outcome: IdempotentOutcome::Response(RecordedResponse { status, body }),
            created_at: ctx.now,
        };
        Some(IdempotencyEvent::ResponseRecorded(Box::new(record)).into())
    }
}

/// Idempotency's reads.
impl State {
    /// The idempotency record of a scoped key.
    pub fn idempotency_record(&self, scoped_key: &str) -> Option<Arc<IdempotencyRecord>> {
        self.idempotency.records.get(scoped_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fingerprints are kept in idempotency records: hashing the text as it is written
    /// gives what hashing the whole rendering gave, byte for byte.
    #[test]
    fn fingerprints_hash_the_whole_debug_rendering() {
        let whole = |text: &str| {
            text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let sale = "fls_0123456789abcdef".to_string();
        let cases: [&dyn std::fmt::Debug; 4] = [
            &("flash_sale", &sale, 2u32),
            &(&Some("crt_x\"y\n"), &None::<String>, &vec![1, 2]),
            &"",
            &("ünïcødé", 'é', -7i64),
        ];
        for parts in cases {
            assert_eq!(fingerprint(parts), whole(&format!("{parts:?}")), "{parts:?}");
        }
        // The value of a purchase's fingerprint as records hold it.
        assert_eq!(
            fingerprint(&("flash_sale", &sale, 2u32)),
            whole(r#"("flash_sale", "fls_0123456789abcdef", 2)"#)
        );
    }

    /// A key used again after its record expired replaces the record, and the age index
    /// holds the new record's age only (forgetting by age would otherwise drop the new
    /// record at the old one's time, or never forget the old entry).
    #[test]
    fn a_replaced_record_leaves_one_age_entry() {
        let state = State::new();
        let record = |fingerprint, created_at| IdempotencyRecord {
            key: "scope\0key".into(),
            fingerprint,
            outcome: IdempotentOutcome::Response(RecordedResponse { status: 201, body: vec![] }),
            created_at,
        };
        let mut rows = Vec::new();
        put(&state, record(1, 10), &mut rows);
        put(&state, record(2, 99), &mut rows);
        // The same time again: the entry is replaced, not removed.
        put(&state, record(3, 99), &mut rows);
        let ages: Vec<_> = state
            .idempotency
            .by_age
            .iter()
            .map(|e| (e.value().0.created_at, e.value().0.key.clone(), e.value().0.fingerprint))
            .collect();
        assert_eq!(ages, vec![(99, "scope\0key".to_string(), 3)]);
        let held = state.idempotency_record("scope\0key").expect("held");
        assert_eq!((held.fingerprint, held.created_at), (3, 99));
        assert_eq!((state.idempotency.records.len(), rows.len()), (1, 3));
    }

    /// A record's row keeps every outcome as it was; a row of format 9 (the record
    /// as it is) still reads; and a placed order's row is under half the record's
    /// (130 bytes against 378 with this key), whose outcome is as wide as an order and
    /// a payment.
    #[test]
    fn records_round_trip_through_their_rows_and_older_rows_still_read() {
        let usd = Money::new(1999, Currency::USD).unwrap();
        let order = Arc::new(crate::orders::Order {
            id: OrderId::from_random(7),
            seq: 3,
            cart_id: CartId::from_seq(2),
            customer_id: Some(CustomerId::from_seq(1)),
            email: "ann@example.com".into(),
            shipping_address: None,
            status: crate::orders::OrderStatus::Paid,
            lines: vec![],
            subtotal: usd,
            discount_total: Money::zero(Currency::USD),
            total: usd,
            reservation_expires_at: 50,
            payments: vec![],
            created_at: 10,
            updated_at: 20,
            version: 2,
        });
        let payment = Arc::new(crate::payments::Payment {
            id: PaymentId::from_random(9),
            method: "test_card".into(),
            card_brand: "visa".into(),
            amount: usd,
            created_at: 20,
        });
        let outcomes = [
            IdempotentOutcome::Placed(OrderId::from_random(u128::MAX)),
            IdempotentOutcome::Checkout(order.clone()),
            IdempotentOutcome::Payment(order, payment),
            IdempotentOutcome::Response(RecordedResponse { status: 201, body: b"{}".to_vec() }),
            IdempotentOutcome::Call(PaymentCallId::from_random(5)),
            IdempotentOutcome::Paid(Box::new(PaidRef {
                order_id: OrderId::from_random(3),
                payment_id: PaymentId::from_random(9),
                at: 20,
                version: 2,
            })),
        ];
        let key = format!("cus_{}\0{}", "1".repeat(12), "k".repeat(36));
        for outcome in outcomes {
            let record = IdempotencyRecord {
                key: key.clone(),
                fingerprint: 0xfeed,
                outcome,
                created_at: 1_780_000_000_000,
            };
            let row = record.encode();
            assert_eq!(codec::row_version(&row), Some(codec::ROW_FORMAT_IDEMPOTENCY_ROW));
            assert_eq!(decode_record(&row).unwrap(), record);
            // The record as format 9 stored it.
            let mut old = vec![row[0], codec::ROW_FORMAT_IDEMPOTENCY_ROW - 1];
            old.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&record).unwrap());
            assert_eq!(decode_record(&old).unwrap(), record);
            if matches!(record.outcome, IdempotentOutcome::Placed(_)) {
                assert!(row.len() < 160, "a placed order's row takes {} bytes", row.len());
                assert!(old.len() > 2 * row.len(), "format 9: {} bytes", old.len());
            }
            if matches!(record.outcome, IdempotentOutcome::Paid(_)) {
                assert!(row.len() < 200, "a paid order's row takes {} bytes", row.len());
            }
        }
    }

    /// Every record is as large as the largest outcome: an order or a payment held
    /// inline would make each one several hundred bytes, held for a day; so would a
    /// payment's reference (two ids, a time and a version), which is boxed.
    #[test]
    fn an_outcome_is_no_larger_than_a_few_words() {
        assert!(std::mem::size_of::<IdempotentOutcome>() <= 32);
        assert!(std::mem::size_of::<IdempotencyRecord>() <= 80);
    }
}
