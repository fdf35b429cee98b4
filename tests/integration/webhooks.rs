//! Webhooks against a real HTTP receiver on loopback that answers, fails, hangs past
//! the delivery timeout and recovers: every record of the chosen types arrives at least
//! once (or waits in the dead letters until redelivered), in log order, with a valid
//! signature; the retries back off, the breaker opens; an address check refuses
//! loopback unless allowed; and a SIGKILL of the server mid-delivery loses nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::http_support::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Take,
    Fail,
    /// Answers nothing for two seconds (past the delivery timeout).
    Hang,
    /// Takes each delivery after 40 ms.
    Slow,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
    taken: bool,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn event_id(&self) -> String {
        self.headers["emporium-event-id"].clone()
    }
}

/// An HTTP/1.1 receiver on a free loopback port, one thread per connection.
#[derive(Clone)]
struct Receiver {
    url: String,
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/emporium?src=test", listener.local_addr().unwrap());
        let receiver = Receiver {
            url,
            mode: Arc::new(Mutex::new(Mode::Take)),
            got: Arc::new(Mutex::new(Vec::new())),
        };
        let serving = receiver.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let serving = serving.clone();
                std::thread::spawn(move || serving.serve(stream));
            }
        });
        receiver
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut headers = HashMap::new();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
            let length: usize = headers.get("content-length").map_or(0, |l| l.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mode = *self.mode.lock().unwrap();
            let at = Instant::now();
            let answer: &[u8] = match mode {
                Mode::Take => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                Mode::Slow => {
                    std::thread::sleep(Duration::from_millis(40));
                    b"HTTP/1.1 204 No Content\r\n\r\n"
                }
                Mode::Fail => b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
                Mode::Hang => {
                    self.got.lock().unwrap().push(Delivery { headers, body, at, taken: false });
                    std::thread::sleep(Duration::from_secs(2));
                    return;
                }
            };
            // Taken only once the answer is out: a delivery cut short by a kill was
            // not taken, and must come again.
            let sent = stream.write_all(answer).and_then(|()| stream.flush()).is_ok();
            let taken = sent && matches!(mode, Mode::Take | Mode::Slow);
            self.got.lock().unwrap().push(Delivery { headers, body, at, taken });
            if !sent {
                return;
            }
        }
    }

    /// What the receiver got, in the order the requests arrived. Each connection's
    /// thread records a delivery once it has answered it, and the sender may send the
    /// next one, on another connection, before that: the records' own order can differ.
    fn deliveries(&self) -> Vec<Delivery> {
        let mut got = self.got.lock().unwrap().clone();
        got.sort_by_key(|d| d.at);
        got
    }

    /// Waits until `done` holds of the deliveries.
    fn wait(&self, what: &str, done: impl Fn(&[Delivery]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(&self.deliveries()) {
            assert!(Instant::now() < deadline, "the receiver never got {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Checks a delivery's signature as a receiver would: HMAC-SHA256 of "t.body".
fn check_signature(delivery: &Delivery, secret: &str) {
    let header = &delivery.headers["emporium-signature"];
    let (t, v1) = header.split_once(",v1=").expect("t=…,v1=…");
    let t = t.strip_prefix("t=").expect("t=");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&delivery.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, expected, "the signature of {}", delivery.event_id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let age = now.as_secs() as i64 - t.parse::<i64>().unwrap();
    assert!((-5..300).contains(&age), "a fresh timestamp: {age} s");
}

/// The LSN and index of a record id `evt_LSN_I`.
fn position(event_id: &str) -> (u64, u64) {
    let mut parts = event_id.trim_start_matches("evt_").split('_');
    (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap())
}

fn create(s: &TestServer, admin: &str, url: &str) -> Value {
    let body = json!({"url": url, "events": ["product.created", "order.placed"]});
    s.post("/v1/admin/webhooks").bearer(admin).json(body).send().expect(201)
}

fn product_body(sku: &str) -> Value {
    json!({
        "title": format!("Hooked {sku}"),
        "status": "active",
        "variants": [{"sku": sku, "price": {"amount": 500, "currency": "USD"}}]
    })
}

fn new_product(s: &TestServer, admin: &str, sku: &str) -> String {
    let created = s.post("/v1/products").bearer(admin).json(product_body(sku)).send().expect(201);
    created["id"].as_str().unwrap().to_string()
}

#[test]
fn deliveries_are_signed_ordered_retried_broken_and_dead_lettered() {
    let receiver = Receiver::start();
    let s = TestServer::with(|c| {
        c.webhooks.allow_private = true;
        c.webhooks.timeout_ms = 300;
        c.webhooks.attempts_max = 4;
        c.webhooks.backoff_ms = 40;
        c.webhooks.breaker_ms = 500;
    });
    let admin = s.admin();
    let webhook = create(&s, &admin, &receiver.url);
    let (id, secret) = (webhook["id"].as_str().unwrap(), webhook["secret"].as_str().unwrap());
    assert!(secret.len() >= 32, "{webhook}");
    let hook = format!("/v1/admin/webhooks/{id}");
    // The secret is shown once.
    assert!(s.get(&hook).bearer(&admin).send().expect(200).get("secret").is_none());

    // Taken at once.
    let first = new_product(&s, &admin, "HOOK-1");
    receiver.wait("the first record", |d| d.iter().any(|d| d.taken));
    let delivery = receiver.deliveries()[0].clone();
    check_signature(&delivery, secret);
    let record = delivery.json();
    assert_eq!(
        (&record["type"], &record["data"]["product_id"]),
        (&json!("product.created"), &json!(first))
    );
    assert_eq!(delivery.headers["emporium-event-type"], "product.created");
    assert_eq!(delivery.headers["emporium-webhook-id"], id);
    assert_eq!(delivery.headers["content-type"], "application/json");

    // Failing: each record is tried 4 times, backing off, then dead-lettered; after 5
    // failures in a row the breaker opens and holds the attempts.
    receiver.set(Mode::Fail);
    let failed: Vec<String> =
        ["HOOK-2", "HOOK-3"].iter().map(|sku| new_product(&s, &admin, sku)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_open = false;
    loop {
        let status = s.get(&hook).bearer(&admin).send().expect(200);
        saw_open |= status["delivery"]["breaker"] == "open";
        if status["delivery"]["dead_lettered"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never dead-lettered: {status}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(saw_open, "the breaker opened");
    let tries: Vec<Delivery> = receiver.deliveries().into_iter().filter(|d| !d.taken).collect();
    assert_eq!(tries.len(), 8, "four attempts of each of two records");
    let second = tries[0].event_id();
    assert!(tries[..4].iter().all(|d| d.event_id() == second), "one record at a time");
    // The waits double: at least half of 40, 80 and 160 ms (jitter takes up to half).
    for (i, pair) in tries[..4].windows(2).enumerate() {
        let waited = pair[1].at - pair[0].at;
        assert!(waited >= Duration::from_millis(20 << i), "wait {i}: {waited:?}");
    }
    // Five failures in a row opened the breaker: the next attempt waited out its 500 ms.
    assert!(tries[5].at - tries[4].at >= Duration::from_millis(450), "the breaker held");

    // Hanging past the timeout fails too.
    receiver.set(Mode::Hang);
    new_product(&s, &admin, "HOOK-4");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = s.get(&format!("{hook}/deliveries")).bearer(&admin).send().expect(200);
        let timed_out =
            history["data"][0]["error"].as_str().is_some_and(|e| e.starts_with("no answer in"));
        if timed_out {
            break;
        }
        assert!(Instant::now() < deadline, "no timeout recorded: {history}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Recovered: what follows is taken, in log order.
    receiver.set(Mode::Take);
    let later = s.product(&admin, "HOOK-5", 500, 10)["id"].as_str().unwrap().to_string();
    let order = s.order(None, "HOOK-5", 1);
    let placed = order["id"].as_str().unwrap().to_string();
    receiver.wait("the order", |d| {
        d.iter().any(|d| d.taken && d.json()["data"]["order_id"] == json!(placed))
    });
    let letters = s.get(&format!("{hook}/dead-letters")).bearer(&admin).send().expect(200);
    let letters = letters["data"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["attempts"], 4);
    let dead: Vec<String> = letters
        .iter()
        .map(|l| serde_json::from_str::<Value>(l["body"].as_str().unwrap()).unwrap())
        .map(|r| r["data"]["product_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dead, failed);
    // Redelivered by hand, the dead letters are taken and dropped.
    for letter in &letters {
        let path = format!("{hook}/dead-letters/{}/redeliver", letter["id"].as_str().unwrap());
        s.post(&path).bearer(&admin).send().expect(200);
        s.post(&path).bearer(&admin).send().problem(404, "not_found");
    }
    let left = s.get(&format!("{hook}/dead-letters")).bearer(&admin).send().expect(200);
    assert_eq!(left["data"], json!([]));

    // Every record of the chosen types was taken at least once, each with a valid
    // signature; the ones the follower sent were taken in log order.
    let feed = s
        .get("/v1/events?types=product.created,order.placed&limit=1000")
        .bearer(&admin)
        .send()
        .expect(200);
    let wanted: Vec<String> = feed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let taken: Vec<Delivery> = receiver.deliveries().into_iter().filter(|d| d.taken).collect();
    for delivery in &taken {
        check_signature(delivery, secret);
    }
    let mut first_taken: BTreeMap<String, usize> = BTreeMap::new();
    for (i, d) in taken.iter().enumerate() {
        first_taken.entry(d.event_id()).or_insert(i);
    }
    for id in &wanted {
        assert!(first_taken.contains_key(id), "{id} was never taken: {wanted:?}");
    }
    let redelivered: Vec<String> =
        taken[taken.len() - 2..].iter().map(Delivery::event_id).collect();
    let in_order: Vec<(u64, u64)> =
        taken[..taken.len() - 2].iter().map(|d| position(&d.event_id())).collect();
    assert!(in_order.windows(2).all(|w| w[0] < w[1]), "in log order: {in_order:?}");
    assert!(!redelivered.is_empty());
    assert!(taken.iter().any(|d| d.json()["data"]["product_id"] == json!(later)));

    // Bad input; the caller must be ops:admin.
    let post = |body: Value| s.post("/v1/admin/webhooks").bearer(&admin).json(body).send();
    let bad = post(json!({"url": "ftp://example.com/x", "events": ["order.placed"]}));
    assert_eq!(bad.invalid_fields(), ["url"]);
    let bad = post(json!({"url": "https://example.com/x", "events": ["order.lost"]}));
    assert_eq!(bad.invalid_fields(), ["events[0]"]);
    let bad = post(json!({"url": "https://example.com/x", "events": []}));
    assert_eq!(bad.invalid_fields(), ["events"]);
    let shopper = s.register("hooks@example.com");
    let body = json!({"url": "https://example.com/x", "events": ["order.placed"]});
    s.post("/v1/admin/webhooks").json(body.clone()).send().problem(401, "unauthenticated");
    s.post("/v1/admin/webhooks").bearer(&shopper.token).json(body).send().problem(403, "forbidden");

    // Deleted: nothing more is sent. A second webhook to the same receiver gets the
    // next record; by then the deleted one would have sent it too.
    let witness = create(&s, &admin, &receiver.url);
    let witness = witness["id"].as_str().unwrap().to_string();
    s.delete(&hook).bearer(&admin).send().expect(204);
    s.get(&hook).bearer(&admin).send().problem(404, "not_found");
    let before = receiver.deliveries().len();
    let last = new_product(&s, &admin, "HOOK-6");
    let from_witness = |d: &Delivery| d.headers["emporium-webhook-id"] == witness;
    receiver.wait("the witness's record", |d| {
        d.iter().any(|d| from_witness(d) && d.json()["data"]["product_id"] == json!(last))
    });
    let after = receiver.deliveries();
    assert!(after[before..].iter().all(from_witness), "the deleted webhook sent more");
}

#[test]
fn deliveries_to_loopback_are_refused_unless_allowed() {
    let receiver = Receiver::start();
    let s = TestServer::with(|c| {
        c.webhooks.attempts_max = 1;
        c.webhooks.backoff_ms = 10;
    });
    let admin = s.admin();
    // An address written in the URL is checked when the webhook is made.
    let loopback_forms = ["http://127.1/x", "http://2130706433/x", "http://0x7f.0.0.1/x"];
    for url in [&receiver.url, "http://10.0.0.1/x", "https://[::1]:8443/x"]
        .into_iter()
        .chain(loopback_forms)
    {
        let body = json!({"url": url, "events": ["product.created"]});
        let refused = s.post("/v1/admin/webhooks").bearer(&admin).json(body).send();
        assert_eq!(refused.invalid_fields(), ["url"], "{url}");
    }
    // A name is resolved at each attempt: one that resolves to loopback is refused then.
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    assert_ne!(by_name, receiver.url);
    let webhook = create(&s, &admin, &by_name);
    let hook = format!("/v1/admin/webhooks/{}", webhook["id"].as_str().unwrap());
    new_product(&s, &admin, "SSRF-1");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let history = s.get(&format!("{hook}/deliveries")).bearer(&admin).send().expect(200);
        if let Some(error) = history["data"][0]["error"].as_str() {
            assert!(error.contains("no public address: refused"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempt recorded: {history}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(receiver.deliveries().is_empty(), "nothing reached the loopback receiver");
    for ip in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "192.0.0.8",
        "0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "fec0::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::a00:1",
        "64:ff9b:1::1",
        "2002:c0a8:101::1",
        "2001:0:4136:e378::1",
        "2001:db8::1",
    ] {
        assert!(!emporium_server::webhooks::public(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]
    {
        assert!(emporium_server::webhooks::public(ip.parse().unwrap()), "{ip}");
    }
}

#[test]
fn a_host_is_an_address_in_every_form_the_resolver_reads_as_one() {
    use emporium_server::webhooks::written_address;
    for (host, address) in [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("0177.0.0.01", "127.0.0.1"),
        ("10.0x10.0377", "10.16.0.255"),
        ("0", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("[::1]", "::1"),
        ("[::ffff:10.0.0.1]", "::ffff:10.0.0.1"),
    ] {
        assert_eq!(written_address(host), Some(address.parse().unwrap()), "{host}");
    }
    // Names, and numbers no resolver reads as an address (they go to the resolver at
    // each attempt like any name).
    for host in [
        "localhost",
        "example.com",
        "127.0.0.1.nip.io",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.65536",
        "4294967296",
        "08",
        "0x",
        "1..2",
        "127.0.0.1.",
        "",
        "[::1",
        "[example]",
    ] {
        assert_eq!(written_address(host), None, "{host}");
    }
}

#[test]
fn a_sigkill_mid_delivery_loses_no_record() {
    let receiver = Receiver::start();
    receiver.set(Mode::Slow);
    let work = tempfile::tempdir().unwrap();
    let (data, search) = (work.path().join("data"), work.path().join("search"));
    let env = [("EMPORIUM_WEBHOOK_BACKOFF_MS", "20")];
    let mut server = crate::power_loss::ServerChild::start_with(&data, &search, &env);
    let s = TestServer::remote(&server.url);
    let admin = s.admin();
    create(&s, &admin, &receiver.url);
    let mut products = Vec::new();
    let mut pending_at_kills = 0;
    for round in 0..3 {
        let s = TestServer::remote(&server.url);
        for i in 0..15 {
            products.push(new_product(&s, &admin, &format!("KILL-{round}-{i}")));
        }
        // Deliveries take 40 ms each: once one of this round's is taken, the kill
        // lands among the others.
        let round_taken = |d: &[Delivery]| {
            d.iter().any(|d| {
                d.taken && d.json()["data"]["title"] == json!(format!("Hooked KILL-{round}-0"))
            })
        };
        receiver.wait("the round's first record", round_taken);
        server.kill();
        let taken: std::collections::HashSet<Value> = receiver
            .deliveries()
            .iter()
            .filter(|d| d.taken)
            .map(|d| d.json()["data"]["product_id"].clone())
            .collect();
        pending_at_kills += products.iter().filter(|p| !taken.contains(&json!(p))).count();
        server = crate::power_loss::ServerChild::start_with(&data, &search, &env);
    }
    let got = |d: &[Delivery]| {
        let taken: std::collections::HashSet<Value> =
            d.iter().filter(|d| d.taken).map(|d| d.json()["data"]["product_id"].clone()).collect();
        products.iter().all(|p| taken.contains(&json!(p)))
    };
    assert!(pending_at_kills > 0, "the kills left records to deliver");
    receiver.wait("every product after the kills", got);
    // Each record was first taken in log order; some more than once (at least once).
    let mut first: Vec<(u64, u64)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for d in receiver.deliveries().iter().filter(|d| d.taken) {
        if seen.insert(d.event_id()) {
            first.push(position(&d.event_id()));
        }
    }
    assert!(first.windows(2).all(|w| w[0] < w[1]), "first deliveries in log order: {first:?}");
    drop(server);
}
