//! Recommendations against brute force: a seeded run of orders (paid, cancelled and
//! left pending; by customers and guests; over hours), half of them folded from the
//! state at the start and half from the log after it; then every product's
//! bought-together and also-bought lists, every customer's personal list and the
//! trending lists are compared with the same lists computed here directly from the
//! orders. A restart builds the same lists again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use emporium_engine::*;
use emporium_tests::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HOUR: i64 = 3600 * 1000;
const PRODUCTS: usize = 14;
const CUSTOMERS: usize = 8;

struct World {
    te: TestEngine,
    products: Vec<ProductId>,
    customers: Vec<CustomerId>,
    categories: Vec<CategoryId>,
    orders: Vec<OrderId>,
    settings: RecommendationSettings,
}

fn sku(i: usize) -> String {
    format!("REC-{i}")
}

fn world() -> World {
    let te = TestEngine::new();
    let category = |name: &str, parent: Option<&CategoryId>| {
        let create = CreateCategory { name: name.into(), parent_id: parent.map(|p| p.to_string()) };
        te.shop.send(create).unwrap().id
    };
    let home = category("Home", None);
    let lamps = category("Lamps", Some(&home));
    let garden = category("Garden", None);
    let categories = vec![lamps, home, garden];
    let mut products = Vec::new();
    for i in 0..PRODUCTS {
        let mut create = product(&format!("Thing {i}"), &[(&sku(i), 1000 + i as i64)]);
        create.category_ids = vec![categories[i % 3].to_string()];
        let id = te.shop.send(create).unwrap().id;
        let stock = SetStock {
            sku: sku(i),
            on_hand: 100_000,
            reason: "initial".into(),
            expected_version: None,
        };
        te.shop.send(stock).unwrap();
        products.push(id);
    }
    let customers = (0..CUSTOMERS)
        .map(|i| {
            let register = RegisterCustomer {
                email: format!("buyer{i}@example.com"),
                name: format!("Buyer {i}"),
                role: Role::Customer,
                credential: "hash".into(),
            };
            te.shop.send(register).unwrap().id
        })
        .collect();
    let settings = RecommendationSettings {
        support_min: 2,
        refresh_interval_ms: 5,
        ..RecommendationSettings::default()
    };
    World { te, products, customers, categories, orders: Vec::new(), settings }
}

impl World {
    /// `count` seeded orders, an hour or few apart: most paid, some cancelled, some
    /// left pending; one in six by a guest. Products are drawn from a skewed range so
    /// that pairs repeat.
    fn orders(&mut self, rng: &mut StdRng, count: usize) {
        for _ in 0..count {
            self.te.clock.advance(rng.random_range(1..4) * HOUR + rng.random_range(0..1000));
            let customer = match rng.random_range(0..6) {
                0 => None,
                _ => Some(self.customers[rng.random_range(0..CUSTOMERS)]),
            };
            let create =
                CreateCart { customer_id: customer.map(|c| c.to_string()), currency: None };
            let cart = self.te.shop.send(create).unwrap();
            let lines = rng.random_range(1..=4);
            for _ in 0..lines {
                // Lower products are bought far more often.
                let i = rng.random_range(0..PRODUCTS).min(rng.random_range(0..PRODUCTS));
                let add = AddCartItem {
                    cart_id: cart.id.to_string(),
                    sku: sku(i),
                    quantity: rng.random_range(1..=3),
                };
                self.te.shop.send(add).unwrap();
            }
            let order = checkout(&self.te.shop, &cart.id).unwrap();
            match rng.random_range(0..10) {
                0 => {
                    let cancel =
                        CancelOrder { order_id: order.id.to_string(), expected_version: None };
                    self.te.shop.send(cancel).unwrap();
                }
                1 => {}
                _ => {
                    pay(&self.te.shop, &order.id).unwrap();
                }
            }
            self.orders.push(order.id);
        }
    }

    fn start(&self) -> Recommendations {
        Recommendations::start(&self.te.engine, self.settings.clone()).unwrap()
    }
}

/// Waits until the recommender has folded the durable log.
fn caught_up(te: &TestEngine, recommendations: &Recommendations) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while recommendations.status().read_lsn < te.engine.durable_lsn() {
        assert!(Instant::now() < deadline, "the recommender did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The lists, computed directly from the orders.
struct Brute {
    together: BTreeMap<(ProductId, ProductId), u32>,
    also: BTreeMap<(ProductId, ProductId), u32>,
    bought: BTreeMap<CustomerId, BTreeSet<ProductId>>,
    trending: BTreeMap<ProductId, f64>,
}

type Expected = Vec<(ProductId, Basis, f64)>;

impl Brute {
    fn of(world: &World) -> Brute {
        let state = world.te.state();
        let now = world.te.clock.now_ms();
        let half_life = world.settings.trending_half_life_ms as f64;
        let mut brute = Brute {
            together: BTreeMap::new(),
            also: BTreeMap::new(),
            bought: BTreeMap::new(),
            trending: BTreeMap::new(),
        };
        for id in &world.orders {
            let order = state.order(id).unwrap();
            let Some(payment) = order.payments.first() else { continue };
            let products: BTreeSet<ProductId> = order.lines.iter().map(|l| l.product_id).collect();
            for line in &order.lines {
                let age = (now - payment.created_at) as f64 / half_life;
                *brute.trending.entry(line.product_id).or_default() +=
                    line.quantity as f64 * (-age).exp2();
            }
            for &p in &products {
                for &q in products.iter().filter(|&&q| q != p) {
                    *brute.together.entry((p, q)).or_default() += 1;
                }
            }
            if let Some(customer) = order.customer_id {
                brute.bought.entry(customer).or_default().extend(products);
            }
        }
        for products in brute.bought.values() {
            for &p in products {
                for &q in products.iter().filter(|&&q| q != p) {
                    *brute.also.entry((p, q)).or_default() += 1;
                }
            }
        }
        brute
    }

    fn partners(
        counts: &BTreeMap<(ProductId, ProductId), u32>,
        of: ProductId,
        support: u32,
    ) -> Vec<(ProductId, u32)> {
        let mut list: Vec<(ProductId, u32)> = counts
            .iter()
            .filter(|(&(p, _), &c)| p == of && c >= support)
            .map(|(&(_, q), &c)| (q, c))
            .collect();
        list.sort_by_key(|&(q, c)| (std::cmp::Reverse(c), q));
        list
    }

    fn pairs(
        &self,
        world: &World,
        counts: &BTreeMap<(ProductId, ProductId), u32>,
        basis: Basis,
        of: ProductId,
        limit: usize,
    ) -> Expected {
        let state = world.te.state();
        Brute::partners(counts, of, world.settings.support_min)
            .into_iter()
            .filter(|(q, _)| offered(state, q))
            .map(|(q, c)| (q, basis, c as f64))
            .take(limit)
            .collect()
    }

    /// Trending, best first, of the products in one of `categories` (or under one)
    /// and not in `skip`.
    fn trending(
        &self,
        world: &World,
        categories: Option<&BTreeSet<CategoryId>>,
        skip: &BTreeSet<ProductId>,
        limit: usize,
    ) -> Expected {
        let state = world.te.state();
        let mut list: Vec<(ProductId, f64)> = self
            .trending
            .iter()
            .filter(|(p, _)| !skip.contains(p) && offered(state, p))
            .filter(|(p, _)| categories.is_none_or(|c| in_categories(state, p, c)))
            .map(|(&p, &w)| (p, w))
            .collect();
        list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        list.into_iter().take(limit).map(|(p, w)| (p, Basis::Trending, w)).collect()
    }

    fn for_customer(&self, world: &World, customer: CustomerId, limit: usize) -> Expected {
        let state = world.te.state();
        let bought = self.bought.get(&customer).cloned().unwrap_or_default();
        let mut scores: BTreeMap<ProductId, u64> = BTreeMap::new();
        for &p in &bought {
            for (q, c) in Brute::partners(&self.together, p, world.settings.support_min) {
                if !bought.contains(&q) {
                    *scores.entry(q).or_default() += u64::from(c);
                }
            }
        }
        let mut ranked: Vec<(ProductId, u64)> = scores.into_iter().collect();
        ranked.sort_by_key(|&(q, s)| (std::cmp::Reverse(s), q));
        let mut list: Expected = ranked
            .into_iter()
            .filter(|(q, _)| offered(state, q))
            .map(|(q, s)| (q, Basis::BoughtTogether, s as f64))
            .take(limit)
            .collect();
        let categories: BTreeSet<CategoryId> =
            bought.iter().flat_map(|p| state.product(p).unwrap().category_ids.clone()).collect();
        let mut skip: BTreeSet<ProductId> = bought.clone();
        skip.extend(list.iter().map(|(p, ..)| *p));
        list.extend(self.trending(world, Some(&categories), &skip, limit - list.len()));
        skip.extend(list.iter().map(|(p, ..)| *p));
        list.extend(self.trending(world, None, &skip, limit - list.len()));
        list
    }
}

fn offered(state: &State, product: &ProductId) -> bool {
    let product = state.product(product).unwrap();
    product.status == ProductStatus::Active
        && product.variants.iter().any(|v| state.stock(&v.sku).unwrap().available() > 0)
}

fn in_categories(state: &State, product: &ProductId, wanted: &BTreeSet<CategoryId>) -> bool {
    let product = state.product(product).unwrap();
    product.category_ids.iter().any(|c| {
        let mut next = Some(*c);
        while let Some(id) = next {
            if wanted.contains(&id) {
                return true;
            }
            next = state.category(&id).unwrap().parent_id;
        }
        false
    })
}

fn same(what: &str, actual: &[Recommendation], expected: &Expected) {
    let ids: Vec<ProductId> = actual.iter().map(|r| r.product.id).collect();
    let wanted: Vec<ProductId> = expected.iter().map(|e| e.0).collect();
    assert_eq!(ids, wanted, "{what}: the products");
    for (r, (_, basis, score)) in actual.iter().zip(expected) {
        assert_eq!(r.basis, *basis, "{what}: the basis of {}", r.product.id);
        let close = (r.score - score).abs() <= score.abs() * 1e-9;
        assert!(close, "{what}: {} scores {} for {score}", r.product.id, r.score);
    }
}

fn check(world: &World, recommendations: &Recommendations) {
    caught_up(&world.te, recommendations);
    let state = world.te.state();
    let brute = Brute::of(world);
    assert!(brute.together.values().any(|&c| c >= 2), "the orders repeat pairs");
    for limit in [3, RECOMMENDATIONS_MAX] {
        for &p in &world.products {
            let what = format!("bought together with {p} (limit {limit})");
            let expected = brute.pairs(world, &brute.together, Basis::BoughtTogether, p, limit);
            same(&what, &recommendations.bought_together(state, &p, limit), &expected);
            let what = format!("also bought with {p} (limit {limit})");
            let expected = brute.pairs(world, &brute.also, Basis::AlsoBought, p, limit);
            same(&what, &recommendations.also_bought(state, &p, limit), &expected);
        }
        for &c in &world.customers {
            let what = format!("for {c} (limit {limit})");
            let expected = brute.for_customer(world, c, limit);
            same(&what, &recommendations.for_customer(state, &c, limit), &expected);
        }
        let none = BTreeSet::new();
        let all = brute.trending(world, None, &none, limit);
        same("trending", &recommendations.trending(state, None, limit), &all);
        for category in &world.categories {
            let wanted = BTreeSet::from([*category]);
            let expected = brute.trending(world, Some(&wanted), &none, limit);
            let actual = recommendations.trending(state, Some(category), limit);
            same(&format!("trending in {category}"), &actual, &expected);
        }
    }
}

#[test]
fn every_list_matches_brute_force_over_the_same_orders() {
    let mut world = world();
    let mut rng = StdRng::seed_from_u64(7);
    // Half the orders before the start (folded from the state), half after (from the
    // log).
    world.orders(&mut rng, 60);
    let recommendations = world.start();
    world.orders(&mut rng, 60);
    check(&world, &recommendations);
    let status = recommendations.status();
    let paid = world
        .orders
        .iter()
        .filter(|id| !world.te.state().order(id).unwrap().payments.is_empty())
        .count();
    assert_eq!(status.orders, paid as u64, "every paid order counted once: {status:?}");
    assert_eq!(status.rebuilds, 1);
    // The log is past what the build read: the ids of the orders it folded are let go.
    assert_eq!(status.orders_remembered, 0, "{status:?}");

    // A product archived and one sold out leave every list; time passes for trending
    // (first, so that the pending orders' reservations are released before the count:
    // a release after it would put the product back in stock mid-check).
    world.te.clock.advance(30 * HOUR);
    while world.te.shop.send(ExpireDue).unwrap() > 0 {}
    let archive = UpdateProduct {
        id: world.products[0].to_string(),
        status: Some(ProductStatus::Archived),
        ..UpdateProduct::default()
    };
    world.te.shop.send(archive).unwrap();
    let levels = world.te.state().stock(&Sku::new(sku(1)).unwrap()).unwrap();
    let sold_out = SetStock {
        sku: sku(1),
        on_hand: i64::from(levels.reserved),
        reason: "count".into(),
        expected_version: None,
    };
    world.te.shop.send(sold_out).unwrap();
    // A product moved to another category trends there, and no longer in the old one.
    let moved = UpdateProduct {
        id: world.products[4].to_string(),
        category_ids: Some(vec![world.categories[2].to_string()]),
        ..UpdateProduct::default()
    };
    world.te.shop.send(moved).unwrap();
    check(&world, &recommendations);
    recommendations.stop();

    // A restart builds the same lists from the state.
    let World { te, products, customers, categories, orders, settings } = world;
    let world = World { te: te.reopen(), products, customers, categories, orders, settings };
    let recommendations = world.start();
    check(&world, &recommendations);
}
