//! Overload and concurrency over HTTP, made deterministic by holding the engine's
//! sequencer (the `faults.hold_sequencer` switch): requests pile up exactly where the
//! test wants them. A full command queue and a full write semaphore answer 503
//! `overloaded` with `Retry-After` at once, and a second request with an idempotency
//! key whose first is still running answers 409 `request_in_progress`; none of them
//! changes anything.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use emporium_tests::SequencerHold;

use crate::http_support::*;

/// A server whose sequencer the test can hold, with a stocked SKU.
fn held_server(
    adjust: impl FnOnce(&mut emporium_server::config::Config),
) -> (TestServer, SequencerHold, String) {
    let faults = emporium_engine::Faults::default();
    let s = TestServer::with(|config| {
        config.faults = faults.clone();
        adjust(config);
    });
    let admin = s.admin();
    s.product(&admin, "OV-1", 500, 100);
    (s, SequencerHold(faults), admin)
}

/// The engine's queue depth as `/metrics` reports it.
fn queue_depth(s: &TestServer) -> u64 {
    let metrics = s.get("/metrics").send();
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    text.lines()
        .find(|l| {
            l.starts_with("emporium_engine_queue_depth ") || l.starts_with("engine_queue_depth ")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no queue depth in /metrics:\n{text}"))
}

/// Waits (bounded) until `n` commands wait in the engine's queue.
fn until_queued(s: &TestServer, n: u64) {
    let what = "the requests to reach the engine's queue";
    emporium_tests::wait_until(what, Duration::from_secs(10), || queue_depth(s) >= n);
}

#[test]
fn a_full_command_queue_answers_503_at_once_and_changes_nothing() {
    let (s, hold, _admin) = held_server(|config| config.queue_commands_max = 2);
    let lsn = s.durable_lsn();
    hold.hold();
    std::thread::scope(|scope| {
        let create = || s.post("/v1/carts").json(json!({})).send().status;
        let waiting: Vec<_> = (0..2).map(|_| scope.spawn(create)).collect();
        until_queued(&s, 2);
        let started = Instant::now();
        let refused = s.post("/v1/carts").json(json!({})).send();
        let took = started.elapsed();
        assert!(refused.header("retry-after").is_some(), "{refused}");
        refused.problem(503, "overloaded");
        assert!(took < Duration::from_secs(2), "the refusal waited {took:?}");
        hold.release();
        for request in waiting {
            assert_eq!(request.join().unwrap(), 201, "a queued request completes");
        }
    });
    // Two carts were made, by the two queued requests; the refused one made nothing.
    assert_eq!(s.durable_lsn(), lsn + 2);
}

#[test]
fn a_full_write_semaphore_answers_503_at_once() {
    let (s, hold, admin) = held_server(|config| config.writes_concurrency_max = 1);
    hold.hold();
    std::thread::scope(|scope| {
        let first = scope.spawn(|| s.post("/v1/carts").json(json!({})).send().status);
        until_queued(&s, 1);
        let refused = s.post("/v1/carts").json(json!({})).send();
        assert!(refused.header("retry-after").is_some(), "{refused}");
        refused.problem(503, "overloaded");
        // Reads have their own permits and go on.
        s.get("/v1/products").send().expect(200);
        hold.release();
        assert_eq!(first.join().unwrap(), 201);
    });
    assert_eq!(s.stock(&admin, "OV-1"), (100, 0, 100));
}

#[test]
fn a_key_still_running_answers_request_in_progress() {
    let (s, hold, admin) = held_server(|_| {});
    let cart = s.cart(None);
    s.add(None, &cart, "OV-1", 2).expect(200);
    let body = json!({"email": "twice@example.com"});
    hold.hold();
    let order: Value = std::thread::scope(|scope| {
        let first = scope.spawn(|| s.checkout(None, &cart, "same-key", body.clone()));
        until_queued(&s, 1);
        let second = s.checkout(None, &cart, "same-key", body.clone());
        second.problem(409, "request_in_progress");
        hold.release();
        first.join().unwrap().expect(201)
    });
    // Once the first finished, the key replays it; only one order reserved stock.
    let replay = s.checkout(None, &cart, "same-key", body).expect(201);
    assert_eq!(replay["id"], order["id"]);
    assert_eq!(s.stock(&admin, "OV-1"), (100, 2, 98));
}

/// A flash-sale purchase refused from the sale's published state alone (here: the sale
/// has ended) never marks its key; it still answers `request_in_progress` when its key
/// is running, rather than a refusal beside a purchase that may go through.
#[test]
fn a_purchase_whose_key_is_running_answers_request_in_progress_after_the_sale_ends() {
    let (s, hold, admin) = held_server(|_| {});
    let now = emporium_server::app::now_ms();
    let ends_at = now + 2_000;
    let sale = s
        .post("/v1/flash-sales")
        .bearer(&admin)
        .json(json!({
            "sku": "OV-1", "price": {"amount": 250, "currency": "USD"}, "quantity": 10,
            "per_customer_limit": 2, "starts_at": emporium_server::wire::rfc3339(now - 1_000),
            "ends_at": emporium_server::wire::rfc3339(ends_at), "reservation_ttl_s": 600
        }))
        .send()
        .expect(201);
    let path = format!("/v1/flash-sales/{}/purchases", text(&sale, "id"));
    let buyer = s.register("held-buyer@example.com");
    let buy =
        |key: &str| s.post(&path).bearer(&buyer.token).key(key).json(json!({"quantity": 1})).send();
    hold.hold();
    std::thread::scope(|scope| {
        let first = scope.spawn(|| buy("same-key"));
        until_queued(&s, 1);
        let left = ends_at + 200 - emporium_server::app::now_ms();
        std::thread::sleep(Duration::from_millis(left.max(0) as u64));
        buy("another-key").problem(409, "sale_not_live");
        buy("same-key").problem(409, "request_in_progress");
        hold.release();
        // The sequencer decides after the end too.
        first.join().unwrap().problem(409, "sale_not_live");
    });
    assert_eq!(s.stock(&admin, "OV-1"), (100, 0, 100));
}

/// Twice the measured saturation, open loop: the excess is refused fast (503 with
/// Retry-After, never a long wait), accepted requests keep a bounded p99, memory stays
/// bounded, every acknowledged write is there afterwards, and the server answers at once
/// when the load stops.
#[test]
fn twice_the_saturation_is_refused_fast_and_loses_nothing() {
    use std::sync::mpsc;
    use std::sync::Mutex;

    let s = TestServer::with(|config| {
        config.writes_concurrency_max = 32;
        config.reads_concurrency_max = 32;
    });
    let rss_before = rss_kib();
    // Saturation: what 32 closed-loop writers get through in a second.
    let done = std::sync::atomic::AtomicUsize::new(0);
    let until = Instant::now() + Duration::from_secs(1);
    std::thread::scope(|scope| {
        for _ in 0..32 {
            scope.spawn(|| {
                while Instant::now() < until {
                    if s.post("/v1/carts").json(json!({})).send().status == 201 {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let saturation = done.load(Ordering::Relaxed).max(50);
    // Twice that, open loop, for two seconds: one request per tick, whoever is free.
    let rate = 2 * saturation;
    let (tickets, queue) = mpsc::sync_channel::<()>(4 * rate);
    let queue = Mutex::new(queue);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..256 {
            scope.spawn(|| loop {
                let Ok(()) = queue.lock().unwrap().recv() else { return };
                // The server's time, from the send: on two shared cores this client's own
                // backlog (how late a send is after its tick) is not the server's.
                let sent = Instant::now();
                let answer = s.post("/v1/carts").json(json!({})).try_send();
                let took = sent.elapsed();
                let outcome = match answer {
                    Ok(a) => (a.status, a.header("retry-after").is_some(), a.json["id"].clone()),
                    Err(error) => (0, false, Value::String(error.to_string())),
                };
                results.lock().unwrap().push((outcome, took));
            });
        }
        let start = Instant::now();
        for n in 0..2 * rate {
            let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let _ = tickets.try_send(());
        }
        drop(tickets);
    });
    let results = results.into_inner().unwrap();
    let mut accepted: Vec<Duration> = Vec::new();
    let mut refused: Vec<Duration> = Vec::new();
    let mut carts = Vec::new();
    // The client shares this process (its file descriptors, its two cores) with the
    // server and with the other tests running beside it: a few of its own connections
    // may fail (no descriptor, a reset under load). Those are counted, bounded, shown.
    let mut transport_errors = Vec::new();
    for ((status, retry_after, id), took) in &results {
        match status {
            201 => {
                accepted.push(*took);
                carts.push(id.clone());
            }
            503 | 429 => {
                assert!(retry_after, "a refusal without Retry-After");
                refused.push(*took);
            }
            0 => transport_errors.push(id.clone()),
            other => panic!("under overload a request got {other}: {id}"),
        }
    }
    let p99 = |mut v: Vec<Duration>| {
        v.sort();
        v.get(v.len().saturating_sub(1) * 99 / 100).copied().unwrap_or_default()
    };
    eprintln!(
        "overload: saturation {saturation}/s, offered {rate}/s for 2 s: {} accepted (p99 \
         {:?}), {} refused (p99 {:?}), {} failed in transport",
        accepted.len(),
        p99(accepted.clone()),
        refused.len(),
        p99(refused.clone()),
        transport_errors.len()
    );
    assert!(
        transport_errors.len() * 50 <= results.len(),
        "{} of {} requests failed in transport: {:?}",
        transport_errors.len(),
        results.len(),
        &transport_errors[..transport_errors.len().min(5)]
    );
    assert!(!accepted.is_empty(), "nothing was accepted");
    assert!(p99(accepted) < Duration::from_secs(3), "accepted requests waited too long");
    assert!(p99(refused) < Duration::from_secs(1), "refusals were slow");
    // Everything acknowledged is there.
    for id in &carts {
        let id = id.as_str().expect("a cart id");
        s.get(&format!("/v1/carts/{id}")).send().expect(200);
    }
    // The server recovers at once.
    let started = Instant::now();
    s.post("/v1/carts").json(json!({})).send().expect(201);
    assert!(started.elapsed() < Duration::from_secs(1), "the server did not recover at once");
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 512 * 1024, "memory grew by {grown} KiB under overload");
}

/// This process's resident memory (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
