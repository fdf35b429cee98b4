//! Orders and payments.

use std::sync::Arc;

use emporium_engine::*;
use serde::Deserialize;

use super::{
    begin_keyed, check_owner, cursor, idempotent_send, limit, record_refusal, status_filter, Keyed,
};
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

/// The order named by the path, if the caller may reach it (`write`: change it).
pub(crate) fn reachable(call: &Call, write: bool) -> Result<Arc<Order>, Problem> {
    let id = call.param("id");
    let order = OrderId::parse(id)
        .and_then(|id| call.app.engine.state().order(&id))
        .ok_or_else(|| Problem::not_found(format!("order {id} does not exist")))?;
    check_owner(call, order.customer_id.as_ref(), write)?;
    Ok(order)
}

fn answer(state: &State, order: &Order) -> Out {
    Out::ok(&OrderView::of(state, order)).versioned(order.version)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderQuery {
    status: Option<String>,
    customer_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn page(call: &Call, customer: Option<CustomerId>, query: OrderQuery) -> Result<Out, Problem> {
    let status = status_filter(query.status.as_deref(), "an order status", OrderStatus::parse)?;
    let after = cursor(query.cursor.as_deref(), |c| c.parse::<u64>().ok())?;
    let filter = OrderFilter { customer_id: customer, status };
    let page = call.app.engine.state().orders(&filter, after, limit(query.limit.as_deref())?);
    let body = List {
        data: page.items.iter().map(|o| OrderView::of(call.app.engine.state(), o)).collect(),
        next_cursor: page.next,
    };
    Ok(Out::ok(&body))
}

/// `GET /v1/orders`.
pub async fn list(call: Call) -> Result<Out, Problem> {
    call.require(perm::ORDERS_READ)?;
    let query: OrderQuery = call.query()?;
    let customer = match query.customer_id.as_deref() {
        None => None,
        Some(id) => Some(
            CustomerId::parse(id)
                .ok_or_else(|| Problem::malformed("customer_id is not a customer id"))?,
        ),
    };
    page(&call, customer, query)
}

/// `GET /v1/customers/me/orders`.
pub async fn list_mine(call: Call) -> Result<Out, Problem> {
    let me = super::accounts::me_id(&call)?;
    let query: OrderQuery = call.query()?;
    if query.customer_id.is_some() {
        return Err(Problem::malformed("customer_id is not a parameter of this endpoint"));
    }
    page(&call, Some(me), query)
}

/// `GET /v1/orders/{id}`.
pub async fn get(call: Call) -> Result<Out, Problem> {
    Ok(answer(call.app.engine.state(), &*reachable(&call, false)?))
}

/// `POST /v1/orders/{id}/payments`.
pub async fn pay(call: Call) -> Result<Out, Problem> {
    let order = reachable(&call, true)?;
    let body: PaymentRequest = call.json()?;
    let (idempotency, _in_flight, replaying) = match begin_keyed(&call)? {
        Keyed::Replay(out) => return Ok(out),
        Keyed::Proceed(key, in_flight, replaying) => (key, in_flight, replaying),
    };
    let command = CapturePayment {
        order_id: order.id.to_string(),
        method: body.method,
        token: body.token,
        idempotency: idempotency.clone(),
    };
    let receipt = match call.app.engine.send(command).await {
        Ok(receipt) => receipt,
        Err(error) => return Err(record_refusal(&call, idempotency, error).await),
    };
    let location = order_location(&receipt.order.id);
    Ok(Out {
        replayed: replaying,
        ..Out::created(&PaymentReceiptView::new(call.app.engine.state(), &receipt), location)
    })
}

/// How long starting a payment call waits for the provider's first answer before it
/// answers 202 with the call as it then is.
const FIRST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `POST /v1/orders/{id}/payment-calls`: pays through a provider that answers later.
/// The call is recorded before the provider is asked; 202 with the call (usually
/// `awaiting_callback`). The order is paid when the provider's answer is captured.
pub async fn start_payment_call(call: Call) -> Result<Out, Problem> {
    let order = reachable(&call, true)?;
    let body: PaymentCallRequest = call.json()?;
    if body.method != "test_card" {
        return Err(Problem::invalid_field("method", "the only payment method is test_card"));
    }
    let payments = &call.app.payments;
    if !payments.has_provider(&body.provider) {
        let known = payments.provider_names();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        let message = format!("no such payment provider here (configured: {known})");
        return Err(Problem::invalid_field("provider", message));
    }
    let (idempotency, _in_flight, replaying) = match begin_keyed(&call)? {
        Keyed::Replay(out) => return Ok(out),
        Keyed::Proceed(key, in_flight, replaying) => (key, in_flight, replaying),
    };
    let command = StartCharge {
        order_id: order.id.to_string(),
        provider: body.provider,
        method: body.method,
        token: body.token,
        idempotency,
    };
    let started = call.app.engine.send(command).await?;
    payments.kick();
    let now = payments.answered(started.id, FIRST_ANSWER_WAIT).await.unwrap_or(started);
    let location = format!("/v1/orders/{}/payment-calls", now.order_id);
    let out = Out::json(202, &PaymentCallView::from(&*now));
    Ok(Out { replayed: replaying, location: Some(location), ..out })
}

/// `GET /v1/orders/{id}/payment-calls`: the order's payments through providers, oldest
/// first.
pub async fn payment_calls(call: Call) -> Result<Out, Problem> {
    let order = reachable(&call, false)?;
    let calls = call.app.engine.state().payment_calls(&order.id);
    let body = List {
        data: calls.iter().map(|c| PaymentCallView::from(&**c)).collect(),
        next_cursor: None,
    };
    Ok(Out::ok(&body))
}

/// `POST /v1/payment-callbacks/{provider}`: a provider's signed answer to a payment
/// call. Verified before it is read; an answer given twice changes nothing.
pub async fn provider_callback(call: Call) -> Result<Out, Problem> {
    use crate::gateway::{self, CallbackBody};
    let provider = call.param("provider");
    if provider != gateway::NAME || !call.app.payments.has_provider(provider) {
        return Err(Problem::not_found(format!("no payment provider {provider} calls back here")));
    }
    let header = call.header(gateway::SIGNATURE_HEADER).ok_or_else(|| {
        Problem::unauthenticated("a callback must carry an Emporium-Signature header")
    })?;
    gateway::verify(call.app.gateway.secret(), header, &call.body, crate::app::now_ms())
        .map_err(Problem::unauthenticated)?;
    let body: CallbackBody = call.json()?;
    if body.reference.is_empty() {
        return Err(Problem::invalid_field("reference", "a callback names the call's reference"));
    }
    let status = match body.status.as_str() {
        "authorized" => CallStatus::Authorized,
        "declined" => CallStatus::Declined,
        _ => return Err(Problem::invalid_field("status", "must be authorized or declined")),
    };
    PaymentCallId::parse(&body.call_id)
        .and_then(|id| call.app.engine.state().payment_call(&id))
        .filter(|c| c.provider == provider)
        .ok_or_else(|| {
            Problem::not_found(format!("payment call {} does not exist", body.call_id))
        })?;
    let advance = AdvanceCall {
        call_id: body.call_id,
        status,
        reference: body.reference,
        card_brand: body.card_brand,
        message: body.message,
    };
    let advanced = call.app.engine.send(advance).await?;
    call.app.payments.kick();
    Ok(Out::ok(&PaymentCallView::from(&*advanced)))
}

/// `POST /v1/orders/{id}/cancel`.
pub async fn cancel(call: Call) -> Result<Out, Problem> {
    let order = reachable(&call, true)?;
    let cancel = async {
        Ok(CancelOrder {
            order_id: order.id.to_string(),
            expected_version: call.if_match(|| Some(answer(call.app.engine.state(), &order)))?,
        })
    };
    idempotent_send(&call, cancel, |state, order| answer(state, order)).await
}

/// `POST /v1/orders/{id}/fulfillments`.
pub async fn fulfil(call: Call) -> Result<Out, Problem> {
    call.require(perm::ORDERS_WRITE)?;
    let fulfil = async { Ok(FulfillOrder { order_id: call.param("id").to_string() }) };
    idempotent_send(&call, fulfil, |state, order| answer(state, order)).await
}

/// `POST /v1/orders/{id}/refunds`: part or all of what was captured, never more; an
/// Idempotency-Key makes a retry answer the first refund again.
/// An order paid through an external provider is refunded through it: 202 with the
/// refund call, which the provider settles.
pub async fn refund(call: Call) -> Result<Out, Problem> {
    call.require(perm::PAYMENTS_REFUND)?;
    let body = || -> Result<RefundRequest, Problem> {
        if call.body.is_empty() {
            Ok(RefundRequest::default())
        } else {
            call.json()
        }
    };
    let order_id = call.param("id").to_string();
    let through_provider = OrderId::parse(&order_id)
        .is_some_and(|id| call.app.engine.state().captured_charge(&id).is_some());
    if through_provider {
        let refund = async {
            let body = body()?;
            Ok(StartRefund {
                order_id,
                amount: body.amount.map(MoneyInput::from),
                reason: body.reason.unwrap_or_default(),
            })
        };
        let sent = idempotent_send(&call, refund, |_, started| {
            let location = format!("/v1/orders/{}/payment-calls", started.order_id);
            Out { location: Some(location), ..Out::json(202, &PaymentCallView::from(&**started)) }
        })
        .await;
        call.app.payments.kick();
        return sent;
    }
    let refund = async {
        let body = body()?;
        Ok(RefundPayment {
            order_id,
            amount: body.amount.map(MoneyInput::from),
            reason: body.reason.unwrap_or_default(),
        })
    };
    idempotent_send(&call, refund, |state, receipt| {
        let location = format!("/v1/orders/{}/transactions", receipt.order.id);
        Out::created(&RefundReceiptView::new(state, receipt), location)
    })
    .await
}

/// `GET /v1/orders/{id}/transactions`: the order's ledger.
pub async fn transactions(call: Call) -> Result<Out, Problem> {
    let order = reachable(&call, false)?;
    let ledger = call.app.engine.state().ledger(&order);
    Ok(Out::ok(&LedgerView::new(&order, &ledger)))
}

/// `GET /v1/admin/reconciliation`: every order checked against its ledger, on the
/// blocking pool (it reads every order).
pub async fn reconciliation(call: Call) -> Result<Out, Problem> {
    call.require(perm::ORDERS_READ)?;
    let engine = call.app.engine.clone();
    let body = tokio::task::spawn_blocking(move || {
        let lsn = engine.last_lsn().0;
        let report = engine.state().reconcile();
        let totals: Vec<_> = report
            .totals
            .iter()
            .map(|t| {
                serde_json::json!({"currency": t.currency.as_str(), "captured": t.captured,
                                   "refunded": t.refunded})
            })
            .collect();
        let mismatches: Vec<_> = report
            .mismatches
            .iter()
            .map(|m| serde_json::json!({"order_id": m.order_id.text().as_str(), "problem": m.problem}))
            .collect();
        serde_json::json!({"lsn": lsn, "orders": report.orders, "refunds": report.refunds,
                           "totals": totals, "mismatch_count": report.mismatch_count,
                           "mismatches": mismatches})
    })
    .await
    .map_err(|_| Problem::internal("the reconciliation task failed"))?;
    Ok(Out::ok(&body))
}
