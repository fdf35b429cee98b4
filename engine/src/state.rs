//! The in-memory state, shared by the sequencer (its only writer) and every reader.
//!
//! Entities are immutable `Arc` values published in lock-free maps; a change publishes
//! a new value. Point lookups (carts, orders, SKUs, stock, idempotency keys, tokens) go
//! through [`Index`], a concurrent hash map with lock-free reads (`papaya`); ordered
//! indexes (`crossbeam_skiplist`) remain only where order is needed: listings, expiry,
//! ages. Stock levels are atomics behind a sequence lock, so a reader sees `on_hand` and
//! `reserved` of the same instant without ever blocking the writer. Nothing here blocks
//! a reader on a write.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_skiplist::{SkipMap, SkipSet};

use crate::model::*;
use crate::types::*;

/// A SKU's stock levels as atomics. Only the sequencer writes; readers retry the rare
/// read that overlaps a write.
#[derive(Debug)]
pub(crate) struct StockCell {
    /// Even when stable, odd while a write is under way; `seq / 2` is the version.
    seq: AtomicU64,
    /// `on_hand << 32 | reserved`.
    levels: AtomicU64,
}

impl StockCell {
    pub(crate) fn new(on_hand: u32, reserved: u32, version: u64) -> StockCell {
        StockCell {
            seq: AtomicU64::new(version * 2),
            levels: AtomicU64::new(u64::from(on_hand) << 32 | u64::from(reserved)),
        }
    }

    /// `(on_hand, reserved, version)` of one instant.
    pub(crate) fn read(&self) -> (u32, u32, u64) {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let levels = self.levels.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let after = self.seq.load(Ordering::Relaxed);
            if before == after {
                return ((levels >> 32) as u32, levels as u32, before / 2);
            }
        }
    }

    /// Called by the sequencer only.
    pub(crate) fn write(&self, on_hand: u32, reserved: u32) {
        assert!(reserved <= on_hand, "stock invariant: reserved {reserved} > on hand {on_hand}");
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.levels.store(u64::from(on_hand) << 32 | u64::from(reserved), Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }
}

/// A point-lookup index: a concurrent hash map whose reads never block and never wait
/// for the writer (`papaya`: lock-free reads, incremental resizing, so no lookup pays
/// for a whole-table resize). Values are cheap clones (`Arc`s and ids). Chosen over the
/// ordered skip list it replaces, and over `scc` and a locked `HashMap`, by
/// `benches/maps.rs` (figures in BENCHMARKS.md).
pub(crate) struct Index<K, V> {
    map: papaya::HashMap<K, V>,
}

impl<K, V> Default for Index<K, V> {
    fn default() -> Self {
        Index { map: papaya::HashMap::new() }
    }
}

impl<K: std::fmt::Debug + Hash + Eq, V: std::fmt::Debug> std::fmt::Debug for Index<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("len", &self.map.len()).finish()
    }
}

impl<K: Hash + Eq + Send + Sync, V: Clone + Send + Sync> Index<K, V> {
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.pin().get(key).cloned()
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.pin().contains_key(key)
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        self.map.pin().insert(key, value);
    }

    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.pin().remove(key).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> Vec<(K, V)>
    where
        K: Clone,
    {
        self.map.pin().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// How many counters there are.
pub(crate) const COUNTERS: usize = 5;

/// The counters' persisted names, in the order of [`Counters::snapshot`].
pub(crate) const COUNTER_NAMES: [&str; COUNTERS] =
    ["product", "category", "customer", "order", "cart"];

/// Counters that make sequential ids and storage keys; persisted with every group that
/// advances them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) product: AtomicU64,
    pub(crate) category: AtomicU64,
    pub(crate) customer: AtomicU64,
    pub(crate) order: AtomicU64,
    pub(crate) cart: AtomicU64,
}

impl Counters {
    fn all(&self) -> [&AtomicU64; COUNTERS] {
        [&self.product, &self.category, &self.customer, &self.order, &self.cart]
    }

    pub(crate) fn snapshot(&self) -> [u64; COUNTERS] {
        self.all().map(|c| c.load(Ordering::Acquire))
    }

    pub(crate) fn restore(&self, values: [u64; COUNTERS]) {
        for (counter, value) in self.all().into_iter().zip(values) {
            counter.store(value, Ordering::Release);
        }
    }
}

/// Which products a listing returns.
#[derive(Clone, Debug, Default)]
pub struct ProductFilter {
    /// Only products in this category or one of its descendants.
    pub category_id: Option<CategoryId>,
    /// Only products with this status.
    pub status: Option<ProductStatus>,
}

/// Which orders a listing returns.
#[derive(Clone, Debug, Default)]
pub struct OrderFilter {
    /// Only this customer's orders.
    pub customer_id: Option<CustomerId>,
    /// Only orders with this status.
    pub status: Option<OrderStatus>,
}

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass this as `after` for the next page; `None` on the last.
    pub next: Option<String>,
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
    /// Discounts.
    pub discount_total: Money,
    /// `subtotal - discount_total`.
    pub total: Money,
}

/// The state. Read it through [`crate::Engine::state`]; only the sequencer changes it.
#[derive(Debug, Default)]
pub struct State {
    pub(crate) products: SkipMap<ProductId, Arc<Product>>,
    pub(crate) handles: Index<String, ProductId>,
    /// The product each sold SKU belongs to, so a cart line needs one lookup.
    pub(crate) skus: Index<Sku, Arc<Product>>,
    pub(crate) categories: SkipMap<CategoryId, Arc<Category>>,
    pub(crate) stock: Index<Sku, Arc<StockCell>>,
    pub(crate) carts: Index<CartId, Arc<Cart>>,
    pub(crate) orders: Index<OrderId, Arc<Order>>,
    pub(crate) orders_by_seq: SkipMap<u64, OrderId>,
    pub(crate) customer_orders: SkipSet<(CustomerId, u64)>,
    pub(crate) customers: SkipMap<CustomerId, Arc<Customer>>,
    pub(crate) emails: Index<String, CustomerId>,
    pub(crate) idempotency: Index<String, Arc<IdempotencyRecord>>,
    /// `(created_at, key)` of every idempotency record, oldest first.
    pub(crate) idempotency_by_age: SkipSet<(TimestampMs, String)>,
    /// `(reservation_expires_at, order)` of every pending order, soonest first.
    pub(crate) expiry: SkipSet<(TimestampMs, OrderId)>,
    pub(crate) counters: Counters,
    pub(crate) last_lsn: AtomicU64,
    pub(crate) api_clients: Index<ApiClientId, Arc<crate::accounts::ApiClient>>,
    pub(crate) refresh_tokens: Index<String, Arc<crate::accounts::RefreshToken>>,
    /// `(expires_at, hash)` of every refresh token.
    pub(crate) refresh_by_expiry: SkipSet<(TimestampMs, String)>,
    /// `(family, hash)` of every refresh token.
    pub(crate) refresh_families: SkipSet<(String, String)>,
    pub(crate) signing_keys: SkipMap<String, Arc<crate::accounts::SigningKey>>,
}

fn get<K: Ord + Send + 'static, V: Clone + Send + 'static>(
    map: &SkipMap<K, V>,
    key: &K,
) -> Option<V> {
    map.get(key).map(|entry| entry.value().clone())
}

impl State {
    /// An empty state.
    pub fn new() -> State {
        State::default()
    }

    /// The LSN of the last applied command (which may not be durable yet).
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.last_lsn.load(Ordering::Acquire))
    }

    /// A product by id.
    pub fn product(&self, id: &ProductId) -> Option<Arc<Product>> {
        get(&self.products, id)
    }

    /// A product by handle.
    pub fn product_by_handle(&self, handle: &str) -> Option<Arc<Product>> {
        self.handles.get(handle).and_then(|id| self.product(&id))
    }

    /// The product that has the variant `sku`.
    pub fn product_by_sku(&self, sku: &Sku) -> Option<Arc<Product>> {
        self.skus.get(sku)
    }

    /// How many products there are.
    pub fn product_count(&self) -> usize {
        self.products.len()
    }

    /// Products in id order (creation order) after the id `after`, filtered.
    pub fn products(
        &self,
        filter: &ProductFilter,
        after: Option<&ProductId>,
        limit: usize,
    ) -> Page<Arc<Product>> {
        let categories = filter.category_id.as_ref().map(|c| self.descendants(c));
        let matches = |p: &Product| {
            filter.status.is_none_or(|s| p.status == s)
                && categories
                    .as_ref()
                    .is_none_or(|set| p.category_ids.iter().any(|c| set.contains(c)))
        };
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Unbounded,
        };
        let range = self.products.range::<ProductId, _>((start, std::ops::Bound::Unbounded));
        let items = range.map(|e| e.value().clone()).filter(|p| matches(p));
        page(items, limit, |p| p.id.to_string())
    }

    /// A category by id.
    pub fn category(&self, id: &CategoryId) -> Option<Arc<Category>> {
        get(&self.categories, id)
    }

    /// Every category, in id order.
    pub fn categories(&self) -> Vec<Arc<Category>> {
        self.categories.iter().map(|e| e.value().clone()).collect()
    }

    /// The categories from the root down to `id` (inclusive).
    pub fn category_path(&self, id: &CategoryId) -> Vec<Arc<Category>> {
        let mut path = Vec::new();
        let mut next = self.category(id);
        while let Some(category) = next {
            // The tree has no cycles (decide refuses them); the bound guards a reader
            // racing a move.
            if path.len() > CATEGORY_DEPTH_MAX {
                break;
            }
            next = category.parent_id.as_ref().and_then(|p| self.category(p));
            path.push(category);
        }
        path.reverse();
        path
    }

    /// `id` and every category below it.
    pub fn descendants(&self, id: &CategoryId) -> Vec<CategoryId> {
        let mut out = vec![id.clone()];
        let mut index = 0;
        while index < out.len() && out.len() <= self.categories.len() {
            let parent = out[index].clone();
            out.extend(
                self.categories
                    .iter()
                    .filter(|e| e.value().parent_id.as_ref() == Some(&parent))
                    .map(|e| e.key().clone()),
            );
            index += 1;
        }
        out
    }

    /// A SKU's stock levels.
    pub fn stock(&self, sku: &Sku) -> Option<StockLevels> {
        self.stock.get(sku).map(|cell| {
            let (on_hand, reserved, version) = cell.read();
            StockLevels { sku: sku.clone(), on_hand, reserved, version }
        })
    }

    /// Every SKU's stock levels, in SKU order.
    pub fn all_stock(&self) -> Vec<StockLevels> {
        let mut all: Vec<StockLevels> = self
            .stock
            .entries()
            .into_iter()
            .map(|(sku, cell)| {
                let (on_hand, reserved, version) = cell.read();
                StockLevels { sku, on_hand, reserved, version }
            })
            .collect();
        all.sort_unstable_by(|a, b| a.sku.cmp(&b.sku));
        all
    }

    /// A cart by id.
    pub fn cart(&self, id: &CartId) -> Option<Arc<Cart>> {
        self.carts.get(id)
    }

    /// A cart priced at the current prices.
    pub fn priced_cart(&self, id: &CartId) -> Option<PricedCart> {
        self.cart(id).map(|cart| self.price_cart(cart))
    }

    /// Prices `cart` at the current prices.
    pub fn price_cart(&self, cart: Arc<Cart>) -> PricedCart {
        let zero = Money::zero(cart.currency);
        let mut subtotal = zero;
        let lines = cart
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
                    product_id: product.as_ref().map(|p| p.id.clone()),
                    title: line_title(product.as_deref(), variant.as_ref()),
                    quantity: line.quantity,
                    unit_price,
                    line_total,
                    purchasable,
                }
            })
            .collect();
        PricedCart { cart, lines, subtotal, discount_total: zero, total: subtotal }
    }

    /// An order by id.
    pub fn order(&self, id: &OrderId) -> Option<Arc<Order>> {
        self.orders.get(id)
    }

    /// How many orders there are.
    pub fn order_count(&self) -> usize {
        self.orders.len()
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
                let from = (customer.clone(), start);
                let items = self
                    .customer_orders
                    .range(from..)
                    .take_while(|e| &e.value().0 == customer)
                    .filter_map(|e| self.orders_by_seq.get(&e.value().1))
                    .filter_map(|e| self.order(e.value()))
                    .filter(status_ok);
                page(items, limit, |o| o.seq.to_string())
            }
            None => {
                let items = self
                    .orders_by_seq
                    .range(start..)
                    .filter_map(|e| self.order(e.value()))
                    .filter(status_ok);
                page(items, limit, |o| o.seq.to_string())
            }
        }
    }

    /// An account by id.
    pub fn customer(&self, id: &CustomerId) -> Option<Arc<Customer>> {
        get(&self.customers, id)
    }

    /// An account by email (case-insensitive).
    pub fn customer_by_email(&self, email: &str) -> Option<Arc<Customer>> {
        self.emails.get(&email.to_lowercase()).and_then(|id| self.customer(&id))
    }

    /// The idempotency record of a scoped key.
    pub fn idempotency_record(&self, scoped_key: &str) -> Option<Arc<IdempotencyRecord>> {
        self.idempotency.get(scoped_key)
    }

    /// An API client by id.
    pub fn api_client(&self, id: &ApiClientId) -> Option<Arc<crate::accounts::ApiClient>> {
        self.api_clients.get(id)
    }

    /// A refresh token by the hash of its value.
    pub fn refresh_token(&self, hash: &str) -> Option<Arc<crate::accounts::RefreshToken>> {
        self.refresh_tokens.get(hash)
    }

    /// Every token signing key, oldest first.
    pub fn signing_keys(&self) -> Vec<Arc<crate::accounts::SigningKey>> {
        let mut keys: Vec<_> = self.signing_keys.iter().map(|e| e.value().clone()).collect();
        keys.sort_by_key(|k| k.created_at);
        keys
    }

    /// Accounts with `role`, in id order.
    pub fn customers_with_role(&self, role: Role) -> Vec<Arc<Customer>> {
        self.customers.iter().map(|e| e.value().clone()).filter(|c| c.role == role).collect()
    }

    /// When the next pending order expires.
    pub fn next_expiry(&self) -> Option<TimestampMs> {
        self.expiry.front().map(|e| e.value().0)
    }
}

/// The deepest a category tree may be.
pub const CATEGORY_DEPTH_MAX: usize = 16;

pub(crate) fn line_title(product: Option<&Product>, variant: Option<&Variant>) -> String {
    match (product, variant) {
        (Some(p), Some(v)) if !v.title.is_empty() => format!("{} - {}", p.title, v.title),
        (Some(p), _) => p.title.clone(),
        _ => String::new(),
    }
}

fn page<T>(items: impl Iterator<Item = T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let mut items: Vec<T> = items.take(limit.saturating_add(1)).collect();
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(&cursor)
    } else {
        None
    };
    Page { items, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_cell_reads_what_was_written() {
        let cell = StockCell::new(10, 3, 1);
        assert_eq!(cell.read(), (10, 3, 1));
        cell.write(u32::MAX, 7);
        assert_eq!(cell.read(), (u32::MAX, 7, 2));
    }

    #[test]
    fn stock_cell_is_never_torn_under_a_concurrent_writer() {
        let cell = Arc::new(StockCell::new(0, 0, 0));
        let writer = {
            let cell = cell.clone();
            std::thread::spawn(move || {
                for n in 1..200_000u32 {
                    cell.write(n, n / 2);
                }
            })
        };
        let mut last_version = 0;
        while !writer.is_finished() {
            let (on_hand, reserved, version) = cell.read();
            assert_eq!(reserved, on_hand / 2);
            assert!(version >= last_version);
            last_version = version;
        }
        writer.join().unwrap();
    }
}
