//! Helpers shared by the integration tests and the crash-test child process.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_engine::*;

/// A fixed start time for tests with a manual clock: 2026-01-01T00:00:00Z.
pub const T0: TimestampMs = 1_767_225_600_000;

/// An engine on a fresh temporary directory, with a manual clock and a fixed id seed.
pub struct TestEngine {
    pub engine: Engine,
    pub shop: BlockingEngine,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
}

impl TestEngine {
    pub fn new() -> TestEngine {
        TestEngine::with(|_| {})
    }

    /// A fresh engine whose configuration `adjust` may change first.
    pub fn with(adjust: impl FnOnce(&mut EngineConfig)) -> TestEngine {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(ManualClock::new(T0));
        let mut config = config(dir.path(), clock.clone());
        adjust(&mut config);
        let engine = Engine::open(config).expect("open engine");
        let shop = engine.blocking();
        TestEngine { engine, shop, clock, dir }
    }

    /// Closes the engine and opens it again on the same directory.
    pub fn reopen(self) -> TestEngine {
        let TestEngine { engine, shop, clock, dir } = self;
        drop(shop);
        engine.close();
        let engine = Engine::open(config(dir.path(), clock.clone())).expect("reopen engine");
        let shop = engine.blocking();
        TestEngine { engine, shop, clock, dir }
    }

    pub fn state(&self) -> &State {
        self.engine.state()
    }
}

impl Default for TestEngine {
    fn default() -> Self {
        TestEngine::new()
    }
}

/// The test configuration: a manual clock, a fixed id seed, no expiry timer (the
/// test sends `ExpireDue` when it chooses and sees exactly what that command did),
/// and no settled order kept in memory.
pub fn config(dir: &Path, clock: Arc<ManualClock>) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.clock = clock;
    config.id_seed = Some(7);
    config.tick_interval_ms = TICK_NEVER_MS;
    // Every settled order leaves memory once written, so that the tests read orders
    // back from the store wherever the materializer has run (a reopen loads them so).
    config.orders_in_memory = Some(0);
    // Idempotency records too.
    config.idempotency_records_in_memory = Some(0);
    config
}

/// [`config`], with a materializer that never writes while the engine runs: every
/// command's rows stay in memory and only its log entry reaches the disk, so an open
/// of the directory (or of a checkpoint of it) must replay the log.
pub fn unmaterialized_config(dir: &Path, clock: Arc<ManualClock>) -> EngineConfig {
    let mut config = config(dir, clock);
    config.materialize_interval_ms = 3_600_000;
    config.materialize_rows_max = usize::MAX;
    config
}

/// A product input with one variant per `(sku, price)`, priced in USD.
pub fn product(title: &str, variants: &[(&str, i64)]) -> CreateProduct {
    CreateProduct {
        handle: None,
        title: title.into(),
        description: String::new(),
        brand: "Acme".into(),
        category_ids: vec![],
        attributes: BTreeMap::new(),
        status: Some(ProductStatus::Active),
        variants: variants
            .iter()
            .map(|(sku, amount)| VariantInput {
                sku: (*sku).into(),
                title: String::new(),
                options: BTreeMap::new(),
                price: MoneyInput { amount: *amount, currency: "USD".into() },
            })
            .collect(),
    }
}

/// Creates an active product with one SKU priced `amount` and `on_hand` units.
pub fn stocked_sku(shop: &BlockingEngine, sku: &str, amount: i64, on_hand: i64) -> Arc<Product> {
    let created =
        shop.send(product(&format!("Product {sku}"), &[(sku, amount)])).expect("create product");
    shop.send(SetStock {
        sku: sku.into(),
        on_hand,
        reason: "initial".into(),
        expected_version: None,
    })
    .expect("set stock");
    created
}

/// The SKUs the crash child sells and their stock at its first start: plenty of a
/// few, and one scarce SKU that runs out, so the out-of-stock path is crossed under
/// load too.
pub const CRASH_SKUS: [(&str, i64); 4] =
    [("CRASH-A", 1_000_000), ("CRASH-B", 1_000_000), ("CRASH-C", 1_000_000), ("CRASH-SCARCE", 40)];

/// The SKU of the crash child's flash sale, its stock, the sale's units and its buyers.
pub const CRASH_SALE_SKU: (&str, i64) = ("CRASH-SALE", 1_000_000);
/// Units the crash child's flash sale allocates (its limit per customer is the same).
pub const CRASH_SALE_UNITS: i64 = 500_000;
/// How many customers buy in the crash child's flash sale.
pub const CRASH_SALE_BUYERS: usize = 4;

/// What the crash child restocks `CRASH-A` by, now and then.
pub const CRASH_RESTOCK: i64 = 5;

/// Registers a customer named Ann at `email`.
pub fn register_customer(shop: &BlockingEngine, email: &str) -> Arc<Customer> {
    shop.send(RegisterCustomer {
        email: email.into(),
        name: "Ann".into(),
        role: Role::Customer,
        credential: "hash".into(),
    })
    .expect("register")
}

/// A guest cart holding `lines`.
pub fn cart_with(shop: &BlockingEngine, lines: &[(&str, i64)]) -> Arc<Cart> {
    let mut cart = shop.send(CreateCart::default()).expect("create cart");
    for (sku, quantity) in lines {
        cart = shop
            .send(AddCartItem {
                cart_id: cart.id.to_string(),
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .expect("add item");
    }
    cart
}

/// Checks out `cart_id` as a guest.
pub fn checkout(shop: &BlockingEngine, cart_id: &CartId) -> Result<Arc<Order>> {
    shop.send(Checkout {
        cart_id: cart_id.to_string(),
        email: Some("guest@example.com".into()),
        ..Default::default()
    })
}

/// Pays `order_id` with an approving test card.
pub fn pay(shop: &BlockingEngine, order_id: &OrderId) -> Result<PaymentReceipt> {
    shop.send(CapturePayment {
        order_id: order_id.to_string(),
        method: "test_card".into(),
        token: "tok_visa".into(),
        idempotency: None,
    })
}

/// Asserts that every SKU's reserved units are exactly what pending orders and open
/// flash sales hold; returns the reserved units per SKU.
///
/// Shown to fail: a build whose `release` forgets to return a cancelled order's units
/// (`inventory::release` writing `reserved` unchanged) fails `domain.rs`'s cancel and
/// expiry tests here.
pub fn check_invariants(state: &State) -> BTreeMap<Sku, u32> {
    let mut held: BTreeMap<Sku, u32> = BTreeMap::new();
    // Units reserved away from the default location, by what the holders recorded.
    let mut allocated: BTreeMap<(Sku, LocationId), u32> = BTreeMap::new();
    let mut allocated_to = |holder: Holder| {
        for part in state.allocation(&holder).iter().flat_map(|a| a.parts.iter()) {
            *allocated.entry((part.sku.clone(), part.location_id)).or_default() += part.units;
        }
    };
    let mut after = None;
    loop {
        let page = state.orders(&OrderFilter::default(), after, 100);
        for order in &page.items {
            if order.status == OrderStatus::PendingPayment {
                for line in &order.lines {
                    *held.entry(line.sku.clone()).or_default() += line.quantity;
                }
            }
            allocated_to(Holder::Order(order.id));
        }
        match page.next {
            Some(next) => after = Some(next.parse().expect("order cursors are numbers")),
            None => break,
        }
    }
    // Open flash sales hold the units not taken yet apart from normal stock.
    for sale in all_flash_sales(state) {
        if sale.holds_stock() {
            *held.entry(sale.sku.clone()).or_default() += sale.remaining;
        }
        allocated_to(Holder::Sale(sale.id));
    }
    // Checked against the orders, an independent count: `reserved <= on_hand` and
    // `available = on_hand - reserved` hold by construction of the stock cell (its
    // writer asserts the first, the second is a definition), so asserting them here
    // would check nothing.
    for levels in state.all_stock() {
        let expected = held.get(&levels.sku).copied().unwrap_or(0);
        assert_eq!(levels.reserved, expected, "reserved units of {} vs pending orders", levels.sku);
        let (_, at_locations) = state.stock_by_location(&levels.sku).expect("listed");
        for level in at_locations.iter().filter(|l| l.location_id != LocationId::DEFAULT) {
            let parts = allocated.remove(&(levels.sku.clone(), level.location_id)).unwrap_or(0);
            assert_eq!(
                level.reserved, parts,
                "{} at {}: reserved vs allocations",
                levels.sku, level.location_id
            );
        }
    }
    assert_eq!(allocated, BTreeMap::new(), "allocations at locations that reserve nothing");
    // Every order against its ledger (captures in the order, refunds in their table).
    let reconciliation = state.reconcile();
    assert_eq!(reconciliation.mismatches, vec![], "orders disagree with their ledgers");
    held
}

/// Every flash sale.
pub fn all_flash_sales(state: &State) -> Vec<Arc<FlashSale>> {
    let mut sales = Vec::new();
    let mut after = None;
    loop {
        let page = state.flash_sales(FlashSaleFilter::default(), 0, after, 100);
        sales.extend(page.items);
        match page.next {
            Some(next) => after = Some(next.parse().expect("sale cursors are numbers")),
            None => return sales,
        }
    }
}

/// Asserts that each flash sale's `reserved` and `sold` are the units of its pending and
/// paid orders, counted from the orders, and that they add up to its quantity with
/// `remaining`.
pub fn check_flash_sales(state: &State) {
    let mut counted: BTreeMap<FlashSaleId, (u32, u32)> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = state.orders(&OrderFilter::default(), after, 100);
        for order in &page.items {
            let Some(sale) = state.flash_sale_of_order(order) else { continue };
            let units: u32 = order.lines.iter().map(|l| l.quantity).sum();
            let entry = counted.entry(sale).or_default();
            match order.status {
                OrderStatus::PendingPayment => entry.0 += units,
                status if status.was_paid() => entry.1 += units,
                _ => {}
            }
        }
        match page.next {
            Some(next) => after = Some(next.parse().expect("order cursors are numbers")),
            None => break,
        }
    }
    for sale in all_flash_sales(state) {
        let (reserved, sold) = counted.get(&sale.id).copied().unwrap_or_default();
        assert_eq!((sale.reserved, sale.sold), (reserved, sold), "sale {} vs its orders", sale.id);
        assert_eq!(sale.remaining + sale.reserved + sale.sold, sale.quantity, "sale {}", sale.id);
    }
}

/// Units of `sku` in pending orders and in paid or fulfilled orders, counted from the
/// orders (not from the stock row).
pub fn units_in_orders(state: &State, sku: &Sku) -> (u32, u32) {
    let (mut pending, mut sold) = (0, 0);
    let mut after = None;
    loop {
        let page = state.orders(&OrderFilter::default(), after, 100);
        for order in &page.items {
            let units: u32 = order.lines.iter().filter(|l| &l.sku == sku).map(|l| l.quantity).sum();
            match order.status {
                OrderStatus::PendingPayment => pending += units,
                status if status.was_paid() => sold += units,
                _ => {}
            }
        }
        match page.next {
            Some(next) => after = Some(next.parse().expect("order cursors are numbers")),
            None => return (pending, sold),
        }
    }
}

/// Test conveniences on the manual clock.
pub trait ManualClockExt {
    /// Sets the clock to the wall clock's time.
    fn set_to_now(&self);
}

impl ManualClockExt for ManualClock {
    fn set_to_now(&self) {
        self.set(SystemClock.now_ms());
    }
}

/// The sequencer's timer period in tests: a day of real time, so that nothing expires
/// unless the test moves the manual clock and sends `ExpireDue` itself.
pub const TICK_NEVER_MS: u64 = 24 * 60 * 60 * 1000;

/// One line naming an engine error the way the API's problem codes do, with the detail a
/// test should pin down: `validation_failed: title, variants[0].sku`, `not_found: order`,
/// `out_of_stock: A 3>1, B 2>0` (requested > available), `conflict`, `invalid_state`.
pub fn error_code(error: &EngineError) -> String {
    match error {
        EngineError::Validation(fields) => {
            let fields: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
            format!("validation_failed: {}", fields.join(", "))
        }
        EngineError::NotFound { kind, .. } => format!("not_found: {kind}"),
        EngineError::OutOfStock(short) => {
            let short: Vec<String> = short
                .iter()
                .map(|s| format!("{} {}>{}", s.sku, s.requested, s.available))
                .collect();
            format!("out_of_stock: {}", short.join(", "))
        }
        EngineError::InvalidState(_) => "invalid_state".into(),
        EngineError::Conflict(_) => "conflict".into(),
        EngineError::EmptyCart => "empty_cart".into(),
        EngineError::PaymentDeclined(_) => "payment_declined".into(),
        EngineError::IdempotencyKeyReused => "idempotency_key_reused".into(),
        EngineError::SoldOut { .. } => "sold_out".into(),
        EngineError::SaleNotLive(_) => "sale_not_live".into(),
        EngineError::DiscountUnavailable { code, .. } => format!("discount_unavailable: {code}"),
        EngineError::PurchaseLimitExceeded { .. } => "purchase_limit_exceeded".into(),
        EngineError::VersionMismatch { expected, current } => {
            format!("version_mismatch: expected {expected}, current {current}")
        }
        other => format!("unexpected: {other:?}"),
    }
}

/// `ok` for a success, else the [`error_code`] of the failure.
pub fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(error) => error_code(error),
    }
}

/// `(on_hand, reserved)` of `sku`; panics when the SKU has no stock row.
pub fn levels(state: &State, sku: &str) -> (u32, u32) {
    let sku = Sku::new(sku).expect("a valid SKU");
    let levels = state.stock(&sku).unwrap_or_else(|| panic!("no stock row for {sku}"));
    (levels.on_hand, levels.reserved)
}

/// Polls `done` every few milliseconds until it holds, for what another thread or
/// process does in its own time (a timer, the materializer, a log consumer, a queue
/// filling); fails the test, naming `what`, once `limit` has passed.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An engine's sequencer, held and released by a test (the `faults.hold_sequencer`
/// switch): while it is held, every command sent waits in the queue, so requests pile up
/// exactly where the test wants them.
pub struct SequencerHold(pub Faults);

impl SequencerHold {
    /// Holds the sequencer; returns once it is held.
    pub fn hold(&self) {
        self.hold_after(|| {})
    }

    /// Holds the sequencer, `wake` sending a command in between: the sequencer looks at
    /// the switch only between its commands and timer ticks, so an idle one is held
    /// only once something wakes it.
    pub fn hold_after(&self, wake: impl FnOnce()) {
        self.0.hold_sequencer.store(true, std::sync::atomic::Ordering::Release);
        wake();
        wait_until("the sequencer to be held", Duration::from_secs(10), || {
            self.0.sequencer_held.load(std::sync::atomic::Ordering::Acquire)
        });
    }

    /// Lets the sequencer take its queued commands.
    pub fn release(&self) {
        self.0.hold_sequencer.store(false, std::sync::atomic::Ordering::Release);
    }
}
