//! [`ClientSession`]: a [`ClientConnection`] plus the call bookkeeping every runtime used
//! to keep beside it (reply slots by seq, calls waiting for room, the sweep of calls
//! whose caller went away, the push overflow policy, and every timer), so a runtime's
//! client driver only moves bytes, time and reply slots.

use super::{
    CallError, CallRejected, CallSpec, ClientConfig, ClientConnection, ClientEvent, ClientStats, CloseMode,
    FinishedCall, OutgoingCall,
};
use crate::Extensions;
use crate::conn::LostReason;
use crate::error::Error;
use crate::wire::{EncodeBuf, Message};
use bytes::Bytes;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a call ended, as its caller sees it: the response (`None` for a oneway call,
/// complete once written) or the error.
pub type Outcome = Result<Option<Message>, Error>;

/// The runtime's end of a caller's reply channel (a oneshot sender, a slot a thread
/// sleeps on). The session keeps it while the call is in flight and hands it back with
/// the [`Outcome`] from [`ClientSession::poll_completion`].
pub trait ReplySlot {
    /// Whether the caller stopped waiting (its end was dropped). Such calls are
    /// cancelled by [`ClientSession::sweep`], which frees their in-flight room.
    fn is_abandoned(&self) -> bool;

    /// The call was given `seq` (it is in flight now). A runtime whose callers cancel by
    /// seq ([`ClientSession::cancel`]) records it here; the default does nothing.
    fn started(&self, seq: u64) {
        let _ = seq;
    }
}

/// Where server pushes go (a bounded queue the application reads).
pub trait PushSink {
    /// Hand `push` over; `false` when there is no room (or nobody reads any more): the
    /// push is then dropped and the session counts it. The connection is never stalled
    /// by a slow push consumer (Go drops pushes too, rpcx#583).
    fn offer(&mut self, push: Message) -> bool;
}

/// Settings of a [`ClientSession`].
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The connection machine's settings (limits, heartbeat, idle timeout).
    pub connection: ClientConfig,
    /// Calls held while the connection is blocked (in-flight or unsent-bytes limit);
    /// more are refused with [`CallRejected::Blocked`].
    pub max_deferred: usize,
    /// How often the session looks for calls whose caller went away, while calls are in
    /// flight (a runtime that learns of a dropped caller at once calls
    /// [`ClientSession::sweep`] or [`ClientSession::cancel`] itself).
    pub sweep_interval: Duration,
    /// The server's address as the client was given it, for hooks and spans.
    pub remote: Arc<str>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            connection: ClientConfig::default(),
            max_deferred: 4096,
            sweep_interval: Duration::from_secs(1),
            remote: Arc::from(""),
        }
    }
}

/// What the session keeps of a call for its `post_call` hooks and its span; only made
/// when there are hooks or the span is enabled.
struct Record {
    service_path: Bytes,
    service_method: Bytes,
    started: Instant,
    request_size: usize,
    extensions: Extensions,
    span: tracing::Span,
}

/// A call's span and the state its `pre_call` hooks kept, made where the call is made
/// by [`prepare_call`] (so the span's parent, and whatever the hooks read from the
/// current context, are the caller's) and handed to
/// [`ClientSession::call_prepared`]. A ticket for a call that never reaches a session
/// (its caller went away, the connection ended) is ended with [`CallTicket::end`].
#[derive(Default)]
#[must_use = "a prepared call's post_call hooks run only when it is handed on or ended"]
pub struct CallTicket(Option<Box<Record>>);

impl std::fmt::Debug for CallTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "CallTicket" } else { "CallTicket(empty)" })
    }
}

impl CallTicket {
    /// End a call that never reached a session, with `outcome`, at `now`: its
    /// `post_call` hooks run and its span closes.
    pub fn end(self, hooks: &super::ClientHookSet, remote: &str, now: Instant, outcome: &Outcome) {
        finish_record(hooks, remote, now, self.0, outcome);
    }
}

/// Make a call's span and run the `pre_call` hooks on `spec` (they may change its
/// names and metadata), at `now`, where the call is made. A refusal ends the call at
/// once (its `post_call` hooks run) and is the `Err`.
pub fn prepare_call(
    hooks: &super::ClientHookSet,
    remote: &str,
    now: Instant,
    spec: &mut CallSpec,
) -> Result<CallTicket, Error> {
    let span = tracing::debug_span!(
        target: "rpcx",
        "rpcx.call",
        rpc.system = "rpcx",
        rpc.service = %String::from_utf8_lossy(&spec.service_path),
        rpc.method = %String::from_utf8_lossy(&spec.service_method),
        peer = %remote,
        seq = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    if hooks.is_empty() && span.is_disabled() {
        return Ok(CallTicket(None));
    }
    let mut extensions = Extensions::new();
    let refused = span.in_scope(|| {
        hooks
            .check("pre_call hook", |h| {
                h.pre_call(&mut OutgoingCall {
                    remote,
                    service_path: &mut spec.service_path,
                    service_method: &mut spec.service_method,
                    metadata: &mut spec.metadata,
                    oneway: spec.oneway,
                    extensions: &mut extensions,
                })
            })
            .err()
    });
    let rec = Box::new(Record {
        service_path: spec.service_path.clone(),
        service_method: spec.service_method.clone(),
        started: now,
        request_size: spec.payload.len(),
        extensions,
        span,
    });
    match refused {
        None => Ok(CallTicket(Some(rec))),
        Some(text) => {
            let e = Error::Hook(text);
            finish_record(hooks, remote, now, Some(rec), &Err(e.clone()));
            Err(e)
        }
    }
}

/// Run the `post_call` hooks and close the span of a call that ended with `outcome`.
fn finish_record(
    hooks: &super::ClientHookSet,
    remote: &str,
    now: Instant,
    rec: Option<Box<Record>>,
    outcome: &Outcome,
) {
    let Some(mut rec) = rec else { return };
    let latency = now.saturating_duration_since(rec.started);
    match outcome {
        Ok(_) => rec.span.record("outcome", "ok"),
        Err(e) => rec.span.record("outcome", tracing::field::display(e)),
    };
    if hooks.is_empty() {
        return;
    }
    let rec = &mut *rec;
    let _in_span = rec.span.enter();
    hooks.each("post_call hook", |h| {
        h.post_call(&mut FinishedCall {
            remote,
            service_path: &rec.service_path,
            service_method: &rec.service_method,
            result: outcome.as_ref().map(Option::as_ref),
            latency,
            request_size: rec.request_size,
            extensions: &mut rec.extensions,
        })
    });
}

/// A caller's reply slot and the call's record.
struct Entry<S> {
    slot: S,
    rec: Option<Box<Record>>,
}

/// A client connection with its calls' reply slots, for any runtime.
///
/// Drive contract (the [`ClientConnection`] one, with reply slots):
///
/// ```text
/// inputs    handle_input(now, &[u8])  handle_eof(now)  handle_timeout(now)  abort(now, reason)
/// commands  call(now, spec, slot)  cancel(now, seq)  sweep(now)  close(now, mode)  finish()
/// outputs   poll_transmit(&mut buf)  poll_completion() -> (slot, Outcome)  poll_timeout()
/// getters   wants_read()  is_blocked()  is_closing()  is_closed()  lost()  stats()  ...
/// ```
///
/// After any input or command, drain `poll_transmit` and `poll_completion` (completing
/// each slot), then read `poll_timeout` once and sleep until then or until IO or a
/// command arrives. Events of the machine are handled inside the session: pushes go to
/// the [`PushSink`] (the newest is dropped and counted when it is full), calls waiting
/// for room start when there is room, and a lost connection completes every call.
///
/// Guarantees: every slot given to [`call`](Self::call) comes back exactly once from
/// `poll_completion`, except those the runtime took back with [`cancel`](Self::cancel)
/// or [`withdraw`](Self::withdraw) and those found abandoned by a sweep (nobody waits
/// on them). A call waiting for room fails at its deadline like one in flight.
pub struct ClientSession<S, P> {
    conn: ClientConnection,
    slots: FxHashMap<u64, Entry<S>>,
    deferred: VecDeque<(CallSpec, Entry<S>)>,
    done: VecDeque<(Entry<S>, Outcome)>,
    hooks: super::ClientHookSet,
    remote: Arc<str>,
    /// The `conn_closed` hooks have run.
    closed_reported: bool,
    pushes: P,
    dropped_pushes: u64,
    max_deferred: usize,
    sweep_interval: Duration,
    sweep_at: Instant,
    lost: Option<LostReason>,
    now: Instant,
}

impl<S: ReplySlot, P: PushSink> ClientSession<S, P> {
    /// A session over a new connection machine; `now` is when the connection opened.
    pub fn new(config: SessionConfig, pushes: P, now: Instant) -> Self {
        let hooks = config.connection.hooks.clone();
        hooks.each("client conn_opened hook", |h| h.conn_opened(&config.remote));
        Self {
            conn: ClientConnection::new(config.connection, now),
            slots: FxHashMap::default(),
            deferred: VecDeque::new(),
            done: VecDeque::new(),
            hooks,
            remote: config.remote,
            closed_reported: false,
            pushes,
            dropped_pushes: 0,
            max_deferred: config.max_deferred.max(1),
            sweep_interval: config.sweep_interval,
            sweep_at: now + config.sweep_interval,
            lost: None,
            now,
        }
    }

    /// Start a call; its outcome comes back with `slot` from
    /// [`poll_completion`](Self::poll_completion). While the connection is blocked the
    /// call waits for room (up to `max_deferred` calls, then it is refused).
    pub fn call(&mut self, now: Instant, mut spec: CallSpec, slot: S) {
        match prepare_call(&self.hooks, &self.remote, now, &mut spec) {
            Ok(ticket) => self.call_prepared(now, spec, slot, ticket),
            Err(e) => {
                self.now = now;
                self.done.push_back((Entry { slot, rec: None }, Err(e)));
            }
        }
    }

    /// [`call`](Self::call) for a call whose span and `pre_call` hooks ran where it was
    /// made ([`prepare_call`]).
    pub fn call_prepared(&mut self, now: Instant, spec: CallSpec, slot: S, ticket: CallTicket) {
        self.now = now;
        let entry = Entry { slot, rec: ticket.0 };
        if self.deferred.is_empty() {
            self.start(spec, entry);
        } else if self.deferred.len() < self.max_deferred {
            self.deferred.push_back((spec, entry));
        } else {
            self.done.push_back((entry, Err(Error::Rejected(CallRejected::Blocked))));
        }
        self.pump();
    }

    /// Give up on call `seq` (its caller went away): cancel it in the machine and hand
    /// its slot back (no completion follows).
    pub fn cancel(&mut self, now: Instant, seq: u64) -> Option<S> {
        self.now = now;
        let entry = self.slots.remove(&seq)?;
        self.conn.cancel(now, seq);
        self.pump();
        Some(self.abandoned(entry))
    }

    /// Give up on the first call waiting for room whose slot matches (it has no seq
    /// yet); its slot comes back and no completion follows.
    pub fn withdraw(&mut self, matches: impl Fn(&S) -> bool) -> Option<S> {
        let i = self.deferred.iter().position(|(_, e)| matches(&e.slot))?;
        let (_, entry) = self.deferred.remove(i)?;
        Some(self.abandoned(entry))
    }

    /// End a prepared call that never reached [`call_prepared`](Self::call_prepared)
    /// (its caller went away, or the connection ended first) with `outcome`.
    pub fn end_ticket(&self, ticket: CallTicket, outcome: &Outcome) {
        finish_record(&self.hooks, &self.remote, self.now, ticket.0, outcome);
    }

    /// A call its caller gave up on: the hooks see it cancelled.
    fn abandoned(&mut self, entry: Entry<S>) -> S {
        self.finished(entry.rec, &Err(Error::Call(CallError::Cancelled)));
        entry.slot
    }

    /// Run the `post_call` hooks and close the span of a call that ended with `outcome`.
    fn finished(&self, rec: Option<Box<Record>>, outcome: &Outcome) {
        finish_record(&self.hooks, &self.remote, self.now, rec, outcome);
    }

    /// Cancel every call whose caller went away (in flight or waiting for room).
    pub fn sweep(&mut self, now: Instant) {
        self.now = now;
        self.sweep_at = now + self.sweep_interval;
        let gone: Vec<u64> = self.slots.iter().filter(|(_, e)| e.slot.is_abandoned()).map(|(seq, _)| *seq).collect();
        for seq in gone {
            if let Some(entry) = self.slots.remove(&seq) {
                self.conn.cancel(now, seq);
                self.abandoned(entry);
            }
        }
        if self.deferred.iter().any(|(_, e)| e.slot.is_abandoned()) {
            let (gone, kept): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut self.deferred).into_iter().partition(|(_, e)| e.slot.is_abandoned());
            self.deferred = kept;
            for (_, entry) in gone {
                self.abandoned(entry);
            }
        }
        self.pump();
    }

    /// Close: `Graceful` lets calls in flight finish, `Immediate` fails them now. Calls
    /// still waiting for room fail with [`Error::Shutdown`] either way.
    pub fn close(&mut self, now: Instant, mode: CloseMode) {
        self.now = now;
        match mode {
            CloseMode::Graceful if !self.conn.is_closing() => self.conn.close(now, mode),
            CloseMode::Graceful => {}
            _ if !self.conn.is_closed() => self.conn.close(now, mode),
            _ => {}
        }
        for (_, entry) in self.deferred.drain(..) {
            self.done.push_back((entry, Err(Error::Shutdown)));
        }
        self.pump();
    }

    /// The runtime is done with the connection (its socket closed): every call still
    /// held completes with [`Error::Shutdown`].
    pub fn finish(&mut self) {
        for (_, entry) in self.deferred.drain(..) {
            self.done.push_back((entry, Err(Error::Shutdown)));
        }
        for (_, entry) in self.slots.drain() {
            self.done.push_back((entry, Err(Error::Shutdown)));
        }
        self.report_closed();
    }

    /// Run the `conn_closed` hooks, once.
    fn report_closed(&mut self) {
        if !std::mem::replace(&mut self.closed_reported, true) {
            self.hooks.each("client conn_closed hook", |h| h.conn_closed(&self.remote));
        }
    }

    /// Bytes received from the server.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        self.now = now;
        self.conn.handle_input(now, data);
        self.pump();
    }

    /// The server closed the stream.
    pub fn handle_eof(&mut self, now: Instant) {
        self.now = now;
        self.conn.handle_eof(now);
        self.pump();
    }

    /// The transport failed.
    pub fn abort(&mut self, now: Instant, reason: impl Into<String>) {
        self.now = now;
        self.conn.abort(now, reason);
        self.pump();
    }

    /// Time passed: deadlines of calls in flight and waiting for room, the sweep,
    /// heartbeat and idle timers. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.deferred.iter().any(|(s, _)| s.deadline.is_some_and(|d| d <= now)) {
            let (expired, kept): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut self.deferred).into_iter().partition(|(s, _)| s.deadline.is_some_and(|d| d <= now));
            self.deferred = kept;
            for (_, entry) in expired {
                self.done.push_back((entry, Err(Error::Call(CallError::TimedOut))));
            }
        }
        if now >= self.sweep_at {
            self.sweep(now);
        }
        self.conn.handle_timeout(now);
        self.pump();
    }

    /// Bytes to send, appended to `buf` (see [`ClientConnection::poll_transmit`]).
    #[must_use]
    pub fn poll_transmit<B: EncodeBuf>(&mut self, buf: &mut B) -> Option<usize> {
        let n = self.conn.poll_transmit(buf);
        // Handing out bytes completes oneway calls and can make room for waiting ones.
        self.pump();
        n
    }

    /// A finished call: its slot and how it ended.
    #[must_use]
    pub fn poll_completion(&mut self) -> Option<(S, Outcome)> {
        let (entry, outcome) = self.done.pop_front()?;
        self.finished(entry.rec, &outcome);
        Some((entry.slot, outcome))
    }

    /// The next instant the session wants [`handle_timeout`](Self::handle_timeout): the
    /// machine's timers, the deadlines of calls waiting for room, and the sweep while
    /// calls are in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.conn.is_closed() {
            return None;
        }
        let waiting = self.deferred.iter().filter_map(|(s, _)| s.deadline).min();
        let sweep = (!self.slots.is_empty() || !self.deferred.is_empty()).then_some(self.sweep_at);
        [self.conn.poll_timeout(), waiting, sweep].into_iter().flatten().min()
    }

    /// Whether to read from the socket.
    pub fn wants_read(&self) -> bool {
        self.conn.wants_read()
    }

    /// Whether calls are waiting for room (a runtime that queues calls itself may stop
    /// taking more until this clears).
    pub fn is_blocked(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Whether a close has started (or the connection ended).
    pub fn is_closing(&self) -> bool {
        self.conn.is_closing()
    }

    /// Whether the connection has ended (nothing more to send or receive).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Why the connection ended, once it has.
    pub fn lost(&self) -> Option<&LostReason> {
        self.lost.as_ref()
    }

    /// Calls in flight (sent or queued in the machine, with a seq).
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Calls waiting for room.
    pub fn waiting(&self) -> usize {
        self.deferred.len()
    }

    /// Pushes dropped because the sink was full.
    pub fn dropped_pushes(&self) -> u64 {
        self.dropped_pushes
    }

    /// The machine's counters.
    pub fn stats(&self) -> &ClientStats {
        self.conn.stats()
    }

    /// The push sink (to replace or close it).
    pub fn pushes_mut(&mut self) -> &mut P {
        &mut self.pushes
    }

    fn start(&mut self, spec: CallSpec, entry: Entry<S>) {
        if !self.conn.is_closing() && !self.conn.poll_ready() {
            self.deferred.push_back((spec, entry));
            return;
        }
        match self.conn.call(self.now, spec) {
            Ok(seq) => {
                entry.slot.started(seq);
                if let Some(rec) = &entry.rec {
                    rec.span.record("seq", seq);
                }
                self.slots.insert(seq, entry);
            }
            Err(CallRejected::Closing) | Err(CallRejected::Closed(_)) => {
                self.done.push_back((entry, Err(Error::Shutdown)));
            }
            Err(CallRejected::Hook(text)) => self.done.push_back((entry, Err(Error::Hook(text)))),
            Err(e) => self.done.push_back((entry, Err(Error::Rejected(e)))),
        }
    }

    /// Handle the machine's events until there are none.
    fn pump(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                ClientEvent::Response { seq, response } => self.complete(seq, Ok(Some(response))),
                ClientEvent::Sent { seq } => self.complete(seq, Ok(None)),
                ClientEvent::Failed { seq, error } => self.complete(seq, Err(Error::Call(error))),
                ClientEvent::Push(msg) => {
                    if !self.pushes.offer(msg) {
                        self.dropped_pushes += 1;
                    }
                }
                ClientEvent::Unblocked => {
                    while !self.deferred.is_empty() && (self.conn.is_closing() || self.conn.poll_ready()) {
                        if let Some((spec, entry)) = self.deferred.pop_front() {
                            self.start(spec, entry);
                        }
                    }
                }
                ClientEvent::ConnectionLost(reason) => {
                    for (_, entry) in self.slots.drain() {
                        self.done.push_back((entry, Err(Error::Call(CallError::ConnectionLost(reason.clone())))));
                    }
                    for (_, entry) in self.deferred.drain(..) {
                        self.done.push_back((entry, Err(Error::Call(CallError::ConnectionLost(reason.clone())))));
                    }
                    self.lost = Some(reason);
                    self.report_closed();
                }
            }
        }
    }

    fn complete(&mut self, seq: u64, outcome: Outcome) {
        if let Some(entry) = self.slots.remove(&seq) {
            self.done.push_back((entry, outcome));
        }
    }
}

impl<S, P> std::fmt::Debug for ClientSession<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("in_flight", &self.slots.len())
            .field("waiting", &self.deferred.len())
            .field("dropped_pushes", &self.dropped_pushes)
            .field("closed", &self.conn.is_closed())
            .finish_non_exhaustive()
    }
}
