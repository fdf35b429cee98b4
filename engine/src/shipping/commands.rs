//! The shipping domain's commands.

use std::sync::Arc;

use super::{SavedAddress, ShippingEvent, ShippingMethod, ShippingRate, SkuWeight, TaxRate};
use crate::domains::State;
use crate::error::{EngineError, EntityKind, Result};
use crate::kernel::handler::{done, not_found, Ctx, Decision, Request, APPLIED};
use crate::orders::{check_address, Address};
use crate::types::*;
use crate::validate::Checks;

/// Saved addresses per customer, at most.
pub const ADDRESSES_PER_CUSTOMER_MAX: usize = 20;
/// Shipping methods, at most.
pub const SHIPPING_METHODS_MAX: usize = 100;
/// Countries one method lists, at most.
pub const METHOD_COUNTRIES_MAX: usize = 250;
/// Bands of a weight-based rate, at most.
pub const WEIGHT_BANDS_MAX: usize = 20;
/// Tax zones, at most.
pub const TAX_ZONES_MAX: usize = 5_000;
/// The highest tax rate, in basis points (100 %).
pub const TAX_RATE_BP_MAX: u32 = 10_000;
/// The heaviest unit, in grams (1 t).
pub const SKU_GRAMS_MAX: u32 = 1_000_000;

/// Saves an address in a customer's book: a new one (`address_id: None`) or a change
/// to one of theirs. Making it a default takes the flag from their other address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveAddress {
    /// Whose book.
    pub customer_id: CustomerId,
    /// The address changed, or `None` for a new one.
    pub address_id: Option<String>,
    /// The address.
    pub address: Address,
    /// Ship here when checkout names no address.
    pub default_shipping: bool,
    /// Bill here by default.
    pub default_billing: bool,
}

/// Deletes an address from a customer's book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteAddress {
    /// Whose book.
    pub customer_id: CustomerId,
    /// The address.
    pub address_id: String,
}

/// Creates a shipping method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateShippingMethod {
    /// Its name (1–100 characters).
    pub name: String,
    /// The currency of its amounts (`USD`).
    pub currency: String,
    /// What it costs.
    pub rate: ShippingRate,
    /// Where it ships (ISO 3166-1 alpha-2); empty: everywhere.
    pub countries: Vec<String>,
}

/// Renames a shipping method, or switches it on or off.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateShippingMethod {
    /// The method.
    pub method_id: String,
    /// A new name.
    pub name: Option<String>,
    /// Offered at checkout or not.
    pub active: Option<bool>,
}

/// Sets (or, with `rate_bp: None`, removes) the tax rate of a zone: a country (`DE`) or
/// a region of one (`US-CA`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SetTaxRate {
    /// `CC` or `CC-REGION`.
    pub zone: String,
    /// Basis points, 0–10000.
    pub rate_bp: Option<u32>,
}

/// Sets a SKU's unit weight, for weight-based shipping.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SetSkuWeight {
    /// The SKU (a product variant's).
    pub sku: String,
    /// Grams, 0–1,000,000.
    pub grams: u32,
}

fn address_named(state: &State, customer: &CustomerId, id: &str) -> Result<Arc<SavedAddress>> {
    AddressId::parse(id)
        .and_then(|id| state.saved_address(&id))
        .filter(|a| &a.customer_id == customer)
        .ok_or_else(|| not_found(EntityKind::Address, id))
}

impl Request for SaveAddress {
    type Output = Arc<SavedAddress>;
    type Outcome = AddressId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<AddressId>> {
        let c = self;
        let mut checks = Checks::default();
        check_address(&mut checks, "address.", &c.address);
        done(checks)?;
        if state.customer(&c.customer_id).is_none() {
            return Err(not_found(EntityKind::Customer, c.customer_id.text().as_str()));
        }
        let (id, created_at) = match &c.address_id {
            Some(id) => {
                let saved = address_named(state, &c.customer_id, id)?;
                (saved.id, saved.created_at)
            }
            None => {
                if state.saved_addresses(&c.customer_id).len() >= ADDRESSES_PER_CUSTOMER_MAX {
                    return Err(EngineError::InvalidState(format!(
                        "an address book holds at most {ADDRESSES_PER_CUSTOMER_MAX} addresses"
                    )));
                }
                // A seeded id source repeats after a reopen: an id no address has.
                let id = loop {
                    let id = AddressId::from_random(ctx.ids.random_u128());
                    if state.saved_address(&id).is_none() {
                        break id;
                    }
                };
                (id, ctx.now)
            }
        };
        let saved = SavedAddress {
            id,
            customer_id: c.customer_id,
            address: c.address.clone(),
            default_shipping: c.default_shipping,
            default_billing: c.default_billing,
            created_at,
            updated_at: ctx.now,
        };
        Decision::one(id, ShippingEvent::AddressSaved(Box::new(saved)))
    }

    fn reply(state: &State, id: AddressId) -> Arc<SavedAddress> {
        state.saved_address(&id).expect(APPLIED)
    }
}

impl Request for DeleteAddress {
    type Output = ();
    type Outcome = ();

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<()>> {
        let saved = address_named(state, &self.customer_id, &self.address_id)?;
        let event =
            ShippingEvent::AddressDeleted { customer_id: saved.customer_id, address_id: saved.id };
        Decision::one((), event)
    }

    fn reply(_: &State, _: ()) {}
}

/// Whether `code` is an ISO 3166-1 alpha-2 code in form (two capital letters).
fn is_country(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

fn check_rate(checks: &mut Checks, rate: &ShippingRate) {
    let amount_ok = |a: i64| (0..=MONEY_AMOUNT_MAX).contains(&a);
    let range = format!("must be 0 to {MONEY_AMOUNT_MAX} minor units");
    match rate {
        ShippingRate::Flat { amount } => {
            if !amount_ok(*amount) {
                checks.fail("rate.amount", range);
            }
        }
        ShippingRate::FreeOver { amount, threshold } => {
            if !amount_ok(*amount) {
                checks.fail("rate.amount", range.clone());
            }
            if !amount_ok(*threshold) {
                checks.fail("rate.threshold", range);
            }
        }
        ShippingRate::ByWeight { bands } => {
            if bands.is_empty() || bands.len() > WEIGHT_BANDS_MAX {
                checks.fail("rate.bands", format!("must hold 1 to {WEIGHT_BANDS_MAX} bands"));
                return;
            }
            for (i, band) in bands.iter().enumerate() {
                if !amount_ok(band.amount) {
                    checks.fail(format!("rate.bands[{i}].amount"), range.clone());
                }
                let heavier = i == 0 || band.up_to_grams > bands[i - 1].up_to_grams;
                if band.up_to_grams == 0 || !heavier {
                    checks.fail(
                        format!("rate.bands[{i}].up_to_grams"),
                        "must be more than zero and more than the band before",
                    );
                }
            }
        }
    }
}

impl Request for CreateShippingMethod {
    type Output = Arc<ShippingMethod>;
    type Outcome = ShippingMethodId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<ShippingMethodId>> {
        let c = self;
        let mut checks = Checks::default();
        checks.text("name", &c.name, 1, 100, false);
        let currency =
            Currency::new(&c.currency).map_err(|e| checks.push(e.under("currency"))).ok();
        check_rate(&mut checks, &c.rate);
        let countries =
            if c.countries.len() > METHOD_COUNTRIES_MAX { &[][..] } else { &c.countries[..] };
        if c.countries.len() > METHOD_COUNTRIES_MAX {
            checks.fail("countries", format!("at most {METHOD_COUNTRIES_MAX}"));
        }
        for (i, country) in countries.iter().enumerate() {
            if !is_country(country) {
                checks.fail(
                    format!("countries[{i}]"),
                    "must be an ISO 3166-1 alpha-2 code such as US",
                );
            }
        }
        done(checks)?;
        if state.shipping.methods.len() >= SHIPPING_METHODS_MAX {
            return Err(EngineError::InvalidState(format!(
                "at most {SHIPPING_METHODS_MAX} shipping methods"
            )));
        }
        let mut countries = c.countries.clone();
        countries.sort();
        countries.dedup();
        let method = ShippingMethod {
            id: ShippingMethodId::from_seq(state.shipping.method_seq.next()),
            name: c.name.clone(),
            currency: currency.expect("checked"),
            rate: c.rate.clone(),
            countries,
            active: true,
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        let id = method.id;
        Decision::one(id, ShippingEvent::MethodSaved(Box::new(method)))
    }

    fn reply(state: &State, id: ShippingMethodId) -> Arc<ShippingMethod> {
        state.shipping_method(&id).expect(APPLIED)
    }
}

impl Request for UpdateShippingMethod {
    type Output = Arc<ShippingMethod>;
    type Outcome = ShippingMethodId;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<ShippingMethodId>> {
        let c = self;
        let mut checks = Checks::default();
        if let Some(name) = &c.name {
            checks.text("name", name, 1, 100, false);
        }
        done(checks)?;
        let method = ShippingMethodId::parse(&c.method_id)
            .and_then(|id| state.shipping_method(&id))
            .ok_or_else(|| not_found(EntityKind::ShippingMethod, &c.method_id))?;
        let mut method = (*method).clone();
        if let Some(name) = &c.name {
            method.name.clone_from(name);
        }
        if let Some(active) = c.active {
            method.active = active;
        }
        method.updated_at = ctx.now;
        let id = method.id;
        Decision::one(id, ShippingEvent::MethodSaved(Box::new(method)))
    }

    fn reply(state: &State, id: ShippingMethodId) -> Arc<ShippingMethod> {
        state.shipping_method(&id).expect(APPLIED)
    }
}

/// Whether `zone` is `CC` or `CC-REGION` (a region of 1–3 capital letters or digits,
/// as ISO 3166-2 writes them).
fn is_zone(zone: &str) -> bool {
    match zone.split_once('-') {
        None => is_country(zone),
        Some((country, region)) => {
            is_country(country)
                && (1..=3).contains(&region.len())
                && region.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        }
    }
}

impl Request for SetTaxRate {
    type Output = Option<Arc<TaxRate>>;
    type Outcome = String;

    fn decide(&self, state: &State, ctx: &mut Ctx<'_>) -> Result<Decision<String>> {
        let c = self;
        let mut checks = Checks::default();
        if !is_zone(&c.zone) {
            checks.fail("zone", "must be a country (US) or a region of one (US-CA)");
        }
        if c.rate_bp.is_some_and(|bp| bp > TAX_RATE_BP_MAX) {
            checks.fail("rate_bp", format!("must be 0 to {TAX_RATE_BP_MAX} (basis points)"));
        }
        done(checks)?;
        let known = state.shipping.tax_rates.get(&c.zone).is_some();
        let event = match c.rate_bp {
            None if !known => return Err(not_found(EntityKind::TaxRate, &c.zone)),
            None => ShippingEvent::TaxRateRemoved { zone: c.zone.clone() },
            Some(_) if !known && state.shipping.tax_rates.len() >= TAX_ZONES_MAX => {
                return Err(EngineError::InvalidState(format!(
                    "at most {TAX_ZONES_MAX} tax zones"
                )));
            }
            Some(rate_bp) => ShippingEvent::TaxRateSet(Box::new(TaxRate {
                zone: c.zone.clone(),
                rate_bp,
                updated_at: ctx.now,
            })),
        };
        Decision::one(c.zone.clone(), event)
    }

    fn reply(state: &State, zone: String) -> Option<Arc<TaxRate>> {
        state.shipping.tax_rates.get(&zone)
    }
}

impl Request for SetSkuWeight {
    type Output = u32;
    type Outcome = u32;

    fn decide(&self, state: &State, _ctx: &mut Ctx<'_>) -> Result<Decision<u32>> {
        let c = self;
        let sku = Sku::new(c.sku.clone()).map_err(|e| EngineError::Validation(vec![e]))?;
        if c.grams > SKU_GRAMS_MAX {
            return Err(EngineError::field("grams", format!("must be 0 to {SKU_GRAMS_MAX}")));
        }
        if state.product_by_sku(&sku).is_none() {
            return Err(not_found(EntityKind::Sku, sku.as_str()));
        }
        let weight = SkuWeight { sku, grams: c.grams };
        Decision::one(c.grams, ShippingEvent::WeightSet(Box::new(weight)))
    }

    fn reply(_: &State, grams: u32) -> u32 {
        grams
    }
}
