//! Who may call what, over HTTP. An authorization matrix runs every endpoint as each
//! kind of caller — anonymous, customer A (the owner of the resources), customer B,
//! staff, admin, an API client holding the scope the endpoint needs, and one holding
//! none that matters — and compares the status with the table. Every row builds its
//! own fresh resources, so an action one caller takes cannot change what the next
//! caller sees. Then the attacks on tokens: tampered, expired, `alg: none`, unknown
//! and forged keys, forged role claims, refresh-token reuse, and the client
//! credentials grant.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use emporium_engine::{CustomerId, Role};
use emporium_server::auth::{Principal, TokenKeys};
use serde_json::{json, Value};

use crate::http_support::*;

/// The callers of the matrix, in the order of each row's expectations.
#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    OwnerA,
    OtherB,
    Staff,
    Admin,
    Scoped,
    Unscoped,
}

const CALLERS: [Who; 7] =
    [Who::Anonymous, Who::OwnerA, Who::OtherB, Who::Staff, Who::Admin, Who::Scoped, Who::Unscoped];

/// The SKU every cart and order of the matrix uses; it never runs short.
const SKU: &str = "AUTHZ-1";
/// The scope of the "client without the scope": one the endpoint under test does not
/// check (`payments:refund`, which only refunds check; for those, `inventory:read`).
const IRRELEVANT_SCOPE: &str = "payments:refund";
const IRRELEVANT_TO_REFUNDS: &str = "inventory:read";

/// One request of the matrix.
struct Call {
    method: &'static str,
    path: String,
    body: Option<Value>,
    form: Option<Vec<(&'static str, String)>>,
    idempotency: bool,
}

impl Call {
    fn new(method: &'static str, path: impl Into<String>) -> Call {
        Call { method, path: path.into(), body: None, form: None, idempotency: false }
    }

    fn json(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }

    fn keyed(mut self) -> Call {
        self.idempotency = true;
        self
    }
}

/// The server, its callers, and fresh resources on demand.
struct Fixture {
    s: TestServer,
    admin: String,
    a: Account,
    b: Account,
    staff: Account,
    scoped: BTreeMap<&'static str, String>,
    unscoped: String,
    unscoped_for_refunds: String,
    n: Cell<u32>,
    /// The webhook the rows that only read one share (a shop has at most 20).
    webhook: std::cell::OnceCell<String>,
}

impl Fixture {
    fn new() -> Fixture {
        // Payment calls' callbacks must not land while later rows check that a refusal
        // wrote nothing: they are due long after the matrix ends.
        let s = TestServer::with(|c| {
            c.payment_callback_delay_ms = 600_000;
            c.payment_callback_wait_s = 700;
            c.payment_give_up_s = 800;
        });
        let admin = s.admin();
        let a = s.register("owner-a@example.com");
        let b = s.register("other-b@example.com");
        let staff = s.user(&admin, "staff@example.com", "staff");
        let mut scoped = BTreeMap::new();
        for scope in [
            "catalog:write",
            "inventory:read",
            "inventory:write",
            "orders:read",
            "orders:write",
            "users:admin",
            "ops:admin",
            "payments:refund",
            "events:read",
        ] {
            scoped.insert(scope, s.client(&admin, &[scope]).token);
        }
        let unscoped = s.client(&admin, &[IRRELEVANT_SCOPE]).token;
        let unscoped_for_refunds = s.client(&admin, &[IRRELEVANT_TO_REFUNDS]).token;
        s.product(&admin, SKU, 100, 1_000_000);
        s.product(&admin, "AUTHZ-INV", 100, 10);
        Fixture {
            s,
            admin,
            a,
            b,
            staff,
            scoped,
            unscoped,
            unscoped_for_refunds,
            n: Cell::new(0),
            webhook: std::cell::OnceCell::new(),
        }
    }

    fn unique(&self) -> u32 {
        self.n.set(self.n.get() + 1);
        self.n.get()
    }

    /// The token of `who` for an endpoint that needs `scope` (empty: none).
    fn token(&self, who: Who, scope: &str) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::OwnerA => Some(&self.a.token),
            Who::OtherB => Some(&self.b.token),
            Who::Staff => Some(&self.staff.token),
            Who::Admin => Some(&self.admin),
            Who::Scoped if scope.is_empty() => Some(&self.unscoped),
            Who::Scoped => Some(self.scoped.get(scope).expect("a client per scope")),
            Who::Unscoped if scope == IRRELEVANT_SCOPE => Some(&self.unscoped_for_refunds),
            Who::Unscoped => Some(&self.unscoped),
        }
    }

    /// A cart with one line: A's, or a guest's.
    fn cart(&self, owned: bool) -> String {
        let token = owned.then_some(self.a.token.as_str());
        let cart = self.s.cart(token);
        self.s.add(token, &cart, SKU, 1).expect(200);
        cart
    }

    /// A pending order: A's, or a guest's.
    fn order(&self, owned: bool) -> String {
        let token = owned.then_some(self.a.token.as_str());
        text(&self.s.order(token, SKU, 1), "id").to_string()
    }

    /// A paid order of A's.
    fn paid_order(&self) -> String {
        let order = self.order(true);
        self.s.pay(Some(&self.a.token), &order, "paid", "tok_visa").expect(201);
        order
    }

    fn product(&self, status: &str) -> String {
        let mut body = product_body(&format!("AUTHZ-P{}", self.unique()), 100);
        body["status"] = json!(status);
        let created = self.s.post("/v1/products").bearer(&self.admin).json(body).send();
        text(&created.expect(201), "id").to_string()
    }

    /// A live flash sale of one unit of the matrix's SKU.
    fn flash_sale(&self) -> String {
        let now = emporium_server::app::now_ms();
        let body = json!({
            "sku": SKU, "price": {"amount": 50, "currency": "USD"}, "quantity": 1,
            "per_customer_limit": 1, "starts_at": emporium_server::wire::rfc3339(now - 1000),
            "ends_at": emporium_server::wire::rfc3339(now + 3_600_000),
        });
        let created = self.s.post("/v1/flash-sales").bearer(&self.admin).json(body).send();
        text(&created.expect(201), "id").to_string()
    }

    /// A fulfilled order of A's.
    fn fulfilled_order(&self) -> String {
        let order = self.paid_order();
        let path = format!("/v1/orders/{order}/fulfillments");
        self.s.post(&path).bearer(&self.admin).send().expect(200);
        order
    }

    /// A requested return of A's fulfilled order, approved when `approved`.
    fn a_return(&self, approved: bool) -> String {
        let order = self.fulfilled_order();
        let body = json!({"items": [{"sku": SKU, "quantity": 1}], "reason": "too big"});
        let path = format!("/v1/orders/{order}/returns");
        let created = self.s.post(&path).bearer(&self.a.token).json(body).send().expect(201);
        let id = text(&created, "id").to_string();
        if approved {
            let path = format!("/v1/returns/{id}/approve");
            self.s.post(&path).bearer(&self.admin).send().expect(200);
        }
        id
    }

    /// A new discount code, 10 % off, no limits.
    fn discount_code(&self) -> String {
        let code = format!("AUTHZ{}", self.unique());
        let body = json!({"code": code, "percent_off": 10});
        self.s.post("/v1/discount-codes").bearer(&self.admin).json(body).send().expect(201);
        code
    }

    /// A cart (A's, or a guest's) with a discount code entered; returns both.
    fn cart_with_code(&self, owned: bool) -> (String, String) {
        let (cart, code) = (self.cart(owned), self.discount_code());
        let token = owned.then_some(self.a.token.as_str());
        let path = format!("/v1/carts/{cart}/discount-codes");
        self.s.post(&path).auth(token).json(json!({"code": code})).send().expect(200);
        (cart, code)
    }

    /// An address in A's book.
    fn address(&self) -> String {
        let body = json!({"address": {"name": "Ann", "line1": "1 Main St", "city": "Springfield",
                                      "country": "US"}});
        let path = "/v1/customers/me/addresses";
        let saved = self.s.post(path).bearer(&self.a.token).json(body).send().expect(201);
        text(&saved, "id").to_string()
    }

    /// An automatic promotion on a product no cart of the matrix holds, so it changes
    /// no price the other rows see.
    fn promotion(&self) -> String {
        let product = self.product("active");
        let body = json!({"name": "matrix", "buy": 1, "get": 1, "product_ids": [product]});
        let created = self.s.post("/v1/promotions").bearer(&self.admin).json(body).send();
        text(&created.expect(201), "id").to_string()
    }

    /// A published review of a new product, by an account no caller of the matrix is.
    fn review(&self) -> String {
        let author = self.s.register(&format!("reviewer-{}@example.com", self.unique()));
        let product = self.product("active");
        let body = json!({"rating": 4, "title": "Matrix"});
        let path = format!("/v1/products/{product}/reviews");
        let created = self.s.post(&path).bearer(&author.token).json(body).send();
        text(&created.expect(201), "id").to_string()
    }

    /// The shared webhook of the rows that read one.
    fn webhook(&self) -> String {
        self.webhook.get_or_init(|| self.new_webhook()).clone()
    }

    /// A new webhook (to a name that never resolves).
    fn new_webhook(&self) -> String {
        let body = json!({"url": "https://hooks.invalid/matrix", "events": ["order.paid"]});
        let created = self.s.post("/v1/admin/webhooks").bearer(&self.admin).json(body).send();
        text(&created.expect(201), "id").to_string()
    }

    /// A new stock location (each row that changes or deletes one gets its own).
    fn location(&self) -> String {
        let body = json!({"name": format!("Matrix {}", self.unique()), "kind": "store"});
        let created = self.s.post("/v1/locations").bearer(&self.admin).json(body).send();
        text(&created.expect(201), "id").to_string()
    }

    fn shipping_method(&self) -> String {
        let body =
            json!({"name": "Standard", "currency": "USD", "rate": {"type": "flat", "amount": 499}});
        let created = self.s.post("/v1/shipping-methods").bearer(&self.admin).json(body).send();
        text(&created.expect(201), "id").to_string()
    }

    /// A zone no row used before: `US-` and three letters.
    fn fresh_zone(&self) -> String {
        let n = self.unique();
        let letter = |k: u32| char::from(b'A' + ((n / 26u32.pow(k)) % 26) as u8);
        format!("US-{}{}{}", letter(2), letter(1), letter(0))
    }

    /// A tax zone with a rate.
    fn tax_zone(&self) -> String {
        let zone = self.fresh_zone();
        let path = format!("/v1/tax-rates/{zone}");
        self.s.put(&path).bearer(&self.admin).json(json!({"rate_bp": 500})).send().expect(200);
        zone
    }

    fn category(&self) -> String {
        let body = json!({"name": format!("Category {}", self.unique())});
        let created = self.s.post("/v1/categories").bearer(&self.admin).json(body).send();
        text(&created.expect(201), "id").to_string()
    }

    fn send(&self, call: Call, token: Option<&str>) -> Resp {
        let mut request = self.s.req(call.method, &call.path).auth(token);
        if call.idempotency {
            request = request.key(&format!("authz-{}", self.unique()));
        }
        if let Some(body) = call.body {
            request = request.json(body);
        }
        if let Some(form) = call.form {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request = request.form(&pairs);
        }
        request.send()
    }
}

/// One endpoint of the matrix: its name, the scope it needs (empty: none), how to build
/// a fresh request, and the expected status per caller, in the order of [`CALLERS`].
type Row = (&'static str, &'static str, fn(&Fixture) -> Call, [u16; 7]);

const ALL_200: [u16; 7] = [200; 7];
const ALL_201: [u16; 7] = [201; 7];
/// Signed-in accounts only; API clients have no account.
const ACCOUNTS: [u16; 7] = [401, 200, 200, 200, 200, 403, 403];
/// Staff, admins and clients with the scope.
const STAFF_200: [u16; 7] = [401, 403, 403, 200, 200, 200, 403];
const STAFF_201: [u16; 7] = [401, 403, 403, 201, 201, 201, 403];
const STAFF_204: [u16; 7] = [401, 403, 403, 204, 204, 204, 403];
/// Admins and clients with the scope.
const ADMIN_200: [u16; 7] = [401, 403, 403, 403, 200, 200, 403];
const ADMIN_201: [u16; 7] = [401, 403, 403, 403, 201, 201, 403];
/// A's own resources: A, and staff, admins and clients with the scope.
const OWNER_200: [u16; 7] = [401, 200, 403, 200, 200, 200, 403];
const OWNER_201: [u16; 7] = [401, 201, 403, 201, 201, 201, 403];
const OWNER_204: [u16; 7] = [401, 204, 403, 204, 204, 204, 403];
const OWNER_202: [u16; 7] = [401, 202, 403, 202, 202, 202, 403];

fn row(
    endpoint: &'static str,
    scope: &'static str,
    build: fn(&Fixture) -> Call,
    expected: [u16; 7],
) -> Row {
    (endpoint, scope, build, expected)
}

fn rows() -> Vec<Row> {
    vec![
        row("GET /healthz", "", |_| Call::new("GET", "/healthz"), ALL_200),
        row("GET /readyz", "", |_| Call::new("GET", "/readyz"), ALL_200),
        row("GET /metrics", "", |_| Call::new("GET", "/metrics"), ALL_200),
        row("GET /openapi.json", "", |_| Call::new("GET", "/openapi.json"), ALL_200),
        row(
            "POST /v1/auth/register",
            "",
            |f| {
                let email = format!("new-{}@example.com", f.unique());
                Call::new("POST", "/v1/auth/register")
                    .json(json!({"email": email, "password": PASSWORD}))
            },
            ALL_201,
        ),
        row(
            "POST /v1/auth/token",
            "",
            |f| Call {
                form: Some(vec![
                    ("grant_type", "password".into()),
                    ("username", f.a.email.clone()),
                    ("password", PASSWORD.into()),
                ]),
                ..Call::new("POST", "/v1/auth/token")
            },
            ALL_200,
        ),
        row("GET /v1/customers/me", "", |_| Call::new("GET", "/v1/customers/me"), ACCOUNTS),
        row(
            "GET /v1/customers/me/orders",
            "",
            |_| Call::new("GET", "/v1/customers/me/orders"),
            ACCOUNTS,
        ),
        row(
            "GET /v1/customers/me/addresses",
            "",
            |_| Call::new("GET", "/v1/customers/me/addresses"),
            ACCOUNTS,
        ),
        row(
            "POST /v1/customers/me/addresses",
            "",
            |_| {
                Call::new("POST", "/v1/customers/me/addresses")
                    .json(json!({"address": {"name": "B", "line1": "2 Side St", "city": "Town", "country": "DE"}}))
            },
            [401, 201, 201, 201, 201, 403, 403],
        ),
        // Only its owner's book holds it: anyone else's is a 404.
        row(
            "PUT /v1/customers/me/addresses/{A's}",
            "",
            |f| {
                Call::new("PUT", format!("/v1/customers/me/addresses/{}", f.address()))
                    .json(json!({"address": {"name": "A", "line1": "3 Hill Rd", "city": "Town", "country": "US"}, "default_shipping": true}))
            },
            [401, 200, 404, 404, 404, 403, 403],
        ),
        row(
            "DELETE /v1/customers/me/addresses/{A's}",
            "",
            |f| Call::new("DELETE", format!("/v1/customers/me/addresses/{}", f.address())),
            [401, 204, 404, 404, 404, 403, 403],
        ),
        row(
            "POST /v1/promotions",
            "catalog:write",
            // On a product of its own: a promotion on everything would reprice the
            // carts of the rows after it.
            |f| {
                Call::new("POST", "/v1/promotions").json(
                    json!({"name": "3 for 2", "buy": 2, "get": 1, "product_ids": [f.product("active")]}),
                )
            },
            STAFF_201,
        ),
        row("GET /v1/promotions", "", |_| Call::new("GET", "/v1/promotions"), ALL_200),
        row(
            "PATCH /v1/promotions/{id}",
            "catalog:write",
            |f| {
                Call::new("PATCH", format!("/v1/promotions/{}", f.promotion()))
                    .json(json!({"active": true}))
            },
            STAFF_200,
        ),
        row(
            "POST /v1/shipping-methods",
            "catalog:write",
            |_| {
                Call::new("POST", "/v1/shipping-methods")
                    .json(json!({"name": "Express", "currency": "USD", "rate": {"type": "free_over", "amount": 999, "threshold": 10000}, "countries": ["US"]}))
            },
            STAFF_201,
        ),
        row("GET /v1/shipping-methods", "", |_| Call::new("GET", "/v1/shipping-methods"), ALL_200),
        row(
            "GET /v1/shipping-methods/{id}",
            "",
            |f| Call::new("GET", format!("/v1/shipping-methods/{}", f.shipping_method())),
            ALL_200,
        ),
        row(
            "PATCH /v1/shipping-methods/{id}",
            "catalog:write",
            |f| {
                Call::new("PATCH", format!("/v1/shipping-methods/{}", f.shipping_method()))
                    .json(json!({"active": false}))
            },
            STAFF_200,
        ),
        row("GET /v1/tax-rates", "", |_| Call::new("GET", "/v1/tax-rates"), ALL_200),
        row(
            "PUT /v1/tax-rates/{zone}",
            "catalog:write",
            |f| {
                Call::new("PUT", format!("/v1/tax-rates/{}", f.fresh_zone()))
                    .json(json!({"rate_bp": 725}))
            },
            STAFF_200,
        ),
        row(
            "DELETE /v1/tax-rates/{zone}",
            "catalog:write",
            |f| Call::new("DELETE", format!("/v1/tax-rates/{}", f.tax_zone())),
            STAFF_204,
        ),
        row(
            "PUT /v1/inventory/{sku}/weight",
            "catalog:write",
            |_| Call::new("PUT", format!("/v1/inventory/{SKU}/weight")).json(json!({"grams": 250})),
            STAFF_200,
        ),
        row(
            "POST /v1/admin/users",
            "users:admin",
            |f| {
                let email = format!("user-{}@example.com", f.unique());
                Call::new("POST", "/v1/admin/users")
                    .json(json!({"email": email, "password": PASSWORD, "role": "customer"}))
            },
            ADMIN_201,
        ),
        row(
            "POST /v1/admin/api-clients",
            "users:admin",
            |_| {
                Call::new("POST", "/v1/admin/api-clients")
                    .json(json!({"name": "made in the matrix", "scopes": ["orders:read"]}))
            },
            ADMIN_201,
        ),
        row("GET /v1/products", "", |_| Call::new("GET", "/v1/products"), ALL_200),
        row(
            "POST /v1/products",
            "catalog:write",
            |f| {
                Call::new("POST", "/v1/products")
                    .json(product_body(&format!("AUTHZ-N{}", f.unique()), 100))
            },
            STAFF_201,
        ),
        row(
            "GET /v1/products/{active}",
            "catalog:write",
            |f| Call::new("GET", format!("/v1/products/{}", f.product("active"))),
            ALL_200,
        ),
        row(
            "GET /v1/products/{draft}",
            "catalog:write",
            |f| Call::new("GET", format!("/v1/products/{}", f.product("draft"))),
            [404, 404, 404, 200, 200, 200, 404],
        ),
        row(
            "PATCH /v1/products/{id}",
            "catalog:write",
            |f| {
                Call::new("PATCH", format!("/v1/products/{}", f.product("active")))
                    .json(json!({"title": "Renamed"}))
            },
            STAFF_200,
        ),
        row(
            "DELETE /v1/products/{id}",
            "catalog:write",
            |f| Call::new("DELETE", format!("/v1/products/{}", f.product("active"))),
            STAFF_204,
        ),
        row("GET /v1/categories", "", |_| Call::new("GET", "/v1/categories"), ALL_200),
        row(
            "POST /v1/categories",
            "catalog:write",
            |_| Call::new("POST", "/v1/categories").json(json!({"name": "New"})),
            STAFF_201,
        ),
        row(
            "GET /v1/categories/{id}",
            "",
            |f| Call::new("GET", format!("/v1/categories/{}", f.category())),
            ALL_200,
        ),
        row(
            "PATCH /v1/categories/{id}",
            "catalog:write",
            |f| {
                Call::new("PATCH", format!("/v1/categories/{}", f.category()))
                    .json(json!({"name": "Renamed"}))
            },
            STAFF_200,
        ),
        row(
            "DELETE /v1/categories/{id}",
            "catalog:write",
            |f| Call::new("DELETE", format!("/v1/categories/{}", f.category())),
            STAFF_204,
        ),
        row(
            "GET /v1/inventory/{sku}",
            "inventory:read",
            |_| Call::new("GET", "/v1/inventory/AUTHZ-INV"),
            STAFF_200,
        ),
        row(
            "PUT /v1/inventory/{sku}",
            "inventory:write",
            |_| Call::new("PUT", "/v1/inventory/AUTHZ-INV").json(json!({"on_hand": 10})),
            STAFF_200,
        ),
        row(
            "POST /v1/inventory/{sku}/adjustments",
            "inventory:write",
            |_| {
                Call::new("POST", "/v1/inventory/AUTHZ-INV/adjustments")
                    .json(json!({"delta": 1, "reason": "matrix"}))
            },
            STAFF_200,
        ),
        row(
            "GET /v1/inventory/{sku}/locations",
            "inventory:read",
            |_| Call::new("GET", "/v1/inventory/AUTHZ-INV/locations"),
            STAFF_200,
        ),
        row(
            "PUT /v1/inventory/{sku}/locations/{location_id}",
            "inventory:write",
            |f| {
                Call::new("PUT", format!("/v1/inventory/AUTHZ-INV/locations/{}", f.location()))
                    .json(json!({"on_hand": 2}))
            },
            STAFF_200,
        ),
        row(
            "POST /v1/inventory/{sku}/locations/{location_id}/adjustments",
            "inventory:write",
            |f| {
                let path =
                    format!("/v1/inventory/AUTHZ-INV/locations/{}/adjustments", f.location());
                Call::new("POST", path).json(json!({"delta": 3, "reason": "matrix"}))
            },
            STAFF_200,
        ),
        row(
            "POST /v1/inventory/{sku}/transfers",
            "inventory:write",
            |f| {
                Call::new("POST", "/v1/inventory/AUTHZ-INV/transfers").json(json!({
                    "from_location_id": "loc_000000000000",
                    "to_location_id": f.location(),
                    "quantity": 1
                }))
            },
            STAFF_200,
        ),
        row(
            "POST /v1/products/{id}/reviews",
            "catalog:write",
            |f| {
                Call::new("POST", format!("/v1/products/{}/reviews", f.product("active")))
                    .json(json!({"rating": 5, "title": "Matrix"}))
            },
            // Customer accounts only: staff, admins and API clients review nothing.
            [401, 201, 201, 403, 403, 403, 403],
        ),
        row(
            "GET /v1/products/{id}/reviews",
            "",
            |f| Call::new("GET", format!("/v1/products/{}/reviews", f.product("active"))),
            ALL_200,
        ),
        row("GET /v1/reviews", "catalog:write", |_| Call::new("GET", "/v1/reviews"), STAFF_200),
        row(
            "GET /v1/products/{id}/recommendations",
            "",
            |f| Call::new("GET", format!("/v1/products/{}/recommendations", f.product("active"))),
            ALL_200,
        ),
        row(
            "GET /v1/customers/me/recommendations",
            "",
            |_| Call::new("GET", "/v1/customers/me/recommendations"),
            ACCOUNTS,
        ),
        row(
            "GET /v1/customers/me/notification-preferences",
            "",
            |_| Call::new("GET", "/v1/customers/me/notification-preferences"),
            ACCOUNTS,
        ),
        row(
            "PATCH /v1/customers/me/notification-preferences",
            "",
            |_| {
                let body = json!({"order_shipped": true});
                Call::new("PATCH", "/v1/customers/me/notification-preferences").json(body)
            },
            ACCOUNTS,
        ),
        row(
            "GET /v1/recommendations/trending",
            "",
            |_| Call::new("GET", "/v1/recommendations/trending"),
            ALL_200,
        ),
        row(
            "GET /v1/reviews/{id}",
            "",
            |f| Call::new("GET", format!("/v1/reviews/{}", f.review())),
            ALL_200,
        ),
        row(
            "POST /v1/reviews/{id}/votes",
            "catalog:write",
            |f| Call::new("POST", format!("/v1/reviews/{}/votes", f.review())),
            [401, 200, 200, 403, 403, 403, 403],
        ),
        row(
            "POST /v1/reviews/{id}/publish",
            "catalog:write",
            |f| Call::new("POST", format!("/v1/reviews/{}/publish", f.review())),
            STAFF_200,
        ),
        row(
            "POST /v1/reviews/{id}/reject",
            "catalog:write",
            |f| {
                Call::new("POST", format!("/v1/reviews/{}/reject", f.review()))
                    .json(json!({"reason": "matrix"}))
            },
            STAFF_200,
        ),
        row(
            "GET /v1/admin/review-settings",
            "catalog:write",
            |_| Call::new("GET", "/v1/admin/review-settings"),
            STAFF_200,
        ),
        row(
            "PUT /v1/admin/review-settings",
            "catalog:write",
            |_| {
                Call::new("PUT", "/v1/admin/review-settings")
                    .json(json!({"premoderation": false, "hold_words": []}))
            },
            STAFF_200,
        ),
        row(
            "GET /v1/orders/{id}/stock-locations",
            "inventory:read",
            |f| Call::new("GET", format!("/v1/orders/{}/stock-locations", f.order(false))),
            STAFF_200,
        ),
        row(
            "GET /v1/locations",
            "inventory:read",
            |_| Call::new("GET", "/v1/locations"),
            STAFF_200,
        ),
        row(
            "POST /v1/locations",
            "inventory:write",
            |_| {
                Call::new("POST", "/v1/locations")
                    .json(json!({"name": "Depot", "kind": "warehouse"}))
            },
            STAFF_201,
        ),
        row(
            "GET /v1/locations/{id}",
            "inventory:read",
            |_| Call::new("GET", "/v1/locations/loc_000000000000"),
            STAFF_200,
        ),
        row(
            "PATCH /v1/locations/{id}",
            "inventory:write",
            |f| {
                Call::new("PATCH", format!("/v1/locations/{}", f.location()))
                    .json(json!({"priority": 5}))
            },
            STAFF_200,
        ),
        row(
            "DELETE /v1/locations/{id}",
            "inventory:write",
            |f| Call::new("DELETE", format!("/v1/locations/{}", f.location())),
            STAFF_204,
        ),
        row("POST /v1/carts", "", |_| Call::new("POST", "/v1/carts"), ALL_201),
        row(
            "GET /v1/carts/{A's}",
            "orders:read",
            |f| Call::new("GET", format!("/v1/carts/{}", f.cart(true))),
            OWNER_200,
        ),
        row(
            "GET /v1/carts/{guest}",
            "orders:read",
            |f| Call::new("GET", format!("/v1/carts/{}", f.cart(false))),
            ALL_200,
        ),
        row(
            "POST /v1/carts/{A's}/items",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/carts/{}/items", f.cart(true)))
                    .json(json!({"sku": SKU, "quantity": 1}))
            },
            OWNER_200,
        ),
        row(
            "POST /v1/carts/{guest}/items",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/carts/{}/items", f.cart(false)))
                    .json(json!({"sku": SKU, "quantity": 1}))
            },
            ALL_200,
        ),
        row(
            "PUT /v1/carts/{A's}/items/{sku}",
            "orders:write",
            |f| {
                Call::new("PUT", format!("/v1/carts/{}/items/{SKU}", f.cart(true)))
                    .json(json!({"quantity": 2}))
            },
            OWNER_200,
        ),
        row(
            "PUT /v1/carts/{guest}/items/{sku}",
            "orders:write",
            |f| {
                Call::new("PUT", format!("/v1/carts/{}/items/{SKU}", f.cart(false)))
                    .json(json!({"quantity": 2}))
            },
            ALL_200,
        ),
        row(
            "POST /v1/carts/{A's}/discount-codes",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/carts/{}/discount-codes", f.cart(true)))
                    .json(json!({"code": f.discount_code()}))
            },
            OWNER_200,
        ),
        row(
            "POST /v1/carts/{guest}/discount-codes",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/carts/{}/discount-codes", f.cart(false)))
                    .json(json!({"code": f.discount_code()}))
            },
            ALL_200,
        ),
        row(
            "DELETE /v1/carts/{A's}/discount-codes/{code}",
            "orders:write",
            |f| {
                let (cart, code) = f.cart_with_code(true);
                Call::new("DELETE", format!("/v1/carts/{cart}/discount-codes/{code}"))
            },
            OWNER_204,
        ),
        row(
            "POST /v1/discount-codes",
            "catalog:write",
            |f| {
                let code = format!("NEW{}", f.unique());
                Call::new("POST", "/v1/discount-codes")
                    .json(json!({"code": code, "percent_off": 5}))
            },
            STAFF_201,
        ),
        row(
            "GET /v1/discount-codes",
            "catalog:write",
            |_| Call::new("GET", "/v1/discount-codes"),
            STAFF_200,
        ),
        row(
            "GET /v1/discount-codes/{code}",
            "catalog:write",
            |f| Call::new("GET", format!("/v1/discount-codes/{}", f.discount_code())),
            STAFF_200,
        ),
        row(
            "PATCH /v1/discount-codes/{code}",
            "catalog:write",
            |f| {
                Call::new("PATCH", format!("/v1/discount-codes/{}", f.discount_code()))
                    .json(json!({"active": false}))
            },
            STAFF_200,
        ),
        row(
            "DELETE /v1/carts/{A's}/items/{sku}",
            "orders:write",
            |f| Call::new("DELETE", format!("/v1/carts/{}/items/{SKU}", f.cart(true))),
            OWNER_204,
        ),
        row(
            "DELETE /v1/carts/{guest}/items/{sku}",
            "orders:write",
            |f| Call::new("DELETE", format!("/v1/carts/{}/items/{SKU}", f.cart(false))),
            [204; 7],
        ),
        row(
            "POST /v1/carts/{A's}/checkout",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/carts/{}/checkout", f.cart(true)))
                    .json(json!({}))
                    .keyed()
            },
            OWNER_201,
        ),
        row(
            "POST /v1/carts/{guest}/checkout",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/carts/{}/checkout", f.cart(false)))
                    .json(json!({"email": "guest@example.com"}))
                    .keyed()
            },
            ALL_201,
        ),
        row("GET /v1/orders", "orders:read", |_| Call::new("GET", "/v1/orders"), STAFF_200),
        row(
            "GET /v1/orders/{A's}",
            "orders:read",
            |f| Call::new("GET", format!("/v1/orders/{}", f.order(true))),
            OWNER_200,
        ),
        row(
            "GET /v1/orders/{guest}",
            "orders:read",
            |f| Call::new("GET", format!("/v1/orders/{}", f.order(false))),
            ALL_200,
        ),
        row(
            "POST /v1/orders/{A's}/payments",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/orders/{}/payments", f.order(true)))
                    .json(json!({"method": "test_card", "token": "tok_visa"}))
                    .keyed()
            },
            OWNER_201,
        ),
        row(
            "POST /v1/orders/{guest}/payments",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/orders/{}/payments", f.order(false)))
                    .json(json!({"method": "test_card", "token": "tok_visa"}))
                    .keyed()
            },
            ALL_201,
        ),
        row(
            "POST /v1/orders/{A's}/payment-calls",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/orders/{}/payment-calls", f.order(true)))
                    .json(
                        json!({"provider": "callback", "method": "test_card", "token": "tok_visa"}),
                    )
                    .keyed()
            },
            OWNER_202,
        ),
        row(
            "POST /v1/orders/{guest}/payment-calls",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/orders/{}/payment-calls", f.order(false)))
                    .json(
                        json!({"provider": "callback", "method": "test_card", "token": "tok_visa"}),
                    )
                    .keyed()
            },
            [202; 7],
        ),
        row(
            "GET /v1/orders/{A's}/payment-calls",
            "orders:read",
            |f| Call::new("GET", format!("/v1/orders/{}/payment-calls", f.order(true))),
            OWNER_200,
        ),
        row(
            "GET /v1/orders/{guest}/payment-calls",
            "orders:read",
            |f| Call::new("GET", format!("/v1/orders/{}/payment-calls", f.order(false))),
            ALL_200,
        ),
        // Providers sign their callbacks; no token stands in for the signature.
        row(
            "POST /v1/payment-callbacks/callback (unsigned)",
            IRRELEVANT_SCOPE,
            |_| {
                Call::new("POST", "/v1/payment-callbacks/callback")
                    .json(json!({"call_id": "pcall_0", "reference": "x", "status": "declined"}))
            },
            [401; 7],
        ),
        row(
            "POST /v1/orders/{A's}/cancel",
            "orders:write",
            |f| Call::new("POST", format!("/v1/orders/{}/cancel", f.order(true))),
            OWNER_200,
        ),
        row(
            "POST /v1/orders/{guest}/cancel",
            "orders:write",
            |f| Call::new("POST", format!("/v1/orders/{}/cancel", f.order(false))),
            ALL_200,
        ),
        row(
            "POST /v1/orders/{A's paid}/fulfillments",
            "orders:write",
            |f| Call::new("POST", format!("/v1/orders/{}/fulfillments", f.paid_order())),
            STAFF_200,
        ),
        row(
            "POST /v1/orders/{A's paid}/refunds",
            "payments:refund",
            |f| {
                Call::new("POST", format!("/v1/orders/{}/refunds", f.paid_order()))
                    .json(json!({"reason": "matrix"}))
                    .keyed()
            },
            ADMIN_201,
        ),
        row(
            "GET /v1/orders/{A's paid}/transactions",
            "orders:read",
            |f| Call::new("GET", format!("/v1/orders/{}/transactions", f.paid_order())),
            OWNER_200,
        ),
        row(
            "GET /v1/orders/{guest}/transactions",
            "orders:read",
            |f| Call::new("GET", format!("/v1/orders/{}/transactions", f.order(false))),
            ALL_200,
        ),
        row(
            "POST /v1/orders/{A's fulfilled}/returns",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/orders/{}/returns", f.fulfilled_order()))
                    .json(json!({"items": [{"sku": SKU, "quantity": 1}], "reason": "too big"}))
            },
            OWNER_201,
        ),
        row(
            "GET /v1/orders/{A's}/returns",
            "orders:read",
            |f| Call::new("GET", format!("/v1/orders/{}/returns", f.order(true))),
            OWNER_200,
        ),
        row("GET /v1/returns", "orders:read", |_| Call::new("GET", "/v1/returns"), STAFF_200),
        row(
            "GET /v1/returns/{A's}",
            "orders:read",
            |f| Call::new("GET", format!("/v1/returns/{}", f.a_return(false))),
            OWNER_200,
        ),
        row(
            "POST /v1/returns/{id}/approve",
            "orders:write",
            |f| Call::new("POST", format!("/v1/returns/{}/approve", f.a_return(false))),
            STAFF_200,
        ),
        row(
            "POST /v1/returns/{id}/reject",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/returns/{}/reject", f.a_return(false)))
                    .json(json!({"note": "worn"}))
            },
            STAFF_200,
        ),
        row(
            "POST /v1/returns/{approved}/receive",
            "payments:refund",
            |f| Call::new("POST", format!("/v1/returns/{}/receive", f.a_return(true))),
            ADMIN_200,
        ),
        row(
            "GET /v1/admin/reconciliation",
            "orders:read",
            |_| Call::new("GET", "/v1/admin/reconciliation"),
            STAFF_200,
        ),
        row(
            "GET /v1/admin/stats",
            "orders:read",
            |_| Call::new("GET", "/v1/admin/stats"),
            STAFF_200,
        ),
        row(
            "GET /v1/admin/replication",
            "ops:admin",
            |_| Call::new("GET", "/v1/admin/replication"),
            ADMIN_200,
        ),
        // A client scoped to the feed alone reads it (ops:admin does too).
        row("GET /v1/events", "events:read", |_| Call::new("GET", "/v1/events"), ADMIN_200),
        row(
            "POST /v1/admin/webhooks",
            "ops:admin",
            |_| {
                let body = json!({"url": "https://hooks.invalid/x", "events": ["order.placed"]});
                Call::new("POST", "/v1/admin/webhooks").json(body)
            },
            [401, 403, 403, 403, 201, 201, 403],
        ),
        row(
            "GET /v1/admin/webhooks",
            "ops:admin",
            |_| Call::new("GET", "/v1/admin/webhooks"),
            ADMIN_200,
        ),
        row(
            "GET /v1/admin/webhooks/{id}",
            "ops:admin",
            |f| Call::new("GET", format!("/v1/admin/webhooks/{}", f.webhook())),
            ADMIN_200,
        ),
        row(
            "DELETE /v1/admin/webhooks/{id}",
            "ops:admin",
            |f| Call::new("DELETE", format!("/v1/admin/webhooks/{}", f.new_webhook())),
            [401, 403, 403, 403, 204, 204, 403],
        ),
        row(
            "GET /v1/admin/webhooks/{id}/deliveries",
            "ops:admin",
            |f| Call::new("GET", format!("/v1/admin/webhooks/{}/deliveries", f.webhook())),
            ADMIN_200,
        ),
        row(
            "GET /v1/admin/webhooks/{id}/dead-letters",
            "ops:admin",
            |f| Call::new("GET", format!("/v1/admin/webhooks/{}/dead-letters", f.webhook())),
            ADMIN_200,
        ),
        row(
            "POST /v1/admin/webhooks/{id}/dead-letters/{dead_letter_id}/redeliver",
            "ops:admin",
            |f| {
                let path = format!(
                    "/v1/admin/webhooks/{}/dead-letters/dlq_0000000000000000000000000/redeliver",
                    f.webhook()
                );
                Call::new("POST", path)
            },
            // Allowed callers learn there is no such dead letter.
            [401, 403, 403, 403, 404, 404, 403],
        ),
        row(
            "GET /v1/admin/notification-templates",
            "ops:admin",
            |_| Call::new("GET", "/v1/admin/notification-templates"),
            ADMIN_200,
        ),
        row(
            "PUT /v1/admin/notification-templates/{kind}",
            "ops:admin",
            |_| {
                let body = json!({"subject": "Shipped: {{ order.id }}", "body": "On its way."});
                Call::new("PUT", "/v1/admin/notification-templates/order_shipped").json(body)
            },
            ADMIN_200,
        ),
        row(
            "DELETE /v1/admin/notification-templates/{kind}",
            "ops:admin",
            |_| Call::new("DELETE", "/v1/admin/notification-templates/order_shipped"),
            [401, 403, 403, 403, 204, 204, 403],
        ),
        row(
            "GET /v1/admin/notifications",
            "ops:admin",
            |_| Call::new("GET", "/v1/admin/notifications?status=sent"),
            ADMIN_200,
        ),
        row(
            "GET /v1/admin/notifications/{unknown}",
            "ops:admin",
            |_| Call::new("GET", "/v1/admin/notifications/ntf_0000000000000000000000000"),
            [401, 403, 403, 403, 404, 404, 403],
        ),
        row(
            "POST /v1/admin/notifications/{unknown}/retry",
            "ops:admin",
            |_| Call::new("POST", "/v1/admin/notifications/ntf_0000000000000000000000000/retry"),
            [401, 403, 403, 403, 404, 404, 403],
        ),
        row(
            "DELETE /v1/events/consumers/{unknown}",
            "ops:admin",
            |_| Call::new("DELETE", "/v1/events/consumers/nobody"),
            [401, 403, 403, 403, 404, 404, 403],
        ),
        row(
            "GET /v1/admin/digest",
            "ops:admin",
            |_| Call::new("GET", "/v1/admin/digest"),
            ADMIN_200,
        ),
        row(
            "POST /v1/admin/promote (on a primary: nothing to promote)",
            "ops:admin",
            |_| Call::new("POST", "/v1/admin/promote"),
            [401, 403, 403, 403, 409, 409, 403],
        ),
        row(
            "POST /v1/admin/checkpoints",
            "ops:admin",
            |_| Call::new("POST", "/v1/admin/checkpoints"),
            ADMIN_201,
        ),
        row(
            "POST /v1/flash-sales",
            "catalog:write",
            |_| {
                let now = emporium_server::app::now_ms();
                Call::new("POST", "/v1/flash-sales").json(json!({
                    "sku": SKU, "price": {"amount": 50, "currency": "USD"}, "quantity": 1,
                    "per_customer_limit": 1, "starts_at": emporium_server::wire::rfc3339(now),
                    "ends_at": emporium_server::wire::rfc3339(now + 3_600_000),
                }))
            },
            STAFF_201,
        ),
        row("GET /v1/flash-sales", "", |_| Call::new("GET", "/v1/flash-sales"), ALL_200),
        row(
            "GET /v1/flash-sales/{id}",
            "",
            |f| Call::new("GET", format!("/v1/flash-sales/{}", f.flash_sale())),
            ALL_200,
        ),
        row(
            "POST /v1/flash-sales/{id}/cancel",
            "catalog:write",
            |f| Call::new("POST", format!("/v1/flash-sales/{}/cancel", f.flash_sale())),
            STAFF_200,
        ),
        row(
            "POST /v1/flash-sales/{id}/purchases",
            "orders:write",
            |f| {
                Call::new("POST", format!("/v1/flash-sales/{}/purchases", f.flash_sale()))
                    .json(json!({"quantity": 1}))
                    .keyed()
            },
            // Customer accounts only: staff, admins and API clients have no purchases.
            [401, 201, 201, 403, 403, 403, 403],
        ),
    ]
}

#[test]
fn every_endpoint_admits_exactly_the_callers_it_should() {
    let f = Fixture::new();
    let mut failures = Vec::new();
    for (endpoint, scope, build, expected) in rows() {
        for (who, expected) in CALLERS.into_iter().zip(expected) {
            let (call, token) = (build(&f), f.token(who, scope));
            let lsn = f.s.durable_lsn();
            let answer = f.send(call, token);
            let mut wrong = answer.status != expected;
            // A refused caller changed nothing: no write reached the log.
            if matches!(answer.status, 401 | 403 | 404) && f.s.durable_lsn() != lsn {
                failures.push(format!("{endpoint} as {who:?}: refused, yet the log moved"));
            }
            // A refusal is a problem with the contract's code for its status.
            let code = match answer.status {
                401 => Some("unauthenticated"),
                403 => Some("forbidden"),
                404 => Some("not_found"),
                _ => None,
            };
            if let Some(code) = code {
                wrong |= answer.json["code"] != code;
                wrong |= answer.status == 401
                    && !answer.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer"));
            }
            if wrong {
                failures.push(format!(
                    "{endpoint} as {who:?} (scope {scope:?}): expected {expected}, got {answer}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} wrong answers:\n{}", failures.len(), failures.join("\n"));
}

// --- token attacks ------------------------------------------------------------------

const KID: &str = "test";
const SECRET: [u8; 32] = [7; 32];

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `token` with one character of its signature changed.
fn flip_signature(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let at = bytes.len() - 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ASCII")
}

/// A JWT with `alg: none` claiming to be `sub` with `role`.
fn unsigned(sub: &str, role: &str) -> String {
    let now = now_s();
    let header = b64url(format!(r#"{{"alg":"none","typ":"JWT","kid":"{KID}"}}"#).as_bytes());
    let claims = json!({
        "sub": sub, "typ": "user", "role": role, "iat": now, "exp": now + 600, "iss": "emporium"
    });
    format!("{header}.{}.", b64url(claims.to_string().as_bytes()))
}

#[test]
fn tampered_expired_and_forged_tokens_are_refused() {
    let secret = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let s = TestServer::with(|c| c.signing_keys = vec![format!("{KID}:{secret}")]);
    let a = s.register("token-owner@example.com");
    let id = CustomerId::parse(&a.id).expect("a customer id");
    let keys = TokenKeys::new(vec![(KID.into(), SECRET.to_vec())]);
    let customer = Principal::User { id, role: Role::Customer };
    let now = now_s();
    let valid = keys.issue(&customer, now, 600);
    let stranger = TokenKeys::new(vec![("elsewhere".into(), SECRET.to_vec())]);
    let wrong_secret = TokenKeys::new(vec![(KID.into(), vec![8; 32])]);
    let nobody = Principal::User { id: CustomerId::from_seq(999_999), role: Role::Admin };
    let no_client =
        Principal::Client { id: "cli_nobody".into(), scopes: ["orders:read".to_string()].into() };
    // The role in a token is not trusted: the account's role is.
    let promoted = keys.issue(&Principal::User { id, role: Role::Admin }, now, 600);

    let check = |name: &str, authorization: &str, path: &str, expected: u16| {
        let answer = s.get(path).header("authorization", authorization).send();
        assert_eq!(answer.status, expected, "{name}: {answer}");
        if expected == 401 {
            let challenge = answer.header("www-authenticate").unwrap_or_default().to_string();
            assert!(challenge.starts_with("Bearer"), "{name}: WWW-Authenticate {challenge:?}");
            answer.problem(401, "unauthenticated");
        }
    };
    let bearer = |token: &str| format!("Bearer {token}");
    check("a token signed with the configured key", &bearer(&valid), "/v1/customers/me", 200);
    check("the token registration gave", &bearer(&a.token), "/v1/customers/me", 200);
    check("a flipped signature byte", &bearer(&flip_signature(&valid)), "/v1/customers/me", 401);
    check(
        "expired an hour ago",
        &bearer(&keys.issue(&customer, now - 3600, 60)),
        "/v1/customers/me",
        401,
    );
    check(
        "expired a second ago",
        &bearer(&keys.issue(&customer, now - 61, 60)),
        "/v1/customers/me",
        401,
    );
    check("alg none", &bearer(&unsigned(&a.id, "admin")), "/v1/customers/me", 401);
    check("alg none on an admin endpoint", &bearer(&unsigned(&a.id, "admin")), "/v1/orders", 401);
    check("an unknown kid", &bearer(&stranger.issue(&customer, now, 600)), "/v1/customers/me", 401);
    check(
        "the wrong secret under a known kid",
        &bearer(&wrong_secret.issue(&customer, now, 600)),
        "/v1/customers/me",
        401,
    );
    check(
        "an account that does not exist",
        &bearer(&keys.issue(&nobody, now, 600)),
        "/v1/customers/me",
        401,
    );
    check(
        "a client that does not exist",
        &bearer(&keys.issue(&no_client, now, 600)),
        "/v1/orders",
        401,
    );
    check("not a JWT", "Bearer not-a-token", "/v1/customers/me", 401);
    check("an empty bearer token", "Bearer ", "/v1/customers/me", 401);
    check("another scheme", &format!("Basic {}", b64url(b"a:b")), "/v1/customers/me", 401);
    check("a bad token on a public endpoint", "Bearer not-a-token", "/v1/products", 401);
    check("a promoted role claim", &bearer(&promoted), "/v1/orders", 403);
    let me = s.get("/v1/customers/me").bearer(&promoted).send().expect(200);
    assert_eq!(me["role"], "customer");
}

#[test]
fn a_reused_refresh_token_revokes_its_family() {
    let s = TestServer::start();
    let a = s.register("refresh@example.com");
    let refresh = |token: &str| {
        s.post("/v1/auth/token")
            .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
            .send()
    };
    let rotated = refresh(&a.refresh).expect(200);
    let successor = text(&rotated, "refresh_token").to_string();
    assert_ne!(successor, a.refresh);
    assert_eq!(rotated["token_type"], "Bearer");
    let access = text(&rotated, "access_token");
    assert_eq!(s.get("/v1/customers/me").bearer(access).send().expect(200)["id"], a.id.as_str());
    // Another sign-in starts a family of its own.
    let other = s.password_grant(&a.email, PASSWORD).expect(200);
    let other = text(&other, "refresh_token").to_string();

    // The spent token comes back: it leaked, so the whole family dies.
    let reused = refresh(&a.refresh);
    assert_eq!(
        (reused.status, reused.json["error"].as_str()),
        (400, Some("invalid_grant")),
        "{reused}"
    );
    let after = refresh(&successor);
    assert_eq!(
        (after.status, after.json["error"].as_str()),
        (400, Some("invalid_grant")),
        "{after}"
    );
    assert_eq!(refresh(&other).status, 200, "the other family lives on");
    let unknown = refresh("never-issued");
    assert_eq!(
        (unknown.status, unknown.json["error"].as_str()),
        (400, Some("invalid_grant")),
        "{unknown}"
    );
    let missing = s.post("/v1/auth/token").form(&[("grant_type", "refresh_token")]).send();
    assert_eq!(
        (missing.status, missing.json["error"].as_str()),
        (400, Some("invalid_request")),
        "{missing}"
    );
}

/// The token endpoint's grants: (name, request, expected status, expected `error` of an
/// RFC 6749 answer or `None` for a token).
#[test]
fn the_token_endpoint_grants_and_refuses() {
    let s = TestServer::start();
    let admin = s.admin();
    let customer = s.register("grants@example.com");
    let client = s.client(&admin, &["orders:read"]);
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    // One grant: the request, the expected status, and the `error` of an RFC 6749
    // answer (`None`: a token, which must then work where its holder may go).
    let check = |name: &str, request: Req<'_>, status: u16, error: Option<&str>| {
        let answer = request.send();
        assert_eq!(answer.status, status, "{name}: {answer}");
        let media = answer.header("content-type").unwrap_or_default();
        assert!(media.starts_with("application/json"), "{name}: {answer:?}");
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{name}");
        let Some(error) = error else {
            assert_eq!(answer.json["token_type"], "Bearer", "{name}: {answer}");
            let access = text(&answer.json, "access_token");
            let path = if name.starts_with("client") { "/v1/orders" } else { "/v1/customers/me" };
            let used = s.get(path).bearer(access).send();
            assert_eq!(used.status, 200, "{name}: the token on {path}: {used}");
            return;
        };
        assert_eq!(answer.json["error"], error, "{name}: {answer}");
        // RFC 6749 §5.2: a client that tried HTTP Basic is challenged with its scheme.
        if name.contains("HTTP Basic") {
            let challenge = answer.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Basic"), "{name}: WWW-Authenticate {challenge:?}");
        }
    };
    let token = || s.post("/v1/auth/token");
    let grant = |grant: &'static str| token().form(&[("grant_type", grant)]);
    let client_form = |id: &str, secret: &str| {
        let pairs =
            [("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)];
        token().form(&pairs)
    };
    let password_form = |username: &str, password: &str| {
        let pairs = [("grant_type", "password"), ("username", username), ("password", password)];
        token().form(&pairs)
    };
    let (id, secret, email) = (client.id.as_str(), client.secret.as_str(), customer.email.as_str());
    let basic_right = grant("client_credentials").header("authorization", &basic(id, secret));
    let basic_wrong = grant("client_credentials").header("authorization", &basic(id, "wrong"));
    let client_json =
        json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret});
    let password_json = json!({"grant_type": "password", "username": email, "password": PASSWORD});
    let no_secret = token().form(&[("grant_type", "client_credentials"), ("client_id", id)]);
    let no_password = token().form(&[("grant_type", "password"), ("username", email)]);
    let other_grant = token().form(&[("grant_type", "authorization_code"), ("code", "x")]);
    let truncated = token().body("application/json", b"{\"grant_type\":".to_vec());

    check("client_credentials, HTTP Basic", basic_right, 200, None);
    check("client_credentials, form parameters", client_form(id, secret), 200, None);
    check("client_credentials, JSON", token().json(client_json), 200, None);
    check("client_credentials, HTTP Basic, wrong secret", basic_wrong, 401, Some("invalid_client"));
    check(
        "client_credentials, form, wrong secret",
        client_form(id, "wrong"),
        401,
        Some("invalid_client"),
    );
    check(
        "client_credentials, unknown client",
        client_form("cli_nobody", "x"),
        401,
        Some("invalid_client"),
    );
    check("client_credentials, no secret", no_secret, 400, Some("invalid_request"));
    check("password", password_form(email, PASSWORD), 200, None);
    check("password, JSON", token().json(password_json), 200, None);
    check(
        "password, wrong password",
        password_form(email, "wrong password"),
        400,
        Some("invalid_grant"),
    );
    check(
        "password, unknown account",
        password_form("nobody@example.com", PASSWORD),
        400,
        Some("invalid_grant"),
    );
    check("password, no password", no_password, 400, Some("invalid_request"));
    check("an unsupported grant", other_grant, 400, Some("unsupported_grant_type"));
    check("no grant type", token().form(&[("username", email)]), 400, Some("invalid_request"));
    check("malformed JSON", truncated, 400, Some("invalid_request"));
    // A client's token is refused where its scopes do not reach.
    s.get("/v1/inventory/X-1").bearer(&client.token).send().problem(403, "forbidden");
}
