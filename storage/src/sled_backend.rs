//! The sled backend: one sled tree per column family, multi-tree transactions for
//! atomic batches, `flush` for durability.

use std::path::Path;

use parking_lot::RwLock;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::batch::Op;
use crate::{Backend, Result, StorageError, WriteBatch};

pub(crate) struct SledBackend {
    db: sled::Db,
    names: Vec<&'static str>,
    trees: Vec<sled::Tree>,
    /// sled offers no point-in-time snapshot across trees: writers take this lock shared
    /// and a checkpoint takes it exclusively, so the copy sees no half-applied batch.
    checkpoint_lock: RwLock<()>,
}

fn err(e: sled::Error) -> StorageError {
    StorageError::Backend { backend: "sled", message: e.to_string() }
}

/// How long an open waits for the directory's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled at `path`. A store closed a moment ago in this process may still hold the
/// directory's lock: sled releases it from background threads after the handle is
/// dropped. The open waits for it a little (a directory another process holds is still
/// refused, after the wait).
fn open_waiting_for_lock(path: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(path).open() {
            // sled wraps the lock's EWOULDBLOCK in an error of its own, by message.
            Err(sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result.map_err(err),
        }
    }
}

impl SledBackend {
    pub(crate) fn open(path: &Path, cfs: &[&'static str]) -> Result<SledBackend> {
        let db = open_waiting_for_lock(path)?;
        let mut trees = Vec::with_capacity(cfs.len());
        for name in cfs {
            trees.push(db.open_tree(name).map_err(err)?);
        }
        Ok(SledBackend { db, names: cfs.to_vec(), trees, checkpoint_lock: RwLock::new(()) })
    }

    fn index(&self, cf: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|name| *name == cf)
            .ok_or_else(|| StorageError::UnknownColumnFamily(cf.to_string()))
    }
}

impl Backend for SledBackend {
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let _shared = self.checkpoint_lock.read();
        let mut ops = Vec::with_capacity(batch.len());
        // sled's transactions cannot iterate, so a range is read into its keys first; the
        // engine deletes ranges only of rows no other writer touches (trimmed log).
        let mut ranges = Vec::new();
        for op in batch.ops() {
            match op {
                Op::Put { cf, .. } | Op::Delete { cf, .. } => ops.push((self.index(cf)?, op)),
                Op::DeleteRange { cf, from, to } => {
                    let index = self.index(cf)?;
                    for item in self.trees[index].range(from..to) {
                        let (key, _) = item.map_err(err)?;
                        ranges.push((index, key));
                    }
                }
            }
        }
        let trees: &[sled::Tree] = &self.trees;
        let result: std::result::Result<(), TransactionError<()>> = trees.transaction(|txs| {
            for (index, op) in &ops {
                match op {
                    Op::Put { key, value, .. } => {
                        txs[*index].insert(*key, *value)?;
                    }
                    Op::Delete { key, .. } => {
                        txs[*index].remove(*key)?;
                    }
                    Op::DeleteRange { .. } => unreachable!("ranges are expanded above"),
                }
            }
            for (index, key) in &ranges {
                txs[*index].remove(key)?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Storage(e)) => return Err(err(e)),
            Err(TransactionError::Abort(())) => unreachable!("the transaction never aborts"),
        }
        if sync {
            self.db.flush().map_err(err)?;
        }
        Ok(())
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tree = &self.trees[self.index(cf)?];
        Ok(tree.get(key).map_err(err)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        cf: &str,
        from: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let tree = &self.trees[self.index(cf)?];
        for item in tree.range(from..) {
            let (key, value) = item.map_err(err)?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn last(&self, cf: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let tree = &self.trees[self.index(cf)?];
        Ok(tree.last().map_err(err)?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn checkpoint(&self, to: &Path) -> Result<()> {
        let _exclusive = self.checkpoint_lock.write();
        let copy = sled::Config::new().path(to).open().map_err(err)?;
        for (name, tree) in self.names.iter().zip(&self.trees) {
            let target = copy.open_tree(name).map_err(err)?;
            for item in tree.iter() {
                let (key, value) = item.map_err(err)?;
                target.insert(key, value).map_err(err)?;
            }
        }
        copy.flush().map_err(err)?;
        Ok(())
    }
}
