//! Driving one [`CallRun`] or [`GatherRun`] with blocking threads: start attempts on
//! cached connections, dial on helper threads, wait, report. Every decision is the
//! governor's.
//!
//! Waiting: when a single call is in flight and the run has nothing to do before that
//! call's deadline (Failover, Failfast, Failtry; Broadcast and Inform, which wait for
//! every server anyway), the driving thread simply blocks on the call's reply slot.
//! When the first of several results matters (Failbackup, Fork), it looks at its
//! calls' reply slots and naps on the helper channel between looks, 50 µs at first,
//! doubling up to 1 ms while nothing happens: the blocking [`Client`] offers no
//! wait-for-any, and a call blocked on by another thread could not be cancelled. That
//! keeps every abandoned attempt cancellable: dropping its [`PendingCall`] cancels it,
//! freeing its in-flight slot at once, or at the connection's next sweep (within a
//! second) for a call dropped before the connection had numbered it.

use super::XClient;
use crate::{Client, Error, PendingCall};
use bytes::Bytes;
use rpcx_core::govern::{AttemptId, CallRun, Connect, GatherRun, Governor, ServerKey, Start, Step};
use rpcx_core::wire::{CompressType, Message, Metadata, SerializeType};
use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// First nap while waiting for the first of several results.
const POLL_MIN: Duration = Duration::from_micros(50);
/// Longest nap while waiting for the first of several results.
const POLL_MAX: Duration = Duration::from_millis(1);

/// A call or a fan-out, as the driver steps it.
pub(super) trait Run<T> {
    fn poll(&mut self, gov: &mut Governor<Client>, now: Instant) -> Step<Client>;
    fn report(&mut self, gov: &mut Governor<Client>, now: Instant, attempt: AttemptId, result: Result<T, Error>);
    /// Whether every attempt is waited for anyway (so blocking on any one is fine).
    fn waits_for_all(&self) -> bool;
}

impl<T> Run<T> for CallRun<T> {
    fn poll(&mut self, gov: &mut Governor<Client>, now: Instant) -> Step<Client> {
        CallRun::poll(self, gov, now)
    }
    fn report(&mut self, gov: &mut Governor<Client>, now: Instant, attempt: AttemptId, result: Result<T, Error>) {
        CallRun::report(self, gov, now, attempt, result);
    }
    fn waits_for_all(&self) -> bool {
        false
    }
}

/// A fan-out and whether it waits for every server (Broadcast, Inform) or only the
/// first success (Fork).
pub(super) struct Fan<T>(pub GatherRun<T>, pub bool);

impl<T> Run<T> for Fan<T> {
    fn poll(&mut self, gov: &mut Governor<Client>, now: Instant) -> Step<Client> {
        self.0.poll(gov, now)
    }
    fn report(&mut self, gov: &mut Governor<Client>, now: Instant, attempt: AttemptId, result: Result<T, Error>) {
        self.0.report(gov, now, attempt, result);
    }
    fn waits_for_all(&self) -> bool {
        self.1
    }
}

/// The request every attempt sends (cheap to clone: `Bytes` and a small map).
#[derive(Clone)]
pub(super) struct Request {
    pub method: String,
    pub metadata: Metadata,
    pub payload: Bytes,
    pub serialize_type: SerializeType,
    pub compress: CompressType,
    pub oneway: bool,
    pub deadline: Option<Instant>,
}

/// How a started request got going.
enum Started {
    Pending(PendingCall<Message>),
    /// Over already (a oneway write, or refused at once).
    Ended(Result<Option<Message>, Error>),
}

impl Request {
    fn start(&self, xc: &XClient, client: &Client) -> Started {
        let mut b = client
            .request(&xc.0.service_path, &self.method)
            .with_metadata(self.metadata.clone())
            .serialize_type(self.serialize_type)
            .compress(self.compress);
        if let Some(d) = self.deadline {
            b = b.timeout(d.saturating_duration_since(Instant::now()));
        }
        if self.oneway {
            return Started::Ended(b.oneway_raw(self.payload.clone()).map(|()| None));
        }
        match b.go_raw(self.payload.clone()) {
            Ok(call) => Started::Pending(call),
            Err(e) => Started::Ended(Err(e)),
        }
    }
}

/// What a helper thread (dialing, or waiting on another attempt's dial) reports.
struct Helped {
    id: AttemptId,
    started: Started,
}

/// The attempts of one run: on helper threads, in flight, ended and not yet reported.
/// Dropping it cancels the calls in flight.
pub(super) struct Attempts<T> {
    xc: XClient,
    req: Request,
    decode: fn(Option<Message>) -> Result<T, Error>,
    tx: Sender<Helped>,
    rx: Receiver<Helped>,
    helpers: Vec<AttemptId>,
    running: Vec<(AttemptId, PendingCall<Message>)>,
    ended: VecDeque<(AttemptId, Result<T, Error>)>,
}

impl<T> Attempts<T> {
    pub(super) fn new(xc: XClient, req: Request, decode: fn(Option<Message>) -> Result<T, Error>) -> Self {
        let (tx, rx) = mpsc::channel();
        Attempts { xc, req, decode, tx, rx, helpers: Vec::new(), running: Vec::new(), ended: VecDeque::new() }
    }

    /// Step `run` until it is done (`true`), or, with `block == false`, until it would
    /// have to wait (`false`). `limit` bounds the whole drive (`false` once passed).
    pub(super) fn drive(&mut self, run: &mut impl Run<T>, block: bool, limit: Option<Instant>) -> bool {
        loop {
            let step = self.xc.with_gov(|g| run.poll(g, Instant::now()));
            match step {
                Step::Start(s) => self.launch(s),
                Step::Done => {
                    self.cancel_all();
                    return true;
                }
                Step::Wait { until } => {
                    // Results that are in already count, even when `until` just passed.
                    let mut got = false;
                    while let Some((id, result)) = self.next(Some(Instant::now()), false) {
                        self.xc.with_gov(|g| run.report(g, Instant::now(), id, result));
                        got = true;
                    }
                    if got {
                        continue;
                    }
                    if !block || limit.is_some_and(|l| Instant::now() >= l) {
                        return false;
                    }
                    let until = match (until, limit) {
                        (Some(u), Some(l)) => Some(u.min(l)),
                        (u, l) => u.or(l),
                    };
                    if let Some((id, result)) = self.next(until, run.waits_for_all()) {
                        self.xc.with_gov(|g| run.report(g, Instant::now(), id, result));
                        // A blocking wait may end at the deadline: the results that came
                        // in meanwhile count before the run is polled past it.
                        while let Some((id, result)) = self.next(Some(Instant::now()), false) {
                            self.xc.with_gov(|g| run.report(g, Instant::now(), id, result));
                        }
                    }
                }
            }
        }
    }

    /// Cancel whatever is still in flight (dropping a call cancels it); helper
    /// threads' late reports go nowhere.
    fn cancel_all(&mut self) {
        self.running.clear();
        self.helpers.clear();
        self.ended.clear();
    }

    /// Start an attempt: at once on a cached connection, else on a helper thread that
    /// gets the connection (dialing, or waiting for the dial under way) and sends.
    fn launch(&mut self, s: Start<Client>) {
        let conn = match s.conn {
            Connect::Ready(client) => {
                let started = self.req.start(&self.xc, &client);
                self.on_started(s.attempt, started);
                return;
            }
            Connect::Failed(e) => {
                self.ended.push_back((s.attempt, Err(e)));
                return;
            }
            conn => conn,
        };
        let (xc, req, tx, id, server) = (self.xc.clone(), self.req.clone(), self.tx.clone(), s.attempt, s.server);
        let spawned = thread::Builder::new().name("rpcx-xclient-dial".into()).spawn(move || {
            let started = match xc.resolve(&server, conn) {
                Ok(client) => req.start(&xc, &client),
                Err(e) => Started::Ended(Err(e)),
            };
            // If the run is over, the call is dropped here, which cancels it.
            let _ = tx.send(Helped { id, started });
        });
        match spawned {
            Ok(_) => self.helpers.push(id),
            Err(e) => self.ended.push_back((id, Err(Error::Connect(e)))),
        }
    }

    fn on_started(&mut self, id: AttemptId, started: Started) {
        match started {
            Started::Pending(call) => self.running.push((id, call)),
            Started::Ended(result) => self.ended.push_back((id, result.and_then(self.decode))),
        }
    }

    fn on_helped(&mut self, h: Helped) {
        if let Some(pos) = self.helpers.iter().position(|&id| id == h.id) {
            self.helpers.remove(pos);
            self.on_started(h.id, h.started);
        }
    }

    fn finish(&self, call: PendingCall<Message>) -> Result<T, Error> {
        call.wait_raw().map(Some).and_then(self.decode)
    }

    /// The next attempt to end, or `None` once `until` passes. With `every`, the caller
    /// waits for every attempt anyway, so blocking on any one of them is fine.
    fn next(&mut self, until: Option<Instant>, every: bool) -> Option<(AttemptId, Result<T, Error>)> {
        let mut nap = POLL_MIN;
        loop {
            if let Some(e) = self.ended.pop_front() {
                return Some(e);
            }
            if let Some(i) = self.running.iter().position(|(_, c)| c.is_ready()) {
                let (id, call) = self.running.remove(i);
                return Some((id, self.finish(call)));
            }
            if let Ok(h) = self.rx.try_recv() {
                self.on_helped(h);
                continue;
            }
            let now = Instant::now();
            let left = match until {
                Some(u) if now >= u => return None,
                Some(u) => Some(u - now),
                None => None,
            };
            let helpers = !self.helpers.is_empty();
            if self.running.is_empty() {
                if !helpers {
                    // Nothing can end before `until` (a retry interval): sleep it out.
                    // (The governor never waits with nothing running and no `until`.)
                    if let Some(left) = left {
                        thread::sleep(left);
                    }
                    return None;
                }
                // Only helper threads are at work: their reports wake us.
                let h = match left {
                    Some(left) => self.rx.recv_timeout(left).ok(),
                    None => self.rx.recv().ok(),
                };
                if let Some(h) = h {
                    self.on_helped(h);
                }
                continue;
            }
            // One call and nothing to do before its deadline (or the caller wants every
            // call): block on its reply slot. The call ends by its deadline.
            let covers = until.is_none_or(|u| self.req.deadline.is_some_and(|d| u >= d));
            if !helpers && (every || (self.running.len() == 1 && covers)) {
                let (id, call) = self.running.remove(0);
                return Some((id, self.finish(call)));
            }
            // The first of several: look again after a nap (helper reports end it early).
            match self.rx.recv_timeout(left.map_or(nap, |l| l.min(nap))) {
                Ok(h) => {
                    self.on_helped(h);
                    nap = POLL_MIN;
                }
                Err(_) => nap = (nap * 2).min(POLL_MAX),
            }
        }
    }
}

impl XClient {
    /// The connection for an attempt that must dial or wait for a dial: dials once per
    /// server at a time; those waiting share the dial's outcome.
    fn resolve(&self, server: &ServerKey, mut conn: Connect<Client>) -> Result<Client, Error> {
        loop {
            conn = match conn {
                Connect::Ready(c) => return Ok(c),
                Connect::Failed(e) => return Err(e),
                Connect::Dial(t) => {
                    let dialed = Client::connect(server.as_str(), self.0.client_opts.clone());
                    if let (Ok(c), Some((tx, dropped))) = (&dialed, &self.0.pushes) {
                        if let Some(rx) = c.take_push_receiver() {
                            super::forward_pushes(server.clone(), rx, tx.clone(), dropped.clone());
                        }
                    }
                    let next = self.with_gov(|g| g.on_dialed(Instant::now(), server, t, dialed));
                    self.0.dialed.notify_all();
                    next
                }
                Connect::Wait(t) => {
                    let mut g = self.gov();
                    while g.is_dialing(server, t) {
                        g = self.0.dialed.wait(g).unwrap_or_else(|p| p.into_inner());
                    }
                    g.dial_status(Instant::now(), server, t)
                }
            };
        }
    }
}
