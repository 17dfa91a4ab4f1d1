//! The blocking server: an accept thread, one thread per connection (its reader, which
//! also does the connection's housekeeping once it ends), one timer thread for every
//! connection's deadlines, a writer thread only while a connection's output is stuck
//! (see `engine.rs`), and a bounded worker pool for handlers that wait.
//!
//! The connection cap is the configured one, lowered to what the machine can hold
//! ([`ServerHandle::max_connections`]); past it a new connection is closed at once.
//!
//! A handler future is first polled once on the connection's reader thread: if it is
//! ready (it did not wait on anything), it is answered right there, with no thread hop.
//! Otherwise it moves to a worker thread, which runs it with
//! [`block_on`](crate::block_on) (parking until its waker is woken) and sends the result
//! back to the driver.

mod conn;

use crate::engine::READER_STACK;
use crate::executor::Pool;
use crate::housekeeper::Housekeeper;
use crate::transport::Sock;
use rpcx_core::addr::ServerAddr;
use rpcx_core::govern::ServerKey;
use rpcx_core::registry::{self, Registered};
use rpcx_core::service::{Dispatcher, Peer, Router, ServerSettings, ServerTotals};
use rustc_hash::FxHashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Server options: the [`ServerSettings`] every runtime shares (defaults there: no
/// read/write timeout, as Go; 32 MiB frames, 10 000 connections, 1024 requests in flight
/// per connection, TCP keepalive 3 min, 10 s TLS handshake timeout), TLS, 64 worker
/// threads, ready handlers answered inline.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The settings shared with every runtime's server.
    pub settings: ServerSettings,
    /// TLS: serve TLS on TCP listeners when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Most worker threads running handlers that wait (shared by all connections;
    /// started on demand). A handler occupies a worker for as long as it waits, so this
    /// bounds how many waiting handlers make progress at once; the rest queue.
    pub workers: usize,
    /// Poll each handler once on the connection's reader thread and answer it there if
    /// it is ready (the fast path). Turn off when handlers block the thread (blocking IO,
    /// `std::thread::sleep`) so that they always run on a worker and never stall their
    /// connection.
    pub inline_handlers: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self { settings: ServerSettings::default(), tls: None, workers: 64, inline_handlers: true }
    }
}

/// An rpcx server: a [`Router`] plus options. Bind it to get a running
/// [`ServerHandle`].
///
/// Handlers are `std::future::Future`s run by this crate's own minimal executor
/// ([`block_on`](crate::block_on)): they must not depend on a specific async runtime
/// (no `tokio::time::sleep`, no tokio IO). A handler may still wait on anything that
/// wakes its waker from another thread.
///
/// ```no_run
/// # fn f() -> std::io::Result<()> {
/// use rpcx_std::{Server, service::{Context, Router, Service}};
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// let router = Router::new().service(Service::new("Arith")
///     .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) }));
/// let server = Server::new(router).bind("tcp@127.0.0.1:8972")?;
/// println!("listening on {}", server.address());
/// server.wait();
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Server {
    router: Router,
    opts: ServerOptions,
}

impl Server {
    /// A server for `router` with default options.
    pub fn new(router: Router) -> Self {
        Self { router, opts: ServerOptions::default() }
    }

    /// Replace all options.
    pub fn options(mut self, opts: ServerOptions) -> Self {
        self.opts = opts;
        self
    }

    rpcx_core::server_settings_setters!(opts.settings);

    /// Serve TLS on TCP listeners.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.opts.tls = Some(config);
        self
    }

    /// Set the worker pool size.
    pub fn workers(mut self, n: usize) -> Self {
        self.opts.workers = n.max(1);
        self
    }

    /// Whether to answer handlers that finish without waiting on the reader thread
    /// (see [`ServerOptions::inline_handlers`]).
    pub fn inline_handlers(mut self, inline: bool) -> Self {
        self.opts.inline_handlers = inline;
        self
    }

    /// Bind `addr` (`tcp@host:port`, `host:port`, `unix@/path`; port 0 picks one) and
    /// start serving on background threads.
    pub fn bind(self, addr: &str) -> io::Result<ServerHandle> {
        let parsed: ServerAddr = addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (listener, local_addr, address) = match &parsed {
            ServerAddr::Tcp(a) | ServerAddr::Http(a) | ServerAddr::Ws(a) | ServerAddr::Wss(a) => {
                let l = crate::transport::listen_tcp(a.as_str())?;
                let local = l.local_addr()?;
                let network = parsed.to_string().split('@').next().unwrap_or("tcp").to_owned();
                (Listener::Tcp(l), Some(local), format!("{network}@{local}"))
            }
            ServerAddr::Unix(p) => {
                let _ = std::fs::remove_file(p);
                (Listener::Unix(UnixListener::bind(p)?, p.clone()), None, parsed.to_string())
            }
            ServerAddr::Memory(name) => {
                // Bounded like a listen backlog: a dial beyond it is refused.
                let (tx, rx) = mpsc::sync_channel::<UnixStream>(1024);
                let acceptor: rpcx_core::memu::Acceptor = Arc::new(move |s| tx.try_send(s).is_ok());
                let reg = rpcx_core::memu::register(name, acceptor)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, format!("memu@{name} is bound")))?;
                (Listener::Memory { rx, _registration: reg, name: name.clone() }, None, parsed.to_string())
            }
        };
        let wake = listener.wake_target();
        let shared = Arc::new(ServerShared {
            registered: Mutex::new(None),
            phase: AtomicU8::new(Phase::Running as u8),
            table: Mutex::new(Table { next_id: 0, conns: FxHashMap::default() }),
            cv: Condvar::new(),
        });
        let pool = Pool::new(self.opts.workers);
        let registry = self.opts.settings.registry.clone();
        let mut settings = self.opts.settings;
        let fit = fitting_connection_cap(self.opts.workers);
        if settings.max_connections > fit {
            tracing::info!(
                configured = settings.max_connections,
                fit,
                "max_connections lowered to what this machine's thread and memory-map limits allow"
            );
            settings.max_connections = fit;
        }
        let housekeeper = Housekeeper::start()?;
        let dispatcher = Arc::new(
            Dispatcher::new(self.router, settings)
                .inline_handlers(self.opts.inline_handlers)
                .timer(Arc::new(crate::housekeeper::CoreTimer(housekeeper.timers().clone()))),
        );
        let ctx = Arc::new(ServeCtx { dispatcher, housekeeper, tls: self.opts.tls, shared: shared.clone(), pool });
        let ctx_dispatcher = ctx.dispatcher.clone();
        let (done_tx, accept_done) = mpsc::channel::<()>();
        let accept = thread::Builder::new().name("rpcx-accept".into()).spawn(move || {
            let _done = done_tx; // dropped when the accept loop ends, however it ends
            accept_loop(listener, ctx);
        })?;
        let dispatcher = ctx_dispatcher;
        let mut handle = ServerHandle {
            address,
            local_addr,
            shared,
            dispatcher,
            wake,
            accept: Some(accept),
            accept_done,
            advertised: None,
        };
        // The registry life cycle (rpcx_core::registry): register once accepting.
        let pending = match registry::begin(&registry, &handle.dispatcher, &handle.address, std::time::Instant::now()) {
            Ok(p) => p,
            Err(e) => {
                handle.close();
                return Err(e.into());
            }
        };
        if let Some(registry::Pending { key, registered }) = pending {
            match registered.wait() {
                Ok(r) => {
                    *handle.shared.registered.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
                    handle.advertised = Some(key);
                }
                Err(e) => {
                    handle.close();
                    return Err(e.into());
                }
            }
        }
        Ok(handle)
    }
}

/// Memory maps a thread takes: its stack and guard page, its signal stack and guard page.
const MAPS_PER_THREAD: usize = 4;
/// Threads (and their maps) kept free for the rest of the process.
const SPARE_THREADS: usize = 64;

/// The most connections this process can serve, one thread each, without running into
/// the kernel's memory-map count (`vm.max_map_count`: past it a new thread cannot map
/// its signal stack and the process aborts) or its thread limits (`kernel.threads-max`,
/// `RLIMIT_NPROC`): three quarters of what is free now, the rest left for workers,
/// writer threads of connections whose peers do not read, and the application.
/// `usize::MAX` where the limits cannot be read.
pub(crate) fn fitting_connection_cap(workers: usize) -> usize {
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<usize>().ok());
    let reserved = workers + SPARE_THREADS;
    let mut cap = usize::MAX;
    if let Some(max_maps) = read("/proc/sys/vm/max_map_count") {
        let used = std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count());
        let free = max_maps.saturating_sub(used + reserved * MAPS_PER_THREAD);
        cap = cap.min(free / MAPS_PER_THREAD * 3 / 4);
    }
    let mut threads = read("/proc/sys/kernel/threads-max").unwrap_or(usize::MAX);
    // RLIMIT_NPROC, soft: "Max processes  <soft>  <hard>  processes" ("unlimited" when none).
    if let Some(soft) = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("Max processes").and_then(|r| r.split_whitespace().next()?.parse().ok()))
    }) {
        threads = threads.min(soft);
    }
    if threads != usize::MAX {
        let now = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|n| n.trim().parse().ok())))
            .unwrap_or(0usize);
        cap = cap.min(threads.saturating_sub(now + reserved) * 3 / 4);
    }
    cap.max(1)
}

/// How long `shutdown`/`close` wait for the accept thread to notice.
const ACCEPT_EXIT_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Running = 0,
    Graceful = 1,
    Immediate = 2,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
    /// In-process (`memu@name`): connections arrive on a channel; the registration frees
    /// the name when the listener is dropped.
    Memory {
        rx: mpsc::Receiver<UnixStream>,
        _registration: rpcx_core::memu::Registration,
        name: String,
    },
}

/// Where to connect to wake the accept thread out of a blocking `accept`.
#[derive(Debug, Clone)]
enum WakeTarget {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Memory(String),
    None,
}

impl Listener {
    fn wake_target(&self) -> WakeTarget {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(mut a) => {
                    if a.ip().is_unspecified() {
                        a.set_ip(match a {
                            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                        });
                    }
                    WakeTarget::Tcp(a)
                }
                Err(_) => WakeTarget::None,
            },
            Listener::Unix(_, p) => WakeTarget::Unix(p.clone()),
            Listener::Memory { name, .. } => WakeTarget::Memory(name.clone()),
        }
    }

    fn accept(&self) -> io::Result<(Sock, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept()?;
                Ok((Sock::Tcp(s), Peer::from(a)))
            }
            Listener::Unix(l, _) => {
                let (s, a) = l.accept()?;
                let name = a.as_pathname().map(|p| p.display().to_string()).unwrap_or_else(|| "unix".to_owned());
                Ok((Sock::Unix(s), Peer::named(name)))
            }
            Listener::Memory { rx, name, .. } => {
                let s = rx.recv().map_err(|_| io::Error::other("in-process listener closed"))?;
                Ok((Sock::Unix(s), Peer::named(format!("memu@{name}"))))
            }
        }
    }
}

/// What the accept thread and every connection share with the handle.
struct ServerShared {
    /// The live registry registration: kept as long as the server runs (a dropped handle
    /// leaves it serving and registered), taken by shutdown or close.
    registered: Mutex<Option<Box<dyn Registered>>>,
    phase: AtomicU8,
    table: Mutex<Table>,
    /// Signals connection-count and phase changes.
    cv: Condvar,
}

struct Table {
    next_id: u64,
    /// Every connection; `None` until its handshake is done.
    conns: FxHashMap<u64, Option<conn::ConnHandle>>,
}

impl ServerShared {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Running,
            1 => Phase::Graceful,
            _ => Phase::Immediate,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Move to `phase` (never back) and tell every connection, under the table lock so
    /// a connection registering concurrently either gets the message or sees the phase.
    fn set_phase(&self, phase: Phase) {
        let table = self.lock();
        if (phase as u8) > self.phase.load(Ordering::SeqCst) {
            self.phase.store(phase as u8, Ordering::SeqCst);
            for h in table.conns.values().flatten() {
                conn::apply_phase(h, phase);
            }
        }
        drop(table);
        self.cv.notify_all();
    }

    /// Make connection `id` reachable for phase changes, and apply the current phase
    /// (under the table lock, so a concurrent `set_phase` is not missed).
    fn attach(&self, id: u64, h: &conn::ConnHandle) {
        let mut table = self.lock();
        if let Some(slot) = table.conns.get_mut(&id) {
            *slot = Some(h.clone());
        }
        conn::apply_phase(h, self.phase());
    }

    /// Wait until no connection is left, at most `timeout`; returns whether none is.
    fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut table = self.lock();
        while !table.conns.is_empty() {
            let left = deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return false;
            }
            table = self.cv.wait_timeout(table, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

/// Everything a connection needs from its server.
struct ServeCtx {
    dispatcher: Arc<Dispatcher>,
    /// The timer thread of every connection.
    housekeeper: Housekeeper,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<ServerShared>,
    pool: Arc<Pool>,
}

/// A running server: its address, counters, and graceful or immediate shutdown. Dropping the
/// handle leaves the server running (as a detached background service).
#[derive(Debug)]
pub struct ServerHandle {
    address: String,
    local_addr: Option<SocketAddr>,
    shared: Arc<ServerShared>,
    dispatcher: Arc<Dispatcher>,
    wake: WakeTarget,
    accept: Option<JoinHandle<()>>,
    /// Disconnects when the accept thread ends.
    accept_done: Receiver<()>,
    advertised: Option<ServerKey>,
}

impl std::fmt::Debug for ServerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerShared").field("phase", &self.phase()).finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The bound address in rpcx form (`tcp@127.0.0.1:40123`, `unix@/path`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The bound TCP address (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The connection cap in force: [`ServerSettings::max_connections`], lowered to what
    /// this machine's thread and memory-map limits can hold (one thread per connection;
    /// past `vm.max_map_count` a new thread would abort the process). A connection past
    /// the cap is closed at once.
    pub fn max_connections(&self) -> usize {
        self.dispatcher.settings().max_connections
    }

    /// The server's counters, summed over its connections (each connection adds its
    /// own whenever it has handled everything it was given).
    pub fn stats(&self) -> ServerTotals {
        self.dispatcher.stats()
    }

    /// The key the server is registered under, when a registrar is configured.
    pub fn advertised(&self) -> Option<&ServerKey> {
        self.advertised.as_ref()
    }

    /// Remove the server from its registry (once). Failures are logged.
    fn unregister(&mut self) {
        let registered = self.shared.registered.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(r) = registered {
            if let Err(e) = registry::end(r).wait() {
                tracing::warn!(error = %e, "unregistering from the registry failed");
            }
        }
        self.dispatcher.shutting_down();
    }

    /// Graceful shutdown: stop accepting; every connection stops reading, in-flight
    /// requests finish and their responses are written; after `grace`, whatever is left
    /// is closed immediately. Returns when every connection has ended (a connection's
    /// last flush waits at most [`ServerSettings::close_linger`]).
    pub fn shutdown(mut self, grace: Duration) {
        // Unregister before draining, as Go's `Shutdown` does.
        self.unregister();
        self.stop_accepting(Phase::Graceful);
        if !self.shared.wait_idle(Some(grace)) {
            self.shared.set_phase(Phase::Immediate);
            self.shared.wait_idle(None);
        }
        self.join_accept(Some(ACCEPT_EXIT_WAIT));
    }

    /// Close the listener and every connection now. Handlers still running on workers
    /// are not interrupted; their results are discarded.
    pub fn close(mut self) {
        self.unregister();
        self.stop_accepting(Phase::Immediate);
        self.shared.wait_idle(None);
        self.join_accept(Some(ACCEPT_EXIT_WAIT));
    }

    /// Block until the server stops. Nothing can stop it while its only handle is being
    /// waited on, so this is for a process that serves until it exits.
    pub fn wait(mut self) {
        self.join_accept(None);
        self.shared.wait_idle(None);
    }

    fn stop_accepting(&self, phase: Phase) {
        self.shared.set_phase(phase);
        // Wake the accept thread out of `accept` with a throwaway connection.
        match &self.wake {
            WakeTarget::Tcp(a) => drop(TcpStream::connect_timeout(a, Duration::from_millis(200))),
            WakeTarget::Unix(p) => drop(UnixStream::connect(p)),
            WakeTarget::Memory(name) => {
                if let (Some(accept), Ok((_ours, theirs))) = (rpcx_core::memu::route(name), UnixStream::pair()) {
                    accept(theirs);
                }
            }
            WakeTarget::None => {}
        }
    }

    /// Wait for the accept thread, at most `limit`: if the wake-up connection could not
    /// reach it (say the unix socket file was removed), it is left behind, blocked in
    /// `accept` on a listener nobody uses.
    fn join_accept(&mut self, limit: Option<Duration>) {
        let ended = match limit {
            None => true,
            Some(d) => matches!(self.accept_done.recv_timeout(d), Err(RecvTimeoutError::Disconnected) | Ok(())),
        };
        if let Some(a) = self.accept.take() {
            if ended {
                let _ = a.join();
            } else {
                tracing::warn!(address = %self.address, "the accept thread did not stop; leaving it behind");
            }
        }
    }
}

fn accept_loop(listener: Listener, ctx: Arc<ServeCtx>) {
    let shared = &ctx.shared;
    loop {
        if shared.phase() != Phase::Running {
            break;
        }
        let accepted = listener.accept();
        if shared.phase() != Phase::Running {
            break;
        }
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(error = %e, "accept failed");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // Past the connection cap (or refused by a hook) the socket is closed at once,
        // before any thread is started for it.
        let Some(session) = ctx.dispatcher.session(Arc::new(peer), Instant::now()) else {
            drop(sock);
            continue;
        };
        let id = {
            let mut table = shared.lock();
            if shared.phase() != Phase::Running {
                break;
            }
            let id = table.next_id;
            table.next_id += 1;
            table.conns.insert(id, None);
            id
        };
        let conn_ctx = ctx.clone();
        // Without TLS the connection is set up here, so its thread only runs the read
        // loop (and touches a few pages of stack); a TLS handshake blocks, so it runs on
        // the connection's own thread.
        let serve: Box<dyn FnOnce() + Send> = if ctx.tls.is_none() {
            match conn::set_up_plain(sock, session, &ctx, id) {
                Some(c) => Box::new(move || c.serve()),
                None => {
                    shared.lock().conns.remove(&id);
                    continue;
                }
            }
        } else {
            let ctx = ctx.clone();
            Box::new(move || conn::serve_conn(sock, session, &ctx, id))
        };
        let spawned = thread::Builder::new().name("rpcx-conn".into()).stack_size(READER_STACK).spawn(move || {
            serve();
            conn_ctx.shared.lock().conns.remove(&id);
            conn_ctx.shared.cv.notify_all();
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start a connection thread");
            shared.lock().conns.remove(&id);
        }
    }
    drop(listener);
    ctx.pool.close();
}
