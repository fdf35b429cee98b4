//! The workloads: what each virtual client does in one transaction, against Emporium
//! over HTTP or against a baseline through its own driver. Each module owns one
//! workload; the helpers here time, check and record one HTTP request.

pub mod checkout;
pub mod flash;
pub mod micro;
pub mod storefront;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde::de::DeserializeOwned;

use super::check::{self, Verdict};
use super::http::{Conn, Reply};
use super::stats::Recorder;

/// One request to make.
pub struct Req<'a> {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub path: &'a str,
    /// Extra headers.
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// A JSON body.
    pub body: Option<Bytes>,
}

impl<'a> Req<'a> {
    /// `GET path`.
    pub fn get(path: &'a str) -> Req<'a> {
        Req { method: Method::GET, path, headers: &[], body: None }
    }

    /// `POST path` with a JSON body.
    pub fn post(path: &'a str, body: impl Into<Bytes>) -> Req<'a> {
        Req { method: Method::POST, path, headers: &[], body: Some(body.into()) }
    }

    /// With these headers.
    pub fn with(self, headers: &'a [(HeaderName, HeaderValue)]) -> Req<'a> {
        Req { headers, ..self }
    }
}

/// Sends `req`, checks the answer (status `want` with a body of shape `T`, or a
/// problem whose code is one of `refusals`), records it as `op`, and answers the parsed
/// body with the verdict. `Err` means no answer came (the connection broke).
pub async fn call<T: DeserializeOwned>(
    conn: &mut Conn,
    rec: &mut Recorder,
    op: &'static str,
    req: Req<'_>,
    want: u16,
    refusals: &[&str],
) -> anyhow::Result<(Option<T>, Verdict)> {
    let started = Instant::now();
    let reply = match conn.send(req.method, req.path, req.headers, req.body).await {
        Ok(reply) => reply,
        Err(error) => {
            rec.transport_error(op);
            return Err(error);
        }
    };
    let finished = Instant::now();
    let (body, verdict) = classify::<T>(&reply, want, refusals);
    rec.answer(op, reply.status, verdict, started, finished);
    Ok((body, verdict))
}

/// The verdict on `reply` as [`call`] gives it.
pub fn classify<T: DeserializeOwned>(
    reply: &Reply,
    want: u16,
    refusals: &[&str],
) -> (Option<T>, Verdict) {
    if reply.status == want {
        check::success::<T>(reply, want)
    } else {
        (None, check::failure(reply, refusals))
    }
}

/// The worse of two verdicts (for a transaction of several requests).
pub fn worse(a: Verdict, b: Verdict) -> Verdict {
    fn rank(v: Verdict) -> u8 {
        match v {
            Verdict::Ok => 0,
            Verdict::Refused => 1,
            Verdict::Unexpected => 2,
            Verdict::Malformed => 3,
            Verdict::ServerError => 4,
        }
    }
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// A virtual client that only needs a connection.
pub struct HttpClient {
    /// Its connection.
    pub conn: Conn,
}

impl HttpClient {
    /// Connects.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<HttpClient> {
        Ok(HttpClient { conn: Conn::connect(addr).await? })
    }

    /// Re-opens the connection.
    pub async fn reconnect(&mut self) -> anyhow::Result<()> {
        self.conn = Conn::connect(self.conn.addr()).await?;
        Ok(())
    }
}
