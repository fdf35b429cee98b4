//! Recommendations, folded from the log.
//!
//! A [`RecommendationModel`] counts, over paid orders:
//! - **bought together**: for each pair of products, the paid orders holding both;
//! - **also bought**: for each pair, the customers who bought both (in any of their
//!   paid orders);
//! - **trending**: each product's units sold, each unit's weight halving every
//!   [`RecommendationSettings::trending_half_life_ms`] since its order was paid;
//!
//! and from these answers four lists: a product's bought-together and also-bought
//! lists, the trending products (of a category or of the shop), and a customer's
//! personal list — the products bought together with what they bought (summed over
//! their recent purchases), then what is trending in the categories they bought from,
//! then what is trending anywhere; never what they bought (of their last [`RecommendationSettings::history_max`] products). Every list skips products
//! that are not active or not in stock at the time of the query, and a pair counts
//! only from [`RecommendationSettings::support_min`] on.
//!
//! An order counts once, when it is first paid; a later refund does not take it out.
//! Guest orders count towards bought-together and trending, not also-bought.
//!
//! Memory is bounded per product and per customer: a product keeps at most
//! [`RecommendationSettings::neighbours_max`] partners in each list (when full, a new
//! partner takes the place of one seen only once, else it is not kept), and a customer
//! at most [`RecommendationSettings::history_max`] products (the most recently bought).
//! Below these caps every list is exact; past them the lists favour the partners
//! established first.
//!
//! [`Recommendations`] keeps a model in step with an engine: built from the state's
//! paid orders at the start (the model is memory only), then a thread registered as
//! the log consumer `recommendations` tails the durable log and folds each order a
//! capture paid. An order is folded once however often it is seen, so the overlap
//! between the state read at the start and the log read after it counts nothing twice;
//! once the log is past everything that read could have seen, the set of folded orders
//! is let go (a capture needs a pending order, so the log pays each order once) and
//! memory no longer grows with the orders.
//!
//! ```
//! use emporium_engine::{Engine, EngineConfig, RecommendationSettings, Recommendations};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
//! let recommendations = Recommendations::start(&engine, RecommendationSettings::default()).unwrap();
//! assert!(recommendations.trending(engine.state(), None, 10).is_empty());
//! recommendations.stop();
//! engine.close();
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::catalog::CatalogEvent;
use crate::domains::{Event, State};
use crate::error::Result;
use crate::follower::{entries_after, Entries, Follow, Follower};
use crate::kernel::runtime::{Engine, LogConsumer};
use crate::payments::PaymentEvent;
use crate::types::{CategoryId, CustomerId, Lsn, OrderId, ProductId, TimestampMs};
use crate::{Order, Product, ProductStatus};

/// The log consumer name the recommender registers.
pub const RECOMMENDATIONS_CONSUMER: &str = "recommendations";

/// The most a list answers.
pub const RECOMMENDATIONS_MAX: usize = 100;

/// How many ranked candidates a list looks at, at most, to find the products in stock
/// (a list of mostly sold-out products answers short rather than slowly).
const CANDIDATES_SCANNED_MAX: usize = 5_000;

/// How many half-lives the trending weights may span before they are rescaled (2^256
/// is far from the largest `f64`).
const TRENDING_HALF_LIVES_MAX: f64 = 256.0;

/// How the lists are counted and kept.
#[derive(Clone, Debug)]
pub struct RecommendationSettings {
    /// A pair of products is recommended from this many orders (bought together) or
    /// customers (also bought) on. Default 2.
    pub support_min: u32,
    /// Partners kept per product and list. Default 200: a list answers at most
    /// [`RECOMMENDATIONS_MAX`], and twice that leaves room for the partners a query
    /// skips (not active, not in stock). 8 bytes a partner, so at most 3.2 kB per
    /// product for both lists.
    pub neighbours_max: usize,
    /// Products remembered per customer (the most recently bought). Default 50.
    pub history_max: usize,
    /// How fast a sale stops counting towards trending. Default one day.
    pub trending_half_life_ms: i64,
    /// How often the recommender looks for new log entries. Default 100 ms.
    pub refresh_interval_ms: u64,
    /// Log entries read per pass at most. Default 4096.
    pub entries_per_pass_max: usize,
}

impl Default for RecommendationSettings {
    fn default() -> RecommendationSettings {
        RecommendationSettings {
            support_min: 2,
            neighbours_max: 200,
            history_max: 50,
            trending_half_life_ms: 24 * 3600 * 1000,
            refresh_interval_ms: 100,
            entries_per_pass_max: 4096,
        }
    }
}

/// Why a product is in a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// Bought in the same orders: the score is the number of orders (for a
    /// customer's list, summed over the products they bought).
    BoughtTogether,
    /// Bought by the same customers: the score is the number of customers.
    AlsoBought,
    /// Selling now: the score is the decayed count of units.
    Trending,
}

impl Basis {
    /// The wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Basis::BoughtTogether => "bought_together",
            Basis::AlsoBought => "also_bought",
            Basis::Trending => "trending",
        }
    }
}

/// One recommended product.
#[derive(Clone, Debug)]
pub struct Recommendation {
    /// The product, as it is now.
    pub product: Arc<Product>,
    /// Why it is recommended.
    pub basis: Basis,
    /// How strongly (see [`Basis`]).
    pub score: f64,
}

/// A paid order as the model sees it.
#[derive(Clone, Debug)]
pub struct PaidOrder {
    /// The order.
    pub id: OrderId,
    /// Its customer (`None` for a guest).
    pub customer_id: Option<CustomerId>,
    /// Its products and units; a product may appear on several lines.
    pub lines: Vec<(ProductId, u32)>,
    /// When it was first paid.
    pub paid_at: TimestampMs,
}

impl PaidOrder {
    /// The order as the model sees it, if it has been paid.
    pub fn of(order: &Order) -> Option<PaidOrder> {
        let paid_at = order.payments.first()?.created_at;
        Some(PaidOrder {
            id: order.id,
            customer_id: order.customer_id,
            lines: order.lines.iter().map(|l| (l.product_id, l.quantity)).collect(),
            paid_at,
        })
    }
}

/// Counts of partners, ranked by count (highest first), then id: one vector of at
/// most the cap's entries, 8 bytes each (the product's sequence number and the count,
/// as `u32`s: a shop's products are numbered from 1, and one numbered past `u32::MAX`
/// is not counted as a partner). A partner is found by a scan (the cap is a few
/// hundred, and folding runs on its own thread), and a counted one moves up by a
/// rotation of the entries it passes.
#[derive(Debug, Default)]
struct Ranked {
    ranked: Vec<Partner>,
}

#[derive(Clone, Copy, Debug)]
struct Partner {
    product: u32,
    count: u32,
}

impl Partner {
    fn rank(&self) -> (Reverse<u32>, u32) {
        (Reverse(self.count), self.product)
    }
}

impl Ranked {
    fn add(&mut self, partner: ProductId, cap: usize) {
        let Ok(partner) = u32::try_from(partner.seq()) else { return };
        if let Some(at) = self.ranked.iter().position(|p| p.product == partner) {
            let mut counted = self.ranked[at];
            counted.count += 1;
            let to = self.ranked[..at].partition_point(|p| p.rank() < counted.rank());
            self.ranked[to..=at].rotate_right(1);
            self.ranked[to] = counted;
            return;
        }
        if self.ranked.len() >= cap {
            // Full: a partner seen once gives way (the last ranked is the least
            // counted); an established one does not.
            match self.ranked.last() {
                Some(weakest) if weakest.count == 1 => drop(self.ranked.pop()),
                _ => return,
            }
        }
        if self.ranked.len() == self.ranked.capacity() {
            // Half again, up to the cap: a full list holds no room it cannot use.
            let room = (self.ranked.len() / 2).max(4).min(cap - self.ranked.len());
            self.ranked.reserve_exact(room);
        }
        let new = Partner { product: partner, count: 1 };
        let at = self.ranked.partition_point(|p| p.rank() < new.rank());
        self.ranked.insert(at, new);
    }

    /// Partners with at least `support` counts, best first.
    fn best(&self, support: u32) -> impl Iterator<Item = (ProductId, u32)> + '_ {
        self.ranked
            .iter()
            .map(|p| (ProductId::from_seq(u64::from(p.product)), p.count))
            .take_while(move |&(_, c)| c >= support)
    }
}

/// The decayed counts of units sold. Weights are kept relative to `origin`, where a
/// unit sold weighs 1: a unit sold `t` later weighs `2^(t / half_life)`, so adding
/// never touches the other products, and the ranking is the same at every instant.
///
/// Each product is also ranked in every category it is placed under (its categories
/// and the ones above them, as [`RecommendationModel::place`] was last told), so that
/// a category's list is read from its own ranking.
#[derive(Debug)]
struct Trending {
    origin: TimestampMs,
    half_life_ms: f64,
    weights: HashMap<ProductId, f64>,
    /// `(weight's bits, product)`: positive `f64`s order as their bits do.
    ranked: BTreeSet<Ranking>,
    by_category: HashMap<CategoryId, BTreeSet<Ranking>>,
    placed: HashMap<ProductId, Vec<CategoryId>>,
}

type Ranking = (Reverse<u64>, ProductId);

impl Trending {
    fn new(origin: TimestampMs, half_life_ms: i64) -> Trending {
        Trending {
            origin,
            half_life_ms: half_life_ms.max(1) as f64,
            weights: HashMap::default(),
            ranked: BTreeSet::new(),
            by_category: HashMap::default(),
            placed: HashMap::default(),
        }
    }

    /// Takes a product out of its rankings (`insert`: puts it in them).
    fn rank(&mut self, product: ProductId, insert: bool) {
        let Some(&weight) = self.weights.get(&product).filter(|w| **w > 0.0) else { return };
        let key = (Reverse(weight.to_bits()), product);
        let apply = |set: &mut BTreeSet<Ranking>| match insert {
            true => drop(set.insert(key)),
            false => drop(set.remove(&key)),
        };
        apply(&mut self.ranked);
        for category in self.placed.get(&product).into_iter().flatten() {
            if let Some(set) = self.by_category.get_mut(category) {
                apply(set);
            }
        }
    }

    fn add(&mut self, product: ProductId, units: u32, at: TimestampMs) {
        let mut half_lives = (at - self.origin) as f64 / self.half_life_ms;
        if half_lives > TRENDING_HALF_LIVES_MAX {
            self.rescale(at);
            half_lives = 0.0;
        }
        self.rank(product, false);
        *self.weights.entry(product).or_insert(0.0) += units as f64 * half_lives.exp2();
        self.rank(product, true);
    }

    /// Ranks a product under `categories` from now on.
    fn place(&mut self, product: ProductId, categories: Vec<CategoryId>) {
        self.rank(product, false);
        for category in &categories {
            self.by_category.entry(*category).or_default();
        }
        self.placed.insert(product, categories);
        self.rank(product, true);
    }

    /// Moves the origin to `to`, scaling every weight to it (those that fall to zero
    /// are dropped).
    fn rescale(&mut self, to: TimestampMs) {
        let factor = (-((to - self.origin) as f64) / self.half_life_ms).exp2();
        self.origin = to;
        self.ranked.clear();
        self.by_category.values_mut().for_each(BTreeSet::clear);
        self.weights.retain(|_, w| {
            *w *= factor;
            *w > 0.0
        });
        let products: Vec<ProductId> = self.weights.keys().copied().collect();
        for product in products {
            self.rank(product, true);
        }
    }

    /// The products ranked under any of `categories`, best first, each once.
    fn best_in<'a>(
        &'a self,
        categories: &HashSet<CategoryId>,
    ) -> impl Iterator<Item = (ProductId, f64)> + 'a {
        let mut heads: Vec<_> = categories
            .iter()
            .filter_map(|c| self.by_category.get(c))
            .map(|set| set.iter().peekable())
            .collect();
        std::iter::from_fn(move || {
            let key = *heads.iter_mut().filter_map(|h| h.peek().copied()).min()?;
            for head in heads.iter_mut() {
                while head.peek().is_some_and(|k| **k == key) {
                    head.next();
                }
            }
            Some((key.1, f64::from_bits(key.0 .0)))
        })
    }

    /// The decayed count at `now` of a weight.
    fn at(&self, weight: f64, now: TimestampMs) -> f64 {
        weight * (-((now - self.origin) as f64) / self.half_life_ms).exp2()
    }

    fn best(&self) -> impl Iterator<Item = (ProductId, f64)> + '_ {
        self.ranked.iter().map(|&(Reverse(bits), p)| (p, f64::from_bits(bits)))
    }
}

/// The counts behind the lists (see the module's documentation). Fold paid orders into
/// it with [`RecommendationModel::fold`]; ask it with the lists' methods, which read
/// the state only to skip products not active or not in stock.
#[derive(Debug)]
pub struct RecommendationModel {
    settings: RecommendationSettings,
    /// The orders folded, until [`RecommendationModel::forget_folded`].
    folded: Option<HashSet<OrderId>>,
    /// How many orders were folded.
    orders: u64,
    together: HashMap<ProductId, Ranked>,
    also: HashMap<ProductId, Ranked>,
    /// Each customer's products, the most recently bought last.
    history: HashMap<CustomerId, VecDeque<ProductId>>,
    trending: Trending,
}

impl RecommendationModel {
    /// An empty model whose trending weights start at `origin` (any time near the
    /// orders to come: the lists do not depend on it).
    pub fn new(settings: RecommendationSettings, origin: TimestampMs) -> RecommendationModel {
        RecommendationModel {
            trending: Trending::new(origin, settings.trending_half_life_ms),
            settings,
            folded: Some(HashSet::default()),
            orders: 0,
            together: HashMap::default(),
            also: HashMap::default(),
            history: HashMap::default(),
        }
    }

    /// Ranks `product`'s trending sales under `categories` (its categories and every
    /// one above them) from now on, for the trending lists of a category. A product
    /// never placed is in the shop's list only.
    pub fn place(&mut self, product: ProductId, mut categories: Vec<CategoryId>) {
        categories.sort_unstable();
        categories.dedup();
        if self.trending.placed.get(&product) != Some(&categories) {
            self.trending.place(product, categories);
        }
    }

    /// Lets go of the set of orders folded (16 bytes an order), for a caller that will
    /// not give `fold` an order twice from now on: every order it is given counts.
    pub fn forget_folded(&mut self) {
        self.folded = None;
    }

    /// Whether `product` has been placed.
    pub fn is_placed(&self, product: &ProductId) -> bool {
        self.trending.placed.contains_key(product)
    }

    /// The paid orders folded.
    pub fn orders(&self) -> u64 {
        self.orders
    }

    /// The paid orders whose ids are held to fold each once (none after
    /// [`RecommendationModel::forget_folded`]).
    pub fn orders_remembered(&self) -> u64 {
        self.folded.as_ref().map_or(0, |folded| folded.len() as u64)
    }

    /// Counts a paid order; an order already counted changes nothing (until
    /// [`RecommendationModel::forget_folded`]). Whether it counted.
    pub fn fold(&mut self, order: &PaidOrder) -> bool {
        if let Some(folded) = &mut self.folded {
            if !folded.insert(order.id) {
                return false;
            }
        }
        self.orders += 1;
        let cap = self.settings.neighbours_max;
        let mut products: Vec<ProductId> = Vec::with_capacity(order.lines.len());
        for &(product, units) in &order.lines {
            self.trending.add(product, units, order.paid_at);
            if !products.contains(&product) {
                products.push(product);
            }
        }
        for &p in &products {
            let partners = self.together.entry(p).or_default();
            for &q in products.iter().filter(|&&q| q != p) {
                partners.add(q, cap);
            }
        }
        let Some(customer) = order.customer_id else {
            return true;
        };
        let history = self.history.entry(customer).or_default();
        for &p in &products {
            if let Some(at) = history.iter().position(|&q| q == p) {
                // Bought before: the pairs with it are counted; it is recent again.
                history.remove(at);
                history.push_back(p);
                continue;
            }
            for &q in history.iter() {
                self.also.entry(p).or_default().add(q, cap);
                self.also.entry(q).or_default().add(p, cap);
            }
            history.push_back(p);
            if history.len() > self.settings.history_max {
                history.pop_front();
            }
        }
        true
    }

    /// The products most often bought in the same order as `product`.
    pub fn bought_together(
        &self,
        state: &State,
        product: &ProductId,
        limit: usize,
    ) -> Vec<Recommendation> {
        self.partners(&self.together, Basis::BoughtTogether, state, product, limit)
    }

    /// The products most often bought by the customers who bought `product`.
    pub fn also_bought(
        &self,
        state: &State,
        product: &ProductId,
        limit: usize,
    ) -> Vec<Recommendation> {
        self.partners(&self.also, Basis::AlsoBought, state, product, limit)
    }

    fn partners(
        &self,
        counts: &HashMap<ProductId, Ranked>,
        basis: Basis,
        state: &State,
        product: &ProductId,
        limit: usize,
    ) -> Vec<Recommendation> {
        let Some(partners) = counts.get(product) else {
            return Vec::new();
        };
        let candidates = partners.best(self.settings.support_min);
        let scored = candidates.map(|(p, count)| (p, basis, count as f64));
        collect(state, scored, limit, |_| true)
    }

    /// The products selling most now: of `category` (or a category under it) when
    /// given.
    pub fn trending(
        &self,
        state: &State,
        category: Option<&CategoryId>,
        now: TimestampMs,
        limit: usize,
    ) -> Vec<Recommendation> {
        let categories: Option<HashSet<CategoryId>> = category.map(|c| [*c].into_iter().collect());
        self.trending_in(state, categories.as_ref(), now, limit, &HashSet::default())
    }

    fn trending_in(
        &self,
        state: &State,
        categories: Option<&HashSet<CategoryId>>,
        now: TimestampMs,
        limit: usize,
        skip: &HashSet<ProductId>,
    ) -> Vec<Recommendation> {
        let ranked: Box<dyn Iterator<Item = (ProductId, f64)>> = match categories {
            None => Box::new(self.trending.best()),
            Some(wanted) => Box::new(self.trending.best_in(wanted)),
        };
        let scored = ranked
            .filter(|(p, _)| !skip.contains(p))
            .map(|(p, w)| (p, Basis::Trending, self.trending.at(w, now)));
        // The placement follows the log; the state has the last word.
        collect(state, scored, limit, |product| match categories {
            None => true,
            Some(wanted) => under(state, product, wanted),
        })
    }

    /// A customer's list: the products bought together with their recent purchases
    /// (the counts summed over those purchases), then the trending products of the
    /// categories they bought from, then the trending products of the shop; never a
    /// product they bought.
    pub fn for_customer(
        &self,
        state: &State,
        customer: &CustomerId,
        now: TimestampMs,
        limit: usize,
    ) -> Vec<Recommendation> {
        let limit = limit.min(RECOMMENDATIONS_MAX);
        let bought: HashSet<ProductId> =
            self.history.get(customer).into_iter().flatten().copied().collect();
        let mut scores: HashMap<ProductId, u64> = HashMap::default();
        for partners in bought.iter().filter_map(|p| self.together.get(p)) {
            for (q, count) in partners.best(self.settings.support_min) {
                if !bought.contains(&q) {
                    *scores.entry(q).or_default() += u64::from(count);
                }
            }
        }
        let mut ranked: Vec<(ProductId, u64)> = scores.into_iter().collect();
        ranked.sort_unstable_by_key(|&(p, score)| (Reverse(score), p));
        let scored = ranked.into_iter().map(|(p, s)| (p, Basis::BoughtTogether, s as f64));
        let mut list = collect(state, scored, limit, |_| true);
        let mut skip = bought.clone();
        if list.len() < limit {
            let categories: HashSet<CategoryId> = bought
                .iter()
                .filter_map(|p| state.product(p))
                .flat_map(|p| p.category_ids.clone())
                .collect();
            skip.extend(list.iter().map(|r| r.product.id));
            let more = self.trending_in(state, Some(&categories), now, limit - list.len(), &skip);
            list.extend(more);
        }
        if list.len() < limit {
            skip.extend(list.iter().map(|r| r.product.id));
            list.extend(self.trending_in(state, None, now, limit - list.len(), &skip));
        }
        list
    }
}

/// The first `limit` of `scored` that are active, in stock and `wanted`, looking at
/// [`CANDIDATES_SCANNED_MAX`] candidates at most.
fn collect(
    state: &State,
    scored: impl Iterator<Item = (ProductId, Basis, f64)>,
    limit: usize,
    wanted: impl Fn(&Product) -> bool,
) -> Vec<Recommendation> {
    let limit = limit.min(RECOMMENDATIONS_MAX);
    let mut list = Vec::with_capacity(limit);
    for (id, basis, score) in scored.take(CANDIDATES_SCANNED_MAX) {
        if list.len() == limit {
            break;
        }
        if let Some(product) = state.product(&id) {
            if wanted(&product) && offered(state, &product) {
                list.push(Recommendation { product, basis, score });
            }
        }
    }
    list
}

/// Whether a product can be bought now: active, with a variant in stock.
fn offered(state: &State, product: &Product) -> bool {
    product.status == ProductStatus::Active
        && product.variants.iter().any(|v| state.stock(&v.sku).is_some_and(|s| s.available() > 0))
}

/// A product's categories and every category above them.
fn placement(state: &State, product: &Product) -> Vec<CategoryId> {
    let mut categories = Vec::new();
    for &first in &product.category_ids {
        let mut next = Some(first);
        // The depth bound guards against a cycle.
        for _ in 0..crate::catalog::CATEGORY_DEPTH_MAX + 1 {
            let Some(id) = next else { break };
            categories.push(id);
            next = state.category(&id).and_then(|c| c.parent_id);
        }
    }
    categories
}

/// Whether a product is in one of `categories` or a category under one.
fn under(state: &State, product: &Product, categories: &HashSet<CategoryId>) -> bool {
    product.category_ids.iter().any(|&first| {
        let mut next = Some(first);
        // The depth bound guards against a cycle.
        for _ in 0..crate::catalog::CATEGORY_DEPTH_MAX + 1 {
            let Some(id) = next else { break };
            if categories.contains(&id) {
                return true;
            }
            next = state.category(&id).and_then(|c| c.parent_id);
        }
        false
    })
}

/// What [`Recommendations::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecommendationStatus {
    /// The last log position folded.
    pub read_lsn: Lsn,
    /// Paid orders counted.
    pub orders: u64,
    /// Paid orders whose ids the model holds to count each once: those of a build's
    /// read of the state, until the log is past what that read could have seen; then
    /// none.
    pub orders_remembered: u64,
    /// Builds from the state since the start (1 once the first, in the thread, ended).
    pub rebuilds: u64,
    /// Why the recommender stopped, if it did.
    pub failure: Option<String>,
}

struct Shared {
    model: RwLock<RecommendationModel>,
    read: AtomicU64,
    rebuilds: AtomicU64,
}

/// The recommendations of an engine: a model and the thread that keeps it current.
/// Stop it with [`Recommendations::stop`] (dropping it does too) before closing the
/// engine.
pub struct Recommendations {
    engine: Engine,
    shared: Arc<Shared>,
    follower: Follower,
}

impl std::fmt::Debug for Recommendations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recommendations").field("status", &self.status()).finish()
    }
}

impl Recommendations {
    /// Starts the thread that builds the model from the engine's paid orders, then
    /// keeps it current. The build is the thread's (tens of seconds at a million
    /// orders), not the caller's: until it ends the lists are empty and
    /// `status().rebuilds` is 0.
    pub fn start(engine: &Engine, settings: RecommendationSettings) -> Result<Recommendations> {
        let consumer = engine.register_consumer(RECOMMENDATIONS_CONSUMER)?;
        let model = RecommendationModel::new(settings.clone(), engine.now_ms());
        let shared = Arc::new(Shared {
            model: RwLock::new(model),
            read: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
        });
        let interval = Duration::from_millis(settings.refresh_interval_ms.max(1));
        let folder = Folder {
            engine: engine.clone(),
            consumer,
            shared: shared.clone(),
            settings,
            built: false,
            seen_until: None,
        };
        let follower = Follower::spawn("emporium-recommend", engine, interval, folder)?;
        Ok(Recommendations { engine: engine.clone(), shared, follower })
    }

    /// See [`RecommendationModel::bought_together`].
    pub fn bought_together(
        &self,
        state: &State,
        product: &ProductId,
        limit: usize,
    ) -> Vec<Recommendation> {
        self.shared.model.read().bought_together(state, product, limit)
    }

    /// See [`RecommendationModel::also_bought`].
    pub fn also_bought(
        &self,
        state: &State,
        product: &ProductId,
        limit: usize,
    ) -> Vec<Recommendation> {
        self.shared.model.read().also_bought(state, product, limit)
    }

    /// See [`RecommendationModel::trending`]; decayed to the engine clock's now.
    pub fn trending(
        &self,
        state: &State,
        category: Option<&CategoryId>,
        limit: usize,
    ) -> Vec<Recommendation> {
        let now = self.engine.now_ms();
        self.shared.model.read().trending(state, category, now, limit)
    }

    /// See [`RecommendationModel::for_customer`].
    pub fn for_customer(
        &self,
        state: &State,
        customer: &CustomerId,
        limit: usize,
    ) -> Vec<Recommendation> {
        let now = self.engine.now_ms();
        self.shared.model.read().for_customer(state, customer, now, limit)
    }

    /// Where the recommender is.
    pub fn status(&self) -> RecommendationStatus {
        RecommendationStatus {
            read_lsn: Lsn(self.shared.read.load(Ordering::Acquire)),
            orders: self.shared.model.read().orders(),
            orders_remembered: self.shared.model.read().orders_remembered(),
            rebuilds: self.shared.rebuilds.load(Ordering::Acquire),
            failure: self.follower.failure(),
        }
    }

    /// Stops the thread and waits for it (the lists still answer, as last folded).
    /// Idempotent; dropping it stops it too.
    pub fn stop(&self) {
        self.follower.stop();
    }
}

/// A model of every paid order of the state, the durable LSN read before it (the
/// entries after it may hold orders already folded: folding is idempotent), and the
/// last LSN applied after it (no entry after that one pays an order the state read
/// saw). Orders are folded in the order they were paid, as the log would.
fn build(engine: &Engine, settings: &RecommendationSettings) -> (RecommendationModel, Lsn, Lsn) {
    let lsn = engine.durable_lsn();
    let state = engine.state();
    let mut paid: Vec<(u64, PaidOrder)> = Vec::new();
    state.for_each_order(|order| paid.extend(PaidOrder::of(&order).map(|p| (order.seq, p))));
    let seen_until = state.last_lsn();
    paid.sort_unstable_by_key(|(seq, order)| (order.paid_at, *seq));
    let mut model = RecommendationModel::new(settings.clone(), engine.now_ms());
    for (_, order) in &paid {
        place(state, &mut model, order);
        model.fold(order);
    }
    (model, lsn, seen_until)
}

/// Places the order's products not placed yet.
fn place(state: &State, model: &mut RecommendationModel, order: &PaidOrder) {
    for (id, _) in &order.lines {
        if !model.is_placed(id) {
            let categories = state.product(id).map(|p| placement(state, &p)).unwrap_or_default();
            model.place(*id, categories);
        }
    }
}

struct Folder {
    engine: Engine,
    consumer: LogConsumer,
    shared: Arc<Shared>,
    settings: RecommendationSettings,
    /// Whether the first build from the state is done.
    built: bool,
    /// The last LSN the build's read of the state may have seen: the model dedupes
    /// folded orders until the log is past it.
    seen_until: Option<Lsn>,
}

impl Follow for Folder {
    /// Folds the orders paid in the next log entries.
    fn pass(&mut self) -> Result<bool> {
        if !self.built || self.consumer.is_dropped() {
            self.rebuild()?;
            self.built = true;
            return Ok(true);
        }
        let read = Lsn(self.shared.read.load(Ordering::Acquire));
        let max = self.settings.entries_per_pass_max;
        let Some(entries) = entries_after(&self.engine, read, max)? else {
            self.rebuild()?;
            return Ok(true);
        };
        let Some(last) = entries.last().map(|e| e.lsn) else {
            return Ok(false);
        };
        let state = self.engine.state();
        let (orders, moved) = changes(state, &entries);
        if let Some(moved) = moved {
            let mut model = self.shared.model.write();
            let products = match moved {
                Moved::Some(products) => products,
                // A category moved or changed: every product placed may be elsewhere.
                Moved::All => model.trending.placed.keys().copied().collect(),
            };
            for product in &products {
                if !model.is_placed(product) {
                    continue;
                }
                let categories =
                    state.product(product).map(|p| placement(state, &p)).unwrap_or_default();
                model.place(*product, categories);
            }
        }
        for order in orders {
            let mut model = self.shared.model.write();
            place(state, &mut model, &order);
            model.fold(&order);
        }
        if self.seen_until.is_some_and(|until| last >= until) {
            self.shared.model.write().forget_folded();
            self.seen_until = None;
        }
        self.shared.read.store(last.0, Ordering::Release);
        self.consumer.advance(last)?;
        Ok(true)
    }
}

impl Folder {
    /// Builds a new model from the state (off the lock) and puts it in place.
    fn rebuild(&mut self) -> Result<()> {
        if self.consumer.is_dropped() {
            self.engine.unregister_consumer(RECOMMENDATIONS_CONSUMER)?;
            self.consumer = self.engine.register_consumer(RECOMMENDATIONS_CONSUMER)?;
        }
        let (model, lsn, seen_until) = build(&self.engine, &self.settings);
        *self.shared.model.write() = model;
        self.seen_until = Some(seen_until);
        self.shared.read.store(lsn.0, Ordering::Release);
        self.consumer.advance(lsn)?;
        self.shared.rebuilds.fetch_add(1, Ordering::AcqRel);
        tracing::info!(lsn = lsn.0, "recommendations rebuilt");
        Ok(())
    }
}

/// Products whose categories may have changed.
enum Moved {
    Some(Vec<ProductId>),
    All,
}

/// The orders the entries' captures paid (as they are in the state), and the products
/// whose categories may have changed.
fn changes(state: &State, entries: &Entries) -> (Vec<PaidOrder>, Option<Moved>) {
    let mut paid = Vec::new();
    let mut moved: Option<Moved> = None;
    for event in entries.iter().flat_map(|e| &e.events) {
        match event {
            Event::Payments(PaymentEvent::PaymentCaptured { order_id, .. }) => paid.push(order_id),
            Event::Payments(PaymentEvent::CallAdvanced(step)) if step.payment.is_some() => {
                paid.push(&step.order_id)
            }
            Event::Catalog(CatalogEvent::ProductCreated(p) | CatalogEvent::ProductUpdated(p)) => {
                match &mut moved {
                    Some(Moved::All) => {}
                    Some(Moved::Some(products)) => products.push(p.id),
                    None => moved = Some(Moved::Some(vec![p.id])),
                }
            }
            Event::Catalog(_) => moved = Some(Moved::All),
            _ => {}
        }
    }
    let orders = paid.into_iter().filter_map(|id| PaidOrder::of(&*state.order(id)?)).collect();
    (orders, moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(n: u8) -> ProductId {
        ProductId::from_seq(u64::from(n))
    }

    /// Folding dedupes orders until the model is told no order comes twice; then it
    /// holds no ids, and every order given counts.
    #[test]
    fn folded_orders_are_remembered_until_let_go() {
        let order = |n: u128| PaidOrder {
            id: OrderId::from_random(n),
            customer_id: None,
            lines: vec![(product(1), 1), (product(2), 1)],
            paid_at: 10,
        };
        let mut model = RecommendationModel::new(RecommendationSettings::default(), 0);
        assert!(model.fold(&order(1)));
        assert!(!model.fold(&order(1)), "the same order again");
        assert_eq!((model.orders(), model.orders_remembered()), (1, 1));
        model.forget_folded();
        assert!(model.fold(&order(2)));
        assert_eq!((model.orders(), model.orders_remembered()), (2, 0));
        let pairs: Vec<_> = model.together[&product(1)].best(1).collect();
        assert_eq!(pairs, [(product(2), 2)]);
    }

    #[test]
    fn a_full_list_lets_a_one_off_partner_go_and_keeps_established_ones() {
        let mut ranked = Ranked::default();
        ranked.add(product(1), 2);
        ranked.add(product(1), 2);
        ranked.add(product(2), 2);
        // Full: 3 takes the place of 2 (seen once).
        ranked.add(product(3), 2);
        let kept: Vec<_> = ranked.best(1).collect();
        assert_eq!(kept, [(product(1), 2), (product(3), 1)]);
        ranked.add(product(3), 2);
        // Full of established partners: 4 is not kept.
        ranked.add(product(4), 2);
        let kept: Vec<_> = ranked.best(1).collect();
        assert_eq!(kept, [(product(1), 2), (product(3), 2)]);
        assert_eq!(ranked.ranked.len(), 2);
    }

    #[test]
    fn a_ranked_list_holds_the_counts_a_map_keeps() {
        // The same adds into `Ranked` and into a map that applies the cap's rule
        // (when full, a new partner replaces the last ranked if it was seen once),
        // compared after every add.
        let in_rank_order = |counts: &HashMap<ProductId, u32>| {
            let mut ranked: Vec<(ProductId, u32)> = counts.iter().map(|(p, c)| (*p, *c)).collect();
            ranked.sort_by_key(|&(p, c)| (Reverse(c), p));
            ranked
        };
        for cap in [3, 8, 500] {
            let mut ranked = Ranked::default();
            let mut counts: HashMap<ProductId, u32> = HashMap::default();
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..5_000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Skewed: low numbers come far more often than high ones.
                let n = ((seed % 40) * (seed >> 40) % 40) as u8;
                let partner = product(n);
                if let Some(count) = counts.get_mut(&partner) {
                    *count += 1;
                } else if counts.len() < cap {
                    counts.insert(partner, 1);
                } else if let Some(&(weakest, 1)) = in_rank_order(&counts).last() {
                    counts.remove(&weakest);
                    counts.insert(partner, 1);
                }
                ranked.add(partner, cap);
                assert_eq!(ranked.best(0).collect::<Vec<_>>(), in_rank_order(&counts), "cap {cap}");
            }
            assert!(ranked.ranked.len() <= cap);
        }
    }

    #[test]
    fn trending_weights_rescale_without_changing_the_decayed_counts() {
        let day = 24 * 3600 * 1000;
        let mut trending = Trending::new(0, day);
        trending.add(product(1), 4, 0);
        trending.add(product(2), 1, day);
        let before: Vec<f64> = trending.best().map(|(_, w)| trending.at(w, 2 * day)).collect();
        assert_eq!(before, [1.0, 0.5]);
        // Far in the future: the weights are rescaled, the counts decay as before.
        let later = 300 * day;
        trending.add(product(3), 1, later);
        let after: Vec<(ProductId, f64)> =
            trending.best().map(|(p, w)| (p, trending.at(w, later))).collect();
        assert_eq!(after[0], (product(3), 1.0));
        assert_eq!(after.len(), 3);
        // Four units 300 days old, and one 299 days old.
        for (i, expected) in [(1, 4.0 * 0.5f64.powi(300)), (2, 0.5f64.powi(299))] {
            assert!((after[i].1 - expected).abs() <= expected * 1e-12, "{after:?}");
        }
    }
}
