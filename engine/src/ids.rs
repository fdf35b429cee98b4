//! Entity ids: compact numbers inside the engine, prefixed base-36 text at the edge.
//!
//! Ids that must be unguessable (carts, orders, payments, API clients) carry 128 random
//! bits, written as 25 base-36 digits; the others count up and are written as 12
//! zero-padded digits, so their text sorts as their number does. Inside the engine an
//! id is that number: `Copy`, hashed and compared as an integer, never a heap string.
//! Its text is made only where it leaves the engine (JSON, storage keys) by
//! [`text`](OrderId::text), on the stack.
//!
//! Stored rows and log entries hold an id as its text (an rkyv string), exactly as they
//! did when ids were strings in memory, so every format written before decodes
//! unchanged; a stored id that is not well-formed fails the row's decoding.

use std::fmt;
use std::ops::Deref;

use rkyv::rancor::{Fallible, Source};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::{Archive, Deserialize, Place, Serialize, SerializeUnsized};

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Digits of a sequential id.
const SEQ_DIGITS: usize = 12;
/// Digits of a random id: 36^25 > 2^128.
const RANDOM_DIGITS: usize = 25;
/// The longest id text: `fsale_` and 25 digits fit.
const TEXT_MAX: usize = 32;

/// The two base-36 digits of every number below 36², in order.
const DIGIT_PAIRS: [[u8; 2]; 36 * 36] = {
    let mut pairs = [[0u8; 2]; 36 * 36];
    let mut n = 0;
    while n < 36 * 36 {
        pairs[n] = [DIGITS[n / 36], DIGITS[n % 36]];
        n += 1;
    }
    pairs
};

/// Six base-36 digits: the most a `u32` holds whole (36^6 < 2^32).
const HALF_GROUP: u64 = 36u64.pow(6);

/// `group` (below 36^12) as twelve base-36 digits: two halves of six, each written two
/// digits at a time from [`DIGIT_PAIRS`] with 32-bit arithmetic. A digit at a time,
/// with 64-bit divisions, a random id's 25 digits took about 380 instructions, and the
/// ids of one purchase are written about thirty times (its log entry, its rows, its
/// answer).
fn twelve_digits(group: u64) -> [u8; 12] {
    debug_assert!(group < HALF_GROUP * HALF_GROUP);
    let mut out = [0u8; 12];
    for (half, mut n) in [(0, (group / HALF_GROUP) as u32), (6, (group % HALF_GROUP) as u32)] {
        for at in [half + 4, half + 2, half] {
            out[at..at + 2].copy_from_slice(&DIGIT_PAIRS[(n % (36 * 36)) as usize]);
            n /= 36 * 36;
        }
    }
    out
}

/// An id's text (`ord_…`), made on the stack.
#[derive(Clone, Copy)]
pub struct IdText {
    len: u8,
    bytes: [u8; TEXT_MAX],
}

impl IdText {
    fn new(prefix: &str) -> IdText {
        let mut text = IdText { len: 0, bytes: [0; TEXT_MAX] };
        text.bytes[..prefix.len()].copy_from_slice(prefix.as_bytes());
        text.len = prefix.len() as u8;
        text
    }

    /// Appends `n` in exactly `width` (at most 36) base-36 digits: in groups of twelve
    /// from the right, each the remainder of one division of `n` (a `u128` division,
    /// a library call, only while `n` is wider than 64 bits), written by
    /// [`twelve_digits`].
    fn push_digits(&mut self, mut n: u128, width: usize) {
        const GROUP: u64 = 36u64.pow(SEQ_DIGITS as u32);
        let start = usize::from(self.len);
        let end = start + width;
        let mut at = end;
        while at > start {
            let digits = (at - start).min(SEQ_DIGITS);
            let group = match u64::try_from(n) {
                Ok(small) => {
                    n = u128::from(small / GROUP);
                    small % GROUP
                }
                Err(_) => {
                    let quotient = n / u128::from(GROUP);
                    let group = (n - quotient * u128::from(GROUP)) as u64;
                    n = quotient;
                    group
                }
            };
            debug_assert!(
                digits == SEQ_DIGITS || group < 36u64.pow(digits as u32),
                "value wider than {width} base-36 digits"
            );
            self.bytes[at - digits..at]
                .copy_from_slice(&twelve_digits(group)[SEQ_DIGITS - digits..]);
            at -= digits;
        }
        debug_assert_eq!(n, 0, "value wider than {width} base-36 digits");
        self.len = end as u8;
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        let text = &self.bytes[..usize::from(self.len)];
        debug_assert!(std::str::from_utf8(text).is_ok());
        // SAFETY: the first `len` bytes are only ever written by `new` (a whole `&str`,
        // the prefix) and then by `push_digits` (ASCII bytes of `DIGITS`): valid UTF-8.
        // Checking it again was 1-3% of the instructions of every thread that writes
        // ids (stored rows, log entries, JSON answers).
        unsafe { std::str::from_utf8_unchecked(text) }
    }
}

impl Deref for IdText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Written as a JSON string (or the serializer's string).
impl serde::Serialize for IdText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Debug for IdText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `digits` as a base-36 number, or `None` past `u128` or on a character that is not a
/// lowercase base-36 digit.
fn read_base36(digits: &[u8]) -> Option<u128> {
    // Twelve digits fit a u64 (36^12 < 2^63), so the wide, checked arithmetic runs once
    // per twelve digits rather than once per digit.
    const CHUNK: usize = 12;
    const CHUNK_SCALE: u128 = 36u128.pow(CHUNK as u32);
    digits.chunks(CHUNK).try_fold(0u128, |n, chunk| {
        let mut part = 0u64;
        for &b in chunk {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'z' => b - b'a' + 10,
                _ => return None,
            };
            part = part * 36 + u64::from(digit);
        }
        let scale = if chunk.len() == CHUNK { CHUNK_SCALE } else { 36u128.pow(chunk.len() as u32) };
        n.checked_mul(scale)?.checked_add(u128::from(part))
    })
}

/// What serializing an id leaves for its resolution: the string's resolver and the
/// text written, so that the text is made once per encoding, not again to resolve it
/// (a random id's text divides a `u128` twice).
pub struct IdResolver {
    string: StringResolver,
    text: IdText,
}

/// The number of an id, and how it is written.
trait Digits: Sized + Copy {
    fn write(self, text: &mut IdText);
    /// Parses exactly the digits `write` makes; anything else is `None`.
    fn read(digits: &[u8]) -> Option<Self>;
}

/// A sequential id's number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Seq(u64);

impl Digits for Seq {
    fn write(self, text: &mut IdText) {
        text.push_digits(u128::from(self.0), SEQ_DIGITS);
    }

    fn read(digits: &[u8]) -> Option<Seq> {
        if digits.len() != SEQ_DIGITS {
            return None;
        }
        u64::try_from(read_base36(digits)?).ok().map(Seq)
    }
}

/// A random id's 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Random(u128);

impl Digits for Random {
    fn write(self, text: &mut IdText) {
        text.push_digits(self.0, RANDOM_DIGITS);
    }

    fn read(digits: &[u8]) -> Option<Random> {
        if digits.len() != RANDOM_DIGITS {
            return None;
        }
        read_base36(digits).map(Random)
    }
}

/// A cart id's number: a cart's random bits, or — in the `cart_id` of an order made by a
/// flash-sale purchase, which names no cart — the sale's sequence number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum CartNumber {
    Random(Random),
    Sale(Seq),
}

impl Digits for CartNumber {
    fn write(self, text: &mut IdText) {
        match self {
            CartNumber::Random(n) => n.write(text),
            CartNumber::Sale(n) => n.write(text),
        }
    }

    fn read(digits: &[u8]) -> Option<CartNumber> {
        match digits.len() {
            RANDOM_DIGITS => Random::read(digits).map(CartNumber::Random),
            _ => Seq::read(digits).map(CartNumber::Sale),
        }
    }
}

/// A stored id that is not well-formed.
#[derive(Debug)]
struct MalformedId(&'static str);

impl fmt::Display for MalformedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a stored {} is not well-formed", self.0)
    }
}

impl std::error::Error for MalformedId {}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $number:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($number);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Parses an id received from a client; `None` unless it is exactly the
            /// prefix and the digits such an id is written with.
            pub fn parse(value: &str) -> Option<$name> {
                let digits = value.strip_prefix($prefix)?;
                <$number>::read(digits.as_bytes()).map($name)
            }

            /// The id as text.
            pub fn text(&self) -> IdText {
                let mut text = IdText::new($prefix);
                self.0.write(&mut text);
                text
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.text().as_str()).finish()
            }
        }

        /// Stored as its text.
        impl Archive for $name {
            type Archived = ArchivedString;
            type Resolver = IdResolver;

            fn resolve(&self, resolver: IdResolver, out: Place<ArchivedString>) {
                ArchivedString::resolve_from_str(&resolver.text, resolver.string, out);
            }
        }

        impl<S: Fallible + ?Sized> Serialize<S> for $name
        where
            S::Error: Source,
            str: SerializeUnsized<S>,
        {
            fn serialize(&self, serializer: &mut S) -> Result<IdResolver, S::Error> {
                let text = self.text();
                let string = ArchivedString::serialize_from_str(&text, serializer)?;
                Ok(IdResolver { string, text })
            }
        }

        impl<D: Fallible + ?Sized> Deserialize<$name, D> for ArchivedString
        where
            D::Error: Source,
        {
            fn deserialize(&self, _: &mut D) -> Result<$name, D::Error> {
                $name::parse(self.as_str())
                    .ok_or_else(|| D::Error::new(MalformedId(stringify!($name))))
            }
        }
    };
}

macro_rules! seq_ids {
    ($($name:ident),*) => {$(
        impl $name {
            /// The `n`th id: 12 zero-padded base-36 digits, so ids sort by `n`.
            pub fn from_seq(n: u64) -> $name {
                $name(Seq(n))
            }

            /// Its sequence number.
            pub fn seq(&self) -> u64 {
                self.0 .0
            }
        }
    )*};
}

macro_rules! random_ids {
    ($($name:ident),*) => {$(
        impl $name {
            /// The id of 128 random bits: 25 base-36 digits.
            pub fn from_random(bits: u128) -> $name {
                $name(Random(bits))
            }

            /// Its 128 bits, as [`Self::from_random`] took them.
            pub fn bits(&self) -> u128 {
                self.0 .0
            }
        }
    )*};
}

id_type!(
    /// A product's id (`prod_…`).
    ProductId, "prod_", Seq
);
id_type!(
    /// A category's id (`cat_…`).
    CategoryId, "cat_", Seq
);
id_type!(
    /// A customer's (or staff member's) id (`cus_…`).
    CustomerId, "cus_", Seq
);
id_type!(
    /// A flash sale's id (`fsale_…`).
    FlashSaleId, "fsale_", Seq
);
id_type!(
    /// A shipping method's id (`ship_…`).
    ShippingMethodId, "ship_", Seq
);
id_type!(
    /// An automatic promotion's id (`promo_…`).
    PromotionId, "promo_", Seq
);
id_type!(
    /// A stock location's id (`loc_…`); see [`LocationId::DEFAULT`].
    LocationId, "loc_", Seq
);
id_type!(
    /// A saved address's id (`addr_…`), 128 random bits.
    AddressId, "addr_", Random
);
id_type!(
    /// A cart's id (`cart_…`), 128 random bits; see [`CartId::from_seq`] for the other
    /// form.
    CartId, "cart_", CartNumber
);
id_type!(
    /// An order's id (`ord_…`), 128 random bits.
    OrderId, "ord_", Random
);
id_type!(
    /// A payment's id (`pay_…`), 128 random bits.
    PaymentId, "pay_", Random
);
id_type!(
    /// A refund's id (`re_…`), 128 random bits.
    RefundId, "re_", Random
);
id_type!(
    /// A payment provider call's id (`pcall_…`), 128 random bits.
    PaymentCallId, "pcall_", Random
);
id_type!(
    /// A return's id (`ret_…`), 128 random bits.
    ReturnId, "ret_", Random
);
id_type!(
    /// A review's id (`rev_…`), 128 random bits.
    ReviewId, "rev_", Random
);
id_type!(
    /// An API client's id (`cli_…`), 128 random bits.
    ApiClientId, "cli_", Random
);

seq_ids!(ProductId, CategoryId, CustomerId, FlashSaleId, ShippingMethodId, PromotionId, LocationId);

impl LocationId {
    /// The location every shop has (number 0; created ones count from 1): where the
    /// single-location inventory commands keep stock.
    pub const DEFAULT: LocationId = LocationId(Seq(0));
}
id_type!(
    /// A webhook's id (`whk_…`), 128 random bits.
    WebhookId, "whk_", Random
);
id_type!(
    /// A dead letter's id (`dlq_…`), 128 random bits.
    DeadLetterId, "dlq_", Random
);
id_type!(
    /// A notification's id (`ntf_…`), 128 random bits.
    NotificationId, "ntf_", Random
);
random_ids!(
    OrderId,
    PaymentId,
    PaymentCallId,
    RefundId,
    ReturnId,
    ApiClientId,
    AddressId,
    ReviewId,
    WebhookId,
    DeadLetterId,
    NotificationId
);

impl CartId {
    /// The id of a cart: 128 random bits, 25 base-36 digits.
    pub fn from_random(bits: u128) -> CartId {
        CartId(CartNumber::Random(Random(bits)))
    }

    /// The `cart_id` of an order made by a flash-sale purchase: the sale's sequence
    /// number in 12 digits. It names no cart.
    pub fn from_seq(n: u64) -> CartId {
        CartId(CartNumber::Sale(Seq(n)))
    }

    /// The sale's sequence number when this is a flash-sale order's `cart_id`
    /// ([`CartId::from_seq`]), `None` for a cart's id.
    pub fn sale_seq(&self) -> Option<u64> {
        match self.0 {
            CartNumber::Sale(Seq(n)) => Some(n),
            CartNumber::Random(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_by_sequence() {
        let a = ProductId::from_seq(9);
        let b = ProductId::from_seq(10);
        assert!(a < b);
        assert!(a.text().as_str() < b.text().as_str());
        assert_eq!(a.text().as_str(), "prod_000000000009");
        assert_eq!(ProductId::parse(&a.text()), Some(a));
        assert_eq!(ProductId::parse("cat_000000000001"), None);
        assert_eq!(ProductId::parse("prod_"), None);
        assert_eq!(ProductId::parse("prod_ABC"), None);
        assert_eq!(ProductId::parse("prod_00000000000a0"), None, "13 digits");
        assert_eq!(ProductId::parse("prod_00000000000"), None, "11 digits");
        let random = OrderId::from_random(u128::MAX);
        assert_eq!(random.text().len(), "ord_".len() + 25);
        assert_eq!(OrderId::parse(&random.text()), Some(random));
        // 25 digits can say more than 128 bits: the largest is refused, not wrapped.
        assert_eq!(OrderId::parse("ord_zzzzzzzzzzzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn digits_are_base_36_of_the_number() {
        fn naive(mut n: u128, width: usize) -> String {
            let mut out = vec![b'0'; width];
            for slot in out.iter_mut().rev() {
                *slot = DIGITS[(n % 36) as usize];
                n /= 36;
            }
            String::from_utf8(out).expect("ASCII")
        }
        let mut n = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834_u128;
        for _ in 0..1000 {
            n = n.rotate_left(17).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x1234_5678;
            let text = OrderId::from_random(n).text();
            assert_eq!(&text["ord_".len()..], naive(n, RANDOM_DIGITS));
            let seq = (n as u64) % 36u64.pow(SEQ_DIGITS as u32);
            assert_eq!(&ProductId::from_seq(seq).text()["prod_".len()..], naive(seq.into(), 12));
        }
        // Each group's and each pair's edges, and a number just over 64 bits.
        let group = 36u128.pow(SEQ_DIGITS as u32);
        let edges = [0, 1, 35, 36, 1295, 1296, 36u128.pow(6) - 1, 36u128.pow(6), group - 1, group]
            .into_iter()
            .chain([group * group - 1, group * group, u128::from(u64::MAX), 1 << 64])
            .chain([u128::MAX - 1, u128::MAX]);
        for n in edges {
            assert_eq!(&OrderId::from_random(n).text()["ord_".len()..], naive(n, RANDOM_DIGITS));
            if n < group {
                let seq = n as u64;
                assert_eq!(&ProductId::from_seq(seq).text()["prod_".len()..], naive(n, 12));
            }
        }
    }

    #[test]
    fn reading_digits_agrees_with_reading_one_digit_at_a_time() {
        fn one_at_a_time(digits: &[u8]) -> Option<u128> {
            digits.iter().try_fold(0u128, |n, &b| {
                let digit = DIGITS.iter().position(|&d| d == b)? as u128;
                n.checked_mul(36)?.checked_add(digit)
            })
        }
        let mut n = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            n ^= n << 13;
            n ^= n >> 7;
            n ^= n << 17;
            n
        };
        for len in 0..=27 {
            for _ in 0..300 {
                let mut text: Vec<u8> = (0..len).map(|_| DIGITS[(next() % 36) as usize]).collect();
                if len > 0 && next() % 8 == 0 {
                    let at = (next() % len as u64) as usize;
                    text[at] = [b'A', b'-', b'_', 0xc3][(next() % 4) as usize];
                }
                assert_eq!(read_base36(&text), one_at_a_time(&text), "{:?}", text);
            }
        }
        // The largest number, and one past it.
        let max = OrderId::from_random(u128::MAX).text();
        let digits = &max.as_bytes()["ord_".len()..];
        assert_eq!(read_base36(digits), Some(u128::MAX));
        let mut past = digits.to_vec();
        *past.last_mut().expect("digits") += 1;
        assert_eq!(read_base36(&past), None);
        assert_eq!(one_at_a_time(&past), None);
    }

    #[test]
    fn a_cart_id_keeps_the_form_it_was_written_in() {
        let cart = CartId::from_random(1);
        let sale = CartId::from_seq(1);
        assert_ne!(cart, sale);
        assert_eq!(cart.text().as_str(), "cart_0000000000000000000000001");
        assert_eq!(sale.text().as_str(), "cart_000000000001");
        assert_eq!(CartId::parse(&cart.text()), Some(cart));
        assert_eq!(CartId::parse(&sale.text()), Some(sale));
        assert_eq!(CartId::parse("cart_0000000000001"), None);
    }

    #[test]
    fn an_id_is_stored_as_the_text_it_had_as_a_string() {
        let id = OrderId::from_random(0x0123_4567_89ab_cdef);
        let as_id = rkyv::to_bytes::<rkyv::rancor::Error>(&id).expect("serialise");
        let as_string =
            rkyv::to_bytes::<rkyv::rancor::Error>(&id.text().to_string()).expect("serialise");
        assert_eq!(as_id.as_slice(), as_string.as_slice());
        let back: OrderId =
            rkyv::from_bytes::<OrderId, rkyv::rancor::Error>(&as_string).expect("deserialise");
        assert_eq!(back, id);
        let bad = rkyv::to_bytes::<rkyv::rancor::Error>(&"ord_1".to_string()).expect("serialise");
        assert!(rkyv::from_bytes::<OrderId, rkyv::rancor::Error>(&bad).is_err());
    }
}
