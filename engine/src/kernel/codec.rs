//! How the engine's values become storage rows: the versioned envelope around rkyv,
//! the column families, the meta rows (materialized LSN, named counters, log
//! consumers) and the format check that upgrades an older directory or refuses a newer
//! one. Recovery itself is in `recovery`.

use emporium_storage::{Store, WriteBatch, CF_META};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::domains::{LogEntry, State, DOMAINS};
use crate::error::{EngineError, Result};
use crate::kernel::legacy::LogEntryV2;
use crate::kernel::table::Row;

/// The format of the data directory this build writes: the newest of its row and log
/// formats. Every column family records its own version in `meta`, and every row and
/// log payload carries it in its envelope. Older directories (format 1: no envelope;
/// format 2: the flat event enum in the log; format 3: the log before the flash-sale
/// events; format 4: before refunds; format 5: before promotions; format 6: before
/// returns; format 7: before payment calls and the shipping domain; format 8: before
/// stock locations; format 9: before reviews; format 10: before webhooks; format 11: before notifications; format 12: before the
/// carts' `ClosedCartsDropped`; rows of format 2: before the `Placed` idempotency outcome; rows of
/// format 3: before the refunded order statuses; rows of format 4: before payment calls
/// and the shipping tables; rows of format 5: before the stock-location tables; rows of
/// format 6: before the reviews' tables; rows of format 7: before the webhooks' tables; rows of format 8: before the notifications' tables;
/// rows of format 9: idempotency rows before `IdempotencyRow`) are upgraded in place on
/// open; a newer one is refused.
pub const ENGINE_FORMAT_VERSION: u32 = 13;

/// The version of entity rows (format 3: the idempotency outcome `Placed` appended;
/// format 4: the order statuses `partially_refunded` and `refunded` appended, and the
/// `refunds` table; format 5: the idempotency outcome `Call` appended, and the
/// `payment_calls` table and the shipping domain's tables; format 6: the stock-location
/// tables `stock_locations`, `location_stock`, `stock_allocations` and
/// `stock_shipments`; format 7: the reviews' tables; format 8: the webhooks' tables
/// `webhooks` and `webhook_dead_letters`; format 9: the notifications' tables
/// `notification_templates`, `notification_preferences` and `notifications`; format 10:
/// idempotency rows hold an `IdempotencyRow`, the outcome's order and payment out of
/// line). Bumped whenever a persisted type grows or a table is added, like the log's.
const ROW_FORMAT: u8 = 10;
/// The first row format whose idempotency rows are `IdempotencyRow`s: older ones hold an
/// `IdempotencyRecord`, read as it is.
pub(crate) const ROW_FORMAT_IDEMPOTENCY_ROW: u8 = 10;
/// Rows from this format on have the same layout as today's (a type only grew since):
/// read as they are.
const ROW_FORMAT_OLDEST_AS_IS: u8 = 2;
/// The version of log payloads (format 3: events nested by domain; format 4: the
/// flash-sale domain's events appended; format 5: the refund event appended; format
/// 6: the promotions domain's events appended; format 7: the returns domain's;
/// format 8: the payment-call events appended to the payments', and the shipping
/// domain's; format 9: the stock-location events appended to the inventory's; format
/// 10: the reviews domain's; format 11: the webhooks domain's; format 12: the
/// notifications domain's; format 13: the carts' `ClosedCartsDropped`). Bumped
/// whenever a domain's event enum grows, so a build that does not know the new events
/// refuses the log by its version rather than failing on the first new event.
const LOG_FORMAT: u8 = 13;
/// Records from this format on hold entries of today's layout (the event enum only
/// grew since): read as they are.
const LOG_FORMAT_OLDEST_AS_IS: u8 = 3;

/// The first bytes of every enveloped value: a tag byte and the format version (one
/// byte; a format past 255 would bring a wider envelope, told apart by the tag).
const ENVELOPE_TAG: u8 = 0xE5;
const ENVELOPE_BYTES: usize = 2;

/// The LSN the entity rows reflect: recovery replays the log after it.
const META_MATERIALIZED_LSN: &[u8] = b"materialized_lsn";
const META_COUNTER_PREFIX: &str = "counter/";
pub(crate) const META_CONSUMER_PREFIX: &str = "consumer/";
/// Version 1 kept the last LSN and the counters (a positional array) here.
const META_V1_LAST_LSN: &[u8] = b"last_lsn";
const META_V1_COUNTERS: &[u8] = b"counters";

/// Every domain's tables' column families, besides the storage crate's `log` and
/// `meta`.
pub(crate) fn entity_cfs() -> Vec<&'static str> {
    DOMAINS.iter().flat_map(|d| d.tables.iter().map(|t| t.name)).collect()
}

/// The column families of the tables kept in skip-list memtables ([`Table::skip_list`]).
///
/// [`Table::skip_list`]: crate::kernel::table::Table::skip_list
pub(crate) fn skip_list_cfs() -> Vec<&'static str> {
    DOMAINS.iter().flat_map(|d| d.tables.iter().filter(|t| t.skip_list).map(|t| t.name)).collect()
}

/// The version each column family must have: rows and log moved separately.
fn expected_version(cf: &str) -> u32 {
    if cf == emporium_storage::CF_LOG {
        u32::from(LOG_FORMAT)
    } else {
        u32::from(ROW_FORMAT)
    }
}

/// Whether a column family of an older `version` is read as it is (then restamped).
fn readable_as_is(cf: &str, version: u32) -> bool {
    let oldest = if cf == emporium_storage::CF_LOG {
        LOG_FORMAT_OLDEST_AS_IS
    } else {
        ROW_FORMAT_OLDEST_AS_IS
    };
    (u32::from(oldest)..expected_version(cf)).contains(&version)
}

/// The version a value's envelope must carry to be read: its own when this build reads
/// that format as it is (anything else fails the envelope check with the current one).
fn as_is_version(bytes: &[u8], oldest: u8, current: u8) -> u8 {
    match bytes.get(1) {
        Some(&version) if (oldest..current).contains(&version) => version,
        _ => current,
    }
}

fn format_key(cf: &str) -> Vec<u8> {
    format!("format/{cf}").into_bytes()
}

fn envelope(capacity: usize, version: u8) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ENVELOPE_BYTES + capacity);
    bytes.push(ENVELOPE_TAG);
    bytes.push(version);
    bytes
}

/// Wraps row bytes in the envelope of row format `version`.
fn wrap(payload: &[u8], version: u8) -> Vec<u8> {
    let mut bytes = envelope(payload.len(), version);
    bytes.extend_from_slice(payload);
    bytes
}

/// The row format a stored row's envelope names (`None` without an envelope).
pub(crate) fn row_version(bytes: &[u8]) -> Option<u8> {
    (bytes.len() >= ENVELOPE_BYTES && bytes[0] == ENVELOPE_TAG).then(|| bytes[1])
}

/// Appends `value` as a row (envelope, then its rkyv bytes) to `out`.
pub(crate) fn encode_into<T>(value: &T, out: &mut Vec<u8>)
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
{
    with_archived(value, |archived| {
        out.reserve(ENVELOPE_BYTES + archived.len());
        out.push(ENVELOPE_TAG);
        out.push(ROW_FORMAT);
        out.extend_from_slice(archived);
    })
}

/// Serialises `value` and hands its rkyv bytes to `take`.
///
/// rkyv aligns what it writes to the start of its own buffer, so the value is
/// serialised into a buffer kept by the thread for the next value (the materializer
/// writes rows, and the committer log entries, by the hundred thousand), not into a new
/// buffer grown step by step for each, and `take` copies the bytes where they go.
fn with_archived<T, R>(value: &T, take: impl FnOnce(&[u8]) -> R) -> R
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
{
    thread_local! {
        static SCRATCH: std::cell::Cell<AlignedVec> = std::cell::Cell::new(AlignedVec::new());
    }
    let mut scratch = SCRATCH.take();
    scratch.clear();
    let archived = rkyv::api::high::to_bytes_in::<_, RkyvError>(value, scratch)
        .expect("in-memory values always serialize");
    let taken = take(&archived);
    // A rare large value does not keep its buffer's size for the rest of the thread's life.
    if archived.capacity() <= SCRATCH_BYTES_KEPT {
        SCRATCH.set(archived);
    }
    taken
}

/// The largest serialisation buffer a thread keeps between rows.
const SCRATCH_BYTES_KEPT: usize = 64 << 10;

/// The payload inside an envelope, after checking its version.
fn unwrap<'a>(bytes: &'a [u8], what: &str, expected: u8) -> Result<&'a [u8]> {
    if bytes.len() < ENVELOPE_BYTES || bytes[0] != ENVELOPE_TAG {
        return Err(EngineError::IncompatibleData(format!("{what} has no format envelope")));
    }
    let version = bytes[1];
    if version != expected {
        return Err(EngineError::IncompatibleData(format!(
            "{what} has format version {version}; this build reads version {expected}"
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
    let version = as_is_version(bytes, ROW_FORMAT_OLDEST_AS_IS, ROW_FORMAT);
    decode_bare(unwrap(bytes, what, version)?, what)
}

/// Decodes rkyv bytes without an envelope (version 1 rows, and payloads unwrapped).
pub(crate) fn decode_bare<T>(bytes: &[u8], what: &str) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, RkyvError>>
        + rkyv::Deserialize<T, HighDeserializer<RkyvError>>,
{
    thread_local! {
        /// Rows come back from the store at any alignment and rkyv reads aligned bytes:
        /// each thread copies them into one buffer it keeps (a decode allocates nothing
        /// of its own but the value it returns).
        static ALIGNED: std::cell::RefCell<AlignedVec<16>> = std::cell::RefCell::new(AlignedVec::new());
    }
    /// A buffer that grew past this for one large value is not kept.
    const KEPT_BYTES_MAX: usize = 1 << 20;
    ALIGNED.with(|cell| {
        // A decode within a decode (none today) would find the buffer borrowed: it
        // gets a buffer of its own.
        let mut own = AlignedVec::<16>::new();
        let mut kept = cell.try_borrow_mut();
        let aligned = match kept.as_deref_mut() {
            Ok(buffer) => buffer,
            Err(_) => &mut own,
        };
        aligned.clear();
        aligned.extend_from_slice(bytes);
        let decoded = rkyv::from_bytes::<T, RkyvError>(aligned)
            .map_err(|e| EngineError::IncompatibleData(format!("cannot decode {what}: {e}")));
        if aligned.capacity() > KEPT_BYTES_MAX {
            *aligned = AlignedVec::new();
        }
        decoded
    })
}

/// Adds a row's persisted form (or its deletion) under `key` to `batch`.
pub(crate) fn put_row(batch: &mut WriteBatch, (cf, key): (&'static str, Vec<u8>), row: &Row) {
    match row {
        Row::Put(value) => batch.put_with(cf, &key, |out| value.encode_into(out)),
        Row::Delete { .. } => batch.delete(cf, &key),
    }
}

/// Records in `batch` that the rows reflect the log up to `lsn`, with the values of
/// that instant of the counters given (those that moved since the last write), each
/// under its name.
pub(crate) fn put_materialized(batch: &mut WriteBatch, lsn: u64, counters: &[(&str, u64)]) {
    batch.put(CF_META, META_MATERIALIZED_LSN, &lsn.to_le_bytes());
    for (name, value) in counters {
        batch.put_owned(
            CF_META,
            format!("{META_COUNTER_PREFIX}{name}").into_bytes(),
            value.to_le_bytes().to_vec(),
        );
    }
}

/// The LSN the rows reflect; sets every registered counter to its value of that instant
/// (a counter without a row is 0: it is new).
pub(crate) fn read_materialized(store: &Store, state: &State) -> Result<u64> {
    let lsn = match store.get(CF_META, META_MATERIALIZED_LSN)? {
        Some(bytes) => read_u64(&bytes, "materialized LSN")?,
        None => 0,
    };
    for counter in state.counters() {
        let key = format!("{META_COUNTER_PREFIX}{}", counter.name);
        if let Some(bytes) = store.get(CF_META, key.as_bytes())? {
            counter.set(read_u64(&bytes, counter.name)?);
        }
    }
    Ok(lsn)
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
    envelope(4096, LOG_FORMAT)
}

/// Appends one entry to a log record's payload.
pub(crate) fn push_log_entry(payload: &mut Vec<u8>, entry: &LogEntry) {
    with_archived(entry, |bytes| {
        let mut len = bytes.len();
        while len >= 0x80 {
            payload.push((len as u8) | 0x80);
            len >>= 7;
        }
        payload.push(len as u8);
        payload.extend_from_slice(bytes);
    })
}

/// Decodes a log record's payload: its entries, in LSN order.
pub fn decode_log(payload: &[u8]) -> Result<Vec<LogEntry>> {
    let version = as_is_version(payload, LOG_FORMAT_OLDEST_AS_IS, LOG_FORMAT);
    decode_entries(payload, version, |entry| decode_bare::<LogEntry>(entry, "log entry"))
}

/// The entries of a record of format `version`, each decoded by `decode`.
fn decode_entries<T>(
    payload: &[u8],
    version: u8,
    decode: impl Fn(&[u8]) -> Result<T>,
) -> Result<Vec<T>> {
    let malformed = |why: &str| EngineError::IncompatibleData(format!("log record: {why}"));
    let mut rest = unwrap(payload, "log record", version)?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (len, body) = read_varint(rest).ok_or_else(|| malformed("a bad length"))?;
        let (entry, after) = body.split_at_checked(len).ok_or_else(|| malformed("a cut entry"))?;
        entries.push(decode(entry)?);
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

/// Visits every row of `cf` in key order; the first error stops the scan and is
/// returned.
pub(crate) fn scan(
    store: &Store,
    cf: &str,
    visit: &mut impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut failure = None;
    store.scan(cf, &mut |key, value| match visit(key, value) {
        Ok(()) => true,
        Err(e) => {
            failure = Some(e);
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

/// Checks every column family's format version: a new directory is stamped with this
/// build's, a format-1 directory is upgraded in place (rows and log), a format-2 log is
/// rewritten in format 3, anything newer is refused.
pub(crate) fn check_format(store: &Store) -> Result<()> {
    let mut found = Vec::new();
    for cf in entity_cfs().into_iter().chain([emporium_storage::CF_LOG]) {
        let version = match store.get(CF_META, &format_key(cf))? {
            Some(bytes) => {
                Some(bytes.as_slice().try_into().map(u32::from_le_bytes).map_err(|_| {
                    EngineError::IncompatibleData(format!("format row of {cf} is malformed"))
                })?)
            }
            None => None,
        };
        found.push((cf, version));
    }
    if let Some((cf, Some(newer))) =
        found.iter().find(|(cf, v)| v.is_some_and(|v| v > expected_version(cf)))
    {
        return Err(EngineError::IncompatibleData(format!(
            "column family {cf} has format version {newer}, written by a newer build; this \
             build reads versions up to {} and refuses rather than misreads it",
            expected_version(cf)
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
    if found.iter().any(|(cf, v)| *cf == emporium_storage::CF_LOG && *v == Some(2)) {
        return upgrade_log_v2(store);
    }
    let mut missing = WriteBatch::default();
    for (cf, version) in found {
        // A new column family is stamped; an older log or rows of a layout read as it
        // is keep each record's and row's own version and are stamped, so older builds
        // refuse them from now on.
        if version.is_none() || version.is_some_and(|v| readable_as_is(cf, v)) {
            missing.put(CF_META, &format_key(cf), &expected_version(cf).to_le_bytes());
        }
    }
    if !missing.is_empty() {
        store.write(&missing, true)?;
    }
    Ok(())
}

/// Stamps every column family with this build's version.
fn stamp_all(batch: &mut WriteBatch) {
    for cf in entity_cfs().into_iter().chain([emporium_storage::CF_LOG]) {
        batch.put(CF_META, &format_key(cf), &expected_version(cf).to_le_bytes());
    }
}

/// Version 1 stored bare rkyv values (the entity types are unchanged since), kept every
/// row in step with the log (rows and log records were one batch), and stored the last
/// LSN and a positional counter array. The upgrade wraps every row in the envelope,
/// records the rows as materialized at the last LSN, names the counters, drops the
/// format-1 log (see below) and stamps the current versions: one synced, atomic batch,
/// so a crash leaves either the old directory or the new one.
fn upgrade_v1(store: &Store) -> Result<()> {
    /// Version 1's positional counter array, in its order.
    const V1_COUNTERS: [&str; 5] = ["product", "category", "customer", "order", "cart"];
    let started = std::time::Instant::now();
    let mut batch = WriteBatch::default();
    let mut rows = 0usize;
    for table in DOMAINS.iter().flat_map(|d| d.tables) {
        // Checked before anything is stamped: a row that does not decode leaves the
        // directory as format 1, refused with the reason.
        scan(store, table.name, &mut |key, value| {
            (table.check_v1)(value)?;
            // Format 1 wrote the types format 2 reads as they are: the rows are that.
            batch.put_owned(table.name, key.to_vec(), wrap(value, ROW_FORMAT_OLDEST_AS_IS));
            rows += 1;
            Ok(())
        })?;
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
    let mut counters = Vec::new();
    if let Some(bytes) = store.get(CF_META, META_V1_COUNTERS)? {
        if bytes.len() != 8 * V1_COUNTERS.len() {
            return Err(EngineError::IncompatibleData("version-1 counters are malformed".into()));
        }
        for (name, chunk) in V1_COUNTERS.iter().zip(bytes.chunks_exact(8)) {
            counters.push((*name, read_u64(chunk, "version-1 counter")?));
        }
    }
    put_materialized(&mut batch, last_lsn, &counters);
    batch.trim_log(first, last_lsn + 1);
    batch.delete(CF_META, META_V1_LAST_LSN);
    batch.delete(CF_META, META_V1_COUNTERS);
    stamp_all(&mut batch);
    store.write(&batch, true)?;
    tracing::info!(
        rows,
        records,
        lsn = last_lsn,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "upgraded the data directory from format 1 to {ENGINE_FORMAT_VERSION}"
    );
    Ok(())
}

/// Format 2 wrote the same rows but a flat event enum in the log. The log (the tail the
/// rows do not reflect yet, and what is kept for consumers) is rewritten record by
/// record in the current format under the same keys, and the log is stamped: one
/// synced, atomic batch.
fn upgrade_log_v2(store: &Store) -> Result<()> {
    let started = std::time::Instant::now();
    let mut batch = WriteBatch::default();
    let mut entries = 0usize;
    let mut from = 0;
    loop {
        let records = store.read_log(from, 64)?;
        let Some(last) = records.last() else { break };
        from = last.lsn + 1;
        for record in records {
            let old = decode_entries(&record.payload, 2, |entry| {
                decode_bare::<LogEntryV2>(entry, "format-2 log entry")
            })?;
            let mut payload = log_record_start();
            for entry in old {
                push_log_entry(&mut payload, &LogEntry::try_from(entry)?);
                entries += 1;
            }
            batch.append_log(record.lsn, &payload);
        }
    }
    stamp_all(&mut batch);
    store.write(&batch, true)?;
    tracing::info!(
        entries,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "upgraded the log from format 2 to {LOG_FORMAT}"
    );
    Ok(())
}
