//! Pure policies for the multi-server client (Go's `XClient`): discovery data, server
//! selection, fail modes, Broadcast/Fork/Inform, circuit breakers.
//!
//! Nothing here does IO, reads a clock or draws OS randomness: time comes in as
//! `now: Instant`, randomness from a [`RandomSource`] the caller passes (e.g. a seeded
//! [`SplitMix64`]). Runtimes execute the decisions.
//!
//! * [`discovery`](Discovery): [`ServerKey`] (`network@addr`), [`Metadata`] (URL query
//!   parsed like Go), [`ServerFilter`] (group, `state=inactive`), [`Snapshot`]s with a
//!   version, and static discoveries ([`PeerDiscovery`], [`MultiDiscovery`],
//!   [`InProcessDiscovery`]).
//! * [`Selector`]s: [`RandomSelector`], [`RoundRobin`], [`WeightedRoundRobin`],
//!   [`WeightedLatency`], [`ConsistentHash`], [`Closest`], or your own.
//! * [`Plan`]: Failfast / Failover / Failtry / Failbackup as a state machine.
//! * [`Gather`]: Broadcast / Fork / Inform as an aggregator.
//! * [`Breaker`]s per server ([`CircuitBreaker`], [`BreakerSet`]).
//! * [`Balancer`]: discovery → filter → breakers → selector, for one `XClient`.
//! * [`Outcome`]: one attempt's ending, with which are retried, drop the cached
//!   connection, or count for breakers.
//! * [`Governor`]: all of the above for one `XClient`, as a stepping machine: per call a
//!   [`CallRun`] (fail modes, sticky, hooks) or a [`GatherRun`] (fan-out and its folds),
//!   plus the connection cache's dial state. A runtime only starts attempts, waits and
//!   reports; see [`Governor`] for the drive contract.
//!
//! One call, as a runtime executes it:
//!
//! ```
//! use rpcx_core::govern::*;
//! use std::time::{Duration, Instant};
//!
//! let discovery = MultiDiscovery::new([
//!     Instance::new("tcp@10.0.0.1:8972", ""),
//!     Instance::new("tcp@10.0.0.2:8972", ""),
//! ]);
//! let mut balancer = Balancer::new(Box::new(RoundRobin::default()))
//!     .with_breakers(BreakerSet::new(BreakerConfig::consecutive(5, Duration::from_secs(10))));
//! let mut rng = SplitMix64::new(7);
//! let mut now = Instant::now(); // a runtime reads its clock; the core never does
//!
//! balancer.refresh(&discovery);
//! let mut plan = Plan::new(FailMode::Failover, FailOptions::default());
//! let reply_from = loop {
//!     match plan.next(now) {
//!         Action::Select => {
//!             let mut ctx = SelectContext::new("Arith", "Mul", &mut rng);
//!             let pick = balancer.select(now, &mut ctx);
//!             plan.on_selected(now, pick);
//!         }
//!         Action::Send { attempt, server } => {
//!             if !balancer.admit(now, &server) {
//!                 plan.on_result(now, attempt, Outcome::Unavailable);
//!                 continue;
//!             }
//!             // Send for real; here the first server is down, the second answers.
//!             now += Duration::from_millis(1);
//!             let outcome = if server.as_str().ends_with(".1:8972") { Outcome::Transport } else { Outcome::Ok };
//!             balancer.record(now, &server, outcome);
//!             plan.on_result(now, attempt, outcome);
//!         }
//!         Action::Wait { .. } => unreachable!("results above are reported at once"),
//!         Action::Done(finish) => break finish.result,
//!     }
//! };
//! assert_eq!(reply_from.unwrap().server.as_str(), "tcp@10.0.0.2:8972");
//! ```

mod aggregate;
mod balancer;
mod breaker;
mod discovery;
mod failmode;
mod governor;
mod hash;
mod hooks;
mod outcome;
pub mod pool;
pub mod replies;
mod run;
mod selector;

pub use crate::conn::{ClientHookSet, ClientHooks, FinishedCall, OutgoingCall};
pub use aggregate::{DEFAULT_GATHER_TIMEOUT, EntryResult, Gather, GatherEntry, GatherMode, GatherReport, GatherStep};
pub use balancer::Balancer;
pub use breaker::{Breaker, BreakerConfig, BreakerFactory, BreakerSet, BreakerState, CircuitBreaker, TripPolicy};
pub use discovery::{
    ChangeCallback, Discovery, FilterFn, IN_PROCESS_NETWORK, InProcessDiscovery, Instance, Metadata, MultiDiscovery,
    PeerDiscovery, ServerFilter, ServerKey, Snapshot, SubscriptionId,
};
pub use failmode::{Action, AttemptId, FailMode, FailOptions, Failure, Finish, Plan, Success};
pub use governor::{ConnHandle, Connect, DialTicket, Governor, GovernorOptions};
pub use hash::{COMPACT_KEY_MULTIPLIER, fnv1a64, go_hash_key, jump};
pub use hooks::{XPUSH_CAPACITY, XPush};
pub use outcome::Outcome;
pub use run::{CallRun, GatherRun, Receipt, Start, Step};
pub use selector::{
    Closest, ConsistentHash, EARTH_RADIUS_M, HashKeyFn, RandomSelector, RoundRobin, SelectContext, SelectMode,
    Selector, WeightedLatency, WeightedRoundRobin, calculate_weight, haversine_m,
};

/// A source of random 64-bit numbers for selectors. Implemented by [`SplitMix64`] and by
/// any `FnMut() -> u64`.
pub trait RandomSource {
    /// The next random number.
    fn next_u64(&mut self) -> u64;
}

impl<F: FnMut() -> u64> RandomSource for F {
    fn next_u64(&mut self) -> u64 {
        self()
    }
}

/// A tiny seedable generator (Steele, Lea & Flood's SplitMix64): fast, statistically
/// fine for load balancing, not for cryptography. The same seed gives the same picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A uniform index in `0..n` (`n > 0`), by Lemire's multiply-shift.
fn below(rng: &mut (impl RandomSource + ?Sized), n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}
