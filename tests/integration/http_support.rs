//! What the HTTP tests share: a real server on a temporary directory at 127.0.0.1:0, a
//! blocking client that hands back every answer (4xx and 5xx included) with its status,
//! headers and JSON body, and helpers that sign in each kind of caller and build the
//! usual fixtures (products with stock, carts, orders). Nothing here sleeps or retries:
//! a test sees exactly what the server answered.
//!
//! The first admin comes from `EMPORIUM_ADMIN_EMAIL` / `EMPORIUM_ADMIN_PASSWORD`, read
//! when a server starts. Tests run on many threads of one process, so the variables are
//! set once, to the same values, before the first server starts, and never changed.

use std::fmt;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use emporium_server::{Config, RunningServer};
use serde_json::{json, Value};
use ureq::http;

/// The first admin of every test server.
pub const ADMIN_EMAIL: &str = "admin@emporium.test";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
/// The password of every other account the tests create.
pub const PASSWORD: &str = "correct horse battery";
/// Longest a single request may take before the test fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read.
const RESPONSE_BYTES_MAX: u64 = 64 << 20;

static ADMIN_ENV: Once = Once::new();

fn set_admin_env() {
    ADMIN_ENV.call_once(|| {
        std::env::set_var("EMPORIUM_ADMIN_EMAIL", ADMIN_EMAIL);
        std::env::set_var("EMPORIUM_ADMIN_PASSWORD", ADMIN_PASSWORD);
    });
}

/// A test configuration: port 0 on loopback, cheap argon2, no rate limits.
pub fn config(data_dir: PathBuf) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        data_dir,
        password_hash_kib: 64,
        rate_limits: false,
        // Tests that count log entries must not see the outbox's; the notification
        // tests switch them on.
        notifications: emporium_server::notifications::NotificationSettings {
            sender: emporium_server::notifications::SenderKind::Off,
            ..Default::default()
        },
        ..Config::default()
    }
}

/// A client that returns 4xx and 5xx answers as responses, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

/// A running server on its own temporary directory; dropping it stops the server, then
/// removes the directory.
pub struct TestServer {
    server: Option<RunningServer>,
    /// The base URL of a server running elsewhere (another process), if this is one.
    remote: Option<String>,
    config: Config,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with the test configuration.
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    /// A server whose test configuration `adjust` changes first.
    pub fn with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        set_admin_env();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = config(dir.path().join("data"));
        adjust(&mut config);
        let server = RunningServer::start(config.clone()).expect("the server starts");
        TestServer { server: Some(server), remote: None, config, agent: agent(), _dir: dir }
    }

    /// A client of a server running elsewhere at `base_url` (`http://addr`).
    pub fn remote(base_url: &str) -> TestServer {
        set_admin_env();
        let dir = tempfile::tempdir().expect("a temporary directory");
        TestServer {
            server: None,
            remote: Some(base_url.to_string()),
            config: config(dir.path().join("data")),
            agent: agent(),
            _dir: dir,
        }
    }

    /// Stops the server gracefully and starts a new one on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the server gracefully; the data directory stays.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().expect("the server stops cleanly");
        }
    }

    /// Starts a server again on the data directory of the stopped one.
    pub fn start_again(&mut self) {
        self.server = Some(RunningServer::start(self.config.clone()).expect("the server restarts"));
    }

    /// The durable LSN `/readyz` reports: it moves with every write, and only then.
    pub fn durable_lsn(&self) -> u64 {
        self.get("/readyz").send().expect(200)["lsn"].as_u64().expect("readyz reports the LSN")
    }

    /// The running server's application (not for a remote server).
    pub fn app(&self) -> &std::sync::Arc<emporium_server::app::App> {
        self.server.as_ref().expect("a server in this process").app()
    }

    /// The server's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration the next start uses.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        match &self.remote {
            Some(base) => format!("{base}{path}"),
            None => self.server.as_ref().expect("the server runs").url(path),
        }
    }

    /// A request to send.
    pub fn req(&self, method: &str, path: &str) -> Req<'_> {
        Req {
            server: self,
            agent: self.agent.clone(),
            method: method.parse().expect("a valid method"),
            path: path.to_string(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(&self, path: &str) -> Req<'_> {
        self.req("GET", path)
    }

    pub fn post(&self, path: &str) -> Req<'_> {
        self.req("POST", path)
    }

    pub fn put(&self, path: &str) -> Req<'_> {
        self.req("PUT", path)
    }

    pub fn patch(&self, path: &str) -> Req<'_> {
        self.req("PATCH", path)
    }

    pub fn delete(&self, path: &str) -> Req<'_> {
        self.req("DELETE", path)
    }
}

/// A request being built.
pub struct Req<'a> {
    server: &'a TestServer,
    agent: ureq::Agent,
    method: http::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Req<'_> {
    /// Sends it through `agent` (its own connection pool) instead of the server's.
    pub fn via(mut self, agent: &ureq::Agent) -> Self {
        self.agent = agent.clone();
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `Authorization: Bearer token`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// A bearer token if there is one (anonymous otherwise).
    pub fn auth(self, token: Option<&str>) -> Self {
        match token {
            Some(token) => self.bearer(token),
            None => self,
        }
    }

    /// `Idempotency-Key: key`.
    pub fn key(self, key: &str) -> Self {
        self.header("idempotency-key", key)
    }

    /// A JSON body.
    pub fn json(self, body: Value) -> Self {
        let bytes = serde_json::to_vec(&body).expect("JSON serializes");
        self.body("application/json", bytes)
    }

    /// A form-encoded body.
    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        let encoded: Vec<String> =
            pairs.iter().map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v))).collect();
        self.body("application/x-www-form-urlencoded", encoded.join("&").into_bytes())
    }

    /// A body of any media type (`""`: no `Content-Type`).
    pub fn body(mut self, content_type: &str, bytes: Vec<u8>) -> Self {
        if !content_type.is_empty() {
            self = self.header("content-type", content_type);
        }
        self.body = Some(bytes);
        self
    }

    /// Sends it and reads the whole answer; a transport failure fails the test.
    pub fn send(self) -> Resp {
        let what = format!("{} {}", self.method, self.path);
        self.try_send().unwrap_or_else(|error| panic!("{what}: {error}"))
    }

    /// Sends it; `Err` on a transport failure (a refused or reset connection).
    pub fn try_send(self) -> Result<Resp, ureq::Error> {
        let mut builder =
            http::Request::builder().method(self.method.clone()).uri(self.server.url(&self.path));
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = match self.body {
            Some(body) => self.agent.run(builder.body(body).expect("a valid request")),
            None => self.agent.run(builder.body(()).expect("a valid request")),
        }?;
        Resp::read(response)
    }
}

/// Percent-encodes a form value (`application/x-www-form-urlencoded`).
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An answer: status, headers, the raw body and the body as JSON (`null` if it is not).
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub json: Value,
}

impl Resp {
    fn read(response: http::Response<ureq::Body>) -> Result<Resp, ureq::Error> {
        let (parts, mut body) = response.into_parts();
        let body = body.with_config().limit(RESPONSE_BYTES_MAX).read_to_vec()?;
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(Resp { status: parts.status.as_u16(), headers: parts.headers, body, json })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON body, after checking the status.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {self}");
        self.json
    }

    /// Checks an RFC 9457 problem answer: the status, the media type, `type`, `title`,
    /// `status`, `code`, and `request_id` equal to the `X-Request-Id` header. Returns the
    /// body.
    pub fn problem(self, status: u16, code: &str) -> Value {
        assert_eq!((self.status, self.json["code"].as_str()), (status, Some(code)), "{self}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self}");
        assert_eq!(self.json["type"], format!("/problems/{code}"), "{self}");
        assert_eq!(self.json["status"], status, "{self}");
        assert!(self.json["title"].as_str().is_some_and(|t| !t.is_empty()), "{self}");
        let request_id = self.header("x-request-id").expect("every answer has X-Request-Id");
        assert_eq!(self.json["request_id"], request_id, "{self}");
        self.json
    }

    /// The `field`s of a `validation_failed` problem.
    pub fn invalid_fields(self) -> Vec<String> {
        let body = self.problem(422, "validation_failed");
        body["errors"]
            .as_array()
            .expect("validation_failed lists its errors")
            .iter()
            .map(|e| e["field"].as_str().expect("each error names a field").to_string())
            .collect()
    }
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(2000).collect();
        write!(f, "{} {body}", self.status)
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A signed-in account.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub token: String,
    pub refresh: String,
}

/// An API client with its token.
#[derive(Clone, Debug)]
pub struct Client {
    pub id: String,
    pub secret: String,
    pub token: String,
}

impl TestServer {
    /// The password grant, as a form.
    pub fn password_grant(&self, email: &str, password: &str) -> Resp {
        self.post("/v1/auth/token")
            .form(&[("grant_type", "password"), ("username", email), ("password", password)])
            .send()
    }

    /// The first admin's access token.
    pub fn admin(&self) -> String {
        let body = self.password_grant(ADMIN_EMAIL, ADMIN_PASSWORD).expect(200);
        body["access_token"].as_str().expect("an access token").to_string()
    }

    /// Registers a customer and keeps the session registration answers with.
    pub fn register(&self, email: &str) -> Account {
        let body = self
            .post("/v1/auth/register")
            .json(json!({"email": email, "password": PASSWORD, "name": "Test Customer"}))
            .send()
            .expect(201);
        Account {
            id: body["customer"]["id"].as_str().expect("a customer id").to_string(),
            email: email.to_string(),
            token: body["access_token"].as_str().expect("an access token").to_string(),
            refresh: body["refresh_token"].as_str().expect("a refresh token").to_string(),
        }
    }

    /// Creates an account with `role` (as the admin `admin`) and signs it in.
    pub fn user(&self, admin: &str, email: &str, role: &str) -> Account {
        let body = self
            .post("/v1/admin/users")
            .bearer(admin)
            .json(json!({"email": email, "password": PASSWORD, "role": role}))
            .send()
            .expect(201);
        let tokens = self.password_grant(email, PASSWORD).expect(200);
        Account {
            id: body["id"].as_str().expect("an account id").to_string(),
            email: email.to_string(),
            token: tokens["access_token"].as_str().expect("an access token").to_string(),
            refresh: tokens["refresh_token"].as_str().expect("a refresh token").to_string(),
        }
    }

    /// Creates an API client with `scopes` and gets it a token (credentials in the body).
    pub fn client(&self, admin: &str, scopes: &[&str]) -> Client {
        let body = self
            .post("/v1/admin/api-clients")
            .bearer(admin)
            .json(json!({"name": format!("client {}", scopes.join(" ")), "scopes": scopes}))
            .send()
            .expect(201);
        let id = body["client_id"].as_str().expect("a client id").to_string();
        let secret = body["client_secret"].as_str().expect("a client secret").to_string();
        let tokens = self
            .post("/v1/auth/token")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ])
            .send()
            .expect(200);
        let token = tokens["access_token"].as_str().expect("an access token").to_string();
        Client { id, secret, token }
    }

    /// Creates an active product with one USD variant `sku` at `amount` and sets its
    /// stock to `on_hand`. Returns the product.
    pub fn product(&self, staff: &str, sku: &str, amount: i64, on_hand: i64) -> Value {
        let product = self
            .post("/v1/products")
            .bearer(staff)
            .json(product_body(sku, amount))
            .send()
            .expect(201);
        self.put(&format!("/v1/inventory/{sku}"))
            .bearer(staff)
            .json(json!({"on_hand": on_hand}))
            .send()
            .expect(200);
        product
    }

    /// A SKU's stock levels as `(on_hand, reserved, available)`.
    pub fn stock(&self, staff: &str, sku: &str) -> (u64, u64, u64) {
        let body = self.get(&format!("/v1/inventory/{sku}")).bearer(staff).send().expect(200);
        let field = |name: &str| body[name].as_u64().expect("stock levels are counts");
        (field("on_hand"), field("reserved"), field("available"))
    }

    /// Opens a cart (owned with a customer token, else a guest cart); returns its id.
    pub fn cart(&self, token: Option<&str>) -> String {
        let body = self.post("/v1/carts").auth(token).send().expect(201);
        body["id"].as_str().expect("a cart id").to_string()
    }

    /// Adds `quantity` units of `sku` to a cart.
    pub fn add(&self, token: Option<&str>, cart: &str, sku: &str, quantity: i64) -> Resp {
        self.post(&format!("/v1/carts/{cart}/items"))
            .auth(token)
            .json(json!({"sku": sku, "quantity": quantity}))
            .send()
    }

    /// Checks a cart out with an Idempotency-Key.
    pub fn checkout(&self, token: Option<&str>, cart: &str, key: &str, body: Value) -> Resp {
        self.post(&format!("/v1/carts/{cart}/checkout")).auth(token).key(key).json(body).send()
    }

    /// A pending order of `quantity` units of `sku`: a guest order without a token (with
    /// a guest email), else the token owner's. Returns the order.
    pub fn order(&self, token: Option<&str>, sku: &str, quantity: i64) -> Value {
        let cart = self.cart(token);
        self.add(token, &cart, sku, quantity).expect(200);
        let body = match token {
            None => json!({"email": "guest@example.com"}),
            Some(_) => json!({}),
        };
        self.checkout(token, &cart, &format!("checkout-{cart}"), body).expect(201)
    }

    /// Pays an order with a test card token.
    pub fn pay(&self, token: Option<&str>, order: &str, key: &str, card: &str) -> Resp {
        self.post(&format!("/v1/orders/{order}/payments"))
            .auth(token)
            .key(key)
            .json(json!({"method": "test_card", "token": card}))
            .send()
    }
}

/// The version an answer's ETag (`"VERSION-HASH"`) names.
pub fn etag_version(answer: &Resp) -> Option<u64> {
    let tag = answer.header("etag")?.trim_matches('"');
    tag.split_once('-').map_or(tag, |(version, _)| version).parse().ok()
}

/// An active product with one USD variant.
pub fn product_body(sku: &str, amount: i64) -> Value {
    json!({
        "title": format!("Product {sku}"),
        "description": "A product made for tests.",
        "brand": "Acme",
        "status": "active",
        "variants": [{
            "sku": sku,
            "title": "One size",
            "options": {"size": "M"},
            "price": {"amount": amount, "currency": "USD"}
        }]
    })
}

/// A string field of a JSON value.
pub fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {value}"))
}
