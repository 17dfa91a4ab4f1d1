//! The engine every std connection (client and server) runs on: the connection machine
//! behind one lock, driven by whichever thread has something for it. There is no driver
//! thread to hop through.
//!
//! ```text
//! callers / handlers --Intake--> (taken by whoever holds the lock)
//! reader thread ------lock-----> machine --> output
//! worker threads -----lock-----> machine       | server: written by that thread, never
//! housekeeping thread -lock----> machine       |   blocking (MSG_DONTWAIT); the rest
//!   (timers, blocking writes, close)           |   is handed to housekeeping
//!                                              | client: queued for housekeeping, which
//!                                              v   writes it in batches
//! ```
//!
//! * The reader reads, takes the lock, feeds the machine and handles what comes of it:
//!   a client's reader completes calls; a server's reader dispatches requests and
//!   answers those whose handler finishes without waiting, writing the responses itself.
//! * Threads that must not wait for the lock (a caller starting a call, a handler
//!   pushing) put their work in an [`Intake`] and take the lock only if it is free. Every
//!   thread that releases the lock looks at the intake afterwards, so queued work is
//!   never left behind.
//! * Only the housekeeping thread waits on a full socket (so the reader can always keep
//!   reading). It also sleeps until the machine's next deadline (call deadlines,
//!   heartbeats, idle and read timeouts), and at the end closes the socket and joins
//!   the reader.
//! * A client leaves its output to the housekeeping thread: requests from many callers
//!   then go out in one write instead of one syscall each.
//! * Waking a thread is a syscall, so the engine tracks who sleeps and unparks only them.
//!
//! A client connection has its own housekeeping thread, as drawn above. A served
//! connection has one thread while it is idle, its reader ([`Engine::serve`]): its
//! timers are kept by the server's one timer thread ([`Timers`]), a blocking write is
//! done by a writer thread started only while output is stuck, and once the connection
//! is over (the machine closed, or the peer's end of input) the reader does the
//! housekeeping of its last moments itself.

use crate::housekeeper::{Timed, Timers};

use crate::transport::Sock;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bytes taken from the machine per write.
const WRITE_HIGH_WATER: usize = 256 << 10;
/// Size of the reader's buffer once a read has filled a smaller one.
const READ_BUF_LEN: usize = 64 << 10;
/// Size of the reader's stack buffer, until a read fills it (an idle connection then
/// holds no heap buffer).
const READ_BUF_SMALL: usize = 512;
/// Size of the reader's first heap buffer.
const READ_BUF_FIRST: usize = 4 << 10;
/// Stack of reader threads: a server's reader runs handlers that finish without
/// waiting, so it gets the size of a normal thread.
pub(crate) const READER_STACK: usize = 2 << 20;

/// What a connection's state (machine plus application bookkeeping) offers the engine.
pub(crate) trait Machine: Send + Sized + 'static {
    /// Work collected under the lock and done after it is released (waking callers,
    /// starting handler jobs).
    type After: Default;
    /// Read-only context kept beside the lock, for [`after`](Self::after).
    type Ext: Send + Sync + 'static;
    /// Plaintext bytes from the peer.
    fn input(&mut self, now: Instant, plain: &[u8]);
    /// The peer closed its side.
    fn eof(&mut self, now: Instant);
    /// The transport failed: end the connection.
    fn abort(&mut self, now: Instant, reason: String);
    /// A deadline from [`next_timeout`](Self::next_timeout) is due.
    fn timeout(&mut self, now: Instant);
    /// When [`timeout`](Self::timeout) must run next.
    fn next_timeout(&self) -> Option<Instant>;
    /// Append one frame of output to `buf`; false when there is none.
    fn transmit(&mut self, buf: &mut Vec<u8>) -> bool;
    /// Handle the machine's pending events.
    fn events(&mut self, after: &mut Self::After);
    /// Whether input is wanted now (false makes the reader wait before feeding more).
    fn wants_read(&self) -> bool;
    /// Whether the connection is over (the engine then closes the socket).
    fn is_closed(&self) -> bool;
    /// A blocking write has made no progress for `stalled`; `Err` abandons it.
    fn stalled(&mut self, now: Instant, stalled: Duration) -> Result<(), String>;
    /// Take work queued in an [`Intake`] the machine drains.
    fn take_pending(&mut self);
    /// Whether work waits in such an intake (looked at without the lock).
    fn has_pending(ext: &Self::Ext) -> bool;
    /// Whether a thread that changed the machine writes its output itself (without
    /// blocking) rather than leaving it to the housekeeping thread.
    fn direct_writes(&self) -> bool {
        true
    }
    /// Whether [`events`](Self::events) stopped with events left so that the output
    /// so far is written first (the server's per-write budget); the engine writes, then
    /// handles events again.
    fn backlog(&self) -> bool {
        false
    }
    /// How long closing the socket may wait for the peer to take the TLS
    /// `close_notify` (zero: one non-blocking attempt).
    fn close_linger(&self) -> Duration {
        Duration::ZERO
    }
    /// Do the collected work, unlocked.
    fn after(engine: &Arc<Engine<Self>>, after: Self::After);
}

/// One connection: its socket and its locked state.
pub(crate) struct Engine<M: Machine> {
    state: Mutex<Locked<M>>,
    sock: Sock,
    reader: Mutex<Option<JoinHandle<()>>>,
    ext: M::Ext,
    /// The housekeeping thread, to unpark.
    aux: OnceLock<thread::Thread>,
    /// The housekeeping thread is (about to be) parked; see [`kick`](Self::kick).
    aux_asleep: AtomicBool,
    /// The reader thread, to unpark.
    reader_thread: OnceLock<thread::Thread>,
    /// The server's timer thread, for a served connection (which has no housekeeping
    /// thread of its own until it ends).
    timers: Option<Arc<Timers>>,
}

/// What the lock guards.
pub(crate) struct Locked<M> {
    pub(crate) m: M,
    tls: Option<rustls::Connection>,
    /// A thread is writing (it holds the output buffer).
    writing: bool,
    /// Output a non-blocking write left over, for the housekeeping thread.
    handoff: Option<Vec<u8>>,
    /// The reusable output buffer (empty while a writer holds it).
    out: Vec<u8>,
    /// Plaintext scratch for TLS.
    plain: Vec<u8>,
    aux_waiting: bool,
    /// The deadline the housekeeping thread sleeps toward (`None`: no deadline).
    aux_until: Option<Instant>,
    reader_waiting: bool,
    /// Served connections: the deadline registered with the timer thread.
    scheduled: Option<Instant>,
    /// Served connections: a writer thread is doing a blocking write.
    writer: bool,
    /// Served connections: the read side was shut to end the reader's read.
    read_shut: bool,
    /// Served connections: the reader has become the housekeeping thread.
    tail: bool,
}

pub(crate) type Guard<'a, M> = MutexGuard<'a, Locked<M>>;

/// Whether `a` is strictly before `b`, `None` being never.
fn earlier(a: Option<Instant>, b: Option<Instant>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

impl<M: Machine> Engine<M> {
    /// An engine over a connected (and, for TLS, handshaken) socket.
    /// With `timers`, the connection is served by [`serve`](Self::serve) and keeps its
    /// deadlines there; without, it runs [`spawn_reader`](Self::spawn_reader) and
    /// [`run`](Self::run) on threads of its own.
    pub(crate) fn new(
        sock: Sock,
        tls: Option<rustls::Connection>,
        m: M,
        ext: M::Ext,
        timers: Option<Arc<Timers>>,
    ) -> io::Result<Arc<Self>> {
        sock.set_write_slice()?;
        let mut tls = tls;
        if let Some(t) = &mut tls {
            // Encrypted output goes straight into our buffer; no limit to run into.
            t.set_buffer_limit(None);
        }
        let locked = Locked {
            m,
            tls,
            writing: false,
            handoff: None,
            out: Vec::new(),
            plain: Vec::new(),
            aux_waiting: false,
            aux_until: None,
            reader_waiting: false,
            scheduled: None,
            writer: false,
            read_shut: false,
            tail: false,
        };
        Ok(Arc::new(Engine {
            state: Mutex::new(locked),
            sock,
            reader: Mutex::new(None),
            ext,
            aux: OnceLock::new(),
            aux_asleep: AtomicBool::new(false),
            reader_thread: OnceLock::new(),
            timers,
        }))
    }

    /// The context given to [`Engine::new`].
    pub(crate) fn ext(&self) -> &M::Ext {
        &self.ext
    }

    pub(crate) fn lock(&self) -> Guard<'_, M> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the machine, then handle its events, write what it produced (without
    /// blocking) and do the collected work.
    pub(crate) fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut M, &mut M::After) -> R) -> R {
        let mut after = M::After::default();
        let mut g = self.lock();
        let r = f(&mut g.m, &mut after);
        let g = self.settle(g, &mut after, false);
        self.release(g, after);
        r
    }

    /// Like [`with`](Self::with) if the lock is free now; `None` if it is not (its
    /// holder settles the machine when it is done).
    pub(crate) fn try_with<R>(self: &Arc<Self>, f: impl FnOnce(&mut M, &mut M::After) -> R) -> Option<R> {
        let mut g = match self.state.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let mut after = M::After::default();
        let r = f(&mut g.m, &mut after);
        let g = self.settle(g, &mut after, false);
        self.release(g, after);
        Some(r)
    }

    /// Make sure work just queued in an [`Intake`] is taken, without waiting for the
    /// lock or taking it: if the housekeeping thread sleeps, wake it; if it does not,
    /// it (or another lock holder, on its way out) takes the work. The housekeeping
    /// thread marks itself asleep before its last look at the intake, and the intake is
    /// filled before the mark is read here, so one of the two sees the other.
    pub(crate) fn kick(&self) {
        fence(Ordering::SeqCst);
        if self.aux_asleep.load(Ordering::SeqCst) {
            if let Some(t) = self.aux.get() {
                t.unpark();
            }
        }
    }

    /// Release the lock, do the collected work, then take what was queued in an
    /// intake while the lock was held (its sender found the lock taken and left it to
    /// us). Every release of the lock goes through here or [`sleep`](Self::sleep).
    fn release(self: &Arc<Self>, g: Guard<'_, M>, after: M::After) {
        drop(g);
        M::after(self, after);
        // A loop, not recursion through `try_with`: under a steady stream of queued work
        // this thread may win the lock many times in a row.
        loop {
            // Pairs with the fence in `Intake::push`: either we see its item, or its
            // sender's `try_lock` sees the lock free.
            fence(Ordering::SeqCst);
            if !M::has_pending(&self.ext) {
                return;
            }
            let mut g = match self.state.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                // Its holder takes the work on its way out.
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            g.m.take_pending();
            let mut after = M::After::default();
            let g = self.settle(g, &mut after, false);
            drop(g);
            M::after(self, after);
        }
    }

    /// Handle events and write output until there is nothing left to do, or another
    /// thread is writing (it takes our output too), or (non-blocking) the socket is full
    /// (the rest is handed to the housekeeping thread). Then wake whoever sleeps on a
    /// condition that changed.
    fn settle<'a>(self: &'a Arc<Self>, mut g: Guard<'a, M>, after: &mut M::After, blocking: bool) -> Guard<'a, M> {
        loop {
            g.m.take_pending();
            g.m.events(after);
            if g.writing || (g.handoff.is_some() && !blocking) {
                break;
            }
            if !blocking && !g.m.direct_writes() {
                // Queue the output for the housekeeping thread.
                let mut buf = std::mem::take(&mut g.out);
                g.gather(&mut buf, after);
                if buf.is_empty() {
                    g.out = buf;
                } else {
                    g.handoff = Some(buf);
                }
                break;
            }
            let mut buf = match g.handoff.take() {
                Some(rest) => rest,
                None => {
                    let mut buf = std::mem::take(&mut g.out);
                    g.gather(&mut buf, after);
                    buf
                }
            };
            if buf.is_empty() {
                g.out = buf;
                if g.m.backlog() {
                    continue;
                }
                break;
            }
            g.writing = true;
            drop(g);
            let res = if blocking { self.write_blocking(&buf) } else { self.sock.send_nowait(&buf) };
            if blocking {
                // The housekeeping thread may keep writing for a long time under load:
                // wake the callers whose calls ended so far (oneways sent, calls failed)
                // instead of holding them until it is done.
                M::after(self, std::mem::take(after));
            }
            g = self.lock();
            g.writing = false;
            match res {
                Ok(n) if n == buf.len() => {
                    buf.clear();
                    if g.out.capacity() < buf.capacity() {
                        g.out = buf;
                    }
                }
                Ok(n) => {
                    buf.drain(..n);
                    g.handoff = Some(buf);
                }
                Err(e) => g.m.abort(Instant::now(), e),
            }
        }
        if g.aux_waiting && (g.handoff.is_some() || g.m.is_closed() || earlier(g.m.next_timeout(), g.aux_until)) {
            g.aux_waiting = false;
            if let Some(t) = self.aux.get() {
                t.unpark();
            }
        }
        if g.reader_waiting && (g.m.wants_read() || g.m.is_closed()) {
            g.reader_waiting = false;
            if let Some(t) = self.reader_thread.get() {
                t.unpark();
            }
        }
        if let Some(timers) = &self.timers {
            if !g.tail {
                self.upkeep(&mut g, timers);
            }
        }
        g
    }

    /// A served connection's part of [`settle`](Self::settle) while its reader reads:
    /// start a writer for output left over, end the reader's read once the machine is
    /// closed, register the next deadline with the timer thread.
    fn upkeep(self: &Arc<Self>, g: &mut Guard<'_, M>, timers: &Arc<Timers>) {
        if g.handoff.is_some() && !g.writer {
            g.writer = true;
            let engine = self.clone();
            let spawned = thread::Builder::new()
                .name("rpcx-conn-writer".into())
                .stack_size(READER_STACK)
                .spawn(move || engine.write_out());
            if let Err(e) = spawned {
                g.writer = false;
                // The reader writes what is left, bounded by the close linger.
                g.m.abort(Instant::now(), format!("could not start a writer thread: {e}"));
            }
        }
        if g.m.is_closed() && !g.read_shut {
            g.read_shut = true;
            self.sock.shutdown(std::net::Shutdown::Read);
        }
        let next = g.m.next_timeout();
        if let Some(at) = next.filter(|_| earlier(next, g.scheduled)) {
            g.scheduled = next;
            let me: Weak<dyn Timed> = Arc::downgrade(self) as _;
            timers.schedule(at, me);
        }
    }

    /// Run the timers due at `now`, then settle with blocking writes: one step of a
    /// housekeeping or writer thread.
    fn housekeeping_step<'a>(
        self: &'a Arc<Self>,
        mut g: Guard<'a, M>,
        after: &mut M::After,
        now: Instant,
    ) -> Guard<'a, M> {
        if g.m.next_timeout().is_some_and(|t| t <= now) {
            g.m.timeout(now);
        }
        self.settle(g, after, true)
    }

    /// A served connection's writer thread: blocking writes (timers running between
    /// slices) until no output is left over, then it ends.
    fn write_out(self: Arc<Self>) {
        let mut g = self.lock();
        loop {
            let mut after = M::After::default();
            g = self.housekeeping_step(g, &mut after, Instant::now());
            let done = g.handoff.is_none() || g.tail;
            if done {
                g.writer = false;
            }
            self.release(g, after);
            if done {
                return;
            }
            g = self.lock();
        }
    }

    /// Serve the connection on this thread: read until the input ends or the machine
    /// closes, then do its housekeeping until it is over, and close the socket.
    pub(crate) fn serve(self: &Arc<Self>) {
        self.clone().read_loop();
        self.lock().tail = true;
        self.run();
    }

    /// Write all of `buf`, waiting on a full socket in slices; between slices the
    /// machine's timers run and [`Machine::stalled`] decides whether to go on. Returns
    /// the bytes written (all of them) or why it gave up.
    fn write_blocking(self: &Arc<Self>, buf: &[u8]) -> Result<usize, String> {
        let mut off = 0;
        let mut progress_at = Instant::now();
        while off < buf.len() {
            match self.sock.write_blocking(&buf[off..]) {
                Ok(0) => return Err("socket write returned zero".into()),
                Ok(n) => {
                    off += n;
                    progress_at = Instant::now();
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let mut after = M::After::default();
                    let mut g = self.lock();
                    let now = Instant::now();
                    if g.m.next_timeout().is_some_and(|t| t <= now) {
                        g.m.timeout(now);
                    }
                    g.m.events(&mut after);
                    let verdict = g.m.stalled(now, now.saturating_duration_since(progress_at));
                    self.release(g, after);
                    verdict?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(off)
    }

    /// Start the reader thread: it reads into one buffer, waits while the machine does
    /// not want input, and feeds it (decrypting under TLS).
    pub(crate) fn spawn_reader(self: &Arc<Self>, name: &str) -> io::Result<()> {
        let engine = self.clone();
        let handle =
            thread::Builder::new().name(name.into()).stack_size(READER_STACK).spawn(move || engine.read_loop())?;
        *self.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }

    fn read_loop(self: Arc<Self>) {
        let _ = self.reader_thread.set(thread::current());
        // An idle connection holds no read buffer: reads go to a small one on the stack
        // until one fills it, then to the heap buffer, which grows once it is filled.
        let mut small = [0u8; READ_BUF_SMALL];
        let mut buf: Vec<u8> = Vec::new();
        // Bytes that arrived along with the TLS handshake.
        self.feed(&[], false);
        loop {
            let target: &mut [u8] = if buf.is_empty() { &mut small } else { &mut buf };
            let (n, end) = match self.sock.read_ref(target) {
                Ok(0) => (0, Some(None)),
                Ok(n) => (n, None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => (0, Some(Some(e.to_string()))),
            };
            match end {
                None => {
                    let data = if buf.is_empty() { &small[..n] } else { &buf[..n] };
                    if self.feed(data, true) {
                        return;
                    }
                    if buf.is_empty() {
                        if n == small.len() {
                            buf = vec![0u8; READ_BUF_FIRST];
                        }
                    } else if n == buf.len() && buf.len() < READ_BUF_LEN {
                        buf.resize(READ_BUF_LEN, 0);
                    }
                }
                Some(failure) => {
                    self.end_of_input(failure);
                    return;
                }
            }
        }
    }

    /// Feed `raw` (waiting first, if `wait`, until the machine wants input). Returns
    /// whether the connection is over.
    fn feed(self: &Arc<Self>, raw: &[u8], wait: bool) -> bool {
        let mut after = M::After::default();
        let mut g = self.lock();
        if wait {
            g = self.wait_readable(g);
        }
        let now = Instant::now();
        let locked = &mut *g;
        match &mut locked.tls {
            None => locked.m.input(now, raw),
            Some(tls) => match decrypt(tls, raw, &mut locked.plain) {
                Ok(()) => {
                    if !locked.plain.is_empty() {
                        locked.m.input(now, &locked.plain);
                    }
                }
                Err(e) => locked.m.abort(now, e),
            },
        }
        let g = self.settle(g, &mut after, false);
        let closed = g.m.is_closed();
        self.release(g, after);
        closed
    }

    /// The end of the stream (`None`) or a read failure, after the machine is ready.
    fn end_of_input(self: &Arc<Self>, failure: Option<String>) {
        let mut after = M::After::default();
        let g = self.lock();
        let mut g = self.wait_readable(g);
        let now = Instant::now();
        match failure {
            None => g.m.eof(now),
            Some(e) => g.m.abort(now, e),
        }
        let g = self.settle(g, &mut after, false);
        self.release(g, after);
    }

    /// Like a runtime that only reads while the machine wants to: input (the end of the
    /// stream included) waits while the application is behind or a close is under way.
    fn wait_readable<'a>(self: &'a Arc<Self>, mut g: Guard<'a, M>) -> Guard<'a, M> {
        while !g.m.wants_read() && !g.m.is_closed() {
            g.reader_waiting = true;
            drop(g);
            self.sleep(None);
            g = self.lock();
        }
        g.reader_waiting = false;
        g
    }

    /// Sleep (the lock released, the flag that asks for an unpark set) until unparked
    /// or `until`. Like every thread that releases the lock, first take work that was
    /// queued while the lock was held.
    fn sleep(self: &Arc<Self>, until: Option<Instant>) {
        fence(Ordering::SeqCst);
        if M::has_pending(&self.ext) {
            self.try_with(|m, _| m.take_pending());
        }
        match until {
            None => thread::park(),
            Some(t) => thread::park_timeout(t.saturating_duration_since(Instant::now())),
        }
    }

    /// The housekeeping loop, run by the connection's own thread until the machine is
    /// closed: timers, handed-over (blocking) writes, then the close of the socket and
    /// the reader's end. Returns once both are done.
    pub(crate) fn run(self: &Arc<Self>) {
        let _ = self.aux.set(thread::current());
        let mut g = self.lock();
        loop {
            let now = Instant::now();
            let mut after = M::After::default();
            g = self.housekeeping_step(g, &mut after, now);
            let over = g.m.is_closed() && !g.writing && g.handoff.is_none();
            // Sleep toward the next deadline unless there is more to do now; a change
            // that needs this thread unparks it (see `settle`).
            let until = g.m.next_timeout();
            let busy = g.handoff.is_some() || (g.m.is_closed() && !g.writing) || until.is_some_and(|t| t <= now);
            if !over && !busy {
                g.aux_until = until;
                g.aux_waiting = true;
            }
            self.release(g, after);
            if over {
                break;
            }
            if !busy {
                self.aux_asleep.store(true, Ordering::SeqCst);
                self.sleep(until);
                self.aux_asleep.store(false, Ordering::SeqCst);
                // Woken, most often, by a caller in the middle of a burst of calls: let
                // it queue the rest, so they go out in one write (measured: std-go at
                // 1 x 100 in scripts/load-compare.sh, median 0.72 -> 0.77 of tokio).
                thread::yield_now();
            }
            g = self.lock();
            g.aux_waiting = false;
        }
        self.close_socket();
    }

    /// A TLS close_notify (best effort, waiting at most [`Machine::close_linger`]), shut
    /// the socket (which ends the reader's read), and wait for the reader.
    fn close_socket(&self) {
        let mut g = self.lock();
        let linger = g.m.close_linger();
        let mut bye = Vec::new();
        if let Some(tls) = &mut g.tls {
            tls.send_close_notify();
            while tls.wants_write() {
                if tls.write_tls(&mut bye).is_err() {
                    break;
                }
            }
        }
        drop(g);
        if !bye.is_empty() {
            self.send_bounded(&bye, linger);
        }
        self.sock.shutdown(std::net::Shutdown::Both);
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(r) = reader {
            if r.thread().id() != thread::current().id() {
                let _ = r.join();
            }
        }
    }
}

impl<M: Machine> Engine<M> {
    /// Send `buf` unless that takes longer than `limit` (zero: one non-blocking try).
    fn send_bounded(&self, buf: &[u8], limit: Duration) {
        let Ok(mut off) = self.sock.send_nowait(buf) else { return };
        let deadline = Instant::now() + limit;
        while off < buf.len() && Instant::now() < deadline {
            match self.sock.write_blocking(&buf[off..]) {
                Ok(0) => return,
                Ok(n) => off += n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

impl<M: Machine> Locked<M> {
    /// Take output into `buf` until the machine has none left (or `buf` is full).
    /// Queued work and events are handled in between, as they can make more output
    /// (a call admitted once there is room, a push): when this returns with room left,
    /// the machine has nothing more to send.
    fn gather(&mut self, buf: &mut Vec<u8>, after: &mut M::After) {
        loop {
            let before = buf.len();
            self.fill(buf);
            // A backlog is handled after this output is written.
            if buf.len() == before || buf.len() >= WRITE_HIGH_WATER || self.m.backlog() {
                return;
            }
            self.m.take_pending();
            self.m.events(after);
        }
    }

    /// Take output from the machine into `buf` (encrypted under TLS).
    fn fill(&mut self, buf: &mut Vec<u8>) {
        match &mut self.tls {
            None => while buf.len() < WRITE_HIGH_WATER && self.m.transmit(buf) {},
            Some(tls) => {
                self.plain.clear();
                while self.plain.len() < WRITE_HIGH_WATER && self.m.transmit(&mut self.plain) {}
                if !self.plain.is_empty() {
                    // With no buffer limit rustls takes everything.
                    if let Err(e) = io::Write::write_all(&mut tls.writer(), &self.plain) {
                        self.m.abort(Instant::now(), e.to_string());
                    }
                }
                while tls.wants_write() {
                    if tls.write_tls(buf).is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// Decrypt `raw` into `plain` (cleared first). An empty `raw` processes what the TLS
/// state already holds (bytes read along with the handshake). Post-handshake messages
/// that need an answer (key update) and alerts are left in `tls` for the next write.
fn decrypt(tls: &mut rustls::Connection, raw: &[u8], plain: &mut Vec<u8>) -> Result<(), String> {
    plain.clear();
    let mut rd = raw;
    loop {
        if !rd.is_empty() {
            match tls.read_tls(&mut rd) {
                Ok(0) => rd = &[], // close_notify: nothing more is read; the TCP EOF follows
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Other => {} // plaintext buffer full: drain below
                Err(e) => return Err(e.to_string()),
            }
        }
        tls.process_new_packets().map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 16 << 10];
        loop {
            match tls.reader().read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => plain.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        if rd.is_empty() {
            return Ok(());
        }
    }
}

/// Work handed to a connection by threads that do not wait for its lock (callers'
/// calls, handlers' pushes): a short-held queue that whoever holds the connection's lock
/// drains ([`take`](Self::take)). Every lock holder looks at [`is_pending`](Self::is_pending)
/// after unlocking and drains what arrived meanwhile, and a thread that queues work
/// tries the lock itself after queueing, so nothing is left behind.
pub(crate) struct Intake<T> {
    queue: Mutex<IntakeQueue<T>>,
    pending: AtomicBool,
    capacity: usize,
}

struct IntakeQueue<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// Why [`Intake::push`] gave the item back.
pub(crate) enum Refused<T> {
    Full(T),
    Closed(T),
}

impl<T> Intake<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(IntakeQueue { items: VecDeque::new(), closed: false }),
            pending: AtomicBool::new(false),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, IntakeQueue<T>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `item`, unless the queue is full or closed.
    pub(crate) fn push(&self, item: T) -> Result<(), Refused<T>> {
        let mut q = self.lock();
        if q.closed {
            return Err(Refused::Closed(item));
        }
        if q.items.len() >= self.capacity {
            return Err(Refused::Full(item));
        }
        q.items.push_back(item);
        self.pending.store(true, Ordering::SeqCst);
        drop(q);
        // The sender tries the connection's lock next; see `Engine::release`.
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Whether anything waits to be taken.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Everything queued, in order.
    pub(crate) fn take(&self) -> VecDeque<T> {
        if !self.is_pending() {
            return VecDeque::new();
        }
        let mut q = self.lock();
        self.pending.store(false, Ordering::SeqCst);
        std::mem::take(&mut q.items)
    }

    /// Refuse everything from now on; returns what was still queued.
    pub(crate) fn close(&self) -> VecDeque<T> {
        let mut q = self.lock();
        q.closed = true;
        self.pending.store(false, Ordering::SeqCst);
        std::mem::take(&mut q.items)
    }
}

impl<M: Machine> Timed for Engine<M>
where
    Engine<M>: Send + Sync,
{
    fn tick(self: Arc<Self>, _now: Instant) -> bool {
        let mut g = match self.state.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        if g.tail {
            // The reader keeps the timers now.
            return true;
        }
        let now = Instant::now();
        if g.scheduled.is_some_and(|t| t <= now) {
            g.scheduled = None;
        }
        if g.m.next_timeout().is_some_and(|t| t <= now) {
            g.m.timeout(now);
        }
        let mut after = M::After::default();
        let g = self.settle(g, &mut after, false);
        self.release(g, after);
        true
    }
}
