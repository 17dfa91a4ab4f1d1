//! One connection: TLS handshake, hooks, and the driver thread that owns the
//! `ServerConnection` and the write half, dispatches requests (inline when ready, else
//! on the worker pool) and writes responses and pushes.

use super::{Phase, ServeCtx};
use crate::executor::block_on;
use crate::transport::{self, HandshakeError, Input, Link, Sock, tune_tcp};
use bytes::Bytes;
use rpcx_core::conn::{CloseMode, PushError, RequestId, ServerConfig, ServerConnection, ServerEvent};
use rpcx_core::service::{BoxFuture, Context, ContextParts, Dispatched, Peer, PushSink, Pusher};
use rpcx_core::wire::Metadata;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::task::{Poll, Waker};
use std::time::Instant;

/// What a connection's driver waits for.
pub(super) enum ConnMsg {
    Input(Input),
    Done(RequestId, Dispatched, Context),
    Push(PushCmd),
    Phase(Phase),
}

pub(super) struct PushCmd {
    service_path: Bytes,
    service_method: Bytes,
    metadata: Metadata,
    payload: Bytes,
}

/// Pushes queued for the driver and not yet taken, per connection.
const PUSH_CAPACITY: usize = 1024;

/// The connection's [`PushSink`]: queues pushes on the driver's channel.
struct ConnPusher {
    tx: Sender<ConnMsg>,
    queued: Arc<AtomicUsize>,
}

impl PushSink for ConnPusher {
    fn push(
        &self,
        service_path: Bytes,
        service_method: Bytes,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<(), PushError> {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= PUSH_CAPACITY {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(PushError::Blocked);
        }
        let cmd = PushCmd { service_path, service_method, metadata, payload };
        self.tx.send(ConnMsg::Push(cmd)).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            PushError::Closed
        })
    }
}

pub(super) fn serve_conn(mut sock: Sock, peer: Peer, ctx: &ServeCtx, tx: Sender<ConnMsg>, rx: Receiver<ConnMsg>) {
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
    let mut link = match Link::new(sock, tls) {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(peer = %peer.addr, error = %e, "socket setup failed");
            return;
        }
    };
    let input_tx = tx.clone();
    if let Err(e) = link.spawn_reader("rpcx-conn-reader", move |i| input_tx.send(ConnMsg::Input(i)).is_ok()) {
        tracing::warn!(error = %e, "could not start a reader thread");
        return;
    }
    ConnDriver::new(peer.clone(), ctx, tx).run(link, rx);
    for h in hooks {
        h.conn_closed(&peer);
    }
}

/// Requests or events handled per wake-up before writing.
const BATCH: usize = 256;
/// Upper bound on bytes taken from the machine before writing.
const WRITE_HIGH_WATER: usize = 256 << 10;

struct ConnDriver<'a> {
    conn: ServerConnection,
    peer: Arc<Peer>,
    ctx: &'a ServeCtx,
    tx: Sender<ConnMsg>,
    pusher: Pusher,
    push_queued: Arc<AtomicUsize>,
    /// Input received while the machine does not want to read, in order.
    held: VecDeque<Input>,
    write_buf: Vec<u8>,
}

impl<'a> ConnDriver<'a> {
    fn new(peer: Arc<Peer>, ctx: &'a ServeCtx, tx: Sender<ConnMsg>) -> Self {
        let opts = &ctx.opts;
        let mut cfg =
            ServerConfig { max_in_flight: opts.max_in_flight, read_timeout: opts.read_timeout, ..Default::default() };
        cfg.decoder.max_message_len = opts.max_message_len;
        cfg.decoder.max_decompressed_len = opts.max_message_len;
        cfg.encoder.max_message_len = opts.max_message_len;
        let push_queued = Arc::new(AtomicUsize::new(0));
        let pusher = Pusher::new(Arc::new(ConnPusher { tx: tx.clone(), queued: push_queued.clone() }));
        Self {
            conn: ServerConnection::new(cfg, Instant::now()),
            peer,
            ctx,
            tx,
            pusher,
            push_queued,
            held: VecDeque::new(),
            write_buf: Vec::with_capacity(64 << 10),
        }
    }

    fn run(mut self, mut link: Link, rx: Receiver<ConnMsg>) {
        // Bytes that arrived along with the TLS handshake.
        self.feed(&mut link, Input::Data(Vec::new(), 0));
        let shared = &self.ctx.shared;
        let write_timeout = self.ctx.opts.write_timeout;
        loop {
            // Events can produce output (a handler answered inline) and answering makes
            // room for held input, so drain until nothing changes.
            loop {
                while self.write_buf.len() < WRITE_HIGH_WATER && self.conn.poll_transmit(&mut self.write_buf).is_some()
                {
                }
                let mut any = false;
                while let Some(ev) = self.conn.poll_event() {
                    any = true;
                    self.on_event(ev);
                }
                while self.conn.wants_read() && !self.held.is_empty() {
                    let input = self.held.pop_front().expect("not empty");
                    self.feed(&mut link, input);
                    any = true;
                }
                if !any {
                    break;
                }
            }
            if !self.write_buf.is_empty() {
                let res = link.write_all(&self.write_buf, |_, stalled| {
                    if shared.phase() == Phase::Immediate {
                        Err("server closed".into())
                    } else if write_timeout.is_some_and(|t| stalled >= t) {
                        Err("write timeout".into())
                    } else {
                        Ok(())
                    }
                });
                self.write_buf.clear();
                if let Err(e) = res {
                    self.conn.abort(Instant::now(), e);
                }
                continue;
            }
            if self.conn.is_closed() {
                break;
            }
            let deadline = self.conn.poll_timeout();
            let first = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => rx.recv_timeout(left),
                    _ => Err(RecvTimeoutError::Timeout),
                },
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match first {
                Ok(msg) => {
                    self.on_msg(&mut link, msg);
                    for _ in 0..BATCH {
                        match rx.try_recv() {
                            Ok(msg) => self.on_msg(&mut link, msg),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Unreachable while the driver holds `tx`; kept for robustness.
                Err(RecvTimeoutError::Disconnected) => self.conn.abort(Instant::now(), "channel closed"),
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                self.conn.handle_timeout(now);
            }
        }
        link.close(true);
        drop(rx);
        link.join_reader();
    }

    fn on_msg(&mut self, link: &mut Link, msg: ConnMsg) {
        match msg {
            // Like a runtime that only reads while the machine wants to: input (the end
            // of the stream included) waits while the application is behind or a close
            // is under way, and the reader, out of buffers, stops reading.
            ConnMsg::Input(input) => {
                if self.held.is_empty() && self.conn.wants_read() {
                    self.feed(link, input);
                } else {
                    self.held.push_back(input);
                }
            }
            ConnMsg::Done(id, d, ctx) => self.on_done(id, d, ctx),
            ConnMsg::Push(p) => {
                self.push_queued.fetch_sub(1, Ordering::SeqCst);
                let now = Instant::now();
                if let Err(e) = self.conn.push(now, p.service_path, p.service_method, p.metadata, p.payload) {
                    tracing::debug!(peer = %self.peer.addr, error = %e, "server push dropped");
                }
            }
            ConnMsg::Phase(Phase::Running) => {}
            ConnMsg::Phase(Phase::Graceful) => self.conn.close(Instant::now(), CloseMode::Graceful),
            ConnMsg::Phase(Phase::Immediate) => self.conn.close(Instant::now(), CloseMode::Immediate),
        }
    }

    /// Give input to the machine (it ignores input once closing).
    fn feed(&mut self, link: &mut Link, input: Input) {
        let now = Instant::now();
        match input {
            Input::Data(buf, n) => {
                match link.decode(&buf[..n]) {
                    Ok(plain) => {
                        if !plain.is_empty() {
                            self.conn.handle_input(now, plain);
                        }
                    }
                    Err(e) => self.conn.abort(now, e),
                }
                if !buf.is_empty() {
                    link.recycle(buf);
                }
            }
            Input::Eof => self.conn.handle_eof(now),
            Input::Failed(e) => self.conn.abort(now, e),
        }
    }

    fn on_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::Request(req) => {
                let msg = req.message;
                let ctx = Context::new(ContextParts {
                    service_path: msg.service_path,
                    service_method: msg.service_method,
                    serialize_type: msg.header.serialize_type(),
                    oneway: msg.header.is_oneway(),
                    metadata: msg.metadata,
                    deadline: req.deadline,
                    received_at: Instant::now(),
                    peer: self.peer.clone(),
                    pusher: self.pusher.clone(),
                });
                let router = self.ctx.router.clone();
                let id = req.id;
                let payload = msg.payload;
                let mut fut: BoxFuture<(Dispatched, Context)> = Box::pin(async move {
                    let d = router.dispatch(ctx.clone(), payload).await;
                    (d, ctx)
                });
                if self.ctx.opts.inline_handlers {
                    // Fast path: a handler that finishes without waiting is answered
                    // here. One that waits moves to a worker, whose `block_on` polls it
                    // again with a waker that unparks that worker.
                    let mut cx = std::task::Context::from_waker(Waker::noop());
                    if let Poll::Ready((d, ctx)) = fut.as_mut().poll(&mut cx) {
                        if self.push_queued.load(Ordering::SeqCst) > 0 {
                            // The handler pushed: its pushes wait in the channel, so
                            // queue the answer behind them (Go writes pushes first).
                            let _ = self.tx.send(ConnMsg::Done(id, d, ctx));
                        } else {
                            self.on_done(id, d, ctx);
                        }
                        return;
                    }
                }
                let tx = self.tx.clone();
                self.ctx.pool.submit(Box::new(move || {
                    let (d, ctx) = block_on(fut);
                    let _ = tx.send(ConnMsg::Done(id, d, ctx));
                }));
            }
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

    fn on_done(&mut self, id: RequestId, d: Dispatched, ctx: Context) {
        let mut response = d.response;
        let oneway = ctx.is_oneway();
        let hooks = self.ctx.router.hooks();
        if !oneway {
            for h in hooks {
                h.pre_write_response(&ctx, &mut response);
            }
        }
        let _ = self.conn.respond(Instant::now(), id, response);
        if !oneway {
            for h in hooks {
                h.post_write_response(&ctx);
            }
        }
        if d.close {
            // Auth failure (or a hook asked): the response goes out, then the close.
            self.conn.close(Instant::now(), CloseMode::Flush);
        }
    }
}
