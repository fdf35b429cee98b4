//! Addresses, shipping methods, tax rates, parcel weights, and what an order was
//! charged for shipping and tax.

use rkyv::{Archive, Deserialize, Serialize};

use crate::orders::Address;
use crate::types::*;

/// An address in a customer's address book.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SavedAddress {
    /// The id.
    pub id: AddressId,
    /// Whose it is.
    pub customer_id: CustomerId,
    /// The address.
    pub address: Address,
    /// Checkout ships here when no address is given (one per customer at most).
    pub default_shipping: bool,
    /// The billing address by default (one per customer at most).
    pub default_billing: bool,
    /// When it was saved first.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
}

/// A band of a weight-based rate: parcels up to `up_to_grams` cost `amount`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightBand {
    /// The heaviest parcel of the band, in grams.
    pub up_to_grams: u32,
    /// Its price, in minor units of the method's currency.
    pub amount: i64,
}

// In a module of its own so that rkyv's generated type (whose variant fields carry no
// docs) stays private.
mod rate {
    use super::*;

    /// What a shipping method costs.
    #[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    pub enum ShippingRate {
        /// The same for every order.
        Flat {
            /// Minor units.
            amount: i64,
        },
        /// `amount`, or nothing once the order's subtotal after discounts reaches
        /// `threshold`.
        FreeOver {
            /// Minor units.
            amount: i64,
            /// Minor units.
            threshold: i64,
        },
        /// By the parcel's weight (the sum of its units' weights): the first band that
        /// holds it. A parcel heavier than the last band cannot go by this method.
        ByWeight {
            /// Bands by increasing weight.
            bands: Vec<WeightBand>,
        },
    }
}
pub use rate::ShippingRate;

/// A way to ship, chosen at checkout.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ShippingMethod {
    /// The id.
    pub id: ShippingMethodId,
    /// Its name (`Standard`, `Express`).
    pub name: String,
    /// The currency of its amounts: it serves carts in this currency.
    pub currency: Currency,
    /// What it costs.
    pub rate: ShippingRate,
    /// The countries it ships to (ISO 3166-1 alpha-2); empty: everywhere.
    pub countries: Vec<String>,
    /// Whether checkout offers it.
    pub active: bool,
    /// When it was created.
    pub created_at: TimestampMs,
    /// When it last changed.
    pub updated_at: TimestampMs,
}

/// A tax rate of a zone: a country (`DE`) or a region of one (`US-CA`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TaxRate {
    /// `CC` or `CC-REGION`.
    pub zone: String,
    /// The rate in basis points (725 is 7.25 %).
    pub rate_bp: u32,
    /// When it was set.
    pub updated_at: TimestampMs,
}

/// A SKU's weight, for weight-based shipping.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SkuWeight {
    /// The SKU.
    pub sku: Sku,
    /// One unit's weight, in grams.
    pub grams: u32,
}

/// What an order was charged for shipping and tax, beside its lines.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OrderCharges {
    /// The order.
    pub order_id: OrderId,
    /// The shipping method chosen, if one was.
    pub method_id: Option<ShippingMethodId>,
    /// Its name then.
    pub method_name: String,
    /// What shipping cost, in minor units (untaxed).
    pub shipping: i64,
    /// The tax zone applied (`US-CA`), empty when none.
    pub tax_zone: String,
    /// Its rate then, in basis points.
    pub tax_rate_bp: u32,
    /// Each line's tax, in minor units, in the order's line order.
    pub line_taxes: Vec<i64>,
}

impl OrderCharges {
    /// The tax of all lines.
    pub fn tax(&self) -> i64 {
        self.line_taxes.iter().sum()
    }
}
