//! Orders: a checkout reserves every line's stock or none and makes a pending order;
//! the reservation ends when the order is paid (payments), cancelled, or expires on the
//! sequencer's clock.

mod commands;
mod model;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use crossbeam_skiplist::SkipMap;
use emporium_storage::Store;
use parking_lot::Mutex;
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::catalog::{line_title, Page};
use crate::domains::State;
use crate::error::{EngineError, Result};
use crate::idempotency::{IdempotencyTag, IdempotentOutcome};
use crate::kernel::handler::Ctx;
use crate::kernel::table::{
    check_v1, decode_row, persist, Counter, Domain, GroupIndex, IdIndex, Index, Persist, Row,
    SeqIndex, Table, Timers,
};
use crate::types::*;
use crate::EXPIRIES_PER_COMMAND_MAX;

const ORDERS: &str = "orders";
const FULFILLMENTS: &str = "fulfillments";

// Keyed by sequence, not by the random id, so new rows append.
persist!(Order, ORDERS, |o| o.seq.to_be_bytes().to_vec());
persist!(Fulfillment, FULFILLMENTS, |f| f.order_id.text().as_str().as_bytes().to_vec());

/// Settled orders kept in memory by default (see
/// [`crate::EngineConfig::orders_in_memory`]): an order of a few lines takes one to
/// two kilobytes of memory.
pub const ORDERS_IN_MEMORY_DEFAULT: usize = 10_000;

/// The orders, with their indexes. Every pending order is in memory; settled ones
/// beyond [`ORDERS_IN_MEMORY_DEFAULT`] (or the configured number), least recently
/// written first, are only in the store and read from it on demand.
#[derive(Debug)]
pub(crate) struct Tables {
    /// The orders in memory.
    pub(crate) orders: IdIndex<OrderId, Arc<Order>>,
    /// The sequence (the store's key) of every order that has left memory since the
    /// open, or was settled at the open. An entry stays when its order comes back
    /// (a refund reads it and changes it): a reader that finds neither map would
    /// report a missing order, so no order is ever in neither.
    pub(crate) stored: StoredSeqs,
    /// Where orders out of memory are; unset, every order stays in memory.
    pub(crate) store: OnceLock<Weak<Store>>,
    /// Settled orders kept in memory at most.
    pub(crate) in_memory_max: AtomicUsize,
    /// Order rows the materializer wrote, oldest first, each with the value written:
    /// an order leaves memory only while that value is still the one in memory.
    pub(crate) written: Mutex<VecDeque<(u64, Weak<dyn Persist>)>>,
    pub(crate) by_seq: SeqIndex<OrderId>,
    /// Each customer's orders by sequence.
    pub(crate) by_customer: GroupIndex<CustomerId>,
    /// Every pending order by `(reservation_expires_at, seq)`: soonest first, and in
    /// the order they were placed among equal times. Keyed by sequence rather than by
    /// the random id so that an open, which loads orders in sequence, inserts near the
    /// end rather than all over the list.
    pub(crate) expiry: SkipMap<(TimestampMs, u64), OrderId>,
    /// When each order fulfilled since fulfilments were recorded was fulfilled.
    pub(crate) fulfilled: IdIndex<OrderId, TimestampMs>,
    pub(crate) order_seq: Counter,
}

/// Shards of [`StoredSeqs`]: each resizes on its own, so a resize holds one lock over
/// a sixteenth of the entries.
const STORED_SHARDS: usize = 16;

/// The sequence of each order out of memory, by id, in 8 bytes an entry: the id is not
/// kept, since the sequence index names the id of every sequence (an id-keyed map of
/// the ids' 16 bytes and the sequence took about 60 bytes an entry, for every order
/// the shop ever had). A lookup compares each candidate's id through the sequence
/// index. Sharded by hash, each shard under a lock held for one probe; reads are of
/// orders out of memory only (old orders, refunds), never the checkout's path.
pub(crate) struct StoredSeqs {
    shards: Box<[Mutex<hashbrown::HashTable<u64>>]>,
}

impl Default for StoredSeqs {
    fn default() -> StoredSeqs {
        StoredSeqs { shards: (0..STORED_SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl std::fmt::Debug for StoredSeqs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len: usize = self.shards.iter().map(|s| s.lock().len()).sum();
        f.debug_struct("StoredSeqs").field("len", &len).finish()
    }
}

impl StoredSeqs {
    fn hash(id: &OrderId) -> u64 {
        std::hash::BuildHasher::hash_one(&rustc_hash::FxBuildHasher, id)
    }

    /// The shard of `hash`: bits the table itself uses for neither the slot (the low
    /// bits) nor its filter (the top seven).
    fn shard(&self, hash: u64) -> &Mutex<hashbrown::HashTable<u64>> {
        &self.shards[(hash >> 32) as usize % STORED_SHARDS]
    }

    /// Records that order `id` is stored under `seq`, which `by_seq` maps to `id`.
    pub(crate) fn insert(&self, by_seq: &SeqIndex<OrderId>, id: OrderId, seq: u64) {
        let hash = StoredSeqs::hash(&id);
        let rehash = |&s: &u64| by_seq.get(s).map_or(0, |id| StoredSeqs::hash(&id));
        let mut shard = self.shard(hash).lock();
        shard.entry(hash, |&s| by_seq.get(s) == Some(id), rehash).or_insert(seq);
    }

    /// Where order `id` is stored, if it is out of memory.
    pub(crate) fn get(&self, by_seq: &SeqIndex<OrderId>, id: &OrderId) -> Option<u64> {
        let hash = StoredSeqs::hash(id);
        self.shard(hash).lock().find(hash, |&s| by_seq.get(s).as_ref() == Some(id)).copied()
    }
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            orders: Index::default(),
            stored: StoredSeqs::default(),
            store: OnceLock::new(),
            in_memory_max: AtomicUsize::new(usize::MAX),
            written: Mutex::new(VecDeque::new()),
            by_seq: SeqIndex::default(),
            by_customer: GroupIndex::default(),
            expiry: SkipMap::new(),
            fulfilled: Index::default(),
            order_seq: Counter::new("order"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "orders",
    tables: &[
        Table {
            name: ORDERS,
            rows: |s, f| s.for_each_order(|o| f(&*o)),
            load: |state, bytes| {
                let order: Order = decode_row(bytes, "order")?;
                index_order(state, None, Arrival::Loaded, &order);
                if state.orders.store.get().is_some() && !order.holds_reservation() {
                    // Inventory loads first: the order's shipment stays in the store too.
                    crate::inventory::order_left_memory(state, &order.id);
                    state.orders.stored.insert(&state.orders.by_seq, order.id, order.seq);
                } else {
                    state.orders.orders.insert(order.id, Arc::new(order));
                }
                Ok(())
            },
            check_v1: check_v1::<Order>,
            load_in_parallel: true,
            skip_list: true,
            // Pending orders go to the map, and settled ones too unless the store
            // keeps them (`keep_in_store`: they stay there).
            reserve: Some(|state, rows| state.orders.orders.reserve(rows)),
        },
        Table {
            name: FULFILLMENTS,
            rows: |s, f| {
                s.orders
                    .fulfilled
                    .entries()
                    .into_iter()
                    .for_each(|(order_id, fulfilled_at)| f(&Fulfillment { order_id, fulfilled_at }))
            },
            load: |state, bytes| {
                let fulfillment: Fulfillment = decode_row(bytes, "fulfillment")?;
                state.orders.fulfilled.insert(fulfillment.order_id, fulfillment.fulfilled_at);
                Ok(())
            },
            check_v1: check_v1::<Fulfillment>,
            load_in_parallel: true,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |state, each| {
        each(&state.orders.order_seq);
    },
    timers: Some(Timers { due: |state, now, _| due_expiries(state, now).next().is_some(), expire }),
    verify: Some(check_reservations),
    written: Some(let_written_orders_go),
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The orders' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum OrderEvent {
        /// An order was placed: its lines' stock is reserved and its cart closed.
        Placed(Box<PlacedOrder>),
        Cancelled {
            order_id: OrderId,
        },
        Expired {
            order_id: OrderId,
        },
        Fulfilled {
            order_id: OrderId,
        },
    }
}
pub use event::OrderEvent;

/// The new facts of a placed order: what was bought at which price, by whom, until
/// when it is reserved. Everything else of the order (owner, currency, product ids,
/// titles, totals) follows from the state at its LSN, so the log does not repeat it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PlacedOrder {
    /// The new order's id.
    pub id: OrderId,
    /// The cart it closes.
    pub cart_id: CartId,
    /// Where to send the receipt.
    pub email: String,
    /// Where to ship (boxed: most of its bytes are empty strings' headers).
    pub shipping_address: Option<Box<Address>>,
    /// SKU, units and the unit price charged, per line.
    pub lines: Vec<PlacedLine>,
    /// When the reservation ends unless paid.
    pub reservation_expires_at: TimestampMs,
    /// The idempotency key it was placed under, if any.
    pub idempotency: Option<Box<IdempotencyTag>>,
}

/// One line of a [`PlacedOrder`].
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PlacedLine {
    /// The SKU.
    pub sku: Sku,
    /// Units reserved.
    pub quantity: u32,
    /// The price of one unit at checkout.
    pub unit_price: Money,
}

pub(crate) fn apply(state: &State, event: &OrderEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        OrderEvent::Placed(placed) => place_order(state, placed, at, rows),
        OrderEvent::Cancelled { order_id } => {
            release(state, order_id, OrderStatus::Cancelled, at, rows)
        }
        OrderEvent::Expired { order_id } => {
            release(state, order_id, OrderStatus::Expired, at, rows)
        }
        OrderEvent::Fulfilled { order_id } => {
            let mut order = (*state.order(order_id).expect("decide checked the order")).clone();
            // A paid order becomes fulfilled; a partially refunded one keeps its
            // status, and the fulfilment is recorded either way.
            assert!(state.fulfilled_at(&order).is_none(), "decide checked it was not shipped");
            if order.status == OrderStatus::Paid {
                order.status = OrderStatus::Fulfilled;
            }
            record_fulfillment(state, *order_id, at, rows);
            touch(&mut order, at);
            put_order(state, order, rows);
        }
    }
}

fn record_fulfillment(state: &State, order_id: OrderId, at: TimestampMs, rows: &mut Vec<Row>) {
    state.orders.fulfilled.insert(order_id, at);
    rows.push(Row::put(Arc::new(Fulfillment { order_id, fulfilled_at: at })));
}

/// Before an order's status moves on from `fulfilled` (a refund), records its
/// fulfilment if only the status said so (an order fulfilled before fulfilments were
/// recorded; its last change stands for the time), so it is never shipped again.
pub(crate) fn keep_fulfillment(state: &State, order: &Order, rows: &mut Vec<Row>) {
    if order.status == OrderStatus::Fulfilled && !state.orders.fulfilled.contains_key(&order.id) {
        record_fulfillment(state, order.id, order.updated_at, rows);
    }
}

pub(crate) fn touch(order: &mut Order, at: TimestampMs) {
    order.updated_at = at;
    order.version += 1;
}

/// Publishes an order and keeps the indexes over it (listing order, owner, expiry).
pub(crate) fn put_order(state: &State, order: Order, rows: &mut Vec<Row>) {
    let order = Arc::new(order);
    let previous = state.orders.orders.replace(order.id, order.clone());
    // An order back from the store is not new (its sequence is indexed), and held no
    // reservation there.
    let arrival = if previous.is_none() && state.orders.by_seq.get(order.seq).is_none() {
        Arrival::Placed
    } else {
        Arrival::Known
    };
    index_order(state, previous.as_deref(), arrival, &order);
    rows.push(Row::put(order));
}

/// How an order reaches [`index_order`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Changed, or read back from the store: its sequence and owner are indexed.
    Known,
    /// New, from the sequencer (the indexes' one writer).
    Placed,
    /// Loaded at open, by one of several threads at once.
    Loaded,
}

/// Keeps the order indexes of `order`, which replaced `previous` (`None` for a new
/// order or one read back from the store): its sequence and owner never change, so
/// only a new order enters those two; the expiry index changes only when the
/// reservation does.
fn index_order(state: &State, previous: Option<&Order>, arrival: Arrival, order: &Order) {
    let tables = &state.orders;
    if arrival != Arrival::Known {
        tables.by_seq.insert(order.seq, order.id);
        if let Some(customer) = order.customer_id {
            match arrival {
                Arrival::Placed => tables.by_customer.append(customer, order.seq),
                _ => tables.by_customer.insert(customer, order.seq),
            }
        }
    }
    let expiry = |o: &Order| o.holds_reservation().then_some((o.reservation_expires_at, o.seq));
    let (before, after) = (previous.and_then(expiry), expiry(order));
    if before != after {
        if let Some(key) = before {
            tables.expiry.remove(&key);
        }
        if let Some(key) = after {
            tables.expiry.insert(key, order.id);
        }
    }
}

/// Reserves the lines' stock, closes the cart and publishes the order, built from the
/// event's facts and the state at its LSN (owner and currency from the cart, product
/// ids and titles from the catalog, totals from the lines).
fn place_order(state: &State, placed: &PlacedOrder, at: TimestampMs, rows: &mut Vec<Row>) {
    let seq = state.orders.order_seq.bump();
    let cart = crate::carts::check_out(state, &placed.cart_id, &placed.id, at, rows);
    let zero = Money::zero(cart.currency);
    let mut subtotal = zero;
    let mut lines = Vec::with_capacity(placed.lines.len());
    let holder = crate::inventory::Holder::Order(placed.id);
    for line in &placed.lines {
        crate::inventory::reserve(state, holder, &line.sku, line.quantity, rows);
        let product = state.product_by_sku(&line.sku).expect("decide checked the SKU is sold");
        let line_total = line.unit_price.times(line.quantity).expect("decide bounded the total");
        subtotal = subtotal.plus(line_total).expect("decide bounded the total");
        lines.push(OrderLine {
            sku: line.sku.clone(),
            product_id: product.id,
            title: line_title(Some(&product), product.variant(&line.sku)),
            quantity: line.quantity,
            unit_price: line.unit_price,
            line_total,
        });
    }
    let order = Order {
        id: placed.id,
        seq,
        cart_id: cart.id,
        customer_id: cart.customer_id,
        email: placed.email.clone(),
        shipping_address: placed.shipping_address.as_deref().cloned().map(Arc::new),
        status: OrderStatus::PendingPayment,
        lines,
        subtotal,
        discount_total: zero,
        total: subtotal,
        reservation_expires_at: placed.reservation_expires_at,
        payments: Vec::new(),
        created_at: at,
        updated_at: at,
        version: 1,
    };
    if let Some(tag) = &placed.idempotency {
        let outcome = IdempotentOutcome::Placed(order.id);
        crate::idempotency::record(state, tag, outcome, at, rows);
    }
    put_order(state, order, rows);
}

/// Publishes the pending order of a flash sale purchase: one line of the sale's SKU at
/// the sale price. Its units are already reserved in the SKU's stock (by the sale).
/// A purchase has no cart: the order's `cart_id` is the sale's id in cart form, which
/// names no cart.
pub(crate) fn place_purchase(
    state: &State,
    sale: &crate::flash_sales::FlashSale,
    purchase: &crate::flash_sales::Purchase,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) {
    let seq = state.orders.order_seq.bump();
    let customer = state.customer(&purchase.customer_id).expect("decide checked the customer");
    let line_total = sale.price.times(purchase.units).expect("decide bounded the total");
    let order = Order {
        id: purchase.order_id,
        seq,
        cart_id: CartId::from_seq(sale.seq),
        customer_id: Some(purchase.customer_id),
        email: customer.email.clone(),
        shipping_address: None,
        status: OrderStatus::PendingPayment,
        lines: vec![OrderLine {
            sku: sale.sku.clone(),
            product_id: sale.product_id,
            title: sale.title.clone(),
            quantity: purchase.units,
            unit_price: sale.price,
            line_total,
        }],
        subtotal: line_total,
        discount_total: Money::zero(line_total.currency()),
        total: line_total,
        reservation_expires_at: purchase.reservation_expires_at,
        payments: Vec::new(),
        created_at: at,
        updated_at: at,
        version: 1,
    };
    if let Some(tag) = &purchase.idempotency {
        let outcome = IdempotentOutcome::Placed(order.id);
        crate::idempotency::record(state, tag, outcome, at, rows);
    }
    put_order(state, order, rows);
}

/// A pending order, about to end its reservation.
pub(crate) fn take_pending(state: &State, order_id: &OrderId) -> Order {
    let order = (*state.order(order_id).expect("decide checked the order")).clone();
    assert_eq!(
        order.status,
        OrderStatus::PendingPayment,
        "only a pending order holds a reservation"
    );
    order
}

/// Ends a pending order's reservation: its units go back to `available`.
fn release(
    state: &State,
    order_id: &OrderId,
    status: OrderStatus,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) {
    let mut order = take_pending(state, order_id);
    // A flash sale's order gives its units back to the sale (or, once the sale is
    // over, to normal stock) itself.
    if !crate::flash_sales::release_order(state, &order, at, rows) {
        let holder = crate::inventory::Holder::Order(order.id);
        for line in &order.lines {
            crate::inventory::release(state, holder, &line.sku, line.quantity, rows);
        }
    }
    crate::promotions::order_released(state, order_id, at, rows);
    order.status = status;
    touch(&mut order, at);
    put_order(state, order, rows);
}

/// The orders placed after sequence `seq`, in the order they were placed.
pub(crate) fn placed_after(state: &State, seq: u64) -> impl Iterator<Item = Arc<Order>> + '_ {
    state.orders.by_seq.from(seq.saturating_add(1)).filter_map(|(_, id)| state.order(&id))
}

/// The pending orders whose reservation ran out, soonest first, but for those a
/// payment is in progress for (the provider may be taking the money: they expire once
/// it settles unpaid). Those are at most [`crate::OPEN_CALLS_MAX`].
fn due_expiries(state: &State, now: TimestampMs) -> impl Iterator<Item = OrderId> + '_ {
    state
        .orders
        .expiry
        .iter()
        .take_while(move |e| e.key().0 <= now)
        .map(|e| *e.value())
        .filter(|order_id| state.open_charge(order_id).is_none())
}

/// Expires the pending orders whose reservation ran out.
fn expire(state: &State, ctx: &Ctx<'_>, events: &mut Vec<crate::domains::Event>) -> usize {
    let before = events.len();
    events.extend(
        due_expiries(state, ctx.now)
            .take(EXPIRIES_PER_COMMAND_MAX)
            .map(|order_id| OrderEvent::Expired { order_id }.into()),
    );
    events.len() - before
}

/// Pair assertion for stock: what pending orders and open flash sales hold must be what
/// the SKUs say is reserved.
fn check_reservations(state: &State) -> Result<()> {
    let mut held = crate::flash_sales::units_held(state);
    // Over the orders themselves (the expiry index is derived from them), a share of
    // the map per thread: no lookup per order, no key copied per line.
    let shares = crate::kernel::recovery::open_workers();
    // Sized for every SKU at once: a map that grows copies what it holds.
    let skus = state.inventory.stock.len();
    let held_by_share: Vec<(usize, UnitsBySku)> = std::thread::scope(|scope| {
        let counting: Vec<_> = (0..shares)
            .map(|share| {
                scope.spawn(move || {
                    let mut pending = 0;
                    let mut held = UnitsBySku::with_capacity_and_hasher(skus, Default::default());
                    state.orders.orders.for_each_in_share(share, shares, |_, order| {
                        if order.holds_reservation() {
                            pending += 1;
                            for line in &order.lines {
                                add_units(&mut held, &line.sku, u64::from(line.quantity));
                            }
                        }
                    });
                    (pending, held)
                })
            })
            .collect();
        counting.into_iter().map(|c| c.join().expect("counting units cannot panic")).collect()
    });
    let mut pending = 0;
    for (orders, share) in held_by_share {
        pending += orders;
        for (sku, units) in share {
            add_units(&mut held, &sku, units);
        }
    }
    // Every pending order is in the expiry index (or it would never expire), and
    // nothing else is.
    let indexed = state.orders.expiry.len();
    if indexed != pending {
        return Err(EngineError::IncompatibleData(format!(
            "{pending} orders are pending but {indexed} are due to expire"
        )));
    }
    for levels in state.all_stock() {
        let expected = held.get(&levels.sku).copied().unwrap_or(0);
        if u64::from(levels.reserved) != expected {
            return Err(EngineError::IncompatibleData(format!(
                "SKU {} has {} units reserved but pending orders and flash sales hold {expected}",
                levels.sku, levels.reserved
            )));
        }
    }
    Ok(())
}

/// Units per SKU, as an open's cross-check of reservations counts them: keyed by SKUs,
/// which only the shop's staff create, so hashed as [`StaffKeyIndex`]'s keys are (SipHash
/// of a million order lines' SKUs was a twentieth of an open's samples).
///
/// [`StaffKeyIndex`]: crate::kernel::table::StaffKeyIndex
pub(crate) type UnitsBySku = HashMap<Sku, u64, foldhash::fast::RandomState>;

fn add_units(held: &mut UnitsBySku, sku: &Sku, units: u64) {
    match held.get_mut(sku) {
        Some(held) => *held += units,
        None => {
            held.insert(sku.clone(), units);
        }
    }
}

/// Which orders a listing returns.
#[derive(Clone, Debug, Default)]
pub struct OrderFilter {
    /// Only this customer's orders.
    pub customer_id: Option<CustomerId>,
    /// Only orders with this status.
    pub status: Option<OrderStatus>,
}

/// The orders' reads.
impl State {
    /// An order by id: from memory, or read from the store if it has left memory.
    pub fn order(&self, id: &OrderId) -> Option<Arc<Order>> {
        self.orders.orders.get(id).or_else(|| self.stored_order(id))
    }

    /// An order out of memory, read from the store. A read that fails, or finds
    /// another order under the key, is logged and answers `None`.
    fn stored_order(&self, id: &OrderId) -> Option<Arc<Order>> {
        let seq = self.orders.stored.get(&self.orders.by_seq, id)?;
        let store = self.orders.store.get()?.upgrade()?;
        let read = store
            .get(ORDERS, &seq.to_be_bytes())
            .map_err(EngineError::Storage)
            .and_then(|bytes| bytes.map(|b| decode_row::<Order>(&b, "order")).transpose());
        match read {
            Ok(Some(order)) if order.id == *id => Some(Arc::new(order)),
            Ok(other) => {
                let found = other.map(|o| o.id.to_string());
                tracing::error!(order = %id, seq, ?found, "an order out of memory is not in the store");
                None
            }
            Err(e) => {
                tracing::error!(order = %id, seq, error = %e, "reading an order from the store");
                None
            }
        }
    }

    /// A row of `table` that belongs to order `id` and leaves memory with it (its
    /// charges, its shipment: keyed by the order's id), read from the store when the
    /// order is out of memory (or was, and came back); `order_of` names a row's order.
    /// `None` while the order has only been in memory, when the store holds no such
    /// row, or when the read fails or finds another order's row (logged).
    pub(crate) fn stored_order_part<T>(
        &self,
        id: &OrderId,
        table: &'static str,
        order_of: fn(&T) -> OrderId,
    ) -> Option<Arc<T>>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
                rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
            > + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        self.orders.stored.get(&self.orders.by_seq, id)?;
        let store = self.orders.store.get()?.upgrade()?;
        let read = store
            .get(table, id.text().as_str().as_bytes())
            .map_err(EngineError::Storage)
            .and_then(|bytes| bytes.map(|b| decode_row::<T>(&b, table)).transpose());
        match read {
            Ok(Some(part)) if order_of(&part) == *id => Some(Arc::new(part)),
            Ok(None) => None,
            Ok(Some(part)) => {
                let found = order_of(&part).to_string();
                tracing::error!(order = %id, table, %found, "a stored row names another order");
                None
            }
            Err(e) => {
                tracing::error!(order = %id, table, error = %e, "reading a stored row of an order");
                None
            }
        }
    }

    /// Visits every order, in the order they were placed (those out of memory are
    /// read from the store: for reports and checks, not for a request's path).
    pub fn for_each_order(&self, mut visit: impl FnMut(Arc<Order>)) {
        for (_, id) in self.orders.by_seq.from(0) {
            if let Some(order) = self.order(&id) {
                visit(order);
            }
        }
    }

    /// How many orders there are.
    pub fn order_count(&self) -> usize {
        self.orders.order_seq.get() as usize
    }

    /// How many orders are in memory (every pending one, and the settled ones most
    /// recently written, up to the configured number).
    pub fn orders_in_memory(&self) -> usize {
        self.orders.orders.len()
    }

    /// Orders in checkout order after position `after` (a page's `next`), filtered.
    pub fn orders(
        &self,
        filter: &OrderFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Page<Arc<Order>> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let status_ok = |o: &Arc<Order>| filter.status.is_none_or(|s| o.status == s);
        match &filter.customer_id {
            Some(customer) => {
                let items = self
                    .orders
                    .by_customer
                    .from(customer, start)
                    .filter_map(|seq| self.orders.by_seq.get(seq))
                    .filter_map(|id| self.order(&id))
                    .filter(status_ok);
                Page::of(items, limit, |o| o.seq.to_string())
            }
            None => {
                let items = self
                    .orders
                    .by_seq
                    .from(start)
                    .filter_map(|(_, id)| self.order(&id))
                    .filter(status_ok);
                Page::of(items, limit, |o| o.seq.to_string())
            }
        }
    }

    /// When `order` was fulfilled, if it was. An order fulfilled before fulfilments
    /// were recorded is known by its status (and its last change stands for the time).
    pub fn fulfilled_at(&self, order: &Order) -> Option<TimestampMs> {
        self.orders
            .fulfilled
            .get(&order.id)
            .or_else(|| (order.status == OrderStatus::Fulfilled).then_some(order.updated_at))
    }

    /// When the next pending order expires.
    pub fn next_expiry(&self) -> Option<TimestampMs> {
        self.orders.expiry.front().map(|e| e.key().0)
    }
}

/// Lets settled orders leave memory for `store`, keeping at most `in_memory` of them.
/// Called on a fresh state, before its rows load: settled orders load into the store
/// index only.
pub(crate) fn keep_in_store(state: &State, store: &Arc<Store>, in_memory: usize) {
    let tables = &state.orders;
    tables.in_memory_max.store(in_memory, Ordering::Relaxed);
    let _ = tables.store.set(Arc::downgrade(store));
}

/// After the materializer wrote `rows`: queues the order rows among them, then lets
/// the least recently written settled orders leave memory while more are held than
/// allowed. Runs on the materializer's thread, beside the sequencer, which may be
/// changing any of these orders: an order leaves only while the value in memory is
/// the one the store holds, checked at the instant of the removal; its entry in
/// `stored` is made first, so a reader finds it in one place or the other.
fn let_written_orders_go(state: &State, rows: &[Row]) {
    let tables = &state.orders;
    let in_memory_max = tables.in_memory_max.load(Ordering::Relaxed);
    if tables.store.get().is_none() {
        return;
    }
    let mut written = tables.written.lock();
    for row in rows {
        if let Row::Put(value) = row {
            if let Some(order) = (&**value as &dyn std::any::Any).downcast_ref::<Order>() {
                written.push_back((order.seq, Arc::downgrade(value)));
            }
        }
    }
    let is_written = |order: &Arc<Order>, value: &Weak<dyn Persist>| {
        std::ptr::eq(Arc::as_ptr(order).cast::<()>(), value.as_ptr().cast::<()>())
    };
    while tables.orders.len() > in_memory_max {
        let Some((seq, value)) = written.pop_front() else { break };
        let Some(id) = tables.by_seq.get(seq) else { continue };
        // Changed since (a later write is queued), or gone already.
        let Some(order) = tables.orders.get(&id).filter(|o| is_written(o, &value)) else {
            continue;
        };
        // A pending order holds stock and stays; its next change is queued again.
        if order.holds_reservation() {
            continue;
        }
        tables.stored.insert(&tables.by_seq, id, seq);
        if tables.orders.remove_if(&id, |_, o| is_written(o, &value)) {
            crate::inventory::order_left_memory(state, &id);
            crate::shipping::order_left_memory(state, &id);
        }
    }
    // Entries of values since replaced are dropped once they outnumber what may be
    // in memory, so the queue holds about one entry per order in memory.
    if written.len() > in_memory_max.saturating_mul(2).max(4096) {
        written.retain(|(seq, value)| {
            let id = tables.by_seq.get(*seq);
            id.and_then(|id| tables.orders.get(&id)).is_some_and(|o| is_written(&o, value))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_sequences_are_found_by_id_through_the_sequence_index() {
        let (by_seq, stored) = (SeqIndex::default(), StoredSeqs::default());
        let id = |n: u64| {
            OrderId::from_random(
                u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
            )
        };
        for seq in 1..=20_000 {
            by_seq.insert(seq, id(seq));
            // Every other order leaves memory.
            if seq % 2 == 0 {
                stored.insert(&by_seq, id(seq), seq);
            }
        }
        for seq in 1..=20_000 {
            let found = stored.get(&by_seq, &id(seq));
            assert_eq!(found, (seq % 2 == 0).then_some(seq), "order {seq}");
        }
        assert_eq!(stored.get(&by_seq, &id(30_000)), None, "an id never seen");
        // Inserting again keeps one entry.
        stored.insert(&by_seq, id(2), 2);
        let len: usize = stored.shards.iter().map(|s| s.lock().len()).sum();
        assert_eq!(len, 10_000);
    }
}
