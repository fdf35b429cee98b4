//! Power loss: the crash test again, on a file system that loses what was not synced.
//!
//! SIGKILL leaves the operating system's page cache intact, so a write that was never
//! synced survives a process crash; only a power cut shows it missing. Here the crash
//! child runs on `lossyfs` (`tests/src/bin/lossyfs.rs`, an in-memory FUSE file system):
//! after each kill, every unsynced file write, directory entry, rename and unlink is
//! undone, sometimes leaving a torn prefix of the last unsynced write, and the directory
//! is then reopened and checked against every acknowledged command.
//!
//! Shown to fail: with `EMPORIUM_CRASH_UNSYNCED_LOG=1` the child's committer writes the
//! log without syncing it, and this test reports acknowledged orders missing.
//!
//! `EMPORIUM_POWER_LOSS_CYCLES` (default 10) and `EMPORIUM_POWER_LOSS_SEED` as for the
//! crash test. FUSE is required (`/dev/fuse` and `fusermount3`, which `scripts/setup`
//! installs): without it the test fails and says so, unless
//! `EMPORIUM_POWER_LOSS=skip` is set, which makes it print that it proved nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::crash::{crash_cycles, env_or};
use crate::http_support::{TestServer, PASSWORD};

/// Whether the power-loss tests were told to skip (they then say they proved nothing).
fn skipped() -> bool {
    let skip = std::env::var("EMPORIUM_POWER_LOSS").as_deref() == Ok("skip");
    if skip {
        eprintln!("power-loss test SKIPPED (EMPORIUM_POWER_LOSS=skip): it proved nothing");
    }
    skip
}

#[test]
fn acknowledged_commands_survive_power_loss() {
    if skipped() {
        return;
    }
    let cycles: usize = env_or("EMPORIUM_POWER_LOSS_CYCLES", 10);
    let seed: u64 = env_or("EMPORIUM_POWER_LOSS_SEED", rand::random());
    eprintln!("power-loss test: {cycles} cycles, EMPORIUM_POWER_LOSS_SEED={seed}");
    let work = tempfile::tempdir().unwrap();
    let mut fs = LossyFs::mount(&work.path().join("mnt"));
    let data = fs.mountpoint.join("data");
    let mut torn_total = 0;
    crash_cycles(&data, cycles, seed, &mut |rng| {
        let (files, torn) = fs.lose_power(rng.random(), rng.random_bool(0.5));
        torn_total += usize::from(torn);
        format!(", power lost ({files} files reverted{})", if torn { ", one torn" } else { "" })
    });
    eprintln!("power-loss test: {torn_total} torn writes across {cycles} cycles");
}

/// The server on the power-losing file system: a child process under keyed HTTP load
/// (guest cart items, checkouts and payments; flash-sale purchases and their payments
/// by a signed-in buyer; the admin's products, stock adjustments and categories; each
/// with an `Idempotency-Key`) is SIGKILLed, the power is cut, and the restarted server
/// must replay every acknowledged keyed request with the same answer (so a retry after
/// the crash is safe), with paid orders paid, and the sale's units counted once: what
/// it says is reserved and sold is what the buyer's pending and paid orders hold.
/// `EMPORIUM_SERVER_POWER_LOSS_CYCLES` sets the cycles (default 5).
#[test]
fn acknowledged_requests_survive_server_power_loss() {
    if skipped() {
        return;
    }
    let cycles: usize = env_or("EMPORIUM_SERVER_POWER_LOSS_CYCLES", 5);
    let seed: u64 = env_or("EMPORIUM_POWER_LOSS_SEED", rand::random());
    eprintln!("server power-loss test: {cycles} cycles, EMPORIUM_POWER_LOSS_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let work = tempfile::tempdir().unwrap();
    let mut fs = LossyFs::mount(&work.path().join("mnt"));
    let data = fs.mountpoint.join("data");
    let mut acked: Vec<Keyed> = Vec::new();
    for cycle in 0..=cycles {
        // The search index is a derived view, and the lossy file system serves no memory
        // maps: it lives on the ordinary disk beside the mount.
        let mut server = ServerChild::start(&data, &work.path().join("search"));
        let s = TestServer::remote(&server.url);
        let admin = s.admin();
        if cycle == 0 {
            s.product(&admin, "PL-1", 700, 1_000_000);
            s.product(&admin, "PL-SALE", 700, 1_000_000);
            s.register(BUYER);
            let now = emporium_server::app::now_ms();
            let sale = json!({
                "sku": "PL-SALE", "price": {"amount": 350, "currency": "USD"},
                "quantity": 500_000, "per_customer_limit": 500_000,
                "starts_at": emporium_server::wire::rfc3339(now - 1000),
                "ends_at": emporium_server::wire::rfc3339(now + 24 * 3_600_000),
            });
            s.post("/v1/flash-sales").bearer(&admin).json(sale).send().expect(201);
        }
        let buyer = s.password_grant(BUYER, PASSWORD).expect(200)["access_token"]
            .as_str()
            .expect("a token")
            .to_string();
        let sale = s.get("/v1/flash-sales").send().expect(200)["data"][0]["id"]
            .as_str()
            .expect("the sale")
            .to_string();
        let callers = Callers { admin: &admin, buyer: &buyer };
        let replayed = verify_replays(&s, &callers, &acked, cycle);
        verify_sale(&s, &buyer, &sale, cycle);
        if cycle == cycles {
            break;
        }
        let kill_after = Duration::from_millis(rng.random_range(20..300));
        let new = Mutex::new(Vec::new());
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for worker in 0..3 {
                let (s, new, stop) = (&s, &new, &stop);
                scope.spawn(move || shop(s, &format!("c{cycle}w{worker}"), stop, new));
            }
            let (s, new, stop, admin) = (&s, &new, &stop, &admin);
            scope.spawn(move || administer(s, admin, &format!("c{cycle}a"), stop, new));
            let (buyer, sale) = (&buyer, &sale);
            scope.spawn(move || buy(s, buyer, sale, &format!("c{cycle}b"), stop, new));
            std::thread::sleep(kill_after);
            server.kill();
            stop.store(true, Ordering::Release);
        });
        let new = new.into_inner().unwrap();
        let (files, torn) = fs.lose_power(rng.random(), rng.random_bool(0.5));
        eprintln!(
            "cycle {cycle}: {replayed} replays checked, killed after {kill_after:?} with {} new \
             acks, power lost ({files} files reverted{})",
            new.len(),
            if torn { ", one torn" } else { "" }
        );
        acked.extend(new);
    }
    assert!(acked.len() > cycles, "too little was acknowledged to prove anything");
}

/// The buyer in the flash sale.
const BUYER: &str = "power-buyer@example.com";

/// Who sends a keyed request (keys are scoped by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Guest,
    Admin,
    Buyer,
}

/// The tokens of this cycle.
struct Callers<'a> {
    admin: &'a str,
    buyer: &'a str,
}

impl Callers<'_> {
    fn token(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::Guest => None,
            Caller::Admin => Some(self.admin),
            Caller::Buyer => Some(self.buyer),
        }
    }
}

/// A keyed request that was answered with a success.
struct Keyed {
    /// Who sent it.
    caller: Caller,
    path: String,
    key: String,
    body: Value,
    status: u16,
    answer: Value,
}

/// Buys until `stop`: a guest cart, an item, a keyed checkout, and for every
/// other order a keyed payment. Records each keyed success; returns at the first
/// transport error (the server was killed).
fn shop(s: &TestServer, name: &str, stop: &AtomicBool, acked: &Mutex<Vec<Keyed>>) {
    let keyed = |path: String, key: String, body: Value| {
        send_keyed(s, (Caller::Guest, None), acked, path, key, body)
    };
    for n in 0.. {
        if stop.load(Ordering::Acquire) {
            return;
        }
        // A guest's cart creation takes no key (an anonymous key is honoured only on a path
        // naming what the caller holds), so only the checkout and payment are keyed.
        let Ok(cart) = s.post("/v1/carts").json(json!({})).try_send() else { return };
        let cart = cart.expect(201)["id"].as_str().unwrap().to_string();
        let item = json!({"sku": "PL-1", "quantity": 1 + n % 3});
        let path = format!("/v1/carts/{cart}/items");
        if keyed(path, format!("{name}-{n}-item"), item).is_none() {
            return;
        }
        let email = json!({"email": "power@example.com"});
        let path = format!("/v1/carts/{cart}/checkout");
        let Some(order) = keyed(path, format!("{name}-{n}-checkout"), email) else { return };
        if !pay_every_other(&keyed, &format!("{name}-{n}"), n, &order) {
            return;
        }
    }
}

/// Pays for `order` with a key of its own (`KEY-pay`) when `n` is even; `false` when the
/// server was killed.
fn pay_every_other(
    keyed: &dyn Fn(String, String, Value) -> Option<Value>,
    key: &str,
    n: usize,
    order: &Value,
) -> bool {
    if !n.is_multiple_of(2) {
        return true;
    }
    let order = order["id"].as_str().unwrap();
    let card = json!({"method": "test_card", "token": "tok_visa"});
    keyed(format!("/v1/orders/{order}/payments"), format!("{key}-pay"), card).is_some()
}

/// Sends a keyed POST as `caller` with its token; records a success, `None` on a
/// transport error (the server was killed).
fn send_keyed(
    s: &TestServer,
    (caller, token): (Caller, Option<&str>),
    acked: &Mutex<Vec<Keyed>>,
    path: String,
    key: String,
    body: Value,
) -> Option<Value> {
    let answer = s.post(&path).auth(token).key(&key).json(body.clone()).try_send().ok()?;
    assert!(answer.status < 300, "{path}: {answer}");
    let (status, json) = (answer.status, answer.json);
    let record = Keyed { caller, path, key, body, status, answer: json.clone() };
    acked.lock().unwrap().push(record);
    Some(json)
}

/// The admin's keyed writes until `stop`: a product, a stock adjustment, a category.
fn administer(
    s: &TestServer,
    admin: &str,
    name: &str,
    stop: &AtomicBool,
    acked: &Mutex<Vec<Keyed>>,
) {
    let keyed = |path: &str, key: String, body: Value| {
        send_keyed(s, (Caller::Admin, Some(admin)), acked, path.to_string(), key, body)
    };
    for n in 0.. {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let product = crate::http_support::product_body(&format!("{name}-{n}"), 900);
        let adjustment = json!({"delta": 1, "reason": "received"});
        let category = json!({"name": format!("{name} {n}")});
        let done = keyed("/v1/products", format!("{name}-{n}-product"), product).is_some()
            && keyed("/v1/inventory/PL-1/adjustments", format!("{name}-{n}-adjust"), adjustment)
                .is_some()
            && keyed("/v1/categories", format!("{name}-{n}-category"), category).is_some();
        if !done {
            return;
        }
    }
}

/// The buyer's keyed purchases in the sale until `stop`, every other one paid.
fn buy(
    s: &TestServer,
    buyer: &str,
    sale: &str,
    name: &str,
    stop: &AtomicBool,
    acked: &Mutex<Vec<Keyed>>,
) {
    let keyed = |path: String, key: String, body: Value| {
        send_keyed(s, (Caller::Buyer, Some(buyer)), acked, path, key, body)
    };
    for n in 0.. {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let path = format!("/v1/flash-sales/{sale}/purchases");
        let units = json!({"quantity": 1 + n % 2});
        let Some(order) = keyed(path, format!("{name}-{n}-buy"), units) else { return };
        if !pay_every_other(&keyed, &format!("{name}-{n}"), n, &order) {
            return;
        }
    }
}

/// The sale counts each unit once: its `reserved` and `sold` are the units of the
/// buyer's pending and paid orders (the only buyer), and with `remaining` they make
/// up its quantity.
fn verify_sale(s: &TestServer, buyer: &str, sale: &str, cycle: usize) {
    let (mut pending, mut paid) = (0, 0);
    let mut cursor = String::new();
    loop {
        let page = s
            .get(&format!("/v1/customers/me/orders?limit=100{cursor}"))
            .bearer(buyer)
            .send()
            .expect(200);
        for order in page["data"].as_array().expect("a list") {
            let units = order["items"][0]["quantity"].as_u64().expect("units");
            match order["status"].as_str() {
                Some("pending_payment") => pending += units,
                Some("paid") => paid += units,
                other => panic!("cycle {cycle}: a buyer's order is {other:?}"),
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let sale = s.get(&format!("/v1/flash-sales/{sale}")).send().expect(200);
    let count = |field: &str| sale[field].as_u64().expect("a count");
    assert_eq!(
        (count("reserved"), count("sold")),
        (pending, paid),
        "cycle {cycle}: the sale against the buyer's orders: {sale}"
    );
    assert_eq!(count("remaining") + pending + paid, count("quantity"), "cycle {cycle}: {sale}");
}

/// Every acknowledged keyed request, sent again with its key and body, gets the same
/// answer, marked as replayed; every acknowledged payment left its order paid.
fn verify_replays(s: &TestServer, callers: &Callers<'_>, acked: &[Keyed], cycle: usize) -> usize {
    for keyed in acked {
        let token = callers.token(keyed.caller);
        let again = s.post(&keyed.path).auth(token).key(&keyed.key).json(keyed.body.clone()).send();
        let what = format!("cycle {cycle}: {} with key {}", keyed.path, keyed.key);
        assert_eq!(again.status, keyed.status, "{what}: {again}");
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{what}: {again}");
        assert_eq!(again.json["id"], keyed.answer["id"], "{what}");
        if keyed.path.ends_with("/payments") {
            let order =
                keyed.answer["order_id"].as_str().map(str::to_string).unwrap_or_else(|| {
                    keyed
                        .path
                        .trim_start_matches("/v1/orders/")
                        .trim_end_matches("/payments")
                        .into()
                });
            let now = s.get(&format!("/v1/orders/{order}")).auth(token).send().expect(200);
            assert_eq!(now["status"], "paid", "{what}: the paid order is {}", now["status"]);
        }
    }
    acked.len()
}

/// The server child, killed on drop.
pub(crate) struct ServerChild {
    process: Child,
    pub(crate) url: String,
}

impl ServerChild {
    pub(crate) fn start(data: &Path, search: &Path) -> ServerChild {
        ServerChild::start_with(data, search, &[])
    }

    /// With these environment variables set.
    pub(crate) fn start_with(data: &Path, search: &Path, env: &[(&str, &str)]) -> ServerChild {
        let mut process = Command::new(env!("CARGO_BIN_EXE_server-child"))
            .arg(data)
            .arg(search)
            .envs(env.iter().copied())
            .env("EMPORIUM_ADMIN_EMAIL", crate::http_support::ADMIN_EMAIL)
            .env("EMPORIUM_ADMIN_PASSWORD", crate::http_support::ADMIN_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start server-child");
        let mut line = String::new();
        BufReader::new(process.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("LISTENING ").unwrap_or_else(|| {
            panic!("server-child did not start: {line:?}");
        });
        ServerChild { url: url.to_string(), process }
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A mounted `lossyfs`, unmounted on drop.
struct LossyFs {
    mountpoint: PathBuf,
    process: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl LossyFs {
    /// Mounts a fresh file system on `mountpoint` (created); fails the test, saying why,
    /// where FUSE is unavailable.
    fn mount(mountpoint: &Path) -> LossyFs {
        std::fs::create_dir_all(mountpoint).unwrap();
        let mut process = Command::new(env!("CARGO_BIN_EXE_lossyfs"))
            .arg(mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lossyfs");
        let commands = process.stdin.take().unwrap();
        let mut answers = BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        if line.trim() != "mounted" {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut process.stderr.take().unwrap(), &mut stderr);
            let _ = process.wait();
            panic!(
                "the power-loss test needs FUSE (/dev/fuse and fusermount3, installed by \
                 scripts/setup); lossyfs could not mount: {stderr}\\nSet \
                 EMPORIUM_POWER_LOSS=skip to run the rest of the suite without it."
            );
        }
        LossyFs { mountpoint: mountpoint.to_path_buf(), process, commands, answers }
    }

    /// Cuts the power: every unsynced change is lost (a write torn with `tear`).
    /// Returns the files reverted and whether a write was torn.
    fn lose_power(&mut self, seed: u64, tear: bool) -> (usize, bool) {
        writeln!(self.commands, "crash {seed} {}", u8::from(tear)).unwrap();
        let mut line = String::new();
        self.answers.read_line(&mut line).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["crashed", files, torn] => (files.parse().unwrap(), *torn == "true"),
            _ => panic!("lossyfs answered {line:?}"),
        }
    }
}

impl Drop for LossyFs {
    fn drop(&mut self) {
        let _ = writeln!(self.commands, "exit");
        if self.process.wait().is_err() || is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.mountpoint).status();
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|mounts| mounts.lines().any(|l| l.split(' ').nth(1) == path.to_str()))
        .unwrap_or(false)
}
