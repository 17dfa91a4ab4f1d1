//! The server: an accept loop, one task per connection driving a `ServerConnection`
//! through the core's [`Session`], and a task for each request whose handler has to
//! wait.

use crate::client::YIELD_AFTER;
use crate::queue;
use crate::runtime::{Runtime, Timer, sleep_until, timeout};
use crate::transport::{self, Stream, tune_tcp};
use bytes::{Buf, Bytes, BytesMut};
use futures_lite::{Stream as _, future};
use rpcx_core::addr::ServerAddr;
use rpcx_core::conn::{CloseMode, PushError, ServerConnection};
use rpcx_core::govern::ServerKey;
use rpcx_core::registry::{self, Registered};
use rpcx_core::service::{
    Dispatch, Dispatcher, Peer, Push, PushQueue, PushSink, Pusher, Router, Served, ServerSettings, ServerTotals,
    Session, Waiting,
};
use rpcx_core::wire::Metadata;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Server options: the [`ServerSettings`] every runtime shares (defaults there: no
/// read/write timeout, as Go; 32 MiB frames, 10 000 connections, 1024 requests in flight
/// per connection, TCP keepalive 3 min, 10 s TLS handshake timeout), TLS, and the
/// [`runtime`](Self::runtime) that runs the tasks (its default).
#[derive(Clone, Debug)]
pub struct ServerOptions<R: Runtime> {
    /// The settings shared with every runtime's server.
    pub settings: ServerSettings,
    /// TLS: serve TLS on TCP listeners when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Runs the accept loop, the connection drivers and handlers that wait.
    pub runtime: R,
}

impl<R: Runtime> Default for ServerOptions<R> {
    fn default() -> Self {
        Self { settings: ServerSettings::default(), tls: None, runtime: R::default() }
    }
}

/// An rpcx server: a [`Router`] plus options. Bind it to get a running
/// [`ServerHandle`]. Every [`ServerSettings`] knob has a builder method here.
///
/// ```no_run
/// # async fn f<R: rpcx_async::Runtime>() -> std::io::Result<()> {
/// use rpcx_async::Server;
/// use rpcx_core::service::{Context, Router, Service};
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// let router = Router::new().service(Service::new("Arith")
///     .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) }));
/// // `rpcx_tokio::Server` / `rpcx_smol::Server` name this type for their runtime.
/// let server = Server::<R>::new(router).max_in_flight(256).bind("tcp@127.0.0.1:8972").await?;
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

    rpcx_core::server_settings_setters!(opts.settings);

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

    /// Bind `addr` (`tcp@host:port`, `host:port`, `http@host:port`, `unix@/path`; port 0
    /// picks one) and start serving in the background. A TCP port also answers HTTP
    /// (the gateway, JSON-RPC and CONNECT tunnels; see `rpcx_core::http`); an `http@`
    /// address is the same listener, named for clients that tunnel.
    pub async fn bind(self, addr: &str) -> io::Result<ServerHandle<R>> {
        let parsed: ServerAddr = addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let rt = self.opts.runtime.clone();
        let (listener, local_addr, address) = match &parsed {
            ServerAddr::Tcp(a) | ServerAddr::Http(a) | ServerAddr::Ws(a) | ServerAddr::Wss(a) => {
                let l = bind_tcp(&rt, a).await?;
                let local = R::tcp_local_addr(&l)?;
                let network = parsed.to_string().split('@').next().unwrap_or("tcp").to_owned();
                (Listener::Tcp(l), Some(local), format!("{network}@{local}"))
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
        let registry = self.opts.settings.registry.clone();
        let shared = Arc::new(Shared {
            registered: std::sync::Mutex::new(None),
            dispatcher: Arc::new(
                Dispatcher::new(self.router, self.opts.settings).timer(Arc::new(crate::runtime::CoreTimer(rt.clone()))),
            ),
            tls: self.opts.tls,
            runtime: rt.clone(),
            phase: AtomicU8::new(Phase::Running as u8),
            phase_changed: event_listener::Event::new(),
        });
        let (done_tx, done) = async_channel::bounded(1);
        let accept_shared = shared.clone();
        rt.spawn(Box::pin(async move {
            accept_loop(listener, accept_shared).await;
            drop(done_tx);
        }));
        let mut handle = ServerHandle { address, local_addr, shared, done, advertised: None };
        // The registry life cycle (rpcx_core::registry): register once accepting.
        let pending =
            match registry::begin(&registry, &handle.shared.dispatcher, &handle.address, std::time::Instant::now()) {
                Ok(p) => p,
                Err(e) => {
                    handle.close().await;
                    return Err(e.into());
                }
            };
        if let Some(registry::Pending { key, registered }) = pending {
            match registered.await {
                Ok(r) => {
                    *handle.shared.registered.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
                    handle.advertised = Some(key);
                }
                Err(e) => {
                    handle.close().await;
                    return Err(e.into());
                }
            }
        }
        Ok(handle)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Phase {
    Running = 0,
    Graceful = 1,
    Immediate = 2,
}

/// What the accept loop, every connection task and the handle share.
struct Shared<R: Runtime> {
    /// The live registry registration, taken by the first shutdown or close.
    registered: std::sync::Mutex<Option<Box<dyn Registered>>>,
    dispatcher: Arc<Dispatcher>,
    tls: Option<Arc<rustls::ServerConfig>>,
    runtime: R,
    /// The shutdown phase; it only moves forward, and every move notifies
    /// `phase_changed` (one listener per connection, registered while it waits).
    phase: AtomicU8,
    phase_changed: event_listener::Event,
}

impl<R: Runtime> Shared<R> {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Running,
            1 => Phase::Graceful,
            _ => Phase::Immediate,
        }
    }

    fn set_phase(&self, to: Phase) {
        if self.phase.fetch_max(to as u8, Ordering::SeqCst) < to as u8 {
            self.phase_changed.notify(usize::MAX);
        }
    }

    /// Resolves (to `None`) once shutdown has begun.
    async fn stopped<T>(&self) -> Option<T> {
        loop {
            if self.phase() != Phase::Running {
                return None;
            }
            let l = self.phase_changed.listen();
            if self.phase() != Phase::Running {
                return None;
            }
            l.await;
        }
    }
}

impl<R: Runtime> std::fmt::Debug for Shared<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("phase", &self.phase()).finish_non_exhaustive()
    }
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

/// A running server: its address, counters, and graceful or immediate shutdown.
/// Dropping it leaves the server running in the background (use
/// [`wait`](Self::wait) to serve until shut down, or [`shutdown`](Self::shutdown) /
/// [`close`](Self::close)).
#[derive(Debug)]
pub struct ServerHandle<R: Runtime> {
    address: String,
    local_addr: Option<SocketAddr>,
    shared: Arc<Shared<R>>,
    /// Disconnects when the accept loop and every connection have ended.
    done: async_channel::Receiver<()>,
    advertised: Option<ServerKey>,
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

    /// The server's counters, summed over its connections (each connection adds its
    /// own whenever it has handled everything it was given).
    pub fn stats(&self) -> ServerTotals {
        self.shared.dispatcher.stats()
    }

    /// The key the server is registered under, when a registrar is configured.
    pub fn advertised(&self) -> Option<&ServerKey> {
        self.advertised.as_ref()
    }

    /// Remove the server from its registry (once; later calls do nothing). Shutdown
    /// and close do this first; failures are logged, not returned.
    async fn unregister(&self) {
        let registered = self.shared.registered.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(r) = registered {
            if let Err(e) = registry::end(r).await {
                tracing::warn!(error = %e, "unregistering from the registry failed");
            }
        }
        self.shared.dispatcher.shutting_down();
    }

    /// Graceful shutdown: stop accepting; every connection stops reading, in-flight
    /// requests finish and their responses are written; after `grace`, whatever is left
    /// is closed immediately. Returns when every connection has ended (a connection's
    /// last flush waits at most [`ServerSettings::close_linger`]).
    pub async fn shutdown(self, grace: Duration) {
        // Unregister before draining, as Go's `Shutdown` does: clients stop selecting the
        // server while it still answers what they already sent.
        self.unregister().await;
        self.shared.set_phase(Phase::Graceful);
        let finished = timeout(&self.shared.runtime, grace, false, async {
            let _ = self.done.recv().await;
            true
        })
        .await;
        if !finished {
            self.shared.set_phase(Phase::Immediate);
            let _ = self.done.recv().await;
        }
    }

    /// Close the listener and every connection now.
    pub async fn close(self) {
        self.unregister().await;
        self.shared.set_phase(Phase::Immediate);
        let _ = self.done.recv().await;
    }

    /// Wait until the server stops (it runs until shut down).
    pub async fn wait(self) {
        let _ = self.done.recv().await;
    }
}

async fn accept_loop<R: Runtime>(listener: Listener<R>, shared: Arc<Shared<R>>) {
    // A wait group: every connection task holds a sender; `recv` fails once all are gone.
    let (conns, all_done) = async_channel::bounded::<()>(1);
    loop {
        let rt = &shared.runtime;
        let Some(accepted) = future::or(async { Some(accept(rt, &listener).await) }, shared.stopped()).await else {
            break;
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Some(task) = ConnTask::new(&shared, stream, peer, conns.clone()) {
                    rt.spawn(Box::pin(task));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                sleep_until(rt, Instant::now() + Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    drop(conns);
    let _ = all_done.recv().await;
}

#[cfg_attr(not(unix), allow(unused_variables))] // `rt` adopts in-process streams (unix only)
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

/// Pushes queued by handlers for one connection before `push` reports `Blocked`.
const PUSH_QUEUE: usize = 1024;

/// Upper bound on bytes taken from the machine before writing.
const WRITE_HIGH_WATER: usize = 256 << 10;
/// Bytes read (and decoded, and dispatched) per turn of the executor, at most: past
/// it the driver yields, so that a peer pipelining heavy frames shares its worker.
const READ_PER_TURN: usize = 256 << 10;

struct ConnPusher(queue::Sender<Push>);

impl PushSink for ConnPusher {
    fn push(
        &self,
        service_path: Bytes,
        service_method: Bytes,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<(), PushError> {
        self.0.try_send(Push { service_path, service_method, metadata, payload }).map_err(|e| match e {
            queue::TrySendError::Full(_) => PushError::Blocked,
            queue::TrySendError::Closed(_) => PushError::Closed,
        })
    }
}

/// A connection's push queue, created when its first request is dispatched.
#[derive(Default)]
struct Pushes(Option<Box<(Pusher, queue::Receiver<Push>)>>);

impl PushQueue for Pushes {
    fn pusher(&mut self) -> Pusher {
        let q = self.0.get_or_insert_with(|| {
            let (tx, rx) = queue::bounded(PUSH_QUEUE);
            Box::new((Pusher::new(Arc::new(ConnPusher(tx))), rx))
        });
        q.0.clone()
    }

    fn next_push(&mut self) -> Option<Push> {
        self.0.as_ref()?.1.try_recv()
    }
}

/// Where spawned handlers send their result, created on the first spawn.
struct DoneChan {
    tx: async_channel::Sender<Served>,
    rx: Pin<Box<async_channel::Receiver<Served>>>,
}

/// The task of one connection: the TLS handshake (if any), then the driver. It owns
/// its slot in the accept loop's limit and wait group.
struct ConnTask<R: Runtime> {
    shared: Arc<Shared<R>>,
    stage: Stage<R>,
    _slot: async_channel::Sender<()>,
}

/// A TLS handshake under its timeout; `None` when it failed or timed out.
type Handshake<R> = Pin<Box<dyn Future<Output = Option<Stream<R>>> + Send>>;

// `Serve` is the task's state for its whole life; the rare handshake is boxed instead.
#[allow(clippy::large_enum_variant)]
enum Stage<R: Runtime> {
    /// Boxed: the handshake state is large, and only TLS connections need it.
    Handshake(Box<(Handshake<R>, Option<Session>)>),
    Serve(Driver<R>),
    Done,
}

impl<R: Runtime> ConnTask<R> {
    /// `None` when the server is at its connection cap or a `conn_accepted` hook
    /// refused the connection (dropping `stream` closes it at once).
    fn new(shared: &Arc<Shared<R>>, stream: Stream<R>, peer: Peer, slot: async_channel::Sender<()>) -> Option<Self> {
        let session = shared.dispatcher.session(Arc::new(peer), Instant::now())?;
        let settings = shared.dispatcher.settings();
        let stage = match (stream, &shared.tls) {
            (Stream::Tcp(s), tls) => {
                tune_tcp(R::tcp_socket(&s), settings.tcp_keepalive);
                match tls {
                    None => Stage::Serve(Driver::new(shared, session, Stream::Tcp(s))),
                    Some(cfg) => {
                        let acceptor = futures_rustls::TlsAcceptor::from(cfg.clone());
                        let (rt, limit, peer) =
                            (shared.runtime.clone(), settings.tls_handshake_timeout, session.peer().clone());
                        let handshake = async move {
                            match timeout(&rt, limit, None, async { Some(acceptor.accept(s).await) }).await {
                                Some(Ok(tls)) => Some(Stream::ServerTls(Box::new(tls))),
                                Some(Err(e)) => {
                                    tracing::debug!(peer = %peer.addr, error = %e, "tls handshake failed");
                                    None
                                }
                                None => None,
                            }
                        };
                        Stage::Handshake(Box::new((Box::pin(handshake), Some(session))))
                    }
                }
            }
            (other, _) => Stage::Serve(Driver::new(shared, session, other)),
        };
        Some(Self { shared: shared.clone(), stage, _slot: slot })
    }
}

impl<R: Runtime> Future for ConnTask<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.stage {
                Stage::Handshake(h) => {
                    let Poll::Ready(stream) = h.0.as_mut().poll(cx) else { return Poll::Pending };
                    let session = h.1.take();
                    this.stage = match (stream, session) {
                        (Some(stream), Some(session)) => Stage::Serve(Driver::new(&this.shared, session, stream)),
                        _ => Stage::Done,
                    };
                }
                Stage::Serve(d) => {
                    if d.poll(&this.shared, cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.stage = Stage::Done;
                }
                Stage::Done => return Poll::Ready(()),
            }
        }
    }
}

/// What woke a connection driver: one ready source per wake-up, in priority order.
enum Wake {
    Done(Served),
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Read(io::Result<usize>),
    Push(Push),
    Phase(Phase),
    /// The machine cut its decoding work short (`ServerConnection::has_work`).
    Work,
    Timer,
}

/// One connection's driver: the machine, its session and the stream, polled in turn.
/// Kept small (an idle connection is this struct and its task): queues and the write
/// buffer are allocated when first needed, cold state is boxed.
struct Driver<R: Runtime> {
    conn: ServerConnection,
    session: Session,
    io: transport::Io<R>,
    write_buf: BytesMut,
    timer: Option<R::Timer>,
    /// The instant `timer` is set to, while it matters.
    armed: Option<Instant>,
    write_stalled_since: Option<Instant>,
    /// Set once the machine has closed: the last flush (TLS close) must end by then.
    close_by: Option<Instant>,
    /// Set once the machine has closed with bytes still unwritten: they must leave by
    /// then (a peer that does not read cannot keep the connection).
    flush_by: Option<Instant>,
    listener: Option<event_listener::EventListener>,
    pushes: Pushes,
    done: Option<Box<DoneChan>>,
    streak: u32,
    /// Bytes read since the driver last yielded.
    turn_read: usize,
    /// A yield after heavy work ([`Runtime::yield_now`]), until it completes.
    yielding: Option<rpcx_core::service::BoxFuture<()>>,
    phase: Phase,
    unflushed: bool,
    buffers_writes: bool,
    /// Events are left in the machine: the drain stopped to write first.
    backlog: bool,
}

impl<R: Runtime> Driver<R> {
    fn new(shared: &Shared<R>, session: Session, stream: Stream<R>) -> Self {
        let io = transport::Io::new(stream);
        let mut d = Self {
            conn: session.connection(Instant::now()),
            session,
            buffers_writes: io.buffers_writes(),
            io,
            write_buf: BytesMut::new(),
            timer: None,
            armed: None,
            write_stalled_since: None,
            close_by: None,
            flush_by: None,
            listener: None,
            pushes: Pushes::default(),
            done: None,
            streak: 0,
            turn_read: 0,
            yielding: None,
            phase: Phase::Running,
            unflushed: false,
            backlog: false,
        };
        // A shutdown that began before this connection was accepted applies at once.
        d.apply_phase(shared.phase());
        d
    }

    fn apply_phase(&mut self, to: Phase) {
        if to <= self.phase {
            return;
        }
        self.phase = to;
        let mode = if to == Phase::Immediate { CloseMode::Immediate } else { CloseMode::Graceful };
        self.conn.close(Instant::now(), mode);
    }

    fn arm(&mut self, rt: &R, at: Instant) {
        match self.timer.as_mut() {
            Some(t) => t.reset(at),
            None => self.timer = Some(rt.timer(at)),
        }
        self.armed = Some(at);
    }

    /// Take the machine's output and handle its events (through the session) until it
    /// has neither, or the session asks for a write first (`backlog`).
    fn drain(&mut self, rt: &R) {
        let now = Instant::now();
        let Self { conn, session, write_buf, pushes, done, backlog, .. } = self;
        let mut spawn = |w: Waiting| {
            let chan = done.get_or_insert_with(|| {
                let (tx, rx) = async_channel::unbounded();
                Box::new(DoneChan { tx, rx: Box::pin(rx) })
            });
            let tx = chan.tx.clone();
            rt.spawn(Box::pin(async move {
                let _ = tx.try_send(w.await);
            }));
        };
        *backlog = false;
        loop {
            while write_buf.len() < WRITE_HIGH_WATER && conn.poll_transmit(write_buf).is_some() {}
            if *backlog {
                return;
            }
            match session.dispatch(conn, now, pushes, &mut spawn) {
                Dispatch::Idle => return,
                Dispatch::Handled => {}
                Dispatch::Backlog => *backlog = true,
            }
        }
    }

    /// The shutdown phase moved on, if it did; else the listener is registered.
    fn poll_phase(&mut self, shared: &Shared<R>, cx: &mut Context<'_>) -> Option<Phase> {
        if self.phase == Phase::Immediate {
            return None;
        }
        loop {
            let p = shared.phase();
            if p > self.phase {
                self.listener = None;
                return Some(p);
            }
            match self.listener.as_mut() {
                None => self.listener = Some(shared.phase_changed.listen()),
                Some(l) => {
                    if Pin::new(l).poll(cx).is_pending() {
                        return None;
                    }
                    self.listener = None;
                }
            }
        }
    }

    fn poll_wake(&mut self, shared: &Shared<R>, cx: &mut Context<'_>) -> Poll<Wake> {
        if let Some(d) = self.done.as_mut() {
            if let Poll::Ready(Some(s)) = d.rx.as_mut().poll_next(cx) {
                return Poll::Ready(Wake::Done(s));
            }
        }
        if !self.write_buf.is_empty() {
            if let Poll::Ready(r) = self.io.poll_write(cx, &self.write_buf) {
                return Poll::Ready(Wake::Wrote(r));
            }
        } else if self.unflushed {
            if let Poll::Ready(r) = self.io.poll_flush(cx) {
                return Poll::Ready(Wake::Flushed(r));
            }
        }
        if self.conn.wants_read() {
            if let Poll::Ready(r) = self.io.poll_read(cx) {
                return Poll::Ready(Wake::Read(r));
            }
        }
        if self.conn.has_work() {
            return Poll::Ready(Wake::Work);
        }
        if let Some(q) = self.pushes.0.as_mut() {
            if let Poll::Ready(Some(p)) = q.1.poll_recv(cx) {
                return Poll::Ready(Wake::Push(p));
            }
        }
        if let Some(p) = self.poll_phase(shared, cx) {
            return Poll::Ready(Wake::Phase(p));
        }
        if let (Some(_), Some(t)) = (self.armed, self.timer.as_mut()) {
            if t.poll_expired(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
        }
        Poll::Pending
    }

    fn poll(&mut self, shared: &Shared<R>, cx: &mut Context<'_>) -> Poll<()> {
        let rt = &shared.runtime;
        let write_timeout = shared.dispatcher.settings().write_timeout;
        if let Some(y) = self.yielding.as_mut() {
            if y.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.yielding = None;
        }
        loop {
            if let Some(by) = self.close_by {
                return self.poll_close(rt, by, cx);
            }
            // Events can produce output (a handler answered inline), so drain until both
            // are empty; the session stops after EVENTS_PER_WRITE events so that their
            // output is written first (`backlog` then makes the next round immediate).
            self.drain(rt);
            // An immediate close does not wait for a peer to take what is unsent (it may
            // never read again: shutdown must not hang on it).
            // Nor does a machine that ended (a protocol error, a timeout, the memory
            // budget) wait longer than the linger for its last bytes to leave.
            let mut abandon = self.phase == Phase::Immediate;
            if self.conn.is_closed() && !self.backlog && (!self.write_buf.is_empty() || self.unflushed) {
                let now = Instant::now();
                let by = *self.flush_by.get_or_insert(now + shared.dispatcher.settings().close_linger());
                if now >= by {
                    abandon = true;
                } else if self.armed.is_none_or(|a| by < a) {
                    self.arm(rt, by);
                }
            }
            if self.conn.is_closed() && ((self.write_buf.is_empty() && !self.unflushed) || abandon) && !self.backlog {
                if let Some(reason) = self.conn.lost_reason() {
                    tracing::debug!(peer = %self.session.peer().addr, %reason, "rpcx connection ended");
                }
                let by = Instant::now() + shared.dispatcher.settings().close_linger();
                self.arm(rt, by);
                self.close_by = Some(by);
                continue;
            }
            if self.write_buf.is_empty() {
                self.write_stalled_since = None;
            } else if self.write_stalled_since.is_none() {
                self.write_stalled_since = Some(Instant::now());
            }
            let write_deadline = write_timeout.zip(self.write_stalled_since).map(|(d, t)| t + d);
            // Pending work is a wake source of its own (`Wake::Work`), not a timer.
            let machine = if self.conn.has_work() { None } else { self.conn.poll_timeout() };
            let deadline = [machine, write_deadline].into_iter().flatten().min();
            // Re-arm only for an earlier deadline: each async-io timer change wakes the
            // reactor, and a timer left at a later instant only fires spuriously (which
            // `handle_timeout` tolerates) before being set again.
            if let Some(d) = deadline.filter(|&d| self.armed.is_none_or(|a| d < a)) {
                self.arm(rt, d);
            }
            let wake = match self.poll_wake(shared, cx) {
                Poll::Ready(w) => w,
                Poll::Pending if self.backlog => {
                    // Yield between slices: the executor then wakes an idle worker, and on
                    // async-io an idle worker is what polls the reactor, so the peer's
                    // driver sees the first responses while this one handles the rest.
                    self.streak += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => {
                    self.streak = 0;
                    self.turn_read = 0;
                    return Poll::Pending;
                }
            };
            // One step of heavy work (up to WORK_PER_TURN) per turn of the executor, so
            // that a peer's large decompressions do not hold this worker.
            // The same for reads: at most READ_PER_TURN bytes of requests are decoded
            // and dispatched before other connections get the worker.
            let yield_now = match &wake {
                Wake::Work => true,
                Wake::Read(Ok(n)) => {
                    self.turn_read += *n;
                    self.turn_read >= READ_PER_TURN
                }
                _ => false,
            };
            self.on_wake(wake, write_deadline);
            self.streak += 1;
            if yield_now {
                self.streak = 0;
                self.turn_read = 0;
                let mut y = rt.yield_now();
                if y.as_mut().poll(cx).is_pending() {
                    self.yielding = Some(y);
                    return Poll::Pending;
                }
                continue;
            }
            if self.streak >= YIELD_AFTER {
                self.streak = 0;
                self.turn_read = 0;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    fn on_wake(&mut self, wake: Wake, write_deadline: Option<Instant>) {
        match wake {
            Wake::Done(served) => {
                let now = Instant::now();
                self.session.finish(&mut self.conn, now, served, &mut self.pushes);
                while let Some(served) = self.done.as_ref().and_then(|d| d.rx.try_recv().ok()) {
                    self.session.finish(&mut self.conn, now, served, &mut self.pushes);
                }
            }
            Wake::Wrote(Ok(n)) if n > 0 => {
                self.write_buf.advance(n);
                self.write_stalled_since = None;
                self.unflushed = self.buffers_writes;
                if self.write_buf.is_empty() && self.write_buf.capacity() > WRITE_HIGH_WATER {
                    // A burst grew the buffer: give the memory back.
                    self.write_buf = BytesMut::new();
                }
            }
            Wake::Wrote(r) => {
                let e = r.err().unwrap_or_else(|| io::ErrorKind::WriteZero.into());
                self.write_buf.clear();
                self.unflushed = false;
                self.conn.abort(Instant::now(), e.to_string());
            }
            Wake::Flushed(r) => {
                self.unflushed = false;
                if let Err(e) = r {
                    self.conn.abort(Instant::now(), e.to_string());
                }
            }
            Wake::Read(Ok(0)) => self.conn.handle_eof(Instant::now()),
            Wake::Read(Ok(n)) => {
                let conn = &mut self.conn;
                transport::take_read(n, |bytes| conn.handle_input(Instant::now(), bytes));
            }
            Wake::Read(Err(e)) => self.conn.abort(Instant::now(), e.to_string()),
            Wake::Push(p) => {
                if let Err(e) = self.session.push(&mut self.conn, Instant::now(), p) {
                    tracing::debug!(peer = %self.session.peer().addr, error = %e, "server push dropped");
                }
            }
            Wake::Phase(p) => self.apply_phase(p),
            Wake::Work => self.conn.work(Instant::now()),
            Wake::Timer => {
                self.armed = None;
                let now = Instant::now();
                if write_deadline.is_some_and(|d| now >= d) && !self.write_buf.is_empty() {
                    self.write_buf.clear();
                    self.unflushed = false;
                    self.conn.abort(now, "write timeout");
                }
                self.conn.handle_timeout(now);
            }
        }
    }

    /// The last flush and close of the stream (a TLS `close_notify`), bounded by `by`
    /// ([`ServerSettings::close_linger`]).
    fn poll_close(&mut self, rt: &R, by: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let timer = self.timer.get_or_insert_with(|| rt.timer(by));
        if self.io.poll_close(cx).is_ready() || timer.poll_expired(cx).is_ready() || Instant::now() >= by {
            self.session.end(&self.conn);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
