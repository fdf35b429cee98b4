//! The threads searches run on: a few per core, fed by a bounded queue.
//!
//! A search holds a core for a hundred microseconds or more, too long for a runtime
//! worker. On tokio's blocking pool each search took a thread of its own (16
//! connections kept 16 or more of them busy on two cores), and the pool's shared
//! queue, behind one lock, was handed over at every search: the lock, the futex waits
//! and the thread switches took about a tenth of the server's CPU under `/v1/search`.
//! A fixed set of threads takes the next search from the queue as soon as it is done
//! with one. The queue is deep enough ([`crate::app::SEARCHES_IN_FLIGHT_MAX`]) to
//! hold the searches that arrive while a busy machine's scheduler leaves the search
//! threads without a core for a while.

use std::panic::AssertUnwindSafe;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::{Mutex, RwLock};

use crate::problem::Problem;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running searches in the order they come.
pub struct SearchThreads {
    /// `None` once stopped.
    queue: RwLock<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl SearchThreads {
    /// Starts `threads` threads (at least one) behind a queue of `queued_max` searches.
    pub fn start(threads: usize, queued_max: usize) -> std::io::Result<SearchThreads> {
        let (queue, jobs) = crossbeam_channel::bounded::<Job>(queued_max);
        let mut handles = Vec::new();
        for n in 0..threads.max(1) {
            let jobs = jobs.clone();
            let handle = std::thread::Builder::new().name(format!("emporium-search-{n}")).spawn(
                move || {
                    for job in jobs {
                        // A search that panics answers 500 (its reply is dropped); the
                        // thread goes on with the next.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                },
            )?;
            handles.push(handle);
        }
        Ok(SearchThreads { queue: RwLock::new(Some(queue)), threads: Mutex::new(handles) })
    }

    /// Runs `work` on a search thread and waits for its result: 503 `overloaded` when
    /// the queue is full, `unavailable` once stopped. If the caller stops waiting (its
    /// client went away) before a thread takes `work`, `work` is dropped unrun: a
    /// client that sends searches and hangs up costs no search.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Problem> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if !reply.is_closed() {
                let _ = reply.send(work());
            }
        });
        match self.queue.read().as_ref().map(|queue| queue.try_send(job)) {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_))) => {
                return Err(Problem::overloaded("too many searches are waiting; try again"))
            }
            Some(Err(TrySendError::Disconnected(_))) | None => {
                return Err(Problem::new(
                    503,
                    "unavailable",
                    "Unavailable",
                    "the server is stopping",
                ))
            }
        }
        result.await.map_err(|_| Problem::internal("the search failed"))
    }

    /// Lets the threads finish the searches queued, then waits for them (but not for
    /// the calling thread itself: a search may hold the last reference to what owns
    /// these threads). Idempotent.
    pub fn stop(&self) {
        drop(self.queue.write().take());
        let me = std::thread::current().id();
        for thread in self.threads.lock().drain(..) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for SearchThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    impl SearchThreads {
        fn queued(&self) -> usize {
            self.queue.read().as_ref().map_or(0, |queue| queue.len())
        }

        /// Waits, at most 10 s, until the queue holds `queued` searches.
        async fn until_queued(&self, queued: usize) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.queued() != queued {
                assert!(std::time::Instant::now() < deadline, "never {queued} queued");
                tokio::task::yield_now().await;
            }
        }
    }

    type Held = (tokio::task::JoinHandle<Result<u32, Problem>>, std::sync::mpsc::Sender<()>);

    /// A search that holds the (one) thread until released, once it holds it.
    async fn hold(threads: &Arc<SearchThreads>, answer: u32) -> Held {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, start) = std::sync::mpsc::channel::<()>();
        let running = threads.clone();
        let search = tokio::spawn(async move {
            running
                .run(move || {
                    started.send(()).expect("started");
                    held.recv().expect("released");
                    answer
                })
                .await
        });
        tokio::task::spawn_blocking(move || start.recv()).await.expect("join").expect("start");
        (search, release)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn searches_run_on_the_threads_in_turn_and_a_full_queue_is_refused() {
        let threads = Arc::new(SearchThreads::start(1, 1).expect("start"));
        let name = threads.run(|| std::thread::current().name().map(str::to_string)).await;
        assert_eq!(name.expect("ran").as_deref(), Some("emporium-search-0"));

        // The one thread held by a search and one more queued: a third is refused.
        let (first, release) = hold(&threads, 1).await;
        let queued = threads.clone();
        let second = tokio::spawn(async move { queued.run(|| 2).await });
        threads.until_queued(1).await;
        let refused = threads.run(|| 3).await.expect_err("the queue is full");
        assert_eq!((refused.status, refused.code), (503, "overloaded"));
        release.send(()).expect("release");
        assert_eq!(first.await.expect("join").expect("first"), 1);
        assert_eq!(second.await.expect("join").expect("second"), 2);

        // A search whose caller stopped waiting while it was queued is not run.
        let (first, release) = hold(&threads, 1).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queued = threads.clone();
        let flag = ran.clone();
        let gone = tokio::spawn(async move {
            queued.run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst)).await
        });
        threads.until_queued(1).await;
        gone.abort();
        assert!(gone.await.expect_err("aborted").is_cancelled());
        release.send(()).expect("release");
        assert_eq!(first.await.expect("join").expect("first"), 1);
        // The thread answers a search before it takes the next from the queue.
        threads.until_queued(0).await;
        assert_eq!(threads.run(|| 5).await.expect("the next search runs"), 5);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "a search nobody waits for ran");

        // A search that panics answers 500, and the thread goes on with the next.
        let panicked = threads.run(|| -> u32 { panic!("a search that panics") }).await;
        assert_eq!(panicked.expect_err("panicked").status, 500);
        assert_eq!(threads.run(|| 4).await.expect("the thread lives on"), 4);

        threads.stop();
        let stopped = threads.run(|| 5).await.expect_err("stopped");
        assert_eq!((stopped.status, stopped.code), (503, "unavailable"));
    }
}
