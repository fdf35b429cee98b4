//! The live feed of flash sales behind `GET /v1/flash-sales/{id}/stream`: one ticker
//! reads every open sale every [`TICK`] and publishes a snapshot on a watch channel;
//! each watcher's stream only looks its sale up in the latest snapshot. A watch
//! channel keeps the latest value alone, so nothing queues for a watcher that reads
//! slowly; one that falls more than [`SLOW_TICKS`] snapshots behind is dropped.
//!
//! A watcher gets the sale as `GET /v1/flash-sales/{id}` answers it at once (event
//! `sale`), then a `remaining` event whenever its counts change (at most one per tick)
//! and at least every [`HEARTBEAT`] while the sale is open, and a final `status` event
//! when it ends or is cancelled.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use emporium_engine::{Engine, FlashSale, FlashSaleId, FlashSaleStatus};
use futures_util::{stream, StreamExt};
use hyper::body::Frame;
use tokio::sync::watch;

use crate::app::now_ms;
use crate::wire::FlashSaleView;

/// How often the ticker reads the open sales: the most a watcher is sent.
pub const TICK: Duration = Duration::from_millis(100);
/// The longest a watcher of an open sale goes without an event.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Snapshots a watcher may fall behind before it is dropped (two seconds).
pub const SLOW_TICKS: u64 = 20;

/// What a watcher is told about a sale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    status: FlashSaleStatus,
    remaining: u32,
    reserved: u32,
    sold: u32,
}

impl Counts {
    fn of(sale: &FlashSale, now: i64) -> Counts {
        Counts {
            status: sale.status(now),
            remaining: sale.remaining,
            reserved: sale.reserved,
            sold: sale.sold,
        }
    }

    fn open(&self) -> bool {
        !matches!(self.status, FlashSaleStatus::Ended | FlashSaleStatus::Cancelled)
    }

    fn event(&self, name: &str) -> Bytes {
        Bytes::from(format!(
            "event: {name}\ndata: {{\"status\":\"{}\",\"remaining\":{},\"reserved\":{},\"sold\":{}}}\n\n",
            self.status.as_str(),
            self.remaining,
            self.reserved,
            self.sold
        ))
    }
}

/// The open sales at one tick.
#[derive(Default)]
pub struct Snapshot {
    tick: u64,
    sales: HashMap<FlashSaleId, Counts>,
}

/// The feed: the latest snapshot, and the ticker that makes them.
pub struct SaleFeed {
    latest: watch::Receiver<Arc<Snapshot>>,
}

impl SaleFeed {
    /// Starts the ticker (on the current runtime); it stops when the feed is dropped.
    pub fn start(engine: Engine) -> SaleFeed {
        let (publish, latest) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut tick = 0;
            while !publish.is_closed() {
                ticks.tick().await;
                tick += 1;
                // Only the feed's own receiver: nobody watches, nothing to read.
                if publish.receiver_count() <= 1 {
                    continue;
                }
                let now = now_ms();
                let sales = engine
                    .state()
                    .open_flash_sales()
                    .iter()
                    .map(|sale| (sale.id, Counts::of(sale, now)))
                    .collect();
                publish.send_replace(Arc::new(Snapshot { tick, sales }));
            }
        });
        SaleFeed { latest }
    }

    /// The event stream of `sale` for one watcher.
    pub fn watch(
        &self,
        engine: Engine,
        sale: &FlashSale,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
        let now = now_ms();
        let first = serde_json::to_string(&FlashSaleView::new(sale, now)).expect("views serialize");
        let mut latest = self.latest.clone();
        latest.mark_unchanged();
        let watcher = Watcher {
            latest,
            engine,
            id: sale.id,
            sent: Counts::of(sale, now),
            sent_at: Instant::now(),
            seen_tick: None,
            done: !Counts::of(sale, now).open(),
        };
        let opening = Bytes::from(format!("event: sale\ndata: {first}\n\n"));
        stream::once(async move { Ok(Frame::data(opening)) }).chain(stream::unfold(
            watcher,
            |mut watcher| async move {
                let event = watcher.next().await?;
                Some((Ok(Frame::data(event)), watcher))
            },
        ))
    }
}

struct Watcher {
    latest: watch::Receiver<Arc<Snapshot>>,
    engine: Engine,
    id: FlashSaleId,
    sent: Counts,
    sent_at: Instant,
    seen_tick: Option<u64>,
    done: bool,
}

impl Watcher {
    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            self.latest.changed().await.ok()?;
            let snapshot = self.latest.borrow_and_update().clone();
            if let Some(seen) = self.seen_tick.replace(snapshot.tick) {
                if snapshot.tick.saturating_sub(seen) > SLOW_TICKS {
                    return None; // too slow a reader: dropped
                }
            }
            let counts = match snapshot.sales.get(&self.id) {
                Some(counts) => *counts,
                // No longer open: its final state, read once.
                None => {
                    let sale = self.engine.state().flash_sale(&self.id)?;
                    Counts::of(&sale, now_ms())
                }
            };
            if !counts.open() {
                self.done = true;
                return Some(counts.event("status"));
            }
            if counts != self.sent || self.sent_at.elapsed() >= HEARTBEAT {
                self.sent = counts;
                self.sent_at = Instant::now();
                return Some(counts.event("remaining"));
            }
        }
    }
}
