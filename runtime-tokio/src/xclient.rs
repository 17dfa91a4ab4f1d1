//! `XClient`: one service path over many servers, executing the core's governance
//! plans (selection, fail modes, fan-out, breakers). No selection or retry logic lives
//! here: this file only dials, sends, waits and reports results to the plan.

use crate::{Client, ClientOptions, Error};
use bytes::Bytes;
use rpcx_core::codec;
use rpcx_core::conn::CallSpec;
use rpcx_core::govern::{
    Action, Balancer, BreakerConfig, BreakerSet, ClientHooks, DEFAULT_GATHER_TIMEOUT, Discovery, EntryResult, FailMode,
    FailOptions, Failure, Gather, GatherMode, GatherStep, Outcome, Plan, RoundRobin, SelectContext, SelectMode,
    Selector, ServerFilter, ServerKey, SplitMix64,
};
use rpcx_core::wire::{AUTH_KEY, Message, Metadata, SerializeType};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, mpsc};
use tokio::task::JoinHandle;

/// XClient options. Defaults follow Go: Failover, RoundRobin, 3 retries, 10 ms backup
/// latency, 1-minute bound on Broadcast/Fork/Inform, no breaker.
pub struct XClientOptions {
    /// Fail mode.
    pub fail_mode: FailMode,
    /// Selector (default RoundRobin). Use [`SelectMode::build`] for Go's by-number modes.
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
    conns: Mutex<HashMap<ServerKey, Arc<OnceCell<Client>>>>,
    fail_mode: FailMode,
    fail: FailOptions,
    client_opts: ClientOptions,
    auth: Option<String>,
    sticky: bool,
    gather_timeout: Duration,
    hooks: Vec<Arc<dyn ClientHooks>>,
}

/// A client for one service path over the servers a [`Discovery`] provides: one cached
/// multiplexed connection per server (dialed lazily, concurrent dials de-duplicated,
/// dropped on transport errors and redialed on next use), fail modes, selectors,
/// circuit breakers, Broadcast/Fork/Inform. Cheap to clone.
///
/// ```no_run
/// # async fn f() -> Result<(), rpcx_tokio::Error> {
/// use rpcx_tokio::xclient::{XClient, XClientOptions};
/// use rpcx_tokio::core::govern::{Instance, MultiDiscovery};
/// use std::sync::Arc;
/// #[derive(serde::Serialize)] #[allow(non_snake_case)] struct Args { A: i64, B: i64 }
/// #[derive(serde::Deserialize)] #[allow(non_snake_case)] struct Reply { C: i64 }
///
/// let d = MultiDiscovery::new([Instance::new("tcp@127.0.0.1:8972", ""), Instance::new("tcp@127.0.0.1:8973", "")]);
/// let xc = XClient::new("Arith", Arc::new(d), XClientOptions::default());
/// let reply: Reply = xc.call("Mul", &Args { A: 10, B: 20 }).await?;
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

    /// Call with request metadata and an optional timeout (sent as `__ServerTimeout`);
    /// returns the reply and the response metadata.
    pub async fn call_with<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
        metadata: Metadata,
        timeout: Option<Duration>,
    ) -> Result<(R, Metadata), Error> {
        let st = self.0.client_opts.serialize_type;
        let payload = Bytes::from(codec::to_payload(st, args)?);
        let msg = self.call_raw(method, st, payload, metadata, timeout, false).await?.ok_or(Error::Shutdown)?;
        Ok(codec::decode_reply(msg)?)
    }

    /// Start a call in the background (Go's `XClient.Go`; the fail mode applies here too)
    /// and await its handle later.
    pub fn go<A: Serialize + ?Sized, R: DeserializeOwned + Send + 'static>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<JoinHandle<Result<R, Error>>, Error> {
        let st = self.0.client_opts.serialize_type;
        let payload = Bytes::from(codec::to_payload(st, args)?);
        let this = self.clone();
        let method = method.to_owned();
        Ok(tokio::spawn(async move {
            let msg =
                this.call_raw(&method, st, payload, Metadata::new(), None, false).await?.ok_or(Error::Shutdown)?;
            Ok(codec::from_payload(msg.header.serialize_type(), &msg.payload)?)
        }))
    }

    /// Send a oneway request (Go's `Oneshot`) through the fail mode.
    pub async fn oneshot<A: Serialize + ?Sized>(&self, method: &str, args: &A) -> Result<(), Error> {
        let st = self.0.client_opts.serialize_type;
        let payload = Bytes::from(codec::to_payload(st, args)?);
        self.call_raw(method, st, payload, Metadata::new(), None, true).await.map(|_| ())
    }

    /// Send every server the call; succeed only if all succeed (returning one reply).
    /// Every server is waited for (bounded by the gather timeout), so no call is left
    /// running unreported; the error is the first failure's.
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

    /// Send every server the call; the first success wins (the others are abandoned).
    /// Fails only if every server fails (with the last error).
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

    /// Send every server the call and return each one's own result.
    pub async fn inform<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<Vec<Receipt<R>>, Error> {
        self.gather(GatherMode::Inform, method, args).await
    }

    /// Close every cached connection.
    pub async fn close(&self) {
        let cells: Vec<_> = self.0.conns.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, c)| c).collect();
        for c in cells {
            if let Some(client) = c.get() {
                client.close().await;
            }
        }
    }

    /// Servers currently connected (for observability and tests).
    pub fn connected(&self) -> Vec<ServerKey> {
        let conns = self.0.conns.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> =
            conns.iter().filter(|(_, c)| c.get().is_some_and(|c| !c.is_closing())).map(|(k, _)| k.clone()).collect();
        v.sort();
        v
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
    ) -> Result<Option<Message>, Error> {
        for h in &self.0.hooks {
            h.pre_call(&self.0.service_path, method).map_err(Error::Hook)?;
        }
        let deadline = timeout.or(self.0.client_opts.call_timeout).map(|d| Instant::now() + d);
        let spec = self.spec(method, st, payload, md, deadline, oneway);
        let mut plan = Plan::new(self.0.fail_mode, FailOptions { deadline, ..self.0.fail });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut running: HashMap<u32, JoinHandle<()>> = HashMap::new();
        let mut results: HashMap<u32, (ServerKey, Result<Option<Message>, Error>)> = HashMap::new();
        self.refresh();
        let outcome = loop {
            let now = Instant::now();
            match plan.next(now) {
                Action::Select => {
                    let pick = self.select(now, method);
                    plan.on_selected(now, pick);
                }
                Action::Send { attempt, server } => {
                    let admitted = self.0.state.lock().unwrap_or_else(|p| p.into_inner()).balancer.admit(now, &server);
                    if !admitted {
                        plan.on_result(now, attempt, Outcome::Unavailable);
                        continue;
                    }
                    let this = self.clone();
                    let spec = spec.clone();
                    let tx = tx.clone();
                    let id = attempt.0;
                    running.insert(
                        id,
                        tokio::spawn(async move {
                            let res = this.attempt(&server, spec).await;
                            let _ = tx.send((id, server, res));
                        }),
                    );
                }
                Action::Wait { until } => {
                    let got = match until {
                        Some(t) => tokio::time::timeout_at(t.into(), rx.recv()).await.ok().flatten(),
                        None => rx.recv().await,
                    };
                    if let Some((id, server, res)) = got {
                        running.remove(&id);
                        let now = Instant::now();
                        let o = Outcome::of(&res);
                        self.after_attempt(now, &server, o);
                        results.insert(id, (server, res));
                        plan.on_result(now, rpcx_core::govern::AttemptId(id), o);
                    }
                }
                Action::Done(finish) => {
                    for a in finish.abandon {
                        if let Some(h) = running.remove(&a.0) {
                            h.abort();
                        }
                    }
                    break finish.result;
                }
            }
        };
        let (server, result) = match outcome {
            Ok(s) => {
                let (server, r) = results.remove(&s.attempt.0).expect("winning attempt has a result");
                if self.0.sticky {
                    self.0.state.lock().unwrap_or_else(|p| p.into_inner()).sticky = Some(server.clone());
                }
                (Some(server), r)
            }
            Err(Failure::NoServer) => (None, Err(Error::NoServer)),
            Err(Failure::DeadlineExceeded) => (None, Err(Error::Call(rpcx_core::conn::CallError::TimedOut))),
            Err(Failure::Attempt { attempt, server, .. }) => {
                let r = results.remove(&attempt.0).map(|(_, r)| r).unwrap_or(Err(Error::NoServer));
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
        let servers = self.0.state.lock().unwrap_or_else(|p| p.into_inner()).balancer.fan_out(now);
        if servers.is_empty() {
            return Err(Error::NoServer);
        }
        let deadline = now + self.0.gather_timeout;
        let spec = self.spec(method, st, payload, Metadata::new(), Some(deadline), false);
        let mut g: Gather<Result<Option<Message>, Error>> =
            Gather::new(mode, servers.clone(), now, self.0.gather_timeout);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut running = Vec::new();
        for (i, server) in servers.into_iter().enumerate() {
            let this = self.clone();
            let spec = spec.clone();
            let tx = tx.clone();
            running.push(tokio::spawn(async move {
                let res = this.attempt(&server, spec).await;
                let _ = tx.send((i, server, res));
            }));
        }
        loop {
            match g.next(Instant::now()) {
                GatherStep::Wait { until } => {
                    if let Ok(Some((i, server, res))) = tokio::time::timeout_at(until.into(), rx.recv()).await {
                        let now = Instant::now();
                        let o = Outcome::of(&res);
                        self.after_attempt(now, &server, o);
                        g.on_result(now, i, o, res);
                    }
                }
                GatherStep::Done { abandon } => {
                    for i in abandon {
                        running[i].abort();
                    }
                    break;
                }
            }
        }
        let report = g.into_report();
        Ok(report
            .entries
            .into_iter()
            .map(|e| {
                let result = match e.result {
                    EntryResult::Done { value, .. } => value.and_then(|m| {
                        let m = m.ok_or(Error::Shutdown)?;
                        Ok(codec::from_payload(m.header.serialize_type(), &m.payload)?)
                    }),
                    EntryResult::TimedOut => Err(Error::Call(rpcx_core::conn::CallError::TimedOut)),
                    EntryResult::Abandoned => Err(Error::Call(rpcx_core::conn::CallError::Cancelled)),
                };
                Receipt { server: e.server, result }
            })
            .collect())
    }

    /// Follow discovery: resync the balancer when the version changed, and close
    /// connections to servers that left.
    fn refresh(&self) {
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.balancer.refresh(&*self.0.discovery) {
            let gone: Vec<ServerKey> = {
                let conns = self.0.conns.lock().unwrap_or_else(|p| p.into_inner());
                conns.keys().filter(|k| !st.balancer.contains(k)).cloned().collect()
            };
            drop(st);
            for k in gone {
                self.drop_conn(&k);
            }
        }
    }

    fn select(&self, now: Instant, method: &str) -> Option<ServerKey> {
        self.refresh();
        let mut guard = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *guard;
        if self.0.sticky {
            if let Some(k) = &st.sticky {
                let alive = st.balancer.contains(k)
                    && self
                        .0
                        .conns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(k)
                        .and_then(|c| c.get())
                        .is_some_and(|c| !c.is_closing());
                if alive {
                    return Some(k.clone());
                }
                st.sticky = None;
            }
        }
        let mut ctx = SelectContext::new(&self.0.service_path, method, &mut st.rng);
        st.balancer.select(now, &mut ctx)
    }

    fn after_attempt(&self, now: Instant, server: &ServerKey, o: Outcome) {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner()).balancer.record(now, server, o);
        if o.drops_connection() {
            self.drop_conn(server);
        }
    }

    fn drop_conn(&self, server: &ServerKey) {
        let cell = self.0.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(server);
        if let Some(client) = cell.and_then(|c| c.get().cloned()) {
            tokio::spawn(async move { client.close().await });
        }
    }

    /// The cached connection to `server`, dialing once if needed.
    async fn client_for(&self, server: &ServerKey) -> Result<Client, Error> {
        for _ in 0..2 {
            let cell = {
                let mut conns = self.0.conns.lock().unwrap_or_else(|p| p.into_inner());
                conns.entry(server.clone()).or_insert_with(|| Arc::new(OnceCell::new())).clone()
            };
            let client = cell
                .get_or_try_init(|| async {
                    let t0 = Instant::now();
                    let res = Client::connect(server.as_str(), self.0.client_opts.clone()).await;
                    // The connect time is the RTT sample for latency-weighted selection
                    // (no ICMP privileges needed); a failed dial is a failed measurement.
                    let rtt = res.as_ref().ok().map(|_| t0.elapsed());
                    self.0.state.lock().unwrap_or_else(|p| p.into_inner()).balancer.observe_rtt(server, rtt);
                    match &res {
                        Ok(_) => self.0.hooks.iter().for_each(|h| h.conn_created(server)),
                        Err(e) => self.0.hooks.iter().for_each(|h| h.conn_create_failed(server, &e.to_string())),
                    }
                    res
                })
                .await?
                .clone();
            if !client.is_closing() {
                return Ok(client);
            }
            // A dead cached connection: forget it (if nobody replaced it yet) and redial.
            let mut conns = self.0.conns.lock().unwrap_or_else(|p| p.into_inner());
            if conns.get(server).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                conns.remove(server);
            }
        }
        Err(Error::Shutdown)
    }

    async fn attempt(&self, server: &ServerKey, spec: CallSpec) -> Result<Option<Message>, Error> {
        let client = self.client_for(server).await?;
        client.send(spec).await
    }
}
