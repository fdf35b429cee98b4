//! Carts and checkout.

use std::sync::Arc;

use emporium_engine::*;

use super::{begin_keyed, check_owner, idempotent_send, record_refusal, Keyed};
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

/// The cart named by the path, if the caller may reach it.
fn reachable(call: &Call, write: bool) -> Result<Arc<Cart>, Problem> {
    let id = call.param("id");
    let cart = CartId::parse(id)
        .and_then(|id| call.app.engine.state().cart(&id))
        .ok_or_else(|| Problem::not_found(format!("cart {id} does not exist")))?;
    check_owner(call, cart.customer_id.as_ref(), write)?;
    Ok(cart)
}

fn answer(state: &State, cart: Arc<Cart>, status: u16) -> Out {
    let priced = state.price_cart(cart, crate::app::now_ms());
    let out = Out::json(status, &CartView::from(&priced)).versioned(priced.cart.version);
    if status == 201 {
        Out { location: Some(format!("/v1/carts/{}", priced.cart.id)), ..out }
    } else {
        out
    }
}

/// `POST /v1/carts`.
pub async fn create(call: Call) -> Result<Out, Problem> {
    let body: NewCart = if call.body.is_empty() { NewCart::default() } else { call.json()? };
    let customer_id = call.principal.customer_id().map(|c| c.to_string());
    let create = async { Ok(CreateCart { customer_id, currency: body.currency }) };
    idempotent_send(&call, create, |state, cart| answer(state, cart.clone(), 201)).await
}

/// `GET /v1/carts/{id}`.
pub async fn get(call: Call) -> Result<Out, Problem> {
    let cart = reachable(&call, false)?;
    Ok(answer(call.app.engine.state(), cart, 200))
}

fn check_version(call: &Call, cart: &Arc<Cart>) -> Result<(), Problem> {
    match call.if_match(|| Some(answer(call.app.engine.state(), cart.clone(), 200)))? {
        Some(version) if version != cart.version => Err(Problem::precondition_failed(format!(
            "If-Match names version {version}; the cart is at version {}",
            cart.version
        ))),
        _ => Ok(()),
    }
}

/// `POST /v1/carts/{id}/items`.
pub async fn add_item(call: Call) -> Result<Out, Problem> {
    let cart = reachable(&call, true)?;
    let body: CartItemAdd = call.json()?;
    let add = async {
        Ok(AddCartItem { cart_id: cart.id.to_string(), sku: body.sku, quantity: body.quantity })
    };
    idempotent_send(&call, add, |state, cart| answer(state, cart.clone(), 200)).await
}

/// `PUT /v1/carts/{id}/items/{sku}`.
pub async fn set_item(call: Call) -> Result<Out, Problem> {
    let cart = reachable(&call, true)?;
    check_version(&call, &cart)?;
    let body: CartItemSet = call.json()?;
    let command = SetCartItem {
        cart_id: cart.id.to_string(),
        sku: call.param("sku").to_string(),
        quantity: body.quantity,
    };
    let cart = call.app.engine.send(command).await?;
    Ok(answer(call.app.engine.state(), cart, 200))
}

/// `DELETE /v1/carts/{id}/items/{sku}`.
pub async fn remove_item(call: Call) -> Result<Out, Problem> {
    let cart = reachable(&call, true)?;
    check_version(&call, &cart)?;
    let command =
        RemoveCartItem { cart_id: cart.id.to_string(), sku: call.param("sku").to_string() };
    call.app.engine.send(command).await?;
    Ok(Out::no_content())
}

/// `POST /v1/carts/{id}/discount-codes`: enters a code (again: nothing changes).
pub async fn add_code(call: Call) -> Result<Out, Problem> {
    let cart = reachable(&call, true)?;
    let body: CartCodeJson = call.json()?;
    let add = async { Ok(ApplyDiscountCode { cart_id: cart.id.to_string(), code: body.code }) };
    idempotent_send(&call, add, |state, cart| answer(state, cart.clone(), 200)).await
}

/// `DELETE /v1/carts/{id}/discount-codes/{code}`.
pub async fn remove_code(call: Call) -> Result<Out, Problem> {
    let cart = reachable(&call, true)?;
    check_version(&call, &cart)?;
    let command =
        RemoveDiscountCode { cart_id: cart.id.to_string(), code: call.param("code").to_string() };
    call.app.engine.send(command).await?;
    Ok(Out::no_content())
}

/// `POST /v1/carts/{id}/checkout`: the engine keeps the idempotency key with the order,
/// so a retry gets the same order, also after a restart.
pub async fn checkout(call: Call) -> Result<Out, Problem> {
    let cart = reachable(&call, true)?;
    let body: CheckoutJson =
        if call.body.is_empty() { CheckoutJson::default() } else { call.json()? };
    let (idempotency, _in_flight, replaying) = match begin_keyed(&call)? {
        Keyed::Replay(out) => return Ok(out),
        Keyed::Proceed(key, in_flight, replaying) => (key, in_flight, replaying),
    };
    let command = Checkout {
        cart_id: cart.id.to_string(),
        email: body.email,
        shipping_address: body.shipping_address.map(Address::from),
        shipping_address_id: body.shipping_address_id,
        shipping_method_id: body.shipping_method_id,
        idempotency: idempotency.clone(),
    };
    let order = match call.app.engine.send(command).await {
        Ok(order) => order,
        Err(error) => return Err(record_refusal(&call, idempotency, error).await),
    };
    let charges = call.app.engine.state().order_charges(&order.id);
    let out = Out::created_json(order_json(&order, charges.as_deref()), order_location(&order.id));
    Ok(Out { replayed: replaying, ..out.versioned(order.version) })
}
