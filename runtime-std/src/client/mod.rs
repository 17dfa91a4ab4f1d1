//! The blocking client: one multiplexed connection on the [engine](crate::engine).
//!
//! A caller locks the connection, encodes its request into the machine and writes it
//! itself (or leaves it to the thread already writing), then blocks on a one-shot reply
//! slot. The reader thread decodes responses and fills the slots; callers are woken
//! after the lock is released, through a relay (each woken caller wakes two more; see
//! `reply.rs`). A housekeeping thread sleeps until the machine's next deadline (call
//! deadlines, heartbeats), takes over writes the socket did not accept at once, and
//! closes the socket at the end.

mod state;

use crate::Error;
use crate::engine::{Engine, Machine, Refused};
use crate::reply::{self, ReplyRx, ReplyTx};
use crate::transport;
use bytes::Bytes;
use rpcx_core::addr::ServerAddr;
use rpcx_core::codec;
use rpcx_core::conn::{CallError, CallOptions, CallSpec, ClientConfig};
use rpcx_core::wire::{CompressType, Message, Metadata, SerializeType};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Client options. Defaults follow Go's `client.DefaultOption`: MsgPack, no
/// compression, 1 s connect timeout, heartbeat off (30 s max wait when on), TCP
/// keepalive 1 min. The same names and defaults as `rpcx-tokio`'s `ClientOptions`.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Serialize type for typed calls (Go's default: MsgPack).
    pub serialize_type: SerializeType,
    /// Compression for request payloads over 1024 bytes.
    pub compress: CompressType,
    /// Dial timeout, TCP connect and TLS handshake together (Go: 1 s).
    pub connect_timeout: Duration,
    /// Default per-call timeout (none by default; Go relies on the caller's context).
    pub call_timeout: Option<Duration>,
    /// TCP keepalive period (Go: 1 min); `None` disables keepalive.
    pub tcp_keepalive: Option<Duration>,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<crate::tls::TlsClient>,
    /// Capacity of the server-push receiver ([`Client::take_push_receiver`]). When it is
    /// full, the newest push is dropped and counted ([`Client::dropped_pushes`]): the
    /// connection is never stalled by a slow push consumer (Go drops them too, #583).
    pub push_capacity: usize,
    /// The connection machine's settings: frame limits, in-flight calls, unsent bytes,
    /// heartbeat and idle timeout (one place for each; see
    /// [`heartbeat`](Self::heartbeat) and [`idle_timeout`](Self::idle_timeout)).
    pub connection: ClientConfig,
    /// The HTTP CONNECT path for `http@` addresses (Go's `Option.RPCPath`).
    pub rpc_path: String,
}

impl Default for ClientOptions {
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
        }
    }
}

impl ClientOptions {
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

/// A caller waits this long past its deadline for the connection's verdict before
/// giving up on its own (the housekeeping thread enforces deadlines; this is a backstop).
const DEADLINE_BACKSTOP: Duration = Duration::from_millis(100);

type Outcome = Result<Option<Message>, Error>;
type Reply = ReplyTx<Outcome>;
type ClientEngine = Engine<state::ClientState>;

struct Shared {
    /// A close was asked for (or the connection ended).
    closing: AtomicBool,
    /// `close_now` was called; a write stalled on a peer that does not read gives up.
    aborting: AtomicBool,
    shutdown: AtomicBool,
    shutdown_lock: Mutex<()>,
    shutdown_cv: Condvar,
    dropped_pushes: AtomicU64,
    pushes: Mutex<Option<Receiver<Message>>>,
    remote: String,
}

impl Shared {
    fn set_shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let _guard = self.shutdown_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.shutdown.store(true, Ordering::SeqCst);
        self.shutdown_cv.notify_all();
    }
}

/// Owned by every clone of a [`Client`]; the last one to go closes gracefully.
struct Inner {
    engine: Arc<ClientEngine>,
    shared: Arc<Shared>,
    opts: ClientOptions,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.engine.with(|m, _| m.close());
    }
}

/// A blocking rpcx client over one multiplexed connection. `Clone + Send + Sync`:
/// clones share the connection, and any number of threads may call concurrently; each
/// caller blocks only on its own reply.
///
/// Dropping the last clone closes the connection gracefully.
///
/// ```no_run
/// # fn f() -> Result<(), rpcx_std::Error> {
/// use rpcx_std::{Client, ClientOptions};
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// let client = Client::connect("tcp@127.0.0.1:8972", ClientOptions::default())?;
/// let reply: Reply = client.call("Arith", "Mul", &Args { A: 10, B: 20 })?;
/// assert_eq!(reply.C, 200);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remote", &self.inner.shared.remote)
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

impl Client {
    /// Connect to `addr` (`tcp@host:port`, `host:port`, `unix@/path`) within
    /// [`ClientOptions::connect_timeout`], and start the connection's driver and reader
    /// threads.
    pub fn connect(addr: &str, opts: ClientOptions) -> Result<Client, Error> {
        let server: ServerAddr = addr.parse()?;
        let (dialed, websocket) = transport::dial(&server, &opts)?;
        let mut opts = opts;
        opts.connection.websocket = websocket;
        Self::start_driver(dialed, addr.to_owned(), opts)
    }

    fn start_driver(dialed: transport::Dialed, remote: String, opts: ClientOptions) -> Result<Client, Error> {
        let (sock, tls) = dialed;
        let cfg = opts.connection.clone();
        let (push_tx, push_rx) = mpsc::sync_channel(opts.push_capacity.max(1));
        let shared = Arc::new(Shared {
            closing: AtomicBool::new(false),
            aborting: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            shutdown_lock: Mutex::new(()),
            shutdown_cv: Condvar::new(),
            dropped_pushes: AtomicU64::new(0),
            pushes: Mutex::new(Some(push_rx)),
            remote,
        });
        let intake = Arc::new(state::CallIntake::new(state::INTAKE_CAPACITY));
        let machine = state::ClientState::new(cfg, push_tx, shared.clone(), intake.clone());
        let engine = Engine::new(sock, tls, machine, intake, None).map_err(Error::Connect)?;
        engine.spawn_reader("rpcx-client-reader").map_err(Error::Connect)?;
        let housekeeping = engine.clone();
        let done = shared.clone();
        let spawned = std::thread::Builder::new().name("rpcx-client".into()).spawn(move || {
            housekeeping.run();
            housekeeping.with(|m, _| m.finish());
            done.set_shutdown();
        });
        if let Err(e) = spawned {
            engine.with(|m, _| m.abort(Instant::now(), "could not start the connection thread".into()));
            return Err(Error::Connect(e));
        }
        Ok(Client { inner: Arc::new(Inner { engine, shared, opts }) })
    }

    /// Call `service.method` with `args`, serialized with the client's serialize type,
    /// and decode the reply. Blocks until the reply, a failure, or the call timeout.
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        self.request(service, method).call(args)
    }

    /// Start a call now and wait for its reply later (Go's `client.Go`). Dropping the
    /// returned [`PendingCall`] without waiting cancels the call.
    pub fn go<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<PendingCall<R>, Error> {
        self.request(service, method).go(args)
    }

    /// Send a oneway request: returns once its bytes are handed to the socket.
    pub fn oneway<A: Serialize + ?Sized>(&self, service: &str, method: &str, args: &A) -> Result<(), Error> {
        self.request(service, method).oneway(args)
    }

    /// A call with options: metadata, timeout, serialize type, compression.
    pub fn request(&self, service: &str, method: &str) -> RequestBuilder<'_> {
        let opts = &self.inner.opts;
        RequestBuilder {
            client: self,
            opts: CallOptions::new(service, method, opts.serialize_type, opts.compress, opts.call_timeout),
        }
    }

    /// Send a fully specified call and wait for the raw response (`None` for oneway).
    pub fn send(&self, spec: CallSpec) -> Result<Option<Message>, Error> {
        let deadline = spec.deadline;
        let rx = self.start(spec)?;
        wait_outcome(&rx, deadline, &self.inner.engine)
    }

    fn start(&self, mut spec: CallSpec) -> Result<ReplyRx<Outcome>, Error> {
        if self.is_closing() {
            return Err(Error::Shutdown);
        }
        // The call's span and pre_call hooks run here, on the caller's thread.
        let hooks = &self.inner.opts.connection.hooks;
        let remote = &self.inner.shared.remote;
        let ticket = rpcx_core::conn::prepare_call(hooks, remote, Instant::now(), &mut spec)?;
        let (tx, rx) = reply::pair();
        let tx = tx.with_drop_value(|| Err(Error::Shutdown));
        // Queue the call without touching the connection's lock: the housekeeping
        // thread (or whoever holds the lock next) takes it into the machine and writes
        // it, with whatever else is queued by then.
        let engine = &self.inner.engine;
        match engine.ext().push((spec, tx, ticket)) {
            Ok(()) => engine.kick(),
            Err(Refused::Full((spec, tx, ticket))) => engine.with(|m, _| {
                m.take_intake();
                m.call(spec, tx, ticket);
            }),
            // The connection has ended; the dropped reply slot reports Shutdown.
            Err(Refused::Closed((_, _, ticket))) => ticket.end(hooks, remote, Instant::now(), &Err(Error::Shutdown)),
        }
        Ok(rx)
    }

    /// The connection's counters (calls, responses, bytes, heartbeats).
    pub fn stats(&self) -> rpcx_core::conn::ClientStats {
        self.inner.engine.with(|m, _| m.stats())
    }

    /// The server-push receiver, bounded by [`ClientOptions::push_capacity`] (when it
    /// is full the newest push is dropped and counted). It can be taken once; later
    /// calls return `None`. It ends when the connection ends.
    pub fn take_push_receiver(&self) -> Option<PushReceiver> {
        self.inner.shared.pushes.lock().unwrap_or_else(|p| p.into_inner()).take().map(PushReceiver)
    }

    /// Pushes dropped because the receiver was full (or had been dropped).
    pub fn dropped_pushes(&self) -> u64 {
        self.inner.shared.dropped_pushes.load(Ordering::Relaxed)
    }

    /// Close gracefully: no new calls; in-flight calls finish (or hit their deadline),
    /// then the connection closes. Returns at once; see [`wait_shutdown`](Self::wait_shutdown).
    pub fn close(&self) {
        self.inner.shared.closing.store(true, Ordering::SeqCst);
        self.inner.engine.with(|m, _| m.close());
    }

    /// Close now: in-flight calls fail with "connection lost".
    pub fn close_now(&self) {
        self.inner.shared.closing.store(true, Ordering::SeqCst);
        self.inner.shared.aborting.store(true, Ordering::SeqCst);
        self.inner.engine.with(|m, _| m.close());
    }

    /// Whether a close has started (or the connection has ended).
    pub fn is_closing(&self) -> bool {
        self.inner.shared.closing.load(Ordering::SeqCst) || self.is_shutdown()
    }

    /// Whether the connection has ended.
    pub fn is_shutdown(&self) -> bool {
        self.inner.shared.shutdown.load(Ordering::SeqCst)
    }

    /// Block until the connection has ended or `timeout` passes; returns
    /// [`is_shutdown`](Self::is_shutdown).
    pub fn wait_shutdown(&self, timeout: Duration) -> bool {
        let shared = &self.inner.shared;
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = shared.shutdown_lock.lock().unwrap_or_else(|p| p.into_inner());
        while !shared.shutdown.load(Ordering::SeqCst) {
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                break;
            }
            guard = shared.shutdown_cv.wait_timeout(guard, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        self.is_shutdown()
    }

    /// The address this client was connected to.
    pub fn remote(&self) -> &str {
        &self.inner.shared.remote
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
        self.opts.into_spec(Instant::now(), payload, oneway)
    }

    /// Call and decode the reply.
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(self, args: &A) -> Result<R, Error> {
        Ok(self.call_with_metadata(args)?.0)
    }

    /// Call and return the reply with the response metadata.
    pub fn call_with_metadata<A: Serialize + ?Sized, R: DeserializeOwned>(
        self,
        args: &A,
    ) -> Result<(R, Metadata), Error> {
        let payload = codec::to_payload_bytes(self.opts.serialize_type, args)?;
        let decoding = self.opts.decoding;
        let client = self.client;
        let msg = client.send(self.spec(payload, false))?.ok_or(Error::Shutdown)?;
        decode_reply(msg, decoding)
    }

    /// Start the call and return a handle to wait on later.
    pub fn go<A: Serialize + ?Sized, R: DeserializeOwned>(self, args: &A) -> Result<PendingCall<R>, Error> {
        let payload = codec::to_payload_bytes(self.opts.serialize_type, args)?;
        let decoding = self.opts.decoding;
        let client = self.client;
        let spec = self.spec(payload, false);
        let deadline = spec.deadline;
        let rx = client.start(spec)?;
        let engine = client.inner.engine.clone();
        Ok(PendingCall { rx, deadline, decoding, engine, _reply: std::marker::PhantomData })
    }

    /// Call with an already-serialized payload and return the raw response.
    pub fn call_raw(self, payload: impl Into<Bytes>) -> Result<Message, Error> {
        let client = self.client;
        client.send(self.spec(payload.into(), false))?.ok_or(Error::Shutdown)
    }

    /// Start a call with an already-serialized payload; [`PendingCall::wait_raw`] gives
    /// the raw response. One thread can keep many calls in flight this way (like Go's
    /// `client.Go` with a done channel) instead of blocking a thread per call.
    ///
    /// ```no_run
    /// # fn f(client: &rpcx_std::Client) -> Result<(), rpcx_std::Error> {
    /// use rpcx_std::SerializeType;
    /// let calls: Vec<_> = (0..10)
    ///     .map(|i| client.request("Echo", "Raw").serialize_type(SerializeType::NONE).go_raw(vec![i]))
    ///     .collect::<Result<_, _>>()?;
    /// for (i, call) in calls.into_iter().enumerate() {
    ///     assert_eq!(call.wait_raw()?.payload.as_ref(), &[i as u8]);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn go_raw(self, payload: impl Into<Bytes>) -> Result<PendingCall<Message>, Error> {
        let decoding = self.opts.decoding;
        let client = self.client;
        let spec = self.spec(payload.into(), false);
        let deadline = spec.deadline;
        let rx = client.start(spec)?;
        let engine = client.inner.engine.clone();
        Ok(PendingCall { rx, deadline, decoding, engine, _reply: std::marker::PhantomData })
    }

    /// Send as a oneway request.
    pub fn oneway<A: Serialize + ?Sized>(self, args: &A) -> Result<(), Error> {
        let payload = codec::to_payload_bytes(self.opts.serialize_type, args)?;
        self.oneway_raw(payload)
    }

    /// Send an already-serialized payload as a oneway request.
    pub fn oneway_raw(self, payload: impl Into<Bytes>) -> Result<(), Error> {
        let client = self.client;
        client.send(self.spec(payload.into(), true)).map(|_| ())
    }
}

/// Wait for a call's outcome; past its deadline (plus [`DEADLINE_BACKSTOP`]) give up
/// and cancel it.
fn wait_outcome(rx: &ReplyRx<Outcome>, deadline: Option<Instant>, engine: &Arc<ClientEngine>) -> Outcome {
    let Some(deadline) = deadline else { return rx.wait() };
    let limit = deadline.checked_add(DEADLINE_BACKSTOP).unwrap_or(deadline);
    match rx.wait_timeout(limit.saturating_duration_since(Instant::now())) {
        Some(outcome) => outcome,
        None => {
            engine.with(|m, _| m.withdraw(rx));
            Err(Error::Call(CallError::TimedOut))
        }
    }
}

fn decode_reply<R: DeserializeOwned>(msg: Message, decoding: codec::Decoding) -> Result<(R, Metadata), Error> {
    Ok(codec::decode_reply_with(msg, decoding)?)
}

/// A call started with [`Client::go`]: wait on it for the reply. Dropping it before the
/// reply arrives cancels the call, freeing its in-flight slot.
#[must_use = "a started call's reply is lost unless waited for"]
pub struct PendingCall<R> {
    rx: ReplyRx<Outcome>,
    deadline: Option<Instant>,
    decoding: codec::Decoding,
    engine: Arc<ClientEngine>,
    _reply: std::marker::PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> PendingCall<R> {
    /// Block until the reply arrives.
    pub fn wait(self) -> Result<R, Error> {
        Ok(self.wait_with_metadata()?.0)
    }

    /// Block until the reply arrives; return it with the response metadata.
    pub fn wait_with_metadata(self) -> Result<(R, Metadata), Error> {
        let msg = wait_outcome(&self.rx, self.deadline, &self.engine)?.ok_or(Error::Shutdown)?;
        decode_reply(msg, self.decoding)
    }

    /// Block at most `timeout`; on timeout the call is cancelled and this returns
    /// [`CallError::TimedOut`].
    pub fn wait_timeout(self, timeout: Duration) -> Result<R, Error> {
        match self.rx.wait_timeout(timeout) {
            Some(outcome) => Ok(decode_reply(outcome?.ok_or(Error::Shutdown)?, self.decoding)?.0),
            None => Err(Error::Call(CallError::TimedOut)),
        }
    }
}

impl<R> PendingCall<R> {
    /// Block until the reply arrives and return the raw response message, undecoded
    /// (for calls started with [`RequestBuilder::go_raw`], or to read a typed call's
    /// payload yourself).
    pub fn wait_raw(self) -> Result<Message, Error> {
        wait_outcome(&self.rx, self.deadline, &self.engine)?.ok_or(Error::Shutdown)
    }

    /// Whether the reply (or failure) has arrived, so waiting will not block.
    pub fn is_ready(&self) -> bool {
        self.rx.is_ready()
    }
}

impl<R> Drop for PendingCall<R> {
    fn drop(&mut self) {
        if !self.rx.is_finished() {
            let rx = &self.rx;
            self.engine.with(|m, _| m.withdraw(rx));
        }
    }
}

impl<R> std::fmt::Debug for PendingCall<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall").field("seq", &self.rx.seq()).field("ready", &self.rx.is_ready()).finish()
    }
}

/// The server-push receiver of a [`Client`] (see [`Client::take_push_receiver`]).
#[derive(Debug)]
pub struct PushReceiver(Receiver<Message>);

impl PushReceiver {
    /// The next push, blocking; `None` once the connection has ended and every push
    /// was taken.
    pub fn recv(&self) -> Option<Message> {
        self.0.recv().ok()
    }

    /// The next push, blocking at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Message> {
        self.0.recv_timeout(timeout).ok()
    }

    /// The next push if one is queued.
    pub fn try_recv(&self) -> Option<Message> {
        self.0.try_recv().ok()
    }
}

impl Iterator for PushReceiver {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        self.recv()
    }
}

impl rpcx_core::stub::CallClient for Client {
    fn options(&self, service: &str, method: &str) -> CallOptions {
        self.request(service, method).opts
    }
}

impl rpcx_core::stub::CallBlocking for Client {
    fn call_raw(&self, opts: CallOptions, payload: Bytes) -> Result<Message, Error> {
        RequestBuilder { client: self, opts }.call_raw(payload)
    }
}
