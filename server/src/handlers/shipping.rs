//! Shipping methods and tax rates (kept by the catalog's staff, read by anyone), SKU
//! weights, and the signed-in customer's address book.

use std::sync::Arc;

use emporium_engine::*;

use super::accounts::me_id;
use super::idempotent_send;
use crate::auth::perm;
use crate::http::{Call, Out};
use crate::problem::Problem;
use crate::wire::*;

fn method_named(call: &Call) -> Result<Arc<ShippingMethod>, Problem> {
    let id = call.param("id");
    ShippingMethodId::parse(id)
        .and_then(|id| call.app.engine.state().shipping_method(&id))
        .ok_or_else(|| Problem::not_found(format!("shipping method {id} does not exist")))
}

/// `POST /v1/shipping-methods`.
pub async fn create_method(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: NewShippingMethodJson = call.json()?;
    let rate = body.rate.rate().map_err(|e| Problem::from(EngineError::Validation(vec![e])))?;
    let create = async {
        Ok(CreateShippingMethod {
            name: body.name.clone(),
            currency: body.currency.clone(),
            rate,
            countries: body.countries.clone(),
        })
    };
    idempotent_send(&call, create, |_, method: &Arc<ShippingMethod>| {
        let location = format!("/v1/shipping-methods/{}", method.id);
        Out::created(&ShippingMethodView::from(&**method), location)
    })
    .await
}

/// `GET /v1/shipping-methods`: every method (at most 100), active or not.
pub async fn list_methods(call: Call) -> Result<Out, Problem> {
    let methods = call.app.engine.state().shipping_methods();
    let data = methods.iter().map(|m| ShippingMethodView::from(&**m)).collect();
    Ok(Out::ok(&List { data, next_cursor: None }))
}

/// `GET /v1/shipping-methods/{id}`.
pub async fn get_method(call: Call) -> Result<Out, Problem> {
    let method = method_named(&call)?;
    Ok(Out::ok(&ShippingMethodView::from(&*method)))
}

/// `PATCH /v1/shipping-methods/{id}`.
pub async fn update_method(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let method = method_named(&call)?;
    let body: ShippingMethodPatchJson = call.json()?;
    let update = async {
        Ok(UpdateShippingMethod {
            method_id: method.id.to_string(),
            name: body.name.clone(),
            active: body.active,
        })
    };
    idempotent_send(&call, update, |_, method: &Arc<ShippingMethod>| {
        Out::ok(&ShippingMethodView::from(&**method))
    })
    .await
}

/// `GET /v1/tax-rates`.
pub async fn list_tax_rates(call: Call) -> Result<Out, Problem> {
    let rates = call.app.engine.state().tax_rates();
    let data = rates.iter().map(|r| TaxRateView::from(&**r)).collect();
    Ok(Out::ok(&List { data, next_cursor: None }))
}

/// `PUT /v1/tax-rates/{zone}`.
pub async fn set_tax_rate(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: TaxRateJson = call.json()?;
    let set = async {
        Ok(SetTaxRate { zone: call.param("zone").to_string(), rate_bp: Some(body.rate_bp) })
    };
    idempotent_send(&call, set, |_, rate: &Option<Arc<TaxRate>>| match rate {
        Some(rate) => Out::ok(&TaxRateView::from(&**rate)),
        None => Out::no_content(),
    })
    .await
}

/// `DELETE /v1/tax-rates/{zone}`.
pub async fn delete_tax_rate(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let remove = async { Ok(SetTaxRate { zone: call.param("zone").to_string(), rate_bp: None }) };
    idempotent_send(&call, remove, |_, _: &Option<Arc<TaxRate>>| Out::no_content()).await
}

/// `PUT /v1/inventory/{sku}/weight`.
pub async fn set_weight(call: Call) -> Result<Out, Problem> {
    call.require(perm::CATALOG_WRITE)?;
    let body: WeightJson = call.json()?;
    let sku = call.param("sku").to_string();
    let set = async { Ok(SetSkuWeight { sku: sku.clone(), grams: body.grams }) };
    let shown = call.param("sku").to_string();
    idempotent_send(&call, set, move |_, grams: &u32| {
        Out::ok(&serde_json::json!({"sku": shown, "grams": grams}))
    })
    .await
}

/// `GET /v1/customers/me/addresses`: the caller's book, oldest first (at most 20).
pub async fn list_addresses(call: Call) -> Result<Out, Problem> {
    let me = me_id(&call)?;
    let addresses = call.app.engine.state().saved_addresses(&me);
    let data = addresses.iter().map(|a| SavedAddressView::from(&**a)).collect();
    Ok(Out::ok(&List { data, next_cursor: None }))
}

/// `POST /v1/customers/me/addresses` and `PUT /v1/customers/me/addresses/{id}`.
pub async fn save_address(call: Call) -> Result<Out, Problem> {
    let me = me_id(&call)?;
    let body: SavedAddressJson = call.json()?;
    let address_id = call.route.path.ends_with("{id}").then(|| call.param("id").to_string());
    let new = address_id.is_none();
    let save = async {
        Ok(SaveAddress {
            customer_id: me,
            address_id: address_id.clone(),
            address: Address::from(body.address.clone()),
            default_shipping: body.default_shipping,
            default_billing: body.default_billing,
        })
    };
    idempotent_send(&call, save, move |_, saved: &Arc<SavedAddress>| {
        let view = SavedAddressView::from(&**saved);
        if new {
            Out::created(&view, format!("/v1/customers/me/addresses/{}", saved.id))
        } else {
            Out::ok(&view)
        }
    })
    .await
}

/// `DELETE /v1/customers/me/addresses/{id}`.
pub async fn delete_address(call: Call) -> Result<Out, Problem> {
    let me = me_id(&call)?;
    let delete =
        async { Ok(DeleteAddress { customer_id: me, address_id: call.param("id").to_string() }) };
    idempotent_send(&call, delete, |_, _: &()| Out::no_content()).await
}
