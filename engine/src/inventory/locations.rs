//! Stock in several locations. A SKU's [`StockLevels`] are its totals over every
//! location; its levels at locations other than the default one are kept beside them
//! ([`SkuLocations`]) and the default location holds the rest. A shop that keeps stock
//! in one place never has any, so its checkouts take no step here.
//!
//! Reserving takes units from the locations with units available by priority (lower
//! first), then from the fullest (most available), then by location id, until the
//! units are found; `decide` checked the SKU's total available, so they always are, and
//! a checkout reserves all of its lines or none. Units a holder (an order, a flash
//! sale) took away from the default location are recorded in its [`Allocation`], so
//! releasing them or shipping them takes them from where they are.

use std::cmp::Reverse;
use std::sync::Arc;

use super::{cell, StockCell};
use super::{
    Allocation, AllocationPart, Holder, LocationLevel, SkuLocations, StockLevels, StockLocation,
};
use crate::domains::State;
use crate::error::{EngineError, Result};
use crate::kernel::table::Row;
use crate::types::*;

pub(super) const LOCATIONS: &str = "stock_locations";
pub(super) const LOCATION_STOCK: &str = "location_stock";
pub(super) const ALLOCATIONS: &str = "stock_allocations";
pub(super) const SHIPMENTS: &str = "stock_shipments";

/// One SKU's stock while `apply` changes it: its totals and its levels away from the
/// default location, written back (the levels first, then the totals that readers
/// check them against) by [`Change::finish`].
pub(super) struct Change<'a> {
    state: &'a State,
    sku: Sku,
    cell: Arc<StockCell>,
    on_hand: u32,
    reserved: u32,
    version: u64,
    others: Vec<LocationLevel>,
    others_changed: bool,
}

impl<'a> Change<'a> {
    pub(super) fn of(state: &'a State, sku: &Sku) -> Change<'a> {
        let cell = cell(state, sku);
        let (on_hand, reserved, version) = cell.read();
        let others = match state.inventory.placed.len() {
            0 => Vec::new(),
            _ => state.inventory.placed.get(sku).map(|p| p.levels.clone()).unwrap_or_default(),
        };
        let sku = sku.clone();
        Change { state, sku, cell, on_hand, reserved, version, others, others_changed: false }
    }

    /// The SKU's level at `location`.
    pub(super) fn at(&self, location: LocationId) -> LocationLevel {
        level_at(self.on_hand, self.reserved, &self.others, location)
    }

    fn other_mut(&mut self, location: LocationId) -> &mut LocationLevel {
        debug_assert_ne!(location, LocationId::DEFAULT);
        self.others_changed = true;
        let i = match self.others.binary_search_by_key(&location, |l| l.location_id) {
            Ok(i) => i,
            Err(i) => {
                let empty = LocationLevel { location_id: location, on_hand: 0, reserved: 0 };
                self.others.insert(i, empty);
                i
            }
        };
        &mut self.others[i]
    }

    /// Sets the units on hand at `location`; `decide` checked it holds its reserved ones.
    pub(super) fn set_on_hand(&mut self, location: LocationId, on_hand: u32) {
        let before = self.at(location).on_hand;
        if location != LocationId::DEFAULT {
            self.other_mut(location).on_hand = on_hand;
        }
        self.on_hand = self.on_hand - before + on_hand;
    }

    /// Reserves `units` for `holder`, by the rule above; the parts taken away from the
    /// default location join its allocation.
    pub(super) fn reserve(&mut self, holder: Holder, units: u32, rows: &mut Vec<Row>) {
        assert!(self.reserved + units <= self.on_hand, "decide reserves only available units");
        if !self.others.is_empty() {
            let mut parts = Vec::new();
            for (location, n) in
                allocate(self.state, self.on_hand, self.reserved, &self.others, units)
            {
                if location != LocationId::DEFAULT {
                    self.other_mut(location).reserved += n;
                    parts.push(AllocationPart {
                        sku: self.sku.clone(),
                        location_id: location,
                        units: n,
                    });
                }
            }
            if !parts.is_empty() {
                add_parts(self.state, holder, parts, rows);
            }
        }
        self.reserved += units;
    }

    /// Ends the reservation of `units` of `holder`'s: back to available, or, with
    /// `ship`, out of the location (both counts drop). Its parts away from the default
    /// location go first; answers those it took (the rest came from the default).
    pub(super) fn take(
        &mut self,
        holder: Holder,
        units: u32,
        ship: bool,
        rows: &mut Vec<Row>,
    ) -> Vec<(LocationId, u32)> {
        let default_reserved = self.at(LocationId::DEFAULT).reserved;
        let mut left = units;
        let mut taken = Vec::new();
        if self.state.inventory.allocations.len() > 0 {
            taken = take_parts(self.state, holder, &self.sku, units, rows);
            for &(location, n) in &taken {
                let level = self.other_mut(location);
                level.reserved -= n;
                if ship {
                    level.on_hand -= n;
                }
                left -= n;
            }
        }
        assert!(left <= default_reserved, "a holder releases only units it reserved");
        self.reserved -= units;
        if ship {
            self.on_hand -= units;
        }
        taken
    }

    /// Writes the levels (those now empty dropped) and then the totals.
    pub(super) fn finish(mut self, rows: &mut Vec<Row>) {
        // Checked before anything is written: the totals' write asserts it too, and
        // levels published without their totals would keep readers retrying.
        assert!(self.reserved <= self.on_hand, "stock invariant for {}", self.sku);
        if self.others_changed {
            self.others.retain(|l| l.on_hand > 0 || l.reserved > 0);
            // Readers accept levels no newer than the totals they read first: these
            // carry the version the totals get below.
            let placed = Arc::new(SkuLocations {
                sku: self.sku.clone(),
                levels: std::mem::take(&mut self.others),
                version: self.version + 1,
            });
            self.state.inventory.placed.insert(self.sku.clone(), placed.clone());
            rows.push(Row::put(placed));
        }
        self.cell.write(self.on_hand, self.reserved);
        let (on_hand, reserved, version) = self.cell.read();
        debug_assert_eq!(version, self.version + 1);
        rows.push(Row::put(Arc::new(StockLevels { sku: self.sku, on_hand, reserved, version })));
    }
}

/// The level at `location` of a SKU with totals `on_hand`, `reserved` and levels
/// `others` away from the default location.
fn level_at(
    on_hand: u32,
    reserved: u32,
    others: &[LocationLevel],
    location: LocationId,
) -> LocationLevel {
    if location == LocationId::DEFAULT {
        let (elsewhere_on_hand, elsewhere_reserved) =
            others.iter().fold((0, 0), |(o, r), l| (o + l.on_hand, r + l.reserved));
        return LocationLevel {
            location_id: location,
            on_hand: on_hand - elsewhere_on_hand,
            reserved: reserved - elsewhere_reserved,
        };
    }
    match others.binary_search_by_key(&location, |l| l.location_id) {
        Ok(i) => others[i],
        Err(_) => LocationLevel { location_id: location, on_hand: 0, reserved: 0 },
    }
}

/// Where `units` come from: the locations with units available, by priority, then the
/// most available, then id; as many from each as it has until `units` are found.
fn allocate(
    state: &State,
    on_hand: u32,
    reserved: u32,
    others: &[LocationLevel],
    units: u32,
) -> Vec<(LocationId, u32)> {
    let default = level_at(on_hand, reserved, others, LocationId::DEFAULT);
    let mut candidates: Vec<(u32, Reverse<u32>, LocationId)> = std::iter::once(&default)
        .chain(others)
        .filter(|l| l.available() > 0)
        .map(|l| (state.location_priority(l.location_id), Reverse(l.available()), l.location_id))
        .collect();
    candidates.sort_unstable();
    let mut left = units;
    let mut takes = Vec::new();
    for (_, Reverse(available), location) in candidates {
        if left == 0 {
            break;
        }
        let n = available.min(left);
        takes.push((location, n));
        left -= n;
    }
    assert_eq!(left, 0, "decide reserves only available units");
    takes
}

fn put_allocation(state: &State, holder: Holder, parts: Vec<AllocationPart>, rows: &mut Vec<Row>) {
    if parts.is_empty() {
        state.inventory.allocations.remove(&holder);
        rows.push(Row::delete(ALLOCATIONS, holder.text().as_str().as_bytes()));
    } else {
        let allocation = Arc::new(Allocation { holder, parts });
        state.inventory.allocations.insert(holder, allocation.clone());
        rows.push(Row::put(allocation));
    }
}

fn add_parts(state: &State, holder: Holder, new: Vec<AllocationPart>, rows: &mut Vec<Row>) {
    let mut parts =
        state.inventory.allocations.get(&holder).map(|a| a.parts.clone()).unwrap_or_default();
    for part in new {
        match parts.iter_mut().find(|p| p.sku == part.sku && p.location_id == part.location_id) {
            Some(p) => p.units += part.units,
            None => parts.push(part),
        }
    }
    put_allocation(state, holder, parts, rows);
}

/// Takes up to `units` of `sku` off `holder`'s parts, in order: where they were.
fn take_parts(
    state: &State,
    holder: Holder,
    sku: &Sku,
    units: u32,
    rows: &mut Vec<Row>,
) -> Vec<(LocationId, u32)> {
    let Some(allocation) = state.inventory.allocations.get(&holder) else { return Vec::new() };
    let mut parts = allocation.parts.clone();
    let mut left = units;
    let mut taken = Vec::new();
    for part in parts.iter_mut().filter(|p| &p.sku == sku) {
        let n = part.units.min(left);
        if n > 0 {
            part.units -= n;
            left -= n;
            taken.push((part.location_id, n));
        }
    }
    if !taken.is_empty() {
        parts.retain(|p| p.units > 0);
        put_allocation(state, holder, parts, rows);
    }
    taken
}

/// Deletes what a SKU dropped from the catalog kept away from the default location.
pub(super) fn drop_levels(state: &State, sku: &Sku, rows: &mut Vec<Row>) {
    if state.inventory.placed.remove(sku).is_some() {
        rows.push(Row::delete(LOCATION_STOCK, sku.as_str().as_bytes()));
    }
}

/// Checks the recovered levels against the totals and the allocations against the
/// levels and their holders.
pub(super) fn check_locations(state: &State) -> Result<()> {
    let broken = |why: String| Err(EngineError::IncompatibleData(why));
    let newest = state.inventory.locations.entries().iter().map(|(id, _)| id.seq()).max();
    if newest.unwrap_or(0) > state.inventory.location_seq.get() {
        return broken(format!(
            "location {} exists but the location counter is at {}",
            newest.unwrap_or(0),
            state.inventory.location_seq.get()
        ));
    }
    let mut allocated: std::collections::HashMap<(Sku, LocationId), u64> = Default::default();
    for (holder, allocation) in state.inventory.allocations.entries() {
        for part in &allocation.parts {
            let held = holder_units(state, holder, &part.sku);
            let parts: u64 = allocation
                .parts
                .iter()
                .filter(|p| p.sku == part.sku)
                .map(|p| u64::from(p.units))
                .sum();
            if part.units == 0 || parts > held {
                return broken(format!(
                    "{} has {parts} units of {} allocated away from the default location but holds {held}",
                    holder.text(),
                    part.sku
                ));
            }
            *allocated.entry((part.sku.clone(), part.location_id)).or_default() +=
                u64::from(part.units);
        }
    }
    for (sku, placed) in state.inventory.placed.entries() {
        let Some(levels) = state.stock(&sku) else {
            return broken(format!("SKU {sku} has location levels but no stock row"));
        };
        let (on_hand, reserved) = placed
            .levels
            .iter()
            .fold((0u64, 0u64), |(o, r), l| (o + u64::from(l.on_hand), r + u64::from(l.reserved)));
        let default_on_hand = u64::from(levels.on_hand).checked_sub(on_hand);
        let default_reserved = u64::from(levels.reserved).checked_sub(reserved);
        match (default_on_hand, default_reserved) {
            (Some(o), Some(r)) if r <= o => {}
            _ => {
                return broken(format!(
                    "SKU {sku}'s levels away from the default location ({on_hand} on hand, {reserved} reserved) do not fit its totals ({}, {})",
                    levels.on_hand, levels.reserved
                ))
            }
        }
        let ordered = placed.levels.windows(2).all(|w| w[0].location_id < w[1].location_id);
        if !ordered || placed.levels.iter().any(|l| l.location_id == LocationId::DEFAULT) {
            return broken(format!(
                "SKU {sku}'s location levels are not one per location in order"
            ));
        }
        for level in &placed.levels {
            if level.reserved > level.on_hand || state.location(&level.location_id).is_none() {
                return broken(format!(
                    "SKU {sku} at {}: {} reserved of {} on hand, at a location that {}",
                    level.location_id,
                    level.reserved,
                    level.on_hand,
                    if state.location(&level.location_id).is_some() {
                        "exists"
                    } else {
                        "does not exist"
                    }
                ));
            }
            let parts = allocated.remove(&(sku.clone(), level.location_id)).unwrap_or(0);
            if parts != u64::from(level.reserved) {
                return broken(format!(
                    "SKU {sku} has {} units reserved at {} but allocations there hold {parts}",
                    level.reserved, level.location_id
                ));
            }
        }
    }
    for (order_id, shipment) in state.inventory.shipments.entries() {
        let order = state.order(&order_id).filter(|o| o.status.was_paid());
        for part in &shipment.parts {
            let bought: u64 = order
                .iter()
                .flat_map(|o| o.lines.iter())
                .filter(|l| l.sku == part.sku)
                .map(|l| u64::from(l.quantity))
                .sum();
            let shipped: u64 = shipment
                .parts
                .iter()
                .filter(|p| p.sku == part.sku)
                .map(|p| u64::from(p.units))
                .sum();
            if shipped > bought {
                return broken(format!(
                    "{order_id} shipped {shipped} units of {} away from the default location but paid for {bought}",
                    part.sku
                ));
            }
        }
    }
    if let Some(((sku, location), units)) = allocated.into_iter().next() {
        return broken(format!(
            "allocations hold {units} units of {sku} at {location}, where it has none"
        ));
    }
    Ok(())
}

/// Units of `sku` that `holder` has reserved.
fn holder_units(state: &State, holder: Holder, sku: &Sku) -> u64 {
    match holder {
        Holder::Order(id) => state
            .order(&id)
            .filter(|o| o.holds_reservation())
            .map(|o| o.lines.iter().filter(|l| &l.sku == sku).map(|l| u64::from(l.quantity)).sum())
            .unwrap_or(0),
        Holder::Sale(id) => state
            .flash_sale(&id)
            .filter(|s| &s.sku == sku)
            .map(|s| {
                u64::from(s.reserved) + if s.holds_stock() { u64::from(s.remaining) } else { 0 }
            })
            .unwrap_or(0),
    }
}

/// Stock locations' reads.
impl State {
    /// A stock location (the default one always exists).
    pub fn location(&self, id: &LocationId) -> Option<Arc<StockLocation>> {
        match self.inventory.locations.get(id) {
            None if *id == LocationId::DEFAULT => Some(Arc::new(StockLocation::default_location())),
            found => found,
        }
    }

    /// Every stock location, the default one first, then in the order they were
    /// created.
    pub fn locations(&self) -> Vec<Arc<StockLocation>> {
        let mut all: Vec<Arc<StockLocation>> =
            self.inventory.locations.entries().into_iter().map(|(_, l)| l).collect();
        if !all.iter().any(|l| l.id == LocationId::DEFAULT) {
            all.push(Arc::new(StockLocation::default_location()));
        }
        all.sort_unstable_by_key(|l| l.id);
        all
    }

    fn location_priority(&self, id: LocationId) -> u32 {
        match self.inventory.locations.get(&id) {
            Some(location) => location.priority,
            None if id == LocationId::DEFAULT => super::LOCATION_PRIORITY_DEFAULT,
            None => unreachable!("a level is kept only at a location that exists"),
        }
    }

    /// A SKU's totals and its level at every location (in [`State::locations`] order),
    /// all of one instant.
    pub fn stock_by_location(&self, sku: &Sku) -> Option<(StockLevels, Vec<LocationLevel>)> {
        let locations = self.locations();
        loop {
            let cell = self.inventory.stock.get(sku)?;
            let (on_hand, reserved, version) = cell.read();
            let placed = self.inventory.placed.get(sku);
            // Levels newer than the totals (a change between the two reads), or the
            // totals of a SKU dropped and added again meanwhile (its versions restart).
            let newer = placed.as_ref().is_some_and(|p| p.version > version);
            let same_cell = self.inventory.stock.get(sku).is_some_and(|c| Arc::ptr_eq(&c, &cell));
            if newer || !same_cell {
                std::hint::spin_loop();
                continue;
            }
            let others = placed.as_ref().map_or(&[][..], |p| &p.levels[..]);
            let mut levels: Vec<LocationLevel> =
                locations.iter().map(|l| level_at(on_hand, reserved, others, l.id)).collect();
            // A location created after the list was read may already hold units.
            for level in others {
                if !locations.iter().any(|l| l.id == level.location_id) {
                    levels.push(*level);
                }
            }
            return Some((StockLevels { sku: sku.clone(), on_hand, reserved, version }, levels));
        }
    }

    /// Whether any SKU has units on hand or reserved at `location`.
    pub(crate) fn location_in_use(&self, location: LocationId) -> bool {
        self.inventory
            .placed
            .entries()
            .iter()
            .any(|(_, p)| p.levels.iter().any(|l| l.location_id == location))
    }

    /// Where the units of `order` are: reserved (a pending order) or where they left
    /// from (a paid one, and after), by SKU in line order, the default location's share
    /// last. Empty for an order that ended unpaid; `None` for a flash sale's pending
    /// order, whose units are the sale's until payment decides where they leave from.
    pub fn order_stock_sources(&self, order: &crate::orders::Order) -> Option<Vec<AllocationPart>> {
        use crate::orders::OrderStatus;
        let elsewhere = match order.status {
            OrderStatus::Cancelled | OrderStatus::Expired => return Some(Vec::new()),
            OrderStatus::PendingPayment => match crate::flash_sales::stock_holder(self, order) {
                Holder::Sale(_) => return None,
                holder => self.allocation(&holder).map(|a| a.parts.clone()),
            },
            _ => self.shipment(&order.id).map(|s| s.parts.clone()),
        }
        .unwrap_or_default();
        let mut skus: Vec<(&Sku, u32)> = Vec::new();
        for line in &order.lines {
            match skus.iter_mut().find(|(sku, _)| *sku == &line.sku) {
                Some((_, units)) => *units += line.quantity,
                None => skus.push((&line.sku, line.quantity)),
            }
        }
        let mut sources = Vec::new();
        for (sku, units) in skus {
            let mut left = units;
            for part in elsewhere.iter().filter(|p| &p.sku == sku) {
                left -= part.units;
                sources.push(part.clone());
            }
            if left > 0 {
                sources.push(AllocationPart {
                    sku: sku.clone(),
                    location_id: LocationId::DEFAULT,
                    units: left,
                });
            }
        }
        Some(sources)
    }

    /// Where `holder`'s reserved units are away from the default location, if anywhere.
    pub fn allocation(&self, holder: &Holder) -> Option<Arc<Allocation>> {
        self.inventory.allocations.get(holder)
    }
}
