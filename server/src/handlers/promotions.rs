//! Discount codes: created, listed and changed by the catalog's staff; entered on carts
//! by shoppers (see `carts`).

use std::sync::Arc;

use emporium_engine::*;
use serde::Deserialize;

use super::{cursor, idempotent_send, limit};
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

fn answer(code: &DiscountCode, status: u16) -> Out {
    let view = DiscountCodeView::from(code);
    let out = if status == 201 {
        Out::created(&view, format!("/v1/discount-codes/{}", code.code))
    } else {
        Out::ok(&view)
    };
    out.versioned(code.version)
}

fn named(call: &Call) -> Result<Arc<DiscountCode>, Problem> {
    let code = call.param("code");
    call.app
        .engine
        .state()
        .discount_code(code)
        .ok_or_else(|| Problem::not_found(format!("discount code {code} does not exist")))
}

/// Parses an optional RFC 3339 field, collecting its error.
fn time(errors: &mut Vec<FieldError>, field: &str, text: Option<&str>) -> Option<i64> {
    parse_rfc3339(text?).map_err(|message| errors.push(FieldError::new(field, message))).ok()
}

/// A discount's optional `starts_at` and `ends_at` (RFC 3339), both checked.
fn window(
    starts_at: Option<&str>,
    ends_at: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), Problem> {
    let mut errors = Vec::new();
    let starts_at = time(&mut errors, "starts_at", starts_at);
    let ends_at = time(&mut errors, "ends_at", ends_at);
    if !errors.is_empty() {
        return Err(Problem::from(EngineError::Validation(errors)));
    }
    Ok((starts_at, ends_at))
}

/// `POST /v1/discount-codes`.
pub async fn create(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: NewDiscountCodeJson = call.json()?;
    let prepare = async {
        let (starts_at, ends_at) = window(body.starts_at.as_deref(), body.ends_at.as_deref())?;
        Ok(CreateDiscountCode {
            code: body.code.clone(),
            percent_off: body.percent_off,
            amount_off: body.amount_off.clone().map(Into::into),
            product_ids: body.product_ids.clone(),
            category_ids: body.category_ids.clone(),
            min_subtotal: body.min_subtotal.clone().map(Into::into),
            starts_at,
            ends_at,
            usage_limit: body.usage_limit,
            per_customer_limit: body.per_customer_limit,
            stackable: body.stackable,
        })
    };
    idempotent_send(&call, prepare, |_, code: &Arc<DiscountCode>| answer(code, 201)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/discount-codes`.
pub async fn list(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let query: CodeQuery = call.query()?;
    let after = cursor(query.cursor.as_deref(), |c| c.parse::<u64>().ok())?;
    let page = call.app.engine.state().discount_codes(after, limit(query.limit.as_deref())?);
    let body = List {
        data: page.items.iter().map(|c| DiscountCodeView::from(&**c)).collect(),
        next_cursor: page.next,
    };
    Ok(Out::ok(&body))
}

/// `GET /v1/discount-codes/{code}`.
pub async fn get(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    Ok(answer(&*named(&call)?, 200))
}

/// `PATCH /v1/discount-codes/{code}`.
pub async fn update(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let code = named(&call)?;
    let body: DiscountCodePatchJson = call.json()?;
    let mut errors = Vec::new();
    let ends_at = time(&mut errors, "ends_at", body.ends_at.as_deref());
    if !errors.is_empty() {
        return Err(Problem::from(EngineError::Validation(errors)));
    }
    let command = UpdateDiscountCode {
        code: code.code.clone(),
        active: body.active,
        ends_at,
        usage_limit: body.usage_limit,
        expected_version: call.if_match(|| Some(answer(&code, 200)))?,
    };
    let code = call.app.engine.send(command).await?;
    Ok(answer(&code, 200))
}

/// `POST /v1/promotions`: an automatic promotion, buy N get M free.
pub async fn create_promotion(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: NewPromotionJson = call.json()?;
    let prepare = async {
        let (starts_at, ends_at) = window(body.starts_at.as_deref(), body.ends_at.as_deref())?;
        Ok(CreatePromotion {
            name: body.name.clone(),
            buy: body.buy,
            get: body.get,
            product_ids: body.product_ids.clone(),
            category_ids: body.category_ids.clone(),
            starts_at,
            ends_at,
        })
    };
    idempotent_send(&call, prepare, |_, promotion: &Arc<AutomaticPromotion>| {
        Out::json(201, &PromotionView::from(&**promotion))
    })
    .await
}

/// `GET /v1/promotions`: the promotions in force, in creation order; staff
/// (catalog:write) see every one, scheduled, switched off and ended included.
pub async fn list_promotions(call: Call) -> Result<Out, Problem> {
    let state = call.app.engine.state();
    let now = crate::app::now_ms();
    let staff = call.require(perm::CATALOG_WRITE).is_ok();
    let promotions = state.automatic_promotions();
    let data = promotions
        .iter()
        .filter(|p| staff || p.in_force(now))
        .map(|p| PromotionView::from(&**p))
        .collect();
    Ok(Out::ok(&List { data, next_cursor: None }))
}

/// `PATCH /v1/promotions/{id}`.
pub async fn update_promotion(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: PromotionPatchJson = call.json()?;
    let mut errors = Vec::new();
    let ends_at = time(&mut errors, "ends_at", body.ends_at.as_deref());
    if !errors.is_empty() {
        return Err(Problem::from(EngineError::Validation(errors)));
    }
    let command = UpdatePromotion {
        promotion_id: call.param("id").to_string(),
        active: body.active,
        ends_at,
    };
    let promotion = call.app.engine.send(command).await?;
    Ok(Out::ok(&PromotionView::from(&*promotion)))
}
