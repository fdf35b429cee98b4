//! Every command refuses invalid input with a typed error and changes nothing. Each test
//! builds one [`Fixture`] and runs a table of cases through [`Fixture::check`]: a
//! command (a valid base command with one thing broken) and the expected outcome as one
//! line — the problem code and, for `validation_failed`, the exact field paths in
//! order. `check` compares a snapshot of the whole reachable state (the last LSN, every
//! product, category, stock row and order, the fixture's carts and accounts, versions
//! included) before and after, so a refused command that changed anything fails.
//! `base_commands_are_valid` proves each base command succeeds unbroken, so every
//! refusal below is due to the one thing a case breaks.

use std::sync::Arc;

use emporium_engine::*;
use emporium_tests::*;

/// Sends one command, its reply dropped.
type Sender = Box<dyn FnOnce(&BlockingEngine) -> Result<()>>;

/// Any command, its type erased: how it reads (for messages) and how to send it.
struct Command {
    shown: String,
    send: Sender,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Sends any command; the reply is dropped.
fn send(shop: &BlockingEngine, command: Command) -> Result<()> {
    (command.send)(shop)
}

/// `n` copies of `c`.
fn long(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// `base` after `tweak`, as a command.
fn build<T: Request + std::fmt::Debug>(mut base: T, tweak: impl FnOnce(&mut T)) -> Command {
    tweak(&mut base);
    Command { shown: format!("{base:?}"), send: Box::new(move |shop| shop.send(base).map(drop)) }
}

fn address() -> Address {
    Address {
        name: "Ann Example".into(),
        line1: "1 Main Street".into(),
        line2: String::new(),
        city: "Springfield".into(),
        region: "IL".into(),
        postal_code: "62701".into(),
        country: "US".into(),
    }
}

/// Categories Clothing > Shirts and Empty; product Shirt (handle `shirt`, SKU SHIRT-M at
/// 19.99 USD, listed in Shirts) and product Euro (SKU EUR-1 priced in EUR); account Ann.
/// SHIRT-M has 9 on hand, 2 of them reserved by `pending`; `paid` bought one. `cart` is
/// open with one SHIRT-M, `big_cart` wants 100, `empty_cart` has nothing, `closed_cart`
/// became `pending`. `pending` and `paid` used idempotency keys `checkout-1` and
/// `pay-1` (scope `guest`).
struct Fixture {
    te: TestEngine,
    clothing: Arc<Category>,
    shirts: Arc<Category>,
    empty: Arc<Category>,
    shirt: Arc<Product>,
    euro: Arc<Product>,
    ann: Arc<Customer>,
    cart: Arc<Cart>,
    big_cart: Arc<Cart>,
    empty_cart: Arc<Cart>,
    closed_cart: Arc<Cart>,
    pending: Arc<Order>,
    paid: Arc<Order>,
}

/// Everything a refused command must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    lsn: Lsn,
    products: Vec<Arc<Product>>,
    categories: Vec<Arc<Category>>,
    stock: Vec<StockLevels>,
    carts: Vec<Option<Arc<Cart>>>,
    orders: Vec<Arc<Order>>,
    accounts: Vec<Option<Arc<Customer>>>,
}

fn guest_key(key: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey { scope: "guest".into(), key: key.into() })
}

impl Fixture {
    fn new() -> Fixture {
        let te = TestEngine::with(|_| {});
        let shop = &te.shop;
        let category = |name: &str, parent: Option<&Category>| {
            let parent_id = parent.map(|p| p.id.to_string());
            shop.send(CreateCategory { name: name.into(), parent_id }).expect("category")
        };
        let clothing = category("Clothing", None);
        let shirts = category("Shirts", Some(&clothing));
        let empty = category("Empty", None);
        let mut input = product("Shirt", &[("SHIRT-M", 1999)]);
        input.category_ids = vec![shirts.id.to_string()];
        let shirt = shop.send(input).expect("shirt");
        let mut input = product("Euro", &[("EUR-1", 1500)]);
        input.variants[0].price.currency = "EUR".into();
        let euro = shop.send(input).expect("euro");
        for (sku, on_hand) in [("SHIRT-M", 10), ("EUR-1", 5)] {
            let reason = "count".into();
            shop.send(SetStock { sku: sku.into(), on_hand, reason, expected_version: None })
                .expect("stock");
        }
        let ann = emporium_tests::register_customer(shop, "ann@example.com");
        let buy = |quantity: i64, key: &str| {
            let cart = cart_with(shop, &[("SHIRT-M", quantity)]);
            let order = shop
                .send(Checkout {
                    cart_id: cart.id.to_string(),
                    email: Some("guest@example.com".into()),
                    shipping_address: Some(address()),
                    idempotency: guest_key(key),
                    ..Default::default()
                })
                .expect("checkout");
            (cart, order)
        };
        let (closed_cart, pending) = buy(2, "checkout-1");
        let (_, paid) = buy(1, "checkout-2");
        let paid = shop
            .send(CapturePayment {
                order_id: paid.id.to_string(),
                method: "test_card".into(),
                token: "tok_visa".into(),
                idempotency: guest_key("pay-1"),
            })
            .expect("pay")
            .order;
        let closed_cart = te.state().cart(&closed_cart.id).expect("the cart exists");
        let cart = cart_with(shop, &[("SHIRT-M", 1)]);
        let big_cart = cart_with(shop, &[("SHIRT-M", 100)]);
        let empty_cart = cart_with(shop, &[]);
        assert_eq!(levels(te.state(), "SHIRT-M"), (9, 2));
        check_invariants(te.state());
        Fixture {
            te,
            clothing,
            shirts,
            empty,
            shirt,
            euro,
            ann,
            cart,
            big_cart,
            empty_cart,
            closed_cart,
            pending,
            paid,
        }
    }

    fn snapshot(&self) -> Snapshot {
        let state = self.te.state();
        let carts = [&self.cart, &self.big_cart, &self.empty_cart, &self.closed_cart];
        Snapshot {
            lsn: self.te.engine.last_lsn(),
            products: state.products(&ProductFilter::default(), None, 1000).items,
            categories: state.categories(),
            stock: state.all_stock(),
            carts: carts.iter().map(|c| state.cart(&c.id)).collect(),
            orders: state.orders(&OrderFilter::default(), None, 1000).items,
            accounts: vec![
                state.customer(&self.ann.id),
                state.customer_by_email("bob@example.com"),
                state.customer_by_email("ann@example.org"),
            ],
        }
    }

    /// Sends `command`, which must be refused with `expected` and change nothing.
    fn check(&self, command: Command, expected: &str) {
        let mut shown = format!("{command:?}");
        if shown.len() > 300 {
            shown = format!("{}…", shown.chars().take(300).collect::<String>());
        }
        let before = self.snapshot();
        let result = send(&self.te.shop, command);
        assert_eq!(outcome(&result), expected, "{shown}");
        if let Err(EngineError::NotFound { id, .. }) = &result {
            assert!(id.chars().count() <= 80, "a not-found error echoes a bounded id: {shown}");
        }
        assert_eq!(self.snapshot(), before, "a refused command changed the state: {shown}");
    }

    fn new_product(&self, tweak: impl FnOnce(&mut CreateProduct)) -> Command {
        build(product("New", &[("NEW-1", 100)]), tweak)
    }

    fn update_shirt(&self, tweak: impl FnOnce(&mut UpdateProduct)) -> Command {
        let base = UpdateProduct {
            id: self.shirt.id.to_string(),
            title: Some("Shirt 2".into()),
            ..Default::default()
        };
        build(base, tweak)
    }

    fn archive(&self, tweak: impl FnOnce(&mut ArchiveProduct)) -> Command {
        build(ArchiveProduct { id: self.euro.id.to_string(), expected_version: Some(1) }, tweak)
    }

    fn create_category(&self, tweak: impl FnOnce(&mut CreateCategory)) -> Command {
        build(
            CreateCategory { name: "Hats".into(), parent_id: Some(self.clothing.id.to_string()) },
            tweak,
        )
    }

    fn update_category(&self, tweak: impl FnOnce(&mut UpdateCategory)) -> Command {
        let base = UpdateCategory {
            id: self.shirts.id.to_string(),
            name: Some("Tops".into()),
            parent_id: Some(None),
            expected_version: Some(1),
        };
        build(base, tweak)
    }

    fn delete_category(&self, tweak: impl FnOnce(&mut DeleteCategory)) -> Command {
        build(DeleteCategory { id: self.empty.id.to_string(), expected_version: Some(1) }, tweak)
    }

    fn set_stock(&self, tweak: impl FnOnce(&mut SetStock)) -> Command {
        build(
            SetStock {
                sku: "SHIRT-M".into(),
                on_hand: 20,
                reason: "count".into(),
                expected_version: None,
            },
            tweak,
        )
    }

    fn adjust(&self, tweak: impl FnOnce(&mut AdjustStock)) -> Command {
        build(AdjustStock { sku: "SHIRT-M".into(), delta: 3, reason: "received".into() }, tweak)
    }

    fn create_cart(&self, tweak: impl FnOnce(&mut CreateCart)) -> Command {
        build(
            CreateCart { customer_id: Some(self.ann.id.to_string()), currency: Some("USD".into()) },
            tweak,
        )
    }

    fn add_item(&self, tweak: impl FnOnce(&mut AddCartItem)) -> Command {
        build(
            AddCartItem { cart_id: self.cart.id.to_string(), sku: "SHIRT-M".into(), quantity: 1 },
            tweak,
        )
    }

    fn set_item(&self, tweak: impl FnOnce(&mut SetCartItem)) -> Command {
        build(
            SetCartItem { cart_id: self.cart.id.to_string(), sku: "SHIRT-M".into(), quantity: 2 },
            tweak,
        )
    }

    fn remove_item(&self, tweak: impl FnOnce(&mut RemoveCartItem)) -> Command {
        build(RemoveCartItem { cart_id: self.cart.id.to_string(), sku: "SHIRT-M".into() }, tweak)
    }

    fn checkout(&self, tweak: impl FnOnce(&mut Checkout)) -> Command {
        let base = Checkout {
            cart_id: self.cart.id.to_string(),
            email: Some("guest@example.com".into()),
            shipping_address: Some(address()),
            idempotency: guest_key("checkout-3"),
            ..Default::default()
        };
        build(base, tweak)
    }

    fn pay(&self, tweak: impl FnOnce(&mut CapturePayment)) -> Command {
        let base = CapturePayment {
            order_id: self.pending.id.to_string(),
            method: "test_card".into(),
            token: "tok_visa".into(),
            idempotency: guest_key("pay-2"),
        };
        build(base, tweak)
    }

    fn cancel(&self, tweak: impl FnOnce(&mut CancelOrder)) -> Command {
        build(
            CancelOrder { order_id: self.pending.id.to_string(), expected_version: Some(1) },
            tweak,
        )
    }

    fn fulfil(&self, tweak: impl FnOnce(&mut FulfillOrder)) -> Command {
        build(FulfillOrder { order_id: self.paid.id.to_string() }, tweak)
    }

    fn register(&self, tweak: impl FnOnce(&mut RegisterCustomer)) -> Command {
        let base = RegisterCustomer {
            email: "bob@example.com".into(),
            name: "Bob".into(),
            role: Role::Customer,
            credential: "hash".into(),
        };
        build(base, tweak)
    }

    /// One valid command of each kind, unbroken.
    fn bases(&self) -> Vec<Command> {
        vec![
            self.new_product(|_| {}),
            self.update_shirt(|_| {}),
            self.archive(|_| {}),
            self.create_category(|_| {}),
            self.update_category(|_| {}),
            self.delete_category(|_| {}),
            self.set_stock(|_| {}),
            self.adjust(|_| {}),
            self.create_cart(|_| {}),
            self.add_item(|_| {}),
            self.set_item(|_| {}),
            self.remove_item(|_| {}),
            self.checkout(|_| {}),
            self.pay(|_| {}),
            self.cancel(|_| {}),
            self.fulfil(|_| {}),
            self.register(|_| {}),
        ]
    }
}

#[test]
fn base_commands_are_valid() {
    let count = Fixture::new().bases().len();
    for i in 0..count {
        let fx = Fixture::new();
        let command = fx.bases().swap_remove(i);
        let shown = format!("{command:?}");
        let before = fx.te.engine.last_lsn();
        send(&fx.te.shop, command).unwrap_or_else(|e| panic!("{shown}: {e}"));
        assert!(fx.te.engine.last_lsn() > before, "{shown} changed nothing");
        check_invariants(fx.te.state());
    }
}

#[test]
fn new_products() {
    let fx = Fixture::new();
    let variant = |sku: &str| VariantInput {
        sku: sku.into(),
        title: String::new(),
        options: Default::default(),
        price: MoneyInput { amount: 100, currency: "USD".into() },
    };
    let cases: Vec<(Command, &str)> = vec![
        (fx.new_product(|p| p.title = String::new()), "validation_failed: title"),
        (fx.new_product(|p| p.title = long('x', 201)), "validation_failed: title"),
        (fx.new_product(|p| p.title = long('é', 201)), "validation_failed: title"),
        (fx.new_product(|p| p.title = "bell\u{7}".into()), "validation_failed: title"),
        (fx.new_product(|p| p.title = "two\nlines".into()), "validation_failed: title"),
        (fx.new_product(|p| p.description = long('x', 10_001)), "validation_failed: description"),
        (fx.new_product(|p| p.description = "nul\u{0}".into()), "validation_failed: description"),
        (fx.new_product(|p| p.brand = long('x', 101)), "validation_failed: brand"),
        (fx.new_product(|p| p.handle = Some(String::new())), "validation_failed: handle"),
        (fx.new_product(|p| p.handle = Some("Upper".into())), "validation_failed: handle"),
        (fx.new_product(|p| p.handle = Some("two words".into())), "validation_failed: handle"),
        (fx.new_product(|p| p.handle = Some("-dash".into())), "validation_failed: handle"),
        (fx.new_product(|p| p.handle = Some("a--b".into())), "validation_failed: handle"),
        (fx.new_product(|p| p.handle = Some(long('a', 101))), "validation_failed: handle"),
        (fx.new_product(|p| p.handle = Some("../etc".into())), "validation_failed: handle"),
        (fx.new_product(|p| p.handle = Some("shirt".into())), "conflict"),
        (fx.new_product(|p| p.status = Some(ProductStatus::Archived)), "validation_failed: status"),
        (
            fx.new_product(|p| p.category_ids = vec!["cat_nope".into()]),
            "validation_failed: category_ids[0]",
        ),
        (
            fx.new_product(|p| p.category_ids = vec![String::new()]),
            "validation_failed: category_ids[0]",
        ),
        (
            fx.new_product(|p| {
                p.category_ids = vec![fx.shirts.id.to_string(), fx.shirts.id.to_string()]
            }),
            "validation_failed: category_ids[1]",
        ),
        (
            fx.new_product(|p| p.category_ids = vec![fx.shirt.id.to_string()]),
            "validation_failed: category_ids[0]",
        ),
        (
            fx.new_product(|p| {
                p.attributes = (0..51).map(|i| (format!("k{i}"), "v".into())).collect()
            }),
            "validation_failed: attributes",
        ),
        (
            fx.new_product(|p| p.attributes = [("material".into(), long('x', 257))].into()),
            "validation_failed: attributes.material",
        ),
        (fx.new_product(|p| p.variants = vec![]), "validation_failed: variants"),
        (
            fx.new_product(|p| p.variants = (0..101).map(|i| variant(&format!("V-{i}"))).collect()),
            "validation_failed: variants",
        ),
        (
            fx.new_product(|p| p.variants[0].sku = String::new()),
            "validation_failed: variants[0].sku",
        ),
        (
            fx.new_product(|p| p.variants[0].sku = long('S', 65)),
            "validation_failed: variants[0].sku",
        ),
        (
            fx.new_product(|p| p.variants[0].sku = "has space".into()),
            "validation_failed: variants[0].sku",
        ),
        (
            fx.new_product(|p| p.variants[0].sku = "a/b".into()),
            "validation_failed: variants[0].sku",
        ),
        (fx.new_product(|p| p.variants[0].sku = "ü".into()), "validation_failed: variants[0].sku"),
        (
            fx.new_product(|p| p.variants[0].title = long('x', 201)),
            "validation_failed: variants[0].title",
        ),
        (
            fx.new_product(|p| {
                p.variants[0].options = (0..11).map(|i| (format!("o{i}"), "v".into())).collect()
            }),
            "validation_failed: variants[0].options",
        ),
        (
            fx.new_product(|p| p.variants[0].price.amount = -1),
            "validation_failed: variants[0].price.amount",
        ),
        (
            fx.new_product(|p| p.variants[0].price.amount = i64::MIN),
            "validation_failed: variants[0].price.amount",
        ),
        (
            fx.new_product(|p| p.variants[0].price.amount = MONEY_AMOUNT_MAX + 1),
            "validation_failed: variants[0].price.amount",
        ),
        (
            fx.new_product(|p| p.variants[0].price.currency = "usd".into()),
            "validation_failed: variants[0].price.currency",
        ),
        (
            fx.new_product(|p| p.variants[0].price.currency = "XXX".into()),
            "validation_failed: variants[0].price.currency",
        ),
        (
            fx.new_product(|p| p.variants[0].price.currency = String::new()),
            "validation_failed: variants[0].price.currency",
        ),
        (
            fx.new_product(|p| p.variants[0].price.currency = "US".into()),
            "validation_failed: variants[0].price.currency",
        ),
        (
            fx.new_product(|p| p.variants[0].price.currency = "USDD".into()),
            "validation_failed: variants[0].price.currency",
        ),
        (
            fx.new_product(|p| p.variants[0].price.currency = "€".into()),
            "validation_failed: variants[0].price.currency",
        ),
        (
            fx.new_product(|p| p.variants.push(variant("NEW-1"))),
            "validation_failed: variants[1].sku",
        ),
        (
            fx.new_product(|p| p.variants.extend([variant("NEW-2"), variant("NEW-1")])),
            "validation_failed: variants[2].sku",
        ),
        (
            fx.new_product(|p| {
                p.variants.push(variant("NEW-2"));
                p.variants[1].price.currency = "EURO".into();
            }),
            "validation_failed: variants[1].price.currency",
        ),
        (fx.new_product(|p| p.variants[0].sku = "SHIRT-M".into()), "conflict"),
        (fx.new_product(|p| p.variants.push(variant("EUR-1"))), "conflict"),
        (
            fx.new_product(|p| {
                p.title = String::new();
                p.variants[0].price.amount = -1;
            }),
            "validation_failed: title, variants[0].price.amount",
        ),
        (
            fx.new_product(|p| {
                p.brand = long('b', 101);
                p.handle = Some("No".into());
                p.variants[0].sku = String::new();
            }),
            "validation_failed: brand, handle, variants[0].sku",
        ),
    ];
    for (command, expected) in cases {
        fx.check(command, expected);
    }
    check_invariants(fx.te.state());
}

#[test]
fn product_updates() {
    let fx = Fixture::new();
    let current = fx.shirt.version;
    let mismatch = format!("version_mismatch: expected 9, current {current}");
    let variants =
        |skus: &[&str]| product("", &skus.iter().map(|s| (*s, 100)).collect::<Vec<_>>()).variants;
    let cases: Vec<(Command, &str)> = vec![
        (fx.update_shirt(|u| u.title = Some(String::new())), "validation_failed: title"),
        (fx.update_shirt(|u| u.title = Some(long('x', 201))), "validation_failed: title"),
        (
            fx.update_shirt(|u| u.description = Some(long('x', 10_001))),
            "validation_failed: description",
        ),
        (fx.update_shirt(|u| u.brand = Some(long('x', 101))), "validation_failed: brand"),
        (fx.update_shirt(|u| u.handle = Some("Bad Handle".into())), "validation_failed: handle"),
        (fx.update_shirt(|u| u.handle = Some("euro".into())), "conflict"),
        (
            fx.update_shirt(|u| u.category_ids = Some(vec!["cat_nope".into()])),
            "validation_failed: category_ids[0]",
        ),
        (fx.update_shirt(|u| u.variants = Some(vec![])), "validation_failed: variants"),
        (
            fx.update_shirt(|u| u.variants = Some(variants(&["SHIRT-M", "SHIRT-M"]))),
            "validation_failed: variants[1].sku",
        ),
        (
            fx.update_shirt(|u| {
                let mut list = variants(&["SHIRT-M"]);
                list[0].price.amount = -5;
                u.variants = Some(list);
            }),
            "validation_failed: variants[0].price.amount",
        ),
        (
            fx.update_shirt(|u| {
                let mut list = variants(&["SHIRT-M"]);
                list[0].price.currency = "usd".into();
                u.variants = Some(list);
            }),
            "validation_failed: variants[0].price.currency",
        ),
        (fx.update_shirt(|u| u.variants = Some(variants(&["SHIRT-M", "EUR-1"]))), "conflict"),
        // SHIRT-M has units reserved by the pending order: it cannot be dropped.
        (fx.update_shirt(|u| u.variants = Some(variants(&["SHIRT-L"]))), "conflict"),
        (fx.update_shirt(|u| u.expected_version = Some(9)), &mismatch),
        (fx.update_shirt(|u| u.id = "prod_zzzzzzzzzzzz".into()), "not_found: product"),
        (fx.archive(|a| a.expected_version = Some(9)), "version_mismatch: expected 9, current 1"),
        (fx.archive(|a| a.id = "prod_zzzzzzzzzzzz".into()), "not_found: product"),
    ];
    for (command, expected) in cases {
        fx.check(command, expected);
    }
}

#[test]
fn categories() {
    let fx = Fixture::new();
    let cases: Vec<(Command, &str)> = vec![
        (fx.create_category(|c| c.name = String::new()), "validation_failed: name"),
        (fx.create_category(|c| c.name = long('x', 101)), "validation_failed: name"),
        (fx.create_category(|c| c.name = "tab\there".into()), "validation_failed: name"),
        (
            fx.create_category(|c| c.parent_id = Some("cat_nope".into())),
            "validation_failed: parent_id",
        ),
        (fx.create_category(|c| c.parent_id = Some(String::new())), "validation_failed: parent_id"),
        (
            fx.create_category(|c| c.parent_id = Some(fx.shirt.id.to_string())),
            "validation_failed: parent_id",
        ),
        (fx.update_category(|c| c.name = Some(String::new())), "validation_failed: name"),
        // Moves that would make a cycle.
        (
            fx.update_category(|c| {
                c.id = fx.clothing.id.to_string();
                c.parent_id = Some(Some(fx.shirts.id.to_string()));
            }),
            "validation_failed: parent_id",
        ),
        (
            fx.update_category(|c| c.parent_id = Some(Some(fx.shirts.id.to_string()))),
            "validation_failed: parent_id",
        ),
        (
            fx.update_category(|c| c.parent_id = Some(Some("cat_nope".into()))),
            "validation_failed: parent_id",
        ),
        (
            fx.update_category(|c| c.expected_version = Some(9)),
            "version_mismatch: expected 9, current 1",
        ),
        (fx.update_category(|c| c.id = "cat_nope".into()), "not_found: category"),
        (fx.delete_category(|c| c.id = fx.clothing.id.to_string()), "conflict"),
        (fx.delete_category(|c| c.id = fx.shirts.id.to_string()), "conflict"),
        (
            fx.delete_category(|c| c.expected_version = Some(9)),
            "version_mismatch: expected 9, current 1",
        ),
        (fx.delete_category(|c| c.id = "cat_nope".into()), "not_found: category"),
    ];
    for (command, expected) in cases {
        fx.check(command, expected);
    }
}

#[test]
fn stock() {
    let fx = Fixture::new();
    let version = fx.te.state().stock(&Sku::new("SHIRT-M").unwrap()).expect("stock").version;
    let mismatch = format!("version_mismatch: expected 999, current {version}");
    let cases: Vec<(Command, &str)> = vec![
        (fx.set_stock(|s| s.on_hand = -1), "validation_failed: on_hand"),
        (fx.set_stock(|s| s.on_hand = i64::MIN), "validation_failed: on_hand"),
        (fx.set_stock(|s| s.on_hand = ON_HAND_MAX + 1), "validation_failed: on_hand"),
        (fx.set_stock(|s| s.on_hand = 1), "conflict"),
        (fx.set_stock(|s| s.reason = long('x', 201)), "validation_failed: reason"),
        (fx.set_stock(|s| s.expected_version = Some(999)), &mismatch),
        (fx.set_stock(|s| s.sku = "NOPE".into()), "not_found: SKU"),
        (fx.set_stock(|s| s.sku = String::new()), "validation_failed: sku"),
        (fx.set_stock(|s| s.sku = long('S', 65)), "validation_failed: sku"),
        (fx.set_stock(|s| s.sku = "bad sku".into()), "validation_failed: sku"),
        (fx.adjust(|a| a.delta = 0), "validation_failed: delta"),
        (fx.adjust(|a| a.delta = ON_HAND_MAX + 1), "validation_failed: delta"),
        (fx.adjust(|a| a.delta = i64::MIN), "validation_failed: delta"),
        (fx.adjust(|a| a.delta = i64::MAX), "validation_failed: delta"),
        (fx.adjust(|a| a.delta = ON_HAND_MAX), "validation_failed: delta"),
        (fx.adjust(|a| a.reason = String::new()), "validation_failed: reason"),
        (fx.adjust(|a| a.reason = long('x', 201)), "validation_failed: reason"),
        (
            fx.adjust(|a| {
                a.reason = String::new();
                a.delta = 0;
            }),
            "validation_failed: reason, delta",
        ),
        // 9 on hand, 2 reserved.
        (fx.adjust(|a| a.delta = -8), "conflict"),
        (fx.adjust(|a| a.delta = -10), "conflict"),
        (fx.adjust(|a| a.sku = "NOPE".into()), "not_found: SKU"),
        (fx.adjust(|a| a.sku = String::new()), "validation_failed: sku"),
    ];
    for (command, expected) in cases {
        fx.check(command, expected);
    }
}

#[test]
fn carts() {
    let fx = Fixture::new();
    let closed = fx.closed_cart.id.to_string();
    let cases: Vec<(Command, &str)> = vec![
        (fx.create_cart(|c| c.currency = Some("usd".into())), "validation_failed: currency"),
        (fx.create_cart(|c| c.currency = Some("XXX".into())), "validation_failed: currency"),
        (fx.create_cart(|c| c.currency = Some(String::new())), "validation_failed: currency"),
        (fx.create_cart(|c| c.currency = Some("US".into())), "validation_failed: currency"),
        (fx.create_cart(|c| c.currency = Some("EURO".into())), "validation_failed: currency"),
        (fx.create_cart(|c| c.customer_id = Some("cus_nope".into())), "not_found: customer"),
        (fx.add_item(|a| a.quantity = 0), "validation_failed: quantity"),
        (fx.add_item(|a| a.quantity = -1), "validation_failed: quantity"),
        (fx.add_item(|a| a.quantity = i64::MIN), "validation_failed: quantity"),
        (fx.add_item(|a| a.quantity = 1001), "validation_failed: quantity"),
        // The line has one unit already: 1 + 1000 is over the limit.
        (fx.add_item(|a| a.quantity = 1000), "validation_failed: quantity"),
        (fx.add_item(|a| a.quantity = i64::MAX), "validation_failed: quantity"),
        (fx.add_item(|a| a.sku = "NOPE".into()), "validation_failed: sku"),
        (fx.add_item(|a| a.sku = String::new()), "validation_failed: sku"),
        (fx.add_item(|a| a.sku = long('S', 65)), "validation_failed: sku"),
        (fx.add_item(|a| a.sku = "SHIRT M".into()), "validation_failed: sku"),
        // Priced in EUR, the cart is in USD.
        (fx.add_item(|a| a.sku = "EUR-1".into()), "validation_failed: sku"),
        (
            fx.add_item(|a| {
                a.sku = String::new();
                a.quantity = 0;
            }),
            "validation_failed: sku, quantity",
        ),
        (fx.add_item(|a| a.cart_id = closed.clone()), "invalid_state"),
        (fx.set_item(|s| s.quantity = -1), "validation_failed: quantity"),
        (fx.set_item(|s| s.quantity = 1001), "validation_failed: quantity"),
        (fx.set_item(|s| s.sku = "EUR-1".into()), "validation_failed: sku"),
        (fx.set_item(|s| s.sku = "NOPE".into()), "validation_failed: sku"),
        (fx.set_item(|s| s.sku = "bad/sku".into()), "validation_failed: sku"),
        (fx.set_item(|s| s.cart_id = closed.clone()), "invalid_state"),
        (fx.remove_item(|r| r.sku = "EUR-1".into()), "not_found: SKU"),
        (fx.remove_item(|r| r.sku = String::new()), "validation_failed: sku"),
        (fx.remove_item(|r| r.sku = long('S', 65)), "validation_failed: sku"),
        (fx.remove_item(|r| r.cart_id = closed.clone()), "invalid_state"),
    ];
    for (command, expected) in cases {
        fx.check(command, expected);
    }
}

#[test]
fn checkouts() {
    let fx = Fixture::new();
    let with_address = |change: fn(&mut Address)| {
        fx.checkout(|c| {
            let mut address = address();
            change(&mut address);
            c.shipping_address = Some(address);
        })
    };
    let cases: Vec<(Command, &str)> = vec![
        (fx.checkout(|c| c.email = None), "validation_failed: email"),
        (fx.checkout(|c| c.email = Some(String::new())), "validation_failed: email"),
        (fx.checkout(|c| c.email = Some("nope".into())), "validation_failed: email"),
        (fx.checkout(|c| c.email = Some("a b@example.com".into())), "validation_failed: email"),
        (fx.checkout(|c| c.email = Some("a@b@c".into())), "validation_failed: email"),
        (
            fx.checkout(|c| c.email = Some(format!("{}@example.com", long('a', 250)))),
            "validation_failed: email",
        ),
        (with_address(|a| a.name = String::new()), "validation_failed: shipping_address.name"),
        (with_address(|a| a.line1 = long('x', 201)), "validation_failed: shipping_address.line1"),
        (
            with_address(|a| a.city = "two\nlines".into()),
            "validation_failed: shipping_address.city",
        ),
        (
            with_address(|a| a.postal_code = long('9', 21)),
            "validation_failed: shipping_address.postal_code",
        ),
        (with_address(|a| a.country = "USA".into()), "validation_failed: shipping_address.country"),
        (with_address(|a| a.country = "us".into()), "validation_failed: shipping_address.country"),
        (
            with_address(|a| a.country = String::new()),
            "validation_failed: shipping_address.country",
        ),
        (
            with_address(|a| {
                a.name = String::new();
                a.country = String::new();
            }),
            "validation_failed: shipping_address.name, shipping_address.country",
        ),
        (
            fx.checkout(|c| {
                c.email = None;
                c.shipping_address.as_mut().expect("address").city = String::new();
            }),
            "validation_failed: email, shipping_address.city",
        ),
        (fx.checkout(|c| c.cart_id = fx.empty_cart.id.to_string()), "empty_cart"),
        (fx.checkout(|c| c.cart_id = fx.big_cart.id.to_string()), "out_of_stock: SHIRT-M 100>7"),
        (fx.checkout(|c| c.cart_id = fx.closed_cart.id.to_string()), "invalid_state"),
        // The key placed the pending order, from another cart.
        (fx.checkout(|c| c.idempotency = guest_key("checkout-1")), "idempotency_key_reused"),
    ];
    for (command, expected) in cases {
        fx.check(command, expected);
    }
}

#[test]
fn payments() {
    let fx = Fixture::new();
    let paid = fx.paid.id.to_string();
    let cases: Vec<(Command, &str)> = vec![
        (fx.pay(|p| p.token = "tok_declined".into()), "payment_declined"),
        (fx.pay(|p| p.token = "tok_bogus".into()), "validation_failed: token"),
        (fx.pay(|p| p.token = "TOK_VISA".into()), "validation_failed: token"),
        (fx.pay(|p| p.token = String::new()), "validation_failed: token"),
        (fx.pay(|p| p.token = "4242424242424242".into()), "validation_failed: token"),
        (fx.pay(|p| p.token = " tok_visa".into()), "validation_failed: token"),
        (fx.pay(|p| p.method = "card".into()), "validation_failed: method"),
        (fx.pay(|p| p.method = String::new()), "validation_failed: method"),
        (fx.pay(|p| p.order_id = paid.clone()), "invalid_state"),
        (
            fx.pay(|p| {
                p.order_id = paid.clone();
                p.token = "tok_declined".into();
            }),
            "invalid_state",
        ),
        // The key paid the other order.
        (fx.pay(|p| p.idempotency = guest_key("pay-1")), "idempotency_key_reused"),
        (
            fx.cancel(|c| {
                c.order_id = paid.clone();
                c.expected_version = None;
            }),
            "invalid_state",
        ),
        (fx.cancel(|c| c.expected_version = Some(9)), "version_mismatch: expected 9, current 1"),
        (fx.fulfil(|f| f.order_id = fx.pending.id.to_string()), "invalid_state"),
    ];
    for (command, expected) in cases {
        fx.check(command, expected);
    }
}

#[test]
fn accounts() {
    let fx = Fixture::new();
    let cases: Vec<(Command, &str)> = vec![
        (fx.register(|r| r.email = "ann@example.com".into()), "conflict"),
        (fx.register(|r| r.email = "ANN@Example.COM".into()), "conflict"),
        (fx.register(|r| r.email = " ann@example.com ".into()), "conflict"),
        (fx.register(|r| r.email = String::new()), "validation_failed: email"),
        (fx.register(|r| r.email = "nope".into()), "validation_failed: email"),
        (
            fx.register(|r| r.email = format!("{}@example.com", long('a', 250))),
            "validation_failed: email",
        ),
        (fx.register(|r| r.name = long('x', 101)), "validation_failed: name"),
        (fx.register(|r| r.credential = String::new()), "validation_failed: credential"),
        (fx.register(|r| r.credential = long('x', 513)), "validation_failed: credential"),
        (
            fx.register(|r| {
                r.email = "nope".into();
                r.credential = String::new();
            }),
            "validation_failed: email, credential",
        ),
    ];
    for (command, expected) in cases {
        fx.check(command, expected);
    }
}

/// Ids that name nothing: malformed, or well-formed but unknown.
fn unknown_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "",
        " ",
        "ord_../../x",
        "cart_../../x",
        "prod_../x",
        "cat_../x",
        "cus_../x",
        "ord_",
        "cart_",
        "ORD_ABC",
        "ord_ABC",
        "ord_zzzzzzzzzzzzzzzzzzzzzzzzz",
        "cart_zzzzzzzzzzzzzzzzzzzzzzzzz",
        "prod_zzzzzzzzzzzz",
        "cat_zzzzzzzzzzzz",
        "cus_zzzzzzzzzzzz",
        "ord_\u{0}",
        "ord_é",
        "%2e%2e%2f",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ids.push(format!("ord_{}", long('z', 33)));
    ids.push(format!("cart_{}", long('z', 33)));
    ids.push(long('x', 10_000));
    ids
}

#[test]
fn unknown_ids_are_not_found() {
    let fx = Fixture::new();
    for id in unknown_ids() {
        let cases: Vec<(Command, &str)> = vec![
            (fx.update_shirt(|u| u.id = id.clone()), "not_found: product"),
            (fx.archive(|a| a.id = id.clone()), "not_found: product"),
            (fx.update_category(|c| c.id = id.clone()), "not_found: category"),
            (fx.delete_category(|c| c.id = id.clone()), "not_found: category"),
            (fx.create_cart(|c| c.customer_id = Some(id.clone())), "not_found: customer"),
            (fx.add_item(|a| a.cart_id = id.clone()), "not_found: cart"),
            (fx.set_item(|s| s.cart_id = id.clone()), "not_found: cart"),
            (fx.remove_item(|r| r.cart_id = id.clone()), "not_found: cart"),
            (fx.checkout(|c| c.cart_id = id.clone()), "not_found: cart"),
            (fx.pay(|p| p.order_id = id.clone()), "not_found: order"),
            (fx.cancel(|c| c.order_id = id.clone()), "not_found: order"),
            (fx.fulfil(|f| f.order_id = id.clone()), "not_found: order"),
        ];
        for (command, expected) in cases {
            fx.check(command, expected);
        }
    }
    check_invariants(fx.te.state());
}

/// An id of one kind never names a thing of another kind.
#[test]
fn ids_of_another_kind_are_not_found() {
    let fx = Fixture::new();
    let cart = fx.cart.id.to_string();
    let order = fx.pending.id.to_string();
    let cases: Vec<(Command, &str)> = vec![
        (fx.update_shirt(|u| u.id = fx.shirts.id.to_string()), "not_found: product"),
        (fx.archive(|a| a.id = cart.clone()), "not_found: product"),
        (fx.update_category(|c| c.id = fx.shirt.id.to_string()), "not_found: category"),
        (fx.delete_category(|c| c.id = fx.ann.id.to_string()), "not_found: category"),
        (fx.create_cart(|c| c.customer_id = Some(fx.shirt.id.to_string())), "not_found: customer"),
        (fx.add_item(|a| a.cart_id = order.clone()), "not_found: cart"),
        (fx.set_item(|s| s.cart_id = order.clone()), "not_found: cart"),
        (fx.remove_item(|r| r.cart_id = order.clone()), "not_found: cart"),
        (fx.checkout(|c| c.cart_id = order.clone()), "not_found: cart"),
        (fx.pay(|p| p.order_id = cart.clone()), "not_found: order"),
        (fx.cancel(|c| c.order_id = cart.clone()), "not_found: order"),
        (fx.fulfil(|f| f.order_id = fx.closed_cart.id.to_string()), "not_found: order"),
    ];
    for (command, expected) in cases {
        fx.check(command, expected);
    }
}

fn idempotency_key(scope: &str, key: &str) -> IdempotencyKey {
    IdempotencyKey { scope: scope.into(), key: key.into() }
}

#[test]
fn idempotency_keys() {
    let fx = Fixture::new();
    let (long_key, long_scope) = (long('k', 256), long('s', 129));
    let keys = [
        (idempotency_key("guest", ""), "validation_failed: idempotency_key"),
        (idempotency_key("guest", &long_key), "validation_failed: idempotency_key"),
        (idempotency_key("guest", "new\nline"), "validation_failed: idempotency_key"),
        (idempotency_key("guest", "tab\t"), "validation_failed: idempotency_key"),
        (idempotency_key("guest", "nul\u{0}"), "validation_failed: idempotency_key"),
        (idempotency_key("guest", "del\u{7f}"), "validation_failed: idempotency_key"),
        (idempotency_key("guest", "ключ"), "validation_failed: idempotency_key"),
        (idempotency_key("guest", "é"), "validation_failed: idempotency_key"),
        (idempotency_key("", "k"), "validation_failed: idempotency_key.scope"),
        (idempotency_key(&long_scope, "k"), "validation_failed: idempotency_key.scope"),
        (idempotency_key("", ""), "validation_failed: idempotency_key, idempotency_key.scope"),
    ];
    for (key, expected) in keys {
        fx.check(fx.checkout(|c| c.idempotency = Some(key.clone())), expected);
        fx.check(fx.pay(|p| p.idempotency = Some(key.clone())), expected);
    }
}

/// The longest and the plainest valid keys are accepted.
#[test]
fn idempotency_key_bounds_are_inclusive() {
    for key in [long('k', 255), " ".to_string(), "~!".to_string()] {
        let fx = Fixture::new();
        let checkout =
            fx.checkout(|c| c.idempotency = Some(idempotency_key(&long('s', 128), &key)));
        send(&fx.te.shop, checkout).unwrap_or_else(|e| panic!("checkout with key {key:?}: {e}"));
        // Keys are shared by every command of a scope, so the payment uses another scope.
        let pay = fx.pay(|p| p.idempotency = Some(idempotency_key(&long('t', 128), &key)));
        send(&fx.te.shop, pay).unwrap_or_else(|e| panic!("payment with key {key:?}: {e}"));
        check_invariants(fx.te.state());
    }
}
