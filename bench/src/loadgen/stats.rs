//! Accounting: per-operation HDR latency histograms and answer counts, kept by each
//! virtual client on its own (no sharing while measuring) and merged once the run ends;
//! and the serializable summaries the reports are made from.
//!
//! Latencies are recorded in microseconds, from 1 µs to 60 s at three significant
//! digits. Only requests that complete inside the measured window count towards
//! latency and throughput; every answer, warm-up included, counts towards correctness.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::check::Verdict;

/// The largest latency a histogram holds: 60 s, in µs (longer ones are clamped).
const LATENCY_MAX_US: u64 = 60_000_000;
/// The quantiles a summary keeps for latency CDF charts.
const CDF_QUANTILES: [f64; 24] = [
    0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98,
    0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// One operation's record on one client.
#[derive(Clone)]
pub struct OpRecord {
    /// Latencies of answers that completed inside the window.
    pub latency: Histogram<u64>,
    /// Verdicts of every answer (warm-up included).
    pub ok: u64,
    /// Expected refusals.
    pub refused: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Statuses the workload did not expect.
    pub unexpected: u64,
    /// Answers that broke the contract's shape.
    pub malformed: u64,
    /// Connections that failed (no answer at all).
    pub transport: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
}

impl Default for OpRecord {
    fn default() -> OpRecord {
        OpRecord {
            latency: histogram(),
            ok: 0,
            refused: 0,
            server_errors: 0,
            unexpected: 0,
            malformed: 0,
            transport: 0,
            statuses: BTreeMap::new(),
        }
    }
}

impl OpRecord {
    fn merge(&mut self, other: &OpRecord) {
        self.latency.add(&other.latency).expect("histograms of the same bounds merge");
        self.ok += other.ok;
        self.refused += other.refused;
        self.server_errors += other.server_errors;
        self.unexpected += other.unexpected;
        self.malformed += other.malformed;
        self.transport += other.transport;
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
    }

    fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Ok => self.ok += 1,
            Verdict::Refused => self.refused += 1,
            Verdict::ServerError => self.server_errors += 1,
            Verdict::Unexpected => self.unexpected += 1,
            Verdict::Malformed => self.malformed += 1,
        }
    }
}

/// What one virtual client recorded.
#[derive(Clone)]
pub struct Recorder {
    window_start: Instant,
    window_end: Instant,
    ops: BTreeMap<&'static str, OpRecord>,
}

impl Recorder {
    /// A recorder whose measured window is `[start, end)`.
    pub fn new(window_start: Instant, window_end: Instant) -> Recorder {
        Recorder { window_start, window_end, ops: BTreeMap::new() }
    }

    /// Whether `at` is inside the measured window.
    pub fn in_window(&self, at: Instant) -> bool {
        at >= self.window_start && at < self.window_end
    }

    /// Records an answer to `op` that took from `started` to `finished`.
    pub fn answer(
        &mut self,
        op: &'static str,
        status: u16,
        verdict: Verdict,
        started: Instant,
        finished: Instant,
    ) {
        let in_window = self.in_window(finished);
        let record = self.ops.entry(op).or_default();
        record.count(verdict);
        *record.statuses.entry(status).or_default() += 1;
        if in_window && matches!(verdict, Verdict::Ok | Verdict::Refused) {
            let us = finished.saturating_duration_since(started).as_micros() as u64;
            record.latency.saturating_record(us.clamp(1, LATENCY_MAX_US));
        }
    }

    /// Records a transaction of several requests (or one not over HTTP): its overall
    /// verdict and its latency, measured from `started` (the intended start, in open
    /// loop).
    pub fn transaction(
        &mut self,
        op: &'static str,
        verdict: Verdict,
        started: Instant,
        finished: Instant,
    ) {
        let in_window = self.in_window(finished);
        let record = self.ops.entry(op).or_default();
        record.count(verdict);
        if in_window && matches!(verdict, Verdict::Ok | Verdict::Refused) {
            let us = finished.saturating_duration_since(started).as_micros() as u64;
            record.latency.saturating_record(us.clamp(1, LATENCY_MAX_US));
        }
    }

    /// Records a request that got no answer.
    pub fn transport_error(&mut self, op: &'static str) {
        self.ops.entry(op).or_default().transport += 1;
    }

    /// Adds another client's record.
    pub fn merge(&mut self, other: &Recorder) {
        for (op, record) in &other.ops {
            self.ops.entry(op).or_default().merge(record);
        }
    }

    /// The record of `op`, if anything was recorded for it.
    pub fn op(&self, op: &str) -> Option<&OpRecord> {
        self.ops.get(op)
    }

    /// Every operation's record.
    pub fn ops(&self) -> impl Iterator<Item = (&'static str, &OpRecord)> {
        self.ops.iter().map(|(k, v)| (*k, v))
    }
}

/// Latency percentiles, in microseconds.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// `(quantile, µs)` points for CDF charts.
    pub cdf: Vec<(f64, u64)>,
}

impl Latency {
    /// The summary of a histogram.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            cdf: CDF_QUANTILES.iter().map(|&q| (q, h.value_at_quantile(q))).collect(),
        }
    }
}

/// One operation over a run.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct OpSummary {
    /// Its name.
    pub name: String,
    /// Answers (ok and refused) completed inside the window, per second.
    pub throughput: f64,
    /// Latency inside the window.
    pub latency: Latency,
    /// Every verdict, warm-up included.
    pub ok: u64,
    /// Expected refusals.
    pub refused: u64,
    /// 5xx.
    pub server_errors: u64,
    /// Unexpected statuses.
    pub unexpected: u64,
    /// Malformed answers.
    pub malformed: u64,
    /// No answer.
    pub transport: u64,
    /// Answers by status.
    pub statuses: BTreeMap<String, u64>,
}

impl OpSummary {
    /// The summary of `record` over a window of `window`.
    pub fn of(name: &str, record: &OpRecord, window: Duration) -> OpSummary {
        let seconds = window.as_secs_f64().max(1e-9);
        OpSummary {
            name: name.to_string(),
            throughput: (record.latency.len() as f64 / seconds * 10.0).round() / 10.0,
            latency: Latency::of(&record.latency),
            ok: record.ok,
            refused: record.refused,
            server_errors: record.server_errors,
            unexpected: record.unexpected,
            malformed: record.malformed,
            transport: record.transport,
            statuses: record.statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        }
    }

    /// Answers that were wrong: 5xx, unexpected, malformed or missing.
    pub fn errors(&self) -> u64 {
        self.server_errors + self.unexpected + self.malformed + self.transport
    }
}

/// One assertion about the state after a run (stock, orders).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Assertion {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub holds: bool,
    /// The figures behind it.
    pub detail: String,
}

impl Assertion {
    /// An assertion.
    pub fn new(what: impl Into<String>, holds: bool, detail: impl Into<String>) -> Assertion {
        Assertion { what: what.into(), holds, detail: detail.into() }
    }
}

/// The correctness of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Checks {
    /// Answers read (all operations, warm-up included).
    pub answers: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Malformed answers.
    pub malformed: u64,
    /// Answers of a status the workload did not expect.
    pub unexpected: u64,
    /// Requests that got no answer.
    pub transport: u64,
    /// Units sold (reserved or paid), as the clients counted them; `None` where the
    /// workload sells nothing.
    pub units_sold: Option<u64>,
    /// Units there were to sell.
    pub units_stock: Option<u64>,
    /// Assertions about the state afterwards.
    pub assertions: Vec<Assertion>,
}

impl Checks {
    /// Whether every check passed: no 5xx, nothing malformed or unexpected, no lost
    /// connection, sold ≤ stock, and every assertion.
    pub fn passed(&self) -> bool {
        self.server_errors == 0
            && self.malformed == 0
            && self.unexpected == 0
            && self.transport == 0
            && match (self.units_sold, self.units_stock) {
                (Some(sold), Some(stock)) => sold <= stock,
                _ => true,
            }
            && self.assertions.iter().all(|a| a.holds)
    }

    /// One line for the console and the report.
    pub fn line(&self) -> String {
        let mut parts = vec![format!(
            "{} answers, {} 5xx, {} malformed, {} unexpected, {} without answer",
            self.answers, self.server_errors, self.malformed, self.unexpected, self.transport
        )];
        if let (Some(sold), Some(stock)) = (self.units_sold, self.units_stock) {
            let verdict = if sold <= stock { "≤" } else { "> (OVERSOLD)" };
            parts.push(format!("units sold {sold} {verdict} stock {stock}"));
        }
        for a in &self.assertions {
            parts.push(format!(
                "{}: {} ({})",
                a.what,
                if a.holds { "ok" } else { "FAILED" },
                a.detail
            ));
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        format!("{verdict}: {}", parts.join("; "))
    }
}

/// One measured point: a workload on a system at one concurrency (or arrival rate).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Point {
    /// The workload (`flash-sale`, …).
    pub workload: String,
    /// A variant of it (`uniform`, `hot`, `sell-out`, `closed`, `open`), or empty.
    pub variant: String,
    /// The system (`emporium`, `postgres`, `redis`, `nginx`).
    pub system: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Virtual clients (connections).
    pub clients: usize,
    /// Arrival rate in open loop, per second.
    pub rate: Option<f64>,
    /// The measured window, in seconds (shorter than asked when prepared work ran out).
    pub window_s: f64,
    /// The measured unit (`checkout+payment`, `GET product`, …).
    pub unit: String,
    /// Measured units completed (ok or refused) per second.
    pub throughput: f64,
    /// Their latency (from the intended start in open loop).
    pub latency: Latency,
    /// Every operation, the measured unit included.
    pub ops: Vec<OpSummary>,
    /// Correctness.
    pub checks: Checks,
    /// Anything a reader must know (skipped steps, early ends).
    pub notes: Vec<String>,
    /// Cores the server kept busy (its process and children), warm-up included.
    #[serde(default)]
    pub server_cores: Option<f64>,
    /// Cores the load generator kept busy.
    #[serde(default)]
    pub generator_cores: Option<f64>,
    /// Cores the whole machine kept busy (server, generator, the kernel's network
    /// work for both, and anything else).
    #[serde(default)]
    pub machine_cores: Option<f64>,
    /// Cores' worth of time the host took from the machine (steal, part of
    /// `machine_cores`): a run that lost much of it was slowed by other guests.
    #[serde(default)]
    pub stolen_cores: Option<f64>,
    /// Emporium's group commit over the run, from its `/metrics`.
    #[serde(default)]
    pub commits: Option<Commits>,
}

/// Emporium's group commit over a run: deltas of its engine counters.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Commits {
    /// Commands made durable.
    pub commands: u64,
    /// Synced write batches (groups).
    pub groups: u64,
    /// Seconds spent in synced writes.
    pub sync_seconds: f64,
    /// Seconds the counters cover.
    pub elapsed_seconds: f64,
}

impl Commits {
    /// One line: commands per group, time per synced write, share of time syncing.
    pub fn line(&self) -> String {
        let groups = self.groups.max(1) as f64;
        format!(
            "{} commands in {} groups ({:.1} per group), {:.2} ms per synced write, {:.0}% of the time syncing",
            self.commands,
            self.groups,
            self.commands as f64 / groups,
            self.sync_seconds * 1000.0 / groups,
            self.sync_seconds / self.elapsed_seconds.max(1e-9) * 100.0
        )
    }
}

impl Point {
    /// One line for the console.
    pub fn line(&self) -> String {
        let load = match self.rate {
            Some(rate) => format!("open loop {rate:.0}/s over {} clients", self.clients),
            None => format!("{} clients", self.clients),
        };
        let show = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.2}"));
        let cpu = format!(
            "; cores busy: server {}, generator {}, machine {} (stolen by the host {})",
            show(self.server_cores),
            show(self.generator_cores),
            show(self.machine_cores),
            show(self.stolen_cores)
        );
        format!(
            "{} {} {} [{load}]: {:.0} {}/s, p50 {} p99 {} p99.9 {} over {:.1} s{cpu}",
            self.system,
            self.workload,
            self.variant,
            self.throughput,
            self.unit,
            us(self.latency.p50_us),
            us(self.latency.p99_us),
            us(self.latency.p999_us),
            self.window_s
        )
    }
}

/// A latency in µs as text with a unit (`87 µs`, `4.3 ms`).
pub fn us(value: u64) -> String {
    match value {
        0..=999 => format!("{value} µs"),
        1_000..=99_999 => format!("{:.2} ms", value as f64 / 1000.0),
        _ => format!("{:.0} ms", value as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_merge() {
        let t0 = Instant::now();
        let start = t0 + Duration::from_secs(1);
        let end = t0 + Duration::from_secs(2);
        let mut a = Recorder::new(start, end);
        // Warm-up: counted, not timed.
        a.answer("get", 200, Verdict::Ok, t0, t0 + Duration::from_millis(1));
        a.answer("get", 200, Verdict::Ok, start, start + Duration::from_micros(100));
        let mut b = Recorder::new(start, end);
        b.answer("get", 503, Verdict::ServerError, start, start + Duration::from_micros(5));
        b.answer("get", 200, Verdict::Ok, start, start + Duration::from_micros(300));
        a.merge(&b);
        let get = a.op("get").unwrap();
        assert_eq!((get.ok, get.server_errors, get.latency.len()), (3, 1, 2));
        let summary = OpSummary::of("get", get, Duration::from_secs(1));
        assert_eq!(summary.throughput, 2.0);
        assert_eq!(summary.errors(), 1);
        assert_eq!(summary.statuses["200"], 3);
    }

    #[test]
    fn checks_fail_on_oversell_and_errors() {
        let mut checks =
            Checks { units_sold: Some(10), units_stock: Some(10), ..Checks::default() };
        assert!(checks.passed());
        checks.units_sold = Some(11);
        assert!(!checks.passed());
        checks.units_sold = Some(9);
        checks.server_errors = 1;
        assert!(!checks.passed());
    }

    #[test]
    fn latency_text() {
        assert_eq!(us(87), "87 µs");
        assert_eq!(us(4_300), "4.30 ms");
        assert_eq!(us(123_456), "123 ms");
    }
}
