//! One connection: TLS handshake, hooks, and the connection's state on the
//! [engine](crate::engine): requests are dispatched by whichever thread fed the input
//! (inline when the handler finishes without waiting, else on the worker pool), and
//! the thread that finishes a handler writes its response.

use super::{Phase, ServeCtx};
use crate::engine::{Engine, Intake, Machine, Refused};
use crate::executor::block_on;
use crate::transport::{self, HandshakeError, Sock, tune_tcp};
use bytes::Bytes;
use rpcx_core::conn::{CloseMode, PushError, RequestId, ServerConfig, ServerConnection, ServerEvent};
use rpcx_core::service::{Context, Dispatched, Peer, PushSink, Pusher, Serving};
use rpcx_core::wire::Metadata;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Poll, Waker};
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

struct PushCmd {
    service_path: Bytes,
    service_method: Bytes,
    metadata: Metadata,
    payload: Bytes,
}

/// Pushes queued and not yet taken into the machine, per connection.
const PUSH_CAPACITY: usize = 1024;

/// Pushes from handlers, queued outside the connection's lock (a handler may push
/// while its connection is locked: an inline handler runs under the lock). Whoever
/// holds the lock takes them into the machine, before any response it writes.
struct PushQueue {
    intake: Intake<PushCmd>,
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
        match self.0.intake.push(PushCmd { service_path, service_method, metadata, payload }) {
            Ok(()) => {}
            Err(Refused::Full(_)) => return Err(PushError::Blocked),
            Err(Refused::Closed(_)) => return Err(PushError::Closed),
        }
        // If the connection is busy, its holder takes the push on its way out.
        engine.try_with(|m, _| m.take_pushes());
        Ok(())
    }
}

pub(super) fn serve_conn(mut sock: Sock, peer: Peer, ctx: &Arc<ServeCtx>, id: u64) {
    let peer = Arc::new(peer);
    let hooks = ctx.router.hooks();
    if !hooks.iter().all(|h| h.conn_accepted(&peer)) {
        return;
    }
    let mut tls = None;
    if let Sock::Tcp(s) = &sock {
        tune_tcp(s, ctx.opts.tcp_keepalive);
        if let Some(cfg) = &ctx.opts.tls {
            let conn = match rustls::ServerConnection::new(cfg.clone()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "tls setup failed");
                    return;
                }
            };
            let mut conn = rustls::Connection::Server(conn);
            let deadline = Instant::now() + ctx.opts.tls_handshake_timeout;
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
    let pushes = Arc::new(PushQueue { intake: Intake::new(PUSH_CAPACITY), engine: OnceLock::new() });
    let state = ServerState::new(peer.clone(), ctx.clone(), pushes.clone());
    let ext = ServerExt { pool: ctx.pool.clone(), pushes: pushes.clone() };
    let engine = match Engine::new(sock, tls, state, ext) {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(peer = %peer.addr, error = %e, "socket setup failed");
            return;
        }
    };
    let _ = pushes.engine.set(Arc::downgrade(&engine));
    ctx.shared.attach(id, &engine);
    if let Err(e) = engine.spawn_reader("rpcx-conn-reader") {
        tracing::warn!(error = %e, "could not start a reader thread");
        engine.with(|m, _| m.abort(Instant::now(), "no reader thread".into()));
    }
    engine.run();
    pushes.intake.close();
    for h in hooks {
        h.conn_closed(&peer);
    }
}

/// What handler jobs need without taking the connection's lock.
pub(super) struct ServerExt {
    pool: Arc<crate::executor::Pool>,
    pushes: Arc<PushQueue>,
}

/// A handler that has to wait, for the worker pool.
pub(super) struct Waiting {
    id: RequestId,
    fut: Serving,
}

pub(super) struct ServerState {
    conn: ServerConnection,
    peer: Arc<Peer>,
    ctx: Arc<ServeCtx>,
    pusher: Pusher,
    pushes: Arc<PushQueue>,
}

impl ServerState {
    fn new(peer: Arc<Peer>, ctx: Arc<ServeCtx>, pushes: Arc<PushQueue>) -> Self {
        let opts = &ctx.opts;
        let mut cfg =
            ServerConfig { max_in_flight: opts.max_in_flight, read_timeout: opts.read_timeout, ..Default::default() };
        cfg.decoder.max_message_len = opts.max_message_len;
        cfg.decoder.max_decompressed_len = opts.max_message_len;
        cfg.encoder.max_message_len = opts.max_message_len;
        let pusher = Pusher::new(Arc::new(ConnPusher(pushes.clone())));
        Self { conn: ServerConnection::new(cfg, Instant::now()), peer, ctx, pusher, pushes }
    }

    /// Put queued pushes into the machine (ahead of any response written after).
    fn take_pushes(&mut self) {
        for p in self.pushes.intake.take() {
            let now = Instant::now();
            if let Err(e) = self.conn.push(now, p.service_path, p.service_method, p.metadata, p.payload) {
                tracing::debug!(peer = %self.peer.addr, error = %e, "server push dropped");
            }
        }
    }

    fn on_request(&mut self, req: rpcx_core::conn::Request, waiting: &mut Vec<Waiting>) {
        let id = req.id;
        let mut fut = self.ctx.router.serve(Instant::now(), req, self.peer.clone(), self.pusher.clone());
        if self.ctx.opts.inline_handlers {
            // Fast path: a handler that finishes without waiting is answered here. One
            // that waits moves to a worker, whose `block_on` polls it again with a waker
            // that unparks that worker.
            let mut cx = std::task::Context::from_waker(Waker::noop());
            if let Poll::Ready(served) = fut.as_mut().poll(&mut cx) {
                self.on_done(id, served);
                return;
            }
        }
        waiting.push(Waiting { id, fut });
    }

    /// Write a handler's response (after the pushes it queued, as Go does).
    fn on_done(&mut self, id: RequestId, served: (Dispatched, Context)) {
        self.take_pushes();
        self.ctx.router.answer(&mut self.conn, Instant::now(), id, served);
    }
}

impl Machine for ServerState {
    type After = Vec<Waiting>;
    type Ext = ServerExt;

    fn input(&mut self, now: Instant, plain: &[u8]) {
        if !plain.is_empty() {
            self.conn.handle_input(now, plain);
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
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                ServerEvent::Request(req) => self.on_request(req, waiting),
                ServerEvent::Heartbeat { .. } => {
                    for h in self.ctx.router.hooks() {
                        h.heartbeat(&self.peer);
                    }
                }
                ServerEvent::ConnectionLost(reason) => {
                    tracing::debug!(peer = %self.peer.addr, %reason, "rpcx connection ended");
                }
                _ => {}
            }
        }
    }

    fn wants_read(&self) -> bool {
        self.conn.wants_read()
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn stalled(&mut self, _now: Instant, stalled: Duration) -> Result<(), String> {
        if self.ctx.shared.phase() == Phase::Immediate {
            Err("server closed".into())
        } else if self.ctx.opts.write_timeout.is_some_and(|t| stalled >= t) {
            Err("write timeout".into())
        } else {
            Ok(())
        }
    }

    fn after(engine: &Arc<Engine<Self>>, waiting: Vec<Waiting>) {
        let ext = engine.ext();
        for Waiting { id, fut } in waiting {
            let engine = engine.clone();
            ext.pool.submit(Box::new(move || {
                let served = block_on(fut);
                engine.with(|m, _| m.on_done(id, served));
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
