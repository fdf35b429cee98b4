//! Flash sales: created and cancelled by the catalog's staff, read by anyone, bought by
//! signed-in customers one request at a time.

use std::sync::Arc;

use emporium_engine::*;
use serde::Deserialize;

use super::{begin_keyed_or_refuse, cursor, idempotent_send, limit, status_filter, Keyed};
use crate::app::now_ms;
use crate::auth::{perm, Principal};
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

fn sale(call: &Call) -> Result<Arc<FlashSale>, Problem> {
    let id = call.param("id");
    FlashSaleId::parse(id)
        .and_then(|id| call.app.engine.state().flash_sale(&id))
        .ok_or_else(|| Problem::not_found(format!("flash sale {id} does not exist")))
}

fn answer(sale: &FlashSale, status: u16) -> Out {
    let view = FlashSaleView::new(sale, now_ms());
    let out = if status == 201 {
        Out::created(&view, format!("/v1/flash-sales/{}", sale.id))
    } else {
        Out::ok(&view)
    };
    out.versioned(sale.version)
}

/// `POST /v1/flash-sales`.
pub async fn create(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: NewFlashSaleJson = call.json()?;
    let prepare = async {
        let mut errors = Vec::new();
        let mut time = |field: &str, text: &str| {
            parse_rfc3339(text).map_err(|message| errors.push(FieldError::new(field, message)))
        };
        let starts_at = time("starts_at", &body.starts_at);
        let ends_at = time("ends_at", &body.ends_at);
        let ttl = body.reservation_ttl_s.map(|s| s.saturating_mul(1000));
        if !errors.is_empty() {
            return Err(Problem::from(EngineError::Validation(errors)));
        }
        Ok(CreateFlashSale {
            sku: body.sku.clone(),
            price: body.price.clone().into(),
            quantity: body.quantity,
            per_customer_limit: body.per_customer_limit,
            starts_at: starts_at.unwrap_or_default(),
            ends_at: ends_at.unwrap_or_default(),
            reservation_ttl_ms: ttl,
        })
    };
    idempotent_send(&call, prepare, |_, sale: &Arc<FlashSale>| answer(sale, 201)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaleQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/flash-sales`.
pub async fn list(call: Call) -> Result<Out, Problem> {
    let query: SaleQuery = call.query()?;
    let status =
        status_filter(query.status.as_deref(), "a flash sale status", FlashSaleStatus::parse)?;
    let after = cursor(query.cursor.as_deref(), |c| c.parse::<u64>().ok())?;
    let now = now_ms();
    let filter = FlashSaleFilter { status };
    let page =
        call.app.engine.state().flash_sales(filter, now, after, limit(query.limit.as_deref())?);
    let body = List {
        data: page.items.iter().map(|s| FlashSaleView::new(s, now)).collect(),
        next_cursor: page.next,
    };
    Ok(Out::ok(&body))
}

/// `GET /v1/flash-sales/{id}`.
pub async fn get(call: Call) -> Result<Out, Problem> {
    let sale = sale(&call)?;
    Ok(answer(&sale, 200))
}

/// `GET /v1/flash-sales/{id}/stream`: Server-Sent Events from the shared feed.
pub async fn stream(call: Call) -> Result<Out, Problem> {
    use http_body_util::BodyExt;
    let sale = sale(&call)?;
    let events = call.app.feed.watch(call.app.engine.clone(), &sale);
    let body = http_body_util::StreamBody::new(events).boxed_unsync();
    Ok(Out::stream("text/event-stream", body))
}

/// `POST /v1/flash-sales/{id}/cancel`.
pub async fn cancel(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let sale = sale(&call)?;
    let command = CancelFlashSale { sale_id: sale.id.to_string() };
    idempotent_send(&call, async { Ok(command) }, |_, sale: &Arc<FlashSale>| answer(sale, 200))
        .await
}

/// `POST /v1/flash-sales/{id}/purchases`: one request, one pending order.
///
/// `sold_out` and `sale_not_live` are answered here from the published state, without
/// entering the sequencer and without a write (a replay of the key comes first: a
/// purchase that went through before the sale sold out still replays its order; and a
/// key in flight answers 409 `request_in_progress`). The sequencer decides again on
/// everything else.
pub async fn purchase(call: Call) -> Result<Out, Problem> {
    let customer = match &call.principal {
        Principal::User { id, role: Role::Customer } => *id,
        Principal::Anonymous => {
            return Err(Problem::unauthenticated("sign in as a customer to buy in a flash sale"))
        }
        _ => return Err(Problem::forbidden("only customer accounts buy in flash sales")),
    };
    let sale = sale(&call)?;
    let body: PurchaseJson =
        if call.body.is_empty() { PurchaseJson::default() } else { call.json()? };
    let refusal = || {
        let units = u32::try_from(body.quantity).ok().filter(|&units| units >= 1)?;
        let held = call.app.engine.state().flash_sale_units_held(&sale.id, &customer);
        match purchase_refusal(&sale, units, held, now_ms())? {
            refusal @ (EngineError::SoldOut { .. } | EngineError::SaleNotLive(_)) => {
                Some(refusal.into())
            }
            _ => None,
        }
    };
    let (idempotency, _in_flight, replaying) = match begin_keyed_or_refuse(&call, refusal)? {
        Keyed::Replay(out) => return Ok(out),
        Keyed::Proceed(key, in_flight, replaying) => (key, in_flight, replaying),
    };
    let command = PurchaseFlashSale {
        sale_id: sale.id.to_string(),
        customer_id: customer,
        quantity: body.quantity,
        idempotency,
    };
    let order = call.app.engine.send(command).await?;
    let out = Out::created_json(order_json(&order, None), order_location(&order.id));
    Ok(Out { replayed: replaying, ..out.versioned(order.version) })
}
