//! The engine's point-lookup index, chosen on evidence: a lookup of a present key in
//! maps of 1M entries, keyed by a 128-bit random id rendered as the engine's prefixed
//! string (`ord_…`, what carts and orders are keyed by) and by a short SKU string, while
//! one writer thread inserts and replaces entries the way the sequencer does. The
//! candidates: the ordered `crossbeam_skiplist::SkipMap` the engine used before,
//! `papaya::HashMap` (lock-free reads, incremental resize), `scc::HashIndex` (lock-free
//! reads, read-optimised) and a `parking_lot::RwLock<std::collections::HashMap>`.
//!
//! Run: `cargo bench -p emporium-bench --bench maps`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, BenchmarkId, Criterion};
use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;

/// Entries in each map.
const ENTRIES: usize = 1_000_000;

fn keys(kind: &str) -> Vec<String> {
    (0..ENTRIES as u64)
        .map(|i| match kind {
            // A 128-bit mix of `i`, as random ids are.
            "order_id" => {
                let x = (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                format!("ord_{x:025x}")[..29].to_string()
            }
            _ => format!("SKU-{i:07}"),
        })
        .collect()
}

/// Something map-sized to look up: an `Arc`, as the engine publishes.
type Value = Arc<u64>;

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_get");
    for kind in ["order_id", "sku"] {
        let keys = keys(kind);
        let probe: Vec<&String> = (0..4096).map(|i| &keys[(i * 7919) % ENTRIES]).collect();

        let skip = Arc::new(SkipMap::new());
        let papaya = Arc::new(papaya::HashMap::new());
        let scc = Arc::new(scc::HashIndex::new());
        let locked = Arc::new(RwLock::new(HashMap::new()));
        for (i, key) in keys.iter().enumerate() {
            let value: Value = Arc::new(i as u64);
            skip.insert(key.clone(), value.clone());
            papaya.pin().insert(key.clone(), value.clone());
            let _ = scc.insert(key.clone(), value.clone());
            locked.write().insert(key.clone(), value);
        }
        // One writer replacing values while the reads run, as the sequencer does.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (skip, papaya, scc, locked, stop) =
                (skip.clone(), papaya.clone(), scc.clone(), locked.clone(), stop.clone());
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = &keys[i % ENTRIES];
                    let value: Value = Arc::new(i as u64);
                    skip.insert(key.clone(), value.clone());
                    papaya.pin().insert(key.clone(), value.clone());
                    let _ = scc.remove(key);
                    let _ = scc.insert(key.clone(), value.clone());
                    locked.write().insert(key.clone(), value);
                    i += 1;
                    std::thread::yield_now();
                }
            })
        };
        let mut n = 0;
        group.bench_function(BenchmarkId::new("skiplist", kind), |b| {
            b.iter(|| {
                n = (n + 1) % probe.len();
                black_box(skip.get(probe[n]).map(|e| e.value().clone()))
            })
        });
        group.bench_function(BenchmarkId::new("papaya", kind), |b| {
            b.iter(|| {
                n = (n + 1) % probe.len();
                black_box(papaya.pin().get(probe[n]).cloned())
            })
        });
        group.bench_function(BenchmarkId::new("scc_hashindex", kind), |b| {
            b.iter(|| {
                n = (n + 1) % probe.len();
                black_box(scc.peek_with(probe[n], |_, v| v.clone()))
            })
        });
        group.bench_function(BenchmarkId::new("rwlock_hashmap", kind), |b| {
            b.iter(|| {
                n = (n + 1) % probe.len();
                black_box(locked.read().get(probe[n]).cloned())
            })
        });
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("the writer thread");
    }
    group.finish();
}

criterion_group!(benches, lookups);
emporium_bench::bench_main!(benches);
