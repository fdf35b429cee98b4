//! The event feed over HTTP: public records of the durable log in order, filtered by
//! type, paged by cursor without loss or repeat, a long poll that answers as soon as a
//! write is durable, and nothing private (carts, accounts, emails) in it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http_support::TestServer;

fn feed(s: &TestServer, admin: &str, query: &str) -> Value {
    s.get(&format!("/v1/events{query}")).bearer(admin).send().expect(200)
}

fn types(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().into()).collect()
}

#[test]
fn the_feed_publishes_the_logs_public_facts_in_order_and_pages_without_loss() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "EVT-1", 1200, 10);
    let paid = s.order(None, "EVT-1", 2);
    let paid_id = paid["id"].as_str().unwrap().to_string();
    s.pay(None, &paid_id, "pay-evt", "tok_visa").expect(201);
    let cancelled = s.order(None, "EVT-1", 1);
    let cancelled_id = cancelled["id"].as_str().unwrap().to_string();
    s.post(&format!("/v1/orders/{cancelled_id}/cancel")).send().expect(200);

    let all = feed(&s, &admin, "");
    assert_eq!(
        types(&all),
        [
            "product.created",
            "stock.set",
            "order.placed",
            "order.paid",
            "order.placed",
            "order.cancelled"
        ],
        "{all}"
    );
    let records = all["data"].as_array().unwrap();
    assert_eq!(records[1]["data"]["location_id"], "loc_000000000000", "the default location");
    assert_eq!(records[2]["data"]["order_id"], paid_id.as_str());
    assert_eq!(
        records[2]["data"]["lines"][0],
        json!({"sku": "EVT-1", "quantity": 2, "unit_price": {"amount": 1200, "currency": "USD"}})
    );
    assert_eq!(records[3]["data"]["amount"], json!({"amount": 2400, "currency": "USD"}));
    let lsns: Vec<u64> = records.iter().map(|r| r["lsn"].as_u64().unwrap()).collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
    let text = all.to_string();
    assert!(!text.contains("guest@example.com") && !text.contains("admin"), "private data: {text}");

    // Filtered by type.
    let orders = feed(&s, &admin, "?types=order.paid,order.cancelled");
    assert_eq!(types(&orders), ["order.paid", "order.cancelled"]);
    assert_eq!(orders["next_cursor"], all["next_cursor"]);

    // One record per page: the same records, none lost or repeated.
    let mut cursor = String::new();
    let mut walked = Vec::new();
    loop {
        let query =
            if cursor.is_empty() { "?limit=1".into() } else { format!("?limit=1&after={cursor}") };
        let page = feed(&s, &admin, &query);
        if page["data"].as_array().unwrap().is_empty() {
            assert_eq!(page["next_cursor"], cursor.as_str());
            break;
        }
        walked.extend(page["data"].as_array().unwrap().iter().map(|r| r["id"].clone()));
        cursor = page["next_cursor"].as_str().unwrap().to_string();
    }
    let ids: Vec<Value> = records.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(walked, ids);
}

#[test]
fn a_long_poll_answers_when_a_write_is_durable_and_bad_queries_are_refused() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "EVT-2", 500, 3);
    let head = feed(&s, &admin, "")["next_cursor"].as_str().unwrap().to_string();
    // Nothing new: the poll runs out and keeps the cursor.
    let started = Instant::now();
    let idle = feed(&s, &admin, &format!("?after={head}&wait_ms=300"));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        (idle["data"].as_array().unwrap().len(), idle["next_cursor"].as_str()),
        (0, Some(head.as_str()))
    );
    // A write during the poll ends it early.
    let base = s.url("");
    let (poll_admin, poll_head) = (admin.clone(), head.clone());
    let poll = std::thread::spawn(move || {
        let remote = TestServer::remote(&base);
        let started = Instant::now();
        let page = feed(
            &remote,
            &poll_admin,
            &format!("?after={poll_head}&wait_ms=20000&types=stock.adjusted"),
        );
        (page, started.elapsed())
    });
    // The poll is in flight once it holds a read slot (nothing else reads meanwhile).
    let reads_max = s.config().reads_concurrency_max;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.app().reads.available_permits() == reads_max {
        assert!(Instant::now() < deadline, "the poll did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A cart is not published: the poll goes on past it.
    s.post("/v1/carts").send().expect(201);
    s.post("/v1/inventory/EVT-2/adjustments")
        .bearer(&admin)
        .json(json!({"delta": 4, "reason": "restock"}))
        .send()
        .expect(200);
    let (page, waited) = poll.join().unwrap();
    assert_eq!(types(&page), ["stock.adjusted"], "{page}");
    assert_eq!(
        page["data"][0]["data"],
        json!({"sku": "EVT-2", "location_id": "loc_000000000000", "delta": 4, "reason": "restock"})
    );
    assert!(waited < Duration::from_secs(10), "{waited:?}");

    s.get("/v1/events?types=order.placed,nope")
        .bearer(&admin)
        .send()
        .problem(422, "validation_failed");
    s.get("/v1/events?after=x").bearer(&admin).send().problem(400, "malformed_request");
    s.get("/v1/events?wait_ms=99999").bearer(&admin).send().problem(400, "malformed_request");
    s.get("/v1/events?limit=0").bearer(&admin).send().problem(400, "malformed_request");
    s.get("/v1/events").send().problem(401, "unauthenticated");
}

#[test]
fn a_named_consumer_resumes_where_it_acknowledged_and_can_be_forgotten() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "EVT-3", 700, 5);
    let first = feed(&s, &admin, "?consumer=erp&limit=1");
    assert_eq!(types(&first), ["product.created"]);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    // Acknowledging the first page; a read without `after` resumes after it.
    feed(&s, &admin, &format!("?consumer=erp&after={cursor}&limit=1"));
    let resumed = feed(&s, &admin, "?consumer=erp");
    assert_eq!(types(&resumed), ["stock.set"], "{resumed}");
    s.delete("/v1/events/consumers/erp").bearer(&admin).send().expect(204);
    s.delete("/v1/events/consumers/erp").bearer(&admin).send().problem(404, "not_found");
    s.get("/v1/events?consumer=Bad!").bearer(&admin).send().problem(422, "validation_failed");
    for i in 0..16 {
        feed(&s, &admin, &format!("?consumer=c{i}&limit=1"));
    }
    s.get("/v1/events?consumer=one-too-many").bearer(&admin).send().problem(409, "conflict");
}
