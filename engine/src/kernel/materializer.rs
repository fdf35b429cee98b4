//! The materializer: off the critical path, it writes the latest value of each changed
//! row, coalesced, with the LSN the rows reflect, and trims the log below what every
//! reader of it has passed.
//!
//! ```text
//! committer ──(durable group: rows, LSN, counters)──► bounded channel ──► materializer
//!     coalesces rows by key; every interval (or past a row count) one unlogged batch:
//!     rows + meta/materialized_lsn + counters + consumer positions; then the log trim
//!     every persist interval ──► persister: a flush of all column families at one
//!     instant, waited for; then the LSN it covers is the persisted LSN
//! ```
//!
//! Invariants: it sees a group only after the group's log entries are durable, so the
//! rows never run ahead of the log; the rows and the LSN they reflect are one atomic
//! batch, so after any crash the rows are exactly the state at that LSN. Its writes
//! skip the write-ahead log: the log is the truth. They become durable when the store
//! flushes its memtables, every column family at the same instant (asked for every
//! persist interval, or when a memtable fills), so a crash keeps the batches up to some
//! instant and loses the rest whole; recovery replays the log after the LSN of what
//! was kept. The log is in a database of its own, whose writes (trims too) go through
//! its write-ahead log: a trim may outlive a crash that loses rows written before it.
//! So the log is trimmed only below the persisted LSN (rows whose flush completed),
//! below every registered consumer's position and below the entries always kept. A
//! consumer's saved position may therefore go back after a crash (by up to the persist
//! interval): every consumer resumes from its own record of what it processed, or
//! tolerates a re-read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use emporium_storage::{Store, WriteBatch, CF_META};
use parking_lot::Mutex;

use crate::domains::{State, DOMAINS};
use crate::error::{EngineError, Result};
use crate::kernel::codec::{self, META_CONSUMER_PREFIX};
use crate::kernel::runtime::{EngineStats, Health, StopOnPanic};
use crate::kernel::table::Row;
use crate::types::Lsn;

/// A durable group's changes, handed from the committer to the materializer.
pub(crate) struct Durable {
    pub(crate) rows: Vec<Row>,
    pub(crate) last_lsn: u64,
    pub(crate) counters: Vec<(&'static str, u64)>,
}

/// How the materializer paces itself and how much log it keeps.
#[derive(Clone, Debug)]
pub(crate) struct Pacing {
    pub(crate) interval: Duration,
    pub(crate) persist_interval: Duration,
    pub(crate) rows_max: usize,
    pub(crate) retain_entries_min: u64,
    pub(crate) consumer_lag_max: u64,
}

/// One registered log consumer's place.
#[derive(Debug, Default)]
pub(crate) struct ConsumerCell {
    /// The last LSN it has processed: the log is kept from the next one on.
    pub(crate) position: AtomicU64,
    /// Set when it fell more than the retention cap behind; it must resynchronise.
    pub(crate) dropped: AtomicBool,
}

/// The log's bounds and its registered consumers, shared by the engine (reads,
/// registration) and the materializer (trimming).
#[derive(Debug, Default)]
pub(crate) struct LogBounds {
    /// The first LSN still held (everything below was trimmed).
    pub(crate) first: AtomicU64,
    /// The LSN the entity rows reflect.
    pub(crate) materialized: AtomicU64,
    /// The LSN the durable entity rows reflect (their flush completed): the log is
    /// kept after it.
    pub(crate) persisted: AtomicU64,
    /// By name. The materializer holds this lock while it decides and writes a trim, so
    /// a consumer registered meanwhile never starts below the trimmed point.
    pub(crate) consumers: Mutex<BTreeMap<String, Arc<ConsumerCell>>>,
    /// A consumer advanced or was unregistered since the last write: the next flush
    /// persists it (and trims) even when no command came.
    pub(crate) dirty: AtomicBool,
}

impl LogBounds {
    /// Loads the consumers registered in `meta`; the log's bounds are what recovery
    /// found.
    pub(crate) fn load(
        store: &Store,
        materialized: u64,
        persisted: u64,
        first_log_lsn: Option<u64>,
    ) -> Result<LogBounds> {
        let bounds = LogBounds::default();
        let first = first_log_lsn.unwrap_or(materialized + 1);
        bounds.first.store(first, Ordering::Release);
        bounds.materialized.store(materialized, Ordering::Release);
        bounds.persisted.store(persisted, Ordering::Release);
        let mut failure = None;
        let mut consumers = bounds.consumers.lock();
        store.scan_from(CF_META, META_CONSUMER_PREFIX.as_bytes(), &mut |key, value| {
            let Some(name) = key.strip_prefix(META_CONSUMER_PREFIX.as_bytes()) else {
                return false;
            };
            match codec::read_u64(value, "log consumer position") {
                Ok(position) => {
                    let cell =
                        ConsumerCell { position: AtomicU64::new(position), ..Default::default() };
                    consumers.insert(String::from_utf8_lossy(name).into_owned(), Arc::new(cell));
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        })?;
        drop(consumers);
        failure.map_or(Ok(bounds), Err)
    }

    /// Whether `from` is still in the log; the error names the first LSN held. LSNs
    /// start at 1: asking for 0 is asking for the beginning.
    pub(crate) fn check_held(&self, from: Lsn) -> Result<()> {
        let from = Lsn(from.0.max(1));
        let first = self.first.load(Ordering::Acquire);
        if from.0 < first {
            return Err(EngineError::LogTrimmed { requested: from, first: Lsn(first) });
        }
        Ok(())
    }
}

pub(crate) struct Materializer {
    /// Asks the persister to make the rows written so far durable (the LSN they reach).
    pub(crate) persist: Sender<u64>,
    pub(crate) store: Arc<Store>,
    /// Told of the rows written (see [`crate::kernel::table::Domain::written`]).
    pub(crate) state: Arc<State>,
    pub(crate) receiver: Receiver<Durable>,
    pub(crate) health: Arc<Health>,
    pub(crate) bounds: Arc<LogBounds>,
    pub(crate) stats: Arc<EngineStats>,
    pub(crate) pacing: Pacing,
}

/// Rows waiting to be written, in the order they changed (a row changed twice is here
/// twice: the flush keeps its last value), and the state they reach.
#[derive(Default)]
struct Pending {
    rows: Vec<((&'static str, Vec<u8>), Row)>,
    last_lsn: u64,
    counters: Vec<(&'static str, u64)>,
    /// Since when rows written are waiting to be made durable; `None` when every
    /// write has been handed to a flush.
    unpersisted_since: Option<Instant>,
    /// The batch of the last write, emptied: its buffers keep their room, so a flush
    /// neither grows one by doubling (copying what it holds into freshly faulted
    /// pages) nor allocates it anew.
    batch: WriteBatch,
    /// The counters as the last write left them in the store: a flush writes only
    /// those that moved since (most of the dozens never move under a given load).
    counters_written: Vec<(&'static str, u64)>,
}

/// The room a flush's batch keeps for the next at most: a rare large flush does not
/// hold its size for the process's life.
const BATCH_BYTES_KEPT: usize = 8 << 20;

impl Materializer {
    pub(crate) fn run(self) {
        // A panic here is fail-stop too: without the materializer the log tail that
        // recovery replays would grow without bound.
        let _stop = StopOnPanic { health: self.health.clone(), what: "materializer", slot: None };
        let mut pending = Pending::default();
        let mut deadline = Instant::now() + self.pacing.interval;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.receiver.recv_timeout(wait) {
                Ok(durable) => {
                    pending.rows.extend(durable.rows.into_iter().map(|row| (row.location(), row)));
                    pending.last_lsn = durable.last_lsn;
                    pending.counters = durable.counters;
                    // Under steady load the channel is never empty, so the interval is
                    // checked here too, not only on a time-out.
                    if pending.rows.len() >= self.pacing.rows_max || Instant::now() >= deadline {
                        self.flush(&mut pending);
                        deadline = Instant::now() + self.pacing.interval;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.flush(&mut pending);
                    deadline = Instant::now() + self.pacing.interval;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // The engine is closing: the last rows are written and made
                    // durable here, and the log trimmed below them, so a clean close
                    // leaves no log tail to replay.
                    self.flush(&mut pending);
                    self.persist_and_trim();
                    return;
                }
            }
        }
    }

    /// Writes the pending rows with the LSN they reflect, the consumers' positions and
    /// the log trim, as one unlogged batch.
    fn flush(&self, pending: &mut Pending) {
        self.persist_when_due(pending);
        let materialized = self.bounds.materialized.load(Ordering::Acquire);
        let idle = pending.last_lsn <= materialized && pending.rows.is_empty();
        if self.health.failed() {
            return;
        }
        if idle && !self.bounds.dirty.load(Ordering::Acquire) {
            // Nothing to write, but the persisted LSN may have moved since the last trim.
            let consumers = self.bounds.consumers.lock();
            let trim_to = self.trim_point(materialized, &consumers);
            if consumers.values().any(|cell| cell.dropped.load(Ordering::Acquire)) {
                // Its registration is deleted by the next write.
                self.bounds.dirty.store(true, Ordering::Release);
            }
            self.trim(trim_to);
            return;
        }
        let lsn = pending.last_lsn.max(materialized);
        let mut batch = std::mem::take(&mut pending.batch);
        // Written table by table, each in key order: RocksDB's skip list starts an insert
        // where the last one ended (its splice), so a key that follows the last one
        // finds its place near it instead of descending from the top of the list through
        // nodes out of the cache, as keys in arrival order (random) do. The sort is
        // stable, so a row's changes stay in the order they were made and only the last
        // is written: coalesced here rather than in a map as they come, which hashed
        // every change's key and left the rows to sort all the same.
        pending.rows.sort_by(|(a, _), (b, _)| a.cmp(b));
        let mut written = Vec::with_capacity(pending.rows.len());
        let mut changes = pending.rows.drain(..).peekable();
        while let Some((key, row)) = changes.next() {
            if changes.peek().is_some_and(|(next, _)| *next == key) {
                // A later change of the same row follows.
                continue;
            }
            codec::put_row(&mut batch, key, &row);
            written.push(row);
        }
        drop(changes);
        let rows = written.len() as u64;
        // Only a flush that carries groups moves the LSN and the counters: an idle one
        // (a consumer moved) has no counters of its own to write, and writing the
        // defaults would reset them.
        if !idle {
            // Every snapshot lists the same counters in the same order.
            let moved: Vec<(&str, u64)> =
                if pending.counters_written.len() == pending.counters.len() {
                    let written = pending.counters.iter().zip(&pending.counters_written);
                    written.filter(|(now, then)| now != then).map(|(now, _)| *now).collect()
                } else {
                    pending.counters.clone()
                };
            codec::put_materialized(&mut batch, lsn, &moved);
        }
        let mut consumers = self.bounds.consumers.lock();
        let trim_to = self.trim_point(lsn, &consumers);
        for (name, cell) in consumers.iter() {
            let key = format!("{META_CONSUMER_PREFIX}{name}").into_bytes();
            if cell.dropped.load(Ordering::Acquire) {
                batch.delete(CF_META, &key);
            } else {
                let position = cell.position.load(Ordering::Acquire);
                batch.put_owned(CF_META, key, position.to_le_bytes().to_vec());
            }
        }
        let written_ok = self.store.write_unlogged(&batch);
        if batch.capacity_bytes() <= BATCH_BYTES_KEPT {
            batch.clear();
            pending.batch = batch;
        }
        if let Err(e) = written_ok {
            self.health.fail(format!("the materializer's write failed: {e}"));
            return;
        }
        if !self.trim(trim_to) {
            return;
        }
        consumers.retain(|_, cell| !cell.dropped.load(Ordering::Acquire));
        self.bounds.materialized.store(lsn, Ordering::Release);
        self.bounds.dirty.store(false, Ordering::Release);
        drop(consumers);
        if !idle {
            pending.counters_written.clone_from(&pending.counters);
        }
        pending.unpersisted_since.get_or_insert_with(Instant::now);
        self.stats.rows_materialized.fetch_add(rows, Ordering::Relaxed);
        self.stats.materialize_flushes.fetch_add(1, Ordering::Relaxed);
        for written_hook in DOMAINS.iter().filter_map(|d| d.written) {
            written_hook(&self.state, &written);
        }
    }

    /// Deletes the log records whose entries are all below `trim_to` (records are keyed
    /// by their last entry's LSN: one straddling it stays whole) and publishes the new
    /// first entry. Called with the consumers' lock held: a consumer registered next
    /// starts at the new first entry, and a reader racing the trim sees it (`read_log`
    /// also checks that what it read starts where it asked). False when the store
    /// failed (fail-stop).
    fn trim(&self, trim_to: u64) -> bool {
        let first = self.bounds.first.load(Ordering::Acquire);
        if trim_to <= first {
            return true;
        }
        if let Err(e) = self.store.trim_log(first, trim_to) {
            self.health.fail(format!("trimming the log failed: {e}"));
            return false;
        }
        self.bounds.first.store(trim_to, Ordering::Release);
        true
    }

    /// Makes the written rows durable, waiting for it, then trims the log below them.
    fn persist_and_trim(&self) {
        if self.health.failed() {
            return;
        }
        let materialized = self.bounds.materialized.load(Ordering::Acquire);
        if let Err(e) = self.store.persist_unlogged(true) {
            // The store's close tries again; the log stays untrimmed.
            tracing::warn!(error = %e, "flushing the materialized rows at close");
            return;
        }
        self.bounds.persisted.fetch_max(materialized, Ordering::AcqRel);
        let consumers = self.bounds.consumers.lock();
        let trim_to = self.trim_point(materialized, &consumers);
        self.trim(trim_to);
    }

    /// Asks the persister to make the written rows durable once the persist interval
    /// has passed since the first write after the last time (also when idle since).
    /// Rows are written outside the write-ahead log: until then a crash loses them,
    /// and recovery replays the log after the LSN of the last persisted ones. While the
    /// persister is busy with the last request, it is asked again at the next flush.
    fn persist_when_due(&self, pending: &mut Pending) {
        if pending.unpersisted_since.is_none_or(|t| t.elapsed() < self.pacing.persist_interval) {
            return;
        }
        let written = self.bounds.materialized.load(Ordering::Acquire);
        match self.persist.try_send(written) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => pending.unpersisted_since = None,
            Err(TrySendError::Full(_)) => {}
        }
    }

    /// The first LSN to keep: everything below it has been passed by the rows (at
    /// `lsn`) and by every consumer, and is older than the entries always kept. A
    /// consumer more than the cap behind is dropped instead of holding the log.
    fn trim_point(&self, lsn: u64, consumers: &BTreeMap<String, Arc<ConsumerCell>>) -> u64 {
        let persisted = self.bounds.persisted.load(Ordering::Acquire);
        let mut keep_from =
            (lsn + 1).saturating_sub(self.pacing.retain_entries_min).min(persisted + 1);
        for (name, cell) in consumers {
            if cell.dropped.load(Ordering::Acquire) {
                continue;
            }
            let position = cell.position.load(Ordering::Acquire);
            if lsn.saturating_sub(position) > self.pacing.consumer_lag_max {
                tracing::warn!(
                    consumer = %name,
                    position,
                    lsn,
                    "log consumer dropped: it fell behind the retention cap and must resynchronise"
                );
                cell.dropped.store(true, Ordering::Release);
                continue;
            }
            keep_from = keep_from.min(position + 1);
        }
        keep_from.max(1)
    }
}

/// How long the persister waits before it tries a refused flush again.
const PERSIST_RETRY: Duration = Duration::from_millis(100);

/// Makes the materialized rows durable on request, waiting for each flush (which may
/// take a while under a backlog of flushes) on its own thread, and then publishes the
/// LSN the flushed rows reflect: the log is trimmed below it only.
pub(crate) struct Persister {
    pub(crate) store: Arc<Store>,
    pub(crate) bounds: Arc<LogBounds>,
    pub(crate) health: Arc<Health>,
    /// The LSN the rows written before each request reach. Closed when the
    /// materializer stops, which makes its last rows durable itself.
    pub(crate) requests: Receiver<u64>,
}

impl Persister {
    pub(crate) fn run(self) {
        let mut refused: Option<u64> = None;
        loop {
            let lsn = match refused {
                None => match self.requests.recv() {
                    Ok(lsn) => lsn,
                    Err(_) => return,
                },
                // A refused flush loses nothing (the rows are in memory and the log is
                // durable) and RocksDB refuses one while it stops writes for a backlog
                // of flushes: it is tried again, for a newer request if one came.
                Some(lsn) => match self.requests.recv_timeout(PERSIST_RETRY) {
                    Ok(newer) => newer.max(lsn),
                    Err(RecvTimeoutError::Timeout) => lsn,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            };
            // A store that can no longer write fails the materializer's next batch, and
            // that is fail-stop.
            if self.health.failed() {
                return;
            }
            match self.store.persist_unlogged(true) {
                Ok(()) => {
                    refused = None;
                    self.bounds.persisted.fetch_max(lsn, Ordering::AcqRel);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "flushing the materialized rows; will retry");
                    refused = Some(lsn);
                }
            }
        }
    }
}
