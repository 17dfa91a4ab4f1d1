//! The client's side of the [engine](crate::engine): the core's `ClientSession` (the
//! connection machine and the callers' reply slots), driven by the callers themselves
//! (calls, cancels, closes), the reader thread (responses) and the housekeeping thread
//! (deadlines, heartbeats).

use super::{Outcome, Reply, Shared};
use crate::Error;
use crate::engine::{Engine, Intake, Machine};
use crate::reply::{self, ReplyRx, ReplyTx, Wakes};
use rpcx_core::conn::{
    CallError, CallSpec, CallTicket, ClientConfig, ClientSession, ClientStats, CloseMode, PushSink, ReplySlot,
    SessionConfig,
};
use rpcx_core::wire::Message;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

/// Calls queued by callers and not yet taken into the machine.
pub(super) const INTAKE_CAPACITY: usize = 4096;

/// Calls queued by callers that did not wait for the connection's lock.
pub(super) type CallIntake = Intake<(CallSpec, Reply, CallTicket)>;

/// Calls held while the connection is blocked (in-flight or unsent-bytes limit); more
/// are refused with `CallRejected::Blocked`.
const MAX_DEFERRED: usize = 4096;

impl ReplySlot for Reply {
    fn is_abandoned(&self) -> bool {
        ReplyTx::is_abandoned(self)
    }
    fn started(&self, seq: u64) {
        self.set_seq(seq);
    }
}

/// The push receiver's sending end; `None` once the connection ended (which
/// disconnects the receiver).
pub(super) struct Pushes(Option<SyncSender<Message>>);

impl PushSink for Pushes {
    fn offer(&mut self, push: Message) -> bool {
        self.0.as_ref().is_some_and(|tx| tx.try_send(push).is_ok())
    }
}

pub(super) struct ClientState {
    session: ClientSession<Reply, Pushes>,
    shared: Arc<Shared>,
    intake: Arc<CallIntake>,
}

impl ClientState {
    pub(super) fn new(
        config: ClientConfig,
        push_tx: SyncSender<Message>,
        shared: Arc<Shared>,
        intake: Arc<CallIntake>,
    ) -> Self {
        let config = SessionConfig {
            connection: config,
            max_deferred: MAX_DEFERRED,
            remote: Arc::from(shared.remote.as_str()),
            ..SessionConfig::default()
        };
        let session = ClientSession::new(config, Pushes(Some(push_tx)), Instant::now());
        Self { session, shared, intake }
    }

    /// Take the calls callers queued, in order. A call whose caller already gave up
    /// is dropped here.
    pub(super) fn take_intake(&mut self) {
        let now = Instant::now();
        for (spec, reply, ticket) in self.intake.take() {
            if reply.is_abandoned() {
                self.session.end_ticket(ticket, &Err(Error::Call(CallError::Cancelled)));
            } else {
                self.session.call_prepared(now, spec, reply, ticket);
            }
        }
    }

    /// Start a prepared call, or hold it while the connection is blocked.
    pub(super) fn call(&mut self, spec: CallSpec, reply: Reply, ticket: CallTicket) {
        self.session.call_prepared(Instant::now(), spec, reply, ticket);
    }

    /// Give up on the call whose caller holds `rx` (it went away or timed out): cancel
    /// it in the machine, or drop it from the calls waiting for room.
    pub(super) fn withdraw(&mut self, rx: &ReplyRx<Outcome>) {
        self.take_intake();
        match rx.seq() {
            Some(seq) => drop(self.session.cancel(Instant::now(), seq)),
            None => drop(self.session.withdraw(|reply| reply.is_for(rx))),
        }
    }

    /// Act on `close` / `close_now` (read from the flags in [`Shared`]).
    pub(super) fn close(&mut self) {
        // Calls queued before the close go out first.
        self.take_intake();
        let mode = if self.shared.aborting.load(Ordering::SeqCst) { CloseMode::Immediate } else { CloseMode::Graceful };
        self.session.close(Instant::now(), mode);
    }

    /// The connection machine's counters.
    pub(super) fn stats(&self) -> ClientStats {
        self.session.stats().clone()
    }

    /// The connection is over and its socket closed: nothing may wait any longer.
    pub(super) fn finish(&mut self) {
        self.session.pushes_mut().0 = None;
        for (_, reply, ticket) in self.intake.close() {
            self.session.end_ticket(ticket, &Err(Error::Shutdown));
            reply.complete(Err(Error::Shutdown));
        }
        self.session.finish();
    }
}

impl Machine for ClientState {
    type After = Wakes<Outcome>;
    type Ext = Arc<CallIntake>;

    fn input(&mut self, now: Instant, plain: &[u8]) {
        self.session.handle_input(now, plain);
    }

    fn eof(&mut self, now: Instant) {
        self.session.handle_eof(now);
    }

    fn abort(&mut self, now: Instant, reason: String) {
        self.session.abort(now, reason);
    }

    fn timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    fn transmit(&mut self, buf: &mut Vec<u8>) -> bool {
        self.session.poll_transmit(buf).is_some()
    }

    /// Finished calls are filled and their callers queued in `wakes` (woken once the
    /// lock is released).
    fn events(&mut self, wakes: &mut Wakes<Outcome>) {
        while let Some((reply, outcome)) = self.session.poll_completion() {
            reply.complete_later(outcome, wakes);
        }
        self.shared.dropped_pushes.store(self.session.dropped_pushes(), Ordering::Relaxed);
        if self.session.is_closing() && !self.shared.closing.swap(true, Ordering::SeqCst) {
            if let Some(reason) = self.session.lost() {
                tracing::debug!(remote = %self.shared.remote, %reason, "rpcx connection ended");
            }
        }
    }

    fn direct_writes(&self) -> bool {
        false
    }

    fn wants_read(&self) -> bool {
        self.session.wants_read()
    }

    fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    fn stalled(&mut self, _now: Instant, _stalled: Duration) -> Result<(), String> {
        // `close_now` gives up on a peer that does not read.
        if self.session.is_closed() || self.shared.aborting.load(Ordering::SeqCst) {
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
