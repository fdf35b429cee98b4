//! Shipping and tax over HTTP: staff set a method, a tax rate and weights; a customer
//! saves a default address and checks out with the method; the order shows its
//! shipping, tax and total in the checkout's answer, a GET and the payment's receipt,
//! and the payment captures that total.

use serde_json::json;

use crate::http_support::*;

#[test]
fn checkout_adds_the_method_and_the_zone_tax_and_every_answer_shows_them() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "SH-1", 1000, 10);
    s.put("/v1/inventory/SH-1/weight")
        .bearer(&admin)
        .json(json!({"grams": 300}))
        .send()
        .expect(200);
    let rate = s.put("/v1/tax-rates/US-CA").bearer(&admin).json(json!({"rate_bp": 725})).send();
    assert_eq!(rate.expect(200)["rate_bp"], 725);
    let method = json!({"name": "Standard", "currency": "USD",
                        "rate": {"type": "weight", "bands": [{"up_to_grams": 1000, "amount": 499}]}});
    let method = s.post("/v1/shipping-methods").bearer(&admin).json(method).send().expect(201);
    let method_id = method["id"].as_str().unwrap().to_string();
    assert_eq!(method["rate"]["bands"][0]["amount"], 499);
    assert_eq!(
        s.get("/v1/shipping-methods").send().expect(200)["data"][0]["id"],
        method_id.as_str()
    );
    assert_eq!(s.get("/v1/tax-rates").send().expect(200)["data"][0]["zone"], "US-CA");

    let ann = s.register("ann.ship@example.com");
    let home = json!({"address": {"name": "Ann", "line1": "1 Main St", "city": "Fresno",
                                  "region": "CA", "postal_code": "93650", "country": "US"},
                      "default_shipping": true});
    let saved =
        s.post("/v1/customers/me/addresses").bearer(&ann.token).json(home).send().expect(201);
    assert_eq!(saved["default_shipping"], true);
    let book = s.get("/v1/customers/me/addresses").bearer(&ann.token).send().expect(200);
    assert_eq!(book["data"].as_array().unwrap().len(), 1);

    let cart = s.cart(Some(&ann.token));
    s.add(Some(&ann.token), &cart, "SH-1", 2).expect(200);
    let bad =
        s.checkout(Some(&ann.token), &cart, "ship-0", json!({"shipping_method_id": "ship_zzz"}));
    assert_eq!(bad.invalid_fields(), ["shipping_method_id"]);
    let body = json!({"shipping_method_id": method_id});
    let order = s.checkout(Some(&ann.token), &cart, "ship-1", body).expect(201);
    // 2 × 10.00; 600 g ships for 4.99; CA tax 7.25 % of 20.00 = 1.45.
    let amounts = |o: &serde_json::Value| {
        ["subtotal", "shipping_total", "tax_total", "total"]
            .map(|f| o[f]["amount"].as_i64().unwrap())
    };
    assert_eq!(amounts(&order), [2000, 499, 145, 2644]);
    assert_eq!(order["shipping_method"], json!({"id": method_id, "name": "Standard"}));
    assert_eq!(order["shipping_address"]["region"], "CA", "the default address");
    let id = order["id"].as_str().unwrap();
    let fetched = s.get(&format!("/v1/orders/{id}")).bearer(&ann.token).send().expect(200);
    assert_eq!(amounts(&fetched), [2000, 499, 145, 2644]);
    let paid = s.pay(Some(&ann.token), id, "ship-pay", "tok_visa").expect(201);
    assert_eq!(paid["amount"]["amount"], 2644);
    assert_eq!(amounts(&paid["order"]), [2000, 499, 145, 2644]);
    let ledger = s.get(&format!("/v1/orders/{id}/transactions")).bearer(&ann.token).send();
    assert_eq!(ledger.expect(200)["captured"]["amount"], 2644);
    let report = s.get("/v1/admin/reconciliation").bearer(&admin).send().expect(200);
    assert_eq!(report["mismatch_count"], 0, "{report}");

    // Refused input changes nothing.
    let bad_rate = json!({"name": "X", "currency": "USD", "rate": {"type": "flat"}});
    let refused = s.post("/v1/shipping-methods").bearer(&admin).json(bad_rate).send();
    assert_eq!(refused.invalid_fields(), ["rate.amount"]);
    let zone = s.put("/v1/tax-rates/usa").bearer(&admin).json(json!({"rate_bp": 1})).send();
    assert_eq!(zone.invalid_fields(), ["zone"]);
    s.delete("/v1/tax-rates/FR").bearer(&admin).send().problem(404, "not_found");
}

#[test]
fn an_automatic_promotion_prices_carts_and_orders_without_a_code() {
    let s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "PR-1", 400, 20);
    let body = json!({"name": "3 for 2", "buy": 2, "get": 1});
    let promo = s.post("/v1/promotions").bearer(&admin).json(body).send().expect(201);
    let id = promo["id"].as_str().unwrap().to_string();
    assert_eq!(s.get("/v1/promotions").send().expect(200)["data"][0]["name"], "3 for 2");
    let cart = s.cart(None);
    let priced = s.add(None, &cart, "PR-1", 3).expect(200);
    assert_eq!(priced["discount_total"]["amount"], 400, "{priced}");
    let order = s.checkout(None, &cart, "pr-1", json!({"email": "guest@example.com"})).expect(201);
    assert_eq!(
        (&order["discount_total"]["amount"], &order["total"]["amount"]),
        (&json!(400), &json!(800))
    );
    let off =
        s.patch(&format!("/v1/promotions/{id}")).bearer(&admin).json(json!({"active": false}));
    assert_eq!(off.send().expect(200)["active"], false);
    let cart = s.cart(None);
    assert_eq!(s.add(None, &cart, "PR-1", 3).expect(200)["discount_total"]["amount"], 0);
    // Switched off: the public list shows it no more; staff still see it.
    assert_eq!(s.get("/v1/promotions").send().expect(200)["data"], json!([]));
    let all = s.get("/v1/promotions").bearer(&admin).send().expect(200);
    assert_eq!(all["data"][0]["active"], false);
    let bad =
        s.post("/v1/promotions").bearer(&admin).json(json!({"name": "x", "buy": 0, "get": 1}));
    assert_eq!(bad.send().invalid_fields(), ["buy"]);
    s.patch("/v1/promotions/promo_zz")
        .bearer(&admin)
        .json(json!({}))
        .send()
        .problem(404, "not_found");
}
