//! A flash sale over HTTP: 500 clients, each with its own connection, race for the 50
//! units of one SKU. Each opens a guest cart and adds one unit; then all check out at
//! once (a barrier releases them together). Exactly 50 orders are placed, everyone else
//! is told `out_of_stock`, nothing answers 5xx, and the stock levels add up afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;
use std::thread;

use serde_json::{json, Value};

use crate::http_support::*;

const CLIENTS: usize = 500;
const UNITS: u64 = 50;
const SKU: &str = "FLASH-1";
/// Each client thread needs little stack: it only runs a blocking HTTP client.
const CLIENT_STACK_BYTES: usize = 512 * 1024;

/// What one client saw.
enum Outcome {
    /// Opening the cart or adding the unit failed: what happened.
    SetupFailed(String),
    /// The checkout's status and body.
    Checkout(u16, Value),
}

/// One shopper: a cart with one unit, then, with everyone else, the checkout. Whatever
/// happens before the barrier, it still waits there, so one failure cannot leave the
/// others waiting forever.
fn shopper(s: &TestServer, i: usize, start: &Barrier) -> Outcome {
    let agent = agent();
    let setup = (|| {
        let cart = s.post("/v1/carts").via(&agent).try_send().map_err(|e| e.to_string())?;
        if cart.status != 201 {
            return Err(format!("opening the cart: {cart}"));
        }
        let id = text(&cart.json, "id").to_string();
        let added = s
            .post(&format!("/v1/carts/{id}/items"))
            .via(&agent)
            .json(json!({"sku": SKU, "quantity": 1}))
            .try_send()
            .map_err(|e| e.to_string())?;
        if added.status != 200 {
            return Err(format!("adding the unit: {added}"));
        }
        Ok(id)
    })();
    start.wait();
    let cart = match setup {
        Ok(cart) => cart,
        Err(error) => return Outcome::SetupFailed(error),
    };
    let checkout = s
        .post(&format!("/v1/carts/{cart}/checkout"))
        .via(&agent)
        .key(&format!("flash-{i}"))
        .json(json!({"email": format!("shopper{i}@example.com")}))
        .try_send();
    match checkout {
        Ok(answer) => Outcome::Checkout(answer.status, answer.json),
        Err(error) => Outcome::SetupFailed(format!("the checkout did not get an answer: {error}")),
    }
}

#[test]
fn five_hundred_clients_race_for_fifty_units() {
    let s = TestServer::with(|c| {
        c.reads_concurrency_max = 4 * CLIENTS;
        c.writes_concurrency_max = 4 * CLIENTS;
    });
    let admin = s.admin();
    s.product(&admin, SKU, 4999, UNITS as i64);
    let start = Barrier::new(CLIENTS);
    let outcomes: Vec<Outcome> = thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (s, start) = (&s, &start);
                thread::Builder::new()
                    .stack_size(CLIENT_STACK_BYTES)
                    .spawn_scoped(scope, move || shopper(s, i, start))
                    .expect("a client thread starts")
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a client thread ends")).collect()
    });

    let mut failures = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut orders = BTreeSet::new();
    for outcome in &outcomes {
        match outcome {
            Outcome::SetupFailed(error) => failures.push(error.clone()),
            Outcome::Checkout(status, body) => {
                *statuses.entry(*status).or_default() += 1;
                match status {
                    201 => {
                        assert_eq!(body["status"], "pending_payment", "{body}");
                        orders.insert(text(body, "id").to_string());
                    }
                    409 => {
                        assert_eq!(body["code"], "out_of_stock", "{body}");
                        let short = json!([{"sku": SKU, "requested": 1, "available": 0}]);
                        assert_eq!(body["errors"], short, "{body}");
                    }
                    _ => failures.push(format!("checkout answered {status}: {body}")),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} clients failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    let expected = BTreeMap::from([(201, UNITS as usize), (409, CLIENTS - UNITS as usize)]);
    assert_eq!(statuses, expected, "checkout statuses");
    assert_eq!(orders.len(), UNITS as usize, "every placed order is a different one");

    assert_eq!(s.stock(&admin, SKU), (UNITS, UNITS, 0));
    let staff = s.user(&admin, "flash-staff@example.com", "staff");
    assert_eq!(s.stock(&staff.token, SKU), (UNITS, UNITS, 0));
    let listed =
        s.get("/v1/orders?status=pending_payment&limit=100").bearer(&admin).send().expect(200);
    let listed: BTreeSet<String> = listed["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|o| text(o, "id").to_string())
        .collect();
    assert_eq!(listed, orders, "the orders list holds exactly the placed orders");
}
