//! `XClient`: one service path over many servers, executing the core's governance
//! plans (selection, fail modes, fan-out, breakers) with blocking threads. No selection
//! or retry logic lives here: this file only dials, sends, waits and reports results to
//! the core's [`Plan`] and [`Gather`].
//!
//! ## How attempts run
//!
//! The calling thread drives the plan. An attempt on a server whose connection is
//! cached starts at once on the calling thread as a [`PendingCall`] (non-blocking); an
//! attempt that needs a dial hands the dial to a short-lived helper thread, so a slow or
//! black-holed server never holds up the plan (Failbackup's copy still leaves on time,
//! and the caller's deadline still ends the call). Dial results come back on one
//! `std::sync::mpsc` channel.
//!
//! Waiting: when a single call is in flight and the plan has nothing to do before that
//! call's deadline (Failover, Failfast, Failtry; Broadcast and Inform, which wait for
//! every server anyway), the caller simply blocks on the call's reply slot. When the
//! first of several results matters (Failbackup, Fork), the caller looks at its calls'
//! reply slots and naps on the dial channel between looks, 50 µs at first, doubling up
//! to 1 ms while nothing happens: the blocking [`Client`] offers no wait-for-any, and a
//! call blocked on by another thread could not be cancelled. That keeps every abandoned
//! attempt cancellable: dropping its [`PendingCall`] cancels it, freeing its in-flight
//! slot (a Failbackup loser, a Fork's slower servers, whatever is left at the deadline)
//! at once, or at the connection's next sweep (within a second) for a call dropped
//! before the connection had numbered it.
//!
//! [`XClient::go`] returns before the call ends, so it serializes the arguments once
//! and runs the plan on a background thread with raw requests ([`Client::send`]); under
//! Failbackup each of its attempts gets a thread, and an abandoned one ends with its
//! reply or deadline rather than being cancelled.

use crate::{Client, ClientOptions, Error, PendingCall, RequestBuilder};
use bytes::Bytes;
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
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// First nap while waiting for the first of several results.
const POLL_MIN: Duration = Duration::from_micros(50);
/// Longest nap while waiting for the first of several results.
const POLL_MAX: Duration = Duration::from_millis(1);

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

struct Inner {
    service_path: String,
    discovery: Arc<dyn Discovery>,
    state: Mutex<State>,
    conns: Mutex<HashMap<ServerKey, Arc<Slot>>>,
    fail_mode: FailMode,
    fail: FailOptions,
    client_opts: ClientOptions,
    auth: Option<String>,
    sticky: bool,
    gather_timeout: Duration,
    hooks: Vec<Arc<dyn ClientHooks>>,
}

/// The cached connection to one server. The thread that puts a slot in the map dials;
/// others wanting the same server meanwhile wait on the condvar and share the result.
/// A failed dial takes its slot out of the map, so the next use dials afresh.
struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

enum SlotState {
    Dialing,
    Ready(Client),
    Failed(Error),
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client, if the dial finished and the connection is not closing.
    fn live(&self) -> Option<Client> {
        match &*self.lock() {
            SlotState::Ready(c) if !c.is_closing() => Some(c.clone()),
            _ => None,
        }
    }

    fn set(&self, state: SlotState) {
        *self.lock() = state;
        self.cv.notify_all();
    }
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

type CallResult<R> = Result<(R, Metadata), Error>;

impl XClient {
    /// An XClient for `service_path`.
    pub fn new(service_path: &str, discovery: Arc<dyn Discovery>, opts: XClientOptions) -> Self {
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

    /// Call `method` with the fail mode, decoding the reply. Blocks until it ends.
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        self.call_with(method, args, Metadata::new(), None).map(|(r, _)| r)
    }

    /// Call with request metadata and an optional timeout (sent as `__ServerTimeout`;
    /// default [`ClientOptions::call_timeout`]); returns the reply and the response
    /// metadata.
    pub fn call_with<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
        metadata: Metadata,
        timeout: Option<Duration>,
    ) -> Result<(R, Metadata), Error> {
        let deadline = self.deadline(timeout);
        let md = self.with_auth(metadata);
        let start = |client: &Client, _: &Sender<Event>, _: usize| -> Result<Started<R>, Error> {
            Ok(Started::Pending(self.request(client, method, &md, deadline).go(args)?))
        };
        self.execute(method, deadline, &start, decode_raw::<R>)
    }

    /// Start a call in the background (Go's `XClient.Go`; the fail mode applies here
    /// too, as in `rpcx-tokio`) and wait on the returned handle later. The arguments are
    /// serialized before this returns. Dropping the handle does not cancel the call.
    pub fn go<A: Serialize + ?Sized, R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<XCall<R>, Error> {
        let st = self.0.client_opts.serialize_type;
        let payload = Bytes::from(codec::to_payload(st, args)?);
        let this = self.clone();
        let method = method.to_owned();
        let shared: Arc<CallSlot<R>> = Arc::new(CallSlot { value: Mutex::new(None), cv: Condvar::new() });
        let deliver = Deliver(shared.clone());
        thread::Builder::new()
            .name("rpcx-xclient-go".into())
            .spawn(move || deliver.put(this.call_payload(&method, st, payload).map(|(r, _)| r)))
            .map_err(Error::Connect)?;
        Ok(XCall { shared })
    }

    /// Send a oneway request (Go's `Oneshot`) through the fail mode: returns once it is
    /// written.
    pub fn oneshot<A: Serialize + ?Sized>(&self, method: &str, args: &A) -> Result<(), Error> {
        let deadline = self.deadline(None);
        let md = self.with_auth(Metadata::new());
        let start = |client: &Client, _: &Sender<Event>, _: usize| -> Result<Started<()>, Error> {
            let res = self.request(client, method, &md, deadline).oneway(args).map(|()| ((), Metadata::new()));
            // Nothing is decoded: a codec error here is the arguments'.
            Ok(Started::done(res, Outcome::Invalid))
        };
        self.execute(method, deadline, &start, |_| Ok(((), Metadata::new()))).map(|_| ())
    }

    /// Send every server the call; succeed only if all succeed (returning one reply).
    /// Every server is waited for (bounded by the gather timeout), so no call is left
    /// running unreported; the error is the first failure's (in server key order).
    pub fn broadcast<A: Serialize + ?Sized, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        let receipts = self.gather(GatherMode::Broadcast, method, args)?;
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
    pub fn fork<A: Serialize + ?Sized, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        let receipts = self.gather(GatherMode::Fork, method, args)?;
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
    pub fn inform<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<Vec<Receipt<R>>, Error> {
        self.gather(GatherMode::Inform, method, args)
    }

    /// Close every cached connection gracefully (their in-flight calls finish first).
    /// Returns at once. A later call dials again.
    pub fn close(&self) {
        let slots: Vec<_> = self.conns().drain().map(|(_, s)| s).collect();
        for s in slots {
            if let SlotState::Ready(c) = &*s.lock() {
                c.close();
            }
        }
    }

    /// Servers currently connected (for observability and tests), sorted.
    pub fn connected(&self) -> Vec<ServerKey> {
        let mut v: Vec<_> = self.conns().iter().filter(|(_, s)| s.live().is_some()).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<ServerKey, Arc<Slot>>> {
        self.0.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        timeout.or(self.0.client_opts.call_timeout).and_then(|d| Instant::now().checked_add(d))
    }

    fn with_auth(&self, mut md: Metadata) -> Metadata {
        if let Some(token) = &self.0.auth {
            md.insert(AUTH_KEY, Bytes::copy_from_slice(token.as_bytes()));
        }
        md
    }

    /// A typed request on `client` (its serialize type and compression are the
    /// XClient's), due at `deadline`.
    fn request<'c>(
        &self,
        client: &'c Client,
        method: &str,
        md: &Metadata,
        deadline: Option<Instant>,
    ) -> RequestBuilder<'c> {
        let b = client.request(&self.0.service_path, method).with_metadata(md.clone());
        match deadline {
            Some(d) => b.timeout(d.saturating_duration_since(Instant::now())),
            None => b,
        }
    }

    /// [`go`](Self::go)'s body: the plan over raw requests with a pre-serialized payload.
    fn call_payload<R: DeserializeOwned>(&self, method: &str, st: SerializeType, payload: Bytes) -> CallResult<R> {
        let deadline = self.deadline(None);
        let spec = CallSpec {
            service_path: Bytes::copy_from_slice(self.0.service_path.as_bytes()),
            service_method: Bytes::copy_from_slice(method.as_bytes()),
            metadata: self.with_auth(Metadata::new()),
            payload,
            serialize_type: st,
            compress: self.0.client_opts.compress,
            oneway: false,
            deadline,
        };
        // Only Failbackup ever has two attempts in flight; the others send inline.
        let threaded = self.0.fail_mode == FailMode::Failbackup;
        let start = |client: &Client, events: &Sender<Event>, id: usize| -> Result<Started<R>, Error> {
            if !threaded {
                return Ok(Started::done(client.send(spec.clone()).and_then(decode_raw::<R>), Outcome::Remote));
            }
            let (client, spec, events) = (client.clone(), spec.clone(), events.clone());
            thread::Builder::new()
                .name("rpcx-xclient-attempt".into())
                .spawn(move || {
                    let result = client.send(spec);
                    let _ = events.send(Event::Raw { id, result });
                })
                .map_err(Error::Connect)?;
            Ok(Started::Thread)
        };
        self.execute(method, deadline, &start, decode_raw::<R>)
    }

    /// Execute the fail-mode plan for one call.
    fn execute<R: DeserializeOwned>(
        &self,
        method: &str,
        deadline: Option<Instant>,
        start: &StartFn<'_, R>,
        decode: fn(Option<Message>) -> CallResult<R>,
    ) -> CallResult<R> {
        for h in &self.0.hooks {
            h.pre_call(&self.0.service_path, method).map_err(Error::Hook)?;
        }
        let mut plan = Plan::new(self.0.fail_mode, FailOptions { deadline, ..self.0.fail });
        let mut attempts = Attempts::new(self, start, decode, deadline);
        let mut results: HashMap<usize, Ended<R>> = HashMap::new();
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
                    attempts.launch(attempt.0 as usize, server);
                }
                Action::Wait { until } => match attempts.next(until, false) {
                    Some(ended) => {
                        let now = Instant::now();
                        self.after_attempt(now, &ended);
                        let (id, o) = (ended.id, ended.outcome);
                        results.insert(id, ended);
                        plan.on_result(now, AttemptId(id as u32), o);
                    }
                    // The plan waits with nothing running and no wake-up time: it could
                    // never end. Its contract rules this out; do not spin if it happens.
                    None if until.is_none() && attempts.is_idle() => break Err(Failure::NoServer),
                    None => {}
                },
                Action::Done(finish) => {
                    for a in finish.abandon {
                        attempts.cancel(a.0 as usize);
                    }
                    break finish.result;
                }
            }
        };
        drop(attempts); // cancels whatever is still running
        let (server, result) = match outcome {
            Ok(s) => {
                let ended = results.remove(&(s.attempt.0 as usize));
                let result = ended.map_or(Err(Error::NoServer), |e| e.result);
                if self.0.sticky && result.is_ok() {
                    self.state().sticky = Some(s.server.clone());
                }
                (Some(s.server), result)
            }
            Err(Failure::NoServer) => (None, Err(Error::NoServer)),
            Err(Failure::DeadlineExceeded) => (None, Err(Error::Call(CallError::TimedOut))),
            Err(Failure::Attempt { attempt, server, .. }) => {
                // No result is kept for an attempt refused locally (breaker, left discovery).
                let r = results.remove(&(attempt.0 as usize)).map_or(Err(Error::NoServer), |e| e.result);
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

    fn gather<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        mode: GatherMode,
        method: &str,
        args: &A,
    ) -> Result<Vec<Receipt<R>>, Error> {
        self.refresh();
        let now = Instant::now();
        let servers = self.state().balancer.fan_out(now);
        if servers.is_empty() {
            return Err(Error::NoServer);
        }
        let deadline = now.checked_add(self.0.gather_timeout);
        let md = self.with_auth(Metadata::new());
        let start = |client: &Client, _: &Sender<Event>, _: usize| -> Result<Started<R>, Error> {
            Ok(Started::Pending(self.request(client, method, &md, deadline).go(args)?))
        };
        let mut g: Gather<CallResult<R>> = Gather::new(mode, servers.clone(), now, self.0.gather_timeout);
        let every = mode != GatherMode::Fork;
        let mut attempts = Attempts::new(self, &start, decode_raw::<R>, deadline);
        for (i, server) in servers.into_iter().enumerate() {
            attempts.launch(i, server);
        }
        loop {
            // Results that are in already count, even when the deadline just passed.
            while let Some(ended) = attempts.next(Some(Instant::now()), false) {
                let now = Instant::now();
                self.after_attempt(now, &ended);
                g.on_result(now, ended.id, ended.outcome, ended.result);
            }
            match g.next(Instant::now()) {
                GatherStep::Wait { until } => {
                    // Broadcast and Inform wait for every server: blocking on one call
                    // at a time is as good as waiting for the first.
                    if let Some(ended) = attempts.next(Some(until), every) {
                        let now = Instant::now();
                        self.after_attempt(now, &ended);
                        g.on_result(now, ended.id, ended.outcome, ended.result);
                    }
                }
                GatherStep::Done { abandon } => {
                    for i in abandon {
                        attempts.cancel(i);
                    }
                    break;
                }
            }
        }
        drop(attempts);
        Ok(g.into_report()
            .entries
            .into_iter()
            .map(|e| {
                let result = match e.result {
                    EntryResult::Done { value, .. } => value.map(|(r, _)| r),
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

    fn after_attempt<R>(&self, now: Instant, ended: &Ended<R>) {
        self.state().balancer.record(now, &ended.server, ended.outcome);
        if ended.outcome.drops_connection() {
            self.drop_conn(&ended.server, ended.slot.as_ref());
        }
    }

    /// Forget and close the cached connection to `server`; with `only`, only if it is
    /// still that one (not a fresh connection another call already redialed).
    fn drop_conn(&self, server: &ServerKey, only: Option<&Arc<Slot>>) {
        let slot = {
            let mut conns = self.conns();
            match (conns.get(server), only) {
                (Some(s), Some(o)) if !Arc::ptr_eq(s, o) => None,
                _ => conns.remove(server),
            }
        };
        if let Some(s) = slot {
            if let SlotState::Ready(c) = &*s.lock() {
                c.close();
            }
        }
    }

    /// The cached live connection to `server`, without waiting.
    fn cached(&self, server: &ServerKey) -> Option<(Arc<Slot>, Client)> {
        let slot = self.conns().get(server).cloned()?;
        let client = slot.live()?;
        Some((slot, client))
    }

    /// The cached connection to `server`, dialing once if needed (or waiting for the
    /// dial another thread started). Blocks for at most about the connect timeout.
    fn client_for(&self, server: &ServerKey) -> Result<(Arc<Slot>, Client), Error> {
        for _ in 0..2 {
            let (slot, dial) = {
                let mut conns = self.conns();
                match conns.get(server) {
                    Some(s) => (s.clone(), false),
                    None => {
                        let s = Arc::new(Slot { state: Mutex::new(SlotState::Dialing), cv: Condvar::new() });
                        conns.insert(server.clone(), s.clone());
                        (s, true)
                    }
                }
            };
            if dial {
                let t0 = Instant::now();
                let dialed = Client::connect(server.as_str(), self.0.client_opts.clone());
                // The connect time is the RTT sample for latency-weighted selection (no
                // ICMP privileges needed); a failed dial is a failed measurement.
                let rtt = dialed.as_ref().ok().map(|_| t0.elapsed());
                self.state().balancer.observe_rtt(server, rtt);
                return match dialed {
                    Ok(client) => {
                        slot.set(SlotState::Ready(client.clone()));
                        self.0.hooks.iter().for_each(|h| h.conn_created(server));
                        Ok((slot, client))
                    }
                    Err(e) => {
                        slot.set(SlotState::Failed(copy_dial_error(&e)));
                        self.forget(server, &slot);
                        let text = e.to_string();
                        self.0.hooks.iter().for_each(|h| h.conn_create_failed(server, &text));
                        Err(e)
                    }
                };
            }
            let mut st = slot.lock();
            while matches!(*st, SlotState::Dialing) {
                st = slot.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            match &*st {
                SlotState::Ready(c) if !c.is_closing() => return Ok((slot.clone(), c.clone())),
                SlotState::Failed(e) => return Err(copy_dial_error(e)),
                // A dead cached connection: forget it (if nobody replaced it yet), redial.
                _ => {
                    drop(st);
                    self.forget(server, &slot);
                }
            }
        }
        Err(Error::Shutdown)
    }

    /// Remove `slot` from the map if it is still `server`'s.
    fn forget(&self, server: &ServerKey, slot: &Arc<Slot>) {
        let mut conns = self.conns();
        if conns.get(server).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            conns.remove(server);
        }
    }
}

/// A dial error for the threads that waited on someone else's dial (`Error` is not
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

fn decode_raw<R: DeserializeOwned>(msg: Option<Message>) -> CallResult<R> {
    let msg = msg.ok_or(Error::Shutdown)?;
    Ok(codec::decode_reply(msg)?)
}

/// Starts one attempt on a connected client: `(client, channel for thread results,
/// attempt id)`.
type StartFn<'a, R> = dyn Fn(&Client, &Sender<Event>, usize) -> Result<Started<R>, Error> + 'a;

/// How an attempt got going.
enum Started<R> {
    /// A call in flight; dropping it cancels it.
    Pending(PendingCall<R>),
    /// Already over (a oneway write, an inline blocking send).
    Done(CallResult<R>, Outcome),
    /// Running on its own thread, which reports an [`Event::Raw`].
    Thread,
}

impl<R> Started<R> {
    fn done(result: CallResult<R>, codec: Outcome) -> Self {
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::from_error(e, codec),
        };
        Started::Done(result, outcome)
    }
}

/// What helper threads report to the thread driving a plan or gather.
enum Event {
    Dialed { id: usize, server: ServerKey, result: Result<(Arc<Slot>, Client), Error> },
    Raw { id: usize, result: Result<Option<Message>, Error> },
}

/// One attempt's ending.
struct Ended<R> {
    id: usize,
    server: ServerKey,
    /// The connection it used, if it got one (to drop exactly that one).
    slot: Option<Arc<Slot>>,
    outcome: Outcome,
    result: CallResult<R>,
}

struct Running<R> {
    id: usize,
    server: ServerKey,
    slot: Arc<Slot>,
    call: PendingCall<R>,
}

/// The attempts of one plan or gather: dialing, running, ended and not yet reported.
/// Dropping it cancels the calls still running.
struct Attempts<'a, R> {
    xc: &'a XClient,
    start: &'a StartFn<'a, R>,
    decode: fn(Option<Message>) -> CallResult<R>,
    /// The calls' deadline.
    deadline: Option<Instant>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    dialing: Vec<usize>,
    running: Vec<Running<R>>,
    threads: Vec<(usize, ServerKey, Arc<Slot>)>,
    ended: VecDeque<Ended<R>>,
}

impl<'a, R: DeserializeOwned> Attempts<'a, R> {
    fn new(
        xc: &'a XClient,
        start: &'a StartFn<'a, R>,
        decode: fn(Option<Message>) -> CallResult<R>,
        deadline: Option<Instant>,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        Attempts {
            xc,
            start,
            decode,
            deadline,
            tx,
            rx,
            dialing: Vec::new(),
            running: Vec::new(),
            threads: Vec::new(),
            ended: VecDeque::new(),
        }
    }

    /// Whether nothing is in progress or waiting to be reported.
    fn is_idle(&self) -> bool {
        self.dialing.is_empty() && self.running.is_empty() && self.threads.is_empty() && self.ended.is_empty()
    }

    /// Start attempt `id` on `server`: at once on a cached connection, else after a
    /// dial on a helper thread.
    fn launch(&mut self, id: usize, server: ServerKey) {
        if let Some((slot, client)) = self.xc.cached(&server) {
            self.begin(id, server, slot, client);
            return;
        }
        let (xc, tx, key) = (self.xc.clone(), self.tx.clone(), server.clone());
        let spawned = thread::Builder::new().name("rpcx-xclient-dial".into()).spawn(move || {
            let result = xc.client_for(&key);
            let _ = tx.send(Event::Dialed { id, server: key, result });
        });
        match spawned {
            Ok(_) => self.dialing.push(id),
            Err(e) => self.ended.push_back(Ended {
                id,
                server,
                slot: None,
                outcome: Outcome::Dial,
                result: Err(Error::Connect(e)),
            }),
        }
    }

    fn begin(&mut self, id: usize, server: ServerKey, slot: Arc<Slot>, client: Client) {
        match (self.start)(&client, &self.tx, id) {
            Ok(Started::Pending(call)) => self.running.push(Running { id, server, slot, call }),
            Ok(Started::Thread) => self.threads.push((id, server, slot)),
            Ok(Started::Done(result, outcome)) => {
                self.ended.push_back(Ended { id, server, slot: Some(slot), outcome, result })
            }
            Err(e) => {
                let outcome = Outcome::from_error(&e, Outcome::Invalid);
                self.ended.push_back(Ended { id, server, slot: Some(slot), outcome, result: Err(e) });
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Dialed { id, server, result } => {
                let Some(pos) = self.dialing.iter().position(|&d| d == id) else { return };
                self.dialing.remove(pos);
                match result {
                    Ok((slot, client)) => self.begin(id, server, slot, client),
                    Err(e) => {
                        let outcome = Outcome::from_error(&e, Outcome::Invalid);
                        self.ended.push_back(Ended { id, server, slot: None, outcome, result: Err(e) });
                    }
                }
            }
            Event::Raw { id, result } => {
                let Some(pos) = self.threads.iter().position(|t| t.0 == id) else { return };
                let (id, server, slot) = self.threads.remove(pos);
                let result = result.and_then(self.decode);
                let outcome = result.as_ref().err().map_or(Outcome::Ok, |e| Outcome::from_error(e, Outcome::Remote));
                self.ended.push_back(Ended { id, server, slot: Some(slot), outcome, result });
            }
        }
    }

    fn finish(r: Running<R>) -> Ended<R> {
        let result = r.call.wait_with_metadata();
        let outcome = result.as_ref().err().map_or(Outcome::Ok, |e| Outcome::from_error(e, Outcome::Remote));
        Ended { id: r.id, server: r.server, slot: Some(r.slot), outcome, result }
    }

    /// The next attempt to end, or `None` once `until` passes. With `every`, the caller
    /// waits for every attempt anyway, so blocking on any one of them is fine.
    fn next(&mut self, until: Option<Instant>, every: bool) -> Option<Ended<R>> {
        let mut nap = POLL_MIN;
        loop {
            if let Some(e) = self.ended.pop_front() {
                return Some(e);
            }
            if let Some(i) = self.running.iter().position(|r| r.call.is_ready()) {
                return Some(Self::finish(self.running.remove(i)));
            }
            if let Ok(ev) = self.rx.try_recv() {
                self.on_event(ev);
                continue;
            }
            let now = Instant::now();
            let left = match until {
                Some(u) if now >= u => return None,
                Some(u) => Some(u - now),
                None => None,
            };
            let helpers = !self.dialing.is_empty() || !self.threads.is_empty();
            if self.running.is_empty() {
                if !helpers {
                    // Nothing can end before `until` (a retry interval): sleep it out.
                    if let Some(left) = left {
                        thread::sleep(left);
                    }
                    return None;
                }
                // Only helper threads are at work: their reports wake us.
                let ev = match left {
                    Some(left) => self.rx.recv_timeout(left).ok(),
                    None => self.rx.recv().ok(),
                };
                if let Some(ev) = ev {
                    self.on_event(ev);
                }
                continue;
            }
            // One call and nothing to do before its deadline (or the caller wants every
            // call): block on its reply slot. The call ends by its deadline.
            let covers = until.is_none_or(|u| self.deadline.is_some_and(|d| u >= d));
            if !helpers && (every || (self.running.len() == 1 && covers)) {
                return Some(Self::finish(self.running.remove(0)));
            }
            // The first of several: look again after a nap (helper reports end it early).
            match self.rx.recv_timeout(left.map_or(nap, |l| l.min(nap))) {
                Ok(ev) => {
                    self.on_event(ev);
                    nap = POLL_MIN;
                }
                Err(_) => nap = (nap * 2).min(POLL_MAX),
            }
        }
    }

    /// Abandon attempt `id`: cancel its call, or ignore its dial's or thread's report.
    fn cancel(&mut self, id: usize) {
        self.running.retain(|r| r.id != id);
        self.dialing.retain(|&d| d != id);
        self.threads.retain(|t| t.0 != id);
        self.ended.retain(|e| e.id != id);
    }
}

/// Where [`XClient::go`]'s background thread leaves the result.
struct CallSlot<R> {
    value: Mutex<Option<Result<R, Error>>>,
    cv: Condvar,
}

/// The background thread's end: delivers the result, or `Shutdown` if the thread
/// ends without one.
struct Deliver<R>(Arc<CallSlot<R>>);

impl<R> Deliver<R> {
    fn put(&self, v: Result<R, Error>) {
        let mut g = self.0.value.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(v);
            self.0.cv.notify_all();
        }
    }
}

impl<R> Drop for Deliver<R> {
    fn drop(&mut self) {
        self.put(Err(Error::Shutdown));
    }
}

/// A call started with [`XClient::go`]: wait on it for the result. The call runs on a
/// background thread through the fail mode; dropping the handle does not stop it.
#[must_use = "a started call's reply is lost unless waited for"]
pub struct XCall<R> {
    shared: Arc<CallSlot<R>>,
}

impl<R> XCall<R> {
    /// Block until the call ends.
    pub fn wait(self) -> Result<R, Error> {
        let mut g = self.shared.value.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = g.take() {
                return v;
            }
            g = self.shared.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Block at most `timeout`; then give up with [`CallError::TimedOut`] (the call
    /// itself goes on until its own end).
    pub fn wait_timeout(self, timeout: Duration) -> Result<R, Error> {
        let deadline = Instant::now().checked_add(timeout);
        let mut g = self.shared.value.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = g.take() {
                return v;
            }
            let left = deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(Error::Call(CallError::TimedOut));
            }
            g = self.shared.cv.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Whether the call has ended, so [`wait`](Self::wait) will not block.
    pub fn is_ready(&self) -> bool {
        self.shared.value.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

impl<R> std::fmt::Debug for XCall<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XCall").field("ready", &self.is_ready()).finish()
    }
}
