//! Returns: a customer asks to send back units of a fulfilled order; staff approve or
//! reject, then receive the units, which restocks them and refunds them.

use std::sync::Arc;

use emporium_engine::*;
use serde::Deserialize;

use super::orders::reachable;
use super::{check_owner, cursor, idempotent_send, limit, status_filter};
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

/// The return named by the path, if the caller may read it (its order's owner, anyone
/// for a guest order's, orders:read).
fn named(call: &Call) -> Result<(Arc<Return>, Arc<Order>), Problem> {
    let id = call.param("id");
    let state = call.app.engine.state();
    let r = ReturnId::parse(id)
        .and_then(|id| state.order_return(&id))
        .ok_or_else(|| Problem::not_found(format!("return {id} does not exist")))?;
    let order =
        state.order(&r.order_id).ok_or_else(|| Problem::internal("a return without its order"))?;
    check_owner(call, order.customer_id.as_ref(), false)?;
    Ok((r, order))
}

fn answer(state: &State, outcome: &ReturnOutcome, status: u16) -> Out {
    let view = ReturnOutcomeView::new(state, outcome);
    let out = if status == 201 {
        Out::created(&view, format!("/v1/returns/{}", outcome.r#return.id))
    } else {
        Out::ok(&view)
    };
    out.versioned(outcome.r#return.version)
}

/// `POST /v1/orders/{id}/returns`.
pub async fn request(call: Call) -> Result<Out, Problem> {
    let order = reachable(&call, true)?;
    let body: NewReturnJson = call.json()?;
    let prepare = async {
        Ok(RequestReturn {
            order_id: order.id.to_string(),
            lines: body.items.iter().map(|i| (i.sku.clone(), i.quantity)).collect(),
            reason: body.reason.clone(),
        })
    };
    idempotent_send(&call, prepare, |state, outcome| answer(state, outcome, 201)).await
}

/// `GET /v1/orders/{id}/returns`.
pub async fn of_order(call: Call) -> Result<Out, Problem> {
    let order = reachable(&call, false)?;
    let state = call.app.engine.state();
    let returns = state.returns_of_order(&order.id);
    let data = returns.iter().map(|r| ReturnView::new(state, r)).collect();
    Ok(Out::ok(&List { data, next_cursor: None }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReturnQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/returns`: staff's queue.
pub async fn list(call: Call) -> Result<Out, Problem> {
    call.require(perm::ORDERS_READ)?;
    let query: ReturnQuery = call.query()?;
    let status = status_filter(query.status.as_deref(), "a return status", ReturnStatus::parse)?;
    let after = cursor(query.cursor.as_deref(), |c| c.parse::<u64>().ok())?;
    let state = call.app.engine.state();
    let page = state.returns(status, after, limit(query.limit.as_deref())?);
    let data = page.items.iter().map(|r| ReturnView::new(state, r)).collect();
    Ok(Out::ok(&List { data, next_cursor: page.next }))
}

/// `GET /v1/returns/{id}`.
pub async fn get(call: Call) -> Result<Out, Problem> {
    let (r, _) = named(&call)?;
    let view = ReturnView::new(call.app.engine.state(), &r);
    Ok(Out::ok(&view).versioned(r.version))
}

async fn decide(call: Call, approve: bool) -> Result<Out, Problem> {
    call.require(perm::ORDERS_WRITE)?;
    let body: ReturnDecisionJson =
        if call.body.is_empty() { ReturnDecisionJson::default() } else { call.json()? };
    let prepare = async {
        Ok(DecideReturn {
            return_id: call.param("id").to_string(),
            approve,
            note: body.note.clone().unwrap_or_default(),
        })
    };
    idempotent_send(&call, prepare, |state, outcome| answer(state, outcome, 200)).await
}

/// `POST /v1/returns/{id}/approve`.
pub async fn approve(call: Call) -> Result<Out, Problem> {
    decide(call, true).await
}

/// `POST /v1/returns/{id}/reject`.
pub async fn reject(call: Call) -> Result<Out, Problem> {
    decide(call, false).await
}

/// `POST /v1/returns/{id}/receive`: restocks and refunds (payments:refund).
pub async fn receive(call: Call) -> Result<Out, Problem> {
    call.require(perm::PAYMENTS_REFUND)?;
    let body: ReturnReceiptJson =
        if call.body.is_empty() { ReturnReceiptJson::default() } else { call.json()? };
    let prepare = async {
        Ok(ReceiveReturn {
            return_id: call.param("id").to_string(),
            not_restocked: body.not_restocked.clone(),
        })
    };
    idempotent_send(&call, prepare, |state, outcome| answer(state, outcome, 200)).await
}
