//! The flash sales' commands: create, cancel, purchase.

use std::sync::Arc;

use super::{FlashSale, FlashSaleEvent, NewFlashSale, Purchase};
use crate::catalog::{MoneyInput, ProductStatus};
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result, Shortfall};
use crate::idempotency::{self, IdempotencyKey};
use crate::kernel::handler::{done, not_found, Ctx, Decision, Request, APPLIED};
use crate::orders::{placing, Order, Placed};
use crate::types::*;
use crate::validate::Checks;

/// The most units one sale may allocate.
pub const FLASH_SALE_QUANTITY_MAX: i64 = 1_000_000;
/// The longest a purchase may hold its units unpaid (a day).
pub const FLASH_SALE_RESERVATION_TTL_MAX_MS: i64 = 24 * 60 * 60 * 1000;
/// How long a purchase holds its units unpaid when the sale does not say (10 minutes).
pub const FLASH_SALE_RESERVATION_TTL_DEFAULT_MS: i64 = 10 * 60 * 1000;
/// The longest window a sale may have (a year).
pub const FLASH_SALE_WINDOW_MAX_MS: i64 = 366 * 24 * 60 * 60 * 1000;

/// Creates a flash sale, carving its units out of the SKU's available stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateFlashSale {
    /// The SKU, sold by an active product.
    pub sku: String,
    /// The sale price of one unit, in the product's currency.
    pub price: MoneyInput,
    /// Units allocated, 1 to [`FLASH_SALE_QUANTITY_MAX`].
    pub quantity: i64,
    /// Units one customer may hold in pending and paid orders of the sale, 1 to
    /// `quantity`.
    pub per_customer_limit: i64,
    /// When it starts selling (in the past: at once).
    pub starts_at: TimestampMs,
    /// When it stops selling: after `starts_at` and after now.
    pub ends_at: TimestampMs,
    /// How long a purchase holds its units unpaid, 1 ms to a day (default 10 minutes).
    pub reservation_ttl_ms: Option<i64>,
}

/// Cancels a sale that has not ended; the units not taken go back to normal stock.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CancelFlashSale {
    /// The sale.
    pub sale_id: String,
}

/// Buys units of a live sale: a pending order at the sale price, holding the units for
/// the sale's reservation time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseFlashSale {
    /// The sale.
    pub sale_id: String,
    /// The buyer (a signed-in customer).
    pub customer_id: CustomerId,
    /// Units, 1 to the sale's per-customer limit.
    pub quantity: i64,
    /// Makes a retry return the first outcome.
    pub idempotency: Option<IdempotencyKey>,
}

pub(crate) fn sale_named(state: &State, id: &str) -> Result<Arc<FlashSale>> {
    FlashSaleId::parse(id)
        .and_then(|id| state.flash_sale(&id))
        .ok_or_else(|| not_found(EntityKind::FlashSale, id))
}

impl Request for CreateFlashSale {
    type Output = Arc<FlashSale>;
    type Outcome = FlashSaleId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<FlashSaleId>> {
        let c = self;
        let mut checks = Checks::default();
        let sku = Sku::new(c.sku.as_str()).map_err(|e| checks.push(e)).ok();
        let price = c.price.checked(&mut checks, "price");
        if !(1..=FLASH_SALE_QUANTITY_MAX).contains(&c.quantity) {
            checks.fail("quantity", format!("must be between 1 and {FLASH_SALE_QUANTITY_MAX}"));
        }
        if c.per_customer_limit < 1 || c.per_customer_limit > c.quantity.max(1) {
            checks.fail("per_customer_limit", "must be between 1 and the quantity");
        }
        if c.ends_at <= c.starts_at {
            checks.fail("ends_at", "must be after starts_at");
        } else if c.ends_at <= ctx.now {
            checks.fail("ends_at", "must be in the future");
        } else if c.ends_at.saturating_sub(c.starts_at.max(ctx.now)) > FLASH_SALE_WINDOW_MAX_MS {
            checks.fail("ends_at", "a sale lasts a year at most");
        }
        let ttl = c.reservation_ttl_ms.unwrap_or(FLASH_SALE_RESERVATION_TTL_DEFAULT_MS);
        if !(1..=FLASH_SALE_RESERVATION_TTL_MAX_MS).contains(&ttl) {
            checks.fail("reservation_ttl_s", "must be between 1 second and a day");
        }
        let product = sku.as_ref().and_then(|sku| {
            let product = state.product_by_sku(sku).filter(|p| p.status == ProductStatus::Active);
            if product.is_none() {
                checks.fail("sku", "no active product has this SKU");
            }
            product
        });
        if let (Some(product), Some(sku), Some(price)) = (&product, &sku, price) {
            let regular = product.variant(sku).expect("the SKU index names the product").price;
            if regular.currency() != price.currency() {
                checks
                    .fail("price.currency", format!("the SKU is priced in {}", regular.currency()));
            }
        }
        done(checks)?;
        let (sku, price) = (sku.expect("checked"), price.expect("checked"));
        let quantity = c.quantity as u32;
        let available = state.stock(&sku).map_or(0, |s| s.available());
        if available < quantity {
            return Err(EngineError::OutOfStock(vec![Shortfall {
                sku,
                requested: quantity,
                available,
            }]));
        }
        let id = FlashSaleId::from_seq(state.flash_sales.sale_seq.next());
        let new = NewFlashSale {
            id,
            sku,
            price,
            quantity,
            per_customer_limit: c.per_customer_limit as u32,
            starts_at: c.starts_at,
            ends_at: c.ends_at,
            reservation_ttl_ms: ttl,
        };
        let mut events = vec![FlashSaleEvent::Created(Box::new(new)).into()];
        // A start already past starts the sale at once.
        if c.starts_at <= ctx.now {
            events.push(FlashSaleEvent::Started { sale_id: id }.into());
        }
        Decision::many(id, events)
    }

    fn reply(state: &State, outcome: FlashSaleId) -> Arc<FlashSale> {
        state.flash_sale(&outcome).expect(APPLIED)
    }
}

impl Request for CancelFlashSale {
    type Output = Arc<FlashSale>;
    type Outcome = FlashSaleId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<FlashSaleId>> {
        let sale = sale_named(state, &self.sale_id)?;
        // Past `ends_at` the sale is over even when its timer has not fired yet.
        if !sale.holds_stock() || ctx.now >= sale.ends_at {
            return Err(EngineError::InvalidState(format!(
                "cannot cancel a flash sale that is {}",
                sale.status(ctx.now).as_str()
            )));
        }
        let event = FlashSaleEvent::Cancelled { sale_id: sale.id };
        Decision::one(sale.id, event)
    }

    fn reply(state: &State, outcome: FlashSaleId) -> Arc<FlashSale> {
        state.flash_sale(&outcome).expect(APPLIED)
    }
}

/// Why `sale` refuses a purchase of `units` by a customer holding `held` at `now`, if
/// it does: what a reader can tell without the sequencer (the sequencer decides again).
pub fn purchase_refusal(
    sale: &FlashSale,
    units: u32,
    held: u32,
    now: TimestampMs,
) -> Option<EngineError> {
    if !sale.selling_at(now) {
        return Some(EngineError::SaleNotLive(format!(
            "the flash sale is {}",
            sale.status(now).as_str()
        )));
    }
    if sale.remaining == 0 || sale.remaining < units {
        return Some(EngineError::SoldOut { remaining: sale.remaining });
    }
    if u64::from(held) + u64::from(units) > u64::from(sale.per_customer_limit) {
        return Some(EngineError::PurchaseLimitExceeded { limit: sale.per_customer_limit, held });
    }
    None
}

impl Request for PurchaseFlashSale {
    type Output = Arc<Order>;
    type Outcome = Placed;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<Placed>> {
        let c = self;
        let print = || idempotency::purchase_fingerprint(&c.sale_id, c.quantity);
        let tag = match placing(state, c.idempotency.as_ref(), print, ctx)? {
            Ok(tag) => tag,
            Err(replayed) => return Decision::nothing(replayed),
        };
        let sale = sale_named(state, &c.sale_id)?;
        if c.quantity < 1 || c.quantity > i64::from(sale.per_customer_limit) {
            return Err(EngineError::field(
                "quantity",
                format!("must be between 1 and {}", sale.per_customer_limit),
            ));
        }
        if state.customer(&c.customer_id).is_none() {
            return Err(not_found(EntityKind::Customer, c.customer_id.text().as_str()));
        }
        let units = c.quantity as u32;
        let held = state.flash_sale_units_held(&sale.id, &c.customer_id);
        if let Some(refusal) = purchase_refusal(&sale, units, held, ctx.now) {
            return Err(refusal);
        }
        if sale.price.times(units).is_none() {
            return Err(EngineError::field("quantity", "the total is too large"));
        }
        let order_id = crate::orders::new_order_id(state, ctx);
        let purchase = Purchase {
            sale_id: sale.id,
            order_id,
            customer_id: c.customer_id,
            units,
            reservation_expires_at: ctx.now.saturating_add(sale.reservation_ttl_ms),
            idempotency: tag,
        };
        Decision::one(Placed::New(order_id), FlashSaleEvent::Purchased(Box::new(purchase)))
    }

    fn reply(state: &State, outcome: Placed) -> Arc<Order> {
        outcome.order(state)
    }
}
