//! Idempotency keys: a keyed request's outcome is recorded in the same log entry as its
//! effect, so a retry with the key gets the first outcome again (also after a crash),
//! and a different request with the same key is refused. Records are forgotten after
//! their time to live.

mod counts;
mod model;

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use crossbeam_skiplist::SkipSet;
use emporium_storage::Store;
use parking_lot::Mutex;
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
use counts::StoredCounts;

const IDEMPOTENCY: &str = "idempotency";
const IDEMPOTENCY_AGES: &str = "idempotency_ages";

// Stored as an `IdempotencyRow` (see there): the record without its outcome's padding.
impl Persist for IdempotencyRecord {
    fn table(&self) -> &'static str {
        IDEMPOTENCY
    }
    fn key(&self) -> Vec<u8> {
        self.key.as_bytes().to_vec()
    }
    fn encode_into(&self, out: &mut Vec<u8>) {
        codec::encode_into(&IdempotencyRow::from(self), out)
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
    /// What joins the scope and the key in [`Self::scoped`] (neither holds it).
    pub const SCOPE_END: char = '\u{0}';

    /// The key as stored: scope and key joined by [`Self::SCOPE_END`].
    pub fn scoped(&self) -> String {
        let mut scoped = String::with_capacity(self.scope.len() + 1 + self.key.len());
        scoped.push_str(&self.scope);
        scoped.push(IdempotencyKey::SCOPE_END);
        scoped.push_str(&self.key);
        scoped
    }
}

/// Idempotency records kept in memory by default once the store holds them (see
/// [`crate::EngineConfig::idempotency_records_in_memory`]): the most recently written,
/// so that a prompt retry is answered without a read. Older ones are read from the
/// store when their key comes again.
pub const IDEMPOTENCY_RECORDS_IN_MEMORY_DEFAULT: usize = 10_000;

/// The records. Each one is in memory until the materializer has written it; past the
/// configured number, the least recently written leave memory and are read from the
/// store when their key comes back (a retry, or a key reused with another request).
///
/// Every record also has an age row in the store (`idempotency_ages`, keyed by time
/// then key, written with the record's row), so the records out of memory are
/// forgotten in age order without their keys in memory. What stays in memory of a
/// record out of memory is a count under its key's hash (so that a fresh key, the
/// common case, is known to be new without a read), in a table of 8-byte slots made
/// for the records' cap ([`StoredCounts`]), against about 400 bytes for a record in
/// memory.
#[derive(Debug)]
pub(crate) struct Tables {
    /// The records in memory.
    pub(crate) records: Index<Arc<str>, Arc<IdempotencyRecord>>,
    /// The age entry of every record in memory, oldest first (those out of memory are
    /// in the store's age rows).
    pub(crate) by_age: SkipSet<ByAge>,
    /// How many records out of memory have each key hash ([`Tables::hash`]; its top 48
    /// bits). A count, not a key: two keys may share them, and the read settles which
    /// is there.
    stored: Mutex<StoredCounts>,
    /// How many records are out of memory: the sum of `stored`'s counts.
    stored_records: AtomicUsize,
    /// The age entry of the last record the sweep forgot that was older than the
    /// sweep's own millisecond. Every record at or before it was forgotten with it (the
    /// sweep takes the oldest first) and every record made since is younger, so the
    /// store's age rows up to it are deletions the materializer has not written yet,
    /// and a read of the oldest rows starts after it instead of stepping over them.
    forgotten_through: Mutex<Option<ByAge>>,
    /// No age row in the store is of an earlier time: the oldest the store held at
    /// open, lowered by every record made since with an earlier time (a wall clock set
    /// back between two runs). A read of the oldest rows starts at it, so it does not
    /// step over the rows of records forgotten before the open, whose deletions the
    /// store may keep until a compaction: before the first forget of a run (which
    /// sets `forgotten_through`) every tick read them all. `i64::MAX` while there is
    /// none (lowered by each age row an open reads), `i64::MIN` after an open that
    /// rebuilt them.
    ages_from: AtomicI64,
    /// Age rows read at open, to compare with the records read.
    ages_loaded: AtomicUsize,
    /// Keyed at random per process: clients choose the keys.
    hasher: std::hash::RandomState,
    /// Where records out of memory are; unset, every record stays in memory.
    store: OnceLock<Weak<Store>>,
    /// Written records kept in memory at most.
    in_memory_max: AtomicUsize,
    /// Record rows the materializer wrote, oldest first, each with the value written:
    /// a record leaves memory only while that value is still the one in memory.
    written: Mutex<VecDeque<Weak<dyn Persist>>>,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            records: Index::default(),
            by_age: SkipSet::new(),
            stored: Mutex::default(),
            stored_records: AtomicUsize::new(0),
            forgotten_through: Mutex::new(None),
            ages_from: AtomicI64::new(i64::MAX),
            ages_loaded: AtomicUsize::new(0),
            hasher: std::hash::RandomState::new(),
            store: OnceLock::new(),
            in_memory_max: AtomicUsize::new(usize::MAX),
            written: Mutex::new(VecDeque::new()),
        }
    }
}

/// A record's age entry: in [`Tables::by_age`] while the record is in memory, and as
/// its row in the store's age table. Ordered by `(created_at, key)`, as the rows' keys
/// are ([`ByAge::row_key`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ByAge {
    pub(crate) created_at: TimestampMs,
    /// Shared with the records' map's key: the entry in [`Tables::by_age`] and the row
    /// written for it are clones.
    pub(crate) key: Arc<str>,
}

impl ByAge {
    fn of(record: &IdempotencyRecord) -> ByAge {
        ByAge { created_at: record.created_at, key: record.key.as_str().into() }
    }

    /// The age row's key: the time, as big-endian bytes that sort as the signed times
    /// do, then the record's key.
    fn row_key(created_at: TimestampMs, key: &str) -> Vec<u8> {
        let mut row_key = Vec::with_capacity(8 + key.len());
        row_key.extend_from_slice(&((created_at as u64) ^ (1 << 63)).to_be_bytes());
        row_key.extend_from_slice(key.as_bytes());
        row_key
    }

    /// The entry an age row's key names, if it is one.
    fn from_row_key(row_key: &[u8]) -> Option<ByAge> {
        let (time, key) = row_key.split_first_chunk::<8>()?;
        let created_at = (u64::from_be_bytes(*time) ^ (1 << 63)) as TimestampMs;
        Some(ByAge { created_at, key: std::str::from_utf8(key).ok()?.into() })
    }
}

/// An age entry as its parts: what [`ByAge`] is ordered by, borrowed from an entry or
/// from a record, so a record's entry is found in [`Tables::by_age`] without making
/// one (which copies the key).
trait AgeKey {
    fn parts(&self) -> (TimestampMs, &str);
}

impl AgeKey for ByAge {
    fn parts(&self) -> (TimestampMs, &str) {
        (self.created_at, &self.key)
    }
}

impl AgeKey for IdempotencyRecord {
    fn parts(&self) -> (TimestampMs, &str) {
        (self.created_at, self.key.as_str())
    }
}

// Ordered as `ByAge` is (its derived order: time, then key), as `Borrow` requires.
impl<'a> std::borrow::Borrow<dyn AgeKey + 'a> for ByAge {
    fn borrow(&self) -> &(dyn AgeKey + 'a) {
        self
    }
}

impl PartialEq for dyn AgeKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn AgeKey + '_ {}

impl PartialOrd for dyn AgeKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn AgeKey + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

// The row's value is the time again, enveloped like every row.
impl Persist for ByAge {
    fn table(&self) -> &'static str {
        IDEMPOTENCY_AGES
    }
    fn key(&self) -> Vec<u8> {
        ByAge::row_key(self.created_at, &self.key)
    }
    fn encode_into(&self, out: &mut Vec<u8>) {
        codec::encode_into(&self.created_at, out)
    }
}

impl Tables {
    fn hash(&self, key: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    /// Whether a record out of memory may have this key.
    fn maybe_stored(&self, key: &str) -> bool {
        let hash = self.hash(key);
        self.stored.lock().contains(hash)
    }

    fn count_stored(&self, key: &str) {
        let hash = self.hash(key);
        self.stored.lock().add(hash);
        self.stored_records.fetch_add(1, Ordering::Relaxed);
    }

    fn uncount_stored(&self, key: &str) {
        let hash = self.hash(key);
        if self.stored.lock().remove(hash) {
            self.stored_records.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many records there are, in memory or out of it.
    fn count(&self) -> usize {
        self.records.len() + self.stored_records.load(Ordering::Relaxed)
    }

    fn store(&self) -> Option<Arc<Store>> {
        self.store.get().and_then(Weak::upgrade)
    }

    /// The record of `key`: from memory, or read from the store if it left memory.
    fn find(&self, key: &str) -> Result<Option<Arc<IdempotencyRecord>>> {
        if let Some(record) = self.records.get(key) {
            return Ok(Some(record));
        }
        // A record leaves memory after its count is made, so one that is not in
        // memory now is counted by now.
        if !self.maybe_stored(key) {
            return Ok(None);
        }
        self.read_stored(key)
    }

    /// The record of `key` in the store, if the store holds one under that key (a
    /// record of another key with the same hash is not it).
    fn read_stored(&self, key: &str) -> Result<Option<Arc<IdempotencyRecord>>> {
        let Some(store) = self.store() else { return Ok(None) };
        let Some(bytes) = store.get(IDEMPOTENCY, key.as_bytes())? else { return Ok(None) };
        let record = decode_record(&bytes)?;
        Ok((record.key == key).then(|| Arc::new(record)))
    }

    /// Visits the store's age rows that belong to a record, oldest first, until `visit`
    /// says stop: those of records out of memory, and of records in memory that are
    /// written (which [`Tables::by_age`] has too). Passed over are the rows of records
    /// forgotten or replaced whose deletions the materializer has not written yet: up
    /// to `forgotten_through` without a look, and past it a row whose key has a record
    /// of another time in memory, or none in memory and none counted out of it.
    fn stored_ages(&self, visit: &mut dyn FnMut(ByAge) -> bool) -> Result<()> {
        let Some(store) = self.store() else { return Ok(()) };
        let through = self.forgotten_through.lock().clone();
        let from = match &through {
            // The first key after the entry's own.
            Some(entry) => {
                let mut from = ByAge::row_key(entry.created_at, &entry.key);
                from.push(0);
                from
            }
            None => Vec::new(),
        };
        // The first key of the earliest time any row can have, if that is further on.
        let from = from.max(ByAge::row_key(self.ages_from.load(Ordering::Acquire), ""));
        store.scan_from(IDEMPOTENCY_AGES, &from, &mut |row_key, _| {
            let Some(entry) = ByAge::from_row_key(row_key) else { return true };
            let current = match self.records.get(&*entry.key) {
                Some(record) => record.created_at == entry.created_at,
                None => self.maybe_stored(&entry.key),
            };
            !current || visit(entry)
        })?;
        Ok(())
    }

    /// The time of the oldest record, in memory or out of it.
    fn oldest(&self) -> Option<TimestampMs> {
        let in_memory = self.by_age.front().map(|e| e.value().created_at);
        let mut stored = None;
        if let Err(e) = self.stored_ages(&mut |entry| {
            stored = Some(entry.created_at);
            false
        }) {
            tracing::error!(error = %e, "reading the oldest idempotency record's age");
        }
        in_memory.into_iter().chain(stored).min()
    }

    /// Removes the record of `key` from memory or from the store's count, with its age
    /// entry; `age` finds the age of a record out of memory. Answers the removed
    /// record's time, if there was one.
    fn remove(&self, key: &str, age: impl FnOnce() -> Option<TimestampMs>) -> Option<TimestampMs> {
        if let Some(record) = self.records.remove(key) {
            self.by_age.remove(&*record as &dyn AgeKey);
            return Some(record.created_at);
        }
        if !self.maybe_stored(key) {
            return None;
        }
        let created_at = age()?;
        self.uncount_stored(key);
        Some(created_at)
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "idempotency",
    tables: &[
        Table {
            name: IDEMPOTENCY,
            rows: |s, f| s.for_each_idempotency_record(|r| f(&*r)),
            load: |state, bytes| load(state, decode_record(bytes)?),
            check_v1: check_v1::<IdempotencyRecord>,
            load_in_parallel: true,
            // Records out of memory are read by key (a retry): a vector memtable would
            // be copied and sorted for every such read.
            skip_list: true,
            reserve: None,
        },
        Table {
            name: IDEMPOTENCY_AGES,
            rows: |s, f| s.for_each_idempotency_record(|r| f(&ByAge::of(&r))),
            // Counted only: the records' own rows load the state, and an open compares
            // the two counts (`check_ages`).
            load: |state, bytes| {
                let created_at = decode_row::<TimestampMs>(bytes, "idempotency age")?;
                let tables = &state.idempotency;
                tables.ages_loaded.fetch_add(1, Ordering::Relaxed);
                tables.ages_from.fetch_min(created_at, Ordering::Relaxed);
                Ok(())
            },
            check_v1: check_v1::<TimestampMs>,
            load_in_parallel: false,
            // New rows' keys ascend (their times), and the sweep reads the oldest while
            // the engine runs.
            skip_list: true,
            reserve: None,
        },
    ],
    counters: |_, _| {},
    timers: Some(Timers {
        due: |state, now, limits| {
            let tables = &state.idempotency;
            tables.count() > limits.idempotency_records_max
                || tables.oldest().is_some_and(|t| t + limits.idempotency_ttl_ms <= now)
        },
        expire: forget_expired,
    }),
    verify: None,
    written: Some(let_written_records_go),
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

pub(crate) fn apply(state: &State, event: &IdempotencyEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        IdempotencyEvent::ResponseRecorded(record) => put(state, (**record).clone(), rows),
        IdempotencyEvent::IdempotencyForgotten { keys } => {
            let tables = &state.idempotency;
            // The keys were the oldest entries when the sweep chose them, in age
            // order: the ages of those out of memory are found among the first stored
            // entries, and read from the store only if they are not there.
            let mut ages: HashMap<&str, TimestampMs> = HashMap::new();
            if keys.iter().any(|key| tables.records.get(key.as_str()).is_none()) {
                let wanted: std::collections::HashSet<&str> =
                    keys.iter().map(String::as_str).collect();
                let mut scanned = keys.len().saturating_mul(2) + 64;
                tables
                    .stored_ages(&mut |entry| {
                        if let Some(key) = wanted.get(&*entry.key) {
                            ages.insert(key, entry.created_at);
                        }
                        scanned -= 1;
                        scanned > 0 && ages.len() < wanted.len()
                    })
                    .unwrap_or_else(|e| panic!("reading idempotency ages to forget: {e}"));
            }
            let mut last: Option<ByAge> = None;
            for key in keys {
                let age = || {
                    ages.get(key.as_str()).copied().or_else(|| {
                        let stored = tables.read_stored(key).unwrap_or_else(|e| {
                            panic!("reading the idempotency record {key:?} to forget it: {e}")
                        });
                        stored.map(|record| record.created_at)
                    })
                };
                if let Some(created_at) = tables.remove(key, age) {
                    rows.push(Row::delete(IDEMPOTENCY, key.as_bytes()));
                    rows.push(Row::delete(IDEMPOTENCY_AGES, ByAge::row_key(created_at, key)));
                    // A record of this millisecond may be followed by another of it
                    // with a lower key: the bound stays below them.
                    let entry = ByAge { created_at, key: key.as_str().into() };
                    if created_at < at && last.as_ref().is_none_or(|l| *l < entry) {
                        last = Some(entry);
                    }
                }
            }
            if let Some(last) = last {
                let mut through = tables.forgotten_through.lock();
                if through.as_ref().is_none_or(|t| *t < last) {
                    *through = Some(last);
                }
            }
        }
    }
}

fn put(state: &State, record: IdempotencyRecord, rows: &mut Vec<Row>) {
    let tables = &state.idempotency;
    let record = Arc::new(record);
    // One copy of the key, shared by the map and the age entry.
    let key: Arc<str> = Arc::from(record.key.as_str());
    // One lookup of the key: the record it replaces (one that expired) comes back from
    // the insert, and its age entry goes before the new one enters.
    let replaced = match tables.records.replace(key.clone(), record.clone()) {
        Some(previous) => {
            tables.by_age.remove(&*previous as &dyn AgeKey);
            Some(previous.created_at)
        }
        // The one it replaces may be out of memory (read only when its key's hash is
        // counted there: a key reused after it expired, or another key's hash).
        None if tables.maybe_stored(&record.key) => {
            let previous = tables.read_stored(&record.key).unwrap_or_else(|e| {
                panic!("reading the idempotency record {:?} it replaces: {e}", record.key)
            });
            previous.map(|previous| {
                tables.uncount_stored(&previous.key);
                previous.created_at
            })
        }
        None => None,
    };
    let age = ByAge { created_at: record.created_at, key };
    // Read before the row is written, so a read of the oldest rows never starts past it.
    if record.created_at < tables.ages_from.load(Ordering::Relaxed) {
        tables.ages_from.fetch_min(record.created_at, Ordering::AcqRel);
    }
    if let Some(replaced) = replaced.filter(|&t| t != record.created_at) {
        rows.push(Row::delete(IDEMPOTENCY_AGES, ByAge::row_key(replaced, &record.key)));
    }
    tables.by_age.insert(age.clone());
    rows.push(Row::put(record));
    rows.push(Row::put(Arc::new(age)));
}

/// A stored record at open: into memory, or, when records leave memory for the store,
/// only its count (its age is in the store's age rows).
fn load(state: &State, record: IdempotencyRecord) -> Result<()> {
    let tables = &state.idempotency;
    if tables.store.get().is_some() {
        tables.count_stored(&record.key);
    } else {
        put(state, record, &mut Vec::new());
    }
    Ok(())
}

/// Rewrites the age rows from the records' rows when the two disagree in number: a
/// directory written before the age rows existed, or an open that rewrote them and
/// crashed before they were flushed. Called once the rows are loaded, before the log
/// tail is replayed: the rows are those of one materialized instant, whose records and
/// age rows were written together.
pub(crate) fn check_ages(store: &Store, state: &State) -> Result<()> {
    let tables = &state.idempotency;
    let records = match tables.store.get() {
        Some(_) => tables.stored_records.load(Ordering::Relaxed),
        None => tables.records.len(),
    };
    let ages = tables.ages_loaded.load(Ordering::Relaxed);
    if ages == records {
        return Ok(());
    }
    // The rows rewritten below are of any time.
    tables.ages_from.store(i64::MIN, Ordering::Release);
    let started = std::time::Instant::now();
    let mut batch = emporium_storage::WriteBatch::default();
    codec::scan(store, IDEMPOTENCY_AGES, &mut |key, _| {
        batch.delete(IDEMPOTENCY_AGES, key);
        Ok(())
    })?;
    codec::scan(store, IDEMPOTENCY, &mut |_, value| {
        let age = ByAge::of(&decode_record(value)?);
        batch.put_owned(IDEMPOTENCY_AGES, age.key(), age.encode());
        Ok(())
    })?;
    store.write_unlogged(&batch)?;
    tracing::info!(
        records,
        ages,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rebuilt the idempotency records' age rows"
    );
    Ok(())
}

/// Lets written records leave memory for `store`, keeping at most `in_memory` of them;
/// the counts of those out of memory are made for `records_max` records. Called on a
/// fresh state, before its rows load: stored records load as counts only.
pub(crate) fn keep_in_store(
    state: &State,
    store: &Arc<Store>,
    in_memory: usize,
    records_max: usize,
) {
    let tables = &state.idempotency;
    tables.in_memory_max.store(in_memory, Ordering::Relaxed);
    *tables.stored.lock() = StoredCounts::new(records_max);
    let _ = tables.store.set(Arc::downgrade(store));
}

/// After the materializer wrote `rows`: queues the record rows among them, then lets
/// the least recently written records leave memory while more are held than allowed.
/// Runs on the materializer's thread, beside the sequencer, which may be replacing or
/// forgetting any of these records: a record leaves only while the value in memory is
/// the one the store holds, checked at the instant of the removal; its count is made
/// first, so a reader finds it in one place or the other.
fn let_written_records_go(state: &State, rows: &[Row]) {
    let tables = &state.idempotency;
    if tables.store.get().is_none() {
        return;
    }
    let in_memory_max = tables.in_memory_max.load(Ordering::Relaxed);
    let mut written = tables.written.lock();
    for row in rows {
        if let Row::Put(value) = row {
            if value.table() == IDEMPOTENCY {
                written.push_back(Arc::downgrade(value));
            }
        }
    }
    let is_written = |record: &Arc<IdempotencyRecord>, value: &Weak<dyn Persist>| {
        std::ptr::eq(Arc::as_ptr(record).cast::<()>(), value.as_ptr().cast::<()>())
    };
    while tables.records.len() > in_memory_max {
        let Some(value) = written.pop_front() else { break };
        // Gone (forgotten or replaced, and dropped) since it was written.
        let Some(held) = value.upgrade() else { continue };
        // Its key, borrowed from the value written (every queued value is a record).
        let Some(written_record) = (&*held as &dyn Any).downcast_ref::<IdempotencyRecord>() else {
            continue;
        };
        let key = written_record.key.as_str();
        // Counted when the removal finds the written value still there, before it
        // takes it out: a reader that misses it in memory then finds it counted. The
        // check may run again (the map retries when the key changed meanwhile); it
        // counts once, and a removal that did not happen takes the count back.
        let mut counted = false;
        let removed = tables.records.remove_if(key, |_, r| {
            let written = is_written(r, &value);
            if written && !counted {
                tables.count_stored(key);
                counted = true;
            }
            written
        });
        if !removed {
            if counted {
                tables.uncount_stored(key);
            }
            continue;
        }
        // Its age is in the store now. The sequencer may have put a new record under
        // the key since the removal, with the same age entry: that one stays.
        tables.by_age.remove(written_record as &dyn AgeKey);
        if tables.records.get(key).is_some_and(|r| r.parts() == written_record.parts()) {
            tables.by_age.insert(ByAge::of(written_record));
        }
    }
    // Entries of values since replaced are dropped once they outnumber what may be in
    // memory, so the queue holds about one entry per record in memory.
    if written.len() > in_memory_max.saturating_mul(2).max(4096) {
        written.retain(|value| value.strong_count() > 0);
    }
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

/// [`fingerprint`] of a flash-sale purchase, `("flash_sale", sale_id, quantity)`, on the
/// sequencer for every purchase: when the id has nothing its `Debug` text escapes (an
/// id this server gave out never has), the rendering's pieces are hashed as they are,
/// without the formatting machinery (about 1,300 instructions a purchase); otherwise
/// through [`fingerprint`]. The same value either way.
pub(crate) fn purchase_fingerprint(sale_id: &str, quantity: i64) -> u64 {
    // Printable ASCII but both quotes and the backslash: `Debug` writes it as it is.
    let plain = |b: u8| (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\\' | b'\'');
    if !sale_id.bytes().all(plain) {
        return fingerprint(&("flash_sale", sale_id, quantity));
    }
    let mut hash = Fnv1a(0xcbf2_9ce4_8422_2325);
    for piece in ["(\"flash_sale\", \"", sale_id, "\", ", itoa::Buffer::new().format(quantity), ")"]
    {
        let _ = std::fmt::Write::write_str(&mut hash, piece);
    }
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
        || !crate::validate::printable_ascii(key.key.as_bytes())
    {
        checks.fail("idempotency_key", "must be 1-255 printable ASCII characters");
    }
    checks.text("idempotency_key.scope", &key.scope, 1, 128, false);
    done(checks)?;
    let fingerprint = print();
    let scoped = key.scoped();
    match state.idempotency.find(&scoped)? {
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

/// Forgets the records past their time to live, and the oldest past the most kept:
/// the oldest first, from memory and from the store's age rows taken together.
fn forget_expired(state: &State, ctx: &Ctx<'_>, events: &mut Vec<Event>) -> usize {
    let tables = &state.idempotency;
    let excess = tables.count().saturating_sub(ctx.limits.idempotency_records_max);
    let is_due = |i: usize, entry: &ByAge| {
        i < excess || entry.created_at + ctx.limits.idempotency_ttl_ms <= ctx.now
    };
    // The first entries of each source, enough for one batch: both are in age order.
    let in_memory: Vec<ByAge> = tables
        .by_age
        .iter()
        .enumerate()
        .take_while(|(i, e)| is_due(*i, e.value()))
        .take(EXPIRIES_PER_COMMAND_MAX)
        .map(|(_, e)| e.value().clone())
        .collect();
    let mut stored: Vec<ByAge> = Vec::new();
    let read = tables.stored_ages(&mut |entry| {
        if !is_due(stored.len(), &entry) {
            return false;
        }
        stored.push(entry);
        stored.len() < EXPIRIES_PER_COMMAND_MAX
    });
    if let Err(e) = read {
        // Nothing out of memory is forgotten this time; the next tick tries again.
        tracing::error!(error = %e, "reading idempotency ages to forget");
        stored.clear();
    }
    let mut merged: Vec<ByAge> = in_memory.into_iter().chain(stored).collect();
    merged.sort_unstable();
    // A record written but still in memory is in both.
    merged.dedup();
    let keys: Vec<String> = merged
        .into_iter()
        .enumerate()
        .take_while(|(i, e)| is_due(*i, e))
        .take(EXPIRIES_PER_COMMAND_MAX)
        .map(|(_, e)| e.key.to_string())
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
        if let Some(existing) = state.idempotency.find(&scoped)? {
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
        if let Some(existing) = state.idempotency.find(&self.key.scoped())? {
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
    /// The idempotency record of a scoped key: from memory, or read from the store
    /// if it left memory. A read that fails is logged and answers `None` (commands
    /// that check a key see the error instead).
    pub fn idempotency_record(&self, scoped_key: &str) -> Option<Arc<IdempotencyRecord>> {
        self.idempotency.find(scoped_key).unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading an idempotency record from the store");
            None
        })
    }

    /// How many idempotency records are in memory (every one the store does not hold
    /// yet, and the most recently written, up to the configured number).
    pub fn idempotency_records_in_memory(&self) -> usize {
        self.idempotency.records.len()
    }

    /// How many idempotency records there are, in memory or out of it.
    pub fn idempotency_record_count(&self) -> usize {
        self.idempotency.count()
    }

    /// Visits every idempotency record, oldest first (those out of memory are read
    /// from the store: for digests and checks, not for a request's path).
    pub fn for_each_idempotency_record(&self, mut visit: impl FnMut(Arc<IdempotencyRecord>)) {
        let tables = &self.idempotency;
        let mut ages: Vec<ByAge> = tables.by_age.iter().map(|e| e.value().clone()).collect();
        if let Err(e) = tables.stored_ages(&mut |entry| {
            ages.push(entry);
            true
        }) {
            tracing::error!(error = %e, "reading idempotency ages");
        }
        ages.sort_unstable();
        ages.dedup();
        for entry in ages {
            if let Some(record) = self.idempotency_record(&entry.key) {
                visit(record);
            }
        }
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

    /// A purchase's fingerprint without the formatting machinery is the one through it,
    /// for ids with every ASCII character and some that are not, and any quantity.
    #[test]
    fn a_purchases_fingerprint_is_its_debug_renderings() {
        let mut ids: Vec<String> =
            (0u8..=0x7f).map(|b| format!("fls_{}x", char::from(b))).collect();
        ids.extend(["", "fls_0123456789abcdef", "é", "fls_\u{200b}", "a b"].map(String::from));
        for id in &ids {
            for quantity in [i64::MIN, -1, 0, 1, 2, 10, i64::MAX] {
                assert_eq!(
                    purchase_fingerprint(id, quantity),
                    fingerprint(&("flash_sale", id, quantity)),
                    "{id:?} {quantity}"
                );
            }
        }
    }

    /// An open reads the oldest age rows from the oldest row it found, not from the
    /// first key: the rows of records forgotten before the open are deletions that the
    /// store keeps until a compaction, and every tick (which reads the oldest record's
    /// time) stepped over all of them until the run's first forget. A record made
    /// after the open with an earlier time (the wall clock set back) is still found.
    #[cfg(feature = "rocksdb")]
    #[test]
    fn after_an_open_the_oldest_record_is_read_without_stepping_over_forgotten_ones() {
        use crate::{BlockingEngine, Engine, EngineConfig, ExpireDue, ManualClock};
        use std::time::{Duration, Instant};
        const FORGOTTEN: usize = 2_000;
        const T0: TimestampMs = 1_700_000_000_000;
        let day = crate::Limits::default().idempotency_ttl_ms;
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let open = || {
            let mut config = EngineConfig::new(dir.path());
            config.clock = clock.clone();
            // Sweeps only when asked.
            config.tick_interval_ms = 24 * 60 * 60 * 1000;
            config.materialize_interval_ms = 1;
            config.idempotency_records_in_memory = Some(0);
            Engine::open(config).unwrap()
        };
        let record = |shop: &BlockingEngine, key: &str| {
            let key = IdempotencyKey { scope: "guest".into(), key: key.into() };
            let body = Vec::new();
            shop.send(RecordResponse { key, fingerprint: 1, status: 402, body }).unwrap();
        };
        let written = |engine: &Engine| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while engine.materialized_lsn() < engine.last_lsn()
                || engine.state().idempotency_records_in_memory() > 0
            {
                assert!(Instant::now() < deadline, "the records were not written");
                std::thread::sleep(Duration::from_millis(1));
            }
        };

        let engine = open();
        let shop = engine.blocking();
        for n in 0..FORGOTTEN {
            record(&shop, &format!("old-{n}"));
        }
        clock.advance(day);
        record(&shop, "young");
        for _ in 0..FORGOTTEN.div_ceil(EXPIRIES_PER_COMMAND_MAX) {
            shop.send(ExpireDue).unwrap();
        }
        assert_eq!(engine.state().idempotency_record_count(), 1, "only the young record left");
        written(&engine);
        engine.close();

        let engine = open();
        let tables = &engine.state().idempotency;
        let (oldest, stepped) = emporium_storage::deletions_stepped_over(|| tables.oldest());
        assert_eq!(oldest, Some(T0 + day));
        assert!(stepped < 10, "stepped over {stepped} deleted age rows");
        engine.close();

        clock.set(T0 + 1);
        let engine = open();
        record(&engine.blocking(), "set-back");
        written(&engine);
        let tables = &engine.state().idempotency;
        let (oldest, stepped) = emporium_storage::deletions_stepped_over(|| tables.oldest());
        assert_eq!(oldest, Some(T0 + 1), "the record of the earlier time, out of memory");
        assert!(stepped < 10, "stepped over {stepped} deleted age rows");
        engine.close();
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
            .map(|e| {
                let record = state.idempotency_record(&e.value().key).expect("held");
                (e.value().created_at, e.value().key.to_string(), record.fingerprint)
            })
            .collect();
        assert_eq!(ages, vec![(99, "scope\0key".to_string(), 3)]);
        let held = state.idempotency_record("scope\0key").expect("held");
        assert_eq!((held.fingerprint, held.created_at), (3, 99));
        assert_eq!(state.idempotency.records.len(), 1);
        // Each put writes the record and its age row; the second also deletes the
        // first's age row, the third replaces the second's (the same time and key).
        let ages: Vec<(Vec<u8>, bool)> = rows
            .iter()
            .map(Row::location)
            .zip(rows.iter().map(|r| matches!(r, Row::Put(_))))
            .filter(|((table, _), _)| *table == IDEMPOTENCY_AGES)
            .map(|((_, key), put)| (key, put))
            .collect();
        let key = |t| ByAge::row_key(t, "scope\0key");
        let expected = [(key(10), true), (key(10), false), (key(99), true), (key(99), true)];
        assert_eq!(ages, expected);
        assert_eq!(rows.len(), 7);
    }

    /// Age rows sort by time (negative times too), then by key, as the entries do, and
    /// their keys read back as the entries they were made from.
    #[test]
    fn age_row_keys_sort_as_their_entries() {
        let mut entries: Vec<ByAge> = [(-5, "b"), (3, "a"), (-5, "a"), (0, ""), (i64::MAX, "z")]
            .into_iter()
            .chain([(i64::MIN, "q"), (3, "a\0b"), (256, "a")])
            .map(|(created_at, key)| ByAge { created_at, key: key.into() })
            .collect();
        let mut by_row_key = entries.clone();
        by_row_key.sort_by_key(|e| ByAge::row_key(e.created_at, &e.key));
        entries.sort();
        assert_eq!(by_row_key, entries);
        for entry in &entries {
            let row_key = ByAge::row_key(entry.created_at, &entry.key);
            assert_eq!(ByAge::from_row_key(&row_key).as_ref(), Some(entry));
        }
        assert_eq!(ByAge::from_row_key(b"short"), None);
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
