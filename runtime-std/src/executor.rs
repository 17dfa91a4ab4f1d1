//! A minimal executor: [`block_on`] with a thread-parking waker, and the server's
//! bounded pool of worker threads that runs handler futures with it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

/// Wakes a parked thread.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Run a future to completion on the current thread, parking the thread while the
/// future waits and unparking it when the future's waker is woken.
///
/// This is how the std server runs `Router` handlers, which are plain
/// `std::future::Future`s. Such a future may wait on anything that wakes its waker from
/// another thread (a channel, a timer thread, another request's completion), but not on
/// a specific async runtime's reactor: a handler that awaits `tokio::time::sleep` panics
/// or never finishes here, because no tokio runtime is running.
///
/// ```
/// let v = rpcx_std::block_on(async { 6 * 7 });
/// assert_eq!(v, 42);
/// ```
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            // A spurious unpark only costs one more poll.
            Poll::Pending => thread::park(),
        }
    }
}

/// A job for the pool.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// A pool of at most `max` worker threads, started on demand and kept until the pool
/// is closed. The queue is not capped here: the server never holds more jobs than
/// connections times requests in flight per connection.
pub(crate) struct Pool {
    state: Mutex<PoolState>,
    cv: Condvar,
    max: usize,
}

struct PoolState {
    jobs: VecDeque<Job>,
    idle: usize,
    spawned: usize,
    closed: bool,
}

impl Pool {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(PoolState { jobs: VecDeque::new(), idle: 0, spawned: 0, closed: false }),
            cv: Condvar::new(),
            max: max.max(1),
        })
    }

    /// Queue a job; wake an idle worker or start one if the pool is below its size.
    pub(crate) fn submit(self: &Arc<Self>, job: Job) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.jobs.push_back(job);
        // An idle worker that was already woken still counts as idle until it takes a
        // job, so also start another worker when queued jobs outnumber the idle ones
        // (otherwise a quick job can wait behind a slow one).
        let wake = st.idle > 0;
        let grow = st.jobs.len() > st.idle && st.spawned < self.max;
        if wake {
            self.cv.notify_one();
        }
        if !grow {
            return;
        }
        if st.spawned < self.max {
            st.spawned += 1;
            drop(st);
            let pool = self.clone();
            let spawned = thread::Builder::new().name("rpcx-worker".into()).spawn(move || pool.work());
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start a worker thread");
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.spawned -= 1;
                // Run it here rather than lose it (only when no worker exists at all).
                if st.spawned == 0 {
                    if let Some(job) = st.jobs.pop_front() {
                        drop(st);
                        job();
                    }
                }
            }
        }
    }

    /// Let workers exit once the queue is empty. Running jobs are not interrupted.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.cv.notify_all();
    }

    fn work(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = st.jobs.pop_front() {
                drop(st);
                // Handler panics are caught by the router; this guards the pool against
                // anything else so a worker is never lost silently.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::warn!("a server job panicked");
                }
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if st.closed {
                st.spawned -= 1;
                return;
            }
            st.idle += 1;
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn block_on_parks_until_another_thread_wakes_the_future() {
        let (tx, rx) = mpsc::channel::<Waker>();
        let state = Arc::new(Mutex::new(false));
        let s2 = state.clone();
        let waker_thread = thread::spawn(move || {
            let w = rx.recv().unwrap();
            thread::sleep(Duration::from_millis(20));
            *s2.lock().unwrap() = true;
            w.wake();
        });
        let mut sent = false;
        let v = block_on(std::future::poll_fn(|cx| {
            if *state.lock().unwrap() {
                return Poll::Ready(7);
            }
            if !sent {
                sent = true;
                tx.send(cx.waker().clone()).unwrap();
            }
            Poll::Pending
        }));
        assert_eq!(v, 7);
        waker_thread.join().unwrap();
    }

    #[test]
    fn pool_runs_jobs_on_at_most_max_threads() {
        let pool = Pool::new(2);
        let (tx, rx) = mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            pool.submit(Box::new(move || tx.send((i, thread::current().id())).unwrap()));
        }
        let got: Vec<_> = (0..10).map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        let threads: std::collections::HashSet<_> = got.iter().map(|(_, t)| *t).collect();
        assert!(threads.len() <= 2, "{threads:?}");
        pool.close();
    }
}
