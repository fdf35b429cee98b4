//! The unit of atomic writes.

use crate::log::LogRecord;
use crate::CF_LOG;

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: &'static str,
        key: Vec<u8>,
    },
    /// Deletes every key in `from..to`.
    DeleteRange {
        cf: &'static str,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

/// Rows to put and delete, across column families, applied all or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch with room for `ops` operations.
    pub fn with_capacity(ops: usize) -> WriteBatch {
        WriteBatch { ops: Vec::with_capacity(ops), bytes: 0 }
    }

    /// Puts `value` at `key` in `cf`.
    pub fn put(&mut self, cf: &'static str, key: &[u8], value: &[u8]) {
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put { cf, key: key.to_vec(), value: value.to_vec() });
    }

    /// Puts an owned `value` at `key` in `cf`, without copying it.
    pub fn put_owned(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) {
        self.bytes += key.len() + value.len();
        self.ops.push(Op::Put { cf, key, value });
    }

    /// Deletes `key` from `cf`.
    pub fn delete(&mut self, cf: &'static str, key: &[u8]) {
        self.bytes += key.len();
        self.ops.push(Op::Delete { cf, key: key.to_vec() });
    }

    /// Deletes every key of `cf` in `from..to` (`to` excluded).
    pub fn delete_range(&mut self, cf: &'static str, from: &[u8], to: &[u8]) {
        self.bytes += from.len() + to.len();
        self.ops.push(Op::DeleteRange { cf, from: from.to_vec(), to: to.to_vec() });
    }

    /// Deletes the log records with LSNs in `from..to` (`to` excluded): log retention.
    pub fn trim_log(&mut self, from: u64, to: u64) {
        if from < to {
            self.delete_range(CF_LOG, &from.to_be_bytes(), &to.to_be_bytes());
        }
    }

    /// Appends a log record with its checksum.
    pub fn append_log(&mut self, lsn: u64, payload: &[u8]) {
        let (key, value) = LogRecord::encode(lsn, payload);
        self.put_owned(CF_LOG, key.to_vec(), value);
    }

    /// How many operations the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The bytes of keys and values the batch holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
