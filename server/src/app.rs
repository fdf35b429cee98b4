//! The application: the engine and everything a request handler needs, built once at
//! start-up (keys, the first admin, the demo catalog).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use emporium_engine::*;
use emporium_replication::standby::StandbyStats;
use emporium_replication::{Primary, PrimaryConfig};
use parking_lot::RwLock;
use tokio::sync::{watch, Semaphore};

use crate::auth::{Passwords, TokenKeys};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// Shared by every request.
pub struct App {
    /// The engine.
    pub engine: Engine,
    /// The configuration.
    pub config: Config,
    /// Access token keys.
    pub keys: RwLock<TokenKeys>,
    /// How many of the engine's stored keys `keys` holds: a standby learns the
    /// primary's keys from its log, after it started.
    keys_stored: std::sync::atomic::AtomicUsize,
    /// Access tokens already verified.
    pub tokens: crate::auth::VerifiedTokens,
    /// Password and secret hashing.
    pub passwords: Passwords,
    /// Rate limits.
    pub limiter: RateLimiter,
    /// Metrics.
    pub metrics: Metrics,
    /// Concurrent reads.
    pub reads: Semaphore,
    /// Concurrent writes.
    pub writes: Semaphore,
    /// Idempotency keys whose first request is still running.
    pub in_flight: crate::handlers::InFlightKeys,
    /// Whether recovery finished and the server takes requests.
    pub ready: std::sync::atomic::AtomicBool,
    /// The live feed of flash sales (`GET /v1/flash-sales/{id}/stream`).
    pub feed: crate::feed::SaleFeed,
    /// Product search (`GET /v1/search`), kept in step with the log.
    pub search: ProductSearch,
    /// Recommendations (`GET /v1/products/{id}/recommendations` and the others),
    /// folded from the log.
    pub recommendations: Recommendations,
    /// Business KPIs (`GET /v1/admin/stats`), folded from the log and saved beside
    /// the data.
    pub kpis: Kpis,
    /// Webhook deliveries.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Customer notifications: rendering into the outbox, and sending.
    pub notifier: Arc<crate::notifications::Notifier>,
    /// Searches running or waiting at once; past it, 503 `overloaded` (a search costs
    /// a core for a hundred microseconds or more, so a flood of them must not queue
    /// behind each other without bound).
    pub searches: Arc<Semaphore>,
    /// The threads searches and suggestions run on, [`SEARCH_THREADS_PER_CORE`] per core.
    pub search_threads: crate::search_threads::SearchThreads,
    /// Log shipping: this node's standbys, and what a standby hears from its primary.
    pub replication: Replication,
    /// Makes the payment-provider calls the engine records, and resumes them after a
    /// restart (on a standby it waits until promoted).
    pub payments: PaymentProcessor,
    /// The simulated asynchronous provider (`callback`), whose callbacks this server
    /// verifies.
    pub gateway: crate::gateway::CallbackGateway,
}

/// The node's replication.
pub struct Replication {
    /// The primary's side, when standbys may connect (`--replication-listen`).
    pub primary: Option<Primary>,
    /// The address standbys connect to, once bound.
    pub listen: Option<std::net::SocketAddr>,
    /// On a standby: what it hears from its primary (the follower fills it in).
    pub standby: Option<Arc<StandbyStats>>,
    stop: watch::Sender<bool>,
}

impl Replication {
    /// Stops taking standbys (at shutdown).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Searches in flight (running or waiting for a search thread) at most; see
/// [`App::searches`]. The queue absorbs the moments when a busy machine's scheduler
/// leaves the search threads without a core for some milliseconds, a few hundred
/// searches at the rates a two-core machine serves; with 64 places, a soak at 70% of
/// saturation had 545 of 3.25 million searches refused that way. At most 1,024 small
/// queries wait: some tens of milliseconds of typical searches, a few seconds of the
/// slowest (browsing 100k products with every facet costs about 5 ms).
pub const SEARCHES_IN_FLIGHT_MAX: usize = 1_024;

/// Search threads per core. Under a mixed load the scheduler shares the cores among
/// every runnable thread; two per core keep searches their share beside the runtime's
/// workers, the engine's threads and (on a test machine) the load generator.
pub const SEARCH_THREADS_PER_CORE: usize = 2;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl App {
    /// Opens the engine on the configured directory and prepares keys and the first
    /// admin.
    pub async fn open(config: Config) -> anyhow::Result<Arc<App>> {
        let mut engine_config = EngineConfig::new(&config.data_dir);
        engine_config.limits.reservation_ttl_ms =
            (config.reservation_ttl_s as i64).saturating_mul(1000);
        engine_config.limits.cart_ttl_ms = (config.cart_ttl_s as i64).saturating_mul(1000);
        engine_config.limits.return_window_ms = (config.return_window_days as i64) * 86_400_000;
        engine_config.queue_commands_max = config.queue_commands_max;
        engine_config.orders_in_memory = Some(config.orders_in_memory);
        engine_config.idempotency_records_in_memory = Some(config.idempotency_records_in_memory);
        let standby = config.standby.is_some();
        engine_config.role = Some(if standby { NodeRole::Standby } else { NodeRole::Primary });
        let scratch_dir = config.data_dir.join("replication-checkpoints");
        // Checkpoints a crash left behind are never resumed.
        let _ = std::fs::remove_dir_all(&scratch_dir);
        let tls = match &config.replication_tls {
            Some((cert, key)) => Some(emporium_replication::tls::Acceptor::new(cert, key)?),
            None => None,
        };
        let primary = config.replication_listen.map(|_| {
            Primary::new(PrimaryConfig {
                sync_standbys: config.sync_standbys,
                sync_policy: config.sync_policy,
                sync_timeout: Duration::from_millis(config.sync_timeout_ms),
                tls,
                secret: config.replication_secret.clone(),
                ..PrimaryConfig::new(scratch_dir)
            })
        });
        if config.sync_standbys > 0 {
            engine_config.release_gate =
                primary.clone().map(|p| Arc::new(p) as Arc<dyn ReleaseGate>);
        }
        #[cfg(feature = "faults")]
        {
            engine_config.faults = config.faults.clone();
        }
        let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config))
            .await?
            .map_err(|e| anyhow::anyhow!("opening the data directory: {e}"))?;
        let (stop, shutdown) = watch::channel(false);
        let mut listen = None;
        if let (Some(primary), Some(addr)) = (&primary, config.replication_listen) {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("binding the replication address {addr}: {e}"))?;
            listen = Some(listener.local_addr()?);
            let (primary, engine) = (primary.clone(), engine.clone());
            tokio::spawn(async move { primary.serve(listener, engine, shutdown).await });
        }
        let replication = Replication {
            primary,
            listen,
            standby: config.standby.as_ref().map(|of| of.stats.clone()),
            stop,
        };
        let search_engine = engine.clone();
        let search_settings = SearchSettings {
            synonyms: config.search_synonyms.clone(),
            ..SearchSettings::in_dir(config.search_path())
        };
        let search = tokio::task::spawn_blocking(move || {
            ProductSearch::start(&search_engine, search_settings)
        })
        .await?
        .map_err(|e| anyhow::anyhow!("opening the search index: {e}"))?;
        let recommend_engine = engine.clone();
        let recommendations = tokio::task::spawn_blocking(move || {
            Recommendations::start(&recommend_engine, RecommendationSettings::default())
        })
        .await?
        .map_err(|e| anyhow::anyhow!("starting the recommender: {e}"))?;
        let kpi_engine = engine.clone();
        let kpi_settings = KpiSettings {
            retention: config.kpi_retention(),
            ..KpiSettings::in_dir(config.data_dir.join("kpis"))
        };
        let kpis = tokio::task::spawn_blocking(move || Kpis::start(&kpi_engine, kpi_settings))
            .await?
            .map_err(|e| anyhow::anyhow!("starting the KPIs: {e}"))?;
        let keys = signing_keys(&engine, &config, standby).await?;
        let gateway = crate::gateway::CallbackGateway::new(Duration::from_millis(
            config.payment_callback_delay_ms,
        ));
        let processor_config = ProcessorConfig {
            callback_wait: Duration::from_secs(config.payment_callback_wait_s),
            give_up_after: Duration::from_secs(config.payment_give_up_s),
            ..ProcessorConfig::default()
        };
        // The simulated gateway calls back over plain HTTP: not offered behind TLS.
        let providers: Vec<Arc<dyn PaymentProvider>> = match config.tls {
            None => vec![Arc::new(gateway.clone())],
            Some(_) => Vec::new(),
        };
        let payments = PaymentProcessor::start(engine.clone(), providers, processor_config)
            .map_err(|e| anyhow::anyhow!("starting the payment processor: {e}"))?;
        let sender = crate::notifications::sender(&config.notifications, &config.data_dir)
            .map_err(|e| anyhow::anyhow!("notifications: {e}"))?;
        let notifier = crate::notifications::Notifier::start(
            engine.clone(),
            config.notifications.clone(),
            sender,
        )
        .await;
        let app = Arc::new(App {
            payments,
            gateway,
            search,
            recommendations,
            kpis,
            webhooks: crate::webhooks::Webhooks::start(engine.clone(), config.webhooks.clone()),
            notifier,
            limiter: RateLimiter::new(config.rate_auth, config.rate_read, config.rate_write),
            passwords: Passwords::new(config.password_hash_kib, crate::auth::HASHING_WAIT),
            metrics: Metrics::new(),
            reads: Semaphore::new(config.reads_concurrency_max),
            searches: Arc::new(Semaphore::new(SEARCHES_IN_FLIGHT_MAX)),
            search_threads: crate::search_threads::SearchThreads::start(
                std::thread::available_parallelism().map_or(2, usize::from)
                    * SEARCH_THREADS_PER_CORE,
                SEARCHES_IN_FLIGHT_MAX,
            )?,
            writes: Semaphore::new(config.writes_concurrency_max),
            in_flight: Default::default(),
            ready: false.into(),
            feed: crate::feed::SaleFeed::start(engine.clone()),
            keys: RwLock::new(keys),
            keys_stored: engine.state().signing_keys().len().into(),
            tokens: Default::default(),
            replication,
            engine,
            config,
        });
        // A standby writes nothing: its keys, accounts and catalog come from the
        // primary's log.
        if !standby {
            bootstrap_admin(&app).await?;
            if app.config.demo {
                crate::demo::load(&app.engine).await?;
            }
        }
        app.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(app)
    }

    /// Takes in signing keys the engine learned since start (on a standby, from its
    /// primary's log); whether there were any.
    pub fn refresh_keys(&self) -> bool {
        let stored = self.engine.state().signing_keys().len();
        if stored == self.keys_stored.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        match assemble_keys(&self.engine, &self.config) {
            Ok(keys) if !keys.is_empty() => {
                *self.keys.write() = TokenKeys::new(keys);
                self.keys_stored.store(stored, std::sync::atomic::Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// The access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.config.access_token_ttl_s)
    }
}

/// Configured keys first (the first signs); otherwise the keys kept in the engine,
/// newest first, generating one on first start.
async fn signing_keys(
    engine: &Engine,
    config: &Config,
    standby: bool,
) -> anyhow::Result<TokenKeys> {
    let mut keys = assemble_keys(engine, config)?;
    if keys.is_empty() {
        let secret: [u8; 32] = rand::random();
        let kid = format!("k{}", now_s());
        if standby {
            // The primary's keys arrive with its log (`App::refresh_keys`); until then
            // no token verifies here, and a standby issues none.
            return Ok(TokenKeys::new(vec![(kid, secret.to_vec())]));
        }
        let add = AddSigningKey { kid: kid.clone(), secret: secret.to_vec() };
        send_at_start(engine, add, |e| e.state().signing_keys().iter().any(|k| k.kid == kid))
            .await?;
        keys = assemble_keys(engine, config)?;
    }
    Ok(TokenKeys::new(keys))
}

/// The configured keys (the first signs), then the engine's, newest first.
fn assemble_keys(engine: &Engine, config: &Config) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut keys = config
        .signing_keys
        .iter()
        .map(|k| TokenKeys::parse_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    keys.extend(
        engine.state().signing_keys().iter().rev().map(|k| (k.kid.clone(), k.secret.clone())),
    );
    Ok(keys)
}

/// The first admin: from `EMPORIUM_ADMIN_EMAIL` / `EMPORIUM_ADMIN_PASSWORD`, or with a
/// generated password printed once.
async fn bootstrap_admin(app: &App) -> anyhow::Result<()> {
    if !app.engine.state().customers_with_role(Role::Admin).is_empty() {
        return Ok(());
    }
    let email = std::env::var("EMPORIUM_ADMIN_EMAIL").unwrap_or_else(|_| "admin@localhost".into());
    let (password, generated) = match std::env::var("EMPORIUM_ADMIN_PASSWORD") {
        Ok(password) if password.len() >= 8 => (password, false),
        Ok(_) => anyhow::bail!("EMPORIUM_ADMIN_PASSWORD must have at least 8 characters"),
        Err(_) => (crate::auth::random_token(), true),
    };
    let credential = app
        .passwords
        .hash(password.clone())
        .await
        .map_err(|_| anyhow::anyhow!("no password-hashing slot for the first admin"))?;
    let register = RegisterCustomer {
        email: email.clone(),
        name: "Administrator".into(),
        role: Role::Admin,
        credential,
    };
    let admin = send_at_start(&app.engine, register, |e| {
        !e.state().customers_with_role(Role::Admin).is_empty()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the first admin {email}: {e}"))?;
    match admin {
        Some(admin) => tracing::info!(admin = %admin.id, %email, "created the first admin"),
        None => tracing::info!(%email, "created the first admin; the standbys hold it later"),
    }
    if generated {
        // Shown once, on the terminal only: the engine keeps just the hash.
        eprintln!(
            "emporium: first admin {email} has the generated password {password} (shown only now)"
        );
    }
    Ok(())
}

/// Sends a start-up command; a primary that needs synchronous standbys waits for them
/// (they connect to the replication listener, which is already serving) instead of
/// failing its start. A refusal can come after the command was applied (durable here,
/// not held by a standby within the sync timeout): sent again it would conflict with
/// itself, so before each retry `applied` asks whether the state holds its effect, and
/// if it does the start goes on (`None`); the standbys receive it with the log, and no
/// client write is acknowledged before they hold everything up to it.
pub async fn send_at_start<R: Request + Clone>(
    engine: &Engine,
    request: R,
    applied: impl Fn(&Engine) -> bool,
) -> Result<Option<R::Output>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let mut told = false;
    loop {
        match engine.send(request.clone()).await {
            Err(EngineError::StandbysUnavailable(why)) if std::time::Instant::now() < deadline => {
                if applied(engine) {
                    tracing::warn!(%why, "a start-up write is durable here, not yet on the standbys");
                    return Ok(None);
                }
                if !told {
                    tracing::warn!(%why, "waiting for synchronous standbys before start-up writes");
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            result => return result.map(Some),
        }
    }
}
