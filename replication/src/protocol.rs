//! The wire protocol: length-prefixed, checksummed frames over one TCP connection,
//! opened by the standby.
//!
//! ```text
//! frame   = len:u32 (kind + body) | kind:u8 | body | crc32(kind + body):u32   (LE)
//! standby ─ Hello ─────────────────────────────► primary
//!         ◄──── Welcome, then Entries / Heartbeat ─┤   (streaming)
//!         ─ Ack (durable LSN) ───────────────────►
//!         ◄──── Resync (the standby must bootstrap again) | Refused
//! bootstrap: Hello{bootstrap} ─► File, Chunk…, File, Chunk…, CheckpointDone
//! ```
//!
//! Every message that moves the log carries the sender's epoch. A frame whose checksum
//! fails, that is longer than [`FRAME_BYTES_MAX`] or that does not decode is an error:
//! the connection is dropped and the standby resumes from its own durable LSN, so a
//! damaged frame is never applied.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol's version; a peer speaking another is refused at the handshake.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest frame (kind and body) accepted.
pub const FRAME_BYTES_MAX: usize = 32 << 20;
/// Bytes of one checkpoint chunk.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

/// Why a peer's bytes were not a valid message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// No frame arrived in time.
    #[error("no message within {0:?}")]
    Timeout(Duration),
    /// The frame's checksum does not match its bytes.
    #[error("a frame of kind {kind} fails its checksum")]
    Checksum {
        /// The kind byte as received.
        kind: u8,
    },
    /// The frame is malformed: too long, an unknown kind, a body that does not parse.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// One message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The standby's opening: who it is and where its log ends.
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// The engine's storage format ([`emporium_engine::ENGINE_FORMAT_VERSION`]).
        format: u32,
        /// The standby's name (its log consumer on the primary is `standby.<name>`).
        name: String,
        /// The cluster its data belongs to (0 when it has none and bootstraps).
        cluster: u64,
        /// The standby's current epoch.
        epoch: u64,
        /// Its last durable LSN.
        last_lsn: u64,
        /// The epoch that LSN was written in.
        last_epoch: u64,
        /// That epoch's random id.
        last_epoch_id: u64,
        /// It holds no data and asks for a checkpoint.
        bootstrap: bool,
        /// The shared secret the primary requires of its standbys (empty: none).
        secret: Vec<u8>,
    },
    /// The primary accepts: the epochs it knows, and the first LSN it will send.
    Welcome {
        /// The primary's epoch.
        epoch: u64,
        /// Its cluster.
        cluster: u64,
        /// Its epoch history, as `(epoch, first LSN, id)`.
        epochs: Vec<(u64, u64, u64)>,
        /// The first LSN that will follow.
        from_lsn: u64,
    },
    /// The standby cannot resume from where it is (its log diverged from the primary's
    /// or was trimmed there): it must bootstrap again.
    Resync {
        /// Why, for the log.
        reason: String,
    },
    /// The connection is refused (another protocol or format, not a primary, a stale
    /// epoch).
    Refused {
        /// Why.
        reason: String,
    },
    /// A checkpoint file follows, in chunks.
    File {
        /// Its path inside the data directory.
        path: String,
        /// Its length in bytes.
        len: u64,
    },
    /// A piece of the current file.
    Chunk(Vec<u8>),
    /// The checkpoint is complete.
    CheckpointDone {
        /// The primary's durable LSN when it was taken.
        lsn: u64,
    },
    /// Consecutive log entries.
    Entries {
        /// The primary's epoch.
        epoch: u64,
        /// `(LSN, the entry's bytes)`, in LSN order.
        entries: Vec<(u64, Vec<u8>)>,
    },
    /// Sent when there is nothing to ship, so a silent link is noticed.
    Heartbeat {
        /// The primary's epoch.
        epoch: u64,
        /// Its durable LSN.
        durable_lsn: u64,
    },
    /// The standby's durable LSN.
    Ack {
        /// The standby's epoch.
        epoch: u64,
        /// Everything up to it is durable on the standby.
        durable_lsn: u64,
    },
}

const HELLO: u8 = 1;
/// The kind byte of [`Message::Welcome`] (a test holds a link right after it).
pub const WELCOME: u8 = 2;
const RESYNC: u8 = 3;
const REFUSED: u8 = 4;
const FILE: u8 = 5;
const CHUNK: u8 = 6;
const CHECKPOINT_DONE: u8 = 7;
/// The kind byte of [`Message::Entries`] (tests that damage frames look for it).
pub const ENTRIES: u8 = 8;
const HEARTBEAT: u8 = 9;
const ACK: u8 = 10;

impl Message {
    /// The message's kind, for logs (never its content: a chunk is megabytes).
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Resync { .. } => "Resync",
            Message::Refused { .. } => "Refused",
            Message::File { .. } => "File",
            Message::Chunk(_) => "Chunk",
            Message::CheckpointDone { .. } => "CheckpointDone",
            Message::Entries { .. } => "Entries",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::Ack { .. } => "Ack",
        }
    }

    /// The frame: length, kind, body, checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0; 4];
        match self {
            Message::Hello {
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
            } => {
                out.push(HELLO);
                put_u32(&mut out, *version);
                put_u32(&mut out, *format);
                put_bytes(&mut out, name.as_bytes());
                put_u64(&mut out, *cluster);
                put_u64(&mut out, *epoch);
                put_u64(&mut out, *last_lsn);
                put_u64(&mut out, *last_epoch);
                put_u64(&mut out, *last_epoch_id);
                out.push(u8::from(*bootstrap));
                put_bytes(&mut out, secret);
            }
            Message::Welcome { epoch, cluster, epochs, from_lsn } => {
                out.push(WELCOME);
                put_u64(&mut out, *epoch);
                put_u64(&mut out, *cluster);
                put_u32(&mut out, epochs.len() as u32);
                for (epoch, first, id) in epochs {
                    put_u64(&mut out, *epoch);
                    put_u64(&mut out, *first);
                    put_u64(&mut out, *id);
                }
                put_u64(&mut out, *from_lsn);
            }
            Message::Resync { reason } => {
                out.push(RESYNC);
                put_bytes(&mut out, reason.as_bytes());
            }
            Message::Refused { reason } => {
                out.push(REFUSED);
                put_bytes(&mut out, reason.as_bytes());
            }
            Message::File { path, len } => {
                out.push(FILE);
                put_bytes(&mut out, path.as_bytes());
                put_u64(&mut out, *len);
            }
            Message::Chunk(bytes) => {
                out.push(CHUNK);
                put_bytes(&mut out, bytes);
            }
            Message::CheckpointDone { lsn } => {
                out.push(CHECKPOINT_DONE);
                put_u64(&mut out, *lsn);
            }
            Message::Entries { epoch, entries } => {
                out.push(ENTRIES);
                put_u64(&mut out, *epoch);
                put_u32(&mut out, entries.len() as u32);
                for (lsn, bytes) in entries {
                    put_u64(&mut out, *lsn);
                    put_bytes(&mut out, bytes);
                }
            }
            Message::Heartbeat { epoch, durable_lsn } => {
                out.push(HEARTBEAT);
                put_u64(&mut out, *epoch);
                put_u64(&mut out, *durable_lsn);
            }
            Message::Ack { epoch, durable_lsn } => {
                out.push(ACK);
                put_u64(&mut out, *epoch);
                put_u64(&mut out, *durable_lsn);
            }
        }
        let len = out.len() - 4;
        out[..4].copy_from_slice(&(len as u32).to_le_bytes());
        let sum = crc32fast::hash(&out[4..]);
        put_u32(&mut out, sum);
        out
    }

    /// Parses a frame's kind and body (its checksum already verified).
    pub fn decode(kind: u8, body: &[u8]) -> Result<Message, ProtocolError> {
        let mut r = Reader(body);
        let message = match kind {
            HELLO => Message::Hello {
                version: r.u32()?,
                format: r.u32()?,
                name: r.text()?,
                cluster: r.u64()?,
                epoch: r.u64()?,
                last_lsn: r.u64()?,
                last_epoch: r.u64()?,
                last_epoch_id: r.u64()?,
                bootstrap: r.u8()? != 0,
                secret: r.bytes()?.to_vec(),
            },
            WELCOME => {
                let epoch = r.u64()?;
                let cluster = r.u64()?;
                let count = r.count(24)?;
                let mut epochs = Vec::with_capacity(count);
                for _ in 0..count {
                    epochs.push((r.u64()?, r.u64()?, r.u64()?));
                }
                Message::Welcome { epoch, cluster, epochs, from_lsn: r.u64()? }
            }
            RESYNC => Message::Resync { reason: r.text()? },
            REFUSED => Message::Refused { reason: r.text()? },
            FILE => Message::File { path: r.text()?, len: r.u64()? },
            CHUNK => Message::Chunk(r.bytes()?.to_vec()),
            CHECKPOINT_DONE => Message::CheckpointDone { lsn: r.u64()? },
            ENTRIES => {
                let epoch = r.u64()?;
                let count = r.count(12)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push((r.u64()?, r.bytes()?.to_vec()));
                }
                Message::Entries { epoch, entries }
            }
            HEARTBEAT => Message::Heartbeat { epoch: r.u64()?, durable_lsn: r.u64()? },
            ACK => Message::Ack { epoch: r.u64()?, durable_lsn: r.u64()? },
            other => return Err(ProtocolError::Malformed(format!("unknown kind {other}"))),
        };
        if !r.0.is_empty() {
            return Err(ProtocolError::Malformed(format!("{} bytes after a message", r.0.len())));
        }
        Ok(message)
    }
}

/// Writes one message.
pub async fn write_message(
    stream: &mut (impl AsyncWrite + Unpin),
    message: &Message,
) -> Result<(), ProtocolError> {
    stream.write_all(&message.encode()).await?;
    Ok(())
}

/// Reads one message, waiting at most `timeout`.
pub async fn read_message(
    stream: &mut (impl AsyncRead + Unpin),
    timeout: Duration,
) -> Result<Message, ProtocolError> {
    read_message_within(stream, timeout, FRAME_BYTES_MAX).await
}

/// Reads one message of at most `bytes_max` bytes, waiting at most `timeout`.
pub async fn read_message_within(
    stream: &mut (impl AsyncRead + Unpin),
    timeout: Duration,
    bytes_max: usize,
) -> Result<Message, ProtocolError> {
    match tokio::time::timeout(timeout, read_frame(stream, bytes_max)).await {
        Ok(result) => result,
        Err(_) => Err(ProtocolError::Timeout(timeout)),
    }
}

async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    bytes_max: usize,
) -> Result<Message, ProtocolError> {
    let mut len = [0; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > bytes_max.min(FRAME_BYTES_MAX) {
        return Err(ProtocolError::Malformed(format!("a frame of {len} bytes")));
    }
    let mut frame = vec![0; len + 4];
    stream.read_exact(&mut frame).await?;
    let (content, sum) = frame.split_at(len);
    let sum = u32::from_le_bytes(sum.try_into().expect("4 bytes"));
    if crc32fast::hash(content) != sum {
        return Err(ProtocolError::Checksum { kind: content[0] });
    }
    Message::decode(content[0], &content[1..])
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError::Malformed("a cut message".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn text(&mut self) -> Result<String, ProtocolError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| ProtocolError::Malformed("text that is not UTF-8".into()))
    }

    /// A count of items of at least `item_bytes` each, checked against what is left
    /// so a forged count cannot reserve memory the frame does not hold.
    fn count(&mut self, item_bytes: usize) -> Result<usize, ProtocolError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(item_bytes) > self.0.len() {
            return Err(ProtocolError::Malformed(format!("a count of {count} items")));
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello {
                version: 1,
                format: 4,
                name: "eu-west".into(),
                cluster: 77,
                epoch: 3,
                last_lsn: 99,
                last_epoch: 2,
                last_epoch_id: 12345,
                bootstrap: false,
                secret: b"s3cret".to_vec(),
            },
            Message::Welcome {
                epoch: 3,
                cluster: 77,
                epochs: vec![(1, 1, 0), (3, 50, 9)],
                from_lsn: 100,
            },
            Message::Resync { reason: "trimmed".into() },
            Message::Refused { reason: "no".into() },
            Message::File { path: "000012.sst".into(), len: 5 },
            Message::Chunk(vec![1, 2, 3]),
            Message::CheckpointDone { lsn: 7 },
            Message::Entries { epoch: 2, entries: vec![(5, vec![9; 40]), (6, vec![])] },
            Message::Heartbeat { epoch: 2, durable_lsn: 6 },
            Message::Ack { epoch: 2, durable_lsn: 6 },
        ]
    }

    #[tokio::test]
    async fn every_message_survives_the_wire() {
        for message in samples() {
            let frame = message.encode();
            let read = read_message(&mut frame.as_slice(), Duration::from_secs(1)).await;
            assert_eq!(read.unwrap(), message);
        }
    }

    #[tokio::test]
    async fn any_flipped_bit_is_detected() {
        for message in samples() {
            let frame = message.encode();
            for byte in 0..frame.len() {
                for bit in [0, 3, 7] {
                    let mut damaged = frame.clone();
                    damaged[byte] ^= 1 << bit;
                    let read = read_message(&mut damaged.as_slice(), Duration::from_secs(1)).await;
                    assert!(read.is_err(), "{message:?} with byte {byte} bit {bit} flipped");
                }
            }
        }
    }

    #[test]
    fn forged_counts_and_lengths_are_refused_without_allocating() {
        let mut body = 2u64.to_le_bytes().to_vec();
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Message::decode(ENTRIES, &body).is_err());
        assert!(Message::decode(CHUNK, &u32::MAX.to_le_bytes()).is_err());
        assert!(Message::decode(200, &[]).is_err());
        let mut trailing = Message::Ack { epoch: 1, durable_lsn: 1 }.encode();
        trailing.truncate(trailing.len() - 4);
        assert!(Message::decode(ACK, &[&trailing[5..], &[0]].concat()).is_err());
    }
}
