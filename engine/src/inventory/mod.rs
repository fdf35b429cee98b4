//! Inventory: units on hand and reserved per SKU, in one or more stock locations.
//! Stock levels are atomics behind a sequence lock, so a reader sees `on_hand` and
//! `reserved` of the same instant without ever blocking the writer. `reserved` only
//! moves through the orders, payments and flash-sale domains (`reserve`, `release`,
//! `ship`); `on_hand` through the commands here and received returns (`restock`).
//! Levels per location are in `locations`.

mod commands;
mod locations;
mod model;

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::domains::State;
use crate::error::EngineError;
use crate::kernel::table::{
    check_v1, decode_row, persist, Counter, Domain, IdIndex, Index, Row, StaffKeyIndex, Table,
};
use crate::types::*;
use locations::{Change, ALLOCATIONS, LOCATIONS, LOCATION_STOCK, SHIPMENTS};

const STOCK: &str = "stock";

persist!(StockLevels, STOCK, |s| s.sku.as_str().as_bytes().to_vec());
persist!(StockLocation, LOCATIONS, |l| l.id.seq().to_be_bytes().to_vec());
persist!(SkuLocations, LOCATION_STOCK, |p| p.sku.as_str().as_bytes().to_vec());
persist!(Allocation, ALLOCATIONS, |a| a.holder.text().as_str().as_bytes().to_vec());
persist!(Shipment, SHIPMENTS, |s| s.order_id.text().as_str().as_bytes().to_vec());

/// Inventory's tables in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    /// Each SKU's totals over every location.
    pub(crate) stock: StaffKeyIndex<Sku, Arc<StockCell>>,
    /// Locations created, and the default one once it was changed.
    locations: IdIndex<LocationId, Arc<StockLocation>>,
    /// Levels away from the default location, of the SKUs that ever had any (kept when
    /// they empty, so a reader never pairs new totals with levels that are gone).
    placed: StaffKeyIndex<Sku, Arc<SkuLocations>>,
    /// Where holders' units away from the default location are.
    allocations: IdIndex<Holder, Arc<Allocation>>,
    /// Where paid orders' units left from, where not all from the default location:
    /// those of orders in memory (a shipment leaves memory with its order,
    /// [`order_left_memory`], and is read from the store when asked for).
    shipments: IdIndex<OrderId, Arc<Shipment>>,
    location_seq: Counter,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            stock: Index::default(),
            locations: IdIndex::default(),
            placed: Index::default(),
            allocations: IdIndex::default(),
            shipments: IdIndex::default(),
            location_seq: Counter::new("location"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "inventory",
    tables: &[
        Table {
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
                // A SKU no product sells any more (dropped before its stock row was
                // deleted with it) is not loaded: a new product reusing the SKU starts
                // from zero.
                if state.product_by_sku(&levels.sku).is_none() {
                    return Ok(());
                }
                let cell = StockCell::new(levels.on_hand, levels.reserved, levels.version);
                state.inventory.stock.insert(levels.sku, Arc::new(cell));
                Ok(())
            },
            check_v1: check_v1::<StockLevels>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: LOCATIONS,
            rows: |s, f| s.inventory.locations.entries().iter().for_each(|(_, l)| f(&**l)),
            load: |state, bytes| {
                let location: StockLocation = decode_row(bytes, "stock location")?;
                state.inventory.locations.insert(location.id, Arc::new(location));
                Ok(())
            },
            check_v1: check_v1::<StockLocation>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: LOCATION_STOCK,
            rows: |s, f| s.inventory.placed.entries().iter().for_each(|(_, p)| f(&**p)),
            load: |state, bytes| {
                let mut placed: SkuLocations = decode_row(bytes, "location levels")?;
                // Like its stock row: not loaded for a SKU no product sells.
                let Some(cell) = state.inventory.stock.get(&placed.sku) else { return Ok(()) };
                placed.version = placed.version.min(cell.read().2);
                state.inventory.placed.insert(placed.sku.clone(), Arc::new(placed));
                Ok(())
            },
            check_v1: check_v1::<SkuLocations>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: ALLOCATIONS,
            rows: |s, f| s.inventory.allocations.entries().iter().for_each(|(_, a)| f(&**a)),
            load: |state, bytes| {
                let allocation: Allocation = decode_row(bytes, "stock allocation")?;
                state.inventory.allocations.insert(allocation.holder, Arc::new(allocation));
                Ok(())
            },
            check_v1: check_v1::<Allocation>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: SHIPMENTS,
            rows: |s, f| {
                s.for_each_order(|order| {
                    if let Some(shipment) = s.shipment(&order.id) {
                        f(&*shipment)
                    }
                })
            },
            load: |state, bytes| {
                let shipment: Shipment = decode_row(bytes, "shipment")?;
                state.inventory.shipments.insert(shipment.order_id, Arc::new(shipment));
                Ok(())
            },
            check_v1: check_v1::<Shipment>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |state, each| {
        each(&state.inventory.location_seq);
    },
    timers: None,
    verify: Some(locations::check_locations),
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// Inventory's facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum InventoryEvent {
        /// At the default location.
        StockSet {
            sku: Sku,
            on_hand: u32,
            reason: String,
        },
        /// At the default location; `delta` is bounded by [`crate::ON_HAND_MAX`]
        /// either way.
        StockAdjusted {
            sku: Sku,
            delta: i32,
            reason: String,
        },
        /// A location was created or changed.
        LocationSaved(Box<StockLocation>),
        /// An empty location was deleted.
        LocationDeleted {
            location_id: LocationId,
        },
        /// Boxed, like the next two: the log's events are as large as the largest.
        LocationStockSet(Box<LocationCount>),
        LocationStockAdjusted(Box<LocationAdjustment>),
        Transferred(Box<Transfer>),
    }

    /// A stock count at a location other than the default one.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub struct LocationCount {
        pub sku: Sku,
        pub location_id: LocationId,
        pub on_hand: u32,
        pub reason: String,
    }

    /// An adjustment at a location other than the default one; `delta` is bounded by
    /// [`crate::ON_HAND_MAX`] either way.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub struct LocationAdjustment {
        pub sku: Sku,
        pub location_id: LocationId,
        pub delta: i32,
        pub reason: String,
    }

    /// Available units moved from one location to another.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub struct Transfer {
        pub sku: Sku,
        pub from: LocationId,
        pub to: LocationId,
        pub quantity: u32,
        pub reason: String,
    }
}
pub use event::{InventoryEvent, LocationAdjustment, LocationCount, Transfer};

pub(crate) fn apply(state: &State, event: &InventoryEvent, _at: TimestampMs, rows: &mut Vec<Row>) {
    let tables = &state.inventory;
    match event {
        InventoryEvent::StockSet { sku, on_hand, .. } => {
            set(state, sku, LocationId::DEFAULT, |_| *on_hand, rows)
        }
        InventoryEvent::StockAdjusted { sku, delta, .. } => {
            set(state, sku, LocationId::DEFAULT, |now| plus(now, *delta), rows)
        }
        InventoryEvent::LocationStockSet(count) => {
            set(state, &count.sku, count.location_id, |_| count.on_hand, rows)
        }
        InventoryEvent::LocationStockAdjusted(adjustment) => {
            let delta = adjustment.delta;
            set(state, &adjustment.sku, adjustment.location_id, |now| plus(now, delta), rows)
        }
        InventoryEvent::Transferred(transfer) => {
            let Transfer { sku, from, to, quantity, .. } = &**transfer;
            let mut change = Change::of(state, sku);
            let (was_from, was_to) = (change.at(*from).on_hand, change.at(*to).on_hand);
            change.set_on_hand(*from, was_from - quantity);
            change.set_on_hand(*to, was_to + quantity);
            change.finish(rows);
        }
        InventoryEvent::LocationSaved(location) => {
            if location.id != LocationId::DEFAULT && !tables.locations.contains_key(&location.id) {
                tables.location_seq.bump();
            }
            let location = Arc::new((**location).clone());
            tables.locations.insert(location.id, location.clone());
            rows.push(Row::put(location));
        }
        InventoryEvent::LocationDeleted { location_id } => {
            tables.locations.remove(location_id);
            rows.push(Row::delete(LOCATIONS, location_id.seq().to_be_bytes().to_vec()));
        }
    }
}

fn plus(on_hand: u32, delta: i32) -> u32 {
    u32::try_from(i64::from(on_hand) + i64::from(delta)).expect("decide bounds the delta")
}

/// Sets the units on hand of `sku` at `location` to `to(what they are)`.
fn set(
    state: &State,
    sku: &Sku,
    location: LocationId,
    to: impl Fn(u32) -> u32,
    rows: &mut Vec<Row>,
) {
    let mut change = Change::of(state, sku);
    let now = change.at(location).on_hand;
    change.set_on_hand(location, to(now));
    change.finish(rows);
}

fn cell(state: &State, sku: &Sku) -> Arc<StockCell> {
    state.inventory.stock.get(sku).expect("every SKU of a product has a stock row")
}

/// Gives a SKU new to the catalog an empty stock row (a SKU that had one keeps it).
pub(crate) fn ensure_stock(state: &State, sku: &Sku, rows: &mut Vec<Row>) {
    if !state.inventory.stock.contains_key(sku) {
        state.inventory.stock.insert(sku.clone(), Arc::new(StockCell::new(0, 0, 1)));
        let levels = StockLevels { sku: sku.clone(), on_hand: 0, reserved: 0, version: 1 };
        rows.push(Row::put(Arc::new(levels)));
    }
}

/// Deletes the stock rows of a SKU its product dropped (`decide` refused the drop while
/// units were reserved), so a product that later reuses the SKU starts from zero.
pub(crate) fn drop_stock(state: &State, sku: &Sku, rows: &mut Vec<Row>) {
    if let Some(cell) = state.inventory.stock.remove(sku) {
        debug_assert_eq!(cell.read().1, 0, "a dropped SKU holds no reservation");
        rows.push(Row::delete(STOCK, sku.as_str().as_bytes()));
    }
    locations::drop_levels(state, sku, rows);
}

/// Reserves `units` of `sku` for `holder`; `decide` checked they are available.
pub(crate) fn reserve(state: &State, holder: Holder, sku: &Sku, units: u32, rows: &mut Vec<Row>) {
    let mut change = Change::of(state, sku);
    change.reserve(holder, units, rows);
    change.finish(rows);
}

/// Returns `units` that `holder` reserved to `available`, where they are.
pub(crate) fn release(state: &State, holder: Holder, sku: &Sku, units: u32, rows: &mut Vec<Row>) {
    let mut change = Change::of(state, sku);
    change.take(holder, units, false, rows);
    change.finish(rows);
}

/// The units of paid order `order_id` (reserved by `holder`: the order, or its flash
/// sale) leave their locations: both counts drop, and where they left from away from
/// the default location is kept with the order.
pub(crate) fn ship<'a>(
    state: &State,
    holder: Holder,
    order_id: OrderId,
    lines: impl Iterator<Item = (&'a Sku, u32)>,
    rows: &mut Vec<Row>,
) {
    let mut parts = Vec::new();
    for (sku, units) in lines {
        let mut change = Change::of(state, sku);
        for (location_id, units) in change.take(holder, units, true, rows) {
            parts.push(AllocationPart { sku: sku.clone(), location_id, units });
        }
        change.finish(rows);
    }
    if !parts.is_empty() {
        let shipment = Arc::new(Shipment { order_id, parts });
        state.inventory.shipments.insert(order_id, shipment.clone());
        rows.push(Row::put(shipment));
    }
}

/// `units` of a received return go back on hand, at the default location.
pub(crate) fn restock(state: &State, sku: &Sku, units: u32, rows: &mut Vec<Row>) {
    set(state, sku, LocationId::DEFAULT, |now| now + units, rows);
}

/// Order `order_id` left memory (its last value is in the store), or stays in the
/// store at an open: its shipment, which never changes after the payment that made it,
/// goes too.
pub(crate) fn order_left_memory(state: &State, order_id: &OrderId) {
    let shipments = &state.inventory.shipments;
    // Most shops ship from one location and have none: a count (a few shards) spares
    // the map's guard, at every open, for every settled order.
    if shipments.len() > 0 {
        shipments.remove(order_id);
    }
}

/// Inventory's reads.
impl State {
    /// Where a paid order's units left from, when not all from the default location
    /// (read from the store for an order out of memory).
    pub(crate) fn shipment(&self, order_id: &OrderId) -> Option<Arc<Shipment>> {
        self.inventory
            .shipments
            .get(order_id)
            .or_else(|| self.stored_order_part(order_id, SHIPMENTS, |s: &Shipment| s.order_id))
    }

    /// How many paid orders' shipments are in memory (those of orders in memory).
    pub fn shipments_in_memory(&self) -> usize {
        self.inventory.shipments.len()
    }

    /// A SKU's stock levels: its totals over every location.
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
