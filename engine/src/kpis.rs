//! Business KPIs, folded from the log.
//!
//! A [`KpiModel`] counts, per minute of the log's time (each entry's `at`):
//! - carts created, and of those (counted in the minute the cart was created) the
//!   carts that got items, the ones checked out within the abandonment window
//!   (*converted*) and the ones with items not checked out within it (*abandoned*),
//!   which includes those the carts domain dropped for idleness (decided when dropped:
//!   they can no longer be checked out, so the model holds only carts that still can);
//! - orders placed (checkouts from carts, and flash-sale purchases) and checkouts;
//! - orders paid and the amount captured, per currency (GMV), and refunds;
//! - payments declined (a provider's decline is in the log; a test card refused at
//!   `POST /v1/orders/{id}/payments` is a refused command, which writes nothing, so it
//!   is not counted here);
//!
//! and per hour the units and revenue of each product in paid orders (for the top
//! products). A [`KpiReport`] sums them over a range in buckets, and reads the flash
//! sales overlapping the range from the state for their sell-through.
//!
//! Detail is kept for a while, then summed ([`KpiRetention`]): counts per minute for 7
//! days, then per hour; product sales per hour for 7 days, then per day; both for 400
//! days, then only in the totals. So the model's size is bounded by the retention (and,
//! for product sales, the products sold in a day), not by the shop's age. A report
//! over summed time needs buckets of whole hours, and its top products cover whole days.
//!
//! [`Kpis`] keeps a model in step with an engine: a thread registered as the log
//! consumer `kpis` tails the durable log; the model is saved to a file every few
//! seconds (and at [`Kpis::stop`]) with the LSN it reflects, and the consumer is
//! advanced to that LSN only then, so a restart loads the file and reads the log after
//! it: nothing is counted twice or missed. Without a file (in memory, a damaged file,
//! or a position the log no longer holds) the model is built from the state: orders,
//! payments and refunds are exact, but carts dropped for idleness before (after the
//! carts' time to live) are gone from the state and not counted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rkyv::{Archive, Deserialize, Serialize};

use crate::carts::CartEvent;
use crate::domains::{Event, LogEntry, State};
use crate::error::{EngineError, Result};
use crate::flash_sales::FlashSaleEvent;
use crate::follower::{entries_after, Follow, Follower};
use crate::kernel::runtime::{Engine, LogConsumer};
use crate::orders::OrderEvent;
use crate::payments::{CallKind, CallStatus, PaymentEvent};
use crate::types::{
    CartId, Currency, FlashSaleId, Lsn, Money, OrderId, PaymentCallId, ProductId, RefundId, Sku,
    TimestampMs,
};
use crate::{CartStatus, Order};

/// The log consumer name the KPI folder registers.
pub const KPI_CONSUMER: &str = "kpis";

/// The most buckets a report holds.
pub const KPI_BUCKETS_MAX: i64 = 1_000;

/// Products a report's top list holds.
pub const KPI_TOP_PRODUCTS: usize = 10;

/// Flash sales a report lists at most (the latest created first).
pub const KPI_FLASH_SALES_MAX: usize = 100;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// The saved model; [`SNAPSHOT_MAGIC_1`] is the format before [`KpiRetention`].
const SNAPSHOT_MAGIC: &[u8; 5] = b"EKPI\x02";
const SNAPSHOT_MAGIC_1: &[u8; 5] = b"EKPI\x01";
const SNAPSHOT_FILE: &str = "kpis.bin";

/// Where the model is kept and how carts are judged.
#[derive(Clone, Debug)]
pub struct KpiSettings {
    /// The directory of the saved model; `None` keeps it in memory (built from the
    /// state at every start).
    pub dir: Option<PathBuf>,
    /// A cart with items not checked out this long after it was created is
    /// abandoned. Default one day.
    pub abandonment_window_ms: i64,
    /// How often the model is saved when it changed. Default 5 s.
    pub save_interval_ms: u64,
    /// How often the folder looks for new log entries. Default 100 ms.
    pub refresh_interval_ms: u64,
    /// Log entries read per pass at most. Default 4096.
    pub entries_per_pass_max: usize,
    /// How long each level of detail is kept.
    pub retention: KpiRetention,
}

/// How long a [`KpiModel`] keeps each level of detail. Each is rounded to whole hours
/// (minutes) or days (product hours, everything) before now, the last entry's time.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct KpiRetention {
    /// Counts per minute, then per hour. Default 7 days; at least an hour.
    pub minutes_ms: i64,
    /// Product sales per hour, then per day. Default 7 days; at least a day.
    pub product_hours_ms: i64,
    /// Everything; older time is dropped (the totals keep it). Default 400 days; at
    /// least the two above.
    pub all_ms: i64,
}

impl Default for KpiRetention {
    fn default() -> KpiRetention {
        KpiRetention { minutes_ms: 7 * DAY, product_hours_ms: 7 * DAY, all_ms: 400 * DAY }
    }
}

impl KpiRetention {
    /// Within the bounds the fields' documentation gives.
    fn bounded(self) -> KpiRetention {
        let minutes_ms = self.minutes_ms.max(HOUR);
        let product_hours_ms = self.product_hours_ms.max(DAY);
        KpiRetention {
            minutes_ms,
            product_hours_ms,
            all_ms: self.all_ms.max(minutes_ms).max(product_hours_ms),
        }
    }
}

impl KpiSettings {
    /// A model saved in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> KpiSettings {
        KpiSettings { dir: Some(dir.into()), ..KpiSettings::in_memory() }
    }

    /// A model in memory only.
    pub fn in_memory() -> KpiSettings {
        KpiSettings {
            dir: None,
            abandonment_window_ms: 24 * HOUR,
            save_interval_ms: 5_000,
            refresh_interval_ms: 100,
            entries_per_pass_max: 4096,
            retention: KpiRetention::default(),
        }
    }
}

/// Amounts per currency.
pub type Amounts = BTreeMap<Currency, i64>;

fn add_money(amounts: &mut Amounts, money: Money) {
    *amounts.entry(money.currency()).or_default() += money.amount();
}

/// What one minute (or, summed, one bucket) counts.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct KpiCounts {
    /// Carts created.
    pub carts_created: u64,
    /// Of the carts created: those that got items.
    pub carts_with_items: u64,
    /// Of the carts created: those checked out within the abandonment window.
    pub carts_converted: u64,
    /// Of the carts created: those with items not checked out within the window.
    pub carts_abandoned: u64,
    /// Orders placed: checkouts and flash-sale purchases.
    pub orders_placed: u64,
    /// Orders placed by checking out a cart.
    pub checkouts: u64,
    /// Orders paid.
    pub orders_paid: u64,
    /// Orders paid, per currency.
    pub orders_paid_by_currency: BTreeMap<Currency, u64>,
    /// Amounts captured (gross merchandise value), per currency.
    pub gmv: Amounts,
    /// Amounts refunded, per currency.
    pub refunded: Amounts,
    /// Payments a provider declined.
    pub payments_declined: u64,
}

impl KpiCounts {
    fn add(&mut self, other: &KpiCounts) {
        self.carts_created += other.carts_created;
        self.carts_with_items += other.carts_with_items;
        self.carts_converted += other.carts_converted;
        self.carts_abandoned += other.carts_abandoned;
        self.orders_placed += other.orders_placed;
        self.checkouts += other.checkouts;
        self.orders_paid += other.orders_paid;
        for (currency, n) in &other.orders_paid_by_currency {
            *self.orders_paid_by_currency.entry(*currency).or_default() += n;
        }
        for (currency, amount) in &other.gmv {
            *self.gmv.entry(*currency).or_default() += amount;
        }
        for (currency, amount) in &other.refunded {
            *self.refunded.entry(*currency).or_default() += amount;
        }
        self.payments_declined += other.payments_declined;
    }

    /// Checkouts per cart created; `None` without carts.
    pub fn conversion_rate(&self) -> Option<f64> {
        ratio(self.checkouts, self.carts_created)
    }

    /// Abandoned carts per cart with items whose window is decided (converted or
    /// abandoned); `None` without one.
    pub fn abandonment_rate(&self) -> Option<f64> {
        ratio(self.carts_abandoned, self.carts_abandoned + self.carts_converted)
    }

    /// Declined payments per payment attempt (declined or captured); `None` without
    /// one.
    pub fn payment_decline_rate(&self) -> Option<f64> {
        ratio(self.payments_declined, self.payments_declined + self.orders_paid)
    }

    /// The GMV per order paid, per currency (rounded down to the minor unit).
    pub fn average_order_value(&self) -> Amounts {
        self.gmv
            .iter()
            .filter_map(|(currency, amount)| {
                let orders = *self.orders_paid_by_currency.get(currency)?;
                (orders > 0).then(|| (*currency, amount / orders as i64))
            })
            .collect()
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// A product's sales in paid orders.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ProductSales {
    /// Units.
    pub units: u64,
    /// Line totals, per currency.
    pub revenue: Amounts,
}

impl ProductSales {
    fn add(&mut self, other: &ProductSales) {
        self.units += other.units;
        for (currency, amount) in &other.revenue {
            *self.revenue.entry(*currency).or_default() += amount;
        }
    }
}

/// Product sales by product, of an hour or a day.
type Sales = HashMap<ProductId, ProductSales>;

fn add_sales(into: &mut Sales, from: &Sales) {
    for (product, sales) in from {
        into.entry(*product).or_default().add(sales);
    }
}

/// The facts a build from the state counted, by id: the entries after the build's LSN
/// that the state already reflected are folded without them.
#[derive(Debug, Default)]
struct Seen {
    /// The last entry the build may have seen.
    until: u64,
    carts: std::collections::HashSet<CartId>,
    orders: std::collections::HashSet<OrderId>,
    paid: std::collections::HashSet<OrderId>,
    refunds: std::collections::HashSet<RefundId>,
    declines: std::collections::HashSet<PaymentCallId>,
}

impl Seen {
    /// Whether the build counted `event`'s fact already.
    fn counted(&self, event: &Event) -> bool {
        match event {
            Event::Carts(CartEvent::CartCreated(cart)) => self.carts.contains(&cart.id),
            Event::Orders(OrderEvent::Placed(placed)) => self.orders.contains(&placed.id),
            Event::FlashSales(FlashSaleEvent::Purchased(p)) => self.orders.contains(&p.order_id),
            Event::Payments(PaymentEvent::PaymentCaptured { order_id, .. }) => {
                self.paid.contains(order_id)
            }
            Event::Payments(PaymentEvent::CallAdvanced(step)) => {
                step.payment.is_some() && self.paid.contains(&step.order_id)
                    || step.refund.as_ref().is_some_and(|r| self.refunds.contains(&r.id))
                    || self.declines.contains(&step.call_id)
            }
            Event::Payments(PaymentEvent::Refunded { refund }) => self.refunds.contains(&refund.id),
            _ => false,
        }
    }
}

/// A cart inside its abandonment window.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct OpenCart {
    created_at: TimestampMs,
    /// Its place in `open_by_age` among the carts created in the same millisecond.
    n: u64,
    has_items: bool,
}

/// The counts behind the KPIs (see the module's documentation).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KpiModel {
    window_ms: i64,
    /// The LSN of the last entry folded.
    lsn: u64,
    /// The time of the last entry folded.
    now: TimestampMs,
    /// Counts per minute, from [`KpiModel::minutes_from`] on.
    minutes: BTreeMap<i64, KpiCounts>,
    /// Product sales per hour, from [`KpiModel::product_hours_from`] on.
    hours: BTreeMap<i64, Sales>,
    /// Carts created less than the window before `now`.
    open: HashMap<CartId, OpenCart>,
    /// `(created_at, n)` of `open`.
    open_by_age: BTreeMap<(TimestampMs, u64), CartId>,
    next_open: u64,
    totals: KpiCounts,
    retention: KpiRetention,
    /// Counts per hour, before [`KpiModel::minutes_from`].
    hour_counts: BTreeMap<i64, KpiCounts>,
    /// Product sales per day, before [`KpiModel::product_hours_from`].
    days: BTreeMap<i64, Sales>,
}

/// What a [`KpiModel`] holds ([`KpiModel::detail`]): from when each level of detail
/// starts, and how many buckets of each it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KpiDetail {
    /// Counts are per minute from here on, per hour before.
    pub minutes_from: TimestampMs,
    /// Product sales are per hour from here on, per day before.
    pub product_hours_from: TimestampMs,
    /// Nothing before this is kept but in the totals.
    pub kept_from: TimestampMs,
    /// Minutes with counts.
    pub minutes: usize,
    /// Hours with counts.
    pub hours: usize,
    /// Hours with product sales.
    pub product_hours: usize,
    /// Days with product sales.
    pub product_days: usize,
    /// Carts held until they are decided: created within the abandonment window,
    /// neither checked out nor dropped for idleness.
    pub open_carts: usize,
}

/// [`KpiModel`] as files of [`SNAPSHOT_MAGIC_1`] hold it.
#[derive(Archive, Serialize, Deserialize)]
struct KpiModel1 {
    window_ms: i64,
    lsn: u64,
    now: TimestampMs,
    minutes: BTreeMap<i64, KpiCounts>,
    hours: BTreeMap<i64, Sales>,
    open: HashMap<CartId, OpenCart>,
    open_by_age: BTreeMap<(TimestampMs, u64), CartId>,
    next_open: u64,
    totals: KpiCounts,
}

impl From<KpiModel1> for KpiModel {
    fn from(m: KpiModel1) -> KpiModel {
        KpiModel {
            window_ms: m.window_ms,
            lsn: m.lsn,
            now: m.now,
            minutes: m.minutes,
            hours: m.hours,
            open: m.open,
            open_by_age: m.open_by_age,
            next_open: m.next_open,
            totals: m.totals,
            retention: KpiRetention::default(),
            hour_counts: BTreeMap::new(),
            days: BTreeMap::new(),
        }
    }
}

impl KpiModel {
    /// An empty model judging carts by `abandonment_window_ms`.
    pub fn new(abandonment_window_ms: i64) -> KpiModel {
        KpiModel {
            window_ms: abandonment_window_ms.max(1),
            lsn: 0,
            now: 0,
            minutes: BTreeMap::new(),
            hours: BTreeMap::new(),
            open: HashMap::new(),
            open_by_age: BTreeMap::new(),
            next_open: 0,
            totals: KpiCounts::default(),
            retention: KpiRetention::default(),
            hour_counts: BTreeMap::new(),
            days: BTreeMap::new(),
        }
    }

    /// Keeps detail as `retention` says from now on; detail older than it is summed or
    /// dropped at once.
    pub fn set_retention(&mut self, retention: KpiRetention) {
        self.retention = retention.bounded();
        self.roll();
    }

    /// What the model holds, and from when.
    pub fn detail(&self) -> KpiDetail {
        KpiDetail {
            minutes_from: self.minutes_from(),
            product_hours_from: self.product_hours_from(),
            kept_from: self.kept_from(),
            minutes: self.minutes.len(),
            hours: self.hour_counts.len(),
            product_hours: self.hours.len(),
            product_days: self.days.len(),
            open_carts: self.open.len(),
        }
    }

    /// The first instant counted per minute: older counts are per hour. A retention
    /// made longer does not bring summed minutes back: they stay summed.
    fn minutes_from(&self) -> TimestampMs {
        let horizon = (self.now - self.retention.minutes_ms).div_euclid(HOUR) * HOUR;
        let summed = self.hour_counts.last_key_value().map(|(hour, _)| (hour + 1) * HOUR);
        summed.map_or(horizon, |summed| summed.max(horizon))
    }

    /// The first instant of product sales per hour: older ones are per day (as with
    /// [`KpiModel::minutes_from`], days summed stay summed).
    fn product_hours_from(&self) -> TimestampMs {
        let horizon = (self.now - self.retention.product_hours_ms).div_euclid(DAY) * DAY;
        let summed = self.days.last_key_value().map(|(day, _)| (day + 1) * DAY);
        summed.map_or(horizon, |summed| summed.max(horizon))
    }

    /// The first instant kept: older time is only in the totals.
    fn kept_from(&self) -> TimestampMs {
        (self.now - self.retention.all_ms).div_euclid(DAY) * DAY
    }

    /// Sums the minutes and product hours that fell behind their retention, and drops
    /// what fell behind everything's.
    fn roll(&mut self) {
        let minutes_from = self.minutes_from();
        while let Some(entry) = self.minutes.first_entry() {
            if *entry.key() * MINUTE >= minutes_from {
                break;
            }
            let (minute, counts) = entry.remove_entry();
            self.hour_counts.entry((minute * MINUTE).div_euclid(HOUR)).or_default().add(&counts);
        }
        let product_hours_from = self.product_hours_from();
        while let Some(entry) = self.hours.first_entry() {
            if *entry.key() * HOUR >= product_hours_from {
                break;
            }
            let (hour, sales) = entry.remove_entry();
            add_sales(self.days.entry((hour * HOUR).div_euclid(DAY)).or_default(), &sales);
        }
        let kept_from = self.kept_from();
        while self.hour_counts.first_key_value().is_some_and(|(h, _)| h * HOUR < kept_from) {
            self.hour_counts.pop_first();
        }
        while self.days.first_key_value().is_some_and(|(d, _)| d * DAY < kept_from) {
            self.days.pop_first();
        }
    }

    /// The LSN of the last entry folded.
    pub fn lsn(&self) -> Lsn {
        Lsn(self.lsn)
    }

    /// Everything counted since the first entry (the Prometheus counters).
    pub fn totals(&self) -> &KpiCounts {
        &self.totals
    }

    fn count(&mut self, at: TimestampMs, change: impl Fn(&mut KpiCounts)) {
        change(&mut self.totals);
        if at >= self.minutes_from() {
            change(self.minutes.entry(at.div_euclid(MINUTE)).or_default());
        } else if at >= self.kept_from() {
            change(self.hour_counts.entry(at.div_euclid(HOUR)).or_default());
        }
    }

    /// Folds a log entry; `state` gives the orders its payments paid.
    pub fn fold(&mut self, state: &State, entry: &LogEntry) {
        self.fold_after_build(state, entry, None)
    }

    /// [`KpiModel::fold`], skipping the facts a build from the state already counted.
    fn fold_after_build(&mut self, state: &State, entry: &LogEntry, seen: Option<&Seen>) {
        if entry.lsn.0 <= self.lsn {
            return;
        }
        self.lsn = entry.lsn.0;
        self.advance(entry.at);
        let at = entry.at;
        for event in &entry.events {
            if seen.is_some_and(|seen| seen.counted(event)) {
                continue;
            }
            match event {
                Event::Carts(CartEvent::CartCreated(cart)) => self.cart_created(cart.id, at),
                Event::Carts(CartEvent::CartLineSet { cart_id, quantity, .. }) if *quantity > 0 => {
                    self.cart_filled(cart_id)
                }
                Event::Carts(CartEvent::CartsAbandoned { cart_ids }) => {
                    for cart_id in cart_ids {
                        self.dropped(cart_id);
                    }
                }
                Event::Orders(OrderEvent::Placed(placed)) => {
                    self.checked_out(&placed.cart_id, at);
                    self.count(at, |c| {
                        c.orders_placed += 1;
                        c.checkouts += 1;
                    });
                }
                Event::FlashSales(FlashSaleEvent::Purchased(_)) => {
                    self.count(at, |c| c.orders_placed += 1)
                }
                Event::Payments(PaymentEvent::PaymentCaptured { order_id, payment, .. }) => {
                    if let Some(order) = state.order(order_id) {
                        self.paid(&order, payment.amount, at);
                    }
                }
                Event::Payments(PaymentEvent::CallAdvanced(step)) => {
                    if let Some(payment) = &step.payment {
                        if let Some(order) = state.order(&step.order_id) {
                            self.paid(&order, payment.amount, at);
                        }
                    }
                    if let Some(refund) = &step.refund {
                        self.count(at, |c| add_money(&mut c.refunded, refund.amount));
                    }
                    let charge = state.payment_call(&step.call_id).map(|c| c.kind);
                    if step.status == CallStatus::Declined && charge == Some(CallKind::Charge) {
                        self.count(at, |c| c.payments_declined += 1);
                    }
                }
                Event::Payments(PaymentEvent::Refunded { refund }) => {
                    self.count(at, |c| add_money(&mut c.refunded, refund.amount))
                }
                _ => {}
            }
        }
    }

    fn cart_created(&mut self, id: CartId, at: TimestampMs) {
        self.count(at, |c| c.carts_created += 1);
        self.next_open += 1;
        let n = self.next_open;
        if let Some(before) = self.open.insert(id, OpenCart { created_at: at, n, has_items: false })
        {
            self.open_by_age.remove(&(before.created_at, before.n));
        }
        self.open_by_age.insert((at, n), id);
    }

    fn cart_filled(&mut self, id: &CartId) {
        let Some(cart) = self.open.get_mut(id) else { return };
        if !cart.has_items {
            cart.has_items = true;
            let created_at = cart.created_at;
            self.count(created_at, |c| c.carts_with_items += 1);
        }
    }

    /// Takes an open cart out of the model (both its entries), to be decided.
    fn take_open(&mut self, id: &CartId) -> Option<OpenCart> {
        let cart = self.open.remove(id)?;
        self.open_by_age.remove(&(cart.created_at, cart.n));
        Some(cart)
    }

    fn checked_out(&mut self, id: &CartId, at: TimestampMs) {
        let Some(cart) = self.take_open(id) else { return };
        if at - cart.created_at < self.window_ms {
            self.count(cart.created_at, |c| c.carts_converted += 1);
        } else if cart.has_items {
            self.count(cart.created_at, |c| c.carts_abandoned += 1);
        }
    }

    /// A cart dropped for idleness: abandoned if it had items, decided now rather than
    /// at its window's end, since it can no longer be checked out. Without this every
    /// cart dropped would stay in `open` for the whole window (a day by default).
    fn dropped(&mut self, id: &CartId) {
        let Some(cart) = self.take_open(id) else { return };
        if cart.has_items {
            self.count(cart.created_at, |c| c.carts_abandoned += 1);
        }
    }

    /// Moves the model's time to `now`: carts whose window ended are decided.
    fn advance(&mut self, now: TimestampMs) {
        self.now = self.now.max(now);
        while let Some((&(created_at, _), &id)) = self.open_by_age.first_key_value() {
            if created_at + self.window_ms > self.now {
                break;
            }
            self.open_by_age.pop_first();
            if self.open.remove(&id).is_some_and(|c| c.has_items) {
                self.count(created_at, |c| c.carts_abandoned += 1);
            }
        }
        self.roll();
    }

    fn paid(&mut self, order: &Order, amount: Money, at: TimestampMs) {
        let currency = amount.currency();
        self.count(at, |c| {
            c.orders_paid += 1;
            *c.orders_paid_by_currency.entry(currency).or_default() += 1;
            add_money(&mut c.gmv, amount);
        });
        let products = if at >= self.product_hours_from() {
            self.hours.entry(at.div_euclid(HOUR)).or_default()
        } else if at >= self.kept_from() {
            self.days.entry(at.div_euclid(DAY)).or_default()
        } else {
            return;
        };
        for line in &order.lines {
            let sales = products.entry(line.product_id).or_default();
            sales.units += u64::from(line.quantity);
            add_money(&mut sales.revenue, line.line_total);
        }
    }

    /// A model of the state's orders, payments, refunds and carts, as of `lsn` (the
    /// last LSN applied before the build began), and what it counted: the state may
    /// hold the facts of later entries too, which the log then brings again.
    fn from_state(
        state: &State,
        window_ms: i64,
        retention: KpiRetention,
        lsn: Lsn,
        now: TimestampMs,
    ) -> (KpiModel, Seen) {
        let mut model = KpiModel::new(window_ms);
        model.retention = retention.bounded();
        let mut seen = Seen::default();
        let mut checked_out: HashMap<CartId, TimestampMs> = HashMap::new();
        state.for_each_order(|order| {
            seen.orders.insert(order.id);
            model.count(order.created_at, |c| c.orders_placed += 1);
            if state.flash_sale_of_order(&order).is_none() {
                model.count(order.created_at, |c| c.checkouts += 1);
                checked_out.insert(order.cart_id, order.created_at);
            }
            if let Some(payment) = order.payments.first() {
                seen.paid.insert(order.id);
                model.paid(&order, payment.amount, payment.created_at);
            }
            for refund in state.refunds(&order.id).iter() {
                seen.refunds.insert(refund.id);
                model.count(refund.created_at, |c| add_money(&mut c.refunded, refund.amount));
            }
            for call in state.payment_calls(&order.id) {
                if call.kind == CallKind::Charge && call.status == CallStatus::Declined {
                    seen.declines.insert(call.id);
                    model.count(call.updated_at, |c| c.payments_declined += 1);
                }
            }
        });
        let mut carts = state.carts.carts.entries();
        carts.sort_unstable_by_key(|(_, cart)| (cart.created_at, cart.seq));
        for (id, cart) in carts {
            seen.carts.insert(id);
            model.cart_created(id, cart.created_at);
            if !cart.lines.is_empty() || cart.status != CartStatus::Open {
                model.cart_filled(&id);
            }
        }
        let mut checkouts: Vec<(TimestampMs, CartId)> =
            checked_out.into_iter().map(|(cart, at)| (at, cart)).collect();
        checkouts.sort_unstable();
        for (at, cart) in checkouts {
            model.advance(at);
            model.checked_out(&cart, at);
        }
        model.advance(now);
        model.lsn = lsn.0;
        (model, seen)
    }

    /// The KPIs of `[from, to)` in buckets of `bucket_ms` (a multiple of a minute, of
    /// an hour for a range that starts before the counts per minute; `from` and `to`
    /// are rounded down to whole buckets), with the top products of the hours the range
    /// overlaps (of the days, where the sales per hour were summed per day) and the
    /// flash sales it overlaps, at `now`.
    pub fn report(
        &self,
        state: &State,
        from: TimestampMs,
        to: TimestampMs,
        bucket_ms: i64,
        now: TimestampMs,
    ) -> Result<KpiReport> {
        if bucket_ms <= 0 || bucket_ms % MINUTE != 0 {
            return Err(EngineError::field("bucket", "must be a whole number of minutes"));
        }
        let (from, to) =
            (from.div_euclid(bucket_ms) * bucket_ms, to.div_euclid(bucket_ms) * bucket_ms);
        if to <= from {
            return Err(EngineError::field("to", "must be at least one bucket after from"));
        }
        if (to - from) / bucket_ms > KPI_BUCKETS_MAX {
            return Err(EngineError::field(
                "bucket",
                format!("the range holds more than {KPI_BUCKETS_MAX} buckets"),
            ));
        }
        let minutes_from = self.minutes_from();
        if from < minutes_from && bucket_ms % HOUR != 0 {
            return Err(EngineError::field(
                "bucket",
                format!(
                    "counts are kept per hour before {minutes_from} (ms since the epoch): a \
                     range from before then needs whole hours"
                ),
            ));
        }
        let mut buckets: Vec<KpiBucket> = (0..(to - from) / bucket_ms)
            .map(|i| KpiBucket { start: from + i * bucket_ms, counts: KpiCounts::default() })
            .collect();
        for (&minute, counts) in self.minutes.range(from / MINUTE..to / MINUTE) {
            let i = ((minute * MINUTE - from) / bucket_ms) as usize;
            buckets[i].counts.add(counts);
        }
        // Before `minutes_from`, `from` and the buckets are whole hours.
        for (&hour, counts) in self.hour_counts.range(from.div_euclid(HOUR)..to.div_euclid(HOUR)) {
            let i = ((hour * HOUR - from) / bucket_ms) as usize;
            buckets[i].counts.add(counts);
        }
        // Carts whose window ended after the last entry folded: abandoned all the same.
        let decided = now - self.window_ms;
        let with_items = |id: &CartId| self.open.get(id).is_some_and(|c| c.has_items);
        let ended = (from, 0)..((decided + 1).min(to), 0);
        if ended.start < ended.end {
            for (&(created_at, _), id) in self.open_by_age.range(ended) {
                if with_items(id) {
                    let i = ((created_at - from) / bucket_ms) as usize;
                    buckets[i].counts.carts_abandoned += 1;
                }
            }
        }
        let mut totals = KpiCounts::default();
        for bucket in &buckets {
            totals.add(&bucket.counts);
        }
        let open = (from.max(decided + 1), 0)..(to, 0);
        let undecided = match open.start < open.end {
            true => self.open_by_age.range(open).filter(|(_, id)| with_items(id)).count() as u64,
            false => 0,
        };
        // The whole hours the range overlaps, widened to whole days where the sales
        // per hour were summed per day.
        let days_until = self.product_hours_from();
        let (mut products_from, mut products_to) =
            (from.div_euclid(HOUR) * HOUR, (to + HOUR - 1).div_euclid(HOUR) * HOUR);
        if products_from < days_until {
            products_from = products_from.div_euclid(DAY) * DAY;
        }
        if products_to < days_until {
            products_to = (products_to + DAY - 1).div_euclid(DAY) * DAY;
        }
        let mut sales = Sales::new();
        let days = products_from.div_euclid(DAY)..products_to.min(days_until).div_euclid(DAY);
        if days.start < days.end {
            self.days.range(days).for_each(|(_, day)| add_sales(&mut sales, day));
        }
        let hours = products_from.max(days_until).div_euclid(HOUR)..products_to.div_euclid(HOUR);
        if hours.start < hours.end {
            self.hours.range(hours).for_each(|(_, hour)| add_sales(&mut sales, hour));
        }
        let mut top: Vec<(ProductId, ProductSales)> = sales.into_iter().collect();
        top.sort_unstable_by(|a, b| b.1.units.cmp(&a.1.units).then(a.0.cmp(&b.0)));
        top.truncate(KPI_TOP_PRODUCTS);
        let flash_sales = state
            .flash_sales
            .by_seq
            .iter()
            .rev()
            .filter_map(|e| state.flash_sale(e.value()))
            .filter(|sale| sale.starts_at < to && sale.ends_at > from)
            .take(KPI_FLASH_SALES_MAX)
            .map(|sale| SellThrough {
                sale_id: sale.id,
                sku: sale.sku.clone(),
                quantity: sale.quantity,
                sold: sale.sold,
                reserved: sale.reserved,
            })
            .collect();
        Ok(KpiReport {
            from,
            to,
            bucket_ms,
            abandonment_window_ms: self.window_ms,
            lsn: Lsn(self.lsn),
            totals,
            carts_undecided: undecided,
            buckets,
            top_products: top,
            products_from,
            products_to,
            flash_sales,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(self).expect("the model serializes");
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.extend_from_slice(&bytes);
        out
    }

    fn decode(bytes: &[u8]) -> Result<KpiModel> {
        if let Some(body) = bytes.strip_prefix(SNAPSHOT_MAGIC) {
            return crate::kernel::codec::decode_bare(body, "the KPI file");
        }
        let body = bytes.strip_prefix(SNAPSHOT_MAGIC_1).ok_or_else(|| {
            EngineError::IncompatibleData("the KPI file is not of this format".into())
        })?;
        crate::kernel::codec::decode_bare::<KpiModel1>(body, "the KPI file").map(KpiModel::from)
    }
}

/// One bucket of a [`KpiReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KpiBucket {
    /// Its first instant.
    pub start: TimestampMs,
    /// What it counts.
    pub counts: KpiCounts,
}

/// A flash sale's sell-through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SellThrough {
    /// The sale.
    pub sale_id: FlashSaleId,
    /// Its SKU.
    pub sku: Sku,
    /// Units allocated.
    pub quantity: u32,
    /// Units paid for.
    pub sold: u32,
    /// Units in pending orders.
    pub reserved: u32,
}

impl SellThrough {
    /// Units sold per unit allocated.
    pub fn rate(&self) -> f64 {
        if self.quantity == 0 {
            0.0
        } else {
            f64::from(self.sold) / f64::from(self.quantity)
        }
    }
}

/// The KPIs of a range (see [`KpiModel::report`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KpiReport {
    /// The range's start, rounded down to a bucket.
    pub from: TimestampMs,
    /// The range's end (exclusive), rounded down to a bucket.
    pub to: TimestampMs,
    /// The buckets' length.
    pub bucket_ms: i64,
    /// How long a cart has to be checked out before it counts as abandoned.
    pub abandonment_window_ms: i64,
    /// The log position the figures reflect.
    pub lsn: Lsn,
    /// The buckets summed.
    pub totals: KpiCounts,
    /// Carts with items created in the range whose window has not ended yet.
    pub carts_undecided: u64,
    /// The buckets, oldest first.
    pub buckets: Vec<KpiBucket>,
    /// The products with the most units in orders paid in `[products_from,
    /// products_to)`, most first (then by id).
    pub top_products: Vec<(ProductId, ProductSales)>,
    /// The start of the hours the top products cover.
    pub products_from: TimestampMs,
    /// Their end.
    pub products_to: TimestampMs,
    /// The flash sales whose window overlaps the range, the latest created first.
    pub flash_sales: Vec<SellThrough>,
}

/// What [`Kpis::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KpiStatus {
    /// The last log position folded.
    pub read_lsn: Lsn,
    /// The position of the saved model (the log is kept after it).
    pub saved_lsn: Lsn,
    /// Builds from the state since the start.
    pub rebuilds: u64,
    /// Why the folder stopped, if it did.
    pub failure: Option<String>,
}

struct Shared {
    model: RwLock<KpiModel>,
    saved: AtomicU64,
    rebuilds: AtomicU64,
}

/// The KPIs of an engine: a model and the thread that keeps it current and saved.
/// Stop it with [`Kpis::stop`] (dropping it does too) before closing the engine.
pub struct Kpis {
    engine: Engine,
    shared: Arc<Shared>,
    follower: Follower,
}

impl std::fmt::Debug for Kpis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kpis").field("status", &self.status()).finish()
    }
}

impl Kpis {
    /// Loads the saved model (or builds one from the state) and starts the thread
    /// that keeps it current.
    pub fn start(engine: &Engine, settings: KpiSettings) -> Result<Kpis> {
        if let Some(dir) = &settings.dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                EngineError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let consumer = engine.register_consumer(KPI_CONSUMER)?;
        let mut folder = Folder {
            engine: engine.clone(),
            consumer,
            shared: Arc::new(Shared {
                model: RwLock::new(KpiModel::new(settings.abandonment_window_ms)),
                saved: AtomicU64::new(0),
                rebuilds: AtomicU64::new(0),
            }),
            settings,
            saved_at: Instant::now(),
            seen: None,
        };
        match folder.load() {
            Some(mut model) if folder.resumable(&model) => {
                folder.shared.saved.store(model.lsn, Ordering::Release);
                model.set_retention(folder.settings.retention);
                *folder.shared.model.write() = model;
            }
            _ => folder.rebuild()?,
        }
        let shared = folder.shared.clone();
        let interval = Duration::from_millis(folder.settings.refresh_interval_ms.max(1));
        let follower = Follower::spawn("emporium-kpis", engine, interval, folder)?;
        Ok(Kpis { engine: engine.clone(), shared, follower })
    }

    /// The KPIs of `[from, to)` (see [`KpiModel::report`]), at the engine clock's now.
    pub fn report(&self, from: TimestampMs, to: TimestampMs, bucket_ms: i64) -> Result<KpiReport> {
        let now = self.engine.now_ms();
        self.shared.model.read().report(self.engine.state(), from, to, bucket_ms, now)
    }

    /// Everything counted since the first entry.
    pub fn totals(&self) -> KpiCounts {
        self.shared.model.read().totals().clone()
    }

    /// Where the folder is.
    pub fn status(&self) -> KpiStatus {
        KpiStatus {
            read_lsn: self.shared.model.read().lsn(),
            saved_lsn: Lsn(self.shared.saved.load(Ordering::Acquire)),
            rebuilds: self.shared.rebuilds.load(Ordering::Acquire),
            failure: self.follower.failure(),
        }
    }

    /// Stops the thread, saving the model, and waits for it. Idempotent; dropping it
    /// stops it too.
    pub fn stop(&self) {
        self.follower.stop();
    }
}

struct Folder {
    engine: Engine,
    consumer: LogConsumer,
    shared: Arc<Shared>,
    settings: KpiSettings,
    saved_at: Instant,
    /// After a build from the state, until the log is folded past what it saw.
    seen: Option<Seen>,
}

impl Follow for Folder {
    /// Folds the next log entries, and saves the model when it is time.
    fn pass(&mut self) -> Result<bool> {
        if self.consumer.is_dropped() {
            self.rebuild()?;
            return Ok(true);
        }
        let read = self.shared.model.read().lsn();
        if self.seen.as_ref().is_some_and(|seen| read.0 >= seen.until) {
            self.seen = None;
        }
        let max = self.settings.entries_per_pass_max;
        let Some(entries) = entries_after(&self.engine, read, max)? else {
            self.rebuild()?;
            return Ok(true);
        };
        let state = self.engine.state();
        {
            let mut model = self.shared.model.write();
            for entry in &entries {
                model.fold_after_build(state, entry, self.seen.as_ref());
            }
            if self.seen.as_ref().is_some_and(|seen| model.lsn >= seen.until) {
                self.seen = None;
            }
        }
        if self.saved_at.elapsed().as_millis() as u64 >= self.settings.save_interval_ms {
            // A failed save is tried again at the next interval; the log is kept
            // meanwhile.
            if let Err(e) = self.save() {
                tracing::warn!(error = %e, "saving the KPIs failed");
            }
        }
        Ok(!entries.is_empty())
    }

    fn finish(&mut self) {
        let read = self.shared.model.read().lsn();
        if self.seen.as_ref().is_some_and(|seen| read.0 >= seen.until) {
            self.seen = None;
        }
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "saving the KPIs at the stop failed");
        }
    }
}

impl Folder {
    fn path(&self) -> Option<PathBuf> {
        self.settings.dir.as_ref().map(|dir| dir.join(SNAPSHOT_FILE))
    }

    fn load(&self) -> Option<KpiModel> {
        let path = self.path()?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot read the KPIs");
                return None;
            }
        };
        KpiModel::decode(&bytes)
            .inspect_err(|e| tracing::warn!(error = %e, "the saved KPIs are rebuilt"))
            .ok()
            .filter(|m| m.window_ms == self.settings.abandonment_window_ms.max(1))
    }

    /// Whether the log still holds what follows the saved model, and the model is not
    /// ahead of the durable log.
    fn resumable(&self, model: &KpiModel) -> bool {
        model.lsn <= self.engine.durable_lsn().0
            && model.lsn + 1 >= self.engine.first_log_lsn().0
            && !self.consumer.is_dropped()
    }

    /// Builds the model from the state. The state is read again while the sequencer
    /// moved meanwhile (a few times at most), so that the model is the state's at one
    /// LSN.
    fn rebuild(&mut self) -> Result<()> {
        if self.consumer.is_dropped() {
            self.engine.unregister_consumer(KPI_CONSUMER)?;
            self.consumer = self.engine.register_consumer(KPI_CONSUMER)?;
        }
        let state = self.engine.state();
        let window = self.settings.abandonment_window_ms;
        // Every entry up to `before` was applied whole before the build began; the
        // ones after it may be in the state in part, in whole or not at all: they are
        // folded from the log with what the build counted left out, up to the last
        // entry applied a moment after it ended (the one applying as it ended, if
        // any, is done by then: an apply takes microseconds).
        let before = state.last_lsn();
        let retention = self.settings.retention;
        let now = self.engine.now_ms();
        let (model, mut seen) = KpiModel::from_state(state, window, retention, before, now);
        std::thread::sleep(Duration::from_millis(20));
        seen.until = state.last_lsn().0;
        *self.shared.model.write() = model;
        self.seen = Some(seen);
        self.shared.rebuilds.fetch_add(1, Ordering::AcqRel);
        tracing::info!(lsn = before.0, "KPIs built from the state");
        Ok(())
    }

    /// Writes the model to its file (atomically, synced) and lets the log go up to
    /// its LSN.
    fn save(&mut self) -> Result<()> {
        self.saved_at = Instant::now();
        // A model right after a build may count facts of entries past its LSN: saved,
        // a restart would fold them again.
        if self.seen.is_some() {
            return Ok(());
        }
        let (bytes, lsn) = {
            let model = self.shared.model.read();
            if model.lsn == self.shared.saved.load(Ordering::Acquire) {
                return Ok(());
            }
            (self.path().map(|_| model.encode()), model.lsn)
        };
        if let (Some(path), Some(bytes)) = (self.path(), bytes) {
            write_atomically(&path, &bytes).map_err(|e| {
                EngineError::Unavailable(format!("cannot save the KPIs to {}: {e}", path.display()))
            })?;
        }
        self.shared.saved.store(lsn, Ordering::Release);
        let position = Lsn(lsn.min(self.engine.durable_lsn().0));
        match self.consumer.advance(position) {
            Ok(()) | Err(EngineError::LogTrimmed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Writes `bytes` to `path` through a synced temporary file renamed over it, then
/// syncs the directory: a crash leaves the old file or the new one.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        AddCartItem, BlockingEngine, CapturePayment, Checkout, CreateCart, CreateProduct,
        EngineConfig, MoneyInput, RefundPayment, SetStock, VariantInput,
    };

    fn shop(engine: &BlockingEngine) {
        let variant = VariantInput {
            sku: "K-1".into(),
            title: String::new(),
            options: Default::default(),
            price: MoneyInput { amount: 700, currency: "USD".into() },
        };
        let product = CreateProduct {
            handle: None,
            title: "Kettle".into(),
            description: String::new(),
            brand: String::new(),
            category_ids: vec![],
            attributes: Default::default(),
            status: Some(crate::ProductStatus::Active),
            variants: vec![variant],
        };
        engine.send(product).unwrap();
        let stock = SetStock {
            sku: "K-1".into(),
            on_hand: 100,
            reason: "count".into(),
            expected_version: None,
        };
        engine.send(stock).unwrap();
    }

    /// A cart with an item, checked out and paid, then refunded in part.
    fn session(engine: &BlockingEngine, pay: bool) {
        let cart = engine.send(CreateCart::default()).unwrap();
        let add = AddCartItem { cart_id: cart.id.to_string(), sku: "K-1".into(), quantity: 2 };
        engine.send(add).unwrap();
        let checkout = Checkout {
            cart_id: cart.id.to_string(),
            email: Some("k@example.com".into()),
            ..Checkout::default()
        };
        let order = engine.send(checkout).unwrap();
        if pay {
            let capture = CapturePayment {
                order_id: order.id.to_string(),
                method: "test_card".into(),
                token: "tok_visa".into(),
                idempotency: None,
            };
            engine.send(capture).unwrap();
            let refund = RefundPayment {
                order_id: order.id.to_string(),
                amount: Some(MoneyInput { amount: 100, currency: "USD".into() }),
                reason: String::new(),
            };
            engine.send(refund).unwrap();
        }
    }

    /// A build from a state that already holds the entries after its LSN, then those
    /// entries folded from the log, counts each fact once: as a fold of the whole log.
    #[test]
    fn a_build_from_the_state_and_the_log_after_it_count_each_fact_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::Engine::open(EngineConfig::new(dir.path())).unwrap();
        let shop_engine = engine.blocking();
        shop(&shop_engine);
        session(&shop_engine, true);
        let before = engine.state().last_lsn();
        session(&shop_engine, true);
        session(&shop_engine, false);
        let entries = engine.read_log(Lsn(1), 10_000).unwrap();
        let state = engine.state();
        let mut whole = KpiModel::new(HOUR);
        for entry in &entries {
            whole.fold(state, entry);
        }
        let retention = KpiRetention::default();
        let (mut built, mut seen) = KpiModel::from_state(state, HOUR, retention, before, 0);
        seen.until = state.last_lsn().0;
        for entry in entries.iter().filter(|e| e.lsn > before) {
            built.fold_after_build(state, entry, Some(&seen));
        }
        assert_eq!(built.totals(), whole.totals());
        assert_eq!(built.totals().orders_paid, 2);
        assert_eq!(built.totals().carts_created, 3);
        assert_eq!(built.minutes, whole.minutes);
        // Without what the build saw, the same entries count twice.
        let (mut doubled, _) = KpiModel::from_state(state, HOUR, retention, before, 0);
        for entry in entries.iter().filter(|e| e.lsn > before) {
            doubled.fold(state, entry);
        }
        assert_eq!(doubled.totals().orders_paid, 3);
        drop(shop_engine);
        engine.close();
    }

    /// A file saved before retention (the first format) loads as the model it was, with
    /// the default retention; the current format round-trips.
    #[test]
    fn a_model_saved_in_the_first_format_loads() {
        let dir = tempfile::tempdir().unwrap();
        let engine = crate::Engine::open(EngineConfig::new(dir.path())).unwrap();
        let shop_engine = engine.blocking();
        shop(&shop_engine);
        session(&shop_engine, true);
        session(&shop_engine, false);
        let mut model = KpiModel::new(HOUR);
        for entry in &engine.read_log(Lsn(1), 10_000).unwrap() {
            model.fold(engine.state(), entry);
        }
        let m = model.clone();
        let first = KpiModel1 {
            window_ms: m.window_ms,
            lsn: m.lsn,
            now: m.now,
            minutes: m.minutes,
            hours: m.hours,
            open: m.open,
            open_by_age: m.open_by_age,
            next_open: m.next_open,
            totals: m.totals,
        };
        let mut bytes = SNAPSHOT_MAGIC_1.to_vec();
        bytes.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&first).unwrap());
        let loaded = KpiModel::decode(&bytes).unwrap();
        assert_eq!(loaded.totals().orders_paid, 1);
        assert_eq!(loaded, model);
        assert_eq!(KpiModel::decode(&model.encode()).unwrap(), model);
        drop(shop_engine);
        engine.close();
    }
}
