//! Errors over HTTP: `application/problem+json` (RFC 9457) with the contract's codes.
//! Every engine error maps to one problem here, in one place.

use emporium_engine::EngineError;
use serde::Serialize;
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

    /// The body, with the request id, as JSON bytes (members in alphabetical order).
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        /// `/problems/{code}`, written without building the string first.
        struct TypeUri(&'static str);
        impl Serialize for TypeUri {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("/problems/{}", self.0))
            }
        }
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'static str,
            detail: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            errors: Option<&'a Value>,
            request_id: &'a str,
            status: u16,
            title: &'static str,
            #[serde(rename = "type")]
            kind: TypeUri,
        }
        let body = Body {
            code: self.code,
            detail: &self.detail,
            errors: self.errors.as_ref(),
            request_id,
            status: self.status,
            title: self.title,
            kind: TypeUri(self.code),
        };
        serde_json::to_vec(&body).expect("problems serialize")
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
            EngineError::SoldOut { remaining } => Problem::new(
                409,
                "sold_out",
                "Sold out",
                format!("the flash sale has {remaining} units left"),
            ),
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
