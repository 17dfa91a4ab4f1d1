//! The governor (the whole XClient policy as a stepping machine) driven by a small
//! deterministic simulation: a fake clock, fake connections and scripted servers. Each
//! test drives the documented contract exactly as a runtime does.

use rpcx_core::conn::{CallError, LostReason, RemoteError};
use rpcx_core::error::Error;
use rpcx_core::govern::*;
use rpcx_core::wire::Message;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
const A: &str = "tcp@a:1";
const B: &str = "tcp@b:1";
const C: &str = "tcp@c:1";

/// A fake connection: which server, which dial made it, and whether it is usable.
#[derive(Clone, Debug)]
struct Conn {
    server: String,
    serial: u32,
    usable: Rc<Cell<bool>>,
}

thread_local! {
    /// Heartbeat round trips the fake connections report, by server.
    static RTTS: std::cell::RefCell<HashMap<String, Duration>> = std::cell::RefCell::default();
}

impl ConnHandle for Conn {
    fn is_usable(&self) -> bool {
        self.usable.get()
    }

    fn heartbeat_rtt(&self) -> Option<Duration> {
        RTTS.with(|r| r.borrow().get(&self.server).copied())
    }
}

fn remote(text: &str) -> Error {
    Error::Call(CallError::Remote(RemoteError { text: text.into(), response: Box::new(Message::default()) }))
}

fn lost() -> Error {
    Error::Call(CallError::ConnectionLost(LostReason::PeerClosed))
}

fn refused() -> Error {
    Error::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
}

/// How a simulated server behaves.
#[derive(Clone)]
enum Server {
    /// Dials fail.
    Refuses,
    /// Replies with its name after the latency.
    Replies(Duration),
    /// Fails every call with this error after the latency.
    Fails(Duration, fn() -> Error),
    /// Never answers.
    Hangs,
}

/// When an attempt ends, and how.
type End = (Instant, Result<String, Error>);

/// The simulated world around one governor.
struct Sim {
    now: Instant,
    gov: Governor<Conn>,
    servers: HashMap<String, Server>,
    dials: u32,
    /// Connections the governor asked to close.
    closed: Vec<Conn>,
    /// `(attempt, server)` for every `Start`.
    starts: Vec<(AttemptId, String)>,
}

fn discovery(keys: &[&str]) -> Arc<MultiDiscovery> {
    Arc::new(MultiDiscovery::new(keys.iter().map(|k| Instance::new(*k, ""))))
}

impl Sim {
    fn new(d: Arc<MultiDiscovery>, opts: GovernorOptions, servers: &[(&str, Server)]) -> Self {
        Sim {
            now: Instant::now(),
            gov: Governor::new("Arith", d, opts),
            servers: servers.iter().map(|(k, s)| (k.to_string(), s.clone())).collect(),
            dials: 0,
            closed: Vec::new(),
            starts: Vec::new(),
        }
    }

    fn drain_retired(&mut self) {
        while let Some(c) = self.gov.poll_retired() {
            c.usable.set(false);
            self.closed.push(c);
        }
    }

    /// Resolve a `Connect` to the attempt's scheduled end: `(due, result)`, or `None`
    /// for a server that hangs.
    fn start(&mut self, server: &ServerKey, mut conn: Connect<Conn>) -> Option<End> {
        loop {
            conn = match conn {
                Connect::Ready(c) => {
                    assert_eq!(c.server, server.as_str());
                    return match self.servers[server.as_str()].clone() {
                        Server::Replies(d) => Some((self.now + d, Ok(server.as_str().to_owned()))),
                        Server::Fails(d, e) => Some((self.now + d, Err(e()))),
                        Server::Hangs => None,
                        Server::Refuses => unreachable!("no connection to a refusing server"),
                    };
                }
                Connect::Dial(t) => {
                    self.dials += 1;
                    let result = match self.servers[server.as_str()] {
                        Server::Refuses => Err(refused()),
                        _ => Ok(Conn {
                            server: server.as_str().to_owned(),
                            serial: self.dials,
                            usable: Rc::new(Cell::new(true)),
                        }),
                    };
                    self.gov.on_dialed(self.now, server, t, result)
                }
                Connect::Wait(_) => panic!("one call at a time never waits on another's dial"),
                Connect::Failed(e) => return Some((self.now, Err(e))),
            };
        }
    }

    /// Drive one call to its end, checking the contract at every step.
    fn call(&mut self, method: &str, timeout: Option<Duration>) -> Result<String, Error> {
        let mut run: CallRun<String> = self.gov.call(self.now, method, timeout)?;
        let mut pending: Vec<(AttemptId, Option<End>)> = Vec::new();
        for _ in 0..1000 {
            let step = run.poll(&mut self.gov, self.now);
            self.drain_retired();
            match step {
                Step::Start(s) => {
                    self.starts.push((s.attempt, s.server.as_str().to_owned()));
                    let end = self.start(&s.server, s.conn);
                    pending.push((s.attempt, end));
                }
                Step::Wait { until } => {
                    assert!(until.is_some() || run.running() > 0, "a wait that could never end");
                    assert_eq!(run.running(), pending.len());
                    let next = pending.iter().filter_map(|(_, e)| e.as_ref().map(|e| e.0)).min();
                    let wake = match (next, until) {
                        (Some(n), Some(u)) => n.min(u),
                        (n, u) => n.or(u).expect("something to wait for"),
                    };
                    self.now = self.now.max(wake);
                    if let Some(i) = pending.iter().position(|(_, e)| e.as_ref().is_some_and(|e| e.0 <= self.now)) {
                        let (id, end) = pending.remove(i);
                        let (_, result) = end.unwrap();
                        assert!(run.report(&mut self.gov, self.now, id, result));
                        self.drain_retired();
                    }
                }
                Step::Done => {
                    let r = run.take_result().expect("a finished call has a result");
                    assert!(run.take_result().is_none());
                    assert!(matches!(run.poll(&mut self.gov, self.now), Step::Done));
                    return r;
                }
            }
        }
        panic!("the call never ended");
    }

    /// Drive one fan-out; attempts end in the order of their latencies.
    fn gather(&mut self, mode: GatherMode) -> Result<GatherRun<String>, Error> {
        let mut run: GatherRun<String> = self.gov.gather(self.now, mode)?;
        let mut pending = Vec::new();
        loop {
            match run.poll(&mut self.gov, self.now) {
                Step::Start(s) => {
                    let end = self.start(&s.server, s.conn);
                    pending.push((s.attempt, end));
                }
                Step::Wait { until } => {
                    let until = until.expect("a fan-out always has a deadline");
                    let next = pending.iter().filter_map(|(_, e)| e.as_ref().map(|e| e.0)).min();
                    self.now = next.map_or(until, |n| n.min(until));
                    if let Some(i) = pending.iter().position(|(_, e)| e.as_ref().is_some_and(|e| e.0 <= self.now)) {
                        let (id, end) = pending.remove(i);
                        assert!(run.report(&mut self.gov, self.now, id, end.unwrap().1));
                    }
                }
                Step::Done => return Ok(run),
            }
        }
    }
}

fn opts(mode: FailMode) -> GovernorOptions {
    GovernorOptions { fail_mode: mode, ..Default::default() }
}

fn servers_of(starts: &[(AttemptId, String)]) -> Vec<&str> {
    starts.iter().map(|(_, s)| s.as_str()).collect()
}

#[test]
fn failover_moves_past_a_refusing_server_and_returns_the_winners_result() {
    let fast = Server::Replies(2 * MS);
    let mut sim = Sim::new(discovery(&[A, B]), opts(FailMode::Failover), &[(A, Server::Refuses), (B, fast)]);
    assert_eq!(sim.call("Mul", None).unwrap(), B);
    assert_eq!(servers_of(&sim.starts), [A, B]);
    assert_eq!(sim.gov.connected(), [ServerKey::new(B)]);
    // The failed dial is forgotten: the next use of A dials again.
    sim.starts.clear();
    assert_eq!(sim.call("Mul", None).unwrap(), B);
    assert_eq!(servers_of(&sim.starts), [A, B]);
    assert_eq!(sim.dials, 3, "A dialed twice, B once (then cached)");
}

#[test]
fn failfast_returns_the_first_attempts_own_error() {
    let mut sim = Sim::new(discovery(&[A, B]), opts(FailMode::Failfast), &[(A, Server::Refuses), (B, Server::Hangs)]);
    let err = sim.call("Mul", None).unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
    assert_eq!(sim.starts.len(), 1);
}

#[test]
fn failtry_retries_the_same_server_until_retries_run_out() {
    let mut o = opts(FailMode::Failtry);
    o.fail.retries = 2;
    o.fail.retry_interval = 5 * MS;
    let mut sim = Sim::new(discovery(&[A, B]), o, &[(A, Server::Fails(MS, lost)), (B, Server::Replies(MS))]);
    let t0 = sim.now;
    let err = sim.call("Mul", None).unwrap_err();
    assert!(matches!(err, Error::Call(CallError::ConnectionLost(_))), "{err:?}");
    assert_eq!(servers_of(&sim.starts), [A, A, A]);
    // Each transport failure dropped exactly that connection (closed, then redialed).
    assert_eq!(sim.closed.len(), 3);
    assert_eq!(sim.dials, 3);
    assert_eq!(sim.now - t0, 3 * MS + 2 * 5 * MS, "retry interval between attempts");
}

#[test]
fn remote_errors_are_final_and_reach_the_hooks() {
    let hooks = Arc::new(Recorder::default());
    let mut o = opts(FailMode::Failover);
    o.hooks = vec![hooks.clone()];
    let mut sim =
        Sim::new(discovery(&[A, B]), o, &[(A, Server::Fails(MS, || remote("nope"))), (B, Server::Replies(MS))]);
    let err = sim.call("Mul", None).unwrap_err();
    assert_eq!(err.remote().map(|r| r.text.as_str()), Some("nope"));
    assert_eq!(sim.starts.len(), 1);
    let log = hooks.log.lock().unwrap().clone();
    assert_eq!(log, ["select Mul tcp@a:1 of 2"], "one selection: a remote error is not retried");
}

#[test]
fn failbackup_sends_a_copy_after_the_latency_and_takes_the_first_completion() {
    let mut o = opts(FailMode::Failbackup);
    o.fail.backup_latency = 10 * MS;
    let mut sim = Sim::new(discovery(&[A, B]), o, &[(A, Server::Hangs), (B, Server::Replies(3 * MS))]);
    let t0 = sim.now;
    assert_eq!(sim.call("Mul", None).unwrap(), B, "the copy's reply");
    assert_eq!(servers_of(&sim.starts), [A, B]);
    assert_eq!(sim.now - t0, 13 * MS);
}

#[test]
fn deadline_ends_a_call_whose_servers_hang() {
    let mut sim = Sim::new(discovery(&[A]), opts(FailMode::Failover), &[(A, Server::Hangs)]);
    let t0 = sim.now;
    let err = sim.call("Mul", Some(50 * MS)).unwrap_err();
    assert!(matches!(err, Error::Call(CallError::TimedOut)), "{err:?}");
    assert_eq!(sim.now - t0, 50 * MS);
}

#[test]
fn sticky_is_recorded_only_for_an_ok_call() {
    let mut o = opts(FailMode::Failfast);
    o.sticky = true;
    let mut sim = Sim::new(
        discovery(&[A, B, C]),
        o,
        &[(A, Server::Fails(MS, || remote("no"))), (B, Server::Replies(MS)), (C, Server::Replies(MS))],
    );
    // Round robin: A first. Its remote error is a plan-level final answer, not an Ok.
    assert!(sim.call("Mul", None).is_err());
    assert_eq!(sim.gov.sticky(), None, "a failed call records no sticky server");
    assert_eq!(sim.call("Mul", None).unwrap(), B);
    assert_eq!(sim.gov.sticky(), Some(&ServerKey::new(B)));
    // Round robin would go to C now; sticky keeps B while its connection is usable.
    for _ in 0..3 {
        assert_eq!(sim.call("Mul", None).unwrap(), B);
    }
    // B's connection dies: selection moves on.
    let Connect::Ready(b) = sim.gov.connect(sim.now, &ServerKey::new(B)) else { panic!() };
    b.usable.set(false);
    assert_ne!(sim.call("Mul", None).unwrap(), B);
}

#[test]
fn an_open_breaker_takes_its_server_out_until_the_cooldown() {
    let mut o = opts(FailMode::Failfast);
    o.breaker = Some(BreakerConfig::consecutive(2, Duration::from_secs(1)));
    let mut sim = Sim::new(discovery(&[A, B]), o, &[(A, Server::Fails(MS, lost)), (B, Server::Replies(MS))]);
    // A, B, A: two transport failures on A open its breaker.
    assert!(sim.call("Mul", None).is_err());
    assert!(sim.call("Mul", None).is_ok());
    assert!(sim.call("Mul", None).is_err());
    sim.starts.clear();
    for _ in 0..4 {
        assert_eq!(sim.call("Mul", None).unwrap(), B);
    }
    assert_eq!(servers_of(&sim.starts), [B, B, B, B]);
    // After the cool-down A gets its half-open trial.
    sim.now += Duration::from_secs(2);
    sim.starts.clear();
    let _ = sim.call("Mul", None);
    let _ = sim.call("Mul", None);
    assert!(servers_of(&sim.starts).contains(&A));
}

#[test]
fn discovery_churn_retires_the_connections_of_servers_that_left() {
    let d = discovery(&[A, B]);
    let mut sim = Sim::new(d.clone(), opts(FailMode::Failover), &[(A, Server::Replies(MS)), (B, Server::Replies(MS))]);
    sim.call("Mul", None).unwrap();
    sim.call("Mul", None).unwrap();
    assert_eq!(sim.gov.connected().len(), 2);
    d.update([Instance::new(B, "")]);
    assert_eq!(sim.call("Mul", None).unwrap(), B);
    assert_eq!(sim.closed.iter().map(|c| c.server.as_str()).collect::<Vec<_>>(), [A]);
    assert_eq!(sim.gov.connected(), [ServerKey::new(B)]);
}

#[test]
fn concurrent_first_uses_share_one_dial_and_its_failure() {
    let mut sim = Sim::new(discovery(&[A]), opts(FailMode::Failfast), &[(A, Server::Refuses)]);
    let now = sim.now;
    let mut first: CallRun<String> = sim.gov.call(now, "Mul", None).unwrap();
    let mut second: CallRun<String> = sim.gov.call(now, "Mul", None).unwrap();
    let Step::Start(s1) = first.poll(&mut sim.gov, now) else { panic!() };
    let Step::Start(s2) = second.poll(&mut sim.gov, now) else { panic!() };
    let Connect::Dial(t) = s1.conn else { panic!("the first use dials: {:?}", s1.conn) };
    let Connect::Wait(t2) = s2.conn else { panic!("the second waits for that dial: {:?}", s2.conn) };
    assert_eq!(t, t2);
    assert!(sim.gov.is_dialing(&s2.server, t));
    assert!(matches!(sim.gov.dial_status(now, &s2.server, t), Connect::Wait(_)));
    let Connect::Failed(e1) = sim.gov.on_dialed(now, &s1.server, t, Err(refused())) else { panic!() };
    let Connect::Failed(e2) = sim.gov.dial_status(now, &s2.server, t) else { panic!("the waiter shares the failure") };
    assert_eq!(e1.to_string(), e2.to_string());
    assert!(first.report(&mut sim.gov, now, s1.attempt, Err(e1)));
    assert!(second.report(&mut sim.gov, now, s2.attempt, Err(e2)));
    assert!(matches!(first.poll(&mut sim.gov, now), Step::Done));
    assert!(matches!(second.poll(&mut sim.gov, now), Step::Done));
    assert!(matches!(first.take_result(), Some(Err(Error::Connect(_)))));
    assert!(matches!(second.take_result(), Some(Err(Error::Connect(_)))));
    // The failure is not cached: the next use dials afresh.
    assert!(matches!(sim.gov.connect(now, &ServerKey::new(A)), Connect::Dial(t3) if t3 > t));
}

#[test]
fn an_abandoned_dial_is_taken_over_by_a_waiter() {
    let mut sim = Sim::new(discovery(&[A]), opts(FailMode::Failfast), &[(A, Server::Replies(MS))]);
    let (now, a) = (sim.now, ServerKey::new(A));
    let Connect::Dial(t) = sim.gov.connect(now, &a) else { panic!() };
    assert!(matches!(sim.gov.connect(now, &a), Connect::Wait(w) if w == t));
    sim.gov.abandon_dial(&a, t);
    let Connect::Dial(t2) = sim.gov.dial_status(now, &a, t) else { panic!("the waiter dials now") };
    assert!(matches!(sim.gov.dial_status(now, &a, t), Connect::Wait(w) if w == t2), "the next waits on it");
    let conn = Conn { server: A.into(), serial: 9, usable: Rc::new(Cell::new(true)) };
    assert!(matches!(sim.gov.on_dialed(now + MS, &a, t2, Ok(conn)), Connect::Ready(c) if c.serial == 9));
    assert!(matches!(sim.gov.dial_status(now, &a, t2), Connect::Ready(c) if c.serial == 9));
}

#[test]
fn a_transport_failure_drops_only_the_connection_it_happened_on() {
    let mut sim = Sim::new(discovery(&[A]), opts(FailMode::Failfast), &[(A, Server::Replies(MS))]);
    let (now, a) = (sim.now, ServerKey::new(A));
    sim.call("Mul", None).unwrap();
    let mut run: CallRun<String> = sim.gov.call(now, "Mul", None).unwrap();
    let Step::Start(s) = run.poll(&mut sim.gov, now) else { panic!() };
    let Connect::Ready(old) = s.conn else { panic!() };
    // Meanwhile another caller found the connection dead and redialed.
    old.usable.set(false);
    let Connect::Dial(t) = sim.gov.connect(now, &a) else { panic!() };
    let fresh = Conn { server: A.into(), serial: 7, usable: Rc::new(Cell::new(true)) };
    let _ = sim.gov.on_dialed(now, &a, t, Ok(fresh));
    sim.drain_retired();
    assert!(run.report(&mut sim.gov, now, s.attempt, Err(lost())));
    sim.drain_retired();
    assert!(sim.closed.iter().all(|c| c.serial != 7), "the fresh connection stays");
    assert!(matches!(sim.gov.connect(now, &a), Connect::Ready(c) if c.serial == 7));
}

#[test]
fn reports_for_unknown_or_repeated_attempts_are_ignored() {
    let mut sim = Sim::new(discovery(&[A]), opts(FailMode::Failover), &[(A, Server::Replies(MS))]);
    let now = sim.now;
    let mut run: CallRun<String> = sim.gov.call(now, "Mul", None).unwrap();
    let Step::Start(s) = run.poll(&mut sim.gov, now) else { panic!() };
    assert!(!run.report(&mut sim.gov, now, AttemptId(42), Ok("x".into())));
    assert!(run.report(&mut sim.gov, now, s.attempt, Ok("first".into())));
    assert!(!run.report(&mut sim.gov, now, s.attempt, Ok("second".into())));
    assert!(matches!(run.poll(&mut sim.gov, now), Step::Done));
    assert_eq!(run.take_result().unwrap().unwrap(), "first");
}

#[test]
fn select_hooks_steer_every_selection_and_failed_dials_are_reported() {
    let hooks = Arc::new(Recorder::default());
    let mut o = opts(FailMode::Failover);
    o.hooks = vec![hooks.clone()];
    let mut sim = Sim::new(discovery(&[A, B]), o, &[(A, Server::Refuses), (B, Server::Replies(MS))]);
    assert!(matches!(sim.call("Nowhere", None), Err(Error::NoServer)), "the hook chose no server");
    assert!(sim.starts.is_empty(), "nothing was sent");
    assert_eq!(sim.call("OnlyB", None).unwrap(), B, "the hook's choice");
    assert_eq!(sim.call("Mul", None).unwrap(), B);
    assert_eq!(sim.call("Mul", None).unwrap(), B, "failed over from the refusing server");
    let log = hooks.log.lock().unwrap().clone();
    let failed: Vec<_> = log.iter().filter(|l| l.starts_with("create failed")).collect();
    assert_eq!(failed, ["create failed tcp@a:1: connect failed: connection refused"], "{log:?}");
    let count = |m: &str| log.iter().filter(|l| l.starts_with(&format!("select {m} "))).count();
    assert_eq!(count("Nowhere"), 4, "every failover attempt asks again: {log:?}");
    assert_eq!(count("OnlyB"), 1, "{log:?}");
    assert_eq!(count("Mul"), 3, "b; then a (refused), b: {log:?}");
}

#[test]
fn no_server_is_a_clear_error_for_calls_and_fan_outs() {
    let mut sim = Sim::new(discovery(&[]), opts(FailMode::Failover), &[]);
    assert!(matches!(sim.call("Mul", None), Err(Error::NoServer)));
    assert!(matches!(sim.gather(GatherMode::Broadcast), Err(Error::NoServer)));
}

#[test]
fn broadcast_fork_and_inform_fold_their_receipts() {
    let servers =
        [(A, Server::Replies(3 * MS)), (B, Server::Fails(MS, || remote("b failed"))), (C, Server::Replies(2 * MS))];
    let mut sim = Sim::new(discovery(&[A, B, C]), opts(FailMode::Failover), &servers);
    let err = sim.gather(GatherMode::Broadcast).unwrap().into_broadcast().unwrap_err();
    assert_eq!(err.remote().unwrap().text, "b failed");
    // Fork: the first reply to arrive (C, at 2 ms) wins; A is abandoned.
    let t0 = sim.now;
    let run = sim.gather(GatherMode::Fork).unwrap();
    assert_eq!(sim.now - t0, 2 * MS);
    assert_eq!(run.into_fork().unwrap(), C);
    // Inform: every server's own result, in key order.
    let receipts = sim.gather(GatherMode::Inform).unwrap().into_receipts();
    let got: Vec<(&str, Result<&str, String>)> =
        receipts.iter().map(|r| (r.server.as_str(), r.result.as_deref().map_err(|e| e.to_string()))).collect();
    assert_eq!(got, [(A, Ok(A)), (B, Err("b failed".to_owned())), (C, Ok(C))]);

    // All succeed: Broadcast gives one reply. A hanging server: cut off at the timeout.
    let mut o = opts(FailMode::Failover);
    o.gather_timeout = 40 * MS;
    let ok = [(A, Server::Replies(MS)), (B, Server::Hangs)];
    let mut sim = Sim::new(discovery(&[A, B]), o, &ok);
    let t0 = sim.now;
    let receipts = sim.gather(GatherMode::Inform).unwrap().into_receipts();
    assert_eq!(sim.now - t0, 40 * MS);
    assert!(receipts[0].result.is_ok());
    assert!(receipts[1].result.as_ref().unwrap_err().is_timeout());
    let mut sim = Sim::new(discovery(&[A]), opts(FailMode::Failover), &[(A, Server::Replies(MS))]);
    assert_eq!(sim.gather(GatherMode::Broadcast).unwrap().into_broadcast().unwrap(), A);
}

#[test]
fn fork_fails_only_when_every_server_fails() {
    let servers = [(A, Server::Refuses), (B, Server::Fails(MS, lost))];
    let mut sim = Sim::new(discovery(&[A, B]), opts(FailMode::Failover), &servers);
    let err = sim.gather(GatherMode::Fork).unwrap().into_fork().unwrap_err();
    assert!(matches!(err, Error::Call(CallError::ConnectionLost(_))), "the last failure in key order: {err:?}");
}

/// Random worlds, every fail mode: the governor never asks for a wait that could not
/// end, every call ends with a result, and `Done` comes exactly once.
#[test]
fn never_waits_forever_in_random_worlds() {
    let mut rng = SplitMix64::new(11);
    let modes = [FailMode::Failfast, FailMode::Failover, FailMode::Failtry, FailMode::Failbackup];
    let errors: [fn() -> Error; 4] = [lost, refused, || remote("r"), || Error::Call(CallError::TimedOut)];
    for round in 0..400 {
        let pick = |rng: &mut SplitMix64, n: u64| (rng.next_u64() % n) as usize;
        let keys = [A, B, C];
        let n = pick(&mut rng, 4);
        let mut servers = Vec::new();
        for k in &keys[..n] {
            let s = match pick(&mut rng, 4) {
                0 => Server::Refuses,
                1 => Server::Replies(Duration::from_millis(pick(&mut rng, 30) as u64)),
                2 => Server::Fails(Duration::from_millis(pick(&mut rng, 30) as u64), errors[pick(&mut rng, 4)]),
                _ => Server::Hangs,
            };
            servers.push((*k, s));
        }
        let mut o = opts(modes[round % 4]);
        o.fail.retry_interval = Duration::from_millis(pick(&mut rng, 3) as u64);
        if pick(&mut rng, 2) == 0 {
            o.breaker = Some(BreakerConfig::consecutive(1, 5 * MS));
        }
        o.sticky = pick(&mut rng, 2) == 0;
        let any_hang = servers.iter().any(|(_, s)| matches!(s, Server::Hangs));
        let mut sim = Sim::new(discovery(&keys[..n]), o, &servers);
        for _ in 0..3 {
            // Without a deadline, only hanging servers may keep a call waiting (on them).
            let timeout = if any_hang || pick(&mut rng, 2) == 0 { Some(100 * MS) } else { None };
            let _ = sim.call("Mul", timeout);
        }
    }
}

/// Records hook calls.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
}

impl ClientHooks for Recorder {
    fn select(&self, _service_path: &str, method: &str, servers: &[Instance], chosen: &mut Option<ServerKey>) {
        let pick = chosen.as_ref().map_or("-", |s| s.as_str()).to_owned();
        self.log.lock().unwrap().push(format!("select {method} {pick} of {}", servers.len()));
        match method {
            "Nowhere" => *chosen = None,
            "OnlyB" => *chosen = Some(ServerKey::new(B)),
            _ => {}
        }
    }
    fn conn_create_failed(&self, server: &str, error: &str) {
        self.log.lock().unwrap().push(format!("create failed {server}: {error}"));
    }
}

/// Panics in every user callback of the client side: hooks, the selector, discovery
/// change callbacks. Each is contained to a clear error (or ignored), and the governor
/// keeps working.
#[test]
fn panicking_user_callbacks_never_escape() {
    struct Boom;
    impl ClientHooks for Boom {
        fn select(&self, _p: &str, method: &str, _s: &[Instance], chosen: &mut Option<ServerKey>) {
            if method == "Boom" {
                *chosen = None;
                panic!("select boom");
            }
        }
        fn conn_create_failed(&self, _s: &str, _e: &str) {
            panic!("conn_create_failed boom");
        }
    }
    let mut o = opts(FailMode::Failover);
    o.hooks = vec![Arc::new(Boom)];
    let d = discovery(&[A]);
    d.subscribe(Arc::new(|_| panic!("change callback boom")));
    let mut sim = Sim::new(d.clone(), o, &[(A, Server::Replies(MS)), (B, Server::Replies(MS))]);
    assert!(matches!(sim.call("Boom", None), Err(Error::NoServer)), "what the hook did before it panicked stands");
    assert_eq!(sim.call("Mul", None).unwrap(), A);
    d.update([Instance::new(B, "")]);
    assert_eq!(sim.call("Mul", None).unwrap(), B);

    /// Panics on every select after the first.
    #[derive(Default)]
    struct Flaky(u32, Option<ServerKey>);
    impl Selector for Flaky {
        fn update(&mut self, servers: &[Instance]) {
            self.1 = servers.first().map(|s| s.key().clone());
        }
        fn select(&mut self, _ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
            self.0 += 1;
            assert!(self.0 < 2, "selector boom");
            self.1.clone()
        }
    }
    let mut o = opts(FailMode::Failfast);
    o.selector = Box::new(Flaky::default());
    let mut sim = Sim::new(discovery(&[A]), o, &[(A, Server::Replies(MS))]);
    assert_eq!(sim.call("Mul", None).unwrap(), A);
    assert!(matches!(sim.call("Mul", None), Err(Error::NoServer)), "a panicking selector picks no server");
}

/// Heartbeat round trips reach the selector (at most once a second, only when they
/// change), so the latency selector weighs servers by them.
#[test]
fn heartbeat_round_trips_feed_the_selector() {
    type Log = Arc<Mutex<Vec<(String, Option<Duration>)>>>;
    #[derive(Default)]
    struct Seen(Log, Option<ServerKey>);
    impl Selector for Seen {
        fn update(&mut self, servers: &[Instance]) {
            self.1 = servers.first().map(|s| s.key().clone());
        }
        fn select(&mut self, _ctx: &mut SelectContext<'_>) -> Option<ServerKey> {
            self.1.clone()
        }
        fn observe_rtt(&mut self, server: &ServerKey, rtt: Option<Duration>) {
            self.0.lock().unwrap().push((server.as_str().to_owned(), rtt));
        }
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut o = opts(FailMode::Failfast);
    o.selector = Box::new(Seen(log.clone(), None));
    let mut sim = Sim::new(discovery(&[A]), o, &[(A, Server::Replies(MS))]);
    sim.call("Mul", None).unwrap();
    let dial_samples = log.lock().unwrap().len();
    RTTS.with(|r| r.borrow_mut().insert(A.to_owned(), 7 * MS));
    sim.call("Mul", None).unwrap(); // within a second of the last look: not read yet
    assert_eq!(log.lock().unwrap().len(), dial_samples);
    sim.now += Duration::from_secs(1);
    sim.call("Mul", None).unwrap();
    sim.now += Duration::from_secs(1);
    sim.call("Mul", None).unwrap(); // unchanged: not fed again
    let log = log.lock().unwrap();
    assert_eq!(log.len(), dial_samples + 1, "{log:?}");
    assert_eq!(log.last().unwrap(), &(A.to_owned(), Some(7 * MS)));
}
