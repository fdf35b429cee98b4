//! Flash sales: a fixed allocation of one SKU sold at a sale price inside a time window,
//! with a cap per customer. The allocation is carved out of the SKU's available stock
//! when the sale is created (it counts as `reserved` in the SKU's levels); a purchase
//! takes units from the sale into a pending order; a paid order ships them like any
//! other; an order that expires or is cancelled gives its units back to the sale while
//! it runs, to normal stock after. The sale's own timers start it at `starts_at` and
//! end it at `ends_at`, when what is left goes back to normal stock.
//!
//! A purchase decides against lock-free state: the sale is an immutable `Arc` value
//! republished on every change, and each customer's units in the sale are a counter in
//! a concurrent map, so `sold_out` and `sale_not_live` can be answered by a reader
//! without entering the sequencer.

mod commands;
mod model;

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_skiplist::{SkipMap, SkipSet};
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::catalog::Page;
use crate::domains::State;
use crate::error::{EngineError, Result};
use crate::idempotency::IdempotencyTag;
use crate::inventory::Holder;
use crate::kernel::handler::Ctx;
use crate::kernel::table::{
    check_v1, decode_row, persist, Counter, Domain, IdIndex, Index, Row, Table, Timers,
};
use crate::orders::{Order, OrderStatus};
use crate::types::*;
use crate::EXPIRIES_PER_COMMAND_MAX;

const FLASH_SALES: &str = "flash_sales";
const SALE_ORDERS: &str = "flash_sale_orders";

persist!(FlashSale, FLASH_SALES, |s| s.seq.to_be_bytes().to_vec());
persist!(SaleOrder, SALE_ORDERS, |o| o.order_id.text().as_str().as_bytes().to_vec());

/// The sales in memory, with their indexes.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) sales: IdIndex<FlashSaleId, Arc<FlashSale>>,
    pub(crate) by_seq: SkipMap<u64, FlashSaleId>,
    /// `(when, sale)`: `starts_at` of a scheduled sale, `ends_at` of a live one.
    pub(crate) transitions: SkipSet<(TimestampMs, FlashSaleId)>,
    /// Per open sale, the units each customer holds in its pending and paid orders. A
    /// sale that ends or is cancelled sells no more, and its counts go as one entry
    /// (see [`close`]), whatever the number of its buyers or of other sales'.
    pub(crate) held: IdIndex<FlashSaleId, Arc<SaleCounts>>,
    pub(crate) sale_seq: Counter,
}

/// The units each customer holds in pending and paid orders of one open sale.
pub(crate) type SaleCounts = IdIndex<CustomerId, u32>;

/// Counts of a closed sale at least this many are let go on a thread of their own: a
/// walk of a million buyers' counts would hold every write back for tens of
/// milliseconds on the sequencer.
const COUNTS_LET_GO_APART_MIN: usize = 4096;

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            sales: Index::default(),
            by_seq: SkipMap::new(),
            transitions: SkipSet::new(),
            held: Index::default(),
            sale_seq: Counter::new("flash_sale"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "flash_sales",
    tables: &[
        Table {
            name: FLASH_SALES,
            rows: |s, f| s.flash_sales.sales.entries().iter().for_each(|(_, x)| f(&**x)),
            load: |state, bytes| {
                let sale: FlashSale = decode_row(bytes, "flash sale")?;
                if u64::from(sale.remaining) + u64::from(sale.reserved) + u64::from(sale.sold)
                    != u64::from(sale.quantity)
                {
                    return Err(EngineError::IncompatibleData(format!(
                        "flash sale {} does not add up to its quantity",
                        sale.id
                    )));
                }
                index_sale(state, None, &sale);
                state.flash_sales.sales.insert(sale.id, Arc::new(sale));
                Ok(())
            },
            check_v1: check_v1::<FlashSale>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        // Written once per purchase and never held in memory: the order itself says
        // what its row says (`bought`). The rows are what an open counts each customer's
        // units from, without reading every order.
        Table {
            name: SALE_ORDERS,
            rows: |s, f| {
                s.for_each_order(|order| {
                    if let Some(bought) = bought(s, &order) {
                        f(&bought)
                    }
                })
            },
            load: |state, bytes| {
                let row: SaleOrder = decode_row(bytes, "flash sale order")?;
                // Orders load first (an earlier domain), the sales before their orders,
                // at the same LSN.
                let order = state.order(&row.order_id).ok_or_else(|| {
                    EngineError::IncompatibleData(format!(
                        "flash sale order {} has no order",
                        row.order_id
                    ))
                })?;
                if bought(state, &order).as_ref() != Some(&row) {
                    return Err(EngineError::IncompatibleData(format!(
                        "order {} is not the flash sale order its row says",
                        row.order_id
                    )));
                }
                let open = state.flash_sale(&row.sale_id).is_some_and(|s| s.holds_stock());
                if open && counts(order.status) {
                    add_held(state, &row.sale_id, &row.customer_id, row.units);
                }
                Ok(())
            },
            check_v1: check_v1::<SaleOrder>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |state, each| {
        each(&state.flash_sales.sale_seq);
    },
    timers: Some(Timers {
        due: |state, now, _| {
            state.flash_sales.transitions.front().is_some_and(|e| e.value().0 <= now)
        },
        expire,
    }),
    verify: Some(check_sales),
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The flash sales' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum FlashSaleEvent {
        /// A sale was created: its units are reserved out of the SKU's stock.
        Created(Box<NewFlashSale>),
        /// Its timer started it.
        Started { sale_id: FlashSaleId },
        /// Its timer ended it: the units not taken went back to normal stock.
        Ended { sale_id: FlashSaleId },
        /// Cancelled: the units not taken went back to normal stock.
        Cancelled { sale_id: FlashSaleId },
        /// A customer bought units: a pending order holds them.
        Purchased(Box<Purchase>),
    }
}
pub use event::FlashSaleEvent;

/// The new facts of a sale (the product and its title follow from the catalog at its
/// LSN).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NewFlashSale {
    /// Its id.
    pub id: FlashSaleId,
    /// The SKU.
    pub sku: Sku,
    /// The sale price.
    pub price: Money,
    /// Units allocated.
    pub quantity: u32,
    /// Units per customer.
    pub per_customer_limit: u32,
    /// Window start.
    pub starts_at: TimestampMs,
    /// Window end.
    pub ends_at: TimestampMs,
    /// How long a purchase holds its units unpaid.
    pub reservation_ttl_ms: i64,
}

/// The new facts of a purchase (the price, SKU and title follow from the sale, the
/// email from the account).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Purchase {
    /// The sale.
    pub sale_id: FlashSaleId,
    /// The new order.
    pub order_id: OrderId,
    /// The buyer.
    pub customer_id: CustomerId,
    /// Units bought.
    pub units: u32,
    /// When the order's reservation ends unless paid.
    pub reservation_expires_at: TimestampMs,
    /// The idempotency key it was made under, if any.
    pub idempotency: Option<Box<IdempotencyTag>>,
}

pub(crate) fn apply(state: &State, event: &FlashSaleEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        FlashSaleEvent::Created(new) => create(state, new, at, rows),
        FlashSaleEvent::Started { sale_id } => {
            let mut sale = current(state, sale_id);
            assert_eq!(sale.phase, SalePhase::Scheduled, "decide starts scheduled sales only");
            sale.phase = SalePhase::Live;
            put_sale(state, sale, at, rows);
        }
        FlashSaleEvent::Ended { sale_id } => close(state, sale_id, SalePhase::Ended, at, rows),
        FlashSaleEvent::Cancelled { sale_id } => {
            close(state, sale_id, SalePhase::Cancelled, at, rows)
        }
        FlashSaleEvent::Purchased(purchase) => purchase_units(state, purchase, at, rows),
    }
}

fn current(state: &State, id: &FlashSaleId) -> FlashSale {
    (*state.flash_sale(id).expect("decide checked the sale")).clone()
}

fn create(state: &State, new: &NewFlashSale, at: TimestampMs, rows: &mut Vec<Row>) {
    let product = state.product_by_sku(&new.sku).expect("decide checked the SKU is sold");
    crate::inventory::reserve(state, Holder::Sale(new.id), &new.sku, new.quantity, rows);
    let sale = FlashSale {
        id: new.id,
        seq: state.flash_sales.sale_seq.bump(),
        sku: new.sku.clone(),
        product_id: product.id,
        title: crate::catalog::line_title(Some(&product), product.variant(&new.sku)),
        price: new.price,
        quantity: new.quantity,
        per_customer_limit: new.per_customer_limit,
        starts_at: new.starts_at,
        ends_at: new.ends_at,
        reservation_ttl_ms: new.reservation_ttl_ms,
        phase: SalePhase::Scheduled,
        remaining: new.quantity,
        reserved: 0,
        sold: 0,
        created_at: at,
        updated_at: at,
        version: 0,
    };
    put_sale(state, sale, at, rows);
}

/// Ends or cancels a sale: the units not taken go back to normal stock.
fn close(state: &State, id: &FlashSaleId, phase: SalePhase, at: TimestampMs, rows: &mut Vec<Row>) {
    let mut sale = current(state, id);
    assert!(sale.holds_stock(), "decide closes open sales only");
    if sale.remaining > 0 {
        crate::inventory::release(state, Holder::Sale(sale.id), &sale.sku, sale.remaining, rows);
    }
    // No purchase counts against a closed sale's limit again.
    if let Some(counts) = state.flash_sales.held.remove(&sale.id) {
        let_counts_go(counts);
    }
    sale.phase = phase;
    put_sale(state, sale, at, rows);
}

fn purchase_units(state: &State, purchase: &Purchase, at: TimestampMs, rows: &mut Vec<Row>) {
    let mut sale = current(state, &purchase.sale_id);
    assert!(sale.remaining >= purchase.units, "decide checked the units are left");
    sale.remaining -= purchase.units;
    sale.reserved += purchase.units;
    let order = SaleOrder {
        order_id: purchase.order_id,
        sale_id: sale.id,
        customer_id: purchase.customer_id,
        units: purchase.units,
    };
    add_held(state, &sale.id, &purchase.customer_id, purchase.units);
    rows.push(Row::put(Arc::new(order)));
    crate::orders::place_purchase(state, &sale, purchase, at, rows);
    put_sale(state, sale, at, rows);
}

/// Publishes a sale (bumping its version) and keeps its indexes.
fn put_sale(state: &State, mut sale: FlashSale, at: TimestampMs, rows: &mut Vec<Row>) {
    sale.updated_at = at;
    sale.version += 1;
    let sale = Arc::new(sale);
    let previous = state.flash_sales.sales.replace(sale.id, sale.clone());
    index_sale(state, previous.as_deref(), &sale);
    rows.push(Row::put(sale));
}

/// Keeps the listing and transition indexes over a sale that replaced `previous`. A
/// purchase changes only a sale's counts, so it leaves both as they are.
fn index_sale(state: &State, previous: Option<&FlashSale>, sale: &FlashSale) {
    let tables = &state.flash_sales;
    if previous.is_none() {
        tables.by_seq.insert(sale.seq, sale.id);
    }
    let transition = |s: &FlashSale| match s.phase {
        SalePhase::Scheduled => Some((s.starts_at, s.id)),
        SalePhase::Live => Some((s.ends_at, s.id)),
        SalePhase::Ended | SalePhase::Cancelled => None,
    };
    let (before, after) = (previous.and_then(transition), transition(sale));
    if before != after {
        if let Some(key) = before {
            tables.transitions.remove(&key);
        }
        if let Some(key) = after {
            tables.transitions.insert(key);
        }
    }
}

/// Whether an order of `status` counts toward its customer's limit (pending or paid).
fn counts(status: OrderStatus) -> bool {
    status == OrderStatus::PendingPayment || status.was_paid()
}

/// The sale, buyer and units of `order` when a flash-sale purchase made it: its
/// `cart_id` names the sale by its sequence number (a purchase has no cart), and its
/// one line holds the units. What the order's `flash_sale_orders` row says.
fn bought(state: &State, order: &Order) -> Option<SaleOrder> {
    let seq = order.cart_id.sale_seq()?;
    let sale_id = *state.flash_sales.by_seq.get(&seq)?.value();
    Some(SaleOrder {
        order_id: order.id,
        sale_id,
        customer_id: order.customer_id?,
        units: order.lines.iter().map(|l| l.quantity).sum(),
    })
}

fn add_held(state: &State, sale: &FlashSaleId, customer: &CustomerId, units: u32) {
    let added = state.flash_sales.held.with(sale, |counts| {
        counts.insert(*customer, counts.get(customer).unwrap_or(0) + units);
    });
    if added.is_none() {
        let counts = SaleCounts::default();
        counts.insert(*customer, units);
        state.flash_sales.held.insert(*sale, Arc::new(counts));
    }
}

/// A closed sale's counts, out of the tables: let go here when few, else emptied on a
/// thread of their own (or here, when no thread can be started), so that the sequencer
/// does not free thousands of entries. Readers that still hold them see them emptied,
/// as they would see them gone.
fn let_counts_go(counts: Arc<SaleCounts>) {
    if counts.len() < COUNTS_LET_GO_APART_MIN {
        return;
    }
    let apart = counts.clone();
    let started = std::thread::Builder::new()
        .name("emporium-sale-counts".into())
        .spawn(move || apart.clear());
    if started.is_err() {
        counts.clear();
    }
}

/// The order `order` ended unpaid (cancelled or expired). When it was a sale's, its
/// units go back to the sale while the sale holds stock, to normal stock after, and
/// they no longer count toward the customer's limit; answers whether it was. Called
/// by the orders domain instead of releasing the units itself.
pub(crate) fn release_order(
    state: &State,
    order: &Order,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) -> bool {
    let Some(bought) = bought(state, order) else { return false };
    let mut sale = current(state, &bought.sale_id);
    if sale.holds_stock() {
        let customer = bought.customer_id;
        state
            .flash_sales
            .held
            .with(&bought.sale_id, |counts| {
                let held = counts.get(&customer).expect("a sale order's units are held");
                if held == bought.units {
                    counts.remove(&customer);
                } else {
                    counts.insert(customer, held - bought.units);
                }
            })
            .expect("an open sale with a pending order has counts");
    }
    sale.reserved -= bought.units;
    sale.remaining += bought.units;
    if !sale.holds_stock() {
        crate::inventory::release(state, Holder::Sale(sale.id), &sale.sku, bought.units, rows);
    }
    put_sale(state, sale, at, rows);
    true
}

/// What holds the reserved units of pending order `order`: its sale when it is a
/// sale's (the sale reserved them when it was created), else the order itself.
pub(crate) fn stock_holder(state: &State, order: &Order) -> Holder {
    match bought(state, order) {
        Some(bought) => Holder::Sale(bought.sale_id),
        None => Holder::Order(order.id),
    }
}

/// The order `order` was paid: when it was a sale's, its units count as sold.
/// (Its units left the warehouse with the payment, as every order's do.)
pub(crate) fn order_paid(state: &State, order: &Order, at: TimestampMs, rows: &mut Vec<Row>) {
    let Some(bought) = bought(state, order) else { return };
    let mut sale = current(state, &bought.sale_id);
    sale.reserved -= bought.units;
    sale.sold += bought.units;
    put_sale(state, sale, at, rows);
}

/// Units each SKU's open sales hold apart from normal stock (not yet taken): part of
/// what the SKU counts as reserved, besides its pending orders.
pub(crate) fn units_held(state: &State) -> crate::orders::UnitsBySku {
    let mut held = crate::orders::UnitsBySku::default();
    for (_, sale) in state.flash_sales.sales.entries() {
        if sale.holds_stock() {
            *held.entry(sale.sku.clone()).or_insert(0) += u64::from(sale.remaining);
        }
    }
    held
}

/// Starts the sales whose `starts_at` came and ends those whose `ends_at` did (a sale
/// whose whole window passed while the process was down ends at once).
fn expire(state: &State, ctx: &Ctx<'_>, events: &mut Vec<crate::domains::Event>) -> usize {
    let due = state
        .flash_sales
        .transitions
        .iter()
        .take_while(|e| e.value().0 <= ctx.now)
        .take(EXPIRIES_PER_COMMAND_MAX);
    for entry in due {
        let sale_id = entry.value().1;
        let sale = state.flash_sale(&sale_id).expect("the transition index names sales");
        let event = if sale.phase == SalePhase::Scheduled && sale.ends_at > ctx.now {
            FlashSaleEvent::Started { sale_id }
        } else {
            FlashSaleEvent::Ended { sale_id }
        };
        events.push(event.into());
    }
    0
}

/// Every sale adds up. What its pending orders hold (all in memory) is its `reserved`.
/// An open sale's counts per customer, made at open from the `flash_sale_orders` rows
/// and the orders' statuses, add up to its `reserved` and `sold`, and each is within
/// the limit and at least what that customer's pending orders hold. A closed sale keeps
/// no counts.
fn check_sales(state: &State) -> Result<()> {
    // Without a sale or a count there is nothing to add up (and no walk of the orders).
    if state.flash_sales.sales.len() == 0 && state.flash_sales.held.len() == 0 {
        return Ok(());
    }
    let mut reserved: HashMap<FlashSaleId, u64> = HashMap::new();
    let mut pending: HashMap<(FlashSaleId, CustomerId), u64> = HashMap::new();
    let mut unknown = None;
    state.orders.orders.for_each_in_share(0, 1, |_, order| {
        if !order.holds_reservation() || order.cart_id.sale_seq().is_none() {
            return;
        }
        let Some(bought) = bought(state, order) else {
            unknown = Some(order.id);
            return;
        };
        *reserved.entry(bought.sale_id).or_default() += u64::from(bought.units);
        *pending.entry((bought.sale_id, bought.customer_id)).or_default() +=
            u64::from(bought.units);
    });
    if let Some(order) = unknown {
        return Err(EngineError::IncompatibleData(format!(
            "order {order} names a flash sale that does not exist"
        )));
    }
    let mut counted: HashMap<FlashSaleId, u64> = HashMap::new();
    for (sale_id, counts) in state.flash_sales.held.entries() {
        let open = state.flash_sale(&sale_id).filter(|s| s.holds_stock());
        for (customer, units) in counts.entries() {
            let Some(sale) = &open else {
                return Err(EngineError::IncompatibleData(format!(
                    "customer {customer} is counted {units} units of flash sale {sale_id}, \
                     which is not open"
                )));
            };
            let in_pending = pending.get(&(sale_id, customer)).copied().unwrap_or(0);
            if units > sale.per_customer_limit || u64::from(units) < in_pending {
                return Err(EngineError::IncompatibleData(format!(
                    "customer {customer} is counted {units} units of flash sale {sale_id} \
                     (limit {}, {in_pending} in pending orders)",
                    sale.per_customer_limit
                )));
            }
            *counted.entry(sale_id).or_default() += u64::from(units);
        }
    }
    for (id, sale) in state.flash_sales.sales.entries() {
        let in_pending = reserved.get(&id).copied().unwrap_or(0);
        if u64::from(sale.reserved) != in_pending {
            return Err(EngineError::IncompatibleData(format!(
                "flash sale {id} counts {} units reserved, its pending orders hold {in_pending}",
                sale.reserved
            )));
        }
        let customers = counted.get(&id).copied().unwrap_or(0);
        if sale.holds_stock() && customers != u64::from(sale.reserved) + u64::from(sale.sold) {
            return Err(EngineError::IncompatibleData(format!(
                "flash sale {id} counts {} reserved and {} sold, its customers {customers}",
                sale.reserved, sale.sold
            )));
        }
    }
    Ok(())
}

/// Which sales a listing returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlashSaleFilter {
    /// Only sales with this status at the time of the listing.
    pub status: Option<FlashSaleStatus>,
}

/// The flash sales' reads.
impl State {
    /// A sale by id.
    pub fn flash_sale(&self, id: &FlashSaleId) -> Option<Arc<FlashSale>> {
        self.flash_sales.sales.get(id)
    }

    /// Units `customer` holds in pending and paid orders of `sale`.
    pub fn flash_sale_units_held(&self, sale: &FlashSaleId, customer: &CustomerId) -> u32 {
        self.flash_sales.held.with(sale, |counts| counts.get(customer)).flatten().unwrap_or(0)
    }

    /// The sales not ended or cancelled yet (scheduled or live), soonest transition
    /// first.
    pub fn open_flash_sales(&self) -> Vec<Arc<FlashSale>> {
        self.flash_sales.transitions.iter().filter_map(|e| self.flash_sale(&e.value().1)).collect()
    }

    /// The sale an order was bought in, if it was.
    pub fn flash_sale_of_order(&self, order: &Order) -> Option<FlashSaleId> {
        bought(self, order).map(|b| b.sale_id)
    }

    /// Sales in creation order after position `after` (a page's `next`), with the
    /// status they have at `now`.
    pub fn flash_sales(
        &self,
        filter: FlashSaleFilter,
        now: TimestampMs,
        after: Option<u64>,
        limit: usize,
    ) -> Page<Arc<FlashSale>> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let items = self
            .flash_sales
            .by_seq
            .range(start..)
            .filter_map(|e| self.flash_sale(e.value()))
            .filter(|s| filter.status.is_none_or(|status| s.status(now) == status));
        Page::of(items, limit, |s| s.seq.to_string())
    }
}
