//! Fail-stop: a panic in the sequencer or the committer stops every write instead of
//! leaving a half-applied state served as ready, and a refusal is released only with
//! the group it was decided in. Faults are injected through the engine's `faults`
//! feature.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use emporium_engine::*;
use emporium_tests::{cart_with, check_invariants, config, stocked_sku, T0};

/// An engine on a fresh directory whose faults the test sets.
fn with_faults() -> (tempfile::TempDir, Arc<ManualClock>, Faults, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let faults = Faults::default();
    let mut cfg = config(dir.path(), clock.clone());
    cfg.faults = faults.clone();
    let engine = Engine::open(cfg).unwrap();
    (dir, clock, faults, engine)
}

#[test]
fn a_sequencer_panic_stops_all_writes_and_reopening_recovers_the_durable_prefix() {
    let (dir, clock, faults, engine) = with_faults();
    let shop = engine.blocking();
    stocked_sku(&shop, "F-1", 100, 10);
    let durable = engine.last_lsn();

    faults.panic_sequencer.store(true, Ordering::Release);
    let refused = shop.send(SetStock { sku: "F-1".into(), on_hand: 99, ..Default::default() });
    match refused {
        Err(EngineError::Unavailable(reason)) => assert!(reason.contains("panicked"), "{reason}"),
        other => panic!("expected Unavailable after a panic, got {other:?}"),
    }
    let reason = engine.failure().expect("the engine reports why it stopped");
    assert!(reason.contains("sequencer panicked"), "{reason}");
    // Nothing more is taken, whatever it is.
    let later = shop.send(CreateCategory { name: "Later".into(), parent_id: None });
    assert!(matches!(later, Err(EngineError::Unavailable(_))), "{later:?}");
    assert_eq!(engine.durable_lsn(), durable);
    engine.close();

    let engine = Engine::open(config(dir.path(), clock)).unwrap();
    assert_eq!(engine.last_lsn(), durable);
    let levels = engine.state().stock(&Sku::new("F-1").unwrap()).unwrap();
    assert_eq!(levels.on_hand, 10, "the half-applied command is not there");
    check_invariants(engine.state());
    engine.close();
}

#[test]
fn a_committer_panic_refuses_the_group_and_everything_after_it() {
    let (dir, clock, faults, engine) = with_faults();
    let shop = engine.blocking();
    stocked_sku(&shop, "G-1", 100, 10);
    let durable = engine.last_lsn();
    faults.panic_committer.store(true, Ordering::Release);
    let lost = shop.send(AdjustStock { sku: "G-1".into(), delta: 5, reason: "count".into() });
    assert!(matches!(lost, Err(EngineError::Unavailable(_))), "{lost:?}");
    assert!(engine.failure().unwrap().contains("committer panicked"));
    let after = shop.send(AdjustStock { sku: "G-1".into(), delta: 1, reason: "count".into() });
    assert!(matches!(after, Err(EngineError::Unavailable(_))), "{after:?}");
    engine.close();
    let engine = Engine::open(config(dir.path(), clock)).unwrap();
    assert_eq!(engine.last_lsn(), durable);
    assert_eq!(engine.state().stock(&Sku::new("G-1").unwrap()).unwrap().on_hand, 10);
    engine.close();
}

/// A refusal decided against state that never became durable must not be given: here
/// the refusal's group is the one whose commit fails, so the caller hears
/// `Unavailable`, not the refusal.
#[test]
fn a_refusal_waits_for_its_group_to_be_durable() {
    let (_dir, _clock, faults, engine) = with_faults();
    let shop = engine.blocking();
    stocked_sku(&shop, "H-1", 100, 1);
    let cart = cart_with(&shop, &[("H-1", 5)]);
    faults.panic_committer.store(true, Ordering::Release);
    let refused = shop.send(Checkout {
        cart_id: cart.id.to_string(),
        email: Some("h@example.com".into()),
        ..Default::default()
    });
    assert!(matches!(refused, Err(EngineError::Unavailable(_))), "{refused:?}");
    engine.close();
}
