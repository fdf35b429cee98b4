//! Recovery: the state at the materialized LSN is loaded from the entity rows, then the
//! log tail after it is replayed through the same `apply` the sequencer uses. The rows
//! are flushed every persist interval and whenever a memtable fills, which bounds the
//! tail, so recovery time is bounded too. The replayed rows are written back and
//! flushed at once, so a second crash does not replay the same tail.
//!
//! Never guesses: a gap in the log, a log trimmed past the rows, a row or record that
//! does not decode, or stock that disagrees with what pending orders hold is an error
//! ([`EngineError::IncompatibleData`]), not a repaired state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use emporium_storage::{Store, WriteBatch};

use crate::domains::{apply, LogEntry, State, DOMAINS};
use crate::error::{EngineError, Result};
use crate::kernel::codec;
use crate::kernel::table::{Row, Table, RESERVE_ROWS_MAX};

/// What recovery found.
pub(crate) struct Recovered {
    pub(crate) state: State,
    /// The LSN the rows reflect after recovery (the replayed tail is written back).
    pub(crate) materialized_lsn: u64,
    /// The LSN the durable rows reflect: what was found, before the replayed tail's
    /// rows (whose flush was only started) were written back.
    pub(crate) persisted_lsn: u64,
    /// Log entries replayed after the rows' LSN.
    pub(crate) replayed: u64,
    /// The LSN of the first entry the log holds, if any.
    pub(crate) first_log_lsn: Option<u64>,
}

/// Rebuilds the state: rows, then the log tail.
pub(crate) fn recover(
    store: &Arc<Store>,
    orders_in_memory: Option<usize>,
    idempotency_records_in_memory: Option<usize>,
    idempotency_records_max: usize,
) -> Result<Recovered> {
    let state = State::new();
    if let Some(held) = orders_in_memory {
        crate::orders::keep_in_store(&state, store, held);
    }
    if let Some(held) = idempotency_records_in_memory {
        crate::idempotency::keep_in_store(&state, store, held, idempotency_records_max);
    }
    load_rows(store, &state)?;
    crate::idempotency::check_ages(store, &state)?;
    let materialized = codec::read_materialized(store, &state)?;
    state.last_lsn.store(materialized, Ordering::Release);
    let first_log_lsn = codec::first_log_lsn(store)?;
    let replayed = replay_tail(store, &state, materialized, first_log_lsn)?;
    for verify in DOMAINS.iter().filter_map(|d| d.verify) {
        verify(&state)?;
    }
    Ok(Recovered {
        materialized_lsn: state.last_lsn().0,
        persisted_lsn: materialized,
        state,
        replayed,
        first_log_lsn,
    })
}

/// Loads stored rows — `(table, bytes)` pairs, as an open reads them from a data
/// directory — into a fresh state and checks that state as an open does. An unknown
/// table, a row that does not decode and rows that disagree with each other (a
/// reservation without its order) are errors; nothing panics. For tools that inspect
/// rows, and the row decoders' fuzz target.
pub fn check_rows<'a>(rows: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<()> {
    let state = State::new();
    for (name, bytes) in rows {
        let table =
            DOMAINS.iter().flat_map(|d| d.tables.iter()).find(|t| t.name == name).ok_or_else(
                || EngineError::IncompatibleData(format!("no table is named {name}")),
            )?;
        (table.load)(&state, bytes)?;
    }
    for verify in DOMAINS.iter().filter_map(|d| d.verify) {
        verify(&state)?;
    }
    Ok(())
}

/// The names of every table (a column family each), in the order an open loads them.
pub fn table_names() -> Vec<&'static str> {
    codec::entity_cfs()
}

/// Applies every log entry after `materialized`, then writes the rows it changed with
/// the new materialized LSN, so the next open starts from there.
fn replay_tail(store: &Store, state: &State, materialized: u64, first: Option<u64>) -> Result<u64> {
    if let Some(first) = first {
        if first > materialized + 1 {
            return Err(EngineError::IncompatibleData(format!(
                "the rows reflect LSN {materialized} but the log starts at {first}: entries \
                 {} to {} are missing",
                materialized + 1,
                first - 1
            )));
        }
    }
    let mut rows = Vec::new();
    let mut last = materialized;
    let jump = |next: u64, found| {
        EngineError::IncompatibleData(format!("the log jumps from LSN {} to {found}", next - 1))
    };
    codec::walk_log(store, materialized + 1, jump, &mut |entry| {
        replay_one(state, &entry, &mut rows)?;
        last = entry.lsn.0;
        Ok(true)
    })?;
    if last > materialized {
        let mut batch = WriteBatch::default();
        put_rows(&mut batch, &rows);
        codec::put_materialized(&mut batch, last, &state.counter_snapshot());
        store.write_unlogged(&batch)?;
        if let Err(e) = store.persist_unlogged(false) {
            tracing::warn!(error = %e, "flushing the replayed rows; they are replayed again after a crash");
        }
    }
    Ok(last - materialized)
}

/// Applies one entry; an entry that does not fit the state is reported, not a crash at
/// open.
fn replay_one(state: &State, entry: &LogEntry, rows: &mut Vec<Row>) -> Result<()> {
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for event in &entry.events {
            apply(state, event, entry.at, rows);
        }
    }));
    if applied.is_err() {
        return Err(EngineError::IncompatibleData(format!(
            "log entry {} does not apply to the state before it",
            entry.lsn.0
        )));
    }
    state.last_lsn.store(entry.lsn.0, Ordering::Release);
    Ok(())
}

/// Adds each row of `rows` once, with its last value.
fn put_rows(batch: &mut WriteBatch, rows: &[Row]) {
    let mut last = HashMap::with_capacity(rows.len());
    for row in rows {
        last.insert(row.location(), row);
    }
    for (key, row) in last {
        codec::put_row(batch, key, row);
    }
}

/// Loads every domain's tables, in registry order. A table marked
/// [`Table::load_in_parallel`] is read on this thread and loaded by a few workers.
fn load_rows(store: &Store, state: &State) -> Result<()> {
    let workers = open_workers();
    for domain in DOMAINS {
        for table in domain.tables {
            let started = Instant::now();
            if let (Some(reserve), Some(rows)) = (table.reserve, store.estimate_rows(table.name)) {
                reserve(state, usize::try_from(rows).unwrap_or(usize::MAX).min(RESERVE_ROWS_MAX));
            }
            let rows = if table.load_in_parallel && workers > 1 {
                load_in_parallel(store, state, table, workers)?
            } else {
                let mut rows = 0u64;
                codec::scan(store, table.name, &mut |_, value| {
                    rows += 1;
                    (table.load)(state, value)
                })?;
                rows
            };
            tracing::debug!(
                domain = domain.name,
                table = table.name,
                rows,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "loaded"
            );
        }
    }
    Ok(())
}

/// At most this many threads load one table or share a check of the loaded state.
const LOAD_WORKERS_MAX: usize = 4;

/// How many threads an open spreads a table's load, or a check of the loaded state,
/// over: one per core, at most [`LOAD_WORKERS_MAX`].
pub(crate) fn open_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(LOAD_WORKERS_MAX)
}

/// Rows handed to a loading worker at a time.
const LOAD_CHUNK_ROWS: usize = 512;

/// Rows read from the store, handed to a loading worker: their values back to back.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Chunk {
    fn push(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
        self.ends.push(self.bytes.len());
    }

    fn values(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.bytes[start..end])
    }
}

/// Loads `table` with `workers` threads: this thread reads the rows in chunks (the
/// store's iterator is not shared), the workers decode and insert them. Returns the
/// rows read. A worker that meets an error stops the others and the reader at their
/// next chunk; the open fails with an error a worker met.
fn load_in_parallel(store: &Store, state: &State, table: &Table, workers: usize) -> Result<u64> {
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (chunks, take) = crossbeam_channel::bounded::<Chunk>(workers * 2);
        let loaders: Vec<_> = (0..workers)
            .map(|_| {
                let take = take.clone();
                let failed = &failed;
                scope.spawn(move || -> Result<()> {
                    for chunk in take {
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        for value in chunk.values() {
                            if let Err(e) = (table.load)(state, value) {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        drop(take);
        let mut rows = 0u64;
        let mut chunk = Chunk::default();
        let read = store.scan(table.name, &mut |_, value| {
            rows += 1;
            chunk.push(value);
            if chunk.ends.len() < LOAD_CHUNK_ROWS {
                return true;
            }
            // Every worker gone (each failed) or one failed: stop reading.
            !failed.load(Ordering::Relaxed) && chunks.send(std::mem::take(&mut chunk)).is_ok()
        });
        if !chunk.ends.is_empty() && !failed.load(Ordering::Relaxed) {
            let _ = chunks.send(chunk);
        }
        drop(chunks);
        let mut outcome = Ok(());
        for loader in loaders {
            let result = loader.join().unwrap_or_else(|_| {
                Err(EngineError::IncompatibleData(format!(
                    "loading a row of {} failed unexpectedly",
                    table.name
                )))
            });
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome?;
        read?;
        Ok(rows)
    })
}
