//! What the storage layer costs the engine: one synced `Store::write` per commit group,
//! and reading the log back.
//!
//! Group commit writes every commit group as one atomic batch of changed rows plus log
//! records, synced before any command in it is answered; how that cost grows with the
//! group's size decides how far batching pays. This writes batches of 1, 64 and 1024
//! small rows (24-byte random keys, 128-byte values, like the engine's cart and stock
//! rows) plus one 256-byte log record, synced and (for comparison, to separate the
//! fsync from the rest) unsynced, beside the disk's own cost of a sync measured in the
//! same run (`baseline_fdatasync_8k`: an 8 kB overwrite plus `fdatasync`). Log
//! consumers (replication, search, webhooks) read the log in chunks; `read_log`
//! measures reading 1000 records of 256 bytes with their checksums verified.
//!
//! `wal_sync` asks what one synced write costs RocksDB itself, and so what bounds one
//! submitter's latency: a 300-byte put (a one-line checkout's log record) synced through
//! RocksDB's write-ahead log, with the WAL appended to (as the engine's store does: every
//! sync also commits the file's new length) and with recycled WAL files
//! (`recycle_log_file_num`: old files are overwritten in place, so a sync commits only
//! data), beside `baseline_fdatasync_8k` of the same run. RocksDB refuses recycled WAL
//! files beside writes that skip the WAL, which the engine's rows are, so the engine
//! cannot turn it on in its one store.
//!
//! Run: `cargo bench -p emporium-bench --bench storage` (add `-- --quick` for a short
//! run).

use std::time::Duration;

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use emporium_bench::SyncProbe;
use emporium_storage::{BackendKind, Store, StoreConfig, WriteBatch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CF_ROWS: &str = "rows";
const KEY_BYTES: usize = 24;
const VALUE_BYTES: usize = 128;
const LOG_PAYLOAD_BYTES: usize = 256;
/// Rows per batch measured.
const BATCH_ROWS: [u64; 3] = [1, 64, 1024];
/// Log records read per `read_log` call measured.
const READ_RECORDS: usize = 1000;
/// Log records in the store `read_log` reads from.
const LOG_RECORDS: u64 = 20_000;

fn open_store(dir: &std::path::Path) -> Store {
    Store::open(&StoreConfig {
        path: dir.to_path_buf(),
        column_families: vec![CF_ROWS],
        backend: BackendKind::RocksDb,
        ..Default::default()
    })
    .expect("open the store")
}

/// A batch like a commit group's: `rows` rows at random keys, then one log record.
fn group_batch(rng: &mut StdRng, rows: u64, lsn: u64) -> WriteBatch {
    let mut batch = WriteBatch::with_capacity(rows as usize + 1);
    let mut value = vec![0u8; VALUE_BYTES];
    for _ in 0..rows {
        let mut key = vec![0u8; KEY_BYTES];
        rng.fill(&mut key[..]);
        rng.fill(&mut value[..]);
        batch.put_owned(CF_ROWS, key, value.clone());
    }
    let mut payload = vec![0u8; LOG_PAYLOAD_BYTES];
    rng.fill(&mut payload[..]);
    batch.append_log(lsn, &payload);
    batch
}

fn writes(c: &mut Criterion) {
    let dir =
        tempfile::Builder::new().prefix("emporium-bench-storage-").tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let mut rng = StdRng::seed_from_u64(3);
    let mut lsn = 0u64;
    let mut group = c.benchmark_group("store_write");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    // The baseline, in the same run: the disk's own sync without RocksDB.
    SyncProbe::bench_baseline(&mut group);
    for sync in [true, false] {
        let label = if sync { "synced" } else { "unsynced" };
        for rows in BATCH_ROWS {
            group.throughput(Throughput::Elements(rows));
            group.bench_function(BenchmarkId::new(label, rows), |b| {
                b.iter_batched_ref(
                    || {
                        lsn += 1;
                        group_batch(&mut rng, rows, lsn)
                    },
                    |batch| store.write(batch, sync).expect("write a batch"),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn read_log(c: &mut Criterion) {
    let dir = tempfile::Builder::new().prefix("emporium-bench-log-").tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let mut rng = StdRng::seed_from_u64(4);
    let mut payload = vec![0u8; LOG_PAYLOAD_BYTES];
    for chunk in (1..=LOG_RECORDS).collect::<Vec<_>>().chunks(1000) {
        let mut batch = WriteBatch::with_capacity(chunk.len());
        for &lsn in chunk {
            rng.fill(&mut payload[..]);
            batch.append_log(lsn, &payload);
        }
        store.write(&batch, true).expect("fill the log");
    }
    let mut group = c.benchmark_group("store_read_log");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(READ_RECORDS as u64));
    group.bench_function(BenchmarkId::new("records", READ_RECORDS), |b| {
        b.iter_batched(
            || rng.random_range(1..=LOG_RECORDS - READ_RECORDS as u64),
            |from| {
                let records = store.read_log(from, READ_RECORDS).expect("read the log");
                assert_eq!(records.len(), READ_RECORDS);
                records
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The log record of a one-line checkout, about.
const WAL_PUT_BYTES: usize = 300;
/// Memtable (and so WAL file) size of the `wal_sync` databases: small, so that files
/// roll, and are recycled, within the warm-up.
const WAL_MEMTABLE_BYTES: usize = 4 << 20;

/// A bare RocksDB database, its WAL files recycled or not, after enough writes and
/// flushes that recycled files exist (the warm-up rolls more).
fn wal_db(dir: &std::path::Path, recycle: bool) -> rocksdb::DB {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    options.set_write_buffer_size(WAL_MEMTABLE_BYTES);
    if recycle {
        options.set_recycle_log_file_num(4);
    }
    let db = rocksdb::DB::open(&options, dir).expect("open the database");
    let value = vec![7u8; WAL_PUT_BYTES];
    let mut flush = rocksdb::FlushOptions::default();
    flush.set_wait(true);
    for round in 0u64..3 {
        for n in 0u64..2_000 {
            db.put((round << 32 | n).to_be_bytes(), &value).expect("fill the database");
        }
        db.flush_opt(&flush).expect("flush");
    }
    db
}

fn wal_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_sync");
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(4));
    SyncProbe::bench_baseline(&mut group);
    for (label, recycle) in [("appended", false), ("recycled", true)] {
        let dir =
            tempfile::Builder::new().prefix("emporium-bench-wal-").tempdir().expect("temp dir");
        let db = wal_db(dir.path(), recycle);
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        let value = vec![9u8; WAL_PUT_BYTES];
        let mut key = 1u64 << 40;
        group.bench_function(BenchmarkId::new("put_300b", label), |b| {
            b.iter(|| {
                key += 1;
                db.put_opt(key.to_be_bytes(), &value, &synced).expect("a synced put")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, writes, read_log, wal_sync);
emporium_bench::bench_main!(benches);
