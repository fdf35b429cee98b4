//! Injected disk faults (the storage crate's `faults` feature, a backend wrapper): a
//! failed or full disk stops every write (fail-stop), nothing that was not durable is
//! acknowledged, `/readyz` says why, and reopening recovers exactly the durable prefix.
//! A damaged read at open is a clear error, never a wrong state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_engine::*;
use emporium_tests::{
    cart_with, check_invariants, checkout, config, stocked_sku, unmaterialized_config, T0,
};

use crate::http_support::TestServer;

/// An engine on a fresh directory whose disk faults the test arms.
fn with_disk_faults() -> (tempfile::TempDir, Arc<ManualClock>, Arc<DiskFaults>, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let disk = DiskFaults::new();
    let mut cfg = config(dir.path(), clock.clone());
    cfg.faults.disk = Some(disk.clone());
    let engine = Engine::open(cfg).unwrap();
    (dir, clock, disk, engine)
}

/// A synced write that fails with `fault`: the command is not acknowledged, every
/// later one is refused, and the reopened directory holds what was acknowledged.
/// Returns the reopened engine's stock on hand of `D-1` and the reason the engine gave.
fn a_failed_synced_write(fault: WriteFault) -> (u32, String) {
    let (dir, clock, disk, engine) = with_disk_faults();
    let shop = engine.blocking();
    stocked_sku(&shop, "D-1", 100, 10);
    let cart = cart_with(&shop, &[("D-1", 2)]);
    let order = checkout(&shop, &cart.id).unwrap();
    let acknowledged = engine.durable_lsn();

    disk.fail_synced_write(0, fault);
    let lost = shop.send(AdjustStock { sku: "D-1".into(), delta: 5, reason: "received".into() });
    assert!(matches!(lost, Err(EngineError::Unavailable(_))), "{fault:?}: {lost:?}");
    assert_eq!(disk.fired(), [format!("write {fault:?}")]);
    let reason = engine.failure().expect("the engine says why it stopped");
    // Fail-stop: nothing more is taken, however harmless.
    let later = shop.send(CreateCategory { name: "Later".into(), parent_id: None });
    assert!(matches!(later, Err(EngineError::Unavailable(_))), "{later:?}");
    assert_eq!(engine.durable_lsn(), acknowledged, "nothing was acknowledged after the fault");
    // Reads go on from memory (the design: a reader may see a change up to one group
    // before it is durable), so they show the failed group's change until the
    // directory is reopened; `/readyz` is what takes the instance out of rotation.
    let in_memory = engine.state().stock(&Sku::new("D-1").unwrap()).unwrap().on_hand;
    assert_eq!(in_memory, 15);
    engine.close();

    let engine = Engine::open(config(dir.path(), clock)).unwrap();
    assert!(engine.last_lsn() >= acknowledged, "an acknowledged command was lost");
    let order = engine.state().order(&order.id).expect("the acknowledged order is there");
    assert_eq!(order.status, OrderStatus::PendingPayment);
    check_invariants(engine.state());
    let on_hand = engine.state().stock(&Sku::new("D-1").unwrap()).unwrap().on_hand;
    engine.close();
    (on_hand, reason)
}

#[test]
fn a_failed_sync_stops_writes_and_loses_nothing_acknowledged() {
    let (on_hand, reason) = a_failed_synced_write(WriteFault::Io);
    assert!(reason.contains("Input/output error"), "{reason}");
    // The failed write never reached the disk: the adjustment is not there.
    assert_eq!(on_hand, 10);
}

#[test]
fn a_full_disk_stops_writes_and_loses_nothing_acknowledged() {
    let (on_hand, reason) = a_failed_synced_write(WriteFault::NoSpace);
    assert!(reason.contains("No space left on device"), "{reason}");
    assert_eq!(on_hand, 10);
}

/// A sync that reports an error after the data reached the disk: the caller was told
/// `Unavailable`, and after reopening the change may be there (it is durable) but the
/// state is consistent either way, with every acknowledged command in it.
#[test]
fn a_sync_that_fails_after_writing_leaves_a_consistent_state() {
    let (on_hand, reason) = a_failed_synced_write(WriteFault::IoAfterWrite);
    assert!(reason.contains("syncing a batch"), "{reason}");
    assert_eq!(on_hand, 15, "the batch reached the disk before its sync failed");
}

/// A refused flush of the materialized rows (RocksDB refuses one while it stops writes
/// for a backlog of flushes) is not a disk failure: nothing stops, the flush is asked
/// for again after the next rows until one is taken, and a reopen holds every order.
#[test]
fn a_refused_flush_of_the_rows_is_retried_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let disk = DiskFaults::new();
    let mut cfg = config(dir.path(), clock.clone());
    cfg.faults.disk = Some(disk.clone());
    cfg.persist_interval_ms = 1;
    let engine = Engine::open(cfg).unwrap();
    let shop = engine.blocking();
    stocked_sku(&shop, "R-1", 100, 1_000_000);
    const REFUSED: u64 = 3;
    // Armed first: from here no flush is taken until the refusals are used up.
    disk.refuse_persists(REFUSED);
    let taken_before = disk.persists_taken();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut orders = Vec::new();
    while disk.persists_taken() == taken_before {
        assert!(Instant::now() < deadline, "no flush was taken: {:?}", disk.fired());
        let cart = cart_with(&shop, &[("R-1", 1)]);
        orders.push(checkout(&shop, &cart.id).expect("writes go on while flushes are refused"));
    }
    assert_eq!(disk.fired(), vec!["persist refused".to_string(); REFUSED as usize]);
    assert!(engine.failure().is_none(), "a refused flush is not fail-stop");
    let cart = cart_with(&shop, &[("R-1", 1)]);
    orders.push(checkout(&shop, &cart.id).unwrap());
    engine.close();

    let engine = Engine::open(config(dir.path(), clock)).unwrap();
    for order in &orders {
        assert!(engine.state().order(&order.id).is_some(), "order {} lost", order.id);
    }
    check_invariants(engine.state());
    engine.close();
}

/// `/readyz` answers 503 with the reason once a write failed, while `/healthz` (the
/// process is alive) still answers.
#[test]
fn readyz_reports_a_failed_disk() {
    let disk = DiskFaults::new();
    let armed = disk.clone();
    let server = TestServer::with(|config| config.faults.disk = Some(armed));
    assert_eq!(server.get("/readyz").send().status, 200);
    disk.fail_synced_write(0, WriteFault::Io);
    let created = server.post("/v1/carts").json(serde_json::json!({})).send();
    assert_eq!(created.status, 503, "{:?}", created.json);
    let ready = server.get("/readyz").send();
    assert_eq!(ready.status, 503);
    let detail = ready.json["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains("Input/output error"), "{detail}");
    assert_eq!(server.get("/healthz").send().status, 200);
}

/// A row the backend reports corrupt (its block checksum failed) makes the open fail
/// with a storage error naming it, not a state without the row.
#[test]
fn a_corrupt_row_at_open_is_a_clear_error() {
    let (dir, clock, _disk, engine) = with_disk_faults();
    stocked_sku(&engine.blocking(), "C-1", 100, 3);
    engine.close();
    let disk = DiskFaults::new();
    disk.fail_read("products", ReadFault::Corruption);
    let mut cfg = config(dir.path(), clock.clone());
    cfg.faults.disk = Some(disk.clone());
    let error = Engine::open(cfg).expect_err("a corrupt row is not skipped");
    assert!(error.to_string().contains("checksum mismatch in products"), "{error}");
    assert_eq!(disk.fired().len(), 1);
    // The directory itself is fine: without the fault it opens with the product.
    let engine = Engine::open(config(dir.path(), clock)).unwrap();
    assert_eq!(engine.state().product_count(), 1);
    engine.close();
}

/// A log record whose bytes changed under the backend's checks fails the log's own
/// checksum: the open (which replays the tail) refuses with a clear error.
#[test]
fn a_flipped_bit_in_the_log_is_caught_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    // Rows are never materialized, so the open must replay the log.
    let engine = Engine::open(unmaterialized_config(dir.path(), clock.clone())).unwrap();
    stocked_sku(&engine.blocking(), "L-1", 100, 3);
    // A checkpoint now is what a crash would leave: rows from before, the tail in the log.
    let copy = dir.path().join("copy");
    engine.checkpoint(&copy).unwrap();
    engine.close();

    let disk = DiskFaults::new();
    disk.fail_read("log", ReadFault::FlipLogBit);
    let mut cfg = config(&copy, clock.clone());
    cfg.faults.disk = Some(disk.clone());
    let error = Engine::open(cfg).expect_err("a damaged log record is not replayed");
    let text = error.to_string();
    assert!(text.contains("checksum"), "{text}");
    assert_eq!(disk.fired(), ["read of log FlipLogBit"]);

    let engine = Engine::open(config(&copy, clock)).unwrap();
    assert!(engine.stats().recovery_replayed_entries.load(Ordering::Relaxed) > 0);
    assert_eq!(engine.state().stock(&Sku::new("L-1").unwrap()).unwrap().on_hand, 3);
    engine.close();
}
