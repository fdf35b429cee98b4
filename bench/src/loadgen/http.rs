//! The load generator's HTTP/1.1 client: one keep-alive connection per virtual client,
//! requests sent one after another on it (no pipelining), bodies read whole.
//!
//! It is deliberately thin — hyper's client connection over a tokio `TcpStream`, no
//! pool, no redirects, no retries — so that on a two-core machine it leaves as much CPU
//! as possible to the server under test. It never interprets a response: checking what
//! came back is the caller's job ([`super::check`]).

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The media type of a JSON body.
pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// What came back.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` (empty when absent).
    pub content_type: HeaderValue,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// Whether the body was declared as JSON (`application/json` or a `+json` type).
    pub fn is_json(&self) -> bool {
        let media = self.content_type.as_bytes();
        let media = media.split(|&b| b == b';').next().unwrap_or_default();
        media == b"application/json" || media.ends_with(b"+json")
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr` (TCP_NODELAY on, as every HTTP benchmark client does).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream =
            TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        // The connection task drives the socket; it ends when the sender is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid host");
        Ok(Conn { addr, host, sender })
    }

    /// The address it is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the server closed the connection (a reconnect is needed).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<Bytes>,
    ) -> anyhow::Result<Reply> {
        let mut request = Request::builder().method(method).uri(path).header(HOST, &self.host);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let has_body = body.is_some();
        if has_body {
            request = request.header(CONTENT_TYPE, JSON);
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        self.sender.ready().await.context("the connection is closed")?;
        let response = self.sender.send_request(request).await.context("sending the request")?;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static(""));
        let body = response.into_body().collect().await.context("reading the body")?.to_bytes();
        Ok(Reply { status, content_type, body })
    }

    /// `GET path`.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> anyhow::Result<Reply> {
        self.send(Method::GET, path, headers, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Reply> {
        self.send(Method::POST, path, headers, Some(body.into())).await
    }
}

/// `Authorization: Bearer token`.
pub fn bearer(token: &str) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is header-safe");
    (http::header::AUTHORIZATION, value)
}

/// `Idempotency-Key: key`.
pub fn idempotency(key: &str) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(key).expect("idempotency keys are printable ASCII");
    (HeaderName::from_static("idempotency-key"), value)
}
