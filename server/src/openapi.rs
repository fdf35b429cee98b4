//! The OpenAPI 3.1 document served at `/openapi.json`. Paths, methods, success statuses,
//! error statuses, security and idempotency headers come from the route table (so the
//! document cannot drift from the router); the schemas below describe `wire`.

use std::sync::LazyLock;

use serde_json::{json, Map, Value};

use emporium_engine::{
    FLASH_SALE_QUANTITY_MAX, FLASH_SALE_RESERVATION_TTL_MAX_MS, HOLD_WORDS_MAX, MONEY_AMOUNT_MAX,
    ON_HAND_MAX, REVIEW_BODY_MAX,
};

use crate::routes::{BodyKind, ROUTES};

static DOCUMENT: LazyLock<Vec<u8>> =
    LazyLock::new(|| serde_json::to_vec(&document()).expect("the document serializes"));

/// The document as served.
pub fn document_bytes() -> &'static [u8] {
    &DOCUMENT
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn problem_response(status: u16) -> Value {
    let description = match status {
        400 => "Malformed request (bad JSON, bad query parameter, missing Idempotency-Key)",
        401 => "Missing, expired or tampered token",
        402 => "Payment declined",
        403 => "Not allowed for this caller",
        404 => "Not found",
        405 => "Method not allowed",
        409 => "Conflict: out_of_stock, conflict, invalid_state, discount_unavailable or request_in_progress",
        412 => "If-Match names another version",
        413 => "Body too large",
        415 => "Unsupported media type",
        422 => "validation_failed, idempotency_key_reused or empty_cart",
        429 => "Rate limited",
        503 => "overloaded (Retry-After), not ready, read_only_standby (this node is a standby: every write is refused, reads are served; send writes to the primary), or standbys_unavailable (a primary with --sync-standbys K and policy strict could not get K standbys to hold the write: refused before it was applied when fewer than K are connected, or, after sync_timeout_ms, durable on the primary but not acknowledged, so retry with the same Idempotency-Key)",
        _ => "Error",
    };
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": reference("Problem")}}
    })
}

/// Errors any route may answer.
const COMMON_ERRORS: [u16; 5] = [400, 405, 413, 429, 503];

fn operation(route: &crate::routes::Route) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(route.operation));
    op.insert("summary".into(), json!(route.summary));
    op.insert("description".into(), json!(format!("Who may call it: {}.", route.access)));
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = match (name, route.operation) {
                ("sku", _) => sku(),
                ("provider", "provider_callback") => {
                    json!({"type": "string", "enum": ["callback"]})
                }
                _ => json!({"type": "string", "minLength": 1}),
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    parameters.extend(query_parameters(route.operation));
    if let Some(required) = route.idempotency {
        parameters.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": required,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
            "description": "Keys belong to the caller: an authenticated caller's keys are its own; an anonymous caller's key is honoured only on a path that names a resource it holds (a guest cart's checkout, a guest order's payment) and ignored elsewhere (the request runs as if it had none), so a replay never hands one caller another's resource. Same key and body within 24 h replays the first success (or declined payment), with the header Idempotent-Replayed: true, also after a crash; a different body under the key is 422 idempotency_key_reused; the same key while the first request runs is 409 request_in_progress; other refusals changed nothing and are decided afresh."
        }));
    }
    if matches!(route.method.as_str(), "PATCH" | "PUT" | "DELETE") {
        parameters.push(json!({"name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"}, "description": "The ETag of a GET, \"VERSION-HASH\" (the version and a hash of its representation, so a tag never names two contents), or a bare \"VERSION\"; 412 precondition_failed when the resource is at another version or has another content."}));
    }
    if route.operation == "provider_callback" {
        parameters.push(json!({
            "name": "Emporium-Signature", "in": "header", "required": true,
            "schema": {"type": "string"},
            "description": "t=MS,v1=HEX: MS the signing time (milliseconds since the epoch, within five minutes of the server's clock), HEX the lowercase hex HMAC-SHA256 under the provider's secret of MS, a dot, and the raw body. Missing, malformed, stale or not verifying: 401 unauthenticated, before the body is read."
        }));
    }
    op.insert("parameters".into(), Value::Array(parameters));
    if let Some(schema) = route.request_schema {
        let mut content = Map::new();
        content.insert("application/json".into(), json!({"schema": reference(schema)}));
        if route.body == BodyKind::JsonOrForm {
            content.insert(
                "application/x-www-form-urlencoded".into(),
                json!({"schema": reference(schema)}),
            );
        }
        op.insert(
            "requestBody".into(),
            json!({"required": route.body != BodyKind::OptionalJson, "content": Value::Object(content)}),
        );
    }
    let mut responses = Map::new();
    let success = match (route.response_schema, route.operation) {
        (_, "metrics") => {
            json!({"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}})
        }
        (_, "stream_flash_sale") => {
            // For text/event-stream the schema is one event's (as OpenAPI 3.2's
            // itemSchema): its `event` and `data` fields.
            let event = json!({"type": "object", "required": ["event", "data"], "properties": {
                "event": {"type": "string", "enum": ["sale", "remaining", "status"]},
                "data": {"type": "string", "contentMediaType": "application/json",
                         "description": "JSON on one line: for `sale` the sale as GET /v1/flash-sales/{id} answers it; for `remaining` and `status`, {status, remaining, reserved, sold}."}}});
            json!({"description": "An event stream: `sale` (the sale as GET answers it) at once, then `remaining` whenever the counts change (at most every 100 ms) and at least every second while the sale is open, and a final `status` when it ends or is cancelled, after which the stream ends. Each event is described by the schema below.",
                   "content": {"text/event-stream": {"schema": event}}})
        }
        (_, "openapi") => {
            json!({"description": "This document", "content": {"application/json": {"schema": {"type": "object"}}}})
        }
        (Some(schema), _) => {
            json!({"description": "Success", "content": {"application/json": {"schema": reference(schema)}}})
        }
        (None, _) => json!({"description": "Success, no body"}),
    };
    responses.insert(route.success.to_string(), success);
    if route.operation == "token" {
        let oauth = json!({"description": "RFC 6749 error", "content": {"application/json": {"schema": reference("OAuthError")}}});
        responses.insert("400".into(), oauth.clone());
        responses.insert("401".into(), oauth);
    }
    if route.operation == "refund_order" {
        let through_provider = json!({"description": "The order was paid through an external provider (see /v1/orders/{id}/payment-calls): the refund is recorded as a refund call (kind refund, status pending) and made by the provider, asked until it answers (refunded or declined). Its amount is held meanwhile, so it cannot be refunded twice.",
                                      "content": {"application/json": {"schema": reference("PaymentCall")}}});
        responses.insert("202".into(), through_provider);
    }
    if route.operation == "submit_review" {
        let edited = json!({"description": "The caller had reviewed the product: the review is edited (same id, version bumped)",
                            "content": {"application/json": {"schema": reference("Review")}}});
        responses.insert("200".into(), edited);
    }
    if route.method == http::Method::GET && route.response_schema.is_some() {
        responses.insert("304".into(), json!({"description": "Not modified (If-None-Match)"}));
    }
    for status in COMMON_ERRORS.iter().chain(route.errors) {
        responses.entry(status.to_string()).or_insert_with(|| problem_response(*status));
    }
    if route.body != BodyKind::None {
        responses.entry("415".to_string()).or_insert_with(|| problem_response(415));
        responses.entry("422".to_string()).or_insert_with(|| problem_response(422));
    }
    // A bearer token is optional everywhere; where it is given it must be valid.
    responses.entry("401".to_string()).or_insert_with(|| problem_response(401));
    op.insert("responses".into(), Value::Object(responses));
    // A provider's callback is proven by its signature, not a token.
    let security = if route.operation == "provider_callback" {
        json!([{}])
    } else {
        json!([{}, {"bearer": []}])
    };
    op.insert("security".into(), security);
    Value::Object(op)
}

fn query(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

fn described(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn query_parameters(operation: &str) -> Vec<Value> {
    let limit =
        query("limit", json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20}));
    let cursor = query("cursor", json!({"type": "string", "minLength": 1}));
    match operation {
        "list_products" => vec![
            query("category_id", json!({"type": "string"})),
            query("status", json!({"type": "string", "enum": ["draft", "active", "archived"]})),
            limit,
            cursor,
        ],
        "list_categories" => vec![limit, cursor],
        "search_products" => vec![
            described("q", json!({"type": "string", "maxLength": 200}), "What the shopper typed; empty or absent browses with the filters. Query syntax is plain text. Longer than 200 characters: 422."),
            described("category_id", json!({"type": "string"}), "Products in this category or any of its descendants."),
            described("brand", json!({"type": "string"}), "Exactly this brand."),
            described("price_min", json!({"type": "integer", "minimum": 0}), "Inclusive, minor units of the product's lowest variant price. Above price_max: 422."),
            described("price_max", json!({"type": "integer", "minimum": 0}), "Inclusive, minor units."),
            query("in_stock", json!({"type": "string", "enum": ["true", "false"]})),
            described("attributes", json!({"type": "string"}), "name:value pairs, comma-separated; every one must match exactly."),
            described("sort", json!({"type": "string", "enum": ["relevance", "price_asc", "price_desc", "rating", "newest"]}), "relevance (the default; newest first when q is empty), price_asc, price_desc, rating (highest first) or newest."),
            described("facets", json!({"type": "string"}), "Facets to count, comma-separated: brand, category_id (a product counts for its categories and their ancestors), price (fixed ranges). Each counts with every filter except its own."),
            limit,
            described("cursor", json!({"type": "string", "minLength": 1}), "next_cursor of the previous page. Paging stops at the first 10,000 hits."),
        ],
        "suggest_products" => vec![
            described("q", json!({"type": "string", "maxLength": 200}), "What the shopper has typed so far."),
            query("limit", json!({"type": "integer", "minimum": 1, "maximum": 20, "default": 10})),
        ],
        "list_orders" => vec![
            query("status", json!({"type": "string"})),
            query("customer_id", json!({"type": "string"})),
            limit,
            cursor,
        ],
        "list_events" => vec![
            described("consumer", json!({"type": "string", "pattern": "^[a-z0-9._-]{1,48}$"}), "A named consumer: the log is kept from what it acknowledged (its after) on, and a read without after resumes there. At most 16 (409 past it); DELETE /v1/events/consumers/{name} forgets one. Dropped for falling too far behind: 410 cursor_expired."),
            described("after", json!({"type": "string", "pattern": "^[0-9]{1,20}$"}), "next_cursor of a previous page: records of log entries after it. Absent: from the oldest entry the log still holds. Below what the log holds: 410 cursor_expired."),
            described("types", json!({"type": "string"}), &format!("Event types wanted, comma-separated (absent: all): {}.", crate::handlers::events::EVENT_TYPES.join(", "))),
            query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})),
            described("wait_ms", json!({"type": "integer", "minimum": 0, "maximum": 30000, "default": 0}), "Long poll: with nothing after the cursor, wait up to this long for new durable entries."),
        ],
        "list_product_reviews" => vec![
            query("sort", json!({"type": "string", "enum": ["newest", "helpful", "rating_desc", "rating_asc"], "default": "newest"})),
            limit,
            cursor,
        ],
        "product_recommendations" => vec![
            query("kind", json!({"type": "string", "enum": ["bought_together", "also_bought"], "default": "bought_together"})),
            limit,
        ],
        "my_recommendations" => vec![limit],
        "trending_products" => vec![
            described("category_id", json!({"type": "string"}), "Products in this category or any under it."),
            limit,
        ],
        "get_stats" => vec![
            described("from", json!({"type": "string", "format": "date-time"}), "RFC 3339; rounded down to a whole bucket. Default: a day before to (1000 minutes with bucket=minute)."),
            described("to", json!({"type": "string", "format": "date-time"}), "RFC 3339, exclusive; rounded down to a whole bucket. Default: the end of the current bucket. At most 1000 buckets after from (422)."),
            query("bucket", json!({"type": "string", "enum": ["minute", "hour", "day"], "default": "hour"})),
        ],
        "list_my_orders" => vec![query("status", json!({"type": "string"})), limit, cursor],
        "list_notifications" => vec![
            query("status", json!({"type": "string", "enum": ["pending", "sent", "failed"], "default": "pending"})),
            limit,
            described("cursor", json!({"type": "string", "minLength": 1}), "next_cursor of the previous page."),
        ],
        "list_flash_sales" => vec![
            query(
                "status",
                json!({"type": "string", "enum": ["scheduled", "live", "sold_out", "ended", "cancelled"]}),
            ),
            limit,
            cursor,
        ],
        _ => vec![],
    }
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES.iter() {
        let item = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Emporium",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Emporium commerce engine's HTTP API. Errors are application/problem+json (RFC 9457) except the OAuth token endpoint's (RFC 6749 section 5.2). A request head larger than 64 KiB or with more than 100 header fields is refused by the HTTP layer with 431 Request Header Fields Too Large (no body), before any route runs. Lists take limit (1-100, default 20) and cursor. Catalog GETs carry ETags and honour If-None-Match; PATCH, PUT and DELETE honour If-Match. Flash sales: a sale's status is computed when it is read (scheduled before starts_at, live inside the window, sold_out inside it with nothing left, ended at or after ends_at, cancelled); remaining + reserved + sold = quantity, and after the end remaining counts the units returned to normal stock. A purchase is open to customer accounts only (staff, admins and API clients get 403), takes an optional body (one unit by default), and its sold_out and sale_not_live refusals write nothing; an order of a sale that expires or is cancelled gives its units back to the sale while it runs, to normal stock after. Stock locations: a SKU's inventory (GET /v1/inventory/{sku}) is its total over every location; the single-location endpoints (PUT /v1/inventory/{sku}, its adjustments) act on the default location, and received returns restock there. A checkout (and a flash sale's allocation) reserves each line from the locations with units available in priority order (lower first), then from the one with the most units available, then by location id, splitting a line across locations where one does not hold it all; either every line is reserved or the checkout is refused and nothing is. Units are released or shipped from the locations they were reserved at."
        },
        "paths": Value::Object(paths),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas(),
        }
    })
}

fn string() -> Value {
    json!({"type": "string"})
}

/// No control character (Unicode's `Cc`: U+0000–U+001F and U+007F–U+009F), which the
/// engine refuses in every text.
const SINGLE_LINE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// No control character but a tab, a line feed or a carriage return: the texts that
/// may run over several lines.
const MULTILINE: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";

/// A text of `min..=max` characters on one line.
fn text(min: usize, max: usize) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max, "pattern": SINGLE_LINE})
}

/// A text of `min..=max` characters that may hold tabs and line breaks.
fn multiline(min: usize, max: usize) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max, "pattern": MULTILINE})
}

/// An input map of at most `entries` texts, each key of 1 to `key_max` characters and
/// each value of up to `value_max`, on one line.
fn text_map(entries: usize, key_max: usize, value_max: usize) -> Value {
    json!({"type": "object", "maxProperties": entries, "propertyNames": text(1, key_max),
           "additionalProperties": text(0, value_max)})
}

fn sku() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"})
}

/// An ISO 4217 code of a currency in use: the codes the server accepts, every one.
fn currency() -> Value {
    let codes: Vec<&str> = emporium_engine::Currency::codes().collect();
    json!({"type": "string", "enum": codes, "description": "An ISO 4217 code of a currency in use."})
}

fn email() -> Value {
    json!({"type": "string", "format": "email", "maxLength": 254})
}

fn handle() -> Value {
    json!({"type": "string", "maxLength": 100, "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"})
}

fn timestamp() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties, "additionalProperties": false})
}

/// `schema`, with exactly one of `fields` present.
fn exactly_one_of(fields: &[&str], mut schema: Value) -> Value {
    schema["oneOf"] = fields.iter().map(|field| json!({"required": [field]})).collect();
    schema
}

fn list_of(item: &str) -> Value {
    object(
        &["data", "next_cursor"],
        json!({"data": {"type": "array", "items": reference(item)}, "next_cursor": {"type": ["string", "null"]}}),
    )
}

fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

/// The fields of `KpiCounts`, which a stats bucket has too (beside `start`).
const KPI_COUNTS: &[&str] = &[
    "carts_created",
    "carts_with_items",
    "carts_converted",
    "carts_abandoned",
    "orders_placed",
    "checkouts",
    "orders_paid",
    "gmv",
    "average_order_value",
    "refunded",
    "payments_declined",
    "conversion_rate",
    "abandonment_rate",
    "payment_decline_rate",
];

fn schemas() -> Value {
    let counts = |n: &str| (n.to_string(), json!({"type": "integer", "minimum": 0}));
    let amounts = |n: &str| (n.to_string(), json!({"type": "array", "items": reference("Amount")}));
    let rate =
        |n: &str| (n.to_string(), json!({"type": ["number", "null"], "minimum": 0, "maximum": 1}));
    let mut kpi_counts = Map::new();
    kpi_counts.extend(KPI_COUNTS[..7].iter().map(|n| counts(n)));
    kpi_counts.extend(KPI_COUNTS[7..10].iter().map(|n| amounts(n)));
    kpi_counts.extend([counts(KPI_COUNTS[10])]);
    kpi_counts.extend(KPI_COUNTS[11..].iter().map(|n| rate(n)));
    let kpi_counts = Value::Object(kpi_counts);
    let mut bucket_fields = kpi_counts.clone();
    bucket_fields["start"] = timestamp();
    let mut bucket_required = KPI_COUNTS.to_vec();
    bucket_required.push("start");
    let kpi_bucket = object(&bucket_required, bucket_fields);
    let money = object(
        &["amount", "currency"],
        json!({"amount": {"type": "integer", "minimum": 0, "maximum": MONEY_AMOUNT_MAX}, "currency": currency()}),
    );
    let line = object(
        &["sku", "product_id", "title", "quantity", "unit_price", "line_total"],
        json!({"sku": string(), "product_id": {"type": ["string", "null"]}, "title": string(), "quantity": {"type": "integer"},
               "unit_price": reference("Money"), "line_total": reference("Money"),
               "discount": {"allOf": [reference("Money")], "description": "Cart lines only: what the automatic promotions and the cart's discount codes take off the line."}}),
    );
    let address = object(
        &["name", "line1", "city", "country"],
        json!({"name": text(1, 200), "line1": text(1, 200), "line2": text(0, 200), "city": text(1, 100), "region": text(0, 100),
               "postal_code": text(0, 20), "country": {"type": "string", "pattern": "^[A-Z]{2}$"}}),
    );
    let variant_in = object(
        &["sku", "price"],
        json!({"sku": sku(), "title": text(0, 200), "options": text_map(10, 64, 128), "price": reference("Money")}),
    );
    let payment = object(
        &["id", "order_id", "method", "card_brand", "amount", "status", "created_at"],
        json!({"id": string(), "order_id": string(), "method": string(), "card_brand": string(), "amount": reference("Money"),
               "status": {"type": "string", "enum": ["captured"]}, "created_at": timestamp()}),
    );
    let payment_call = object(
        &[
            "id",
            "order_id",
            "kind",
            "provider",
            "method",
            "amount",
            "status",
            "reference",
            "card_brand",
            "message",
            "authorized_at",
            "payment_id",
            "reason",
            "refund_id",
            "created_at",
            "updated_at",
        ],
        json!({"id": string(), "order_id": string(), "kind": {"type": "string", "enum": ["charge", "refund"]}, "provider": string(), "method": string(), "amount": reference("Money"),
               "status": {"type": "string", "enum": ["pending", "awaiting_callback", "authorized", "captured", "declined", "voided", "refunded"],
                          "description": "A charge: pending (recorded; the provider is being asked) → awaiting_callback (the provider will call back) → authorized → captured (the order is paid); declined (the provider refused: the order can be paid again) or voided (the provider did not settle in time, or the capture failed: released with the provider, no money moved) from any open status. While a charge is open its order neither expires nor can be cancelled; a restart resumes it. A refund: pending → refunded (the refund is made: refund_id is in the order's refunds) or declined; retried until the provider answers, never voided."},
               "reason": {"type": "string", "description": "A refund's reason."},
               "refund_id": {"type": ["string", "null"], "description": "A refund's id, chosen when the call is recorded; the refund exists once the call is refunded."},
               "reference": {"type": "string", "description": "The provider's reference (empty until it gives one)."},
               "card_brand": string(), "message": {"type": "string", "description": "The provider's reason for a decline, or why the call was voided."},
               "authorized_at": {"type": ["string", "null"], "format": "date-time"}, "payment_id": {"type": ["string", "null"], "description": "The payment a capture made (in the order's payments)."},
               "created_at": timestamp(), "updated_at": timestamp()}),
    );
    let mut payment_with_order = payment.clone();
    payment_with_order["properties"]["order"] = reference("Order");
    payment_with_order["required"].as_array_mut().expect("an array").push(json!("order"));
    let return_schema = object(
        &[
            "id",
            "order_id",
            "status",
            "items",
            "amount",
            "reason",
            "note",
            "refund_id",
            "refunded",
            "created_at",
            "updated_at",
            "version",
        ],
        json!({"id": string(), "order_id": string(),
               "status": {"type": "string", "enum": ["requested", "approved", "rejected", "received"], "description": "requested → approved | rejected, approved → rejected (orders:write: units that never came free up again); approved → received (payments:refund): the units are restocked as chosen and refunded. A customer may ask within the return window (--return-window-days, default 30) after the order was fulfilled; at most 20 returns per order."},
               "items": {"type": "array", "items": object(&["sku", "quantity", "amount", "restocked"], json!({"sku": string(), "quantity": {"type": "integer"}, "amount": reference("Money"), "restocked": {"type": "boolean"}}))},
               "amount": {"allOf": [reference("Money")], "description": "What the units were paid: each line's total after its discount, with its tax, pro rata and rounded down (shipping is not part of it: staff refund it by hand), less what the order's other returns of the line (rejected ones aside) already claim; the last units of a line take exactly what is left, so a line's returns add up to exactly what it cost. Receiving refunds this, but never more than is left to refund of the order."},
               "reason": string(), "note": string(), "refund_id": {"type": ["string", "null"]},
               "refunded": {"allOf": [reference("Money")], "description": "What receiving it refunded: its amount, or less when the order had less left to refund (zero before it is received)."},
               "created_at": timestamp(), "updated_at": timestamp(), "version": {"type": "integer"}}),
    );
    let mut return_with_order = return_schema.clone();
    return_with_order["properties"]["order"] = reference("Order");
    return_with_order["required"].as_array_mut().expect("an array").push(json!("order"));
    let order_statuses = json!([
        "pending_payment",
        "paid",
        "fulfilled",
        "cancelled",
        "expired",
        "partially_refunded",
        "refunded"
    ]);
    json!({
        "Money": money,
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "code", "request_id"],
            "properties": {"type": string(), "title": string(), "status": {"type": "integer"}, "detail": string(),
                           "code": string(), "request_id": string(), "errors": {"type": "array", "items": {"type": "object"}}}
        },
        "OAuthError": {"type": "object", "required": ["error"], "properties": {"error": string(), "error_description": string()}},
        "Health": object(&["status"], json!({"status": string()})),
        "Ready": object(&["status", "role", "epoch", "lsn"], json!({"status": string(), "role": {"type": "string", "enum": ["primary", "standby"]}, "epoch": {"type": "integer"}, "lsn": {"type": "integer"}})),
        "Replication": object(&["role", "epoch", "last_lsn", "durable_lsn", "standbys"], json!({
            "role": {"type": "string", "enum": ["primary", "standby"]},
            "epoch": {"type": "integer", "description": "Starts at 1; each promotion starts the next"},
            "last_lsn": {"type": "integer"},
            "durable_lsn": {"type": "integer"},
            "replication_addr": {"type": ["string", "null"], "description": "Where standbys connect (--replication-listen), if anywhere"},
            "sync": {"description": "Synchronous replication, when standbys may connect (null otherwise)", "oneOf": [{"type": "null"}, object(&["standbys", "policy", "timeout_ms", "degraded"], json!({"standbys": {"type": "integer", "description": "K of --sync-standbys; 0: asynchronous"}, "policy": {"type": "string", "enum": ["strict", "degrade"]}, "timeout_ms": {"type": "integer"}, "degraded": {"type": "boolean", "description": "Policy degrade, too few standbys answering: writes are acknowledged asynchronously"}}))]},
            "standbys": {"type": "array", "description": "Connected standbys (on a primary)", "items": object(&["id", "addr", "acked_lsn", "lag_ms", "mode"], json!({"id": string(), "addr": string(), "acked_lsn": {"type": "integer"}, "shipped_lsn": {"type": "integer"}, "lag_lsn": {"type": "integer"}, "lag_ms": {"type": "integer", "description": "How long the oldest entry shipped and not yet acknowledged has waited"}, "mode": {"type": "string", "enum": ["sync", "async"]}}))},
            "primary": {"description": "On a standby: its primary as last heard", "oneOf": [{"type": "null"}, object(&["addr", "connected", "epoch", "durable_lsn", "lag_lsn"], json!({"addr": string(), "connected": {"type": "boolean"}, "epoch": {"type": "integer"}, "durable_lsn": {"type": "integer"}, "lag_lsn": {"type": "integer"}, "reconnects": {"type": "integer"}, "resyncs": {"type": "integer"}, "bootstraps": {"type": "integer"}}))]},
        })),
        "Digest": object(&["lsn_before", "lsn_after", "tables"], json!({"lsn_before": {"type": "integer"}, "lsn_after": {"type": "integer"}, "tables": {"type": "array", "items": object(&["table", "rows", "hash"], json!({"table": string(), "rows": {"type": "integer"}, "hash": {"type": "string", "description": "16 hex digits"}}))}})),
        "EventPage": object(&["data", "next_cursor"], json!({
            "data": {"type": "array", "items": object(&["id", "type", "lsn", "at", "data"], json!({
                "id": {"type": "string", "description": "evt_LSN_N: unique, stable"},
                "type": {"type": "string", "enum": crate::handlers::events::EVENT_TYPES},
                "lsn": {"type": "integer"},
                "at": {"type": "string", "format": "date-time"},
                "data": {"type": "object", "description": "By type: product.* {product_id, handle, title, status}; category.* {category_id, name?}; stock.set {sku, location_id, on_hand, reason}; stock.adjusted {sku, location_id, delta, reason} (location_id: where; the single-location endpoints act on the default location loc_000000000000); stock.transferred {sku, from_location_id, to_location_id, quantity, reason}; location.saved {location_id, name, kind, priority} (created or changed); location.deleted {location_id}; order.placed {order_id, cart_id, lines[{sku, quantity, unit_price}], reservation_expires_at} or, for a flash-sale purchase, {order_id, sale_id, quantity, reservation_expires_at}; order.cancelled/expired/fulfilled {order_id}; order.paid {order_id, payment_id, amount}; order.refunded {order_id, refund_id, amount, reason}; return.requested {return_id, order_id, items[{sku, quantity}]}; return.approved/rejected {return_id, note}; return.received {return_id, order_id, refund_id|null, restocked[sku]}; order.discounted {order_id, codes[{code, amount}], discount_total} (in minor units of the order's currency; codes hold the automatic promotions' promo_… ids too; it follows the order.placed of a checkout with discounts, in the same entry); order.charged {order_id, shipping_method_id|null, shipping, tax, tax_zone} (minor units; it follows them for a checkout with a shipping method or a taxed address: the total is the lines less discount_total plus shipping and tax); flash_sale.created {sale_id, sku, price, quantity, starts_at, ends_at}; flash_sale.started/ended/cancelled {sale_id}; review.published {review_id, product_id} (a review shoppers now see: new, edited or published by staff); review.held {review_id, product_id} (new or edited, waiting for staff: not shown); review.rejected {review_id, product_id} (not shown). No emails, addresses, carts or accounts."}
            }))},
            "next_cursor": {"type": "string", "description": "The LSN of the last log entry read (also when it published nothing wanted): pass it as after"}
        })),
        "Promotion": object(&["role", "epoch", "lsn"], json!({"role": {"type": "string", "enum": ["primary"]}, "epoch": {"type": "integer", "description": "The new epoch"}, "lsn": {"type": "integer", "description": "The last LSN of the old epoch; the new one starts after it"}})),
        "Checkpoint": object(&["path", "lsn", "created_at"], json!({"path": string(), "lsn": {"type": "integer"}, "created_at": timestamp()})),
        "Registration": object(&["email", "password"], json!({"email": email(), "password": {"type": "string", "minLength": 8, "maxLength": 1024, "description": "Any characters."}, "name": text(0, 100)})),
        "NewUser": object(&["email", "password", "role"], json!({"email": email(), "password": {"type": "string", "minLength": 8, "maxLength": 1024, "description": "Any characters."}, "role": {"type": "string", "enum": ["customer", "staff", "admin"]}, "name": string()})),
        "NewApiClient": object(&["name", "scopes"], json!({"name": text(1, 100), "scopes": {"type": "array", "maxItems": 32, "items": {"type": "string", "pattern": "^[a-z:_.]{1,64}$"}}})),
        "ApiClientCredentials": object(&["client_id", "client_secret", "name", "scopes", "created_at"], json!({"client_id": string(), "client_secret": string(), "name": string(), "scopes": {"type": "array", "items": string()}, "created_at": timestamp()})),
        "Customer": object(&["id", "email", "name", "role", "created_at"], json!({"id": string(), "email": string(), "name": string(), "role": {"type": "string", "enum": ["customer", "staff", "admin"]}, "created_at": timestamp()})),
        "Session": object(&["customer", "access_token", "refresh_token", "token_type", "expires_in"], json!({"customer": reference("Customer"), "access_token": string(), "refresh_token": string(), "token_type": {"type": "string", "enum": ["Bearer"]}, "expires_in": {"type": "integer"}})),
        "TokenRequest": {"type": "object", "required": ["grant_type"], "properties": {"grant_type": {"type": "string", "enum": ["password", "client_credentials", "refresh_token"]}, "username": string(), "password": string(), "client_id": string(), "client_secret": string(), "refresh_token": string(), "scope": string()}},
        "Token": {"type": "object", "required": ["access_token", "token_type", "expires_in"], "properties": {"access_token": string(), "token_type": {"type": "string", "enum": ["Bearer"]}, "expires_in": {"type": "integer"}, "refresh_token": string(), "scope": string()}, "additionalProperties": false},
        "Variant": object(&["sku", "title", "options", "price"], json!({"sku": string(), "title": string(), "options": string_map(), "price": reference("Money")})),
        "VariantInput": variant_in,
        "Product": object(
            &["id", "handle", "title", "description", "brand", "category_ids", "attributes", "status", "variants", "rating", "created_at", "updated_at", "version"],
            json!({"id": string(), "handle": string(), "title": string(), "description": string(), "brand": string(),
                   "category_ids": {"type": "array", "items": string()}, "attributes": string_map(),
                   "status": {"type": "string", "enum": ["draft", "active", "archived"]},
                   "variants": {"type": "array", "items": reference("Variant")},
                   "rating": reference("Rating"),
                   "created_at": timestamp(), "updated_at": timestamp(), "version": {"type": "integer"}}),
        ),
        "NewProduct": object(&["title", "variants"], json!({"handle": handle(), "title": text(1, 200), "description": multiline(0, 10_000), "brand": text(0, 100),
            "category_ids": {"type": "array", "maxItems": 20, "items": string()}, "attributes": text_map(50, 64, 256),
            "status": {"type": "string", "enum": ["draft", "active"]}, "variants": {"type": "array", "minItems": 1, "maxItems": 100, "items": reference("VariantInput")}})),
        "ProductPatch": object(&[], json!({"handle": handle(), "title": text(1, 200), "description": multiline(0, 10_000), "brand": text(0, 100),
            "category_ids": {"type": "array", "maxItems": 20, "items": string()}, "attributes": text_map(50, 64, 256),
            "status": {"type": "string", "enum": ["draft", "active", "archived"]}, "variants": {"type": "array", "minItems": 1, "maxItems": 100, "items": reference("VariantInput")}})),
        "ProductList": list_of("Product"),
        "SearchHit": object(&["id", "title", "brand", "price", "rating", "in_stock", "highlights"],
            json!({"id": string(), "title": string(), "brand": string(), "price": reference("Money"), "rating": {"type": "number"}, "in_stock": {"type": "boolean"},
                   "highlights": object(&[], json!({"title": {"type": "string", "description": "The title, HTML-escaped, with the matched words in <em>"}, "description": {"type": "string", "description": "A fragment of the description, likewise"}}))})),
        "FacetValue": object(&["value", "count"], json!({"value": string(), "count": {"type": "integer"}})),
        "PriceFacet": object(&["from", "to", "count"], json!({"from": {"type": "integer"}, "to": {"type": ["integer", "null"]}, "count": {"type": "integer"}})),
        "SearchResults": object(&["hits", "total", "facets", "next_cursor", "took_ms"],
            json!({"hits": {"type": "array", "items": reference("SearchHit")}, "total": {"type": "integer"},
                   "facets": object(&[], json!({"brand": {"type": "array", "items": reference("FacetValue")}, "category_id": {"type": "array", "items": reference("FacetValue")}, "price": {"type": "array", "items": reference("PriceFacet")}})),
                   "next_cursor": {"type": ["string", "null"]}, "took_ms": {"type": "integer"}})),
        "Suggestions": object(&["suggestions"], json!({"suggestions": {"type": "array", "items": object(&["text", "product_id"], json!({"text": string(), "product_id": {"type": ["string", "null"]}}))}})),
        "Category": object(&["id", "name", "parent_id", "path", "created_at", "updated_at", "version"],
            json!({"id": string(), "name": string(), "parent_id": {"type": ["string", "null"]}, "path": string(),
                   "created_at": timestamp(), "updated_at": timestamp(), "version": {"type": "integer"}})),
        "NewCategory": object(&["name"], json!({"name": text(1, 100), "parent_id": {"type": ["string", "null"]}})),
        "CategoryPatch": object(&[], json!({"name": text(1, 100), "parent_id": {"type": ["string", "null"]}})),
        "CategoryList": list_of("Category"),
        "Inventory": object(&["sku", "on_hand", "reserved", "available", "version"], json!({"sku": string(), "on_hand": {"type": "integer"}, "reserved": {"type": "integer"}, "available": {"type": "integer"}, "version": {"type": "integer"}})),
        "InventorySet": object(&["on_hand"], json!({"on_hand": {"type": "integer", "minimum": 0, "maximum": ON_HAND_MAX}, "reason": text(0, 200)})),
        "InventoryTransfer": object(&["from_location_id", "to_location_id", "quantity"], json!({"from_location_id": string(), "to_location_id": {"type": "string", "description": "Must differ from from_location_id. A location id that does not exist is 422."},
            "quantity": {"type": "integer", "minimum": 1, "maximum": ON_HAND_MAX, "description": "Units available (not reserved) at the source; more is 409."}, "reason": text(0, 200)})),
        "LocationLevel": object(&["location_id", "on_hand", "reserved", "available"], json!({"location_id": string(), "on_hand": {"type": "integer"}, "reserved": {"type": "integer"}, "available": {"type": "integer"}})),
        "InventoryByLocation": object(&["sku", "on_hand", "reserved", "available", "version", "locations"], json!({"sku": string(), "on_hand": {"type": "integer", "description": "Over every location."}, "reserved": {"type": "integer"}, "available": {"type": "integer"}, "version": {"type": "integer", "description": "The SKU's version: bumped by every change at any location."},
            "locations": {"type": "array", "items": reference("LocationLevel"), "description": "Every stock location, in the order of GET /v1/locations."}})),
        "NewLocation": object(&["name", "kind"], json!({"name": text(1, 100), "kind": {"type": "string", "enum": ["warehouse", "store"]},
            "priority": {"type": "integer", "minimum": 0, "maximum": 1000, "description": "Checkout reserves from lower priorities first, then from the location with the most units available, then by id. Default 100 (the default location's too)."}})),
        "LocationPatch": object(&[], json!({"name": text(1, 100), "kind": {"type": "string", "enum": ["warehouse", "store"]}, "priority": {"type": "integer", "minimum": 0, "maximum": 1000}})),
        "Location": object(&["id", "name", "kind", "priority", "default", "created_at", "updated_at", "version"], json!({"id": string(), "name": string(), "kind": {"type": "string", "enum": ["warehouse", "store"]}, "priority": {"type": "integer"},
            "default": {"type": "boolean", "description": "The default location (loc_000000000000): where the single-location inventory endpoints and received returns keep stock. It cannot be deleted."}, "created_at": timestamp(), "updated_at": timestamp(), "version": {"type": "integer"}})),
        "LocationList": list_of("Location"),
        "Rating": object(&["average", "count", "sum", "stars"], json!({"average": {"type": "number", "description": "sum / count to two decimals, rounded half up; 0 without reviews."}, "count": {"type": "integer", "description": "Published reviews."}, "sum": {"type": "integer", "description": "Their stars, added up."},
            "stars": {"type": "array", "items": {"type": "integer"}, "minItems": 5, "maxItems": 5, "description": "Published reviews with 1, 2, 3, 4 and 5 stars."}})),
        "NewReview": object(&["rating", "title"], json!({"rating": {"type": "integer", "minimum": 1, "maximum": 5}, "title": text(1, 200), "body": {"type": "string", "maxLength": REVIEW_BODY_MAX, "pattern": MULTILINE, "description": "Newlines allowed."}})),
        "Review": object(&["id", "product_id", "author", "rating", "title", "body", "verified_purchase", "helpful", "status", "reason", "created_at", "updated_at", "version"],
            json!({"id": string(), "product_id": string(), "author": {"type": "string", "description": "The author's name when they wrote it."}, "rating": {"type": "integer", "minimum": 1, "maximum": 5}, "title": string(), "body": string(),
                   "verified_purchase": {"type": "boolean", "description": "The author had a paid order containing the product when they wrote (or edited) it."}, "helpful": {"type": "integer", "description": "Customers who found it helpful."},
                   "status": {"type": "string", "enum": ["pending", "published", "rejected"]}, "reason": {"type": ["string", "null"], "description": "Why it was held (held: contains \"word\") or rejected."},
                   "created_at": timestamp(), "updated_at": timestamp(), "version": {"type": "integer"}})),
        "ReviewList": list_of("Review"),
        "Amount": object(&["amount", "currency"], json!({"amount": {"type": "integer"}, "currency": {"type": "string"}})),
        "KpiCounts": object(KPI_COUNTS, kpi_counts.clone()),
        "Stats": object(&["from", "to", "bucket", "abandonment_window_s", "lsn", "totals", "carts_undecided", "buckets", "top_products", "top_products_from", "top_products_to", "flash_sales"], json!({
            "from": timestamp(), "to": timestamp(), "bucket": {"type": "string", "enum": ["minute", "hour", "day"]},
            "abandonment_window_s": {"type": "integer"}, "lsn": {"type": "integer"},
            "totals": reference("KpiCounts"), "carts_undecided": {"type": "integer"},
            "buckets": {"type": "array", "maxItems": 1000, "items": kpi_bucket},
            "top_products": {"type": "array", "maxItems": 10, "items": object(&["product_id", "title", "units", "revenue"], json!({"product_id": {"type": "string"}, "title": {"type": ["string", "null"]}, "units": {"type": "integer"}, "revenue": {"type": "array", "items": reference("Amount")}}))},
            "top_products_from": timestamp(), "top_products_to": timestamp(),
            "flash_sales": {"type": "array", "maxItems": 100, "items": object(&["sale_id", "sku", "quantity", "sold", "reserved", "sell_through"], json!({"sale_id": {"type": "string"}, "sku": {"type": "string"}, "quantity": {"type": "integer"}, "sold": {"type": "integer"}, "reserved": {"type": "integer"}, "sell_through": {"type": "number"}}))}
        })),
        "NotificationPreferences": object(&["order_confirmation", "payment_received", "order_shipped", "refund_issued", "updated_at"], json!({
            "order_confirmation": {"type": "boolean"}, "payment_received": {"type": "boolean"},
            "order_shipped": {"type": "boolean"}, "refund_issued": {"type": "boolean"},
            "updated_at": {"oneOf": [timestamp(), {"type": "null"}]}
        })),
        "NotificationPreferencesPatch": object(&[], json!({
            "order_confirmation": {"type": "boolean"}, "payment_received": {"type": "boolean"},
            "order_shipped": {"type": "boolean"}, "refund_issued": {"type": "boolean"}
        })),
        "NotificationTemplateInput": object(&["subject", "body"], json!({"subject": text(1, 500), "body": multiline(1, 16384)})),
        "NotificationTemplate": object(&["kind", "subject", "body", "custom", "updated_at"], json!({
            "kind": {"type": "string", "enum": ["order_confirmation", "payment_received", "order_shipped", "refund_issued"]},
            "subject": string(), "body": string(), "custom": {"type": "boolean"},
            "updated_at": {"oneOf": [timestamp(), {"type": "null"}]}
        })),
        "NotificationTemplateList": object(&["data"], json!({"data": {"type": "array", "items": reference("NotificationTemplate")}})),
        "Notification": object(&["id", "kind", "status", "event_id", "order_id", "customer_id", "to", "subject", "body", "attempts", "next_attempt_at", "last_error", "created_at", "updated_at"], json!({
            "id": string(),
            "kind": {"type": "string", "enum": ["order_confirmation", "payment_received", "order_shipped", "refund_issued"]},
            "status": {"type": "string", "enum": ["pending", "sent", "failed"]},
            "event_id": string(), "order_id": {"type": ["string", "null"]}, "customer_id": {"type": ["string", "null"]},
            "to": string(), "subject": string(), "body": string(), "attempts": {"type": "integer", "minimum": 0},
            "next_attempt_at": {"oneOf": [timestamp(), {"type": "null"}]}, "last_error": {"type": ["string", "null"]},
            "created_at": timestamp(), "updated_at": timestamp()
        })),
        "NotificationList": object(&["data", "next_cursor", "total"], json!({
            "data": {"type": "array", "maxItems": 100, "items": reference("Notification")},
            "next_cursor": {"type": ["string", "null"]}, "total": {"type": "integer", "minimum": 0}
        })),
        "NewWebhook": object(&["url", "events"], json!({
            "url": {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": "^[hH][tT][tT][pP][sS]?://"},
            "events": {"type": "array", "minItems": 1, "maxItems": 64, "items": {"type": "string", "enum": crate::handlers::events::EVENT_TYPES}},
            "secret": {"type": "string", "minLength": 16, "maxLength": 200}
        })),
        "WebhookDelivery": object(&["position", "breaker", "open_until", "consecutive_failures", "delivered", "failed_attempts", "dead_lettered", "resynchronised"], json!({
            "position": {"type": "integer"}, "breaker": {"type": "string", "enum": ["closed", "open", "half_open"]},
            "open_until": {"type": ["string", "null"], "format": "date-time"}, "consecutive_failures": {"type": "integer"},
            "delivered": {"type": "integer"}, "failed_attempts": {"type": "integer"}, "dead_lettered": {"type": "integer"},
            "resynchronised": {"type": ["string", "null"]}
        })),
        "Webhook": object(&["id", "url", "events", "created_at", "delivery"], json!({
            "id": {"type": "string"}, "url": {"type": "string"}, "events": {"type": "array", "items": {"type": "string"}},
            "secret": {"type": "string", "description": "Only in the answer that created it."},
            "created_at": timestamp(), "delivery": {"oneOf": [reference("WebhookDelivery"), {"type": "null"}]}
        })),
        "WebhookList": object(&["data"], json!({"data": {"type": "array", "maxItems": 20, "items": reference("Webhook")}})),
        "WebhookDeliveries": object(&["data"], json!({"data": {"type": "array", "maxItems": 100, "items": object(&["event_id", "event_type", "attempt", "status", "error", "duration_ms", "at"], json!({
            "event_id": {"type": "string"}, "event_type": {"type": "string"}, "attempt": {"type": "integer", "minimum": 1},
            "status": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]}, "duration_ms": {"type": "integer"}, "at": timestamp()
        }))}})),
        "DeadLetterList": object(&["data"], json!({"data": {"type": "array", "maxItems": 1000, "items": object(&["id", "event_id", "event_type", "attempts", "last_error", "created_at", "body"], json!({
            "id": {"type": "string"}, "event_id": {"type": "string"}, "event_type": {"type": "string"}, "attempts": {"type": "integer"},
            "last_error": {"type": "string"}, "created_at": timestamp(), "body": {"type": "string"}
        }))}})),
        "Redelivery": object(&["delivered", "event_id"], json!({"delivered": {"type": "boolean"}, "event_id": {"type": "string"}})),
        "Recommendation": object(&["product", "basis", "score"], json!({"product": reference("Product"), "basis": {"type": "string", "enum": ["bought_together", "also_bought", "trending"]}, "score": {"type": "number", "minimum": 0}})),
        "RecommendationList": object(&["data"], json!({"data": {"type": "array", "items": reference("Recommendation"), "maxItems": 100}})),
        "ProductReviews": object(&["rating", "data", "next_cursor"], json!({"rating": reference("Rating"), "data": {"type": "array", "items": reference("Review")}, "next_cursor": {"type": ["string", "null"]}})),
        "ReviewRejection": object(&["reason"], json!({"reason": text(1, 500)})),
        "ReviewSettings": object(&["premoderation"], json!({"premoderation": {"type": "boolean", "description": "Every new or edited review waits for staff; off, a review is published at once unless it contains a held word."},
            "hold_words": {"type": "array", "maxItems": HOLD_WORDS_MAX, "items": {"type": "string", "minLength": 1, "maxLength": 50}, "description": "Whole words (1-50 letters or digits each; anything else is 422), matched without regard to case, that hold a review for staff."}})),
        "OrderStockLocations": object(&["order_id", "status", "items"], json!({"order_id": string(), "status": string(),
            "items": {"oneOf": [{"type": "array", "items": object(&["sku", "location_id", "quantity"], json!({"sku": string(), "location_id": string(), "quantity": {"type": "integer", "minimum": 1}}))}, {"type": "null"}],
                      "description": "By SKU in line order, the default location's share last. A pending order: where its units are reserved; a paid one (and after): where they left from; one that ended unpaid: empty. null for a flash sale's pending order: its units are the sale's until payment decides where they leave from."}})),
        "InventoryAdjustment": object(&["delta", "reason"], json!({"delta": {"type": "integer", "minimum": -ON_HAND_MAX, "maximum": ON_HAND_MAX, "not": {"const": 0}}, "reason": text(1, 200)})),
        "CartLine": line,
        "Cart": object(&["id", "customer_id", "currency", "status", "order_id", "items", "discounts", "subtotal", "discount_total", "total", "created_at", "updated_at", "version"],
            json!({"id": string(), "customer_id": {"type": ["string", "null"]}, "currency": string(), "status": {"type": "string", "enum": ["open", "checked_out"]},
                   "order_id": {"type": ["string", "null"]}, "items": {"type": "array", "items": reference("CartLine")},
                   "discounts": {"type": "array", "description": "The automatic promotions in force that take something off (code: their promo_… id; see /v1/promotions), then the discount codes entered, in the order entered, as they price now. Promotions apply first: of every buy + get eligible units, get are free (the cheapest units' price, spread over the eligible lines in proportion to their cost by largest remainder; promotions stack, each counting every eligible unit); codes then take their share of what the lines still cost (a code whose lines the promotions made free applies, for nothing). Only an open cart shows discounts. A code that does not apply (expired, used up, below its minimum subtotal, no eligible line, not combinable) takes nothing off and says why; checkout refuses the cart with 409 discount_unavailable until it is removed or applies again. Rounding: a percentage is rounded down to the minor unit; a code's amount is spread over its eligible lines in proportion to what they still cost by largest remainder (shares rounded down, the units left over to the largest fractional parts, the earlier line on a tie), so line discounts sum exactly to discount_total. Codes apply in the order entered, each to what the lines cost after the earlier ones. Prices are tax-exclusive amounts as listed.",
                                 "items": object(&["code", "amount", "applies", "reason"], json!({"code": string(), "amount": reference("Money"), "applies": {"type": "boolean"}, "reason": {"type": ["string", "null"]}}))},
                   "subtotal": reference("Money"), "discount_total": reference("Money"), "total": reference("Money"),
                   "created_at": timestamp(), "updated_at": timestamp(), "version": {"type": "integer"}})),
        "NewCart": object(&[], json!({"currency": currency()})),
        "CartCode": object(&["code"], json!({"code": {"type": "string", "description": "Matched case-insensitively. 404 for an unknown code; 409 discount_unavailable when it cannot be used now (inactive, outside its window, used up, over the customer's limit — a guest cannot use a code limited per customer —, another currency, or not combinable with the codes on the cart; at most 5 codes)."}})),
        "NewDiscountCode": exactly_one_of(&["percent_off", "amount_off"], object(&["code"], json!({
            "code": {"type": "string", "pattern": "^[A-Za-z0-9_-]{3,32}$", "description": "Stored upper-cased; unique (409 conflict)."},
            "percent_off": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Exactly one of percent_off and amount_off."},
            "amount_off": {"allOf": [reference("Money"), {"properties": {"amount": {"minimum": 1}}}], "description": "A fixed amount, more than zero, off the eligible lines (at most what they cost); only carts in its currency can use it."},
            "product_ids": {"type": "array", "items": string(), "maxItems": 100, "description": "Only lines of these products (with category_ids: of either)."},
            "category_ids": {"type": "array", "items": string(), "maxItems": 100, "description": "Only lines of products in these categories or below them."},
            "min_subtotal": {"allOf": [reference("Money")], "description": "The cart's subtotal before discounts must be at least this."},
            "starts_at": {"allOf": [timestamp()], "description": "Default: now."}, "ends_at": timestamp(),
            "usage_limit": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000, "description": "Orders that may carry the code in all, counted atomically with the checkout's reservation; a cancelled or expired order gives its use back."},
            "per_customer_limit": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
            "stackable": {"type": "boolean", "default": false, "description": "Whether it combines with other stackable codes; an exclusive code stands alone among codes (automatic promotions are not codes: they still apply, before it)."}}))),
        "DiscountCode": object(&["code", "percent_off", "amount_off", "product_ids", "category_ids", "min_subtotal", "starts_at", "ends_at", "usage_limit", "per_customer_limit", "stackable", "active", "uses", "created_at", "updated_at", "version"],
            json!({"code": string(), "percent_off": {"type": ["integer", "null"]}, "amount_off": {"oneOf": [reference("Money"), {"type": "null"}]},
                   "product_ids": {"type": "array", "items": string()}, "category_ids": {"type": "array", "items": string()},
                   "min_subtotal": {"oneOf": [reference("Money"), {"type": "null"}]}, "starts_at": timestamp(), "ends_at": {"type": ["string", "null"], "format": "date-time"},
                   "usage_limit": {"type": ["integer", "null"]}, "per_customer_limit": {"type": ["integer", "null"]}, "stackable": {"type": "boolean"},
                   "active": {"type": "boolean"}, "uses": {"type": "integer", "description": "Orders holding the code (placed and not cancelled or expired)."},
                   "created_at": timestamp(), "updated_at": timestamp(), "version": {"type": "integer"}})),
        "DiscountCodeList": list_of("DiscountCode"),
        "DiscountCodePatch": object(&[], json!({"active": {"type": "boolean"}, "ends_at": timestamp(),
            "usage_limit": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000, "description": "Never below the uses the code has."}})),
        "CartItemAdd": object(&["sku", "quantity"], json!({"sku": sku(), "quantity": {"type": "integer", "minimum": 1}})),
        "CartItemSet": object(&["quantity"], json!({"quantity": {"type": "integer", "minimum": 0}})),
        "Address": address,
        "Checkout": object(&[], json!({"email": email(), "shipping_address": reference("Address"),
            "shipping_address_id": {"type": "string", "description": "An address of the cart owner's book instead (not with shipping_address; 422 when it is not theirs, and for a guest cart). With neither, the cart owner's default shipping address, if any."},
            "shipping_method_id": {"type": "string", "description": "A shipping method (an active one, in the cart's currency, shipping to the address's country, that takes the parcel's weight; 422 on this field otherwise): its rate is added to the total. Needs a shipping address."}})),
        "NewAutomaticPromotion": object(&["name", "buy", "get"], json!({"name": text(1, 100),
            "buy": {"type": "integer", "minimum": 1, "maximum": 100}, "get": {"type": "integer", "minimum": 1, "maximum": 100},
            "product_ids": {"type": "array", "maxItems": 100, "items": string(), "description": "Only units of these products (with category_ids: of these or those); none: every unit."},
            "category_ids": {"type": "array", "maxItems": 100, "items": string(), "description": "Only units of products in these categories or below them."},
            "starts_at": timestamp(), "ends_at": timestamp()})),
        "AutomaticPromotionPatch": object(&[], json!({"active": {"type": "boolean"}, "ends_at": timestamp()})),
        "AutomaticPromotion": object(&["id", "name", "buy", "get", "product_ids", "category_ids", "active", "starts_at", "ends_at", "created_at", "updated_at"],
            json!({"id": {"type": "string", "description": "promo_…: also its name among a cart's discounts (`discounts[].code`), and in the order.discounted event's codes (codes are upper-case, so the two never mix)."},
                   "name": string(), "buy": {"type": "integer"}, "get": {"type": "integer"},
                   "product_ids": {"type": "array", "items": string()}, "category_ids": {"type": "array", "items": string()},
                   "active": {"type": "boolean"}, "starts_at": timestamp(), "ends_at": {"type": ["string", "null"], "format": "date-time"},
                   "created_at": timestamp(), "updated_at": timestamp()})),
        "AutomaticPromotionList": list_of("AutomaticPromotion"),
        "SavedAddressInput": object(&["address"], json!({"address": reference("Address"), "default_shipping": {"type": "boolean", "default": false}, "default_billing": {"type": "boolean", "default": false}})),
        "SavedAddress": object(&["id", "address", "default_shipping", "default_billing", "created_at", "updated_at"],
            json!({"id": string(), "address": reference("Address"), "default_shipping": {"type": "boolean"}, "default_billing": {"type": "boolean"}, "created_at": timestamp(), "updated_at": timestamp()})),
        "SavedAddressList": list_of("SavedAddress"),
        "SkuWeightInput": object(&["grams"], json!({"grams": {"type": "integer", "minimum": 0, "maximum": 1_000_000, "description": "One unit's weight in grams."}})),
        "SkuWeight": object(&["sku", "grams"], json!({"sku": sku(), "grams": {"type": "integer"}})),
        "ShippingRate": object(&["type"], json!({
            "type": {"type": "string", "enum": ["flat", "free_over", "weight"]},
            "amount": {"type": "integer", "minimum": 0, "description": "flat and free_over: the price, in minor units of the method's currency."},
            "threshold": {"type": "integer", "minimum": 0, "description": "free_over: free once the subtotal after discounts reaches it (minor units)."},
            "bands": {"type": "array", "minItems": 1, "maxItems": 20, "description": "weight: by increasing up_to_grams; a parcel (the sum of its units' weights) takes the first band that holds it, and one heavier than the last cannot go by the method.",
                      "items": object(&["up_to_grams", "amount"], json!({"up_to_grams": {"type": "integer", "minimum": 1}, "amount": {"type": "integer", "minimum": 0}}))}})),
        "NewShippingMethod": object(&["name", "currency", "rate"], json!({"name": text(1, 100), "currency": currency(), "rate": reference("ShippingRate"),
            "countries": {"type": "array", "maxItems": 250, "items": string(), "description": "ISO 3166-1 alpha-2 codes it ships to; empty or absent: everywhere."}})),
        "ShippingMethodPatch": object(&[], json!({"name": text(1, 100), "active": {"type": "boolean"}})),
        "ShippingMethod": object(&["id", "name", "currency", "rate", "countries", "active", "created_at", "updated_at"],
            json!({"id": string(), "name": string(), "currency": string(), "rate": reference("ShippingRate"), "countries": {"type": "array", "items": string()}, "active": {"type": "boolean"}, "created_at": timestamp(), "updated_at": timestamp()})),
        "ShippingMethodList": list_of("ShippingMethod"),
        "TaxRateInput": object(&["rate_bp"], json!({"rate_bp": {"type": "integer", "minimum": 0, "maximum": 10000, "description": "Basis points: 725 is 7.25 %."}})),
        "TaxRate": object(&["zone", "rate_bp", "updated_at"], json!({"zone": string(), "rate_bp": {"type": "integer"}, "updated_at": timestamp()})),
        "TaxRateList": list_of("TaxRate"),
        "PaymentRequest": object(&["method", "token"], json!({"method": {"type": "string", "enum": ["test_card"]}, "token": string()})),
        "OrderPayment": payment,
        "PaymentCallRequest": object(&["provider", "method", "token"], json!({
            "provider": {"type": "string", "description": "A configured provider: `callback` (the simulated asynchronous gateway; not offered when the server serves TLS). 422 on provider otherwise."},
            "method": {"type": "string", "enum": ["test_card"]},
            "token": {"type": "string", "minLength": 1, "maxLength": 200, "description": "The provider's card token: the gateway authorizes tok_visa and tok_mastercard and declines anything else (by callback). A card number is refused (422): tokens only."}})),
        "PaymentCall": payment_call.clone(),
        "PaymentCallList": list_of("PaymentCall"),
        "ProviderCallback": object(&["call_id", "reference", "status"], json!({
            "call_id": string(), "reference": {"type": "string", "minLength": 1, "maxLength": 200, "description": "The call's reference as the provider gave it; must match the call's once it has one (422 otherwise)."},
            "status": {"type": "string", "enum": ["authorized", "declined"]},
            "card_brand": string(), "message": {"type": "string", "maxLength": 500}})),
        "NewReturn": object(&["items", "reason"], json!({
            "items": {"type": "array", "minItems": 1, "items": object(&["sku", "quantity"], json!({"sku": string(), "quantity": {"type": "integer", "minimum": 1, "description": "At most the line's units not in an earlier return (rejected ones excepted)."}}))},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500}})),
        "Return": return_schema.clone(),
        "ReturnWithOrder": return_with_order,
        "ReturnList": list_of("Return"),
        "ReturnDecision": object(&[], json!({"note": {"type": "string", "maxLength": 500, "description": "Required (1–500 characters) to reject: the reason the customer sees."}})),
        "ReturnReceipt": object(&[], json!({"not_restocked": {"type": "array", "items": string(), "description": "SKUs of the return not to put back in stock (damaged). A SKU no product sells any more is not restocked either."}})),
        "RefundRequest": object(&[], json!({
            "amount": {"allOf": [reference("Money")], "description": "In the order's currency, more than zero and at most what was captured less what was refunded (422 validation_failed on amount.amount otherwise). Absent: everything not yet refunded."},
            "reason": {"type": "string", "maxLength": 500, "pattern": MULTILINE, "description": "Up to 500 characters; newlines allowed, other control characters not."}})),
        "Refund": object(&["id", "order_id", "amount", "reason", "provider_reference", "created_at", "order"],
            json!({"id": string(), "order_id": string(), "amount": reference("Money"), "reason": string(),
                   "provider_reference": {"type": "string", "description": "The provider's reference (the built-in test provider refunds at once)."},
                   "created_at": timestamp(), "order": reference("Order")})),
        "Ledger": object(&["order_id", "currency", "captured", "refunded", "balance", "data"],
            json!({"order_id": string(), "currency": string(), "captured": reference("Money"), "refunded": reference("Money"),
                   "balance": {"allOf": [reference("Money")], "description": "captured − refunded: sums over the entries."},
                   "data": {"type": "array", "description": "Every money movement, oldest first; immutable: authorizations and voids of payments through a provider (no money moves: not summed), the capture, refunds. At most 20 payment calls and 100 refunds, so not paged.",
                            "items": object(&["id", "kind", "amount", "provider_reference", "reason", "created_at"],
                                json!({"id": {"type": "string", "description": "The payment's (pay_), refund's (re_) or, for an authorization or void, payment call's (pcall_) id."}, "kind": {"type": "string", "enum": ["authorization", "capture", "void", "refund"]}, "amount": reference("Money"),
                                       "provider_reference": string(), "reason": {"type": ["string", "null"], "description": "A refund's reason, or why a void happened; null for an authorization or a capture."},
                                       "created_at": timestamp()}))}})),
        "Reconciliation": object(&["lsn", "orders", "refunds", "totals", "mismatch_count", "mismatches"],
            json!({"lsn": {"type": "integer", "description": "The last LSN when the check began."}, "orders": {"type": "integer"}, "refunds": {"type": "integer"},
                   "totals": {"type": "array", "items": object(&["currency", "captured", "refunded"], json!({"currency": string(), "captured": {"type": "integer"}, "refunded": {"type": "integer"}}))},
                   "mismatch_count": {"type": "integer", "description": "Problems found (an order may have more than one), each an order whose status or total disagrees with its ledger, found again on re-reading (the check reads the live state, not a snapshot; totals are as first read): an unpaid order with captures, a paid one whose captures are not its total, an open payment call of an order no longer pending, a captured call whose payment is not in its order, refunds above the captures or at odds with the status, an entry in another currency, refunds of a missing order."},
                   "mismatches": {"type": "array", "description": "The first 100.", "items": object(&["order_id", "problem"], json!({"order_id": string(), "problem": string()}))}})),
        "Payment": payment_with_order,
        "Order": object(&["id", "customer_id", "email", "status", "items", "subtotal", "discount_total", "shipping_total", "tax_total", "total", "currency", "reservation_expires_at", "payments", "shipping_address", "shipping_method", "created_at", "updated_at", "version"],
            json!({"id": string(), "customer_id": {"type": ["string", "null"]}, "email": string(), "status": {"type": "string", "enum": order_statuses, "description": "pending_payment → paid (payment) → fulfilled (fulfillment); pending_payment → cancelled | expired (stock released); paid | fulfilled | partially_refunded → partially_refunded | refunded (refunds: money only, the units stay sold). A paid order partly refunded before it shipped may still be fulfilled (it stays partially_refunded; its fulfilment is recorded apart from the status, once). Returns (see /v1/orders/{id}/returns) do not change the status themselves; the refund a received return makes does. Any other transition is 409 invalid_state."},
                   "items": {"type": "array", "items": reference("CartLine")}, "subtotal": reference("Money"), "discount_total": reference("Money"),
                   "shipping_total": {"allOf": [reference("Money")], "description": "The chosen shipping method's rate (untaxed); zero without one."},
                   "tax_total": {"allOf": [reference("Money")], "description": "Prices exclude tax. Each line is taxed at the shipping address's zone rate (its region's, written as the ISO 3166-2 code such as CA, else its country's) on what it costs after its discount, rounded half up to the minor unit per line; this is their sum. Zero without an address or a rate."},
                   "total": {"allOf": [reference("Money")], "description": "subtotal − discount_total + shipping_total + tax_total."}, "currency": string(), "reservation_expires_at": timestamp(),
                   "payments": {"type": "array", "items": reference("OrderPayment")},
                   "shipping_address": {"oneOf": [reference("Address"), {"type": "null"}]},
                   "shipping_method": {"oneOf": [object(&["id", "name"], json!({"id": string(), "name": string()})), {"type": "null"}]},
                   "created_at": timestamp(), "updated_at": timestamp(), "version": {"type": "integer"}})),
        "OrderList": list_of("Order"),
        "NewFlashSale": object(&["sku", "price", "quantity", "per_customer_limit", "starts_at", "ends_at"],
            json!({"sku": sku(), "price": reference("Money"), "quantity": {"type": "integer", "minimum": 1, "maximum": FLASH_SALE_QUANTITY_MAX},
                   "per_customer_limit": {"type": "integer", "minimum": 1, "maximum": FLASH_SALE_QUANTITY_MAX, "description": "At most the quantity."}, "starts_at": timestamp(), "ends_at": timestamp(),
                   "reservation_ttl_s": {"type": "integer", "minimum": 1, "maximum": FLASH_SALE_RESERVATION_TTL_MAX_MS / 1000}})),
        "FlashSale": object(&["id", "sku", "product_id", "title", "price", "quantity", "per_customer_limit", "starts_at", "ends_at", "reservation_ttl_s", "status", "remaining", "reserved", "sold", "created_at", "updated_at", "version"],
            json!({"id": string(), "sku": string(), "product_id": string(), "title": string(), "price": reference("Money"),
                   "quantity": {"type": "integer"}, "per_customer_limit": {"type": "integer"}, "starts_at": timestamp(), "ends_at": timestamp(),
                   "reservation_ttl_s": {"type": "integer"}, "status": {"type": "string", "enum": ["scheduled", "live", "sold_out", "ended", "cancelled"]},
                   "remaining": {"type": "integer"}, "reserved": {"type": "integer"}, "sold": {"type": "integer"},
                   "created_at": timestamp(), "updated_at": timestamp(), "version": {"type": "integer"}})),
        "FlashSaleList": list_of("FlashSale"),
        "FlashSalePurchase": object(&[], json!({"quantity": {"type": "integer", "minimum": 1, "default": 1}})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_schemas() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for route in ROUTES.iter() {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["operationId"], route.operation, "{} {}", route.method, route.path);
            assert!(op["responses"][route.success.to_string()].is_object());
            for schema in route.request_schema.iter().chain(route.response_schema.iter()) {
                assert!(
                    schemas.contains_key(*schema),
                    "schema {schema} of {} is missing",
                    route.operation
                );
            }
        }
        let documented: usize =
            doc["paths"].as_object().unwrap().values().map(|v| v.as_object().unwrap().len()).sum();
        assert_eq!(documented, ROUTES.len());
        let text = serde_json::to_string(&doc).unwrap();
        for name in schemas.keys() {
            assert!(
                text.contains(&format!("#/components/schemas/{name}\"")) || name == "Problem",
                "{name} is never used"
            );
        }
    }
}
