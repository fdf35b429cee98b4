//! Payments through the asynchronous provider over HTTP: 202 with the recorded call,
//! the gateway's signed callback, the capture, and the ledger; callbacks that are not
//! signed, signed by someone else, too old, or at odds with the call are refused and
//! change nothing.

use std::time::{Duration, Instant};

use emporium_server::gateway;
use serde_json::{json, Value};

use crate::http_support::*;

fn start_call(s: &TestServer, order: &str, key: &str, token: &str) -> Resp {
    s.post(&format!("/v1/orders/{order}/payment-calls"))
        .key(key)
        .json(json!({"provider": "callback", "method": "test_card", "token": token}))
        .send()
}

/// Polls the order's calls until the first is in `status` (10 s at most).
fn call_reaches(s: &TestServer, order: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = s.get(&format!("/v1/orders/{order}/payment-calls")).send().expect(200);
        let call = calls["data"][0].clone();
        if call["status"] == status {
            return call;
        }
        assert!(Instant::now() < deadline, "the call stayed {}", call["status"]);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn callback(s: &TestServer, body: &Value, signature: Option<String>) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut request = s.post("/v1/payment-callbacks/callback");
    if let Some(signature) = signature {
        request = request.header(gateway::SIGNATURE_HEADER, &signature);
    }
    request.body("application/json", bytes).send()
}

fn signed(s: &TestServer, body: &Value, at_ms: i64) -> Option<String> {
    let bytes = serde_json::to_vec(body).unwrap();
    Some(gateway::sign(s.app().gateway.secret(), at_ms, &bytes))
}

fn now_ms() -> i64 {
    emporium_server::app::now_ms()
}

#[test]
fn a_payment_settles_by_signed_callback_and_the_ledger_adds_up() {
    let s = TestServer::with(|c| c.payment_callback_delay_ms = 50);
    let admin = s.admin();
    s.product(&admin, "CB-1", 1250, 10);
    let order = s.order(None, "CB-1", 2);
    let id = order["id"].as_str().unwrap().to_string();

    let started = start_call(&s, &id, "cb-1", "tok_visa");
    assert_eq!(started.status, 202, "{started}");
    assert_eq!(started.header("location"), Some(format!("/v1/orders/{id}/payment-calls").as_str()));
    let first = started.json;
    assert!(
        ["awaiting_callback", "authorized", "captured"]
            .contains(&first["status"].as_str().unwrap()),
        "{first}"
    );
    assert_eq!(first["amount"], json!({"amount": 2500, "currency": "USD"}));
    // The same key again: the same call, marked replayed.
    let again = start_call(&s, &id, "cb-1", "tok_visa");
    assert_eq!((again.status, again.header("idempotent-replayed")), (202, Some("true")));
    assert_eq!(again.json["id"], first["id"]);

    let call = call_reaches(&s, &id, "captured");
    assert_eq!(call["reference"], format!("cb_{}", first["id"].as_str().unwrap()));
    assert_eq!(call["card_brand"], "visa");
    let paid = s.get(&format!("/v1/orders/{id}")).send().expect(200);
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["payments"][0]["id"], call["payment_id"]);
    assert_eq!(s.stock(&admin, "CB-1"), (8, 0, 8), "the units shipped");
    let ledger = s.get(&format!("/v1/orders/{id}/transactions")).send().expect(200);
    let kinds: Vec<&str> =
        ledger["data"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["authorization", "capture"]);
    assert_eq!(ledger["captured"]["amount"], 2500);
    assert_eq!(ledger["data"][1]["provider_reference"], call["reference"]);
    let report = s.get("/v1/admin/reconciliation").bearer(&admin).send().expect(200);
    assert_eq!(report["mismatch_count"], 0, "{report}");

    // A second payment of a paid order is refused; a refund goes through the provider:
    // 202 with the refund call, then the refund, with the gateway's reference.
    start_call(&s, &id, "cb-2", "tok_visa").problem(409, "invalid_state");
    let refund = s
        .post(&format!("/v1/orders/{id}/refunds"))
        .bearer(&admin)
        .key("re-1")
        .json(json!({"amount": {"amount": 500, "currency": "USD"}, "reason": "late"}));
    let refund = refund.send().expect(202);
    assert_eq!((&refund["kind"], &refund["amount"]["amount"]), (&json!("refund"), &json!(500)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let ledger = loop {
        let ledger = s.get(&format!("/v1/orders/{id}/transactions")).send().expect(200);
        if ledger["refunded"]["amount"] == 500 {
            break ledger;
        }
        assert!(Instant::now() < deadline, "the refund was not made: {ledger}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(ledger["balance"]["amount"], 2000);
    assert_eq!(
        ledger["data"][2]["provider_reference"],
        format!("cb_{}", refund["id"].as_str().unwrap())
    );
    let order = s.get(&format!("/v1/orders/{id}")).send().expect(200);
    assert_eq!(order["status"], "partially_refunded");
    let report = s.get("/v1/admin/reconciliation").bearer(&admin).send().expect(200);
    assert_eq!(report["mismatch_count"], 0, "{report}");
}

#[test]
fn a_declined_callback_leaves_the_order_payable() {
    let s = TestServer::with(|c| c.payment_callback_delay_ms = 20);
    let admin = s.admin();
    s.product(&admin, "CB-2", 700, 5);
    let order = s.order(None, "CB-2", 1);
    let id = order["id"].as_str().unwrap().to_string();
    assert_eq!(start_call(&s, &id, "d-1", "tok_declined").status, 202);
    let call = call_reaches(&s, &id, "declined");
    assert_eq!(call["message"], "the card was declined");
    let now = s.get(&format!("/v1/orders/{id}")).send().expect(200);
    assert_eq!(now["status"], "pending_payment");
    assert_eq!(s.stock(&admin, "CB-2"), (5, 1, 4), "still reserved");
    // Paid again, with the built-in provider this time.
    assert_eq!(s.pay(None, &id, "d-2", "tok_visa").status, 201);
}

#[test]
fn callbacks_must_be_signed_recent_and_about_a_known_call() {
    // A long delay: the gateway's own callback does not interfere.
    let s = TestServer::with(|c| {
        c.payment_callback_delay_ms = 600_000;
        c.payment_callback_wait_s = 700;
        c.payment_give_up_s = 800;
    });
    let admin = s.admin();
    s.product(&admin, "CB-3", 900, 5);
    let order = s.order(None, "CB-3", 1);
    let id = order["id"].as_str().unwrap().to_string();
    let call = start_call(&s, &id, "s-1", "tok_visa").json;
    assert_eq!(call["status"], "awaiting_callback");
    let call_id = call["id"].as_str().unwrap();
    let reference = call["reference"].as_str().unwrap();
    let body = json!({"call_id": call_id, "reference": reference, "status": "authorized", "card_brand": "visa"});

    callback(&s, &body, None).problem(401, "unauthenticated");
    let forged =
        gateway::sign(b"not the gateway's secret", now_ms(), &serde_json::to_vec(&body).unwrap());
    callback(&s, &body, Some(forged)).problem(401, "unauthenticated");
    let stale = signed(&s, &body, now_ms() - gateway::CALLBACK_WINDOW_MS - 60_000);
    callback(&s, &body, stale).problem(401, "unauthenticated");
    // Signed for another body.
    let other = json!({"call_id": call_id, "reference": reference, "status": "declined"});
    callback(&s, &body, signed(&s, &other, now_ms())).problem(401, "unauthenticated");
    let unknown = json!({"call_id": "pcall_0", "reference": "x", "status": "declined"});
    callback(&s, &unknown, signed(&s, &unknown, now_ms())).problem(404, "not_found");
    let no_ref = json!({"call_id": call_id, "reference": "", "status": "declined"});
    assert_eq!(
        callback(&s, &no_ref, signed(&s, &no_ref, now_ms())).invalid_fields(),
        ["reference"]
    );
    let early = signed(&s, &body, now_ms() + gateway::CALLBACK_WINDOW_MS + 60_000);
    callback(&s, &body, early).problem(401, "unauthenticated");
    let huge = Some(format!("t={},v1=00", i64::MIN));
    callback(&s, &body, huge).problem(401, "unauthenticated");
    let wrong_ref = json!({"call_id": call_id, "reference": "cb_other", "status": "authorized"});
    let answer = callback(&s, &wrong_ref, signed(&s, &wrong_ref, now_ms()));
    assert_eq!(answer.invalid_fields(), ["reference"]);
    let odd = json!({"call_id": call_id, "reference": reference, "status": "captured"});
    assert_eq!(callback(&s, &odd, signed(&s, &odd, now_ms())).invalid_fields(), ["status"]);
    let calls = s.get(&format!("/v1/orders/{id}/payment-calls")).send().expect(200);
    assert_eq!(calls["data"][0]["status"], "awaiting_callback", "nothing changed");
    s.post("/v1/payment-callbacks/stripe")
        .body("application/json", b"{}".to_vec())
        .send()
        .problem(404, "not_found");

    // The real answer, signed: the order is captured; the same callback again is a no-op
    // (200), and a contradicting one is refused.
    let good = callback(&s, &body, signed(&s, &body, now_ms()));
    assert_eq!(good.status, 200, "{good}");
    call_reaches(&s, &id, "captured");
    assert_eq!(callback(&s, &body, signed(&s, &body, now_ms())).status, 200);
    callback(&s, &other, signed(&s, &other, now_ms())).problem(409, "invalid_state");
    let paid = s.get(&format!("/v1/orders/{id}")).send().expect(200);
    assert_eq!(paid["status"], "paid");

    // Starting one: a provider that is not configured, a card number.
    let order = s.order(None, "CB-3", 1);
    let id = order["id"].as_str().unwrap();
    let path = format!("/v1/orders/{id}/payment-calls");
    let stripe = s
        .post(&path)
        .key("p-1")
        .json(json!({"provider": "stripe", "method": "test_card", "token": "tok_visa"}));
    assert_eq!(stripe.send().invalid_fields(), ["provider"]);
    assert_eq!(start_call(&s, id, "p-2", "4242424242424242").invalid_fields(), ["token"]);
}

/// The outbox under SIGKILL: payments through the asynchronous provider are started,
/// and the server process is killed — before any callback is due (the in-process
/// gateway dies with it, callbacks and all), around the callbacks' delivery, and at a
/// random moment — four times over. After the last
/// restart every order settles to a known state with no help: paid with exactly one
/// capture for an approved card, pending and payable for a declined one; the stock
/// counts the paid units once, and the ledger reconciles.
/// `EMPORIUM_PAYMENT_CRASH_SEED` replays a run.
#[test]
fn sigkill_during_provider_calls_and_callbacks_leaves_every_order_known() {
    const ROUNDS: usize = 4;
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("EMPORIUM_PAYMENT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("payment crash test: EMPORIUM_PAYMENT_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let work = tempfile::tempdir().unwrap();
    let (data, search) = (work.path().join("data"), work.path().join("search"));
    let env =
        [("EMPORIUM_PAYMENT_CALLBACK_DELAY_MS", "150"), ("EMPORIUM_PAYMENT_CALLBACK_WAIT_S", "1")];
    let mut server = crate::power_loss::ServerChild::start_with(&data, &search, &env);
    let s = TestServer::remote(&server.url);
    let admin = s.admin();
    s.product(&admin, "CR-1", 1000, 1000);
    let mut orders: Vec<(String, &str)> = Vec::new();
    let mut open_at_restart = 0;
    for round in 0..ROUNDS {
        let s = TestServer::remote(&server.url);
        for i in 0..12 {
            let order = s.order(None, "CR-1", 1);
            let id = order["id"].as_str().unwrap().to_string();
            let token = if i % 4 == 3 { "tok_declined" } else { "tok_visa" };
            let started = start_call(&s, &id, &format!("r{round}-{i}"), token);
            assert_eq!(started.status, 202, "{started}");
            orders.push((id, token));
        }
        // The first kill comes before any callback is due, the next two around the
        // callbacks of the last payments (due 150 ms after they started), the last at
        // random.
        let window = [0..50, 120..220, 140..170, 0..400][round].clone();
        std::thread::sleep(Duration::from_millis(rng.random_range(window)));
        server.kill();
        server = crate::power_loss::ServerChild::start_with(&data, &search, &env);
        // What the kill interrupted, as the restarted server found it.
        let s = TestServer::remote(&server.url);
        let mut found = std::collections::BTreeMap::new();
        for (id, _) in &orders[round * 12..] {
            let calls = s.get(&format!("/v1/orders/{id}/payment-calls")).send().expect(200);
            let status = calls["data"][0]["status"].as_str().unwrap().to_string();
            if !["captured", "declined"].contains(&status.as_str()) {
                open_at_restart += 1;
            }
            *found.entry(status).or_insert(0) += 1;
        }
        eprintln!("round {round}: after the kill, the calls were {found:?}");
    }
    assert!(open_at_restart > 0, "no kill interrupted a payment: the test proved nothing");

    let s = TestServer::remote(&server.url);
    let admin = s.admin();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut paid = 0;
    for (id, token) in &orders {
        let (want_call, want_order) = if *token == "tok_visa" {
            ("captured", "paid")
        } else {
            ("declined", "pending_payment")
        };
        let calls = loop {
            let calls = s.get(&format!("/v1/orders/{id}/payment-calls")).send().expect(200);
            let settled = calls["data"].as_array().unwrap().iter().all(|c| {
                ["captured", "declined", "voided"].contains(&c["status"].as_str().unwrap())
            });
            if settled {
                break calls;
            }
            assert!(Instant::now() < deadline, "order {id} did not settle: {calls}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let calls = calls["data"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "one call per order: {calls:?}");
        assert_eq!(calls[0]["status"], want_call, "{id}: {calls:?}");
        let order = s.get(&format!("/v1/orders/{id}")).send().expect(200);
        assert_eq!(order["status"], want_order, "{id}");
        if want_order == "paid" {
            paid += 1;
            assert_eq!(order["payments"].as_array().unwrap().len(), 1, "captured once");
            let ledger = s.get(&format!("/v1/orders/{id}/transactions")).send().expect(200);
            assert_eq!(ledger["captured"]["amount"], 1000);
        }
    }
    assert_eq!(paid, ROUNDS as u64 * 9, "nine approved cards a round");
    // Paid units left on_hand once; the declined orders still hold theirs.
    let declined = ROUNDS as u64 * 3;
    assert_eq!(s.stock(&admin, "CR-1"), (1000 - paid, declined, 1000 - paid - declined));
    let report = s.get("/v1/admin/reconciliation").bearer(&admin).send().expect(200);
    assert_eq!(report["mismatch_count"], 0, "{report}");
    server.kill();
}
