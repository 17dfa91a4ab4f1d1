//! Circuit breakers with injected time: trip, stay open, half-open after the cool-down,
//! one trial, close on success, re-open on failure; and their effect on selection.

use rpcx_core::govern::*;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);

#[test]
fn consecutive_breaker_lifecycle() {
    let t0 = Instant::now();
    let mut b = BreakerConfig::consecutive(3, Duration::from_secs(1)).build();
    b.on_failure(t0);
    b.on_failure(t0 + 10 * MS);
    assert_eq!(b.state(t0 + 10 * MS), BreakerState::Closed);
    b.on_failure(t0 + 20 * MS);
    let open_until = t0 + 20 * MS + Duration::from_secs(1);
    assert_eq!(b.state(t0 + 20 * MS), BreakerState::Open { until: open_until });
    // Stays open for the whole cool-down.
    for t in [t0 + 21 * MS, t0 + 500 * MS, open_until - MS] {
        assert!(!b.admit(t), "open at {:?}", t - t0);
        assert!(!b.ready(t));
    }
    // Half-open: exactly one trial.
    assert_eq!(b.state(open_until), BreakerState::HalfOpen { trial_in_flight: false });
    assert!(b.ready(open_until));
    assert!(b.admit(open_until));
    assert_eq!(b.state(open_until), BreakerState::HalfOpen { trial_in_flight: true });
    assert!(!b.admit(open_until + MS), "second trial refused");
    b.on_success(open_until + 5 * MS);
    assert_eq!(b.state(open_until + 5 * MS), BreakerState::Closed);
    assert!(b.admit(open_until + 6 * MS));
}

#[test]
fn failed_trial_reopens_with_longer_cooldown() {
    let t0 = Instant::now();
    let cfg = BreakerConfig::consecutive(1, Duration::from_secs(1)).with_max_cooldown(Duration::from_secs(3));
    let mut b = cfg.build();
    b.on_failure(t0);
    let t1 = t0 + Duration::from_secs(1);
    assert!(b.admit(t1));
    b.on_failure(t1);
    assert_eq!(b.state(t1), BreakerState::Open { until: t1 + Duration::from_secs(2) });
    let t2 = t1 + Duration::from_secs(2);
    assert!(b.admit(t2));
    b.on_failure(t2);
    assert_eq!(b.state(t2), BreakerState::Open { until: t2 + Duration::from_secs(3) }, "capped");
    let t3 = t2 + Duration::from_secs(3);
    assert!(b.admit(t3));
    b.on_success(t3);
    // Closing resets the back-off.
    b.on_failure(t3);
    assert_eq!(b.state(t3), BreakerState::Open { until: t3 + Duration::from_secs(1) });
}

#[test]
fn consecutive_counts_reset_on_success_and_on_gaps() {
    let t0 = Instant::now();
    let mut b = BreakerConfig::consecutive(3, Duration::from_secs(1)).build();
    b.on_failure(t0);
    b.on_failure(t0 + MS);
    b.on_success(t0 + 2 * MS);
    b.on_failure(t0 + 3 * MS);
    b.on_failure(t0 + 4 * MS);
    assert_eq!(b.state(t0 + 4 * MS), BreakerState::Closed, "success reset the run");
    // A gap longer than the window restarts the count.
    b.on_failure(t0 + Duration::from_secs(2));
    assert_eq!(b.state(t0 + Duration::from_secs(2)), BreakerState::Closed);
    b.on_failure(t0 + Duration::from_secs(2) + MS);
    b.on_failure(t0 + Duration::from_secs(2) + 2 * MS);
    assert!(matches!(b.state(t0 + Duration::from_secs(2) + 2 * MS), BreakerState::Open { .. }));
}

#[test]
fn lost_trial_result_allows_another_trial_after_a_cooldown() {
    let t0 = Instant::now();
    let mut b = BreakerConfig::consecutive(1, Duration::from_secs(1)).build();
    b.on_failure(t0);
    let t1 = t0 + Duration::from_secs(1);
    assert!(b.admit(t1));
    assert!(!b.admit(t1 + Duration::from_millis(999)));
    assert!(b.admit(t1 + Duration::from_secs(1)), "the first trial never reported");
    // An abandoned trial frees the slot at once.
    b.on_abandon(t1 + Duration::from_secs(1));
    assert!(b.admit(t1 + Duration::from_secs(1)));
}

#[test]
fn rate_breaker_go_default() {
    let t0 = Instant::now();
    let cfg = BreakerConfig::default();
    assert_eq!(cfg.trip, TripPolicy::Rate { rate: 0.95, min_samples: 100, window: Duration::from_secs(10) });
    let mut b = cfg.build();
    // 99 failures: too few samples.
    for i in 0..99 {
        b.on_failure(t0 + i * MS);
    }
    assert_eq!(b.state(t0 + 99 * MS), BreakerState::Closed);
    b.on_failure(t0 + 99 * MS);
    assert!(matches!(b.state(t0 + 99 * MS), BreakerState::Open { .. }), "100 samples, rate 1.0");

    // 6 successes in 100 samples: rate 0.94 stays closed; 5 in 100 (0.95) trips.
    let mut b = cfg.build();
    for i in 0..6 {
        b.on_success(t0 + i * MS);
    }
    for i in 6..101 {
        b.on_failure(t0 + i * MS);
        let st = b.state(t0 + i * MS);
        assert_eq!(st, BreakerState::Closed, "sample {i}: 95/101 < 0.95");
    }
    let mut b = cfg.build();
    for i in 0..5 {
        b.on_success(t0 + i * MS);
    }
    for i in 5..100 {
        b.on_failure(t0 + i * MS);
    }
    assert!(matches!(b.state(t0 + 100 * MS), BreakerState::Open { .. }), "95/100 = 0.95");
}

#[test]
fn rate_window_forgets_old_samples() {
    let t0 = Instant::now();
    let mut b = BreakerConfig::rate(0.5, 10).build();
    for i in 0..9 {
        b.on_failure(t0 + i * MS);
    }
    // Eleven seconds later the old failures are out of the 10 s window.
    let t1 = t0 + Duration::from_secs(11);
    b.on_failure(t1);
    assert_eq!(b.state(t1), BreakerState::Closed);
    for i in 1..10 {
        b.on_failure(t1 + i * MS);
    }
    assert!(matches!(b.state(t1 + 9 * MS), BreakerState::Open { .. }));
}

#[test]
fn outcomes_feed_breakers() {
    let t0 = Instant::now();
    let mut set = BreakerSet::new(BreakerConfig::consecutive(2, Duration::from_secs(5)));
    let k = ServerKey::new("tcp@a:1");
    // Remote errors mean the server is up; cancellations say nothing.
    for o in [Outcome::Remote, Outcome::Cancelled, Outcome::Unavailable, Outcome::Invalid, Outcome::Remote] {
        set.record(t0, &k, o);
    }
    assert_eq!(set.state(t0, &k), BreakerState::Closed);
    set.record(t0, &k, Outcome::Transport);
    set.record(t0, &k, Outcome::TimedOut);
    assert!(matches!(set.state(t0, &k), BreakerState::Open { .. }));
    assert!(!set.ready(t0, &k) && !set.admit(t0, &k));
    assert!(set.admit(t0, &ServerKey::new("tcp@other:1")), "no breaker yet = closed");
}

#[test]
fn open_breaker_removes_server_from_selection_until_half_open() {
    let t0 = Instant::now();
    let d = MultiDiscovery::new(["tcp@a:1", "tcp@b:1", "tcp@c:1"].map(|k| Instance::new(k, "")));
    let mut bal = Balancer::new(Box::new(RoundRobin::default()))
        .with_breakers(BreakerSet::new(BreakerConfig::consecutive(1, Duration::from_secs(1))));
    bal.refresh(&d);
    let a = ServerKey::new("tcp@a:1");
    bal.record(t0, &a, Outcome::Dial);
    let mut rng = SplitMix64::new(0);
    let mut pick = |bal: &mut Balancer, t| bal.select(t, &mut SelectContext::new("S", "M", &mut rng)).unwrap();
    for i in 0..100 {
        assert_ne!(pick(&mut bal, t0 + i * MS), a);
    }
    let t1 = t0 + Duration::from_secs(1);
    let mut picks = Vec::new();
    for _ in 0..3 {
        let p = pick(&mut bal, t1);
        assert!(bal.admit(t1, &p));
        picks.push(p);
    }
    assert_eq!(picks.iter().filter(|p| **p == a).count(), 1, "half-open: one trial");
    // Until the trial reports, a stays out.
    for _ in 0..10 {
        assert_ne!(pick(&mut bal, t1), a);
    }
    bal.record(t1 + MS, &a, Outcome::Ok);
    let later: Vec<_> = (0..3).map(|_| pick(&mut bal, t1 + 2 * MS)).collect();
    assert!(later.contains(&a), "closed again: {later:?}");
    // Fan-out skips open breakers too.
    bal.record(t1 + 3 * MS, &a, Outcome::Transport);
    let fan: Vec<_> = bal.fan_out(t1 + 3 * MS).into_iter().map(|k| k.to_string()).collect();
    assert_eq!(fan, ["tcp@b:1", "tcp@c:1"]);
}
