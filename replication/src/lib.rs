//! Warm standbys for Emporium: the primary ships its durable log to standbys over TCP;
//! each standby appends the entries to its own log (synced), applies them through the
//! same `apply` the primary used, serves reads from the result and acknowledges its
//! durable LSN. A standby can be promoted; epochs fence the primary it replaces.
//!
//! - [`Primary`]: the listener for standbys, a session per standby, and the
//!   [`emporium_engine::ReleaseGate`] of synchronous replication (`--sync-standbys K`,
//!   [`SyncPolicy`]).
//! - [`standby`]: [`standby::bootstrap`] an empty directory from a checkpoint streamed
//!   by the primary, then [`standby::follow`] its log, reconnecting with backoff.
//! - [`protocol`]: the versioned, length-prefixed, checksummed frames. Only this crate
//!   knows them.
//!
//! Embedding a standby:
//!
//! ```no_run
//! use emporium_engine::{Engine, EngineConfig, NodeRole};
//! use emporium_replication::standby::{self, StandbyConfig, StandbyStats};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = StandbyConfig {
//!     primary: "10.0.0.1:7070".into(),
//!     name: "eu-west-1".into(),
//!     data_dir: "standby-data".into(),
//!     tls: None, // or Some(tls::Connector::new("primary-ca.pem".as_ref(), "db1.example")?)
//!     secret: emporium_replication::Secret::new("the primary's --replication-secret"),
//! };
//! let stats = StandbyStats::default();
//! if standby::needs_bootstrap(&config.data_dir) {
//!     standby::bootstrap(&config, &stats).await?;
//! }
//! let mut engine_config = EngineConfig::new(&config.data_dir);
//! engine_config.role = Some(NodeRole::Standby);
//! let engine = Engine::open(engine_config)?;
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! // Reads are served from `engine.state()` meanwhile; returns once promoted.
//! let outcome = standby::follow(engine.clone(), config, &stats, shutdown).await;
//! println!("{outcome:?}");
//! # Ok(()) }
//! ```

mod primary;
pub mod protocol;
pub mod standby;
pub mod tls;

use std::time::Duration;

pub use primary::{Primary, PrimaryConfig, PrimaryStats, StandbyStatus, SyncPolicy};
pub use protocol::PROTOCOL_VERSION;

/// The secret standbys present to their primary; its `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret (empty: none is required or presented).
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(none)" } else { "Secret(…)" })
    }
}

/// A connection, plain or TLS.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
pub(crate) type Link = Box<dyn Io>;
pub(crate) type LinkReader = tokio::io::BufReader<tokio::io::ReadHalf<Link>>;
pub(crate) type LinkWriter = tokio::io::BufWriter<tokio::io::WriteHalf<Link>>;

/// A standby's log consumer on its primary is this prefix and its name.
pub const CONSUMER_PREFIX: &str = "standby.";

/// How long the opening of a session may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle primary tells its standbys it is there.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// Why a replication session or a bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed, closed or went silent.
    #[error(transparent)]
    Wire(#[from] protocol::ProtocolError),
    /// A frame was damaged, duplicated or out of order; nothing of it was applied.
    #[error("damaged stream: {0}")]
    Damaged(String),
    /// The peer sent something the protocol does not allow there.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The peer refused the session.
    #[error("refused: {0}")]
    Refused(String),
    /// A file of a checkpoint could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] emporium_engine::EngineError),
}

/// The result of a replication call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `name` is a valid standby name: 1–48 characters of `[a-z0-9._-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests;
