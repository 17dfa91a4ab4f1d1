//! The client's driver thread: owns the `ClientConnection` and the write half, takes
//! commands and input from one bounded channel, and completes callers' reply slots.

use super::{COMMAND_CAPACITY, Command, Outcome, Reply, Shared};
use crate::Error;
use crate::reply::{self, Wakes};
use crate::transport::{Input, Link};
use rpcx_core::conn::{CallError, CallRejected, CallSpec, ClientConnection, ClientEvent, CloseMode};
use rpcx_core::wire::Message;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Commands taken per wake-up before writing.
const BATCH: usize = 256;
/// Upper bound on bytes taken from the machine before writing.
const WRITE_HIGH_WATER: usize = 256 << 10;
/// How often calls whose caller went away without a cancel are swept out.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Calls held by the driver while the connection is blocked (in-flight limit); more
/// are refused with [`CallRejected::Blocked`].
const MAX_DEFERRED: usize = 4096;

/// Start the driver thread for `conn` over `link` (whose reader is already running).
pub(super) fn spawn(
    link: Link,
    conn: ClientConnection,
    rx: Receiver<Command>,
    push_tx: SyncSender<Message>,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let driver = Driver {
        st: State {
            conn,
            replies: FxHashMap::default(),
            deferred: VecDeque::new(),
            wakes: Wakes::new(),
            push_tx,
            shared,
        },
        link,
        write_buf: Vec::with_capacity(64 << 10),
        sweep_at: Instant::now() + SWEEP_INTERVAL,
    };
    std::thread::Builder::new().name("rpcx-client".into()).spawn(move || driver.run(rx)).map(|_| ())
}

/// The connection machine and the application-facing state around it.
struct State {
    conn: ClientConnection,
    replies: FxHashMap<u64, Reply>,
    /// Calls waiting for room (the machine said it is blocked), in arrival order.
    deferred: VecDeque<(CallSpec, Reply)>,
    /// Callers whose calls ended, to be woken once the pending write is out: waking a
    /// thread is a syscall, and the server should get the new requests first.
    wakes: Wakes<Outcome>,
    push_tx: SyncSender<Message>,
    shared: Arc<Shared>,
}

struct Driver {
    st: State,
    link: Link,
    write_buf: Vec<u8>,
    sweep_at: Instant,
}

impl Driver {
    fn run(mut self, rx: Receiver<Command>) {
        // Bytes that arrived along with the TLS handshake.
        match self.link.decode(&[]) {
            Ok(plain) if !plain.is_empty() => self.st.conn.handle_input(Instant::now(), plain),
            Ok(_) => {}
            Err(e) => self.st.conn.abort(Instant::now(), e),
        }
        loop {
            // Drain: transmits, then events (which may admit deferred calls), until both
            // are empty or the write buffer is full.
            loop {
                while self.write_buf.len() < WRITE_HIGH_WATER
                    && self.st.conn.poll_transmit(&mut self.write_buf).is_some()
                {}
                if !self.st.drain_events() {
                    break;
                }
            }
            if !self.write_buf.is_empty() {
                let st = &mut self.st;
                // While the socket takes nothing, keep the machine's clocks running so
                // call deadlines still fire; give up once the connection is over.
                let res = self.link.write_all(&self.write_buf, |now, _| {
                    st.conn.handle_timeout(now);
                    st.drain_events();
                    st.wake_callers();
                    if st.conn.is_closed() || st.shared.aborting.load(Ordering::SeqCst) {
                        Err("connection closed while writing".into())
                    } else {
                        Ok(())
                    }
                });
                self.write_buf.clear();
                if let Err(e) = res {
                    self.st.conn.abort(Instant::now(), e);
                }
                self.st.wake_callers();
                continue;
            }
            self.st.wake_callers();
            if self.st.conn.is_closed() {
                break;
            }
            if self.st.shared.closing.load(Ordering::SeqCst) && self.st.close_pending() {
                // Calls sent before the close are ahead of it in the channel (a caller
                // sends, then sets the flag): take them first, so they are not refused.
                for _ in 0..2 * COMMAND_CAPACITY {
                    match rx.try_recv() {
                        Ok(cmd) => self.on_command(cmd),
                        Err(_) => break,
                    }
                }
                self.st.apply_close();
                continue;
            }
            let deadline = self.next_deadline();
            let first = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => rx.recv_timeout(left),
                    _ => Err(RecvTimeoutError::Timeout),
                },
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(cmd) => {
                    self.on_command(cmd);
                    for _ in 0..BATCH {
                        match rx.try_recv() {
                            Ok(cmd) => self.on_command(cmd),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Every sender is gone, the reader included: nothing more can arrive.
                Err(RecvTimeoutError::Disconnected) => self.st.conn.abort(Instant::now(), "command channel closed"),
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                self.on_timers(now);
            }
        }
        self.finish(rx);
    }

    fn finish(mut self, rx: Receiver<Command>) {
        let st = &mut self.st;
        st.wake_callers();
        st.shared.closing.store(true, Ordering::SeqCst);
        self.link.close(true);
        for (_, reply) in st.deferred.drain(..) {
            reply.complete(Err(Error::Shutdown));
        }
        st.shared.set_shutdown();
        // Calls queued after the end fail; the rest of the channel is dropped with it
        // (reply slots dropped unanswered report Shutdown).
        while let Ok(cmd) = rx.try_recv() {
            if let Command::Call(_, reply) = cmd {
                reply.complete(Err(Error::Shutdown));
            }
        }
        drop(rx);
        self.link.join_reader();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sweep = (!self.st.replies.is_empty() || !self.st.deferred.is_empty()).then_some(self.sweep_at);
        let deferred = self.st.deferred.iter().filter_map(|(s, _)| s.deadline).min();
        [self.st.conn.poll_timeout(), sweep, deferred].into_iter().flatten().min()
    }

    fn on_timers(&mut self, now: Instant) {
        let st = &mut self.st;
        if now >= self.sweep_at {
            self.sweep_at = now + SWEEP_INTERVAL;
            // Callers that went away without a cancel reaching us.
            let abandoned: Vec<u64> = st.replies.iter().filter(|(_, r)| r.is_abandoned()).map(|(s, _)| *s).collect();
            for seq in abandoned {
                st.replies.remove(&seq);
                st.conn.cancel(now, seq);
            }
            st.deferred.retain(|(_, r)| !r.is_abandoned());
        }
        if st.deferred.iter().any(|(s, _)| s.deadline.is_some_and(|d| d <= now)) {
            let (expired, kept) = std::mem::take(&mut st.deferred)
                .into_iter()
                .partition::<VecDeque<_>, _>(|(s, _)| s.deadline.is_some_and(|d| d <= now));
            st.deferred = kept;
            for (_, reply) in expired {
                reply.complete(Err(Error::Call(CallError::TimedOut)));
            }
        }
        st.conn.handle_timeout(now);
    }

    fn on_command(&mut self, cmd: Command) {
        let st = &mut self.st;
        match cmd {
            Command::Call(spec, reply) => {
                if st.deferred.is_empty() {
                    st.start_call(spec, reply);
                } else if st.deferred.len() < MAX_DEFERRED {
                    st.deferred.push_back((spec, reply));
                } else {
                    reply.complete(Err(Error::Rejected(CallRejected::Blocked)));
                }
            }
            Command::Cancel(seq) => {
                if st.replies.remove(&seq).is_some() {
                    st.conn.cancel(Instant::now(), seq);
                }
            }
            Command::Wake => {}
            Command::Input(Input::Data(buf, n)) => {
                let now = Instant::now();
                match self.link.decode(&buf[..n]) {
                    Ok(plain) => st.conn.handle_input(now, plain),
                    Err(e) => st.conn.abort(now, e),
                }
                self.link.recycle(buf);
            }
            Command::Input(Input::Eof) => st.conn.handle_eof(Instant::now()),
            Command::Input(Input::Failed(e)) => st.conn.abort(Instant::now(), e),
        }
    }
}

impl State {
    /// Whether `close` / `close_now` asked for something not done yet.
    fn close_pending(&self) -> bool {
        if self.shared.aborting.load(Ordering::SeqCst) { !self.conn.is_closed() } else { !self.conn.is_closing() }
    }

    /// Act on `close` / `close_now`.
    fn apply_close(&mut self) {
        let mode = if self.shared.aborting.load(Ordering::SeqCst) { CloseMode::Immediate } else { CloseMode::Graceful };
        self.conn.close(Instant::now(), mode);
        for (_, reply) in self.deferred.drain(..) {
            reply.complete(Err(Error::Shutdown));
        }
    }

    fn start_call(&mut self, spec: CallSpec, reply: Reply) {
        if !self.conn.is_closing() && !self.conn.poll_ready() {
            self.deferred.push_back((spec, reply));
            return;
        }
        match self.conn.call(Instant::now(), spec) {
            Ok(seq) => {
                reply.set_seq(seq);
                self.replies.insert(seq, reply);
            }
            Err(CallRejected::Closing) | Err(CallRejected::Closed(_)) => reply.complete(Err(Error::Shutdown)),
            Err(e) => reply.complete(Err(Error::Rejected(e))),
        }
    }

    /// Wake the callers whose calls ended (their replies are already in place).
    fn wake_callers(&mut self) {
        reply::wake_all(&mut self.wakes);
    }

    /// Handle every pending event (finished calls are filled, their callers queued in
    /// `wakes`); returns whether there was any.
    fn drain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.conn.poll_event() {
            any = true;
            match ev {
                ClientEvent::Response { seq, response } => {
                    if let Some(r) = self.replies.remove(&seq) {
                        r.complete_later(Ok(Some(response)), &mut self.wakes);
                    }
                }
                ClientEvent::Sent { seq } => {
                    if let Some(r) = self.replies.remove(&seq) {
                        r.complete_later(Ok(None), &mut self.wakes);
                    }
                }
                ClientEvent::Failed { seq, error } => {
                    if let Some(r) = self.replies.remove(&seq) {
                        r.complete_later(Err(Error::Call(error)), &mut self.wakes);
                    }
                }
                ClientEvent::Push(msg) => {
                    // Overflow policy: drop the newest push and count it.
                    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.push_tx.try_send(msg) {
                        self.shared.dropped_pushes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                ClientEvent::Unblocked => {
                    while !self.deferred.is_empty() && (self.conn.is_closing() || self.conn.poll_ready()) {
                        let (spec, reply) = self.deferred.pop_front().expect("not empty");
                        self.start_call(spec, reply);
                    }
                }
                ClientEvent::ConnectionLost(reason) => {
                    tracing::debug!(remote = %self.shared.remote, %reason, "rpcx connection ended");
                    self.shared.closing.store(true, Ordering::SeqCst);
                    for (_, r) in self.replies.drain() {
                        r.complete(Err(Error::Call(CallError::ConnectionLost(reason.clone()))));
                    }
                    for (_, r) in self.deferred.drain(..) {
                        r.complete(Err(Error::Call(CallError::ConnectionLost(reason.clone()))));
                    }
                }
                _ => {}
            }
        }
        any
    }
}
