//! What the kernel keeps for replication: the node's role (a primary takes commands, a
//! standby applies a primary's log), its epochs (each promotion starts a new one at a
//! known LSN), the gate that holds replies until enough standbys hold their group, and
//! digests that compare two states.
//!
//! Invariants: the role and the epochs are written synced before they take effect; an
//! epoch never goes backwards; a standby applies only entries that follow its last LSN
//! exactly, through the same `apply` the sequencer uses.

use std::hash::{Hash, Hasher};

use emporium_storage::{Store, WriteBatch, CF_META};
use rkyv::rancor::Error as RkyvError;

use crate::domains::{LogEntry, State, DOMAINS};
use crate::error::{EngineError, Result};
use crate::kernel::codec;
use crate::types::Lsn;

const META_ROLE: &[u8] = b"replication/role";
const META_EPOCHS: &[u8] = b"replication/epochs";
const META_CLUSTER: &[u8] = b"replication/cluster";

/// What a node does with commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// Takes commands and writes the log.
    Primary,
    /// Applies a primary's log and serves reads; every command is refused with
    /// [`EngineError::ReadOnlyStandby`] until it is promoted.
    Standby,
}

impl NodeRole {
    pub(crate) fn code(self) -> u8 {
        match self {
            NodeRole::Primary => 0,
            NodeRole::Standby => 1,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> NodeRole {
        if byte == 1 {
            NodeRole::Standby
        } else {
            NodeRole::Primary
        }
    }
}

/// Where one epoch begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochStart {
    /// The epoch.
    pub epoch: u64,
    /// The first LSN written in it.
    pub first_lsn: Lsn,
    /// Random, drawn by the promotion that began it (0 for the first epoch): two nodes
    /// promoted to the same epoch number by mistake are not mistaken for one history.
    pub id: u64,
}

/// A node's history of epochs: each promotion starts a new one. Two nodes agree on the
/// log up to an LSN when they agree on the epoch it was written in (each epoch has one
/// writer), so a returning standby keeps what it has only when its last LSN is in the
/// same epoch on the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epochs {
    starts: Vec<EpochStart>,
}

impl Default for Epochs {
    fn default() -> Epochs {
        Epochs { starts: vec![EpochStart { epoch: 1, first_lsn: Lsn(1), id: 0 }] }
    }
}

impl Epochs {
    /// A history from its starts: epochs strictly increasing, first LSNs never
    /// decreasing, at least one.
    pub fn new(starts: Vec<EpochStart>) -> Result<Epochs> {
        let ordered =
            starts.windows(2).all(|w| w[0].epoch < w[1].epoch && w[0].first_lsn <= w[1].first_lsn);
        if starts.is_empty() || !ordered || starts[0].epoch == 0 {
            return Err(EngineError::field(
                "epochs",
                "epochs start at 1 and increase, at LSNs that never decrease",
            ));
        }
        Ok(Epochs { starts })
    }

    /// The current (last) epoch.
    pub fn current(&self) -> u64 {
        self.starts.last().map_or(1, |s| s.epoch)
    }

    /// The epoch the entry at `lsn` was written in (the first epoch for LSN 0).
    pub fn epoch_at(&self, lsn: Lsn) -> EpochStart {
        *self.starts.iter().rev().find(|s| s.first_lsn <= lsn).unwrap_or(&self.starts[0])
    }

    /// The starts, oldest first.
    pub fn starts(&self) -> &[EpochStart] {
        &self.starts
    }

    fn started(&self, first_lsn: Lsn) -> Epochs {
        let mut starts = self.starts.clone();
        let id = rand::random::<u64>().max(1);
        starts.push(EpochStart { epoch: self.current() + 1, first_lsn, id });
        Epochs { starts }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 * self.starts.len());
        for start in &self.starts {
            out.extend_from_slice(&start.epoch.to_le_bytes());
            out.extend_from_slice(&start.first_lsn.0.to_le_bytes());
            out.extend_from_slice(&start.id.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Epochs> {
        if !bytes.len().is_multiple_of(24) {
            return Err(EngineError::IncompatibleData("the epoch history is malformed".into()));
        }
        let word = |c: &[u8], i: usize| {
            u64::from_le_bytes(c[8 * i..8 * i + 8].try_into().expect("8 bytes"))
        };
        let starts = bytes
            .chunks_exact(24)
            .map(|c| EpochStart { epoch: word(c, 0), first_lsn: Lsn(word(c, 1)), id: word(c, 2) })
            .collect();
        Epochs::new(starts)
            .map_err(|_| EngineError::IncompatibleData("the epoch history is out of order".into()))
    }
}

/// The directory's cluster id: drawn once, when a directory first opens, and carried
/// by checkpoints to its standbys, so a standby never follows another cluster's
/// primary (and never discards its data for one).
pub(crate) fn cluster_id(store: &Store) -> Result<u64> {
    if let Some(bytes) = store.get(CF_META, META_CLUSTER)? {
        return codec::read_u64(&bytes, "cluster id");
    }
    let id = rand::random::<u64>().max(1);
    let mut batch = WriteBatch::default();
    batch.put(CF_META, META_CLUSTER, &id.to_le_bytes());
    store.write(&batch, true)?;
    Ok(id)
}

/// The role and epochs a data directory records (a primary in epoch 1 when it records
/// none).
pub(crate) fn load(store: &Store) -> Result<(NodeRole, Epochs)> {
    let role = match store.get(CF_META, META_ROLE)? {
        Some(bytes) if bytes.len() == 1 && bytes[0] <= 1 => NodeRole::from_byte(bytes[0]),
        Some(_) => return Err(EngineError::IncompatibleData("the role row is malformed".into())),
        None => NodeRole::Primary,
    };
    let epochs = match store.get(CF_META, META_EPOCHS)? {
        Some(bytes) => Epochs::decode(&bytes)?,
        None => Epochs::default(),
    };
    Ok((role, epochs))
}

/// Records `role` and `epochs`, synced.
pub(crate) fn store(store: &Store, role: NodeRole, epochs: &Epochs) -> Result<()> {
    let mut batch = WriteBatch::default();
    batch.put(CF_META, META_ROLE, &[role.code()]);
    batch.put(CF_META, META_EPOCHS, &epochs.encode());
    Ok(store.write(&batch, true)?)
}

/// The history after a promotion at `last_lsn`: a new epoch from the next LSN.
pub(crate) fn promoted(epochs: &Epochs, last_lsn: Lsn) -> Epochs {
    epochs.started(Lsn(last_lsn.0 + 1))
}

/// Holds the replies of each durable group until the group may be acknowledged: a
/// primary with synchronous standbys acknowledges a write only once enough of them hold
/// it durably. Set in [`crate::EngineConfig::release_gate`]; implemented by the
/// replication crate.
pub trait ReleaseGate: std::fmt::Debug + Send + Sync + 'static {
    /// Whether a new command may be taken now; a primary that cannot reach enough
    /// standbys refuses at once, with [`EngineError::StandbysUnavailable`].
    fn admit(&self) -> Result<()>;
    /// Blocks until everything up to `lsn` (durable here since `committed`) may be
    /// acknowledged, or says why it may not (the caller's command is durable here but
    /// not acknowledged). Deadlines count from `committed`, so groups queued behind a
    /// slow one do not each wait a full timeout.
    fn wait(&self, lsn: Lsn, committed: std::time::Instant) -> Result<()>;
}

/// One table's digest: its rows and an order-independent hash of their keys and
/// stored values. Two states at the same LSN have equal digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDigest {
    /// The table.
    pub table: &'static str,
    /// Its rows.
    pub rows: u64,
    /// The wrapping sum of a hash of each row's key and stored bytes.
    pub hash: u64,
}

impl State {
    /// A digest of every table, in load order: compares a standby with its primary.
    /// Reads the whole state; for tests and operators, not for a hot path.
    pub fn digest(&self) -> Vec<TableDigest> {
        let mut out = Vec::new();
        for table in DOMAINS.iter().flat_map(|d| d.tables.iter()) {
            let mut digest = TableDigest { table: table.name, rows: 0, hash: 0 };
            (table.rows)(self, &mut |row| {
                // SipHash with fixed keys: the same on every node running this build.
                #[allow(deprecated)]
                let mut hasher = std::hash::SipHasher::new();
                row.key().hash(&mut hasher);
                row.encode().hash(&mut hasher);
                digest.rows += 1;
                digest.hash = digest.hash.wrapping_add(hasher.finish());
            });
            out.push(digest);
        }
        out
    }
}

impl LogEntry {
    /// The entry's bytes, as a standby receives them.
    pub fn to_bytes(&self) -> Vec<u8> {
        rkyv::to_bytes::<RkyvError>(self).expect("in-memory values always serialize").into_vec()
    }

    /// An entry from [`LogEntry::to_bytes`]; bytes that do not decode (damaged, or
    /// written by another format) are an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<LogEntry> {
        codec::decode_bare(bytes, "log entry")
    }
}
