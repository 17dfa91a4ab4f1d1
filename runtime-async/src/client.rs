//! The client: one multiplexed connection driven by one task.

use crate::Error;
use crate::queue;
use crate::runtime::{Runtime, Timer, timeout};
use crate::transport::{self, Stream};
use bytes::{Buf, Bytes, BytesMut};
use futures_channel::oneshot;
use futures_lite::{Stream as _, future};
use rpcx_core::addr::ServerAddr;
use rpcx_core::codec;
use rpcx_core::conn::{
    CallError, CallOptions, CallSpec, CallTicket, ClientConfig, ClientSession, ClientStats, CloseMode, Outcome,
    PushSink, ReplySlot, SessionConfig, prepare_call,
};
use rpcx_core::wire::{CompressType, Message, Metadata, SerializeType};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

/// Client options. Defaults follow Go's `client.DefaultOption`: MsgPack, no
/// compression, 1 s connect timeout, heartbeat off (30 s max wait when on), TCP
/// keepalive 1 min. The connection's driver task runs on [`runtime`](Self::runtime).
///
/// Each setting has one place: heartbeat and idle timeout are fields of
/// [`connection`](Self::connection) (the core's `ClientConfig`), set most easily with
/// [`heartbeat`](Self::heartbeat), [`max_wait_for_heartbeat`](Self::max_wait_for_heartbeat)
/// and [`idle_timeout`](Self::idle_timeout).
#[derive(Clone, Debug)]
pub struct ClientOptions<Rt: Runtime> {
    /// Serialize type for typed calls (Go's default: MsgPack).
    pub serialize_type: SerializeType,
    /// Compression for request payloads over 1024 bytes.
    pub compress: CompressType,
    /// Dial timeout (Go: 1 s).
    pub connect_timeout: Duration,
    /// Default per-call timeout (none by default; Go relies on the caller's context).
    pub call_timeout: Option<Duration>,
    /// TCP keepalive period (Go: 1 min); `None` disables keepalive.
    pub tcp_keepalive: Option<Duration>,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<crate::tls::TlsClient>,
    /// Capacity of the server-push receiver. When it is full, new pushes are dropped
    /// and counted ([`Client::dropped_pushes`]); the connection is never stalled by a
    /// slow push consumer (Go drops them too, #583).
    pub push_capacity: usize,
    /// The connection machine's settings: frame limits, in-flight calls, unsent bytes,
    /// heartbeat and idle timeout.
    pub connection: ClientConfig,
    /// The HTTP CONNECT path for `http@` addresses (Go's `Option.RPCPath`).
    pub rpc_path: String,
    /// Runs the connection's driver task, its timers and its sockets.
    pub runtime: Rt,
}

impl<Rt: Runtime> Default for ClientOptions<Rt> {
    fn default() -> Self {
        Self {
            serialize_type: SerializeType::MSGPACK,
            compress: CompressType::NONE,
            connect_timeout: Duration::from_secs(1),
            call_timeout: None,
            tcp_keepalive: Some(Duration::from_secs(60)),
            tls: None,
            push_capacity: 1024,
            connection: ClientConfig::default(),
            rpc_path: rpcx_core::http::connect::DEFAULT_RPC_PATH.to_owned(),
            runtime: Rt::default(),
        }
    }
}

impl<Rt: Runtime> ClientOptions<Rt> {
    /// Send a heartbeat every `interval` (Go's `Heartbeat` + `HeartbeatInterval`); sets
    /// [`connection`](Self::connection)`.heartbeat_interval`.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.connection.heartbeat_interval = Some(interval);
        self
    }

    /// Close the connection when a heartbeat is not answered within `d` (Go: 30 s).
    pub fn max_wait_for_heartbeat(mut self, d: Duration) -> Self {
        self.connection.max_wait_for_heartbeat = d;
        self
    }

    /// Close the connection after `d` without traffic.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.connection.idle_timeout = Some(d);
        self
    }

    /// Add a client hook (see [`ClientHooks`](rpcx_core::conn::ClientHooks)); hooks run
    /// in the order added. Sets [`connection`](Self::connection)`.hooks`.
    pub fn hook(mut self, hook: std::sync::Arc<dyn rpcx_core::conn::ClientHooks>) -> Self {
        self.connection.hooks = std::mem::take(&mut self.connection.hooks).with(hook);
        self
    }

    /// Go's `ClientErrorFunc`: rewrite the server's error text before the caller sees
    /// it. Sets [`connection`](Self::connection)`.error_text`.
    pub fn error_text(mut self, f: impl Fn(&Message, &str) -> String + Send + Sync + 'static) -> Self {
        self.connection.error_text = Some(rpcx_core::conn::ErrorTextFn::new(f));
        self
    }
}

type Reply = oneshot::Sender<Result<Option<Message>, Error>>;

/// A call on its way to the driver; the permit is its place in the bounded queue,
/// given back when the driver takes it.
struct Command(CallSpec, Reply, async_lock::SemaphoreGuardArc, CallTicket);

/// Calls queued between callers and the driver, at most (beyond it, callers wait, up to
/// their deadline).
const COMMAND_QUEUE: usize = 1024;

struct Shared {
    closing: AtomicBool,
    /// A close asked for (0 none, 1 graceful, 2 immediate). It reaches the driver through
    /// `signal` (capacity 1), not the command channel, so a full channel cannot hold
    /// it up.
    close_req: std::sync::atomic::AtomicU8,
    /// A caller dropped a call before it ended: the driver cancels it at once.
    abandoned: AtomicBool,
    /// Wakes the driver for `close_req` and `abandoned`.
    signal: async_channel::Sender<()>,
    shutdown: AtomicBool,
    dropped_pushes: AtomicU64,
    pushes: Mutex<Option<PushReceiver>>,
    /// Room in the command queue.
    room: Arc<async_lock::Semaphore>,
    /// The connection machine's counters, as of the driver's last wake-up.
    stats: Mutex<ClientStats>,
    /// Closed (never sent on) when the driver has ended.
    ended: async_channel::Receiver<()>,
    remote: String,
}

/// An rpcx client over one multiplexed connection. `Clone + Send + Sync`: clones share
/// the connection, and any number of tasks may call concurrently.
///
/// ```no_run
/// # async fn f<R: rpcx_async::Runtime>() -> Result<(), rpcx_async::Error> {
/// use rpcx_async::{Client, ClientOptions};
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// // `rpcx_tokio::Client` / `rpcx_smol::Client` name this type for their runtime.
/// let client = Client::<R>::connect("tcp@127.0.0.1:8972", ClientOptions::default()).await?;
/// let reply: Reply = client.call("Arith", "Mul", &Args { A: 10, B: 20 }).await?;
/// assert_eq!(reply.C, 200);
/// # Ok(()) }
/// ```
pub struct Client<Rt: Runtime> {
    tx: async_channel::Sender<Command>,
    shared: Arc<Shared>,
    opts: Arc<ClientOptions<Rt>>,
}

impl<Rt: Runtime> Clone for Client<Rt> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), shared: self.shared.clone(), opts: self.opts.clone() }
    }
}

impl<Rt: Runtime> std::fmt::Debug for Client<Rt> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("remote", &self.shared.remote).field("shutdown", &self.is_shutdown()).finish()
    }
}

impl<Rt: Runtime> Client<Rt> {
    /// Connect to `addr` (`tcp@host:port`, `host:port`, `unix@/path`, `memu@name`).
    pub async fn connect(addr: &str, opts: ClientOptions<Rt>) -> Result<Self, Error> {
        let server: ServerAddr = addr.parse()?;
        let (stream, websocket) = transport::dial(&server, &opts).await?;
        let mut opts = opts;
        opts.connection.websocket = websocket;
        Ok(Self::over(stream, addr.to_owned(), opts))
    }

    /// Run a client over an already-connected stream (any transport).
    pub fn over(stream: Stream<Rt>, remote: String, opts: ClientOptions<Rt>) -> Self {
        let cfg = opts.connection.clone();
        let (push_tx, push_rx) = queue::bounded(opts.push_capacity);
        // One call waits for room in the session; the rest wait in the command queue.
        let config = SessionConfig {
            connection: cfg,
            max_deferred: 1,
            remote: Arc::from(remote.as_str()),
            ..SessionConfig::default()
        };
        let session = ClientSession::new(config, push_tx, Instant::now());
        let (tx, rx) = async_channel::unbounded();
        let (signal, signal_rx) = async_channel::bounded(1);
        let (ended_tx, ended) = async_channel::bounded(1);
        let shared = Arc::new(Shared {
            closing: AtomicBool::new(false),
            close_req: std::sync::atomic::AtomicU8::new(0),
            abandoned: AtomicBool::new(false),
            signal,
            shutdown: AtomicBool::new(false),
            dropped_pushes: AtomicU64::new(0),
            pushes: Mutex::new(Some(PushReceiver(push_rx))),
            room: Arc::new(async_lock::Semaphore::new(COMMAND_QUEUE)),
            stats: Mutex::new(ClientStats::default()),
            ended,
            remote,
        });
        let driver = Driver {
            session,
            rx: Box::pin(rx),
            signal_rx: Box::pin(signal_rx),
            shared: shared.clone(),
            runtime: opts.runtime.clone(),
        };
        opts.runtime.spawn(Box::pin(async move {
            driver.run(stream).await;
            drop(ended_tx);
        }));
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
    pub fn request(&self, service: &str, method: &str) -> RequestBuilder<'_, Rt> {
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

    async fn start(&self, mut spec: CallSpec) -> Result<RawPending, Error> {
        let (tx, rx) = oneshot::channel();
        if self.is_closing() {
            return Err(Error::Shutdown);
        }
        // The call's span and pre_call hooks run here, on the caller's task.
        let hooks = &self.opts.connection.hooks;
        let ticket = prepare_call(hooks, &self.shared.remote, Instant::now(), &mut spec)?;
        // A call waits for room in the command queue at most until its deadline.
        let permit = match self.shared.room.try_acquire_arc() {
            Some(p) => Ok(p),
            None => {
                let wait = async { Ok(self.shared.room.acquire_arc().await) };
                match spec.deadline {
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        let rt = &self.opts.runtime;
                        timeout(rt, left, Err(Error::Call(CallError::TimedOut)), wait).await
                    }
                    None => wait.await,
                }
            }
        };
        let permit = match permit {
            Ok(p) => p,
            Err(e) => {
                ticket.end(hooks, &self.shared.remote, Instant::now(), &Err(e.clone()));
                return Err(e);
            }
        };
        if let Err(e) = self.tx.try_send(Command(spec, tx, permit, ticket)) {
            let Command(_, _, _, ticket) = e.into_inner();
            ticket.end(hooks, &self.shared.remote, Instant::now(), &Err(Error::Shutdown));
            return Err(Error::Shutdown);
        }
        Ok(RawPending { rx: Some(rx), shared: self.shared.clone() })
    }

    /// The server-push receiver (bounded; see [`ClientOptions::push_capacity`]). It can
    /// be taken once; later calls return `None`.
    pub fn take_push_receiver(&self) -> Option<PushReceiver> {
        self.shared.pushes.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The connection's counters (calls, responses, bytes, heartbeats), as of the
    /// driver's latest turn.
    pub fn stats(&self) -> ClientStats {
        self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Pushes dropped because the receiver was full.
    pub fn dropped_pushes(&self) -> u64 {
        self.shared.dropped_pushes.load(Ordering::Relaxed)
    }

    /// Close gracefully: no new calls; in-flight calls finish (or hit their deadline),
    /// then the connection closes. Resolves when the connection has ended.
    pub async fn close(&self) {
        self.request_close(1);
        let _ = self.shared.ended.recv().await;
    }

    /// Close now: in-flight calls fail with "connection lost". Resolves when the
    /// connection has ended (unsent bytes are not waited for).
    pub async fn close_now(&self) {
        self.request_close(2);
        let _ = self.shared.ended.recv().await;
    }

    /// Start a graceful close without waiting for it to end.
    pub fn start_close(&self) {
        self.request_close(1);
    }

    fn request_close(&self, level: u8) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.close_req.fetch_max(level, Ordering::SeqCst);
        // Full means a wake-up is already pending, which reads the flag.
        let _ = self.shared.signal.try_send(());
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
pub struct RequestBuilder<'a, Rt: Runtime> {
    client: &'a Client<Rt>,
    opts: CallOptions,
}

impl<Rt: Runtime> RequestBuilder<'_, Rt> {
    rpcx_core::call_options_setters!();

    fn spec(self, payload: Bytes, oneway: bool) -> CallSpec {
        self.opts.into_spec(Instant::now(), payload, oneway)
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

    /// Start a call with an already-serialized payload and return a handle whose
    /// [`PendingCall::await_raw`] gives the raw response.
    pub async fn go_raw(self, payload: impl Into<Bytes>) -> Result<PendingCall<Message>, Error> {
        let decoding = self.opts.decoding;
        let client = self.client;
        let spec = self.spec(payload.into(), false);
        let raw = client.start(spec).await?;
        Ok(PendingCall { raw, decoding, _reply: std::marker::PhantomData })
    }

    /// Start the call and return a handle to await later.
    pub async fn go<A: Serialize + ?Sized, R: DeserializeOwned>(self, args: &A) -> Result<PendingCall<R>, Error> {
        let st = self.opts.serialize_type;
        let decoding = self.opts.decoding;
        let payload = codec::to_payload_bytes(st, args)?;
        let client = self.client;
        let spec = self.spec(payload, false);
        let raw = client.start(spec).await?;
        Ok(PendingCall { raw, decoding, _reply: std::marker::PhantomData })
    }

    /// Call with an already-serialized payload and return the raw response.
    pub async fn call_raw(self, payload: impl Into<Bytes>) -> Result<Message, Error> {
        let client = self.client;
        let spec = self.spec(payload.into(), false);
        client.send(spec).await?.ok_or(Error::Shutdown)
    }

    /// Send as a oneway request.
    pub async fn oneway<A: Serialize + ?Sized>(self, args: &A) -> Result<(), Error> {
        let payload = codec::to_payload_bytes(self.opts.serialize_type, args)?;
        self.oneway_raw(payload).await
    }

    /// Send an already-serialized payload as a oneway request.
    pub async fn oneway_raw(self, payload: impl Into<Bytes>) -> Result<(), Error> {
        let client = self.client;
        let spec = self.spec(payload.into(), true);
        client.send(spec).await.map(|_| ())
    }
}

/// A started call's reply. Dropped before the reply came, it tells the driver, which
/// cancels the call at once (freeing its room in the connection).
struct RawPending {
    rx: Option<oneshot::Receiver<Outcome>>,
    shared: Arc<Shared>,
}

impl RawPending {
    async fn await_raw(mut self) -> Outcome {
        let rx = self.rx.as_mut().ok_or(Error::Shutdown)?;
        let out = rx.await.map_err(|_| Error::Shutdown)?;
        self.rx = None;
        out
    }
}

impl Drop for RawPending {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // `Ok(None)`: the call is still running and its caller is gone.
            let running = matches!(rx.try_recv(), Ok(None));
            // Dropped before the driver is told, so its sweep sees the slot abandoned.
            drop(rx);
            if running {
                self.shared.abandoned.store(true, Ordering::SeqCst);
                let _ = self.shared.signal.try_send(());
            }
        }
    }
}

/// A call started with [`Client::go`]: await it for the reply.
#[must_use = "a started call's reply is lost unless awaited"]
pub struct PendingCall<R> {
    raw: RawPending,
    decoding: codec::Decoding,
    _reply: std::marker::PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> PendingCall<R> {
    /// The reply and the response metadata.
    pub async fn await_with_metadata(self) -> Result<(R, Metadata), Error> {
        let decoding = self.decoding;
        let msg = self.raw.await_raw().await?.ok_or(Error::Shutdown)?;
        Ok(codec::decode_reply_with(msg, decoding)?)
    }
}

impl<R> PendingCall<R> {
    /// The raw response message, undecoded (for calls started with
    /// [`RequestBuilder::go_raw`], or to read a typed call's payload yourself).
    pub async fn await_raw(self) -> Result<Message, Error> {
        self.raw.await_raw().await?.ok_or(Error::Shutdown)
    }
}

impl<R: DeserializeOwned + Send + 'static> std::future::IntoFuture for PendingCall<R> {
    type Output = Result<R, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<R, Error>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { Ok(self.await_with_metadata().await?.0) })
    }
}

/// The server-push receiver of a [`Client`] (see [`Client::take_push_receiver`]):
/// bounded by [`ClientOptions::push_capacity`], allocated as pushes arrive.
pub struct PushReceiver(queue::Receiver<Message>);

impl PushReceiver {
    /// The next push; `None` once the connection has ended and every push was taken.
    pub async fn recv(&self) -> Option<Message> {
        self.0.recv().await
    }

    /// The next push if one is queued.
    pub fn try_recv(&self) -> Option<Message> {
        self.0.try_recv()
    }
}

impl futures_lite::Stream for PushReceiver {
    type Item = Message;
    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().0.poll_recv(cx)
    }
}

impl std::fmt::Debug for PushReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushReceiver")
    }
}

/// A caller's reply channel, as the session keeps it.
struct Slot(Reply);

impl ReplySlot for Slot {
    fn is_abandoned(&self) -> bool {
        self.0.is_canceled()
    }
}

impl PushSink for queue::Sender<Message> {
    fn offer(&mut self, push: Message) -> bool {
        self.try_send(push).is_ok()
    }
}

/// Upper bound on bytes taken from the machine before writing.
const WRITE_HIGH_WATER: usize = 256 << 10;

/// Wake-ups handled back to back before the driver yields to its executor (smol and
/// async-std have no preemption budget: a driver whose socket is always ready would
/// otherwise keep its thread).
pub(crate) const YIELD_AFTER: u32 = 64;

/// What woke the driver: one ready source per wake-up, polled in priority order. A
/// short-lived value on the driver's stack: the command is not boxed (that would cost
/// an allocation per call).
#[allow(clippy::large_enum_variant)]
enum Wake {
    Wrote(io::Result<usize>),
    Flushed(io::Result<()>),
    Read(io::Result<usize>),
    Command(Option<Command>),
    Signal,
    Timer,
}

struct Driver<Rt: Runtime> {
    session: ClientSession<Slot, queue::Sender<Message>>,
    rx: Pin<Box<async_channel::Receiver<Command>>>,
    signal_rx: Pin<Box<async_channel::Receiver<()>>>,
    shared: Arc<Shared>,
    runtime: Rt,
}

impl<Rt: Runtime> Driver<Rt> {
    async fn run(mut self, stream: Stream<Rt>) {
        let mut write_buf = BytesMut::new();
        let mut io = transport::Io::new(stream);
        let buffers_writes = io.buffers_writes();
        let mut unflushed = false;
        let mut rx_open = true;
        let mut timer: Option<Rt::Timer> = None;
        let mut armed: Option<Instant> = None;
        let mut streak = 0u32;
        loop {
            while write_buf.len() < WRITE_HIGH_WATER && self.session.poll_transmit(&mut write_buf).is_some() {}
            // Closing is published before the callers are woken, so a caller that got a
            // connection-lost error sees `is_closing` already.
            if self.session.is_closing() && !self.shared.closing.swap(true, Ordering::SeqCst) {
                if let Some(reason) = self.session.lost() {
                    tracing::debug!(remote = %self.shared.remote, %reason, "rpcx connection ended");
                }
            }
            self.complete();
            // After `close_now`, unsent bytes are not waited for (the peer may never read).
            let abandon = self.shared.close_req.load(Ordering::SeqCst) == 2;
            if self.session.is_closed() && ((write_buf.is_empty() && !unflushed) || abandon) {
                break;
            }
            // Re-arm only for an earlier deadline: each async-io timer change wakes the
            // reactor, and a timer left at a later instant only fires spuriously (which
            // `handle_timeout` tolerates) before being set again.
            if let Some(d) = self.session.poll_timeout().filter(|&d| armed.is_none_or(|a| d < a)) {
                match timer.as_mut() {
                    Some(t) => t.reset(d),
                    None => timer = Some(self.runtime.timer(d)),
                }
                armed = Some(d);
            }
            let want_read = self.session.wants_read();
            // While calls wait for room, the rest wait in the queue (callers feel it).
            let take_commands = rx_open && !self.session.is_blocked();
            let mut waited = false;
            let rx = &mut self.rx;
            let signal_rx = &mut self.signal_rx;
            let wake = future::poll_fn(|cx| {
                if let Poll::Ready(Some(())) = signal_rx.as_mut().poll_next(cx) {
                    return Poll::Ready(Wake::Signal);
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
                if take_commands {
                    if let Poll::Ready(cmd) = rx.as_mut().poll_next(cx) {
                        return Poll::Ready(Wake::Command(cmd));
                    }
                }
                if let (Some(_), Some(t)) = (armed, timer.as_mut()) {
                    if t.poll_expired(cx).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                }
                waited = true;
                Poll::Pending
            })
            .await;
            let now = Instant::now();
            match wake {
                Wake::Wrote(Ok(n)) if n > 0 => {
                    write_buf.advance(n);
                    unflushed = buffers_writes;
                }
                Wake::Wrote(r) => {
                    let e = r.err().unwrap_or_else(|| io::ErrorKind::WriteZero.into());
                    write_buf.clear();
                    unflushed = false;
                    self.session.abort(now, e.to_string());
                }
                Wake::Flushed(r) => {
                    unflushed = false;
                    if let Err(e) = r {
                        self.session.abort(now, e.to_string());
                    }
                }
                Wake::Read(Ok(0)) => self.session.handle_eof(now),
                Wake::Read(Ok(n)) => transport::take_read(n, |bytes| self.session.handle_input(now, bytes)),
                Wake::Read(Err(e)) => self.session.abort(now, e.to_string()),
                Wake::Command(Some(cmd)) => {
                    self.take(now, cmd);
                    self.take_queued(now);
                    // Let the other callers that are ready run first, then take what
                    // they queued: their calls go out in the same write. Without this a
                    // caller's wake-up runs the driver right after that caller (tokio's
                    // LIFO slot), and every call costs a write of its own.
                    if !self.session.is_blocked() {
                        future::yield_now().await;
                        self.take_queued(Instant::now());
                    }
                }
                Wake::Command(None) => {
                    // Every Client handle is gone: close gracefully.
                    rx_open = false;
                    self.session.close(now, CloseMode::Graceful);
                }
                Wake::Signal => {
                    // A caller dropped its call: cancel it now, freeing its room.
                    if self.shared.abandoned.swap(false, Ordering::SeqCst) {
                        self.session.sweep(now);
                    }
                    match self.shared.close_req.load(Ordering::SeqCst) {
                        2 => self.session.close(now, CloseMode::Immediate),
                        1 => self.session.close(now, CloseMode::Graceful),
                        _ => {}
                    }
                }
                Wake::Timer => {
                    armed = None;
                    self.session.handle_timeout(now);
                }
            }
            streak = if waited { 0 } else { streak + 1 };
            if streak >= YIELD_AFTER {
                streak = 0;
                future::yield_now().await;
            }
        }
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.closing.store(true, Ordering::SeqCst);
        let _ = timeout(&self.runtime, Duration::from_secs(1), Ok(()), io.close()).await;
        // Fail whatever is still held or queued.
        self.session.finish();
        self.complete();
        self.rx.close();
        while let Ok(Command(_, reply, _, ticket)) = self.rx.try_recv() {
            self.session.end_ticket(ticket, &Err(Error::Shutdown));
            let _ = reply.send(Err(Error::Shutdown));
        }
    }

    /// Take a batch of queued calls (at most 256, while there is room).
    fn take_queued(&mut self, now: Instant) {
        for _ in 0..256 {
            if self.session.is_blocked() {
                break;
            }
            match self.rx.try_recv() {
                Ok(cmd) => self.take(now, cmd),
                Err(_) => break,
            }
        }
    }

    /// Start a queued call, unless its caller already went away.
    fn take(&mut self, now: Instant, Command(spec, reply, _room, ticket): Command) {
        if reply.is_canceled() {
            self.session.end_ticket(ticket, &Err(Error::Call(CallError::Cancelled)));
        } else {
            self.session.call_prepared(now, spec, Slot(reply), ticket);
        }
    }

    /// Hand finished calls to their callers.
    fn complete(&mut self) {
        // Counters first, so a caller woken below sees its call counted. Never waits: a
        // reader holding the lock only delays the copy to the next turn.
        self.shared.dropped_pushes.store(self.session.dropped_pushes(), Ordering::Relaxed);
        if let Ok(mut stats) = self.shared.stats.try_lock() {
            stats.clone_from(self.session.stats());
        }
        while let Some((Slot(reply), outcome)) = self.session.poll_completion() {
            let _ = reply.send(outcome);
        }
    }
}

impl<Rt: Runtime> rpcx_core::stub::CallClient for Client<Rt> {
    fn options(&self, service: &str, method: &str) -> CallOptions {
        self.request(service, method).opts
    }
}

impl<Rt: Runtime> rpcx_core::stub::CallAsync for Client<Rt> {
    fn call_raw(&self, opts: CallOptions, payload: Bytes) -> impl Future<Output = Result<Message, Error>> + Send {
        RequestBuilder { client: self, opts }.call_raw(payload)
    }
}
