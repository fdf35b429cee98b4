//! The HTTP layer's own hot functions, with no socket and no engine round trip: what a
//! request costs the server before and after the engine. Route matching (every
//! request), bearer-token verification (every authenticated request), a product's JSON
//! (the hottest read), parsing a cart-item body with field paths (every write), a
//! problem+json body (every refusal), and a customer message rendered from its
//! template (every order confirmation).
//!
//! Run: `cargo bench -p emporium-bench --bench server` (add `-- --quick` for a short
//! run).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, Criterion, Throughput};
use emporium_engine::*;
use emporium_server::auth::{Principal, TokenKeys};
use emporium_server::notifications::{default_template, render, template_context};
use emporium_server::problem::Problem;
use emporium_server::wire::{CartItemAdd, ProductView};

fn sample_product() -> Product {
    let usd = Currency::USD;
    Product {
        id: ProductId::from_seq(4242),
        handle: "organic-t-shirt".into(),
        title: "Organic T-Shirt".into(),
        description: "Soft, fair and made to last: a t-shirt of organic cotton.".into(),
        brand: "Acme".into(),
        category_ids: vec![CategoryId::from_seq(3), CategoryId::from_seq(7)],
        attributes: BTreeMap::from([("material".into(), "cotton".into())]),
        status: ProductStatus::Active,
        variants: ["S", "M", "L"]
            .iter()
            .map(|size| Variant {
                sku: Sku::new(format!("TSHIRT-{size}")).unwrap(),
                title: size.to_string(),
                options: BTreeMap::from([("size".into(), size.to_string())]),
                price: Money::new(1999, usd).unwrap(),
            })
            .collect(),
        rating: Rating { sum: 45, count: 10 },
        created_at: 1_767_225_600_000,
        updated_at: 1_767_225_600_000,
        version: 3,
    }
}

/// A flash-sale purchase's order: one line, pending, no payment, no address.
fn sample_order() -> Order {
    let price = Money::new(990, Currency::USD).unwrap();
    Order {
        id: OrderId::from_random(0x0123_4567_89ab_cdef),
        seq: 77,
        cart_id: CartId::from_seq(1),
        customer_id: Some(CustomerId::from_seq(9)),
        email: "buyer@example.com".into(),
        shipping_address: None,
        status: OrderStatus::PendingPayment,
        lines: vec![OrderLine {
            sku: Sku::new("SALE-1").unwrap(),
            product_id: ProductId::from_seq(4242),
            title: "Acme Organic Cotton T-Shirt".into(),
            quantity: 1,
            unit_price: price,
            line_total: price,
        }],
        subtotal: price,
        discount_total: Money::zero(Currency::USD),
        total: price,
        reservation_expires_at: 1_767_226_200_000,
        payments: Vec::new(),
        created_at: 1_767_225_600_000,
        updated_at: 1_767_225_600_000,
        version: 1,
    }
}

fn server(c: &mut Criterion) {
    let mut group = c.benchmark_group("server");
    group.throughput(Throughput::Elements(1));
    group.bench_function("route_find", |b| {
        b.iter(|| {
            emporium_server::routes::find(
                &http::Method::POST,
                "/v1/carts/cart_0123456789abcdefghijklmno/checkout",
            )
            .unwrap()
        })
    });
    let keys = TokenKeys::new(vec![("k1".into(), vec![7; 32])]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let token = keys.issue(
        &Principal::User { id: CustomerId::from_seq(9), role: Role::Customer },
        now,
        3600,
    );
    group.bench_function("token_verify", |b| b.iter(|| keys.verify(&token).unwrap()));
    let verified = emporium_server::auth::VerifiedTokens::default();
    let keys = parking_lot::RwLock::new(keys);
    group.bench_function("token_verified_cached", |b| {
        b.iter(|| verified.verify(&keys, &token, now).unwrap())
    });
    let product = sample_product();
    group.bench_function("product_json", |b| {
        b.iter(|| serde_json::to_vec(&ProductView::new(&product, StarCounts::default())).unwrap())
    });
    let order = sample_order();
    group.bench_function("order_json_view", |b| {
        b.iter(|| serde_json::to_vec(&emporium_server::wire::OrderView::new(&order, None)).unwrap())
    });
    group.bench_function("order_json_direct", |b| {
        b.iter(|| emporium_server::wire::order_json(&order, None))
    });
    let body = br#"{"sku":"TSHIRT-M","quantity":2}"#;
    group.bench_function("parse_cart_item", |b| {
        b.iter(|| emporium_server::http::parse_json::<CartItemAdd>(body).unwrap())
    });
    let refusal = Problem::from(EngineError::OutOfStock(vec![Shortfall {
        sku: Sku::new("TSHIRT-M").unwrap(),
        requested: 3,
        available: 1,
    }]));
    group.bench_function("problem_json", |b| {
        b.iter(|| serde_json::to_vec(&refusal.body("req_0123456789abcdef")).unwrap())
    });
    // What each customer message costs the renderer: its data, then the default order
    // confirmation (subject and body) from the template source.
    let record = serde_json::json!({"id": "evt_42_0", "type": "order.placed",
                                    "at": "2026-01-01T00:00:00Z", "data": {}});
    let customer = sample_customer();
    let (subject, body) = default_template(NotificationKind::OrderConfirmation);
    group.bench_function("notification_render", |b| {
        b.iter(|| {
            let context = template_context("Acme", &order, Some(&customer), &record);
            render(subject, body, &context).unwrap()
        })
    });
    group.finish();
}

fn sample_customer() -> Customer {
    Customer {
        id: CustomerId::from_seq(9),
        email: "buyer@example.com".into(),
        name: "Ada Buyer".into(),
        role: Role::Customer,
        credential: String::new(),
        created_at: 1_767_225_600_000,
        updated_at: 1_767_225_600_000,
        version: 1,
    }
}

criterion_group!(benches, server);
emporium_bench::bench_main!(benches);
