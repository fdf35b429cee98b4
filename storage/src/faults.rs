//! Injected disk faults, for tests (cargo feature `faults`): a [`Backend`] wrapper that
//! fails a chosen write or sync with `EIO` or `ENOSPC`, refuses requests to persist
//! the unlogged writes (as during a write stall), or makes a chosen read return what a
//! damaged disk would. Faults are armed through a shared [`DiskFaults`] handle
//! and fire once each, so a test says exactly which operation breaks.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{Backend, Result, StorageError, WriteBatch, CF_LOG};

/// How a write fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// The device failed (`EIO`) before anything was written.
    Io,
    /// The disk is full (`ENOSPC`) before anything was written.
    NoSpace,
    /// The batch reached the backend, then its sync reported `EIO`: whether it is
    /// durable is unknown to the writer, as after a real failed `fsync`.
    IoAfterWrite,
}

/// How a read fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFault {
    /// The backend reports corruption (a checksum of its own did not match).
    Corruption,
    /// A log record comes back with one bit flipped, past the backend's checks: the
    /// log's own checksum must catch it.
    FlipLogBit,
}

#[derive(Debug, Default)]
struct Armed {
    /// Synced writes to let through before the write fault fires.
    write_after: u64,
    write: Option<WriteFault>,
    /// The column family whose next read fails, and how.
    read: Option<(String, ReadFault)>,
    /// Requests to persist the unlogged writes still to refuse.
    persists_refused: u64,
    /// Requests to persist the unlogged writes that were passed on.
    persists_taken: u64,
    fired: Vec<String>,
}

/// Faults to inject, shared between a test and the store it opened.
#[derive(Debug, Default)]
pub struct DiskFaults {
    armed: Mutex<Armed>,
}

impl DiskFaults {
    /// A handle with nothing armed.
    pub fn new() -> Arc<DiskFaults> {
        Arc::new(DiskFaults::default())
    }

    /// The synced write after the next `skip` ones fails with `fault`.
    pub fn fail_synced_write(&self, skip: u64, fault: WriteFault) {
        let mut armed = self.armed.lock();
        armed.write_after = skip;
        armed.write = Some(fault);
    }

    /// The next read of `cf` (a `get`, a scan, a last-row lookup) fails with `fault`.
    pub fn fail_read(&self, cf: &str, fault: ReadFault) {
        self.armed.lock().read = Some((cf.to_string(), fault));
    }

    /// The next `count` requests to persist the unlogged writes are refused, as
    /// RocksDB refuses a flush while it stops writes for a backlog of flushes.
    pub fn refuse_persists(&self, count: u64) {
        self.armed.lock().persists_refused = count;
    }

    /// How many requests to persist the unlogged writes were passed to the backend.
    pub fn persists_taken(&self) -> u64 {
        self.armed.lock().persists_taken
    }

    /// What fired so far, one line each.
    pub fn fired(&self) -> Vec<String> {
        self.armed.lock().fired.clone()
    }

    fn take_write(&self, sync: bool) -> Option<WriteFault> {
        let mut armed = self.armed.lock();
        if !sync || armed.write.is_none() {
            return None;
        }
        if armed.write_after > 0 {
            armed.write_after -= 1;
            return None;
        }
        let fault = armed.write.take()?;
        armed.fired.push(format!("write {fault:?}"));
        Some(fault)
    }

    /// Takes the armed read fault if it is `fault` on `cf`.
    fn take_read(&self, cf: &str, fault: ReadFault) -> bool {
        let mut armed = self.armed.lock();
        if armed.read.as_ref().is_some_and(|(c, f)| c == cf && *f == fault) {
            armed.read = None;
            armed.fired.push(format!("read of {cf} {fault:?}"));
            return true;
        }
        false
    }
}

fn io(context: &str, errno: i32) -> StorageError {
    StorageError::io(format!("{context} (injected)"), std::io::Error::from_raw_os_error(errno))
}

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// `backend`, behind `faults` when there are any.
pub(crate) fn wrap(
    backend: Box<dyn Backend>,
    faults: &Option<Arc<DiskFaults>>,
) -> Box<dyn Backend> {
    match faults {
        Some(faults) => Box::new(FaultyBackend { inner: backend, faults: faults.clone() }),
        None => backend,
    }
}

/// A backend whose operations fail as [`DiskFaults`] says.
pub(crate) struct FaultyBackend {
    pub(crate) inner: Box<dyn Backend>,
    pub(crate) faults: Arc<DiskFaults>,
}

impl FaultyBackend {
    fn corrupt(&self, cf: &str) -> Result<()> {
        if self.faults.take_read(cf, ReadFault::Corruption) {
            return Err(StorageError::Corruption(format!(
                "block checksum mismatch in {cf} (injected)"
            )));
        }
        Ok(())
    }
}

impl Backend for FaultyBackend {
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        match self.faults.take_write(sync) {
            Some(WriteFault::Io) => Err(io("writing a batch", EIO)),
            Some(WriteFault::NoSpace) => Err(io("writing a batch", ENOSPC)),
            Some(WriteFault::IoAfterWrite) => {
                self.inner.write(batch, sync)?;
                Err(io("syncing a batch", EIO))
            }
            None => self.inner.write(batch, sync),
        }
    }

    /// Faults are injected into synced writes only, as for unsynced ones.
    fn write_unlogged(&self, batch: &WriteBatch) -> Result<()> {
        self.inner.write_unlogged(batch)
    }

    fn persist_unlogged(&self, wait: bool) -> Result<()> {
        {
            let mut armed = self.faults.armed.lock();
            if armed.persists_refused > 0 {
                armed.persists_refused -= 1;
                armed.fired.push("persist refused".into());
                return Err(StorageError::Backend {
                    backend: "rocksdb",
                    message: "Operation aborted: write stall (injected)".into(),
                });
            }
            armed.persists_taken += 1;
        }
        self.inner.persist_unlogged(wait)
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.corrupt(cf)?;
        self.inner.get(cf, key)
    }

    fn scan(
        &self,
        cf: &str,
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.corrupt(cf)?;
        if cf == CF_LOG && self.faults.take_read(cf, ReadFault::FlipLogBit) {
            let mut first = true;
            return self.inner.scan(cf, from, &mut |key, value| {
                if std::mem::take(&mut first) && !value.is_empty() {
                    let mut flipped = value.to_vec();
                    let at = flipped.len() - 1;
                    flipped[at] ^= 0x10;
                    return visit(key, &flipped);
                }
                visit(key, value)
            });
        }
        self.inner.scan(cf, from, visit)
    }

    fn last(&self, cf: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.corrupt(cf)?;
        self.inner.last(cf)
    }

    fn checkpoint(&self, to: &Path) -> Result<()> {
        self.inner.checkpoint(to)
    }

    fn drop_log_files_below(&self, to: u64) -> Result<()> {
        self.inner.drop_log_files_below(to)
    }

    #[cfg(test)]
    fn settle(&self) -> Result<()> {
        self.inner.settle()
    }

    fn memory_bytes(&self) -> Option<u64> {
        self.inner.memory_bytes()
    }

    fn estimate_rows(&self, cf: &str) -> Option<u64> {
        self.inner.estimate_rows(cf)
    }
}
