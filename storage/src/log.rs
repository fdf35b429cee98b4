//! Framing of log records: key = LSN in big-endian, value = CRC-32 (little-endian) of
//! the LSN and the payload, followed by the payload.

use crate::{Result, StorageError};

/// The largest payload one log record may carry.
pub const LOG_RECORD_BYTES_MAX: usize = 16 << 20;

/// One record of the log, its checksum verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The log sequence number.
    pub lsn: u64,
    /// The bytes the engine wrote.
    pub payload: Vec<u8>,
}

impl LogRecord {
    /// Appends the record's value (checksum, then payload) to `out`; its key is the
    /// LSN in big-endian.
    pub(crate) fn encode_into(lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
        assert!(payload.len() <= LOG_RECORD_BYTES_MAX, "log record over the size limit");
        out.reserve(4 + payload.len());
        out.extend_from_slice(&checksum(lsn, payload).to_le_bytes());
        out.extend_from_slice(payload);
    }

    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<LogRecord> {
        let lsn =
            u64::from_be_bytes(key.try_into().map_err(|_| {
                StorageError::Corruption(format!("log key of {} bytes", key.len()))
            })?);
        if value.len() < 4 {
            return Err(StorageError::Corruption(format!("log record {lsn} is truncated")));
        }
        let (sum, payload) = value.split_at(4);
        let sum = u32::from_le_bytes(sum.try_into().expect("4 bytes"));
        if sum != checksum(lsn, payload) {
            return Err(StorageError::Corruption(format!("log record {lsn} fails its checksum")));
        }
        Ok(LogRecord { lsn, payload: payload.to_vec() })
    }
}

fn checksum(lsn: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_be_bytes());
    hasher.update(payload);
    hasher.finalize()
}
