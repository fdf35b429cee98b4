//! The standby's side: bootstrap from a primary's checkpoint, then follow its log —
//! apply each frame of entries through the engine (synced here), acknowledge the
//! durable LSN, reconnect with backoff and resume from that LSN.
//!
//! ```text
//! empty data directory ─► bootstrap: Hello{bootstrap} ─► files into DIR.incoming,
//!                          synced, renamed to DIR
//! open engine (standby) ─► follow: Hello{last LSN, its epoch} ─► Welcome
//!     Entries ─► engine.replicate (checks each LSN follows) ─► Ack(durable LSN)
//!     damaged / duplicated / out-of-order frame ─► drop the connection, resume
//!     Resync ─► the caller wipes the directory and bootstraps again
//! ```

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use emporium_engine::ENGINE_FORMAT_VERSION;
use emporium_engine::{Engine, EngineError, EpochStart, Epochs, LogEntry, Lsn, NodeRole};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::protocol::{read_message, write_message, Message, ProtocolError};
use crate::{Error, Link, Result, HANDSHAKE_TIMEOUT, PROTOCOL_VERSION};

/// How long a standby waits for the primary's next message (heartbeats come every
/// [`crate::HEARTBEAT_INTERVAL`]) before it reconnects.
const SILENCE_MAX: Duration = Duration::from_secs(3);
/// How long one message of a checkpoint may take.
const CHECKPOINT_STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// Backoff between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Whom a standby follows, and as whom.
#[derive(Clone, Debug)]
pub struct StandbyConfig {
    /// The primary's replication address (`host:port`).
    pub primary: String,
    /// This standby's name, stable across restarts (its log consumer on the primary
    /// is `standby.<name>`): 1–48 characters of `[a-z0-9._-]`.
    pub name: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// TLS to the primary; `None`: plain TCP.
    pub tls: Option<crate::tls::Connector>,
    /// The secret the primary requires of its standbys (empty: none).
    pub secret: crate::Secret,
}

/// What a standby has seen, for metrics and `GET /v1/admin/replication`.
#[derive(Debug, Default)]
pub struct StandbyStats {
    /// Whether a session with the primary is open.
    pub connected: AtomicBool,
    /// The primary's epoch, as last heard.
    pub primary_epoch: AtomicU64,
    /// The primary's durable LSN, as last heard.
    pub primary_durable_lsn: AtomicU64,
    /// When the primary was last heard from, in milliseconds since the Unix epoch.
    pub last_contact_ms: AtomicU64,
    /// Sessions that ended and were opened again.
    pub reconnects: AtomicU64,
    /// Damaged, duplicated or out-of-order frames detected (each drops the connection
    /// and resumes from this node's durable LSN).
    pub resyncs: AtomicU64,
    /// Checkpoints fetched from the primary.
    pub bootstraps: AtomicU64,
    /// Bytes of entries received.
    pub bytes_received: AtomicU64,
}

/// Why [`follow`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node was promoted: it is a primary now.
    Promoted,
    /// The primary cannot resume this standby (its log diverged or was trimmed): wipe
    /// the data directory and [`bootstrap`] again.
    Resync(String),
    /// Shutdown was asked for.
    Shutdown,
}

/// Whether `data_dir` holds nothing yet (missing or empty): a standby bootstraps then.
pub fn needs_bootstrap(data_dir: &Path) -> bool {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(_) => true,
    }
}

/// Fetches a checkpoint of the primary into `config.data_dir`, which must not hold
/// data: files arrive in `DIR.incoming`, are synced, and the directory is renamed into
/// place only when complete, so a crash half-way leaves nothing that looks like data.
pub async fn bootstrap(config: &StandbyConfig, stats: &StandbyStats) -> Result<u64> {
    let data_dir = &config.data_dir;
    if !needs_bootstrap(data_dir) {
        return Err(Error::Io(format!("{} already holds data", data_dir.display())));
    }
    let incoming = incoming_dir(data_dir);
    remove_dir(&incoming)?;
    std::fs::create_dir_all(&incoming)
        .map_err(|e| Error::Io(format!("creating {}: {e}", incoming.display())))?;
    let (reader, writer) = tokio::io::split(connect(config).await?);
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut writer = BufWriter::new(writer);
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        format: ENGINE_FORMAT_VERSION,
        name: config.name.clone(),
        cluster: 0,
        epoch: 0,
        last_lsn: 0,
        last_epoch: 0,
        last_epoch_id: 0,
        bootstrap: true,
        secret: config.secret.as_bytes().to_vec(),
    };
    write_message(&mut writer, &hello).await?;
    writer.flush().await.map_err(ProtocolError::from)?;
    let mut file: Option<(std::fs::File, String, u64)> = None;
    let lsn = loop {
        match read_message(&mut reader, CHECKPOINT_STEP_TIMEOUT).await? {
            Message::File { path, len } => {
                finish_file(file.take())?;
                let target = incoming.join(safe_relative(&path)?);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::Io(format!("creating {}: {e}", parent.display())))?;
                }
                let created = std::fs::File::create(&target)
                    .map_err(|e| Error::Io(format!("creating {}: {e}", target.display())))?;
                file = Some((created, path, len));
            }
            Message::Chunk(bytes) => {
                let Some((out, path, left)) = file.as_mut() else {
                    return Err(Error::Protocol("a chunk before any file".into()));
                };
                if bytes.len() as u64 > *left {
                    return Err(Error::Protocol(format!("{path} is longer than announced")));
                }
                std::io::Write::write_all(out, &bytes)
                    .map_err(|e| Error::Io(format!("writing {path}: {e}")))?;
                *left -= bytes.len() as u64;
                stats.bytes_received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Message::CheckpointDone { lsn } => {
                finish_file(file.take())?;
                break lsn;
            }
            Message::Refused { reason } | Message::Resync { reason } => {
                return Err(Error::Refused(reason))
            }
            other => {
                return Err(Error::Protocol(format!("unexpected {} in a checkpoint", other.name())))
            }
        }
    };
    sync_dir(&incoming)?;
    remove_dir(data_dir)?;
    std::fs::rename(&incoming, data_dir)
        .map_err(|e| Error::Io(format!("moving the checkpoint into place: {e}")))?;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    stats.bootstraps.fetch_add(1, Ordering::Relaxed);
    tracing::info!(lsn, dir = %data_dir.display(), "bootstrapped from the primary's checkpoint");
    Ok(lsn)
}

/// Removes a standby's data directory (and what a half-done bootstrap left), before
/// bootstrapping again.
pub fn wipe(data_dir: &Path) -> Result<()> {
    remove_dir(&incoming_dir(data_dir))?;
    remove_dir(data_dir)
}

/// Follows the primary: applies its log to `engine` (opened as a standby) until the
/// node is promoted, the primary asks for a resync, or `shutdown` turns true.
/// Connection failures, silence and damaged frames end a session; the next resumes
/// from the engine's durable LSN after a backoff.
pub async fn follow(
    engine: Engine,
    config: StandbyConfig,
    stats: &StandbyStats,
    mut shutdown: watch::Receiver<bool>,
) -> Outcome {
    // A checkpoint carries the primary's own consumers, this standby's among them: here
    // they would hold the log for standbys that never connect to this node.
    for (name, _) in engine.consumers() {
        if name.starts_with(crate::CONSUMER_PREFIX) {
            if let Err(error) = engine.unregister_consumer(&name) {
                tracing::warn!(%error, %name, "could not drop a copied standby consumer");
            }
        }
    }
    let mut backoff = BACKOFF_MIN;
    loop {
        if *shutdown.borrow() {
            return Outcome::Shutdown;
        }
        if engine.role() == NodeRole::Primary {
            return Outcome::Promoted;
        }
        let session = tokio::select! {
            ended = session(&engine, &config, stats, &mut backoff) => ended,
            _ = shutdown.changed() => return Outcome::Shutdown,
        };
        stats.connected.store(false, Ordering::Release);
        match session {
            Ok(outcome) => return outcome,
            Err(error) => {
                if matches!(error, Error::Damaged(_)) {
                    stats.resyncs.fetch_add(1, Ordering::Relaxed);
                }
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, primary = %config.primary, retry_in = ?backoff, "replication session ended");
            }
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 50);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.changed() => return Outcome::Shutdown,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn session(
    engine: &Engine,
    config: &StandbyConfig,
    stats: &StandbyStats,
    backoff: &mut Duration,
) -> Result<Outcome> {
    let (reader, writer) = tokio::io::split(connect(config).await?);
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut writer = BufWriter::new(writer);
    let last_lsn = engine.durable_lsn();
    write_message(&mut writer, &hello(engine, config)).await?;
    writer.flush().await.map_err(ProtocolError::from)?;
    match read_message(&mut reader, HANDSHAKE_TIMEOUT).await? {
        Message::Welcome { epoch, cluster, epochs, from_lsn } => {
            if cluster != engine.cluster_id() {
                return Err(Error::Refused(format!(
                    "the primary belongs to cluster {cluster:016x}, this standby to {:016x}",
                    engine.cluster_id()
                )));
            }
            let starts = epochs
                .into_iter()
                .map(|(epoch, first, id)| EpochStart { epoch, first_lsn: Lsn(first), id })
                .collect();
            engine.adopt_epochs(Epochs::new(starts)?)?;
            if from_lsn != last_lsn.0 + 1 {
                return Err(Error::Protocol(format!(
                    "the primary resumes at {from_lsn}, this standby at {}",
                    last_lsn.0 + 1
                )));
            }
            stats.primary_epoch.store(epoch, Ordering::Release);
            stats.connected.store(true, Ordering::Release);
            *backoff = BACKOFF_MIN;
            tracing::info!(primary = %config.primary, epoch, from = from_lsn, "following");
        }
        Message::Resync { reason } => return Ok(Outcome::Resync(reason)),
        Message::Refused { reason } => return Err(Error::Refused(reason)),
        other => return Err(Error::Protocol(format!("expected Welcome, got {}", other.name()))),
    }
    loop {
        if engine.role() == NodeRole::Primary {
            return Ok(Outcome::Promoted);
        }
        let message = read_message(&mut reader, SILENCE_MAX).await.map_err(received)?;
        stats.last_contact_ms.store(now_ms(), Ordering::Relaxed);
        let durable = match message {
            Message::Entries { epoch, entries } => {
                check_epoch(engine, epoch)?;
                let mut decoded = Vec::with_capacity(entries.len());
                decode(&mut decoded, entries, stats)?;
                // Frames already received join this one: one sync here for all of them,
                // so a standby keeps up with a primary whose groups are small.
                while decoded.len() < COALESCED_ENTRIES_MAX && frame_buffered(reader.buffer()) {
                    match read_message(&mut reader, SILENCE_MAX).await.map_err(received)? {
                        Message::Entries { epoch, entries } => {
                            check_epoch(engine, epoch)?;
                            decode(&mut decoded, entries, stats)?;
                        }
                        Message::Heartbeat { epoch, durable_lsn } => {
                            check_epoch(engine, epoch)?;
                            stats.primary_durable_lsn.fetch_max(durable_lsn, Ordering::AcqRel);
                        }
                        Message::Resync { reason } => return Ok(Outcome::Resync(reason)),
                        other => {
                            return Err(Error::Protocol(format!("unexpected {}", other.name())))
                        }
                    }
                }
                match engine.replicate(decoded).await {
                    Ok(lsn) => lsn,
                    Err(e @ EngineError::ReplicaGap { .. }) => {
                        return Err(Error::Damaged(e.to_string()))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Message::Heartbeat { epoch, durable_lsn } => {
                check_epoch(engine, epoch)?;
                stats.primary_durable_lsn.store(durable_lsn, Ordering::Release);
                engine.durable_lsn()
            }
            Message::Resync { reason } => return Ok(Outcome::Resync(reason)),
            Message::Refused { reason } => return Err(Error::Refused(reason)),
            other => return Err(Error::Protocol(format!("unexpected {}", other.name()))),
        };
        stats.primary_durable_lsn.fetch_max(durable.0, Ordering::AcqRel);
        let ack = Message::Ack { epoch: engine.epoch(), durable_lsn: durable.0 };
        write_message(&mut writer, &ack).await?;
        writer.flush().await.map_err(ProtocolError::from)?;
    }
}

/// Entries applied (and synced) together at most.
const COALESCED_ENTRIES_MAX: usize = 65_536;

/// A read error as the session sees it: damage (resync from here) or the wire.
fn received(error: ProtocolError) -> Error {
    match error {
        e @ (ProtocolError::Checksum { .. } | ProtocolError::Malformed(_)) => {
            Error::Damaged(e.to_string())
        }
        e => Error::Wire(e),
    }
}

/// Whether `buffer` starts with a whole frame (so reading it cannot wait).
fn frame_buffered(buffer: &[u8]) -> bool {
    buffer.len() >= 4
        && buffer.len() as u64
            >= 8 + u64::from(u32::from_le_bytes(buffer[..4].try_into().expect("4 bytes")))
}

/// Decodes a frame's entries onto `out`, each checked against the LSN it was framed
/// with.
fn decode(
    out: &mut Vec<LogEntry>,
    entries: Vec<(u64, Vec<u8>)>,
    stats: &StandbyStats,
) -> Result<()> {
    for (lsn, bytes) in entries {
        stats.bytes_received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let entry = LogEntry::from_bytes(&bytes)
            .map_err(|e| Error::Damaged(format!("entry {lsn}: {e}")))?;
        if entry.lsn.0 != lsn {
            return Err(Error::Damaged(format!("entry {} framed as {lsn}", entry.lsn.0)));
        }
        out.push(entry);
    }
    Ok(())
}

/// The opening of a session: where this node's log ends, and in which epoch.
fn hello(engine: &Engine, config: &StandbyConfig) -> Message {
    let last = engine.durable_lsn();
    let epochs = engine.epochs();
    let last_epoch = epochs.epoch_at(last);
    Message::Hello {
        version: PROTOCOL_VERSION,
        format: ENGINE_FORMAT_VERSION,
        name: config.name.clone(),
        cluster: engine.cluster_id(),
        epoch: epochs.current(),
        last_lsn: last.0,
        last_epoch: last_epoch.epoch,
        last_epoch_id: last_epoch.id,
        bootstrap: false,
        secret: config.secret.as_bytes().to_vec(),
    }
}

/// Tells the primary this node followed that a newer epoch exists (after this node
/// was promoted): if it is still running and reachable, it steps down and stops
/// acknowledging writes, even through other standbys still following it. Best effort:
/// a primary that is gone cannot be told, and does not need to be.
pub async fn fence(engine: &Engine, config: &StandbyConfig) -> Result<()> {
    let (reader, writer) = tokio::io::split(connect(config).await?);
    let mut reader = BufReader::new(reader);
    let mut writer = BufWriter::new(writer);
    write_message(&mut writer, &hello(engine, config)).await?;
    writer.flush().await.map_err(ProtocolError::from)?;
    match read_message(&mut reader, HANDSHAKE_TIMEOUT).await? {
        Message::Refused { reason } => {
            tracing::info!(primary = %config.primary, %reason, "the former primary was told of the new epoch");
            Ok(())
        }
        other => Err(Error::Protocol(format!("the former primary answered {}", other.name()))),
    }
}

/// A message from a primary of an older epoch than this node knows is refused: that
/// primary was deposed.
fn check_epoch(engine: &Engine, epoch: u64) -> Result<()> {
    if epoch < engine.epoch() {
        return Err(Error::Refused(format!(
            "the primary is in epoch {epoch}, this node in {}: it was deposed",
            engine.epoch()
        )));
    }
    Ok(())
}

async fn connect(config: &StandbyConfig) -> Result<Link> {
    let addr = &config.primary;
    let connected = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::Io(format!("connecting to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok::<Link, Error>(match &config.tls {
            Some(tls) => Box::new(
                tls.connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|e| Error::Io(format!("TLS to {addr}: {e}")))?,
            ),
            None => Box::new(stream),
        })
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connected)
        .await
        .map_err(|_| Error::Io(format!("connecting to {addr}: timed out")))?
}

/// `path` as a relative path with no `..`, so a primary cannot write outside the
/// checkpoint directory.
fn safe_relative(path: &str) -> Result<PathBuf> {
    let relative = Path::new(path);
    let plain = relative.components().all(|c| matches!(c, Component::Normal(_)));
    if path.is_empty() || !plain {
        return Err(Error::Protocol(format!(
            "checkpoint file {path:?} is not a plain relative path"
        )));
    }
    Ok(relative.to_path_buf())
}

fn finish_file(file: Option<(std::fs::File, String, u64)>) -> Result<()> {
    if let Some((file, path, left)) = file {
        if left != 0 {
            return Err(Error::Protocol(format!("{path} ended {left} bytes short")));
        }
        file.sync_all().map_err(|e| Error::Io(format!("syncing {path}: {e}")))?;
    }
    Ok(())
}

fn incoming_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".incoming");
    data_dir.with_file_name(name)
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io(format!("removing {}: {e}", dir.display()))),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::Io(format!("syncing {}: {e}", dir.display())))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_paths_stay_inside_the_directory() {
        assert!(safe_relative("000012.sst").is_ok());
        assert!(safe_relative("sub/OPTIONS-1").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./x"] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
    }
}
