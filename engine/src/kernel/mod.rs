//! The kernel: what every domain shares and none owns. The sequencer (the only writer of
//! the state), the committer (one synced log write per group), the materializer (rows,
//! off the critical path), the log and its retention, recovery, the formats on disk, and
//! the typed request machinery. It knows domains only through `crate::domains`.

pub(crate) mod codec;
pub(crate) mod handler;
mod legacy;
pub(crate) mod materializer;
pub(crate) mod recovery;
pub(crate) mod replica;
pub(crate) mod runtime;
pub(crate) mod table;
pub(crate) mod timers;
