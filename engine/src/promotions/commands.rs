//! The promotions' commands: create and change codes, enter and remove them on a cart.

use std::sync::Arc;

use super::{unusable, AutomaticPromotion, CartCodes, DiscountCode, DiscountValue, PromotionEvent};
use crate::carts::{open_cart, Cart};
use crate::catalog::MoneyInput;
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{check_version, done, not_found, Ctx, Decision, Request, APPLIED};
use crate::types::*;
use crate::validate::Checks;

/// Discount codes, at most.
pub const DISCOUNT_CODES_MAX: usize = 100_000;
/// Codes on one cart, at most.
pub const CART_DISCOUNT_CODES_MAX: usize = 5;
/// Products (and, separately, categories) one code may be limited to.
pub const DISCOUNT_TARGETS_MAX: usize = 100;
/// The largest usage limit, global or per customer.
pub const DISCOUNT_USAGE_LIMIT_MAX: i64 = 1_000_000_000;

/// Creates a discount code.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreateDiscountCode {
    /// 3–32 letters, digits, `-` or `_`; stored upper-cased.
    pub code: String,
    /// Percent off, 1–100 (exactly one of this and `amount_off`).
    pub percent_off: Option<i64>,
    /// A fixed amount off.
    pub amount_off: Option<MoneyInput>,
    /// Only lines of these products.
    pub product_ids: Vec<String>,
    /// Only lines of products in these categories (or below them).
    pub category_ids: Vec<String>,
    /// The least subtotal a cart must have.
    pub min_subtotal: Option<MoneyInput>,
    /// Usable from (now when absent).
    pub starts_at: Option<TimestampMs>,
    /// Usable until.
    pub ends_at: Option<TimestampMs>,
    /// Orders that may carry it, in all.
    pub usage_limit: Option<i64>,
    /// Orders one customer may place with it.
    pub per_customer_limit: Option<i64>,
    /// Whether it combines with other codes.
    pub stackable: bool,
}

/// Changes a code's terms: switches it on or off, moves its end, changes its usage
/// limit (never below the uses it has).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateDiscountCode {
    /// The code.
    pub code: String,
    /// On or off.
    pub active: Option<bool>,
    /// The new end.
    pub ends_at: Option<TimestampMs>,
    /// The new usage limit.
    pub usage_limit: Option<i64>,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Enters a code on an open cart (again: nothing changes).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ApplyDiscountCode {
    /// The cart.
    pub cart_id: String,
    /// The code, in any case.
    pub code: String,
}

/// Removes a code from an open cart.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RemoveDiscountCode {
    /// The cart.
    pub cart_id: String,
    /// The code, in any case.
    pub code: String,
}

fn check_limit(checks: &mut Checks, field: &str, value: Option<i64>) -> Option<u32> {
    let value = value?;
    if (1..=DISCOUNT_USAGE_LIMIT_MAX).contains(&value) {
        Some(value as u32)
    } else {
        checks.fail(field, format!("must be between 1 and {DISCOUNT_USAGE_LIMIT_MAX}"));
        None
    }
}

/// The products and categories a discount is limited to, each checked to exist (and
/// their number bounded); the failures go to `checks`.
fn target_ids(
    state: &State,
    checks: &mut Checks,
    product_texts: &[String],
    category_texts: &[String],
) -> (Vec<ProductId>, Vec<CategoryId>) {
    let mut ids = |field: &str, texts: &[String], kind: EntityKind| {
        if texts.len() > DISCOUNT_TARGETS_MAX {
            checks.fail(field, format!("must list at most {DISCOUNT_TARGETS_MAX}"));
            return Vec::new();
        }
        texts
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                let found = match kind {
                    EntityKind::Product => ProductId::parse(text)
                        .filter(|id| state.product(id).is_some())
                        .map(|id| id.to_string()),
                    _ => CategoryId::parse(text)
                        .filter(|id| state.category(id).is_some())
                        .map(|id| id.to_string()),
                };
                if found.is_none() {
                    checks.fail(format!("{field}[{i}]"), format!("no {kind} has this id"));
                }
                found
            })
            .collect::<Vec<_>>()
    };
    let product_ids = ids("product_ids", product_texts, EntityKind::Product)
        .iter()
        .filter_map(|id| ProductId::parse(id))
        .collect();
    let category_ids = ids("category_ids", category_texts, EntityKind::Category)
        .iter()
        .filter_map(|id| CategoryId::parse(id))
        .collect();
    (product_ids, category_ids)
}

/// Live automatic promotions (switched on, not ended), at most: each is checked on
/// every cart and checkout. Ended or switched-off ones are kept as records.
pub const AUTOMATIC_PROMOTIONS_MAX: usize = 50;

/// Whether a promotion is live at `now`: switched on and not ended (it may start later).
fn live(promotion: &AutomaticPromotion, now: TimestampMs) -> bool {
    promotion.active && promotion.ends_at.is_none_or(|end| now < end)
}

/// Refuses one more live promotion past the most there may be.
fn check_live_room(state: &State, now: TimestampMs) -> Result<()> {
    let count = state.automatic_promotions().iter().filter(|p| live(p, now)).count();
    if count >= AUTOMATIC_PROMOTIONS_MAX {
        return Err(EngineError::Conflict(format!(
            "the shop has the most live automatic promotions it may have \
             ({AUTOMATIC_PROMOTIONS_MAX}): end or switch one off first"
        )));
    }
    Ok(())
}

/// Creates an automatic promotion: buy `buy`, get `get` free, on every cart.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreatePromotion {
    /// What shoppers see (1–100 characters).
    pub name: String,
    /// Units bought per group, 1–100.
    pub buy: i64,
    /// Units free per group, 1–100.
    pub get: i64,
    /// Only units of these products.
    pub product_ids: Vec<String>,
    /// Only units of products in these categories (or below them).
    pub category_ids: Vec<String>,
    /// In force from (now when absent).
    pub starts_at: Option<TimestampMs>,
    /// In force until.
    pub ends_at: Option<TimestampMs>,
}

/// Switches an automatic promotion on or off, or moves its end.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdatePromotion {
    /// The promotion.
    pub promotion_id: String,
    /// On or off.
    pub active: Option<bool>,
    /// The new end.
    pub ends_at: Option<TimestampMs>,
}

impl Request for CreatePromotion {
    type Output = Arc<AutomaticPromotion>;
    type Outcome = PromotionId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<PromotionId>> {
        let c = self;
        let mut checks = Checks::default();
        checks.text("name", &c.name, 1, 100, false);
        for (field, value) in [("buy", c.buy), ("get", c.get)] {
            if !(1..=100).contains(&value) {
                checks.fail(field, "must be between 1 and 100");
            }
        }
        let (product_ids, category_ids) =
            target_ids(state, &mut checks, &c.product_ids, &c.category_ids);
        let starts_at = c.starts_at.unwrap_or(ctx.now);
        if c.ends_at.is_some_and(|end| end <= starts_at) {
            checks.fail("ends_at", "must be after starts_at");
        }
        done(checks)?;
        check_live_room(state, ctx.now)?;
        let promotion = AutomaticPromotion {
            id: PromotionId::from_seq(state.promotions.promotion_seq.next()),
            name: c.name.clone(),
            buy: c.buy as u32,
            get: c.get as u32,
            product_ids,
            category_ids,
            active: true,
            starts_at,
            ends_at: c.ends_at,
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        let id = promotion.id;
        Decision::one(id, PromotionEvent::PromotionSaved(Box::new(promotion)))
    }

    fn reply(state: &State, id: PromotionId) -> Arc<AutomaticPromotion> {
        state.automatic_promotion(&id).expect(APPLIED)
    }
}

impl Request for UpdatePromotion {
    type Output = Arc<AutomaticPromotion>;
    type Outcome = PromotionId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<PromotionId>> {
        let c = self;
        let promotion = PromotionId::parse(&c.promotion_id)
            .and_then(|id| state.automatic_promotion(&id))
            .ok_or_else(|| not_found(EntityKind::Promotion, &c.promotion_id))?;
        if c.ends_at.is_some_and(|end| end <= promotion.starts_at) {
            return Err(EngineError::field("ends_at", "must be after starts_at"));
        }
        let was_live = live(&promotion, ctx.now);
        let mut promotion = (*promotion).clone();
        if let Some(active) = c.active {
            promotion.active = active;
        }
        if let Some(end) = c.ends_at {
            promotion.ends_at = Some(end);
        }
        if live(&promotion, ctx.now) && !was_live {
            check_live_room(state, ctx.now)?;
        }
        promotion.updated_at = ctx.now;
        let id = promotion.id;
        Decision::one(id, PromotionEvent::PromotionSaved(Box::new(promotion)))
    }

    fn reply(state: &State, id: PromotionId) -> Arc<AutomaticPromotion> {
        state.automatic_promotion(&id).expect(APPLIED)
    }
}

impl Request for CreateDiscountCode {
    type Output = Arc<DiscountCode>;
    type Outcome = String;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<String>> {
        let c = self;
        let mut checks = Checks::default();
        let code = c.code.to_ascii_uppercase();
        let well_formed = (3..=32).contains(&code.len())
            && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            checks.fail("code", "must be 3 to 32 letters, digits, - or _");
        }
        let value = match (c.percent_off, &c.amount_off) {
            (Some(percent), None) if (1..=100).contains(&percent) => {
                Some(DiscountValue::Percent(percent as u32 * 100))
            }
            (Some(_), None) => {
                checks.fail("percent_off", "must be between 1 and 100");
                None
            }
            (None, Some(amount)) => match amount.checked(&mut checks, "amount_off") {
                Some(m) if m.amount() > 0 => Some(DiscountValue::Fixed(m)),
                Some(_) => {
                    checks.fail("amount_off.amount", "must be more than zero");
                    None
                }
                None => None,
            },
            _ => {
                checks.fail("percent_off", "give exactly one of percent_off and amount_off");
                None
            }
        };
        let min_subtotal =
            c.min_subtotal.as_ref().and_then(|m| m.checked(&mut checks, "min_subtotal"));
        if let (Some(DiscountValue::Fixed(off)), Some(min)) = (value, min_subtotal) {
            if off.currency() != min.currency() {
                checks.fail("min_subtotal.currency", "must be the currency of amount_off");
            }
        }
        let (product_ids, category_ids) =
            target_ids(state, &mut checks, &c.product_ids, &c.category_ids);
        let starts_at = c.starts_at.unwrap_or(ctx.now);
        if c.ends_at.is_some_and(|end| end <= starts_at) {
            checks.fail("ends_at", "must be after starts_at");
        }
        let usage_limit = check_limit(&mut checks, "usage_limit", c.usage_limit);
        let per_customer_limit =
            check_limit(&mut checks, "per_customer_limit", c.per_customer_limit);
        done(checks)?;
        if state.discount_code(&code).is_some() {
            return Err(EngineError::Conflict(format!("the discount code {code} exists")));
        }
        if state.discount_code_count() >= DISCOUNT_CODES_MAX {
            return Err(EngineError::Conflict(format!(
                "the shop has the most discount codes it may have ({DISCOUNT_CODES_MAX})"
            )));
        }
        let new = DiscountCode {
            code: code.clone(),
            seq: state.promotions.code_seq.next(),
            value: value.expect("checked"),
            product_ids,
            category_ids,
            min_subtotal,
            starts_at,
            ends_at: c.ends_at,
            usage_limit,
            per_customer_limit,
            stackable: c.stackable,
            active: true,
            uses: 0,
            created_at: ctx.now,
            updated_at: ctx.now,
            version: 1,
        };
        Decision::one(code, PromotionEvent::CodeCreated(Box::new(new)))
    }

    fn reply(state: &State, code: String) -> Arc<DiscountCode> {
        state.discount_code(&code).expect(APPLIED)
    }
}

fn code_named(state: &State, code: &str) -> Result<Arc<DiscountCode>> {
    state.discount_code(code).ok_or_else(|| not_found(EntityKind::DiscountCode, code))
}

impl Request for UpdateDiscountCode {
    type Output = Arc<DiscountCode>;
    type Outcome = String;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<String>> {
        let c = self;
        let code = code_named(state, &c.code)?;
        check_version(c.expected_version, code.version)?;
        let mut checks = Checks::default();
        let mut next = (*code).clone();
        if let Some(active) = c.active {
            next.active = active;
        }
        if let Some(end) = c.ends_at {
            if end <= next.starts_at {
                checks.fail("ends_at", "must be after starts_at");
            }
            next.ends_at = Some(end);
        }
        if let Some(limit) = check_limit(&mut checks, "usage_limit", c.usage_limit) {
            if limit < code.uses {
                checks
                    .fail("usage_limit", format!("must be at least the {} uses it has", code.uses));
            }
            next.usage_limit = Some(limit);
        }
        done(checks)?;
        if next == *code {
            return Decision::nothing(code.code.clone());
        }
        next.updated_at = ctx.now;
        next.version += 1;
        Decision::one(code.code.clone(), PromotionEvent::CodeUpdated(Box::new(next)))
    }

    fn reply(state: &State, code: String) -> Arc<DiscountCode> {
        state.discount_code(&code).expect(APPLIED)
    }
}

/// The refusal of a code that cannot be used.
pub(crate) fn unavailable(code: &str, reason: impl Into<String>) -> EngineError {
    EngineError::DiscountUnavailable { code: code.to_string(), reason: reason.into() }
}

impl Request for ApplyDiscountCode {
    type Output = Arc<Cart>;
    type Outcome = CartId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<CartId>> {
        let c = self;
        let cart = open_cart(state, &c.cart_id)?;
        let code = code_named(state, &c.code)?;
        let mut codes = state.cart_codes(&cart.id).map_or_else(Vec::new, |c| c.codes.clone());
        if codes.contains(&code.code) {
            return Decision::nothing(cart.id);
        }
        if let Some(why) = unusable(state, &code, &cart, ctx.now) {
            return Err(unavailable(&code.code, why));
        }
        if codes.len() >= CART_DISCOUNT_CODES_MAX {
            return Err(unavailable(
                &code.code,
                format!("a cart takes at most {CART_DISCOUNT_CODES_MAX} codes"),
            ));
        }
        let others_exclusive =
            codes.iter().any(|other| state.discount_code(other).is_some_and(|o| !o.stackable));
        if !codes.is_empty() && (!code.stackable || others_exclusive) {
            return Err(unavailable(
                &code.code,
                "the code cannot be combined with the codes on the cart",
            ));
        }
        codes.push(code.code.clone());
        Decision::one(
            cart.id,
            PromotionEvent::CartCodesSet(Box::new(CartCodes { cart_id: cart.id, codes })),
        )
    }

    fn reply(state: &State, id: CartId) -> Arc<Cart> {
        state.cart(&id).expect(APPLIED)
    }
}

impl Request for RemoveDiscountCode {
    type Output = Arc<Cart>;
    type Outcome = CartId;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<CartId>> {
        let c = self;
        let cart = open_cart(state, &c.cart_id)?;
        let wanted = c.code.to_ascii_uppercase();
        let mut codes = state.cart_codes(&cart.id).map_or_else(Vec::new, |c| c.codes.clone());
        let Some(i) = codes.iter().position(|c| *c == wanted) else {
            return Err(not_found(EntityKind::DiscountCode, &c.code));
        };
        codes.remove(i);
        Decision::one(
            cart.id,
            PromotionEvent::CartCodesSet(Box::new(CartCodes { cart_id: cart.id, codes })),
        )
    }

    fn reply(state: &State, id: CartId) -> Arc<Cart> {
        state.cart(&id).expect(APPLIED)
    }
}
