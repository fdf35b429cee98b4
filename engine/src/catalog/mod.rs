//! The catalog: products with their variants (each a SKU with a price) and the category
//! tree. A new SKU gets a stock row from inventory.

mod commands;
mod model;

use std::sync::Arc;

use crossbeam_skiplist::SkipMap;
use rkyv::{Archive, Deserialize, Serialize};

pub use commands::*;
pub use model::*;

use crate::domains::State;
use crate::kernel::table::{check_v1, decode_row, persist, Counter, Domain, Index, Row, Table};
use crate::types::*;

const PRODUCTS: &str = "products";
const CATEGORIES: &str = "categories";

persist!(Product, PRODUCTS, |p| p.id.as_str().as_bytes().to_vec());
persist!(Category, CATEGORIES, |c| c.id.as_str().as_bytes().to_vec());

/// The deepest a category tree may be.
pub const CATEGORY_DEPTH_MAX: usize = 16;

/// The catalog's tables in memory.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) products: SkipMap<ProductId, Arc<Product>>,
    pub(crate) handles: Index<String, ProductId>,
    /// The product each sold SKU belongs to, so a cart line needs one lookup.
    pub(crate) skus: Index<Sku, Arc<Product>>,
    pub(crate) categories: SkipMap<CategoryId, Arc<Category>>,
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
            load: |state, bytes| {
                let category: Category = decode_row(bytes, "category")?;
                state.catalog.categories.insert(category.id.clone(), Arc::new(category));
                Ok(())
            },
            check_v1: check_v1::<Category>,
        },
        Table {
            name: PRODUCTS,
            load: |state, bytes| {
                put_product(state, decode_row(bytes, "product")?, &mut Vec::new());
                Ok(())
            },
            check_v1: check_v1::<Product>,
        },
    ],
    counters: |state| vec![&state.catalog.product_seq, &state.catalog.category_seq],
    timers: None,
    verify: None,
};

// In a module of its own so that rkyv's generated types stay private.
mod event {
    use super::*;

    /// The catalog's facts.
    ///
    /// Whole entities are boxed: an archived enum is as large as its largest variant, so
    /// an unboxed `Product` would make every event, a one-line checkout's included, cost
    /// hundreds of bytes of log.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    #[allow(missing_docs)]
    pub enum CatalogEvent {
        CategoryCreated(Box<Category>),
        CategoryUpdated(Box<Category>),
        CategoryDeleted(CategoryId),
        /// A new product; its new SKUs start with no stock.
        ProductCreated(Box<Product>),
        /// The product's new value (archiving included).
        ProductUpdated(Box<Product>),
    }
}
pub use event::CatalogEvent;

pub(crate) fn apply(state: &State, event: &CatalogEvent, _at: TimestampMs, rows: &mut Vec<Row>) {
    match event {
        CatalogEvent::CategoryCreated(category) => {
            state.catalog.category_seq.bump();
            put_category(state, (**category).clone(), rows);
        }
        CatalogEvent::CategoryUpdated(category) => put_category(state, (**category).clone(), rows),
        CatalogEvent::CategoryDeleted(id) => {
            state.catalog.categories.remove(id);
            rows.push(Row::delete(CATEGORIES, id.as_str()));
        }
        CatalogEvent::ProductCreated(product) => {
            state.catalog.product_seq.bump();
            put_product(state, (**product).clone(), rows);
        }
        CatalogEvent::ProductUpdated(product) => put_product(state, (**product).clone(), rows),
    }
}

fn put_category(state: &State, category: Category, rows: &mut Vec<Row>) {
    let category = Arc::new(category);
    state.catalog.categories.insert(category.id.clone(), category.clone());
    rows.push(Row::put(category));
}

/// Publishes a product and keeps its indexes (handle, SKUs); a SKU new to the catalog
/// gets an empty stock row.
fn put_product(state: &State, product: Product, rows: &mut Vec<Row>) {
    let catalog = &state.catalog;
    let product = Arc::new(product);
    if let Some(previous) = state.product(&product.id) {
        if previous.handle != product.handle {
            catalog.handles.remove(&previous.handle);
        }
        for dropped in previous.variants.iter().filter(|v| product.variant(&v.sku).is_none()) {
            catalog.skus.remove(&dropped.sku);
            crate::inventory::drop_stock(state, &dropped.sku, rows);
        }
    }
    catalog.handles.insert(product.handle.clone(), product.id.clone());
    for variant in &product.variants {
        catalog.skus.insert(variant.sku.clone(), product.clone());
        crate::inventory::ensure_stock(state, &variant.sku, rows);
    }
    catalog.products.insert(product.id.clone(), product.clone());
    rows.push(Row::put(product));
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
        let range =
            self.catalog.products.range::<ProductId, _>((start, std::ops::Bound::Unbounded));
        let items = range.map(|e| e.value().clone()).filter(|p| matches(p));
        Page::of(items, limit, |p| p.id.to_string())
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
        let categories = &self.catalog.categories;
        let mut out = vec![id.clone()];
        let mut index = 0;
        while index < out.len() && out.len() <= categories.len() {
            let parent = out[index].clone();
            out.extend(
                categories
                    .iter()
                    .filter(|e| e.value().parent_id.as_ref() == Some(&parent))
                    .map(|e| e.key().clone()),
            );
            index += 1;
        }
        out
    }
}
