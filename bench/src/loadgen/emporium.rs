//! Preparing Emporium for a workload through its public API, as an admin: signing in,
//! creating products and SKUs with stock and flash sales of them, registering buyers,
//! opening and filling guest carts, reading stock levels and sales back. Everything here runs outside the measured window, many
//! connections at once so that group commit makes it quick.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::check::{self, Cart, Inventory, Page, Product};
use super::http::{bearer, Conn, Reply};

/// Connections used while preparing data.
pub const PREPARE_CONNECTIONS: usize = 128;

/// An admin's session.
#[derive(Clone)]
pub struct Admin {
    /// The server.
    pub addr: SocketAddr,
    auth: (HeaderName, HeaderValue),
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

impl Admin {
    /// Signs in with the password grant.
    pub async fn sign_in(addr: SocketAddr, email: &str, password: &str) -> anyhow::Result<Admin> {
        let mut conn = Conn::connect(addr).await?;
        let form = format!(
            "grant_type=password&username={}&password={}",
            form_escape(email),
            form_escape(password)
        );
        let headers = [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )];
        let reply = conn
            .send(http::Method::POST, "/v1/auth/token", &headers, Some(form.into_bytes().into()))
            .await?;
        if reply.status != 200 {
            bail!("signing in as {email}: {} {}", reply.status, text(&reply));
        }
        let token: Token = serde_json::from_slice(&reply.body).context("the token answer")?;
        Ok(Admin { addr, auth: bearer(&token.access_token) })
    }

    /// The `Authorization` header.
    pub fn auth(&self) -> &(HeaderName, HeaderValue) {
        &self.auth
    }

    /// Creates active products of one variant each, `(sku, price in cents)`, and sets
    /// each SKU's units on hand; answers the products in the same order.
    pub async fn create_skus(
        &self,
        skus: Vec<(String, i64, u64)>,
        title_prefix: &str,
    ) -> anyhow::Result<Vec<Product>> {
        let admin = Arc::new(self.clone());
        let prefix = title_prefix.to_string();
        parallel(self.addr, skus, PREPARE_CONNECTIONS, move |mut conn, (sku, price, on_hand)| {
            let admin = admin.clone();
            let prefix = prefix.clone();
            async move {
                let result = admin.create_sku(&mut conn, &prefix, &sku, price, on_hand).await;
                (conn, result)
            }
        })
        .await
    }

    async fn create_sku(
        &self,
        conn: &mut Conn,
        title_prefix: &str,
        sku: &str,
        price: i64,
        on_hand: u64,
    ) -> anyhow::Result<Product> {
        let body = serde_json::json!({
            "title": format!("{title_prefix} {sku}"),
            "description": "A product made by the load generator.",
            "brand": "Acme",
            "status": "active",
            "variants": [{"sku": sku, "price": {"amount": price, "currency": "USD"}}],
        });
        let reply =
            conn.post("/v1/products", std::slice::from_ref(&self.auth), body.to_string()).await?;
        let product: Product = expect(&reply, 201, "creating a product")?;
        let body = serde_json::json!({"on_hand": on_hand, "reason": "load generator"});
        let reply = conn
            .send(
                http::Method::PUT,
                &format!("/v1/inventory/{sku}"),
                std::slice::from_ref(&self.auth),
                Some(body.to_string().into()),
            )
            .await?;
        let _: Inventory = expect(&reply, 200, "setting stock")?;
        Ok(product)
    }

    /// A 10 % discount code, a flat 4.99 shipping method and a 7.25 % tax rate for
    /// California, all named after `tag`; answers the code and the method's id.
    pub async fn create_promotion(&self, tag: &str) -> anyhow::Result<(String, String)> {
        let mut conn = Conn::connect(self.addr).await?;
        let auth = std::slice::from_ref(&self.auth);
        let code = format!("PROMO{tag}");
        let body = serde_json::json!({"code": code, "percent_off": 10});
        let reply = conn.post("/v1/discount-codes", auth, body.to_string()).await?;
        let _: serde_json::Value = expect(&reply, 201, "creating a discount code")?;
        let body = serde_json::json!({"name": format!("Standard {tag}"), "currency": "USD",
                                      "rate": {"type": "flat", "amount": 499}});
        let reply = conn.post("/v1/shipping-methods", auth, body.to_string()).await?;
        let method: serde_json::Value = expect(&reply, 201, "creating a shipping method")?;
        let id = method["id"].as_str().context("the method's id")?.to_string();
        let body = serde_json::json!({"rate_bp": 725}).to_string();
        let reply =
            conn.send(http::Method::PUT, "/v1/tax-rates/US-CA", auth, Some(body.into())).await?;
        let _: serde_json::Value = expect(&reply, 200, "setting a tax rate")?;
        Ok((code, id))
    }

    /// A SKU's stock levels.
    pub async fn inventory(&self, sku: &str) -> anyhow::Result<Inventory> {
        let mut conn = Conn::connect(self.addr).await?;
        self.inventory_on(&mut conn, sku).await
    }

    /// A SKU's stock levels, on an open connection.
    pub async fn inventory_on(&self, conn: &mut Conn, sku: &str) -> anyhow::Result<Inventory> {
        let reply =
            conn.get(&format!("/v1/inventory/{sku}"), std::slice::from_ref(&self.auth)).await?;
        expect(&reply, 200, "reading stock")
    }

    /// Every active product (all pages of `GET /v1/products`).
    pub async fn products(&self) -> anyhow::Result<Vec<Product>> {
        let mut conn = Conn::connect(self.addr).await?;
        let mut products = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => "/v1/products?limit=100&status=active".to_string(),
                Some(c) => format!("/v1/products?limit=100&status=active&cursor={c}"),
            };
            let page: Page<Product> = expect(&conn.get(&path, &[]).await?, 200, "listing")?;
            products.extend(page.data);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(products),
            }
        }
    }

    /// Category ids (first page of 100).
    pub async fn categories(&self) -> anyhow::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Category {
            id: String,
        }
        let mut conn = Conn::connect(self.addr).await?;
        let page: Page<Category> =
            expect(&conn.get("/v1/categories?limit=100", &[]).await?, 200, "categories")?;
        Ok(page.data.into_iter().map(|c| c.id).collect())
    }
}

/// A flash sale as the server shows it.
#[derive(Deserialize, Debug)]
pub struct FlashSale {
    /// The id.
    pub id: String,
    /// `scheduled`, `live`, `sold_out`, `ended` or `cancelled`.
    pub status: String,
    /// The allocation.
    pub quantity: u64,
    /// Units not yet taken.
    pub remaining: u64,
    /// Units in pending orders.
    pub reserved: u64,
    /// Units paid.
    pub sold: u64,
}

impl Admin {
    /// Starts a sale of `quantity` units of `sku` at `price` cents, live at once for
    /// two hours, with a cap of `per_customer_limit` units per customer.
    pub async fn create_flash_sale(
        &self,
        sku: &str,
        price: i64,
        quantity: u64,
        per_customer_limit: u32,
    ) -> anyhow::Result<FlashSale> {
        let now = time::OffsetDateTime::now_utc();
        let stamp = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339).expect("a UTC time formats")
        };
        let body = serde_json::json!({
            "sku": sku,
            "price": {"amount": price, "currency": "USD"},
            "quantity": quantity,
            "per_customer_limit": per_customer_limit,
            "starts_at": stamp(now - time::Duration::seconds(1)),
            "ends_at": stamp(now + time::Duration::hours(2)),
        });
        let mut conn = Conn::connect(self.addr).await?;
        let reply = conn
            .post("/v1/flash-sales", std::slice::from_ref(&self.auth), body.to_string())
            .await?;
        expect(&reply, 201, "creating a flash sale")
    }
}

/// A flash sale's current state (a public read).
pub async fn flash_sale(addr: SocketAddr, id: &str) -> anyhow::Result<FlashSale> {
    let mut conn = Conn::connect(addr).await?;
    expect(&conn.get(&format!("/v1/flash-sales/{id}"), &[]).await?, 200, "reading a flash sale")
}

/// Connections that register buyers: a few, as password hashing has its own small
/// concurrency bound on the server.
const REGISTER_CONNECTIONS: usize = 8;

/// Registers `count` customers (`buyer-{tag}-{i}@example.com`) and answers each one's
/// `Authorization` header, in order. A 503 (every hashing slot busy) is waited out.
pub async fn register_buyers(
    addr: SocketAddr,
    tag: &str,
    count: usize,
) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    #[derive(Deserialize)]
    struct Registered {
        access_token: String,
    }
    let emails = (0..count).map(|i| format!("buyer-{tag}-{i}@example.com")).collect();
    parallel(addr, emails, REGISTER_CONNECTIONS, |mut conn, email: String| async move {
        let body = serde_json::json!({"email": email, "password": "flash-sale-buyer"});
        let result = async {
            loop {
                let reply = conn.post("/v1/auth/register", &[], body.to_string()).await?;
                if reply.status == 503 || reply.status == 429 {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                let registered: Registered = expect(&reply, 201, "registering a buyer")?;
                return Ok(bearer(&registered.access_token));
            }
        }
        .await;
        (conn, result)
    })
    .await
}

/// Opens guest carts holding the given lines (`(sku, quantity)` each), with the
/// discount `code` entered when there is one; answers their ids in the same order.
pub async fn prepare_carts(
    addr: SocketAddr,
    carts: Vec<Vec<(String, u32)>>,
    code: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let code = code.map(str::to_string);
    parallel(addr, carts, PREPARE_CONNECTIONS, move |mut conn, lines| {
        let code = code.clone();
        async move {
            let result = fill_cart(&mut conn, &lines, code.as_deref()).await;
            (conn, result)
        }
    })
    .await
}

async fn fill_cart(
    conn: &mut Conn,
    lines: &[(String, u32)],
    code: Option<&str>,
) -> anyhow::Result<String> {
    let cart: Cart = expect(&conn.post("/v1/carts", &[], "{}").await?, 201, "opening a cart")?;
    let path = format!("/v1/carts/{}/items", cart.id);
    for (sku, quantity) in lines {
        let body = format!(r#"{{"sku":"{sku}","quantity":{quantity}}}"#);
        let _: Cart = expect(&conn.post(&path, &[], body).await?, 200, "adding to a cart")?;
    }
    if let Some(code) = code {
        let path = format!("/v1/carts/{}/discount-codes", cart.id);
        let body = format!(r#"{{"code":"{code}"}}"#);
        let _: Cart = expect(&conn.post(&path, &[], body).await?, 200, "entering a code")?;
    }
    Ok(cart.id)
}

/// Whether the server answers `GET /v1/search` (404 `not_found` means the endpoint
/// does not exist yet).
pub async fn search_exists(addr: SocketAddr) -> anyhow::Result<bool> {
    let mut conn = Conn::connect(addr).await?;
    let reply = conn.get("/v1/search?q=shirt&limit=5", &[]).await?;
    Ok(match reply.status {
        200 => true,
        404 => !matches!(check::problem(&reply), Some(p) if p.code == "not_found"),
        _ => true,
    })
}

/// The body of an answer of status `want`, or an error naming `what` and the answer.
pub fn expect<T: serde::de::DeserializeOwned>(
    reply: &Reply,
    want: u16,
    what: &str,
) -> anyhow::Result<T> {
    if reply.status != want {
        bail!("{what}: expected {want}, got {} {}", reply.status, text(reply));
    }
    serde_json::from_slice(&reply.body).with_context(|| format!("{what}: {}", text(reply)))
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned()
}

/// `value` percent-encoded for a query string or form (unreserved characters as they are).
pub fn form_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `job` over `items` on `connections` connections to `addr` at once (connection
/// `c` takes items `c, c + connections, …`), and answers the results in item order.
/// A job gets its connection by value and hands it back, so it may keep it open.
pub async fn parallel<T, R, F, Fut>(
    addr: SocketAddr,
    items: Vec<T>,
    connections: usize,
    job: F,
) -> anyhow::Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Conn, T) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = (Conn, anyhow::Result<R>)> + Send + 'static,
{
    let total = items.len();
    let connections = connections.clamp(1, total.max(1));
    let mut shares: Vec<Vec<(usize, T)>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % connections].push((i, item));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for share in shares {
        let job = job.clone();
        tasks.spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            let mut out = Vec::with_capacity(share.len());
            for (i, item) in share {
                let (back, result) = job(conn, item).await;
                conn = back;
                out.push((i, result?));
            }
            anyhow::Ok(out)
        });
    }
    let mut results: Vec<Option<R>> = (0..total).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        for (i, r) in joined?? {
            results[i] = Some(r);
        }
    }
    Ok(results.into_iter().map(|r| r.expect("every item ran")).collect())
}
