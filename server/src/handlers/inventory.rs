//! Stock levels.

use emporium_engine::*;

use super::idempotent_send;
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

fn answer(levels: &StockLevels) -> Out {
    Out::ok(&InventoryView::from(levels)).versioned(levels.version)
}

/// `GET /v1/inventory/{sku}`.
pub async fn get(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_READ)?;
    let sku = call.param("sku");
    let levels = Sku::new(sku)
        .ok()
        .and_then(|sku| call.app.engine.state().stock(&sku))
        .ok_or_else(|| Problem::not_found(format!("SKU {sku} does not exist")))?;
    Ok(answer(&levels))
}

/// `PUT /v1/inventory/{sku}`.
pub async fn set(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_WRITE)?;
    let body: InventorySet = call.json()?;
    let current = || {
        let sku = Sku::new(call.param("sku")).ok()?;
        call.app.engine.state().stock(&sku).map(|levels| answer(&levels))
    };
    let command = SetStock {
        sku: call.param("sku").to_string(),
        on_hand: body.on_hand,
        reason: body.reason,
        expected_version: call.if_match(current)?,
    };
    Ok(answer(&call.app.engine.send(command).await?))
}

/// `POST /v1/inventory/{sku}/adjustments`.
pub async fn adjust(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_WRITE)?;
    let body: InventoryAdjustment = call.json()?;
    let adjust = async {
        Ok(AdjustStock {
            sku: call.param("sku").to_string(),
            delta: body.delta,
            reason: body.reason,
        })
    };
    idempotent_send(&call, adjust, |_, levels| answer(levels)).await
}
