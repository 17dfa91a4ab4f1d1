//! `ClientSession`: the call bookkeeping every runtime's client shares, driven against a
//! real `ServerConnection` in memory with a simulated clock.

use bytes::Bytes;
use rpcx_core::conn::{
    CallError, CallRejected, CallSpec, ClientConfig, ClientSession, CloseMode, Outcome, PushSink, ReplySlot, Request,
    Response, ServerConfig, ServerConnection, ServerEvent, SessionConfig,
};
use rpcx_core::error::Error;
use rpcx_core::wire::{Message, Metadata, SerializeType};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A reply slot with a name and a "caller went away" switch.
struct Slot {
    name: u32,
    gone: Rc<Cell<bool>>,
}

impl ReplySlot for Slot {
    fn is_abandoned(&self) -> bool {
        self.gone.get()
    }
}

fn slot(name: u32) -> Slot {
    Slot { name, gone: Rc::new(Cell::new(false)) }
}

/// A push sink with room for `cap` pushes.
#[derive(Default)]
struct Sink {
    cap: usize,
    got: Vec<Message>,
}

impl PushSink for Sink {
    fn offer(&mut self, push: Message) -> bool {
        if self.got.len() >= self.cap {
            return false;
        }
        self.got.push(push);
        true
    }
}

struct World {
    now: Instant,
    client: ClientSession<Slot, Sink>,
    server: ServerConnection,
    /// Requests the server has received and not answered.
    requests: Vec<Request>,
    done: Vec<(u32, Outcome)>,
}

impl World {
    fn new(client: ClientConfig, max_deferred: usize, push_cap: usize) -> Self {
        let now = Instant::now();
        let config = SessionConfig { connection: client, max_deferred, ..SessionConfig::default() };
        World {
            now,
            client: ClientSession::new(config, Sink { cap: push_cap, got: Vec::new() }, now),
            server: ServerConnection::new(ServerConfig::default(), now),
            requests: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Move bytes both ways until both sides are quiet; collect completions.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            let mut buf = Vec::new();
            while self.client.poll_transmit(&mut buf).is_some() {}
            if !buf.is_empty() {
                self.server.handle_input(self.now, &buf);
                moved = true;
            }
            while let Some(ev) = self.server.poll_event() {
                if let ServerEvent::Request(r) = ev {
                    self.requests.push(r);
                }
            }
            let mut back = Vec::new();
            while self.server.poll_transmit(&mut back).is_some() {}
            if !back.is_empty() {
                self.client.handle_input(self.now, &back);
                moved = true;
            }
            while let Some((s, out)) = self.client.poll_completion() {
                self.done.push((s.name, out));
            }
            if !moved {
                break;
            }
        }
    }

    fn answer_all(&mut self) {
        for r in std::mem::take(&mut self.requests) {
            let payload = r.message.payload.clone();
            self.server.respond(self.now, r.id, Response::ok(payload)).expect("respond");
        }
        self.settle();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.settle();
    }
}

fn spec(payload: &'static [u8]) -> CallSpec {
    CallSpec::new("Arith", "Mul", SerializeType::MSGPACK, payload)
}

fn payload(out: &Outcome) -> Bytes {
    out.as_ref().expect("ok").as_ref().expect("a response").payload.clone()
}

#[test]
fn every_call_comes_back_once_with_its_slot() {
    let mut w = World::new(ClientConfig::default(), 16, 16);
    w.client.call(w.now, spec(b"one"), slot(1));
    w.client.call(w.now, spec(b"two"), slot(2));
    w.settle();
    assert_eq!(w.client.in_flight(), 2);
    assert!(w.done.is_empty());
    w.answer_all();
    let mut got: Vec<(u32, Bytes)> = w.done.iter().map(|(n, o)| (*n, payload(o))).collect();
    got.sort();
    assert_eq!(got, vec![(1, Bytes::from_static(b"one")), (2, Bytes::from_static(b"two"))]);
    assert_eq!(w.client.in_flight(), 0);
    assert_eq!(w.client.poll_timeout(), None, "no sweep timer without calls");
}

#[test]
fn a_blocked_connection_holds_calls_then_refuses_past_the_limit() {
    let cfg = ClientConfig { max_in_flight: 1, ..ClientConfig::default() };
    let mut w = World::new(cfg, 1, 16);
    w.client.call(w.now, spec(b"a"), slot(1));
    w.client.call(w.now, spec(b"b"), slot(2)); // waits for room
    w.client.call(w.now, spec(b"c"), slot(3)); // refused: one call already waits
    w.settle();
    assert!(w.client.is_blocked());
    assert_eq!(w.client.waiting(), 1);
    assert!(matches!(w.done.as_slice(), [(3, Err(Error::Rejected(CallRejected::Blocked)))]), "{:?}", w.done);
    w.answer_all(); // a answered: b starts
    assert!(!w.client.is_blocked());
    w.answer_all();
    let names: Vec<u32> = w.done.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, vec![3, 1, 2]);
}

#[test]
fn a_call_waiting_for_room_fails_at_its_deadline() {
    let cfg = ClientConfig { max_in_flight: 1, ..ClientConfig::default() };
    let mut w = World::new(cfg, 8, 16);
    w.client.call(w.now, spec(b"a"), slot(1));
    let mut waiting = spec(b"b");
    waiting.deadline = Some(w.now + Duration::from_millis(300));
    w.client.call(w.now, waiting, slot(2));
    w.settle();
    assert_eq!(w.client.poll_timeout(), Some(w.now + Duration::from_millis(300)));
    w.advance(Duration::from_millis(299));
    assert!(w.done.is_empty());
    w.advance(Duration::from_millis(1));
    assert!(matches!(w.done.as_slice(), [(2, Err(Error::Call(CallError::TimedOut)))]), "{:?}", w.done);
    assert_eq!(w.client.waiting(), 0);
}

#[test]
fn a_sweep_cancels_calls_whose_caller_went_away_and_frees_room() {
    let cfg = ClientConfig { max_in_flight: 1, ..ClientConfig::default() };
    let mut w = World::new(cfg, 8, 16);
    let first = slot(1);
    let gone = first.gone.clone();
    w.client.call(w.now, spec(b"a"), first);
    w.client.call(w.now, spec(b"b"), slot(2));
    w.settle();
    assert!(w.client.is_blocked());
    gone.set(true);
    w.client.sweep(w.now);
    w.settle();
    // The abandoned call is gone without a completion; the waiting one took its room.
    assert_eq!(w.client.in_flight(), 1);
    assert!(!w.client.is_blocked());
    w.answer_all();
    let names: Vec<u32> = w.done.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, vec![2], "only the call still wanted completes: {:?}", w.done);
}

#[test]
fn the_periodic_sweep_runs_while_calls_are_in_flight() {
    let mut w = World::new(ClientConfig::default(), 8, 16);
    let s = slot(1);
    let gone = s.gone.clone();
    w.client.call(w.now, spec(b"a"), s);
    w.settle();
    let sweep_at = w.client.poll_timeout().expect("a sweep is due");
    assert!(sweep_at <= w.now + SessionConfig::default().sweep_interval);
    gone.set(true);
    w.advance(SessionConfig::default().sweep_interval);
    assert_eq!(w.client.in_flight(), 0, "swept");
    assert!(w.done.is_empty());
}

#[test]
fn pushes_beyond_the_sink_are_dropped_and_counted() {
    let mut w = World::new(ClientConfig::default(), 8, 2);
    // A call first, so the server knows the connection (pushes go to any client).
    w.client.call(w.now, spec(b"x"), slot(1));
    w.settle();
    for _ in 0..5 {
        w.server
            .push(
                w.now,
                Bytes::from_static(b"Push"),
                Bytes::from_static(b"Me"),
                Metadata::new(),
                Bytes::from_static(b"p"),
            )
            .expect("push");
    }
    w.settle();
    assert_eq!(w.client.pushes_mut().got.len(), 2);
    assert_eq!(w.client.dropped_pushes(), 3);
}

#[test]
fn a_lost_connection_completes_every_call_and_finish_the_rest() {
    let cfg = ClientConfig { max_in_flight: 1, ..ClientConfig::default() };
    let mut w = World::new(cfg, 8, 16);
    w.client.call(w.now, spec(b"a"), slot(1));
    w.client.call(w.now, spec(b"b"), slot(2));
    w.settle();
    w.client.handle_eof(w.now);
    w.settle();
    assert!(w.client.is_closed());
    assert!(w.client.lost().is_some());
    assert_eq!(w.done.len(), 2);
    assert!(w.done.iter().all(|(_, o)| matches!(o, Err(Error::Call(CallError::ConnectionLost(_))))), "{:?}", w.done);

    // finish() fails what a runtime still holds when it gives up on a live connection.
    let mut w = World::new(ClientConfig::default(), 8, 16);
    w.client.call(w.now, spec(b"a"), slot(7));
    w.settle();
    w.client.finish();
    let (s, out) = w.client.poll_completion().expect("completed");
    assert_eq!(s.name, 7);
    assert!(matches!(out, Err(Error::Shutdown)));
}

#[test]
fn close_fails_waiting_calls_and_lets_in_flight_ones_finish() {
    let cfg = ClientConfig { max_in_flight: 1, ..ClientConfig::default() };
    let mut w = World::new(cfg, 8, 16);
    w.client.call(w.now, spec(b"a"), slot(1));
    w.client.call(w.now, spec(b"b"), slot(2));
    w.settle();
    w.client.close(w.now, CloseMode::Graceful);
    w.settle();
    assert!(matches!(w.done.as_slice(), [(2, Err(Error::Shutdown))]), "{:?}", w.done);
    w.answer_all();
    assert!(matches!(w.done.last(), Some((1, Ok(Some(_))))), "{:?}", w.done);
    // A call after the close is refused at once.
    w.client.call(w.now, spec(b"c"), slot(3));
    assert!(matches!(w.client.poll_completion(), Some((Slot { name: 3, .. }, Err(Error::Shutdown)))));
}
