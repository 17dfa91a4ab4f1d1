//! The whole `XClient` policy as one stepping machine: the shared [`Governor`] (discovery,
//! balancer, sticky server, hooks, the connection cache's dial state) and per call a
//! [`CallRun`] (fail modes) or a [`GatherRun`] (Broadcast / Fork / Inform).

use super::balancer::Balancer;
use super::breaker::{BreakerConfig, BreakerSet};
use super::discovery::{Discovery, ServerFilter, ServerKey};
use super::failmode::{FailMode, FailOptions};
use super::outcome::Outcome;
use super::selector::{RoundRobin, SelectContext, Selector};
use super::{GatherMode, SplitMix64};
use crate::conn::ClientHooks;
use crate::error::Error;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::run::{CallRun, GatherRun};

/// A runtime's handle to one cached connection (its `Client`), as the [`Governor`]
/// keeps it. Cloning must be cheap (an `Arc`).
pub trait ConnHandle: Clone {
    /// Whether new calls may still go on it (it is not closing or closed). A cached
    /// handle that is no longer usable is forgotten and its server dialed again.
    fn is_usable(&self) -> bool;

    /// The round trip of the connection's last heartbeat, if it measured one. The
    /// governor feeds new values to the selector (the latency selector weighs servers
    /// by them); the default measures nothing.
    fn heartbeat_rtt(&self) -> Option<Duration> {
        None
    }
}

/// How often the governor looks at its connections' heartbeat round trips.
const RTT_POLL: Duration = Duration::from_secs(1);

/// Names one dial, and the connection it made. Tickets grow: a later dial has a larger
/// ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialTicket(u64);

/// How an attempt gets its connection.
#[derive(Debug)]
#[must_use]
pub enum Connect<C> {
    /// Use this cached connection now.
    Ready(C),
    /// Nobody is dialing this server: dial it, then report with
    /// [`Governor::on_dialed`] (or [`Governor::abandon_dial`] if the dial is dropped
    /// before it ends), which says what to do next.
    Dial(DialTicket),
    /// Another attempt is dialing this server. Wait until that dial ends (the runtime
    /// wakes its waiters after every `on_dialed` / `abandon_dial`, or polls
    /// [`Governor::is_dialing`]), then ask [`Governor::dial_status`].
    Wait(DialTicket),
    /// The dial this attempt waited for failed with this error: report it as the
    /// attempt's result.
    Failed(Error),
}

/// The policy knobs of one `XClient`. Defaults follow Go: Failover, RoundRobin, 3
/// retries, 10 ms backup latency, 1-minute bound on Broadcast/Fork/Inform, no breaker,
/// no filter, not sticky.
pub struct GovernorOptions {
    /// Fail mode of [`CallRun`]s.
    pub fail_mode: FailMode,
    /// The selector.
    pub selector: Box<dyn Selector>,
    /// Retries, retry interval, backup latency (the deadline is per call).
    pub fail: FailOptions,
    /// Keep only servers of this group (metadata `group`).
    pub group: Option<String>,
    /// One circuit breaker per server.
    pub breaker: Option<BreakerConfig>,
    /// Keep using the last server that answered `Ok` while its connection is usable
    /// (Go's `Sticky`).
    pub sticky: bool,
    /// Bound on Broadcast/Fork/Inform.
    pub gather_timeout: Duration,
    /// Seed of the selectors' randomness.
    pub seed: u64,
    /// Client hooks.
    pub hooks: Vec<Arc<dyn ClientHooks>>,
}

impl Default for GovernorOptions {
    fn default() -> Self {
        GovernorOptions {
            fail_mode: FailMode::Failover,
            selector: Box::new(RoundRobin::default()),
            fail: FailOptions::default(),
            group: None,
            breaker: None,
            sticky: false,
            gather_timeout: super::DEFAULT_GATHER_TIMEOUT,
            seed: 0x5eed,
            hooks: Vec::new(),
        }
    }
}

impl fmt::Debug for GovernorOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernorOptions")
            .field("fail_mode", &self.fail_mode)
            .field("fail", &self.fail)
            .field("group", &self.group)
            .field("breaker", &self.breaker)
            .field("sticky", &self.sticky)
            .field("gather_timeout", &self.gather_timeout)
            .field("seed", &self.seed)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

/// One server's entry in the connection cache.
enum Slot<C> {
    /// A dial is under way; `since` is when it started (its duration is the RTT sample
    /// for latency-weighted selection).
    Dialing { ticket: DialTicket, since: Instant },
    /// Connected by dial `ticket`.
    Ready { conn: C, ticket: DialTicket },
}

/// The policy of one `XClient` (one service path over the servers of a discovery),
/// shared by all its calls: a runtime keeps it behind its lock, next to nothing else
/// but the connections' IO.
///
/// It owns the [`Balancer`] (refreshed from the discovery before each call and each
/// selection), the selectors' seeded RNG, the sticky server, the hooks, and the
/// connection cache: which server has a usable connection (the runtime's handle `C`),
/// which is being dialed, and the last failed dial per server. One dial per server at a
/// time: concurrent first uses of a server wait for that dial and share its outcome,
/// success or failure; a failed dial is forgotten, so the next use dials afresh.
///
/// Drive contract (every method takes `now`; the core never reads a clock):
///
/// ```text
/// call:    run = gov.call(now, method, timeout)?         (pre_call hooks; Err(Error::Hook))
/// gather:  run = gov.gather(now, mode)?                  (Err(Error::NoServer) if no server)
/// loop match run.poll(&mut gov, now) {
///   Step::Start(s) => start attempt s.attempt on s.server with s.conn:
///       Ready(c)   start the request on c
///       Dial(t)    dial (off the caller's path if you like); c = gov.on_dialed(now, &s.server, t, result)
///                  and go on with c (wake waiters of t; an abandoned dial: gov.abandon_dial)
///       Wait(t)    once t's dial ended: c = gov.dial_status(now, &s.server, t), go on with c
///       Failed(e)  the attempt's result is Err(e)
///     every started attempt ends in exactly one run.report(&mut gov, now, attempt, result)
///   Step::Wait{until} => wait for any attempt to end, or until `until`; report, poll again
///   Step::Done        => cancel (drop) the attempts still running; run.take_result()
/// }
/// after each of the above: close every gov.poll_retired() connection
/// ```
///
/// Guarantees: `Wait { until: None }` only while at least one started attempt has not
/// been reported, so a runtime never waits with nothing running and no deadline; the
/// run owns every attempt's result, so `Done` always has a result to give; the sticky
/// server is recorded only for an `Ok` call; results reported for unknown, repeated or
/// abandoned attempts are ignored.
pub struct Governor<C> {
    service_path: String,
    discovery: Arc<dyn Discovery>,
    balancer: Balancer,
    rng: SplitMix64,
    fail_mode: FailMode,
    fail: FailOptions,
    sticky_on: bool,
    sticky: Option<ServerKey>,
    gather_timeout: Duration,
    hooks: Vec<Arc<dyn ClientHooks>>,
    conns: HashMap<ServerKey, Slot<C>>,
    failed: HashMap<ServerKey, (DialTicket, Error)>,
    next_ticket: u64,
    retired: Vec<C>,
    /// Heartbeat round trips last fed to the selector, and when they were last read.
    rtt_seen: HashMap<ServerKey, Duration>,
    rtt_polled: Option<Instant>,
}

impl<C> fmt::Debug for Governor<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Governor")
            .field("service_path", &self.service_path)
            .field("balancer", &self.balancer)
            .field("fail_mode", &self.fail_mode)
            .field("sticky", &self.sticky)
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl<C: ConnHandle> Governor<C> {
    /// The policy for `service_path` over `discovery`.
    pub fn new(service_path: &str, discovery: Arc<dyn Discovery>, opts: GovernorOptions) -> Self {
        let mut filter = ServerFilter::new();
        if let Some(g) = &opts.group {
            filter = filter.group(g);
        }
        let mut balancer = Balancer::new(opts.selector).with_filter(filter);
        if let Some(b) = opts.breaker {
            balancer = balancer.with_breakers(BreakerSet::new(b));
        }
        Governor {
            service_path: service_path.to_owned(),
            discovery,
            balancer,
            rng: SplitMix64::new(opts.seed),
            fail_mode: opts.fail_mode,
            fail: opts.fail,
            sticky_on: opts.sticky,
            sticky: None,
            gather_timeout: opts.gather_timeout,
            hooks: opts.hooks,
            rtt_seen: HashMap::new(),
            rtt_polled: None,
            conns: HashMap::new(),
            failed: HashMap::new(),
            next_ticket: 0,
            retired: Vec::new(),
        }
    }

    /// The service path.
    pub fn service_path(&self) -> &str {
        &self.service_path
    }

    /// The fail mode of calls.
    pub fn fail_mode(&self) -> FailMode {
        self.fail_mode
    }

    /// The bound on Broadcast/Fork/Inform.
    pub fn gather_timeout(&self) -> Duration {
        self.gather_timeout
    }

    /// The balancer (servers, breakers, selector).
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The balancer, e.g. to tune the selector.
    pub fn balancer_mut(&mut self) -> &mut Balancer {
        &mut self.balancer
    }

    /// The sticky server, if one is recorded.
    pub fn sticky(&self) -> Option<&ServerKey> {
        self.sticky.as_ref()
    }

    /// Start one call of `method` with the fail mode, due `timeout` after `now` (no
    /// deadline without one; see [`CallRun::deadline`]), following discovery. (The
    /// `pre_call` and `post_call` hooks run per attempt, on the connection: see
    /// [`ClientHooks`].)
    pub fn call<T>(&mut self, now: Instant, method: &str, timeout: Option<Duration>) -> Result<CallRun<T>, Error> {
        self.call_until(method, timeout.and_then(|t| now.checked_add(t)))
    }

    /// [`call`](Self::call) with an absolute deadline (none: unbounded).
    pub fn call_until<T>(&mut self, method: &str, deadline: Option<Instant>) -> Result<CallRun<T>, Error> {
        self.refresh();
        Ok(CallRun::new(method, self.fail_mode, FailOptions { deadline, ..self.fail }))
    }

    /// Start a Broadcast, Fork or Inform of `method` to every server the breakers admit
    /// now, bounded by the gather timeout (see [`GatherRun::deadline`]).
    /// `Err(Error::NoServer)` if there is none.
    pub fn gather<T>(&mut self, now: Instant, mode: GatherMode) -> Result<GatherRun<T>, Error> {
        self.refresh();
        let servers = self.balancer.fan_out(now);
        if servers.is_empty() {
            return Err(Error::NoServer);
        }
        Ok(GatherRun::new(mode, servers, now, self.gather_timeout))
    }

    /// A connection for an attempt on `server` (see [`Connect`]).
    pub fn connect(&mut self, now: Instant, server: &ServerKey) -> Connect<C> {
        self.connect_ticket(now, server).0
    }

    /// [`connect`](Self::connect), with the ticket of the connection used or dialed.
    pub(super) fn connect_ticket(&mut self, now: Instant, server: &ServerKey) -> (Connect<C>, DialTicket) {
        match self.conns.get(server) {
            Some(Slot::Ready { conn, ticket }) if conn.is_usable() => return (Connect::Ready(conn.clone()), *ticket),
            Some(Slot::Dialing { ticket, .. }) => return (Connect::Wait(*ticket), *ticket),
            Some(Slot::Ready { .. }) => {
                // A dead cached connection: forget it and dial again.
                if let Some(Slot::Ready { conn, .. }) = self.conns.remove(server) {
                    self.retired.push(conn);
                }
            }
            None => {}
        }
        let ticket = DialTicket(self.next_ticket);
        self.next_ticket += 1;
        self.conns.insert(server.clone(), Slot::Dialing { ticket, since: now });
        (Connect::Dial(ticket), ticket)
    }

    /// Whether dial `ticket` to `server` is still under way.
    pub fn is_dialing(&self, server: &ServerKey, ticket: DialTicket) -> bool {
        matches!(self.conns.get(server), Some(Slot::Dialing { ticket: t, .. }) if *t == ticket)
    }

    /// Report how dial `ticket` to `server` ended. Returns what the attempt that dialed
    /// does next: `Ready` (use it) or `Failed` (report that error); in a rare race (the
    /// server left discovery meanwhile, or another dial took its place) `Wait` or
    /// `Failed(Error::Shutdown)`. Records the dial time for latency-weighted selection
    /// and runs the `conn_created` / `conn_create_failed` hooks. Wake every waiter of
    /// this ticket afterwards.
    pub fn on_dialed(
        &mut self,
        now: Instant,
        server: &ServerKey,
        ticket: DialTicket,
        result: Result<C, Error>,
    ) -> Connect<C> {
        let since = match self.conns.get(server) {
            Some(Slot::Dialing { ticket: t, since }) if *t == ticket => Some(*since),
            _ => None,
        };
        match result {
            Ok(conn) => {
                if let Some(since) = since {
                    self.balancer.observe_rtt(server, Some(now.saturating_duration_since(since)));
                } else if self.conns.contains_key(server) || !self.balancer.contains(server) {
                    // Someone else's dial owns the slot now, or the server left: this
                    // connection is not kept.
                    self.retired.push(conn);
                    return match self.conns.get(server) {
                        Some(Slot::Ready { conn, .. }) if conn.is_usable() => Connect::Ready(conn.clone()),
                        Some(Slot::Dialing { ticket, .. }) => Connect::Wait(*ticket),
                        _ => Connect::Failed(Error::Shutdown),
                    };
                }
                self.failed.remove(server);
                self.conns.insert(server.clone(), Slot::Ready { conn: conn.clone(), ticket });
                Connect::Ready(conn)
            }
            Err(e) => {
                if since.is_some() {
                    self.conns.remove(server);
                    // A failed dial is a failed measurement.
                    self.balancer.observe_rtt(server, None);
                }
                let text = e.to_string();
                self.hooks.iter().for_each(|h| {
                    crate::guard::catch("client conn_create_failed hook", || {
                        h.conn_create_failed(server.as_str(), &text)
                    });
                });
                if self.balancer.contains(server) && self.failed.get(server).is_none_or(|(t, _)| *t < ticket) {
                    self.failed.insert(server.clone(), (ticket, e.clone()));
                }
                Connect::Failed(e)
            }
        }
    }

    /// The dial `ticket` was dropped before it ended (its attempt was abandoned): the
    /// next waiter to ask [`dial_status`](Self::dial_status) dials instead. Wake the
    /// ticket's waiters afterwards.
    pub fn abandon_dial(&mut self, server: &ServerKey, ticket: DialTicket) {
        if self.is_dialing(server, ticket) {
            self.conns.remove(server);
        }
    }

    /// For an attempt that waited on dial `ticket`: `Wait` while it is under way, its
    /// error if it failed, else the server's usable connection, else (the connection
    /// was dropped meanwhile, or the dial abandoned) a fresh [`connect`](Self::connect).
    pub fn dial_status(&mut self, now: Instant, server: &ServerKey, ticket: DialTicket) -> Connect<C> {
        if self.is_dialing(server, ticket) {
            return Connect::Wait(ticket);
        }
        if let Some((t, e)) = self.failed.get(server) {
            if *t >= ticket {
                return Connect::Failed(e.clone());
            }
        }
        self.connect(now, server)
    }

    /// A connection the runtime should close: one dropped after a transport failure,
    /// one to a server that left discovery, or a dead one replaced by a new dial. Drain
    /// after every step.
    pub fn poll_retired(&mut self) -> Option<C> {
        self.retired.pop()
    }

    /// Forget every cached connection and return them (to close). Dials under way
    /// still complete and are cached when they report.
    pub fn take_connections(&mut self) -> Vec<C> {
        let mut out: Vec<C> = self.retired.drain(..).collect();
        for (_, slot) in self.conns.drain() {
            if let Slot::Ready { conn, .. } = slot {
                out.push(conn);
            }
        }
        self.sticky = None;
        out
    }

    /// Servers with a usable cached connection, sorted.
    pub fn connected(&self) -> Vec<ServerKey> {
        let mut v: Vec<ServerKey> = self
            .conns
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Ready { conn, .. } if conn.is_usable()))
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// Follow discovery: resync the balancer when its version moved, and retire the
    /// connections (and forget the dial state) of servers that left.
    pub fn refresh(&mut self) {
        if !self.balancer.refresh(&*self.discovery) {
            return;
        }
        let balancer = &self.balancer;
        self.failed.retain(|k, _| balancer.contains(k));
        let gone: Vec<ServerKey> = self.conns.keys().filter(|k| !balancer.contains(k)).cloned().collect();
        for k in gone {
            if let Some(Slot::Ready { conn, .. }) = self.conns.remove(&k) {
                self.retired.push(conn);
            }
        }
        if self.sticky.as_ref().is_some_and(|k| !self.balancer.contains(k)) {
            self.sticky = None;
        }
    }

    /// Pick a server for `method`: the sticky one while it is in discovery with a
    /// usable connection, else the balancer's choice.
    pub(super) fn select(&mut self, now: Instant, method: &str, hash_key: Option<&[u8]>) -> Option<ServerKey> {
        self.refresh();
        self.poll_rtts(now);
        if self.sticky_on {
            if let Some(k) = &self.sticky {
                let alive = self.balancer.contains(k)
                    && matches!(self.conns.get(k), Some(Slot::Ready { conn, .. }) if conn.is_usable());
                if alive {
                    return Some(k.clone());
                }
                self.sticky = None;
            }
        }
        let mut ctx = SelectContext::new(&self.service_path, method, &mut self.rng);
        ctx.hash_key = hash_key;
        let mut chosen = self.balancer.select(now, &mut ctx);
        for h in &self.hooks {
            let servers = self.balancer.servers();
            crate::guard::catch("client select hook", || h.select(&self.service_path, method, servers, &mut chosen));
        }
        chosen
    }

    /// Feed heartbeat round trips that changed to the selector (at most every
    /// [`RTT_POLL`]).
    fn poll_rtts(&mut self, now: Instant) {
        if self.rtt_polled.is_some_and(|t| now < t + RTT_POLL) {
            return;
        }
        self.rtt_polled = Some(now);
        for (key, slot) in &self.conns {
            let Slot::Ready { conn, .. } = slot else { continue };
            let Some(rtt) = crate::guard::catch("heartbeat_rtt", || conn.heartbeat_rtt()).flatten() else { continue };
            if self.rtt_seen.get(key) != Some(&rtt) {
                self.rtt_seen.insert(key.clone(), rtt);
                self.balancer.observe_rtt(key, Some(rtt));
            }
        }
        let conns = &self.conns;
        self.rtt_seen.retain(|k, _| conns.contains_key(k));
    }

    /// Admit one attempt to `server` through its breaker (and discovery).
    pub(super) fn admit(&mut self, now: Instant, server: &ServerKey) -> bool {
        self.balancer.admit(now, server)
    }

    /// An attempt on `server` over the connection of `ticket` ended with `outcome`:
    /// feed the breaker, and drop that connection (not a newer one) if the outcome
    /// says so.
    pub(super) fn record(&mut self, now: Instant, server: &ServerKey, ticket: DialTicket, outcome: Outcome) {
        self.balancer.record(now, server, outcome);
        if outcome.drops_connection()
            && matches!(self.conns.get(server), Some(Slot::Ready { ticket: t, .. }) if *t == ticket)
        {
            if let Some(Slot::Ready { conn, .. }) = self.conns.remove(server) {
                self.retired.push(conn);
            }
        }
    }

    /// A call ended: record the sticky server (only for `Ok`).
    pub(super) fn on_call_end(&mut self, method: &str, server: Option<&ServerKey>, error: Option<&Error>) {
        if self.sticky_on && error.is_none() {
            self.sticky = server.cloned();
        }
        tracing::debug!(target: "rpcx", service = %self.service_path, method, server = server.map(|s| s.as_str()), error = error.map(tracing::field::display), "xclient call ended");
    }
}
