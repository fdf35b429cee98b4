//! The catalog's commands and their rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{CatalogEvent, Category, Product, ProductStatus, Rating, Variant, CATEGORY_DEPTH_MAX};
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{check_version, done, not_found, Ctx, Decision, Request, APPLIED};
use crate::types::*;
use crate::validate::{self, Checks};

/// A price as received: minor units and an ISO 4217 code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoneyInput {
    /// Minor units (cents).
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
}

impl MoneyInput {
    /// The money it names, or `None` with the reason recorded under `field`.
    pub(crate) fn checked(&self, checks: &mut Checks, field: &str) -> Option<Money> {
        let currency =
            Currency::new(&self.currency).map_err(|e| checks.push(e.under(field))).ok()?;
        Money::new(self.amount, currency).map_err(|e| checks.push(e.under(field))).ok()
    }
}

/// A variant as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantInput {
    /// The SKU, unique across the catalog.
    pub sku: String,
    /// The variant's title.
    pub title: String,
    /// Its options (`size: M`).
    pub options: BTreeMap<String, String>,
    /// Its price.
    pub price: MoneyInput,
}

/// Creates a category.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateCategory {
    /// The name, 1–100 characters.
    pub name: String,
    /// The parent category, or `None` for a root.
    pub parent_id: Option<String>,
}

/// Renames or moves a category. A move that would make a cycle is refused.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateCategory {
    /// The category.
    pub id: String,
    /// A new name.
    pub name: Option<String>,
    /// A new parent (`Some(None)` makes it a root).
    pub parent_id: Option<Option<String>>,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Deletes a category that has no children and lists no product.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeleteCategory {
    /// The category.
    pub id: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

/// Creates a product with its variants; each new SKU starts with no stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateProduct {
    /// The handle; derived from the title when `None`.
    pub handle: Option<String>,
    /// The title, 1–200 characters.
    pub title: String,
    /// The description, up to 10,000 characters.
    pub description: String,
    /// The brand, up to 100 characters.
    pub brand: String,
    /// Categories it is listed in (at most 20).
    pub category_ids: Vec<String>,
    /// Attributes (at most 50).
    pub attributes: BTreeMap<String, String>,
    /// Draft (the default) or active.
    pub status: Option<ProductStatus>,
    /// 1–100 variants.
    pub variants: Vec<VariantInput>,
}

/// Changes a product. `None` fields keep their value; `variants` replaces the list (a
/// SKU with reserved units cannot be dropped).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateProduct {
    /// The product.
    pub id: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
    /// A new handle.
    pub handle: Option<String>,
    /// A new title.
    pub title: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// A new brand.
    pub brand: Option<String>,
    /// New categories.
    pub category_ids: Option<Vec<String>>,
    /// New attributes.
    pub attributes: Option<BTreeMap<String, String>>,
    /// A new status.
    pub status: Option<ProductStatus>,
    /// New variants.
    pub variants: Option<Vec<VariantInput>>,
}

/// Archives a product: customers no longer see it or can buy it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ArchiveProduct {
    /// The product.
    pub id: String,
    /// Refuse unless this is the current version.
    pub expected_version: Option<u64>,
}

fn category_named(state: &State, id: &str) -> Result<Arc<Category>> {
    CategoryId::parse(id)
        .and_then(|id| state.category(&id))
        .ok_or_else(|| not_found(EntityKind::Category, id))
}

/// The parent a category may be placed under: it exists, is not the category itself or
/// below it, and leaves the tree no deeper than the limit.
fn check_parent(state: &State, parent: &str, moving: Option<&CategoryId>) -> Result<CategoryId> {
    let parent_id = CategoryId::parse(parent)
        .filter(|id| state.category(id).is_some())
        .ok_or_else(|| EngineError::field("parent_id", "no category has this id"))?;
    let path = state.category_path(&parent_id);
    if let Some(moving) = moving {
        if path.iter().any(|c| &c.id == moving) {
            return Err(EngineError::field(
                "parent_id",
                "a category cannot be placed under itself or one of its descendants",
            ));
        }
    }
    if path.len() >= CATEGORY_DEPTH_MAX {
        return Err(EngineError::field(
            "parent_id",
            format!("the category tree may be at most {CATEGORY_DEPTH_MAX} levels deep"),
        ));
    }
    Ok(parent_id)
}

impl Request for CreateCategory {
    type Output = Arc<Category>;
    type Outcome = CategoryId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<CategoryId>> {
        let c = self;
        let mut checks = Checks::default();
        checks.text("name", &c.name, 1, 100, false);
        done(checks)?;
        let parent_id = c.parent_id.as_deref().map(|p| check_parent(state, p, None)).transpose()?;
        let id = CategoryId::from_seq(state.catalog.category_seq.next());
        let category = Category {
            id,
            name: c.name.clone(),
            parent_id,
            created_at: ctx.now,
            updated_at: ctx.now,
            version: 1,
        };
        Decision::one(id, CatalogEvent::CategoryCreated(Arc::new(category)))
    }

    fn reply(state: &State, outcome: CategoryId) -> Arc<Category> {
        state.category(&outcome).expect(APPLIED)
    }
}

impl Request for UpdateCategory {
    type Output = Arc<Category>;
    type Outcome = CategoryId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<CategoryId>> {
        let c = self;
        let current = category_named(state, &c.id)?;
        check_version(c.expected_version, current.version)?;
        let mut checks = Checks::default();
        if let Some(name) = &c.name {
            checks.text("name", name, 1, 100, false);
        }
        done(checks)?;
        let mut next = (*current).clone();
        if let Some(name) = &c.name {
            next.name = name.clone();
        }
        if let Some(parent) = &c.parent_id {
            next.parent_id =
                parent.as_deref().map(|p| check_parent(state, p, Some(&current.id))).transpose()?;
        }
        next.updated_at = ctx.now;
        next.version += 1;
        Decision::one(next.id, CatalogEvent::CategoryUpdated(Arc::new(next)))
    }

    fn reply(state: &State, outcome: CategoryId) -> Arc<Category> {
        state.category(&outcome).expect(APPLIED)
    }
}

impl Request for DeleteCategory {
    type Output = ();
    type Outcome = ();

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<()>> {
        let c = self;
        let current = category_named(state, &c.id)?;
        check_version(c.expected_version, current.version)?;
        if !state.children(&current.id).is_empty() {
            return Err(EngineError::Conflict("the category has subcategories".into()));
        }
        if state.category_has_products(&current.id) {
            return Err(EngineError::Conflict("products are listed in the category".into()));
        }
        Decision::one((), CatalogEvent::CategoryDeleted(current.id))
    }

    fn reply(_: &State, (): ()) {}
}

// --- products -----------------------------------------------------------------------

/// Checks the fields a create and an update share; returns the parsed categories and
/// variants where given.
fn check_product_fields(
    state: &State,
    checks: &mut Checks,
    fields: ProductFields<'_>,
) -> (Option<Vec<CategoryId>>, Option<Vec<Variant>>) {
    if let Some(title) = fields.title {
        checks.text("title", title, 1, 200, false);
    }
    if let Some(description) = fields.description {
        checks.text("description", description, 0, 10_000, true);
    }
    if let Some(brand) = fields.brand {
        checks.text("brand", brand, 0, 100, false);
    }
    if let Some(attributes) = fields.attributes {
        checks.map("attributes", attributes, 50, 64, 256);
    }
    if let Some(handle) = fields.handle {
        if !validate::is_handle(handle) {
            checks.fail(
                "handle",
                "must be 1-100 lower-case letters and digits in words joined by '-'",
            );
        }
    }
    let categories = fields.category_ids.map(|ids| {
        if ids.len() > 20 {
            checks.fail("category_ids", "must list at most 20 categories");
        }
        let mut parsed: Vec<CategoryId> = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            match CategoryId::parse(id).filter(|id| state.category(id).is_some()) {
                Some(id) if !parsed.contains(&id) => parsed.push(id),
                Some(_) => checks.fail(format!("category_ids[{i}]"), "is listed twice"),
                None => checks.fail(format!("category_ids[{i}]"), "no category has this id"),
            }
        }
        parsed
    });
    let variants = fields.variants.map(|inputs| check_variants(checks, inputs));
    (categories, variants)
}

struct ProductFields<'a> {
    handle: Option<&'a str>,
    title: Option<&'a str>,
    description: Option<&'a str>,
    brand: Option<&'a str>,
    category_ids: Option<&'a [String]>,
    attributes: Option<&'a BTreeMap<String, String>>,
    variants: Option<&'a [VariantInput]>,
}

fn check_variants(checks: &mut Checks, inputs: &[VariantInput]) -> Vec<Variant> {
    if inputs.is_empty() || inputs.len() > 100 {
        checks.fail("variants", "must have 1 to 100 variants");
    }
    let mut variants: Vec<Variant> = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        // Checked under the variant's own field names, which are put under
        // `variants[i]` only if something fails: most variants pass.
        let mut own = Checks::default();
        own.text("title", &input.title, 0, 200, false);
        own.map("options", &input.options, 10, 64, 128);
        let sku = Sku::new(input.sku.as_str()).map_err(|e| own.push(e)).ok();
        let price = input.price.checked(&mut own, "price");
        if let Some(sku) = &sku {
            if variants.iter().any(|v| &v.sku == sku) {
                own.fail("sku", "is used by another variant of this product");
            }
        }
        let passed = own.is_ok();
        let at = || format!("variants[{i}]");
        checks.errors.extend(own.errors.into_iter().map(|e| e.under(&at())));
        if let (Some(sku), Some(price), true) = (sku, price, passed) {
            variants.push(Variant {
                sku,
                title: input.title.clone(),
                options: input.options.clone(),
                price,
            });
        }
    }
    variants
}

/// SKUs already taken by a product other than `owner`.
fn check_skus_free(state: &State, variants: &[Variant], owner: Option<&ProductId>) -> Result<()> {
    for variant in variants {
        if let Some(product) = state.catalog.skus.get(&variant.sku) {
            if Some(&product.id) != owner {
                return Err(EngineError::Conflict(format!(
                    "SKU {} belongs to product {}",
                    variant.sku, product.id
                )));
            }
        }
    }
    Ok(())
}

fn check_handle_free(state: &State, handle: &str, owner: Option<&ProductId>) -> Result<()> {
    match state.catalog.handles.get(handle) {
        Some(id) if Some(&id) != owner => {
            Err(EngineError::Conflict(format!("handle {handle:?} is taken")))
        }
        _ => Ok(()),
    }
}

/// A free handle derived from the title: `blue-shirt`, else the next suffix past the
/// highest in use (`blue-shirt-2`, …).
fn derive_handle(state: &State, title: &str) -> String {
    let base = validate::slugify(title);
    if !state.catalog.handles.contains_key(&base) {
        return base;
    }
    // From past the highest suffix in use: a hundred thousand "Blue Shirt"s do not mean
    // a hundred thousand probes for the next.
    let used = state.catalog.handle_suffixes.get(&base).unwrap_or(1);
    (used.saturating_add(1).max(2)..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !state.catalog.handles.contains_key(candidate))
        .expect("an unbounded range finds a free handle")
}

impl Request for CreateProduct {
    type Output = Arc<Product>;
    type Outcome = Arc<Product>;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<Arc<Product>>> {
        let c = self;
        let mut checks = Checks::default();
        let (categories, variants) = check_product_fields(
            state,
            &mut checks,
            ProductFields {
                handle: c.handle.as_deref(),
                title: Some(&c.title),
                description: Some(&c.description),
                brand: Some(&c.brand),
                category_ids: Some(&c.category_ids),
                attributes: Some(&c.attributes),
                variants: Some(&c.variants),
            },
        );
        if c.status == Some(ProductStatus::Archived) {
            checks.fail("status", "a new product is draft or active");
        }
        done(checks)?;
        let variants = variants.expect("variants were given");
        check_skus_free(state, &variants, None)?;
        let handle = match &c.handle {
            Some(handle) => {
                check_handle_free(state, handle, None)?;
                handle.clone()
            }
            None => derive_handle(state, &c.title),
        };
        let id = ProductId::from_seq(state.catalog.product_seq.next());
        let product = Product {
            id,
            handle,
            title: c.title.clone(),
            description: c.description.clone(),
            brand: c.brand.clone(),
            category_ids: categories.unwrap_or_default(),
            attributes: c.attributes.clone(),
            status: c.status.unwrap_or(ProductStatus::Draft),
            variants,
            rating: Rating::default(),
            created_at: ctx.now,
            updated_at: ctx.now,
            version: 1,
        };
        let product = Arc::new(product);
        Decision::one(product.clone(), CatalogEvent::ProductCreated(product))
    }

    fn reply(_: &State, product: Arc<Product>) -> Arc<Product> {
        product
    }
}

fn product_named(state: &State, id: &str) -> Result<Arc<Product>> {
    ProductId::parse(id)
        .and_then(|id| state.product(&id))
        .ok_or_else(|| not_found(EntityKind::Product, id))
}

impl Request for UpdateProduct {
    type Output = Arc<Product>;
    type Outcome = Arc<Product>;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<Arc<Product>>> {
        let c = self;
        let current = product_named(state, &c.id)?;
        check_version(c.expected_version, current.version)?;
        let mut checks = Checks::default();
        let (categories, variants) = check_product_fields(
            state,
            &mut checks,
            ProductFields {
                handle: c.handle.as_deref(),
                title: c.title.as_deref(),
                description: c.description.as_deref(),
                brand: c.brand.as_deref(),
                category_ids: c.category_ids.as_deref(),
                attributes: c.attributes.as_ref(),
                variants: c.variants.as_deref(),
            },
        );
        done(checks)?;
        let mut next = (*current).clone();
        if let Some(variants) = variants {
            check_skus_free(state, &variants, Some(&current.id))?;
            for dropped in
                current.variants.iter().filter(|v| !variants.iter().any(|n| n.sku == v.sku))
            {
                if state.stock(&dropped.sku).is_some_and(|s| s.reserved > 0) {
                    return Err(EngineError::Conflict(format!(
                        "SKU {} has units reserved by unpaid orders",
                        dropped.sku
                    )));
                }
            }
            next.variants = variants;
        }
        if let Some(handle) = &c.handle {
            check_handle_free(state, handle, Some(&current.id))?;
            next.handle = handle.clone();
        }
        if let Some(categories) = categories {
            next.category_ids = categories;
        }
        let copy = |target: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                target.clone_from(value);
            }
        };
        copy(&mut next.title, &c.title);
        copy(&mut next.description, &c.description);
        copy(&mut next.brand, &c.brand);
        if let Some(attributes) = &c.attributes {
            next.attributes.clone_from(attributes);
        }
        if let Some(status) = c.status {
            next.status = status;
        }
        next.updated_at = ctx.now;
        next.version += 1;
        let next = Arc::new(next);
        Decision::one(next.clone(), CatalogEvent::ProductUpdated(next))
    }

    fn reply(_: &State, product: Arc<Product>) -> Arc<Product> {
        product
    }
}

impl Request for ArchiveProduct {
    type Output = Arc<Product>;
    type Outcome = Arc<Product>;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<Arc<Product>>> {
        let c = self;
        let current = product_named(state, &c.id)?;
        check_version(c.expected_version, current.version)?;
        if current.status == ProductStatus::Archived {
            return Decision::nothing(current);
        }
        let mut next = (*current).clone();
        next.status = ProductStatus::Archived;
        next.updated_at = ctx.now;
        next.version += 1;
        let next = Arc::new(next);
        Decision::one(next.clone(), CatalogEvent::ProductUpdated(next))
    }

    fn reply(_: &State, product: Arc<Product>) -> Arc<Product> {
        product
    }
}
