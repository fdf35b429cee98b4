//! The domain rules, through the embedding API: catalog, categories, inventory, carts,
//! checkout, payment, order transitions, reservation expiry, idempotency keys and
//! accounts. Each feature has one `check` helper and many one-line cases; a case states
//! its input and the expected outcome as one line of text (`ok`, or the error's problem
//! code with its fields or shortfalls, then the resulting state). Every helper runs a
//! fresh engine on a manual clock whose sequencer never expires anything on its own, and
//! checks the stock invariants after each step that changes state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use emporium_engine::*;
use emporium_tests::*;

/// Reservation time to live by default.
const TTL_MS: i64 = 15 * 60 * 1000;

fn engine() -> TestEngine {
    TestEngine::with(|_| {})
}

fn variants(skus: &[&str]) -> Vec<VariantInput> {
    product("", &skus.iter().map(|sku| (*sku, 100)).collect::<Vec<_>>()).variants
}

/// `A 5/2, B 3/0`: on hand / reserved of each SKU.
fn stock_line(state: &State, skus: &[&str]) -> String {
    let levels: Vec<String> = skus
        .iter()
        .map(|sku| {
            let (on_hand, reserved) = levels(state, sku);
            format!("{sku} {on_hand}/{reserved}")
        })
        .collect();
    levels.join(", ")
}

/// `A×2 B×1`: a cart's lines in order.
fn cart_lines(cart: &Cart) -> String {
    let lines: Vec<String> =
        cart.lines.iter().map(|l| format!("{}×{}", l.sku, l.quantity)).collect();
    lines.join(" ")
}

fn add(
    shop: &BlockingEngine,
    cart: &CartId,
    sku: &str,
    quantity: i64,
) -> Result<std::sync::Arc<Cart>> {
    shop.send(AddCartItem { cart_id: cart.to_string(), sku: sku.into(), quantity })
}

fn pay_with(shop: &BlockingEngine, order: &OrderId, token: &str) -> Result<PaymentReceipt> {
    shop.send(CapturePayment {
        order_id: order.to_string(),
        method: "test_card".into(),
        token: token.into(),
        idempotency: None,
    })
}

fn set_stock(shop: &BlockingEngine, sku: &str, on_hand: i64) {
    shop.send(SetStock {
        sku: sku.into(),
        on_hand,
        reason: "count".into(),
        expected_version: None,
    })
    .expect("set stock");
}

/// Places a guest order for `lines` (which must be in stock).
fn place(shop: &BlockingEngine, lines: &[(&str, i64)]) -> std::sync::Arc<Order> {
    let cart = cart_with(shop, lines);
    checkout(shop, &cart.id).expect("checkout")
}

// --- products -----------------------------------------------------------------------

/// Creates products titled `existing`, then one titled `title` with `handle`; compares
/// the new product's handle (or the refusal).
fn check_handle(existing: &[&str], title: &str, handle: Option<&str>, expected: &str) {
    let te = engine();
    for (i, earlier) in existing.iter().enumerate() {
        let sku = format!("OLD-{i}");
        te.shop.send(product(earlier, &[(sku.as_str(), 100)])).expect("create earlier product");
    }
    let mut input = product(title, &[("NEW", 100)]);
    input.handle = handle.map(str::to_string);
    let got = match te.shop.send(input) {
        Ok(created) => {
            let found =
                te.state().product_by_handle(&created.handle).expect("the handle is indexed");
            assert_eq!(found.id, created.id);
            created.handle.clone()
        }
        Err(e) => error_code(&e),
    };
    assert_eq!(got, expected, "title {title:?}, handle {handle:?}, after {existing:?}");
}

#[test]
fn product_handles() {
    check_handle(&[], "Organic T-Shirt", None, "organic-t-shirt");
    check_handle(&[], "Blue T-Shirt (M)", None, "blue-t-shirt-m");
    check_handle(&[], "  ¡Olé!  ", None, "ol");
    check_handle(&[], "日本", None, "product");
    check_handle(&["Blue Shirt"], "Blue Shirt", None, "blue-shirt-2");
    check_handle(&["Blue Shirt"], "BLUE  shirt!", None, "blue-shirt-2");
    check_handle(&["Blue Shirt", "Blue Shirt"], "Blue Shirt", None, "blue-shirt-3");
    check_handle(&["Blue Shirt 2", "Blue Shirt"], "Blue Shirt", None, "blue-shirt-3");
    check_handle(&["Blue Shirt"], "Blue Shirt", Some("summer-blue"), "summer-blue");
    check_handle(&[], "Anything", Some("blue-shirt-2"), "blue-shirt-2");
    check_handle(&["Blue Shirt"], "Other", Some("blue-shirt"), "conflict");
    check_handle(&[], "Anything", Some("Blue Shirt"), "validation_failed: handle");
}

#[test]
fn a_new_product_starts_at_version_one_with_empty_stock_rows() {
    let te = engine();
    let mut input = product("Socks", &[("SOCK-S", 500), ("SOCK-L", 600)]);
    input.status = None;
    let created = te.shop.send(input).expect("create");
    assert_eq!((created.version, created.status), (1, ProductStatus::Draft));
    assert_eq!((created.created_at, created.updated_at), (T0, T0));
    assert_eq!(stock_line(te.state(), &["SOCK-S", "SOCK-L"]), "SOCK-S 0/0, SOCK-L 0/0");
    for sku in ["SOCK-S", "SOCK-L"] {
        let owner = te.state().product_by_sku(&Sku::new(sku).unwrap()).expect("indexed");
        assert_eq!(owner.id, created.id);
    }
    check_invariants(te.state());
    // The reply was read from the state; what was made durable must be the same value.
    let te = te.reopen();
    assert_eq!(te.state().product(&created.id).as_deref(), Some(&*created));
}

/// A SKU dropped from its product takes its stock row with it: a new product that
/// reuses the SKU starts from zero instead of inheriting the old units on hand, also
/// after a reopen.
#[test]
fn a_dropped_skus_stock_is_not_inherited_by_a_product_reusing_it() {
    let te = engine();
    let shirt = stocked_sku(&te.shop, "OLD-1", 100, 40);
    te.shop
        .send(UpdateProduct {
            id: shirt.id.to_string(),
            variants: Some(product("Shirt", &[("OLD-2", 100)]).variants),
            ..Default::default()
        })
        .expect("drop OLD-1");
    assert_eq!(te.state().stock(&Sku::new("OLD-1").unwrap()), None);
    te.shop.send(product("New Shirt", &[("OLD-1", 120)])).expect("reuse the SKU");
    assert_eq!(levels(te.state(), "OLD-1"), (0, 0), "the old units on hand are gone");
    let te = te.reopen();
    assert_eq!(levels(te.state(), "OLD-1"), (0, 0));
    check_invariants(te.state());
}

/// `v2 active shirt 'Shirt' A B`: a product's version, status, handle, title and SKUs.
fn product_line(product: &Product) -> String {
    let skus: Vec<&str> = product.variants.iter().map(|v| v.sku.as_str()).collect();
    format!(
        "v{} {} {} '{}' {}",
        product.version,
        product.status.as_str(),
        product.handle,
        product.title,
        skus.join(" ")
    )
}

/// Product "Shirt" has SKUs A and B (5 units each), `reserved_b` units of B held by a
/// pending order; product "Other" has SKU OTHER. Applies `update` to Shirt; compares the
/// outcome and Shirt afterwards, and checks the SKU and handle indexes.
fn check_update(reserved_b: i64, update: impl FnOnce(&mut UpdateProduct), expected: &str) {
    let te = engine();
    let shirt = te.shop.send(product("Shirt", &[("A", 100), ("B", 200)])).expect("create");
    te.shop.send(product("Other", &[("OTHER", 100)])).expect("create other");
    set_stock(&te.shop, "A", 5);
    set_stock(&te.shop, "B", 5);
    if reserved_b > 0 {
        place(&te.shop, &[("B", reserved_b)]);
    }
    let mut command = UpdateProduct { id: shirt.id.to_string(), ..Default::default() };
    update(&mut command);
    let result = te.shop.send(command);
    let after = te.state().product(&shirt.id).expect("the product exists");
    assert_eq!(format!("{} | {}", outcome(&result), product_line(&after)), expected);
    if let Ok(reply) = &result {
        assert_eq!(**reply, *after);
    }
    for sku in ["A", "B", "C", "OTHER"] {
        let owner = te.state().product_by_sku(&Sku::new(sku).unwrap()).map(|p| p.handle.clone());
        let expected_owner = if sku == "OTHER" {
            Some("other".to_string())
        } else {
            after.variant(&Sku::new(sku).unwrap()).map(|_| after.handle.clone())
        };
        assert_eq!(owner, expected_owner, "owner of {sku}");
    }
    assert_eq!(te.state().product_by_handle(&after.handle).map(|p| p.id), Some(after.id));
    if after.handle != "shirt" {
        assert!(te.state().product_by_handle("shirt").is_none(), "the old handle is freed");
    }
    check_invariants(te.state());
}

#[test]
fn product_updates() {
    check_update(
        0,
        |u| u.title = Some("Shirt Deluxe".into()),
        "ok | v2 active shirt 'Shirt Deluxe' A B",
    );
    check_update(0, |u| u.handle = Some("tee".into()), "ok | v2 active tee 'Shirt' A B");
    check_update(0, |u| u.status = Some(ProductStatus::Draft), "ok | v2 draft shirt 'Shirt' A B");
    check_update(
        0,
        |u| u.variants = Some(variants(&["A", "C"])),
        "ok | v2 active shirt 'Shirt' A C",
    );
    check_update(0, |u| u.variants = Some(variants(&["B"])), "ok | v2 active shirt 'Shirt' B");
    check_update(
        0,
        |u| u.variants = Some(variants(&["C", "B", "A"])),
        "ok | v2 active shirt 'Shirt' C B A",
    );
    check_update(
        2,
        |u| u.variants = Some(variants(&["A", "B", "C"])),
        "ok | v2 active shirt 'Shirt' A B C",
    );
    check_update(2, |u| u.variants = Some(variants(&["B"])), "ok | v2 active shirt 'Shirt' B");
    check_update(2, |u| u.title = Some("Still".into()), "ok | v2 active shirt 'Still' A B");
    check_update(
        2,
        |u| u.variants = Some(variants(&["A"])),
        "conflict | v1 active shirt 'Shirt' A B",
    );
    check_update(
        2,
        |u| u.variants = Some(variants(&["A", "C"])),
        "conflict | v1 active shirt 'Shirt' A B",
    );
    check_update(
        0,
        |u| u.variants = Some(variants(&["A", "OTHER"])),
        "conflict | v1 active shirt 'Shirt' A B",
    );
    check_update(0, |u| u.handle = Some("other".into()), "conflict | v1 active shirt 'Shirt' A B");
    check_update(0, |u| u.handle = Some("shirt".into()), "ok | v2 active shirt 'Shirt' A B");
    check_update(
        0,
        |u| u.variants = Some(vec![]),
        "validation_failed: variants | v1 active shirt 'Shirt' A B",
    );
    check_update(0, |u| u.expected_version = Some(1), "ok | v2 active shirt 'Shirt' A B");
    check_update(
        0,
        |u| u.expected_version = Some(2),
        "version_mismatch: expected 2, current 1 | v1 active shirt 'Shirt' A B",
    );
}

#[test]
fn a_dropped_sku_can_be_reused_by_another_product() {
    let te = engine();
    let shirt = te.shop.send(product("Shirt", &[("A", 100), ("B", 200)])).expect("create");
    te.shop
        .send(UpdateProduct {
            id: shirt.id.to_string(),
            variants: Some(variants(&["A"])),
            ..Default::default()
        })
        .expect("drop B");
    let other = te.shop.send(product("Other", &[("B", 300)])).expect("B is free again");
    let owner = te.state().product_by_sku(&Sku::new("B").unwrap()).expect("indexed");
    assert_eq!(owner.id, other.id);
    check_invariants(te.state());
}

#[test]
fn carts_show_the_current_price() {
    let te = engine();
    let shirt = stocked_sku(&te.shop, "A", 1000, 5);
    let cart = cart_with(&te.shop, &[("A", 2)]);
    let mut repriced = variants(&["A"]);
    repriced[0].price.amount = 1250;
    te.shop
        .send(UpdateProduct {
            id: shirt.id.to_string(),
            variants: Some(repriced),
            ..Default::default()
        })
        .expect("reprice");
    let priced = te.state().priced_cart(&cart.id, te.clock.now_ms()).expect("cart");
    assert_eq!((priced.lines[0].unit_price.amount(), priced.total.amount()), (1250, 2500));
    let order = checkout(&te.shop, &cart.id).expect("checkout");
    assert_eq!((order.lines[0].unit_price.amount(), order.total.amount()), (1250, 2500));
    check_invariants(te.state());
}

/// A cart holds one A (added while its product was active); the product is then put in
/// `status`. Compares adding A to a new cart, and checking out the older cart.
fn check_purchasable(status: ProductStatus, expected: &str) {
    let te = engine();
    let created = stocked_sku(&te.shop, "A", 100, 5);
    let older = cart_with(&te.shop, &[("A", 1)]);
    match status {
        ProductStatus::Archived => {
            let archived = te
                .shop
                .send(ArchiveProduct { id: created.id.to_string(), expected_version: Some(1) });
            assert_eq!(archived.expect("archive").status, ProductStatus::Archived);
        }
        _ => {
            let update = UpdateProduct {
                id: created.id.to_string(),
                status: Some(status),
                ..Default::default()
            };
            te.shop.send(update).expect("change status");
        }
    }
    let cart = te.shop.send(CreateCart::default()).expect("cart");
    let added = add(&te.shop, &cart.id, "A", 1);
    let priced = te.state().priced_cart(&older.id, te.clock.now_ms()).expect("cart");
    let ordered = checkout(&te.shop, &older.id);
    let got = format!(
        "add {} | purchasable {} | checkout {}",
        outcome(&added),
        priced.lines[0].purchasable,
        outcome(&ordered)
    );
    assert_eq!(got, expected, "{status:?}");
    check_invariants(te.state());
}

#[test]
fn only_active_products_can_be_bought() {
    check_purchasable(ProductStatus::Active, "add ok | purchasable true | checkout ok");
    check_purchasable(
        ProductStatus::Draft,
        "add validation_failed: sku | purchasable false | checkout validation_failed: items[0].sku",
    );
    check_purchasable(
        ProductStatus::Archived,
        "add validation_failed: sku | purchasable false | checkout validation_failed: items[0].sku",
    );
}

#[test]
fn archiving_twice_changes_nothing_the_second_time() {
    let te = engine();
    let created = stocked_sku(&te.shop, "A", 100, 5);
    let archive =
        || te.shop.send(ArchiveProduct { id: created.id.to_string(), expected_version: None });
    let first = archive().expect("archive");
    let lsn = te.engine.last_lsn();
    let second = archive().expect("archive again");
    assert_eq!((first.version, second.version), (2, 2));
    assert_eq!(te.engine.last_lsn(), lsn);
    let stale =
        te.shop.send(ArchiveProduct { id: created.id.to_string(), expected_version: Some(1) });
    assert_eq!(outcome(&stale), "version_mismatch: expected 1, current 2");
}

// --- categories ---------------------------------------------------------------------

/// Clothing > Shirts > T-Shirts, and Shoes; product "Tee" is listed in T-Shirts.
struct Tree {
    te: TestEngine,
    ids: BTreeMap<&'static str, CategoryId>,
}

impl Tree {
    fn new() -> Tree {
        let te = engine();
        let mut ids: BTreeMap<&str, CategoryId> = BTreeMap::new();
        for (name, parent) in [
            ("Clothing", None),
            ("Shirts", Some("Clothing")),
            ("T-Shirts", Some("Shirts")),
            ("Shoes", None),
        ] {
            let parent_id = parent.map(|p: &str| ids[p].to_string());
            let category = te
                .shop
                .send(CreateCategory { name: name.into(), parent_id })
                .expect("create category");
            ids.insert(name, category.id);
        }
        let mut tee = product("Tee", &[("TEE", 100)]);
        tee.category_ids = vec![ids["T-Shirts"].to_string()];
        te.shop.send(tee).expect("create product");
        Tree { te, ids }
    }

    /// A category's id by name; other text is passed on as an id.
    fn id(&self, name: &str) -> String {
        self.ids.get(name).map_or(name.to_string(), |id| id.to_string())
    }

    /// Every category's path from its root, sorted: `Clothing; Clothing/Shirts; …`.
    fn paths(&self) -> String {
        let state = self.te.state();
        let mut paths: Vec<String> = state
            .categories()
            .iter()
            .map(|c| {
                let names: Vec<String> =
                    state.category_path(&c.id).iter().map(|p| p.name.clone()).collect();
                names.join("/")
            })
            .collect();
        paths.sort();
        paths.join("; ")
    }
}

/// Moves category `name` under `parent` (`None`: to the root); compares the outcome and
/// every path afterwards.
fn check_move(name: &str, parent: Option<&str>, expected: &str) {
    let tree = Tree::new();
    let command = UpdateCategory {
        id: tree.id(name),
        parent_id: Some(parent.map(|p| tree.id(p))),
        ..Default::default()
    };
    let result = tree.te.shop.send(command);
    if let Ok(moved) = &result {
        assert_eq!(moved.version, 2);
    }
    assert_eq!(
        format!("{} | {}", outcome(&result), tree.paths()),
        expected,
        "move {name} under {parent:?}"
    );
}

#[test]
fn category_moves() {
    let before = "Clothing; Clothing/Shirts; Clothing/Shirts/T-Shirts; Shoes";
    let refused = format!("validation_failed: parent_id | {before}");
    check_move("T-Shirts", Some("Shoes"), "ok | Clothing; Clothing/Shirts; Shoes; Shoes/T-Shirts");
    check_move("T-Shirts", None, "ok | Clothing; Clothing/Shirts; Shoes; T-Shirts");
    check_move(
        "Shirts",
        Some("Shoes"),
        "ok | Clothing; Shoes; Shoes/Shirts; Shoes/Shirts/T-Shirts",
    );
    check_move(
        "Shoes",
        Some("T-Shirts"),
        "ok | Clothing; Clothing/Shirts; Clothing/Shirts/T-Shirts; Clothing/Shirts/T-Shirts/Shoes",
    );
    check_move("Clothing", Some("Shirts"), &refused);
    check_move("Clothing", Some("T-Shirts"), &refused);
    check_move("Clothing", Some("Clothing"), &refused);
    check_move("Shirts", Some("T-Shirts"), &refused);
    check_move("Shirts", Some("cat_nope"), &refused);
    check_move("Shirts", Some(""), &refused);
    check_move("Shirts", Some("Clothing"), &format!("ok | {before}"));
    check_move("cat_nope", None, &format!("not_found: category | {before}"));
}

/// Deletes category `name`; compares the outcome and every path afterwards.
fn check_delete(name: &str, expected: &str) {
    let tree = Tree::new();
    let result = tree.te.shop.send(DeleteCategory { id: tree.id(name), expected_version: None });
    assert_eq!(format!("{} | {}", outcome(&result), tree.paths()), expected, "delete {name}");
}

#[test]
fn category_deletes() {
    let all = "Clothing; Clothing/Shirts; Clothing/Shirts/T-Shirts; Shoes";
    check_delete("Shoes", "ok | Clothing; Clothing/Shirts; Clothing/Shirts/T-Shirts");
    check_delete("Clothing", &format!("conflict | {all}"));
    check_delete("Shirts", &format!("conflict | {all}"));
    check_delete("T-Shirts", &format!("conflict | {all}"));
    check_delete("cat_nope", &format!("not_found: category | {all}"));
}

#[test]
fn a_category_lists_the_products_of_its_descendants() {
    let tree = Tree::new();
    let state = tree.te.state();
    let in_category = |name: &str| {
        let filter = ProductFilter { category_id: Some(tree.ids[name]), status: None };
        let page = state.products(&filter, None, 10);
        page.items.iter().map(|p| p.title.clone()).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(in_category("Clothing"), "Tee");
    assert_eq!(in_category("T-Shirts"), "Tee");
    assert_eq!(in_category("Shoes"), "");
}

#[test]
fn the_category_tree_has_a_depth_limit() {
    let te = engine();
    let mut parent: Option<String> = None;
    for depth in 1..=CATEGORY_DEPTH_MAX {
        let created = te
            .shop
            .send(CreateCategory { name: format!("Level {depth}"), parent_id: parent.clone() })
            .expect("within the limit");
        assert_eq!(te.state().category_path(&created.id).len(), depth);
        parent = Some(created.id.to_string());
    }
    let deeper = te.shop.send(CreateCategory { name: "Too deep".into(), parent_id: parent });
    assert_eq!(outcome(&deeper), "validation_failed: parent_id");
}

// --- inventory ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum StockOp {
    Set(i64),
    Adjust(i64),
}

/// SKU A has 5 on hand, `reserved` of them held by a pending order. Applies `op`;
/// compares the outcome and A's levels after it.
fn check_stock(reserved: i64, op: StockOp, expected: &str) {
    let te = engine();
    stocked_sku(&te.shop, "A", 100, 5);
    if reserved > 0 {
        place(&te.shop, &[("A", reserved)]);
    }
    let sku = Sku::new("A").unwrap();
    let before = te.state().stock(&sku).expect("stock row");
    let result = match op {
        StockOp::Set(on_hand) => te.shop.send(SetStock {
            sku: "A".into(),
            on_hand,
            reason: "count".into(),
            expected_version: Some(before.version),
        }),
        StockOp::Adjust(delta) => {
            te.shop.send(AdjustStock { sku: "A".into(), delta, reason: "received".into() })
        }
    };
    let after = te.state().stock(&sku).expect("stock row");
    assert_eq!(
        format!("{} | {}", outcome(&result), stock_line(te.state(), &["A"])),
        expected,
        "{op:?}"
    );
    match &result {
        Ok(reply) => {
            assert_eq!(reply, &after);
            assert_eq!(after.version, before.version + 1);
        }
        Err(_) => assert_eq!(after, before),
    }
    check_invariants(te.state());
}

#[test]
fn stock_levels() {
    use StockOp::*;
    check_stock(0, Set(10), "ok | A 10/0");
    check_stock(0, Set(0), "ok | A 0/0");
    check_stock(0, Set(5), "ok | A 5/0");
    check_stock(0, Set(ON_HAND_MAX), "ok | A 1000000000/0");
    check_stock(3, Set(3), "ok | A 3/3");
    check_stock(3, Set(9), "ok | A 9/3");
    check_stock(3, Set(2), "conflict | A 5/3");
    check_stock(5, Set(0), "conflict | A 5/5");
    check_stock(0, Set(-1), "validation_failed: on_hand | A 5/0");
    check_stock(0, Set(ON_HAND_MAX + 1), "validation_failed: on_hand | A 5/0");
    check_stock(0, Adjust(4), "ok | A 9/0");
    check_stock(0, Adjust(-5), "ok | A 0/0");
    check_stock(0, Adjust(-6), "conflict | A 5/0");
    check_stock(3, Adjust(10), "ok | A 15/3");
    check_stock(3, Adjust(-2), "ok | A 3/3");
    check_stock(3, Adjust(-3), "conflict | A 5/3");
    check_stock(0, Adjust(0), "validation_failed: delta | A 5/0");
    check_stock(0, Adjust(ON_HAND_MAX), "validation_failed: delta | A 5/0");
}

// --- carts --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum CartOp {
    Add(&'static str, i64),
    Set(&'static str, i64),
    Remove(&'static str),
}

/// A cart in `currency` on an engine allowing 3 lines per cart; the catalog has A, B, C
/// and F in USD, E in EUR and D in a draft product. Every op but the last must succeed;
/// compares the last op's outcome and the lines afterwards, and checks that a refused op
/// left the cart as it was.
fn check_cart(currency: &str, ops: &[CartOp], expected: &str) {
    let te = TestEngine::with(|c| c.limits.cart_lines_max = 3);
    te.shop.send(product("Usd", &[("A", 100), ("B", 200), ("C", 300), ("F", 400)])).expect("usd");
    let mut euro = product("Euro", &[("E", 100)]);
    euro.variants[0].price.currency = "EUR".into();
    te.shop.send(euro).expect("eur");
    let mut draft = product("Draft", &[("D", 100)]);
    draft.status = Some(ProductStatus::Draft);
    te.shop.send(draft).expect("draft");
    let cart = te
        .shop
        .send(CreateCart { customer_id: None, currency: Some(currency.into()) })
        .expect("cart");
    let (last, first) = ops.split_last().expect("at least one op");
    let run = |op: &CartOp| {
        let cart_id = cart.id.to_string();
        match *op {
            CartOp::Add(sku, quantity) => {
                te.shop.send(AddCartItem { cart_id, sku: sku.into(), quantity })
            }
            CartOp::Set(sku, quantity) => {
                te.shop.send(SetCartItem { cart_id, sku: sku.into(), quantity })
            }
            CartOp::Remove(sku) => te.shop.send(RemoveCartItem { cart_id, sku: sku.into() }),
        }
    };
    for op in first {
        run(op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    let before = te.state().cart(&cart.id).expect("cart");
    let result = run(last);
    let after = te.state().cart(&cart.id).expect("cart");
    match &result {
        Ok(reply) => assert_eq!(**reply, *after),
        Err(_) => assert_eq!(after, before),
    }
    assert_eq!(format!("{} | {}", outcome(&result), cart_lines(&after)), expected, "{ops:?}");
    check_invariants(te.state());
}

#[test]
fn cart_lines_change() {
    use CartOp::*;
    check_cart("USD", &[Add("A", 1)], "ok | A×1");
    check_cart("USD", &[Add("A", 1), Add("A", 2)], "ok | A×3");
    check_cart("USD", &[Add("A", 1), Add("B", 2), Add("A", 1)], "ok | A×2 B×2");
    check_cart("USD", &[Add("A", 1), Set("A", 5)], "ok | A×5");
    check_cart("USD", &[Set("A", 2)], "ok | A×2");
    check_cart("USD", &[Add("A", 1), Add("B", 1), Set("A", 0)], "ok | B×1");
    check_cart("USD", &[Add("A", 1), Add("B", 1), Set("A", 0), Add("A", 4)], "ok | B×1 A×4");
    check_cart("USD", &[Set("A", 0)], "ok | ");
    check_cart("USD", &[Add("A", 1), Remove("A")], "ok | ");
    check_cart("USD", &[Remove("A")], "not_found: SKU | ");
    check_cart("USD", &[Add("A", 1), Remove("B")], "not_found: SKU | A×1");
}

#[test]
fn cart_limits() {
    use CartOp::*;
    check_cart("USD", &[Add("A", 1000)], "ok | A×1000");
    check_cart("USD", &[Add("A", 1001)], "validation_failed: quantity | ");
    check_cart("USD", &[Add("A", 999), Add("A", 1)], "ok | A×1000");
    check_cart("USD", &[Add("A", 999), Add("A", 2)], "validation_failed: quantity | A×999");
    check_cart("USD", &[Add("A", 1), Set("A", 1000)], "ok | A×1000");
    check_cart("USD", &[Add("A", 1), Set("A", 1001)], "validation_failed: quantity | A×1");
    check_cart("USD", &[Add("A", 0)], "validation_failed: quantity | ");
    check_cart("USD", &[Add("A", 1), Add("A", -1)], "validation_failed: quantity | A×1");
    check_cart("USD", &[Add("A", 1), Set("A", -1)], "validation_failed: quantity | A×1");
    check_cart("USD", &[Add("A", 1), Add("B", 1), Add("C", 1)], "ok | A×1 B×1 C×1");
    check_cart(
        "USD",
        &[Add("A", 1), Add("B", 1), Add("C", 1), Add("F", 1)],
        "validation_failed: sku | A×1 B×1 C×1",
    );
    check_cart("USD", &[Add("A", 1), Add("B", 1), Add("C", 1), Add("A", 1)], "ok | A×2 B×1 C×1");
    check_cart(
        "USD",
        &[Add("A", 1), Add("B", 1), Add("C", 1), Set("B", 0), Add("F", 1)],
        "ok | A×1 C×1 F×1",
    );
}

#[test]
fn cart_items_must_be_purchasable_in_the_cart_currency() {
    use CartOp::*;
    check_cart("USD", &[Add("E", 1)], "validation_failed: sku | ");
    check_cart("EUR", &[Add("E", 1)], "ok | E×1");
    check_cart("EUR", &[Add("E", 1), Add("A", 1)], "validation_failed: sku | E×1");
    check_cart("EUR", &[Set("A", 1)], "validation_failed: sku | ");
    check_cart("USD", &[Add("D", 1)], "validation_failed: sku | ");
    check_cart("USD", &[Add("NOPE", 1)], "validation_failed: sku | ");
    check_cart("USD", &[Add("no such sku", 1)], "validation_failed: sku | ");
}

#[test]
fn a_cart_belongs_to_its_customer_and_defaults_to_usd() {
    let te = engine();
    let ann = register(&te.shop, "ann@example.com").expect("register");
    let cart = te
        .shop
        .send(CreateCart { customer_id: Some(ann.id.to_string()), currency: None })
        .expect("cart");
    assert_eq!((cart.customer_id.as_ref(), cart.currency), (Some(&ann.id), Currency::USD));
    assert_eq!((cart.version, cart.status.clone(), cart.lines.len()), (1, CartStatus::Open, 0));
    let unknown = te.shop.send(CreateCart { customer_id: Some("cus_nope".into()), currency: None });
    assert_eq!(outcome(&unknown), "not_found: customer");
}

// --- checkout -----------------------------------------------------------------------

/// SKUs A (1999), B (500) and C (250) have `stock` on hand; a first guest order holds
/// `held`. A new cart with `lines` is checked out; compares the outcome (the order's
/// status and total) and the levels of A, B and C afterwards.
fn check_checkout(
    stock: &[(&str, i64)],
    held: &[(&str, i64)],
    lines: &[(&str, i64)],
    expected: &str,
) {
    let te = engine();
    te.shop.send(product("Abc", &[("A", 1999), ("B", 500), ("C", 250)])).expect("create");
    for (sku, on_hand) in stock {
        set_stock(&te.shop, sku, *on_hand);
    }
    if !held.is_empty() {
        place(&te.shop, held);
    }
    let cart = cart_with(&te.shop, lines);
    let orders_before = te.state().order_count();
    let result = checkout(&te.shop, &cart.id);
    let got = match &result {
        Ok(order) => {
            check_order_matches_cart(te.state(), order, &cart);
            format!("{} {}", order.status.as_str(), order.total.amount())
        }
        Err(e) => {
            assert_eq!(te.state().order_count(), orders_before);
            assert_eq!(
                te.state().cart(&cart.id).as_deref(),
                Some(&*cart),
                "a refused checkout keeps the cart"
            );
            error_code(e)
        }
    };
    assert_eq!(
        format!("{got} | {}", stock_line(te.state(), &["A", "B", "C"])),
        expected,
        "{lines:?}"
    );
    check_invariants(te.state());
}

fn check_order_matches_cart(state: &State, order: &Order, cart: &Cart) {
    assert_eq!(state.order(&order.id).as_deref(), Some(order));
    assert_eq!(order.lines.len(), cart.lines.len());
    for (ordered, carted) in order.lines.iter().zip(&cart.lines) {
        assert_eq!((&ordered.sku, ordered.quantity), (&carted.sku, carted.quantity));
        assert_eq!(
            ordered.line_total.amount(),
            ordered.unit_price.amount() * i64::from(ordered.quantity)
        );
    }
    let subtotal: i64 = order.lines.iter().map(|l| l.line_total.amount()).sum();
    assert_eq!((order.subtotal.amount(), order.total.amount()), (subtotal, subtotal));
    assert_eq!(order.reservation_expires_at, order.created_at + TTL_MS);
    assert_eq!((order.version, order.cart_id, order.payments.len()), (1, cart.id, 0));
    let closed = state.cart(&cart.id).expect("cart");
    assert_eq!(closed.status, CartStatus::CheckedOut(order.id));
}

#[test]
fn checkout_reserves_every_line_or_none() {
    let ab = [("A", 5), ("B", 3)];
    check_checkout(&ab, &[], &[("A", 2), ("B", 3)], "pending_payment 5498 | A 5/2, B 3/3, C 0/0");
    check_checkout(&ab, &[], &[("A", 5)], "pending_payment 9995 | A 5/5, B 3/0, C 0/0");
    check_checkout(&ab, &[], &[("A", 2), ("B", 4)], "out_of_stock: B 4>3 | A 5/0, B 3/0, C 0/0");
    check_checkout(
        &ab,
        &[],
        &[("B", 9), ("A", 9)],
        "out_of_stock: B 9>3, A 9>5 | A 5/0, B 3/0, C 0/0",
    );
    check_checkout(&ab, &[], &[("A", 1), ("C", 1)], "out_of_stock: C 1>0 | A 5/0, B 3/0, C 0/0");
    check_checkout(&ab, &[("A", 4)], &[("A", 1)], "pending_payment 1999 | A 5/5, B 3/0, C 0/0");
    check_checkout(&ab, &[("A", 4)], &[("A", 2)], "out_of_stock: A 2>1 | A 5/4, B 3/0, C 0/0");
    check_checkout(
        &ab,
        &[("A", 5), ("B", 3)],
        &[("A", 1), ("B", 1)],
        "out_of_stock: A 1>0, B 1>0 | A 5/5, B 3/3, C 0/0",
    );
    check_checkout(&ab, &[], &[], "empty_cart | A 5/0, B 3/0, C 0/0");
}

/// A guest cart holding one A is checked out; then `command` is sent for that cart.
fn check_closed_cart(name: &str, command: impl FnOnce(&BlockingEngine, String) -> Result<()>) {
    let te = engine();
    stocked_sku(&te.shop, "A", 100, 5);
    stocked_sku(&te.shop, "B", 100, 5);
    let cart = cart_with(&te.shop, &[("A", 1)]);
    checkout(&te.shop, &cart.id).expect("checkout");
    let closed = te.state().cart(&cart.id).expect("cart");
    let lsn = te.engine.last_lsn();
    let result = command(&te.shop, cart.id.to_string());
    assert_eq!(outcome(&result), "invalid_state", "{name}");
    assert_eq!(te.state().cart(&cart.id), Some(closed), "{name}");
    assert_eq!(te.engine.last_lsn(), lsn, "{name}");
    check_invariants(te.state());
}

#[test]
fn a_checked_out_cart_is_closed() {
    check_closed_cart("add", |shop, cart_id| {
        shop.send(AddCartItem { cart_id, sku: "B".into(), quantity: 1 }).map(drop)
    });
    check_closed_cart("add to its line", |shop, cart_id| {
        shop.send(AddCartItem { cart_id, sku: "A".into(), quantity: 1 }).map(drop)
    });
    check_closed_cart("set", |shop, cart_id| {
        shop.send(SetCartItem { cart_id, sku: "A".into(), quantity: 3 }).map(drop)
    });
    check_closed_cart("set to zero", |shop, cart_id| {
        shop.send(SetCartItem { cart_id, sku: "A".into(), quantity: 0 }).map(drop)
    });
    check_closed_cart("remove", |shop, cart_id| {
        shop.send(RemoveCartItem { cart_id, sku: "A".into() }).map(drop)
    });
    check_closed_cart("checkout again", |shop, cart_id| {
        shop.send(Checkout {
            cart_id,
            email: Some("guest@example.com".into()),
            ..Default::default()
        })
        .map(drop)
    });
}

// --- payment and order transitions -------------------------------------------------

/// A guest order holds two of A's five units; it is paid with `token`. Compares the
/// outcome (and card brand), the order's status and version, and A's levels.
fn check_payment(token: &str, expected: &str) {
    let te = engine();
    stocked_sku(&te.shop, "A", 1999, 5);
    let order = place(&te.shop, &[("A", 2)]);
    let result = pay_with(&te.shop, &order.id, token);
    let got = match &result {
        Ok(receipt) => {
            assert_eq!(receipt.payment.amount, order.total);
            assert_eq!(receipt.order.payments, vec![receipt.payment.clone()]);
            format!("ok {}", receipt.payment.card_brand)
        }
        Err(e) => error_code(e),
    };
    let after = te.state().order(&order.id).expect("order");
    if let Ok(receipt) = &result {
        assert_eq!(*receipt.order, *after);
    } else {
        assert_eq!(*after, *order, "a refused payment leaves the order unchanged");
    }
    let got = format!(
        "{got} | {} v{} | {}",
        after.status.as_str(),
        after.version,
        stock_line(te.state(), &["A"])
    );
    assert_eq!(got, expected, "{token}");
    check_invariants(te.state());
}

#[test]
fn payments() {
    check_payment("tok_visa", "ok visa | paid v2 | A 3/0");
    check_payment("tok_mastercard", "ok mastercard | paid v2 | A 3/0");
    check_payment("tok_declined", "payment_declined | pending_payment v1 | A 5/2");
    check_payment("tok_amex", "validation_failed: token | pending_payment v1 | A 5/2");
    check_payment("4242424242424242", "validation_failed: token | pending_payment v1 | A 5/2");
    check_payment("", "validation_failed: token | pending_payment v1 | A 5/2");
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Pay,
    Decline,
    Cancel,
    Fulfil,
    /// Moves the clock past the reservation and sends `ExpireDue`.
    Expire,
    /// Refunds this many minor units (everything not yet refunded with `None`).
    Refund(Option<i64>),
}

fn refund(shop: &BlockingEngine, order: &OrderId, amount: Option<i64>) -> Result<RefundReceipt> {
    shop.send(RefundPayment {
        order_id: order.to_string(),
        amount: amount.map(|a| MoneyInput { amount: a, currency: "USD".into() }),
        reason: "damaged".into(),
    })
}

/// A guest order holds two of A's five units; `steps` are applied in turn. Compares
/// every step's outcome (`expired N` for an expiry sweep), then the order's status and
/// A's levels.
fn check_transitions(steps: &[Step], expected: &str) {
    let te = engine();
    stocked_sku(&te.shop, "A", 1999, 5);
    let order = place(&te.shop, &[("A", 2)]);
    let mut outcomes = Vec::new();
    for step in steps {
        let order_id = order.id.to_string();
        let got = match step {
            Step::Pay => outcome(&pay_with(&te.shop, &order.id, "tok_visa")),
            Step::Decline => outcome(&pay_with(&te.shop, &order.id, "tok_declined")),
            Step::Cancel => {
                outcome(&te.shop.send(CancelOrder { order_id, expected_version: None }))
            }
            Step::Fulfil => outcome(&te.shop.send(FulfillOrder { order_id })),
            Step::Refund(amount) => outcome(&refund(&te.shop, &order.id, *amount)),
            Step::Expire => {
                te.clock.advance(TTL_MS);
                let expired = te.shop.send(ExpireDue).expect("expire");
                format!("expired {expired}")
            }
        };
        outcomes.push(got);
        check_invariants(te.state());
    }
    let after = te.state().order(&order.id).expect("order");
    let got = format!(
        "{} | {} | {}",
        outcomes.join(", "),
        after.status.as_str(),
        stock_line(te.state(), &["A"])
    );
    assert_eq!(got, expected, "{steps:?}");
}

#[test]
fn order_transitions() {
    use Step::*;
    check_transitions(&[Pay], "ok | paid | A 3/0");
    check_transitions(&[Pay, Fulfil], "ok, ok | fulfilled | A 3/0");
    check_transitions(&[Cancel], "ok | cancelled | A 5/0");
    check_transitions(&[Expire], "expired 1 | expired | A 5/0");
    check_transitions(&[Decline, Pay], "payment_declined, ok | paid | A 3/0");
    check_transitions(&[Decline, Cancel], "payment_declined, ok | cancelled | A 5/0");
    check_transitions(&[Fulfil], "invalid_state | pending_payment | A 5/2");
    check_transitions(&[Pay, Pay], "ok, invalid_state | paid | A 3/0");
    check_transitions(&[Pay, Decline], "ok, invalid_state | paid | A 3/0");
    check_transitions(&[Pay, Cancel], "ok, invalid_state | paid | A 3/0");
    check_transitions(&[Pay, Expire], "ok, expired 0 | paid | A 3/0");
    check_transitions(&[Pay, Fulfil, Fulfil], "ok, ok, invalid_state | fulfilled | A 3/0");
    check_transitions(&[Pay, Fulfil, Cancel], "ok, ok, invalid_state | fulfilled | A 3/0");
    check_transitions(&[Pay, Fulfil, Pay], "ok, ok, invalid_state | fulfilled | A 3/0");
    check_transitions(&[Pay, Fulfil, Expire], "ok, ok, expired 0 | fulfilled | A 3/0");
    check_transitions(&[Cancel, Pay], "ok, invalid_state | cancelled | A 5/0");
    check_transitions(&[Cancel, Decline], "ok, invalid_state | cancelled | A 5/0");
    check_transitions(&[Cancel, Cancel], "ok, invalid_state | cancelled | A 5/0");
    check_transitions(&[Cancel, Fulfil], "ok, invalid_state | cancelled | A 5/0");
    check_transitions(&[Cancel, Expire], "ok, expired 0 | cancelled | A 5/0");
    check_transitions(&[Expire, Pay], "expired 1, invalid_state | expired | A 5/0");
    check_transitions(&[Expire, Decline], "expired 1, invalid_state | expired | A 5/0");
    check_transitions(&[Expire, Cancel], "expired 1, invalid_state | expired | A 5/0");
    check_transitions(&[Expire, Fulfil], "expired 1, invalid_state | expired | A 5/0");
    check_transitions(&[Expire, Expire], "expired 1, expired 0 | expired | A 5/0");
    // Refunds give money back, not units: the stock stays shipped.
    let all = Refund(None);
    check_transitions(&[all], "invalid_state | pending_payment | A 5/2");
    check_transitions(&[Pay, all], "ok, ok | refunded | A 3/0");
    check_transitions(&[Pay, Fulfil, all], "ok, ok, ok | refunded | A 3/0");
    // Partly refunded before it shipped, it still ships, once.
    check_transitions(&[Pay, Refund(Some(1)), Fulfil], "ok, ok, ok | partially_refunded | A 3/0");
    check_transitions(
        &[Pay, Refund(Some(1)), Fulfil, Fulfil],
        "ok, ok, ok, invalid_state | partially_refunded | A 3/0",
    );
    check_transitions(
        &[Pay, Fulfil, Refund(Some(1)), Fulfil],
        "ok, ok, ok, invalid_state | partially_refunded | A 3/0",
    );
    check_transitions(&[Pay, all, Fulfil], "ok, ok, invalid_state | refunded | A 3/0");
    check_transitions(
        &[Pay, Refund(Some(1)), Cancel],
        "ok, ok, invalid_state | partially_refunded | A 3/0",
    );
    check_transitions(&[Pay, all, all], "ok, ok, invalid_state | refunded | A 3/0");
    check_transitions(&[Pay, all, Cancel], "ok, ok, invalid_state | refunded | A 3/0");
    check_transitions(&[Pay, all, Pay], "ok, ok, invalid_state | refunded | A 3/0");
    check_transitions(&[Cancel, all], "ok, invalid_state | cancelled | A 5/0");
    check_transitions(&[Expire, all], "expired 1, invalid_state | expired | A 5/0");
}

// --- refunds and the ledger ---------------------------------------------------------

/// A guest order of two A at 19.99 (39.98) is paid, then refunded `amounts` in turn
/// (`None`: the rest). Compares each refund's outcome, then the order's status and
/// its ledger: the entries' kinds and amounts, captured, refunded and balance.
fn check_refunds(amounts: &[Option<i64>], expected: &str) {
    let te = engine();
    stocked_sku(&te.shop, "A", 1999, 5);
    let order = place(&te.shop, &[("A", 2)]);
    pay_with(&te.shop, &order.id, "tok_visa").expect("pay");
    let mut outcomes = Vec::new();
    for amount in amounts {
        let before = te.state().order(&order.id).expect("order");
        match refund(&te.shop, &order.id, *amount) {
            Ok(receipt) => {
                assert_eq!(receipt.order, te.state().order(&order.id).unwrap());
                assert_eq!(receipt.refund.order_id, order.id);
                assert_eq!(receipt.order.version, before.version + 1);
                outcomes.push(format!("ok {}", receipt.refund.amount.amount()));
            }
            Err(e) => {
                assert_eq!(
                    te.state().order(&order.id).unwrap(),
                    before,
                    "a refusal changes nothing"
                );
                outcomes.push(error_code(&e));
            }
        }
        check_invariants(te.state());
    }
    let after = te.state().order(&order.id).expect("order");
    let ledger = te.state().ledger(&after);
    let entries: Vec<String> = ledger
        .entries
        .iter()
        .map(|e| format!("{} {}", e.kind.as_str(), e.amount.amount()))
        .collect();
    let got = format!(
        "{} | {} | {} | {}/{}/{}",
        outcomes.join(", "),
        after.status.as_str(),
        entries.join(", "),
        ledger.captured.amount(),
        ledger.refunded.amount(),
        ledger.balance().amount(),
    );
    assert_eq!(got, expected, "{amounts:?}");
}

#[test]
fn refunds() {
    check_refunds(&[None], "ok 3998 | refunded | capture 3998, refund 3998 | 3998/3998/0");
    check_refunds(
        &[Some(1000), None],
        "ok 1000, ok 2998 | refunded | capture 3998, refund 1000, refund 2998 | 3998/3998/0",
    );
    check_refunds(
        &[Some(1000), Some(1000)],
        "ok 1000, ok 1000 | partially_refunded | capture 3998, refund 1000, refund 1000 | 3998/2000/1998",
    );
    check_refunds(&[Some(3998)], "ok 3998 | refunded | capture 3998, refund 3998 | 3998/3998/0");
    // Never more than captured, never nothing.
    check_refunds(
        &[Some(3999)],
        "validation_failed: amount.amount | paid | capture 3998 | 3998/0/3998",
    );
    check_refunds(
        &[Some(3000), Some(999)],
        "ok 3000, validation_failed: amount.amount | partially_refunded | capture 3998, refund 3000 | 3998/3000/998",
    );
    check_refunds(
        &[Some(0)],
        "validation_failed: amount.amount | paid | capture 3998 | 3998/0/3998",
    );
    check_refunds(
        &[None, Some(1)],
        "ok 3998, invalid_state | refunded | capture 3998, refund 3998 | 3998/3998/0",
    );
}

#[test]
fn a_refund_is_in_the_orders_currency_with_a_bounded_reason() {
    let te = engine();
    stocked_sku(&te.shop, "A", 1999, 5);
    let order = place(&te.shop, &[("A", 1)]);
    pay_with(&te.shop, &order.id, "tok_visa").expect("pay");
    let send = |amount: MoneyInput, reason: &str| {
        te.shop.send(RefundPayment {
            order_id: order.id.to_string(),
            amount: Some(amount),
            reason: reason.into(),
        })
    };
    let money = |amount: i64, currency: &str| MoneyInput { amount, currency: currency.into() };
    let usd = money(100, "USD");
    for (bad, field) in [
        (money(100, "EUR"), "amount.currency"),
        (money(100, "usd"), "amount.currency"),
        (money(100, "XXQ"), "amount.currency"),
        (money(-1, "USD"), "amount.amount"),
        (money(i64::MAX, "USD"), "amount.amount"),
    ] {
        let error = send(bad.clone(), "").unwrap_err();
        assert_eq!(error_code(&error), format!("validation_failed: {field}"), "{bad:?}");
    }
    assert_eq!(
        error_code(&send(usd.clone(), &"x".repeat(501)).unwrap_err()),
        "validation_failed: reason"
    );
    assert_eq!(error_code(&send(usd.clone(), "a\u{0}b").unwrap_err()), "validation_failed: reason");
    let missing =
        RefundPayment { order_id: "ord_nope".into(), amount: None, reason: String::new() };
    assert_eq!(error_code(&te.shop.send(missing).unwrap_err()), "not_found: order");
    let receipt = send(usd, "line 1\nline 2").expect("a multi-line reason");
    assert_eq!(receipt.refund.number, 1);
    assert_eq!(receipt.refund.reason, "line 1\nline 2");
    assert!(receipt.refund.provider_reference.starts_with("test_re_"));
    assert_eq!(*te.state().refunds(&order.id), vec![receipt.refund]);
}

#[test]
fn refunds_survive_a_reopen_and_the_ledger_reconciles() {
    let te = engine();
    stocked_sku(&te.shop, "A", 500, 50);
    let mut orders = Vec::new();
    for i in 0..12 {
        let order = place(&te.shop, &[("A", 1 + i % 3)]);
        if i % 4 != 3 {
            pay_with(&te.shop, &order.id, "tok_visa").expect("pay");
        }
        match i % 4 {
            0 => drop(refund(&te.shop, &order.id, None).expect("full")),
            1 => drop(refund(&te.shop, &order.id, Some(100)).expect("partial")),
            2 => {
                refund(&te.shop, &order.id, Some(100)).expect("partial");
                refund(&te.shop, &order.id, Some(50)).expect("partial");
            }
            _ => {}
        }
        orders.push(order.id);
    }
    let before: Vec<_> = orders
        .iter()
        .map(|id| {
            let order = te.state().order(id).unwrap();
            (te.state().ledger(&order), order.status)
        })
        .collect();
    let reconciliation = te.state().reconcile();
    assert_eq!(
        (reconciliation.orders, reconciliation.refunds, reconciliation.mismatch_count),
        (12, 12, 0)
    );
    let usd = &reconciliation.totals[0];
    let captured: i64 = before.iter().map(|(l, _)| l.captured.amount()).sum();
    let refunded: i64 = before.iter().map(|(l, _)| l.refunded.amount()).sum();
    assert_eq!((usd.captured, usd.refunded), (i128::from(captured), i128::from(refunded)));
    let te = te.reopen();
    let after: Vec<_> = orders
        .iter()
        .map(|id| {
            let order = te.state().order(id).unwrap();
            (te.state().ledger(&order), order.status)
        })
        .collect();
    assert_eq!(after, before, "the refunds and statuses came back");
    assert_eq!(te.state().reconcile(), reconciliation);
}

// --- reservation expiry -------------------------------------------------------------

/// Runs `script`, words of `action@ms` with times in milliseconds after [`T0`] (never
/// going back): `place` checks out one A (A has 10 units), `pay` and `cancel` act on the
/// latest order, `sweep` sends `ExpireDue`. The reservation lives `ttl_ms`. Compares
/// the outcomes (a sweep's count), every order's status and A's levels.
fn check_expiry(ttl_ms: i64, script: &str, expected: &str) {
    let te = TestEngine::with(|c| c.limits.reservation_ttl_ms = ttl_ms);
    stocked_sku(&te.shop, "A", 100, 10);
    let mut orders: Vec<OrderId> = Vec::new();
    let mut outcomes = Vec::new();
    for word in script.split_whitespace() {
        let (action, at) = word.split_once('@').expect("action@ms");
        te.clock.set(T0 + at.parse::<i64>().expect("milliseconds"));
        let got = match action {
            "place" => {
                let order = place(&te.shop, &[("A", 1)]);
                assert_eq!(order.reservation_expires_at, te.clock.now_ms() + ttl_ms);
                orders.push(order.id);
                "placed".to_string()
            }
            "pay" => outcome(&pay(&te.shop, orders.last().expect("an order"))),
            "cancel" => {
                let order_id = orders.last().expect("an order").to_string();
                outcome(&te.shop.send(CancelOrder { order_id, expected_version: None }))
            }
            "sweep" => te.shop.send(ExpireDue).expect("expire").to_string(),
            other => panic!("unknown action {other}"),
        };
        outcomes.push(got);
        check_invariants(te.state());
    }
    let statuses: Vec<&str> =
        orders.iter().map(|id| te.state().order(id).expect("order").status.as_str()).collect();
    let got = format!(
        "{} | {} | {}",
        outcomes.join(" "),
        statuses.join(" "),
        stock_line(te.state(), &["A"])
    );
    assert_eq!(got, expected, "{script}");
}

#[test]
fn reservations_expire() {
    let ttl = TTL_MS;
    check_expiry(ttl, "place@0 sweep@899999 sweep@900000", "placed 0 1 | expired | A 10/0");
    check_expiry(
        ttl,
        "place@0 sweep@0 sweep@900000 sweep@2000000",
        "placed 0 1 0 | expired | A 10/0",
    );
    check_expiry(ttl, "place@0 place@0 sweep@900000", "placed placed 2 | expired expired | A 10/0");
    check_expiry(
        ttl,
        "place@0 place@300000 sweep@900000 sweep@1199999 sweep@1200000",
        "placed placed 1 0 1 | expired expired | A 10/0",
    );
    check_expiry(
        ttl,
        "place@0 place@300000 sweep@900000",
        "placed placed 1 | expired pending_payment | A 10/1",
    );
    check_expiry(ttl, "place@0 pay@899999 sweep@900000", "placed ok 0 | paid | A 9/0");
    check_expiry(ttl, "place@0 cancel@100 sweep@900000", "placed ok 0 | cancelled | A 10/0");
    check_expiry(
        ttl,
        "place@0 sweep@900000 pay@900000",
        "placed 1 invalid_state | expired | A 10/0",
    );
    // Past its time but not yet swept, the order cannot be paid; cancelling still works.
    check_expiry(ttl, "place@0 pay@900000", "placed invalid_state | pending_payment | A 10/1");
    check_expiry(
        ttl,
        "place@0 pay@900000 sweep@900001",
        "placed invalid_state 1 | expired | A 10/0",
    );
    check_expiry(ttl, "place@0 cancel@900000 sweep@900000", "placed ok 0 | cancelled | A 10/0");
    check_expiry(60_000, "place@0 sweep@59999 sweep@60000", "placed 0 1 | expired | A 10/0");
    check_expiry(60_000, "place@0 pay@59999", "placed ok | paid | A 9/0");
}

#[test]
fn an_expiry_sweep_handles_at_most_its_batch() {
    let te = engine();
    let orders = EXPIRIES_PER_COMMAND_MAX + 5;
    stocked_sku(&te.shop, "A", 100, orders as i64);
    for _ in 0..orders {
        place(&te.shop, &[("A", 1)]);
    }
    te.clock.advance(TTL_MS);
    assert_eq!(te.shop.send(ExpireDue).expect("sweep"), EXPIRIES_PER_COMMAND_MAX);
    assert_eq!(te.shop.send(ExpireDue).expect("sweep"), 5);
    assert_eq!(te.shop.send(ExpireDue).expect("sweep"), 0);
    assert_eq!(stock_line(te.state(), &["A"]), format!("A {orders}/0"));
    check_invariants(te.state());
}

// --- idempotency keys ---------------------------------------------------------------

/// `(scope, key, email or token)` of a request.
type Keyed<'a> = (&'a str, &'a str, &'a str);

fn key(scope: &str, key: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey { scope: scope.into(), key: key.into() })
}

/// Checks out a cart holding two of A's five units with `first`; then, after reopening
/// the engine when `reopen`, sends `second` for the same cart. Compares the outcomes
/// (`replayed` when the second returns the first order unchanged), the number of orders
/// and A's levels.
fn check_checkout_retry(first: Keyed<'_>, second: Keyed<'_>, reopen: bool, expected: &str) {
    let mut te = engine();
    stocked_sku(&te.shop, "A", 100, 5);
    let cart = cart_with(&te.shop, &[("A", 2)]);
    let send = |te: &TestEngine, (scope, k, email): Keyed<'_>| {
        let email = Some(email.to_string());
        te.shop.send(Checkout {
            cart_id: cart.id.to_string(),
            email,
            idempotency: key(scope, k),
            ..Default::default()
        })
    };
    let placed = send(&te, first).expect("first checkout");
    if reopen {
        te = te.reopen();
    }
    let lsn = te.engine.last_lsn();
    let retried = send(&te, second);
    let got = match &retried {
        Ok(order) if **order == *placed => {
            assert_eq!(te.engine.last_lsn(), lsn, "a replay writes nothing");
            "replayed".to_string()
        }
        other => outcome(other),
    };
    let got = format!(
        "{got} | {} order(s) | {}",
        te.state().order_count(),
        stock_line(te.state(), &["A"])
    );
    assert_eq!(got, expected, "{first:?} then {second:?}, reopen {reopen}");
    check_invariants(te.state());
}

#[test]
fn checkout_idempotency() {
    let first = ("guest", "k1", "ann@example.com");
    for reopen in [false, true] {
        check_checkout_retry(first, first, reopen, "replayed | 1 order(s) | A 5/2");
        check_checkout_retry(
            first,
            ("guest", "k1", "bob@example.com"),
            reopen,
            "idempotency_key_reused | 1 order(s) | A 5/2",
        );
        check_checkout_retry(
            first,
            ("guest", "k2", "ann@example.com"),
            reopen,
            "invalid_state | 1 order(s) | A 5/2",
        );
        check_checkout_retry(
            first,
            ("cus_1", "k1", "ann@example.com"),
            reopen,
            "invalid_state | 1 order(s) | A 5/2",
        );
    }
}

/// A guest order holds two of A's five units. Pays it with `first`; then, after
/// reopening the engine when `reopen`, sends `second` for the same order. Compares both
/// outcomes (`replayed` when the second returns the first receipt), the order's status
/// and payment count, and A's levels.
fn check_payment_retry(first: Keyed<'_>, second: Keyed<'_>, reopen: bool, expected: &str) {
    let mut te = engine();
    stocked_sku(&te.shop, "A", 100, 5);
    let order = place(&te.shop, &[("A", 2)]);
    let send = |te: &TestEngine, (scope, k, token): Keyed<'_>| {
        te.shop.send(CapturePayment {
            order_id: order.id.to_string(),
            method: "test_card".into(),
            token: token.into(),
            idempotency: key(scope, k),
        })
    };
    let paid = send(&te, first);
    if reopen {
        te = te.reopen();
    }
    let lsn = te.engine.last_lsn();
    let retried = send(&te, second);
    let got = match (&paid, &retried) {
        (Ok(paid), Ok(again)) if again == paid => {
            assert_eq!(te.engine.last_lsn(), lsn, "a replay writes nothing");
            "replayed".to_string()
        }
        (_, other) => outcome(other),
    };
    let after = te.state().order(&order.id).expect("order");
    let got = format!(
        "{}, {got} | {} with {} payment(s) | {}",
        outcome(&paid),
        after.status.as_str(),
        after.payments.len(),
        stock_line(te.state(), &["A"])
    );
    assert_eq!(got, expected, "{first:?} then {second:?}, reopen {reopen}");
    check_invariants(te.state());
}

#[test]
fn payment_idempotency() {
    let visa = ("guest", "p1", "tok_visa");
    for reopen in [false, true] {
        check_payment_retry(visa, visa, reopen, "ok, replayed | paid with 1 payment(s) | A 3/0");
        check_payment_retry(
            visa,
            ("guest", "p1", "tok_mastercard"),
            reopen,
            "ok, idempotency_key_reused | paid with 1 payment(s) | A 3/0",
        );
        check_payment_retry(
            visa,
            ("guest", "p2", "tok_visa"),
            reopen,
            "ok, invalid_state | paid with 1 payment(s) | A 3/0",
        );
        check_payment_retry(
            visa,
            ("cus_1", "p1", "tok_visa"),
            reopen,
            "ok, invalid_state | paid with 1 payment(s) | A 3/0",
        );
        let declined = ("guest", "p1", "tok_declined");
        check_payment_retry(
            declined,
            declined,
            reopen,
            "payment_declined, payment_declined | pending_payment with 0 payment(s) | A 5/2",
        );
    }
}

/// Five of SKU `A` in stock, a cart of two, and a guest's checkout of it (key `k1`).
fn two_of_five_checked_out_by_a_guest(shop: &BlockingEngine) -> Checkout {
    stocked_sku(shop, "A", 100, 5);
    let cart = cart_with(shop, &[("A", 2)]);
    Checkout {
        cart_id: cart.id.to_string(),
        email: Some("ann@example.com".into()),
        idempotency: key("guest", "k1"),
        ..Default::default()
    }
}

#[test]
fn a_replayed_checkout_answers_the_order_as_it_was_placed() {
    let te = engine();
    let request = two_of_five_checked_out_by_a_guest(&te.shop);
    let placed = te.shop.send(request.clone()).expect("checkout");
    pay(&te.shop, &placed.id).expect("pay");
    let replayed = te.shop.send(request).expect("replay");
    assert_eq!(replayed, placed);
    assert_eq!(replayed.status, OrderStatus::PendingPayment);
    assert_eq!(te.state().order(&placed.id).expect("order").status, OrderStatus::Paid);
    check_invariants(te.state());
}

/// A payment's record names the order and payment; its replay rebuilds the order as
/// it was when paid, after it was fulfilled and refunded since.
#[test]
fn a_replayed_payment_answers_the_order_as_it_was_paid() {
    let te = engine();
    stocked_sku(&te.shop, "A", 100, 5);
    let placed = checkout(&te.shop, &cart_with(&te.shop, &[("A", 2)]).id).expect("checkout");
    let request = CapturePayment {
        order_id: placed.id.to_string(),
        method: "test_card".into(),
        token: "tok_visa".into(),
        idempotency: key("guest", "p1"),
    };
    let paid = te.shop.send(request.clone()).expect("pay");
    te.shop.send(FulfillOrder { order_id: placed.id.to_string() }).expect("fulfil");
    let refund = RefundPayment { order_id: placed.id.to_string(), amount: None, reason: "".into() };
    te.shop.send(refund).expect("refund");
    let replayed = te.shop.send(request).expect("replay");
    assert_eq!(replayed, paid);
    assert_eq!((replayed.order.status, replayed.order.payments.len()), (OrderStatus::Paid, 1));
    assert_eq!(te.state().order(&placed.id).expect("order").status, OrderStatus::Refunded);
    check_invariants(te.state());
}

#[test]
fn idempotency_records_are_forgotten_after_a_day() {
    let te = engine();
    stocked_sku(&te.shop, "A", 100, 5);
    let cart = cart_with(&te.shop, &[("A", 1)]);
    let request = Checkout {
        cart_id: cart.id.to_string(),
        email: Some("ann@example.com".into()),
        idempotency: key("guest", "k1"),
        ..Default::default()
    };
    te.shop.send(request.clone()).expect("checkout");
    let scoped = "guest\u{0}k1";
    te.clock.advance(24 * 60 * 60 * 1000 - 1);
    te.shop.send(ExpireDue).expect("sweep");
    assert!(te.state().idempotency_record(scoped).is_some());
    assert_eq!(outcome(&te.shop.send(request.clone())), "ok", "replayed within the day");
    te.clock.advance(1);
    te.shop.send(ExpireDue).expect("sweep");
    assert!(te.state().idempotency_record(scoped).is_none());
    assert_eq!(
        outcome(&te.shop.send(request)),
        "invalid_state",
        "a new attempt on the closed cart"
    );
    check_invariants(te.state());
}

// --- after a restart ----------------------------------------------------------------

/// Runs `before` (which returns what `after` needs, such as ids), closes and reopens the
/// engine, then runs `after`; compares what `after` reports. Every index a rule reads
/// (handles, SKUs, emails, the expiry queue, idempotency ages, id counters, the category
/// tree) must be rebuilt by recovery.
fn check_after_reopen(
    before: impl FnOnce(&TestEngine) -> String,
    after: impl FnOnce(&TestEngine, &str) -> String,
    expected: &str,
) {
    let te = engine();
    let context = before(&te);
    let te = te.reopen();
    let got = after(&te, &context);
    assert_eq!(got, expected, "context {context:?}");
    check_invariants(te.state());
}

/// A reservation that ran out while the engine was closed is released by the time
/// `Engine::open` returns: the first tick runs before it, so no command or clock change
/// of the caller's races with it.
#[test]
fn reservations_that_ran_out_while_closed_are_released_before_open_returns() {
    let te = engine();
    let request = two_of_five_checked_out_by_a_guest(&te.shop);
    let order = te.shop.send(request).expect("checkout");
    te.clock.advance(TTL_MS);
    let te = te.reopen();
    assert_eq!(stock_line(te.state(), &["A"]), "A 5/0");
    let status = te.state().order(&order.id).map(|o| o.status);
    assert_eq!(status, Some(OrderStatus::Expired));
    check_invariants(te.state());
}

#[test]
fn the_rules_hold_after_a_restart() {
    let shirt = |te: &TestEngine| {
        te.shop.send(product("Blue Shirt", &[("A", 100)])).expect("create").id.to_string()
    };
    check_after_reopen(
        shirt,
        |te, _| outcome(&te.shop.send(product("Other", &[("A", 100)]))),
        "conflict",
    );
    check_after_reopen(
        shirt,
        |te, _| te.shop.send(product("Blue Shirt", &[("B", 100)])).expect("create").handle.clone(),
        "blue-shirt-2",
    );
    check_after_reopen(
        shirt,
        |te, first| {
            let second = te.shop.send(product("Other", &[("B", 100)])).expect("create");
            format!("{} after {first}", second.id)
        },
        "prod_000000000002 after prod_000000000001",
    );
    check_after_reopen(
        |te| register(&te.shop, "ann@example.com").expect("register").id.to_string(),
        |te, _| outcome(&register(&te.shop, "ANN@example.com")),
        "conflict",
    );
    check_after_reopen(
        |te| {
            let clothing =
                te.shop.send(CreateCategory { name: "Clothing".into(), parent_id: None });
            let clothing = clothing.expect("create").id.to_string();
            let parent_id = Some(clothing.clone());
            let shirts = te.shop.send(CreateCategory { name: "Shirts".into(), parent_id });
            format!("{clothing} {}", shirts.expect("create").id)
        },
        |te, ids| {
            let (clothing, shirts) = ids.split_once(' ').expect("two ids");
            let parent_id = Some(Some(shirts.to_string()));
            let command = UpdateCategory { id: clothing.into(), parent_id, ..Default::default() };
            outcome(&te.shop.send(command))
        },
        "validation_failed: parent_id",
    );
    let held = |te: &TestEngine| {
        let request = two_of_five_checked_out_by_a_guest(&te.shop);
        te.shop.send(request.clone()).expect("checkout");
        request.cart_id
    };
    check_after_reopen(
        held,
        |te, cart_id| {
            let cart_id = cart_id.to_string();
            outcome(&te.shop.send(AddCartItem { cart_id, sku: "A".into(), quantity: 1 }))
        },
        "invalid_state",
    );
    check_after_reopen(held, |te, _| set_stock_outcome(te, 1), "conflict | A 5/2");
    check_after_reopen(
        held,
        |te, _| {
            te.clock.advance(TTL_MS);
            let expired = te.shop.send(ExpireDue).expect("sweep");
            format!("{expired} | {}", stock_line(te.state(), &["A"]))
        },
        "1 | A 5/0",
    );
    check_after_reopen(
        held,
        |te, _| {
            te.clock.advance(24 * 60 * 60 * 1000);
            te.shop.send(ExpireDue).expect("sweep");
            let kept = te.state().idempotency_record("guest\u{0}k1").is_some();
            format!("record kept {kept}")
        },
        "record kept false",
    );
}

fn set_stock_outcome(te: &TestEngine, on_hand: i64) -> String {
    let command =
        SetStock { sku: "A".into(), on_hand, reason: "count".into(), expected_version: None };
    format!("{} | {}", outcome(&te.shop.send(command)), stock_line(te.state(), &["A"]))
}

// --- customers ----------------------------------------------------------------------

fn register(shop: &BlockingEngine, email: &str) -> Result<std::sync::Arc<Customer>> {
    shop.send(RegisterCustomer {
        email: email.into(),
        name: "Ann".into(),
        role: Role::Customer,
        credential: "hash".into(),
    })
}

/// Registers `existing`, then `email`; compares the outcome (the stored email) and
/// checks the lookup by email.
fn check_register(existing: &[&str], email: &str, expected: &str) {
    let te = engine();
    for earlier in existing {
        register(&te.shop, earlier).expect("register earlier");
    }
    let got = match register(&te.shop, email) {
        Ok(customer) => {
            assert_eq!(customer.version, 1);
            let found =
                te.state().customer_by_email(&email.trim().to_uppercase()).expect("found by email");
            assert_eq!(found.id, customer.id);
            customer.email.clone()
        }
        Err(e) => error_code(&e),
    };
    assert_eq!(got, expected, "{email:?} after {existing:?}");
}

#[test]
fn registrations() {
    check_register(&[], "ann@example.com", "ann@example.com");
    check_register(&[], " Ann@Example.COM ", "ann@example.com");
    check_register(&["bob@example.com"], "ann@example.com", "ann@example.com");
    check_register(&["ann@example.com"], "ann@example.com", "conflict");
    check_register(&["ann@example.com"], "ANN@example.com", "conflict");
    check_register(&["Ann@Example.com"], " ann@EXAMPLE.com", "conflict");
    check_register(&[], "not-an-email", "validation_failed: email");
    check_register(&[], "", "validation_failed: email");
}

/// A cart owned by Ann (ann@example.com) when `owned`, else a guest cart, is checked
/// out with `email`; compares the outcome (the order's email and owner).
fn check_checkout_email(owned: bool, email: Option<&str>, expected: &str) {
    let te = engine();
    stocked_sku(&te.shop, "A", 100, 5);
    let ann = register(&te.shop, "Ann@Example.com").expect("register");
    let customer_id = owned.then(|| ann.id.to_string());
    let cart = te.shop.send(CreateCart { customer_id, currency: None }).expect("cart");
    add(&te.shop, &cart.id, "A", 1).expect("add");
    let result = te.shop.send(Checkout {
        cart_id: cart.id.to_string(),
        email: email.map(str::to_string),
        ..Default::default()
    });
    let got = match &result {
        Ok(order) => {
            let owner = order.customer_id.as_ref().map_or("guest", |c| {
                if *c == ann.id {
                    "ann"
                } else {
                    "other"
                }
            });
            let mine = te.state().orders(
                &OrderFilter { customer_id: Some(ann.id), status: None },
                None,
                10,
            );
            assert_eq!(mine.items.len(), usize::from(owned));
            format!("{} by {owner}", order.email)
        }
        Err(e) => error_code(e),
    };
    assert_eq!(got, expected, "owned {owned}, email {email:?}");
    check_invariants(te.state());
}

#[test]
fn checkout_emails() {
    check_checkout_email(true, None, "ann@example.com by ann");
    check_checkout_email(true, Some("Gifts@Example.com"), "gifts@example.com by ann");
    check_checkout_email(false, Some("bob@example.com"), "bob@example.com by guest");
    check_checkout_email(false, None, "validation_failed: email");
    check_checkout_email(false, Some("bob"), "validation_failed: email");
    check_checkout_email(true, Some("bob"), "validation_failed: email");
}

/// With 100,000 products, no read or write walks the catalog: a category's listing, a
/// status filter, a category delete's checks and deriving the next "Blue Shirt" handle
/// each cost a few index steps. Each is timed (the best of five, generous bounds: a
/// scan of the catalog takes tens of milliseconds even in an optimized build) and
/// checked against a brute-force answer.
#[test]
fn a_hundred_thousand_products_do_not_slow_a_request() {
    use emporium_engine::domain::{execute, Context, Limits};
    use rand::SeedableRng;
    const PRODUCTS: usize = 100_000;
    let state = State::new();
    let mut ids = rand::rngs::StdRng::seed_from_u64(3);
    let limits = Limits::default();
    let mut run = |command: &dyn Fn(&State, &mut Context<'_>)| {
        let mut ctx = Context { now: T0, ids: &mut ids, limits: &limits };
        command(&state, &mut ctx);
    };
    // A tree of categories: root > a..e, and a leaf below `e` with a few products.
    let mut categories = Vec::new();
    for (name, parent) in [("root", None), ("a", Some(0)), ("e", Some(0)), ("leaf", Some(2))] {
        run(&|state, ctx| {
            let parent_id = parent.map(|p: usize| categories_id(state, p).to_string());
            execute(state, &CreateCategory { name: name.into(), parent_id }, ctx).unwrap();
        });
        categories.push(name);
    }
    let id_of = |i: usize| categories_id(&state, i);
    let (a, leaf, e) = (id_of(1), id_of(3), id_of(2));
    for n in 0..PRODUCTS {
        let mut input = product("Blue Shirt", &[(&format!("BS-{n}"), 100)]);
        input.category_ids = vec![if n % 10_000 == 7 { leaf.to_string() } else { a.to_string() }];
        input.status =
            Some(if n % 25_000 == 3 { ProductStatus::Draft } else { ProductStatus::Active });
        run(&|state, ctx| {
            execute(state, &input, ctx).unwrap();
        });
    }
    let best = |what: &str, work: &dyn Fn()| {
        let took = (0..5)
            .map(|_| {
                let started = Instant::now();
                work();
                started.elapsed()
            })
            .min()
            .unwrap();
        assert!(took < Duration::from_millis(5), "{what} took {took:?} with {PRODUCTS} products");
    };
    let brute = |keep: &dyn Fn(&Product) -> bool| -> Vec<ProductId> {
        let all = state.products(&ProductFilter::default(), None, PRODUCTS + 1);
        all.items.iter().filter(|p| keep(p)).map(|p| p.id).collect()
    };

    let subtree = ProductFilter { category_id: Some(e), status: None };
    let listed: Vec<ProductId> =
        state.products(&subtree, None, 100).items.iter().map(|p| p.id).collect();
    assert_eq!(listed, brute(&|p| p.category_ids.contains(&leaf)));
    assert_eq!(listed.len(), PRODUCTS / 10_000);
    best("a category subtree's listing", &|| {
        state.products(&subtree, None, 20);
    });

    let drafts = ProductFilter { category_id: None, status: Some(ProductStatus::Draft) };
    let listed: Vec<ProductId> =
        state.products(&drafts, None, 100).items.iter().map(|p| p.id).collect();
    assert_eq!(listed, brute(&|p| p.status == ProductStatus::Draft));
    best("a status filter", &|| {
        state.products(&drafts, None, 20);
    });

    // Deleting: the leaf has products, `e` has a subcategory; both are refused cheaply.
    let mut ctx_ids = rand::rngs::StdRng::seed_from_u64(4);
    let mut ctx = Context { now: T0, ids: &mut ctx_ids, limits: &limits };
    for (category, why) in [(&leaf, "products"), (&e, "subcategories")] {
        let delete = DeleteCategory { id: category.to_string(), expected_version: None };
        match execute(&state, &delete, &mut ctx) {
            Err(EngineError::Conflict(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("deleting a category with {why}: {other:?}"),
        }
    }
    best("a category delete's checks", &|| {
        let mut ids = rand::rngs::StdRng::seed_from_u64(5);
        let mut ctx = Context { now: T0, ids: &mut ids, limits: &limits };
        let delete = DeleteCategory { id: leaf.to_string(), expected_version: None };
        assert!(execute(&state, &delete, &mut ctx).is_err());
    });

    // The next "Blue Shirt"s are blue-shirt-100001, -100002, …, found without probing
    // the hundred thousand before them.
    let made = std::cell::Cell::new(0);
    best("deriving a handle among 100,000 alike", &|| {
        let mut ids = rand::rngs::StdRng::seed_from_u64(6);
        let mut ctx = Context { now: T0, ids: &mut ids, limits: &limits };
        made.set(made.get() + 1);
        let input = product("Blue Shirt", &[(&format!("NEXT-{}", made.get()), 100)]);
        execute(&state, &input, &mut ctx).unwrap();
    });
    for n in 1..=made.get() {
        let next = state.product_by_sku(&Sku::new(format!("NEXT-{n}")).unwrap()).unwrap();
        assert_eq!(next.handle, format!("blue-shirt-{}", PRODUCTS + n));
    }
}

/// The id of the `i`-th category made (ids are sequential).
fn categories_id(state: &State, i: usize) -> CategoryId {
    state.categories()[i].id
}
