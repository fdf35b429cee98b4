//! The server's configuration. Every option has a command-line flag, a key in the TOML
//! config file and an `EMPORIUM_…` environment variable; a flag or variable wins over
//! the file, the file over the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

/// The options of `emporium serve`, as given (flags and environment); unset ones fall
/// back to the config file, then to the defaults.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "EMPORIUM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The data directory.
    #[arg(long, env = "EMPORIUM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The product search index's directory (default: `search` in the data directory).
    /// It is derived from the log: deleting it makes the server rebuild it at start.
    #[arg(long, env = "EMPORIUM_SEARCH_DIR")]
    pub search_dir: Option<PathBuf>,
    /// Search synonym groups: words of a group joined by `|`, groups by `;`
    /// (`tee|t-shirt|tshirt;sofa|couch`). A query word of a group matches any of it.
    #[arg(long, env = "EMPORIUM_SEARCH_SYNONYMS")]
    pub search_synonyms: Option<String>,
    /// A TOML file with any of these options (keys as the long flags, with `_`).
    #[arg(long, env = "EMPORIUM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Fill an empty data directory with a deterministic demo catalog (`--demo` alone
    /// means `--demo true`).
    #[arg(long, env = "EMPORIUM_DEMO", num_args = 0..=1, default_missing_value = "true")]
    pub demo: Option<bool>,
    /// PEM certificate chain; with `--tls-key`, serve HTTPS.
    #[arg(long, env = "EMPORIUM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, env = "EMPORIUM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, env = "EMPORIUM_BODY_BYTES_MAX")]
    pub body_bytes_max: Option<usize>,
    /// How long an unpaid order holds its stock, in seconds.
    #[arg(long, env = "EMPORIUM_RESERVATION_TTL_S")]
    pub reservation_ttl_s: Option<u64>,
    /// How long an open cart may go unchanged before it is dropped and counted as
    /// abandoned, in seconds.
    #[arg(long, env = "EMPORIUM_CART_TTL_S")]
    pub cart_ttl_s: Option<u64>,
    /// How many days after an order is fulfilled its customer may ask to return units.
    #[arg(long, env = "EMPORIUM_RETURN_WINDOW_DAYS")]
    pub return_window_days: Option<u64>,
    /// How many days the business figures keep per-minute counts; older ones are
    /// summed per hour.
    #[arg(long, env = "EMPORIUM_KPI_MINUTE_DAYS")]
    pub kpi_minute_days: Option<u64>,
    /// How many days the business figures keep each product's sales per hour; older
    /// ones are summed per day.
    #[arg(long, env = "EMPORIUM_KPI_PRODUCT_HOUR_DAYS")]
    pub kpi_product_hour_days: Option<u64>,
    /// How many days the business figures keep any detail; older time is dropped
    /// (the totals since the first order keep it).
    #[arg(long, env = "EMPORIUM_KPI_RETENTION_DAYS")]
    pub kpi_retention_days: Option<u64>,
    /// How long the simulated asynchronous payment provider (`callback`) takes to call
    /// back with its answer, in milliseconds.
    #[arg(long, env = "EMPORIUM_PAYMENT_CALLBACK_DELAY_MS")]
    pub payment_callback_delay_ms: Option<u64>,
    /// How long a payment awaiting a provider's callback waits before the provider is
    /// asked again, in seconds.
    #[arg(long, env = "EMPORIUM_PAYMENT_CALLBACK_WAIT_S")]
    pub payment_callback_wait_s: Option<u64>,
    /// How long a provider may take to settle a payment before it is voided and its
    /// order can be paid again or expire, in seconds.
    #[arg(long, env = "EMPORIUM_PAYMENT_GIVE_UP_S")]
    pub payment_give_up_s: Option<u64>,
    /// Let webhooks deliver to loopback, private and link-local addresses (refused by
    /// default: a webhook URL must not reach into the shop's own network).
    #[arg(
        long,
        env = "EMPORIUM_WEBHOOK_ALLOW_PRIVATE",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub webhook_allow_private: Option<bool>,
    /// How long a webhook delivery may take, in milliseconds.
    #[arg(long, env = "EMPORIUM_WEBHOOK_TIMEOUT_MS")]
    pub webhook_timeout_ms: Option<u64>,
    /// Attempts of one webhook delivery before it goes to the dead letters.
    #[arg(long, env = "EMPORIUM_WEBHOOK_ATTEMPTS_MAX")]
    pub webhook_attempts_max: Option<u32>,
    /// The first retry's delay, in milliseconds (doubled after each failure, with
    /// jitter, up to 5 minutes).
    #[arg(long, env = "EMPORIUM_WEBHOOK_BACKOFF_MS")]
    pub webhook_backoff_ms: Option<u64>,
    /// How long an endpoint's breaker stays open after 5 failures in a row, in
    /// milliseconds.
    #[arg(long, env = "EMPORIUM_WEBHOOK_BREAKER_MS")]
    pub webhook_breaker_ms: Option<u64>,
    /// Where customer notifications go: `file` (JSON lines, by default
    /// `DATA_DIR/notifications.jsonl`), `stdout`, `smtp` (through `--smtp-url`) or
    /// `off`.
    #[arg(long, env = "EMPORIUM_NOTIFICATION_SENDER")]
    pub notification_sender: Option<String>,
    /// The file of the `file` sender.
    #[arg(long, env = "EMPORIUM_NOTIFICATION_FILE")]
    pub notification_file: Option<PathBuf>,
    /// The `file` sender's file at most, in bytes; past it the file becomes `FILE.1`
    /// (and `.1` to `.3` one older each; the oldest, `.4`, is removed).
    #[arg(long, env = "EMPORIUM_NOTIFICATION_FILE_BYTES_MAX")]
    pub notification_file_bytes_max: Option<u64>,
    /// The SMTP server of the `smtp` sender: `smtp://[user:password@]host[:port]`
    /// (add `?tls=required` for STARTTLS) or `smtps://…`.
    #[arg(long, env = "EMPORIUM_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The From address of notifications (`Name <address>`).
    #[arg(long, env = "EMPORIUM_NOTIFICATION_FROM")]
    pub notification_from: Option<String>,
    /// The shop's name in notifications.
    #[arg(long, env = "EMPORIUM_SHOP_NAME")]
    pub shop_name: Option<String>,
    /// Attempts to send a notification before it is given up.
    #[arg(long, env = "EMPORIUM_NOTIFICATION_ATTEMPTS_MAX")]
    pub notification_attempts_max: Option<u32>,
    /// The first retry's delay of a notification, in milliseconds (doubled after each
    /// failure, with jitter, up to an hour).
    #[arg(long, env = "EMPORIUM_NOTIFICATION_BACKOFF_MS")]
    pub notification_backoff_ms: Option<u64>,
    /// Access token lifetime, in seconds.
    #[arg(long, env = "EMPORIUM_ACCESS_TOKEN_TTL_S")]
    pub access_token_ttl_s: Option<u64>,
    /// Refresh token lifetime, in seconds.
    #[arg(long, env = "EMPORIUM_REFRESH_TOKEN_TTL_S")]
    pub refresh_token_ttl_s: Option<u64>,
    /// Token signing keys as `kid:secret` (secret base64, ≥ 32 bytes), comma-separated;
    /// the first signs, all verify. Without any, a key is generated and kept in the
    /// data directory.
    #[arg(long, env = "EMPORIUM_SIGNING_KEYS", value_delimiter = ',')]
    pub signing_keys: Option<Vec<String>>,
    /// Requests handled at once that only read.
    #[arg(long, env = "EMPORIUM_READS_CONCURRENCY_MAX")]
    pub reads_concurrency_max: Option<usize>,
    /// Requests handled at once that write.
    #[arg(long, env = "EMPORIUM_WRITES_CONCURRENCY_MAX")]
    pub writes_concurrency_max: Option<usize>,
    /// Commands waiting for the engine at most.
    #[arg(long, env = "EMPORIUM_QUEUE_COMMANDS_MAX")]
    pub queue_commands_max: Option<usize>,
    /// Settled orders kept in memory at most, the most recently changed ones; older
    /// ones are read from the data directory when asked for. Pending orders always
    /// stay in memory.
    #[arg(long, env = "EMPORIUM_ORDERS_IN_MEMORY")]
    pub orders_in_memory: Option<usize>,
    /// Idempotency records kept in memory at most, the most recently written ones;
    /// older ones are read from the data directory when their key comes again.
    #[arg(long, env = "EMPORIUM_IDEMPOTENCY_RECORDS_IN_MEMORY")]
    pub idempotency_records_in_memory: Option<usize>,
    /// Open connections at most; past it a new one is refused at once (503, closed).
    #[arg(long, env = "EMPORIUM_CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,
    /// Open connections from one client address at most (below `connections_max`).
    #[arg(long, env = "EMPORIUM_CONNECTIONS_PER_CLIENT_MAX")]
    pub connections_per_client_max: Option<usize>,
    /// Seconds a connection may take to send a complete request head.
    #[arg(long, env = "EMPORIUM_HEADER_TIMEOUT_S")]
    pub header_timeout_s: Option<u64>,
    /// Seconds an idle keep-alive connection is kept.
    #[arg(long, env = "EMPORIUM_IDLE_TIMEOUT_S")]
    pub idle_timeout_s: Option<u64>,
    /// Rate limits on or off (off only for benchmarks behind another limiter).
    #[arg(long, env = "EMPORIUM_RATE_LIMITS", num_args = 0..=1, default_missing_value = "true")]
    pub rate_limits: Option<bool>,
    /// Token endpoint and registration: burst per IP or account.
    #[arg(long, env = "EMPORIUM_RATE_AUTH_BURST")]
    pub rate_auth_burst: Option<u32>,
    /// Token endpoint and registration: sustained requests per minute.
    #[arg(long, env = "EMPORIUM_RATE_AUTH_PER_MIN")]
    pub rate_auth_per_min: Option<u32>,
    /// Reads: burst per IP, user or client.
    #[arg(long, env = "EMPORIUM_RATE_READ_BURST")]
    pub rate_read_burst: Option<u32>,
    /// Reads: sustained requests per second.
    #[arg(long, env = "EMPORIUM_RATE_READ_PER_S")]
    pub rate_read_per_s: Option<u32>,
    /// Writes: burst per IP, user or client.
    #[arg(long, env = "EMPORIUM_RATE_WRITE_BURST")]
    pub rate_write_burst: Option<u32>,
    /// Writes: sustained requests per second.
    #[arg(long, env = "EMPORIUM_RATE_WRITE_PER_S")]
    pub rate_write_per_s: Option<u32>,
    /// Log format: `human` or `json`.
    #[arg(long, env = "EMPORIUM_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// argon2id memory cost in KiB (19456 by default, as OWASP recommends).
    #[arg(long, env = "EMPORIUM_PASSWORD_HASH_KIB")]
    pub password_hash_kib: Option<u32>,
    /// Address on which standbys connect to follow this node's log (none: no
    /// replication). A standby given one serves its own standbys once promoted.
    #[arg(long, env = "EMPORIUM_REPLICATION_LISTEN")]
    pub replication_listen: Option<SocketAddr>,
    /// Standbys that must hold a write durably before it is acknowledged; 0 (the
    /// default) replicates asynchronously.
    #[arg(long, env = "EMPORIUM_SYNC_STANDBYS")]
    pub sync_standbys: Option<usize>,
    /// With fewer synchronous standbys answering: `strict` refuses writes (503
    /// `standbys_unavailable`), `degrade` falls back to asynchronous replication.
    #[arg(long, env = "EMPORIUM_SYNC_POLICY")]
    pub sync_policy: Option<String>,
    /// Milliseconds a write waits for its synchronous standbys.
    #[arg(long, env = "EMPORIUM_SYNC_TIMEOUT_MS")]
    pub sync_timeout_ms: Option<u64>,
    /// PEM certificate chain; with `--replication-tls-key`, standbys connect over TLS.
    #[arg(long, env = "EMPORIUM_REPLICATION_TLS_CERT")]
    pub replication_tls_cert: Option<PathBuf>,
    /// PEM private key of the replication certificate.
    #[arg(long, env = "EMPORIUM_REPLICATION_TLS_KEY")]
    pub replication_tls_key: Option<PathBuf>,
    /// On a standby: PEM certificates to trust for the primary's; given, the standby
    /// connects over TLS.
    #[arg(long, env = "EMPORIUM_REPLICATION_CA")]
    pub replication_ca: Option<PathBuf>,
    /// On a standby: the name the primary's certificate must carry (default: the host
    /// of `--primary`).
    #[arg(long, env = "EMPORIUM_REPLICATION_SERVER_NAME")]
    pub replication_server_name: Option<String>,
    /// A secret standbys present to their primary: set, a primary refuses standbys
    /// without it, and a standby presents it. Use the environment variable, not the flag,
    /// to keep it out of process listings.
    #[arg(long, env = "EMPORIUM_REPLICATION_SECRET", hide_env_values = true)]
    pub replication_secret: Option<String>,
}

/// The same options as the config file spells them.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    search_dir: Option<PathBuf>,
    search_synonyms: Option<String>,
    demo: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    body_bytes_max: Option<usize>,
    reservation_ttl_s: Option<u64>,
    cart_ttl_s: Option<u64>,
    return_window_days: Option<u64>,
    kpi_minute_days: Option<u64>,
    kpi_product_hour_days: Option<u64>,
    kpi_retention_days: Option<u64>,
    payment_callback_delay_ms: Option<u64>,
    payment_callback_wait_s: Option<u64>,
    payment_give_up_s: Option<u64>,
    webhook_allow_private: Option<bool>,
    webhook_timeout_ms: Option<u64>,
    webhook_attempts_max: Option<u32>,
    webhook_backoff_ms: Option<u64>,
    webhook_breaker_ms: Option<u64>,
    notification_sender: Option<String>,
    notification_file: Option<PathBuf>,
    notification_file_bytes_max: Option<u64>,
    smtp_url: Option<String>,
    notification_from: Option<String>,
    shop_name: Option<String>,
    notification_attempts_max: Option<u32>,
    notification_backoff_ms: Option<u64>,
    access_token_ttl_s: Option<u64>,
    refresh_token_ttl_s: Option<u64>,
    signing_keys: Option<Vec<String>>,
    reads_concurrency_max: Option<usize>,
    writes_concurrency_max: Option<usize>,
    queue_commands_max: Option<usize>,
    orders_in_memory: Option<usize>,
    idempotency_records_in_memory: Option<usize>,
    connections_max: Option<usize>,
    connections_per_client_max: Option<usize>,
    header_timeout_s: Option<u64>,
    idle_timeout_s: Option<u64>,
    rate_limits: Option<bool>,
    rate_auth_burst: Option<u32>,
    rate_auth_per_min: Option<u32>,
    rate_read_burst: Option<u32>,
    rate_read_per_s: Option<u32>,
    rate_write_burst: Option<u32>,
    rate_write_per_s: Option<u32>,
    log_format: Option<String>,
    password_hash_kib: Option<u32>,
    replication_listen: Option<SocketAddr>,
    sync_standbys: Option<usize>,
    sync_policy: Option<String>,
    sync_timeout_ms: Option<u64>,
    replication_tls_cert: Option<PathBuf>,
    replication_tls_key: Option<PathBuf>,
    replication_ca: Option<PathBuf>,
    replication_server_name: Option<String>,
    replication_secret: Option<String>,
}

/// The primary a standby follows, and its name there.
#[derive(Clone, Debug)]
pub struct StandbyOf {
    /// The primary's replication address.
    pub primary: String,
    /// This standby's name (its log consumer on the primary is `standby.<name>`).
    pub name: String,
    /// What it hears from the primary, kept across resynchronisations.
    pub stats: std::sync::Arc<emporium_replication::standby::StandbyStats>,
}

/// A token bucket's shape: `burst` tokens, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Most requests at once.
    pub burst: u32,
    /// Sustained requests per second.
    pub per_second: f64,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The search index's directory; `None`: `search` in the data directory.
    pub search_dir: Option<PathBuf>,
    /// Search synonym groups.
    pub search_synonyms: Vec<Vec<String>>,
    /// Load the demo catalog into an empty directory.
    pub demo: bool,
    /// Certificate and key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Unpaid orders' reservation time.
    pub reservation_ttl_s: u64,
    /// How long an open cart may go unchanged before it is dropped as abandoned.
    pub cart_ttl_s: u64,
    /// Days after fulfilment a customer may ask to return units.
    pub return_window_days: u64,
    /// Days the business figures keep per-minute counts.
    pub kpi_minute_days: u64,
    /// Days the business figures keep products' sales per hour.
    pub kpi_product_hour_days: u64,
    /// Days the business figures keep any detail.
    pub kpi_retention_days: u64,
    /// The simulated asynchronous provider's delay before its callback.
    pub payment_callback_delay_ms: u64,
    /// How long a payment awaits a callback before the provider is asked again.
    pub payment_callback_wait_s: u64,
    /// How long a provider may take to settle a payment before it is voided.
    pub payment_give_up_s: u64,
    /// Webhook deliveries: timeouts, retries, the breaker, the address check.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// Customer notifications: the sender, the From address, retries.
    pub notifications: crate::notifications::NotificationSettings,
    /// Access token lifetime.
    pub access_token_ttl_s: u64,
    /// Refresh token lifetime.
    pub refresh_token_ttl_s: u64,
    /// Configured signing keys (`kid:base64secret`).
    pub signing_keys: Vec<String>,
    /// Concurrent reads.
    pub reads_concurrency_max: usize,
    /// Concurrent writes.
    pub writes_concurrency_max: usize,
    /// Engine queue length.
    pub queue_commands_max: usize,
    /// Settled orders kept in memory at most.
    pub orders_in_memory: usize,
    /// Idempotency records kept in memory at most.
    pub idempotency_records_in_memory: usize,
    /// Open connections at most.
    pub connections_max: usize,
    /// Open connections from one client address at most.
    pub connections_per_client_max: usize,
    /// Time to send a complete request head.
    pub header_timeout_s: u64,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout_s: u64,
    /// Whether rate limits apply.
    pub rate_limits: bool,
    /// Token endpoint and registration.
    pub rate_auth: Rate,
    /// Reads.
    pub rate_read: Rate,
    /// Writes.
    pub rate_write: Rate,
    /// `human` or `json`.
    pub log_format: String,
    /// argon2id memory cost in KiB.
    pub password_hash_kib: u32,
    /// Where standbys connect, if anywhere.
    pub replication_listen: Option<SocketAddr>,
    /// Standbys that must hold a write before it is acknowledged.
    pub sync_standbys: usize,
    /// What happens when fewer answer.
    pub sync_policy: emporium_replication::SyncPolicy,
    /// How long a write waits for them.
    pub sync_timeout_ms: u64,
    /// Certificate and key of the replication listener (TLS), if any.
    pub replication_tls: Option<(PathBuf, PathBuf)>,
    /// On a standby: the certificates to trust for the primary's (TLS), if any.
    pub replication_ca: Option<PathBuf>,
    /// On a standby: the name the primary's certificate carries.
    pub replication_server_name: Option<String>,
    /// The secret standbys present to their primary.
    pub replication_secret: emporium_replication::Secret,
    /// The primary this node follows (`emporium standby`); `None` for a primary.
    pub standby: Option<StandbyOf>,
    /// Faults the engine injects (tests only).
    #[cfg(feature = "faults")]
    pub faults: emporium_engine::Faults,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8080".parse().expect("a valid address"),
            data_dir: PathBuf::from("./data"),
            search_dir: None,
            search_synonyms: Vec::new(),
            demo: false,
            tls: None,
            body_bytes_max: 1 << 20,
            reservation_ttl_s: 15 * 60,
            cart_ttl_s: 30 * 24 * 3600,
            return_window_days: 30,
            kpi_minute_days: 7,
            kpi_product_hour_days: 7,
            kpi_retention_days: 400,
            payment_callback_delay_ms: 1000,
            payment_callback_wait_s: 30,
            payment_give_up_s: 600,
            webhooks: crate::webhooks::WebhookSettings::default(),
            notifications: crate::notifications::NotificationSettings::default(),
            access_token_ttl_s: 15 * 60,
            refresh_token_ttl_s: 30 * 24 * 3600,
            signing_keys: Vec::new(),
            reads_concurrency_max: 4096,
            writes_concurrency_max: 2048,
            queue_commands_max: 65_536,
            orders_in_memory: emporium_engine::ORDERS_IN_MEMORY_DEFAULT,
            idempotency_records_in_memory: emporium_engine::IDEMPOTENCY_RECORDS_IN_MEMORY_DEFAULT,
            connections_max: 16_384,
            connections_per_client_max: 1_024,
            header_timeout_s: 10,
            idle_timeout_s: 60,
            rate_limits: true,
            rate_auth: Rate { burst: 10, per_second: 10.0 / 60.0 },
            rate_read: Rate { burst: 2000, per_second: 1000.0 },
            rate_write: Rate { burst: 500, per_second: 250.0 },
            log_format: "human".into(),
            password_hash_kib: 19_456,
            replication_listen: None,
            sync_standbys: 0,
            sync_policy: emporium_replication::SyncPolicy::Strict,
            sync_timeout_ms: 5_000,
            replication_tls: None,
            replication_ca: None,
            replication_server_name: None,
            replication_secret: Default::default(),
            standby: None,
            #[cfg(feature = "faults")]
            faults: Default::default(),
        }
    }
}

/// Synonym groups from `a|b|c;d|e`: empty words and groups of one word are dropped.
fn synonyms(text: &str) -> Vec<Vec<String>> {
    text.split(';')
        .map(|group| {
            group.split('|').map(str::trim).filter(|w| !w.is_empty()).map(String::from).collect()
        })
        .filter(|group: &Vec<String>| group.len() > 1)
        .collect()
}

/// The notification settings from the sender's options.
fn notification_settings(
    sender: Option<String>,
    file: Option<PathBuf>,
    smtp_url: Option<String>,
    base: crate::notifications::NotificationSettings,
) -> anyhow::Result<crate::notifications::NotificationSettings> {
    use crate::notifications::SenderKind;
    let sender = match sender.as_deref().unwrap_or("file") {
        "file" => SenderKind::File(file),
        "stdout" => SenderKind::Stdout,
        "smtp" => {
            let url = smtp_url.ok_or_else(|| {
                anyhow::anyhow!("notification_sender smtp needs smtp_url (smtp://host:port)")
            })?;
            // Checked now rather than at the first message.
            crate::notifications::SmtpSender::check_url(&url).map_err(anyhow::Error::msg)?;
            SenderKind::Smtp(url)
        }
        "off" => SenderKind::Off,
        other => {
            anyhow::bail!("notification_sender must be file, stdout, smtp or off, not {other:?}")
        }
    };
    Ok(crate::notifications::NotificationSettings { sender, ..base })
}

impl Config {
    /// Where the search index lives.
    pub fn search_path(&self) -> PathBuf {
        self.search_dir.clone().unwrap_or_else(|| self.data_dir.join("search"))
    }

    /// How long the business figures keep each level of detail.
    pub fn kpi_retention(&self) -> emporium_engine::KpiRetention {
        let days = |n: u64| (n as i64).saturating_mul(86_400_000);
        emporium_engine::KpiRetention {
            minutes_ms: days(self.kpi_minute_days),
            product_hours_ms: days(self.kpi_product_hour_days),
            all_ms: days(self.kpi_retention_days),
        }
    }

    /// Resolves flags and environment over the config file over the defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        macro_rules! pick {
            ($field:ident) => {
                args.$field.clone().or(file.$field.clone())
            };
        }
        let tls = match (pick!(tls_cert), pick!(tls_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let rate = |burst: Option<u32>, per_second: Option<f64>, default: Rate| Rate {
            burst: burst.unwrap_or(default.burst).max(1),
            per_second: per_second.unwrap_or(default.per_second).max(0.001),
        };
        let config = Config {
            listen: pick!(listen).unwrap_or(d.listen),
            data_dir: pick!(data_dir).unwrap_or(d.data_dir),
            search_dir: pick!(search_dir),
            search_synonyms: pick!(search_synonyms).map_or_else(Vec::new, |s| synonyms(&s)),
            demo: pick!(demo).unwrap_or(d.demo),
            tls,
            body_bytes_max: pick!(body_bytes_max).unwrap_or(d.body_bytes_max),
            reservation_ttl_s: pick!(reservation_ttl_s).unwrap_or(d.reservation_ttl_s),
            cart_ttl_s: pick!(cart_ttl_s).unwrap_or(d.cart_ttl_s),
            return_window_days: pick!(return_window_days).unwrap_or(d.return_window_days),
            kpi_minute_days: pick!(kpi_minute_days).unwrap_or(d.kpi_minute_days),
            kpi_product_hour_days: pick!(kpi_product_hour_days).unwrap_or(d.kpi_product_hour_days),
            kpi_retention_days: pick!(kpi_retention_days).unwrap_or(d.kpi_retention_days),
            payment_callback_delay_ms: pick!(payment_callback_delay_ms)
                .unwrap_or(d.payment_callback_delay_ms),
            payment_callback_wait_s: pick!(payment_callback_wait_s)
                .unwrap_or(d.payment_callback_wait_s),
            payment_give_up_s: pick!(payment_give_up_s).unwrap_or(d.payment_give_up_s),
            webhooks: crate::webhooks::WebhookSettings {
                allow_private: pick!(webhook_allow_private).unwrap_or(d.webhooks.allow_private),
                timeout_ms: pick!(webhook_timeout_ms).unwrap_or(d.webhooks.timeout_ms),
                attempts_max: pick!(webhook_attempts_max).unwrap_or(d.webhooks.attempts_max),
                backoff_ms: pick!(webhook_backoff_ms).unwrap_or(d.webhooks.backoff_ms),
                breaker_ms: pick!(webhook_breaker_ms).unwrap_or(d.webhooks.breaker_ms),
            },
            notifications: notification_settings(
                pick!(notification_sender),
                pick!(notification_file),
                pick!(smtp_url),
                crate::notifications::NotificationSettings {
                    from: pick!(notification_from).unwrap_or(d.notifications.from.clone()),
                    shop_name: pick!(shop_name).unwrap_or(d.notifications.shop_name.clone()),
                    attempts_max: pick!(notification_attempts_max)
                        .unwrap_or(d.notifications.attempts_max),
                    backoff_ms: pick!(notification_backoff_ms)
                        .unwrap_or(d.notifications.backoff_ms),
                    file_bytes_max: pick!(notification_file_bytes_max)
                        .unwrap_or(d.notifications.file_bytes_max),
                    ..d.notifications.clone()
                },
            )?,
            access_token_ttl_s: pick!(access_token_ttl_s).unwrap_or(d.access_token_ttl_s),
            refresh_token_ttl_s: pick!(refresh_token_ttl_s).unwrap_or(d.refresh_token_ttl_s),
            signing_keys: pick!(signing_keys).unwrap_or_default(),
            reads_concurrency_max: pick!(reads_concurrency_max).unwrap_or(d.reads_concurrency_max),
            writes_concurrency_max: pick!(writes_concurrency_max)
                .unwrap_or(d.writes_concurrency_max),
            queue_commands_max: pick!(queue_commands_max).unwrap_or(d.queue_commands_max),
            orders_in_memory: pick!(orders_in_memory).unwrap_or(d.orders_in_memory),
            idempotency_records_in_memory: pick!(idempotency_records_in_memory)
                .unwrap_or(d.idempotency_records_in_memory),
            connections_max: pick!(connections_max).unwrap_or(d.connections_max),
            connections_per_client_max: pick!(connections_per_client_max)
                .unwrap_or(d.connections_per_client_max),
            header_timeout_s: pick!(header_timeout_s).unwrap_or(d.header_timeout_s),
            idle_timeout_s: pick!(idle_timeout_s).unwrap_or(d.idle_timeout_s),
            rate_limits: pick!(rate_limits).unwrap_or(d.rate_limits),
            rate_auth: rate(
                pick!(rate_auth_burst),
                pick!(rate_auth_per_min).map(|m| f64::from(m) / 60.0),
                d.rate_auth,
            ),
            rate_read: rate(
                pick!(rate_read_burst),
                pick!(rate_read_per_s).map(f64::from),
                d.rate_read,
            ),
            rate_write: rate(
                pick!(rate_write_burst),
                pick!(rate_write_per_s).map(f64::from),
                d.rate_write,
            ),
            log_format: pick!(log_format).unwrap_or(d.log_format),
            password_hash_kib: pick!(password_hash_kib).unwrap_or(d.password_hash_kib),
            replication_listen: pick!(replication_listen),
            sync_standbys: pick!(sync_standbys).unwrap_or(d.sync_standbys),
            sync_policy: match pick!(sync_policy) {
                Some(text) => text.parse().map_err(|e: String| anyhow::anyhow!(e))?,
                None => d.sync_policy,
            },
            sync_timeout_ms: pick!(sync_timeout_ms).unwrap_or(d.sync_timeout_ms),
            replication_tls: match (pick!(replication_tls_cert), pick!(replication_tls_key)) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => anyhow::bail!("--replication-tls-cert and --replication-tls-key go together"),
            },
            replication_ca: pick!(replication_ca),
            replication_server_name: pick!(replication_server_name),
            replication_secret: emporium_replication::Secret::new(
                pick!(replication_secret).unwrap_or_default(),
            ),
            standby: None,
            #[cfg(feature = "faults")]
            faults: d.faults.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.body_bytes_max >= 1024, "body_bytes_max must be at least 1024");
        let n = &self.notifications;
        anyhow::ensure!(
            (1..=50).contains(&n.attempts_max),
            "notification_attempts_max must be 1 to 50"
        );
        anyhow::ensure!(
            (1..=3_600_000).contains(&n.backoff_ms),
            "notification_backoff_ms must be 1 to 3600000"
        );
        anyhow::ensure!(
            n.file_bytes_max >= 1024,
            "notification_file_bytes_max must be at least 1024"
        );
        anyhow::ensure!(
            n.from.parse::<lettre::message::Mailbox>().is_ok(),
            "notification_from must be an address such as 'Shop <shop@example.com>'"
        );
        anyhow::ensure!(
            (1..=200).contains(&n.shop_name.chars().count()),
            "shop_name must be 1 to 200 characters"
        );
        let w = &self.webhooks;
        anyhow::ensure!(
            (100..=60_000).contains(&w.timeout_ms),
            "webhook_timeout_ms must be 100 to 60000"
        );
        anyhow::ensure!((1..=50).contains(&w.attempts_max), "webhook_attempts_max must be 1 to 50");
        anyhow::ensure!(
            (1..=300_000).contains(&w.backoff_ms) && (1..=3_600_000).contains(&w.breaker_ms),
            "webhook_backoff_ms must be 1 to 300000 and webhook_breaker_ms 1 to 3600000"
        );
        anyhow::ensure!(self.reservation_ttl_s >= 1, "reservation_ttl_s must be at least 1");
        anyhow::ensure!(self.cart_ttl_s >= 1, "cart_ttl_s must be at least 1");
        anyhow::ensure!(
            self.return_window_days <= 3650,
            "return_window_days must be at most 3650 (ten years)"
        );
        anyhow::ensure!(
            (1..=3650).contains(&self.kpi_minute_days)
                && (1..=3650).contains(&self.kpi_product_hour_days)
                && (1..=3650).contains(&self.kpi_retention_days),
            "kpi_minute_days, kpi_product_hour_days and kpi_retention_days must be 1 to 3650"
        );
        anyhow::ensure!(
            self.kpi_retention_days >= self.kpi_minute_days.max(self.kpi_product_hour_days),
            "kpi_retention_days must be at least kpi_minute_days and kpi_product_hour_days: \
             the summed detail is kept within the retention"
        );
        anyhow::ensure!(
            self.payment_callback_delay_ms <= 600_000,
            "payment_callback_delay_ms must be at most 600000 (ten minutes)"
        );
        anyhow::ensure!(
            (1..=86_400).contains(&self.payment_callback_wait_s)
                && (1..=86_400).contains(&self.payment_give_up_s),
            "payment_callback_wait_s and payment_give_up_s must be 1 to 86400 (a day)"
        );
        anyhow::ensure!(
            self.payment_callback_delay_ms < self.payment_callback_wait_s * 1000
                && self.payment_callback_wait_s < self.payment_give_up_s,
            "payments need payment_callback_delay_ms < payment_callback_wait_s (in ms) < \
             payment_give_up_s (in ms): a callback is awaited longer than it takes, and a \
             payment given up only after it was asked again"
        );
        anyhow::ensure!(self.access_token_ttl_s >= 1, "access_token_ttl_s must be at least 1");
        anyhow::ensure!(self.refresh_token_ttl_s >= 1, "refresh_token_ttl_s must be at least 1");
        anyhow::ensure!(
            self.reads_concurrency_max >= 1 && self.writes_concurrency_max >= 1,
            "concurrency limits must be at least 1"
        );
        anyhow::ensure!(self.queue_commands_max >= 1, "queue_commands_max must be at least 1");
        anyhow::ensure!(
            (1..=self.connections_max).contains(&self.connections_per_client_max),
            "connections_per_client_max must be 1 to connections_max"
        );
        anyhow::ensure!(
            self.header_timeout_s >= 1 && self.idle_timeout_s >= 1,
            "header_timeout_s and idle_timeout_s must be at least 1"
        );
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "human" | "json"),
            "log_format is human or json"
        );
        anyhow::ensure!(self.password_hash_kib >= 8, "password_hash_kib must be at least 8");
        anyhow::ensure!(
            self.sync_standbys == 0 || self.replication_listen.is_some(),
            "sync_standbys needs replication_listen: standbys connect there"
        );
        anyhow::ensure!(self.sync_standbys <= 16, "sync_standbys must be at most 16");
        anyhow::ensure!(
            (10..=600_000).contains(&self.sync_timeout_ms),
            "sync_timeout_ms must be 10 to 600000"
        );
        Ok(())
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synonym_groups_are_read_from_one_line() {
        let groups = synonyms(" tee | t-shirt|tshirt ;sofa|couch;; alone ;|");
        assert_eq!(groups, [vec!["tee", "t-shirt", "tshirt"], vec!["sofa", "couch"]]);
        assert!(synonyms("").is_empty());
    }

    #[test]
    fn demo_is_a_bare_flag_or_takes_a_value() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().serve.demo;
        assert_eq!(parse(&["emporium", "--demo"]), Some(true));
        assert_eq!(parse(&["emporium", "--demo", "false"]), Some(false));
        assert_eq!(parse(&["emporium", "--demo", "--listen", "127.0.0.1:1"]), Some(true));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emporium.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nbody_bytes_max = 2048\nrate_read_per_s = 5\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            body_bytes_max: Some(4096),
            ..Default::default()
        };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.body_bytes_max, 4096);
        assert_eq!(config.rate_read.per_second, 5.0);
        assert_eq!(config.reservation_ttl_s, 15 * 60);
        std::fs::write(&path, "no_such_option = 1\n").unwrap();
        let error = Config::resolve(&args).unwrap_err().to_string();
        assert!(error.contains("no_such_option"), "{error}");
    }

    #[test]
    fn the_notification_file_limit_comes_from_the_file_and_has_a_floor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emporium.toml");
        std::fs::write(&path, "notification_file_bytes_max = 1048576\n").unwrap();
        let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
        assert_eq!(Config::resolve(&args).unwrap().notifications.file_bytes_max, 1 << 20);
        let default = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(default.notifications.file_bytes_max, 64 << 20);
        let args = ServeArgs { notification_file_bytes_max: Some(1023), ..args };
        let error = Config::resolve(&args).unwrap_err().to_string();
        assert!(error.contains("notification_file_bytes_max must be at least 1024"), "{error}");
    }

    #[test]
    fn kpi_retention_comes_from_the_flags_and_keeps_its_order() {
        let day = 86_400_000;
        let config = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(config.kpi_retention(), emporium_engine::KpiRetention::default());
        let args = ServeArgs {
            kpi_minute_days: Some(2),
            kpi_product_hour_days: Some(30),
            kpi_retention_days: Some(90),
            ..Default::default()
        };
        let retention = Config::resolve(&args).unwrap().kpi_retention();
        let days = (retention.minutes_ms, retention.product_hours_ms, retention.all_ms);
        assert_eq!(days, (2 * day, 30 * day, 90 * day));
        for (minute, product_hour, all, refused) in [
            (0, 7, 400, "1 to 3650"),
            (7, 7, 3651, "1 to 3650"),
            (7, 30, 10, "at least"),
            (20, 7, 10, "at least"),
        ] {
            let args = ServeArgs {
                kpi_minute_days: Some(minute),
                kpi_product_hour_days: Some(product_hour),
                kpi_retention_days: Some(all),
                ..Default::default()
            };
            let error = Config::resolve(&args).unwrap_err().to_string();
            assert!(error.contains(refused), "{minute}/{product_hour}/{all}: {error}");
        }
    }
}
