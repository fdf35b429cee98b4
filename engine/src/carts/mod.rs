//! Carts: what a shopper means to buy. Prices are not stored in a cart: they are the
//! catalog's current ones whenever the cart is read or checked out.

mod commands;
mod model;

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::catalog::{line_title, ProductStatus};
use crate::domains::{Event, State};
use crate::kernel::handler::Ctx;
use crate::kernel::table::{
    check_v1, decode_row, persist, Counter, Domain, IdIndex, Index, Row, Table, Timers,
};
use crate::promotions::LineCost;
use crate::types::*;
use crate::EXPIRIES_PER_COMMAND_MAX;

const CARTS: &str = "carts";

// Keyed by sequence, not by the random id, so new rows append.
persist!(Cart, CARTS, |c| c.seq.to_be_bytes().to_vec());

/// The carts in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) carts: IdIndex<CartId, Arc<Cart>>,
    /// `(updated_at, cart)` of every open cart, least recently changed first.
    pub(crate) by_activity: Activity,
    pub(crate) cart_seq: Counter,
    /// Open carts left unchanged past their time to live and dropped (the
    /// cart-abandonment figure).
    pub(crate) abandoned: Counter,
    /// Checked-out carts are kept for the carts' time to live after their checkout (a
    /// change to one answers that it is closed), then dropped, so that carts do not
    /// grow with the orders. They go in the order their orders were placed, which is
    /// the order of their checkouts: every order up to this sequence has had its cart
    /// dropped, and no index of checked-out carts is needed.
    pub(crate) closed_through: Counter,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            carts: Index::default(),
            by_activity: Activity::default(),
            cart_seq: Counter::new("cart"),
            abandoned: Counter::new("cart_abandoned"),
            closed_through: Counter::new("cart_closed_through"),
        }
    }
}

/// The open carts by their last change, least recent first: a B-tree under a lock.
/// Every change of a cart moves its entry (a checkout takes it out), on the sequencer;
/// other threads only count the entries or look at the first. A skip list's search
/// for the entry to unlink was a tenth of a checkout's instructions; the B-tree's
/// nodes hold eleven entries each, so its search touches a few cache lines instead
/// of a tower of nodes, and it takes half the memory per open cart.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    set: Mutex<BTreeSet<(TimestampMs, CartId)>>,
}

impl Activity {
    fn insert(&self, at: TimestampMs, cart: CartId) {
        self.set.lock().insert((at, cart));
    }

    fn remove(&self, at: TimestampMs, cart: CartId) {
        self.set.lock().remove(&(at, cart));
    }

    /// When the least recently changed open cart last changed.
    fn oldest(&self) -> Option<TimestampMs> {
        self.set.lock().first().map(|(at, _)| *at)
    }

    /// The least recently changed open carts while `pick` takes their time, at most
    /// `max`.
    fn oldest_while(&self, max: usize, pick: impl Fn(TimestampMs) -> bool) -> Vec<CartId> {
        let set = self.set.lock();
        set.iter().take_while(|(at, _)| pick(*at)).take(max).map(|(_, cart)| *cart).collect()
    }

    fn len(&self) -> usize {
        self.set.lock().len()
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "carts",
    tables: &[Table {
        name: CARTS,
        rows: |s, f| s.carts.carts.entries().iter().for_each(|(_, c)| f(&**c)),
        load: |state, bytes| {
            let cart: Cart = decode_row(bytes, "cart")?;
            index_cart(state, None, &cart);
            state.carts.carts.insert(cart.id, Arc::new(cart));
            Ok(())
        },
        check_v1: check_v1::<Cart>,
        load_in_parallel: true,
        skip_list: false,
        reserve: Some(|state, rows| state.carts.carts.reserve(rows)),
    }],
    counters: |state, each| {
        each(&state.carts.cart_seq);
        each(&state.carts.abandoned);
        each(&state.carts.closed_through);
    },
    timers: Some(Timers {
        due: |state, now, limits| {
            let idle = |at: TimestampMs| at + limits.cart_ttl_ms <= now;
            state.carts.by_activity.oldest().is_some_and(idle)
                || closed_due(state).next().is_some_and(|order| idle(order.created_at))
        },
        expire: abandon_idle,
    }),
    verify: None,
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The carts' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum CartEvent {
        CartCreated(Box<Cart>),
        /// A cart line's new quantity; 0 removes the line.
        CartLineSet {
            cart_id: CartId,
            sku: Sku,
            quantity: u32,
        },
        /// Open carts left unchanged past their time to live: dropped.
        CartsAbandoned {
            cart_ids: Vec<CartId>,
        },
        /// The carts checked out into the orders after the last such event up to
        /// the order `through`, all placed at least the carts' time to live ago:
        /// dropped (not abandoned: their orders stand). Orders of no cart (flash-sale
        /// purchases) are passed over. (An id, not the order's sequence: a `u64` here
        /// would widen the alignment of the archived enum and so move every cart
        /// event of the logs already written.)
        ClosedCartsDropped {
            cart_ids: Vec<CartId>,
            through: OrderId,
        },
    }
}
pub use event::CartEvent;

pub(crate) fn apply(state: &State, event: &CartEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        CartEvent::CartCreated(cart) => {
            state.carts.cart_seq.bump();
            let previous = state.cart(&cart.id);
            put_cart(state, previous.as_deref(), (**cart).clone(), rows);
        }
        CartEvent::CartLineSet { cart_id, sku, quantity } => {
            let before = state.cart(cart_id).expect("decide checked the cart");
            let mut cart = (*before).clone();
            match cart.lines.iter().position(|l| &l.sku == sku) {
                Some(i) if *quantity == 0 => {
                    cart.lines.remove(i);
                }
                Some(i) => cart.lines[i].quantity = *quantity,
                None => cart.lines.push(CartLine { sku: sku.clone(), quantity: *quantity }),
            }
            cart.updated_at = at;
            cart.version += 1;
            put_cart(state, Some(&before), cart, rows);
        }
        CartEvent::CartsAbandoned { cart_ids } => {
            for id in cart_ids {
                drop_cart(state, id, rows);
                state.carts.abandoned.bump();
            }
        }
        CartEvent::ClosedCartsDropped { cart_ids, through } => {
            for id in cart_ids {
                drop_cart(state, id, rows);
            }
            let through = state.order(through).expect("the order passed exists");
            state.carts.closed_through.set(through.seq);
        }
    }
}

/// Drops a cart (open or checked out).
fn drop_cart(state: &State, id: &CartId, rows: &mut Vec<Row>) {
    let cart = state.carts.carts.remove(id).expect("a dropped cart exists");
    state.carts.by_activity.remove(cart.updated_at, *id);
    rows.push(Row::delete(CARTS, cart.seq.to_be_bytes()));
    crate::promotions::cart_dropped(state, id, rows);
}

/// Marks an open cart changed by another domain (its discount codes): a new version,
/// and it counts as active.
pub(crate) fn touch(state: &State, cart_id: &CartId, at: TimestampMs, rows: &mut Vec<Row>) {
    let before = state.cart(cart_id).expect("decide checked the cart");
    let mut cart = (*before).clone();
    cart.updated_at = at;
    cart.version += 1;
    put_cart(state, Some(&before), cart, rows);
}

/// Publishes `cart`, which replaces `previous` (the caller has looked it up already).
fn put_cart(state: &State, previous: Option<&Cart>, cart: Cart, rows: &mut Vec<Row>) {
    let cart = Arc::new(cart);
    index_cart(state, previous, &cart);
    state.carts.carts.insert(cart.id, cart.clone());
    rows.push(Row::put(cart));
}

/// Keeps the activity index: an open cart is listed under its last change.
fn index_cart(state: &State, previous: Option<&Cart>, cart: &Cart) {
    if let Some(previous) = previous {
        state.carts.by_activity.remove(previous.updated_at, previous.id);
    }
    if cart.status == CartStatus::Open {
        state.carts.by_activity.insert(cart.updated_at, cart.id);
    }
}

/// The orders whose checked-out carts are still kept, oldest first.
fn closed_due(state: &State) -> impl Iterator<Item = Arc<crate::orders::Order>> + '_ {
    crate::orders::placed_after(state, state.carts.closed_through.get())
}

/// Drops the open carts unchanged for the carts' time to live, and the checked-out
/// carts whose checkout is that old.
fn abandon_idle(state: &State, ctx: &Ctx<'_>, events: &mut Vec<Event>) -> usize {
    let idle = |at: TimestampMs| at + ctx.limits.cart_ttl_ms <= ctx.now;
    let cart_ids = state.carts.by_activity.oldest_while(EXPIRIES_PER_COMMAND_MAX, idle);
    if !cart_ids.is_empty() {
        events.push(CartEvent::CartsAbandoned { cart_ids }.into());
    }
    let mut through = None;
    let mut cart_ids = Vec::new();
    for order in closed_due(state).take_while(|o| idle(o.created_at)).take(EXPIRIES_PER_COMMAND_MAX)
    {
        through = Some(order.id);
        let closed = CartStatus::CheckedOut(order.id);
        if state.cart(&order.cart_id).is_some_and(|cart| cart.status == closed) {
            cart_ids.push(order.cart_id);
        }
    }
    if let Some(through) = through {
        events.push(CartEvent::ClosedCartsDropped { cart_ids, through }.into());
    }
    0
}

/// Closes `cart` as checked out into `order`; returns it as it was.
pub(crate) fn check_out(
    state: &State,
    cart: &CartId,
    order: &OrderId,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) -> Arc<Cart> {
    let before = state.cart(cart).expect("decide checked the cart");
    let mut cart = (*before).clone();
    cart.status = CartStatus::CheckedOut(*order);
    cart.updated_at = at;
    cart.version += 1;
    put_cart(state, Some(&before), cart, rows);
    before
}

/// A cart line priced at the current price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedLine {
    /// The SKU.
    pub sku: Sku,
    /// The product it belongs to, if it still exists.
    pub product_id: Option<ProductId>,
    /// The product title (and variant title).
    pub title: String,
    /// Units.
    pub quantity: u32,
    /// The current price of one unit (zero when the SKU is no longer sold).
    pub unit_price: Money,
    /// `unit_price × quantity`.
    pub line_total: Money,
    /// What the cart's discount codes take off the line.
    pub discount: Money,
    /// Whether the SKU can still be bought (an active product in the cart's currency).
    pub purchasable: bool,
}

/// A cart with current prices and totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedCart {
    /// The cart.
    pub cart: Arc<Cart>,
    /// Its lines, priced.
    pub lines: Vec<PricedLine>,
    /// Sum of the line totals.
    pub subtotal: Money,
    /// The line discounts' sum.
    pub discount_total: Money,
    /// `subtotal - discount_total`.
    pub total: Money,
    /// How each discount code on the cart prices now.
    pub codes: Vec<crate::promotions::CodeOutcome>,
}

/// The carts' reads.
impl State {
    /// How many open carts were dropped after their time to live: the
    /// cart-abandonment figure.
    pub fn carts_abandoned(&self) -> u64 {
        self.carts.abandoned.get()
    }

    /// How many carts are open.
    pub fn open_cart_count(&self) -> usize {
        self.carts.by_activity.len()
    }

    /// A cart by id.
    pub fn cart(&self, id: &CartId) -> Option<Arc<Cart>> {
        self.carts.carts.get(id)
    }

    /// A cart priced at the current prices, its discount codes as they apply at `now`.
    pub fn priced_cart(&self, id: &CartId, now: TimestampMs) -> Option<PricedCart> {
        self.cart(id).map(|cart| self.price_cart(cart, now))
    }

    /// Prices `cart` at the current prices, its discount codes as they apply at `now`.
    pub fn price_cart(&self, cart: Arc<Cart>, now: TimestampMs) -> PricedCart {
        let zero = Money::zero(cart.currency);
        let mut subtotal = zero;
        let mut lines: Vec<PricedLine> = cart
            .lines
            .iter()
            .map(|line| {
                let product = self.product_by_sku(&line.sku);
                let variant = product.as_ref().and_then(|p| p.variant(&line.sku).cloned());
                let purchasable = matches!((&product, &variant), (Some(p), Some(v))
                    if p.status == ProductStatus::Active && v.price.currency() == cart.currency);
                let unit_price = variant.as_ref().filter(|_| purchasable).map_or(zero, |v| v.price);
                let line_total = unit_price.times(line.quantity).unwrap_or(zero);
                subtotal = subtotal.plus(line_total).unwrap_or(subtotal);
                PricedLine {
                    sku: line.sku.clone(),
                    product_id: product.as_ref().map(|p| p.id),
                    title: line_title(product.as_deref(), variant.as_ref()),
                    quantity: line.quantity,
                    unit_price,
                    line_total,
                    discount: zero,
                    purchasable,
                }
            })
            .collect();
        let costs: Vec<LineCost> = lines
            .iter()
            .map(|l| LineCost {
                product_id: l.product_id,
                quantity: l.quantity,
                total: l.line_total.amount(),
            })
            .collect();
        // A checked-out cart's discounts are its order's; it shows none of today's.
        let discounts = if cart.status == CartStatus::Open {
            crate::promotions::discounts(self, &cart, &costs, now)
        } else {
            let line_discounts = vec![0; costs.len()];
            crate::promotions::Discounts { line_discounts, ..Default::default() }
        };
        let money = |amount: i64| Money::new(amount, cart.currency).unwrap_or(zero);
        for (line, off) in lines.iter_mut().zip(&discounts.line_discounts) {
            line.discount = money(*off);
        }
        let discount_total = money(discounts.total);
        let total = money(subtotal.amount() - discounts.total);
        PricedCart { cart, lines, subtotal, discount_total, total, codes: discounts.codes }
    }
}
