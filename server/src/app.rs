//! The application: the engine and everything a request handler needs, built once at
//! start-up (keys, the first admin, the demo catalog).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use emporium_engine::*;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Semaphore;

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
    pub in_flight: Mutex<std::collections::HashSet<String>>,
    /// Whether recovery finished and the server takes requests.
    pub ready: std::sync::atomic::AtomicBool,
    /// The live feed of flash sales (`GET /v1/flash-sales/{id}/stream`).
    pub feed: crate::feed::SaleFeed,
    /// Product search (`GET /v1/search`), kept in step with the log.
    pub search: ProductSearch,
    /// Searches running at once on the blocking pool; past it, 503 `overloaded` (a
    /// search costs a core for about half a millisecond, so a flood of them must not
    /// queue behind each other without bound).
    pub searches: Arc<Semaphore>,
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
/// Searches in flight at most (see [`App::searches`]).
pub const SEARCHES_IN_FLIGHT_MAX: usize = 64;

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
        engine_config.queue_commands_max = config.queue_commands_max;
        #[cfg(feature = "faults")]
        {
            engine_config.faults = config.faults.clone();
        }
        let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config))
            .await?
            .map_err(|e| anyhow::anyhow!("opening the data directory: {e}"))?;
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
        let keys = signing_keys(&engine, &config).await?;
        let app = Arc::new(App {
            search,
            limiter: RateLimiter::new(config.rate_auth, config.rate_read, config.rate_write),
            passwords: Passwords::new(config.password_hash_kib, crate::auth::HASHING_WAIT),
            metrics: Metrics::new(),
            reads: Semaphore::new(config.reads_concurrency_max),
            searches: Arc::new(Semaphore::new(SEARCHES_IN_FLIGHT_MAX)),
            writes: Semaphore::new(config.writes_concurrency_max),
            in_flight: Mutex::new(Default::default()),
            ready: false.into(),
            feed: crate::feed::SaleFeed::start(engine.clone()),
            keys: RwLock::new(keys),
            tokens: Default::default(),
            engine,
            config,
        });
        bootstrap_admin(&app).await?;
        if app.config.demo {
            crate::demo::load(&app.engine).await?;
        }
        app.ready.store(true, std::sync::atomic::Ordering::Release);
        Ok(app)
    }

    /// The access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.config.access_token_ttl_s)
    }
}

/// Configured keys first (the first signs); otherwise the keys kept in the engine,
/// newest first, generating one on first start.
async fn signing_keys(engine: &Engine, config: &Config) -> anyhow::Result<TokenKeys> {
    let mut keys = config
        .signing_keys
        .iter()
        .map(|k| TokenKeys::parse_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if keys.is_empty() && engine.state().signing_keys().is_empty() {
        let secret: [u8; 32] = rand::random();
        let kid = format!("k{}", now_s());
        engine.send(AddSigningKey { kid, secret: secret.to_vec() }).await?;
    }
    let mut stored: Vec<(String, Vec<u8>)> = engine
        .state()
        .signing_keys()
        .iter()
        .rev()
        .map(|k| (k.kid.clone(), k.secret.clone()))
        .collect();
    keys.append(&mut stored);
    Ok(TokenKeys::new(keys))
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
    let admin = app
        .engine
        .send(RegisterCustomer {
            email: email.clone(),
            name: "Administrator".into(),
            role: Role::Admin,
            credential,
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the first admin {email}: {e}"))?;
    tracing::info!(admin = %admin.id, %email, "created the first admin");
    if generated {
        // Shown once, on the terminal only: the engine keeps just the hash.
        eprintln!(
            "emporium: first admin {email} has the generated password {password} (shown only now)"
        );
    }
    Ok(())
}
