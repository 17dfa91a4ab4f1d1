//! Broadcast, Fork and Inform as pure aggregators: the runtime sends the request to
//! every server, feeds each result in, and asks when it may stop.

use super::discovery::ServerKey;
use super::outcome::Outcome;
use std::time::{Duration, Instant};

/// Go's bound on a Broadcast/Fork/Inform (it adds a one-minute timeout to the context).
pub const DEFAULT_GATHER_TIMEOUT: Duration = Duration::from_secs(60);

/// Which fan-out call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GatherMode {
    /// Succeeds only if every server succeeds. By default waits for every server (or the
    /// deadline) so the report is complete; with [`Gather::fail_fast`] it stops at the
    /// first failure and says which calls it abandoned (Go returns at the first failure
    /// and leaves the rest running unreported).
    Broadcast,
    /// Succeeds at the first success; the rest are abandoned. Fails only if all fail.
    Fork,
    /// Waits for every server (or the deadline) and reports each one's own result (Go
    /// gives every receipt the shared aggregate error; here each has its own).
    Inform,
}

/// What the runtime does next for a [`Gather`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum GatherStep {
    /// Wait for results, or until `until` (the deadline), then call
    /// [`Gather::next`] again.
    Wait {
        /// The deadline.
        until: Instant,
    },
    /// Finished: cancel the calls at these indices (still running, result no longer
    /// wanted), then take [`Gather::into_report`].
    Done {
        /// Indices into [`Gather::servers`].
        abandon: Vec<usize>,
    },
}

/// One server's part in a finished gather.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult<R> {
    /// It completed.
    Done {
        /// How.
        outcome: Outcome,
        /// What the runtime stored with the result (reply or error).
        value: R,
    },
    /// No result before the deadline (its call was abandoned).
    TimedOut,
    /// Still running when the gather finished early (Fork winner, Broadcast fail-fast);
    /// its call was abandoned.
    Abandoned,
}

/// A server and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherEntry<R> {
    /// The server.
    pub server: ServerKey,
    /// Its result.
    pub result: EntryResult<R>,
}

/// The full account of a gather: one entry per server, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatherReport<R> {
    /// The mode.
    pub mode: GatherMode,
    /// Every server's result.
    pub entries: Vec<GatherEntry<R>>,
    /// Index of the first success to arrive (Fork: the winner; Broadcast: the reply Go
    /// would copy out).
    pub winner: Option<usize>,
}

impl<R> GatherReport<R> {
    /// Broadcast: every server succeeded. Fork: some server succeeded. Inform: every
    /// server completed (each may still carry an error). `false` with no servers (Go's
    /// `ErrXClientNoServer`).
    pub fn succeeded(&self) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let ok = |e: &GatherEntry<R>| matches!(e.result, EntryResult::Done { outcome: Outcome::Ok, .. });
        match self.mode {
            GatherMode::Broadcast => self.entries.iter().all(ok),
            GatherMode::Fork => self.entries.iter().any(ok),
            GatherMode::Inform => self.entries.iter().all(|e| matches!(e.result, EntryResult::Done { .. })),
        }
    }

    /// Whether the deadline cut some server off.
    pub fn timed_out(&self) -> bool {
        self.entries.iter().any(|e| matches!(e.result, EntryResult::TimedOut))
    }

    /// The [`winner`](Self::winner)'s server and value.
    pub fn first_success(&self) -> Option<(&ServerKey, &R)> {
        let e = self.entries.get(self.winner?)?;
        match &e.result {
            EntryResult::Done { value, .. } => Some((&e.server, value)),
            _ => None,
        }
    }

    /// Entries that did not succeed.
    pub fn failures(&self) -> impl Iterator<Item = &GatherEntry<R>> {
        self.entries.iter().filter(|e| !matches!(e.result, EntryResult::Done { outcome: Outcome::Ok, .. }))
    }
}

/// A Broadcast, Fork or Inform in progress: a pure aggregator fed with results and
/// `now`.
///
/// ```text
/// let mut g = Gather::new(mode, servers, now, DEFAULT_GATHER_TIMEOUT);
/// send to every g.servers()[i]; a server that cannot be dialed is reported at once
///   as g.on_result(now, i, Outcome::Dial, err) (Go silently skips it; Broadcast fails here)
/// loop match g.next(now) {
///     Wait{until}     => wait for a result (g.on_result(now, i, outcome, value)) or until
///     Done{abandon}   => cancel abandon; return g.into_report()
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Gather<R> {
    mode: GatherMode,
    deadline: Instant,
    fail_fast: bool,
    servers: Vec<ServerKey>,
    results: Vec<Option<(Outcome, R)>>,
    finished: Option<Vec<usize>>,
    timed_out: bool,
    winner: Option<usize>,
}

impl<R> Gather<R> {
    /// Start a gather over `servers` at `now`, bounded by `timeout`.
    pub fn new(
        mode: GatherMode,
        servers: impl IntoIterator<Item = ServerKey>,
        now: Instant,
        timeout: Duration,
    ) -> Self {
        let servers: Vec<ServerKey> = servers.into_iter().collect();
        let results = servers.iter().map(|_| None).collect();
        Gather {
            mode,
            deadline: now + timeout,
            fail_fast: false,
            servers,
            results,
            finished: None,
            timed_out: false,
            winner: None,
        }
    }

    /// Broadcast only: finish at the first failure, abandoning the rest (reported as
    /// [`EntryResult::Abandoned`]).
    #[must_use]
    pub fn fail_fast(mut self, yes: bool) -> Self {
        self.fail_fast = yes;
        self
    }

    /// The servers, indexed as in `on_result`.
    pub fn servers(&self) -> &[ServerKey] {
        &self.servers
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Record server `index`'s result. Returns `false` (and drops `value`) for an
    /// out-of-range index, a second result, or after the gather finished.
    pub fn on_result(&mut self, now: Instant, index: usize, outcome: Outcome, value: R) -> bool {
        let _ = now;
        if self.finished.is_some() {
            return false;
        }
        match self.results.get_mut(index) {
            Some(slot @ None) => {
                *slot = Some((outcome, value));
                if outcome.is_ok() && self.winner.is_none() {
                    self.winner = Some(index);
                }
                true
            }
            _ => false,
        }
    }

    /// Whether it is over, and what to abandon.
    pub fn next(&mut self, now: Instant) -> GatherStep {
        if let Some(abandon) = &self.finished {
            return GatherStep::Done { abandon: abandon.clone() };
        }
        let pending: Vec<usize> = (0..self.results.len()).filter(|&i| self.results[i].is_none()).collect();
        let failed = |r: &Option<(Outcome, R)>| matches!(r, Some((o, _)) if !o.is_ok());
        let early = match self.mode {
            GatherMode::Fork => self.winner.is_some(),
            GatherMode::Broadcast => self.fail_fast && self.results.iter().any(failed),
            GatherMode::Inform => false,
        };
        let done = pending.is_empty() || early || now >= self.deadline;
        if !done {
            return GatherStep::Wait { until: self.deadline };
        }
        self.timed_out = !early && !pending.is_empty();
        self.finished = Some(pending.clone());
        GatherStep::Done { abandon: pending }
    }

    /// The report. Call after [`next`](Self::next) returned `Done`; called earlier it
    /// reports servers without a result as abandoned.
    pub fn into_report(self) -> GatherReport<R> {
        let (timed_out, winner) = (self.timed_out, self.winner);
        let entries = self
            .servers
            .into_iter()
            .zip(self.results)
            .map(|(server, r)| GatherEntry {
                server,
                result: match r {
                    Some((outcome, value)) => EntryResult::Done { outcome, value },
                    None if timed_out => EntryResult::TimedOut,
                    None => EntryResult::Abandoned,
                },
            })
            .collect();
        GatherReport { mode: self.mode, entries, winner }
    }
}
