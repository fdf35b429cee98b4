//! The runtime around the pure domain: a bounded command queue, the sequencer thread
//! (the only writer of the state), and the committer thread (group commit).
//!
//! ```text
//! callers ──try_send──► queue (bounded) ──► sequencer: decide + apply, assign LSNs
//!                                              │ hands over a group (at once to a waiting
//!                                              ▼ committer; merging while it is busy)
//!                                  committer: the group's log entries, one synced
//!                                              write; then releases the group's replies
//!                                              │ bounded channel
//!                                              ▼
//!                                  materializer: coalesced rows, outside the WAL,
//!                                              off the critical path; log retention
//! ```
//!
//! Invariants: a reply, success or refusal, is released only after the group it was
//! decided in (and so every group before it) is synced; groups are written in LSN
//! order; after a failed write or a panic of the sequencer or committer nothing more is
//! written and every caller gets [`EngineError::Unavailable`] (fail-stop).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use emporium_storage::{BackendKind, Store, StoreConfig, WriteBatch};
use parking_lot::{Condvar, Mutex};
use rand::SeedableRng;
use tokio::sync::{oneshot, watch};

use crate::clock::{Clock, SystemClock};
use crate::domains::{apply, LogEntry, State};
use crate::error::{EngineError, Result};
use crate::kernel::codec;
use crate::kernel::handler::{Ctx, IdSource, Limits, Request};
use crate::kernel::materializer::{
    ConsumerCell, Durable, LogBounds, Materializer, Pacing, Persister,
};
use crate::kernel::replica::{self, Epochs, NodeRole, ReleaseGate};
use crate::kernel::table::Row;
use crate::kernel::timers::{self, ExpireDue};
use crate::types::{Lsn, TimestampMs};

/// How to open an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The data directory (created when missing).
    pub data_dir: PathBuf,
    /// The storage backend.
    pub backend: BackendKind,
    /// The domain's limits and timeouts.
    pub limits: Limits,
    /// Commands waiting for the sequencer at most; past it, callers get
    /// [`EngineError::Overloaded`] at once.
    pub queue_commands_max: usize,
    /// Commands in one commit group at most.
    pub group_commands_max: usize,
    /// How often the sequencer looks for expired reservations.
    pub tick_interval_ms: u64,
    /// Where the time comes from.
    pub clock: Arc<dyn Clock>,
    /// Seeds the id generator (for reproducible tests); `None` seeds from the OS.
    pub id_seed: Option<u64>,
    /// How often the materializer writes the changed rows (outside the write-ahead
    /// log; the synced log is the durable copy). Short, because RocksDB applies writes
    /// one group at a time: the committer's synced write waits while a materializer
    /// batch goes into the memtables. A batch of 200 ms under a flash sale (thousands
    /// of purchases' rows) held it for up to tens of milliseconds; at 20 ms a batch
    /// still took a few, and 5 ms made 10% more purchases a second than 20 ms (2 ms no
    /// more than 5).
    pub materialize_interval_ms: u64,
    /// How often the rows written are made durable, every column family at one
    /// instant. After a crash, recovery replays the log since the last time, so this
    /// bounds that tail when writes are few; under load the memtables fill and are
    /// flushed sooner.
    pub persist_interval_ms: u64,
    /// Changes of rows the materializer holds at most before it writes them (a row
    /// changed twice counts twice; it is written once, with its last value).
    pub materialize_rows_max: usize,
    /// Durable groups waiting for the materializer at most; past it the committer, and
    /// so the sequencer, waits: the materializer's lag is bounded.
    pub materialize_groups_max: usize,
    /// Log entries always kept behind the materialized LSN, for consumers that have not
    /// registered (a standby being set up, a debugging session).
    pub log_retain_entries_min: u64,
    /// How far (in LSNs) a registered log consumer may fall behind before it is dropped
    /// and must resynchronise, instead of holding the log forever.
    pub log_consumer_lag_max: u64,
    /// Settled orders (not pending payment) kept in memory at most, the most recently
    /// written ones; older ones are read from the store when asked for. `None` keeps
    /// every order in memory. Pending orders always stay in memory: they hold stock.
    pub orders_in_memory: Option<usize>,
    /// Idempotency records kept in memory at most once the store holds them, the most
    /// recently written; older ones are read from the store when their key comes
    /// again (a retry). `None` keeps every record in memory for its time to live.
    pub idempotency_records_in_memory: Option<usize>,
    /// The role to open in: `None` keeps what the directory records (a new one is a
    /// primary); `Some(NodeRole::Primary)` refuses a standby's directory (promote it
    /// first); `Some(NodeRole::Standby)` makes the directory a standby's.
    pub role: Option<NodeRole>,
    /// Holds each group's replies until it may be acknowledged (synchronous
    /// replication); `None` acknowledges once the group is durable here.
    pub release_gate: Option<Arc<dyn ReleaseGate>>,
    /// Faults to inject, for tests of fail-stop.
    #[cfg(feature = "faults")]
    pub faults: Faults,
}

/// Faults a test can inject (cargo feature `faults`): each fires once, at the next
/// command (sequencer) or group (committer) after it is set.
#[cfg(feature = "faults")]
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Panics in the sequencer while it applies the next command.
    pub panic_sequencer: Arc<std::sync::atomic::AtomicBool>,
    /// Panics in the committer before it writes the next group.
    pub panic_committer: Arc<std::sync::atomic::AtomicBool>,
    /// Disk faults: failed writes and syncs, damaged reads.
    pub disk: Option<Arc<emporium_storage::DiskFaults>>,
    /// Writes the log without syncing it (acknowledging what a power cut would lose):
    /// the broken build the power-loss test must catch.
    pub unsynced_log: bool,
    /// Holds the sequencer before it takes a command until the engine stops running
    /// (a close or a failure), so commands pile up in the queue.
    pub hold_sequencer: Arc<std::sync::atomic::AtomicBool>,
    /// Set by the sequencer while `hold_sequencer` holds it: from then on every command
    /// sent waits in the queue.
    pub sequencer_held: Arc<std::sync::atomic::AtomicBool>,
}

impl EngineConfig {
    /// The defaults, on `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            backend: BackendKind::default(),
            limits: Limits::default(),
            queue_commands_max: 65_536,
            group_commands_max: 8_192,
            tick_interval_ms: 250,
            clock: Arc::new(SystemClock),
            id_seed: None,
            materialize_interval_ms: 5,
            persist_interval_ms: 10_000,
            materialize_rows_max: 262_144,
            materialize_groups_max: 1024,
            log_retain_entries_min: 100_000,
            log_consumer_lag_max: 50_000_000,
            orders_in_memory: Some(crate::orders::ORDERS_IN_MEMORY_DEFAULT),
            idempotency_records_in_memory: Some(
                crate::idempotency::IDEMPOTENCY_RECORDS_IN_MEMORY_DEFAULT,
            ),
            role: None,
            release_gate: None,
            #[cfg(feature = "faults")]
            faults: Faults::default(),
        }
    }
}

/// Counters of the runtime, for metrics.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Commands applied by the sequencer (refused ones excluded).
    pub commands_applied: AtomicU64,
    /// Commands refused by `decide`.
    pub commands_refused: AtomicU64,
    /// Commit groups written.
    pub groups_committed: AtomicU64,
    /// Commands acknowledged after their group was synced.
    pub commands_committed: AtomicU64,
    /// Total time spent in synced writes, in nanoseconds.
    pub sync_nanos_total: AtomicU64,
    /// Commands in the last group written.
    pub last_group_commands: AtomicU64,
    /// Bytes of log payload written (the synced bytes of the critical path).
    pub log_bytes_total: AtomicU64,
    /// Log entries written.
    pub log_entries_total: AtomicU64,
    /// Rows written by the materializer (each coalesced row once).
    pub rows_materialized: AtomicU64,
    /// Batches written by the materializer.
    pub materialize_flushes: AtomicU64,
    /// Log entries replayed after the materialized rows at the last open.
    pub recovery_replayed_entries: AtomicU64,
}

/// A request on its way through the sequencer, with the channel its caller waits on.
/// Typed by the request, so its reply is never narrowed from a shared enum; boxed so
/// the queue and the group hold requests of every type.
trait Job: Send {
    /// Decides and applies the request (its events and rows join `group`) and keeps
    /// its result until the group is durable.
    fn run(&mut self, sequencer: &mut Sequencer, group: &mut Group);
    /// Sends the kept result, or `failure` instead when the group did not become
    /// durable.
    fn release(self: Box<Self>, failure: Option<&EngineError>);
    /// Whether it carries a primary's log entries (the only job a standby takes).
    fn replicated(&self) -> bool {
        false
    }
}

/// Sends a job's kept result, or `failure` when its group did not become durable.
fn send_result<T>(
    reply: oneshot::Sender<Result<T>>,
    result: Option<Result<T>>,
    failure: Option<&EngineError>,
) {
    let result = match (failure, result) {
        (Some(failure), _) => Err(unavailable(failure)),
        (None, Some(result)) => result,
        (None, None) => Err(EngineError::Unavailable("the engine is closed".into())),
    };
    let _ = reply.send(result);
}

struct Submitted<R: Request> {
    request: R,
    reply: oneshot::Sender<Result<R::Output>>,
    result: Option<Result<R::Output>>,
}

impl<R: Request> Job for Submitted<R> {
    fn run(&mut self, sequencer: &mut Sequencer, group: &mut Group) {
        let result = sequencer.execute_guarded(&self.request, group);
        if result.is_err() {
            sequencer.stats.commands_refused.fetch_add(1, Ordering::Relaxed);
        }
        self.result = Some(result);
    }

    fn release(self: Box<Self>, failure: Option<&EngineError>) {
        send_result(self.reply, self.result, failure);
    }
}

/// A primary's log entries on their way into a standby's state and log.
struct Replicated {
    entries: Vec<LogEntry>,
    reply: oneshot::Sender<Result<Lsn>>,
    result: Option<Result<Lsn>>,
}

impl Job for Replicated {
    fn run(&mut self, sequencer: &mut Sequencer, group: &mut Group) {
        let entries = std::mem::take(&mut self.entries);
        self.result = Some(sequencer.replicate(entries, group));
    }

    fn release(self: Box<Self>, failure: Option<&EngineError>) {
        send_result(self.reply, self.result, failure);
    }

    fn replicated(&self) -> bool {
        true
    }
}

enum Envelope {
    Request(Box<dyn Job>),
    /// Sent by [`Engine::close`]: finish what came before, then stop.
    Shutdown,
}

/// Commands applied in memory, waiting to be made durable together.
#[derive(Default)]
struct Group {
    entries: Vec<LogEntry>,
    rows: Vec<Row>,
    /// Successes and refusals alike: a refusal was decided against state that may not
    /// be durable yet, so it waits for its group too.
    replies: Vec<Box<dyn Job>>,
    last_lsn: u64,
    counters: Vec<(&'static str, u64)>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.entries.is_empty()
    }

    fn merge(&mut self, later: Group) {
        self.entries.extend(later.entries);
        self.rows.extend(later.rows);
        self.replies.extend(later.replies);
        self.last_lsn = self.last_lsn.max(later.last_lsn);
        self.counters = later.counters;
    }
}

/// The hand-over point between sequencer and committer.
#[derive(Default)]
pub(crate) struct Slot {
    pending: Mutex<(Option<Group>, bool)>,
    /// Whether `pending` holds a group: what the committer polls before it sleeps.
    has_group: AtomicBool,
    /// Whether the committer is waiting for a group (it found none): the sequencer then
    /// hands over what it has applied at once instead of draining its queue first.
    committer_idle: AtomicBool,
    ready: Condvar,
    room: Condvar,
}

impl Slot {
    /// Whether the committer waits with nothing to write. A sequencer that drained its
    /// whole queue before handing over would leave the committer idle while it applies
    /// a large group, and itself idle while that group syncs, every caller moving in
    /// one cohort; handing over as soon as the committer waits overlaps the two.
    fn waits_for_a_group(&self) -> bool {
        self.committer_idle.load(Ordering::Acquire) && !self.has_group.load(Ordering::Acquire)
    }

    /// Tells the committer that no more groups will come.
    pub(crate) fn stop(&self) {
        let mut pending = self.pending.lock();
        pending.1 = true;
        self.ready.notify_all();
    }
}

const RUNNING: u8 = 0;
const CLOSING: u8 = 1;
const FAILED: u8 = 2;

/// Whether the engine takes commands: running, closing (queued commands complete, new
/// ones are refused) or failed (nothing more is applied or written).
#[derive(Default)]
pub(crate) struct Health {
    state: AtomicU8,
    reason: Mutex<Option<String>>,
}

impl Health {
    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(%reason, "engine stopped accepting writes");
        self.set(FAILED, reason);
    }

    fn close(&self) {
        self.set(CLOSING, "the engine is closed".into());
    }

    fn set(&self, state: u8, reason: String) {
        let mut current = self.reason.lock();
        if self.state.load(Ordering::Acquire) < state {
            *current = Some(reason);
            self.state.store(state, Ordering::Release);
        }
    }

    fn check(&self) -> Result<()> {
        if self.state.load(Ordering::Acquire) != RUNNING {
            let reason = self.reason.lock().clone().unwrap_or_default();
            return Err(EngineError::Unavailable(reason));
        }
        Ok(())
    }

    pub(crate) fn failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
    }
}

/// Makes a thread's panic fail-stop: the engine stops taking writes, and the committer
/// (through the hand-over slot, when given) is told no more groups will come, so no
/// caller and no `close` waits forever.
pub(crate) struct StopOnPanic {
    pub(crate) health: Arc<Health>,
    pub(crate) what: &'static str,
    pub(crate) slot: Option<Arc<Slot>>,
}

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.health.fail(format!("the {} panicked", self.what));
            if let Some(slot) = &self.slot {
                slot.stop();
            }
        }
    }
}

/// The start of a promotion, run by the sequencer between replicated jobs: from it on
/// no replicated entry is applied, and its reply (released with its group, so once
/// everything before it is durable) is the last LSN of the old epoch.
struct Promotion {
    reply: oneshot::Sender<Result<Lsn>>,
    result: Option<Result<Lsn>>,
}

impl Job for Promotion {
    fn run(&mut self, sequencer: &mut Sequencer, _group: &mut Group) {
        self.result = Some(if sequencer.role.get() == STANDBY {
            sequencer.role.set(PROMOTING);
            Ok(sequencer.state.last_lsn())
        } else {
            Err(EngineError::InvalidState("only a standby is promoted".into()))
        });
    }

    fn release(self: Box<Self>, failure: Option<&EngineError>) {
        send_result(self.reply, self.result, failure);
    }

    fn replicated(&self) -> bool {
        true
    }
}

/// The node's role, shared by the engine and its threads; `PROMOTING` refuses
/// commands and replicated entries alike while a promotion settles.
#[derive(Default)]
pub(crate) struct RoleCell(AtomicU8);

const PRIMARY: u8 = 0;
const STANDBY: u8 = 1;
const PROMOTING: u8 = 2;

impl RoleCell {
    fn new(role: NodeRole) -> RoleCell {
        RoleCell(AtomicU8::new(role.code()))
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, value: u8) {
        self.0.store(value, Ordering::Release);
    }
}

struct Inner {
    role: Arc<RoleCell>,
    epochs: Mutex<Epochs>,
    cluster: u64,
    /// Held by a promotion or a step-down from start to end.
    role_change: Mutex<()>,
    gate: Option<Arc<dyn ReleaseGate>>,
    state: Arc<State>,
    /// `None` once closed, so the directory is released even while clones live on.
    store: parking_lot::RwLock<Option<Arc<Store>>>,
    sender: Sender<Envelope>,
    health: Arc<Health>,
    durable: watch::Sender<u64>,
    stats: Arc<EngineStats>,
    bounds: Arc<LogBounds>,
    tail: Arc<LogTail>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    clock: Arc<dyn Clock>,
}

/// An open engine. Cheap to clone; the engine stops when the last clone is dropped or
/// [`Engine::close`] is called.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &*self.inner.store.read())
            .field("last_lsn", &self.inner.state.last_lsn())
            .finish()
    }
}

impl Engine {
    /// Opens the engine on `config.data_dir`, recovering the state it holds. What fell
    /// due while it was closed (reservations, carts, records past their time to live)
    /// is expired on a primary before it returns, as far as one tick takes
    /// ([`crate::EXPIRIES_PER_COMMAND_MAX`] of each kind); the ticks after it work off
    /// the rest at once.
    ///
    /// Fails with [`EngineError::IncompatibleData`] when the directory was written in
    /// another format, and with [`EngineError::Storage`] when it cannot be opened.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        if config.log_consumer_lag_max < config.log_retain_entries_min {
            // A new consumer starts at the first entry held, that many behind: it
            // would be dropped at once.
            return Err(EngineError::field(
                "log_consumer_lag_max",
                "must be at least log_retain_entries_min",
            ));
        }
        let mut store = Store::open(&StoreConfig {
            path: config.data_dir.clone(),
            column_families: codec::entity_cfs(),
            skip_list_column_families: codec::skip_list_cfs(),
            backend: config.backend,
            #[cfg(feature = "faults")]
            faults: config.faults.disk.clone(),
        })
        .map_err(|e| match e {
            e if e.is_corruption() => EngineError::IncompatibleData(e.to_string()),
            e => EngineError::Storage(e),
        })?;
        codec::check_format(&store)?;
        // After the format checks, which upgrade the log and the rows together in one
        // atomic batch while they are still in one database.
        store.separate_log()?;
        let (mut role, epochs) = replica::load(&store)?;
        let cluster = replica::cluster_id(&store)?;
        match config.role {
            Some(NodeRole::Primary) if role == NodeRole::Standby => {
                return Err(EngineError::InvalidState(
                    "the data directory belongs to a standby: promote it first".into(),
                ))
            }
            Some(NodeRole::Standby) if role == NodeRole::Primary => {
                replica::store(&store, NodeRole::Standby, &epochs)?;
                role = NodeRole::Standby;
            }
            _ => {}
        }
        let role = Arc::new(RoleCell::new(role));
        let started = Instant::now();
        let store = Arc::new(store);
        let recovered = crate::kernel::recovery::recover(
            &store,
            config.orders_in_memory,
            config.idempotency_records_in_memory,
            config.limits.idempotency_records_max,
        )?;
        let state = Arc::new(recovered.state);
        let last_lsn = state.last_lsn().0;
        tracing::info!(
            lsn = last_lsn,
            replayed = recovered.replayed,
            products = state.product_count(),
            orders = state.order_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered"
        );
        let bounds = Arc::new(LogBounds::load(
            &store,
            recovered.materialized_lsn,
            recovered.persisted_lsn,
            recovered.first_log_lsn,
        )?);
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_commands_max.max(1));
        let health = Arc::new(Health::default());
        let (durable, _) = watch::channel(last_lsn);
        let stats = Arc::new(EngineStats::default());
        stats.recovery_replayed_entries.store(recovered.replayed, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        let (to_materializer, from_committer) =
            crossbeam_channel::bounded(config.materialize_groups_max.max(1));
        let rng: Box<dyn IdSource + Send> = match config.id_seed {
            Some(seed) => Box::new(rand::rngs::StdRng::seed_from_u64(seed)),
            None => Box::new(rand::rngs::StdRng::from_os_rng()),
        };
        let (started, sequencer_started) = crossbeam_channel::bounded(1);
        let sequencer = Sequencer {
            started: Some(started),
            role: role.clone(),
            state: state.clone(),
            receiver,
            slot: slot.clone(),
            health: health.clone(),
            stats: stats.clone(),
            rng,
            clock: config.clock.clone(),
            limits: config.limits.clone(),
            group_commands_max: config.group_commands_max.max(1),
            tick_interval: Duration::from_millis(config.tick_interval_ms.max(1)),
            last_now: 0,
            #[cfg(feature = "faults")]
            faults: config.faults.clone(),
        };
        let (releaser, gated) = match &config.release_gate {
            Some(gate) => {
                let (sender, receiver) = crossbeam_channel::bounded(RELEASES_WAITING_MAX);
                let releaser = Releaser { gate: gate.clone(), receiver };
                (Some(releaser), Some(sender))
            }
            None => (None, None),
        };
        let tail = Arc::new(LogTail::default());
        let committer = Committer {
            gated,
            tail: tail.clone(),
            store: store.clone(),
            slot,
            health: health.clone(),
            durable: durable.clone(),
            stats: stats.clone(),
            materializer: to_materializer,
            #[cfg(feature = "faults")]
            faults: config.faults.clone(),
        };
        let (persist, persist_requests) = crossbeam_channel::bounded(1);
        let persister = Persister {
            store: store.clone(),
            bounds: bounds.clone(),
            health: health.clone(),
            requests: persist_requests,
        };
        let materializer = Materializer {
            persist,
            store: store.clone(),
            state: state.clone(),
            receiver: from_committer,
            health: health.clone(),
            bounds: bounds.clone(),
            stats: stats.clone(),
            pacing: Pacing {
                interval: Duration::from_millis(config.materialize_interval_ms.max(1)),
                persist_interval: Duration::from_millis(config.persist_interval_ms.max(1)),
                rows_max: config.materialize_rows_max.max(1),
                retain_entries_min: config.log_retain_entries_min,
                consumer_lag_max: config.log_consumer_lag_max,
            },
        };
        // Joined in this order at close: each drains what the one before handed over.
        let mut threads = vec![
            spawn("emporium-sequencer", move || sequencer.run())?,
            spawn(COMMITTER_THREAD, move || committer.run())?,
        ];
        if let Some(releaser) = releaser {
            threads.push(spawn("emporium-releaser", move || releaser.run())?);
        }
        threads.push(spawn("emporium-materializer", move || materializer.run())?);
        threads.push(spawn("emporium-persister", move || persister.run())?);
        // The sequencer's first tick has run (or the sequencer has stopped, which the
        // first command reports).
        let _ = sequencer_started.recv();
        Ok(Engine {
            inner: Arc::new(Inner {
                role,
                epochs: Mutex::new(epochs),
                cluster,
                role_change: Mutex::new(()),
                gate: config.release_gate.clone(),
                state,
                store: parking_lot::RwLock::new(Some(store)),
                sender,
                health,
                durable,
                stats,
                bounds,
                tail,
                threads: Mutex::new(threads),
                clock: config.clock.clone(),
            }),
        })
    }

    /// Sends a command and waits (asynchronously) until it is durable.
    pub async fn send<R: Request>(&self, request: R) -> Result<R::Output> {
        let receiver = self.enqueue(request)?;
        match receiver.await {
            Ok(reply) => reply,
            Err(_) => Err(self.stopped()),
        }
    }

    /// The blocking facade, for callers outside an async runtime.
    pub fn blocking(&self) -> BlockingEngine {
        BlockingEngine { engine: self.clone() }
    }

    fn enqueue<R: Request>(&self, request: R) -> Result<oneshot::Receiver<Result<R::Output>>> {
        self.inner.health.check()?;
        if self.inner.role.get() != PRIMARY {
            return Err(EngineError::ReadOnlyStandby);
        }
        if let Some(gate) = &self.inner.gate {
            gate.admit()?;
        }
        let (reply, receiver) = oneshot::channel();
        self.push(Box::new(Submitted { request, reply, result: None }))?;
        Ok(receiver)
    }

    fn push(&self, job: Box<dyn Job>) -> Result<()> {
        match self.inner.sender.try_send(Envelope::Request(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(EngineError::Overloaded),
            Err(TrySendError::Disconnected(_)) => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> EngineError {
        self.inner
            .health
            .check()
            .err()
            .unwrap_or_else(|| EngineError::Unavailable("the engine is closed".into()))
    }

    /// The time on the engine's clock (the one its commands are stamped with).
    pub fn now_ms(&self) -> TimestampMs {
        self.inner.clock.now_ms()
    }

    /// The state, for reads. Reads never wait for the writer; they may see a change up
    /// to one commit group before it is durable.
    pub fn state(&self) -> &State {
        &self.inner.state
    }

    /// The LSN of the last command applied in memory.
    pub fn last_lsn(&self) -> Lsn {
        self.inner.state.last_lsn()
    }

    /// The LSN up to which everything is durable.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(*self.inner.durable.borrow())
    }

    /// Watches the durable LSN: log consumers wait on it, then [`Engine::read_log`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.durable.subscribe()
    }

    /// Reads up to `entries_max` durable log entries from `from` on.
    ///
    /// Fails with [`EngineError::LogTrimmed`] when `from` is below the first entry the
    /// log still holds (retention trimmed it): register a [`LogConsumer`] to keep the
    /// log from where you are.
    pub fn read_log(&self, from: Lsn, entries_max: usize) -> Result<Vec<LogEntry>> {
        let durable = self.durable_lsn().0;
        let from = Lsn(from.0.max(1));
        self.inner.bounds.check_held(from)?;
        let store = self.store()?;
        let mut out = Vec::new();
        if entries_max == 0 {
            return Ok(out);
        }
        // A gap means a trim raced with this read (`check_held` passed just before).
        let trimmed =
            |next, found| EngineError::LogTrimmed { requested: Lsn(next), first: Lsn(found) };
        codec::walk_log(&store, from.0, trimmed, &mut |entry| {
            if entry.lsn.0 > durable {
                return Ok(false);
            }
            out.push(entry);
            Ok(out.len() < entries_max)
        })?;
        Ok(out)
    }

    /// Durable entries from `from` on, up to `entries_max`, if the group holding `from`
    /// is among the last ones committed (the [`LogTail`]; empty if not): what a view
    /// close behind the log reads without a store read. One part per group.
    pub(crate) fn read_tail(&self, from: Lsn, entries_max: usize) -> Vec<TailEntries> {
        self.inner.tail.from(from, entries_max)
    }

    /// The first LSN the log still holds; everything below was trimmed by retention.
    pub fn first_log_lsn(&self) -> Lsn {
        Lsn(self.inner.bounds.first.load(Ordering::Acquire))
    }

    /// The LSN the materialized rows reflect: recovery replays the log after it.
    pub fn materialized_lsn(&self) -> Lsn {
        Lsn(self.inner.bounds.materialized.load(Ordering::Acquire))
    }

    /// Registers (or finds again, after a restart) the log consumer `name`: the log is
    /// kept from its position on until it [`LogConsumer::advance`]s, up to
    /// [`EngineConfig::log_consumer_lag_max`] entries, past which it is dropped. A new
    /// consumer starts at the first entry the log holds. Names are 1–64 characters of
    /// `[a-z0-9._-]`.
    pub fn register_consumer(&self, name: &str) -> Result<LogConsumer> {
        let valid = (1..=64).contains(&name.len())
            && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if !valid {
            return Err(EngineError::field("name", "1-64 characters of [a-z0-9._-]"));
        }
        let store = self.store()?;
        let mut consumers = self.inner.bounds.consumers.lock();
        if let Some(cell) = consumers.get(name) {
            return Ok(LogConsumer { name: name.into(), cell: cell.clone(), engine: self.clone() });
        }
        let position = self.inner.bounds.first.load(Ordering::Acquire).saturating_sub(1);
        let key = format!("{}{name}", codec::META_CONSUMER_PREFIX).into_bytes();
        let mut batch = WriteBatch::default();
        batch.put_owned(emporium_storage::CF_META, key, position.to_le_bytes().to_vec());
        store.write(&batch, true)?;
        let cell =
            Arc::new(ConsumerCell { position: AtomicU64::new(position), ..Default::default() });
        consumers.insert(name.into(), cell.clone());
        Ok(LogConsumer { name: name.into(), cell, engine: self.clone() })
    }

    /// Forgets the log consumer `name`; the log it held is trimmed at the next flush.
    pub fn unregister_consumer(&self, name: &str) -> Result<()> {
        let store = self.store()?;
        let mut consumers = self.inner.bounds.consumers.lock();
        if let Some(cell) = consumers.remove(name) {
            cell.dropped.store(true, Ordering::Release);
            let key = format!("{}{name}", codec::META_CONSUMER_PREFIX).into_bytes();
            let mut batch = WriteBatch::default();
            batch.delete(emporium_storage::CF_META, &key);
            store.write(&batch, true)?;
            self.inner.bounds.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The registered log consumers and their positions, by name.
    pub fn consumers(&self) -> Vec<(String, Lsn)> {
        let consumers = self.inner.bounds.consumers.lock();
        consumers
            .iter()
            .map(|(name, cell)| (name.clone(), Lsn(cell.position.load(Ordering::Acquire))))
            .collect()
    }

    /// Whether this node takes commands (a primary) or applies a primary's log (a
    /// standby; a promotion in progress counts as one).
    pub fn role(&self) -> NodeRole {
        match self.inner.role.get() {
            PRIMARY => NodeRole::Primary,
            _ => NodeRole::Standby,
        }
    }

    /// The node's history of epochs.
    pub fn epochs(&self) -> Epochs {
        self.inner.epochs.lock().clone()
    }

    /// The id of the cluster this directory belongs to: drawn when it was created,
    /// shared by every standby bootstrapped from it.
    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.inner.epochs.lock().current()
    }

    /// Applies a primary's log entries on a standby, through the same `apply` the
    /// primary used, appends them to this node's log and returns once they are
    /// durable here, with the last LSN applied.
    ///
    /// The entries must follow the last LSN exactly: otherwise
    /// [`EngineError::ReplicaGap`], and nothing from the first misplaced entry on is
    /// applied. On a primary, [`EngineError::InvalidState`].
    pub async fn replicate(&self, entries: Vec<LogEntry>) -> Result<Lsn> {
        self.inner.health.check()?;
        let (reply, receiver) = oneshot::channel();
        self.push(Box::new(Replicated { entries, reply, result: None }))?;
        match receiver.await {
            Ok(reply) => reply,
            Err(_) => Err(self.stopped()),
        }
    }

    /// Records `epochs`, a primary's history, on a standby (synced): it must keep
    /// this node's current epoch or move past it.
    pub fn adopt_epochs(&self, epochs: Epochs) -> Result<()> {
        let _change = self.inner.role_change.lock();
        if self.inner.role.get() != STANDBY {
            return Err(EngineError::InvalidState(
                "only a standby adopts a primary's epochs".into(),
            ));
        }
        let mut current = self.inner.epochs.lock();
        if epochs.current() < current.current() {
            return Err(EngineError::InvalidState(format!(
                "the primary is in epoch {}, behind this node's {}",
                epochs.current(),
                current.current()
            )));
        }
        if *current != epochs {
            replica::store(&*self.store()?, NodeRole::Standby, &epochs)?;
            *current = epochs;
        }
        Ok(())
    }

    /// Promotes a standby: once everything it applied is durable, a new epoch starts
    /// at the next LSN (recorded synced) and the node takes commands. Returns the new
    /// epoch. Fails with [`EngineError::InvalidState`] on a primary.
    pub fn promote(&self) -> Result<u64> {
        let _change = self.inner.role_change.lock();
        if self.inner.role.get() != STANDBY {
            return Err(EngineError::InvalidState("this node is already a primary".into()));
        }
        // The sequencer takes the promotion between two replicated jobs (never in the
        // middle of one) and refuses every replicated entry after it.
        let (reply, receiver) = oneshot::channel();
        self.push(Box::new(Promotion { reply, result: None }))?;
        let last = match receiver.blocking_recv() {
            Ok(last) => last?,
            Err(_) => return Err(self.stopped()),
        };
        let promoted = (|| {
            // Its reply came with its group, after everything before it was durable;
            // the wait is a guard.
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.durable_lsn() < last {
                self.inner.health.check()?;
                if Instant::now() > deadline {
                    return Err(EngineError::Unavailable("the log did not become durable".into()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let epochs = replica::promoted(&self.inner.epochs.lock(), last);
            replica::store(&*self.store()?, NodeRole::Primary, &epochs)?;
            let epoch = epochs.current();
            *self.inner.epochs.lock() = epochs;
            Ok(epoch)
        })();
        match promoted {
            Ok(epoch) => {
                self.inner.role.set(PRIMARY);
                tracing::info!(epoch, lsn = self.last_lsn().0, "promoted to primary");
                Ok(epoch)
            }
            Err(e) => {
                self.inner.role.set(STANDBY);
                Err(e)
            }
        }
    }

    /// Makes a primary that learned of a newer epoch elsewhere a standby (recorded
    /// synced, so a restart does not make it a primary again): it takes no more
    /// commands, and the release gate stops acknowledging.
    pub fn step_down(&self, reason: &str) -> Result<()> {
        let _change = self.inner.role_change.lock();
        if self.inner.role.get() == STANDBY {
            return Ok(());
        }
        self.inner.role.set(STANDBY);
        tracing::warn!(reason, "stepped down to standby");
        replica::store(&*self.store()?, NodeRole::Standby, &self.inner.epochs.lock())
    }

    /// Writes a consistent copy of the data directory into `to` (which must not exist);
    /// the copy opens as an engine at some durable LSN.
    pub fn checkpoint(&self, to: &Path) -> Result<()> {
        Ok(self.store()?.checkpoint(to)?)
    }

    fn store(&self) -> Result<Arc<Store>> {
        self.inner.store.read().clone().ok_or_else(|| self.stopped())
    }

    /// Memory the storage backend holds for its buffers and caches (RocksDB's memtables,
    /// table readers and block cache), when it can tell; `None` after a close.
    pub fn storage_memory_bytes(&self) -> Option<u64> {
        self.store().ok()?.memory_bytes()
    }

    /// Commands waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.inner.sender.len()
    }

    /// The runtime's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.inner.stats
    }

    /// Why the engine stopped accepting writes, if it did (a failed write, a panic in
    /// the sequencer or committer) or that it was closed.
    pub fn failure(&self) -> Option<String> {
        self.inner.health.reason.lock().clone()
    }

    /// Stops the engine: commands already queued are applied and made durable, then
    /// the threads exit. Other clones see [`EngineError::Unavailable`] afterwards.
    pub fn close(self) {
        self.inner.shutdown();
    }
}

impl Inner {
    fn shutdown(&self) {
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        if threads.is_empty() {
            return;
        }
        // New commands are refused from here on; queued ones still complete.
        self.health.close();
        let _ = self.sender.send(Envelope::Shutdown);
        for thread in threads {
            let _ = thread.join();
        }
        self.store.write().take();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| EngineError::Unavailable(format!("cannot start the {name} thread: {e}")))
}

/// The blocking facade of an [`Engine`]. Do not call it from inside an async runtime's
/// worker thread; use [`Engine::send`] there.
#[derive(Clone, Debug)]
pub struct BlockingEngine {
    engine: Engine,
}

impl BlockingEngine {
    /// Sends a command and blocks until it is durable.
    pub fn send<R: Request>(&self, request: R) -> Result<R::Output> {
        let receiver = self.engine.enqueue(request)?;
        match receiver.blocking_recv() {
            Ok(reply) => reply,
            Err(_) => Err(self.engine.stopped()),
        }
    }

    /// The engine this facade sends to.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

struct Sequencer {
    /// Told once the first tick has run: `Engine::open` returns after it.
    started: Option<Sender<()>>,
    role: Arc<RoleCell>,
    state: Arc<State>,
    receiver: Receiver<Envelope>,
    slot: Arc<Slot>,
    health: Arc<Health>,
    stats: Arc<EngineStats>,
    rng: Box<dyn IdSource + Send>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    group_commands_max: usize,
    tick_interval: Duration,
    last_now: TimestampMs,
    #[cfg(feature = "faults")]
    faults: Faults,
}

impl Sequencer {
    fn run(mut self) {
        // Commands are guarded one by one (`execute_guarded`); this covers the rest of
        // the loop (the clock, the hand-over).
        let _stop = StopOnPanic {
            health: self.health.clone(),
            what: "sequencer",
            slot: Some(self.slot.clone()),
        };
        // Timers that fell due while the engine was closed fire before `Engine::open`
        // returns, so that no command or clock change of the caller's races with them.
        let mut group = Group::default();
        let backlog = self.role.get() == PRIMARY && self.tick(&mut group);
        if !group.is_empty() {
            self.hand_over(group);
        }
        if let Some(started) = self.started.take() {
            let _ = started.send(());
        }
        let mut next_tick =
            if backlog { Instant::now() } else { Instant::now() + self.tick_interval };
        let mut running = true;
        while running {
            #[cfg(feature = "faults")]
            {
                while self.faults.hold_sequencer.load(Ordering::Acquire)
                    && self.health.check().is_ok()
                {
                    self.faults.sequencer_held.store(true, Ordering::Release);
                    std::thread::sleep(Duration::from_millis(1));
                }
                self.faults.sequencer_held.store(false, Ordering::Release);
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match recv_polling(&self.receiver, wait, polls(&self.stats)) {
                Ok(envelope) => Some(envelope),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group = Group::default();
            let mut next = first;
            while let Some(envelope) = next.take() {
                match envelope {
                    Envelope::Request(job) => self.handle(job, &mut group),
                    Envelope::Shutdown => running = false,
                }
                if running
                    && group.replies.len() < self.group_commands_max
                    && !self.slot.waits_for_a_group()
                {
                    next = self.receiver.try_recv().ok();
                }
            }
            if running && Instant::now() >= next_tick {
                // A backlog (more due than one `ExpireDue` takes) is worked off at once,
                // one batch per turn of the loop between commands, not one per interval.
                // A standby runs no timers (its primary's arrive in the log) but keeps the
                // interval, so its loop sleeps between commands.
                let backlog = self.role.get() == PRIMARY && self.tick(&mut group);
                next_tick =
                    if backlog { Instant::now() } else { Instant::now() + self.tick_interval };
            }
            if !group.is_empty() {
                self.hand_over(group);
            }
        }
        // Whatever raced with the shutdown is refused, not left hanging.
        while let Ok(envelope) = self.receiver.try_recv() {
            if let Envelope::Request(job) = envelope {
                job.release(Some(&EngineError::Unavailable("the engine is closed".into())));
            }
        }
        self.slot.stop();
    }

    fn now(&mut self) -> TimestampMs {
        // Time never runs backwards for the domain, even if the wall clock does.
        self.last_now = self.last_now.max(self.clock.now_ms());
        self.last_now
    }

    fn handle(&mut self, mut job: Box<dyn Job>, group: &mut Group) {
        // Commands queued before a close still complete; after a storage failure
        // nothing is applied any more.
        if self.health.failed() {
            return job.release(Some(&self.health.check().expect_err("failed")));
        }
        // The role is checked here too: commands queued before a step-down or a
        // promotion's start are refused, not applied.
        let role = self.role.get();
        if role != PRIMARY && !job.replicated() {
            return job.release(Some(&EngineError::ReadOnlyStandby));
        }
        job.run(self, group);
        group.replies.push(job);
    }

    /// [`Self::execute`], but a panic (a broken invariant) stops the engine: nothing of
    /// the half-applied state is ever made durable or acknowledged, every caller not
    /// yet answered (this one included) gets `Unavailable` with the reason, and
    /// [`Engine::failure`] (the server's `/readyz`) reports it until the directory is
    /// reopened, which recovers the durable prefix.
    fn execute_guarded<R: Request>(&mut self, request: &R, group: &mut Group) -> Result<R::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.execute(request, group))) {
            Ok(result) => result,
            Err(panic) => {
                self.health.fail(format!("the sequencer panicked: {}", panic_message(&panic)));
                Err(self.health.check().expect_err("just failed"))
            }
        }
    }

    /// Decides and applies one command; its events and rows join `group`.
    fn execute<R: Request>(&mut self, request: &R, group: &mut Group) -> Result<R::Output> {
        let now = self.now();
        let mut ctx = Ctx { now, ids: &mut *self.rng, limits: &self.limits };
        let decision = request.decide(&self.state, &mut ctx)?;
        let mut events = decision.events;
        for event in &events {
            apply(&self.state, event, now, &mut group.rows);
            #[cfg(feature = "faults")]
            if self.faults.panic_sequencer.swap(false, Ordering::AcqRel) {
                panic!("injected fault: the sequencer panics halfway through a command");
            }
        }
        let output = R::reply(&self.state, decision.outcome);
        // What the command records about its own answer joins the same log entry, so
        // the effect and the record are durable together or not at all.
        if let Some(event) = request.after(&self.state, &output, &ctx) {
            apply(&self.state, &event, now, &mut group.rows);
            events.push(event);
        }
        if !events.is_empty() {
            let lsn = self.state.last_lsn.load(Ordering::Relaxed) + 1;
            self.state.last_lsn.store(lsn, Ordering::Release);
            group.last_lsn = lsn;
            group.entries.push(LogEntry { lsn: Lsn(lsn), at: now, events });
            self.stats.commands_applied.fetch_add(1, Ordering::Relaxed);
        }
        Ok(output)
    }

    /// Applies a primary's entries; each must follow the last LSN.
    fn replicate(&mut self, entries: Vec<LogEntry>, group: &mut Group) -> Result<Lsn> {
        if self.role.get() != STANDBY {
            return Err(EngineError::InvalidState(
                "only a standby applies replicated entries".into(),
            ));
        }
        for entry in entries {
            let expected = self.state.last_lsn.load(Ordering::Relaxed) + 1;
            if entry.lsn.0 != expected {
                return Err(EngineError::ReplicaGap { expected: Lsn(expected), found: entry.lsn });
            }
            let applied = catch_unwind(AssertUnwindSafe(|| {
                for event in &entry.events {
                    apply(&self.state, event, entry.at, &mut group.rows);
                }
            }));
            if let Err(panic) = applied {
                // Half of an entry is applied: only reopening (recovery) gives a state
                // that is a prefix of the log again.
                self.health.fail(format!(
                    "replicated entry {} does not apply: {}",
                    entry.lsn.0,
                    panic_message(&panic)
                ));
                return Err(self.health.check().expect_err("just failed"));
            }
            self.last_now = self.last_now.max(entry.at);
            self.state.last_lsn.store(entry.lsn.0, Ordering::Release);
            group.last_lsn = entry.lsn.0;
            group.entries.push(entry);
            self.stats.commands_applied.fetch_add(1, Ordering::Relaxed);
        }
        Ok(self.state.last_lsn())
    }

    /// Expires due reservations and records, when there are any; returns whether more
    /// are still due after this batch.
    fn tick(&mut self, group: &mut Group) -> bool {
        let now = self.now();
        if !timers::due(&self.state, now, &self.limits) || self.health.failed() {
            return false;
        }
        // The tick's reply has no waiter; its events join the group.
        if let Err(e) = self.execute_guarded(&ExpireDue, group) {
            tracing::error!(error = %e, "expiry failed");
            return false;
        }
        timers::due(&self.state, now, &self.limits)
    }

    fn hand_over(&mut self, mut group: Group) {
        // The counters as of the group's last command: every group carries them, even one
        // of refusals only, since a merge keeps the later group's.
        group.counters = self.state.counter_snapshot();
        let mut pending = self.slot.pending.lock();
        // Back-pressure: while the committer is more than one full group behind, wait.
        while pending.0.as_ref().is_some_and(|g| g.replies.len() >= self.group_commands_max * 4) {
            self.slot.room.wait(&mut pending);
        }
        match &mut pending.0 {
            Some(waiting) => waiting.merge(group),
            None => pending.0 = Some(group),
        }
        self.slot.has_group.store(true, Ordering::Release);
        self.slot.ready.notify_one();
    }
}

/// The name of the committer's thread (the one that makes each group durable), for
/// tools that look the thread up, such as the durable bench's scheduling figures.
pub const COMMITTER_THREAD: &str = "emporium-committer";

/// How long the sequencer and the committer poll for their next command or group,
/// yielding the core between polls, before they sleep, while groups are small. On a
/// virtual machine a thread woken once its core has halted runs again only ~35 µs
/// later (a ping-pong between two threads: 33 µs a round trip back to back, 77 µs
/// after 200 µs idle), and a lone caller's command passes through two such wake-ups
/// before its own.
const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(200);

/// The largest committed group after which the sequencer and the committer poll. With
/// few callers each command waits on every wake-up; with many, a wake-up is shared by
/// a group of them and polling only burns the cores the callers need (measured at 256
/// flash-sale clients, groups of ~118: 1.5 µs more CPU per purchase while polling).
const POLL_GROUP_COMMANDS_MAX: u64 = 4;

/// Whether the last committed group was small enough to poll after it.
fn polls(stats: &EngineStats) -> bool {
    stats.last_group_commands.load(Ordering::Relaxed) <= POLL_GROUP_COMMANDS_MAX
}

/// `receiver.recv_timeout(wait)`, polling for [`POLL_BEFORE_SLEEP`] first when `poll`.
fn recv_polling<T>(
    receiver: &Receiver<T>,
    wait: Duration,
    poll: bool,
) -> Result<T, RecvTimeoutError> {
    if !poll {
        return receiver.recv_timeout(wait);
    }
    let started = Instant::now();
    loop {
        match receiver.try_recv() {
            Ok(value) => return Ok(value),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        let waited = started.elapsed();
        if waited >= POLL_BEFORE_SLEEP.min(wait) {
            return receiver.recv_timeout(wait.saturating_sub(waited));
        }
        std::thread::yield_now();
    }
}

/// Log entries the [`LogTail`] holds at most: about a quarter of a second of a flash
/// sale's purchases at 30,000/s.
const LOG_TAIL_ENTRIES_MAX: usize = 8192;

/// The last groups' log entries, as the committer made them durable, for the views that
/// follow the log (search, recommendations, KPIs). Each view read every entry back from
/// the store and decoded it, three reads and decodes of every entry between them (4% of
/// the server's CPU in a flash sale); one close behind reads them here. Bounded by
/// [`LOG_TAIL_ENTRIES_MAX`]; a view further behind reads the store.
#[derive(Default)]
struct LogTail {
    groups: Mutex<TailGroups>,
}

#[derive(Default)]
struct TailGroups {
    /// Each group's entries, in log order; none is empty.
    groups: VecDeque<Arc<Vec<LogEntry>>>,
    /// The entries in `groups`.
    entries: usize,
}

impl LogTail {
    /// Keeps a durable group's entries, letting the oldest groups go past the bound.
    fn push(&self, entries: Vec<LogEntry>) {
        if entries.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        {
            let mut tail = self.groups.lock();
            tail.entries += entries.len();
            tail.groups.push_back(Arc::new(entries));
            while tail.entries > LOG_TAIL_ENTRIES_MAX && tail.groups.len() > 1 {
                let Some(oldest) = tail.groups.pop_front() else { break };
                tail.entries -= oldest.len();
                gone.push(oldest);
            }
        }
        // Dropped outside the lock: a group's entries are many allocations.
        drop(gone);
    }

    /// The entries from `from` on, at most `entries_max`, one part per group: none if
    /// the tail does not hold `from`. They end early where the next LSN is missing.
    fn from(&self, from: Lsn, entries_max: usize) -> Vec<TailEntries> {
        let tail = self.groups.lock();
        let mut parts = Vec::new();
        // The last group starting at or before `from`; LSNs ascend through the groups.
        let at = tail.groups.partition_point(|g| g.first().is_some_and(|e| e.lsn <= from));
        let Some(at) = at.checked_sub(1) else { return parts };
        let (mut next, mut left) = (from, entries_max);
        for group in tail.groups.range(at..) {
            let start = group.partition_point(|e| e.lsn < next);
            if left == 0 || group.get(start).is_none_or(|e| e.lsn != next) {
                break;
            }
            let end = group.len().min(start.saturating_add(left));
            left -= end - start;
            next = Lsn(group[end - 1].lsn.0 + 1);
            parts.push(TailEntries { group: group.clone(), start, end });
        }
        parts
    }
}

/// Entries of one group held by the [`LogTail`], shared with it (no copy).
pub(crate) struct TailEntries {
    group: Arc<Vec<LogEntry>>,
    start: usize,
    end: usize,
}

impl std::ops::Deref for TailEntries {
    type Target = [LogEntry];
    fn deref(&self) -> &[LogEntry] {
        &self.group[self.start..self.end]
    }
}

/// Groups waiting for the release gate at most; past it the committer waits.
const RELEASES_WAITING_MAX: usize = 1024;

/// A durable group's replies, waiting for the release gate.
struct Release {
    lsn: Lsn,
    /// When the group became durable here: the gate's deadline counts from it.
    committed: Instant,
    replies: Vec<Box<dyn Job>>,
}

/// Releases durable groups' replies, in order, as the gate allows (synchronous
/// replication): the committer goes on writing the next groups meanwhile.
struct Releaser {
    gate: Arc<dyn ReleaseGate>,
    receiver: Receiver<Release>,
}

impl Releaser {
    fn run(self) {
        for release in self.receiver {
            let verdict = self.gate.wait(release.lsn, release.committed);
            for job in release.replies {
                job.release(verdict.as_ref().err());
            }
        }
    }
}

struct Committer {
    gated: Option<Sender<Release>>,
    tail: Arc<LogTail>,
    store: Arc<Store>,
    slot: Arc<Slot>,
    health: Arc<Health>,
    durable: watch::Sender<u64>,
    stats: Arc<EngineStats>,
    materializer: crossbeam_channel::Sender<Durable>,
    #[cfg(feature = "faults")]
    faults: Faults,
}

impl Committer {
    fn run(self) {
        loop {
            let mut polled = !polls(&self.stats);
            let group = {
                let mut pending = self.slot.pending.lock();
                loop {
                    if let Some(group) = pending.0.take() {
                        self.slot.committer_idle.store(false, Ordering::Release);
                        self.slot.has_group.store(false, Ordering::Release);
                        self.slot.room.notify_all();
                        break Some(group);
                    }
                    if pending.1 {
                        break None;
                    }
                    self.slot.committer_idle.store(true, Ordering::Release);
                    if !polled {
                        polled = true;
                        let until = Instant::now() + POLL_BEFORE_SLEEP;
                        parking_lot::MutexGuard::unlocked(&mut pending, || {
                            while !self.slot.has_group.load(Ordering::Acquire)
                                && Instant::now() < until
                            {
                                std::thread::yield_now();
                            }
                        });
                        continue;
                    }
                    self.slot.ready.wait(&mut pending);
                }
            };
            match group {
                Some(group) => self.commit(group),
                None => return,
            }
        }
    }

    /// Makes the group durable (its log entries, one synced write), then releases its
    /// replies and hands its rows to the materializer. A group without entries (only
    /// refusals) writes nothing but still checks health: what it refused was decided
    /// against state that a failure may have lost. A panic while writing stops the
    /// engine (fail-stop) like a failed write, and the committer goes on refusing
    /// whatever comes, so no caller is left waiting.
    fn commit(&self, group: Group) {
        if self.health.failed() {
            return refuse(group.replies, self.health.check().expect_err("failed"));
        }
        match catch_unwind(AssertUnwindSafe(|| self.write(&group))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.health.fail(format!("a synced write failed: {e}"));
                return refuse(group.replies, EngineError::Storage(e));
            }
            Err(panic) => {
                self.health.fail(format!("the committer panicked: {}", panic_message(&panic)));
                return refuse(group.replies, self.health.check().expect_err("failed"));
            }
        }
        let written = !group.entries.is_empty();
        let commands = group.replies.len() as u64;
        self.stats.last_group_commands.store(commands, Ordering::Relaxed);
        self.stats.commands_committed.fetch_add(commands, Ordering::Relaxed);
        match &self.gated {
            // Replicated entries (and a promotion) answer to no one's standbys; every
            // command the sequencer ran as a primary waits for the gate, whatever the
            // role is now: a primary that stepped down meanwhile must not acknowledge
            // it on its own.
            Some(gated) => {
                let (own, gate): (Vec<_>, Vec<_>) =
                    group.replies.into_iter().partition(|job| job.replicated());
                for job in own {
                    job.release(None);
                }
                if !gate.is_empty() {
                    let lsn = Lsn(group.last_lsn.max(*self.durable.borrow()));
                    let release = Release { lsn, committed: Instant::now(), replies: gate };
                    if let Err(unsent) = gated.send(release) {
                        let closed = EngineError::Unavailable("the engine is closed".into());
                        let error = self.health.check().err().unwrap_or(closed);
                        refuse(unsent.into_inner().replies, error);
                    }
                }
            }
            None => {
                for job in group.replies {
                    job.release(None);
                }
            }
        }
        // Kept for the views once the callers are answered: the push may drop the
        // oldest group's entries, which is no part of their wait.
        self.tail.push(group.entries);
        if written {
            let durable =
                Durable { rows: group.rows, last_lsn: group.last_lsn, counters: group.counters };
            // Blocks while the materializer is `materialize_groups_max` groups behind:
            // the back-pressure that bounds its lag. It is gone only after a failure.
            let _ = self.materializer.send(durable);
        }
    }

    /// The group's log entries, appended and synced.
    fn write(&self, group: &Group) -> emporium_storage::Result<()> {
        #[cfg(feature = "faults")]
        if self.faults.panic_committer.swap(false, Ordering::AcqRel) {
            panic!("injected fault: the committer panics before a write");
        }
        if group.entries.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::with_capacity(1);
        let mut bytes = 0;
        let mut payload = codec::log_record_start();
        for (i, entry) in group.entries.iter().enumerate() {
            codec::push_log_entry(&mut payload, entry);
            let last = i + 1 == group.entries.len();
            if last || payload.len() >= codec::LOG_RECORD_BYTES_TARGET {
                bytes += payload.len() as u64;
                batch.append_log(entry.lsn.0, &payload);
                payload = codec::log_record_start();
            }
        }
        let started = Instant::now();
        #[cfg(feature = "faults")]
        let sync = !self.faults.unsynced_log;
        #[cfg(not(feature = "faults"))]
        let sync = true;
        self.store.write(&batch, sync)?;
        self.stats
            .sync_nanos_total
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.stats.groups_committed.fetch_add(1, Ordering::Relaxed);
        self.stats.log_bytes_total.fetch_add(bytes, Ordering::Relaxed);
        self.stats.log_entries_total.fetch_add(group.entries.len() as u64, Ordering::Relaxed);
        self.durable.send_replace(group.last_lsn);
        Ok(())
    }
}

fn refuse(replies: Vec<Box<dyn Job>>, error: EngineError) {
    for job in replies {
        job.release(Some(&error));
    }
}

/// What a caller gets when its command's group did not become durable.
fn unavailable(failure: &EngineError) -> EngineError {
    match failure {
        EngineError::Unavailable(reason) => EngineError::Unavailable(reason.clone()),
        EngineError::StandbysUnavailable(reason) => {
            EngineError::StandbysUnavailable(reason.clone())
        }
        EngineError::ReadOnlyStandby => EngineError::ReadOnlyStandby,
        other => EngineError::Unavailable(other.to_string()),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A registered reader of the log (a search index, a standby, webhook deliveries): the
/// log is kept from its position on. Obtained from [`Engine::register_consumer`].
#[derive(Clone)]
pub struct LogConsumer {
    name: String,
    cell: Arc<ConsumerCell>,
    engine: Engine,
}

impl std::fmt::Debug for LogConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConsumer")
            .field("name", &self.name)
            .field("position", &self.position())
            .field("dropped", &self.is_dropped())
            .finish()
    }
}

impl LogConsumer {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last LSN it has processed; the log is kept from the next one on.
    pub fn position(&self) -> Lsn {
        Lsn(self.cell.position.load(Ordering::Acquire))
    }

    /// Records that everything up to `lsn` is processed (persisted with the
    /// materializer's next write). Positions only move forward and never past the
    /// durable LSN.
    pub fn advance(&self, lsn: Lsn) -> Result<()> {
        if self.is_dropped() {
            return Err(EngineError::LogTrimmed {
                requested: Lsn(self.position().0 + 1),
                first: self.engine.first_log_lsn(),
            });
        }
        let durable = self.engine.durable_lsn();
        if lsn > durable {
            return Err(EngineError::field("lsn", format!("beyond the durable LSN {}", durable.0)));
        }
        self.cell.position.fetch_max(lsn.0, Ordering::AcqRel);
        self.engine.inner.bounds.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether it fell more than [`EngineConfig::log_consumer_lag_max`] behind (or was
    /// unregistered) and was dropped: it must resynchronise from a checkpoint and
    /// register again.
    pub fn is_dropped(&self) -> bool {
        self.cell.dropped.load(Ordering::Acquire)
    }

    /// Reads up to `entries_max` entries after its position.
    pub fn read(&self, entries_max: usize) -> Result<Vec<LogEntry>> {
        if self.is_dropped() {
            return Err(EngineError::LogTrimmed {
                requested: Lsn(self.position().0 + 1),
                first: self.engine.first_log_lsn(),
            });
        }
        self.engine.read_log(Lsn(self.position().0 + 1), entries_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(lsns: std::ops::RangeInclusive<u64>) -> Vec<LogEntry> {
        lsns.map(|lsn| LogEntry { lsn: Lsn(lsn), at: 0, events: Vec::new() }).collect()
    }

    fn lsns(parts: Vec<TailEntries>) -> Vec<u64> {
        parts.iter().flat_map(|p| p.iter()).map(|e| e.lsn.0).collect()
    }

    #[test]
    fn the_tail_answers_from_the_group_holding_the_position_on() {
        let tail = LogTail::default();
        assert!(lsns(tail.from(Lsn(1), 10)).is_empty(), "an empty tail holds nothing");
        tail.push(group(1..=3));
        tail.push(Vec::new());
        tail.push(group(4..=4));
        tail.push(group(5..=6));
        tail.push(group(8..=9));
        assert_eq!(lsns(tail.from(Lsn(1), 10)), vec![1, 2, 3, 4, 5, 6], "up to the gap");
        assert_eq!(tail.from(Lsn(1), 10).len(), 3, "a part per group");
        assert_eq!(lsns(tail.from(Lsn(2), 10)), vec![2, 3, 4, 5, 6]);
        assert_eq!(lsns(tail.from(Lsn(2), 1)), vec![2]);
        assert_eq!(lsns(tail.from(Lsn(2), 3)), vec![2, 3, 4]);
        assert_eq!(lsns(tail.from(Lsn(3), 3)), vec![3, 4, 5]);
        assert_eq!(lsns(tail.from(Lsn(6), 10)), vec![6]);
        assert_eq!(lsns(tail.from(Lsn(8), 10)), vec![8, 9]);
        // Not held: a gap, past the end, before the first, nothing asked for.
        assert!(lsns(tail.from(Lsn(7), 10)).is_empty());
        assert!(lsns(tail.from(Lsn(10), 10)).is_empty());
        assert!(lsns(tail.from(Lsn(0), 10)).is_empty());
        assert!(lsns(tail.from(Lsn(1), 0)).is_empty());
    }

    #[test]
    fn the_tail_lets_the_oldest_groups_go_past_its_bound() {
        let tail = LogTail::default();
        let half = LOG_TAIL_ENTRIES_MAX as u64 / 2;
        tail.push(group(1..=half));
        tail.push(group(half + 1..=2 * half));
        assert_eq!(lsns(tail.from(Lsn(1), 1)), vec![1], "at the bound, all is held");
        tail.push(group(2 * half + 1..=2 * half + 1));
        assert!(lsns(tail.from(Lsn(1), 1)).is_empty(), "the oldest group went");
        assert_eq!(lsns(tail.from(Lsn(half + 1), 1)), vec![half + 1]);
        // One group larger than the bound is still held, alone.
        tail.push(group(2 * half + 2..=2 * half + 1 + LOG_TAIL_ENTRIES_MAX as u64 + 1));
        assert!(lsns(tail.from(Lsn(half + 1), 1)).is_empty());
        let entries = lsns(tail.from(Lsn(2 * half + 2), usize::MAX));
        assert_eq!(entries.len(), LOG_TAIL_ENTRIES_MAX + 1);
        assert_eq!(tail.groups.lock().groups.len(), 1);
    }
}
