#![recursion_limit = "512"]
// `Problem` (136 bytes) is the error of every handler; it is built on the cold path
// and moved a few times, which costs nothing next to a request's I/O.
#![allow(clippy::result_large_err)]
//! Emporium's HTTP server: the contract of `API.md` on hyper 1.x (HTTP/1.1 keep-alive
//! and HTTP/2, TLS with rustls), with accounts and auth, rate limits, validation,
//! idempotency, caching headers and Prometheus metrics. No web framework: a route
//! table, a matcher and a pipeline.

pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod feed;
pub mod gateway;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod routes;
pub mod search_threads;
pub mod server;
pub mod standby;
pub mod webhooks;
pub mod wire;

pub use config::{Config, ServeArgs};
pub use server::{RunningServer, Server};
