//! How the engine's values become storage rows: the versioned envelope around rkyv,
//! the column families, the meta rows (materialized LSN, named counters, log
//! consumers) and the format check that upgrades an older directory or refuses a newer
//! one. Recovery itself is in `recovery`.

use emporium_storage::{Store, WriteBatch, CF_META};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::apply::Row;
use crate::error::{EngineError, Result};
use crate::event::LogEntry;
use crate::state::{COUNTERS, COUNTER_NAMES};

/// The version of the rows and log payloads this build writes. Every column family
/// records it in `meta`, and every row and log payload carries it in its envelope. A
/// directory of version 1 (no envelope) is upgraded in place on open; a newer one is
/// refused.
pub const ENGINE_FORMAT_VERSION: u32 = 2;

/// The first bytes of every enveloped value: a tag byte and the format version (one
/// byte; a format past 255 would bring a wider envelope, told apart by the tag).
const ENVELOPE_TAG: u8 = 0xE5;
const ENVELOPE_BYTES: usize = 2;

pub(crate) const CF_PRODUCTS: &str = "products";
pub(crate) const CF_CATEGORIES: &str = "categories";
pub(crate) const CF_STOCK: &str = "stock";
pub(crate) const CF_CARTS: &str = "carts";
pub(crate) const CF_ORDERS: &str = "orders";
pub(crate) const CF_CUSTOMERS: &str = "customers";
pub(crate) const CF_IDEMPOTENCY: &str = "idempotency";
pub(crate) const CF_API_CLIENTS: &str = "api_clients";
pub(crate) const CF_REFRESH_TOKENS: &str = "refresh_tokens";
pub(crate) const CF_SIGNING_KEYS: &str = "signing_keys";

/// The entity column families, besides the storage crate's `log` and `meta`.
pub(crate) const ENTITY_CFS: [&str; 10] = [
    CF_PRODUCTS,
    CF_CATEGORIES,
    CF_STOCK,
    CF_CARTS,
    CF_ORDERS,
    CF_CUSTOMERS,
    CF_IDEMPOTENCY,
    CF_API_CLIENTS,
    CF_REFRESH_TOKENS,
    CF_SIGNING_KEYS,
];

/// The LSN the entity rows reflect: recovery replays the log after it.
const META_MATERIALIZED_LSN: &[u8] = b"materialized_lsn";
const META_COUNTER_PREFIX: &str = "counter/";
pub(crate) const META_CONSUMER_PREFIX: &str = "consumer/";
/// Version 1 kept the last LSN and the counters (a positional array) here.
const META_V1_LAST_LSN: &[u8] = b"last_lsn";
const META_V1_COUNTERS: &[u8] = b"counters";

/// Decodes a format-1 row as its column family's type (format 1 wrote today's types).
fn check_v1_row(cf: &str, bytes: &[u8]) -> Result<()> {
    use crate::accounts::{ApiClient, RefreshToken, SigningKey};
    use crate::model::*;
    let what = format!("format-1 row of {cf}");
    match cf {
        CF_PRODUCTS => decode_bare::<Product>(bytes, &what).map(drop),
        CF_CATEGORIES => decode_bare::<Category>(bytes, &what).map(drop),
        CF_STOCK => decode_bare::<StockLevels>(bytes, &what).map(drop),
        CF_CARTS => decode_bare::<Cart>(bytes, &what).map(drop),
        CF_ORDERS => decode_bare::<Order>(bytes, &what).map(drop),
        CF_CUSTOMERS => decode_bare::<Customer>(bytes, &what).map(drop),
        CF_IDEMPOTENCY => decode_bare::<IdempotencyRecord>(bytes, &what).map(drop),
        CF_API_CLIENTS => decode_bare::<ApiClient>(bytes, &what).map(drop),
        CF_REFRESH_TOKENS => decode_bare::<RefreshToken>(bytes, &what).map(drop),
        CF_SIGNING_KEYS => decode_bare::<SigningKey>(bytes, &what).map(drop),
        other => Err(EngineError::IncompatibleData(format!("unknown column family {other}"))),
    }
}

fn format_key(cf: &str) -> Vec<u8> {
    format!("format/{cf}").into_bytes()
}

fn envelope(capacity: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ENVELOPE_BYTES + capacity);
    bytes.push(ENVELOPE_TAG);
    bytes.push(u8::try_from(ENGINE_FORMAT_VERSION).expect("the format version fits a byte"));
    bytes
}

/// Wraps bytes in the current envelope.
fn wrap(payload: &[u8]) -> Vec<u8> {
    let mut bytes = envelope(payload.len());
    bytes.extend_from_slice(payload);
    bytes
}

pub(crate) fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
{
    let archived = rkyv::to_bytes::<RkyvError>(value).expect("in-memory values always serialize");
    wrap(&archived)
}

/// The payload inside an envelope, after checking its version.
fn unwrap<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8]> {
    if bytes.len() < ENVELOPE_BYTES || bytes[0] != ENVELOPE_TAG {
        return Err(EngineError::IncompatibleData(format!("{what} has no format envelope")));
    }
    let version = u32::from(bytes[1]);
    if version != ENGINE_FORMAT_VERSION {
        return Err(EngineError::IncompatibleData(format!(
            "{what} has format version {version}; this build reads version \
             {ENGINE_FORMAT_VERSION}"
        )));
    }
    Ok(&bytes[ENVELOPE_BYTES..])
}

pub(crate) fn decode<T>(bytes: &[u8], what: &str) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, RkyvError>>
        + rkyv::Deserialize<T, HighDeserializer<RkyvError>>,
{
    decode_bare(unwrap(bytes, what)?, what)
}

/// Decodes rkyv bytes without an envelope (version 1 rows, and payloads unwrapped).
pub(crate) fn decode_bare<T>(bytes: &[u8], what: &str) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, RkyvError>>
        + rkyv::Deserialize<T, HighDeserializer<RkyvError>>,
{
    // Rows come back from the store at any alignment; rkyv reads aligned bytes.
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, RkyvError>(&aligned)
        .map_err(|e| EngineError::IncompatibleData(format!("cannot decode {what}: {e}")))
}

/// Where a row is stored: its column family and key. Carts and orders are keyed by
/// their sequence, not their random ids, so new rows append instead of landing at random
/// places.
pub(crate) fn row_key(row: &Row) -> (&'static str, Vec<u8>) {
    let text = |s: &str| s.as_bytes().to_vec();
    match row {
        Row::Product(p) => (CF_PRODUCTS, text(p.id.as_str())),
        Row::Category(c) => (CF_CATEGORIES, text(c.id.as_str())),
        Row::CategoryDeleted(id) => (CF_CATEGORIES, text(id.as_str())),
        Row::Stock(s) => (CF_STOCK, text(s.sku.as_str())),
        Row::Cart(c) => (CF_CARTS, c.seq.to_be_bytes().to_vec()),
        Row::Order(o) => (CF_ORDERS, o.seq.to_be_bytes().to_vec()),
        Row::Customer(c) => (CF_CUSTOMERS, text(c.id.as_str())),
        Row::Idempotency(r) => (CF_IDEMPOTENCY, text(&r.key)),
        Row::IdempotencyDeleted(key) => (CF_IDEMPOTENCY, text(key)),
        Row::ApiClient(c) => (CF_API_CLIENTS, text(c.id.as_str())),
        Row::RefreshToken(t) => (CF_REFRESH_TOKENS, text(&t.hash)),
        Row::RefreshTokenDeleted(hash) => (CF_REFRESH_TOKENS, text(hash)),
        Row::SigningKey(k) => (CF_SIGNING_KEYS, text(&k.kid)),
    }
}

/// A row's stored value, or `None` when the row is deleted.
fn row_value(row: &Row) -> Option<Vec<u8>> {
    Some(match row {
        Row::Product(p) => encode(&**p),
        Row::Category(c) => encode(&**c),
        Row::Stock(s) => encode(s),
        Row::Cart(c) => encode(&**c),
        Row::Order(o) => encode(&**o),
        Row::Customer(c) => encode(&**c),
        Row::Idempotency(r) => encode(&**r),
        Row::ApiClient(c) => encode(&**c),
        Row::RefreshToken(t) => encode(&**t),
        Row::SigningKey(k) => encode(&**k),
        Row::CategoryDeleted(_) | Row::IdempotencyDeleted(_) | Row::RefreshTokenDeleted(_) => {
            return None
        }
    })
}

/// Adds a row's persisted form (or its deletion) under `key` to `batch`.
pub(crate) fn put_row(batch: &mut WriteBatch, (cf, key): (&'static str, Vec<u8>), row: &Row) {
    match row_value(row) {
        Some(value) => batch.put_owned(cf, key, value),
        None => batch.delete(cf, &key),
    }
}

/// Records in `batch` that the rows reflect the log up to `lsn`, with the counters of
/// that instant, each under its name.
pub(crate) fn put_materialized(batch: &mut WriteBatch, lsn: u64, counters: [u64; COUNTERS]) {
    batch.put(CF_META, META_MATERIALIZED_LSN, &lsn.to_le_bytes());
    for (name, value) in COUNTER_NAMES.iter().zip(counters) {
        batch.put_owned(
            CF_META,
            format!("{META_COUNTER_PREFIX}{name}").into_bytes(),
            value.to_le_bytes().to_vec(),
        );
    }
}

/// The LSN the rows reflect, and the counters of that instant (by name; a counter
/// without a row is 0).
pub(crate) fn read_materialized(store: &Store) -> Result<(u64, [u64; COUNTERS])> {
    let lsn = match store.get(CF_META, META_MATERIALIZED_LSN)? {
        Some(bytes) => read_u64(&bytes, "materialized LSN")?,
        None => 0,
    };
    let mut counters = [0; COUNTERS];
    for (name, value) in COUNTER_NAMES.iter().zip(counters.iter_mut()) {
        if let Some(bytes) =
            store.get(CF_META, format!("{META_COUNTER_PREFIX}{name}").as_bytes())?
        {
            *value = read_u64(&bytes, name)?;
        }
    }
    Ok((lsn, counters))
}

pub(crate) fn read_u64(bytes: &[u8], what: &str) -> Result<u64> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| EngineError::IncompatibleData(format!("the {what} row is malformed")))?;
    Ok(u64::from_le_bytes(bytes))
}

/// A log record holds one or more consecutive entries (a commit group writes one record,
/// or a few when it is large): the envelope, then per entry its length (LEB128) and its
/// rkyv bytes. It is stored under the LSN of its last entry, so the first record at or
/// after an LSN is the one that holds it. One record per group means one WAL record and
/// one memtable insert per sync instead of one per command.
pub(crate) const LOG_RECORD_BYTES_TARGET: usize = 1 << 20;

/// An empty log record's payload, ready for [`push_log_entry`].
pub(crate) fn log_record_start() -> Vec<u8> {
    envelope(4096)
}

/// Appends one entry to a log record's payload.
pub(crate) fn push_log_entry(payload: &mut Vec<u8>, entry: &LogEntry) {
    let bytes = rkyv::to_bytes::<RkyvError>(entry).expect("in-memory values always serialize");
    let mut len = bytes.len();
    while len >= 0x80 {
        payload.push((len as u8) | 0x80);
        len >>= 7;
    }
    payload.push(len as u8);
    payload.extend_from_slice(&bytes);
}

/// Decodes a log record's payload: its entries, in LSN order.
pub fn decode_log(payload: &[u8]) -> Result<Vec<LogEntry>> {
    let malformed = |why: &str| EngineError::IncompatibleData(format!("log record: {why}"));
    let mut rest = unwrap(payload, "log record")?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (len, body) = read_varint(rest).ok_or_else(|| malformed("a bad length"))?;
        let (entry, after) = body.split_at_checked(len).ok_or_else(|| malformed("a cut entry"))?;
        entries.push(decode_bare(entry, "log entry")?);
        rest = after;
    }
    if entries.is_empty() {
        return Err(malformed("no entry"));
    }
    Ok(entries)
}

/// A stored record's entries, checked against its key: consecutive LSNs ending at the
/// key (a record that disagrees would make readers loop or skip).
pub(crate) fn record_entries(record: &emporium_storage::LogRecord) -> Result<Vec<LogEntry>> {
    let entries = decode_log(&record.payload)?;
    let consecutive = entries.windows(2).all(|w| w[1].lsn.0 == w[0].lsn.0 + 1);
    if !consecutive || entries.last().map(|e| e.lsn.0) != Some(record.lsn) {
        return Err(EngineError::IncompatibleData(format!(
            "log record {} does not hold consecutive entries ending at its LSN",
            record.lsn
        )));
    }
    Ok(entries)
}

/// A LEB128 length (at most 4 bytes: entries are far below 256 MiB) and what follows.
fn read_varint(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Visits the log's entries from LSN `from` on, in order, until `visit` answers
/// `false`. Records are keyed by their last entry's LSN, so the first at or after `from`
/// holds it (after entries before it, skipped). The log is contiguous: when the entry
/// after `next - 1` is not `next`, the walk stops with `gap(next, found)`.
pub(crate) fn walk_log(
    store: &Store,
    from: u64,
    gap: impl Fn(u64, u64) -> EngineError,
    visit: &mut dyn FnMut(LogEntry) -> Result<bool>,
) -> Result<()> {
    /// Records read per step.
    const RECORDS_PER_READ: usize = 16;
    let mut next = from;
    loop {
        let records = store.read_log(next, RECORDS_PER_READ)?;
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            for entry in record_entries(&record)? {
                if entry.lsn.0 < next {
                    continue;
                }
                if entry.lsn.0 != next {
                    return Err(gap(next, entry.lsn.0));
                }
                next += 1;
                if !visit(entry)? {
                    return Ok(());
                }
            }
        }
    }
}

/// The LSN of the first entry the log holds, if any.
pub(crate) fn first_log_lsn(store: &Store) -> Result<Option<u64>> {
    match store.read_log(0, 1)?.first() {
        Some(record) => Ok(record_entries(record)?.first().map(|e| e.lsn.0)),
        None => Ok(None),
    }
}

/// Checks every column family's format version: a new directory is stamped with this
/// build's, a version-1 directory is upgraded in place, anything else is refused.
pub(crate) fn check_format(store: &Store) -> Result<()> {
    let mut found = Vec::new();
    for cf in ENTITY_CFS.iter().chain(&[emporium_storage::CF_LOG]) {
        let version = match store.get(CF_META, &format_key(cf))? {
            Some(bytes) => {
                Some(bytes.as_slice().try_into().map(u32::from_le_bytes).map_err(|_| {
                    EngineError::IncompatibleData(format!("format row of {cf} is malformed"))
                })?)
            }
            None => None,
        };
        found.push((*cf, version));
    }
    if let Some((cf, Some(newer))) =
        found.iter().find(|(_, v)| v.is_some_and(|v| v > ENGINE_FORMAT_VERSION))
    {
        return Err(EngineError::IncompatibleData(format!(
            "column family {cf} has format version {newer}, written by a newer build; this \
             build reads versions up to {ENGINE_FORMAT_VERSION} and refuses rather than \
             misreads it"
        )));
    }
    if found.iter().any(|(_, v)| *v == Some(1)) {
        if found.iter().any(|(_, v)| v.is_some_and(|v| v != 1)) {
            return Err(EngineError::IncompatibleData(
                "column families disagree on their format version".into(),
            ));
        }
        return upgrade_v1(store);
    }
    let mut missing = WriteBatch::default();
    for (cf, version) in found {
        if version.is_none() {
            missing.put(CF_META, &format_key(cf), &ENGINE_FORMAT_VERSION.to_le_bytes());
        }
    }
    if !missing.is_empty() {
        store.write(&missing, true)?;
    }
    Ok(())
}

/// Version 1 stored bare rkyv values (the entity types are unchanged since), kept every
/// row in step with the log (rows and log records were one batch), and stored the last
/// LSN and a positional counter array. The upgrade wraps every row in the envelope,
/// records the rows as materialized at the last LSN, names the counters, drops the
/// format-1 log (see below) and stamps version 2: one synced, atomic batch, so a crash
/// leaves either the old directory or the new one.
fn upgrade_v1(store: &Store) -> Result<()> {
    let started = std::time::Instant::now();
    let mut batch = WriteBatch::default();
    let mut rows = 0usize;
    let mut failure = None;
    for cf in ENTITY_CFS {
        store.scan(cf, &mut |key, value| match check_v1_row(cf, value) {
            Ok(()) => {
                batch.put_owned(cf, key.to_vec(), wrap(value));
                rows += 1;
                true
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        })?;
        // Checked before anything is stamped: a row that does not decode leaves the
        // directory as format 1, refused with the reason.
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    // Format-1 log payloads hold format-1 events (an order placement carried the whole
    // order). The rows hold everything the log did, so the upgrade drops the log
    // instead of translating it: log readers (none existed in format 1) start after it.
    let first = store.first_lsn()?.unwrap_or(0);
    let records = store.last_lsn()?.map_or(0, |last| last + 1 - first);
    let last_lsn = match store.get(CF_META, META_V1_LAST_LSN)? {
        Some(bytes) => read_u64(&bytes, "version-1 last LSN")?,
        None => 0,
    };
    if store.last_lsn()?.unwrap_or(0) != last_lsn {
        return Err(EngineError::IncompatibleData(format!(
            "version-1 rows are at LSN {last_lsn} but the log ends at {}",
            store.last_lsn()?.unwrap_or(0)
        )));
    }
    let mut counters = [0; COUNTERS];
    if let Some(bytes) = store.get(CF_META, META_V1_COUNTERS)? {
        if bytes.len() != 8 * COUNTERS {
            return Err(EngineError::IncompatibleData("version-1 counters are malformed".into()));
        }
        // Version 1's positional order is today's `COUNTER_NAMES` order.
        for (value, chunk) in counters.iter_mut().zip(bytes.chunks_exact(8)) {
            *value = read_u64(chunk, "version-1 counter")?;
        }
    }
    put_materialized(&mut batch, last_lsn, counters);
    batch.trim_log(first, last_lsn + 1);
    batch.delete(CF_META, META_V1_LAST_LSN);
    batch.delete(CF_META, META_V1_COUNTERS);
    for cf in ENTITY_CFS.iter().chain(&[emporium_storage::CF_LOG]) {
        batch.put(CF_META, &format_key(cf), &ENGINE_FORMAT_VERSION.to_le_bytes());
    }
    store.write(&batch, true)?;
    tracing::info!(
        rows,
        records,
        lsn = last_lsn,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "upgraded the data directory from format 1 to 2"
    );
    Ok(())
}
