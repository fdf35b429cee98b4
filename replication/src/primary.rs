//! The primary's side: a listener that takes standbys, one session per standby that
//! ships the durable log, and the release gate of synchronous replication.
//!
//! ```text
//! standby ─connect─► listener ─► session: Hello → (log matches? Welcome : Resync)
//!   writer: read_log(from) ─► Entries frames (Heartbeat when idle)
//!   reader: Ack(durable LSN) ─► the standby's place ─► consumer.advance, gate wakes
//! engine committer ─► releaser ─► Hub::wait(lsn): K standbys hold it? (or policy)
//! ```
//!
//! Invariants: only durable entries are shipped; a standby's log consumer on the
//! primary (`standby.<name>`) keeps the log from its acknowledged LSN on, up to the
//! engine's cap; a standby is resumed only when its last LSN is durable here and was
//! written in the same epoch here, otherwise it must bootstrap again; a standby in a
//! newer epoch makes this primary step down.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use emporium_engine::{Engine, EngineError, Lsn, NodeRole, ReleaseGate, ENGINE_FORMAT_VERSION};
use parking_lot::{Condvar, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncReadExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::protocol::{read_message, read_message_within, Message, ProtocolError, CHUNK_BYTES};
use crate::{
    valid_name, Link, LinkReader, LinkWriter, HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL,
    PROTOCOL_VERSION,
};

/// Entries read from the log per step, and bytes of entries per frame at most.
const ENTRIES_PER_READ: usize = 4096;
const FRAME_ENTRY_BYTES_MAX: usize = 4 << 20;
/// The largest opening message accepted (before the peer has shown the secret).
const HELLO_BYTES_MAX: usize = 64 << 10;
/// Shipped but unacknowledged frames remembered for lag, per standby.
const IN_FLIGHT_MAX: usize = 4096;
/// Standby sessions at once.
const SESSIONS_MAX: usize = 32;

/// What the primary does when fewer synchronous standbys answer than it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Refuse writes (new ones at once, waiting ones after the timeout): nothing is
    /// acknowledged that fewer than K standbys hold. RPO 0, availability traded.
    #[default]
    Strict,
    /// Fall back to asynchronous replication until enough standbys are back, and say
    /// so in the status and metrics.
    Degrade,
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<SyncPolicy, String> {
        match text {
            "strict" => Ok(SyncPolicy::Strict),
            "degrade" => Ok(SyncPolicy::Degrade),
            other => Err(format!("sync policy {other:?} is neither strict nor degrade")),
        }
    }
}

/// How the primary replicates.
#[derive(Clone, Debug)]
pub struct PrimaryConfig {
    /// Standbys that must hold a write durably before it is acknowledged (0:
    /// asynchronous).
    pub sync_standbys: usize,
    /// What happens when fewer answer.
    pub sync_policy: SyncPolicy,
    /// How long a write waits for its standbys' acknowledgements.
    pub sync_timeout: Duration,
    /// A standby silent for this long (no acknowledgement of a heartbeat) is
    /// disconnected and no longer counts.
    pub standby_timeout: Duration,
    /// Where checkpoints for bootstrapping standbys are written (on the data
    /// directory's file system, so they are hard links), then removed.
    pub scratch_dir: PathBuf,
    /// TLS for standbys' connections; `None`: plain TCP.
    pub tls: Option<crate::tls::Acceptor>,
    /// A secret every standby must present (empty: none). Without it, anyone who can
    /// reach the replication address can copy the whole data directory.
    pub secret: crate::Secret,
}

impl PrimaryConfig {
    /// Asynchronous replication, checkpoints under `scratch_dir`.
    pub fn new(scratch_dir: impl Into<PathBuf>) -> PrimaryConfig {
        PrimaryConfig {
            sync_standbys: 0,
            sync_policy: SyncPolicy::Strict,
            sync_timeout: Duration::from_secs(5),
            standby_timeout: Duration::from_secs(3),
            scratch_dir: scratch_dir.into(),
            tls: None,
            secret: crate::Secret::default(),
        }
    }
}

/// One connected standby, as `GET /v1/admin/replication` shows it.
#[derive(Clone, Debug)]
pub struct StandbyStatus {
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Everything up to it is durable on the standby.
    pub acked_lsn: u64,
    /// The last LSN shipped to it.
    pub shipped_lsn: u64,
    /// How long its oldest unacknowledged entry has waited (0 when it holds
    /// everything shipped), in milliseconds.
    pub lag_ms: u64,
    /// `sync` when it counts towards the synchronous standbys, else `async`.
    pub mode: &'static str,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct PrimaryStats {
    /// Bytes of frames shipped to standbys.
    pub bytes_shipped: AtomicU64,
    /// Log entries shipped.
    pub entries_shipped: AtomicU64,
    /// Standby sessions opened (a reconnecting standby opens a new one).
    pub sessions: AtomicU64,
    /// Checkpoints sent to standbys that had to bootstrap (again).
    pub resyncs: AtomicU64,
    /// Writes acknowledged without their synchronous standbys (policy `degrade`).
    pub degraded_releases: AtomicU64,
    /// Writes not acknowledged because too few standbys held them (policy `strict`).
    pub refused_releases: AtomicU64,
    /// Lag samples (ship to acknowledgement), in microseconds, most recent last.
    lag_samples: Mutex<VecDeque<u64>>,
}

impl PrimaryStats {
    /// The ship-to-acknowledgement lags recorded since the last call, in microseconds
    /// (the latest 65,536 at most).
    pub fn take_lag_samples_us(&self) -> Vec<u64> {
        self.lag_samples.lock().drain(..).collect()
    }

    fn lag_sample(&self, us: u64) {
        let mut samples = self.lag_samples.lock();
        if samples.len() == 65_536 {
            samples.pop_front();
        }
        samples.push_back(us);
    }
}

struct Place {
    name: String,
    addr: SocketAddr,
    acked: u64,
    shipped: u64,
    in_flight: VecDeque<(u64, Instant)>,
}

/// The primary's replication: sessions with standbys and the synchronous gate. Give
/// it to [`emporium_engine::EngineConfig::release_gate`] before the engine opens, then
/// [`Primary::serve`] a listener.
#[derive(Clone, Debug)]
pub struct Primary {
    inner: Arc<Shared>,
}

struct Shared {
    config: PrimaryConfig,
    places: Mutex<BTreeMap<u64, Place>>,
    acked: Condvar,
    next_session: AtomicU64,
    degraded: AtomicBool,
    /// Set when this node stepped down: nothing more is acknowledged.
    fenced: AtomicBool,
    stats: PrimaryStats,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Primary {
    /// A primary's replication with `config`.
    pub fn new(config: PrimaryConfig) -> Primary {
        Primary {
            inner: Arc::new(Shared {
                config,
                places: Mutex::new(BTreeMap::new()),
                acked: Condvar::new(),
                next_session: AtomicU64::new(1),
                degraded: AtomicBool::new(false),
                fenced: AtomicBool::new(false),
                stats: PrimaryStats::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PrimaryConfig {
        &self.inner.config
    }

    /// The connected standbys.
    pub fn standbys(&self) -> Vec<StandbyStatus> {
        let now = Instant::now();
        let places = self.inner.places.lock();
        let sync = self.inner.config.sync_standbys > 0;
        places
            .values()
            .map(|p| StandbyStatus {
                name: p.name.clone(),
                addr: p.addr,
                acked_lsn: p.acked,
                shipped_lsn: p.shipped,
                lag_ms: p.in_flight.front().map_or(0, |(_, at)| (now - *at).as_millis() as u64),
                mode: if sync { "sync" } else { "async" },
            })
            .collect()
    }

    /// Whether writes are being acknowledged without their synchronous standbys
    /// (policy `degrade`, too few answering).
    pub fn degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::Acquire)
    }

    /// The counters.
    pub fn stats(&self) -> &PrimaryStats {
        &self.inner.stats
    }

    /// Takes standbys on `listener` until `shutdown` turns true. Each session ends on
    /// its own when its standby goes silent; at shutdown they are dropped.
    pub async fn serve(
        &self,
        listener: TcpListener,
        engine: Engine,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tracing::info!(addr = ?listener.local_addr().ok(), "replication listening");
        let sessions = Arc::new(tokio::sync::Semaphore::new(SESSIONS_MAX));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let (stream, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "replication accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            };
            let Ok(permit) = sessions.clone().try_acquire_owned() else {
                tracing::warn!(%addr, "too many standby sessions; refusing");
                continue;
            };
            let primary = self.clone();
            let engine = engine.clone();
            tasks.spawn(async move {
                let _permit = permit;
                if let Err(error) = primary.session(engine, stream, addr).await {
                    tracing::info!(%addr, %error, "standby session ended");
                }
            });
        }
        tasks.shutdown().await;
    }

    async fn session(&self, engine: Engine, stream: TcpStream, addr: SocketAddr) -> Result<()> {
        let _ = stream.set_nodelay(true);
        let link: Link = match &self.inner.config.tls {
            Some(tls) => {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.0.accept(stream)).await {
                    Ok(Ok(tls)) => Box::new(tls),
                    Ok(Err(e)) => return Err(Error::Refused(format!("TLS handshake: {e}"))),
                    Err(_) => return Err(Error::Refused("TLS handshake timed out".into())),
                }
            }
            None => Box::new(stream),
        };
        let (reader, writer) = tokio::io::split(link);
        let mut reader = BufReader::new(reader);
        let mut writer = BufWriter::with_capacity(256 << 10, writer);
        // Nothing large is read from a peer before it shows the secret.
        let hello = read_message_within(&mut reader, HANDSHAKE_TIMEOUT, HELLO_BYTES_MAX).await?;
        let Message::Hello {
            version,
            format,
            name,
            cluster,
            epoch,
            last_lsn,
            last_epoch,
            last_epoch_id,
            bootstrap,
            secret,
        } = hello
        else {
            return Err(Error::Protocol(format!("expected Hello, got {}", hello.name())));
        };
        let refuse = |reason: String| Message::Refused { reason };
        // First: whoever cannot show the secret learns nothing and changes nothing (a
        // forged epoch would otherwise fence this primary).
        if !same_secret(secret.as_slice(), self.inner.config.secret.as_bytes()) {
            tracing::warn!(%addr, "a standby without the replication secret was refused");
            send(&mut writer, &refuse("the replication secret does not match".into())).await?;
            return Err(Error::Refused("wrong replication secret".into()));
        }
        if version != PROTOCOL_VERSION || format != ENGINE_FORMAT_VERSION {
            let reason = format!(
                "protocol {version} and format {format}; this primary speaks protocol \
                 {PROTOCOL_VERSION}, format {ENGINE_FORMAT_VERSION}"
            );
            send(&mut writer, &refuse(reason.clone())).await?;
            return Err(Error::Refused(reason));
        }
        if !valid_name(&name) {
            let reason = format!("standby name {name:?} is not 1-48 characters of [a-z0-9._-]");
            send(&mut writer, &refuse(reason.clone())).await?;
            return Err(Error::Refused(reason));
        }
        if !bootstrap && cluster != engine.cluster_id() {
            // Never Resync here: the standby would discard its data for another shop's.
            let reason = format!(
                "the standby belongs to cluster {cluster:016x}, this primary to {:016x}",
                engine.cluster_id()
            );
            send(&mut writer, &refuse(reason.clone())).await?;
            return Err(Error::Refused(reason));
        }
        if epoch > engine.epoch() && engine.role() == NodeRole::Primary {
            // Someone promoted a newer primary: this one must not acknowledge writes.
            let reason = format!("standby {name} is in epoch {epoch}, past this node's");
            self.step_down(&engine, &reason)?;
            send(&mut writer, &refuse(reason.clone())).await?;
            return Err(Error::Refused(reason));
        }
        if engine.role() != NodeRole::Primary {
            send(&mut writer, &refuse("this node is not a primary".into())).await?;
            return Err(Error::Refused("not a primary".into()));
        }
        self.inner.stats.sessions.fetch_add(1, Ordering::Relaxed);
        let consumer_name = format!("{}{name}", crate::CONSUMER_PREFIX);
        if bootstrap {
            // Registered before the checkpoint is taken: the log after it is kept.
            engine.register_consumer(&consumer_name)?;
            return self.send_checkpoint(&engine, &mut writer, &name).await;
        }
        let epochs = engine.epochs();
        let durable = engine.durable_lsn().0;
        let here = epochs.epoch_at(Lsn(last_lsn));
        let matches = last_lsn <= durable && here.epoch == last_epoch && here.id == last_epoch_id;
        if !matches {
            let reason = format!(
                "the standby's log ends at LSN {last_lsn} of epoch {last_epoch} \
                 ({last_epoch_id:016x}); this primary's LSN {last_lsn} is {} (durable to \
                 {durable})",
                if last_lsn <= durable {
                    format!("of epoch {} ({:016x})", here.epoch, here.id)
                } else {
                    "not written yet".into()
                }
            );
            send(&mut writer, &Message::Resync { reason: reason.clone() }).await?;
            return Err(Error::Refused(reason));
        }
        // Registered only for a standby that can resume, so a refused one holds no log.
        let consumer = engine.register_consumer(&consumer_name)?;
        if last_lsn + 1 < engine.first_log_lsn().0 || consumer.is_dropped() {
            let reason = format!(
                "the log was trimmed to LSN {}; the standby needs {}",
                engine.first_log_lsn().0,
                last_lsn + 1
            );
            send(&mut writer, &Message::Resync { reason: reason.clone() }).await?;
            return Err(Error::Refused(reason));
        }
        consumer.advance(Lsn(last_lsn))?;
        let welcome = Message::Welcome {
            epoch: epochs.current(),
            cluster: engine.cluster_id(),
            epochs: epochs.starts().iter().map(|s| (s.epoch, s.first_lsn.0, s.id)).collect(),
            from_lsn: last_lsn + 1,
        };
        send(&mut writer, &welcome).await?;
        tracing::info!(%addr, %name, from = last_lsn + 1, "standby resumed");
        let session = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        self.inner.places.lock().insert(
            session,
            Place { name, addr, acked: last_lsn, shipped: last_lsn, in_flight: VecDeque::new() },
        );
        let (done, mut stopped) = watch::channel(false);
        let acks = {
            let primary = self.clone();
            let engine = engine.clone();
            tokio::spawn(async move {
                let result = primary.read_acks(&engine, &consumer, &mut reader, session).await;
                let _ = done.send(true);
                result
            })
        };
        // However the session ends (an error, or dropped at shutdown), its place goes
        // and its reader stops.
        let _place = PlaceGuard { inner: self.inner.clone(), session, acks };
        self.ship(&engine, &mut writer, session, last_lsn + 1, &mut stopped).await
    }

    fn step_down(&self, engine: &Engine, reason: &str) -> Result<()> {
        self.inner.fenced.store(true, Ordering::Release);
        // Under the lock, so a waiting release cannot miss it.
        drop(self.inner.places.lock());
        self.inner.acked.notify_all();
        Ok(engine.step_down(reason)?)
    }

    /// Takes writes again after this node was promoted (a node that stepped down and
    /// was promoted later); call it once `Engine::promote` succeeded.
    pub fn promoted(&self) {
        self.inner.fenced.store(false, Ordering::Release);
        self.inner.degraded.store(false, Ordering::Release);
    }

    /// Ships durable entries from `from` on until the standby goes away.
    async fn ship(
        &self,
        engine: &Engine,
        writer: &mut LinkWriter,
        session: u64,
        mut from: u64,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let mut durable = engine.subscribe();
        loop {
            if *stopped.borrow() {
                return Err(Error::Protocol("the standby stopped acknowledging".into()));
            }
            if engine.role() != NodeRole::Primary {
                send(writer, &Message::Refused { reason: "stepped down".into() }).await?;
                return Err(Error::Refused("stepped down".into()));
            }
            let reader = engine.clone();
            let entries =
                tokio::task::spawn_blocking(move || reader.read_log(Lsn(from), ENTRIES_PER_READ))
                    .await
                    .map_err(|e| Error::Protocol(format!("the log reader failed: {e}")))?;
            let entries = match entries {
                Ok(entries) => entries,
                Err(e) if e.is_log_trimmed() => {
                    let reason = e.to_string();
                    send(writer, &Message::Resync { reason: reason.clone() }).await?;
                    return Err(Error::Refused(reason));
                }
                Err(e) => return Err(e.into()),
            };
            if entries.is_empty() {
                let heartbeat = Message::Heartbeat {
                    epoch: engine.epoch(),
                    durable_lsn: engine.durable_lsn().0,
                };
                self.within(write_message_flushed(writer, &heartbeat)).await?;
                tokio::select! {
                    _ = durable.changed() => {}
                    _ = stopped.changed() => {}
                    _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
                }
                continue;
            }
            let epoch = engine.epoch();
            let mut batch = Vec::new();
            let mut bytes = 0;
            let count = entries.len();
            for (i, entry) in entries.into_iter().enumerate() {
                let encoded = entry.to_bytes();
                bytes += encoded.len();
                batch.push((entry.lsn.0, encoded));
                if bytes >= FRAME_ENTRY_BYTES_MAX || i + 1 == count {
                    let last = batch.last().map_or(from, |(lsn, _)| *lsn);
                    let shipped = batch.len() as u64;
                    let frame = Message::Entries { epoch, entries: std::mem::take(&mut batch) };
                    let encoded = frame.encode();
                    self.within(writer.write_all(&encoded)).await?;
                    self.inner
                        .stats
                        .bytes_shipped
                        .fetch_add(encoded.len() as u64, Ordering::Relaxed);
                    self.inner.stats.entries_shipped.fetch_add(shipped, Ordering::Relaxed);
                    if let Some(place) = self.inner.places.lock().get_mut(&session) {
                        place.shipped = last;
                        if place.in_flight.len() < IN_FLIGHT_MAX {
                            place.in_flight.push_back((last, Instant::now()));
                        }
                    }
                    from = last + 1;
                    bytes = 0;
                }
            }
            self.within(writer.flush()).await?;
        }
    }

    /// A write to a standby, bounded by `standby_timeout`: a peer that stops reading
    /// (a paused link with full buffers) ends its session instead of holding it.
    async fn within(
        &self,
        write: impl std::future::Future<Output = std::io::Result<()>>,
    ) -> Result<()> {
        let timeout = self.inner.config.standby_timeout;
        match tokio::time::timeout(timeout, write).await {
            Ok(written) => Ok(written.map_err(ProtocolError::from)?),
            Err(_) => Err(Error::Wire(ProtocolError::Timeout(timeout))),
        }
    }

    /// Reads the standby's acknowledgements until it goes silent.
    async fn read_acks(
        &self,
        engine: &Engine,
        consumer: &emporium_engine::LogConsumer,
        reader: &mut LinkReader,
        session: u64,
    ) -> Result<()> {
        let timeout = self.inner.config.standby_timeout;
        loop {
            let message = read_message(reader, timeout).await?;
            let Message::Ack { epoch, durable_lsn } = message else {
                return Err(Error::Protocol(format!("expected Ack, got {}", message.name())));
            };
            if epoch > engine.epoch() {
                self.step_down(engine, &format!("a standby acknowledged in epoch {epoch}"))?;
                return Err(Error::Refused("a newer epoch exists".into()));
            }
            let primary_durable = engine.durable_lsn().0;
            let durable_lsn = durable_lsn.min(primary_durable);
            {
                let mut places = self.inner.places.lock();
                let Some(place) = places.get_mut(&session) else { return Ok(()) };
                place.acked = place.acked.max(durable_lsn);
                // Degraded (policy degrade) ends once enough standbys hold everything:
                // from then on writes wait for them again.
                let needed = self.inner.config.sync_standbys;
                let current = places.values().filter(|p| p.acked >= primary_durable).count();
                if needed > 0 && current >= needed {
                    self.inner.degraded.store(false, Ordering::Release);
                }
                let Some(place) = places.get_mut(&session) else { return Ok(()) };
                let now = Instant::now();
                while let Some(&(lsn, at)) = place.in_flight.front() {
                    if lsn > place.acked {
                        break;
                    }
                    place.in_flight.pop_front();
                    self.inner.stats.lag_sample((now - at).as_micros() as u64);
                }
            }
            self.inner.acked.notify_all();
            consumer.advance(Lsn(durable_lsn))?;
        }
    }

    /// Streams a fresh checkpoint of the data directory, then ends the session: the
    /// standby opens it and comes back to tail the log from there.
    async fn send_checkpoint(
        &self,
        engine: &Engine,
        writer: &mut LinkWriter,
        name: &str,
    ) -> Result<()> {
        self.inner.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .inner
            .config
            .scratch_dir
            .join(format!("checkpoint-{name}-{}", rand::random::<u64>()));
        let taker = engine.clone();
        let target = dir.clone();
        let lsn = tokio::task::spawn_blocking(move || -> Result<u64> {
            std::fs::create_dir_all(target.parent().expect("a scratch directory"))
                .map_err(|e| Error::Io(format!("creating the scratch directory: {e}")))?;
            let lsn = taker.durable_lsn().0;
            taker.checkpoint(&target)?;
            Ok(lsn)
        })
        .await
        .map_err(|e| Error::Protocol(format!("the checkpoint failed: {e}")))?;
        let sent = async {
            let lsn = lsn?;
            let mut files = Vec::new();
            list_files(&dir, &dir, &mut files)?;
            for (path, len) in files {
                send(writer, &Message::File { path: path.clone(), len }).await?;
                let mut file = tokio::fs::File::open(dir.join(&path))
                    .await
                    .map_err(|e| Error::Io(format!("opening {path}: {e}")))?;
                let mut left = len;
                let mut chunk = vec![0; CHUNK_BYTES];
                while left > 0 {
                    let n = (left as usize).min(CHUNK_BYTES);
                    file.read_exact(&mut chunk[..n])
                        .await
                        .map_err(|e| Error::Io(format!("reading {path}: {e}")))?;
                    let frame = Message::Chunk(chunk[..n].to_vec()).encode();
                    writer.write_all(&frame).await.map_err(ProtocolError::from)?;
                    self.inner.stats.bytes_shipped.fetch_add(frame.len() as u64, Ordering::Relaxed);
                    left -= n as u64;
                }
            }
            send(writer, &Message::CheckpointDone { lsn }).await?;
            tracing::info!(%name, lsn, "checkpoint sent to a standby");
            Ok(())
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        sent
    }
}

impl ReleaseGate for Primary {
    fn admit(&self) -> emporium_engine::Result<()> {
        if self.inner.fenced.load(Ordering::Acquire) {
            return Err(EngineError::ReadOnlyStandby);
        }
        let needed = self.inner.config.sync_standbys;
        if needed == 0 || self.inner.config.sync_policy == SyncPolicy::Degrade {
            return Ok(());
        }
        let connected = self.inner.places.lock().len();
        if connected < needed {
            return Err(EngineError::StandbysUnavailable(format!(
                "{connected} of {needed} synchronous standbys connected"
            )));
        }
        Ok(())
    }

    fn wait(&self, lsn: Lsn, committed: Instant) -> emporium_engine::Result<()> {
        let config = &self.inner.config;
        let needed = config.sync_standbys;
        if needed == 0 {
            return Ok(());
        }
        let deadline = committed + config.sync_timeout;
        let mut places = self.inner.places.lock();
        loop {
            if self.inner.fenced.load(Ordering::Acquire) {
                return Err(EngineError::StandbysUnavailable(
                    "this node stepped down: a newer primary exists".into(),
                ));
            }
            let holding = places.values().filter(|p| p.acked >= lsn.0).count();
            if holding >= needed {
                self.inner.degraded.store(false, Ordering::Release);
                return Ok(());
            }
            let timed_out = Instant::now() >= deadline;
            let short = places.len() < needed;
            // Degraded already: acknowledge at once until enough standbys hold a group
            // again (the first that does clears the flag), rather than a timeout each.
            let degraded = self.inner.degraded.load(Ordering::Acquire);
            if config.sync_policy == SyncPolicy::Degrade && (short || timed_out || degraded) {
                if !self.inner.degraded.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        connected = places.len(),
                        needed,
                        "synchronous standbys missing: acknowledging asynchronously"
                    );
                }
                self.inner.stats.degraded_releases.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            if timed_out {
                self.inner.stats.refused_releases.fetch_add(1, Ordering::Relaxed);
                return Err(EngineError::StandbysUnavailable(format!(
                    "{holding} of {needed} synchronous standbys held LSN {} within {:?}; it is \
                     durable here but not acknowledged",
                    lsn.0, config.sync_timeout
                )));
            }
            self.inner.acked.wait_until(&mut places, deadline);
        }
    }
}

/// A session's place among the standbys, removed when the session ends however it
/// ends.
struct PlaceGuard {
    inner: Arc<Shared>,
    session: u64,
    acks: tokio::task::JoinHandle<Result<()>>,
}

impl Drop for PlaceGuard {
    fn drop(&mut self) {
        self.acks.abort();
        self.inner.places.lock().remove(&self.session);
        self.inner.acked.notify_all();
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn send(writer: &mut LinkWriter, message: &Message) -> Result<()> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, write_message_flushed(writer, message)).await {
        Ok(written) => Ok(written.map_err(ProtocolError::from)?),
        Err(_) => Err(Error::Wire(ProtocolError::Timeout(HANDSHAKE_TIMEOUT))),
    }
}

async fn write_message_flushed(writer: &mut LinkWriter, message: &Message) -> std::io::Result<()> {
    writer.write_all(&message.encode()).await?;
    writer.flush().await
}

/// Every file under `dir`, as `(path relative to root, length)`.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
    let io = |e: std::io::Error| Error::Io(format!("listing {}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let meta = entry.metadata().map_err(io)?;
        if meta.is_dir() {
            list_files(root, &path, out)?;
        } else {
            let relative = path.strip_prefix(root).expect("under the root");
            out.push((relative.to_string_lossy().into_owned(), meta.len()));
        }
    }
    Ok(())
}

use crate::{Error, Result};
