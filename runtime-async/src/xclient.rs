//! `XClient`: one service path over many servers. Every policy decision (selection,
//! sticky, fail modes, breakers, hooks, discovery, dial sharing, Broadcast/Fork/Inform
//! and their folds) is the core's [`Governor`]; this file only dials, sends, waits and
//! reports each attempt's result to the governor's [`CallRun`] / [`GatherRun`].
//!
//! ## How attempts run
//!
//! The caller's task drives the plan. Each attempt (dial if needed, then send) is a
//! future kept in a small local set that the caller polls together with one runtime
//! timer for the plan's next wake-up: nothing is spawned per attempt, so the same code
//! runs on every runtime. An attempt the plan abandons
//! (a Failbackup loser, a Fork's slower servers, whatever is left at the deadline) is
//! simply dropped: a dial in progress stops (and hands the dial to a waiter), and a
//! call already handed to its connection has its reply slot dropped, which the
//! connection's sweep (once a second) turns into a cancellation that frees its
//! in-flight slot.
//!
//! Connections: one cached [`Client`] per server, dialed on first use; the governor
//! keeps the cache. Concurrent first uses of a server share one dial and its outcome,
//! success or failure (a failed dial is then forgotten, so the next use dials afresh).
//! A transport failure drops exactly the connection it happened on, and a server that
//! leaves discovery has its connection closed.
//!
//! Every call goes through [`XClient::request`], the same request builder as
//! [`Client::request`] (the core's [`CallOptions`] and its setters): metadata,
//! timeout, serialize type, compression, raw payloads, oneway, `go`. `call`, `call_with`,
//! `go` and `oneshot` are shorthands for it.
//!
//! [`XRequestBuilder::go`] runs the call on a task of the connection options' runtime
//! and returns an [`XCall`] to await.

use crate::runtime::{Runtime, TimerFuture};
use crate::{Client, ClientOptions, Error};
use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::future;
use rpcx_core::codec;
use rpcx_core::conn::{CallOptions, CallSpec};
use rpcx_core::govern::replies;
use rpcx_core::govern::{
    AttemptId, BreakerConfig, CallRun, ClientHooks, ConnHandle, Connect, DEFAULT_GATHER_TIMEOUT, DialTicket, Discovery,
    FailMode, FailOptions, GatherMode, GatherRun, Governor, GovernorOptions, RoundRobin, SelectMode, Selector,
    ServerKey, Step, XPUSH_CAPACITY, XPush,
};
use rpcx_core::wire::{AUTH_KEY, Message, Metadata};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// XClient options. Defaults follow Go: Failover, RoundRobin, 3 retries, 10 ms backup
/// latency, 1-minute bound on Broadcast/Fork/Inform, no breaker. The same names and
/// defaults on every runtime.
pub struct XClientOptions<Rt: Runtime> {
    /// Fail mode.
    pub fail_mode: FailMode,
    /// Selector (default RoundRobin). Use [`select_mode`](Self::select_mode) for Go's
    /// by-number modes.
    pub selector: Box<dyn Selector>,
    /// Retries, retry interval, backup latency.
    pub fail: FailOptions,
    /// Options for each server connection (serialize type, TLS, heartbeat, runtime, ...).
    pub client: ClientOptions<Rt>,
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

impl<Rt: Runtime> Default for XClientOptions<Rt> {
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

impl<Rt: Runtime> std::fmt::Debug for XClientOptions<Rt> {
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

impl<Rt: Runtime> XClientOptions<Rt> {
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

pub use rpcx_core::govern::Receipt;

impl<Rt: Runtime> ConnHandle for Client<Rt> {
    fn is_usable(&self) -> bool {
        !self.is_closing()
    }
    fn heartbeat_rtt(&self) -> Option<std::time::Duration> {
        self.stats().last_heartbeat_rtt
    }
}

struct Inner<Rt: Runtime> {
    service_path: String,
    gov: Mutex<Governor<Client<Rt>>>,
    /// Notified after every dial reports or is abandoned, for attempts waiting on
    /// another attempt's dial to the same server.
    dialed: event_listener::Event,
    client_opts: ClientOptions<Rt>,
    auth: Option<String>,
    /// A bidirectional XClient's push queue.
    pushes: Option<PushTx>,
}

/// A client for one service path over the servers a [`Discovery`] provides: one cached
/// multiplexed connection per server (dialed lazily, concurrent dials de-duplicated,
/// dropped on transport errors and redialed on next use, closed when its server leaves
/// discovery), fail modes, selectors, circuit breakers, Broadcast/Fork/Inform. Cheap to
/// clone; its futures are `Send`.
///
/// ```no_run
/// # async fn f<R: rpcx_async::Runtime>() -> Result<(), rpcx_async::Error> {
/// use rpcx_async::xclient::{XClient, XClientOptions};
/// use rpcx_core::govern::{Instance, MultiDiscovery};
/// use std::sync::Arc;
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// let d = MultiDiscovery::new([Instance::new("tcp@127.0.0.1:8972", ""), Instance::new("tcp@127.0.0.1:8973", "")]);
/// let xc = XClient::<R>::new("Arith", Arc::new(d), XClientOptions::default());
/// let reply: Reply = xc.call("Mul", &Args { A: 10, B: 20 }).await?;
/// # Ok(()) }
/// ```
pub struct XClient<Rt: Runtime>(Arc<Inner<Rt>>);

impl<Rt: Runtime> Clone for XClient<Rt> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<Rt: Runtime> std::fmt::Debug for XClient<Rt> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XClient").field("service_path", &self.0.service_path).finish_non_exhaustive()
    }
}

impl<Rt: Runtime> XClient<Rt> {
    /// An XClient for `service_path`.
    pub fn new(service_path: &str, discovery: Arc<dyn Discovery>, opts: XClientOptions<Rt>) -> Self {
        Self::build(service_path, discovery, opts, None)
    }

    /// A bidirectional XClient (Go's `NewBidirectionalXClient`): besides calls, every
    /// server push on any of its connections arrives on the returned receiver tagged
    /// with its server, and so does the end of each connection
    /// ([`XPush::ConnectionLost`]). Up to [`XPUSH_CAPACITY`] pushes wait there; when it
    /// is full, newer pushes are dropped and counted ([`XPushReceiver::dropped`]).
    pub fn bidirectional(
        service_path: &str,
        discovery: Arc<dyn Discovery>,
        opts: XClientOptions<Rt>,
    ) -> (Self, XPushReceiver) {
        let (tx, rx) = async_channel::bounded(XPUSH_CAPACITY);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let xc = Self::build(service_path, discovery, opts, Some((tx, dropped.clone())));
        (xc, XPushReceiver { rx: Box::pin(rx), dropped })
    }

    fn build(
        service_path: &str,
        discovery: Arc<dyn Discovery>,
        opts: XClientOptions<Rt>,
        pushes: Option<PushTx>,
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
            dialed: event_listener::Event::new(),
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
    /// # async fn f<R: rpcx_async::Runtime>(xc: rpcx_async::XClient<R>) -> Result<(), rpcx_async::Error> {
    /// use rpcx_core::wire::SerializeType;
    /// use std::time::Duration;
    /// let reply = xc
    ///     .request("Echo")
    ///     .metadata("trace", "42")
    ///     .timeout(Duration::from_secs(2))
    ///     .serialize_type(SerializeType::NONE)
    ///     .call_raw(&b"raw bytes"[..])
    ///     .await?;
    /// assert_eq!(reply.payload.as_ref(), b"raw bytes");
    /// # Ok(()) }
    /// ```
    pub fn request(&self, method: &str) -> XRequestBuilder<'_, Rt> {
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
    pub async fn send_raw(&self, msg: Message) -> Result<Option<Message>, Error> {
        let b = self.request(&String::from_utf8_lossy(&msg.service_method)).like_message(&msg);
        if msg.header.is_oneway() {
            b.oneway_raw(msg.payload).await.map(|()| None)
        } else {
            b.call_raw(msg.payload).await.map(Some)
        }
    }

    /// Call `method` with the fail mode, decoding the reply
    /// (`self.request(method).call(args)`).
    pub async fn call<A: Serialize + ?Sized, R: DeserializeOwned + Send>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        self.request(method).call(args).await
    }

    /// Call with request metadata and an optional timeout (sent as `__ServerTimeout`;
    /// default [`ClientOptions::call_timeout`]); returns the reply and the response
    /// metadata. A shorthand for [`request`](Self::request).
    pub async fn call_with<A: Serialize + ?Sized, R: DeserializeOwned + Send>(
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
        b.call_with_metadata(args).await
    }

    /// Start a call in the background (Go's `XClient.Go`; see [`XRequestBuilder::go`]).
    pub fn go<A: Serialize + ?Sized, R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<XCall<R>, Error> {
        self.request(method).go(args)
    }

    /// Send a oneway request (Go's `Oneshot`) through the fail mode: returns once it is
    /// written (`self.request(method).oneway(args)`).
    pub async fn oneshot<A: Serialize + ?Sized>(&self, method: &str, args: &A) -> Result<(), Error> {
        self.request(method).oneway(args).await
    }

    /// Send every server the call; succeed only if all succeed (returning one reply).
    /// Every server is waited for (bounded by the gather timeout), so no call is left
    /// running unreported; the error is the first failure's (in server key order).
    pub async fn broadcast<A: Serialize + ?Sized, R: DeserializeOwned + Send>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        self.gather::<A, R>(GatherMode::Broadcast, method, args).await?.into_broadcast().map(|(r, _)| r)
    }

    /// Send every server the call; the first success wins (the others are cancelled).
    /// Fails only if every server fails (with the last error in server key order).
    pub async fn fork<A: Serialize + ?Sized, R: DeserializeOwned + Send>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        self.gather::<A, R>(GatherMode::Fork, method, args).await?.into_fork().map(|(r, _)| r)
    }

    /// Send every server the call and return each one's own result (a server that
    /// could not be dialed has its dial error; one cut off by the gather timeout, a
    /// timeout).
    pub async fn inform<A: Serialize + ?Sized, R: DeserializeOwned + Send>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<Vec<Receipt<R>>, Error> {
        let receipts = self.gather::<A, R>(GatherMode::Inform, method, args).await?.into_receipts();
        Ok(receipts.into_iter().map(|r| Receipt { server: r.server, result: r.result.map(|(r, _)| r) }).collect())
    }

    /// Close every cached connection gracefully (their in-flight calls finish first);
    /// resolves when all have ended (they close at the same time). A later call dials
    /// again.
    pub async fn close(&self) {
        let conns = self.gov().take_connections();
        conns.iter().for_each(Client::start_close);
        for c in conns {
            c.close().await;
        }
    }

    /// Servers currently connected (for observability and tests), sorted.
    pub fn connected(&self) -> Vec<ServerKey> {
        self.gov().connected()
    }

    fn gov(&self) -> MutexGuard<'_, Governor<Client<Rt>>> {
        self.0.gov.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the governor, then close the connections it retired (outside the
    /// lock, on tasks of their own).
    fn with_gov<O>(&self, f: impl FnOnce(&mut Governor<Client<Rt>>) -> O) -> O {
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
            self.0.client_opts.runtime.spawn(Box::pin(async move { c.close().await }));
        }
        out
    }

    /// Start the governor's run of one call (the `pre_call` hooks run here) and make
    /// the request every attempt sends: the run's deadline, the auth token.
    fn begin<T>(&self, opts: CallOptions, payload: Bytes, oneway: bool) -> Result<(CallRun<T>, CallSpec), Error> {
        let now = Instant::now();
        // The builder made the method from a `&str`.
        let method = std::str::from_utf8(&opts.service_method).unwrap_or_default();
        let key = Some(opts.hash_key.clone().unwrap_or_else(|| payload.clone()));
        let run: CallRun<T> = self.with_gov(|g| g.call_until(method, opts.deadline_at(now)))?.with_hash_key(key);
        let mut spec = opts.into_spec(now, payload, oneway);
        spec.deadline = run.deadline();
        if let Some(token) = &self.0.auth {
            spec.metadata.insert(AUTH_KEY, Bytes::copy_from_slice(token.as_bytes()));
        }
        Ok((run, spec))
    }

    /// Drive one call's run to its end: its attempts raced here, each reported.
    async fn drive<T: Send>(
        &self,
        mut run: CallRun<T>,
        spec: CallSpec,
        decode: fn(Option<Message>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut racing = Racing::new(&self.0.client_opts.runtime);
        loop {
            match self.with_gov(|g| run.poll(g, Instant::now())) {
                Step::Start(s) => racing.push(s.attempt.0, self.attempt(s.server, s.conn, spec.clone(), decode)),
                Step::Wait { until } => {
                    if let Some((id, r)) = racing.next(until).await {
                        self.with_gov(|g| run.report(g, Instant::now(), AttemptId(id), r));
                    }
                }
                Step::Done => break,
            }
        }
        drop(racing); // cancels whatever is still running
        run.take_result().unwrap_or(Err(Error::Shutdown))
    }

    /// Broadcast/Fork/Inform: one attempt per server, folded by the governor's run.
    async fn gather<A: Serialize + ?Sized, R: DeserializeOwned + Send>(
        &self,
        mode: GatherMode,
        method: &str,
        args: &A,
    ) -> Result<GatherRun<(R, Metadata)>, Error> {
        let st = self.0.client_opts.serialize_type;
        let payload = codec::to_payload_bytes(st, args)?;
        let mut run = self.with_gov(|g| g.gather(Instant::now(), mode))?;
        let mut opts = CallOptions::new(&self.0.service_path, method, st, self.0.client_opts.compress, None);
        if let Some(token) = &self.0.auth {
            opts.metadata.insert(AUTH_KEY, Bytes::copy_from_slice(token.as_bytes()));
        }
        let mut spec = opts.into_spec(Instant::now(), payload, false);
        spec.deadline = Some(run.deadline());
        let mut racing = Racing::new(&self.0.client_opts.runtime);
        loop {
            match self.with_gov(|g| run.poll(g, Instant::now())) {
                Step::Start(s) => {
                    racing.push(
                        s.attempt.0,
                        self.attempt(s.server, s.conn, spec.clone(), replies::with_metadata::<R>(codec::Decoding::Go)),
                    );
                }
                Step::Wait { until } => {
                    if let Some((id, r)) = racing.next(until).await {
                        self.with_gov(|g| run.report(g, Instant::now(), AttemptId(id), r));
                    }
                }
                Step::Done => break,
            }
        }
        drop(racing);
        Ok(run)
    }

    /// One attempt: get its connection (dialing, or waiting for another attempt's
    /// dial, as the governor says), send, decode.
    async fn attempt<T>(
        &self,
        server: ServerKey,
        conn: Connect<Client<Rt>>,
        spec: CallSpec,
        decode: fn(Option<Message>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let client = self.resolve(&server, conn).await?;
        decode(client.send(spec).await?)
    }

    async fn resolve(&self, server: &ServerKey, mut conn: Connect<Client<Rt>>) -> Result<Client<Rt>, Error> {
        loop {
            conn = match conn {
                Connect::Ready(c) => return Ok(c),
                Connect::Failed(e) => return Err(e),
                Connect::Dial(ticket) => {
                    // Dropped before the dial ends (the attempt was abandoned): a waiter
                    // takes the dial over.
                    let mut guard = AbandonDial { xc: self, server, ticket: Some(ticket) };
                    let res = Client::connect(server.as_str(), self.0.client_opts.clone()).await;
                    guard.ticket = None;
                    if let (Ok(c), Some((tx, dropped))) = (&res, &self.0.pushes) {
                        if let Some(rx) = c.take_push_receiver() {
                            let (server, tx, dropped) = (server.clone(), tx.clone(), dropped.clone());
                            self.0.client_opts.runtime.spawn(Box::pin(forward_pushes(server, rx, tx, dropped)));
                        }
                    }
                    let next = self.with_gov(|g| g.on_dialed(Instant::now(), server, ticket, res));
                    self.0.dialed.notify(usize::MAX);
                    next
                }
                Connect::Wait(ticket) => {
                    loop {
                        // Listen before looking, so a dial that ends in between still wakes us.
                        let listener = self.0.dialed.listen();
                        if !self.gov().is_dialing(server, ticket) {
                            break;
                        }
                        listener.await;
                    }
                    self.with_gov(|g| g.dial_status(Instant::now(), server, ticket))
                }
            };
        }
    }
}

/// Hands an unfinished dial back to the governor when its attempt is dropped.
struct AbandonDial<'a, Rt: Runtime> {
    xc: &'a XClient<Rt>,
    server: &'a ServerKey,
    ticket: Option<DialTicket>,
}

impl<Rt: Runtime> Drop for AbandonDial<'_, Rt> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.xc.with_gov(|g| g.abandon_dial(self.server, ticket));
            self.xc.0.dialed.notify(usize::MAX);
        }
    }
}

/// A call through an [`XClient`] being configured ([`XClient::request`]): the same
/// setters as [`Client::request`]'s builder (`metadata`, `with_metadata`, `timeout`,
/// `serialize_type`, `compress`), then one finisher. Every finisher goes through the
/// fail mode; the timeout bounds the whole call (every attempt and retry) and reaches
/// each server as `__ServerTimeout`. Raw payloads are sent as given (their serialize
/// type is the builder's), never re-serialized.
#[must_use]
pub struct XRequestBuilder<'a, Rt: Runtime> {
    xc: &'a XClient<Rt>,
    opts: CallOptions,
}

impl<Rt: Runtime> std::fmt::Debug for XRequestBuilder<'_, Rt> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XRequestBuilder").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl<Rt: Runtime> XRequestBuilder<'_, Rt> {
    rpcx_core::call_options_setters!();

    fn encode<A: Serialize + ?Sized>(&self, args: &A) -> Result<Bytes, Error> {
        Ok(codec::to_payload_bytes(self.opts.serialize_type, args)?)
    }

    async fn run<T: Send>(
        self,
        payload: Bytes,
        oneway: bool,
        decode: fn(Option<Message>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (run, spec) = self.xc.begin(self.opts, payload, oneway)?;
        self.xc.drive(run, spec, decode).await
    }

    /// Call and decode the reply.
    pub async fn call<A: Serialize + ?Sized, R: DeserializeOwned + Send>(self, args: &A) -> Result<R, Error> {
        Ok(self.call_with_metadata(args).await?.0)
    }

    /// Call and return the reply with the response metadata.
    pub async fn call_with_metadata<A: Serialize + ?Sized, R: DeserializeOwned + Send>(
        self,
        args: &A,
    ) -> Result<(R, Metadata), Error> {
        let payload = self.encode(args)?;
        {
            let d = replies::with_metadata::<R>(self.opts.decoding);
            self.run(payload, false, d)
        }
        .await
    }

    /// Call with an already-serialized payload and return the raw response.
    pub async fn call_raw(self, payload: impl Into<Bytes>) -> Result<Message, Error> {
        self.run(payload.into(), false, replies::raw).await
    }

    /// Send as a oneway request (Go's `Oneshot`): returns once it is written.
    pub async fn oneway<A: Serialize + ?Sized>(self, args: &A) -> Result<(), Error> {
        let payload = self.encode(args)?;
        self.run(payload, true, replies::sent).await
    }

    /// Send an already-serialized payload as a oneway request.
    pub async fn oneway_raw(self, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.run(payload.into(), true, replies::sent).await
    }

    /// Start the call in the background (Go's `XClient.Go`) on a task of the connection
    /// options' runtime, and await the returned [`XCall`] later. The arguments are
    /// serialized and the `pre_call` hooks run before this returns (a refusal is this
    /// `Err`), the timeout counts from here. Dropping the `XCall` cancels the call;
    /// [`XCall::detach`] lets it run to its end unobserved.
    pub fn go<A: Serialize + ?Sized, R: DeserializeOwned + Send + 'static>(self, args: &A) -> Result<XCall<R>, Error> {
        let payload = self.encode(args)?;
        {
            let d = replies::value::<R>(self.opts.decoding);
            self.spawn(payload, d)
        }
    }

    /// [`go`](Self::go) with an already-serialized payload; the `XCall` gives the raw
    /// response.
    pub fn go_raw(self, payload: impl Into<Bytes>) -> Result<XCall<Message>, Error> {
        self.spawn(payload.into(), replies::raw)
    }

    fn spawn<T: Send + 'static>(
        self,
        payload: Bytes,
        decode: fn(Option<Message>) -> Result<T, Error>,
    ) -> Result<XCall<T>, Error> {
        let this = self.xc.clone();
        let (run, spec) = this.begin(self.opts, payload, false)?;
        let (mut tx, rx) = oneshot::channel();
        let detached = Arc::new(AtomicBool::new(false));
        let keep_going = detached.clone();
        let runtime = this.0.client_opts.runtime.clone();
        runtime.spawn(Box::pin(async move {
            let call = this.drive(run, spec, decode);
            let mut call = std::pin::pin!(call);
            // Run until the call ends, or until the handle is dropped (not detached):
            // then dropping `call` cancels whatever it has in flight.
            let res = future::poll_fn(|cx| {
                if let Poll::Ready(r) = call.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if !keep_going.load(Ordering::SeqCst) && tx.poll_canceled(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            if let Some(r) = res {
                let _ = tx.send(r);
            }
        }));
        Ok(XCall { rx: Some(rx), ready: None, detached })
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The attempts of one plan or gather, raced on the caller's task. Dropping one (or
/// the set) cancels it.
struct Racing<'a, T, Rt: Runtime> {
    futs: Vec<(u32, BoxFuture<'a, T>)>,
    runtime: &'a Rt,
}

impl<'a, T, Rt: Runtime> Racing<'a, T, Rt> {
    fn new(runtime: &'a Rt) -> Self {
        Racing { futs: Vec::new(), runtime }
    }

    fn push(&mut self, id: u32, fut: impl Future<Output = T> + Send + 'a) {
        self.futs.push((id, Box::pin(fut)));
    }

    /// The next attempt to end, or `None` once `until` passes (at once with nothing
    /// running and no `until`). Results already in win over an expired `until`.
    async fn next(&mut self, until: Option<Instant>) -> Option<(u32, T)> {
        if self.futs.is_empty() && until.is_none() {
            return None;
        }
        let mut timer = until.map(|at| TimerFuture(self.runtime.timer(at)));
        future::poll_fn(|cx| {
            for i in 0..self.futs.len() {
                if let Poll::Ready(v) = self.futs[i].1.as_mut().poll(cx) {
                    let (id, _) = self.futs.swap_remove(i);
                    return Poll::Ready(Some((id, v)));
                }
            }
            match timer.as_mut().map(|t| Pin::new(t).poll(cx)) {
                Some(Poll::Ready(_)) => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await
    }
}

/// A call started with [`XClient::go`]: await it for the result. The call runs on a
/// task of the connection options' runtime, through the fail mode. Dropping the handle
/// cancels the call, unless it was [detached](Self::detach).
#[must_use = "dropping an XCall cancels the call; await it or detach it"]
pub struct XCall<R> {
    rx: Option<oneshot::Receiver<Result<R, Error>>>,
    /// The result, once [`is_ready`](Self::is_ready) saw it.
    ready: Option<Result<R, Error>>,
    detached: Arc<AtomicBool>,
}

impl<R> XCall<R> {
    /// Let the call run to its end with nobody awaiting it (its result is dropped).
    pub fn detach(mut self) {
        self.detached.store(true, Ordering::SeqCst);
        // Dropping the receiver after the flag is set no longer cancels the call.
        self.rx = None;
    }

    /// Whether the call has ended, so awaiting it will not wait.
    pub fn is_ready(&mut self) -> bool {
        if self.ready.is_none() {
            self.ready = match self.rx.as_mut().map(|rx| rx.try_recv()) {
                Some(Ok(None)) => None,
                Some(Ok(Some(v))) => Some(v),
                Some(Err(_)) | None => Some(Err(Error::Shutdown)),
            };
        }
        self.ready.is_some()
    }
}

// No field is structurally pinned: the result is only ever moved out by value.
impl<R> Unpin for XCall<R> {}

impl<R> Future for XCall<R> {
    type Output = Result<R, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(v) = self.ready.take() {
            return Poll::Ready(v);
        }
        let Some(rx) = self.rx.as_mut() else { return Poll::Ready(Err(Error::Shutdown)) };
        // The task ends without a result only if its executor dropped it.
        Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Err(Error::Shutdown)))
    }
}

impl<R> std::fmt::Debug for XCall<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XCall").field("detached", &self.detached.load(Ordering::SeqCst)).finish_non_exhaustive()
    }
}

/// Where a bidirectional XClient's connections put their pushes.
type PushTx = (async_channel::Sender<XPush>, Arc<std::sync::atomic::AtomicU64>);

/// Move one connection's pushes to the XClient's receiver, then say it ended.
async fn forward_pushes(
    server: ServerKey,
    rx: crate::PushReceiver,
    tx: async_channel::Sender<XPush>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
) {
    while let Some(message) = rx.recv().await {
        if let Err(e) = tx.try_send(XPush::Message { server: server.clone(), message }) {
            if e.is_closed() {
                return;
            }
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = tx.send(XPush::ConnectionLost { server }).await;
}

/// The pushes of a bidirectional XClient ([`XClient::bidirectional`]).
#[derive(Debug)]
pub struct XPushReceiver {
    rx: Pin<Box<async_channel::Receiver<XPush>>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl XPushReceiver {
    /// The next push or connection end; `None` once the XClient and all its
    /// connections are gone.
    pub async fn recv(&self) -> Option<XPush> {
        self.rx.recv().await.ok()
    }

    /// The next one if one is queued.
    pub fn try_recv(&self) -> Option<XPush> {
        self.rx.try_recv().ok()
    }

    /// Pushes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl futures_lite::Stream for XPushReceiver {
    type Item = XPush;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<XPush>> {
        self.get_mut().rx.as_mut().poll_next(cx)
    }
}

/// A typed stub over an XClient calls its own service (the XClient's discovery picks
/// the servers), through the fail mode.
impl<Rt: Runtime> rpcx_core::stub::CallClient for XClient<Rt> {
    fn options(&self, service: &str, method: &str) -> CallOptions {
        let mut opts = self.request(method).opts;
        opts.service_path = Bytes::copy_from_slice(service.as_bytes());
        opts
    }
}

impl<Rt: Runtime> rpcx_core::stub::CallAsync for XClient<Rt> {
    fn call_raw(&self, opts: CallOptions, payload: Bytes) -> impl Future<Output = Result<Message, Error>> + Send {
        XRequestBuilder { xc: self, opts }.call_raw(payload)
    }
}
