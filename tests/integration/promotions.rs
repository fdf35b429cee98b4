//! Discount codes through the embedding API: what each kind of code takes off which
//! lines (rounding and allocation included), when a code cannot be used, that checkout
//! re-checks and counts uses with the reservation, that cancelled and expired orders
//! give their uses back, and the exact-usage race. Cases are one line of input and one
//! line of expected outcome, as in `domain`.

use std::sync::Arc;

use emporium_engine::*;
use emporium_tests::*;

const HOUR: i64 = 3_600_000;

/// A code as the cases write it: the text, then `pct N`, `off N` (USD minor units) or
/// `eur N`, then options `min N`, `limit N`, `per N`, `stack`, `only SKU` (the SKU's
/// product), `cat NAME` (a category of the fixture), `from +H`/`until +H` (hours from
/// now).
fn code(fixture: &Fixture, spec: &str) -> CreateDiscountCode {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let now = fixture.te.clock.now_ms();
    let mut new = CreateDiscountCode { code: words[0].into(), ..Default::default() };
    let mut i = 1;
    while i < words.len() {
        let arg = words.get(i + 1).copied().unwrap_or("");
        let n = || arg.trim_start_matches('+').parse::<i64>().unwrap_or(0);
        match words[i] {
            "pct" => new.percent_off = Some(n()),
            "off" => new.amount_off = Some(MoneyInput { amount: n(), currency: "USD".into() }),
            "eur" => new.amount_off = Some(MoneyInput { amount: n(), currency: "EUR".into() }),
            "min" => new.min_subtotal = Some(MoneyInput { amount: n(), currency: "USD".into() }),
            "limit" => new.usage_limit = Some(n()),
            "per" => new.per_customer_limit = Some(n()),
            "only" => new.product_ids.push(fixture.product_of(arg)),
            "cat" => new.category_ids.push(fixture.categories[arg].to_string()),
            "from" => new.starts_at = Some(now + n() * HOUR),
            "until" => new.ends_at = Some(now + n() * HOUR),
            "stack" => {
                new.stackable = true;
                i += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    new
}

/// SKUs `A` (10.00, category Shirts under Clothes), `B` (3.33, Mugs) and `C` (0.01, no
/// category), 1,000 units each; a signed-in customer.
struct Fixture {
    te: TestEngine,
    categories: std::collections::BTreeMap<&'static str, CategoryId>,
    customer: CustomerId,
}

impl Fixture {
    fn new() -> Fixture {
        let te = TestEngine::with(|_| {});
        let mut categories = std::collections::BTreeMap::new();
        for (name, parent) in [("Clothes", None), ("Shirts", Some("Clothes")), ("Mugs", None)] {
            let parent_id =
                parent.map(|p: &str| categories[p]).map(|id: CategoryId| id.to_string());
            let category = te.shop.send(CreateCategory { name: name.into(), parent_id }).unwrap();
            categories.insert(name, category.id);
        }
        for (sku, price, category) in
            [("A", 1000, Some("Shirts")), ("B", 333, Some("Mugs")), ("C", 1, None)]
        {
            let mut new = product(&format!("Product {sku}"), &[(sku, price)]);
            new.category_ids = category.map(|c| categories[c].to_string()).into_iter().collect();
            te.shop.send(new).unwrap();
            te.shop
                .send(SetStock {
                    sku: sku.into(),
                    on_hand: 1000,
                    reason: "initial".into(),
                    expected_version: None,
                })
                .unwrap();
        }
        let customer = te
            .shop
            .send(RegisterCustomer {
                email: "shopper@example.com".into(),
                name: "Shopper".into(),
                role: Role::Customer,
                credential: "hash".into(),
            })
            .unwrap()
            .id;
        Fixture { te, categories, customer }
    }

    fn product_of(&self, sku: &str) -> String {
        self.te.state().product_by_sku(&Sku::new(sku).unwrap()).unwrap().id.to_string()
    }

    /// A cart of `lines` (`A×2 B×3`), the customer's when `signed_in`.
    fn cart(&self, lines: &str, signed_in: bool) -> Arc<Cart> {
        let customer_id = signed_in.then(|| self.customer.to_string());
        let mut cart = self.te.shop.send(CreateCart { customer_id, currency: None }).unwrap();
        for line in lines.split_whitespace() {
            let (sku, quantity) = line.split_once('×').unwrap();
            cart = self
                .te
                .shop
                .send(AddCartItem {
                    cart_id: cart.id.to_string(),
                    sku: sku.into(),
                    quantity: quantity.parse().unwrap(),
                })
                .unwrap();
        }
        cart
    }

    fn enter(&self, cart: &Cart, code: &str) -> Result<Arc<Cart>> {
        self.te.shop.send(ApplyDiscountCode { cart_id: cart.id.to_string(), code: code.into() })
    }

    fn checkout(&self, cart: &Cart) -> Result<Arc<Order>> {
        checkout(&self.te.shop, &cart.id)
    }

    /// `-399 [-399] | 3599` : the cart's discount, line discounts, total; a code that
    /// does not apply adds `(CODE: reason)`.
    fn priced(&self, cart: &Cart) -> String {
        let priced = self.te.state().priced_cart(&cart.id, self.te.clock.now_ms()).unwrap();
        let lines: Vec<String> =
            priced.lines.iter().map(|l| format!("-{}", l.discount.amount())).collect();
        let mut out = format!(
            "-{} [{}] | {}",
            priced.discount_total.amount(),
            lines.join(" "),
            priced.total.amount()
        );
        for code in &priced.codes {
            if let Some(reason) = &code.refusal {
                out.push_str(&format!(" ({}: {reason})", code.code));
            }
        }
        out
    }
}

/// The line discounts a cart shows now.
fn priced_lines(f: &Fixture, cart: &Cart) -> Vec<i64> {
    let priced = f.te.state().priced_cart(&cart.id, f.te.clock.now_ms()).unwrap();
    priced.lines.iter().map(|l| l.discount.amount()).collect()
}

/// Creates `codes`, makes a cart of `lines` (signed in unless it starts with `guest `),
/// enters `entered` in turn; compares each entry's outcome, then the cart's pricing,
/// then the checkout's outcome with the order's discount and total.
fn check(codes: &[&str], lines: &str, entered: &[&str], expected: &str) {
    let f = Fixture::new();
    for spec in codes {
        f.te.shop.send(code(&f, spec)).unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
    let (lines, signed_in) = match lines.strip_prefix("guest ") {
        Some(rest) => (rest, false),
        None => (lines, true),
    };
    let cart = f.cart(lines, signed_in);
    let outcomes: Vec<String> = entered.iter().map(|c| outcome(&f.enter(&cart, c))).collect();
    let priced = f.priced(&cart);
    let shown = priced_lines(&f, &cart);
    let placed = match f.checkout(&cart) {
        Ok(order) => {
            // What the order records per line is what the cart showed.
            let lines = f.te.state().order_discount(&order.id).map(|d| d.line_discounts.clone());
            assert!(lines.is_none_or(|l| l == shown), "the order's line discounts are the cart's");
            format!("order -{} = {}", order.discount_total.amount(), order.total.amount())
        }
        Err(e) => error_code(&e),
    };
    check_invariants(f.te.state());
    let got = format!("{} | {priced} | {placed}", outcomes.join(", "));
    assert_eq!(got, expected, "{codes:?} {lines} {entered:?}");
}

#[test]
fn what_codes_take_off() {
    // Percentages round down; an amount spreads over lines by largest remainder.
    check(&["TEN pct 10"], "A×1", &["ten"], "ok | -100 [-100] | 900 | order -100 = 900");
    check(&["TEN pct 10"], "B×3", &["TEN"], "ok | -99 [-99] | 900 | order -99 = 900");
    check(&["TEN pct 10"], "A×1 B×3", &["TEN"], "ok | -199 [-100 -99] | 1800 | order -199 = 1800");
    check(&["OFF pct 15"], "C×7", &["OFF"], "ok | -1 [-1] | 6 | order -1 = 6");
    // A code that would take nothing off is not applied (nor counted).
    check(
        &["OFF pct 14"],
        "C×7",
        &["OFF"],
        "ok | -0 [-0] | 7 (OFF: the code takes nothing off this cart) | discount_unavailable: OFF",
    );
    check(
        &["FIVE off 500"],
        "A×1 B×3",
        &["FIVE"],
        "ok | -500 [-250 -250] | 1499 | order -500 = 1499",
    );
    check(&["ONE off 1"], "C×1", &["ONE"], "ok | -1 [-1] | 0 | order -1 = 0");
    check(&["BIG off 5000"], "A×1 B×1", &["BIG"], "ok | -1333 [-1000 -333] | 0 | order -1333 = 0");
    check(&["ALL pct 100"], "A×2 C×3", &["ALL"], "ok | -2003 [-2000 -3] | 0 | order -2003 = 0");
    // Limited to products or categories (a category includes those below it).
    check(
        &["SHIRT pct 50 only A"],
        "A×1 B×3",
        &["SHIRT"],
        "ok | -500 [-500 -0] | 1499 | order -500 = 1499",
    );
    check(
        &["CLOTH off 300 cat Clothes"],
        "B×3 A×1",
        &["CLOTH"],
        "ok | -300 [-0 -300] | 1699 | order -300 = 1699",
    );
    check(
        &["MUGS pct 10 cat Mugs"],
        "A×1",
        &["MUGS"],
        "ok | -0 [-0] | 1000 (MUGS: no item in the cart is eligible for the code) | discount_unavailable: MUGS",
    );
    // A minimum subtotal, checked at pricing and checkout.
    check(&["MIN pct 10 min 1000"], "A×1", &["MIN"], "ok | -100 [-100] | 900 | order -100 = 900");
    check(
        &["MIN pct 10 min 1001"],
        "A×1",
        &["MIN"],
        "ok | -0 [-0] | 1000 (MIN: the cart's subtotal must be at least 1001) | discount_unavailable: MIN",
    );
    // Stacking applies in order, each on what is left; exclusive codes stand alone.
    check(
        &["ST1 pct 50 stack", "ST2 off 100 stack"],
        "A×1",
        &["ST1", "ST2"],
        "ok, ok | -600 [-600] | 400 | order -600 = 400",
    );
    check(
        &["EX1 pct 50", "ST2 off 100 stack"],
        "A×1",
        &["EX1", "ST2"],
        "ok, discount_unavailable: ST2 | -500 [-500] | 500 | order -500 = 500",
    );
    check(
        &["ST1 pct 50 stack", "EX2 off 100"],
        "A×1",
        &["ST1", "EX2"],
        "ok, discount_unavailable: EX2 | -500 [-500] | 500 | order -500 = 500",
    );
    check(
        &["ST1 pct 50 stack"],
        "A×1",
        &["ST1", "st1"],
        "ok, ok | -500 [-500] | 500 | order -500 = 500",
    );
    // Codes that cannot be entered.
    check(&[], "A×1", &["NOPE"], "not_found: discount code | -0 [-0] | 1000 | order -0 = 1000");
    check(
        &["EURO eur 100"],
        "A×1",
        &["EURO"],
        "discount_unavailable: EURO | -0 [-0] | 1000 | order -0 = 1000",
    );
    check(
        &["SOON pct 10 from +1"],
        "A×1",
        &["SOON"],
        "discount_unavailable: SOON | -0 [-0] | 1000 | order -0 = 1000",
    );
    check(
        &["PER pct 10 per 1"],
        "guest A×1",
        &["PER"],
        "discount_unavailable: PER | -0 [-0] | 1000 | order -0 = 1000",
    );
    check(&["PER pct 10 per 1"], "A×1", &["PER"], "ok | -100 [-100] | 900 | order -100 = 900");
}

#[test]
fn codes_are_validated_when_created() {
    let f = Fixture::new();
    let refused = |spec: &str| error_code(&f.te.shop.send(code(&f, spec)).unwrap_err());
    assert_eq!(refused("AB pct 10"), "validation_failed: code");
    assert_eq!(refused("HAS/SLASH pct 10"), "validation_failed: code");
    assert_eq!(refused("NONE"), "validation_failed: percent_off");
    assert_eq!(refused("ZERO pct 0"), "validation_failed: percent_off");
    assert_eq!(refused("MANY pct 101"), "validation_failed: percent_off");
    assert_eq!(refused("FREE off 0"), "validation_failed: amount_off.amount");
    assert_eq!(refused("LIMIT pct 5 limit 0"), "validation_failed: usage_limit");
    assert_eq!(refused("WINDOW pct 5 from +2 until +1"), "validation_failed: ends_at");
    let mut both = code(&f, "BOTH pct 5");
    both.amount_off = Some(MoneyInput { amount: 5, currency: "USD".into() });
    assert_eq!(error_code(&f.te.shop.send(both).unwrap_err()), "validation_failed: percent_off");
    let mut ghost = code(&f, "GHOST pct 5");
    ghost.product_ids = vec!["prod_999999".into()];
    assert_eq!(
        error_code(&f.te.shop.send(ghost).unwrap_err()),
        "validation_failed: product_ids[0]"
    );
    f.te.shop.send(code(&f, "TWICE pct 5")).unwrap();
    assert_eq!(refused("twice pct 7"), "conflict");
    assert_eq!(f.te.state().discount_code_count(), 1);
}

#[test]
fn checkout_rechecks_codes_and_orders_give_uses_back() {
    let f = Fixture::new();
    f.te.shop.send(code(&f, "ONCE pct 10 limit 1 until +1")).unwrap();
    let first = f.cart("A×1", true);
    let second = f.cart("A×1", false);
    f.enter(&first, "ONCE").unwrap();
    f.enter(&second, "ONCE").unwrap();
    let order = f.checkout(&first).unwrap();
    assert_eq!(order.total.amount(), 900);
    assert_eq!(f.te.state().discount_code("once").unwrap().uses, 1);
    // The second cart entered it before it was used up: checkout refuses, changes nothing.
    assert_eq!(error_code(&f.checkout(&second).unwrap_err()), "discount_unavailable: ONCE");
    assert_eq!(levels(f.te.state(), "A"), (1000, 1));
    // Cancelling the order gives the use back; the second cart may now check out.
    f.te.shop.send(CancelOrder { order_id: order.id.to_string(), expected_version: None }).unwrap();
    assert_eq!(f.te.state().discount_code("ONCE").unwrap().uses, 0);
    let second_order = f.checkout(&second).unwrap();
    assert_eq!(second_order.discount_total.amount(), 100);
    // An order that expires gives its use back too.
    f.te.clock.advance(16 * 60 * 1000);
    f.te.shop.send(ExpireDue).unwrap();
    assert_eq!(f.te.state().order(&second_order.id).unwrap().status, OrderStatus::Expired);
    assert_eq!(f.te.state().discount_code("ONCE").unwrap().uses, 0);
    // Past its end the cart says why, and checkout refuses.
    let third = f.cart("A×1", true);
    f.enter(&third, "ONCE").unwrap();
    f.te.clock.advance(HOUR);
    assert_eq!(f.priced(&third), "-0 [-0] | 1000 (ONCE: the code has expired)");
    assert_eq!(error_code(&f.checkout(&third).unwrap_err()), "discount_unavailable: ONCE");
    // Staff switch a code off; removing it from the cart lets checkout go on.
    f.te.shop.send(code(&f, "OFF pct 5")).unwrap();
    let fourth = f.cart("A×1", true);
    f.enter(&fourth, "OFF").unwrap();
    let update =
        UpdateDiscountCode { code: "off".into(), active: Some(false), ..Default::default() };
    assert_eq!(f.te.shop.send(update).unwrap().version, 2);
    assert_eq!(error_code(&f.checkout(&fourth).unwrap_err()), "discount_unavailable: OFF");
    f.te.shop
        .send(RemoveDiscountCode { cart_id: fourth.id.to_string(), code: "Off".into() })
        .unwrap();
    assert_eq!(f.checkout(&fourth).unwrap().discount_total.amount(), 0);
    check_invariants(f.te.state());
}

#[test]
fn a_paid_discounted_order_captures_its_discounted_total_and_reopens_the_same() {
    let f = Fixture::new();
    f.te.shop.send(code(&f, "PER pct 25 per 1")).unwrap();
    let cart = f.cart("A×2 B×1", true);
    f.enter(&cart, "PER").unwrap();
    let order = f.checkout(&cart).unwrap();
    assert_eq!(
        (order.subtotal.amount(), order.discount_total.amount(), order.total.amount()),
        (2333, 583, 1750)
    );
    let receipt = f.te.shop.send(CapturePayment {
        order_id: order.id.to_string(),
        method: "test_card".into(),
        token: "tok_visa".into(),
        idempotency: None,
    });
    assert_eq!(receipt.unwrap().payment.amount.amount(), 1750);
    // The customer's one use is spent.
    let again = f.cart("A×1", true);
    assert_eq!(error_code(&f.enter(&again, "PER").unwrap_err()), "discount_unavailable: PER");
    let discount = f.te.state().order_discount(&order.id).unwrap();
    let te = f.te.reopen();
    assert_eq!(te.state().order_discount(&order.id).unwrap(), discount);
    assert_eq!(te.state().discount_code("PER").unwrap().uses, 1);
    let refused =
        te.shop.send(ApplyDiscountCode { cart_id: again.id.to_string(), code: "PER".into() });
    assert_eq!(error_code(&refused.unwrap_err()), "discount_unavailable: PER");
    check_invariants(te.state());
}

/// 1,000 checkouts at once, each of its own cart carrying a code limited to 100 uses:
/// exactly 100 orders carry it, the rest are refused and reserve nothing.
#[test]
fn a_code_limited_to_100_uses_is_used_exactly_100_times_under_concurrency() {
    let f = Fixture::new();
    f.te.shop.send(code(&f, "HUNDRED pct 10 limit 100")).unwrap();
    let carts: Vec<Arc<Cart>> = (0..1000)
        .map(|_| {
            let cart = f.cart("A×1", false);
            f.enter(&cart, "HUNDRED").unwrap();
            cart
        })
        .collect();
    let results: Vec<Result<Arc<Order>>> = std::thread::scope(|scope| {
        let chunks: Vec<_> = carts
            .chunks(125)
            .map(|chunk| {
                let shop = f.te.engine.blocking();
                scope
                    .spawn(move || chunk.iter().map(|c| checkout(&shop, &c.id)).collect::<Vec<_>>())
            })
            .collect();
        chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let placed: Vec<&Arc<Order>> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(EngineError::DiscountUnavailable { .. })))
        .count();
    assert_eq!((placed.len(), refused), (100, 900));
    let state = f.te.state();
    let carrying = placed.iter().filter(|o| state.order_discount(&o.id).is_some()).count();
    assert_eq!(carrying, 100);
    assert_eq!(state.discount_code("HUNDRED").unwrap().uses, 100);
    let totals: Vec<(i64, i64)> =
        placed.iter().map(|o| (o.discount_total.amount(), o.total.amount())).collect();
    assert_eq!(totals, vec![(100, 900); 100], "each placed order has 10 % off 10.00");
    assert_eq!(levels(state, "A"), (1000, 100), "only the placed orders reserved");
    check_invariants(state);
}

/// A per-customer count survives a restart both ways: a cancelled order's use stays
/// given back (its discount is loaded as released), a placed one's stays spent.
#[test]
fn per_customer_uses_are_rebuilt_on_reopen() {
    let f = Fixture::new();
    f.te.shop.send(code(&f, "MINE pct 10 per 1")).unwrap();
    let first = f.cart("A×1", true);
    f.enter(&first, "MINE").unwrap();
    let order = f.checkout(&first).unwrap();
    f.te.shop.send(CancelOrder { order_id: order.id.to_string(), expected_version: None }).unwrap();
    let f = Fixture { te: f.te.reopen(), ..f };
    assert!(f.te.state().order_discount(&order.id).unwrap().released);
    assert_eq!(f.te.state().discount_code("MINE").unwrap().uses, 0);
    let second = f.cart("A×1", true);
    f.enter(&second, "MINE").expect("the cancelled order gave its use back");
    f.checkout(&second).unwrap();
    let f = Fixture { te: f.te.reopen(), ..f };
    let third = f.cart("A×1", true);
    assert_eq!(error_code(&f.enter(&third, "MINE").unwrap_err()), "discount_unavailable: MINE");
    check_invariants(f.te.state());
}

// --- automatic promotions -----------------------------------------------------------

/// `discount_total [line discounts] | applied name:amount …` of a cart, priced now.
fn priced(te: &TestEngine, cart: &Cart) -> String {
    let priced = te.state().priced_cart(&cart.id, te.clock.now_ms()).unwrap();
    let lines: Vec<i64> = priced.lines.iter().map(|l| l.discount.amount()).collect();
    let applied: Vec<String> = priced
        .codes
        .iter()
        .map(|c| {
            let name = if c.code.starts_with("promo_") { "promo" } else { c.code.as_str() };
            format!("{name}:{}", c.amount)
        })
        .collect();
    format!("{} {lines:?} | {}", priced.discount_total.amount(), applied.join(" "))
}

#[test]
fn automatic_promotions_give_the_cheapest_units_free_before_codes() {
    let te = TestEngine::new();
    let a = stocked_sku(&te.shop, "A", 1000, 100);
    stocked_sku(&te.shop, "B", 333, 100);
    stocked_sku(&te.shop, "C", 500, 100);
    let three_for_two = te
        .shop
        .send(CreatePromotion { name: "3 for 2".into(), buy: 2, get: 1, ..Default::default() })
        .unwrap();
    let cases = [
        (vec![("A", 3)], "1000 [1000] | promo:1000"),
        (vec![("A", 2)], "0 [0] | "),
        // The cheapest unit of the group is the free one: 3.33 off, spread over the
        // eligible lines by what they cost (largest remainder), so returning the
        // dearer units gives back only their share.
        (vec![("A", 2), ("B", 1)], "333 [285, 48] | promo:333"),
        // Six units, two free: B and C, 8.33, spread.
        (vec![("A", 4), ("B", 1), ("C", 1)], "833 [690, 57, 86] | promo:833"),
        // Two groups' worth of the same price: two units of one line.
        (vec![("B", 6)], "666 [666] | promo:666"),
    ];
    for (lines, expected) in cases {
        let cart = cart_with(&te.shop, &lines);
        assert_eq!(priced(&te, &cart), expected, "{lines:?}");
    }

    // Before codes: a 10 % code takes its share of what the lines still cost.
    te.shop
        .send(CreateDiscountCode {
            code: "TEN".into(),
            percent_off: Some(10),
            ..Default::default()
        })
        .unwrap();
    let cart = cart_with(&te.shop, &[("A", 3)]);
    te.shop.send(ApplyDiscountCode { cart_id: cart.id.to_string(), code: "TEN".into() }).unwrap();
    assert_eq!(priced(&te, &cart), "1200 [1200] | promo:1000 TEN:200");
    let order = checkout(&te.shop, &cart.id).unwrap();
    assert_eq!((order.discount_total.amount(), order.total.amount()), (1200, 1800));
    let discount = te.state().order_discount(&order.id).unwrap();
    let names: Vec<&str> = discount.codes.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(names, [three_for_two.id.to_string().as_str(), "TEN"]);
    assert_eq!(te.state().discount_code("TEN").unwrap().uses, 1, "the promotion is no code");
    pay(&te.shop, &order.id).unwrap();
    check_invariants(te.state());

    // Limited to products: only A's units count.
    te.shop
        .send(UpdatePromotion {
            promotion_id: three_for_two.id.to_string(),
            active: Some(false),
            ..Default::default()
        })
        .unwrap();
    let only_a = te
        .shop
        .send(CreatePromotion {
            name: "A: 2 + 2".into(),
            buy: 2,
            get: 2,
            product_ids: vec![a.id.to_string()],
            ..Default::default()
        })
        .unwrap();
    let cart = cart_with(&te.shop, &[("A", 2), ("B", 4)]);
    assert_eq!(priced(&te, &cart), "0 [0, 0] | ", "only two units of A: no group");
    let cart = cart_with(&te.shop, &[("A", 4), ("B", 4)]);
    assert_eq!(priced(&te, &cart), "2000 [2000, 0] | promo:2000");
    // Cancelled: nothing to give back but the code uses (none here).
    let order = checkout(&te.shop, &cart.id).unwrap();
    te.shop.send(CancelOrder { order_id: order.id.to_string(), expected_version: None }).unwrap();
    check_invariants(te.state());

    // Ended promotions stop applying; everything survives a reopen.
    let end = te.clock.now_ms() + 1000;
    te.shop
        .send(UpdatePromotion {
            promotion_id: only_a.id.to_string(),
            ends_at: Some(end),
            ..Default::default()
        })
        .unwrap();
    te.clock.advance(1000);
    let cart = cart_with(&te.shop, &[("A", 4)]);
    assert_eq!(priced(&te, &cart), "0 [0] | ");
    let te = te.reopen();
    assert_eq!(te.state().automatic_promotions().len(), 2);
    let next =
        te.shop.send(CreatePromotion { name: "x".into(), buy: 1, get: 1, ..Default::default() });
    assert_eq!(next.unwrap().id, PromotionId::from_seq(3), "the id counter survived");
    check_invariants(te.state());

    // Refused input.
    let bad = CreatePromotion {
        name: String::new(),
        buy: 0,
        get: 101,
        product_ids: vec!["prod_nope".into()],
        ..Default::default()
    };
    assert_eq!(outcome(&te.shop.send(bad)), "validation_failed: name, buy, get, product_ids[0]");
    let missing = UpdatePromotion { promotion_id: "promo_zz".into(), ..Default::default() };
    assert_eq!(outcome(&te.shop.send(missing)), "not_found: promotion");
}

#[test]
fn promotions_stack_empty_a_code_without_refusing_it_and_returns_get_their_share() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "A", 1000, 100);
    let b = stocked_sku(&te.shop, "B", 333, 100);
    let promotion = |name: &str, products: Vec<String>| CreatePromotion {
        name: name.into(),
        buy: 1,
        get: 1,
        product_ids: products,
        ..Default::default()
    };
    te.shop.send(promotion("1+1", vec![])).unwrap();
    te.shop.send(promotion("1+1 again", vec![])).unwrap();
    // Each counts every eligible unit: 3.33 off twice, each spread over what is left.
    let cart = cart_with(&te.shop, &[("A", 1), ("B", 1)]);
    assert_eq!(priced(&te, &cart), "666 [500, 166] | promo:333 promo:333");
    let promos = te.state().automatic_promotions();
    for p in &promos {
        let off = UpdatePromotion {
            promotion_id: p.id.to_string(),
            active: Some(false),
            ..Default::default()
        };
        te.shop.send(off).unwrap();
    }

    // B made free by two promotions on B: a code limited to B applies, for nothing,
    // and the checkout goes through without it.
    te.shop.send(promotion("B 1+1", vec![b.id.to_string()])).unwrap();
    te.shop.send(promotion("B 1+1 again", vec![b.id.to_string()])).unwrap();
    let code = CreateDiscountCode {
        code: "BONLY".into(),
        percent_off: Some(10),
        product_ids: vec![b.id.to_string()],
        ..Default::default()
    };
    te.shop.send(code).unwrap();
    let cart = cart_with(&te.shop, &[("A", 1), ("B", 2)]);
    te.shop.send(ApplyDiscountCode { cart_id: cart.id.to_string(), code: "BONLY".into() }).unwrap();
    assert_eq!(priced(&te, &cart), "666 [0, 666] | promo:333 promo:333 BONLY:0");
    let order = checkout(&te.shop, &cart.id).unwrap();
    assert_eq!(order.total.amount(), 1000);
    let carried: Vec<i64> =
        te.state().order_discount(&order.id).unwrap().codes.iter().map(|c| c.amount).collect();
    assert_eq!(carried, [333, 333], "the code that took nothing is not carried");
    assert_eq!(te.state().discount_code("BONLY").unwrap().uses, 0);
    for p in te.state().automatic_promotions() {
        let off = UpdatePromotion {
            promotion_id: p.id.to_string(),
            active: Some(false),
            ..Default::default()
        };
        te.shop.send(off).unwrap();
    }

    // 3 for 2 on A×2 + B×1: 285 off A's line, 48 off B's. Returning both A gives back
    // 2000 − 285 = 1715, not 2000 while B stays free.
    te.shop
        .send(CreatePromotion { name: "3 for 2".into(), buy: 2, get: 1, ..Default::default() })
        .unwrap();
    let cart = cart_with(&te.shop, &[("A", 2), ("B", 1)]);
    let order = checkout(&te.shop, &cart.id).unwrap();
    assert_eq!(order.total.amount(), 2000);
    pay(&te.shop, &order.id).unwrap();
    te.shop.send(FulfillOrder { order_id: order.id.to_string() }).unwrap();
    let asked = te
        .shop
        .send(RequestReturn {
            order_id: order.id.to_string(),
            lines: vec![("A".into(), 2)],
            reason: "changed my mind".into(),
        })
        .unwrap();
    assert_eq!(asked.r#return.amount(), 1715);
    // Cancelling an order with promotions only gives back nothing (they count no uses).
    let cart = cart_with(&te.shop, &[("A", 3)]);
    let order = checkout(&te.shop, &cart.id).unwrap();
    te.shop.send(CancelOrder { order_id: order.id.to_string(), expected_version: None }).unwrap();
    assert!(te.state().order_discount(&order.id).unwrap().released);
    check_invariants(te.state());
    let te = te.reopen();
    check_invariants(te.state());
}
