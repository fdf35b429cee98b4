//! Inventory's commands: stock counts and adjustments.

use super::{InventoryEvent, StockLevels};
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{check_version, done, not_found, Ctx, Decision, Request, APPLIED};
use crate::types::*;
use crate::validate::Checks;

/// The most units on hand one SKU may have.
pub const ON_HAND_MAX: i64 = 1_000_000_000;

/// Sets a SKU's units on hand (a stock count). Below the reserved units is a conflict.
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

/// Adds `delta` (positive or negative) to a SKU's units on hand.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AdjustStock {
    /// The SKU.
    pub sku: String,
    /// Units to add (negative removes); not zero.
    pub delta: i64,
    /// Why (`received`, `damaged`), 1–200 characters.
    pub reason: String,
}

fn stock_named(state: &State, sku: &str) -> Result<(Sku, StockLevels)> {
    let sku = Sku::new(sku)?;
    let levels = state.stock(&sku).ok_or_else(|| not_found(EntityKind::Sku, sku.as_str()))?;
    Ok((sku, levels))
}

fn check_on_hand(on_hand: i64, reserved: u32) -> Result<u32> {
    if !(0..=ON_HAND_MAX).contains(&on_hand) {
        return Err(EngineError::field("on_hand", format!("must be between 0 and {ON_HAND_MAX}")));
    }
    if on_hand < i64::from(reserved) {
        return Err(EngineError::Conflict(format!(
            "on hand would be {on_hand}, below the {reserved} units reserved by unpaid orders"
        )));
    }
    Ok(on_hand as u32)
}

impl Request for SetStock {
    type Output = StockLevels;
    type Outcome = Sku;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<Sku>> {
        let c = self;
        let mut checks = Checks::default();
        checks.text("reason", &c.reason, 0, 200, false);
        done(checks)?;
        let (sku, levels) = stock_named(state, &c.sku)?;
        check_version(c.expected_version, levels.version)?;
        let on_hand = check_on_hand(c.on_hand, levels.reserved)?;
        let event =
            InventoryEvent::StockSet { sku: sku.clone(), on_hand, reason: c.reason.clone() };
        Decision::one(sku, event)
    }

    fn reply(state: &State, outcome: Sku) -> StockLevels {
        state.stock(&outcome).expect(APPLIED)
    }
}

impl Request for AdjustStock {
    type Output = StockLevels;
    type Outcome = Sku;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<Sku>> {
        let c = self;
        let mut checks = Checks::default();
        checks.text("reason", &c.reason, 1, 200, false);
        if c.delta == 0 || c.delta.unsigned_abs() > ON_HAND_MAX as u64 {
            checks.fail("delta", format!("must be non-zero and at most {ON_HAND_MAX} either way"));
        }
        done(checks)?;
        let (sku, levels) = stock_named(state, &c.sku)?;
        let on_hand = i64::from(levels.on_hand) + c.delta;
        if on_hand < 0 {
            return Err(EngineError::Conflict(format!(
                "cannot remove {} units: {} on hand",
                -c.delta, levels.on_hand
            )));
        }
        check_on_hand(on_hand, levels.reserved).map_err(|e| match e {
            EngineError::Validation(_) => {
                EngineError::field("delta", format!("on hand may be at most {ON_HAND_MAX}"))
            }
            other => other,
        })?;
        let event = InventoryEvent::StockAdjusted {
            sku: sku.clone(),
            delta: i32::try_from(c.delta).expect("bounded by ON_HAND_MAX above"),
            reason: c.reason.clone(),
        };
        Decision::one(sku, event)
    }

    fn reply(state: &State, outcome: Sku) -> StockLevels {
        state.stock(&outcome).expect(APPLIED)
    }
}
