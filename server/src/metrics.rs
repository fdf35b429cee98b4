//! Prometheus metrics: requests by route and status, latency histograms, rate-limit
//! rejections, caught panics, failed logins, and the engine's queue and group commit.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use emporium_engine::{Engine, PaymentProcessor};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::routes::Route;

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

/// The statuses whose request counters a route keeps at hand, for its own method; any
/// other status (or a `HEAD` of a `GET` route) is counted through the family's map.
const STATUSES_AT_HAND: [u16; 16] =
    [200, 201, 202, 204, 304, 400, 401, 403, 404, 409, 412, 415, 422, 428, 429, 503];

/// One route's series, each taken from its family on the route's first request that
/// needs it and kept: the families hash their labels (SipHash) under a lock on every
/// lookup, about 2.5% of a cheap request's instructions. Clones share their values, so
/// the exposition is the families' as before.
#[derive(Default)]
struct RouteSeries {
    latency: OnceLock<Histogram>,
    requests: [OnceLock<Counter>; STATUSES_AT_HAND.len()],
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    /// By [`crate::routes::index`].
    routes: Box<[RouteSeries]>,
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
    rows_materialized: Gauge,
    materializer_batches: Gauge,
    materializer_lag: Gauge,
    log_entries_held: Gauge,
    carts_open: Gauge,
    carts_abandoned: Gauge,
    orders: Gauge,
    orders_in_memory: Gauge,
    idempotency_records: Gauge,
    idempotency_records_in_memory: Gauge,
    storage_memory: Gauge,
    payment_calls_open: Gauge,
    provider_calls: Gauge,
    provider_failures: Gauge,
    kpi_counts: StandbyFamily,
    kpi_amounts: StandbyFamily,
    replication: ReplicationGauges,
}

type StandbyFamily = Family<Vec<(String, String)>, Gauge>;

/// Replication, on either side.
#[derive(Default)]
struct ReplicationGauges {
    standby: Gauge,
    epoch: Gauge,
    standbys_connected: Gauge,
    lag_lsn: StandbyFamily,
    lag_ms: StandbyFamily,
    shipped_bytes: Gauge,
    sessions: Gauge,
    checkpoints_sent: Gauge,
    sync_degraded: Gauge,
    sync_refused: Gauge,
    primary_lag_lsn: Gauge,
    primary_connected: Gauge,
    reconnects: Gauge,
    resyncs: Gauge,
    bootstraps: Gauge,
    received_bytes: Gauge,
}

impl ReplicationGauges {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("replication");
        r.register("standby", "1 on a standby, 0 on a primary", self.standby.clone());
        r.register("epoch", "The node's epoch", self.epoch.clone());
        r.register(
            "standbys_connected",
            "Standbys following this node",
            self.standbys_connected.clone(),
        );
        r.register(
            "lag_lsn",
            "Log entries durable here that a standby has not acknowledged",
            self.lag_lsn.clone(),
        );
        r.register(
            "lag_ms",
            "How long a standby's oldest unacknowledged entry has waited",
            self.lag_ms.clone(),
        );
        r.register("shipped_bytes", "Bytes shipped to standbys", self.shipped_bytes.clone());
        r.register("sessions", "Standby sessions opened", self.sessions.clone());
        r.register(
            "checkpoints_sent",
            "Checkpoints streamed to standbys that (re)bootstrapped",
            self.checkpoints_sent.clone(),
        );
        r.register(
            "sync_degraded",
            "1 while writes are acknowledged without their synchronous standbys",
            self.sync_degraded.clone(),
        );
        r.register(
            "sync_refused",
            "Writes durable here but not acknowledged: too few standbys held them",
            self.sync_refused.clone(),
        );
        r.register(
            "primary_lag_lsn",
            "On a standby: entries its primary has that it does not",
            self.primary_lag_lsn.clone(),
        );
        r.register(
            "primary_connected",
            "On a standby: 1 while a session with the primary is open",
            self.primary_connected.clone(),
        );
        r.register(
            "reconnects",
            "On a standby: sessions with the primary that ended",
            self.reconnects.clone(),
        );
        r.register(
            "resyncs",
            "On a standby: damaged, duplicated or out-of-order frames detected",
            self.resyncs.clone(),
        );
        r.register(
            "bootstraps",
            "On a standby: checkpoints fetched from the primary",
            self.bootstraps.clone(),
        );
        r.register(
            "received_bytes",
            "On a standby: bytes of log entries received",
            self.received_bytes.clone(),
        );
    }

    fn update(&self, replication: &crate::app::Replication, engine: &Engine) {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as i64;
        self.standby.set(i64::from(engine.role() == emporium_engine::NodeRole::Standby));
        self.epoch.set(engine.epoch() as i64);
        let durable = engine.durable_lsn().0;
        if let Some(primary) = &replication.primary {
            let standbys = primary.standbys();
            self.standbys_connected.set(standbys.len() as i64);
            self.lag_lsn.clear();
            self.lag_ms.clear();
            for standby in standbys {
                let labels = vec![("standby".to_string(), standby.name.clone())];
                self.lag_lsn
                    .get_or_create(&labels)
                    .set(durable.saturating_sub(standby.acked_lsn) as i64);
                self.lag_ms.get_or_create(&labels).set(standby.lag_ms as i64);
            }
            let stats = primary.stats();
            self.shipped_bytes.set(load(&stats.bytes_shipped));
            self.sessions.set(load(&stats.sessions));
            self.checkpoints_sent.set(load(&stats.resyncs));
            self.sync_degraded.set(i64::from(primary.degraded()));
            self.sync_refused.set(load(&stats.refused_releases));
        }
        if let Some(stats) = &replication.standby {
            let heard = stats.primary_durable_lsn.load(Ordering::Acquire);
            self.primary_lag_lsn.set(heard.saturating_sub(durable) as i64);
            self.primary_connected.set(i64::from(stats.connected.load(Ordering::Acquire)));
            self.reconnects.set(load(&stats.reconnects));
            self.resyncs.set(load(&stats.resyncs));
            self.bootstraps.set(load(&stats.bootstraps));
            self.received_bytes.set(load(&stats.bytes_received));
        }
    }
}

/// A method as the requests' label names it.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        _ => "OTHER",
    }
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
        let rows_materialized = Gauge::default();
        let materializer_batches = Gauge::default();
        let materializer_lag = Gauge::default();
        let log_entries_held = Gauge::default();
        let carts_open = Gauge::default();
        let carts_abandoned = Gauge::default();
        let orders = Gauge::default();
        let orders_in_memory = Gauge::default();
        let idempotency_records = Gauge::default();
        let idempotency_records_in_memory = Gauge::default();
        let storage_memory = Gauge::default();
        let payment_calls_open = Gauge::default();
        let provider_calls = Gauge::default();
        let provider_failures = Gauge::default();
        let kpi_counts = StandbyFamily::default();
        let kpi_amounts = StandbyFamily::default();
        registry.register(
            "kpi",
            "Business figures folded from the log since its first entry, by figure: carts_created, carts_with_items, carts_converted and carts_abandoned (by the abandonment window), orders_placed, checkouts, orders_paid, payments_declined (GET /v1/admin/stats has them by time)",
            kpi_counts.clone(),
        );
        registry.register(
            "kpi_amount_minor_units",
            "Amounts folded from the log since its first entry, by figure (gmv: captured; refunded) and currency",
            kpi_amounts.clone(),
        );
        registry.register("orders", "Orders held, every status", orders.clone());
        registry.register(
            "orders_in_memory",
            "Orders in memory: every pending one and the most recently changed settled ones",
            orders_in_memory.clone(),
        );
        registry.register(
            "idempotency_records",
            "Idempotency records held (each replayed for its key until its time to live)",
            idempotency_records.clone(),
        );
        registry.register(
            "idempotency_records_in_memory",
            "Idempotency records in memory: every one not yet written and the most recently written",
            idempotency_records_in_memory.clone(),
        );
        registry.register(
            "payment_calls_open",
            "Payments through a provider not settled yet (each holds its order)",
            payment_calls_open.clone(),
        );
        registry.register(
            "payment_provider_calls",
            "Calls made to payment providers since start, retries included",
            provider_calls.clone(),
        );
        registry.register(
            "payment_provider_failures",
            "Payment-call passes that failed (timeouts, errors, an open breaker) and will be retried",
            provider_failures.clone(),
        );
        registry.register(
            "storage_memory_bytes",
            "Memory the storage backend holds: RocksDB's memtables, table readers and block cache",
            storage_memory.clone(),
        );
        registry.register(
            "engine_log_bytes",
            "Bytes of log payload written: everything the synced writes carry",
            log_bytes.clone(),
        );
        registry.register(
            "engine_rows_materialized",
            "Rows the materializer has written to the tables since start, each coalesced row once",
            rows_materialized.clone(),
        );
        registry.register(
            "engine_materializer_batches",
            "Batches the materializer has written since start (one unlogged write each)",
            materializer_batches.clone(),
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
        let replication = ReplicationGauges::default();
        replication.register(&mut registry);
        Metrics {
            replication,
            registry,
            requests,
            latency,
            routes: crate::routes::ROUTES.iter().map(|_| RouteSeries::default()).collect(),
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
            rows_materialized,
            materializer_batches,
            materializer_lag,
            log_entries_held,
            carts_open,
            carts_abandoned,
            orders,
            orders_in_memory,
            idempotency_records,
            idempotency_records_in_memory,
            storage_memory,
            payment_calls_open,
            provider_calls,
            provider_failures,
            kpi_counts,
            kpi_amounts,
        }
    }

    /// Records one answered request: `route` is `None` for a path no route matches.
    pub fn request(
        &self,
        route: Option<&'static Route>,
        method: &http::Method,
        status: u16,
        seconds: f64,
    ) {
        let path = route.map_or("unmatched", |r| r.path);
        let series = route.and_then(crate::routes::index).and_then(|i| self.routes.get(i));
        let labels = || RequestLabels { route: path, method: method_label(method), status };
        // Kept at hand only for the route's own method and a listed status.
        let slot = STATUSES_AT_HAND
            .iter()
            .position(|&s| s == status)
            .filter(|_| route.is_some_and(|r| *method == r.method));
        match series.zip(slot) {
            Some((series, slot)) => series.requests[slot]
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
        let route_labels = RouteLabels { route: path };
        match series {
            Some(series) => series
                .latency
                .get_or_init(|| self.latency.get_or_create(&route_labels).clone())
                .observe(seconds),
            None => self.latency.get_or_create(&route_labels).observe(seconds),
        }
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
    pub fn render(
        &self,
        engine: &Engine,
        replication: &crate::app::Replication,
        payments: &PaymentProcessor,
        kpis: &emporium_engine::Kpis,
    ) -> String {
        self.replication.update(replication, engine);
        let stats = engine.stats();
        self.queue_depth.set(engine.queue_depth() as i64);
        self.group_size.set(stats.last_group_commands.load(Ordering::Relaxed) as i64);
        self.groups.set(stats.groups_committed.load(Ordering::Relaxed) as i64);
        self.commands.set(stats.commands_committed.load(Ordering::Relaxed) as i64);
        self.sync_seconds_total.set(stats.sync_nanos_total.load(Ordering::Relaxed) as f64 / 1e9);
        self.log_bytes.set(stats.log_bytes_total.load(Ordering::Relaxed) as i64);
        self.rows_materialized.set(stats.rows_materialized.load(Ordering::Relaxed) as i64);
        self.materializer_batches.set(stats.materialize_flushes.load(Ordering::Relaxed) as i64);
        let durable = engine.durable_lsn().0;
        self.materializer_lag.set(durable.saturating_sub(engine.materialized_lsn().0) as i64);
        let held = (durable + 1).saturating_sub(engine.first_log_lsn().0);
        self.log_entries_held.set(held as i64);
        self.carts_open.set(engine.state().open_cart_count() as i64);
        self.carts_abandoned.set(engine.state().carts_abandoned() as i64);
        self.orders.set(engine.state().order_count() as i64);
        self.orders_in_memory.set(engine.state().orders_in_memory() as i64);
        self.idempotency_records.set(engine.state().idempotency_record_count() as i64);
        let in_memory = engine.state().idempotency_records_in_memory();
        self.idempotency_records_in_memory.set(in_memory as i64);
        self.storage_memory.set(engine.storage_memory_bytes().unwrap_or(0) as i64);
        self.payment_calls_open.set(engine.state().open_payment_call_count() as i64);
        let payments = payments.stats();
        self.provider_calls.set(payments.provider_calls.load(Ordering::Relaxed) as i64);
        self.provider_failures.set(payments.provider_failures.load(Ordering::Relaxed) as i64);
        let totals = kpis.totals();
        let figures = [
            ("carts_created", totals.carts_created),
            ("carts_with_items", totals.carts_with_items),
            ("carts_converted", totals.carts_converted),
            ("carts_abandoned", totals.carts_abandoned),
            ("orders_placed", totals.orders_placed),
            ("checkouts", totals.checkouts),
            ("orders_paid", totals.orders_paid),
            ("payments_declined", totals.payments_declined),
        ];
        for (figure, value) in figures {
            let labels = vec![("figure".to_string(), figure.to_string())];
            self.kpi_counts.get_or_create(&labels).set(value as i64);
        }
        for (figure, amounts) in [("gmv", &totals.gmv), ("refunded", &totals.refunded)] {
            for (currency, amount) in amounts {
                let labels = vec![
                    ("figure".to_string(), figure.to_string()),
                    ("currency".to_string(), currency.as_str().to_string()),
                ];
                self.kpi_amounts.get_or_create(&labels).set(*amount);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ROUTES;

    fn exposition(metrics: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &metrics.registry).unwrap();
        out
    }

    fn value(text: &str, prefix: &str) -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(prefix))?;
        line.rsplit(' ').next()?.parse().ok()
    }

    #[test]
    fn a_routes_kept_series_and_the_families_count_the_same_requests() {
        let metrics = Metrics::new();
        let get =
            ROUTES.iter().find(|r| r.path == "/v1/products/{id}" && r.method == http::Method::GET);
        let get = get.unwrap();
        // Kept at hand: the route's own method and a listed status.
        for _ in 0..3 {
            metrics.request(Some(get), &http::Method::GET, 200, 0.001);
        }
        // Through the family: another method on the same route, an unlisted status,
        // and a path no route matches.
        metrics.request(Some(get), &http::Method::HEAD, 200, 0.001);
        metrics.request(Some(get), &http::Method::GET, 418, 0.001);
        metrics.request(None, &http::Method::GET, 404, 0.001);
        let text = exposition(&metrics);
        let requests = |method: &str, status: u16| {
            let prefix = format!(
                "emporium_http_requests_total{{route=\"/v1/products/{{id}}\",method=\"{method}\",status=\"{status}\"}}"
            );
            value(&text, &prefix)
        };
        assert_eq!(requests("GET", 200), Some(3.0), "{text}");
        assert_eq!(requests("HEAD", 200), Some(1.0), "{text}");
        assert_eq!(requests("GET", 418), Some(1.0), "{text}");
        let unmatched =
            "emporium_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}";
        assert_eq!(value(&text, unmatched), Some(1.0), "{text}");
        let count = "emporium_http_request_duration_seconds_count{route=\"/v1/products/{id}\"}";
        assert_eq!(value(&text, count), Some(5.0), "{text}");
    }

    #[test]
    fn a_route_made_outside_the_table_is_counted_through_the_families() {
        let metrics = Metrics::new();
        let h = ROUTES.iter().find(|r| r.path == "/healthz").unwrap();
        let route: &'static Route = Box::leak(Box::new(Route {
            method: h.method.clone(),
            path: "/elsewhere",
            operation: h.operation,
            summary: h.summary,
            handler: h.handler,
            class: h.class,
            body: h.body,
            success: h.success,
            access: h.access,
            request_schema: h.request_schema,
            response_schema: h.response_schema,
            errors: h.errors,
            idempotency: h.idempotency,
        }));
        assert_eq!(crate::routes::index(route), None);
        metrics.request(Some(route), &route.method.clone(), 200, 0.001);
        let text = exposition(&metrics);
        let line =
            "emporium_http_requests_total{route=\"/elsewhere\",method=\"GET\",status=\"200\"}";
        assert_eq!(value(&text, line), Some(1.0), "{text}");
    }
}
