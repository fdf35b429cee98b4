//! Inventory: units on hand and reserved per SKU. Stock levels are atomics behind a
//! sequence lock, so a reader sees `on_hand` and `reserved` of the same instant without
//! ever blocking the writer. `reserved` only moves through the orders and payments
//! domains (`reserve`, `release`, `ship`); `on_hand` through the commands here.

mod commands;
mod model;

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::domains::State;
use crate::error::EngineError;
use crate::kernel::table::{check_v1, decode_row, persist, Domain, Index, Row, Table};
use crate::types::*;

const STOCK: &str = "stock";

persist!(StockLevels, STOCK, |s| s.sku.as_str().as_bytes().to_vec());

/// Inventory's tables in memory.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub(crate) stock: Index<Sku, Arc<StockCell>>,
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "inventory",
    tables: &[Table {
        name: STOCK,
        rows: |s, f| s.all_stock().iter().for_each(|l| f(l)),
        load: |state, bytes| {
            let levels: StockLevels = decode_row(bytes, "stock levels")?;
            if levels.reserved > levels.on_hand {
                return Err(EngineError::IncompatibleData(format!(
                    "SKU {} has {} reserved of {} on hand",
                    levels.sku, levels.reserved, levels.on_hand
                )));
            }
            // A SKU no product sells any more (dropped before its stock row was deleted
            // with it) is not loaded: a new product reusing the SKU starts from zero.
            if state.product_by_sku(&levels.sku).is_none() {
                return Ok(());
            }
            let cell = StockCell::new(levels.on_hand, levels.reserved, levels.version);
            state.inventory.stock.insert(levels.sku, Arc::new(cell));
            Ok(())
        },
        check_v1: check_v1::<StockLevels>,
    }],
    counters: |_| vec![],
    timers: None,
    verify: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// Inventory's facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum InventoryEvent {
        StockSet {
            sku: Sku,
            on_hand: u32,
            reason: String,
        },
        /// `delta` is bounded by [`crate::ON_HAND_MAX`] either way.
        StockAdjusted {
            sku: Sku,
            delta: i32,
            reason: String,
        },
    }
}
pub use event::InventoryEvent;

pub(crate) fn apply(state: &State, event: &InventoryEvent, _at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        InventoryEvent::StockSet { sku, on_hand, .. } => {
            let cell = cell(state, sku);
            let (_, reserved, _) = cell.read();
            write(&cell, sku, *on_hand, reserved, rows);
        }
        InventoryEvent::StockAdjusted { sku, delta, .. } => {
            let cell = cell(state, sku);
            let (on_hand, reserved, _) = cell.read();
            let on_hand = u32::try_from(i64::from(on_hand) + i64::from(*delta))
                .expect("decide bounds the delta");
            write(&cell, sku, on_hand, reserved, rows);
        }
    }
}

fn cell(state: &State, sku: &Sku) -> Arc<StockCell> {
    state.inventory.stock.get(sku).expect("every SKU of a product has a stock row")
}

fn write(cell: &StockCell, sku: &Sku, on_hand: u32, reserved: u32, rows: &mut Vec<Row>) {
    cell.write(on_hand, reserved);
    let (on_hand, reserved, version) = cell.read();
    rows.push(Row::put(Arc::new(StockLevels { sku: sku.clone(), on_hand, reserved, version })));
}

/// Gives a SKU new to the catalog an empty stock row (a SKU that had one keeps it).
pub(crate) fn ensure_stock(state: &State, sku: &Sku, rows: &mut Vec<Row>) {
    if !state.inventory.stock.contains_key(sku) {
        state.inventory.stock.insert(sku.clone(), Arc::new(StockCell::new(0, 0, 1)));
        let levels = StockLevels { sku: sku.clone(), on_hand: 0, reserved: 0, version: 1 };
        rows.push(Row::put(Arc::new(levels)));
    }
}

/// Deletes the stock row of a SKU its product dropped (`decide` refused the drop while
/// units were reserved), so a product that later reuses the SKU starts from zero.
pub(crate) fn drop_stock(state: &State, sku: &Sku, rows: &mut Vec<Row>) {
    if let Some(cell) = state.inventory.stock.remove(sku) {
        debug_assert_eq!(cell.read().1, 0, "a dropped SKU holds no reservation");
        rows.push(Row::delete(STOCK, sku.as_str().as_bytes()));
    }
}

/// Reserves `units` of `sku` for an order; `decide` checked they are available.
pub(crate) fn reserve(state: &State, sku: &Sku, units: u32, rows: &mut Vec<Row>) {
    let cell = cell(state, sku);
    let (on_hand, reserved, _) = cell.read();
    let reserved = reserved + units;
    assert!(reserved <= on_hand, "decide reserves only available units");
    write(&cell, sku, on_hand, reserved, rows);
}

/// Returns `units` reserved by an order that ended unpaid to `available`.
pub(crate) fn release(state: &State, sku: &Sku, units: u32, rows: &mut Vec<Row>) {
    let cell = cell(state, sku);
    let (on_hand, reserved, _) = cell.read();
    write(&cell, sku, on_hand, reserved - units, rows);
}

/// `units` reserved by a paid order leave the warehouse: both counts drop.
pub(crate) fn ship(state: &State, sku: &Sku, units: u32, rows: &mut Vec<Row>) {
    let cell = cell(state, sku);
    let (on_hand, reserved, _) = cell.read();
    write(&cell, sku, on_hand - units, reserved - units, rows);
}

/// `units` of a received return go back on hand.
pub(crate) fn restock(state: &State, sku: &Sku, units: u32, rows: &mut Vec<Row>) {
    let cell = cell(state, sku);
    let (on_hand, reserved, _) = cell.read();
    write(&cell, sku, on_hand + units, reserved, rows);
}

/// Inventory's reads.
impl State {
    /// A SKU's stock levels.
    pub fn stock(&self, sku: &Sku) -> Option<StockLevels> {
        self.inventory.stock.get(sku).map(|cell| {
            let (on_hand, reserved, version) = cell.read();
            StockLevels { sku: sku.clone(), on_hand, reserved, version }
        })
    }

    /// Every SKU's stock levels, in SKU order.
    pub fn all_stock(&self) -> Vec<StockLevels> {
        let mut all: Vec<StockLevels> = self
            .inventory
            .stock
            .entries()
            .into_iter()
            .map(|(sku, cell)| {
                let (on_hand, reserved, version) = cell.read();
                StockLevels { sku, on_hand, reserved, version }
            })
            .collect();
        all.sort_unstable_by(|a, b| a.sku.cmp(&b.sku));
        all
    }
}

/// A SKU's stock levels as atomics. Only the sequencer writes; readers retry the rare
/// read that overlaps a write.
#[derive(Debug)]
pub(crate) struct StockCell {
    /// Even when stable, odd while a write is under way; `seq / 2` is the version.
    seq: AtomicU64,
    /// `on_hand << 32 | reserved`.
    levels: AtomicU64,
}

impl StockCell {
    pub(crate) fn new(on_hand: u32, reserved: u32, version: u64) -> StockCell {
        StockCell {
            seq: AtomicU64::new(version * 2),
            levels: AtomicU64::new(u64::from(on_hand) << 32 | u64::from(reserved)),
        }
    }

    /// `(on_hand, reserved, version)` of one instant.
    pub(crate) fn read(&self) -> (u32, u32, u64) {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let levels = self.levels.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let after = self.seq.load(Ordering::Relaxed);
            if before == after {
                return ((levels >> 32) as u32, levels as u32, before / 2);
            }
        }
    }

    /// Called by the sequencer only.
    pub(crate) fn write(&self, on_hand: u32, reserved: u32) {
        assert!(reserved <= on_hand, "stock invariant: reserved {reserved} > on hand {on_hand}");
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.levels.store(u64::from(on_hand) << 32 | u64::from(reserved), Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn stock_cell_reads_what_was_written() {
        let cell = StockCell::new(10, 3, 1);
        assert_eq!(cell.read(), (10, 3, 1));
        cell.write(u32::MAX, 7);
        assert_eq!(cell.read(), (u32::MAX, 7, 2));
    }

    #[test]
    fn stock_cell_is_never_torn_under_a_concurrent_writer() {
        // The writer goes on until the reader has raced it for a while (on a busy
        // machine the reader may not be scheduled before a fixed number of writes is
        // done), with a ceiling so a starved reader fails the test rather than hangs it.
        const WRITES_AT_LEAST: u32 = 200_000;
        const WRITES_AT_MOST: u32 = 200_000_000;
        const OVERLAPS_WANTED: u32 = 1_000;
        let cell = Arc::new(StockCell::new(0, 0, 0));
        let start = Arc::new(std::sync::Barrier::new(2));
        let raced = Arc::new(AtomicBool::new(false));
        let writer = {
            let (cell, start, raced) = (cell.clone(), start.clone(), raced.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut n = 0;
                while n < WRITES_AT_MOST && (n < WRITES_AT_LEAST || !raced.load(Ordering::Relaxed))
                {
                    n += 1;
                    cell.write(n, n / 2);
                }
                n
            })
        };
        start.wait();
        // Reads that overlapped the writes (neither the first nor the last value): the
        // loop must have raced the writer for the check to mean anything. Shown to fail:
        // a `read` that skips its sequence re-check returns levels of one write with the
        // version of another.
        let (mut overlapping, mut last_version) = (0u32, 0);
        loop {
            let finished = writer.is_finished();
            let (on_hand, reserved, version) = cell.read();
            assert_eq!(reserved, on_hand / 2, "a torn read: {on_hand}, {reserved}");
            assert_eq!(u64::from(on_hand), version, "levels of one write, its version");
            assert!(version >= last_version);
            if version > last_version && last_version > 0 {
                overlapping += 1;
                if overlapping >= OVERLAPS_WANTED {
                    raced.store(true, Ordering::Relaxed);
                }
            }
            last_version = version;
            if finished {
                break;
            }
        }
        let written = writer.join().unwrap();
        assert_eq!(last_version, u64::from(written));
        assert!(overlapping > 0, "no read overlapped the writer");
    }
}
