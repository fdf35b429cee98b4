//! One suite of behaviour every backend must show, run against each compiled-in backend.

use super::*;

const CF_A: &str = "a";
const CF_B: &str = "b";

fn open(kind: BackendKind, path: &Path) -> Store {
    Store::open(&StoreConfig {
        path: path.to_path_buf(),
        column_families: vec![CF_A, CF_B],
        skip_list_column_families: vec![CF_B],
        backend: kind,
        ..Default::default()
    })
    .expect("open store")
}

fn each_backend(check: impl Fn(BackendKind)) {
    assert!(!BackendKind::available().is_empty());
    for kind in BackendKind::available() {
        check(*kind);
    }
}

fn rows(store: &Store, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    store
        .scan(cf, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
    out
}

#[test]
fn batch_is_atomic_and_survives_reopen() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(kind, dir.path());
            let mut batch = WriteBatch::default();
            batch.put(CF_A, b"k1", b"v1");
            batch.put(CF_B, b"k2", b"v2");
            batch.append_log(1, b"first");
            store.write(&batch, true).unwrap();
            let mut batch = WriteBatch::default();
            batch.delete(CF_A, b"k1");
            batch.put(CF_A, b"k3", b"v3");
            batch.append_log(2, b"second");
            store.write(&batch, true).unwrap();
        }
        let store = open(kind, dir.path());
        assert_eq!(store.get(CF_A, b"k1").unwrap(), None, "{kind:?}");
        assert_eq!(store.get(CF_A, b"k3").unwrap(), Some(b"v3".to_vec()));
        assert_eq!(store.get(CF_B, b"k2").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(store.last_lsn().unwrap(), Some(2));
        assert_eq!(store.first_lsn().unwrap(), Some(1));
    });
}

/// Unlogged writes (the engine's rows) interleave with synced log writes: each is read
/// back at once, and a clean close keeps them all, in both column families.
#[test]
fn unlogged_writes_are_read_back_and_kept_by_a_clean_close() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(kind, dir.path());
            for lsn in 1..=3u64 {
                let mut batch = WriteBatch::default();
                batch.append_log(lsn, format!("entry {lsn}").as_bytes());
                store.write(&batch, true).unwrap();
                let mut rows = WriteBatch::default();
                rows.put(CF_A, b"row", &lsn.to_be_bytes());
                rows.put(CF_B, &lsn.to_be_bytes(), b"x");
                store.write_unlogged(&rows).unwrap();
                assert_eq!(store.get(CF_A, b"row").unwrap(), Some(lsn.to_be_bytes().to_vec()));
            }
            let mut trim = WriteBatch::default();
            trim.delete(CF_B, &1u64.to_be_bytes());
            trim.trim_log(1, 2);
            store.write_unlogged(&trim).unwrap();
        }
        let store = open(kind, dir.path());
        assert_eq!(store.get(CF_A, b"row").unwrap(), Some(3u64.to_be_bytes().to_vec()), "{kind:?}");
        assert_eq!(rows(&store, CF_B).len(), 2, "{kind:?}");
        assert_eq!(store.first_lsn().unwrap(), Some(2), "{kind:?}");
        assert_eq!(store.last_lsn().unwrap(), Some(3), "{kind:?}");
    });
}

#[test]
fn scan_is_ordered_and_stops_when_asked() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(kind, dir.path());
        let mut batch = WriteBatch::default();
        for key in [b"c", b"a", b"b", b"d"] {
            batch.put(CF_A, key, key);
        }
        store.write(&batch, false).unwrap();
        let keys: Vec<_> = rows(&store, CF_A).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        let mut seen = Vec::new();
        store
            .scan_from(CF_A, b"b", &mut |k, _| {
                seen.push(k.to_vec());
                seen.len() < 2
            })
            .unwrap();
        assert_eq!(seen, vec![b"b".to_vec(), b"c".to_vec()]);
    });
}

#[test]
fn log_reads_from_any_lsn_in_order() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(kind, dir.path());
        // Big-endian keys keep LSN order across byte boundaries (255 < 256).
        for lsn in [1u64, 2, 255, 256, 70_000] {
            let mut batch = WriteBatch::default();
            batch.append_log(lsn, format!("payload {lsn}").as_bytes());
            store.write(&batch, true).unwrap();
        }
        let lsns: Vec<u64> = store.read_log(2, 100).unwrap().iter().map(|r| r.lsn).collect();
        assert_eq!(lsns, vec![2, 255, 256, 70_000]);
        let two = store.read_log(0, 2).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].payload, b"payload 2");
        assert!(store.read_log(70_001, 10).unwrap().is_empty());
        assert!(store.read_log(0, 0).unwrap().is_empty());
    });
}

#[test]
fn trimming_the_log_removes_a_prefix_atomically_with_other_rows() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(kind, dir.path());
        for lsn in 1u64..=300 {
            let mut batch = WriteBatch::default();
            batch.append_log(lsn, format!("payload {lsn}").as_bytes());
            store.write(&batch, true).unwrap();
        }
        let mut batch = WriteBatch::default();
        batch.trim_log(1, 256);
        batch.put(CF_A, b"trimmed_to", b"256");
        // An empty range is no operation at all.
        batch.trim_log(9, 9);
        store.write(&batch, false).unwrap();
        assert_eq!(store.first_lsn().unwrap(), Some(256));
        assert_eq!(store.last_lsn().unwrap(), Some(300));
        assert!(store.read_log(0, 10).unwrap().iter().all(|r| r.lsn >= 256));
        assert_eq!(rows(&store, CF_A), vec![(b"trimmed_to".to_vec(), b"256".to_vec())]);
        drop(store);
        let store = open(kind, dir.path());
        assert_eq!(store.first_lsn().unwrap(), Some(256));
        assert_eq!(store.read_log(0, 1000).unwrap().len(), 45);
    });
}

#[test]
fn corrupt_log_record_is_reported_not_returned() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(kind, dir.path());
        let mut batch = WriteBatch::default();
        batch.append_log(7, b"good");
        // A record whose checksum does not match its payload, as a torn or flipped
        // write would leave it.
        let mut value = Vec::new();
        LogRecord::encode_into(8, b"payload", &mut value);
        value[5] ^= 0x40;
        batch.put(CF_LOG, &8u64.to_be_bytes(), &value);
        store.write(&batch, true).unwrap();
        assert_eq!(store.read_log(7, 1).unwrap()[0].payload, b"good");
        let error = store.read_log(7, 10).unwrap_err();
        assert!(error.is_corruption(), "{error}");
        assert!(store.last_lsn().unwrap_err().is_corruption());
    });
}

#[test]
fn other_storage_format_is_refused() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(kind, dir.path());
            let mut batch = WriteBatch::default();
            batch.put(CF_META, META_STORAGE_FORMAT, &(STORAGE_FORMAT_VERSION + 1).to_le_bytes());
            store.write(&batch, true).unwrap();
        }
        let error = Store::open(&StoreConfig {
            path: dir.path().to_path_buf(),
            column_families: vec![CF_A],
            backend: kind,
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(error, StorageError::IncompatibleFormat { found, .. } if found == STORAGE_FORMAT_VERSION + 1),
            "{error}"
        );
    });
}

/// An estimate is for sizing only: it may be missing (sled cannot tell without a
/// scan), but when a backend gives one it is of the column family asked about.
#[test]
fn a_row_estimate_when_there_is_one_is_about_the_rows() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(kind, dir.path());
        let mut batch = WriteBatch::default();
        for i in 0..1000u32 {
            batch.put(CF_A, &i.to_be_bytes(), b"v");
        }
        batch.put(CF_B, b"k", b"v");
        store.write_unlogged(&batch).unwrap();
        store.persist_unlogged(true).unwrap();
        match kind {
            BackendKind::RocksDb => {
                let a = store.estimate_rows(CF_A).expect("RocksDB estimates");
                assert!((500..=2000).contains(&a), "{a} rows estimated of 1000");
                let b = store.estimate_rows(CF_B).expect("RocksDB estimates");
                assert!(b <= 10, "{b} rows estimated of 1");
                assert_eq!(store.estimate_rows("nope"), None);
            }
            _ => assert_eq!(store.estimate_rows(CF_A), None),
        }
    });
}

#[test]
fn unknown_column_family_is_an_error() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(kind, dir.path());
        let mut batch = WriteBatch::default();
        batch.put("nope", b"k", b"v");
        assert!(matches!(store.write(&batch, true), Err(StorageError::UnknownColumnFamily(_))));
        assert!(matches!(store.get("nope", b"k"), Err(StorageError::UnknownColumnFamily(_))));
    });
}

#[test]
fn checkpoint_is_a_consistent_openable_copy() {
    each_backend(|kind| {
        let dir = tempfile::tempdir().unwrap();
        let copy_dir = tempfile::tempdir().unwrap();
        let copy_path = copy_dir.path().join("copy");
        let store = open(kind, &dir.path().join("live"));
        let mut batch = WriteBatch::default();
        batch.put(CF_A, b"k", b"before");
        batch.append_log(1, b"one");
        store.write(&batch, true).unwrap();
        store.checkpoint(&copy_path).unwrap();
        let mut batch = WriteBatch::default();
        batch.put(CF_A, b"k", b"after");
        batch.append_log(2, b"two");
        store.write(&batch, true).unwrap();
        assert!(matches!(
            store.checkpoint(&copy_path),
            Err(StorageError::CheckpointTargetExists(_))
        ));
        drop(store);
        let copy = open(kind, &copy_path);
        assert_eq!(copy.get(CF_A, b"k").unwrap(), Some(b"before".to_vec()));
        assert_eq!(copy.last_lsn().unwrap(), Some(1));
    });
}

/// A store of storage format 1 whose log holds records 1 to `records` (beside a row
/// each), its log then moved into the log's own database.
#[cfg(feature = "rocksdb")]
fn separated(path: &Path, records: u64) -> Store {
    let mut store = open(BackendKind::RocksDb, path);
    for lsn in 1..=records {
        let mut batch = WriteBatch::default();
        batch.put(CF_A, &lsn.to_be_bytes(), b"row");
        batch.append_log(lsn, format!("entry {lsn}").as_bytes());
        store.write(&batch, true).unwrap();
    }
    assert!(!store.log_is_separate());
    store.separate_log().unwrap();
    assert!(store.log_is_separate());
    store
}

#[cfg(feature = "rocksdb")]
fn payloads(store: &Store, from: u64) -> Vec<(u64, String)> {
    let records = store.read_log(from, usize::MAX).unwrap();
    records.into_iter().map(|r| (r.lsn, String::from_utf8(r.payload).unwrap())).collect()
}

#[cfg(feature = "rocksdb")]
#[test]
fn the_log_moves_into_a_database_of_its_own_and_stays_there() {
    let dir = tempfile::tempdir().unwrap();
    let expected: Vec<(u64, String)> = (1..=300).map(|lsn| (lsn, format!("entry {lsn}"))).collect();
    {
        let store = separated(dir.path(), 300);
        assert_eq!(payloads(&store, 0), expected);
        assert_eq!(store.first_lsn().unwrap(), Some(1));
        assert_eq!(store.last_lsn().unwrap(), Some(300));
        assert_eq!(rows(&store, CF_A).len(), 300, "the rows stay where they were");
        // The old copy is gone from the rows' database.
        assert_eq!(rows_of(&*store.backend, CF_LOG), 0);
        // Two databases take no batch that writes both.
        let mut mixed = WriteBatch::default();
        mixed.put(CF_A, b"k", b"v");
        mixed.append_log(301, b"entry 301");
        assert!(matches!(store.write(&mixed, true), Err(StorageError::MixedBatch)));
        assert!(matches!(store.write_unlogged(&mixed), Err(StorageError::MixedBatch)));
        assert_eq!(store.last_lsn().unwrap(), Some(300), "a refused batch writes nothing");
        assert_eq!(store.get(CF_A, b"k").unwrap(), None);
        let mut log = WriteBatch::default();
        log.append_log(301, b"entry 301");
        store.write(&log, true).unwrap();
        store.trim_log(1, 101).unwrap();
    }
    // Reopened as format 2: the log is found in its database, trimmed as it was left.
    let mut store = open(BackendKind::RocksDb, dir.path());
    assert!(store.log_is_separate());
    store.separate_log().unwrap();
    let mut kept = expected[100..].to_vec();
    kept.push((301, "entry 301".into()));
    assert_eq!(payloads(&store, 0), kept);
    assert_eq!(store.first_lsn().unwrap(), Some(101));
}

#[cfg(feature = "rocksdb")]
fn rows_of(backend: &dyn Backend, cf: &str) -> usize {
    let mut count = 0;
    backend
        .scan(cf, &[], &mut |_, _| {
            count += 1;
            true
        })
        .unwrap();
    count
}

/// A move interrupted after some records reached the log's database (a crash before
/// the stamp) starts over: the moved log is the old one exactly, nothing of the
/// interrupted attempt left.
#[cfg(feature = "rocksdb")]
#[test]
fn an_interrupted_move_of_the_log_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(BackendKind::RocksDb, dir.path());
        let mut batch = WriteBatch::default();
        batch.append_log(1, b"entry 1");
        batch.append_log(2, b"entry 2");
        store.write(&batch, true).unwrap();
    }
    {
        let log_path = dir.path().join(LOG_DATABASE_DIR);
        std::fs::create_dir_all(&log_path).unwrap();
        let partial = rocks::RocksBackend::open_log(&log_path).unwrap();
        let mut batch = WriteBatch::default();
        batch.append_log(1, b"entry 1");
        batch.append_log(7, b"left by another attempt");
        partial.write(&batch, true).unwrap();
    }
    let mut store = open(BackendKind::RocksDb, dir.path());
    assert!(!store.log_is_separate(), "format 1 until the move completes");
    store.separate_log().unwrap();
    assert_eq!(payloads(&store, 0), vec![(1, "entry 1".into()), (2, "entry 2".into())]);
}

#[cfg(feature = "rocksdb")]
#[test]
fn a_format_2_directory_without_its_log_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(separated(dir.path(), 3));
    std::fs::remove_dir_all(dir.path().join(LOG_DATABASE_DIR)).unwrap();
    let refused = Store::open(&StoreConfig {
        path: dir.path().to_path_buf(),
        column_families: vec![CF_A, CF_B],
        ..Default::default()
    })
    .unwrap_err();
    assert!(refused.is_corruption(), "{refused}");
    assert!(refused.to_string().contains(LOG_DATABASE_DIR), "{refused}");
}

#[cfg(feature = "rocksdb")]
#[test]
fn a_checkpoint_copies_the_rows_and_the_log_database() {
    let dir = tempfile::tempdir().unwrap();
    let copy_dir = tempfile::tempdir().unwrap();
    let copy_path = copy_dir.path().join("copy");
    let store = separated(&dir.path().join("live"), 5);
    store.checkpoint(&copy_path).unwrap();
    let mut log = WriteBatch::default();
    log.append_log(6, b"entry 6");
    store.write(&log, true).unwrap();
    drop(store);
    let copy = open(BackendKind::RocksDb, &copy_path);
    assert!(copy.log_is_separate());
    assert_eq!(copy.last_lsn().unwrap(), Some(5));
    assert_eq!(payloads(&copy, 4), vec![(4, "entry 4".into()), (5, "entry 5".into())]);
    assert_eq!(rows(&copy, CF_A).len(), 5);
}

/// The bytes of the log database's table files.
#[cfg(feature = "rocksdb")]
fn log_table_bytes(path: &Path) -> u64 {
    let entries = std::fs::read_dir(path.join(LOG_DATABASE_DIR)).unwrap();
    let tables =
        entries.map(|e| e.unwrap()).filter(|e| e.path().extension() == Some("sst".as_ref()));
    tables.map(|e| e.metadata().unwrap().len()).sum()
}

/// The compactions RocksDB has started in the log database, from its info log: a
/// file moved down without rewriting (a trivial move) is not one.
#[cfg(feature = "rocksdb")]
fn log_compactions(path: &Path) -> usize {
    let info = std::fs::read_to_string(path.join(LOG_DATABASE_DIR).join("LOG")).unwrap();
    info.lines().filter(|line| line.contains("\"event\": \"compaction_started\"")).count()
}

/// A trim of the log in its own database drops whole files and rewrites none: after
/// 32 MiB of records and a trim that keeps only the last few, the files holding only
/// trimmed records are gone without a single compaction (a range deletion made every
/// later file overlap the retained log, which RocksDB then compacted again and again),
/// and the records below the trim stay unread, also after a reopen.
#[cfg(feature = "rocksdb")]
#[test]
fn a_trim_of_the_separate_log_drops_its_files_and_compacts_nothing() {
    const RECORDS: u64 = 32 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = separated(dir.path(), 1);
    let payload = vec![7u8; 1024];
    for first in (2..=RECORDS).step_by(512) {
        let mut batch = WriteBatch::default();
        for lsn in first..(first + 512).min(RECORDS + 1) {
            batch.append_log(lsn, &payload);
        }
        store.write(&batch, false).unwrap();
    }
    // Every record in a file, each flushed file moved down as RocksDB chose.
    store.log.as_ref().expect("the log is separate").settle().unwrap();
    let keep_from = RECORDS - 9;
    store.trim_log(1, keep_from).unwrap();
    // What is left: the files still in level 0 (fewer than the four that start a
    // move) and the one holding the kept records.
    let bytes = log_table_bytes(dir.path());
    assert!(bytes <= 16 << 20, "the log database still holds {bytes} bytes of tables");
    assert_eq!(log_compactions(dir.path()), 0, "the log was rewritten by a compaction");
    assert_eq!(store.first_lsn().unwrap(), Some(keep_from));
    assert_eq!(store.last_lsn().unwrap(), Some(RECORDS));
    let lsns = |store: &Store| -> Vec<u64> {
        store.read_log(0, 100).unwrap().into_iter().map(|r| r.lsn).collect()
    };
    let kept: Vec<u64> = (keep_from..=RECORDS).collect();
    assert_eq!(lsns(&store), kept);
    drop(store);
    let store = open(BackendKind::RocksDb, dir.path());
    assert_eq!(store.first_lsn().unwrap(), Some(keep_from), "the floor is kept");
    assert_eq!(lsns(&store), kept);
    // A trim of everything leaves no record to read, first or last.
    store.trim_log(keep_from, RECORDS + 1).unwrap();
    assert_eq!((store.first_lsn().unwrap(), store.last_lsn().unwrap()), (None, None));
    assert!(store.read_log(0, 10).unwrap().is_empty());
}
