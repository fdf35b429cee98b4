//! Product search over HTTP: freshness after a write, the index across restarts and a
//! deleted index, filters and facets, and bad input.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http_support::*;

/// The freshness promise: an acknowledged write is searchable within this.
const FRESH: Duration = Duration::from_secs(1);

/// Polls `path` until `done` holds of its body; panics past `deadline`. Returns the body
/// and how long it took.
fn poll(
    s: &TestServer,
    path: &str,
    deadline: Duration,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let body = s.get(path).send().expect(200);
        if done(&body) {
            return (body, started.elapsed());
        }
        assert!(
            started.elapsed() < deadline,
            "{path}: not as expected within {deadline:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hit_ids(body: &Value) -> Vec<String> {
    body["hits"].as_array().expect("hits").iter().map(|h| text(h, "id").to_string()).collect()
}

fn create(
    s: &TestServer,
    staff: &str,
    title: &str,
    brand: &str,
    sku: &str,
    amount: i64,
    categories: &[&str],
) -> String {
    let mut body = product_body(sku, amount);
    body["title"] = json!(title);
    body["brand"] = json!(brand);
    body["category_ids"] = json!(categories);
    let product = s.post("/v1/products").bearer(staff).json(body).send().expect(201);
    s.put(&format!("/v1/inventory/{sku}"))
        .bearer(staff)
        .json(json!({"on_hand": 5}))
        .send()
        .expect(200);
    text(&product, "id").to_string()
}

#[test]
fn a_new_product_and_its_stock_are_searchable_within_a_second() {
    let s = TestServer::start();
    let staff = s.admin();
    let id = create(&s, &staff, "Lumen desk lamp", "Glow", "LAMP-1", 4_500, &[]);
    let (body, took) = poll(&s, "/v1/search?q=lumen", FRESH, |b| hit_ids(b) == [id.clone()]);
    let hit = &body["hits"][0];
    assert_eq!(
        (hit["in_stock"].as_bool(), &hit["price"]),
        (Some(true), &json!({"amount": 4_500, "currency": "USD"}))
    );
    assert_eq!(hit["highlights"]["title"], json!("<em>Lumen</em> desk lamp"));
    // A typo, and the word still being typed.
    poll(&s, "/v1/search?q=lumne%20", FRESH, |b| hit_ids(b) == [id.clone()]);
    poll(&s, "/v1/search/suggest?q=lum", FRESH, |b| b["suggestions"][0]["product_id"] == json!(id));
    // Stock to zero: in_stock flips.
    s.put("/v1/inventory/LAMP-1").bearer(&staff).json(json!({"on_hand": 0})).send().expect(200);
    let (_, flipped) =
        poll(&s, "/v1/search?q=lamp&in_stock=false", FRESH, |b| hit_ids(b) == [id.clone()]);
    eprintln!("searchable after {took:?}; out of stock visible after {flipped:?}");
    // Archived: gone.
    s.patch(&format!("/v1/products/{id}"))
        .bearer(&staff)
        .json(json!({"status": "archived"}))
        .send()
        .expect(200);
    poll(&s, "/v1/search?q=lumen", FRESH, |b| b["total"] == json!(0));
}

#[test]
fn published_reviews_move_a_product_in_the_rating_order() {
    let s = TestServer::start();
    let staff = s.admin();
    let low = create(&s, &staff, "Plain mug", "Cup", "MUG-R1", 900, &[]);
    let high = create(&s, &staff, "Fine mug", "Cup", "MUG-R2", 900, &[]);
    let ann = s.register("ann.rates@example.com");
    let rate = |product: &str, rating: i64| {
        let body = json!({"rating": rating, "title": "Mug"});
        s.post(&format!("/v1/products/{product}/reviews")).bearer(&ann.token).json(body).send()
    };
    rate(&low, 2).expect(201);
    rate(&high, 5).expect(201);
    let path = "/v1/search?q=mug&sort=rating";
    let ratings = |b: &Value| (b["hits"][0]["rating"].clone(), b["hits"][1]["rating"].clone());
    poll(&s, path, FRESH, |b| {
        hit_ids(b) == [high.clone(), low.clone()] && ratings(b) == (json!(5.0), json!(2.0))
    });
    // An edit moves it; a review staff reject leaves the rating.
    let edited = rate(&low, 4).expect(200);
    rate(&high, 3).expect(200);
    poll(&s, path, FRESH, |b| {
        hit_ids(b) == [low.clone(), high.clone()] && ratings(b) == (json!(4.0), json!(3.0))
    });
    let reject = format!("/v1/reviews/{}/reject", text(&edited, "id"));
    s.post(&reject).bearer(&staff).json(json!({"reason": "test"})).send().expect(200);
    poll(&s, path, FRESH, |b| {
        hit_ids(b) == [high.clone(), low.clone()] && b["hits"][1]["rating"] == json!(0.0)
    });
}

#[test]
fn filters_facets_and_pages() {
    let s = TestServer::start();
    let staff = s.admin();
    let category = |name: &str, parent: Option<&str>| {
        let body = s
            .post("/v1/categories")
            .bearer(&staff)
            .json(json!({"name": name, "parent_id": parent}))
            .send()
            .expect(201);
        text(&body, "id").to_string()
    };
    let shoes = category("Shoes", None);
    let trail = category("Trail", Some(&shoes));
    let a = create(&s, &staff, "Trail runner", "Swift", "RUN-1", 8_900, &[&trail]);
    let b = create(&s, &staff, "Road runner", "Swift", "RUN-2", 12_900, &[&shoes]);
    let c = create(&s, &staff, "Runner socks", "Knit", "SOCK-1", 900, &[]);
    let (body, _) =
        poll(&s, "/v1/search?q=runner&facets=brand,category_id,price&sort=price_asc", FRESH, |b| {
            b["total"] == json!(3)
        });
    assert_eq!(hit_ids(&body), [c.clone(), a.clone(), b.clone()]);
    assert_eq!(
        body["facets"]["brand"],
        json!([{"value": "Swift", "count": 2}, {"value": "Knit", "count": 1}])
    );
    assert_eq!(
        body["facets"]["category_id"],
        json!([{"value": shoes, "count": 2}, {"value": trail, "count": 1}])
    );
    assert_eq!(
        body["facets"]["price"],
        json!([{"from": 0, "to": 999, "count": 1}, {"from": 5_000, "to": 9_999, "count": 1}, {"from": 10_000, "to": 24_999, "count": 1}])
    );
    // A parent category finds its descendants' products; the brand facet ignores the
    // brand filter but honours the others.
    let body = s
        .get(&format!("/v1/search?category_id={shoes}&brand=Swift&facets=brand&sort=price_desc"))
        .send()
        .expect(200);
    assert_eq!(hit_ids(&body), [b.clone(), a.clone()]);
    assert_eq!(body["facets"]["brand"], json!([{"value": "Swift", "count": 2}]));
    let body = s.get("/v1/search?price_min=900&price_max=8900&sort=price_asc").send().expect(200);
    assert_eq!(hit_ids(&body), [c.clone(), a.clone()]);
    // Pages: a cursor until there is none.
    let mut seen = Vec::new();
    let mut path = "/v1/search?q=runner&limit=2&sort=price_asc".to_string();
    loop {
        let body = s.get(&path).send().expect(200);
        seen.extend(hit_ids(&body));
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/v1/search?q=runner&limit=2&sort=price_asc&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen, [c, a, b]);
}

#[test]
fn the_index_resumes_after_a_restart_and_is_rebuilt_when_deleted() {
    let mut s = TestServer::start();
    let staff = s.admin();
    for n in 0..12 {
        create(
            &s,
            &staff,
            &format!("Ceramic mug {n}"),
            ["Kiln", "Clay"][n % 2],
            &format!("MUG-{n}"),
            1_000 + n as i64 * 500,
            &[],
        );
    }
    let query = "/v1/search?q=mug&facets=brand,price&sort=price_asc&limit=50";
    // Each mug is two writes (the product, then its stock): wait for both of the last.
    let indexed = |b: &Value| {
        b["total"] == json!(12)
            && b["hits"].as_array().is_some_and(|h| h.iter().all(|h| h["in_stock"] == json!(true)))
    };
    let (before, _) = poll(&s, query, FRESH, indexed);
    let same = |a: &Value, b: &Value| {
        a["hits"] == b["hits"] && a["facets"] == b["facets"] && a["total"] == b["total"]
    };
    s.restart();
    let after = s.get(query).send().expect(200);
    assert!(same(&before, &after), "after a restart: {after}\nbefore: {before}");
    // It resumes: a write after the restart is found.
    let id = create(&s, &staff, "Teapot", "Kiln", "POT-1", 3_000, &[]);
    poll(&s, "/v1/search?q=teapot", FRESH, |b| hit_ids(b) == [id.clone()]);
    let (before, _) = poll(&s, query, FRESH, indexed);
    // Deleted while the server is down: rebuilt from the catalog at start.
    let index = s.config().data_dir.join("search");
    s.stop();
    std::fs::remove_dir_all(&index).expect("the index directory is removed");
    s.start_again();
    let after = s.get(query).send().expect(200);
    assert!(same(&before, &after), "after a rebuild: {after}\nbefore: {before}");
    assert!(index.join("meta.json").exists(), "the index is written again");
}

#[test]
fn bad_search_input_gets_a_clear_4xx() {
    let s = TestServer::start();
    for (path, status, code) in [
        (format!("/v1/search?q={}", "a".repeat(201)), 422, "validation_failed"),
        ("/v1/search?price_min=10&price_max=9".into(), 422, "validation_failed"),
        ("/v1/search?sort=cheapest".into(), 400, "malformed_request"),
        ("/v1/search?price_min=-1".into(), 400, "malformed_request"),
        ("/v1/search?price_max=ten".into(), 400, "malformed_request"),
        ("/v1/search?in_stock=yes".into(), 400, "malformed_request"),
        ("/v1/search?facets=colour".into(), 400, "malformed_request"),
        ("/v1/search?cursor=page2".into(), 400, "malformed_request"),
        ("/v1/search?cursor=s10000".into(), 400, "malformed_request"),
        ("/v1/search?limit=101".into(), 400, "malformed_request"),
        ("/v1/search?category_id=shoes".into(), 400, "malformed_request"),
        ("/v1/search?attributes=colour".into(), 400, "malformed_request"),
        ("/v1/search?unknown=1".into(), 400, "malformed_request"),
        ("/v1/search/suggest?limit=0".into(), 400, "malformed_request"),
        (format!("/v1/search/suggest?q={}", "a".repeat(201)), 422, "validation_failed"),
    ] {
        s.get(&path).send().problem(status, code);
    }
    for q in [
        "%22(iphone)%22%3A%20AND%20*",
        "%C3%BCn%C3%AFc%C3%B6d%C3%A9",
        "%20",
        "",
        "a%3Ab%20-c%20%2Bd%20~e",
    ] {
        s.get(&format!("/v1/search?q={q}")).send().expect(200);
        s.get(&format!("/v1/search/suggest?q={q}")).send().expect(200);
    }
    let body = s.get("/v1/search?cursor=s9990&limit=100").send().expect(200);
    assert_eq!(body["next_cursor"], json!(null));
}

/// Waits until the indexer has read and applied the whole durable log (its commit may
/// trail), then answers its status.
fn read_to_the_end(
    t: &emporium_tests::TestEngine,
    search: &emporium_engine::ProductSearch,
) -> emporium_engine::SearchStatus {
    wait_for_lsn(t, search, "read on", |status| status.read_lsn)
}

/// Waits until the indexer has committed at the durable LSN (every entry read and
/// written), then answers its status.
fn settled(
    t: &emporium_tests::TestEngine,
    search: &emporium_engine::ProductSearch,
) -> emporium_engine::SearchStatus {
    wait_for_lsn(t, search, "catch up", |status| status.applied_lsn)
}

/// Polls the indexer's status until `lsn` of it reaches the durable LSN.
fn wait_for_lsn(
    t: &emporium_tests::TestEngine,
    search: &emporium_engine::ProductSearch,
    what: &str,
    lsn: impl Fn(&emporium_engine::SearchStatus) -> emporium_engine::Lsn,
) -> emporium_engine::SearchStatus {
    wait_for_status(search, what, |status| lsn(status) == t.engine.durable_lsn())
}

/// Polls the indexer's status until `done` holds of it; panics, saying it did not
/// `what`, after 10 s.
fn wait_for_status(
    search: &emporium_engine::ProductSearch,
    what: &str,
    done: impl Fn(&emporium_engine::SearchStatus) -> bool,
) -> emporium_engine::SearchStatus {
    let started = Instant::now();
    loop {
        let status = search.status();
        if done(&status) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the indexer did not {what}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_write_that_leaves_a_document_as_it_was_writes_nothing_to_the_index() {
    use emporium_engine::{AdjustStock, ProductSearch, SearchSettings};
    let t = emporium_tests::TestEngine::new();
    emporium_tests::stocked_sku(&t.shop, "LAMP-1", 4_500, 10);
    let search = ProductSearch::start(&t.engine, SearchSettings::in_memory()).expect("start");
    let first = settled(&t, &search);
    assert_eq!((first.products, first.rebuilds), (1, 1));
    // Stock moves, but stays above zero: the document is the same.
    let adjust = |delta| AdjustStock { sku: "LAMP-1".into(), delta, reason: "count".into() };
    t.shop.send(adjust(-3)).expect("adjust");
    let before_commit = read_to_the_end(&t, &search);
    assert_eq!(before_commit.documents_written, first.documents_written, "{before_commit:?}");
    // Nothing else happens: the position it read is committed within 5 s all the same,
    // so the log behind it is not held.
    let idle = settled(&t, &search);
    assert_eq!(idle.documents_written, first.documents_written, "{idle:?}");
    // To zero: in_stock flips, one document is written and committed.
    t.shop.send(adjust(-7)).expect("adjust");
    let flipped = settled(&t, &search);
    assert_eq!(flipped.documents_written, first.documents_written + 1, "{flipped:?}");
    let out = search
        .search(&emporium_engine::SearchQuery { in_stock: Some(false), ..Default::default() })
        .expect("search");
    assert_eq!(out.total, 1);
    search.stop();
}

#[test]
fn once_no_document_is_written_for_a_second_the_segments_are_merged() {
    use emporium_engine::{ProductSearch, SearchQuery, SearchSettings};
    let t = emporium_tests::TestEngine::new();
    let search = ProductSearch::start(&t.engine, SearchSettings::in_memory()).expect("start");
    settled(&t, &search);
    // One product per pass: each committed pass writes a segment, fewer than the 8
    // that a busy index may hold.
    let mut most = 0;
    for i in 0..5 {
        emporium_tests::stocked_sku(&t.shop, &format!("LAMP-{i}"), 4_500, 10);
        most = most.max(settled(&t, &search).segments);
    }
    let merged = format!("merge the segments (at most {most} seen)");
    wait_for_status(&search, &merged, |status| status.segments <= 2);
    let all = search.search(&SearchQuery::default()).expect("search");
    assert_eq!(all.total, 5, "every product is still found after the merge");
    search.stop();
}
