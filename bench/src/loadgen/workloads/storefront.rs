//! The storefront: shoppers browsing the demo shop in the proportions of TPC-W's
//! *shopping mix* (WIPS), each virtual client one shopper with its own guest cart.
//!
//! TPC-W's fourteen web interactions map onto the API like this (weights in hundredths
//! of a percent, summing to 10,000):
//!
//! | step | TPC-W interactions (their share) | request(s) | weight |
//! |---|---|---|---|
//! | home | Home (16 %) | `GET /v1/products?limit=20` | 1600 |
//! | category listing | New Products (5 %), Best Sellers (5 %) | `GET /v1/products?category_id=…&limit=20` | 1000 |
//! | product detail | Product Detail (17 %), Admin Request and Confirm (0.19 %) | `GET /v1/products/{id}` | 1719 |
//! | search | Search Request (20 %), Search Results (17 %) | `GET /v1/search?q=…` | 3700 |
//! | add to cart | Shopping Cart (11.6 %) | `POST /v1/carts/{id}/items` | 1160 |
//! | cart view | Customer Registration (3 %), Buy Request (2.6 %) | `GET /v1/carts/{id}` | 560 |
//! | checkout with payment | Buy Confirm (1.2 %) | `POST …/checkout`, `POST /v1/orders/{id}/payments` | 120 |
//! | order status | Order Inquiry (0.75 %), Order Display (0.66 %) | `GET /v1/orders/{id}` | 141 |
//!
//! Search is probed before the run: while `/v1/search` answers 404 `not_found` the step
//! stays in the mix but sends nothing — it is counted as skipped and the shopper draws
//! again — so the other steps keep their relative weights. A step whose precondition is
//! missing does what a shop page would: the cart view and add-to-cart open a cart
//! first, checkout adds an item to an empty cart first, and order status without an
//! order yet is skipped and redrawn. A cart that reaches [`CART_LINES_MAX`] lines is
//! abandoned for a new one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;

use crate::loadgen::check::{AnyObject, Cart, Order, Page, Product, Receipt, Verdict};
use crate::loadgen::driver::{Cx, Step, Workload};
use crate::loadgen::http::idempotency;
use crate::loadgen::workloads::{call, worse, HttpClient, Req};

/// A storefront step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shop {
    /// The home page's product listing.
    Home,
    /// A category's listing.
    Category,
    /// A product page.
    Product,
    /// A search.
    Search,
    /// Add to cart.
    AddToCart,
    /// The cart page.
    CartView,
    /// Checkout and payment.
    Checkout,
    /// An order's status.
    OrderStatus,
}

/// The mix: each step and its weight in hundredths of a percent (see the module docs).
pub const MIX: [(Shop, u32); 8] = [
    (Shop::Home, 1600),
    (Shop::Category, 1000),
    (Shop::Product, 1719),
    (Shop::Search, 3700),
    (Shop::AddToCart, 1160),
    (Shop::CartView, 560),
    (Shop::Checkout, 120),
    (Shop::OrderStatus, 141),
];

/// Lines after which a shopper abandons the cart and starts another.
pub const CART_LINES_MAX: usize = 20;

/// Draws a step from the mix.
pub fn draw(rng: &mut impl Rng) -> Shop {
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let mut ticket = rng.random_range(0..total);
    for (step, weight) in MIX {
        if ticket < weight {
            return step;
        }
        ticket -= weight;
    }
    unreachable!("the ticket is below the total weight")
}

/// What the shoppers browse.
#[derive(Clone)]
pub struct Catalog {
    /// Product ids.
    pub products: Vec<String>,
    /// Every SKU with stock.
    pub skus: Vec<String>,
    /// Category ids.
    pub categories: Vec<String>,
    /// Words from product titles, for search queries.
    pub words: Vec<String>,
}

impl Catalog {
    /// The catalog of `products` and `categories`.
    pub fn new(products: &[Product], categories: Vec<String>) -> Catalog {
        let mut words: Vec<String> = products
            .iter()
            .flat_map(|p| p.title.split_whitespace().map(|w| w.to_lowercase()))
            .filter(|w| w.chars().all(|c| c.is_ascii_alphabetic()) && w.len() > 2)
            .collect();
        words.sort();
        words.dedup();
        Catalog {
            products: products.iter().map(|p| p.id.clone()).collect(),
            skus: products.iter().flat_map(|p| p.variants.iter().map(|v| v.sku.clone())).collect(),
            categories,
            words,
        }
    }
}

/// The storefront workload.
pub struct Storefront {
    /// The server.
    pub addr: SocketAddr,
    /// What there is to browse.
    pub catalog: Catalog,
    /// Whether `/v1/search` exists.
    pub search: bool,
    /// Draws of a step that sent nothing (search while it does not exist).
    pub skipped_search: AtomicU64,
    /// Draws of order status before the shopper had an order.
    pub skipped_order_status: AtomicU64,
    /// The share of checkouts left unpaid, so their reservations expire (0 in the
    /// benchmark; the soak leaves some).
    pub unpaid_share: f64,
    /// Where paid units and unpaid orders are booked, when the run checks stock after.
    pub sales: Option<Arc<Sales>>,
}

/// What the shoppers bought, for the stock check after a run: units paid per SKU, the
/// orders left unpaid, and payments whose answer never came.
pub struct Sales {
    index: HashMap<String, usize>,
    /// Units paid for, per SKU (in the order of [`Catalog::skus`]).
    pub paid: Vec<AtomicU64>,
    /// Orders checked out and left unpaid (the first [`UNPAID_KEPT`]).
    pub unpaid: Mutex<Vec<String>>,
    /// Payments sent without an answer: paid or not, nobody knows.
    pub unknown: AtomicU64,
}

/// Unpaid orders kept for the check after a run, at most.
pub const UNPAID_KEPT: usize = 100_000;

impl Sales {
    /// An empty ledger over `skus`.
    pub fn new(skus: &[String]) -> Sales {
        Sales {
            index: skus.iter().enumerate().map(|(i, sku)| (sku.clone(), i)).collect(),
            paid: skus.iter().map(|_| AtomicU64::new(0)).collect(),
            unpaid: Mutex::new(Vec::new()),
            unknown: AtomicU64::new(0),
        }
    }

    fn paid(&self, order: &Order) {
        for line in &order.items {
            if let Some(&i) = self.index.get(&line.sku) {
                self.paid[i].fetch_add(u64::from(line.quantity), Ordering::Relaxed);
            }
        }
    }

    fn unpaid(&self, order: &Order) {
        let mut unpaid = self.unpaid.lock().expect("the ledger lock is never poisoned");
        if unpaid.len() < UNPAID_KEPT {
            unpaid.push(order.id.clone());
        }
    }
}

/// A shopper.
pub struct Shopper {
    http: HttpClient,
    cart: Option<(String, usize)>,
    order: Option<String>,
}

impl Workload for Storefront {
    type Client = Shopper;

    fn unit(&self) -> &'static str {
        "interaction"
    }

    async fn connect(&self, _index: usize) -> anyhow::Result<Shopper> {
        Ok(Shopper { http: HttpClient::connect(self.addr).await?, cart: None, order: None })
    }

    async fn reconnect(&self, client: &mut Shopper) -> anyhow::Result<()> {
        client.http.reconnect().await
    }

    async fn step(&self, shopper: &mut Shopper, cx: &mut Cx) -> Step {
        let step = draw(&mut cx.rng);
        let result = match step {
            Shop::Home => self.listing(shopper, cx, None).await,
            Shop::Category => {
                let category = pick(&mut cx.rng, &self.catalog.categories).to_string();
                self.listing(shopper, cx, Some(&category)).await
            }
            Shop::Product => self.product(shopper, cx).await,
            Shop::Search if !self.search => {
                self.skipped_search.fetch_add(1, Ordering::Relaxed);
                return Step::Skipped;
            }
            Shop::Search => self.search(shopper, cx).await,
            Shop::AddToCart => self.add_to_cart(shopper, cx).await,
            Shop::CartView => self.cart_view(shopper, cx).await,
            Shop::Checkout => self.checkout(shopper, cx).await,
            Shop::OrderStatus if shopper.order.is_none() => {
                self.skipped_order_status.fetch_add(1, Ordering::Relaxed);
                return Step::Skipped;
            }
            Shop::OrderStatus => self.order_status(shopper, cx).await,
        };
        match result {
            Ok(verdict) => Step::Done(verdict),
            Err(error) => Step::Broken(error),
        }
    }
}

fn pick<'a, R: Rng>(rng: &mut R, items: &'a [String]) -> &'a str {
    &items[rng.random_range(0..items.len())]
}

impl Storefront {
    async fn listing(
        &self,
        s: &mut Shopper,
        cx: &mut Cx,
        category: Option<&str>,
    ) -> anyhow::Result<Verdict> {
        let (path, op) = match category {
            None => ("/v1/products?limit=20".to_string(), "home"),
            Some(c) => (format!("/v1/products?category_id={c}&limit=20"), "category listing"),
        };
        let (page, verdict) =
            call::<Page<Product>>(&mut s.http.conn, &mut cx.rec, op, Req::get(&path), 200, &[])
                .await?;
        Ok(match page {
            Some(p) if p.data.len() > 20 => Verdict::Malformed,
            _ => verdict,
        })
    }

    async fn product(&self, s: &mut Shopper, cx: &mut Cx) -> anyhow::Result<Verdict> {
        let id = pick(&mut cx.rng, &self.catalog.products);
        let path = format!("/v1/products/{id}");
        let (product, verdict) = call::<Product>(
            &mut s.http.conn,
            &mut cx.rec,
            "product detail",
            Req::get(&path),
            200,
            &[],
        )
        .await?;
        Ok(match product {
            Some(p) if p.id != id || p.variants.is_empty() => Verdict::Malformed,
            _ => verdict,
        })
    }

    async fn search(&self, s: &mut Shopper, cx: &mut Cx) -> anyhow::Result<Verdict> {
        let q = format!(
            "{}+{}",
            pick(&mut cx.rng, &self.catalog.words),
            pick(&mut cx.rng, &self.catalog.words)
        );
        let path = format!("/v1/search?q={q}&limit=20");
        let (_, verdict) =
            call::<AnyObject>(&mut s.http.conn, &mut cx.rec, "search", Req::get(&path), 200, &[])
                .await?;
        Ok(verdict)
    }

    /// The shopper's cart id, opening one if it has none (or abandoning a full one).
    async fn ensure_cart(&self, s: &mut Shopper, cx: &mut Cx) -> anyhow::Result<Verdict> {
        if matches!(&s.cart, Some((_, lines)) if *lines < CART_LINES_MAX) {
            return Ok(Verdict::Ok);
        }
        let req = Req::post("/v1/carts", "{}");
        let (cart, verdict) =
            call::<Cart>(&mut s.http.conn, &mut cx.rec, "open cart", req, 201, &[]).await?;
        s.cart = cart.map(|c| (c.id, 0));
        Ok(verdict)
    }

    async fn add_to_cart(&self, s: &mut Shopper, cx: &mut Cx) -> anyhow::Result<Verdict> {
        let opened = self.ensure_cart(s, cx).await?;
        let Some((cart_id, _)) = &s.cart else { return Ok(opened) };
        let path = format!("/v1/carts/{cart_id}/items");
        let sku = pick(&mut cx.rng, &self.catalog.skus);
        let body = format!(r#"{{"sku":"{sku}","quantity":1}}"#);
        let (cart, verdict) = call::<Cart>(
            &mut s.http.conn,
            &mut cx.rec,
            "add to cart",
            Req::post(&path, body),
            200,
            &[],
        )
        .await?;
        if let (Some(cart), Some((_, lines))) = (cart, s.cart.as_mut()) {
            *lines = cart.items.len();
        }
        Ok(worse(opened, verdict))
    }

    async fn cart_view(&self, s: &mut Shopper, cx: &mut Cx) -> anyhow::Result<Verdict> {
        let opened = self.ensure_cart(s, cx).await?;
        let Some((cart_id, lines)) = &s.cart else { return Ok(opened) };
        let path = format!("/v1/carts/{cart_id}");
        let lines = *lines;
        let (cart, verdict) =
            call::<Cart>(&mut s.http.conn, &mut cx.rec, "cart view", Req::get(&path), 200, &[])
                .await?;
        let verdict = match cart {
            Some(c) if c.items.len() != lines || c.total.amount < 0 => Verdict::Malformed,
            _ => verdict,
        };
        Ok(worse(opened, verdict))
    }

    async fn checkout(&self, s: &mut Shopper, cx: &mut Cx) -> anyhow::Result<Verdict> {
        let mut verdict = Verdict::Ok;
        if !matches!(&s.cart, Some((_, lines)) if *lines > 0) {
            verdict = self.add_to_cart(s, cx).await?;
        }
        let Some((cart_id, _)) = s.cart.take() else { return Ok(verdict) };
        let path = format!("/v1/carts/{cart_id}/checkout");
        let headers = [idempotency(&format!("sf-{cart_id}"))];
        let req = Req::post(&path, r#"{"email":"shopper@example.com"}"#).with(&headers);
        let (order, checkout) =
            call::<Order>(&mut s.http.conn, &mut cx.rec, "checkout", req, 201, &["out_of_stock"])
                .await?;
        verdict = worse(verdict, checkout);
        let Some(order) = order else { return Ok(verdict) };
        if self.unpaid_share > 0.0 && cx.rng.random_bool(self.unpaid_share.min(1.0)) {
            if let Some(sales) = &self.sales {
                sales.unpaid(&order);
            }
            s.order = Some(order.id);
            return Ok(verdict);
        }
        let path = format!("/v1/orders/{}/payments", order.id);
        let headers = [idempotency(&format!("sf-pay-{}", order.id))];
        let req = Req::post(&path, r#"{"method":"test_card","token":"tok_visa"}"#).with(&headers);
        let answer = call::<Receipt>(&mut s.http.conn, &mut cx.rec, "payment", req, 201, &[]).await;
        let (receipt, paid) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                if let Some(sales) = &self.sales {
                    sales.unknown.fetch_add(1, Ordering::Relaxed);
                }
                return Err(error);
            }
        };
        let paid = match receipt {
            Some(r) if r.order.status != "paid" => Verdict::Malformed,
            Some(r) => {
                if let Some(sales) = &self.sales {
                    sales.paid(&r.order);
                }
                paid
            }
            None => paid,
        };
        s.order = Some(order.id);
        Ok(worse(verdict, paid))
    }

    async fn order_status(&self, s: &mut Shopper, cx: &mut Cx) -> anyhow::Result<Verdict> {
        let Some(id) = &s.order else { return Ok(Verdict::Ok) };
        let path = format!("/v1/orders/{id}");
        let (order, verdict) =
            call::<Order>(&mut s.http.conn, &mut cx.rec, "order status", Req::get(&path), 200, &[])
                .await?;
        Ok(match order {
            Some(o) if &o.id != id || o.total.currency.len() != 3 => Verdict::Malformed,
            _ => verdict,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_mix_sums_to_one_hundred_percent_and_is_drawn_in_proportion() {
        assert_eq!(MIX.iter().map(|(_, w)| w).sum::<u32>(), 10_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let draws = 200_000;
        let searches = (0..draws).filter(|_| draw(&mut rng) == Shop::Search).count();
        let share = searches as f64 / draws as f64;
        assert!((share - 0.37).abs() < 0.01, "search drawn {share}");
    }
}
