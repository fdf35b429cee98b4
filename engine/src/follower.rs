//! The thread behind each view derived from the log (the search index, the
//! recommendations, the KPIs): it runs the view's passes over the durable log until
//! told to stop or the engine fails, sleeping between passes that found nothing, and
//! keeps the error that stopped it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::domains::LogEntry;
use crate::error::{EngineError, Result};
use crate::kernel::runtime::Engine;
use crate::types::Lsn;

/// A view kept in step with the log by a [`Follower`].
pub(crate) trait Follow: Send + 'static {
    /// Reads and applies what follows the view's position. Whether it found entries
    /// (the next pass runs at once) or not (the thread sleeps first).
    fn pass(&mut self) -> Result<bool>;

    /// Runs after a pass that found nothing, before the sleep.
    fn idle(&mut self) {}

    /// Runs once when the thread is stopped (not after a failure).
    fn finish(&mut self) {}
}

/// A view's thread.
pub(crate) struct Follower {
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Follower {
    /// Starts the thread `name` running `view`'s passes every `interval` at most.
    pub(crate) fn spawn(
        name: &str,
        engine: &Engine,
        interval: Duration,
        mut view: impl Follow,
    ) -> Result<Follower> {
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let (stopped, failed, engine) = (stop.clone(), failure.clone(), engine.clone());
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) && engine.failure().is_none() {
                    match view.pass() {
                        Ok(true) => {}
                        Ok(false) => {
                            view.idle();
                            std::thread::sleep(interval);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, thread = %thread_name, "a log view stopped");
                            *failed.lock() = Some(e.to_string());
                            return;
                        }
                    }
                }
                view.finish();
            })
            .map_err(|e| EngineError::Unavailable(format!("cannot start {name}: {e}")))?;
        Ok(Follower { stop, failure, thread: Mutex::new(Some(thread)) })
    }

    /// Why the thread stopped, if it failed.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// Stops the thread and waits for it. Idempotent.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Up to `entries_max` durable entries after `read`: empty when there are none yet,
/// `None` when the log no longer holds them (the view must be built again).
pub(crate) fn entries_after(
    engine: &Engine,
    read: Lsn,
    entries_max: usize,
) -> Result<Option<Vec<LogEntry>>> {
    if read >= engine.durable_lsn() {
        return Ok(Some(Vec::new()));
    }
    match engine.read_log(Lsn(read.0 + 1), entries_max) {
        Ok(entries) => Ok(Some(entries)),
        Err(EngineError::LogTrimmed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
