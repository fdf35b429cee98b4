//! `decide`: given the state and a command, the events that carry it out, or the typed
//! error that refuses it. Pure: it reads the state, the time and the ids it is handed,
//! and changes nothing. A refused command therefore changes nothing.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::accounts;
use crate::command::*;
use crate::error::{EngineError, EntityKind, FieldError, Result, Shortfall};
use crate::event::{Event, PlacedLine, PlacedOrder};
use crate::model::*;
use crate::state::{State, CATEGORY_DEPTH_MAX};
use crate::types::*;
use crate::validate::{self, Checks};

/// Where randomness comes from: the runtime draws from an OS-seeded generator, tests
/// from a seeded one.
pub trait IdSource {
    /// 128 random bits.
    fn random_u128(&mut self) -> u128;
}

impl<R: rand::RngCore> IdSource for R {
    fn random_u128(&mut self) -> u128 {
        u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())
    }
}

/// The rules' limits, from the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most lines in a cart.
    pub cart_lines_max: usize,
    /// Most units on one cart line.
    pub line_quantity_max: u32,
    /// How long a checkout's reservation holds before the order expires.
    pub reservation_ttl_ms: i64,
    /// How long an idempotency key's outcome is kept.
    pub idempotency_ttl_ms: i64,
    /// The currency of a cart created without one.
    pub default_currency: Currency,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            cart_lines_max: 100,
            line_quantity_max: 1000,
            reservation_ttl_ms: 15 * 60 * 1000,
            idempotency_ttl_ms: 24 * 60 * 60 * 1000,
            default_currency: Currency::USD,
        }
    }
}

/// The inputs of a decision besides state and command.
pub struct Ctx<'a> {
    /// The time the command is applied at.
    pub now: TimestampMs,
    /// Where new random ids come from.
    pub ids: &'a mut dyn IdSource,
    /// The limits.
    pub limits: &'a Limits,
}

/// What a command's reply names, resolved against the state once its events are applied.
// Short-lived and moved once per command; boxing would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Category(CategoryId),
    Deleted,
    Product(ProductId),
    Stock(Sku),
    Cart(CartId),
    Order(OrderId),
    Payment(OrderId, PaymentId),
    Customer(CustomerId),
    Replay(IdempotentOutcome),
    Expired(usize),
    ApiClient(ApiClientId),
    RefreshToken(String),
    Rotation(Option<String>),
    RotationReused,
}

/// The events of a command and what its reply names.
pub(crate) struct Decision {
    pub(crate) events: Vec<Event>,
    pub(crate) outcome: Outcome,
}

impl Decision {
    fn new(outcome: Outcome, events: Vec<Event>) -> Result<Decision> {
        Ok(Decision { events, outcome })
    }
}

/// How many orders (and idempotency records) one [`ExpireDue`] handles at most; the
/// rest wait for the next tick so one command stays short.
pub const EXPIRIES_PER_COMMAND_MAX: usize = 1024;
/// The most units on hand one SKU may have.
pub const ON_HAND_MAX: i64 = 1_000_000_000;

pub(crate) fn decide(state: &State, command: &Command, ctx: &mut Ctx<'_>) -> Result<Decision> {
    match command {
        Command::CreateCategory(c) => create_category(state, c, ctx),
        Command::UpdateCategory(c) => update_category(state, c, ctx),
        Command::DeleteCategory(c) => delete_category(state, c),
        Command::CreateProduct(c) => create_product(state, c, ctx),
        Command::UpdateProduct(c) => update_product(state, c, ctx),
        Command::ArchiveProduct(c) => archive_product(state, c, ctx),
        Command::SetStock(c) => set_stock(state, c),
        Command::AdjustStock(c) => adjust_stock(state, c),
        Command::CreateCart(c) => create_cart(state, c, ctx),
        Command::AddCartItem(c) => {
            change_cart_line(state, &c.cart_id, &c.sku, c.quantity, true, ctx)
        }
        Command::SetCartItem(c) => {
            change_cart_line(state, &c.cart_id, &c.sku, c.quantity, false, ctx)
        }
        Command::RemoveCartItem(c) => remove_cart_line(state, c, ctx),
        Command::Checkout(c) => checkout(state, c, ctx),
        Command::CapturePayment(c) => capture_payment(state, c, ctx),
        Command::CancelOrder(c) => cancel_order(state, c, ctx),
        Command::FulfillOrder(c) => fulfill_order(state, c, ctx),
        Command::RegisterCustomer(c) => register_customer(state, c, ctx),
        Command::ExpireDue(_) => expire_due(state, ctx),
        Command::CreateApiClient(c) => accounts::create_api_client(state, c, ctx),
        Command::IssueRefreshToken(c) => accounts::issue_refresh_token(state, c, ctx),
        Command::RotateRefreshToken(c) => accounts::rotate_refresh_token(state, c, ctx),
        Command::AddSigningKey(c) => accounts::add_signing_key(state, c, ctx),
        Command::RecordResponse(c) => accounts::record_response(state, c, ctx),
    }
}

fn not_found(kind: EntityKind, id: &str) -> EngineError {
    EngineError::NotFound { kind, id: id.chars().take(80).collect() }
}

fn check_version(expected: Option<u64>, current: u64) -> Result<()> {
    match expected {
        Some(expected) if expected != current => {
            Err(EngineError::VersionMismatch { expected, current })
        }
        _ => Ok(()),
    }
}

fn done(checks: Checks) -> Result<()> {
    if checks.is_ok() {
        Ok(())
    } else {
        Err(EngineError::Validation(checks.errors))
    }
}

// --- categories ---------------------------------------------------------------------

fn category_named(state: &State, id: &str) -> Result<std::sync::Arc<Category>> {
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

fn create_category(state: &State, c: &CreateCategory, ctx: &mut Ctx<'_>) -> Result<Decision> {
    let mut checks = Checks::default();
    checks.text("name", &c.name, 1, 100, false);
    done(checks)?;
    let parent_id = c.parent_id.as_deref().map(|p| check_parent(state, p, None)).transpose()?;
    let id = CategoryId::from_seq(state.counters.category.load(Ordering::Acquire) + 1);
    let category = Category {
        id: id.clone(),
        name: c.name.clone(),
        parent_id,
        created_at: ctx.now,
        updated_at: ctx.now,
        version: 1,
    };
    Decision::new(Outcome::Category(id), vec![Event::CategoryCreated(Box::new(category))])
}

fn update_category(state: &State, c: &UpdateCategory, ctx: &mut Ctx<'_>) -> Result<Decision> {
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
    Decision::new(Outcome::Category(next.id.clone()), vec![Event::CategoryUpdated(Box::new(next))])
}

fn delete_category(state: &State, c: &DeleteCategory) -> Result<Decision> {
    let current = category_named(state, &c.id)?;
    check_version(c.expected_version, current.version)?;
    if state.categories.iter().any(|e| e.value().parent_id.as_ref() == Some(&current.id)) {
        return Err(EngineError::Conflict("the category has subcategories".into()));
    }
    if state.products.iter().any(|e| e.value().category_ids.contains(&current.id)) {
        return Err(EngineError::Conflict("products are listed in the category".into()));
    }
    Decision::new(Outcome::Deleted, vec![Event::CategoryDeleted(current.id.clone())])
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
        let at = format!("variants[{i}]");
        let before = checks.errors.len();
        checks.text(&format!("{at}.title"), &input.title, 0, 200, false);
        checks.map(&format!("{at}.options"), &input.options, 10, 64, 128);
        let sku = Sku::new(input.sku.as_str()).map_err(|e| checks.push(e.under(&at))).ok();
        let currency = Currency::new(&input.price.currency)
            .map_err(|e| checks.push(e.under(&format!("{at}.price"))))
            .ok();
        let price = currency.and_then(|currency| {
            Money::new(input.price.amount, currency)
                .map_err(|e| checks.push(e.under(&format!("{at}.price"))))
                .ok()
        });
        if let Some(sku) = &sku {
            if variants.iter().any(|v| &v.sku == sku) {
                checks.fail(format!("{at}.sku"), "is used by another variant of this product");
            }
        }
        if let (Some(sku), Some(price), true) = (sku, price, checks.errors.len() == before) {
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
        if let Some(product) = state.skus.get(&variant.sku) {
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
    match state.handles.get(handle) {
        Some(id) if Some(&id) != owner => {
            Err(EngineError::Conflict(format!("handle {handle:?} is taken")))
        }
        _ => Ok(()),
    }
}

/// A free handle derived from the title: `blue-shirt`, else `blue-shirt-2`, …
fn derive_handle(state: &State, title: &str) -> String {
    let base = validate::slugify(title);
    (1..)
        .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
        .find(|candidate| !state.handles.contains_key(candidate))
        .expect("an unbounded range finds a free handle")
}

fn create_product(state: &State, c: &CreateProduct, ctx: &mut Ctx<'_>) -> Result<Decision> {
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
    let id = ProductId::from_seq(state.counters.product.load(Ordering::Acquire) + 1);
    let product = Product {
        id: id.clone(),
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
    Decision::new(Outcome::Product(id), vec![Event::ProductCreated(Box::new(product))])
}

fn product_named(state: &State, id: &str) -> Result<std::sync::Arc<Product>> {
    ProductId::parse(id)
        .and_then(|id| state.product(&id))
        .ok_or_else(|| not_found(EntityKind::Product, id))
}

fn update_product(state: &State, c: &UpdateProduct, ctx: &mut Ctx<'_>) -> Result<Decision> {
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
        for dropped in current.variants.iter().filter(|v| !variants.iter().any(|n| n.sku == v.sku))
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
    Decision::new(Outcome::Product(next.id.clone()), vec![Event::ProductUpdated(Box::new(next))])
}

fn archive_product(state: &State, c: &ArchiveProduct, ctx: &mut Ctx<'_>) -> Result<Decision> {
    let current = product_named(state, &c.id)?;
    check_version(c.expected_version, current.version)?;
    if current.status == ProductStatus::Archived {
        return Decision::new(Outcome::Product(current.id.clone()), vec![]);
    }
    let mut next = (*current).clone();
    next.status = ProductStatus::Archived;
    next.updated_at = ctx.now;
    next.version += 1;
    Decision::new(Outcome::Product(next.id.clone()), vec![Event::ProductUpdated(Box::new(next))])
}

// --- inventory ----------------------------------------------------------------------

fn stock_named(state: &State, sku: &str) -> Result<(Sku, StockLevels)> {
    let sku = Sku::new(sku)?;
    let levels = state.stock(&sku).ok_or_else(|| not_found(EntityKind::Sku, sku.as_str()))?;
    Ok((sku, levels))
}

fn check_on_hand(on_hand: i64, reserved: u32) -> Result<u32> {
    if !(0..=ON_HAND_MAX).contains(&on_hand) {
        return Err(EngineError::field("on_hand", format!("must be between 0 and {ON_HAND_MAX}")));
    }
    if on_hand < i64::from(reserved) {
        return Err(EngineError::Conflict(format!(
            "on hand would be {on_hand}, below the {reserved} units reserved by unpaid orders"
        )));
    }
    Ok(on_hand as u32)
}

fn set_stock(state: &State, c: &SetStock) -> Result<Decision> {
    let mut checks = Checks::default();
    checks.text("reason", &c.reason, 0, 200, false);
    done(checks)?;
    let (sku, levels) = stock_named(state, &c.sku)?;
    check_version(c.expected_version, levels.version)?;
    let on_hand = check_on_hand(c.on_hand, levels.reserved)?;
    let event = Event::StockSet { sku: sku.clone(), on_hand, reason: c.reason.clone() };
    Decision::new(Outcome::Stock(sku), vec![event])
}

fn adjust_stock(state: &State, c: &AdjustStock) -> Result<Decision> {
    let mut checks = Checks::default();
    checks.text("reason", &c.reason, 1, 200, false);
    if c.delta == 0 || c.delta.unsigned_abs() > ON_HAND_MAX as u64 {
        checks.fail("delta", format!("must be non-zero and at most {ON_HAND_MAX} either way"));
    }
    done(checks)?;
    let (sku, levels) = stock_named(state, &c.sku)?;
    let on_hand = i64::from(levels.on_hand) + c.delta;
    if on_hand < 0 {
        return Err(EngineError::Conflict(format!(
            "cannot remove {} units: {} on hand",
            -c.delta, levels.on_hand
        )));
    }
    check_on_hand(on_hand, levels.reserved).map_err(|e| match e {
        EngineError::Validation(_) => {
            EngineError::field("delta", format!("on hand may be at most {ON_HAND_MAX}"))
        }
        other => other,
    })?;
    let event = Event::StockAdjusted { sku: sku.clone(), delta: c.delta, reason: c.reason.clone() };
    Decision::new(Outcome::Stock(sku), vec![event])
}

// --- carts --------------------------------------------------------------------------

fn create_cart(state: &State, c: &CreateCart, ctx: &mut Ctx<'_>) -> Result<Decision> {
    let currency = match &c.currency {
        Some(code) => Currency::new(code)?,
        None => ctx.limits.default_currency,
    };
    let customer_id = match &c.customer_id {
        Some(id) => Some(
            CustomerId::parse(id)
                .filter(|id| state.customer(id).is_some())
                .ok_or_else(|| not_found(EntityKind::Customer, id))?,
        ),
        None => None,
    };
    let id = CartId::from_random(ctx.ids.random_u128());
    let cart = Cart {
        id: id.clone(),
        seq: state.counters.cart.load(Ordering::Acquire) + 1,
        customer_id,
        currency,
        lines: Vec::new(),
        status: CartStatus::Open,
        created_at: ctx.now,
        updated_at: ctx.now,
        version: 1,
    };
    Decision::new(Outcome::Cart(id), vec![Event::CartCreated(Box::new(cart))])
}

fn open_cart(state: &State, id: &str) -> Result<std::sync::Arc<Cart>> {
    let cart = CartId::parse(id)
        .and_then(|id| state.cart(&id))
        .ok_or_else(|| not_found(EntityKind::Cart, id))?;
    match &cart.status {
        CartStatus::Open => Ok(cart),
        CartStatus::CheckedOut(order) => {
            Err(EngineError::InvalidState(format!("the cart was checked out as order {order}")))
        }
    }
}

/// Adds `quantity` units (`add`) or sets the line to `quantity` (0 removes it).
fn change_cart_line(
    state: &State,
    cart_id: &str,
    sku: &str,
    quantity: i64,
    add: bool,
    ctx: &mut Ctx<'_>,
) -> Result<Decision> {
    let cart = open_cart(state, cart_id)?;
    let max = i64::from(ctx.limits.line_quantity_max);
    let min = if add { 1 } else { 0 };
    let mut checks = Checks::default();
    let sku = Sku::new(sku).map_err(|e| checks.push(e)).ok();
    if !(min..=max).contains(&quantity) {
        checks.fail("quantity", format!("must be between {min} and {max}"));
    }
    done(checks)?;
    let sku = sku.expect("checked");
    let existing = cart.lines.iter().find(|l| l.sku == sku).map_or(0, |l| i64::from(l.quantity));
    let target = if add { existing + quantity } else { quantity };
    if target > max {
        return Err(EngineError::field(
            "quantity",
            format!("the line would have {target} units; at most {max} per line"),
        ));
    }
    if target > 0 {
        let (_, variant) = check_purchasable(state, &cart, &sku)?;
        if variant.price.times(target as u32).is_none() {
            return Err(too_large("quantity"));
        }
        if existing == 0 && cart.lines.len() >= ctx.limits.cart_lines_max {
            return Err(EngineError::field(
                "sku",
                format!("a cart may have at most {} lines", ctx.limits.cart_lines_max),
            ));
        }
    }
    if target == existing {
        return Decision::new(Outcome::Cart(cart.id.clone()), vec![]);
    }
    let event =
        Event::CartLineSet { cart_id: cart.id.clone(), sku, quantity: target as u32, at: ctx.now };
    Decision::new(Outcome::Cart(cart.id.clone()), vec![event])
}

/// A SKU can go in a cart when an active product has it, priced in the cart's currency.
fn check_purchasable(state: &State, cart: &Cart, sku: &Sku) -> Result<(Arc<Product>, Variant)> {
    let product = state
        .product_by_sku(sku)
        .filter(|p| p.status == ProductStatus::Active)
        .ok_or_else(|| EngineError::field("sku", "no active product has this SKU"))?;
    let variant = product.variant(sku).cloned().expect("the SKU index names the product");
    if variant.price.currency() != cart.currency {
        return Err(EngineError::field(
            "sku",
            format!(
                "the SKU is priced in {}, the cart in {}",
                variant.price.currency(),
                cart.currency
            ),
        ));
    }
    Ok((product, variant))
}

fn remove_cart_line(state: &State, c: &RemoveCartItem, ctx: &mut Ctx<'_>) -> Result<Decision> {
    let cart = open_cart(state, &c.cart_id)?;
    let sku = Sku::new(c.sku.as_str())?;
    if !cart.lines.iter().any(|l| l.sku == sku) {
        return Err(not_found(EntityKind::Sku, sku.as_str()));
    }
    let event = Event::CartLineSet { cart_id: cart.id.clone(), sku, quantity: 0, at: ctx.now };
    Decision::new(Outcome::Cart(cart.id.clone()), vec![event])
}

// --- checkout and orders ------------------------------------------------------------

/// FNV-1a over a canonical rendering of a request: equal requests, equal fingerprints.
fn fingerprint(parts: &dyn std::fmt::Debug) -> u64 {
    format!("{parts:?}").bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Looks up an idempotency key: `Ok(Some(outcome))` replays, `Ok(None)` proceeds.
fn check_idempotency(
    state: &State,
    key: Option<&IdempotencyKey>,
    fingerprint: u64,
    ctx: &Ctx<'_>,
) -> Result<Option<(String, Option<IdempotentOutcome>)>> {
    let Some(key) = key else { return Ok(None) };
    let mut checks = Checks::default();
    if key.key.is_empty()
        || key.key.len() > 255
        || !key.key.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        checks.fail("idempotency_key", "must be 1-255 printable ASCII characters");
    }
    checks.text("idempotency_key.scope", &key.scope, 1, 128, false);
    done(checks)?;
    let scoped = key.scoped();
    match state.idempotency_record(&scoped) {
        Some(record) if record.created_at + ctx.limits.idempotency_ttl_ms > ctx.now => {
            if record.fingerprint == fingerprint {
                Ok(Some((scoped, Some(record.outcome.clone()))))
            } else {
                Err(EngineError::IdempotencyKeyReused)
            }
        }
        _ => Ok(Some((scoped, None))),
    }
}

fn check_address(checks: &mut Checks, address: &Address) {
    let fields = [
        ("name", &address.name, 1, 200),
        ("line1", &address.line1, 1, 200),
        ("line2", &address.line2, 0, 200),
        ("city", &address.city, 1, 100),
        ("region", &address.region, 0, 100),
        ("postal_code", &address.postal_code, 0, 20),
    ];
    for (field, value, min, max) in fields {
        checks.text(&format!("shipping_address.{field}"), value, min, max, false);
    }
    if address.country.len() != 2 || !address.country.bytes().all(|b| b.is_ascii_uppercase()) {
        checks.fail("shipping_address.country", "must be an ISO 3166-1 alpha-2 code such as US");
    }
}

fn checkout(state: &State, c: &Checkout, ctx: &mut Ctx<'_>) -> Result<Decision> {
    // Formatting the request costs a little: only a keyed request needs its fingerprint.
    let print = c
        .idempotency
        .as_ref()
        .map_or(0, |_| fingerprint(&(&c.cart_id, &c.email, &c.shipping_address)));
    let idempotency = check_idempotency(state, c.idempotency.as_ref(), print, ctx)?;
    match idempotency {
        Some((_, Some(outcome @ IdempotentOutcome::Checkout(_)))) => {
            return Decision::new(Outcome::Replay(outcome), vec![]);
        }
        Some((_, Some(_))) => return Err(EngineError::IdempotencyKeyReused),
        _ => {}
    }
    let cart = open_cart(state, &c.cart_id)?;
    let mut checks = Checks::default();
    let email = match (&c.email, &cart.customer_id) {
        (Some(email), _) => validate::email(email).map_err(|e| checks.push(e)).ok(),
        (None, Some(customer)) => state.customer(customer).map(|c| c.email.clone()),
        (None, None) => {
            checks.fail("email", "a guest checkout needs an email address");
            None
        }
    };
    if let Some(address) = &c.shipping_address {
        check_address(&mut checks, address);
    }
    done(checks)?;
    if cart.lines.is_empty() {
        return Err(EngineError::EmptyCart);
    }
    let mut lines = Vec::with_capacity(cart.lines.len());
    let mut shortfalls = Vec::new();
    let mut subtotal = Money::zero(cart.currency);
    for (i, line) in cart.lines.iter().enumerate() {
        let (_, variant) = check_purchasable(state, &cart, &line.sku).map_err(|e| {
            EngineError::Validation(
                e.fields().iter().map(|f| f.clone().under(&format!("items[{i}]"))).collect(),
            )
        })?;
        let available = state.stock(&line.sku).map_or(0, |s| s.available());
        if available < line.quantity {
            shortfalls.push(Shortfall {
                sku: line.sku.clone(),
                requested: line.quantity,
                available,
            });
        }
        // `apply` sums the same lines: checked here, so it cannot overflow there.
        let line_total = variant.price.times(line.quantity).ok_or_else(|| too_large("items"))?;
        subtotal = subtotal.plus(line_total).ok_or_else(|| too_large("items"))?;
        lines.push(PlacedLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price: variant.price,
        });
    }
    if !shortfalls.is_empty() {
        return Err(EngineError::OutOfStock(shortfalls));
    }
    let id = OrderId::from_random(ctx.ids.random_u128());
    let placed = PlacedOrder {
        id: id.clone(),
        cart_id: cart.id.clone(),
        email: email.unwrap_or_default(),
        shipping_address: c.shipping_address.clone().map(Box::new),
        lines,
        reservation_expires_at: ctx.now.saturating_add(ctx.limits.reservation_ttl_ms),
        idempotency: idempotency
            .map(|(key, _)| Box::new(IdempotencyTag { key, fingerprint: print })),
    };
    Decision::new(Outcome::Order(id), vec![Event::OrderPlaced(Box::new(placed))])
}

fn too_large(field: &str) -> EngineError {
    EngineError::field(field, "the total exceeds the largest amount of money the engine handles")
}

fn order_named(state: &State, id: &str) -> Result<std::sync::Arc<Order>> {
    OrderId::parse(id)
        .and_then(|id| state.order(&id))
        .ok_or_else(|| not_found(EntityKind::Order, id))
}

fn invalid_transition(order: &Order, action: &str) -> EngineError {
    EngineError::InvalidState(format!("cannot {action} an order that is {}", order.status.as_str()))
}

/// The card brand a test token stands for: approved, declined, or not a test token.
fn test_card(token: &str) -> Result<Option<&'static str>> {
    match token {
        "tok_visa" => Ok(Some("visa")),
        "tok_mastercard" => Ok(Some("mastercard")),
        "tok_declined" => Ok(None),
        _ => Err(EngineError::field(
            "token",
            "the test provider takes tok_visa, tok_mastercard or tok_declined",
        )),
    }
}

fn capture_payment(state: &State, c: &CapturePayment, ctx: &mut Ctx<'_>) -> Result<Decision> {
    let print =
        c.idempotency.as_ref().map_or(0, |_| fingerprint(&(&c.order_id, &c.method, &c.token)));
    let idempotency = check_idempotency(state, c.idempotency.as_ref(), print, ctx)?;
    match idempotency {
        Some((_, Some(outcome @ IdempotentOutcome::Payment(..)))) => {
            return Decision::new(Outcome::Replay(outcome), vec![]);
        }
        Some((_, Some(_))) => return Err(EngineError::IdempotencyKeyReused),
        _ => {}
    }
    if c.method != "test_card" {
        return Err(EngineError::field("method", "the only payment method is test_card"));
    }
    let brand = test_card(&c.token)?;
    let order = order_named(state, &c.order_id)?;
    if order.status != OrderStatus::PendingPayment {
        return Err(invalid_transition(&order, "pay"));
    }
    if ctx.now >= order.reservation_expires_at {
        return Err(EngineError::InvalidState("the order's reservation has expired".into()));
    }
    let Some(brand) = brand else {
        return Err(EngineError::PaymentDeclined("the test card was declined".into()));
    };
    let payment = Payment {
        id: PaymentId::from_random(ctx.ids.random_u128()),
        method: c.method.clone(),
        card_brand: brand.to_string(),
        amount: order.total,
        created_at: ctx.now,
    };
    let idempotency =
        idempotency.map(|(key, _)| Box::new(IdempotencyTag { key, fingerprint: print }));
    let outcome = Outcome::Payment(order.id.clone(), payment.id.clone());
    let event = Event::PaymentCaptured {
        order_id: order.id.clone(),
        payment: Box::new(payment),
        idempotency,
        at: ctx.now,
    };
    Decision::new(outcome, vec![event])
}

fn cancel_order(state: &State, c: &CancelOrder, ctx: &mut Ctx<'_>) -> Result<Decision> {
    let order = order_named(state, &c.order_id)?;
    check_version(c.expected_version, order.version)?;
    if order.status != OrderStatus::PendingPayment {
        return Err(invalid_transition(&order, "cancel"));
    }
    let event = Event::OrderCancelled { order_id: order.id.clone(), at: ctx.now };
    Decision::new(Outcome::Order(order.id.clone()), vec![event])
}

fn fulfill_order(state: &State, c: &FulfillOrder, ctx: &mut Ctx<'_>) -> Result<Decision> {
    let order = order_named(state, &c.order_id)?;
    if order.status != OrderStatus::Paid {
        return Err(invalid_transition(&order, "fulfil"));
    }
    let event = Event::OrderFulfilled { order_id: order.id.clone(), at: ctx.now };
    Decision::new(Outcome::Order(order.id.clone()), vec![event])
}

fn expire_due(state: &State, ctx: &mut Ctx<'_>) -> Result<Decision> {
    let mut events: Vec<Event> = state
        .expiry
        .iter()
        .take_while(|e| e.value().0 <= ctx.now)
        .take(EXPIRIES_PER_COMMAND_MAX)
        .map(|e| Event::OrderExpired { order_id: e.value().1.clone(), at: ctx.now })
        .collect();
    let expired = events.len();
    let forgotten: Vec<String> = state
        .idempotency_by_age
        .iter()
        .take_while(|e| e.value().0 + ctx.limits.idempotency_ttl_ms <= ctx.now)
        .take(EXPIRIES_PER_COMMAND_MAX)
        .map(|e| e.value().1.clone())
        .collect();
    if !forgotten.is_empty() {
        events.push(Event::IdempotencyForgotten { keys: forgotten });
    }
    let purged = accounts::expired_refresh_tokens(state, ctx.now, EXPIRIES_PER_COMMAND_MAX);
    if !purged.is_empty() {
        events.push(Event::RefreshTokensPurged { hashes: purged });
    }
    Decision::new(Outcome::Expired(expired), events)
}

// --- accounts -----------------------------------------------------------------------

fn register_customer(state: &State, c: &RegisterCustomer, ctx: &mut Ctx<'_>) -> Result<Decision> {
    let mut checks = Checks::default();
    let email = validate::email(&c.email).map_err(|e| checks.push(e)).ok();
    checks.text("name", &c.name, 0, 100, false);
    if c.credential.is_empty() || c.credential.len() > 512 {
        checks.fail("credential", "must be 1-512 bytes");
    }
    done(checks)?;
    let email = email.expect("checked");
    if state.emails.contains_key(&email) {
        return Err(EngineError::Conflict("an account with this email exists".into()));
    }
    let id = CustomerId::from_seq(state.counters.customer.load(Ordering::Acquire) + 1);
    let customer = Customer {
        id: id.clone(),
        email,
        name: c.name.clone(),
        role: c.role,
        credential: c.credential.clone(),
        created_at: ctx.now,
        updated_at: ctx.now,
        version: 1,
    };
    Decision::new(Outcome::Customer(id), vec![Event::CustomerRegistered(Box::new(customer))])
}

impl From<Vec<FieldError>> for EngineError {
    fn from(errors: Vec<FieldError>) -> EngineError {
        EngineError::Validation(errors)
    }
}
