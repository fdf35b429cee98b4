//! Flash sales over HTTP: 2,000 signed-in buyers race for the 500 units of a sale with
//! a cap of 2 per customer, each trying three purchases of one unit. Exactly 500 units
//! are sold, nobody holds more than 2, every refusal is `sold_out` or
//! `purchase_limit_exceeded`, nothing answers 5xx, and the sale and the SKU add up
//! afterwards. Also: the contract's reads, refusals and the cancel.

use std::collections::BTreeMap;
use std::sync::Barrier;
use std::thread;

use serde_json::{json, Value};

use crate::http_support::*;

const BUYERS: usize = 2_000;
const UNITS: u64 = 500;
const LIMIT: u64 = 2;
const ATTEMPTS: usize = 3;
/// Client threads; each drives `BUYERS / THREADS` buyers in turn.
const THREADS: usize = 200;
const SKU: &str = "SALE-1";
const CLIENT_STACK_BYTES: usize = 512 * 1024;

fn rfc3339_in(seconds: i64) -> String {
    emporium_server::wire::rfc3339(emporium_server::app::now_ms() + seconds * 1000)
}

fn create_sale(s: &TestServer, admin: &str, quantity: u64, limit: u64, starts_in: i64) -> Value {
    s.post("/v1/flash-sales")
        .bearer(admin)
        .json(json!({
            "sku": SKU, "price": {"amount": 990, "currency": "USD"}, "quantity": quantity,
            "per_customer_limit": limit, "starts_at": rfc3339_in(starts_in),
            "ends_at": rfc3339_in(starts_in + 3600), "reservation_ttl_s": 600
        }))
        .send()
        .expect(201)
}

#[test]
fn two_thousand_buyers_take_exactly_the_sales_units_within_their_caps() {
    let s = TestServer::with(|c| {
        c.reads_concurrency_max = 4 * THREADS;
        c.writes_concurrency_max = 4 * THREADS;
    });
    let admin = s.admin();
    s.product(&admin, SKU, 1990, 800);
    let sale = create_sale(&s, &admin, UNITS, LIMIT, -1);
    assert_eq!(sale["status"], "live", "{sale}");
    let id = text(&sale, "id").to_string();
    // Registered from a few threads at once: each registration is a durable write.
    let buyers: Vec<Account> = thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    (t..BUYERS)
                        .step_by(16)
                        .map(|i| (i, s.register(&format!("buyer{i}@example.com"))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, Account)> =
            handles.into_iter().flat_map(|h| h.join().expect("a thread ends")).collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, a)| a).collect()
    });

    let start = Barrier::new(THREADS);
    let answers: Vec<(usize, u16, Value)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (s, start, buyers, id) = (&s, &start, &buyers, &id);
                thread::Builder::new()
                    .stack_size(CLIENT_STACK_BYTES)
                    .spawn_scoped(scope, move || {
                        let agent = agent();
                        start.wait();
                        let mut answers = Vec::new();
                        for b in (t..BUYERS).step_by(THREADS) {
                            for attempt in 0..ATTEMPTS {
                                let answer = s
                                    .post(&format!("/v1/flash-sales/{id}/purchases"))
                                    .via(&agent)
                                    .bearer(&buyers[b].token)
                                    .key(&format!("p{attempt}"))
                                    .json(json!({"quantity": 1}))
                                    .send();
                                answers.push((b, answer.status, answer.json));
                            }
                        }
                        answers
                    })
                    .expect("a client thread starts")
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a client thread ends")).collect()
    });

    let mut held: BTreeMap<usize, u64> = BTreeMap::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for (buyer, status, body) in &answers {
        match status {
            201 => {
                assert_eq!(body["status"], "pending_payment", "{body}");
                assert_eq!(body["total"]["amount"], 990, "the sale price: {body}");
                *held.entry(*buyer).or_default() += body["items"][0]["quantity"].as_u64().unwrap();
            }
            409 => *codes.entry(text(body, "code").to_string()).or_default() += 1,
            _ => panic!("a purchase answered {status}: {body}"),
        }
    }
    let sold: u64 = held.values().sum();
    assert_eq!(sold, UNITS, "units in acknowledged purchases");
    assert!(held.values().all(|&units| units <= LIMIT), "a buyer above the cap");
    let refused: usize = codes.values().sum();
    assert_eq!(refused, BUYERS * ATTEMPTS - UNITS as usize);
    assert!(
        codes.keys().all(|c| c == "sold_out" || c == "purchase_limit_exceeded"),
        "refusals: {codes:?}"
    );

    let after = s.get(&format!("/v1/flash-sales/{id}")).send().expect(200);
    assert_eq!(
        (&after["status"], &after["remaining"], &after["reserved"], &after["sold"]),
        (&json!("sold_out"), &json!(0), &json!(UNITS), &json!(0)),
        "{after}"
    );
    // The sale's units stay reserved in the SKU (its pending orders hold them now).
    assert_eq!(s.stock(&admin, SKU), (800, UNITS, 800 - UNITS));
}

#[test]
fn a_sale_is_read_refused_and_cancelled_as_the_contract_says() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, SKU, 1990, 10);
    let too_many = s
        .post("/v1/flash-sales")
        .bearer(&admin)
        .json(json!({"sku": SKU, "price": {"amount": 990, "currency": "USD"}, "quantity": 11,
                     "per_customer_limit": 1, "starts_at": rfc3339_in(0), "ends_at": rfc3339_in(60)}))
        .send();
    too_many.problem(409, "out_of_stock");
    let bad_time = s
        .post("/v1/flash-sales")
        .bearer(&admin)
        .json(json!({"sku": SKU, "price": {"amount": 990, "currency": "USD"}, "quantity": 1,
                     "per_customer_limit": 1, "starts_at": "tomorrow", "ends_at": rfc3339_in(60)}))
        .send();
    assert_eq!(bad_time.invalid_fields(), ["starts_at"]);
    let buyer = s.register("buyer@example.com");
    s.post("/v1/flash-sales").bearer(&buyer.token).json(json!({})).send().problem(403, "forbidden");

    let later = create_sale(&s, &admin, 4, 2, 3600);
    let id = text(&later, "id").to_string();
    assert_eq!(later["status"], "scheduled");
    assert_eq!(s.stock(&admin, SKU), (10, 4, 6), "the allocation counts as reserved");
    let buy = |token: Option<&str>, key: &str| {
        s.post(&format!("/v1/flash-sales/{id}/purchases")).auth(token).key(key).send()
    };
    let lsn = s.durable_lsn();
    buy(Some(&buyer.token), "a").problem(409, "sale_not_live");
    assert_eq!(s.durable_lsn(), lsn, "a sale_not_live answer writes nothing");
    buy(None, "a").problem(401, "unauthenticated");
    buy(Some(&admin), "a").problem(403, "forbidden");
    let listed = s.get("/v1/flash-sales?status=scheduled").send().expect(200);
    assert_eq!(listed["data"][0]["id"], json!(id));
    assert_eq!(s.get("/v1/flash-sales?status=live").send().expect(200)["data"], json!([]));
    s.get("/v1/flash-sales?status=bogus").send().problem(400, "malformed_request");

    let cancelled =
        s.post(&format!("/v1/flash-sales/{id}/cancel")).bearer(&admin).send().expect(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(s.stock(&admin, SKU), (10, 0, 10), "the units went back to stock");
    s.post(&format!("/v1/flash-sales/{id}/cancel"))
        .bearer(&admin)
        .send()
        .problem(409, "invalid_state");

    // A live sale: sold out answers without a write; a key replays its order.
    let live = create_sale(&s, &admin, 1, 1, -1);
    let id = text(&live, "id").to_string();
    let first =
        s.post(&format!("/v1/flash-sales/{id}/purchases")).bearer(&buyer.token).key("k").send();
    assert_eq!(first.status, 201, "{}", first.json);
    let again =
        s.post(&format!("/v1/flash-sales/{id}/purchases")).bearer(&buyer.token).key("k").send();
    assert_eq!((again.status, again.header("idempotent-replayed")), (201, Some("true")));
    assert_eq!(again.json["id"], first.json["id"]);
    let other = s.register("other@example.com");
    let lsn = s.durable_lsn();
    s.post(&format!("/v1/flash-sales/{id}/purchases"))
        .bearer(&other.token)
        .key("k")
        .send()
        .problem(409, "sold_out");
    assert_eq!(s.durable_lsn(), lsn, "a sold_out answer writes nothing");
    // Paid with the usual endpoint.
    let order = text(&first.json, "id").to_string();
    s.post(&format!("/v1/orders/{order}/payments"))
        .bearer(&buyer.token)
        .key("pay")
        .json(json!({"method": "test_card", "token": "tok_visa"}))
        .send()
        .expect(201);
    let after = s.get(&format!("/v1/flash-sales/{id}")).send().expect(200);
    assert_eq!(
        (&after["remaining"], &after["reserved"], &after["sold"]),
        (&json!(0), &json!(0), &json!(1))
    );
}

/// What one watcher of the event stream saw: each event's name, data and arrival.
type Seen = Vec<(std::time::Instant, String, Value)>;

/// Opens the event stream of `sale` and reads it until its `status` event (or the
/// deadline), announcing on `ready` once the opening `sale` event came, and on `beat`
/// once a `remaining` event followed the first one showing `after` units left (the
/// purchase shown, then a heartbeat).
async fn watch(
    addr: String,
    sale: String,
    (ready, beat, after): (tokio::sync::mpsc::Sender<()>, tokio::sync::mpsc::Sender<()>, u64),
    deadline: std::time::Instant,
) -> Result<Seen, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
    let request = format!("GET /v1/flash-sales/{sale}/stream HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(stream).lines();
    let mut head = Vec::new();
    let mut seen = Vec::new();
    let mut event = None;
    let (mut purchase_shown, mut beaten) = (false, false);
    let read = async {
        // The head, up to its empty line; then the chunked body, whose chunk-size and
        // blank lines are skipped (one event is one chunk).
        loop {
            match lines.next_line().await.map_err(|e| e.to_string())? {
                Some(line) if line.is_empty() => break,
                Some(line) => head.push(line),
                None => return Err("the connection closed in the head".to_string()),
            }
        }
        while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
            if let Some(name) = line.strip_prefix("event: ") {
                event = Some(name.to_string());
            } else if let Some(data) = line.strip_prefix("data: ") {
                let name = event.take().ok_or("data without an event")?;
                let data: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
                if name == "sale" {
                    let _ = ready.send(()).await;
                }
                if name == "remaining" {
                    if purchase_shown && !beaten {
                        beaten = true;
                        let _ = beat.send(()).await;
                    }
                    purchase_shown |= data["remaining"] == after;
                }
                let last = name == "status";
                seen.push((std::time::Instant::now(), name, data));
                if last {
                    return Ok(());
                }
            }
        }
        Err("the stream ended before its status event".to_string())
    };
    match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(format!("{error}; head {head:?}, seen {seen:?}")),
        Err(_) => return Err(format!("no status event in time; seen {seen:?}")),
    }
    let status = head.first().cloned().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200")
        || !head.iter().any(|h| h.eq_ignore_ascii_case("content-type: text/event-stream"))
    {
        return Err(format!("not an event stream: {head:?}"));
    }
    Ok(seen)
}

#[test]
fn a_thousand_watchers_follow_a_sale_from_one_feed() {
    const WATCHERS: usize = 1_000;
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, SKU, 1990, 100);
    let sale = create_sale(&s, &admin, 50, 50, -1);
    let id = text(&sale, "id").to_string();
    let buyer = s.register("watched-buyer@example.com");
    let addr = s.url("").trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(WATCHERS);
    let (beat_tx, mut beat_rx) = tokio::sync::mpsc::channel(WATCHERS);
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|_| {
            let signals = (ready_tx.clone(), beat_tx.clone(), 47);
            runtime.spawn(watch(addr.clone(), id.clone(), signals, deadline))
        })
        .collect();
    drop((ready_tx, beat_tx));
    // Everyone has the opening event before anything changes.
    runtime.block_on(async {
        for _ in 0..WATCHERS {
            ready_rx.recv().await.expect("every watcher gets the opening event");
        }
    });
    let bought_at = std::time::Instant::now();
    let bought = s
        .post(&format!("/v1/flash-sales/{id}/purchases"))
        .bearer(&buyer.token)
        .key("watched")
        .json(json!({"quantity": 3}))
        .send();
    assert_eq!(bought.status, 201, "{}", bought.json);
    // Every watcher saw the purchase and then a heartbeat before the sale is cancelled.
    runtime.block_on(async {
        for _ in 0..WATCHERS {
            beat_rx.recv().await.expect("every watcher sees the purchase, then a heartbeat");
        }
    });
    let cancelled_at = std::time::Instant::now();
    s.post(&format!("/v1/flash-sales/{id}/cancel")).bearer(&admin).send().expect(200);
    let seen: Vec<Seen> = runtime.block_on(async {
        let mut all = Vec::new();
        for watcher in watchers {
            all.push(watcher.await.expect("a watcher task").expect("a watcher's stream"));
        }
        all
    });
    for events in &seen {
        let names: Vec<&str> = events.iter().map(|(_, name, _)| name.as_str()).collect();
        assert_eq!(names.first(), Some(&"sale"), "{names:?}");
        assert_eq!(events[0].2["remaining"], 50);
        assert_eq!(names.last(), Some(&"status"), "{names:?}");
        let (at, _, last) = events.last().unwrap();
        assert_eq!((&last["status"], &last["remaining"]), (&json!("cancelled"), &json!(47)));
        assert!(*at >= cancelled_at);
        // The purchase shows within a second.
        let shown = events
            .iter()
            .find(|(_, name, data)| name == "remaining" && data["remaining"] == 47)
            .unwrap_or_else(|| panic!("the purchase never showed: {events:?}"));
        assert!(shown.0 - bought_at < std::time::Duration::from_secs(1), "{events:?}");
        // While open: an event at least every second (checked with wide slack: the
        // watchers share a loaded machine with the server), never two updates within
        // less than the feed's tick.
        for pair in events.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(gap < std::time::Duration::from_secs(3), "a gap of {gap:?}");
        }
        let updates: Vec<_> = events.iter().filter(|(_, n, _)| n == "remaining").collect();
        for pair in updates.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(gap >= std::time::Duration::from_millis(50), "two updates {gap:?} apart");
        }
        assert!(updates.len() >= 2, "heartbeats while open: {names:?}");
    }
}
