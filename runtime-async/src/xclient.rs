//! `XClient`: one service path over many servers, executing the core's governance
//! plans (selection, fail modes, fan-out, breakers) on any executor. No selection or
//! retry logic lives here: this file only dials, sends, waits and reports results to
//! the core's [`Plan`] and [`Gather`].
//!
//! ## How attempts run
//!
//! The caller's task drives the plan. Each attempt (dial if needed, then send) is a
//! future kept in a small local set that the caller polls together with one runtime
//! timer for the plan's next wake-up: nothing is spawned per attempt, so the same code
//! runs on every runtime. An attempt the plan abandons
//! (a Failbackup loser, a Fork's slower servers, whatever is left at the deadline) is
//! simply dropped: a dial in progress stops, and a call already handed to its
//! connection has its reply slot dropped, which the connection's sweep (once a second)
//! turns into a cancellation that frees its in-flight slot.
//!
//! Connections: one cached [`Client`] per server, dialed on first use. Concurrent
//! first uses of a server share one dial (an `async_lock::OnceCell` per server); a
//! failed dial is shared with those waiting on it too, and then forgotten, so the next
//! use dials afresh. A transport failure drops the connection (it is redialed on next
//! use), and a server that leaves discovery has its connection closed.
//!
//! [`XClient::go`] runs the call on a task of the connection options' runtime and
//! returns an [`XCall`] to await.

use crate::runtime::{Runtime, TimerFuture};
use crate::{Client, ClientOptions, Error};
use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::future;
use rpcx_core::codec;
use rpcx_core::conn::{CallError, CallSpec};
use rpcx_core::govern::{
    Action, AttemptId, Balancer, BreakerConfig, BreakerSet, ClientHooks, DEFAULT_GATHER_TIMEOUT, Discovery,
    EntryResult, FailMode, FailOptions, Failure, Gather, GatherMode, GatherStep, Outcome, Plan, RoundRobin,
    SelectContext, SelectMode, Selector, ServerFilter, ServerKey, SplitMix64,
};
use rpcx_core::wire::{AUTH_KEY, Message, Metadata, SerializeType};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
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
}

/// One server's answer in an [`XClient::inform`].
#[derive(Debug)]
pub struct Receipt<R> {
    /// The server (`network@addr`).
    pub server: ServerKey,
    /// Its own result.
    pub result: Result<R, Error>,
}

struct State {
    balancer: Balancer,
    rng: SplitMix64,
    sticky: Option<ServerKey>,
}

struct Inner<Rt: Runtime> {
    service_path: String,
    discovery: Arc<dyn Discovery>,
    state: Mutex<State>,
    conns: Mutex<HashMap<ServerKey, Arc<Slot<Rt>>>>,
    fail_mode: FailMode,
    fail: FailOptions,
    client_opts: ClientOptions<Rt>,
    auth: Option<String>,
    sticky: bool,
    gather_timeout: Duration,
    hooks: Vec<Arc<dyn ClientHooks>>,
}

/// The cached connection to one server: the first user dials, the others meanwhile wait
/// on the cell and share the result, success or failure. If the dialing attempt is
/// abandoned, a waiting one takes over the dial.
struct Slot<Rt: Runtime> {
    cell: async_lock::OnceCell<Result<Client<Rt>, Error>>,
}

impl<Rt: Runtime> Default for Slot<Rt> {
    fn default() -> Self {
        Self { cell: async_lock::OnceCell::new() }
    }
}

impl<Rt: Runtime> Slot<Rt> {
    /// The client, if the dial finished and the connection is not closing.
    fn live(&self) -> Option<&Client<Rt>> {
        match self.cell.get() {
            Some(Ok(c)) if !c.is_closing() => Some(c),
            _ => None,
        }
    }
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

/// A raw attempt result: the response (`None` for oneway) or why it failed.
type RawResult = Result<Option<Message>, Error>;

/// One attempt's ending: its server, the connection it used (to drop exactly that one),
/// and its result.
struct Ended<Rt: Runtime> {
    server: ServerKey,
    slot: Option<Arc<Slot<Rt>>>,
    result: RawResult,
}

impl<Rt: Runtime> XClient<Rt> {
    /// An XClient for `service_path`.
    pub fn new(service_path: &str, discovery: Arc<dyn Discovery>, opts: XClientOptions<Rt>) -> Self {
        let mut filter = ServerFilter::new();
        if let Some(g) = &opts.group {
            filter = filter.group(g);
        }
        let mut balancer = Balancer::new(opts.selector).with_filter(filter);
        if let Some(b) = opts.breaker {
            balancer = balancer.with_breakers(BreakerSet::new(b));
        }
        XClient(Arc::new(Inner {
            service_path: service_path.to_owned(),
            discovery,
            state: Mutex::new(State { balancer, rng: SplitMix64::new(opts.seed), sticky: None }),
            conns: Mutex::new(HashMap::new()),
            fail_mode: opts.fail_mode,
            fail: opts.fail,
            client_opts: opts.client,
            auth: opts.auth,
            sticky: opts.sticky,
            gather_timeout: opts.gather_timeout,
            hooks: opts.hooks,
        }))
    }

    /// Call `method` with the fail mode, decoding the reply.
    pub async fn call<A: Serialize + ?Sized, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        self.call_with(method, args, Metadata::new(), None).await.map(|(r, _)| r)
    }

    /// Call with request metadata and an optional timeout (sent as `__ServerTimeout`;
    /// default [`ClientOptions::call_timeout`]); returns the reply and the response
    /// metadata.
    pub async fn call_with<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
        metadata: Metadata,
        timeout: Option<Duration>,
    ) -> Result<(R, Metadata), Error> {
        let st = self.0.client_opts.serialize_type;
        let payload = Bytes::from(codec::to_payload(st, args)?);
        let msg = self.call_raw(method, st, payload, metadata, timeout, false).await?;
        decode(msg)
    }

    /// Start a call in the background (Go's `XClient.Go`; the fail mode applies here
    /// too) on the connection options' runtime, and await the returned [`XCall`]
    /// later. The arguments are serialized before this returns. Dropping the `XCall`
    /// cancels the call; [`XCall::detach`] lets it run to its end unobserved.
    pub fn go<A: Serialize + ?Sized, R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<XCall<R>, Error> {
        let st = self.0.client_opts.serialize_type;
        let payload = Bytes::from(codec::to_payload(st, args)?);
        let this = self.clone();
        let method = method.to_owned();
        let (mut tx, rx) = oneshot::channel();
        let detached = Arc::new(AtomicBool::new(false));
        let keep_going = detached.clone();
        self.0.client_opts.runtime.spawn(Box::pin(async move {
            let call = async {
                let msg = this.call_raw(&method, st, payload, Metadata::new(), None, false).await?;
                decode(msg).map(|(r, _)| r)
            };
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

    /// Send a oneway request (Go's `Oneshot`) through the fail mode: returns once it is
    /// written.
    pub async fn oneshot<A: Serialize + ?Sized>(&self, method: &str, args: &A) -> Result<(), Error> {
        let st = self.0.client_opts.serialize_type;
        let payload = Bytes::from(codec::to_payload(st, args)?);
        self.call_raw(method, st, payload, Metadata::new(), None, true).await.map(|_| ())
    }

    /// Send every server the call; succeed only if all succeed (returning one reply).
    /// Every server is waited for (bounded by the gather timeout), so no call is left
    /// running unreported; the error is the first failure's (in server key order).
    pub async fn broadcast<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, Error> {
        let receipts = self.gather(GatherMode::Broadcast, method, args).await?;
        let mut first_ok = None;
        for r in receipts {
            match r.result {
                Ok(v) => first_ok = first_ok.or(Some(v)),
                Err(e) => return Err(e),
            }
        }
        first_ok.ok_or(Error::NoServer)
    }

    /// Send every server the call; the first success wins (the others are cancelled).
    /// Fails only if every server fails (with the last error in server key order).
    pub async fn fork<A: Serialize + ?Sized, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        let receipts = self.gather(GatherMode::Fork, method, args).await?;
        let mut last_err = Error::NoServer;
        for r in receipts {
            match r.result {
                Ok(v) => return Ok(v),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Send every server the call and return each one's own result (a server that
    /// could not be dialed has its dial error; one cut off by the gather timeout, a
    /// timeout).
    pub async fn inform<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<Vec<Receipt<R>>, Error> {
        self.gather(GatherMode::Inform, method, args).await
    }

    /// Close every cached connection gracefully (their in-flight calls finish first).
    /// A later call dials again.
    pub async fn close(&self) {
        let slots: Vec<_> = self.conns().drain().map(|(_, s)| s).collect();
        for s in slots {
            if let Some(Ok(c)) = s.cell.get() {
                c.close().await;
            }
        }
    }

    /// Servers currently connected (for observability and tests), sorted.
    pub fn connected(&self) -> Vec<ServerKey> {
        let mut v: Vec<_> = self.conns().iter().filter(|(_, s)| s.live().is_some()).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<ServerKey, Arc<Slot<Rt>>>> {
        self.0.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spec(
        &self,
        method: &str,
        st: SerializeType,
        payload: Bytes,
        mut md: Metadata,
        deadline: Option<Instant>,
        oneway: bool,
    ) -> CallSpec {
        if let Some(token) = &self.0.auth {
            md.insert(AUTH_KEY, Bytes::copy_from_slice(token.as_bytes()));
        }
        CallSpec {
            service_path: Bytes::copy_from_slice(self.0.service_path.as_bytes()),
            service_method: Bytes::copy_from_slice(method.as_bytes()),
            metadata: md,
            payload,
            serialize_type: st,
            compress: self.0.client_opts.compress,
            oneway,
            deadline,
        }
    }

    /// Execute the fail-mode plan for one call.
    async fn call_raw(
        &self,
        method: &str,
        st: SerializeType,
        payload: Bytes,
        md: Metadata,
        timeout: Option<Duration>,
        oneway: bool,
    ) -> RawResult {
        for h in &self.0.hooks {
            h.pre_call(&self.0.service_path, method).map_err(Error::Hook)?;
        }
        let deadline = timeout.or(self.0.client_opts.call_timeout).and_then(|d| Instant::now().checked_add(d));
        let spec = self.spec(method, st, payload, md, deadline, oneway);
        let mut plan = Plan::new(self.0.fail_mode, FailOptions { deadline, ..self.0.fail });
        let mut running: Racing<'_, Ended<Rt>, Rt> = Racing::new(&self.0.client_opts.runtime);
        let mut results: HashMap<u32, Ended<Rt>> = HashMap::new();
        self.refresh();
        let outcome = loop {
            let now = Instant::now();
            match plan.next(now) {
                Action::Select => {
                    let pick = self.select(now, method);
                    plan.on_selected(now, pick);
                }
                Action::Send { attempt, server } => {
                    if !self.state().balancer.admit(now, &server) {
                        plan.on_result(now, attempt, Outcome::Unavailable);
                        continue;
                    }
                    running.push(attempt.0, self.attempt(server, spec.clone()));
                }
                Action::Wait { until } => match running.next(until).await {
                    Some((id, ended)) => {
                        let now = Instant::now();
                        let o = Outcome::of(&ended.result);
                        self.after_attempt(now, &ended, o);
                        results.insert(id, ended);
                        plan.on_result(now, AttemptId(id), o);
                    }
                    // The plan waits with nothing running and no wake-up time: it could
                    // never end. Its contract rules this out; do not hang if it happens.
                    None if until.is_none() => break Err(Failure::NoServer),
                    None => {}
                },
                Action::Done(finish) => {
                    for a in finish.abandon {
                        running.cancel(a.0);
                    }
                    break finish.result;
                }
            }
        };
        drop(running); // cancels whatever is still running
        let (server, result) = match outcome {
            Ok(s) => {
                let result = results.remove(&s.attempt.0).map_or(Err(Error::NoServer), |e| e.result);
                if self.0.sticky && result.is_ok() {
                    self.state().sticky = Some(s.server.clone());
                }
                (Some(s.server), result)
            }
            Err(Failure::NoServer) => (None, Err(Error::NoServer)),
            Err(Failure::DeadlineExceeded) => (None, Err(Error::Call(CallError::TimedOut))),
            Err(Failure::Attempt { attempt, server, .. }) => {
                // No result is kept for an attempt refused locally (breaker, left discovery).
                let r = results.remove(&attempt.0).map_or(Err(Error::NoServer), |e| e.result);
                (Some(server), r)
            }
            Err(_) => (None, Err(Error::NoServer)),
        };
        for h in &self.0.hooks {
            let text = result.as_ref().err().map(|e| e.to_string());
            h.post_call(&self.0.service_path, method, server.as_ref(), text.as_deref());
        }
        result
    }

    async fn gather<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        mode: GatherMode,
        method: &str,
        args: &A,
    ) -> Result<Vec<Receipt<R>>, Error> {
        let st = self.0.client_opts.serialize_type;
        let payload = Bytes::from(codec::to_payload(st, args)?);
        self.refresh();
        let now = Instant::now();
        let servers = self.state().balancer.fan_out(now);
        if servers.is_empty() {
            return Err(Error::NoServer);
        }
        let deadline = now.checked_add(self.0.gather_timeout);
        let spec = self.spec(method, st, payload, Metadata::new(), deadline, false);
        let mut g: Gather<RawResult> = Gather::new(mode, servers.clone(), now, self.0.gather_timeout);
        let mut running: Racing<'_, Ended<Rt>, Rt> = Racing::new(&self.0.client_opts.runtime);
        for (i, server) in servers.into_iter().enumerate() {
            running.push(i as u32, self.attempt(server, spec.clone()));
        }
        loop {
            match g.next(Instant::now()) {
                GatherStep::Wait { until } => {
                    if let Some((i, ended)) = running.next(Some(until)).await {
                        let now = Instant::now();
                        let o = Outcome::of(&ended.result);
                        self.after_attempt(now, &ended, o);
                        g.on_result(now, i as usize, o, ended.result);
                    }
                }
                GatherStep::Done { abandon } => {
                    for i in abandon {
                        running.cancel(i as u32);
                    }
                    break;
                }
            }
        }
        drop(running);
        Ok(g.into_report()
            .entries
            .into_iter()
            .map(|e| {
                let result = match e.result {
                    EntryResult::Done { value, .. } => value.and_then(decode).map(|(r, _)| r),
                    EntryResult::TimedOut => Err(Error::Call(CallError::TimedOut)),
                    EntryResult::Abandoned => Err(Error::Call(CallError::Cancelled)),
                };
                Receipt { server: e.server, result }
            })
            .collect())
    }

    /// Follow discovery: resync the balancer when the version changed, and close
    /// connections to servers that left.
    fn refresh(&self) {
        let mut st = self.state();
        if st.balancer.refresh(&*self.0.discovery) {
            let gone: Vec<ServerKey> = self.conns().keys().filter(|k| !st.balancer.contains(k)).cloned().collect();
            drop(st);
            for k in gone {
                self.drop_conn(&k, None);
            }
        }
    }

    fn select(&self, now: Instant, method: &str) -> Option<ServerKey> {
        self.refresh();
        let mut guard = self.state();
        let st = &mut *guard;
        if self.0.sticky {
            if let Some(k) = &st.sticky {
                let alive = st.balancer.contains(k) && self.conns().get(k).is_some_and(|s| s.live().is_some());
                if alive {
                    return Some(k.clone());
                }
                st.sticky = None;
            }
        }
        let mut ctx = SelectContext::new(&self.0.service_path, method, &mut st.rng);
        st.balancer.select(now, &mut ctx)
    }

    fn after_attempt(&self, now: Instant, ended: &Ended<Rt>, o: Outcome) {
        self.state().balancer.record(now, &ended.server, o);
        if o.drops_connection() {
            self.drop_conn(&ended.server, ended.slot.as_ref());
        }
    }

    /// Forget and close the cached connection to `server`; with `only`, only if it is
    /// still that one (not a fresh connection another call already redialed).
    fn drop_conn(&self, server: &ServerKey, only: Option<&Arc<Slot<Rt>>>) {
        let slot = {
            let mut conns = self.conns();
            match (conns.get(server), only) {
                (Some(s), Some(o)) if !Arc::ptr_eq(s, o) => None,
                _ => conns.remove(server),
            }
        };
        if let Some(Ok(client)) = slot.as_ref().and_then(|s| s.cell.get()) {
            let client = client.clone();
            self.0.client_opts.runtime.spawn(Box::pin(async move { client.close().await }));
        }
    }

    /// Remove `slot` from the map if it is still `server`'s.
    fn forget(&self, server: &ServerKey, slot: &Arc<Slot<Rt>>) {
        let mut conns = self.conns();
        if conns.get(server).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            conns.remove(server);
        }
    }

    /// The cached connection to `server`, dialing once if needed (or sharing the dial
    /// another attempt started).
    async fn client_for(&self, server: &ServerKey) -> Result<(Arc<Slot<Rt>>, Client<Rt>), Error> {
        for _ in 0..2 {
            let slot = self.conns().entry(server.clone()).or_default().clone();
            let res = slot
                .cell
                .get_or_init(|| async {
                    let t0 = Instant::now();
                    let res = Client::connect(server.as_str(), self.0.client_opts.clone()).await;
                    // The connect time is the RTT sample for latency-weighted selection
                    // (no ICMP privileges needed); a failed dial is a failed measurement.
                    let rtt = res.as_ref().ok().map(|_| t0.elapsed());
                    self.state().balancer.observe_rtt(server, rtt);
                    match &res {
                        Ok(_) => self.0.hooks.iter().for_each(|h| h.conn_created(server)),
                        Err(e) => {
                            // Those waiting on this dial share its error; the next use dials afresh.
                            self.forget(server, &slot);
                            let text = e.to_string();
                            self.0.hooks.iter().for_each(|h| h.conn_create_failed(server, &text));
                        }
                    }
                    res
                })
                .await;
            match res {
                Ok(c) if !c.is_closing() => return Ok((slot.clone(), c.clone())),
                Err(e) => return Err(copy_dial_error(e)),
                // A dead cached connection: forget it (if nobody replaced it yet), redial.
                Ok(_) => self.forget(server, &slot),
            }
        }
        Err(Error::Shutdown)
    }

    /// One attempt: get the connection (dialing if needed) and send.
    async fn attempt(&self, server: ServerKey, spec: CallSpec) -> Ended<Rt> {
        match self.client_for(&server).await {
            Ok((slot, client)) => {
                let result = client.send(spec).await;
                Ended { server, slot: Some(slot), result }
            }
            Err(e) => Ended { server, slot: None, result: Err(e) },
        }
    }
}

/// A copy of a dial error for every attempt that shared the dial (`Error` is not
/// `Clone`).
fn copy_dial_error(e: &Error) -> Error {
    match e {
        Error::Addr(a) => Error::Addr(a.clone()),
        Error::Connect(io) => Error::Connect(std::io::Error::new(io.kind(), io.to_string())),
        Error::ConnectTimeout => Error::ConnectTimeout,
        Error::Tls(s) => Error::Tls(s.clone()),
        Error::Shutdown => Error::Shutdown,
        other => Error::Connect(std::io::Error::other(other.to_string())),
    }
}

fn decode<R: DeserializeOwned>(msg: Option<Message>) -> Result<(R, Metadata), Error> {
    let msg = msg.ok_or(Error::Shutdown)?;
    Ok(codec::decode_reply(msg)?)
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

    /// Abandon attempt `id`: drop its future.
    fn cancel(&mut self, id: u32) {
        self.futs.retain(|(i, _)| *i != id);
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
