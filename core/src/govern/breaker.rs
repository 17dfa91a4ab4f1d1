//! Per-server circuit breakers with injected time.
//!
//! Unlike Go (whose breaker only ever sees dial failures and never a success), every
//! call result counts, classified by [`Outcome::breaker_verdict`].
//!
//! ```text
//!   Closed --trip policy fires--> Open --cool-down passes--> HalfOpen
//!   HalfOpen --trial succeeds--> Closed      HalfOpen --trial fails--> Open (longer cool-down)
//! ```
//!
//! An open breaker takes the server out of selection; a half-open one lets exactly one
//! trial call through (if the trial's result never arrives, another trial is allowed
//! after one more cool-down, so a lost result cannot wedge the server out).

use super::discovery::ServerKey;
use super::outcome::Outcome;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A breaker's state at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until `until`.
    Open {
        /// When it half-opens.
        until: Instant,
    },
    /// One trial call may go; `trial_in_flight` says whether it has.
    HalfOpen {
        /// A trial was admitted and has not reported back.
        trial_in_flight: bool,
    },
}

/// A circuit breaker for one server (Go's `Breaker`, with time passed in). Implement it
/// for a custom policy; [`CircuitBreaker`] is the built-in one.
pub trait Breaker: Send {
    /// The state at `now` (advancing time-based transitions).
    fn state(&mut self, now: Instant) -> BreakerState;

    /// Whether a call would be admitted at `now` (no side effects beyond time-based
    /// transitions).
    fn ready(&mut self, now: Instant) -> bool {
        matches!(self.state(now), BreakerState::Closed | BreakerState::HalfOpen { trial_in_flight: false })
    }

    /// Admit a call at `now` if allowed; in the half-open state this takes the single
    /// trial slot.
    fn admit(&mut self, now: Instant) -> bool;

    /// A call succeeded.
    fn on_success(&mut self, now: Instant);

    /// A call failed.
    fn on_failure(&mut self, now: Instant);

    /// A call ended without a verdict (cancelled, refused locally): frees the trial slot.
    fn on_abandon(&mut self, now: Instant);

    /// Feed an [`Outcome`] (dispatches on [`Outcome::breaker_verdict`]).
    fn record(&mut self, now: Instant, outcome: Outcome) {
        match outcome.breaker_verdict() {
            Some(true) => self.on_success(now),
            Some(false) => self.on_failure(now),
            None => self.on_abandon(now),
        }
    }
}

/// When a closed breaker opens.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TripPolicy {
    /// Go's `ConsecCircuitBreaker(threshold, window)`: `threshold` failures in a row,
    /// each within `window` of the previous one (a longer gap restarts the count; a
    /// success resets it).
    Consecutive {
        /// Failures in a row that trip the breaker.
        threshold: u32,
        /// Largest gap between two counted failures.
        window: Duration,
    },
    /// `rubyist/circuitbreaker`'s `RateBreaker(rate, min_samples)`: over the last
    /// `window` (ten buckets), at least `min_samples` results of which a fraction of at
    /// least `rate` failed.
    Rate {
        /// Failure fraction that trips (0.0..=1.0).
        rate: f64,
        /// Fewest results in the window before the rate counts.
        min_samples: u32,
        /// The sliding window.
        window: Duration,
    },
}

/// Configuration of a [`CircuitBreaker`]; one is built per server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// When to open.
    pub trip: TripPolicy,
    /// How long the breaker stays open the first time.
    pub cooldown: Duration,
    /// Each failed trial doubles the cool-down, up to this.
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    /// Go's exported `client.CircuitBreaker`: `RateBreaker(0.95, 100)` over rubyist's
    /// 10 s window, opening for 500 ms at first (rubyist's initial back-off) and doubling
    /// per failed trial up to 1 min.
    fn default() -> Self {
        BreakerConfig::rate(0.95, 100)
    }
}

impl BreakerConfig {
    /// [`TripPolicy::Consecutive`], open for `window` (Go's breaker is not ready again
    /// until `window` after the last failure); fixed cool-down.
    pub fn consecutive(threshold: u32, window: Duration) -> Self {
        BreakerConfig { trip: TripPolicy::Consecutive { threshold, window }, cooldown: window, max_cooldown: window }
    }

    /// [`TripPolicy::Rate`] over a 10 s window; cool-down 500 ms doubling up to 1 min.
    pub fn rate(rate: f64, min_samples: u32) -> Self {
        BreakerConfig {
            trip: TripPolicy::Rate { rate, min_samples, window: Duration::from_secs(10) },
            cooldown: Duration::from_millis(500),
            max_cooldown: Duration::from_secs(60),
        }
    }

    /// Set a fixed cool-down.
    #[must_use]
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self.max_cooldown = cooldown;
        self
    }

    /// Let the cool-down double per failed trial up to `max`.
    #[must_use]
    pub fn with_max_cooldown(mut self, max: Duration) -> Self {
        self.max_cooldown = max.max(self.cooldown);
        self
    }

    /// A fresh closed breaker.
    pub fn build(&self) -> CircuitBreaker {
        CircuitBreaker::new(*self)
    }
}

const RATE_BUCKETS: usize = 10;

/// The built-in breaker: a [`TripPolicy`] plus cool-down and a half-open trial.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Inner,
    /// Consecutive: failures in a row and when the last one was.
    consecutive: u32,
    last_failure: Option<Instant>,
    /// Rate: bucketed counts `(bucket number, successes, failures)`.
    buckets: [Option<(u64, u32, u32)>; RATE_BUCKETS],
    base: Option<Instant>,
    /// Failed trials since the breaker last closed (cool-down exponent).
    reopened: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { trial: Option<Instant> },
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: Inner::Closed,
            consecutive: 0,
            last_failure: None,
            buckets: [None; RATE_BUCKETS],
            base: None,
            reopened: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn advance(&mut self, now: Instant) {
        match self.state {
            Inner::Open { until } if now >= until => {
                tracing::debug!(target: "rpcx", "circuit breaker half-open: one trial call allowed");
                self.state = Inner::HalfOpen { trial: None }
            }
            Inner::HalfOpen { trial: Some(t) } if now.saturating_duration_since(t) >= self.current_cooldown() => {
                // The trial never reported back: allow another.
                self.state = Inner::HalfOpen { trial: None };
            }
            _ => {}
        }
    }

    fn current_cooldown(&self) -> Duration {
        let factor = 1u32.checked_shl(self.reopened.min(31)).unwrap_or(u32::MAX);
        self.config.cooldown.saturating_mul(factor).min(self.config.max_cooldown.max(self.config.cooldown))
    }

    fn open(&mut self, now: Instant) {
        tracing::debug!(target: "rpcx", cooldown = ?self.current_cooldown(), "circuit breaker opened");
        self.state = Inner::Open { until: now + self.current_cooldown() };
        self.consecutive = 0;
        self.last_failure = None;
        self.buckets = [None; RATE_BUCKETS];
    }

    fn close(&mut self) {
        if !matches!(self.state, Inner::Closed) {
            tracing::debug!(target: "rpcx", "circuit breaker closed: the trial call succeeded");
        }
        self.state = Inner::Closed;
        self.reopened = 0;
        self.consecutive = 0;
        self.last_failure = None;
        self.buckets = [None; RATE_BUCKETS];
    }

    fn bucket_span(window: Duration) -> Duration {
        (window / RATE_BUCKETS as u32).max(Duration::from_nanos(1))
    }

    /// Record a result in the rate window; returns (successes, failures) in the window.
    fn count(&mut self, now: Instant, ok: bool, window: Duration) -> (u64, u64) {
        let base = *self.base.get_or_insert(now);
        let span = Self::bucket_span(window).as_nanos();
        let n = u64::try_from(now.saturating_duration_since(base).as_nanos() / span).unwrap_or(u64::MAX);
        let slot = &mut self.buckets[(n % RATE_BUCKETS as u64) as usize];
        let (_, s, f) = match slot {
            Some(b) if b.0 == n => b,
            _ => slot.insert((n, 0, 0)),
        };
        if ok {
            *s += 1;
        } else {
            *f += 1;
        }
        self.buckets
            .iter()
            .flatten()
            .filter(|b| b.0 <= n && n - b.0 < RATE_BUCKETS as u64)
            .fold((0, 0), |(s, f), b| (s + u64::from(b.1), f + u64::from(b.2)))
    }

    fn should_trip(&mut self, now: Instant, ok: bool) -> bool {
        match self.config.trip {
            TripPolicy::Consecutive { threshold, window } => {
                if ok {
                    self.consecutive = 0;
                    return false;
                }
                if self.last_failure.is_some_and(|t| now.saturating_duration_since(t) > window) {
                    self.consecutive = 0;
                }
                self.consecutive += 1;
                self.last_failure = Some(now);
                self.consecutive >= threshold
            }
            TripPolicy::Rate { rate, min_samples, window } => {
                let (s, f) = self.count(now, ok, window);
                let total = s + f;
                !ok && total >= u64::from(min_samples) && total > 0 && f as f64 / total as f64 >= rate
            }
        }
    }
}

impl Breaker for CircuitBreaker {
    fn state(&mut self, now: Instant) -> BreakerState {
        self.advance(now);
        match self.state {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } => BreakerState::Open { until },
            Inner::HalfOpen { trial } => BreakerState::HalfOpen { trial_in_flight: trial.is_some() },
        }
    }

    fn admit(&mut self, now: Instant) -> bool {
        self.advance(now);
        match self.state {
            Inner::Closed => true,
            Inner::Open { .. } | Inner::HalfOpen { trial: Some(_) } => false,
            Inner::HalfOpen { trial: None } => {
                self.state = Inner::HalfOpen { trial: Some(now) };
                true
            }
        }
    }

    fn on_success(&mut self, now: Instant) {
        self.advance(now);
        match self.state {
            Inner::Closed => {
                self.should_trip(now, true);
            }
            Inner::HalfOpen { .. } => self.close(),
            // A call admitted before the breaker opened: no news about recovery yet.
            Inner::Open { .. } => {}
        }
    }

    fn on_failure(&mut self, now: Instant) {
        self.advance(now);
        match self.state {
            Inner::Closed => {
                if self.should_trip(now, false) {
                    self.open(now);
                }
            }
            Inner::HalfOpen { .. } => {
                self.reopened = self.reopened.saturating_add(1);
                self.open(now);
            }
            Inner::Open { .. } => {}
        }
    }

    fn on_abandon(&mut self, now: Instant) {
        self.advance(now);
        if let Inner::HalfOpen { trial: Some(_) } = self.state {
            self.state = Inner::HalfOpen { trial: None };
        }
    }
}

/// Makes one breaker per server.
pub type BreakerFactory = Arc<dyn Fn() -> Box<dyn Breaker> + Send + Sync>;

/// One breaker per server key, created on first use (closed).
pub struct BreakerSet {
    factory: BreakerFactory,
    breakers: HashMap<ServerKey, Box<dyn Breaker>>,
}

impl fmt::Debug for BreakerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerSet").field("servers", &self.breakers.len()).finish_non_exhaustive()
    }
}

impl BreakerSet {
    /// Built-in breakers with `config`.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_factory(Arc::new(move || Box::new(config.build())))
    }

    /// Breakers from `factory`.
    pub fn with_factory(factory: BreakerFactory) -> Self {
        BreakerSet { factory, breakers: HashMap::new() }
    }

    fn get(&mut self, key: &ServerKey) -> &mut Box<dyn Breaker> {
        let factory = &self.factory;
        // A factory that panics gives a breaker that never opens.
        self.breakers.entry(key.clone()).or_insert_with(|| {
            crate::guard::catch("breaker factory", || factory()).unwrap_or_else(|| Box::new(NeverOpen))
        })
    }

    /// The state of `key`'s breaker (closed if it has none yet).
    pub fn state(&mut self, now: Instant, key: &ServerKey) -> BreakerState {
        self.breakers.get_mut(key).map_or(BreakerState::Closed, |b| {
            crate::guard::catch("breaker", || b.state(now)).unwrap_or(BreakerState::Closed)
        })
    }

    /// Whether a call to `key` would be admitted now.
    pub fn ready(&mut self, now: Instant, key: &ServerKey) -> bool {
        self.breakers.get_mut(key).is_none_or(|b| crate::guard::catch("breaker", || b.ready(now)).unwrap_or(true))
    }

    /// Admit a call to `key` (takes the half-open trial slot).
    pub fn admit(&mut self, now: Instant, key: &ServerKey) -> bool {
        match self.breakers.get_mut(key) {
            Some(b) => crate::guard::catch("breaker", || b.admit(now)).unwrap_or(true),
            None => true,
        }
    }

    /// Record a call result for `key`.
    pub fn record(&mut self, now: Instant, key: &ServerKey, outcome: Outcome) {
        if outcome.breaker_verdict().is_none() && !self.breakers.contains_key(key) {
            return;
        }
        let b = self.get(key);
        crate::guard::catch("breaker", || b.record(now, outcome));
    }

    /// Forget breakers of servers for which `keep` is false (servers that left).
    pub fn retain(&mut self, mut keep: impl FnMut(&ServerKey) -> bool) {
        self.breakers.retain(|k, _| keep(k));
    }
}

/// Stands in for a breaker whose factory panicked: always closed.
#[derive(Debug)]
struct NeverOpen;

impl Breaker for NeverOpen {
    fn state(&mut self, _now: Instant) -> BreakerState {
        BreakerState::Closed
    }
    fn ready(&mut self, _now: Instant) -> bool {
        true
    }
    fn admit(&mut self, _now: Instant) -> bool {
        true
    }
    fn record(&mut self, _now: Instant, _outcome: Outcome) {}
    fn on_success(&mut self, _now: Instant) {}
    fn on_failure(&mut self, _now: Instant) {}
    fn on_abandon(&mut self, _now: Instant) {}
}
