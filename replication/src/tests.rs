//! A primary and standbys in one process, on loopback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_engine::*;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::standby::{self, Outcome, StandbyConfig, StandbyStats};
use crate::{Primary, PrimaryConfig, SyncPolicy};

/// A test's directory, removed by [`in_dir`] once the test's runtime has stopped.
struct Dir(std::path::PathBuf);

impl Dir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

/// Runs `test` on a two-worker runtime with a fresh directory, and removes the
/// directory only after the runtime has stopped. Tasks a test leaves serving hold
/// engines until then, and their threads would write files into the directory while it
/// was being removed (which leaves it behind).
fn in_dir<F: std::future::Future<Output = ()>>(test: impl FnOnce(Dir) -> F) {
    let dir = tempfile::tempdir().unwrap();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(test(Dir(dir.path().to_path_buf())));
    drop(runtime);
    dir.close().unwrap();
}

struct Node {
    engine: Engine,
    primary: Primary,
    addr: String,
    stop: watch::Sender<bool>,
}

async fn primary_node(dir: &std::path::Path, role: Option<NodeRole>, sync: usize) -> Node {
    let mut config = PrimaryConfig::new(dir.join("scratch"));
    config.sync_standbys = sync;
    config.sync_policy = SyncPolicy::Strict;
    config.sync_timeout = Duration::from_secs(2);
    let primary = Primary::new(config);
    let mut engine_config = EngineConfig::new(dir.join("data"));
    engine_config.role = role;
    engine_config.release_gate = Some(Arc::new(primary.clone()));
    let engine = Engine::open(engine_config).unwrap();
    let (addr, stop) = serve(&primary, &engine).await;
    Node { engine, primary, addr, stop }
}

/// Serves `primary`'s replication for `engine` on a free loopback port: its address,
/// and the switch that stops it.
async fn serve(primary: &Primary, engine: &Engine) -> (String, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, shutdown) = watch::channel(false);
    let (serving, served) = (primary.clone(), engine.clone());
    tokio::spawn(async move { serving.serve(listener, served, shutdown).await });
    (addr, stop)
}

struct Follower {
    engine: Engine,
    stats: Arc<StandbyStats>,
    task: tokio::task::JoinHandle<Outcome>,
    stop: watch::Sender<bool>,
}

async fn follower(primary: &str, name: &str, dir: &std::path::Path) -> Follower {
    follower_over(primary, name, dir, None).await
}

async fn follower_over(
    primary: &str,
    name: &str,
    dir: &std::path::Path,
    tls: Option<crate::tls::Connector>,
) -> Follower {
    let config = StandbyConfig {
        primary: primary.into(),
        name: name.into(),
        data_dir: dir.into(),
        tls,
        secret: Default::default(),
    };
    let stats = Arc::new(StandbyStats::default());
    if standby::needs_bootstrap(dir) {
        standby::bootstrap(&config, &stats).await.unwrap();
    }
    let mut engine_config = EngineConfig::new(dir);
    engine_config.role = Some(NodeRole::Standby);
    let engine = Engine::open(engine_config).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let (following, counted) = (engine.clone(), stats.clone());
    let task =
        tokio::spawn(async move { standby::follow(following, config, &counted, shutdown).await });
    Follower { engine, stats, task, stop }
}

async fn write_some(engine: &Engine, tag: &str, n: usize) {
    for i in 0..n {
        let sku = format!("{tag}-{i}");
        engine
            .send(CreateProduct {
                handle: None,
                title: format!("Product {tag} {i}"),
                description: "A thing.".into(),
                brand: "Acme".into(),
                category_ids: vec![],
                attributes: BTreeMap::new(),
                status: Some(ProductStatus::Active),
                variants: vec![VariantInput {
                    sku: sku.clone(),
                    title: "One".into(),
                    options: BTreeMap::new(),
                    price: MoneyInput { amount: 1000 + i as i64, currency: "USD".into() },
                }],
            })
            .await
            .unwrap();
        engine
            .send(SetStock { sku: sku.clone(), on_hand: 10, ..Default::default() })
            .await
            .unwrap();
        let cart = engine.send(CreateCart::default()).await.unwrap();
        engine.send(AddCartItem { cart_id: cart.id.to_string(), sku, quantity: 2 }).await.unwrap();
        engine
            .send(Checkout {
                cart_id: cart.id.to_string(),
                email: Some(format!("buyer{i}@example.com")),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

async fn caught_up(standby: &Engine, primary: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while standby.durable_lsn() < primary.durable_lsn() {
        assert!(Instant::now() < deadline, "the standby did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(standby.durable_lsn(), primary.durable_lsn());
}

#[test]
fn a_standby_catches_up_matches_takes_over_and_the_old_primary_rejoins() {
    in_dir(|dir| async move {
        let a = primary_node(&dir.path().join("a"), Some(NodeRole::Primary), 0).await;
        write_some(&a.engine, "early", 20).await;
        let b_dir = dir.path().join("b");
        let b = follower(&a.addr, "b", &b_dir.join("data")).await;
        write_some(&a.engine, "late", 20).await;
        caught_up(&b.engine, &a.engine).await;
        assert_eq!(b.engine.state().digest(), a.engine.state().digest());
        assert_eq!(b.stats.bootstraps.load(std::sync::atomic::Ordering::Relaxed), 1);
        // A standby refuses commands.
        assert!(matches!(
            b.engine.send(CreateCart::default()).await,
            Err(EngineError::ReadOnlyStandby)
        ));
        let acked_lsn = a.engine.durable_lsn();

        // A goes away; B is promoted and takes writes in epoch 2.
        a.stop.send(true).unwrap();
        a.engine.close();
        let promoting = b.engine.clone();
        let epoch =
            tokio::task::spawn_blocking(move || promoting.promote()).await.unwrap().unwrap();
        assert_eq!(epoch, 2);
        assert_eq!(b.task.await.unwrap(), Outcome::Promoted);
        assert!(b.engine.durable_lsn() >= acked_lsn);
        b.engine.close();
        let b = primary_node(&b_dir, None, 0).await;
        assert_eq!(b.engine.epoch(), 2);
        write_some(&b.engine, "after", 10).await;

        // A rejoins as B's standby: it holds nothing B lacks, so it resumes without a
        // checkpoint and converges.
        let a_again = follower(&b.addr, "a", &dir.path().join("a").join("data")).await;
        write_some(&b.engine, "rejoined", 5).await;
        caught_up(&a_again.engine, &b.engine).await;
        assert_eq!(a_again.engine.state().digest(), b.engine.state().digest());
        assert_eq!(a_again.engine.epoch(), 2);
        assert_eq!(a_again.stats.bootstraps.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(b.primary.standbys().len(), 1);
        a_again.stop.send(true).unwrap();
        assert_eq!(a_again.task.await.unwrap(), Outcome::Shutdown);
    });
}

#[test]
fn strict_synchronous_mode_acknowledges_only_what_a_standby_holds() {
    in_dir(|dir| async move {
        let a = primary_node(&dir.path().join("a"), None, 1).await;
        // No standby: refused at once, nothing applied.
        let before = a.engine.last_lsn();
        assert!(matches!(
            a.engine.send(CreateCart::default()).await,
            Err(EngineError::StandbysUnavailable(_))
        ));
        assert_eq!(a.engine.last_lsn(), before);
        let b = follower(&a.addr, "b", &dir.path().join("b")).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.primary.standbys().is_empty() {
            assert!(Instant::now() < deadline, "the standby did not connect");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..50 {
            a.engine.send(CreateCart::default()).await.unwrap();
            // Acknowledged: the standby holds it durably already.
            assert!(b.engine.durable_lsn() >= a.engine.durable_lsn());
        }
        // The standby stops: the next write is not acknowledged.
        b.stop.send(true).unwrap();
        b.task.await.unwrap();
        let refused = a.engine.send(CreateCart::default()).await;
        assert!(matches!(refused, Err(EngineError::StandbysUnavailable(_))), "{refused:?}");
    });
}

#[test]
fn a_deposed_primary_with_entries_the_new_one_lacks_bootstraps_again() {
    in_dir(|dir| async move {
        let a = primary_node(&dir.path().join("a"), None, 0).await;
        write_some(&a.engine, "shared", 10).await;
        let b = follower(&a.addr, "b", &dir.path().join("b").join("data")).await;
        caught_up(&b.engine, &a.engine).await;
        // B stops following; A goes on alone (asynchronous: these were acknowledged by A
        // only), then is lost.
        b.stop.send(true).unwrap();
        b.task.await.unwrap();
        write_some(&a.engine, "lost", 5).await;
        let a_last = a.engine.last_lsn();
        a.stop.send(true).unwrap();
        a.engine.close();
        let promoting = b.engine.clone();
        tokio::task::spawn_blocking(move || promoting.promote()).await.unwrap().unwrap();
        b.engine.close();
        let b = primary_node(&dir.path().join("b"), None, 0).await;
        write_some(&b.engine, "new", 3).await;
        assert!(b.engine.last_lsn() < a_last, "B's log is shorter, and differs after the fork");

        // A comes back as B's standby: its suffix was never on B, so B asks for a resync.
        let a_dir = dir.path().join("a").join("data");
        let stale = follower(&b.addr, "a", &a_dir).await;
        let outcome =
            tokio::time::timeout(Duration::from_secs(20), stale.task).await.unwrap().unwrap();
        assert!(matches!(outcome, Outcome::Resync(_)), "{outcome:?}");
        stale.engine.close();
        standby::wipe(&a_dir).unwrap();
        let a = follower(&b.addr, "a", &a_dir).await;
        caught_up(&a.engine, &b.engine).await;
        assert_eq!(a.engine.state().digest(), b.engine.state().digest());
        assert!(a.engine.state().product_by_sku(&Sku::new("lost-0").unwrap()).is_none());
    });
}

#[test]
fn a_standby_that_falls_past_the_retention_cap_bootstraps_again() {
    in_dir(|dir| async move {
        let mut config = PrimaryConfig::new(dir.path().join("scratch"));
        config.sync_standbys = 0;
        let primary = Primary::new(config);
        let mut engine_config = EngineConfig::new(dir.path().join("a"));
        engine_config.log_retain_entries_min = 10;
        engine_config.log_consumer_lag_max = 50;
        engine_config.materialize_interval_ms = 10;
        // The log is trimmed only below rows made durable, which by default happens
        // every ten seconds: as long as this test's deadline for the trim.
        engine_config.persist_interval_ms = 10;
        let engine = Engine::open(engine_config).unwrap();
        let (addr, _stop) = serve(&primary, &engine).await;
        write_some(&engine, "kept", 5).await;
        let b_dir = dir.path().join("b");
        let b = follower(&addr, "b", &b_dir).await;
        caught_up(&b.engine, &engine).await;
        b.stop.send(true).unwrap();
        b.task.await.unwrap();
        // While it is away the primary writes past the cap; its consumer is dropped and
        // the log it would need is trimmed.
        write_some(&engine, "meanwhile", 40).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.first_log_lsn() <= b.engine.durable_lsn() {
            assert!(Instant::now() < deadline, "the log was not trimmed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (stats, (_stop_b, shutdown)) = (StandbyStats::default(), watch::channel(false));
        let config = StandbyConfig {
            primary: addr.clone(),
            name: "b".into(),
            data_dir: b_dir.clone(),
            tls: None,
            secret: Default::default(),
        };
        let outcome = standby::follow(b.engine.clone(), config, &stats, shutdown).await;
        assert!(matches!(outcome, Outcome::Resync(_)), "{outcome:?}");
        b.engine.close();
        standby::wipe(&b_dir).unwrap();
        let b = follower(&addr, "b", &b_dir).await;
        caught_up(&b.engine, &engine).await;
        assert_eq!(b.engine.state().digest(), engine.state().digest());
    });
}

#[test]
fn the_link_can_be_tls_and_a_standby_refuses_a_primary_it_does_not_trust() {
    in_dir(|dir| async move {
        let pem = |name: &str, certified: &rcgen::CertifiedKey<rcgen::KeyPair>| {
            let (cert, key) =
                (dir.path().join(format!("{name}.pem")), dir.path().join(format!("{name}.key")));
            std::fs::write(&cert, certified.cert.pem()).unwrap();
            std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
            (cert, key)
        };
        let ours = rcgen::generate_simple_self_signed(vec!["primary.test".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["primary.test".to_string()]).unwrap();
        let (cert, key) = pem("ours", &ours);
        let (other_cert, _) = pem("other", &other);
        let mut config = PrimaryConfig::new(dir.path().join("scratch"));
        config.tls = Some(crate::tls::Acceptor::new(&cert, &key).unwrap());
        let primary = Primary::new(config);
        let engine = Engine::open(EngineConfig::new(dir.path().join("a"))).unwrap();
        let (addr, _stop) = serve(&primary, &engine).await;
        write_some(&engine, "tls", 5).await;

        let trusted = crate::tls::Connector::new(&cert, "primary.test").unwrap();
        let b = follower_over(&addr, "b", &dir.path().join("b"), Some(trusted)).await;
        write_some(&engine, "more", 5).await;
        caught_up(&b.engine, &engine).await;
        assert_eq!(b.engine.state().digest(), engine.state().digest());

        // A certificate it was not told to trust, or plain TCP to a TLS listener: no
        // bootstrap, nothing received.
        let untrusted = crate::tls::Connector::new(&other_cert, "primary.test").unwrap();
        let stats = StandbyStats::default();
        for tls in [Some(untrusted), None] {
            let config = StandbyConfig {
                primary: addr.clone(),
                name: "c".into(),
                data_dir: dir.path().join("c"),
                tls,
                secret: Default::default(),
            };
            assert!(standby::bootstrap(&config, &stats).await.is_err());
            assert!(standby::needs_bootstrap(&config.data_dir));
        }
    });
}

#[test]
fn degrade_policy_acknowledges_without_standbys_and_says_so() {
    in_dir(|dir| async move {
        let mut config = PrimaryConfig::new(dir.path().join("scratch"));
        config.sync_standbys = 1;
        config.sync_policy = SyncPolicy::Degrade;
        config.sync_timeout = Duration::from_millis(200);
        let primary = Primary::new(config);
        let mut engine_config = EngineConfig::new(dir.path().join("a"));
        engine_config.release_gate = Some(Arc::new(primary.clone()));
        let engine = Engine::open(engine_config).unwrap();
        assert!(!primary.degraded());
        engine.send(CreateCart::default()).await.unwrap();
        assert!(primary.degraded(), "acknowledged without its standby: degraded");
        assert_eq!(primary.stats().degraded_releases.load(std::sync::atomic::Ordering::Relaxed), 1);
        let (addr, _stop) = serve(&primary, &engine).await;
        let b = follower(&addr, "b", &dir.path().join("b")).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while primary.standbys().is_empty() {
            assert!(Instant::now() < deadline, "the standby did not connect");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Once its standby holds everything, writes wait for it again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while primary.degraded() {
            assert!(Instant::now() < deadline, "still degraded with the standby caught up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        engine.send(CreateCart::default()).await.unwrap();
        assert!(b.engine.durable_lsn() >= engine.durable_lsn());
        assert!(!primary.degraded());
    });
}

#[test]
fn a_primary_that_meets_a_newer_epoch_steps_down_for_good() {
    in_dir(|dir| async move {
        let a = primary_node(&dir.path().join("a"), None, 0).await;
        write_some(&a.engine, "shared", 3).await;
        let b = follower(&a.addr, "b", &dir.path().join("b").join("data")).await;
        caught_up(&b.engine, &a.engine).await;
        // B is promoted while A still runs (a partition): epoch 2 on B, 1 on A.
        let promoting = b.engine.clone();
        tokio::task::spawn_blocking(move || promoting.promote()).await.unwrap().unwrap();
        assert_eq!(b.task.await.unwrap(), Outcome::Promoted);
        b.engine.close();
        let b = primary_node(&dir.path().join("b"), None, 0).await;
        write_some(&b.engine, "on-b", 2).await;
        // C bootstraps from B, so it knows epoch 2, then is pointed at A by mistake.
        let c_dir = dir.path().join("c");
        let c = follower(&b.addr, "c", &c_dir).await;
        caught_up(&c.engine, &b.engine).await;
        c.stop.send(true).unwrap();
        c.task.await.unwrap();
        let (stats, (_stop_c, shutdown)) = (StandbyStats::default(), watch::channel(false));
        let config = StandbyConfig {
            primary: a.addr.clone(),
            name: "c".into(),
            data_dir: c_dir,
            tls: None,
            secret: Default::default(),
        };
        let following = tokio::spawn({
            let engine = c.engine.clone();
            async move { standby::follow(engine, config, &stats, shutdown).await }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.engine.role() == NodeRole::Primary {
            assert!(Instant::now() < deadline, "A did not step down");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        following.abort();
        assert!(matches!(
            a.engine.send(CreateCart::default()).await,
            Err(EngineError::ReadOnlyStandby)
        ));
        // The step-down is recorded: A's directory does not open as a primary again.
        a.stop.send(true).unwrap();
        a.engine.close();
        let mut config = EngineConfig::new(dir.path().join("a").join("data"));
        config.role = Some(NodeRole::Primary);
        // (A session's log read may hold the store for a moment after the close.)
        let deadline = Instant::now() + Duration::from_secs(5);
        let reopened = loop {
            match Engine::open(config.clone()) {
                Err(EngineError::Storage(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => break other,
            }
        };
        assert!(matches!(reopened, Err(EngineError::InvalidState(_))), "{reopened:?}");
    });
}

#[test]
fn without_the_secret_a_peer_gets_nothing_and_cannot_fence_the_primary() {
    in_dir(|dir| async move {
        let mut config = PrimaryConfig::new(dir.path().join("scratch"));
        config.secret = crate::Secret::new("replication-secret");
        let primary = Primary::new(config);
        let engine = Engine::open(EngineConfig::new(dir.path().join("a"))).unwrap();
        let (addr, _stop) = serve(&primary, &engine).await;
        write_some(&engine, "secret", 2).await;

        // A forged Hello from a "newer epoch", without the secret.
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let forged = crate::protocol::Message::Hello {
            version: crate::PROTOCOL_VERSION,
            format: ENGINE_FORMAT_VERSION,
            name: "intruder".into(),
            cluster: 0,
            epoch: 1_000,
            last_lsn: 0,
            last_epoch: 0,
            last_epoch_id: 0,
            bootstrap: true,
            secret: b"guess".to_vec(),
        };
        crate::protocol::write_message(&mut stream, &forged).await.unwrap();
        let answer =
            crate::protocol::read_message(&mut stream, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(answer, crate::protocol::Message::Refused { .. }), "{answer:?}");
        assert_eq!(engine.role(), NodeRole::Primary);
        engine.send(CreateCart::default()).await.unwrap();

        let stats = StandbyStats::default();
        let mut config = StandbyConfig {
            primary: addr.clone(),
            name: "b".into(),
            data_dir: dir.path().join("b"),
            tls: None,
            secret: Default::default(),
        };
        assert!(standby::bootstrap(&config, &stats).await.is_err());
        assert!(standby::needs_bootstrap(&config.data_dir));
        config.secret = crate::Secret::new("replication-secret");
        standby::bootstrap(&config, &stats).await.unwrap();
        assert!(!standby::needs_bootstrap(&config.data_dir));
    });
}

#[test]
fn a_standby_never_follows_or_wipes_itself_for_another_clusters_primary() {
    in_dir(|dir| async move {
        let a = primary_node(&dir.path().join("a"), None, 0).await;
        write_some(&a.engine, "ours", 3).await;
        let b = follower(&a.addr, "b", &dir.path().join("b")).await;
        caught_up(&b.engine, &a.engine).await;
        b.stop.send(true).unwrap();
        b.task.await.unwrap();
        let kept = b.engine.durable_lsn();
        // A new, empty primary (a replaced disk) at another address, with more entries
        // than the standby holds: same epoch 1, another cluster.
        let other = primary_node(&dir.path().join("other"), None, 0).await;
        write_some(&other.engine, "theirs", 6).await;
        assert!(other.engine.durable_lsn() > kept);
        assert_ne!(other.engine.cluster_id(), b.engine.cluster_id());
        let stats = Arc::new(StandbyStats::default());
        let (stop, shutdown) = watch::channel(false);
        let config = StandbyConfig {
            primary: other.addr.clone(),
            name: "b".into(),
            data_dir: dir.path().join("b"),
            tls: None,
            secret: Default::default(),
        };
        let following = tokio::spawn({
            let (engine, stats) = (b.engine.clone(), stats.clone());
            async move { standby::follow(engine, config, &stats, shutdown).await }
        });
        // Refused again and again (no Resync, so nothing is wiped), and nothing applied.
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.reconnects.load(std::sync::atomic::Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "the standby did not keep retrying");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!following.is_finished());
        stop.send(true).unwrap();
        assert_eq!(following.await.unwrap(), Outcome::Shutdown);
        assert_eq!(b.engine.durable_lsn(), kept);
        assert_eq!(b.engine.cluster_id(), a.engine.cluster_id());
    });
}
