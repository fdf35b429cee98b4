//! Product search, derived from the log.
//!
//! [`ProductSearch`] keeps an [`emporium_search::SearchIndex`] in step with the
//! catalog: a thread registered as the log consumer `search` (so retention keeps what
//! it has not read) tails the durable log, finds the products each entry touches — the
//! product itself, the product of a SKU whose stock moved, every product when a
//! category changed — and writes their current documents (active products) or
//! deletions (the others), skipping a document the index already holds as it is. A
//! pass that wrote a document commits the index with the last LSN it read, then
//! advances the consumer; a pass that wrote none commits at most every 5 s. A restart
//! resumes from the index's own committed position. An
//! index that is missing, of another format, behind the log's retention, or ahead of
//! the durable log (a crash lost what it had seen) is rebuilt from the state.
//!
//! A product is searchable, and a stock change that flips `in_stock` is visible,
//! within [`SearchSettings::refresh_interval_ms`] plus one pass of the acknowledged
//! write.
//!
//! ```
//! use emporium_engine::{Engine, EngineConfig, ProductSearch, SearchQuery, SearchSettings};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
//! let search = ProductSearch::start(&engine, SearchSettings::in_memory()).unwrap();
//! let found = search.search(&SearchQuery { text: "lamp".into(), ..SearchQuery::default() }).unwrap();
//! assert_eq!(found.total, 0);
//! search.stop();
//! engine.close();
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_search::SearchIndex;
pub use emporium_search::{
    FacetCounts, FacetRequest, Hit, PriceBucket, ProductDoc, SearchConfig, SearchError,
    SearchQuery, SearchResults, Sort, Suggestion, PAGE_LIMIT_MAX, PRICE_BUCKETS, QUERY_CHARS_MAX,
    RESULT_WINDOW_MAX,
};

use crate::catalog::CatalogEvent;
use crate::domains::{Event, State};
use crate::error::{EngineError, Result};
use crate::flash_sales::FlashSaleEvent;
use crate::follower::{entries_after, Entries, Follow, Follower};
use crate::inventory::InventoryEvent;
use crate::kernel::runtime::{Engine, LogConsumer};
use crate::orders::OrderEvent;
use crate::payments::PaymentEvent;
use crate::returns::ReturnEvent;
use crate::reviews::ReviewEvent;
use crate::types::{Lsn, OrderId, ProductId, Sku};
use crate::{Product, ProductStatus};

/// How long the index's committed position may trail what the indexer read when no
/// document changed (the log is kept from that position on).
const POSITION_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Segments the index may hold before the indexer, when idle, merges the newer ones.
const SEGMENTS_MAX: usize = 8;
/// Once no document has been written for [`QUIET`], the newer segments are merged as
/// soon as there are more than this: a query walks every segment (its term
/// dictionaries, its scorers, its collectors), and a catalog that has settled, after an
/// import say, is searched far more often than it changes.
const QUIET_SEGMENTS_MAX: usize = 2;
/// How long without a document written counts as quiet.
const QUIET: Duration = Duration::from_secs(1);
/// The least time between two merges started for quiet: each rewrites every document
/// written since the largest segment, so writes spaced just over [`QUIET`] apart must
/// not set one off each time.
const QUIET_MERGE_INTERVAL: Duration = Duration::from_secs(30);

/// The log consumer name the indexer registers.
pub const SEARCH_CONSUMER: &str = "search";

/// Where the index lives and how fresh it is kept.
#[derive(Clone, Debug)]
pub struct SearchSettings {
    /// The index's directory; `None` keeps it in memory (rebuilt at every start).
    pub dir: Option<PathBuf>,
    /// Synonym groups (see [`SearchConfig::synonyms`]).
    pub synonyms: Vec<Vec<String>>,
    /// How often the indexer looks for new log entries; a write is searchable within
    /// about this long of being acknowledged.
    pub refresh_interval_ms: u64,
    /// Log entries read per pass at most.
    pub entries_per_pass_max: usize,
}

impl SearchSettings {
    /// An index in `dir`, refreshed every 100 ms.
    pub fn in_dir(dir: impl Into<PathBuf>) -> SearchSettings {
        SearchSettings { dir: Some(dir.into()), ..SearchSettings::in_memory() }
    }

    /// An index in memory, refreshed every 100 ms.
    pub fn in_memory() -> SearchSettings {
        SearchSettings {
            dir: None,
            synonyms: Vec::new(),
            refresh_interval_ms: 100,
            entries_per_pass_max: 4096,
        }
    }
}

/// What [`ProductSearch::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchStatus {
    /// The log position the index reflects (committed).
    pub applied_lsn: Lsn,
    /// The last log position the indexer has read and applied to the index's
    /// documents; the commit of a pass that changed no document may trail it by up to
    /// 5 s.
    pub read_lsn: Lsn,
    /// Products searchable.
    pub products: u64,
    /// Full rebuilds since the start (1 when it started from nothing).
    pub rebuilds: u64,
    /// Documents (and deletions) written since the start; one unchanged is not.
    pub documents_written: u64,
    /// Segments searchable: each commit that wrote documents adds one; the indexer
    /// merges the newer ones past 8, and past 2 once no document was written for a
    /// second (at most every 30 s).
    pub segments: usize,
    /// Why the indexer stopped, if it did.
    pub failure: Option<String>,
}

struct Shared {
    index: SearchIndex,
    rebuilds: std::sync::atomic::AtomicU64,
    written: std::sync::atomic::AtomicU64,
    /// The last LSN the indexer read (the index's committed position may trail it).
    read: std::sync::atomic::AtomicU64,
    /// The thread merging segments, if one was started: merges run beside the
    /// indexer, so a write stays searchable within the refresh interval during one.
    merge: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The product search of an engine: an index and the thread that keeps it current.
/// Stop it with [`ProductSearch::stop`] (dropping it does too) before closing the
/// engine.
pub struct ProductSearch {
    shared: Arc<Shared>,
    follower: Follower,
}

impl std::fmt::Debug for ProductSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductSearch").field("status", &self.status()).finish()
    }
}

fn index_error(e: SearchError) -> EngineError {
    match e {
        SearchError::InvalidQuery(message) => EngineError::field("q", message),
        SearchError::Index(message) => EngineError::Unavailable(format!("search index: {message}")),
    }
}

impl ProductSearch {
    /// Opens (or creates) the index, brings it up to the durable log — rebuilding it
    /// when it cannot resume — and starts the thread that keeps it there.
    pub fn start(engine: &Engine, settings: SearchSettings) -> Result<ProductSearch> {
        let config = SearchConfig { synonyms: settings.synonyms.clone() };
        let index = match &settings.dir {
            Some(dir) => SearchIndex::open(dir, config),
            None => SearchIndex::in_memory(config),
        }
        .map_err(index_error)?;
        let shared = Arc::new(Shared {
            read: index.applied_lsn().into(),
            index,
            rebuilds: 0.into(),
            written: 0.into(),
            merge: parking_lot::Mutex::new(None),
        });
        let mut indexer = Indexer {
            engine: engine.clone(),
            consumer: engine.register_consumer(SEARCH_CONSUMER)?,
            shared: shared.clone(),
            settings,
            indexed: HashMap::new(),
            changed: false,
            committed_at: Instant::now(),
            written_at: Instant::now(),
            quiet_merged_at: None,
        };
        indexer.catch_up()?;
        let interval = Duration::from_millis(indexer.settings.refresh_interval_ms.max(1));
        let follower = Follower::spawn("emporium-search", engine, interval, indexer)?;
        Ok(ProductSearch { shared, follower })
    }

    /// Runs a search. A query past a limit fails with
    /// [`EngineError::Validation`] naming `q`.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults> {
        self.shared.index.search(query).map_err(index_error)
    }

    /// Completions of what the shopper is typing.
    pub fn suggest(&self, prefix: &str, limit: usize) -> Result<Vec<Suggestion>> {
        self.shared.index.suggest(prefix, limit).map_err(index_error)
    }

    /// Where the index is.
    pub fn status(&self) -> SearchStatus {
        SearchStatus {
            applied_lsn: Lsn(self.shared.index.applied_lsn()),
            read_lsn: Lsn(self.shared.read.load(Ordering::Acquire)),
            products: self.shared.index.doc_count(),
            rebuilds: self.shared.rebuilds.load(Ordering::Acquire),
            documents_written: self.shared.written.load(Ordering::Acquire),
            segments: self.shared.index.segment_count(),
            failure: self.follower.failure(),
        }
    }

    /// Stops the indexer thread and waits for it (the index stays as last committed;
    /// searches still answer from it). Idempotent; dropping it stops it too.
    pub fn stop(&self) {
        self.follower.stop();
        if let Some(merge) = self.shared.merge.lock().take() {
            let _ = merge.join();
        }
    }
}

impl Drop for ProductSearch {
    /// Waits for a merge in progress too, so that the index's directory is free (its
    /// writer's lock released) once the search is gone.
    fn drop(&mut self) {
        self.stop();
    }
}

struct Indexer {
    engine: Engine,
    consumer: LogConsumer,
    shared: Arc<Shared>,
    settings: SearchSettings,
    /// What the index holds of each product this run has written: its document's
    /// fingerprint, or `None` for a deletion. A document unchanged is not written again.
    indexed: HashMap<ProductId, Option<u64>>,
    /// Whether a document was written since the last commit.
    changed: bool,
    committed_at: Instant,
    /// When a document was last written.
    written_at: Instant,
    /// When the last merge for quiet was started.
    quiet_merged_at: Option<Instant>,
}

impl Follow for Indexer {
    /// A pass, and once no document has been written for a while, the merge of the
    /// small segments (searches and other writes may keep the log busy without a pass
    /// ever finding it idle).
    fn pass(&mut self) -> Result<bool> {
        let found = self.catch_up()?;
        let spaced = self.quiet_merged_at.is_none_or(|at| at.elapsed() >= QUIET_MERGE_INTERVAL);
        if self.written_at.elapsed() >= QUIET && spaced && self.merge_segments(QUIET_SEGMENTS_MAX) {
            self.quiet_merged_at = Some(Instant::now());
        }
        Ok(found)
    }

    /// Idle: folds the small segments of the last passes together.
    fn idle(&mut self) {
        self.merge_segments(SEGMENTS_MAX);
    }
}

impl Indexer {
    /// Merges the newer segments when there are more than `limit`, on a thread of its
    /// own (one at a time). Whether it started a merge.
    fn merge_segments(&mut self, limit: usize) -> bool {
        let mut merge = self.shared.merge.lock();
        if merge.as_ref().is_some_and(|m| !m.is_finished()) {
            return false;
        }
        if let Some(done) = merge.take() {
            let _ = done.join();
        }
        if self.shared.index.segment_count() <= limit {
            return false;
        }
        let shared = self.shared.clone();
        let merging =
            std::thread::Builder::new().name("emporium-search-merge".into()).spawn(move || {
                if let Err(e) = shared.index.compact(limit) {
                    tracing::warn!(error = %e, "search index compaction failed");
                }
            });
        match merging {
            Ok(handle) => {
                *merge = Some(handle);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start a search index merge");
                false
            }
        }
    }
}

impl Indexer {
    /// One pass: rebuilds if the index cannot resume, else applies the log entries
    /// after its position. Whether it found entries.
    fn catch_up(&mut self) -> Result<bool> {
        let index = &self.shared.index;
        let durable = self.engine.durable_lsn().0;
        let applied = index.applied_lsn();
        if index.created() && self.shared.rebuilds.load(Ordering::Acquire) == 0
            || applied > durable
            || self.consumer.is_dropped()
        {
            self.rebuild()?;
            return Ok(true);
        }
        let read = self.shared.read.load(Ordering::Acquire);
        let from = read.max(applied);
        if from >= durable {
            // Idle with a position read but not committed: commit it in its time, so
            // the log behind it is not held for the consumer while nothing happens.
            if read > applied && self.committed_at.elapsed() >= POSITION_COMMIT_INTERVAL {
                self.commit(Lsn(read))?;
            }
            return Ok(false);
        }
        let max = self.settings.entries_per_pass_max;
        let Some(entries) = entries_after(&self.engine, Lsn(from), max)? else {
            self.rebuild()?;
            return Ok(true);
        };
        let Some(last) = entries.last().map(|e| e.lsn) else {
            return Ok(false);
        };
        let engine = self.engine.clone();
        let state = engine.state();
        match touched(state, &entries) {
            Touched::All => self.index_all(state)?,
            Touched::Some(products) => {
                for id in products {
                    self.index_product(state, &id, state.product(&id).as_deref())?;
                }
            }
        }
        self.shared.read.store(last.0, Ordering::Release);
        // A pass that changed no document (stock moved but not across zero, an order
        // of a product whose document is as it was) commits only now and then: the
        // position alone is not worth a commit per pass.
        if self.changed || self.committed_at.elapsed() >= POSITION_COMMIT_INTERVAL {
            self.commit(last)?;
        }
        Ok(true)
    }

    /// Commits the index at `lsn` and lets the log go up to it.
    fn commit(&mut self, lsn: Lsn) -> Result<()> {
        self.shared.index.commit(lsn.0).map_err(index_error)?;
        self.consumer.advance(lsn)?;
        self.changed = false;
        self.committed_at = Instant::now();
        Ok(())
    }

    /// Indexes every product from the state, at the durable LSN read before it (the
    /// entries after it are applied again on the next pass: indexing is idempotent).
    fn rebuild(&mut self) -> Result<()> {
        if self.consumer.is_dropped() {
            self.engine.unregister_consumer(SEARCH_CONSUMER)?;
            self.consumer = self.engine.register_consumer(SEARCH_CONSUMER)?;
        }
        let durable = self.engine.durable_lsn();
        self.shared.index.clear().map_err(index_error)?;
        self.indexed.clear();
        let engine = self.engine.clone();
        self.index_all(engine.state())?;
        self.commit(durable)?;
        self.shared.read.store(durable.0, Ordering::Release);
        self.shared.rebuilds.fetch_add(1, Ordering::AcqRel);
        let products = self.shared.index.doc_count();
        tracing::info!(lsn = durable.0, products, "search index rebuilt");
        Ok(())
    }

    fn index_all(&mut self, state: &State) -> Result<()> {
        for entry in state.catalog.products.iter() {
            self.index_product(state, entry.key(), Some(&**entry.value()))?;
        }
        Ok(())
    }

    /// Writes the product's document, or its deletion, unless the index already has
    /// exactly that.
    fn index_product(
        &mut self,
        state: &State,
        id: &ProductId,
        product: Option<&Product>,
    ) -> Result<()> {
        let index = &self.shared.index;
        let doc = product.filter(|p| p.status == ProductStatus::Active).map(|p| document(state, p));
        let print = doc.as_ref().map(fingerprint);
        if self.indexed.get(id).copied() == Some(print) {
            return Ok(());
        }
        match &doc {
            Some(doc) => index.upsert(doc),
            None => index.delete(&id.text()),
        }
        .map_err(index_error)?;
        self.indexed.insert(*id, print);
        self.changed = true;
        self.written_at = Instant::now();
        self.shared.written.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// The products a run of log entries touched.
enum Touched {
    All,
    Some(BTreeSet<ProductId>),
}

fn touched(state: &State, entries: &Entries) -> Touched {
    let mut products = BTreeSet::new();
    let mut skus: BTreeSet<Sku> = BTreeSet::new();
    let order_skus = |skus: &mut BTreeSet<Sku>, id: &OrderId| {
        if let Some(order) = state.order(id) {
            skus.extend(order.lines.iter().map(|l| l.sku.clone()));
        }
    };
    for event in entries.iter().flat_map(|e| &e.events) {
        match event {
            Event::Catalog(CatalogEvent::ProductCreated(p) | CatalogEvent::ProductUpdated(p)) => {
                products.insert(p.id);
            }
            // A category's name or place changes the paths of the products under it.
            Event::Catalog(_) => return Touched::All,
            Event::Inventory(
                InventoryEvent::StockSet { sku, .. } | InventoryEvent::StockAdjusted { sku, .. },
            ) => {
                skus.insert(sku.clone());
            }
            Event::Inventory(InventoryEvent::LocationStockSet(count)) => {
                skus.insert(count.sku.clone());
            }
            Event::Inventory(InventoryEvent::LocationStockAdjusted(adjustment)) => {
                skus.insert(adjustment.sku.clone());
            }
            // A review published, edited or taken down may change the rating.
            Event::Reviews(ReviewEvent::Saved(review)) => {
                products.insert(review.product_id);
            }
            Event::Reviews(ReviewEvent::Moderated(moderation)) => {
                products.insert(moderation.product_id);
            }
            Event::Orders(OrderEvent::Placed(placed)) => {
                skus.extend(placed.lines.iter().map(|l| l.sku.clone()));
            }
            Event::Orders(
                OrderEvent::Cancelled { order_id }
                | OrderEvent::Expired { order_id }
                | OrderEvent::Fulfilled { order_id },
            )
            | Event::Payments(PaymentEvent::PaymentCaptured { order_id, .. }) => {
                order_skus(&mut skus, order_id)
            }
            // A capture through a provider ships the order's units.
            Event::Payments(PaymentEvent::CallAdvanced(step)) => {
                if step.payment.is_some() {
                    order_skus(&mut skus, &step.order_id)
                }
            }
            // Received units may go back in stock.
            Event::Returns(ReturnEvent::Received(receipt)) => {
                skus.extend(receipt.restocked.iter().cloned());
            }
            Event::FlashSales(event) => {
                let sale = match event {
                    FlashSaleEvent::Created(new) => {
                        skus.insert(new.sku.clone());
                        continue;
                    }
                    FlashSaleEvent::Started { sale_id }
                    | FlashSaleEvent::Ended { sale_id }
                    | FlashSaleEvent::Cancelled { sale_id } => sale_id,
                    FlashSaleEvent::Purchased(purchase) => &purchase.sale_id,
                };
                if let Some(sale) = state.flash_sale(sale) {
                    skus.insert(sale.sku.clone());
                }
            }
            // A refund changes money, not stock; a transfer moves units, not their total.
            Event::Payments(PaymentEvent::Refunded { .. } | PaymentEvent::CallStarted { .. })
            | Event::Inventory(
                InventoryEvent::Transferred { .. }
                | InventoryEvent::LocationSaved(_)
                | InventoryEvent::LocationDeleted { .. },
            )
            | Event::Promotions(_)
            | Event::Shipping(_)
            | Event::Reviews(ReviewEvent::Voted { .. } | ReviewEvent::SettingsSet(_))
            | Event::Returns(ReturnEvent::Requested(_) | ReturnEvent::Decided(_))
            | Event::Carts(_)
            | Event::Webhooks(_)
            | Event::Notifications(_)
            | Event::Accounts(_)
            | Event::Idempotency(_) => {}
        }
    }
    products.extend(skus.iter().filter_map(|sku| state.product_by_sku(sku)).map(|p| p.id));
    Touched::Some(products)
}

/// The document of an active product, as the state has it now.
fn document(state: &State, product: &Product) -> ProductDoc {
    let mut categories = BTreeSet::new();
    for id in &product.category_ids {
        // The category and its ancestors; the depth bound guards against a cycle.
        let mut next = Some(*id);
        for _ in 0..64 {
            let Some(id) = next else { break };
            if !categories.insert(id.text().to_string()) {
                break;
            }
            next = state.category(&id).and_then(|c| c.parent_id);
        }
    }
    let cheapest = product.variants.iter().min_by_key(|v| v.price.amount());
    ProductDoc {
        id: product.id.text().to_string(),
        title: product.title.clone(),
        description: product.description.clone(),
        brand: product.brand.clone(),
        categories: categories.into_iter().collect(),
        attributes: attributes(&product.attributes),
        skus: product.variants.iter().map(|v| v.sku.to_string()).collect(),
        price: cheapest.map_or(0, |v| v.price.amount()),
        currency: cheapest.map_or_else(String::new, |v| v.price.currency().to_string()),
        rating: state.rating(&product.id).average(),
        in_stock: product
            .variants
            .iter()
            .any(|v| state.stock(&v.sku).is_some_and(|s| s.available() > 0)),
        created_at: product.created_at,
    }
}

/// A hash of every field of a document.
fn fingerprint(doc: &ProductDoc) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&doc.id, &doc.title, &doc.description, &doc.brand, &doc.categories).hash(&mut hasher);
    (&doc.attributes, &doc.skus, doc.price, &doc.currency).hash(&mut hasher);
    (doc.rating.to_bits(), doc.in_stock, doc.created_at).hash(&mut hasher);
    hasher.finish()
}

fn attributes(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
