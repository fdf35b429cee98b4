//! Promotions: discount codes. Staff create codes (a percentage or a fixed amount off,
//! optionally only for some products or categories, above a minimum subtotal, inside a
//! window, with a global and a per-customer usage limit, stackable or exclusive);
//! shoppers enter them on a cart, which shows what each takes off per line; a checkout
//! re-checks every code and counts its use in the same log entry as the reservation,
//! so a code limited to N uses is held by at most N orders at any time whatever the
//! concurrency (N of N+k concurrent checkouts get it). A cancelled or expired order
//! gives its use back, so over time more than N orders may have carried it.
//!
//! Money is integer minor units. A percentage is rounded down to the minor unit; a
//! code's amount is spread over its eligible lines in proportion to what they still
//! cost by largest remainder (each line's exact share rounded down, the units left over
//! going to the largest fractional parts, the earlier line first on a tie), so the line
//! discounts sum exactly to the code's amount. Codes apply in the order they were
//! entered, each to what the lines cost after the ones before it.

mod commands;
mod model;

use std::sync::Arc;

use crossbeam_skiplist::SkipMap;
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::carts::Cart;
use crate::domains::State;
use crate::error::{EngineError, Result};
use crate::kernel::table::{
    check_v1, decode_row, persist, Counter, Domain, IdIndex, Index, Row, Table,
};
use crate::orders::OrderStatus;
use crate::types::*;

const DISCOUNT_CODES: &str = "discount_codes";
const CART_CODES: &str = "cart_discount_codes";
const ORDER_DISCOUNTS: &str = "order_discounts";
const AUTOMATIC_PROMOTIONS: &str = "automatic_promotions";

persist!(DiscountCode, DISCOUNT_CODES, |c| c.seq.to_be_bytes().to_vec());
persist!(CartCodes, CART_CODES, |c| c.cart_id.text().as_str().as_bytes().to_vec());
persist!(OrderDiscount, ORDER_DISCOUNTS, |d| d.order_id.text().as_str().as_bytes().to_vec());
persist!(AutomaticPromotion, AUTOMATIC_PROMOTIONS, |p| p.id.seq().to_be_bytes().to_vec());

/// The promotions in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    /// Codes by their upper-cased text (chosen by staff: a keyed hash).
    codes: Index<String, Arc<DiscountCode>>,
    /// Codes in creation order, for listing.
    by_seq: SkipMap<u64, String>,
    /// The codes on each open cart that has any.
    cart_codes: IdIndex<CartId, Arc<CartCodes>>,
    /// What each discounted order took off.
    order_discounts: IdIndex<OrderId, Arc<OrderDiscount>>,
    /// Orders holding a code, per code and customer (for the per-customer limit);
    /// derived from `order_discounts`.
    customer_uses: Index<(String, CustomerId), u32>,
    /// Automatic promotions, by id.
    automatic: IdIndex<PromotionId, Arc<AutomaticPromotion>>,
    code_seq: Counter,
    promotion_seq: Counter,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            codes: Index::default(),
            by_seq: SkipMap::new(),
            cart_codes: IdIndex::default(),
            order_discounts: IdIndex::default(),
            customer_uses: Index::default(),
            automatic: IdIndex::default(),
            code_seq: Counter::new("discount_code"),
            promotion_seq: Counter::new("promotion"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "promotions",
    tables: &[
        Table {
            name: DISCOUNT_CODES,
            rows: |s, f| s.promotions.codes.entries().iter().for_each(|(_, c)| f(&**c)),
            load: |state, bytes| {
                let code: DiscountCode = decode_row(bytes, "discount code")?;
                put_code_in_memory(state, code);
                Ok(())
            },
            check_v1: check_v1::<DiscountCode>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: CART_CODES,
            rows: |s, f| s.promotions.cart_codes.entries().iter().for_each(|(_, c)| f(&**c)),
            load: |state, bytes| {
                let codes: CartCodes = decode_row(bytes, "cart discount codes")?;
                state.promotions.cart_codes.insert(codes.cart_id, Arc::new(codes));
                Ok(())
            },
            check_v1: check_v1::<CartCodes>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: ORDER_DISCOUNTS,
            rows: |s, f| s.promotions.order_discounts.entries().iter().for_each(|(_, d)| f(&**d)),
            load: |state, bytes| {
                let discount: OrderDiscount = decode_row(bytes, "order discount")?;
                if !discount.released {
                    count_customer_uses(state, &discount, 1);
                }
                state.promotions.order_discounts.insert(discount.order_id, Arc::new(discount));
                Ok(())
            },
            check_v1: check_v1::<OrderDiscount>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: AUTOMATIC_PROMOTIONS,
            rows: |s, f| s.promotions.automatic.entries().iter().for_each(|(_, p)| f(&**p)),
            load: |state, bytes| {
                let promotion: AutomaticPromotion = decode_row(bytes, "automatic promotion")?;
                state.promotions.automatic.insert(promotion.id, Arc::new(promotion));
                Ok(())
            },
            check_v1: check_v1::<AutomaticPromotion>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
    ],
    counters: |state, each| {
        each(&state.promotions.code_seq);
        each(&state.promotions.promotion_seq);
    },
    timers: None,
    verify: Some(check_uses),
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The promotions' facts.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum PromotionEvent {
        CodeCreated(Box<DiscountCode>),
        /// A code's new terms (its `uses` unchanged).
        CodeUpdated(Box<DiscountCode>),
        /// The cart's codes are now these (none: the row goes).
        CartCodesSet(Box<CartCodes>),
        /// A placed order (placed by the event before this one, in the same entry) was
        /// discounted: its uses are counted and its totals set.
        OrderDiscounted(Box<OrderDiscount>),
        /// An automatic promotion was created or changed.
        PromotionSaved(Box<AutomaticPromotion>),
    }
}
pub use event::PromotionEvent;

pub(crate) fn apply(state: &State, event: &PromotionEvent, at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        PromotionEvent::CodeCreated(code) => {
            state.promotions.code_seq.bump();
            put_code(state, (**code).clone(), rows);
        }
        PromotionEvent::CodeUpdated(code) => {
            let uses = state.discount_code(&code.code).map_or(0, |c| c.uses);
            put_code(state, DiscountCode { uses, ..(**code).clone() }, rows);
        }
        PromotionEvent::CartCodesSet(set) => {
            set_cart_codes(state, &set.cart_id, set.codes.clone(), rows);
            crate::carts::touch(state, &set.cart_id, at, rows);
        }
        PromotionEvent::OrderDiscounted(discount) => {
            let mut order = (*state.order(&discount.order_id).expect("placed just before")).clone();
            let off: i64 = discount.line_discounts.iter().sum();
            let currency = order.currency();
            // Part of placing the order: its version stays 1, so a keyed checkout's
            // replay (the order as placed) shows the discount too.
            order.discount_total = Money::new(off, currency).expect("decide bounded it");
            order.total = Money::new(order.subtotal.amount() - off, currency)
                .expect("a discount never exceeds the subtotal");
            let cart_id = order.cart_id;
            crate::orders::put_order(state, order, rows);
            for applied in discount.codes.iter().filter(|a| !is_promotion(&a.code)) {
                change_uses(state, &applied.code, 1, at, rows);
            }
            count_customer_uses(state, discount, 1);
            set_cart_codes(state, &cart_id, Vec::new(), rows);
            let discount = Arc::new((**discount).clone());
            state.promotions.order_discounts.insert(discount.order_id, discount.clone());
            rows.push(Row::put(discount));
        }
        PromotionEvent::PromotionSaved(promotion) => {
            let tables = &state.promotions;
            if !tables.automatic.contains_key(&promotion.id) {
                tables.promotion_seq.bump();
            }
            let promotion = Arc::new((**promotion).clone());
            tables.automatic.insert(promotion.id, promotion.clone());
            rows.push(Row::put(promotion));
        }
    }
}

/// Whether an applied discount's name is an automatic promotion's id, not a code.
pub(crate) fn is_promotion(name: &str) -> bool {
    name.starts_with(PromotionId::PREFIX)
}

fn put_code_in_memory(state: &State, code: DiscountCode) {
    state.promotions.by_seq.insert(code.seq, code.code.clone());
    state.promotions.codes.insert(code.code.clone(), Arc::new(code));
}

fn put_code(state: &State, code: DiscountCode, rows: &mut Vec<Row>) {
    put_code_in_memory(state, code.clone());
    rows.push(Row::put(Arc::new(code)));
}

fn change_uses(state: &State, code: &str, delta: i64, at: TimestampMs, rows: &mut Vec<Row>) {
    let mut code = (*state.discount_code(code).expect("decide checked the code")).clone();
    code.uses = u32::try_from(i64::from(code.uses) + delta).expect("uses stay counted");
    code.updated_at = at;
    put_code(state, code, rows);
}

fn count_customer_uses(state: &State, discount: &OrderDiscount, delta: i64) {
    let Some(customer) = discount.customer_id else { return };
    for applied in discount.codes.iter().filter(|a| !is_promotion(&a.code)) {
        let key = (applied.code.clone(), customer);
        let uses = i64::from(state.promotions.customer_uses.get(&key).unwrap_or(0)) + delta;
        if uses > 0 {
            state.promotions.customer_uses.insert(key, uses as u32);
        } else {
            state.promotions.customer_uses.remove(&key);
        }
    }
}

fn set_cart_codes(state: &State, cart_id: &CartId, codes: Vec<String>, rows: &mut Vec<Row>) {
    if codes.is_empty() {
        if state.promotions.cart_codes.remove(cart_id).is_some() {
            rows.push(Row::delete(CART_CODES, cart_id.text().as_str().as_bytes()));
        }
    } else {
        let codes = Arc::new(CartCodes { cart_id: *cart_id, codes });
        state.promotions.cart_codes.insert(*cart_id, codes.clone());
        rows.push(Row::put(codes));
    }
}

/// An order that no longer holds its stock (cancelled, expired) gives its codes' uses
/// back. Called by `orders` as it releases the order.
pub(crate) fn order_released(
    state: &State,
    order_id: &OrderId,
    at: TimestampMs,
    rows: &mut Vec<Row>,
) {
    let Some(discount) = state.promotions.order_discounts.get(order_id) else { return };
    if discount.released {
        return;
    }
    for applied in discount.codes.iter().filter(|a| !is_promotion(&a.code)) {
        change_uses(state, &applied.code, -1, at, rows);
    }
    count_customer_uses(state, &discount, -1);
    let released = Arc::new(OrderDiscount { released: true, ..(*discount).clone() });
    state.promotions.order_discounts.insert(*order_id, released.clone());
    rows.push(Row::put(released));
}

/// A cart dropped (abandoned) takes its codes with it. Called by `carts`.
pub(crate) fn cart_dropped(state: &State, cart_id: &CartId, rows: &mut Vec<Row>) {
    set_cart_codes(state, cart_id, Vec::new(), rows);
}

/// Why `code` cannot be used on `cart` at `now` apart from the lines it prices (its
/// state, window, limits, currency), if it cannot.
pub(crate) fn unusable(
    state: &State,
    code: &DiscountCode,
    cart: &Cart,
    now: TimestampMs,
) -> Option<String> {
    if !code.active {
        return Some("the code is not active".into());
    }
    if now < code.starts_at {
        return Some("the code is not valid yet".into());
    }
    if code.ends_at.is_some_and(|end| now >= end) {
        return Some("the code has expired".into());
    }
    if code.usage_limit.is_some_and(|limit| code.uses >= limit) {
        return Some("the code has been used as many times as it may be".into());
    }
    if let Some(limit) = code.per_customer_limit {
        let Some(customer) = cart.customer_id else {
            return Some("the code is limited per customer: sign in to use it".into());
        };
        let used = state.promotions.customer_uses.get(&(code.code.clone(), customer)).unwrap_or(0);
        if used >= limit {
            return Some(format!("the code may be used {limit} time(s) per customer"));
        }
    }
    if let DiscountValue::Fixed(amount) = code.value {
        if amount.currency() != cart.currency {
            return Some(format!("the code is for carts in {}", amount.currency()));
        }
    }
    if let Some(min) = code.min_subtotal {
        if min.currency() != cart.currency {
            return Some(format!("the code is for carts in {}", min.currency()));
        }
    }
    None
}

/// One line to discount: its product (if it still has one), its units and what it
/// costs (`quantity` units of one price).
pub(crate) struct LineCost {
    pub(crate) product_id: Option<ProductId>,
    pub(crate) quantity: u32,
    pub(crate) total: i64,
}

/// Whether a cart must be priced for discounts: it carries codes, or an automatic
/// promotion is in force.
pub(crate) fn any_discount(state: &State, cart: &Cart, now: TimestampMs) -> bool {
    state.cart_codes(&cart.id).is_some() || state.promotions_in_force(now).next().is_some()
}

/// What `promotion` takes off each line. Of every `buy + get` eligible units, `get` are
/// free: the amount is what the cheapest eligible units cost (so it does not depend on
/// how the units are split into lines), at most what the eligible lines still cost
/// (`left`), spread over them in proportion to that by largest remainder — so a return
/// of some of the units gives back their share, not the free unit's whole price.
/// Promotions stack: each counts every eligible unit.
fn promotion_discounts(
    state: &State,
    promotion: &AutomaticPromotion,
    lines: &[LineCost],
    left: &[i64],
) -> Vec<i64> {
    let targets = (&promotion.product_ids[..], &promotion.category_ids[..]);
    let mut prices: Vec<(i64, u64)> = Vec::new();
    let mut weights = vec![0i64; lines.len()];
    for (i, line) in lines.iter().enumerate() {
        if line.quantity > 0 && eligible(state, targets, line.product_id) {
            prices.push((line.total / i64::from(line.quantity), u64::from(line.quantity)));
            weights[i] = left[i];
        }
    }
    let units: u64 = prices.iter().map(|&(_, n)| n).sum();
    let group = u64::from(promotion.buy) + u64::from(promotion.get);
    let mut free = units / group * u64::from(promotion.get);
    prices.sort_unstable();
    let mut amount = 0i64;
    for (unit_price, count) in prices {
        if free == 0 {
            break;
        }
        let units = free.min(count);
        free -= units;
        // At most the line's total: no overflow.
        amount += unit_price * units as i64;
    }
    let amount = amount.min(weights.iter().sum());
    allocate(amount, &weights)
}

/// What the automatic promotions in force and the codes on `cart` take off `lines` at
/// `now`: the promotions first, in creation order, then the codes, each on what the
/// lines still cost.
pub(crate) fn discounts(
    state: &State,
    cart: &Cart,
    lines: &[LineCost],
    now: TimestampMs,
) -> Discounts {
    let subtotal: i64 = lines.iter().map(|l| l.total).sum();
    let mut left: Vec<i64> = lines.iter().map(|l| l.total).collect();
    let mut off = vec![0i64; lines.len()];
    let mut codes = Vec::new();
    for promotion in state.promotions_in_force(now) {
        let taken = promotion_discounts(state, &promotion, lines, &left);
        let amount: i64 = taken.iter().sum();
        if amount == 0 {
            continue;
        }
        for (i, share) in taken.into_iter().enumerate() {
            left[i] -= share;
            off[i] += share;
        }
        codes.push(CodeOutcome { code: promotion.id.to_string(), amount, refusal: None });
    }
    let Some(entered) = state.cart_codes(&cart.id) else {
        let total = off.iter().sum();
        return Discounts { codes, line_discounts: off, total };
    };
    let exclusive = entered.codes.len() > 1;
    for text in &entered.codes {
        let refuse =
            |why: String| CodeOutcome { code: text.clone(), amount: 0, refusal: Some(why) };
        let Some(code) = state.discount_code(text) else {
            codes.push(refuse("the code no longer exists".into()));
            continue;
        };
        if let Some(why) = unusable(state, &code, cart, now) {
            codes.push(refuse(why));
            continue;
        }
        if exclusive && !code.stackable {
            codes.push(refuse("the code cannot be combined with other codes".into()));
            continue;
        }
        if let Some(min) = code.min_subtotal {
            if subtotal < min.amount() {
                codes
                    .push(refuse(format!("the cart's subtotal must be at least {}", min.amount())));
                continue;
            }
        }
        let targets = (&code.product_ids[..], &code.category_ids[..]);
        let eligible: Vec<bool> =
            lines.iter().map(|line| eligible(state, targets, line.product_id)).collect();
        if !eligible.contains(&true) {
            codes.push(refuse("no item in the cart is eligible for the code".into()));
            continue;
        }
        let weights: Vec<i64> =
            eligible.iter().zip(&left).map(|(&e, &left)| if e { left } else { 0 }).collect();
        let base: i64 = weights.iter().sum();
        let amount = match code.value {
            DiscountValue::Percent(bp) => (i128::from(base) * i128::from(bp) / 10_000) as i64,
            DiscountValue::Fixed(amount) => amount.amount().min(base),
        };
        // A code that takes nothing off is not applied: an order never carries (nor
        // spends a use of) a code that gave it nothing. When promotions already made
        // its lines free, that is no reason to refuse the cart: it applies, for nothing.
        if amount == 0 {
            let emptied = eligible.iter().zip(&off).any(|(&e, &o)| e && o > 0);
            if emptied {
                codes.push(CodeOutcome { code: text.clone(), amount: 0, refusal: None });
            } else {
                codes.push(refuse("the code takes nothing off this cart".into()));
            }
            continue;
        }
        for (i, share) in allocate(amount, &weights).into_iter().enumerate() {
            left[i] -= share;
            off[i] += share;
        }
        codes.push(CodeOutcome { code: text.clone(), amount, refusal: None });
    }
    let total = off.iter().sum();
    Discounts { codes, line_discounts: off, total }
}

/// Whether a line of `product` is one that a discount limited to `(products,
/// categories)` (none: everything) takes from.
fn eligible(
    state: &State,
    (products, categories): (&[ProductId], &[CategoryId]),
    product: Option<ProductId>,
) -> bool {
    if products.is_empty() && categories.is_empty() {
        return true;
    }
    let Some(product) = product.and_then(|id| state.product(&id)) else { return false };
    products.contains(&product.id)
        || product
            .category_ids
            .iter()
            .any(|c| state.category_path(c).iter().any(|on_path| categories.contains(&on_path.id)))
}

/// Spreads `amount` over `weights` in proportion, by largest remainder: each exact
/// share rounded down, then one unit each to the largest fractional parts (the earlier
/// on a tie) until the shares sum to `amount`. `amount` must not exceed the weights'
/// sum; then no share exceeds its weight.
pub fn allocate(amount: i64, weights: &[i64]) -> Vec<i64> {
    let sum: i128 = weights.iter().map(|&w| i128::from(w)).sum();
    debug_assert!(i128::from(amount) <= sum || sum == 0, "{amount} is more than {sum}");
    if sum == 0 || amount == 0 {
        return vec![0; weights.len()];
    }
    let mut shares = Vec::with_capacity(weights.len());
    let mut fractions = Vec::with_capacity(weights.len());
    for (i, &weight) in weights.iter().enumerate() {
        let exact = i128::from(amount) * i128::from(weight);
        shares.push((exact / sum) as i64);
        fractions.push((exact % sum, i));
    }
    let mut left = amount - shares.iter().sum::<i64>();
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in fractions {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

/// Pair assertion at recovery: every code's `uses` is the number of orders that still
/// hold it, counted from the orders' discounts; each discount names an order, whose
/// discount total is its line discounts' sum; and a discount is released exactly when
/// its order was cancelled or expired (from the orders' statuses, kept apart).
fn check_uses(state: &State) -> Result<()> {
    let mut counted: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let broken = |why: String| Err(EngineError::IncompatibleData(why));
    for (order_id, discount) in state.promotions.order_discounts.entries() {
        let Some(order) = state.order(&order_id) else {
            return broken(format!("order {order_id} has a discount but no order"));
        };
        if !discount.released {
            for applied in &discount.codes {
                *counted.entry(applied.code.clone()).or_default() += 1;
            }
        }
        let off: i64 = discount.line_discounts.iter().sum();
        if order.discount_total.amount() != off {
            return broken(format!(
                "order {order_id}'s discount total is not its line discounts' sum {off}"
            ));
        }
        let ended = matches!(order.status, OrderStatus::Cancelled | OrderStatus::Expired);
        if discount.released != ended {
            return broken(format!(
                "order {order_id} is {} but its discount is {}released",
                order.status.as_str(),
                if discount.released { "" } else { "not " }
            ));
        }
    }
    for (text, code) in state.promotions.codes.entries() {
        let expected = counted.get(&text).copied().unwrap_or(0);
        if code.uses != expected {
            return Err(EngineError::IncompatibleData(format!(
                "discount code {text} counts {} uses but {expected} orders hold it",
                code.uses
            )));
        }
    }
    Ok(())
}

/// The promotions' reads.
impl State {
    /// A discount code (`code` in any case).
    pub fn discount_code(&self, code: &str) -> Option<Arc<DiscountCode>> {
        self.promotions.codes.get(code.to_ascii_uppercase().as_str())
    }

    /// The codes entered on a cart, if any.
    pub fn cart_codes(&self, cart_id: &CartId) -> Option<Arc<CartCodes>> {
        self.promotions.cart_codes.get(cart_id)
    }

    /// The automatic promotions in force at `now`, in creation order.
    pub fn promotions_in_force(
        &self,
        now: TimestampMs,
    ) -> impl Iterator<Item = Arc<AutomaticPromotion>> + '_ {
        // Checked on every checkout and cart: nothing to collect when there is none.
        let mut all: Vec<_> = match self.promotions.automatic.len() {
            0 => Vec::new(),
            _ => self.promotions.automatic.entries().into_iter().map(|(_, p)| p).collect(),
        };
        all.sort_by_key(|p| p.id);
        all.into_iter().filter(move |p| p.in_force(now))
    }

    /// Every automatic promotion, in creation order.
    pub fn automatic_promotions(&self) -> Vec<Arc<AutomaticPromotion>> {
        let mut all: Vec<_> =
            self.promotions.automatic.entries().into_iter().map(|(_, p)| p).collect();
        all.sort_by_key(|p| p.id);
        all
    }

    /// An automatic promotion by id.
    pub fn automatic_promotion(&self, id: &PromotionId) -> Option<Arc<AutomaticPromotion>> {
        self.promotions.automatic.get(id)
    }

    /// What a placed order was discounted, if it was.
    pub fn order_discount(&self, order_id: &OrderId) -> Option<Arc<OrderDiscount>> {
        self.promotions.order_discounts.get(order_id)
    }

    /// Discount codes in creation order after position `after` (a page's `next`).
    pub fn discount_codes(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> crate::catalog::Page<Arc<DiscountCode>> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        let items = self
            .promotions
            .by_seq
            .range(start..)
            .filter_map(|e| self.promotions.codes.get(e.value().as_str()));
        crate::catalog::Page::of(items, limit, |c| c.seq.to_string())
    }

    /// How many discount codes exist.
    pub fn discount_code_count(&self) -> usize {
        self.promotions.codes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::Order;

    fn code(uses: u32) -> DiscountCode {
        DiscountCode {
            code: "TEN".into(),
            seq: 1,
            value: DiscountValue::Percent(1000),
            product_ids: vec![],
            category_ids: vec![],
            min_subtotal: None,
            starts_at: 0,
            ends_at: None,
            usage_limit: None,
            per_customer_limit: None,
            stackable: false,
            active: true,
            uses,
            created_at: 0,
            updated_at: 0,
            version: 1,
        }
    }

    fn order(status: OrderStatus, discount: i64) -> Order {
        let usd = |amount| Money::new(amount, Currency::USD).unwrap();
        Order {
            id: OrderId::from_random(42),
            seq: 1,
            cart_id: CartId::from_random(7),
            customer_id: None,
            email: String::new(),
            shipping_address: None,
            status,
            lines: vec![],
            subtotal: usd(1000),
            discount_total: usd(discount),
            total: usd(1000 - discount),
            reservation_expires_at: 0,
            payments: vec![],
            created_at: 0,
            updated_at: 0,
            version: 1,
        }
    }

    /// A state with the code TEN (`uses`) and, if given, an order and its discount of
    /// 100 (`released`); what the recovery check says.
    fn verify(uses: u32, order_and_release: Option<(Order, bool)>) -> String {
        let state = State::new();
        put_code_in_memory(&state, code(uses));
        if let Some((order, released)) = order_and_release {
            let discount = OrderDiscount {
                order_id: order.id,
                customer_id: None,
                codes: vec![AppliedCode { code: "TEN".into(), amount: 100 }],
                line_discounts: vec![100],
                released,
            };
            state.promotions.order_discounts.insert(order.id, Arc::new(discount));
            state.orders.orders.insert(order.id, Arc::new(order));
        }
        match check_uses(&state) {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string().split(": ").last().unwrap_or_default().to_string(),
        }
    }

    #[test]
    fn the_recovery_check_finds_miscounted_uses() {
        use OrderStatus::*;
        let id = OrderId::from_random(42);
        assert_eq!(verify(0, None), "ok");
        assert_eq!(verify(1, Some((order(PendingPayment, 100), false))), "ok");
        assert_eq!(verify(0, Some((order(Cancelled, 100), true))), "ok");
        assert_eq!(verify(1, None), "discount code TEN counts 1 uses but 0 orders hold it");
        assert_eq!(
            verify(0, Some((order(Paid, 100), false))),
            "discount code TEN counts 0 uses but 1 orders hold it"
        );
        assert_eq!(
            verify(1, Some((order(Paid, 99), false))),
            format!("order {id}'s discount total is not its line discounts' sum 100")
        );
        assert_eq!(
            verify(0, Some((order(Paid, 100), true))),
            format!("order {id} is paid but its discount is released")
        );
        assert_eq!(
            verify(1, Some((order(Expired, 100), false))),
            format!("order {id} is expired but its discount is not released")
        );
    }

    #[test]
    fn largest_remainder_allocation_sums_exactly() {
        let cases: &[(i64, &[i64], &[i64])] = &[
            (0, &[100, 200], &[0, 0]),
            (100, &[100], &[100]),
            (10, &[10, 10, 10], &[4, 3, 3]),
            (2, &[1, 1, 1], &[1, 1, 0]),
            (100, &[333, 333, 334], &[33, 33, 34]),
            (1, &[50, 50], &[1, 0]),
            (7, &[0, 10, 0, 10], &[0, 4, 0, 3]),
            (999, &[1000, 1, 1], &[997, 1, 1]),
            (5, &[0, 0], &[0, 0]),
        ];
        for (amount, weights, expected) in cases {
            let shares = allocate(*amount, weights);
            assert_eq!(shares, *expected, "{amount} over {weights:?}");
            if weights.iter().sum::<i64>() > 0 {
                assert_eq!(shares.iter().sum::<i64>(), *amount);
            }
            assert!(shares.iter().zip(*weights).all(|(s, w)| s <= w));
        }
    }
}
