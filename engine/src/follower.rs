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
use crate::kernel::runtime::{Engine, TailEntries};
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
/// `None` when the log no longer holds them (the view must be built again). Entries
/// still in the engine's tail of recent groups are shared from there, the others read
/// from the store.
pub(crate) fn entries_after(
    engine: &Engine,
    read: Lsn,
    entries_max: usize,
) -> Result<Option<Entries>> {
    if read >= engine.durable_lsn() {
        return Ok(Some(Entries(Vec::new())));
    }
    let from = Lsn(read.0 + 1);
    let tail = engine.read_tail(from, entries_max);
    if !tail.is_empty() {
        return Ok(Some(Entries(tail.into_iter().map(Part::Tail).collect())));
    }
    match engine.read_log(from, entries_max) {
        Ok(entries) => Ok(Some(Entries(vec![Part::Read(entries)]))),
        Err(EngineError::LogTrimmed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Consecutive log entries for a view, in log order: read from the store, or shared
/// with the engine's tail, a part per group.
pub(crate) struct Entries(Vec<Part>);

/// Entries read from the store, or one group's shared from the tail.
pub(crate) enum Part {
    Read(Vec<LogEntry>),
    Tail(TailEntries),
}

impl Part {
    fn entries(&self) -> &[LogEntry] {
        match self {
            Part::Read(entries) => entries,
            Part::Tail(entries) => entries,
        }
    }
}

type PartEntries<'a> = std::slice::Iter<'a, LogEntry>;

impl Entries {
    pub(crate) fn iter(&self) -> <&Entries as IntoIterator>::IntoIter {
        self.into_iter()
    }

    pub(crate) fn last(&self) -> Option<&LogEntry> {
        self.0.iter().rev().find_map(|part| part.entries().last())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|part| part.entries().is_empty())
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = &'a LogEntry;
    type IntoIter = std::iter::FlatMap<
        std::slice::Iter<'a, Part>,
        PartEntries<'a>,
        fn(&'a Part) -> PartEntries<'a>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().flat_map(|part| part.entries().iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CreateCart, EngineConfig};

    /// A view close behind reads the groups the committer just wrote from the tail, the
    /// same entries as in the store; one behind the tail reads the store.
    #[test]
    fn a_view_close_behind_reads_the_tail_and_one_far_behind_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let blocking = engine.blocking();
        for _ in 0..5 {
            blocking.send(CreateCart::default()).unwrap();
        }
        let durable = engine.durable_lsn();
        // The committer hands a group to the tail after answering its callers, and before
        // it writes the next group: once a later command is answered, every group up to
        // `durable` is in the tail.
        blocking.send(CreateCart::default()).unwrap();
        let stored = engine.read_log(Lsn(1), 100).unwrap();
        let held: Vec<LogEntry> = stored.iter().filter(|e| e.lsn <= durable).cloned().collect();
        assert_eq!(held.last().map(|e| e.lsn), Some(durable));
        // Every entry is read from the tail, in a part per group, and in parts of reads
        // of fewer entries than a group holds.
        for max in [100, 1] {
            let mut read = Lsn(0);
            let mut seen = Vec::new();
            while read < durable {
                let entries = entries_after(&engine, read, max).unwrap().expect("held");
                assert!(entries.0.iter().all(|p| matches!(p, Part::Tail(_))), "after {read:?}");
                read = entries.last().expect("entries").lsn;
                seen.extend(entries.iter().cloned());
            }
            // The last command's group may be in the tail too, or not yet.
            seen.retain(|e| e.lsn <= durable);
            assert_eq!(seen, held, "read {max} at a time");
        }
        let last = engine.durable_lsn();
        assert!(entries_after(&engine, last, 100).unwrap().is_some_and(|e| e.is_empty()));
        // After a reopen the tail is empty: the same entries come from the store.
        engine.close();
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let entries = entries_after(&engine, Lsn(0), 100).unwrap().expect("held");
        assert!(matches!(entries.0[..], [Part::Read(_)]), "a reopened engine's tail held entries");
        assert_eq!(entries.iter().cloned().collect::<Vec<_>>(), stored);
    }
}
