//! The server: an accept loop, one task per connection driving a `ServerConnection`,
//! and a task for each request whose handler has to wait.

use crate::client::YIELD_AFTER;
use crate::queue;
use crate::runtime::{Runtime, Timer, sleep_until, timeout};
use crate::transport::{self, Stream, tune_tcp};
use async_lock::Semaphore;
use bytes::{Buf, Bytes, BytesMut};
use futures_lite::{Stream as _, future};
use rpcx_core::addr::ServerAddr;
use rpcx_core::conn::{CloseMode, PushError, RequestId, ServerConfig, ServerConnection, ServerEvent};
use rpcx_core::service::{Context, Dispatched, Peer, PushSink, Pusher, Router};
use rpcx_core::wire::Metadata;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Server options. Defaults: no read/write timeout (as Go), 32 MiB frames, 10 000
/// connections, 1024 requests in flight per connection, TCP keepalive 3 min (Go's
/// server default), 10 s TLS handshake timeout, tasks on the default
/// [`runtime`](Self::runtime).
#[derive(Clone, Debug)]
pub struct ServerOptions<R: Runtime> {
    /// Close a connection when no request arrives for this long (Go's `ReadTimeout`).
    pub read_timeout: Option<Duration>,
    /// Close a connection whose writes make no progress for this long.
    pub write_timeout: Option<Duration>,
    /// Largest frame accepted or sent (`totalLen`).
    pub max_message_len: usize,
    /// Most connections served at once; further accepts wait for a free slot.
    pub max_connections: usize,
    /// Most requests in flight per connection before reading pauses.
    pub max_in_flight: usize,
    /// TLS: serve TLS on TCP listeners when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS handshake timeout.
    pub tls_handshake_timeout: Duration,
    /// TCP keepalive period for accepted connections.
    pub tcp_keepalive: Option<Duration>,
    /// Runs the accept loop, the connection drivers and handlers that wait.
    pub runtime: R,
}

impl<R: Runtime> Default for ServerOptions<R> {
    fn default() -> Self {
        Self {
            read_timeout: None,
            write_timeout: None,
            max_message_len: rpcx_core::wire::DEFAULT_MAX_MESSAGE_LEN,
            max_connections: 10_000,
            max_in_flight: 1024,
            tls: None,
            tls_handshake_timeout: Duration::from_secs(10),
            tcp_keepalive: Some(Duration::from_secs(180)),
            runtime: R::default(),
        }
    }
}

/// An rpcx server: a [`Router`] plus options. Bind it to get a running
/// [`ServerHandle`].
///
/// ```no_run
/// # async fn f<R: rpcx_async::Runtime>() -> std::io::Result<()> {
/// use rpcx_async::Server;
/// use rpcx_core::service::{Context, Router, Service};
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// let router = Router::new().service(Service::new("Arith")
///     .method("Mul", |_c: Context, a: Args| async move { Ok::<_, String>(Reply { C: a.A * a.B }) }));
/// // `rpcx_tokio::Server` / `rpcx_smol::Server` name this type for their runtime.
/// let server = Server::<R>::new(router).bind("tcp@127.0.0.1:8972").await?;
/// println!("listening on {}", server.address());
/// server.wait().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Server<R: Runtime> {
    router: Router,
    opts: ServerOptions<R>,
}

impl<R: Runtime> Server<R> {
    /// A server for `router` with default options.
    pub fn new(router: Router) -> Self {
        Self { router, opts: ServerOptions::default() }
    }

    /// Replace all options.
    pub fn options(mut self, opts: ServerOptions<R>) -> Self {
        self.opts = opts;
        self
    }

    /// Set the read (idle) timeout.
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.opts.read_timeout = Some(d);
        self
    }

    /// Set the write timeout.
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.opts.write_timeout = Some(d);
        self
    }

    /// Set the largest frame.
    pub fn max_message_len(mut self, n: usize) -> Self {
        self.opts.max_message_len = n;
        self
    }

    /// Set the connection limit.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.opts.max_connections = n.max(1);
        self
    }

    /// Set the per-connection in-flight limit.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.opts.max_in_flight = n.max(1);
        self
    }

    /// Serve TLS on TCP listeners.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.opts.tls = Some(config);
        self
    }

    /// Run the server's tasks, timers and sockets on this runtime.
    pub fn runtime(mut self, runtime: R) -> Self {
        self.opts.runtime = runtime;
        self
    }

    /// Bind `addr` (`tcp@host:port`, `host:port`, `unix@/path`; port 0 picks one) and
    /// start serving in the background.
    pub async fn bind(self, addr: &str) -> io::Result<ServerHandle<R>> {
        let parsed: ServerAddr = addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let rt = self.opts.runtime.clone();
        let (listener, local_addr, address) = match &parsed {
            ServerAddr::Tcp(a) => {
                let l = bind_tcp(&rt, a).await?;
                let local = R::tcp_local_addr(&l)?;
                (Listener::Tcp(l), Some(local), format!("tcp@{local}"))
            }
            #[cfg(unix)]
            ServerAddr::Unix(p) => {
                let _ = std::fs::remove_file(p);
                let l = rt.bind_unix(std::path::Path::new(p))?;
                (Listener::Unix(l), None, parsed.to_string())
            }
            #[cfg(not(unix))]
            ServerAddr::Unix(_) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "unix sockets are not supported here"));
            }
            #[cfg(unix)]
            ServerAddr::Memory(name) => {
                // Bounded like a listen backlog: a dial beyond it is refused.
                let (tx, rx) = async_channel::bounded::<std::os::unix::net::UnixStream>(1024);
                let acceptor: rpcx_core::memu::Acceptor = Arc::new(move |s| tx.try_send(s).is_ok());
                let reg = rpcx_core::memu::register(name, acceptor)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, format!("memu@{name} is bound")))?;
                (Listener::Memory { rx, _registration: reg, name: parsed.to_string() }, None, parsed.to_string())
            }
            #[cfg(not(unix))]
            ServerAddr::Memory(_) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "in-process servers need unix socket pairs"));
            }
        };
        let (graceful, graceful_rx) = async_channel::bounded(1);
        let (immediate, immediate_rx) = async_channel::bounded(1);
        let (done_tx, done) = async_channel::bounded(1);
        let ctl = Ctl { graceful: graceful_rx, immediate: immediate_rx };
        // The accept loop holds sender clones so that dropping the handle does not read as
        // a shutdown; only `close()` on a sender ends the phase.
        let keep = (graceful.clone(), immediate.clone(), done_tx);
        rt.spawn(Box::pin(async move {
            accept_loop(listener, self, ctl).await;
            drop(keep);
        }));
        Ok(ServerHandle { address, local_addr, graceful, immediate, done, runtime: rt })
    }
}

async fn bind_tcp<R: Runtime>(rt: &R, addr: &str) -> io::Result<R::TcpListener> {
    let mut last = None;
    for a in transport::resolve(rt, addr).await? {
        match rt.bind_tcp(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// Shutdown signals, as channels that are closed (never sent on): closing wakes every
/// receiver at once, which makes them a broadcast of "this phase has begun".
#[derive(Clone)]
struct Ctl {
    graceful: async_channel::Receiver<()>,
    immediate: async_channel::Receiver<()>,
}

enum Listener<R: Runtime> {
    Tcp(R::TcpListener),
    #[cfg(unix)]
    Unix(R::UnixListener),
    /// In-process (`memu@name`): connections arrive on a channel; the registration frees
    /// the name when the listener is dropped.
    #[cfg(unix)]
    Memory {
        rx: async_channel::Receiver<std::os::unix::net::UnixStream>,
        _registration: rpcx_core::memu::Registration,
        name: String,
    },
}

/// A running server: its address, and graceful or immediate shutdown. Dropping it
/// leaves the server running in the background (use [`wait`](Self::wait) to serve
/// until shut down, or [`shutdown`](Self::shutdown) / [`close`](Self::close)).
#[derive(Debug)]
pub struct ServerHandle<R: Runtime> {
    address: String,
    local_addr: Option<SocketAddr>,
    graceful: async_channel::Sender<()>,
    immediate: async_channel::Sender<()>,
    done: async_channel::Receiver<()>,
    runtime: R,
}

impl<R: Runtime> ServerHandle<R> {
    /// The bound address in rpcx form (`tcp@127.0.0.1:40123`, `unix@/path`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The bound TCP address (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Graceful shutdown: stop accepting; every connection stops reading, in-flight
    /// requests finish and their responses are written; after `grace`, whatever is left
    /// is closed immediately. Returns when every connection has ended.
    pub async fn shutdown(self, grace: Duration) {
        self.graceful.close();
        let finished = timeout(&self.runtime, grace, false, async {
            let _ = self.done.recv().await;
            true
        })
        .await;
        if !finished {
            self.immediate.close();
            let _ = self.done.recv().await;
        }
    }

    /// Close the listener and every connection now.
    pub async fn close(self) {
        self.immediate.close();
        self.graceful.close();
        let _ = self.done.recv().await;
    }

    /// Wait until the server stops (it runs until shut down).
    pub async fn wait(self) {
        let _ = self.done.recv().await;
    }
}

async fn accept_loop<R: Runtime>(listener: Listener<R>, server: Server<R>, ctl: Ctl) {
    let limit = Arc::new(Semaphore::new(server.opts.max_connections));
    // A wait group: every connection task holds a sender; `recv` fails once all are gone.
    let (conns, all_done) = async_channel::bounded::<()>(1);
    loop {
        let Some(permit) = future::or(async { Some(limit.acquire_arc().await) }, stopped(&ctl)).await else {
            break;
        };
        let rt = &server.opts.runtime;
        let Some(accepted) = future::or(async { Some(accept(rt, &listener).await) }, stopped(&ctl)).await else {
            break;
        };
        match accepted {
            Ok((stream, peer)) => {
                let server = server.clone();
                let ctl = ctl.clone();
                let conns = conns.clone();
                let rt = server.opts.runtime.clone();
                rt.spawn(Box::pin(async move {
                    serve_conn(stream, peer, server, ctl).await;
                    drop((permit, conns));
                }));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                sleep_until(&server.opts.runtime, Instant::now() + Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    drop(conns);
    let _ = all_done.recv().await;
}

/// Resolves (to `None`) once shutdown has begun.
async fn stopped<T>(ctl: &Ctl) -> Option<T> {
    let _ = ctl.graceful.recv().await;
    None
}

async fn accept<R: Runtime>(rt: &R, l: &Listener<R>) -> io::Result<(Stream<R>, Peer)> {
    match l {
        Listener::Tcp(l) => {
            let (s, a) = R::accept_tcp(l).await?;
            Ok((Stream::Tcp(s), Peer::from(a)))
        }
        #[cfg(unix)]
        Listener::Unix(l) => {
            let (s, path) = R::accept_unix(l).await?;
            let name = path.map(|p| p.display().to_string()).unwrap_or_else(|| "unix".to_owned());
            Ok((Stream::Unix(s), Peer::named(name)))
        }
        #[cfg(unix)]
        Listener::Memory { rx, name, .. } => {
            let s = rx.recv().await.map_err(|_| io::Error::other("in-process listener closed"))?;
            Ok((Stream::Unix(rt.unix_from_std(s)?), Peer::named(name.clone())))
        }
    }
}

struct PushCmd {
    service_path: Bytes,
    service_method: Bytes,
    metadata: Metadata,
    payload: Bytes,
}

struct ConnPusher(queue::Sender<PushCmd>);

impl PushSink for ConnPusher {
    fn push(
        &self,
        service_path: Bytes,
        service_method: Bytes,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<(), PushError> {
        self.0.try_send(PushCmd { service_path, service_method, metadata, payload }).map_err(|e| match e {
            queue::TrySendError::Full(_) => PushError::Blocked,
            queue::TrySendError::Closed(_) => PushError::Closed,
        })
    }
}

async fn serve_conn<R: Runtime>(stream: Stream<R>, peer: Peer, server: Server<R>, ctl: Ctl) {
    let peer = Arc::new(peer);
    let hooks = server.router.hooks().to_vec();
    if !hooks.iter().all(|h| h.conn_accepted(&peer)) {
        return;
    }
    let stream = match (stream, &server.opts.tls) {
        (Stream::Tcp(s), tls) => {
            tune_tcp(R::tcp_socket(&s), server.opts.tcp_keepalive);
            match tls {
                None => Stream::Tcp(s),
                Some(cfg) => {
                    let acceptor = futures_rustls::TlsAcceptor::from(cfg.clone());
                    // Boxed: the handshake state is large, and only TLS connections need it.
                    let handshake = async { Some(Box::pin(acceptor.accept(s)).await) };
                    let rt = &server.opts.runtime;
                    match timeout(rt, server.opts.tls_handshake_timeout, None, handshake).await {
                        Some(Ok(tls)) => Stream::ServerTls(Box::new(tls)),
                        Some(Err(e)) => {
                            tracing::debug!(peer = %peer.addr, error = %e, "tls handshake failed");
                            return;
                        }
                        None => return,
                    }
                }
            }
        }
        (other, _) => other,
    };
    ConnDriver::new(peer.clone(), server).run(stream, ctl).await;
    for h in &hooks {
        h.conn_closed(&peer);
    }
}

type Done = (RequestId, (Dispatched, Context));

/// Events (mostly requests answered inline) handled before their output is written.
/// Without a cap, one 64 KiB read of ~100 requests is answered as one batch and the
/// client sees nothing until the last is handled; callers then move in lockstep and
/// the client and server drivers rarely run at the same time. On the load example
/// (`cargo run --release -p rpcx-smol --example load -- --secs 2 --levels 100 --conns 1`:
/// 100 callers, one connection, 2 threads on 2 cores) that was ~470k calls/s; with the
/// cap, 750k-900k when the machine is otherwise idle.
const EVENTS_PER_WRITE: usize = 32;

/// Upper bound on bytes taken from the machine before writing.
const WRITE_HIGH_WATER: usize = 256 << 10;

/// Pushes queued by handlers for one connection before `push` reports `Blocked`.
const PUSH_QUEUE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    Graceful,
    Immediate,
}

/// What woke a connection driver: one ready source per wake-up, in priority order.
enum Wake {
    Done(Done),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Read(io::Result<usize>),
    Push(PushCmd),
    Phase(Phase),
    Timer,
    /// Events are left in the machine: the drain stopped to write first.
    Backlog,
}

struct ConnDriver<R: Runtime> {
    conn: ServerConnection,
    peer: Arc<Peer>,
    router: Router,
    runtime: R,
    write_timeout: Option<Duration>,
    done_tx: async_channel::Sender<Done>,
    done_rx: Pin<Box<async_channel::Receiver<Done>>>,
    pusher: Pusher,
    push_rx: queue::Receiver<PushCmd>,
}

impl<R: Runtime> ConnDriver<R> {
    fn new(peer: Arc<Peer>, server: Server<R>) -> Self {
        let mut cfg = ServerConfig {
            max_in_flight: server.opts.max_in_flight,
            read_timeout: server.opts.read_timeout,
            ..Default::default()
        };
        cfg.decoder.max_message_len = server.opts.max_message_len;
        cfg.decoder.max_decompressed_len = server.opts.max_message_len;
        cfg.encoder.max_message_len = server.opts.max_message_len;
        let (done_tx, done_rx) = async_channel::unbounded();
        let (push_tx, push_rx) = queue::bounded(PUSH_QUEUE);
        Self {
            conn: ServerConnection::new(cfg, Instant::now()),
            peer,
            router: server.router,
            runtime: server.opts.runtime,
            write_timeout: server.opts.write_timeout,
            done_tx,
            done_rx: Box::pin(done_rx),
            pusher: Pusher::new(Arc::new(ConnPusher(push_tx))),
            push_rx,
        }
    }

    async fn run(mut self, stream: Stream<R>, ctl: Ctl) {
        let mut write_buf = BytesMut::new();
        let mut io = transport::Io::new(stream);
        let buffers_writes = io.buffers_writes();
        let mut unflushed = false;
        let mut write_stalled_since: Option<Instant> = None;
        let mut timer: Option<R::Timer> = None;
        let mut armed: Option<Instant> = None;
        let mut streak = 0u32;
        let mut phase = Phase::Running;
        let mut graceful = Box::pin(ctl.graceful);
        let mut immediate = Box::pin(ctl.immediate);
        // A shutdown that began before this connection was accepted applies at once.
        if immediate.is_closed() {
            self.apply_phase(&mut phase, Phase::Immediate);
        } else if graceful.is_closed() {
            self.apply_phase(&mut phase, Phase::Graceful);
        }
        loop {
            // Events can produce output (a handler answered inline), so drain until both
            // are empty, but handle at most EVENTS_PER_WRITE events before writing what
            // they produced; `backlog` then makes the next wake-up immediate.
            let mut budget = EVENTS_PER_WRITE;
            let mut backlog = false;
            loop {
                while write_buf.len() < WRITE_HIGH_WATER && self.conn.poll_transmit(&mut write_buf).is_some() {}
                if budget == 0 {
                    backlog = true;
                    break;
                }
                let mut any = false;
                while let Some(ev) = self.conn.poll_event() {
                    any = true;
                    self.on_event(ev);
                    budget -= 1;
                    if budget == 0 {
                        break;
                    }
                }
                if !any {
                    break;
                }
            }
            // An immediate close does not wait for a peer to take what is unsent (it may
            // never read again: shutdown must not hang on it).
            let abandon = phase == Phase::Immediate;
            if self.conn.is_closed() && ((write_buf.is_empty() && !unflushed) || abandon) && !backlog {
                break;
            }
            if write_buf.is_empty() {
                write_stalled_since = None;
            } else if write_stalled_since.is_none() {
                write_stalled_since = Some(Instant::now());
            }
            let write_deadline = self.write_timeout.zip(write_stalled_since).map(|(d, t)| t + d);
            let deadline = [self.conn.poll_timeout(), write_deadline].into_iter().flatten().min();
            // Re-arm only for an earlier deadline: each async-io timer change wakes the
            // reactor, and a timer left at a later instant only fires spuriously (which
            // `handle_timeout` tolerates) before being set again.
            if let Some(d) = deadline.filter(|&d| armed.is_none_or(|a| d < a)) {
                match timer.as_mut() {
                    Some(t) => t.reset(d),
                    None => timer = Some(self.runtime.timer(d)),
                }
                armed = Some(d);
            }
            let want_read = self.conn.wants_read();
            let mut waited = false;
            let (done_rx, push_rx) = (&mut self.done_rx, &mut self.push_rx);
            let timer = &mut timer;
            let wake = future::poll_fn(|cx| {
                if let Poll::Ready(Some(d)) = done_rx.as_mut().poll_next(cx) {
                    return Poll::Ready(Wake::Done(d));
                }
                if !write_buf.is_empty() {
                    if let Poll::Ready(r) = io.poll_write(cx, &write_buf) {
                        return Poll::Ready(Wake::Wrote(r));
                    }
                } else if unflushed {
                    if let Poll::Ready(r) = io.poll_flush(cx) {
                        return Poll::Ready(Wake::Flushed(r));
                    }
                }
                if want_read {
                    if let Poll::Ready(r) = io.poll_read(cx) {
                        return Poll::Ready(Wake::Read(r));
                    }
                }
                if let Poll::Ready(Some(p)) = push_rx.poll_recv(cx) {
                    return Poll::Ready(Wake::Push(p));
                }
                // The control channels are never sent on; `None` means the phase began.
                if phase < Phase::Immediate && immediate.as_mut().poll_next(cx).is_ready() {
                    return Poll::Ready(Wake::Phase(Phase::Immediate));
                }
                if phase < Phase::Graceful && graceful.as_mut().poll_next(cx).is_ready() {
                    return Poll::Ready(Wake::Phase(Phase::Graceful));
                }
                if let (Some(_), Some(t)) = (armed, timer.as_mut()) {
                    if t.poll_expired(cx).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                }
                if backlog {
                    return Poll::Ready(Wake::Backlog);
                }
                waited = true;
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Done((id, served)) => {
                    self.on_done(id, served);
                    while let Ok((id, served)) = self.done_rx.try_recv() {
                        self.on_done(id, served);
                    }
                }
                Wake::Wrote(Ok(n)) if n > 0 => {
                    write_buf.advance(n);
                    write_stalled_since = None;
                    unflushed = buffers_writes;
                }
                Wake::Wrote(r) => {
                    let e = r.err().unwrap_or_else(|| io::ErrorKind::WriteZero.into());
                    write_buf.clear();
                    unflushed = false;
                    self.conn.abort(Instant::now(), e.to_string());
                }
                Wake::Flushed(r) => {
                    unflushed = false;
                    if let Err(e) = r {
                        self.conn.abort(Instant::now(), e.to_string());
                    }
                }
                Wake::Read(Ok(0)) => self.conn.handle_eof(Instant::now()),
                Wake::Read(Ok(n)) => transport::take_read(n, |bytes| self.conn.handle_input(Instant::now(), bytes)),
                Wake::Read(Err(e)) => self.conn.abort(Instant::now(), e.to_string()),
                Wake::Push(p) => self.apply_push(p),
                Wake::Phase(p) => self.apply_phase(&mut phase, p),
                // Yield between slices: the executor then wakes an idle worker, and on
                // async-io an idle worker is what polls the reactor, so the peer's driver
                // sees the first responses while this one handles the rest.
                Wake::Backlog => future::yield_now().await,
                Wake::Timer => {
                    armed = None;
                    let now = Instant::now();
                    if write_deadline.is_some_and(|d| now >= d) && !write_buf.is_empty() {
                        write_buf.clear();
                        unflushed = false;
                        self.conn.abort(now, "write timeout");
                    }
                    self.conn.handle_timeout(now);
                }
            }
            streak = if waited { 0 } else { streak + 1 };
            if streak >= YIELD_AFTER {
                streak = 0;
                future::yield_now().await;
            }
        }
        let close = self.write_timeout.unwrap_or(Duration::from_secs(1));
        let _ = timeout(&self.runtime, close, Ok(()), io.close()).await;
    }

    fn apply_phase(&mut self, phase: &mut Phase, to: Phase) {
        if to <= *phase {
            return;
        }
        *phase = to;
        let mode = if to == Phase::Immediate { CloseMode::Immediate } else { CloseMode::Graceful };
        self.conn.close(Instant::now(), mode);
    }

    fn on_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::Request(req) => {
                let id = req.id;
                let mut fut = self.router.serve(Instant::now(), req, self.peer.clone(), self.pusher.clone());
                // Fast path: a handler that finishes without waiting is answered right
                // here, with no task spawn and no channel hop. One that waits moves to a
                // task of its own (polled again there, so it registers that task's waker).
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match fut.as_mut().poll(&mut cx) {
                    Poll::Ready(served) => self.on_done(id, served),
                    Poll::Pending => {
                        let done = self.done_tx.clone();
                        self.runtime.spawn(Box::pin(async move {
                            let served = fut.await;
                            let _ = done.send((id, served)).await;
                        }));
                    }
                }
            }
            ServerEvent::Heartbeat { .. } => {
                for h in self.router.hooks() {
                    h.heartbeat(&self.peer);
                }
            }
            ServerEvent::ConnectionLost(reason) => {
                tracing::debug!(peer = %self.peer.addr, %reason, "rpcx connection ended");
            }
            _ => {}
        }
    }

    fn apply_push(&mut self, p: PushCmd) {
        if let Err(e) = self.conn.push(Instant::now(), p.service_path, p.service_method, p.metadata, p.payload) {
            tracing::debug!(peer = %self.peer.addr, error = %e, "server push dropped");
        }
    }

    fn on_done(&mut self, id: RequestId, served: (Dispatched, Context)) {
        // Pushes a handler queued before it returned go out before its response (Go
        // writes them synchronously from the handler).
        while let Some(p) = self.push_rx.try_recv() {
            self.apply_push(p);
        }
        self.router.answer(&mut self.conn, Instant::now(), id, served);
    }
}
