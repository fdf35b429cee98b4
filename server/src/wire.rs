//! The JSON wire format: request bodies (unknown fields refused) and the views of the
//! engine's values that responses carry. Only this module knows field names on the wire.

use std::collections::BTreeMap;

use emporium_engine::*;
use serde::{Deserialize, Deserializer, Serialize};

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-01-01T00:00:00.000Z`).
pub fn rfc3339(ms: i64) -> String {
    let mut text = Vec::with_capacity(24);
    write_rfc3339(&mut text, ms);
    String::from_utf8(text).expect("RFC 3339 is ASCII")
}

/// `value` as a JSON string, the same bytes `serde_json` writes: text with nothing to
/// escape (the usual case on the hot paths) is copied as it is.
pub(crate) fn write_json_str(out: &mut Vec<u8>, value: &str) {
    if !needs_json_escape(value.as_bytes()) {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, value).expect("writing to a Vec cannot fail");
    }
}

/// Whether `bytes` hold a control character, a quote or a backslash: what JSON escapes.
/// Eight bytes at a time (the classic "has a byte less than n" bit trick, exact for
/// n <= 128), as strings are checked on every answer written by hand.
fn needs_json_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        if below(word, 0x20)
            || below(word ^ (ONES * u64::from(b'"')), 1)
            || below(word ^ (ONES * u64::from(b'\\')), 1)
        {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// The low `digits` (at most 32) hexadecimal digits of `value`, lower-case, without the
/// formatting machinery (request ids and idempotency scopes, on every request): made
/// as bytes and appended at once, where pushing each digit as a `char` checked the
/// string's room and encoded it every time.
pub(crate) fn push_hex(out: &mut String, value: u128, digits: u32) {
    let digits = digits.min(32) as usize;
    let mut text = [0u8; 32];
    let mut rest = value;
    for digit in text[..digits].iter_mut().rev() {
        *digit = b"0123456789abcdef"[(rest & 15) as usize];
        rest >>= 4;
    }
    out.push_str(std::str::from_utf8(&text[..digits]).expect("hexadecimal digits are ASCII"));
}

/// An integer in decimal, without the formatting machinery.
pub(crate) fn write_json_int(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// [`rfc3339`], written into `out`.
fn write_rfc3339(out: &mut Vec<u8>, ms: i64) {
    use std::io::Write;
    let seconds = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (secs_of_day / 3600, secs_of_day % 3600 / 60, secs_of_day % 60);
    if !(0..=9999).contains(&year) {
        write!(out, "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
            .expect("writing to a Vec cannot fail");
        return;
    }
    // Every field has a fixed width: the digits are written directly, without the
    // formatting machinery (this runs several times for every order answered).
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut digits = |at: usize, width: usize, mut value: i64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, month);
    digits(8, 2, day);
    digits(11, 2, hour);
    digits(14, 2, minute);
    digits(17, 2, second);
    digits(20, 3, millis);
    out.extend_from_slice(&text);
}

/// An RFC 3339 timestamp (`2026-11-27T09:00:00Z`, any offset, any fraction) as
/// milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z ({e})"))?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| "is out of range".to_string())
}

/// `{"amount": 1999, "currency": "USD"}`.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct MoneyJson {
    /// Minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
}

impl From<MoneyJson> for MoneyInput {
    fn from(money: MoneyJson) -> MoneyInput {
        MoneyInput { amount: money.amount, currency: money.currency }
    }
}

impl From<Money> for MoneyJson {
    fn from(money: Money) -> MoneyJson {
        MoneyJson { amount: money.amount(), currency: money.currency().as_str().to_string() }
    }
}

/// A list page.
#[derive(Serialize)]
pub struct List<T> {
    /// The items.
    pub data: Vec<T>,
    /// The cursor of the next page, or null on the last.
    pub next_cursor: Option<String>,
}

/// Deserializes a field that may be absent (`None`), null (`Some(None)`) or a value.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

// --- requests ------------------------------------------------------------------------

/// `POST /v1/auth/register`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/admin/users`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    pub password: String,
    pub role: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/admin/api-clients`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewApiClient {
    pub name: String,
    pub scopes: Vec<String>,
}

/// A variant in a product body.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct VariantJson {
    pub sku: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub price: MoneyJson,
}

impl From<VariantJson> for VariantInput {
    fn from(v: VariantJson) -> VariantInput {
        VariantInput {
            sku: v.sku,
            title: v.title,
            options: v.options,
            price: MoneyInput { amount: v.price.amount, currency: v.price.currency },
        }
    }
}

/// `POST /v1/products`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    #[serde(default)]
    pub handle: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub brand: String,
    #[serde(default)]
    pub category_ids: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub status: Option<String>,
    pub variants: Vec<VariantJson>,
}

/// `PATCH /v1/products/{id}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[serde(default)]
    pub handle: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub brand: Option<String>,
    #[serde(default)]
    pub category_ids: Option<Vec<String>>,
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub variants: Option<Vec<VariantJson>>,
}

/// `POST /v1/categories`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<String>,
}

/// `PATCH /v1/categories/{id}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CategoryPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub parent_id: Option<Option<String>>,
}

/// `PUT /v1/inventory/{sku}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct InventorySet {
    pub on_hand: i64,
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/inventory/{sku}/adjustments`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct InventoryAdjustment {
    pub delta: i64,
    pub reason: String,
}

/// `POST /v1/inventory/{sku}/transfers`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct InventoryTransfer {
    pub from_location_id: String,
    pub to_location_id: String,
    pub quantity: i64,
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/locations`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewLocationJson {
    pub name: String,
    pub kind: String,
    pub priority: Option<i64>,
}

/// `PATCH /v1/locations/{id}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct LocationPatchJson {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub priority: Option<i64>,
}

/// `POST /v1/carts`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct NewCart {
    #[serde(default)]
    pub currency: Option<String>,
}

/// `POST /v1/carts/{id}/items`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CartItemAdd {
    pub sku: String,
    pub quantity: i64,
}

/// `PUT /v1/carts/{id}/items/{sku}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CartItemSet {
    pub quantity: i64,
}

/// A shipping address.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct AddressJson {
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: String,
    pub city: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub postal_code: String,
    pub country: String,
}

impl From<AddressJson> for Address {
    fn from(a: AddressJson) -> Address {
        Address {
            name: a.name,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            region: a.region,
            postal_code: a.postal_code,
            country: a.country,
        }
    }
}

impl From<&Address> for AddressJson {
    fn from(a: &Address) -> AddressJson {
        AddressJson {
            name: a.name.clone(),
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            region: a.region.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        }
    }
}

/// `POST /v1/carts/{id}/checkout`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CheckoutJson {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub shipping_address: Option<AddressJson>,
    #[serde(default)]
    pub shipping_address_id: Option<String>,
    #[serde(default)]
    pub shipping_method_id: Option<String>,
}

/// A shipping rate as the API writes it: `{type: "flat", amount}`, `{type:
/// "free_over", amount, threshold}` or `{type: "weight", bands: [{up_to_grams,
/// amount}]}`, in minor units of the method's currency.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RateJson {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bands: Option<Vec<BandJson>>,
}

/// A band of a weight-based rate.
#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct BandJson {
    pub up_to_grams: u32,
    pub amount: i64,
}

impl RateJson {
    /// The engine's rate, or which field is missing for the type.
    pub fn rate(&self) -> Result<ShippingRate, FieldError> {
        let need = |value: Option<i64>, field: &str| {
            value.ok_or_else(|| FieldError::new(format!("rate.{field}"), "required for this type"))
        };
        match self.kind.as_str() {
            "flat" => Ok(ShippingRate::Flat { amount: need(self.amount, "amount")? }),
            "free_over" => Ok(ShippingRate::FreeOver {
                amount: need(self.amount, "amount")?,
                threshold: need(self.threshold, "threshold")?,
            }),
            "weight" => {
                let bands = self
                    .bands
                    .as_ref()
                    .ok_or_else(|| FieldError::new("rate.bands", "required for this type"))?;
                let bands = bands
                    .iter()
                    .map(|b| WeightBand { up_to_grams: b.up_to_grams, amount: b.amount })
                    .collect();
                Ok(ShippingRate::ByWeight { bands })
            }
            _ => Err(FieldError::new("rate.type", "must be flat, free_over or weight")),
        }
    }
}

impl From<&ShippingRate> for RateJson {
    fn from(rate: &ShippingRate) -> RateJson {
        let json =
            |kind: &str| RateJson { kind: kind.into(), amount: None, threshold: None, bands: None };
        match rate {
            ShippingRate::Flat { amount } => RateJson { amount: Some(*amount), ..json("flat") },
            ShippingRate::FreeOver { amount, threshold } => {
                RateJson { amount: Some(*amount), threshold: Some(*threshold), ..json("free_over") }
            }
            ShippingRate::ByWeight { bands } => RateJson {
                bands: Some(
                    bands
                        .iter()
                        .map(|b| BandJson { up_to_grams: b.up_to_grams, amount: b.amount })
                        .collect(),
                ),
                ..json("weight")
            },
        }
    }
}

/// `POST /v1/shipping-methods`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewShippingMethodJson {
    pub name: String,
    pub currency: String,
    pub rate: RateJson,
    #[serde(default)]
    pub countries: Vec<String>,
}

/// `PATCH /v1/shipping-methods/{id}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ShippingMethodPatchJson {
    pub name: Option<String>,
    pub active: Option<bool>,
}

/// A shipping method.
#[derive(Serialize)]
pub struct ShippingMethodView<'a> {
    id: IdText,
    name: &'a str,
    currency: &'a str,
    rate: RateJson,
    countries: &'a [String],
    active: bool,
    created_at: String,
    updated_at: String,
}

impl<'a> From<&'a ShippingMethod> for ShippingMethodView<'a> {
    fn from(m: &'a ShippingMethod) -> ShippingMethodView<'a> {
        ShippingMethodView {
            id: m.id.text(),
            name: &m.name,
            currency: m.currency.as_str(),
            rate: RateJson::from(&m.rate),
            countries: &m.countries,
            active: m.active,
            created_at: rfc3339(m.created_at),
            updated_at: rfc3339(m.updated_at),
        }
    }
}

/// `PUT /v1/tax-rates/{zone}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct TaxRateJson {
    pub rate_bp: u32,
}

/// A zone's tax rate.
#[derive(Serialize)]
pub struct TaxRateView<'a> {
    zone: &'a str,
    rate_bp: u32,
    updated_at: String,
}

impl<'a> From<&'a TaxRate> for TaxRateView<'a> {
    fn from(t: &'a TaxRate) -> TaxRateView<'a> {
        TaxRateView { zone: &t.zone, rate_bp: t.rate_bp, updated_at: rfc3339(t.updated_at) }
    }
}

/// `PUT /v1/inventory/{sku}/weight`.
#[derive(Deserialize, Serialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct WeightJson {
    pub grams: u32,
}

/// `POST /v1/customers/me/addresses`, `PUT …/{id}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct SavedAddressJson {
    pub address: AddressJson,
    #[serde(default)]
    pub default_shipping: bool,
    #[serde(default)]
    pub default_billing: bool,
}

/// An address of the caller's book.
#[derive(Serialize)]
pub struct SavedAddressView {
    id: IdText,
    address: AddressJson,
    default_shipping: bool,
    default_billing: bool,
    created_at: String,
    updated_at: String,
}

impl From<&SavedAddress> for SavedAddressView {
    fn from(a: &SavedAddress) -> SavedAddressView {
        SavedAddressView {
            id: a.id.text(),
            address: AddressJson::from(&a.address),
            default_shipping: a.default_shipping,
            default_billing: a.default_billing,
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

/// `POST /v1/orders/{id}/payments`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub method: String,
    pub token: String,
}

/// `POST /v1/orders/{id}/payment-calls`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PaymentCallRequest {
    pub provider: String,
    pub method: String,
    pub token: String,
}

/// A payment call: the record of a payment through a provider.
#[derive(Serialize)]
pub struct PaymentCallView<'a> {
    id: IdText,
    order_id: IdText,
    kind: &'static str,
    provider: &'a str,
    method: &'a str,
    amount: MoneyJson,
    status: &'static str,
    reference: &'a str,
    card_brand: &'a str,
    message: &'a str,
    authorized_at: Option<String>,
    payment_id: Option<IdText>,
    reason: &'a str,
    refund_id: Option<IdText>,
    created_at: String,
    updated_at: String,
}

impl<'a> From<&'a PaymentCall> for PaymentCallView<'a> {
    fn from(c: &'a PaymentCall) -> PaymentCallView<'a> {
        PaymentCallView {
            id: c.id.text(),
            order_id: c.order_id.text(),
            kind: c.kind.as_str(),
            provider: &c.provider,
            method: &c.method,
            amount: c.amount.into(),
            status: c.status.as_str(),
            reference: &c.reference,
            card_brand: &c.card_brand,
            message: &c.message,
            authorized_at: c.authorized_at.map(rfc3339),
            payment_id: c.payment_id.map(|id| id.text()),
            reason: &c.reason,
            refund_id: c.refund_id.map(|id| id.text()),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

/// `POST /v1/orders/{id}/refunds` (an empty body refunds everything not yet refunded).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    pub amount: Option<MoneyJson>,
    pub reason: Option<String>,
}

/// `POST /v1/discount-codes`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewDiscountCodeJson {
    pub code: String,
    pub percent_off: Option<i64>,
    pub amount_off: Option<MoneyJson>,
    #[serde(default)]
    pub product_ids: Vec<String>,
    #[serde(default)]
    pub category_ids: Vec<String>,
    pub min_subtotal: Option<MoneyJson>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
    #[serde(default)]
    pub stackable: bool,
}

/// `PATCH /v1/discount-codes/{code}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct DiscountCodePatchJson {
    pub active: Option<bool>,
    pub ends_at: Option<String>,
    pub usage_limit: Option<i64>,
}

/// `POST /v1/promotions`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewPromotionJson {
    pub name: String,
    pub buy: i64,
    pub get: i64,
    #[serde(default)]
    pub product_ids: Vec<String>,
    #[serde(default)]
    pub category_ids: Vec<String>,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
}

/// `PATCH /v1/promotions/{id}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PromotionPatchJson {
    pub active: Option<bool>,
    pub ends_at: Option<String>,
}

/// An automatic promotion.
#[derive(Serialize)]
pub struct PromotionView<'a> {
    id: IdText,
    name: &'a str,
    buy: u32,
    get: u32,
    product_ids: Vec<IdText>,
    category_ids: Vec<IdText>,
    active: bool,
    starts_at: String,
    ends_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl<'a> From<&'a AutomaticPromotion> for PromotionView<'a> {
    fn from(p: &'a AutomaticPromotion) -> PromotionView<'a> {
        PromotionView {
            id: p.id.text(),
            name: &p.name,
            buy: p.buy,
            get: p.get,
            product_ids: p.product_ids.iter().map(|id| id.text()).collect(),
            category_ids: p.category_ids.iter().map(|id| id.text()).collect(),
            active: p.active,
            starts_at: rfc3339(p.starts_at),
            ends_at: p.ends_at.map(rfc3339),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

/// One line of `POST /v1/orders/{id}/returns`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ReturnItemJson {
    pub sku: String,
    pub quantity: i64,
}

/// `POST /v1/orders/{id}/returns`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewReturnJson {
    pub items: Vec<ReturnItemJson>,
    pub reason: String,
}

/// `POST /v1/returns/{id}/approve` and `/reject`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ReturnDecisionJson {
    pub note: Option<String>,
}

/// `POST /v1/returns/{id}/receive`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ReturnReceiptJson {
    #[serde(default)]
    pub not_restocked: Vec<String>,
}

/// `POST /v1/carts/{id}/discount-codes`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CartCodeJson {
    pub code: String,
}

// --- responses -----------------------------------------------------------------------

/// A discount code.
#[derive(Serialize)]
pub struct DiscountCodeView<'a> {
    code: &'a str,
    percent_off: Option<u32>,
    amount_off: Option<MoneyJson>,
    product_ids: Vec<IdText>,
    category_ids: Vec<IdText>,
    min_subtotal: Option<MoneyJson>,
    starts_at: String,
    ends_at: Option<String>,
    usage_limit: Option<u32>,
    per_customer_limit: Option<u32>,
    stackable: bool,
    active: bool,
    uses: u32,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl<'a> From<&'a DiscountCode> for DiscountCodeView<'a> {
    fn from(c: &'a DiscountCode) -> DiscountCodeView<'a> {
        let (percent_off, amount_off) = match c.value {
            DiscountValue::Percent(bp) => (Some(bp / 100), None),
            DiscountValue::Fixed(amount) => (None, Some(amount.into())),
        };
        DiscountCodeView {
            code: &c.code,
            percent_off,
            amount_off,
            product_ids: c.product_ids.iter().map(|p| p.text()).collect(),
            category_ids: c.category_ids.iter().map(|p| p.text()).collect(),
            min_subtotal: c.min_subtotal.map(Into::into),
            starts_at: rfc3339(c.starts_at),
            ends_at: c.ends_at.map(rfc3339),
            usage_limit: c.usage_limit,
            per_customer_limit: c.per_customer_limit,
            stackable: c.stackable,
            active: c.active,
            uses: c.uses,
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
            version: c.version,
        }
    }
}

#[derive(Serialize)]
pub struct VariantView<'a> {
    sku: &'a str,
    title: &'a str,
    options: &'a BTreeMap<String, String>,
    price: MoneyJson,
}

#[derive(Serialize)]
pub struct RatingView {
    average: f64,
    count: u32,
    sum: u64,
    stars: [u32; 5],
}

impl From<StarCounts> for RatingView {
    fn from(counts: StarCounts) -> RatingView {
        RatingView {
            average: counts.average(),
            count: counts.count(),
            sum: counts.sum(),
            stars: counts.stars,
        }
    }
}

/// A product.
#[derive(Serialize)]
pub struct ProductView<'a> {
    id: IdText,
    handle: &'a str,
    title: &'a str,
    description: &'a str,
    brand: &'a str,
    category_ids: Vec<IdText>,
    attributes: &'a BTreeMap<String, String>,
    status: &'static str,
    variants: Vec<VariantView<'a>>,
    rating: RatingView,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl<'a> ProductView<'a> {
    /// A product with its rating (its published reviews').
    pub fn new(p: &'a Product, rating: StarCounts) -> ProductView<'a> {
        ProductView {
            id: p.id.text(),
            handle: &p.handle,
            title: &p.title,
            description: &p.description,
            brand: &p.brand,
            category_ids: p.category_ids.iter().map(|c| c.text()).collect(),
            attributes: &p.attributes,
            status: p.status.as_str(),
            variants: p
                .variants
                .iter()
                .map(|v| VariantView {
                    sku: v.sku.as_str(),
                    title: &v.title,
                    options: &v.options,
                    price: v.price.into(),
                })
                .collect(),
            rating: RatingView::from(rating),
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            version: p.version,
        }
    }
}

/// A category.
#[derive(Serialize)]
pub struct CategoryView {
    id: String,
    name: String,
    parent_id: Option<String>,
    path: String,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl CategoryView {
    /// The category with its path from the root (`Clothing > Shirts`).
    pub fn new(category: &Category, state: &State) -> CategoryView {
        let path = state
            .category_path(&category.id)
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" > ");
        CategoryView {
            id: category.id.to_string(),
            name: category.name.clone(),
            parent_id: category.parent_id.as_ref().map(|p| p.to_string()),
            path,
            created_at: rfc3339(category.created_at),
            updated_at: rfc3339(category.updated_at),
            version: category.version,
        }
    }
}

/// A SKU's stock.
#[derive(Serialize)]
pub struct InventoryView<'a> {
    sku: &'a str,
    on_hand: u32,
    reserved: u32,
    available: u32,
    version: u64,
}

impl<'a> From<&'a StockLevels> for InventoryView<'a> {
    fn from(s: &'a StockLevels) -> InventoryView<'a> {
        InventoryView {
            sku: s.sku.as_str(),
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available(),
            version: s.version,
        }
    }
}

/// `POST /v1/products/{id}/reviews`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ReviewJson {
    pub rating: i64,
    pub title: String,
    #[serde(default)]
    pub body: String,
}

/// `POST /v1/reviews/{id}/publish` and `/reject`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ModerationJson {
    pub reason: Option<String>,
}

/// `GET|PUT /v1/admin/review-settings`.
#[derive(Deserialize, Serialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettingsJson {
    pub premoderation: bool,
    #[serde(default)]
    pub hold_words: Vec<String>,
}

impl From<&ReviewSettings> for ReviewSettingsJson {
    fn from(s: &ReviewSettings) -> ReviewSettingsJson {
        ReviewSettingsJson { premoderation: s.premoderation, hold_words: s.hold_words.clone() }
    }
}

/// A review.
#[derive(Serialize)]
pub struct ReviewView<'a> {
    id: IdText,
    product_id: IdText,
    author: &'a str,
    rating: u8,
    title: &'a str,
    body: &'a str,
    verified_purchase: bool,
    helpful: u32,
    status: &'static str,
    reason: Option<&'a str>,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl<'a> From<&'a Review> for ReviewView<'a> {
    fn from(r: &'a Review) -> ReviewView<'a> {
        ReviewView {
            id: r.id.text(),
            product_id: r.product_id.text(),
            author: &r.author,
            rating: r.rating,
            title: &r.title,
            body: &r.body,
            verified_purchase: r.verified_purchase,
            helpful: r.helpful,
            status: r.status.as_str(),
            reason: r.reason.as_deref(),
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            version: r.version,
        }
    }
}

/// A stock location.
#[derive(Serialize)]
pub struct LocationView<'a> {
    id: IdText,
    name: &'a str,
    kind: &'static str,
    priority: u32,
    default: bool,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl<'a> From<&'a StockLocation> for LocationView<'a> {
    fn from(l: &'a StockLocation) -> LocationView<'a> {
        LocationView {
            id: l.id.text(),
            name: &l.name,
            kind: l.kind.as_str(),
            priority: l.priority,
            default: l.id == LocationId::DEFAULT,
            created_at: rfc3339(l.created_at),
            updated_at: rfc3339(l.updated_at),
            version: l.version,
        }
    }
}

/// A SKU's level at one location.
#[derive(Serialize)]
pub struct LocationLevelView {
    location_id: IdText,
    on_hand: u32,
    reserved: u32,
    available: u32,
}

/// A SKU's totals and its level at every location.
#[derive(Serialize)]
pub struct InventoryByLocationView<'a> {
    #[serde(flatten)]
    totals: InventoryView<'a>,
    locations: Vec<LocationLevelView>,
}

impl<'a> InventoryByLocationView<'a> {
    pub fn new(totals: &'a StockLevels, levels: &[LocationLevel]) -> InventoryByLocationView<'a> {
        let locations = levels
            .iter()
            .map(|l| LocationLevelView {
                location_id: l.location_id.text(),
                on_hand: l.on_hand,
                reserved: l.reserved,
                available: l.available(),
            })
            .collect();
        InventoryByLocationView { totals: InventoryView::from(totals), locations }
    }
}

/// Units of an order at one location.
#[derive(Serialize)]
pub struct StockSourceView<'a> {
    pub sku: &'a str,
    pub location_id: IdText,
    pub quantity: u32,
}

/// Where an order's units are reserved, or left from.
#[derive(Serialize)]
pub struct OrderStockSourcesView<'a> {
    pub order_id: IdText,
    pub status: &'static str,
    pub items: Option<&'a [StockSourceView<'a>]>,
}

/// A cart or order line.
#[derive(Serialize)]
pub struct LineView<'a> {
    sku: &'a str,
    product_id: Option<IdText>,
    title: &'a str,
    quantity: u32,
    unit_price: MoneyJson,
    line_total: MoneyJson,
    /// What the cart's discount codes take off the line (cart lines only).
    #[serde(skip_serializing_if = "Option::is_none")]
    discount: Option<MoneyJson>,
}

/// How a discount code on a cart prices.
#[derive(Serialize)]
pub struct CartCodeView<'a> {
    code: &'a str,
    amount: MoneyJson,
    applies: bool,
    reason: Option<&'a str>,
}

/// A cart with current prices.
#[derive(Serialize)]
pub struct CartView<'a> {
    id: IdText,
    customer_id: Option<IdText>,
    currency: &'a str,
    status: &'static str,
    order_id: Option<IdText>,
    items: Vec<LineView<'a>>,
    discounts: Vec<CartCodeView<'a>>,
    subtotal: MoneyJson,
    discount_total: MoneyJson,
    total: MoneyJson,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl<'a> From<&'a PricedCart> for CartView<'a> {
    fn from(p: &'a PricedCart) -> CartView<'a> {
        let cart = &p.cart;
        let (status, order_id) = match &cart.status {
            CartStatus::Open => ("open", None),
            CartStatus::CheckedOut(order) => ("checked_out", Some(order.text())),
        };
        CartView {
            id: cart.id.text(),
            customer_id: cart.customer_id.as_ref().map(|c| c.text()),
            currency: cart.currency.as_str(),
            status,
            order_id,
            items: p
                .lines
                .iter()
                .map(|l| LineView {
                    sku: l.sku.as_str(),
                    product_id: l.product_id.as_ref().map(|p| p.text()),
                    title: &l.title,
                    quantity: l.quantity,
                    unit_price: l.unit_price.into(),
                    line_total: l.line_total.into(),
                    discount: Some(l.discount.into()),
                })
                .collect(),
            discounts: p
                .codes
                .iter()
                .map(|c| CartCodeView {
                    code: &c.code,
                    amount: Money::new(c.amount, cart.currency)
                        .unwrap_or(Money::zero(cart.currency))
                        .into(),
                    applies: c.refusal.is_none(),
                    reason: c.refusal.as_deref(),
                })
                .collect(),
            subtotal: p.subtotal.into(),
            discount_total: p.discount_total.into(),
            total: p.total.into(),
            created_at: rfc3339(cart.created_at),
            updated_at: rfc3339(cart.updated_at),
            version: cart.version,
        }
    }
}

/// A captured payment.
#[derive(Serialize)]
pub struct PaymentView<'a> {
    id: IdText,
    order_id: IdText,
    method: &'a str,
    card_brand: &'a str,
    amount: MoneyJson,
    status: &'static str,
    created_at: String,
}

impl<'a> PaymentView<'a> {
    /// The payment of `order`.
    pub fn new(payment: &'a Payment, order: &'a Order) -> PaymentView<'a> {
        PaymentView {
            id: payment.id.text(),
            order_id: order.id.text(),
            method: &payment.method,
            card_brand: &payment.card_brand,
            amount: payment.amount.into(),
            status: "captured",
            created_at: rfc3339(payment.created_at),
        }
    }
}

/// A payment with the order it paid.
#[derive(Serialize)]
pub struct PaymentReceiptView<'a> {
    #[serde(flatten)]
    payment: PaymentView<'a>,
    order: OrderView<'a>,
}

impl<'a> PaymentReceiptView<'a> {
    /// A payment with its order.
    pub fn new(state: &State, r: &'a PaymentReceipt) -> PaymentReceiptView<'a> {
        PaymentReceiptView {
            payment: PaymentView::new(&r.payment, &r.order),
            order: OrderView::of(state, &r.order),
        }
    }
}

/// A refund with the order it refunded.
#[derive(Serialize)]
pub struct RefundReceiptView<'a> {
    id: IdText,
    order_id: IdText,
    amount: MoneyJson,
    reason: &'a str,
    provider_reference: &'a str,
    created_at: String,
    order: OrderView<'a>,
}

impl<'a> RefundReceiptView<'a> {
    /// A refund with its order.
    pub fn new(state: &State, r: &'a RefundReceipt) -> RefundReceiptView<'a> {
        RefundReceiptView {
            id: r.refund.id.text(),
            order_id: r.refund.order_id.text(),
            amount: r.refund.amount.into(),
            reason: &r.refund.reason,
            provider_reference: &r.refund.provider_reference,
            created_at: rfc3339(r.refund.created_at),
            order: OrderView::of(state, &r.order),
        }
    }
}

/// A return's line.
#[derive(Serialize)]
pub struct ReturnLineView<'a> {
    sku: &'a str,
    quantity: u32,
    amount: MoneyJson,
    restocked: bool,
}

/// A return.
#[derive(Serialize)]
pub struct ReturnView<'a> {
    id: IdText,
    order_id: IdText,
    status: &'static str,
    items: Vec<ReturnLineView<'a>>,
    amount: MoneyJson,
    reason: &'a str,
    note: &'a str,
    refund_id: Option<IdText>,
    refunded: MoneyJson,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl<'a> ReturnView<'a> {
    /// A return, with what its receipt refunded (read from its order's refunds).
    pub fn new(state: &State, r: &'a Return) -> ReturnView<'a> {
        let currency = state.order(&r.order_id).map_or(Currency::USD, |o| o.currency());
        let refunded = r.refund_id.and_then(|id| {
            state.refunds(&r.order_id).iter().find(|f| f.id == id).map(|f| f.amount.amount())
        });
        let money = |amount: i64| {
            MoneyJson::from(Money::new(amount, currency).unwrap_or(Money::zero(currency)))
        };
        ReturnView {
            id: r.id.text(),
            order_id: r.order_id.text(),
            status: r.status.as_str(),
            items: r
                .lines
                .iter()
                .map(|l| ReturnLineView {
                    sku: l.sku.as_str(),
                    quantity: l.quantity,
                    amount: money(l.amount),
                    restocked: l.restocked,
                })
                .collect(),
            amount: money(r.amount()),
            reason: &r.reason,
            note: &r.note,
            refund_id: r.refund_id.map(|id| id.text()),
            refunded: money(refunded.unwrap_or(0)),
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            version: r.version,
        }
    }
}

/// A return with its order.
#[derive(Serialize)]
pub struct ReturnOutcomeView<'a> {
    #[serde(flatten)]
    r#return: ReturnView<'a>,
    order: OrderView<'a>,
}

impl<'a> ReturnOutcomeView<'a> {
    /// A return with its order.
    pub fn new(state: &State, o: &'a ReturnOutcome) -> ReturnOutcomeView<'a> {
        ReturnOutcomeView {
            r#return: ReturnView::new(state, &o.r#return),
            order: OrderView::of(state, &o.order),
        }
    }
}

/// One entry of an order's ledger.
#[derive(Serialize)]
pub struct TransactionView<'a> {
    id: &'a str,
    kind: &'static str,
    amount: MoneyJson,
    provider_reference: &'a str,
    reason: Option<&'a str>,
    created_at: String,
}

/// An order's ledger.
#[derive(Serialize)]
pub struct LedgerView<'a> {
    order_id: IdText,
    currency: String,
    captured: MoneyJson,
    refunded: MoneyJson,
    balance: MoneyJson,
    data: Vec<TransactionView<'a>>,
}

impl<'a> LedgerView<'a> {
    /// The ledger of `order`.
    pub fn new(order: &'a Order, ledger: &'a Ledger) -> LedgerView<'a> {
        LedgerView {
            order_id: order.id.text(),
            currency: order.total.currency().as_str().to_string(),
            captured: ledger.captured.into(),
            refunded: ledger.refunded.into(),
            balance: ledger.balance().into(),
            data: ledger
                .entries
                .iter()
                .map(|e| TransactionView {
                    id: &e.id,
                    kind: e.kind.as_str(),
                    amount: e.amount.into(),
                    provider_reference: &e.provider_reference,
                    reason: matches!(e.kind, LedgerKind::Refund | LedgerKind::Void)
                        .then_some(e.reason.as_str()),
                    created_at: rfc3339(e.created_at),
                })
                .collect(),
        }
    }
}

/// An order.
#[derive(Serialize)]
pub struct OrderView<'a> {
    id: IdText,
    customer_id: Option<IdText>,
    email: &'a str,
    status: &'static str,
    items: Vec<LineView<'a>>,
    subtotal: MoneyJson,
    discount_total: MoneyJson,
    shipping_total: MoneyJson,
    tax_total: MoneyJson,
    total: MoneyJson,
    currency: String,
    reservation_expires_at: String,
    payments: Vec<PaymentView<'a>>,
    shipping_address: Option<AddressJson>,
    shipping_method: Option<ShippingChoiceJson>,
    created_at: String,
    updated_at: String,
    version: u64,
}

/// The shipping method an order was placed with.
#[derive(Serialize)]
pub struct ShippingChoiceJson {
    id: IdText,
    name: String,
}

/// An order's shipping and tax, in its currency, and the method chosen.
fn order_charges(
    order: &Order,
    charges: Option<&OrderCharges>,
) -> (Money, Money, Option<ShippingChoiceJson>) {
    let currency = order.currency();
    let money = |amount: i64| Money::new(amount, currency).unwrap_or(Money::zero(currency));
    match charges {
        None => (Money::zero(currency), Money::zero(currency), None),
        Some(c) => (
            money(c.shipping),
            money(c.tax()),
            c.method_id.map(|id| ShippingChoiceJson { id: id.text(), name: c.method_name.clone() }),
        ),
    }
}

impl<'a> OrderView<'a> {
    /// The order as the API shows it, read with its charges from `state`.
    pub fn of(state: &State, o: &'a Order) -> OrderView<'a> {
        OrderView::new(o, state.order_charges(&o.id).as_deref())
    }

    /// The order with what it was charged for shipping and tax.
    pub fn new(o: &'a Order, charges: Option<&OrderCharges>) -> OrderView<'a> {
        let (shipping_total, tax_total, shipping_method) = order_charges(o, charges);
        OrderView {
            id: o.id.text(),
            customer_id: o.customer_id.as_ref().map(|c| c.text()),
            email: &o.email,
            status: o.status.as_str(),
            items: o
                .lines
                .iter()
                .map(|l| LineView {
                    sku: l.sku.as_str(),
                    product_id: Some(l.product_id.text()),
                    title: &l.title,
                    quantity: l.quantity,
                    unit_price: l.unit_price.into(),
                    line_total: l.line_total.into(),
                    discount: None,
                })
                .collect(),
            subtotal: o.subtotal.into(),
            discount_total: o.discount_total.into(),
            shipping_total: shipping_total.into(),
            tax_total: tax_total.into(),
            total: o.total.into(),
            currency: o.total.currency().as_str().to_string(),
            reservation_expires_at: rfc3339(o.reservation_expires_at),
            payments: o.payments.iter().map(|p| PaymentView::new(p, o)).collect(),
            shipping_address: o.shipping_address.as_deref().map(AddressJson::from),
            shipping_method,
            created_at: rfc3339(o.created_at),
            updated_at: rfc3339(o.updated_at),
            version: o.version,
        }
    }
}

/// An order's `Location`: `/v1/orders/{id}`.
pub fn order_location(id: &OrderId) -> String {
    ["/v1/orders/", id.text().as_str()].concat()
}

/// An order's JSON written straight into a buffer: the same bytes as serializing
/// [`OrderView`], without building the view, its line views or its timestamp strings
/// (a flash-sale purchase's answer, on the hottest path). Payments and a shipping
/// address, which a new purchase has not, go through their views.
pub fn order_json(order: &Order, charges: Option<&OrderCharges>) -> Vec<u8> {
    // A one-line order without payments or address is about 800 bytes of JSON, past
    // the 768 this once made room for: the buffer was copied into a larger one halfway.
    let mut out = Vec::with_capacity(1024 + 256 * order.lines.len());
    let out = &mut out;
    use write_json_str as text;
    fn money(out: &mut Vec<u8>, money: Money) {
        out.extend_from_slice(b"{\"amount\":");
        write_json_int(out, money.amount());
        // Three ASCII letters (a currency is validated when made): nothing to escape.
        out.extend_from_slice(b",\"currency\":\"");
        out.extend_from_slice(money.currency().as_str().as_bytes());
        out.extend_from_slice(b"\"}");
    }
    fn time(out: &mut Vec<u8>, ms: i64) {
        out.push(b'"');
        write_rfc3339(out, ms);
        out.push(b'"');
    }
    out.extend_from_slice(b"{\"id\":");
    text(out, &order.id.text());
    out.extend_from_slice(b",\"customer_id\":");
    match &order.customer_id {
        Some(customer) => text(out, &customer.text()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"email\":");
    text(out, &order.email);
    out.extend_from_slice(b",\"status\":");
    text(out, order.status.as_str());
    out.extend_from_slice(b",\"items\":[");
    for (i, line) in order.lines.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"sku\":");
        text(out, line.sku.as_str());
        out.extend_from_slice(b",\"product_id\":");
        text(out, &line.product_id.text());
        out.extend_from_slice(b",\"title\":");
        text(out, &line.title);
        out.extend_from_slice(b",\"quantity\":");
        write_json_int(out, line.quantity);
        out.extend_from_slice(b",\"unit_price\":");
        money(out, line.unit_price);
        out.extend_from_slice(b",\"line_total\":");
        money(out, line.line_total);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"subtotal\":");
    money(out, order.subtotal);
    out.extend_from_slice(b",\"discount_total\":");
    money(out, order.discount_total);
    let (shipping_total, tax_total, shipping_method) = order_charges(order, charges);
    out.extend_from_slice(b",\"shipping_total\":");
    money(out, shipping_total);
    out.extend_from_slice(b",\"tax_total\":");
    money(out, tax_total);
    out.extend_from_slice(b",\"total\":");
    money(out, order.total);
    out.extend_from_slice(b",\"currency\":\"");
    out.extend_from_slice(order.total.currency().as_str().as_bytes());
    out.extend_from_slice(b"\",\"reservation_expires_at\":");
    time(out, order.reservation_expires_at);
    // A new order has no payments, no address and no method: written as they are.
    out.extend_from_slice(b",\"payments\":");
    if order.payments.is_empty() {
        out.extend_from_slice(b"[]");
    } else {
        let payments: Vec<PaymentView<'_>> =
            order.payments.iter().map(|p| PaymentView::new(p, order)).collect();
        serde_json::to_writer(&mut *out, &payments).expect("writing to a Vec cannot fail");
    }
    out.extend_from_slice(b",\"shipping_address\":");
    match order.shipping_address.as_deref() {
        None => out.extend_from_slice(b"null"),
        Some(address) => serde_json::to_writer(&mut *out, &AddressJson::from(address))
            .expect("writing to a Vec cannot fail"),
    }
    out.extend_from_slice(b",\"shipping_method\":");
    match shipping_method {
        None => out.extend_from_slice(b"null"),
        Some(method) => {
            serde_json::to_writer(&mut *out, &method).expect("writing to a Vec cannot fail")
        }
    }
    out.extend_from_slice(b",\"created_at\":");
    let created = out.len();
    time(out, order.created_at);
    let created = created..out.len();
    out.extend_from_slice(b",\"updated_at\":");
    // Most often the same instant (a new order): its text copied, not made again.
    if order.updated_at == order.created_at {
        out.extend_from_within(created);
    } else {
        time(out, order.updated_at);
    }
    out.extend_from_slice(b",\"version\":");
    write_json_int(out, order.version);
    out.push(b'}');
    std::mem::take(out)
}

/// An account.
#[derive(Serialize)]
pub struct CustomerView<'a> {
    id: IdText,
    email: &'a str,
    name: &'a str,
    role: &'static str,
    created_at: String,
}

impl<'a> From<&'a Customer> for CustomerView<'a> {
    fn from(c: &'a Customer) -> CustomerView<'a> {
        CustomerView {
            id: c.id.text(),
            email: &c.email,
            name: &c.name,
            role: c.role.as_str(),
            created_at: rfc3339(c.created_at),
        }
    }
}

/// A new flash sale.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewFlashSaleJson {
    /// The SKU.
    pub sku: String,
    /// The sale price.
    pub price: MoneyJson,
    /// Units allocated.
    pub quantity: i64,
    /// Units per customer.
    pub per_customer_limit: i64,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
    /// Seconds a purchase holds its units unpaid.
    pub reservation_ttl_s: Option<i64>,
}

/// A purchase in a flash sale.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PurchaseJson {
    /// Units (1 when absent).
    #[serde(default = "one")]
    pub quantity: i64,
}

fn one() -> i64 {
    1
}

impl Default for PurchaseJson {
    fn default() -> PurchaseJson {
        PurchaseJson { quantity: 1 }
    }
}

/// A flash sale, with its status at the time of the answer.
#[derive(Serialize)]
pub struct FlashSaleView<'a> {
    id: IdText,
    sku: &'a str,
    product_id: IdText,
    title: &'a str,
    price: MoneyJson,
    quantity: u32,
    per_customer_limit: u32,
    starts_at: String,
    ends_at: String,
    reservation_ttl_s: i64,
    status: &'static str,
    remaining: u32,
    reserved: u32,
    sold: u32,
    created_at: String,
    updated_at: String,
    version: u64,
}

impl<'a> FlashSaleView<'a> {
    /// The view of `sale` at `now`.
    pub fn new(sale: &'a FlashSale, now: i64) -> FlashSaleView<'a> {
        FlashSaleView {
            id: sale.id.text(),
            sku: sale.sku.as_str(),
            product_id: sale.product_id.text(),
            title: &sale.title,
            price: sale.price.into(),
            quantity: sale.quantity,
            per_customer_limit: sale.per_customer_limit,
            starts_at: rfc3339(sale.starts_at),
            ends_at: rfc3339(sale.ends_at),
            reservation_ttl_s: sale.reservation_ttl_ms.div_euclid(1000).max(1),
            status: sale.status(now).as_str(),
            remaining: sale.remaining,
            reserved: sale.reserved,
            sold: sale.sold,
            created_at: rfc3339(sale.created_at),
            updated_at: rfc3339(sale.updated_at),
            version: sale.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        // Each character JSON escapes, and its neighbours on either side of the bit
        // trick's limits, at every position of strings shorter and longer than a word.
        let specials = ['"', '\\', '\u{0}', '\u{1f}', ' ', '!', '#', '[', ']', '\u{7f}', 'é', '\n'];
        for len in 0..20 {
            for at in 0..len.max(1) {
                for special in specials {
                    let text: String = (0..len)
                        .map(|i| if i == at { special } else { char::from(b'a' + i as u8) })
                        .collect();
                    let mut out = Vec::new();
                    write_json_str(&mut out, &text);
                    assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
                }
            }
        }
        let mut hex = String::new();
        push_hex(&mut hex, 0x0123_4567_89ab_cdef_u128 << 64 | 0xfe, 32);
        assert_eq!(hex, format!("{:032x}", 0x0123_4567_89ab_cdef_u128 << 64 | 0xfe));
        // The low digits only, zero-padded, appended to what is there.
        push_hex(&mut hex, u128::MAX << 64 | 0xab, 16);
        assert_eq!(&hex[32..], "00000000000000ab");
        let mut out = Vec::new();
        write_json_int(&mut out, -1234567890123_i64);
        assert_eq!(out, b"-1234567890123");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn timestamps_read_back_as_the_same_instant() {
        // Steps of an odd number of milliseconds visit every field's values from 1900
        // to the end of 9999.
        let mut ms = -2_208_988_800_000_i64;
        while ms < 253_402_300_800_000 {
            let text = rfc3339(ms);
            assert_eq!(parse_rfc3339(&text), Ok(ms), "{text}");
            ms += 7_777_777_777;
        }
        // Past four digits of year, the formatter writes them all.
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
    }

    fn order(payments: usize, address: bool) -> Order {
        let usd = Currency::USD;
        let price = |amount| Money::new(amount, usd).unwrap();
        Order {
            id: OrderId::from_random(7),
            seq: 3,
            cart_id: CartId::from_random(8),
            customer_id: (payments == 0).then(|| CustomerId::from_seq(5)),
            email: "ann+\"quoted\"@example.com".into(),
            shipping_address: address.then(|| {
                Arc::new(Address {
                    name: "Ann Ö".into(),
                    line1: "1 Main St\n".into(),
                    country: "DE".into(),
                    ..Address::default()
                })
            }),
            status: OrderStatus::PendingPayment,
            lines: vec![
                OrderLine {
                    sku: Sku::new("A-1").unwrap(),
                    product_id: ProductId::from_seq(1),
                    title: "T-shirt \"Ünïcode\" \\ tab\t".into(),
                    quantity: 2,
                    unit_price: price(1999),
                    line_total: price(3998),
                },
                OrderLine {
                    sku: Sku::new("B-2").unwrap(),
                    product_id: ProductId::from_seq(2),
                    title: String::new(),
                    quantity: 1,
                    unit_price: price(0),
                    line_total: price(0),
                },
            ],
            subtotal: price(3998),
            discount_total: price(0),
            total: price(3998),
            reservation_expires_at: 1_767_225_600_999,
            payments: (0..payments)
                .map(|n| Payment {
                    id: PaymentId::from_random(n as u128),
                    method: "test_card".into(),
                    card_brand: "visa".into(),
                    amount: price(3998),
                    created_at: 1_767_225_601_000,
                })
                .collect(),
            created_at: -1,
            updated_at: 1_767_225_600_000,
            version: u64::MAX,
        }
    }

    #[test]
    fn the_direct_order_writer_writes_what_the_view_serializes() {
        for (payments, address) in [(0, false), (0, true), (1, false), (2, true)] {
            let mut order = order(payments, address);
            // A new order's two times are one instant, whose text is copied.
            if payments == 0 && !address {
                order.updated_at = order.created_at;
            }
            let charges = OrderCharges {
                order_id: order.id,
                method_id: Some(ShippingMethodId::from_seq(3)),
                method_name: "Express \"24h\"".into(),
                shipping: 499,
                tax_zone: "US-CA".into(),
                tax_rate_bp: 725,
                line_taxes: vec![7, 8],
            };
            // With and without charges, with and without an address (each pairing).
            let charges = (payments == 1 || (payments == 0 && address)).then_some(&charges);
            let view = serde_json::to_vec(&OrderView::new(&order, charges)).unwrap();
            assert_eq!(
                String::from_utf8(order_json(&order, charges)).unwrap(),
                String::from_utf8(view).unwrap(),
                "{payments} payments, address {address}"
            );
        }
    }
}
