//! How many blocking "calls" per second can N threads make on this machine when a call
//! is nothing but a hand-off: the caller queues a request and sleeps until another
//! thread answers it and wakes it. No sockets, no encoding, no rpcx: the ceiling any
//! thread-per-caller blocking client can reach here, to compare with the `load`
//! example's thread-per-caller figures.
//!
//! One answering thread takes every queued request at once, answers them all, and
//! unparks each caller.
//!
//! ```text
//! cargo run --release -p rpcx-std --example handoff_ceiling -- --secs 3 --threads 100
//! ```
#![allow(clippy::print_stdout)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

struct Caller {
    thread: Thread,
    answered: AtomicBool,
}

fn main() {
    let secs = common::secs_flag("--secs", 3.0);
    let threads: usize = common::flag("--threads", "100").parse().expect("--threads N");
    let queue: Arc<(Mutex<Vec<Arc<Caller>>>, Condvar)> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // The answerer runs until every caller has finished its last call.
    let done = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let answerer = {
        let (queue, done) = (queue.clone(), done.clone());
        thread::spawn(move || {
            let (lock, cv) = &*queue;
            let mut batch = Vec::new();
            while !done.load(Ordering::Relaxed) {
                {
                    let mut q = lock.lock().unwrap();
                    while q.is_empty() && !done.load(Ordering::Relaxed) {
                        q = cv.wait_timeout(q, Duration::from_millis(10)).unwrap().0;
                    }
                    std::mem::swap(&mut *q, &mut batch);
                }
                for c in batch.drain(..) {
                    c.answered.store(true, Ordering::Release);
                    c.thread.unpark();
                }
            }
        })
    };
    let start = Instant::now();
    let callers: Vec<_> = (0..threads)
        .map(|_| {
            let (queue, stop, calls) = (queue.clone(), stop.clone(), calls.clone());
            thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let me = Arc::new(Caller { thread: thread::current(), answered: AtomicBool::new(false) });
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        me.answered.store(false, Ordering::Relaxed);
                        {
                            let (lock, cv) = &*queue;
                            let mut q = lock.lock().unwrap();
                            q.push(me.clone());
                            if q.len() == 1 {
                                cv.notify_one();
                            }
                        }
                        while !me.answered.load(Ordering::Acquire) {
                            thread::park();
                        }
                        n += 1;
                    }
                    calls.fetch_add(n, Ordering::Relaxed);
                })
                .expect("spawn")
        })
        .collect();
    thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    answerer.join().unwrap();
    let n = calls.load(Ordering::Relaxed);
    println!("threads={threads} hand-offs={n} in {elapsed:?}: {:.0} calls/s", n as f64 / elapsed.as_secs_f64());
}
