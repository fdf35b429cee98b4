//! The flash sale: many buyers, one hot SKU with `M` units, each buyer asking for at
//! most the per-buyer limit. The measured request is, on each system, the durable act
//! of taking the units:
//!
//! - Emporium: `POST /v1/carts/{id}/checkout` (with an `Idempotency-Key`) of a one-line
//!   guest cart of the hot SKU, prepared before the clock starts; 201 reserves the
//!   units, 409 `out_of_stock` refuses them.
//! - PostgreSQL: `UPDATE … SET qty = qty - n WHERE sku = $1 AND qty >= n` on one row,
//!   in its own transaction (`synchronous_commit=on`).
//! - Redis: a Lua script that decrements if enough is left, by `EVALSHA`, with
//!   `appendfsync always`.
//!
//! Every buyer's quantity is within the per-buyer limit, and each buyer asks once: the
//! server has no flash-sale caps yet (`/v1/flash-sales` is a later part of the
//! contract), so the limit is the workload's, and the checks verify that what was sold
//! never exceeds the stock and that the server's count agrees with the buyers'.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::loadgen::baseline;
use crate::loadgen::check::{Order, Verdict};
use crate::loadgen::driver::{Cx, Step, Workload};
use crate::loadgen::http::idempotency;
use crate::loadgen::stats::Assertion;
use crate::loadgen::workloads::{call, HttpClient, Req};

/// What the buyers got, counted as the answers come.
#[derive(Default)]
pub struct Tally {
    /// Units taken.
    pub sold: AtomicU64,
    /// Buyers who got their units.
    pub buyers_served: AtomicU64,
    /// Buyers refused for lack of stock.
    pub buyers_refused: AtomicU64,
    /// The smallest quantity a refused buyer asked for (`u64::MAX`: none refused).
    pub smallest_refused: AtomicU64,
    /// Units asked for by requests that got no answer (their outcome is unknown).
    pub unknown: AtomicU64,
}

impl Tally {
    /// A fresh tally.
    pub fn new() -> Tally {
        Tally { smallest_refused: AtomicU64::new(u64::MAX), ..Tally::default() }
    }

    fn served(&self, quantity: u32) {
        self.sold.fetch_add(u64::from(quantity), Ordering::Relaxed);
        self.buyers_served.fetch_add(1, Ordering::Relaxed);
    }

    fn unknown(&self, quantity: u32) {
        self.unknown.fetch_add(u64::from(quantity), Ordering::Relaxed);
    }

    fn refused(&self, quantity: u32) {
        self.buyers_refused.fetch_add(1, Ordering::Relaxed);
        self.smallest_refused.fetch_min(u64::from(quantity), Ordering::Relaxed);
    }

    /// The assertions every system must pass, given the units `stock` there were and
    /// the units the server says are `left`: the server's count equals the buyers',
    /// nothing was oversold, and a refusal only happened when too little was left.
    pub fn assertions(&self, stock: u64, left: u64) -> Vec<Assertion> {
        let sold = self.sold.load(Ordering::Relaxed);
        let smallest_refused = self.smallest_refused.load(Ordering::Relaxed);
        let unknown = self.unknown.load(Ordering::Relaxed);
        let server_sold = stock.saturating_sub(left);
        let mut out = vec![
            Assertion::new(
                "no unit oversold",
                sold <= stock && left <= stock,
                format!("stock {stock}, buyers got {sold}, server has {left} left"),
            ),
            Assertion::new(
                "server's count equals the buyers'",
                (sold..=sold + unknown).contains(&server_sold),
                format!("server sold {server_sold}, buyers got {sold} (+{unknown} unanswered)"),
            ),
        ];
        if smallest_refused != u64::MAX {
            out.push(Assertion::new(
                "refusals only when too little was left",
                left < smallest_refused,
                format!(
                    "{} buyers refused, the smallest asked {smallest_refused}, {left} left at the end",
                    self.buyers_refused.load(Ordering::Relaxed)
                ),
            ));
        }
        out
    }
}

/// Who asks for how much: either every client buys one unit at a time for as long as
/// the run lasts, or each client serves its share of a list of buyers.
pub enum Demand {
    /// One unit per request, without end (the rate measurement).
    Unlimited,
    /// Each client's buyers' quantities (the sell-out round).
    Listed(Mutex<Vec<Vec<u32>>>),
}

impl Demand {
    /// Splits `quantities` over `clients` (client `c` gets buyers `c, c + clients, …`).
    pub fn listed(quantities: &[u32], clients: usize) -> Demand {
        let mut shares: Vec<Vec<u32>> = (0..clients).map(|_| Vec::new()).collect();
        for (i, q) in quantities.iter().enumerate() {
            shares[i % clients].push(*q);
        }
        // Clients take from the back; reverse so buyers go in list order.
        shares.iter_mut().for_each(|s| s.reverse());
        Demand::Listed(Mutex::new(shares))
    }

    fn take(&self, index: usize) -> Option<Vec<u32>> {
        match self {
            Demand::Unlimited => None,
            Demand::Listed(shares) => {
                Some(std::mem::take(&mut shares.lock().expect("not poisoned")[index]))
            }
        }
    }
}

/// The next buyer's quantity: 1 without end, or the next of the client's list.
fn next_quantity(list: &mut Option<Vec<u32>>) -> Option<u32> {
    match list {
        None => Some(1),
        Some(list) => list.pop(),
    }
}

/// A prepared guest cart of the hot SKU.
pub struct PreparedCart {
    /// The cart id.
    pub id: String,
    /// Units on its one line.
    pub quantity: u32,
}

/// The flash sale on Emporium.
pub struct EmporiumFlash {
    /// The server.
    pub addr: SocketAddr,
    /// Each client's carts.
    pub carts: Mutex<Vec<Vec<PreparedCart>>>,
    /// The buyers' count.
    pub tally: Tally,
}

/// A client of [`EmporiumFlash`].
pub struct EmporiumBuyer {
    http: HttpClient,
    carts: Vec<PreparedCart>,
}

impl EmporiumFlash {
    /// Splits `carts` over `clients`.
    pub fn new(addr: SocketAddr, carts: Vec<PreparedCart>, clients: usize) -> EmporiumFlash {
        let mut shares: Vec<Vec<PreparedCart>> = (0..clients).map(|_| Vec::new()).collect();
        for (i, cart) in carts.into_iter().enumerate() {
            shares[i % clients].push(cart);
        }
        EmporiumFlash { addr, carts: Mutex::new(shares), tally: Tally::new() }
    }
}

impl Workload for EmporiumFlash {
    type Client = EmporiumBuyer;

    fn unit(&self) -> &'static str {
        "checkout"
    }

    async fn connect(&self, index: usize) -> anyhow::Result<EmporiumBuyer> {
        let carts = std::mem::take(&mut self.carts.lock().expect("not poisoned")[index]);
        Ok(EmporiumBuyer { http: HttpClient::connect(self.addr).await?, carts })
    }

    async fn reconnect(&self, client: &mut EmporiumBuyer) -> anyhow::Result<()> {
        client.http.reconnect().await
    }

    async fn step(&self, client: &mut EmporiumBuyer, cx: &mut Cx) -> Step {
        let Some(cart) = client.carts.pop() else { return Step::Exhausted };
        let path = format!("/v1/carts/{}/checkout", cart.id);
        let headers = [idempotency(&format!("flash-{}", cart.id))];
        let req = Req::post(&path, r#"{"email":"buyer@example.com"}"#).with(&headers);
        let op = "checkout (request)";
        match call::<Order>(&mut client.http.conn, &mut cx.rec, op, req, 201, &["out_of_stock"])
            .await
        {
            Ok((order, Verdict::Ok)) => {
                let order = order.expect("a success has a body");
                let right = order.status == "pending_payment"
                    && order.items.len() == 1
                    && order.items[0].quantity == cart.quantity;
                if !right {
                    return Step::Done(Verdict::Malformed);
                }
                self.tally.served(cart.quantity);
                Step::Done(Verdict::Ok)
            }
            Ok((_, Verdict::Refused)) => {
                self.tally.refused(cart.quantity);
                Step::Done(Verdict::Refused)
            }
            Ok((_, verdict)) => Step::Done(verdict),
            Err(error) => {
                self.tally.unknown(cart.quantity);
                Step::Broken(error)
            }
        }
    }
}

/// The flash sale on PostgreSQL: the guarded hot-row update.
pub struct PgFlash {
    /// The connection string.
    pub url: String,
    /// The hot row's key.
    pub sku: i64,
    /// Who buys.
    pub demand: Demand,
    /// The buyers' count.
    pub tally: Tally,
}

/// A client of [`PgFlash`].
pub struct PgBuyer {
    client: tokio_postgres::Client,
    decrement: tokio_postgres::Statement,
    buyers: Option<Vec<u32>>,
}

async fn pg_buyer(url: &str, buyers: Option<Vec<u32>>) -> anyhow::Result<PgBuyer> {
    let client = baseline::pg_connect(url).await?;
    let decrement = client.prepare(baseline::PG_FLASH_DECREMENT).await?;
    Ok(PgBuyer { client, decrement, buyers })
}

impl Workload for PgFlash {
    type Client = PgBuyer;

    fn unit(&self) -> &'static str {
        "hot-row UPDATE"
    }

    async fn connect(&self, index: usize) -> anyhow::Result<PgBuyer> {
        pg_buyer(&self.url, self.demand.take(index)).await
    }

    async fn reconnect(&self, client: &mut PgBuyer) -> anyhow::Result<()> {
        let buyers = client.buyers.take();
        *client = pg_buyer(&self.url, buyers).await?;
        Ok(())
    }

    async fn step(&self, client: &mut PgBuyer, _cx: &mut Cx) -> Step {
        let Some(quantity) = next_quantity(&mut client.buyers) else { return Step::Exhausted };
        let result =
            client.client.query_opt(&client.decrement, &[&self.sku, &i64::from(quantity)]).await;
        match result {
            Ok(Some(_)) => {
                self.tally.served(quantity);
                Step::Done(Verdict::Ok)
            }
            Ok(None) => {
                self.tally.refused(quantity);
                Step::Done(Verdict::Refused)
            }
            Err(error) if client.client.is_closed() => {
                self.tally.unknown(quantity);
                Step::Broken(error.into())
            }
            Err(error) => {
                eprintln!("postgres: {error}");
                Step::Done(Verdict::ServerError)
            }
        }
    }
}

/// The flash sale on Redis: the Lua decrement.
pub struct RedisFlash {
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
    /// The hot key.
    pub key: String,
    /// The script's SHA-1 (loaded before the run).
    pub sha: String,
    /// Who buys.
    pub demand: Demand,
    /// The buyers' count.
    pub tally: Tally,
}

/// A client of [`RedisFlash`].
pub struct RedisBuyer {
    conn: redis::aio::MultiplexedConnection,
    buyers: Option<Vec<u32>>,
}

impl Workload for RedisFlash {
    type Client = RedisBuyer;

    fn unit(&self) -> &'static str {
        "Lua decrement"
    }

    async fn connect(&self, index: usize) -> anyhow::Result<RedisBuyer> {
        let conn = baseline::redis_connect(&self.url).await?;
        Ok(RedisBuyer { conn, buyers: self.demand.take(index) })
    }

    async fn reconnect(&self, client: &mut RedisBuyer) -> anyhow::Result<()> {
        client.conn = baseline::redis_connect(&self.url).await?;
        Ok(())
    }

    async fn step(&self, client: &mut RedisBuyer, _cx: &mut Cx) -> Step {
        let Some(quantity) = next_quantity(&mut client.buyers) else { return Step::Exhausted };
        let result: redis::RedisResult<i64> = redis::cmd("EVALSHA")
            .arg(&self.sha)
            .arg(1)
            .arg(&self.key)
            .arg(quantity)
            .query_async(&mut client.conn)
            .await;
        match result {
            Ok(left) if left >= 0 => {
                self.tally.served(quantity);
                Step::Done(Verdict::Ok)
            }
            Ok(_) => {
                self.tally.refused(quantity);
                Step::Done(Verdict::Refused)
            }
            Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                self.tally.unknown(quantity);
                Step::Broken(error.into())
            }
            Err(error) => {
                eprintln!("redis: {error}");
                Step::Done(Verdict::ServerError)
            }
        }
    }
}
