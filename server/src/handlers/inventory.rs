//! Stock levels, in total and per location, and stock locations.

use std::sync::Arc;

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
    Ok(answer(&levels_named(&call)?))
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

/// A SKU's totals and its level at every location, from `state`; `after` when the SKU
/// is gone since (its product dropped it).
fn by_location(state: &State, after: &StockLevels) -> Out {
    match state.stock_by_location(&after.sku) {
        Some((totals, levels)) => {
            Out::ok(&InventoryByLocationView::new(&totals, &levels)).versioned(totals.version)
        }
        None => Out::ok(&InventoryByLocationView::new(after, &[])).versioned(after.version),
    }
}

fn levels_named(call: &Call) -> Result<StockLevels, Problem> {
    let sku = call.param("sku");
    Sku::new(sku)
        .ok()
        .and_then(|sku| call.app.engine.state().stock(&sku))
        .ok_or_else(|| Problem::not_found(format!("SKU {sku} does not exist")))
}

/// `GET /v1/inventory/{sku}/locations`.
pub async fn get_by_location(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_READ)?;
    let levels = levels_named(&call)?;
    Ok(by_location(call.app.engine.state(), &levels))
}

/// `PUT /v1/inventory/{sku}/locations/{location_id}`.
pub async fn set_at_location(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_WRITE)?;
    let body: InventorySet = call.json()?;
    let current = || Some(by_location(call.app.engine.state(), &levels_named(&call).ok()?));
    let command = SetLocationStock {
        sku: call.param("sku").to_string(),
        location_id: call.param("location_id").to_string(),
        on_hand: body.on_hand,
        reason: body.reason,
        expected_version: call.if_match(current)?,
    };
    let levels = call.app.engine.send(command).await?;
    Ok(by_location(call.app.engine.state(), &levels))
}

/// `POST /v1/inventory/{sku}/locations/{location_id}/adjustments`.
pub async fn adjust_at_location(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_WRITE)?;
    let body: InventoryAdjustment = call.json()?;
    let adjust = async {
        Ok(AdjustLocationStock {
            sku: call.param("sku").to_string(),
            location_id: call.param("location_id").to_string(),
            delta: body.delta,
            reason: body.reason,
        })
    };
    idempotent_send(&call, adjust, by_location).await
}

/// `POST /v1/inventory/{sku}/transfers`.
pub async fn transfer(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_WRITE)?;
    let body: InventoryTransfer = call.json()?;
    let transfer = async {
        Ok(TransferStock {
            sku: call.param("sku").to_string(),
            from_location_id: body.from_location_id,
            to_location_id: body.to_location_id,
            quantity: body.quantity,
            reason: body.reason,
        })
    };
    idempotent_send(&call, transfer, by_location).await
}

fn location_named(call: &Call) -> Result<Arc<StockLocation>, Problem> {
    let id = call.param("id");
    LocationId::parse(id)
        .and_then(|id| call.app.engine.state().location(&id))
        .ok_or_else(|| Problem::not_found(format!("stock location {id} does not exist")))
}

/// `GET /v1/locations`.
pub async fn list_locations(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_READ)?;
    let locations = call.app.engine.state().locations();
    let data = locations.iter().map(|l| LocationView::from(&**l)).collect();
    Ok(Out::ok(&List { data, next_cursor: None }))
}

/// `GET /v1/locations/{id}`.
pub async fn get_location(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_READ)?;
    Ok(location_answer(&*location_named(&call)?))
}

fn location_answer(location: &StockLocation) -> Out {
    Out::ok(&LocationView::from(location)).versioned(location.version)
}

/// `POST /v1/locations`.
pub async fn create_location(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_WRITE)?;
    let body: NewLocationJson = call.json()?;
    let create =
        async { Ok(CreateLocation { name: body.name, kind: body.kind, priority: body.priority }) };
    idempotent_send(&call, create, |_, location: &Arc<StockLocation>| {
        let path = format!("/v1/locations/{}", location.id);
        Out::created(&LocationView::from(&**location), path).versioned(location.version)
    })
    .await
}

/// `PATCH /v1/locations/{id}`.
pub async fn update_location(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_WRITE)?;
    let location = location_named(&call)?;
    let body: LocationPatchJson = call.json()?;
    let expected_version = call.if_match(|| Some(location_answer(&location)))?;
    let update = async {
        Ok(UpdateLocation {
            location_id: location.id.to_string(),
            name: body.name,
            kind: body.kind,
            priority: body.priority,
            expected_version,
        })
    };
    idempotent_send(&call, update, |_, location: &Arc<StockLocation>| location_answer(location))
        .await
}

/// `DELETE /v1/locations/{id}`.
pub async fn delete_location(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_WRITE)?;
    let location = location_named(&call)?;
    let expected_version = call.if_match(|| Some(location_answer(&location)))?;
    let delete =
        async { Ok(DeleteLocation { location_id: location.id.to_string(), expected_version }) };
    idempotent_send(&call, delete, |_, _: &()| Out::no_content()).await
}

/// `GET /v1/orders/{id}/stock-locations`: where an order's units are reserved, or left
/// from.
pub async fn order_sources(call: Call) -> Result<Out, Problem> {
    call.require(perm::INVENTORY_READ)?;
    let id = call.param("id");
    let state = call.app.engine.state();
    let order = OrderId::parse(id)
        .and_then(|id| state.order(&id))
        .ok_or_else(|| Problem::not_found(format!("order {id} does not exist")))?;
    let sources = state.order_stock_sources(&order);
    let items = sources.as_ref().map(|parts| {
        parts
            .iter()
            .map(|p| StockSourceView {
                sku: p.sku.as_str(),
                location_id: p.location_id.text(),
                quantity: p.units,
            })
            .collect::<Vec<_>>()
    });
    Ok(Out::ok(&OrderStockSourcesView {
        order_id: order.id.text(),
        status: order.status.as_str(),
        items: items.as_deref(),
    }))
}
