//! Inventory's commands: stock counts and adjustments, transfers, stock locations.

use std::sync::Arc;

use super::{InventoryEvent, LocationKind, LocationLevel, StockLevels, StockLocation};
use super::{LocationAdjustment, LocationCount, Transfer};
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{check_version, done, not_found, Ctx, Decision, Request, APPLIED};
use crate::types::*;
use crate::validate::Checks;

/// The most units on hand one SKU may have, over every location.
pub const ON_HAND_MAX: i64 = 1_000_000_000;

/// The most stock locations besides the default one.
pub const LOCATIONS_MAX: usize = 100;

/// Sets a SKU's units on hand at the default location (a stock count). Below the units
/// reserved there is a conflict.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SetStock {
    /// The SKU.
    pub sku: String,
    /// The new units on hand.
    pub on_hand: i64,
    /// Why (`stock count`), up to 200 characters.
    pub reason: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Adds `delta` (positive or negative) to a SKU's units on hand at the default location.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AdjustStock {
    /// The SKU.
    pub sku: String,
    /// Units to add (negative removes); not zero.
    pub delta: i64,
    /// Why (`received`, `damaged`), 1–200 characters.
    pub reason: String,
}

/// [`SetStock`] at a given location.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SetLocationStock {
    /// The SKU.
    pub sku: String,
    /// The location.
    pub location_id: String,
    /// The new units on hand there.
    pub on_hand: i64,
    /// Why (`stock count`), up to 200 characters.
    pub reason: String,
    /// Refuse unless this is the SKU's current version.
    pub expected_version: Option<u64>,
}

/// [`AdjustStock`] at a given location.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AdjustLocationStock {
    /// The SKU.
    pub sku: String,
    /// The location.
    pub location_id: String,
    /// Units to add (negative removes); not zero.
    pub delta: i64,
    /// Why (`received`, `damaged`), 1–200 characters.
    pub reason: String,
}

/// Moves available units of a SKU from one location to another: its totals stay.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TransferStock {
    /// The SKU.
    pub sku: String,
    /// Where the units are (they must be available there, not reserved).
    pub from_location_id: String,
    /// Where they go.
    pub to_location_id: String,
    /// How many, 1 to [`ON_HAND_MAX`].
    pub quantity: i64,
    /// Why (`rebalance`), up to 200 characters.
    pub reason: String,
}

/// Creates a stock location.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreateLocation {
    /// Its name, 1–100 characters.
    pub name: String,
    /// `warehouse` or `store`.
    pub kind: String,
    /// 0–1000, lower reserved from first; `None`: [`super::LOCATION_PRIORITY_DEFAULT`].
    pub priority: Option<i64>,
}

/// Renames a stock location, or changes its kind or priority.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateLocation {
    /// The location.
    pub location_id: String,
    /// A new name.
    pub name: Option<String>,
    /// A new kind.
    pub kind: Option<String>,
    /// A new priority.
    pub priority: Option<i64>,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Deletes a stock location that holds no units of any SKU (the default one stays).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeleteLocation {
    /// The location.
    pub location_id: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

fn stock_named(state: &State, sku: &str) -> Result<(Sku, StockLevels)> {
    let sku = Sku::new(sku)?;
    let levels = state.stock(&sku).ok_or_else(|| not_found(EntityKind::Sku, sku.as_str()))?;
    Ok((sku, levels))
}

fn location_named(state: &State, id: &str) -> Result<Arc<StockLocation>> {
    LocationId::parse(id)
        .and_then(|id| state.location(&id))
        .ok_or_else(|| not_found(EntityKind::Location, id))
}

/// The SKU, its totals and its level at the location (`None`: the default one).
fn level_named(
    state: &State,
    sku: &str,
    location: Option<&str>,
) -> Result<(Sku, StockLevels, LocationLevel)> {
    let location = match location {
        Some(id) => location_named(state, id)?.id,
        None => LocationId::DEFAULT,
    };
    let (sku, totals) = stock_named(state, sku)?;
    // On the sequencer: the SKU's levels cannot change under this read, and the
    // default location's count needs no list of every location.
    let level = super::locations::Change::of(state, &sku).at(location);
    Ok((sku, totals, level))
}

/// The units on hand at a location after it changes from `level.on_hand` to `on_hand`:
/// in range, over every location too, and holding what is reserved there.
fn check_on_hand(on_hand: i64, totals: &StockLevels, level: &LocationLevel) -> Result<u32> {
    if !(0..=ON_HAND_MAX).contains(&on_hand) {
        return Err(EngineError::field("on_hand", format!("must be between 0 and {ON_HAND_MAX}")));
    }
    let total = i64::from(totals.on_hand) - i64::from(level.on_hand) + on_hand;
    if total > ON_HAND_MAX {
        return Err(EngineError::field(
            "on_hand",
            format!(
                "the SKU would have {total} units on hand over every location, above {ON_HAND_MAX}"
            ),
        ));
    }
    if on_hand < i64::from(level.reserved) {
        return Err(EngineError::Conflict(format!(
            "on hand would be {on_hand}, below the {} units reserved there by unpaid orders",
            level.reserved
        )));
    }
    Ok(on_hand as u32)
}

/// A stock count at `location` (`None`: the default one).
fn set_stock(
    state: &State,
    sku: &str,
    location: Option<&str>,
    on_hand: i64,
    reason: &str,
    expected_version: Option<u64>,
) -> Result<Decision<Sku>> {
    let mut checks = Checks::default();
    checks.text("reason", reason, 0, 200, false);
    done(checks)?;
    let (sku, totals, level) = level_named(state, sku, location)?;
    check_version(expected_version, totals.version)?;
    let on_hand = check_on_hand(on_hand, &totals, &level)?;
    let reason = reason.to_string();
    let event = match level.location_id {
        LocationId::DEFAULT => InventoryEvent::StockSet { sku: sku.clone(), on_hand, reason },
        location_id => {
            let count = LocationCount { sku: sku.clone(), location_id, on_hand, reason };
            InventoryEvent::LocationStockSet(Box::new(count))
        }
    };
    Decision::one(sku, event)
}

/// An adjustment at `location` (`None`: the default one).
fn adjust_stock(
    state: &State,
    sku: &str,
    location: Option<&str>,
    delta: i64,
    reason: &str,
) -> Result<Decision<Sku>> {
    let mut checks = Checks::default();
    checks.text("reason", reason, 1, 200, false);
    if delta == 0 || delta.unsigned_abs() > ON_HAND_MAX as u64 {
        checks.fail("delta", format!("must be non-zero and at most {ON_HAND_MAX} either way"));
    }
    done(checks)?;
    let (sku, totals, level) = level_named(state, sku, location)?;
    let on_hand = i64::from(level.on_hand) + delta;
    if on_hand < 0 {
        return Err(EngineError::Conflict(format!(
            "cannot remove {} units: {} on hand",
            -delta, level.on_hand
        )));
    }
    check_on_hand(on_hand, &totals, &level).map_err(|e| match e {
        EngineError::Validation(_) => {
            EngineError::field("delta", format!("on hand may be at most {ON_HAND_MAX}"))
        }
        other => other,
    })?;
    let delta = i32::try_from(delta).expect("bounded by ON_HAND_MAX above");
    let reason = reason.to_string();
    let event = match level.location_id {
        LocationId::DEFAULT => InventoryEvent::StockAdjusted { sku: sku.clone(), delta, reason },
        location_id => {
            let adjustment = LocationAdjustment { sku: sku.clone(), location_id, delta, reason };
            InventoryEvent::LocationStockAdjusted(Box::new(adjustment))
        }
    };
    Decision::one(sku, event)
}

/// The commands that answer a SKU's totals after the change.
macro_rules! stock_request {
    ($command:ty, |$c:ident, $state:ident| $decide:expr) => {
        impl Request for $command {
            type Output = StockLevels;
            type Outcome = Sku;

            fn decide(&self, $state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<Sku>> {
                let $c = self;
                $decide
            }

            fn reply(state: &State, outcome: Sku) -> StockLevels {
                state.stock(&outcome).expect(APPLIED)
            }
        }
    };
}

stock_request!(SetStock, |c, state| set_stock(
    state,
    &c.sku,
    None,
    c.on_hand,
    &c.reason,
    c.expected_version
));
stock_request!(SetLocationStock, |c, state| set_stock(
    state,
    &c.sku,
    Some(&c.location_id),
    c.on_hand,
    &c.reason,
    c.expected_version
));
stock_request!(AdjustStock, |c, state| adjust_stock(state, &c.sku, None, c.delta, &c.reason));
stock_request!(AdjustLocationStock, |c, state| adjust_stock(
    state,
    &c.sku,
    Some(&c.location_id),
    c.delta,
    &c.reason
));
stock_request!(TransferStock, |c, state| transfer(state, c));

fn transfer(state: &State, c: &TransferStock) -> Result<Decision<Sku>> {
    let mut checks = Checks::default();
    checks.text("reason", &c.reason, 0, 200, false);
    if !(1..=ON_HAND_MAX).contains(&c.quantity) {
        checks.fail("quantity", format!("must be between 1 and {ON_HAND_MAX}"));
    }
    if c.from_location_id == c.to_location_id {
        checks.fail("to_location_id", "must differ from from_location_id");
    }
    done(checks)?;
    // Locations named in the body that do not exist are the body's fault.
    let mut checks = Checks::default();
    for (field, id) in
        [("from_location_id", &c.from_location_id), ("to_location_id", &c.to_location_id)]
    {
        if location_named(state, id).is_err() {
            checks.fail(field, format!("no stock location {id} exists"));
        }
    }
    done(checks)?;
    let (_, _, from) = level_named(state, &c.sku, Some(&c.from_location_id))?;
    let (sku, _, to) = level_named(state, &c.sku, Some(&c.to_location_id))?;
    let quantity = c.quantity as u32;
    if from.available() < quantity {
        return Err(EngineError::Conflict(format!(
            "{} has {} units of {sku} available ({} on hand, {} reserved), fewer than {quantity}",
            from.location_id,
            from.available(),
            from.on_hand,
            from.reserved
        )));
    }
    let event = InventoryEvent::Transferred(Box::new(Transfer {
        sku: sku.clone(),
        from: from.location_id,
        to: to.location_id,
        quantity,
        reason: c.reason.clone(),
    }));
    Decision::one(sku, event)
}

fn check_location(
    checks: &mut Checks,
    name: Option<&str>,
    kind: Option<&str>,
    priority: Option<i64>,
) -> Option<LocationKind> {
    if let Some(name) = name {
        checks.text("name", name, 1, 100, false);
    }
    if priority.is_some_and(|p| !(0..=1000).contains(&p)) {
        checks.fail("priority", "must be between 0 and 1000");
    }
    let kind = kind.map(LocationKind::parse);
    if kind == Some(None) {
        checks.fail("kind", "must be warehouse or store");
    }
    kind.flatten()
}

impl Request for CreateLocation {
    type Output = Arc<StockLocation>;
    type Outcome = LocationId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<LocationId>> {
        let c = self;
        let mut checks = Checks::default();
        let kind = check_location(&mut checks, Some(&c.name), Some(&c.kind), c.priority);
        done(checks)?;
        let created = state.locations().len() - 1;
        if created >= LOCATIONS_MAX {
            return Err(EngineError::InvalidState(format!(
                "at most {LOCATIONS_MAX} stock locations besides the default one"
            )));
        }
        let location = StockLocation {
            id: LocationId::from_seq(state.inventory.location_seq.next()),
            name: c.name.clone(),
            kind: kind.expect("checked"),
            priority: c.priority.map_or(super::LOCATION_PRIORITY_DEFAULT, |p| p as u32),
            created_at: ctx.now,
            updated_at: ctx.now,
            version: 1,
        };
        let id = location.id;
        Decision::one(id, InventoryEvent::LocationSaved(Box::new(location)))
    }

    fn reply(state: &State, id: LocationId) -> Arc<StockLocation> {
        state.location(&id).expect(APPLIED)
    }
}

impl Request for UpdateLocation {
    type Output = Arc<StockLocation>;
    type Outcome = LocationId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<LocationId>> {
        let c = self;
        let mut checks = Checks::default();
        let kind = check_location(&mut checks, c.name.as_deref(), c.kind.as_deref(), c.priority);
        done(checks)?;
        let mut location = (*location_named(state, &c.location_id)?).clone();
        check_version(c.expected_version, location.version)?;
        location.version += 1;
        if let Some(name) = &c.name {
            location.name.clone_from(name);
        }
        if let Some(kind) = kind {
            location.kind = kind;
        }
        if let Some(priority) = c.priority {
            location.priority = priority as u32;
        }
        location.updated_at = ctx.now;
        let id = location.id;
        Decision::one(id, InventoryEvent::LocationSaved(Box::new(location)))
    }

    fn reply(state: &State, id: LocationId) -> Arc<StockLocation> {
        state.location(&id).expect(APPLIED)
    }
}

impl Request for DeleteLocation {
    type Output = ();
    type Outcome = ();

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<()>> {
        let location = location_named(state, &self.location_id)?;
        check_version(self.expected_version, location.version)?;
        if location.id == LocationId::DEFAULT {
            return Err(EngineError::InvalidState("the default location cannot be deleted".into()));
        }
        if state.location_in_use(location.id) {
            return Err(EngineError::InvalidState(format!(
                "{} still holds units on hand or reserved: transfer or count them out first",
                location.id
            )));
        }
        Decision::one((), InventoryEvent::LocationDeleted { location_id: location.id })
    }

    fn reply(_: &State, _: ()) {}
}
