//! Replication's cost, measured in one run on this machine: durable checkouts per second
//! and their latency (p50/p99) with no standby, with one asynchronous standby and with
//! one synchronous standby, on loopback and through a proxy that delays each direction
//! by 40 ms (a cross-region link); the standby's lag (from shipping an entry to its
//! acknowledgement, p50/p99) in each; and the disk's own fdatasync, since durable
//! figures are compared with it.
//!
//! Primary and standby are embedded engines in this process on the same disk (each
//! syncs its own log), connected over TCP on 127.0.0.1 through the replication
//! protocol, as `emporium serve --replication-listen` and `emporium standby` are.
//!
//! Run: `cargo run --release -p emporium-bench --bin emporium-replication-bench`
//! (`--checkouts N` per loopback scenario, `--submitters N`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_bench::{checkout, prepare_carts, seed_catalog, SyncProbe, STOCK_ON_HAND};
use emporium_engine::{Engine, EngineConfig, NodeRole, ReleaseGate};
use emporium_replication::standby::{self, StandbyConfig, StandbyStats};
use emporium_replication::{Primary, PrimaryConfig, SyncPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Products the carts draw from.
const CATALOG_PRODUCTS: u64 = 1_000;
/// The one-way delay of the cross-region link.
const WAN_DELAY: Duration = Duration::from_millis(40);

struct Scenario {
    name: &'static str,
    standby: Option<Link>,
    sync: bool,
}

#[derive(Clone, Copy)]
enum Link {
    Loopback,
    Delayed,
}

struct Measured {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    lag_p50_ms: Option<f64>,
    lag_p99_ms: Option<f64>,
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    emporium_engine::tune_process_memory().expect("memory settings as emporium serve's");
    let checkouts = arg("--checkouts", 40_000);
    let submitters = arg("--submitters", 256) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut probe = SyncProbe::new();
    for _ in 0..20 {
        probe.sync_once();
    }
    let started = Instant::now();
    let syncs = 500;
    for _ in 0..syncs {
        probe.sync_once();
    }
    let fsync = started.elapsed().as_secs_f64() / f64::from(syncs);
    println!("fdatasync (8 kB overwrite): {:.1} µs", fsync * 1e6);
    let scenarios = [
        Scenario { name: "no standby", standby: None, sync: false },
        Scenario { name: "async, loopback", standby: Some(Link::Loopback), sync: false },
        Scenario { name: "sync (K=1), loopback", standby: Some(Link::Loopback), sync: true },
        Scenario { name: "async, 40 ms one-way", standby: Some(Link::Delayed), sync: false },
        Scenario { name: "sync (K=1), 40 ms one-way", standby: Some(Link::Delayed), sync: true },
    ];
    println!();
    println!(
        "| Scenario | Durable checkouts/s | per fdatasync | p50 ms | p99 ms | standby lag p50 ms | lag p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for scenario in &scenarios {
        // A synchronous standby across 80 ms of round trip takes far fewer per second.
        let count = match (scenario.standby, scenario.sync) {
            (Some(Link::Delayed), true) => checkouts / 8,
            _ => checkouts,
        };
        let m = runtime.block_on(run(scenario, count, submitters));
        let lag = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}"));
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
            scenario.name,
            m.rate,
            m.rate * fsync,
            m.p50_ms,
            m.p99_ms,
            lag(m.lag_p50_ms),
            lag(m.lag_p99_ms),
        );
    }
    println!();
    println!("{checkouts} one-line checkouts per scenario ({} with a synchronous standby 40 ms away), {submitters} concurrent submitters.", checkouts / 8);
}

async fn run(scenario: &Scenario, count: u64, submitters: usize) -> Measured {
    let dir = tempfile::Builder::new().prefix("emporium-bench-repl-").tempdir().unwrap();
    let primary = Primary::new(PrimaryConfig {
        sync_standbys: usize::from(scenario.sync),
        sync_policy: SyncPolicy::Strict,
        sync_timeout: Duration::from_secs(30),
        ..PrimaryConfig::new(dir.path().join("scratch"))
    });
    let mut config = EngineConfig::new(dir.path().join("primary"));
    config.limits.reservation_ttl_ms = 24 * 60 * 60 * 1000;
    if scenario.sync {
        config.release_gate = Some(Arc::new(primary.clone()) as Arc<dyn ReleaseGate>);
    }
    let engine = Engine::open(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut addr = listener.local_addr().unwrap().to_string();
    let (stop, shutdown) = watch::channel(false);
    {
        let (primary, engine, shutdown) = (primary.clone(), engine.clone(), shutdown.clone());
        tokio::spawn(async move { primary.serve(listener, engine, shutdown).await });
    }
    let mut follower = None;
    if let Some(link) = scenario.standby {
        if matches!(link, Link::Delayed) {
            addr = delay_proxy(&addr, WAN_DELAY).await;
        }
        // Seeded before the standby bootstraps (the checkpoint carries it), but in sync
        // mode writes need the standby: so seed after it in that case.
        if !scenario.sync {
            seed_catalog(&engine, 0, CATALOG_PRODUCTS, STOCK_ON_HAND).await;
        }
        let config = StandbyConfig {
            primary: addr.clone(),
            name: "bench".into(),
            data_dir: dir.path().join("standby"),
            tls: None,
            secret: Default::default(),
        };
        let stats = Arc::new(StandbyStats::default());
        standby::bootstrap(&config, &stats).await.unwrap();
        let mut standby_config = EngineConfig::new(&config.data_dir);
        standby_config.role = Some(NodeRole::Standby);
        let standby = Engine::open(standby_config).unwrap();
        let (following, shutdown) = (standby.clone(), shutdown.clone());
        let task =
            tokio::spawn(async move { standby::follow(following, config, &stats, shutdown).await });
        while primary.standbys().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if scenario.sync {
            seed_catalog(&engine, 0, CATALOG_PRODUCTS, STOCK_ON_HAND).await;
        }
        follower = Some((standby, task));
    } else {
        seed_catalog(&engine, 0, CATALOG_PRODUCTS, STOCK_ON_HAND).await;
    }
    let carts = prepare_carts(&engine, count, |i| i % CATALOG_PRODUCTS).await;
    // Let the standby catch up with the preparation, so lag samples are the load's.
    if let Some((standby, _)) = &follower {
        while standby.durable_lsn() < engine.durable_lsn() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    primary.stats().take_lag_samples_us();
    let mut queues = vec![Vec::new(); submitters];
    for (i, cart) in carts.into_iter().enumerate() {
        queues[i % submitters].push(cart);
    }
    let started = Instant::now();
    let tasks: Vec<_> = queues
        .into_iter()
        .map(|queue| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(queue.len());
                for cart in queue {
                    let sent = Instant::now();
                    engine.send(checkout(cart)).await.expect("a durable checkout");
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lags: Vec<f64> =
        primary.stats().take_lag_samples_us().iter().map(|us| *us as f64 / 1e3).collect();
    let _ = stop.send(true);
    if let Some((standby, task)) = follower {
        let _ = task.await;
        standby.close();
    }
    engine.close();
    latencies.sort_by(f64::total_cmp);
    lags.sort_by(f64::total_cmp);
    let pick = |v: &[f64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Measured {
        rate: latencies.len() as f64 / elapsed,
        p50_ms: pick(&latencies, 0.50),
        p99_ms: pick(&latencies, 0.99),
        lag_p50_ms: (!lags.is_empty()).then(|| pick(&lags, 0.50)),
        lag_p99_ms: (!lags.is_empty()).then(|| pick(&lags, 0.99)),
    }
}

/// A TCP proxy to `upstream` that delivers every byte `delay` after it arrived, in
/// each direction; returns its address.
async fn delay_proxy(upstream: &str, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let upstream = upstream.to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(delayed(client_read, server_write, delay));
            tokio::spawn(delayed(server_read, client_write, delay));
        }
    });
    addr
}

async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, bytes)) = receiver.recv().await {
            tokio::time::sleep_until((at + delay).into()).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = vec![0; 64 << 10];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if sender.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
}
