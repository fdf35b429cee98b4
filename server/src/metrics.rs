//! Prometheus metrics: requests by route and status, latency histograms, rate-limit
//! rejections, caught panics, failed logins, and the engine's queue and group commit.

use std::sync::atomic::Ordering;

use emporium_engine::Engine;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    rate_limited: Family<ClassLabels, Counter>,
    panics: Counter,
    failed_logins: Counter,
    connections_refused: Counter,
    queue_depth: Gauge,
    group_size: Gauge,
    groups: Gauge,
    commands: Gauge,
    sync_seconds_total: Gauge<f64, std::sync::atomic::AtomicU64>,
    log_bytes: Gauge,
    materializer_lag: Gauge,
    log_entries_held: Gauge,
    carts_open: Gauge,
    carts_abandoned: Gauge,
    orders: Gauge,
    storage_memory: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("emporium");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let rate_limited = Family::<ClassLabels, Counter>::default();
        let panics = Counter::default();
        let failed_logins = Counter::default();
        let connections_refused = Counter::default();
        let queue_depth = Gauge::default();
        let group_size = Gauge::default();
        let groups = Gauge::default();
        let commands = Gauge::default();
        let sync_seconds_total = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let log_bytes = Gauge::default();
        let materializer_lag = Gauge::default();
        let log_entries_held = Gauge::default();
        let carts_open = Gauge::default();
        let carts_abandoned = Gauge::default();
        let orders = Gauge::default();
        let storage_memory = Gauge::default();
        registry.register("orders", "Orders held, every status", orders.clone());
        registry.register(
            "storage_memory_bytes",
            "Memory the storage backend holds: RocksDB's memtables and block cache",
            storage_memory.clone(),
        );
        registry.register(
            "engine_log_bytes",
            "Bytes of log payload written: everything the synced writes carry",
            log_bytes.clone(),
        );
        registry.register(
            "engine_materializer_lag_lsn",
            "Durable log entries whose rows the materializer has not written yet",
            materializer_lag.clone(),
        );
        registry.register(
            "engine_log_entries_held",
            "Log entries kept by retention (from the first held to the durable LSN)",
            log_entries_held.clone(),
        );
        registry.register("carts_open", "Open carts", carts_open.clone());
        registry.register(
            "carts_abandoned",
            "Open carts dropped after their time to live without a change (cart abandonment)",
            carts_abandoned.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by route class",
            rate_limited.clone(),
        );
        registry.register("handler_panics", "Panics caught in request handlers", panics.clone());
        registry.register(
            "failed_logins",
            "Failed password and client-secret checks",
            failed_logins.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at once: past the total or the per-client cap",
            connections_refused.clone(),
        );
        registry.register(
            "engine_queue_depth",
            "Commands waiting for the sequencer",
            queue_depth.clone(),
        );
        registry.register(
            "engine_group_commit_size",
            "Commands in the last commit group",
            group_size.clone(),
        );
        registry.register(
            "engine_groups_committed",
            "Commit groups written (one sync each)",
            groups.clone(),
        );
        registry.register(
            "engine_commands_committed",
            "Commands acknowledged after their group synced",
            commands.clone(),
        );
        registry.register(
            "engine_sync_seconds",
            "Total time spent in synced writes",
            sync_seconds_total.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            rate_limited,
            panics,
            failed_logins,
            connections_refused,
            queue_depth,
            group_size,
            groups,
            commands,
            sync_seconds_total,
            log_bytes,
            materializer_lag,
            log_entries_held,
            carts_open,
            carts_abandoned,
            orders,
            storage_memory,
        }
    }

    /// Records one answered request.
    pub fn request(&self, route: &'static str, method: &http::Method, status: u16, seconds: f64) {
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::PATCH => "PATCH",
            http::Method::DELETE => "DELETE",
            http::Method::HEAD => "HEAD",
            _ => "OTHER",
        };
        self.requests.get_or_create(&RequestLabels { route, method, status }).inc();
        self.latency.get_or_create(&RouteLabels { route }).observe(seconds);
    }

    /// Records a rate-limit refusal.
    pub fn rate_limited(&self, class: &'static str) {
        self.rate_limited.get_or_create(&ClassLabels { class }).inc();
    }

    /// Records a caught panic.
    pub fn panic(&self) {
        self.panics.inc();
    }

    /// Records a failed login.
    pub fn failed_login(&self) {
        self.failed_logins.inc();
    }

    /// Records a connection refused past a cap.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// The exposition text, with the engine's figures read now.
    pub fn render(&self, engine: &Engine) -> String {
        let stats = engine.stats();
        self.queue_depth.set(engine.queue_depth() as i64);
        self.group_size.set(stats.last_group_commands.load(Ordering::Relaxed) as i64);
        self.groups.set(stats.groups_committed.load(Ordering::Relaxed) as i64);
        self.commands.set(stats.commands_committed.load(Ordering::Relaxed) as i64);
        self.sync_seconds_total.set(stats.sync_nanos_total.load(Ordering::Relaxed) as f64 / 1e9);
        self.log_bytes.set(stats.log_bytes_total.load(Ordering::Relaxed) as i64);
        let durable = engine.durable_lsn().0;
        self.materializer_lag.set(durable.saturating_sub(engine.materialized_lsn().0) as i64);
        let held = (durable + 1).saturating_sub(engine.first_log_lsn().0);
        self.log_entries_held.set(held as i64);
        self.carts_open.set(engine.state().open_cart_count() as i64);
        self.carts_abandoned.set(engine.state().carts_abandoned() as i64);
        self.orders.set(engine.state().order_count() as i64);
        self.storage_memory.set(engine.storage_memory_bytes().unwrap_or(0) as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
