//! One call's or one fan-out's steps under a [`Governor`]: [`CallRun`] wraps a fail-mode
//! [`Plan`], [`GatherRun`] a [`Gather`]; both own their attempts' results.

use super::aggregate::{EntryResult, Gather, GatherMode, GatherStep};
use super::discovery::ServerKey;
use super::failmode::{Action, AttemptId, FailMode, FailOptions, Failure, Plan, Success};
use super::governor::{ConnHandle, Connect, DialTicket, Governor};
use super::outcome::Outcome;
use crate::conn::CallError;
use crate::error::Error;
use std::time::{Duration, Instant};

/// What the runtime does next for a [`CallRun`] or [`GatherRun`].
#[derive(Debug)]
#[must_use]
pub enum Step<C> {
    /// Start an attempt; it ends in exactly one `report` for `attempt`.
    Start(Start<C>),
    /// Wait until an attempt ends (report it) or `until` passes, then poll again.
    /// `until` is `None` only while some started attempt has not been reported.
    Wait {
        /// Poll again at this instant even if nothing ended.
        until: Option<Instant>,
    },
    /// Over: cancel (drop) every attempt still running, then take the result.
    Done,
}

/// One attempt to start.
#[derive(Debug)]
#[must_use]
pub struct Start<C> {
    /// Report its result against this id (a [`GatherRun`]'s ids are server indices).
    pub attempt: AttemptId,
    /// Where it goes.
    pub server: ServerKey,
    /// Its connection, or how to get one.
    pub conn: Connect<C>,
}

/// One server's result of a Broadcast/Fork/Inform.
#[derive(Debug, Clone)]
pub struct Receipt<T> {
    /// The server (`network@addr`).
    pub server: ServerKey,
    /// Its own result: a server cut off by the gather timeout has
    /// `CallError::TimedOut`, one abandoned after the outcome was known (Fork's
    /// losers) `CallError::Cancelled`.
    pub result: Result<T, Error>,
}

/// How an attempt's result counts: a codec error in a result is a reply that could not
/// be decoded (final, as Go's `ServiceError`).
fn classify<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::from_error(e, Outcome::Remote),
    }
}

struct Attempt<T> {
    id: AttemptId,
    server: ServerKey,
    ticket: DialTicket,
    running: bool,
    result: Option<Result<T, Error>>,
}

/// One `XClient` call under the fail mode: the plan loop (select, sticky, admit,
/// wait, done), outcome mapping, breakers and hooks, stepped by the runtime. Made by
/// [`Governor::call`]; see [`Governor`] for the drive contract.
///
/// `T` is what a successful attempt yields in the runtime (a raw response, a decoded
/// reply). The run keeps every attempt's result, so the winner's is always there.
pub struct CallRun<T> {
    method: String,
    hash_key: Option<bytes::Bytes>,
    deadline: Option<Instant>,
    plan: Plan,
    attempts: Vec<Attempt<T>>,
    running: usize,
    result: Option<Result<T, Error>>,
    done: bool,
}

impl<T> std::fmt::Debug for CallRun<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRun")
            .field("method", &self.method)
            .field("plan", &self.plan)
            .field("running", &self.running)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> CallRun<T> {
    pub(super) fn new(method: &str, mode: FailMode, opts: FailOptions) -> Self {
        CallRun {
            method: method.to_owned(),
            hash_key: None,
            deadline: opts.deadline,
            plan: Plan::new(mode, opts),
            attempts: Vec::new(),
            running: 0,
            result: None,
            done: false,
        }
    }

    /// The method called.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Pass `key` to the selector for every pick of this call (the consistent-hash
    /// key: calls with the same key go to the same server).
    #[must_use]
    pub fn with_hash_key(mut self, key: Option<bytes::Bytes>) -> Self {
        self.hash_key = key;
        self
    }

    /// The call's deadline (put it on each request too, so the connection times the
    /// request out).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Attempts started and not yet reported.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Requests sent so far (attempts admitted and refused).
    pub fn attempts(&self) -> u32 {
        self.plan.attempts()
    }

    /// Whether the call is over.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The call's result, once [`poll`](Self::poll) returned [`Step::Done`] (`None`
    /// before, and after it was taken).
    pub fn take_result(&mut self) -> Option<Result<T, Error>> {
        self.result.take()
    }

    /// What to do next.
    pub fn poll<C: ConnHandle>(&mut self, gov: &mut Governor<C>, now: Instant) -> Step<C> {
        if self.done {
            return Step::Done;
        }
        loop {
            match self.plan.next(now) {
                Action::Select => {
                    let pick = gov.select(now, &self.method, self.hash_key.as_deref());
                    self.plan.on_selected(now, pick);
                }
                Action::Send { attempt, server } => {
                    if !gov.admit(now, &server) {
                        let _ = self.plan.on_result(now, attempt, Outcome::Unavailable);
                        continue;
                    }
                    let (conn, ticket) = gov.connect_ticket(now, &server);
                    self.attempts.push(Attempt {
                        id: attempt,
                        server: server.clone(),
                        ticket,
                        running: true,
                        result: None,
                    });
                    self.running += 1;
                    return Step::Start(Start { attempt, server, conn });
                }
                Action::Wait { until } => {
                    if until.is_none() && self.running == 0 {
                        // Nothing can end and nothing will wake the runtime: end here
                        // rather than ask for a wait that never ends.
                        self.finish(gov, Err(Failure::NoServer));
                        return Step::Done;
                    }
                    return Step::Wait { until };
                }
                Action::Done(finish) => {
                    self.finish(gov, finish.result);
                    return Step::Done;
                }
            }
        }
    }

    /// Report how `attempt` ended. Feeds the breaker, drops the connection after a
    /// transport failure, and tells the plan. Returns `false` (and drops `result`) for
    /// an unknown or already reported attempt, or once the call is over.
    pub fn report<C: ConnHandle>(
        &mut self,
        gov: &mut Governor<C>,
        now: Instant,
        attempt: AttemptId,
        result: Result<T, Error>,
    ) -> bool {
        if self.done {
            return false;
        }
        let Some(a) = self.attempts.iter_mut().find(|a| a.id == attempt && a.running) else { return false };
        a.running = false;
        self.running -= 1;
        let outcome = classify(&result);
        gov.record(now, &a.server, a.ticket, outcome);
        a.result = Some(result);
        self.plan.on_result(now, attempt, outcome)
    }

    fn take(&mut self, attempt: AttemptId) -> Option<Result<T, Error>> {
        self.attempts.iter_mut().find(|a| a.id == attempt).and_then(|a| a.result.take())
    }

    fn finish<C: ConnHandle>(&mut self, gov: &mut Governor<C>, outcome: Result<Success, Failure>) {
        let (server, result) = match outcome {
            // The plan reports success only for an attempt reported `Ok` here.
            Ok(s) => {
                let r = self.take(s.attempt).unwrap_or(Err(Error::NoServer));
                (Some(s.server), r)
            }
            Err(Failure::DeadlineExceeded) => (None, Err(Error::Call(CallError::TimedOut))),
            // No result is kept for an attempt refused locally (breaker, left discovery).
            Err(Failure::Attempt { attempt, server, .. }) => {
                let r = self.take(attempt).unwrap_or(Err(Error::NoServer));
                (Some(server), r)
            }
            Err(_) => (None, Err(Error::NoServer)),
        };
        self.done = true;
        self.running = 0;
        for a in &mut self.attempts {
            a.running = false;
            a.result = None;
        }
        gov.on_call_end(&self.method, server.as_ref(), result.as_ref().err());
        self.result = Some(result);
    }
}

/// One Broadcast, Fork or Inform under a [`Governor`]: starts one attempt per server,
/// folds the results. Made by [`Governor::gather`]; see [`Governor`] for the drive
/// contract. Hooks do not run for fan-outs.
pub struct GatherRun<T> {
    gather: Gather<Result<T, Error>>,
    tickets: Vec<Option<DialTicket>>,
    running: Vec<bool>,
    started: usize,
    done: bool,
}

impl<T> std::fmt::Debug for GatherRun<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatherRun")
            .field("servers", &self.gather.servers())
            .field("started", &self.started)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> GatherRun<T> {
    pub(super) fn new(mode: GatherMode, servers: Vec<ServerKey>, now: Instant, timeout: Duration) -> Self {
        let n = servers.len();
        GatherRun {
            gather: Gather::new(mode, servers, now, timeout),
            tickets: vec![None; n],
            running: vec![false; n],
            started: 0,
            done: false,
        }
    }

    /// The servers, indexed by attempt id.
    pub fn servers(&self) -> &[ServerKey] {
        self.gather.servers()
    }

    /// When the fan-out gives up on the servers that have not answered (put it on
    /// each request too).
    pub fn deadline(&self) -> Instant {
        self.gather.deadline()
    }

    /// Whether it is over.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// What to do next: first one `Start` per server, then `Wait` until it is over.
    pub fn poll<C: ConnHandle>(&mut self, gov: &mut Governor<C>, now: Instant) -> Step<C> {
        if self.done {
            return Step::Done;
        }
        if self.started < self.running.len() {
            let i = self.started;
            self.started += 1;
            let server = self.gather.servers()[i].clone();
            let (conn, ticket) = gov.connect_ticket(now, &server);
            self.tickets[i] = Some(ticket);
            self.running[i] = true;
            return Step::Start(Start { attempt: AttemptId(i as u32), server, conn });
        }
        match self.gather.next(now) {
            GatherStep::Wait { until } => Step::Wait { until: Some(until) },
            GatherStep::Done { .. } => {
                self.done = true;
                self.running.iter_mut().for_each(|r| *r = false);
                Step::Done
            }
        }
    }

    /// Report how server `attempt`'s call ended (feeds its breaker, drops its
    /// connection after a transport failure). Returns `false` for an unknown or
    /// already reported attempt, or once the fan-out is over.
    pub fn report<C: ConnHandle>(
        &mut self,
        gov: &mut Governor<C>,
        now: Instant,
        attempt: AttemptId,
        result: Result<T, Error>,
    ) -> bool {
        let i = attempt.0 as usize;
        if self.done || !self.running.get(i).copied().unwrap_or(false) {
            return false;
        }
        self.running[i] = false;
        let outcome = classify(&result);
        if let Some(ticket) = self.tickets[i] {
            gov.record(now, &self.gather.servers()[i], ticket, outcome);
        }
        self.gather.on_result(now, i, outcome, result)
    }

    /// Every server's own result, in server key order (Inform).
    pub fn into_receipts(self) -> Vec<Receipt<T>> {
        self.gather
            .into_report()
            .entries
            .into_iter()
            .map(|e| Receipt {
                server: e.server,
                result: match e.result {
                    EntryResult::Done { value, .. } => value,
                    EntryResult::TimedOut => Err(Error::Call(CallError::TimedOut)),
                    EntryResult::Abandoned => Err(Error::Call(CallError::Cancelled)),
                },
            })
            .collect()
    }

    /// Broadcast's fold: the first failure in server key order, else the first reply.
    pub fn into_broadcast(self) -> Result<T, Error> {
        let mut first_ok = None;
        for r in self.into_receipts() {
            match r.result {
                Ok(v) => first_ok = first_ok.or(Some(v)),
                Err(e) => return Err(e),
            }
        }
        first_ok.ok_or(Error::NoServer)
    }

    /// Fork's fold: the first reply to arrive, else the last failure in server key
    /// order.
    pub fn into_fork(self) -> Result<T, Error> {
        let report = self.gather.into_report();
        let winner = report.winner;
        let mut last_err = Error::NoServer;
        for (i, e) in report.entries.into_iter().enumerate() {
            match e.result {
                EntryResult::Done { value: Ok(v), .. } if winner == Some(i) => return Ok(v),
                EntryResult::Done { value: Err(e), .. } => last_err = e,
                EntryResult::Done { .. } => {}
                EntryResult::TimedOut => last_err = Error::Call(CallError::TimedOut),
                EntryResult::Abandoned => last_err = Error::Call(CallError::Cancelled),
            }
        }
        Err(last_err)
    }
}
