//! The HTTP contract of `API.md`, endpoint by endpoint, over real sockets: each
//! endpoint's successes and refusals, the caching and precondition headers, idempotency
//! (also across a restart), the problem+json shape of every error, the operational
//! endpoints, rate limits, and two shoppers end to end. Tables of one-line cases run
//! through one `check` helper per feature.

use std::time::Duration;

use emporium_engine::{Engine, EngineConfig, ProductId};
use serde_json::{json, Value};

use crate::http_support::*;

// --- catalog ------------------------------------------------------------------------

#[test]
fn products_are_created_read_changed_and_archived() {
    let s = TestServer::start();
    let admin = s.admin();
    let created = s.post("/v1/products").bearer(&admin).json(product_body("TEE-1", 1999)).send();
    assert_eq!(created.status, 201, "{created}");
    let id = text(&created.json, "id").to_string();
    assert!(id.starts_with("prod_"), "{id}");
    assert_eq!(created.header("location"), Some(format!("/v1/products/{id}").as_str()));
    assert_eq!(etag_version(&created), Some(1));
    let body = &created.json;
    assert_eq!(
        (body["handle"].as_str(), body["status"].as_str()),
        (Some("product-tee-1"), Some("active"))
    );
    assert_eq!(body["variants"][0]["price"], json!({"amount": 1999, "currency": "USD"}));
    assert_eq!(body["version"], 1);

    let path = format!("/v1/products/{id}");
    let read = s.get(&path).send();
    assert_eq!(read.status, 200, "{read}");
    assert_eq!(etag_version(&read), Some(1));
    assert!(read.header("cache-control").is_some_and(|c| c.starts_with("public")), "{read:?}");
    assert_eq!(read.json["title"], "Product TEE-1");

    // A stale If-Match changes nothing; the right one does.
    let stale =
        s.patch(&path).bearer(&admin).header("if-match", "\"7\"").json(json!({"title": "Changed"}));
    stale.send().problem(412, "precondition_failed");
    let garbage =
        s.patch(&path).bearer(&admin).header("if-match", "yesterday").json(json!({"title": "X"}));
    garbage.send().problem(412, "precondition_failed");
    // The right version with content the product does not have (what a reader saw of a
    // write that a crash then rolled back, before another write took its version) is
    // refused: an ETag names a content, not only a version.
    let current = read.header("etag").expect("an ETag").to_string();
    let other_content = format!("\"1-{:08x}\"", 0xdead_beef_u32);
    assert_ne!(current, other_content);
    let rolled_back = s
        .patch(&path)
        .bearer(&admin)
        .header("if-match", &other_content)
        .json(json!({"title": "Y"}));
    rolled_back.send().problem(412, "precondition_failed");
    let patched = s
        .patch(&path)
        .bearer(&admin)
        .header("if-match", &current)
        .json(json!({"title": "Better"}))
        .send();
    assert_eq!(etag_version(&patched), Some(2), "{patched}");
    let patched = patched.expect(200);
    assert_eq!((patched["title"].as_str(), patched["version"].as_u64()), (Some("Better"), Some(2)));
    assert_eq!(s.get(&path).send().expect(200)["title"], "Better");

    // A SKU or handle another product holds is a conflict.
    s.post("/v1/products")
        .bearer(&admin)
        .json(product_body("TEE-1", 500))
        .send()
        .problem(409, "conflict");
    let mut taken = product_body("TEE-2", 500);
    taken["handle"] = json!("product-tee-1");
    s.post("/v1/products").bearer(&admin).json(taken).send().problem(409, "conflict");

    // Archiving: a stale If-Match is refused; then 204, and customers no longer see it.
    s.delete(&path)
        .bearer(&admin)
        .header("if-match", "\"1\"")
        .send()
        .problem(412, "precondition_failed");
    let archived = s.delete(&path).bearer(&admin).send();
    assert_eq!((archived.status, archived.body.len()), (204, 0), "{archived}");
    s.get(&path).send().problem(404, "not_found");
    assert_eq!(s.get(&path).bearer(&admin).send().expect(200)["status"], "archived");
    s.get("/v1/products/prod_999999").send().problem(404, "not_found");
    s.get("/v1/products/not-an-id").send().problem(404, "not_found");
    s.patch("/v1/products/prod_999999")
        .bearer(&admin)
        .json(json!({"title": "X"}))
        .send()
        .problem(404, "not_found");
}

/// `If-None-Match` on catalog reads: (header value, expected status).
#[test]
fn conditional_catalog_reads_answer_304() {
    let s = TestServer::start();
    let admin = s.admin();
    let product =
        s.post("/v1/products").bearer(&admin).json(product_body("COND-1", 100)).send().expect(201);
    let category =
        s.post("/v1/categories").bearer(&admin).json(json!({"name": "Hats"})).send().expect(201);
    let list_etag =
        s.get("/v1/products").send().header("etag").expect("lists have an ETag").to_string();
    let product_path = format!("/v1/products/{}", text(&product, "id"));
    let category_path = format!("/v1/categories/{}", text(&category, "id"));
    let check = |path: &str, if_none_match: &str, expected: u16| {
        let answer = s.get(path).header("if-none-match", if_none_match).send();
        assert_eq!(answer.status, expected, "GET {path} If-None-Match {if_none_match}: {answer}");
        if expected == 304 {
            assert!(answer.body.is_empty(), "a 304 has no body: {answer}");
        }
        assert!(answer.header("etag").is_some(), "GET {path}: {answer:?}");
    };
    let etag_of = |path: &str| s.get(path).send().header("etag").expect("an ETag").to_string();
    let (product_etag, category_etag) = (etag_of(&product_path), etag_of(&category_path));
    check(&product_path, &product_etag, 304);
    check(&product_path, &format!("W/{product_etag}"), 304);
    check(&product_path, &format!("\"9-00000000\", {product_etag}"), 304);
    check(&product_path, "*", 304);
    // An ETag names a content, not only a version: the bare version is another tag.
    check(&product_path, "\"1\"", 200);
    check(&category_path, &category_etag, 304);
    check(&category_path, "\"3-00000000\"", 200);
    check("/v1/products", &list_etag, 304);
    check("/v1/products", "\"h0000000000000000\"", 200);
}

/// Catalog reads are cacheable by anyone; everything else is `no-store`.
#[test]
fn catalog_reads_are_public_and_the_rest_is_not_cached() {
    let s = TestServer::start();
    let admin = s.admin();
    let product = s.product(&admin, "CACHE-1", 100, 5);
    let mut draft = product_body("CACHE-2", 100);
    draft["status"] = json!("draft");
    let draft = s.post("/v1/products").bearer(&admin).json(draft).send().expect(201);
    let category =
        s.post("/v1/categories").bearer(&admin).json(json!({"name": "Caps"})).send().expect(201);
    let cart = s.cart(None);
    let check = |path: String, token: Option<&str>, public: bool| {
        let answer = s.get(&path).auth(token).send();
        assert_eq!(answer.status, 200, "GET {path}: {answer}");
        let cache = answer.header("cache-control").unwrap_or_default();
        assert_eq!(cache.starts_with("public"), public, "GET {path}: Cache-Control {cache:?}");
        if !public {
            assert!(
                cache.contains("no-store") || cache.contains("private"),
                "GET {path}: {cache:?}"
            );
        }
    };
    check("/v1/products".into(), None, true);
    check(format!("/v1/products/{}", text(&product, "id")), None, true);
    check("/v1/categories".into(), None, true);
    check(format!("/v1/categories/{}", text(&category, "id")), None, true);
    check(format!("/v1/products/{}", text(&draft, "id")), Some(&admin), false);
    check(format!("/v1/carts/{cart}"), None, false);
    check("/v1/inventory/CACHE-1".into(), Some(&admin), false);
    check("/v1/customers/me".into(), Some(&admin), false);
    // A staff listing holds drafts: no shared cache may keep it for customers.
    check("/v1/products".into(), Some(&admin), false);
    check("/v1/products?status=draft".into(), Some(&admin), false);
}

#[test]
fn customers_see_only_active_products() {
    let s = TestServer::start();
    let admin = s.admin();
    let active = s.product(&admin, "VIS-1", 100, 1);
    let mut draft = product_body("VIS-2", 100);
    draft["status"] = json!("draft");
    let draft = s.post("/v1/products").bearer(&admin).json(draft).send().expect(201);
    let ids = |answer: Value| -> Vec<String> {
        answer["data"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|p| text(p, "id").to_string())
            .collect()
    };
    assert_eq!(ids(s.get("/v1/products").send().expect(200)), [text(&active, "id")]);
    assert_eq!(ids(s.get("/v1/products").bearer(&admin).send().expect(200)).len(), 2);
    let drafts = s.get("/v1/products?status=draft").bearer(&admin).send().expect(200);
    assert_eq!(ids(drafts), [text(&draft, "id")]);
    s.get("/v1/products?status=draft").send().problem(403, "forbidden");
    s.get(&format!("/v1/products/{}", text(&draft, "id"))).send().problem(404, "not_found");
    // A customer cannot put a draft product in a cart.
    let cart = s.cart(None);
    assert_eq!(s.add(None, &cart, "VIS-2", 1).invalid_fields(), ["sku"]);
}

#[test]
fn categories_form_a_tree() {
    let s = TestServer::start();
    let admin = s.admin();
    let create = |body: Value| s.post("/v1/categories").bearer(&admin).json(body).send();
    let clothing = create(json!({"name": "Clothing"}));
    assert_eq!(clothing.status, 201, "{clothing}");
    let clothing_id = text(&clothing.json, "id").to_string();
    assert!(clothing_id.starts_with("cat_"));
    assert_eq!(clothing.header("location"), Some(format!("/v1/categories/{clothing_id}").as_str()));
    assert_eq!(
        (clothing.json["path"].as_str(), &clothing.json["parent_id"]),
        (Some("Clothing"), &Value::Null)
    );
    let shirts = create(json!({"name": "Shirts", "parent_id": clothing_id})).expect(201);
    let shirts_id = text(&shirts, "id").to_string();
    assert_eq!(shirts["path"], "Clothing > Shirts");
    assert_eq!(shirts["parent_id"], clothing_id.as_str());
    let empty = create(json!({"name": "Empty"})).expect(201);

    assert_eq!(create(json!({"name": ""})).invalid_fields(), ["name"]);
    assert_eq!(
        create(json!({"name": "X", "parent_id": "cat_999999"})).invalid_fields(),
        ["parent_id"]
    );

    let shirts_path = format!("/v1/categories/{shirts_id}");
    let clothing_path = format!("/v1/categories/{clothing_id}");
    // No cycles: a category cannot move under its own descendant.
    let cycle = s.patch(&clothing_path).bearer(&admin).json(json!({"parent_id": shirts_id})).send();
    assert_eq!(cycle.invalid_fields(), ["parent_id"]);
    let stale = s
        .patch(&shirts_path)
        .bearer(&admin)
        .header("if-match", "\"5\"")
        .json(json!({"name": "Tees"}));
    stale.send().problem(412, "precondition_failed");
    let renamed = s
        .patch(&shirts_path)
        .bearer(&admin)
        .header("if-match", "\"1\"")
        .json(json!({"name": "Tees"}));
    let renamed = renamed.send().expect(200);
    assert_eq!(
        (renamed["path"].as_str(), renamed["version"].as_u64()),
        (Some("Clothing > Tees"), Some(2))
    );
    let moved =
        s.patch(&shirts_path).bearer(&admin).json(json!({"parent_id": null})).send().expect(200);
    assert_eq!((moved["path"].as_str(), &moved["parent_id"]), (Some("Tees"), &Value::Null));
    assert_eq!(s.get(&shirts_path).send().expect(200)["name"], "Tees");

    // A category with subcategories or products is not deleted.
    s.patch(&shirts_path).bearer(&admin).json(json!({"parent_id": clothing_id})).send().expect(200);
    s.delete(&clothing_path).bearer(&admin).send().problem(409, "conflict");
    let mut listed = product_body("CAT-1", 100);
    listed["category_ids"] = json!([shirts_id]);
    s.post("/v1/products").bearer(&admin).json(listed).send().expect(201);
    s.delete(&shirts_path).bearer(&admin).send().problem(409, "conflict");
    let in_category = s.get(&format!("/v1/products?category_id={shirts_id}")).send().expect(200);
    assert_eq!(in_category["data"].as_array().map(Vec::len), Some(1));

    let empty_path = format!("/v1/categories/{}", text(&empty, "id"));
    s.delete(&empty_path)
        .bearer(&admin)
        .header("if-match", "\"4\"")
        .send()
        .problem(412, "precondition_failed");
    assert_eq!(s.delete(&empty_path).bearer(&admin).send().status, 204);
    s.get(&empty_path).send().problem(404, "not_found");
    s.delete(&empty_path).bearer(&admin).send().problem(404, "not_found");
    let all = s.get("/v1/categories").send().expect(200);
    assert_eq!(all["data"].as_array().map(Vec::len), Some(2), "{all}");
}

// --- inventory ----------------------------------------------------------------------

#[test]
fn inventory_is_set_and_adjusted_but_never_below_reserved() {
    let s = TestServer::start();
    let admin = s.admin();
    s.post("/v1/products").bearer(&admin).json(product_body("INV-1", 250)).send().expect(201);
    let fresh = s.get("/v1/inventory/INV-1").bearer(&admin).send();
    assert_eq!(etag_version(&fresh), Some(1), "{fresh}");
    let fresh = fresh.expect(200);
    assert_eq!(
        (&fresh["sku"], &fresh["on_hand"], &fresh["reserved"], &fresh["available"]),
        (&json!("INV-1"), &json!(0), &json!(0), &json!(0))
    );
    let set = |body: Value, if_match: Option<&str>| {
        let request = s.put("/v1/inventory/INV-1").bearer(&admin).json(body);
        match if_match {
            Some(version) => request.header("if-match", version).send(),
            None => request.send(),
        }
    };
    let adjust = |delta: i64| {
        s.post("/v1/inventory/INV-1/adjustments")
            .bearer(&admin)
            .json(json!({"delta": delta, "reason": "count"}))
            .send()
    };
    assert_eq!(set(json!({"on_hand": 10}), Some("\"1\"")).expect(200)["available"], 10);
    set(json!({"on_hand": 11}), Some("\"1\"")).problem(412, "precondition_failed");
    assert_eq!(adjust(5).expect(200)["on_hand"], 15);
    adjust(-20).problem(409, "conflict");
    assert_eq!(adjust(0).invalid_fields(), ["delta"]);
    assert_eq!(set(json!({"on_hand": -1}), None).invalid_fields(), ["on_hand"]);
    assert_eq!(set(json!({"on_hand": "ten"}), None).invalid_fields(), ["on_hand"]);
    let no_reason =
        s.post("/v1/inventory/INV-1/adjustments").bearer(&admin).json(json!({"delta": 1}));
    assert_eq!(no_reason.send().invalid_fields(), ["reason"]);
    assert_eq!(s.stock(&admin, "INV-1"), (15, 0, 15));

    // Reserve 4 units with a checkout: on hand may not go below them.
    s.order(None, "INV-1", 4);
    assert_eq!(s.stock(&admin, "INV-1"), (15, 4, 11));
    set(json!({"on_hand": 3}), None).problem(409, "conflict");
    adjust(-12).problem(409, "conflict");
    let exact = set(json!({"on_hand": 4}), None).expect(200);
    assert_eq!(
        (exact["on_hand"].as_u64(), exact["reserved"].as_u64(), exact["available"].as_u64()),
        (Some(4), Some(4), Some(0))
    );

    s.get("/v1/inventory/NOPE-1").bearer(&admin).send().problem(404, "not_found");
    s.put("/v1/inventory/NOPE-1")
        .bearer(&admin)
        .json(json!({"on_hand": 1}))
        .send()
        .problem(404, "not_found");
    let unknown = s
        .post("/v1/inventory/NOPE-1/adjustments")
        .bearer(&admin)
        .json(json!({"delta": 1, "reason": "x"}));
    unknown.send().problem(404, "not_found");
}

#[test]
fn stock_is_kept_in_locations_reserved_by_priority_and_moved_between_them() {
    let s = TestServer::start();
    let admin = s.admin();
    s.post("/v1/products").bearer(&admin).json(product_body("LOC-1", 400)).send().expect(201);
    let create = |body: Value| s.post("/v1/locations").bearer(&admin).json(body).send();
    let north = create(json!({"name": "North", "kind": "warehouse", "priority": 10}));
    let north_path = north.header("location").expect("a Location").to_string();
    let north = north.expect(201);
    assert_eq!(
        (&north["kind"], &north["priority"], &north["default"]),
        (&json!("warehouse"), &json!(10), &json!(false))
    );
    let north = text(&north, "id").to_string();
    assert_eq!(north_path, format!("/v1/locations/{north}"));
    let store = create(json!({"name": "Shop", "kind": "store"})).expect(201);
    assert_eq!(store["priority"], 100);
    let store = text(&store, "id").to_string();
    assert_eq!(
        create(json!({"name": "", "kind": "barn", "priority": -1})).invalid_fields(),
        ["name", "priority", "kind"]
    );
    create(json!({"name": "X", "kind": "store", "extra": 1})).problem(422, "validation_failed");
    let listed = s.get("/v1/locations").bearer(&admin).send().expect(200);
    let ids: Vec<&str> =
        listed["data"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["loc_000000000000", north.as_str(), store.as_str()]);
    assert_eq!(listed["data"][0]["default"], true);

    let at = |location: &str| format!("/v1/inventory/LOC-1/locations/{location}");
    s.put("/v1/inventory/LOC-1").bearer(&admin).json(json!({"on_hand": 5})).send().expect(200);
    let set =
        s.put(&at(&north)).bearer(&admin).json(json!({"on_hand": 3, "reason": "count"})).send();
    let version = etag_version(&set).expect("an ETag");
    let set = set.expect(200);
    assert_eq!(
        (&set["on_hand"], &set["available"], &set["version"]),
        (&json!(8), &json!(8), &json!(version))
    );
    s.put(&at(&store))
        .bearer(&admin)
        .header("if-match", "\"1\"")
        .json(json!({"on_hand": 1}))
        .send()
        .problem(412, "precondition_failed");
    let adjusted = s
        .post(&format!("{}/adjustments", at(&store)))
        .bearer(&admin)
        .json(json!({"delta": 4, "reason": "received"}))
        .send()
        .expect(200);
    let levels = |body: &Value| -> Vec<(u64, u64, u64)> {
        body["locations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["on_hand"].as_u64().unwrap(),
                    l["reserved"].as_u64().unwrap(),
                    l["available"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(levels(&adjusted), [(5, 0, 5), (3, 0, 3), (4, 0, 4)]);
    assert_eq!(s.stock(&admin, "LOC-1"), (12, 0, 12), "the totals are over every location");

    // North (priority 10) first, then the fullest of the two at 100 (Default, 5).
    let order = s.order(None, "LOC-1", 5);
    let order_id = text(&order, "id").to_string();
    let picks =
        s.get(&format!("/v1/orders/{order_id}/stock-locations")).bearer(&admin).send().expect(200);
    assert_eq!(
        picks["items"],
        json!([{"sku": "LOC-1", "location_id": north, "quantity": 3},
               {"sku": "LOC-1", "location_id": "loc_000000000000", "quantity": 2}])
    );
    assert_eq!(picks["status"], "pending_payment");
    s.get("/v1/orders/ord_nope/stock-locations").bearer(&admin).send().problem(404, "not_found");
    let now = s.get("/v1/inventory/LOC-1/locations").bearer(&admin).send().expect(200);
    assert_eq!(levels(&now), [(5, 2, 3), (3, 3, 0), (4, 0, 4)]);
    assert_eq!((&now["on_hand"], &now["reserved"]), (&json!(12), &json!(5)));

    let transfer =
        |body: Value| s.post("/v1/inventory/LOC-1/transfers").bearer(&admin).json(body).send();
    let moved = transfer(json!({"from_location_id": store, "to_location_id": north, "quantity": 4, "reason": "rebalance"})).expect(200);
    assert_eq!(levels(&moved), [(5, 2, 3), (7, 3, 4), (0, 0, 0)]);
    transfer(json!({"from_location_id": north, "to_location_id": store, "quantity": 5}))
        .problem(409, "conflict");
    assert_eq!(
        transfer(json!({"from_location_id": north, "to_location_id": "loc_nope", "quantity": 1}))
            .invalid_fields(),
        ["to_location_id"]
    );
    assert_eq!(
        transfer(json!({"from_location_id": north, "to_location_id": north, "quantity": 0}))
            .invalid_fields(),
        ["quantity", "to_location_id"]
    );

    // Deleting: not the default one, not one holding units.
    let delete = |id: &str| s.delete(&format!("/v1/locations/{id}")).bearer(&admin).send();
    delete("loc_000000000000").problem(409, "invalid_state");
    delete(&north).problem(409, "invalid_state");
    assert_eq!(delete(&store).status, 204);
    delete(&store).problem(404, "not_found");
    s.put(&at(&store)).bearer(&admin).json(json!({"on_hand": 1})).send().problem(404, "not_found");
    s.get("/v1/inventory/NOPE-1/locations").bearer(&admin).send().problem(404, "not_found");
    let read = s.get(&format!("/v1/locations/{north}")).bearer(&admin).send();
    let etag = read.header("etag").expect("an ETag").to_string();
    let patch = |if_match: &str, body: Value| {
        s.patch(&format!("/v1/locations/{north}"))
            .bearer(&admin)
            .header("if-match", if_match)
            .json(body)
            .send()
    };
    let patched = patch(&etag, json!({"name": "North hub", "priority": 200})).expect(200);
    assert_eq!(
        (&patched["name"], &patched["priority"], &patched["version"]),
        (&json!("North hub"), &json!(200), &json!(2))
    );
    patch(&etag, json!({"name": "Stale"})).problem(412, "precondition_failed");
    s.delete(&format!("/v1/locations/{north}"))
        .bearer(&admin)
        .header("if-match", "\"1\"")
        .send()
        .problem(412, "precondition_failed");

    // The event feed tells where stock moved.
    let feed = s
        .get("/v1/events?types=stock.transferred,location.deleted")
        .bearer(&admin)
        .send()
        .expect(200);
    let records = feed["data"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{feed}");
    assert_eq!(
        records[0]["data"],
        json!({"sku": "LOC-1", "from_location_id": store, "to_location_id": north, "quantity": 4, "reason": "rebalance"})
    );
    assert_eq!(records[1]["data"], json!({"location_id": store}));
}

// --- recommendations ----------------------------------------------------------------

#[test]
fn recommendations_come_from_paid_orders_and_skip_what_cannot_be_bought() {
    let s = TestServer::start();
    let admin = s.admin();
    let ids: Vec<String> = [("RECO-A", 10), ("RECO-B", 10), ("RECO-C", 10), ("RECO-D", 0)]
        .iter()
        .map(|(sku, on_hand)| text(&s.product(&admin, sku, 500, *on_hand), "id").to_string())
        .collect();
    let (ann, bob, cat) = (
        s.register("ann.reco@example.com"),
        s.register("bob.reco@example.com"),
        s.register("cat.reco@example.com"),
    );
    let buy = |token: &str, skus: &[&str], paid: bool| {
        let cart = s.cart(Some(token));
        for sku in skus {
            s.add(Some(token), &cart, sku, 1).expect(200);
        }
        let order = s.checkout(Some(token), &cart, &format!("reco-{cart}"), json!({})).expect(201);
        if paid {
            s.pay(Some(token), text(&order, "id"), &format!("pay-{cart}"), "tok_visa").expect(201);
        }
    };
    buy(&ann.token, &["RECO-A", "RECO-B"], true);
    buy(&bob.token, &["RECO-A", "RECO-B", "RECO-C"], true);
    // Not paid: counts for nothing.
    buy(&cat.token, &["RECO-A", "RECO-C"], false);

    let listed = |path: &str, token: Option<&str>| -> Vec<(String, String, f64)> {
        let body = s.get(path).auth(token).send().expect(200);
        let items = body["data"].as_array().unwrap();
        let item = |r: &Value| {
            let product = text(&r["product"], "id").to_string();
            (product, text(r, "basis").to_string(), r["score"].as_f64().unwrap())
        };
        items.iter().map(item).collect()
    };
    // The recommender folds the log in the background: wait for the second payment.
    let together = format!("/v1/products/{}/recommendations", ids[0]);
    emporium_tests::wait_until("a recommendation", Duration::from_secs(10), || {
        !listed(&together, None).is_empty()
    });
    // A and C were bought together once (below the support of 2).
    let b = |basis: &str, score: f64| (ids[1].clone(), basis.to_string(), score);
    assert_eq!(listed(&together, None), [b("bought_together", 2.0)]);
    let also = format!("{together}?kind=also_bought&limit=5");
    assert_eq!(listed(&also, None), [b("also_bought", 2.0)]);
    // Cat paid for nothing: the trending products, the tie of A and B by id.
    let mine = "/v1/customers/me/recommendations";
    let trending: Vec<String> = listed(mine, Some(&cat.token)).into_iter().map(|r| r.0).collect();
    assert_eq!(trending, ids[..3]);
    // Ann is never offered what she bought; D is out of stock.
    let anns = listed(mine, Some(&ann.token));
    assert_eq!(anns.iter().map(|r| (&r.0, &*r.1)).collect::<Vec<_>>(), [(&ids[2], "trending")]);
    let trending = listed("/v1/recommendations/trending?limit=2", None);
    assert_eq!(trending.iter().map(|r| &r.0).collect::<Vec<_>>(), [&ids[0], &ids[1]]);
    assert!(trending[0].2 > 1.99 && trending[0].2 <= 2.0, "{trending:?}");

    s.get(&format!("{together}?kind=best")).send().problem(400, "malformed_request");
    s.get(&format!("{together}?limit=0")).send().problem(400, "malformed_request");
    s.get("/v1/products/prod_000000009999/recommendations").send().problem(404, "not_found");
    s.get(mine).send().problem(401, "unauthenticated");
    let bad_category = "/v1/recommendations/trending?category_id=x";
    s.get(bad_category).send().problem(400, "malformed_request");
    let unknown = "/v1/recommendations/trending?category_id=cat_000000009999";
    assert!(listed(unknown, None).is_empty());
}

// --- business KPIs ------------------------------------------------------------------

#[test]
fn stats_count_carts_orders_and_money_by_the_hour() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "KPI-1", 1250, 10);
    let ann = s.register("ann.kpi@example.com");
    let paid = s.order(Some(&ann.token), "KPI-1", 2);
    s.pay(Some(&ann.token), text(&paid, "id"), "pay-kpi", "tok_visa").expect(201);
    // A second cart with an item, not checked out: undecided until its window ends.
    let cart = s.cart(Some(&ann.token));
    s.add(Some(&ann.token), &cart, "KPI-1", 1).expect(200);
    // An empty cart.
    s.cart(None);

    let stats = || s.get("/v1/admin/stats?bucket=hour").bearer(&admin).send().expect(200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let body = loop {
        let body = stats();
        if body["totals"]["carts_created"] == 3 && body["totals"]["orders_paid"] == 1 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "the KPIs did not follow: {body}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let totals = &body["totals"];
    let counts: Vec<u64> = ["carts_with_items", "carts_converted", "carts_abandoned"]
        .iter()
        .chain(&["orders_placed", "checkouts", "payments_declined"])
        .map(|f| totals[f].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [2, 1, 0, 1, 1, 0]);
    assert_eq!(totals["gmv"], json!([{"amount": 2500, "currency": "USD"}]));
    assert_eq!(totals["average_order_value"], totals["gmv"]);
    assert_eq!(totals["conversion_rate"].as_f64().unwrap(), 1.0 / 3.0);
    assert_eq!(totals["abandonment_rate"], 0.0);
    assert_eq!(totals["payment_decline_rate"], 0.0);
    assert_eq!(body["carts_undecided"], 1);
    assert_eq!(body["abandonment_window_s"], 86_400);
    assert_eq!(body["buckets"].as_array().unwrap().len(), 24);
    let top = &body["top_products"][0];
    assert_eq!((&top["units"], &top["title"]), (&json!(2), &json!("Product KPI-1")));
    let metrics = String::from_utf8(s.get("/metrics").send().body).expect("metrics are text");
    assert!(metrics.contains("emporium_kpi{figure=\"orders_paid\"} 1"), "{metrics}");
    let gmv = "emporium_kpi_amount_minor_units{figure=\"gmv\",currency=\"USD\"} 2500";
    assert!(metrics.contains(gmv), "{metrics}");

    let get = |query: &str| s.get(&format!("/v1/admin/stats{query}")).bearer(&admin).send();
    get("?bucket=week").problem(400, "malformed_request");
    get("?from=yesterday").problem(400, "malformed_request");
    get("?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z").problem(422, "validation_failed");
    get("?bucket=minute&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z")
        .problem(422, "validation_failed");
    let day = get("?bucket=day&from=2026-01-01T10:00:00Z&to=2026-01-03T00:00:00Z").expect(200);
    assert_eq!(
        (&day["from"], &day["buckets"][1]["start"]),
        (&json!("2026-01-01T00:00:00.000Z"), &json!("2026-01-02T00:00:00.000Z"))
    );
    s.get("/v1/admin/stats").send().problem(401, "unauthenticated");
    s.get("/v1/admin/stats").bearer(&ann.token).send().problem(403, "forbidden");
}

/// `--kpi-minute-days` reaches the model: with one day, minute buckets two days back
/// are refused (counted per hour there), where the default week still has them.
#[test]
fn the_kpi_minute_retention_is_the_servers_setting() {
    let minutes_two_days_back = |s: &TestServer| {
        let admin = s.admin();
        s.cart(None);
        emporium_tests::wait_until("the KPIs to count the cart", Duration::from_secs(10), || {
            s.get("/v1/admin/stats").bearer(&admin).send().expect(200)["totals"]["carts_created"]
                == 1
        });
        let at =
            |ago_ms: i64| emporium_server::wire::rfc3339(emporium_server::app::now_ms() - ago_ms);
        let (from, to) = (at(2 * 86_400_000), at(2 * 86_400_000 - 1_800_000));
        let query = format!("/v1/admin/stats?bucket=minute&from={from}&to={to}");
        s.get(&query).bearer(&admin).send()
    };
    let one_day = TestServer::with(|config| config.kpi_minute_days = 1);
    let refused = minutes_two_days_back(&one_day).problem(422, "validation_failed");
    assert!(refused.to_string().contains("per hour"), "{refused}");
    let week = TestServer::start();
    let kept = minutes_two_days_back(&week).expect(200);
    assert_eq!(kept["buckets"].as_array().map(Vec::len), Some(30));
}

// --- reviews ------------------------------------------------------------------------

#[test]
fn customers_review_vote_and_staff_moderate_with_the_rating_on_the_product() {
    let s = TestServer::start();
    let admin = s.admin();
    let product = s.product(&admin, "REV-1", 900, 10);
    let id = text(&product, "id").to_string();
    let reviews = format!("/v1/products/{id}/reviews");
    let ann = s.register("ann.reviews@example.com");
    let bob = s.register("bob.reviews@example.com");
    // Ann bought it; Bob did not.
    let paid = s.order(Some(&ann.token), "REV-1", 1);
    s.pay(Some(&ann.token), text(&paid, "id"), "pay-rev", "tok_visa").expect(201);

    let write = |token: Option<&str>, body: Value| s.post(&reviews).auth(token).json(body).send();
    let created =
        write(Some(&ann.token), json!({"rating": 4, "title": "Solid", "body": "Works.\nWell."}));
    let location = created.header("location").expect("a Location").to_string();
    let created = created.expect(201);
    assert_eq!(location, format!("/v1/reviews/{}", text(&created, "id")));
    assert_eq!(
        (&created["verified_purchase"], &created["status"], &created["author"]),
        (&json!(true), &json!("published"), &json!("Test Customer"))
    );
    let edited = write(Some(&ann.token), json!({"rating": 5, "title": "Great"})).expect(200);
    assert_eq!(
        (&edited["id"], &edited["version"], &edited["body"]),
        (&created["id"], &json!(2), &json!(""))
    );
    let bobs = write(Some(&bob.token), json!({"rating": 2, "title": "Not for me"})).expect(201);
    assert_eq!(bobs["verified_purchase"], false);
    write(None, json!({"rating": 3, "title": "x"})).problem(401, "unauthenticated");
    write(Some(&admin), json!({"rating": 3, "title": "x"})).problem(403, "forbidden");
    assert_eq!(
        write(Some(&bob.token), json!({"rating": 9, "title": ""})).invalid_fields(),
        ["rating", "title"]
    );
    s.post("/v1/products/prod_nope/reviews")
        .bearer(&bob.token)
        .json(json!({"rating": 3, "title": "x"}))
        .send()
        .problem(404, "not_found");

    // The product and its reviews carry the rating: exact counts per star.
    let rating = json!({"average": 3.5, "count": 2, "sum": 7, "stars": [0, 1, 0, 0, 1]});
    assert_eq!(s.get(&format!("/v1/products/{id}")).send().expect(200)["rating"], rating);
    let listed = s.get(&format!("{reviews}?sort=rating_asc")).send().expect(200);
    assert_eq!(listed["rating"], rating);
    let ids: Vec<&str> =
        listed["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [text(&bobs, "id"), text(&created, "id")]);
    s.get(&format!("{reviews}?sort=best")).send().problem(400, "malformed_request");
    s.get(&format!("{reviews}?cursor=x")).send().problem(400, "malformed_request");

    // Votes: once each, not one's own.
    let votes = format!("/v1/reviews/{}/votes", text(&created, "id"));
    assert_eq!(s.post(&votes).bearer(&bob.token).send().expect(200)["helpful"], 1);
    assert_eq!(s.post(&votes).bearer(&bob.token).send().expect(200)["helpful"], 1);
    s.post(&votes).bearer(&ann.token).send().problem(409, "invalid_state");
    s.post(&votes).send().problem(401, "unauthenticated");

    // Moderation: a held word sends an edit to the queue, staff reject and publish.
    let settings = json!({"premoderation": false, "hold_words": ["refund"]});
    assert_eq!(
        s.put("/v1/admin/review-settings").bearer(&admin).json(settings.clone()).send().expect(200),
        settings
    );
    assert_eq!(s.get("/v1/admin/review-settings").bearer(&admin).send().expect(200), settings);
    s.put("/v1/admin/review-settings")
        .bearer(&bob.token)
        .json(settings)
        .send()
        .problem(403, "forbidden");
    let held = write(Some(&bob.token), json!({"rating": 1, "title": "Want a REFUND"})).expect(200);
    assert_eq!(
        (&held["status"], &held["reason"]),
        (&json!("pending"), &json!("held: contains \"refund\""))
    );
    let queue = s.get("/v1/reviews").bearer(&admin).send().expect(200);
    assert_eq!(queue["data"].as_array().unwrap().len(), 1);
    s.get("/v1/reviews").bearer(&bob.token).send().problem(403, "forbidden");
    s.get("/v1/reviews?status=lost").bearer(&admin).send().problem(400, "malformed_request");
    let held_path = format!("/v1/reviews/{}", text(&held, "id"));
    // Shoppers do not see it; its author and staff do.
    s.get(&held_path).send().problem(404, "not_found");
    s.get(&held_path).bearer(&ann.token).send().problem(404, "not_found");
    assert_eq!(s.get(&held_path).bearer(&bob.token).send().expect(200)["status"], "pending");
    assert_eq!(s.get(&format!("/v1/products/{id}")).send().expect(200)["rating"]["count"], 1);
    let reject =
        |body: Value| s.post(&format!("{held_path}/reject")).bearer(&admin).json(body).send();
    assert_eq!(reject(json!({})).invalid_fields(), ["reason"]);
    let rejected = reject(json!({"reason": "asks for support"})).expect(200);
    assert_eq!(
        (&rejected["status"], &rejected["reason"]),
        (&json!("rejected"), &json!("asks for support"))
    );
    s.post(&format!("{held_path}/publish"))
        .bearer(&admin)
        .header("if-match", "\"1\"")
        .send()
        .problem(412, "precondition_failed");
    // If-Match names the version: votes change the body, not the version.
    let current = s.get(&held_path).bearer(&admin).send();
    let etag = current.header("etag").expect("an ETag").to_string();
    assert_eq!(etag_version(&current), Some(3));
    let publish = s.post(&format!("{held_path}/publish")).bearer(&admin).header("if-match", &etag);
    let published = publish.send().expect(200);
    assert_eq!(published["status"], "published");
    let rating = s.get(&format!("/v1/products/{id}")).send().expect(200)["rating"].clone();
    assert_eq!(rating, json!({"average": 3.0, "count": 2, "sum": 6, "stars": [1, 0, 0, 0, 1]}));

    // The feed tells subscribers what shoppers now see.
    let feed = s
        .get("/v1/events?types=review.published,review.held,review.rejected")
        .bearer(&admin)
        .send()
        .expect(200);
    let kinds: Vec<&str> =
        feed["data"].as_array().unwrap().iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "review.published",
            "review.published",
            "review.published",
            "review.held",
            "review.rejected",
            "review.published"
        ]
    );
}

// --- carts --------------------------------------------------------------------------

#[test]
fn guest_and_owned_carts_are_created() {
    let s = TestServer::start();
    let customer = s.register("cart-owner@example.com");
    let guest = s.post("/v1/carts").send();
    assert_eq!(guest.status, 201, "{guest}");
    let id = text(&guest.json, "id").to_string();
    assert!(id.starts_with("cart_"), "{id}");
    assert_eq!(guest.header("location"), Some(format!("/v1/carts/{id}").as_str()));
    assert_eq!(
        (
            &guest.json["customer_id"],
            &guest.json["currency"],
            &guest.json["items"],
            &guest.json["total"]["amount"]
        ),
        (&Value::Null, &json!("USD"), &json!([]), &json!(0))
    );
    let owned = s
        .post("/v1/carts")
        .bearer(&customer.token)
        .json(json!({"currency": "EUR"}))
        .send()
        .expect(201);
    assert_eq!(
        (owned["customer_id"].as_str(), owned["currency"].as_str()),
        (Some(customer.id.as_str()), Some("EUR"))
    );
    assert_eq!(
        s.get(&format!("/v1/carts/{}", text(&owned, "id")))
            .bearer(&customer.token)
            .send()
            .expect(200)["id"],
        owned["id"]
    );
    assert_eq!(
        s.post("/v1/carts").json(json!({"currency": "usd"})).send().invalid_fields(),
        ["currency"]
    );
    assert_eq!(
        s.post("/v1/carts").json(json!({"currency": 5})).send().invalid_fields(),
        ["currency"]
    );
    s.get("/v1/carts/cart_00000000000000000000000000000000").send().problem(404, "not_found");
    s.get("/v1/carts/nonsense").send().problem(404, "not_found");
}

/// One step on a cart: the request, the expected status, and the line's quantity after
/// it (`None`: no line), or the expected problem code.
enum Step {
    Add(&'static str, i64),
    Set(&'static str, i64),
    Remove(&'static str),
}

#[test]
fn cart_lines_follow_each_step() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "LINE-1", 1999, 100);
    s.product(&admin, "LINE-2", 500, 100);
    let mut euro = product_body("LINE-EUR", 900);
    euro["variants"][0]["price"]["currency"] = json!("EUR");
    s.post("/v1/products").bearer(&admin).json(euro).send().expect(201);
    let cart = s.cart(None);
    let check = |step: Step, expected: Result<Option<u64>, (u16, &str)>| {
        let (answer, sku) = match step {
            Step::Add(sku, quantity) => (s.add(None, &cart, sku, quantity), sku),
            Step::Set(sku, quantity) => {
                let path = format!("/v1/carts/{cart}/items/{sku}");
                (s.put(&path).json(json!({"quantity": quantity})).send(), sku)
            }
            Step::Remove(sku) => (s.delete(&format!("/v1/carts/{cart}/items/{sku}")).send(), sku),
        };
        match expected {
            Ok(_) => assert!(matches!(answer.status, 200 | 204), "{sku}: {answer}"),
            Err((422, field)) => assert_eq!(answer.invalid_fields(), [field], "{sku}"),
            Err((status, code)) => {
                answer.problem(status, code);
            }
        }
        let now = s.get(&format!("/v1/carts/{cart}")).send().expect(200);
        let line =
            now["items"].as_array().expect("items").iter().find(|l| l["sku"] == sku).cloned();
        let quantity = line.as_ref().map(|l| l["quantity"].as_u64().expect("a quantity"));
        if let Ok(wanted) = expected {
            assert_eq!(quantity, wanted, "{sku} after the step: {now}");
        }
        if let Some(line) = line {
            let units = line["quantity"].as_i64().expect("a quantity");
            assert_eq!(
                line["line_total"]["amount"],
                units * line["unit_price"]["amount"].as_i64().expect("a price")
            );
        }
        let sum: i64 = now["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|l| l["line_total"]["amount"].as_i64().expect("a total"))
            .sum();
        assert_eq!(now["subtotal"]["amount"], sum, "{now}");
    };
    check(Step::Add("LINE-1", 2), Ok(Some(2)));
    check(Step::Add("LINE-1", 1), Ok(Some(3)));
    check(Step::Add("LINE-2", 4), Ok(Some(4)));
    check(Step::Set("LINE-1", 5), Ok(Some(5)));
    check(Step::Set("LINE-2", 0), Ok(None));
    check(Step::Add("LINE-2", 1), Ok(Some(1)));
    check(Step::Remove("LINE-2"), Ok(None));
    check(Step::Remove("LINE-2"), Err((404, "not_found")));
    check(Step::Add("LINE-1", 0), Err((422, "quantity")));
    check(Step::Add("LINE-1", 1001), Err((422, "quantity")));
    check(Step::Add("LINE-1", 996), Err((422, "quantity")));
    check(Step::Set("LINE-1", 1001), Err((422, "quantity")));
    check(Step::Set("LINE-1", -1), Err((422, "quantity")));
    check(Step::Add("NO-SUCH-SKU", 1), Err((422, "sku")));
    check(Step::Add("LINE-EUR", 1), Err((422, "sku")));
    check(Step::Add("bad sku!", 1), Err((422, "sku")));
    check(Step::Add("LINE-1", 995), Ok(Some(1000)));
    // A stale If-Match on a line change is refused.
    let stale = s
        .put(&format!("/v1/carts/{cart}/items/LINE-1"))
        .header("if-match", "\"1\"")
        .json(json!({"quantity": 1}));
    stale.send().problem(412, "precondition_failed");
}

// --- checkout -----------------------------------------------------------------------

#[test]
fn checkout_places_one_order_per_idempotency_key() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "CO-1", 1250, 10);
    let cart = s.cart(None);
    let checkout_path = format!("/v1/carts/{cart}/checkout");
    let guest = json!({"email": "guest@example.com"});
    // An empty cart has nothing to check out.
    s.checkout(None, &cart, "empty", guest.clone()).problem(422, "empty_cart");
    s.add(None, &cart, "CO-1", 3).expect(200);
    // The key is required and must be printable ASCII of 1-255 characters.
    s.post(&checkout_path).json(guest.clone()).send().problem(400, "malformed_request");
    s.checkout(None, &cart, &"k".repeat(256), guest.clone()).problem(400, "malformed_request");
    // A guest needs an email; an address must be a real one.
    assert_eq!(s.checkout(None, &cart, "no-email", json!({})).invalid_fields(), ["email"]);
    let bad_address = json!({
        "email": "guest@example.com",
        "shipping_address": {
            "name": "Ann", "line1": "1 Main St", "city": "Springfield", "country": "usa"
        }
    });
    assert_eq!(
        s.checkout(None, &cart, "bad-address", bad_address).invalid_fields(),
        ["shipping_address.country"]
    );
    let unknown_field = json!({"email": "guest@example.com", "coupon": "FREE"});
    assert_eq!(
        s.checkout(None, &cart, "unknown-field", unknown_field).invalid_fields(),
        ["coupon"]
    );
    assert_eq!(s.stock(&admin, "CO-1"), (10, 0, 10));

    let placed = s.checkout(None, &cart, "order-1", guest.clone());
    assert_eq!(placed.status, 201, "{placed}");
    let order = placed.json.clone();
    let order_id = text(&order, "id").to_string();
    assert!(order_id.starts_with("ord_"), "{order_id}");
    assert_eq!(placed.header("location"), Some(format!("/v1/orders/{order_id}").as_str()));
    assert_eq!(
        (
            &order["status"],
            &order["email"],
            &order["customer_id"],
            &order["total"],
            &order["items"][0]["quantity"]
        ),
        (
            &json!("pending_payment"),
            &json!("guest@example.com"),
            &Value::Null,
            &json!({"amount": 3750, "currency": "USD"}),
            &json!(3)
        )
    );
    assert!(order["reservation_expires_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{order}");
    assert_eq!(s.stock(&admin, "CO-1"), (10, 3, 7));

    assert_eq!(placed.header("idempotent-replayed"), None);
    // The same key and body replay the same order, say so, and reserve nothing more.
    let replay = s.checkout(None, &cart, "order-1", guest.clone());
    assert_eq!(replay.header("idempotent-replayed"), Some("true"), "{replay}");
    let replay = replay.expect(201);
    assert_eq!(
        (&replay["id"], &replay["total"], &replay["status"]),
        (&order["id"], &order["total"], &order["status"])
    );
    assert_eq!(s.stock(&admin, "CO-1"), (10, 3, 7));
    // The same key with another body is refused.
    s.checkout(None, &cart, "order-1", json!({"email": "other@example.com"}))
        .problem(422, "idempotency_key_reused");

    // The cart is closed now.
    let closed = s.get(&format!("/v1/carts/{cart}")).send().expect(200);
    assert_eq!(
        (closed["status"].as_str(), closed["order_id"].as_str()),
        (Some("checked_out"), Some(order_id.as_str()))
    );
    s.add(None, &cart, "CO-1", 1).problem(409, "invalid_state");
    s.put(&format!("/v1/carts/{cart}/items/CO-1"))
        .json(json!({"quantity": 1}))
        .send()
        .problem(409, "invalid_state");
    s.delete(&format!("/v1/carts/{cart}/items/CO-1")).send().problem(409, "invalid_state");
    s.checkout(None, &cart, "order-2", guest).problem(409, "invalid_state");
    assert_eq!(s.stock(&admin, "CO-1"), (10, 3, 7));
    s.checkout(None, "cart_00000000000000000000000000000000", "k", json!({}))
        .problem(404, "not_found");
}

/// An idempotent replay must never hand one caller another's resource. Two anonymous
/// callers sending `POST /v1/carts` with the same key used to get the same cart (a
/// guest cart's id is its bearer credential, so the second owned the first's cart and,
/// after checkout, its order). Now an anonymous key is ignored on a path that names no
/// resource the caller holds, honoured where it does (a guest cart's checkout), and an
/// authenticated caller's keys are its own.
#[test]
fn an_idempotency_key_never_hands_one_caller_anothers_resource() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "KEY-1", 100, 10);
    let guest_cart = || s.post("/v1/carts").key("1").json(json!({})).send();
    let (first, second) = (guest_cart(), guest_cart());
    assert_eq!(second.header("idempotent-replayed"), None, "{second}");
    let (first, second) = (first.expect(201), second.expect(201));
    assert_ne!(first["id"], second["id"], "two guests share a cart");

    // Where the path names the caller's own cart, the key replays for that cart only.
    let cart = text(&first, "id").to_string();
    s.add(None, &cart, "KEY-1", 1).expect(200);
    let guest = json!({"email": "guest@example.com"});
    let placed = s.checkout(None, &cart, "same", guest.clone()).expect(201);
    let again = s.checkout(None, &cart, "same", guest.clone());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.expect(201)["id"], placed["id"]);
    let other = text(&second, "id").to_string();
    s.add(None, &other, "KEY-1", 1).expect(200);
    let theirs = s.checkout(None, &other, "same", guest).expect(201);
    assert_ne!(theirs["id"], placed["id"], "a key on another cart is another request");

    // Authenticated callers: the same key is each one's own.
    let (ann, bob) = (s.register("ann.key@example.com"), s.register("bob.key@example.com"));
    let cart_of =
        |token: &str| s.post("/v1/carts").bearer(token).key("mine").json(json!({})).send();
    let ann_cart = cart_of(&ann.token).expect(201);
    let bob_cart = cart_of(&bob.token).expect(201);
    assert_ne!(ann_cart["id"], bob_cart["id"]);
    let ann_again = cart_of(&ann.token);
    assert_eq!(ann_again.header("idempotent-replayed"), Some("true"));
    assert_eq!(ann_again.expect(201)["id"], ann_cart["id"]);
    assert_eq!(s.stock(&admin, "KEY-1"), (10, 2, 8));
}

/// A keyed write and the answer recorded for its key are one log entry, so no crash
/// (and no `overloaded` between two commands) can leave the effect without the record,
/// which would let a retry run it twice. The old way took two entries: the effect, then
/// a second command recording the response.
#[test]
fn a_keyed_write_and_its_recorded_answer_are_one_log_entry() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "ONE-1", 100, 10);
    let writes: Vec<(&str, String, Value)> = vec![
        ("POST", "/v1/products".into(), product_body("ONE-2", 200)),
        (
            "POST",
            "/v1/inventory/ONE-1/adjustments".into(),
            json!({"delta": 5, "reason": "received"}),
        ),
        ("POST", "/v1/categories".into(), json!({"name": "Once"})),
    ];
    for (method, path, body) in writes {
        let before = s.durable_lsn();
        let first = s.req(method, &path).bearer(&admin).key("one").json(body.clone()).send();
        assert!(first.status < 300, "{path}: {first}");
        assert_eq!(s.durable_lsn(), before + 1, "{path}: the effect and its record are one entry");
        let again = s.req(method, &path).bearer(&admin).key("one").json(body).send();
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{path}: {again}");
        assert_eq!((again.status, &again.body), (first.status, &first.body), "{path}");
        assert_eq!(s.durable_lsn(), before + 1, "{path}: a replay writes nothing");
    }
    assert_eq!(s.stock(&admin, "ONE-1"), (15, 0, 15), "the adjustment ran once");
}

#[test]
fn out_of_stock_lists_each_short_sku_and_reserves_nothing() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "OOS-A", 100, 5);
    s.product(&admin, "OOS-B", 100, 1);
    s.product(&admin, "OOS-C", 100, 0);
    let cart = s.cart(None);
    for (sku, quantity) in [("OOS-A", 3), ("OOS-B", 4), ("OOS-C", 2)] {
        s.add(None, &cart, sku, quantity).expect(200);
    }
    let refused = s
        .checkout(None, &cart, "oos", json!({"email": "guest@example.com"}))
        .problem(409, "out_of_stock");
    assert_eq!(
        refused["errors"],
        json!([
            {"sku": "OOS-B", "requested": 4, "available": 1},
            {"sku": "OOS-C", "requested": 2, "available": 0}
        ])
    );
    for (sku, on_hand) in [("OOS-A", 5), ("OOS-B", 1), ("OOS-C", 0)] {
        assert_eq!(s.stock(&admin, sku), (on_hand, 0, on_hand), "{sku}");
    }
    // The cart stays open: with the short lines fixed, the order is placed. (Whether a
    // retry under the refused request's key replays the refusal is the server's choice:
    // the contract leaves it open, so this uses a new key.)
    s.put(&format!("/v1/carts/{cart}/items/OOS-B")).json(json!({"quantity": 1})).send().expect(200);
    assert_eq!(s.delete(&format!("/v1/carts/{cart}/items/OOS-C")).send().status, 204);
    s.checkout(None, &cart, "oos-2", json!({"email": "guest@example.com"})).expect(201);
    assert_eq!(s.stock(&admin, "OOS-A"), (5, 3, 2));
    assert_eq!(s.stock(&admin, "OOS-B"), (1, 1, 0));
}

/// A replayed answer: the original status and body (its `request_id` names the original
/// request), marked `Idempotent-Replayed`.
fn assert_replayed(answer: Resp, status: u16, original: &Value) {
    assert_eq!(answer.status, status, "{answer}");
    assert_eq!(answer.header("idempotent-replayed"), Some("true"), "{answer:?}");
    let strip = |body: &Value| {
        let mut body = body.clone();
        body.as_object_mut().map(|o| o.remove("request_id"));
        body
    };
    assert_eq!(strip(&answer.json), strip(original));
}

// --- payments and the order status machine ------------------------------------------

#[test]
fn payments_capture_approved_cards_and_decline_the_rest() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "PAY-1", 1500, 10);
    let order = s.order(None, "PAY-1", 2);
    let id = text(&order, "id").to_string();
    let path = format!("/v1/orders/{id}/payments");

    // Declined: 402, and the order is exactly as it was. The same key and body replay
    // the refusal; the same key with another card is a reused key.
    let declined = s.pay(None, &id, "declined", "tok_declined").problem(402, "payment_declined");
    assert_replayed(s.pay(None, &id, "declined", "tok_declined"), 402, &declined);
    s.pay(None, &id, "declined", "tok_visa").problem(422, "idempotency_key_reused");
    let after = s.get(&format!("/v1/orders/{id}")).send().expect(200);
    assert_eq!(
        (&after["status"], &after["version"], &after["payments"]),
        (&json!("pending_payment"), &order["version"], &json!([]))
    );
    assert_eq!(s.stock(&admin, "PAY-1"), (10, 2, 8));

    // Refused input.
    s.post(&path)
        .json(json!({"method": "test_card", "token": "tok_visa"}))
        .send()
        .problem(400, "malformed_request");
    assert_eq!(s.pay(None, &id, "unknown-token", "tok_unknown").invalid_fields(), ["token"]);
    assert_eq!(s.pay(None, &id, "card-number", "4242424242424242").invalid_fields(), ["token"]);
    let cash =
        s.post(&path).key("cash").json(json!({"method": "cash", "token": "tok_visa"})).send();
    assert_eq!(cash.invalid_fields(), ["method"]);
    let number = s
        .post(&path)
        .key("number")
        .json(json!({"method": "test_card", "token": "tok_visa", "number": "4242424242424242"}));
    assert_eq!(number.send().invalid_fields(), ["number"]);

    let paid = s.pay(None, &id, "pay-1", "tok_visa");
    assert_eq!(paid.status, 201, "{paid}");
    assert_eq!(paid.header("location"), Some(format!("/v1/orders/{id}").as_str()));
    let payment = paid.json;
    assert!(text(&payment, "id").starts_with("pay_"), "{payment}");
    assert_eq!(
        (&payment["amount"], &payment["card_brand"]),
        (&json!({"amount": 3000, "currency": "USD"}), &json!("visa"))
    );
    assert_eq!(payment["order"]["status"], "paid");
    assert_eq!(s.stock(&admin, "PAY-1"), (8, 0, 8));
    let order_now = s.get(&format!("/v1/orders/{id}")).send().expect(200);
    assert_eq!(
        (order_now["status"].as_str(), order_now["payments"][0]["id"].as_str()),
        (Some("paid"), Some(text(&payment, "id")))
    );

    // The same key replays the payment; another body with it is refused; paying twice is
    // an invalid transition.
    assert_eq!(s.pay(None, &id, "pay-1", "tok_visa").expect(201)["id"], payment["id"]);
    s.pay(None, &id, "pay-1", "tok_mastercard").problem(422, "idempotency_key_reused");
    s.pay(None, &id, "pay-2", "tok_visa").problem(409, "invalid_state");
    assert_eq!(s.stock(&admin, "PAY-1"), (8, 0, 8));

    let other = s.order(None, "PAY-1", 1);
    let mastercard = s.pay(None, text(&other, "id"), "pay-mc", "tok_mastercard").expect(201);
    assert_eq!(mastercard["card_brand"], "mastercard");
    s.pay(None, "ord_00000000000000000000000000000000", "k", "tok_visa").problem(404, "not_found");
}

/// Where an order is before the action.
#[derive(Clone, Copy, Debug)]
enum At {
    Pending,
    Paid,
    Cancelled,
    Fulfilled,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Pay,
    Cancel,
    Fulfil,
}

#[test]
fn orders_move_only_along_the_status_machine() {
    let s = TestServer::start();
    let admin = s.admin();
    let mut n = 0;
    // Each case gets its own SKU with 10 units and an order of 2; the stock after the
    // action follows from the order's status.
    let mut check = |at: At, action: Action, expected: Result<&str, &str>| {
        n += 1;
        let sku = format!("SM-{n}");
        s.product(&admin, &sku, 100, 10);
        let order = s.order(None, &sku, 2);
        let id = text(&order, "id").to_string();
        let pay = || s.pay(None, &id, &format!("pay-{n}"), "tok_visa");
        let cancel = || s.post(&format!("/v1/orders/{id}/cancel")).send();
        let fulfil = || s.post(&format!("/v1/orders/{id}/fulfillments")).bearer(&admin).send();
        match at {
            At::Pending => {}
            At::Paid => drop(pay().expect(201)),
            At::Cancelled => drop(cancel().expect(200)),
            At::Fulfilled => {
                pay().expect(201);
                fulfil().expect(200);
            }
        }
        let answer = match action {
            Action::Pay => s.pay(None, &id, &format!("again-{n}"), "tok_visa"),
            Action::Cancel => cancel(),
            Action::Fulfil => fulfil(),
        };
        let status = match expected {
            Ok(status) => {
                assert!(matches!(answer.status, 200 | 201), "{at:?} + {action:?}: {answer}");
                status
            }
            Err(code) => {
                answer.problem(409, code);
                match at {
                    At::Pending => "pending_payment",
                    At::Paid => "paid",
                    At::Cancelled => "cancelled",
                    At::Fulfilled => "fulfilled",
                }
            }
        };
        let now = s.get(&format!("/v1/orders/{id}")).send().expect(200);
        assert_eq!(now["status"], status, "{at:?} + {action:?}");
        let stock = match status {
            "pending_payment" => (10, 2, 8),
            "paid" | "fulfilled" => (8, 0, 8),
            "cancelled" => (10, 0, 10),
            other => panic!("unexpected status {other}"),
        };
        assert_eq!(s.stock(&admin, &sku), stock, "{at:?} + {action:?}");
    };
    check(At::Pending, Action::Pay, Ok("paid"));
    check(At::Pending, Action::Cancel, Ok("cancelled"));
    check(At::Pending, Action::Fulfil, Err("invalid_state"));
    check(At::Paid, Action::Pay, Err("invalid_state"));
    check(At::Paid, Action::Cancel, Err("invalid_state"));
    check(At::Paid, Action::Fulfil, Ok("fulfilled"));
    check(At::Cancelled, Action::Pay, Err("invalid_state"));
    check(At::Cancelled, Action::Cancel, Err("invalid_state"));
    check(At::Cancelled, Action::Fulfil, Err("invalid_state"));
    check(At::Fulfilled, Action::Pay, Err("invalid_state"));
    check(At::Fulfilled, Action::Cancel, Err("invalid_state"));
    check(At::Fulfilled, Action::Fulfil, Err("invalid_state"));
}

#[test]
fn cancel_honours_if_match() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "CIM-1", 100, 3);
    let order = s.order(None, "CIM-1", 1);
    let path = format!("/v1/orders/{}/cancel", text(&order, "id"));
    s.post(&path).header("if-match", "\"9\"").send().problem(412, "precondition_failed");
    let cancelled = s.post(&path).header("if-match", "\"1\"").send().expect(200);
    assert_eq!(cancelled["status"], "cancelled");
    s.post("/v1/orders/ord_00000000000000000000000000000000/cancel")
        .send()
        .problem(404, "not_found");
    let fulfil =
        s.post("/v1/orders/ord_00000000000000000000000000000000/fulfillments").bearer(&admin);
    fulfil.send().problem(404, "not_found");
}

// --- accounts and order lists -------------------------------------------------------

#[test]
fn customers_me_describes_the_caller() {
    let s = TestServer::start();
    let admin = s.admin();
    let staff = s.user(&admin, "staff-me@example.com", "staff");
    let customer = s.register("me@example.com");
    let check = |token: &str, email: &str, role: &str| {
        let me = s.get("/v1/customers/me").bearer(token).send().expect(200);
        assert_eq!((me["email"].as_str(), me["role"].as_str()), (Some(email), Some(role)), "{me}");
        assert!(text(&me, "id").starts_with("cus_"), "{me}");
        assert!(me.get("password").is_none() && me.get("credential").is_none(), "{me}");
    };
    check(&customer.token, "me@example.com", "customer");
    check(&staff.token, "staff-me@example.com", "staff");
    check(&admin, ADMIN_EMAIL, "admin");
    s.get("/v1/customers/me").send().problem(401, "unauthenticated");
    // Registration refuses duplicates and short passwords.
    let again =
        s.post("/v1/auth/register").json(json!({"email": "me@example.com", "password": PASSWORD}));
    again.send().problem(409, "conflict");
    let short = s
        .post("/v1/auth/register")
        .json(json!({"email": "short@example.com", "password": "short"}));
    assert_eq!(short.send().invalid_fields(), ["password"]);
    let bad_email =
        s.post("/v1/auth/register").json(json!({"email": "not an email", "password": PASSWORD}));
    assert_eq!(bad_email.send().invalid_fields(), ["email"]);
}

#[test]
fn order_lists_filter_by_status_and_customer_and_paginate() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "LIST-1", 100, 100);
    let ann = s.register("ann@example.com");
    let bob = s.register("bob@example.com");
    let ann_paid = s.order(Some(&ann.token), "LIST-1", 1);
    s.pay(Some(&ann.token), text(&ann_paid, "id"), "pay", "tok_visa").expect(201);
    let ann_cancelled = s.order(Some(&ann.token), "LIST-1", 1);
    s.post(&format!("/v1/orders/{}/cancel", text(&ann_cancelled, "id")))
        .bearer(&ann.token)
        .send()
        .expect(200);
    let ann_pending = s.order(Some(&ann.token), "LIST-1", 1);
    let bob_pending = s.order(Some(&bob.token), "LIST-1", 1);
    let guest_pending = s.order(None, "LIST-1", 1);
    let ids = |orders: &[&Value]| -> Vec<String> {
        orders.iter().map(|o| text(o, "id").to_string()).collect()
    };
    let list = |path: &str, token: &str| -> Vec<String> {
        let answer = s.get(path).bearer(token).send().expect(200);
        assert!(answer["next_cursor"].is_null(), "{path}: {answer}");
        answer["data"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|o| text(o, "id").to_string())
            .collect()
    };
    let check = |path: &str, token: &str, expected: &[&Value]| {
        assert_eq!(list(path, token), ids(expected), "GET {path}");
    };
    check("/v1/customers/me/orders", &ann.token, &[&ann_paid, &ann_cancelled, &ann_pending]);
    check("/v1/customers/me/orders?status=paid", &ann.token, &[&ann_paid]);
    check("/v1/customers/me/orders", &bob.token, &[&bob_pending]);
    check("/v1/customers/me/orders", &admin, &[]);
    check(
        "/v1/orders",
        &admin,
        &[&ann_paid, &ann_cancelled, &ann_pending, &bob_pending, &guest_pending],
    );
    check(
        "/v1/orders?status=pending_payment",
        &admin,
        &[&ann_pending, &bob_pending, &guest_pending],
    );
    check("/v1/orders?status=cancelled", &admin, &[&ann_cancelled]);
    check("/v1/orders?status=fulfilled", &admin, &[]);
    check(
        &format!("/v1/orders?customer_id={}", ann.id),
        &admin,
        &[&ann_paid, &ann_cancelled, &ann_pending],
    );
    check(&format!("/v1/orders?customer_id={}&status=paid", ann.id), &admin, &[&ann_paid]);

    // Pages of two, followed by their cursors, list every order once, in order.
    let all = ids(&[&ann_paid, &ann_cancelled, &ann_pending, &bob_pending, &guest_pending]);
    assert_eq!(walk(&s, "/v1/orders", &admin, 2), all);
    assert_eq!(walk(&s, "/v1/customers/me/orders", &ann.token, 1), &all[..3]);

    for bad in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "status=lost",
        "cursor=abc",
        "colour=red",
        "customer_id=nobody",
    ] {
        s.get(&format!("/v1/orders?{bad}")).bearer(&admin).send().problem(400, "malformed_request");
    }
    s.get("/v1/customers/me/orders?customer_id=x")
        .bearer(&ann.token)
        .send()
        .problem(400, "malformed_request");
}

/// Follows `next_cursor` from `path` with `limit`; every page has at most `limit`
/// items. Returns the ids in order.
fn walk(s: &TestServer, path: &str, token: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let separator = if path.contains('?') { '&' } else { '?' };
        let page_path = match &cursor {
            None => format!("{path}{separator}limit={limit}"),
            Some(c) => format!("{path}{separator}limit={limit}&cursor={c}"),
        };
        let page = s.get(&page_path).bearer(token).send().expect(200);
        let items = page["data"].as_array().expect("a list");
        assert!(items.len() <= limit, "GET {page_path}: {page}");
        ids.extend(items.iter().map(|i| text(i, "id").to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert!(!items.is_empty(), "a page with a next cursor has items: {page}");
                cursor = Some(next.to_string());
            }
            None => return ids,
        }
    }
    panic!("{path} did not end within 100 pages");
}

#[test]
fn product_and_category_lists_paginate() {
    let s = TestServer::start();
    let admin = s.admin();
    let mut products = Vec::new();
    let mut categories = Vec::new();
    for i in 0..5 {
        let product = s
            .post("/v1/products")
            .bearer(&admin)
            .json(product_body(&format!("PAGE-{i}"), 100))
            .send();
        products.push(text(&product.expect(201), "id").to_string());
        let category =
            s.post("/v1/categories").bearer(&admin).json(json!({"name": format!("C{i}")})).send();
        categories.push(text(&category.expect(201), "id").to_string());
    }
    assert_eq!(walk(&s, "/v1/products", &admin, 2), products);
    assert_eq!(walk(&s, "/v1/products?status=active", &admin, 3), products);
    assert_eq!(walk(&s, "/v1/categories", &admin, 2), categories);
    let default_page = s.get("/v1/products").send().expect(200);
    assert_eq!(default_page["data"].as_array().map(Vec::len), Some(5));
    for bad in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "cursor=zzz",
        "category_id=nope",
        "status=gone",
        "sort=price",
    ] {
        s.get(&format!("/v1/products?{bad}")).send().problem(400, "malformed_request");
    }
    s.get("/v1/categories?limit=0").send().problem(400, "malformed_request");
}

// --- the problem shape and the pipeline ---------------------------------------------

/// A request to be refused: method, path, media type (`""`: none) and body.
struct Bad<'a> {
    method: &'a str,
    path: &'a str,
    media: &'a str,
    body: String,
}

const JSON: &str = "application/json";

fn bad<'a>(method: &'a str, path: &'a str, media: &'a str, body: impl Into<String>) -> Bad<'a> {
    Bad { method, path, media, body: body.into() }
}

/// Each refused request with its expected problem: status, code, and for
/// `validation_failed` the field paths in order.
#[test]
fn bad_requests_get_problem_answers() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "BAD-1", 100, 1);
    let check = |request: Bad<'_>, status: u16, code: &str, fields: &[&str]| {
        let Bad { method, path, media, body } = request;
        let mut sent = s.req(method, path).bearer(&admin);
        if !body.is_empty() || !media.is_empty() {
            sent = sent.body(media, body.clone().into_bytes());
        }
        let answer = sent.send();
        let what = format!("{method} {path} {media} {body}");
        let got = (answer.status, answer.json["code"].as_str().map(str::to_string));
        assert_eq!(got, (status, Some(code.to_string())), "{what}: {answer}");
        let problem = answer.problem(status, code);
        let errors = problem["errors"].as_array().cloned().unwrap_or_default();
        let found: Vec<&str> = errors.iter().filter_map(|e| e["field"].as_str()).collect();
        assert_eq!(found, fields, "{what}");
    };
    let product = |edit: &dyn Fn(&mut Value)| {
        let mut body = product_body("BAD-2", 100);
        edit(&mut body);
        serde_json::to_string(&body).expect("JSON")
    };
    let products = "/v1/products";
    check(bad("POST", products, JSON, "{\"title\": "), 400, "malformed_request", &[]);
    check(bad("POST", products, JSON, "{\"title\" \"x\"}"), 400, "malformed_request", &[]);
    check(bad("POST", products, JSON, "not json"), 400, "malformed_request", &[]);
    check(bad("POST", products, JSON, product(&|_| {}) + " x"), 400, "malformed_request", &[]);
    let unknown = product(&|b| b["colour"] = json!("red"));
    check(bad("POST", products, JSON, unknown), 422, "validation_failed", &["colour"]);
    let text_amount = product(&|b| b["variants"][0]["price"]["amount"] = json!("x"));
    let amount = ["variants[0].price.amount"];
    check(bad("POST", products, JSON, text_amount), 422, "validation_failed", &amount);
    let negative = product(&|b| b["variants"][0]["price"]["amount"] = json!(-5));
    check(bad("POST", products, JSON, negative), 422, "validation_failed", &amount);
    let currency = product(&|b| b["variants"][0]["price"]["currency"] = json!("dollars"));
    let field = ["variants[0].price.currency"];
    check(bad("POST", products, JSON, currency), 422, "validation_failed", &field);
    let sku = product(&|b| b["variants"][0]["sku"] = json!("no spaces"));
    check(bad("POST", products, JSON, sku), 422, "validation_failed", &["variants[0].sku"]);
    let cents = product(&|b| b["variants"][0]["price"]["cents"] = json!(1));
    let field = ["variants[0].price.cents"];
    check(bad("POST", products, JSON, cents), 422, "validation_failed", &field);
    let untitled = product(&|b| drop(b.as_object_mut().map(|o| o.remove("title"))));
    check(bad("POST", products, JSON, untitled), 422, "validation_failed", &["title"]);
    let no_variants = product(&|b| b["variants"] = json!([]));
    check(bad("POST", products, JSON, no_variants), 422, "validation_failed", &["variants"]);
    let archived = product(&|b| b["status"] = json!("archived"));
    check(bad("POST", products, JSON, archived), 422, "validation_failed", &["status"]);
    let media = "unsupported_media_type";
    check(bad("POST", products, "text/plain", product(&|_| {})), 415, media, &[]);
    check(bad("POST", products, "", product(&|_| {})), 415, media, &[]);
    check(bad("POST", products, "application/x-www-form-urlencoded", "title=x"), 415, media, &[]);
    check(bad("POST", "/v1/carts", "text/plain", "{}"), 415, media, &[]);
    check(bad("POST", "/v1/auth/token", "text/plain", "grant_type=password"), 415, media, &[]);
    let owner = "{\"currency\": \"EUR\", \"owner\": 1}";
    check(bad("POST", "/v1/carts", JSON, owner), 422, "validation_failed", &["owner"]);
    let fraction = "{\"on_hand\": 1.5}";
    check(
        bad("PUT", "/v1/inventory/BAD-1", JSON, fraction),
        422,
        "validation_failed",
        &["on_hand"],
    );
    check(bad("GET", "/v1/nothing/here", "", ""), 404, "not_found", &[]);
    check(bad("GET", "/", "", ""), 404, "not_found", &[]);
    check(bad("GET", "/v1/products/prod_1/reviews", "", ""), 404, "not_found", &[]);
    check(bad("DELETE", products, "", ""), 405, "method_not_allowed", &[]);
    check(bad("PUT", "/healthz", "", ""), 405, "method_not_allowed", &[]);
    check(bad("GET", "/v1/products?limit=abc", "", ""), 400, "malformed_request", &[]);
    // Nothing above created a product.
    let listed = s.get(products).bearer(&admin).send().expect(200);
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "{listed}");
}

/// `405` names the allowed methods: (method, path, `Allow`).
#[test]
fn method_not_allowed_lists_the_allowed_methods() {
    let s = TestServer::start();
    let check = |method: &str, path: &str, allow: &[&str]| {
        let answer = s.req(method, path).send();
        let header = answer.header("allow").unwrap_or_default().to_string();
        let mut listed: Vec<&str> =
            header.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
        listed.sort_unstable();
        answer.problem(405, "method_not_allowed");
        assert_eq!(listed, allow, "{method} {path}");
    };
    check("DELETE", "/v1/products", &["GET", "POST"]);
    check("PUT", "/v1/products/prod_1", &["DELETE", "GET", "PATCH"]);
    check("POST", "/healthz", &["GET"]);
    check("GET", "/v1/carts", &["POST"]);
    check("GET", "/v1/auth/token", &["POST"]);
    check("PATCH", "/v1/inventory/SKU-1", &["GET", "PUT"]);
    check("GET", "/v1/orders/ord_1/payments", &["POST"]);
}

#[test]
fn request_ids_are_echoed_or_made_up() {
    let s = TestServer::start();
    let check = |sent: Option<&str>, echoed: bool| {
        let request = s.get("/v1/nothing");
        let answer = match sent {
            Some(id) => request.header("x-request-id", id).send(),
            None => request.send(),
        };
        let id = answer.header("x-request-id").expect("every answer has X-Request-Id").to_string();
        assert!(!id.is_empty());
        assert_eq!(sent == Some(id.as_str()), echoed, "sent {sent:?}, got {id}");
        let body = answer.problem(404, "not_found");
        assert_eq!(body["request_id"], id.as_str());
    };
    check(Some("client-req-42"), true);
    check(Some("a1:b2.c3_d4"), true);
    check(None, false);
    check(Some("has spaces in it"), false);
    check(Some(&"x".repeat(500)), false);
    check(Some("quote\"d"), false);
    // Successes carry one too.
    let ok = s.get("/healthz").header("x-request-id", "health-1").send();
    assert_eq!((ok.status, ok.header("x-request-id")), (200, Some("health-1")));
}

#[test]
fn bodies_over_the_limit_get_413() {
    let s = TestServer::with(|c| c.body_bytes_max = 1024);
    let admin = s.admin();
    let mut big = product_body("BIG-1", 100);
    big["description"] = json!("d".repeat(4096));
    let answer = s.post("/v1/products").bearer(&admin).json(big).send();
    answer.problem(413, "payload_too_large");
    // Just under the limit is read as usual.
    let mut small = product_body("BIG-2", 100);
    small["description"] = json!("d".repeat(600));
    s.post("/v1/products").bearer(&admin).json(small).send().expect(201);
    let cart = s.post("/v1/carts").body("application/json", vec![b' '; 2048]).send();
    cart.problem(413, "payload_too_large");
}

// --- operations ---------------------------------------------------------------------

#[test]
fn health_readiness_and_metrics() {
    let s = TestServer::start();
    let admin = s.admin();
    assert_eq!(s.get("/healthz").send().expect(200)["status"], "ok");
    let ready = s.get("/readyz").send().expect(200);
    assert_eq!(ready["role"], "primary", "{ready}");
    assert!(ready["epoch"].as_u64().is_some_and(|e| e >= 1), "{ready}");
    let lsn = ready["lsn"].as_u64().expect("an LSN");
    s.post("/v1/products").bearer(&admin).json(product_body("OPS-1", 100)).send().expect(201);
    let later = s.get("/readyz").send().expect(200)["lsn"].as_u64().expect("an LSN");
    assert!(later > lsn, "a write moves the LSN: {lsn} then {later}");

    s.get("/v1/nothing").send();
    let metrics = s.get("/metrics").send();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.header("content-type").is_some_and(|c| c.starts_with("text/plain")),
        "{metrics:?}"
    );
    let text = String::from_utf8(metrics.body).expect("metrics are text");
    assert!(text.contains("emporium_http_requests_total"), "{text}");
    let created = text.lines().any(|l| {
        l.starts_with("emporium_http_requests_total{")
            && l.contains("/v1/products")
            && l.contains("201")
    });
    assert!(created, "the product creation is counted: {text}");
    assert!(
        text.lines().any(|l| l.starts_with("emporium_http_requests_total{") && l.contains("404")),
        "{text}"
    );
    // The product's rows reach the tables on the materializer's next batch.
    let gauge = |text: &str, name: &str| -> u64 {
        let line = text.lines().find(|l| l.split(' ').next() == Some(name));
        line.and_then(|l| l.split(' ').nth(1)).and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            panic!("{name} is exported: {text}");
        })
    };
    emporium_tests::wait_until("rows materialized", Duration::from_secs(10), || {
        let text = String::from_utf8(s.get("/metrics").send().body).expect("metrics are text");
        gauge(&text, "emporium_engine_rows_materialized") > 0
            && gauge(&text, "emporium_engine_materializer_batches") > 0
    });
}

/// The contract's endpoints with their success statuses; the OpenAPI document must
/// describe each, and nothing else.
const ENDPOINTS: [(&str, &str, u16); 120] = [
    ("get", "/healthz", 200),
    ("get", "/readyz", 200),
    ("get", "/metrics", 200),
    ("get", "/openapi.json", 200),
    ("post", "/v1/auth/register", 201),
    ("post", "/v1/auth/token", 200),
    ("get", "/v1/customers/me", 200),
    ("get", "/v1/customers/me/orders", 200),
    ("get", "/v1/customers/me/addresses", 200),
    ("post", "/v1/customers/me/addresses", 201),
    ("put", "/v1/customers/me/addresses/{id}", 200),
    ("delete", "/v1/customers/me/addresses/{id}", 204),
    ("post", "/v1/admin/users", 201),
    ("post", "/v1/admin/api-clients", 201),
    ("get", "/v1/products", 200),
    ("post", "/v1/products", 201),
    ("get", "/v1/products/{id}", 200),
    ("get", "/v1/search", 200),
    ("get", "/v1/search/suggest", 200),
    ("patch", "/v1/products/{id}", 200),
    ("delete", "/v1/products/{id}", 204),
    ("get", "/v1/categories", 200),
    ("post", "/v1/categories", 201),
    ("get", "/v1/categories/{id}", 200),
    ("patch", "/v1/categories/{id}", 200),
    ("delete", "/v1/categories/{id}", 204),
    ("get", "/v1/inventory/{sku}", 200),
    ("put", "/v1/inventory/{sku}", 200),
    ("post", "/v1/inventory/{sku}/adjustments", 200),
    ("put", "/v1/inventory/{sku}/weight", 200),
    ("get", "/v1/inventory/{sku}/locations", 200),
    ("put", "/v1/inventory/{sku}/locations/{location_id}", 200),
    ("post", "/v1/inventory/{sku}/locations/{location_id}/adjustments", 200),
    ("post", "/v1/inventory/{sku}/transfers", 200),
    ("get", "/v1/locations", 200),
    ("post", "/v1/locations", 201),
    ("get", "/v1/locations/{id}", 200),
    ("patch", "/v1/locations/{id}", 200),
    ("delete", "/v1/locations/{id}", 204),
    ("get", "/v1/orders/{id}/stock-locations", 200),
    ("post", "/v1/products/{id}/reviews", 201),
    ("get", "/v1/products/{id}/reviews", 200),
    ("get", "/v1/reviews", 200),
    ("get", "/v1/products/{id}/recommendations", 200),
    ("get", "/v1/customers/me/recommendations", 200),
    ("get", "/v1/recommendations/trending", 200),
    ("get", "/v1/reviews/{id}", 200),
    ("post", "/v1/reviews/{id}/votes", 200),
    ("post", "/v1/reviews/{id}/publish", 200),
    ("post", "/v1/reviews/{id}/reject", 200),
    ("get", "/v1/admin/review-settings", 200),
    ("put", "/v1/admin/review-settings", 200),
    ("post", "/v1/shipping-methods", 201),
    ("get", "/v1/shipping-methods", 200),
    ("get", "/v1/shipping-methods/{id}", 200),
    ("patch", "/v1/shipping-methods/{id}", 200),
    ("get", "/v1/tax-rates", 200),
    ("put", "/v1/tax-rates/{zone}", 200),
    ("delete", "/v1/tax-rates/{zone}", 204),
    ("post", "/v1/carts", 201),
    ("get", "/v1/carts/{id}", 200),
    ("post", "/v1/carts/{id}/items", 200),
    ("put", "/v1/carts/{id}/items/{sku}", 200),
    ("delete", "/v1/carts/{id}/items/{sku}", 204),
    ("post", "/v1/carts/{id}/checkout", 201),
    ("post", "/v1/carts/{id}/discount-codes", 200),
    ("delete", "/v1/carts/{id}/discount-codes/{code}", 204),
    ("post", "/v1/discount-codes", 201),
    ("get", "/v1/discount-codes", 200),
    ("get", "/v1/discount-codes/{code}", 200),
    ("patch", "/v1/discount-codes/{code}", 200),
    ("post", "/v1/promotions", 201),
    ("get", "/v1/promotions", 200),
    ("patch", "/v1/promotions/{id}", 200),
    ("get", "/v1/orders", 200),
    ("get", "/v1/orders/{id}", 200),
    ("post", "/v1/orders/{id}/payments", 201),
    ("post", "/v1/orders/{id}/payment-calls", 202),
    ("get", "/v1/orders/{id}/payment-calls", 200),
    ("post", "/v1/payment-callbacks/{provider}", 200),
    ("post", "/v1/orders/{id}/cancel", 200),
    ("post", "/v1/orders/{id}/fulfillments", 200),
    ("post", "/v1/orders/{id}/refunds", 201),
    ("get", "/v1/orders/{id}/transactions", 200),
    ("get", "/v1/admin/reconciliation", 200),
    ("get", "/v1/admin/stats", 200),
    ("post", "/v1/admin/webhooks", 201),
    ("get", "/v1/admin/webhooks", 200),
    ("get", "/v1/admin/webhooks/{id}", 200),
    ("delete", "/v1/admin/webhooks/{id}", 204),
    ("get", "/v1/admin/webhooks/{id}/deliveries", 200),
    ("get", "/v1/admin/webhooks/{id}/dead-letters", 200),
    ("post", "/v1/admin/webhooks/{id}/dead-letters/{dead_letter_id}/redeliver", 200),
    ("post", "/v1/orders/{id}/returns", 201),
    ("get", "/v1/orders/{id}/returns", 200),
    ("get", "/v1/returns", 200),
    ("get", "/v1/returns/{id}", 200),
    ("post", "/v1/returns/{id}/approve", 200),
    ("post", "/v1/returns/{id}/reject", 200),
    ("post", "/v1/returns/{id}/receive", 200),
    ("get", "/v1/admin/replication", 200),
    ("get", "/v1/admin/digest", 200),
    ("get", "/v1/events", 200),
    ("delete", "/v1/events/consumers/{name}", 204),
    ("post", "/v1/admin/promote", 200),
    ("post", "/v1/admin/checkpoints", 201),
    ("post", "/v1/flash-sales", 201),
    ("get", "/v1/flash-sales", 200),
    ("get", "/v1/flash-sales/{id}", 200),
    ("get", "/v1/flash-sales/{id}/stream", 200),
    ("post", "/v1/flash-sales/{id}/cancel", 200),
    ("post", "/v1/flash-sales/{id}/purchases", 201),
    ("get", "/v1/customers/me/notification-preferences", 200),
    ("patch", "/v1/customers/me/notification-preferences", 200),
    ("get", "/v1/admin/notification-templates", 200),
    ("put", "/v1/admin/notification-templates/{kind}", 200),
    ("delete", "/v1/admin/notification-templates/{kind}", 204),
    ("get", "/v1/admin/notifications", 200),
    ("get", "/v1/admin/notifications/{id}", 200),
    ("post", "/v1/admin/notifications/{id}/retry", 200),
];

#[test]
fn the_openapi_document_lists_every_route() {
    let s = TestServer::start();
    let answer = s.get("/openapi.json").send();
    assert!(
        answer.header("content-type").is_some_and(|c| c.starts_with("application/json")),
        "{answer:?}"
    );
    let document = answer.expect(200);
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{document}");
    let paths = document["paths"].as_object().expect("paths");
    for (method, path, success) in ENDPOINTS {
        let operation =
            &paths.get(path).unwrap_or_else(|| panic!("{path} is not documented"))[method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let responses = operation["responses"].as_object().expect("responses");
        assert!(responses.contains_key(&success.to_string()), "{method} {path} lacks {success}");
    }
    let mut documented = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
                .contains(&method.as_str())
            {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> =
        ENDPOINTS.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Served with a validator like the catalog.
    let etag = s.get("/openapi.json").send().header("etag").expect("an ETag").to_string();
    assert_eq!(s.get("/openapi.json").header("if-none-match", &etag).send().status, 304);
}

#[test]
fn checkpoints_open_as_an_engine() {
    let s = TestServer::start();
    let admin = s.admin();
    let product = s.product(&admin, "CKPT-1", 700, 9);
    let answer = s.post("/v1/admin/checkpoints").bearer(&admin).send();
    assert_eq!(answer.status, 201, "{answer}");
    let path = std::path::PathBuf::from(text(&answer.json, "path"));
    assert!(answer.json["lsn"].as_u64().is_some_and(|l| l > 0), "{}", answer.json);
    assert!(
        path.starts_with(s.config().data_dir.parent().expect("a parent")),
        "{}",
        path.display()
    );
    // A write after the checkpoint is not in it.
    s.post("/v1/products").bearer(&admin).json(product_body("CKPT-2", 1)).send().expect(201);
    let engine = Engine::open(EngineConfig::new(path.clone())).expect("the checkpoint opens");
    let id = ProductId::parse(text(&product, "id")).expect("a product id");
    let copy = engine.state().product(&id).expect("the product is in the checkpoint");
    assert_eq!(copy.title, "Product CKPT-1");
    let sku = emporium_engine::Sku::new("CKPT-1").expect("a SKU");
    assert_eq!(engine.state().stock(&sku).map(|s| s.on_hand), Some(9));
    assert!(engine
        .state()
        .product_by_sku(&emporium_engine::Sku::new("CKPT-2").expect("a SKU"))
        .is_none());
    engine.close();
    let second = s.post("/v1/admin/checkpoints").bearer(&admin).send().expect(201);
    assert_ne!(second["path"], answer.json["path"]);
}

#[test]
fn the_token_endpoint_is_rate_limited() {
    let s = TestServer::with(|c| {
        c.rate_limits = true;
        c.rate_auth = emporium_server::config::Rate { burst: 2, per_second: 0.001 };
    });
    let check = |expected: u16, remaining: &str| {
        let answer = s.password_grant("nobody@example.com", "wrong password");
        assert_eq!(answer.status, expected, "{answer}");
        assert_eq!(answer.header("ratelimit-limit"), Some("2"), "{answer:?}");
        assert_eq!(answer.header("ratelimit-remaining"), Some(remaining), "{answer:?}");
        let reset = answer.header("ratelimit-reset").and_then(|r| r.parse::<u64>().ok());
        assert!(reset.is_some(), "RateLimit-Reset: {answer:?}");
        answer
    };
    assert_eq!(check(400, "1").json["error"], "invalid_grant");
    assert_eq!(check(400, "0").json["error"], "invalid_grant");
    let limited = check(429, "0");
    let retry = limited.header("retry-after").and_then(|r| r.parse::<u64>().ok());
    assert!(retry.is_some_and(|r| r >= 1), "Retry-After: {limited:?}");
    assert!(limited
        .header("ratelimit-reset")
        .and_then(|r| r.parse::<u64>().ok())
        .is_some_and(|r| r >= 1));
    limited.problem(429, "rate_limited");
    // Registration shares the auth bucket; reads have their own.
    let register =
        s.post("/v1/auth/register").json(json!({"email": "x@example.com", "password": PASSWORD}));
    register.send().problem(429, "rate_limited");
    // So does entering a discount code: codes are not guessed faster than passwords.
    let cart = s.cart(None);
    let guess = s.post(&format!("/v1/carts/{cart}/discount-codes")).json(json!({"code": "GUESS1"}));
    guess.send().problem(429, "rate_limited");
    assert_eq!(s.get("/v1/products").send().status, 200);
}

// --- shoppers end to end, and idempotency across a restart --------------------------

#[test]
fn a_registered_shopper_buys_end_to_end() {
    let s = TestServer::start();
    let admin = s.admin();
    let category =
        s.post("/v1/categories").bearer(&admin).json(json!({"name": "Mugs"})).send().expect(201);
    let mut mug = product_body("MUG-1", 1200);
    mug["category_ids"] = json!([text(&category, "id")]);
    let mug = s.post("/v1/products").bearer(&admin).json(mug).send().expect(201);
    s.put("/v1/inventory/MUG-1").bearer(&admin).json(json!({"on_hand": 5})).send().expect(200);

    let shopper = s.register("shopper@example.com");
    let browse = s
        .get(&format!("/v1/products?category_id={}", text(&category, "id")))
        .bearer(&shopper.token)
        .send();
    let listed = browse.expect(200);
    assert_eq!(listed["data"][0]["id"], mug["id"]);
    let product = s
        .get(&format!("/v1/products/{}", text(&mug, "id")))
        .bearer(&shopper.token)
        .send()
        .expect(200);
    let sku = product["variants"][0]["sku"].as_str().expect("a SKU");

    let cart = s.cart(Some(&shopper.token));
    let added = s.add(Some(&shopper.token), &cart, sku, 2).expect(200);
    assert_eq!(added["total"], json!({"amount": 2400, "currency": "USD"}));
    let order = s.checkout(Some(&shopper.token), &cart, "shopper-checkout", json!({})).expect(201);
    assert_eq!(
        (order["customer_id"].as_str(), order["email"].as_str()),
        (Some(shopper.id.as_str()), Some("shopper@example.com"))
    );
    let order_id = text(&order, "id");
    let payment = s.pay(Some(&shopper.token), order_id, "shopper-pay", "tok_visa").expect(201);
    assert_eq!(payment["amount"]["amount"], 2400);

    let mine = s.get("/v1/customers/me/orders").bearer(&shopper.token).send().expect(200);
    assert_eq!(mine["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (mine["data"][0]["id"].as_str(), mine["data"][0]["status"].as_str()),
        (Some(order_id), Some("paid"))
    );
    let seen = s.get(&format!("/v1/orders/{order_id}")).bearer(&shopper.token).send().expect(200);
    assert_eq!(seen["payments"][0]["id"], payment["id"]);
    assert_eq!(s.stock(&admin, "MUG-1"), (3, 0, 3));
    let fulfilled =
        s.post(&format!("/v1/orders/{order_id}/fulfillments")).bearer(&admin).send().expect(200);
    assert_eq!(fulfilled["status"], "fulfilled");
    let again =
        s.get("/v1/customers/me/orders?status=fulfilled").bearer(&shopper.token).send().expect(200);
    assert_eq!(again["data"][0]["id"].as_str(), Some(order_id));
}

/// The ledger of an order as its owner sees it, checked to add up: captured less the
/// refunds listed is the balance, and the entries' sums are `captured` and `refunded`.
/// Returns `(captured, refunded, balance, kinds)`.
fn ledger(s: &TestServer, token: &str, order: &str) -> (i64, i64, i64, Vec<String>) {
    let body = s.get(&format!("/v1/orders/{order}/transactions")).bearer(token).send().expect(200);
    let amount = |v: &Value| v["amount"].as_i64().expect("an amount");
    let (captured, refunded, balance) =
        (amount(&body["captured"]), amount(&body["refunded"]), amount(&body["balance"]));
    let entries = body["data"].as_array().expect("entries");
    let sum = |kind: &str| {
        entries.iter().filter(|e| e["kind"] == kind).map(|e| amount(&e["amount"])).sum::<i64>()
    };
    assert_eq!((sum("capture"), sum("refund")), (captured, refunded), "{body}");
    assert_eq!(captured - refunded, balance, "{body}");
    let kinds = entries.iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    (captured, refunded, balance, kinds)
}

#[test]
fn refunds_move_money_back_and_the_ledger_adds_up_at_every_step() {
    let mut s = TestServer::start();
    let admin = s.admin();
    let staff = s.user(&admin, "staff-refunds@example.com", "staff");
    s.product(&admin, "REF-1", 1500, 10);
    let buyer = s.register("refund-buyer@example.com");
    let order = s.order(Some(&buyer.token), "REF-1", 2);
    let id = text(&order, "id").to_string();
    let path = format!("/v1/orders/{id}/refunds");
    let refund = |key: &str, body: Value| s.post(&path).bearer(&admin).key(key).json(body).send();

    // Nothing captured yet: nothing to refund.
    assert_eq!(ledger(&s, &buyer.token, &id), (0, 0, 0, vec![]));
    refund("early", json!({})).problem(409, "invalid_state");
    s.pay(Some(&buyer.token), &id, "pay", "tok_visa").expect(201);
    assert_eq!(ledger(&s, &buyer.token, &id), (3000, 0, 3000, vec!["capture".into()]));

    // Who may refund: payments:refund only (the buyer and staff may not); a key is required.
    let by = |token: &str| s.post(&path).bearer(token).key("who").json(json!({})).send();
    by(&buyer.token).problem(403, "forbidden");
    by(&staff.token).problem(403, "forbidden");
    s.post(&path).json(json!({})).key("anon").send().problem(401, "unauthenticated");
    s.post(&path).bearer(&admin).json(json!({})).send().problem(400, "malformed_request");

    // Bad amounts change nothing.
    let money =
        |amount: i64, currency: &str| json!({"amount": {"amount": amount, "currency": currency}});
    assert_eq!(refund("over", money(3001, "USD")).invalid_fields(), ["amount.amount"]);
    assert_eq!(refund("zero", money(0, "USD")).invalid_fields(), ["amount.amount"]);
    assert_eq!(refund("negative", money(-5, "USD")).invalid_fields(), ["amount.amount"]);
    assert_eq!(refund("euros", money(100, "EUR")).invalid_fields(), ["amount.currency"]);
    assert_eq!(refund("card", json!({"card": "4242424242424242"})).invalid_fields(), ["card"]);
    assert_eq!(ledger(&s, &buyer.token, &id), (3000, 0, 3000, vec!["capture".into()]));

    // A partial refund, replayed by its key; the same key with another body is refused.
    let mut partial = money(1000, "USD");
    partial["reason"] = json!("one mug arrived chipped");
    let first = refund("r1", partial.clone());
    assert_eq!(first.header("location"), Some(format!("/v1/orders/{id}/transactions").as_str()));
    let first = first.expect(201);
    assert!(text(&first, "id").starts_with("re_"), "{first}");
    assert_eq!(first["order"]["status"], "partially_refunded");
    assert_eq!(first["reason"], "one mug arrived chipped");
    let again = refund("r1", partial);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.expect(201)["id"], first["id"]);
    refund("r1", money(999, "USD")).problem(422, "idempotency_key_reused");
    assert_eq!(
        ledger(&s, &buyer.token, &id),
        (3000, 1000, 2000, vec!["capture".into(), "refund".into()])
    );
    assert_eq!(refund("too-much", money(2001, "USD")).invalid_fields(), ["amount.amount"]);

    // An empty body refunds the rest; then there is nothing left.
    let rest = s.post(&path).bearer(&admin).key("r2").send().expect(201);
    assert_eq!(
        (rest["amount"]["amount"].as_i64(), rest["order"]["status"].as_str()),
        (Some(2000), Some("refunded"))
    );
    let all = (3000, 3000, 0, vec!["capture".into(), "refund".into(), "refund".into()]);
    assert_eq!(ledger(&s, &buyer.token, &id), all);
    refund("r3", json!({})).problem(409, "invalid_state");
    // Money only: the units stay sold.
    assert_eq!(s.stock(&admin, "REF-1"), (8, 0, 8));

    // Reconciliation (staff), the event feed, and a restart.
    let report = s.get("/v1/admin/reconciliation").bearer(&staff.token).send().expect(200);
    assert_eq!(
        (report["mismatch_count"].as_u64(), report["refunds"].as_u64()),
        (Some(0), Some(2)),
        "{report}"
    );
    assert_eq!(report["totals"], json!([{"currency": "USD", "captured": 3000, "refunded": 3000}]));
    let feed = s.get("/v1/events?types=order.refunded").bearer(&admin).send().expect(200);
    let amounts: Vec<_> = feed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["amount"]["amount"].clone())
        .collect();
    assert_eq!(amounts, [json!(1000), json!(2000)], "{feed}");
    s.restart();
    assert_eq!(ledger(&s, &buyer.token, &id), all);
    let seen = s.get(&format!("/v1/orders/{id}")).bearer(&buyer.token).send().expect(200);
    assert_eq!(seen["status"], "refunded");
}

#[test]
fn a_discount_code_prices_the_cart_and_the_order_and_its_money_adds_up() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "DISC-1", 1000, 10);
    s.product(&admin, "DISC-2", 333, 10);
    let code = json!({"code": "Spring10", "percent_off": 10, "usage_limit": 5, "min_subtotal": {"amount": 1000, "currency": "USD"}});
    let created = s.post("/v1/discount-codes").bearer(&admin).json(code.clone()).send();
    assert_eq!(created.header("location"), Some("/v1/discount-codes/SPRING10"));
    let created = created.expect(201);
    assert_eq!(
        (created["code"].as_str(), created["percent_off"].as_u64(), created["uses"].as_u64()),
        (Some("SPRING10"), Some(10), Some(0))
    );
    s.post("/v1/discount-codes").bearer(&admin).json(code).send().problem(409, "conflict");
    let bad = json!({"code": "x", "percent_off": 500});
    assert_eq!(
        s.post("/v1/discount-codes").bearer(&admin).json(bad).send().invalid_fields(),
        ["code", "percent_off"]
    );

    let buyer = s.register("disc-buyer@example.com");
    let token = Some(buyer.token.as_str());
    let cart = s.cart(token);
    s.add(token, &cart, "DISC-1", 1).expect(200);
    s.add(token, &cart, "DISC-2", 3).expect(200);
    let path = format!("/v1/carts/{cart}/discount-codes");
    let enter = |code: &str| s.post(&path).auth(token).json(json!({"code": code})).send();
    enter("NOPE").problem(404, "not_found");
    let priced = enter("spring10").expect(200);
    // 10 % of 19.99 is 1.99 (rounded down), spread by largest remainder: 1.00 + 0.99.
    assert_eq!(
        priced["discounts"],
        json!([{"code": "SPRING10", "amount": {"amount": 199, "currency": "USD"}, "applies": true, "reason": null}])
    );
    let line_off: Vec<_> = priced["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["discount"]["amount"].clone())
        .collect();
    assert_eq!(line_off, [json!(100), json!(99)]);
    assert_eq!(
        (priced["discount_total"]["amount"].as_i64(), priced["total"]["amount"].as_i64()),
        (Some(199), Some(1800))
    );
    // Below the minimum subtotal the cart says why and checkout refuses.
    s.put(&format!("/v1/carts/{cart}/items/DISC-1"))
        .auth(token)
        .json(json!({"quantity": 0}))
        .send()
        .expect(200);
    let short = s.get(&format!("/v1/carts/{cart}")).auth(token).send().expect(200);
    assert_eq!(short["discounts"][0]["applies"], false);
    assert_eq!(short["discounts"][0]["reason"], "the cart's subtotal must be at least 1000");
    s.checkout(token, &cart, "disc-short", json!({})).problem(409, "discount_unavailable");
    s.add(token, &cart, "DISC-1", 1).expect(200);

    let order = s.checkout(token, &cart, "disc-checkout", json!({})).expect(201);
    assert_eq!(
        (
            order["subtotal"]["amount"].as_i64(),
            order["discount_total"]["amount"].as_i64(),
            order["total"]["amount"].as_i64()
        ),
        (Some(1999), Some(199), Some(1800))
    );
    let seen = s.get("/v1/discount-codes/SPRING10").bearer(&admin).send().expect(200);
    assert_eq!(seen["uses"], 1);
    let id = text(&order, "id").to_string();
    let paid = s.pay(token, &id, "disc-pay", "tok_visa").expect(201);
    assert_eq!(paid["amount"]["amount"], 1800, "the discounted total is captured");
    let refund =
        json!({"amount": {"amount": 800, "currency": "USD"}, "reason": "returned the mugs"});
    s.post(&format!("/v1/orders/{id}/refunds"))
        .bearer(&admin)
        .key("disc-refund")
        .json(refund)
        .send()
        .expect(201);
    assert_eq!(
        ledger(&s, &buyer.token, &id),
        (1800, 800, 1000, vec!["capture".into(), "refund".into()])
    );
    let report = s.get("/v1/admin/reconciliation").bearer(&admin).send().expect(200);
    assert_eq!(report["mismatch_count"], 0, "{report}");

    // Staff switch the code off: a cart holding it says so; removing it is 204.
    let patch = json!({"active": false});
    let off = s.patch("/v1/discount-codes/SPRING10").bearer(&admin).json(patch).send().expect(200);
    assert_eq!((off["active"].as_bool(), off["version"].as_u64()), (Some(false), Some(2)));
    let other = s.cart(None);
    s.add(None, &other, "DISC-1", 1).expect(200);
    let other_path = format!("/v1/carts/{other}/discount-codes");
    s.post(&other_path)
        .json(json!({"code": "SPRING10"}))
        .send()
        .problem(409, "discount_unavailable");
    s.delete(&format!("{other_path}/SPRING10")).send().problem(404, "not_found");
    let list = s.get("/v1/discount-codes").bearer(&admin).send().expect(200);
    assert_eq!(list["data"][0]["code"], "SPRING10");
}

/// The money path end to end: a discount, checkout, payment, a partial refund,
/// fulfilment, a return approved and received (one line restocked, one not) and its
/// refund; the order's ledger adds up to its balance at every step, and the
/// reconciliation finds nothing.
#[test]
fn discount_pay_refund_return_restock_refund_end_to_end() {
    let s = TestServer::start();
    let admin = s.admin();
    let staff = s.user(&admin, "staff-returns@example.com", "staff");
    s.product(&admin, "RET-1", 2000, 10);
    s.product(&admin, "RET-2", 500, 10);
    let code = json!({"code": "FIVE", "amount_off": {"amount": 500, "currency": "USD"}});
    s.post("/v1/discount-codes").bearer(&admin).json(code).send().expect(201);
    let buyer = s.register("returns-buyer@example.com");
    let token = Some(buyer.token.as_str());
    let cart = s.cart(token);
    s.add(token, &cart, "RET-1", 1).expect(200);
    s.add(token, &cart, "RET-2", 2).expect(200);
    s.post(&format!("/v1/carts/{cart}/discount-codes"))
        .auth(token)
        .json(json!({"code": "five"}))
        .send()
        .expect(200);
    // 30.00 less 5.00, spread 3.33 / 1.67 over the lines' 20.00 and 10.00.
    let order = s.checkout(token, &cart, "ret-checkout", json!({})).expect(201);
    let id = text(&order, "id").to_string();
    assert_eq!(order["total"]["amount"], 2500);
    let check = |expected: (i64, i64, i64), kinds: &[&str]| {
        let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
        assert_eq!(ledger(&s, &buyer.token, &id), (expected.0, expected.1, expected.2, kinds));
        let report = s.get("/v1/admin/reconciliation").bearer(&staff.token).send().expect(200);
        assert_eq!(report["mismatch_count"], 0, "{report}");
    };
    s.pay(token, &id, "ret-pay", "tok_visa").expect(201);
    check((2500, 0, 2500), &["capture"]);
    let refund = json!({"amount": {"amount": 200, "currency": "USD"}, "reason": "late"});
    s.post(&format!("/v1/orders/{id}/refunds"))
        .bearer(&admin)
        .key("ret-r1")
        .json(refund)
        .send()
        .expect(201);
    check((2500, 200, 2300), &["capture", "refund"]);

    // Not shipped yet: no return. Shipped (it stays partially refunded): a return.
    let path = format!("/v1/orders/{id}/returns");
    let both = json!({"items": [{"sku": "RET-1", "quantity": 1}, {"sku": "RET-2", "quantity": 1}], "reason": "changed my mind"});
    s.post(&path).auth(token).json(both.clone()).send().problem(409, "invalid_state");
    let shipped =
        s.post(&format!("/v1/orders/{id}/fulfillments")).bearer(&staff.token).send().expect(200);
    assert_eq!(shipped["status"], "partially_refunded");
    let too_many = json!({"items": [{"sku": "RET-2", "quantity": 3}], "reason": "x"});
    assert_eq!(
        s.post(&path).auth(token).json(too_many).send().invalid_fields(),
        ["items[0].quantity"]
    );
    let requested = s.post(&path).auth(token).json(both).send();
    let location = requested.header("location").map(str::to_string);
    let requested = requested.expect(201);
    let rid = text(&requested, "id").to_string();
    assert_eq!(location, Some(format!("/v1/returns/{rid}")));
    // RET-1's line paid 16.67, RET-2's 8.33 for two: one of each is worth 16.67 + 4.16.
    assert_eq!(
        (requested["status"].as_str(), requested["amount"]["amount"].as_i64()),
        (Some("requested"), Some(2083))
    );
    let queue = s.get("/v1/returns?status=requested").bearer(&staff.token).send().expect(200);
    assert_eq!(queue["data"][0]["id"].as_str(), Some(rid.as_str()));
    let mine = s.get(&path).auth(token).send().expect(200);
    assert_eq!(mine["data"].as_array().map(Vec::len), Some(1));
    s.post(&format!("/v1/returns/{rid}/receive"))
        .bearer(&admin)
        .send()
        .problem(409, "invalid_state");
    s.post(&format!("/v1/returns/{rid}/approve")).bearer(&staff.token).send().expect(200);
    s.post(&format!("/v1/returns/{rid}/receive"))
        .bearer(&staff.token)
        .send()
        .problem(403, "forbidden");
    check((2500, 200, 2300), &["capture", "refund"]);

    // Received: RET-1 back in stock, RET-2 (damaged) not; refunded in the same step.
    let body = json!({"not_restocked": ["RET-2"]});
    let received =
        s.post(&format!("/v1/returns/{rid}/receive")).bearer(&admin).json(body).send().expect(200);
    assert_eq!(received["status"], "received");
    let restocked: Vec<_> =
        received["items"].as_array().unwrap().iter().map(|l| l["restocked"].clone()).collect();
    assert_eq!(restocked, [json!(true), json!(false)]);
    assert!(received["refund_id"].as_str().is_some_and(|r| r.starts_with("re_")));
    assert_eq!(received["refunded"]["amount"], 2083);
    assert_eq!(s.stock(&admin, "RET-1"), (10, 0, 10));
    assert_eq!(s.stock(&admin, "RET-2"), (8, 0, 8));
    check((2500, 2283, 217), &["capture", "refund", "refund"]);
    assert_eq!(received["order"]["status"], "partially_refunded");
    let feed = s
        .get("/v1/events?types=return.requested,return.approved,return.received")
        .bearer(&admin)
        .send()
        .expect(200);
    let kinds: Vec<_> =
        feed["data"].as_array().unwrap().iter().map(|e| e["type"].clone()).collect();
    assert_eq!(
        kinds,
        [json!("return.requested"), json!("return.approved"), json!("return.received")]
    );
}

#[test]
fn a_guest_shopper_buys_end_to_end() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "GUEST-1", 800, 4);
    let listed = s.get("/v1/products").send().expect(200);
    let sku = listed["data"][0]["variants"][0]["sku"].as_str().expect("a SKU").to_string();
    let cart = s.cart(None);
    s.add(None, &cart, &sku, 3).expect(200);
    let address = json!({
        "name": "Gail Guest", "line1": "2 High Street", "city": "Leeds",
        "postal_code": "LS1 1AA", "country": "GB"
    });
    let order = s
        .checkout(
            None,
            &cart,
            "guest-checkout",
            json!({"email": "gail@example.com", "shipping_address": address}),
        )
        .expect(201);
    assert_eq!(
        (&order["customer_id"], &order["shipping_address"]["city"]),
        (&Value::Null, &json!("Leeds"))
    );
    let order_id = text(&order, "id");
    let paid = s.pay(None, order_id, "guest-pay", "tok_mastercard").expect(201);
    assert_eq!(paid["order"]["status"], "paid");
    let seen = s.get(&format!("/v1/orders/{order_id}")).send().expect(200);
    assert_eq!(
        (seen["status"].as_str(), seen["total"]["amount"].as_i64()),
        (Some("paid"), Some(2400))
    );
    assert_eq!(s.stock(&admin, "GUEST-1"), (1, 0, 1));
}

#[test]
fn idempotent_requests_replay_after_a_restart() {
    let mut s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "RST-1", 300, 10);
    let created = s
        .post("/v1/products")
        .bearer(&admin)
        .key("create-1")
        .json(product_body("RST-2", 1))
        .send()
        .expect(201);
    let cart = s.cart(None);
    s.add(None, &cart, "RST-1", 2).expect(200);
    let guest = json!({"email": "restart@example.com"});
    let order = s.checkout(None, &cart, "restart-checkout", guest.clone()).expect(201);
    let order_id = text(&order, "id").to_string();
    let other = s.order(None, "RST-1", 1);
    let payment = s.pay(None, text(&other, "id"), "restart-pay", "tok_visa").expect(201);
    let declined = s.pay(None, &order_id, "restart-declined", "tok_declined");
    let declined = declined.problem(402, "payment_declined");

    s.restart();

    let replayed = s.checkout(None, &cart, "restart-checkout", guest).expect(201);
    assert_eq!((&replayed["id"], &replayed["total"]), (&json!(order_id), &order["total"]));
    s.checkout(None, &cart, "restart-checkout", json!({"email": "else@example.com"}))
        .problem(422, "idempotency_key_reused");
    assert_eq!(s.stock(&admin, "RST-1"), (9, 2, 7));
    let paid_again = s.pay(None, text(&other, "id"), "restart-pay", "tok_visa").expect(201);
    assert_eq!(paid_again["id"], payment["id"]);
    assert_replayed(s.pay(None, &order_id, "restart-declined", "tok_declined"), 402, &declined);
    let again =
        s.post("/v1/products").bearer(&admin).key("create-1").json(product_body("RST-2", 1)).send();
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again:?}");
    assert_eq!(again.expect(201)["id"], created["id"]);
    let changed =
        s.post("/v1/products").bearer(&admin).key("create-1").json(product_body("RST-3", 1));
    changed.send().problem(422, "idempotency_key_reused");
    // The admin's token from before the restart still works, and the orders are there.
    assert_eq!(
        s.get(&format!("/v1/orders/{order_id}")).send().expect(200)["status"],
        "pending_payment"
    );
}

/// Garbage of every kind, sent to every endpoint by an admin and by an anonymous caller:
/// each answer is a success or a 4xx, never a 5xx, and every 4xx outside the token
/// endpoint is a problem document.
#[test]
fn no_client_input_gets_a_5xx() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "JUNK-1", 100, 1000);
    // The product the paths name (DELETE archives it); carts use JUNK-1.
    let product = s.product(&admin, "JUNK-P", 100, 1);
    let category = s.post("/v1/categories").bearer(&admin).json(json!({"name": "Junk"})).send();
    let category = category.expect(201);
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let bodies: [&[u8]; 12] = [
        b"null",
        b"[]",
        b"1",
        b"\"text\"",
        b"{}",
        b"{\"a\": {\"b\": [1, 2, {}]}}",
        b"{\"email\": 5, \"quantity\": -1, \"sku\": null, \"name\": []}",
        b"{\"quantity\": 99999999999999999999999, \"on_hand\": 1e999}",
        b"\xff\xfe\x00garbage",
        b"{\"title\": \"\\ud800\"}",
        b"",
        deep.as_bytes(),
    ];
    for (method, template, _) in ENDPOINTS {
        for token in [Some(admin.as_str()), None] {
            for (i, body) in bodies.iter().enumerate() {
                // A fresh cart and order where the path names one: earlier garbage may
                // have closed the last.
                let mut cart = String::new();
                let mut order = Value::Null;
                if template.starts_with("/v1/carts/") {
                    cart = s.cart(None);
                    s.add(None, &cart, "JUNK-1", 1).expect(200);
                }
                if template.starts_with("/v1/orders/") {
                    order = s.order(None, "JUNK-1", 1);
                }
                let path = template
                    .replace("/v1/products/{id}", &format!("/v1/products/{}", text(&product, "id")))
                    .replace(
                        "/v1/categories/{id}",
                        &format!("/v1/categories/{}", text(&category, "id")),
                    )
                    .replace("/v1/carts/{id}", &format!("/v1/carts/{cart}"))
                    .replace(
                        "/v1/orders/{id}",
                        &format!("/v1/orders/{}", order["id"].as_str().unwrap_or("")),
                    )
                    .replace("{sku}", "JUNK-1");
                let answer = s
                    .req(&method.to_uppercase(), &path)
                    .auth(token)
                    .key(&format!("junk-{i}"))
                    .body(JSON, body.to_vec())
                    .send();
                let what = format!("{method} {path} with body #{i} as {token:?}");
                assert!(answer.status < 500, "{what}: {answer}");
                if answer.status >= 400 && template != "/v1/auth/token" {
                    let code = answer.json["code"].as_str().unwrap_or_default().to_string();
                    answer.problem(answer_status(&what, &code), &code);
                }
            }
        }
    }
}

/// The status a problem `code` goes with, by the contract's table.
fn answer_status(what: &str, code: &str) -> u16 {
    match code {
        "malformed_request" => 400,
        "unauthenticated" => 401,
        "payment_declined" => 402,
        "forbidden" => 403,
        "not_found" => 404,
        "method_not_allowed" => 405,
        "out_of_stock" | "conflict" | "invalid_state" | "request_in_progress" => 409,
        "precondition_failed" => 412,
        "payload_too_large" => 413,
        "unsupported_media_type" => 415,
        "validation_failed" | "idempotency_key_reused" | "empty_cart" => 422,
        "rate_limited" => 429,
        other => panic!("{what}: {other:?} is not a code of the contract"),
    }
}

/// A cart takes at most 100 lines.
#[test]
fn a_cart_holds_at_most_100_lines() {
    let s = TestServer::start();
    let admin = s.admin();
    let cart = s.cart(None);
    for i in 0..101 {
        let sku = format!("MANY-{i}");
        s.post("/v1/products").bearer(&admin).json(product_body(&sku, 100)).send().expect(201);
        let added = s.add(None, &cart, &sku, 1);
        if i < 100 {
            assert_eq!(added.status, 200, "line {i}: {added}");
        } else {
            assert_eq!(added.invalid_fields(), ["sku"], "line {i}");
        }
    }
    let full = s.get(&format!("/v1/carts/{cart}")).send().expect(200);
    assert_eq!(full["items"].as_array().map(Vec::len), Some(100));
    // More units of a line already there are still fine.
    assert_eq!(s.add(None, &cart, "MANY-0", 2).expect(200)["items"][0]["quantity"], 3);
}
