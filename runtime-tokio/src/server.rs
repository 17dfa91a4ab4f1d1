//! The tokio server: an accept loop, one task per connection driving a
//! `ServerConnection`, and one task per request running the router.

use crate::transport::{Stream, tune_tcp};
use bytes::{Buf, Bytes, BytesMut};
use rpcx_core::addr::ServerAddr;
use rpcx_core::conn::{CloseMode, PushError, ServerConfig, ServerConnection, ServerEvent};
use rpcx_core::service::{Context, Dispatched, Peer, PushSink, Pusher, Router};
use rpcx_core::wire::Metadata;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

/// Server options. Defaults: no read/write timeout (as Go), 32 MiB frames, 10 000
/// connections, 1024 requests in flight per connection, TCP keepalive 3 min (Go's
/// server default), 10 s TLS handshake timeout.
#[derive(Clone, Debug)]
pub struct ServerOptions {
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
}

impl Default for ServerOptions {
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
        }
    }
}

/// An rpcx server: a [`Router`] plus options. Bind it to get a running
/// [`ServerHandle`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use rpcx_tokio::{Server, service::{Context, Router, Service}};
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// let router = Router::new().service(Service::new("Arith")
///     .method("Mul", |_c: Context, a: Args| async move { Ok::<_, String>(Reply { C: a.A * a.B }) }));
/// let server = Server::new(router).bind("tcp@127.0.0.1:8972").await?;
/// println!("listening on {}", server.address());
/// server.wait().await;
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

    /// Bind `addr` (`tcp@host:port`, `host:port`, `unix@/path`; port 0 picks one) and
    /// start serving in the background.
    pub async fn bind(self, addr: &str) -> io::Result<ServerHandle> {
        let parsed: ServerAddr = addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (listener, local_addr, address) = match &parsed {
            ServerAddr::Tcp(a) => {
                let l = TcpListener::bind(a.as_str()).await?;
                let local = l.local_addr()?;
                (Listener::Tcp(l), Some(local), format!("tcp@{local}"))
            }
            ServerAddr::Unix(p) => {
                let _ = std::fs::remove_file(p);
                (Listener::Unix(UnixListener::bind(p)?), None, parsed.to_string())
            }
            ServerAddr::Memory(name) => {
                // Bounded like a listen backlog: a dial beyond it is refused.
                let (tx, rx) = mpsc::channel(MEMU_BACKLOG);
                let acceptor: rpcx_core::memu::Acceptor = Arc::new(move |s| tx.try_send(s).is_ok());
                let reg = rpcx_core::memu::register(name, acceptor)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, format!("memu@{name} is bound")))?;
                (Listener::Memory { rx, _registration: reg, name: parsed.to_string() }, None, parsed.to_string())
            }
        };
        let (ctl_tx, ctl_rx) = watch::channel(Phase::Running);
        let done = tokio::spawn(accept_loop(listener, self, ctl_rx));
        Ok(ServerHandle { address, local_addr, ctl: ctl_tx, done })
    }
}

/// In-process connections waiting to be accepted, at most (like a listen backlog).
const MEMU_BACKLOG: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Graceful,
    Immediate,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    /// In-process (`memu@name`): connections arrive on a channel; the registration frees
    /// the name when the listener is dropped.
    Memory {
        rx: mpsc::Receiver<std::os::unix::net::UnixStream>,
        _registration: rpcx_core::memu::Registration,
        name: String,
    },
}

/// A running server: its address, and graceful or immediate shutdown.
#[derive(Debug)]
pub struct ServerHandle {
    address: String,
    local_addr: Option<SocketAddr>,
    ctl: watch::Sender<Phase>,
    done: tokio::task::JoinHandle<()>,
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

    /// Graceful shutdown: stop accepting; every connection stops reading, in-flight
    /// requests finish and their responses are written; after `grace`, whatever is left
    /// is closed immediately. Returns when every connection has ended.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.ctl.send(Phase::Graceful);
        let mut done = self.done;
        if tokio::time::timeout(grace, &mut done).await.is_err() {
            let _ = self.ctl.send(Phase::Immediate);
            let _ = done.await;
        }
    }

    /// Close the listener and every connection now.
    pub async fn close(self) {
        let _ = self.ctl.send(Phase::Immediate);
        let _ = self.done.await;
    }

    /// Wait until the server stops (it runs until shut down).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

async fn accept_loop(mut listener: Listener, server: Server, mut ctl: watch::Receiver<Phase>) {
    let limit = Arc::new(Semaphore::new(server.opts.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = ctl.changed() => break,
        };
        let accepted = tokio::select! {
            a = accept(&mut listener) => a,
            _ = ctl.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => { drop(permit); continue; }
        };
        match accepted {
            Ok((stream, peer)) => {
                let server = server.clone();
                let ctl = ctl.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    serve_conn(stream, peer, server, ctl).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn accept(l: &mut Listener) -> io::Result<(RawConn, Peer)> {
    match l {
        Listener::Tcp(l) => {
            let (s, a) = l.accept().await?;
            Ok((RawConn::Tcp(s), Peer::from(a)))
        }
        Listener::Unix(l) => {
            let (s, a) = l.accept().await?;
            let name = a.as_pathname().map(|p| p.display().to_string()).unwrap_or_else(|| "unix".to_owned());
            Ok((RawConn::Unix(s), Peer::named(name)))
        }
        Listener::Memory { rx, name, .. } => {
            let s = rx.recv().await.ok_or_else(|| io::Error::other("in-process listener closed"))?;
            s.set_nonblocking(true)?;
            Ok((RawConn::Unix(tokio::net::UnixStream::from_std(s)?), Peer::named(name.clone())))
        }
    }
}

enum RawConn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

struct PushCmd {
    service_path: Bytes,
    service_method: Bytes,
    metadata: Metadata,
    payload: Bytes,
}

struct ConnPusher(mpsc::Sender<PushCmd>);

impl PushSink for ConnPusher {
    fn push(
        &self,
        service_path: Bytes,
        service_method: Bytes,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<(), PushError> {
        self.0.try_send(PushCmd { service_path, service_method, metadata, payload }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PushError::Blocked,
            mpsc::error::TrySendError::Closed(_) => PushError::Closed,
        })
    }
}

async fn serve_conn(raw: RawConn, peer: Peer, server: Server, ctl: watch::Receiver<Phase>) {
    let peer = Arc::new(peer);
    let hooks = server.router.hooks().to_vec();
    if !hooks.iter().all(|h| h.conn_accepted(&peer)) {
        return;
    }
    let stream = match raw {
        RawConn::Unix(s) => Stream::Unix(s),
        RawConn::Tcp(s) => {
            tune_tcp(&s, server.opts.tcp_keepalive);
            match &server.opts.tls {
                None => Stream::Tcp(s),
                Some(cfg) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg.clone());
                    match tokio::time::timeout(server.opts.tls_handshake_timeout, acceptor.accept(s)).await {
                        Ok(Ok(tls)) => Stream::ServerTls(Box::new(tls)),
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer.addr, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            }
        }
    };
    ConnDriver::new(peer.clone(), server).run(stream, ctl).await;
    for h in &hooks {
        h.conn_closed(&peer);
    }
}

struct ConnDriver {
    conn: ServerConnection,
    peer: Arc<Peer>,
    router: Router,
    write_timeout: Option<Duration>,
    done_tx: mpsc::UnboundedSender<(rpcx_core::conn::RequestId, (Dispatched, Context))>,
    done_rx: mpsc::UnboundedReceiver<(rpcx_core::conn::RequestId, (Dispatched, Context))>,
    pusher: Pusher,
    push_rx: mpsc::Receiver<PushCmd>,
}

impl ConnDriver {
    fn new(peer: Arc<Peer>, server: Server) -> Self {
        let mut cfg = ServerConfig {
            max_in_flight: server.opts.max_in_flight,
            read_timeout: server.opts.read_timeout,
            ..Default::default()
        };
        cfg.decoder.max_message_len = server.opts.max_message_len;
        cfg.decoder.max_decompressed_len = server.opts.max_message_len;
        cfg.encoder.max_message_len = server.opts.max_message_len;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (push_tx, push_rx) = mpsc::channel(1024);
        Self {
            conn: ServerConnection::new(cfg, Instant::now()),
            peer,
            router: server.router,
            write_timeout: server.opts.write_timeout,
            done_tx,
            done_rx,
            pusher: Pusher::new(Arc::new(ConnPusher(push_tx))),
            push_rx,
        }
    }

    async fn run(mut self, stream: Stream, mut ctl: watch::Receiver<Phase>) {
        let (mut rd, mut wr) = crate::transport::split(stream);
        let mut read_buf = BytesMut::with_capacity(64 << 10);
        let mut write_buf = BytesMut::with_capacity(64 << 10);
        let mut write_stalled_since: Option<Instant> = None;
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        self.apply_phase(*ctl.borrow());
        loop {
            // Events can produce output (a handler answered inline), so drain until both
            // are empty.
            loop {
                while write_buf.len() < (256 << 10) && self.conn.poll_transmit(&mut write_buf).is_some() {}
                let mut any = false;
                while let Some(ev) = self.conn.poll_event() {
                    any = true;
                    self.on_event(ev);
                }
                if !any {
                    break;
                }
            }
            // An immediate close does not wait for a peer to take what is unsent (it may
            // never read again: shutdown must not hang on it).
            let abandon = *ctl.borrow() == Phase::Immediate;
            if self.conn.is_closed() && (write_buf.is_empty() || abandon) {
                break;
            }
            if write_buf.is_empty() {
                write_stalled_since = None;
            } else if write_stalled_since.is_none() {
                write_stalled_since = Some(Instant::now());
            }
            let write_deadline = self.write_timeout.zip(write_stalled_since).map(|(d, t)| t + d);
            let deadline = [self.conn.poll_timeout(), write_deadline].into_iter().flatten().min();
            if let Some(d) = deadline {
                sleep.as_mut().reset(d.into());
            }
            tokio::select! {
                biased;
                Some((id, served)) = self.done_rx.recv() => {
                    self.on_done(id, served);
                    while let Ok((id, served)) = self.done_rx.try_recv() {
                        self.on_done(id, served);
                    }
                }
                res = wr.write(&write_buf), if !write_buf.is_empty() => match res {
                    Ok(n) => {
                        write_buf.advance(n);
                        write_stalled_since = None;
                    }
                    Err(e) => {
                        write_buf.clear();
                        self.conn.abort(Instant::now(), e.to_string());
                    }
                },
                res = rd.read_buf(&mut read_buf), if self.conn.wants_read() => match res {
                    Ok(0) => self.conn.handle_eof(Instant::now()),
                    Ok(_) => {
                        self.conn.handle_input(Instant::now(), &read_buf);
                        read_buf.clear();
                    }
                    Err(e) => self.conn.abort(Instant::now(), e.to_string()),
                },
                Some(p) = self.push_rx.recv() => {
                    if let Err(e) = self.conn.push(Instant::now(), p.service_path, p.service_method, p.metadata, p.payload) {
                        tracing::debug!(peer = %self.peer.addr, error = %e, "server push dropped");
                    }
                }
                Ok(()) = ctl.changed() => {
                    let phase = *ctl.borrow();
                    self.apply_phase(phase);
                }
                _ = &mut sleep, if deadline.is_some() => {
                    let now = Instant::now();
                    if write_deadline.is_some_and(|d| now >= d) && !write_buf.is_empty() {
                        write_buf.clear();
                        self.conn.abort(now, "write timeout");
                    }
                    self.conn.handle_timeout(now);
                }
            }
        }
        // Bounded: a TLS close_notify waits for room a peer that stopped reading never gives.
        let _ = tokio::time::timeout(Duration::from_millis(200), wr.shutdown()).await;
    }

    fn apply_phase(&mut self, phase: Phase) {
        match phase {
            Phase::Running => {}
            Phase::Graceful => self.conn.close(Instant::now(), CloseMode::Graceful),
            Phase::Immediate => self.conn.close(Instant::now(), CloseMode::Immediate),
        }
    }

    fn on_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::Request(req) => {
                let id = req.id;
                let mut fut = self.router.serve(req, self.peer.clone(), self.pusher.clone());
                // Fast path: a handler that finishes without waiting is answered right
                // here, with no task spawn and no channel hop. One that waits moves to a
                // task of its own (polled again there, so it registers that task's waker).
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match fut.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(served) => self.on_done(id, served),
                    std::task::Poll::Pending => {
                        let done = self.done_tx.clone();
                        tokio::spawn(async move {
                            let served = fut.await;
                            let _ = done.send((id, served));
                        });
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

    fn on_done(&mut self, id: rpcx_core::conn::RequestId, served: (Dispatched, Context)) {
        // Pushes a handler queued before it returned go out before its response (Go
        // writes them synchronously from the handler).
        while let Ok(p) = self.push_rx.try_recv() {
            if let Err(e) = self.conn.push(Instant::now(), p.service_path, p.service_method, p.metadata, p.payload) {
                tracing::debug!(peer = %self.peer.addr, error = %e, "server push dropped");
            }
        }
        self.router.answer(&mut self.conn, Instant::now(), id, served);
    }
}
