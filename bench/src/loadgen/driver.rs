//! Runs a workload: connects its virtual clients, drives them closed-loop (each sends
//! its next transaction as soon as the last one is answered) or open-loop (transactions
//! arrive on a fixed schedule whatever the server does), shows a progress bar with live
//! throughput, and merges what the clients recorded.
//!
//! Open loop corrects for coordinated omission the way wrk2 does: client `k` of `n`
//! owns the arrivals `k, k + n, k + 2n, …` of a schedule at `rate` per second, and a
//! transaction that could only start late because the previous one on that client was
//! still running is timed from its *intended* start. A transaction whose client was
//! idle is timed from when it was sent, so the 1 ms granularity of the timer is not
//! charged to the server.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::check::Verdict;
use super::cpu;
use super::stats::Recorder;

/// Consecutive failed reconnects after which a client gives up.
const RECONNECTS_MAX: u32 = 50;
/// How often the progress bar is refreshed.
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// What one transaction came to.
pub enum Step {
    /// Answered (the verdict of the transaction as a whole).
    Done(Verdict),
    /// Nothing was sent (a step the server does not support yet); try the next one.
    Skipped,
    /// The client has no prepared work left: it stops.
    Exhausted,
    /// The connection broke; the driver reconnects.
    Broken(anyhow::Error),
}

/// What a workload needs to say to be driven.
pub trait Workload: Send + Sync + 'static {
    /// A virtual client: its connection and its own state.
    type Client: Send + 'static;

    /// The name of the measured unit (`checkout`, `GET product`, …).
    fn unit(&self) -> &'static str;

    /// Connects virtual client `index` and hands it its share of prepared work.
    fn connect(&self, index: usize) -> impl Future<Output = anyhow::Result<Self::Client>> + Send;

    /// Re-opens a client's broken connection, keeping its state.
    fn reconnect(
        &self,
        client: &mut Self::Client,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Runs one transaction, recording each request it makes in `cx.rec`. The driver
    /// records the transaction itself under [`Workload::unit`].
    fn step(&self, client: &mut Self::Client, cx: &mut Cx) -> impl Future<Output = Step> + Send;
}

/// What a transaction may use besides its client.
pub struct Cx {
    /// This client's random numbers (seeded from the client's index).
    pub rng: StdRng,
    /// This client's record.
    pub rec: Recorder,
    /// The client's index.
    pub index: usize,
}

/// How load is offered.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `clients` connections, each sending as soon as it is answered.
    Closed {
        /// Virtual clients.
        clients: usize,
    },
    /// Arrivals at `rate` per second spread over `clients` connections.
    Open {
        /// Virtual clients.
        clients: usize,
        /// Transactions per second.
        rate: f64,
    },
}

impl Mode {
    /// The number of connections.
    pub fn clients(&self) -> usize {
        match *self {
            Mode::Closed { clients } | Mode::Open { clients, .. } => clients,
        }
    }
}

/// One run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Closed or open loop.
    pub mode: Mode,
    /// Time before the measured window (answers counted for correctness only).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Shown beside the progress bar.
    pub label: String,
    /// Whether to draw a progress bar (on a terminal).
    pub progress: bool,
    /// The server's process, to account its CPU time (with its child processes').
    pub server_pid: Option<u32>,
}

/// What a run recorded.
pub struct Outcome {
    /// Every client's record, merged.
    pub rec: Recorder,
    /// The measured window's length (shorter than planned when every client ran out of
    /// prepared work before the end).
    pub window: Duration,
    /// Clients that stopped early for lack of prepared work.
    pub exhausted: usize,
    /// Clients that gave up after failing to reconnect.
    pub failed: usize,
    /// Cores kept busy on average over the run (warm-up included).
    pub cores: cpu::Cores,
}

struct ClientEnd<C> {
    rec: Recorder,
    stopped: Instant,
    exhausted: bool,
    failed: bool,
    /// Kept open until the CPU counters are read: a PostgreSQL backend's time is lost
    /// once its connection closes.
    client: C,
}

/// Runs `workload` as `plan` says.
pub async fn run<W: Workload>(workload: Arc<W>, plan: &Plan) -> anyhow::Result<Outcome> {
    let clients = plan.mode.clients().max(1);
    let mut connecting = tokio::task::JoinSet::new();
    for index in 0..clients {
        let workload = workload.clone();
        connecting.spawn(async move { (index, workload.connect(index).await) });
    }
    let mut connected: Vec<Option<W::Client>> = (0..clients).map(|_| None).collect();
    while let Some(joined) = connecting.join_next().await {
        let (index, client) = joined?;
        connected[index] = Some(client?);
    }
    // A short pause so every task is ready when the clock starts.
    let start = Instant::now() + Duration::from_millis(20);
    let window_start = start + plan.warmup;
    let window_end = window_start + plan.duration;
    let completed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for (index, client) in connected.into_iter().enumerate() {
        let client = client.expect("every client connected");
        let cx = Cx {
            rng: StdRng::seed_from_u64(0x5eed_0000 + index as u64),
            rec: Recorder::new(window_start, window_end),
            index,
        };
        let workload = workload.clone();
        let completed = completed.clone();
        let mode = plan.mode;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            drive(workload, client, cx, mode, start, window_end, completed).await
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let bar = progress(plan, completed.clone(), stop.clone(), start, window_end);
    let cpu_before = cpu::sample(plan.server_pid);
    let mut rec = Recorder::new(window_start, window_end);
    let (mut exhausted, mut failed) = (0, 0);
    let mut last_stop = window_start;
    let mut clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        let end = task.await?;
        rec.merge(&end.rec);
        exhausted += usize::from(end.exhausted);
        failed += usize::from(end.failed);
        last_stop = last_stop.max(end.stopped);
        clients.push(end.client);
    }
    let cpu_after = cpu::sample(plan.server_pid);
    drop(clients);
    stop.store(true, Ordering::Relaxed);
    bar.await?;
    let window = last_stop.min(window_end).saturating_duration_since(window_start);
    let cores = cpu::cores(&cpu_before, &cpu_after);
    Ok(Outcome { rec, window, exhausted, failed, cores })
}

async fn drive<W: Workload>(
    workload: Arc<W>,
    mut client: W::Client,
    mut cx: Cx,
    mode: Mode,
    start: Instant,
    end: Instant,
    completed: Arc<AtomicU64>,
) -> ClientEnd<W::Client> {
    let unit = workload.unit();
    // Open loop: this client's arrivals are `index + j·clients` of the schedule.
    let (interval, mut slot) = match mode {
        Mode::Closed { .. } => (None, start),
        Mode::Open { clients, rate } => {
            let gap = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            (Some(gap * clients as u32), start + gap * cx.index as u32)
        }
    };
    let mut reconnects = 0;
    let (mut exhausted, mut failed) = (false, false);
    loop {
        let free_at = Instant::now();
        let intended = if interval.is_some() { slot } else { free_at };
        if intended >= end || free_at >= end {
            break;
        }
        if intended > free_at {
            tokio::time::sleep_until(intended.into()).await;
        }
        let sent = Instant::now();
        // Coordinated omission: time from the intended start only when we were late
        // because the previous transaction was still running.
        let timed_from = if interval.is_some() && free_at > intended { intended } else { sent };
        let step = workload.step(&mut client, &mut cx).await;
        // A skipped step sent nothing: the next draw takes over its arrival.
        if let (Some(interval), false) = (interval, matches!(step, Step::Skipped)) {
            slot += interval;
        }
        match step {
            Step::Done(verdict) => {
                reconnects = 0;
                let finished = Instant::now();
                cx.rec.transaction(unit, verdict, timed_from, finished);
                completed.fetch_add(1, Ordering::Relaxed);
            }
            Step::Skipped => {}
            Step::Exhausted => {
                exhausted = true;
                break;
            }
            Step::Broken(error) => {
                cx.rec.transport_error(unit);
                reconnects += 1;
                if reconnects > RECONNECTS_MAX {
                    eprintln!("client {} gives up: {error:#}", cx.index);
                    failed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Err(error) = workload.reconnect(&mut client).await {
                    eprintln!("client {} could not reconnect: {error:#}", cx.index);
                }
            }
        }
    }
    ClientEnd { rec: cx.rec, stopped: Instant::now(), exhausted, failed, client }
}

fn progress(
    plan: &Plan,
    completed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    start: Instant,
    end: Instant,
) -> tokio::task::JoinHandle<()> {
    let total = end.saturating_duration_since(start);
    let bar = if plan.progress {
        ProgressBar::new(total.as_millis() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>34} [{bar:30}] {elapsed:>3}/{duration} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(plan.label.clone());
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(PROGRESS_TICK).await;
            let now = Instant::now();
            let done = completed.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done);
            bar.set_position(now.saturating_duration_since(start).as_millis() as u64);
            bar.set_message(format!("{rate:>9.0}/s  {done} done"));
            if stop.load(Ordering::Relaxed) {
                bar.finish_and_clear();
                return;
            }
        }
    })
}
