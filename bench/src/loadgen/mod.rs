//! The load generator: drives Emporium's HTTP API — and PostgreSQL, Redis and nginx
//! doing the same jobs — with the same clients, concurrency and accounting, and reports
//! throughput, latency and correctness side by side.
//!
//! - [`http`] is the lean keep-alive HTTP/1.1 client, [`baseline`] the PostgreSQL and
//!   Redis drivers with their SQL and Lua.
//! - [`driver`] runs a [`driver::Workload`] closed-loop or open-loop (with
//!   coordinated-omission correction), [`stats`] keeps the HDR histograms and
//!   correctness counts, [`check`] says what a well-formed answer is.
//! - [`workloads`] holds what one client does per transaction, [`suite`] the measured
//!   sequences (concurrency sweeps, sell-out rounds) and their post-run checks, and
//!   [`report`] turns the results into the tables and charts of `BENCHMARKS.md`.
//! - [`soak`] holds the storefront at a share of saturation for a long run and checks
//!   memory, errors and stock at the end (`scripts/soak`, figures in `RELIABILITY.md`).
//!
//! The generator never starts or stops servers: `scripts/bench` and
//! `scripts/baselines` do, one server under load at a time.

pub mod baseline;
pub mod check;
pub mod cpu;
pub mod driver;
pub mod emporium;
pub mod http;
pub mod report;
pub mod resp;
pub mod search;
pub mod soak;
pub mod stats;
pub mod suite;
pub mod workloads;
