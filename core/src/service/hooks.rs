//! Server hooks (Go's server plugins) and two built on them: a request rate limiter and
//! an IP allow/deny list.

use super::{Context, Peer, Push};
use crate::wire::{Header, Metadata};
use bytes::Bytes;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A request refused by a hook ([`ServerHooks::pre_read_request`],
/// [`rewrite_request`](ServerHooks::rewrite_request),
/// [`post_read_request`](ServerHooks::post_read_request), [`admit`](ServerHooks::admit)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Error text for the response (`__rpcx_error__`).
    pub text: String,
    /// Close the connection after answering (Go closes for any error other than the
    /// rate limit).
    pub close: bool,
}

impl Rejection {
    /// Answer with `text`, keep the connection.
    pub fn answer(text: impl Into<String>) -> Self {
        Self { text: text.into(), close: false }
    }

    /// Answer with `text`, then close the connection.
    pub fn close(text: impl Into<String>) -> Self {
        Self { text: text.into(), close: true }
    }
}

/// A request's names and metadata before its [`Context`] exists, as
/// [`ServerHooks::rewrite_request`] may change them (an alias, a tenant prefix, a
/// header added).
#[derive(Debug)]
pub struct RequestHead<'a> {
    /// The connection's peer.
    pub peer: &'a Peer,
    /// Service path.
    pub service_path: &'a mut Bytes,
    /// Method.
    pub service_method: &'a mut Bytes,
    /// Request metadata.
    pub metadata: &'a mut Metadata,
}

/// What [`ServerHooks::admit`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Go on now.
    Now,
    /// Go on at this instant (the request waits, on the server's [`Timer`]).
    At(Instant),
    /// Refuse.
    Reject(Rejection),
}

/// A copy of a connection's bytes (Go's `TeeConn`): what was read, after TLS, and
/// what was handed out for writing, in order.
pub trait ConnTap: Send {
    /// Bytes read from the peer.
    fn read(&mut self, _bytes: &[u8]) {}
    /// Bytes to be written to the peer.
    fn written(&mut self, _bytes: &[u8]) {}
}

impl std::fmt::Debug for dyn ConnTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnTap")
    }
}

/// Sleeps for the server: runtimes give their [`Dispatcher`](super::Dispatcher) one,
/// so that [`Admit::At`] and [`Context::sleep_until`] wait without the core reading a
/// clock.
pub trait Timer: Send + Sync {
    /// A future that completes at `at`.
    fn sleep_until(&self, at: Instant) -> super::BoxFuture<()>;
}

/// Hooks into the server's life cycle (Go's server plugins). Every method has a no-op
/// default; implement the ones you need. Hooks must not block: they run on the
/// request's or connection's task. A hook that panics is caught: a request hook's
/// panic answers that request with [`HOOK_PANICKED`](super::HOOK_PANICKED), a
/// connection hook's panic refuses the connection, other panics are logged.
///
/// A request passes, in this order: [`pre_read_request`](Self::pre_read_request),
/// [`rewrite_request`](Self::rewrite_request), [`post_read_request`](Self::post_read_request),
/// [`admit`](Self::admit), auth, [`pre_handle`](Self::pre_handle), the lookup,
/// [`pre_call`](Self::pre_call), the handler, [`post_call`](Self::post_call),
/// [`pre_write_response`](Self::pre_write_response),
/// [`post_write_response`](Self::post_write_response). Unlike Go, every refusal is
/// honoured (Go ignores the errors of several hooks).
pub trait ServerHooks: Send + Sync + 'static {
    /// A service is about to be announced, when the server starts (before any registry
    /// registers it). `Err(text)` fails the server's start.
    fn register(&self, _service: &str, _metadata: &str) -> Result<(), String> {
        Ok(())
    }
    /// A connection was accepted at `now`; `Err(text)` closes it at once (the text is
    /// logged and the refusal counted).
    fn conn_accepted(&self, _peer: &Peer, _now: Instant) -> Result<(), String> {
        Ok(())
    }
    /// A connection closed.
    fn conn_closed(&self, _peer: &Peer) {}
    /// A tap on the new connection's bytes, if this hook wants one.
    fn tap(&self, _peer: &Peer) -> Option<Box<dyn ConnTap>> {
        None
    }
    /// A request frame arrived (only its header is looked at). `Err` answers with an
    /// error (and closes if the rejection says so).
    fn pre_read_request(&self, _peer: &Peer, _header: &Header) -> Result<(), Rejection> {
        Ok(())
    }
    /// May change the request's service path, method and metadata before anything
    /// else sees them (the response still carries the names the client sent, as
    /// Go's alias plugin arranges).
    fn rewrite_request(&self, _req: &mut RequestHead<'_>) -> Result<(), Rejection> {
        Ok(())
    }
    /// A request was read (before auth and dispatch). `Err` answers with an error.
    fn post_read_request(&self, _ctx: &Context) -> Result<(), Rejection> {
        Ok(())
    }
    /// Whether the request may go on now, later ([`Admit::At`], bounded by the
    /// request's deadline) or not at all.
    fn admit(&self, _ctx: &Context) -> Admit {
        Admit::Now
    }
    /// After auth, before the service lookup. `Err(text)` answers with an error.
    fn pre_handle(&self, _ctx: &Context) -> Result<(), String> {
        Ok(())
    }
    /// Before the handler runs (after auth and lookup). `Err(text)` answers with an error.
    fn pre_call(&self, _ctx: &Context) -> Result<(), String> {
        Ok(())
    }
    /// After the handler (or a lookup/pre-call failure); may rewrite the result.
    fn post_call(&self, _ctx: &Context, _result: &mut Result<bytes::Bytes, String>) {}
    /// Before a response is written (not called for oneway requests); may change it.
    fn pre_write_response(&self, _ctx: &Context, _response: &mut crate::conn::Response) {}
    /// After a response was queued for writing (not for oneway requests).
    fn post_write_response(&self, _ctx: &Context, _response: &crate::conn::Response) {}
    /// A server push (Go's `SendMessage`) is about to be queued; may change it, and
    /// `Err(text)` drops it (the handler's `push` gets [`PushError::Refused`](crate::conn::PushError::Refused)).
    fn pre_write_request(&self, _peer: &Peer, _push: &mut Push) -> Result<(), String> {
        Ok(())
    }
    /// A server push was queued.
    fn post_write_request(&self, _peer: &Peer, _push: &Push) {}
    /// A heartbeat was received (it has already been echoed).
    fn heartbeat(&self, _peer: &Peer) {}
}

/// A token bucket on requests: `capacity` requests at once, refilled at `per_second`.
/// Refused requests get Go's `request reached rate limit` error and the connection stays
/// open. Time comes from [`Context::received_at`], so the limiter reads no clock. (For
/// one that waits for a token instead, see [`BlockingRateLimiter`]; on connections,
/// [`ConnRateLimiter`].)
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    capacity: f64,
    /// Tokens (negative: reserved ahead by waiting requests) as of the instant.
    state: Mutex<(f64, Option<Instant>)>,
}

impl RateLimiter {
    /// Allow `per_second` requests per second on average with bursts of `capacity`.
    pub fn new(per_second: f64, capacity: u32) -> Self {
        Self { per_second, capacity: f64::from(capacity), state: Mutex::new((f64::from(capacity), None)) }
    }

    fn refill(&self, now: Instant) -> std::sync::MutexGuard<'_, (f64, Option<Instant>)> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *st;
        if let Some(prev) = *last {
            let dt = now.saturating_duration_since(prev);
            *tokens = (*tokens + dt.as_secs_f64() * self.per_second).min(self.capacity);
        }
        *last = Some(now.max(last.unwrap_or(now)));
        st
    }

    /// Take one token at `now`; `false` if none is left.
    pub fn try_acquire(&self, now: Instant) -> bool {
        let mut st = self.refill(now);
        if st.0 >= 1.0 {
            st.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Reserve the next token: when it is available (`now` if one is left), or `None`
    /// (nothing reserved) if that is after `not_after`.
    pub fn reserve(&self, now: Instant, not_after: Option<Instant>) -> Option<Instant> {
        let mut st = self.refill(now);
        let missing = 1.0 - st.0;
        let at = if missing <= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(missing / self.per_second.max(f64::MIN_POSITIVE))
        };
        if not_after.is_some_and(|d| at > d) {
            return None;
        }
        st.0 -= 1.0;
        Some(at)
    }

    /// How long until a token is available at the current fill rate (informational).
    pub fn refill_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second.max(f64::MIN_POSITIVE))
    }
}

impl ServerHooks for RateLimiter {
    fn post_read_request(&self, ctx: &Context) -> Result<(), Rejection> {
        if self.try_acquire(ctx.received_at()) {
            Ok(())
        } else {
            Err(Rejection { text: super::RATE_LIMITED.into(), close: false })
        }
    }
}

/// A token bucket whose requests wait for their token (Go's request rate limiter with
/// `block = true`) instead of being refused, each at most until its deadline
/// (`__ServerTimeout`): one that could not get a token by then is refused with Go's
/// rate-limit text at once, without waiting. Waiting requests hold no thread on the
/// async runtimes (and a worker on std, like any handler that waits).
#[derive(Debug)]
pub struct BlockingRateLimiter(RateLimiter);

impl BlockingRateLimiter {
    /// `per_second` requests per second on average, bursts of `capacity`.
    pub fn new(per_second: f64, capacity: u32) -> Self {
        Self(RateLimiter::new(per_second, capacity))
    }
}

impl ServerHooks for BlockingRateLimiter {
    fn admit(&self, ctx: &Context) -> Admit {
        let now = ctx.received_at();
        match self.0.reserve(now, ctx.deadline()) {
            Some(at) if at <= now => Admit::Now,
            Some(at) => Admit::At(at),
            None => Admit::Reject(Rejection { text: super::RATE_LIMITED.into(), close: false }),
        }
    }
}

/// A token bucket on accepted connections (Go's `ConnRateLimitingPlugin`): a connection
/// past the rate is closed at once.
#[derive(Debug)]
pub struct ConnRateLimiter(RateLimiter);

impl ConnRateLimiter {
    /// `per_second` connections per second on average, bursts of `capacity`.
    pub fn new(per_second: f64, capacity: u32) -> Self {
        Self(RateLimiter::new(per_second, capacity))
    }
}

impl ServerHooks for ConnRateLimiter {
    fn conn_accepted(&self, peer: &Peer, now: Instant) -> Result<(), String> {
        if self.0.try_acquire(now) { Ok(()) } else { Err(format!("connection rate limit: {} refused", peer.addr)) }
    }
}

/// Serve services and methods under other names (Go's `AliasPlugin`): a request for
/// an alias is dispatched to the real method, and its response carries the names the
/// client sent.
///
/// ```
/// use rpcx_core::service::Alias;
/// let alias = Alias::new().alias("a.b.c.d", "Times", "Arith", "Mul");
/// assert_eq!(alias.resolve(b"a.b.c.d", b"Times"), Some((&b"Arith"[..], &b"Mul"[..])));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Alias {
    names: std::collections::HashMap<(Bytes, Bytes), (Bytes, Bytes)>,
}

impl Alias {
    /// No aliases.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `service.method` as `alias_service.alias_method` too.
    pub fn alias(mut self, alias_service: &str, alias_method: &str, service: &str, method: &str) -> Self {
        let key = (Bytes::copy_from_slice(alias_service.as_bytes()), Bytes::copy_from_slice(alias_method.as_bytes()));
        let to = (Bytes::copy_from_slice(service.as_bytes()), Bytes::copy_from_slice(method.as_bytes()));
        self.names.insert(key, to);
        self
    }

    /// The real names of an alias.
    pub fn resolve(&self, service: &[u8], method: &[u8]) -> Option<(&[u8], &[u8])> {
        let key = (Bytes::copy_from_slice(service), Bytes::copy_from_slice(method));
        self.names.get(&key).map(|(s, m)| (&s[..], &m[..]))
    }
}

impl ServerHooks for Alias {
    fn rewrite_request(&self, req: &mut RequestHead<'_>) -> Result<(), Rejection> {
        let key = (req.service_path.clone(), req.service_method.clone());
        if let Some((s, m)) = self.names.get(&key) {
            *req.service_path = s.clone();
            *req.service_method = m.clone();
        }
        Ok(())
    }
}

/// Accept or refuse connections by peer IP. A connection without an IP (unix socket)
/// is accepted by a deny list and refused by an allow list.
#[derive(Debug, Clone)]
pub struct IpFilter {
    nets: Vec<IpNet>,
    allow: bool,
}

impl IpFilter {
    /// Accept only peers in `nets` (CIDRs such as `10.0.0.0/8`, or single addresses).
    pub fn allow<I: IntoIterator<Item = S>, S: AsRef<str>>(nets: I) -> Result<Self, ipnet::AddrParseError> {
        Ok(Self { nets: parse_nets(nets)?, allow: true })
    }

    /// Refuse peers in `nets`.
    pub fn deny<I: IntoIterator<Item = S>, S: AsRef<str>>(nets: I) -> Result<Self, ipnet::AddrParseError> {
        Ok(Self { nets: parse_nets(nets)?, allow: false })
    }

    /// Whether a peer with this IP is accepted.
    pub fn accepts(&self, ip: Option<IpAddr>) -> bool {
        match ip {
            Some(ip) => self.nets.iter().any(|n| n.contains(&ip)) == self.allow,
            None => !self.allow,
        }
    }
}

fn parse_nets<I: IntoIterator<Item = S>, S: AsRef<str>>(nets: I) -> Result<Vec<IpNet>, ipnet::AddrParseError> {
    nets.into_iter()
        .map(|s| {
            let s = s.as_ref();
            s.parse::<IpNet>().or_else(|e| s.parse::<IpAddr>().map(IpNet::from).map_err(|_| e))
        })
        .collect()
}

impl ServerHooks for IpFilter {
    fn conn_accepted(&self, peer: &Peer, _now: Instant) -> Result<(), String> {
        if self.accepts(peer.ip) { Ok(()) } else { Err(format!("{} is not allowed", peer.addr)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_refills_with_time() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(10.0, 2);
        assert!(rl.try_acquire(t0));
        assert!(rl.try_acquire(t0));
        assert!(!rl.try_acquire(t0));
        assert!(!rl.try_acquire(t0 + Duration::from_millis(50)));
        assert!(rl.try_acquire(t0 + Duration::from_millis(150)));
    }

    #[test]
    fn blocking_limiter_reserves_ahead_within_the_deadline() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(10.0, 1);
        assert_eq!(rl.reserve(t0, None), Some(t0), "the burst token");
        let at = rl.reserve(t0, None).expect("the next token");
        assert!((at - t0).as_millis().abs_diff(100) <= 1, "{:?}", at - t0);
        let later = rl.reserve(t0, None).expect("the one after");
        assert!((later - t0).as_millis().abs_diff(200) <= 1, "{:?}", later - t0);
        assert_eq!(rl.reserve(t0, Some(t0 + Duration::from_millis(250))), None, "past its deadline");
        let third = rl.reserve(t0, Some(t0 + Duration::from_millis(350)));
        assert!(third.is_some(), "a refused reservation took nothing");
    }

    #[test]
    fn alias_rewrites_only_its_names() {
        let a = Alias::new().alias("a.b.c.d", "Times", "Arith", "Mul");
        let peer = Peer::named("t");
        let (mut p, mut m, mut md) = (Bytes::from_static(b"a.b.c.d"), Bytes::from_static(b"Times"), Metadata::new());
        let mut head = RequestHead { peer: &peer, service_path: &mut p, service_method: &mut m, metadata: &mut md };
        a.rewrite_request(&mut head).unwrap();
        assert_eq!((&p[..], &m[..]), (&b"Arith"[..], &b"Mul"[..]));
        let (mut p, mut m) = (Bytes::from_static(b"a.b.c.d"), Bytes::from_static(b"Add"));
        let mut head = RequestHead { peer: &peer, service_path: &mut p, service_method: &mut m, metadata: &mut md };
        a.rewrite_request(&mut head).unwrap();
        assert_eq!((&p[..], &m[..]), (&b"a.b.c.d"[..], &b"Add"[..]), "another method of the alias path");
    }

    #[test]
    fn ip_filter_allow_and_deny() {
        let allow = IpFilter::allow(["127.0.0.0/8", "::1"]).unwrap();
        assert!(allow.accepts(Some("127.1.2.3".parse().unwrap())));
        assert!(allow.accepts(Some("::1".parse().unwrap())));
        assert!(!allow.accepts(Some("10.0.0.1".parse().unwrap())));
        assert!(!allow.accepts(None));
        let deny = IpFilter::deny(["10.0.0.0/8"]).unwrap();
        assert!(!deny.accepts(Some("10.9.9.9".parse().unwrap())));
        assert!(deny.accepts(Some("127.0.0.1".parse().unwrap())));
        assert!(IpFilter::allow(["nonsense"]).is_err());
    }
}
