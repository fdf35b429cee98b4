//! The unit of atomic writes.

use std::ops::Range;

use crate::log::LogRecord;
use crate::CF_LOG;

/// What one operation of a [`WriteBatch`] does; its bytes are ranges of the batch's
/// buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Put,
    Delete,
    /// Deletes every key in `a..b`.
    DeleteRange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    kind: Kind,
    cf: &'static str,
    a: Range<usize>,
    b: Range<usize>,
}

/// One operation of a [`WriteBatch`], borrowing its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Put {
        cf: &'static str,
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        cf: &'static str,
        key: &'a [u8],
    },
    /// Deletes every key in `from..to`.
    DeleteRange {
        cf: &'static str,
        from: &'a [u8],
        to: &'a [u8],
    },
}

impl Op<'_> {
    /// The column family it writes.
    pub(crate) fn cf(&self) -> &'static str {
        match *self {
            Op::Put { cf, .. } | Op::Delete { cf, .. } | Op::DeleteRange { cf, .. } => cf,
        }
    }
}

/// Rows to put and delete, across column families, applied all or nothing.
///
/// Every key and value is appended to one buffer, so a batch of many rows costs a few
/// allocations, not two per row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    slots: Vec<Slot>,
    data: Vec<u8>,
}

impl WriteBatch {
    /// An empty batch with room for `ops` operations.
    pub fn with_capacity(ops: usize) -> WriteBatch {
        WriteBatch { slots: Vec::with_capacity(ops), data: Vec::new() }
    }

    fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        start..self.data.len()
    }

    /// Puts `value` at `key` in `cf`.
    pub fn put(&mut self, cf: &'static str, key: &[u8], value: &[u8]) {
        self.put_with(cf, key, |out| out.extend_from_slice(value));
    }

    /// Puts at `key` in `cf` the value that `write` appends to the buffer it is given
    /// (which may hold other rows before: `write` only appends). The value is written
    /// in place, with no buffer of its own.
    pub fn put_with(&mut self, cf: &'static str, key: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        let a = self.append(key);
        let start = self.data.len();
        write(&mut self.data);
        let b = start..self.data.len();
        self.slots.push(Slot { kind: Kind::Put, cf, a, b });
    }

    /// Puts an owned `value` at `key` in `cf`.
    pub fn put_owned(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) {
        self.put(cf, &key, &value);
    }

    /// Deletes `key` from `cf`.
    pub fn delete(&mut self, cf: &'static str, key: &[u8]) {
        let a = self.append(key);
        self.slots.push(Slot { kind: Kind::Delete, cf, a, b: 0..0 });
    }

    /// Deletes every key of `cf` in `from..to` (`to` excluded).
    pub fn delete_range(&mut self, cf: &'static str, from: &[u8], to: &[u8]) {
        let a = self.append(from);
        let b = self.append(to);
        self.slots.push(Slot { kind: Kind::DeleteRange, cf, a, b });
    }

    /// Deletes the log records with LSNs in `from..to` (`to` excluded): log retention.
    pub fn trim_log(&mut self, from: u64, to: u64) {
        if from < to {
            self.delete_range(CF_LOG, &from.to_be_bytes(), &to.to_be_bytes());
        }
    }

    /// Appends a log record with its checksum.
    pub fn append_log(&mut self, lsn: u64, payload: &[u8]) {
        self.put_with(CF_LOG, &lsn.to_be_bytes(), |out| LogRecord::encode_into(lsn, payload, out));
    }

    /// The operations, in the order they were added.
    pub(crate) fn ops(&self) -> impl Iterator<Item = Op<'_>> {
        self.slots.iter().map(|slot| {
            let (cf, a, b) = (slot.cf, &self.data[slot.a.clone()], &self.data[slot.b.clone()]);
            match slot.kind {
                Kind::Put => Op::Put { cf, key: a, value: b },
                Kind::Delete => Op::Delete { cf, key: a },
                Kind::DeleteRange => Op::DeleteRange { cf, from: a, to: b },
            }
        })
    }

    /// Empties the batch, keeping its buffers' room for the next one.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.data.clear();
    }

    /// The bytes its buffers have room for.
    pub fn capacity_bytes(&self) -> usize {
        self.data.capacity() + self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// How many operations the batch holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The bytes of keys and values the batch holds.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_keep_their_order_and_their_bytes() {
        let mut batch = WriteBatch::default();
        batch.put("a", b"k1", b"v1");
        batch.put_with("b", b"k2", |out| out.extend_from_slice(b"written in place"));
        batch.delete("a", b"k3");
        batch.put_owned("c", b"k4".to_vec(), Vec::new());
        batch.delete_range("b", b"from", b"to");
        let ops: Vec<Op<'_>> = batch.ops().collect();
        assert_eq!(
            ops,
            [
                Op::Put { cf: "a", key: b"k1", value: b"v1" },
                Op::Put { cf: "b", key: b"k2", value: b"written in place" },
                Op::Delete { cf: "a", key: b"k3" },
                Op::Put { cf: "c", key: b"k4", value: b"" },
                Op::DeleteRange { cf: "b", from: b"from", to: b"to" },
            ]
        );
        assert_eq!(batch.len(), 5);
        assert_eq!(batch.bytes(), 2 + 2 + 2 + 16 + 2 + 2 + 4 + 2);
    }

    #[test]
    fn a_log_record_is_framed_as_the_reader_expects() {
        let mut batch = WriteBatch::default();
        batch.append_log(7, b"payload");
        let Some(Op::Put { cf, key, value }) = batch.ops().next() else { panic!("one put") };
        assert_eq!(cf, CF_LOG);
        let record = LogRecord::decode(key, value).expect("it decodes");
        assert_eq!(record, LogRecord { lsn: 7, payload: b"payload".to_vec() });
        batch.trim_log(3, 3);
        assert_eq!(batch.len(), 1, "an empty trim adds nothing");
    }
}
