//! One timer thread for all of a server's connections.
//!
//! A served connection's own thread is its reader; its deadlines (idle, read and frame
//! timeouts, the memory budget's grace) are kept here, in one heap for the whole server,
//! so an idle connection costs one thread, not two. Entries are never removed: a
//! connection whose deadline moved registers the new one, and a stale entry only makes
//! the connection look at its timers once more ([`Timed::tick`] is harmless when
//! nothing is due).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// How soon a connection whose lock was busy is looked at again.
const BUSY_RETRY: Duration = Duration::from_millis(2);

/// A connection with timers.
pub(crate) trait Timed: Send + Sync + 'static {
    /// Run the timers that are due at `now` (and whatever follows from them); `false`
    /// when the connection is busy right now (its lock is held), to be retried soon.
    fn tick(self: Arc<Self>, now: Instant) -> bool;
}

struct Entry {
    at: Instant,
    seq: u64,
    target: Weak<dyn Timed>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Heap {
    entries: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    closed: bool,
}

/// The timer heap, shared by the thread and every connection that schedules on it.
pub(crate) struct Timers {
    heap: Mutex<Heap>,
    cv: Condvar,
}

impl Timers {
    fn lock(&self) -> MutexGuard<'_, Heap> {
        self.heap.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Call `target`'s [`tick`](Timed::tick) at `at` (or soon after).
    pub(crate) fn schedule(&self, at: Instant, target: Weak<dyn Timed>) {
        let mut h = self.lock();
        if h.closed {
            return;
        }
        let first = h.entries.peek().is_none_or(|Reverse(e)| at < e.at);
        h.seq += 1;
        let seq = h.seq;
        h.entries.push(Reverse(Entry { at, seq, target }));
        drop(h);
        if first {
            self.cv.notify_one();
        }
    }

    /// Entries waiting (stale ones included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn run(self: Arc<Self>) {
        let mut due = Vec::new();
        let mut h = self.lock();
        loop {
            if h.closed {
                return;
            }
            let now = Instant::now();
            while h.entries.peek().is_some_and(|Reverse(e)| e.at <= now) {
                if let Some(Reverse(e)) = h.entries.pop() {
                    due.push(e.target);
                }
            }
            if due.is_empty() {
                let wait = h.entries.peek().map(|Reverse(e)| e.at.saturating_duration_since(now));
                h = match wait {
                    Some(d) => self.cv.wait_timeout(h, d).unwrap_or_else(|p| p.into_inner()).0,
                    None => self.cv.wait(h).unwrap_or_else(|p| p.into_inner()),
                };
                continue;
            }
            drop(h);
            for target in due.drain(..) {
                let Some(t) = target.upgrade() else { continue };
                let again = Arc::downgrade(&t);
                // A panic here would stop every connection's timers; the connection's
                // own code is guarded, this is the last line.
                let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.tick(now))).unwrap_or(true);
                if !done {
                    self.schedule(Instant::now() + BUSY_RETRY, again);
                }
            }
            h = self.lock();
        }
    }
}

/// A server's timer thread; stops when this is dropped.
pub(crate) struct Housekeeper {
    timers: Arc<Timers>,
}

impl Housekeeper {
    /// Start the thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let timers = Arc::new(Timers {
            heap: Mutex::new(Heap { entries: BinaryHeap::new(), seq: 0, closed: false }),
            cv: Condvar::new(),
        });
        let t = timers.clone();
        thread::Builder::new().name("rpcx-timers".into()).stack_size(256 << 10).spawn(move || t.run())?;
        Ok(Self { timers })
    }

    /// The heap connections schedule on.
    pub(crate) fn timers(&self) -> &Arc<Timers> {
        &self.timers
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        let mut h = self.timers.lock();
        h.closed = true;
        h.entries.clear();
        drop(h);
        self.timers.cv.notify_all();
    }
}

impl std::fmt::Debug for Housekeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Housekeeper").finish_non_exhaustive()
    }
}

/// The timer thread as the core's [`rpcx_core::service::Timer`]: a sleeping future is
/// woken from the heap (the worker polling it parks meanwhile).
pub(crate) struct CoreTimer(pub(crate) Arc<Timers>);

struct Sleep {
    at: Instant,
    waker: Mutex<Option<std::task::Waker>>,
}

impl Timed for Sleep {
    fn tick(self: Arc<Self>, now: Instant) -> bool {
        if now >= self.at {
            if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                w.wake();
            }
        }
        true
    }
}

impl rpcx_core::service::Timer for CoreTimer {
    fn sleep_until(&self, at: Instant) -> rpcx_core::service::BoxFuture<()> {
        let timers = self.0.clone();
        let sleep = Arc::new(Sleep { at, waker: Mutex::new(None) });
        let mut scheduled = false;
        Box::pin(std::future::poll_fn(move |cx| {
            if Instant::now() >= sleep.at {
                return std::task::Poll::Ready(());
            }
            *sleep.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            if !scheduled {
                scheduled = true;
                let target: Arc<dyn Timed> = sleep.clone();
                timers.schedule(at, Arc::downgrade(&target));
            }
            std::task::Poll::Pending
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    struct Count {
        ticks: AtomicUsize,
        busy_first: bool,
    }

    impl Timed for Count {
        fn tick(self: Arc<Self>, _now: Instant) -> bool {
            let n = self.ticks.fetch_add(1, SeqCst);
            !(self.busy_first && n == 0)
        }
    }

    fn wait_for(cond: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < end, "timed out");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn ticks_in_deadline_order_and_retries_a_busy_target() {
        let hk = Housekeeper::start().expect("thread");
        let late = Arc::new(Count { ticks: AtomicUsize::new(0), busy_first: false });
        let busy = Arc::new(Count { ticks: AtomicUsize::new(0), busy_first: true });
        let now = Instant::now();
        let weak_late: Weak<dyn Timed> = Arc::downgrade(&late) as _;
        let weak_busy: Weak<dyn Timed> = Arc::downgrade(&busy) as _;
        hk.timers().schedule(now + Duration::from_secs(3600), weak_late);
        hk.timers().schedule(now + Duration::from_millis(5), weak_busy);
        // Refused once, so looked at twice.
        wait_for(|| busy.ticks.load(SeqCst) == 2);
        assert_eq!(late.ticks.load(SeqCst), 0, "not due");
        assert_eq!(hk.timers().len(), 1);
    }

    #[test]
    fn a_dropped_target_is_skipped() {
        let hk = Housekeeper::start().expect("thread");
        let gone = Arc::new(Count { ticks: AtomicUsize::new(0), busy_first: false });
        let weak: Weak<dyn Timed> = Arc::downgrade(&gone) as _;
        hk.timers().schedule(Instant::now(), weak);
        drop(gone);
        wait_for(|| hk.timers().len() == 0);
    }
}
