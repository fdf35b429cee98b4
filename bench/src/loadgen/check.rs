//! What a well-formed answer is. Every response the load generator reads is checked
//! here: the status is one the contract allows for that request, the media type is JSON
//! (problem+json for errors), and the body parses as the documented shape with the fields
//! the workload relies on. Parsing is into small typed structs that skip the fields they
//! do not name — serde still scans every byte, so a truncated or invalid body fails.
//!
//! Nothing here decides what a workload does next; it only classifies.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::http::Reply;

/// How one response is classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The expected success.
    Ok,
    /// A refusal the workload expects and counts (e.g. 409 `out_of_stock` in a sell-out).
    Refused,
    /// A 5xx.
    ServerError,
    /// A status the contract allows but this workload did not expect (a 4xx, say).
    Unexpected,
    /// The body or media type is not what the contract says.
    Malformed,
}

/// A money amount.
#[derive(Deserialize, Debug)]
pub struct Money {
    /// Minor units.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
}

/// A variant, as the workloads read it.
#[derive(Deserialize, Debug)]
pub struct Variant {
    /// The SKU.
    pub sku: String,
    /// The price.
    pub price: Money,
}

/// A product, as the workloads read it.
#[derive(Deserialize, Debug)]
pub struct Product {
    /// The id.
    pub id: String,
    /// The variants.
    pub variants: Vec<Variant>,
    /// The status.
    pub status: String,
    /// The category ids.
    pub category_ids: Vec<String>,
    /// The title.
    pub title: String,
}

/// A list page.
#[derive(Deserialize, Debug)]
pub struct Page<T> {
    /// The items.
    pub data: Vec<T>,
    /// The next cursor.
    pub next_cursor: Option<String>,
}

/// A cart or order line.
#[derive(Deserialize, Debug)]
pub struct Line {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: u32,
    /// The line's total.
    #[allow(dead_code)]
    pub line_total: Money,
}

/// A cart.
#[derive(Deserialize, Debug)]
pub struct Cart {
    /// The id.
    pub id: String,
    /// The lines.
    pub items: Vec<Line>,
    /// The total.
    pub total: Money,
}

/// An order.
#[derive(Deserialize, Debug)]
pub struct Order {
    /// The id.
    pub id: String,
    /// The status.
    pub status: String,
    /// The lines.
    pub items: Vec<Line>,
    /// The total.
    pub total: Money,
}

/// A payment with its order.
#[derive(Deserialize, Debug)]
pub struct Receipt {
    /// The payment id.
    pub id: String,
    /// The order it paid.
    pub order: Order,
}

/// Stock levels.
#[derive(Deserialize, Debug)]
pub struct Inventory {
    /// Units on hand.
    pub on_hand: u64,
    /// Units reserved by unpaid orders.
    pub reserved: u64,
    /// Units that can still be sold.
    pub available: u64,
}

/// A problem+json body.
#[derive(Deserialize, Debug)]
pub struct Problem {
    /// The machine-readable code.
    pub code: String,
    /// The status, repeated.
    pub status: u16,
}

/// Any JSON object (the shape does not matter, only that it parses).
#[derive(Deserialize, Debug)]
pub struct AnyObject {}

/// Parses a JSON body as `T`.
pub fn parse<T: DeserializeOwned>(reply: &Reply) -> Option<T> {
    serde_json::from_slice(&reply.body).ok()
}

/// A success with status `want` and a body of shape `T`: the parsed body and
/// [`Verdict::Ok`]; otherwise the verdict of what came instead.
pub fn success<T: DeserializeOwned>(reply: &Reply, want: u16) -> (Option<T>, Verdict) {
    if reply.status == want {
        if !reply.is_json() {
            return (None, Verdict::Malformed);
        }
        return match parse::<T>(reply) {
            Some(value) => (Some(value), Verdict::Ok),
            None => (None, Verdict::Malformed),
        };
    }
    (None, failure(reply, &[]))
}

/// Classifies a non-success: a well-formed problem whose code is in `expected` is
/// [`Verdict::Refused`]; a 5xx is [`Verdict::ServerError`]; a malformed problem body is
/// [`Verdict::Malformed`]; anything else is [`Verdict::Unexpected`].
pub fn failure(reply: &Reply, expected: &[&str]) -> Verdict {
    let problem = problem(reply);
    if reply.status >= 500 {
        return Verdict::ServerError;
    }
    match problem {
        None => Verdict::Malformed,
        Some(p) if expected.contains(&p.code.as_str()) => Verdict::Refused,
        Some(_) => Verdict::Unexpected,
    }
}

/// The problem in an error answer, if it is a well-formed one (problem+json, with the
/// response's status repeated in the body).
pub fn problem(reply: &Reply) -> Option<Problem> {
    if reply.content_type.as_bytes() != b"application/problem+json" {
        return None;
    }
    parse::<Problem>(reply).filter(|p| p.status == reply.status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn reply(status: u16, content_type: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type: HeaderValue::from_static(content_type),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn check(status: u16, content_type: &'static str, body: &str, expected: Verdict) {
        let r = reply(status, content_type, body);
        let verdict = if status == 200 {
            success::<Inventory>(&r, 200).1
        } else {
            failure(&r, &["out_of_stock"])
        };
        assert_eq!(verdict, expected, "{status} {content_type} {body}");
    }

    #[test]
    fn classifies_answers() {
        let inv = r#"{"sku":"A","on_hand":3,"reserved":1,"available":2,"version":4}"#;
        check(200, "application/json", inv, Verdict::Ok);
        check(200, "text/html", inv, Verdict::Malformed);
        check(200, "application/json", &inv[..inv.len() - 1], Verdict::Malformed);
        check(200, "application/json", r#"{"sku":"A"}"#, Verdict::Malformed);
        let oos = r#"{"type":"/problems/out_of_stock","status":409,"code":"out_of_stock"}"#;
        check(409, "application/problem+json", oos, Verdict::Refused);
        check(409, "application/json", oos, Verdict::Malformed);
        check(422, "application/problem+json", oos, Verdict::Malformed);
        let conflict = r#"{"status":409,"code":"conflict"}"#;
        check(409, "application/problem+json", conflict, Verdict::Unexpected);
        check(
            503,
            "application/problem+json",
            r#"{"status":503,"code":"overloaded"}"#,
            Verdict::ServerError,
        );
        check(500, "text/plain", "oops", Verdict::ServerError);
    }
}
