//! Recommendation queries at the scale of a large shop: 100,000 products in 100
//! categories, every one in stock, and a model of 1,000,000 paid orders (1–4 lines, by
//! 200,000 customers over 30 days; each order's first product drawn with a skew, the
//! others among the 20 products after it, so that popular products have long partner
//! lists and pairs repeat). Each list is asked for 20 products; `fold_order` is the
//! cost of counting one more order into the full model (off the write path: the
//! recommender thread pays it).
//!
//! ```text
//! cargo bench -p emporium-bench --bench recommendations
//! ```

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion};
use emporium_bench::{product, set_stock, STOCK_ON_HAND, T0};
use emporium_engine::domain::{execute, Context, Limits};
use emporium_engine::{
    CategoryId, CreateCategory, CustomerId, OrderId, PaidOrder, ProductId, RecommendationModel,
    RecommendationSettings, Request, State,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PRODUCTS: u64 = 100_000;
const CATEGORIES: u64 = 100;
const ORDERS: u64 = 1_000_000;
const CUSTOMERS: u64 = 200_000;
const DAY: i64 = 24 * 3600 * 1000;
const LIMIT: usize = 20;

struct Shop {
    state: Arc<State>,
    products: Vec<ProductId>,
    categories: Vec<CategoryId>,
    model: RecommendationModel,
    rng: StdRng,
    next_order: u128,
}

fn run<R: Request + Debug>(state: &State, ids: &mut StdRng, command: R) -> R::Output {
    let limits = Limits::default();
    let mut ctx = Context { now: T0, ids, limits: &limits };
    match execute(state, &command, &mut ctx) {
        Ok((_, reply)) => reply,
        Err(e) => panic!("fixture command {command:?} failed: {e}"),
    }
}

/// A product drawn with a skew: the lower numbers far more often.
fn draw(rng: &mut StdRng) -> u64 {
    let a = rng.random_range(0..PRODUCTS);
    let b = rng.random_range(0..PRODUCTS);
    a.min(b)
}

impl Shop {
    fn new() -> Shop {
        let started = Instant::now();
        let state = Arc::new(State::new());
        let mut ids = StdRng::seed_from_u64(1);
        let categories: Vec<CategoryId> = (0..CATEGORIES)
            .map(|n| {
                let create = CreateCategory { name: format!("Category {n}"), parent_id: None };
                run(&state, &mut ids, create).id
            })
            .collect();
        let products = (0..PRODUCTS)
            .map(|n| {
                let mut create = product(n);
                create.category_ids = vec![categories[(n % CATEGORIES) as usize].to_string()];
                let id = run(&state, &mut ids, create).id;
                run(&state, &mut ids, set_stock(n, STOCK_ON_HAND));
                id
            })
            .collect();
        let settings = RecommendationSettings::default();
        let mut shop = Shop {
            state,
            products,
            categories,
            model: RecommendationModel::new(settings, T0),
            rng: StdRng::seed_from_u64(3),
            next_order: 0,
        };
        for (n, product) in shop.products.iter().enumerate() {
            shop.model.place(*product, vec![shop.categories[n % CATEGORIES as usize]]);
        }
        for n in 0..ORDERS {
            let paid_at = T0 + (n as i64 * 30 * DAY) / ORDERS as i64;
            let order = order(&mut shop.rng, &shop.products, &mut shop.next_order, paid_at);
            shop.model.fold(&order);
        }
        eprintln!(
            "recommendations: {PRODUCTS} products, {} orders folded in {:.1?}",
            shop.model.orders(),
            started.elapsed()
        );
        shop
    }
}

/// A paid order of 1–4 lines by one of the customers: a product drawn with the skew,
/// and the others from the 20 products after it (so that pairs repeat, as baskets
/// do).
fn order(rng: &mut StdRng, products: &[ProductId], next: &mut u128, paid_at: i64) -> PaidOrder {
    *next += 1;
    let anchor = draw(rng);
    let lines = rng.random_range(1..=4);
    let lines = (0..lines)
        .map(|i| {
            let n = if i == 0 { anchor } else { (anchor + rng.random_range(1..=20)) % PRODUCTS };
            (products[n as usize], 1)
        })
        .collect();
    let customer = CustomerId::from_seq(rng.random_range(1..=CUSTOMERS));
    PaidOrder { id: OrderId::from_random(*next), customer_id: Some(customer), lines, paid_at }
}

fn recommendations(c: &mut Criterion) {
    let Shop { state, products, categories, mut model, mut rng, mut next_order } = Shop::new();
    let state = &*state;
    let mut group = c.benchmark_group("recommendations_1m_orders");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let now = T0 + 30 * DAY;
    let popular = products[0];
    group.bench_function("bought_together_popular", |b| {
        b.iter(|| model.bought_together(state, &popular, LIMIT))
    });
    group.bench_function("bought_together_any", |b| {
        b.iter_batched(
            || products[draw(&mut rng) as usize],
            |p| model.bought_together(state, &p, LIMIT),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("also_bought_popular", |b| {
        b.iter(|| model.also_bought(state, &popular, LIMIT))
    });
    group.bench_function("also_bought_any", |b| {
        b.iter_batched(
            || products[draw(&mut rng) as usize],
            |p| model.also_bought(state, &p, LIMIT),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("for_customer", |b| {
        b.iter_batched(
            || CustomerId::from_seq(rng.random_range(1..=CUSTOMERS)),
            |customer| model.for_customer(state, &customer, now, LIMIT),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("trending", |b| b.iter(|| model.trending(state, None, now, LIMIT)));
    let category = categories[CATEGORIES as usize - 1];
    group.bench_function("trending_in_a_category", |b| {
        b.iter(|| model.trending(state, Some(&category), now, LIMIT))
    });
    group.bench_function("fold_order", |b| {
        b.iter_batched(
            || order(&mut rng, &products, &mut next_order, now),
            |order| model.fold(&order),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, recommendations);
emporium_bench::bench_main!(benches);
