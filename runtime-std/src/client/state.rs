//! The client's side of the [engine](crate::engine): the `ClientConnection` and the
//! callers' reply slots, driven by the callers themselves (calls, cancels, closes), the
//! reader thread (responses) and the housekeeping thread (deadlines, heartbeats).

use super::{Outcome, Reply, Shared};
use crate::Error;
use crate::engine::{Engine, Intake, Machine};
use crate::reply::{self, ReplyRx, Wakes};
use rpcx_core::conn::{CallError, CallRejected, CallSpec, ClientConnection, ClientEvent, CloseMode};
use rpcx_core::wire::Message;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Calls queued by callers and not yet taken into the machine.
pub(super) const INTAKE_CAPACITY: usize = 4096;

/// Calls queued by callers that did not wait for the connection's lock.
pub(super) type CallIntake = Intake<(CallSpec, Reply)>;

/// Calls held while the connection is blocked (in-flight or unsent-bytes limit); more
/// are refused with [`CallRejected::Blocked`].
const MAX_DEFERRED: usize = 4096;

pub(super) struct ClientState {
    conn: ClientConnection,
    replies: FxHashMap<u64, Reply>,
    /// Calls waiting for room (the machine said it is blocked), in arrival order.
    deferred: VecDeque<(CallSpec, Reply)>,
    /// Dropped when the connection ends, which disconnects the push receiver.
    push_tx: Option<SyncSender<Message>>,
    shared: Arc<Shared>,
    intake: Arc<CallIntake>,
}

impl ClientState {
    pub(super) fn new(
        conn: ClientConnection,
        push_tx: SyncSender<Message>,
        shared: Arc<Shared>,
        intake: Arc<CallIntake>,
    ) -> Self {
        Self { conn, replies: FxHashMap::default(), deferred: VecDeque::new(), push_tx: Some(push_tx), shared, intake }
    }

    /// Take the calls callers queued, in order. A call whose caller already gave up
    /// is dropped here.
    pub(super) fn take_intake(&mut self) {
        for (spec, reply) in self.intake.take() {
            if !reply.is_abandoned() {
                self.call(spec, reply);
            }
        }
    }

    /// Start a call, or hold it while the connection is blocked.
    pub(super) fn call(&mut self, spec: CallSpec, reply: Reply) {
        if self.deferred.is_empty() {
            self.start_call(spec, reply);
        } else if self.deferred.len() < MAX_DEFERRED {
            self.deferred.push_back((spec, reply));
        } else {
            reply.complete(Err(Error::Rejected(CallRejected::Blocked)));
        }
    }

    /// Give up on the call whose caller holds `rx` (it went away or timed out): cancel
    /// it in the machine, or drop it from the calls waiting for room.
    pub(super) fn withdraw(&mut self, rx: &ReplyRx<Outcome>) {
        self.take_intake();
        match rx.seq() {
            Some(seq) => {
                if self.replies.remove(&seq).is_some() {
                    self.conn.cancel(Instant::now(), seq);
                }
            }
            None => self.deferred.retain(|(_, reply)| !reply.is_for(rx)),
        }
    }

    /// Act on `close` / `close_now` (read from the flags in [`Shared`]).
    pub(super) fn close(&mut self) {
        // Calls queued before the close go out first.
        self.take_intake();
        if self.shared.aborting.load(Ordering::SeqCst) {
            if !self.conn.is_closed() {
                self.conn.close(Instant::now(), CloseMode::Immediate);
            }
        } else if !self.conn.is_closing() {
            self.conn.close(Instant::now(), CloseMode::Graceful);
        }
        for (_, reply) in self.deferred.drain(..) {
            reply.complete(Err(Error::Shutdown));
        }
    }

    /// The connection is over and its socket closed: nothing may wait any longer.
    pub(super) fn finish(&mut self) {
        self.push_tx = None;
        for (_, reply) in self.intake.close() {
            reply.complete(Err(Error::Shutdown));
        }
        for (_, reply) in self.deferred.drain(..) {
            reply.complete(Err(Error::Shutdown));
        }
        for (_, reply) in self.replies.drain() {
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
}

impl Machine for ClientState {
    type After = Wakes<Outcome>;
    type Ext = Arc<CallIntake>;

    fn input(&mut self, now: Instant, plain: &[u8]) {
        self.conn.handle_input(now, plain);
    }

    fn eof(&mut self, now: Instant) {
        self.conn.handle_eof(now);
    }

    fn abort(&mut self, now: Instant, reason: String) {
        self.conn.abort(now, reason);
    }

    fn timeout(&mut self, now: Instant) {
        if self.deferred.iter().any(|(s, _)| s.deadline.is_some_and(|d| d <= now)) {
            let (expired, kept) = std::mem::take(&mut self.deferred)
                .into_iter()
                .partition::<VecDeque<_>, _>(|(s, _)| s.deadline.is_some_and(|d| d <= now));
            self.deferred = kept;
            for (_, reply) in expired {
                reply.complete(Err(Error::Call(CallError::TimedOut)));
            }
        }
        self.conn.handle_timeout(now);
    }

    fn next_timeout(&self) -> Option<Instant> {
        let deferred = self.deferred.iter().filter_map(|(s, _)| s.deadline).min();
        [self.conn.poll_timeout(), deferred].into_iter().flatten().min()
    }

    fn transmit(&mut self, buf: &mut Vec<u8>) -> bool {
        self.conn.poll_transmit(buf).is_some()
    }

    /// Finished calls are filled and their callers queued in `wakes` (woken once the
    /// lock is released).
    fn events(&mut self, wakes: &mut Wakes<Outcome>) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                ClientEvent::Response { seq, response } => {
                    if let Some(r) = self.replies.remove(&seq) {
                        r.complete_later(Ok(Some(response)), wakes);
                    }
                }
                ClientEvent::Sent { seq } => {
                    if let Some(r) = self.replies.remove(&seq) {
                        r.complete_later(Ok(None), wakes);
                    }
                }
                ClientEvent::Failed { seq, error } => {
                    if let Some(r) = self.replies.remove(&seq) {
                        r.complete_later(Err(Error::Call(error)), wakes);
                    }
                }
                ClientEvent::Push(msg) => {
                    // Overflow policy: drop the newest push and count it.
                    let sent = self.push_tx.as_ref().map(|tx| tx.try_send(msg));
                    if let None | Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) = sent {
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
                        r.complete_later(Err(Error::Call(CallError::ConnectionLost(reason.clone()))), wakes);
                    }
                    for (_, r) in self.deferred.drain(..) {
                        r.complete_later(Err(Error::Call(CallError::ConnectionLost(reason.clone()))), wakes);
                    }
                }
                _ => {}
            }
        }
    }

    fn direct_writes(&self) -> bool {
        false
    }

    fn wants_read(&self) -> bool {
        self.conn.wants_read()
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn stalled(&mut self, _now: Instant, _stalled: Duration) -> Result<(), String> {
        // `close_now` gives up on a peer that does not read.
        if self.conn.is_closed() || self.shared.aborting.load(Ordering::SeqCst) {
            Err("connection closed while writing".into())
        } else {
            Ok(())
        }
    }

    fn take_pending(&mut self) {
        self.take_intake();
    }

    fn has_pending(intake: &Arc<CallIntake>) -> bool {
        intake.is_pending()
    }

    fn after(_engine: &Arc<Engine<Self>>, mut wakes: Wakes<Outcome>) {
        reply::wake_all(&mut wakes);
    }
}
