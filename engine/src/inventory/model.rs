//! Inventory's entity: a SKU's stock levels.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::*;

/// A SKU's stock: `available = on_hand - reserved`, all non-negative.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StockLevels {
    /// The SKU.
    pub sku: Sku,
    /// Units in the warehouse, including reserved ones.
    pub on_hand: u32,
    /// Units held by unpaid orders.
    pub reserved: u32,
    /// Bumped by every change.
    pub version: u64,
}

impl StockLevels {
    /// Units that can still be reserved.
    pub fn available(&self) -> u32 {
        debug_assert!(self.reserved <= self.on_hand, "reserved exceeds on hand for {}", self.sku);
        self.on_hand - self.reserved
    }
}

/// What a stock location is.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocationKind {
    /// A warehouse.
    Warehouse,
    /// A shop that also ships (or hands out) online orders.
    Store,
}

impl LocationKind {
    /// Its name in the API (`warehouse`, `store`).
    pub fn as_str(self) -> &'static str {
        match self {
            LocationKind::Warehouse => "warehouse",
            LocationKind::Store => "store",
        }
    }

    /// Parses an API name.
    pub fn parse(name: &str) -> Option<LocationKind> {
        match name {
            "warehouse" => Some(LocationKind::Warehouse),
            "store" => Some(LocationKind::Store),
            _ => None,
        }
    }
}

/// A place stock is kept. Every shop has the default location
/// ([`LocationId::DEFAULT`]); the single-location inventory commands act on it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StockLocation {
    /// The id.
    pub id: LocationId,
    /// Its name (`Berlin warehouse`), 1–100 characters.
    pub name: String,
    /// Warehouse or store.
    pub kind: LocationKind,
    /// Checkout reserves from lower numbers first (0–1000); among equal priorities, from
    /// the location with the most available units.
    pub priority: u32,
    /// When it was created (0 for the default location).
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
    /// Bumped by every change.
    pub version: u64,
}

impl StockLocation {
    /// The default location as it is until staff rename it or change its priority.
    pub fn default_location() -> StockLocation {
        StockLocation {
            id: LocationId::DEFAULT,
            name: "Default".to_string(),
            kind: LocationKind::Warehouse,
            priority: LOCATION_PRIORITY_DEFAULT,
            created_at: 0,
            updated_at: 0,
            version: 1,
        }
    }
}

/// The priority a location gets when none is given.
pub const LOCATION_PRIORITY_DEFAULT: u32 = 100;

/// A SKU's units at one location: `available = on_hand - reserved`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocationLevel {
    /// The location.
    pub location_id: LocationId,
    /// Units there, including reserved ones.
    pub on_hand: u32,
    /// Units there held by unpaid orders and open flash sales.
    pub reserved: u32,
}

impl LocationLevel {
    /// Units there that can still be reserved.
    pub fn available(&self) -> u32 {
        self.on_hand - self.reserved
    }
}

/// A SKU's levels at the locations other than the default one (those with units on
/// hand or reserved, in location order); the default location holds the rest of the
/// SKU's [`StockLevels`]. A SKU kept at the default location only has none.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SkuLocations {
    /// The SKU.
    pub sku: Sku,
    /// The levels, by location id.
    pub levels: Vec<LocationLevel>,
    /// The SKU's [`StockLevels::version`] these levels were written with.
    pub version: u64,
}

/// What holds reserved units: a pending order, or a flash sale (its allocation, and
/// the units of its pending orders).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    /// An order placed from a cart.
    Order(OrderId),
    /// A flash sale.
    Sale(FlashSaleId),
}

impl Holder {
    /// Its id, as text (the prefix tells the kind).
    pub fn text(&self) -> IdText {
        match self {
            Holder::Order(id) => id.text(),
            Holder::Sale(id) => id.text(),
        }
    }
}

/// Units a holder reserved at one location other than the default.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AllocationPart {
    /// The SKU.
    pub sku: Sku,
    /// The location.
    pub location_id: LocationId,
    /// Units reserved there.
    pub units: u32,
}

/// Where a holder's reserved units are, when not all are at the default location: the
/// parts elsewhere (the rest is at the default location). Releasing or shipping takes
/// from these parts first, in order.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The holder.
    pub holder: Holder,
    /// Its units at other locations.
    pub parts: Vec<AllocationPart>,
}

/// Where a paid order's units left from, when not all from the default location: the
/// parts elsewhere (the rest left the default location). Kept with the order.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Shipment {
    /// The order.
    pub order_id: OrderId,
    /// Its units that left other locations.
    pub parts: Vec<AllocationPart>,
}
