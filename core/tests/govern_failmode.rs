//! Fail-mode plans driven by a tiny deterministic simulation: a fake clock, three
//! servers (one dead, one slow, one fast), scripted outcomes and latencies.

use rpcx_core::govern::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
const DEAD: &str = "tcp@a-dead:1";
const SLOW: &str = "tcp@b-slow:1";
const FAST: &str = "tcp@c-fast:1";

/// How a simulated server answers.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Dial fails at once.
    Refuses,
    /// Answers with `outcome` after `latency`.
    Answers(Duration, Outcome),
    /// The n-th request gets the n-th outcome (the last one repeats).
    Scripted(Duration, &'static [Outcome]),
}

/// A user selector that follows a script (and fails the test if asked beyond it).
struct Script(Vec<&'static str>, Vec<ServerKey>);

impl Selector for Script {
    fn select(&mut self, _ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
        let want = self.0.remove(0);
        self.1.iter().find(|k| k.as_str() == want).cloned()
    }
    fn update(&mut self, servers: &[Instance]) {
        self.1 = servers.iter().map(|s| s.key().clone()).collect();
    }
}

/// Runs after each failed attempt (to simulate discovery churn).
type ChurnHook = Box<dyn FnMut(&MultiDiscovery)>;

struct Sim {
    t0: Instant,
    now: Instant,
    servers: HashMap<&'static str, Behaviour>,
    discovery: MultiDiscovery,
    balancer: Balancer,
    rng: SplitMix64,
    /// (attempt, server, completes at, outcome)
    pending: Vec<(AttemptId, ServerKey, Instant, Outcome)>,
    /// (time since start, server) of every send.
    sends: Vec<(Duration, String)>,
    cancelled: Vec<AttemptId>,
    served: HashMap<String, usize>,
    /// Called after each failed attempt with the discovery (churn hook).
    on_failure: Option<ChurnHook>,
}

impl Sim {
    fn new(selector: Box<dyn Selector>) -> Self {
        Self::with_servers(selector, &[(DEAD, Behaviour::Refuses), (SLOW, ok(50)), (FAST, ok(1))])
    }

    fn with_servers(selector: Box<dyn Selector>, servers: &[(&'static str, Behaviour)]) -> Self {
        let t0 = Instant::now();
        let discovery = MultiDiscovery::new(servers.iter().map(|(k, _)| Instance::new(*k, "")));
        Sim {
            t0,
            now: t0,
            servers: servers.iter().copied().collect(),
            discovery,
            balancer: Balancer::new(selector),
            rng: SplitMix64::new(1),
            pending: Vec::new(),
            sends: Vec::new(),
            cancelled: Vec::new(),
            served: HashMap::new(),
            on_failure: None,
        }
    }

    fn report(&mut self, plan: &mut Plan, attempt: AttemptId, server: &ServerKey, outcome: Outcome) {
        self.balancer.record(self.now, server, outcome);
        assert!(plan.on_result(self.now, attempt, outcome));
        if !outcome.is_ok() {
            if let Some(hook) = &mut self.on_failure {
                hook(&self.discovery);
            }
        }
    }

    /// Execute a plan the way a runtime does.
    fn run(&mut self, mode: FailMode, opts: FailOptions) -> Finish {
        let mut plan = Plan::new(mode, opts);
        for _ in 0..1000 {
            match plan.next(self.now) {
                Action::Select => {
                    self.balancer.refresh(&self.discovery);
                    let mut ctx = SelectContext::new("Arith", "Mul", &mut self.rng);
                    let pick = self.balancer.select(self.now, &mut ctx);
                    plan.on_selected(self.now, pick);
                }
                Action::Send { attempt, server } => {
                    self.balancer.refresh(&self.discovery);
                    self.sends.push((self.now - self.t0, server.to_string()));
                    if !self.balancer.admit(self.now, &server) {
                        self.report(&mut plan, attempt, &server, Outcome::Unavailable);
                        continue;
                    }
                    let n = self.served.entry(server.to_string()).or_default();
                    *n += 1;
                    match self.servers[server.as_str()] {
                        Behaviour::Refuses => self.report(&mut plan, attempt, &server, Outcome::Dial),
                        Behaviour::Answers(lat, o) => self.pending.push((attempt, server, self.now + lat, o)),
                        Behaviour::Scripted(lat, script) => {
                            let o = script[(*n - 1).min(script.len() - 1)];
                            self.pending.push((attempt, server, self.now + lat, o));
                        }
                    }
                }
                Action::Wait { until } => {
                    self.pending.sort_by_key(|p| p.2);
                    let next = self.pending.first().map(|p| p.2);
                    if next.is_some_and(|at| until.is_none_or(|u| at <= u)) {
                        let (attempt, server, at, outcome) = self.pending.remove(0);
                        self.now = self.now.max(at);
                        self.report(&mut plan, attempt, &server, outcome);
                    } else {
                        self.now = self.now.max(until.expect("plan waits forever with nothing in flight"));
                    }
                }
                Action::Done(finish) => {
                    for a in &finish.abandon {
                        self.pending.retain(|p| p.0 != *a);
                        self.cancelled.push(*a);
                    }
                    // Done is sticky.
                    assert_eq!(plan.next(self.now), Action::Done(finish.clone()));
                    return finish;
                }
            }
        }
        panic!("plan did not finish");
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn sent_to(&self) -> Vec<&str> {
        self.sends.iter().map(|(_, s)| s.as_str()).collect()
    }
}

fn ok(ms: u64) -> Behaviour {
    Behaviour::Answers(Duration::from_millis(ms), Outcome::Ok)
}

fn server_of(f: &Finish) -> &str {
    f.result.as_ref().expect("success").server.as_str()
}

fn failed_with(f: &Finish) -> (Outcome, &str) {
    match &f.result {
        Err(Failure::Attempt { outcome, server, .. }) => (*outcome, server.as_str()),
        other => panic!("expected an attempt failure, got {other:?}"),
    }
}

// ---- Failover ----

#[test]
fn failover_skips_dead_server_and_succeeds_on_the_next() {
    let mut sim = Sim::new(Box::new(RoundRobin::default()));
    let f = sim.run(FailMode::Failover, FailOptions::default());
    assert_eq!(server_of(&f), SLOW);
    assert_eq!(f.attempts, 2);
    assert_eq!(sim.sent_to(), [DEAD, SLOW]);
    assert_eq!(sim.elapsed(), 50 * MS);
}

#[test]
fn failover_with_random_selection_is_reproducible() {
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let mut sim = Sim::new(Box::new(RandomSelector::default()));
            let f = sim.run(FailMode::Failover, FailOptions::default());
            (sim.sends.clone(), f)
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].1.result.is_ok());
}

#[test]
fn failover_gives_up_after_retries_plus_one_attempts() {
    let mut sim = Sim::with_servers(Box::new(RandomSelector::default()), &[(DEAD, Behaviour::Refuses)]);
    let opts = FailOptions { retries: 3, retry_interval: 20 * MS, ..FailOptions::default() };
    let f = sim.run(FailMode::Failover, opts);
    assert_eq!(f.attempts, 4);
    assert_eq!(failed_with(&f), (Outcome::Dial, DEAD));
    let times: Vec<_> = sim.sends.iter().map(|s| s.0).collect();
    assert_eq!(times, [Duration::ZERO, 20 * MS, 40 * MS, 60 * MS], "retry interval between attempts");
}

#[test]
fn failover_never_retries_remote_errors_or_timeouts() {
    for o in [Outcome::Remote, Outcome::TimedOut, Outcome::Cancelled, Outcome::Invalid] {
        for mode in [FailMode::Failover, FailMode::Failtry, FailMode::Failfast] {
            let mut sim = Sim::with_servers(
                Box::new(RoundRobin::default()),
                &[(SLOW, Behaviour::Answers(5 * MS, o)), (FAST, ok(1))],
            );
            let f = sim.run(mode, FailOptions::default());
            assert_eq!(f.attempts, 1, "{mode:?} {o:?}");
            assert_eq!(failed_with(&f), (o, SLOW));
        }
    }
}

#[test]
fn failover_retries_transport_errors() {
    let mut sim = Sim::with_servers(
        Box::new(RoundRobin::default()),
        &[(SLOW, Behaviour::Answers(5 * MS, Outcome::Transport)), (FAST, ok(1))],
    );
    let f = sim.run(FailMode::Failover, FailOptions::default());
    assert_eq!(server_of(&f), FAST);
    assert_eq!(sim.sent_to(), [SLOW, FAST]);
}

#[test]
fn failover_with_no_servers_is_no_server() {
    let mut sim = Sim::with_servers(Box::new(RoundRobin::default()), &[]);
    let f = sim.run(FailMode::Failover, FailOptions::default());
    assert_eq!((f.result, f.attempts), (Err(Failure::NoServer), 0));
}

#[test]
fn failover_deadline_abandons_the_slow_call() {
    let mut sim = Sim::with_servers(Box::new(RoundRobin::default()), &[(SLOW, ok(50))]);
    let opts = FailOptions { deadline: Some(sim.t0 + 30 * MS), ..FailOptions::default() };
    let f = sim.run(FailMode::Failover, opts);
    assert_eq!(f.result, Err(Failure::DeadlineExceeded));
    assert_eq!(f.abandon, [AttemptId(0)]);
    assert_eq!(sim.elapsed(), 30 * MS);
}

#[test]
fn failover_reselect_never_picks_a_server_removed_meanwhile() {
    // Round robin over [dead, slow, fast]: the dead one fails first; meanwhile discovery
    // drops the slow one; the retry must go to fast.
    let mut sim = Sim::new(Box::new(RoundRobin::default()));
    sim.on_failure = Some(Box::new(|d| {
        d.update([Instance::new(DEAD, ""), Instance::new(FAST, "")]);
    }));
    let f = sim.run(FailMode::Failover, FailOptions::default());
    assert_eq!(sim.sent_to(), [DEAD, FAST]);
    assert_eq!(server_of(&f), FAST);
}

#[test]
fn failover_consistent_hash_reroutes_after_its_server_leaves() {
    // Find a key that maps to the dead server, then remove it after the failure.
    let mut probe = ConsistentHash::default();
    probe.update(&[DEAD, SLOW, FAST].map(|k| Instance::new(k, "")));
    let key =
        (0..).map(|i| format!("k{i}")).find(|k| probe.server_for(fnv1a64(k.as_bytes())).unwrap().as_str() == DEAD);
    let key = key.unwrap();
    let mut sim = Sim::new(Box::new(ConsistentHash::default().with_key_fn(move |_| fnv1a64(key.as_bytes()))));
    sim.on_failure = Some(Box::new(|d| {
        d.update([Instance::new(SLOW, ""), Instance::new(FAST, "")]);
    }));
    let f = sim.run(FailMode::Failover, FailOptions::default());
    assert_eq!(sim.sent_to()[0], DEAD);
    assert_eq!(f.attempts, 2);
    assert_ne!(server_of(&f), DEAD);
}

#[test]
fn failover_skips_servers_with_open_breakers() {
    let mut sim = Sim::new(Box::new(RoundRobin::default()));
    sim.balancer = Balancer::new(Box::new(RoundRobin::default()))
        .with_breakers(BreakerSet::new(BreakerConfig::consecutive(1, Duration::from_secs(10))));
    let first = sim.run(FailMode::Failover, FailOptions::default());
    // The breaker opened after the dial failure, so the round robin continues over
    // [slow, fast] at its next position.
    assert_eq!(sim.sent_to(), [DEAD, FAST]);
    assert!(first.result.is_ok());
    // The dead server's breaker is open: the next calls never go there.
    for _ in 0..5 {
        sim.sends.clear();
        let f = sim.run(FailMode::Failover, FailOptions::default());
        assert_eq!(f.attempts, 1);
        assert!(!sim.sent_to().contains(&DEAD));
    }
}

// ---- Failtry ----

#[test]
fn failtry_hits_the_same_server_every_time() {
    let mut sim = Sim::new(Box::new(RoundRobin::default()));
    let f = sim.run(FailMode::Failtry, FailOptions { retries: 2, ..FailOptions::default() });
    assert_eq!(sim.sent_to(), [DEAD, DEAD, DEAD]);
    assert_eq!(f.attempts, 3);
    assert_eq!(failed_with(&f), (Outcome::Dial, DEAD));
}

#[test]
fn failtry_recovers_on_the_same_server() {
    let flaky = Behaviour::Scripted(5 * MS, &[Outcome::Transport, Outcome::Transport, Outcome::Ok]);
    let mut sim = Sim::with_servers(Box::new(RoundRobin::default()), &[(SLOW, flaky), (FAST, ok(1))]);
    let f = sim.run(FailMode::Failtry, FailOptions::default());
    assert_eq!(sim.sent_to(), [SLOW, SLOW, SLOW]);
    assert_eq!((server_of(&f), f.attempts), (SLOW, 3));
}

#[test]
fn failtry_reselects_when_its_server_leaves_discovery() {
    let mut sim = Sim::new(Box::new(RoundRobin::default()));
    sim.on_failure = Some(Box::new(|d| {
        d.update([Instance::new(SLOW, ""), Instance::new(FAST, "")]);
    }));
    let f = sim.run(FailMode::Failtry, FailOptions::default());
    // Dead fails, leaves; the pinned server is refused locally (Unavailable) and the
    // next attempt selects again.
    assert_eq!(&sim.sent_to()[..2], [DEAD, DEAD]);
    assert!(f.result.is_ok(), "{f:?}");
    assert_ne!(server_of(&f), DEAD);
}

// ---- Failfast ----

#[test]
fn failfast_makes_one_attempt() {
    let mut sim = Sim::new(Box::new(RoundRobin::default()));
    let f = sim.run(FailMode::Failfast, FailOptions::default());
    assert_eq!((f.attempts, failed_with(&f)), (1, (Outcome::Dial, DEAD)));
}

// ---- Failbackup ----

#[test]
fn failbackup_sends_a_copy_after_backup_latency_and_takes_the_first_completion() {
    let mut sim = Sim::new(Box::new(Script(vec![SLOW, FAST], Vec::new())));
    let f = sim.run(FailMode::Failbackup, FailOptions::default());
    assert_eq!(sim.sends, [(Duration::ZERO, SLOW.to_owned()), (10 * MS, FAST.to_owned())]);
    assert_eq!(server_of(&f), FAST);
    assert_eq!(sim.elapsed(), 11 * MS);
    assert_eq!(f.abandon, [AttemptId(0)], "the slow request is abandoned");
    assert_eq!(f.attempts, 2);
}

#[test]
fn failbackup_without_delay_sends_no_copy() {
    let mut sim = Sim::new(Box::new(Script(vec![FAST], Vec::new())));
    let f = sim.run(FailMode::Failbackup, FailOptions::default());
    assert_eq!((server_of(&f), f.attempts, sim.elapsed()), (FAST, 1, MS));
    assert!(f.abandon.is_empty());
}

#[test]
fn failbackup_first_completion_wins_even_if_it_is_an_error() {
    let mut sim = Sim::with_servers(
        Box::new(Script(vec![SLOW, FAST], Vec::new())),
        &[(SLOW, Behaviour::Answers(15 * MS, Outcome::Remote)), (FAST, ok(20))],
    );
    let f = sim.run(FailMode::Failbackup, FailOptions::default());
    assert_eq!(failed_with(&f), (Outcome::Remote, SLOW));
    assert_eq!(f.abandon, [AttemptId(1)]);
    assert_eq!(sim.elapsed(), 15 * MS);
}

#[test]
fn failbackup_copy_goes_at_once_when_the_first_cannot_be_sent() {
    let mut sim = Sim::new(Box::new(Script(vec![DEAD, SLOW], Vec::new())));
    let f = sim.run(FailMode::Failbackup, FailOptions::default());
    assert_eq!(sim.sends, [(Duration::ZERO, DEAD.to_owned()), (Duration::ZERO, SLOW.to_owned())]);
    assert_eq!(server_of(&f), SLOW);
}

#[test]
fn failbackup_without_a_server_for_the_copy_waits_for_the_first() {
    let mut sim = Sim::with_servers(Box::new(RoundRobin::default()), &[(SLOW, ok(50))]);
    sim.balancer = Balancer::new(Box::new(Script(vec![SLOW, "gone"], Vec::new())));
    let f = sim.run(FailMode::Failbackup, FailOptions::default());
    assert_eq!((server_of(&f), f.attempts, sim.elapsed()), (SLOW, 1, 50 * MS));
}

// ---- odds and ends ----

#[test]
fn results_for_unknown_attempts_are_ignored() {
    let t = Instant::now();
    let mut plan = Plan::new(FailMode::Failover, FailOptions::default());
    assert_eq!(plan.next(t), Action::Select);
    assert!(!plan.on_result(t, AttemptId(7), Outcome::Ok));
    plan.on_selected(t, Some(ServerKey::new(FAST)));
    let Action::Send { attempt, .. } = plan.next(t) else { panic!() };
    assert_eq!(plan.next(t), Action::Wait { until: None });
    assert!(plan.on_result(t, attempt, Outcome::Ok));
    assert!(!plan.on_result(t, attempt, Outcome::Ok), "reported twice");
    assert!(plan.is_done());
}

#[test]
fn fail_modes_have_go_values_and_defaults() {
    for (m, v) in [(FailMode::Failover, 0), (FailMode::Failfast, 1), (FailMode::Failtry, 2), (FailMode::Failbackup, 3)]
    {
        assert_eq!((m.as_u8(), FailMode::from_u8(v)), (v, Some(m)));
    }
    let o = FailOptions::default();
    assert_eq!((o.retries, o.retry_interval, o.backup_latency, o.deadline), (3, Duration::ZERO, 10 * MS, None));
}

#[test]
fn outcome_table() {
    use Outcome::*;
    let rows = [
        // outcome, retryable, drops connection, breaker verdict
        (Ok, false, false, Some(true)),
        (Remote, false, false, Some(true)),
        (Dial, true, false, Some(false)),
        (Transport, true, true, Some(false)),
        (Unavailable, true, false, None),
        (TimedOut, false, false, Some(false)),
        (Cancelled, false, false, None),
        (Invalid, false, false, None),
    ];
    for (o, retry, drop, verdict) in rows {
        assert_eq!((o.is_retryable(), o.drops_connection(), o.breaker_verdict()), (retry, drop, verdict), "{o:?}");
    }
    use rpcx_core::conn::{CallError, CallRejected, LostReason};
    assert_eq!(Outcome::from(&CallError::TimedOut), TimedOut);
    assert_eq!(Outcome::from(&CallError::Cancelled), Cancelled);
    assert_eq!(Outcome::from(&CallError::ConnectionLost(LostReason::PeerClosed)), Transport);
    assert_eq!(Outcome::from(&CallRejected::Blocked), Unavailable);
    assert_eq!(Outcome::from(&CallRejected::Closing), Transport);
}
