//! Checkout-heavy, after TPC-C's New-Order: orders of 5–15 distinct lines (1–5 units
//! each) drawn uniformly from `SKUS` SKUs, then payment. In the `hot` variant one line
//! of every order is always the same hot SKU, the case where a row lock held across a
//! commit's fsync serializes every buyer.
//!
//! The measured unit is the pair checkout + payment, two durable commits on each
//! system:
//! - Emporium: `POST /v1/carts/{id}/checkout` of a cart prepared (outside the window)
//!   with the order's lines, then `POST /v1/orders/{id}/payments`.
//! - PostgreSQL: one transaction of guarded stock updates in ascending SKU order
//!   (pipelined on the connection), the order row and its line rows; then the payment
//!   (the order turns paid, a payment row is added) in a second transaction.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rand::Rng;

use crate::loadgen::baseline;
use crate::loadgen::check::{Order, Receipt, Verdict};
use crate::loadgen::driver::{Cx, Step, Workload};
use crate::loadgen::http::idempotency;
use crate::loadgen::workloads::{call, worse, HttpClient, Req};

/// SKUs in the checkout-heavy catalog.
pub const SKUS: u32 = 100_000;
/// The hot SKU's index.
pub const HOT: u32 = 0;
/// Units on hand of each ordinary SKU: far more than a run can sell.
pub const STOCK_PER_SKU: u64 = 1_000_000;
/// Units on hand of the hot SKU.
pub const STOCK_HOT: u64 = 200_000_000;
/// Lines per order.
pub const LINES: std::ops::RangeInclusive<usize> = 5..=15;
/// Units per line.
pub const UNITS: std::ops::RangeInclusive<u32> = 1..=5;

/// An order's lines, `(sku index, units)`, distinct and in ascending SKU order.
pub fn order_lines(rng: &mut impl Rng, hot: bool) -> Vec<(u32, u32)> {
    let count = rng.random_range(LINES);
    let mut skus: Vec<u32> = Vec::with_capacity(count);
    if hot {
        skus.push(HOT);
    }
    while skus.len() < count {
        let sku = rng.random_range(if hot { 1 } else { 0 }..SKUS);
        if !skus.contains(&sku) {
            skus.push(sku);
        }
    }
    skus.sort_unstable();
    skus.into_iter().map(|sku| (sku, rng.random_range(UNITS))).collect()
}

/// The price of SKU `i` in cents (the same on both systems).
pub fn price(i: u32) -> i64 {
    1000 + i64::from(i % 9000)
}

/// The stock SKU `i` starts with.
pub fn initial_stock(i: u32) -> u64 {
    if i == HOT {
        STOCK_HOT
    } else {
        STOCK_PER_SKU
    }
}

/// What the buyers got, per SKU.
pub struct Ledger {
    /// Units paid for.
    pub paid: Vec<AtomicU64>,
    /// Units reserved by orders whose payment did not go through.
    pub unpaid: Vec<AtomicU64>,
    /// Orders whose outcome is unknown (no answer).
    pub unknown: AtomicU64,
}

impl Ledger {
    /// An empty ledger over [`SKUS`].
    pub fn new() -> Ledger {
        Ledger {
            paid: (0..SKUS).map(|_| AtomicU64::new(0)).collect(),
            unpaid: (0..SKUS).map(|_| AtomicU64::new(0)).collect(),
            unknown: AtomicU64::new(0),
        }
    }

    fn book(&self, lines: &[(u32, u32)], paid: bool) {
        let column = if paid { &self.paid } else { &self.unpaid };
        for &(sku, units) in lines {
            column[sku as usize].fetch_add(u64::from(units), Ordering::Relaxed);
        }
    }

    /// Units taken (paid or reserved) over every SKU.
    pub fn units(&self) -> u64 {
        let sum = |c: &Vec<AtomicU64>| c.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>();
        sum(&self.paid) + sum(&self.unpaid)
    }
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger::new()
    }
}

/// A cart prepared with an order's lines.
pub struct PreparedOrder {
    /// The cart id.
    pub cart_id: String,
    /// Its lines.
    pub lines: Vec<(u32, u32)>,
}

/// Checkout-heavy on Emporium.
pub struct EmporiumCheckout {
    /// The server.
    pub addr: SocketAddr,
    /// Each client's prepared carts.
    pub carts: Mutex<Vec<Vec<PreparedOrder>>>,
    /// What was sold (shared by every run on the same catalog).
    pub ledger: Arc<Ledger>,
    /// The checkout's body.
    pub checkout_body: Bytes,
}

impl EmporiumCheckout {
    /// Splits `carts` over `clients`.
    pub fn new(
        addr: SocketAddr,
        carts: Vec<PreparedOrder>,
        clients: usize,
        ledger: Arc<Ledger>,
    ) -> EmporiumCheckout {
        let mut shares: Vec<Vec<PreparedOrder>> = (0..clients).map(|_| Vec::new()).collect();
        for (i, cart) in carts.into_iter().enumerate() {
            shares[i % clients].push(cart);
        }
        let checkout_body = Bytes::from_static(br#"{"email":"buyer@example.com"}"#);
        EmporiumCheckout { addr, carts: Mutex::new(shares), ledger, checkout_body }
    }

    /// Checking out with a shipping method to a taxed address (the carts carry a
    /// discount code).
    pub fn shipped(mut self, method_id: &str) -> EmporiumCheckout {
        self.checkout_body = serde_json::json!({
            "email": "buyer@example.com",
            "shipping_method_id": method_id,
            "shipping_address": {"name": "Buyer", "line1": "1 Main St", "city": "Fresno",
                                 "region": "CA", "postal_code": "93650", "country": "US"},
        })
        .to_string()
        .into();
        self
    }
}

/// A client of [`EmporiumCheckout`].
pub struct EmporiumShopper {
    http: HttpClient,
    carts: Vec<PreparedOrder>,
}

impl Workload for EmporiumCheckout {
    type Client = EmporiumShopper;

    fn unit(&self) -> &'static str {
        "checkout+payment"
    }

    async fn connect(&self, index: usize) -> anyhow::Result<EmporiumShopper> {
        let carts = std::mem::take(&mut self.carts.lock().expect("not poisoned")[index]);
        Ok(EmporiumShopper { http: HttpClient::connect(self.addr).await?, carts })
    }

    async fn reconnect(&self, client: &mut EmporiumShopper) -> anyhow::Result<()> {
        client.http.reconnect().await
    }

    async fn step(&self, client: &mut EmporiumShopper, cx: &mut Cx) -> Step {
        let Some(cart) = client.carts.pop() else { return Step::Exhausted };
        match checkout_and_pay(&mut client.http, cx, &cart, &self.checkout_body).await {
            Ok((verdict, paid)) => {
                if let Some(paid) = paid {
                    self.ledger.book(&cart.lines, paid);
                }
                Step::Done(verdict)
            }
            Err(error) => {
                self.ledger.unknown.fetch_add(1, Ordering::Relaxed);
                Step::Broken(error)
            }
        }
    }
}

/// Checks out and pays; answers the verdict and, if the stock was reserved, whether it
/// was paid for.
async fn checkout_and_pay(
    http: &mut HttpClient,
    cx: &mut Cx,
    cart: &PreparedOrder,
    body: &Bytes,
) -> anyhow::Result<(Verdict, Option<bool>)> {
    let path = format!("/v1/carts/{}/checkout", cart.cart_id);
    let headers = [idempotency(&format!("ck-{}", cart.cart_id))];
    let req = Req::post(&path, body.clone()).with(&headers);
    let (order, verdict) =
        call::<Order>(&mut http.conn, &mut cx.rec, "checkout", req, 201, &["out_of_stock"]).await?;
    let Some(order) = order else { return Ok((verdict, None)) };
    if order.status != "pending_payment" || order.items.len() != cart.lines.len() {
        return Ok((Verdict::Malformed, None));
    }
    let path = format!("/v1/orders/{}/payments", order.id);
    let headers = [idempotency(&format!("pay-{}", order.id))];
    let req = Req::post(&path, r#"{"method":"test_card","token":"tok_visa"}"#).with(&headers);
    let (receipt, paid) =
        call::<Receipt>(&mut http.conn, &mut cx.rec, "payment", req, 201, &[]).await?;
    let paid = match receipt {
        Some(r) if r.order.status == "paid" && r.order.id == order.id && !r.id.is_empty() => paid,
        Some(_) => Verdict::Malformed,
        None => paid,
    };
    Ok((worse(verdict, paid), Some(paid == Verdict::Ok)))
}

/// Checkout-heavy on PostgreSQL.
pub struct PgCheckout {
    /// The connection string.
    pub url: String,
    /// Whether every order has a line of the hot SKU.
    pub hot: bool,
    /// What was sold (shared by every run on the same tables).
    pub ledger: Arc<Ledger>,
}

/// A client of [`PgCheckout`].
pub struct PgShopper {
    client: tokio_postgres::Client,
    reserve: tokio_postgres::Statement,
    insert_order: tokio_postgres::Statement,
    pay: tokio_postgres::Statement,
}

impl PgCheckout {
    async fn shopper(&self) -> anyhow::Result<PgShopper> {
        let client = baseline::pg_connect(&self.url).await?;
        let reserve = client.prepare(baseline::PG_RESERVE_LINE).await?;
        let insert_order = client.prepare(baseline::PG_INSERT_ORDER).await?;
        let pay = client.prepare(baseline::PG_PAY).await?;
        Ok(PgShopper { client, reserve, insert_order, pay })
    }
}

/// The checkout transaction; `Ok(None)` when a line was out of stock (rolled back).
async fn pg_checkout(
    shopper: &mut PgShopper,
    lines: &[(u32, u32)],
) -> Result<Option<i64>, tokio_postgres::Error> {
    let PgShopper { client, reserve, insert_order, .. } = shopper;
    let txn = client.transaction().await?;
    let params: Vec<(i64, i64)> =
        lines.iter().map(|&(sku, units)| (i64::from(sku), i64::from(units))).collect();
    type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
    let bound: Vec<[Param<'_>; 2]> =
        params.iter().map(|(sku, units)| [sku as Param<'_>, units]).collect();
    // Sent back to back on the one connection, executed in order: ascending SKUs.
    let updates = bound.iter().map(|p| txn.query_opt(&*reserve, p));
    let mut prices = Vec::with_capacity(lines.len());
    for row in futures_util::future::join_all(updates).await {
        match row? {
            Some(row) => prices.push(row.get::<_, i64>(0)),
            None => {
                txn.rollback().await?;
                return Ok(None);
            }
        }
    }
    let total: i64 = params.iter().zip(&prices).map(|((_, units), price)| units * price).sum();
    let skus: Vec<i64> = params.iter().map(|(sku, _)| *sku).collect();
    let units: Vec<i32> = lines.iter().map(|&(_, units)| units as i32).collect();
    let rows =
        txn.query(&*insert_order, &[&"buyer@example.com", &total, &skus, &units, &prices]).await?;
    let order_id: i64 = rows.first().map(|r| r.get(0)).unwrap_or_default();
    txn.commit().await?;
    Ok(Some(order_id))
}

impl Workload for PgCheckout {
    type Client = PgShopper;

    fn unit(&self) -> &'static str {
        "checkout+payment"
    }

    async fn connect(&self, _index: usize) -> anyhow::Result<PgShopper> {
        self.shopper().await
    }

    async fn reconnect(&self, client: &mut PgShopper) -> anyhow::Result<()> {
        *client = self.shopper().await?;
        Ok(())
    }

    async fn step(&self, client: &mut PgShopper, cx: &mut Cx) -> Step {
        let lines = order_lines(&mut cx.rng, self.hot);
        let started = std::time::Instant::now();
        let order_id = match pg_checkout(client, &lines).await {
            Ok(Some(id)) => id,
            Ok(None) => return Step::Done(Verdict::Refused),
            Err(error) => return self.failed(client, error),
        };
        cx.rec.transaction("checkout", Verdict::Ok, started, std::time::Instant::now());
        let started = std::time::Instant::now();
        match client.client.query_opt(&client.pay, &[&order_id]).await {
            Ok(Some(_)) => {
                cx.rec.transaction("payment", Verdict::Ok, started, std::time::Instant::now());
                self.ledger.book(&lines, true);
                Step::Done(Verdict::Ok)
            }
            Ok(None) => {
                self.ledger.book(&lines, false);
                Step::Done(Verdict::Unexpected)
            }
            Err(error) => {
                self.ledger.book(&lines, false);
                self.failed(client, error)
            }
        }
    }
}

impl PgCheckout {
    fn failed(&self, client: &PgShopper, error: tokio_postgres::Error) -> Step {
        if client.client.is_closed() {
            self.ledger.unknown.fetch_add(1, Ordering::Relaxed);
            return Step::Broken(error.into());
        }
        eprintln!("postgres: {error}");
        Step::Done(Verdict::ServerError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn orders_have_distinct_ascending_lines_within_limits() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for hot in [false, true] {
            for _ in 0..1000 {
                let lines = order_lines(&mut rng, hot);
                assert!(LINES.contains(&lines.len()));
                assert!(lines.windows(2).all(|w| w[0].0 < w[1].0));
                assert!(lines.iter().all(|(sku, units)| *sku < SKUS && UNITS.contains(units)));
                if hot {
                    assert_eq!(lines[0].0, HOT);
                    assert!(lines[1..].iter().all(|(sku, _)| *sku != HOT));
                }
            }
        }
    }
}
