//! The event feed (`GET /v1/events`): the durable log, read from a cursor, as public
//! event records. It is the integration point a message queue would otherwise be: in log
//! order, from any position the log still holds, filtered by type, with a long poll.
//!
//! Only facts a subscriber of the shop may see are published: catalog, stock, orders,
//! payments and flash sales. Carts, accounts, sessions and idempotency records are not;
//! neither are emails or addresses. A log entry's events are never split across pages,
//! and the cursor is the LSN of the last entry read (filtered out or not), so a reader
//! always moves forward.

use std::time::Duration;

use emporium_engine::*;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::rfc3339;

/// Entries read from the log per page at most.
const ENTRIES_PER_PAGE_MAX: usize = 4096;
/// Named feed consumers at most (each holds the log it has not read, up to the
/// engine's cap).
const CONSUMERS_MAX: usize = 16;
/// A feed consumer `NAME` is the engine's log consumer `events.NAME`.
const CONSUMER_PREFIX: &str = "events.";

/// Longest long poll.
const WAIT_MS_MAX: u64 = 30_000;
/// Events per page, by default and at most.
const LIMIT_DEFAULT: usize = 100;
const LIMIT_MAX: usize = 1000;

/// Every type the feed publishes.
pub const EVENT_TYPES: [&str; 29] = [
    "product.created",
    "product.updated",
    "category.created",
    "category.updated",
    "category.deleted",
    "stock.set",
    "stock.adjusted",
    "stock.transferred",
    "location.saved",
    "location.deleted",
    "order.placed",
    "order.cancelled",
    "order.expired",
    "order.fulfilled",
    "order.paid",
    "order.refunded",
    "order.discounted",
    "order.charged",
    "return.requested",
    "return.approved",
    "return.rejected",
    "return.received",
    "flash_sale.created",
    "flash_sale.started",
    "flash_sale.ended",
    "flash_sale.cancelled",
    "review.published",
    "review.held",
    "review.rejected",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    consumer: Option<String>,
    after: Option<String>,
    types: Option<String>,
    limit: Option<String>,
    wait_ms: Option<String>,
}

fn stock_set(sku: &Sku, location: LocationId, on_hand: u32, reason: &str) -> (&'static str, Value) {
    let data = json!({"sku": sku.as_str(), "location_id": location.text().as_str(),
                      "on_hand": on_hand, "reason": reason});
    ("stock.set", data)
}

fn stock_adjusted(
    sku: &Sku,
    location: LocationId,
    delta: i32,
    reason: &str,
) -> (&'static str, Value) {
    let data = json!({"sku": sku.as_str(), "location_id": location.text().as_str(),
                      "delta": delta, "reason": reason});
    ("stock.adjusted", data)
}

fn review(kind: &'static str, id: &ReviewId, product: &ProductId) -> (&'static str, Value) {
    (kind, json!({"review_id": id.text().as_str(), "product_id": product.text().as_str()}))
}

fn money(money: Money) -> Value {
    json!({"amount": money.amount(), "currency": money.currency().as_str()})
}

/// The data of `order.refunded`.
fn refunded(refund: &Refund) -> Value {
    json!({"order_id": refund.order_id.text().as_str(), "refund_id": refund.id.text().as_str(),
           "amount": money(refund.amount), "reason": refund.reason})
}

/// The public records of one of a log entry's events, as `(type, data)`.
fn public(event: &Event, out: &mut Vec<(&'static str, Value)>) {
    let product = |kind, p: &Product| {
        let data = json!({"product_id": p.id.text().as_str(), "handle": p.handle,
                          "title": p.title, "status": p.status.as_str()});
        (kind, data)
    };
    let category =
        |kind, c: &Category| (kind, json!({"category_id": c.id.text().as_str(), "name": c.name}));
    let order = |kind, id: &OrderId| (kind, json!({"order_id": id.text().as_str()}));
    let sale = |kind, id: &FlashSaleId| (kind, json!({"sale_id": id.text().as_str()}));
    match event {
        Event::Catalog(e) => out.push(match e {
            CatalogEvent::ProductCreated(p) => product("product.created", p),
            CatalogEvent::ProductUpdated(p) => product("product.updated", p),
            CatalogEvent::CategoryCreated(c) => category("category.created", c),
            CatalogEvent::CategoryUpdated(c) => category("category.updated", c),
            CatalogEvent::CategoryDeleted(id) => {
                ("category.deleted", json!({"category_id": id.text().as_str()}))
            }
        }),
        Event::Inventory(e) => out.push(match e {
            InventoryEvent::StockSet { sku, on_hand, reason } => {
                stock_set(sku, LocationId::DEFAULT, *on_hand, reason)
            }
            InventoryEvent::LocationStockSet(c) => {
                stock_set(&c.sku, c.location_id, c.on_hand, &c.reason)
            }
            InventoryEvent::StockAdjusted { sku, delta, reason } => {
                stock_adjusted(sku, LocationId::DEFAULT, *delta, reason)
            }
            InventoryEvent::LocationStockAdjusted(a) => {
                stock_adjusted(&a.sku, a.location_id, a.delta, &a.reason)
            }
            InventoryEvent::Transferred(t) => (
                "stock.transferred",
                json!({"sku": t.sku.as_str(), "from_location_id": t.from.text().as_str(),
                       "to_location_id": t.to.text().as_str(), "quantity": t.quantity,
                       "reason": t.reason}),
            ),
            InventoryEvent::LocationSaved(l) => (
                "location.saved",
                json!({"location_id": l.id.text().as_str(), "name": l.name,
                       "kind": l.kind.as_str(), "priority": l.priority}),
            ),
            InventoryEvent::LocationDeleted { location_id } => {
                ("location.deleted", json!({"location_id": location_id.text().as_str()}))
            }
        }),
        Event::Orders(e) => out.push(match e {
            OrderEvent::Placed(placed) => {
                let lines: Vec<Value> = placed
                    .lines
                    .iter()
                    .map(|l| json!({"sku": l.sku.as_str(), "quantity": l.quantity,
                                    "unit_price": money(l.unit_price)}))
                    .collect();
                let data = json!({"order_id": placed.id.text().as_str(),
                                  "cart_id": placed.cart_id.to_string(), "lines": lines,
                                  "reservation_expires_at": rfc3339(placed.reservation_expires_at)});
                ("order.placed", data)
            }
            OrderEvent::Cancelled { order_id } => order("order.cancelled", order_id),
            OrderEvent::Expired { order_id } => order("order.expired", order_id),
            OrderEvent::Fulfilled { order_id } => order("order.fulfilled", order_id),
        }),
        Event::Payments(PaymentEvent::PaymentCaptured { order_id, payment, .. }) => {
            let data = json!({"order_id": order_id.text().as_str(),
                              "payment_id": payment.id.text().as_str(),
                              "amount": money(payment.amount)});
            out.push(("order.paid", data));
        }
        // A payment or refund through a provider, once the provider made it.
        Event::Payments(PaymentEvent::CallAdvanced(step)) => {
            if let Some(payment) = &step.payment {
                let data = json!({"order_id": step.order_id.text().as_str(),
                                  "payment_id": payment.id.text().as_str(),
                                  "amount": money(payment.amount)});
                out.push(("order.paid", data));
            }
            if let Some(refund) = &step.refund {
                out.push(("order.refunded", refunded(refund)));
            }
        }
        Event::Shipping(ShippingEvent::OrderCharged(c)) => {
            let data = json!({"order_id": c.order_id.text().as_str(),
                              "shipping_method_id": c.method_id.map(|id| id.text().as_str().to_string()),
                              "shipping": c.shipping, "tax": c.tax(), "tax_zone": c.tax_zone});
            out.push(("order.charged", data));
        }
        Event::Returns(ReturnEvent::Requested(r)) => {
            let items: Vec<Value> = r
                .lines
                .iter()
                .map(|l| json!({"sku": l.sku.as_str(), "quantity": l.quantity}))
                .collect();
            let data = json!({"return_id": r.id.text().as_str(),
                              "order_id": r.order_id.text().as_str(), "items": items});
            out.push(("return.requested", data));
        }
        Event::Returns(ReturnEvent::Decided(d)) => {
            let data = json!({"return_id": d.return_id.text().as_str(), "note": d.note});
            out.push((if d.approved { "return.approved" } else { "return.rejected" }, data));
        }
        Event::Returns(ReturnEvent::Received(receipt)) => {
            let restocked: Vec<&str> = receipt.restocked.iter().map(|s| s.as_str()).collect();
            let data = json!({"return_id": receipt.return_id.text().as_str(),
                              "order_id": receipt.order_id.text().as_str(),
                              "refund_id": receipt.refund_id.map(|id| id.text().as_str().to_string()),
                              "restocked": restocked});
            out.push(("return.received", data));
        }
        Event::Promotions(PromotionEvent::OrderDiscounted(discount)) => {
            let codes: Vec<Value> = discount
                .codes
                .iter()
                .map(|c| json!({"code": c.code, "amount": c.amount}))
                .collect();
            let total: i64 = discount.line_discounts.iter().sum();
            let data = json!({"order_id": discount.order_id.text().as_str(), "codes": codes,
                              "discount_total": total});
            out.push(("order.discounted", data));
        }
        Event::Payments(PaymentEvent::Refunded { refund }) => {
            out.push(("order.refunded", refunded(refund)));
        }
        Event::FlashSales(e) => match e {
            FlashSaleEvent::Created(s) => {
                let data = json!({"sale_id": s.id.text().as_str(), "sku": s.sku.as_str(),
                                  "price": money(s.price), "quantity": s.quantity,
                                  "starts_at": rfc3339(s.starts_at), "ends_at": rfc3339(s.ends_at)});
                out.push(("flash_sale.created", data));
            }
            FlashSaleEvent::Started { sale_id } => out.push(sale("flash_sale.started", sale_id)),
            FlashSaleEvent::Ended { sale_id } => out.push(sale("flash_sale.ended", sale_id)),
            FlashSaleEvent::Cancelled { sale_id } => {
                out.push(sale("flash_sale.cancelled", sale_id))
            }
            FlashSaleEvent::Purchased(p) => {
                let data = json!({"order_id": p.order_id.text().as_str(),
                                  "sale_id": p.sale_id.text().as_str(), "quantity": p.units,
                                  "reservation_expires_at": rfc3339(p.reservation_expires_at)});
                out.push(("order.placed", data));
            }
        },
        // What shoppers see change: a review published (new, edited or by staff) or
        // taken down. No author, title or words: the review's own endpoint has them.
        Event::Reviews(ReviewEvent::Saved(r)) => {
            let kind = match r.status {
                ReviewStatus::Published => "review.published",
                _ => "review.held",
            };
            out.push(review(kind, &r.id, &r.product_id));
        }
        Event::Reviews(ReviewEvent::Moderated(m)) => {
            let kind = match m.status {
                ReviewStatus::Published => "review.published",
                _ => "review.rejected",
            };
            out.push(review(kind, &m.review_id, &m.product_id));
        }
        _ => {}
    }
}

/// `GET /v1/events`: ops:admin, or events:read (a client that only reads the feed).
pub async fn list(call: Call) -> Result<Out, Problem> {
    if !call.principal.can(perm::OPS_ADMIN) {
        call.require(perm::EVENTS_READ)?;
    }
    let params: Params = call.query()?;
    let after = params
        .after
        .as_deref()
        .map(|text| {
            text.parse::<u64>()
                .map_err(|_| Problem::malformed("after is the next_cursor of a previous page"))
        })
        .transpose()?;
    // A named consumer: the log is kept from what it has acknowledged (its `after`)
    // on, and a read without `after` resumes there.
    let acknowledged = match params.consumer.as_deref() {
        Some(name) => Some(consumer(&call.app.engine, name, after)?),
        None => None,
    };
    let after = after
        .or(acknowledged)
        .unwrap_or_else(|| call.app.engine.first_log_lsn().0.saturating_sub(1));
    let number = |value: Option<&str>, name: &str, max: u64, default: u64| {
        value.map_or(Ok(default), |v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (0..=max).contains(n))
                .ok_or_else(|| Problem::malformed(format!("{name} must be 0 to {max}")))
        })
    };
    let limit = number(params.limit.as_deref(), "limit", LIMIT_MAX as u64, LIMIT_DEFAULT as u64)?;
    if limit == 0 {
        return Err(Problem::malformed(format!("limit must be 1 to {LIMIT_MAX}")));
    }
    let limit = limit as usize;
    let wait = Duration::from_millis(number(params.wait_ms.as_deref(), "wait_ms", WAIT_MS_MAX, 0)?);
    let mut types = Vec::new();
    for kind in params.types.as_deref().unwrap_or("").split(',').filter(|t| !t.is_empty()) {
        let known = EVENT_TYPES.iter().find(|t| **t == kind).ok_or_else(|| {
            Problem::invalid_field("types", format!("{kind:?} is not an event type"))
        })?;
        types.push(*known);
    }
    let engine = call.app.engine.clone();
    let mut durable = engine.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    let mut cursor = after;
    loop {
        let reader = engine.clone();
        let entries = tokio::task::spawn_blocking(move || {
            reader.read_log(Lsn(cursor + 1), ENTRIES_PER_PAGE_MAX)
        })
        .await
        .map_err(|_| Problem::internal("the log reader failed"))?
        .map_err(|e| match e {
            EngineError::LogTrimmed { first, .. } => Problem::new(
                410,
                "cursor_expired",
                "Cursor expired",
                format!("the log no longer holds LSN {}; it starts at {}", cursor + 1, first.0),
            ),
            other => other.into(),
        })?;
        let (data, next) = page(&entries, &types, limit, cursor);
        cursor = next;
        if !data.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Out::ok(&json!({"data": data, "next_cursor": cursor.to_string()})));
        }
        // Nothing yet: wait for the next durable group, or the deadline.
        let _ = tokio::time::timeout_at(deadline, durable.changed()).await;
    }
}

/// Registers (or finds) the feed consumer `name`, records `after` as read, and returns
/// its position.
fn consumer(engine: &Engine, name: &str, after: Option<u64>) -> Result<u64, Problem> {
    // The same rule as a standby's name: both become the engine's consumer names.
    if !emporium_replication::valid_name(name) {
        return Err(Problem::invalid_field("consumer", "1-48 characters of [a-z0-9._-]"));
    }
    let full = format!("{CONSUMER_PREFIX}{name}");
    let consumers = engine.consumers();
    let known = consumers.iter().any(|(n, _)| *n == full);
    let count = consumers.iter().filter(|(n, _)| n.starts_with(CONSUMER_PREFIX)).count();
    if !known && count >= CONSUMERS_MAX {
        return Err(Problem::new(
            409,
            "conflict",
            "Too many feed consumers",
            format!("at most {CONSUMERS_MAX} named consumers; delete one first"),
        ));
    }
    let registered = engine.register_consumer(&full)?;
    if let Some(after) = after {
        if after > engine.durable_lsn().0 {
            return Err(Problem::malformed("after is beyond the log"));
        }
        registered.advance(Lsn(after))?;
    }
    if registered.is_dropped() {
        return Err(Problem::new(
            410,
            "cursor_expired",
            "Cursor expired",
            "the consumer fell too far behind and was dropped; read again without after",
        ));
    }
    Ok(registered.position().0)
}

/// `DELETE /v1/events/consumers/{name}`: forgets a feed consumer; the log it held is
/// trimmed.
pub async fn forget(call: Call) -> Result<Out, Problem> {
    call.require(perm::OPS_ADMIN)?;
    let full = format!("{CONSUMER_PREFIX}{}", call.param("name"));
    if !call.app.engine.consumers().iter().any(|(n, _)| *n == full) {
        return Err(Problem::not_found("no such feed consumer"));
    }
    call.app.engine.unregister_consumer(&full)?;
    Ok(Out::status(204))
}

/// The records of `entries` of the wanted `types` (all when empty), whole entries up
/// to `limit` records, and the LSN of the last entry read.
///
/// The webhook deliveries turn entries into records with it too. Public, hidden from
/// the docs, for the feed benchmark (`bench/benches/feed.rs`), which measures the
/// endpoint's own conversion: not an API of the crate.
#[doc(hidden)]
pub fn page(entries: &[LogEntry], types: &[&str], limit: usize, after: u64) -> (Vec<Value>, u64) {
    let mut data = Vec::new();
    let mut next = after;
    let mut records = Vec::new();
    for entry in entries {
        records.clear();
        for event in &entry.events {
            public(event, &mut records);
        }
        // Numbered before the filter: a record's id is the same whatever a reader
        // asks for (webhooks of other types deduplicate on it).
        let mut kept: Vec<(usize, (&str, Value))> = records
            .drain(..)
            .enumerate()
            .filter(|(_, (kind, _))| types.is_empty() || types.contains(kind))
            .collect();
        if !data.is_empty() && data.len() + kept.len() > limit {
            break;
        }
        for (i, (kind, record)) in kept.drain(..) {
            data.push(json!({
                "id": format!("evt_{}_{i}", entry.lsn.0),
                "type": kind,
                "lsn": entry.lsn.0,
                "at": rfc3339(entry.at),
                "data": record,
            }));
        }
        next = entry.lsn.0;
        if data.len() >= limit {
            break;
        }
    }
    (data, next)
}
