//! The HTTP micro-workloads: one product's JSON fetched again and again (from Emporium,
//! or from nginx as a static file — the same bytes), and add-to-cart.

use std::net::SocketAddr;

use crate::loadgen::check::{Cart, Product, Verdict};
use crate::loadgen::driver::{Cx, Step, Workload};
use crate::loadgen::workloads::{call, HttpClient, Req};

/// `GET path` answering one product's JSON.
pub struct ProductGet {
    /// The server.
    pub addr: SocketAddr,
    /// `/v1/products/{id}` on Emporium, the static file's path on nginx.
    pub path: String,
}

impl Workload for ProductGet {
    type Client = HttpClient;

    fn unit(&self) -> &'static str {
        "GET product"
    }

    async fn connect(&self, _index: usize) -> anyhow::Result<HttpClient> {
        HttpClient::connect(self.addr).await
    }

    async fn reconnect(&self, client: &mut HttpClient) -> anyhow::Result<()> {
        client.reconnect().await
    }

    async fn step(&self, client: &mut HttpClient, cx: &mut Cx) -> Step {
        let op = "GET product (request)";
        match call::<Product>(&mut client.conn, &mut cx.rec, op, Req::get(&self.path), 200, &[])
            .await
        {
            Ok((_, verdict)) => Step::Done(verdict),
            Err(error) => Step::Broken(error),
        }
    }
}

/// Add-to-cart on a guest cart: one unit of one of a few SKUs in turn, so a cart grows
/// to a handful of lines; a client opens a fresh cart before any line would pass the
/// per-line quantity limit.
pub struct AddToCart {
    /// The server.
    pub addr: SocketAddr,
    /// The SKUs added in turn.
    pub skus: Vec<String>,
}

/// Units added to one line before the client moves to a new cart (the contract allows
/// up to 1000 per line).
const UNITS_PER_LINE_MAX: u64 = 1000;

/// A client of [`AddToCart`].
pub struct CartClient {
    http: HttpClient,
    cart_path: String,
    added: u64,
}

impl AddToCart {
    async fn open_cart(&self, client: &mut CartClient, cx: &mut Cx) -> anyhow::Result<Verdict> {
        let (cart, verdict) = call::<Cart>(
            &mut client.http.conn,
            &mut cx.rec,
            "open cart",
            Req::post("/v1/carts", "{}"),
            201,
            &[],
        )
        .await?;
        if let Some(cart) = cart {
            client.cart_path = format!("/v1/carts/{}/items", cart.id);
            client.added = 0;
        }
        Ok(verdict)
    }
}

impl Workload for AddToCart {
    type Client = CartClient;

    fn unit(&self) -> &'static str {
        "add to cart"
    }

    async fn connect(&self, _index: usize) -> anyhow::Result<CartClient> {
        let http = HttpClient::connect(self.addr).await?;
        Ok(CartClient { http, cart_path: String::new(), added: u64::MAX })
    }

    async fn reconnect(&self, client: &mut CartClient) -> anyhow::Result<()> {
        client.http.reconnect().await
    }

    async fn step(&self, client: &mut CartClient, cx: &mut Cx) -> Step {
        let lines = self.skus.len() as u64;
        if client.added >= lines * UNITS_PER_LINE_MAX {
            match self.open_cart(client, cx).await {
                Ok(Verdict::Ok) => {}
                Ok(verdict) => return Step::Done(verdict),
                Err(error) => return Step::Broken(error),
            }
        }
        let sku = &self.skus[(client.added % lines) as usize];
        let body = format!(r#"{{"sku":"{sku}","quantity":1}}"#);
        let req = Req::post(&client.cart_path, body);
        match call::<Cart>(
            &mut client.http.conn,
            &mut cx.rec,
            "add to cart (request)",
            req,
            200,
            &[],
        )
        .await
        {
            Ok((cart, verdict)) => {
                client.added += 1;
                let expected_lines = client.added.min(lines) as usize;
                let shape_ok = cart.is_none_or(|c| c.items.len() == expected_lines);
                Step::Done(if shape_ok { verdict } else { Verdict::Malformed })
            }
            Err(error) => Step::Broken(error),
        }
    }
}

/// `GET /v1/search` with a query of a prepared mix, drawn at random per request.
pub struct SearchGet {
    /// The server.
    pub addr: SocketAddr,
    /// Paths with their query strings.
    pub paths: Vec<String>,
}

/// What the check needs of a search answer.
#[derive(serde::Deserialize)]
pub struct SearchAnswer {
    /// Products matching in all.
    pub total: u64,
}

impl Workload for SearchGet {
    type Client = HttpClient;

    fn unit(&self) -> &'static str {
        "search"
    }

    async fn connect(&self, _index: usize) -> anyhow::Result<HttpClient> {
        HttpClient::connect(self.addr).await
    }

    async fn reconnect(&self, client: &mut HttpClient) -> anyhow::Result<()> {
        client.reconnect().await
    }

    async fn step(&self, client: &mut HttpClient, cx: &mut Cx) -> Step {
        use rand::Rng;
        let path = &self.paths[cx.rng.random_range(0..self.paths.len())];
        let op = "GET /v1/search";
        match call::<SearchAnswer>(&mut client.conn, &mut cx.rec, op, Req::get(path), 200, &[])
            .await
        {
            Ok((_, verdict)) => Step::Done(verdict),
            Err(error) => Step::Broken(error),
        }
    }
}
