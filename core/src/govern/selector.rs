//! Selectors: which server the next call goes to (Go's `SelectMode`).
//!
//! Every built-in selector orders servers by key, so its choices depend only on the
//! server set, the calls made and the random source, never on map iteration order
//! (Go builds its lists by map iteration, so two Go processes disagree).

use super::discovery::{Instance, ServerKey};
use super::hash::{DoubleJump, fnv1a64, go_hash_key};
use super::{RandomSource, below};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// What a selector may look at for one pick.
pub struct SelectContext<'a> {
    /// The service (Go's `servicePath`).
    pub service_path: &'a str,
    /// The method (Go's `serviceMethod`).
    pub method: &'a str,
    /// A caller-chosen key for [`ConsistentHash`] (hashed with FNV-1a-64).
    pub hash_key: Option<&'a [u8]>,
    /// Randomness for selectors that need it.
    pub rng: &'a mut dyn RandomSource,
}

impl fmt::Debug for SelectContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelectContext")
            .field("service_path", &self.service_path)
            .field("method", &self.method)
            .field("hash_key", &self.hash_key)
            .finish_non_exhaustive()
    }
}

impl<'a> SelectContext<'a> {
    /// A context for `service_path.method` with no hash key.
    pub fn new(service_path: &'a str, method: &'a str, rng: &'a mut dyn RandomSource) -> Self {
        SelectContext { service_path, method, hash_key: None, rng }
    }

    /// Set the consistent-hash key.
    #[must_use]
    pub fn with_hash_key(mut self, key: &'a [u8]) -> Self {
        self.hash_key = Some(key);
        self
    }
}

/// Picks a server for a call (Go's `Selector`). Implement it for a user-defined policy
/// (Go's `SelectByUser`).
///
/// The client calls [`update`](Self::update) with the usable servers whenever that set
/// changes (discovery churn, filters, circuit breakers), then [`select`](Self::select)
/// once per attempt. `select` returns one of the keys last given to `update`, or `None`
/// when there is none.
pub trait Selector: Send {
    /// Pick a server.
    fn select(&mut self, ctx: &mut SelectContext<'_>) -> Option<ServerKey>;

    /// Replace the candidate set. `servers` is sorted by key without duplicates when it
    /// comes from a [`Snapshot`](super::Snapshot) or a [`Balancer`](super::Balancer).
    fn update(&mut self, servers: &[Instance]);

    /// A measured round-trip time to `server` (heartbeat or connect time); `None` when
    /// the measurement failed. Only latency-aware selectors use it.
    fn observe_rtt(&mut self, server: &ServerKey, rtt: Option<Duration>) {
        let _ = (server, rtt);
    }
}

/// Go's `SelectMode`, with Go's numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SelectMode {
    /// 0: uniform random ([`RandomSelector`]).
    #[default]
    Random,
    /// 1: round robin ([`RoundRobin`]).
    RoundRobin,
    /// 2: smooth weighted round robin over metadata `weight` ([`WeightedRoundRobin`]).
    WeightedRoundRobin,
    /// 3: Go's `WeightedICMP`: weights from measured round-trip times
    /// ([`WeightedLatency`]).
    WeightedLatency,
    /// 4: consistent hashing ([`ConsistentHash`]).
    ConsistentHash,
    /// 5: nearest by metadata coordinates ([`Closest`]; needs the client's position).
    Closest,
    /// 1000: a user-provided [`Selector`].
    ByUser,
}

impl SelectMode {
    /// Go's numeric value.
    pub fn as_u32(self) -> u32 {
        match self {
            SelectMode::Random => 0,
            SelectMode::RoundRobin => 1,
            SelectMode::WeightedRoundRobin => 2,
            SelectMode::WeightedLatency => 3,
            SelectMode::ConsistentHash => 4,
            SelectMode::Closest => 5,
            SelectMode::ByUser => 1000,
        }
    }

    /// From Go's numeric value.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => SelectMode::Random,
            1 => SelectMode::RoundRobin,
            2 => SelectMode::WeightedRoundRobin,
            3 => SelectMode::WeightedLatency,
            4 => SelectMode::ConsistentHash,
            5 => SelectMode::Closest,
            1000 => SelectMode::ByUser,
            _ => return None,
        })
    }

    /// A fresh built-in selector for this mode; `None` for `Closest` (build
    /// [`Closest::new`] with the client's coordinates) and `ByUser`.
    pub fn build(self) -> Option<Box<dyn Selector>> {
        Some(match self {
            SelectMode::Random => Box::new(RandomSelector::default()),
            SelectMode::RoundRobin => Box::new(RoundRobin::default()),
            SelectMode::WeightedRoundRobin => Box::new(WeightedRoundRobin::default()),
            SelectMode::WeightedLatency => Box::new(WeightedLatency::default()),
            SelectMode::ConsistentHash => Box::new(ConsistentHash::default()),
            SelectMode::Closest | SelectMode::ByUser => return None,
        })
    }
}

/// Uniformly random.
#[derive(Debug, Clone, Default)]
pub struct RandomSelector {
    servers: Vec<ServerKey>,
}

impl Selector for RandomSelector {
    fn select(&mut self, ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
        (!self.servers.is_empty()).then(|| self.servers[below(ctx.rng, self.servers.len())].clone())
    }

    fn update(&mut self, servers: &[Instance]) {
        self.servers = sorted_keys(servers);
    }
}

/// Round robin in key order. The position survives updates (as in Go), so churn
/// neither restarts nor skips the rotation much.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    servers: Vec<ServerKey>,
    next: usize,
}

impl Selector for RoundRobin {
    fn select(&mut self, _ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
        if self.servers.is_empty() {
            return None;
        }
        let i = self.next % self.servers.len();
        self.next = i + 1;
        Some(self.servers[i].clone())
    }

    fn update(&mut self, servers: &[Instance]) {
        self.servers = sorted_keys(servers);
    }
}

/// nginx's *smooth* weighted round robin, computed step by step (same sequence as
/// Go's precomputed ring, without a ring of `sum(weights)` entries). Each pick adds
/// every weight to its server's running value, takes the largest (first in key order
/// on ties) and subtracts the total from it. Weights `{a:5, b:1, c:1}` give
/// `a a b a c a a`, then repeat.
///
/// Zero-weight servers are never picked while some weight is positive; if every weight
/// is zero all servers count as weight 1 (Go panics there).
#[derive(Debug, Clone, Default)]
struct Smooth {
    servers: Vec<ServerKey>,
    weights: Vec<u64>,
    current: Vec<i64>,
}

impl Smooth {
    /// Replace servers and weights (parallel, sorted by key); restarts the sequence.
    fn set(&mut self, servers: Vec<ServerKey>, mut weights: Vec<u64>) {
        if weights.iter().all(|&w| w == 0) {
            weights.iter_mut().for_each(|w| *w = 1);
        }
        self.current = vec![0; servers.len()];
        self.servers = servers;
        self.weights = weights;
    }

    fn next(&mut self) -> Option<ServerKey> {
        let total: i64 = self.weights.iter().map(|&w| w as i64).sum();
        let mut best: Option<(usize, i64)> = None;
        for (i, (&w, cur)) in self.weights.iter().zip(self.current.iter_mut()).enumerate() {
            *cur += w as i64;
            if w > 0 && best.is_none_or(|(_, c)| *cur > c) {
                best = Some((i, *cur));
            }
        }
        let (b, _) = best?;
        self.current[b] -= total;
        Some(self.servers[b].clone())
    }
}

/// Smooth weighted round robin over metadata `weight` (Go's `WeightedRoundRobin`):
/// default 1, unparsable or negative → 1, `0` excludes the server unless all are 0
/// (then plain round robin). An update restarts the sequence, as Go rebuilds its ring.
#[derive(Debug, Clone, Default)]
pub struct WeightedRoundRobin {
    smooth: Smooth,
}

impl Selector for WeightedRoundRobin {
    fn select(&mut self, _ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
        self.smooth.next()
    }

    fn update(&mut self, servers: &[Instance]) {
        let mut v: Vec<(ServerKey, u64)> =
            servers.iter().map(|s| (s.key().clone(), u64::from(s.metadata().weight()))).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let (keys, weights) = v.into_iter().unzip();
        self.smooth.set(keys, weights);
    }
}

/// Go's `CalculateWeight`: round-trip milliseconds to a weight. 0..=10 → 191;
/// 11..=200 → `201 − rtt`; 201..=999 → 1; ≥ 1000 or negative → 0.
pub fn calculate_weight(rtt_ms: i64) -> u32 {
    match rtt_ms {
        0..=10 => 191,
        11..=200 => (201 - rtt_ms) as u32,
        201..=999 => 1,
        _ => 0,
    }
}

/// "Network quality" (Go's `WeightedICMP`): smooth weighted round robin with weights
/// from round-trip times the runtime measures (heartbeats, connect time) and reports
/// through [`Selector::observe_rtt`]; Go pings with ICMP instead.
///
/// Weight = [`calculate_weight`] of the RTT in whole milliseconds; a failed measurement
/// (`None`) is weight 0, as Go's failed ping. A server never measured gets
/// [`unmeasured_weight`](Self::with_unmeasured_weight) (default 1) so it still sees a
/// little traffic and can be measured. If every weight is 0 the servers are used in
/// plain round robin: never a panic. Measurements survive updates, also for servers
/// briefly out of the set (an open breaker), within a bound.
#[derive(Debug, Clone)]
pub struct WeightedLatency {
    smooth: Smooth,
    servers: Vec<ServerKey>,
    rtt: HashMap<ServerKey, Option<Duration>>,
    unmeasured_weight: u32,
}

impl Default for WeightedLatency {
    fn default() -> Self {
        WeightedLatency { smooth: Smooth::default(), servers: Vec::new(), rtt: HashMap::new(), unmeasured_weight: 1 }
    }
}

impl WeightedLatency {
    /// The weight of servers with no measurement yet.
    #[must_use]
    pub fn with_unmeasured_weight(mut self, weight: u32) -> Self {
        self.unmeasured_weight = weight;
        self
    }

    /// The weight `server` currently has.
    pub fn weight(&self, server: &ServerKey) -> u32 {
        match self.rtt.get(server) {
            None => self.unmeasured_weight,
            Some(None) => 0,
            Some(Some(d)) => calculate_weight(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Measurements are kept for servers outside the current set too (a server whose
    /// breaker is open comes back with its measurement), but bounded: past twice the
    /// set plus 64 entries, only the current set's are kept.
    fn prune(&mut self) {
        if self.rtt.len() > 2 * self.servers.len() + 64 {
            let servers = &self.servers;
            self.rtt.retain(|k, _| servers.binary_search(k).is_ok());
        }
    }

    fn rebuild(&mut self) {
        let weights = self.servers.iter().map(|s| u64::from(self.weight(s))).collect();
        self.smooth.set(self.servers.clone(), weights);
    }
}

impl Selector for WeightedLatency {
    fn select(&mut self, _ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
        self.smooth.next()
    }

    fn update(&mut self, servers: &[Instance]) {
        self.servers = sorted_keys(servers);
        self.prune();
        self.rebuild();
    }

    fn observe_rtt(&mut self, server: &ServerKey, rtt: Option<Duration>) {
        let before = self.weight(server);
        self.rtt.insert(server.clone(), rtt);
        self.prune();
        if self.weight(server) != before && self.servers.binary_search(server).is_ok() {
            self.rebuild();
        }
    }
}

/// A user function giving the 64-bit hash key for a call (used when the context has no
/// [`hash_key`](SelectContext::hash_key)).
pub type HashKeyFn = Box<dyn Fn(&SelectContext<'_>) -> u64 + Send + Sync>;

/// Consistent hashing: the same key goes to the same server while it is there.
///
/// Key: FNV-1a-64 of [`SelectContext::hash_key`] (every runtime's XClient passes the
/// call's `hash_key`, else its encoded arguments); else the [`with_key_fn`](Self::with_key_fn)
/// function; else FNV-1a-64 of Go's key string with an empty argument string
/// (`/<service>/<method>/`, so each method sticks to one server). For Go's exact
/// formula, build the key with [`go_hash_key`].
///
/// Servers sit in a doublejump table ([`jump`](super::jump) on a loose table with
/// holes, falling back to a compact table), so adding or removing a server moves only
/// the keys that must move. Unlike Go, servers are inserted in key order (on each
/// update, departed servers are removed first, then new ones added in key order), so
/// processes that saw the same sequence of server sets agree on every key; Go inserts in
/// random map order. Processes with different histories can still disagree on keys
/// whose slot was a hole; [`canonical`](Self::canonical) rebuilds the table in key order
/// on every update so that any two processes with the same set agree, at the price of
/// moving more keys when a server other than the last is removed.
#[derive(Default)]
pub struct ConsistentHash {
    table: DoubleJump,
    key_fn: Option<HashKeyFn>,
    canonical: bool,
}

impl fmt::Debug for ConsistentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("servers", &self.table.len())
            .field("key_fn", &self.key_fn.is_some())
            .field("canonical", &self.canonical)
            .finish()
    }
}

impl ConsistentHash {
    /// A selector whose table is rebuilt in key order on every update (see the type
    /// docs for the trade-off).
    pub fn canonical() -> Self {
        ConsistentHash { canonical: true, ..ConsistentHash::default() }
    }

    /// Compute keys with `f` when the context carries none.
    #[must_use]
    pub fn with_key_fn(mut self, f: impl Fn(&SelectContext<'_>) -> u64 + Send + Sync + 'static) -> Self {
        self.key_fn = Some(Box::new(f));
        self
    }

    /// The server `key` (an already hashed 64-bit key) maps to.
    pub fn server_for(&self, key: u64) -> Option<&ServerKey> {
        self.table.get(key)
    }

    /// The 64-bit key for a call.
    pub fn key_for(&self, ctx: &SelectContext<'_>) -> u64 {
        match (ctx.hash_key, &self.key_fn) {
            (Some(k), _) => fnv1a64(k),
            (None, Some(f)) => f(ctx),
            (None, None) => fnv1a64(go_hash_key(ctx.service_path, ctx.method, "").as_bytes()),
        }
    }
}

impl Selector for ConsistentHash {
    fn select(&mut self, ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
        let key = self.key_for(ctx);
        self.table.get(key).cloned()
    }

    fn update(&mut self, servers: &[Instance]) {
        let keys = sorted_keys(servers);
        if self.canonical {
            self.table.clear();
        } else {
            let mut gone: Vec<ServerKey> =
                self.table.keys().filter(|k| keys.binary_search(k).is_err()).cloned().collect();
            gone.sort();
            gone.iter().for_each(|k| self.table.remove(k));
        }
        keys.iter().for_each(|k| self.table.add(k));
    }
}

/// Earth's radius Go's geo selector uses, in metres.
pub const EARTH_RADIUS_M: f64 = 6_378_100.0;

/// Great-circle distance in metres between two points in degrees (haversine, Go's
/// `getDistanceFrom`).
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (la1, lo1, la2, lo2) = (lat1.to_radians(), lon1.to_radians(), lat2.to_radians(), lon2.to_radians());
    let hsin = |t: f64| (t / 2.0).sin().powi(2);
    let h = hsin(la2 - la1) + la1.cos() * la2.cos() * hsin(lo2 - lo1);
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}

/// The nearest server (Go's `Closest`, after `ConfigGeoSelector`): distance from the
/// client's position to metadata `latitude`/`longitude` by [`haversine_m`]. Servers
/// lacking either coordinate (or with unparsable metadata) are ignored; with none left
/// the selector returns `None`, as Go does. Ties are broken by the random source.
#[derive(Debug, Clone)]
pub struct Closest {
    latitude: f64,
    longitude: f64,
    servers: Vec<(ServerKey, f64)>,
}

impl Closest {
    /// A selector for a client at (`latitude`, `longitude`) in degrees.
    pub fn new(latitude: f64, longitude: f64) -> Self {
        Closest { latitude, longitude, servers: Vec::new() }
    }
}

impl Selector for Closest {
    fn select(&mut self, ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
        let min = self.servers.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
        let nearest: Vec<&ServerKey> = self.servers.iter().filter(|s| s.1 == min).map(|s| &s.0).collect();
        match nearest.len() {
            0 => None,
            1 => Some(nearest[0].clone()),
            n => Some(nearest[below(ctx.rng, n)].clone()),
        }
    }

    fn update(&mut self, servers: &[Instance]) {
        let mut v: Vec<(ServerKey, f64)> = servers
            .iter()
            .filter_map(|s| {
                let (lat, lon) = s.metadata().coordinates()?;
                Some((s.key().clone(), haversine_m(self.latitude, self.longitude, lat, lon)))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        self.servers = v;
    }
}

fn sorted_keys(servers: &[Instance]) -> Vec<ServerKey> {
    let mut keys: Vec<ServerKey> = servers.iter().map(|s| s.key().clone()).collect();
    keys.sort();
    keys.dedup();
    keys
}
