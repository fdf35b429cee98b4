//! The carts' commands.

use std::sync::Arc;

use super::{Cart, CartEvent, CartStatus};
use crate::catalog::ProductStatus;
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{done, not_found, too_large, Ctx, Decision, Request, APPLIED};
use crate::types::*;
use crate::validate::Checks;

/// Opens a cart.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreateCart {
    /// The owner, or `None` for a guest cart.
    pub customer_id: Option<String>,
    /// The currency; the engine's default when `None`.
    pub currency: Option<String>,
}

/// Adds units of a SKU to a cart (to its line, if it has one).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AddCartItem {
    /// The cart.
    pub cart_id: String,
    /// The SKU of an active product priced in the cart's currency.
    pub sku: String,
    /// Units to add, at least 1.
    pub quantity: i64,
}

/// Sets the units of a cart line; 0 removes it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SetCartItem {
    /// The cart.
    pub cart_id: String,
    /// The SKU.
    pub sku: String,
    /// The new units, 0 to the line maximum.
    pub quantity: i64,
}

/// Removes a line from a cart.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RemoveCartItem {
    /// The cart.
    pub cart_id: String,
    /// The SKU of the line.
    pub sku: String,
}

impl Request for CreateCart {
    type Output = Arc<Cart>;
    type Outcome = CartId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<CartId>> {
        let c = self;
        let currency = match &c.currency {
            Some(code) => Currency::new(code)?,
            None => ctx.limits.default_currency,
        };
        let customer_id = match &c.customer_id {
            Some(id) => Some(
                CustomerId::parse(id)
                    .filter(|id| state.customer(id).is_some())
                    .ok_or_else(|| not_found(EntityKind::Customer, id))?,
            ),
            None => None,
        };
        let id = CartId::from_random(ctx.ids.random_u128());
        let cart = Cart {
            id,
            seq: state.carts.cart_seq.next(),
            customer_id,
            currency,
            lines: Vec::new(),
            status: CartStatus::Open,
            created_at: ctx.now,
            updated_at: ctx.now,
            version: 1,
        };
        Decision::one(id, CartEvent::CartCreated(Box::new(cart)))
    }

    fn reply(state: &State, outcome: CartId) -> Arc<Cart> {
        state.cart(&outcome).expect(APPLIED)
    }
}

pub(crate) fn open_cart(state: &State, id: &str) -> Result<Arc<Cart>> {
    let cart = CartId::parse(id)
        .and_then(|id| state.cart(&id))
        .ok_or_else(|| not_found(EntityKind::Cart, id))?;
    match &cart.status {
        CartStatus::Open => Ok(cart),
        CartStatus::CheckedOut(order) => {
            Err(EngineError::InvalidState(format!("the cart was checked out as order {order}")))
        }
    }
}

/// Adds `quantity` units (`add`) or sets the line to `quantity` (0 removes it).
fn change_cart_line(
    state: &State,
    cart_id: &str,
    sku: &str,
    quantity: i64,
    add: bool,
    ctx: &mut Ctx<'_>,
) -> Result<Decision<CartId>> {
    let cart = open_cart(state, cart_id)?;
    let max = i64::from(ctx.limits.line_quantity_max);
    let min = if add { 1 } else { 0 };
    let mut checks = Checks::default();
    let sku = Sku::new(sku).map_err(|e| checks.push(e)).ok();
    if !(min..=max).contains(&quantity) {
        checks.fail("quantity", format!("must be between {min} and {max}"));
    }
    done(checks)?;
    let sku = sku.expect("checked");
    let existing = cart.lines.iter().find(|l| l.sku == sku).map_or(0, |l| i64::from(l.quantity));
    let target = if add { existing + quantity } else { quantity };
    if target > max {
        return Err(EngineError::field(
            "quantity",
            format!("the line would have {target} units; at most {max} per line"),
        ));
    }
    if target > 0 {
        let price = check_purchasable(state, &cart, &sku)?;
        if price.times(target as u32).is_none() {
            return Err(too_large("quantity"));
        }
        if existing == 0 && cart.lines.len() >= ctx.limits.cart_lines_max {
            return Err(EngineError::field(
                "sku",
                format!("a cart may have at most {} lines", ctx.limits.cart_lines_max),
            ));
        }
    }
    if target == existing {
        return Decision::nothing(cart.id);
    }
    let event = CartEvent::CartLineSet { cart_id: cart.id, sku, quantity: target as u32 };
    Decision::one(cart.id, event)
}

/// A SKU can go in a cart when an active product has it, priced in the cart's
/// currency: its current unit price.
pub(crate) fn check_purchasable(state: &State, cart: &Cart, sku: &Sku) -> Result<Money> {
    let product = state
        .product_by_sku(sku)
        .filter(|p| p.status == ProductStatus::Active)
        .ok_or_else(|| EngineError::field("sku", "no active product has this SKU"))?;
    let price = product.variant(sku).expect("the SKU index names the product").price;
    if price.currency() != cart.currency {
        return Err(EngineError::field(
            "sku",
            format!("the SKU is priced in {}, the cart in {}", price.currency(), cart.currency),
        ));
    }
    Ok(price)
}

impl Request for RemoveCartItem {
    type Output = Arc<Cart>;
    type Outcome = CartId;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<CartId>> {
        let c = self;
        let cart = open_cart(state, &c.cart_id)?;
        let sku = Sku::new(c.sku.as_str())?;
        if !cart.lines.iter().any(|l| l.sku == sku) {
            return Err(not_found(EntityKind::Sku, sku.as_str()));
        }
        let event = CartEvent::CartLineSet { cart_id: cart.id, sku, quantity: 0 };
        Decision::one(cart.id, event)
    }

    fn reply(state: &State, outcome: CartId) -> Arc<Cart> {
        state.cart(&outcome).expect(APPLIED)
    }
}

impl Request for AddCartItem {
    type Output = Arc<Cart>;
    type Outcome = CartId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<CartId>> {
        change_cart_line(state, &self.cart_id, &self.sku, self.quantity, true, ctx)
    }

    fn reply(state: &State, outcome: CartId) -> Arc<Cart> {
        state.cart(&outcome).expect(APPLIED)
    }
}

impl Request for SetCartItem {
    type Output = Arc<Cart>;
    type Outcome = CartId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<CartId>> {
        change_cart_line(state, &self.cart_id, &self.sku, self.quantity, false, ctx)
    }

    fn reply(state: &State, outcome: CartId) -> Arc<Cart> {
        state.cart(&outcome).expect(APPLIED)
    }
}
