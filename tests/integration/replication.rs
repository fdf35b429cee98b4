//! Warm standbys as real processes on 127.0.0.1: a standby catches up from empty and
//! matches its primary table by table; SIGKILL of a strict synchronous primary under
//! checkout load loses no acknowledged order across promotions, cycle after cycle, and
//! the old primary rejoins; a cut link stops strict acknowledgements and an
//! asynchronous standby catches up after it; damaged, duplicated and reordered frames
//! are detected and resynchronised, never applied.
//!
//! Each node is a `node-child` process (the server library in `emporium serve
//! --replication-listen` or `emporium standby` form). Between a standby and its primary
//! a test may put a [`Proxy`] that pauses the link or damages frames.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::crash::env_or;
use crate::http_support::{TestServer, ADMIN_EMAIL, ADMIN_PASSWORD};

/// The kind byte of an Entries frame (`emporium_replication::protocol::ENTRIES`).
const ENTRIES: u8 = emporium_replication::protocol::ENTRIES;
/// The kind byte of a Welcome frame.
const WELCOME: u8 = emporium_replication::protocol::WELCOME;
/// Longest any wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// A port for a node to bind later, maybe seconds later (a standby binds its
/// replication address after its bootstrap), and again after a restart. A port the
/// kernel handed out for `:0` could meanwhile become the local port of any outgoing
/// connection; these come from below the ephemeral range (32768 and up on Linux), where
/// the kernel never picks one, and this process hands each out once.
fn free_addr() -> String {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if given.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            given.push(port);
            return listener.local_addr().expect("an address").to_string();
        }
    }
}

/// Polls `done` every 20 ms until it holds; fails the test after [`PATIENCE`].
fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_showing(what, done, String::new);
}

/// [`wait_for`], and a failure after [`PATIENCE`] shows `context` (a node's log).
fn wait_showing(what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One node process.
struct Node {
    child: Mutex<Option<Child>>,
    http: String,
    repl: String,
    dir: PathBuf,
    name: String,
}

impl Node {
    fn primary(dir: &Path, name: &str, sync: usize, policy: &str) -> Node {
        let (http, repl) = (free_addr(), free_addr());
        let mut node =
            Node { child: Mutex::new(None), http, repl, dir: dir.into(), name: name.into() };
        let args = ["primary", &node.dir_arg(), &node.http, &node.repl, &sync.to_string(), policy];
        node.spawn(args.iter().map(|a| a.to_string()).collect());
        node
    }

    fn standby(dir: &Path, name: &str, primary: &str, sync: usize, policy: &str) -> Node {
        let (http, repl) = (free_addr(), free_addr());
        let mut node =
            Node { child: Mutex::new(None), http, repl, dir: dir.into(), name: name.into() };
        node.follow(primary, sync, policy);
        node
    }

    /// Starts this node's process again, as a standby of `primary`, on the same
    /// directory and addresses.
    fn follow(&mut self, primary: &str, sync: usize, policy: &str) {
        let args = [
            "standby",
            &self.dir_arg(),
            &self.http,
            &self.repl,
            primary,
            &self.name,
            &sync.to_string(),
            policy,
        ];
        self.spawn(args.iter().map(|a| a.to_string()).collect());
    }

    fn dir_arg(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn spawn(&mut self, args: Vec<String>) {
        std::fs::create_dir_all(&self.dir).expect("the node's directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_node-child"))
            .args(args)
            .env("EMPORIUM_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("EMPORIUM_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("EMPORIUM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start node-child");
        *self.child.get_mut().unwrap() = Some(child);
    }

    fn client(&self) -> TestServer {
        TestServer::remote(&format!("http://{}", self.http))
    }

    fn ready(&self) -> bool {
        matches!(self.client().get("/readyz").try_send(), Ok(r) if r.status == 200)
    }

    /// Waits for `/readyz`; a node that exits first, or is not ready after [`PATIENCE`],
    /// fails the test with its log.
    fn wait_ready(&self) {
        let ready = || {
            let exited = self.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok()?);
            assert!(exited.is_none(), "{} exited ({exited:?}):\n{}", self.name, self.log());
            self.ready()
        };
        wait_showing(&format!("{} to be ready", self.name), ready, || self.log());
    }

    /// SIGKILL: no drain, no sync beyond what was acknowledged.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.get_mut().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn replication(&self, admin: &str) -> Value {
        self.client().get("/v1/admin/replication").bearer(admin).send().expect(200)
    }

    fn durable_lsn(&self) -> u64 {
        self.client().durable_lsn()
    }

    fn digest(&self, admin: &str) -> Value {
        let digest = self.client().get("/v1/admin/digest").bearer(admin).send().expect(200);
        assert_eq!(digest["lsn_before"], digest["lsn_after"], "writes came in while digesting");
        digest
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `standby` holds everything `primary` made durable, then compares their
/// digests at that LSN.
fn converged(primary: &Node, standby: &Node, admin: &str) {
    wait_for(&format!("{} to catch up with {}", standby.name, primary.name), || {
        standby.durable_lsn() == primary.durable_lsn()
    });
    let (ours, theirs) = (primary.digest(admin), standby.digest(admin));
    assert_eq!(ours["lsn_after"], theirs["lsn_after"]);
    assert_eq!(ours["tables"], theirs["tables"], "{} and {} differ", primary.name, standby.name);
}

/// Starts guest checkouts on `node` from `threads` threads until `stop`; joined, the
/// ids of the orders the server acknowledged (201).
fn checkout_load(
    node: &Node,
    sku: &str,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (base, sku, stop) =
                (format!("http://{}", node.http), sku.to_string(), stop.clone());
            std::thread::spawn(move || {
                let client = TestServer::remote(&base);
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let Ok(cart) = client.post("/v1/carts").try_send() else { break };
                    if cart.status != 201 {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    let cart = cart.json["id"].as_str().expect("a cart id").to_string();
                    let line = json!({"sku": sku, "quantity": 1});
                    match client.post(&format!("/v1/carts/{cart}/items")).json(line).try_send() {
                        Ok(r) if r.status == 200 || r.status == 201 => {}
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                    let checkout = client
                        .post(&format!("/v1/carts/{cart}/checkout"))
                        .key(&format!("load-{t}-{n}"))
                        .json(json!({"email": format!("buyer{t}x{n}@example.com")}))
                        .try_send();
                    match checkout {
                        Ok(r) if r.status == 201 => {
                            acked.push(r.json["id"].as_str().expect("an order id").to_string())
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::spawn(move || {
        workers.into_iter().flat_map(|w| w.join().expect("a load thread")).collect()
    })
}

fn admin_token(node: &Node) -> String {
    node.client().admin()
}

#[test]
fn a_standby_catches_up_from_empty_under_writes_and_matches_its_primary() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Node::primary(&dir.path().join("a"), "a", 0, "strict");
    primary.wait_ready();
    let admin = admin_token(&primary);
    primary.client().product(&admin, "REPL-1", 1500, 1_000_000);
    let stop = Arc::new(AtomicBool::new(false));
    let load = checkout_load(&primary, "REPL-1", 2, stop.clone());
    // Enough entries before the standby starts that its checkpoint holds some of the
    // load, and enough after it that it follows the rest as it comes.
    let some_more = |node: &Node, entries: u64| {
        let from = node.durable_lsn();
        wait_for("the load to write", || node.durable_lsn() >= from + entries);
    };
    some_more(&primary, 150);
    // From empty, while the primary takes writes.
    let standby = Node::standby(&dir.path().join("b"), "b", &primary.repl, 0, "strict");
    standby.wait_ready();
    some_more(&primary, 300);
    stop.store(true, Ordering::Release);
    let acked = load.join().unwrap();
    assert!(!acked.is_empty(), "the load placed no order");
    converged(&primary, &standby, &admin);

    // The standby serves reads (an order, search, stock) and refuses every write.
    let order = &acked[acked.len() / 2];
    standby.client().get(&format!("/v1/orders/{order}")).bearer(&admin).send().expect(200);
    // Search is the standby's own index, built from the log it applied.
    wait_for("the standby's search index", || {
        standby.client().get("/v1/search?q=REPL-1").send().expect(200)["total"] == 1
    });
    let stock = standby.client().get("/v1/inventory/REPL-1").bearer(&admin).send().expect(200);
    assert_eq!(
        stock,
        primary.client().get("/v1/inventory/REPL-1").bearer(&admin).send().expect(200)
    );
    standby.client().post("/v1/carts").send().problem(503, "read_only_standby");
    standby
        .client()
        .post("/v1/auth/token")
        .form(&[
            ("grant_type", "password"),
            ("username", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
        ])
        .send()
        .problem(503, "read_only_standby");
    let status = standby.replication(&admin);
    assert_eq!(status["role"], "standby");
    assert_eq!(status["primary"]["connected"], true);
    assert_eq!(status["primary"]["bootstraps"], 1);
    let status = primary.replication(&admin);
    assert_eq!(status["standbys"][0]["id"], "b");
    assert_eq!(status["standbys"][0]["lag_lsn"], 0);
    let metrics = String::from_utf8(primary.client().get("/metrics").send().body).unwrap();
    assert!(metrics.contains("emporium_replication_standbys_connected 1"), "{metrics}");
}

#[test]
fn strict_synchronous_failover_loses_no_acknowledged_order_and_the_old_primary_rejoins() {
    let cycles: usize = env_or("EMPORIUM_FAILOVER_CYCLES", 3);
    let dir = tempfile::tempdir().unwrap();
    let mut primary = Node::primary(&dir.path().join("a"), "a", 1, "strict");
    // A strict primary's first writes (its key, its admin) wait for the standby.
    let mut standby = Node::standby(&dir.path().join("b"), "b", &primary.repl, 1, "strict");
    primary.wait_ready();
    standby.wait_ready();
    let admin = admin_token(&primary);
    primary.client().product(&admin, "FAIL-1", 900, 10_000_000);
    let mut all_acked = Vec::new();
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let killer = {
            let stop = stop.clone();
            let wait = Duration::from_millis(400 + rand::random::<u64>() % 800);
            std::thread::spawn(move || {
                std::thread::sleep(wait);
                stop.store(true, Ordering::Release);
            })
        };
        // The load runs until the kill: SIGKILL lands while requests are in flight.
        let load = checkout_load(&primary, "FAIL-1", 3, stop.clone());
        killer.join().unwrap();
        primary.kill();
        let acked = load.join().unwrap();
        assert!(!acked.is_empty(), "cycle {cycle}: no order was acknowledged");

        let promoted = standby.client().post("/v1/admin/promote").bearer(&admin).send().expect(200);
        assert_eq!(promoted["epoch"], cycle as u64 + 2, "cycle {cycle}");
        // Every order the dead primary acknowledged is on the new one.
        for order in &acked {
            let answer = standby.client().get(&format!("/v1/orders/{order}")).bearer(&admin).send();
            assert_eq!(answer.status, 200, "cycle {cycle}: acknowledged order {order} is lost");
        }
        eprintln!("cycle {cycle}: {} orders acknowledged, all on the new primary", acked.len());
        all_acked.extend(acked);

        // The old primary comes back as a standby of the new one and converges; with
        // it back, the strict new primary acknowledges writes again.
        std::mem::swap(&mut primary, &mut standby);
        standby.follow(&primary.repl, 1, "strict");
        standby.wait_ready();
        wait_for("the new primary to take writes with its standby back", || {
            primary.client().post("/v1/carts").send().status == 201
        });
        converged(&primary, &standby, &admin);
        let rejoined = standby.replication(&admin);
        eprintln!("cycle {cycle}: the old primary rejoined: {}", rejoined["primary"]);
    }
    for order in &all_acked {
        primary.client().get(&format!("/v1/orders/{order}")).bearer(&admin).send().expect(200);
    }
}

/// A TCP proxy between a standby and its primary that can hold everything (a cut
/// link that stays open) and damage frames from the primary: flip a byte, send one
/// twice, or swap two.
struct Proxy {
    addr: String,
    paused: Arc<AtomicBool>,
    /// Set: the next Welcome from the primary passes, then `paused` turns true.
    pause_after_welcome: Arc<AtomicBool>,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Corrupt,
    Duplicate,
    Swap,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap().to_string(),
            paused: Arc::default(),
            pause_after_welcome: Arc::default(),
            faults: Arc::default(),
            stop: Arc::default(),
        };
        let (upstream, paused, faults, stop) =
            (upstream.to_string(), proxy.paused.clone(), proxy.faults.clone(), proxy.stop.clone());
        let after_welcome = proxy.pause_after_welcome.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (p1, p2) = (paused.clone(), paused.clone());
                let (faults, after_welcome) = (faults.clone(), after_welcome.clone());
                std::thread::spawn(move || copy_raw(client, server, p1));
                std::thread::spawn(move || copy_frames(s2, c2, p2, faults, after_welcome));
            }
        });
        proxy
    }

    fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap().push_back(fault);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn hold(paused: &AtomicBool) {
    while paused.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn copy_raw(mut from: TcpStream, mut to: TcpStream, paused: Arc<AtomicBool>) {
    let mut buffer = [0; 16 << 10];
    loop {
        // An error ends the link as a close does.
        let n: usize = from.read(&mut buffer).unwrap_or_default();
        // A held link holds a close too: the other end learns of it only after.
        hold(&paused);
        if n == 0 {
            break;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn read_frame(from: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0; 4];
    from.read_exact(&mut len).ok()?;
    let mut frame = len.to_vec();
    frame.resize(4 + u32::from_le_bytes(len) as usize + 4, 0);
    from.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

fn copy_frames(
    mut from: TcpStream,
    mut to: TcpStream,
    paused: Arc<AtomicBool>,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    pause_after_welcome: Arc<AtomicBool>,
) {
    let mut held: Option<Vec<u8>> = None;
    while let Some(frame) = read_frame(&mut from) {
        hold(&paused);
        let mut out = Vec::new();
        if frame[4] == ENTRIES {
            if let Some(first) = held.take() {
                // The swap: this later frame goes first.
                out.push(frame);
                out.push(first);
            } else {
                match faults.lock().unwrap().pop_front() {
                    Some(Fault::Corrupt) => {
                        let mut damaged = frame.clone();
                        let middle = 5 + (damaged.len() - 9) / 2;
                        damaged[middle] ^= 0x10;
                        out.push(damaged);
                    }
                    Some(Fault::Duplicate) => {
                        out.push(frame.clone());
                        out.push(frame);
                    }
                    Some(Fault::Swap) => held = Some(frame),
                    None => out.push(frame),
                }
            }
        } else {
            out.push(frame);
        }
        for frame in out {
            if to.write_all(&frame).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            if frame[4] == WELCOME && pause_after_welcome.swap(false, Ordering::AcqRel) {
                paused.store(true, Ordering::Release);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// Frames the standby resynchronised after, as `GET /v1/admin/replication` reports.
fn resyncs(standby: &Node, admin: &str) -> u64 {
    standby.replication(admin)["primary"]["resyncs"].as_u64().unwrap_or(0)
}

#[test]
fn damaged_duplicated_and_reordered_frames_cause_a_resync_never_a_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Node::primary(&dir.path().join("a"), "a", 0, "strict");
    primary.wait_ready();
    let proxy = Proxy::start(&primary.repl);
    let standby = Node::standby(&dir.path().join("b"), "b", &proxy.addr, 0, "strict");
    standby.wait_ready();
    let admin = admin_token(&primary);
    converged(&primary, &standby, &admin);
    for (i, fault) in [Fault::Corrupt, Fault::Duplicate, Fault::Swap].into_iter().enumerate() {
        let before = resyncs(&standby, &admin);
        proxy.inject(fault);
        // Writes one at a time: each is an Entries frame of its own.
        wait_for(&format!("the standby to detect {fault:?}"), || {
            primary.client().post("/v1/carts").send().expect(201);
            resyncs(&standby, &admin) > before
        });
        converged(&primary, &standby, &admin);
        assert!(resyncs(&standby, &admin) > i as u64, "{fault:?}");
    }
    assert!(!standby.log().contains("panicked"), "{}", standby.log());
}

#[test]
fn a_strict_primary_starts_when_its_standby_holds_the_start_up_writes_late() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Node::primary(&dir.path().join("a"), "a", 1, "strict");
    // The standby is welcomed, then its link holds: the primary's first write (its
    // signing key) is durable there, but no standby holds it within the sync timeout.
    // Sent again, it would conflict with itself, and the primary would never start.
    let proxy = Proxy::start(&primary.repl);
    proxy.pause_after_welcome.store(true, Ordering::Release);
    let standby = Node::standby(&dir.path().join("b"), "b", &proxy.addr, 1, "strict");
    let late = "a start-up write is durable here, not yet on the standbys";
    let logged = || primary.log().contains(late);
    wait_showing("the primary's first write to be late", logged, || primary.log());
    proxy.paused.store(false, Ordering::Release);
    primary.wait_ready();
    standby.wait_ready();
    wait_for("strict acknowledgements with the standby holding the log", || {
        primary.client().post("/v1/carts").send().status == 201
    });
    let admin = admin_token(&primary);
    converged(&primary, &standby, &admin);
}

#[test]
fn a_cut_link_stops_strict_acknowledgements_and_an_async_standby_catches_up_after_it() {
    let dir = tempfile::tempdir().unwrap();
    // Strict: the primary refuses to acknowledge what no standby holds.
    let strict = Node::primary(&dir.path().join("strict"), "strict", 1, "strict");
    let proxy = Proxy::start(&strict.repl);
    let strict_standby =
        Node::standby(&dir.path().join("strict-b"), "sb", &proxy.addr, 1, "strict");
    strict.wait_ready();
    strict_standby.wait_ready();
    let admin = admin_token(&strict);
    strict.client().post("/v1/carts").send().expect(201);
    proxy.paused.store(true, Ordering::Release);
    let started = Instant::now();
    let refused = strict.client().post("/v1/carts").send();
    let waited = started.elapsed();
    refused.problem(503, "standbys_unavailable");
    assert!(waited < Duration::from_secs(10), "the refusal took {waited:?}");
    proxy.paused.store(false, Ordering::Release);
    wait_for("strict acknowledgements to resume", || {
        strict.client().post("/v1/carts").send().status == 201
    });
    converged(&strict, &strict_standby, &admin);

    // Asynchronous: writes go on through the cut; the standby catches up after it.
    let primary = Node::primary(&dir.path().join("async"), "async", 0, "strict");
    let proxy = Proxy::start(&primary.repl);
    let standby = Node::standby(&dir.path().join("async-b"), "ab", &proxy.addr, 0, "strict");
    primary.wait_ready();
    standby.wait_ready();
    let admin = admin_token(&primary);
    converged(&primary, &standby, &admin);
    // Converged and idle: nothing but heartbeats is in flight when the link is cut.
    proxy.paused.store(true, Ordering::Release);
    let cut_at = standby.durable_lsn();
    for _ in 0..50 {
        primary.client().post("/v1/carts").send().expect(201);
    }
    assert_eq!(standby.durable_lsn(), cut_at, "nothing crossed the cut");
    proxy.paused.store(false, Ordering::Release);
    converged(&primary, &standby, &admin);
}
