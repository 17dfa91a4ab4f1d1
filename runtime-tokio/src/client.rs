//! The tokio client: one multiplexed connection driven by one task.

use crate::Error;
use crate::transport::{self, Stream};
use bytes::{Buf, Bytes, BytesMut};
use rpcx_core::addr::ServerAddr;
use rpcx_core::codec;
use rpcx_core::conn::{
    CallError, CallOptions, CallRejected, CallSpec, ClientConfig, ClientConnection, ClientEvent, CloseMode,
};
use rpcx_core::wire::{CompressType, Message, Metadata, SerializeType};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Client options. Defaults follow Go's `client.DefaultOption`: MsgPack, no
/// compression, 1 s connect timeout, heartbeat off (30 s max wait when on), TCP
/// keepalive 1 min.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Serialize type for typed calls (Go's default: MsgPack).
    pub serialize_type: SerializeType,
    /// Compression for request payloads over 1024 bytes.
    pub compress: CompressType,
    /// Dial timeout (Go: 1 s).
    pub connect_timeout: Duration,
    /// Default per-call timeout (none by default; Go relies on the caller's context).
    pub call_timeout: Option<Duration>,
    /// Heartbeat interval (off by default).
    pub heartbeat_interval: Option<Duration>,
    /// Close the connection when a heartbeat is not answered within this (Go: 30 s).
    pub max_wait_for_heartbeat: Duration,
    /// Close the connection after this long without traffic (off by default).
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive period (Go: 1 min); `None` disables keepalive.
    pub tcp_keepalive: Option<Duration>,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<crate::tls::TlsClient>,
    /// Capacity of the server-push receiver. When it is full, new pushes are dropped
    /// and counted ([`Client::dropped_pushes`]); the connection is never stalled by a
    /// slow push consumer (Go drops them too, #583).
    pub push_capacity: usize,
    /// Connection-machine limits (frame size, in-flight calls, unsent bytes).
    pub connection: ClientConfig,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            serialize_type: SerializeType::MSGPACK,
            compress: CompressType::NONE,
            connect_timeout: Duration::from_secs(1),
            call_timeout: None,
            heartbeat_interval: None,
            max_wait_for_heartbeat: Duration::from_secs(30),
            idle_timeout: None,
            tcp_keepalive: Some(Duration::from_secs(60)),
            tls: None,
            push_capacity: 1024,
            connection: ClientConfig::default(),
        }
    }
}

type Reply = oneshot::Sender<Result<Option<Message>, Error>>;

enum Command {
    Call(CallSpec, Reply),
    Close(CloseMode),
}

struct Shared {
    closing: AtomicBool,
    /// A close asked for (0 none, 1 graceful, 2 immediate). It reaches the driver through
    /// `close_wake`, not the command channel, so a full channel cannot hold it up.
    close_req: std::sync::atomic::AtomicU8,
    close_wake: tokio::sync::Notify,
    shutdown: AtomicBool,
    dropped_pushes: AtomicU64,
    pushes: Mutex<Option<mpsc::Receiver<Message>>>,
    remote: String,
}

/// An rpcx client over one multiplexed connection. `Clone + Send + Sync`: clones share
/// the connection, and any number of tasks may call concurrently.
///
/// ```no_run
/// # async fn f() -> Result<(), rpcx_tokio::Error> {
/// use rpcx_tokio::{Client, ClientOptions};
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// let client = Client::connect("tcp@127.0.0.1:8972", ClientOptions::default()).await?;
/// let reply: Reply = client.call("Arith", "Mul", &Args { A: 10, B: 20 }).await?;
/// assert_eq!(reply.C, 200);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    opts: Arc<ClientOptions>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("remote", &self.shared.remote).field("shutdown", &self.is_shutdown()).finish()
    }
}

impl Client {
    /// Connect to `addr` (`tcp@host:port`, `host:port`, `unix@/path`).
    pub async fn connect(addr: &str, opts: ClientOptions) -> Result<Client, Error> {
        let server: ServerAddr = addr.parse()?;
        let stream = transport::dial(&server, &opts).await?;
        Ok(Self::over(stream, addr.to_owned(), opts))
    }

    /// Run a client over an already-connected stream (any transport).
    pub fn over(stream: Stream, remote: String, opts: ClientOptions) -> Client {
        let mut cfg = opts.connection.clone();
        cfg.heartbeat_interval = opts.heartbeat_interval;
        cfg.max_wait_for_heartbeat = opts.max_wait_for_heartbeat;
        cfg.idle_timeout = opts.idle_timeout;
        let conn = ClientConnection::new(cfg, Instant::now());
        let (tx, rx) = mpsc::channel(1024);
        let (push_tx, push_rx) = mpsc::channel(opts.push_capacity.max(1));
        let shared = Arc::new(Shared {
            closing: AtomicBool::new(false),
            close_req: std::sync::atomic::AtomicU8::new(0),
            close_wake: tokio::sync::Notify::new(),
            shutdown: AtomicBool::new(false),
            dropped_pushes: AtomicU64::new(0),
            pushes: Mutex::new(Some(push_rx)),
            remote,
        });
        tokio::spawn(Driver { conn, rx, push_tx, shared: shared.clone(), replies: FxHashMap::default() }.run(stream));
        Client { tx, shared, opts: Arc::new(opts) }
    }

    /// Call `service.method` with `args`, serialized with the client's serialize type,
    /// and decode the reply.
    pub async fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        self.request(service, method).call(args).await
    }

    /// Start a call now and await its reply later (Go's `client.Go`).
    pub async fn go<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<PendingCall<R>, Error> {
        self.request(service, method).go(args).await
    }

    /// Send a oneway request: it completes when its bytes are handed to the socket.
    pub async fn oneway<A: Serialize + ?Sized>(&self, service: &str, method: &str, args: &A) -> Result<(), Error> {
        self.request(service, method).oneway(args).await
    }

    /// A call with options: metadata, deadline, serialize type, compression.
    pub fn request(&self, service: &str, method: &str) -> RequestBuilder<'_> {
        RequestBuilder {
            client: self,
            opts: CallOptions::new(
                service,
                method,
                self.opts.serialize_type,
                self.opts.compress,
                self.opts.call_timeout,
            ),
        }
    }

    /// Send a fully specified call and get the raw response (`None` for oneway).
    pub async fn send(&self, spec: CallSpec) -> Result<Option<Message>, Error> {
        self.start(spec).await?.await_raw().await
    }

    async fn start(&self, spec: CallSpec) -> Result<RawPending, Error> {
        let (tx, rx) = oneshot::channel();
        if self.is_closing() {
            return Err(Error::Shutdown);
        }
        let deadline = spec.deadline;
        let send = self.tx.send(Command::Call(spec, tx));
        // A call waits for room in the command channel at most until its deadline.
        let sent = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), send).await.map_err(|_| Error::Call(CallError::TimedOut))?,
            None => send.await,
        };
        sent.map_err(|_| Error::Shutdown)?;
        Ok(RawPending(rx))
    }

    /// The server-push receiver (bounded; see [`ClientOptions::push_capacity`]). It can
    /// be taken once; later calls return `None`.
    pub fn take_push_receiver(&self) -> Option<mpsc::Receiver<Message>> {
        self.shared.pushes.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Pushes dropped because the receiver was full.
    pub fn dropped_pushes(&self) -> u64 {
        self.shared.dropped_pushes.load(Ordering::Relaxed)
    }

    /// Close gracefully: no new calls; in-flight calls finish (or hit their deadline),
    /// then the connection closes.
    pub async fn close(&self) {
        self.request_close(1);
    }

    /// Close now: in-flight calls fail with "connection lost".
    pub async fn close_now(&self) {
        self.request_close(2);
    }

    fn request_close(&self, level: u8) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.close_req.fetch_max(level, Ordering::SeqCst);
        self.shared.close_wake.notify_one();
    }

    /// Whether a close has started (or the connection has ended).
    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::SeqCst) || self.is_shutdown()
    }

    /// Whether the connection has ended.
    pub fn is_shutdown(&self) -> bool {
        self.shared.shutdown.load(Ordering::SeqCst)
    }

    /// The address this client was connected to.
    pub fn remote(&self) -> &str {
        &self.shared.remote
    }
}

/// A call being configured; finish with [`call`](Self::call), [`go`](Self::go),
/// [`oneway`](Self::oneway) or [`call_with_metadata`](Self::call_with_metadata).
#[must_use]
pub struct RequestBuilder<'a> {
    client: &'a Client,
    opts: CallOptions,
}

impl RequestBuilder<'_> {
    rpcx_core::call_options_setters!();

    fn spec(self, payload: Bytes, oneway: bool) -> CallSpec {
        self.opts.into_spec(payload, oneway)
    }

    /// Call and decode the reply.
    pub async fn call<A: Serialize + ?Sized, R: DeserializeOwned>(self, args: &A) -> Result<R, Error> {
        Ok(self.call_with_metadata(args).await?.0)
    }

    /// Call and return the reply with the response metadata.
    pub async fn call_with_metadata<A: Serialize + ?Sized, R: DeserializeOwned>(
        self,
        args: &A,
    ) -> Result<(R, Metadata), Error> {
        self.go(args).await?.await_with_metadata().await
    }

    /// Start the call and return a handle to await later.
    pub async fn go<A: Serialize + ?Sized, R: DeserializeOwned>(self, args: &A) -> Result<PendingCall<R>, Error> {
        let st = self.opts.serialize_type;
        let payload = Bytes::from(codec::to_payload(st, args)?);
        let client = self.client;
        let spec = self.spec(payload, false);
        let raw = client.start(spec).await?;
        Ok(PendingCall { raw, _reply: std::marker::PhantomData })
    }

    /// Call with an already-serialized payload and return the raw response.
    pub async fn call_raw(self, payload: impl Into<Bytes>) -> Result<Message, Error> {
        let client = self.client;
        let spec = self.spec(payload.into(), false);
        client.send(spec).await?.ok_or(Error::Shutdown)
    }

    /// Send as a oneway request.
    pub async fn oneway<A: Serialize + ?Sized>(self, args: &A) -> Result<(), Error> {
        let payload = Bytes::from(codec::to_payload(self.opts.serialize_type, args)?);
        self.oneway_raw(payload).await
    }

    /// Send an already-serialized payload as a oneway request.
    pub async fn oneway_raw(self, payload: impl Into<Bytes>) -> Result<(), Error> {
        let client = self.client;
        let spec = self.spec(payload.into(), true);
        client.send(spec).await.map(|_| ())
    }
}

struct RawPending(oneshot::Receiver<Result<Option<Message>, Error>>);

impl RawPending {
    async fn await_raw(self) -> Result<Option<Message>, Error> {
        self.0.await.map_err(|_| Error::Shutdown)?
    }
}

/// A call started with [`Client::go`]: await it for the reply.
#[must_use = "a started call's reply is lost unless awaited"]
pub struct PendingCall<R> {
    raw: RawPending,
    _reply: std::marker::PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> PendingCall<R> {
    /// The reply and the response metadata.
    pub async fn await_with_metadata(self) -> Result<(R, Metadata), Error> {
        let msg = self.raw.await_raw().await?.ok_or(Error::Shutdown)?;
        Ok(codec::decode_reply(msg)?)
    }
}

impl<R: DeserializeOwned + Send + 'static> std::future::IntoFuture for PendingCall<R> {
    type Output = Result<R, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { Ok(self.await_with_metadata().await?.0) })
    }
}

struct Driver {
    conn: ClientConnection,
    rx: mpsc::Receiver<Command>,
    push_tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    replies: FxHashMap<u64, Reply>,
}

/// How often calls whose caller dropped the future are swept out.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Upper bound on bytes taken from the machine before writing.
const WRITE_HIGH_WATER: usize = 256 << 10;

impl Driver {
    async fn run(mut self, stream: Stream) {
        let (mut rd, mut wr) = crate::transport::split(stream);
        let mut read_buf = BytesMut::with_capacity(64 << 10);
        let mut write_buf = BytesMut::with_capacity(64 << 10);
        let mut deferred: Option<(CallSpec, Reply)> = None;
        let mut rx_open = true;
        let mut sweep_at = Instant::now() + SWEEP_INTERVAL;
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            while write_buf.len() < WRITE_HIGH_WATER && self.conn.poll_transmit(&mut write_buf).is_some() {}
            while let Some(ev) = self.conn.poll_event() {
                if let ClientEvent::Unblocked = ev {
                    if let Some((spec, reply)) = deferred.take() {
                        self.start_call(spec, reply, &mut deferred);
                    }
                } else {
                    self.on_event(ev);
                }
            }
            if !self.conn.is_closed() {
                // A call may have been admitted after Unblocked: take its bytes.
                while write_buf.len() < WRITE_HIGH_WATER && self.conn.poll_transmit(&mut write_buf).is_some() {}
            }
            // After `close_now`, unsent bytes are not waited for (the peer may never read).
            let abandon = self.shared.close_req.load(Ordering::SeqCst) == 2;
            if self.conn.is_closed() && (write_buf.is_empty() || abandon) {
                break;
            }
            // Calls whose caller went away (future dropped) are cancelled by a sweep once a
            // second, so they never pile up in the in-flight table.
            let sweep = (!self.replies.is_empty()).then_some(sweep_at);
            // A call waiting for room fails at its deadline like any other.
            let waiting = deferred.as_ref().and_then(|(spec, _)| spec.deadline);
            let deadline = [self.conn.poll_timeout(), sweep, waiting].into_iter().flatten().min();
            if let Some(d) = deadline {
                sleep.as_mut().reset(d.into());
            }
            tokio::select! {
                biased;
                res = wr.write(&write_buf), if !write_buf.is_empty() => match res {
                    Ok(n) => write_buf.advance(n),
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
                cmd = self.rx.recv(), if rx_open && deferred.is_none() => match cmd {
                    Some(cmd) => {
                        self.on_command(cmd, &mut deferred);
                        // Take a batch of queued commands in one wake-up.
                        for _ in 0..256 {
                            if deferred.is_some() { break; }
                            match self.rx.try_recv() {
                                Ok(cmd) => self.on_command(cmd, &mut deferred),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        // Every Client handle is gone: close gracefully.
                        rx_open = false;
                        self.conn.close(Instant::now(), CloseMode::Graceful);
                    }
                },
                _ = self.shared.close_wake.notified() => {
                    let mode = match self.shared.close_req.load(Ordering::SeqCst) {
                        2 => CloseMode::Immediate,
                        _ => CloseMode::Graceful,
                    };
                    self.on_command(Command::Close(mode), &mut deferred);
                    if let Some((_, reply)) = deferred.take() {
                        let _ = reply.send(Err(Error::Shutdown));
                    }
                }
                _ = &mut sleep, if deadline.is_some() => {
                    let now = Instant::now();
                    if waiting.is_some_and(|d| now >= d) {
                        if let Some((_, reply)) = deferred.take() {
                            let _ = reply.send(Err(Error::Call(CallError::TimedOut)));
                        }
                    }
                    if now >= sweep_at {
                        sweep_at = now + SWEEP_INTERVAL;
                        self.cancel_abandoned(now);
                    }
                    self.conn.handle_timeout(now);
                }
            }
        }
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let _ = wr.shutdown().await;
        // Fail whatever is still queued.
        if let Some((_, reply)) = deferred {
            let _ = reply.send(Err(Error::Shutdown));
        }
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            if let Command::Call(_, reply) = cmd {
                let _ = reply.send(Err(Error::Shutdown));
            }
        }
    }

    fn cancel_abandoned(&mut self, now: Instant) {
        let abandoned: Vec<u64> = self.replies.iter().filter(|(_, r)| r.is_closed()).map(|(s, _)| *s).collect();
        for seq in abandoned {
            self.replies.remove(&seq);
            self.conn.cancel(now, seq);
        }
    }

    fn on_command(&mut self, cmd: Command, deferred: &mut Option<(CallSpec, Reply)>) {
        match cmd {
            Command::Call(spec, reply) => self.start_call(spec, reply, deferred),
            Command::Close(mode) => {
                self.shared.closing.store(true, Ordering::SeqCst);
                self.conn.close(Instant::now(), mode);
            }
        }
    }

    fn start_call(&mut self, spec: CallSpec, reply: Reply, deferred: &mut Option<(CallSpec, Reply)>) {
        if !self.conn.is_closing() && !self.conn.poll_ready() {
            *deferred = Some((spec, reply));
            return;
        }
        match self.conn.call(Instant::now(), spec) {
            Ok(seq) => {
                self.replies.insert(seq, reply);
            }
            Err(CallRejected::Closing) | Err(CallRejected::Closed(_)) => {
                let _ = reply.send(Err(Error::Shutdown));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Rejected(e)));
            }
        }
    }

    fn on_event(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Response { seq, response } => {
                if let Some(r) = self.replies.remove(&seq) {
                    let _ = r.send(Ok(Some(response)));
                }
            }
            ClientEvent::Sent { seq } => {
                if let Some(r) = self.replies.remove(&seq) {
                    let _ = r.send(Ok(None));
                }
            }
            ClientEvent::Failed { seq, error } => {
                if let Some(r) = self.replies.remove(&seq) {
                    let _ = r.send(Err(Error::Call(error)));
                }
            }
            ClientEvent::Push(msg) => {
                let dropped = self.push_tx.try_send(msg).is_err();
                self.shared.dropped_pushes.fetch_add(u64::from(dropped), Ordering::Relaxed);
            }
            ClientEvent::ConnectionLost(reason) => {
                tracing::debug!(remote = %self.shared.remote, %reason, "rpcx connection ended");
                self.shared.closing.store(true, Ordering::SeqCst);
                for (_, r) in self.replies.drain() {
                    let _ = r.send(Err(Error::Call(CallError::ConnectionLost(reason.clone()))));
                }
            }
            _ => {}
        }
    }
}
