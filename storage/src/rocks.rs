//! The RocksDB backend.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, Direction,
    FlushOptions, IteratorMode, Options, WriteOptions, DB,
};

use crate::batch::Op;
use crate::{Backend, Result, StorageError, WriteBatch, CF_LOG, CF_META};

/// Memtables of every column family together, at most: past it RocksDB flushes the
/// largest. Without a total, each of the engine's column families could hold two
/// memtables of 64 MiB and a long run under load would grow by gigabytes before any
/// flush.
const MEMTABLES_BYTES_MAX: usize = 256 << 20;
/// One memtable of one column family.
const MEMTABLE_BYTES: usize = 32 << 20;
/// The block cache, shared by every column family. Reads are served from the engine's
/// memory; the cache serves recovery's scans, the log readers (whose recent entries are
/// in the memtable) and point reads of rows out of memory, which the page cache serves
/// almost as well. At 64 MiB it filled for the first ten minutes of a soak and was a
/// third of its resident growth.
const BLOCK_CACHE_BYTES: usize = 16 << 20;
/// One memtable of the log's own database. Small, so that its write-ahead log files
/// are switched (and recycled) after a few MiB of log: a new database's first WAL
/// file is appended to, and each sync of a growing file also commits its new size.
const LOG_MEMTABLE_BYTES: usize = 4 << 20;
/// WAL files the log's database keeps for reuse. A synced write into a recycled file
/// overwrites blocks the file already has, so `fdatasync` has no size to commit: one
/// journal-free sync instead of about one and a half.
const LOG_WAL_FILES_RECYCLED: usize = 4;
/// The log database's block cache: its readers (log consumers) read recent records,
/// mostly from the memtables.
const LOG_BLOCK_CACHE_BYTES: usize = 8 << 20;

/// Runs `read` and answers, beside its result, how many deleted rows (deletions
/// RocksDB has not compacted away yet) the calling thread's reads stepped over while it
/// ran: a scan meant to start past the deletions shows here that it does. Reads on
/// other threads are not counted. RocksDB keeps such counts per thread (its perf level
/// `EnableCount`, every thread's default, which this sets in case it was lowered).
pub fn deletions_stepped_over<R>(read: impl FnOnce() -> R) -> (R, u64) {
    use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
    set_perf_stats(PerfStatsLevel::EnableCount);
    let mut context = PerfContext::default();
    context.reset();
    let result = read();
    (result, context.metric(PerfMetric::InternalDeleteSkippedCount))
}

pub(crate) struct RocksBackend {
    db: DB,
    cache: Cache,
    names: Vec<String>,
}

fn err(e: rocksdb::Error) -> StorageError {
    StorageError::Backend { backend: "rocksdb", message: e.into_string() }
}

impl RocksBackend {
    /// What both databases share: created when missing, at most four memtables per
    /// column family of `memtable_bytes` each, one block cache of `cache_bytes`.
    fn options(memtable_bytes: usize, cache_bytes: usize) -> (Options, Cache) {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_write_buffer_size(memtable_bytes);
        opts.set_max_write_buffer_number(4);
        let cache = Cache::new_lru_cache(cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        opts.set_block_based_table_factory(&table);
        opts.set_keep_log_file_num(4);
        // Flushes write level 0 without compression: its files live only until the next
        // compaction, which compresses what it writes below, and LZ4 was a sixth of the
        // flush thread's time under a flash sale.
        opts.set_compression_per_level(&[DBCompressionType::None, DBCompressionType::Lz4]);
        // Writes come from few threads (the engine's committer, its materializer, rare
        // meta writes) and RocksDB queues them: the single-writer memtable insert path is
        // cheaper than the concurrent one.
        opts.set_allow_concurrent_memtable_write(false);
        opts.set_enable_write_thread_adaptive_yield(false);
        (opts, cache)
    }

    /// The log's own database (storage format 2): one column family, every write
    /// through its write-ahead log, recycled WAL files. RocksDB refuses recycled WAL
    /// files in a database that also takes WAL-less writes, which is why the log is
    /// not beside the rows.
    pub(crate) fn open_log(path: &Path) -> Result<RocksBackend> {
        let (mut opts, cache) = Self::options(LOG_MEMTABLE_BYTES, LOG_BLOCK_CACHE_BYTES);
        opts.set_recycle_log_file_num(LOG_WAL_FILES_RECYCLED);
        // The log is kept only until the rows that cover it are flushed and every
        // consumer has passed it: what compactions write below level 0 is deleted
        // seconds later, so it is not compressed (LZ4 was 1.5% of all samples at 256
        // durable submitters, in both databases' compactions together).
        opts.set_compression_type(DBCompressionType::None);
        // No compression by level either: RocksDB moves several flushed files down
        // together without rewriting them (a trivial move) only when no per-level
        // compression is set, and a trim can delete a file only below level 0.
        opts.set_compression_per_level(&[]);
        // Recycled files hold old records past the last write: recovery stops at the
        // first record that is not of the current file (RocksDB refuses recycling with
        // the modes that would skip over a damaged record instead).
        opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        let names = vec!["default".to_string(), CF_LOG.to_string()];
        let descriptors = names
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(name, opts.clone()))
            .collect::<Vec<_>>();
        let db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(err)?;
        Ok(RocksBackend { db, cache, names })
    }

    /// The rows' database; until the log moves out (storage format 1), the log too.
    pub(crate) fn open(
        path: &Path,
        cfs: &[&'static str],
        skip_list: &[&'static str],
    ) -> Result<RocksBackend> {
        // Bounded memory: a total for the memtables of every column family, and one
        // block cache for all. Within the total a memtable is large, so flushes compete
        // less with the commit path for the two cores.
        let (mut opts, cache) = Self::options(MEMTABLE_BYTES, BLOCK_CACHE_BYTES);
        opts.set_db_write_buffer_size(MEMTABLES_BYTES_MAX);
        // Unlogged writes (the engine's rows, which the synced log can rebuild) skip the
        // WAL. They persist with memtable flushes, so every column family must flush at
        // the same point: a crash then leaves the rows and the LSN they reflect of one
        // instant, never rows of one flush beside a materialized LSN of another.
        opts.set_atomic_flush(true);
        // Column families a newer build created must be opened too, or RocksDB refuses.
        let mut names: Vec<String> = cfs.iter().map(|s| s.to_string()).collect();
        if let Ok(existing) = DB::list_cf(&opts, path) {
            for name in existing {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        // Every column family has the same memtable sizes and the shared cache. The
        // engine's tables (every column family but the log and meta) are written
        // in large unlogged batches and most are read only by whole scans at open, when
        // their memtables are empty (a crash loses them; a close flushes them). A vector
        // memtable appends where a skip list searches: the skip-list insert was the
        // materializer's largest cost. The flush sorts it (the flush thread's largest
        // cost); a point read copies and sorts it too, so `get` on such a table is slow
        // until the next flush. A table whose keys ascend keeps the skip list (an insert
        // after the last key starts from where the last insert linked, and the flush
        // walks it in order), and so does one read by key while the engine runs.
        let descriptors = names
            .iter()
            .map(|name| {
                let mut cf_opts = opts.clone();
                let keeps_skip_list = [CF_LOG, CF_META, "default"].contains(&name.as_str())
                    || skip_list.contains(&name.as_str());
                if !keeps_skip_list {
                    cf_opts.set_memtable_factory(rocksdb::MemtableFactory::Vector);
                }
                ColumnFamilyDescriptor::new(name, cf_opts)
            })
            .collect::<Vec<_>>();
        let db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(err)?;
        Ok(RocksBackend { db, cache, names })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| StorageError::UnknownColumnFamily(name.to_string()))
    }

    /// RocksDB's form of `batch`, in one allocation of its final size: grown by
    /// doubling, the materializer's batches of a few hundred KiB were copied at every
    /// doubling into freshly faulted pages (a sixth of its time under a flash sale).
    /// Consecutive operations on one column family (most of a materialized batch)
    /// look its handle up once.
    fn rocks_batch(&self, batch: &WriteBatch) -> Result<rocksdb::WriteBatch> {
        let mut wb = rocksdb::WriteBatch::with_capacity_bytes(rocks_batch_bytes(batch));
        let mut last: Option<(&'static str, &rocksdb::ColumnFamily)> = None;
        for op in batch.ops() {
            let name = op.cf();
            let cf = match last {
                Some((last_name, cf)) if std::ptr::eq(last_name, name) => cf,
                _ => self.cf(name)?,
            };
            last = Some((name, cf));
            match op {
                Op::Put { key, value, .. } => wb.put_cf(cf, key, value),
                Op::Delete { key, .. } => wb.delete_cf(cf, key),
                Op::DeleteRange { from, to, .. } => wb.delete_range_cf(cf, from, to),
            }
        }
        Ok(wb)
    }
}

/// The bytes RocksDB's encoding of `batch` takes, at most: its 12-byte header, and per
/// operation a tag, a column family id and a length before each key and value (varints
/// of at most 5 bytes each), then the bytes.
fn rocks_batch_bytes(batch: &WriteBatch) -> usize {
    12 + batch.len() * (1 + 5 + 5 + 5) + batch.bytes()
}

impl Backend for RocksBackend {
    fn memory_bytes(&self) -> Option<u64> {
        // Memtables, and the table readers' own memory (index blocks held outside the
        // cache), per column family; then the shared cache.
        let per_cf: u64 = self
            .names
            .iter()
            .filter_map(|name| self.db.cf_handle(name))
            .flat_map(|cf| {
                ["rocksdb.cur-size-all-mem-tables", "rocksdb.estimate-table-readers-mem"]
                    .map(|property| self.db.property_int_value_cf(&cf, property).ok().flatten())
            })
            .flatten()
            .sum();
        Some(per_cf + self.cache.get_usage() as u64)
    }

    fn estimate_rows(&self, cf: &str) -> Option<u64> {
        let cf = self.db.cf_handle(cf)?;
        self.db.property_int_value_cf(&cf, "rocksdb.estimate-num-keys").ok().flatten()
    }

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(self.rocks_batch(batch)?, &options).map_err(err)
    }

    fn write_unlogged(&self, batch: &WriteBatch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db.write_opt(self.rocks_batch(batch)?, &options).map_err(err)
    }

    fn persist_unlogged(&self, wait: bool) -> Result<()> {
        let cfs = self.names.iter().map(|name| self.cf(name)).collect::<Result<Vec<_>>>()?;
        let mut options = FlushOptions::default();
        options.set_wait(wait);
        self.db.flush_cfs_opt(&cfs, &options).map_err(err)
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf)?, key).map_err(err)
    }

    fn scan(
        &self,
        cf: &str,
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let iter = self.db.iterator_cf(self.cf(cf)?, IteratorMode::From(from, Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(err)?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn last(&self, cf: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut iter = self.db.iterator_cf(self.cf(cf)?, IteratorMode::End);
        match iter.next() {
            Some(item) => {
                let (key, value) = item.map_err(err)?;
                Ok(Some((key.into_vec(), value.into_vec())))
            }
            None => Ok(None),
        }
    }

    fn drop_log_files_below(&self, to: u64) -> Result<()> {
        let Some(last) = to.checked_sub(1) else { return Ok(()) };
        // Both ends included: files whose keys all lie in 0..=last.
        let cf = self.cf(CF_LOG)?;
        self.db.delete_file_in_range_cf(cf, 0u64.to_be_bytes(), last.to_be_bytes()).map_err(err)
    }

    #[cfg(test)]
    fn settle(&self) -> Result<()> {
        let mut options = rocksdb::WaitForCompactOptions::default();
        options.set_flush(true);
        self.db.wait_for_compact(&options).map_err(err)
    }

    fn checkpoint(&self, to: &Path) -> Result<()> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(err)?;
        checkpoint.create_checkpoint(to).map_err(err)
    }
}
