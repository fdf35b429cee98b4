//! Durable storage for Emporium.
//!
//! This crate owns everything that touches the disk: named column families of opaque
//! key/value rows, atomic write batches that are synced before they return, the `log`
//! column family of LSN-ordered, checksummed records, and consistent checkpoints. It knows
//! nothing of the domain: keys and values are bytes chosen by the engine.
//!
//! With RocksDB the log lives in a database of its own ([`LOG_DATABASE_DIR`] inside the
//! data directory, storage format 2) once [`Store::separate_log`] has moved it there:
//! its writes all go through that database's write-ahead log, whose files are recycled,
//! while the rows' database takes WAL-less writes (which RocksDB does not allow beside
//! recycled WAL files). A batch then writes either the log or the rows, never both.
//!
//! Two backends implement [`Backend`]: RocksDB (the default, cargo feature `rocksdb`)
//! and sled (cargo feature `sled`), a pure-Rust alternative. Both pass the same
//! conformance suite. Nothing outside this crate names either database.
//!
//! Invariants:
//! - a [`WriteBatch`] is applied all or nothing, and when [`Store::write`] returns `Ok`
//!   with `sync = true`, it survives a crash of the process or the machine;
//! - an unlogged batch ([`Store::write_unlogged`]) skips the write-ahead log: a crash
//!   keeps the unlogged writes up to some instant (at least those before the last
//!   completed [`Store::persist_unlogged`]) in every column family alike;
//! - a log trim ([`Store::trim_log`]) may survive a crash that loses unlogged writes
//!   made before it: the caller trims only what persisted rows cover;
//! - no read returns a record below the last trim (after a crash, below the last trim
//!   the rows kept): in the log's own database a trim drops whole files and raises a
//!   floor (an unlogged row beside the rows) below which the records left in the
//!   files are skipped, so the log is never rewritten by a compaction;
//! - log records are keyed by their LSN in big-endian order, so a scan returns them in
//!   LSN order, and each carries a CRC-32 of its LSN and payload that is verified on
//!   every read.

mod batch;
mod error;
#[cfg(feature = "faults")]
mod faults;
mod log;
#[cfg(feature = "rocksdb")]
mod rocks;
#[cfg(feature = "sled")]
mod sled_backend;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use batch::WriteBatch;
pub use error::{Result, StorageError};
#[cfg(feature = "faults")]
pub use faults::{DiskFaults, ReadFault, WriteFault};
pub use log::{LogRecord, LOG_RECORD_BYTES_MAX};
#[cfg(feature = "rocksdb")]
pub use rocks::deletions_stepped_over;

/// The column family holding the log records, keyed by big-endian LSN.
pub const CF_LOG: &str = "log";
/// The column family holding small metadata rows (format versions, counters).
pub const CF_META: &str = "meta";

/// The layout version of what this crate itself writes (log record framing, meta keys,
/// where the log is). Version 1 keeps the log in the `log` column family beside the
/// rows (a sled store stays there); version 2 keeps it in a database of its own. A
/// directory written with another version is refused rather than misread: a build
/// that knows only version 1 refuses a version-2 directory instead of opening its
/// rows without their log.
pub const STORAGE_FORMAT_VERSION: u32 = 2;
/// Storage format 1: the log beside the rows.
const STORAGE_FORMAT_SHARED_LOG: u32 = 1;
const META_STORAGE_FORMAT: &[u8] = b"storage_format";
/// The key of the log's floor ([`Store::trim_log`]) among the rows' meta rows.
const META_LOG_FLOOR: &[u8] = b"storage_log_floor";
/// The log's own database (storage format 2), inside the data directory.
pub const LOG_DATABASE_DIR: &str = "log-db";

/// Which database holds the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// RocksDB, the default and the fast one.
    #[default]
    RocksDb,
    /// sled, pure Rust; useful where a C++ toolchain is unwelcome.
    Sled,
}

impl BackendKind {
    /// The backends compiled into this build, in order of preference.
    pub fn available() -> &'static [BackendKind] {
        &[
            #[cfg(feature = "rocksdb")]
            BackendKind::RocksDb,
            #[cfg(feature = "sled")]
            BackendKind::Sled,
        ]
    }
}

/// How to open a [`Store`].
#[derive(Clone, Debug, Default)]
pub struct StoreConfig {
    /// The data directory; created when missing.
    pub path: PathBuf,
    /// The entity column families the caller uses, besides [`CF_LOG`] and [`CF_META`].
    pub column_families: Vec<&'static str>,
    /// Those of them RocksDB keeps in skip-list memtables: those whose new rows' keys
    /// ascend (sequence numbers; a skip list links an ascending key next to the last
    /// one) and those read by key while the caller runs. The others are in vector
    /// memtables, which append any key but are sorted whole at every flush and copied
    /// and sorted for every point read.
    pub skip_list_column_families: Vec<&'static str>,
    /// The backend that holds the data.
    pub backend: BackendKind,
    /// Faults to inject (tests only).
    #[cfg(feature = "faults")]
    pub faults: Option<std::sync::Arc<DiskFaults>>,
}

/// What a storage backend must provide. Implementations are in this crate only.
pub trait Backend: Send + Sync + 'static {
    /// Applies every operation of `batch` atomically; with `sync`, durably before
    /// returning.
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()>;
    /// Applies every operation of `batch` atomically, outside any write-ahead log: a
    /// crash may lose it, but only together with every unlogged write after it in
    /// every column family (what survives is the state of one instant). For data the
    /// synced log can rebuild. A clean close keeps it.
    fn write_unlogged(&self, batch: &WriteBatch) -> Result<()> {
        self.write(batch, false)
    }
    /// Makes every unlogged write so far durable, all column families at one instant;
    /// with `wait`, before returning, else it only starts (RocksDB may wait while it is
    /// stopping writes for a backlog, or refuse, and then nothing is lost: the writes
    /// stay unlogged until a later flush). Until then a crash loses them.
    fn persist_unlogged(&self, _wait: bool) -> Result<()> {
        Ok(())
    }
    /// Reads one row. Meant for the log and meta column families: RocksDB keeps most
    /// other (table) column families' recent writes in vector memtables, which a
    /// point read must sort.
    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Visits the rows of `cf` with keys `>= from`, in key order, until `visit` returns
    /// `false`.
    fn scan(
        &self,
        cf: &str,
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;
    /// The last row of `cf` in key order.
    fn last(&self, cf: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    /// Writes a consistent copy of the whole store into `to`, which must not exist.
    fn checkpoint(&self, to: &Path) -> Result<()>;
    /// Memory the backend holds for its own buffers and caches, when it can tell.
    fn memory_bytes(&self) -> Option<u64> {
        None
    }
    /// Deletes the files of the log column family whose records are all keyed below
    /// `to`, where the backend can drop a whole file without rewriting anything
    /// (RocksDB: files below level 0); the records it keeps stay readable. For the
    /// log's own database, whose trims are not written as deletions (see
    /// [`Store::trim_log`]).
    fn drop_log_files_below(&self, _to: u64) -> Result<()> {
        Ok(())
    }
    /// Flushes what is in memory and waits until no background work (flush or
    /// compaction) is left: tests that look at the files wait for this, not for a time.
    #[cfg(test)]
    fn settle(&self) -> Result<()> {
        Ok(())
    }
    /// About how many rows `cf` holds, when the backend can tell without reading them
    /// (RocksDB's estimate: deletions and overwrites not yet compacted away count).
    fn estimate_rows(&self, _cf: &str) -> Option<u64> {
        None
    }
}

/// An open store: a backend plus the log and format conventions on top of it.
pub struct Store {
    /// The rows, the meta rows and, until the log moves out, the log.
    backend: Box<dyn Backend>,
    /// The log's own database, once [`Store::separate_log`] moved the log there.
    log: Option<Box<dyn Backend>>,
    /// Held by a log trim, and exclusively by a checkpoint, which copies the two
    /// databases one after the other: no trim between the copies takes away entries
    /// that the copied rows do not reflect.
    trims: parking_lot::RwLock<()>,
    /// With the log in its own database, the first record key still held: the records
    /// below it were trimmed but may remain in files not dropped yet.
    log_floor: AtomicU64,
    kind: BackendKind,
    path: PathBuf,
    #[cfg(feature = "faults")]
    faults: Option<std::sync::Arc<DiskFaults>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("kind", &self.kind).field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `config.path`.
    ///
    /// Fails with [`StorageError::IncompatibleFormat`] when the directory was written
    /// by another storage format, and with [`StorageError::BackendUnavailable`] when the
    /// requested backend is not compiled in.
    pub fn open(config: &StoreConfig) -> Result<Store> {
        let mut cfs: Vec<&'static str> = vec![CF_META, CF_LOG];
        for cf in &config.column_families {
            if !cfs.contains(cf) {
                cfs.push(cf);
            }
        }
        create_dir_durably(&config.path)?;
        let backend: Box<dyn Backend> = match config.backend {
            #[cfg(feature = "rocksdb")]
            BackendKind::RocksDb => Box::new(rocks::RocksBackend::open(
                &config.path,
                &cfs,
                &config.skip_list_column_families,
            )?),
            #[cfg(feature = "sled")]
            BackendKind::Sled => Box::new(sled_backend::SledBackend::open(&config.path, &cfs)?),
            #[allow(unreachable_patterns)]
            other => return Err(StorageError::BackendUnavailable(format!("{other:?}"))),
        };
        #[cfg(feature = "faults")]
        let backend = faults::wrap(backend, &config.faults);
        let mut store = Store {
            backend,
            log: None,
            trims: parking_lot::RwLock::new(()),
            log_floor: AtomicU64::new(0),
            kind: config.backend,
            path: config.path.clone(),
            #[cfg(feature = "faults")]
            faults: config.faults.clone(),
        };
        if store.check_storage_format()? == STORAGE_FORMAT_VERSION {
            let log_path = config.path.join(LOG_DATABASE_DIR);
            if !log_path.exists() {
                return Err(StorageError::Corruption(format!(
                    "the log's database {} is missing",
                    log_path.display()
                )));
            }
            store.log = Some(store.open_log_database()?);
            let floor = match store.backend.get(CF_META, META_LOG_FLOOR)? {
                Some(bytes) => u64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| {
                    StorageError::Corruption("the log's floor row is not 8 bytes".into())
                })?),
                None => 0,
            };
            store.log_floor.store(floor, Ordering::Release);
        }
        Ok(store)
    }

    /// `backend`, behind the injected faults when there are any.
    fn with_faults(&self, backend: Box<dyn Backend>) -> Box<dyn Backend> {
        #[cfg(feature = "faults")]
        let backend = faults::wrap(backend, &self.faults);
        backend
    }

    fn open_log_database(&self) -> Result<Box<dyn Backend>> {
        match self.kind {
            #[cfg(feature = "rocksdb")]
            BackendKind::RocksDb => {
                let path = self.path.join(LOG_DATABASE_DIR);
                create_dir_durably(&path)?;
                Ok(self.with_faults(Box::new(rocks::RocksBackend::open_log(&path)?)))
            }
            #[allow(unreachable_patterns)]
            other => Err(StorageError::BackendUnavailable(format!(
                "{other:?} with the log in a database of its own"
            ))),
        }
    }

    /// The storage format found (a new directory is stamped with format 1, the log beside
    /// the rows, until [`Store::separate_log`]).
    fn check_storage_format(&self) -> Result<u32> {
        match self.backend.get(CF_META, META_STORAGE_FORMAT)? {
            Some(bytes) => {
                let found = decode_u32(&bytes).ok_or_else(|| {
                    StorageError::Corruption("storage format row is not 4 bytes".into())
                })?;
                // sled keeps the log beside the rows: format 1 is all it reads.
                let newest = match self.kind {
                    BackendKind::Sled => STORAGE_FORMAT_SHARED_LOG,
                    BackendKind::RocksDb => STORAGE_FORMAT_VERSION,
                };
                if found == 0 || found > newest {
                    return Err(StorageError::IncompatibleFormat {
                        what: "storage".into(),
                        found,
                        expected: newest,
                    });
                }
                Ok(found)
            }
            None => {
                let mut batch = WriteBatch::default();
                let version = STORAGE_FORMAT_SHARED_LOG.to_le_bytes();
                batch.put(CF_META, META_STORAGE_FORMAT, &version);
                self.backend.write(&batch, true)?;
                Ok(STORAGE_FORMAT_SHARED_LOG)
            }
        }
    }

    /// Moves the log into a database of its own (storage format 2), where it is synced
    /// through recycled WAL files; does nothing when it is there already, or with sled,
    /// which keeps it beside the rows. Called once the caller has upgraded whatever the
    /// log held (an upgrade writes the log and the rows in one atomic batch, which two
    /// databases cannot take).
    ///
    /// Crash-safe: the records are copied (into an emptied log database) and synced
    /// before one synced batch of the rows' database stamps format 2 and deletes the
    /// old copy; a crash before that batch leaves format 1 with its log, moved again at
    /// the next open.
    pub fn separate_log(&mut self) -> Result<()> {
        if self.log.is_some() || self.kind == BackendKind::Sled {
            return Ok(());
        }
        let log = self.open_log_database()?;
        let mut batch = WriteBatch::default();
        // What an interrupted move left goes. A new database holds nothing, and a range
        // deletion there would span every file flushed after it, so that the log's
        // files would be compacted (rewritten) instead of moved down until one
        // compaction took the deletion to the last level.
        let mut left = false;
        log.scan(CF_LOG, &[], &mut |_, _| {
            left = true;
            false
        })?;
        if left {
            batch.delete_range(CF_LOG, &[], &LOG_KEY_AFTER_ALL);
        }
        let mut records = 0u64;
        let mut from = Vec::new();
        loop {
            let mut last = None;
            self.backend.scan(CF_LOG, &from, &mut |key, value| {
                batch.put(CF_LOG, key, value);
                records += 1;
                last = Some(key.to_vec());
                batch.bytes() < SEPARATE_BATCH_BYTES
            })?;
            let Some(mut key) = last else { break };
            log.write(&batch, false)?;
            batch.clear();
            key.push(0);
            from = key;
        }
        log.write(&batch, true)?;
        let mut stamp = WriteBatch::default();
        stamp.delete_range(CF_LOG, &[], &LOG_KEY_AFTER_ALL);
        stamp.put(CF_META, META_STORAGE_FORMAT, &STORAGE_FORMAT_VERSION.to_le_bytes());
        self.backend.write(&stamp, true)?;
        tracing::info!(records, "moved the log into a database of its own");
        self.log = Some(log);
        Ok(())
    }

    /// Whether the log is in a database of its own.
    pub fn log_is_separate(&self) -> bool {
        self.log.is_some()
    }

    /// The backend that holds `cf`.
    fn holder(&self, cf: &str) -> &dyn Backend {
        match &self.log {
            Some(log) if cf == CF_LOG => &**log,
            _ => &*self.backend,
        }
    }

    /// The backend that takes `batch`, and whether it is the log's own database: when
    /// the log is in one, it takes a batch of log operations only, the rows' database
    /// one without any.
    fn taker(&self, batch: &WriteBatch) -> Result<(&dyn Backend, bool)> {
        let Some(log) = &self.log else { return Ok((&*self.backend, false)) };
        let logged = batch.ops().filter(|op| op.cf() == CF_LOG).count();
        if logged == 0 {
            Ok((&*self.backend, false))
        } else if logged == batch.len() {
            Ok((&**log, true))
        } else {
            Err(StorageError::MixedBatch)
        }
    }

    /// Which backend holds the data.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `batch` atomically and, with `sync`, durably. Once the log is in its own
    /// database, a batch that writes both the log and other column families is refused
    /// ([`StorageError::MixedBatch`]).
    pub fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        self.taker(batch)?.0.write(batch, sync)
    }

    /// Applies `batch` atomically without logging it ([`Backend::write_unlogged`]): a
    /// crash may lose it with every unlogged write after it, never a part of it. A batch
    /// of log operations in the log's own database goes through its write-ahead log,
    /// unsynced.
    pub fn write_unlogged(&self, batch: &WriteBatch) -> Result<()> {
        match self.taker(batch)? {
            (log, true) => log.write(batch, false),
            (rows, false) => rows.write_unlogged(batch),
        }
    }

    /// Deletes the log records keyed `from..to`, unsynced. The trim may survive a crash
    /// that loses unlogged row writes made before it (the log's database has its own
    /// write-ahead log): trim only below rows that [`Store::persist_unlogged`] has made
    /// durable.
    ///
    /// In the log's own database nothing is written to the log: the floor below which
    /// reads skip records rises to `to` (an unlogged row beside the rows, so a crash
    /// may take it back to an earlier trim's, and records still held below it are
    /// read again, never records that were not in the log), and the files holding
    /// only records below it are deleted. A range deletion instead would make every
    /// file flushed after it span the whole retained log, and the log's compactions
    /// would copy the retained log again and again (a third to a half of the bytes
    /// the two databases compacted under a flash sale); with none, RocksDB moves each
    /// flushed file down without rewriting it, and the trim deletes it there.
    pub fn trim_log(&self, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let _no_checkpoint = self.trims.read();
        let Some(log) = &self.log else {
            let mut batch = WriteBatch::with_capacity(1);
            batch.trim_log(from, to);
            return self.write_unlogged(&batch);
        };
        let floor = self.log_floor.load(Ordering::Acquire).max(to);
        let mut batch = WriteBatch::with_capacity(1);
        batch.put(CF_META, META_LOG_FLOOR, &floor.to_le_bytes());
        self.backend.write_unlogged(&batch)?;
        self.log_floor.store(floor, Ordering::Release);
        log.drop_log_files_below(floor)
    }

    /// The first log record key a read may return.
    fn log_floor(&self) -> u64 {
        self.log_floor.load(Ordering::Acquire)
    }

    /// Makes the unlogged writes so far durable ([`Backend::persist_unlogged`]): with
    /// `wait`, before it returns; else it only starts.
    pub fn persist_unlogged(&self, wait: bool) -> Result<()> {
        self.backend.persist_unlogged(wait)
    }

    /// Reads one row.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.holder(cf).get(cf, key)
    }

    /// Visits every row of `cf` in key order until `visit` returns `false`.
    pub fn scan(&self, cf: &str, visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        self.holder(cf).scan(cf, &[], visit)
    }

    /// Visits the rows of `cf` from key `from` on, in key order, until `visit` returns
    /// `false`.
    pub fn scan_from(
        &self,
        cf: &str,
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.holder(cf).scan(cf, from, visit)
    }

    /// Reads up to `records_max` log records with LSN `>= from`, in LSN order, verifying
    /// each checksum.
    pub fn read_log(&self, from: u64, records_max: usize) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        let mut failure = None;
        if records_max == 0 {
            return Ok(out);
        }
        let from = from.max(self.log_floor());
        self.holder(CF_LOG).scan(CF_LOG, &from.to_be_bytes(), &mut |key, value| {
            match LogRecord::decode(key, value) {
                Ok(record) => {
                    out.push(record);
                    out.len() < records_max
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The LSN of the last log record, if there is one.
    pub fn last_lsn(&self) -> Result<Option<u64>> {
        match self.holder(CF_LOG).last(CF_LOG)? {
            Some((key, value)) => {
                let lsn = LogRecord::decode(&key, &value)?.lsn;
                Ok((lsn >= self.log_floor()).then_some(lsn))
            }
            None => Ok(None),
        }
    }

    /// The LSN of the first log record still held, if there is one.
    pub fn first_lsn(&self) -> Result<Option<u64>> {
        let mut first = None;
        let from = self.log_floor().to_be_bytes();
        self.holder(CF_LOG).scan(CF_LOG, &from, &mut |key, value| {
            first = Some(LogRecord::decode(key, value));
            false
        })?;
        first.transpose().map(|r| r.map(|record| record.lsn))
    }

    /// Memory the backend holds for its own buffers and caches (RocksDB: memtables, table
    /// readers and the block cache), when it can tell.
    pub fn memory_bytes(&self) -> Option<u64> {
        let log = self.log.as_ref().and_then(|log| log.memory_bytes()).unwrap_or(0);
        Some(self.backend.memory_bytes()? + log)
    }

    /// About how many rows the table column family `cf` holds, when the backend can
    /// tell without reading them: for sizing what a load puts them in, never for a
    /// count that must be exact.
    pub fn estimate_rows(&self, cf: &str) -> Option<u64> {
        self.holder(cf).estimate_rows(cf)
    }

    /// Writes a consistent copy of the store into `to` (which must not exist yet); the
    /// copy opens as a store of the same backend.
    pub fn checkpoint(&self, to: &Path) -> Result<()> {
        if to.exists() {
            return Err(StorageError::CheckpointTargetExists(to.to_path_buf()));
        }
        // The rows first, then the log, with no trim between: the copied log holds
        // every entry after the copied rows' LSN.
        let _no_trim = self.trims.write();
        self.backend.checkpoint(to)?;
        if let Some(log) = &self.log {
            log.checkpoint(&to.join(LOG_DATABASE_DIR))?;
        }
        Ok(())
    }
}

/// A key after every log record's (LSNs are 8 bytes).
const LOG_KEY_AFTER_ALL: [u8; 9] = [0xff; 9];
/// How much of the log one write of [`Store::separate_log`] copies.
const SEPARATE_BATCH_BYTES: usize = 4 << 20;

/// Creates `path` and any missing parents, then syncs each directory that gained an
/// entry, so the new directory itself survives a power cut (a file's own sync does not
/// make its directory's entry durable, and a store whose directory vanished would lose
/// every acknowledged write in it).
fn create_dir_durably(path: &Path) -> Result<()> {
    let io = |what: &str, dir: &Path, e| StorageError::io(format!("{what} {}", dir.display()), e);
    let mut missing = Vec::new();
    let mut at = path;
    while !at.exists() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|e| io("creating", path, e))?;
    for dir in missing.iter().rev() {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the directory", parent, e))?;
    }
    Ok(())
}

fn decode_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod conformance;
