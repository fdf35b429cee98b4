//! The flash sale: signed-in buyers purchase units of one hot SKU's sale, each under a
//! per-customer cap that the system itself enforces. The measured request is, on each
//! system, the durable act of taking the units under the same two rules (never more
//! than the sale has, never more than the buyer's cap):
//!
//! - Emporium: `POST /v1/flash-sales/{id}/purchases` `{quantity}` with the buyer's
//!   bearer token and an `Idempotency-Key`: 201 is a `pending_payment` order at the
//!   sale price with the units reserved, 409 `sold_out` or `purchase_limit_exceeded`
//!   refuses.
//! - PostgreSQL: `SELECT flash_purchase(sale, customer, quantity)`, one transaction in a
//!   PL/pgSQL function: guarded decrement of the sale's row, the customer's units
//!   checked and counted against the cap, an order row (`synchronous_commit=on`).
//! - Redis: a Lua script by `EVALSHA`: the customer's units checked against the cap
//!   and counted in a hash, the stock decremented if enough is left
//!   (`appendfsync always`).
//!
//! Three phases: the rate (every buyer asks for one unit at a time, the cap and the
//! allocation far away), the sold-out answer (every request after the last unit), and
//! a sell-out round where buyers ask more than their cap and more than there is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{HeaderName, HeaderValue, Method};

use crate::loadgen::baseline;
use crate::loadgen::check::{self, Order, Verdict};
use crate::loadgen::driver::{Cx, Step, Workload};
use crate::loadgen::http::idempotency;
use crate::loadgen::resp::{RespConn, Value};
use crate::loadgen::stats::Assertion;
use crate::loadgen::workloads::{classify, HttpClient};

/// One purchase to make: which buyer asks for how many units.
#[derive(Clone, Copy, Debug)]
pub struct Ask {
    /// The buyer's index (into the buyers' tokens, or their customer number).
    pub buyer: u32,
    /// Units asked for.
    pub quantity: u32,
}

/// What a system answered to one [`Ask`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The units are the buyer's.
    Sold,
    /// Too few units left.
    SoldOut,
    /// The buyer's cap would be exceeded.
    OverCap,
    /// No answer came (the outcome is unknown).
    Unknown,
}

/// The request's own record on Emporium (the unit is the driver's).
const PURCHASE_REQUEST: &str = "POST purchases (request)";

/// The name of the assertion that nothing was oversold (the report looks for it).
pub const NO_OVERSELL: &str = "no unit oversold";

/// Cap refusals kept for the end-of-run check, at most (the rest are only counted).
const CAP_REFUSALS_KEPT: usize = 100_000;

/// What the buyers got, counted as the answers come.
pub struct Tally {
    cap: u32,
    /// Units taken.
    pub sold: AtomicU64,
    /// Purchases that got their units.
    pub purchases: AtomicU64,
    /// Purchases refused for lack of stock.
    pub sold_out: AtomicU64,
    /// Purchases refused by the cap.
    pub over_cap: AtomicU64,
    /// The smallest quantity a `sold_out` refusal asked for (`u64::MAX`: none).
    smallest_sold_out: AtomicU64,
    /// Units asked for by requests that got no answer.
    pub unknown: AtomicU64,
    /// Units each buyer got.
    held: Vec<AtomicU32>,
    /// Units of each buyer's unanswered requests.
    held_unknown: Vec<AtomicU32>,
    cap_refusals: Mutex<Vec<Ask>>,
}

impl Tally {
    /// A fresh tally for `buyers` buyers under a cap of `cap` units each.
    pub fn new(buyers: usize, cap: u32) -> Tally {
        Tally {
            cap,
            sold: AtomicU64::new(0),
            purchases: AtomicU64::new(0),
            sold_out: AtomicU64::new(0),
            over_cap: AtomicU64::new(0),
            smallest_sold_out: AtomicU64::new(u64::MAX),
            unknown: AtomicU64::new(0),
            held: (0..buyers).map(|_| AtomicU32::new(0)).collect(),
            held_unknown: (0..buyers).map(|_| AtomicU32::new(0)).collect(),
            cap_refusals: Mutex::new(Vec::new()),
        }
    }

    /// Counts the answer to `ask`, and answers the verdict it gives the request.
    pub fn record(&self, ask: Ask, answer: Answer) -> Verdict {
        let buyer = ask.buyer as usize;
        match answer {
            Answer::Sold => {
                self.sold.fetch_add(u64::from(ask.quantity), Ordering::Relaxed);
                self.purchases.fetch_add(1, Ordering::Relaxed);
                self.held[buyer].fetch_add(ask.quantity, Ordering::Relaxed);
                Verdict::Ok
            }
            Answer::SoldOut => {
                self.sold_out.fetch_add(1, Ordering::Relaxed);
                self.smallest_sold_out.fetch_min(u64::from(ask.quantity), Ordering::Relaxed);
                Verdict::Refused
            }
            Answer::OverCap => {
                self.over_cap.fetch_add(1, Ordering::Relaxed);
                let mut kept = self.cap_refusals.lock().expect("not poisoned");
                if kept.len() < CAP_REFUSALS_KEPT {
                    kept.push(ask);
                }
                Verdict::Refused
            }
            Answer::Unknown => {
                self.unknown.fetch_add(u64::from(ask.quantity), Ordering::Relaxed);
                self.held_unknown[buyer].fetch_add(ask.quantity, Ordering::Relaxed);
                Verdict::Unexpected
            }
        }
    }

    /// The assertions every system must pass, given the `stock` the sale had and the
    /// units the system says are `left`: nothing oversold, the system's count equals
    /// the buyers', nobody above the cap, and each refusal had its reason.
    pub fn assertions(&self, stock: u64, left: u64) -> Vec<Assertion> {
        let sold = self.sold.load(Ordering::Relaxed);
        let unknown = self.unknown.load(Ordering::Relaxed);
        let server_sold = stock.saturating_sub(left);
        let mut out = vec![
            Assertion::new(
                NO_OVERSELL,
                sold <= stock && left <= stock,
                format!("stock {stock}, buyers got {sold}, the system has {left} left"),
            ),
            Assertion::new(
                "the system's count equals the buyers'",
                (sold..=sold + unknown).contains(&server_sold),
                format!("the system sold {server_sold}, buyers got {sold} (+{unknown} unanswered)"),
            ),
        ];
        let (top, top_buyer) = self
            .held
            .iter()
            .enumerate()
            .map(|(b, h)| (h.load(Ordering::Relaxed), b))
            .max()
            .unwrap_or((0, 0));
        out.push(Assertion::new(
            "nobody above the cap",
            top <= self.cap,
            format!("cap {}, the most any buyer got {top} (buyer {top_buyer})", self.cap),
        ));
        let smallest = self.smallest_sold_out.load(Ordering::Relaxed);
        if smallest != u64::MAX {
            out.push(Assertion::new(
                "sold_out only when too little was left",
                left < smallest,
                format!(
                    "{} refused, the smallest asked {smallest}, {left} left at the end",
                    self.sold_out.load(Ordering::Relaxed)
                ),
            ));
        }
        let refusals = self.cap_refusals.lock().expect("not poisoned");
        if !refusals.is_empty() {
            // Units held only grow during a round (no reservation expires in it), so a
            // buyer refused by the cap must hold, by the end, more than `cap - asked`.
            let wrong: Vec<String> = refusals
                .iter()
                .filter(|ask| {
                    let b = ask.buyer as usize;
                    let held = self.held[b].load(Ordering::Relaxed)
                        + self.held_unknown[b].load(Ordering::Relaxed);
                    held + ask.quantity <= self.cap
                })
                .take(3)
                .map(|ask| format!("buyer {} asked {}", ask.buyer, ask.quantity))
                .collect();
            out.push(Assertion::new(
                "cap refusals only above the cap",
                wrong.is_empty(),
                if wrong.is_empty() {
                    format!(
                        "{} refused by the cap, each holding more than {} minus what they asked",
                        self.over_cap.load(Ordering::Relaxed),
                        self.cap
                    )
                } else {
                    format!("refused below the cap: {}", wrong.join("; "))
                },
            ));
        }
        out
    }
}

/// Who asks for how much.
pub enum Demand {
    /// Client `c` is buyer `c % buyers` and asks for one unit at a time without end
    /// (the rate and the sold-out measurements).
    Unlimited {
        /// Buyers to spread the clients over.
        buyers: u32,
    },
    /// Each client's asks, in order (the sell-out round).
    Listed(Mutex<Vec<Vec<Ask>>>),
}

impl Demand {
    /// Splits `asks` over `clients` (client `c` gets asks `c, c + clients, …`, so one
    /// buyer's consecutive asks go out at once on different connections).
    pub fn listed(asks: &[Ask], clients: usize) -> Demand {
        let mut shares: Vec<Vec<Ask>> = (0..clients).map(|_| Vec::new()).collect();
        for (i, ask) in asks.iter().enumerate() {
            shares[i % clients].push(*ask);
        }
        // Clients take from the back; reverse so asks go in list order.
        shares.iter_mut().for_each(|s| s.reverse());
        Demand::Listed(Mutex::new(shares))
    }

    fn take(&self, index: usize) -> Asks {
        match self {
            Demand::Unlimited { buyers } => Asks::Unlimited(index as u32 % (*buyers).max(1)),
            Demand::Listed(shares) => {
                Asks::Listed(std::mem::take(&mut shares.lock().expect("not poisoned")[index]))
            }
        }
    }
}

/// One client's asks.
pub enum Asks {
    /// This buyer, one unit at a time.
    Unlimited(u32),
    /// These, from the back.
    Listed(Vec<Ask>),
}

impl Asks {
    fn next(&mut self) -> Option<Ask> {
        match self {
            Asks::Unlimited(buyer) => Some(Ask { buyer: *buyer, quantity: 1 }),
            Asks::Listed(list) => list.pop(),
        }
    }
}

/// The flash sale on Emporium.
pub struct EmporiumFlash {
    /// The server.
    pub addr: SocketAddr,
    /// `/v1/flash-sales/{id}/purchases`.
    pub path: String,
    /// The sale's SKU.
    pub sku: String,
    /// The sale price, in cents.
    pub price: i64,
    /// Each buyer's `Authorization` header.
    pub buyers: Arc<Vec<(HeaderName, HeaderValue)>>,
    /// A prefix that keeps this run's idempotency keys apart from another's.
    pub keys: String,
    /// Who asks for what.
    pub demand: Demand,
    /// The buyers' count.
    pub tally: Tally,
    /// The measured unit's name.
    pub unit: &'static str,
}

/// A client of [`EmporiumFlash`].
pub struct EmporiumBuyer {
    http: HttpClient,
    asks: Asks,
    key: String,
    sent: u64,
}

impl Workload for EmporiumFlash {
    type Client = EmporiumBuyer;

    fn unit(&self) -> &'static str {
        self.unit
    }

    async fn connect(&self, index: usize) -> anyhow::Result<EmporiumBuyer> {
        Ok(EmporiumBuyer {
            http: HttpClient::connect(self.addr).await?,
            asks: self.demand.take(index),
            key: format!("{}-{index}-", self.keys),
            sent: 0,
        })
    }

    async fn reconnect(&self, client: &mut EmporiumBuyer) -> anyhow::Result<()> {
        client.http.reconnect().await
    }

    async fn step(&self, client: &mut EmporiumBuyer, cx: &mut Cx) -> Step {
        let Some(ask) = client.asks.next() else { return Step::Exhausted };
        client.sent += 1;
        let key = idempotency(&format!("{}{}", client.key, client.sent));
        let headers = [self.buyers[ask.buyer as usize].clone(), key];
        let body = format!(r#"{{"quantity":{}}}"#, ask.quantity);
        let started = Instant::now();
        let sent = client.http.conn.send(Method::POST, &self.path, &headers, Some(body.into()));
        let reply = match sent.await {
            Ok(reply) => reply,
            Err(error) => {
                cx.rec.transport_error(PURCHASE_REQUEST);
                self.tally.record(ask, Answer::Unknown);
                return Step::Broken(error);
            }
        };
        let finished = Instant::now();
        let refusals = ["sold_out", "purchase_limit_exceeded"];
        let (order, verdict) = classify::<Order>(&reply, 201, &refusals);
        let verdict = match verdict {
            Verdict::Ok => {
                let order = order.expect("a success has a body");
                let right = order.status == "pending_payment"
                    && order.items.len() == 1
                    && order.items[0].sku == self.sku
                    && order.items[0].quantity == ask.quantity
                    && order.total.amount == self.price * i64::from(ask.quantity);
                if right {
                    self.tally.record(ask, Answer::Sold)
                } else {
                    // Units were taken, but not as asked: counted, and flagged.
                    self.tally.record(ask, Answer::Unknown);
                    Verdict::Malformed
                }
            }
            Verdict::Refused => match check::problem(&reply) {
                Some(p) if p.code == "sold_out" => self.tally.record(ask, Answer::SoldOut),
                _ => self.tally.record(ask, Answer::OverCap),
            },
            other => {
                self.tally.record(ask, Answer::Unknown);
                other
            }
        };
        cx.rec.answer(PURCHASE_REQUEST, reply.status, verdict, started, finished);
        Step::Done(verdict)
    }
}

/// The flash sale on PostgreSQL: [`baseline::PG_FLASH_PURCHASE`].
pub struct PgFlash {
    /// The connection string.
    pub url: String,
    /// The sale's row.
    pub sale: i64,
    /// Who asks for what.
    pub demand: Demand,
    /// The buyers' count.
    pub tally: Tally,
    /// The measured unit's name.
    pub unit: &'static str,
}

/// A client of [`PgFlash`].
pub struct PgBuyer {
    client: tokio_postgres::Client,
    purchase: tokio_postgres::Statement,
    asks: Asks,
}

async fn pg_buyer(url: &str, asks: Asks) -> anyhow::Result<PgBuyer> {
    let client = baseline::pg_connect(url).await?;
    let purchase = client.prepare(baseline::PG_FLASH_PURCHASE).await?;
    Ok(PgBuyer { client, purchase, asks })
}

impl Workload for PgFlash {
    type Client = PgBuyer;

    fn unit(&self) -> &'static str {
        self.unit
    }

    async fn connect(&self, index: usize) -> anyhow::Result<PgBuyer> {
        pg_buyer(&self.url, self.demand.take(index)).await
    }

    async fn reconnect(&self, client: &mut PgBuyer) -> anyhow::Result<()> {
        let asks = std::mem::replace(&mut client.asks, Asks::Listed(Vec::new()));
        *client = pg_buyer(&self.url, asks).await?;
        Ok(())
    }

    async fn step(&self, client: &mut PgBuyer, _cx: &mut Cx) -> Step {
        let Some(ask) = client.asks.next() else { return Step::Exhausted };
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&self.sale, &i64::from(ask.buyer), &(ask.quantity as i32)];
        let result = client.client.query_one(&client.purchase, &args).await;
        let verdict = match result {
            Ok(row) => self.tally.record(ask, answer_of(row.get::<_, i64>(0))),
            Err(error) if client.client.is_closed() => {
                self.tally.record(ask, Answer::Unknown);
                return Step::Broken(error.into());
            }
            Err(error) => {
                eprintln!("postgres: {error}");
                self.tally.record(ask, Answer::Unknown);
                Verdict::ServerError
            }
        };
        Step::Done(verdict)
    }
}

/// The answer a baseline's script or function gives: units left, `-1` sold out, `-2`
/// over the cap.
fn answer_of(code: i64) -> Answer {
    match code {
        left if left >= 0 => Answer::Sold,
        -1 => Answer::SoldOut,
        _ => Answer::OverCap,
    }
}

/// The flash sale on Redis: [`baseline::REDIS_PURCHASE_LUA`].
pub struct RedisFlash {
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
    /// The sale's stock key.
    pub stock_key: String,
    /// The hash of units per buyer.
    pub buyers_key: String,
    /// The per-customer cap.
    pub cap: u32,
    /// The script's SHA-1 (loaded before the run).
    pub sha: String,
    /// Who asks for what.
    pub demand: Demand,
    /// The buyers' count.
    pub tally: Tally,
    /// The measured unit's name.
    pub unit: &'static str,
}

/// A client of [`RedisFlash`].
pub struct RedisBuyer {
    conn: RespConn,
    asks: Asks,
}

impl Workload for RedisFlash {
    type Client = RedisBuyer;

    fn unit(&self) -> &'static str {
        self.unit
    }

    async fn connect(&self, index: usize) -> anyhow::Result<RedisBuyer> {
        let conn = RespConn::connect(&self.url).await?;
        Ok(RedisBuyer { conn, asks: self.demand.take(index) })
    }

    async fn reconnect(&self, client: &mut RedisBuyer) -> anyhow::Result<()> {
        client.conn = RespConn::connect(&self.url).await?;
        Ok(())
    }

    async fn step(&self, client: &mut RedisBuyer, _cx: &mut Cx) -> Step {
        let Some(ask) = client.asks.next() else { return Step::Exhausted };
        let (buyer, quantity, cap) =
            (ask.buyer.to_string(), ask.quantity.to_string(), self.cap.to_string());
        let args: [&[u8]; 8] = [
            b"EVALSHA",
            self.sha.as_bytes(),
            b"2",
            self.stock_key.as_bytes(),
            self.buyers_key.as_bytes(),
            buyer.as_bytes(),
            quantity.as_bytes(),
            cap.as_bytes(),
        ];
        let verdict = match client.conn.command(&args).await {
            Ok(Ok(Value::Int(code))) => self.tally.record(ask, answer_of(code)),
            Ok(other) => {
                eprintln!("redis: unexpected reply {other:?}");
                self.tally.record(ask, Answer::Unknown);
                Verdict::ServerError
            }
            Err(error) => {
                self.tally.record(ask, Answer::Unknown);
                return Step::Broken(error);
            }
        };
        Step::Done(verdict)
    }
}
