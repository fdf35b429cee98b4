//! Newtypes for the values that must not be mixed up: SKUs, money, ids, log positions.
//! Each constructor validates, so a value of these types is always well-formed.

use std::fmt;

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::FieldError;
pub use crate::ids::*;

/// Milliseconds since the Unix epoch, UTC. The domain never reads a clock: every
/// timestamp comes in with the command.
pub type TimestampMs = i64;

/// A log sequence number: the position of a command's events in the log. Contiguous,
/// starting at 1.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The longest SKU.
pub const SKU_BYTES_MAX: usize = 64;

/// A stock keeping unit chosen by staff: 1–64 characters of `[A-Za-z0-9._-]`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sku(String);

impl Sku {
    /// Validates `value` as a SKU.
    pub fn new(value: impl Into<String>) -> Result<Sku, FieldError> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= SKU_BYTES_MAX
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Sku(value))
        } else {
            Err(FieldError::new("sku", "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'"))
        }
    }

    /// The SKU as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Sku {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// ISO 4217 codes of the currencies in use.
const ISO_4217: &str =
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB \
BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR \
FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES \
KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR \
MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR \
SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH \
UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL";

/// Whether `code` is one of [`ISO_4217`]: a binary search of its sorted, four-byte
/// entries. Every price of every request is checked, so a scan of the list (a
/// microsecond) was a fifth of a `CreateProduct`.
fn is_iso_4217(code: &[u8; 3]) -> bool {
    let table = ISO_4217.as_bytes();
    let entry = |i: usize| &table[4 * i..4 * i + 3];
    let (mut low, mut high) = (0, table.len().div_ceil(4));
    while low < high {
        let middle = low + (high - low) / 2;
        match entry(middle).cmp(code.as_slice()) {
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// An ISO 4217 currency code.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(PartialEq, Eq, PartialOrd, Ord))]
pub struct Currency([u8; 3]);

impl Currency {
    /// US dollars.
    pub const USD: Currency = Currency(*b"USD");
    /// Euros.
    pub const EUR: Currency = Currency(*b"EUR");

    /// Validates `code` as an ISO 4217 currency code in use.
    pub fn new(code: &str) -> Result<Currency, FieldError> {
        match <[u8; 3]>::try_from(code.as_bytes()) {
            Ok(bytes) if is_iso_4217(&bytes) => Ok(Currency(bytes)),
            _ => Err(FieldError::new("currency", "must be an ISO 4217 currency code such as USD")),
        }
    }

    /// Every code [`Currency::new`] accepts, in alphabetical order.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        ISO_4217.split(' ')
    }

    /// The three-letter code.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("validated ASCII")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The largest amount of money one price or total may carry, in minor units.
pub const MONEY_AMOUNT_MAX: i64 = 1_000_000_000_000_000;

/// An amount of money: integer minor units (cents) and a currency. Never a float.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    amount: i64,
    currency: Currency,
}

impl Money {
    /// A non-negative amount of at most [`MONEY_AMOUNT_MAX`] minor units.
    pub fn new(amount: i64, currency: Currency) -> Result<Money, FieldError> {
        if (0..=MONEY_AMOUNT_MAX).contains(&amount) {
            Ok(Money { amount, currency })
        } else {
            Err(FieldError::new("amount", "must be between 0 and 10^15 minor units"))
        }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        Money { amount: 0, currency }
    }

    /// The amount in minor units.
    pub fn amount(&self) -> i64 {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// `self × quantity`, or `None` past the limit.
    pub fn times(&self, quantity: u32) -> Option<Money> {
        let amount = self.amount.checked_mul(i64::from(quantity))?;
        Money::new(amount, self.currency).ok()
    }

    /// `self + other`, or `None` on a currency mismatch or past the limit.
    pub fn plus(&self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Money::new(self.amount.checked_add(other.amount)?, self.currency).ok()
    }
}

/// An rkyv wrapper that archives an `Arc<T>` exactly as a `Box<T>` is archived (a
/// relative pointer to the archived `T`), so that an event or row that held a `Box`
/// can hold a pointer shared with the tables without moving any stored format.
/// (`rkyv::with::Unshare` archives the `T` inline instead.) Reading back makes a new
/// `Arc`.
#[derive(Debug)]
pub struct ArcAsBox;

impl<T: Archive> rkyv::with::ArchiveWith<std::sync::Arc<T>> for ArcAsBox {
    type Archived = rkyv::boxed::ArchivedBox<T::Archived>;
    type Resolver = rkyv::boxed::BoxResolver;

    fn resolve_with(
        field: &std::sync::Arc<T>,
        resolver: Self::Resolver,
        out: rkyv::Place<Self::Archived>,
    ) {
        rkyv::boxed::ArchivedBox::resolve_from_ref(&**field, resolver, out);
    }
}

impl<T, S> rkyv::with::SerializeWith<std::sync::Arc<T>, S> for ArcAsBox
where
    T: Archive + rkyv::SerializeUnsized<S>,
    S: rkyv::rancor::Fallible + ?Sized,
{
    fn serialize_with(
        field: &std::sync::Arc<T>,
        serializer: &mut S,
    ) -> Result<Self::Resolver, S::Error> {
        rkyv::boxed::ArchivedBox::serialize_from_ref(&**field, serializer)
    }
}

impl<T, D> rkyv::with::DeserializeWith<rkyv::boxed::ArchivedBox<T::Archived>, std::sync::Arc<T>, D>
    for ArcAsBox
where
    T: Archive,
    T::Archived: Deserialize<T, D>,
    D: rkyv::rancor::Fallible + ?Sized,
{
    fn deserialize_with(
        field: &rkyv::boxed::ArchivedBox<T::Archived>,
        deserializer: &mut D,
    ) -> Result<std::sync::Arc<T>, D::Error> {
        Ok(std::sync::Arc::new(field.get().deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_rules() {
        for ok in ["A", "TSHIRT-M", "a.b_c-9", &"x".repeat(64)] {
            assert!(Sku::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "ü", "a/b", &"x".repeat(65)] {
            assert!(Sku::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currency_rules() {
        assert_eq!(Currency::new("EUR").unwrap(), Currency::EUR);
        for bad in ["usd", "XXX", "US", "USDD", "", "AAA", "ZZZ", "ZWM", "AED ", " AED", "ED "] {
            assert!(Currency::new(bad).is_err(), "{bad}");
        }
    }

    /// The binary search needs the list sorted, one space between three-letter codes;
    /// every code of the list, first and last included, is accepted.
    #[test]
    fn every_listed_currency_is_found() {
        let codes: Vec<&str> = Currency::codes().collect();
        assert!(codes.windows(2).all(|pair| pair[0] < pair[1]), "ISO_4217 must stay sorted");
        for code in &codes {
            assert!(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()), "{code:?}");
            assert_eq!(Currency::new(code).expect(code).as_str(), *code);
        }
        assert_eq!(codes.len(), 155);
    }

    #[test]
    fn money_arithmetic_is_checked() {
        let price = Money::new(1999, Currency::USD).unwrap();
        assert_eq!(price.times(3).unwrap().amount(), 5997);
        assert!(Money::new(-1, Currency::USD).is_err());
        assert!(Money::new(MONEY_AMOUNT_MAX, Currency::USD).unwrap().times(2).is_none());
        assert!(price.plus(Money::zero(Currency::EUR)).is_none());
    }
}
