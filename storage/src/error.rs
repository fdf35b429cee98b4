//! Storage errors.

use std::path::PathBuf;

/// The result of a storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The backend (RocksDB or sled) reported an error.
    #[error("{backend} error: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said.
        message: String,
    },
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Data on disk does not pass its checks.
    #[error("corrupt data: {0}")]
    Corruption(String),
    /// The directory was written in a format this build does not read.
    #[error(
        "incompatible {what} format version {found} (this build reads version {expected}); \
         refusing to open rather than misread it"
    )]
    IncompatibleFormat {
        /// Which layer's format.
        what: String,
        /// The version found on disk.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// A column family that was not declared at open time.
    #[error("unknown column family {0:?}")]
    UnknownColumnFamily(String),
    /// The backend asked for is not compiled into this build.
    #[error("storage backend {0} is not compiled into this build")]
    BackendUnavailable(String),
    /// A batch writes the log and other column families, which are in two databases
    /// (storage format 2) and cannot be written atomically together.
    #[error("a batch writes the log and the rows, which are in two databases")]
    MixedBatch,
    /// A checkpoint's target already exists.
    #[error("checkpoint target {} already exists", .0.display())]
    CheckpointTargetExists(PathBuf),
}

impl StorageError {
    pub(crate) fn io(context: String, source: std::io::Error) -> StorageError {
        StorageError::Io { context, source }
    }

    /// Whether the data on disk failed a check (checksum, framing, format).
    pub fn is_corruption(&self) -> bool {
        matches!(self, StorageError::Corruption(_) | StorageError::IncompatibleFormat { .. })
    }
}
