//! `XClient`: one service path over many servers, with blocking threads. Every policy
//! decision (selection, sticky, fail modes, breakers, hooks, discovery, dial sharing,
//! Broadcast/Fork/Inform and their folds) is the core's [`Governor`]; this module only
//! starts attempts on cached connections, dials, waits and reports (see `drive.rs`).
//!
//! The calling thread drives its call. An attempt on a server whose connection is
//! cached starts at once on the calling thread as a [`PendingCall`](crate::PendingCall); an attempt that
//! needs a dial (or waits for another attempt's dial to the same server) hands it to a
//! short-lived helper thread that sends once it has the connection, so a slow or
//! black-holed server never holds up the plan (Failbackup's copy still leaves on time,
//! and the caller's deadline still ends the call).
//!
//! Every call goes through [`XClient::request`], the same request builder as
//! [`Client::request`] (the core's [`CallOptions`] and its setters): metadata,
//! timeout, serialize type, compression, raw payloads, oneway, `go`. `call`, `call_with`,
//! `go` and `oneshot` are shorthands for it.
//!
//! [`XRequestBuilder::go`] starts the call on the calling thread and returns an [`XCall`]
//! without a thread of its own: its first attempt is in flight when `go` returns, and
//! its connection completes it. Like a future, the rest of the plan (a Failover retry,
//! Failbackup's copy) runs on the thread that waits on the `XCall` (or checks
//! [`XCall::is_ready`]). Dropping the `XCall` cancels the call; [`XCall::detach`]
//! hands it to a thread that runs it to its end.

mod drive;

use crate::{Client, ClientOptions, Error};
use bytes::Bytes;
use drive::{Attempts, Fan, Request};
use rpcx_core::codec;
use rpcx_core::conn::{CallError, CallOptions};
use rpcx_core::govern::replies;
use rpcx_core::govern::{
    BreakerConfig, CallRun, ClientHooks, ConnHandle, DEFAULT_GATHER_TIMEOUT, Discovery, FailMode, FailOptions,
    GatherMode, Governor, GovernorOptions, RoundRobin, SelectMode, Selector, ServerKey, XPUSH_CAPACITY, XPush,
};
use rpcx_core::wire::{AUTH_KEY, Message, Metadata};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

pub use rpcx_core::govern::Receipt;

/// XClient options. Defaults follow Go: Failover, RoundRobin, 3 retries, 10 ms backup
/// latency, 1-minute bound on Broadcast/Fork/Inform, no breaker. The same names and
/// defaults as `rpcx-tokio`'s `XClientOptions`.
pub struct XClientOptions {
    /// Fail mode.
    pub fail_mode: FailMode,
    /// Selector (default RoundRobin). Use [`select_mode`](Self::select_mode) for Go's
    /// by-number modes.
    pub selector: Box<dyn Selector>,
    /// Retries, retry interval, backup latency.
    pub fail: FailOptions,
    /// Options for each server connection (serialize type, TLS, heartbeat, ...).
    pub client: ClientOptions,
    /// `__AUTH` token sent with every call.
    pub auth: Option<String>,
    /// Keep only servers of this group (metadata `group`).
    pub group: Option<String>,
    /// One circuit breaker per server.
    pub breaker: Option<BreakerConfig>,
    /// Keep using the last selected server while its connection is up (Go's `Sticky`).
    pub sticky: bool,
    /// Bound on Broadcast/Fork/Inform (Go: 1 minute).
    pub gather_timeout: Duration,
    /// Seed for the selectors' randomness (deterministic selection in tests).
    pub seed: u64,
    /// Client hooks.
    pub hooks: Vec<Arc<dyn ClientHooks>>,
}

impl Default for XClientOptions {
    fn default() -> Self {
        Self {
            fail_mode: FailMode::Failover,
            selector: Box::new(RoundRobin::default()),
            fail: FailOptions::default(),
            client: ClientOptions::default(),
            auth: None,
            group: None,
            breaker: None,
            sticky: false,
            gather_timeout: DEFAULT_GATHER_TIMEOUT,
            seed: 0x5eed,
            hooks: Vec::new(),
        }
    }
}

impl std::fmt::Debug for XClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XClientOptions")
            .field("fail_mode", &self.fail_mode)
            .field("fail", &self.fail)
            .field("client", &self.client)
            .field("group", &self.group)
            .field("breaker", &self.breaker.is_some())
            .field("sticky", &self.sticky)
            .field("gather_timeout", &self.gather_timeout)
            .field("seed", &self.seed)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

impl XClientOptions {
    /// Set the selector from Go's select mode number.
    pub fn select_mode(mut self, mode: SelectMode) -> Self {
        if let Some(s) = mode.build() {
            self.selector = s;
        }
        self
    }

    /// Pick the server closest to this client (Go's `ConfigGeoSelector`): servers
    /// advertise `latitude` and `longitude` in their metadata, and the nearest by
    /// great-circle distance is chosen (ties at random). As in Go, servers without
    /// coordinates are never chosen.
    pub fn geo_selector(mut self, latitude: f64, longitude: f64) -> Self {
        self.selector = Box::new(rpcx_core::govern::Closest::new(latitude, longitude));
        self
    }
}

impl ConnHandle for Client {
    fn is_usable(&self) -> bool {
        !self.is_closing()
    }

    fn heartbeat_rtt(&self) -> Option<std::time::Duration> {
        self.stats().last_heartbeat_rtt
    }
}

struct Inner {
    service_path: String,
    gov: Mutex<Governor<Client>>,
    /// Notified after every dial reports, for attempts waiting on another's dial.
    dialed: Condvar,
    client_opts: ClientOptions,
    auth: Option<String>,
    /// A bidirectional XClient's push queue.
    pub(crate) pushes: Option<(std::sync::mpsc::SyncSender<XPush>, Arc<std::sync::atomic::AtomicU64>)>,
}

/// A client for one service path over the servers a [`Discovery`] provides: one cached
/// multiplexed connection per server (dialed lazily, concurrent dials de-duplicated,
/// dropped on transport errors and redialed on next use, closed when its server leaves
/// discovery), fail modes, selectors, circuit breakers, Broadcast/Fork/Inform. Cheap to
/// clone; `Send + Sync`, so any number of threads may call through one `XClient`.
///
/// ```no_run
/// # fn f() -> Result<(), rpcx_std::Error> {
/// use rpcx_std::xclient::{XClient, XClientOptions};
/// use rpcx_std::core::govern::{Instance, MultiDiscovery};
/// use std::sync::Arc;
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// let d = MultiDiscovery::new([Instance::new("tcp@127.0.0.1:8972", ""), Instance::new("tcp@127.0.0.1:8973", "")]);
/// let xc = XClient::new("Arith", Arc::new(d), XClientOptions::default());
/// let reply: Reply = xc.call("Mul", &Args { A: 10, B: 20 })?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct XClient(Arc<Inner>);

impl std::fmt::Debug for XClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XClient").field("service_path", &self.0.service_path).finish_non_exhaustive()
    }
}

impl XClient {
    /// An XClient for `service_path`.
    pub fn new(service_path: &str, discovery: Arc<dyn Discovery>, opts: XClientOptions) -> Self {
        Self::build(service_path, discovery, opts, None)
    }

    /// A bidirectional XClient (Go's `NewBidirectionalXClient`): besides calls, every
    /// server push on any of its connections arrives on the returned receiver tagged
    /// with its server, and so does the end of each connection
    /// ([`XPush::ConnectionLost`]). Up to [`XPUSH_CAPACITY`] pushes wait there; when it
    /// is full, newer pushes are dropped and counted ([`XPushReceiver::dropped`]). Each
    /// connection's pushes are moved by a thread of their own.
    pub fn bidirectional(
        service_path: &str,
        discovery: Arc<dyn Discovery>,
        opts: XClientOptions,
    ) -> (Self, XPushReceiver) {
        let (tx, rx) = std::sync::mpsc::sync_channel(XPUSH_CAPACITY);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let xc = Self::build(service_path, discovery, opts, Some((tx, dropped.clone())));
        (xc, XPushReceiver { rx, dropped })
    }

    fn build(
        service_path: &str,
        discovery: Arc<dyn Discovery>,
        opts: XClientOptions,
        pushes: Option<(std::sync::mpsc::SyncSender<XPush>, Arc<std::sync::atomic::AtomicU64>)>,
    ) -> Self {
        let policy = GovernorOptions {
            fail_mode: opts.fail_mode,
            selector: opts.selector,
            fail: opts.fail,
            group: opts.group,
            breaker: opts.breaker,
            sticky: opts.sticky,
            gather_timeout: opts.gather_timeout,
            seed: opts.seed,
            hooks: opts.hooks.clone(),
        };
        // The XClient's hooks run on every connection it dials, after the client's own.
        let mut client_opts = opts.client;
        client_opts.connection.hooks = std::mem::take(&mut client_opts.connection.hooks).extended(&opts.hooks.into());
        XClient(Arc::new(Inner {
            service_path: service_path.to_owned(),
            gov: Mutex::new(Governor::new(service_path, discovery, policy)),
            dialed: Condvar::new(),
            client_opts,
            auth: opts.auth,
            pushes,
        }))
    }

    /// A call of `method` through the fail mode, to configure before it is made: the
    /// same builder as [`Client::request`] (metadata, timeout, serialize type,
    /// compression), finished by [`call`](XRequestBuilder::call),
    /// [`call_with_metadata`](XRequestBuilder::call_with_metadata),
    /// [`call_raw`](XRequestBuilder::call_raw), [`oneway`](XRequestBuilder::oneway),
    /// [`oneway_raw`](XRequestBuilder::oneway_raw), [`go`](XRequestBuilder::go) or
    /// [`go_raw`](XRequestBuilder::go_raw). Defaults come from the connection options
    /// ([`ClientOptions::serialize_type`], [`ClientOptions::compress`],
    /// [`ClientOptions::call_timeout`]).
    ///
    /// ```no_run
    /// # fn f(xc: rpcx_std::XClient) -> Result<(), rpcx_std::Error> {
    /// use rpcx_std::SerializeType;
    /// use std::time::Duration;
    /// let reply = xc
    ///     .request("Echo")
    ///     .metadata("trace", "42")
    ///     .timeout(Duration::from_secs(2))
    ///     .serialize_type(SerializeType::NONE)
    ///     .call_raw(&b"raw bytes"[..])?;
    /// assert_eq!(reply.payload.as_ref(), b"raw bytes");
    /// # Ok(()) }
    /// ```
    pub fn request(&self, method: &str) -> XRequestBuilder<'_> {
        let o = &self.0.client_opts;
        XRequestBuilder {
            xc: self,
            opts: CallOptions::new(&self.0.service_path, method, o.serialize_type, o.compress, o.call_timeout),
        }
    }

    /// Send a whole request message through the fail mode (Go's `XClient.SendRaw`):
    /// its method, metadata, serialize type, compression, oneway flag and payload are
    /// used as they are (its service path too, when not empty); the client's call
    /// timeout applies. Returns the raw response, or `None` for a oneway request once
    /// it is written.
    pub fn send_raw(&self, msg: Message) -> Result<Option<Message>, Error> {
        let b = self.request(&String::from_utf8_lossy(&msg.service_method)).like_message(&msg);
        if msg.header.is_oneway() {
            b.oneway_raw(msg.payload).map(|()| None)
        } else {
            b.call_raw(msg.payload).map(Some)
        }
    }

    /// Call `method` with the fail mode, decoding the reply. Blocks until it ends
    /// (`self.request(method).call(args)`).
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        self.request(method).call(args)
    }

    /// Call with request metadata and an optional timeout (sent as `__ServerTimeout`;
    /// default [`ClientOptions::call_timeout`]); returns the reply and the response
    /// metadata. A shorthand for [`request`](Self::request).
    pub fn call_with<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
        metadata: Metadata,
        timeout: Option<Duration>,
    ) -> Result<(R, Metadata), Error> {
        let mut b = self.request(method).with_metadata(metadata);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.call_with_metadata(args)
    }

    /// Start a call (Go's `XClient.Go`; see [`XRequestBuilder::go`]).
    pub fn go<A: Serialize + ?Sized, R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<XCall<R>, Error> {
        self.request(method).go(args)
    }

    /// Send a oneway request (Go's `Oneshot`) through the fail mode: returns once it is
    /// written (`self.request(method).oneway(args)`).
    pub fn oneshot<A: Serialize + ?Sized>(&self, method: &str, args: &A) -> Result<(), Error> {
        self.request(method).oneway(args)
    }

    /// Send every server the call; succeed only if all succeed (returning one reply).
    /// Every server is waited for (bounded by the gather timeout), so no call is left
    /// running unreported; the error is the first failure's (in server key order).
    pub fn broadcast<A: Serialize + ?Sized, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        self.gather(GatherMode::Broadcast, method, args)?.into_broadcast().map(|(r, _)| r)
    }

    /// Send every server the call; the first success wins (the others are cancelled).
    /// Fails only if every server fails (with the last error in server key order).
    pub fn fork<A: Serialize + ?Sized, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        self.gather(GatherMode::Fork, method, args)?.into_fork().map(|(r, _)| r)
    }

    /// Send every server the call and return each one's own result (a server that
    /// could not be dialed has its dial error; one cut off by the gather timeout, a
    /// timeout).
    pub fn inform<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<Vec<Receipt<R>>, Error> {
        let receipts = self.gather(GatherMode::Inform, method, args)?.into_receipts();
        Ok(receipts.into_iter().map(|r| Receipt { server: r.server, result: r.result.map(|(r, _)| r) }).collect())
    }

    /// Close every cached connection gracefully (their in-flight calls finish first).
    /// Returns at once. A later call dials again.
    pub fn close(&self) {
        let conns = self.gov().take_connections();
        for c in conns {
            c.close();
        }
    }

    /// Servers currently connected (for observability and tests), sorted.
    pub fn connected(&self) -> Vec<ServerKey> {
        self.gov().connected()
    }

    fn gov(&self) -> MutexGuard<'_, Governor<Client>> {
        self.0.gov.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the governor, then close the connections it retired (outside the
    /// lock).
    fn with_gov<O>(&self, f: impl FnOnce(&mut Governor<Client>) -> O) -> O {
        let mut retired = Vec::new();
        let out = {
            let mut g = self.gov();
            let out = f(&mut g);
            while let Some(c) = g.poll_retired() {
                retired.push(c);
            }
            out
        };
        for c in retired {
            c.close();
        }
        out
    }

    /// The request every attempt sends, with the auth token.
    fn request_of(&self, opts: CallOptions, payload: Bytes, deadline: Option<Instant>, oneway: bool) -> Request {
        let mut metadata = opts.metadata;
        if let Some(token) = &self.0.auth {
            metadata.insert(AUTH_KEY, Bytes::copy_from_slice(token.as_bytes()));
        }
        Request {
            // The builder made the method from a `&str`.
            method: std::str::from_utf8(&opts.service_method).unwrap_or_default().to_owned(),
            metadata,
            payload,
            serialize_type: opts.serialize_type,
            compress: opts.compress,
            oneway,
            deadline,
        }
    }

    /// A call's run (the `pre_call` hooks run here) and attempts, nothing started yet.
    fn start<T>(
        &self,
        opts: CallOptions,
        payload: Bytes,
        oneway: bool,
        decode: fn(Option<Message>) -> Result<T, Error>,
    ) -> Result<Pending<T>, Error> {
        let method = std::str::from_utf8(&opts.service_method).unwrap_or_default();
        let key = Some(opts.hash_key.clone().unwrap_or_else(|| payload.clone()));
        let run: CallRun<T> =
            self.with_gov(|g| g.call_until(method, opts.deadline_at(Instant::now())))?.with_hash_key(key);
        let req = self.request_of(opts, payload, run.deadline(), oneway);
        Ok(Pending { run, attempts: Attempts::new(self.clone(), req, decode) })
    }

    fn gather<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        mode: GatherMode,
        method: &str,
        args: &A,
    ) -> Result<rpcx_core::govern::GatherRun<(R, Metadata)>, Error> {
        let o = &self.0.client_opts;
        let payload = Bytes::from(codec::to_payload(o.serialize_type, args)?);
        let run = self.with_gov(|g| g.gather(Instant::now(), mode))?;
        let opts = CallOptions::new(&self.0.service_path, method, o.serialize_type, o.compress, None);
        let req = self.request_of(opts, payload, Some(run.deadline()), false);
        let mut fan = Fan(run, mode != GatherMode::Fork);
        Attempts::new(self.clone(), req, replies::with_metadata::<R>(codec::Decoding::Go)).drive(&mut fan, true, None);
        Ok(fan.0)
    }
}

/// A call through an [`XClient`] being configured ([`XClient::request`]): the same
/// setters as [`Client::request`]'s builder (`metadata`, `with_metadata`, `timeout`,
/// `serialize_type`, `compress`), then one finisher. Every finisher goes through the
/// fail mode; the timeout bounds the whole call (every attempt and retry) and reaches
/// each server as `__ServerTimeout`. Raw payloads are sent as given (their serialize
/// type is the builder's), never re-serialized.
#[must_use]
pub struct XRequestBuilder<'a> {
    xc: &'a XClient,
    opts: CallOptions,
}

impl std::fmt::Debug for XRequestBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XRequestBuilder").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl XRequestBuilder<'_> {
    rpcx_core::call_options_setters!();

    fn encode<A: Serialize + ?Sized>(&self, args: &A) -> Result<Bytes, Error> {
        Ok(Bytes::from(codec::to_payload(self.opts.serialize_type, args)?))
    }

    fn run<T>(self, payload: Bytes, oneway: bool, decode: fn(Option<Message>) -> Result<T, Error>) -> Result<T, Error> {
        let mut call = self.xc.start(self.opts, payload, oneway, decode)?;
        call.attempts.drive(&mut call.run, true, None);
        call.run.take_result().unwrap_or(Err(Error::Shutdown))
    }

    /// Call and decode the reply. Blocks until the call ends.
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(self, args: &A) -> Result<R, Error> {
        Ok(self.call_with_metadata(args)?.0)
    }

    /// Call and return the reply with the response metadata.
    pub fn call_with_metadata<A: Serialize + ?Sized, R: DeserializeOwned>(
        self,
        args: &A,
    ) -> Result<(R, Metadata), Error> {
        let payload = self.encode(args)?;
        {
            let d = replies::with_metadata::<R>(self.opts.decoding);
            self.run(payload, false, d)
        }
    }

    /// Call with an already-serialized payload and return the raw response.
    pub fn call_raw(self, payload: impl Into<Bytes>) -> Result<Message, Error> {
        self.run(payload.into(), false, replies::raw)
    }

    /// Send as a oneway request (Go's `Oneshot`): returns once it is written.
    pub fn oneway<A: Serialize + ?Sized>(self, args: &A) -> Result<(), Error> {
        let payload = self.encode(args)?;
        self.run(payload, true, replies::sent)
    }

    /// Send an already-serialized payload as a oneway request.
    pub fn oneway_raw(self, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.run(payload.into(), true, replies::sent)
    }

    /// Start the call (Go's `XClient.Go`) and wait on the returned [`XCall`] later. The
    /// arguments are serialized, the `pre_call` hooks run (a refusal is this `Err`) and
    /// the first attempt is started before this returns; the timeout counts from here.
    /// Dropping the `XCall` cancels the call; [`XCall::detach`] lets it run to its end
    /// unobserved.
    pub fn go<A: Serialize + ?Sized, R: DeserializeOwned + Send + 'static>(self, args: &A) -> Result<XCall<R>, Error> {
        let payload = self.encode(args)?;
        {
            let d = replies::value::<R>(self.opts.decoding);
            self.start(payload, d)
        }
    }

    /// [`go`](Self::go) with an already-serialized payload; the `XCall` gives the raw
    /// response.
    pub fn go_raw(self, payload: impl Into<Bytes>) -> Result<XCall<Message>, Error> {
        self.start(payload.into(), replies::raw)
    }

    fn start<T: Send + 'static>(
        self,
        payload: Bytes,
        decode: fn(Option<Message>) -> Result<T, Error>,
    ) -> Result<XCall<T>, Error> {
        let mut call = self.xc.start(self.opts, payload, false, decode)?;
        call.attempts.drive(&mut call.run, false, None);
        Ok(XCall { call: Mutex::new(call) })
    }
}

/// A call in progress: its run and its attempts.
struct Pending<T> {
    run: CallRun<T>,
    attempts: Attempts<T>,
}

impl<T> Pending<T> {
    /// Drive on; the result once the call is over.
    fn drive(&mut self, block: bool, limit: Option<Instant>) -> Option<Result<T, Error>> {
        if !self.run.is_done() && !self.attempts.drive(&mut self.run, block, limit) {
            return None;
        }
        Some(self.run.take_result().unwrap_or(Err(Error::Shutdown)))
    }
}

/// A call started with [`XClient::go`]: wait on it for the result. Its first attempt is
/// in flight from `go` on; the rest of its plan runs on the thread that waits (or calls
/// [`is_ready`](Self::is_ready)). Dropping it cancels the call, unless it was
/// [detached](Self::detach).
#[must_use = "dropping an XCall cancels the call; wait on it or detach it"]
pub struct XCall<R> {
    call: Mutex<Pending<R>>,
}

impl<R: Send + 'static> XCall<R> {
    fn lock(&self) -> MutexGuard<'_, Pending<R>> {
        self.call.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Block until the call ends.
    pub fn wait(self) -> Result<R, Error> {
        let mut call = self.call.into_inner().unwrap_or_else(|p| p.into_inner());
        call.drive(true, None).unwrap_or(Err(Error::Shutdown))
    }

    /// Block at most `timeout`; then give up with [`CallError::TimedOut`], cancelling
    /// the call.
    pub fn wait_timeout(self, timeout: Duration) -> Result<R, Error> {
        let limit = Instant::now().checked_add(timeout);
        let mut call = self.call.into_inner().unwrap_or_else(|p| p.into_inner());
        match call.drive(true, limit) {
            Some(r) => r,
            None => Err(Error::Call(CallError::TimedOut)),
        }
    }

    /// Whether the call has ended, so [`wait`](Self::wait) will not block. Moves the
    /// plan on as far as it can without waiting.
    pub fn is_ready(&self) -> bool {
        let mut guard = self.lock();
        let call = &mut *guard;
        call.run.is_done() || call.attempts.drive(&mut call.run, false, None)
    }

    /// Let the call run to its end on a thread of its own, with nobody waiting on it
    /// (its result is dropped).
    pub fn detach(self) {
        let mut call = self.call.into_inner().unwrap_or_else(|p| p.into_inner());
        if call.run.is_done() {
            return;
        }
        let spawned = thread::Builder::new().name("rpcx-xclient-detached".into()).spawn(move || {
            let _ = call.drive(true, None);
        });
        // If no thread could be started, the call (dropped with the closure) is cancelled.
        drop(spawned);
    }
}

impl<R> std::fmt::Debug for XCall<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = self.call.lock().map(|c| c.run.is_done()).unwrap_or(true);
        f.debug_struct("XCall").field("done", &done).finish()
    }
}

/// Move one connection's pushes to a bidirectional XClient's receiver (on a thread of
/// their own), then say it ended.
pub(crate) fn forward_pushes(
    server: ServerKey,
    rx: crate::PushReceiver,
    tx: std::sync::mpsc::SyncSender<XPush>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
) {
    let spawned = std::thread::Builder::new().name("rpcx-xclient-pushes".into()).spawn(move || {
        while let Some(message) = rx.recv() {
            match tx.try_send(XPush::Message { server: server.clone(), message }) {
                Ok(()) => {}
                Err(std::sync::mpsc::TrySendError::Full(_)) => {
                    dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
            }
        }
        let _ = tx.send(XPush::ConnectionLost { server });
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the push thread of a bidirectional XClient");
    }
}

/// The pushes of a bidirectional XClient ([`XClient::bidirectional`]).
#[derive(Debug)]
pub struct XPushReceiver {
    rx: std::sync::mpsc::Receiver<XPush>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl XPushReceiver {
    /// The next push or connection end, blocking; `None` once the XClient and all its
    /// connections are gone.
    pub fn recv(&self) -> Option<XPush> {
        self.rx.recv().ok()
    }

    /// The next one, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<XPush> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next one if one is queued.
    pub fn try_recv(&self) -> Option<XPush> {
        self.rx.try_recv().ok()
    }

    /// Pushes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A typed stub over an XClient calls its own service (the XClient's discovery picks
/// the servers), through the fail mode.
impl rpcx_core::stub::CallClient for XClient {
    fn options(&self, service: &str, method: &str) -> CallOptions {
        let mut opts = self.request(method).opts;
        opts.service_path = Bytes::copy_from_slice(service.as_bytes());
        opts
    }
}

impl rpcx_core::stub::CallBlocking for XClient {
    fn call_raw(&self, opts: CallOptions, payload: Bytes) -> Result<Message, Error> {
        XRequestBuilder { xc: self, opts }.call_raw(payload)
    }
}
