//! The multi-server client's bookkeeping in one place: discovery snapshot → filter →
//! circuit breakers → selector.

use super::breaker::BreakerSet;
use super::discovery::{Discovery, Instance, ServerFilter, ServerKey, Snapshot};
use super::outcome::Outcome;
use super::selector::{SelectContext, Selector};
use std::fmt;
use std::time::{Duration, Instant};

/// Which servers an `XClient` may use right now, and which one a call goes to.
///
/// It keeps the filtered server list of the last discovery version it saw, one circuit
/// breaker per server (optional), and a [`Selector`] that it updates whenever the set
/// of usable servers changes: after discovery churn, and when a breaker opens or closes.
/// A server that left discovery or whose breaker is open is never selected.
///
/// ```text
/// before each call:     balancer.refresh(&*discovery)          (cheap when unchanged)
/// Action::Select:       plan.on_selected(now, balancer.select(now, &mut ctx))
/// Action::Send{a, s}:   if !balancer.admit(now, &s) { plan.on_result(now, a, Outcome::Unavailable) }
///                       else send
/// each result:          balancer.record(now, &s, outcome); if outcome.drops_connection() { drop conn }
/// fan-out (Broadcast):  Gather::new(mode, balancer.fan_out(now), now, timeout)
/// ```
pub struct Balancer {
    filter: ServerFilter,
    selector: Box<dyn Selector>,
    breakers: Option<BreakerSet>,
    seen: Option<u64>,
    servers: Vec<Instance>,
    /// Which of `servers` the selector currently holds.
    offered: Vec<bool>,
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("filter", &self.filter)
            .field("version", &self.seen)
            .field("servers", &self.servers.len())
            .field("breakers", &self.breakers.is_some())
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// A balancer with no servers yet, no filter and no breakers.
    pub fn new(selector: Box<dyn Selector>) -> Self {
        Balancer {
            filter: ServerFilter::default(),
            selector,
            breakers: None,
            seen: None,
            servers: Vec::new(),
            offered: Vec::new(),
        }
    }

    /// Filter servers (group, state, predicate). Takes effect at the next sync.
    #[must_use]
    pub fn with_filter(mut self, filter: ServerFilter) -> Self {
        self.filter = filter;
        self.seen = None;
        self
    }

    /// Guard every server with a breaker from `breakers`.
    #[must_use]
    pub fn with_breakers(mut self, breakers: BreakerSet) -> Self {
        self.breakers = Some(breakers);
        self
    }

    /// Adopt `snapshot` if its version differs from the last one seen. Returns whether
    /// anything changed.
    pub fn sync(&mut self, snapshot: &Snapshot) -> bool {
        if self.seen == Some(snapshot.version) {
            return false;
        }
        self.seen = Some(snapshot.version);
        // A filter predicate that panics admits no server (the panic is logged).
        let mut servers =
            crate::guard::catch("server filter", || self.filter.apply(&snapshot.servers)).unwrap_or_default();
        servers.sort_by(|a, b| a.key().cmp(b.key()));
        servers.dedup_by(|a, b| a.key() == b.key());
        self.servers = servers;
        if let Some(b) = &mut self.breakers {
            let servers = &self.servers;
            b.retain(|k| servers.binary_search_by(|s| s.key().cmp(k)).is_ok());
        }
        self.offered = vec![true; self.servers.len()];
        let (selector, servers) = (&mut self.selector, &self.servers);
        crate::guard::catch("selector update", || selector.update(servers));
        true
    }

    /// [`sync`](Self::sync) with `discovery`, taking a snapshot only if its version moved.
    pub fn refresh(&mut self, discovery: &dyn Discovery) -> bool {
        let Some(version) = crate::guard::catch("discovery", || discovery.version()) else { return false };
        if self.seen == Some(version) {
            return false;
        }
        match crate::guard::catch("discovery", || discovery.snapshot()) {
            Some(snapshot) => self.sync(&snapshot),
            None => false,
        }
    }

    /// The discovery version last adopted.
    pub fn version(&self) -> Option<u64> {
        self.seen
    }

    /// The servers that passed the filter, sorted by key (breakers not applied).
    pub fn servers(&self) -> &[Instance] {
        &self.servers
    }

    /// Whether `key` is currently among [`servers`](Self::servers).
    pub fn contains(&self, key: &ServerKey) -> bool {
        self.position(key).is_some()
    }

    fn position(&self, key: &ServerKey) -> Option<usize> {
        self.servers.binary_search_by(|s| s.key().cmp(key)).ok()
    }

    /// The selector, e.g. to tune it.
    pub fn selector_mut(&mut self) -> &mut dyn Selector {
        &mut *self.selector
    }

    /// The breakers, if any.
    pub fn breakers_mut(&mut self) -> Option<&mut BreakerSet> {
        self.breakers.as_mut()
    }

    /// Pick a server among those whose breaker would admit a call now. Does not admit
    /// it: call [`admit`](Self::admit) right before sending.
    pub fn select(&mut self, now: Instant, ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
        if let Some(b) = &mut self.breakers {
            let mut changed = false;
            for (s, offered) in self.servers.iter().zip(self.offered.iter_mut()) {
                let ready = b.ready(now, s.key());
                changed |= ready != *offered;
                *offered = ready;
            }
            if changed {
                let usable: Vec<Instance> =
                    self.servers.iter().zip(&self.offered).filter(|(_, o)| **o).map(|(s, _)| s.clone()).collect();
                let selector = &mut self.selector;
                crate::guard::catch("selector update", || selector.update(&usable));
            }
        }
        let selector = &mut self.selector;
        crate::guard::catch("selector", || selector.select(ctx)).flatten()
    }

    /// Admit one call to `key` right before sending it: `false` if the server left
    /// discovery (or the filter) or its breaker refuses. A half-open breaker admits
    /// exactly one trial. Report a refusal to the plan as [`Outcome::Unavailable`].
    pub fn admit(&mut self, now: Instant, key: &ServerKey) -> bool {
        if !self.contains(key) {
            return false;
        }
        self.breakers.as_mut().is_none_or(|b| b.admit(now, key))
    }

    /// Feed a call result to `key`'s breaker.
    pub fn record(&mut self, now: Instant, key: &ServerKey, outcome: Outcome) {
        if let Some(b) = &mut self.breakers {
            b.record(now, key, outcome);
        }
    }

    /// Pass a round-trip measurement to the selector.
    pub fn observe_rtt(&mut self, key: &ServerKey, rtt: Option<Duration>) {
        let selector = &mut self.selector;
        crate::guard::catch("selector", || selector.observe_rtt(key, rtt));
    }

    /// For Broadcast/Fork/Inform: every server whose breaker admits a call now
    /// (admitting each), in key order.
    pub fn fan_out(&mut self, now: Instant) -> Vec<ServerKey> {
        let mut out = Vec::with_capacity(self.servers.len());
        for s in &self.servers {
            if self.breakers.as_mut().is_none_or(|b| b.admit(now, s.key())) {
                out.push(s.key().clone());
            }
        }
        out
    }
}
