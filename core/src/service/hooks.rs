//! Server hooks (Go's server plugins) and two built on them: a request rate limiter and
//! an IP allow/deny list.

use super::{Context, Peer};
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A request refused by [`ServerHooks::post_read_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Error text for the response (`__rpcx_error__`).
    pub text: String,
    /// Close the connection after answering (Go closes for any error other than the
    /// rate limit).
    pub close: bool,
}

/// Hooks into the server's life cycle. Every method has a no-op default; implement the
/// ones you need. Hooks must not block: they run on the request's or connection's task.
pub trait ServerHooks: Send + Sync + 'static {
    /// A connection was accepted; return `false` to close it at once.
    fn conn_accepted(&self, _peer: &Peer) -> bool {
        true
    }
    /// A connection closed.
    fn conn_closed(&self, _peer: &Peer) {}
    /// A request was read (before auth and dispatch). `Err` answers with an error.
    fn post_read_request(&self, _ctx: &Context) -> Result<(), Rejection> {
        Ok(())
    }
    /// Before the handler runs (after auth and lookup). `Err(text)` answers with an error.
    fn pre_call(&self, _ctx: &Context) -> Result<(), String> {
        Ok(())
    }
    /// After the handler (or a lookup/pre-call failure); may rewrite the result.
    fn post_call(&self, _ctx: &Context, _result: &mut Result<bytes::Bytes, String>) {}
    /// Before a response is written (not called for oneway requests).
    fn pre_write_response(&self, _ctx: &Context, _response: &mut crate::conn::Response) {}
    /// After a response was queued for writing.
    fn post_write_response(&self, _ctx: &Context) {}
    /// A heartbeat was received (it has already been echoed).
    fn heartbeat(&self, _peer: &Peer) {}
}

/// A token bucket on requests: `capacity` requests at once, refilled at `per_second`.
/// Refused requests get Go's `request reached rate limit` error and the connection stays
/// open. Time comes from [`Context::received_at`], so the limiter reads no clock.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    capacity: f64,
    state: Mutex<(f64, Option<Instant>)>,
}

impl RateLimiter {
    /// Allow `per_second` requests per second on average with bursts of `capacity`.
    pub fn new(per_second: f64, capacity: u32) -> Self {
        Self { per_second, capacity: f64::from(capacity), state: Mutex::new((f64::from(capacity), None)) }
    }

    /// Take one token at `now`; `false` if none is left.
    pub fn try_acquire(&self, now: Instant) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *st;
        if let Some(prev) = *last {
            let dt = now.saturating_duration_since(prev);
            *tokens = (*tokens + dt.as_secs_f64() * self.per_second).min(self.capacity);
        }
        *last = Some(now.max(last.unwrap_or(now)));
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
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
            Err(Rejection { text: "request reached rate limit".into(), close: false })
        }
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
    fn conn_accepted(&self, peer: &Peer) -> bool {
        self.accepts(peer.ip)
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
