//! The catalog: products with their variants (each a SKU with a price) and the category
//! tree. A new SKU gets a stock row from inventory.

mod commands;
mod model;

use std::sync::Arc;

use crossbeam_skiplist::{SkipMap, SkipSet};
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::domains::State;
use crate::kernel::table::{
    check_v1, decode_row, persist, Counter, Domain, Index, Row, StaffKeyIndex, Table,
};
use crate::types::*;

const PRODUCTS: &str = "products";
const CATEGORIES: &str = "categories";

persist!(Product, PRODUCTS, |p| p.id.text().as_str().as_bytes().to_vec());
persist!(Category, CATEGORIES, |c| c.id.text().as_str().as_bytes().to_vec());

/// The deepest a category tree may be.
pub const CATEGORY_DEPTH_MAX: usize = 16;

/// The catalog's tables in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) products: SkipMap<ProductId, Arc<Product>>,
    pub(crate) handles: StaffKeyIndex<String, ProductId>,
    /// The product each sold SKU belongs to, so a cart line needs one lookup.
    pub(crate) skus: StaffKeyIndex<Sku, Arc<Product>>,
    pub(crate) categories: SkipMap<CategoryId, Arc<Category>>,
    /// `(parent, child)` of every category with a parent: a subtree is walked in its
    /// own size, not the whole tree's for each level.
    pub(crate) children: SkipSet<(CategoryId, CategoryId)>,
    /// `(category, product)` for every listing: a category's products (and whether it
    /// has any) without a scan of the catalog.
    pub(crate) by_category: SkipSet<(CategoryId, ProductId)>,
    /// `(status, product)`: a status filter walks only its own products.
    pub(crate) by_status: SkipSet<(u8, ProductId)>,
    /// The highest numeric suffix used after each derived-handle base (`blue-shirt-7`),
    /// so deriving the next free one does not probe every earlier one.
    pub(crate) handle_suffixes: StaffKeyIndex<String, u64>,
    pub(crate) product_seq: Counter,
    pub(crate) category_seq: Counter,
}

impl Default for Tables {
    fn default() -> Tables {
        Tables {
            products: SkipMap::new(),
            handles: Index::default(),
            skus: Index::default(),
            categories: SkipMap::new(),
            children: SkipSet::new(),
            by_category: SkipSet::new(),
            by_status: SkipSet::new(),
            handle_suffixes: Index::default(),
            product_seq: Counter::new("product"),
            category_seq: Counter::new("category"),
        }
    }
}

pub(crate) const DOMAIN: Domain = Domain {
    name: "catalog",
    tables: &[
        Table {
            name: CATEGORIES,
            rows: |s, f| s.catalog.categories.iter().for_each(|e| f(&**e.value())),
            load: |state, bytes| {
                put_category(state, Arc::new(decode_row(bytes, "category")?), &mut Vec::new());
                Ok(())
            },
            check_v1: check_v1::<Category>,
            load_in_parallel: false,
            skip_list: false,
            reserve: None,
        },
        Table {
            name: PRODUCTS,
            rows: |s, f| s.catalog.products.iter().for_each(|e| f(&**e.value())),
            load: |state, bytes| {
                put_product(state, Arc::new(decode_row(bytes, "product")?), &mut Vec::new());
                Ok(())
            },
            check_v1: check_v1::<Product>,
            load_in_parallel: false,
            skip_list: false,
            // A product has at least one SKU, each with its stock cell.
            reserve: Some(|state, rows| {
                state.catalog.handles.reserve(rows);
                state.catalog.skus.reserve(rows);
                state.inventory.stock.reserve(rows);
            }),
        },
    ],
    counters: |state, each| {
        each(&state.catalog.product_seq);
        each(&state.catalog.category_seq);
    },
    timers: None,
    verify: None,
    written: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The catalog's facts.
    ///
    /// Whole entities are behind a pointer: an archived enum is as large as its largest
    /// variant, so an inline `Product` would make every event, a one-line checkout's
    /// included, cost hundreds of bytes of log. The pointer is shared with the table the
    /// event is applied to, so applying it copies no strings; it is archived as a box
    /// ([`ArcAsBox`]), the layout of the logs written when the events held `Box`es.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum CatalogEvent {
        CategoryCreated(#[rkyv(with = ArcAsBox)] Arc<Category>),
        CategoryUpdated(#[rkyv(with = ArcAsBox)] Arc<Category>),
        CategoryDeleted(CategoryId),
        /// A new product; its new SKUs start with no stock.
        ProductCreated(#[rkyv(with = ArcAsBox)] Arc<Product>),
        /// The product's new value (archiving included).
        ProductUpdated(#[rkyv(with = ArcAsBox)] Arc<Product>),
    }
}
pub use event::CatalogEvent;

pub(crate) fn apply(state: &State, event: &CatalogEvent, _at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        CatalogEvent::CategoryCreated(category) => {
            state.catalog.category_seq.bump();
            put_category(state, category.clone(), rows);
        }
        CatalogEvent::CategoryUpdated(category) => put_category(state, category.clone(), rows),
        CatalogEvent::CategoryDeleted(id) => {
            if let Some(entry) = state.catalog.categories.remove(id) {
                if let Some(parent) = &entry.value().parent_id {
                    state.catalog.children.remove(&(*parent, *id));
                }
            }
            rows.push(Row::delete(CATEGORIES, id.text().as_str()));
        }
        CatalogEvent::ProductCreated(product) => {
            state.catalog.product_seq.bump();
            put_new_product(state, product, rows);
        }
        CatalogEvent::ProductUpdated(product) => put_product(state, product.clone(), rows),
    }
}

fn put_category(state: &State, category: Arc<Category>, rows: &mut Vec<Row>) {
    let catalog = &state.catalog;
    if let Some(previous) = state.category(&category.id) {
        if let Some(parent) = &previous.parent_id {
            catalog.children.remove(&(*parent, category.id));
        }
    }
    if let Some(parent) = &category.parent_id {
        catalog.children.insert((*parent, category.id));
    }
    catalog.categories.insert(category.id, category.clone());
    rows.push(Row::put(category));
}

/// A status's place in the status index.
fn status_key(status: ProductStatus) -> u8 {
    match status {
        ProductStatus::Draft => 0,
        ProductStatus::Active => 1,
        ProductStatus::Archived => 2,
    }
}

/// Notes the numeric suffix of a handle (`base-N`) as used.
fn note_handle(catalog: &Tables, handle: &str) {
    let (base, suffix) = match handle.rsplit_once('-') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (base, n.parse::<u64>().unwrap_or(u64::MAX))
        }
        _ => (handle, 1),
    };
    if catalog.handle_suffixes.get(base).is_none_or(|used| used < suffix) {
        catalog.handle_suffixes.insert(base.to_string(), suffix);
    }
}

/// Publishes a product and keeps its indexes (handle, SKUs); a SKU new to the catalog
/// gets an empty stock row.
fn put_product(state: &State, product: Arc<Product>, rows: &mut Vec<Row>) {
    let catalog = &state.catalog;
    if let Some(previous) = state.product(&product.id) {
        if previous.handle != product.handle {
            catalog.handles.remove(&previous.handle);
        }
        for category in &previous.category_ids {
            catalog.by_category.remove(&(*category, product.id));
        }
        catalog.by_status.remove(&(status_key(previous.status), product.id));
        for dropped in previous.variants.iter().filter(|v| product.variant(&v.sku).is_none()) {
            catalog.skus.remove(&dropped.sku);
            crate::inventory::drop_stock(state, &dropped.sku, rows);
        }
    }
    index_product(state, &product, rows);
    catalog.products.insert(product.id, product.clone());
    rows.push(Row::put(product));
}

/// [`put_product`] of a product under a new id: no earlier value to take out of the
/// indexes, so it is published with one search of the product map, not a lookup and
/// an insert. Should the id be taken after all, the product replaces the one there.
fn put_new_product(state: &State, product: &Arc<Product>, rows: &mut Vec<Row>) {
    index_product(state, product, rows);
    let published = state.catalog.products.get_or_insert(product.id, product.clone());
    if Arc::ptr_eq(published.value(), product) {
        rows.push(Row::put(product.clone()));
    } else {
        put_product(state, product.clone(), rows);
    }
}

/// Lists `product` in the catalog's indexes, its SKUs' stock rows included.
fn index_product(state: &State, product: &Arc<Product>, rows: &mut Vec<Row>) {
    let catalog = &state.catalog;
    catalog.handles.insert(product.handle.clone(), product.id);
    note_handle(catalog, &product.handle);
    for category in &product.category_ids {
        catalog.by_category.insert((*category, product.id));
    }
    catalog.by_status.insert((status_key(product.status), product.id));
    for variant in &product.variants {
        catalog.skus.insert(variant.sku.clone(), product.clone());
        crate::inventory::ensure_stock(state, &variant.sku, rows);
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

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass this as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The first `limit` items, and the cursor of the last when more follow.
    pub(crate) fn of(
        items: impl Iterator<Item = T>,
        limit: usize,
        cursor: impl Fn(&T) -> String,
    ) -> Page<T> {
        let mut items: Vec<T> = items.take(limit.saturating_add(1)).collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(&cursor)
        } else {
            None
        };
        Page { items, next }
    }
}

/// The title of a line: the product's, with the variant's after a dash.
pub(crate) fn line_title(product: Option<&Product>, variant: Option<&Variant>) -> String {
    match (product, variant) {
        (Some(p), Some(v)) if !v.title.is_empty() => format!("{} - {}", p.title, v.title),
        (Some(p), _) => p.title.clone(),
        _ => String::new(),
    }
}

/// The catalog's reads.
impl State {
    /// A product by id.
    pub fn product(&self, id: &ProductId) -> Option<Arc<Product>> {
        self.catalog.products.get(id).map(|e| e.value().clone())
    }

    /// A product by handle.
    pub fn product_by_handle(&self, handle: &str) -> Option<Arc<Product>> {
        self.catalog.handles.get(handle).and_then(|id| self.product(&id))
    }

    /// The product that has the variant `sku`.
    pub fn product_by_sku(&self, sku: &Sku) -> Option<Arc<Product>> {
        self.catalog.skus.get(sku)
    }

    /// How many products there are.
    pub fn product_count(&self) -> usize {
        self.catalog.products.len()
    }

    /// Products in id order (creation order) after the id `after`, filtered.
    pub fn products(
        &self,
        filter: &ProductFilter,
        after: Option<&ProductId>,
        limit: usize,
    ) -> Page<Arc<Product>> {
        let catalog = &self.catalog;
        // Ids are zero-padded sequences: `from_seq(0)` sorts before every real one.
        let from = after.cloned().unwrap_or_else(|| ProductId::from_seq(0));
        let after_cursor = move |id: &ProductId| after.is_none_or(|a| id > a);
        let status_ok = |p: &Arc<Product>| filter.status.is_none_or(|s| p.status == s);
        let page = |ids: &mut dyn Iterator<Item = ProductId>| {
            let items = ids.filter_map(|id| self.product(&id)).filter(status_ok);
            Page::of(items, limit, |p| p.id.to_string())
        };
        match (&filter.category_id, filter.status) {
            // A category (and its subtree): merge the ordered id lists of its categories,
            // each walked from the cursor on; the catalog outside it is never visited.
            (Some(category), _) => {
                let categories = self.descendants(category);
                let mut lists: Vec<_> = categories
                    .iter()
                    .map(|c| {
                        catalog
                            .by_category
                            .range((*c, from)..)
                            .take_while(move |e| &e.value().0 == c)
                            .map(|e| e.value().1)
                            .filter(after_cursor)
                    })
                    .collect();
                let mut heads = std::collections::BinaryHeap::new();
                for (i, list) in lists.iter_mut().enumerate() {
                    if let Some(id) = list.next() {
                        heads.push(std::cmp::Reverse((id, i)));
                    }
                }
                let mut last: Option<ProductId> = None;
                let mut merged = std::iter::from_fn(|| loop {
                    let std::cmp::Reverse((id, i)) = heads.pop()?;
                    if let Some(next) = lists[i].next() {
                        heads.push(std::cmp::Reverse((next, i)));
                    }
                    // A product listed in two of the categories comes once.
                    if last.as_ref() != Some(&id) {
                        last = Some(id);
                        return Some(id);
                    }
                });
                page(&mut merged)
            }
            (None, Some(status)) => {
                let key = status_key(status);
                let mut ids = catalog
                    .by_status
                    .range((key, from)..)
                    .take_while(|e| e.value().0 == key)
                    .map(|e| e.value().1)
                    .filter(after_cursor);
                page(&mut ids)
            }
            (None, None) => {
                let start = match after {
                    Some(after) => std::ops::Bound::Excluded(after),
                    None => std::ops::Bound::Unbounded,
                };
                let range =
                    catalog.products.range::<ProductId, _>((start, std::ops::Bound::Unbounded));
                Page::of(range.map(|e| e.value().clone()), limit, |p| p.id.to_string())
            }
        }
    }

    /// A category by id.
    pub fn category(&self, id: &CategoryId) -> Option<Arc<Category>> {
        self.catalog.categories.get(id).map(|e| e.value().clone())
    }

    /// Every category, in id order.
    pub fn categories(&self) -> Vec<Arc<Category>> {
        self.catalog.categories.iter().map(|e| e.value().clone()).collect()
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
        let mut out = vec![*id];
        let mut index = 0;
        // The tree has no cycles (decide refuses them); the bound guards a reader racing
        // a move.
        while index < out.len() && out.len() <= self.catalog.categories.len() {
            let children = self.children(&out[index]);
            out.extend(children);
            index += 1;
        }
        out
    }

    /// The categories directly below `id`, in id order.
    pub fn children(&self, id: &CategoryId) -> Vec<CategoryId> {
        self.catalog
            .children
            .range((*id, CategoryId::from_seq(0))..)
            .take_while(|e| &e.value().0 == id)
            .map(|e| e.value().1)
            .collect()
    }

    /// Whether any product is listed in category `id` (not counting subcategories).
    pub fn category_has_products(&self, id: &CategoryId) -> bool {
        self.catalog
            .by_category
            .range((*id, ProductId::from_seq(0))..)
            .next()
            .is_some_and(|e| &e.value().0 == id)
    }
}
