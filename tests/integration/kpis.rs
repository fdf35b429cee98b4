//! Business KPIs against counts kept by the script that made them: seeded shopping
//! sessions over three days (carts left empty, filled and abandoned, checked out
//! within the abandonment window or after it, paid, refunded) and a flash sale; the
//! report per hour is compared bucket by bucket with what the script recorded. Then
//! the same report after a restart (the saved model and the log after it) and after
//! losing the saved model (built from the state). And a model with a short retention
//! against one that keeps every minute.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use emporium_engine::*;
use emporium_tests::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const WINDOW: i64 = DAY;
const SKUS: [(&str, i64); 3] = [("KPI-A", 1000), ("KPI-B", 2500), ("KPI-C", 700)];

/// What the script did in one session.
#[derive(Default)]
struct Session {
    customer: Option<CustomerId>,
    created: i64,
    lines: Vec<(usize, i64)>,
    checkout: Option<i64>,
    pay: bool,
    refund: bool,
    cart: Option<CartId>,
    order: Option<std::sync::Arc<Order>>,
    paid_at: Option<i64>,
    refunded_at: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Create,
    Fill,
    Checkout,
    Pay,
    Refund,
}

struct Script {
    te: TestEngine,
    products: Vec<ProductId>,
    sessions: Vec<Session>,
    /// `(time, units)` of each flash-sale purchase; the units paid for.
    flash: Vec<(i64, i64)>,
    flash_paid: u32,
}

fn settings(te: &TestEngine) -> KpiSettings {
    KpiSettings {
        abandonment_window_ms: WINDOW,
        save_interval_ms: 10,
        refresh_interval_ms: 5,
        ..KpiSettings::in_dir(te.dir.path().join("kpis"))
    }
}

fn script() -> Script {
    let te = TestEngine::new();
    let products = SKUS.iter().map(|(sku, price)| stocked_sku(&te.shop, sku, *price, 100_000).id);
    let products = products.collect();
    let customers: Vec<CustomerId> = (0..4)
        .map(|i| {
            let register = RegisterCustomer {
                email: format!("kpi{i}@example.com"),
                name: format!("Shopper {i}"),
                role: Role::Customer,
                credential: "hash".into(),
            };
            te.shop.send(register).unwrap().id
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(11);
    let sessions = (0..70)
        .map(|_| {
            let created = T0 + rng.random_range(0..72 * 60) * MINUTE + rng.random_range(0..MINUTE);
            let lines = match rng.random_range(0..4) {
                0 => vec![],
                _ => (0..rng.random_range(1..=3))
                    .map(|_| (rng.random_range(0..SKUS.len()), rng.random_range(1..=3)))
                    .collect(),
            };
            let checkout =
                (!lines.is_empty() && rng.random_bool(0.6)).then(|| match rng.random_bool(0.5) {
                    true => created + rng.random_range(5..120) * MINUTE,
                    // Some after the window: abandoned, though checked out in the end.
                    false => created + rng.random_range(20 * 60..30 * 60) * MINUTE,
                });
            let pay = checkout.is_some() && rng.random_bool(0.8);
            Session {
                customer: rng.random_bool(0.5).then(|| customers[rng.random_range(0..4)]),
                created,
                lines,
                checkout,
                pay,
                refund: pay && rng.random_bool(0.3),
                ..Session::default()
            }
        })
        .collect();
    let mut script = Script { te, products, sessions, flash: Vec::new(), flash_paid: 0 };
    script.run(&customers);
    script
}

impl Script {
    fn at(&self, time: i64) {
        let now = self.te.clock.now_ms();
        assert!(time >= now, "the script runs forward");
        self.te.clock.advance(time - now);
    }

    fn run(&mut self, customers: &[CustomerId]) {
        let mut timeline: Vec<(i64, Step, usize)> = Vec::new();
        for (i, s) in self.sessions.iter().enumerate() {
            timeline.push((s.created, Step::Create, i));
            if !s.lines.is_empty() {
                timeline.push((s.created + MINUTE, Step::Fill, i));
            }
            if let Some(at) = s.checkout {
                timeline.push((at, Step::Checkout, i));
                if s.pay {
                    timeline.push((at + MINUTE, Step::Pay, i));
                }
                if s.refund {
                    timeline.push((at + 30 * MINUTE, Step::Refund, i));
                }
            }
        }
        timeline.sort();
        let flash_at = T0 + 10 * HOUR;
        let mut flash_done = false;
        for (time, step, i) in timeline {
            if !flash_done && time >= flash_at {
                self.flash_sale(flash_at, customers);
                flash_done = true;
            }
            self.at(time);
            let shop = &self.te.shop;
            let s = &mut self.sessions[i];
            match step {
                Step::Create => {
                    let create = CreateCart {
                        customer_id: s.customer.map(|c| c.to_string()),
                        currency: None,
                    };
                    s.cart = Some(shop.send(create).unwrap().id);
                }
                Step::Fill => {
                    for &(sku, quantity) in &s.lines {
                        let add = AddCartItem {
                            cart_id: s.cart.unwrap().to_string(),
                            sku: SKUS[sku].0.into(),
                            quantity,
                        };
                        shop.send(add).unwrap();
                    }
                }
                Step::Checkout => s.order = Some(checkout(shop, &s.cart.unwrap()).unwrap()),
                Step::Pay => {
                    pay(shop, &s.order.as_ref().unwrap().id).unwrap();
                    s.paid_at = Some(time);
                }
                Step::Refund => {
                    let refund = RefundPayment {
                        order_id: s.order.as_ref().unwrap().id.to_string(),
                        amount: Some(MoneyInput { amount: 100, currency: "USD".into() }),
                        reason: "damaged".into(),
                    };
                    shop.send(refund).unwrap();
                    s.refunded_at = Some(time);
                }
            }
        }
        assert!(flash_done);
    }

    /// A sale of 10 units: three purchases (2, 2 and 1 units), the first two paid.
    fn flash_sale(&mut self, at: i64, customers: &[CustomerId]) {
        self.at(at);
        let shop = &self.te.shop;
        stocked_sku(shop, "KPI-F", 900, 100);
        let sale = shop
            .send(CreateFlashSale {
                sku: "KPI-F".into(),
                price: MoneyInput { amount: 400, currency: "USD".into() },
                quantity: 10,
                per_customer_limit: 2,
                starts_at: at,
                ends_at: at + 2 * HOUR,
                reservation_ttl_ms: None,
            })
            .unwrap();
        for (i, units) in [2, 2, 1].into_iter().enumerate() {
            self.at(at + (i as i64 + 1) * MINUTE);
            let buy = PurchaseFlashSale {
                sale_id: sale.id.to_string(),
                customer_id: customers[i],
                quantity: units,
                idempotency: None,
            };
            let order = shop.send(buy).unwrap();
            self.flash.push((at + (i as i64 + 1) * MINUTE, units));
            if i < 2 {
                pay(shop, &order.id).unwrap();
                self.flash_paid += units as u32;
            }
        }
    }

    /// The counts the script expects, per hour from `from`, at `now`.
    fn expected(&self, from: i64, hours: usize, now: i64) -> Vec<KpiCounts> {
        let mut buckets = vec![KpiCounts::default(); hours];
        let hour = |t: i64| ((t - from) / HOUR) as usize;
        let usd = Currency::new("USD").unwrap();
        for s in &self.sessions {
            let b = &mut buckets[hour(s.created)];
            b.carts_created += 1;
            let converted = s.checkout.is_some_and(|at| at - s.created < WINDOW);
            if !s.lines.is_empty() {
                b.carts_with_items += 1;
                if converted {
                    b.carts_converted += 1;
                } else if s.created + WINDOW <= now {
                    b.carts_abandoned += 1;
                }
            }
            if let Some(at) = s.checkout {
                buckets[hour(at)].orders_placed += 1;
                buckets[hour(at)].checkouts += 1;
            }
            if let Some(at) = s.paid_at {
                let b = &mut buckets[hour(at)];
                b.orders_paid += 1;
                *b.orders_paid_by_currency.entry(usd).or_default() += 1;
                let total: i64 = s.lines.iter().map(|&(sku, q)| SKUS[sku].1 * q).sum();
                *b.gmv.entry(usd).or_default() += total;
            }
            if let Some(at) = s.refunded_at {
                *buckets[hour(at)].refunded.entry(usd).or_default() += 100;
            }
        }
        for (i, &(at, _)) in self.flash.iter().enumerate() {
            buckets[hour(at)].orders_placed += 1;
            if i < 2 {
                // Paid four minutes later, the same hour (the sale starts on the hour).
                let b = &mut buckets[hour(at)];
                b.orders_paid += 1;
                *b.orders_paid_by_currency.entry(usd).or_default() += 1;
                *b.gmv.entry(usd).or_default() += 400 * self.flash[i].1;
            }
        }
        buckets
    }

    /// Units per product in paid orders (the flash sale's product last).
    fn units(&self) -> BTreeMap<ProductId, u64> {
        let mut units = BTreeMap::new();
        for s in self.sessions.iter().filter(|s| s.paid_at.is_some()) {
            for &(sku, q) in &s.lines {
                *units.entry(self.products[sku]).or_default() += q as u64;
            }
        }
        units
    }
}

fn caught_up(te: &TestEngine, kpis: &Kpis) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while kpis.status().read_lsn < te.engine.durable_lsn() {
        assert!(Instant::now() < deadline, "the KPI folder did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts that two reports hold the same figures (their log positions may differ).
fn same_figures(what: &str, report: &KpiReport, wanted: &KpiReport) {
    assert_eq!(report.totals, wanted.totals, "{what}: the totals");
    for (bucket, other) in report.buckets.iter().zip(&wanted.buckets) {
        assert_eq!(bucket, other, "{what}: a bucket");
    }
    assert_eq!(report.buckets.len(), wanted.buckets.len(), "{what}");
    assert_eq!(report.top_products, wanted.top_products, "{what}: the top products");
    // (Units reserved follow the state: the unpaid purchase expires in its time.)
    let sold = |r: &KpiReport| -> Vec<(FlashSaleId, u32, u32)> {
        r.flash_sales.iter().map(|s| (s.sale_id, s.quantity, s.sold)).collect()
    };
    assert_eq!(sold(report), sold(wanted), "{what}: the flash sales");
}

#[test]
fn kpis_match_the_sessions_that_made_them_across_restarts() {
    let script = script();
    let te = &script.te;
    let kpis = Kpis::start(&te.engine, settings(te)).unwrap();
    // Every window decided, and a day and a half with no entry after the last one.
    te.clock.advance(40 * HOUR);
    caught_up(te, &kpis);
    let (from, hours) = (T0, 110);
    let now = te.clock.now_ms();
    let report = kpis.report(from, from + hours as i64 * HOUR, HOUR).unwrap();
    let expected = script.expected(from, hours, now);
    assert_eq!(report.buckets.len(), hours);
    for (bucket, wanted) in report.buckets.iter().zip(&expected) {
        assert_eq!(&bucket.counts, wanted, "the hour from {}", bucket.start);
    }
    assert_eq!(report.carts_undecided, 0);
    let totals = &report.totals;
    assert!(totals.carts_abandoned > 0 && totals.carts_converted > 0, "{totals:?}");
    assert!(totals.carts_with_items < totals.carts_created, "{totals:?}");
    let rate = totals.abandonment_rate().unwrap();
    let decided = (totals.carts_abandoned + totals.carts_converted) as f64;
    assert_eq!(rate, totals.carts_abandoned as f64 / decided);

    // Top products: units of the paid orders, the flash sale's product among them.
    let mut units = script.units();
    let sale_product = te.state().product_by_sku(&Sku::new("KPI-F").unwrap()).unwrap().id;
    units.insert(sale_product, u64::from(script.flash_paid));
    let mut wanted: Vec<(ProductId, u64)> = units.into_iter().collect();
    wanted.sort_by_key(|&(p, u)| (std::cmp::Reverse(u), p));
    let top: Vec<(ProductId, u64)> =
        report.top_products.iter().map(|(p, s)| (*p, s.units)).collect();
    assert_eq!(top, wanted);
    let sale = &report.flash_sales[0];
    assert_eq!((sale.quantity, sale.sold), (10, script.flash_paid));

    // A range inside: the same counts, summed by the day.
    let day = kpis.report(T0 + 24 * HOUR, T0 + 48 * HOUR, 24 * HOUR).unwrap();
    let mut summed = KpiCounts::default();
    for counts in &expected[24..48] {
        for (currency, amount) in &counts.gmv {
            *summed.gmv.entry(*currency).or_default() += amount;
        }
        summed.carts_created += counts.carts_created;
        summed.orders_paid += counts.orders_paid;
    }
    assert_eq!(
        (day.totals.carts_created, day.totals.orders_paid, &day.totals.gmv),
        (summed.carts_created, summed.orders_paid, &summed.gmv)
    );
    kpis.stop();
    assert!(kpis.status().saved_lsn >= report.lsn);

    // A restart resumes from the saved model.
    let file = te.dir.path().join("kpis/kpis.bin");
    assert!(file.exists());
    let Script { te, products, sessions, flash, flash_paid } = script;
    let script = Script { te: te.reopen(), products, sessions, flash, flash_paid };
    let te = &script.te;
    let kpis = Kpis::start(&te.engine, settings(te)).unwrap();
    caught_up(te, &kpis);
    assert_eq!(kpis.status().rebuilds, 0);
    let again = kpis.report(from, from + hours as i64 * HOUR, HOUR).unwrap();
    same_figures("after a restart", &again, &report);
    kpis.stop();

    // Without it, the model is built from the state: the same figures.
    std::fs::remove_file(&file).unwrap();
    let kpis = Kpis::start(&te.engine, settings(te)).unwrap();
    assert_eq!(kpis.status().rebuilds, 1);
    let rebuilt = kpis.report(from, from + hours as i64 * HOUR, HOUR).unwrap();
    same_figures("built from the state", &rebuilt, &report);

    // Bad ranges are refused.
    let field = |r: Result<KpiReport>| match r {
        Err(EngineError::Validation(fields)) => fields[0].field.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(field(kpis.report(T0, T0, HOUR)), "to");
    assert_eq!(field(kpis.report(T0, T0 + 2000 * HOUR, HOUR)), "bucket");
    assert_eq!(field(kpis.report(T0, T0 + HOUR, 1000)), "bucket");
}

/// A model with a short retention sums old minutes per hour and old product hours per
/// day, and drops what is older still; what it keeps answers as a model that keeps
/// everything does, and it is the same whether it rolled as it went or at once.
#[test]
fn kpis_keep_detail_for_their_retention_then_sum_it() {
    let script = script();
    let te = &script.te;
    let entries = te.engine.read_log(Lsn(1), 1_000_000).unwrap();
    let state = te.state();
    let retention = KpiRetention { minutes_ms: 6 * HOUR, product_hours_ms: DAY, all_ms: 2 * DAY };
    let (mut whole, mut bounded) = (KpiModel::new(WINDOW), KpiModel::new(WINDOW));
    bounded.set_retention(retention);
    for entry in &entries {
        whole.fold(state, entry);
        bounded.fold(state, entry);
    }
    let (d, w) = (bounded.detail(), whole.detail());
    // The sessions span three days: something of each level was summed, and dropped.
    assert!(d.kept_from > T0 && d.hours > 0 && d.product_days > 0, "{d:?}");
    assert!(d.minutes < w.minutes && d.product_hours < w.product_hours, "{d:?} {w:?}");
    assert_eq!(bounded.totals(), whole.totals());
    let now = te.clock.now_ms();
    let end = (entries.last().unwrap().at / HOUR + 1) * HOUR;
    let report =
        |m: &KpiModel, from: i64, to: i64, bucket: i64| m.report(state, from, to, bucket, now);

    // Per hour from the first instant kept: the same buckets; before it, nothing.
    let (ours, theirs) = (
        report(&bounded, d.kept_from, end, HOUR).unwrap(),
        report(&whole, d.kept_from, end, HOUR).unwrap(),
    );
    assert_eq!((&ours.buckets, &ours.totals), (&theirs.buckets, &theirs.totals));
    assert!(ours.totals.carts_created > 0 && ours.totals.orders_paid > 0, "{:?}", ours.totals);
    let before = report(&bounded, T0, d.kept_from, HOUR).unwrap();
    assert_eq!(before.totals, KpiCounts::default());
    assert!(report(&whole, T0, d.kept_from, HOUR).unwrap().totals.carts_created > 0);

    // Per minute from the first minute kept; a range from before it is refused.
    let (ours, theirs) = (
        report(&bounded, d.minutes_from, end, MINUTE).unwrap(),
        report(&whole, d.minutes_from, end, MINUTE).unwrap(),
    );
    assert_eq!(ours.buckets, theirs.buckets);
    assert!(ours.totals.orders_placed > 0, "nothing in the last hours: {:?}", ours.totals);
    refused(report(&bounded, d.minutes_from - HOUR, end, MINUTE));

    // The top products of an hour whose sales were summed per day are that day's.
    let hour = d.product_hours_from - 5 * HOUR;
    let ours = report(&bounded, hour, hour + HOUR, HOUR).unwrap();
    assert_eq!((ours.products_from, ours.products_to), (hour - 19 * HOUR, hour + 5 * HOUR));
    let theirs = report(&whole, ours.products_from, ours.products_to, HOUR).unwrap();
    assert!(!ours.top_products.is_empty());
    assert_eq!(ours.top_products, theirs.top_products);

    // A longer retention set later keeps what was summed summed: minute buckets over
    // it are still refused, and the rest answers alike.
    let mut longer = bounded.clone();
    longer.set_retention(KpiRetention::default());
    let summed = d.kept_from + 7 * MINUTE;
    refused(report(&longer, summed, summed + 10 * HOUR, MINUTE));
    let from = d.minutes_from + 7 * MINUTE;
    let (ours, theirs) =
        (report(&longer, from, end, MINUTE).unwrap(), report(&whole, from, end, MINUTE).unwrap());
    assert_eq!(ours.buckets, theirs.buckets);
    let (ours, theirs) = (
        report(&longer, d.kept_from, end, HOUR).unwrap(),
        report(&whole, d.kept_from, end, HOUR).unwrap(),
    );
    assert_eq!(ours.buckets, theirs.buckets);
    let ours = report(&longer, hour, hour + HOUR, HOUR).unwrap();
    let theirs = report(&whole, ours.products_from, ours.products_to, HOUR).unwrap();
    assert_eq!(ours.top_products, theirs.top_products);

    // Rolled at once, the whole model is the one that rolled as it went.
    whole.set_retention(retention);
    assert_eq!(whole, bounded);
}

/// Asserts that a report was refused for its bucket.
fn refused(report: Result<KpiReport>) {
    match report {
        Err(EngineError::Validation(fields)) => assert_eq!(fields[0].field, "bucket"),
        other => panic!("{other:?}"),
    }
}
