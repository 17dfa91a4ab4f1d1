//! Serving a connection's requests: the part of every runtime's server that is not IO.
//!
//! (The drive contract is on [`Session`].)

use super::hooks::{ConnTap, Timer};
use super::settings::ServerSettings;
use super::{Context, Dispatched, Peer, PushSink, Pusher, Router, Serving, Started};
use crate::conn::{LostReason, PushError, RequestId, ServerConfig, ServerConnection, ServerEvent, ServerStats};
use crate::wire::Metadata;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

/// Events a server handles before the output they produced is written: responses to a
/// large pipelined batch start leaving while the rest of it is handled, instead of all
/// at the end. Measured on rpcx-async (`cargo run --release -p rpcx-smol --example load
/// -- --secs 2 --levels 100 --conns 1`): ~470k calls/s answering a whole 64 KiB read at
/// once, 750k-900k with this cap, as client and server drivers then overlap.
pub const EVENTS_PER_WRITE: usize = 32;

/// A server push as a handler queued it, on its way to [`Session::push`]: the one push
/// type every runtime's queue carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// Service path of the push.
    pub service_path: Bytes,
    /// Method of the push.
    pub service_method: Bytes,
    /// Push metadata.
    pub metadata: Metadata,
    /// Push payload (sent with SerializeNone).
    pub payload: Bytes,
}

/// A connection's queue of pushes from handlers, as the runtime keeps it.
pub trait PushQueue {
    /// The [`Pusher`] for a request's [`Context`]; called only when a request is
    /// dispatched, so a queue can be created on first use (an idle connection then
    /// holds none).
    fn pusher(&mut self) -> Pusher;
    /// The next push queued by a handler, in order.
    fn next_push(&mut self) -> Option<Push>;
}

/// What [`Session::dispatch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Dispatch {
    /// No event was waiting.
    Idle,
    /// Events were handled and none is left now; take their output and call again (the
    /// output taken can let buffered requests through).
    Handled,
    /// [`EVENTS_PER_WRITE`] events were handled since the last `Idle`: write the output,
    /// then call again without waiting for IO.
    Backlog,
}

/// Counters of a whole server, summed over its connections (published by each
/// connection's [`Session`] whenever it has nothing left to dispatch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTotals {
    /// Connections accepted (the `conn_accepted` hooks passed).
    pub connections_accepted: u64,
    /// Connections refused by a `conn_accepted` hook.
    pub connections_refused: u64,
    /// Connections closed at once because `max_connections` were being served.
    pub connections_over_cap: u64,
    /// Connections being served now.
    pub connections_open: u64,
    /// Requests handed to handlers.
    pub requests: u64,
    /// Responses queued (oneway requests excluded).
    pub responses: u64,
    /// Heartbeats echoed.
    pub heartbeats: u64,
    /// Server pushes queued.
    pub pushes: u64,
    /// Server pushes the connection refused (closed, blocked, too large).
    pub pushes_dropped: u64,
    /// Frames decoded.
    pub frames_in: u64,
    /// Frames handed out for writing.
    pub frames_out: u64,
    /// Responses that could not be encoded and were replaced by an error response.
    pub encode_failures: u64,
    /// Connections closed because the peer broke the protocol.
    pub protocol_errors: u64,
    /// Bytes charged to the server's memory budget now (see
    /// [`MemoryBudget`](crate::conn::MemoryBudget)).
    pub memory_used: u64,
    /// The most bytes charged to the memory budget at once so far.
    pub memory_peak: u64,
}

#[derive(Default)]
struct Totals {
    accepted: AtomicU64,
    refused: AtomicU64,
    over_cap: AtomicU64,
    open: AtomicU64,
    requests: AtomicU64,
    responses: AtomicU64,
    heartbeats: AtomicU64,
    pushes: AtomicU64,
    pushes_dropped: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    encode_failures: AtomicU64,
    protocol_errors: AtomicU64,
}

/// What a server shares between its connections: the router, the settings (and the one
/// copy of the machines' [`ServerConfig`]), and the counters. Runtimes keep it in an
/// `Arc`.
pub struct Dispatcher {
    router: Router,
    settings: ServerSettings,
    config: Arc<ServerConfig>,
    inline: bool,
    totals: Totals,
    timer: Option<Arc<dyn Timer>>,
    shut_down: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("router", &self.router).field("settings", &self.settings).finish()
    }
}

impl Dispatcher {
    /// A dispatcher for `router` whose connections run on `settings`.
    pub fn new(router: Router, settings: ServerSettings) -> Self {
        let mut config = settings.connection.clone();
        // One budget per server, even when servers are built from one settings value.
        let b = &config.budget;
        config.budget = Arc::new(crate::conn::MemoryBudget::new(b.limit(), b.max_inflations(), b.grace()));
        if config.decoder.known_names.is_empty() {
            config.decoder.known_names = served_names(&router);
        }
        // Off whatever decoder settings were given (`DecoderConfig::default()` has it
        // on): the served names are known, any other is answered with an error and not
        // worth a slot of the process-wide table.
        config.decoder.learn_names = false;
        let config = Arc::new(config);
        Self {
            router,
            settings,
            config,
            inline: true,
            totals: Totals::default(),
            timer: None,
            shut_down: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The runtime's timer, for hooks that delay a request ([`Admit::At`](super::Admit))
    /// and handlers that sleep ([`Context::sleep_until`]).
    pub fn timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = Some(timer);
        self
    }

    /// Run the `register` hooks for every service (a server does it once, when it
    /// starts, before any registry registers it). The first refusal is the error.
    pub fn register_services(&self) -> Result<(), String> {
        for (name, metadata) in self.router.services() {
            for h in self.router.hooks() {
                crate::guard::catch("register hook", || h.register(name, metadata))
                    .unwrap_or_else(|| Err(format!("the register hook panicked for {name}")))?;
            }
        }
        Ok(())
    }

    /// The server is shutting down: run the [`Router::on_shutdown`] callbacks (once,
    /// however often this is called).
    pub fn shutting_down(&self) {
        if self.shut_down.swap(true, Relaxed) {
            return;
        }
        for f in self.router.shutdown_callbacks() {
            crate::guard::catch("on_shutdown callback", || f());
        }
    }

    /// Whether to poll each handler once inline, with a no-op waker, and answer it at
    /// once if it is ready (default `true`). Off, every handler comes out as a
    /// [`Waiting`] (for handlers that block their thread).
    pub fn inline_handlers(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The settings.
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// A machine for a connection accepted at `now`, on the shared settings.
    pub fn connection(&self, now: Instant) -> ServerConnection {
        ServerConnection::with_shared_config(self.config.clone(), now)
    }

    /// Start serving a connection from `peer`: returns `None` (close it at once then)
    /// when [`max_connections`](ServerSettings::max_connections) connections are being
    /// served already, or when a `conn_accepted` hook refuses it. The session's drop
    /// runs the `conn_closed` hooks.
    ///
    /// The cap policy is the same on every runtime: the server keeps accepting, and a
    /// connection past the cap is closed as soon as it is accepted (the client sees
    /// its connection closed, promptly, instead of waiting in the kernel's backlog),
    /// counted in [`ServerTotals::connections_over_cap`]. Idle connections are not
    /// reaped to make room: use the read (idle) timeout for that.
    pub fn session(self: &Arc<Self>, peer: Arc<Peer>, now: Instant) -> Option<Session> {
        let cap = self.settings.max_connections.max(1) as u64;
        if self.totals.open.fetch_add(1, Relaxed) >= cap {
            self.totals.open.fetch_sub(1, Relaxed);
            self.totals.over_cap.fetch_add(1, Relaxed);
            return None;
        }
        for h in self.router.hooks() {
            let verdict = crate::guard::catch("conn_accepted hook", || h.conn_accepted(&peer, now))
                .unwrap_or_else(|| Err("the conn_accepted hook panicked".to_owned()));
            if let Err(text) = verdict {
                tracing::debug!(peer = %peer.addr, reason = %text, "connection refused by a hook");
                self.totals.open.fetch_sub(1, Relaxed);
                self.totals.refused.fetch_add(1, Relaxed);
                return None;
            }
        }
        self.totals.accepted.fetch_add(1, Relaxed);
        let span = tracing::debug_span!(target: "rpcx", "rpcx.conn", peer = %peer.addr);
        span.in_scope(|| tracing::debug!(target: "rpcx", "connection accepted"));
        Some(Session {
            d: self.clone(),
            peer,
            published: ServerStats::default(),
            round: 0,
            ended: false,
            span,
            pusher: None,
            spare: None,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> ServerTotals {
        let t = &self.totals;
        ServerTotals {
            connections_accepted: t.accepted.load(Relaxed),
            connections_refused: t.refused.load(Relaxed),
            connections_over_cap: t.over_cap.load(Relaxed),
            connections_open: t.open.load(Relaxed),
            requests: t.requests.load(Relaxed),
            responses: t.responses.load(Relaxed),
            heartbeats: t.heartbeats.load(Relaxed),
            pushes: t.pushes.load(Relaxed),
            pushes_dropped: t.pushes_dropped.load(Relaxed),
            frames_in: t.frames_in.load(Relaxed),
            frames_out: t.frames_out.load(Relaxed),
            encode_failures: t.encode_failures.load(Relaxed),
            protocol_errors: t.protocol_errors.load(Relaxed),
            memory_used: self.config.budget.used() as u64,
            memory_peak: self.config.budget.peak() as u64,
        }
    }
}

/// Most distinct names a process interns for [`served_names`]; past it, servers decode
/// names as slices of the frame (the same bytes, four atomic operations more).
const MAX_INTERNED_NAMES: usize = 4096;

/// The names a router serves (service paths and methods) as a decoder's known names:
/// they decode as static bytes, without reference counts. The names are interned once
/// per process (a server started again with the same services adds nothing).
fn served_names(router: &Router) -> crate::wire::KnownNames {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static INTERNED: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = INTERNED.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    let mut names = Vec::new();
    for s in router.services.values() {
        for name in std::iter::once(&s.name).chain(s.methods.keys()) {
            let interned = match set.get(name.as_str()) {
                Some(n) => *n,
                None if set.len() < MAX_INTERNED_NAMES => {
                    let n: &'static str = Box::leak(name.clone().into_boxed_str());
                    set.insert(n);
                    n
                }
                None => continue,
            };
            names.push(interned);
        }
    }
    crate::wire::KnownNames::new(names)
}

/// A handler that did not finish inline: poll it to completion anywhere (a task, a
/// worker thread), then give its [`Served`] to [`Session::finish`].
#[must_use = "a waiting request is answered only once it is run and finished"]
pub struct Waiting {
    id: RequestId,
    fut: Serving,
}

impl Waiting {
    /// The request it serves.
    pub fn id(&self) -> RequestId {
        self.id
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Future for Waiting {
    type Output = Served;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Served> {
        let this = self.get_mut();
        this.fut.as_mut().poll(cx).map(|outcome| Served { id: this.id, outcome })
    }
}

/// A finished request, for [`Session::finish`].
#[derive(Debug)]
pub struct Served {
    id: RequestId,
    outcome: (Dispatched, Context),
}

impl Served {
    /// The request it answers.
    pub fn id(&self) -> RequestId {
        self.id
    }
}

/// One connection's side of a [`Dispatcher`]: runs its requests through the router.
///
/// A server keeps one [`Dispatcher`] (router, settings, counters) and, per connection,
/// a [`ServerConnection`] from [`Dispatcher::connection`] and a [`Session`] from
/// [`Dispatcher::session`]. The drive contract, on top of the machine's:
///
/// ```text
/// after any input or command, until it returns Idle:
///     take output (poll_transmit), then session.dispatch(&mut conn, now, &mut pushes, &mut spawn)
///         Idle      nothing was waiting; counters published
///         Handled   events were handled: take their output, then call again
///         Backlog   EVENTS_PER_WRITE events handled: write the output, then call again
///                   without waiting for IO
/// a handler the dispatcher could not finish inline comes out as a `Waiting` (a future):
///     run it anywhere; its `Served` goes back with session.finish(&mut conn, now, served, &mut pushes)
/// a push arriving from a handler's context: session.push(&mut conn, now, push)
/// the connection is over: session.end(&conn) (last counters, conn_closed hooks; drop does the hooks too)
/// ```
pub struct Session {
    d: Arc<Dispatcher>,
    peer: Arc<Peer>,
    /// The machine's counters as last added to the totals.
    published: ServerStats,
    /// Events handled since the last `Idle`.
    round: usize,
    /// [`end`](Session::end) has run.
    ended: bool,
    /// The connection's span; requests' spans are its children.
    span: tracing::Span,
    /// The pusher handed to requests, wrapped for the push hooks (made on first use).
    pusher: Option<Pusher>,
    /// The last request's context, emptied, for the next one ([`Context::into_spare`]).
    spare: Option<Context>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl Session {
    /// The connection's peer.
    pub fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    /// The server's dispatcher.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.d
    }

    /// The connection machine for this session, made at `now` on the server's shared
    /// settings, with the hooks' taps on its bytes.
    pub fn connection(&self, now: Instant) -> ServerConnection {
        let mut conn = self.d.connection(now);
        let taps: Vec<Box<dyn ConnTap>> = self
            .d
            .router
            .hooks()
            .iter()
            .filter_map(|h| crate::guard::catch("tap hook", || h.tap(&self.peer)).flatten())
            .collect();
        if !taps.is_empty() {
            conn.set_tap(Box::new(Taps(taps)));
        }
        conn
    }

    /// The pusher for a request: the queue's, behind the push hooks when there are
    /// hooks.
    fn pusher(&mut self, pushes: &mut impl PushQueue) -> Pusher {
        if self.d.router.hooks().is_empty() {
            return pushes.pusher();
        }
        self.pusher
            .get_or_insert_with(|| {
                Pusher::new(Arc::new(HookedPushes {
                    inner: pushes.pusher(),
                    router: self.d.router.clone(),
                    peer: self.peer.clone(),
                }))
            })
            .clone()
    }

    /// Handle the machine's events: each request runs through the router (polled once
    /// inline with a no-op waker; a ready one is answered at once, after the pushes it
    /// queued; one that waits is handed to `spawn`), heartbeats reach the hooks, the
    /// end of the connection is counted. Stops after [`EVENTS_PER_WRITE`] events
    /// since the last [`Dispatch::Idle`].
    pub fn dispatch(
        &mut self,
        conn: &mut ServerConnection,
        now: Instant,
        pushes: &mut impl PushQueue,
        spawn: &mut impl FnMut(Waiting),
    ) -> Dispatch {
        let mut handled = false;
        loop {
            if self.round >= EVENTS_PER_WRITE {
                self.round = 0;
                self.publish(conn);
                return Dispatch::Backlog;
            }
            let Some(ev) = conn.poll_event() else {
                if handled {
                    return Dispatch::Handled;
                }
                self.round = 0;
                self.publish(conn);
                return Dispatch::Idle;
            };
            handled = true;
            self.round += 1;
            match ev {
                ServerEvent::Request(req) => {
                    let id = req.id;
                    let pusher = self.pusher(pushes);
                    let (router, peer, timer) = (&self.d.router, &self.peer, self.d.timer.as_ref());
                    if !self.d.inline {
                        let fut = self.span.in_scope(|| router.serve(now, req, peer.clone(), pusher, timer));
                        spawn(Waiting { id, fut });
                        continue;
                    }
                    // Fast path: a request that finishes without waiting is answered
                    // right here (no spawn, no hop, no boxed future of its own; its
                    // context reuses the last one's). One that waits is polled again
                    // where it is spawned, registering that waker.
                    let spare = &mut self.spare;
                    let started = self.span.in_scope(|| router.start(now, req, peer.clone(), pusher, timer, spare));
                    match started {
                        Started::Ready(outcome) => self.answer(conn, now, Served { id, outcome }, pushes),
                        Started::Waiting(fut) => spawn(Waiting { id, fut }),
                    }
                }
                ServerEvent::Heartbeat { .. } => {
                    for h in self.d.router.hooks() {
                        crate::guard::catch("heartbeat hook", || h.heartbeat(&self.peer));
                    }
                }
                ServerEvent::ConnectionLost(LostReason::Protocol(_)) => {
                    self.d.totals.protocol_errors.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
    }

    /// Answer a request that came out as a [`Waiting`]: the pushes its handler queued
    /// go out first (as Go's, written from the handler), then the response (through
    /// [`Router::answer`]). Call [`dispatch`](Self::dispatch) after, as after any
    /// command.
    pub fn finish(&mut self, conn: &mut ServerConnection, now: Instant, served: Served, pushes: &mut impl PushQueue) {
        self.answer(conn, now, served, pushes);
    }

    /// Queue a handler's push on the machine (a refused one is counted in
    /// [`ServerTotals::pushes_dropped`]).
    pub fn push(&mut self, conn: &mut ServerConnection, now: Instant, p: Push) -> Result<u64, PushError> {
        let hooks = self.d.router.hooks();
        let copy = (!hooks.is_empty()).then(|| p.clone());
        let r = conn.push(now, p.service_path, p.service_method, p.metadata, p.payload);
        if r.is_err() {
            self.d.totals.pushes_dropped.fetch_add(1, Relaxed);
        } else if let Some(p) = copy {
            for h in hooks {
                crate::guard::catch("post_write_request hook", || h.post_write_request(&self.peer, &p));
            }
        }
        r
    }

    fn answer(&mut self, conn: &mut ServerConnection, now: Instant, served: Served, pushes: &mut impl PushQueue) {
        while let Some(p) = pushes.next_push() {
            let _ = self.push(conn, now, p);
        }
        let ctx = self.d.router.answer(conn, now, served.id, served.outcome);
        self.spare = ctx.into_spare();
    }

    /// The connection is over: add its last counts to the totals and run the
    /// `conn_closed` hooks (once; dropping the session does it if this was not called).
    pub fn end(&mut self, conn: &ServerConnection) {
        self.publish(conn);
        self.close();
    }

    fn close(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.d.totals.open.fetch_sub(1, Relaxed);
        self.span.in_scope(|| tracing::debug!(target: "rpcx", "connection closed"));
        for h in self.d.router.hooks() {
            crate::guard::catch("conn_closed hook", || h.conn_closed(&self.peer));
        }
    }

    /// Add what the machine counted since the last call to the server's totals.
    fn publish(&mut self, conn: &ServerConnection) {
        let s = conn.stats();
        if *s == self.published {
            return;
        }
        let t = &self.d.totals;
        let p = &self.published;
        t.requests.fetch_add(s.requests.saturating_sub(p.requests), Relaxed);
        t.responses.fetch_add(s.responses.saturating_sub(p.responses), Relaxed);
        t.heartbeats.fetch_add(s.heartbeats.saturating_sub(p.heartbeats), Relaxed);
        t.pushes.fetch_add(s.pushes.saturating_sub(p.pushes), Relaxed);
        t.frames_in.fetch_add(s.frames_in.saturating_sub(p.frames_in), Relaxed);
        t.frames_out.fetch_add(s.frames_out.saturating_sub(p.frames_out), Relaxed);
        t.encode_failures.fetch_add(s.encode_failures.saturating_sub(p.encode_failures), Relaxed);
        self.published = s.clone();
    }
}

/// Every hook's tap, fed in turn.
struct Taps(Vec<Box<dyn ConnTap>>);

impl ConnTap for Taps {
    fn read(&mut self, bytes: &[u8]) {
        for t in &mut self.0 {
            crate::guard::catch("tap", || t.read(bytes));
        }
    }
    fn written(&mut self, bytes: &[u8]) {
        for t in &mut self.0 {
            crate::guard::catch("tap", || t.written(bytes));
        }
    }
}

/// A connection's pusher behind the `pre_write_request` hooks (Go runs them in
/// `SendMessage`, so the handler sees a refusal).
struct HookedPushes {
    inner: Pusher,
    router: Router,
    peer: Arc<Peer>,
}

impl PushSink for HookedPushes {
    fn push(
        &self,
        service_path: Bytes,
        service_method: Bytes,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<(), PushError> {
        let mut p = Push { service_path, service_method, metadata, payload };
        for h in self.router.hooks() {
            crate::guard::catch("pre_write_request hook", || h.pre_write_request(&self.peer, &mut p))
                .unwrap_or_else(|| Err("the pre_write_request hook panicked".to_owned()))
                .map_err(PushError::Refused)?;
        }
        self.inner.push(p.service_path, p.service_method, p.metadata, p.payload)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}
