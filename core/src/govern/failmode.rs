//! Fail modes as a planner: a small state machine that tells the runtime what to do
//! next for one `XClient.Call` (select, send, wait, done) and learns from results.

use super::discovery::ServerKey;
use super::outcome::Outcome;
use std::time::{Duration, Instant};

/// Go's `FailMode`, with Go's numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FailMode {
    /// 0: on a retryable failure, select again (maybe the same server) and retry, up to
    /// `retries + 1` attempts.
    #[default]
    Failover,
    /// 1: one attempt.
    Failfast,
    /// 2: like Failover but every attempt goes to the first selected server.
    Failtry,
    /// 3: if nothing came back within `backup_latency`, send a copy to a (newly
    /// selected) server; the first completion wins, even an error.
    Failbackup,
}

impl FailMode {
    /// Go's numeric value.
    pub fn as_u8(self) -> u8 {
        match self {
            FailMode::Failover => 0,
            FailMode::Failfast => 1,
            FailMode::Failtry => 2,
            FailMode::Failbackup => 3,
        }
    }

    /// From Go's numeric value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => FailMode::Failover,
            1 => FailMode::Failfast,
            2 => FailMode::Failtry,
            3 => FailMode::Failbackup,
            _ => return None,
        })
    }
}

/// Knobs of a [`Plan`]; defaults are Go's (`Retries` 3, `RetryInterval` 0,
/// `BackupLatency` 10 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailOptions {
    /// Failover/Failtry: attempts after the first (total attempts = `retries + 1`).
    pub retries: u32,
    /// Failover/Failtry: pause between a failed attempt and the next.
    pub retry_interval: Duration,
    /// Failbackup: how long the first request may go unanswered before the backup.
    pub backup_latency: Duration,
    /// The caller's deadline: once reached the plan ends with
    /// [`Failure::DeadlineExceeded`] and abandons what is in flight. The runtime should
    /// also put it on each call so the connection times the call out.
    pub deadline: Option<Instant>,
}

impl Default for FailOptions {
    fn default() -> Self {
        FailOptions {
            retries: 3,
            retry_interval: Duration::ZERO,
            backup_latency: Duration::from_millis(10),
            deadline: None,
        }
    }
}

/// Names one request a [`Plan`] asked for; results are reported against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub u32);

/// What the runtime does next for a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Run the selector and report with [`Plan::on_selected`].
    Select,
    /// Send the request to `server` now (dialing if needed), then report how it ended
    /// with [`Plan::on_result`] (also when it never left: `Dial`, `Unavailable`).
    Send {
        /// Report the result against this id.
        attempt: AttemptId,
        /// Where to send.
        server: ServerKey,
    },
    /// Nothing to do until a result arrives or `until` (if any) passes; then call
    /// [`Plan::next`] again.
    Wait {
        /// Wake at this instant even with no result.
        until: Option<Instant>,
    },
    /// The call is over.
    Done(Finish),
}

/// How a [`Plan`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// The winning attempt, or why the call failed.
    pub result: Result<Success, Failure>,
    /// Attempts still in flight that no longer matter: cancel them (their late results
    /// are ignored). Report them to circuit breakers as `Cancelled` or not at all.
    pub abandon: Vec<AttemptId>,
    /// How many requests were sent (`Send` actions issued).
    pub attempts: u32,
}

/// The attempt whose reply is the call's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success {
    /// Its id.
    pub attempt: AttemptId,
    /// Where it went.
    pub server: ServerKey,
}

/// Why a [`Plan`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// No server could be selected, and no attempt failed otherwise (Go's
    /// `ErrXClientNoServer`, "can not found any server").
    NoServer,
    /// [`FailOptions::deadline`] passed.
    DeadlineExceeded,
    /// The deciding attempt failed: the last one (Failover/Failtry/Failfast) or the first
    /// to complete (Failbackup). The runtime returns that attempt's error.
    Attempt {
        /// Its id.
        attempt: AttemptId,
        /// Where it went.
        server: ServerKey,
        /// How it ended (never `Ok`).
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Ready to start the next attempt.
    Idle,
    /// `Select` issued; waiting for `on_selected`. `backup`: for Failbackup's copy.
    Selecting {
        backup: bool,
    },
    /// Selected; the next `next` sends here.
    Chosen(ServerKey),
    /// Requests in flight, nothing else to start.
    InFlight,
    /// Pausing before the next attempt.
    Backoff(Instant),
    Done(Finish),
}

/// The fail-mode planner for one call: a pure state machine the runtime drives.
///
/// ```text
/// loop match plan.next(now) {
///     Select            => plan.on_selected(now, balancer.select(now, &mut ctx)),
///     Send{attempt, s}  => start the request on s (admit it through the breaker first;
///                          if refused, plan.on_result(now, attempt, Outcome::Unavailable))
///     Wait{until}       => wait for any result (plan.on_result(now, id, outcome)) or until
///     Done(finish)      => cancel finish.abandon; return finish.result
/// }
/// ```
///
/// Guarantees: `next` eventually returns `Done` once results are reported for every
/// `Send` (or the deadline passes); a remote error, a timeout and a cancellation are
/// never retried (see [`Outcome`]); results for unknown or abandoned attempts are
/// ignored; after `Done`, `next` keeps returning the same `Done`.
///
/// Per mode:
/// * **Failfast**: select, send, done with that result. No server → `NoServer`.
/// * **Failover**: up to `retries + 1` attempts, selecting before each. A retryable
///   failure waits `retry_interval` and selects again (the selector may pick the same
///   server; a server that left discovery cannot be picked). A failed selection uses up
///   an attempt too. The result is the first success, the first final failure, or the
///   last failure (`NoServer` only if no request failed).
/// * **Failtry**: as Failover, but after the first successful selection every attempt
///   goes to that server (the runtime re-dials if its connection was dropped). If the
///   runtime refuses that server locally (`Unavailable`: it left discovery, its breaker
///   is open, its connection is full) the next attempt selects again.
/// * **Failbackup**: send; if no result within `backup_latency`, select again and send a
///   copy; the first result wins, even an error (as Go), and the other is abandoned.
///   One refinement: a first request that never left (`Dial`, `Unavailable`, `Invalid`)
///   is not a completion, so the copy goes out at once instead of returning that error;
///   if the copy cannot go out either, that failure is returned. No retries.
#[derive(Debug, Clone)]
pub struct Plan {
    mode: FailMode,
    opts: FailOptions,
    phase: Phase,
    /// Attempt slots used (sends plus failed selections), for Failover/Failtry.
    tries: u32,
    /// `Send` actions issued.
    sent: u32,
    pinned: Option<ServerKey>,
    in_flight: Vec<(AttemptId, ServerKey)>,
    last_failure: Option<Failure>,
    /// Failbackup: when the copy is due (while not yet sent).
    backup_due: Option<Instant>,
    backup_started: bool,
}

impl Plan {
    /// A plan for one call.
    pub fn new(mode: FailMode, opts: FailOptions) -> Self {
        Plan {
            mode,
            opts,
            phase: Phase::Idle,
            tries: 0,
            sent: 0,
            pinned: None,
            in_flight: Vec::new(),
            last_failure: None,
            backup_due: None,
            backup_started: false,
        }
    }

    /// The fail mode.
    pub fn mode(&self) -> FailMode {
        self.mode
    }

    /// Requests sent so far.
    pub fn attempts(&self) -> u32 {
        self.sent
    }

    /// Whether the plan has finished.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done(_))
    }

    /// Attempts in flight and their servers.
    pub fn in_flight(&self) -> &[(AttemptId, ServerKey)] {
        &self.in_flight
    }

    /// What to do now.
    pub fn next(&mut self, now: Instant) -> Action {
        if let Phase::Done(f) = &self.phase {
            return Action::Done(f.clone());
        }
        if self.opts.deadline.is_some_and(|d| now >= d) {
            return self.finish(Err(Failure::DeadlineExceeded));
        }
        loop {
            match &self.phase {
                Phase::Done(f) => return Action::Done(f.clone()),
                Phase::Idle => {
                    if let (FailMode::Failtry, Some(s)) = (self.mode, &self.pinned) {
                        self.phase = Phase::Chosen(s.clone());
                    } else {
                        self.phase = Phase::Selecting { backup: false };
                        return Action::Select;
                    }
                }
                Phase::Selecting { .. } => return Action::Select,
                Phase::Chosen(server) => {
                    let server = server.clone();
                    let attempt = AttemptId(self.sent);
                    self.sent += 1;
                    if !self.backup_started {
                        self.tries += 1;
                    }
                    if self.mode == FailMode::Failbackup && !self.backup_started {
                        self.backup_due = Some(now + self.opts.backup_latency);
                    }
                    if self.sent > 1 {
                        tracing::debug!(
                            target: "rpcx",
                            mode = ?self.mode,
                            server = server.as_str(),
                            attempt = attempt.0,
                            backup = self.backup_started,
                            "rpcx attempt after the first (retry, failover or backup)"
                        );
                    }
                    self.in_flight.push((attempt, server.clone()));
                    self.phase = Phase::InFlight;
                    return Action::Send { attempt, server };
                }
                Phase::InFlight if self.in_flight.is_empty() && self.backup_due.is_none() => {
                    // Defensive: nothing can complete any more, so do not wait forever.
                    let f = self.last_failure.take().unwrap_or(Failure::NoServer);
                    return self.finish(Err(f));
                }
                Phase::InFlight => {
                    if let Some(due) = self.backup_due {
                        if now >= due {
                            tracing::debug!(target: "rpcx", "rpcx backup request: the first attempt is slow");
                            self.start_backup();
                            return Action::Select;
                        }
                    }
                    return Action::Wait { until: self.cap(self.backup_due) };
                }
                Phase::Backoff(until) => {
                    if now < *until {
                        return Action::Wait { until: self.cap(Some(*until)) };
                    }
                    self.phase = Phase::Idle;
                }
            }
        }
    }

    /// Report the selector's pick for the last `Select` (`None`: no server). Ignored
    /// when no selection is pending.
    pub fn on_selected(&mut self, now: Instant, server: Option<ServerKey>) {
        let Phase::Selecting { backup } = self.phase else { return };
        match (server, backup) {
            (Some(s), _) => {
                if self.mode == FailMode::Failtry && self.pinned.is_none() {
                    self.pinned = Some(s.clone());
                }
                self.phase = Phase::Chosen(s);
            }
            (None, true) => {
                // No server for the copy: keep waiting for the first, or fail with its
                // unsent error if it already failed.
                if self.in_flight.is_empty() {
                    let f = self.last_failure.take().unwrap_or(Failure::NoServer);
                    self.finish_now(Err(f));
                } else {
                    self.phase = Phase::InFlight;
                }
            }
            (None, false) => {
                self.tries += 1;
                if self.last_failure.is_none() {
                    self.last_failure = Some(Failure::NoServer);
                }
                self.after_failure(now);
            }
        }
    }

    /// Report how attempt `attempt` ended. Returns `false` (and changes nothing) for an
    /// unknown, already reported or abandoned attempt.
    pub fn on_result(&mut self, now: Instant, attempt: AttemptId, outcome: Outcome) -> bool {
        if self.is_done() {
            return false;
        }
        let Some(pos) = self.in_flight.iter().position(|(a, _)| *a == attempt) else { return false };
        let (_, server) = self.in_flight.remove(pos);
        if outcome.is_ok() {
            self.finish_now(Ok(Success { attempt, server }));
            return true;
        }
        let failure = Failure::Attempt { attempt, server, outcome };
        match self.mode {
            FailMode::Failfast => self.finish_now(Err(failure)),
            FailMode::Failbackup => {
                if !outcome.is_unsent() {
                    self.finish_now(Err(failure));
                } else if !self.backup_started {
                    self.last_failure = Some(failure);
                    self.start_backup();
                } else if self.in_flight.is_empty() {
                    self.finish_now(Err(failure));
                } else {
                    self.last_failure = Some(failure);
                }
            }
            FailMode::Failover | FailMode::Failtry => {
                if outcome == Outcome::Unavailable {
                    // Refused locally (left discovery, breaker open, connection full):
                    // Failtry picks a new server rather than knocking on a closed door.
                    self.pinned = None;
                }
                self.last_failure = Some(failure);
                if outcome.is_retryable() {
                    self.after_failure(now);
                } else {
                    let f = self.last_failure.take().unwrap_or(Failure::NoServer);
                    self.finish_now(Err(f));
                }
            }
        }
        true
    }

    fn start_backup(&mut self) {
        self.backup_started = true;
        self.backup_due = None;
        self.phase = Phase::Selecting { backup: true };
    }

    /// A retryable failure (or failed selection) used up an attempt: retry or give up.
    fn after_failure(&mut self, now: Instant) {
        let retries_allowed = matches!(self.mode, FailMode::Failover | FailMode::Failtry);
        let max = self.opts.retries.saturating_add(1);
        if !retries_allowed || self.tries >= max {
            let f = self.last_failure.take().unwrap_or(Failure::NoServer);
            self.finish_now(Err(f));
        } else if self.opts.retry_interval.is_zero() {
            self.phase = Phase::Idle;
        } else {
            self.phase = Phase::Backoff(now + self.opts.retry_interval);
        }
    }

    fn cap(&self, until: Option<Instant>) -> Option<Instant> {
        match (until, self.opts.deadline) {
            (Some(u), Some(d)) => Some(u.min(d)),
            (u, d) => u.or(d),
        }
    }

    fn make_finish(&mut self, result: Result<Success, Failure>) -> Finish {
        self.backup_due = None;
        Finish { result, abandon: self.in_flight.drain(..).map(|(a, _)| a).collect(), attempts: self.sent }
    }

    fn finish_now(&mut self, result: Result<Success, Failure>) {
        self.phase = Phase::Done(self.make_finish(result));
    }

    fn finish(&mut self, result: Result<Success, Failure>) -> Action {
        let finish = self.make_finish(result);
        self.phase = Phase::Done(finish.clone());
        Action::Done(finish)
    }
}
