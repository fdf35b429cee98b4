//! Where the runtime gets the time. The domain never reads a clock; the sequencer reads
//! this one once per command and hands the time in.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::types::TimestampMs;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> TimestampMs;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as TimestampMs)
    }
}

/// A clock that moves only when told: for tests of expiry.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: TimestampMs) -> ManualClock {
        ManualClock { now: AtomicI64::new(start) }
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::AcqRel);
    }

    /// Sets the clock.
    pub fn set(&self, now: TimestampMs) {
        self.now.store(now, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> TimestampMs {
        self.now.load(Ordering::Acquire)
    }
}
