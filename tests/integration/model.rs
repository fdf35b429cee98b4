//! The engine against a reference model. Proptest generates sequences of shop commands
//! (carts and their lines over four SKUs with little stock, stock counts and
//! adjustments, checkouts, payments that are approved or declined, cancellations,
//! fulfilments, the clock moving and expiry sweeps) and runs each step against a fresh
//! engine on a manual clock and against [`Model`], a few `BTreeMap`s and vectors that
//! restate the rules of the API contract. After every step the outcome (`ok`, or the
//! error's problem code with its fields or shortfalls), every SKU's stock, every order's
//! status and every cart's lines must agree, and the stock invariants must hold. A
//! failure names the step; proptest shrinks the sequence and keeps the failing seed.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use emporium_engine::*;
use emporium_tests::*;
use proptest::prelude::*;
use proptest::sample::Index;

/// The SKUs of the catalog; an index one past the end names a SKU no product has.
const SKUS: [&str; 4] = ["S0", "S1", "S2", "S3"];
const UNKNOWN_SKU: &str = "NOPE";
const TTL_MS: i64 = 15 * 60 * 1000;
const LINE_QUANTITY_MAX: u32 = 1000;

fn sku_name(sku: usize) -> &'static str {
    SKUS.get(sku).copied().unwrap_or(UNKNOWN_SKU)
}

/// Which cart or order a step names: mostly one the step can act on (an open cart, a
/// pending order, …), when there is one; with `any`, one of all of them.
#[derive(Clone, Debug)]
struct Target {
    index: Index,
    any: bool,
}

fn target() -> impl Strategy<Value = Target> {
    (any::<Index>(), prop::bool::weighted(0.15)).prop_map(|(index, any)| Target { index, any })
}

#[derive(Clone, Debug)]
enum Op {
    CreateCart,
    Add {
        cart: Target,
        sku: usize,
        quantity: i64,
    },
    Set {
        cart: Target,
        sku: usize,
        quantity: i64,
    },
    SetStock {
        sku: usize,
        on_hand: i64,
    },
    Adjust {
        sku: usize,
        delta: i64,
    },
    Checkout {
        cart: Target,
    },
    Pay {
        order: Target,
        token: &'static str,
    },
    Cancel {
        order: Target,
    },
    Fulfil {
        order: Target,
    },
    /// Moves the clock without sweeping, so that payments can meet an order that is past
    /// its time but not yet expired.
    Advance {
        ms: i64,
    },
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    // Mostly valid values, with a few out of range so that refusals are compared too.
    let sku = || prop_oneof![12 => 0..SKUS.len(), 1 => Just(SKUS.len())];
    let quantity = || prop_oneof![8 => 1i64..=3, 1 => -1i64..=0];
    let token = prop::sample::select(vec!["tok_visa", "tok_mastercard", "tok_declined"]);
    let add = (target(), sku(), quantity());
    let set = (target(), sku(), -1i64..=3);
    // Whole minutes meet the reservation time exactly; a millisecond either way probes
    // its edge.
    let minutes = prop::sample::select(vec![60_000, 300_000, 600_000, TTL_MS]);
    let edge = prop::sample::select(vec![1, TTL_MS - 1]);
    prop_oneof![
        1 => Just(Op::CreateCart),
        8 => add.prop_map(|(cart, sku, quantity)| Op::Add { cart, sku, quantity }),
        2 => set.prop_map(|(cart, sku, quantity)| Op::Set { cart, sku, quantity }),
        2 => (sku(), -1i64..=8).prop_map(|(sku, on_hand)| Op::SetStock { sku, on_hand }),
        2 => (sku(), -4i64..=4).prop_map(|(sku, delta)| Op::Adjust { sku, delta }),
        4 => target().prop_map(|cart| Op::Checkout { cart }),
        2 => (target(), token).prop_map(|(order, token)| Op::Pay { order, token }),
        1 => target().prop_map(|order| Op::Cancel { order }),
        2 => target().prop_map(|order| Op::Fulfil { order }),
        4 => minutes.prop_map(|ms| Op::Advance { ms }),
        1 => edge.prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::Expire),
    ]
}

type Lines = Vec<(&'static str, u32)>;

struct ModelCart {
    id: CartId,
    lines: Lines,
    closed: bool,
}

struct ModelOrder {
    id: OrderId,
    lines: Lines,
    status: OrderStatus,
    expires_at: TimestampMs,
}

/// The reference: what the API contract says the shop holds.
struct Model {
    now: TimestampMs,
    /// `(on_hand, reserved)` per SKU.
    stock: BTreeMap<&'static str, (u32, u32)>,
    carts: Vec<ModelCart>,
    orders: Vec<ModelOrder>,
}

/// What an accepted step changes in the model.
enum Effect {
    NewCart,
    /// A cart line's new quantity; 0 removes it.
    Line {
        cart: usize,
        sku: &'static str,
        quantity: u32,
    },
    Nothing,
    OnHand {
        sku: &'static str,
        on_hand: u32,
    },
    Place {
        cart: usize,
    },
    Pay {
        order: usize,
    },
    Release {
        order: usize,
        status: OrderStatus,
    },
    Fulfil {
        order: usize,
    },
    Advance {
        ms: i64,
    },
    Expire {
        orders: Vec<usize>,
    },
}

impl Effect {
    fn outcome(&self) -> String {
        match self {
            Effect::Expire { orders } => format!("ok {}", orders.len()),
            _ => "ok".into(),
        }
    }
}

/// What the engine answered that the model needs: the ids it chose.
enum Created {
    Nothing,
    Cart(CartId),
    Order(OrderId),
}

fn refuse(code: &str) -> Result<Effect, String> {
    Err(code.to_string())
}

impl Model {
    fn new(initial: &[i64; 4]) -> Model {
        let stock =
            SKUS.iter().zip(initial).map(|(sku, on_hand)| (*sku, (*on_hand as u32, 0))).collect();
        Model { now: T0, stock, carts: Vec::new(), orders: Vec::new() }
    }

    fn available(&self, sku: &str) -> u32 {
        let (on_hand, reserved) = self.stock[sku];
        on_hand - reserved
    }

    /// The cart a step names, if it is open.
    fn open_cart(&self, cart: Option<usize>) -> Result<usize, String> {
        let cart = cart.ok_or("not_found: cart")?;
        if self.carts[cart].closed {
            return Err("invalid_state".into());
        }
        Ok(cart)
    }

    /// Adds (`add`) or sets units of a cart line.
    fn line(
        &self,
        cart: Option<usize>,
        sku: usize,
        quantity: i64,
        add: bool,
    ) -> Result<Effect, String> {
        let cart = self.open_cart(cart)?;
        let min = if add { 1 } else { 0 };
        if !(min..=i64::from(LINE_QUANTITY_MAX)).contains(&quantity) {
            return refuse("validation_failed: quantity");
        }
        let sku = sku_name(sku);
        let existing =
            self.carts[cart].lines.iter().find(|(s, _)| *s == sku).map_or(0, |(_, q)| *q);
        let target = if add { existing + quantity as u32 } else { quantity as u32 };
        if target > LINE_QUANTITY_MAX {
            return refuse("validation_failed: quantity");
        }
        if target > 0 && !self.stock.contains_key(sku) {
            return refuse("validation_failed: sku");
        }
        if target == existing {
            return Ok(Effect::Nothing);
        }
        Ok(Effect::Line { cart, sku, quantity: target })
    }

    fn set_stock(&self, sku: usize, on_hand: i64) -> Result<Effect, String> {
        let sku = sku_name(sku);
        let Some((_, reserved)) = self.stock.get(sku) else { return refuse("not_found: SKU") };
        if on_hand < 0 {
            return refuse("validation_failed: on_hand");
        }
        if on_hand < i64::from(*reserved) {
            return refuse("conflict");
        }
        Ok(Effect::OnHand { sku, on_hand: on_hand as u32 })
    }

    fn adjust(&self, sku: usize, delta: i64) -> Result<Effect, String> {
        if delta == 0 {
            return refuse("validation_failed: delta");
        }
        let sku = sku_name(sku);
        let Some((on_hand, reserved)) = self.stock.get(sku) else {
            return refuse("not_found: SKU");
        };
        let on_hand = i64::from(*on_hand) + delta;
        if on_hand < i64::from(*reserved) {
            return refuse("conflict");
        }
        Ok(Effect::OnHand { sku, on_hand: on_hand as u32 })
    }

    fn checkout(&self, cart: Option<usize>) -> Result<Effect, String> {
        let cart = self.open_cart(cart)?;
        let lines = &self.carts[cart].lines;
        if lines.is_empty() {
            return refuse("empty_cart");
        }
        let short: Vec<String> = lines
            .iter()
            .filter(|(sku, quantity)| self.available(sku) < *quantity)
            .map(|(sku, quantity)| format!("{sku} {quantity}>{}", self.available(sku)))
            .collect();
        if !short.is_empty() {
            return Err(format!("out_of_stock: {}", short.join(", ")));
        }
        Ok(Effect::Place { cart })
    }

    fn pay(&self, order: Option<usize>, token: &str) -> Result<Effect, String> {
        let index = order.ok_or("not_found: order")?;
        let order = &self.orders[index];
        if order.status != OrderStatus::PendingPayment || self.now >= order.expires_at {
            return refuse("invalid_state");
        }
        if token == "tok_declined" {
            return refuse("payment_declined");
        }
        Ok(Effect::Pay { order: index })
    }

    fn cancel(&self, order: Option<usize>) -> Result<Effect, String> {
        let index = order.ok_or("not_found: order")?;
        if self.orders[index].status != OrderStatus::PendingPayment {
            return refuse("invalid_state");
        }
        Ok(Effect::Release { order: index, status: OrderStatus::Cancelled })
    }

    fn fulfil(&self, order: Option<usize>) -> Result<Effect, String> {
        let index = order.ok_or("not_found: order")?;
        if self.orders[index].status != OrderStatus::Paid {
            return refuse("invalid_state");
        }
        Ok(Effect::Fulfil { order: index })
    }

    /// What `op` does, given the cart and order it names (`None`: there is none yet).
    fn decide(&self, op: &Op, cart: Option<usize>, order: Option<usize>) -> Result<Effect, String> {
        match op {
            Op::CreateCart => Ok(Effect::NewCart),
            Op::Add { sku, quantity, .. } => self.line(cart, *sku, *quantity, true),
            Op::Set { sku, quantity, .. } => self.line(cart, *sku, *quantity, false),
            Op::SetStock { sku, on_hand } => self.set_stock(*sku, *on_hand),
            Op::Adjust { sku, delta } => self.adjust(*sku, *delta),
            Op::Checkout { .. } => self.checkout(cart),
            Op::Pay { token, .. } => self.pay(order, token),
            Op::Cancel { .. } => self.cancel(order),
            Op::Fulfil { .. } => self.fulfil(order),
            Op::Advance { ms } => Ok(Effect::Advance { ms: *ms }),
            Op::Expire => {
                let due = self.orders.iter().enumerate().filter(|(_, o)| {
                    o.status == OrderStatus::PendingPayment && o.expires_at <= self.now
                });
                Ok(Effect::Expire { orders: due.map(|(i, _)| i).collect() })
            }
        }
    }

    fn apply(&mut self, effect: Effect, created: Created) {
        match effect {
            Effect::NewCart => {
                let Created::Cart(id) = created else { panic!("a new cart has an id") };
                self.carts.push(ModelCart { id, lines: Vec::new(), closed: false });
            }
            Effect::Line { cart, sku, quantity } => {
                let lines = &mut self.carts[cart].lines;
                match lines.iter().position(|(s, _)| *s == sku) {
                    Some(i) if quantity == 0 => {
                        lines.remove(i);
                    }
                    Some(i) => lines[i].1 = quantity,
                    None => lines.push((sku, quantity)),
                }
            }
            Effect::Nothing => {}
            Effect::OnHand { sku, on_hand } => {
                self.stock.get_mut(sku).expect("known SKU").0 = on_hand
            }
            Effect::Place { cart } => {
                let Created::Order(id) = created else { panic!("a new order has an id") };
                let cart = &mut self.carts[cart];
                cart.closed = true;
                for (sku, quantity) in &cart.lines {
                    self.stock.get_mut(sku).expect("known SKU").1 += quantity;
                }
                let lines = cart.lines.clone();
                let expires_at = self.now + TTL_MS;
                self.orders.push(ModelOrder {
                    id,
                    lines,
                    status: OrderStatus::PendingPayment,
                    expires_at,
                });
            }
            Effect::Pay { order } => {
                let order = &mut self.orders[order];
                for (sku, quantity) in &order.lines {
                    let (on_hand, reserved) = self.stock.get_mut(sku).expect("known SKU");
                    *on_hand -= quantity;
                    *reserved -= quantity;
                }
                order.status = OrderStatus::Paid;
            }
            Effect::Release { order, status } => self.release(order, status),
            Effect::Fulfil { order } => self.orders[order].status = OrderStatus::Fulfilled,
            Effect::Advance { ms } => self.now += ms,
            Effect::Expire { orders } => {
                for order in orders {
                    self.release(order, OrderStatus::Expired);
                }
            }
        }
    }

    fn release(&mut self, order: usize, status: OrderStatus) {
        let order = &mut self.orders[order];
        for (sku, quantity) in &order.lines {
            self.stock.get_mut(sku).expect("known SKU").1 -= quantity;
        }
        order.status = status;
    }
}

/// Sends `op` to the engine; returns its outcome and the id of what it created.
fn run_engine(te: &TestEngine, op: &Op, cart_id: &str, order_id: &str) -> (String, Created) {
    let shop = &te.shop;
    let cart_id = cart_id.to_string();
    let order_id = order_id.to_string();
    let plain = |result: Result<()>| (outcome(&result), Created::Nothing);
    match op {
        Op::CreateCart => match shop.send(CreateCart::default()) {
            Ok(cart) => ("ok".into(), Created::Cart(cart.id)),
            Err(e) => (error_code(&e), Created::Nothing),
        },
        Op::Add { sku, quantity, .. } => plain(
            shop.send(AddCartItem { cart_id, sku: sku_name(*sku).into(), quantity: *quantity })
                .map(drop),
        ),
        Op::Set { sku, quantity, .. } => plain(
            shop.send(SetCartItem { cart_id, sku: sku_name(*sku).into(), quantity: *quantity })
                .map(drop),
        ),
        Op::SetStock { sku, on_hand } => plain(
            shop.send(SetStock {
                sku: sku_name(*sku).into(),
                on_hand: *on_hand,
                reason: "count".into(),
                expected_version: None,
            })
            .map(drop),
        ),
        Op::Adjust { sku, delta } => plain(
            shop.send(AdjustStock {
                sku: sku_name(*sku).into(),
                delta: *delta,
                reason: "model".into(),
            })
            .map(drop),
        ),
        Op::Checkout { .. } => {
            let email = Some("model@example.com".into());
            match shop.send(Checkout { cart_id, email, ..Default::default() }) {
                Ok(order) => ("ok".into(), Created::Order(order.id)),
                Err(e) => (error_code(&e), Created::Nothing),
            }
        }
        Op::Pay { token, .. } => plain(
            shop.send(CapturePayment {
                order_id,
                method: "test_card".into(),
                token: (*token).into(),
                idempotency: None,
            })
            .map(drop),
        ),
        Op::Cancel { .. } => {
            plain(shop.send(CancelOrder { order_id, expected_version: None }).map(drop))
        }
        Op::Fulfil { .. } => plain(shop.send(FulfillOrder { order_id }).map(drop)),
        Op::Advance { ms } => {
            te.clock.advance(*ms);
            ("ok".into(), Created::Nothing)
        }
        Op::Expire => match shop.send(ExpireDue) {
            Ok(count) => (format!("ok {count}"), Created::Nothing),
            Err(e) => (error_code(&e), Created::Nothing),
        },
    }
}

/// Which cart and order `op` names, among those the model knows.
fn targets(model: &Model, op: &Op) -> (Option<usize>, Option<usize>) {
    // Prefers the entities `fits` accepts, unless the target asks for any.
    fn pick(target: &Target, len: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
        let fitting: Vec<usize> = (0..len).filter(|i| fits(*i)).collect();
        if target.any || fitting.is_empty() {
            (len > 0).then(|| target.index.index(len))
        } else {
            Some(fitting[target.index.index(fitting.len())])
        }
    }
    let carts = model.carts.len();
    let orders = model.orders.len();
    let open = |i: usize| !model.carts[i].closed;
    let status = |wanted: OrderStatus| move |i: usize| model.orders[i].status == wanted;
    match op {
        Op::Add { cart, .. } | Op::Set { cart, .. } => (pick(cart, carts, open), None),
        Op::Checkout { cart } => {
            (pick(cart, carts, |i| open(i) && !model.carts[i].lines.is_empty()), None)
        }
        Op::Pay { order, .. } | Op::Cancel { order } => {
            (None, pick(order, orders, status(OrderStatus::PendingPayment)))
        }
        Op::Fulfil { order } => (None, pick(order, orders, status(OrderStatus::Paid))),
        _ => (None, None),
    }
}

/// Compares everything the model knows with the engine's state.
fn compare(te: &TestEngine, model: &Model, step: &str) -> Result<(), TestCaseError> {
    let state = te.state();
    for (sku, expected) in &model.stock {
        prop_assert_eq!(levels(state, sku), *expected, "{}: on hand / reserved of {}", step, sku);
    }
    prop_assert_eq!(state.order_count(), model.orders.len(), "{}: orders", step);
    for (i, order) in model.orders.iter().enumerate() {
        let status = state.order(&order.id).map(|o| o.status);
        prop_assert_eq!(status, Some(order.status), "{}: status of order #{}", step, i);
    }
    for (i, cart) in model.carts.iter().enumerate() {
        let found = state.cart(&cart.id);
        let got = found.as_ref().map(|c| {
            let lines: Vec<(&str, u32)> =
                c.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect();
            (lines, c.status != CartStatus::Open)
        });
        prop_assert_eq!(
            got,
            Some((cart.lines.clone(), cart.closed)),
            "{}: lines of cart #{}",
            step,
            i
        );
    }
    let checked = std::panic::catch_unwind(AssertUnwindSafe(|| check_invariants(state)));
    prop_assert!(checked.is_ok(), "{}: the stock invariants do not hold", step);
    Ok(())
}

fn run(initial: &[i64; 4], ops: &[Op]) -> Result<(), TestCaseError> {
    let te = TestEngine::with(|_| {});
    let prices: Vec<(&str, i64)> =
        SKUS.iter().zip([100, 250, 999, 1500]).map(|(s, p)| (*s, p)).collect();
    te.shop.send(product("Model", &prices)).expect("create product");
    for (sku, on_hand) in SKUS.iter().zip(initial) {
        let reason = "initial".into();
        te.shop
            .send(SetStock {
                sku: (*sku).into(),
                on_hand: *on_hand,
                reason,
                expected_version: None,
            })
            .expect("stock");
    }
    let mut model = Model::new(initial);
    // Two carts to begin with, so that most steps find one.
    for _ in 0..2 {
        let cart = te.shop.send(CreateCart::default()).expect("create cart");
        model.apply(Effect::NewCart, Created::Cart(cart.id));
    }
    for (i, op) in ops.iter().enumerate() {
        let step = format!("step {} of {} ({op:?})", i + 1, ops.len());
        let (cart, order) = targets(&model, op);
        let cart_id = cart.map_or("cart_zzzzzzzzzzzz".into(), |c| model.carts[c].id.to_string());
        let order_id = order.map_or("ord_zzzzzzzzzzzz".into(), |o| model.orders[o].id.to_string());
        let decided = model.decide(op, cart, order);
        let expected = match &decided {
            Ok(effect) => effect.outcome(),
            Err(code) => code.clone(),
        };
        let (got, created) = run_engine(&te, op, &cart_id, &order_id);
        prop_assert_eq!(&got, &expected, "{}: outcome", step);
        if let Ok(effect) = decided {
            model.apply(effect, created);
        }
        compare(&te, &model, &step)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_agrees_with_the_model(
        initial in prop::array::uniform4(0i64..=8),
        ops in prop::collection::vec(op(), 1..=40),
    ) {
        run(&initial, &ops)?;
    }
}
