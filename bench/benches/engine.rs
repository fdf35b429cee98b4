//! In-memory cost of each command kind on the sequencer's code path, with no I/O.
//!
//! Every command the engine accepts is decided and applied by one thread, so the time
//! `decide` + `apply` take per command caps the engine's write throughput no matter
//! how fast the disk is. This drives `emporium_engine::domain::execute` (decide, apply,
//! resolve the reply: what the sequencer does per command, minus the queue hop, the
//! LSN and the hand-over to the committer) against a state pre-filled with 10,000
//! products (group `apply`). Inputs that must be fresh (a cart to check out, an order
//! to pay) are made outside the measurement with `iter_batched_ref`, which also drops
//! the results outside it. The carts and orders the inputs need accumulate; the state
//! is rebuilt whenever 50,000 have, so it holds 10k products and up to 50k carts and
//! orders throughout. The cost of a lookup grows with the size of the maps, so group
//! `apply_1m_orders` repeats the order path on a state that already holds a million
//! pending orders (and their carts). `purchase_flash_sale_keyed` is a flash sale's
//! purchase as the HTTP endpoint sends it (an idempotency key, a signed-in buyer).
//! Group `apply_beside_a_crowded_sale` cancels a sale of one buyer while another sale
//! is open with 100,000 buyers' counts, which the cancel must not walk. The clock
//! advances 1 ms every 100 commands.
//! Target: at least 500k commands/s, i.e. 2 µs or less per command.
//!
//! Run: `cargo bench -p emporium-bench --bench engine` (add `-- --quick` for a short
//! run).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, BatchSize, BenchmarkGroup, Criterion, Throughput};
use emporium_bench::{checkout, product, set_stock, sku, STOCK_ON_HAND, T0};
use emporium_engine::domain::{execute, Context, Limits};
use emporium_engine::{
    AddCartItem, Address, AdjustStock, ApplyDiscountCode, CancelFlashSale, CancelOrder,
    CapturePayment, Checkout, CreateCart, CreateDiscountCode, CreateFlashSale,
    CreateShippingMethod, CustomerId, Event, ExpireDue, IdempotencyKey, MoneyInput,
    PurchaseFlashSale, RefundPayment, RegisterCustomer, Request, Role, SetTaxRate, ShippingRate,
    State, TimestampMs, FLASH_SALE_QUANTITY_MAX,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Products (one SKU each) in the state every measurement starts from.
const CATALOG_PRODUCTS: u64 = 10_000;
/// Entities the benchmarks may add before the state is rebuilt, so that a long run
/// measures a state of about the same size throughout.
const GROWTH_MAX: u64 = 50_000;
/// Pending orders in the state while `ExpireDue` is measured (none of them due).
const PENDING_ORDERS: u64 = 1_000;
/// Pending orders in the state of the `apply_1m_orders` group.
const LARGE_PENDING_ORDERS: u64 = 1_000_000;
/// How many commands share one millisecond of the advancing clock.
const COMMANDS_PER_MS: u64 = 100;
/// Customers taking turns in the flash sale of `purchase_flash_sale_keyed`.
const SALE_BUYERS: usize = 256;
/// Buyers holding a unit each in another open sale while `apply_beside_a_crowded_sale`
/// closes one.
const CROWD_BUYERS: usize = 100_000;

/// The time handed to the domain: it advances with the commands executed, as the
/// sequencer's clock would, so orders do not all share one expiry instant.
#[derive(Default)]
struct Ticker {
    commands: u64,
}

impl Ticker {
    fn now(&mut self) -> TimestampMs {
        self.commands += 1;
        T0 + (self.commands / COMMANDS_PER_MS) as TimestampMs
    }
}

/// The state under test and the means to prepare inputs against it. Inputs carry the
/// `Arc<State>` they were prepared for, so rebuilding the state mid-batch is harmless.
struct Fixture {
    state: Arc<State>,
    ids: StdRng,
    clock: Ticker,
    limits: Limits,
    next_product: u64,
    next_sku: u64,
    grown: u64,
    growth_max: u64,
    /// The flash sale's buyers, registered with the sale (see [`purchase_input`]).
    buyers: Vec<CustomerId>,
    purchases: u64,
}

impl Fixture {
    /// The catalog, rebuilt after `growth_max` new carts and orders.
    fn new(growth_max: u64) -> Fixture {
        let mut fixture = Fixture {
            state: Arc::new(State::new()),
            ids: StdRng::seed_from_u64(1),
            clock: Ticker::default(),
            limits: Limits::default(),
            next_product: CATALOG_PRODUCTS,
            next_sku: 0,
            grown: 0,
            growth_max,
            buyers: Vec::new(),
            purchases: 0,
        };
        fixture.rebuild();
        fixture
    }

    /// A fresh state holding the catalog, every SKU stocked.
    fn rebuild(&mut self) {
        self.state = Arc::new(State::new());
        self.grown = 0;
        self.buyers.clear();
        for n in 0..CATALOG_PRODUCTS {
            self.run(product(n));
            self.run(set_stock(n, STOCK_ON_HAND));
        }
    }

    /// Executes a preparation command, which must succeed.
    fn run<R: Request + Debug>(&mut self, command: R) -> R::Output {
        let now = self.clock.now();
        let mut ctx = Context { now, ids: &mut self.ids, limits: &self.limits };
        match execute(&self.state, &command, &mut ctx) {
            Ok((_, reply)) => reply,
            Err(e) => panic!("fixture command {command:?} failed: {e}"),
        }
    }

    /// Counts `entities` new entities and rebuilds the state once it has grown enough.
    /// Called before an input is prepared, never after: a rebuild drops what the
    /// current state holds.
    fn grow(&mut self, entities: u64) {
        self.grown += entities;
        if self.grown > self.growth_max {
            self.rebuild();
        }
    }

    /// The next catalog SKU number, round robin.
    fn next_sku(&mut self) -> u64 {
        self.next_sku = (self.next_sku + 1) % CATALOG_PRODUCTS;
        self.next_sku
    }

    /// An input: `command` against the current state.
    fn input<R: Request>(&self, command: R) -> (Arc<State>, R) {
        (self.state.clone(), command)
    }

    /// An open cart with `lines` lines of one unit each (distinct SKUs).
    fn cart(&mut self, lines: usize) -> String {
        let cart = self.run(CreateCart::default());
        let cart_id = cart.id.to_string();
        for _ in 0..lines {
            let sku = sku(self.next_sku());
            self.run(AddCartItem { cart_id: cart_id.clone(), sku, quantity: 1 });
        }
        cart_id
    }

    /// A pending order of one line.
    fn pending_order(&mut self) -> String {
        let cart_id = self.cart(1);
        let order = self.run(checkout(cart_id));
        order.id.to_string()
    }
}

/// The measured routine: what the sequencer runs per command.
struct Routine {
    ids: StdRng,
    clock: Ticker,
    limits: Limits,
}

impl Routine {
    fn new() -> Routine {
        // A different seed from the fixture's, so the two never draw the same cart id.
        Routine {
            ids: StdRng::seed_from_u64(2),
            clock: Ticker::default(),
            limits: Limits::default(),
        }
    }

    fn execute<R: Request + Debug>(
        &mut self,
        input: &mut (Arc<State>, R),
    ) -> (Vec<Event>, R::Output) {
        let now = self.clock.now();
        let mut ctx = Context { now, ids: &mut self.ids, limits: &self.limits };
        match execute(&input.0, &input.1, &mut ctx) {
            Ok(done) => done,
            Err(e) => panic!("measured command {:?} failed: {e}", input.1),
        }
    }
}

/// Measures `execute` of the inputs `setup` makes, one per iteration.
fn measure<R: Request + Debug>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    fixture: &mut Fixture,
    routine: &mut Routine,
    mut setup: impl FnMut(&mut Fixture) -> (Arc<State>, R),
) {
    group.bench_function(name, |b| {
        b.iter_batched_ref(|| setup(fixture), |input| routine.execute(input), BatchSize::SmallInput)
    });
}

fn checkout_input(f: &mut Fixture, lines: usize) -> (Arc<State>, Checkout) {
    f.grow(2);
    let cart_id = f.cart(lines);
    f.input(checkout(cart_id))
}

/// The code of `checkout_1_line_discount_code`: 10 % off, no limit.
const BENCH_CODE: &str = "BENCH10";

/// A one-line checkout of a cart carrying a 10 % discount code.
fn discounted_checkout_input(f: &mut Fixture) -> (Arc<State>, Checkout) {
    f.grow(2);
    if f.state.discount_code(BENCH_CODE).is_none() {
        // From T0: the measured routine's clock runs behind the fixture's.
        let (percent_off, starts_at) = (Some(10), Some(T0));
        let code = BENCH_CODE.into();
        f.run(CreateDiscountCode { code, percent_off, starts_at, ..Default::default() });
    }
    let cart_id = f.cart(1);
    f.run(ApplyDiscountCode { cart_id: cart_id.clone(), code: BENCH_CODE.into() });
    f.input(checkout(cart_id))
}

/// A one-line checkout of a cart carrying the 10 % code, shipped to California by a
/// flat-rate method and taxed there: the discount, the shipping quote and the line's
/// tax on top of a plain checkout.
fn shipped_checkout_input(f: &mut Fixture) -> (Arc<State>, Checkout) {
    let (state, mut checkout) = discounted_checkout_input(f);
    if state.shipping_methods().is_empty() {
        let rate = ShippingRate::Flat { amount: 499 };
        let (name, currency) = ("Standard".into(), "USD".into());
        f.run(CreateShippingMethod { name, currency, rate, countries: vec![] });
        f.run(SetTaxRate { zone: "US-CA".into(), rate_bp: Some(725) });
    }
    let state = f.state.clone();
    checkout.shipping_method_id = Some(state.shipping_methods()[0].id.to_string());
    checkout.shipping_address = Some(Address {
        name: "Ann".into(),
        line1: "1 Main St".into(),
        city: "Fresno".into(),
        region: "CA".into(),
        postal_code: "93650".into(),
        country: "US".into(),
        ..Default::default()
    });
    (state, checkout)
}

/// A partial refund (one cent) of a freshly paid one-line order.
fn refund_input(f: &mut Fixture) -> (Arc<State>, RefundPayment) {
    f.grow(2);
    let order_id = f.pending_order();
    let token = "tok_visa".into();
    let method = "test_card".into();
    f.run(CapturePayment { order_id: order_id.clone(), method, token, idempotency: None });
    let amount = Some(MoneyInput { amount: 1, currency: "USD".into() });
    f.input(RefundPayment { order_id, amount, reason: "bench".into() })
}

fn capture_input(f: &mut Fixture) -> (Arc<State>, CapturePayment) {
    f.grow(2);
    let order_id = f.pending_order();
    let token = "tok_visa".into();
    f.input(CapturePayment { order_id, method: "test_card".into(), token, idempotency: None })
}

fn cancel_input(f: &mut Fixture) -> (Arc<State>, CancelOrder) {
    f.grow(2);
    let order_id = f.pending_order();
    f.input(CancelOrder { order_id, expected_version: None })
}

/// A keyed purchase of one unit in a live flash sale of a million units, by one of
/// [`SALE_BUYERS`] customers in turn, none near the cap: what `POST
/// /v1/flash-sales/{id}/purchases` sends the engine. The sale and its buyers are made
/// with the first one after each rebuild (the state grows by an order a purchase).
fn purchase_input(f: &mut Fixture) -> (Arc<State>, PurchaseFlashSale) {
    f.grow(1);
    if f.buyers.is_empty() {
        let quantity = FLASH_SALE_QUANTITY_MAX;
        f.run(open_sale(sku(0), quantity, quantity));
        for n in 0..SALE_BUYERS {
            let buyer = register_buyer(f, "sale-buyer", n);
            f.buyers.push(buyer);
        }
    }
    let sale = f.state.open_flash_sales()[0].id;
    f.purchases += 1;
    let customer_id = f.buyers[f.purchases as usize % SALE_BUYERS];
    let key = format!("purchase-{}", f.purchases);
    let idempotency = Some(IdempotencyKey { scope: customer_id.to_string(), key });
    f.input(PurchaseFlashSale { sale_id: sale.to_string(), customer_id, quantity: 1, idempotency })
}

/// Registers the `n`th buyer of a group of them.
fn register_buyer(f: &mut Fixture, group: &str, n: usize) -> CustomerId {
    let customer = f.run(RegisterCustomer {
        email: format!("{group}-{n}@example.com"),
        name: format!("Buyer {n}"),
        role: Role::Customer,
        credential: "hash".into(),
    });
    customer.id
}

/// A sale open from `T0` for 300 days.
fn open_sale(sku: String, quantity: i64, per_customer_limit: i64) -> CreateFlashSale {
    CreateFlashSale {
        sku,
        price: MoneyInput { amount: 500, currency: "USD".into() },
        quantity,
        per_customer_limit,
        // From T0: the measured routine's clock runs behind the fixture's.
        starts_at: T0,
        ends_at: T0 + 300 * 24 * 60 * 60 * 1000,
        reservation_ttl_ms: None,
    }
}

/// The catalog and an open sale of `sku(0)` in which each of [`CROWD_BUYERS`] customers
/// holds a unit.
fn crowded_sale_fixture() -> Fixture {
    let mut f = Fixture::new(u64::MAX);
    let sale = f.run(open_sale(sku(0), CROWD_BUYERS as i64, 1)).id.to_string();
    for n in 0..CROWD_BUYERS {
        let customer_id = register_buyer(&mut f, "crowd", n);
        f.run(PurchaseFlashSale {
            sale_id: sale.clone(),
            customer_id,
            quantity: 1,
            idempotency: None,
        });
        f.buyers.push(customer_id);
    }
    f
}

/// A sale of one unit of another SKU, bought by one of the crowd, to be cancelled.
fn close_sale_input(f: &mut Fixture) -> (Arc<State>, CancelFlashSale) {
    let sku = sku(1 + f.next_sku() % (CATALOG_PRODUCTS - 1));
    let sale_id = f.run(open_sale(sku, 1, 1)).id.to_string();
    let customer_id = f.buyers[0];
    f.run(PurchaseFlashSale {
        sale_id: sale_id.clone(),
        customer_id,
        quantity: 1,
        idempotency: None,
    });
    f.input(CancelFlashSale { sale_id })
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
}

fn commands(c: &mut Criterion) {
    let mut fixture = Fixture::new(GROWTH_MAX);
    let mut routine = Routine::new();
    let mut group = c.benchmark_group("apply");
    configure(&mut group);
    let (f, r, g) = (&mut fixture, &mut routine, &mut group);
    measure(g, "create_product", f, r, |f| {
        f.next_product += 1;
        f.grow(1);
        f.input(product(f.next_product))
    });
    measure(g, "set_stock", f, r, |f| {
        let n = f.next_sku();
        f.input(set_stock(n, STOCK_ON_HAND + (n % 2) as i64))
    });
    measure(g, "adjust_stock", f, r, |f| {
        let n = f.next_sku();
        let delta = if n.is_multiple_of(2) { 1 } else { -1 };
        f.input(AdjustStock { sku: sku(n), delta, reason: "received".into() })
    });
    measure(g, "create_cart", f, r, |f| {
        f.grow(1);
        f.input(CreateCart::default())
    });
    measure(g, "add_cart_item", f, r, |f| {
        f.grow(1);
        let cart_id = f.cart(0);
        let sku = sku(f.next_sku());
        f.input(AddCartItem { cart_id, sku, quantity: 2 })
    });
    measure(g, "checkout_1_line", f, r, |f| checkout_input(f, 1));
    measure(g, "checkout_5_lines", f, r, |f| checkout_input(f, 5));
    measure(g, "checkout_1_line_discount_code", f, r, discounted_checkout_input);
    measure(g, "checkout_1_line_discount_shipping_tax", f, r, shipped_checkout_input);
    measure(g, "capture_payment", f, r, capture_input);
    measure(g, "refund_payment", f, r, refund_input);
    measure(g, "cancel_order", f, r, cancel_input);
    measure(g, "purchase_flash_sale_keyed", f, r, purchase_input);
    // Orders wait to expire, but none is due: the sequencer's periodic check.
    f.rebuild();
    for _ in 0..PENDING_ORDERS {
        f.pending_order();
    }
    measure(g, "expire_due_nothing_due", f, r, |f| f.input(ExpireDue));
    group.finish();
}

/// The fixture of `apply_1m_orders`, filled on first use.
fn large_fixture(slot: &mut Option<Fixture>) -> &mut Fixture {
    slot.get_or_insert_with(|| {
        let mut fixture = Fixture::new(u64::MAX);
        for _ in 0..LARGE_PENDING_ORDERS {
            fixture.pending_order();
        }
        fixture
    })
}

/// The order path again, on a state holding a million pending orders and their carts.
fn commands_on_a_large_state(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_1m_orders");
    configure(&mut group);
    // Filled only if one of these is selected: it takes a while.
    let mut fixture = None;
    let mut routine = Routine::new();
    let r = &mut routine;
    group.bench_function("checkout_1_line", |b| {
        let f = large_fixture(&mut fixture);
        b.iter_batched_ref(|| checkout_input(f, 1), |input| r.execute(input), BatchSize::SmallInput)
    });
    group.bench_function("capture_payment", |b| {
        let f = large_fixture(&mut fixture);
        b.iter_batched_ref(|| capture_input(f), |input| r.execute(input), BatchSize::SmallInput)
    });
    group.finish();
}

/// Closing a sale while another holds many buyers' counts.
fn commands_beside_a_crowded_sale(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_beside_a_crowded_sale");
    configure(&mut group);
    // Filled only if selected: a hundred thousand registrations and purchases.
    let mut fixture = None;
    let mut routine = Routine::new();
    group.bench_function("cancel_flash_sale", |b| {
        let f = fixture.get_or_insert_with(crowded_sale_fixture);
        b.iter_batched_ref(
            || close_sale_input(f),
            |input| routine.execute(input),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, commands, commands_on_a_large_state, commands_beside_a_crowded_sale);
emporium_bench::bench_main!(benches);
