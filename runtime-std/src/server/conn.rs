//! One connection: TLS handshake, hooks, and the connection's state on the
//! [engine](crate::engine): requests are dispatched by whichever thread fed the input
//! (inline when the handler finishes without waiting, else on the worker pool), and
//! the thread that finishes a handler writes its response.

use super::{Phase, ServeCtx};
use crate::engine::{Engine, Intake, Machine, Refused};
use crate::executor::block_on;
use crate::transport::{self, HandshakeError, Sock, tune_tcp};
use bytes::Bytes;
use rpcx_core::conn::{CloseMode, PushError, ServerConnection};
use rpcx_core::service::{Dispatch, Push, PushSink, Pusher, Served, Session, Waiting};
use rpcx_core::wire::Metadata;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// A served connection, as the server's table holds it (to close it on shutdown).
pub(super) type ConnHandle = Arc<Engine<ServerState>>;

/// Move connection `h` to the server's `phase`.
pub(super) fn apply_phase(h: &ConnHandle, phase: Phase) {
    let mode = match phase {
        Phase::Running => return,
        Phase::Graceful => CloseMode::Graceful,
        Phase::Immediate => CloseMode::Immediate,
    };
    h.with(|m, _| {
        if !m.conn.is_closed() && (mode == CloseMode::Immediate || !m.conn.is_closing()) {
            m.conn.close(Instant::now(), mode);
        }
    });
}

/// Pushes queued and not yet taken into the machine, per connection.
const PUSH_CAPACITY: usize = 1024;

/// Pushes from handlers, queued outside the connection's lock (a handler may push
/// while its connection is locked: an inline handler runs under the lock). Whoever
/// holds the lock takes them into the machine, before any response it writes.
struct PushQueue {
    intake: Intake<Push>,
    engine: OnceLock<Weak<Engine<ServerState>>>,
}

/// The connection's [`PushSink`].
struct ConnPusher(Arc<PushQueue>);

impl PushSink for ConnPusher {
    fn push(
        &self,
        service_path: Bytes,
        service_method: Bytes,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<(), PushError> {
        let Some(engine) = self.0.engine.get().and_then(Weak::upgrade) else { return Err(PushError::Closed) };
        match self.0.intake.push(Push { service_path, service_method, metadata, payload }) {
            Ok(()) => {}
            Err(Refused::Full(_)) => return Err(PushError::Blocked),
            Err(Refused::Closed(_)) => return Err(PushError::Closed),
        }
        // If the connection is busy, its holder takes the push on its way out.
        engine.try_with(|m, _| m.take_pushes());
        Ok(())
    }
}

/// Serve one connection on this thread; `session` (admitted by the accept loop) runs
/// the `conn_closed` hooks when dropped.
pub(super) fn serve_conn(mut sock: Sock, session: Session, ctx: &Arc<ServeCtx>, id: u64) {
    let peer = session.peer().clone();
    let settings = ctx.dispatcher.settings();
    let mut tls = None;
    if let Sock::Tcp(s) = &sock {
        tune_tcp(s, settings.tcp_keepalive);
        if let Some(cfg) = &ctx.tls {
            let conn = match rustls::ServerConnection::new(cfg.clone()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "tls setup failed");
                    return;
                }
            };
            let mut conn = rustls::Connection::Server(conn);
            let deadline = Instant::now() + settings.tls_handshake_timeout;
            let running = || ctx.shared.phase() == Phase::Running;
            if let Err(e) = transport::handshake(&mut sock, &mut conn, deadline, running) {
                let e = match e {
                    HandshakeError::TimedOut => "timed out".to_owned(),
                    HandshakeError::Failed(e) => e,
                };
                tracing::debug!(peer = %peer.addr, error = %e, "tls handshake failed");
                return;
            }
            tls = Some(conn);
        }
    }
    if let Some(conn) = Conn::set_up(sock, tls, session, ctx, id) {
        conn.serve();
    }
}

/// Set up a connection without TLS (on the accept thread: see [`Conn::set_up`]).
pub(super) fn set_up_plain(sock: Sock, session: Session, ctx: &Arc<ServeCtx>, id: u64) -> Option<Conn> {
    if let Sock::Tcp(s) = &sock {
        tune_tcp(s, ctx.dispatcher.settings().tcp_keepalive);
    }
    Conn::set_up(sock, None, session, ctx, id)
}

/// A connection set up and attached to the server, ready to be served by a thread.
pub(super) struct Conn {
    engine: Arc<Engine<ServerState>>,
    pushes: Arc<PushQueue>,
}

impl Conn {
    /// Set up a connection's state and engine (`None`, closing it, if its socket cannot
    /// be set up). Plain TCP connections are set up on the accept thread, so their own
    /// thread only ever runs the read loop: its stack stays small.
    pub(super) fn set_up(
        sock: Sock,
        tls: Option<rustls::Connection>,
        session: Session,
        ctx: &Arc<ServeCtx>,
        id: u64,
    ) -> Option<Self> {
        let peer = session.peer().clone();
        let pushes = Arc::new(PushQueue { intake: Intake::new(PUSH_CAPACITY), engine: OnceLock::new() });
        let state = ServerState::new(session, ctx.clone(), pushes.clone());
        let ext = ServerExt { pool: ctx.pool.clone(), pushes: pushes.clone() };
        let engine = match Engine::new(sock, tls, state, ext, Some(ctx.housekeeper.timers().clone())) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(peer = %peer.addr, error = %e, "socket setup failed");
                return None;
            }
        };
        let _ = pushes.engine.set(Arc::downgrade(&engine));
        ctx.shared.attach(id, &engine);
        Some(Self { engine, pushes })
    }

    /// Serve it on this thread (its reader, and its housekeeper once it ends) until
    /// it is over.
    pub(super) fn serve(self) {
        self.engine.serve();
        self.pushes.intake.close();
        let mut g = self.engine.lock();
        let state = &mut g.m;
        state.session.end(&state.conn);
    }
}

/// What handler jobs need without taking the connection's lock.
pub(super) struct ServerExt {
    pool: Arc<crate::executor::Pool>,
    pushes: Arc<PushQueue>,
}

pub(super) struct ServerState {
    conn: ServerConnection,
    session: Session,
    ctx: Arc<ServeCtx>,
    pushes: Pushes,
    /// The session stopped to let its output be written before more events.
    backlog: bool,
    /// When a write first waited after the machine closed.
    stuck_since_close: Option<Instant>,
}

/// The connection's pushes as the session takes them: the intake, drained in order.
struct Pushes {
    pusher: Pusher,
    queue: Arc<PushQueue>,
    taken: VecDeque<Push>,
}

impl rpcx_core::service::PushQueue for Pushes {
    fn pusher(&mut self) -> Pusher {
        self.pusher.clone()
    }

    fn next_push(&mut self) -> Option<Push> {
        if self.taken.is_empty() {
            self.taken = self.queue.intake.take();
        }
        self.taken.pop_front()
    }
}

impl ServerState {
    fn new(session: Session, ctx: Arc<ServeCtx>, queue: Arc<PushQueue>) -> Self {
        let pusher = Pusher::new(Arc::new(ConnPusher(queue.clone())));
        Self {
            conn: session.connection(Instant::now()),
            session,
            ctx,
            pushes: Pushes { pusher, queue, taken: VecDeque::new() },
            backlog: false,
            stuck_since_close: None,
        }
    }

    /// Put queued pushes into the machine (ahead of any response written after).
    fn take_pushes(&mut self) {
        let now = Instant::now();
        while let Some(p) = rpcx_core::service::PushQueue::next_push(&mut self.pushes) {
            if let Err(e) = self.session.push(&mut self.conn, now, p) {
                tracing::debug!(peer = %self.session.peer().addr, error = %e, "server push dropped");
            }
        }
    }

    /// Write a handler's response (after the pushes it queued, as Go does).
    fn on_done(&mut self, served: Served) {
        self.session.finish(&mut self.conn, Instant::now(), served, &mut self.pushes);
    }
}

impl Machine for ServerState {
    type After = Vec<Waiting>;
    type Ext = ServerExt;

    fn input(&mut self, now: Instant, plain: &[u8]) {
        if !plain.is_empty() {
            self.conn.handle_input(now, plain);
        }
        // This thread serves only this connection: finish bounded work steps here
        // rather than leave them to the timers.
        while self.conn.has_work() {
            self.conn.work(now);
        }
    }

    fn eof(&mut self, now: Instant) {
        self.conn.handle_eof(now);
    }

    fn abort(&mut self, now: Instant, reason: String) {
        self.conn.abort(now, reason);
    }

    fn timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    fn transmit(&mut self, buf: &mut Vec<u8>) -> bool {
        self.conn.poll_transmit(buf).is_some()
    }

    fn events(&mut self, waiting: &mut Vec<Waiting>) {
        let mut spawn = |w| waiting.push(w);
        let d = self.session.dispatch(&mut self.conn, Instant::now(), &mut self.pushes, &mut spawn);
        if self.conn.is_closed() {
            if let (Dispatch::Idle, Some(reason)) = (d, self.conn.lost_reason()) {
                tracing::trace!(peer = %self.session.peer().addr, %reason, "rpcx connection ended");
            }
        }
        self.backlog = d == Dispatch::Backlog;
    }

    fn backlog(&self) -> bool {
        self.backlog
    }

    fn close_linger(&self) -> Duration {
        self.ctx.dispatcher.settings().close_linger()
    }

    fn wants_read(&self) -> bool {
        self.conn.wants_read()
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn stalled(&mut self, now: Instant, stalled: Duration) -> Result<(), String> {
        if self.ctx.shared.phase() == Phase::Immediate {
            Err("server closed".into())
        } else if self.conn.is_closed()
            && now.saturating_duration_since(*self.stuck_since_close.get_or_insert(now)) >= self.close_linger()
        {
            // The connection is over: its last bytes get the linger, as on every runtime.
            Err("peer not reading after close".into())
        } else if self.ctx.dispatcher.settings().write_timeout.is_some_and(|t| stalled >= t) {
            Err("write timeout".into())
        } else {
            Ok(())
        }
    }

    fn after(engine: &Arc<Engine<Self>>, waiting: Vec<Waiting>) {
        let ext = engine.ext();
        for w in waiting {
            let engine = engine.clone();
            ext.pool.submit(Box::new(move || {
                let served = block_on(w);
                engine.with(|m, _| m.on_done(served));
            }));
        }
    }

    fn take_pending(&mut self) {
        self.take_pushes();
    }

    fn has_pending(ext: &ServerExt) -> bool {
        ext.pushes.intake.is_pending()
    }
}
