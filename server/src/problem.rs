//! Errors over HTTP: `application/problem+json` (RFC 9457) with the contract's codes.
//! Every engine error maps to one problem here, in one place.

use emporium_engine::EngineError;
use serde_json::{json, Value};

/// An error answer.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status.
    pub status: u16,
    /// The contract's code (`out_of_stock`).
    pub code: &'static str,
    /// The problem type's title.
    pub title: &'static str,
    /// What happened, for a person.
    pub detail: String,
    /// Details a program can use (`errors: [...]`).
    pub errors: Option<Value>,
    /// Seconds to wait before retrying (429, 503).
    pub retry_after_s: Option<u64>,
    /// Methods allowed (405).
    pub allow: Option<String>,
}

impl Problem {
    /// A problem with no extra members.
    pub fn new(
        status: u16,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            code,
            title,
            detail: detail.into(),
            errors: None,
            retry_after_s: None,
            allow: None,
        }
    }

    /// 400 `malformed_request`.
    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new(400, "malformed_request", "Malformed request", detail)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(detail: impl Into<String>) -> Problem {
        Problem::new(401, "unauthenticated", "Authentication required", detail)
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(403, "forbidden", "Forbidden", detail)
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(404, "not_found", "Not found", detail)
    }

    /// 412 `precondition_failed`.
    pub fn precondition_failed(detail: impl Into<String>) -> Problem {
        Problem::new(412, "precondition_failed", "Precondition failed", detail)
    }

    /// 422 `validation_failed` about one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Problem {
        let mut problem = Problem::new(
            422,
            "validation_failed",
            "Validation failed",
            "the request has invalid fields",
        );
        problem.errors = Some(json!([{"field": field, "message": message.into()}]));
        problem
    }

    /// 503 `overloaded`, with `Retry-After`.
    pub fn overloaded(detail: impl Into<String>) -> Problem {
        let mut problem = Problem::new(503, "overloaded", "Overloaded", detail);
        problem.retry_after_s = Some(1);
        problem
    }

    /// 503 `read_only_standby`: this node is a standby; send writes to the primary.
    pub fn read_only_standby() -> Problem {
        Problem::new(
            503,
            "read_only_standby",
            "Read-only standby",
            "this node is a standby: it serves reads; send writes to the primary",
        )
    }

    /// 500: only for a caught panic or a storage failure, never for client input.
    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(500, "internal_error", "Internal error", detail)
    }

    /// The body, with the request id, as JSON bytes (members in alphabetical order),
    /// written directly: every refusal on the hot paths (a sold-out flash sale) is one.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        use crate::wire::{write_json_int, write_json_str};
        let mut out = Vec::with_capacity(160 + self.detail.len() + request_id.len());
        out.extend_from_slice(b"{\"code\":");
        write_json_str(&mut out, self.code);
        out.extend_from_slice(b",\"detail\":");
        write_json_str(&mut out, &self.detail);
        if let Some(errors) = &self.errors {
            out.extend_from_slice(b",\"errors\":");
            serde_json::to_writer(&mut out, errors).expect("writing to a Vec cannot fail");
        }
        out.extend_from_slice(b",\"request_id\":");
        write_json_str(&mut out, request_id);
        out.extend_from_slice(b",\"status\":");
        write_json_int(&mut out, self.status);
        out.extend_from_slice(b",\"title\":");
        write_json_str(&mut out, self.title);
        // Codes are this crate's snake_case literals: nothing in them to escape.
        out.extend_from_slice(b",\"type\":\"/problems/");
        out.extend_from_slice(self.code.as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }
}

impl From<EngineError> for Problem {
    fn from(error: EngineError) -> Problem {
        match error {
            EngineError::Validation(fields) => {
                let mut problem = Problem::new(
                    422,
                    "validation_failed",
                    "Validation failed",
                    "the request has invalid fields",
                );
                let errors: Vec<Value> = fields
                    .iter()
                    .map(|f| json!({"field": f.field, "message": f.message}))
                    .collect();
                problem.errors = Some(Value::Array(errors));
                problem
            }
            EngineError::NotFound { kind, id } => {
                Problem::not_found(format!("{kind} {id} does not exist"))
            }
            EngineError::OutOfStock(shortfalls) => {
                let mut problem = Problem::new(
                    409,
                    "out_of_stock",
                    "Not enough stock",
                    "some lines cannot be reserved in full; nothing was reserved",
                );
                let errors: Vec<Value> = shortfalls
                    .iter()
                    .map(|s| json!({"sku": s.sku.as_str(), "requested": s.requested, "available": s.available}))
                    .collect();
                problem.errors = Some(Value::Array(errors));
                problem
            }
            EngineError::InvalidState(detail) => {
                Problem::new(409, "invalid_state", "Invalid state", detail)
            }
            // The answer a flash sale gives most often: written without `core::fmt`.
            EngineError::SoldOut { remaining } => {
                let mut detail = String::with_capacity(40);
                detail.push_str("the flash sale has ");
                detail.push_str(itoa::Buffer::new().format(remaining));
                detail.push_str(" units left");
                Problem::new(409, "sold_out", "Sold out", detail)
            }
            error @ EngineError::DiscountUnavailable { .. } => Problem::new(
                409,
                "discount_unavailable",
                "Discount code unavailable",
                error.to_string(),
            ),
            EngineError::SaleNotLive(detail) => {
                Problem::new(409, "sale_not_live", "Sale not live", detail)
            }
            error @ EngineError::PurchaseLimitExceeded { .. } => Problem::new(
                409,
                "purchase_limit_exceeded",
                "Purchase limit exceeded",
                error.to_string(),
            ),
            EngineError::Conflict(detail) => Problem::new(409, "conflict", "Conflict", detail),
            EngineError::EmptyCart => {
                Problem::new(422, "empty_cart", "Empty cart", "the cart has no items to check out")
            }
            EngineError::PaymentDeclined(detail) => {
                Problem::new(402, "payment_declined", "Payment declined", detail)
            }
            EngineError::IdempotencyKeyReused => Problem::new(
                422,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was used for a different request",
            ),
            EngineError::VersionMismatch { expected, current } => Problem::precondition_failed(
                format!("If-Match names version {expected}; the current version is {current}"),
            ),
            EngineError::Overloaded => {
                Problem::overloaded("the engine's queue is full; retry shortly")
            }
            EngineError::ReadOnlyStandby => Problem::read_only_standby(),
            EngineError::StandbysUnavailable(detail) => {
                let mut problem = Problem::new(
                    503,
                    "standbys_unavailable",
                    "Synchronous standbys unavailable",
                    detail,
                );
                problem.retry_after_s = Some(1);
                problem
            }
            EngineError::Unavailable(detail) => {
                let mut problem = Problem::new(503, "unavailable", "Unavailable", detail);
                problem.retry_after_s = Some(5);
                problem
            }
            other => {
                tracing::error!(error = %other, "engine failure");
                Problem::internal("the engine failed to store the change")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_body_is_the_json_of_its_members_in_alphabetical_order() {
        let mut quoted = Problem::invalid_field("items[0].sku", "no \"SKU\" named a\\b\n\u{1}é");
        quoted.detail = "tab\there, \"quotes\", a backslash \\ and ünïcode".into();
        let problems = [
            Problem::from(EngineError::SoldOut { remaining: 0 }),
            Problem::overloaded("try again"),
            quoted,
        ];
        for problem in problems {
            let body = problem.body("req\"1");
            let parsed: Value = serde_json::from_slice(&body).expect("a problem body is JSON");
            let mut expected = json!({
                "code": problem.code,
                "detail": problem.detail,
                "request_id": "req\"1",
                "status": problem.status,
                "title": problem.title,
                "type": format!("/problems/{}", problem.code),
            });
            if let Some(errors) = &problem.errors {
                expected["errors"] = errors.clone();
            }
            assert_eq!(parsed, expected);
            // serde_json's maps are sorted: the same bytes means the same member order.
            assert_eq!(body, serde_json::to_vec(&expected).unwrap(), "{problem:?}");
        }
    }
}
