//! The orders' commands: checkout, cancel, fulfil.

use std::sync::Arc;

use super::{Address, Order, OrderEvent, OrderStatus, PlacedLine, PlacedOrder};
use crate::carts::{check_purchasable, open_cart};
use crate::domains::{Event, State};
use crate::error::{EngineError, EntityKind, Result, Shortfall};
use crate::idempotency::{self, IdempotencyKey, IdempotencyTag, IdempotentOutcome, Replay};
use crate::kernel::handler::{
    check_version, done, not_found, too_large, Ctx, Decision, Request, APPLIED,
};
use crate::promotions::{AppliedCode, Discounts, LineCost, OrderDiscount, PromotionEvent};
use crate::shipping::ShippingEvent;
use crate::types::*;
use crate::validate::{self, Checks};

/// Turns a cart into an order, reserving every line's stock or none.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Checkout {
    /// The cart.
    pub cart_id: String,
    /// Where to send the receipt; required for a guest cart, the account's email
    /// otherwise.
    pub email: Option<String>,
    /// Where to ship.
    pub shipping_address: Option<Address>,
    /// Or an address of the cart owner's book; with neither, the owner's default
    /// shipping address, if they have one (a guest cart has no book).
    pub shipping_address_id: Option<String>,
    /// The shipping method (its rate is added to the total; needs an address).
    pub shipping_method_id: Option<String>,
    /// Makes a retry return the first outcome.
    pub idempotency: Option<IdempotencyKey>,
}

/// Cancels a pending order, releasing its stock.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CancelOrder {
    /// The order.
    pub order_id: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Marks a paid order fulfilled.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FulfillOrder {
    /// The order.
    pub order_id: String,
}

/// Checks an address's fields, named under `prefix` (`shipping_address.`).
pub(crate) fn check_address(checks: &mut Checks, prefix: &str, address: &Address) {
    let fields = [
        ("name", &address.name, 1, 200),
        ("line1", &address.line1, 1, 200),
        ("line2", &address.line2, 0, 200),
        ("city", &address.city, 1, 100),
        ("region", &address.region, 0, 100),
        ("postal_code", &address.postal_code, 0, 20),
    ];
    for (field, value, min, max) in fields {
        checks.text(&format!("{prefix}{field}"), value, min, max, false);
    }
    if address.country.len() != 2 || !address.country.bytes().all(|b| b.is_ascii_uppercase()) {
        checks.fail(format!("{prefix}country"), "must be an ISO 3166-1 alpha-2 code such as US");
    }
}

/// What a checkout's (or a flash-sale purchase's) reply is read from: the order it
/// placed, or the one a retry with its idempotency key replays.
#[doc(hidden)]
#[derive(Debug)]
pub enum Placed {
    New(OrderId),
    Replayed(Arc<Order>),
}

impl Request for Checkout {
    type Output = Arc<Order>;
    type Outcome = Placed;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<Placed>> {
        let c = self;
        // A checkout without the newer fields prints as before them, so a key recorded
        // by an older version still matches its retry.
        let print = || match (&c.shipping_address_id, &c.shipping_method_id) {
            (None, None) => idempotency::fingerprint(&(&c.cart_id, &c.email, &c.shipping_address)),
            (id, method) => {
                idempotency::fingerprint(&(&c.cart_id, &c.email, &c.shipping_address, id, method))
            }
        };
        let tag = match placing(state, c.idempotency.as_ref(), print, ctx)? {
            Ok(tag) => tag,
            Err(replayed) => return Decision::nothing(replayed),
        };
        let cart = open_cart(state, &c.cart_id)?;
        let mut checks = Checks::default();
        let email = match (&c.email, &cart.customer_id) {
            (Some(email), _) => validate::email(email).map_err(|e| checks.push(e)).ok(),
            (None, Some(customer)) => state.customer(customer).map(|c| c.email.clone()),
            (None, None) => {
                checks.fail("email", "a guest checkout needs an email address");
                None
            }
        };
        if let Some(address) = &c.shipping_address {
            check_address(&mut checks, "shipping_address.", address);
        }
        done(checks)?;
        let shipping_address = shipping_address(state, c, cart.customer_id)?;
        if cart.lines.is_empty() {
            return Err(EngineError::EmptyCart);
        }
        let mut lines = Vec::with_capacity(cart.lines.len());
        let mut shortfalls = Vec::new();
        let mut subtotal = Money::zero(cart.currency);
        for (i, line) in cart.lines.iter().enumerate() {
            let price = check_purchasable(state, &cart, &line.sku).map_err(|e| {
                EngineError::Validation(
                    e.fields().iter().map(|f| f.clone().under(&format!("items[{i}]"))).collect(),
                )
            })?;
            let available = state.stock(&line.sku).map_or(0, |s| s.available());
            if available < line.quantity {
                shortfalls.push(Shortfall {
                    sku: line.sku.clone(),
                    requested: line.quantity,
                    available,
                });
            }
            // `apply` sums the same lines: checked here, so it cannot overflow there.
            let line_total = price.times(line.quantity).ok_or_else(|| too_large("items"))?;
            subtotal = subtotal.plus(line_total).ok_or_else(|| too_large("items"))?;
            lines.push(PlacedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price: price,
            });
        }
        if !shortfalls.is_empty() {
            return Err(EngineError::OutOfStock(shortfalls));
        }
        // Every code on the cart must apply, at the prices charged; their use is counted
        // by the same log entry as the reservation. Automatic promotions apply first.
        let discounts = if crate::promotions::any_discount(state, &cart, ctx.now) {
            let costs: Vec<LineCost> = lines
                .iter()
                .map(|l| LineCost {
                    product_id: state.product_by_sku(&l.sku).map(|p| p.id),
                    quantity: l.quantity,
                    total: l.unit_price.amount() * i64::from(l.quantity),
                })
                .collect();
            crate::promotions::discounts(state, &cart, &costs, ctx.now)
        } else {
            Discounts::default()
        };
        if let Some((code, reason)) = discounts.refusal() {
            return Err(crate::promotions::unavailable(code, reason));
        }
        let id = new_order_id(state, ctx);
        let charges = crate::shipping::charges(
            state,
            id,
            cart.currency,
            shipping_address.as_ref(),
            c.shipping_method_id.as_deref(),
            &lines,
            &discounts.line_discounts,
        )?;
        if let Some(charges) = &charges {
            // `apply` adds them to the total: checked here, so it cannot overflow there.
            let off: i64 = discounts.line_discounts.iter().sum();
            let total = i128::from(subtotal.amount()) - i128::from(off)
                + i128::from(charges.shipping)
                + i128::from(charges.tax());
            if total > i128::from(MONEY_AMOUNT_MAX) {
                let field =
                    if c.shipping_method_id.is_some() { "shipping_method_id" } else { "items" };
                return Err(too_large(field));
            }
        }
        let placed = PlacedOrder {
            id,
            cart_id: cart.id,
            email: email.unwrap_or_default(),
            shipping_address: shipping_address.map(Box::new),
            lines,
            reservation_expires_at: ctx.now.saturating_add(ctx.limits.reservation_ttl_ms),
            idempotency: tag,
        };
        let mut events: Vec<Event> = vec![OrderEvent::Placed(Box::new(placed)).into()];
        if let Some(discounted) = discounted(id, cart.customer_id, discounts) {
            events.push(discounted.into());
        }
        events.extend(charges.map(|c| Event::from(ShippingEvent::OrderCharged(Box::new(c)))));
        Decision::many(Placed::New(id), events)
    }

    fn reply(state: &State, outcome: Placed) -> Arc<Order> {
        outcome.order(state)
    }
}

/// Where a checkout ships: the address given, or the one of the customer's book it
/// names, or else their default shipping address (none for a guest).
fn shipping_address(
    state: &State,
    c: &Checkout,
    customer: Option<CustomerId>,
) -> Result<Option<Address>> {
    let saved = |customer: Option<CustomerId>, id: &str| {
        customer
            .and(AddressId::parse(id))
            .and_then(|id| state.saved_address(&id))
            .filter(|a| Some(a.customer_id) == customer)
            .map(|a| a.address.clone())
            .ok_or_else(|| {
                EngineError::field("shipping_address_id", "no such address in the customer's book")
            })
    };
    match (&c.shipping_address, &c.shipping_address_id) {
        (Some(_), Some(_)) => Err(EngineError::field(
            "shipping_address_id",
            "give an address or an address id, not both",
        )),
        (Some(address), None) => Ok(Some(address.clone())),
        (None, Some(id)) => saved(customer, id).map(Some),
        (None, None) => Ok(customer.and_then(|customer| {
            state
                .saved_addresses(&customer)
                .iter()
                .find(|a| a.default_shipping)
                .map(|a| a.address.clone())
        })),
    }
}

/// The promotions' event of an order placed with discount codes, if it has any.
fn discounted(
    id: OrderId,
    customer_id: Option<CustomerId>,
    discounts: Discounts,
) -> Option<PromotionEvent> {
    // A code that took nothing (its lines made free by promotions) is not carried.
    if discounts.codes.iter().all(|c| c.amount == 0) {
        return None;
    }
    let discounted = OrderDiscount {
        order_id: id,
        customer_id,
        codes: discounts
            .codes
            .iter()
            .filter(|c| c.amount > 0)
            .map(|c| AppliedCode { code: c.code.clone(), amount: c.amount })
            .collect(),
        line_discounts: discounts.line_discounts,
        released: false,
    };
    Some(PromotionEvent::OrderDiscounted(Box::new(discounted)))
}

impl Placed {
    /// The order it names.
    pub(crate) fn order(self, state: &State) -> Arc<Order> {
        match self {
            Placed::New(id) => state.order(&id).expect(APPLIED),
            Placed::Replayed(order) => order,
        }
    }
}

/// The key of a command that places an order (a checkout, a flash-sale purchase): the
/// tag to record the new order under (`None` without a key), or, `Err`, the order it
/// placed before, to answer again.
#[allow(clippy::type_complexity)]
pub(crate) fn placing(
    state: &State,
    key: Option<&IdempotencyKey>,
    print: impl FnOnce() -> u64,
    ctx: &Ctx<'_>,
) -> Result<std::result::Result<Option<Box<IdempotencyTag>>, Placed>> {
    match idempotency::check(state, key, print, ctx)? {
        Replay::Recorded(IdempotentOutcome::Checkout(order)) => Ok(Err(Placed::Replayed(order))),
        Replay::Recorded(IdempotentOutcome::Placed(id)) => match state.order(&id) {
            Some(order) => Ok(Err(Placed::Replayed(Arc::new(order.as_placed())))),
            None => Err(not_found(EntityKind::Order, id.text().as_str())),
        },
        Replay::Recorded(_) => Err(EngineError::IdempotencyKeyReused),
        Replay::New(tag) => Ok(Ok(Some(tag))),
        Replay::Unkeyed => Ok(Ok(None)),
    }
}

/// A random id no order has: 128 random bits never repeat in practice, but an id source
/// seeded the same way twice (a test's, across a reopen) would hand out the same ids.
pub(crate) fn new_order_id(state: &State, ctx: &mut Ctx<'_>) -> OrderId {
    loop {
        let id = OrderId::from_random(ctx.ids.random_u128());
        if state.order(&id).is_none() {
            return id;
        }
    }
}

pub(crate) fn order_named(state: &State, id: &str) -> Result<Arc<Order>> {
    OrderId::parse(id)
        .and_then(|id| state.order(&id))
        .ok_or_else(|| not_found(EntityKind::Order, id))
}

pub(crate) fn invalid_transition(order: &Order, action: &str) -> EngineError {
    EngineError::InvalidState(format!("cannot {action} an order that is {}", order.status.as_str()))
}

impl Request for CancelOrder {
    type Output = Arc<Order>;
    type Outcome = OrderId;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<OrderId>> {
        let c = self;
        let order = order_named(state, &c.order_id)?;
        check_version(c.expected_version, order.version)?;
        if order.status != OrderStatus::PendingPayment {
            return Err(invalid_transition(&order, "cancel"));
        }
        if state.open_charge(&order.id).is_some() {
            return Err(EngineError::InvalidState(
                "a payment of this order is in progress: cancel once it settles".into(),
            ));
        }
        let event = OrderEvent::Cancelled { order_id: order.id };
        Decision::one(order.id, event)
    }

    fn reply(state: &State, outcome: OrderId) -> Arc<Order> {
        state.order(&outcome).expect(APPLIED)
    }
}

impl Request for FulfillOrder {
    type Output = Arc<Order>;
    type Outcome = OrderId;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<OrderId>> {
        let c = self;
        let order = order_named(state, &c.order_id)?;
        // A paid order, or one partly refunded before it shipped.
        let shippable = matches!(order.status, OrderStatus::Paid | OrderStatus::PartiallyRefunded);
        if !shippable || state.fulfilled_at(&order).is_some() {
            return Err(invalid_transition(&order, "fulfil"));
        }
        let event = OrderEvent::Fulfilled { order_id: order.id };
        Decision::one(order.id, event)
    }

    fn reply(state: &State, outcome: OrderId) -> Arc<Order> {
        state.order(&outcome).expect(APPLIED)
    }
}
