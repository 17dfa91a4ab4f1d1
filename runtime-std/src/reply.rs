//! A one-shot reply slot between the thread that completes a call (the connection's
//! reader or housekeeping thread) and a blocked caller.
//!
//! Waking a sleeping thread is a syscall that costs the waker microseconds. When a batch
//! of responses arrives, the driver would pay that once per caller, serially, and it is
//! the connection's one serial thread. So the driver fills every slot of the batch but
//! wakes only two callers ([`wake_all`]); each woken caller wakes two more before
//! returning, and so on: a binary tree of wake-ups spread over the callers' own threads
//! and every core.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const NO_SEQ: u64 = u64::MAX;

struct Slot<T> {
    inner: Mutex<Inner<T>>,
    cv: Condvar,
    /// The seq the connection gave the call, once it was accepted (for cancelling).
    seq: AtomicU64,
}

struct Inner<T> {
    state: State<T>,
    /// The caller is asleep on the condvar (and needs a notify to see the reply).
    asleep: bool,
    /// Callers this slot's caller must wake on its way out (see [`wake_all`]).
    relay: Vec<Arc<Slot<T>>>,
}

enum State<T> {
    Waiting,
    Ready(T),
    Taken,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A new slot: the driver keeps the sender, the caller the receiver.
pub(crate) fn pair<T>() -> (ReplyTx<T>, ReplyRx<T>) {
    let inner = Inner { state: State::Waiting, asleep: false, relay: Vec::new() };
    let slot = Arc::new(Slot { inner: Mutex::new(inner), cv: Condvar::new(), seq: AtomicU64::new(NO_SEQ) });
    (ReplyTx { slot: slot.clone(), on_drop: None }, ReplyRx { slot })
}

/// Callers whose replies are in place and who still have to be woken.
pub(crate) struct Wakes<T>(Vec<Arc<Slot<T>>>);

impl<T> Default for Wakes<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Wake every caller in `wakes`: notify the heads of its two halves and hand each the
/// rest of its half to wake in turn. Callers that already left (a spurious wake-up
/// showed them their reply) are skipped.
pub(crate) fn wake_all<T>(wakes: &mut Wakes<T>) {
    relay(std::mem::take(&mut wakes.0));
}

fn relay<T>(mut list: Vec<Arc<Slot<T>>>) {
    let second = list.split_off(list.len() / 2);
    for mut part in [list, second] {
        // Take the first slot whose caller is still there as the head.
        while !part.is_empty() {
            let head = part.swap_remove(0);
            let mut g = head.lock();
            if matches!(g.state, State::Ready(_)) {
                g.relay = part;
                drop(g);
                head.cv.notify_one();
                break;
            }
        }
    }
}

/// The driver's end. Dropping it without completing fills the slot with the value
/// given to [`ReplyTx::with_drop_value`], so a caller never waits on a reply nobody
/// will send.
pub(crate) struct ReplyTx<T> {
    slot: Arc<Slot<T>>,
    on_drop: Option<fn() -> T>,
}

impl<T> ReplyTx<T> {
    /// What a dropped, uncompleted sender delivers.
    pub(crate) fn with_drop_value(mut self, f: fn() -> T) -> Self {
        self.on_drop = Some(f);
        self
    }

    /// Deliver the reply and wake the caller now.
    pub(crate) fn complete(mut self, value: T) {
        self.on_drop = None;
        if self.fill(value) {
            self.slot.cv.notify_one();
        }
    }

    /// Deliver the reply; if the caller sleeps, add it to `wakes` (see [`wake_all`]).
    pub(crate) fn complete_later(mut self, value: T, wakes: &mut Wakes<T>) {
        self.on_drop = None;
        if self.fill(value) {
            wakes.0.push(self.slot.clone());
        }
    }

    /// Record the call's seq.
    pub(crate) fn set_seq(&self, seq: u64) {
        self.slot.seq.store(seq, Ordering::Release);
    }

    /// Whether `rx` is this sender's receiver.
    pub(crate) fn is_for(&self, rx: &ReplyRx<T>) -> bool {
        Arc::ptr_eq(&self.slot, &rx.slot)
    }

    /// Whether the caller has gone away (dropped its receiver).
    pub(crate) fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.slot) == 1
    }

    /// Put the value in place; returns whether the caller sleeps and needs a notify.
    fn fill(&self, value: T) -> bool {
        let mut g = self.slot.lock();
        if matches!(g.state, State::Waiting) {
            g.state = State::Ready(value);
            g.asleep
        } else {
            false
        }
    }
}

impl<T> Drop for ReplyTx<T> {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            if self.fill(f()) {
                self.slot.cv.notify_one();
            }
        }
    }
}

/// The caller's end.
pub(crate) struct ReplyRx<T> {
    slot: Arc<Slot<T>>,
}

impl<T> ReplyRx<T> {
    /// Block until the reply arrives.
    pub(crate) fn wait(&self) -> T {
        self.wait_until(None).expect("no deadline")
    }

    /// Block until the reply arrives or `timeout` passes (`None`: timed out).
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> Option<T> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_until(Some(deadline)),
            None => Some(self.wait()),
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Option<T> {
        let mut g = self.slot.lock();
        loop {
            match std::mem::replace(&mut g.state, State::Taken) {
                State::Ready(v) => {
                    g.asleep = false;
                    let relay_list = std::mem::take(&mut g.relay);
                    drop(g);
                    // Pass the wake-ups on before going back to work.
                    if !relay_list.is_empty() {
                        relay(relay_list);
                    }
                    return Some(v);
                }
                State::Waiting => g.state = State::Waiting,
                State::Taken => panic!("reply taken twice"),
            }
            g.asleep = true;
            // A wake-up may be spurious: look again.
            g = match deadline {
                None => self.slot.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        g.asleep = false;
                        return None;
                    }
                    self.slot.cv.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }

    /// Whether the reply has arrived (and not been taken).
    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.slot.lock().state, State::Ready(_))
    }

    /// Whether the reply has been delivered (taken or not).
    pub(crate) fn is_finished(&self) -> bool {
        !matches!(self.slot.lock().state, State::Waiting)
    }

    /// The call's seq, if the connection has accepted it.
    pub(crate) fn seq(&self) -> Option<u64> {
        Some(self.slot.seq.load(Ordering::Acquire)).filter(|&s| s != NO_SEQ)
    }
}

impl<T> Drop for ReplyRx<T> {
    fn drop(&mut self) {
        // A caller that gives up (timed out) after being handed wake-ups passes them on.
        let relay_list = std::mem::take(&mut self.slot.lock().relay);
        if !relay_list.is_empty() {
            relay(relay_list);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_sender_delivers_its_drop_value() {
        let (tx, rx) = pair::<u32>();
        let tx = tx.with_drop_value(|| 9);
        std::thread::spawn(move || drop(tx));
        assert_eq!(rx.wait(), 9);
    }

    #[test]
    fn complete_wakes_the_waiter_and_a_sender_knows_its_receiver() {
        let (tx, rx) = pair::<u32>();
        assert!(tx.is_for(&rx));
        assert_eq!(rx.wait_timeout(Duration::from_millis(10)), None);
        let t = std::thread::spawn(move || rx.wait());
        tx.complete(5);
        assert_eq!(t.join().unwrap(), 5);
        let (tx, _rx) = pair::<u32>();
        let (_, other) = pair::<u32>();
        assert!(!tx.is_for(&other));
    }

    #[test]
    fn a_batch_of_sleeping_callers_is_woken_through_the_relay() {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for i in 0..50u32 {
            let (tx, rx) = pair::<u32>();
            senders.push(tx);
            let started = started_tx.clone();
            threads.push(std::thread::spawn(move || {
                started.send(()).unwrap();
                (i, rx.wait())
            }));
        }
        for _ in 0..50 {
            started_rx.recv().unwrap();
        }
        // Wait (bounded) until every caller sleeps, so the relay really has to wake them.
        let t0 = Instant::now();
        while !senders.iter().all(|tx| tx.slot.lock().asleep) {
            assert!(t0.elapsed() < Duration::from_secs(10), "callers did not go to sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut wakes = Wakes::default();
        for (i, tx) in senders.into_iter().enumerate() {
            tx.complete_later(i as u32 * 2, &mut wakes);
        }
        wake_all(&mut wakes);
        for t in threads {
            let (i, v) = t.join().unwrap();
            assert_eq!(v, i * 2);
        }
    }
}
